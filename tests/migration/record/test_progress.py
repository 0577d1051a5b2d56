"""Progress's listeners: a snapshot at every progress line and a final one however the run ends.

The snapshots' counts only grow, and the final one's are the summary's: what a metrics listener needs
for increments that add up to the run's totals.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import (
    MigrationConfig,
    ProgressSnapshot,
    RunControl,
    SendingState,
    run_migration,
)
from airflow_provider_unkey.migration.record import OutcomeWriter, Progress, Reason, Stage
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.migration.test_engine import API, FAST, MIGRATION, ROOT, b64, source


class Injector:
    """Answers the first multi-key request that carries a given hash with a given status, once each.

    A 500 makes the engine split the batch; a 503 makes the client retry it (one request, two HTTP
    requests). Nothing is committed by the faulted request.
    """

    def __init__(self, emu: UnkeyEmulator, faults: dict[str, int]) -> None:
        self.left = dict(faults)
        self._lock = threading.Lock()
        self._original: Callable[..., Any] = emu._delay_and_route  # type: ignore[attr-defined]
        emu._delay_and_route = self._route  # type: ignore[method-assign]

    def _route(self, req: Any, route: Any, body: Any, n_keys: int, draw: Any) -> Any:
        if req.path == "/v2/keys.migrateKeys" and n_keys > 1 and draw.storm_retry_after is None:
            carried = {k.get("hash") for k in body["keys"]}
            with self._lock:
                hit = next((h for h in self.left if h in carried), None)
                status = self.left.pop(hit) if hit is not None else None
            if status is not None:
                draw = dataclasses.replace(draw, error_status=status)
        return self._original(req, route, body, n_keys, draw)


class Clock:
    """``time.monotonic`` for Progress, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("airflow_provider_unkey.migration.record.progress.time.monotonic", clock)
    return clock


def migrated(writer: OutcomeWriter, n: int, start: int) -> None:
    rows = list(range(start, start + n))
    writer.migrated([b64(r) for r in rows], [f"key_{r}" for r in rows], rows, ["req"] * n)


def test_a_snapshot_at_every_line_and_a_final_one(tmp_path: Path, clock: Clock) -> None:
    writer = OutcomeWriter(tmp_path)
    snapshots: list[ProgressSnapshot] = []
    lines: list[str] = []
    progress = Progress(writer, 100, interval=5.0, emit=lines.append, listeners=[snapshots.append])
    migrated(writer, 10, 0)
    clock.now += 1
    progress.maybe_log()  # within the interval: no line, no snapshot
    assert snapshots == [] and lines == []
    clock.now += 4
    progress.maybe_log()
    writer.failed([b64(10), b64(11)], [10, 11], Reason.INVALID, Stage.VALIDATE, "name: empty")
    migrated(writer, 20, 12)
    progress.sending = lambda: SendingState(requests=3, in_flight=2, concurrency_limit=8, batch_size=50)
    clock.now += 2
    progress.finish()
    progress.finish()  # once only
    clock.now += 10
    progress.maybe_log()  # after the end: nothing more goes to the listeners
    writer.close()
    assert [s.final for s in snapshots] == [False, True]
    first, last = snapshots
    assert (first.done, first.migrated, first.failed, first.elapsed_seconds) == (10, 10, 0, 5.0)
    assert first.keys_per_second == pytest.approx(2.0) and first.sending is None
    assert (last.done, last.migrated, dict(last.failed_by_reason), last.failed) == (32, 30, {"invalid": 2}, 2)
    assert last.keys_per_second == pytest.approx(22 / 2)  # since the snapshot before
    assert last.mean_keys_per_second == pytest.approx(32 / 7)
    assert last.sending == SendingState(requests=3, in_flight=2, concurrency_limit=8, batch_size=50)
    assert len(lines) == 3  # the lines are as before: the forced last one included


def test_a_failing_listener_is_logged_once_and_the_others_go_on(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(snapshot: ProgressSnapshot) -> None:
        raise RuntimeError("the metrics backend is down")

    def broken_state() -> SendingState:
        raise RuntimeError("no state")

    writer = OutcomeWriter(tmp_path)
    seen: list[ProgressSnapshot] = []
    progress = Progress(writer, None, interval=1.0, emit=lambda line: None, listeners=[broken, seen.append])
    progress.sending = broken_state
    with caplog.at_level(logging.WARNING, logger="airflow_provider_unkey.migration.record.progress"):
        for _ in range(3):
            clock.now += 1
            progress.maybe_log()
        progress.finish()
    writer.close()
    assert len(seen) == 4 and all(s.sending is None for s in seen)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in failures]  # the listener once, the state once


