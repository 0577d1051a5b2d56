"""Hash formats: what is accepted, and lossless base64 <-> hex conversion over whole Arrow arrays."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.rules import ALGORITHM_SEAM, ALGORITHM_SHA256

KEYS = [f"sk_live_{i}" for i in range(50)] + ["", "é", "x" * 10_000]
DIGESTS = [hashlib.sha256(k.encode()).digest() for k in KEYS]
B64 = [base64.b64encode(d).decode() for d in DIGESTS]
HEX = [d.hex() for d in DIGESTS]
URL_SAFE = next(b for b in B64 if "+" in b or "/" in b).replace("+", "-").replace("/", "_")


def mask(values: list[str | None] | pa.Array, fmt: str) -> list[bool]:
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, pa.string())
    return list(hashes.format_mask(arr, fmt).to_pylist())


def as_bytes(rows: np.ndarray) -> list[bytes]:
    return [bytes(r) for r in rows]


# --- algorithms --------------------------------------------------------------------------------------
def test_algorithm_names_and_wire_formats() -> None:
    assert hashes.canonical_algorithm("sha256") == ALGORITHM_SHA256
    assert hashes.canonical_algorithm("seam") == ALGORITHM_SEAM
    assert hashes.canonical_algorithm(ALGORITHM_SEAM) == ALGORITHM_SEAM
    assert hashes.wire_format("sha256") == "sha256_base64"
    assert hashes.wire_format("seam") == "sha256_hex"
    with pytest.raises(ValueError, match="unknown migration algorithm 'md5'"):
        hashes.canonical_algorithm("md5")


# --- format checks -----------------------------------------------------------------------------------
def test_base64_accepts_real_digests_only() -> None:
    assert all(mask(B64, "sha256_base64"))
    good = B64[0]
    rejected = [
        None,
        "",
        good[:-1],  # no padding
        good + "=",
        good.rstrip("=") + "==",
        " " + good,
        good + "\n",  # RE2's $ is the very end: a trailing newline is not the end
        URL_SAFE,  # the URL-safe alphabet is another encoding
        HEX[0],
        HEX[0][:44],
    ]
    assert mask(rejected, "sha256_base64") == [False] * len(rejected)


def test_base64_must_be_canonical() -> None:
    """The 43rd character holds two padding bits; only the spelling with zero bits is the digest's."""
    digest = DIGESTS[0]
    canonical = base64.b64encode(digest).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(canonical[42])
    assert index % 4 == 0
    variants = [canonical[:42] + alphabet[index + bits] + "=" for bits in (1, 2, 3)]
    # Python's lenient decoder maps all of them to the same digest: Unkey, comparing strings, would not.
    assert {base64.b64decode(v) for v in variants} == {digest}
    assert mask([canonical, *variants], "sha256_base64") == [True, False, False, False]


def test_hex_accepts_both_cases() -> None:
    values = [HEX[0], HEX[1].upper(), HEX[2][:32] + HEX[2][32:].upper()]
    bad = [HEX[0][:63], HEX[0] + "0", "g" + HEX[0][1:], HEX[0] + "\n", B64[0], None, ""]
    assert mask(values + bad, "sha256_hex") == [True] * 3 + [False] * len(bad)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown hash_format"):
        hashes.format_mask(pa.array(B64), "sha1_hex")
    with pytest.raises(ValueError, match="unknown hash_format"):
        hashes.digests(pa.array(B64), "sha1_hex")
    with pytest.raises(ValueError, match="unknown hash_format"):
        hashes.encode(np.zeros((1, 32), np.uint8), "sha1_hex")


# --- digests and encoding ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, values", [("sha256_base64", B64), ("sha256_hex", HEX)])
def test_digests_are_the_real_digests(fmt: str, values: list[str]) -> None:
    rows = hashes.digests(pa.array(values), fmt)
    assert rows.shape == (len(values), 32)
    assert rows.dtype == np.uint8
    assert as_bytes(rows) == DIGESTS


