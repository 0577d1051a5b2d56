"""The server's capacity: at most N requests processed at once, the rest waiting in a FIFO queue.

A saturated real server answers later the more it is loaded: its workers are busy, new requests wait
for one. :class:`Capacity` models that with N slots handed out first come, first served; a request
spends its simulated processing time (the latency faults) holding a slot, so a server of capacity 8
and 50 ms of latency serves at most 160 requests/s, and the others queue.

Whatever the limit (none by default), it counts the requests in flight and waiting, and their peaks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_unkey.testing.request_log import RequestRecord


def check_capacity(capacity: int | None) -> int | None:
    """``capacity`` normalised: ``None`` (and 0) for no limit.

    :raises ValueError: for a negative capacity or one that is not an integer.
    """
    if capacity is None or capacity == 0:
        return None
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ValueError(f"capacity must be an integer >= 0 or None, got {capacity!r}")
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0 (0 or None: unlimited), got {capacity!r}")
    return capacity


@dataclass(frozen=True, slots=True)
class Load:
    """The capacity's state at one moment.

    :param capacity: requests processed at once at most; ``None`` for no limit.
    :param in_flight: requests holding a slot (being processed) now.
    :param queued: requests waiting for a slot now.
    :param peak_in_flight: the most requests ever processed at once (since the last reset).
    :param peak_queued: the most requests ever waiting at once (since the last reset).
    """

    capacity: int | None
    in_flight: int
    queued: int
    peak_in_flight: int
    peak_queued: int


class _Waiter:
    __slots__ = ("admitted", "event", "in_flight")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.admitted: float | None = None  # set by whoever grants the slot, under the lock
        self.in_flight = 0


@dataclass(frozen=True, slots=True)
class Slot:
    """A slot held: when it was granted, how many requests (this one included) held one then, and
    the seconds waited for it (0.0 when it was granted on arrival)."""

    admitted: float
    in_flight: int
    queued: float


class Capacity:
    """N slots, granted in arrival order (FIFO); thread-safe, changeable while requests wait.

    :param capacity: slots; ``None`` or 0 for no limit (a slot is then granted at once, and only
        counted).
    :param clock: monotonic seconds (the clock of :attr:`RequestRecord.started`).
    """

    def __init__(self, capacity: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = check_capacity(capacity)
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._peak_queued = 0

    @property
    def limit(self) -> int | None:
        """Requests processed at once at most; ``None`` for no limit."""
        return self._limit

    def configure(self, capacity: int | None) -> None:
        """Change the limit; a larger one (or none) lets waiting requests in at once, in order.

        A smaller one takes no slot back: the requests in flight finish, and no new one starts
        until fewer than ``capacity`` are.
        """
        limit = check_capacity(capacity)
        with self._lock:
            self._limit = limit
            self._grant()

    def acquire(self, deadline: float) -> Slot | None:
        """Wait for a slot until ``deadline`` (in ``clock`` seconds).

        :return: the slot, to :meth:`release` once done; ``None`` when the deadline passed first (the
            request then holds no slot and has left the queue).
        """
        waiter = _Waiter()
        with self._lock:
            self._queue.append(waiter)
            self._grant()
            if waiter.admitted is not None:
                return Slot(waiter.admitted, waiter.in_flight, 0.0)
            enqueued = self._clock()
            self._peak_queued = max(self._peak_queued, len(self._queue))
        while waiter.admitted is None:
            left = deadline - self._clock()
            if left <= 0 or not waiter.event.wait(left):
                with self._lock:
                    if waiter.admitted is None:
                        self._queue.remove(waiter)
                        return None
                # Granted just as the deadline passed: the caller holds the slot.
        return Slot(waiter.admitted, waiter.in_flight, max(0.0, waiter.admitted - enqueued))

    def release(self) -> float:
        """Give a slot back; the next waiting request gets it.

        :return: when it was released (before the next request was granted it).
        """
        with self._lock:
            released = self._clock()
            self._in_flight -= 1
            self._grant()
            return released

    def load(self) -> Load:
        """The state now, with the peaks."""
        with self._lock:
            return Load(
                self._limit, self._in_flight, len(self._queue), self._peak_in_flight, self._peak_queued
            )

    def reset_peaks(self) -> None:
        """Start the peaks over from the current state."""
        with self._lock:
            self._peak_in_flight = self._in_flight
            self._peak_queued = len(self._queue)

    def _grant(self) -> None:
        # Under the lock: hand free slots to the waiters, first come first served.
        while self._queue and (self._limit is None or self._in_flight < self._limit):
            waiter = self._queue.popleft()
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            waiter.in_flight = self._in_flight
            waiter.admitted = self._clock()
            waiter.event.set()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Stats:
    """What a benchmark reports of the server's side: counters, latency quantiles and the load.

    Counters and quantiles cover the requests in the log (of one path when asked so); the load and
    its peaks are the whole server's since the last :meth:`UnkeyEmulator.reset_log`.

    :param requests: requests answered (connections reset or dropped on purpose included).
    :param status_counts: answers by status (``"reset"`` and ``"dropped_after_commit"`` too).
    :param rate_limited: 429 answers (the rate limit's, a storm's and injected ones).
    :param timed_out: 408 answers (past the server timeout, or injected).
    :param queue_timeouts: the 408s given while still waiting for a capacity slot.
    :param duration_p50, duration_p95: seconds from reading a request to answering it.
    :param queued_p50, queued_p95: seconds a request waited for a slot (0 for those that took none).
    :param processing_p50, processing_p95: seconds a request held a slot, over those that held one.
    :param load: capacity, requests in flight and queued now, and their peaks.
    """

    requests: int
    status_counts: Counter[int | str]
    rate_limited: int
    timed_out: int
    queue_timeouts: int
    duration_p50: float
    duration_p95: float
    queued_p50: float
    queued_p95: float
    processing_p50: float
    processing_p95: float
    load: Load

    @property
    def peak_in_flight(self) -> int:
        """The most requests ever processed at once."""
        return self.load.peak_in_flight

    @property
    def peak_queued(self) -> int:
        """The most requests ever waiting for a slot at once."""
        return self.load.peak_queued

    @classmethod
    def of(cls, records: list[RequestRecord], load: Load) -> Stats:
        """The stats of ``records`` under ``load``."""
        statuses: Counter[int | str] = Counter(r.status for r in records)
        durations = [r.duration for r in records]
        queued = [r.queued for r in records]
        processing = [r.processing for r in records if r.admitted is not None]
        return cls(
            requests=len(records),
            status_counts=statuses,
            rate_limited=statuses[429],
            timed_out=statuses[408],
            queue_timeouts=sum(1 for r in records if r.fault == "queue_timeout"),
            duration_p50=percentile(durations, 0.5),
            duration_p95=percentile(durations, 0.95),
            queued_p50=percentile(queued, 0.5),
            queued_p95=percentile(queued, 0.95),
            processing_p50=percentile(processing, 0.5),
            processing_p95=percentile(processing, 0.95),
            load=load,
        )
