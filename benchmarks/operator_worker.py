"""``MigrateKeysOperator`` with its defaults, run by ``dag.test()`` in a process of its own, on request.

The throughput suite starts this once (Airflow's import and its metadata database are set up outside
any timing, in a throwaway ``AIRFLOW_HOME``), then writes one JSON line per run to its stdin:
``{"url": ..., "source": ..., "output_path": ...}``. For each it points the ``unkey_default``
connection at ``url``, runs ``benchmarks/dags/unkey_bench_operator.py`` and answers one line
``RESULT {...}`` on stdout: the operator's summary, the migrate task instance's duration (what the
suite's keys/s is taken from), the whole ``dag.test()``'s wall time and this process's CPU time.

Use :class:`OperatorWorker` from the suite; ``python -m benchmarks.operator_worker`` is the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from benchmarks._common import API_ID, MIGRATION_ID, ROOT_KEY

DAGS = Path(__file__).resolve().parent / "dags"
MARK = "RESULT "


class OperatorWorker:
    """The worker process, started with a throwaway ``AIRFLOW_HOME`` under ``home``."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
        self.home = home
        self._log = (home / "worker.log").open("w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.operator_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._read()  # the database is ready

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(MARK):
                answer: dict[str, Any] = json.loads(line[len(MARK) :])
                if "error" in answer:
                    raise RuntimeError(f"the operator's run failed: {answer['error']} (see {self._log.name})")
                return answer
        raise RuntimeError(f"the operator worker ended; see {self._log.name}")

    def run(self, url: str, source: Path, output_path: Path) -> dict[str, Any]:
        assert self._proc.stdin is not None
        request = {"url": url, "source": str(source), "output_path": str(output_path)}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._log.close()


def _answer(out: TextIO, value: dict[str, Any]) -> None:
    out.write(MARK + json.dumps(value, default=str) + "\n")
    out.flush()


def main() -> int:
    # Airflow and the task's logs write to stdout: answers go to the stdout this process started with.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from airflow.utils import db

    db.initdb()
    sys.path.insert(0, str(DAGS))
    from unkey_bench_operator import bench_dag  # type: ignore[import-not-found]

    _answer(answers, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        os.environ["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps(
            {"conn_type": "unkey", "host": request["url"], "password": ROOT_KEY}
        )
        with tempfile.TemporaryDirectory() as work:
            report = Path(work) / "report.json"
            conf = {
                "source": request["source"],
                "output_path": request["output_path"],
                "report": str(report),
                "migration_id": MIGRATION_ID,
                "api_id": API_ID,
            }
            cpu0, t0 = time.process_time(), time.perf_counter()
            try:
                run = bench_dag.test(run_conf=conf)
            except Exception as exc:
                _answer(answers, {"error": f"{type(exc).__name__}: {exc}"})
                continue
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            tis = {ti.task_id: ti for ti in run.get_task_instances()}
            migrate = tis["migrate"]
            if str(migrate.state) not in ("success", "TaskInstanceState.SUCCESS"):
                _answer(answers, {"error": f"the migrate task ended {migrate.state}"})
                continue
            _answer(
                answers,
                {
                    "summary": json.loads(report.read_text())["summary"],
                    "task_seconds": (migrate.end_date - migrate.start_date).total_seconds(),
                    "dag_test_seconds": wall,
                    "cpu_seconds": cpu,
                },
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
