"""The bodies of the emulator's answers: ``{meta, data}`` on success, Unkey's error object otherwise.

Every error carries ``meta.requestId`` and ``error.{title, detail, status, type}`` with Unkey's ``type``
URLs (and ``errors[]`` on a 400, as the spec requires).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Final

from airflow_provider_unkey import rules
from airflow_provider_unkey.testing.ratelimit import Quota
from airflow_provider_unkey.testing.transport import BadFraming, Reply, Request

ERROR_DOCS: Final = "https://unkey.com/docs/errors/"
ERR_INVALID_INPUT: Final = "unkey/application/invalid_input"
ERR_AUTH_MISSING: Final = "unkey/authentication/missing"
ERR_AUTH_MALFORMED: Final = "unkey/authentication/malformed"
ERR_KEY_NOT_FOUND: Final = "unkey/authentication/key_not_found"
ERR_INSUFFICIENT_PERMISSIONS: Final = "unkey/authorization/insufficient_permissions"
ERR_API_NOT_FOUND: Final = "unkey/data/api_not_found"
ERR_MIGRATION_NOT_FOUND: Final = "unkey/data/migration_not_found"
ERR_ROUTE_NOT_FOUND: Final = "unkey/data/route_not_found"
ERR_BODY_TOO_LARGE: Final = "user/bad_request/request_body_too_large"
ERR_TIMEOUT: Final = "user/bad_request/request_timeout"
ERR_RATE_LIMITED: Final = "user/too_many_requests/workspace_rate_limited"
ERR_UNEXPECTED: Final = "unkey/application/unexpected_error"
ERR_UNAVAILABLE: Final = "unkey/application/service_unavailable"

#: Unkey's detail of a 404 for an API that is unknown, deleted or another workspace's (its handlers').
API_NOT_FOUND_DETAIL: Final = "The requested API does not exist or has been deleted."
#: Unkey's detail of a 404 for a migration id unknown in the root key's workspace.
MIGRATION_NOT_FOUND_DETAIL: Final = "The requested Migration does not exist or has been deleted."

#: The detail of the real server's 500 after a panic (its recovery middleware's words).
PANIC_DETAIL: Final = "An unexpected error occurred while processing your request."


def dumps(obj: Any) -> bytes:
    """Compact JSON, as bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def ok(req: Request, data: Any) -> Reply:
    """200 with ``data``."""
    return Reply(200, dumps({"meta": {"requestId": req.request_id}, "data": data}))


def error(
    req: Request,
    status: int,
    detail: str,
    type_: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    close: bool = False,
    fault: str | None = None,
) -> Reply:
    """An error answer of ``status`` and type ``type_`` (a path under :data:`ERROR_DOCS`)."""
    body: dict[str, Any] = {
        "title": HTTPStatus(status).phrase,
        "detail": detail,
        "status": status,
        "type": ERROR_DOCS + type_,
    }
    if status == 400:
        # The spec requires errors[] on every 400.
        body["errors"] = errors if errors is not None else []
    raw = dumps({"meta": {"requestId": req.request_id}, "error": body})
    return Reply(status, raw, problem=True, headers=headers, close=close, fault=fault)


def error_type(status: int) -> str:
    """The error type the real server gives ``status``."""
    return {
        400: ERR_INVALID_INPUT,
        401: ERR_KEY_NOT_FOUND,
        403: ERR_INSUFFICIENT_PERMISSIONS,
        404: ERR_ROUTE_NOT_FOUND,
        408: ERR_TIMEOUT,
        413: ERR_BODY_TOO_LARGE,
        429: ERR_RATE_LIMITED,
        502: ERR_UNAVAILABLE,
        503: ERR_UNAVAILABLE,
        504: ERR_UNAVAILABLE,
    }.get(status, ERR_UNEXPECTED)


def violation_entries(violations: Iterable[rules.Violation]) -> list[dict[str, str]]:
    """The ``errors[]`` of a 400."""
    out = []
    for v in violations:
        entry = {"location": v.location, "message": v.message}
        if v.fix:
            entry["fix"] = v.fix
        out.append(entry)
    return out


def bad_request(req: Request, detail: str, violations: Iterable[rules.Violation]) -> Reply:
    """400 ``invalid_input`` listing ``violations``."""
    return error(req, 400, detail, ERR_INVALID_INPUT, errors=violation_entries(violations))


def bad_framing(req: Request, exc: BadFraming, location: str) -> Reply:
    """400 for a body that cannot be read as sent; the connection cannot be reused after it."""
    return error(
        req,
        400,
        str(exc),
        ERR_INVALID_INPUT,
        close=True,
        errors=[{"location": location, "message": str(exc)}],
    )


def invalid_json(req: Request) -> Reply:
    """400 for a body that is not JSON."""
    return bad_request(
        req, "The request body is not valid JSON.", [rules.Violation("body", "must be a JSON object")]
    )


def too_large(req: Request, drain: int) -> Reply:
    """413, closing the connection after discarding ``drain`` bytes of the unread body."""
    reply = error(
        req,
        413,
        f"The request body exceeds the limit of {rules.MAX_BODY_BYTES} bytes.",
        ERR_BODY_TOO_LARGE,
        close=True,
    )
    reply.drain = drain
    return reply


def timeout(req: Request, server_timeout: float, fault: str | None) -> Reply:
    """408: the request outlived the server timeout and nothing was committed."""
    return error(
        req,
        408,
        f"The request took longer than the server timeout of {server_timeout:g} s; nothing was committed.",
        ERR_TIMEOUT,
        fault=fault,
    )


def too_many_requests(req: Request, detail: str, quota: Quota, fault: str | None = None) -> Reply:
    """429 ``workspace_rate_limited`` with the rate-limit headers of ``quota`` and ``Retry-After`` (none
    for a quota that is not reported: Unkey's answer to a limit of 0)."""
    return error(req, 429, detail, ERR_RATE_LIMITED, headers=quota.refusal_headers(), fault=fault)
