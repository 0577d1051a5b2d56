"""The disk side of :mod:`airflow_provider_unkey.migration.dedupe.spill`: spill files, disk runs read a few
blocks at a time, and the streaming merge that writes them.

A disk run is a file of fixed-size records ``(prefix, tail, value)`` sorted by prefix, in blocks of
``block`` records; memory keeps the first prefix of each block and the last prefix of the run. Files
are read with ``preadv`` into buffers allocated here, never memory-mapped (a mapped file's touched
pages count in RSS, in folios of up to 2 MiB).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class _Source(Protocol):
    def __len__(self) -> int: ...

    def records(self, start: int, stop: int, record: np.dtype) -> np.ndarray: ...


def _read_into(fd: int, out: np.ndarray, offset: int) -> None:
    """Fill the contiguous array ``out`` with the file's bytes at ``offset``."""
    view = out.view(np.uint8).reshape(-1).data
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            data = os.pread(fd, len(view) - done, offset + done)
            view[done : done + len(data)] = data
            got = len(data)
        if got <= 0:
            raise OSError(f"a spill file ended early ({offset + done} bytes)")
        done += got


def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = np.ascontiguousarray(data).view(np.uint8).reshape(-1).data
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class _SpillFiles:
    """The spill directory and its open files; :meth:`cleanup` removes them (also run by a finalizer)."""

    def __init__(self, parent: str | os.PathLike[str] | None, prefix: str) -> None:
        self.parent = os.fspath(parent) if parent is not None else None
        self.prefix = prefix
        self.directory: str | None = None
        self.open: dict[int, str] = {}

    def new(self) -> tuple[int, str]:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix=self.prefix, dir=self.parent)
        fd, path = tempfile.mkstemp(suffix=".run", dir=self.directory)
        self.open[fd] = path
        return fd, path

    def drop(self, fd: int) -> None:
        path = self.open.pop(fd, None)
        if path is None:
            return
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def cleanup(self) -> None:
        for fd in list(self.open):
            self.drop(fd)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


