"""The workspace's own production traffic shares the rate limit with the HTTP clients (on a fake clock)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_unkey.testing import ProductionBurst, ProductionStats, UnkeyEmulator
from tests.testing.clocks import W0, FakeClock
from tests.testing.test_emulator_capacity import key, migrate, wait_for


def emulator(clock: FakeClock, **kw: Any) -> UnkeyEmulator:
    """Not started: production runs only when the test advances it."""
    return UnkeyEmulator.quick(rate_limit_clock=clock, **kw)


def offsets(times: tuple[float, ...]) -> list[float]:
    return [round(t - W0, 6) for t in times]


# --- the schedule --------------------------------------------------------------------------------------
def test_a_steady_rate_is_evenly_spaced_and_starts_at_once() -> None:
    clock = FakeClock()
    emu = emulator(clock, production_per_minute=20)
    assert emu.production == ProductionStats("ws_default", 20.0, 0, 0, 0, 0, (), (), None)
    stats = emu.advance_production(W0 + 59.0)
    assert (stats.sent, stats.accepted, stats.refused, stats.until) == (20, 20, 0, W0 + 59.0)  # 0, 3, …, 57
    assert emu.advance_production(W0 + 60.0).sent == 21  # inclusive
    assert emu.advance_production(W0 + 60.0).sent == 21  # a time already reached sends nothing
    assert emu.advance_production(W0 + 10.0).sent == 21  # nor one in the past
    assert emu.production.until == W0 + 60.0


def test_production_counts_against_the_rate_limit_and_is_refused_like_anyone() -> None:
    clock = FakeClock()
    emu = emulator(clock, rate_limit=10, production_per_minute=20)
    stats = emu.advance_production(W0 + 60.0)
    # 0, 3, …, 27 fill the window; 30 … 57 are refused, and so is 60 (the full window still weighs).
    assert (stats.sent, stats.accepted, stats.refused) == (21, 10, 11)
    assert offsets(stats.refusal_times) == [30.0 + 3 * i for i in range(11)]
    assert stats.refused_in_surge == 0
    assert stats.refused_between(W0 + 30.0, W0 + 45.0) == 5
    # 63: floor(10 * 0.95) = 9, room for one; 66: floor(10 * 0.9) = 9 and one in, refused.
    stats = emu.advance_production(W0 + 66.0)
    assert (stats.accepted, stats.refused) == (11, 12)


def test_the_http_clients_see_production_in_remaining_and_keep_their_own_log() -> None:
    clock = FakeClock()
    with emulator(clock, rate_limit=10, production_per_minute=20) as emu:
        clock.now = W0 + 6.0
        # Production due by the request's time counts first, whether its thread got there or not.
        r = migrate(emu, key(1))
        assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "6"  # 10 - (0, 3, 6) - this
        clock.now = W0 + 21.0
        answers = [migrate(emu, key(i)) for i in range(2, 6)]
        # 9, 12, 15, 18, 21 of production and the client's 1: 9 in all, room for one.
        assert [a.status_code for a in answers] == [200, 429, 429, 429]
        assert emu.production.refused == 0
        clock.now = W0 + 27.0
        stats = emu.advance_production()
        assert (stats.sent, stats.accepted, stats.refused) == (10, 8, 2)  # 24 and 27 refused
        assert offsets(stats.refusal_times) == [24.0, 27.0]
        # The HTTP clients' own log and stats: production is in neither.
        assert [rec.status for rec in emu.requests] == [200, 200, 429, 429, 429]
        assert emu.stats().requests == 5 and emu.stats().rate_limited == 3


def test_a_surge_sends_at_its_rate_then_production_returns_to_the_steady_rate() -> None:
    clock = FakeClock()
    emu = emulator(clock, production_per_minute=20)
    clock.now = W0 + 10.0
    emu.surge_production(per_minute=54, seconds=30)
    stats = emu.advance_production(W0 + 60.0)
    assert stats.surges == ((W0 + 10.0, W0 + 40.0),)
    # Steady at 0, 3, 6, 9; the progress toward the next request carries over into the surge
    # (2/3 of an interval left: 0.74 s at 0.9 a second), then one every 1.11 s until 40; then back to
    # one every 3 s, the progress carried over again.
    assert stats.sent == 4 + 27 + 7
    assert emu.production.per_minute == 20.0


def test_refusals_during_a_surge_are_told_apart() -> None:
    clock = FakeClock()
    emu = emulator(clock, rate_limit=15, production_per_minute=6)
    clock.now = W0 + 20.0
    emu.surge_production(per_minute=60, seconds=20)
    stats = emu.advance_production(W0 + 59.0)
    # 0 and 10 steady, 20 … 39 one a second (the 14th on fills the limit), then steady again at 40
    # and 50, refused too: the window is full.
    assert (stats.sent, stats.accepted) == (2 + 20 + 2, 15)
    assert stats.refused_in_surge == stats.refused_between(W0 + 20.0, W0 + 40.0) == 7
    assert stats.refused == 9 and offsets(stats.refusal_times)[-2:] == [40.0, 50.0]


def test_recurring_bursts() -> None:
    clock = FakeClock()
    emu = emulator(clock, production_burst=ProductionBurst(per_minute=120, seconds=5, every=20))
    stats = emu.advance_production(W0 + 59.0)
    # Nothing steady; two a second during 20-25 and 40-45.
    assert stats.sent == 20
    assert stats.surges == ((W0 + 20.0, W0 + 25.0), (W0 + 40.0, W0 + 45.0))
    assert emu.advance_production(W0 + 60.0).surges[-1] == (W0 + 60.0, W0 + 65.0)
    assert emu.production.sent == 21  # the burst's first request, due at 60
    emu.set_production_traffic(60, burst=ProductionBurst(per_minute=0, seconds=10, every=30, first=0))
    stats = emu.advance_production(W0 + 90.0)
    # From 60 (where production was run to, ahead of the clock, still at W0): bursts of silence during 60-70 and 90-100, one a second in between (70 … 89).
    assert stats.sent == 21 + 20
    assert stats.surges[-2:] == ((W0 + 60.0, W0 + 70.0), (W0 + 90.0, W0 + 100.0))


def test_set_production_traffic_replaces_and_none_stops_it() -> None:
    clock = FakeClock()
    emu = emulator(clock, rate_limit=100)
    assert emu.advance_production(W0 + 100.0).sent == 0  # none by default
    clock.now = W0 + 100.0
    emu.set_production_traffic(60)
    emu.surge_production(per_minute=600, seconds=10)
    clock.now = W0 + 105.0
    emu.set_production_traffic(30)  # the surge in progress ends now
    assert emu.production.surges == ((W0 + 100.0, W0 + 105.0),)
    assert emu.production.sent == 1 + 50  # 100 (steady, at once), then ten a second until 105
    clock.now = W0 + 110.0
    emu.set_production_traffic(None)
    stopped = emu.production
    assert stopped.sent == 51 + 3  # 105, 107, 109
    assert stopped.per_minute == 0.0
    assert emu.advance_production(W0 + 1000.0).sent == stopped.sent  # the counters stay, nothing sent
    with pytest.raises(ValueError, match="per_minute"):
        emu.set_production_traffic(-1)
    with pytest.raises(ValueError, match="seconds"):
        emu.surge_production(per_minute=10, seconds=0)


def test_production_of_another_workspace_leaves_this_ones_limit_alone() -> None:
    clock = FakeClock()
    with emulator(clock, rate_limit=2, production_per_minute=600, production_workspace_id="ws_other") as emu:
        clock.now = W0 + 30.0
        assert [migrate(emu, key(i)).status_code for i in range(3)] == [200, 200, 429]
        stats = emu.advance_production()
        assert stats.workspace_id == "ws_other" and (stats.accepted, stats.refused) == (2, 299)
        emu.set_production_traffic(600, workspace_id="ws_default")
        assert emu.production.workspace_id == "ws_default"


def test_without_a_rate_limit_production_is_always_accepted() -> None:
    clock = FakeClock()
    stats = emulator(clock, production_per_minute=120).advance_production(W0 + 10.0)
    assert (stats.sent, stats.accepted, stats.refused) == (21, 21, 0)


def test_the_production_thread_runs_it_until_the_emulator_stops() -> None:
    clock = FakeClock()
    emu = emulator(clock, production_per_minute=60)
    before = set(threading.enumerate())
    with emu:
        clock.now = W0 + 9.0
        wait_for(lambda: emu.production.sent == 10, "the thread ran production to the clock")
    assert not [t for t in set(threading.enumerate()) - before if t.name == "unkey-emulator-production"]
    clock.now = W0 + 100.0
    assert emu.production.sent == 10  # stopped with the emulator: nothing runs it
    emu.start()
    try:
        wait_for(lambda: emu.production.sent == 101, "the thread runs again after a restart")
    finally:
        emu.stop()


@pytest.mark.unkey_emulator(rate_limit=60, production_per_minute=20, rate_limit_clock=FakeClock())
def test_the_fixture_takes_production_from_its_marker(unkey_emulator: UnkeyEmulator) -> None:
    clock = unkey_emulator._limiter._clock  # the marker's fake clock
    assert isinstance(clock, FakeClock)
    clock.now = W0 + 30.0
    r = migrate(unkey_emulator, key(1))
    assert r.headers["RateLimit-Remaining"] == "48"  # production's 0, 3, …, 30 and this request
    assert unkey_emulator.production.sent == 11


def test_bursts_are_checked_and_parsed() -> None:
    assert ProductionBurst.parse("54:30:300") == ProductionBurst(54.0, 30.0, 300.0)
    assert ProductionBurst.parse("54:30:300:0") == ProductionBurst(54.0, 30.0, 300.0, 0.0)
    for text in ("54:30", "54:30:300:0:1", "a:30:300"):
        with pytest.raises(ValueError, match="RATE:SECONDS:EVERY"):
            ProductionBurst.parse(text)
    for args in ((-1, 30, 300), (54, 0, 300), (54, 30, 0), (54, 301, 300), (54, 30, 300, -1)):
        with pytest.raises(ValueError):
            ProductionBurst(*args)
    with pytest.raises(ValueError, match="per_minute"):
        UnkeyEmulator(production_per_minute=float("nan"))
