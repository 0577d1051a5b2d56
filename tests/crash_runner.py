"""Runs one ledger test DAG with ``dag.test()`` in a process of its own, so a test can SIGKILL it.

Usage: ``python -m tests.crash_runner <dag_id> <logical date> <run_conf as JSON>``. The caller sets
``AIRFLOW_HOME``, the DAGs folder and the ``unkey_default`` connection in the environment. The same
logical date is the same DAG run: running it again after a kill is the task's next try.
"""

from __future__ import annotations

import importlib
import json
import sys

import pendulum


def main() -> int:
    dag_id, logical_date, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from airflow.utils import db

    db.initdb()
    module = importlib.import_module("tests.dags.unkey_ledger_test_dags")
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == dag_id)
    when = pendulum.parse(logical_date)
    run = dag.test(logical_date=when, run_after=when, run_conf=conf)
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    print("RESULT " + json.dumps({"run_id": run.run_id, "states": states}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
