"""The emulator's workspace rate limiter: Unkey's sliding windows, and the quota each answer reports.

:class:`RateLimiter` holds the workspaces' windows behind its own lock; :class:`Quota` is what one
answer reports. Nothing here knows about HTTP or the store.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Unkey's workspace limit counts requests per minute (``ApiRequestsCountMaxPerMinute``).
DEFAULT_RATE_LIMIT_WINDOW: Final = 60.0

#: The detail of Unkey's workspace 429 (``svc/api/internal/middleware/authentication.go``): the limit and
#: Go's ``time.Duration.String()`` of the window.
RATE_LIMITED_DETAIL: Final = (
    "This workspace has exceeded its API rate limit of {limit}/{window}. Please try again later."
)


def window_milliseconds(window: float) -> int:
    """``window`` seconds as the whole milliseconds Unkey's limiter counts windows in."""
    return round(window * 1000)


def check_rate_limit(limit: int | None, window: float) -> None:
    """:raises ValueError: for a negative limit or a window shorter than a millisecond."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"rate_limit must be an integer >= 0 or None, got {limit!r}")
    if not (isinstance(window, int | float) and math.isfinite(window) and window_milliseconds(window) >= 1):
        raise ValueError(f"rate_limit_window must be at least 0.001 s, got {window!r}")


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: ``1m0s``, ``2s``, ``1.5s``, ``500ms``, ``1h0m0s``.

    :param nanoseconds: the duration (Go's ``Duration`` is an integer count of nanoseconds).
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    u = abs(nanoseconds)

    def fraction(value: int, precision: int) -> tuple[int, str]:
        # Go's fmtFrac: the digits after the point without trailing zeros, no point for none.
        whole, rest = divmod(value, 10**precision)
        digits = f"{rest:0{precision}d}".rstrip("0") if precision else ""
        return whole, f".{digits}" if digits else ""

    if u < 1_000_000_000:
        # Below a second Go switches to the largest unit that keeps an integer part.
        unit, precision = ("ns", 0) if u < 1_000 else ("µs", 3) if u < 1_000_000 else ("ms", 6)
        whole, frac = fraction(u, precision)
        return f"{sign}{whole}{frac}{unit}"
    seconds, frac = fraction(u, 9)
    text = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _milliseconds(now: float) -> int:
    # Go's time.UnixMilli() truncates; rounding to the nanosecond first keeps a fake clock's 59.999
    # (59998.99999… after the float product) in millisecond 59999.
    return math.floor(round(now * 1000, 6))


def _whole_seconds_until(end_ms: int, now: float) -> int:
    # int64(time.Until(reset).Seconds()), floored at 0: truncated, so 0 during the window's last second.
    return max(int(round(end_ms / 1000 - now, 6)), 0)


@dataclass(frozen=True, slots=True)
class Quota:
    """A workspace's rate-limit state as one answer reports it.

    :param limit: the workspace's limit.
    :param remaining: what is left after this request (0 when it was refused).
    :param reset: whole seconds until the **current window** ends, truncated (0 during its last
        second; not when capacity comes back, and not a timestamp).
    :param allowed: whether the request was let through.
    :param reported: whether the answer carries the headers: Unkey's answer to a limit of 0 carries
        none.
    """

    limit: int
    remaining: int
    reset: int
    allowed: bool
    reported: bool = True

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (none when not reported)."""
        if not self.reported:
            return ()
        return (
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        )

    def refusal_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers of a 429: :meth:`headers` and ``Retry-After``, the same number as the reset."""
        if not self.reported:
            return ()
        return (*self.headers(), ("Retry-After", str(self.reset)))


class RateLimiter:
    """Unkey's workspace rate limiter (``internal/services/ratelimit``): a sliding-window estimate over
    windows aligned to the epoch of the clock.

    Window ``n`` covers ``[n * window, (n + 1) * window)``, in whole milliseconds. A request is refused
    when ``current + floor(previous * (1 - elapsed)) + 1 > limit``, where ``current`` and ``previous``
    are the requests let through in this window and the one before and ``elapsed`` the share of this
    window that has passed; refused requests do not count. After a full window at the limit the next
    window starts with the previous one weighing fully, so capacity comes back gradually.

    A limit of 0 refuses everything before the limiter is asked, counting nothing and reporting no
    headers, as Unkey does. Counters are kept per workspace and window length, as Unkey keys them, so
    changing the limit keeps the counts.

    :param limit: requests per window per workspace; ``None`` for no limit.
    :param window: seconds (Unkey's is 60; a shorter one compresses time for a test or a benchmark).
    :param clock: Unix seconds (the windows are aligned to its epoch); a test can pass one it advances
        itself.
    """

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float] = time.time) -> None:
        check_rate_limit(limit, window)
        self.limit = limit
        self.window = window
        self._window_ms = window_milliseconds(window)
        self._clock = clock
        self._lock = threading.Lock()
        # (workspace, window ms) -> {window sequence: requests let through}; only the last two matter.
        self._counts: dict[tuple[str, int], dict[int, int]] = {}

    def now(self) -> float:
        """The limiter's clock, now."""
        return self._clock()

    def configure(self, limit: int | None, window: float) -> None:
        """Set the limit and window (thread-safe); the counts stay, as Unkey's do when a limit changes."""
        check_rate_limit(limit, window)
        with self._lock:
            self.limit, self.window = limit, window
            self._window_ms = window_milliseconds(window)

    def detail(self, limit: int) -> str:
        """The detail of the 429 for ``limit``: ``... rate limit of 60/1m0s. ...``."""
        return RATE_LIMITED_DETAIL.format(limit=limit, window=go_duration(self._window_ms * 1_000_000))

    def count(self, workspace_id: str, now: float | None = None) -> Quota | None:
        """Count one request against its workspace's limit; ``None`` while no limit is set.

        :param now: the request's time on the limiter's clock; ``None`` reads the clock.
        """
        if self.limit is None:
            return None
        with self._lock:
            limit, window_ms = self.limit, self._window_ms
            if limit is None:
                return None
            if limit == 0:
                # Unkey answers a zero limit before asking its limiter: nothing counted, no headers.
                return Quota(0, 0, 0, allowed=False, reported=False)
            t = self._clock() if now is None else now
            now_ms = _milliseconds(t)
            sequence = now_ms // window_ms
            counts = self._counts.setdefault((workspace_id, window_ms), {})
            current = counts.get(sequence, 0)
            previous = counts.get(sequence - 1, 0)
            elapsed = (now_ms - sequence * window_ms) / window_ms
            # int() truncates like Go's int64(): the previous window's weighted share, floored.
            effective = current + int(previous * (1.0 - elapsed)) + 1
            allowed = effective <= limit
            if allowed:
                counts[sequence] = current + 1
                for stale in [s for s in counts if s < sequence - 1]:
                    del counts[stale]
            reset = _whole_seconds_until((sequence + 1) * window_ms, t)
        return Quota(limit, max(0, limit - effective) if allowed else 0, reset, allowed)

    def reset(self, now: float | None = None) -> int:
        """Whole seconds until the current window ends, truncated (what a 429 reports now)."""
        with self._lock:
            window_ms = self._window_ms
        t = self._clock() if now is None else now
        return _whole_seconds_until((_milliseconds(t) // window_ms + 1) * window_ms, t)

    def exhausted(self, reset: int | None = None) -> Quota:
        """The quota an injected 429 reports: the configured limit (0 when none), nothing remaining,
        and ``reset`` seconds, by default the limiter's own: the seconds until the current window ends.
        """
        limit = self.limit
        return Quota(
            0 if limit is None else limit, 0, self.reset() if reset is None else reset, allowed=False
        )
