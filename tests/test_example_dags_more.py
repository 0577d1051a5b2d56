"""The warehouse and the incremental example DAGs, run with ``dag.test()`` against the emulator.

``dag.test()`` runs a DAG only once it is serialized from the DAG bundle it lives in; the tests' DAGs
folder is ``tests/dags`` (conftest.py), so the example DAGs' tests point the ``dags-folder`` bundle at
``example_dags`` while they run.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases

postgres_dsn = databases.postgres_dsn

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO / "example_dags"
ROOT_KEY = "unkey_root_test"
CONF = {"migration_id": "mig_test", "api_id": "api_test"}


def b64(plaintext: str) -> str:
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


def test_example_dags_parse() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow before 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    # Airflow 3.3's DagBag has no include_examples: its examples are a bundle of their own.
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= {
        "example_unkey_parquet",
        "example_unkey_warehouse",
        "example_unkey_incremental",
        "example_unkey_assets_migrate",
        "example_unkey_assets_downstream",
    }


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture
def example_bundle(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dag.test()`` syncs the ``dags-folder`` bundle, whose path is ``settings.DAGS_FOLDER``."""
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS))


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_test", migration_id="mig_test") as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        yield emu


def xcom(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """What a task of a DAG run returned (it must have returned something)."""
    from example_dags.run_demo import xcom as left_in_xcom

    value = left_in_xcom(run_id, task_id, dag_id=dag_id, map_index=map_index)
    assert value is not None, f"{dag_id} {run_id} {task_id}[{map_index}] left no return value"
    return value


def states(run: Any) -> dict[str, list[str]]:
    """task id -> the states of its task instances, by map index."""
    out: dict[str, list[str]] = {}
    for ti in sorted(run.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index)):
        out.setdefault(ti.task_id, []).append(str(ti.state))
    return out


# --- the warehouse ---------------------------------------------------------------------------------


def legacy_warehouse(dsn: str, count: int, emulator: UnkeyEmulator) -> dict[str, int]:
    """The table ``legacy_api_keys`` as the example reads it, with planted bad rows, and one of its keys
    already in Unkey.

    :return: the expected outcome counts, by reason (``migrated`` too).
    """
    import psycopg

    rows = []
    for i in range(count):
        key_hash: str | None = hashlib.sha256(f"sk_wh_{i}".encode()).hexdigest()
        scopes = "docs.read,docs.write"
        revoked = dt.datetime(2025, 6, 1, tzinfo=dt.UTC) if i in range(10, 15) else None
        if i == 5:
            key_hash = None  # invalid: no hash
        elif i == 6:
            key_hash = "not-a-hex-digest"  # invalid
        elif i == 7:
            scopes = "docs.read,billing admin"  # invalid: a space in a permission
        elif i == 9:
            key_hash = hashlib.sha256(b"sk_wh_8").hexdigest()  # duplicate_in_source of row 8
        rows.append((key_hash, f"user_{i % 97}", scopes, revoked))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE legacy_api_keys (id serial PRIMARY KEY, key_hash text, owner_id text, "
            "scopes text, revoked_at timestamptz)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO legacy_api_keys (key_hash, owner_id, scopes, revoked_at) VALUES (%s, %s, %s, %s)",
                rows,
            )
    emulator.add_existing_hash(b64("sk_wh_20"))  # already_exists
    # Rows 10-14 are revoked: not read.
    return {"migrated": count - 5 - 5, "invalid": 3, "duplicate_in_source": 1, "already_exists": 1}


