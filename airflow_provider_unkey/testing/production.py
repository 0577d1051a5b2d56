"""The workspace's own production traffic: its services verifying their users' keys meanwhile.

Every request made with any root key of a workspace counts against the same workspace rate limit,
``keys.verifyKey`` included (BEHAVIOUR.md), so a migration that uses the limit up makes the workspace's
production fail with 429. :class:`Production` sends that traffic into the emulator's
:class:`~airflow_provider_unkey.testing.ratelimit.RateLimiter`: a steady rate, evenly spaced, with one-off
surges (:meth:`Production.surge`) and recurring bursts (:class:`ProductionBurst`) at other rates. Its
requests never touch HTTP, the request log or the capacity: only the limiter, and its own counters
(:class:`ProductionStats`).

Each production request is counted at its scheduled time on the limiter's clock, and the pipeline runs
production up to a request's time before counting that request, so the limiter sees every request in
time order whoever gets there first: a test with a fake clock gets the same answers whether the
production thread has run or not (:meth:`Production.advance` runs it explicitly).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from airflow_provider_unkey.testing.ratelimit import RateLimiter

#: How long the production thread sleeps at most between two looks at the clock (a fake clock moves
#: without telling it).
_POLL: Final = 0.05

_ZERO: Final = Fraction(0)
_ONE: Final = Fraction(1)


def _check_rate(name: str, per_minute: float) -> Fraction:
    """``per_minute`` as requests per second, exactly; :raises ValueError: when negative or not finite."""
    if (
        isinstance(per_minute, bool)
        or not isinstance(per_minute, int | float)
        or not math.isfinite(per_minute)
    ):
        raise ValueError(f"{name} must be a finite number of requests per minute, got {per_minute!r}")
    if per_minute < 0:
        raise ValueError(f"{name} must be >= 0, got {per_minute!r}")
    return Fraction(per_minute) / 60


def _check_seconds(name: str, seconds: float, minimum_exclusive: bool = True) -> Fraction:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
    if seconds < 0 or (minimum_exclusive and seconds == 0):
        raise ValueError(f"{name} must be {'>' if minimum_exclusive else '>='} 0, got {seconds!r}")
    return Fraction(seconds)


@dataclass(frozen=True, slots=True)
class ProductionBurst:
    """Recurring bursts of production traffic: every ``every`` seconds, ``seconds`` long at ``per_minute``
    requests a minute instead of the steady rate.

    :param per_minute: the rate during a burst.
    :param seconds: how long each burst lasts (at most ``every``).
    :param every: seconds from the start of one burst to the start of the next.
    :param first: seconds from setting the bursts to the first one; ``None`` for ``every``.
    :raises ValueError: for a negative rate, a burst that is not positive or longer than ``every``.
    """

    per_minute: float
    seconds: float
    every: float
    first: float | None = None

    def __post_init__(self) -> None:
        _check_rate("per_minute", self.per_minute)
        _check_seconds("seconds", self.seconds)
        _check_seconds("every", self.every)
        if self.first is not None:
            _check_seconds("first", self.first, minimum_exclusive=False)
        if self.seconds > self.every:
            raise ValueError(f"a burst of {self.seconds!r} s cannot recur every {self.every!r} s")

    @classmethod
    def parse(cls, text: str) -> ProductionBurst:
        """``RATE:SECONDS:EVERY[:FIRST]`` (the CLI's ``--production-burst``), e.g. ``54:30:300``.

        :raises ValueError: for anything else.
        """
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"expected RATE:SECONDS:EVERY[:FIRST], got {text!r}")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected numbers in RATE:SECONDS:EVERY[:FIRST], got {text!r}") from None
        return cls(*numbers)


@dataclass(frozen=True, slots=True)
class ProductionStats:
    """What the workspace's production traffic has met so far (the HTTP clients' are in ``emu.stats()``).

    :param workspace_id: the workspace production belongs to.
    :param per_minute: the steady rate now (0 for none).
    :param sent: production requests sent.
    :param accepted: those the rate limit let through.
    :param refused: those answered 429.
    :param refused_in_surge: refused requests sent during a surge or a burst.
    :param refusal_times: the limiter-clock time of every refused request, oldest first.
    :param surges: ``(start, end)`` on the limiter's clock of every surge asked for and every burst
        begun, oldest first (a surge replaced by another ends when the other begins).
    :param until: the limiter-clock time production has been run to; ``None`` before it ever ran.
    """

    workspace_id: str
    per_minute: float
    sent: int
    accepted: int
    refused: int
    refused_in_surge: int
    refusal_times: tuple[float, ...]
    surges: tuple[tuple[float, float], ...]
    until: float | None

    def refused_between(self, start: float, end: float) -> int:
        """Refused requests sent in ``[start, end)`` of the limiter's clock."""
        return sum(1 for t in self.refusal_times if start <= t < end)


