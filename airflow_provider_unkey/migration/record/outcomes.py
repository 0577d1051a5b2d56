"""Outcomes as data: every input row becomes exactly one row of ``migrated`` or ``failed``.

:class:`OutcomeWriter` streams both to Parquet files as they arrive (a bounded buffer, then a row
group), so memory does not grow with the input, and keeps the counts that the summary reconciles.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_unkey.migration.record.reasons import Reason, Stage

__all__ = [
    "FAILED_SCHEMA",
    "MIGRATED_SCHEMA",
    "SKIPPED_SCHEMA",
    "OutcomeRecorder",
    "OutcomeWriter",
    "Reason",
    "Stage",
]


MIGRATED_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string(), nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("request_id", pa.string()),
    ]
)
FAILED_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("request_id", pa.string()),
    ]
)
#: Rows not sent because the ledger shows a key with their hash exists in Unkey (an earlier run).
SKIPPED_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


class _ParquetStream:
    """Rows appended in small lists, written to one Parquet file in row groups."""

    def __init__(self, path: Path, schema: pa.Schema, flush_rows: int) -> None:
        self.path = path
        self.schema = schema
        self.flush_rows = flush_rows
        self._columns: dict[str, list[object]] = {name: [] for name in schema.names}
        self._pending = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def append(self, **columns: Sequence[object]) -> None:
        n = len(next(iter(columns.values())))
        for name in self.schema.names:
            values = columns.get(name)
            self._columns[name].extend(values if values is not None else [None] * n)
        self._pending += n
        if self._pending >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_pydict(self._columns, schema=self.schema)
        self._writer.write_table(table)
        self._columns = {name: [] for name in self.schema.names}
        self._pending = 0

    def close(self) -> None:
        self.flush()
        self._writer.close()


class OutcomeRecorder(Protocol):
    """Somewhere new outcomes are also recorded, such as the ledger's
    :class:`~airflow_provider_unkey.migration.ledger.LedgerWriter`.

    The outcome writer only calls these methods, so it does not depend on the ledger.
    """

    def record_migrated(
        self, hashes: Sequence[str], key_ids: Sequence[str], rows: Sequence[int], request_id: str | None
    ) -> None:
        """Record keys Unkey created."""

    def record_failed(
        self,
        hashes: Sequence[str | None],
        rows: Sequence[int],
        reason: Reason,
        stage: Stage,
        details: Sequence[str | None],
        request_id: str | None,
    ) -> None:
        """Record rows that were not migrated, with why."""

    def close(self) -> None:
        """Flush what is buffered and release the files."""


class OutcomeWriter:
    """Records outcomes to ``migrated.parquet`` and ``failed.parquet`` in ``directory``.

    Thread-safe: the engine's workers may record concurrently. With a ``ledger``, every new outcome
    is also recorded there, durably (outcomes resumed from an earlier try are already in it).

    :param directory: a local directory (created if missing).
    :param flush_rows: rows buffered before a row group is written.
    :param ledger: where outcomes are also recorded.
    :param list_skipped: also write the rows skipped as known to the ledger to ``skipped.parquet``;
        otherwise they are only counted.
    """

    def __init__(
        self,
        directory: str | Path,
        flush_rows: int = 50_000,
        *,
        ledger: OutcomeRecorder | None = None,
        list_skipped: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._migrated = _ParquetStream(self.directory / "migrated.parquet", MIGRATED_SCHEMA, flush_rows)
        self._failed = _ParquetStream(self.directory / "failed.parquet", FAILED_SCHEMA, flush_rows)
        self._skipped = (
            _ParquetStream(self.directory / "skipped.parquet", SKIPPED_SCHEMA, flush_rows)
            if list_skipped
            else None
        )
        self.ledger = ledger
        self.migrated_count = 0
        self.skipped_count = 0
        #: Rows whose outcome was taken from an earlier try's ledger records (counted in migrated/failed).
        self.resumed_count = 0
        self.failed_by_reason: Counter[str] = Counter()
        self._closed = False

    @property
    def migrated_path(self) -> Path:
        return self._migrated.path

    @property
    def failed_path(self) -> Path:
        return self._failed.path

    @property
    def skipped_path(self) -> Path | None:
        return self._skipped.path if self._skipped is not None else None

    @property
    def failed_count(self) -> int:
        return sum(self.failed_by_reason.values())

    @property
    def total(self) -> int:
        """Rows with an outcome so far."""
        return self.migrated_count + self.failed_count + self.skipped_count

    def migrated(
        self,
        hashes: Sequence[str],
        key_ids: Sequence[str],
        rows: Sequence[int],
        request_id: str | Sequence[str | None] | None,
        *,
        resumed: bool = False,
    ) -> None:
        """Record keys Unkey created (``resumed``: recorded by an earlier try, already in the ledger)."""
        if not hashes:
            return
        n = len(hashes)
        request_ids = [request_id] * n if request_id is None or isinstance(request_id, str) else request_id
        with self._lock:
            self._migrated.append(hash=hashes, key_id=key_ids, source_row=rows, request_id=request_ids)
            self.migrated_count += n
            if resumed:
                self.resumed_count += n
        if self.ledger is not None and not resumed:
            assert isinstance(request_id, str | None)
            self.ledger.record_migrated(hashes, key_ids, rows, request_id)

    def skipped(self, hashes: Sequence[str], rows: Sequence[int], detail: str) -> None:
        """Count rows not sent because the ledger knows their hash exists in Unkey (and list them)."""
        if not rows:
            return
        with self._lock:
            if self._skipped is not None:
                self._skipped.append(hash=hashes, source_row=rows, detail=[detail] * len(rows))
            self.skipped_count += len(rows)

    def failed(
        self,
        hashes: Sequence[str | None],
        rows: Sequence[int],
        reason: Reason,
        stage: Stage,
        details: Sequence[str | None] | str | None,
        request_id: str | Sequence[str | None] | None = None,
        *,
        resumed: bool = False,
    ) -> None:
        """Record rows that were not migrated, with one reason and a detail each (or one for all).

        ``resumed``: the outcomes were recorded by an earlier try and are already in the ledger.
        """
        n = len(rows)
        if not n:
            return
        detail_list = [details] * n if details is None or isinstance(details, str) else list(details)
        request_ids = [request_id] * n if request_id is None or isinstance(request_id, str) else request_id
        with self._lock:
            self._failed.append(
                hash=hashes,
                reason=[reason.value] * n,
                stage=[stage.value] * n,
                detail=detail_list,
                source_row=rows,
                request_id=request_ids,
            )
            self.failed_by_reason[reason.value] += n
            if resumed:
                self.resumed_count += n
        if self.ledger is not None and not resumed:
            assert isinstance(request_id, str | None)
            self.ledger.record_failed(hashes, rows, reason, stage, detail_list, request_id)

    def close(self) -> None:
        """Write what is buffered and close the files; then flush and close the ledger.

        :raises LedgerError: when the ledger's last records cannot be written (the files are closed).
        """
        with self._lock:
            if self._closed:
                return
            self._migrated.close()
            self._failed.close()
            if self._skipped is not None:
                self._skipped.close()
            self._closed = True
        if self.ledger is not None:
            self.ledger.close()
