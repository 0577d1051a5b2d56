"""The batch size found from the latency per key (:class:`BatchSizer`'s first lever), on simulated
servers whose latency is ``fixed + per_key * keys``, and the engine's use of it against the emulator.
Nothing here bounds a duration: the simulations feed latencies, the emulator tests check sizes and
outcomes."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.config import MigrationConfig
from airflow_provider_unkey.migration.run import run_migration
from airflow_provider_unkey.migration.send.throttle import (
    GAIN,
    LATENCY_GROWTH_BUDGET,
    SAMPLES,
    STEEP,
    BatchSizer,
)
from airflow_provider_unkey.testing import UnkeyEmulator

ROOT, API, MIGRATION = "unkey_root_sizer", "api_sizer", "mig_sizer"
MIGRATE = "/v2/keys.migrateKeys"


def serve(sizer: BatchSizer, latency, rounds: int = 40) -> list[int]:  # type: ignore[no-untyped-def]
    """Answer ``SAMPLES`` full requests at the sizer's size, ``rounds`` times; the sizes it took."""
    sizes = [sizer.size]
    for _ in range(rounds):
        size = sizer.size
        for _ in range(SAMPLES):
            sizer.on_answer(latency(size), size, 200)
        if sizer.size != sizes[-1]:
            sizes.append(sizer.size)
    return sizes


def fixed_plus_per_key(fixed: float, per_key: float):  # type: ignore[no-untyped-def]
    return lambda keys: fixed + per_key * keys


def test_a_mostly_fixed_latency_doubles_the_batch_while_the_time_per_key_falls_by_a_tenth() -> None:
    """50 ms a request and 20 µs a key: doubling from n keys pays while 50 ms / (2n) saves a tenth,
    that is up to n = 4 * 0.05 / 20e-6 = 10,000. The step to 32,000 saved less: the sizer stays there
    (it is still faster than 16,000) and grows no more."""
    sizer = BatchSizer(1000, 50_000)
    sizes = serve(sizer, fixed_plus_per_key(0.05, 20e-6))
    assert sizes == [1000, 2000, 4000, 8000, 16_000, 32_000]
    assert [size for size, _ in sizer.explored] == [1000, 2000, 4000, 8000, 16_000, 32_000]
    assert GAIN == 0.1


def test_a_latency_all_per_key_settles_after_one_step() -> None:
    """Time proportional to the keys: a bigger batch saves nothing, one doubling shows it."""
    sizer = BatchSizer(1000, 50_000)
    assert serve(sizer, fixed_plus_per_key(0.0, 5e-6)) == [1000, 2000]


def test_a_bigger_batch_that_is_slower_per_key_goes_back() -> None:
    """Contention that grows faster than the keys (a server whose time per key rises with the
    batch): the doubling is undone."""
    sizer = BatchSizer(1000, 50_000)
    assert serve(sizer, lambda keys: 1e-6 * keys**1.2) == [1000, 2000, 1000]


@pytest.mark.parametrize(("fixed", "final"), [(0.2, 8000), (0.5, 1000)])
def test_growth_for_the_latency_keeps_a_request_within_its_budget(fixed: float, final: int) -> None:
    """A rejected batch is split and sent again, so growth for the latency stops where a request would
    take more than a second by the time per key seen, however much that time would still fall. With
    50 µs a key: from 8,000 keys (0.6 s) 16,000 would take 1.2 s at 75 µs a key; from 1,000 keys
    (0.55 s) 2,000 would take 1.1 s."""
    sizer = BatchSizer(1000, 50_000)
    latency = fixed_plus_per_key(fixed, 50e-6)
    serve(sizer, latency)
    assert sizer.size == final
    assert latency(sizer.size) <= LATENCY_GROWTH_BUDGET


def test_never_past_the_maximum() -> None:
    sizer = BatchSizer(1000, 5000)
    assert serve(sizer, fixed_plus_per_key(0.2, 1e-6)) == [1000, 2000, 5000]


