"""Binary hash columns: raw 32-byte SHA-256 digests (``BYTEA``, ``BINARY(32)``, Arrow binary types).

A binary column is read as raw digests whatever ``hash_format`` says (``sha256_binary`` says so
explicitly) and goes on the wire as the migration's algorithm wants. Checked from the hash codec up:
the preparer, whole runs from Parquet and from PostgreSQL and MariaDB/MySQL against the emulator (with
the migrated keys verified by their plaintext), and partitions by hash.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import MigrationConfig, MigrationSummary, run_migration
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter, read_ledger
from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.migration.prepare.mapping import resolve_mapping
from airflow_provider_unkey.migration.prepare.preparer import KeyPreparer
from airflow_provider_unkey.migration.read import ParquetSource, SqlSource
from airflow_provider_unkey.migration.read.hash_partition import (
    first_characters,
    hash_partition_mask,
    parquet_hash_partitions,
    sql_partitions,
)
from airflow_provider_unkey.operators import io
from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases
from tests.databases import MySqlDatabase, register_connection
from tests.migration.test_engine import API, FAST, MIGRATION, ROOT

postgres_dsn = databases.postgres_dsn
mysql_database = databases.mysql_database
sqlite_path = databases.sqlite_path

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


@pytest.mark.postgres
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


@pytest.mark.mysql
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


# --- partitions by hash --------------------------------------------------------------------------------
#: Digests with every first byte, repeats (which must meet their first), and rows of no digest.
PART_DIGESTS: list[bytes | None] = [hashlib.sha256(str(i).encode()).digest() for i in range(1200)]
PART_DIGESTS += [bytes([b]) + b"\x00" * 31 for b in range(256)]
PART_DIGESTS += PART_DIGESTS[:300:7]
PART_DIGESTS += [None, b"", b"\x00", b"\xff" * 5]


def check_partitions(owners: dict[int, list[int]], values: Sequence[bytes | None], count: int) -> None:
    """Every row in exactly one of ``count`` partitions; equal values in one; balanced for few partitions."""
    assert sorted(owners) == list(range(len(values)))
    assert all(len(o) == 1 for o in owners.values()), "every row in exactly one partition"
    where: dict[bytes, int] = {}
    for row, (k,) in owners.items():
        value = values[row]
        if value is not None:
            assert where.setdefault(value, k) == k, f"{value.hex()} in partitions {where[value]} and {k}"
    assert owners[values.index(None)] == [count - 1]  # no digest: the last partition
    sizes = Counter(k for (k,) in owners.values())
    assert set(sizes) == set(range(count)), "no partition is empty"
    if count <= 5:
        ideal = len(values) / count
        assert max(sizes.values()) < 1.3 * ideal and min(sizes.values()) > 0.7 * ideal, sizes


@pytest.mark.parametrize("type_", BINARY_TYPES[:3], ids=str)
@pytest.mark.parametrize("hash_format", ["sha256_binary", "sha256_base64", "sha256_hex"])
@pytest.mark.parametrize("n", [1, 2, 5, 16, 38, 300])
def test_hash_partition_masks_of_a_binary_column(type_: pa.DataType, hash_format: str, n: int) -> None:
    """Dealt by the first byte whatever hash_format says; its partition count comes from hash_format."""
    count = len(first_characters(n, hash_format)[0])
    column = binary_array(PART_DIGESTS, type_)
    masks = [np.asarray(hash_partition_mask(column, i, count, hash_format)) for i in range(count)]
    owners = {row: [i for i in range(count) if masks[i][row]] for row in range(len(PART_DIGESTS))}
    check_partitions(owners, PART_DIGESTS, count)
    # The same digests in a fixed_size_binary(32) or dictionary column fall in the same partitions.
    digests_only = [(row, v) for row, v in enumerate(PART_DIGESTS) if v is not None and len(v) == 32]
    fixed = pa.array([v for _, v in digests_only], pa.binary(32))
    encoded = fixed.cast(pa.binary()).dictionary_encode()
    for other in (fixed, encoded):
        for i in range(count):
            got = np.asarray(hash_partition_mask(other, i, count, hash_format))
            assert got.tolist() == [bool(masks[i][row]) for row, _ in digests_only]


def test_first_bytes_are_dealt_as_uppercase_hex() -> None:
    chars, every = first_characters(3, "sha256_binary")
    assert every == [f"{b:02X}" for b in range(256)]
    assert sorted(c for part in chars for c in part) == every
    assert sorted(len(part) for part in chars) == [85, 85, 86]
    assert len(first_characters(1000, "sha256_binary")[0]) == 256


def test_a_text_column_declared_binary_is_partitioned_by_its_first_byte() -> None:
    values = [wire(d) for d in DIGESTS] + [DIGESTS[0].hex(), None, "", wire(DIGESTS[0])]
    column = pa.array(values)
    count = len(first_characters(4, "sha256_binary")[0])
    masks = [hash_partition_mask(column, i, count, "sha256_binary").to_pylist() for i in range(count)]
    owners = [[i for i in range(count) if masks[i][row]] for row in range(len(values))]
    assert all(len(o) == 1 for o in owners)
    assert owners[-1] == owners[0] and owners[-3] == owners[-2] == [count - 1]


def test_parquet_hash_partitions_of_a_binary_column(tmp_path: Path) -> None:
    """As mapped tasks read them: the whole file each, filtered by the partition's mask."""
    pq.write_table(
        pa.table({"id": range(len(PART_DIGESTS)), "digest": pa.array(PART_DIGESTS, pa.binary())}),
        tmp_path / "keys.parquet",
        row_group_size=200,
    )
    partitions = parquet_hash_partitions(
        tmp_path / "keys.parquet", 4, hash_column="digest", hash_format="sha256_binary"
    )
    assert len(partitions) == 4
    owners: dict[int, list[int]] = {}
    for k, part in enumerate(partitions):
        spec = part["partition"]
        assert (spec["index"], spec["count"], spec["hash_format"]) == (k, 4, "sha256_binary")
        for batch in ParquetSource(part["parquet_path"], batch_rows=300):
            mine = batch.filter(hash_partition_mask(batch.column("digest"), k, 4, spec["hash_format"]))
            for row in mine.column("id").to_pylist():
                owners.setdefault(row, []).append(k)
    check_partitions(owners, PART_DIGESTS, 4)


