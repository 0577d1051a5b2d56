"""Binary hash columns: raw 32-byte SHA-256 digests (``BYTEA``, ``BINARY(32)``, Arrow binary types).

A binary column is read as raw digests whatever ``hash_format`` says (``sha256_binary`` says so
explicitly) and goes on the wire as the migration's algorithm wants. Checked from the hash codec up:
the preparer, whole runs from Parquet and from PostgreSQL and MariaDB/MySQL against the emulator (with
the migrated keys verified by their plaintext), and partitions by hash.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration import hashes
from airflow_provider_unkey.migration.engine import MigrationConfig, MigrationSummary, run_migration
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter, read_ledger
from airflow_provider_unkey.migration.mapping import resolve_mapping
from airflow_provider_unkey.migration.prepare import KeyPreparer
from airflow_provider_unkey.migration.sources import ParquetSource, SqlSource
from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases
from tests.databases import MySqlDatabase
from tests.migration.test_engine import API, FAST, MIGRATION, ROOT

postgres_dsn = databases.postgres_dsn
mysql_database = databases.mysql_database

BINARY_TYPES = [pa.binary(), pa.large_binary(), pa.binary_view(), pa.binary(32)]
TRY1 = LedgerScope("dag", "run_1", "migrate", -1, 1)


def plaintext(i: int) -> str:
    """A key shaped as both algorithms need it: ``<prefix>_<short token>_<long token>``."""
    return f"sk_{i:04d}_longtoken{i}"


def digest(i: int, algorithm: str = "sha256") -> bytes:
    """The digest the migration's algorithm stores: of the whole key (sha256), of the long token (seam)."""
    text = plaintext(i) if algorithm == "sha256" else plaintext(i).rsplit("_", 1)[-1]
    return hashlib.sha256(text.encode()).digest()


