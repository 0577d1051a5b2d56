"""The emulator's workspace rate limiter is Unkey's (``internal/services/ratelimit``), on a fake clock.

A request is refused when ``current + floor(previous * (1 - elapsed)) + 1 > limit``, over windows
aligned to the epoch; refused requests do not count; ``Remaining`` is what that estimate leaves and
``Reset`` the whole seconds to the end of the current window, truncated.
"""

from __future__ import annotations

import random

import pytest

from airflow_provider_unkey.testing.store import (
    Quota,
    RateLimiter,
    _milliseconds,
    check_rate_limit,
    go_duration,
)
from tests.testing.clocks import W0, FakeClock


def limiter(limit: int | None, window: float = 60.0, at: float = W0) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock(at)
    return RateLimiter(limit, window, clock), clock


def counts(rl: RateLimiter, n: int, workspace: str = "ws", now: float | None = None) -> list[Quota]:
    out = []
    for _ in range(n):
        quota = rl.count(workspace, now)
        assert quota is not None
        out.append(quota)
    return out


def accepted(quotas: list[Quota]) -> int:
    return sum(q.allowed for q in quotas)


def test_the_first_requests_of_a_window() -> None:
    rl, clock = limiter(3)
    assert counts(rl, 4) == [
        Quota(3, 2, 60, True),
        Quota(3, 1, 60, True),
        Quota(3, 0, 60, True),
        Quota(3, 0, 60, False),  # refused: nothing remaining
    ]
    assert W0 % 60 == 0 and clock.now == W0


def test_no_limit_counts_nothing_and_reports_nothing() -> None:
    rl, _ = limiter(None)
    assert rl.count("ws") is None


# --- windows aligned to the epoch ----------------------------------------------------------------------
def test_the_last_instant_of_a_window_and_the_first_of_the_next() -> None:
    rl, clock = limiter(3)
    clock.now = W0 + 59.999  # the window's last millisecond
    assert [(q.allowed, q.remaining, q.reset) for q in counts(rl, 4)] == [
        (True, 2, 0),
        (True, 1, 0),
        (True, 0, 0),
        (False, 0, 0),  # Retry-After 0: the window ends within the second
    ]
    clock.now = W0 + 60.0  # the next window's first instant: the previous one weighs fully
    assert counts(rl, 1) == [Quota(3, 0, 60, False)]
    clock.now = W0 + 80.0  # a third of the way in: floor(3 * 2/3) = 2, so one request fits
    assert counts(rl, 2) == [Quota(3, 0, 40, True), Quota(3, 0, 40, False)]


def test_windows_are_aligned_to_the_epoch_not_to_the_first_request() -> None:
    # Two requests two seconds apart fall in two windows: a window opened by the first request would
    # refuse the second.
    rl, clock = limiter(1)
    clock.now = W0 + 59.0
    assert counts(rl, 1) == [Quota(1, 0, 1, True)]
    clock.now = W0 + 61.0  # floor(1 * (1 - 1/60)) = 0
    assert counts(rl, 1) == [Quota(1, 0, 59, True)]
    assert counts(rl, 1) == [Quota(1, 0, 59, False)]


def test_after_a_full_window_at_the_limit_capacity_comes_back_gradually() -> None:
    rl, clock = limiter(60)
    for second in range(60):  # one a second: the whole window at the limit
        clock.now = W0 + second
        assert counts(rl, 1)[0].allowed
    clock.now = W0 + 60.0
    assert not counts(rl, 1)[0].allowed  # not all at once when the window ends
    clock.now = W0 + 75.0  # a quarter in: floor(60 * 0.75) = 45 of the previous still weigh
    quarter = counts(rl, 20)
    assert accepted(quarter) == 15
    assert [q.remaining for q in quarter[:15]] == list(range(14, -1, -1))
    clock.now = W0 + 90.0  # half-way: floor(60 * 0.5) = 30, and 15 already in this window
    assert accepted(counts(rl, 20)) == 15
    clock.now = W0 + 119.999  # the last instant: floor(60 * 0.0000166…) = 0, 30 in this window
    assert accepted(counts(rl, 40)) == 30


