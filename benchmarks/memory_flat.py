"""Peak memory of a migration as the input grows: it should not grow with the input.

Writes a Parquet file of N hash-only keys, migrates it with ``run_migration`` against the emulator
(in its own process), and reports this process's peak RSS. Each size runs in a fresh subprocess so
that peaks do not carry over. Deduplication keeps 40 bytes per key up to its memory budget (32 MiB
by default) and spills to disk past it; everything else (source, batches, outcomes) is streamed.

    python -m benchmarks.memory_flat --sizes 250000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(n: int) -> dict[str, float]:
    import base64
    import hashlib
    import signal
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_provider_unkey.client import UnkeyClient
    from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
    from airflow_provider_unkey.migration.read import ParquetSource
    from benchmarks.emulator_throughput import API_ID, MIGRATION_ID, ROOT_KEY, start_emulator

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.parquet"
        with pq.ParquetWriter(path, pa.schema([("hash", pa.string())])) as writer:
            for start in range(0, n, 100_000):
                hashes = [
                    base64.b64encode(hashlib.sha256(f"sk_mem_{i}".encode()).digest()).decode()
                    for i in range(start, min(start + 100_000, n))
                ]
                writer.write_table(pa.table({"hash": hashes}))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        proc, url = start_emulator()
        try:
            client = UnkeyClient(ROOT_KEY, url, pool_size=4)
            t0 = time.perf_counter()
            summary = run_migration(
                ParquetSource(str(path)),
                client,
                MigrationConfig(MIGRATION_ID, API_ID, progress_interval=3600),
                Path(tmp) / "out",
            )
            elapsed = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        assert summary.migrated == n, summary
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "keys": n,
        "peak_rss_mib": round(peak, 1),
        "rss_before_mib": round(before, 1),
        "keys_per_s": round(n / elapsed),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    results = []
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_flat", "--one", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{r['keys']:>10,} keys: peak RSS {r['peak_rss_mib']:,.0f} MiB (after setup {r['rss_before_mib']:,.0f} MiB), {r['keys_per_s']:,} keys/s",
            flush=True,
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["keys"] - a["keys"]) * 1024 * 1024
        print(
            f"growth: {growth:.0f} bytes per extra key (dedupe: 40 a key up to its 32 MiB budget, then on disk)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
