"""Reading the ledger back: :class:`KnownHashes`, a compact index of the hashes known to exist in Unkey.

Nothing here imports Airflow. See :mod:`airflow_provider_unkey.migration.ledger`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from airflow_provider_unkey.migration.dedupe import (
    DEFAULT_MEMORY_BUDGET,
    SortedRuns,
    check_budget,
    digest_prefix,
)
from airflow_provider_unkey.migration.ledger.base import (
    EXISTS_IN_UNKEY,
    LEDGER_SCHEMA,
    LedgerError,
    LedgerScope,
    _attempt_marker,
    _Storage,
)
from airflow_provider_unkey.migration.prepare import digests, format_mask
from airflow_provider_unkey.rules import HASH_FORMAT_TABLE

# --- reading ---------------------------------------------------------------------------------------


def _words(digest_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 16 bytes of each digest as two uint64: prefix (sorted, searched) and the next word."""
    contiguous = np.ascontiguousarray(digest_rows, dtype=np.uint8)
    second = np.ascontiguousarray(contiguous[:, 8:16]).view(">u8").reshape(len(contiguous))
    return digest_prefix(contiguous), second.astype(np.uint64)


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
        return batch, digests(batch.column("hash"), wire_format)
    except ValueError:
        batch = batch.filter(format_mask(batch.column("hash"), wire_format))
        return batch, digests(batch.column("hash"), wire_format)


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

    The index is two :class:`~airflow_provider_unkey.migration.dedupe.spill.SortedRuns`, each merged into one
    sorted run once loaded: in memory (17 bytes a hash of other runs, 24 of this task instance's
    earlier tries) while it fits the ``memory_budget`` of :meth:`load`, else on disk behind a sparse
    index and a Bloom filter, read a few blocks at a time. :meth:`close` (or garbage collection)
    removes its spill files.

    :param records: the earlier tries' outcomes of this task instance that mean the key exists in
        Unkey (``key_id``, ``reason``, ``detail``, ``request_id``, ``try_number``), in index order.
    """

    def __init__(
        self, mine: SortedRuns | None, others: SortedRuns | None, records: pa.Table, resumed_try: int | None
    ):
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

    @property
    def disk_bytes(self) -> int:
        """Bytes of the index's spill files (0 while it fits its budget)."""
        return sum(int(r.disk_bytes) for r in (self._mine, self._others) if r is not None)

    def close(self) -> None:
        """Remove the index's spill files; lookups must not follow."""
        for index in (self._mine, self._others):
            if index is not None:
                index.close()

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
        """Batches of the rows that pass ``filter_``, with one batch and one file read ahead at most.

        Without ``pre_buffer``, which reads every row group of a file ahead: memory would grow with
        the ledger's largest file (a long run's compacted file holds all its records).
        """
        scanner = dataset.scanner(
            columns=columns,
            filter=filter_,
            batch_size=batch_rows,
            batch_readahead=1,
            fragment_readahead=1,
            use_threads=False,
            fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False),
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
        batch_rows: int = 65_536,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> KnownHashes:
        """Read a ledger directory (missing or empty: nothing known).

        :param root: the ledger directory.
        :param scope: the current task instance: its earlier tries' records are resumed from.
        :param wire_format: ``sha256_base64`` or ``sha256_hex``: hashes of the other format are ignored.
        :param filesystem: an fsspec filesystem (``None``: local).
        :param memory_budget: bytes the index may hold in memory (default 32 MiB, about 600,000
            hashes before it spills; not counting the scan's batches or :attr:`records`); past it, the
            index goes to sorted files on disk (16 bytes a hash and one or eight for the value).
            ``None``: no limit. Zero or negative: ``ValueError``.
        :param spill_dir: where spill files go (``None``: :func:`tempfile.gettempdir`).
        """
        budget = check_budget(memory_budget)
        storage = _Storage(root, filesystem, create=False)
        if not storage.exists():
            return cls.empty()
        marker = storage.read_bytes(_attempt_marker(scope))
        resumed = int(json.loads(marker)["try_number"]) if marker is not None else None
        dataset = storage.dataset()
        exists_filter = pc.field("reason").is_null() | pc.field("reason").isin(list(EXISTS_IN_UNKEY))
        width = HASH_FORMAT_TABLE[wire_format].width

        def runs(values: type[np.generic], memory_budget: int | None) -> SortedRuns:
            return SortedRuns(
                np.uint64,
                values,
                buffer_size=1 << 20,
                memory_budget=memory_budget,
                spill_dir=spill_dir,
                name="unkey-ledger-",
            )

        # ``others``: a single zero byte a hash, only presence matters; ``mine``: the record's index.
        others = runs(np.int8, budget)
        mine: SortedRuns | None = None
        record_parts: list[pa.RecordBatch] = []
        owners = ["dag_id", "run_id", "task_id", "map_index"]
        try:
            has_mine = False
            # Pass 1, over the whole ledger: only what the index needs, one batch ahead at most.
            for scanned in cls._scan(dataset, ["hash", *owners], exists_filter, batch_rows):
                batch, digest_rows = _of_wire_format(scanned, wire_format, width)
                same = _same_task_instance(batch, scope)
                prefixes, seconds = _words(digest_rows)
                other = ~same
                if other.any():
                    others.add(prefixes[other], seconds[other], np.zeros(int(other.sum()), dtype=np.int8))
                has_mine = has_mine or bool(same.any())
            others.seal()
            if has_mine:
                # Pass 2, only when earlier tries of this task instance recorded something: their
                # outcomes, to report again. The filter keeps just their rows. Their index gets what
                # the other runs' index left of the budget.
                left = None if budget is None else max(budget - others.nbytes, budget // 8, 1)
                mine = runs(np.int64, left)
                mine_filter = exists_filter & _task_instance_filter(scope)
                count = 0
                for scanned in cls._scan(dataset, [*_RECORDS_SCHEMA.names], mine_filter, batch_rows):
                    batch, digest_rows = _of_wire_format(scanned, wire_format, width)
                    prefixes, seconds = _words(digest_rows)
                    mine.add(prefixes, seconds, np.arange(count, count + len(prefixes), dtype=np.int64))
                    count += len(prefixes)
                    record_parts.append(
                        pa.RecordBatch.from_arrays(
                            [batch.column(c) for c in _RECORDS_SCHEMA.names], schema=_RECORDS_SCHEMA
                        )
                    )
                mine.seal()
        except (OSError, pa.ArrowInvalid) as exc:
            others.close()
            if mine is not None:
                mine.close()
            raise LedgerError(f"the ledger {storage.root} cannot be read: {exc}") from exc
        finally:
            pa.default_memory_pool().release_unused()  # the scan's buffers, back to the system

        records = pa.Table.from_batches(record_parts, schema=_RECORDS_SCHEMA)
        return cls(
            mine if mine is not None and len(mine) else None,
            others if len(others) else None,
            records,
            resumed,
        )


#: What a retry keeps of its earlier tries' records, to report their outcomes again.
_RECORDS_SCHEMA = pa.schema(
    [LEDGER_SCHEMA.field(name) for name in ("hash", "key_id", "reason", "detail", "request_id", "try_number")]
)
