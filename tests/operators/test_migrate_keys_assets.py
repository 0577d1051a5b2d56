"""``unkey://`` assets: the URI and its registration, the operator's outlets, and the asset events of runs.

The runs go through ``dag.test()`` against the emulator: the example DAG (``example_unkey_assets``),
and DAGs written for the test into a DAGs folder of its own (mapped tasks, a run that fails).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.assets import (
    api_host,
    create_asset,
    default_outlets,
    event_extra,
    record_asset_events,
    sanitize_uri,
    unkey_asset,
)
from airflow_provider_unkey.get_provider_info import get_provider_info
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator
from airflow_provider_unkey.testing import UnkeyEmulator

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
ROOT_KEY = "unkey_root_assets_test"


def example_module() -> ModuleType:
    """``example_dags.example_unkey_assets``, imported afresh: its asset names ``UNKEY_EXAMPLE_BASE_URL``."""
    return importlib.reload(importlib.import_module("example_dags.example_unkey_assets"))


def task_instance(run: Any, task_id: str, map_index: int = -1, session: Any = None) -> Any:
    kwargs = {} if session is None else {"session": session}
    (ti,) = [t for t in run.get_task_instances(**kwargs) if (t.task_id, t.map_index) == (task_id, map_index)]
    return ti


# --- the URI -------------------------------------------------------------------------------------------
def test_unkey_asset_names_the_api_by_host_and_id() -> None:
    assert unkey_asset("api_123").uri == "unkey://api.unkey.com/api_123"
    assert (
        unkey_asset("api_123", base_url="https://API.Unkey.com:443/").uri == "unkey://api.unkey.com/api_123"
    )
    assert unkey_asset("api_123", base_url="http://127.0.0.1:8787").uri == "unkey://127.0.0.1:8787/api_123"
    assert unkey_asset("api_1", base_url="unkey.internal:8443/v2").uri == "unkey://unkey.internal:8443/api_1"
    assert unkey_asset("api_1", base_url="http://[::1]:8787").uri == "unkey://[::1]:8787/api_1"
    # The asset's name is its URI: Asset(uri=...) elsewhere is the same asset.
    assert unkey_asset("api_123").name == unkey_asset("api_123").uri
    assert api_host() == "api.unkey.com"


@pytest.mark.parametrize(
    ("api_id", "base_url", "message"),
    [
        ("", "https://api.unkey.com", "needs the API id"),
        ("api/1", "https://api.unkey.com", "one path segment"),
        ("api 1", "https://api.unkey.com", "one path segment"),
        ("api_1", "https://", r"must be http\(s\)://host"),
    ],
)
def test_unkey_asset_refuses_what_names_no_api(api_id: str, base_url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unkey_asset(api_id, base_url=base_url)


def test_the_handler_normalises_the_host_and_the_path() -> None:
    from airflow.sdk import Asset

    assert (
        sanitize_uri(urlsplit("unkey://API.Unkey.COM/api_123/")).geturl() == "unkey://api.unkey.com/api_123"
    )
    # Airflow calls it for every unkey:// asset: one API, one asset, however it is spelled.
    assert Asset(uri="unkey://API.unkey.com/api_123/").uri == unkey_asset("api_123").uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("unkey:///api_123", "needs the host"),
        ("unkey://api.unkey.com", "needs the API id"),
        ("unkey://api.unkey.com/", "needs the API id"),
        ("unkey://api.unkey.com/apis/api_123", "one path segment"),
        ("unkey://api.unkey.com/api_123?x=1", "no query or fragment"),
        ("unkey://api.unkey.com/api_123#top", "no query or fragment"),
        ("unkey://me@api.unkey.com/api_123", "no user info"),
    ],
)
def test_the_handler_refuses_a_malformed_uri(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        sanitize_uri(urlsplit(uri))
    assert "unkey://<host>/<api_id>" in str(raised.value)


def test_a_dag_declaring_a_malformed_unkey_asset_fails_to_parse() -> None:
    from airflow.sdk import Asset

    with pytest.raises(ValueError, match="one path segment"):
        Asset(uri="unkey://api.unkey.com/apis/api_123")


def test_the_provider_registers_the_scheme() -> None:
    try:  # Airflow 3.2 and later: the task SDK's
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as ProvidersManager
    except ImportError:  # Airflow 3.1
        from airflow.providers_manager import ProvidersManager  # type: ignore[assignment]

    (entry,) = get_provider_info()["asset-uris"]
    assert entry == {
        "schemes": ["unkey"],
        "handler": "airflow_provider_unkey.assets.sanitize_uri",
        "factory": "airflow_provider_unkey.assets.create_asset",
    }
    manager = ProvidersManager()
    assert manager.asset_uri_handlers["unkey"] is sanitize_uri
    assert manager.asset_factories["unkey"] is create_asset
    made = manager.asset_factories["unkey"](api_id="api_1", extra={"team": "platform"})
    assert (made.uri, made.extra) == ("unkey://api.unkey.com/api_1", {"team": "platform"})


# --- the operator's outlets ----------------------------------------------------------------------------
def _op(**kwargs: Any) -> MigrateKeysOperator:
    args = {"task_id": "migrate", "migration_id": "mig_1", "api_id": "api_12345", "parquet_path": "k.parquet"}
    return MigrateKeysOperator(**{**args, **kwargs})


def _uris(outlets: Any) -> list[str]:
    return [o.uri for o in outlets]


def test_a_literal_api_id_declares_its_asset() -> None:
    assert _uris(_op().outlets) == ["unkey://api.unkey.com/api_12345"]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"api_id": "{{ params.api_id }}"}, id="templated"),
        pytest.param({"api_id": "api_{% if true %}1{% endif %}"}, id="template-block"),
        pytest.param({"api_id": "api_12345{# the API #}"}, id="template-comment"),
        pytest.param({"validate_only": True}, id="validate-only"),
        pytest.param({"outlets": []}, id="outlets-given-empty"),
        pytest.param({"default_args": {"outlets": []}}, id="outlets-in-default-args"),
    ],
)
def test_no_default_asset(kwargs: dict[str, Any]) -> None:
    assert _op(**kwargs).outlets == []


def test_outlets_given_are_kept() -> None:
    from airflow.sdk import Asset

    other = Asset("s3://bucket/keys")
    assert _uris(_op(outlets=[other]).outlets) == ["s3://bucket/keys"]
    mine = unkey_asset("api_12345", base_url="https://unkey.internal")
    assert _uris(_op(outlets=[mine, other]).outlets) == [
        "unkey://unkey.internal/api_12345",
        "s3://bucket/keys",
    ]


def test_an_api_id_from_an_upstream_task_declares_none() -> None:
    import pendulum
    from airflow.sdk import DAG, task

    with DAG("assets_xcomarg", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):

        @task
        def api() -> str:
            return "api_12345"

        op = _op(api_id=api())
    assert op.outlets == []
    assert default_outlets("api_12345", validate_only=True) == []


def test_mapped_tasks_declare_the_asset_only_for_a_literal_api_id_of_partial() -> None:
    import pendulum
    from airflow.sdk import DAG

    with DAG("assets_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        shared = MigrateKeysOperator.partial(task_id="shared", migration_id="m", api_id="api_12345").expand(
            parquet_path=["a.parquet", "b.parquet"]
        )
        per_task = MigrateKeysOperator.partial(task_id="per_task", migration_id="m").expand(
            api_id=["api_12345", "api_67890"], parquet_path=["a.parquet", "b.parquet"]
        )
        given = MigrateKeysOperator.partial(
            task_id="given",
            migration_id="m",
            api_id="api_12345",
            outlets=[unkey_asset("api_12345", "http://x:1")],
        ).expand(parquet_path=["a.parquet"])
    assert _uris(shared.outlets) == ["unkey://api.unkey.com/api_12345"]
    assert per_task.outlets == []
    assert _uris(given.outlets) == ["unkey://x:1/api_12345"]
    # When each task runs, Airflow builds it from partial()'s arguments: it adds no outlet of its own,
    # whose event Airflow could not record for an asset no DAG declared.
    for mapped, api_id in ((shared, "api_12345"), (per_task, "api_67890")):
        kwargs = mapped._get_unmap_kwargs({"api_id": api_id, "parquet_path": "a.parquet"}, strict=False)
        unmapped = mapped.operator_class(**kwargs, _airflow_from_mapped=True)
        assert _uris(unmapped.outlets) == _uris(mapped.outlets)


# --- the events' extra ---------------------------------------------------------------------------------
RESULT = {
    "total": 10,
    "migrated": 7,
    "failed": 2,
    "failed_by_reason": {"invalid": 1, "already_exists": 1},
    "skipped": 1,
    "resumed": 0,
    "dry_run": False,
    "outputs": {"migrated": "/out/migrated.parquet"},
}


class _TI:
    map_index = 3


def _context() -> Any:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"ti": _TI(), "run_id": "manual__1", "outlet_events": OutletEventAccessors()}


def test_event_extra_holds_the_counts_and_the_run() -> None:
    extra = event_extra(
        _context(), RESULT, api_id="api_1", migration_id="mig_1", base_url="https://api.unkey.com"
    )
    assert extra == {
        "migration_id": "mig_1",
        "api_id": "api_1",
        "base_url": "https://api.unkey.com",
        "run_id": "manual__1",
        "map_index": 3,
        "total": 10,
        "migrated": 7,
        "failed": 2,
        "failed_by_reason": {"invalid": 1, "already_exists": 1},
        "skipped": 1,
        "resumed": 0,
        "validate_only": False,
        "outputs": {"migrated": "/out/migrated.parquet"},
    }
    json.dumps(extra)  # an asset event's extra is JSON


def test_every_unkey_outlet_gets_the_extra_and_a_mismatch_is_named(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from airflow.sdk import Asset

    context = _context()
    mine, elsewhere, files = (
        unkey_asset("api_1"),
        unkey_asset("api_1", "http://127.0.0.1:9"),
        Asset("s3://b/k"),
    )
    extra = event_extra(
        context, RESULT, api_id="api_1", migration_id="mig_1", base_url="https://api.unkey.com"
    )
    log = logging.getLogger("test.assets")
    with caplog.at_level(logging.INFO, logger="test.assets"):
        recorded = record_asset_events(log, [mine, elsewhere, files], context, extra)
    assert recorded == [mine.uri, elsewhere.uri]
    assert context["outlet_events"][mine].extra == extra
    assert context["outlet_events"][elsewhere].extra == extra
    assert context["outlet_events"][files].extra == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unkey://127.0.0.1:9/api_1 names another API" in warnings[0]


# --- runs ----------------------------------------------------------------------------------------------
@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_demo", migration_id="mig_demo") as emu:
        conn = {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_UNKEY_DEFAULT", json.dumps(conn))
        monkeypatch.setenv("UNKEY_EXAMPLE_BASE_URL", emu.url)
        yield emu


def asset_events(uri: str, run_id: str) -> list[Any]:
    """The events Airflow recorded for ``uri`` in ``run_id``, by map index: (task, map index, extra)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.source_task_id, AssetEvent.source_map_index, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.source_map_index)
        ).all()
    return [tuple(row) for row in rows]


