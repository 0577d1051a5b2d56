"""Rules of the send path that a single wrong line would break unnoticed elsewhere:

* the engine never has more ``keys.migrateKeys`` requests in flight than its concurrency limit (and,
  with work waiting, reaches it);
* the :class:`ConcurrencyLimiter` stays within ``max_concurrency`` inside too, so a 503 after many
  rounds at the cap cuts from the cap;
* the :class:`BatchSizer` never grows past its maximum, and reaches it when the budget allows;
* a 5xx on its own cuts the concurrency by a quarter, once a round.

Nothing here bounds a duration: the limiter and the sizer run on a fake clock, and the engine tests
synchronise on the emulator's and the engine's state (requests are held in their route until the
limit is reached, with a patience that a sane machine never uses up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_unkey import rules
from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter
from airflow_provider_unkey.migration.send.batching import Batch, Batcher
from airflow_provider_unkey.migration.send.sending import MigrationEngine
from airflow_provider_unkey.migration.send.throttle import PROBE_EVERY, BatchSizer, ConcurrencyLimiter
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.migration.test_engine import API, MIGRATE, MIGRATION, ROOT, b64, batch_of
from tests.testing.test_emulator_capacity import max_overlap

#: Retries in milliseconds.
FAST = RetryPolicy(max_attempts=3, max_elapsed=10, initial_wait=0.001, max_wait=0.004, jitter=0.0)
#: Seconds a held request waits for a state before it goes on anyway (never reached on a sane machine).
PATIENCE = 30.0


class Clock:
    """A clock the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the engine's gate, against the emulator --------------------------------------------------------
class WatchedGate(threading.Condition):
    """The engine's gate, noting ``(in flight, limit)`` each time a request takes a place.

    The note is taken inside the critical section that took the place, so it sees the limit the gate
    judged by (the test also makes the limiter change the limit only under this lock). ``waiting``
    counts the workers waiting for a place.
    """

    def __init__(self, engine: MigrationEngine) -> None:
        super().__init__()
        self._engine = engine
        self._before = threading.local()
        self.waiting = 0
        self.entries: list[tuple[int, int]] = []

    def __enter__(self) -> bool:
        entered = super().__enter__()
        self._before.n = self._engine._in_flight
        return entered

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1
            self._before.n = self._engine._in_flight

    def __exit__(self, *exc: Any) -> None:
        n = self._engine._in_flight
        if n > self._before.n:
            self.entries.append((n, self._engine.concurrency()))
        super().__exit__(*exc)


def watch(engine: MigrationEngine) -> WatchedGate:
    gate = WatchedGate(engine)
    engine._gate = gate
    limiter = engine.limiter
    if limiter is not None:
        on_answer = limiter.on_answer

        def serialised(*args: Any, **kwargs: Any) -> None:
            with gate:  # the limit never changes inside a critical section of the gate
                on_answer(*args, **kwargs)

        limiter.on_answer = serialised  # type: ignore[method-assign]
    return gate


class Hold:
    """Holds ``keys.migrateKeys`` requests in their route until ``condition`` held once (checked by the
    waiting requests); if it never does, all go on after :data:`PATIENCE`, and the test's assertions
    say what was not reached.

    ``first_answered``: requests reaching the route before the first answer was logged go on at once (a
    pacer may send one request alone until an answer tells it the rate limit).
    """

    def __init__(
        self, emu: UnkeyEmulator, condition: Callable[[], bool], *, first_answered: bool = False
    ) -> None:
        self.released = threading.Event()
        routes: Any = emu._routes
        original = routes.migrate
        give_up = time.monotonic() + PATIENCE

        def answered() -> bool:
            return any(r.path == MIGRATE for r in emu.requests)

        def migrate(req: Any, body: Any, root: Any) -> Any:
            if not first_answered or answered():
                while not self.released.is_set():
                    if condition() or time.monotonic() > give_up:
                        self.released.set()  # latched: the state was reached once
                    else:
                        time.sleep(0.002)
            return original(req, body, root)

        # The pipeline looks the route up per request.
        setattr(routes, "migrate", migrate)  # noqa: B010


@pytest.fixture
def emu(unkey_emulator: UnkeyEmulator) -> UnkeyEmulator:
    """Root key ``unkey_root_test``, API ``api_test``, migration ``mig_test``: test_engine's names."""
    return unkey_emulator


