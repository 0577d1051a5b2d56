"""Migrate every day the keys issued since the last run, on one shared ledger, and prove keys verify.

Until the cut-over, the legacy system keeps issuing keys, so the migration runs every day over a
source that keeps growing. Each run exports every key issued before its logical date and migrates
the export with ``MigrateKeysOperator`` on a **shared ledger**: one ``ledger_path`` for every run. The
ledger holds every key already migrated, by any run, so a run sends only the new keys and reports the
others as ``skipped`` (known to the ledger), and Unkey sees each key once. ``VerifyKeysOperator`` then
proves that test keys verify by their old plaintext: the legacy system's test account gets a canary
key every day, and each run verifies the first day's (migrated by the first run) and yesterday's (just
migrated).

The export and the ledger live under the ``shared_dir`` param. Keep it the same for every run (the
ledger is what makes the runs incremental, and the permanent record of every key id Unkey created),
and on storage every worker sees: in production an object-storage URI such as
``s3://aws_default@unkey-migration/acme``. See docs/reliability.md, "Shared ledgers and incremental
runs".

To run it against Unkey, add an ``unkey_default`` connection with your root key, set the defaults
of the params ``migration_id``, ``api_id`` and ``shared_dir`` to yours (scheduled runs take the
defaults), replace ``export_issued_keys`` with your system's export (or migrate from a table:
``sql=...``, ``sql_conn_id=...``) and the canaries with your own test keys, and unpause the DAG. To
rehearse it first, point ``unkey_default`` at the bundled emulator: ``make emulator`` serves
``http://127.0.0.1:8787`` with the root key ``unkey_root_demo`` and the params' default ids.
``tests/test_example_dags_more.py`` runs it that way on two days.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import ObjectStoragePath, Param, dag, task

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator
from airflow_provider_unkey.operators.verify_keys import VerifyKeysOperator

#: The day the legacy system issued its first key, and how many it issues a day.
FIRST_DAY = pendulum.datetime(2026, 1, 1, tz="UTC")
KEYS_PER_DAY = 20
SHARED_DIR = os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "unkey_incremental"
)


def canary_key(day: str) -> str:
    """The test account's key issued on ``day`` (``YYYY-MM-DD``): its plaintext is known."""
    return f"sk_test_canary_{day}"


def issued_keys(before: datetime) -> list[tuple[str, str]]:
    """Stand-in for the legacy system: every key issued before ``before``, as (plaintext, owner).

    Each day's first key is the test account's canary; the others are customers'.
    """
    keys = []
    day = FIRST_DAY
    while day < before:
        for i in range(KEYS_PER_DAY):
            issued_at = day + timedelta(hours=24 * i / KEYS_PER_DAY)
            if issued_at >= before:
                break
            plaintext = canary_key(day.to_date_string()) if i == 0 else f"sk_live_{day:%Y%m%d}_{i:04d}"
            keys.append((plaintext, "test_account" if i == 0 else f"user_{i}"))
        day = day.add(days=1)
    return keys


@dag(
    dag_id="example_unkey_incremental",
    schedule="@daily",
    start_date=FIRST_DAY,
    catchup=False,
    max_active_runs=1,  # one run at a time on the ledger
    tags=["unkey", "example"],
    params={
        "migration_id": Param("mig_demo", type="string", minLength=3),
        "api_id": Param("api_demo", type="string", minLength=3),
        "shared_dir": Param(SHARED_DIR, type="string", description="the exports and the ledger"),
    },
)
def example_unkey_incremental() -> None:
    @task
    def export_issued_keys(params: dict[str, Any], logical_date: pendulum.DateTime, ds: str) -> str:
        """Stand-in for the legacy system's export job: every key issued so far, with hex SHA-256 hashes."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = issued_keys(before=logical_date)
        table = pa.table(
            {
                "key_hash": [hashlib.sha256(plaintext.encode()).hexdigest() for plaintext, _ in keys],
                "owner_id": [owner for _, owner in keys],
            }
        )
        path = ObjectStoragePath(params["shared_dir"]) / "exports" / f"issued_keys_{ds}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:
            pq.write_table(table, file)
        print(f"{len(keys):,} keys issued before {logical_date}, exported to {path}")
        return str(path)

    migrate = MigrateKeysOperator(
        task_id="migrate_new_keys",
        migration_id="{{ params.migration_id }}",
        api_id="{{ params.api_id }}",
        parquet_path="{{ ti.xcom_pull(task_ids='export_issued_keys') }}",
        hash_format="sha256_hex",
        column_mapping={"hash": "key_hash", "externalId": "owner_id"},
        output_path="{{ params.shared_dir }}/runs/{{ ds }}",
        ledger_path="{{ params.shared_dir }}/ledger",  # the same for every run: what makes them incremental
    )

    prove = VerifyKeysOperator(
        task_id="prove_keys_verify",
        migration_id="{{ params.migration_id }}",
        keys={
            "first day's canary": canary_key(FIRST_DAY.to_date_string()),
            "yesterday's canary": canary_key("{{ macros.ds_add(ds, -1) }}"),
        },
    )

    export_issued_keys() >> migrate >> prove


dag_object = example_unkey_incremental()
