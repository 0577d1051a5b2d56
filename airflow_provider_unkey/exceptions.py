"""Typed errors of the Unkey client.

They keep the HTTP status, Unkey's error ``type``, ``detail``, request id and a 400's ``errors[]``, so
retry policies and the migration engine decide on status, not on message text (unlike
``HttpHook.check_response``, which hides a 429 behind ``AirflowException``). None of them carries the
root key: the client redacts it from every text it puts in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UnkeyError(Exception):
    """Base class of every error raised by this package's Unkey client.

    :ivar attempts: how many HTTP attempts the failed call made (set by the client).
    :ivar unanswered_attempts: how many of them were sent but got no response; when non-zero, the
        server may have committed one of them.
    """

    attempts: int = 0
    unanswered_attempts: int = 0


class UnkeyConfigurationError(UnkeyError, ValueError):
    """The client is set up wrongly (missing root key, bad URL, clear-text HTTP to a remote host)."""


class UnkeyTransportError(UnkeyError):
    """No HTTP response: connection refused or reset, or a timeout, after every retry.

    :param message: what happened.
    :param sent: whether the request may have reached the server. When true, the server may have
        committed it (a ``migrateKeys`` batch may exist although no response arrived). The client
        decides it from the exception chain (``client.may_have_been_sent``): false only for a failure
        to connect (refused, DNS, connect timeout).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of a 400's ``errors[]``: where and what."""

    location: str
    message: str
    fix: str | None = None


class UnkeyAPIError(UnkeyError):
    """Unkey answered with an error status.

    :param status: the HTTP status.
    :param title: the error's title (``Not Found``).
    :param detail: the error's detail, for a person.
    :param error_type: Unkey's error ``type`` URL (``…/data/migration_not_found``).
    :param request_id: ``meta.requestId``, to quote to Unkey support.
    :param errors: a 400's ``errors[]``.
    :param retry_after: seconds the server asked us to wait (``Retry-After`` or ``RateLimit-Reset``).
    :param rate_limit: the ``RateLimit-*`` headers, when sent.
    """

    def __init__(
        self,
        status: int,
        *,
        title: str = "",
        detail: str = "",
        error_type: str | None = None,
        request_id: str | None = None,
        errors: tuple[FieldError, ...] = (),
        retry_after: float | None = None,
        rate_limit: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.error_type = error_type
        self.request_id = request_id
        self.errors = errors
        self.retry_after = retry_after
        self.rate_limit = dict(rate_limit or {})
        super().__init__(self._message())

    @property
    def code(self) -> str | None:
        """The last part of :attr:`error_type` (``migration_not_found``), if any."""
        return self.error_type.rstrip("/").rsplit("/", 1)[-1] if self.error_type else None

    def _message(self) -> str:
        text = f"Unkey API error {self.status}"
        if self.title:
            text += f" {self.title}"
        if self.code:
            text += f" ({self.code})"
        if self.detail:
            text += f": {self.detail}"
        if self.errors:
            shown = "; ".join(f"{e.location}: {e.message}" for e in self.errors[:10])
            more = f" (+{len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
            text += f" [{shown}{more}]"
        if self.request_id:
            text += f" [request {self.request_id}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild through a helper so the error survives pickling
        # (Airflow sends task exceptions across processes).
        return (
            _rebuild_api_error,
            (
                type(self),
                self.status,
                {
                    "title": self.title,
                    "detail": self.detail,
                    "error_type": self.error_type,
                    "request_id": self.request_id,
                    "errors": self.errors,
                    "retry_after": self.retry_after,
                    "rate_limit": self.rate_limit,
                },
            ),
        )


def _rebuild_api_error(cls: type[UnkeyAPIError], status: int, kwargs: dict[str, Any]) -> UnkeyAPIError:
    return cls(status, **kwargs)


class UnkeyBadRequestError(UnkeyAPIError):
    """400: the request breaks the schema or a server rule, or the ``Authorization`` header is bad."""


class UnkeyAuthenticationError(UnkeyAPIError):
    """401: the root key is unknown."""


class UnkeyPermissionError(UnkeyAPIError):
    """403: the root key lacks a permission (``api.*.create_key`` for a migration)."""


class UnkeyNotFoundError(UnkeyAPIError):
    """404: the API or the migration id does not exist in the root key's workspace."""


class UnkeyRequestTimeoutError(UnkeyAPIError):
    """408: the server's 60 s timeout was hit; the request was rolled back."""


class UnkeyPayloadTooLargeError(UnkeyAPIError):
    """413: the body is over 10 MiB."""


class UnkeyRateLimitError(UnkeyAPIError):
    """429: the workspace's rate limit is exhausted; :attr:`retry_after` says for how long."""


class UnkeyServerError(UnkeyAPIError):
    """5xx: the server failed (a duplicate hash or role in one request is a 500 too)."""


_BY_STATUS: dict[int, type[UnkeyAPIError]] = {
    400: UnkeyBadRequestError,
    401: UnkeyAuthenticationError,
    403: UnkeyPermissionError,
    404: UnkeyNotFoundError,
    408: UnkeyRequestTimeoutError,
    413: UnkeyPayloadTooLargeError,
    429: UnkeyRateLimitError,
}


def error_class_for(status: int) -> type[UnkeyAPIError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return UnkeyServerError
    return _BY_STATUS.get(status, UnkeyAPIError)
