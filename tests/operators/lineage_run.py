"""Run one migration under ``dag.test()`` with OpenLineage on, in a process of its own.

``python -m tests.operators.lineage_run <workdir>``: the parent test sets ``AIRFLOW_HOME`` and the
OpenLineage transport (a file) in the environment, so that Airflow and the OpenLineage provider read
them when they are first imported. Prints the run's state as JSON on a line starting with ``RESULT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT_KEY = "unkey_root_lineage"
#: Starts the line with the summary (Airflow logs to stdout too).
RESULT = "LINEAGE RESULT: "


def main(workdir: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_provider_unkey.testing import UnkeyEmulator

    source = workdir / "legacy" / "keys.parquet"
    source.parent.mkdir(parents=True, exist_ok=True)
    hashes = [
        base64.b64encode(hashlib.sha256(f"sk_lineage_{i}".encode()).digest()).decode() for i in range(50)
    ]
    pq.write_table(pa.table({"hash": [*hashes, "not a hash"]}), source)

    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_lineage", migration_id="mig_lineage") as emu:
        os.environ["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps(
            {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}
        )
        from airflow.utils import db

        db.initdb()
        from tests.dags.unkey_lineage_test_dags import lineage_dag

        run = lineage_dag.test(run_conf={"source": str(source), "output_path": str(workdir / "out")})
        print(RESULT + json.dumps({"state": str(run.state), "stored": len(emu.keys), "url": emu.url}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
