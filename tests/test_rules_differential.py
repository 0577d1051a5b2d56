"""Differential test: :func:`rules.schema_violations` against Unkey's published schema.

``rules.py`` is written by hand from the spec. Here hypothesis generates key objects and whole
``keys.migrateKeys`` bodies on both sides of every boundary the spec draws, and each one must be
accepted by ``rules`` exactly when the spec (``tests/spec.py``: jsonschema Draft 2020-12 with ECMA-262
``$``) accepts it. The generated objects are either valid or carry one near-miss, at any depth: an
invalid key has exactly one bad field, an invalid ``credits`` inside it exactly one bad subfield, and
so on, so a rule ``rules.py`` gets wrong is not hidden behind another error.

The boundaries below are copied from the spec (``test_boundaries_are_the_specs`` checks them); the
verdict always comes from the spec itself. On keys the spec accepts, ``test_server_rules_on_keys_the_spec_accepts``
checks the server's rules beyond it, ``"remaining": null`` (a 500) among them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

from airflow_provider_unkey import rules
from tests import spec

BODY_SCHEMA = "V2KeysMigrateKeysRequestBody"
KEY_SCHEMA = "V2KeysMigrateKeyData"

# --- the spec's boundaries ----------------------------------------------------------------------------
ID_LEN = (3, 255)
HASH_MIN = 3
NAME_LEN = EXTERNAL_ID_LEN = (1, 255)
META_MAX = 100
ROLES_MAX, ROLE_LEN = 100, (1, 128)
PERMISSIONS_MAX, PERMISSION_LEN = 1000, (1, 128)
PERMISSION_CHARS = "abcxyzABCXYZ0189_:-.*"
EXPIRES = (0, 4_102_444_800_000)
CREDITS = (0, 9_223_372_036_854_776_000)
AMOUNT = (1, 9_223_372_036_854_776_000)
REFILL_DAY = (1, 31)
RATELIMITS_MAX, RATELIMIT_NAME_LEN = 50, (3, 128)
LIMIT_MIN, DURATION_MIN = 1, 1000

# Characters strings are built from: a length is counted in code points, whatever their size in
# UTF-8 or UTF-16 (astral, combining mark, lone surrogate, control characters, space, newline).
CHARS = ["a", "Z", "0", "_", "é", "ß", "中", "😀", "\u0301", "\ud800", " ", "\n", "\t", "\x00", "/"]
#: Not a permission character, each one; "\n" at the end is the ECMA-262 ``$`` trap.
PERMISSION_BREAKERS = [
    "\n",
    "\r\n",
    " ",
    "\t",
    "é",
    "😀",
    "/",
    "$",
    "^",
    "\\",
    "+",
    ",",
    "@",
    "#",
    "(",
    "\x00",
]
#: Names that are not fields of the object they are added to (``prefix`` is the v1 field v2 dropped).
EXTRA_NAMES = ["prefix", "Hash", "hash ", "keyId", "keyAuthId", "ownerId", "", "é", "refillday", "Remaining"]

#: Reproducible (derandomized, no example database). No shrinking: a failing example already carries a
#: single near-miss and the assertion names where rules and spec differ, while shrinking bodies with
#: a thousand permissions takes hypothesis minutes per test; ``EDGE_CASES`` are the minimal examples.
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    report_multiple_bugs=False,
)

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=4,
)
NON_STRINGS: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, False, 0, 3, 3.0, 1.5, -1, [], ["abc"], {}, {"a": "abc"}]
)
NON_INTEGERS: st.SearchStrategy[Any] = st.sampled_from(
    [True, False, 1.5, 0.5, "1", "1000", "", [], [1], {}, {"a": 1}]
)
NON_BOOLEANS: st.SearchStrategy[Any] = st.sampled_from([None, 0, 1, 1.0, "true", "false", "", [], {}, [True]])
NON_OBJECTS: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 0, 1.5, "", "{}", [], [{}], [{"hash": "abc"}]]
)
NON_ARRAYS: st.SearchStrategy[Any] = st.sampled_from([None, True, 0, 1.5, "", "abc", "[]", {}, {"0": "abc"}])


# --- leaves -----------------------------------------------------------------------------------------
def _fill(head: str, char: str, length: int) -> str:
    """``head`` padded with ``char`` and cut, to exactly ``length`` code points."""
    return (head + char * length)[:length]


def _sized(lengths: st.SearchStrategy[int], chars: Iterable[str] = CHARS) -> st.SearchStrategy[str]:
    alphabet = list(chars)
    return st.builds(
        _fill, st.text(st.sampled_from(alphabet), max_size=4), st.sampled_from(alphabet), lengths
    )


def good_str(lo: int, hi: int | None) -> st.SearchStrategy[str]:
    """Strings of a length the spec allows, often at its edges."""
    top = hi if hi is not None else lo + 300
    edges = [lo, lo + 1, top - 1, top]
    return _sized(st.one_of(st.sampled_from(edges), st.integers(lo, top)))


Kinds = list[tuple[str, st.SearchStrategy[Any]]]
"""Near-misses of one value, one strategy per kind, each with a label."""


def bad_str(lo: int, hi: int | None) -> Kinds:
    """Too short, too long (by a character or two), or not a string at all."""
    out: Kinds = [("not a string", NON_STRINGS)]
    if lo > 0:
        out.append(("too short", _sized(st.sampled_from(list(range(max(lo - 3, 0), lo))))))
    if hi is not None:
        out.append(("too long", _sized(st.sampled_from([hi + 1, hi + 2]))))
    return out


def good_int(lo: int, hi: int | None) -> st.SearchStrategy[Any]:
    """Integers in range, at the edges, and integral floats (JSON Schema: ``1.0`` is an integer)."""
    edges: list[Any] = [lo, lo + 1, float(lo), float(lo + 1)]
    if hi is None:
        edges += [2**31, 2**53, 2**63 - 1, 2**63, 2**80, 1e20]
        inner = st.integers(lo, 2**64)
    else:
        edges += [hi - 1, hi]
        edges += [f for f in (float(hi - 1), float(hi)) if lo <= f <= hi]
        inner = st.integers(lo, hi)
    return st.one_of(st.sampled_from(edges), inner)


def bad_int(lo: int, hi: int | None, nullable: bool = False) -> Kinds:
    """Below the minimum, above the maximum, a fraction, or no integer (``null`` unless ``nullable``)."""
    out: Kinds = [
        ("below minimum", st.sampled_from([lo - 1, float(lo - 1), lo - 2, lo - 1000, -(2**63)])),
        ("fraction", st.sampled_from([lo + 0.5, lo - 0.5, 1.5, lo + 1e-9])),
        ("not an integer", NON_INTEGERS if nullable else st.one_of(st.none(), NON_INTEGERS)),
    ]
    if hi is not None:
        above = [hi + 1, hi + 2, hi + 1000, 2**64, float(2**70)]
        if float(hi + 1) > hi:  # not when a float cannot tell hi + 1 from hi
            above.append(float(hi + 1))
        out.append(("above maximum", st.sampled_from(above)))
    return out


GOOD_BOOL: st.SearchStrategy[Any] = st.booleans()
BAD_BOOL: Kinds = [("not a boolean", NON_BOOLEANS)]

GOOD_PERMISSION = st.one_of(
    st.text(st.sampled_from(PERMISSION_CHARS), min_size=1, max_size=12),
    st.sampled_from(["_:-.*", "api.*.create_key", "a-b.c:d*e_F9", *PERMISSION_CHARS]),
    _sized(st.sampled_from([1, 2, 127, 128]), PERMISSION_CHARS),
)
BAD_PERMISSION: Kinds = [
    ("bad last char", st.builds(lambda ok, c: ok + c, GOOD_PERMISSION, st.sampled_from(PERMISSION_BREAKERS))),
    ("trailing newline", st.builds(lambda ok: ok + "\n", GOOD_PERMISSION)),
    (
        "bad char inside",
        st.builds(
            lambda ok, c, at: ok[:at] + c + ok[at:],
            GOOD_PERMISSION,
            st.sampled_from(PERMISSION_BREAKERS),
            st.integers(0, 12),
        ),
    ),
    ("too short", st.just("")),
    ("too long", _sized(st.sampled_from([129, 130]), PERMISSION_CHARS)),
    ("not a string", NON_STRINGS),
]


# --- lists and maps with a size limit -----------------------------------------------------------------
def _pad_list(items: list[Any], total: int | None, filler: Callable[[int], Any]) -> list[Any]:
    """``items`` padded with ``filler(i)`` up to ``total`` items (``None``: left as they are)."""
    if total is None:
        return items
    return items + [filler(i) for i in range(total - len(items))]


def _insert(items: list[Any], bad: Any, at: int) -> list[Any]:
    return [*items[:at], bad, *items[at:]]


def good_list(
    item: st.SearchStrategy[Any], max_items: int, filler: Callable[[int], Any]
) -> st.SearchStrategy[Any]:
    """Lists of good items, some exactly at the limit and some one below it."""
    totals = st.sampled_from([None, None, None, None, None, 0, max_items - 1, max_items])
    return st.builds(_pad_list, st.lists(item, max_size=3), totals, st.just(filler))


def bad_list(
    item: st.SearchStrategy[Any], bad_items: Kinds, max_items: int, filler: Callable[[int], Any]
) -> Kinds:
    """An item or two over the limit, not an array, or one bad item (of each kind) among good ones."""
    over = st.builds(
        _pad_list,
        st.lists(item, max_size=3),
        st.sampled_from([max_items + 1, max_items + 2]),
        st.just(filler),
    )
    out: Kinds = [("too many items", over), ("not an array", NON_ARRAYS)]
    for label, bad in bad_items:
        out.append((f"[i] {label}", st.builds(_insert, st.lists(item, max_size=3), bad, st.integers(0, 3))))
    return out


def _pad_meta(meta: dict[str, Any], total: int | None) -> dict[str, Any]:
    """``meta`` with filler properties added up to ``total`` properties."""
    out = dict(meta)
    i = 0
    while total is not None and len(out) < total:
        out.setdefault(f"k{i}", i)
        i += 1
    return out


SOME_META = st.dictionaries(st.text(max_size=4), JSON, max_size=3)
GOOD_META = st.builds(_pad_meta, SOME_META, st.sampled_from([None, 0, META_MAX - 1, META_MAX]))
BAD_META: Kinds = [
    ("too many properties", st.builds(_pad_meta, SOME_META, st.sampled_from([META_MAX + 1, META_MAX + 2]))),
    ("not an object", NON_OBJECTS),
]


# --- objects: valid, or with exactly one near-miss ---------------------------------------------------
@dataclass(frozen=True)
class Field:
    """A property's good values and its near-misses."""

    good: st.SearchStrategy[Any]
    bad: Kinds


