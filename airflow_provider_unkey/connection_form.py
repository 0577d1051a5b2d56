"""The ``unkey`` connection's form, declared once for the hook and for ``get_provider_info``.

Kept free of Airflow imports: ``ProvidersManager`` reads it while discovering providers.

How Airflow 3.3's UI reads it (checked in a real browser by ``tests/ui``):

* ``UI_FIELD_BEHAVIOUR`` hides, relabels and fills the placeholders of the standard fields;
* each entry of ``CONN_FIELDS`` is one extra field: ``label`` is its label, ``description`` the text
  under it, and ``schema`` a JSON schema whose ``default`` *pre-fills* the field, so that every
  connection saved from the form stores it. The numeric extras therefore declare no default: they
  state it in their description and stay empty, and the hook applies the provider's defaults to an
  empty or missing extra, so saved connections follow the provider's defaults as they change. The
  two switches keep theirs (a switch cannot show "unset", and an off switch for a setting that is
  on would mislead); the values they store are the safe ones.
* ``minLength`` and ``maxLength`` become the input's HTML ``minlength``/``maxlength``; the UI ignores
  ``pattern`` and the number limits, so :func:`extra_problems` checks the whole schema again
  wherever the hook reads the extras (``test_connection`` answers with its message).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any, Final

from airflow_provider_unkey.client import DEFAULT_BASE_URL, RetryPolicy, UnkeyClient
from airflow_provider_unkey.rules import ID_MAX_LENGTH

# --- the provider's defaults, read from where they live so that the form states what the hook does ----
#: ``UnkeyClient``'s ``(connect, read)`` timeouts.
_CLIENT_TIMEOUT: Final[tuple[float, float]] = inspect.signature(UnkeyClient).parameters["timeout"].default
DEFAULT_CONNECT_TIMEOUT: Final = float(_CLIENT_TIMEOUT[0])
DEFAULT_READ_TIMEOUT: Final = float(_CLIENT_TIMEOUT[1])
DEFAULT_MAX_RETRIES: Final[int] = RetryPolicy().max_attempts
DEFAULT_MAX_RETRY_SECONDS: Final[float] = RetryPolicy().max_elapsed

# --- ``apis.getApi``'s ``apiId`` (``V2ApisGetApiRequestBody``), which ``test_connection`` sends ------
#: Stricter than ``keys.migrateKeys``' ``apiId`` (:data:`~airflow_provider_unkey.rules.ID_MIN_LENGTH`):
#: Unkey answers a shorter id with a 400. ``tests/test_provider.py`` pins both to Unkey's spec.
GET_API_ID_MIN_LENGTH: Final = 8
GET_API_ID_PATTERN: Final = "^[a-zA-Z0-9_]+$"


def _number(value: float) -> str:
    return f"{value:g}"


#: How the connection form looks (also declared in ``get_provider_info``).
#:
#: The scheme goes in the Base URL (``https://…``), so the Schema field is hidden; the hook still reads
#: a schema set by the CLI or a URI (``unkey://:key@host/https``). The port stays visible: Airflow
#: 3.3.2's Test button (the connection list's) fails with "Bad Request" for a connection without a port
#: (see docs/connection.md), and a port entered here sidesteps it.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["login", "schema", "extra"],
    "relabeling": {"host": "Base URL", "password": "Root key"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "unkey_...",
        "port": "443 (Airflow 3.3.2's Test button needs one)",
    },
}

#: The connection's extra fields, as Airflow's ``conn-fields`` declares them.
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "description": f"Empty: {_number(DEFAULT_READ_TIMEOUT)}, the provider's default, longer than the "
        "server's own 60 s timeout so that its 408 arrives first.",
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "description": f"Empty: {_number(DEFAULT_CONNECT_TIMEOUT)}, the provider's default.",
    },
    "max_retries": {
        "label": "Attempts per request",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": f"Empty: {DEFAULT_MAX_RETRIES}, the provider's default, the first attempt included. "
        "429, 408, 5xx, resets and timeouts are retried; other 4xx never are.",
    },
    "max_retry_seconds": {
        "label": "Retry budget per request (seconds)",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "description": f"Empty: {_number(DEFAULT_MAX_RETRY_SECONDS)}, the provider's default: no new "
        "attempt starts after this many seconds.",
    },
    "verify": {
        "label": "Verify TLS",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "Off turns certificate checks off; use the CA bundle for a private CA instead.",
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "schema": {"type": ["string", "null"]},
        "description": "Empty: the system's CA certificates.",
    },
    "allow_insecure_http": {
        "label": "Allow http:// to a remote host",
        "schema": {"type": ["boolean", "null"], "default": False},
        "description": "Sends the root key in clear text. Loopback hosts never need it.",
    },
    "proxy": {
        "label": "Proxy URL",
        "schema": {"type": ["string", "null"]},
        "description": "http://[user:password@]host:port, for https and http. Empty: HTTPS_PROXY, "
        "HTTP_PROXY and NO_PROXY from the environment apply (never to a loopback base URL).",
    },
    "api_id": {
        "label": "API id for the connection test",
        "schema": {
            "type": ["string", "null"],
            "minLength": GET_API_ID_MIN_LENGTH,
            "maxLength": ID_MAX_LENGTH,
            "pattern": GET_API_ID_PATTERN,
        },
        "description": f"Optional: the connection test then also checks that this API exists. Unkey's API "
        f"ids (api_...) are {GET_API_ID_MIN_LENGTH} to {ID_MAX_LENGTH} letters, digits and underscores.",
    },
    "dashboard_url": {
        "label": "Dashboard URL",
        "schema": {"type": ["string", "null"], "pattern": r"^(https?://)?[^/\s:?#]+(:[0-9]+)?(/[^?#\s]*)?$"},
        "description": "Optional: the workspace's dashboard as the browser shows it once signed in "
        "(https://app.unkey.com/<workspace>). A migration task's 'Unkey dashboard' button then opens "
        "its API; empty: the dashboard's home for Unkey's own base URL, no button for another.",
    },
}

_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
}


def _problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with a value set by the form's JSON schema (the subset ``CONN_FIELDS`` uses)."""
    types = [t for t in schema.get("type", []) if t != "null"]
    if types and not any(
        isinstance(value, _TYPES[t]) and not (t != "boolean" and isinstance(value, bool)) for t in types
    ):
        return f"must be a {' or '.join(types)}, got {value!r}"
    if isinstance(value, str):
        if (low := schema.get("minLength")) is not None and len(value) < low:
            return f"is {len(value)} characters long, at least {low} expected"
        if (high := schema.get("maxLength")) is not None and len(value) > high:
            return f"is {len(value)} characters long, at most {high} expected"
        if (pattern := schema.get("pattern")) is not None and not re.search(pattern, value):
            return f"must match {pattern}, got {value!r}"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if (low := schema.get("minimum")) is not None and value < low:
            return f"must be at least {low}, got {value!r}"
        if (low := schema.get("exclusiveMinimum")) is not None and value <= low:
            return f"must be more than {low}, got {value!r}"
    return None


def extra_problems(extras: Mapping[str, Any]) -> list[str]:
    """The extras that break their form field's schema, one message each, naming the field's label.

    An extra that is missing, ``None`` or ``""`` means the provider's default and is never a problem.
    Extras may be plain (``timeout``) or prefixed (``extra__unkey__timeout``); other keys are ignored.
    Numbers and booleans given as text (a URI's query) are the hook's to convert, so only a string's
    rules (length, pattern) are checked on strings.
    """
    problems = []
    for name, field in CONN_FIELDS.items():
        value = extras.get(name)
        if value is None or value == "":
            value = extras.get(f"extra__unkey__{name}")
        if value is None or value == "":
            continue
        schema = field["schema"]
        if isinstance(value, str) and "string" not in schema.get("type", []):
            continue
        if (problem := _problem(value, schema)) is not None:
            problems.append(f"{field['label']} [{name}] {problem}")
    return problems
