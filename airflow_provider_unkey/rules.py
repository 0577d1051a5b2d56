"""The rules of Unkey's ``keys.migrateKeys`` request, in one place.

Written from Unkey's OpenAPI description (``V2KeysMigrateKeysRequestBody`` and the schemas it
references) and from what the real server does beyond the schema. Nothing here reads the spec at run
time: users do not have it. A differential test (``tests/test_rules_differential.py``) proves that
:func:`schema_violations` accepts a body exactly when the published spec does.

Two layers:

* :func:`schema_violations` — the JSON schema, to the letter. A violation is a ``400`` with one
  ``errors[]`` entry per location.
* :func:`server_violations` — what the server rejects beyond the schema, each with the status the
  real server answers (``400`` for a monthly refill without ``refillDay`` and for integers a Go
  ``int64`` cannot hold, ``500`` for ``"credits": {"remaining": null}`` (the schema's "unlimited",
  on which the handler panics), a duplicate role, a hash longer than its ``varchar(256)`` column, or
  the same hash twice in one request).

The emulator answers by these rules and the operator's validation rejects rows by them, so a row
the operator lets through is a row the server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# --- limits, from the spec -------------------------------------------------------------------------
ID_MIN_LENGTH = 3  #: ``migrationId`` and ``apiId``
ID_MAX_LENGTH = 255
HASH_MIN_LENGTH = 3
NAME_MIN_LENGTH, NAME_MAX_LENGTH = 1, 255
EXTERNAL_ID_MIN_LENGTH, EXTERNAL_ID_MAX_LENGTH = 1, 255
META_MAX_PROPERTIES = 100
ROLES_MAX_ITEMS = 100
ROLE_MIN_LENGTH, ROLE_MAX_LENGTH = 1, 128
PERMISSIONS_MAX_ITEMS = 1000
PERMISSION_MIN_LENGTH, PERMISSION_MAX_LENGTH = 1, 128
#: The spec's pattern for a permission, written for ECMA-262 (``$`` is the very end of the string).
PERMISSION_PATTERN = r"^[a-zA-Z0-9_:\-\.\*]+$"
EXPIRES_MIN, EXPIRES_MAX = 0, 4_102_444_800_000
#: The spec writes ``9223372036854776000`` (2**63 rounded by a float); it is the schema's bound.
CREDITS_MAX = 9_223_372_036_854_776_000
CREDITS_REMAINING_MIN = 0
REFILL_AMOUNT_MIN = 1
REFILL_INTERVALS = ("daily", "monthly")
REFILL_DAY_MIN, REFILL_DAY_MAX = 1, 31
RATELIMITS_MAX_ITEMS = 50
RATELIMIT_NAME_MIN_LENGTH, RATELIMIT_NAME_MAX_LENGTH = 3, 128
RATELIMIT_LIMIT_MIN = 1
RATELIMIT_DURATION_MIN = 1000

# --- limits beyond the schema (BEHAVIOUR.md) ---------------------------------------------------------
#: The hash is stored in a ``varchar(256)`` column: a longer one fails the insert (500).
HASH_MAX_STORED_LENGTH = 256
#: Integers are decoded into Go ``int64``.
INT64_MAX = 2**63 - 1
#: Request bodies above this are refused with 413.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: The server's own timeout for one request (then 408).
SERVER_TIMEOUT_SECONDS = 60.0

#: Every field a key object may carry (``additionalProperties: false``): there is no ``prefix``.
KEY_FIELDS = (
    "hash",
    "name",
    "externalId",
    "meta",
    "roles",
    "permissions",
    "expires",
    "enabled",
    "credits",
    "ratelimits",
)
CREDITS_FIELDS = ("remaining", "refill")
REFILL_FIELDS = ("interval", "amount", "refillDay")
RATELIMIT_FIELDS = ("name", "limit", "duration", "autoApply")

# ECMA-262 ``$`` without the multiline flag matches only at the end; Python's ``$`` also matches
# before a final newline, so anchor with ``\Z``.
_PERMISSION_RE = re.compile(r"[a-zA-Z0-9_:\-\.\*]+\Z")

#: Hash formats by migration algorithm, see :func:`hash_format_violation`.
SHA256_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{43}=\Z")
#: 32 bytes are 256 bits: the 43rd base64 character carries the last 4 bits and two zero bits, so it is
#: one of these 16; a hash of the shape above with any other one is the base64 of no SHA-256 digest.
SHA256_BASE64_LAST_CHARS = frozenset("AEIMQUYcgkosw048")
SHA256_HEX_RE = re.compile(r"[0-9a-fA-F]{64}\Z")
ALGORITHM_SHA256 = "sha256"
ALGORITHM_SEAM = "github.com/seamapi/prefixed-api-key"
#: A migration's algorithm by the names users give it; ``seam`` is a short alias.
ALGORITHM_ALIASES: dict[str, str] = {
    ALGORITHM_SHA256: ALGORITHM_SHA256,
    ALGORITHM_SEAM: ALGORITHM_SEAM,
    "seam": ALGORITHM_SEAM,
}


def canonical_algorithm(algorithm: str) -> str:
    """A migration algorithm's canonical name (``sha256`` or the seam one; ``seam`` is an alias).

    :raises ValueError: for any other name.
    """
    try:
        return ALGORITHM_ALIASES[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown migration algorithm {algorithm!r}: use 'sha256' (Unkey's native) or "
            f"'{ALGORITHM_SEAM}' (alias 'seam')"
        ) from None


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule.

    :param location: where, in the server's notation (``body.keys[3].permissions[0]``).
    :param message: what is wrong, for a person.
    :param status: the HTTP status the real server answers for the whole request.
    :param fix: how to fix it, when there is something useful to say.
    """

    location: str
    message: str
    status: int = 400
    fix: str | None = None


