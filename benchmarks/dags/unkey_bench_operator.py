"""The DAG the throughput suite runs with ``dag.test()`` (``benchmarks/operator_worker.py``).

``MigrateKeysOperator`` with its defaults (only the ids, the source and where outputs go are given),
then ``report``, which writes what the operator returned and how long its task instance ran into the
JSON file named by ``params.report``.
"""

from __future__ import annotations

import json
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

PARAMS: dict[str, Any] = {"source": "", "output_path": "", "report": "", "migration_id": "", "api_id": ""}


@task(trigger_rule="all_done")
def report(params: dict[str, Any] | None = None, ti: Any = None) -> None:
    assert params is not None
    with open(params["report"], "w") as f:
        json.dump({"summary": ti.xcom_pull(task_ids="migrate")}, f, default=str)


@dag(
    dag_id="unkey_bench_operator",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params=PARAMS,
)
def unkey_bench_operator() -> None:
    migrate = MigrateKeysOperator(
        task_id="migrate",
        migration_id="{{ params.migration_id }}",
        api_id="{{ params.api_id }}",
        parquet_path="{{ params.source }}",
        output_path="{{ params.output_path }}",
    )
    migrate >> report()


bench_dag = unkey_bench_operator()