@pytest.mark.slow
def test_the_example_records_an_event_with_its_counts(
    airflow_db: None, emulator: UnkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS))
    module = example_module()
    assert module.API_ASSET.uri == f"unkey://{urlsplit(emulator.url).netloc}/api_demo"

    run = module.migrate_dag.test()

    assert task_instance(run, "migrate_keys").state == "success"
    ((task_id, map_index, extra),) = asset_events(module.API_ASSET.uri, run.run_id)
    assert (task_id, map_index) == ("migrate_keys", -1)
    # Some keys failed (a missing hash, a duplicate): the run succeeded, and its event says so.
    assert {k: extra[k] for k in ("total", "migrated", "failed", "failed_by_reason", "skipped")} == {
        "total": module.KEY_COUNT,
        "migrated": module.KEY_COUNT - 2,
        "failed": 2,
        "failed_by_reason": {"invalid": 1, "duplicate_in_source": 1},
        "skipped": 0,
    }
    assert (extra["migration_id"], extra["api_id"], extra["base_url"]) == (
        "mig_demo",
        "api_demo",
        emulator.url,
    )
    assert extra["run_id"] == run.run_id and extra["validate_only"] is False
    assert Path(extra["outputs"]["migrated"]).exists()
    assert len(emulator.keys) == module.KEY_COUNT - 2


