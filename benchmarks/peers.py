"""The baselines of the throughput suite: how else one would move keys into Unkey, each at its best.

Every peer reads the same Parquet file, against the same emulator build, and returns a :class:`Run`:

- :func:`naive_loop`: one request per key, one ``requests.Session``, sequential. Latency-bound, so it
  runs on a sample (the first keys, cut off after a few seconds) and its keys/s is extrapolated.
- :func:`sdk_batches`: Unkey's guide: the ``unkey.py`` SDK, sequential batches of 100. Also run on a
  time-boxed sample when the latency makes the whole file take minutes.
- :func:`dlt_destination`: reverse ETL with dlt: a ``@dlt.destination(batch_size=1000)`` custom
  destination posting ``keys.migrateKeys``, tuned: Parquet files rotated every ``file_rows`` rows so
  that ``workers`` load jobs run in parallel (dlt's ``load.workers``), one session per worker thread.
- :func:`limit`: the ceiling: pre-serialised 1,000-key bodies (serialised before the clock starts)
  posted by ``threads`` threads, one session each, with nothing else to do.

The peers convert rows to key objects with :func:`benchmarks._common.key_objects`, inside their timing:
that is their share of the work the engine does (read, map, serialise, send).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import requests

from benchmarks._common import API_ID, MIGRATION_ID, ROOT_KEY, RequestLog, key_objects

HEADERS = {"Authorization": f"Bearer {ROOT_KEY}", "Content-Type": "application/json"}
PATH = "/v2/keys.migrateKeys"


@dataclass
class Run:
    """What one contender's run did: ``keys`` went out in ``seconds``; the rest is for the checks."""

    keys: int
    seconds: float
    migrated: int
    failed: int = 0
    requests: int = 0
    sample: bool = False  # the keys/s of a time-boxed sample, extrapolated to the whole file
    cpu_seconds: float | None = None
    log: RequestLog = field(default_factory=RequestLog)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def keys_per_second(self) -> float:
        return self.keys / self.seconds


def _body(keys: list[dict[str, Any]]) -> bytes:
    return json.dumps({"migrationId": MIGRATION_ID, "apiId": API_ID, "keys": keys}).encode()


def _session(url: str) -> requests.Session:
    session = requests.Session()
    session.headers.update(HEADERS)
    session.get(f"{url}/v2/liveness").raise_for_status()  # connect outside the timing
    return session


def _counts(response: requests.Response) -> tuple[int, int]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    data = response.json()["data"]
    return len(data["migrated"]), len(data["failed"])


def _each_key(path: Path, max_keys: int) -> Iterator[dict[str, Any]]:
    """The first ``max_keys`` rows of the file as key objects, read a thousand rows at a time."""
    for rows in pq.ParquetFile(path).iter_batches(batch_size=1_000):
        yield from key_objects(rows.slice(0, max_keys))
        max_keys -= rows.num_rows
        if max_keys <= 0:
            return


def naive_loop(url: str, path: Path, max_keys: int = 2_000, time_box: float = 5.0) -> Run:
    """One request per key, sequential, until ``max_keys`` keys or ``time_box`` seconds."""
    log = RequestLog()
    with _session(url) as session:
        session.hooks["response"].append(log.hook)
        keys = migrated = failed = 0
        started = time.perf_counter()
        for key in _each_key(path, max_keys):
            m, f = _counts(session.post(url + PATH, data=_body([key])))
            keys, migrated, failed = keys + 1, migrated + m, failed + f
            if time.perf_counter() - started > time_box:
                break
        seconds = time.perf_counter() - started
    total = pq.ParquetFile(path).metadata.num_rows
    return Run(keys, seconds, migrated, failed, keys, sample=keys < total, log=log)


def _sdk_key(key: dict[str, Any]) -> dict[str, Any]:
    """The SDK's typed dicts name fields in snake case."""
    out = {("external_id" if k == "externalId" else k): v for k, v in key.items()}
    if "ratelimits" in out:
        out["ratelimits"] = [
            {("auto_apply" if k == "autoApply" else k): v for k, v in r.items()} for r in out["ratelimits"]
        ]
    refill = out.get("credits", {}).get("refill")
    if refill and "refillDay" in refill:
        refill["refill_day"] = refill.pop("refillDay")
    return out