class Production:
    """The workspace's production traffic, counted against ``limiter`` (thread-safe).

    Requests are evenly spaced at the rate in force, and a rate change carries the progress toward
    the next request over, so a surge starts at once. Nothing is sent until :meth:`configure` or
    :meth:`surge` is called; then the first request goes out at once.

    :param limiter: the emulator's rate limiter, whose clock production runs on.
    :param workspace_id: the workspace whose limit production shares.
    """

    def __init__(self, limiter: RateLimiter, workspace_id: str = "ws_default") -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._workspace_id = workspace_id
        self._per_minute = 0.0
        self._steady = _ZERO  # requests per second
        self._burst: tuple[Fraction, Fraction, Fraction, Fraction] | None = (
            None  # rate, length, every, first start
        )
        self._surge: tuple[Fraction, Fraction, Fraction] | None = None  # start, end, rate
        self._running = False  # something was configured: the cursor moves
        self._cursor = _ZERO  # the time production has been run to
        self._owed = _ZERO  # progress still needed before the next request (0: due now, 1: a whole interval)
        self._sent = self._accepted = self._refused = self._refused_in_surge = 0
        self._refusal_times: list[float] = []
        self._surges: list[list[Fraction]] = []
        self._recorded: set[tuple[Fraction, Fraction]] = set()
        self._until: float | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()

    # --- configuration ------------------------------------------------------------------------------
    def configure(
        self, per_minute: float | None, burst: ProductionBurst | None = None, workspace_id: str | None = None
    ) -> None:
        """Replace the steady rate and the bursts, from now; a surge in progress ends.

        ``per_minute`` ``None`` or 0 with no ``burst`` stops production. The counters stay.

        :raises ValueError: for a negative rate.
        """
        steady = _check_rate("per_minute", 0.0 if per_minute is None else per_minute)
        with self._lock:
            now = self._now()
            self._run_to(now)
            self._end_surge(now)
            if workspace_id is not None:
                self._workspace_id = workspace_id
            self._per_minute = float(per_minute or 0.0)
            self._steady = steady
            self._burst = None
            if burst is not None:
                first = Fraction(burst.every if burst.first is None else burst.first)
                rate = Fraction(burst.per_minute) / 60
                self._burst = (rate, Fraction(burst.seconds), Fraction(burst.every), now + first)
            self._running = steady > 0 or burst is not None
            self._cursor, self._owed = now, _ZERO
        self._wake.set()

    def surge(self, per_minute: float, seconds: float) -> None:
        """From now, for ``seconds``, send at ``per_minute`` instead; then back to the steady rate (and
        bursts). A surge in progress ends.

        :raises ValueError: for a negative rate or a duration that is not positive.
        """
        rate = _check_rate("per_minute", per_minute)
        length = _check_seconds("seconds", seconds)
        with self._lock:
            now = self._now()
            self._run_to(now)
            self._end_surge(now)
            if not self._running:
                self._running, self._cursor, self._owed = True, now, _ZERO
            self._surge = (now, now + length, rate)
            self._record(now, now + length)
        self._wake.set()

    # --- running ------------------------------------------------------------------------------------
    def advance(self, until: float | None = None) -> None:
        """Send every production request scheduled up to ``until`` (inclusive) on the limiter's clock,
        each counted at its own time; ``None`` for now. Running it to a time it has passed does nothing.
        """
        if not self._running:
            return
        with self._lock:
            self._run_to(Fraction(self._limiter.now() if until is None else until))

    def stats(self) -> ProductionStats:
        """The counters as of the time production has been run to."""
        with self._lock:
            return ProductionStats(
                workspace_id=self._workspace_id,
                per_minute=self._per_minute,
                sent=self._sent,
                accepted=self._accepted,
                refused=self._refused,
                refused_in_surge=self._refused_in_surge,
                refusal_times=tuple(self._refusal_times),
                surges=tuple((float(start), float(end)) for start, end in self._surges),
                until=self._until,
            )

    def start(self) -> None:
        """Run production in a daemon thread, on the limiter's clock, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="unkey-emulator-production", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (idempotent); production stands still until the next :meth:`advance`."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            delay = self._tick()
            # Idle (nothing configured): sleep until configured; else until the next request is due,
            # looking at the clock now and then (a fake clock moves without telling).
            self._wake.wait(None if delay is None else min(max(delay, 0.0), _POLL))
            self._wake.clear()

    def _tick(self) -> float | None:
        """Run production to now; the clock seconds until the next request, ``None`` when idle."""
        with self._lock:
            if not self._running:
                return None
            now = self._limiter.now()
            self._run_to(Fraction(now))
            rate, end, _ = self._segment(self._cursor)
            if rate > 0:
                due = self._cursor + self._owed / rate
                if end is not None:
                    due = min(due, end)
            elif end is not None:
                due = end
            else:
                return None  # no steady rate, no burst or surge ahead: nothing will ever be due
            return float(due) - now

    # --- the schedule (call with the lock held) -------------------------------------------------------
    def _now(self) -> Fraction:
        # Never before the time production was run to (advance() may have run it ahead of the clock).
        return max(Fraction(self._limiter.now()), self._cursor)

    def _segment(self, t: Fraction) -> tuple[Fraction, Fraction | None, tuple[Fraction, Fraction] | None]:
        """The rate in force from ``t``, until when (``None``: for ever), and the surge or burst it is."""
        ends: list[Fraction] = []
        if self._surge is not None:
            start, end, rate = self._surge
            if start <= t < end:
                return rate, end, (start, end)
            if t < start:
                ends.append(start)
        if self._burst is not None:
            rate, length, every, first = self._burst
            if t < first:
                ends.append(first)
            else:
                start = first + every * math.floor((t - first) / every)
                if t < start + length:
                    end = min([start + length, *ends])
                    return rate, end, (start, start + length)
                ends.append(start + every)
        return self._steady, min(ends) if ends else None, None

    def _run_to(self, until: Fraction) -> None:
        if not self._running or until <= self._cursor:
            return
        t = self._cursor
        while True:
            rate, end, window = self._segment(t)
            if window is not None:
                self._record(*window)  # a burst has begun (a surge was recorded when asked for)
            if rate > 0:
                send_at = t + self._owed / rate
                if send_at <= until and (end is None or send_at < end):
                    self._send(send_at, in_surge=window is not None)
                    t, self._owed = send_at, _ONE
                    continue
            if end is None or end > until:
                self._owed -= (until - t) * rate
                break
            # The next segment begins by ``until`` (at it, too: a request due then is sent now).
            self._owed -= (end - t) * rate
            t = end
        if self._surge is not None and until >= self._surge[1]:
            self._surge = None
        self._cursor = until
        self._until = float(until)

    def _send(self, at: Fraction, in_surge: bool) -> None:
        when = float(at)
        quota = self._limiter.count(self._workspace_id, when)
        self._sent += 1
        if quota is None or quota.allowed:
            self._accepted += 1
        else:
            self._refused += 1
            self._refusal_times.append(when)
            if in_surge:
                self._refused_in_surge += 1

    def _record(self, start: Fraction, end: Fraction) -> None:
        if (start, end) not in self._recorded:
            self._recorded.add((start, end))
            self._surges.append([start, end])

    def _end_surge(self, now: Fraction) -> None:
        """End a surge in progress at ``now`` (its recorded end too)."""
        if self._surge is None:
            return
        start, end, _ = self._surge
        if start <= now < end:
            for window in self._surges:
                if window == [start, end]:
                    window[1] = now
        self._surge = None
