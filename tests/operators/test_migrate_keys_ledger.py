"""The ledger through ``MigrateKeysOperator``, as users run it: ``dag.test()`` and a killed task.

* the default ledger lives inside the task's output location and holds every outcome;
* a scheduled DAG on a shared ledger sends only new keys, run after run;
* a seam migration rerun after users verified keys creates no second key;
* ``on_kill`` (SIGTERM to the task's process) stops sending, lets the requests in flight end, and
  flushes the ledger: the retry re-sends nothing.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.ledger import read_ledger
from airflow_provider_unkey.testing import UnkeyEmulator, seam_hash
from tests.operators.test_migrate_keys_crash import ROOT_KEY, Gate, result_of, runner

API, MIGRATION = "api_test", "mig_test"


def b64(i: int) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_ledger_{i}".encode()).digest()).decode()


def emulator(monkeypatch: pytest.MonkeyPatch, algorithm: str = "sha256") -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(
        root_key=ROOT_KEY, api_id=API, migration_id=MIGRATION, algorithm=algorithm
    ) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        yield emu


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    yield from emulator(monkeypatch)


@pytest.fixture
def seam_emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    yield from emulator(monkeypatch, "seam")


def run(dag_id: str, **conf: Any) -> dict[str, Any]:
    """Run a ledger test DAG; return the migrate task's state and return value."""
    module = importlib.import_module("tests.dags.unkey_ledger_test_dags")
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == dag_id)
    dag_run = dag.test(run_conf={"ledger_path": "", "hash_format": "sha256_base64", **conf})
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "migrate"]
    return {"state": str(ti.state), "summary": ti.xcom_pull(task_ids="migrate"), "ti": ti}


def write(path: Path, hashes: list[str]) -> str:
    pq.write_table(pa.table({"hash": hashes, "name": [f"key {i}" for i in range(len(hashes))]}), path)
    return str(path)


def test_the_default_ledger_sits_in_the_output_location(
    airflow_db: None, emu: UnkeyEmulator, tmp_path: Path
) -> None:
    source = write(tmp_path / "keys.parquet", [b64(i) for i in range(60)])
    result = run("unkey_l_crash", source=source, output_path=str(tmp_path / "out"))
    assert result["state"] == "success"
    summary = result["summary"]
    assert summary["outputs"]["ledger"] == str(tmp_path / "out" / "ledger")
    ledger = read_ledger(tmp_path / "out" / "ledger").to_pylist()
    assert {r["hash"]: r["key_id"] for r in ledger} == {h: k.key_id for h, k in emu.keys.items()}
    ti = result["ti"]
    assert {(r["dag_id"], r["run_id"], r["task_id"], r["map_index"]) for r in ledger} == {
        ("unkey_l_crash", ti.run_id, "migrate", -1)
    }


def test_a_scheduled_dag_on_a_shared_ledger_sends_only_new_keys(
    airflow_db: None, emu: UnkeyEmulator, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "shared-ledger")
    hashes = [b64(i) for i in range(100)]
    first = run(
        "unkey_l_incremental",
        source=write(tmp_path / "v1.parquet", hashes),
        output_path=str(tmp_path / "r1"),
        ledger_path=ledger,
    )
    assert first["state"] == "success" and first["summary"]["migrated"] == 100
    emu.reset_log()
    # The warehouse table grew: the old rows and 40 new ones.
    grown = hashes + [b64(i) for i in range(100, 140)]
    second = run(
        "unkey_l_incremental",
        source=write(tmp_path / "v2.parquet", grown),
        output_path=str(tmp_path / "r2"),
        ledger_path=ledger,
    )
    assert second["state"] == "success"
    summary = second["summary"]
    assert (summary["total"], summary["migrated"], summary["skipped"], summary["failed"]) == (140, 40, 100, 0)
    assert set(emu.hash_counts) == set(grown[100:])  # only the new rows reached Unkey
    assert summary["outputs"]["skipped"] == str(tmp_path / "r2" / "skipped.parquet")
    skipped = pq.read_table(summary["outputs"]["skipped"])
    assert sorted(skipped.column("source_row").to_pylist()) == list(range(100))
    assert read_ledger(ledger).num_rows == 140  # every key, once


def test_a_seam_rerun_after_users_verified_creates_no_second_key(
    airflow_db: None, seam_emu: UnkeyEmulator, tmp_path: Path
) -> None:
    plaintexts = [f"acme_{i:08d}_{'k' * 24}{i:04d}" for i in range(20)]
    source = write(tmp_path / "seam.parquet", [seam_hash(p) for p in plaintexts])
    ledger = str(tmp_path / "ledger")
    first = run("unkey_l_seam", source=source, output_path=str(tmp_path / "r1"), ledger_path=ledger)
    assert first["state"] == "success" and first["summary"]["migrated"] == 20
    with UnkeyClient(ROOT_KEY, seam_emu.url) as client:
        for p in plaintexts[:8]:
            assert client.verify_key(p, MIGRATION).code == "VALID"  # Unkey rehashes these
        again = run("unkey_l_seam", source=source, output_path=str(tmp_path / "r2"), ledger_path=ledger)
        assert again["state"] == "success" and again["summary"]["skipped"] == 20
        assert len(seam_emu.keys) == 20  # no second key
        assert all(client.verify_key(p, MIGRATION).code == "VALID" for p in plaintexts)


@pytest.mark.slow
def test_on_kill_lets_requests_in_flight_end_and_flushes_the_ledger(tmp_path: Path) -> None:
    source = write(tmp_path / "keys.parquet", [b64(i) for i in range(1000)])
    out = tmp_path / "out"
    conf = {"source": source, "output_path": str(out), "ledger_path": ""}
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id=API, migration_id=MIGRATION) as emu:
        gate = Gate(emu, hold_from=12)
        proc = runner(tmp_path, emu, conf)
        while not gate.reached.wait(0.05):
            assert proc.poll() is None, proc.communicate()[0][-4000:]
        # Airflow's supervisor sends SIGTERM; the task runner calls on_kill in the task's process.
        os.kill(proc.pid, signal.SIGTERM)
        # on_kill waits for the requests in flight: let them end (a real Unkey answers in time).
        gate.open_and_drain()
        out_text, _ = proc.communicate(timeout=900)
        assert "The task is being killed" in out_text, out_text[-4000:]
        created = {h: k.key_id for h, k in emu.keys.items()}
        recorded = {
            r["hash"]: r["key_id"] for r in read_ledger(out / "ledger").to_pylist() if r["reason"] is None
        }
        # Every key Unkey created is in the ledger, with its id: nothing in doubt.
        assert recorded == created and 0 < len(created) < 1000
        assert not list((out / "ledger").glob("_attempt-*"))
        sent = Counter(emu.hash_counts)
        retry = result_of(runner(tmp_path, emu, conf))
        assert retry["states"]["migrate"][0] == "success"
        assert max(emu.hash_counts.values()) == 1 and len(emu.keys) == 1000  # nothing sent twice
        assert set(emu.hash_counts) - set(sent) == {b64(i) for i in range(1000)} - set(created)
        migrated = pq.read_table(out / "migrated.parquet").to_pylist()
        assert {r["hash"]: r["key_id"] for r in migrated} == {h: k.key_id for h, k in emu.keys.items()}
