"""Partitions: together exactly the source, a hash in one partition only, Parquet balanced by rows."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.migration.read import ParquetSource, SqlSource
from airflow_provider_unkey.migration.read.hash_partition import (
    parquet_hash_partitions,
    quote_identifier,
    sql_partitions,
)
from airflow_provider_unkey.migration.read.partition import check_partition, parquet_partitions
from airflow_provider_unkey.operators import io
from tests import databases
from tests.databases import MYSQL_DRIVERS, MySqlDatabase, register_connection, sqlite_uri

postgres_dsn = databases.postgres_dsn
mysql_database = databases.mysql_database
sqlite_path = databases.sqlite_path

# --- Parquet ------------------------------------------------------------------------------------------

#: (folder, file, rows, row group size): files and row groups of uneven sizes, one file without rows.
FILES = [
    ("tenant=a", "part-0.parquet", 100, 10),
    ("tenant=a", "part-1.parquet", 37, 8),
    ("tenant=a", "part-2.parquet", 5, 5),
    ("tenant=b", "part-0.parquet", 250, 20),
    ("tenant=b", "part-1.parquet", 0, 10),
    ("tenant=c", "part-0.parquet", 64, 64),
    ("tenant=c", "part-1.parquet", 71, 9),
]
TOTAL = sum(f[2] for f in FILES)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "keys"
    start = 0
    for folder, name, rows, group in FILES:
        (root / folder).mkdir(parents=True, exist_ok=True)
        table = pa.table({"id": pa.array(range(start, start + rows), pa.int64())})
        pq.write_table(table, root / folder / name, row_group_size=group)
        start += rows
    return root


def _read_partitions(partitions: list[dict[str, Any]]) -> list[pa.Table]:
    """Read every partition as a mapped task would: from the dict alone, after a trip through JSON."""
    tables = []
    for kwargs in json.loads(json.dumps(partitions)):  # XCom carries them as JSON
        spec = check_partition(kwargs["partition"])
        row_groups = spec["row_groups"] if spec is not None else None
        source = io.parquet_source(kwargs["parquet_path"], row_groups=row_groups)
        table = pa.Table.from_batches(list(source), schema=source.schema)
        assert source.count_rows() == table.num_rows
        tables.append(table)
    return tables


@pytest.mark.parametrize("by", ["files", "row_groups", "auto"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 100])
def test_parquet_partitions_are_exactly_the_source(dataset: Path, by: Any, n: int) -> None:
    uri = f"file://{dataset}"
    partitions = io.parquet_partitions(uri, n, by=by)
    assert 1 <= len(partitions) <= n
    assert all(set(p) == {"parquet_path", "partition"} for p in partitions)
    assert all(p["partition"]["by"] == "row_groups" for p in partitions)
    assert all(p["parquet_path"] == uri for p in partitions)
    tables = _read_partitions(partitions)
    ids = Counter(i for t in tables for i in t.column("id").to_pylist())
    assert set(ids) == set(range(TOTAL)) and set(ids.values()) == {1}
    # The hive column is there in every partition, with the same schema.
    assert {t.schema for t in tables} == {ParquetSource(dataset).schema}

    sizes = [t.num_rows for t in tables]
    ideal = TOTAL / len(sizes)
    largest_group = max(min(rows, group) for _, _, rows, group in FILES)
    largest_file = max(rows for _, _, rows, _ in FILES)
    if by == "row_groups" and n <= 31:  # 31 row groups: beyond that some partitions stay empty
        assert len(sizes) == n
        assert max(sizes) - ideal <= largest_group and ideal - min(sizes) <= largest_group
    if by == "files":
        assert max(sizes) <= TOTAL / min(n, 6) + largest_file  # greedy by size: at most one file over
        assert len({p for part in partitions for p in part["partition"]["row_groups"]}) == 6
        for part in partitions:  # whole files only
            for path, groups in part["partition"]["row_groups"].items():
                assert groups == list(range(pq.ParquetFile(path).num_row_groups))


def test_parquet_partitions_balance(dataset: Path) -> None:
    source = ParquetSource(dataset)
    by_groups = [
        sum(
            pq.ParquetFile(p).metadata.row_group(g).num_rows
            for p, gs in part["partition"]["row_groups"].items()
            for g in gs
        )
        for part in parquet_partitions(source, 4, by="row_groups")
    ]
    assert sum(by_groups) == TOTAL
    assert max(by_groups) - min(by_groups) <= 2 * 20  # within a row group of the even share
    # Four partitions of whole files cannot be even (one file holds 250 of 527 rows): auto cuts row groups.
    auto = parquet_partitions(source, 4, by="auto")
    assert auto == parquet_partitions(source, 4, by="row_groups")
    # Two partitions of whole files can: 250 + 5 + 0 vs 100 + 37 + 64 + 71.
    assert parquet_partitions(source, 2, by="auto") == parquet_partitions(source, 2, by="files")


def test_parquet_partitions_of_a_glob_and_of_a_list(dataset: Path) -> None:
    glob = f"{dataset}/tenant=[ac]/*.parquet"
    partitions = io.parquet_partitions(glob, 3, by="row_groups")
    assert all(p["parquet_path"] == glob for p in partitions)
    ids = [i for t in _read_partitions(partitions) for i in t.column("id").to_pylist()]
    expected = ParquetSource(glob).count_rows()
    assert len(ids) == len(set(ids)) == expected == TOTAL - 250

    files = [str(p) for p in sorted(dataset.rglob("part-1.parquet"))]
    partitions = io.parquet_partitions(files, 2)
    assert all(p["parquet_path"] == files for p in partitions)
    assert sum(t.num_rows for t in _read_partitions(partitions)) == 37 + 71


def test_parquet_partitions_of_an_empty_source(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    partitions = io.parquet_partitions(tmp_path / "empty.parquet", 4)
    assert partitions == [{"parquet_path": str(tmp_path / "empty.parquet"), "partition": None}]
    assert _read_partitions(partitions)[0].num_rows == 0


def test_hash_partitions_name_their_share() -> None:
    partitions = parquet_hash_partitions(
        "keys/*.parquet", 3, hash_column="key_hash", hash_format="sha256_hex"
    )
    assert [p["partition"] for p in partitions] == [
        {"by": "hash", "index": i, "count": 3, "column": "key_hash", "hash_format": "sha256_hex"}
        for i in range(3)
    ]
    assert all(check_partition(p["partition"]) == p["partition"] for p in partitions)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1], "partition must be a dict"),
        ({"row_groups": {}}, "by 'row_groups' or by 'hash', got by=None"),
        ({"by": "row_groups"}, '"row_groups": {file: [index, ...]}}, got'),
        (
            {"by": "row_groups", "row_groups": {"a.parquet": [0, -1]}},
            "row_groups['a.parquet'] must be a list",
        ),
        ({"by": "hash", "index": 0}, '{"by": "hash", "index": i, "count": n'),
        ({"by": "hash", "index": 3, "count": 3}, "0 <= index < count, got 3 of 3"),
        ({"by": "hash", "index": 0, "count": 2, "columns": "h"}, "got {"),
    ],
)
def test_a_malformed_partition_is_named(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_partition(spec)
    assert message in str(info.value)


# --- SQL ----------------------------------------------------------------------------------------------


def _b64(i: int) -> str:
    return base64.b64encode(hashlib.sha256(str(i).encode()).digest()).decode()


def _hex(i: int) -> str:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return digest.upper() if i % 3 == 0 else digest  # both cases, as sources hold them


ODD = [None, None, "", " leading space", "é-accent", "-dash", "=", "%percent", "'quote", "Ω"]


def _hash_rows(hash_of: Any) -> list[tuple[int, str | None]]:
    hashes: list[str | None] = [hash_of(i) for i in range(1500)]
    hashes += [hash_of(i) for i in range(0, 1500, 7)]  # duplicates, which must stay together
    hashes += ODD
    return list(enumerate(hashes))


def _check_sql_partitions(
    partitions: list[dict[str, str]], run: Any, rows: list[tuple[int, str | None]], n: int, groups: int
) -> None:
    assert len(partitions) == min(n, groups)
    seen_ids: Counter[int] = Counter()
    owner: dict[str | None, int] = {}
    sizes = []
    for k, part in enumerate(partitions):
        got = run(part["sql"])
        sizes.append(len(got))
        for row_id, value in got:
            seen_ids[row_id] += 1
            if value is not None:
                assert owner.setdefault(value, k) == k, f"hash {value!r} in partitions {owner[value]} and {k}"
    assert seen_ids == Counter(row_id for row_id, _ in rows)  # every row exactly once
    assert {r for r, v in rows if v is None} <= set(seen_ids)
    if 1 < len(partitions) <= 5:  # beyond, 38 groups of unequal weight cannot be dealt evenly
        ideal = len(rows) / len(partitions)
        assert max(sizes) < 1.5 * ideal and min(sizes) > 0.5 * ideal, sizes


def _sqlite_table(path: Path, rows: list[tuple[int, str | None]], column: str = "hash") -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE keys (id INTEGER, {quote_identifier(column)} TEXT)")
    conn.executemany("INSERT INTO keys VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def _run_sqlite(path: Path) -> Any:
    def run(sql: str) -> list[tuple[Any, ...]]:
        batches = list(SqlSource(lambda: sqlite3.connect(path), sql, batch_rows=500))
        return [tuple(r.values()) for b in batches for r in b.to_pylist()]

    return run


@pytest.mark.parametrize(
    ("hash_format", "hash_of", "groups"), [("sha256_base64", _b64, 38), ("sha256_hex", _hex, 16)]
)
@pytest.mark.parametrize("n", [1, 2, 5, 16, 38, 64])
def test_sql_partitions_on_sqlite(
    sqlite_path: Path, hash_format: str, hash_of: Any, groups: int, n: int
) -> None:
    rows = _hash_rows(hash_of)
    _sqlite_table(sqlite_path, rows)
    partitions = sql_partitions(
        "SELECT id, hash FROM keys;", "hash", n, hash_format=hash_format, dialect="sqlite"
    )
    assert all(
        p["sql"].startswith("SELECT * FROM (SELECT id, hash FROM keys) AS unkey_src WHERE ")
        for p in partitions
    )
    _check_sql_partitions(partitions, _run_sqlite(sqlite_path), rows, n, groups)


def test_sql_partitions_keep_both_cases_of_a_hex_digit_together() -> None:
    for part in sql_partitions("SELECT 1", "h", 16, hash_format="sha256_hex"):
        where = part["sql"].split(" OR ")[0]
        for digit in "abcdef":
            assert (f"'{digit}'" in where) == (f"'{digit.upper()}'" in where)


def test_sql_partitions_quote_the_column(sqlite_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    column = 'key "hash"'
    rows = _hash_rows(_b64)
    _sqlite_table(sqlite_path, rows, column)
    conn_id = register_connection(monkeypatch, "unkey_part_sqlite", sqlite_uri(sqlite_path))
    partitions = io.sql_partitions("SELECT * FROM keys", conn_id, column, 3)
    assert '"key ""hash"""' in partitions[0]["sql"]
    _check_sql_partitions(partitions, _run_sqlite(sqlite_path), rows, 3, 38)
    assert quote_identifier("we`ird", "mysql") == "`we``ird`"
    with pytest.raises(ValueError, match="not a column name"):
        quote_identifier("")