def test_uppercase_hex_gives_the_same_digest_and_lowercase_on_the_wire() -> None:
    upper = [h.upper() for h in HEX]
    rows = hashes.digests(pa.array(upper), "sha256_hex")
    assert as_bytes(rows) == DIGESTS
    assert hashes.encode(rows, "sha256_hex").to_pylist() == HEX


def test_base64_hex_round_trip_is_lossless() -> None:
    as_hex = hashes.encode(hashes.digests(pa.array(B64), "sha256_base64"), "sha256_hex")
    assert as_hex.to_pylist() == HEX
    back = hashes.encode(hashes.digests(as_hex, "sha256_hex"), "sha256_base64")
    assert back.to_pylist() == B64


def test_random_digests_round_trip_through_both_formats() -> None:
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
    rows[0] = 0
    rows[1] = 255
    for fmt in hashes.HASH_FORMATS:
        text = hashes.encode(rows, fmt)
        text.validate(full=True)
        assert all(hashes.format_mask(text, fmt).to_pylist())
        np.testing.assert_array_equal(hashes.digests(text, fmt), rows)
    b64 = hashes.encode(rows, "sha256_base64").to_pylist()
    assert b64[:100] == [base64.b64encode(bytes(r)).decode() for r in rows[:100]]


def test_empty_input() -> None:
    empty = pa.array([], pa.string())
    assert hashes.format_mask(empty, "sha256_base64").to_pylist() == []
    assert hashes.digests(empty, "sha256_hex").shape == (0, 32)
    assert hashes.encode(np.zeros((0, 32), np.uint8), "sha256_base64").to_pylist() == []


# --- Arrow layouts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, values", [("sha256_base64", B64), ("sha256_hex", HEX)])
def test_sliced_arrays_with_offsets(fmt: str, values: list[str]) -> None:
    whole = pa.array(["not a hash", *values, "x"])
    for start, length in [(1, len(values)), (5, 7), (len(values), 1), (3, 0)]:
        part = whole.slice(start, length)
        assert part.offset == start
        assert all(hashes.format_mask(part, fmt).to_pylist())
        assert as_bytes(hashes.digests(part, fmt)) == DIGESTS[start - 1 : start - 1 + length]


def test_batches_of_a_chunked_table_have_offsets_and_convert_right() -> None:
    table = pa.Table.from_batches(
        [pa.record_batch({"hash": pa.array(B64[:20])}), pa.record_batch({"hash": pa.array(B64[20:])})]
    )
    batches = table.to_batches(max_chunksize=7)
    assert any(b.column(0).offset > 0 for b in batches)
    got = [d for b in batches for d in as_bytes(hashes.digests(b.column(0), "sha256_base64"))]
    assert got == DIGESTS
    # A chunked column is accepted as a whole too.
    assert as_bytes(hashes.digests(table.column("hash"), "sha256_base64")) == DIGESTS
    assert all(hashes.format_mask(table.column("hash"), "sha256_base64").to_pylist())


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
def test_large_string_and_dictionary_columns(arrow_type: pa.DataType) -> None:
    values = [HEX[0], HEX[1].upper(), None, HEX[0], "short"]
    plain = pa.array(values, arrow_type)
    encoded = plain.dictionary_encode()
    for arr in (plain, encoded, encoded.slice(1)):
        expected = [True, True, False, True, False][len(values) - len(arr) :]
        assert mask(arr, "sha256_hex") == expected
    good = pa.array([HEX[0], HEX[1].upper(), HEX[0]], arrow_type).dictionary_encode()
    assert as_bytes(hashes.digests(good, "sha256_hex")) == [DIGESTS[0], DIGESTS[1], DIGESTS[0]]


def test_nulls_are_false_not_null() -> None:
    result = hashes.format_mask(pa.array([None, B64[0], None]), "sha256_base64")
    assert result.null_count == 0
    assert result.to_pylist() == [False, True, False]
