"""Real Airflow deployments for tests: ``scheduler``, ``dag-processor``, ``api-server`` (and Celery
workers) as subprocesses of the test, on loopback ports, with a temporary ``AIRFLOW_HOME`` and a fresh
PostgreSQL metadata database.

:class:`Deployment` starts the processes (after ``airflow db migrate``), waits for
``/api/v2/monitor/health``, talks to the REST API (``GET /auth/token`` in all-admins mode), and stops
every process it started, with their children (a task process is a process group of its own), when
the test ends, whether it passed or not. Each process writes to a log file of its own under the
test's temporary directory; :meth:`Deployment.tail` gives the last lines of each, and the
``conftest.py`` beside this module attaches them to a failed test's report.

Settings reach every process through the environment only (``AIRFLOW__...``, ``AIRFLOW_CONN_...``):
nothing is written to an ``airflow.cfg``.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
import requests

from tests import databases

AIRFLOW = Path(sys.executable).with_name("airflow")
DAGS_FOLDER = Path(__file__).resolve().with_name("dags")
#: Hang protection only, never a measure of speed: the machine running the tests may be slow and shared.
DEADLINE = 600.0
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: Timings of each deployment set-up, printed at the end of the session (see conftest.py).
TIMINGS: list[str] = []

T = TypeVar("T")


class DeploymentError(AssertionError):
    """A deployment did not come up, a process died, or a wait passed its deadline."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open while choosing, so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def require_server(name: str, host: str, port: int) -> None:
    """Skip the test when nothing listens at ``host:port``, or fail when ``CI`` is set."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        databases._unreachable(name, host, port, str(exc))


def wait_until(
    what: str, check: Callable[[], T | None], *, deadline: float = DEADLINE, interval: float = 1.0
) -> T:
    """Call ``check`` until it returns something other than ``None`` (or false); fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise DeploymentError(f"gave up after {deadline:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Service:
    """One process of the deployment, and the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stream: IO[bytes]


@dataclass
class CelerySettings:
    """Where the CeleryExecutor's broker is, and what is this deployment's own there."""

    workers: int = 2
    concurrency: int = 2
    #: A Redis database number and a queue name of this deployment's own, so that two test runs (two
    #: clones, two CI jobs on one host) never take each other's tasks.
    redis_db: int = field(default_factory=lambda: 1 + secrets.randbelow(15))
    queue: str = field(default_factory=lambda: f"unkey_deploy_{secrets.token_hex(4)}")

    @property
    def broker_url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"


class Deployment:
    """A real Airflow deployment of the test's own: start it with :meth:`start`, stop it with :meth:`stop`.

    :param root: a fresh directory: ``airflow_home/`` and the processes' logs go under it.
    :param name: what the timings and failure reports call it.
    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param metadata_uri: an empty PostgreSQL database, as ``postgresql://user@host:port/name``.
    :param env: more environment for every process (connections, the DAGs' settings).
    :param celery: the CeleryExecutor's broker and workers (with ``executor="CeleryExecutor"``).
    :param parallelism: ``[core] parallelism``: task instances running at once in the deployment.
    """

    def __init__(
        self,
        root: Path,
        *,
        name: str,
        executor: str,
        metadata_uri: str,
        env: Mapping[str, str] = {},
        celery: CelerySettings | None = None,
        parallelism: int = 8,
    ) -> None:
        self.root = root
        self.name = name
        self.home = root / "airflow_home"
        self.process_logs = root / "process_logs"
        self.executor = executor
        self.celery = celery
        workers = celery.workers if celery else 0
        self.api_port, log_port, trigger_log_port, *self.worker_log_ports = free_ports(3 + workers)
        self.url = f"http://127.0.0.1:{self.api_port}"
        sqlalchemy_uri = metadata_uri.replace("postgresql://", "postgresql+psycopg2://", 1)
        # Nothing of the test process's Airflow settings (tests/conftest.py sets a SQLite home).
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        base.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR=executor,
            AIRFLOW__CORE__PARALLELISM=str(parallelism),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlalchemy_uri,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__WORKERS="1",
            # The scheduler signs the tokens its tasks present to the execution API: one secret for both.
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__FERNET_KEY="",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
            # Two cores: one parsing process; a new DAG file is seen within seconds.
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        )
        if celery is not None:
            base.update(
                AIRFLOW__CELERY__BROKER_URL=celery.broker_url,
                AIRFLOW__CELERY__RESULT_BACKEND="db+" + sqlalchemy_uri,
                AIRFLOW__CELERY__WORKER_CONCURRENCY=str(celery.concurrency),
                AIRFLOW__OPERATORS__DEFAULT_QUEUE=celery.queue,
            )
        base.update(env)
        self.env = base
        self.services: list[Service] = []
        self.timings: dict[str, float] = {}
        self._token: str | None = None
        self._http = requests.Session()
        self._stopped = False

    # --- life cycle ---------------------------------------------------------------------------------
    def start(self) -> Deployment:
        """``airflow db migrate``, then every process; returns once the health endpoint says all is well.

        :raises DeploymentError: with the last lines of every process's log, when anything failed.
        """
        atexit.register(self.stop)  # pytest killed mid-test: do not leave a scheduler behind
        self.home.mkdir(parents=True)
        self.process_logs.mkdir(parents=True)
        began = time.monotonic()
        try:
            migrate = self._spawn("db-migrate", ["db", "migrate"])
            code = migrate.popen.wait(timeout=DEADLINE)
            if code != 0:
                raise DeploymentError(f"airflow db migrate exited with {code}")
            self.timings["db migrate"] = time.monotonic() - began
            self.services.remove(migrate)
            migrate.stream.close()
            self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
            self._spawn("scheduler", ["scheduler"])
            self._spawn("dag-processor", ["dag-processor"])
            if self.celery is not None:
                for i, port in enumerate(self.worker_log_ports, start=1):
                    self._spawn(
                        f"celery-worker-{i}",
                        [
                            "celery",
                            "worker",
                            "--queues",
                            self.celery.queue,
                            "--concurrency",
                            str(self.celery.concurrency),
                            "--celery-hostname",
                            f"w{i}-{self.celery.queue}@%h",
                            "--pid",
                            str(self.root / f"celery-worker-{i}.pid"),
                        ],
                        # Each worker serves its task logs on a port of its own.
                        env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)},
                    )
            wait_until("the health endpoint to report every component healthy", self._healthy)
            for service in self.services:
                if service.name.startswith("celery-worker"):
                    wait_until(
                        f"{service.name} to be ready",
                        lambda s=service: (
                            self._check_alive() or " ready." in s.log.read_text(errors="replace")
                        ),
                    )
            self.timings["start"] = time.monotonic() - began
        except BaseException as exc:
            tails = self.tail()
            self.stop()
            raise DeploymentError(f"deployment {self.name} did not start: {exc!r}\n{tails}") from exc
        return self

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] = {}) -> Service:
        log = self.process_logs / f"{name}.log"
        stream = log.open("wb")
        popen = subprocess.Popen(
            [str(AIRFLOW), *args],
            cwd=self.root,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, killed as a whole by stop()
        )
        service = Service(name, popen, log, stream)
        self.services.append(service)
        return service

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            answer = self._http.get(f"{self.url}/api/v2/monitor/health", timeout=10)
        except requests.RequestException:
            return False
        if answer.status_code != 200:
            return False
        health = answer.json()
        parts = ("metadatabase", "scheduler", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def _check_alive(self) -> bool:
        """Raise when a process of the deployment has exited; ``False`` otherwise (for ``wait_until``)."""
        dead = [f"{s.name} (exit {s.popen.returncode})" for s in self.services if s.popen.poll() is not None]
        if dead:
            raise DeploymentError(f"deployment {self.name}: {', '.join(dead)} exited\n{self.tail()}")
        return False

    def stop(self) -> None:
        """Stop every process and its children. Idempotent.

        SIGTERM to each process the deployment started, the Celery workers first (a warm shutdown lets
        a task that is ending acknowledge its message), then SIGKILL to whatever is left after 15 s:
        their process groups, and every process that descended from them (a task process is a process
        group of its own, which killpg does not reach).
        """
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        began = time.monotonic()
        procs: list[psutil.Process] = []
        for service in self.services:
            with suppress(psutil.Error):
                parent = psutil.Process(service.popen.pid)
                procs += [parent, *parent.children(recursive=True)]
        ordered = sorted(self.services, key=lambda s: not s.name.startswith("celery-worker"))
        for service in ordered:
            with suppress(ProcessLookupError):
                service.popen.send_signal(signal.SIGTERM)
        for service in ordered:
            with suppress(subprocess.TimeoutExpired):
                service.popen.wait(timeout=max(0.0, 15 - (time.monotonic() - began)))
        for service in self.services:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(service.popen.pid, signal.SIGKILL)
        for proc in procs:
            with suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=30)
        for service in self.services:
            with suppress(subprocess.TimeoutExpired):
                service.popen.wait(timeout=30)
            service.stream.close()
        self._http.close()
        self.timings["stop"] = time.monotonic() - began

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every process's log."""
        parts = []
        for log in sorted(self.process_logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            parts.append(f"----- {log.name} (last {min(lines, len(text))} of {len(text)} lines) -----")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def task_log_files(self) -> list[Path]:
        """Every task log file the deployment wrote (under ``AIRFLOW_HOME/logs``)."""
        return sorted(p for p in (self.home / "logs").rglob("*") if p.is_file())

    # --- the REST API -------------------------------------------------------------------------------
    def token(self) -> str:
        """A token for the REST API (``GET /auth/token``, all-admins mode)."""
        if self._token is None:
            answer = self._http.get(f"{self.url}/auth/token", timeout=30)
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        """``method /api/v2<path>``; the JSON answer.

        :raises DeploymentError: when the status is not one of ``expect``.
        """
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        answer = self._http.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=60, **kwargs)
        if answer.status_code not in expect:
            raise DeploymentError(f"{method} {path}: {answer.status_code} {answer.text[:2000]}")
        return answer.json() if answer.content else None

    def wait_for_dag(self, dag_id: str) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` and the API knows it."""

        def known() -> bool:
            self._check_alive()
            return self.api("GET", f"/dags/{dag_id}", expect=(200, 404)).get("dag_id") == dag_id

        wait_until(f"DAG {dag_id} to be parsed", known)

    def create_pool(self, name: str, slots: int) -> None:
        self.api("POST", "/pools", json={"name": name, "slots": slots, "include_deferred": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and trigger a run of it; its run id."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})}
        )
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str) -> str:
        """Wait until the run ends; its state (``success`` or ``failed``)."""

        def ended() -> str | None:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return wait_until(f"run {run_id} of {dag_id} to end", ended, interval=2.0)

    def clear_task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> None:
        """Clear a failed task instance, as a user does from the UI: Airflow runs it again."""
        self.api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": [[task_id, map_index] if map_index >= 0 else task_id],
                "only_failed": True,
                "reset_dag_runs": True,
            },
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(answer["task_instances"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        result: dict[str, Any] = self.api("GET", path if map_index < 0 else f"{path}/{map_index}")
        return result

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        """The XCom value as the task pushed it (JSON)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        value = self.api("GET", path, params={"map_index": map_index})["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """A task try's log as the API serves it, as text."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        answer = self.api(
            "GET",
            path,
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        return json.dumps(answer["content"])
