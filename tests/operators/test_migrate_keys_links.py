"""The extra link of ``MigrateKeysOperator``: its API in Unkey's dashboard, per task instance.

As providers test theirs: ``get_link`` for a ``TaskInstanceKey`` with the XCom it reads, the link's
registration in the provider info, and a ``dag.test()`` run whose finished task instance's link is read
back as the API server reads it (from the serialized DAG).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_unkey.get_provider_info import get_provider_info
from airflow_provider_unkey.links import XCOM_KEY, UnkeyDashboardLink, dashboard_url, push_dashboard_url
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.operators.test_migrate_keys_assets import EXAMPLE_DAGS, ROOT_KEY, example_module, task_instance

LINK = "Unkey dashboard"


# --- the URL -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base_url", "dashboard", "expected"),
    [
        pytest.param("https://api.unkey.com", None, "https://app.unkey.com/", id="unkey-home"),
        pytest.param("https://api.unkey.com/", None, "https://app.unkey.com/", id="trailing-slash"),
        pytest.param(
            "https://api.unkey.com",
            "https://app.unkey.com/acme",
            "https://app.unkey.com/acme/apis/api_123",
            id="workspace",
        ),
        pytest.param(
            "https://api.unkey.com",
            "app.unkey.com/acme/",
            "https://app.unkey.com/acme/apis/api_123",
            id="bare",
        ),
        pytest.param("http://127.0.0.1:8787", None, None, id="emulator"),
        pytest.param("https://unkey.internal", None, None, id="self-hosted"),
        pytest.param(
            "https://unkey.internal",
            "https://dash.unkey.internal/acme",
            "https://dash.unkey.internal/acme/apis/api_123",
            id="self-hosted-dashboard",
        ),
        pytest.param(
            "https://unkey.internal", "https://dash.unkey.internal", "https://dash.unkey.internal/", id="home"
        ),
        pytest.param("https://api.unkey.com", "ftp://nope/acme", None, id="not-http"),
    ],
)
def test_dashboard_url(base_url: str, dashboard: str | None, expected: str | None) -> None:
    assert dashboard_url(base_url, "api_123", dashboard) == expected


def test_the_api_id_is_one_path_segment_of_the_url() -> None:
    assert dashboard_url("https://api.unkey.com", "api/1 2", "https://app.unkey.com/acme") == (
        "https://app.unkey.com/acme/apis/api%2F1%202"
    )


# --- get_link ------------------------------------------------------------------------------------------
def _ti_key(map_index: int = -1) -> Any:
    from airflow.models.taskinstancekey import TaskInstanceKey

    return TaskInstanceKey("dag", "migrate", "manual__1", try_number=1, map_index=map_index)


@pytest.fixture
def xcoms(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[Any, str], Any]:
    """XCom as ``get_link`` reads it (``XCom.get_value``), by task instance key and XCom key."""
    from airflow.sdk.execution_time.xcom import XCom

    store: dict[tuple[Any, str], Any] = {}

    def get_value(*, ti_key: Any, key: str) -> Any:
        if ("raise", key) in store:
            raise RuntimeError("no supervisor")
        return store.get((ti_key, key))

    monkeypatch.setattr(XCom, "get_value", get_value)
    return store


def _operator(**kwargs: Any) -> MigrateKeysOperator:
    return MigrateKeysOperator(
        task_id="migrate", migration_id="mig_1", api_id="api_12345", parquet_path="keys.parquet", **kwargs
    )


def test_get_link_reads_the_url_the_task_instance_pushed(xcoms: dict[tuple[Any, str], Any]) -> None:
    link = UnkeyDashboardLink()
    url = "https://app.unkey.com/acme/apis/api_12345"
    xcoms[(_ti_key(), XCOM_KEY)] = url
    xcoms[(_ti_key(2), XCOM_KEY)] = "https://app.unkey.com/acme/apis/api_other"
    assert link.get_link(_operator(), ti_key=_ti_key()) == url
    # Each mapped task instance has its own: its api_id may be mapped.
    assert link.get_link(_operator(), ti_key=_ti_key(2)).endswith("/api_other")
    assert link.get_link(_operator(), ti_key=_ti_key(1)) == ""


def test_get_link_never_raises(xcoms: dict[tuple[Any, str], Any]) -> None:
    """Airflow 3.1 calls it as the task ends without catching: an error would fail the task."""
    xcoms[("raise", XCOM_KEY)] = True
    assert UnkeyDashboardLink().get_link(_operator(), ti_key=_ti_key()) == ""
    xcoms.clear()
    xcoms[(_ti_key(), XCOM_KEY)] = {"not": "a url"}
    assert UnkeyDashboardLink().get_link(_operator(), ti_key=_ti_key()) == ""


def test_the_link_is_stored_under_the_key_the_task_pushes() -> None:
    link = UnkeyDashboardLink()
    assert (link.name, link.xcom_key) == (LINK, XCOM_KEY)


# --- on the operator, and registered ---------------------------------------------------------------------
def test_the_operator_has_the_link_unless_it_pushes_no_xcom() -> None:
    assert [link.name for link in _operator().operator_extra_links] == [LINK]
    assert _operator(do_xcom_push=False).operator_extra_links == ()


def test_mapped_tasks_have_the_link() -> None:
    import pendulum
    from airflow.sdk import DAG

    with DAG("links_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        mapped = MigrateKeysOperator.partial(task_id="migrate", migration_id="mig_1").expand(
            api_id=["api_12345", "api_67890"], parquet_path=["a.parquet", "b.parquet"]
        )
    assert [link.name for link in mapped.operator_extra_links] == [LINK]


def test_the_serialized_task_names_the_link_and_its_xcom_key() -> None:
    """What the API server reads: the link's name and the XCom key it finds the URL under."""
    import pendulum
    from airflow.sdk import DAG

    try:  # Airflow 3.2 and later
        from airflow.serialization.serialized_objects import OperatorSerialization as Serializer
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import (  # type: ignore[attr-defined,no-redef]
            SerializedBaseOperator as Serializer,
        )

    with DAG("links_serialized", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        op = _operator()
    encoded = Serializer.serialize_operator(op)
    assert encoded["_operator_extra_links"] == {LINK: XCOM_KEY}


def test_the_provider_registers_the_link() -> None:
    from airflow.providers_manager import ProvidersManager

    name = "airflow_provider_unkey.links.UnkeyDashboardLink"
    assert get_provider_info()["extra-links"] == [name]
    module, _, cls = name.rpartition(".")
    assert getattr(__import__(module, fromlist=[cls]), cls) is UnkeyDashboardLink
    assert name in ProvidersManager().extra_links_class_names


# --- what the task pushes --------------------------------------------------------------------------------
class _TI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize(
    ("extra", "host", "expected"),
    [
        pytest.param({}, "https://api.unkey.com", "https://app.unkey.com/", id="unkey"),
        pytest.param(
            {"dashboard_url": "https://app.unkey.com/acme"},
            "https://api.unkey.com",
            "https://app.unkey.com/acme/apis/api_12345",
            id="workspace",
        ),
        pytest.param(
            {"extra__unkey__dashboard_url": "https://app.unkey.com/acme"},
            "https://api.unkey.com",
            "https://app.unkey.com/acme/apis/api_12345",
            id="prefixed",
        ),
        pytest.param({}, "http://127.0.0.1:8787", None, id="emulator"),
    ],
)
def test_push_dashboard_url(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], host: str, expected: str | None
) -> None:
    conn = {"conn_type": "unkey", "host": host, "password": "unkey_root_x", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_UNKEY_LINKS", json.dumps(conn))
    ti = _TI()
    pushed = push_dashboard_url(_operator(), {"ti": ti}, "unkey_links", host, "api_12345")  # type: ignore[typeddict-item]
    assert pushed == (expected or "")
    # Empty when there is no dashboard: the XCom the link reads exists all the same.
    assert ti.pushed == {XCOM_KEY: expected or ""}


def test_as_the_task_starts_the_link_is_empty() -> None:
    ti = _TI()
    assert push_dashboard_url(_operator(), {"ti": ti}) == ""  # type: ignore[typeddict-item]
    assert ti.pushed == {XCOM_KEY: ""}


def test_push_dashboard_url_pushes_nothing_without_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    ti = _TI()
    op = _operator(do_xcom_push=False)
    assert push_dashboard_url(op, {"ti": ti}, "unkey_links", "https://api.unkey.com", "api_1") == ""  # type: ignore[typeddict-item]
    assert ti.pushed == {}


def test_a_connection_that_cannot_be_read_leaves_the_link_out() -> None:
    ti = _TI()
    pushed = push_dashboard_url(_operator(), {"ti": ti}, "unkey_nowhere", "https://api.unkey.com", "api_1")  # type: ignore[typeddict-item]
    assert pushed == "" and ti.pushed == {XCOM_KEY: ""}


# --- a run, and the link of its finished task instance ---------------------------------------------------
@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_demo", migration_id="mig_demo") as emu:
        yield emu


def _connect(monkeypatch: pytest.MonkeyPatch, emu: UnkeyEmulator, **extra: str) -> None:
    conn = {"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_UNKEY_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("UNKEY_EXAMPLE_BASE_URL", emu.url)


def _link_of_finished_task(run: Any, dag_id: str) -> str | None:
    """The link as the API server gives it: the serialized task's, for the finished task instance."""
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        assert dag is not None
        task = dag.get_task("migrate_keys")
        assert task.extra_links == [LINK]
        url = task.get_extra_links(task_instance(run, "migrate_keys", session=session), LINK)
        return str(url) if url else None


@pytest.mark.slow
def test_a_run_links_its_task_instance_to_the_api(
    airflow_db: None, emulator: UnkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS))
    _connect(monkeypatch, emulator, dashboard_url="https://app.unkey.com/acme")
    module = example_module()

    run = module.migrate_dag.test()

    assert task_instance(run, "migrate_keys").state == "success"
    assert (
        _link_of_finished_task(run, module.migrate_dag.dag_id) == "https://app.unkey.com/acme/apis/api_demo"
    )


@pytest.mark.slow
def test_without_a_dashboard_for_its_base_url_the_link_is_empty(
    airflow_db: None, emulator: UnkeyEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLE_DAGS))
    _connect(monkeypatch, emulator)  # the emulator: no dashboard
    module = example_module()

    run = module.migrate_dag.test()

    assert task_instance(run, "migrate_keys").state == "success"
    assert _link_of_finished_task(run, module.migrate_dag.dag_id) is None