@dataclass(frozen=True)
class Obj:
    """An object schema: required and optional properties, closed (``additionalProperties: false``) or not."""

    required: dict[str, Field]
    optional: dict[str, Field] = field(default_factory=dict)
    closed: bool = True

    def _dicts(
        self, bad: str | None = None, value: st.SearchStrategy[Any] | None = None, missing: str | None = None
    ) -> st.SearchStrategy[dict[str, Any]]:
        required = {k: f.good for k, f in self.required.items() if k != missing}
        optional = {k: f.good for k, f in self.optional.items() if k != bad}
        if bad is not None and value is not None:
            required[bad] = value
        return st.fixed_dictionaries(required, optional=optional)

    def good(self) -> st.SearchStrategy[dict[str, Any]]:
        """Valid objects; an open object also gets properties the spec does not name."""
        valid = self._dicts()
        if not self.closed:
            extras = st.dictionaries(st.sampled_from(EXTRA_NAMES), JSON, max_size=2)
            valid = st.builds(lambda extra, obj: {**extra, **obj}, extras, valid)
        return valid

    def bad_kinds(self) -> Kinds:
        """Every near-miss: each kind of bad value of each property, each required property missing,
        an extra property (when closed), no object at all."""
        fields = {**self.required, **self.optional}
        out: Kinds = [
            (f"{k}: {label}", self._dicts(bad=k, value=bad))
            for k, f in fields.items()
            for label, bad in f.bad
        ]
        out += [(f"{k}: missing", self._dicts(missing=k)) for k in self.required]
        if self.closed:
            extras = st.dictionaries(st.sampled_from(EXTRA_NAMES), JSON, min_size=1, max_size=2)
            out.append(
                ("extra property", st.builds(lambda obj, extra: {**obj, **extra}, self._dicts(), extras))
            )
        out.append(("not an object", NON_OBJECTS))
        return out

    def as_field(self) -> Field:
        """This object as the property of another."""
        return Field(self.good(), self.bad_kinds())


