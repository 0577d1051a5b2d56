"""Reading request bodies: strict JSON, and the schemas of the two read endpoints.

``keys.migrateKeys`` is checked by :mod:`airflow_provider_unkey.rules`, the one home of the API's
rules; ``keys.verifyKey`` and ``apis.getApi`` by the two functions here.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Final

from airflow_provider_unkey import rules

#: What :func:`decode_json` returns for a body that is not JSON.
INVALID_JSON: Final = object()

_VERIFY_FIELDS: Final = frozenset({"key", "tags", "permissions", "credits", "ratelimits", "migrationId"})
_GET_API_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Python's json accepts NaN and Infinity; a JSON parser (and the real server's) does not.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(raw: bytes) -> Any:
    """The decoded body, or :data:`INVALID_JSON`."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return INVALID_JSON


def hashes_of(body: Any) -> tuple[str, ...]:
    """Every string ``hash`` of a ``keys.migrateKeys`` body, whatever else is wrong with it."""
    if not isinstance(body, dict):
        return ()
    keys = body.get("keys")
    if not isinstance(keys, list):
        return ()
    return tuple(k["hash"] for k in keys if isinstance(k, dict) and isinstance(k.get("hash"), str))


def _unknown_properties(body: dict[str, Any], allowed: Collection[str]) -> list[rules.Violation]:
    """``additionalProperties: false``: one violation for each property the schema does not name."""
    return [
        rules.Violation(f"body.{name}", "additional property is not allowed")
        for name in body
        if name not in allowed
    ]


def verify_violations(body: Any) -> list[rules.Violation]:
    """``V2KeysVerifyKeyRequestBody``: the fields the emulator reads, checked to the letter."""
    if not isinstance(body, dict):
        return [rules.Violation("body", "must be an object")]
    out = _unknown_properties(body, _VERIFY_FIELDS)
    key = body.get("key")
    if "key" not in body:
        out.append(rules.Violation("body.key", "is required"))
    elif not isinstance(key, str) or not 1 <= len(key) <= 512:
        out.append(rules.Violation("body.key", "must be a string of 1 to 512 characters"))
    migration_id = body.get("migrationId")
    if "migrationId" in body and (not isinstance(migration_id, str) or len(migration_id) > 256):
        out.append(rules.Violation("body.migrationId", "must be a string of at most 256 characters"))
    if "credits" in body:
        credits = body["credits"]
        cost = credits.get("cost") if isinstance(credits, dict) else None
        if (
            not isinstance(credits, dict)
            or set(credits) != {"cost"}
            or isinstance(cost, bool)
            or not isinstance(cost, int)
            or not 0 <= cost <= 1_000_000_000_000
        ):
            out.append(rules.Violation("body.credits", "must be {cost: integer 0..1000000000000}"))
    tags = body.get("tags")
    if "tags" in body and (
        not isinstance(tags, list)
        or len(tags) > 20
        or any(not isinstance(t, str) or not 1 <= len(t) <= 512 for t in tags)
    ):
        out.append(rules.Violation("body.tags", "must be at most 20 strings of 1 to 512 characters"))
    permissions = body.get("permissions")
    if "permissions" in body and (not isinstance(permissions, str) or not 1 <= len(permissions) <= 1000):
        out.append(rules.Violation("body.permissions", "must be a string of 1 to 1000 characters"))
    if "ratelimits" in body and not isinstance(body["ratelimits"], list):
        out.append(rules.Violation("body.ratelimits", "must be an array"))
    return out


def get_api_violations(body: Any) -> list[rules.Violation]:
    """``V2ApisGetApiRequestBody``: ``{apiId}``, 8-255 characters of ``[a-zA-Z0-9_]``."""
    if not isinstance(body, dict):
        return [rules.Violation("body", "must be an object")]
    out = _unknown_properties(body, {"apiId"})
    api_id = body.get("apiId")
    if "apiId" not in body:
        out.append(rules.Violation("body.apiId", "is required"))
    elif not isinstance(api_id, str) or not 8 <= len(api_id) <= 255:
        out.append(rules.Violation("body.apiId", "must be a string of 8 to 255 characters"))
    elif not set(api_id) <= _GET_API_ID_CHARS:
        out.append(rules.Violation("body.apiId", "must match the pattern ^[a-zA-Z0-9_]+$"))
    return out
