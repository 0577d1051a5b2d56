"""The ``unkey`` connection form of Airflow 3.3's UI, in Chromium, against a real api-server.

Each test reads what the real UI renders from ``connection_form.py``'s declarations, and what the
api-server received and answered. The row's Test button runs ``UnkeyHook.test_connection`` in the
api-server, against the Unkey emulator this process runs on a loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_unkey.testing import UnkeyEmulator
from tests.ui import pages
from tests.ui.browser import Exchange, api_exchanges
from tests.ui.conftest import API_ID, ROOT_KEY

pytestmark = pytest.mark.timeout(1800)

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "connection-form.png"
#: Set to rewrite docs/images/connection-form.png from the screenshot the test takes.
UPDATE_SCREENSHOT = "UNKEY_UPDATE_SCREENSHOTS"


def _save_connection(
    browser: Any, airflow_ui: str, conn_id: str, *, host: str, password: str, port: int | None, **extra: str
) -> dict[str, Any]:
    """Fill the Add Connection form as a person does and save it; the body the api-server received."""
    form = pages.open_add_form(browser, airflow_ui)
    pages.set_value(pages.labelled_input(form, "Connection ID"), conn_id)
    pages.set_value(pages.labelled_input(form, "Base URL"), host)
    pages.set_value(pages.labelled_input(form, "Root key"), password)
    if port is not None:
        pages.set_value(pages.labelled_input(form, "Port"), str(port))
    if extra:
        pages.expand(form, "Extra Fields")
        for name, value in extra.items():
            pages.set_value(pages.labelled_input(form, CONN_FIELDS[name]["label"]), value)
    api_exchanges(browser, "/api/v2/connections")  # forget the requests so far
    pages.save(browser, form)
    pages.row(browser, conn_id)
    (post,) = [e for e in api_exchanges(browser, "/api/v2/connections") if e.method == "POST"]
    assert post.status == 201, post
    assert post.body is not None
    return dict(json.loads(post.body))


def _test_in_row(browser: Any, airflow_ui: str, conn_id: str) -> tuple[str, Exchange]:
    """Click the row's Test button; the notification's text and the api-server's exchange."""
    pages.open_connections(browser, airflow_ui)
    api_exchanges(browser, "/api/v2/connections")
    pages.row_button(browser, conn_id, "Test Connection").click()
    exchanges: list[Exchange] = []

    def answered(d: Any) -> bool:
        exchanges.extend(e for e in api_exchanges(d, "/connections/test") if e.status)
        return bool(exchanges)

    pages.wait(browser).until(answered)
    (exchange,) = exchanges
    # What the notification must show: the hook's message, or the status text of an error.
    shows = json.loads(exchange.response or "{}")["message"] if exchange.status == 200 else "Bad Request"
    text = pages.toast_text(browser, shows)
    pages.close_toasts(browser)
    return text, exchange


def _emulator_port(emulator: UnkeyEmulator) -> int:
    port = urlsplit(emulator.url).port
    assert port is not None
    return port


# --- what the form shows -------------------------------------------------------------------------------
def test_unkey_is_in_the_connection_type_dropdown(browser: Any, airflow_ui: str) -> None:
    pages.open_connections(browser, airflow_ui)
    pages.button(browser, "Add Connection").click()
    form = pages.dialog(browser)
    assert pages.connection_type_options(form, "Unk") == ["Unkey"]
    pages.choose_connection_type(form, "Unkey")
    assert "Unkey" in form.text


def test_standard_fields_labels_placeholders_and_hidden_fields(browser: Any, airflow_ui: str) -> None:
    form = pages.open_add_form(browser, airflow_ui)
    labels = pages.label_texts(form)
    relabel = UI_FIELD_BEHAVIOUR["relabeling"]
    assert relabel == {"host": "Base URL", "password": "Root key"}
    for label in ("Connection ID", "Connection Type", "Description", "Base URL", "Root key", "Port"):
        assert label in labels, labels
    # Hidden: login and the schema (the scheme is part of the Base URL); no "Host" either, relabelled.
    for hidden in ("Login", "Schema", "Scheme", "Host", "Password"):
        assert hidden not in labels, labels
    assert {"login", "schema"} <= set(UI_FIELD_BEHAVIOUR["hidden_fields"])
    placeholders = UI_FIELD_BEHAVIOUR["placeholders"]
    assert pages.labelled_input(form, "Base URL").get_attribute("placeholder") == placeholders["host"]
    assert placeholders["host"] == "https://api.unkey.com"
    root_key = pages.labelled_input(form, "Root key")
    assert root_key.get_attribute("placeholder") == placeholders["password"]
    assert root_key.get_attribute("type") == "password"
    assert pages.labelled_input(form, "Port").get_attribute("placeholder") == placeholders["port"]