REFILL = Obj(
    required={
        "interval": Field(
            st.sampled_from(["daily", "monthly"]),
            [
                (
                    "not in the enum",
                    st.sampled_from(["weekly", "yearly", "Daily", "MONTHLY", "daily ", "", "day"]),
                ),
                ("not a string", NON_STRINGS),
            ],
        ),
        "amount": Field(good_int(*AMOUNT), bad_int(*AMOUNT)),
    },
    optional={"refillDay": Field(good_int(*REFILL_DAY), bad_int(*REFILL_DAY))},
)
#: ``remaining: null`` passes the schema ("unlimited"), with or without a refill; the server answers it
#: with a 500 (``rules.server_violations``, checked in ``test_server_rules_on_keys_the_spec_accepts``).
CREDITS_OBJ = Obj(
    required={"remaining": Field(st.one_of(st.none(), good_int(*CREDITS)), bad_int(*CREDITS, nullable=True))},
    optional={"refill": REFILL.as_field()},
)
#: Schema-valid credits with a null remaining count, half of them with a refill.
NULL_REMAINING_CREDITS = st.fixed_dictionaries({"remaining": st.none()}, optional={"refill": REFILL.good()})
#: ``RatelimitRequest`` has no ``additionalProperties: false``: extra properties are allowed.
RATELIMIT = Obj(
    required={
        "name": Field(good_str(*RATELIMIT_NAME_LEN), bad_str(*RATELIMIT_NAME_LEN)),
        "limit": Field(good_int(LIMIT_MIN, None), bad_int(LIMIT_MIN, None)),
        "duration": Field(good_int(DURATION_MIN, None), bad_int(DURATION_MIN, None)),
        "autoApply": Field(GOOD_BOOL, BAD_BOOL),
    },
    closed=False,
)


def _role(i: int) -> str:
    return f"role_{i}"


def _permission(i: int) -> str:
    return f"perm.{i}"


def _ratelimit(i: int) -> dict[str, Any]:
    return {"name": f"rl_{i}", "limit": 1, "duration": DURATION_MIN, "autoApply": False}


