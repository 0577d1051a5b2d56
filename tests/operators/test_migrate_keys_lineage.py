"""OpenLineage: the operator's facets, through the OpenLineage provider's own extractor and listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is in the test extra")

from airflow.providers.openlineage.extractors.base import DefaultExtractor
from airflow.providers.openlineage.extractors.manager import ExtractorManager

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator
from tests import databases

REPO = Path(__file__).resolve().parents[2]


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


@pytest.fixture
def unkey_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_DEFAULT",
        json.dumps(
            {"conn_type": "unkey", "host": "https://unkey.internal.example:8443", "password": "unkey_x"}
        ),
    )


def test_the_provider_picks_the_operators_own_facets(unkey_connection: None) -> None:
    op = MigrateKeysOperator(
        task_id="m",
        migration_id="mig",
        api_id="api_12345678",
        parquet_path=[
            "s3://aws_default@exports/keys/part-0.parquet",
            "gcs://google_cloud_default@bk/k.parquet",
        ],
    )
    assert ExtractorManager().get_extractor_class(op) is DefaultExtractor
    lineage = DefaultExtractor(op).extract()
    assert lineage is not None
    assert names(lineage.inputs) == [("s3://exports", "keys/part-0.parquet"), ("gs://bk", "k.parquet")]
    assert names(lineage.outputs) == [("https://unkey.internal.example:8443", "apis/api_12345678")]


def test_validate_only_writes_nothing_to_unkey(unkey_connection: None, tmp_path: Path) -> None:
    op = MigrateKeysOperator(
        task_id="m",
        migration_id="mig",
        api_id="api_12345678",
        parquet_path=str(tmp_path / "k.parquet"),
        validate_only=True,
    )
    lineage = DefaultExtractor(op).extract()
    assert lineage is not None
    assert names(lineage.inputs) == [("file", str(tmp_path / "k.parquet"))]
    assert lineage.outputs == []


@pytest.mark.postgres
def test_sql_inputs_are_the_tables_the_query_reads(
    unkey_connection: None, monkeypatch: pytest.MonkeyPatch, postgres_dsn: str
) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE legacy_keys (key_hash text, owner text)")
        conn.execute("CREATE TABLE owners (id text, active boolean)")
    databases.register_connection(monkeypatch, "unkey_lineage_pg", postgres_dsn)
    sql = "SELECT k.key_hash AS hash FROM legacy_keys k JOIN owners o ON o.id = k.owner WHERE o.active"
    op = MigrateKeysOperator(
        task_id="m", migration_id="mig", api_id="api_12345678", sql=sql, sql_conn_id="unkey_lineage_pg"
    )
    lineage = DefaultExtractor(op).extract()
    assert lineage is not None
    database = postgres_dsn.rsplit("/", 1)[1]
    assert sorted(names(lineage.inputs)) == [
        ("postgres://127.0.0.1:5432", f"{database}.public.legacy_keys"),
        ("postgres://127.0.0.1:5432", f"{database}.public.owners"),
    ]
    assert lineage.job_facets["sql"].query == sql


postgres_dsn = databases.postgres_dsn


@pytest.mark.slow
def test_a_run_emits_the_source_the_api_and_the_outputs(tmp_path: Path) -> None:
    """The OpenLineage provider's listener, under dag.test(), writing events through its file transport."""
    events_file = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENLINEAGE"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "tests" / "dags"),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__NAMESPACE="unkey-tests",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.operators.lineage_run", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    from tests.operators.lineage_run import RESULT

    line = next(line for line in proc.stdout.splitlines() if line.startswith(RESULT))
    result = json.loads(line.removeprefix(RESULT))
    assert result["state"] in ("success", "DagRunState.SUCCESS") and result["stored"] == 50
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    task_events = [e for e in events if e["job"]["name"] == "unkey_lineage.migrate"]
    assert {e["eventType"] for e in task_events} >= {"START", "COMPLETE"}, [e["eventType"] for e in events]
    complete = next(e for e in task_events if e["eventType"] == "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        ("file", str(tmp_path / "legacy" / "keys.parquet"))
    ]
    outputs = {(d["namespace"], d["name"]): d for d in complete["outputs"]}
    api = outputs[(result["url"], "apis/api_lineage")]
    assert api["outputFacets"]["outputStatistics"]["rowCount"] == 50
    assert ("file", str(tmp_path / "out" / "migrated.parquet")) in outputs
    assert ("file", str(tmp_path / "out" / "failed.parquet")) in outputs
    assert "unkey_root_lineage" not in events_file.read_text()