def sdk_batches(url: str, path: Path, batch: int = 100, time_box: float = 10.0) -> Run:
    """Unkey's guide: ``unkey.keys.migrate_keys`` with ``batch`` keys a call, one call after another,
    until the file is done or ``time_box`` seconds have passed."""
    from unkey.py import Unkey

    keys = migrated = failed = calls = 0
    with Unkey(root_key=ROOT_KEY, server_url=url) as unkey:
        unkey.apis.get_api(api_id=API_ID)  # connect outside the timing
        started = time.perf_counter()
        for rows in pq.ParquetFile(path).iter_batches(batch_size=batch):
            res = unkey.keys.migrate_keys(
                migration_id=MIGRATION_ID, api_id=API_ID, keys=[_sdk_key(k) for k in key_objects(rows)]
            )
            keys, calls = keys + rows.num_rows, calls + 1
            migrated, failed = migrated + len(res.data.migrated), failed + len(res.data.failed)
            if time.perf_counter() - started > time_box:
                break
        seconds = time.perf_counter() - started
    total = pq.ParquetFile(path).metadata.num_rows
    return Run(keys, seconds, migrated, failed, calls, sample=keys < total)


def dlt_available() -> bool:
    try:
        import dlt  # noqa: F401
    except ImportError:
        return False
    return True


def dlt_destination(url: str, path: Path, workers: int = 16, file_rows: int = 5_000) -> Run:
    """A dlt pipeline from the Parquet file to a custom destination that posts ``keys.migrateKeys``.

    Tuned as dlt's docs suggest for throughput: Arrow items (no row-by-row normalisation), files rotated
    every ``file_rows`` rows, ``workers`` parallel load jobs, batches of 1,000 rows per call.
    """
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["LOAD__WORKERS"] = str(workers)
    os.environ["DATA_WRITER__FILE_MAX_ITEMS"] = str(file_rows)  # a load job per file
    import dlt

    sessions = threading.local()
    lock = threading.Lock()
    counts = {"migrated": 0, "failed": 0, "requests": 0}
    log = RequestLog()

    @dlt.destination(
        batch_size=1000,
        loader_file_format="parquet",
        name="unkey",
        naming_convention="direct",
        skip_dlt_columns_and_tables=True,
    )
    def unkey(items: Any, table: Any) -> None:
        session = getattr(sessions, "session", None)
        if session is None:
            session = sessions.session = requests.Session()
            session.headers.update(HEADERS)
            session.hooks["response"].append(log.hook)
        m, f = _counts(session.post(url + PATH, data=_body(key_objects(items))))
        with lock:
            counts["migrated"] += m
            counts["failed"] += f
            counts["requests"] += 1

    @dlt.resource(name="keys")
    def rows() -> Iterator[Any]:
        yield from pq.ParquetFile(path).iter_batches(batch_size=file_rows)

    total = pq.ParquetFile(path).metadata.num_rows
    with tempfile.TemporaryDirectory() as work:
        pipeline = dlt.pipeline("unkey_bench", destination=unkey, pipelines_dir=work, dev_mode=True)
        started = time.perf_counter()
        pipeline.run(rows())
        seconds = time.perf_counter() - started
    return Run(total, seconds, counts["migrated"], counts["failed"], counts["requests"], log=log)


def serialise(path: Path, batch: int = 1_000) -> list[bytes]:
    """Every row of the file as request bodies of ``batch`` keys (done before :func:`limit`'s clock)."""
    return [_body(key_objects(rows)) for rows in pq.ParquetFile(path).iter_batches(batch_size=batch)]


def limit(url: str, bodies: list[bytes], threads: int) -> Run:
    """Post pre-serialised bodies from ``threads`` threads (one session each), as fast as they go."""
    todo = list(reversed(bodies))
    lock = threading.Lock()
    counts = {"migrated": 0, "failed": 0, "requests": 0}
    errors: list[BaseException] = []
    log = RequestLog()
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        with _session(url) as session:
            barrier.wait()
            while True:
                with lock:
                    if not todo or errors:
                        return
                    body = todo.pop()
                t0 = time.perf_counter()
                response = session.post(url + PATH, data=body)
                log.add(response.status_code, time.perf_counter() - t0)
                try:
                    m, f = _counts(response)
                except RuntimeError as exc:
                    errors.append(exc)
                    return
                with lock:
                    counts["migrated"] += m
                    counts["failed"] += f
                    counts["requests"] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"the limit's requests failed: {errors[0]}")
    keys = sum(body.count(b'"hash"') for body in bodies)
    return Run(
        keys,
        seconds,
        counts["migrated"],
        counts["failed"],
        counts["requests"],
        log=log,
        detail={"threads": threads},
    )