GOOD_ROLE = good_str(*ROLE_LEN)
GOOD_RATELIMIT = RATELIMIT.good()
KEY = Obj(
    required={"hash": Field(good_str(HASH_MIN, None), bad_str(HASH_MIN, None))},
    optional={
        "name": Field(good_str(*NAME_LEN), bad_str(*NAME_LEN)),
        "externalId": Field(good_str(*EXTERNAL_ID_LEN), bad_str(*EXTERNAL_ID_LEN)),
        "meta": Field(GOOD_META, BAD_META),
        "roles": Field(
            good_list(GOOD_ROLE, ROLES_MAX, _role), bad_list(GOOD_ROLE, bad_str(*ROLE_LEN), ROLES_MAX, _role)
        ),
        "permissions": Field(
            good_list(GOOD_PERMISSION, PERMISSIONS_MAX, _permission),
            bad_list(GOOD_PERMISSION, BAD_PERMISSION, PERMISSIONS_MAX, _permission),
        ),
        "expires": Field(good_int(*EXPIRES), bad_int(*EXPIRES)),
        "enabled": Field(GOOD_BOOL, BAD_BOOL),
        "credits": CREDITS_OBJ.as_field(),
        "ratelimits": Field(
            good_list(GOOD_RATELIMIT, RATELIMITS_MAX, _ratelimit),
            bad_list(GOOD_RATELIMIT, RATELIMIT.bad_kinds(), RATELIMITS_MAX, _ratelimit),
        ),
    },
)
GOOD_KEY = KEY.good()
BAD_KEYS = KEY.bad_kinds()
BODY = Obj(
    required={
        "migrationId": Field(good_str(*ID_LEN), bad_str(*ID_LEN)),
        "apiId": Field(good_str(*ID_LEN), bad_str(*ID_LEN)),
        "keys": Field(
            st.lists(GOOD_KEY, min_size=1, max_size=2),
            [
                ("empty", st.just([])),
                ("not an array", NON_ARRAYS),
                *(
                    (
                        f"[i].{label}",
                        st.builds(_insert, st.lists(GOOD_KEY, max_size=1), bad, st.integers(0, 1)),
                    )
                    for label, bad in BAD_KEYS
                ),
            ],
        ),
    },
)
BAD_BODIES = [*BODY.bad_kinds(), ("a valid body in an array", st.builds(lambda b: [b], BODY.good()))]


def either(good: st.SearchStrategy[Any], bad: Kinds) -> st.SearchStrategy[tuple[bool, Any]]:
    """``(True, a good value)`` or ``(False, a near-miss)``, half and half, the kind of near-miss
    picked evenly (``st.one_of`` would flatten nested ``one_of``s and favour the richest objects)."""
    near_miss = st.sampled_from([s for _, s in bad]).flatmap(lambda strategy: strategy)
    return st.booleans().flatmap(lambda ok: (good if ok else near_miss).map(lambda v: (ok, v)))


#: Keys, valid or with one near-miss somewhere inside.
KEYS = either(GOOD_KEY, BAD_KEYS)
#: Bodies, valid or with one near-miss somewhere inside.
BODIES = either(BODY.good(), BAD_BODIES)


# --- the comparison ---------------------------------------------------------------------------------
def _location(prefix: str, path: Iterable[str | int]) -> str:
    """jsonschema's instance path in the server's notation: ``body.keys[0].credits``."""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _under(location: str, parent: str) -> bool:
    return location == parent or location.startswith((f"{parent}.", f"{parent}["))


def assert_agrees(schema_name: str, instance: Any, violations: list[rules.Violation], prefix: str) -> bool:
    """Fail unless ``violations`` (from ``rules``) say what the spec says of ``instance``.

    :return: whether the spec accepts ``instance``.
    """
    errors = list(spec.validator_for(schema_name).iter_errors(instance))
    valid = not errors
    locations = {v.location for v in violations}
    assert (not violations) == valid, (
        f"rules says {'valid' if not violations else 'invalid'}, the spec says {'valid' if valid else 'invalid'}\n"
        f"rules: {[(v.location, v.message) for v in violations]}\nspec: {[e.message for e in errors][:10]}"
    )
    assert all(loc.startswith(prefix) for loc in locations), locations
    assert all(v.status == 400 for v in violations)
    # Same places: every rules location lies at or under a place the spec complains about (a missing
    # or extra property is reported at its own name, the spec reports its parent), and every place
    # the spec complains about holds a rules location.
    spec_locations = {_location(prefix, e.absolute_path) for e in errors}
    for loc in locations:
        assert any(_under(loc, s) for s in spec_locations), (loc, spec_locations)
    for s in spec_locations:
        assert any(_under(loc, s) for loc in locations), (s, locations)
    return valid


def _check_share(counts: Counter[bool], examples: int) -> None:
    total = counts[True] + counts[False]
    assert total >= examples * 0.9, counts
    # Meaningful both ways: many valid (rules must not over-reject), many invalid (nor let through).
    assert counts[True] >= total * 0.3, counts
    assert counts[False] >= total * 0.3, counts