def _write_keys(path: Path, count: int, *, bad: int = 0) -> str:
    hashes = [
        base64.b64encode(hashlib.sha256(f"{path.stem}_{i}".encode()).digest()).decode() for i in range(count)
    ]
    for i in range(bad):
        hashes[i] = "not-a-hash"
    pq.write_table(pa.table({"hash": hashes}), path)
    return str(path)


DAGS = """
import pendulum
from airflow.sdk import dag

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(dag_id="assets_test_mapped", schedule=None, start_date=START, catchup=False)
def mapped():
    # A literal api_id in partial(): every mapped task declares the API's asset.
    MigrateKeysOperator.partial(task_id="migrate", migration_id="mig_demo", api_id="api_demo").expand(
        parquet_path={parts!r}
    )


@dag(dag_id="assets_test_failing", schedule=None, start_date=START, catchup=False)
def failing():
    MigrateKeysOperator(
        task_id="migrate",
        migration_id="mig_demo",
        api_id="api_demo",
        parquet_path={failing!r},
        max_invalid_ratio=0.1,
    )


mapped_dag = mapped()
failing_dag = failing()
"""


@pytest.fixture
def test_dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The DAGs above, in a DAGs folder of their own (``dag.test()`` runs a DAG of its bundle)."""
    from airflow import settings

    data, folder = tmp_path / "data", tmp_path / "dags"
    data.mkdir()
    folder.mkdir()
    parts = [_write_keys(data / f"part{i}.parquet", 20 + 5 * i) for i in range(3)]
    failing = _write_keys(data / "failing.parquet", 10, bad=5)
    path = folder / "unkey_assets_test_dags.py"
    path.write_text(textwrap.dedent(DAGS.format(parts=parts, failing=failing)))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    spec = importlib.util.spec_from_file_location("unkey_assets_test_dags", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_each_mapped_task_records_its_own_event(
    airflow_db: None, emulator: UnkeyEmulator, test_dags: ModuleType
) -> None:
    run = test_dags.mapped_dag.test()

    assert [task_instance(run, "migrate", i).state for i in range(3)] == ["success"] * 3
    # The default asset names Unkey's own API (the connection is not read when the DAG is parsed); the
    # extra's base_url says where the keys went.
    events = asset_events("unkey://api.unkey.com/api_demo", run.run_id)
    assert [(task, i) for task, i, _ in events] == [("migrate", 0), ("migrate", 1), ("migrate", 2)]
    assert [extra["map_index"] for _, _, extra in events] == [0, 1, 2]
    assert [extra["migrated"] for _, _, extra in events] == [20, 25, 30]
    assert {extra["base_url"] for _, _, extra in events} == {emulator.url}
    assert sum(extra["migrated"] for _, _, extra in events) == len(emulator.keys) == 75


@pytest.mark.slow
def test_a_failed_run_records_no_event(
    airflow_db: None, emulator: UnkeyEmulator, test_dags: ModuleType
) -> None:
    run = test_dags.failing_dag.test()

    assert task_instance(run, "migrate").state == "failed"
    assert asset_events("unkey://api.unkey.com/api_demo", run.run_id) == []
