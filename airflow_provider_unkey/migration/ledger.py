"""The ledger: a durable, queryable record of every outcome, so nothing created is ever forgotten.

Nothing here imports Airflow.

A ledger is a directory of Parquet files that reads as one table (``pyarrow.dataset``, DuckDB's
``read_parquet('ledger/*.parquet')``, Spark, pandas), with :data:`LEDGER_SCHEMA`: one row per outcome
with the hash as it went on the wire, the key id Unkey returned (null when unknown), the reason (null
for migrated keys), and which task instance and try recorded it.

:class:`LedgerWriter` records outcomes as batches complete and writes them out as a new *segment*
file every ``flush_interval`` seconds (sooner when ``max_buffer_rows`` pile up). On a local disk each
segment is written to a hidden temporary name, fsynced, renamed into place and its directory fsynced;
on object storage each segment is one object, put whole (nothing is ever appended). A process killed
with SIGKILL therefore loses at most the outcomes of the last ``flush_interval`` seconds, plus the
requests that were in flight. Each segment's rows also go, as it is written, into the try's
compacted file, which is put in place when the run ends (and the segments it holds deleted).

:class:`KnownHashes` reads a ledger back into a compact index (17 bytes a hash; 10 million hashes
take 162 MiB) and says, for a batch of digests, which ones an earlier try of the same task instance
recorded (with their outcome, to report again) and which ones other runs know to exist in Unkey (to
skip).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from airflow_provider_unkey.migration import hashes as hash_codec
from airflow_provider_unkey.migration.dedupe import _prefix, _Run
from airflow_provider_unkey.migration.outcomes import Reason, Stage

log = logging.getLogger(__name__)

#: One row per outcome. ``hash`` is the hash as sent on the wire (as the source had it for rows that
#: failed validation); ``reason`` is null for migrated keys; ``map_index`` is -1 for unmapped tasks.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string()),
        pa.field("key_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("request_id", pa.string()),
        pa.field("migration_id", pa.string()),
        pa.field("api_id", pa.string()),
        pa.field("dag_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("map_index", pa.int32()),
        pa.field("try_number", pa.int32()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)

#: Dictionary encoding only where values repeat: hashes and key ids are random and unique.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": [
        *("reason", "stage", "request_id", "migration_id", "api_id", "dag_id", "run_id", "task_id"),
        *("map_index", "try_number", "recorded_at"),
    ],
}

#: Segments live only until the compacted file is in place: written fast, uncompressed.
_SEGMENT_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False}

#: Outcomes that mean "a key with this hash exists in Unkey": such hashes are never sent again.
EXISTS_IN_UNKEY: tuple[str, ...] = (Reason.ALREADY_EXISTS.value, Reason.UNCONFIRMED.value)
_SEGMENT_PREFIX = "seg-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


class LedgerError(RuntimeError):
    """The ledger could not be written or read."""


@dataclass(frozen=True, slots=True)
class LedgerScope:
    """Who records: the task instance (DAG, run, task, map index) and its try.

    Records of the same task instance from earlier tries are what a retry resumes from.
    """

    dag_id: str = "-"
    run_id: str = "-"
    task_id: str = "-"
    map_index: int = -1
    try_number: int = 1

    @property
    def task_instance_key(self) -> str:
        """A short stable name for the task instance, safe in file names."""
        raw = "\x1f".join((self.dag_id, self.run_id, self.task_id, str(self.map_index)))
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        label = _UNSAFE.sub("_", self.task_id)[:60]
        suffix = f"-m{self.map_index}" if self.map_index >= 0 else ""
        return f"{label}{suffix}-{digest}"


# --- storage ---------------------------------------------------------------------------------------


def _is_local(filesystem: Any) -> bool:
    if filesystem is None:
        return True
    from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

    return isinstance(filesystem, LocalFileSystem)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Storage:
    """Writes whole files into the ledger directory: fsynced renames locally, one put on object storage."""

    def __init__(self, root: str | os.PathLike[str], filesystem: Any, *, create: bool = True) -> None:
        self.local = _is_local(filesystem)
        self.filesystem: Any = filesystem
        self.root = os.fspath(root).rstrip("/") or "/"
        if not create:
            return
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        else:
            self.filesystem.makedirs(self.root, exist_ok=True)

    def exists(self) -> bool:
        return Path(self.root).is_dir() if self.local else bool(self.filesystem.isdir(self.root))

    def dataset(self) -> ds.Dataset:
        """The directory as one dataset (files named ``_*`` or ``.*``, the temporary ones, are skipped)."""
        return ds.dataset(
            self.root, format="parquet", schema=LEDGER_SCHEMA, filesystem=self.pyarrow_filesystem()
        )

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def write_table(self, name: str, tables: Iterable[pa.Table], *, segment: bool = False) -> str:
        """Write ``tables`` (consumed one at a time) as one Parquet file ``name``, atomically.

        ``segment``: a short-lived file that compaction rewrites: written fast, uncompressed.
        """
        target = self.path(name)
        options = _SEGMENT_OPTIONS if segment else _PARQUET_OPTIONS
        if self.local:
            tmp = Path(self.root) / f"_{name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with open(tmp, "wb") as handle:
                    with pq.ParquetWriter(handle, LEDGER_SCHEMA, **options) as writer:
                        for table in tables:
                            writer.write_table(table)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(Path(self.root))
        else:
            # One object, written in one upload (multipart where the store has it) that appears whole
            # when it completes: object stores have no appends.
            with (
                self.filesystem.open(target, "wb") as handle,
                pq.ParquetWriter(handle, LEDGER_SCHEMA, **options) as writer,
            ):
                for table in tables:
                    writer.write_table(table)
        return target

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a small file whole (atomically, fsynced on a local disk)."""
        if not self.local:
            self.filesystem.pipe_file(self.path(name), data)
            return
        tmp = Path(self.root) / f"_{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(name))
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(Path(self.root))

    def read_bytes(self, name: str) -> bytes | None:
        """A small file's content, or ``None`` when it does not exist."""
        try:
            if self.local:
                return Path(self.path(name)).read_bytes()
            data: bytes = self.filesystem.cat_file(self.path(name))
            return data
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        """Names of the files in the ledger directory that start with ``prefix``."""
        if self.local:
            return sorted(p.name for p in Path(self.root).glob(f"{prefix}*.parquet"))
        names = self.filesystem.glob(self.path(f"{prefix}*.parquet"))
        return sorted(str(n).rsplit("/", 1)[-1] for n in names)

    def read(self, name: str) -> pa.Table:
        if self.local:
            return pq.read_table(self.path(name), schema=LEDGER_SCHEMA)
        with self.filesystem.open(self.path(name), "rb") as handle:
            return pq.read_table(handle, schema=LEDGER_SCHEMA)

    def delete(self, names: Sequence[str]) -> None:
        for name in names:
            if self.local:
                Path(self.path(name)).unlink(missing_ok=True)
            else:
                self.filesystem.rm_file(self.path(name))
        if self.local and names:
            _fsync_dir(Path(self.root))

    def delete_partials(self, prefix: str) -> None:
        """Remove unfinished compacted files (``<prefix>*.partial``) that dead tries left locally."""
        if self.local:
            for path in Path(self.root).glob(f"{prefix}*.partial"):
                path.unlink(missing_ok=True)

    def pyarrow_filesystem(self) -> pafs.FileSystem:
        if self.local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.filesystem))