def engine_for(
    client: UnkeyClient, tmp_path: Path, batch_size: int, **kw: Any
) -> tuple[MigrationEngine, OutcomeWriter]:
    writer = OutcomeWriter(tmp_path)
    batcher = Batcher(MIGRATION, API, batch_size=batch_size, max_request_bytes=rules.MAX_BODY_BYTES)
    return MigrationEngine(client, MIGRATION, API, batcher, writer, retry=FAST, **kw), writer


def small_batches(n: int, size: int) -> list[Batch]:
    return [batch_of([{"hash": b64(f"rule-{b}-{i}")} for i in range(size)], b * size) for b in range(n)]


def run(engine: MigrationEngine, writer: OutcomeWriter, batches: list[Batch]) -> None:
    try:
        engine.run(batches)
    finally:
        writer.close()


@pytest.fixture
def wide_client(emu: UnkeyEmulator) -> Iterator[UnkeyClient]:
    # More connections than any test's limit: the client's pool never hides a request too many.
    c = UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=32)
    yield c
    c.close()


@pytest.mark.parametrize("limit", [1, 3])
def test_without_adaptive_exactly_max_concurrency_requests_are_in_flight(
    emu: UnkeyEmulator, wide_client: UnkeyClient, tmp_path: Path, limit: int
) -> None:
    engine, writer = engine_for(wide_client, tmp_path, 4, max_concurrency=limit, adaptive=False)
    gate = watch(engine)
    # After the first answer, requests wait in their route until ``limit`` are processed at once (or
    # a worker waits for a place: then the gate holds the rest back, and no more will come).
    Hold(emu, lambda: emu.load.in_flight >= limit or gate.waiting > 0, first_answered=True)
    emu.set_faults(latency=0.005)
    batches = small_batches(30, 4)
    run(engine, writer, batches)

    assert writer.migrated_count == 30 * 4
    records = [r for r in emu.requests if r.path == MIGRATE]
    assert len(records) == engine.requests == 30
    # The server saw exactly ``limit`` requests at once at the most: not one more, and it was reached.
    assert emu.load.peak_in_flight == limit
    assert max_overlap(records) == limit
    # So did the engine's gate.
    assert max(n for n, _ in gate.entries) == limit
    assert all(cap == limit for _, cap in gate.entries)


def test_adaptive_never_has_more_in_flight_than_the_limit_at_the_time(
    emu: UnkeyEmulator, wide_client: UnkeyClient, tmp_path: Path
) -> None:
    """The limit starts at 8 under a cap of 12, so workers outnumber it; it moves as answers come
    (slow start, a 502 now and then). Each time a request takes a place, the requests in flight,
    itself included, are at most the limit in force then, and at first they reach it."""
    cap = 12
    engine, writer = engine_for(wide_client, tmp_path, 4, max_concurrency=cap)
    assert engine.limiter is not None
    first_limit = engine.limiter.limit
    assert first_limit < cap  # workers (one per place of the cap) outnumber the limit
    gate = watch(engine)
    # After the first answer (until it states whether there is a rate limit, the engine sends one
    # request and builds two batches ahead), requests wait in their route until the limit is in
    # flight and a worker waits for a place (a gate letting one too many through lets it through
    # before any worker waits).
    Hold(
        emu,
        lambda: engine._in_flight >= engine.concurrency() and gate.waiting > 0,
        first_answered=True,
    )
    emu.set_faults(latency=0.003, error_rate=0.05, error_statuses=(502,))
    run(engine, writer, small_batches(80, 4))

    assert gate.entries, "no request went out"
    over = [(n, limit) for n, limit in gate.entries if n > limit]
    assert not over, f"requests in flight over the limit of the time: {over[:10]}"
    assert (first_limit, first_limit) in gate.entries  # the first limit was reached
    assert emu.load.peak_in_flight <= cap
    assert engine.limiter.peak <= cap


# --- ConcurrencyLimiter: the cap holds inside too ------------------------------------------------------
def one_round(limiter: ConcurrencyLimiter, clock: Clock, latency: float = 0.2) -> None:
    """As many good answers as the limit (at the latency floor): one round, two in slow start."""
    limit = limiter.limit
    for _ in range(limit):
        clock.now += latency / limit
        limiter.on_answer(latency, 1000, 200, full=True)
        assert limiter.peak <= limiter.maximum
        assert limiter.limit <= limiter.maximum