def test_keys_agree_with_the_spec() -> None:
    """``key_schema_violations`` accepts a key object exactly when ``V2KeysMigrateKeyData`` does."""
    examples, counts = 700, Counter[bool]()

    @settings(SETTINGS, max_examples=examples)
    @given(case=KEYS)
    def check(case: tuple[bool, Any]) -> None:
        meant_valid, key = case
        loc = "body.keys[7]"
        valid = assert_agrees(KEY_SCHEMA, key, rules.key_schema_violations(key, loc), loc)
        assert valid == meant_valid, f"the generator meant {'valid' if meant_valid else 'invalid'}: {key!r}"
        event("valid" if valid else "invalid")
        counts[valid] += 1

    check()
    _check_share(counts, examples)


def test_bodies_agree_with_the_spec() -> None:
    """``schema_violations`` accepts a body exactly when ``V2KeysMigrateKeysRequestBody`` does."""
    examples, counts = 1000, Counter[bool]()

    @settings(SETTINGS, max_examples=examples)
    @given(case=BODIES)
    def check(case: tuple[bool, Any]) -> None:
        meant_valid, body = case
        valid = assert_agrees(BODY_SCHEMA, body, rules.schema_violations(body), "body")
        assert valid == meant_valid, f"the generator meant {'valid' if meant_valid else 'invalid'}: {body!r}"
        event("valid" if valid else "invalid")
        counts[valid] += 1

    check()
    _check_share(counts, examples)


@pytest.mark.parametrize("strategy", [s for _, s in BAD_BODIES], ids=[label for label, _ in BAD_BODIES])
@settings(SETTINGS, max_examples=8)
@given(data=st.data())
def test_each_near_miss_is_rejected_by_both(strategy: st.SearchStrategy[Any], data: st.DataObject) -> None:
    """Every kind of near-miss, a few of each, however rarely the mixed tests would pick it."""
    body = data.draw(strategy)
    assert not assert_agrees(BODY_SCHEMA, body, rules.schema_violations(body), "body")


def _with_credits(key: dict[str, Any], credits: dict[str, Any] | None) -> dict[str, Any]:
    return key if credits is None else {**key, "credits": credits}


#: Schema-valid keys, many with credits and many of those with a null remaining count.
SERVER_KEYS = st.builds(
    _with_credits, GOOD_KEY, st.one_of(st.none(), CREDITS_OBJ.good(), NULL_REMAINING_CREDITS)
)


def test_server_rules_on_keys_the_spec_accepts() -> None:
    """Beyond the schema, on keys it accepts: the fast server check never passes a key the full checks
    refuse, and ``"remaining": null`` is exactly one 500 at ``credits.remaining``, with or without a
    refill (the handler panics on it), whatever else the key holds."""
    examples, seen = 600, Counter[str]()
    loc = "body.keys[7]"

    @settings(SETTINGS, max_examples=examples)
    @given(key=SERVER_KEYS)
    def check(key: dict[str, Any]) -> None:
        assert rules.key_schema_violations(key, loc) == []
        with mock.patch.object(rules.check, "_fast_server_ok", return_value=False):
            full = rules.key_server_violations(key, loc)
        assert rules.key_server_violations(key, loc) == full
        credits = key.get("credits")
        at_remaining = [v for v in full if v.location == f"{loc}.credits.remaining"]
        if credits is not None and credits["remaining"] is None:
            refill = "refill" in credits
            kind = "null remaining with a refill" if refill else "null remaining alone"
            assert [(v.status, "refill" in v.message) for v in at_remaining] == [(500, refill)], full
        else:
            kind = "credits with a count" if credits is not None else "no credits"
            assert all(v.status == 400 for v in at_remaining), full  # int64 and fractions only
        event(kind)
        seen[kind] += 1

    check()
    for kind in (
        "null remaining with a refill",
        "null remaining alone",
        "credits with a count",
        "no credits",
    ):
        assert seen[kind] >= examples * 0.05, seen


# --- explicit edge cases ------------------------------------------------------------------------------
_GONE = object()


