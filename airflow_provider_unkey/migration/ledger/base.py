"""The ledger's schema, who records (:class:`LedgerScope`), and the storage its files go to.

Nothing here imports Airflow. See :mod:`airflow_provider_unkey.migration.ledger`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from airflow_provider_unkey.migration.record import Reason

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


def read_ledger(root: str | os.PathLike[str], *, filesystem: Any | None = None) -> pa.Table:
    """The whole ledger as one table (for tests and small ledgers; query big ones with a dataset)."""
    storage = _Storage(root, filesystem, create=False)
    return storage.dataset().to_table() if storage.exists() else LEDGER_SCHEMA.empty_table()
