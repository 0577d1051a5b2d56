"""``make demo``: run the example migration DAG against the bundled Unkey emulator.

Starts the emulator on a free loopback port, points the ``unkey_default`` connection at it, creates
the Airflow metadata database under ``AIRFLOW_HOME`` (the Makefile keeps it in ``./airflow_home``)
and runs the DAG with ``dag.test()``. No Unkey account and no Airflow services are needed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT_KEY = "unkey_root_demo"


def main() -> int:
    os.environ.setdefault("AIRFLOW_HOME", str(HERE.parent / "airflow_home"))
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(HERE)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    from airflow_provider_unkey.testing import UnkeyEmulator

    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_demo", migration_id="mig_demo") as emulator:
        os.environ["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps(
            {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY}
        )
        print(f"Unkey emulator listening on {emulator.url}", flush=True)

        from airflow.utils import db

        db.initdb()
        from example_dags.example_unkey_migrate_keys import dag_object

        run = dag_object.test()
        # This run's outputs: the newest failed.parquet (earlier demo runs leave theirs beside it).
        failed = sorted(
            Path(os.environ["AIRFLOW_HOME"]).glob(
                "unkey_migrations/example_unkey_migrate_keys/*/migrate_keys/failed.parquet"
            ),
            key=lambda p: p.stat().st_mtime,
        )[-1:]
        print(f"\nDAG run {run.run_id}: {run.state}")
        for path in failed:
            import pyarrow.parquet as pq

            print(f"Failed rows ({path}):")
            for row in pq.read_table(path, columns=["source_row", "reason", "detail"]).to_pylist():
                print(f"  row {row['source_row']}: {row['reason']}: {row['detail']}")
        print(f"Emulator: {len(emulator.keys)} keys stored, statuses {dict(emulator.status_counts)}")
        return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1


if __name__ == "__main__":
    sys.exit(main())
