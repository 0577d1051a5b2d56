"""A real migration's metrics through Airflow's StatsD client, collected by a UDP socket of the test.

The DAG (``unkey_t_mapped_shared_workspace``: ``MigrateKeysOperator`` mapped over two partitions,
under a workspace rate limit with a 2 s window) runs under ``dag.test()`` in a process of its own,
whose throwaway ``AIRFLOW_HOME`` and ``[metrics]`` settings Airflow reads when it is first imported:
StatsD on, to the test's socket, with InfluxDB-style tags so that every datagram says which task sent
it. The emulator runs in the test's process, with a storm of 429s, a 500 that splits a batch, a 503
the client retries, and invalid, duplicate and existing keys. The counters' sums must be each task's
summary, the HTTP requests by class what the emulator received.

``python -m tests.operators.test_migrate_keys_metrics <run_conf as JSON>`` is the DAG's process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT_KEY = "unkey_root_metrics"
#: Mapped over two partitions, under a workspace rate limit whose window is compressed to 2 s.
DAG_ID = "unkey_t_mapped_shared_workspace"
RESULT = "METRICS RESULT: "
PREFIX = "airflow.unkey.migration."
N = 600
INVALID = {5, 333}  # not a hash
DUPLICATES = {20: 10, 420: 410}  # row -> the row whose hash it repeats (same partition)
EXISTING = 400  # its hash is in Unkey already


def b64(i: int) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_metrics_{i}".encode()).digest()).decode()


def write_source(path: Path) -> None:
    hashes = ["not a hash" if i in INVALID else b64(DUPLICATES.get(i, i)) for i in range(N)]
    table = pa.table({"hash": hashes, "name": [f"key {i}" for i in range(N)]})
    pq.write_table(table, path, row_group_size=N // 2)  # two row groups: one per mapped task


class Collector:
    """Every StatsD datagram sent to a UDP socket on 127.0.0.1, read by a thread as it arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(line for line in data.decode().split("\n") if line)

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.lines


def parse(line: str) -> tuple[str, dict[str, str], float, str]:
    """``name,tag=value,...:value|type`` -> (name, tags, value, type)."""
    head, _, rest = line.rpartition(":")
    value, kind = rest.split("|")[:2]
    name, *tags = head.split(",")
    return name, dict(t.split("=", 1) for t in tags), float(value), kind


def status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


