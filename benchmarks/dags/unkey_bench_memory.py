"""The DAGs ``benchmarks/task_memory.py`` runs with ``airflow dags test``: ``MigrateKeysOperator`` at its
defaults, from Parquet (``unkey_bench_memory_parquet``) or from an SQL table
(``unkey_bench_memory_sql``), then ``report``, which writes the operator's summary into the JSON file
named by ``params.report`` so the benchmark can check that every key was migrated.
"""

from __future__ import annotations

import json
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

PARAMS: dict[str, Any] = {
    "source": "",
    "output_path": "",
    "report": "",
    "migration_id": "",
    "api_id": "",
}


@task(trigger_rule="all_done")
def report(params: dict[str, Any] | None = None, ti: Any = None) -> None:
    assert params is not None
    with open(params["report"], "w") as f:
        json.dump({"summary": ti.xcom_pull(task_ids="migrate")}, f, default=str)


def _dag(dag_id: str, **source: str) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
    ) as dag:
        migrate = MigrateKeysOperator(
            task_id="migrate",
            migration_id="{{ params.migration_id }}",
            api_id="{{ params.api_id }}",
            output_path="{{ params.output_path }}",
            **source,
        )
        migrate >> report()
    return dag


parquet_dag = _dag("unkey_bench_memory_parquet", parquet_path="{{ params.source }}")
sql_dag = _dag("unkey_bench_memory_sql", sql="{{ params.source }}", sql_conn_id="bench_warehouse")
