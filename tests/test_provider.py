"""Packaging: the provider entry point, its metadata, and Airflow's view of the connection type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

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
    # A number's default is stated, not filled in (a saved connection keeps following the default).
    assert extras["timeout"]["value"] is None
    assert extras["timeout"]["description"].startswith("Empty: 75, the provider's default")
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


# --- the connection form ----------------------------------------------------------------------------
def test_the_form_hides_login_and_scheme_and_keeps_the_port() -> None:
    from airflow_provider_unkey.client import DEFAULT_BASE_URL

    (conn,) = get_provider_info()["connection-types"]
    behaviour = conn["ui-field-behaviour"]
    assert {"login", "schema"} <= set(behaviour["hidden-fields"])
    # Airflow 3.3.2's Test button needs a stored port (docs/connection.md): the field stays.
    assert "port" not in behaviour["hidden-fields"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "Root key"}
    assert behaviour["placeholders"]["host"] == DEFAULT_BASE_URL == "https://api.unkey.com"
    assert UnkeyHook.get_ui_field_behaviour()["hidden_fields"] == behaviour["hidden-fields"]


def test_numeric_extras_state_their_default_instead_of_prefilling_it() -> None:
    from airflow_provider_unkey.client import UnkeyClient
    from airflow_provider_unkey.connection_form import CONN_FIELDS
    from airflow_provider_unkey.retries import RetryPolicy

    (conn,) = get_provider_info()["connection-types"]
    fields = conn["conn-fields"]
    client_connect, client_read = UnkeyClient("unkey_root_x").timeout  # type: ignore[misc]
    stated = {
        "timeout": client_read,
        "connect_timeout": client_connect,
        "max_retries": RetryPolicy().max_attempts,
        "max_retry_seconds": RetryPolicy().max_elapsed,
    }
    for name, default in stated.items():
        # Airflow's UI pre-fills a field with its schema's default, and saves it into the extras.
        assert "default" not in fields[name]["schema"], name
        assert fields[name]["description"].startswith(f"Empty: {default:g}, the provider's default")
    # Only the two switches keep a default (a switch cannot show "unset").
    assert {n for n, f in CONN_FIELDS.items() if "default" in f["schema"]} == {
        "verify",
        "allow_insecure_http",
    }


def test_the_api_id_field_follows_unkeys_spec() -> None:
    from airflow_provider_unkey import rules
    from airflow_provider_unkey.connection_form import CONN_FIELDS
    from tests.spec import load_spec

    spec = load_spec()["components"]["schemas"]["V2ApisGetApiRequestBody"]["properties"]["apiId"]
    schema = CONN_FIELDS["api_id"]["schema"]
    assert (schema["minLength"], schema["maxLength"], schema["pattern"]) == (
        spec["minLength"],
        spec["maxLength"],
        spec["pattern"],
    )
    assert schema["maxLength"] == rules.ID_MAX_LENGTH


SAMPLE_EXTRAS = [
    {},
    {"api_id": "api_1"},
    {"api_id": "api_1234"},
    {"api_id": "api-1234"},
    {"api_id": "a" * 256},
    {"api_id": None, "timeout": None},
    {"timeout": 0},
    {"timeout": 0.5, "connect_timeout": 3},
    {"max_retries": 0},
    {"max_retries": 1.5},
    {"max_retries": True},
    {"verify": False, "allow_insecure_http": True},
    {"verify": 1},
    {"proxy": 3128},
    {"ca_bundle": "/etc/ssl/ca.pem", "proxy": "http://proxy:3128"},
    {"max_retry_seconds": -1},
    {"dashboard_url": "https://app.unkey.com/acme"},
    {"dashboard_url": "app.unkey.com/acme"},
    {"dashboard_url": "https://app.unkey.com/acme?tab=keys"},
    {"dashboard_url": "ftp://app.unkey.com"},
    {"dashboard_url": "not a url"},
]


@pytest.mark.parametrize("extras", SAMPLE_EXTRAS, ids=[json.dumps(e)[:40] for e in SAMPLE_EXTRAS])
def test_extra_problems_judge_as_json_schema_does(extras: dict[str, Any]) -> None:
    """The hook's check of the extras reads the form's schemas exactly as a JSON-schema validator does."""
    from airflow_provider_unkey.connection_form import CONN_FIELDS, extra_problems

    invalid = {
        name
        for name, value in extras.items()
        if value is not None
        and not jsonschema.Draft202012Validator(CONN_FIELDS[name]["schema"]).is_valid(value)
    }
    problems = extra_problems(extras)
    assert {p.split("[", 1)[1].split("]", 1)[0] for p in problems} == invalid, problems
    # The same extras, prefixed as Airflow 2's form saved them, are judged the same.
    assert extra_problems({f"extra__unkey__{k}": v for k, v in extras.items()}) == problems


@pytest.mark.parametrize("api_id", ["api_1", "api_1234", "api-1234", "x" * 255, "x" * 256, "api_é_123"])
def test_the_api_id_check_agrees_with_the_emulator(api_id: str) -> None:
    from airflow_provider_unkey.connection_form import extra_problems
    from airflow_provider_unkey.testing.schemas import get_api_violations

    assert bool(extra_problems({"api_id": api_id})) == bool(get_api_violations({"apiId": api_id}))
