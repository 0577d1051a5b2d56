"""The DAGs the deployment tests (``tests/deployments``) run on a real scheduler and executor.

A mapped warehouse migration: a task splits the source query with ``sql_partitions`` and
``MigrateKeysOperator`` is expanded over the partitions, each task taking ``max_concurrency`` slots of
a pool smaller than their total demand. The test sets everything through the environment of every
process: the connections ``unkey_default`` and ``warehouse``, the shared directory for the outputs and
the ledger (``UNKEY_DEPLOYMENT_SHARED``), and the pool, partition count and concurrency.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_unkey.operators.io import sql_partitions
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

SHARED = os.environ.get("UNKEY_DEPLOYMENT_SHARED", "/tmp/unkey-deployment-tests")
POOL = os.environ.get("UNKEY_DEPLOYMENT_POOL", "unkey_pool")
PARTITIONS = int(os.environ.get("UNKEY_DEPLOYMENT_PARTITIONS", "3"))
MAX_CONCURRENCY = int(os.environ.get("UNKEY_DEPLOYMENT_MAX_CONCURRENCY", "4"))
WAREHOUSE = "warehouse"


def migration(dag_id: str, table: str) -> Any:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=16,
    )
    def build() -> None:
        @task
        def partitions() -> list[dict[str, str]]:
            return sql_partitions(f"SELECT hash, name FROM {table}", WAREHOUSE, "hash", PARTITIONS)

        MigrateKeysOperator.partial(
            task_id="migrate",
            migration_id="mig_deploy",
            api_id="api_deploy",
            sql_conn_id=WAREHOUSE,
            pool=POOL,
            max_concurrency=MAX_CONCURRENCY,
            batch_size=25,
            output_path=f"{SHARED}/{dag_id}/{{{{ run_id }}}}/map_{{{{ ti.map_index }}}}",
            ledger_path=f"{SHARED}/{dag_id}/ledger",
            ledger_flush_interval=0.2,
            progress_interval=1,
            retries=1,
            retry_delay=timedelta(seconds=2),
        ).expand_kwargs(partitions())

    return build()


# Every key migrated once, under a pool smaller than the tasks' demand.
mapped = migration("unkey_deploy_mapped", "keys_mapped")
# The same, with one task's process killed mid-run by the test (LocalExecutor only).
sigkill = migration("unkey_deploy_sigkill", "keys_sigkill")
