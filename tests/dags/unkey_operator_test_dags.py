"""DAGs that the operator tests run with ``dag.test()``; one per scenario, parameters from ``run_conf``.

Each DAG runs ``MigrateKeysOperator`` as ``migrate`` and then, whatever happened, ``report``, which
writes what ``migrate`` pushed to XCom into the JSON file named by ``params.report``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

ALL_FIELDS = {
    "hash": "key_hash",
    "name": "label",
    "externalId": "owner",
    "meta": "meta_json",
    "roles": "role_list",
    "permissions": "scopes",
    "expires": "expires_at",
    "enabled": "active",
    "credits.remaining": "credits_left",
    "credits.refill.interval": "refill_every",
    "credits.refill.amount": "refill_amount",
    "credits.refill.refillDay": "refill_day",
    "ratelimits": "limits",
}
PARAMS: dict[str, Any] = {
    "source": "",
    "output_path": "",
    "report": "",
    "migration_id": "mig_test",
    "api_id": "api_test",
    "partitions": 4,
}
COMMON: dict[str, Any] = {
    "migration_id": "{{ params.migration_id }}",
    "api_id": "{{ params.api_id }}",
    "progress_interval": 0.5,
    "batch_size": 50,
}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return {"frame": json.loads(value.to_json(orient="records"))}
    return value


@task(trigger_rule="all_done")
def report(mapped: bool = False, params: dict[str, Any] | None = None, ti: Any = None) -> None:
    assert params is not None
    map_indexes = list(range(int(params["partitions"]))) if mapped else None
    pulled = {
        key: ti.xcom_pull(task_ids="migrate", key=key, map_indexes=map_indexes)
        for key in ("return_value", "migrated", "failed", "summary")
    }
    with open(params["report"], "w") as f:
        json.dump(
            {
                k: _jsonable(v) if not isinstance(v, list) else [_jsonable(x) for x in v]
                for k, v in pulled.items()
            },
            f,
            default=str,
        )


def scenario(dag_id: str, dag_kwargs: dict[str, Any] | None = None, **operator_kwargs: Any) -> Any:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
        **(dag_kwargs or {}),
    )
    def build() -> None:
        migrate = MigrateKeysOperator(
            task_id="migrate", output_path="{{ params.output_path }}", **{**COMMON, **operator_kwargs}
        )
        migrate >> report()

    return build()


parquet = scenario("unkey_t_parquet", parquet_path="{{ params.source }}")
parquet_all_fields = scenario(
    "unkey_t_parquet_all_fields", parquet_path="{{ params.source }}", column_mapping=ALL_FIELDS
)
parquet_dry_run = scenario("unkey_t_parquet_dry_run", parquet_path="{{ params.source }}", validate_only=True)
parquet_small_xcom = scenario(
    "unkey_t_parquet_small_xcom", parquet_path="{{ params.source }}", xcom_max_rows=3
)
parquet_ratio = scenario("unkey_t_parquet_ratio", parquet_path="{{ params.source }}", max_invalid_ratio=0.05)
sqlite = scenario("unkey_t_sqlite", sql="{{ params.source }}", sql_conn_id="unkey_test_sqlite")
# Batches of exactly batch_size (not adaptive): a test counts the keys a failing source leaves unsent.
sqlite_fixed = scenario(
    "unkey_t_sqlite_fixed", sql="{{ params.source }}", sql_conn_id="unkey_test_sqlite", adaptive=False
)
# The query from a .sql file, rendered as a template (it reads params.partitions).
sqlite_file = scenario(
    "unkey_t_sqlite_file",
    dag_kwargs={"template_searchpath": [os.path.dirname(os.path.abspath(__file__))]},
    sql="sqlite_keys.sql",
    sql_conn_id="unkey_test_sqlite",
)
postgres = scenario(
    "unkey_t_postgres",
    sql="{{ params.source }}",
    sql_conn_id="unkey_test_pg",
    output_conn_id="unkey_test_pg",
    output_table_prefix="unkey_outcomes",
)


#: A workspace rate limit shared with production, compressed to a 2 s window so a test takes seconds.
SHARED_WORKSPACE: dict[str, Any] = {"rate_limit_window": 2.0, "rate_limit_headroom": 0.25, "batch_size": 10}
shared_workspace = scenario(
    "unkey_t_shared_workspace", parquet_path="{{ params.source }}", **SHARED_WORKSPACE
)


def mapped_scenario(dag_id: str, by: str, **operator_kwargs: Any) -> Any:
    """Partitions of the Parquet source (``by`` as ``parquet_partitions`` takes it), one task each."""

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
    )
    def build() -> None:
        @task
        def partitions(params: dict[str, Any]) -> list[dict[str, Any]]:
            from airflow_provider_unkey.operators.io import parquet_partitions

            return parquet_partitions(params["source"], int(params["partitions"]), by=by)  # type: ignore[arg-type]

        migrate = MigrateKeysOperator.partial(
            task_id="migrate",
            output_path="{{ params.output_path }}/part_{{ ti.map_index }}",
            **{**COMMON, **operator_kwargs},
        ).expand_kwargs(partitions())
        migrate >> report(mapped=True)

    return build()


mapped_dag = mapped_scenario("unkey_t_mapped", "auto")
mapped_by_hash_dag = mapped_scenario("unkey_t_mapped_by_hash", "hash")
mapped_shared_workspace = mapped_scenario("unkey_t_mapped_shared_workspace", "auto", **SHARED_WORKSPACE)