@pytest.mark.slow
@pytest.mark.postgres
def test_warehouse_example(
    example_bundle: None,
    emulator: UnkeyEmulator,
    postgres_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg
    from airflow.models.pool import Pool

    from example_dags.example_unkey_warehouse import dag_object

    count, partitions = 2_000, 4
    expected = legacy_warehouse(postgres_dsn, count, emulator)
    databases.register_connection(monkeypatch, "unkey_warehouse", postgres_dsn)
    # What the user does once: `airflow pools set unkey 16 "Unkey migration"`. dag.test() itself runs
    # the tasks one at a time and never checks a pool (it runs without one too), but a scheduler runs
    # no task of a pool that does not exist: the test makes it as the DAG's docstring tells users to.
    Pool.create_or_update_pool("unkey", 16, "Unkey migration", include_deferred=False)

    run = dag_object.test(run_conf={**CONF, "partitions": partitions})

    assert states(run) == {
        "partitions": ["success"],
        "migrate_keys": ["success"] * partitions,
        "report_outcomes": ["success"],
    }
    # Each mapped task held max_concurrency slots of the pool.
    mapped = [ti for ti in run.get_task_instances() if ti.task_id == "migrate_keys"]
    assert {(ti.pool, ti.pool_slots) for ti in mapped} == {("unkey", 4)}
    # The report: counts by reason for each partition, as the outcome tables hold them.
    report = xcom("example_unkey_warehouse", run.run_id, "report_outcomes")
    assert sorted(report) == [f"migrate_keys[{i}]#try1" for i in range(partitions)]
    totals: Counter[str] = Counter()
    for i in range(partitions):
        summary = xcom("example_unkey_warehouse", run.run_id, "migrate_keys", map_index=i)
        by_reason = report[f"migrate_keys[{i}]#try1"]
        assert by_reason == {"migrated": summary["migrated"], **summary["failed_by_reason"]}
        assert summary["migrated"] > 0  # every partition had its share
        totals.update(by_reason)
    assert totals == expected
    with psycopg.connect(postgres_dsn) as conn:
        migrated = conn.execute(
            "SELECT hash, key_id FROM unkey_outcomes_migrated WHERE run_id = %s", (run.run_id,)
        ).fetchall()
    assert len(migrated) == expected["migrated"]
    # Every key reached Unkey exactly once, with the key id the table holds.
    assert all(n == 1 for n in emulator.hash_counts.values())
    assert len(emulator.hash_counts) == expected["migrated"] + expected["already_exists"]
    assert all(emulator.keys[h].key_id == key_id for h, key_id in migrated)
    assert emulator.keys[b64("sk_wh_0")].request_fields() == {
        "hash": b64("sk_wh_0"),
        "externalId": "user_0",
        "permissions": ["docs.read", "docs.write"],
    }


# --- incremental runs --------------------------------------------------------------------------------


@pytest.mark.slow
def test_incremental_example_sends_only_new_keys(
    example_bundle: None, emulator: UnkeyEmulator, tmp_path: Path
) -> None:
    import pendulum

    from example_dags.example_unkey_incremental import KEYS_PER_DAY, dag_object

    dag_id = "example_unkey_incremental"
    conf = {**CONF, "shared_dir": str(tmp_path / "shared")}
    # Run 1 exports the keys of 10 days (1-10 January), run 2 those of 13.
    first, second = pendulum.datetime(2026, 1, 11, tz="UTC"), pendulum.datetime(2026, 1, 14, tz="UTC")
    old, new = 10 * KEYS_PER_DAY, 3 * KEYS_PER_DAY
    summaries, proofs = [], []
    for logical_date in (first, second):
        run = dag_object.test(logical_date=logical_date, run_conf=conf)
        assert states(run) == {
            "export_issued_keys": ["success"],
            "migrate_new_keys": ["success"],
            "prove_keys_verify": ["success"],
        }, logical_date
        summaries.append(xcom(dag_id, run.run_id, "migrate_new_keys"))
        proofs.append(xcom(dag_id, run.run_id, "prove_keys_verify"))

    one, two = summaries
    assert (one["total"], one["migrated"], one["skipped"], one["failed"]) == (old, old, 0, 0)
    # Run 2 sends only the 3 new days' keys; the rest are skipped, as known to the shared ledger.
    assert (two["total"], two["migrated"], two["skipped"], two["failed"]) == (old + new, new, old, 0)
    assert two["outputs"]["ledger"] == one["outputs"]["ledger"]
    # Unkey received every key exactly once, over both runs.
    assert len(emulator.keys) == old + new
    assert set(emulator.hash_counts.values()) == {1}
    assert set(emulator.hash_counts) == set(emulator.keys)
    # The proof: the first day's canary and yesterday's, in both runs.
    for proof, yesterday in zip(proofs, ("2026-01-10", "2026-01-13"), strict=True):
        assert (proof["checked"], proof["passed"], proof["failed"]) == (2, 2, 0)
        assert {r["key"]: r["code"] for r in proof["results"]} == {
            "first day's canary": "VALID",
            "yesterday's canary": "VALID",
        }
        assert b64(f"sk_test_canary_{yesterday}") in emulator.keys
    # The shared ledger holds every key once, with the id Unkey returned.
    ledger = pq.read_table(tmp_path / "shared" / "ledger").to_pylist()
    assert len(ledger) == old + new
    assert {row["hash"]: row["key_id"] for row in ledger} == {
        h: key.key_id for h, key in emulator.keys.items()
    }
