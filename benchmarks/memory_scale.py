"""Bounded memory: peak RSS of a dedupe + ledger-lookup pass over N random digests, N = 1M and 10M.

For each N, the parent writes a ledger of N/2 hashes (another DAG run's records: the digests of every
other input batch, one Parquet file a million rows) in a temporary directory. Then, for each budget
(the default, 64 MiB, and ``None``: no limit) a fresh subprocess does what ``run_migration`` does
with them, all of it timed:

- ``KnownHashes.load`` of the ledger (for another run's scope: every hash is known, to skip);
- for each input batch of 65,536 digests (random, except 1% copied from a random earlier batch and
  0.5% from earlier in the same batch): ``DigestSet.add``, then ``KnownHashes.lookup`` of the
  first occurrences.

It checks the counts (duplicates, known hashes) against what the input was made with, and reports
its peak RSS (``VmHWM``, which counts every page the process touched, file-backed ones too), the
RSS after imports, the index sizes in memory and on disk, and the µs a key of the pass and of the
load. The goal (issue 8): with the default budget, peak RSS at 10M at most 1.25x that at 1M.

    python -m benchmarks.memory_scale --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
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

from airflow_provider_unkey.migration.dedupe.digests import DEFAULT_MEMORY_BUDGET, DigestSet
from airflow_provider_unkey.migration.ledger import LEDGER_SCHEMA, KnownHashes, LedgerScope
from airflow_provider_unkey.migration.prepare.hashes import encode

WIRE = "sha256_base64"
SEED = 20_261_208
BATCH = 65_536
CROSS = 0.01  # of a batch, copied from a random earlier batch
INNER = 0.005  # of a batch, copied from earlier in the same batch


def fresh(i: int) -> np.ndarray:
    """Batch ``i``'s own random digests, ``(BATCH, 32)``."""
    return np.frombuffer(np.random.default_rng(SEED + i).bytes(32 * BATCH), dtype=np.uint8).reshape(BATCH, 32)


def batch(i: int, n: int) -> tuple[np.ndarray, int]:
    """The digests of input batch ``i`` (of ``n`` digests in all) and how many of them are copies."""
    size = min(BATCH, n - i * BATCH)
    digests = fresh(i)[:size].copy()
    rng = np.random.default_rng(SEED - 1 - i)
    # Copies go into the second half of a batch, from first halves (never overwritten): each is a
    # duplicate of a digest that did occur.
    half = size // 2
    targets = half + rng.choice(size - half, int(size * (CROSS + INNER)), replace=False)
    cross, inner = (
        (targets[: int(size * CROSS)], targets[int(size * CROSS) :]) if i else (targets[:0], targets)
    )
    if len(cross):
        digests[cross] = fresh(int(rng.integers(0, i)))[rng.integers(0, half, len(cross))]
    digests[inner] = digests[rng.integers(0, half, len(inner))]
    copies = len(cross)
    return digests, copies + len(inner)


def ledger_table(i: int) -> pa.Table:
    """Another DAG run's records of batch ``i``'s own digests (the columns ``KnownHashes.load`` reads)."""
    n = BATCH
    text = pa.string()
    columns = {name: pa.nulls(n, LEDGER_SCHEMA.field(name).type) for name in LEDGER_SCHEMA.names}
    columns["hash"] = encode(fresh(i), WIRE)
    columns["key_id"] = pa.array([f"key_{i}_{j}" for j in range(n)], text)
    for name, value in (
        ("dag_id", "bench_scale"),
        ("run_id", "scheduled__2026-11-01"),
        ("task_id", "migrate"),
    ):
        columns[name] = pa.repeat(pa.scalar(value), n)
    columns["map_index"] = pa.repeat(pa.scalar(-1, pa.int32()), n)
    columns["try_number"] = pa.repeat(pa.scalar(1, pa.int32()), n)
    return pa.table(columns, schema=LEDGER_SCHEMA)


