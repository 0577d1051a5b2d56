"""Run the Unkey emulator from the command line.

``python -m airflow_provider_unkey.testing --root-key KEY --api-id API --migration-id ID`` prints
``Unkey emulator listening on http://HOST:PORT`` as its first line and serves until SIGINT or SIGTERM.
The root key is never printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing.emulator import Faults, ProductionBurst, UnkeyEmulator


def _statuses(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated statuses, got {text!r}") from None


def _burst(text: str) -> ProductionBurst:
    try:
        return ProductionBurst.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_unkey.testing",
        description="Serve a local emulator of Unkey's v2 key-migration API.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    p.add_argument("--root-key", required=True, help="the root key clients send as 'Bearer <key>'")
    p.add_argument("--workspace-id", default="ws_default", help="workspace of the root key, API, migration")
    p.add_argument("--api-id", required=True, help="the API keys are migrated into")
    p.add_argument("--api-name", default=None, help="the API's name (default: its id)")
    p.add_argument("--migration-id", required=True, help="the migration id")
    p.add_argument(
        "--algorithm",
        default=rules.ALGORITHM_SHA256,
        choices=("sha256", "seam", rules.ALGORITHM_SEAM),
        help="hash algorithm of the migration (default %(default)s)",
    )
    p.add_argument(
        "--existing-hash",
        action="append",
        default=[],
        metavar="HASH",
        help="a hash that already exists in another workspace (repeatable)",
    )
    p.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="N",
        help="switch the workspace rate limit on: Unkey's sliding window of N requests per window, then "
        "429; every answer to a counted request carries RateLimit-Limit/-Remaining/-Reset; 0 refuses "
        "everything (default: no limit)",
    )
    p.add_argument(
        "--rate-limit-window",
        type=float,
        default=60.0,
        help="seconds of the window, aligned to Unix time (default %(default)s, Unkey's)",
    )
    production = p.add_argument_group(
        "production traffic",
        "the workspace's own services verifying their users' keys meanwhile, counted against the same "
        "rate limit (never in the request log); its counters are printed at the end",
    )
    production.add_argument(
        "--production-rate",
        type=float,
        default=None,
        metavar="N",
        help="keys.verifyKey requests a minute, evenly spaced (default: none)",
    )
    production.add_argument(
        "--production-burst",
        type=_burst,
        default=None,
        metavar="RATE:SECONDS:EVERY[:FIRST]",
        help="every EVERY seconds (the first after FIRST, default EVERY), SECONDS at RATE requests a "
        "minute instead, e.g. 54:30:300",
    )
    p.add_argument(
        "--server-timeout",
        type=float,
        default=rules.SERVER_TIMEOUT_SECONDS,
        help="server-side timeout in seconds, queueing for capacity included, then 408 (default %(default)s)",
    )
    p.add_argument(
        "--capacity",
        type=int,
        default=0,
        metavar="N",
        help="process at most N requests at once, the others waiting in a FIFO queue; the latency "
        "faults are spent holding a slot, so N / latency bounds the requests per second "
        "(default 0: unlimited)",
    )
    p.add_argument(
        "--no-freeze-gc",
        action="store_true",
        help="do not gc.freeze() the store after each commit (slower with large stores)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fault decisions (default 0)")
    faults = p.add_argument_group("faults")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--latency-per-key", type=float, default=0.0, help="seconds added per migrated key")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    faults.add_argument(
        "--error-statuses", type=_statuses, default=(500, 502, 503), help="comma-separated (500,502,503)"
    )
    faults.add_argument("--rate-limit-storm", type=int, default=0, help="answer the next N requests 429")
    faults.add_argument("--storm-retry-after", type=int, default=1, help="Retry-After of the storm's 429s")
    faults.add_argument("--reset-rate", type=float, default=0.0, help="share of connections reset")
    faults.add_argument(
        "--drop-after-commit-rate",
        type=float,
        default=0.0,
        help="share of migrations committed and then left without a response",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM.

    :return: the exit status (0 after a signal).
    """
    args = build_parser().parse_args(argv)
    try:
        faults = Faults(
            latency=args.latency,
            latency_per_key=args.latency_per_key,
            error_rate=args.error_rate,
            error_statuses=args.error_statuses,
            rate_limit_storm=args.rate_limit_storm,
            storm_retry_after=args.storm_retry_after,
            reset_rate=args.reset_rate,
            drop_after_commit_rate=args.drop_after_commit_rate,
        )
        emu = UnkeyEmulator(
            args.host,
            args.port,
            rate_limit=args.rate_limit,
            rate_limit_window=args.rate_limit_window,
            production_per_minute=args.production_rate,
            production_burst=args.production_burst,
            production_workspace_id=args.workspace_id,
            faults=faults,
            seed=args.seed,
            server_timeout=args.server_timeout,
            capacity=args.capacity,
            # This process is the emulator's alone: keep the GC off the growing store.
            freeze_gc=not args.no_freeze_gc,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emu.add_root_key(args.root_key, args.workspace_id)
    emu.add_api(args.api_id, args.workspace_id, args.api_name)
    emu.add_migration(args.migration_id, args.workspace_id, args.algorithm)
    for existing in args.existing_hash:
        emu.add_existing_hash(existing)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        emu.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Unkey emulator listening on {emu.url}", flush=True)
    try:
        # Wake now and then: a signal handler runs only between bytecodes of the main thread.
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    stats = emu.stats()
    counts = stats.status_counts
    production = emu.production
    print(
        f"Unkey emulator stopped: {stats.requests} requests, {len(emu.keys)} keys stored, "
        f"statuses {dict(sorted(counts.items(), key=str))}, "
        f"{stats.rate_limited} rate limited (429), {stats.timed_out} timed out (408), "
        f"peak {stats.peak_in_flight} in flight, peak {stats.peak_queued} queued; "
        f"production: {production.sent} sent, {production.accepted} accepted, "
        f"{production.refused} refused (429), {production.refused_in_surge} of them in bursts",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
