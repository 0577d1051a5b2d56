"""A small, Airflow-free client for the parts of Unkey's v2 API that a key migration needs.

:class:`UnkeyClient` owns one pooled :class:`requests.Session` (urllib3's connection pool, sized for
the migration's concurrency) and one retry policy built with tenacity. ``UnkeyHook`` builds it from an
Airflow connection; the migration engine, the benchmarks and plain scripts use it directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
)

from airflow_provider_unkey import __version__
from airflow_provider_unkey.base_url import DEFAULT_BASE_URL, normalise_base_url
from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyConfigurationError,
    UnkeyError,
    UnkeyPayloadTooLargeError,
    UnkeyTransportError,
)
from airflow_provider_unkey.proxies import proxy_secrets, redact_proxy_url, resolve_proxies
from airflow_provider_unkey.results import ApiInfo, MigrateKeysResult, VerifyKeyResult, api_error
from airflow_provider_unkey.retries import (
    RETRYABLE_STATUSES,
    Attempt,
    RateLimitState,
    RetryPolicy,
    _AttemptsSpent,
    _parse_retry_after,  # noqa: F401 - re-exported: tests import it from here
    _Wait,
    may_have_been_sent,
)
from airflow_provider_unkey.rules import MAX_BODY_BYTES

__all__ = [
    "DEFAULT_BASE_URL",
    "GET_API_PATH",
    "LIVENESS_PATH",
    "MIGRATE_KEYS_PATH",
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "VERIFY_KEY_PATH",
    "ApiInfo",
    "Attempt",
    "MigrateKeysResult",
    "RateLimitState",
    "RetryPolicy",
    "UnkeyClient",
    "VerifyKeyResult",
    "may_have_been_sent",
    "normalise_base_url",
    "proxy_secrets",
    "redact_proxy_url",
    "resolve_proxies",
]

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-unkey/{__version__}"
MIGRATE_KEYS_PATH = "/v2/keys.migrateKeys"
VERIFY_KEY_PATH = "/v2/keys.verifyKey"
GET_API_PATH = "/v2/apis.getApi"
LIVENESS_PATH = "/v2/liveness"


class UnkeyClient:
    """A thread-safe client for Unkey's key-migration calls.

    :param root_key: the root key, sent as ``Authorization: Bearer``. It is kept out of ``repr``, log
        lines and exception texts.
    :param base_url: the API's origin, default ``https://api.unkey.com``.
    :param timeout: ``(connect, read)`` timeouts in seconds. The read timeout exceeds the server's own
        60 s timeout so that the server's 408 arrives rather than a client-side guess.
    :param retry: the retry policy.
    :param verify: TLS verification: ``True``, ``False`` or a CA bundle path.
    :param pool_size: connections kept open; size it to the number of threads that call at once.
    :param allow_insecure_http: allow ``http://`` to a host that is not loopback.
    :param proxy: a proxy for every request, ``http://[user:password@]host:port``. Without it, the
        environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` decide, except for a loopback base URL,
        which is reached directly (see :func:`resolve_proxies`). The proxy's password is kept out of
        ``repr``, log lines and exception texts.
    :param on_retry: called with ``(attempt, exception, wait_seconds)`` before each retry's sleep
        (after the retry is logged): a hook for metrics or tests.
    """

    def __init__(
        self,
        root_key: str,
        base_url: str | None = None,
        *,
        timeout: float | tuple[float, float] = (10.0, 75.0),
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        pool_size: int = 16,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> None:
        if not root_key or not root_key.strip():
            raise UnkeyConfigurationError("An Unkey root key is required")
        self._root_key = root_key.strip()
        self.base_url = normalise_base_url(base_url, allow_insecure_http=allow_insecure_http)
        #: The proxies every request goes through, resolved once: ``{scheme: url}``, maybe empty.
        self._proxies = resolve_proxies(self.base_url, proxy)
        #: Texts that must never be shown, longest first: the root key and any proxy password.
        self._secrets = sorted(
            {self._root_key, *(s for url in self._proxies.values() for s in proxy_secrets(url))},
            key=len,
            reverse=True,
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.verify = verify
        self.pool_size = pool_size
        self.on_retry = on_retry
        #: Called with an :class:`~airflow_provider_unkey.retries.Attempt` after every HTTP attempt, in
        #: the thread that made it; the engine's throughput controls learn from these.
        self.observers: list[Callable[[Attempt], None]] = []
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        proxy = f", proxy={self.proxy!r}" if self.proxy else ""
        return f"UnkeyClient(base_url={self.base_url!r}, root_key=***{proxy})"

    @property
    def proxy(self) -> str | None:
        """The proxy requests to the base URL go through, password hidden; ``None`` when direct."""
        url = self._proxies.get(urlsplit(self.base_url).scheme)
        return None if url is None else redact_proxy_url(url)

    @property
    def secrets(self) -> list[str]:
        """The texts this client keeps out of what it shows (the root key, a proxy's password): for
        a secret masker to learn."""
        return list(self._secrets)

    # --- plumbing ------------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """The pooled session, created on first use."""
        with self._session_lock:
            if self._session is None:
                session = requests.Session()
                # Retries are ours (tenacity, status-aware); urllib3 must not retry behind our back.
                adapter = HTTPAdapter(
                    pool_connections=1, pool_maxsize=self.pool_size, max_retries=0, pool_block=True
                )
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.headers.update(
                    {
                        "User-Agent": USER_AGENT,
                        "Accept": "application/json",
                        "Content-Type": "application/json",
                    }
                )
                session.verify = self.verify
                # The environment is not trusted wholesale: .netrc credentials must not be sent (nor
                # replace the root key), and REQUESTS_CA_BUNDLE must not override `verify`. Of the
                # environment, only the proxy variables are read (in resolve_proxies).
                session.trust_env = False
                session.proxies = dict(self._proxies)
                if self.proxy:
                    log.info("Requests to %s go through the proxy %s", self.base_url, self.proxy)
                self._session = session
            return self._session

    def close(self) -> None:
        """Close the pooled connections."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> UnkeyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _send_once(
        self, method: str, path: str, body: bytes | None, authenticate: bool
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                data=body,
                headers={"Authorization": f"Bearer {self._root_key}"} if authenticate else None,
                timeout=self.timeout,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise UnkeyTransportError(
                self._redact(f"connect timeout to {self.base_url}: {exc}"), sent=may_have_been_sent(exc)
            ) from None
        except requests.exceptions.Timeout as exc:
            raise UnkeyTransportError(
                self._redact(f"read timeout from {self.base_url}{path}: {exc}"), sent=may_have_been_sent(exc)
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise UnkeyTransportError(
                self._redact(f"connection error on {self.base_url}{path}: {exc}"),
                sent=may_have_been_sent(exc),
            ) from None
        if response.status_code >= 400:
            raise api_error(response, self._redact)
        try:
            payload = orjson.loads(response.content)
        except ValueError:
            raise UnkeyError(
                f"Unkey answered {response.status_code} to {path} with a body that is not JSON"
            ) from None
        if not isinstance(payload, dict):
            raise UnkeyError(f"Unkey answered {path} with a JSON body that is not an object")
        return payload, response.headers

    def _observe(
        self,
        path: str,
        status: int | None,
        started: float,
        headers: Mapping[str, str],
        retry_after: float | None,
    ) -> None:
        if not self.observers:
            return
        ended = time.monotonic()
        attempt = Attempt(
            path, status, ended - started, ended, RateLimitState.from_headers(headers), retry_after
        )
        for observer in list(self.observers):
            try:
                observer(attempt)
            except Exception:  # an observer must never break a request
                log.exception("an observer of Unkey attempts failed")

    def request(
        self, method: str, path: str, body: bytes | None = None, *, retry: RetryPolicy | None = None
    ) -> tuple[dict[str, Any], int, int]:
        """Send one request with the retry policy.

        :param method: ``GET`` or ``POST``.
        :param path: the path below the base URL (``/v2/keys.migrateKeys``).
        :param body: the JSON body, already serialised.
        :param retry: a policy for this call only.
        :return: the decoded JSON response, the number of attempts, and how many of them were sent
            but got no response.
        :raises UnkeyAPIError: on an error status that is not retried or whose retries ran out.
        :raises UnkeyTransportError: when no response came after every retry.
        """
        policy = retry or self.retry
        unanswered = 0
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "Unkey %s attempt %d failed (%s); retrying in %.2fs",
                path,
                state.attempt_number,
                exc,
                wait,
            )
            if self.on_retry is not None and exc is not None:
                self.on_retry(state.attempt_number, exc, wait)

        retrying = Retrying(
            # A 429 does not use up an attempt: only the time bounds the waits for the rate limit.
            stop=_AttemptsSpent(policy.max_attempts) | stop_before_delay(policy.max_elapsed),
            wait=_Wait(policy),
            retry=retry_if_exception(policy.is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    started = time.monotonic()
                    try:
                        payload, headers = self._send_once(method, path, body, path != LIVENESS_PATH)
                    except UnkeyTransportError as exc:
                        if exc.sent:
                            unanswered += 1
                        self._observe(path, None, started, {}, None)
                        raise
                    except UnkeyAPIError as exc:
                        self._observe(path, exc.status, started, exc.rate_limit, exc.retry_after)
                        raise
                    self._observe(path, 200, started, headers, None)
        except UnkeyError as exc:
            # The caller needs to know whether an earlier attempt may have been committed.
            exc.attempts, exc.unanswered_attempts = attempts, unanswered
            raise
        return payload, attempts, unanswered

    # --- the calls ---------------------------------------------------------------------------------
    @staticmethod
    def migrate_keys_body(migration_id: str, api_id: str, keys: Sequence[Mapping[str, Any]]) -> bytes:
        """Serialise a ``keys.migrateKeys`` body, compactly, as the engine sends it."""
        return json.dumps(
            {"migrationId": migration_id, "apiId": api_id, "keys": list(keys)},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def migrate_keys(
        self,
        migration_id: str,
        api_id: str,
        keys: Sequence[Mapping[str, Any]] | bytes,
        *,
        retry: RetryPolicy | None = None,
    ) -> MigrateKeysResult:
        """Create keys from their hashes (``POST /v2/keys.migrateKeys``).

        The request is all or nothing on the server. Retrying it is safe: a key the first attempt
        created comes back under ``failed`` on the next, and :attr:`MigrateKeysResult.unanswered_attempts`
        tells when that may have happened.

        :param migration_id: the migration id Unkey support set up (it fixes the hash algorithm).
        :param api_id: the API the keys belong to.
        :param keys: key objects (``{"hash": ..., ...}``), or a whole body already serialised by
            :meth:`migrate_keys_body` (the engine pre-serialises; then ``migration_id`` and
            ``api_id`` are only used in messages).
        :param retry: a retry policy for this call only.
        :raises UnkeyPayloadTooLargeError: locally, before sending, when the body is over 10 MiB.
        """
        body = keys if isinstance(keys, bytes) else self.migrate_keys_body(migration_id, api_id, keys)
        if len(body) > MAX_BODY_BYTES:
            raise UnkeyPayloadTooLargeError(
                413,
                title="Payload Too Large",
                detail=f"not sent: the body is {len(body)} bytes, over Unkey's limit of {MAX_BODY_BYTES}",
            )
        payload, attempts, unanswered = self.request("POST", MIGRATE_KEYS_PATH, body, retry=retry)
        data = payload.get("data") or {}
        return MigrateKeysResult(
            request_id=str((payload.get("meta") or {}).get("requestId", "")),
            migrated=[(m["hash"], m["keyId"]) for m in data.get("migrated") or ()],
            failed=[str(h) for h in data.get("failed") or ()],
            attempts=attempts,
            unanswered_attempts=unanswered,
        )

    def verify_key(self, key: str, migration_id: str | None = None) -> VerifyKeyResult:
        """Verify a plaintext key (``POST /v2/keys.verifyKey``), e.g. to prove a migrated key works.

        :param key: the plaintext key as its holder sends it.
        :param migration_id: the migration the key came from; Unkey then hashes it with that
            migration's algorithm.
        """
        body: dict[str, Any] = {"key": key}
        if migration_id is not None:
            body["migrationId"] = migration_id
        payload, _, _ = self.request("POST", VERIFY_KEY_PATH, json.dumps(body).encode())
        data = payload.get("data") or {}
        return VerifyKeyResult(
            valid=bool(data.get("valid")),
            code=str(data.get("code", "")),
            key_id=data.get("keyId"),
            request_id=str((payload.get("meta") or {}).get("requestId", "")),
            data=data,
        )

    def get_api(self, api_id: str) -> ApiInfo:
        """Read an API (``POST /v2/apis.getApi``); read-only."""
        payload, _, _ = self.request("POST", GET_API_PATH, json.dumps({"apiId": api_id}).encode())
        data = payload.get("data") or {}
        return ApiInfo(id=str(data.get("id", api_id)), name=str(data.get("name", "")))

    def liveness(self) -> str:
        """``GET /v2/liveness``: the service's own health message (no authentication)."""
        payload, _, _ = self.request("GET", LIVENESS_PATH)
        return str((payload.get("data") or {}).get("message", ""))
