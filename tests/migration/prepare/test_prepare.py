"""KeyPreparer: typical Arrow columns to key objects, every bad row rejected by name, nothing lost.

The guarantee under test: a row the preparer lets through is a key the rules (and so the emulator and
the real server) accept, and the column-wise fast path writes exactly what the row-by-row reference
would.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare.preparer import (
    KEY_FIELD_PATHS,
    KeyPreparer,
    MappingError,
    PreparedRows,
    Rejects,
    resolve_mapping,
)

FIRST_ROW = 1000
JAN_2030_MS = 1_893_456_000_000
#: The detail of a row with a refill and no remaining count (Unkey answers 500 to "remaining": null).
NULL_REMAINING_WITH_REFILL = (
    "credits.remaining: is null, but a refill needs an integer remaining count "
    "(a null remaining makes Unkey fail the whole request with a 500)"
)


def b64(i: int | str) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_{i}".encode()).digest()).decode()


def hexh(i: int | str) -> str:
    return hashlib.sha256(f"sk_{i}".encode()).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(raw: bytes) -> Any:
    """Decode as Unkey does: NaN and Infinity are not JSON."""
    return json.loads(raw, parse_constant=_reject_constant)


def batch_of(
    columns: Mapping[str, Any], n: int | None = None, hashes: list[str | None] | None = None
) -> pa.RecordBatch:
    arrays = {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    rows = n if n is not None else (len(next(iter(arrays.values()))) if arrays else 1)
    hash_column = pa.array(hashes if hashes is not None else [b64(i) for i in range(rows)], pa.string())
    return pa.record_batch({"hash": hash_column, **arrays})


def prepare(
    columns: Mapping[str, Any],
    mapping: Mapping[str, str] | None = None,
    hashes: list[str | None] | None = None,
    **options: Any,
) -> tuple[PreparedRows, Rejects, list[dict[str, Any]]]:
    """Prepare one batch and check what must always hold; return the decoded keys too."""
    batch = batch_of(columns, hashes=hashes)
    preparer = KeyPreparer(resolve_mapping(mapping, batch.schema), **options)
    prepared, rejects = preparer.prepare(batch, FIRST_ROW)
    keys = check_invariants(preparer, batch, prepared, rejects)
    return prepared, rejects, keys


def check_invariants(
    preparer: KeyPreparer, batch: pa.RecordBatch, prepared: PreparedRows, rejects: Rejects
) -> list[dict[str, Any]]:
    n = batch.num_rows
    # Nothing lost, nothing twice.
    rows = prepared.rows.tolist() + rejects.rows
    assert sorted(rows) == list(range(FIRST_ROW, FIRST_ROW + n))
    assert len(prepared.hashes) == len(prepared.keys) == len(prepared.rows) == len(prepared.digests)
    assert len(rejects.hashes) == len(rejects.details) == len(rejects)
    source_hashes = batch.column(preparer.mapping["hash"]).to_pylist()
    for row, h in zip(rejects.rows, rejects.hashes, strict=True):
        assert h == source_hashes[row - FIRST_ROW]
    keys = [strict_loads(k) for k in prepared.keys]
    for raw, key, wire in zip(prepared.keys, keys, prepared.hashes, strict=True):
        assert key["hash"] == wire
        # Unkey fails the whole request on "remaining": null; unlimited credits are no credits at all.
        assert b'"remaining":null' not in raw, raw
        assert "credits" not in key or isinstance(key["credits"]["remaining"], int), key
        # The guarantee: what goes out is what the rules (the emulator's) accept.
        assert rules.key_schema_violations(key) == [], key
        assert rules.key_server_violations(key) == [], key
    # The fast path writes what the row-by-row reference writes.
    reference = reference_keys(preparer, batch)
    for row, key in zip(prepared.rows.tolist(), keys, strict=True):
        want = reference[row - FIRST_ROW]
        assert isinstance(want, bytes), (
            f"row {row}: the reference rejects it ({want}) but it went out as {key}"
        )
        assert strict_loads(want) == key
    for row, detail in zip(rejects.rows, rejects.details, strict=True):
        want = reference[row - FIRST_ROW]
        assert not isinstance(want, bytes) or detail.startswith("hash:"), f"row {row} rejected: {detail}"
    return keys


def reference_keys(preparer: KeyPreparer, batch: pa.RecordBatch) -> list[bytes | str | None]:
    """Each row through the row-by-row path alone (None where the hash is bad)."""
    from airflow_provider_unkey.migration.prepare import hashes as hash_module

    raw = batch.column(preparer.mapping["hash"])
    ok = hash_module.format_mask(raw, preparer.hash_format).to_pylist()
    out: list[bytes | str | None] = []
    for i in range(batch.num_rows):
        if not ok[i]:
            out.append(None)
            continue
        digest = hash_module.digests(raw.slice(i, 1), preparer.hash_format)
        wire = hash_module.encode(digest, preparer.wire_format).to_pylist()[0]
        values = {f: batch.column(c)[i].as_py() for f, c, _ in preparer._fields}
        out.append(preparer._one_row(wire, values))
    return out


def one(column: str, values: list[Any] | pa.Array, **options: Any) -> list[dict[str, Any]]:
    """Keys of a batch with one mapped field besides the hash; every row must pass."""
    _, rejects, keys = prepare({column: values}, **options)
    assert len(rejects) == 0, list(zip(rejects.rows, rejects.details, strict=True))
    return keys


def field_of(keys: list[dict[str, Any]], field: str) -> list[Any]:
    return [k.get(field, "<absent>") for k in keys]


# --- resolve_mapping ---------------------------------------------------------------------------------
def test_default_mapping_takes_columns_named_like_fields() -> None:
    schema = pa.schema(
        [
            ("hash", pa.string()),
            ("name", pa.string()),
            ("credits.remaining", pa.int64()),
            ("other", pa.int8()),
        ]
    )
    assert resolve_mapping(None, schema) == {
        "hash": "hash",
        "name": "name",
        "credits.remaining": "credits.remaining",
    }


def test_explicit_mapping() -> None:
    schema = pa.schema([("h", pa.large_string()), ("owner", pa.int64())])
    assert resolve_mapping({"hash": "h", "externalId": "owner"}, schema) == {
        "hash": "h",
        "externalId": "owner",
    }
    dictionary = pa.schema([("h", pa.dictionary(pa.int32(), pa.string()))])
    assert resolve_mapping({"hash": "h"}, dictionary) == {"hash": "h"}


@pytest.mark.parametrize(
    "mapping, schema, message",
    [
        (
            {"hash": "h", "prefix": "p"},
            [("h", pa.string()), ("p", pa.string())],
            r"unknown key fields \['prefix'\]",
        ),
        ({"hash": "h", "name": "nom"}, [("h", pa.string())], r"does not have: \{'name': 'nom'\}"),
        ({"name": "h"}, [("h", pa.string())], "no column for the key's hash"),
        (None, [("digest", pa.string())], "no column for the key's hash"),
        (
            {"hash": "h", "credits.refill.amount": "a"},
            [("h", pa.string()), ("a", pa.int64())],
            r"need 'credits.remaining' mapped",
        ),
        ({"hash": "h"}, [("h", pa.int64())], "or binary digests, not int64"),
        ({"hash": "h"}, [("h", pa.list_(pa.uint8()))], "must hold text .* or binary digests, not list"),
        ({"hash": "h"}, [("h", pa.dictionary(pa.int8(), pa.int64()))], "or binary digests, not dictionary"),
    ],
)
def test_mapping_errors(
    mapping: dict[str, str] | None, schema: list[tuple[str, pa.DataType]], message: str
) -> None:
    with pytest.raises(MappingError, match=message):
        resolve_mapping(mapping, pa.schema(schema))


def test_preparer_options_are_checked() -> None:
    with pytest.raises(ValueError, match="hash_format"):
        KeyPreparer({"hash": "hash"}, hash_format="md5")
    with pytest.raises(ValueError, match="list_delimiter"):
        KeyPreparer({"hash": "hash", "roles": "roles"}, list_delimiter="")
    with pytest.raises(ValueError, match="unknown migration algorithm"):
        KeyPreparer({"hash": "hash"}, algorithm="bcrypt")


# --- the hash -------------------------------------------------------------------------------------------
def test_hash_rejects_name_the_problem_and_the_row() -> None:
    good = b64(1)
    hashes: list[str | None] = [
        good,
        None,
        "",
        hexh(2),
        good[:42] + "B=",  # stray bits: not canonical
        "abc",
        b64(3),
    ]
    prepared, rejects, keys = prepare({}, hashes=hashes)
    assert prepared.rows.tolist() == [FIRST_ROW, FIRST_ROW + 6]
    assert keys == [{"hash": good}, {"hash": b64(3)}]
    details = dict(zip(rejects.rows, rejects.details, strict=True))
    assert details[FIRST_ROW + 1] == details[FIRST_ROW + 2] == "hash: is missing"
    assert "hash: is hex" in details[FIRST_ROW + 3] and "hash_format='sha256_hex'" in details[FIRST_ROW + 3]
    assert "not canonical" in details[FIRST_ROW + 4]
    assert details[FIRST_ROW + 5].startswith("hash: is not a SHA-256 digest in sha256_base64")
    assert rejects.hashes == hashes[1:6]


def test_hex_declared_but_base64_given() -> None:
    _, rejects, _ = prepare({}, hashes=[b64(1)], hash_format="sha256_hex", algorithm="seam")
    assert rejects.details == [
        "hash: is base64, but hash_format is sha256_hex; set hash_format='sha256_base64'"
    ]


@pytest.mark.parametrize(
    "source, hash_format, algorithm, wire",
    [
        ([b64(1), b64(2)], "sha256_base64", "sha256", [b64(1), b64(2)]),
        ([hexh(1), hexh(2).upper()], "sha256_hex", "sha256", [b64(1), b64(2)]),
        ([hexh(1), hexh(2).upper()], "sha256_hex", "seam", [hexh(1), hexh(2)]),
        ([b64(1), b64(2)], "sha256_base64", "github.com/seamapi/prefixed-api-key", [hexh(1), hexh(2)]),
    ],
)
@pytest.mark.parametrize("with_name", [False, True])
def test_wire_hash_follows_the_algorithm(
    source: list[str], hash_format: str, algorithm: str, wire: list[str], with_name: bool
) -> None:
    columns = {"name": ["a", "b"]} if with_name else {}
    prepared, rejects, keys = prepare(
        columns, hashes=list(source), hash_format=hash_format, algorithm=algorithm
    )
    assert len(rejects) == 0
    assert prepared.hashes == wire
    assert [k["hash"] for k in keys] == wire
    assert [bytes(d) for d in prepared.digests] == [
        hashlib.sha256(f"sk_{i}".encode()).digest() for i in (1, 2)
    ]


# --- each field, from typical Arrow types ------------------------------------------------------------------
def test_name_and_external_id_from_text_and_integer_columns() -> None:
    keys = one("name", pa.array(["first", None, "é" * 255, 'say "hi"\n\\'], pa.large_string()))
    assert field_of(keys, "name") == ["first", "<absent>", "é" * 255, 'say "hi"\n\\']
    keys = one("externalId", pa.array(["u1", "u2", "u1", None]).dictionary_encode())
    assert field_of(keys, "externalId") == ["u1", "u2", "u1", "<absent>"]
    keys = one("externalId", pa.array([42, None, 7], pa.int64()))
    assert field_of(keys, "externalId") == ["42", "<absent>", "7"]
    # pandas writes an integer column with nulls as float64 with NaN.
    keys = one("externalId", pa.array([42.0, float("nan"), None]))
    assert field_of(keys, "externalId") == ["42", "<absent>", "<absent>"]


def test_meta_from_json_text_struct_and_map_columns() -> None:
    text = ['{"plan": "pro", "seats": 3}', None, ' {"nested": {"a": [1, 2.5, null]}} ', "{}"]
    keys = one("meta", text)
    assert field_of(keys, "meta") == [
        {"plan": "pro", "seats": 3},
        "<absent>",
        {"nested": {"a": [1, 2.5, None]}},
        {},
    ]
    struct = pa.array(
        [{"plan": "pro", "since": dt.datetime(2020, 1, 2, 3, 4, 5)}, None, {"plan": None, "since": None}],
        pa.struct([("plan", pa.string()), ("since", pa.timestamp("us"))]),
    )
    keys = one("meta", struct)
    assert field_of(keys, "meta") == [
        {"plan": "pro", "since": "2020-01-02T03:04:05"},
        "<absent>",
        {"plan": None, "since": None},
    ]
    mapped = pa.array([[("a", 1), ("b", 2)], None, []], pa.map_(pa.string(), pa.int64()))
    keys = one("meta", mapped)
    assert field_of(keys, "meta") == [{"a": 1, "b": 2}, "<absent>", {}]
    decimals = pa.array([{"price": decimal.Decimal("1.50")}], pa.struct([("price", pa.decimal128(5, 2))]))
    assert field_of(one("meta", decimals), "meta") == [{"price": "1.50"}]


@pytest.mark.parametrize(
    "values, expected",
    [
        (
            pa.array([["admin", "reader"], [], None, ["é"]], pa.list_(pa.string())),
            [["admin", "reader"], [], None, ["é"]],
        ),
        (
            pa.array([["a"], ["b", "c"], None, []], pa.large_list(pa.large_string())),
            [["a"], ["b", "c"], None, []],
        ),
        (
            pa.array([["a", "b"], None, ["c", "d"], ["e", "f"]], pa.list_(pa.string(), 2)),
            [["a", "b"], None, ["c", "d"], ["e", "f"]],
        ),
        (
            pa.array([["x", "y"], ["x"], None, ["y"]], pa.list_(pa.dictionary(pa.int32(), pa.string()))),
            [["x", "y"], ["x"], None, ["y"]],
        ),
        (pa.array(["admin,reader", " a , b ,, ", None, ""]), [["admin", "reader"], ["a", "b"], None, []]),
        (pa.array(['["a", "b,c"]', "[]", None, ' ["x"] ']), [["a", "b,c"], [], None, ["x"]]),
    ],
)
def test_roles_from_list_and_text_columns(values: pa.Array, expected: list[Any]) -> None:
    keys = one("roles", values)
    assert field_of(keys, "roles") == [e if e is not None else "<absent>" for e in expected]


def test_permissions_from_list_and_delimited_text() -> None:
    keys = one("permissions", ["api.*.read|api.*.write", "a:b-c.d_e*", None], list_delimiter="|")
    assert field_of(keys, "permissions") == [["api.*.read", "api.*.write"], ["a:b-c.d_e*"], "<absent>"]
    keys = one("permissions", pa.array([["read", "read"], []], pa.list_(pa.string())))
    # The server upserts permissions: a repeated one is fine (unlike a repeated role).
    assert field_of(keys, "permissions") == [["read", "read"], []]


def test_expires_from_timestamps_dates_and_integers() -> None:
    naive = pa.array(
        [dt.datetime(2030, 1, 1), dt.datetime(2030, 1, 1, 0, 0, 0, 999_999), None], pa.timestamp("us")
    )
    assert field_of(one("expires", naive), "expires") == [JAN_2030_MS, JAN_2030_MS + 999, "<absent>"]
    paris = ZoneInfo("Europe/Paris")
    aware = pa.array([dt.datetime(2030, 1, 1, 1, 0, tzinfo=paris)], pa.timestamp("ms", tz="Europe/Paris"))
    assert field_of(one("expires", aware), "expires") == [JAN_2030_MS]  # 01:00 in Paris is midnight UTC
    nanos = pa.array([JAN_2030_MS * 1_000_000 + 1_999_999], pa.timestamp("ns"))
    assert field_of(one("expires", nanos), "expires") == [JAN_2030_MS + 1]
    seconds = pa.array([JAN_2030_MS // 1000], pa.timestamp("s", tz="UTC"))
    assert field_of(one("expires", seconds), "expires") == [JAN_2030_MS]
    dates = pa.array([dt.date(2030, 1, 1), None], pa.date32())
    assert field_of(one("expires", dates), "expires") == [JAN_2030_MS, "<absent>"]
    assert field_of(
        one("expires", pa.array([JAN_2030_MS, 0, rules.field("expires").maximum])), "expires"
    ) == [
        JAN_2030_MS,
        0,
        rules.field("expires").maximum,
    ]
    floats = pa.array([float(JAN_2030_MS), float("nan")])
    assert field_of(one("expires", floats), "expires") == [JAN_2030_MS, "<absent>"]
    assert field_of(one("expires", [" 123 ", "-0"]), "expires") == [123, 0]


def test_enabled_from_bool_int_float_and_text() -> None:
    assert field_of(one("enabled", [True, False, None]), "enabled") == [True, False, "<absent>"]
    assert field_of(one("enabled", pa.array([1, 0, None], pa.int8())), "enabled") == [True, False, "<absent>"]
    assert field_of(one("enabled", [1.0, 0.0, float("nan")]), "enabled") == [True, False, "<absent>"]
    text = ["true", " FALSE ", "t", "f", "yes", "no", "1", "0", None]
    assert field_of(one("enabled", text), "enabled") == [
        True,
        False,
        True,
        False,
        True,
        False,
        True,
        False,
        "<absent>",
    ]


def test_pandas_frame_with_nullable_integers_and_datetimes() -> None:
    frame = pd.DataFrame(
        {
            "hash": [b64(i) for i in range(3)],
            "credits.remaining": [10, None, 0],  # float64 with NaN
            "expires": pd.to_datetime(
                ["2030-01-01 00:00:00", None, "2030-01-01 00:00:00.001"], format="ISO8601"
            ),  # datetime64[ns]
            "enabled": [True, False, True],
            "externalId": ["a", None, "c"],
        }
    )
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    assert batch.schema.field("credits.remaining").type == pa.float64()
    preparer = KeyPreparer(resolve_mapping(None, batch.schema))
    prepared, rejects = preparer.prepare(batch, FIRST_ROW)
    keys = check_invariants(preparer, batch, prepared, rejects)
    assert keys == [
        {
            "hash": b64(0),
            "externalId": "a",
            "expires": JAN_2030_MS,
            "enabled": True,
            "credits": {"remaining": 10},
        },
        {"hash": b64(1), "enabled": False},
        {
            "hash": b64(2),
            "externalId": "c",
            "expires": JAN_2030_MS + 1,
            "enabled": True,
            "credits": {"remaining": 0},
        },
    ]


def test_credits_remaining_and_refill() -> None:
    columns = {
        "credits.remaining": pa.array([100, None, 5, None, 2**63 - 1], pa.int64()),
        "credits.refill.interval": ["daily", "monthly", None, None, "monthly"],
        "credits.refill.amount": pa.array([10, 50, None, None, 1], pa.int64()),
        "credits.refill.refillDay": pa.array([None, 31, None, None, 1], pa.int64()),
    }
    _, rejects, keys = prepare(columns)
    assert field_of(keys, "credits") == [
        {"remaining": 100, "refill": {"interval": "daily", "amount": 10}},
        {"remaining": 5},
        "<absent>",  # no remaining count and no refill: unlimited, which is no credits at all
        {"remaining": 2**63 - 1, "refill": {"interval": "monthly", "amount": 1, "refillDay": 1}},
    ]
    # A refill without a remaining count: Unkey needs an integer there (null makes it fail the request).
    assert rejects.rows == [FIRST_ROW + 1]
    assert rejects.details == [NULL_REMAINING_WITH_REFILL]


def test_credits_from_decimal_text_and_float_columns() -> None:
    decimals = pa.array([decimal.Decimal("12"), decimal.Decimal("7.00"), None], pa.decimal128(10, 2))
    assert field_of(one("credits.remaining", decimals), "credits") == [
        {"remaining": 12},
        {"remaining": 7},
        "<absent>",
    ]
    assert field_of(one("credits.remaining", ["15", " 0 "]), "credits") == [
        {"remaining": 15},
        {"remaining": 0},
    ]
    assert field_of(one("credits.remaining", [3.0, float("nan")]), "credits") == [
        {"remaining": 3},
        "<absent>",
    ]
    big = pa.array([2**63 - 1], pa.uint64())
    assert field_of(one("credits.remaining", big), "credits") == [{"remaining": 2**63 - 1}]


def test_ratelimits_from_list_of_structs_and_json_text() -> None:
    item = pa.struct(
        [("name", pa.string()), ("limit", pa.int64()), ("duration", pa.int64()), ("autoApply", pa.bool_())]
    )
    lists = pa.array(
        [
            [{"name": "requests", "limit": 10, "duration": 1000, "autoApply": True}],
            [],
            None,
            [
                {"name": 'a"b', "limit": 1, "duration": 60_000, "autoApply": False},
                {"name": "tokens", "limit": 2**62, "duration": 2**62, "autoApply": True},
            ],
        ],
        pa.list_(item),
    )
    keys = one("ratelimits", lists)
    assert field_of(keys, "ratelimits") == [
        [{"name": "requests", "limit": 10, "duration": 1000, "autoApply": True}],
        [],
        "<absent>",
        [
            {"name": 'a"b', "limit": 1, "duration": 60_000, "autoApply": False},
            {"name": "tokens", "limit": 2**62, "duration": 2**62, "autoApply": True},
        ],
    ]
    text = [
        '[{"name": "requests", "limit": 10, "duration": 1000, "autoApply": true}]',
        None,
        '[{"name": "requests", "limit": 10, "duration": 1000, "autoApply": true, "note": null}]',
    ]
    assert field_of(one("ratelimits", text), "ratelimits") == [
        [{"name": "requests", "limit": 10, "duration": 1000, "autoApply": True}],
        "<absent>",
        [{"name": "requests", "limit": 10, "duration": 1000, "autoApply": True}],  # null members dropped
    ]


def test_string_view_columns() -> None:
    hashes = pa.array([b64(0), b64(1)]).cast(pa.string_view())
    batch = pa.record_batch({"hash": hashes, "name": pa.array(["a", None]).cast(pa.string_view())})
    preparer = KeyPreparer(resolve_mapping(None, batch.schema))
    prepared, rejects = preparer.prepare(batch, FIRST_ROW)
    assert check_invariants(preparer, batch, prepared, rejects) == [
        {"hash": b64(0), "name": "a"},
        {"hash": b64(1)},
    ]


def test_refill_without_a_remaining_column_is_rejected_on_both_paths() -> None:
    # resolve_mapping insists on credits.remaining; a preparer built by hand may still lack it.
    columns = {"credits.refill.interval": ["daily", None, "monthly"], "credits.refill.amount": [5, None, 1]}
    batch = batch_of(columns)
    preparer = KeyPreparer({"hash": "hash", **{f: f for f in columns}})
    prepared, rejects = preparer.prepare(batch, FIRST_ROW)
    keys = check_invariants(preparer, batch, prepared, rejects)
    assert field_of(keys, "credits") == ["<absent>"]
    # Row 2 breaks two rules; the row-by-row path names the first the rules find.
    assert rejects.rows == [FIRST_ROW, FIRST_ROW + 2]
    assert rejects.details == [NULL_REMAINING_WITH_REFILL, NULL_REMAINING_WITH_REFILL]


@pytest.mark.parametrize(
    "remaining",
    [
        pa.array([1, None, 0], pa.int64()),
        pa.array([1.0, float("nan"), 0.0], pa.float64()),  # pandas' null
        pa.array([1.0, None, 0.0], pa.float64()),
        pa.array(["1", None, " 0 "], pa.string()),
        pa.array([decimal.Decimal(1), None, decimal.Decimal(0)], pa.decimal128(10, 0)),
        pa.array([1, None, 0], pa.uint64()).dictionary_encode(),
    ],
    ids=["int64", "float NaN", "float null", "text", "decimal", "dictionary"],
)
@pytest.mark.parametrize(
    "refill",
    [("daily", 5, None), ("monthly", 5, 1), (None, 5, None), (None, None, 3)],
    ids=["daily", "monthly", "amount only", "refillDay only"],
)
def test_null_remaining_with_a_refill_is_rejected_by_name(
    remaining: pa.Array, refill: tuple[Any, Any, Any]
) -> None:
    """Any part of a refill makes the row's refill; a null remaining count beside it is never sent as
    ``"remaining": null`` (Unkey answers 500 to the whole request) but rejected, naming the field."""
    interval, amount, day = refill
    columns = {
        "credits.remaining": remaining,
        "credits.refill.interval": pa.array([interval] * 3, pa.string()),
        "credits.refill.amount": pa.array([amount] * 3, pa.int64()),
        "credits.refill.refillDay": pa.array([day] * 3, pa.int64()),
    }
    _, rejects, keys = prepare(columns)
    details = dict(zip(rejects.rows, rejects.details, strict=True))
    # Named for its remaining count, whatever else its refill lacks.
    assert details[FIRST_ROW + 1] == NULL_REMAINING_WITH_REFILL
    assert rejects.hashes[rejects.rows.index(FIRST_ROW + 1)] == b64(1)
    if interval is not None and amount is not None:  # the other rows are whole refills
        assert len(rejects) == 1
        assert [k["credits"]["remaining"] for k in keys] == [1, 0]
    else:  # the other rows are refills without an interval
        assert details[FIRST_ROW] == details[FIRST_ROW + 2] == "credits.refill.interval: is required"


def test_null_remaining_without_a_refill_is_no_credits() -> None:
    columns = {
        "credits.remaining": pa.array([3, None, None], pa.int64()),
        "credits.refill.interval": pa.array([None, None, "daily"], pa.string()),
        "credits.refill.amount": pa.array([None, None, 1], pa.int64()),
    }
    prepared, rejects, keys = prepare(columns)
    assert field_of(keys, "credits") == [{"remaining": 3}, "<absent>"]
    assert b"credits" not in prepared.keys[1]
    assert dict(zip(rejects.rows, rejects.details, strict=True)) == {
        FIRST_ROW + 2: NULL_REMAINING_WITH_REFILL
    }


def test_every_field_at_once() -> None:
    columns = {
        "name": ["n"],
        "externalId": ["user_1"],
        "meta": ['{"a": 1}'],
        "roles": ["admin,reader"],
        "permissions": pa.array([["api.*.read"]], pa.list_(pa.string())),
        "expires": pa.array([dt.datetime(2030, 1, 1)], pa.timestamp("ms")),
        "enabled": [False],
        "credits.remaining": [5],
        "credits.refill.interval": ["monthly"],
        "credits.refill.amount": [10],
        "credits.refill.refillDay": [3],
        "ratelimits": ['[{"name": "req", "limit": 1, "duration": 1000, "autoApply": false}]'],
    }
    assert sorted(columns) == sorted(KEY_FIELD_PATHS[1:])
    keys = prepare(columns)[2]
    assert keys == [
        {
            "hash": b64(0),
            "name": "n",
            "externalId": "user_1",
            "meta": {"a": 1},
            "roles": ["admin", "reader"],
            "permissions": ["api.*.read"],
            "expires": JAN_2030_MS,
            "enabled": False,
            "ratelimits": [{"name": "req", "limit": 1, "duration": 1000, "autoApply": False}],
            "credits": {"remaining": 5, "refill": {"interval": "monthly", "amount": 10, "refillDay": 3}},
        }
    ]


# --- bad rows -------------------------------------------------------------------------------------------------
RL = pa.struct(
    [("name", pa.string()), ("limit", pa.int64()), ("duration", pa.int64()), ("autoApply", pa.bool_())]
)


def rl(
    name: str = "requests", limit: int = 10, duration: int = 1000, auto: bool | None = True
) -> dict[str, Any]:
    return {"name": name, "limit": limit, "duration": duration, "autoApply": auto}


BAD_ROWS: list[tuple[str, dict[str, Any], str]] = [
    # (what, {column: [good, bad, good]} or a pa.Array, the detail's start)
    ("empty name", {"name": ["a", "", "b"]}, "name: must be at least 1 characters long"),
    ("long name", {"name": ["a", "x" * 256, "b"]}, "name: must be at most 255 characters long"),
    ("float name", {"name": pa.array([1.0, 1.5, 2.0])}, "name: must be a string"),
    ("long externalId", {"externalId": ["a", "é" * 256, "b"]}, "externalId: must be at most 255"),
    ("meta not JSON", {"meta": ["{}", "{'a': 1}", "{}"]}, "meta: is not valid JSON"),
    ("meta an array", {"meta": ["{}", "[1]", "{}"]}, "meta: must be an object"),
    ("meta NaN", {"meta": ["{}", '{"a": NaN}', "{}"]}, "meta: is not valid JSON (NaN is not JSON)"),
    ("meta huge number", {"meta": ["{}", '{"a": -1e999}', "{}"]}, "meta: is not valid JSON"),
    ("meta deep", {"meta": ["{}", '{"a":' * 100_000, "{}"]}, "meta: is not valid JSON"),
    (
        "meta too many",
        {
            "meta": [
                "{}",
                json.dumps({str(i): i for i in range(101)}),
                json.dumps({str(i): i for i in range(100)}),
            ]
        },
        "meta: must have at most 100 properties",
    ),
    (
        "meta NaN in a struct",
        {"meta": pa.array([{"x": 1.0}, {"x": float("nan")}, {"x": None}], pa.struct([("x", pa.float64())]))},
        "meta: holds nan",
    ),
    (
        "meta of bytes",
        {"meta": pa.array([None, {"x": b"a"}, {"x": None}], pa.struct([("x", pa.binary())]))},
        "meta: holds a bytes",
    ),
    ("meta a number", {"meta": pa.array([None, 2, None])}, "meta: must be an object"),
    (
        "meta keyed by lists",
        {"meta": pa.array([None, [(["x"], 1)], []], pa.map_(pa.list_(pa.string()), pa.int64()))},
        "meta: cannot be read (TypeError: unhashable type: 'list')",
    ),
    (
        "too many roles",
        {"roles": ["a", ",".join(f"r{i}" for i in range(101)), "b"]},
        "roles: must have at most 100 items",
    ),
    ("long role", {"roles": ["a", "b," + "x" * 129, "b"]}, "roles[1]: must be at most 128 characters long"),
    ("duplicate role", {"roles": ["a,b", "a,b,a", "b"]}, "roles[2]: duplicate role 'a'"),
    (
        "duplicate role in a list",
        {"roles": pa.array([["a"], ["x", "y", "y"], []], pa.list_(pa.string()))},
        "roles[2]: duplicate role 'y'",
    ),
    (
        "null role",
        {"roles": pa.array([["a"], ["b", None], []], pa.list_(pa.string()))},
        "roles[1]: must be a string",
    ),
    (
        "empty role in a list",
        {"roles": pa.array([["a"], [""], []], pa.list_(pa.string()))},
        "roles[0]: must be at least 1",
    ),
    (
        "roles not strings",
        {"roles": pa.array([[], [1], []], pa.list_(pa.int64()))},
        "roles[0]: must be a string",
    ),
    ("roles JSON not a list", {"roles": ["a", '["a", 1]', "b"]}, "roles[1]: must be a string"),
    ("roles broken JSON", {"roles": ["a", '["a"', "b"]}, "roles: is not valid JSON"),
    ("roles a number", {"roles": pa.array([None, 2.5, float("nan")])}, "roles: must be an array"),
    (
        "permission with a space",
        {"permissions": ["read", "read,api write", "x"]},
        "permissions[1]: must match the pattern",
    ),
    (
        "permission with a newline",
        {"permissions": pa.array([["read"], ["read\n"], []], pa.list_(pa.string()))},
        "permissions[0]: must match",
    ),
    ("permission non-ASCII", {"permissions": ["read", "lés", "x"]}, "permissions[0]: must match the pattern"),
    (
        "too many permissions",
        {"permissions": ["a", ",".join(["p"] * 1001), "b"]},
        "permissions: must have at most 1000 items",
    ),
    ("long permission", {"permissions": ["a", "p" * 129, "b"]}, "permissions[0]: must be at most 128"),
    ("expires negative", {"expires": [1, -1, 2]}, "expires: must be >= 0"),
    (
        "expires past 2100",
        {"expires": [1, rules.field("expires").maximum + 1, 2]},
        "expires: must be <= 4102444800000",
    ),
    ("expires fraction", {"expires": [1.0, 1.5, 2.0]}, "expires: must be an integer, got 1.5"),
    ("expires infinite", {"expires": [1.0, float("inf"), 2.0]}, "expires: must be an integer, got inf"),
    ("expires boolean", {"expires": [None, False, None]}, "expires: must be an integer, got a boolean"),
    (
        "expires '--5'",
        {"expires": ["1", "--5", "2"]},
        "expires: must be a timestamp, Unix milliseconds or ISO 8601 text, got '--5'",
    ),
    (
        "expires '²'",
        {"expires": ["1", "²", "2"]},
        "expires: must be a timestamp, Unix milliseconds or ISO 8601 text, got '²'",
    ),
    (
        "expires before 1970",
        {"expires": pa.array([dt.datetime(2030, 1, 1), dt.datetime(1969, 12, 31), None], pa.timestamp("us"))},
        "expires: must be >= 0",
    ),
    ("enabled maybe", {"enabled": ["true", "maybe", "false"]}, "enabled: must be true or false, got 'maybe'"),
    ("enabled 2", {"enabled": pa.array([1, 2, 0])}, "enabled: must be true or false, got 2"),
    ("remaining negative", {"credits.remaining": [1, -1, 2]}, "credits.remaining: must be >= 0"),
    (
        "remaining over int64",
        {"credits.remaining": pa.array([1, 2**63, 2], pa.uint64())},
        "credits.remaining: must be <= 9223372036854775807",
    ),
    (
        "remaining long text",
        {"credits.remaining": ["1", "9" * 30, "2"]},
        "credits.remaining: must be <= 9223372036854776000",
    ),
    (
        "remaining decimal fraction",
        {
            "credits.remaining": pa.array(
                [decimal.Decimal("1.0"), decimal.Decimal("1.5"), None], pa.decimal128(4, 1)
            )
        },
        "credits.remaining: must be an integer, got 1.5",
    ),
    (
        "refill with a null remaining",
        {
            "credits.remaining": pa.array([1, None, None], pa.int64()),
            "credits.refill.interval": ["daily", "daily", None],
            "credits.refill.amount": [1, 1, None],
        },
        NULL_REMAINING_WITH_REFILL,
    ),
    (
        "monthly without refillDay",
        {
            "credits.remaining": [1, 1, 1],
            "credits.refill.interval": ["monthly", "monthly", "daily"],
            "credits.refill.amount": [1, 1, 1],
            "credits.refill.refillDay": pa.array([1, None, None], pa.int64()),
        },
        "credits.refill.refillDay: is required when interval is monthly",
    ),
    (
        "weekly",
        {
            "credits.remaining": [1, 1, 1],
            "credits.refill.interval": ["daily", "weekly", "daily"],
            "credits.refill.amount": [1, 1, 1],
        },
        "credits.refill.interval: must be one of: daily, monthly",
    ),
    (
        "refill without amount",
        {
            "credits.remaining": [1, 1, 1],
            "credits.refill.interval": ["daily", "daily", "daily"],
            "credits.refill.amount": pa.array([1, None, 1], pa.int64()),
        },
        "credits.refill.amount: is required",
    ),
    (
        "refill amount 0",
        {
            "credits.remaining": [1, 1, 1],
            "credits.refill.interval": ["daily"] * 3,
            "credits.refill.amount": [1, 0, 1],
        },
        "credits.refill.amount: must be >= 1",
    ),
    (
        "refillDay 32",
        {
            "credits.remaining": [1, 1, 1],
            "credits.refill.interval": ["monthly"] * 3,
            "credits.refill.amount": [1, 1, 1],
            "credits.refill.refillDay": [1, 32, 31],
        },
        "credits.refill.refillDay: must be <= 31",
    ),
    (
        "ratelimit name short",
        {"ratelimits": pa.array([[rl()], [rl(name="ab")], []], pa.list_(RL))},
        "ratelimits[0].name: must be at least 3",
    ),
    (
        "ratelimit limit 0",
        {"ratelimits": pa.array([[rl()], [rl(), rl(limit=0)], []], pa.list_(RL))},
        "ratelimits[1].limit: must be >= 1",
    ),
    (
        "ratelimit duration",
        {"ratelimits": pa.array([[rl()], [rl(duration=999)], []], pa.list_(RL))},
        "ratelimits[0].duration: must be >= 1000",
    ),
    (
        "ratelimit autoApply null",
        {"ratelimits": pa.array([[rl()], [rl(auto=None)], []], pa.list_(RL))},
        "ratelimits[0].autoApply: is required",
    ),
    (
        "ratelimit null item",
        {"ratelimits": pa.array([[rl()], [None], []], pa.list_(RL))},
        "ratelimits[0]: must be an object",
    ),
    (
        "too many ratelimits",
        {"ratelimits": pa.array([[rl()], [rl()] * 51, []], pa.list_(RL))},
        "ratelimits: must have at most 50 items",
    ),
    (
        "ratelimit JSON",
        {
            "ratelimits": [
                "[]",
                '[{"name": "requests", "limit": 1.5, "duration": 1000, "autoApply": true}]',
                "[]",
            ]
        },
        "ratelimits[0].limit: must be an integer",
    ),
    (
        "ratelimit JSON float",
        {
            "ratelimits": [
                "[]",
                '[{"name": "requests", "limit": 1.0, "duration": 1000, "autoApply": true}]',
                "[]",
            ]
        },
        "ratelimits[0].limit: must be a JSON integer without a fraction or exponent",
    ),
]


@pytest.mark.parametrize("what, columns, detail", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_row_is_rejected_by_name_on_its_own_row(what: str, columns: dict[str, Any], detail: str) -> None:
    prepared, rejects, _ = prepare(columns)
    assert rejects.rows == [FIRST_ROW + 1], list(zip(rejects.rows, rejects.details, strict=True))
    assert rejects.details[0].startswith(detail), rejects.details[0]
    assert rejects.hashes == [b64(1)]
    assert prepared.rows.tolist() == [FIRST_ROW, FIRST_ROW + 2]


def test_key_over_the_size_limit_is_rejected() -> None:
    meta = ['{"a": "' + "x" * 100 + '"}', '{"a": "' + "x" * 2000 + '"}', "{}"]
    prepared, rejects, _ = prepare({"meta": meta}, max_key_bytes=1024)
    assert rejects.rows == [FIRST_ROW + 1]
    assert rejects.details[0].startswith("key: the key object is 20")
    assert rejects.details[0].endswith("over the 1024-byte limit of one request")
    assert all(len(k) <= 1024 for k in prepared.keys)


def test_rejects_of_both_kinds_in_one_batch_keep_their_rows() -> None:
    hashes = [b64(0), "bad", b64(2), None, b64(4)]
    prepared, rejects, _ = prepare({"name": ["ok", "ok", "", "ok", "ok"]}, hashes=hashes)
    short = "hash: is not a SHA-256 digest in sha256_base64 (44 characters of standard base64 ending in '=')"
    assert dict(zip(rejects.rows, rejects.details, strict=True)) == {
        FIRST_ROW + 1: f"{short}; got 3 characters",
        FIRST_ROW + 2: "name: must be at least 1 characters long",
        FIRST_ROW + 3: "hash: is missing",
    }
    assert prepared.rows.tolist() == [FIRST_ROW, FIRST_ROW + 4]


# --- random batches: nothing lost, the rules accept every key, the two paths agree -------------------------
# Per field: (Arrow type, values the rules accept, values they refuse). Good values include the
# awkward ones (escapes, limits, nulls): the fast path must write them exactly as the reference does.
MENUS: dict[str, list[tuple[pa.DataType, list[Any], list[Any]]]] = {
    "name": [
        (
            pa.string(),
            ["ok", "x" * 255, 'q"uote', "back\\slash", "tab\t", "\x00", "é", None, " s ", "\u2028"],
            ["", "x" * 256],
        ),
        (pa.int64(), [1, -5, None, 2**62], []),
    ],
    "externalId": [
        (pa.large_string(), ["u1", "é" * 255, None], ["", "é" * 256]),
        (pa.float64(), [1.0, float("nan"), None, -3.0], [2.5, float("inf")]),
    ],
    "meta": [
        (
            pa.string(),
            [
                '{"a":1}',
                "{}",
                ' {"b": [1, 2]}\n',
                json.dumps({str(i): i for i in range(100)}),
                '{"s":"\\ud800"}',
                '{"x":"é\\n", "y": null, "z": 1.5e10}',
                None,
            ],
            [
                "[]",
                "1",
                "nope",
                '{"a":NaN}',
                '{"a":1e400}',
                json.dumps({str(i): i for i in range(101)}),
                '{"a":1}{"b":2}',
            ],
        ),
    ],
    "roles": [
        (
            pa.string(),
            [
                "admin,reader",
                " a , b ,",
                "",
                ",,,",
                '["a","b"]',
                None,
                "[]",
                'q"a,b',
                "x" * 128,
                '["\\ud800"]',
            ],
            ['["a", 1]', "[broken", "a,a", "x" * 129, ",".join(f"r{i}" for i in range(101))],
        ),
        (
            pa.list_(pa.string()),
            [["a"], [], None, ["x" * 128], ["b", "a"], [f"r{i}" for i in range(100)]],
            [["a", "a"], ["", "b"], [None], [f"r{i}" for i in range(101)]],
        ),
    ],
    "permissions": [
        (
            pa.string(),
            ["api.read,api.write", "*", "a:b-c.d_e*", '["x","y"]', None, "", "read,read"],
            ["read write", "read\n", "p" * 129, '["é"]'],
        ),
        (pa.large_list(pa.large_string()), [["a", "a"], [], None, ["x" * 128]], [["é"], ["a b"], [""]]),
    ],
    "expires": [
        (
            pa.int64(),
            [0, JAN_2030_MS, rules.field("expires").maximum, None],
            [-1, rules.field("expires").maximum + 1],
        ),
        (
            pa.timestamp("us"),
            [dt.datetime(2030, 1, 1, 0, 0, 0, 1999), None],
            [dt.datetime(1960, 1, 1), dt.datetime(2200, 1, 1)],
        ),
        (pa.float64(), [1.0, float("nan"), None, 4102444800000.0], [1.5, float("inf"), 2.0**60]),
        (pa.string(), ["12", " 7 ", None, "-0", "0004102444800000"], ["--5", "²", "", "1" * 20, "+5", "1.0"]),
    ],
    "enabled": [
        (pa.bool_(), [True, False, None], []),
        (pa.string(), ["true", "no", "T", " 0 ", None], ["maybe", ""]),
        (pa.int32(), [0, 1, None], [2, -1]),
    ],
    "credits.remaining": [
        (pa.int64(), [0, 1, 2**63 - 1, None], [-1]),
        (pa.float64(), [1.0, float("nan"), 2.0**53], [-2.0, 0.5]),
        (pa.uint64(), [0, 2**63 - 1, None], [2**63, 2**64 - 1]),
        (pa.string(), ["5", " 0 ", None], ["-1", "x", ""]),
    ],
    "ratelimits": [
        (
            pa.list_(RL),
            [
                [rl()],
                [],
                None,
                [rl(name="x" * 128, limit=2**63 - 1, duration=2**63 - 1)],
                [rl(), rl(name='a"b\\')],
            ],
            [[rl(name="ab")], [rl(duration=5)], [rl(auto=None)], [None], [rl()] * 51],
        ),
        (
            pa.string(),
            [
                '[{"name":"abc","limit":1,"duration":1000,"autoApply":true}]',
                "[]",
                None,
                ' [{"name": "abc", "limit": 9223372036854775807, "duration": 1000, "autoApply": false}] ',
                '[{"name":"abc","limit":1,"duration":1000,"autoApply":true,"extra":"kept"}]',
            ],
            [
                "{}",
                "nope",
                '[{"name":"abc","limit":1,"duration":1000}]',
                '[{"name":"abc","limit":1.0,"duration":1000,"autoApply":true}]',
                '[{"name":"abc","limit":true,"duration":1000,"autoApply":true}]',
                '[{"name":"abc","limit":1,"duration":1000,"autoApply":1}]',
                '[{"name":"ab","limit":1,"duration":1000,"autoApply":true}]',
                '[{"name":"abc","limit":1,"duration":999,"autoApply":true}]',
                '[{"name":"abc","limit":9223372036854775808,"duration":1000,"autoApply":true}]',
                '[{"name":"abc","limit":1,"duration":1000,"autoApply":null}]',
                "[[]]",
                json.dumps([{"name": "abc", "limit": 1, "duration": 1000, "autoApply": True}] * 51),
            ],
        ),
    ],
}


#: The refill's three columns, drawn together: (interval, amount, refillDay).
REFILLS_GOOD = [
    (None, None, None),
    ("daily", 10, None),
    ("daily", 1, 5),
    ("monthly", 3, 31),
    ("monthly", 2**62, 1),
]
REFILLS_BAD = [
    ("monthly", 3, None),
    ("weekly", 1, 1),
    ("daily", None, None),
    (None, 5, None),
    ("daily", 0, None),
    ("monthly", 1, 32),
]


@pytest.mark.parametrize("seed", range(16))
def test_random_batches_lose_nothing_and_send_only_valid_keys(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    n = 400

    def draw(good: list[Any], bad: list[Any]) -> list[Any]:
        return [rng.choice(bad) if bad and rng.random() < 0.02 else rng.choice(good) for _ in range(n)]

    fields = rng.sample([*sorted(MENUS), "refill"], rng.randint(1, len(MENUS) + 1))
    columns: dict[str, pa.Array] = {}
    for field in fields:
        if field == "refill":
            refills = draw(REFILLS_GOOD, REFILLS_BAD)
            for i, name in enumerate(rules.members("credits.refill")):
                columns[f"credits.refill.{name}"] = pa.array([r[i] for r in refills])
            # A null remaining count: no credits without a refill, a reject with one.
            columns.setdefault("credits.remaining", pa.array(draw([None, 0, 7], [])))
        else:
            arrow_type, good, bad = rng.choice(MENUS[field])
            columns[field] = pa.array(draw(good, bad), arrow_type)
    hashes: list[str | None] = [
        b64(i) if rng.random() > 0.02 else rng.choice([None, "x", hexh(i)]) for i in range(n)
    ]
    batch = batch_of(columns, hashes=hashes)
    preparer = KeyPreparer(resolve_mapping(None, batch.schema))
    row_by_row: list[str] = []
    one_row = preparer._one_row

    def counted(wire_hash: str, values: dict[str, Any]) -> bytes | str:
        row_by_row.append(wire_hash)
        return one_row(wire_hash, values)

    monkeypatch.setattr(preparer, "_one_row", counted)
    for part in (batch, batch.slice(37, 200)):
        row_by_row.clear()
        prepared, rejects = preparer.prepare(part, FIRST_ROW)
        # Most rows must have gone the column-wise way, or this test would not test it.
        assert len(row_by_row) <= len(rejects) + part.num_rows // 10
        assert len(prepared.rows) > part.num_rows // 4
        check_invariants(preparer, part, prepared, rejects)
        body = {"migrationId": "mig", "apiId": "api", "keys": [strict_loads(k) for k in prepared.keys]}
        assert rules.schema_violations(body) == []
        assert rules.server_violations(body) == []


#: Arrow types a remaining count arrives in, each with how it writes a missing value.
_REMAINING_COLUMNS: dict[str, Any] = {
    "int64": lambda values: pa.array(values, pa.int64()),
    "uint64": lambda values: pa.array(values, pa.uint64()),
    "float NaN": lambda values: pa.array([float("nan") if v is None else float(v) for v in values]),
    "float null": lambda values: pa.array([None if v is None else float(v) for v in values], pa.float64()),
    "text": lambda values: pa.array([None if v is None else f" {v} " for v in values], pa.string()),
    "decimal": lambda values: pa.array(
        [None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(20, 0)
    ),
}


@settings(
    max_examples=150, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate)
)
@given(
    rows=st.lists(
        st.tuples(st.none() | st.integers(0, 2**53), st.sampled_from(REFILLS_GOOD)), min_size=1, max_size=24
    ),
    kind=st.sampled_from(sorted(_REMAINING_COLUMNS)),
    refill_fields=st.sets(st.sampled_from(rules.members("credits.refill"))),
)
def test_no_prepared_key_ever_carries_a_null_remaining(
    rows: list[tuple[int | None, tuple[Any, Any, Any]]], kind: str, refill_fields: set[str]
) -> None:
    """Random null and non-null credit columns: no key goes out with ``"remaining": null``; a null
    remaining count with a refill is a reject naming ``credits.remaining``, without one it is no
    credits; and the column-wise path agrees with the row-by-row one (``check_invariants``)."""
    remaining = [r for r, _ in rows]
    refills = [{name: r[i] for i, name in enumerate(rules.members("credits.refill"))} for _, r in rows]
    types = {"interval": pa.string(), "amount": pa.int64(), "refillDay": pa.int64()}
    columns: dict[str, pa.Array] = {"credits.remaining": _REMAINING_COLUMNS[kind](remaining)}
    for name in sorted(refill_fields):
        columns[f"credits.refill.{name}"] = pa.array([r[name] for r in refills], types[name])
    prepared, rejects, keys = prepare(columns)
    assert all(b'"remaining":null' not in key for key in prepared.keys)
    by_row = dict(zip(prepared.rows.tolist(), keys, strict=True))
    details = dict(zip(rejects.rows, rejects.details, strict=True))
    for i, (count, refill) in enumerate(zip(remaining, refills, strict=True)):
        mapped = {name: refill[name] for name in refill_fields if refill[name] is not None}
        if count is None and mapped:
            assert details.get(FIRST_ROW + i) == NULL_REMAINING_WITH_REFILL, (i, mapped)
        elif count is None:
            assert "credits" not in by_row[FIRST_ROW + i]
        elif FIRST_ROW + i in by_row:
            assert by_row[FIRST_ROW + i]["credits"]["remaining"] == count
        else:  # a partial refill (its columns not all mapped): a reject for its refill, not for remaining
            assert details[FIRST_ROW + i].startswith("credits.refill."), details[FIRST_ROW + i]


def test_dictionary_and_sliced_columns_of_a_chunked_table() -> None:
    n = 50
    table = pa.table(
        {
            "hash": pa.array([b64(i) for i in range(n)], pa.large_string()).dictionary_encode(),
            "name": pa.array([f"name {i % 7}" for i in range(n)]).dictionary_encode(),
            "roles": pa.array([["a", "b"] if i % 2 else [] for i in range(n)], pa.list_(pa.string())),
            "credits.remaining": pa.array(list(range(n)), pa.int32()),
        }
    )
    preparer = KeyPreparer(resolve_mapping(None, table.schema))
    row = 0
    seen: list[dict[str, Any]] = []
    for batch in table.to_batches(max_chunksize=13):
        prepared, rejects = preparer.prepare(batch, row)
        assert len(rejects) == 0
        assert prepared.rows.tolist() == list(range(row, row + batch.num_rows))
        seen.extend(json.loads(k) for k in prepared.keys)
        row += batch.num_rows
    assert seen == [
        {
            "hash": b64(i),
            "name": f"name {i % 7}",
            "roles": ["a", "b"] if i % 2 else [],
            "credits": {"remaining": i},
        }
        for i in range(n)
    ]


def test_empty_batch() -> None:
    for columns in ({}, {"name": pa.array([], pa.string())}):
        batch = batch_of(columns, hashes=[])
        prepared, rejects = KeyPreparer(resolve_mapping(None, batch.schema)).prepare(batch, 0)
        assert len(prepared.rows) == len(rejects) == 0
        assert prepared.digests.shape == (0, 32)


def test_take_keeps_rows_hashes_digests_and_keys_together() -> None:
    prepared, _, _ = prepare({"name": ["a", "b", "c", "d"]})
    part = prepared.take(np.array([True, False, False, True]))
    assert part.rows.tolist() == [FIRST_ROW, FIRST_ROW + 3]
    assert part.hashes == [b64(0), b64(3)]
    assert [json.loads(k)["name"] for k in part.keys] == ["a", "d"]
    assert [bytes(d) for d in part.digests] == [base64.b64decode(b64(0)), base64.b64decode(b64(3))]


def test_expires_as_iso_text() -> None:
    """SQLite and CSV exports keep timestamps as text: ISO 8601 is read, anything else names the field."""
    import base64
    import hashlib

    from airflow_provider_unkey.migration.prepare.preparer import KeyPreparer, resolve_mapping

    values = ["2031-01-01T00:00:00Z", "2031-01-01", "1924992000000", "2031-01-01 01:00:00+01:00", "soon"]
    hashes = [base64.b64encode(hashlib.sha256(f"iso{i}".encode()).digest()).decode() for i in range(5)]
    table = pa.table({"hash": hashes, "expires": values})
    prepared, rejects = KeyPreparer(resolve_mapping(None, table.schema)).prepare(table.to_batches()[0], 0)
    assert prepared.rows.tolist() == [0, 1, 2, 3]
    assert all(b'"expires":1924992000000' in key for key in prepared.keys)
    assert rejects.rows == [4] and rejects.details[0].startswith("expires: must be a timestamp")


#: A ratelimit item with ``limit`` written as given.
def _rl_text(limit: str) -> str:
    return '[{"name":"abc","limit":' + limit + ',"duration":1000,"autoApply":true}]'


#: JSON text where a parser could differ from Python's strict decoder (orjson does on big integers, lone
#: surrogate escapes and nesting depth): what the preparer accepts, and the value it sends.
JSON_EDGES = [
    ("meta", '{"a":1,"a":2}', {"a": 2}),
    ("meta", '{"big":123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
    ("meta", '{"neg":-9223372036854775809}', {"neg": -9223372036854775809}),
    ("meta", '{"s":"\\ud800"}', {"s": "\ud800"}),
    ("meta", ' {"a":1}\n', {"a": 1}),
    ("meta", '{"d":' + "[" * 100 + "]" * 100 + "}", None),
    ("meta", '{"d":' + "[" * 300 + "]" * 300 + "}", None),  # deep but within reach: accepted
    ("meta", '{"d":' + "[" * 1010 + "]" * 1010 + "}", "meta: is not valid JSON"),
    ("meta", '{"a":1} x', "meta: is not valid JSON"),
    ("meta", '{"a":1,}', "meta: is not valid JSON"),
    ("meta", '{"a":Infinity}', "meta: is not valid JSON (Infinity is not JSON)"),
    ("meta", '{"a":-Infinity}', "meta: is not valid JSON (-Infinity is not JSON)"),
    ("meta", '{"a":1e400}', "meta: is not valid JSON"),
    ("meta", '{"a":"\x01"}', "meta: is not valid JSON"),
    ("meta", '{"a":01}', "meta: is not valid JSON"),
    ("ratelimits", _rl_text("5"), None),
    ("ratelimits", _rl_text("18446744073709551616"), "ratelimits[0].limit"),
    ("ratelimits", _rl_text("123456789012345678901234567890"), "ratelimits[0].limit"),
    ("ratelimits", _rl_text("-9223372036854775809"), "ratelimits[0].limit"),
    ("ratelimits", _rl_text("1,]"), "ratelimits: is not valid JSON"),
    ("roles", '["a","b"]', ["a", "b"]),
    ("roles", '["a","b",]', "roles: is not valid JSON"),
    ("roles", '["\\ud800\\udc00"]', ["\U00010000"]),
]


@pytest.mark.parametrize(("field", "text", "want"), JSON_EDGES, ids=[repr(e[1])[:40] for e in JSON_EDGES])
def test_json_text_is_read_as_the_strict_decoder_reads_it(field: str, text: str, want: Any) -> None:
    _, rejects, keys = prepare({field: ["{}" if field == "meta" else "[]", text]})
    if isinstance(want, str):
        assert rejects.rows == [FIRST_ROW + 1], list(zip(rejects.rows, rejects.details, strict=True))
        assert rejects.details[0].startswith(want), rejects.details[0]
        return
    assert len(rejects) == 0, list(zip(rejects.rows, rejects.details, strict=True))
    if want is not None:
        assert keys[1][field] == want