def test_sql_partitions_of_a_binary_column_by_dialect() -> None:
    expressions = {
        "postgresql": "UPPER(ENCODE(SUBSTRING(\"d\" FROM 1 FOR 1), 'hex'))",
        "postgres": "UPPER(ENCODE(SUBSTRING(\"d\" FROM 1 FOR 1), 'hex'))",
        "mysql": "HEX(SUBSTRING(`d`, 1, 1))",
        "mariadb": "HEX(SUBSTRING(`d`, 1, 1))",
        "sqlite": 'HEX(SUBSTR("d", 1, 1))',
    }
    for dialect, first in expressions.items():
        parts = sql_partitions("SELECT * FROM t", "d", 2, hash_format="sha256_binary", dialect=dialect)
        assert len(parts) == 2
        assert parts[0]["sql"].startswith(f"SELECT * FROM (SELECT * FROM t) AS unkey_src WHERE {first} IN ('")
        assert f" OR {first} NOT IN (" in parts[1]["sql"]
    for unsupported in (None, "mssql", "snowflake"):
        with pytest.raises(ValueError, match=r"binary hash column .* postgresql, mysql, mariadb or sqlite"):
            sql_partitions("SELECT * FROM t", "d", 2, hash_format="sha256_binary", dialect=unsupported)


def sql_owners(partitions: list[dict[str, str]], run: Callable[[str], list[int]]) -> dict[int, list[int]]:
    owners: dict[int, list[int]] = {}
    for k, part in enumerate(partitions):
        for row in run(part["sql"]):
            owners.setdefault(row, []).append(k)
    return owners


def sql_ids(connect: Callable[[], Any]) -> Callable[[str], list[int]]:
    def run(sql: str) -> list[int]:
        return [
            row for batch in SqlSource(connect, sql, batch_rows=500) for row in batch.column("id").to_pylist()
        ]

    return run


