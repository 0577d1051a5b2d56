"""Sources: Parquet in every shape and on any storage, SQL streamed from SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fsspec
import psycopg
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach

from airflow_provider_unkey.migration.read import (
    ParquetSource,
    SchemaDriftError,
    SourceError,
    SqlSource,
    driver_family,
)
from airflow_provider_unkey.operators import io
from tests import databases
from tests.databases import MYSQL_DRIVERS, MySqlDatabase, register_connection, sqlite_uri

postgres_dsn = databases.postgres_dsn
mysql_database = databases.mysql_database
sqlite_path = databases.sqlite_path


# --- Parquet ------------------------------------------------------------------------------------------


def _table(start: int, rows: int) -> pa.Table:
    return pa.table(
        {
            "hash": [f"h{i:05d}" for i in range(start, start + rows)],
            "n": pa.array(range(start, start + rows), pa.int64()),
        }
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A hive-partitioned directory: tenant=a (2 files), tenant=b (1 file), a _SUCCESS marker; 50 rows."""
    root = tmp_path / "keys"
    (root / "tenant=a").mkdir(parents=True)
    (root / "tenant=b").mkdir()
    pq.write_table(_table(0, 20), root / "tenant=a" / "part-0.parquet", row_group_size=6)
    pq.write_table(_table(20, 10), root / "tenant=a" / "part-1.parquet", row_group_size=6)
    pq.write_table(_table(30, 20), root / "tenant=b" / "part-0.parquet", row_group_size=6)
    (root / "_SUCCESS").write_text("")
    return root


def _read(source: ParquetSource) -> pa.Table:
    return pa.Table.from_batches(list(source), schema=source.schema)


def test_parquet_file(dataset: Path) -> None:
    source = ParquetSource(dataset / "tenant=a" / "part-0.parquet", batch_rows=7)
    batches = list(source)
    assert [b.num_rows for b in batches] == [6, 6, 6, 2]  # batch_rows caps, row groups cut
    assert source.count_rows() == 20
    assert source.schema.names == ["hash", "n"]
    assert pa.Table.from_batches(batches).column("n").to_pylist() == list(range(20))


def test_parquet_directory_is_a_hive_dataset(dataset: Path) -> None:
    source = ParquetSource(dataset, batch_rows=1000)
    table = _read(source)
    assert source.schema.names == ["hash", "n", "tenant"]
    assert source.count_rows() == table.num_rows == 50
    assert sorted(table.column("n").to_pylist()) == list(range(50))
    by_tenant = {n: t for n, t in zip(table["n"].to_pylist(), table["tenant"].to_pylist(), strict=True)}
    assert by_tenant[0] == "a" and by_tenant[25] == "a" and by_tenant[45] == "b"
    assert len(source.files) == 3  # the _SUCCESS marker is not read


def test_parquet_glob_keeps_hive_columns_below_the_glob(dataset: Path) -> None:
    source = ParquetSource(str(dataset / "*" / "part-0.parquet"))
    table = _read(source)
    assert sorted(source.files) == sorted(str(p) for p in dataset.glob("*/part-0.parquet"))
    assert table.num_rows == source.count_rows() == 40
    assert set(table.column("tenant").to_pylist()) == {"a", "b"}


def test_parquet_list_of_files(dataset: Path) -> None:
    files = [dataset / "tenant=b" / "part-0.parquet", dataset / "tenant=a" / "part-1.parquet"]
    source = ParquetSource(files)
    table = _read(source)
    assert source.files == [str(f) for f in files]  # the order given
    assert table.column("n").to_pylist() == list(range(30, 50)) + list(range(20, 30))
    assert source.count_rows() == 30


def test_parquet_columns(dataset: Path) -> None:
    source = ParquetSource(dataset, columns=["hash"])
    assert source.schema.names == ["hash"]
    assert all(b.schema.names == ["hash"] for b in source)
    with pytest.raises(SourceError, match="no column"):
        ParquetSource(dataset, columns=["nope"])


