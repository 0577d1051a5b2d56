"""A real deployment with the CeleryExecutor: scheduler, dag-processor, api-server and two Celery
workers as processes, Redis at 127.0.0.1:6379 as the broker (a database number and a queue of this
run's own), a fresh PostgreSQL metadata database (also the result backend), the emulator in this
process. It runs the mapped warehouse migration of scenario.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from tests import databases
from tests.deployments import harness, scenario

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(1800)]

RECEIVED = re.compile(r"Task \S*execute_workload\S* received")


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[scenario.Setup]:
    harness.require_server("PostgreSQL", databases.PG_HOST, databases.PG_PORT)
    harness.require_server("Redis", harness.REDIS_HOST, harness.REDIS_PORT)
    settings = harness.CelerySettings(workers=2, concurrency=2)
    root = tmp_path_factory.mktemp("celery_executor")
    try:
        with scenario.deployment_setup(root, "CeleryExecutor", "CeleryExecutor", settings) as setup:
            yield setup
    finally:
        # Only this run's keys: another run may use the same database number.
        broker = redis.Redis(host=harness.REDIS_HOST, port=harness.REDIS_PORT, db=settings.redis_db)
        with broker:
            stale = list(broker.scan_iter(f"*{settings.queue}*"))
            if stale:
                broker.delete(*stale)
            # A message of this run's queue left unacknowledged (a worker stopped before it acked).
            for tag, message in broker.hgetall("unacked").items():
                if settings.queue.encode() in message:
                    broker.hdel("unacked", tag)
                    broker.zrem("unacked_index", tag)
            # Kombu's bookkeeping of the bindings, once no run has a binding left in this database.
            if not any(broker.scan_iter("_kombu.binding.*")):
                broker.delete("_kombu.binding_deadlines")


def test_mapped_migration_under_a_pool_on_two_celery_workers(celery: scenario.Setup) -> None:
    scenario.run_and_check_mapped(celery)
    deployment = celery.deployment
    assert deployment.celery is not None
    run = deployment.api("GET", f"/dags/{scenario.MAPPED.dag_id}/dagRuns")["dag_runs"][-1]
    tis = deployment.task_instances(scenario.MAPPED.dag_id, run["dag_run_id"])
    # Every task went through this run's own queue to the workers.
    assert {(ti["queue"], ti["executor"] or "") for ti in tis} <= {
        (deployment.celery.queue, ""),
        (deployment.celery.queue, "CeleryExecutor"),
    }, tis
    received = {
        s.name: len(RECEIVED.findall(s.log.read_text(errors="replace")))
        for s in deployment.services
        if s.name.startswith("celery-worker")
    }
    assert sum(received.values()) == len(tis), received
    print(f"\nCeleryExecutor: tasks received by each worker: {received}")