def test_sql_partitions_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        sql_partitions("SELECT 1", "h", 0)
    with pytest.raises(ValueError, match="hash_format"):
        sql_partitions("SELECT 1", "h", 2, hash_format="md5")
    with pytest.raises(ValueError, match="empty"):
        sql_partitions(" ; ", "h", 2)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("hash_format", "hash_of", "groups"), [("sha256_base64", _b64, 38), ("sha256_hex", _hex, 16)]
)
def test_sql_partitions_on_postgres(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, hash_format: str, hash_of: Any, groups: int
) -> None:
    rows = _hash_rows(hash_of)
    with psycopg.connect(postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE keys (id integer, hash text)")
        cur.executemany("INSERT INTO keys VALUES (%s, %s)", rows)
    conn_id = register_connection(monkeypatch, "unkey_part_pg", postgres_dsn)

    def run(sql: str) -> list[tuple[Any, ...]]:
        source = io.sql_source(sql, conn_id, (-1,), batch_rows=400)
        return [tuple(r.values()) for b in source for r in b.to_pylist()]

    for n in (1, 4, 38):
        partitions = io.sql_partitions(
            "SELECT id, hash FROM keys WHERE id > %s", conn_id, "hash", n, hash_format=hash_format
        )
        _check_sql_partitions(partitions, run, rows, n, groups)


@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
@pytest.mark.parametrize(
    ("hash_format", "hash_of", "groups"), [("sha256_base64", _b64, 38), ("sha256_hex", _hex, 16)]
)
def test_sql_partitions_on_mysql_with_a_case_insensitive_collation(
    mysql_database: MySqlDatabase, driver: str, hash_format: str, hash_of: Any, groups: int
) -> None:
    """MySQL compares text without case by default: 'a' and 'A' must still land in one partition each."""
    rows = _hash_rows(hash_of)
    conn = mysql_database.connect(driver)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "CREATE TABLE `key table` (id INT, `the hash` VARCHAR(100)) COLLATE utf8mb4_general_ci"
        )
        cursor.executemany("INSERT INTO `key table` VALUES (%s, %s)", rows)
        conn.commit()
        cursor.close()
    finally:
        conn.close()

    def run(sql: str) -> list[tuple[Any, ...]]:
        # Streamed as the operator reads it: an unbuffered cursor, in chunks.
        source = SqlSource(lambda: mysql_database.connect(driver), sql, (-1,), batch_rows=400)
        return [tuple(r.values()) for b in source for r in b.to_pylist()]

    for n in (1, 5, groups):
        partitions = sql_partitions(
            "SELECT id, `the hash` FROM `key table` WHERE id > %s",
            "the hash",
            n,
            hash_format=hash_format,
            dialect="mysql",
        )
        assert "`the hash`" in partitions[-1]["sql"]
        _check_sql_partitions(partitions, run, rows, n, groups)