def test_parquet_row_groups(dataset: Path) -> None:
    a0 = str(dataset / "tenant=a" / "part-0.parquet")
    b0 = str(dataset / "tenant=b" / "part-0.parquet")
    source = ParquetSource(dataset, row_groups={b0: [3], a0: [1, 3]})
    table = _read(source)
    # Rows 6-11 and 18-19 of part-0 of tenant a, then row 48-49 of tenant b: the source's order.
    assert table.column("n").to_pylist() == [*range(6, 12), 18, 19, 48, 49]
    assert table.column("tenant").to_pylist() == ["a"] * 8 + ["b"] * 2
    assert source.count_rows() == 10  # from the footers, limited to the row groups
    assert source.files == [a0, b0]
    with pytest.raises(SourceError, match="does not have"):
        ParquetSource(dataset, row_groups={str(dataset / "other.parquet"): [0]})
    with pytest.raises(SourceError, match="has 4 row groups"):
        ParquetSource(dataset, row_groups={a0: [4]})


def test_parquet_errors_name_what_is_wrong(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(SourceError, match=r"no files match"):
        ParquetSource(str(tmp_path / "nothing" / "*.parquet"))
    with pytest.raises(SourceError, match="does not exist"):
        ParquetSource(tmp_path / "missing.parquet")
    with pytest.raises(SourceError, match="is not a file"):
        ParquetSource([tmp_path / "missing.parquet"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no Parquet files"):
        ParquetSource(empty)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        ParquetSource(bad)
    # A corrupt file after a good one: found when counting and when reading, and named.
    (dataset / "tenant=b" / "zz-corrupt.parquet").write_bytes(b"PAR1 truncated")
    source = ParquetSource(dataset)
    with pytest.raises(SourceError, match=r"zz-corrupt\.parquet"):
        source.count_rows()
    with pytest.raises(SourceError, match=r"zz-corrupt\.parquet"):
        list(source)


def test_parquet_through_object_storage_uris(dataset: Path) -> None:
    expected = sorted(range(50))
    for given in (
        f"file://{dataset}",
        ObjectStoragePath(f"file://{dataset}"),
        str(dataset),
        f"file://{dataset}/*/part-*.parquet",
        [f"file://{f}" for f in sorted(dataset.glob("*/*.parquet"))],
    ):
        source = io.parquet_source(given, batch_rows=8)
        table = _read(source)
        assert sorted(table.column("n").to_pylist()) == expected, given
        assert source.count_rows() == 50
    with pytest.raises(ValueError, match="one storage"):
        io.parquet_source([f"file://{dataset}/tenant=a/part-0.parquet", "memory://x/part.parquet"])


@pytest.fixture
def memory_dataset(dataset: Path) -> Iterator[str]:
    """The dataset copied to fsspec's in-memory filesystem: storage that is not local.

    ``attach`` makes it an Airflow object store, as a provider does for ``s3://`` or ``gs://``.
    """
    fs = fsspec.filesystem("memory")
    attach("memory", fs=fs)
    root = f"/unkey-test-{uuid.uuid4().hex[:8]}"
    for path in dataset.rglob("*.parquet"):
        fs.pipe_file(f"{root}/{path.relative_to(dataset).as_posix()}", path.read_bytes())
    yield root
    fs.rm(root, recursive=True)


def test_parquet_on_fsspec_storage(memory_dataset: str) -> None:
    source = io.parquet_source(f"memory://{memory_dataset}", batch_rows=8)
    table = _read(source)
    assert source.schema.names == ["hash", "n", "tenant"]
    assert sorted(table.column("n").to_pylist()) == list(range(50))
    assert source.count_rows() == 50
    globbed = io.parquet_source(f"memory://{memory_dataset}/tenant=a/*.parquet")
    assert globbed.count_rows() == 30
    assert sorted(_read(globbed).column("n").to_pylist()) == list(range(30))


# --- SQL on SQLite ------------------------------------------------------------------------------------


class RecordingCursor(sqlite3.Cursor):
    """A real SQLite cursor that notes every fetch it is asked for."""

    fetches: list[tuple[str, int | None]]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self.connection.fetches.append(("fetchmany", size))  # type: ignore[attr-defined]
        return super().fetchmany(size) if size is not None else super().fetchmany()

    def fetchall(self) -> list[Any]:
        self.connection.fetches.append(("fetchall", None))  # type: ignore[attr-defined]
        return super().fetchall()


class RecordingConnection(sqlite3.Connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetches: list[tuple[str, int | None]] = []
        self.closed = False

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return super().cursor(RecordingCursor)

    def close(self) -> None:
        self.closed = True
        super().close()


def _recording(path: Path, opened: list[RecordingConnection]) -> Callable[[], RecordingConnection]:
    def connect() -> RecordingConnection:
        conn = sqlite3.connect(path, factory=RecordingConnection)
        # Anything reading the whole of an endless query would be interrupted after 5 seconds.
        deadline = time.monotonic() + 5
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        opened.append(conn)
        return conn

    return connect


@pytest.fixture
def keys_db(sqlite_path: Path) -> Path:
    conn = sqlite3.connect(sqlite_path)
    conn.execute("CREATE TABLE keys (hash TEXT, n INTEGER, flag INTEGER, meta TEXT, odd)")
    conn.executemany(
        "INSERT INTO keys VALUES (?, ?, ?, ?, ?)",
        [
            (f"h{i:04d}", i, i % 2, json.dumps({"i": i}), None if i < 10 else (i if i % 3 else f"t{i}"))
            for i in range(25)
        ],
    )
    conn.commit()
    conn.close()
    return sqlite_path


def test_sqlite_fetches_in_chunks_with_one_schema(keys_db: Path) -> None:
    opened: list[RecordingConnection] = []
    source = SqlSource(_recording(keys_db, opened), "SELECT * FROM keys ORDER BY n;", batch_rows=10)
    batches = list(source)
    assert [b.num_rows for b in batches] == [10, 10, 5]
    conn = opened[0]
    assert conn.fetches == [("fetchmany", 10)] * 3
    assert conn.closed
    # "odd" is NULL in the whole first chunk: text, and later ints and text are written as text.
    assert all(b.schema == source.schema for b in batches)
    assert source.schema is not None
    assert source.schema.field("odd").type == pa.string()
    assert source.schema.field("n").type == pa.int64()
    table = pa.Table.from_batches(batches)
    assert table.column("odd").to_pylist()[9:13] == [None, "10", "11", "t12"]
    assert table.column("n").to_pylist() == list(range(25))


def test_sqlite_stops_early_without_reading_everything(sqlite_path: Path) -> None:
    opened: list[RecordingConnection] = []
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS n FROM c"
    batches = iter(SqlSource(_recording(sqlite_path, opened), endless, batch_rows=1000))
    first, second = next(batches), next(batches)
    assert first.column("n").to_pylist()[0] == 1 and second.column("n").to_pylist()[-1] == 2000
    assert not opened[0].closed
    batches.close()  # type: ignore[attr-defined]
    assert opened[0].closed
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")


def test_sqlite_closes_on_errors(keys_db: Path) -> None:
    opened: list[RecordingConnection] = []
    with pytest.raises(sqlite3.OperationalError):
        list(SqlSource(_recording(keys_db, opened), "SELECT * FROM no_such_table"))
    assert opened[-1].closed
    with pytest.raises(SourceError, match="more than one column named"):
        list(SqlSource(_recording(keys_db, opened), "SELECT n, n FROM keys"))
    assert opened[-1].closed
    with pytest.raises(SourceError, match="no result set"):
        list(SqlSource(_recording(keys_db, opened), "UPDATE keys SET n = n"))
    assert opened[-1].closed


def test_sqlite_parameters_and_empty_results(keys_db: Path) -> None:
    source = SqlSource(lambda: sqlite3.connect(keys_db), "SELECT n FROM keys WHERE n >= ? ORDER BY n", (20,))
    assert pa.Table.from_batches(list(source)).column("n").to_pylist() == [20, 21, 22, 23, 24]
    assert list(SqlSource(lambda: sqlite3.connect(keys_db), "SELECT n FROM keys WHERE n < 0")) == []


def test_schema_drift_that_cannot_be_converted_is_a_clear_error(sqlite_path: Path) -> None:
    conn = sqlite3.connect(sqlite_path)
    conn.execute("CREATE TABLE t (i INTEGER, v)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i if i < 4 else "four") for i in range(6)])
    conn.commit()
    conn.close()
    with pytest.raises(SchemaDriftError, match=r"column 'v' became int64.*'four'.*CAST"):
        list(SqlSource(lambda: sqlite3.connect(sqlite_path), "SELECT * FROM t ORDER BY i", batch_rows=2))
    # Widening that loses nothing is done: integers into a float column.
    conn = sqlite3.connect(sqlite_path)
    conn.execute("UPDATE t SET v = i + 0.5 WHERE i < 2")
    conn.execute("UPDATE t SET v = i WHERE i >= 2")
    conn.commit()
    conn.close()
    batches = list(
        SqlSource(lambda: sqlite3.connect(sqlite_path), "SELECT * FROM t ORDER BY i", batch_rows=2)
    )
    assert {b.schema.field("v").type for b in batches} == {pa.float64()}
    assert pa.Table.from_batches(batches).column("v").to_pylist() == [0.5, 1.5, 2.0, 3.0, 4.0, 5.0]


def test_sql_source_through_an_airflow_sqlite_connection(
    keys_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = register_connection(monkeypatch, "unkey_sqlite_source", sqlite_uri(keys_db))
    source = io.sql_source("SELECT hash, n FROM keys ORDER BY n", conn_id, batch_rows=10)
    assert source.server_side_cursor == "none"
    table = pa.Table.from_batches(list(source))
    assert table.column("hash").to_pylist() == [f"h{i:04d}" for i in range(25)]


def test_sql_source_refuses_a_connection_that_is_not_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = register_connection(monkeypatch, "unkey_not_sql", "unkey://:unkey_root_x@api.unkey.com")
    with pytest.raises(TypeError, match=r"not an SQL hook"):
        io.sql_source("SELECT 1", conn_id)


def test_driver_family() -> None:
    conn = sqlite3.connect(":memory:")
    assert driver_family(conn) == "sqlite"
    conn.close()
    assert driver_family(object()) == "other"


# --- SQL on PostgreSQL --------------------------------------------------------------------------------

_TYPED_ROWS = 7


@pytest.fixture
def typed_pg(postgres_dsn: str) -> str:
    """A table with the types a key source has; some columns are NULL in the first rows only."""
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(
            """
            CREATE TABLE keys (
                id integer, big bigint, hash text, roles text[], counts integer[], meta jsonb,
                enabled boolean, credits numeric(12, 2), loose numeric, loose_late numeric,
                expires timestamptz, created timestamp, day date, ext uuid
            )
            """
        )
        conn.execute(
            """
            INSERT INTO keys
            SELECT g,
                   g::bigint * 10000000000,
                   'hash' || g,
                   CASE WHEN g > 3 THEN ARRAY['role' || g, 'admin'] END,
                   CASE WHEN g > 3 THEN ARRAY[g, g * 2] END,
                   CASE WHEN g > 3 THEN jsonb_build_object('g', g, 'tags', jsonb_build_array('x')) END,
                   CASE WHEN g > 3 THEN g %% 2 = 0 END,
                   CASE WHEN g > 3 THEN g * 1.25 END,
                   g * 1.5,
                   CASE WHEN g > 3 THEN g * 1.25 END,
                   CASE WHEN g > 3 THEN timestamptz '2030-01-01 00:00:00+00' + g * interval '1 day' END,
                   timestamp '2024-05-01 12:00:00' + g * interval '1 hour',
                   date '2024-01-01' + g,
                   CASE WHEN g > 3 THEN gen_random_uuid() END
            FROM generate_series(1, %s) AS g
            """,
            (_TYPED_ROWS,),
        )
    return postgres_dsn


def _check_typed(batches: list[pa.RecordBatch]) -> None:
    schema = batches[0].schema
    assert all(b.schema == schema for b in batches)
    types = {f.name: f.type for f in schema}
    assert types["id"] == pa.int64()
    assert types["big"] == pa.int64()
    assert types["roles"] == pa.list_(pa.string())
    assert types["counts"] == pa.list_(pa.int64())
    assert types["meta"] == pa.string()
    assert types["enabled"] == pa.bool_()
    assert types["credits"] == pa.decimal128(12, 2)
    assert pa.types.is_decimal(types["loose"])
    # numeric without a precision, NULL in the whole first chunk: nothing fixes a scale, so text.
    assert types["loose_late"] == pa.string()
    assert types["expires"] == pa.timestamp("us", tz="UTC")
    assert types["created"] == pa.timestamp("us")
    assert types["day"] == pa.date32()
    assert types["ext"] == pa.string()
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [r["id"] for r in rows] == list(range(1, _TYPED_ROWS + 1))
    first, last = rows[0], rows[-1]
    assert first["roles"] is None and first["meta"] is None and first["expires"] is None
    assert last["big"] == 70000000000
    assert last["roles"] == ["role7", "admin"]
    assert last["counts"] == [7, 14]
    assert json.loads(last["meta"]) == {"g": 7, "tags": ["x"]}
    assert last["enabled"] is False
    assert last["credits"] == Decimal("8.75")
    assert last["loose"] == Decimal("10.5")
    assert Decimal(last["loose_late"]) == Decimal("8.75")
    assert last["expires"] == dt.datetime(2030, 1, 8, tzinfo=dt.UTC)
    assert last["created"] == dt.datetime(2024, 5, 1, 19, 0)
    assert last["day"] == dt.date(2024, 1, 8)
    assert uuid.UUID(last["ext"])


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgres_types_and_one_schema_across_chunks(typed_pg: str, driver: str) -> None:
    def connect() -> Any:
        return psycopg.connect(typed_pg) if driver == "psycopg" else psycopg2.connect(typed_pg)

    # Chunks of 3: the first holds only NULLs in roles, meta, expires...: the declared types win.
    batches = list(SqlSource(connect, "SELECT * FROM keys ORDER BY id", batch_rows=3))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    _check_typed(batches)


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
@pytest.mark.parametrize("autocommit", [False, True])
def test_postgres_reads_through_a_named_cursor(postgres_dsn: str, driver: str, autocommit: bool) -> None:
    opened: list[Any] = []

    def connect() -> Any:
        # A client-side or WITH HOLD cursor would run the whole endless query first: the timeout and
        # the temporary file limit stop it early, so a regression fails fast instead of filling a disk.
        options = "-c statement_timeout=3000 -c temp_file_limit=65536"
        if driver == "psycopg":
            conn: Any = psycopg.connect(postgres_dsn, options=options, autocommit=autocommit)
        else:
            conn = psycopg2.connect(postgres_dsn, options=options)
            conn.autocommit = autocommit
        opened.append(conn)
        return conn

    endless = "SELECT generate_series(1, 9000000000000) AS n"
    started = time.monotonic()
    batches = iter(SqlSource(connect, endless, batch_rows=500))
    first, second = next(batches), next(batches)
    assert first.num_rows == second.num_rows == 500
    assert second.column("n").to_pylist()[-1] == 1000
    conn = opened[0]
    with conn.cursor() as cur:
        cur.execute("SELECT name, is_holdable FROM pg_cursors")
        cursors = cur.fetchall()
    assert len(cursors) == 1 and cursors[0][0].startswith("unkey_source_")
    # Not WITH HOLD, even for an autocommit connection: a held cursor is materialised whole.
    assert cursors[0][1] is False
    batches.close()  # type: ignore[attr-defined]
    assert conn.closed
    assert time.monotonic() - started < 5


@pytest.mark.postgres
def test_postgres_through_an_airflow_connection(typed_pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = register_connection(monkeypatch, "unkey_pg_source", typed_pg)
    source = io.sql_source("SELECT * FROM keys WHERE id > %s ORDER BY id", conn_id, (0,), batch_rows=3)
    assert source.server_side_cursor == "postgresql"
    _check_typed(list(source))


@pytest.mark.postgres
def test_postgres_error_closes_the_connection(postgres_dsn: str) -> None:
    opened: list[Any] = []

    def connect() -> Any:
        opened.append(psycopg.connect(postgres_dsn))
        return opened[-1]

    with pytest.raises(psycopg.errors.UndefinedTable):
        list(SqlSource(connect, "SELECT * FROM no_such_table"))
    assert opened[0].closed


# --- SQL on MariaDB/MySQL -----------------------------------------------------------------------------


@pytest.fixture
def typed_mysql(mysql_database: MySqlDatabase) -> MySqlDatabase:
    """A table with the types a key source has on MySQL; some columns are NULL in the first rows only."""
    conn = mysql_database.connect("pymysql")
    try:
        cursor = conn.cursor()
        cursor.execute(
            """
            CREATE TABLE `keys` (
                id INT, big BIGINT, hash VARCHAR(100), note TEXT, meta JSON, enabled BOOLEAN,
                credits DECIMAL(12, 2), ratio DOUBLE, late INT, expires DATETIME(6), day DATE,
                window_len TIME, raw VARBINARY(32)
            ) CHARACTER SET utf8mb4
            """
        )
        cursor.executemany(
            "INSERT INTO `keys` VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    g,
                    g * 10_000_000_000,
                    f"hash{g}",
                    f"ключ {g}",
                    json.dumps({"g": g, "tags": ["x"]}) if g > 3 else None,
                    g % 2 == 0,
                    Decimal(g) * Decimal("1.25"),
                    g / 4,
                    g if g > 3 else None,
                    dt.datetime(2030, 1, 1, 0, 0, 0, 500) + dt.timedelta(days=g) if g > 3 else None,
                    dt.date(2024, 1, 1) + dt.timedelta(days=g),
                    dt.timedelta(minutes=g),
                    bytes([g, 255]),
                )
                for g in range(1, _TYPED_ROWS + 1)
            ],
        )
        conn.commit()
        cursor.close()
    finally:
        conn.close()
    return mysql_database


@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_mysql_types_and_one_schema_across_chunks(typed_mysql: MySqlDatabase, driver: str) -> None:
    source = SqlSource(lambda: typed_mysql.connect(driver), "SELECT * FROM `keys` ORDER BY id;", batch_rows=3)
    batches = list(source)
    assert [b.num_rows for b in batches] == [3, 3, 1]
    assert all(b.schema == source.schema for b in batches)
    types = {f.name: f.type for f in batches[0].schema}
    assert types == {
        "id": pa.int64(),
        "big": pa.int64(),
        "hash": pa.string(),
        "note": pa.string(),
        "meta": pa.string(),  # NULL in the whole first chunk (and JSON is text on MariaDB)
        "enabled": pa.int64(),  # BOOLEAN is TINYINT(1)
        "credits": pa.decimal128(38, 2),
        "ratio": pa.float64(),
        "late": pa.string(),  # NULL in the whole first chunk: text, and later numbers as text
        "expires": pa.string(),
        "day": pa.date32(),
        "window_len": pa.duration("us"),
        "raw": pa.binary(),
    }
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [r["id"] for r in rows] == list(range(1, _TYPED_ROWS + 1))
    first, last = rows[0], rows[-1]
    assert first["meta"] is None and first["late"] is None and first["expires"] is None
    assert last["big"] == 70_000_000_000
    assert last["note"] == "ключ 7"
    assert json.loads(last["meta"]) == {"g": 7, "tags": ["x"]}
    assert last["enabled"] == 0
    assert last["credits"] == Decimal("8.75")
    assert last["ratio"] == 1.75
    assert last["late"] == "7"
    assert last["expires"] == "2030-01-08T00:00:00.000500"
    assert last["day"] == dt.date(2024, 1, 8)
    assert last["window_len"] == dt.timedelta(minutes=7)
    assert last["raw"] == bytes([7, 255])


def _thread_id(conn: Any) -> int:
    """The server's id for a connection (``CONNECTION_ID()``), asked of the driver without a query."""
    return int(conn.connection_id if hasattr(conn, "connection_id") else conn.thread_id())


def _is_open(conn: Any) -> bool:
    return bool(conn.is_connected() if hasattr(conn, "is_connected") else conn.open)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_mysql_reads_through_an_unbuffered_cursor(mysql_database: MySqlDatabase, driver: str) -> None:
    """The result streams: after two batches the server is still sending it, and stopping early ends the
    query instead of reading the rest."""
    admin = mysql_database.connect("pymysql", autocommit=True)
    cursor = admin.cursor()
    cursor.execute("CREATE TABLE digits (d INT)")
    cursor.executemany("INSERT INTO digits VALUES (%s)", [(d,) for d in range(10)])
    opened: list[Any] = []

    def connect() -> Any:
        opened.append(mysql_database.connect(driver))
        return opened[-1]

    # 100,000 rows of 1 kB: 100 MB, far more than the socket buffers hold, so the server can only be
    # done when the client has read everything. The query is finite, so a buffering regression fails
    # the assertions below instead of reading forever.
    digits = ", ".join(f"digits d{i}" for i in range(5))
    big = f"SELECT d0.d + 10 * d1.d + 100 * d2.d + 1000 * d3.d + 10000 * d4.d AS n, REPEAT('x', 1000) AS pad FROM {digits}"
    batches = iter(SqlSource(connect, big, batch_rows=500))
    first, second = next(batches), next(batches)
    assert first.num_rows == second.num_rows == 500
    assert first.schema.names == ["n", "pad"]
    conn = opened[0]
    cursor.execute(
        "SELECT COMMAND, INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (_thread_id(conn),)
    )
    command, info = cursor.fetchone()
    assert command == "Query" and "REPEAT('x', 1000)" in info  # still sending the result
    batches.close()  # type: ignore[attr-defined]
    assert not _is_open(conn)
    # Read to the end, the cursor and connection are closed too.
    small = list(SqlSource(connect, "SELECT d FROM digits ORDER BY d", batch_rows=4))
    assert [b.num_rows for b in small] == [4, 4, 2]
    assert not _is_open(opened[-1])
    # An empty result, and one that ends on a full batch.
    assert list(SqlSource(connect, "SELECT d FROM digits WHERE d > %s", (9,))) == []
    assert [b.num_rows for b in SqlSource(connect, "SELECT d FROM digits", batch_rows=5)] == [5, 5]
    assert not any(_is_open(c) for c in opened)
    admin.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_mysql_errors_close_the_connection(mysql_database: MySqlDatabase, driver: str) -> None:
    opened: list[Any] = []

    def connect() -> Any:
        opened.append(mysql_database.connect(driver))
        return opened[-1]

    with pytest.raises(Exception, match="no_such_table"):
        list(SqlSource(connect, "SELECT * FROM no_such_table"))
    assert not _is_open(opened[-1])
    with pytest.raises(SourceError, match="more than one column named"):
        list(SqlSource(connect, "SELECT 1 AS n, 2 AS n"))
    assert not _is_open(opened[-1])
    # An error in the middle of the stream, after rows were read: the server fails at the third row.
    conn = mysql_database.connect("pymysql")
    conn.cursor().execute("CREATE TABLE digits (d INT)")
    conn.cursor().executemany("INSERT INTO digits VALUES (%s)", [(d,) for d in range(10)])
    conn.commit()
    conn.close()
    failing = "SELECT d, (SELECT e.d FROM digits e WHERE e.d < t.d) AS below FROM digits t"
    batches = iter(SqlSource(connect, failing, batch_rows=1))
    assert next(batches).to_pylist() == [{"d": 0, "below": None}]
    with pytest.raises(Exception, match=r"(?i)more than 1 row"):
        list(batches)
    assert not _is_open(opened[-1])


def test_driver_family_of_mysql_drivers() -> None:
    import mysql.connector.connection
    import pymysql.connections

    assert driver_family(object.__new__(pymysql.connections.Connection)) == "mysql"
    assert driver_family(object.__new__(mysql.connector.connection.MySQLConnection)) == "mysql"
