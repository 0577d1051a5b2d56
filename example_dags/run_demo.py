"""``make demo``: run the Parquet example DAG against the bundled Unkey emulator.

Starts the emulator on a free loopback port, points the ``unkey_default`` connection at it, creates
the Airflow metadata database under ``AIRFLOW_HOME`` (the Makefile keeps it in ``./airflow_home``)
and runs ``example_unkey_parquet`` with ``dag.test()``. No Unkey account and no Airflow services are
needed.

The terminal shows the migration's progress lines and a short table at the end; Airflow's own output
(every task's log) goes to ``demo.log`` in ``AIRFLOW_HOME``, named on the first and the last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
ROOT_KEY = "unkey_root_demo"
DAG_ID = "example_unkey_parquet"
#: Enough keys for the progress lines to show the run going (a second or two on the emulator).
KEY_COUNT = 100_000
#: A progress or end line of the migrate task, as its log shows it (after the logger's prefix).
_SHOWN = re.compile(
    r"(\d[\d,]*(/[\d,]+)? keys\b.*keys/s|The migration report: |Verifying \d+ test keys|verified as expected)"
)
#: The message of a structured log line: ``<time> [<level>] <message> [<logger>] loc=...``.
_MESSAGE = re.compile(r"^\S+ \[\s*\w+\s*\] (?P<msg>.*?)(?: +\[[\w.]+\])?(?: +\w+=\S+)*$")


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to stdout and stderr (by Python or by C code) to ``log_path``.

    :return: the terminal, for what the demo prints itself.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def follow(log_path: Path, terminal: TextIO, stop: threading.Event) -> None:
    """Echo the migrate task's progress lines from the log to the terminal while the DAG runs."""
    with open(log_path, encoding="utf-8", errors="replace") as log:
        log.seek(0, os.SEEK_END)
        while True:
            line = log.readline()
            if not line:
                if stop.is_set():
                    return
                time.sleep(0.2)
                continue
            if _SHOWN.search(line):
                match = _MESSAGE.match(line.strip())
                terminal.write(f"  {match.group('msg') if match else line.strip()}\n")


def xcom(
    run_id: str, task_id: str, *, dag_id: str = DAG_ID, map_index: int = -1, key: str = "return_value"
) -> Any:
    """A value a DAG run left in XCom, or ``None``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == key,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def table(summary: dict[str, Any], proof: dict[str, Any] | None, log_path: Path, stored: int) -> str:
    """The demo's closing table."""
    outputs = summary.get("outputs", {})
    reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(summary["failed_by_reason"].items())) or "none"
    rows = [
        ("rows read", f"{summary['total']:,}"),
        ("migrated", f"{summary['migrated']:,}"),
        ("failed", f"{summary['failed']:,} ({reasons})"),
        ("keys/s", f"{summary['keys_per_second']:,.0f} over {summary['duration_seconds']:.1f} s"),
    ]
    if proof is not None:
        rows.append(("test keys verified", f"{proof['passed']} of {proof['checked']} as expected"))
    for name in ("migrated", "failed", "ledger", "report", "plot"):
        if name in outputs:
            rows.append((f"{name} {'file' if name != 'ledger' else ''}".strip(), str(outputs[name])))
    rows.append(("full log", str(log_path)))
    rows.append(("emulator", f"{stored:,} keys stored"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(HERE.parent / "airflow_home")))
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(HERE)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "demo.log"
    log_path.write_text("")
    print(f"Airflow's full output goes to {log_path}", flush=True)

    from airflow_provider_unkey.testing import UnkeyEmulator

    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_demo", migration_id="mig_demo") as emulator:
        os.environ["AIRFLOW_CONN_UNKEY_DEFAULT"] = json.dumps(
            {"conn_type": "unkey", "host": emulator.url, "password": ROOT_KEY}
        )
        print(f"Unkey emulator listening on {emulator.url}; running the DAG {DAG_ID}:", flush=True)
        stop = threading.Event()
        with output_to(log_path) as terminal:
            follower = threading.Thread(target=follow, args=(log_path, terminal, stop), daemon=True)
            follower.start()
            try:
                from airflow.utils import db

                db.initdb()
                from example_dags.example_unkey_parquet import dag_object

                run = dag_object.test(run_conf={"key_count": KEY_COUNT})
            finally:
                stop.set()
                follower.join(timeout=10)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        ok = str(run.state) in ("success", "DagRunState.SUCCESS")
        print(f"\nDAG run {run.run_id}: {run.state}")
        summary = xcom(run.run_id, "migrate_keys")
        if summary is None:
            print(f"The migration left no summary (tasks: {states}); see {log_path}")
            return 1
        print(table(summary, xcom(run.run_id, "prove_keys_verify"), log_path, len(emulator.keys)))
        if not ok:
            print(f"Some tasks did not succeed: {states}; see {log_path}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
