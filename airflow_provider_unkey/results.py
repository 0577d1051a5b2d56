"""What Unkey's answers become in :class:`~airflow_provider_unkey.client.UnkeyClient`.

A successful call returns one frozen dataclass: :class:`MigrateKeysResult` (``keys.migrateKeys``),
:class:`VerifyKeyResult` (``keys.verifyKey``) or :class:`ApiInfo` (``apis.getApi``);
``airflow_provider_unkey.client`` re-exports them. An error answer becomes the exception that
:func:`api_error` builds from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests

from airflow_provider_unkey.exceptions import FieldError, UnkeyAPIError, error_class_for
from airflow_provider_unkey.retries import _parse_retry_after

__all__ = ["ApiInfo", "MigrateKeysResult", "VerifyKeyResult", "api_error"]


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


def api_error(response: requests.Response, redact: Callable[[str], str]) -> UnkeyAPIError:
    """The exception for an error answer, for the client to raise.

    :param response: an answer with an error status (400 or above).
    :param redact: hides the client's secrets (the root key, a proxy's password) in a text: every text
        kept from the answer goes through it, for a server may echo them anywhere.
    :return: an instance of the class :func:`~airflow_provider_unkey.exceptions.error_class_for` picks
        for the status, with the error's details, the ``RateLimit-*`` headers and, for a 408, 429 or
        503, the wait the server asked for.
    """

    def redact_optional(value: Any) -> str | None:
        return None if value is None else redact(str(value))

    try:
        payload = orjson.loads(response.content)
    except ValueError:
        payload = {}
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    meta = payload.get("meta") if isinstance(payload, dict) else None
    errors = tuple(
        FieldError(
            location=redact(str(e.get("location", ""))),
            message=redact(str(e.get("message", ""))),
            fix=redact_optional(e.get("fix")),
        )
        for e in error.get("errors") or ()
        if isinstance(e, dict)
    )
    headers = response.headers
    # A server may echo the root key anywhere: every text kept from the answer is redacted.
    rate_limit = {k: redact(v) for k, v in headers.items() if k.lower().startswith("ratelimit-")}
    retry_after = None
    if response.status_code in (408, 429, 503):
        retry_after = _parse_retry_after(headers, time.time())
    return error_class_for(response.status_code)(
        response.status_code,
        title=redact(str(error.get("title") or response.reason or "")),
        detail=redact(str(error.get("detail", "")) if error else response.text[:500]),
        error_type=redact_optional(error.get("type")),
        request_id=redact_optional(meta.get("requestId") if isinstance(meta, dict) else None),
        errors=errors,
        retry_after=retry_after,
        rate_limit=rate_limit,
    )
