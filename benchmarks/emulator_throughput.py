"""Keys per second the Unkey emulator migrates, measured from a client in another process.

Starts ``python -m airflow_provider_unkey.testing`` in a subprocess for each run, pre-serialises every
``keys.migrateKeys`` body, then posts them from a few threads (one ``requests.Session`` each) and
times the whole lot. Every response must be a 200 with all keys migrated, or the run fails.

    /work/venv/bin/python benchmarks/emulator_throughput.py --keys 200000 --batch 1000 --threads 4 --runs 5
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import requests

ROOT_KEY = "unkey_root_bench"
API_ID = "api_bench"
MIGRATION_ID = "mig_bench"


def make_key(i: int, shape: str) -> dict[str, Any]:
    """One key object: ``minimal`` is a hash only; ``typical`` what a user table usually carries."""
    digest = hashlib.sha256(f"sk_bench_{i}".encode()).digest()
    key: dict[str, Any] = {"hash": base64.b64encode(digest).decode()}
    if shape in ("typical", "rich"):
        key.update(name=f"key {i}", externalId=f"user_{i % 997}", meta={"plan": "pro"}, enabled=True)
    if shape == "rich":
        key.update(
            roles=["reader"],
            permissions=["documents.read", "documents.write"],
            expires=4_102_444_800_000,
            credits={"remaining": 1000, "refill": {"interval": "daily", "amount": 1000}},
            ratelimits=[{"name": "requests", "limit": 100, "duration": 60_000, "autoApply": True}],
        )
    return key


def make_bodies(n_keys: int, batch: int, shape: str) -> list[bytes]:
    """Pre-serialised request bodies covering ``n_keys`` distinct hashes."""
    bodies = []
    for start in range(0, n_keys, batch):
        keys = [make_key(i, shape) for i in range(start, min(start + batch, n_keys))]
        bodies.append(json.dumps({"migrationId": MIGRATION_ID, "apiId": API_ID, "keys": keys}).encode())
    return bodies


def start_emulator(*extra_args: str) -> tuple[subprocess.Popen[str], str]:
    """The emulator CLI in a subprocess (with ``extra_args``, e.g. ``--latency 0.05``), and its URL
    (the first line it prints)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_unkey.testing",
            "--port",
            "0",
            "--root-key",
            ROOT_KEY,
            "--api-id",
            API_ID,
            "--migration-id",
            MIGRATION_ID,
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def run_once(bodies: list[bytes], threads: int) -> float:
    """Post every body once against a fresh emulator; the keys per second achieved."""
    proc, url = start_emulator()
    try:
        headers = {"Authorization": f"Bearer {ROOT_KEY}", "Content-Type": "application/json"}
        endpoint = f"{url}/v2/keys.migrateKeys"
        lock = threading.Lock()
        todo = list(reversed(bodies))
        migrated = [0]
        errors: list[str] = []

        def worker() -> None:
            with requests.Session() as session:
                session.get(f"{url}/v2/liveness")  # connect outside the timing
                barrier.wait()
                while True:
                    with lock:
                        if not todo:
                            return
                        body = todo.pop()
                    r = session.post(endpoint, data=body, headers=headers)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                        return
                    n = len(r.json()["data"]["migrated"])
                    with lock:
                        migrated[0] += n

        barrier = threading.Barrier(threads + 1)
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
        expected = sum(body.count(b'"hash"') for body in bodies)
        if migrated[0] != expected:
            raise RuntimeError(f"{migrated[0]} keys migrated, expected {expected}")
        return migrated[0] / elapsed
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def main() -> int:
    """Measure and print keys/s per run and their spread."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=200_000, help="keys per run (default %(default)s)")
    p.add_argument("--batch", type=int, default=1000, help="keys per request (default %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="client threads (default %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="runs, each on a fresh emulator (default %(default)s)")
    p.add_argument("--shape", choices=("minimal", "typical", "rich"), default="typical")
    p.add_argument("--min", type=float, default=0.0, help="exit 1 when the median is below this keys/s")
    args = p.parse_args()

    bodies = make_bodies(args.keys, args.batch, args.shape)
    size = sum(map(len, bodies)) / len(bodies)
    print(
        f"{args.keys} {args.shape} keys in batches of {args.batch} ({size / 1024:.0f} KiB per body), "
        f"{args.threads} client threads, {args.runs} runs"
    )
    rates = []
    for i in range(args.runs):
        rate = run_once(bodies, args.threads)
        rates.append(rate)
        print(f"run {i + 1}: {rate:,.0f} keys/s", flush=True)
    median = statistics.median(rates)
    spread = statistics.stdev(rates) if len(rates) > 1 else 0.0
    print(f"median {median:,.0f} keys/s, min {min(rates):,.0f}, max {max(rates):,.0f}, stdev {spread:,.0f}")
    return 1 if median < args.min else 0


if __name__ == "__main__":
    sys.exit(main())
