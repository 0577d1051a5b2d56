"""Sorted runs of digest records that stay within a memory budget, spilling to disk past it.

:class:`SortedRuns` holds records ``(prefix, tail, value)``: the first 8 bytes of a digest as a
uint64 (which sorts and searches fast), the rest of what is matched (``tail``: the other 24 bytes of a
digest for deduplication, 8 more bytes for the ledger's 128-bit match) and what a lookup returns
(``value``: a source row, a record index, or one byte where only presence matters). It is a small
log-structured merge tree, used by :class:`~airflow_provider_unkey.migration.dedupe.digests.DigestSet` and
:class:`~airflow_provider_unkey.migration.ledger.index.KnownHashes`.

In memory, new records gather in small sorted runs that merge into runs of growing size (about
log2(n) runs; a lookup is one binary search per run). With a ``memory_budget``, once the records in
memory pass their share of it they are written to disk as one sorted run, merged on the way with the
newest disk runs whose size is at most twice what is written (size-tiered: sizes about double from
one disk run to the next, so there are about log2(n / records spilled at once) disk runs, and each
record is rewritten about as many times). The memory then starts empty again.

Why this design (and not another):

- **Explicit block reads, not memory maps.** A touched page of a mapped file counts in the process's
  RSS, and Linux maps file pages in large folios (up to 2 MiB) at a time: measured here, touching
  1,000 random pages of a mapped 381 MiB file made all 381 MiB resident. So disk runs are read with
  ``preadv`` into buffers allocated for it, a bounded window of blocks at a time (the disk side is
  in :mod:`airflow_provider_unkey.migration.dedupe.spill_files`).
- **A sparse index a run.** A disk run is a file of fixed-size records sorted by prefix, in blocks
  of ``_BLOCK_RECORDS`` (256) records. Memory keeps the first prefix of every block (8 bytes per 256
  records: 32 MiB per billion records) and the last prefix of the run. A lookup finds each query's
  block in that index, reads each needed block once (contiguous blocks in one read), and finishes
  with a vectorised binary search inside the blocks read.
- **A fixed-size Bloom filter in front of the disk runs.** Most lookups of a deduplication are of
  digests never seen: the filter (a quarter of the budget, allocated at the first spill) answers
  "not on disk" for most of them without reading anything. It is blocked (all of a key's 4 bits in
  one 64-bit word, so one memory access a key) and keyed on the prefix. Its size is fixed, so past
  about 10 bits a key its false-positive rate rises and more lookups read blocks; answers stay exact.
- **Budget shares.** A quarter for the filter, an eighth for reading (the blocks a lookup window
  reads, the chunks a merge reads and writes), the sparse indexes, and the rest halved for the
  records in memory, since merging two in-memory runs holds them and their merge at once.

Answers are exactly those of one sorted array of every record: records with equal prefixes keep
the order they were added in (every sort and merge is stable, older runs first), and a lookup
returns the value of the first record matching both prefix and tail. Digests sharing the 8-byte
prefix but not the tail (about 1 in 2**64 a pair) fall back to a scan of the equal-prefix range.

Spill files live in a directory made with :func:`tempfile.mkdtemp` under ``spill_dir`` (default
:func:`tempfile.gettempdir`), created at the first spill, and are removed when runs merge, on
:meth:`SortedRuns.close`, when the object is garbage-collected, or at interpreter exit. A process
killed outright (``SIGKILL``) leaves them behind, in a directory named ``unkey-*``.
"""

from __future__ import annotations

import os
import weakref

import numpy as np

from airflow_provider_unkey.migration.dedupe.spill_files import _DiskRun, _Source, _SpillFiles, _write_run

#: The default ``memory_budget`` of :class:`SortedRuns`, :class:`DigestSet` and :class:`KnownHashes`:
#: 32 MiB. Spilling starts at 10 MiB of records (about 260,000 deduplicated digests, 600,000 ledger
#: hashes). Chosen so that a run of 10 million keys peaks within 1.25x the RSS of a run of 1 million
#: (measured: 1.11x), at no loss of throughput (see docs/benchmarks.md, "Bounded memory").
DEFAULT_MEMORY_BUDGET = 32 * 2**20

_BLOCK_RECORDS = 256  # records a block of a disk run (a read's unit); tests lower it
_FILTER_BITS = 4  # bits set a key in the Bloom filter, all in one 64-bit word


def check_budget(memory_budget: int | None) -> int | None:
    """A budget in bytes (``None``: no limit, never spill); zero, negative or non-integer: ``ValueError``."""
    if memory_budget is None:
        return None
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | np.integer):
        raise ValueError(f"memory_budget must be a number of bytes or None, not {memory_budget!r}")
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be positive (None: no limit), not {memory_budget}")
    return int(memory_budget)