def test_extra_fields_state_defaults_and_prefill_nothing(browser: Any, airflow_ui: str) -> None:
    form = pages.open_add_form(browser, airflow_ui)
    pages.expand(form, "Extra Fields")
    labels = pages.label_texts(form)
    for name, field in CONN_FIELDS.items():
        assert field["label"] in labels, (name, labels)
        if field.get("description"):
            assert field["description"] in form.text, name
    # Numbers are empty: the description states the default, which the hook applies.
    for name in ("timeout", "connect_timeout", "max_retries", "max_retry_seconds"):
        element = pages.labelled_input(form, CONN_FIELDS[name]["label"])
        assert element.get_attribute("value") == "", name
        assert f"Empty: {CONN_FIELDS[name]['description'].split(',')[0].removeprefix('Empty: ')}" in form.text
    # The switches show their state: verification on, clear text to remote hosts off.
    verify = pages.labelled_input(form, CONN_FIELDS["verify"]["label"])
    insecure = pages.labelled_input(form, CONN_FIELDS["allow_insecure_http"]["label"])
    assert verify.is_selected() and not insecure.is_selected()


def test_the_api_id_field_carries_unkeys_length_rules(browser: Any, airflow_ui: str) -> None:
    schema = CONN_FIELDS["api_id"]["schema"]
    form = pages.open_add_form(browser, airflow_ui)
    pages.expand(form, "Extra Fields")
    api_id = pages.labelled_input(form, CONN_FIELDS["api_id"]["label"])
    assert api_id.get_attribute("minlength") == str(schema["minLength"]) == "8"
    assert api_id.get_attribute("maxlength") == str(schema["maxLength"])
    pages.set_value(api_id, "api_1")
    assert browser.execute_script("return arguments[0].validity.tooShort", api_id) is True
    pages.set_value(api_id, API_ID)
    assert browser.execute_script("return arguments[0].validity.valid", api_id) is True


def _dialog_png(browser: Any) -> bytes:
    browser.set_window_size(1400, 2200)  # the whole dialog in view
    try:
        png = pages.dialog(browser).screenshot_as_png
    finally:
        browser.set_window_size(1400, 1100)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    return bytes(png)


def test_screenshots_of_the_form(browser: Any, airflow_ui: str, tmp_path: Path) -> None:
    """The form's standard fields and its extra fields, as docs/connection.md shows them."""
    form = pages.open_add_form(browser, airflow_ui)
    pages.set_value(pages.labelled_input(form, "Connection ID"), "unkey_default")
    pages.set_value(pages.labelled_input(form, "Root key"), "unkey_3ZaKQZ9pX2kLmN")
    shots = {"connection-form.png": _dialog_png(browser)}
    pages.expand(form, "Extra Fields")
    shots["connection-form-extras.png"] = _dialog_png(browser)
    docs = DOCS_SCREENSHOT.parent
    text = (docs.parent / "connection.md").read_text()
    for name, png in shots.items():
        (tmp_path / name).write_bytes(png)
        if os.environ.get(UPDATE_SCREENSHOT):
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / name, docs / name)
        assert (docs / name).read_bytes().startswith(b"\x89PNG"), f"set {UPDATE_SCREENSHOT}=1 to write it"
        assert f"images/{name}" in text


# --- saving, masking and the Test button --------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(browser: Any, airflow_ui: str, ui_emulator: UnkeyEmulator) -> dict[str, Any]:
    """A connection saved from the form, fields left as they are, with the port the docs advise."""
    return _save_connection(
        browser,
        airflow_ui,
        "unkey_ui_saved",
        host=ui_emulator.url,
        password=ROOT_KEY,
        port=_emulator_port(ui_emulator),
    )


def test_a_saved_connection_keeps_following_the_providers_defaults(
    saved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_unkey.hooks.unkey import UnkeyHook

    extra = json.loads(saved["extra"])
    for name in ("timeout", "connect_timeout", "max_retries", "max_retry_seconds", "api_id", "proxy"):
        assert extra.get(name) is None, (name, extra)
    assert "schema" not in saved or not saved["schema"]
    # The hook reads exactly what the api-server stored as the provider's defaults.
    stored = {k: saved.get(k) for k in ("host", "password", "port")}
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_UI_SAVED", json.dumps({"conn_type": "unkey", **stored, "extra": extra})
    )
    client = UnkeyHook("unkey_ui_saved").client
    default = UnkeyClient(ROOT_KEY, client.base_url)
    assert (client.timeout, client.retry) == (default.timeout, default.retry)


