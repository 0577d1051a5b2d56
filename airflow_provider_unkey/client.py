"""A small, Airflow-free client for the parts of Unkey's v2 API that a key migration needs.

:class:`UnkeyClient` owns one pooled :class:`requests.Session` (urllib3's connection pool, sized for
the migration's concurrency) and one retry policy built with tenacity. ``UnkeyHook`` builds it from an
Airflow connection; the migration engine, the benchmarks and plain scripts use it directly.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import ipaddress
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from airflow_provider_unkey import __version__
from airflow_provider_unkey.exceptions import (
    FieldError,
    UnkeyAPIError,
    UnkeyConfigurationError,
    UnkeyError,
    UnkeyPayloadTooLargeError,
    UnkeyTransportError,
    error_class_for,
)
from airflow_provider_unkey.rules import MAX_BODY_BYTES

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.unkey.com"
USER_AGENT = f"airflow-provider-unkey/{__version__}"
#: Statuses worth another try: the server may answer differently next time.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MIGRATE_KEYS_PATH = "/v2/keys.migrateKeys"
VERIFY_KEY_PATH = "/v2/keys.verifyKey"
GET_API_PATH = "/v2/apis.getApi"
LIVENESS_PATH = "/v2/liveness"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry a request.

    Retried: 429 (after ``Retry-After`` or ``RateLimit-Reset``), 408, 5xx, connection errors and
    timeouts. Never retried: 400, 401, 403, 404, 413 and any other 4xx: they will not change.

    :param max_attempts: attempts in all, the first included.
    :param max_elapsed: seconds from the first attempt after which no new attempt starts; a wait that
        would cross it is not begun.
    :param initial_wait: the first exponential backoff, in seconds.
    :param max_wait: the longest exponential backoff, in seconds.
    :param jitter: up to this many seconds are added at random to every wait, so that many workers
        that were throttled together do not come back together.
    :param max_retry_after: the longest server-requested wait that is honoured; a longer one ends the
        retries (the error is raised) rather than blocking a worker for minutes.
    :param no_retry_statuses: statuses never retried under this policy. The migration engine puts 500
        here for batches of several keys: a 500 from ``migrateKeys`` that is about the batch's content
        persists, and the engine splits the batch instead of waiting through every retry.
    """

    max_attempts: int = 8
    max_elapsed: float = 600.0
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0
    no_retry_statuses: frozenset[int] = frozenset()

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt under this policy."""
        if isinstance(exc, UnkeyTransportError):
            return True
        if isinstance(exc, UnkeyAPIError):
            if exc.status in self.no_retry_statuses:
                return False
            if exc.status in (408, 429):
                return exc.retry_after is None or exc.retry_after <= self.max_retry_after
            return exc.status in RETRYABLE_STATUSES
        return False


class _Wait:
    """Server-requested waits win over exponential backoff; both get jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        # wait_exponential + wait_random is stable across tenacity 8 and 9 (wait_exponential_jitter
        # renamed its arguments in 9).
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + wait_random(
            0, policy.jitter
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, UnkeyAPIError) and exc.retry_after is not None:
            return exc.retry_after + random.uniform(0, self._policy.jitter)
        return float(self._backoff(state))


@dataclass(frozen=True, slots=True)
class MigrateKeysResult:
    """The outcome of one ``keys.migrateKeys`` call.

    :param request_id: ``meta.requestId`` of the response that was used.
    :param migrated: ``(hash, keyId)`` pairs that Unkey created.
    :param failed: hashes that Unkey did not create because a key with that hash already exists.
    :param attempts: how many HTTP attempts the call took.
    :param unanswered_attempts: attempts that were sent but got no response (reset, timeout). When
        non-zero, the server may have created keys on such an attempt; a later attempt then reports
        those hashes under :attr:`failed`.
    """

    request_id: str
    migrated: list[tuple[str, str]]
    failed: list[str]
    attempts: int = 1
    unanswered_attempts: int = 0