@pytest.mark.parametrize("n", [1, 3, 256])
def test_sql_partitions_of_a_sqlite_blob(sqlite_path: Path, n: int) -> None:
    conn = sqlite3.connect(sqlite_path)
    conn.execute("CREATE TABLE keys (id INTEGER, digest BLOB)")
    conn.executemany("INSERT INTO keys VALUES (?, ?)", list(enumerate(PART_DIGESTS)))
    conn.commit()
    conn.close()
    partitions = sql_partitions(
        "SELECT id, digest FROM keys", "digest", n, hash_format="sha256_binary", dialect="sqlite"
    )
    assert len(partitions) == n
    check_partitions(sql_owners(partitions, sql_ids(lambda: sqlite3.connect(sqlite_path))), PART_DIGESTS, n)


@pytest.mark.postgres
def test_sql_partitions_of_a_postgres_bytea(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(postgres_dsn) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE keys (id integer, digest bytea)")
        cursor.executemany("INSERT INTO keys VALUES (%s, %s)", list(enumerate(PART_DIGESTS)))
    run = sql_ids(lambda: psycopg.connect(postgres_dsn))
    for n in (1, 4, 256):
        partitions = sql_partitions(
            "SELECT id, digest FROM keys", "digest", n, hash_format="sha256_binary", dialect="postgresql"
        )
        check_partitions(sql_owners(partitions, run), PART_DIGESTS, n)
    # Through an Airflow connection, whose hook names the dialect.
    conn_id = register_connection(monkeypatch, "unkey_binary_pg", postgres_dsn)
    partitions = io.sql_partitions(
        "SELECT id, digest FROM keys", conn_id, "digest", 3, hash_format="sha256_binary"
    )
    assert "ENCODE(SUBSTRING" in partitions[0]["sql"]
    check_partitions(sql_owners(partitions, run), PART_DIGESTS, 3)


@pytest.mark.mysql
def test_sql_partitions_of_a_mysql_varbinary(mysql_database: MySqlDatabase) -> None:
    conn = mysql_database.connect("pymysql", autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE `keys` (id INT, digest VARBINARY(32))")
        cursor.executemany("INSERT INTO `keys` VALUES (%s, %s)", list(enumerate(PART_DIGESTS)))
    conn.close()
    run = sql_ids(lambda: mysql_database.connect("mysql-connector-python"))
    for n in (1, 5, 256):
        partitions = sql_partitions(
            "SELECT id, digest FROM `keys`", "digest", n, hash_format="sha256_binary", dialect="mysql"
        )
        check_partitions(sql_owners(partitions, run), PART_DIGESTS, n)


def test_a_sqlite_blob_column_null_in_its_first_chunk(tmp_path: Path) -> None:
    """The limit docs/operator.md states for drivers that type a column by its first chunk, and its fixes."""
    path = tmp_path / "keys.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE keys (id integer PRIMARY KEY, h blob)")
        conn.executemany(
            "INSERT INTO keys VALUES (?, ?)", [(i, None if i < 3 else digest(i)) for i in range(10)]
        )

    def prepare(sql: str, hash_format: str) -> tuple[list[str], list[str]]:
        source = SqlSource(lambda: sqlite3.connect(path), sql, batch_rows=3)
        preparer = KeyPreparer({"hash": "h"}, hash_format=hash_format)
        sent: list[str] = []
        details: list[str] = []
        row = 0
        for batch in source:
            prepared, rejects = preparer.prepare(batch, row)
            row += batch.num_rows
            sent += prepared.hashes
            details += rejects.details
        return sent, details

    # The first chunk is all NULL: the column is text, the later digests hex text, named as such.
    sent, details = prepare("SELECT h FROM keys ORDER BY id", "sha256_binary")
    assert sent == [] and len(details) == 10
    assert all("sha256_hex" in d for d in details[3:]), details
    # The fixes the docs give: keep the NULLs out of the first rows, or read the column as hex.
    expected = [wire(digest(i)) for i in range(3, 10)]
    assert prepare("SELECT h FROM keys WHERE h IS NOT NULL ORDER BY id", "sha256_binary")[0] == expected
    assert prepare("SELECT h FROM keys ORDER BY h IS NULL, id", "sha256_binary")[0] == expected
    assert prepare("SELECT HEX(h) AS h FROM keys ORDER BY id", "sha256_hex")[0] == expected
