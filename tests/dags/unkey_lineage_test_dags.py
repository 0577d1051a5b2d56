"""A migration for the OpenLineage test (tests/operators/test_migrate_keys_lineage.py): source and outputs by params."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

with DAG(
    "unkey_lineage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"source": "", "output_path": ""},
) as lineage_dag:
    MigrateKeysOperator(
        task_id="migrate",
        migration_id="mig_lineage",
        api_id="api_lineage",
        parquet_path="{{ params.source }}",
        output_path="{{ params.output_path }}",
    )
