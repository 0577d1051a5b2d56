"""MigrateKeysOperator on a workspace whose rate limit production shares, by ``dag.test()``: a plain
task and mapped tasks against the emulator's Unkey limiter (compressed to a 2 s window, so that the
test takes seconds) with production traffic at a third of the limit. Production is never refused, no
key is given up, and the summary says how long the task waited and what share of the limit it held.
Nothing here bounds a duration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.testing import UnkeyEmulator
from tests.operators.test_migrate_keys import ROOT_KEY, run_dag, simple_table

pytestmark = pytest.mark.slow

LIMIT, WINDOW = 30, 2.0
#: A third of the limit, as requests a minute.
PRODUCTION = LIMIT / 3 * 60 / WINDOW


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(
        root_key=ROOT_KEY,
        api_id="api_test",
        migration_id="mig_test",
        rate_limit=LIMIT,
        rate_limit_window=WINDOW,
        production_per_minute=PRODUCTION,
    ) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        yield emu


def check(emu: UnkeyEmulator, summaries: list[dict], keys: int) -> None:
    production = emu.production
    assert production.sent > 0 and production.refused == 0, production
    assert sum(s["migrated"] for s in summaries) == keys == len(emu.keys)
    assert all(not s["failed_by_reason"].get("gave_up") for s in summaries)
    for s in summaries:
        throttle = s["throttle"]
        assert throttle["rate_limit"] == LIMIT and throttle["rate_limit_headroom"] == 0.25
        # The task never held more than the limit less the headroom less production's third, but for
        # a few requests: the limiter floors production's part (it reads up to one request low), and
        # the task learns of production's requests only from its own answers.
        assert 0 < throttle["rate_limit_share_peak"] <= 1 - 0.25 - 1 / 3 + 4 / LIMIT
        # So the whole workspace stayed within the limit less the headroom, but for those requests.
        assert throttle["rate_limit_workspace_peak"] <= 1 - 0.25 + 3 / LIMIT


def test_a_task_leaves_production_its_room(airflow_db: None, shared: UnkeyEmulator, tmp_path: Path) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(simple_table(600), path)
    state, report, _ = run_dag("unkey_t_shared_workspace", tmp_path, str(path))
    assert state == "success"
    summary = report["return_value"]
    check(shared, [summary], 600)
    assert summary["throttle"]["paced_seconds"] > 0, "the rate limit held it back"
    assert summary["throttle"]["final_batch_size"] > 10, "so its requests carried more keys"


def test_mapped_tasks_leave_production_its_room(
    airflow_db: None, shared: UnkeyEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(simple_table(800), path, row_group_size=100)
    state, report, _ = run_dag("unkey_t_mapped_shared_workspace", tmp_path, str(path), partitions=4)
    assert state == "success"
    assert len(report["return_value"]) == 4
    check(shared, report["return_value"], 800)
