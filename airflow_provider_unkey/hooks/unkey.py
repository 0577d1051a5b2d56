"""``UnkeyHook``: the ``unkey`` connection type and a pooled, retrying client for Unkey's API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_provider_unkey._compat import connection_form_widgets
from airflow_provider_unkey.client import (
    DEFAULT_BASE_URL,
    ApiInfo,
    MigrateKeysResult,
    RetryPolicy,
    UnkeyClient,
    VerifyKeyResult,
)
from airflow_provider_unkey.connection_form import (
    CONN_FIELDS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_SECONDS,
    DEFAULT_READ_TIMEOUT,
    UI_FIELD_BEHAVIOUR,
    extra_problems,
)
from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyAuthenticationError,
    UnkeyConfigurationError,
    UnkeyError,
    UnkeyPermissionError,
)

#: Used by ``test_connection`` when the connection names no API: a well-formed id that matches no API,
#: so the call reads nothing and a 404 proves the key was accepted.
PROBE_API_ID = "api_airflow_connection_test"


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if isinstance(value, int):
        return bool(value)
    raise UnkeyConfigurationError(f"connection extra {name!r} must be true or false, got {value!r}")


def _as_number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UnkeyConfigurationError(f"connection extra {name!r} must be a number, got {value!r}") from None
    if number <= 0:
        raise UnkeyConfigurationError(f"connection extra {name!r} must be positive, got {value!r}")
    return number


class UnkeyHook(BaseHook):
    """Talk to Unkey's API with a root key from an Airflow connection.

    The connection: root key in the password, base URL in the host (default
    ``https://api.unkey.com``; a scheme in the host or in the schema field and a port are honoured).
    Extras: ``timeout``, ``connect_timeout``, ``max_retries``, ``max_retry_seconds``, ``verify``,
    ``ca_bundle``, ``allow_insecure_http``, ``proxy`` (alias ``proxies``), ``api_id`` (see
    :data:`CONN_FIELDS`). Extras may also be prefixed ``extra__unkey__``. Without a ``proxy`` extra,
    the environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` apply (never to a loopback base URL).

    :param unkey_conn_id: the connection id.
    :param pool_size: HTTP connections kept open; at least the number of threads that call at once.
    :param retry: a retry policy overriding the connection's extras.
    """

    conn_name_attr = "unkey_conn_id"
    default_conn_name = "unkey_default"
    conn_type = "unkey"
    hook_name = "Unkey"

    def __init__(
        self,
        unkey_conn_id: str = default_conn_name,
        *,
        pool_size: int = 16,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.unkey_conn_id = unkey_conn_id
        self.pool_size = pool_size
        self._retry_override = retry

    def __repr__(self) -> str:
        return f"UnkeyHook(unkey_conn_id={self.unkey_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: hide unused fields, label the password "Root key"."""
        return UI_FIELD_BEHAVIOUR

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extras' form fields, for Airflow 3.1 (3.2 reads ``conn-fields`` from the provider info)."""
        return connection_form_widgets(CONN_FIELDS)

    @staticmethod
    def _extra(extras: Mapping[str, Any], name: str) -> Any:
        """An extra, plain or prefixed; ``None`` when it is missing, ``None`` or ``""``.

        ``None`` means "the provider's default": the connection form leaves a numeric extra empty (and
        Airflow's UI saves it as ``null``), and a URI may give it as ``?timeout=``.
        """
        for key in (name, f"extra__unkey__{name}"):
            value = extras.get(key)
            if value is not None and value != "":
                return value
        return None

    @staticmethod
    def base_url_from(host: str | None, schema: str | None, port: int | None) -> str:
        """The API's base URL from a connection's host, schema (used as the scheme) and port.

        A port in the host wins over the port field; the port field's 0 (what Airflow 3.3's UI may send
        for an empty port) means none, and the scheme's own port (443, 80) is left out of the URL.
        """
        host = (host or "").strip()
        if not host:
            return DEFAULT_BASE_URL
        if "://" in host:
            url = host.rstrip("/")
        else:
            scheme = (schema or "").strip().lower() or "https"
            if scheme not in ("http", "https"):
                raise UnkeyConfigurationError(
                    f"the Unkey connection's schema is used as the URL scheme and must be http or https, "
                    f"got {schema!r}"
                )
            url = f"{scheme}://{host.rstrip('/')}"
        if port:
            parts = urlsplit(url)
            if parts.port is None and (parts.scheme, int(port)) not in (("https", 443), ("http", 80)):
                url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
        return url

    @cached_property
    def client(self) -> UnkeyClient:
        """The :class:`UnkeyClient` for this connection, built once per hook."""
        from airflow.sdk.log import mask_secret

        conn = self.get_connection(self.unkey_conn_id)
        root_key = (conn.password or "").strip()
        if not root_key:
            raise UnkeyConfigurationError(
                f"Connection {self.unkey_conn_id!r} has no root key: put it in the connection's password"
            )
        mask_secret(root_key)
        extras = conn.extra_dejson or {}
        timeout_value = self._extra(extras, "timeout")
        connect_value = self._extra(extras, "connect_timeout")
        timeout = (
            _as_number(connect_value, "connect_timeout")
            if connect_value is not None
            else DEFAULT_CONNECT_TIMEOUT,
            _as_number(timeout_value, "timeout") if timeout_value is not None else DEFAULT_READ_TIMEOUT,
        )
        retry = self._retry_override
        if retry is None:
            attempts = self._extra(extras, "max_retries")
            budget = self._extra(extras, "max_retry_seconds")
            retry = RetryPolicy(
                max_attempts=int(_as_number(attempts, "max_retries"))
                if attempts is not None
                else DEFAULT_MAX_RETRIES,
                max_elapsed=_as_number(budget, "max_retry_seconds")
                if budget is not None
                else DEFAULT_MAX_RETRY_SECONDS,
            )
        verify: bool | str = True
        if (value := self._extra(extras, "verify")) is not None:
            verify = _as_bool(value, "verify")
        if ca_bundle := self._extra(extras, "ca_bundle"):
            verify = str(ca_bundle)
        insecure = self._extra(extras, "allow_insecure_http")
        proxy = self._extra(extras, "proxy")
        if proxy is None:
            proxy = self._extra(extras, "proxies")
        if proxy is not None and not isinstance(proxy, str):
            raise UnkeyConfigurationError(
                "connection extra 'proxy' must be a URL such as http://user:password@proxy:3128 "
                f"(used for https and http), got a {type(proxy).__name__}"
            )
        client = UnkeyClient(
            root_key,
            self.base_url_from(conn.host, conn.schema, conn.port),
            timeout=timeout,
            retry=retry,
            verify=verify,
            pool_size=self.pool_size,
            allow_insecure_http=_as_bool(insecure, "allow_insecure_http") if insecure is not None else False,
            proxy=proxy or None,
        )
        # A proxy's password (from the extra or the environment) is as secret as the root key.
        for secret in client.secrets:
            if secret != root_key:
                mask_secret(secret)
        return client

    def get_conn(self) -> UnkeyClient:
        """The hook's :class:`UnkeyClient` (Airflow's hook convention)."""
        return self.client

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        if "client" in self.__dict__:
            self.client.close()

    def migrate_keys(
        self,
        migration_id: str,
        api_id: str,
        keys: Sequence[Mapping[str, Any]] | bytes,
        *,
        retry: RetryPolicy | None = None,
    ) -> MigrateKeysResult:
        """Create keys from their hashes; see :meth:`UnkeyClient.migrate_keys`."""
        return self.client.migrate_keys(migration_id, api_id, keys, retry=retry)

    def verify_key(self, key: str, migration_id: str | None = None) -> VerifyKeyResult:
        """Verify a plaintext key; see :meth:`UnkeyClient.verify_key`."""
        return self.client.verify_key(key, migration_id)

    def get_api(self, api_id: str) -> ApiInfo:
        """Read an API; see :meth:`UnkeyClient.get_api`."""
        return self.client.get_api(api_id)

    def test_connection(self) -> tuple[bool, str]:
        """Prove that the base URL answers and that Unkey accepts the root key, creating nothing.

        The call is ``POST /v2/apis.getApi``: it is read-only, it needs the root key (an unknown key
        is a 401), and it needs nothing that a migration may not have. It reads the API named by the
        connection's ``api_id`` extra, or a probe id that matches no API, in which case the expected
        404 proves the key was accepted. A 403 also proves the key is valid: a migration key only needs
        ``api.*.create_key``, not ``read_api``. ``keys.verifyKey`` was not chosen because it needs
        ``verify_key``; ``liveness`` because it checks no key; ``migrateKeys`` because it writes.

        The extras are first checked against the connection form's schema
        (:func:`~airflow_provider_unkey.connection_form.extra_problems`), so that an ``api_id`` Unkey
        would refuse is named as such rather than answered with a 400.

        :return: ``(ok, message)``; the message never contains the root key.
        """
        try:
            conn = self.get_connection(self.unkey_conn_id)
            extras = conn.extra_dejson or {}
            if problems := extra_problems(extras):
                return False, "The connection's extras are not valid: " + "; ".join(problems)
            client = self.client
            api_id = self._extra(extras, "api_id")
            try:
                api = client.get_api(str(api_id) if api_id else PROBE_API_ID)
            except UnkeyPermissionError:
                return (
                    True,
                    f"Root key accepted by {client.base_url} (it may not read APIs, which a migration does not need)",
                )
            except UnkeyAuthenticationError as exc:
                return (
                    False,
                    f"{client.base_url} does not know this root key: check the connection's Root key "
                    f"(an Unkey root key, unkey_..., of the workspace the migration is in). {exc}",
                )
            except UnkeyAPIError as exc:
                if exc.status == 404 and not api_id:
                    return True, f"Root key accepted by {client.base_url}"
                return False, str(exc)
            return True, f"Root key accepted by {client.base_url}; API {api.id} ({api.name}) found"
        except UnkeyError as exc:
            return False, str(exc)
