"""Packaging: the provider entry point, its metadata, and Airflow's view of the connection type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path

import jsonschema
import pytest

import airflow_provider_unkey
from airflow_provider_unkey.connection_form import CONN_FIELDS
from airflow_provider_unkey.get_provider_info import get_provider_info
from airflow_provider_unkey.hooks.unkey import UnkeyHook

#: Airflow 3.2 reads the connection form from the provider info; 3.0 and 3.1 ask the hook.
AIRFLOW_BEFORE_3_2 = tuple(int(p) for p in version("apache-airflow-core").split(".")[:2]) < (3, 2)


def test_entry_point_returns_provider_info() -> None:
    (ep,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_provider_unkey")
    ]
    info = ep.load()()
    assert info["package-name"] == "airflow-provider-unkey"
    assert info["versions"] == [airflow_provider_unkey.__version__]


def test_provider_info_validates_against_airflow_schema() -> None:
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))


def test_connection_type_matches_the_hook() -> None:
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == UnkeyHook.conn_type == "unkey"
    assert conn["hook-name"] == UnkeyHook.hook_name == "Unkey"
    module, _, name = conn["hook-class-name"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is UnkeyHook
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "Root key"
    assert "login" in behaviour["hidden-fields"]
    assert set(conn["conn-fields"]) >= {"timeout", "max_retries", "verify", "allow_insecure_http"}
    for module_list in (get_provider_info()["hooks"],):
        for entry in module_list:
            for module_name in entry["python-modules"]:
                __import__(module_name)


def test_providers_manager_knows_the_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airflow-provider-unkey" in pm.providers
    try:  # Airflow 3.2 and later: the task runtime imports hooks
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hooks = ProvidersManagerTaskRuntime().hooks
    except ImportError:  # Airflow 3.0 and 3.1
        hooks = pm.hooks
    hook_info = hooks["unkey"]
    assert hook_info is not None and hook_info.hook_class_name.endswith("UnkeyHook")
    if AIRFLOW_BEFORE_3_2:
        # The form comes from the hook's methods, and only when WTForms is there (make test-lowest has it).
        pytest.importorskip("wtforms")
    assert pm.field_behaviours["unkey"]["relabeling"]["password"] == "Root key"
    assert "extra__unkey__timeout" in pm.connection_form_widgets


def test_the_ui_gets_the_connection_form() -> None:
    """What the API server sends the UI's connection form: fields relabelled and hidden, every extra."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    if AIRFLOW_BEFORE_3_2:
        pytest.importorskip("wtforms")
    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "unkey"]
    fields = meta.standard_fields
    assert fields is not None and fields.password is not None and fields.login is not None
    assert fields.password.title == "Root key"
    assert fields.login.hidden
    extras = meta.extra_fields or {}
    assert set(extras) == set(CONN_FIELDS)
    assert extras["timeout"]["value"] in (75, "75")
    assert extras["verify"]["value"] is True


def test_airflow_cli_lists_the_provider(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=True,
    ).stdout
    names = {p["package_name"] for p in json.loads(out[out.index("[{") :].splitlines()[0])}
    assert "airflow-provider-unkey" in names
