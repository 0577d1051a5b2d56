"""The migration report: counts by reason, the most common failures, throughput over time."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
from airflow_provider_unkey.migration.record.outcomes import FAILED_SCHEMA
from airflow_provider_unkey.migration.record.progress import MigrationSummary
from airflow_provider_unkey.migration.record.report import (
    PLOT_FILE,
    REPORT_FILE,
    detail_pattern,
    failure_patterns,
    write_report,
)
from airflow_provider_unkey.migration.record.timeline import Timeline
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.migration.test_engine import API, MIGRATION, ROOT, source


def test_detail_patterns_drop_what_varies_by_row() -> None:
    assert detail_pattern("hash: the same hash as source row 1234") == "hash: the same hash as source row …"
    assert (
        detail_pattern("permissions[1]: 'docs read' must match the pattern")
        == "permissions[…]: … must match the pattern"
    )
    assert (
        detail_pattern("hash: is hex, but hash_format is sha256_base64")
        == "hash: is hex, but hash_format is sha256_base64"
    )
    digest = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
    assert detail_pattern(f"Unkey answered 500 for {digest}") == "Unkey answered … for …"


def test_the_timeline_stays_bounded_and_even() -> None:
    timeline = Timeline(interval=1.0, capacity=100)
    for second in range(10_000):
        timeline.maybe_sample(
            float(second), second * 10, lambda: {"in_flight": 3, "limit": 4, "batch_size": 1000}
        )
    assert 50 <= len(timeline.samples) < 100
    gaps = {b.seconds - a.seconds for a, b in zip(timeline.samples, timeline.samples[1:], strict=False)}
    assert gaps == {128.0}  # the interval doubled as it filled, and every other sample went
    assert {r for _, r in timeline.rates()} == {10.0}
    assert timeline.samples[-1].in_flight == 3


def failed_file(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    table = pa.table(
        {
            "hash": [f"h{r}" for _, _, r in rows],
            "reason": [reason for reason, _, _ in rows],
            "stage": ["validate"] * len(rows),
            "detail": [detail for _, detail, _ in rows],
            "source_row": [r for _, _, r in rows],
            "request_id": [None] * len(rows),
        },
        schema=FAILED_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=7)
    return path


def test_failure_patterns_rank_the_most_common(tmp_path: Path) -> None:
    rows = [("invalid", f"permissions[{i % 3}]: 'x {i}' must match the pattern", i) for i in range(40)]
    rows += [("duplicate_in_source", f"hash: the same hash as source row {i - 1}", i) for i in range(40, 50)]
    rows += [("already_exists", "a key with this hash already exists in Unkey", 50)]
    patterns, kinds = failure_patterns(failed_file(tmp_path / "failed.parquet", rows), top=2)
    assert kinds == 3
    assert [(p.reason, p.count) for p in patterns] == [("invalid", 40), ("duplicate_in_source", 10)]
    assert patterns[0].example_rows == [0, 1, 2]
    assert patterns[0].example_detail == "permissions[0]: 'x 0' must match the pattern"


def summary(**kwargs: Any) -> MigrationSummary:
    base: dict[str, Any] = {
        "total": 51,
        "migrated": 0,
        "failed": 51,
        "failed_by_reason": {"invalid": 40, "duplicate_in_source": 10, "already_exists": 1},
        "duration_seconds": 2.5,
        "keys_per_second": 20.4,
        "requests": 1,
        "batches": 1,
        "throttle": {
            "max_concurrency": 32,
            "final_concurrency": 4,
            "peak_concurrency": 8,
            "final_batch_size": 1000,
            "paced_seconds": 0.0,
            "rate_limited_answers": 0,
        },
    }
    base.update(kwargs)
    return MigrationSummary(**base)


def test_the_report_reads_at_a_glance(tmp_path: Path) -> None:
    rows = [("invalid", f"name: row {i} is empty", i) for i in range(40)]
    rows += [("duplicate_in_source", f"hash: the same hash as source row {i - 1}", i) for i in range(40, 50)]
    rows += [("already_exists", "a key with this hash already exists in Unkey", 50)]
    failed_file(tmp_path / "failed.parquet", rows)
    timeline = Timeline()
    for second in range(5):
        timeline.maybe_sample(
            float(second), second * 10, lambda: {"in_flight": 2, "limit": 4, "batch_size": 1000}
        )
    written = write_report(
        tmp_path,
        summary(),
        timeline,
        facts={"migration": "mig (sha256) into API api"},
        outputs={"failed": "s3://b/failed.parquet"},
    )
    text = (tmp_path / REPORT_FILE).read_text()
    assert "- **migration:** mig (sha256) into API api" in text
    assert "| failed | 51 | 100.00% |" in text
    assert "| `invalid` | 40 | 78.43% | fix the rows (the detail names the field)" in text
    assert "3 kinds of failure" in text
    assert "| `invalid` | 40 | name: row 0 is empty | 0, 1, 2 |" in text
    assert "| requests in flight: peak / final / cap | 8 / 4 / 32 |" in text
    assert "- failed: `s3://b/failed.parquet`" in text
    assert f"![keys/s and requests in flight over time]({PLOT_FILE})" in text
    assert written == [tmp_path / REPORT_FILE, tmp_path / PLOT_FILE]
    assert (tmp_path / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_shows_the_wait_for_the_rate_limit_and_the_share_used(tmp_path: Path) -> None:
    failed_file(tmp_path / "failed.parquet", [])
    throttle = {
        **summary().throttle,
        "paced_seconds": 42.5,
        "rate_limited_answers": 3,
        "rate_limit": 600,
        "rate_limit_headroom": 0.25,
        "rate_limit_share_peak": 0.4123,
        "rate_limit_share_mean": 0.38,
        "rate_limit_workspace_peak": 0.7667,
    }
    write_report(tmp_path, summary(throttle=throttle), None, facts={}, outputs={})
    text = (tmp_path / REPORT_FILE).read_text()
    assert "| seconds spent waiting for the rate limit | 42.5 |" in text
    assert "| answers that were 429 | 3 |" in text
    assert "| workspace rate limit: requests a window / left free | 600 / 25% |" in text
    assert "| share of the limit this run used: peak / mean | 41% / 38% |" in text
    assert "| the whole workspace's highest use, as answers stated it | 77% |" in text
    # Without a limit, the lines about it are left out.
    write_report(tmp_path, summary(), None, facts={}, outputs={})
    assert "workspace rate limit" not in (tmp_path / REPORT_FILE).read_text()


def test_without_matplotlib_the_report_says_how_to_get_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    timeline = Timeline()
    for second in range(3):
        timeline.maybe_sample(float(second), second, None)
    written = write_report(tmp_path, summary(failed_by_reason={}, failed=0, migrated=51), timeline)
    assert written == [tmp_path / REPORT_FILE]
    assert "Install matplotlib, the `report` extra" in (tmp_path / REPORT_FILE).read_text()


def test_a_run_fills_the_timeline(tmp_path: Path) -> None:
    timeline = Timeline(interval=0.0)  # a sample at every step, for a short run
    with (
        UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as emu,
        UnkeyClient(ROOT, emu.url, allow_insecure_http=True) as client,
    ):
        result = run_migration(
            source(4, 250, invalid_every=50),
            client,
            MigrationConfig(MIGRATION, API, batch_size=100),
            tmp_path,
            timeline=timeline,
        )
    assert result.migrated == 980
    assert len(timeline.samples) > 2
    assert timeline.samples[-1].done == 1000  # the last sample is the end
    assert max(s.in_flight for s in timeline.samples) >= 1
    assert all(s.limit >= 1 and s.batch_size >= 1 for s in timeline.samples)
    write_report(tmp_path, result, timeline)
    text = (tmp_path / REPORT_FILE).read_text()
    assert "| `invalid` | 20 |" in text and "| migrated | 980 |" in text
