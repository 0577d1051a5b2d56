"""Checks of key objects and request bodies, read from the field table (:mod:`.fields`).

Two layers:

* :func:`schema_violations` — the JSON schema, to the letter. A violation is a ``400`` with one
  ``errors[]`` entry per location.
* :func:`server_violations` — what the server rejects beyond the schema, each with the status the
  real server answers: ``400`` for a monthly refill without ``refillDay`` and for integers a Go
  ``int64`` cannot hold, ``500`` for ``"credits": {"remaining": null}`` (the schema's "unlimited",
  on which the handler panics), a duplicate role, a hash longer than its ``varchar(256)`` column, or
  the same hash twice in one request.

Most keys are valid, so each check first runs a compiled fast path (:func:`value_ok`): closures built
once from the table (by :mod:`.codegen`) that accept a value only when both layers would find
nothing in it. Anything unusual falls through to the full walk, which says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_unkey.rules.codegen import _KEY_OK, _KEY_SERVER_OK, _VALUE_OK, Check, _python_pattern
from airflow_provider_unkey.rules.fields import BODY, INT64_MAX, KEY, Field, Node


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


def _is_integer(v: Any) -> bool:
    # JSON Schema: a number with no fractional part is an integer (1.0 too); booleans are not numbers.
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and v.is_integer()


# --- the schema, to the letter -------------------------------------------------------------------------
def _schema(node: Node, v: Any, loc: str, out: list[Violation]) -> None:
    f = node.field
    if v is None and f.nullable:
        return
    if f.type == "string":
        if f.enum:
            if v not in f.enum:
                out.append(Violation(loc, f"must be one of: {', '.join(f.enum)}"))
        elif not isinstance(v, str):
            out.append(Violation(loc, "must be a string"))
        elif f.min_length is not None and len(v) < f.min_length:
            out.append(Violation(loc, f"must be at least {f.min_length} characters long"))
        elif f.max_length is not None and len(v) > f.max_length:
            out.append(Violation(loc, f"must be at most {f.max_length} characters long"))
        elif f.pattern is not None and not _python_pattern(f.pattern).match(v):
            out.append(Violation(loc, f"must match the pattern {f.pattern}"))
    elif f.type == "integer":
        if not _is_integer(v):
            out.append(Violation(loc, "must be an integer"))
        elif f.minimum is not None and v < f.minimum:
            out.append(Violation(loc, f"must be >= {f.minimum}"))
        elif f.maximum is not None and v > f.maximum:
            out.append(Violation(loc, f"must be <= {f.maximum}"))
    elif f.type == "boolean":
        if not isinstance(v, bool):
            out.append(Violation(loc, "must be a boolean"))
    elif f.type == "object":
        if not isinstance(v, Mapping):
            out.append(Violation(loc, "must be an object"))
            return
        if f.closed:
            for name in v:
                if name not in node.members:
                    allowed = ", ".join(sorted(node.members))
                    out.append(
                        Violation(
                            f"{loc}.{name}", "additional property is not allowed", fix=f"allowed: {allowed}"
                        )
                    )
        if f.max_properties is not None and len(v) > f.max_properties:
            out.append(Violation(loc, f"must have at most {f.max_properties} properties"))
        for name in node.required:
            if name not in v:
                out.append(Violation(f"{loc}.{name}", "is required"))
        for name, member in node.members.items():
            if name in v:
                _schema(member, v[name], f"{loc}.{name}", out)
    elif f.type == "array":
        if not isinstance(v, list | tuple):
            out.append(Violation(loc, "must be an array"))
            return
        if f.min_items is not None and len(v) < f.min_items:
            out.append(Violation(loc, f"must have at least {f.min_items} item{'s' * (f.min_items != 1)}"))
        if f.max_items is not None and len(v) > f.max_items:
            out.append(Violation(loc, f"must have at most {f.max_items} items"))
        if node.items is not None:
            # Keys are checked by their generated fast check first: most are fine.
            fine = _KEY_OK if node.items is KEY else None
            for i, item in enumerate(v):
                if fine is None or not fine(item):
                    _schema(node.items, item, f"{loc}[{i}]", out)


# --- beyond the schema -----------------------------------------------------------------------------------
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


def null_violation(f: Field, loc: str, parent: Mapping[str, Any]) -> Violation:
    """The server's answer to ``null`` in a field whose entry has a ``null_status``.

    :param f: the field's entry.
    :param loc: where the null is.
    :param parent: the object that holds it (its other members shape the message).
    """
    if f.path == "credits.remaining":
        return null_remaining_violation(loc, refill="refill" in parent)
    return Violation(
        loc, f"is null, which makes Unkey fail the whole request with a {f.null_status}", f.null_status or 500
    )


def _required_when(member: Node, sibling: Node) -> Violation:
    f = member.field
    assert f.required_when is not None
    other, value = f.required_when
    rest = [v for v in sibling.field.enum if v != value]
    fix = f"set {f.name} ({f.minimum}-{f.maximum})" + (
        f" or use a {rest[0]} {other}" if len(rest) == 1 else ""
    )
    return Violation("", f"is required when {other} is {value}", fix=fix)


def _server(node: Node, v: Any, loc: str, out: list[Violation]) -> None:
    """The server's rules, on a value the schema accepts."""
    f = node.field
    if f.type == "integer":
        # Go decodes into int64: 1.0 or 2**63 do not decode, the request is a 400.
        if isinstance(v, float):
            out.append(Violation(loc, "must be a JSON integer without a fraction or exponent"))
        elif isinstance(v, int) and not isinstance(v, bool) and v > INT64_MAX:
            out.append(Violation(loc, f"must be <= {INT64_MAX} (int64)"))
    elif f.type == "string":
        if f.max_stored_length is not None and isinstance(v, str) and len(v) > f.max_stored_length:
            out.append(Violation(loc, f"is longer than {f.max_stored_length} characters", status=500))
    elif f.type == "object" and isinstance(v, Mapping):
        for name, member in node.members.items():
            mf = member.field
            if name in v:
                if v[name] is None and mf.null_status is not None:
                    out.append(null_violation(mf, f"{loc}.{name}", v))
                else:
                    _server(member, v[name], f"{loc}.{name}", out)
            elif mf.required_when is not None and v.get(mf.required_when[0]) == mf.required_when[1]:
                rule = _required_when(member, node.members[mf.required_when[0]])
                out.append(Violation(f"{loc}.{name}", rule.message, rule.status, rule.fix))
    elif f.type == "array" and isinstance(v, list | tuple):
        if f.unique_items is not None and len(set(v)) != len(v):
            seen: set[Any] = set()
            for i, item in enumerate(v):
                if item in seen:
                    out.append(Violation(f"{loc}[{i}]", f"duplicate {f.unique_items} {item!r}", status=500))
                seen.add(item)
        if node.items is not None:
            for i, item in enumerate(v):
                _server(node.items, item, f"{loc}[{i}]", out)


