"""Writing the ledger: :class:`LedgerWriter` records outcomes, writes segments, compacts them.

Nothing here imports Airflow. See :mod:`airflow_provider_unkey.migration.ledger`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_provider_unkey.migration.ledger.base import (
    _PARQUET_OPTIONS,
    _SEGMENT_PREFIX,
    LEDGER_SCHEMA,
    LedgerError,
    LedgerScope,
    _attempt_marker,
    _fsync_dir,
    _Storage,
    _utc_stamp,
)
from airflow_provider_unkey.migration.record import Reason, Stage

log = logging.getLogger(__name__)

# --- writing ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    """The outcomes of one call: per-row lists, and what is the same for all of them."""

    hashes: list[str | None]
    rows: list[int]
    key_ids: list[str] | None  # None: all null (failed rows)
    reason: str | None
    stage: str | None
    details: list[str | None] | None  # None: all null (migrated rows)
    request_id: str | None


class _Compacted:
    """The file a try's segments end up in, written as they are written: compaction that never reads
    them back. Hidden (``_…partial``) until :meth:`finish` puts it in place and deletes its segments.
    """

    def __init__(self, storage: _Storage, name: str) -> None:
        self.storage = storage
        self.name = name
        if storage.local:
            self.tmp = Path(storage.root) / f"_{name}.partial"
        else:  # built on local disk, uploaded whole at the end
            handle, path = tempfile.mkstemp(prefix="unkey-ledger-", suffix=".parquet")
            os.close(handle)
            self.tmp = Path(path)
        self._handle = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish() or abandon()
        self._writer = pq.ParquetWriter(self._handle, LEDGER_SCHEMA, **_PARQUET_OPTIONS)
        self.segments: list[str] = []
        self.rows = 0

    def add(self, tables: Sequence[pa.Table], segment: str) -> None:
        for table in tables:
            self._writer.write_table(table)
            self.rows += table.num_rows
        self.segments.append(segment)

    def finish(self) -> str:
        """Put the file in place (fsynced, renamed; or uploaded), then delete the segments it holds."""
        self._writer.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if self.storage.local:
            os.replace(self.tmp, self.storage.path(self.name))
            _fsync_dir(Path(self.storage.root))
        else:
            self.storage.filesystem.put_file(str(self.tmp), self.storage.path(self.name))
            self.tmp.unlink(missing_ok=True)
        self.storage.delete(self.segments)
        return self.name

    def abandon(self) -> None:
        """Give up on the file; its segments stay, for a later compaction."""
        try:
            self._writer.close()
            self._handle.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class LedgerWriter:
    """Records outcomes into a ledger directory as they happen. Thread-safe.

    A background thread writes what was recorded every ``flush_interval`` seconds as a new segment.
    Each segment's rows also go, as they are written, into the try's compacted file (compressed,
    hidden until it is complete); :meth:`close` puts that file in place and deletes the segments it
    holds. A long run rolls over to a new compacted file every ``compact_rows`` rows.

    While a try runs, a small marker file ``_attempt-<task instance>.json`` stands in the directory;
    :meth:`close` removes it once every outcome is written. A marker left behind means the try died
    (SIGKILL, OOM, a lost node) with requests in flight, which tells the next try to report the keys
    Unkey says exist, and the ledger does not know, as ``unconfirmed``.

    :param root: the ledger directory: a local path, or a path on ``filesystem``.
    :param scope: the task instance and try that record.
    :param migration_id: tags every row.
    :param api_id: tags every row.
    :param filesystem: an fsspec filesystem (``None``: local).
    :param flush_interval: seconds between segments: what a SIGKILL can lose at most.
    :param max_buffer_rows: rows recorded before a segment is written early (bounds memory).
    :param compact_rows: rows per compacted file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        scope: LedgerScope,
        *,
        migration_id: str,
        api_id: str,
        filesystem: Any | None = None,
        flush_interval: float = 1.0,
        max_buffer_rows: int = 100_000,
        compact_rows: int = 5_000_000,
    ) -> None:
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be positive, got {flush_interval}")
        self.storage = _Storage(root, filesystem)
        self.scope = scope
        self.migration_id = migration_id
        self.api_id = api_id
        self.flush_interval = flush_interval
        self.max_buffer_rows = max_buffer_rows
        self.compact_rows = compact_rows
        self._compacted: _Compacted | None = None
        #: Rows and segments written so far by this writer.
        self.rows_written = 0
        self.segments_written = 0
        self._chunks: list[_Chunk] = []
        self._pending = 0
        self._unwritten: list[pa.Table] = []  # tables a failed write left behind, written next time
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        marker = {
            "dag_id": scope.dag_id,
            "run_id": scope.run_id,
            "task_id": scope.task_id,
            "map_index": scope.map_index,
            "try_number": scope.try_number,
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        self.storage.put_bytes(_attempt_marker(scope), json.dumps(marker).encode())
        self._thread = threading.Thread(target=self._loop, name="unkey-ledger", daemon=True)
        self._thread.start()

    @property
    def root(self) -> str:
        return self.storage.root

    # --- recording, from any thread ----------------------------------------------------------------
    def _append(self, chunk: _Chunk) -> None:
        with self._buffer_lock:
            self._chunks.append(chunk)
            self._pending += len(chunk.rows)
            full = self._pending >= self.max_buffer_rows
        if full:
            self._wake.set()

    def record_migrated(
        self, hashes: Sequence[str], key_ids: Sequence[str], rows: Sequence[int], request_id: str | None
    ) -> None:
        """Record keys Unkey created."""
        if hashes:
            self._append(_Chunk(list(hashes), list(rows), list(key_ids), None, None, None, request_id))

    def record_failed(
        self,
        hashes: Sequence[str | None],
        rows: Sequence[int],
        reason: Reason,
        stage: Stage,
        details: Sequence[str | None],
        request_id: str | None,
    ) -> None:
        """Record rows that were not migrated (one detail per row)."""
        if rows:
            self._append(
                _Chunk(list(hashes), list(rows), None, reason.value, stage.value, list(details), request_id)
            )

    def _table(self, chunks: list[_Chunk], n: int) -> pa.Table:
        """One segment's rows, column by column: what is the same for a whole chunk is not repeated."""
        s = self.scope

        def each(values: Any) -> pa.Array:
            return pa.array(list(itertools.chain.from_iterable(values)), pa.string())

        def per_chunk(values: list[str | None]) -> pa.Array:
            counts = [len(c.rows) for c in chunks]
            return pc.take(pa.array(values, pa.string()), pa.array(np.repeat(np.arange(len(values)), counts)))

        def constant(value: Any, type_: pa.DataType) -> pa.Array:
            return pa.repeat(pa.scalar(value, type_), n)

        columns = {
            "hash": each(c.hashes for c in chunks),
            "key_id": each(
                c.key_ids if c.key_ids is not None else itertools.repeat(None, len(c.rows)) for c in chunks
            ),
            "reason": per_chunk([c.reason for c in chunks]),
            "stage": per_chunk([c.stage for c in chunks]),
            "detail": each(
                c.details if c.details is not None else itertools.repeat(None, len(c.rows)) for c in chunks
            ),
            "source_row": pa.array(
                np.fromiter(itertools.chain.from_iterable(c.rows for c in chunks), dtype=np.int64, count=n)
            ),
            "request_id": per_chunk([c.request_id for c in chunks]),
            "migration_id": constant(self.migration_id, pa.string()),
            "api_id": constant(self.api_id, pa.string()),
            "dag_id": constant(s.dag_id, pa.string()),
            "run_id": constant(s.run_id, pa.string()),
            "task_id": constant(s.task_id, pa.string()),
            "map_index": constant(s.map_index, pa.int32()),
            "try_number": constant(s.try_number, pa.int32()),
            "recorded_at": constant(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC")),
        }
        return pa.Table.from_pydict(columns, schema=LEDGER_SCHEMA)

    # --- writing segments --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # kept for close(), which raises it; the next flush retries
                log.exception("writing the ledger to %s failed; retrying at the next flush", self.root)
                self._error = exc

    def flush(self) -> int:
        """Write what was recorded since the last flush as one segment; return its row count."""
        with self._buffer_lock:
            chunks, self._chunks = self._chunks, []
            pending, self._pending = self._pending, 0
        with self._write_lock:
            if pending:
                self._unwritten.append(self._table(chunks, pending))
            if not self._unwritten:
                return 0
            rows = sum(int(t.num_rows) for t in self._unwritten)
            name = (
                f"{_SEGMENT_PREFIX}{self.scope.task_instance_key}-try{self.scope.try_number}"
                f"-{_utc_stamp()}-{self.segments_written:06d}.parquet"
            )
            self.storage.write_table(name, self._unwritten, segment=True)
            tables, self._unwritten = self._unwritten, []
            self.segments_written += 1
            self.rows_written += rows
            self._error = None
            self._add_to_compacted(tables, name)
            return rows

    def _add_to_compacted(self, tables: Sequence[pa.Table], segment: str) -> None:
        """Also write a new segment's rows into the compacted file (under the write lock)."""
        try:
            if self._compacted is None:
                name = f"{self.scope.task_instance_key}-try{self.scope.try_number}-{_utc_stamp()}.parquet"
                self._compacted = _Compacted(self.storage, name)
            self._compacted.add(tables, segment)
            if self._compacted.rows >= self.compact_rows:
                compacted, self._compacted = self._compacted, None
                compacted.finish()
        except Exception:
            # The segment is durable: losing the compacted file costs only tidiness (close() merges
            # what is left the slow way).
            log.exception("writing the compacted ledger file in %s failed; segments are kept", self.root)
            if self._compacted is not None:
                self._compacted.abandon()
                self._compacted = None

    def close(self, compact: bool = True) -> None:
        """Write what is left, stop the background thread, and compact this task instance's segments.

        :raises LedgerError: when the last records cannot be written.
        """
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        except Exception as exc:
            raise LedgerError(
                f"the last outcomes could not be written to the ledger {self.root}: {exc}"
            ) from exc
        self._closed = True
        # Every outcome is written: this try left nothing in doubt.
        self.storage.delete([_attempt_marker(self.scope)])
        compacted, self._compacted = self._compacted, None
        if compacted is not None and not compact:
            compacted.abandon()
        if not compact:
            return
        try:
            if compacted is not None:
                log.info("ledger: %d segments compacted into %s", len(compacted.segments), compacted.finish())
            # What earlier tries that died left behind: their segments, their unfinished files.
            self.compact()
            self.storage.delete_partials(f"_{self.scope.task_instance_key}-")
        except Exception:
            # The segments are all there: a failed compaction costs only tidiness.
            log.exception("compacting the ledger segments in %s failed; they are kept as they are", self.root)

    def compact(self, names: Sequence[str] | None = None) -> str | None:
        """Merge segments into one file: ``names``, or all of the task instance's (this try's and
        earlier tries') that are left.

        The merged file is written (atomically) before the segments are deleted, so a crash in
        between leaves some rows twice, never none.

        :return: the merged file's name, or ``None`` when there was at most one segment.
        """
        if names is None:
            names = self.storage.list(f"{_SEGMENT_PREFIX}{self.scope.task_instance_key}-")
        if len(names) < 2:
            return None
        # One segment in memory at a time, however long the run was.
        tables = (self.storage.read(name) for name in names)
        merged = f"{self.scope.task_instance_key}-try{self.scope.try_number}-{_utc_stamp()}.parquet"
        self.storage.write_table(merged, tables)
        self.storage.delete(names)
        log.info("ledger: %d segments compacted into %s", len(names), self.storage.path(merged))
        return merged
