"""The rate-limit pacer (``migration/pacing.py``) against Unkey's limiter, on a fake clock.

The server here is the formula of ``../shared/unkey/BEHAVIOUR.md`` written out once more, on its own:
windows aligned to the epoch, a request refused when ``current + floor(previous * (1 - elapsed)) + 1 >
limit``, refused requests not counted, ``Reset`` the whole seconds left in the window, truncated.
Production traffic calls it at an even pace beside the migration's tasks. Nothing here bounds a
duration: the simulations run on their own clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from dataclasses import dataclass, field

import pytest

from airflow_provider_unkey.client import MIGRATE_KEYS_PATH
from airflow_provider_unkey.migration.send.pacing import RatePacer, Ticket
from airflow_provider_unkey.retries import RATE_LIMIT_WAIT_FLOOR, Attempt, RateLimitState
from tests.testing.clocks import FakeClock

#: A Unix time in the middle of a minute, so that a run starts inside a window as real runs do.
T0 = 1_800_000_020.0


class UnkeyLimiter:
    """Unkey's workspace limiter (``internal/services/ratelimit``), as BEHAVIOUR.md states it."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.counts: dict[int, int] = {}

    def estimate(self, t: float) -> float:
        """The sliding estimate at ``t`` before flooring (what the workspace uses)."""
        n = math.floor(t / self.window)
        elapsed = t / self.window - n
        return self.counts.get(n, 0) + self.counts.get(n - 1, 0) * (1 - elapsed)

    def count(self, t: float) -> tuple[bool, RateLimitState]:
        n = math.floor(t / self.window)
        elapsed = t / self.window - n
        used = self.counts.get(n, 0) + math.floor(self.counts.get(n - 1, 0) * (1 - elapsed))
        reset = int((n + 1) * self.window - t)  # truncated
        if used + 1 > self.limit:
            return False, RateLimitState(self.limit, 0, reset)
        self.counts[n] = self.counts.get(n, 0) + 1
        return True, RateLimitState(self.limit, self.limit - (used + 1), reset)


@dataclass
class Outcome:
    """What a simulated run saw."""

    accepted: list[float] = field(default_factory=list)  # times the migration's requests counted
    refused: int = 0
    production_sent: int = 0
    production_refused: int = 0
    peak_use: float = 0.0  # the highest estimate the limiter held when a request arrived


