"""What the deployment tests share: the source tables, the emulator, the deployment as a fixture, and
the checks of a mapped migration's run.

One deployment serves every test of a module: :func:`deployment_setup` makes the warehouse database
(both DAGs' source tables), starts the emulator in this process with some latency, creates a fresh
metadata database, starts Airflow against them, and creates the pool. It tears everything down in
reverse, and records each phase's time in :data:`harness.TIMINGS`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

from airflow_provider_unkey.migration import read
from airflow_provider_unkey.testing import Faults, UnkeyEmulator
from tests import databases
from tests.deployments import harness

ROOT_KEY = f"unkey_root_deploy_{secrets.token_hex(8)}"
API_ID = "api_deploy"
MIGRATION_ID = "mig_deploy"
POOL = "unkey_pool"
POOL_SLOTS = 8
PARTITIONS = 3
#: Each mapped task takes this many pool slots: 3 x 4 = 12 wanted, 8 in the pool.
MAX_CONCURRENCY = 4
MIGRATE = "/v2/keys.migrateKeys"
SOURCE_SQL = "SELECT hash, name FROM {table}"


def b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@dataclass(frozen=True)
class Source:
    """A source table: its rows (hash, name), and what a migration of it must end with."""

    dag_id: str
    table: str
    rows: list[tuple[str, str]]
    valid: frozenset[str]
    failed_by_reason: dict[str, int]

    @property
    def sql(self) -> str:
        return SOURCE_SQL.format(table=self.table)


def make_source(dag_id: str, table: str, n: int) -> Source:
    """``n`` keys of this table's own, with three invalid rows (two empty names, a hex hash in a base64
    column) and one duplicate."""
    rows = [(b64(f"sk_{table}_{i}"), f"key {i}") for i in range(n)]
    rows[17] = (rows[17][0], "")
    rows[n // 2] = (rows[n // 2][0], "")
    rows[n // 3] = (hashlib.sha256(f"sk_{table}_hex".encode()).hexdigest(), "hex")
    rows[300] = (rows[299][0], "duplicate of 299")
    invalid = {17, n // 2, n // 3}
    valid = frozenset(h for i, (h, _) in enumerate(rows) if i not in invalid)
    return Source(dag_id, table, rows, valid, {"invalid": 3, "duplicate_in_source": 1})


MAPPED = make_source("unkey_deploy_mapped", "keys_mapped", 3000)
SIGKILL = make_source("unkey_deploy_sigkill", "keys_sigkill", 3000)


def load(warehouse: str, source: Source) -> None:
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {source.table} (hash text, name text)")
        with conn.cursor() as cur, cur.copy(f"COPY {source.table} (hash, name) FROM STDIN") as copy:
            for row in source.rows:
                copy.write_row(row)


def partition_hashes(warehouse: str, source: Source) -> list[list[str]]:
    """The hashes of each partition, in map-index order: the partition helper's queries, run here."""
    queries = read.sql_partitions(source.sql, "hash", PARTITIONS, dialect="postgresql")
    with psycopg.connect(warehouse) as conn:
        return [[str(h) for (h, _) in conn.execute(q["sql"]).fetchall()] for q in queries]


@dataclass
class Setup:
    """A running deployment and what it migrates to and from."""

    deployment: harness.Deployment
    emulator: UnkeyEmulator
    warehouse: str
    shared: Path
    runs: dict[str, float] = field(default_factory=dict)


