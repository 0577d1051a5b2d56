"""A migration beside production on one workspace rate limit: ``make bench-shared``.

    python -m benchmarks.shared_workspace                  # every scenario, 3 repeats (~25 minutes)
    python -m benchmarks.shared_workspace --repeats 1 --scenarios steady,compressed
    python -m benchmarks.shared_workspace --smoke          # small and compressed: does it all run?

The emulator runs Unkey's workspace limiter (60 requests a minute, the real one-minute window aligned
to the epoch, the sliding estimate) and the workspace's own production traffic, ``keys.verifyKey``
calls at a third of the limit, evenly spaced, counted against the same limit (their refusals counted
apart from the migration's). Production runs alone for one window first, so that its share is
established when the migration starts, as it would be in a real workspace. The migration is
``run_migration`` with ``MigrationConfig`` defaults (only the ids given; ``rate_limit_window`` too in the
compressed scenario), over 200,000 hash-only keys.

Scenarios:

- ``steady``: one task;
- ``surge``: one task, and production surges to 90 % of the limit for 30 s, 6 s into the run; its
  refusals are compared with those of the same production traffic without a migration
  (``surge-baseline``, once);
- ``four``: four tasks at once, each with a quarter of the keys (as four mapped tasks on four workers:
  each has its own client and pacer and shares nothing with the others but the workspace);
- ``compressed``: the limiter's window compressed to 2 s (``Retry-After`` is then mostly 0), production
  at a third of it.

For each run: production requests sent and refused while the migration ran; the migration's requests
and the share answered 429; keys migrated and given up; the migration's requests a minute, from its
first request to its last, against the room that the headroom and production leave it
(``limit * (1 - headroom) - production``); what the report says of the wait and the share used.
Every figure over the repeats is given as median, min and max. The goals (docs/performance.md) are
checked and the exit status is 1 if one is missed. Writes ``shared-<time>.json`` and ``.md`` under
``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_unkey.client import MIGRATE_KEYS_PATH, UnkeyClient
from airflow_provider_unkey.migration.engine import (
    DEFAULT_RATE_LIMIT_HEADROOM,
    MigrationConfig,
    MigrationSummary,
    run_migration,
)
from airflow_provider_unkey.testing import UnkeyEmulator
from benchmarks._common import API_ID, MIGRATION_ID, ROOT_KEY, parquet_input, spread

LIMIT = 60
PRODUCTION_SHARE = 1 / 3
SURGE_SHARE = 0.9
SURGE_AT, SURGE_SECONDS = 6.0, 30.0
SCENARIOS = ("steady", "surge", "four", "compressed")


@dataclass(frozen=True)
class Scenario:
    """One way of sharing the workspace."""

    name: str
    tasks: int = 1
    window: float = 60.0
    surge: bool = False
    migrate: bool = True

    @property
    def production(self) -> float:
        """Production's requests a minute."""
        return LIMIT * PRODUCTION_SHARE * 60 / self.window

    @property
    def room(self) -> float:
        """The migration's room, requests a minute: the limit less the headroom less production."""
        return LIMIT * 60 / self.window * (1 - DEFAULT_RATE_LIMIT_HEADROOM) - self.production


SCENARIO = {
    "steady": Scenario("steady"),
    "surge": Scenario("surge", surge=True),
    "four": Scenario("four", tasks=4),
    "compressed": Scenario("compressed", window=2.0),
    "surge-baseline": Scenario("surge-baseline", surge=True, migrate=False),
}


