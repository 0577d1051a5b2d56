"""What the throughput suite's contenders share: the emulator in its own process, the inputs as Parquet,
request timings and the statistics of repeats.

- :class:`Emulator`: the emulator CLI in a subprocess with the suite's faults (``--latency``,
  ``--capacity``, ``--rate-limit``); when it stops, what it printed (requests, keys stored, statuses)
  is in :attr:`Emulator.stats`, which is how every contender's run is checked: every key stored once.
- :func:`parquet_input`: valid random sha256 base64 hashes, alone or with the typical fields or every
  field (the shapes of ``benchmarks.prepare_throughput``), written once as Parquet and cached.
- :func:`key_objects`: the rows of such a file as ``keys.migrateKeys`` key objects, as a user's own
  script would build them (the peers' conversion).
- :class:`RequestLog`: statuses and client-side latencies of requests, from a ``requests`` hook.
- :func:`spread`: median, min, max and quartiles of repeats.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.emulator_throughput import API_ID, MIGRATION_ID, ROOT_KEY
from benchmarks.prepare_throughput import source

__all__ = [
    "API_ID",
    "MIGRATION_ID",
    "ROOT_KEY",
    "SHAPES",
    "Emulator",
    "RequestLog",
    "emulator_supports",
    "key_objects",
    "parquet_input",
    "spread",
]

#: The suite's input shapes -> the field sets of ``benchmarks.prepare_throughput.source``.
SHAPES = {"hash": "hash", "typical": "seven", "all": "twelve"}
_STOPPED = re.compile(r"stopped: (\d+) requests, (\d+) keys stored, statuses (\{.*\})")


@functools.cache
def emulator_supports(flag: str) -> bool:
    """Whether this build of the emulator CLI knows ``flag`` (e.g. ``--capacity``)."""
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_unkey.testing", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return flag in out


class Emulator:
    """The emulator CLI in its own process, for one contender's run (a fresh store each time).

    :param latency: seconds added per request (``--latency``).
    :param capacity: requests processed at once, the rest queued (``--capacity``; 0: unlimited).
    :param rate_limit: ``(requests, window seconds)`` of the workspace rate limit, or ``None``.
    """

    def __init__(
        self, latency: float = 0.0, capacity: int = 0, rate_limit: tuple[int, float] | None = None
    ) -> None:
        self.args = ["--latency", str(latency)]
        if capacity:
            if not emulator_supports("--capacity"):
                raise RuntimeError("this emulator has no --capacity flag yet")
            self.args += ["--capacity", str(capacity)]
        if rate_limit is not None:
            self.args += ["--rate-limit", str(rate_limit[0]), "--rate-limit-window", str(rate_limit[1])]
        self.url = ""
        self.stats: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> Emulator:
        cmd = [sys.executable, "-m", "airflow_provider_unkey.testing", "--port", "0", "--root-key", ROOT_KEY]
        cmd += ["--api-id", API_ID, "--migration-id", MIGRATION_ID, *self.args]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if "http://" not in line:
            self._proc.kill()
            self._stderr.seek(0)
            raise RuntimeError(f"the emulator did not start: {line!r} {self._stderr.read()[-2000:]}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=30)
        self._stderr.seek(0)
        text = self._stderr.read()
        self._stderr.close()
        found = _STOPPED.search(text)
        if found is None:
            raise RuntimeError(f"the emulator did not report its counts: {text[-2000:]!r}")
        statuses = {str(k): v for k, v in ast.literal_eval(found.group(3)).items()}
        self.stats = {
            "requests": int(found.group(1)),
            "keys_stored": int(found.group(2)),
            "statuses": statuses,
        }


def parquet_input(keys: int, shape: str, root: Path, seed: int = 7) -> Path:
    """A Parquet file of ``keys`` valid rows of ``shape`` (see :data:`SHAPES`), made once under ``root``."""
    path = root / f"keys_{shape}_{keys}_seed{seed}.parquet"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with pq.ParquetWriter(partial, source(min(keys, 65_536), SHAPES[shape], seed)[0].schema) as writer:
            done = 0
            while done < keys:  # a million rows at a time: 10M keys never sit in memory at once
                n = min(1_000_000, keys - done)
                for batch in source(n, SHAPES[shape], seed * 1_000_003 + done):
                    writer.write_batch(batch)
                done += n
        partial.rename(path)
    return path


def _ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp() * 1000)


def _key(row: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = {"hash": row["hash"]}
    for field in ("name", "externalId", "enabled"):
        if row.get(field) is not None:
            key[field] = row[field]
    if row.get("meta") is not None:
        key["meta"] = json.loads(row["meta"])
    if row.get("roles"):
        key["roles"] = row["roles"].split(",")
    if row.get("expires") is not None:
        key["expires"] = _ms(row["expires"])
    if row.get("credits.remaining") is not None:
        key["credits"] = {"remaining": row["credits.remaining"]}
        if row.get("credits.refill.interval"):
            refill = {"interval": row["credits.refill.interval"], "amount": row["credits.refill.amount"]}
            if refill["interval"] == "monthly":
                refill["refillDay"] = row["credits.refill.refillDay"]
            key["credits"]["refill"] = refill
    if row.get("ratelimits"):
        key["ratelimits"] = row["ratelimits"]
    return key


def key_objects(rows: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows as key objects, field by field, as a hand-written migration script builds them."""
    return [_key(row) for row in rows.to_pylist()]


class RequestLog:
    """Status and client-side latency (request sent to response headers) of each request."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def add(self, status: int, seconds: float) -> None:
        with self._lock:
            self.statuses.append(status)
            self.seconds.append(seconds)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A ``requests`` response hook: ``session.hooks["response"].append(log.hook)``."""
        self.add(response.status_code, response.elapsed.total_seconds())
        return response

    def p95(self) -> float | None:
        """The 95th percentile latency in seconds (``None`` with fewer than two requests)."""
        with self._lock:
            if len(self.seconds) < 2:
                return None
            return statistics.quantiles(self.seconds, n=20, method="inclusive")[18]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the quartiles of ``values`` (repeats of one figure)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": q1,
        "q3": q3,
        "n": len(values),
    }