@contextmanager
def deployment_setup(
    root: Path, name: str, executor: str, celery: harness.CelerySettings | None = None
) -> Iterator[Setup]:
    """A deployment with the emulator, the warehouse and the pool; torn down whatever happens."""
    began = time.monotonic()
    with ExitStack() as stack:
        warehouse = stack.enter_context(databases.fresh_postgres_database("unkey_deploy_wh"))
        for source in (MAPPED, SIGKILL):
            load(warehouse, source)
        emu = UnkeyEmulator.quick(
            root_key=ROOT_KEY, api_id=API_ID, migration_id=MIGRATION_ID, faults=Faults(latency=0.2)
        )
        stack.enter_context(emu)
        metadata = stack.enter_context(databases.fresh_postgres_database("unkey_deploy_meta"))
        shared = root / "shared"
        shared.mkdir()
        env = {
            "AIRFLOW_CONN_UNKEY_DEFAULT": json.dumps(
                {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}
            ),
            "AIRFLOW_CONN_WAREHOUSE": warehouse,
            "UNKEY_DEPLOYMENT_SHARED": str(shared),
            "UNKEY_DEPLOYMENT_POOL": POOL,
            "UNKEY_DEPLOYMENT_PARTITIONS": str(PARTITIONS),
            "UNKEY_DEPLOYMENT_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        }
        deployment = harness.Deployment(
            root, name=name, executor=executor, metadata_uri=metadata, env=env, celery=celery
        )
        setup = Setup(deployment, emu, warehouse, shared)
        try:
            deployment.start()
            deployment.create_pool(POOL, POOL_SLOTS)
            ready = time.monotonic() - began
            yield setup
        finally:
            deployment.stop()
            total = time.monotonic() - began
            t = deployment.timings
            phases = [
                f"{k} {v:.0f} s"
                for k, v in (("db migrate", t.get("db migrate")), ("up", t.get("start")))
                if v
            ]
            phases += [f"{run} {seconds:.0f} s" for run, seconds in setup.runs.items()]
            phases.append(f"stop {t.get('stop', 0):.0f} s")
            line = f"{name}: end to end {total:.0f} s ({', '.join(phases)})"
            if "ready" in locals():
                line += f"; ready for DAG runs after {ready:.0f} s"
            harness.TIMINGS.append(line)
            print(f"\n[deployment timing] {line}", flush=True)


def summaries(deployment: harness.Deployment, dag_id: str, run_id: str) -> dict[int, dict[str, Any]]:
    """Each mapped task's summary (its XCom ``return_value``), by map index."""
    return {i: deployment.xcom(dag_id, run_id, "migrate", i) for i in range(PARTITIONS)}


def check_mapped_run(setup: Setup, source: Source, run_id: str) -> dict[int, dict[str, Any]]:
    """What every mapped run must end with; the summaries, by map index."""
    deployment = setup.deployment
    state = deployment.run_state(source.dag_id, run_id)
    tis = deployment.task_instances(source.dag_id, run_id)
    assert state == "success", json.dumps(tis, indent=1)[:6000]

    # The partitions the task made are the helper's queries, in the map indexes' order.
    made = deployment.xcom(source.dag_id, run_id, "partitions")
    assert [p["sql"] for p in made] == [
        q["sql"] for q in read.sql_partitions(source.sql, "hash", PARTITIONS, dialect="postgresql")
    ]
    mapped = sorted((ti for ti in tis if ti["task_id"] == "migrate"), key=lambda ti: ti["map_index"])
    assert [ti["map_index"] for ti in mapped] == list(range(PARTITIONS))
    assert all(ti["state"] == "success" for ti in mapped), mapped

    # Every row has exactly one outcome, and the bad ones failed for their reasons.
    done = summaries(deployment, source.dag_id, run_id)
    parts = partition_hashes(setup.warehouse, source)
    for i, summary in done.items():
        assert summary["total"] == len(parts[i])
        assert summary["migrated"] + summary["failed"] + summary["skipped"] == summary["total"], summary
    assert sum(s["total"] for s in done.values()) == len(source.rows)
    return done


def check_pool_slots(setup: Setup, source: Source, run_id: str) -> None:
    """Each mapped task held as many pool slots as it may have requests in flight (docs/operator.md,
    Scale-out), so the pool bounds the requests of every task sharing it."""
    tis = setup.deployment.task_instances(source.dag_id, run_id)
    mapped = sorted((ti for ti in tis if ti["task_id"] == "migrate"), key=lambda ti: ti["map_index"])
    assert [(ti["pool"], ti["pool_slots"]) for ti in mapped] == [(POOL, MAX_CONCURRENCY)] * PARTITIONS


def failed_by_reason(done: dict[int, dict[str, Any]]) -> dict[str, int]:
    """The tasks' ``failed_by_reason``, added up."""
    reasons: Counter[str] = Counter()
    for summary in done.values():
        reasons.update(summary["failed_by_reason"])
    return dict(reasons)


def check_keys_created_once(emu: UnkeyEmulator, source: Source) -> None:
    """Every valid key of ``source`` is in Unkey, under a key id of its own, and no other of its rows."""
    stored = emu.keys
    hashes = {h for h, _ in source.rows}
    assert {h for h in stored if h in hashes} == set(source.valid)
    assert len({stored[h].key_id for h in source.valid}) == len(source.valid)
    assert all(stored[h].api_id == API_ID for h in source.valid)


def check_migrated_outputs(setup: Setup, source: Source, run_id: str) -> dict[str, str]:
    """The tasks' ``migrated.parquet`` files name each key once, with the id Unkey gave it."""
    stored = setup.emulator.keys
    migrated: dict[str, str] = {}
    for i in range(PARTITIONS):
        for r in pq.read_table(
            setup.shared / source.dag_id / run_id / f"map_{i}" / "migrated.parquet"
        ).to_pylist():
            assert r["hash"] not in migrated
            migrated[r["hash"]] = r["key_id"]
    assert all(stored[h].key_id == k for h, k in migrated.items())
    return migrated


def peak_in_flight(emu: UnkeyEmulator) -> int:
    """The most ``keys.migrateKeys`` requests Unkey processed at once (their ``[admitted, released]``)."""
    events: list[tuple[float, int]] = []
    for r in emu.requests:
        if r.path == MIGRATE and r.admitted is not None and r.released is not None:
            events += [(r.admitted, 1), (r.released, -1)]
    now = peak = 0
    for _, step in sorted(events):
        now += step
        peak = max(peak, now)
    return peak


def check_no_root_key_in_logs(setup: Setup, source: Source, run_id: str) -> int:
    """The root key is in no task log file, no process log, and no log the REST API serves.

    :return: how many log files were read.
    """
    deployment = setup.deployment
    files = deployment.task_log_files() + sorted(deployment.process_logs.glob("*.log"))
    assert any(source.dag_id in str(p) for p in files), "no task log of the run was found"
    for path in files:
        assert ROOT_KEY not in path.read_text(errors="replace"), f"the root key leaked into {path}"
    for ti in deployment.task_instances(source.dag_id, run_id):
        for attempt in range(1, ti["try_number"] + 1):
            text = deployment.task_log(source.dag_id, run_id, ti["task_id"], attempt, ti["map_index"])
            assert ROOT_KEY not in text, (
                f"the root key leaked into {ti['task_id']}[{ti['map_index']}] try {attempt}"
            )
            if ti["task_id"] == "migrate" and attempt == ti["try_number"]:
                assert "Done:" in text, text[-3000:]
    return len(files)


def run(setup: Setup, source: Source, label: str) -> str:
    """Trigger a run of ``source``'s DAG through the REST API and wait for its end; its run id."""
    deployment = setup.deployment
    deployment.wait_for_dag(source.dag_id)
    began = time.monotonic()
    run_id = deployment.trigger(source.dag_id)
    deployment.wait_for_run(source.dag_id, run_id)
    setup.runs[label] = time.monotonic() - began
    return run_id


def run_and_check_mapped(setup: Setup) -> None:
    """The mapped migration of :data:`MAPPED`: every key once, pool slots as documented, no leak."""
    emu = setup.emulator
    emu.reset_log()
    run_id = run(setup, MAPPED, "mapped run")
    done = check_mapped_run(setup, MAPPED, run_id)
    assert failed_by_reason(done) == MAPPED.failed_by_reason
    assert all(s["skipped"] == 0 and s["resumed"] == 0 for s in done.values()), done
    # Every valid key reached Unkey exactly once, and nothing else did.
    counts = emu.hash_counts
    assert set(counts) == set(MAPPED.valid)
    assert max(counts.values()) == 1
    check_keys_created_once(emu, MAPPED)
    assert set(check_migrated_outputs(setup, MAPPED, run_id)) == set(MAPPED.valid)
    # The pool bounds the requests in flight of all the tasks together.
    peak, server_peak = peak_in_flight(emu), emu.load.peak_in_flight
    assert 0 < peak <= POOL_SLOTS and server_peak <= POOL_SLOTS, (peak, server_peak)
    logs = check_no_root_key_in_logs(setup, MAPPED, run_id)
    check_pool_slots(setup, MAPPED, run_id)
    tasks = ", ".join(
        f"[{i}] {s['total']} rows {s['migrated']} migrated {s['failed']} failed in {s['duration_seconds']:.1f} s"
        for i, s in done.items()
    )
    print(
        f"\n{setup.deployment.name}: mapped run {setup.runs['mapped run']:.0f} s; {tasks};"
        f" peak {peak} migrateKeys requests in flight (pool {POOL_SLOTS}); {logs} log files without the root key"
    )
