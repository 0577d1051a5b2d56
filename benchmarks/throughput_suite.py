"""Throughput against the peers, in one command: ``make bench-throughput``.

    python -m benchmarks.throughput_suite            # the full suite (~15 minutes on 2 cores)
    python -m benchmarks.throughput_suite --smoke    # 2,000 keys, one repeat: does every contender finish?
    python -m benchmarks.throughput_suite --big      # the headline run at 10M keys as well

Every contender's run gets a fresh emulator (the CLI, in its own process) with the scenario's faults,
and reads the same Parquet file (valid random sha256 base64 hashes; ``typical`` and ``all`` add fields).
Contenders (``docs/performance.md`` says how each is tuned):

- ``naive``: one request per key, sequential, on a time-boxed sample, extrapolated (benchmarks.peers);
- ``sdk``: Unkey's guide, the ``unkey.py`` SDK, sequential batches of 100 (time-boxed where slow);
- ``dlt``: a dlt custom destination (batches of 1,000, rotated files, parallel load jobs);
- ``limit``: pre-serialised 1,000-key bodies posted by 16, 32 and 64 threads: the best of the three;
- ``engine``: ``run_migration`` with ``MigrationConfig`` defaults (only the ids given);
- ``operator``: ``MigrateKeysOperator`` with its defaults, by ``dag.test()`` (benchmarks.operator_worker);
- ``engine c=N``: the engine with ``max_concurrency`` fixed at N, for the concurrency sweep;
- ``engine 1k``: the engine's defaults but batches that grow only for the rate limit, never for the
  latency per key (the sizer's first lever off): what that lever adds, side by side.

Contenders alternate within each repeat (the order rotates from one repeat to the next), so every
ratio is measured side by side; every figure is the median over the repeats with its min and max.
After each run the emulator's own counts are checked: every key the contender reports migrated is
stored, nothing failed, and a run over the whole file stored every key of it, exactly once.

Writes ``throughput-<time>.json`` and ``.csv`` (one row per run) and ``.md`` (the tables) under
``--out`` (default ``benchmarks/results``), the plots under ``--plots`` (default ``docs/performance``),
and prints the tables. Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as dt
import functools
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import (
    DEFAULT_RATE_LIMIT_HEADROOM,
    MigrationConfig,
    run_migration,
)
from airflow_provider_unkey.migration.read import ParquetSource
from airflow_provider_unkey.migration.send import throttle
from benchmarks import peers
from benchmarks._common import (
    API_ID,
    MIGRATION_ID,
    ROOT_KEY,
    Emulator,
    emulator_supports,
    parquet_input,
    spread,
)
from benchmarks.operator_worker import OperatorWorker
from benchmarks.peers import Run

REPO = Path(__file__).resolve().parent.parent
LIMIT_THREADS = (16, 32, 64)
SWEEP = (1, 2, 4, 8, 16, 32, 64)
PEERS = ("naive", "sdk", "dlt", "limit", "engine", "operator")
#: Where a latency per request makes bigger batches pay: the engine with and without that lever.
LEVER = (*PEERS, "engine 1k")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    keys: int
    contenders: tuple[str, ...]
    shape: str = "hash"
    latency: float = 0.0
    capacity: int = 0
    rate_limit: tuple[int, float] | None = None  # requests per window of seconds
    sweep: tuple[int, ...] = ()
    on_latency_plot: bool = False  # a point of keys/s against latency

    @property
    def ceiling_rps(self) -> float | None:
        """Requests a second the server lets through at most (capacity / latency), or under a rate
        limit what a migration may take of it: the limit less the default headroom it leaves free."""
        if self.rate_limit is not None:
            return self.rate_limit[0] / self.rate_limit[1] * (1 - DEFAULT_RATE_LIMIT_HEADROOM)
        if self.capacity and self.latency:
            return self.capacity / self.latency
        return None

    @property
    def constrained(self) -> bool:
        return bool(self.capacity) or self.rate_limit is not None


def scenarios(keys: int, headline: int, *, smoke: bool) -> list[Scenario]:
    if smoke:
        return [Scenario("smoke", "smoke: every contender, latency 0", keys, PEERS, on_latency_plot=True)]
    found = [
        Scenario("latency-0", "hash only, latency 0", keys, PEERS, on_latency_plot=True),
        Scenario(
            "latency-50ms",
            "hash only, latency 50 ms",
            keys,
            LEVER,
            latency=0.05,
            sweep=SWEEP,
            on_latency_plot=True,
        ),
        Scenario(
            "latency-200ms", "hash only, latency 200 ms", keys, LEVER, latency=0.2, on_latency_plot=True
        ),
        Scenario("typical-0", "typical fields, latency 0", keys, PEERS, shape="typical"),
        Scenario("all-fields-0", "every field, latency 0", keys, ("limit", "engine"), shape="all"),
        Scenario(
            "saturated",
            "saturated server: capacity 8, latency 50 ms",
            keys,
            LEVER,
            latency=0.05,
            capacity=8,
            sweep=SWEEP,
        ),
        # Unkey's one-minute window at 600 requests: the migration takes at most 7.5 requests/s of it,
        # leaving the default headroom free (benchmarks.shared_workspace runs it beside production).
        Scenario(
            "rate-limited",
            "rate limit: 600 requests a minute, latency 0",
            keys,
            ("engine", "engine x4", "operator"),
            rate_limit=(600, 60.0),
        ),
    ]
    if headline:
        found.append(
            Scenario(
                f"headline-{headline // 1000}k",
                "hash only, latency 0",
                headline,
                ("limit", "engine", "operator"),
            )
        )
    return found


class Contenders:
    """Runs one contender against a fresh emulator; the operator's worker lives as long as this."""

    def __init__(self, work: Path, smoke: bool) -> None:
        self.work = work
        self.smoke = smoke
        self._worker: OperatorWorker | None = None
        self._bodies: dict[Path, list[bytes]] = {}

    def worker(self) -> OperatorWorker:
        if self._worker is None:
            self._worker = OperatorWorker(self.work / "airflow_home")
        return self._worker

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def bodies(self, path: Path) -> list[bytes]:
        if path not in self._bodies:
            self._bodies = {path: peers.serialise(path)}  # one file's bodies in memory at a time
        return self._bodies[path]

    def run(self, contender: str, url: str, path: Path) -> Run:
        if contender == "naive":
            return peers.naive_loop(url, path, *((200, 5.0) if self.smoke else (2_000, 5.0)))
        if contender == "sdk":
            return peers.sdk_batches(url, path, time_box=10.0)
        if contender == "dlt":
            return peers.dlt_destination(url, path)
        if contender.startswith("limit t="):
            return peers.limit(url, self.bodies(path), int(contender.split("=")[1]))
        if contender == "operator":
            return self.operator(url, path)
        if contender == "engine":
            return engine(url, path, None)
        if contender == "engine 1k":
            with batches_grown_only_for_the_rate_limit():
                return engine(url, path, None)
        if contender.startswith("engine c="):
            return engine(url, path, int(contender.split("=")[1]))
        if contender == "engine x4":
            return engines_sharing(url, path, 4)
        raise ValueError(contender)

    def operator(self, url: str, path: Path) -> Run:
        out = Path(tempfile.mkdtemp(prefix="op-", dir=self.work))
        try:
            answer = self.worker().run(url, path, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        s = answer["summary"]
        run = Run(s["total"], answer["task_seconds"], s["migrated"], s["failed"], s["requests"])
        # Its CPU is the whole dag.test()'s (Airflow's share included): kept apart from the engine's.
        run.detail = {
            "summary": s,
            "dag_test_seconds": answer["dag_test_seconds"],
            "dag_test_cpu_seconds": answer["cpu_seconds"],
        }
        return run


@contextlib.contextmanager
def batches_grown_only_for_the_rate_limit() -> Iterator[None]:
    """The engine's sizer without its growth for the latency per key (benchmark only)."""
    original = throttle.BatchSizer.__init__
    throttle.BatchSizer.__init__ = functools.partialmethod(original, explore=False)  # type: ignore[method-assign]
    try:
        yield
    finally:
        throttle.BatchSizer.__init__ = original  # type: ignore[method-assign]


def engine(url: str, path: Path, max_concurrency: int | None) -> Run:
    """``run_migration`` from the Parquet file as the operator runs it, with the config's defaults
    (or ``max_concurrency`` fixed, not adaptive); client-side request latencies from a session hook."""
    config = MigrationConfig(MIGRATION_ID, API_ID)
    if max_concurrency is not None:
        fixed = {"max_concurrency": max_concurrency}
        if "adaptive" in {f.name for f in dataclasses.fields(config)}:
            fixed["adaptive"] = False  # the cap alone would leave the adaptive limiter below it
        config = dataclasses.replace(config, **fixed)
    client = UnkeyClient(ROOT_KEY, url, pool_size=config.max_concurrency)  # sized as the operator's hook
    client.liveness()  # connect outside the timing
    run = Run(0, 0.0, 0)
    client.session.hooks["response"].append(run.log.hook)
    with tempfile.TemporaryDirectory() as out:
        cpu0, t0 = time.process_time(), time.perf_counter()
        source = ParquetSource(str(path))
        summary = run_migration(source, client, config, out, total_rows=source.count_rows())
        run.seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    client.close()
    run.keys, run.migrated, run.failed, run.requests = (
        summary.total,
        summary.migrated,
        summary.failed,
        summary.requests,
    )
    run.cpu_seconds = cpu
    run.detail = {"summary": summary.as_dict(), "max_concurrency": config.max_concurrency}
    accounted = summary.migrated + summary.failed + summary.skipped + summary.would_send
    if accounted != summary.total:
        run.detail["invariant"] = f"total {summary.total} != {accounted} accounted"
    return run


def engines_sharing(url: str, path: Path, tasks: int) -> Run:
    """``tasks`` engines at once, each with its own client and a share of the file's record batches,
    as mapped tasks on one workspace: together they must stay under the rate limit."""
    batches = pq.read_table(path).to_batches(max_chunksize=65_536)
    shares = [batches[i::tasks] for i in range(tasks)]
    summaries: list[Any] = [None] * tasks
    clients = [
        UnkeyClient(ROOT_KEY, url, pool_size=MigrationConfig(MIGRATION_ID, API_ID).max_concurrency)
        for _ in shares
    ]
    run = Run(0, 0.0, 0)
    for client in clients:
        client.liveness()
        client.session.hooks["response"].append(run.log.hook)

    def one(i: int, out: str) -> None:
        summaries[i] = run_migration(shares[i], clients[i], MigrationConfig(MIGRATION_ID, API_ID), out)

    with tempfile.TemporaryDirectory() as out:
        cpu0, t0 = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=one, args=(i, f"{out}/{i}")) for i in range(tasks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run.seconds, run.cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    for client in clients:
        client.close()
    if any(s is None for s in summaries):
        run.detail["invariant"] = "an engine did not finish"
        return run
    run.keys = sum(s.total for s in summaries)
    run.migrated = sum(s.migrated for s in summaries)
    run.failed = sum(s.failed for s in summaries)
    run.requests = sum(s.requests for s in summaries)
    run.detail = {"summaries": [s.as_dict() for s in summaries], "tasks": tasks}
    return run


def check(run: Run, stats: dict[str, Any], total: int) -> list[str]:
    """What is wrong with a run, judged by the emulator's counts (empty: every key stored once)."""
    problems = []
    if run.detail.get("invariant"):
        problems.append(run.detail["invariant"])
    if stats["keys_stored"] != run.migrated:
        problems.append(f"emulator stored {stats['keys_stored']} keys, the contender reports {run.migrated}")
    if run.failed:
        reasons = run.detail.get("summary", {}).get("failed_by_reason") or "sent twice, or existing"
        problems.append(f"{run.failed} keys failed ({reasons})")
    if not run.sample and run.migrated != total:
        problems.append(f"{run.migrated} of the file's {total} keys migrated")
    return problems


def row(scenario: Scenario, repeat: int, contender: str, run: Run, stats: dict[str, Any]) -> dict[str, Any]:
    statuses = stats["statuses"]
    api_requests = sum(statuses.values()) - run.detail.get("liveness", 0)
    n429, n408 = statuses.get("429", 0), statuses.get("408", 0)
    p95 = run.log.p95()
    return {
        "scenario": scenario.name,
        "repeat": repeat,
        "contender": contender,
        "keys": run.keys,
        "seconds": round(run.seconds, 4),
        "keys_per_second": round(run.keys_per_second, 1),
        "sample": run.sample,
        "migrated": run.migrated,
        "failed": run.failed,
        "failed_by_reason": json.dumps(run.detail.get("summary", {}).get("failed_by_reason") or {}),
        "keys_stored": stats["keys_stored"],
        "emulator_requests": stats["requests"],
        "statuses": json.dumps(statuses, sort_keys=True),
        "http_408": n408,
        "share_429": round(n429 / api_requests, 4) if api_requests else 0.0,
        "accepted_rps": round((api_requests - n429) / run.seconds, 2),
        "keys_per_request": round(run.migrated / max(api_requests - n429, 1), 1),
        "p95_ms": round(p95 * 1000, 2) if p95 is not None else None,
        "cpu_us_per_key": round(run.cpu_seconds / run.keys * 1e6, 2) if run.cpu_seconds is not None else None,
        "max_concurrency": run.detail.get("max_concurrency"),
    }


def measure(
    scenario: Scenario, contenders: Contenders, path: Path, repeats: int, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[str]]:
    names = [c for c in scenario.contenders if c != "limit"]
    if "limit" in scenario.contenders:
        names += [f"limit t={t}" for t in LIMIT_THREADS]
    names += [f"engine c={c}" for c in scenario.sweep]
    if "dlt" in names and not peers.dlt_available():
        say("  dlt: skipped, not installed (pip install -e '.[bench]')")
        names.remove("dlt")
    total = pq.ParquetFile(path).metadata.num_rows
    rows, problems = [], []
    for repeat in range(repeats):
        shift = repeat % len(names)
        for contender in names[shift:] + names[:shift]:
            with Emulator(scenario.latency, scenario.capacity, scenario.rate_limit) as emu:
                run = contenders.run(contender, emu.url, path)
            run.detail.setdefault("liveness", _liveness_calls(contender))
            found = check(run, emu.stats, total)
            problems += [f"{scenario.name} #{repeat + 1} {contender}: {p}" for p in found]
            rows.append(row(scenario, repeat + 1, contender, run, emu.stats))
            say(
                f"  #{repeat + 1} {contender:>13}: {run.keys_per_second:>10,.0f} keys/s"
                + (f" (sample of {run.keys:,})" if run.sample else "")
                + (f"  {'; '.join(found)}" if found else "")
            )
    return rows, problems


def _liveness_calls(contender: str) -> int:
    """Requests a contender makes before its clock starts (liveness, or the SDK's getApi)."""
    if contender.startswith("limit t="):
        return int(contender.split("=")[1])
    if contender == "engine x4":
        return 4
    return 1 if contender in ("naive", "sdk") or contender.startswith("engine") else 0


def summarise(scenario: Scenario, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per contender: keys/s, ratio to the limit (per repeat), and the constrained figures."""
    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_repeat.setdefault(r["repeat"], {})[r["contender"]] = r
    for runs in by_repeat.values():  # the limit of each repeat is its best thread count
        limits = [r for c, r in runs.items() if c.startswith("limit t=")]
        if limits:
            best = max(limits, key=lambda r: r["keys_per_second"])
            runs["limit"] = {**best, "contender": "limit", "threads": int(best["contender"].split("=")[1])}
    out = []
    names = list(dict.fromkeys(c for runs in by_repeat.values() for c in runs))
    for name in names:
        runs = [by_repeat[k][name] for k in sorted(by_repeat) if name in by_repeat[k]]
        entry: dict[str, Any] = {
            "scenario": scenario.name,
            "contender": name,
            "sample": any(r["sample"] for r in runs),
            "keys_per_second": spread([r["keys_per_second"] for r in runs]),
        }
        reference = [
            (r, by_repeat[k].get("limit"))
            for k in sorted(by_repeat)
            if (r := by_repeat[k].get(name)) is not None
        ]
        if all(limit is not None for _, limit in reference):
            entry["ratio_to_limit"] = spread(
                [r["keys_per_second"] / lim["keys_per_second"] for r, lim in reference]
            )  # type: ignore[index]
        if name == "limit":
            entry["threads"] = [r["threads"] for r in runs]
        cpu = [r["cpu_us_per_key"] for r in runs if r["cpu_us_per_key"] is not None]
        if cpu:
            entry["cpu_us_per_key"] = spread(cpu)
        if scenario.constrained:
            p95 = [r["p95_ms"] for r in runs if r["p95_ms"] is not None]
            if p95:
                entry["p95_ms"] = spread(p95)
            entry["http_408"] = spread([r["http_408"] for r in runs])
            entry["share_429"] = spread([r["share_429"] for r in runs])
            entry["accepted_rps"] = spread([r["accepted_rps"] for r in runs])
            entry["keys_per_request"] = spread([r["keys_per_request"] for r in runs])
            entry["ceiling_rps"] = scenario.ceiling_rps
        out.append(entry)
    return out


def _fmt(s: dict[str, float] | None, digits: int = 0, pct: bool = False) -> str:
    if s is None:
        return ""
    k = 100 if pct else 1
    unit = "%" if pct else ""
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median'] * k:,.{digits}f}{unit}"
    return f"{s['median'] * k:,.{digits}f}{unit} ({s['min'] * k:,.{digits}f}-{s['max'] * k:,.{digits}f})"


def markdown(scenario: Scenario, summary: list[dict[str, Any]]) -> str:
    cols = ["contender", "keys/s", "ratio to the limit", "client CPU µs/key"]
    if scenario.constrained:
        cols += ["p95 request ms", "408s", "429 share", "requests/s (ceiling)", "keys/request"]
    lines = [
        f"**{scenario.name}**: {scenario.title}, {scenario.keys:,} keys",
        "",
        "| " + " | ".join(cols) + " |",
    ]
    lines.append("|" + " --- |" * len(cols))
    for e in summary:
        if e["contender"].startswith("limit t="):
            continue
        name = e["contender"]
        if name == "limit":
            name += (
                f" (best of {'/'.join(map(str, LIMIT_THREADS))} threads: {', '.join(map(str, e['threads']))})"
            )
        if e["sample"]:
            name += " *sample, extrapolated*"
        cells = [
            name,
            _fmt(e["keys_per_second"]),
            _fmt(e.get("ratio_to_limit"), 2),
            _fmt(e.get("cpu_us_per_key"), 1),
        ]
        if scenario.constrained:
            cells += [
                _fmt(e.get("p95_ms"), 0),
                _fmt(e["http_408"]),
                _fmt(e["share_429"], 1, pct=True),
                f"{_fmt(e['accepted_rps'], 1)} ({e['ceiling_rps']:g})",
                _fmt(e["keys_per_request"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], by_name: dict[str, Scenario], plots: Path) -> list[str]:
    """keys/s against latency per contender; keys/s against fixed max_concurrency vs the default."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    present = [n for n, s in by_name.items() if s.on_latency_plot]
    if present:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for contender in PEERS:
            xs, ys, lo, hi = [], [], [], []
            for name in present:
                e = next((e for e in results if e["scenario"] == name and e["contender"] == contender), None)
                if e is None:
                    continue
                s = e["keys_per_second"]
                xs.append(by_name[name].latency * 1000)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=contender)
        ax.set_yscale("log")
        ax.set_xlabel("emulator latency per request (ms)")
        ax.set_ylabel("keys/s (median, min to max)")
        ax.set_title("Keys per second against latency (hash-only keys)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = plots / "keys_per_second.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    swept = [n for n, s in by_name.items() if s.sweep]
    if swept:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, name in enumerate(swept):
            colour = f"C{i}"
            xs, ys = [], []
            for c in by_name[name].sweep:
                e = next(
                    (e for e in results if e["scenario"] == name and e["contender"] == f"engine c={c}"), None
                )
                if e is not None:
                    xs.append(c)
                    ys.append(e["keys_per_second"]["median"])
            ax.plot(xs, ys, marker="o", color=colour, label=f"{name}: fixed max_concurrency")
            default = next((e for e in results if e["scenario"] == name and e["contender"] == "engine"), None)
            if default is not None:
                ax.axhline(
                    default["keys_per_second"]["median"],
                    color=colour,
                    linestyle="--",
                    label=f"{name}: defaults",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max_concurrency")
        ax.set_ylabel("keys/s (median)")
        ax.set_title("The engine: fixed concurrency against its defaults")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = plots / "concurrency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], check=False, cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def warm_up(contenders: Contenders, path: Path, names: set[str], say: Callable[[str], None]) -> None:
    """One untimed run of each contender that imports or starts something on first use."""
    for contender in ("engine", "operator", "sdk", "dlt"):
        if contender in names and (contender != "dlt" or peers.dlt_available()):
            with Emulator() as emu:
                contenders.run(contender, emu.url, path)
    say("warmed up: " + ", ".join(sorted(names & {"engine", "operator", "sdk", "dlt"})))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--smoke", action="store_true", help="2,000 keys, one repeat, latency 0: a check, not a measure"
    )
    p.add_argument("--big", action="store_true", help="the headline run at 10M keys instead of 1M")
    p.add_argument("--keys", type=int, default=100_000, help="keys of every scenario but the headline")
    p.add_argument("--headline-keys", type=int, default=1_000_000, help="0: no headline run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, metavar="SCENARIO", help="run only these scenarios")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--plots", type=Path, default=REPO / "docs" / "performance")
    p.add_argument("--inputs", type=Path, default=REPO / "benchmarks" / "results" / "inputs")
    args = p.parse_args(argv)
    if args.smoke:
        args.keys, args.repeats, args.headline_keys = 2_000, 1, 0
    if args.big:
        args.headline_keys = 10_000_000

    def say(text: str) -> None:
        print(text, flush=True)

    chosen = scenarios(args.keys, args.headline_keys, smoke=args.smoke)
    if args.only:
        chosen = [s for s in chosen if s.name in args.only]
    if any(s.capacity for s in chosen) and not emulator_supports("--capacity"):
        say("the emulator has no --capacity yet: the saturated scenario is skipped")
        chosen = [s for s in chosen if not s.capacity]
    started = dt.datetime.now(dt.UTC)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": _git("status", "--porcelain", "--", "airflow_provider_unkey").splitlines(),
        "machine": f"{platform.machine()}, {platform.system()}, cpus {len(__import__('os').sched_getaffinity(0))}",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "smoke": args.smoke,
    }
    say(
        f"engine at {meta['commit'][:10]}{' (with uncommitted changes)' if meta['dirty'] else ''}; {meta['machine']}"
    )
    all_rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    tables: list[str] = []
    problems: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unkey-throughput-") as tmp:
        contenders = Contenders(Path(tmp), args.smoke)
        try:
            if not args.smoke:  # the smoke run checks outcomes; its timings mean nothing anyway
                warm_up(
                    contenders,
                    parquet_input(2_000, "hash", args.inputs),
                    {c for s in chosen for c in s.contenders},
                    say,
                )
            for scenario in chosen:
                path = parquet_input(scenario.keys, scenario.shape, args.inputs)
                say(f"{scenario.name}: {scenario.title}, {scenario.keys:,} {scenario.shape} keys")
                t0 = time.perf_counter()
                rows, found = measure(scenario, contenders, path, args.repeats, say)
                all_rows += rows
                problems += found
                summary = summarise(scenario, rows)
                results += summary
                tables.append(markdown(scenario, summary))
                say(tables[-1] + f"({time.perf_counter() - t0:.0f} s)\n")
        finally:
            contenders.close()
    cpu = [
        f"{scenario.shape} ({scenario.name}) {_fmt(e['cpu_us_per_key'], 1)}"
        for scenario in chosen
        for e in results
        if e["scenario"] == scenario.name and e["contender"] == "engine" and "cpu_us_per_key" in e
        if scenario.latency == 0 and not scenario.constrained
    ]
    if cpu:
        tables.append("Client CPU of the engine's run at latency 0, µs a key: " + "; ".join(cpu) + "\n")
        say(tables[-1])
    meta["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds())
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    base = args.out / f"throughput-{stamp}"
    by_name = {s.name: s for s in chosen}
    document = {
        "meta": meta,
        "scenarios": [dataclasses.asdict(s) for s in chosen],
        "results": results,
        "runs": all_rows,
        "problems": problems,
    }
    try:
        document["plots"] = plot(results, by_name, args.plots)
    except ImportError:
        say("plots: skipped, matplotlib is not installed (pip install -e '.[bench]')")
    base.with_suffix(".json").write_text(json.dumps(document, indent=1))
    with base.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
        writer.writeheader()
        writer.writerows(all_rows)
    base.with_suffix(".md").write_text("\n".join(tables))
    say(f"results: {base}.json, .csv, .md; {meta['seconds']} s in all")
    for problem in problems:
        say(f"CHECK FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
