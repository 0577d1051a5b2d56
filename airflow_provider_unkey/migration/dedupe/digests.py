"""Deduplicate hashes across a whole source in bounded memory.

A Python ``set`` of 100 million hash strings would take about 10 GB; here each seen hash costs 40
bytes: its digest, split into an 8-byte prefix (a uint64, which sorts and searches fast) and the
24-byte rest, and an 8-byte source row number. They are kept in runs sorted by prefix, in a small
log-structured merge (:class:`~airflow_provider_unkey.migration.dedupe.spill.SortedRuns`): new digests
gather in small runs, which merge into runs of growing size, so there are about log2(n) runs and a
lookup is one binary search per run. A merge places two sorted runs into one without sorting again,
so its peak is the two runs and their merge, not a sort's copies.

Past a memory budget (32 MiB by default) the runs go to disk, as sorted files read back a few
blocks at a time, behind a fixed-size Bloom filter: memory stays about the same at any input size
(see :mod:`airflow_provider_unkey.migration.dedupe.spill`).
"""

from __future__ import annotations

import os

import numpy as np

from airflow_provider_unkey.migration.dedupe.spill import DEFAULT_MEMORY_BUDGET, SortedRuns

__all__ = ["DEFAULT_MEMORY_BUDGET", "DigestSet", "digest_prefix"]

_VOID = np.dtype("V32")
_TAIL = np.dtype("V24")


def _as_void(digest_rows: np.ndarray) -> np.ndarray:
    """View ``(n, 32)`` uint8 digests as ``n`` 32-byte scalars that compare bytewise."""
    return np.ascontiguousarray(digest_rows, dtype=np.uint8).view(_VOID).reshape(len(digest_rows))


def digest_prefix(digest_rows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as a uint64: sorts and searches far faster than 32 bytes."""
    head = np.ascontiguousarray(digest_rows[:, :8], dtype=np.uint8)
    return head.view(">u8").reshape(len(digest_rows)).astype(np.uint64)


def _tail(digest_rows: np.ndarray) -> np.ndarray:
    """The last 24 bytes of each digest as one scalar."""
    return np.ascontiguousarray(digest_rows[:, 8:], dtype=np.uint8).view(_TAIL).reshape(len(digest_rows))


class DigestSet:
    """The digests seen so far, with the source row of each one's first occurrence.

    :param buffer_size: digests gathered in small runs before they are merged into a larger one.
    :param memory_budget: bytes the set may hold in memory (default 32 MiB, about 260,000 digests
        before it first spills); past it, digests go to sorted files on disk and memory stays about
        the same however many digests follow. ``None``: no limit (everything in memory, 40 bytes a
        digest, about twice that while two runs merge). Zero or negative: ``ValueError``.
    :param spill_dir: where the spill files go, in a directory of their own made at the first spill
        and removed by :meth:`close` or when the set is garbage-collected (``None``:
        :func:`tempfile.gettempdir`). A spilled digest takes 40 bytes of disk.
    """

    def __init__(
        self,
        buffer_size: int = 65_536,
        *,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._index = SortedRuns(
            _TAIL,
            np.int64,
            buffer_size=buffer_size,
            memory_budget=memory_budget,
            spill_dir=spill_dir,
            name="unkey-dedupe-",
        )

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Memory held by the digests and row numbers (once spilled, also the filter and sparse indexes)."""
        return self._index.nbytes

    @property
    def disk_bytes(self) -> int:
        """Bytes of the spill files."""
        return self._index.disk_bytes

    @property
    def spills(self) -> int:
        """How many times digests went to disk."""
        return self._index.spills

    def close(self) -> None:
        """Remove the spill files; the set must not be used afterwards."""
        self._index.close()

    def __enter__(self) -> DigestSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, digest_rows: np.ndarray, source_rows: np.ndarray) -> np.ndarray:
        """Add digests; say which were seen before, in this call or an earlier one.

        :param digest_rows: ``(n, 32)`` uint8 digests.
        :param source_rows: ``n`` source row numbers, in reading order.
        :return: ``n`` int64: -1 for a first occurrence (now added), else the source row of the first
            occurrence.
        """
        n = len(digest_rows)
        contiguous = np.ascontiguousarray(digest_rows, dtype=np.uint8)
        keys = _as_void(contiguous)
        prefixes, tails = digest_prefix(contiguous), _tail(contiguous)
        rows = np.asarray(source_rows, dtype=np.int64)
        # Sort the call by digest (four uint64 words, faster than 32-byte scalars), stable so the
        # earliest row of a group of equal digests comes first. Sorted queries also make the binary
        # searches below cache-friendly, and the reads of spilled runs contiguous.
        words = contiguous.view(">u8").reshape(n, 4)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
        sorted_keys, sorted_prefixes, sorted_tails = keys[order], prefixes[order], tails[order]
        found_sorted = np.full(n, -1, dtype=np.int64)
        self._index.lookup(sorted_prefixes, sorted_tails, found_sorted)
        found = np.empty(n, dtype=np.int64)
        found[order] = found_sorted
        same_as_previous = np.zeros(n, dtype=bool)
        if n > 1:
            same_as_previous[1:] = sorted_keys[1:] == sorted_keys[:-1]
        group_start = np.maximum.accumulate(np.where(same_as_previous, 0, np.arange(n)))
        first_in_call = np.empty(n, dtype=np.int64)
        first_in_call[order] = rows[order[group_start]]
        inner_duplicate = np.zeros(n, dtype=bool)
        inner_duplicate[order] = same_as_previous
        result = np.where(found >= 0, found, np.where(inner_duplicate, first_in_call, -1))
        new = result < 0
        if new.any():
            self._index.add(prefixes[new], tails[new], rows[new])
        return result
