"""Migrate API keys from a PostgreSQL warehouse into Unkey, in parallel partitions, and report by partition.

The legacy keys sit in a warehouse table, ``legacy_api_keys`` (the hex SHA-256 of each key, its
owner and its scopes as comma-separated text). A first task splits the query into partitions by the
hash's first character with ``sql_partitions``; ``MigrateKeysOperator`` is mapped over them, each
task reading only its share through a server-side cursor. Every mapped task takes
``max_concurrency`` slots of the ``unkey`` pool, so the pool's size bounds the requests in flight to
Unkey of all of them together. The outcomes go to SQL tables in the warehouse
(``unkey_outcomes_migrated`` and ``unkey_outcomes_failed``, tagged with the run id and the task), and
a last task reads them back and reports the counts by reason for each partition.

To run it against Unkey:

1. Create the pool the mapped tasks share (16 slots: four tasks of four requests in flight)::

       airflow pools set unkey 16 "Unkey migration"

2. Add the connections: ``unkey_default`` with your root key, and ``unkey_warehouse`` to the
   warehouse (``pip install "airflow-provider-unkey[postgres]"``)::

       airflow connections add unkey_default --conn-type unkey --conn-password unkey_...
       airflow connections add unkey_warehouse --conn-uri postgresql://user:pass@warehouse:5432/legacy

3. Change ``SOURCE_SQL`` to your table and columns, and trigger the DAG with your ``migration_id``
   and ``api_id`` params.

To rehearse it first, point ``unkey_default`` at the bundled emulator: ``make emulator`` serves
``http://127.0.0.1:8787`` with the root key ``unkey_root_demo`` and the params' default ids.
``tests/test_example_dags_more.py`` runs it that way, against a throwaway PostgreSQL database.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_unkey.operators.io import sql_partitions
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

WAREHOUSE = "unkey_warehouse"
#: The columns are named as Unkey's key fields, so no ``column_mapping`` is needed.
SOURCE_SQL = """
    SELECT key_hash AS hash, owner_id AS "externalId", scopes AS permissions
    FROM legacy_api_keys
    WHERE revoked_at IS NULL
"""
OUTCOMES = "unkey_outcomes"  # the tables unkey_outcomes_migrated and unkey_outcomes_failed


@dag(
    dag_id="example_unkey_warehouse",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["unkey", "example"],
    params={
        "migration_id": Param("mig_demo", type="string", minLength=3),
        "api_id": Param("api_demo", type="string", minLength=3),
        "partitions": Param(4, type="integer", minimum=1, maximum=16),
    },
)
def example_unkey_warehouse() -> None:
    @task
    def partitions(params: dict[str, Any]) -> list[dict[str, str]]:
        """One query per partition: ``[{"sql": "SELECT * FROM (...) WHERE SUBSTR(hash, 1, 1) IN (...)"}, ...]``."""
        return sql_partitions(
            SOURCE_SQL, WAREHOUSE, "hash", int(params["partitions"]), hash_format="sha256_hex"
        )

    migrate = MigrateKeysOperator.partial(
        task_id="migrate_keys",
        migration_id="{{ params.migration_id }}",
        api_id="{{ params.api_id }}",
        sql_conn_id=WAREHOUSE,
        hash_format="sha256_hex",  # converted to the base64 that a sha256 migration wants
        output_conn_id=WAREHOUSE,
        output_table_prefix=OUTCOMES,
        pool="unkey",
        max_concurrency=4,  # requests in flight per task, and so pool slots per task
    ).expand_kwargs(partitions())

    @task(trigger_rule="all_done")  # report what was written even when a partition failed
    def report_outcomes(run_id: str) -> dict[str, dict[str, int]]:
        """Count this run's outcomes by reason for each partition, from the outcome tables."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        rows = PostgresHook(postgres_conn_id=WAREHOUSE).get_records(
            f"""
            SELECT task_key, 'migrated', count(*) FROM {OUTCOMES}_migrated WHERE run_id = %(run)s
            GROUP BY task_key
            UNION ALL
            SELECT task_key, reason, count(*) FROM {OUTCOMES}_failed WHERE run_id = %(run)s
            GROUP BY task_key, reason
            """,
            parameters={"run": run_id},
        )
        # task_key is "migrate_keys[<map index>]#try<n>": a retried partition shows each try.
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for task_key, reason, count in sorted(rows):
            counts[task_key][reason] = int(count)
        for task_key, by_reason in counts.items():
            print(f"{task_key}: {', '.join(f'{reason} {n:,}' for reason, n in by_reason.items())}")
        return dict(counts)

    migrate >> report_outcomes()


dag_object = example_unkey_warehouse()
