"""What the ledger costs in throughput: ``run_migration`` with and without one, side by side.

For each emulator latency (0: the client's CPU is the bottleneck; 50 ms: the API's latency is), one
emulator (the CLI, in its own process) serves every run of that case. Runs alternate in pairs, the
order flipped each pair:

- ``without``: ``run_migration`` with no ledger;
- ``with``: as the operator runs it: ``KnownHashes.load`` of a ledger directory on local disk (empty:
  nothing known), a ``LedgerWriter`` with the default flush interval, and ``run_migration``, which
  closes (flushes and compacts) the ledger at the end. All of it is timed.

Every run migrates keys of its own (random digests drawn from a seed of their own, with a name
column), so no key is ``already_exists``. After each ``with`` run, the same input runs again as
another DAG run over the ledger just written: every hash is known, every row is skipped, nothing is
sent. That is the skip path, timed without and with its ``KnownHashes.load``.

It prints keys/s of each contender, the with/without ratio of each pair (the figure that matters on
a noisy machine) and the client CPU per key (this process: the engine's and the ledger's threads).

    python -m benchmarks.ledger_cost --keys 200000 --pairs 6 --latencies 0 0.05 0.2
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter, read_ledger
from airflow_provider_unkey.migration.prepare.hashes import encode
from benchmarks.emulator_throughput import API_ID, MIGRATION_ID, ROOT_KEY, start_emulator

WIRE = "sha256_base64"


def emulator(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The emulator CLI with ``latency`` seconds added per request, and its URL."""
    return start_emulator("--latency", str(latency))


def key_batches(n_keys: int, seed: int, rows_per_batch: int = 65_536) -> list[pa.RecordBatch]:
    """``n_keys`` random sha256 base64 hashes (a namespace per seed) and names, as a reader yields them."""
    digests = np.frombuffer(np.random.default_rng(seed).bytes(32 * n_keys), dtype=np.uint8)
    table = pa.table(
        {"hash": encode(digests.reshape(n_keys, 32), WIRE), "name": [f"key {i}" for i in range(n_keys)]}
    )
    return table.to_batches(max_chunksize=rows_per_batch)


class TimedLedgerWriter(LedgerWriter):
    """A ``LedgerWriter`` that times its background flushes and its close (last flush, compaction)."""

    flush_seconds = 0.0
    close_seconds = 0.0

    def flush(self) -> int:
        t0 = time.perf_counter()
        try:
            return super().flush()
        finally:
            # Not the flush that close() wakes the thread for: close_seconds holds that one.
            if threading.current_thread() is self._thread and not self._stop.is_set():
                self.flush_seconds += time.perf_counter() - t0

    def close(self, compact: bool = True) -> None:
        t0 = time.perf_counter()
        try:
            super().close(compact)
        finally:
            self.close_seconds += time.perf_counter() - t0


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    load_seconds: float = 0.0
    flush_seconds: float = 0.0  # in the background thread, while requests are in flight
    close_seconds: float = 0.0  # after the last response: the last flush and the compaction