def test_a_doubling_that_nearly_halves_the_time_per_key_quadruples_next() -> None:
    """200 ms a request and 1 µs a key: from 1,000 to 2,000 keys the time per key fell to half
    (at most ``STEEP`` of it), so the fixed part still dominates and the next step is 4x; at 50,000
    (the maximum) it stops."""
    sizer = BatchSizer(1000, 50_000)
    assert serve(sizer, fixed_plus_per_key(0.2, 1e-6)) == [1000, 2000, 8000, 32_000, 50_000]
    assert STEEP == 0.6


def test_answers_of_the_size_before_do_not_judge_the_new_one() -> None:
    sizer = BatchSizer(1000, 50_000)
    for _ in range(SAMPLES):
        sizer.on_answer(0.05, 1000, 200)
    assert sizer.size == 2000
    for _ in range(5 * SAMPLES):  # still arriving after the doubling, and very fast per key
        sizer.on_answer(0.001, 1000, 200)
    assert sizer.size == 2000 and [size for size, _ in sizer.explored] == [1000]


def test_a_split_steps_back_and_stops_growth_for_the_latency() -> None:
    sizer = BatchSizer(1000, 50_000)
    serve(sizer, fixed_plus_per_key(0.05, 1e-6), rounds=2)
    assert sizer.size == 8000
    sizer.on_split()
    assert sizer.size == 2000
    assert serve(sizer, fixed_plus_per_key(0.05, 1e-6)) == [2000]


def test_a_timeout_halves_and_stops_growth_for_the_latency() -> None:
    sizer = BatchSizer(1000, 50_000)
    serve(sizer, fixed_plus_per_key(0.05, 1e-6), rounds=1)
    assert sizer.on_answer(1.0, 2000, 408) and sizer.size == 1000
    assert serve(sizer, fixed_plus_per_key(0.05, 1e-6)) == [1000]


def test_once_the_rate_limit_grows_the_batch_the_latency_no_longer_decides() -> None:
    sizer = BatchSizer(1000, 50_000)
    sizer.on_answer(0.05, 1000, 200)
    assert sizer.grow() and sizer.size == 2000
    assert serve(sizer, lambda keys: 1e-6 * keys**1.2) == [2000]  # no step back to 1,000


def test_without_explore_only_the_rate_limit_grows_the_batch() -> None:
    sizer = BatchSizer(1000, 50_000, explore=False)
    assert serve(sizer, fixed_plus_per_key(0.05, 1e-6)) == [1000]


# --- the engine, against the emulator ---------------------------------------------------------------------
def b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def runs(sizes: list[int]) -> list[tuple[int, int]]:
    """The sizes in the order sent, as (size, how many in a row): a failure's message says it all."""
    out: list[tuple[int, int]] = []
    for size in sizes:
        out = [*out[:-1], (size, out[-1][1] + 1)] if out and out[-1][0] == size else [*out, (size, 1)]
    return out


def migrate(emu: UnkeyEmulator, tmp_path: Path, keys: int, **settings: object) -> list[int]:
    hashes = [b64(f"sizer-{i}") for i in range(keys)]
    config = MigrationConfig(MIGRATION, API, progress_interval=0, **settings)  # type: ignore[arg-type]
    with UnkeyClient(ROOT, emu.url, pool_size=32) as client:
        summary = run_migration(pa.table({"hash": hashes}).to_batches(), client, config, tmp_path)
    assert summary.migrated == keys and summary.failed == 0
    assert sorted(emu.keys) == sorted(hashes)  # every key stored, once
    return [len(r.hashes) for r in emu.requests if r.path == MIGRATE]


def test_against_a_latency_fixed_per_request_the_engine_sends_bigger_batches(tmp_path: Path) -> None:
    """300 ms a request whatever it carries, far above the emulator's own work for 50 keys even on a
    busy machine: 50 keys a request at first, more once the time per key shows that bigger requests
    cost little more. The first sizes are the configured one. Two requests in flight at most: the
    emulator shares this process (and its GIL) with the client, so on a busy machine more requests in
    flight would make each slower, as if the server queued, while the sizer judges its sizes."""
    with UnkeyEmulator.quick(ROOT, API, MIGRATION) as emu:
        emu.set_faults(latency=0.3)
        sizes = migrate(emu, tmp_path, 20_000, batch_size=50, max_concurrency=2)
    assert sizes[0] == 50
    assert max(sizes) >= 200, runs(sizes)


