"""The ``unkey`` connection's form, declared once for the hook and for ``get_provider_info``.

Kept free of Airflow imports: ``ProvidersManager`` reads it while discovering providers.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_unkey.client import DEFAULT_BASE_URL

#: How the connection form looks (also declared in ``get_provider_info``).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "Root key", "schema": "Scheme"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "unkey_...",
        "schema": "https (http only for a loopback emulator)",
    },
}

#: The connection's extra fields, as Airflow's ``conn-fields`` declares them.
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 75},
        "description": "Longer than the server's own 60 s timeout, so its 408 arrives first.",
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 10},
    },
    "max_retries": {
        "label": "Attempts per request",
        "schema": {"type": ["integer", "null"], "default": 8},
        "description": "429, 408, 5xx, resets and timeouts are retried; other 4xx never are.",
    },
    "max_retry_seconds": {
        "label": "Retry budget per request (seconds)",
        "schema": {"type": ["number", "null"], "default": 600},
    },
    "verify": {
        "label": "Verify TLS",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "False turns certificate checks off; use ca_bundle for a private CA instead.",
    },
    "ca_bundle": {"label": "CA bundle path", "schema": {"type": ["string", "null"]}},
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
        "schema": {"type": ["string", "null"]},
        "description": "Optional: test_connection then also checks that this API exists.",
    },
}