def migrate(
    client: UnkeyClient,
    batches: list[pa.RecordBatch],
    work: Path,
    ledger_root: Path | None,
    scope: LedgerScope,
    expect: str,
) -> Run:
    """One ``run_migration`` (with a ledger at ``ledger_root``, or none), timed; checks its outcome."""
    n = sum(b.num_rows for b in batches)
    cpu0, t0 = time.process_time(), time.perf_counter()
    known = ledger = None
    load = 0.0
    if ledger_root is not None:
        known = KnownHashes.load(ledger_root, scope, WIRE)
        load = time.perf_counter() - t0
        ledger = TimedLedgerWriter(ledger_root, scope, migration_id=MIGRATION_ID, api_id=API_ID)
    summary = run_migration(
        iter(batches),
        client,
        MigrationConfig(MIGRATION_ID, API_ID, progress_interval=3600),
        work,
        ledger=ledger,
        known=known,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = summary.skipped if expect == "skipped" else summary.migrated
    if done != n or (expect == "skipped" and summary.requests):
        raise RuntimeError(f"expected {n} {expect}, got {summary}")
    if ledger is None:
        return Run(seconds, cpu)
    return Run(seconds, cpu, load, ledger.flush_seconds, ledger.close_seconds)


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    return f"median {statistics.median(xs):{fmt}} (min {min(xs):{fmt}}, max {max(xs):{fmt}})"


def run_case(latency: float, n_keys: int, pairs: int, concurrency: int) -> None:
    proc, url = emulator(latency)
    runs: dict[str, list[Run]] = {"without": [], "with": [], "skip": []}
    ratios: dict[str, list[float]] = {"without": [], "with": []}  # by which ran first
    print(f"\nemulator latency {latency * 1000:.0f} ms: {n_keys:,} keys a run, {pairs} pairs", flush=True)
    try:
        client = UnkeyClient(ROOT_KEY, url, pool_size=concurrency)
        client.liveness()  # connect outside the timing
        seed = int(latency * 1000) * 1_000_000
        for p in range(pairs):
            order = ("without", "with") if p % 2 == 0 else ("with", "without")
            for name in order:
                seed += 1
                batches = key_batches(n_keys, seed)
                scope = LedgerScope("bench_ledger", f"run-{seed}", "migrate")
                with tempfile.TemporaryDirectory(prefix="ledger-cost-") as tmp:
                    root = Path(tmp) / "ledger" if name == "with" else None
                    runs[name].append(migrate(client, batches, Path(tmp) / "out", root, scope, "migrated"))
                    if root is None:
                        continue
                    recorded = read_ledger(root).num_rows
                    if recorded != n_keys:
                        raise RuntimeError(f"the ledger holds {recorded} rows, expected {n_keys}")
                    # The skip path: the same input as another DAG run, every hash known to the ledger.
                    rerun = LedgerScope("bench_ledger", f"rerun-{seed}", "migrate")
                    runs["skip"].append(migrate(client, batches, Path(tmp) / "rerun", root, rerun, "skipped"))
            without, with_, skip = runs["without"][-1], runs["with"][-1], runs["skip"][-1]
            ratios[order[0]].append(without.seconds / with_.seconds)
            print(
                f"pair {p + 1} ({order[0]} first): without {n_keys / without.seconds:,.0f} keys/s "
                f"({without.cpu_seconds / n_keys * 1e6:.1f} µs CPU/key), with {n_keys / with_.seconds:,.0f} "
                f"keys/s ({with_.cpu_seconds / n_keys * 1e6:.1f} µs CPU/key, background flushes "
                f"{with_.flush_seconds:.2f} s, close {with_.close_seconds:.2f} s), ratio "
                f"{ratios[order[0]][-1]:.3f}; skip path {n_keys / (skip.seconds - skip.load_seconds):,.0f} "
                f"keys/s after a {skip.load_seconds:.2f} s load",
                flush=True,
            )
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)

    def per_key(name: str, what: str) -> list[float]:
        return [getattr(r, what) / n_keys * 1e6 for r in runs[name]]

    every = ratios["without"] + ratios["with"]
    print(f"ratio with/without: {spread(every, '.3f')}")
    for first in ("without", "with"):
        if ratios[first]:
            print(f"  pairs run {first} first: {spread(ratios[first], '.3f')}")
    for name in ("without", "with"):
        rates = [n_keys / r.seconds for r in runs[name]]
        print(
            f"{name:>7}: keys/s {spread(rates)}; client CPU µs/key {spread(per_key(name, 'cpu_seconds'), '.1f')}"
        )
    print(
        f"   with: background flushes {spread([r.flush_seconds for r in runs['with']], '.2f')} s; close "
        f"(last flush, compaction) {spread([r.close_seconds for r in runs['with']], '.2f')} s"
    )
    skip_rates = [n_keys / (r.seconds - r.load_seconds) for r in runs["skip"]]
    print(
        f"skip path (every hash known, nothing sent): keys/s {spread(skip_rates)}; KnownHashes.load of "
        f"{n_keys:,} hashes {spread([r.load_seconds for r in runs['skip']], '.2f')} s; with the load "
        f"{spread([n_keys / r.seconds for r in runs['skip']])} keys/s"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=200_000, help="keys a run (default %(default)s)")
    p.add_argument("--pairs", type=int, default=6, help="with/without pairs a case (default %(default)s)")
    p.add_argument(
        "--latencies",
        type=float,
        nargs="+",
        default=[0.0, 0.05, 0.2],
        help="emulator latency per request, seconds: one case each (default %(default)s)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    args = p.parse_args()
    print(
        f"run_migration with and without a ledger: batch 1000, concurrency {args.concurrency}, "
        "ledger on local disk, flush interval 1 s"
    )
    for latency in args.latencies:
        run_case(latency, args.keys, args.pairs, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
