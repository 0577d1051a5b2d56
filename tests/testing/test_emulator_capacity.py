"""The emulator's capacity: N requests processed at once, a FIFO queue, the timeout counting the wait.

Every test synchronises on the emulator's state (requests in flight and queued, answers logged) or on
events, never on a duration bound: the CI machine is shared and may be slow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from airflow_provider_unkey.testing import Faults, RequestRecord, UnkeyEmulator, sha256_base64
from airflow_provider_unkey.testing.__main__ import build_parser, main
from airflow_provider_unkey.testing.capacity import Capacity, check_capacity, percentile
from tests.testing.clocks import FakeClock

AUTH = {"Authorization": "Bearer unkey_root_test"}
MIGRATE = "/v2/keys.migrateKeys"
QUOTA_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
PATIENCE = 30.0  # seconds a test waits for a state before it fails (never reached on a sane machine)


def key(i: int) -> dict[str, Any]:
    return {"hash": sha256_base64(f"sk_live_{i}")}


def migrate(emu: UnkeyEmulator, *keys: dict[str, Any]) -> requests.Response:
    payload = {"migrationId": "mig_test", "apiId": "api_test", "keys": list(keys)}
    return requests.post(f"{emu.url}{MIGRATE}", json=payload, headers=AUTH, timeout=PATIENCE)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll the emulator's state until ``condition`` holds."""
    give_up = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.005)


def concurrently(emu: UnkeyEmulator, batches: list[list[dict[str, Any]]]) -> list[requests.Response]:
    """One migration request per batch, each from its own thread, all let go at once."""
    barrier = threading.Barrier(len(batches))
    answers: list[requests.Response | None] = [None] * len(batches)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait()
            answers[i] = migrate(emu, *batches[i])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not errors, errors
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


class RouteGate:
    """Holds ``keys.migrateKeys`` requests in their route, each holding its capacity slot.

    Every request reaching the route waits there until ``until()`` has held once (checked by the
    waiting requests), or, without ``until``, until :attr:`release` is set. ``only`` limits the gate
    to requests that carry one of those hashes.
    """

    def __init__(
        self,
        emu: UnkeyEmulator,
        until: Callable[[], bool] | None = None,
        only: set[str] | None = None,
    ) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self._until = until
        self._only = only
        routes: Any = emu._routes
        self._original = routes.migrate
        # The pipeline looks the route up per request.
        setattr(routes, "migrate", self._migrate)  # noqa: B010

    def _migrate(self, req: Any, body: Any, root: Any) -> Any:
        if self._only is None or self._only & {k["hash"] for k in body["keys"]}:
            self.reached.set()
            if self._until is None:
                self.release.wait(PATIENCE)
            else:
                give_up = time.monotonic() + PATIENCE
                while not self.release.is_set() and time.monotonic() < give_up:
                    if self._until():
                        self.release.set()  # latched: the state was reached once
                    else:
                        time.sleep(0.002)
        return self._original(req, body, root)


