"""Deduplicate hashes across a whole source in compact memory.

A Python ``set`` of 100 million hash strings would take about 10 GB; here each seen hash costs 40
bytes: its digest, split into an 8-byte prefix (a uint64, which sorts and searches fast) and the
24-byte rest, and an 8-byte source row number. They are kept in runs sorted by prefix, in a small
log-structured merge: new digests gather in small runs, which merge into runs of growing size, so
there are about log2(n) runs and a lookup is one binary search per run. A merge places two sorted runs
into one without sorting again, so its peak is the two runs and their merge, not a sort's copies.
"""

from __future__ import annotations

import numpy as np

_VOID = np.dtype("V32")
_TAIL = np.dtype("V24")


def _as_void(digest_rows: np.ndarray) -> np.ndarray:
    """View ``(n, 32)`` uint8 digests as ``n`` 32-byte scalars that compare bytewise."""
    return np.ascontiguousarray(digest_rows, dtype=np.uint8).view(_VOID).reshape(len(digest_rows))


def _prefix(digest_rows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as a uint64: sorts and searches far faster than 32 bytes."""
    head = np.ascontiguousarray(digest_rows[:, :8], dtype=np.uint8)
    return head.view(">u8").reshape(len(digest_rows)).astype(np.uint64)


def _tail(digest_rows: np.ndarray) -> np.ndarray:
    """The last 24 bytes of each digest as one scalar."""
    return np.ascontiguousarray(digest_rows[:, 8:], dtype=np.uint8).view(_TAIL).reshape(len(digest_rows))


class _Run:
    """Digests sorted by prefix (as prefix and tail), with their source rows."""

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

    def lookup(self, prefixes: np.ndarray, tails: np.ndarray, found: np.ndarray) -> None:
        """Fill ``found`` (where still -1) with the row of each digest present in this run."""
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


class DigestSet:
    """The digests seen so far, with the source row of each one's first occurrence.

    :param buffer_size: digests gathered in small runs before they are merged into a larger one.
    """

    def __init__(self, buffer_size: int = 65_536) -> None:
        self._buffer_size = buffer_size
        self._runs: list[_Run] = []  # merged runs, largest first
        self._chunks: list[_Run] = []  # small runs not merged yet
        self._chunked = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory held by the digests and row numbers."""
        return sum(r.nbytes for r in self._runs + self._chunks)

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
        prefixes, tails = _prefix(contiguous), _tail(contiguous)
        rows = np.asarray(source_rows, dtype=np.int64)
        # Sort the call by digest (four uint64 words, faster than 32-byte scalars), stable so the
        # earliest row of a group of equal digests comes first. Sorted queries also make the binary
        # searches below cache-friendly.
        words = contiguous.view(">u8").reshape(n, 4)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
        sorted_keys, sorted_prefixes, sorted_tails = keys[order], prefixes[order], tails[order]
        found_sorted = np.full(n, -1, dtype=np.int64)
        for run in self._runs + self._chunks:
            run.lookup(sorted_prefixes, sorted_tails, found_sorted)
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
            self._chunks.append(_Run(prefixes[new], tails[new], rows[new]))
            self._chunked += int(new.sum())
            self._size += int(new.sum())
            if self._chunked >= self._buffer_size:
                self._compact()
        return result

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
