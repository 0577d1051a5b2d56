"""Assets under a real scheduler: a migration's asset event runs the DAG scheduled on its API.

A LocalExecutor deployment (scheduler, dag-processor and api-server as processes, a fresh PostgreSQL
metadata database) parses ``example_dags/``, with the emulator in this process and the ``unkey_default``
connection pointing at it. The test triggers ``example_unkey_assets_migrate`` through the REST API, as a
user does, and checks what the scheduler did with the asset event: ``example_unkey_assets_downstream``
ran (``asset_triggered``, success), the event's ``extra`` holds the run's counts, the downstream task
read them, and the migration's task instance links to its API in Unkey's dashboard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases
from tests.deployments import harness, scenario

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.timeout(1800)]

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
MIGRATE = "example_unkey_assets_migrate"
DOWNSTREAM = "example_unkey_assets_downstream"
DASHBOARD = "https://app.unkey.com/acme"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[scenario.Setup]:
    """A LocalExecutor deployment of the example DAGs, against the emulator."""
    harness.require_server("PostgreSQL", databases.PG_HOST, databases.PG_PORT)
    root = tmp_path_factory.mktemp("assets")
    began = time.monotonic()
    with ExitStack() as stack:
        emu = stack.enter_context(
            UnkeyEmulator.quick(root_key=scenario.ROOT_KEY, api_id="api_demo", migration_id="mig_demo")
        )
        metadata = stack.enter_context(databases.fresh_postgres_database("unkey_assets_meta"))
        connection = {
            "conn_type": "unkey",
            "host": emu.url,
            "password": scenario.ROOT_KEY,
            "extra": {"dashboard_url": DASHBOARD},
        }
        env = {
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW_CONN_UNKEY_DEFAULT": json.dumps(connection),
            # The example's asset names the API's host: the emulator's here.
            "UNKEY_EXAMPLE_BASE_URL": emu.url,
        }
        deployment = harness.Deployment(
            root, name="LocalExecutor (assets)", executor="LocalExecutor", metadata_uri=metadata, env=env
        )
        setup = scenario.Setup(deployment, emu, warehouse="", shared=root)
        try:
            deployment.start()
            yield setup
        finally:
            deployment.stop()
            runs = ", ".join(f"{run} {seconds:.0f} s" for run, seconds in setup.runs.items())
            line = (
                f"{deployment.name}: end to end {time.monotonic() - began:.0f} s (up"
                f" {deployment.timings.get('start', 0):.0f} s, {runs}, stop {deployment.timings.get('stop', 0):.0f} s)"
            )
            harness.TIMINGS.append(line)
            print(f"\n[deployment timing] {line}", flush=True)


def dag_runs(deployment: harness.Deployment, dag_id: str) -> list[dict[str, Any]]:
    return list(deployment.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])


def test_a_migration_runs_the_dag_scheduled_on_its_api(assets: scenario.Setup) -> None:
    deployment, emu = assets.deployment, assets.emulator
    asset_uri = f"unkey://{urlsplit(emu.url).netloc}/api_demo"
    for dag_id in (MIGRATE, DOWNSTREAM):
        deployment.wait_for_dag(dag_id)
    # A DAG is paused when it appears: unpaused, it runs when its asset is updated.
    deployment.api("PATCH", f"/dags/{DOWNSTREAM}", json={"is_paused": False})
    assert dag_runs(deployment, DOWNSTREAM) == []

    began = time.monotonic()
    run_id = deployment.trigger(MIGRATE)
    assert deployment.wait_for_run(MIGRATE, run_id) == "success", deployment.task_instances(MIGRATE, run_id)

    def downstream_ended() -> dict[str, Any] | None:
        runs = [r for r in dag_runs(deployment, DOWNSTREAM) if r["state"] in ("success", "failed")]
        return runs[0] if runs else None

    downstream = harness.wait_until(f"{DOWNSTREAM} to run and end", downstream_ended, interval=2.0)
    assets.runs["migration and downstream"] = time.monotonic() - began
    assert (downstream["run_type"], downstream["state"]) == ("asset_triggered", "success"), downstream
    assert len(dag_runs(deployment, DOWNSTREAM)) == 1

    # The event the migration recorded: on the emulator's API, with the run's counts in its extra.
    events = deployment.api(
        "GET", "/assets/events", params={"source_dag_id": MIGRATE, "source_run_id": run_id}
    )["asset_events"]
    (event,) = events
    assert (event["uri"], event["source_task_id"], event["source_map_index"]) == (
        asset_uri,
        "migrate_keys",
        -1,
    )
    extra = event["extra"]
    counts = {k: extra[k] for k in ("total", "migrated", "failed", "failed_by_reason", "skipped")}
    assert counts == {
        "total": 300,
        "migrated": 298,
        "failed": 2,
        "failed_by_reason": {"invalid": 1, "duplicate_in_source": 1},
        "skipped": 0,
    }
    assert (extra["migration_id"], extra["api_id"], extra["run_id"]) == ("mig_demo", "api_demo", run_id)
    assert extra["base_url"] == emu.url
    assert [r["run_id"] for r in event["created_dagruns"]] == [downstream["dag_run_id"]]
    assert len(emu.keys) == 298

    # The downstream task read the triggering event's extra.
    report = deployment.xcom(DOWNSTREAM, downstream["dag_run_id"], "report_landed_keys")
    assert report == {
        "events": 1,
        "migrated": 298,
        "failed": 2,
        "failed_by_reason": {"invalid": 1, "duplicate_in_source": 1},
        "runs": [run_id],
    }

    # The migration's task instance links to its API in the workspace's dashboard.
    links = deployment.api("GET", f"/dags/{MIGRATE}/dagRuns/{run_id}/taskInstances/migrate_keys/links")
    assert links["extra_links"] == {"Unkey dashboard": f"{DASHBOARD}/apis/api_demo"}
    print(
        f"\n{deployment.name}: migration and the asset-triggered run in {assets.runs['migration and downstream']:.0f} s;"
        f" event {event['uri']} with {extra['migrated']} migrated, {extra['failed']} failed"
    )
