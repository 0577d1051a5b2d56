"""Arrow's memory during a migration: an allocator that gives back what the task frees.

Nothing here imports Airflow. pyarrow's Linux wheels allocate through mimalloc by default. A
migration allocates Arrow buffers on many threads (the dataset scanner's, the engine's workers when
they write outcomes, the ledger's writer) and frees them on others; mimalloc keeps the pages of such
frees for reuse, and the resident set of the task grew with the rows it read: 723 MiB at 1M keys,
1,053 MiB at 10M, while Arrow itself held about 40 MiB at any time (``docs/benchmarks.md``, "The whole
task's memory"). jemalloc, which the same wheels carry, returns freed pages to the system (at once,
with its decay set to 0), and the task's peak stays flat past the first few hundred thousand keys.

:func:`returning_arrow_memory` makes jemalloc Arrow's default pool for the duration of a run and puts
the previous pool back afterwards. It does nothing when the user chose a pool
(``ARROW_DEFAULT_MEMORY_POOL``) or when pyarrow was built without jemalloc (then the default stays).
Buffers allocated before keep their own pool, so the switch is safe at any time; it is made once, by
the outermost of nested runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

__all__ = ["returning_arrow_memory"]


class _Switch:
    """Who switched the pool, so that nested runs switch it once and the outermost puts it back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.previous: pa.MemoryPool | None = None


_switch = _Switch()


def _jemalloc() -> pa.MemoryPool | None:
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a build without jemalloc (Windows wheels)
        return None


@contextmanager
def returning_arrow_memory() -> Iterator[str]:
    """Within the block, Arrow allocates from jemalloc (when it can and the user chose no pool).

    Usable as a decorator too.

    :return: the backend Arrow allocates from within the block (``jemalloc``, ``mimalloc``, ``system``).
    """
    with _switch.lock:
        if _switch.depth == 0 and not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
            pool = _jemalloc()
            if pool is not None:
                _switch.previous = pa.default_memory_pool()
                # Freed pages go back at once rather than within a second: the engine's threads
                # each touch their own arenas, and a second of each one's frees is what the task
                # would otherwise hold at its peak.
                pa.jemalloc_set_decay_ms(0)
                pa.set_memory_pool(pool)
        _switch.depth += 1
        backend = pa.default_memory_pool().backend_name
    try:
        yield backend
    finally:
        with _switch.lock:
            _switch.depth -= 1
            if _switch.depth == 0 and _switch.previous is not None:
                pa.set_memory_pool(_switch.previous)
                _switch.previous = None