def build_ledger(root: Path, n: int) -> int:
    """The even input batches' own digests as a ledger (a file of about a million rows); rows written."""
    root.mkdir(parents=True)
    batches = range(0, (n + BATCH - 1) // BATCH, 2)
    per_file = max(1, 1_000_000 // BATCH)
    written = 0
    for f in range(0, len(batches), per_file):
        tables = [ledger_table(i) for i in batches[f : f + per_file]]
        pq.write_table(pa.concat_tables(tables), root / f"part-{f:05d}.parquet", row_group_size=100_000)
        written += sum(t.num_rows for t in tables)
    return written


def peak_mib() -> float:
    """This process's peak RSS (``VmHWM``), MiB. Not ``ru_maxrss``: a child inherits its parent's at
    fork, and the parent held the ledger's tables."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: Path, n: int, budget: int | None) -> dict[str, float | int | None]:
    start_rss = peak_mib()
    t0 = time.perf_counter()
    known = KnownHashes.load(
        root, LedgerScope("bench_scale", "scheduled__2026-12-01", "migrate"), WIRE, memory_budget=budget
    )
    load = time.perf_counter() - t0
    after_load = peak_mib()
    dedupe = DigestSet(memory_budget=budget)
    duplicates = known_hits = expect_dup = expect_known = 0
    elapsed = 0.0
    for i in range((n + BATCH - 1) // BATCH):
        digests, copies = batch(i, n)
        rows = np.arange(i * BATCH, i * BATCH + len(digests), dtype=np.int64)
        expect_dup += copies
        expect_known += (len(digests) - copies) if i % 2 == 0 else 0
        t0 = time.perf_counter()
        first = dedupe.add(digests, rows)
        new = first < 0
        seen = known.lookup(digests[new])
        elapsed += time.perf_counter() - t0
        duplicates += int((~new).sum())
        known_hits += int(seen.known.sum())
    if (duplicates, known_hits) != (expect_dup, expect_known):
        raise RuntimeError(
            f"found {duplicates} duplicates and {known_hits} known, expected {expect_dup}, {expect_known}"
        )
    result = {
        "keys": n,
        "budget": budget,
        "rss_imports_mib": round(start_rss, 1),
        "peak_after_load_mib": round(after_load, 1),
        "peak_mib": round(peak_mib(), 1),
        "load_us_per_hash": round(load * 1e6 / max(len(known), 1), 3),
        "pass_us_per_key": round(elapsed * 1e6 / n, 3),
        "dedupe_nbytes": dedupe.nbytes,
        "dedupe_disk": dedupe.disk_bytes,
        "dedupe_spills": dedupe.spills,
        "known_nbytes": known.nbytes,
        "known_disk": known.disk_bytes,
        "duplicates": duplicates,
        "known": known_hits,
    }
    dedupe.close()
    known.close()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--one", nargs=3, metavar=("ROOT", "N", "BUDGET"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        root, n, budget = args.one
        print(json.dumps(measure(Path(root), int(n), None if budget == "none" else int(budget))))
        return 0
    results: dict[tuple[int, str], dict[str, float]] = {}
    for n in args.sizes:
        tmp = Path(tempfile.mkdtemp(prefix="memory-scale-"))
        try:
            hashes = build_ledger(tmp / "ledger", n)
            for label, budget in (("default", str(DEFAULT_MEMORY_BUDGET)), ("unlimited", "none")):
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.memory_scale",
                    "--one",
                    str(tmp / "ledger"),
                    str(n),
                    budget,
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                r = results[(n, label)] = json.loads(out.strip().splitlines()[-1])
                print(
                    f"{n:>11,} keys, ledger {hashes:,}, budget {label:9}: peak RSS {r['peak_mib']:,.0f} MiB "
                    f"(imports {r['rss_imports_mib']:,.0f}, after load {r['peak_after_load_mib']:,.0f}); pass "
                    f"{r['pass_us_per_key']:.3f} µs/key, load {r['load_us_per_hash']:.3f} µs/hash; dedupe "
                    f"{r['dedupe_nbytes'] / 2**20:,.1f} MiB held, {r['dedupe_disk'] / 2**20:,.0f} MiB on disk, "
                    f"{r['dedupe_spills']} spills; ledger index {r['known_nbytes'] / 2**20:,.1f} MiB held, "
                    f"{r['known_disk'] / 2**20:,.0f} MiB on disk",
                    flush=True,
                )
        finally:
            shutil.rmtree(tmp)
    if len(args.sizes) > 1:
        a, b = args.sizes[0], args.sizes[-1]
        for label in ("default", "unlimited"):
            ratio = results[(b, label)]["peak_mib"] / results[(a, label)]["peak_mib"]
            print(f"budget {label:9}: peak RSS {b:,} / {a:,} keys = {ratio:.2f}")
        for n in args.sizes:
            d, u = results[(n, "default")], results[(n, "unlimited")]
            print(
                f"{n:>11,} keys: pass {d['pass_us_per_key']:.3f} µs/key with the default budget vs "
                f"{u['pass_us_per_key']:.3f} unlimited ({d['pass_us_per_key'] - u['pass_us_per_key']:+.3f}); "
                f"load {d['load_us_per_hash']:.3f} vs {u['load_us_per_hash']:.3f} µs/hash"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
