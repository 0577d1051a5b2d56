"""The engine under a workspace rate limit, over real HTTP against the emulator: a 429 never uses up
an attempt, ``Retry-After: 0`` is not retried at once, and only the run's time budget gives a refused
batch up. Every run is checked for the invariant (each row read has exactly one outcome). Durations are
bounded from below only (a busy machine makes waits longer, never shorter)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, MigrationSummary, run_migration
from airflow_provider_unkey.retries import RATE_LIMIT_WAIT_FLOOR
from airflow_provider_unkey.testing import UnkeyEmulator

ROOT, API, MIGRATION = "unkey_root_rl", "api_rl", "mig_rl"
MIGRATE = "/v2/keys.migrateKeys"
#: One attempt for anything but a 429: a 429 that used one up would give its keys up at once.
ONE_ATTEMPT = RetryPolicy(max_attempts=1, initial_wait=0.001, jitter=0.0)


def b64(i: int) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_rl_{i}".encode()).digest()).decode()


@pytest.fixture
def emu() -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as emulator:
        yield emulator


def run(emu: UnkeyEmulator, tmp_path: Path, keys: int, **settings: object) -> MigrationSummary:
    hashes = [b64(i) for i in range(keys)]
    config = MigrationConfig(MIGRATION, API, progress_interval=0, **settings)  # type: ignore[arg-type]
    with UnkeyClient(ROOT, emu.url, retry=ONE_ATTEMPT, pool_size=4) as client:
        summary = run_migration(pa.table({"hash": hashes}).to_batches(), client, config, tmp_path)
    assert summary.total == summary.migrated + summary.failed == keys
    return summary


def failed_details(summary: MigrationSummary) -> list[tuple[str, str]]:
    failed = pq.read_table(summary.outputs["failed"])
    return list(zip(failed.column("reason").to_pylist(), failed.column("detail").to_pylist(), strict=True))


def test_a_429_does_not_use_up_an_attempt_and_retry_after_0_waits_a_second(
    emu: UnkeyEmulator, tmp_path: Path
) -> None:
    """Four 429s with ``Retry-After: 0`` under a policy of one attempt: every key still migrates, and
    each request after a 429 went at least a second after it."""
    emu.set_faults(rate_limit_storm=4, storm_retry_after=0)
    summary = run(emu, tmp_path, 300, batch_size=100, max_concurrency=1, adaptive=False)
    assert summary.migrated == 300 and summary.failed == 0
    assert summary.throttle["rate_limited_answers"] == 4
    requests = [r for r in emu.requests if r.path == MIGRATE]
    assert [r.status for r in requests] == [429] * 4 + [200] * 3
    for refused, after in itertools.pairwise(requests[:5]):  # each 429 and the request after it
        assert after.started - refused.finished >= RATE_LIMIT_WAIT_FLOOR * 0.95
    assert set(emu.keys) == {b64(i) for i in range(300)}


def test_5xx_attempts_interrupted_by_a_429_stay_spent(emu: UnkeyEmulator, tmp_path: Path) -> None:
    """Two attempts: a 503, then a 429, then a 503 again: the batch has used both attempts and is given
    up; the 429 between did not give it a third."""
    statuses = iter([503, 429, 503])
    sent = []
    original = emu._delay_and_route

    def one_of_each(req, route, body, n_keys, draw):  # type: ignore[no-untyped-def]
        status = next(statuses, 200)
        sent.append(status)
        if status == 429:
            draw = dataclasses.replace(draw, storm_retry_after=0)
        elif status == 503:
            draw = dataclasses.replace(draw, error_status=503)
        return original(req, route, body, n_keys, draw)

    emu._delay_and_route = one_of_each  # type: ignore[method-assign]
    hashes = [b64(i) for i in range(10)]
    config = MigrationConfig(MIGRATION, API, progress_interval=0, adaptive=False, max_concurrency=1)
    policy = RetryPolicy(max_attempts=2, initial_wait=0.001, jitter=0.0)
    with UnkeyClient(ROOT, emu.url, retry=policy) as client:
        summary = run_migration(pa.table({"hash": hashes}).to_batches(), client, config, tmp_path)
    assert sent == [503, 429, 503]
    assert summary.failed == 10
    assert {reason for reason, _ in failed_details(summary)} == {"gave_up"}


def test_only_the_time_budget_gives_a_refused_batch_up(emu: UnkeyEmulator, tmp_path: Path) -> None:
    """An endless storm of 429s and a 2 s budget: the keys end gave_up, and the detail says why."""
    emu.set_faults(rate_limit_storm=1_000_000, storm_retry_after=0)
    summary = run(emu, tmp_path, 50, batch_size=50, max_concurrency=1, time_budget=2.0)
    assert summary.migrated == 0 and summary.failed == 50
    details = failed_details(summary)
    assert {reason for reason, _ in details} == {"gave_up"}
    assert all("time budget of 2 s ran out" in detail and "429" in detail for _, detail in details)
    refused = [r for r in emu.requests if r.path == MIGRATE]
    assert len(refused) >= 2 and all(r.status == 429 for r in refused)


def test_a_run_without_a_time_budget_outlasts_the_storm(emu: UnkeyEmulator, tmp_path: Path) -> None:
    """Without a budget a storm is waited out, however long: here 6 refusals in a row."""
    emu.set_faults(rate_limit_storm=6, storm_retry_after=0)
    summary = run(emu, tmp_path, 40, batch_size=40, max_concurrency=1)
    assert summary.migrated == 40 and summary.throttle["rate_limited_answers"] == 6


def test_the_operator_takes_its_time_budget_from_execution_timeout() -> None:
    from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

    def budget(timeout: dt.timedelta | None) -> float | None:
        op = MigrateKeysOperator(
            task_id="t", migration_id="m", api_id="a", parquet_path="x.parquet", execution_timeout=timeout
        )
        return op._within_time_budget(MigrationConfig("m", "a")).time_budget

    assert budget(None) is None
    assert budget(dt.timedelta(minutes=30)) == 30 * 60 - 60  # a minute kept to write the outputs
    assert budget(dt.timedelta(seconds=100)) == 90  # a tenth of a short one


def test_while_the_pace_holds_the_run_back_batches_are_built_late_and_large(tmp_path: Path) -> None:
    """Under a binding rate limit the engine builds only two batches ahead: the ones built later carry
    the grown size, rather than a queue of batches of the first size each spending a request."""
    with UnkeyEmulator.quick(
        root_key=ROOT, api_id=API, migration_id=MIGRATION, rate_limit=20, rate_limit_window=2.0
    ) as emu:
        summary = run(emu, tmp_path, 20_000, batch_size=100, rate_limit_window=2.0, rate_limit_headroom=0.0)
        sizes = [len(r.hashes) for r in emu.requests if r.path == MIGRATE]
    assert summary.migrated == 20_000 and summary.throttle["paced_seconds"] > 0
    assert sizes.count(100) <= 3, sizes  # the first request, and at most two built before it answered
    assert max(sizes) > 100
