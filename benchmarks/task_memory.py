"""The whole task's memory: peak RSS of ``airflow dags test`` migrating N hash-only keys at the defaults.

What a worker pod must hold is the whole task, not only the dedupe and ledger indexes
(``benchmarks.memory_scale``): Airflow, the imports, the source, the engine, the outputs, the ledger,
the report and XCom. For each source (Parquet, a PostgreSQL table) and each size, a fresh
``airflow dags test`` process runs ``benchmarks/dags/unkey_bench_memory.py`` against the emulator (in
its own process); its peak RSS is the ``ru_maxrss`` that ``wait4`` reports for it, the kernel's
high-water mark of its resident set (``VmHWM``). Every run is checked: every key migrated.

The baseline is the same task with one key: Airflow, the imports and everything that does not grow
with the input. The goals (issue 17): peak at 10M at most 1.25x that at 1M, at 2M at most 1.25x that
at 200k, and at 1M at most 1.5x the baseline.

    python -m benchmarks.task_memory --sizes 200000 1000000 2000000 10000000
    python -m benchmarks.task_memory --sizes 1000000 --sources parquet --memray /tmp/memray

With ``--memray DIR``, each run goes under ``memray run --native`` (``pip install -e '.[bench]'``) and its
capture is left in DIR: ``memray flamegraph`` or ``memray table`` of it shows who held the memory at
the peak. (memray's own bookkeeping adds to the RSS, so those runs' figures are not the benchmark's.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks._common import API_ID, MIGRATION_ID, ROOT_KEY, Emulator, parquet_input

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "benchmarks" / "dags"
MiB = 2**20


def airflow_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "NO_MKDOCS_2_WARNING": "1",
    }


def airflow_home(home: Path) -> Path:
    """A throwaway ``AIRFLOW_HOME`` with its metadata database made (outside any measured process)."""
    home.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=airflow_env(home),
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return home


@contextmanager
def postgres_table(parquet: Path) -> Iterator[str]:
    """A fresh PostgreSQL database holding the Parquet file's rows as table ``keys``; yields its URI."""
    import psycopg

    from tests.databases import fresh_postgres_database

    with fresh_postgres_database("unkey_bench_memory") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE keys (hash TEXT NOT NULL)")
        with conn.cursor().copy("COPY keys (hash) FROM STDIN") as copy:
            for batch in pq.ParquetFile(parquet).iter_batches(batch_size=100_000, columns=["hash"]):
                copy.write("".join(h + "\n" for h in batch.column(0).to_pylist()))
        yield dsn


def run_task(
    home: Path, keys: int, source: str, where: str, warehouse: str | None, memray: Path | None
) -> dict[str, Any]:
    """One ``airflow dags test`` of the task in a fresh process: its peak RSS and summary."""
    with Emulator() as emulator, tempfile.TemporaryDirectory() as work:
        report = Path(work) / "report.json"
        conf = {
            "source": where,
            "output_path": str(Path(work) / "out"),
            "report": str(report),
            "migration_id": MIGRATION_ID,
            "api_id": API_ID,
        }
        env = airflow_env(home)
        env["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps(
            {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY}
        )
        if warehouse is not None:
            env["AIRFLOW_CONN_BENCH_WAREHOUSE"] = warehouse
        cmd = [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            f"unkey_bench_memory_{source}",
            "-c",
            json.dumps(conf),
        ]
        if memray is not None:
            memray.mkdir(parents=True, exist_ok=True)
            capture = memray / f"{source}_{keys}.bin"
            capture.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "memray", "run", "--native", "-o", str(capture), "-m", *cmd[2:]]
        with (Path(work) / "task.log").open("w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not report.exists():
            tail = (Path(work) / "task.log").read_text()[-3000:]
            raise RuntimeError(f"airflow dags test ended {proc.returncode}:\n{tail}")
        summary = json.loads(report.read_text())["summary"]
    if summary is None or summary.get("migrated") != keys or emulator.stats["keys_stored"] != keys:
        raise RuntimeError(f"not every key migrated: {summary} {emulator.stats}")
    return {"peak_mib": usage.ru_maxrss * 1024 / MiB, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000, 10_000_000])
    parser.add_argument("--sources", nargs="+", choices=["parquet", "sql"], default=["parquet", "sql"])
    parser.add_argument("--memray", type=Path, help="run under memray and keep the captures here")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "unkey-bench-inputs")
    args = parser.parse_args()

    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = airflow_home(Path(tmp) / "airflow")
        for source in args.sources:
            results[source] = {}
            for keys in [1, *args.sizes]:
                parquet = parquet_input(keys, "hash", args.cache)
                table: AbstractContextManager[str | None] = (
                    postgres_table(parquet) if source == "sql" else nullcontext(None)
                )
                with table as warehouse:
                    where = "SELECT hash FROM keys" if warehouse else str(parquet)
                    found = run_task(home, keys, source, where, warehouse, args.memray)
                results[source][keys] = found["peak_mib"]
                print(f"{source:>7} {keys:>11,} keys: peak RSS {found['peak_mib']:,.0f} MiB", flush=True)
                if keys == 1:
                    parquet.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)

    print("\nsource   keys          peak RSS   / one key   / previous   bytes a further key")
    for source, peaks in results.items():
        base = peaks[1]
        previous: tuple[int, float] | None = None
        for keys, peak in peaks.items():
            row = f"{source:>7} {keys:>11,}  {peak:>8,.0f} MiB  {peak / base:>8.2f}x"
            if previous is not None and keys > 1:
                growth = (peak - previous[1]) * MiB / (keys - previous[0])
                row += f"  {peak / previous[1]:>9.2f}x  {growth:>12,.0f}"
            print(row)
            previous = (keys, peak)
        for small, large in ((200_000, 2_000_000), (1_000_000, 10_000_000)):
            if small in peaks and large in peaks:
                print(
                    f"{source:>7} goal: {large:,} / {small:,} = {peaks[large] / peaks[small]:.2f} (at most 1.25)"
                )
        if 1_000_000 in peaks:
            print(f"{source:>7} goal: 1,000,000 / one key = {peaks[1_000_000] / base:.2f} (at most 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
