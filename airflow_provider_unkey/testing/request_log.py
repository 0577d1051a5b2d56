"""The emulator's request log: :class:`RequestRecord`, one request answered, and :class:`RequestLog`,
every request answered, behind its own lock. Nothing here knows about HTTP or the store.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator answered (or deliberately did not).

    :param status: the HTTP status sent, or ``"reset"`` / ``"dropped_after_commit"``.
    :param hashes: every hash of a ``keys.migrateKeys`` body (empty for other requests and for
        requests whose body was never read: 413s and resets).
    :param started: :func:`time.monotonic` when the request line was read.
    :param finished: :func:`time.monotonic` just before the answer was written.
    :param fault: the fault that shaped the answer (``"latency"``, ``"error"``, ``"rate_limit_storm"``,
        ``"reset"``, ``"drop_after_commit"``), ``"queue_timeout"`` for a 408 given while waiting for
        a capacity slot, else ``None``.
    :param queued: seconds the request waited for a capacity slot (0 when it got one at once or never
        asked: requests answered before the server processes them, such as 401s and the rate limit's
        429s, take no slot).
    :param admitted: :func:`time.monotonic` when it got its slot, ``None`` if it never held one.
    :param released: :func:`time.monotonic` when it gave its slot back (just before ``finished``),
        ``None`` if it never held one. A slot is released before the next request is granted it, so
        the intervals ``[admitted, released]`` show how many requests were processed at once.
    :param in_flight: requests processed at once (this one included) when it got its slot; 0 if it
        never held one.
    """

    method: str
    path: str
    status: int | str
    request_id: str
    hashes: tuple[str, ...]
    started: float
    finished: float
    fault: str | None = None
    queued: float = 0.0
    admitted: float | None = None
    released: float | None = None
    in_flight: int = 0

    @property
    def duration(self) -> float:
        """Seconds between reading the request and answering it."""
        return self.finished - self.started

    @property
    def processing(self) -> float:
        """Seconds it held a capacity slot: its simulated processing time and the route's work."""
        if self.admitted is None or self.released is None:
            return 0.0
        return self.released - self.admitted


class RequestLog:
    """Every request answered, oldest first, with counters by hash and by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._hash_counts: Counter[str] = Counter()
        self._status_counts: Counter[int | str] = Counter()

    def record(self, record: RequestRecord) -> None:
        """Append one request."""
        with self._lock:
            self._requests.append(record)
            self._status_counts[record.status] += 1
            if record.hashes:
                self._hash_counts.update(record.hashes)

    def requests(self) -> list[RequestRecord]:
        """A copy of the log."""
        with self._lock:
            return list(self._requests)

    def hash_counts(self) -> Counter[str]:
        """A copy of the count of each hash."""
        with self._lock:
            return Counter(self._hash_counts)

    def status_counts(self) -> Counter[int | str]:
        """A copy of the count of each status."""
        with self._lock:
            return Counter(self._status_counts)

    def clear(self) -> None:
        """Forget every request and count."""
        with self._lock:
            self._requests.clear()
            self._hash_counts.clear()
            self._status_counts.clear()
