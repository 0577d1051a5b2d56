"""Pacing to a workspace rate limit that the migration shares with the workspace's production traffic.

Nothing here imports Airflow. Unkey counts every root-key request of a workspace, ``keys.verifyKey``
included, against one limit per minute (``../shared/unkey/BEHAVIOUR.md``). Its limiter keeps windows
aligned to the epoch and refuses a request when ``current + floor(previous * (1 - elapsed)) + 1 >
limit``; every answer states ``RateLimit-Limit`` and ``RateLimit-Remaining`` (the use of the whole
workspace), and ``RateLimit-Reset`` (whole seconds to the end of the current window, truncated).

:class:`RatePacer` keeps the workspace's use below ``limit * (1 - headroom)``, so the workspace's own
traffic always finds the headroom free:

* It counts its own requests the way the limiter does (each in the window it was sent in, the previous
  window weighing ``1 - elapsed``), so it knows its own part of the estimate at any moment, and when a
  window ends it does not burst: the previous window still counts.
* Each answer's ``Remaining`` less its own part is what the others use (production, and other tasks
  of the same migration); the highest such figure of the last moments is taken as theirs, and while
  it rises, its rise is taken to go on until an answer says otherwise.
* A request goes when its own part plus the others' plus itself stays within the target, and no
  sooner than ``window / room`` after the one before, so that the room is used evenly over the window.
  Others that rise make it wait (a surge of production is yielded to within one answer); others that
  fall give the room back. While the others leave no room and nothing is sent to learn from, a lone
  request now and then (every 15 s at first, doubling up to a window; once every two windows when it
  could take the workspace past half the headroom) asks what the room is.
* Before the first answer states the limit, one request at a time goes out.
* A 429 holds every request back for ``Retry-After`` (at least a second: Unkey's truncated ``0`` means
  "within the second"), plus jitter, and a refused request no longer counts as sent.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_unkey.retries import RATE_LIMIT_WAIT_FLOOR, Attempt

__all__ = [
    "DEFAULT_RATE_LIMIT_HEADROOM",
    "RATE_LIMIT_WAIT_FLOOR",
    "UNKEY_RATE_LIMIT_WINDOW",
    "RatePacer",
    "Ticket",
    "check_headroom",
    "check_window",
]

#: Unkey's workspace limit counts requests per minute (the workspace's ``ApiRequestsCountMaxPerMinute``).
UNKEY_RATE_LIMIT_WINDOW = 60.0
#: The share of the workspace rate limit a migration leaves free by default, for production's rises.
DEFAULT_RATE_LIMIT_HEADROOM = 0.25


def check_headroom(headroom: object) -> float:
    """``headroom`` as a float in ``[0, 1)``.

    :raises ValueError: naming the value otherwise.
    """
    if isinstance(headroom, bool) or not isinstance(headroom, int | float) or not 0 <= headroom < 1:
        raise ValueError(
            "rate_limit_headroom must be a share of the workspace rate limit, 0 or more and below 1,"
            f" got {headroom!r}"
        )
    return float(headroom)


def check_window(window: object) -> float:
    """``window`` as a positive number of seconds.

    :raises ValueError: naming the value otherwise.
    """
    if (
        isinstance(window, bool)
        or not isinstance(window, int | float)
        or not math.isfinite(window)
        or window <= 0
    ):
        raise ValueError(f"rate_limit_window must be a number of seconds above 0, got {window!r}")
    return float(window)


@dataclass(slots=True)
class Ticket:
    """One request the pacer let go: when it was sent (the pacer's clock), and whether an attempt of it
    has been observed (the client's own retries of it are further requests)."""

    sent_at: float
    observed: bool = False
    probe: bool = False


class RatePacer:
    """Spaces requests so that the whole workspace stays below ``limit * (1 - headroom)``.

    :param headroom: the share of the limit the migration never takes (``0 <= headroom < 1``).
    :param window: the limiter's window in seconds (Unkey's is a minute).
    :param clock: Unix seconds (the limiter's windows are aligned to the epoch).
    :param jitter: up to this many seconds are added to a wait after a 429, so that the tasks of one
        workspace do not come back together.
    :param rng: draws the jitter.
    """

    #: The first wait, in seconds, before a lone request asks what the room is (doubles while it waits).
    PROBE_AFTER = 15.0

    def __init__(
        self,
        headroom: float = DEFAULT_RATE_LIMIT_HEADROOM,
        window: float = UNKEY_RATE_LIMIT_WINDOW,
        *,
        clock: Callable[[], float] = time.time,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.headroom = check_headroom(headroom)
        self.window = check_window(window)
        self._clock = clock
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._known = False  # an answer came, with or without a limit
        self._limit: int | None = None
        self._sends: list[float] = []  # this run's counted requests of the last two windows, sorted
        self._others: deque[tuple[float, float]] = deque()  # (when, what the others use)
        self._blocked_until = -math.inf
        self._last_send = -math.inf
        self._last_seen = -math.inf
        self._probe_after = min(self.PROBE_AFTER, self.window)
        self._in_flight = 0
        self._holding = 0  # workers waiting for the pace now
        self._holding_since = 0.0
        self._first_send: float | None = None
        #: Wall seconds during which at least one request waited for the rate limit.
        self.waited = 0.0
        #: Answers that were 429.
        self.refused = 0
        #: Requests that counted against the limit (sent and not refused).
        self.counted = 0
        #: The highest share of the limit this run's own requests held at once, as the limiter counts.
        self.peak_share = 0.0
        #: The highest share of the limit the whole workspace used, as an answer stated it.
        self.peak_workspace_share = 0.0

    # --- what the limiter counts --------------------------------------------------------------------
    @property
    def known(self) -> bool:
        """Whether an answer came, so that the workspace's limit (or its having none) is known."""
        return self._known

    @property
    def limited(self) -> bool:
        """Whether the workspace has a rate limit (an answer stated one)."""
        return self._limit is not None

    @property
    def limit(self) -> int | None:
        """The workspace's limit, as the last answer stated it."""
        return self._limit

    def _counts(self, t: float, upto: float) -> tuple[float, int, int]:
        """The start of ``t``'s window, and this run's requests sent until ``upto`` in it and in the
        window before."""
        start = math.floor(t / self.window) * self.window
        sends = self._sends
        end = bisect.bisect_right(sends, upto)
        cur = end - bisect.bisect_left(sends, start, hi=end)
        prev = bisect.bisect_left(sends, start) - bisect.bisect_left(sends, start - self.window)
        return start, cur, prev

    def _own(self, t: float, *, upto: float | None = None) -> float:
        """This run's part of the limiter's estimate at ``t``: requests sent in ``t``'s window, plus
        those of the window before weighted by the share of ``t``'s window still to come. With
        ``upto``, only the requests sent until then."""
        start, cur, prev = self._counts(t, t if upto is None else upto)
        return cur + prev * (1.0 - (t - start) / self.window)

    def _until_own_at_most(self, now: float, most: float) -> float:
        """Seconds until this run's part falls to ``most`` if it sends nothing more (``inf``: never)."""
        if most < 0:
            return math.inf
        w = self.window
        start, cur, prev = self._counts(now, math.inf)
        if cur + prev * (1.0 - (now - start) / w) <= most:
            return 0.0
        if cur <= most:  # within this window, as the previous one fades
            return max(0.0, start + w * (1.0 - (most - cur) / prev) - now)
        # In the next window, as this one fades.
        return start + w + w * (1.0 - most / cur) - now

    def _theirs(self, now: float) -> float:
        """What the others use now, as far as the answers tell: the highest figure of the last moments
        (a twentieth of the window), or more while it rises: its rise over the last sixth of the window
        goes on (for at most that long) until an answer says otherwise. Tasks that start together, and
        production surging, are seen coming rather than after they took the room."""
        trend_from = now - self.window / 6
        while len(self._others) > 1 and self._others[0][0] < trend_from:
            self._others.popleft()
        if not self._others:
            return 0.0
        recent = now - self.window / 20
        highest = max(v for t, v in self._others if t >= recent) if self._others[-1][0] >= recent else 0.0
        (t0, v0), (t1, v1) = self._others[0], self._others[-1]
        rise = (v1 - v0) / (t1 - t0) if t1 - t0 >= self.window / 60 else 0.0
        return max(highest, v1 + max(rise, 0.0) * min(now - t1, self.window / 6))

    def share(self) -> float | None:
        """This run's part of the workspace's limit now, 0-1 (``None`` without a limit)."""
        with self._lock:
            if self._limit is None or self._limit <= 0:
                return None
            return self._own(self._clock()) / self._limit

    def rate(self) -> float | None:
        """The pace now, requests per second (``None`` without a limit)."""
        with self._lock:
            if self._limit is None:
                return None
            room = self._limit * (1 - self.headroom) - self._theirs(self._clock())
            return max(room, 0.0) / self.window

    def mean_share(self) -> float | None:
        """This run's requests per window over the run so far, as a share of the limit (a run shorter
        than a window counts a whole one)."""
        with self._lock:
            if not self._limit or self._first_send is None:
                return None
            windows = max(1.0, (self._clock() - self._first_send) / self.window)
            return self.counted / windows / self._limit

    # --- answers --------------------------------------------------------------------------------------
    def observe(self, attempt: Attempt, ticket: Ticket) -> None:
        """Learn from the answer (or its absence) to a request that ``ticket`` let go."""
        now = self._clock()
        with self._lock:
            if ticket.observed:
                # The client retried on its own (a 5xx, a timeout): that request counted too.
                sent_at = now - attempt.seconds
                bisect.insort(self._sends, sent_at)
                self.counted += 1
            else:
                sent_at = ticket.sent_at
                ticket.observed = True
            if attempt.status is not None:
                self._known = True
            state = attempt.rate_limit
            if attempt.status == 429:
                self.refused += 1
                self._uncount(sent_at)
                wait = max(attempt.retry_after or 0.0, RATE_LIMIT_WAIT_FLOOR)
                self._blocked_until = max(
                    self._blocked_until, now + wait + self._rng.uniform(0, self._jitter)
                )
            if state is None or state.limit <= 0:
                # No limit stated (or none that a request could ever pass): nothing to pace to.
                if attempt.status is not None and attempt.status != 429 and self._limit is None:
                    self._sends.clear()
                return
            self._limit = state.limit
            # What the whole workspace uses, this request included; a 429 says it was full.
            used = state.limit if attempt.status == 429 else state.limit - state.remaining
            self.peak_workspace_share = max(self.peak_workspace_share, used / state.limit)
            others = max(0.0, used - self._own(sent_at, upto=sent_at))
            self._others.append((now, others))
            self._last_seen = now

    def _uncount(self, sent_at: float) -> None:
        i = bisect.bisect_left(self._sends, sent_at)
        if i < len(self._sends) and self._sends[i] == sent_at:
            del self._sends[i]
            self.counted -= 1

    # --- sending ----------------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        """Whether a request is waiting for the pace now."""
        return self._holding > 0

    def would_wait(self) -> bool:
        """Whether a request asking now would have to wait for the pace (nothing is taken)."""
        with self._lock:
            return self._delay(self._clock())[0] > 0

    def acquire(self, stop: threading.Event, deadline: float = math.inf) -> Ticket | None:
        """Wait until the next request may go.

        :param stop: set when the run stops.
        :param deadline: :func:`time.monotonic` after which no request goes.
        :return: the ticket of the request, or ``None`` when ``stop`` was set or ``deadline`` passed first.
        """
        waiting = False
        try:
            while True:
                ticket, delay = self.try_acquire()
                if ticket is not None:
                    return ticket
                if not waiting:
                    waiting = True
                    self._hold(+1)
                left = deadline - time.monotonic()
                if left <= 0 or stop.wait(min(delay, 1.0, left)):
                    return None
        finally:
            if waiting:
                self._hold(-1)

    def _hold(self, step: int) -> None:
        with self._lock:
            now = self._clock()
            if step > 0 and self._holding == 0:
                self._holding_since = now
            self._holding += step
            if step < 0 and self._holding == 0:
                self.waited += now - self._holding_since

    def try_acquire(self) -> tuple[Ticket | None, float]:
        """Let a request go now (a ticket), or say how long until one may (no ticket, seconds)."""
        with self._lock:
            now = self._clock()
            delay, probe = self._delay(now)
            if delay > 0:
                return None, delay
            if self._limit is not None:
                bisect.insort(self._sends, now)
                self._prune(now)
                self.counted += 1
                if self._first_send is None:
                    self._first_send = now
                self._last_send = now
                if probe:
                    self._last_seen = now  # the next probe waits for this one's answer, and longer
                    self._probe_after = min(self._probe_after * 2, self.window)
                else:
                    self._probe_after = min(self.PROBE_AFTER, self.window)
                if self._limit > 0:
                    self.peak_share = max(self.peak_share, self._own(now) / self._limit)
            self._in_flight += 1
            return Ticket(now, probe=probe), 0.0

    def release(self, ticket: Ticket) -> None:
        """The request ``ticket`` let go has its answer (or none)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def _prune(self, now: float) -> None:
        # Requests older than the previous window no longer count.
        oldest = (math.floor(now / self.window) - 1) * self.window
        cut = bisect.bisect_left(self._sends, oldest)
        if cut:
            del self._sends[:cut]

    def _delay(self, now: float) -> tuple[float, bool]:
        """Seconds until a request may go (0: now), and whether it goes as a probe."""
        if not self._known:
            # Before the first answer states the limit, one request at a time.
            return (0.05, False) if self._in_flight else (0.0, False)
        if now < self._blocked_until:
            return self._blocked_until - now, False
        limit = self._limit
        if limit is None:
            return 0.0, False
        room = limit * (1 - self.headroom) - self._theirs(now)
        # Within the room, and no sooner than an even share of the window after the last request.
        spacing = self.window / max(room, 1.0)
        wait = max(self._until_own_at_most(now, room - 1), self._last_send + spacing - now, 0.0)
        if wait <= 0:
            return 0.0, False
        if self._in_flight or room >= 1:
            return wait, False
        # The others leave no room, and nothing is sent to learn from: now and then a lone request asks
        # whether they still use it all. Not while that request could itself take the workspace into
        # the second half of its headroom (every task of a migration may ask at once), unless two
        # windows have passed without a word: what the others use then is anybody's guess.
        probe_in = self._last_seen + self._probe_after - now
        if probe_in > 0:
            return min(wait, probe_in), False
        safe = self._own(now) + self._theirs(now) + 1 <= limit * (1 - self.headroom / 2)
        if safe or now - self._last_seen >= 2 * self.window:
            return 0.0, True
        return min(wait, self._last_seen + 2 * self.window - now, self._probe_after), False