def test_against_a_latency_per_key_the_engine_keeps_its_batch_size(tmp_path: Path) -> None:
    """0.2 ms a key and nothing fixed: one doubling shows that a bigger batch saves nothing."""
    with UnkeyEmulator.quick(ROOT, API, MIGRATION) as emu:
        emu.set_faults(latency_per_key=0.0002)
        sizes = migrate(emu, tmp_path, 12_000, batch_size=250)
    assert max(sizes) <= 500, runs(sizes)


# --- where the concurrency cap binds ---------------------------------------------------------------------
def test_the_limiter_counts_the_rounds_the_cap_binds() -> None:
    from airflow_provider_unkey.migration.send.throttle import ConcurrencyLimiter

    limiter = ConcurrencyLimiter(4, 4)
    for _ in range(12):  # three rounds of four answers at the floor, at the cap
        limiter.on_answer(0.05, 1000, 200, full=True)
    assert limiter.limit == 4 and limiter.capped_rounds >= 2
    below = ConcurrencyLimiter(2, 64)
    for _ in range(12):
        below.on_answer(0.05, 1000, 200, full=True)
    assert below.capped_rounds == 0  # it grew instead


def test_a_settled_sizer_reopens_from_its_size_and_grows_while_that_pays() -> None:
    sizer = BatchSizer(1000, 50_000)
    assert serve(sizer, fixed_plus_per_key(0.0, 5e-6)) == [1000, 2000]  # settled: nothing to gain
    assert not sizer.exploring
    assert sizer.reopen() and sizer.exploring
    assert not sizer.reopen()  # once at a time
    # The server changed: now its latency is mostly fixed. The reopened sizer grows from 2,000.
    assert serve(sizer, fixed_plus_per_key(0.05, 20e-6)) == [2000, 4000, 8000, 16_000, 32_000]


@pytest.mark.parametrize("stop", ["split", "timeout", "rate limit", "off"])
def test_never_reopened_after_a_split_a_timeout_the_rate_limit_or_with_explore_off(stop: str) -> None:
    sizer = BatchSizer(1000, 50_000, explore=stop != "off")
    serve(sizer, fixed_plus_per_key(0.05, 1e-6), rounds=1)
    if stop == "split":
        sizer.on_split()
    elif stop == "timeout":
        sizer.on_answer(1.0, sizer.size, 408)
    elif stop == "rate limit":
        assert sizer.grow()
    assert not sizer.reopen() and not sizer.exploring


def test_the_engine_reopens_the_sizer_where_the_cap_binds_with_a_growing_wait() -> None:
    from airflow_provider_unkey.migration.send.pacing import RatePacer
    from airflow_provider_unkey.migration.send.sending import REOPEN_AFTER_CAPPED_ROUNDS
    from airflow_provider_unkey.migration.send.throttle import ConcurrencyLimiter
    from airflow_provider_unkey.migration.send.throughput import ThroughputControls

    controls = ThroughputControls()
    controls.limiter = ConcurrencyLimiter(4, 4)
    controls.sizer = BatchSizer(1000, 50_000)
    controls.pacer = RatePacer()
    controls._gate = threading.Condition()
    controls._capped_at_reopen, controls._reopen_after = 0, REOPEN_AFTER_CAPPED_ROUNDS
    serve(controls.sizer, fixed_plus_per_key(0.0, 5e-6))  # settled at 2,000
    reopened = []
    for rounds in range(1, 40):
        controls.limiter.capped_rounds = rounds
        controls._maybe_reopen_sizer()
        if controls.sizer.exploring:
            reopened.append(rounds)
            serve(controls.sizer, fixed_plus_per_key(0.0, 5e-6))  # nothing to gain: settles again
    assert reopened == [3, 9, 21]  # after 3 capped rounds, then 6, then 12