@dataclass(frozen=True, slots=True)
class VerifyKeyResult:
    """The outcome of one ``keys.verifyKey`` call.

    :param valid: whether the key may be used.
    :param code: ``VALID``, ``NOT_FOUND``, ``DISABLED``, ``EXPIRED``, ...
    :param key_id: the key's id (absent for ``NOT_FOUND``).
    :param request_id: ``meta.requestId``.
    :param data: the whole ``data`` object.
    """

    valid: bool
    code: str
    key_id: str | None
    request_id: str
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """An Unkey API (``apis.getApi``)."""

    id: str
    name: str


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(base_url: str | None, *, allow_insecure_http: bool = False) -> str:
    """Check and normalise the API's base URL.

    :param base_url: ``https://api.unkey.com`` or another origin (scheme, host, optional port and
        path prefix); ``None`` or empty gives the default.
    :param allow_insecure_http: allow ``http://`` to a host that is not loopback. Without it, the
        root key never crosses a network in clear text by accident.
    :raises UnkeyConfigurationError: on a malformed URL or clear-text HTTP to a remote host.
    """
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnkeyConfigurationError(f"Unkey base URL must be http(s)://host[:port], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UnkeyConfigurationError(
            "Unkey base URL must not carry credentials, a query or a fragment; "
            "put the root key in the connection's password"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        raise UnkeyConfigurationError(
            f"Refusing to send the root key in clear text to {parts.hostname}: use https://, or set the "
            "connection extra allow_insecure_http=true if this network is trusted"
        )
    return url


def _finite(text: str) -> float | None:
    """The number in a header value, or ``None`` when there is none (``nan`` and ``inf`` are none)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or ``RateLimit-Reset``.

    A ``Retry-After`` that is neither a number nor a date is ignored, and ``RateLimit-Reset`` decides;
    without either, ``None`` leaves the wait to the exponential backoff. Past dates and negative numbers
    wait 0 s.

    :param headers: the response's headers (case-insensitive for a :class:`requests.Response`).
    :param now: the current Unix time, for a date or an absolute reset time.
    """
    value = (headers.get("Retry-After") or "").strip()
    if value:
        seconds = _finite(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):  # not a date either
            parsed = None
        if parsed is not None:
            # An HTTP date is always GMT; the obsolete asctime form names no zone.
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return max(0.0, parsed.timestamp() - now)
    number = _finite((headers.get("RateLimit-Reset") or "").strip())
    if number is None:
        return None
    # Seconds until reset (the IETF draft), or an absolute Unix time in seconds or milliseconds.
    if number > 1e12:
        return max(0.0, number / 1000.0 - now)
    if number > 1e9:
        return max(0.0, number - now)
    return max(0.0, number)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: ``__cause__``, else ``__context__`` (requests raises its errors
    inside urllib3's ``except`` blocks), and a ``MaxRetryError``'s ``reason``; each exception once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = (
            getattr(current, "reason", None)
            if isinstance(current, urllib3.exceptions.MaxRetryError)
            else None
        )
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
        else:
            current = current.__cause__ or current.__context__


#: Failures before a byte of the request was written: no connection (refused, unreachable, DNS) or
#: no connection in time. urllib3's ``NewConnectionError`` and ``NameResolutionError`` are
#: ``ConnectTimeoutError``s; ``socket.gaierror`` is an ``OSError`` that is not ``ConnectionError``.
_NOT_SENT: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectTimeout,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
    socket.gaierror,
)
#: Failures once the connection was up: the request was (or may have been) written, so the server
#: may have committed it. ``ProtocolError`` is urllib3's "Connection aborted." around a reset, a
#: ``RemoteDisconnected`` or a broken pipe; ``ReadTimeoutError`` a response that did not come in time.
_MAY_BE_SENT: tuple[type[BaseException], ...] = (
    requests.exceptions.ReadTimeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)


def may_have_been_sent(exc: BaseException) -> bool:
    """Whether a transport failure may have come after the request reached the server.

    Decided from the exception chain, outermost first: the first exception that tells a failure before
    the request was written (connect timeout, refused, DNS) from one after (reset, remote disconnect,
    read timeout) decides. A chain that tells neither (a TLS error, a closed pool) counts as sent: the
    answer that never loses a committed request.
    """
    for link in _exception_chain(exc):
        if isinstance(link, _NOT_SENT):
            return False
        if isinstance(link, _MAY_BE_SENT):
            return True
    return True


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
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> None:
        if not root_key or not root_key.strip():
            raise UnkeyConfigurationError("An Unkey root key is required")
        self._root_key = root_key.strip()
        self.base_url = normalise_base_url(base_url, allow_insecure_http=allow_insecure_http)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.verify = verify
        self.pool_size = pool_size
        self.on_retry = on_retry
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"UnkeyClient(base_url={self.base_url!r}, root_key=***)"

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
                # Proxies and .netrc from the environment must not receive the root key.
                session.trust_env = False
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
        return text.replace(self._root_key, "***") if self._root_key in text else text

    def _redact_optional(self, value: Any) -> str | None:
        return None if value is None else self._redact(str(value))

    def _raise_for_error(self, response: requests.Response) -> None:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        error = payload.get("error") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        meta = payload.get("meta") if isinstance(payload, dict) else None
        errors = tuple(
            FieldError(
                location=self._redact(str(e.get("location", ""))),
                message=self._redact(str(e.get("message", ""))),
                fix=self._redact_optional(e.get("fix")),
            )
            for e in error.get("errors") or ()
            if isinstance(e, dict)
        )
        headers = response.headers
        # A server may echo the root key anywhere: every text kept from the answer is redacted.
        rate_limit = {k: self._redact(v) for k, v in headers.items() if k.lower().startswith("ratelimit-")}
        retry_after = None
        if response.status_code in (408, 429, 503):
            retry_after = _parse_retry_after(headers, time.time())
        raise error_class_for(response.status_code)(
            response.status_code,
            title=self._redact(str(error.get("title") or response.reason or "")),
            detail=self._redact(str(error.get("detail", "")) if error else response.text[:500]),
            error_type=self._redact_optional(error.get("type")),
            request_id=self._redact_optional(meta.get("requestId") if isinstance(meta, dict) else None),
            errors=errors,
            retry_after=retry_after,
            rate_limit=rate_limit,
        )

    def _send_once(self, method: str, path: str, body: bytes | None, authenticate: bool) -> dict[str, Any]:
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
            self._raise_for_error(response)
        try:
            payload = response.json()
        except ValueError:
            raise UnkeyError(
                f"Unkey answered {response.status_code} to {path} with a body that is not JSON"
            ) from None
        if not isinstance(payload, dict):
            raise UnkeyError(f"Unkey answered {path} with a JSON body that is not an object")
        return payload

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
            stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.max_elapsed),
            wait=_Wait(policy),
            retry=retry_if_exception(policy.is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        payload = self._send_once(method, path, body, path != LIVENESS_PATH)
                    except UnkeyTransportError as exc:
                        if exc.sent:
                            unanswered += 1
                        raise
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