def _set(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``obj`` with ``changes``; a change to ``_GONE`` removes the property."""
    out = {**obj, **changes}
    return {k: v for k, v in out.items() if v is not _GONE}


def _body(**key: Any) -> dict[str, Any]:
    """A body of one key: ``{"hash": "abc"}`` with ``key``'s changes."""
    return {"migrationId": "mig", "apiId": "api_123", "keys": [_set({"hash": "abc"}, **key)]}


def _credits(**refill: Any) -> dict[str, Any]:
    return {"remaining": 10, "refill": _set({"interval": "daily", "amount": 5}, **refill)}


def _rl(**changes: Any) -> dict[str, Any]:
    return _set({"name": "requests", "limit": 10, "duration": 60_000, "autoApply": True}, **changes)


def _lengths(name: str, make: Callable[[Any], Any], lo: int, hi: int | None) -> list[tuple[str, Any, bool]]:
    """A string property at each edge of its length, in ASCII and in wider characters."""
    cases = [
        (f"{name} len {lo - 1}", make("a" * (lo - 1)), False),
        (f"{name} len {lo}", make("a" * lo), True),
    ]
    cases += [(f"{name} {lo} astral chars", make("😀" * lo), True)]
    if lo > 1:
        cases.append((f"{name} {lo - 1} astral chars", make("😀" * (lo - 1)), False))
    if hi is not None:
        cases += [
            (f"{name} len {hi}", make("a" * hi), True),
            (f"{name} len {hi + 1}", make("a" * hi + "b"), False),
            (f"{name} {hi} astral chars", make("😀" * hi), True),
            (f"{name} {hi} 'é' + 'e' + combining", make("é" * (hi - 1) + "\u0301"), True),
            (f"{name} {hi + 1} CJK chars", make("中" * (hi + 1)), False),
        ]
    cases += [(f"{name} null", make(None), False), (f"{name} number", make(123), False)]
    return cases


def _ints(name: str, make: Callable[[Any], Any], lo: int, hi: int | None) -> list[tuple[str, Any, bool]]:
    """An integer property at each edge, as integral and fractional floats, booleans and strings."""
    cases = [
        (f"{name} {lo - 1}", make(lo - 1), False),
        (f"{name} {lo}", make(lo), True),
        (f"{name} {lo}.0", make(float(lo)), True),
        (f"{name} {lo}.5", make(lo + 0.5), False),
        (f"{name} true", make(True), False),
        (f"{name} false", make(False), False),
        (f"{name} string", make(str(lo)), False),
        (f"{name} list", make([lo]), False),
    ]
    if hi is None:
        cases += [(f"{name} 2**63", make(2**63), True), (f"{name} 2**80", make(2**80), True)]
    else:
        cases += [(f"{name} {hi}", make(hi), True), (f"{name} {hi + 1}", make(hi + 1), False)]
    return cases


_FULL_KEY = {
    "hash": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
    "name": "Customer key",
    "externalId": "user_123",
    "meta": {"plan": "pro", "n": 1, "nested": {"a": [1, None, True]}},
    "roles": ["admin", "admin"],
    "permissions": ["documents.read", "api.*.create_key", "a-b_c:d.e*"],
    "expires": 4_102_444_800_000,
    "enabled": False,
    # Schema-valid; the server answers 500 to a null remaining (rules.server_violations).
    "credits": {"remaining": None, "refill": {"interval": "monthly", "amount": 1, "refillDay": 31}},
    "ratelimits": [_rl(), _rl(name="tokens", autoApply=False, extra={"any": "thing"})],
}

EDGE_CASES: list[tuple[str, Any, bool]] = [
    ("minimal", _body(), True),
    ("every field", {**_body(), "keys": [_FULL_KEY, {"hash": "other"}]}, True),
    # the body
    ("body null", None, False),
    ("body array of a body", [_body()], False),
    ("body string", '{"migrationId": "mig"}', False),
    ("body number", 0, False),
    ("body empty", {}, False),
    ("body prefix", _set(_body(), prefix="sk_live"), False),
    ("body extra", _set(_body(), workspaceId="ws_123"), False),
    ("migrationId missing", _set(_body(), migrationId=_GONE), False),
    ("apiId missing", _set(_body(), apiId=_GONE), False),
    ("keys missing", _set(_body(), keys=_GONE), False),
    ("keys empty", _set(_body(), keys=[]), False),
    ("keys object", _set(_body(), keys={"hash": "abc"}), False),
    ("keys [null]", _set(_body(), keys=[None]), False),
    ("keys [[]]", _set(_body(), keys=[[]]), False),
    ("keys good then bad", _set(_body(), keys=[{"hash": "abc"}, {"hash": "ab"}]), False),
    *_lengths("migrationId", lambda v: _set(_body(), migrationId=v), *ID_LEN),
    *_lengths("apiId", lambda v: _set(_body(), apiId=v), *ID_LEN),
    # a key
    ("key string", _set(_body(), keys=["abc"]), False),
    ("key without hash", _body(hash=_GONE, name="x"), False),
    ("key empty", _body(hash=_GONE), False),
    ("key prefix", _body(prefix="sk_"), False),
    ("key keyId", _body(keyId="key_123"), False),
    ("key Hash", _body(Hash="abc"), False),
    *_lengths("hash", lambda v: _body(hash=v), HASH_MIN, None),
    ("hash 257 chars (schema has no max)", _body(hash="h" * 257), True),
    ("hash 10000 chars", _body(hash="h" * 10_000), True),
    ("hash with newline", _body(hash="abc\n"), True),
    *_lengths("name", lambda v: _body(name=v), *NAME_LEN),
    *_lengths("externalId", lambda v: _body(externalId=v), *EXTERNAL_ID_LEN),
    ("meta empty", _body(meta={}), True),
    ("meta 100 properties", _body(meta={f"k{i}": i for i in range(100)}), True),
    ("meta 101 properties", _body(meta={f"k{i}": i for i in range(101)}), False),
    ("meta any values", _body(meta={"": None, "a": [1, {"b": 1.5}], "c": "😀"}), True),
    ("meta array", _body(meta=[]), False),
    ("meta string", _body(meta="{}"), False),
    ("meta null", _body(meta=None), False),
    ("roles empty", _body(roles=[]), True),
    ("roles 100", _body(roles=[f"r{i}" for i in range(100)]), True),
    ("roles 101", _body(roles=[f"r{i}" for i in range(101)]), False),
    ("roles duplicate (schema allows)", _body(roles=["a", "a"]), True),
    ("roles string", _body(roles="admin"), False),
    ("roles null", _body(roles=None), False),
    ("role with space and newline", _body(roles=["a b\n"]), True),
    *_lengths("role", lambda v: _body(roles=["ok", v]), *ROLE_LEN),
    ("permissions empty", _body(permissions=[]), True),
    ("permissions 1000", _body(permissions=[f"p.{i}" for i in range(1000)]), True),
    ("permissions 1001", _body(permissions=[f"p.{i}" for i in range(1001)]), False),
    ("permissions string", _body(permissions="a.b"), False),
    ("permission every allowed char", _body(permissions=["azAZ09_:-.*"]), True),
    *((f"permission {c!r}", _body(permissions=[c]), True) for c in "_:-.*"),
    *((f"permission a{c!r}b", _body(permissions=[f"a{c}b"]), False) for c in PERMISSION_BREAKERS),
    ("permission trailing newline", _body(permissions=["docs.read\n"]), False),
    ("permission trailing CRLF", _body(permissions=["docs.read\r\n"]), False),
    ("permission leading newline", _body(permissions=["\ndocs.read"]), False),
    ("permission only newline", _body(permissions=["\n"]), False),
    ("permission trailing space", _body(permissions=["docs.read "]), False),
    ("permission unicode letter", _body(permissions=["dócs"]), False),
    ("permission unicode digit", _body(permissions=["٣"]), False),
    ("permission 128 chars", _body(permissions=["p" * 128]), True),
    ("permission 129 chars", _body(permissions=["p" * 129]), False),
    ("permission empty", _body(permissions=[""]), False),
    ("permission number", _body(permissions=[1]), False),
    *_ints("expires", lambda v: _body(expires=v), *EXPIRES),
    ("expires float max", _body(expires=4_102_444_800_000.0), True),
    ("expires float max + 1", _body(expires=4_102_444_800_001.0), False),
    ("expires null", _body(expires=None), False),
    ("enabled true", _body(enabled=True), True),
    ("enabled 1", _body(enabled=1), False),
    ("enabled 0", _body(enabled=0), False),
    ("enabled string", _body(enabled="true"), False),
    ("enabled null", _body(enabled=None), False),
    # credits and refill
    ("credits empty", _body(credits={}), False),
    ("credits null", _body(credits=None), False),
    ("credits array", _body(credits=[]), False),
    ("credits remaining null (schema allows; the server 500s)", _body(credits={"remaining": None}), True),
    (
        "credits remaining null with a refill (schema allows; the server 500s)",
        _body(credits={"remaining": None, "refill": {"interval": "daily", "amount": 5}}),
        True,
    ),
    ("credits extra", _body(credits={"remaining": 1, "refillDay": 1}), False),
    ("credits prefix", _body(credits={"remaining": 1, "prefix": "x"}), False),
    *_ints("remaining", lambda v: _body(credits={"remaining": v}), *CREDITS),
    ("remaining 2**63 - 1", _body(credits={"remaining": 2**63 - 1}), True),
    ("remaining 2**63 (schema allows)", _body(credits={"remaining": 2**63}), True),
    ("remaining float 2**63", _body(credits={"remaining": float(2**63)}), True),
    ("remaining 1e19", _body(credits={"remaining": 1e19}), False),
    ("remaining 10**30", _body(credits={"remaining": 10**30}), False),
    ("refill daily without refillDay", _body(credits=_credits()), True),
    ("refill monthly without refillDay (schema allows)", _body(credits=_credits(interval="monthly")), True),
    ("refill null", _body(credits={"remaining": 1, "refill": None}), False),
    ("refill empty", _body(credits={"remaining": 1, "refill": {}}), False),
    ("refill without interval", _body(credits=_credits(interval=_GONE)), False),
    ("refill without amount", _body(credits=_credits(amount=_GONE)), False),
    ("refill extra", _body(credits=_credits(remaining=1)), False),
    *(
        (f"refill interval {v!r}", _body(credits=_credits(interval=v)), False)
        for v in ["weekly", "Daily", "MONTHLY", "daily ", "", None, 1]
    ),
    *_ints("amount", lambda v: _body(credits=_credits(amount=v)), *AMOUNT),
    ("amount null", _body(credits=_credits(amount=None)), False),
    *_ints("refillDay", lambda v: _body(credits=_credits(interval="monthly", refillDay=v)), *REFILL_DAY),
    ("refillDay null", _body(credits=_credits(refillDay=None)), False),
    # ratelimits
    ("ratelimits empty", _body(ratelimits=[]), True),
    ("ratelimits 50", _body(ratelimits=[_rl(name=f"rl{i}") for i in range(50)]), True),
    ("ratelimits 51", _body(ratelimits=[_rl(name=f"rl{i}") for i in range(51)]), False),
    ("ratelimits object", _body(ratelimits=_rl()), False),
    ("ratelimit null", _body(ratelimits=[None]), False),
    ("ratelimit array", _body(ratelimits=[[]]), False),
    ("ratelimit empty", _body(ratelimits=[{}]), False),
    *((f"ratelimit without {f}", _body(ratelimits=[_rl(**{f: _GONE})]), False) for f in RATELIMIT.required),
    ("ratelimit extra (open schema)", _body(ratelimits=[_rl(foo=1, prefix="x")]), True),
    *_lengths("ratelimit name", lambda v: _body(ratelimits=[_rl(name=v)]), *RATELIMIT_NAME_LEN),
    *_ints("ratelimit limit", lambda v: _body(ratelimits=[_rl(limit=v)]), LIMIT_MIN, None),
    *_ints("ratelimit duration", lambda v: _body(ratelimits=[_rl(duration=v)]), DURATION_MIN, None),
    ("ratelimit duration 999.5", _body(ratelimits=[_rl(duration=999.5)]), False),
    ("ratelimit autoApply false", _body(ratelimits=[_rl(autoApply=False)]), True),
    ("ratelimit autoApply 0", _body(ratelimits=[_rl(autoApply=0)]), False),
    ("ratelimit autoApply string", _body(ratelimits=[_rl(autoApply="false")]), False),
    ("ratelimit autoApply null", _body(ratelimits=[_rl(autoApply=None)]), False),
]


@pytest.mark.parametrize(("body", "valid"), [pytest.param(b, v, id=name) for name, b, v in EDGE_CASES])
def test_edge_cases(body: Any, valid: bool) -> None:
    """Each edge case: the spec helper reads the spec as written here, and rules agrees with it."""
    assert (not spec.schema_errors(BODY_SCHEMA, body)) == valid, spec.schema_errors(BODY_SCHEMA, body)
    assert assert_agrees(BODY_SCHEMA, body, rules.schema_violations(body), "body") == valid


def test_edge_case_names_are_unique() -> None:
    """Parametrize ids stay readable and no case shadows another."""
    names = [name for name, _, _ in EDGE_CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_boundaries_are_the_specs() -> None:
    """The edges the generators aim at are the spec's, and they know every property the spec names."""
    schemas = spec.load_spec()["components"]["schemas"]
    body = schemas[BODY_SCHEMA]
    key = schemas[KEY_SCHEMA]
    credits = schemas["KeyCreditsData"]
    refill = schemas["KeyCreditsRefill"]
    ratelimit = schemas["RatelimitRequest"]

    def length(prop: dict[str, Any]) -> tuple[int, int | None]:
        return prop["minLength"], prop.get("maxLength")

    def bounds(prop: dict[str, Any]) -> tuple[int, int | None]:
        return prop["minimum"], prop.get("maximum")

    props = key["properties"]
    assert length(body["properties"]["migrationId"]) == length(body["properties"]["apiId"]) == ID_LEN
    assert body["properties"]["keys"]["minItems"] == 1 and "maxItems" not in body["properties"]["keys"]
    assert length(props["hash"]) == (HASH_MIN, None)
    assert length(props["name"]) == NAME_LEN and length(props["externalId"]) == EXTERNAL_ID_LEN
    assert props["meta"]["maxProperties"] == META_MAX
    assert props["roles"]["maxItems"] == ROLES_MAX and length(props["roles"]["items"]) == ROLE_LEN
    assert props["permissions"]["maxItems"] == PERMISSIONS_MAX
    assert length(props["permissions"]["items"]) == PERMISSION_LEN
    assert props["permissions"]["items"]["pattern"] == r"^[a-zA-Z0-9_:\-\.\*]+$"
    assert bounds(props["expires"]) == EXPIRES
    assert props["ratelimits"]["maxItems"] == RATELIMITS_MAX
    assert bounds(credits["properties"]["remaining"]) == CREDITS
    assert bounds(refill["properties"]["amount"]) == AMOUNT
    assert bounds(refill["properties"]["refillDay"]) == REFILL_DAY
    assert refill["properties"]["interval"]["enum"] == ["daily", "monthly"]
    assert length(ratelimit["properties"]["name"]) == RATELIMIT_NAME_LEN
    assert bounds(ratelimit["properties"]["limit"]) == (LIMIT_MIN, None)
    assert bounds(ratelimit["properties"]["duration"]) == (DURATION_MIN, None)
    for obj, schema in [
        (BODY, body),
        (KEY, key),
        (CREDITS_OBJ, credits),
        (REFILL, refill),
        (RATELIMIT, ratelimit),
    ]:
        assert {*obj.required, *obj.optional} == set(schema["properties"])
        assert set(obj.required) == set(schema.get("required", ()))
        assert obj.closed == (schema.get("additionalProperties") is False)