@dataclass
class Run:
    """What one run of a scenario measured."""

    scenario: str
    repeat: int
    seconds: float = 0.0
    production_sent: int = 0
    production_refused: int = 0
    requests: int = 0
    refused: int = 0
    migrated: int = 0
    gave_up: int = 0
    failed: int = 0
    requests_per_minute: float = 0.0
    room_per_minute: float = 0.0
    waited_seconds: float = 0.0
    share_peak: float = 0.0
    share_mean: float = 0.0
    workspace_peak: float = 0.0  # the whole workspace's highest use a migration answer stated, 0-1
    final_batch_size: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refused_share(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    @property
    def room_used(self) -> float:
        return self.requests_per_minute / self.room_per_minute if self.room_per_minute else 0.0


def run_scenario(scenario: Scenario, repeat: int, table: pa.Table, work: Path) -> Run:
    """Production alone for a window, then the migration beside it (and a surge, if asked)."""
    emu = UnkeyEmulator.quick(
        ROOT_KEY,
        API_ID,
        MIGRATION_ID,
        rate_limit=LIMIT,
        rate_limit_window=scenario.window,
        production_per_minute=scenario.production,
        freeze_gc=True,
    )
    run = Run(scenario.name, repeat, room_per_minute=scenario.room)
    with emu:
        time.sleep(max(scenario.window, 2.0))  # production alone: its share is in the estimate now
        before = emu.production
        started = time.time()
        surge: threading.Timer | None = None
        if scenario.surge:
            surge = threading.Timer(
                SURGE_AT, emu.surge_production, (LIMIT * SURGE_SHARE * 60 / scenario.window, SURGE_SECONDS)
            )
            surge.start()
        summaries: list[MigrationSummary | None] = [None] * scenario.tasks
        if scenario.migrate:
            shares = [
                table.slice(i * len(table) // scenario.tasks, len(table) // scenario.tasks)
                for i in range(scenario.tasks)
            ]
            config = MigrationConfig(MIGRATION_ID, API_ID, rate_limit_window=scenario.window)
            errors: list[BaseException] = []

            def task(i: int) -> None:
                try:
                    with UnkeyClient(ROOT_KEY, emu.url, pool_size=config.max_concurrency) as client:
                        summaries[i] = run_migration(
                            shares[i].to_batches(max_chunksize=65_536), client, config, work / f"{repeat}-{i}"
                        )
                except BaseException as exc:  # reported below, after the other tasks ended
                    errors.append(exc)

            threads = [threading.Thread(target=task, args=(i,)) for i in range(scenario.tasks)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        if surge is not None:
            surge.join()
            # Wait the surge out, and the window after it, so that its refusals are all counted.
            time.sleep(max(0.0, started + SURGE_AT + SURGE_SECONDS + scenario.window - time.time()))
        run.seconds = time.time() - started
        after = emu.production
        requests = emu.stats(MIGRATE_KEYS_PATH)
        log = [r for r in emu.requests if r.path == MIGRATE_KEYS_PATH]
    run.production_sent = after.sent - before.sent
    run.production_refused = after.refused - before.refused
    run.requests, run.refused = requests.requests, requests.rate_limited
    counted = sorted(r.started for r in log if r.status != 429)
    if len(counted) > 1 and counted[-1] > counted[0]:
        run.requests_per_minute = (len(counted) - 1) / (counted[-1] - counted[0]) * 60
    for summary in summaries:
        if summary is None:
            continue
        run.summaries.append(summary.as_dict())
        run.migrated += summary.migrated
        run.failed += summary.failed
        run.gave_up += summary.failed_by_reason.get("gave_up", 0)
        throttle = summary.throttle
        run.waited_seconds = max(run.waited_seconds, float(throttle.get("paced_seconds", 0.0)))
        run.share_peak += float(throttle.get("rate_limit_share_peak", 0.0))
        run.share_mean += float(throttle.get("rate_limit_share_mean", 0.0))
        run.workspace_peak = max(run.workspace_peak, float(throttle.get("rate_limit_workspace_peak", 0.0)))
        run.final_batch_size = max(run.final_batch_size, int(throttle.get("final_batch_size", 0)))
    return run


def goals(runs: list[Run], keys: int) -> list[tuple[str, bool, str]]:
    """The goals of docs/performance.md, each with whether it held in every repeat."""
    out: list[tuple[str, bool, str]] = []
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.scenario, []).append(r)
    baseline = sum(r.production_refused for r in by.get("surge-baseline", []))
    for name, rs in by.items():
        if name == "surge-baseline":
            continue
        refused = [r.production_refused for r in rs]
        if name == "surge":
            out.append(
                (
                    f"{name}: production refused no more than without the migration ({baseline})",
                    all(n <= baseline for n in refused),
                    f"refused {refused}",
                )
            )
        else:
            out.append((f"{name}: no production request refused", all(n == 0 for n in refused), f"{refused}"))
        share = 0.05 if name == "compressed" else 0.02
        out.append(
            (
                f"{name}: under {share:.0%} of the migration's requests 429",
                all(r.refused_share < share for r in rs),
                ", ".join(f"{r.refused_share:.1%}" for r in rs),
            )
        )
        out.append(
            (
                f"{name}: every key migrated, none gave_up",
                all(r.migrated == keys and r.gave_up == 0 for r in rs),
                ", ".join(f"{r.migrated:,}/{r.gave_up}" for r in rs),
            )
        )
        if name in ("steady", "four"):
            out.append(
                (
                    f"{name}: at least 0.9 of the room used",
                    all(r.room_used >= 0.9 for r in rs),
                    ", ".join(f"{r.room_used:.2f}" for r in rs),
                )
            )
    return out


def fmt(values: list[float], pattern: str) -> str:
    s = spread(values)
    if s["min"] == s["max"]:
        return pattern.format(s["median"])
    return f"{pattern.format(s['median'])} ({pattern.format(s['min'])}-{pattern.format(s['max'])})"


def table_md(runs: list[Run]) -> list[str]:
    lines = [
        "| scenario | repeats | production refused / sent | migration requests | 429 share | migrated"
        " | gave_up | requests/min (room) | room used | waited s | share of limit: peak / mean"
        " | workspace peak | final batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.scenario, []).append(r)
    for name, rs in by.items():
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(len(rs)),
                    f"{fmt([r.production_refused for r in rs], '{:.0f}')} / {fmt([r.production_sent for r in rs], '{:.0f}')}",
                    fmt([r.requests for r in rs], "{:.0f}"),
                    fmt([r.refused_share * 100 for r in rs], "{:.1f}%"),
                    fmt([r.migrated for r in rs], "{:,.0f}"),
                    fmt([r.gave_up for r in rs], "{:.0f}"),
                    f"{fmt([r.requests_per_minute for r in rs], '{:.1f}')} ({rs[0].room_per_minute:.0f})",
                    fmt([r.room_used for r in rs], "{:.2f}"),
                    fmt([r.waited_seconds for r in rs], "{:.0f}"),
                    f"{fmt([r.share_peak * 100 for r in rs], '{:.0f}%')} / {fmt([r.share_mean * 100 for r in rs], '{:.0f}%')}",
                    fmt([r.workspace_peak * 100 for r in rs], "{:.0f}%"),
                    fmt([r.final_batch_size for r in rs], "{:,.0f}"),
                ]
            )
            + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-baseline", action="store_true", help="skip the surge without a migration")
    parser.add_argument("--smoke", action="store_true", help="2,000 keys, the compressed scenario, once")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    if args.smoke:
        args.keys, args.repeats, names, args.no_baseline = 2_000, 1, ["compressed"], True
    unknown = set(names) - set(SCENARIO)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; they are {list(SCENARIO)}")
    if "surge" in names and not args.no_baseline:
        names.append("surge-baseline")
    with tempfile.TemporaryDirectory() as tmp:
        path = parquet_input(args.keys, "hash", Path(tmp) / "inputs")
        table = pq.read_table(path)
        runs: list[Run] = []
        for repeat in range(args.repeats):
            for name in names:
                if name == "surge-baseline" and repeat:
                    continue
                run = run_scenario(SCENARIO[name], repeat, table, Path(tmp) / name)
                runs.append(run)
                print(
                    f"[{name} #{repeat + 1}] {run.seconds:.0f} s: production refused {run.production_refused}"
                    f"/{run.production_sent}; migration {run.requests} requests, {run.refused_share:.1%} 429,"
                    f" {run.migrated:,} migrated, {run.gave_up} gave_up, {run.requests_per_minute:.1f}/min of"
                    f" a room of {run.room_per_minute:.0f} ({run.room_used:.2f})",
                    flush=True,
                )
    checks = goals(runs, args.keys)
    lines = [
        f"# A migration beside production ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Limit {LIMIT} a window, production at {PRODUCTION_SHARE:.0%} of it, headroom"
        f" {DEFAULT_RATE_LIMIT_HEADROOM:.0%} (the default), {args.keys:,} hash-only keys, {args.repeats}"
        " repeat(s); median (min-max).",
        "",
        *table_md(runs),
        "",
        "| goal | held | figures |",
        "|---|---|---|",
        *(f"| {name} | {'yes' if ok else 'NO'} | {figures} |" for name, ok, figures in checks),
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    (args.out / f"shared-{stamp}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"shared-{stamp}.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in runs], indent=1, default=str)
    )
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