class _Run:
    """Records sorted by prefix (as prefix, tail and value columns), in memory."""

    __slots__ = ("prefixes", "rows", "tails")

    def __init__(
        self, prefixes: np.ndarray, tails: np.ndarray, rows: np.ndarray, *, is_sorted: bool = False
    ) -> None:
        if not is_sorted:
            order = np.argsort(prefixes, kind="stable")
            prefixes, tails, rows = prefixes[order], tails[order], rows[order]
        self.prefixes = prefixes
        self.tails = tails
        self.rows = rows

    def __len__(self) -> int:
        return len(self.prefixes)

    @property
    def nbytes(self) -> int:
        return int(self.prefixes.nbytes + self.tails.nbytes + self.rows.nbytes)

    def records(self, start: int, stop: int, record: np.dtype) -> np.ndarray:
        out = np.empty(stop - start, dtype=record)
        out["p"], out["t"], out["v"] = (
            self.prefixes[start:stop],
            self.tails[start:stop],
            self.rows[start:stop],
        )
        return out

    def lookup(self, prefixes: np.ndarray, tails: np.ndarray, found: np.ndarray) -> None:
        """Fill ``found`` (where still -1) with the value of each query present in this run."""
        left = np.searchsorted(self.prefixes, prefixes, side="left")
        inside = left < len(self.prefixes)
        candidate = np.where(inside, left, 0)
        prefix_hit = inside & (self.prefixes[candidate] == prefixes) & (found < 0)
        exact = prefix_hit & (self.tails[candidate] == tails)
        found[exact] = self.rows[candidate[exact]]
        # Distinct digests sharing 8 leading bytes: rare (about 1 in 2**64 per pair); scan that range.
        for i in np.flatnonzero(prefix_hit & ~exact):
            j = int(left[i])
            while j < len(self.prefixes) and self.prefixes[j] == prefixes[i]:
                if self.tails[j] == tails[i]:
                    found[i] = self.rows[j]
                    break
                j += 1

    @staticmethod
    def merge(older: _Run, newer: _Run) -> _Run:
        """One run of both, sorted, without a sort: each element's place is computed directly."""
        n = len(older) + len(newer)
        # After the older elements of equal prefix, so the merge is stable.
        place_newer = np.searchsorted(older.prefixes, newer.prefixes, side="right") + np.arange(len(newer))
        is_newer = np.zeros(n, dtype=bool)
        is_newer[place_newer] = True
        merged = []
        for a, b in ((older.prefixes, newer.prefixes), (older.tails, newer.tails), (older.rows, newer.rows)):
            out = np.empty(n, dtype=a.dtype)
            out[place_newer] = b
            out[~is_newer] = a
            merged.append(out)
        return _Run(*merged, is_sorted=True)


# --- the Bloom filter ------------------------------------------------------------------------------