def test_the_root_key_is_masked_in_the_list_and_the_edit_form(
    browser: Any, airflow_ui: str, saved: dict[str, Any]
) -> None:
    pages.open_connections(browser, airflow_ui)
    # The table may show before the browser logs the end of the list's request: wait for it.
    listed: list[Any] = []
    pages.wait(browser).until(
        lambda d: (
            listed.extend(
                e for e in api_exchanges(d, "/api/v2/connections") if e.method == "GET" and e.response
            )
            or listed
        )
    )
    assert all(ROOT_KEY not in (e.response or "") for e in listed)
    assert "unkey_ui_saved" in pages.row(browser, "unkey_ui_saved").text
    assert ROOT_KEY not in browser.page_source
    pages.row_button(browser, "unkey_ui_saved", "Edit Connection").click()
    form = pages.dialog(browser)
    root_key = pages.labelled_input(form, "Root key")
    assert root_key.get_attribute("type") == "password"
    assert root_key.get_attribute("value") == "***"
    assert ROOT_KEY not in browser.page_source
    fetched = [e for e in api_exchanges(browser, "/api/v2/connections") if e.response]
    assert all(ROOT_KEY not in (e.response or "") for e in fetched)
    pages.open_connections(browser, airflow_ui)


def test_the_row_test_succeeds_against_the_emulator(
    browser: Any, airflow_ui: str, saved: dict[str, Any], ui_emulator: UnkeyEmulator
) -> None:
    seen = len(ui_emulator.requests)
    text, exchange = _test_in_row(browser, airflow_ui, "unkey_ui_saved")
    assert exchange.status == 200, exchange
    answer = json.loads(exchange.response or "{}")
    assert answer["status"] is True, answer
    assert answer["message"] == f"Root key accepted by {ui_emulator.url}"
    assert answer["message"] in text, text
    # The UI sends the masked key, and the api-server tests with the stored one.
    assert json.loads(exchange.body or "{}")["password"] == "***"
    assert ROOT_KEY not in (exchange.response or "") and ROOT_KEY not in text
    assert [r.path for r in ui_emulator.requests[seen:]] == ["/v2/apis.getApi"]


def test_a_wrong_root_key_says_so(browser: Any, airflow_ui: str, ui_emulator: UnkeyEmulator) -> None:
    wrong = "unkey_root_not_the_right_one"
    _save_connection(
        browser,
        airflow_ui,
        "unkey_ui_wrong_key",
        host=ui_emulator.url,
        password=wrong,
        port=_emulator_port(ui_emulator),
    )
    text, exchange = _test_in_row(browser, airflow_ui, "unkey_ui_wrong_key")
    answer = json.loads(exchange.response or "{}")
    assert answer["status"] is False, answer
    assert f"{ui_emulator.url} does not know this root key: check the connection's Root key" in text
    assert "401" in text
    assert wrong not in text and wrong not in (exchange.response or "")


def test_an_api_id_unkey_would_refuse_is_named_by_the_test(
    browser: Any, airflow_ui: str, ui_emulator: UnkeyEmulator
) -> None:
    seen = len(ui_emulator.requests)
    _save_connection(
        browser,
        airflow_ui,
        "unkey_ui_short_api_id",
        host=ui_emulator.url,
        password=ROOT_KEY,
        port=_emulator_port(ui_emulator),
        api_id="api_1",
    )
    text, exchange = _test_in_row(browser, airflow_ui, "unkey_ui_short_api_id")
    assert json.loads(exchange.response or "{}")["status"] is False
    assert "API id for the connection test [api_id] is 5 characters long, at least 8 expected" in text
    assert ui_emulator.requests[seen:] == [], "refused before anything is sent"


def test_the_row_test_of_a_connection_without_a_port(
    browser: Any, airflow_ui: str, ui_emulator: UnkeyEmulator
) -> None:
    """Airflow 3.3.2's bug (docs/connection.md): the row's Test sends ``port: 0`` for a stored ``null``.

    The api-server then takes the connection for another endpoint and refuses the masked root key with
    a bare 400. Fixed upstream after 3.3.2: then the test passes as it does with a port.
    """
    _save_connection(
        browser, airflow_ui, "unkey_ui_no_port", host=ui_emulator.url, password=ROOT_KEY, port=None
    )
    text, exchange = _test_in_row(browser, airflow_ui, "unkey_ui_no_port")
    sent = json.loads(exchange.body or "{}")
    if exchange.status == 400:
        assert sent["port"] == 0 and sent["password"] == "***"
        assert "Bad Request" in text
        assert "differs from the stored connection" in (exchange.response or "")
    else:
        assert exchange.status == 200 and json.loads(exchange.response or "{}")["status"] is True