# --- fast paths ------------------------------------------------------------------------------------
# Generated from the table by :mod:`.codegen`; the full walks above say what is wrong when these refuse.
def _fast_server_ok(key: Any) -> bool:
    """True only when :func:`key_server_violations` would find nothing in a schema-valid ``key``."""
    return _KEY_SERVER_OK(key)


def _fast_ok(key: Any) -> bool:
    """True only when neither :func:`key_schema_violations` nor :func:`key_server_violations` would
    find anything in ``key``."""
    return _KEY_OK(key)


def value_ok(path: str) -> Check:
    """A fast check of one field's value alone: true only when the schema and the server would accept
    it (``"ratelimits"``: the whole list, as decoded from JSON). It may refuse values the full checks
    accept (other number types, say); it never accepts one they refuse.
    """
    return _VALUE_OK[path]


# --- the checks ------------------------------------------------------------------------------------
def key_schema_violations(key: Any, loc: str = "body.keys[0]") -> list[Violation]:
    """Check one key object against ``V2KeysMigrateKeyData``.

    :param key: the decoded JSON key object.
    :param loc: its location, used as the prefix of every violation's location.
    :return: every violation found; empty when the schema accepts the key.
    """
    if _fast_ok(key):
        return []
    out: list[Violation] = []
    _schema(KEY, key, loc, out)
    return out


def schema_violations(body: Any) -> list[Violation]:
    """Check a whole ``keys.migrateKeys`` request body against ``V2KeysMigrateKeysRequestBody``.

    :param body: the decoded JSON body.
    :return: every violation found, all with status 400; empty when the schema accepts the body.
    """
    out: list[Violation] = []
    _schema(BODY, body, "body", out)
    return out


def key_server_violations(key: Mapping[str, Any], loc: str = "body.keys[0]") -> list[Violation]:
    """What the server rejects in one schema-valid key beyond the schema.

    :param key: a key object that :func:`key_schema_violations` accepts.
    :param loc: its location.
    :return: violations with the status the server answers for the whole request (400 or 500), every
        400 before every 500.
    """
    if _fast_server_ok(key):
        return []
    out: list[Violation] = []
    _server(KEY, key, loc, out)
    return sorted(out, key=lambda v: v.status)


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