def max_overlap(records: list[RequestRecord]) -> int:
    """The most ``[admitted, released]`` intervals open at once (a release before an admission at a tie)."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.admitted is not None and r.released is not None:
            events += [(r.admitted, 1), (r.released, -1)]
    open_now = peak = 0
    for _, step in sorted(events):
        open_now += step
        peak = max(peak, open_now)
    return peak


def quota(r: requests.Response) -> tuple[str, str, str]:
    present = [name for name in QUOTA_HEADERS if name in r.headers]
    assert present == list(QUOTA_HEADERS), f"only {present} of the RateLimit-* headers: {r.headers}"
    return r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"], r.headers["RateLimit-Reset"]


# --- the queue ---------------------------------------------------------------------------------------
def test_capacity_2_processes_two_at_once_and_queues_the_rest(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(capacity=2, faults=Faults(latency=0.02))
    # The requests reaching their route hold their slots there until 2 are in flight and 4 wait.
    gate = RouteGate(emu, until=lambda: emu.load.in_flight == 2 and emu.load.queued == 4)
    batches = [[key(10 * i + j) for j in range(3)] for i in range(6)]
    answers = concurrently(emu, batches)
    assert gate.reached.is_set()

    assert [a.status_code for a in answers] == [200] * 6
    records = emu.requests
    assert len(records) == 6 and all(r.status == 200 for r in records)
    assert max(r.in_flight for r in records) == 2
    assert max_overlap(records) == 2
    assert emu.load.peak_in_flight == 2 and emu.load.peak_queued == 4
    assert sum(1 for r in records if r.queued > 0) >= 4
    # Processing (the latency included) is spent holding the slot.
    assert all(r.processing >= 0.02 and r.duration >= r.queued + r.processing for r in records)
    assert all(r.fault == "latency" for r in records)
    # Every key migrated exactly once.
    sent = [k["hash"] for batch in batches for k in batch]
    assert sorted(emu.keys) == sorted(sent)
    assert sorted(m["hash"] for a in answers for m in a.json()["data"]["migrated"]) == sorted(sent)
    assert set(emu.hash_counts.values()) == {1}
    assert emu.load.in_flight == 0 and emu.load.queued == 0


def test_capacity_1_serialises_processing(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(capacity=1, faults=Faults(latency=0.01))
    answers = concurrently(emu, [[key(i)] for i in range(5)])
    assert all(a.status_code == 200 for a in answers)
    records = emu.requests
    assert max_overlap(records) == 1 and {r.in_flight for r in records} == {1}
    assert len(emu.keys) == 5


def test_without_capacity_nothing_queues_and_the_load_is_still_counted(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator()
    assert emu.capacity is None
    gate = RouteGate(emu, until=lambda: emu.load.in_flight == 4)
    answers = concurrently(emu, [[key(i)] for i in range(4)])
    assert gate.reached.is_set()
    assert all(a.status_code == 200 for a in answers)
    assert all(r.queued == 0 and r.admitted is not None for r in emu.requests)
    assert emu.load.peak_in_flight == 4 and emu.load.peak_queued == 0
    emu.reset_log()
    assert emu.load.peak_in_flight == 0 and emu.requests == []


def test_raising_the_capacity_lets_the_queue_in(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(capacity=1)
    gate = RouteGate(emu, only={key(1)["hash"]})  # holds the first request until released
    results: list[requests.Response] = []
    first = threading.Thread(target=lambda: results.append(migrate(emu, key(1))), daemon=True)
    first.start()
    assert gate.reached.wait(PATIENCE)
    second = threading.Thread(target=lambda: results.append(migrate(emu, key(2))), daemon=True)
    second.start()
    wait_for(lambda: emu.load.queued == 1, "the second request queued")
    emu.set_capacity(2)  # the waiting request gets a slot although the first still holds its own
    second.join(PATIENCE)
    assert [r.status_code for r in results] == [200]
    assert emu.load.in_flight == 1
    gate.release.set()
    first.join(PATIENCE)
    assert sorted(r.status_code for r in results) == [200, 200]
    assert emu.capacity == 2
    emu.capacity = None
    assert emu.capacity is None and emu.load.capacity is None


# --- the server timeout counts the queue ---------------------------------------------------------------
def test_a_request_queued_past_the_server_timeout_is_408_with_nothing_committed(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(capacity=1, server_timeout=0.2, rate_limit=100, rate_limit_clock=FakeClock())
    # The first request to reach its route holds the only slot until the two others have timed out
    # in the queue.
    gate = RouteGate(emu, until=lambda: emu.stats().queue_timeouts == 2)
    answers = concurrently(emu, [[key(1), key(2)], [key(3)], [key(4)]])
    assert gate.reached.is_set()

    assert [a.status_code for a in answers] == [408, 408, 408]
    for a in answers:
        assert a.json()["error"]["type"].endswith("user/bad_request/request_timeout")
        # Counted against the workspace before it queued: every 408 carries the quota.
        assert quota(a)[0] == "100"
    assert sorted(quota(a)[1] for a in answers) == ["97", "98", "99"]
    records = {r.request_id: r for r in emu.requests}
    faults = sorted(str(r.fault) for r in records.values())
    # Two timed out waiting for a slot, the held one at its commit (past the timeout: nothing committed).
    assert faults == ["None", "queue_timeout", "queue_timeout"]
    assert all(r.queued > 0 for r in records.values() if r.fault == "queue_timeout")
    assert all(r.admitted is None for r in records.values() if r.fault == "queue_timeout")
    assert emu.keys == {}
    stats = emu.stats(MIGRATE)
    assert (stats.timed_out, stats.queue_timeouts, stats.status_counts[408]) == (3, 2, 3)

    # The all-or-nothing commit stays right afterwards: every key migrates once.
    emu.server_timeout = 60.0
    assert migrate(emu, key(1), key(2), key(3), key(4)).status_code == 200
    assert len(emu.keys) == 4


def test_queueing_and_latency_past_the_timeout_408_and_commit_nothing(
    make_emulator: Callable[..., UnkeyEmulator],
) -> None:
    emu = make_emulator(capacity=1, server_timeout=0.2, faults=Faults(latency=0.15))
    # The request holding the slot waits in its route until both others are queued: the last one
    # then waits for a whole latency (0.15 s) of the second before its own 0.15 s, past 0.2 s.
    gate = RouteGate(emu, until=lambda: emu.load.queued == 2)
    batches = [[key(1), key(2)], [key(3), key(4)], [key(5), key(6)]]
    answers = concurrently(emu, batches)
    assert gate.reached.is_set()

    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 408} and 408 in statuses
    for answer, batch in zip(answers, batches, strict=True):
        hashes = [k["hash"] for k in batch]
        if answer.status_code == 200:
            assert [m["hash"] for m in answer.json()["data"]["migrated"]] == hashes
            assert all(h in emu.keys for h in hashes)
        else:
            assert all(h not in emu.keys for h in hashes)
    assert len(emu.keys) == 2 * statuses.count(200)
    assert max_overlap(emu.requests) == 1


# --- rate-limit headers on queued answers ---------------------------------------------------------------
def test_queued_answers_carry_the_rate_limit_headers(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(capacity=1, rate_limit=10, rate_limit_window=60, rate_limit_clock=FakeClock())
    gate = RouteGate(emu, until=lambda: emu.load.queued == 2)
    answers = concurrently(emu, [[key(1)], [key(2)], [key(3)]])
    assert gate.reached.is_set()
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sum(1 for r in emu.requests if r.queued > 0) == 2
    assert sorted(quota(a)[1] for a in answers) == ["7", "8", "9"]
    assert {quota(a)[0] for a in answers} == {"10"}


# --- stats ----------------------------------------------------------------------------------------------
def test_stats_count_statuses_429s_and_408s(make_emulator: Callable[..., UnkeyEmulator]) -> None:
    emu = make_emulator(rate_limit=2, server_timeout=0.5, rate_limit_clock=FakeClock())
    assert migrate(emu, key(1)).status_code == 200
    emu.set_faults(latency=5.0)
    assert migrate(emu, key(2)).status_code == 408  # the latency outlives the timeout
    emu.set_faults(latency=0.0)
    limited = migrate(emu, key(3))
    assert limited.status_code == 429 and quota(limited)[1] == "0"
    stats = emu.stats()
    assert stats.requests == 3
    assert stats.status_counts == {200: 1, 408: 1, 429: 1}
    assert (stats.rate_limited, stats.timed_out, stats.queue_timeouts) == (1, 1, 0)
    assert stats.duration_p95 >= stats.duration_p50 > 0
    assert stats.peak_in_flight == 1 and stats.peak_queued == 0
    # The 429 is answered on arrival: it never took a slot.
    assert [r.admitted is not None for r in emu.requests] == [True, True, False]
    assert emu.stats("/v2/keys.verifyKey").requests == 0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert percentile([5.0], 0.95) == 5.0


# --- the capacity itself ---------------------------------------------------------------------------------
def test_capacity_grants_slots_first_come_first_served() -> None:
    cap = Capacity(1)
    assert cap.acquire(time.monotonic() + PATIENCE) is not None
    order: list[int] = []

    def wait_turn(i: int) -> None:
        slot = cap.acquire(time.monotonic() + PATIENCE)
        assert slot is not None
        order.append(i)
        cap.release()

    threads = []
    for i in range(4):
        t = threading.Thread(target=wait_turn, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        # The next waiter arrives only once this one is queued.
        wait_for(lambda n=i + 1: cap.load().queued == n, f"{i + 1} waiting")  # type: ignore[misc]
    cap.release()
    for t in threads:
        t.join(PATIENCE)
    assert order == [0, 1, 2, 3]
    load = cap.load()
    assert (load.in_flight, load.queued, load.peak_in_flight, load.peak_queued) == (0, 0, 1, 4)


def test_a_waiter_past_its_deadline_leaves_the_queue() -> None:
    cap = Capacity(1)
    held = cap.acquire(time.monotonic() + PATIENCE)
    assert held is not None and held.in_flight == 1
    assert cap.acquire(time.monotonic() + 0.01) is None
    assert cap.load().queued == 0
    cap.release()
    again = cap.acquire(time.monotonic())  # a free slot is granted even at the deadline
    assert again is not None


@pytest.mark.parametrize(("given", "normalised"), [(None, None), (0, None), (1, 1), (8, 8)])
def test_check_capacity(given: int | None, normalised: int | None) -> None:
    assert check_capacity(given) == normalised


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_capacity_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="capacity"):
        UnkeyEmulator(capacity=bad)
    emu = UnkeyEmulator()
    with pytest.raises(ValueError, match="capacity"):
        emu.set_capacity(bad)
    assert emu.capacity is None


# --- the fixture's marker and the CLI -------------------------------------------------------------------
@pytest.mark.unkey_emulator(capacity=3, server_timeout=5.0)
def test_the_fixture_takes_the_capacity_from_its_marker(unkey_emulator: UnkeyEmulator) -> None:
    assert unkey_emulator.capacity == 3 and unkey_emulator.server_timeout == 5.0
    assert migrate(unkey_emulator, key(1)).status_code == 200


def test_the_cli_parses_and_documents_capacity() -> None:
    parser = build_parser()
    required = ["--root-key", "r", "--api-id", "a", "--migration-id", "m"]
    assert parser.parse_args(required).capacity == 0
    assert parser.parse_args([*required, "--capacity", "8"]).capacity == 8
    assert "--capacity" in parser.format_help()


def test_the_cli_refuses_a_negative_capacity(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--root-key", "r", "--api-id", "a", "--migration-id", "m", "--capacity", "-1"]
    assert main(argv) == 2
    assert "capacity" in capsys.readouterr().err
