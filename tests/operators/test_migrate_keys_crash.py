"""Real crashes: a DAG run killed with SIGKILL at seeded random points, then retried.

The DAG runs ``dag.test()`` in a process of its own (``tests/crash_runner.py``) against the emulator
in this process. The emulator holds the migrate requests from a seeded request number on, so the kill
lands with requests in flight; once the process is dead they are let through and Unkey creates their
keys, whose answers nobody reads. Running the same DAG run again is the task's next try: it must
resume from the ledger, re-send only what the ledger lacks, and end with the outputs of an
uninterrupted run, except that the keys whose answers were lost are ``unconfirmed``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration
from airflow_provider_unkey.migration.ledger import read_ledger
from airflow_provider_unkey.testing import UnkeyEmulator

REPO = Path(__file__).resolve().parents[2]
ROOT_KEY = "unkey_root_crash_7d1e"
MIGRATE = "/v2/keys.migrateKeys"
LOGICAL_DATE = "2026-06-01T00:00:00+00:00"
N = 1000
INVALID = {17, 500}  # empty names
DUPLICATE = {300}  # the hash of row 299
EXISTING = 42  # a key with this hash is already in Unkey


def b64(i: int) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_crash_{i}".encode()).digest()).decode()


def write_source(path: Path) -> pa.Table:
    table = pa.table(
        {
            "hash": [b64(i - 1) if i in DUPLICATE else b64(i) for i in range(N)],
            "name": ["" if i in INVALID else f"key {i}" for i in range(N)],
        }
    )
    pq.write_table(table, path, row_group_size=100)
    return table


class Gate:
    """Holds every migrate request from the ``hold_from``-th on, until released."""

    def __init__(self, emu: UnkeyEmulator, hold_from: int) -> None:
        self.hold_from = hold_from
        self.reached = threading.Event()
        self.release = threading.Event()
        self.open_hashes: set[str] = set()
        self._seen = 0
        self._open = 0
        self._idle = threading.Condition()
        self._original: Callable[..., Any] = emu._delay_and_route  # type: ignore[attr-defined]
        self._emu = emu
        emu._delay_and_route = self._route  # type: ignore[method-assign]

    def _route(self, req: Any, route: Any, body: Any, n_keys: int, draw: Any) -> Any:
        # Held after the body was read: once let through, the keys are created whether or not the
        # client is still there to read the answer.
        if req.path != MIGRATE:
            return self._original(req, route, body, n_keys, draw)
        carried = [k["hash"] for k in body["keys"]]
        with self._idle:
            self._seen += 1
            held = self._seen >= self.hold_from
            self._open += 1
            self.open_hashes.update(carried)
        try:
            if held:
                self.reached.set()
                self.release.wait()
            return self._original(req, route, body, n_keys, draw)
        finally:
            with self._idle:
                self._open -= 1
                self.open_hashes.difference_update(carried)
                self._idle.notify_all()

    def in_flight(self) -> set[str]:
        """The keys of the requests Unkey has received and not yet answered."""
        with self._idle:
            return set(self.open_hashes)

    def open_and_drain(self) -> None:
        """Let the held requests through and wait until Unkey has handled every one."""
        self.release.set()
        with self._idle:
            self._idle.wait_for(lambda: self._open == 0)
        self._emu._delay_and_route = self._original  # type: ignore[method-assign]


def runner(
    tmp_path: Path, emu: UnkeyEmulator, conf: dict[str, Any], dag_id: str = "unkey_l_crash"
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow_home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "tests" / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_UNKEY_DEFAULT=json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_runner", dag_id, LOGICAL_DATE, json.dumps(conf)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes every thread and child
    )


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-6000:]
    assert ROOT_KEY not in out, "the root key leaked into the task's output"
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23, 37])
def test_a_sigkilled_run_resumes_and_loses_only_what_was_in_flight(tmp_path: Path, seed: int) -> None:
    source = tmp_path / "keys.parquet"
    table = write_source(source)
    out = tmp_path / "out"
    conf = {"source": str(source), "output_path": str(out), "ledger_path": ""}
    requests = N // 25  # batches of 25 keys
    hold_from = random.Random(seed).randint(2, requests - 6)

    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_test", migration_id="mig_test") as emu:
        emu.add_existing_hash(b64(EXISTING))
        # Requests take a while, as Unkey's do: the run spans several of the ledger's flushes.
        emu.set_faults(latency=0.1)
        gate = Gate(emu, hold_from)
        first = runner(tmp_path, emu, conf)
        while not gate.reached.wait(0.05):
            if first.poll() is not None:
                pytest.fail(f"the run ended before request {hold_from}: {first.communicate()[0][-4000:]}")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL
        ledger_at_kill = read_ledger(out / "ledger").to_pylist()
        in_flight = gate.in_flight()
        gate.open_and_drain()

        created = {h: k.key_id for h, k in emu.keys.items() if h != b64(EXISTING)}
        sent_by_try1 = Counter(emu.hash_counts)
        # The outcomes of sending: a duplicate's own record (decided before anything was sent) names the
        # hash too, while the row it duplicates may still have been in flight at the kill.
        recorded = {
            r["hash"]: r
            for r in ledger_at_kill
            if r["hash"] is not None and r["stage"] not in ("validate", "deduplicate")
        }
        # What the ledger says was created, was created, with that key id.
        for h, r in recorded.items():
            if r["reason"] is None:
                assert created[h] == r["key_id"]
        lost_ids = set(created) - {h for h, r in recorded.items() if r["reason"] is None}
        # The key that existed before the run may be in flight too; it is not this run's to lose.
        assert in_flight and in_flight - {b64(EXISTING)} <= lost_ids

        second = runner(tmp_path, emu, conf)
        result = result_of(second)
        # The same task instance (dag.test() keeps its try number; a scheduler would count up).
        assert result["run_id"] == "manual__" + LOGICAL_DATE and result["states"]["migrate"][0] == "success"

        resent = {
            h for h, c in emu.hash_counts.items() if c > sent_by_try1.get(h, 0) and sent_by_try1.get(h, 0)
        }
        # Exactly the hashes try 1 sent and the ledger did not hold were sent again; nothing else twice.
        assert resent == set(sent_by_try1) - set(recorded)
        assert max(emu.hash_counts.values()) <= 2
        valid = {b64(i) for i in range(N) if i not in INVALID | DUPLICATE}
        assert set(emu.keys) == valid  # every key exists in Unkey, once
        print(
            f"\nseed {seed}: killed with {len(in_flight)} keys in flight (requests {hold_from}+ held at Unkey);"
            f" ledger held {len(recorded)} outcomes; key ids lost {len(lost_ids)}; re-sent {len(resent)}"
        )

        migrated = pq.read_table(out / "migrated.parquet").to_pylist()
        failed = pq.read_table(out / "failed.parquet").to_pylist()
        rows = sorted([r["source_row"] for r in migrated] + [r["source_row"] for r in failed])
        assert rows == list(range(N))  # every row exactly once
        assert {r["hash"]: r["key_id"] for r in migrated} == {
            h: emu.keys[h].key_id for h in valid - lost_ids - {b64(EXISTING)}
        }
        unconfirmed = {r["hash"] for r in failed if r["reason"] == "unconfirmed"}
        assert unconfirmed - {b64(EXISTING)} == lost_ids
        assert all("try 1 of this task" in r["detail"] for r in failed if r["reason"] == "unconfirmed")

    # The same source, uninterrupted, against a fresh Unkey: the same outcomes but for the lost ids.
    with (
        UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_test", migration_id="mig_test") as fresh,
        UnkeyClient(ROOT_KEY, fresh.url) as client,
    ):
        fresh.add_existing_hash(b64(EXISTING))
        whole = run_migration(
            table.to_batches(max_chunksize=100),
            client,
            MigrationConfig("mig_test", "api_test"),
            tmp_path / "whole",
        )
    expected = {
        (r["source_row"], r["hash"], "migrated") for r in pq.read_table(whole.outputs["migrated"]).to_pylist()
    }
    expected |= {
        (r["source_row"], r["hash"], r["reason"]) for r in pq.read_table(whole.outputs["failed"]).to_pylist()
    }
    got = {(r["source_row"], r["hash"], "migrated") for r in migrated}
    got |= {(r["source_row"], r["hash"], r["reason"]) for r in failed}
    changed = lost_ids | {b64(EXISTING)}
    assert {x for x in got if x[1] not in changed} == {x for x in expected if x[1] not in changed}
