"""The throughput controls (``migration/throttle.py``), on simulated servers with a fake clock, and the
engine's use of them against the emulator. Nothing here bounds a duration: simulations run on their
own clock, and the emulator tests check outcomes and state."""

from __future__ import annotations

import base64
import hashlib
import math
import statistics
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.migration.config import MigrationConfig
from airflow_provider_unkey.migration.run import run_migration
from airflow_provider_unkey.migration.send.throttle import BatchSizer, ConcurrencyLimiter
from airflow_provider_unkey.testing import UnkeyEmulator

ROOT, API, MIGRATION = "unkey_root_throttle", "api_throttle", "mig_throttle"


class Clock:
    """A clock the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- ConcurrencyLimiter ----------------------------------------------------------------------------------
def drive(limiter: ConcurrencyLimiter, clock: Clock, latency_at: object, rounds: int) -> list[int]:
    """Feed ``rounds`` rounds of answers whose latency depends on the limit; the limits seen."""
    seen = []
    for _ in range(rounds):
        limit = limiter.limit
        latency = latency_at(limit)  # type: ignore[operator]
        for _ in range(limit):
            clock.now += latency / limit
            limiter.on_answer(latency, 1000, 200, full=True)
        seen.append(limiter.limit)
    return seen


def test_the_limit_grows_to_the_cap_while_latency_stays_at_its_floor() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(1, 32, clock=clock)
    seen = drive(limiter, clock, lambda c: 0.2, 40)
    assert seen[:4] == [2, 4, 8, 16]  # doubling while throughput rises
    assert seen[-1] == 32 and limiter.peak == 32


@pytest.mark.parametrize("capacity", [2, 8, 20])
def test_against_a_saturated_server_the_limit_settles_near_its_capacity(capacity: int) -> None:
    """A server that processes ``capacity`` requests at once queues the rest: latency grows with the
    excess. The limit ends near the capacity, where latency stays within 1.6 times its floor (the
    rounds that probe the floor at half the limit aside)."""
    clock = Clock()
    limiter = ConcurrencyLimiter(1, 64, clock=clock)
    seen = drive(limiter, clock, lambda c: 0.05 * max(1.0, c / capacity), 200)
    tail = seen[-50:]
    assert capacity <= statistics.median(tail) <= 1.6 * capacity, tail
    assert max(tail) <= math.ceil(1.6 * capacity) + 1, tail


def test_errors_cut_the_limit_by_a_quarter_once_a_round() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(16, 32, clock=clock)
    for status in (503, 500, None, 408):
        limiter.on_answer(0.1, 1000, status, full=True)
    assert limiter.limit == 12  # one cut for the round, not four
    limiter.on_answer(0.1, 1000, 429, full=True)  # the rate limit is the pacer's business
    assert limiter.limit == 12


def test_small_requests_do_not_set_the_latency_floor() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(4, 32, clock=clock)
    for _ in range(4):
        limiter.on_answer(0.001, 3, 200, full=False)  # tail batches: fast, but say nothing
    assert limiter.limit == 4  # no latency to judge by: hold
    for _ in range(4):
        limiter.on_answer(0.2, 1000, 200, full=True)
    assert limiter.limit == 8
    for _ in range(8):
        limiter.on_answer(0.2, 1000, 200, full=True)  # the floor is 0.2, not the tail's 0.001
    assert limiter.limit == 16


# --- BatchSizer ----------------------------------------------------------------------------------------
def test_the_batch_grows_within_the_time_budget_and_halves_near_the_timeout() -> None:
    sizer = BatchSizer(1000, 50_000, budget=15.0)
    assert not sizer.grow()  # nothing observed yet
    sizer.on_answer(1.0, 1000, 200)  # 1 ms a key
    assert sizer.grow() and sizer.size == 2000
    for _ in range(10):
        sizer.on_answer(sizer.size / 1000, sizer.size, 200)
        sizer.grow()
    assert sizer.size == 8000  # 16,000 keys would take 16 s, over the budget
    assert sizer.on_answer(40.0, 8000, 200) and sizer.size == 4000  # near the 60 s timeout: halve
    assert sizer.on_answer(1.0, 4000, 408) and sizer.size == 2000
    for _ in range(10):
        sizer.on_answer(1.0, 100, 408)
    assert sizer.size == 125  # never below an eighth of the configured size


# --- the engine ----------------------------------------------------------------------------------------
def b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_under_a_rate_limit_the_engine_paces_and_grows_its_batches(tmp_path: Path) -> None:
    """3,000 keys, 100 a request at first, against 10 requests a second: the engine waits for the
    pace instead of collecting 429s, then puts more keys in each request; every key once."""
    hashes = [b64(f"paced-{i}") for i in range(3000)]
    source = pa.table({"hash": hashes}).to_batches(max_chunksize=500)
    with UnkeyEmulator.quick(ROOT, API, MIGRATION, rate_limit=10, rate_limit_window=1.0) as emu:
        client = UnkeyClient(ROOT, emu.url, retry=RetryPolicy(max_attempts=8, initial_wait=0.01, jitter=0.0))
        config = MigrationConfig(
            MIGRATION, API, batch_size=100, progress_interval=0, rate_limit_window=1.0, rate_limit_headroom=0
        )
        lines: list[str] = []
        summary = run_migration(source, client, config, tmp_path, emit=lines.append)
        stored = set(emu.keys)
    assert summary.migrated == 3000 and summary.failed == 0
    assert stored == set(hashes)
    assert summary.throttle["paced_seconds"] > 0
    assert summary.throttle["final_batch_size"] > 100
    assert any("paced to" in line and "keys a request" in line for line in lines)


def test_without_adaptive_the_engine_keeps_its_settings(tmp_path: Path) -> None:
    hashes = [b64(f"fixed-{i}") for i in range(2000)]
    with UnkeyEmulator.quick(ROOT, API, MIGRATION) as emu:
        client = UnkeyClient(ROOT, emu.url)
        config = MigrationConfig(MIGRATION, API, batch_size=100, max_concurrency=3, adaptive=False)
        summary = run_migration(pa.table({"hash": hashes}).to_batches(), client, config, tmp_path)
    assert summary.migrated == 2000
    assert summary.throttle["final_concurrency"] == summary.throttle["peak_concurrency"] == 3
    assert summary.throttle["final_batch_size"] == 100
    assert summary.requests == 20


def test_after_a_change_of_batch_size_the_floor_is_measured_at_half_the_limit() -> None:
    """A server that serves 8 requests at once, 50 ms each, queues the rest. After the batch size
    changed, a floor learnt at 16 in flight would be the queue's 100 ms, and the limiter would see no
    queue; learnt at 8 (half the limit, one round), it is 50 ms, and 16 in flight read as a queue."""
    clock = Clock()
    limiter = ConcurrencyLimiter(16, 32, clock=clock)

    def latency(in_flight: int) -> float:
        return 0.05 * math.ceil(in_flight / 8)

    limiter.forget_floor()
    assert limiter.limit == 8  # the probe round
    for _ in range(8):
        clock.now += 0.01
        limiter.on_answer(latency(limiter.limit), 1000, 200, full=True, started=clock.now)
    assert limiter.limit == 16  # back to the limit it had
    for _ in range(64):
        clock.now += 0.01
        limiter.on_answer(latency(limiter.limit), 1000, 200, full=True, started=clock.now)
    assert limiter.limit < 16  # the queue was seen
