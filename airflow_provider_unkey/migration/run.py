"""The run: wire a source through validation, deduplication, the ledger, batching and sending.

Nothing here imports Airflow. :func:`run_migration` is the whole run, its settings in a
:class:`~airflow_provider_unkey.migration.config.MigrationConfig`; :class:`RunControl` lets another
thread stop it; :class:`InvariantError` is raised when rows read and outcomes recorded do not
reconcile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from airflow_provider_unkey.arrow_memory import returning_arrow_memory
from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.exceptions import UnkeyError
from airflow_provider_unkey.migration.config import MigrationConfig
from airflow_provider_unkey.migration.dedupe import DigestSet
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerWriter
from airflow_provider_unkey.migration.prepare import KeyPreparer, PreparedRows, resolve_mapping
from airflow_provider_unkey.migration.record import (
    MigrationSummary,
    OutcomeWriter,
    Progress,
    ProgressListener,
    Reason,
    SendingState,
    Stage,
    Timeline,
)
from airflow_provider_unkey.migration.send import Batch, Batcher, MigrationAborted, MigrationEngine


class InvariantError(UnkeyError):
    """Rows read and outcomes recorded do not reconcile: a bug, reported loudly."""


class RunControl:
    """Lets another thread stop a run (Airflow's ``on_kill``): nothing more is sent, requests in flight
    get a bounded time to end, and the ledger is flushed.

    Pass it to :func:`run_migration`; call :meth:`stop` from anywhere, a signal handler included.
    """

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.engine: MigrationEngine | None = None
        self.ledger: LedgerWriter | None = None

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the run; wait at most about ``timeout`` seconds for requests in flight, then flush the ledger.

        :return: whether every request in flight ended (and its outcome was flushed) in time.
        """
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        engine, ledger = self.engine, self.ledger
        idle = engine.wait_idle(timeout) if engine is not None else True
        if ledger is not None:
            # From another thread: the caller may be a signal handler that interrupted a thread holding
            # the ledger's buffer lock, and waiting on it here would never end.
            flusher = threading.Thread(target=ledger.flush, name="unkey-ledger-stop", daemon=True)
            flusher.start()
            flusher.join(max(deadline - time.monotonic(), 1.0))
            idle = idle and not flusher.is_alive()
        return idle


def _sending_state(engine: MigrationEngine) -> SendingState:
    """The engine's numbers, for the progress snapshots."""
    controls = engine.state()
    return SendingState(
        requests=engine.requests,
        splits=engine.splits,
        rate_limited=engine.pacer.refused,
        in_flight=controls["in_flight"],
        concurrency_limit=controls["limit"],
        max_concurrency=engine.max_concurrency,
        batch_size=controls["batch_size"],
        rate_limit_share=engine.pacer.share(),
        rate_limit_waited_seconds=engine.pacer.waited,
    )


def _emit_resumed(writer: OutcomeWriter, fresh: PreparedRows, mine: np.ndarray, known: KnownHashes) -> None:
    """Report again the outcomes that earlier tries of this task instance recorded for these rows."""
    idx = np.flatnonzero(mine >= 0)
    records = known.records.take(pa.array(mine[idx]))
    rows = fresh.rows[idx].tolist()
    wire = [fresh.hashes[i] for i in idx]
    reason_col = records.column("reason").to_pylist()
    key_ids = records.column("key_id").to_pylist()
    details = records.column("detail").to_pylist()
    request_ids = records.column("request_id").to_pylist()
    tries = records.column("try_number").to_pylist()
    groups: dict[str | None, list[int]] = {}
    for j, reason in enumerate(reason_col):
        groups.setdefault(reason, []).append(j)
    for reason, js in groups.items():
        if reason is None:
            writer.migrated(
                [wire[j] for j in js],
                [key_ids[j] for j in js],
                [rows[j] for j in js],
                [request_ids[j] for j in js],
                resumed=True,
            )
        else:
            writer.failed(
                [wire[j] for j in js],
                [rows[j] for j in js],
                Reason(reason),
                Stage.SEND,
                [f"{details[j] or reason} (recorded by try {tries[j]} of this task)" for j in js],
                [request_ids[j] for j in js],
                resumed=True,
            )


@returning_arrow_memory()  # freed Arrow memory goes back to the system (see arrow_memory)
def run_migration(
    source: Iterable[pa.RecordBatch],
    client: UnkeyClient | None,
    config: MigrationConfig,
    output_dir: str | Path,
    *,
    total_rows: int | None = None,
    emit: Callable[[str], None] | None = None,
    ledger: LedgerWriter | None = None,
    known: KnownHashes | None = None,
    control: RunControl | None = None,
    timeline: Timeline | None = None,
    listeners: Iterable[ProgressListener] = (),
) -> MigrationSummary:
    """Migrate every row of ``source``; write ``migrated.parquet`` and ``failed.parquet`` to ``output_dir``.

    :param source: Arrow record batches, read lazily (a generator keeps memory flat).
    :param client: the Unkey client; may be ``None`` for a dry run (``config.dry_run``).
    :param config: the run's settings (:class:`~airflow_provider_unkey.migration.config.MigrationConfig`),
        checked when it was built.
    :param output_dir: a local directory for the two Parquet files.
    :param total_rows: the number of source rows, when known, for progress and ETA.
    :param emit: where progress lines go (default: the logger of
        :mod:`~airflow_provider_unkey.migration.record.progress`).
    :param ledger: records every new outcome durably; closed (flushed and compacted) at the end.
    :param known: what the ledger held before the run (:meth:`KnownHashes.load`): hashes an earlier try
        of this task instance recorded as existing get that outcome again; hashes other runs recorded
        as existing are skipped. Invalid and duplicate rows are judged afresh either way.
    :param control: lets another thread stop the run (:meth:`RunControl.stop`).
    :param timeline: filled with samples of the run's progress and controls, for the report.
    :param listeners: each is handed a
        :class:`~airflow_provider_unkey.migration.record.ProgressSnapshot` at every progress line and
        once when the run ends, fails or is stopped (metrics, for one); what one raises is logged and
        ignored.
    :raises MigrationAborted: on 401, 403 or 404, after the outputs are written.
    :raises InvariantError: if rows and outcomes do not reconcile.
    :raises ValueError: if there is no client and ``config.dry_run`` is not set.
    """
    dry_run = config.dry_run
    if client is None and not dry_run:
        raise ValueError("a client is needed unless dry_run is set")
    started = time.monotonic()
    writer = OutcomeWriter(output_dir, ledger=ledger, list_skipped=config.list_skipped)
    dedupe = DigestSet()
    batcher = Batcher(config.migration_id, config.api_id, config.batch_size, config.max_request_bytes)
    state: dict[str, Any] = {"rows": 0, "prepare": 0.0, "preparer": None, "would_send": 0, "batches": 0}
    progress = Progress(writer, total_rows, config.progress_interval, emit, timeline, listeners)
    control = control or RunControl()
    control.ledger = ledger
    abort = control.stop_event
    resumed_try = known.resumed_try if known is not None else None
    skip_detail = "a key with this hash exists in Unkey: the ledger holds an earlier run's outcome for it"

    def read() -> Iterator[pa.RecordBatch]:
        """The source's batches; if reading fails, the rows read but not yet sent get an outcome."""
        iterator = iter(source)
        while True:
            try:
                record_batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                tail = batcher.flush()
                if tail is not None:
                    writer.failed(
                        tail.hashes,
                        tail.rows,
                        Reason.NOT_SENT,
                        Stage.SEND,
                        f"not sent: reading the source failed after this row ({type(exc).__name__}: {exc})",
                    )
                raise
            yield record_batch

    def batches() -> Iterator[Batch]:
        for record_batch in read():
            if abort.is_set():
                break
            t0 = time.monotonic()
            preparer: KeyPreparer | None = state["preparer"]
            if preparer is None:
                mapping = resolve_mapping(config.column_mapping, record_batch.schema)
                preparer = state["preparer"] = KeyPreparer(
                    mapping,
                    hash_format=config.hash_format,
                    algorithm=config.algorithm,
                    list_delimiter=config.list_delimiter,
                    max_key_bytes=batcher.max_key_bytes,
                )
            prepared, rejects = preparer.prepare(record_batch, state["rows"])
            state["rows"] += record_batch.num_rows
            writer.failed(rejects.hashes, rejects.rows, Reason.INVALID, Stage.VALIDATE, rejects.details)
            first = dedupe.add(prepared.digests, prepared.rows)
            duplicate = first >= 0
            if duplicate.any():
                idx = np.flatnonzero(duplicate)
                writer.failed(
                    [prepared.hashes[i] for i in idx],
                    prepared.rows[idx].tolist(),
                    Reason.DUPLICATE_IN_SOURCE,
                    Stage.DEDUPLICATE,
                    [f"hash: the same hash as source row {r}" for r in first[idx].tolist()],
                )
            fresh = prepared.take(~duplicate)
            if known is not None and len(known):
                seen = known.lookup(fresh.digests)
                if (seen.mine >= 0).any():
                    _emit_resumed(writer, fresh, seen.mine, known)
                if seen.known.any():
                    idx = np.flatnonzero(seen.known)
                    writer.skipped([fresh.hashes[i] for i in idx], fresh.rows[idx].tolist(), skip_detail)
                fresh = fresh.take((seen.mine < 0) & ~seen.known)
            state["prepare"] += time.monotonic() - t0
            yield from batcher.add(fresh)
        tail = batcher.flush()
        if tail is not None:
            yield tail

    aborted: MigrationAborted | None = None
    requests = 0
    throttle: dict[str, float | int] = {}
    try:
        if dry_run:
            for batch in batches():
                state["would_send"] += len(batch)
                state["batches"] += 1
                progress.maybe_log()
        else:
            assert client is not None
            engine = MigrationEngine(
                client,
                config.migration_id,
                config.api_id,
                batcher,
                writer,
                max_concurrency=config.max_concurrency,
                retry=config.retry,
                progress=progress,
                abort_event=abort,
                resumed_try=resumed_try,
                adaptive=config.adaptive,
                rate_limit_headroom=config.rate_limit_headroom,
                rate_limit_window=config.rate_limit_window,
                time_budget=config.time_budget,
            )
            control.engine = engine
            progress.sending = lambda: _sending_state(engine)
            try:
                engine.run(batches())
            except MigrationAborted as exc:
                aborted = exc
            state["batches"], requests = engine.batches, engine.requests
            throttle = engine.throttle_summary()
    finally:
        try:
            writer.close()
            dedupe.close()  # its spill files, if it had to spill
        finally:
            progress.finish()  # the last line and snapshot, however the run ended
    duration = time.monotonic() - started
    summary = MigrationSummary(
        total=state["rows"],
        migrated=writer.migrated_count,
        failed=writer.failed_count,
        failed_by_reason=dict(writer.failed_by_reason),
        skipped=writer.skipped_count,
        resumed=writer.resumed_count,
        would_send=state["would_send"],
        batches=state["batches"],
        requests=requests,
        dry_run=dry_run,
        aborted=str(aborted) if aborted else None,
        stopped=abort.is_set() and aborted is None,
        duration_seconds=round(duration, 3),
        prepare_seconds=round(state["prepare"], 3),
        keys_per_second=round(state["rows"] / duration, 1) if duration > 0 else 0.0,
        outputs={"migrated": str(writer.migrated_path), "failed": str(writer.failed_path)},
        throttle=throttle,
    )
    if writer.skipped_path is not None:
        summary.outputs["skipped"] = str(writer.skipped_path)
    if summary.total != summary.migrated + summary.failed + summary.skipped + summary.would_send:
        raise InvariantError(
            f"{summary.total} rows read but {summary.migrated} migrated + {summary.failed} failed"
            f" + {summary.skipped} skipped + {summary.would_send} would be sent: rows without an outcome"
            " (a bug; please report it)"
        )
    if aborted is not None:
        aborted.summary = summary
        raise aborted
    return summary