@pytest.fixture
def emu() -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as emulator:
        yield emulator


def test_the_final_snapshot_holds_the_summarys_totals(emu: UnkeyEmulator, tmp_path: Path) -> None:
    """Against the emulator, with 429s, a 500 that splits a batch, a 503 the client retries, and
    invalid, duplicate and existing keys."""
    emu.set_faults(rate_limit_storm=2, storm_retry_after=0)
    emu.add_existing_hash(b64(7))  # already in Unkey
    Injector(emu, {b64(150): 500, b64(250): 503})
    snapshots: list[ProgressSnapshot] = []
    with UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4) as client:
        summary = run_migration(
            source(4, 100, invalid_every=37, dup_every=23),
            client,
            MigrationConfig(
                MIGRATION, API, batch_size=40, max_concurrency=4, retry=FAST, progress_interval=0.0
            ),
            tmp_path,
            listeners=[snapshots.append],
        )
    assert snapshots[-1].final and not any(s.final for s in snapshots[:-1])
    for before, after in itertools.pairwise(snapshots):
        assert after.migrated >= before.migrated and after.skipped >= before.skipped
        assert all(after.failed_by_reason.get(r, 0) >= n for r, n in before.failed_by_reason.items())
        assert before.sending is not None and after.sending is not None
        assert after.sending.requests >= before.sending.requests
    last = snapshots[-1]
    assert last.sending is not None
    assert (last.migrated, dict(last.failed_by_reason)) == (summary.migrated, summary.failed_by_reason)
    assert last.sending.requests == summary.requests
    assert last.sending.rate_limited == summary.throttle["rate_limited_answers"] == 2
    assert last.sending.splits == 1 and last.sending.in_flight == 0
    assert set(summary.failed_by_reason) == {"invalid", "duplicate_in_source", "already_exists"}
    sent = [r for r in emu.requests if r.path == "/v2/keys.migrateKeys"]
    assert len(sent) == summary.requests + 1  # the 503's retry is the same request


def test_a_run_that_fails_still_sends_its_final_snapshot(emu: UnkeyEmulator, tmp_path: Path) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield from source(2, 50)
        raise OSError("the source went away")

    snapshots: list[ProgressSnapshot] = []
    with (
        UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4) as client,
        pytest.raises(OSError, match="went away"),
    ):
        run_migration(
            failing(),
            client,
            MigrationConfig(MIGRATION, API, batch_size=30, retry=FAST),
            tmp_path,
            listeners=[snapshots.append],
        )
    assert snapshots and snapshots[-1].final
    last = snapshots[-1]
    assert last.done == 100 and last.migrated + last.failed == 100
    assert last.sending is not None and last.sending.requests == len(
        [r for r in emu.requests if r.path == "/v2/keys.migrateKeys"]
    )


def test_a_run_stopped_from_another_thread_sends_its_final_snapshot(
    emu: UnkeyEmulator, tmp_path: Path
) -> None:
    """As Airflow's on_kill stops it: the last snapshot holds what the summary of the stopped run does."""
    control = RunControl()
    stopped = threading.Event()

    def stopping() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(source(20, 50)):
            if i == 4:
                threading.Thread(target=lambda: (control.stop(timeout=30), stopped.set())).start()
                stopped.wait()
            yield batch

    snapshots: list[ProgressSnapshot] = []
    with UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4) as client:
        summary = run_migration(
            stopping(),
            client,
            MigrationConfig(MIGRATION, API, batch_size=30, retry=FAST),
            tmp_path,
            control=control,
            listeners=[snapshots.append],
        )
    assert summary.stopped and summary.failed_by_reason.get("not_sent")
    last = snapshots[-1]
    assert last.final and last.sending is not None
    assert (last.migrated, dict(last.failed_by_reason)) == (summary.migrated, summary.failed_by_reason)
    assert last.sending.requests == summary.requests


def test_a_dry_run_has_no_sending_state(tmp_path: Path) -> None:
    snapshots: list[ProgressSnapshot] = []
    run_migration(
        source(2, 50),
        None,
        MigrationConfig(MIGRATION, API, dry_run=True),
        tmp_path,
        listeners=[snapshots.append],
    )
    assert snapshots[-1].final and snapshots[-1].sending is None
