"""The ledger's memory: ``KnownHashes.load`` of a ledger of 10 million hashes, in a fresh process.

For each size N, builds a ledger directory of N migrated records as several runs of a scheduled DAG
leave it once compacted: one Parquet file of ``LEDGER_SCHEMA`` per run (1 million rows each, row
groups of 100,000 like the segments they were compacted from), random sha256 digests written as the
wire's base64, a key id, a request id a thousand keys. Then a fresh subprocess loads it for the scope
of another run (every hash is another run's: known, to skip) and reports its peak RSS
(``ru_maxrss``), its RSS before and after (``VmRSS``; after, also once Arrow's pool has released
what it keeps for reuse), the peak of Arrow's pool, ``known.nbytes``, the load time, and the
lookup throughput for 1 million digests, half of them known, in batches of 65,536 (a source batch,
as ``run_migration`` looks them up). The ledger lives in a temporary directory, deleted afterwards.

    python -m benchmarks.ledger_memory --hashes 1000000 10000000
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_unkey.migration.ledger import LEDGER_SCHEMA, KnownHashes, LedgerScope
from airflow_provider_unkey.migration.prepare.hashes import encode

WIRE = "sha256_base64"
SEED = 20_261_126
LOOKUP_BATCH = 65_536


def run_digests(run: int, n: int) -> np.ndarray:
    """The ``(n, 32)`` digests recorded by run ``run`` (the same every time: the lookups redraw them)."""
    return np.frombuffer(np.random.default_rng(SEED + run).bytes(32 * n), dtype=np.uint8).reshape(n, 32)


def fixed_width_text(prefix: bytes, body: np.ndarray) -> pa.Array:
    """``prefix`` followed by each row of the ``(n, w)`` ASCII matrix ``body``, as a ``string`` array."""
    n, width = body.shape
    chars = np.empty((n, len(prefix) + width), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    chars[:, len(prefix) :] = body
    offsets = np.arange(0, chars.shape[1] * (n + 1), chars.shape[1], dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])


def run_table(run: int, n: int) -> tuple[LedgerScope, pa.Table]:
    """The records of ``n`` keys migrated by run ``run`` of a scheduled DAG."""
    scope = LedgerScope("bench_ledger", f"scheduled__2026-11-{run + 1:02d}", "migrate")
    rng = np.random.default_rng(SEED + 1000 + run)
    key_ids = np.frombuffer(base64.urlsafe_b64encode(rng.bytes(18 * n)), dtype=np.uint8).reshape(n, 24)
    request_ids = pa.array([f"req_{run}_{i}" for i in range((n + 999) // 1000)])
    started = dt.datetime(2026, 11, run + 1, tzinfo=dt.UTC)
    text = pa.string()
    columns = {
        "hash": encode(run_digests(run, n), WIRE),
        "key_id": fixed_width_text(b"key_", key_ids),
        "reason": pa.nulls(n, text),
        "stage": pa.nulls(n, text),
        "detail": pa.nulls(n, text),
        "source_row": pa.array(np.arange(n, dtype=np.int64)),
        "request_id": request_ids.take(pa.array(np.arange(n) // 1000)),
        "migration_id": pa.repeat(pa.scalar("mig_bench"), n),
        "api_id": pa.repeat(pa.scalar("api_bench"), n),
        "dag_id": pa.repeat(pa.scalar(scope.dag_id), n),
        "run_id": pa.repeat(pa.scalar(scope.run_id), n),
        "task_id": pa.repeat(pa.scalar(scope.task_id), n),
        "map_index": pa.repeat(pa.scalar(-1, pa.int32()), n),
        "try_number": pa.repeat(pa.scalar(1, pa.int32()), n),
        "recorded_at": pa.array(
            np.datetime64(started.replace(tzinfo=None), "us") + np.arange(n) * np.timedelta64(10, "us"),
            pa.timestamp("us", tz="UTC"),
        ),
    }
    return scope, pa.table(columns, schema=LEDGER_SCHEMA)


def build_ledger(root: Path, n: int, rows_per_file: int) -> list[int]:
    """Write a ledger of ``n`` records, one compacted file per run; the rows of each run."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = [min(rows_per_file, n - start) for start in range(0, n, rows_per_file)]
    for run, size in enumerate(sizes):
        scope, table = run_table(run, size)
        name = f"{scope.task_instance_key}-try1-2026110{run % 10}T000000000000Z.parquet"
        pq.write_table(table, root / name, compression="zstd", row_group_size=100_000)
    return sizes