@pytest.mark.parametrize("cap", [4, 16, 30])
def test_many_rounds_at_the_cap_then_a_503_cut_from_the_cap(cap: int) -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(cap, cap, clock=clock)
    rounds = 0
    # Past two probe rounds, and on until a round at the cap is next (not a probe at half of it).
    while rounds < 2 * PROBE_EVERY + 7 or limiter.limit != cap:
        one_round(limiter, clock)
        rounds += 1
        if rounds > 4 * PROBE_EVERY:
            pytest.fail(f"the limit left the cap: {limiter.limit}")
    assert limiter.limit == cap and limiter.peak == cap

    clock.now += 0.2
    limiter.on_answer(0.2, 1000, 503, full=True)
    # 0.75 of the cap, not of a limit that kept growing above it unseen.
    assert limiter.limit == max(1, int(cap * 0.75))
    assert limiter.peak == cap


def test_a_limit_held_at_the_cap_from_below_cuts_from_the_cap_too() -> None:
    """Reaching the cap by growth (slow start from 1), then many rounds there."""
    clock = Clock()
    limiter = ConcurrencyLimiter(1, 10, clock=clock)
    rounds = 0
    while rounds < PROBE_EVERY + 20 or limiter.limit != 10:
        one_round(limiter, clock)
        rounds += 1
        assert rounds <= 4 * PROBE_EVERY
    limiter.on_answer(0.2, 1000, 503, full=True)
    assert limiter.limit == int(10 * 0.75) == 7
    assert limiter.peak == 10


# --- BatchSizer: never past its maximum --------------------------------------------------------------
def grown(sizer: BatchSizer, times: int = 40) -> list[int]:
    sizes = []
    for _ in range(times):
        sizer.grow()
        assert sizer.size <= sizer.maximum
        sizes.append(sizer.size)
    return sizes


@pytest.mark.parametrize(
    ("initial", "maximum", "expected"),
    [
        (100, 1000, [200, 400, 800, 1000]),  # the last doubling is cut to the maximum
        (100, 800, [200, 400, 800]),  # doublings land on it
        (128, 129, [129]),
        (500, 500, []),  # nothing to grow
    ],
)
def test_the_batch_grows_to_its_maximum_and_never_past_it(
    initial: int, maximum: int, expected: list[int]
) -> None:
    sizer = BatchSizer(initial, maximum, budget=1e9)
    sizer.on_answer(0.1, initial, 200)  # a full request's time per key: tiny
    sizes = grown(sizer)
    assert sorted(set(sizes) - {initial}) == expected  # the sizes it took, in order (they only grow)
    assert sizer.size == maximum
    assert sizer.grow() is False and sizer.size == maximum


@pytest.mark.parametrize(
    ("budget", "final"),
    [
        (1000.0, 1000),  # ample
        (7.8125, 1000),  # exactly what 1000 keys take (1/128 s a key): allowed
        (7.8, 512),  # a hair less: the last doubling (to the maximum) would cross it
        (4.0, 512),  # 512 keys take exactly 4 s
        (3.99, 256),
    ],
)
def test_the_batch_reaches_its_maximum_exactly_when_the_budget_allows(budget: float, final: int) -> None:
    sizer = BatchSizer(128, 1000, budget=budget)
    sizer.on_answer(1.0, 128, 200)  # 1/128 s a key, exactly
    grown(sizer)
    assert sizer.size == final


def test_the_maximum_is_at_least_the_configured_batch_size() -> None:
    sizer = BatchSizer(2000, 1000, budget=1e9)
    sizer.on_answer(0.1, 2000, 200)
    assert grown(sizer)[-1] == sizer.maximum == 2000


# --- ConcurrencyLimiter: a 5xx alone cuts, once a round --------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_alone_cuts_the_limit_by_a_quarter(status: int) -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(16, 32, clock=clock)
    limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 12


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_after_good_answers_cuts_the_limit_by_a_quarter(status: int) -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(16, 32, clock=clock)
    for _ in range(5):  # within slow start's first half round (8 answers): the limit holds
        clock.now += 0.01
        limiter.on_answer(0.1, 1000, 200, full=True)
    assert limiter.limit == 16
    limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 12


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_answers_cut_once_a_round(status: int) -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(16, 32, clock=clock)
    limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 12
    # After the cut a round is 12 answers: 10 more 5xx and a 200 end it, with no further cut.
    for _ in range(10):
        limiter.on_answer(0.1, 1000, status, full=True)
        assert limiter.limit == 12
    limiter.on_answer(0.1, 1000, 200, full=True)
    assert limiter.limit == 12  # a round that was cut does not grow
    # A new round: the next 5xx cuts again, by a quarter of the new limit.
    limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 9
    limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 9