def simulate(
    *,
    tasks: int = 1,
    concurrency: int = 8,
    latency: float = 0.05,
    limit: int = 60,
    window: float = 60.0,
    headroom: float = 0.25,
    production: float = 20.0,
    seconds: float = 600.0,
    surge: tuple[float, float, float] | None = None,
    seed: int = 1,
) -> Outcome:
    """``tasks`` tasks of ``concurrency`` workers each, pacing themselves to one workspace beside
    ``production`` requests a minute (``surge``: from, for how long, at what rate a minute), for
    ``seconds`` after two windows of production alone."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    server = UnkeyLimiter(limit, window)
    pacers = [RatePacer(headroom, window, clock=clock, rng=random.Random(seed + i)) for i in range(tasks)]
    start = T0 + 2 * window
    events: list[tuple[float, int, str, tuple[object, ...]]] = []
    order = 0

    def at(t: float, kind: str, *args: object) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, args))

    for task in range(tasks):
        for _ in range(concurrency):
            at(start + rng.uniform(0, 0.01), "try", task)
    at(T0 + rng.uniform(0, 60 / production), "production")
    out = Outcome()
    while events:
        t, _, kind, args = heapq.heappop(events)
        if t > start + seconds:
            break
        clock.now = t
        out.peak_use = max(out.peak_use, server.estimate(t))
        if kind == "production":
            rate = production
            if surge is not None and surge[0] <= t - start < surge[0] + surge[1]:
                rate = surge[2]
            ok, _ = server.count(t)
            out.production_sent += 1
            out.production_refused += not ok
            at(t + 60 / rate, "production")
        elif kind == "try":
            (task,) = args
            ticket, delay = pacers[task].try_acquire()  # type: ignore[index]
            if ticket is None:
                at(t + delay, "try", task)
                continue
            ok, state = server.count(t)
            if ok:
                out.accepted.append(t - start)
            else:
                out.refused += 1
            at(t + latency, "answer", task, ticket, 200 if ok else 429, state)
        else:
            task, ticket, status, state = args
            assert isinstance(ticket, Ticket) and isinstance(state, RateLimitState)
            retry_after = None if status == 200 else float(state.reset)
            pacer = pacers[task]  # type: ignore[index]
            pacer.observe(Attempt(MIGRATE_KEYS_PATH, status, latency, t, state, retry_after), ticket)  # type: ignore[arg-type]
            pacer.release(ticket)
            at(t, "try", task)
    return out


def per_minute(times: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in times) / (end - start) * 60


@pytest.mark.parametrize(
    ("tasks", "concurrency", "latency"),
    [(1, 8, 0.05), (1, 32, 0.05), (1, 16, 0.5), (4, 8, 0.05), (4, 4, 0.2)],
    ids=["one", "one-32", "one-slow", "four-mapped", "four-mapped-slow"],
)
def test_the_migration_uses_its_room_and_leaves_production_its_own(
    tasks: int, concurrency: int, latency: float
) -> None:
    """60 a minute, production at a third, headroom a quarter: the room is 60 * 0.75 - 20 = 25 a
    minute. Over ten minutes: no production request refused, no 429, at least 0.9 of the room used,
    and the workspace never above its target by more than two requests a task (each task learns what
    the others did only from its own answers)."""
    out = simulate(tasks=tasks, concurrency=concurrency, latency=latency)
    room = 60 * 0.75 - 20
    assert out.production_refused == 0
    assert out.refused <= 0.02 * (len(out.accepted) + out.refused)
    assert per_minute(out.accepted, 60, 600) >= 0.9 * room
    assert out.peak_use <= 60 * 0.75 + 2 * tasks, "the headroom was taken"


def test_the_headroom_is_what_the_workspace_never_uses() -> None:
    """The higher the headroom, the less the migration takes: what it uses is the limit less the
    headroom less production, each time."""
    for headroom in (0.0, 0.1, 0.5):
        out = simulate(headroom=headroom, production=6.0, seconds=300)
        room = 60 * (1 - headroom) - 6
        assert 0.9 * room <= per_minute(out.accepted, 60, 300) <= room + 1, headroom
        assert out.production_refused == 0
        assert out.peak_use <= 60 * (1 - headroom) + 1


@pytest.mark.parametrize("tasks", [1, 4])
def test_a_production_surge_finds_room_and_the_migration_takes_it_back_after(tasks: int) -> None:
    """Production surges from a third to 90 % of the limit for 30 s: not one of its requests is
    refused; the migration yields during the surge and takes the room back after it."""
    out = simulate(tasks=tasks, surge=(120.0, 30.0, 54.0), seconds=420)
    assert out.production_refused == 0
    assert out.refused <= 0.02 * (len(out.accepted) + out.refused)
    room = 60 * 0.75 - 20
    during = per_minute(out.accepted, 125, 160)
    after = per_minute(out.accepted, 300, 420)
    assert during <= 0.6 * room, during
    assert after >= 0.9 * room, after


def test_a_compressed_window_paces_the_same_way() -> None:
    """A 2 s window (Retry-After is then mostly 0): the same rules, 30 times as fast."""
    out = simulate(window=2.0, production=20 * 30, seconds=120, concurrency=16)
    assert out.production_refused == 0
    assert out.refused <= 0.05 * (len(out.accepted) + out.refused)
    assert per_minute(out.accepted, 10, 120) >= 0.9 * (60 * 0.75 - 20) * 30


def test_no_burst_when_a_window_ends() -> None:
    """The previous window still weighs when a new one starts: the first seconds of each window get
    no more requests than any other seconds."""
    out = simulate(seconds=600, production=20.0)
    room = 60 * 0.75 - 20
    for minute in range(2, 10):
        boundary = math.ceil((T0 + 120) / 60) * 60 - (T0 + 120) + 60 * minute  # a window's start, run time
        first = sum(boundary <= t < boundary + 6 for t in out.accepted)
        assert first <= room / 10 + 2, (minute, first)


# --- the rules, one at a time ------------------------------------------------------------------------
def answer(
    pacer: RatePacer,
    ticket: Ticket,
    clock: FakeClock,
    status: int,
    state: RateLimitState | None,
    retry_after: float | None = None,
) -> None:
    pacer.observe(Attempt(MIGRATE_KEYS_PATH, status, 0.01, clock.now, state, retry_after), ticket)
    pacer.release(ticket)


def test_before_the_first_answer_one_request_at_a_time() -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(clock=clock)
    first, _ = pacer.try_acquire()
    assert first is not None
    second, delay = pacer.try_acquire()
    assert second is None and delay > 0, "the minute's budget is unknown: nothing more goes yet"
    answer(pacer, first, clock, 200, RateLimitState(600, 599, 30))
    assert pacer.limited and pacer.limit == 600
    assert pacer.try_acquire()[0] is not None


def test_without_rate_limit_headers_nothing_waits() -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(clock=clock)
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    answer(pacer, ticket, clock, 200, None)
    assert all(pacer.try_acquire()[0] is not None for _ in range(1000))
    assert not pacer.limited and pacer.rate() is None and pacer.share() is None


@pytest.mark.parametrize("retry_after", [0.0, 3.0])
def test_a_429_holds_every_request_back_for_its_retry_after_and_at_least_a_second(
    retry_after: float,
) -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(clock=clock, jitter=0.0)
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    answer(pacer, ticket, clock, 429, RateLimitState(60, 0, retry_after), retry_after)
    wait = max(retry_after, RATE_LIMIT_WAIT_FLOOR)
    assert pacer.refused == 1 and pacer.counted == 0, "a refused request does not count"
    ticket, delay = pacer.try_acquire()
    assert ticket is None and delay == pytest.approx(wait), "Retry-After: 0 is not retried at once"
    clock.now += wait - 0.01
    assert pacer.try_acquire()[0] is None


def test_the_jitter_after_a_429_differs_between_tasks() -> None:
    waits = set()
    for seed in range(5):
        clock = FakeClock(T0)
        pacer = RatePacer(clock=clock, jitter=0.5, rng=random.Random(seed))
        ticket, _ = pacer.try_acquire()
        assert ticket is not None
        answer(pacer, ticket, clock, 429, RateLimitState(60, 0, 0), 0.0)
        _, delay = pacer.try_acquire()
        assert RATE_LIMIT_WAIT_FLOOR <= delay <= RATE_LIMIT_WAIT_FLOOR + 0.5
        waits.add(round(delay, 6))
    assert len(waits) > 1


def test_others_that_rise_make_it_wait_at_once_and_others_that_fall_give_room_back() -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(0.25, clock=clock)
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    answer(pacer, ticket, clock, 200, RateLimitState(100, 79, 30))  # others use 20 of 100
    clock.now += 2.0
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    # Production surged: the workspace now uses 80 of 100, over the 75 the migration aims at.
    answer(pacer, ticket, clock, 200, RateLimitState(100, 20, 28))
    assert pacer.try_acquire()[0] is None, "yields on the answer that shows the rise"
    assert pacer.peak_workspace_share == pytest.approx(0.8)
    # Twenty seconds later production is back to 20: the next answer says so, and the room is back.
    clock.now += 20.0
    for _ in range(50):
        ticket, delay = pacer.try_acquire()
        if ticket is not None:
            break
        clock.now += delay
    assert ticket is not None, "a lone request asks what the room is"
    answer(pacer, ticket, clock, 200, RateLimitState(100, 76, 8))
    clock.now += 60 / (75 - 24)  # an even share of the window, for a room of 75 less 24 in use
    assert pacer.try_acquire()[0] is not None


@pytest.mark.parametrize(
    ("remaining", "gaps"),
    [
        # Others use 80 of 100, more than the 75 the migration aims at: a probe now and then (every
        # 15 s at first, then 30, then once a window), as it cannot take the workspace past 87.5.
        (19, [15.0, 30.0, 60.0, 60.0]),
        # Others use 94: a probe could take the workspace into the last half of the headroom, so it
        # waits until two windows passed without a word.
        (5, [120.0, 120.0, 120.0]),
    ],
    ids=["room-for-a-probe", "no-room-for-a-probe"],
)
def test_when_others_leave_no_room_a_lone_probe_asks_now_and_then(remaining: int, gaps: list[float]) -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(0.25, clock=clock)
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    answer(pacer, ticket, clock, 200, RateLimitState(100, remaining, 30))
    sent = [clock.now]
    while clock.now < T0 + 600:
        ticket, delay = pacer.try_acquire()
        if ticket is None:
            clock.now += delay
            continue
        sent.append(clock.now)
        assert ticket.probe
        answer(pacer, ticket, clock, 200, RateLimitState(100, remaining, 30))
    seen = [b - a for a, b in itertools.pairwise(sent)]
    assert seen[: len(gaps)] == pytest.approx(gaps, abs=0.2), seen


def test_a_long_surge_of_production_below_the_limit_is_never_refused() -> None:
    """Production at 90 % of the limit for two and a half minutes, far more than the headroom: the
    tasks stop sending and their part fades as production's grows, so production is never refused."""
    for tasks in (1, 4):
        out = simulate(tasks=tasks, surge=(120.0, 150.0, 54.0), seconds=420)
        assert out.production_refused == 0, tasks
        assert out.refused <= 0.02 * (len(out.accepted) + out.refused)


def test_acquire_gives_up_when_the_run_stops_or_its_time_is_up() -> None:
    clock = FakeClock(T0)
    pacer = RatePacer(clock=clock, jitter=0.0)
    ticket, _ = pacer.try_acquire()
    assert ticket is not None
    answer(pacer, ticket, clock, 429, RateLimitState(10, 0, 30), 30.0)
    stop = threading.Event()
    stop.set()
    assert pacer.acquire(stop) is None
    assert pacer.acquire(threading.Event(), deadline=0.0) is None
