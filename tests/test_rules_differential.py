"""Differential test: :func:`rules.schema_violations` against Unkey's published schema.

``rules.py`` is written by hand from the spec. Here hypothesis generates key objects and whole
``keys.migrateKeys`` bodies on both sides of every boundary the spec draws, and each one must be
accepted by ``rules`` exactly when the spec (``tests/spec.py``: jsonschema Draft 2020-12 with ECMA-262
``$``) accepts it. The generated objects are either valid or carry one near-miss, at any depth: an
invalid key has exactly one bad field, an invalid ``credits`` inside it exactly one bad subfield, and
so on, so a rule ``rules.py`` gets wrong is not hidden behind another error.

The boundaries below are copied from the spec (``test_boundaries_are_the_specs`` checks them); the
verdict always comes from the spec itself.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
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
PERMISSION_BREAKERS = ["\n", "\r\n", " ", "\t", "é", "😀", "/", "$", "^", "\\", "+", ",", "@", "#", "(", "\x00"]
#: Names that are not fields of the object they are added to (``prefix`` is the v1 field v2 dropped).
EXTRA_NAMES = ["prefix", "Hash", "hash ", "keyId", "keyAuthId", "ownerId", "", "é", "refillday", "Remaining"]

SETTINGS = settings(max_examples=1200, derandomize=True, database=None, deadline=None)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=4,
)
NON_STRINGS = st.sampled_from([None, True, False, 0, 3, 3.0, 1.5, -1, [], ["abc"], {}, {"a": "abc"}])
NON_INTEGERS = st.sampled_from([None, True, False, 1.5, 0.5, "1", "1000", "", [], [1], {}, {"a": 1}])
NON_BOOLEANS = st.sampled_from([None, 0, 1, 1.0, "true", "false", "", [], {}, [True]])
NON_OBJECTS = st.sampled_from([None, True, 0, 1.5, "", "{}", [], [{}], [{"hash": "abc"}]])
NON_ARRAYS = st.sampled_from([None, True, 0, 1.5, "", "abc", "[]", {}, {"0": "abc"}])


# --- leaves -----------------------------------------------------------------------------------------
def _fill(head: str, char: str, length: int) -> str:
    """``head`` padded with ``char`` and cut, to exactly ``length`` code points."""
    return (head + char * length)[:length]


def _sized(lengths: st.SearchStrategy[int], chars: Iterable[str] = CHARS) -> st.SearchStrategy[str]:
    alphabet = list(chars)
    return st.builds(_fill, st.text(st.sampled_from(alphabet), max_size=4), st.sampled_from(alphabet), lengths)


def good_str(lo: int, hi: int | None) -> st.SearchStrategy[str]:
    """Strings of a length the spec allows, often at its edges."""
    top = hi if hi is not None else lo + 300
    edges = [lo, lo + 1, top - 1, top]
    return _sized(st.one_of(st.sampled_from(edges), st.integers(lo, top)))


def bad_str(lo: int, hi: int | None) -> st.SearchStrategy[Any]:
    """One character too short or too long, or not a string at all."""
    lengths = list(range(max(lo - 2, 0), lo)) + ([hi + 1, hi + 2] if hi is not None else [])
    return st.one_of(_sized(st.sampled_from(lengths)), NON_STRINGS)


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


def bad_int(lo: int, hi: int | None) -> st.SearchStrategy[Any]:
    """One off either edge, fractions, booleans, strings and other non-integers."""
    edges: list[Any] = [lo - 1, float(lo - 1), lo - 1000, lo + 0.5, -(2**63)]
    if hi is not None:
        edges += [hi + 1, hi + 1000, 2**64, float(2**70)]
        if float(hi + 1) > hi:
            edges.append(float(hi + 1))
    return st.one_of(st.sampled_from(edges), NON_INTEGERS)


GOOD_BOOL: st.SearchStrategy[Any] = st.booleans()
BAD_BOOL: st.SearchStrategy[Any] = NON_BOOLEANS

GOOD_PERMISSION = st.one_of(
    st.text(st.sampled_from(PERMISSION_CHARS), min_size=1, max_size=12),
    st.sampled_from(["_:-.*", "*", "api.*.create_key", "a-b.c:d*e_F9"]),
    _sized(st.sampled_from([1, 2, 127, 128]), PERMISSION_CHARS),
)
BAD_PERMISSION = st.one_of(
    st.builds(lambda ok, bad, at: ok[:at] + bad + ok[at:], GOOD_PERMISSION, st.sampled_from(PERMISSION_BREAKERS),
              st.integers(0, 12)),
    st.builds(lambda ok, bad: ok + bad, GOOD_PERMISSION, st.sampled_from(PERMISSION_BREAKERS)),
    _sized(st.sampled_from([0, 129, 130]), PERMISSION_CHARS),
    NON_STRINGS,
)


# --- lists and maps with a size limit -----------------------------------------------------------------
def _pad_list(items: list[Any], total: int | None, filler: Callable[[int], Any]) -> list[Any]:
    """``items`` padded with ``filler(i)`` up to ``total`` items (``None``: left as they are)."""
    if total is None:
        return items
    return items + [filler(i) for i in range(total - len(items))]


def _insert(items: list[Any], bad: Any, at: int) -> list[Any]:
    return [*items[:at], bad, *items[at:]]


def good_list(item: st.SearchStrategy[Any], max_items: int, filler: Callable[[int], Any]) -> st.SearchStrategy[Any]:
    """Lists of good items, some exactly at the limit and one below it."""
    totals = st.sampled_from([None, None, 0, max_items - 1, max_items])
    return st.builds(_pad_list, st.lists(item, max_size=3), totals, st.just(filler))


def bad_list(
    item: st.SearchStrategy[Any], bad_item: st.SearchStrategy[Any], max_items: int, filler: Callable[[int], Any]
) -> st.SearchStrategy[Any]:
    """One item over the limit, one bad item among good ones, or not an array."""
    return st.one_of(
        st.builds(_pad_list, st.lists(item, max_size=3), st.sampled_from([max_items + 1, max_items + 2]),
                  st.just(filler)),
        st.builds(_insert, st.lists(item, max_size=3), bad_item, st.integers(0, 3)),
        NON_ARRAYS,
    )


def _pad_meta(meta: dict[str, Any], total: int | None) -> dict[str, Any]:
    """``meta`` with filler properties added up to ``total`` properties."""
    out = dict(meta)
    i = 0
    while total is not None and len(out) < total:
        out.setdefault(f"k{i}", i)
        i += 1
    return out


GOOD_META = st.builds(
    _pad_meta, st.dictionaries(st.text(max_size=4), JSON, max_size=3), st.sampled_from([None, 0, 99, META_MAX])
)
BAD_META = st.one_of(
    st.builds(_pad_meta, st.dictionaries(st.text(max_size=4), JSON, max_size=3),
              st.sampled_from([META_MAX + 1, META_MAX + 2])),
    NON_OBJECTS,
)


# --- objects: valid, or with exactly one near-miss ---------------------------------------------------
@dataclass(frozen=True)
class Field:
    """A property's good values and its near-misses."""

    good: st.SearchStrategy[Any]
    bad: st.SearchStrategy[Any]


