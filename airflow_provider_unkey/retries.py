"""How the client retries: the policy, the waits (``Retry-After`` first), and whether a failed request
may have reached the server.

Modelled on the dbt Cloud hook's retry policy and built with tenacity; :class:`~.client.UnkeyClient`
applies it to every call.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import math
import random
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import requests
import urllib3.exceptions
from tenacity import RetryCallState, wait_exponential, wait_random
from tenacity.stop import stop_base

from airflow_provider_unkey.exceptions import UnkeyAPIError, UnkeyTransportError

#: Statuses worth another try: the server may answer differently next time.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry a request.

    Retried: 429 (after ``Retry-After`` or ``RateLimit-Reset``, at least a second), 408, 5xx,
    connection errors and timeouts. Never retried: 400, 401, 403, 404, 413 and any other 4xx: they
    will not change. A 429 means the request was not processed: it does not use up an attempt, and only
    ``max_elapsed`` bounds how long a call waits for the rate limit.

    :param max_attempts: attempts in all, the first included, not counting those answered 429.
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


#: The shortest wait after a 429, in seconds. Unkey's ``Retry-After`` is the whole seconds left in the
#: current window, truncated: ``0`` means "within the second", and waiting 0 s would be refused again.
RATE_LIMIT_WAIT_FLOOR = 1.0


def _rate_limited(exc: BaseException | None) -> bool:
    return isinstance(exc, UnkeyAPIError) and exc.status == 429


class _AttemptsSpent(stop_base):
    """tenacity's stop: ``max_attempts`` counts the attempts that were not answered 429."""

    def __init__(self, max_attempts: int) -> None:
        self._max_attempts = max_attempts
        self._spent = 0

    def __call__(self, state: RetryCallState) -> bool:
        if not _rate_limited(state.outcome.exception() if state.outcome else None):
            self._spent += 1
        return self._spent >= self._max_attempts


class _Wait:
    """Server-requested waits win over exponential backoff; both get jitter. After a 429 the wait is
    at least :data:`RATE_LIMIT_WAIT_FLOOR`."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        # wait_exponential + wait_random is stable across tenacity 8 and 9 (wait_exponential_jitter
        # renamed its arguments in 9).
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + wait_random(
            0, policy.jitter
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        jitter = random.uniform(0, self._policy.jitter)
        if isinstance(exc, UnkeyAPIError) and exc.retry_after is not None:
            wait = exc.retry_after + jitter
        else:
            wait = float(self._backoff(state))
        return max(wait, RATE_LIMIT_WAIT_FLOOR) if _rate_limited(exc) else wait


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


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """The workspace rate limit as one answer's ``RateLimit-*`` headers state it.

    :param limit: requests allowed per window (``RateLimit-Limit``).
    :param remaining: requests left in the current window (``RateLimit-Remaining``).
    :param reset: seconds until the window frees capacity (``RateLimit-Reset``, whole seconds).
    """

    limit: int
    remaining: int
    reset: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitState | None:
        """The state the headers give, or ``None`` when they are absent or not numbers."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            limit = int(lowered["ratelimit-limit"])
            remaining = int(lowered["ratelimit-remaining"])
            reset = float(lowered["ratelimit-reset"])
        except (KeyError, ValueError):
            return None
        if limit < 0 or remaining < 0 or not math.isfinite(reset) or reset < 0:
            return None
        return cls(limit, remaining, reset)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt, as :attr:`UnkeyClient.observers <airflow_provider_unkey.client.UnkeyClient.observers>`
    see it: what the throughput controls of the engine learn from.

    :param path: the API path.
    :param status: the HTTP status, or ``None`` when no response came.
    :param seconds: from sending to the end of the answer (or the failure).
    :param ended: :func:`time.monotonic` when it ended.
    :param rate_limit: the rate limit the answer stated, if it did.
    :param retry_after: seconds the server asked to wait (429, 503), if it did.
    """

    path: str
    status: int | None
    seconds: float
    ended: float
    rate_limit: RateLimitState | None = None
    retry_after: float | None = None