def test_the_previous_window_is_floored() -> None:
    rl, clock = limiter(5)
    assert accepted(counts(rl, 5)) == 5
    clock.now = W0 + 90.0  # floor(5 * 0.5) = floor(2.5) = 2: three fit, not two (round or ceil)
    assert [(q.allowed, q.remaining) for q in counts(rl, 4)] == [(True, 2), (True, 1), (True, 0), (False, 0)]


def test_refused_requests_do_not_count() -> None:
    rl, clock = limiter(2)
    assert accepted(counts(rl, 12)) == 2  # ten refused
    clock.now = W0 + 90.0  # floor(2 * 0.5) = 1: had the ten counted, floor(12 * 0.5) = 6 would refuse
    assert [q.allowed for q in counts(rl, 2)] == [True, False]
    # Nor in the window itself: the refused requests left room for nothing, and took none.
    clock.now = W0 + 119.0
    assert [(q.allowed, q.remaining) for q in counts(rl, 1)] == [(True, 0)]


def test_remaining_counts_every_client_of_the_workspace() -> None:
    rl, _ = limiter(10)
    # Three root keys (or production) of one workspace share one count: each sees the others' use.
    assert [q.remaining for q in (counts(rl, 1)[0], counts(rl, 2)[1], counts(rl, 1)[0])] == [9, 7, 6]


def test_two_workspaces_are_independent() -> None:
    rl, clock = limiter(2)
    assert accepted(counts(rl, 3, "ws_a")) == 2
    assert counts(rl, 1, "ws_b") == [Quota(2, 1, 60, True)]
    clock.now = W0 + 60.0
    assert not counts(rl, 1, "ws_a")[0].allowed  # ws_a's previous window weighs on ws_a only
    assert counts(rl, 1, "ws_b") == [Quota(2, 0, 60, True)]  # floor(1 * 1) = 1 of ws_b's own


@pytest.mark.parametrize(
    ("offset", "reset"),
    [(0.0, 60), (0.5, 59), (1.0, 59), (58.9, 1), (59.0, 1), (59.001, 0), (59.5, 0), (59.999, 0)],
)
def test_reset_is_the_whole_seconds_to_the_end_of_the_current_window_truncated(
    offset: float, reset: int
) -> None:
    rl, clock = limiter(1)
    clock.now = W0 + offset
    assert counts(rl, 2) == [Quota(1, 0, reset, True), Quota(1, 0, reset, False)]
    assert rl.reset() == reset


def test_clock_readings_are_whole_milliseconds_as_go_truncates_them() -> None:
    assert 1.005 * 1000 < 1005  # the float product falls short of the millisecond it names
    assert [_milliseconds(t) for t in (1.005, 0.0015, 59.999, W0 + 0.0009)] == [
        1005,
        1,
        59999,
        int(W0) * 1000,
    ]
    # 1.005 s is the first instant of window 1 of 1.005 s (read as 1004.999… ms, the last of window 0).
    rl, _ = limiter(1, window=1.005, at=1.005)
    assert rl.count("ws") == Quota(1, 0, 1, True)


def test_the_time_a_request_is_counted_at_can_be_given() -> None:
    rl, clock = limiter(1)
    assert rl.count("ws", now=W0 + 30.5) == Quota(1, 0, 29, True)
    assert rl.count("ws", now=W0 + 31.0) == Quota(1, 0, 29, False)
    assert clock.now == W0


def test_a_compressed_window_of_two_seconds() -> None:
    rl, clock = limiter(4, window=2.0)
    assert rl.detail(4) == "This workspace has exceeded its API rate limit of 4/2s. Please try again later."
    assert [(q.allowed, q.remaining, q.reset) for q in counts(rl, 5)] == [
        (True, 3, 2),
        (True, 2, 2),
        (True, 1, 2),
        (True, 0, 2),
        (False, 0, 2),
    ]
    clock.now = W0 + 1.5
    assert counts(rl, 1) == [Quota(4, 0, 0, False)]
    clock.now = W0 + 3.0  # half of the next window: floor(4 * 0.5) = 2
    assert [(q.allowed, q.remaining, q.reset) for q in counts(rl, 3)] == [
        (True, 1, 1),
        (True, 0, 1),
        (False, 0, 1),
    ]
    clock.now = W0 + 6.0  # two windows later: nothing weighs
    assert counts(rl, 1) == [Quota(4, 3, 2, True)]