# --- JSON value types, as JSON Schema defines them ---------------------------------------------------
def _is_string(v: Any) -> bool:
    return isinstance(v, str)


def _is_integer(v: Any) -> bool:
    # JSON Schema: a number with no fractional part is an integer (1.0 too); booleans are not numbers.
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and v.is_integer()


def _is_object(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_array(v: Any) -> bool:
    return isinstance(v, list | tuple)


def _check_string(out: list[Violation], v: Any, loc: str, min_len: int, max_len: int | None = None) -> bool:
    if not _is_string(v):
        out.append(Violation(loc, "must be a string"))
        return False
    if len(v) < min_len:
        out.append(Violation(loc, f"must be at least {min_len} characters long"))
        return False
    if max_len is not None and len(v) > max_len:
        out.append(Violation(loc, f"must be at most {max_len} characters long"))
        return False
    return True


def _check_integer(
    out: list[Violation], v: Any, loc: str, minimum: int | None, maximum: int | None = None
) -> None:
    if not _is_integer(v):
        out.append(Violation(loc, "must be an integer"))
        return
    if minimum is not None and v < minimum:
        out.append(Violation(loc, f"must be >= {minimum}"))
    elif maximum is not None and v > maximum:
        out.append(Violation(loc, f"must be <= {maximum}"))


def _check_no_extra(out: list[Violation], obj: Mapping[str, Any], allowed: Iterable[str], loc: str) -> None:
    allowed_set = set(allowed)
    for name in obj:
        if name not in allowed_set:
            out.append(
                Violation(
                    f"{loc}.{name}",
                    "additional property is not allowed",
                    fix=f"allowed: {', '.join(sorted(allowed_set))}",
                )
            )


def _check_required(out: list[Violation], obj: Mapping[str, Any], required: Iterable[str], loc: str) -> None:
    for name in required:
        if name not in obj:
            out.append(Violation(f"{loc}.{name}", "is required"))


def _check_string_list(
    out: list[Violation],
    v: Any,
    loc: str,
    max_items: int,
    min_len: int,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
) -> None:
    if not _is_array(v):
        out.append(Violation(loc, "must be an array"))
        return
    if len(v) > max_items:
        out.append(Violation(loc, f"must have at most {max_items} items"))
    for i, item in enumerate(v):
        item_loc = f"{loc}[{i}]"
        if (
            _check_string(out, item, item_loc, min_len, max_len)
            and pattern is not None
            and not pattern.match(item)
        ):
            out.append(Violation(item_loc, f"must match the pattern {PERMISSION_PATTERN}"))


def _check_credits(out: list[Violation], v: Any, loc: str) -> None:
    if not _is_object(v):
        out.append(Violation(loc, "must be an object"))
        return
    _check_no_extra(out, v, CREDITS_FIELDS, loc)
    _check_required(out, v, ("remaining",), loc)
    if "remaining" in v and v["remaining"] is not None:
        _check_integer(out, v["remaining"], f"{loc}.remaining", CREDITS_REMAINING_MIN, CREDITS_MAX)
    if "refill" in v:
        refill, rloc = v["refill"], f"{loc}.refill"
        if not _is_object(refill):
            out.append(Violation(rloc, "must be an object"))
            return
        _check_no_extra(out, refill, REFILL_FIELDS, rloc)
        _check_required(out, refill, ("interval", "amount"), rloc)
        if "interval" in refill and refill["interval"] not in REFILL_INTERVALS:
            out.append(Violation(f"{rloc}.interval", "must be one of: daily, monthly"))
        if "amount" in refill:
            _check_integer(out, refill["amount"], f"{rloc}.amount", REFILL_AMOUNT_MIN, CREDITS_MAX)
        if "refillDay" in refill:
            _check_integer(out, refill["refillDay"], f"{rloc}.refillDay", REFILL_DAY_MIN, REFILL_DAY_MAX)


def _check_ratelimits(out: list[Violation], v: Any, loc: str) -> None:
    if not _is_array(v):
        out.append(Violation(loc, "must be an array"))
        return
    if len(v) > RATELIMITS_MAX_ITEMS:
        out.append(Violation(loc, f"must have at most {RATELIMITS_MAX_ITEMS} items"))
    for i, rl in enumerate(v):
        rloc = f"{loc}[{i}]"
        if not _is_object(rl):
            out.append(Violation(rloc, "must be an object"))
            continue
        # The spec leaves RatelimitRequest open (no additionalProperties: false).
        _check_required(out, rl, RATELIMIT_FIELDS, rloc)
        if "name" in rl:
            _check_string(
                out, rl["name"], f"{rloc}.name", RATELIMIT_NAME_MIN_LENGTH, RATELIMIT_NAME_MAX_LENGTH
            )
        if "limit" in rl:
            _check_integer(out, rl["limit"], f"{rloc}.limit", RATELIMIT_LIMIT_MIN)
        if "duration" in rl:
            _check_integer(out, rl["duration"], f"{rloc}.duration", RATELIMIT_DURATION_MIN)
        if "autoApply" in rl and not isinstance(rl["autoApply"], bool):
            out.append(Violation(f"{rloc}.autoApply", "must be a boolean"))


# --- fast paths ------------------------------------------------------------------------------------
# Most keys are valid. These checks accept a key only when the full checks below would find nothing
# (exact types from a JSON decoder: dict, list, str, int, bool); anything unusual or wrong falls
# through to the full checks, which say what is wrong. The differential test against the spec runs
# through them.
_KEY_FIELD_SET = frozenset(KEY_FIELDS)
_CREDITS_FIELD_SET = frozenset(CREDITS_FIELDS)
_REFILL_FIELD_SET = frozenset(REFILL_FIELDS)


def _fast_str(v: Any, low: int, high: int) -> bool:
    return type(v) is str and low <= len(v) <= high


def _fast_int(v: Any, low: int, high: int) -> bool:
    return type(v) is int and low <= v <= high


def _fast_key_ok(key: Any) -> bool:
    """True only when :func:`key_schema_violations` would find nothing."""
    if type(key) is not dict or not _KEY_FIELD_SET.issuperset(key):
        return False
    h = key.get("hash")
    if type(h) is not str or len(h) < HASH_MIN_LENGTH:
        return False
    get = key.get
    if "name" in key and not _fast_str(get("name"), NAME_MIN_LENGTH, NAME_MAX_LENGTH):
        return False
    if "externalId" in key and not _fast_str(
        get("externalId"), EXTERNAL_ID_MIN_LENGTH, EXTERNAL_ID_MAX_LENGTH
    ):
        return False
    if "meta" in key:
        meta = get("meta")
        if type(meta) is not dict or len(meta) > META_MAX_PROPERTIES:
            return False
    if "roles" in key:
        roles = get("roles")
        if type(roles) is not list or len(roles) > ROLES_MAX_ITEMS:
            return False
        if not all(_fast_str(r, ROLE_MIN_LENGTH, ROLE_MAX_LENGTH) for r in roles):
            return False
    if "permissions" in key:
        perms = get("permissions")
        if type(perms) is not list or len(perms) > PERMISSIONS_MAX_ITEMS:
            return False
        match = _PERMISSION_RE.match
        if not all(type(p) is str and len(p) <= PERMISSION_MAX_LENGTH and match(p) for p in perms):
            return False
    if "expires" in key and not _fast_int(get("expires"), EXPIRES_MIN, EXPIRES_MAX):
        return False
    if "enabled" in key and type(get("enabled")) is not bool:
        return False
    if "credits" in key:
        credits = get("credits")
        if (
            type(credits) is not dict
            or "remaining" not in credits
            or not _CREDITS_FIELD_SET.issuperset(credits)
        ):
            return False
        remaining = credits["remaining"]
        if remaining is not None and not _fast_int(remaining, CREDITS_REMAINING_MIN, CREDITS_MAX):
            return False
        if "refill" in credits:
            refill = credits["refill"]
            if (
                type(refill) is not dict
                or not _REFILL_FIELD_SET.issuperset(refill)
                or refill.get("interval") not in REFILL_INTERVALS
                or not _fast_int(refill.get("amount"), REFILL_AMOUNT_MIN, CREDITS_MAX)
            ):
                return False
            if "refillDay" in refill and not _fast_int(refill["refillDay"], REFILL_DAY_MIN, REFILL_DAY_MAX):
                return False
    if "ratelimits" in key:
        limits = get("ratelimits")
        if type(limits) is not list or len(limits) > RATELIMITS_MAX_ITEMS:
            return False
        for rl in limits:
            if (
                type(rl) is not dict
                or not _fast_str(rl.get("name"), RATELIMIT_NAME_MIN_LENGTH, RATELIMIT_NAME_MAX_LENGTH)
                or type(rl.get("limit")) is not int
                or rl["limit"] < RATELIMIT_LIMIT_MIN
                or type(rl.get("duration")) is not int
                or rl["duration"] < RATELIMIT_DURATION_MIN
                or type(rl.get("autoApply")) is not bool
            ):
                return False
    return True


def _fast_int64(v: Any) -> bool:
    return v is None or (type(v) is int and v <= INT64_MAX)


def _fast_server_ok(key: Any) -> bool:
    """True only when :func:`key_server_violations` would find nothing (for a schema-valid key)."""
    if type(key) is not dict:
        return False
    h = key.get("hash")
    if type(h) is not str or len(h) > HASH_MAX_STORED_LENGTH:
        return False
    if not _fast_int64(key.get("expires")):
        return False
    roles = key.get("roles")
    if roles is not None and (type(roles) is not list or len(set(roles)) != len(roles)):
        return False
    credits = key.get("credits")
    if credits is not None:
        # An explicit null remaining is a 500 (see key_server_violations); an integer one must fit int64.
        remaining = credits.get("remaining") if type(credits) is dict else None
        if remaining is None or not _fast_int64(remaining):
            return False
        refill = credits.get("refill")
        if refill is not None and (
            type(refill) is not dict
            or not _fast_int64(refill.get("amount"))
            or not _fast_int64(refill.get("refillDay"))
            or (refill.get("interval") == "monthly" and "refillDay" not in refill)
        ):
            return False
    limits = key.get("ratelimits")
    if limits is not None:
        if type(limits) is not list:
            return False
        for rl in limits:
            if (
                type(rl) is not dict
                or not _fast_int64(rl.get("limit"))
                or not _fast_int64(rl.get("duration"))
            ):
                return False
    return True


def key_schema_violations(key: Any, loc: str = "body.keys[0]") -> list[Violation]:
    """Check one key object against ``V2KeysMigrateKeyData``.

    :param key: the decoded JSON key object.
    :param loc: its location, used as the prefix of every violation's location.
    :return: every violation found; empty when the schema accepts the key.
    """
    if _fast_key_ok(key):
        return []
    out: list[Violation] = []
    if not _is_object(key):
        return [Violation(loc, "must be an object")]
    _check_no_extra(out, key, KEY_FIELDS, loc)
    if "hash" not in key:
        out.append(Violation(f"{loc}.hash", "is required"))
    else:
        _check_string(out, key["hash"], f"{loc}.hash", HASH_MIN_LENGTH)
    if "name" in key:
        _check_string(out, key["name"], f"{loc}.name", NAME_MIN_LENGTH, NAME_MAX_LENGTH)
    if "externalId" in key:
        _check_string(
            out, key["externalId"], f"{loc}.externalId", EXTERNAL_ID_MIN_LENGTH, EXTERNAL_ID_MAX_LENGTH
        )
    if "meta" in key:
        meta = key["meta"]
        if not _is_object(meta):
            out.append(Violation(f"{loc}.meta", "must be an object"))
        elif len(meta) > META_MAX_PROPERTIES:
            out.append(Violation(f"{loc}.meta", f"must have at most {META_MAX_PROPERTIES} properties"))
    if "roles" in key:
        _check_string_list(
            out, key["roles"], f"{loc}.roles", ROLES_MAX_ITEMS, ROLE_MIN_LENGTH, ROLE_MAX_LENGTH
        )
    if "permissions" in key:
        _check_string_list(
            out,
            key["permissions"],
            f"{loc}.permissions",
            PERMISSIONS_MAX_ITEMS,
            PERMISSION_MIN_LENGTH,
            PERMISSION_MAX_LENGTH,
            _PERMISSION_RE,
        )
    if "expires" in key:
        _check_integer(out, key["expires"], f"{loc}.expires", EXPIRES_MIN, EXPIRES_MAX)
    if "enabled" in key and not isinstance(key["enabled"], bool):
        out.append(Violation(f"{loc}.enabled", "must be a boolean"))
    if "credits" in key:
        _check_credits(out, key["credits"], f"{loc}.credits")
    if "ratelimits" in key:
        _check_ratelimits(out, key["ratelimits"], f"{loc}.ratelimits")
    return out


def schema_violations(body: Any) -> list[Violation]:
    """Check a whole ``keys.migrateKeys`` request body against ``V2KeysMigrateKeysRequestBody``.

    :param body: the decoded JSON body.
    :return: every violation found, all with status 400; empty when the schema accepts the body.
    """
    if not _is_object(body):
        return [Violation("body", "must be an object")]
    out: list[Violation] = []
    _check_no_extra(out, body, ("migrationId", "apiId", "keys"), "body")
    for name in ("migrationId", "apiId"):
        if name not in body:
            out.append(Violation(f"body.{name}", "is required"))
        else:
            _check_string(out, body[name], f"body.{name}", ID_MIN_LENGTH, ID_MAX_LENGTH)
    if "keys" not in body:
        out.append(Violation("body.keys", "is required"))
    elif not _is_array(body["keys"]):
        out.append(Violation("body.keys", "must be an array"))
    elif len(body["keys"]) < 1:
        out.append(Violation("body.keys", "must have at least 1 item"))
    else:
        for i, key in enumerate(body["keys"]):
            out.extend(key_schema_violations(key, f"body.keys[{i}]"))
    return out


def _int_fields(key: Mapping[str, Any], loc: str) -> Iterable[tuple[str, Any]]:
    yield f"{loc}.expires", key.get("expires")
    credits = key.get("credits")
    if isinstance(credits, Mapping):
        yield f"{loc}.credits.remaining", credits.get("remaining")
        refill = credits.get("refill")
        if isinstance(refill, Mapping):
            yield f"{loc}.credits.refill.amount", refill.get("amount")
            yield f"{loc}.credits.refill.refillDay", refill.get("refillDay")
    for i, rl in enumerate(key.get("ratelimits") or ()):
        if isinstance(rl, Mapping):
            yield f"{loc}.ratelimits[{i}].limit", rl.get("limit")
            yield f"{loc}.ratelimits[{i}].duration", rl.get("duration")


def null_remaining_violation(location: str, *, refill: bool) -> Violation:
    """``credits.remaining`` is null: a 500 for the whole request, although the schema calls it unlimited.

    The handler reads a given ``remaining`` without checking for null and panics. Unlimited credits
    are a key without ``credits``; a refill needs an integer ``remaining``.

    :param location: where the null is (``body.keys[3].credits.remaining``).
    :param refill: whether the credits carry a refill (the message then says it needs the count).
    """
    if refill:
        return Violation(
            location,
            "is null, but a refill needs an integer remaining count "
            "(a null remaining makes Unkey fail the whole request with a 500)",
            status=500,
            fix="set an integer remaining count (>= 0)",
        )
    return Violation(
        location,
        "is null, which makes Unkey fail the whole request with a 500 "
        "(unlimited credits are a key without credits)",
        status=500,
        fix="leave credits out for unlimited credits",
    )


def key_server_violations(key: Mapping[str, Any], loc: str = "body.keys[0]") -> list[Violation]:
    """What the server rejects in one schema-valid key beyond the schema.

    :param key: a key object that :func:`key_schema_violations` accepts.
    :param loc: its location.
    :return: violations with the status the server answers for the whole request (400 or 500).
    """
    if _fast_server_ok(key):
        return []
    out: list[Violation] = []
    for where, value in _int_fields(key, loc):
        # Go decodes into int64: 1.0 or 2**63 do not decode, the request is a 400.
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float):
            out.append(Violation(where, "must be a JSON integer without a fraction or exponent"))
        elif isinstance(value, int) and value > INT64_MAX:
            out.append(Violation(where, f"must be <= {INT64_MAX} (int64)"))
    credits = key.get("credits")
    if isinstance(credits, Mapping) and "remaining" in credits and credits["remaining"] is None:
        out.append(null_remaining_violation(f"{loc}.credits.remaining", refill="refill" in credits))
    refill = credits.get("refill") if isinstance(credits, Mapping) else None
    if isinstance(refill, Mapping) and refill.get("interval") == "monthly" and "refillDay" not in refill:
        out.append(
            Violation(
                f"{loc}.credits.refill.refillDay",
                "is required when interval is monthly",
                fix="set refillDay (1-31) or use a daily interval",
            )
        )
    h = key.get("hash")
    if isinstance(h, str) and len(h) > HASH_MAX_STORED_LENGTH:
        out.append(
            Violation(f"{loc}.hash", f"is longer than {HASH_MAX_STORED_LENGTH} characters", status=500)
        )
    roles = key.get("roles")
    if isinstance(roles, list | tuple) and len(set(roles)) != len(roles):
        seen: set[str] = set()
        for i, role in enumerate(roles):
            if role in seen:
                out.append(Violation(f"{loc}.roles[{i}]", f"duplicate role {role!r}", status=500))
            seen.add(role)
    return out


def server_violations(body: Mapping[str, Any]) -> list[Violation]:
    """What the server rejects in a schema-valid body beyond the schema.

    :param body: a body that :func:`schema_violations` accepts.
    :return: violations, each with its status; every 400 comes before every 500 (the server decodes
        and checks every key before it inserts any), so the first one's status is the answer.
    """
    out: list[Violation] = []
    seen: dict[str, int] = {}
    for i, key in enumerate(body["keys"]):
        out.extend(key_server_violations(key, f"body.keys[{i}]"))
        h = key["hash"]
        if h in seen:
            out.append(
                Violation(f"body.keys[{i}].hash", f"duplicate of body.keys[{seen[h]}].hash", status=500)
            )
        else:
            seen[h] = i
    # Stable: in key order within each status.
    return sorted(out, key=lambda v: v.status)