def _attempt_marker(scope: LedgerScope) -> str:
    """The file that says a try of this task instance is under way (``_``: no dataset reader sees it)."""
    return f"_attempt-{scope.task_instance_key}.json"


def _utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


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


# --- reading ---------------------------------------------------------------------------------------


def _words(digest_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 16 bytes of each digest as two uint64: prefix (sorted, searched) and the next word."""
    contiguous = np.ascontiguousarray(digest_rows, dtype=np.uint8)
    second = np.ascontiguousarray(contiguous[:, 8:16]).view(">u8").reshape(len(contiguous))
    return _prefix(contiguous), second.astype(np.uint64)


def _task_instance_filter(scope: LedgerScope) -> pc.Expression:
    return (
        (pc.field("dag_id") == scope.dag_id)
        & (pc.field("run_id") == scope.run_id)
        & (pc.field("task_id") == scope.task_id)
        & (pc.field("map_index") == scope.map_index)
    )


def _same_task_instance(batch: pa.RecordBatch, scope: LedgerScope) -> np.ndarray:
    same = pc.and_(
        pc.and_(
            pc.equal(batch.column("dag_id"), scope.dag_id), pc.equal(batch.column("run_id"), scope.run_id)
        ),
        pc.and_(
            pc.equal(batch.column("task_id"), scope.task_id),
            pc.equal(batch.column("map_index"), scope.map_index),
        ),
    )
    return np.asarray(pc.fill_null(same, False).to_numpy(zero_copy_only=False), dtype=bool)


def _of_wire_format(batch: pa.RecordBatch, wire_format: str, width: int) -> tuple[pa.RecordBatch, np.ndarray]:
    """The rows whose hash has ``wire_format``, and their digests.

    Hashes with an existing outcome went out on the wire, so their length tells the format; the full
    check (a regex) runs only for a batch that does not decode.
    """
    batch = batch.filter(pc.fill_null(pc.equal(pc.binary_length(batch.column("hash")), width), False))
    try:
        return batch, hash_codec.digests(batch.column("hash"), wire_format)
    except ValueError:
        batch = batch.filter(hash_codec.format_mask(batch.column("hash"), wire_format))
        return batch, hash_codec.digests(batch.column("hash"), wire_format)


@dataclass(slots=True)
class Lookup:
    """What the ledger knows of a batch of digests.

    :param mine: per digest, the index into :attr:`KnownHashes.records` of an earlier try's record of
        this task instance, or -1.
    :param known: per digest, whether another run recorded it as existing in Unkey (and it is not in
        ``mine``).
    """

    mine: np.ndarray
    known: np.ndarray


class KnownHashes:
    """The hashes a ledger knows to exist in Unkey, as a compact sorted index.

    Only hashes of the current wire format count (base64 for ``sha256`` migrations, hex for seam
    ones). A hash is matched on the first 16 bytes of its digest (a 128-bit match: a false match
    among 10^8 keys has a probability of about 10^-23).

    :param records: the earlier tries' outcomes of this task instance that mean the key exists in
        Unkey (``key_id``, ``reason``, ``detail``, ``request_id``, ``try_number``), in index order.
    """

    def __init__(self, mine: _Run | None, others: _Run | None, records: pa.Table, resumed_try: int | None):
        self._mine = mine
        self._others = others
        self.records = records
        #: An earlier try of this task instance that died before recording every outcome (``None``:
        #: none did), from the marker it left.
        self.resumed_try = resumed_try

    @property
    def mine_count(self) -> int:
        return len(self._mine) if self._mine is not None else 0

    @property
    def others_count(self) -> int:
        return len(self._others) if self._others is not None else 0

    def __len__(self) -> int:
        return self.mine_count + self.others_count

    @property
    def nbytes(self) -> int:
        """Memory held by the index (not counting :attr:`records`)."""
        return sum(int(r.nbytes) for r in (self._mine, self._others) if r is not None)

    def lookup(self, digest_rows: np.ndarray) -> Lookup:
        """Which of ``(n, 32)`` digests the ledger knows."""
        n = len(digest_rows)
        mine = np.full(n, -1, dtype=np.int64)
        known = np.zeros(n, dtype=bool)
        if n == 0 or not len(self):
            return Lookup(mine, known)
        prefixes, seconds = _words(digest_rows)
        if self._mine is not None:
            self._mine.lookup(prefixes, seconds, mine)
        if self._others is not None:
            found = np.full(n, -1, dtype=np.int64)
            self._others.lookup(prefixes, seconds, found)
            known = (found >= 0) & (mine < 0)
        return Lookup(mine, known)

    @staticmethod
    def _scan(
        dataset: ds.Dataset, columns: list[str], filter_: pc.Expression, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Batches of the rows that pass ``filter_``, with one batch and one file read ahead at most."""
        scanner = dataset.scanner(
            columns=columns,
            filter=filter_,
            batch_size=batch_rows,
            batch_readahead=1,
            fragment_readahead=1,
            use_threads=False,
        )
        for batch in scanner.to_batches():
            if batch.num_rows:
                yield batch

    @classmethod
    def empty(cls) -> KnownHashes:
        return cls(None, None, _RECORDS_SCHEMA.empty_table(), None)

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str],
        scope: LedgerScope,
        wire_format: str,
        *,
        filesystem: Any | None = None,
        batch_rows: int = 262_144,
    ) -> KnownHashes:
        """Read a ledger directory (missing or empty: nothing known).

        :param root: the ledger directory.
        :param scope: the current task instance: its earlier tries' records are resumed from.
        :param wire_format: ``sha256_base64`` or ``sha256_hex``: hashes of the other format are ignored.
        :param filesystem: an fsspec filesystem (``None``: local).
        """
        storage = _Storage(root, filesystem, create=False)
        if not storage.exists():
            return cls.empty()
        marker = storage.read_bytes(_attempt_marker(scope))
        resumed = int(json.loads(marker)["try_number"]) if marker is not None else None
        dataset = storage.dataset()
        exists_filter = pc.field("reason").is_null() | pc.field("reason").isin(list(EXISTS_IN_UNKEY))
        width = 44 if wire_format == "sha256_base64" else 64
        mine_parts: list[tuple[np.ndarray, np.ndarray]] = []
        other_parts: list[tuple[np.ndarray, np.ndarray]] = []
        record_parts: list[pa.RecordBatch] = []
        owners = ["dag_id", "run_id", "task_id", "map_index"]
        try:
            # Pass 1, over the whole ledger: only what the index needs, one batch ahead at most.
            for scanned in cls._scan(dataset, ["hash", *owners], exists_filter, batch_rows):
                batch, digest_rows = _of_wire_format(scanned, wire_format, width)
                same = _same_task_instance(batch, scope)
                prefixes, seconds = _words(digest_rows)
                other = ~same
                if other.any():
                    other_parts.append((prefixes[other], seconds[other]))
                if same.any():
                    mine_parts.append((prefixes[same], seconds[same]))
            if mine_parts:
                # Pass 2, only when earlier tries of this task instance recorded something: their
                # outcomes, to report again. The filter keeps just their rows.
                mine_filter = exists_filter & _task_instance_filter(scope)
                mine_parts = []
                for scanned in cls._scan(dataset, [*_RECORDS_SCHEMA.names], mine_filter, batch_rows):
                    batch, digest_rows = _of_wire_format(scanned, wire_format, width)
                    prefixes, seconds = _words(digest_rows)
                    mine_parts.append((prefixes, seconds))
                    record_parts.append(
                        pa.RecordBatch.from_arrays(
                            [batch.column(c) for c in _RECORDS_SCHEMA.names], schema=_RECORDS_SCHEMA
                        )
                    )
        except (OSError, pa.ArrowInvalid) as exc:
            raise LedgerError(f"the ledger {storage.root} cannot be read: {exc}") from exc
        finally:
            pa.default_memory_pool().release_unused()  # the scan's buffers, back to the system

        def build(parts: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray | None) -> _Run | None:
            if not parts:
                return None
            prefixes = np.concatenate([p for p, _ in parts])
            seconds = np.concatenate([s for _, s in parts])
            # ``rows``: what a lookup returns; a single zero byte a hash where only presence matters.
            values = rows if rows is not None else np.zeros(len(prefixes), dtype=np.int8)
            return _Run(prefixes, seconds, values)

        records = pa.Table.from_batches(record_parts, schema=_RECORDS_SCHEMA)
        mine = build(mine_parts, np.arange(records.num_rows, dtype=np.int64))
        others = build(other_parts, None)
        return cls(mine, others, records, resumed)


#: What a retry keeps of its earlier tries' records, to report their outcomes again.
_RECORDS_SCHEMA = pa.schema(
    [LEDGER_SCHEMA.field(name) for name in ("hash", "key_id", "reason", "detail", "request_id", "try_number")]
)


def read_ledger(root: str | os.PathLike[str], *, filesystem: Any | None = None) -> pa.Table:
    """The whole ledger as one table (for tests and small ledgers; query big ones with a dataset)."""
    storage = _Storage(root, filesystem, create=False)
    return storage.dataset().to_table() if storage.exists() else LEDGER_SCHEMA.empty_table()
