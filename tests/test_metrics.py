"""MigrationMetrics against a fake ``Stats`` that records every call.

Counters are increments at the progress interval whose sums are the run's own totals, gauges follow the
run and fall to 0 when it ends, the timer gets one value per HTTP request, every call carries the run's
tags, and a metrics backend that fails never fails the migration.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_unkey import metrics as metrics_module
from airflow_provider_unkey.client import MIGRATE_KEYS_PATH, Attempt, UnkeyClient
from airflow_provider_unkey.metrics import METRICS, PREFIX, MigrationMetrics, run_tags, status_class
from airflow_provider_unkey.migration.engine import (
    MigrationConfig,
    ProgressSnapshot,
    SendingState,
    run_migration,
)
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.migration.record.test_progress import Injector
from tests.migration.test_engine import API, FAST, MIGRATION, ROOT, b64, source

ROOT_DIR = Path(__file__).resolve().parents[1]
TAGS = {"dag_id": "d", "task_id": "t", "migration_id": MIGRATION, "api_id": API}


class FakeStats:
    """Records ``(kind, name, value, tags)`` for every call; fails the first ``fail`` calls of ``failing``."""

    def __init__(self, failing: str = "", fail: int = 0) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.failing, self.fail = failing, fail

    def _record(self, kind: str, stat: str, value: Any, tags: dict[str, Any] | None) -> None:
        if kind == self.failing and self.fail > 0:
            self.fail -= 1
            raise OSError("the StatsD host is gone")
        self.calls.append((kind, stat, value, dict(tags or {})))

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, Any] | None = None) -> None:
        self._record("incr", stat, count, tags)

    def gauge(self, stat: str, value: float, *, tags: dict[str, Any] | None = None) -> None:
        self._record("gauge", stat, value, tags)

    def timing(self, stat: str, dt: dt.timedelta, *, tags: dict[str, Any] | None = None) -> None:
        self._record("timing", stat, dt, tags)

    def sums(self, name: str, tag: str = "") -> dict[str, int]:
        """The increments of counter ``name``, summed by the value of ``tag``."""
        out: Counter[str] = Counter()
        for kind, stat, value, tags in self.calls:
            if kind == "incr" and stat == f"{PREFIX}.{name}":
                out[tags.get(tag, "") if tag else ""] += value
        return dict(out)

    def of(self, kind: str, name: str) -> list[tuple[Any, dict[str, Any]]]:
        return [(v, t) for k, s, v, t in self.calls if k == kind and s == f"{PREFIX}.{name}"]


def snapshot(final: bool = False, **counts: Any) -> ProgressSnapshot:
    fields: dict[str, Any] = {
        "elapsed_seconds": 1.0,
        "total": None,
        "done": 0,
        "migrated": 0,
        "failed_by_reason": {},
        "skipped": 0,
        "keys_per_second": 0.0,
        "mean_keys_per_second": 0.0,
    }
    fields.update(counts)
    return ProgressSnapshot(final=final, **fields)


def attempt(status: int | None, seconds: float = 0.25, path: str = MIGRATE_KEYS_PATH) -> Attempt:
    return Attempt(path, status, seconds, 0.0)


def test_counters_are_increments_that_add_up_to_the_totals() -> None:
    stats = FakeStats()
    metrics = MigrationMetrics(TAGS, stats)
    metrics(snapshot(migrated=100, failed_by_reason={"invalid": 2}, sending=SendingState(requests=3)))
    metrics(snapshot(migrated=100, failed_by_reason={"invalid": 2}, sending=SendingState(requests=3)))
    metrics(
        snapshot(
            migrated=250,
            failed_by_reason={"invalid": 5, "already_exists": 1},
            skipped=7,
            sending=SendingState(requests=8, splits=1, rate_limited=2),
        )
    )
    increments = [(s.removeprefix(PREFIX + "."), v) for k, s, v, _ in stats.calls if k == "incr"]
    assert increments == [
        ("keys_migrated", 100),
        ("keys_failed", 2),
        ("requests", 3),
        # the second snapshot changed nothing: no increment at all
        ("keys_migrated", 150),
        ("keys_failed", 1),
        ("keys_failed", 3),
        ("keys_skipped", 7),
        ("requests", 5),
        ("rate_limited", 2),
        ("splits", 1),
    ]
    assert stats.sums("keys_failed", "reason") == {"invalid": 5, "already_exists": 1}
    for _, _, _, tags in stats.calls:
        assert {k: tags[k] for k in TAGS} == TAGS


def test_gauges_follow_the_run_and_fall_to_zero_at_its_end() -> None:
    stats = FakeStats()
    metrics = MigrationMetrics(TAGS, stats)
    sending = SendingState(
        in_flight=6,
        concurrency_limit=8,
        max_concurrency=32,
        batch_size=1000,
        rate_limit_share=0.42,
        rate_limit_waited_seconds=3.5,
    )
    metrics(snapshot(keys_per_second=1234.5, sending=sending))
    gauges = {s.removeprefix(PREFIX + "."): v for k, s, v, _ in stats.calls if k == "gauge"}
    assert gauges == {
        "keys_per_second": 1234.5,
        "requests_in_flight": 6,
        "concurrency_limit": 8,
        "batch_size": 1000,
        "rate_limit_share": 0.42,
        "rate_limit_waited_seconds": 3.5,
    }
    stats.calls.clear()
    no_limit = SendingState(in_flight=3, concurrency_limit=8, batch_size=500, rate_limit_waited_seconds=4.0)
    metrics(snapshot(final=True, keys_per_second=99.0, sending=no_limit))
    gauges = {s.removeprefix(PREFIX + "."): v for k, s, v, _ in stats.calls if k == "gauge"}
    assert gauges == {
        "keys_per_second": 0.0,
        "requests_in_flight": 0,
        "concurrency_limit": 8,
        "batch_size": 500,
        "rate_limit_waited_seconds": 4.0,
    }  # no share without a limit


def test_a_dry_run_has_keys_but_no_sending_metrics() -> None:
    stats = FakeStats()
    MigrationMetrics(TAGS, stats)(snapshot(final=True, failed_by_reason={"invalid": 1}))
    names = {s.removeprefix(PREFIX + ".") for _, s, _, _ in stats.calls}
    assert names == {"keys_failed", "keys_per_second"}


def test_every_http_request_is_counted_by_class_and_timed_once() -> None:
    stats = FakeStats()
    metrics = MigrationMetrics(TAGS, stats)
    for status in (200, 200, 429, 500, 503, None, 413):
        metrics.observe(attempt(status))
    metrics.observe(attempt(200, path="/v2/liveness"))  # not a migration request
    timings = stats.of("timing", "request_duration")
    assert len(timings) == 7
    assert all(v == dt.timedelta(seconds=0.25) for v, _ in timings)
    assert [t["status_class"] for _, t in timings] == ["2xx", "2xx", "4xx", "5xx", "5xx", "none", "4xx"]
    assert stats.of("incr", "http_requests") == []  # counted, emitted at the next progress line
    metrics(snapshot())
    metrics.observe(attempt(200))
    metrics(snapshot(final=True))
    assert stats.sums("http_requests", "status_class") == {"2xx": 3, "4xx": 2, "5xx": 2, "none": 1}
    assert [v for v, _ in stats.of("incr", "http_requests")] == [2, 2, 2, 1, 1]  # then 2xx: +1


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 201, 400, 429, 500, 504, None)] == [
        "2xx",
        "2xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
        "none",
    ]


@pytest.mark.parametrize("failing", ["incr", "gauge", "timing"])
def test_a_failing_backend_is_logged_once_and_never_fails_the_run(
    failing: str, caplog: pytest.LogCaptureFixture
) -> None:
    stats = FakeStats(failing, fail=3)
    metrics = MigrationMetrics(TAGS, stats)
    with caplog.at_level(logging.WARNING, logger=metrics_module.__name__):
        for i in range(1, 5):
            metrics.observe(attempt(200))
            metrics(
                snapshot(migrated=10 * i, failed_by_reason={"invalid": i}, sending=SendingState(requests=i))
            )
        metrics(
            snapshot(
                final=True, migrated=45, failed_by_reason={"invalid": 5}, sending=SendingState(requests=6)
            )
        )
    warnings = [r for r in caplog.records if "could not be emitted" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None
    # An increment that failed is carried into the next one: the sums are still the totals.
    assert stats.sums("keys_migrated") == {"": 45}
    assert stats.sums("keys_failed", "reason") == {"invalid": 5}
    assert stats.sums("requests") == {"": 6}
    assert stats.sums("http_requests", "status_class") == {"2xx": 4}


def test_observing_attaches_to_the_client_and_detaches() -> None:
    metrics = MigrationMetrics(TAGS, FakeStats())
    client = UnkeyClient("unkey_root_x", "http://127.0.0.1:9", allow_insecure_http=True)
    with metrics.observing(client):
        assert client.observers == [metrics.observe]
    assert client.observers == []
    with pytest.raises(RuntimeError), metrics.observing(client):
        raise RuntimeError("the run failed")
    assert client.observers == []
    with metrics.observing(None):  # a dry run has no client
        pass


def test_the_tags_outside_a_task_are_the_migrations() -> None:
    assert run_tags(MIGRATION, API) == {"migration_id": MIGRATION, "api_id": API}


@pytest.mark.parametrize(("map_index", "expected"), [(-1, {}), (3, {"map_index": "3"})])
def test_the_tags_of_a_task(
    monkeypatch: pytest.MonkeyPatch, map_index: int, expected: dict[str, str]
) -> None:
    import airflow.sdk

    class TI:
        dag_id, task_id = "unkey_dag", "migrate"

    ti = TI()
    ti.map_index = map_index  # type: ignore[attr-defined]
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": ti})
    assert run_tags(MIGRATION, API) == {
        "migration_id": MIGRATION,
        "api_id": API,
        "dag_id": "unkey_dag",
        "task_id": "migrate",
        **expected,
    }


@pytest.fixture
def emu() -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as emulator:
        yield emulator


def test_a_real_run_the_sums_are_the_summarys(emu: UnkeyEmulator, tmp_path: Path) -> None:
    """run_migration against the emulator, with 429s, a split, a retried 503 and failing keys."""
    emu.set_faults(rate_limit_storm=2, storm_retry_after=0)
    emu.add_existing_hash(b64(7))
    Injector(emu, {b64(150): 500, b64(250): 503})
    stats = FakeStats()
    metrics = MigrationMetrics(TAGS, stats)
    with UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4) as client, metrics.observing(client):
        summary = run_migration(
            source(4, 100, invalid_every=37, dup_every=23),
            client,
            MigrationConfig(
                MIGRATION, API, batch_size=40, max_concurrency=4, retry=FAST, progress_interval=0.0
            ),
            tmp_path,
            listeners=[metrics],
        )
    assert stats.sums("keys_migrated") == {"": summary.migrated}
    assert stats.sums("keys_failed", "reason") == summary.failed_by_reason
    assert stats.sums("requests") == {"": summary.requests}
    assert stats.sums("rate_limited") == {"": summary.throttle["rate_limited_answers"]} == {"": 2}
    assert stats.sums("splits") == {"": 1}
    by_class: dict[str, int] = defaultdict(int)
    for r in emu.requests:
        if r.path == MIGRATE_KEYS_PATH:
            by_class[status_class(r.status)] += 1
    assert stats.sums("http_requests", "status_class") == dict(by_class)
    assert sum(by_class.values()) == summary.requests + 1  # the 503's retry
    assert len(stats.of("timing", "request_duration")) == sum(by_class.values())
    increments = stats.of("incr", "keys_migrated")
    assert 1 < len(increments) <= summary.batches + 2  # at the progress lines, never per key


def test_importing_it_on_this_airflow_warns_of_nothing() -> None:
    """Airflow 3.3 deprecates airflow.stats (a FutureWarning): the provider never imports it there."""
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "import airflow_provider_unkey.metrics\n"
        "from airflow_provider_unkey._compat import Stats\n"
        "print(Stats.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT_DIR, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import airflow

    if tuple(int(p) for p in airflow.__version__.split(".")[:2]) >= (3, 2):
        assert "airflow.sdk" in out.stdout, out.stdout
    else:
        assert out.stdout.strip().startswith("airflow.stats"), out.stdout


def test_every_metric_is_in_the_operating_page() -> None:
    text = (ROOT_DIR / "docs" / "operating.md").read_text(encoding="utf-8")
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `unkey\.migration\.(\w+)` \| (\w+) \|", text, re.M)
    }
    assert rows == {name: kind for name, (kind, _, _) in METRICS.items()}