def rss_mib() -> float:
    """This process's resident set now (``VmRSS``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: Path, n: int, first_run_rows: int, lookups: int) -> dict[str, float]:
    """Load the ledger at ``root`` for another run's scope, then time lookups (in this process)."""
    before, peak_before = rss_mib(), peak_mib()
    t0 = time.perf_counter()
    known = KnownHashes.load(root, LedgerScope("bench_ledger", "scheduled__2026-12-01", "migrate"), WIRE)
    load = time.perf_counter() - t0
    after, peak = rss_mib(), peak_mib()
    if known.others_count != n or known.mine_count:
        raise RuntimeError(f"loaded {known.others_count} hashes of other runs, {known.mine_count} mine")
    arrow_peak = pa.default_memory_pool().max_memory() / 2**20
    pa.default_memory_pool().release_unused()
    released = rss_mib()
    # Half known (the first run's digests), half not (drawn afresh), mixed.
    half = min(lookups // 2, first_run_rows)
    fresh = np.frombuffer(np.random.default_rng(SEED - 1).bytes(32 * (lookups - half)), dtype=np.uint8)
    queries = np.concatenate([run_digests(0, first_run_rows)[:half], fresh.reshape(-1, 32)])
    queries = queries[np.random.default_rng(SEED - 2).permutation(len(queries))]
    t0 = time.perf_counter()
    hits = 0
    for start in range(0, len(queries), LOOKUP_BATCH):
        hits += int(known.lookup(queries[start : start + LOOKUP_BATCH]).known.sum())
    lookup = time.perf_counter() - t0
    if hits != half:
        raise RuntimeError(f"{hits} of {len(queries)} digests found, expected {half}")
    return {
        "hashes": n,
        "rss_before_mib": round(before, 1),
        "peak_before_mib": round(peak_before, 1),
        "rss_after_mib": round(after, 1),
        "peak_mib": round(peak, 1),
        "arrow_peak_mib": round(arrow_peak, 1),
        "rss_released_mib": round(released, 1),
        "nbytes": known.nbytes,
        "load_s": round(load, 3),
        "lookups": len(queries),
        "lookups_per_s": round(len(queries) / lookup),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hashes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="ledger sizes")
    p.add_argument("--rows-per-file", type=int, default=1_000_000, help="records a run (a file)")
    p.add_argument("--lookups", type=int, default=1_000_000, help="digests looked up, half known")
    p.add_argument("--one", nargs=3, metavar=("ROOT", "N", "FIRST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        root, n, first = args.one
        print(json.dumps(measure(Path(root), int(n), int(first), args.lookups)))
        return 0
    results = []
    for n in args.hashes:
        tmp = Path(tempfile.mkdtemp(prefix="ledger-memory-"))
        try:
            t0 = time.perf_counter()
            sizes = build_ledger(tmp / "ledger", n, args.rows_per_file)
            built = time.perf_counter() - t0
            disk = sum(f.stat().st_size for f in (tmp / "ledger").iterdir()) / 2**20
            cmd = [sys.executable, "-m", "benchmarks.ledger_memory", "--lookups", str(args.lookups)]
            cmd += ["--one", str(tmp / "ledger"), str(n), str(sizes[0])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        finally:
            shutil.rmtree(tmp)
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        grown = r["peak_mib"] - r["rss_before_mib"]
        kept = r["rss_after_mib"] - r["rss_before_mib"]
        print(
            f"{n:>11,} hashes in {len(sizes)} files ({disk:,.0f} MiB on disk, built in {built:.0f} s): "
            f"load {r['load_s']:.2f} s; peak RSS {r['peak_mib']:,.0f} MiB (+{grown:,.0f} over "
            f"{r['rss_before_mib']:,.0f} after imports: {grown * 2**20 / n:.0f} B/hash); RSS after load "
            f"+{kept:,.0f} MiB ({kept * 2**20 / n:.0f} B/hash); known.nbytes {r['nbytes'] / 2**20:,.0f} MiB "
            f"({r['nbytes'] / n:.0f} B/hash); Arrow pool peak {r['arrow_peak_mib']:,.0f} MiB; RSS once "
            f"the pool released +{r['rss_released_mib'] - r['rss_before_mib']:,.0f} MiB; lookups "
            f"{r['lookups_per_s']:,} digests/s",
            flush=True,
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        extra = b["hashes"] - a["hashes"]
        peak = (b["peak_mib"] - b["rss_before_mib"] - a["peak_mib"] + a["rss_before_mib"]) * 2**20 / extra
        kept = (b["rss_after_mib"] - b["rss_before_mib"] - a["rss_after_mib"] + a["rss_before_mib"]) * 2**20
        print(
            f"growth per extra hash: peak {peak:.0f} B, RSS after load {kept / extra:.0f} B, "
            f"nbytes {(b['nbytes'] - a['nbytes']) / extra:.0f} B; load {b['load_s'] / a['load_s']:.1f}x "
            f"for {b['hashes'] / a['hashes']:.0f}x the hashes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