def wire(raw: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(raw).decode() if algorithm == "sha256" else raw.hex()


def binary_array(values: Sequence[bytes | None], type_: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_binary(type_):
        return pa.array(values, type_)
    return pa.array(values, pa.binary()).cast(type_)


# --- the codec -----------------------------------------------------------------------------------------
DIGESTS = [digest(i) for i in range(40)]


@pytest.mark.parametrize("type_", BINARY_TYPES, ids=str)
def test_binary_columns_of_every_type_are_raw_digests(type_: pa.DataType) -> None:
    column = binary_array(DIGESTS, type_)
    for fmt in hashes.HASH_FORMATS:  # whatever hash_format says
        assert hashes.column_format(column.type, fmt) == hashes.SHA256_BINARY
        assert all(hashes.format_mask(column, fmt).to_pylist())
        assert [bytes(r) for r in hashes.digests(column, fmt)] == DIGESTS
    dictionary = column.cast(pa.large_binary()).dictionary_encode()
    assert hashes.column_format(dictionary.type, "sha256_hex") == hashes.SHA256_BINARY
    assert [bytes(r) for r in hashes.digests(dictionary, "sha256_hex")] == DIGESTS
    chunked = pa.chunked_array([column.slice(0, 7), column.slice(7)])
    assert [bytes(r) for r in hashes.digests(chunked, hashes.SHA256_BINARY)] == DIGESTS
    part = column.slice(5, 10)
    assert [bytes(r) for r in hashes.digests(part, hashes.SHA256_BINARY)] == DIGESTS[5:15]
    assert hashes.readable(part).to_pylist() == [d.hex() for d in DIGESTS[5:15]]


def test_binary_mask_wants_exactly_32_bytes_and_text_is_never_binary() -> None:
    values = [DIGESTS[0], None, b"", b"x" * 20, b"x" * 33, DIGESTS[0].hex().encode()]
    assert hashes.format_mask(pa.array(values, pa.binary()), "sha256_base64").to_pylist() == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert not any(
        hashes.format_mask(pa.array([None, b"x" * 31], pa.binary(31)), "sha256_binary").to_pylist()
    )
    text = pa.array([wire(DIGESTS[0]), DIGESTS[0].hex(), None])
    assert hashes.column_format(text.type, hashes.SHA256_BINARY) == hashes.SHA256_BINARY
    assert hashes.format_mask(text, hashes.SHA256_BINARY).to_pylist() == [False, False, False]
    with pytest.raises(ValueError, match="unknown hash_format 'md5'"):
        hashes.format_mask(text, "md5")


def test_binary_encodes_and_round_trips_through_the_text_formats() -> None:
    rng = np.random.default_rng(11)
    rows = rng.integers(0, 256, size=(3000, 32), dtype=np.uint8)
    raw = hashes.encode(rows, hashes.SHA256_BINARY)
    assert raw.type == pa.binary(32)
    raw.validate(full=True)
    assert [bytes(r) for r in rows[:50]] == raw.to_pylist()[:50]
    as_b64 = hashes.encode(hashes.digests(raw, hashes.SHA256_BINARY), "sha256_base64")
    assert as_b64.to_pylist()[:50] == [base64.b64encode(bytes(r)).decode() for r in rows[:50]]
    np.testing.assert_array_equal(hashes.digests(as_b64, "sha256_base64"), rows)


def test_readable_is_lowercase_hex_of_any_length_with_nulls() -> None:
    values = [b"\x00\xff\x10", None, b"", DIGESTS[1], b"\xab"]
    for type_ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        column = binary_array(values, type_)
        expected = ["00ff10", None, "", DIGESTS[1].hex(), "ab"]
        shown = hashes.readable(column)
        shown.validate(full=True)
        assert shown.to_pylist() == expected
        assert hashes.readable(column.slice(1)).to_pylist() == expected[1:]
        assert hashes.readable(column.slice(3, 2)).to_pylist() == expected[3:]
    assert hashes.readable(pa.array(["abc", None])).to_pylist() == ["abc", None]


# --- the preparer --------------------------------------------------------------------------------------
def test_the_mapping_takes_binary_hash_columns() -> None:
    for type_ in [*BINARY_TYPES, pa.dictionary(pa.int32(), pa.binary())]:
        assert resolve_mapping({"hash": "h"}, pa.schema([("h", type_)])) == {"hash": "h"}


@pytest.mark.parametrize("algorithm", ["sha256", "seam"])
@pytest.mark.parametrize("hash_format", ["sha256_binary", "sha256_base64", "sha256_hex"])
@pytest.mark.parametrize("type_", BINARY_TYPES, ids=str)
def test_preparer_sends_binary_digests_in_the_wire_format(
    algorithm: str, hash_format: str, type_: pa.DataType
) -> None:
    good = [digest(i, algorithm) for i in range(6)]
    column = binary_array(good, type_)
    preparer = KeyPreparer({"hash": "h"}, hash_format=hash_format, algorithm=algorithm)
    prepared, rejects = preparer.prepare(pa.record_batch([column], names=["h"]), 10)
    assert len(rejects) == 0
    assert prepared.hashes == [wire(d, algorithm) for d in good]
    assert (
        prepared.hashes
        == hashes.encode(hashes.digests(column, hash_format), preparer.wire_format).to_pylist()
    )
    assert [bytes(r) for r in prepared.digests] == good
    assert prepared.rows.tolist() == list(range(10, 16))
    assert prepared.keys == [f'{{"hash":"{wire(d, algorithm)}"}}'.encode() for d in good]


@pytest.mark.parametrize("type_", [pa.binary(), pa.large_binary(), pa.binary_view()], ids=str)
@pytest.mark.parametrize("mapped", [False, True], ids=["hash only", "with a name"])
def test_wrong_lengths_and_nulls_fail_alone_shown_as_hex(type_: pa.DataType, mapped: bool) -> None:
    values = [
        DIGESTS[0],
        b"\x01" * 20,
        None,
        DIGESTS[1],
        b"",
        DIGESTS[2] + b"\x00",
        DIGESTS[3].hex().encode(),  # hex text kept in a VARBINARY(64)
        base64.b64encode(DIGESTS[4]),
        DIGESTS[5],
    ]
    columns = [binary_array(values, type_)]
    names = ["h"]
    if mapped:
        columns.append(pa.array(["a", "b", "c", "", "e", "f", "g", "h", "i"]))  # row 3: an empty name
        names.append("n")
    mapping = {"hash": "h", "name": "n"} if mapped else {"hash": "h"}
    prepared, rejects = KeyPreparer(mapping, hash_format="sha256_binary").prepare(
        pa.record_batch(columns, names=names), 100
    )
    expected = {
        101: ("01" * 20, "hash: is 20 bytes, a SHA-256 digest is 32"),
        102: (None, "hash: is missing"),
        104: ("", "hash: is missing"),
        105: (DIGESTS[2].hex() + "00", "hash: is 33 bytes, a SHA-256 digest is 32"),
        106: (
            DIGESTS[3].hex().encode().hex(),
            "hash: is 64 bytes, a SHA-256 digest is 32 (they are hex text: read the column as text, "
            "with hash_format='sha256_hex')",
        ),
        107: (
            base64.b64encode(DIGESTS[4]).hex(),
            "hash: is 44 bytes, a SHA-256 digest is 32 (they are base64 text: read the column as "
            "text, with hash_format='sha256_base64')",
        ),
    }
    if mapped:
        expected[103] = (DIGESTS[1].hex(), "name: must be at least 1 characters long")
    got = {
        row: (h, detail) for row, h, detail in zip(rejects.rows, rejects.hashes, rejects.details, strict=True)
    }
    assert got == expected
    kept = [0, 8] if mapped else [0, 3, 8]
    assert prepared.rows.tolist() == [100 + i for i in kept]
    assert prepared.hashes == [wire(values[i]) for i in kept]  # type: ignore[arg-type]


def test_a_text_column_declared_binary_fails_naming_the_setting_that_fits() -> None:
    column = pa.array([wire(DIGESTS[0]), DIGESTS[1].hex(), "nope", None])
    prepared, rejects = KeyPreparer({"hash": "h"}, hash_format="sha256_binary").prepare(
        pa.record_batch([column], names=["h"]), 0
    )
    assert len(prepared.rows) == 0
    assert rejects.hashes == column.to_pylist()
    assert rejects.details == [
        "hash: is base64 text, but hash_format is sha256_binary (raw 32-byte digests in a binary column); "
        "set hash_format='sha256_base64'",
        "hash: is hex text, but hash_format is sha256_binary (raw 32-byte digests in a binary column); "
        "set hash_format='sha256_hex'",
        "hash: is not a SHA-256 digest in sha256_binary (32 bytes in a binary column); got text of 4 characters",
        "hash: is missing",
    ]


def test_dictionary_encoded_binary_column() -> None:
    column = pa.array([DIGESTS[0], DIGESTS[1], DIGESTS[0], b"short"], pa.binary()).dictionary_encode()
    prepared, rejects = KeyPreparer({"hash": "h"}).prepare(pa.record_batch([column], names=["h"]), 0)
    assert prepared.hashes == [wire(DIGESTS[0]), wire(DIGESTS[1]), wire(DIGESTS[0])]
    assert (rejects.rows, rejects.hashes) == ([3], [b"short".hex()])


# --- whole runs against the emulator ------------------------------------------------------------------
@pytest.fixture(params=["sha256", "seam"])
def algorithm(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def emu(algorithm: str) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(
        root_key=ROOT, api_id=API, migration_id=MIGRATION, algorithm=algorithm
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: UnkeyEmulator) -> Iterator[UnkeyClient]:
    c = UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4)
    yield c
    c.close()


def source_rows(algorithm: str, n: int = 30, *, fixed: bool = False) -> tuple[list[bytes | None], list[str]]:
    """Digests of keys 0..n-1, with row 5 a 20-byte value (null in a column of ``fixed`` 32 bytes,
    which holds no other length), row 9 null and row 12 repeating row 3."""
    raw: list[bytes | None] = [digest(i, algorithm) for i in range(n)]
    raw[5] = None if fixed else b"\x05" * 20
    raw[9] = None
    raw[12] = raw[3]
    return raw, [f"key {i}" for i in range(n)]


def check_run(
    summary: MigrationSummary,
    emu: UnkeyEmulator,
    client: UnkeyClient,
    algorithm: str,
    raw: list[bytes | None],
) -> None:
    """The outcomes of :func:`source_rows`: wire text everywhere, hex for the invalid, keys that verify."""
    migrated = pq.read_table(summary.outputs["migrated"])
    failed = pq.read_table(summary.outputs["failed"])
    assert migrated.schema.field("hash").type in (pa.string(), pa.large_string())
    good = [i for i in range(len(raw)) if i not in (5, 9, 12)]
    assert summary.migrated == len(good) and summary.failed == 3
    assert sorted(migrated.column("source_row").to_pylist()) == good
    by_row = dict(
        zip(migrated.column("source_row").to_pylist(), migrated.column("hash").to_pylist(), strict=True)
    )
    assert by_row == {i: wire(digest(i, algorithm), algorithm) for i in good}
    assert set(emu.hash_counts) == set(by_row.values()) and set(emu.hash_counts.values()) == {1}
    failures = {r["source_row"]: (r["hash"], r["reason"], r["detail"]) for r in failed.to_pylist()}
    assert failures == {
        5: (None, "invalid", "hash: is missing")
        if raw[5] is None
        else ("05" * 20, "invalid", "hash: is 20 bytes, a SHA-256 digest is 32"),
        9: (None, "invalid", "hash: is missing"),
        12: (
            wire(digest(3, algorithm), algorithm),
            "duplicate_in_source",
            "hash: the same hash as source row 3",
        ),
    }
    # The emulator checks hashes: each key verifies by its plaintext, under the migration's algorithm.
    for i in (0, 3, len(raw) - 1):
        result = client.verify_key(plaintext(i), migration_id=MIGRATION)
        assert result.valid and result.code == "VALID", (i, result)
        assert (
            result.key_id
            == migrated.filter(pc.equal(migrated.column("source_row"), i)).column("key_id")[0].as_py()
        )
    assert client.verify_key(plaintext(5), migration_id=MIGRATION).code == "NOT_FOUND"


def config(algorithm: str, **kwargs: Any) -> MigrationConfig:
    return MigrationConfig(
        MIGRATION,
        API,
        column_mapping={"hash": "digest", "name": "name"},
        algorithm=algorithm,
        batch_size=7,
        max_concurrency=2,
        retry=FAST,
        **kwargs,
    )


@pytest.mark.parametrize("type_", [pa.binary(), pa.binary(32)], ids=str)
def test_run_from_parquet_with_a_ledger(
    emu: UnkeyEmulator, client: UnkeyClient, algorithm: str, type_: pa.DataType, tmp_path: Path
) -> None:
    raw, names = source_rows(algorithm, fixed=pa.types.is_fixed_size_binary(type_))
    table = pa.table({"digest": binary_array(raw, type_), "name": names})
    pq.write_table(table, tmp_path / "keys.parquet", row_group_size=8)
    source = ParquetSource(tmp_path / "keys.parquet", batch_rows=8)
    assert source.schema.field("digest").type == type_
    ledger_dir = tmp_path / "ledger"
    summary = run_migration(
        iter(source),
        client,
        config(algorithm, hash_format="sha256_binary"),
        tmp_path / "out",
        ledger=LedgerWriter(ledger_dir, TRY1, migration_id=MIGRATION, api_id=API),
        known=KnownHashes.load(ledger_dir, TRY1, hashes.wire_format(algorithm)),
    )
    check_run(summary, emu, client, algorithm, raw)
    # The ledger holds the wire text: a second run over the same source sends nothing new.
    ledger = read_ledger(ledger_dir)
    migrated_hashes = set(pq.read_table(summary.outputs["migrated"]).column("hash").to_pylist())
    assert migrated_hashes <= set(ledger.column("hash").to_pylist())
    again = run_migration(
        iter(source),
        client,
        config(algorithm),  # the default hash_format: the column's type decides
        tmp_path / "again",
        known=KnownHashes.load(
            ledger_dir, LedgerScope("dag", "run_2", "migrate", -1, 1), hashes.wire_format(algorithm)
        ),
    )
    assert again.migrated == 0 and again.skipped == summary.migrated


def test_run_from_postgres_bytea(
    emu: UnkeyEmulator, client: UnkeyClient, algorithm: str, postgres_dsn: str, tmp_path: Path
) -> None:
    raw, names = source_rows(algorithm)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE keys (id integer PRIMARY KEY, digest bytea, name text)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO keys VALUES (%s, %s, %s)", list(zip(range(len(raw)), raw, names, strict=True))
            )
    source = SqlSource(lambda: psycopg.connect(postgres_dsn), "SELECT * FROM keys ORDER BY id", batch_rows=8)
    summary = run_migration(iter(source), client, config(algorithm), tmp_path)
    assert source.schema is not None and source.schema.field("digest").type == pa.binary()
    check_run(summary, emu, client, algorithm, raw)


@pytest.mark.parametrize("driver", databases.MYSQL_DRIVERS)
def test_run_from_mysql_binary_32(
    emu: UnkeyEmulator,
    client: UnkeyClient,
    algorithm: str,
    mysql_database: MySqlDatabase,
    driver: str,
    tmp_path: Path,
) -> None:
    # BINARY(32) pads a shorter value with zero bytes: row 5 is null instead (see source_rows).
    raw, names = source_rows(algorithm, fixed=True)
    conn = mysql_database.connect("pymysql", autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE `keys` (id INT PRIMARY KEY, digest BINARY(32), name VARCHAR(64))")
        cursor.executemany(
            "INSERT INTO `keys` VALUES (%s, %s, %s)", list(zip(range(len(raw)), raw, names, strict=True))
        )
    conn.close()
    source = SqlSource(
        lambda: mysql_database.connect(driver), "SELECT * FROM `keys` ORDER BY id", batch_rows=8
    )
    summary = run_migration(iter(source), client, config(algorithm, hash_format="sha256_binary"), tmp_path)
    assert source.schema is not None and pa.types.is_binary(source.schema.field("digest").type)
    check_run(summary, emu, client, algorithm, raw)