@pytest.mark.parametrize("hash_format", ["sha256_base64", "sha256_hex"])
@pytest.mark.parametrize("n", [1, 3, 4, 7, 40])
def test_hash_partition_masks_cover_every_row_once(hash_format: str, n: int) -> None:
    import base64
    import hashlib

    import pyarrow as pa

    from airflow_provider_unkey.migration.read.hash_partition import first_characters, hash_partition_mask

    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(500)]
    if hash_format == "sha256_base64":
        values: list[str | None] = [base64.b64encode(d).decode() for d in digests]
    else:
        values = [d.hex() if i % 2 else d.hex().upper() for i, d in enumerate(digests)]
    values += [None, "", "~odd", values[0], values[1]]  # odd rows and repeats
    hashes = pa.array(values, pa.string())
    count = len(first_characters(n, hash_format)[0])
    masks = [hash_partition_mask(hashes, i, count, hash_format).to_pylist() for i in range(count)]
    owners = [[i for i in range(count) if masks[i][row]] for row in range(len(values))]
    assert all(len(o) == 1 for o in owners), "every row in exactly one partition"
    assert owners[-5:-2] == [[count - 1]] * 3  # null, empty and odd rows go to the last one
    assert owners[-2] == owners[0] and owners[-1] == owners[1]  # a repeat meets its first
    if hash_format == "sha256_hex":
        # The same digest in either case falls in one partition.
        upper = pa.array([values[2].upper()])  # type: ignore[union-attr]
        lower = pa.array([values[2].lower()])  # type: ignore[union-attr]
        assert [hash_partition_mask(upper, i, count, hash_format)[0].as_py() for i in range(count)] == [
            hash_partition_mask(lower, i, count, hash_format)[0].as_py() for i in range(count)
        ]
    if count > 1:
        sizes = [sum(m[:500]) for m in masks]
        assert max(sizes) < 2.5 * 500 / count, sizes