@dataclass(frozen=True)
class Obj:
    """An object schema: required and optional properties, closed (``additionalProperties: false``) or not."""

    required: dict[str, Field]
    optional: dict[str, Field] = field(default_factory=dict)
    closed: bool = True

    def _dicts(self, bad: str | None = None, missing: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
        required = {k: (f.bad if k == bad else f.good) for k, f in self.required.items() if k != missing}
        optional = {k: f.good for k, f in self.optional.items() if k != bad}
        if bad in self.optional:
            required[bad] = self.optional[bad].bad
        return st.fixed_dictionaries(required, optional=optional)

    def good(self) -> st.SearchStrategy[dict[str, Any]]:
        """Valid objects; an open object also gets properties the spec does not name."""
        valid = self._dicts()
        if not self.closed:
            extras = st.dictionaries(st.sampled_from(EXTRA_NAMES), JSON, max_size=2)
            valid = st.builds(lambda extra, obj: {**extra, **obj}, extras, valid)
        return valid

    def bad(self) -> st.SearchStrategy[Any]:
        """Objects with one bad property, one required property missing, one extra property, or no object."""
        fields = [*self.required, *self.optional]
        options: list[st.SearchStrategy[Any]] = [self._dicts(bad=k) for k in fields]
        options += [self._dicts(missing=k) for k in self.required]
        if self.closed:
            extras = st.dictionaries(st.sampled_from(EXTRA_NAMES), JSON, min_size=1, max_size=2)
            options.append(st.builds(lambda obj, extra: {**obj, **extra}, self._dicts(), extras))
        options.append(NON_OBJECTS)
        return st.one_of(options)

    def field(self) -> Field:
        """This object as the property of another."""
        return Field(self.good(), self.bad())


REFILL = Obj(
    required={
        "interval": Field(
            st.sampled_from(["daily", "monthly"]),
            st.one_of(st.sampled_from(["weekly", "yearly", "Daily", "MONTHLY", "daily ", "", "day"]), NON_STRINGS),
        ),
        "amount": Field(good_int(*AMOUNT), bad_int(*AMOUNT)),
    },
    optional={"refillDay": Field(good_int(*REFILL_DAY), bad_int(*REFILL_DAY))},
)
CREDITS_OBJ = Obj(
    required={"remaining": Field(st.one_of(st.none(), good_int(*CREDITS)), bad_int(*CREDITS).filter(_not_none))}
    if False
    else {"remaining": Field(st.one_of(st.none(), good_int(*CREDITS)), bad_int(*CREDITS))},
    optional={"refill": REFILL.field()},
)
