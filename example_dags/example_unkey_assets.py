"""Run a DAG when keys have landed in Unkey: the migration's asset, and a DAG scheduled on it.

``example_unkey_assets_migrate`` exports a few hundred legacy keys to Parquet (two of them bad: a
missing hash, and a key exported twice) and migrates them with ``MigrateKeysOperator``, whose outlet is
the Unkey API the keys go to: the asset ``unkey://<host>/<api_id>`` that ``unkey_asset`` builds. When the
task succeeds, Airflow records an event of that asset, and the task puts its counts in the event's
``extra``: rows read (``total``), ``migrated``, ``failed`` and ``failed_by_reason``, ``skipped``, the
migration id, the run id, and where the outcome files are.

``example_unkey_assets_downstream`` is scheduled on that asset: the scheduler runs it after each
migration run that succeeded, and its task reads the triggering events' ``extra``: the keys that
landed, and the rows that failed by reason. (A mapped migration records one event per task instance,
each with its own partition's counts: the task adds them up.)

With Unkey's own API the operator declares the asset by itself when ``api_id`` is literal text; the
outlet is spelled out here because the asset names the API's host, and the example may run against
another (the bundled emulator, a self-hosted Unkey): set ``UNKEY_EXAMPLE_BASE_URL`` to the base URL of
the ``unkey_default`` connection, the same for the scheduler and the DAG processor (``make emulator``
serves ``http://127.0.0.1:8787``, with the root key ``unkey_root_demo`` and the ids below).
``tests/deployments/test_assets.py`` runs both DAGs under a scheduler against the emulator.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_unkey.assets import unkey_asset
from airflow_provider_unkey.base_url import DEFAULT_BASE_URL
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

#: The API and the migration: literal text, so that the asset is known when the DAG is parsed.
API_ID = "api_demo"
MIGRATION_ID = "mig_demo"
#: Where the ``unkey_default`` connection points; the asset names its host.
UNKEY_BASE_URL = os.environ.get("UNKEY_EXAMPLE_BASE_URL", DEFAULT_BASE_URL)
#: The Unkey API the keys land in, as an Airflow asset.
API_ASSET = unkey_asset(API_ID, base_url=UNKEY_BASE_URL)
KEY_COUNT = 300
#: Planted in the export: row 5 has no hash, row 9 repeats row 8's key.
MISSING_HASH_ROW, DUPLICATE_ROW = 5, 9


def demo_hash(i: int) -> str:
    """The base64 SHA-256 of the i-th legacy key, as Unkey's ``sha256`` migrations take it."""
    return base64.b64encode(hashlib.sha256(f"sk_assets_demo_{i:06d}".encode()).digest()).decode()


@dag(
    dag_id="example_unkey_assets_migrate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["unkey", "example"],
)
def example_unkey_assets_migrate() -> None:
    @task
    def export_keys(run_id: str | None = None) -> str:
        """Stand-in for the legacy system's export job."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        hashes: list[str | None] = [demo_hash(i) for i in range(KEY_COUNT)]
        hashes[MISSING_HASH_ROW] = None
        hashes[DUPLICATE_ROW] = hashes[DUPLICATE_ROW - 1]
        table = pa.table(
            {
                "hash": pa.array(hashes, pa.string()),
                "externalId": [f"user_{i % 37}" for i in range(KEY_COUNT)],
            }
        )
        home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
        path = home / "unkey_demo" / "assets" / f"{str(run_id).replace(':', '_')}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return str(path)

    migrate = MigrateKeysOperator(
        task_id="migrate_keys",
        migration_id=MIGRATION_ID,
        api_id=API_ID,
        parquet_path="{{ ti.xcom_pull(task_ids='export_keys') }}",
        # What the operator declares by itself for Unkey's own API (see the module's notes).
        outlets=[API_ASSET],
    )
    export_keys() >> migrate


@dag(
    dag_id="example_unkey_assets_downstream",
    schedule=[API_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["unkey", "example"],
)
def example_unkey_assets_downstream() -> None:
    @task
    def report_landed_keys(triggering_asset_events: Any = None) -> dict[str, Any]:
        """What a DAG does once keys have landed: here, count them from the events' ``extra``."""
        events = list((triggering_asset_events or {}).get(API_ASSET, []))
        if not events:
            print(f"No event of {API_ASSET.uri} triggered this run (was it triggered by hand?)")
            return {"events": 0, "migrated": 0, "failed": 0, "failed_by_reason": {}}
        migrated = failed = 0
        by_reason: Counter[str] = Counter()
        for event in events:
            extra = event.extra
            # Every row the migration read has one outcome: the counts add up.
            if extra["total"] != extra["migrated"] + extra["failed"] + extra["skipped"]:
                raise ValueError(f"the counts of {extra['run_id']} do not add up: {extra}")
            print(
                f"{extra['run_id']} (map index {extra['map_index']}): {extra['migrated']} of"
                f" {extra['total']} keys landed in {extra['api_id']}, {extra['failed']} failed"
                f" {extra['failed_by_reason']}, {extra['skipped']} known already"
            )
            migrated += extra["migrated"]
            failed += extra["failed"]
            by_reason.update(extra["failed_by_reason"])
        return {
            "events": len(events),
            "migrated": migrated,
            "failed": failed,
            "failed_by_reason": dict(by_reason),
            "runs": sorted({event.extra["run_id"] for event in events}),
        }

    report_landed_keys()


migrate_dag = example_unkey_assets_migrate()
downstream_dag = example_unkey_assets_downstream()