def _filter_slots(words: np.ndarray, prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each prefix's word (its top bits) and mask (4 bits chosen by its lowest 24 bits)."""
    shift = 64 - (len(words).bit_length() - 1)
    word = (prefixes >> np.uint64(shift)) if shift < 64 else np.zeros(len(prefixes), dtype=np.uint64)
    mask = np.zeros(len(prefixes), dtype=np.uint64)
    for j in range(_FILTER_BITS):
        mask |= np.uint64(1) << ((prefixes >> np.uint64(6 * j)) & np.uint64(63))
    return word.astype(np.intp), mask


# --- the tree --------------------------------------------------------------------------------------


class SortedRuns:
    """Records ``(prefix, tail, value)`` in sorted runs, in memory up to a budget and on disk past it.

    :param tail_dtype: the dtype of the rest of a key (compared with ``==``).
    :param value_dtype: the dtype of what a lookup returns (an integer).
    :param buffer_size: records gathered in small in-memory runs before they merge into a larger one.
    :param memory_budget: bytes this object may hold (records, filter, sparse indexes, read and merge
        buffers, and in-memory merges at their peak); past it, records go to disk. ``None``: no limit,
        never spill. Zero or negative: ``ValueError``. Budgets of less than a few hundred KiB are held
        only roughly (a read takes at least two blocks; a merge at least a block of each run).
    :param spill_dir: where the spill directory is made (``None``: :func:`tempfile.gettempdir`).
    :param name: the spill directory's name prefix.
    """

    def __init__(
        self,
        tail_dtype: np.dtype | type,
        value_dtype: np.dtype | type,
        *,
        buffer_size: int = 65_536,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        spill_dir: str | os.PathLike[str] | None = None,
        name: str = "unkey-spill-",
    ) -> None:
        self._budget = check_budget(memory_budget)
        self._record = np.dtype([("p", np.uint64), ("t", np.dtype(tail_dtype)), ("v", np.dtype(value_dtype))])
        self._buffer_size = buffer_size
        self._runs: list[_Run] = []  # merged in-memory runs, largest (oldest) first
        self._chunks: list[_Run] = []  # small in-memory runs not merged yet
        self._chunked = 0
        self._disk: list[_DiskRun] = []  # largest (oldest) first
        self._filter: np.ndarray | None = None
        self._size = 0
        self._block = _BLOCK_RECORDS
        budget = self._budget or 0
        self._filter_bytes = max(8, 1 << max(0, (budget // 4).bit_length() - 1))
        self._io_bytes = max(budget // 8, 1)
        #: How many times records went to disk.
        self.spills = 0
        self._files = _SpillFiles(spill_dir, name)
        self._finalizer = weakref.finalize(self, self._files.cleanup)

    def __len__(self) -> int:
        return self._size

    @property
    def memory_runs(self) -> list[_Run]:
        """The merged in-memory runs, largest first (not the small ones not merged yet)."""
        return list(self._runs)

    @property
    def disk_runs(self) -> int:
        return len(self._disk)

    @property
    def records_nbytes(self) -> int:
        """Memory held by the records in memory."""
        return sum(r.nbytes for r in self._runs) + sum(r.nbytes for r in self._chunks)

    @property
    def nbytes(self) -> int:
        """Memory held: the records in memory, the filter and the disk runs' sparse indexes."""
        held = self.records_nbytes + sum(int(r.fence.nbytes) for r in self._disk)
        return held + (int(self._filter.nbytes) if self._filter is not None else 0)

    @property
    def disk_bytes(self) -> int:
        """Bytes of the spill files."""
        return sum(len(r) for r in self._disk) * self._record.itemsize

    @property
    def spill_directory(self) -> str | None:
        """The spill directory, once made (removed again on :meth:`close`)."""
        return self._files.directory

    def _records_cap(self) -> int:
        if self._budget is None:
            return -1
        fences = sum(int(r.fence.nbytes) for r in self._disk)
        return (self._budget - self._filter_bytes - self._io_bytes - fences) // 2

    def add(self, prefixes: np.ndarray, tails: np.ndarray, values: np.ndarray) -> None:
        """Add records (their lookups return the first one added, for keys added more than once)."""
        if not len(prefixes):
            return
        self._chunks.append(_Run(prefixes, tails, values))
        self._chunked += len(prefixes)
        self._size += len(prefixes)
        if self._budget is not None and self.records_nbytes > self._records_cap():
            self._spill()
        elif self._chunked >= self._buffer_size:
            self._compact()

    def lookup(self, prefixes: np.ndarray, tails: np.ndarray, found: np.ndarray) -> None:
        """Fill ``found`` (int64, where still -1) with the value of each key present.

        Sorted ``prefixes`` make the searches faster; any order is answered.
        """
        if self._disk:
            maybe = found < 0
            if self._filter is not None:
                word, mask = _filter_slots(self._filter, prefixes)
                maybe &= (self._filter[word] & mask) == mask
            sel = np.flatnonzero(maybe)
            for run in self._disk:
                if not len(sel):
                    break
                run.lookup(prefixes, tails, found, sel, self._io_bytes)
                sel = sel[found[sel] < 0]
        for memory_run in self._runs + self._chunks:
            memory_run.lookup(prefixes, tails, found)

    def seal(self) -> None:
        """Merge everything into one run (in memory if it never spilled, else on disk): fastest lookups."""
        if self._disk:
            if self._runs or self._chunks:
                self._spill(everything=True)
            elif len(self._disk) > 1:
                run = _write_run(self._disk, self._files, self._record, self._io_bytes, self._block)
                for old in self._disk:
                    old.close()
                self._disk = [run]
        else:
            if self._chunks:
                self._compact()
            while len(self._runs) > 1:
                newer = self._runs.pop()
                self._runs.append(_Run.merge(self._runs.pop(), newer))

    def close(self) -> None:
        """Remove the spill files (the object must not be used afterwards)."""
        self._disk, self._runs, self._chunks, self._filter = [], [], [], None
        self._finalizer()

    def _compact(self) -> None:
        run = _Run(
            np.concatenate([r.prefixes for r in self._chunks]),
            np.concatenate([r.tails for r in self._chunks]),
            np.concatenate([r.rows for r in self._chunks]),
        )
        self._chunks, self._chunked = [], 0
        # Merge while the newest run is at least half the size of the one before it: log(n) runs.
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            run = _Run.merge(self._runs.pop(), run)
        self._runs.append(run)

    def _spill(self, *, everything: bool = False) -> None:
        """Write the in-memory records to disk, merged with the newest disk runs of comparable size."""
        in_memory: list[_Run] = [r for r in self._runs + self._chunks if len(r)]
        if self._filter is None:
            self._filter = np.zeros(self._filter_bytes // 8, dtype=np.uint64)
        for memory_run in in_memory:
            word, mask = _filter_slots(self._filter, memory_run.prefixes)
            np.bitwise_or.at(self._filter, word, mask)
        total = sum(len(r) for r in in_memory)
        group = 0
        while group < len(self._disk) and (everything or len(self._disk[-1 - group]) <= 2 * total):
            group += 1
            total += len(self._disk[-group])
        merged = self._disk[len(self._disk) - group :]
        sources: list[_Source] = [*merged, *in_memory]
        run = _write_run(sources, self._files, self._record, self._io_bytes, self._block)
        for old in merged:
            old.close()
        self._disk = [*self._disk[: len(self._disk) - group], run]
        self._runs, self._chunks, self._chunked = [], [], 0
        self.spills += 1

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
