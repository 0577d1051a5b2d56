"""Unit tests of what the server rejects beyond the schema (:func:`rules.server_violations`). The
schema side is in ``test_rules_differential.py``; hash formats in ``migration/prepare/test_hashes.py``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from airflow_provider_unkey import rules

# Plaintext keys as a provider would have issued them; their digests are computed, never pasted.
PLAINTEXTS = [
    "sk_live_51Hq8d2eZvKYlo2C0a8xQh7",
    "acme_01GVDPRNNV4P4593VH1A0DR7RN_1372dpVKCbEvLfM6nMsDL75GrspAj2osNVyp5RLM2s5oTjiBm",
    "",
    "ünïcödé-key-😀",
    *(f"key-{i}" for i in range(40)),
]


def sha256_base64(plaintext: str) -> str:
    """Unkey's native format: padded standard base64 of the SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


def sha256_hex(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A schema-valid key object with a real hash."""
    return {"hash": sha256_base64(f"key-{i}"), **fields}


def body(*keys: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid body (checked: ``server_violations`` is only defined for those)."""
    out = {"migrationId": "your_company", "apiId": "api_123456789", "keys": list(keys) or [key()]}
    assert rules.schema_violations(out) == [], rules.schema_violations(out)
    return out


def where(violations: list[rules.Violation]) -> list[tuple[str, int]]:
    return [(v.location, v.status) for v in violations]


# --- server_violations -------------------------------------------------------------------------------
def test_a_plain_body_has_no_server_violation() -> None:
    """Every optional field, set the way the server accepts it."""
    full = key(
        name="n",
        externalId="user_1",
        meta={"a": 1.5},
        roles=["admin", "reader"],
        permissions=["docs.read", "docs.read"],  # permissions are upserted: duplicates are fine
        expires=4_102_444_800_000,
        enabled=True,
        credits={
            "remaining": rules.INT64_MAX,
            "refill": {"interval": "monthly", "amount": 1, "refillDay": 31},
        },
        ratelimits=[
            {"name": "requests", "limit": rules.INT64_MAX, "duration": 1000, "autoApply": True},
            {"name": "requests", "limit": 1, "duration": 60_000, "autoApply": False},  # upserted too
        ],
    )
    assert rules.server_violations(body(full, key(1), key(2, credits={"remaining": 0}))) == []


@pytest.mark.parametrize(
    ("credits", "says"),
    [
        ({"remaining": None}, "without credits"),
        ({"remaining": None, "refill": {"interval": "daily", "amount": 5}}, "a refill needs an integer"),
        ({"remaining": None, "refill": {"interval": "monthly", "amount": 5, "refillDay": 1}}, "a refill"),
    ],
    ids=["alone", "daily refill", "monthly refill"],
)
def test_null_remaining_is_a_500(credits: dict[str, Any], says: str) -> None:
    """The schema allows ``"remaining": null`` and calls it unlimited; the handler panics on it."""
    violations = rules.server_violations(body(key(0), key(1, credits=credits)))
    assert where(violations) == [("body.keys[1].credits.remaining", 500)]
    assert says in violations[0].message and "whole request" in violations[0].message
    assert violations[0].fix is not None


def test_null_remaining_next_to_a_monthly_refill_without_refill_day_is_both() -> None:
    credits = {"remaining": None, "refill": {"interval": "monthly", "amount": 5}}
    violations = rules.server_violations(body(key(credits=credits)))
    assert where(violations) == [
        ("body.keys[0].credits.refill.refillDay", 400),
        ("body.keys[0].credits.remaining", 500),
    ]


def test_null_remaining_violation_names_its_location() -> None:
    violation = rules.null_remaining_violation("key.credits.remaining", refill=True)
    assert (violation.location, violation.status) == ("key.credits.remaining", 500)
    assert "refill" in violation.message and "null" in violation.message


def test_monthly_refill_without_refill_day_is_one_400() -> None:
    refill = {"interval": "monthly", "amount": 100}
    violations = rules.server_violations(body(key(0), key(1, credits={"remaining": 5, "refill": refill})))
    assert where(violations) == [("body.keys[1].credits.refill.refillDay", 400)]
    assert violations[0].fix is not None and "refillDay" in violations[0].fix


@pytest.mark.parametrize(
    "refill",
    [
        {"interval": "monthly", "amount": 100, "refillDay": 1},
        {"interval": "daily", "amount": 100},
        {"interval": "daily", "amount": 100, "refillDay": 15},
    ],
)
def test_refills_the_server_accepts(refill: dict[str, Any]) -> None:
    assert rules.server_violations(body(key(credits={"remaining": 5, "refill": refill}))) == []


def test_duplicate_role_is_a_500_at_the_second_occurrence() -> None:
    violations = rules.server_violations(body(key(0), key(1, roles=["admin", "reader", "admin"])))
    assert where(violations) == [("body.keys[1].roles[2]", 500)]
    assert "admin" in violations[0].message


def test_each_repeat_of_a_role_is_reported() -> None:
    violations = rules.server_violations(body(key(roles=["a", "a", "b", "a"])))
    assert where(violations) == [("body.keys[0].roles[1]", 500), ("body.keys[0].roles[3]", 500)]


def test_roles_differing_in_case_are_not_duplicates() -> None:
    assert rules.server_violations(body(key(roles=["admin", "Admin"]))) == []


def test_duplicate_hash_in_one_body_is_a_500_naming_both_indexes() -> None:
    same = sha256_base64("shared")
    violations = rules.server_violations(body(key(0, hash=same), key(1), key(2, hash=same)))
    assert where(violations) == [("body.keys[2].hash", 500)]
    assert "body.keys[0]" in violations[0].message


def test_a_hash_three_times_is_two_duplicates_of_the_first() -> None:
    same = sha256_base64("shared")
    violations = rules.server_violations(body(key(hash=same), key(hash=same), key(hash=same)))
    assert where(violations) == [("body.keys[1].hash", 500), ("body.keys[2].hash", 500)]
    assert all("body.keys[0]" in v.message for v in violations)


@pytest.mark.parametrize(("length", "ok"), [(3, True), (256, True), (257, False), (10_000, False)])
def test_hash_longer_than_its_column_is_a_500(length: int, ok: bool) -> None:
    violations = rules.server_violations(body(key(hash="h" * length)))
    assert where(violations) == ([] if ok else [("body.keys[0].hash", 500)])


def test_hash_length_counts_characters_not_bytes() -> None:
    """``varchar(256)`` holds 256 characters, however many bytes they take."""
    assert rules.server_violations(body(key(hash="😀" * 256))) == []
    assert where(rules.server_violations(body(key(hash="😀" * 257)))) == [("body.keys[0].hash", 500)]


INT_FIELDS = [
    ("expires", lambda v: key(expires=v), "body.keys[0].expires", 31),
    ("remaining", lambda v: key(credits={"remaining": v}), "body.keys[0].credits.remaining", 31),
    (
        "amount",
        lambda v: key(credits={"remaining": 1, "refill": {"interval": "daily", "amount": v}}),
        "body.keys[0].credits.refill.amount",
        31,
    ),
    (
        "refillDay",
        lambda v: key(
            credits={"remaining": 1, "refill": {"interval": "monthly", "amount": 1, "refillDay": v}}
        ),
        "body.keys[0].credits.refill.refillDay",
        31,
    ),
    (
        "limit",
        lambda v: key(ratelimits=[{"name": "abc", "limit": v, "duration": 1000, "autoApply": True}]),
        "body.keys[0].ratelimits[0].limit",
        31,
    ),
    (
        "duration",
        lambda v: key(ratelimits=[{"name": "abc", "limit": 1, "duration": v, "autoApply": True}]),
        "body.keys[0].ratelimits[0].duration",
        1000,
    ),
]


@pytest.mark.parametrize(
    ("make", "location", "value"), [pytest.param(m, loc, v, id=n) for n, m, loc, v in INT_FIELDS]
)
def test_a_float_integer_is_a_400(make: Any, location: str, value: int) -> None:
    """JSON Schema calls ``31.0`` an integer; Go's ``int64`` decoder does not."""
    assert rules.server_violations(body(make(value))) == []
    assert where(rules.server_violations(body(make(float(value))))) == [(location, 400)]


@pytest.mark.parametrize(
    ("make", "location"),
    [
        pytest.param(m, loc, id=n)
        for n, m, loc, _ in INT_FIELDS
        if n in ("remaining", "amount", "limit", "duration")
    ],
)
def test_an_integer_above_int64_is_a_400(make: Any, location: str) -> None:
    """The schema allows up to 9223372036854776000 (or has no maximum); ``int64`` stops at 2**63 - 1."""
    assert rules.server_violations(body(make(rules.INT64_MAX))) == []
    assert where(rules.server_violations(body(make(rules.INT64_MAX + 1)))) == [(location, 400)]
    assert where(rules.server_violations(body(make(rules.CREDITS_MAX)))) == [(location, 400)]


def test_a_400_comes_before_a_500_whatever_the_key_order() -> None:
    """The server decodes and validates the whole body before it writes: a 400 anywhere wins, and
    ``server_violations`` lists 400s first, so its first violation gives the status."""
    violations = rules.server_violations(
        body(key(0, roles=["a", "a"]), key(1, hash="h" * 300), key(2, expires=1.0), key(3, roles=["b", "b"]))
    )
    assert [v.status for v in violations] == [400, 500, 500, 500]
    assert violations[0].location == "body.keys[2].expires"
    # 500s keep their order.
    assert [v.location for v in violations[1:]] == [
        "body.keys[0].roles[1]",
        "body.keys[1].hash",
        "body.keys[3].roles[1]",
    ]


def test_key_server_violations_takes_its_location() -> None:
    assert where(rules.key_server_violations(key(roles=["x", "x"]), "body.keys[41]")) == [
        ("body.keys[41].roles[1]", 500)
    ]
    assert where(rules.key_server_violations(key(credits={"remaining": None}), "body.keys[41]")) == [
        ("body.keys[41].credits.remaining", 500)
    ]


# --- the canonical base64 tails ------------------------------------------------------------------


def test_real_digests_end_in_every_canonical_tail() -> None:
    """The canonical tails (what ``hashes.format_mask`` accepts before '=') are exactly the ones real
    digests produce."""
    tails = {sha256_base64(f"tail-{i}")[42] for i in range(2000)}
    assert tails == set(rules.SHA256_BASE64_LAST_CHARS) == set("AEIMQUYcgkosw048")


# --- the field table ----------------------------------------------------------------------------------
def test_the_docs_field_table_is_current() -> None:
    """``docs/api-rules.md`` shows the table as it is; regenerate it with the command the page names."""
    from pathlib import Path

    from airflow_provider_unkey.rules import docs

    page = (Path(__file__).resolve().parents[1] / "docs" / "api-rules.md").read_text()
    assert docs.render(page) == page, (
        "docs/api-rules.md is stale: run `python -m airflow_provider_unkey.rules.docs docs/api-rules.md`"
    )


def test_the_table_nests_by_path_and_lists_what_a_column_can_feed() -> None:
    assert rules.KEY_FIELDS == (
        "hash", "name", "externalId", "meta", "roles", "permissions", "expires", "enabled", "credits", "ratelimits",
    )  # fmt: skip
    credits = (
        "credits.remaining",
        "credits.refill.interval",
        "credits.refill.amount",
        "credits.refill.refillDay",
    )
    top = ("hash", "name", "externalId", "meta", "roles", "permissions", "expires", "enabled")
    assert (*top, *credits, "ratelimits") == rules.MAPPABLE_PATHS
    assert rules.members("credits") == ("remaining", "refill")
    assert rules.members("credits.refill") == ("interval", "amount", "refillDay")
    assert rules.field("ratelimits[].duration").minimum == 1000
    assert rules.field("roles[]").parent == "roles" and rules.field("roles[]").name == "[]"


def test_a_table_whose_parent_comes_late_is_refused() -> None:
    from airflow_provider_unkey.rules.fields import Field, build_tree

    with pytest.raises(ValueError, match="must come before it"):
        build_tree(Field("", "object"), (Field("a.b", "string"), Field("a", "object")))
    with pytest.raises(ValueError, match="a member of a string"):
        build_tree(Field("", "object"), (Field("a", "string"), Field("a.b", "string")))


@pytest.mark.parametrize("path", rules.MAPPABLE_PATHS[1:])
def test_every_mappable_field_has_a_kernel_and_a_row_conversion(path: str) -> None:
    """Chosen by JSON type from the table; both agree on a valid value and refuse a wrong one."""
    import pyarrow as pa

    from airflow_provider_unkey.migration.prepare.kernels import kernel_for
    from airflow_provider_unkey.migration.prepare.row_values import converter_for

    good: dict[str, Any] = {
        "string": "monthly" if rules.field(path).enum else "abc",
        "integer": 5 if path != "credits.refill.refillDay" else 3,
        "boolean": True,
        "object": '{"a": 1}',
        "array": "[]",
    }
    entry = rules.field(path)
    value = good[entry.type]
    converted = kernel_for(entry, ",")(pa.array([value, None]))
    assert converted.unsure.tolist() == [False, False]
    assert converted.json.to_pylist()[1] is None
    reference = converter_for(entry, ",")(value, path)
    assert rules.value_ok(path)(reference), (path, reference)


@pytest.mark.parametrize(
    ("path", "value", "ok"),
    [
        ("name", "x" * 255, True),
        ("name", "x" * 256, False),
        ("roles", ["a", "a"], False),  # a duplicate role is a 500
        ("credits.remaining", None, False),  # the schema's "unlimited" is the server's 500
        ("credits", {"remaining": 1, "refill": {"interval": "monthly", "amount": 1}}, False),
        ("credits", {"remaining": 1, "refill": {"interval": "monthly", "amount": 1, "refillDay": 2}}, True),
        ("expires", 1.0, False),  # Go's int64 refuses a fraction
        ("ratelimits[].limit", rules.INT64_MAX + 1, False),
        ("ratelimits", [{"name": "abc", "limit": 1, "duration": 1000, "autoApply": True, "x": 1}], True),
    ],
)
def test_value_ok_agrees_with_the_full_checks(path: str, value: Any, ok: bool) -> None:
    assert rules.value_ok(path)(value) is ok
    top, _, _ = path.partition(".")
    if "[]" not in path and top == path:
        key = {"hash": "abc", path: value}
        full = rules.key_schema_violations(key) + rules.key_server_violations(key)
        assert (full == []) is ok, full
