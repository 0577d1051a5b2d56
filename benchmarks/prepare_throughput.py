"""The preparer's cost: µs a row of ``KeyPreparer.prepare`` for three shapes of source.

- ``hash only``: one column, the base64 hash;
- ``seven fields``: hash, name, externalId, meta (JSON text), roles (delimited text), expires
  (timestamp), enabled;
- ``all twelve``: the seven, and credits.remaining, the three refill fields and ratelimits (a list
  of structs).

Every row is valid (the vectorised path; the row-by-row fallback is for rows the kernels cannot
decide). Each shape is prepared ``--repeats`` times over ``--rows`` rows in batches of 65,536, in
this process; the figure is the median µs a row with its spread. Shapes alternate, so a noisy
moment spreads over all of them.

    python -m benchmarks.prepare_throughput --rows 200000 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.migration.prepare.preparer import KeyPreparer, resolve_mapping

BATCH = 65_536


def source(rows: int, fields: str, seed: int = 7) -> list[pa.RecordBatch]:
    """Record batches of valid rows with the columns of ``fields``."""
    rng = np.random.default_rng(seed)
    digests = rng.integers(0, 256, (rows, 32), dtype=np.uint8)
    columns: dict[str, pa.Array] = {"hash": hashes.encode(digests, "sha256_base64")}
    if fields in ("seven", "twelve"):
        idx = np.arange(rows)
        columns["name"] = pa.array([f"key {i}" for i in idx])
        columns["externalId"] = pa.array([f"user_{i % 5000}" for i in idx])
        columns["meta"] = pa.array([f'{{"plan":"pro","seats":{i % 50}}}' for i in idx])
        columns["roles"] = pa.array(["admin,reader" if i % 3 else "reader" for i in idx])
        columns["expires"] = pa.array((1_900_000_000_000 + idx).astype("datetime64[ms]"))
        columns["enabled"] = pa.array(idx % 7 != 0)
    if fields == "twelve":
        columns["credits.remaining"] = pa.array(idx % 1000)
        columns["credits.refill.interval"] = pa.array(["daily" if i % 2 else "monthly" for i in idx])
        columns["credits.refill.amount"] = pa.array(100 + idx % 10)
        columns["credits.refill.refillDay"] = pa.array(1 + idx % 28)
        columns["ratelimits"] = pa.array(
            [[{"name": "requests", "limit": 100, "duration": 60_000, "autoApply": True}]] * rows
        )
    table = pa.table(columns)
    return table.to_batches(max_chunksize=BATCH)


def timed(prepare: Callable[[], None]) -> float:
    started = time.perf_counter()
    prepare()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    shapes = {"hash only": "hash", "seven fields": "seven", "all twelve": "twelve"}
    batches = {name: source(args.rows, fields) for name, fields in shapes.items()}
    preparers = {name: KeyPreparer(resolve_mapping(None, data[0].schema)) for name, data in batches.items()}
    for name, data in batches.items():  # warm up, and check every row is valid
        first = 0
        for batch in data:
            _, rejects = preparers[name].prepare(batch, first)
            assert not len(rejects), (name, rejects.details[:3])
            first += batch.num_rows
    results: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(args.repeats):
        for name, data in batches.items():

            def run(name: str = name, data: list[pa.RecordBatch] = data) -> None:
                first = 0
                for batch in data:
                    preparers[name].prepare(batch, first)
                    first += batch.num_rows

            results[name].append(1e6 * timed(run) / args.rows)
    print(f"KeyPreparer.prepare, {args.rows:,} valid rows, batches of {BATCH:,}, {args.repeats} repeats:")
    for name, values in results.items():
        print(
            f"  {name:>12}: {statistics.median(values):.2f} µs a row"
            f" (min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
