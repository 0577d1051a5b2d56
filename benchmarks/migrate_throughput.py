"""The migration engine against an ideal client, side by side, on the same emulator build.

Each round starts a fresh emulator (the CLI, in a subprocess) for each contender:

- ``ideal``: pre-serialised bodies posted from many threads (no validation, no dedupe, no outcomes);
- ``engine``: ``run_migration`` from Arrow record batches of hashes, as the operator runs it
  (vectorised validation, deduplication, batching, concurrent sending, Parquet outcomes).

It prints keys/s for each, the engine/ideal ratio per round (the figure that matters on a noisy
machine) and the client CPU the engine spends per key (this process's CPU time; the emulator runs in
its own process). A grid of batch sizes and concurrencies shows where the defaults come from.

    python -m benchmarks.migrate_throughput --keys 100000 --rounds 3
    python -m benchmarks.migrate_throughput --grid   # batch size x concurrency
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import signal
import statistics
import sys
import tempfile
import time

import pyarrow as pa

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
from benchmarks.emulator_throughput import (
    API_ID,
    MIGRATION_ID,
    ROOT_KEY,
    make_bodies,
    run_once,
    start_emulator,
)


def hash_batches(n_keys: int, rows_per_batch: int = 65_536) -> list[pa.RecordBatch]:
    """The same hashes as ``make_bodies(..., "minimal")``, as the record batches a Parquet reader yields."""
    hashes = [
        base64.b64encode(hashlib.sha256(f"sk_bench_{i}".encode()).digest()).decode() for i in range(n_keys)
    ]
    return pa.table({"hash": hashes}).to_batches(max_chunksize=rows_per_batch)


def engine_once(batches: list[pa.RecordBatch], batch_size: int, concurrency: int) -> tuple[float, float]:
    """keys/s and client CPU µs per key of one engine run against a fresh emulator."""
    proc, url = start_emulator()
    try:
        client = UnkeyClient(ROOT_KEY, url, pool_size=concurrency)
        client.liveness()  # connect outside the timing
        keys = sum(b.num_rows for b in batches)
        with tempfile.TemporaryDirectory() as out:
            cpu0, t0 = time.process_time(), time.perf_counter()
            summary = run_migration(
                iter(batches),
                client,
                MigrationConfig(
                    MIGRATION_ID,
                    API_ID,
                    batch_size=batch_size,
                    max_concurrency=concurrency,
                    progress_interval=3600,
                ),
                out,
            )
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if summary.migrated != keys:
            raise RuntimeError(f"engine migrated {summary.migrated} of {keys}: {summary.failed_by_reason}")
        client.close()
        return keys / elapsed, cpu / keys * 1e6
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--ideal-threads", type=int, default=8)
    p.add_argument("--grid", action="store_true", help="batch size x concurrency, one round each")
    args = p.parse_args()

    batches = hash_batches(args.keys)
    if args.grid:
        print(
            f"{args.keys} hash-only keys; engine keys/s (client CPU µs/key) and ratio to ideal in the same row"
        )
        for batch_size in (250, 1000, 2000):
            ideal = run_once(make_bodies(args.keys, batch_size, "minimal"), args.ideal_threads)
            cells = []
            for concurrency in (2, 4, 8):
                rate, cpu = engine_once(batches, batch_size, concurrency)
                cells.append(f"c={concurrency}: {rate:,.0f} ({cpu:.1f} µs) {rate / ideal:.2f}x")
            print(f"batch {batch_size:>5}: ideal {ideal:,.0f} | " + " | ".join(cells), flush=True)
        return 0

    bodies = make_bodies(args.keys, args.batch, "minimal")
    ratios, engine_rates, ideal_rates, cpus = [], [], [], []
    print(
        f"{args.keys} hash-only keys, batch {args.batch}, engine concurrency {args.concurrency}, ideal threads {args.ideal_threads}"
    )
    for r in range(args.rounds):
        ideal = run_once(bodies, args.ideal_threads)
        rate, cpu = engine_once(batches, args.batch, args.concurrency)
        ratios.append(rate / ideal)
        engine_rates.append(rate)
        ideal_rates.append(ideal)
        cpus.append(cpu)
        print(
            f"round {r + 1}: ideal {ideal:,.0f} keys/s, engine {rate:,.0f} keys/s, ratio {rate / ideal:.2f}, client CPU {cpu:.1f} µs/key",
            flush=True,
        )

    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):,.2f} (min {min(xs):,.2f}, max {max(xs):,.2f})"

    print(f"ratio engine/ideal: {spread(ratios)}")
    print(f"engine keys/s: {spread(engine_rates)}; ideal keys/s: {spread(ideal_rates)}")
    print(f"engine client CPU µs/key: {spread(cpus)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
