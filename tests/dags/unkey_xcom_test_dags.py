"""DAGs for the XCom tests: ``MigrateKeysOperator`` with and without ``do_xcom_push``.

Parameters come from ``run_conf``. Each DAG runs only ``migrate``: the test reads the XComs of its task
instance from Airflow's database.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

PARAMS: dict[str, Any] = {"source": "", "output_path": ""}


def scenario(dag_id: str, **operator_kwargs: Any) -> Any:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
    )
    def build() -> None:
        MigrateKeysOperator(
            task_id="migrate",
            migration_id="mig_test",
            api_id="api_test",
            parquet_path="{{ params.source }}",
            output_path="{{ params.output_path }}",
            batch_size=25,
            progress_interval=0.5,
            **operator_kwargs,
        )

    return build()


# The control: what the operator pushes when it may (the summary, the frames, the skipped rows).
pushed = scenario("unkey_x_pushed", list_skipped=True)
silent = scenario("unkey_x_silent", do_xcom_push=False, list_skipped=True)
# Fails on its ratio after writing its outputs: the path that pushes the summary explicitly.
silent_failing = scenario("unkey_x_silent_failing", do_xcom_push=False, max_invalid_ratio=0.05)
pushed_failing = scenario("unkey_x_pushed_failing", max_invalid_ratio=0.05)
