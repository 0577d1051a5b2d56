"""DAGs for the ledger tests: resume after a SIGKILL, incremental runs on a shared ledger, seam reruns.

Parameters come from ``run_conf``. ``ledger_path`` empty means the default: ``ledger/`` inside the
task's output location.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

PARAMS: dict[str, Any] = {
    "source": "",
    "output_path": "",
    "ledger_path": "",
    "hash_format": "sha256_base64",
}


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
            ledger_path="{{ params.ledger_path }}",
            batch_size=25,
            progress_interval=0.5,
            **operator_kwargs,
        )

    return build()


# Four requests in flight of 25 keys each (not adaptive: the test counts the requests a run makes), a
# segment every 0.2 s: a kill lands with requests in flight and outcomes not yet flushed.
crash = scenario("unkey_l_crash", max_concurrency=4, adaptive=False, ledger_flush_interval=0.2)
incremental = scenario("unkey_l_incremental", list_skipped=True)
seam = scenario("unkey_l_seam", hash_format="sha256_hex", algorithm="seam")