def test_a_limit_of_zero_refuses_everything_counts_nothing_and_reports_no_headers() -> None:
    rl, _ = limiter(0)
    refused = counts(rl, 3)
    assert refused == [Quota(0, 0, 0, allowed=False, reported=False)] * 3
    assert refused[0].headers() == () and refused[0].refusal_headers() == ()
    assert rl.detail(0) == "This workspace has exceeded its API rate limit of 0/1m0s. Please try again later."
    rl.configure(1, 60.0)
    assert counts(rl, 1) == [Quota(1, 0, 60, True)]  # the refusals cost nothing


def test_a_new_limit_keeps_the_counts_a_new_window_starts_afresh() -> None:
    rl, _ = limiter(2)
    assert accepted(counts(rl, 2)) == 2
    rl.configure(5, 60.0)  # Unkey keys its counters by workspace and window length, not by limit
    assert counts(rl, 1) == [Quota(5, 2, 60, True)]
    rl.configure(5, 30.0)
    assert counts(rl, 1) == [Quota(5, 4, 30, True)]


def test_headers() -> None:
    quota = Quota(60, 0, 7, allowed=False)
    assert quota.headers() == (
        ("RateLimit-Limit", "60"),
        ("RateLimit-Remaining", "0"),
        ("RateLimit-Reset", "7"),
    )
    assert quota.refusal_headers() == (*quota.headers(), ("Retry-After", "7"))


def test_an_injected_429_reports_the_limiters_reset() -> None:
    rl, clock = limiter(7)
    clock.now = W0 + 12.25
    assert rl.exhausted() == Quota(7, 0, 47, False)
    assert rl.exhausted(4) == Quota(7, 0, 4, False)
    assert limiter(None)[0].exhausted(2) == Quota(0, 0, 2, False)


def test_the_limit_and_window_are_checked() -> None:
    for bad_limit in (-1, 1.5, True):
        with pytest.raises(ValueError, match="rate_limit must be"):
            check_rate_limit(bad_limit, 60.0)  # type: ignore[arg-type]
    for bad_window in (0, -1.0, 0.0004, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rate_limit_window"):
            check_rate_limit(1, bad_window)
    check_rate_limit(0, 0.001)


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (60_000_000_000, "1m0s"),
        (2_000_000_000, "2s"),
        (500_000_000, "500ms"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (4_530_918_273_645, "1h15m30.918273645s"),  # the example of Go's documentation
        (1_500_000, "1.5ms"),
        (1_500, "1.5µs"),
        (1, "1ns"),
        (0, "0s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_go_duration_strings(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text


def reference(
    accepted_at: dict[str, list[int]], workspace: str, now_ms: int, limit: int, window_ms: int
) -> tuple[bool, int, int]:
    """The formula over a plain log of the accepted requests' times (milliseconds)."""
    start = now_ms // window_ms * window_ms
    log = accepted_at.setdefault(workspace, [])
    current = sum(1 for t in log if start <= t < start + window_ms)
    previous = sum(1 for t in log if start - window_ms <= t < start)
    elapsed = (now_ms - start) / window_ms
    estimate = current + int(previous * (1.0 - elapsed)) + 1
    allowed = estimate <= limit
    if allowed:
        log.append(now_ms)
    reset = (start + window_ms - now_ms) // 1000
    return allowed, limit - estimate if allowed else 0, reset


@pytest.mark.parametrize("seed", range(5))
def test_random_traffic_matches_the_formula(seed: int) -> None:
    rng = random.Random(seed)
    limit, window_ms = rng.choice([(5, 2000), (30, 60_000), (100, 60_000)])
    rl, clock = limiter(limit, window=window_ms / 1000)
    log: dict[str, list[int]] = {}
    now_ms = int(W0 * 1000)
    for _ in range(2000):
        now_ms += rng.choice([0, 0, 1, 7, 50, 333, 1000, window_ms // 3])
        clock.now = now_ms / 1000
        workspace = rng.choice(["ws_a", "ws_a", "ws_b"])
        quota = rl.count(workspace)
        assert quota is not None
        assert (quota.allowed, quota.remaining, quota.reset) == reference(
            log, workspace, now_ms, limit, window_ms
        ), (seed, now_ms - int(W0 * 1000), workspace)