class _DiskRun:
    """Records sorted by prefix in a file, in blocks of ``block`` records; the first prefix of each
    block (``fence``) and the last of the run stay in memory."""

    __slots__ = ("block", "fd", "fence", "files", "last", "n", "record")

    def __init__(
        self, files: _SpillFiles, fd: int, n: int, record: np.dtype, block: int, fence: np.ndarray, last: int
    ) -> None:
        self.files, self.fd, self.n, self.record, self.block = files, fd, n, record, block
        self.fence, self.last = fence, np.uint64(last)

    def __len__(self) -> int:
        return self.n

    def records(self, start: int, stop: int, record: np.dtype | None = None) -> np.ndarray:
        out = np.empty(stop - start, dtype=self.record)
        if stop > start:
            _read_into(self.fd, out, start * self.record.itemsize)
        return out

    def close(self) -> None:
        self.files.drop(self.fd)

    def lookup(
        self, prefixes: np.ndarray, tails: np.ndarray, found: np.ndarray, sel: np.ndarray, io_bytes: int
    ) -> None:
        """Fill ``found[sel]`` with the value of each of those queries present in this run.

        Reads, a window at a time, at most about ``io_bytes`` of blocks (and at least two blocks).
        """
        q = prefixes[sel]
        if len(q) > 1 and not bool((q[1:] >= q[:-1]).all()):
            order = np.argsort(q, kind="stable")
            sel, q = sel[order], q[order]
        live = (q >= self.fence[0]) & (q <= self.last)
        sel, q = sel[live], q[live]
        if not len(q):
            return
        fence, nf = self.fence, len(self.fence)
        after = np.searchsorted(fence, q, side="left")  # the first block starting at or after q
        blk = np.maximum(after - 1, 0)  # every record before this block is below q
        # When the next block starts with q itself, the first record equal to q may be there.
        two = (after >= 1) & (after < nf) & (fence[np.minimum(after, nf - 1)] == q)
        first_of_block = np.ones(len(q), dtype=bool)
        first_of_block[1:] = blk[1:] != blk[:-1]
        cost = np.cumsum(first_of_block.astype(np.int64) + two)  # blocks read, counted generously
        per_window = max(2, io_bytes // (self.block * self.record.itemsize))
        window = (cost - 1) // per_window
        cuts = [0, *(np.flatnonzero(window[1:] != window[:-1]) + 1).tolist(), len(q)]
        for a, b in itertools.pairwise(cuts):
            self._lookup_window(q[a:b], tails[sel[a:b]], sel[a:b], blk[a:b], two[a:b], found)

    def _lookup_window(
        self,
        q: np.ndarray,
        t: np.ndarray,
        sel: np.ndarray,
        blk: np.ndarray,
        two: np.ndarray,
        found: np.ndarray,
    ) -> None:
        block, n = self.block, self.n
        needed = np.unique(np.concatenate([blk, blk[two] + 1]))
        buf = np.empty(len(needed) * block, dtype=self.record)
        breaks = (np.flatnonzero(np.diff(needed) != 1) + 1).tolist()
        for s, e in zip([0, *breaks], [*breaks, len(needed)], strict=True):
            first, stop = int(needed[s]) * block, min(int(needed[e - 1]) * block + block, n)
            _read_into(self.fd, buf[s * block : s * block + stop - first], first * self.record.itemsize)
        slot = np.searchsorted(needed, blk)
        start = slot * block
        length = np.minimum(block, n - blk * block)
        length = length + np.where(two, np.minimum(block, n - (blk + 1) * block), 0)
        end = start + length
        # Binary search of each query's range of the buffer: the first record whose prefix >= q.
        bp = buf["p"]
        top = len(buf) - 1
        lo, hi = start.copy(), end.copy()
        active = lo < hi
        while active.any():
            mid = (lo + hi) >> 1
            less = bp[np.minimum(mid, top)] < q
            lo = np.where(active & less, mid + 1, lo)
            hi = np.where(active & ~less, mid, hi)
            active = lo < hi
        pos = np.minimum(lo, top)
        prefix_hit = (lo < end) & (bp[pos] == q)
        exact = prefix_hit & (buf["t"][pos] == t)
        found[sel[exact]] = buf["v"][pos[exact]]
        for i in np.flatnonzero(prefix_hit & ~exact).tolist():
            at = int(needed[slot[i]]) * block + int(lo[i] - start[i])
            value = self._scan(at, q[i], t[i])
            if value is not None:
                found[sel[i]] = value

    def _scan(self, at: int, prefix: np.uint64, tail: object) -> int | None:
        """The value of the first record from ``at`` on matching ``tail``, within the equal-prefix range."""
        while at < self.n:
            chunk = self.records(at, min(at + self.block, self.n))
            same = chunk["p"] == prefix
            m = len(chunk) if bool(same.all()) else int(np.argmin(same))
            hits = np.flatnonzero(chunk["t"][:m] == tail)
            if len(hits):
                return int(chunk["v"][hits[0]])
            if m < len(chunk):
                return None
            at += len(chunk)
        return None


def _count_equal(source: _Source, start: int, prefix: np.uint64, record: np.dtype, chunk: int) -> int:
    """How many records of ``source`` from ``start`` on have ``prefix`` (they all have it or more)."""
    count = 0
    while start + count < len(source):
        stop = min(start + count + chunk, len(source))
        got = source.records(start + count, stop, record)
        k = int(np.searchsorted(got["p"], prefix, side="right"))
        count += k
        if k < len(got):
            break
    return count


def _write_run(
    sources: Sequence[_Source], files: _SpillFiles, record: np.dtype, io_bytes: int, block: int
) -> _DiskRun:
    """One disk run of the sorted ``sources`` (oldest first), merged a chunk of each at a time.

    Each round reads up to ``chunk`` records of each source, and writes every record below the
    smallest last prefix read (of a source not read to its end): all of them are in hand, and the
    next round's are at least that. Ties go to the older source, so the merge is stable.
    """
    n = sum(len(s) for s in sources)
    fd, _ = files.new()
    rec = record.itemsize
    chunk = max(block, io_bytes // (3 * len(sources) * rec))
    pos = [0] * len(sources)
    out, fences, last = 0, [], np.uint64(0)
    while out < n:
        chunks: list[np.ndarray | None] = []
        bound: np.uint64 | None = None
        for i, source in enumerate(sources):
            if pos[i] >= len(source):
                chunks.append(None)
                continue
            stop = min(pos[i] + chunk, len(source))
            got = source.records(pos[i], stop, record)
            chunks.append(got)
            if stop < len(source) and (bound is None or got["p"][-1] < bound):
                bound = got["p"][-1]
        takes = [
            0
            if got is None
            else len(got)
            if bound is None
            else int(np.searchsorted(got["p"], bound, side="left"))
            for got in chunks
        ]
        if bound is not None and not any(takes):
            # Every chunk starts at ``bound``: take all of each source's records equal to it.
            takes = [
                0 if got is None else _count_equal(sources[i], pos[i], bound, record, chunk)
                for i, got in enumerate(chunks)
            ]
            parts = [sources[i].records(pos[i], pos[i] + k, record) for i, k in enumerate(takes) if k]
        else:
            parts = [got[:k] for got, k in zip(chunks, takes, strict=True) if got is not None and k]
        merged = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            merged = merged[np.argsort(merged["p"], kind="stable")]
        _write_all(fd, merged, out * rec)
        fences.append(merged["p"][(-out) % block :: block].copy())
        last = merged["p"][-1]
        pos = [p + k for p, k in zip(pos, takes, strict=True)]
        out += len(merged)
    return _DiskRun(files, fd, n, record, block, np.concatenate(fences), int(last))
