"""A real deployment with the LocalExecutor: scheduler, dag-processor and api-server as processes, a
fresh PostgreSQL metadata database, the emulator in this process.

1. A mapped warehouse migration under a pool smaller than the tasks' demand (see scenario.py).
2. One mapped task's process killed with SIGKILL mid-run: Airflow retries it, the retry resumes from
   the ledger, and every key still exists in Unkey once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from airflow_provider_unkey.migration.ledger import read_ledger
from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases
from tests.deployments import harness, scenario


def _task_sdk_at_least(version: str) -> bool:
    from importlib.metadata import version as installed

    from packaging.version import Version

    return Version(installed("apache-airflow-task-sdk")) >= Version(version)


pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(1800)]

#: Whether the task SDK retries a task killed by a signal (apache/airflow#55767, task SDK 1.1.2 and later).
AIRFLOW_RETRIES_SIGNAL_KILLED_TASKS = _task_sdk_at_least("1.1.2")
#: The partition whose task is killed, and the request of it from which on Unkey holds them.
TARGET = 1
HOLD_FROM = 4


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[scenario.Setup]:
    harness.require_server("PostgreSQL", databases.PG_HOST, databases.PG_PORT)
    root = tmp_path_factory.mktemp("local_executor")
    with scenario.deployment_setup(root, "LocalExecutor", "LocalExecutor") as setup:
        yield setup


def test_mapped_migration_under_a_pool(local: scenario.Setup) -> None:
    scenario.run_and_check_mapped(local)


class Gate:
    """Holds the ``keys.migrateKeys`` requests carrying ``hashes`` from the ``hold_from``-th on, until
    released: the task that sends them is then certainly mid-run, with requests in flight."""

    def __init__(self, emu: UnkeyEmulator, hashes: set[str], hold_from: int) -> None:
        self.hashes, self.hold_from = hashes, hold_from
        self.reached, self.released = threading.Event(), threading.Event()
        self._seen = self._open = 0
        #: The hashes of every request of ``hashes`` that arrived before the release.
        self.sent: Counter[str] = Counter()
        self._idle = threading.Condition()
        self._emu = emu
        self._original: Callable[..., Any] = emu._delay_and_route  # type: ignore[attr-defined]
        emu._delay_and_route = self._route  # type: ignore[method-assign]

    def _route(self, req: Any, route: Any, body: Any, n_keys: int, draw: Any) -> Any:
        mine = req.path == scenario.MIGRATE and {k["hash"] for k in body["keys"]} <= self.hashes
        if not mine or self.released.is_set():
            return self._original(req, route, body, n_keys, draw)
        with self._idle:
            self._seen += 1
            self.sent.update(k["hash"] for k in body["keys"])
            held = self._seen >= self.hold_from
            self._open += 1
        try:
            if held:
                self.reached.set()
                self.released.wait()
            return self._original(req, route, body, n_keys, draw)
        finally:
            with self._idle:
                self._open -= 1
                self._idle.notify_all()

    def release_and_drain(self) -> None:
        """Let the held requests through (their keys are created; nobody reads the answers) and wait
        until Unkey has handled each."""
        self.released.set()
        with self._idle:
            self._idle.wait_for(lambda: self._open == 0, timeout=harness.DEADLINE)
        self._emu._delay_and_route = self._original  # type: ignore[method-assign]


def task_process(ti: dict[str, Any]) -> psutil.Process:
    """The process running a task instance: the ``pid`` Airflow recorded for it, which the task runner
    titles ``airflow worker -- <task instance id>``."""
    proc = psutil.Process(ti["pid"])
    cmdline = " ".join(proc.cmdline())
    assert ti["id"] in cmdline, f"pid {ti['pid']} of {ti['task_id']}[{ti['map_index']}] runs {cmdline!r}"
    return proc


def test_a_sigkilled_mapped_task_is_retried_and_resumes_from_the_ledger(local: scenario.Setup) -> None:
    source, deployment, emu = scenario.SIGKILL, local.deployment, local.emulator
    dag_id = source.dag_id
    rows = scenario.partition_hashes(local.warehouse, source)[TARGET]
    target = set(rows)
    ledger_dir = local.shared / dag_id / "ledger"
    deployment.wait_for_dag(dag_id)
    emu.reset_log()
    gate = Gate(emu, target, HOLD_FROM)
    began = time.monotonic()
    try:
        run_id = deployment.trigger(dag_id)

        def held() -> bool:
            assert deployment.run_state(dag_id, run_id) not in ("success", "failed"), "the run ended first"
            return gate.reached.is_set()

        harness.wait_until(f"request {HOLD_FROM} of partition {TARGET} to reach Unkey", held, interval=0.2)

        def recorded() -> int:
            # What the task's first requests answered is in the ledger (flushed every 0.2 s); the
            # invalid and duplicate rows, recorded before anything is sent, do not count.
            rows = read_ledger(ledger_dir).to_pylist()
            return sum(1 for r in rows if r["map_index"] == TARGET and r["reason"] is None)

        harness.wait_until("the ledger to record keys the task created", recorded, interval=0.2)
        ti = harness.wait_until(
            f"migrate[{TARGET}] to run with a pid",
            lambda: (
                (t := deployment.task_instance(dag_id, run_id, "migrate", TARGET))["pid"]
                and t["state"] == "running"
                and t
            ),
        )
        assert ti["try_number"] == 1
        proc = task_process(ti)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        ledger_at_kill = [r for r in read_ledger(ledger_dir).to_pylist() if r["map_index"] == TARGET]
    finally:
        gate.release_and_drain()

    def after_the_kill() -> str | None:
        state = deployment.task_instance(dag_id, run_id, "migrate", TARGET)["state"]
        return (
            state
            if state in ("up_for_retry", "failed", "queued", "scheduled", "running", "success")
            else None
        )

    if harness.wait_until("Airflow to see the killed task end", after_the_kill, interval=0.5) == "failed":
        # The task SDK before apache/airflow#55767 (Airflow 3.1.1's 1.1.1) fails a task killed by a
        # signal without its retries: a user clears it, and the next try resumes all the same.
        assert not AIRFLOW_RETRIES_SIGNAL_KILLED_TASKS, "the killed task failed without its retry"
        deployment.clear_task_instance(dag_id, run_id, "migrate", TARGET)
    deployment.wait_for_run(dag_id, run_id)
    local.runs["SIGKILL run"] = time.monotonic() - began

    done = scenario.check_mapped_run(local, source, run_id)
    assert scenario.failed_by_reason(done) == source.failed_by_reason | {
        "unconfirmed": done[TARGET]["failed_by_reason"].get("unconfirmed", 0)
    }
    retried = deployment.task_instance(dag_id, run_id, "migrate", TARGET)
    assert retried["try_number"] == 2 and retried["state"] == "success"
    assert all(
        deployment.task_instance(dag_id, run_id, "migrate", i)["try_number"] == 1
        for i in range(scenario.PARTITIONS)
        if i != TARGET
    )
    summary = done[TARGET]
    assert summary["resumed"] > 0, json.dumps(summary, indent=1)
    assert summary["skipped"] == 0 and summary["total"] == len(rows)

    # Every valid key exists in Unkey once; the retry re-sent only keys whose outcome the ledger lacked.
    scenario.check_keys_created_once(emu, source)
    recorded_hashes = {r["hash"] for r in ledger_at_kill if r["reason"] is None}
    counts = emu.hash_counts
    assert set(counts) == set(source.valid)
    assert max(counts.values()) <= 2
    resent = {h for h, c in counts.items() if c == 2}
    assert resent <= set(gate.sent) - recorded_hashes
    # The retry took every key the ledger knew as created from it, and only those.
    assert summary["resumed"] == len(recorded_hashes)
    # The keys try 1 recorded as created are reported by the retry with the ids Unkey gave them.
    migrated = scenario.check_migrated_outputs(local, source, run_id)
    for r in ledger_at_kill:
        if r["reason"] is None:
            assert migrated[r["hash"]] == r["key_id"]
    logs = scenario.check_no_root_key_in_logs(local, source, run_id)
    scenario.check_pool_slots(local, source, run_id)
    print(
        f"\nLocalExecutor: SIGKILL run {local.runs['SIGKILL run']:.0f} s; killed migrate[{TARGET}]"
        f" (pid {ti['pid']}) with {len(recorded_hashes)} created keys in the ledger; the retry resumed"
        f" {summary['resumed']}, re-sent {len(resent)}, {summary['failed_by_reason']}; {logs} log files"
        " without the root key"
    )