@pytest.mark.slow
def test_the_counters_add_up_to_each_tasks_summary(tmp_path: Path) -> None:
    from airflow_provider_unkey.metrics import METRICS
    from airflow_provider_unkey.testing import UnkeyEmulator
    from tests.migration.record.test_progress import Injector

    source = tmp_path / "keys.parquet"
    write_source(source)
    report = tmp_path / "report.json"
    collector = Collector()
    try:
        # A rate limit far above what the run uses: the answers state it, so the share is reported.
        with UnkeyEmulator.quick(
            root_key=ROOT_KEY,
            api_id="api_test",
            migration_id="mig_test",
            rate_limit=100_000,
            rate_limit_window=2.0,
        ) as emu:
            emu.add_existing_hash(b64(EXISTING))
            emu.set_faults(rate_limit_storm=2, storm_retry_after=0)
            Injector(emu, {b64(150): 500, b64(450): 503})
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update(
                AIRFLOW_HOME=str(tmp_path / "airflow_home"),
                AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "tests" / "dags"),
                AIRFLOW__METRICS__STATSD_ON="True",
                AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
                AIRFLOW__METRICS__STATSD_PORT=str(collector.port),
                AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED="True",
                AIRFLOW_CONN_UNKEY_DEFAULT=json.dumps(
                    {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}
                ),
            )
            conf = {
                "source": str(source),
                "output_path": str(tmp_path / "out"),
                "report": str(report),
                "migration_id": "mig_test",
                "api_id": "api_test",
                "partitions": 2,
            }
            proc = subprocess.run(
                [sys.executable, "-m", "tests.operators.test_migrate_keys_metrics", json.dumps(conf)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            sent = [r.status for r in emu.requests if r.path == "/v2/keys.migrateKeys"]
    finally:
        lines = collector.close()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    result = json.loads(
        next(x for x in proc.stdout.splitlines() if x.startswith(RESULT)).removeprefix(RESULT)
    )
    assert result["states"] == {"partitions": "success", "migrate": "success", "report": "success"}, result
    summaries = json.loads(report.read_text())["return_value"]
    assert len(summaries) == 2

    ours = [parse(line) for line in lines if line.startswith(PREFIX)]
    assert ours, lines[:20]
    names = {name.removeprefix(PREFIX) for name, _, _, _ in ours}
    assert names <= set(METRICS)
    assert names >= set(METRICS) - {"keys_skipped"}, sorted(set(METRICS) - names)  # nothing is skipped
    kinds = {"counter": "c", "gauge": "g", "timer": "ms"}
    for name, tags, _, kind in ours:
        assert kind == kinds[METRICS[name.removeprefix(PREFIX)][0]], (name, kind)
        assert {k: tags.get(k) for k in ("dag_id", "task_id", "migration_id", "api_id")} == {
            "dag_id": DAG_ID,
            "task_id": "migrate",
            "migration_id": "mig_test",
            "api_id": "api_test",
        }, tags
        assert tags.get("map_index") in ("0", "1"), tags

    sums: dict[tuple[str, str, str], float] = defaultdict(float)
    for name, tags, value, kind in ours:
        if kind == "c":
            detail = tags.get("reason") or tags.get("status_class") or ""
            sums[(tags["map_index"], name.removeprefix(PREFIX), detail)] += value

    def counted(index: int, name: str) -> dict[str, int]:
        return {d: int(v) for (i, n, d), v in sums.items() if i == str(index) and n == name}

    for index, summary in enumerate(summaries):
        assert counted(index, "keys_migrated") == {"": summary["migrated"]}, index
        assert counted(index, "keys_failed") == summary["failed_by_reason"], index
        assert counted(index, "requests") == {"": summary["requests"]}, index
        assert sum(counted(index, "rate_limited").values()) == summary["throttle"]["rate_limited_answers"]
    assert sum(s["migrated"] for s in summaries) == N - len(INVALID) - len(DUPLICATES) - 1
    failed = Counter[str]()
    for s in summaries:
        failed.update(s["failed_by_reason"])
    assert failed == {"invalid": 2, "duplicate_in_source": 2, "already_exists": 1}
    assert sum(sum(counted(i, "rate_limited").values()) for i in (0, 1)) == 2
    assert sum(sum(counted(i, "splits").values()) for i in (0, 1)) == 1

    # Every HTTP request the emulator received, by the class of its answer, and one timer value each.
    by_class = Counter(status_class(s) for s in sent)
    http = Counter[str]()
    for i in (0, 1):
        http.update(counted(i, "http_requests"))
    assert http == by_class and by_class["5xx"] == 2 and by_class["4xx"] == 2
    assert sum(by_class.values()) == sum(s["requests"] for s in summaries) + 1  # the 503's retry
    timers = [tags["status_class"] for name, tags, _, kind in ours if kind == "ms"]
    assert Counter(timers) == by_class

    # The gauges end where a finished run is: nothing in flight, no keys a second.
    for index in ("0", "1"):
        last = {n: v for n, t, v, k in ours if k == "g" and t["map_index"] == index}
        assert last[PREFIX + "keys_per_second"] == 0 and last[PREFIX + "requests_in_flight"] == 0
        assert 0 < last[PREFIX + "rate_limit_share"] < 1 and last[PREFIX + "batch_size"] >= 1


def main(conf: dict[str, Any]) -> int:
    """The DAG's process: the environment set by the test, Airflow imported only now."""
    import importlib

    from airflow.utils import db

    db.initdb()
    module = importlib.import_module("tests.dags.unkey_operator_test_dags")
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == DAG_ID)
    run = dag.test(run_conf=conf)
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
    print(RESULT + json.dumps({"state": str(run.state), "states": states}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
