"""Sinks: the run's Parquet outputs copied to storage, and appended to SQL tables per run."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import fsspec
import psycopg
import psycopg2
import pyarrow.parquet as pq
import pytest
from airflow.sdk.io import attach

from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter, Reason, Stage
from airflow_provider_unkey.migration.record.sinks import (
    SqlOutcomeSink,
    copy_outputs,
    validate_table_prefix,
)
from airflow_provider_unkey.operators import io
from tests import databases
from tests.databases import MYSQL_DRIVERS, MySqlDatabase, register_connection, sqlite_uri

postgres_dsn = databases.postgres_dsn
mysql_database = databases.mysql_database
sqlite_path = databases.sqlite_path

MIGRATED_COLUMNS = ["hash", "key_id", "source_row", "request_id"]
FAILED_COLUMNS = ["hash", "reason", "stage", "detail", "source_row", "request_id"]


def write_run(directory: Path, migrated: int, failed: int, flush_rows: int = 7) -> Path:
    """Outputs as a run writes them, with the engine's own writer (several row groups)."""
    writer = OutcomeWriter(directory, flush_rows=flush_rows)
    for start in range(0, migrated, 5):
        n = min(5, migrated - start)
        writer.migrated(
            [f"hash-{i}" for i in range(start, start + n)],
            [f"key_{i}" for i in range(start, start + n)],
            list(range(start, start + n)),
            f"req_{start}",
        )
    for start in range(0, failed, 4):
        n = min(4, failed - start)
        rows = list(range(migrated + start, migrated + start + n))
        # A rejected hash may be long junk, or missing.
        hashes: list[str | None] = ["x" * 600 if i % 2 else None for i in rows]
        writer.failed(hashes, rows, Reason.INVALID, Stage.VALIDATE, [f"detail {i}" for i in rows])
    writer.close()
    return directory


def parquet_rows(path: Path, columns: list[str]) -> list[tuple[Any, ...]]:
    table = pq.read_table(path, columns=columns)
    return sorted(zip(*(table.column(c).to_pylist() for c in columns), strict=True), key=repr)


# --- copying ------------------------------------------------------------------------------------------


def test_copy_outputs_to_a_local_directory(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", migrated=12, failed=5)
    target = tmp_path / "out" / "nested"
    copied = copy_outputs(run, str(target))
    assert copied == {
        "migrated": f"file://{target}/migrated.parquet",
        "failed": f"file://{target}/failed.parquet",
    }
    for name in ("migrated.parquet", "failed.parquet"):
        assert (target / name).read_bytes() == (run / name).read_bytes()
    # A second copy (a task retry) replaces the files.
    again = write_run(tmp_path / "run2", migrated=3, failed=0)
    copy_outputs(again, str(target))
    assert pq.read_metadata(target / "migrated.parquet").num_rows == 3


def test_copy_outputs_needs_both_files(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", migrated=1, failed=1)
    (run / "failed.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"failed\.parquet"):
        copy_outputs(run, str(tmp_path / "out"))


def test_upload_outputs_through_object_storage(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", migrated=9, failed=2)
    uploaded = io.upload_outputs(run, f"file://{tmp_path}/dest/run_1")
    assert uploaded == {
        "migrated": f"file://{tmp_path}/dest/run_1/migrated.parquet",
        "failed": f"file://{tmp_path}/dest/run_1/failed.parquet",
    }
    assert pq.read_metadata(tmp_path / "dest" / "run_1" / "migrated.parquet").num_rows == 9
    local = io.upload_outputs(run, tmp_path / "plain")
    assert local["failed"] == f"{tmp_path}/plain/failed.parquet"
    assert (tmp_path / "plain" / "failed.parquet").read_bytes() == (run / "failed.parquet").read_bytes()

    # Storage that is not local: fsspec's in-memory filesystem as an Airflow object store.
    memory = fsspec.filesystem("memory")
    attach("memory", fs=memory)
    root = f"unkey-sink-{uuid.uuid4().hex[:8]}"
    uploaded = io.upload_outputs(run, f"memory://{root}/run_1")
    # universal-pathlib before 0.3 (what Airflow 3.1 runs on) writes memory paths from the root:
    # memory:///root/... names the same file.
    assert uploaded["migrated"].replace(":///", "://") == f"memory://{root}/run_1/migrated.parquet"
    assert memory.cat_file(f"{root}/run_1/migrated.parquet") == (run / "migrated.parquet").read_bytes()
    memory.rm(root, recursive=True)


# --- SQL ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    ["unkey", "_x1", "audit.unkey_outcomes", "A" * 54],
)
def test_valid_prefixes(prefix: str) -> None:
    assert validate_table_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "1abc",
        "a.b.c",
        "unkey; DROP TABLE users",
        "un-key",
        'unkey"',
        "unkey --",
        "schema.",
        ".unkey",
        "A" * 55,
        "ключи",
    ],
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="table prefix"):
        validate_table_prefix(prefix)
    with pytest.raises(ValueError, match="table prefix"):
        SqlOutcomeSink(lambda: None, prefix)


def _sql_rows(cursor: Any, table: str, columns: list[str], run_id: str) -> list[tuple[Any, ...]]:
    cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = '{run_id}'")
    return sorted((tuple(r) for r in cursor.fetchall()), key=repr)


def _check_tables(cursor: Any, prefix: str, runs: dict[str, Path]) -> None:
    cursor.execute(f"SELECT run_id, COUNT(*) FROM {prefix}_migrated GROUP BY run_id")
    migrated_counts = dict(cursor.fetchall())
    cursor.execute(f"SELECT run_id, COUNT(*) FROM {prefix}_failed GROUP BY run_id")
    failed_counts = dict(cursor.fetchall())
    for run_id, directory in runs.items():
        assert migrated_counts.get(run_id, 0) == pq.read_metadata(directory / "migrated.parquet").num_rows
        assert failed_counts.get(run_id, 0) == pq.read_metadata(directory / "failed.parquet").num_rows
        assert _sql_rows(cursor, f"{prefix}_migrated", MIGRATED_COLUMNS, run_id) == parquet_rows(
            directory / "migrated.parquet", MIGRATED_COLUMNS
        )
        assert _sql_rows(cursor, f"{prefix}_failed", FAILED_COLUMNS, run_id) == parquet_rows(
            directory / "failed.parquet", FAILED_COLUMNS
        )
    cursor.execute(f"SELECT COUNT(*) FROM {prefix}_migrated WHERE recorded_at IS NULL")
    assert cursor.fetchone()[0] == 0


def test_sqlite_sink_creates_tables_once_and_appends_per_run(tmp_path: Path, sqlite_path: Path) -> None:
    runs = {
        "run_1": write_run(tmp_path / "r1", migrated=23, failed=9),
        "run_2": write_run(tmp_path / "r2", migrated=4, failed=0),
        "run_3": write_run(tmp_path / "r3", migrated=0, failed=6),
    }
    sink = SqlOutcomeSink(lambda: sqlite3.connect(sqlite_path), "unkey_out", chunk_rows=5)
    for run_id, directory in runs.items():
        written = sink.write(run_id, directory)
        assert written == {
            "migrated": pq.read_metadata(directory / "migrated.parquet").num_rows,
            "failed": pq.read_metadata(directory / "failed.parquet").num_rows,
        }
    conn = sqlite3.connect(sqlite_path)
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    assert tables == [("unkey_out_failed",), ("unkey_out_migrated",)]
    _check_tables(conn.cursor(), "unkey_out", runs)
    stamp = conn.execute(
        "SELECT DISTINCT recorded_at FROM unkey_out_migrated WHERE run_id = 'run_1'"
    ).fetchall()
    assert len(stamp) == 1 and stamp[0][0].startswith("20")
    conn.close()


def test_sqlite_sink_writes_a_table_in_one_transaction(tmp_path: Path, sqlite_path: Path) -> None:
    run = write_run(tmp_path / "r1", migrated=23, failed=3)
    conn = sqlite3.connect(sqlite_path)
    # The table exists already, with a rule that row 20 breaks: after 4 chunks of 5 rows were inserted.
    conn.execute(
        "CREATE TABLE out_migrated (run_id VARCHAR(256), task_key VARCHAR(256), hash VARCHAR(256), key_id VARCHAR(256), "
        "source_row BIGINT CHECK (source_row < 20), request_id VARCHAR(256), recorded_at TIMESTAMP)"
    )
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.IntegrityError):
        SqlOutcomeSink(lambda: sqlite3.connect(sqlite_path), "out", chunk_rows=5).write("run_1", run)
    conn = sqlite3.connect(sqlite_path)
    assert conn.execute("SELECT COUNT(*) FROM out_migrated").fetchone() == (0,)
    conn.close()


def test_write_outcomes_to_sql_through_an_airflow_sqlite_connection(
    tmp_path: Path, sqlite_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = register_connection(monkeypatch, "unkey_sink_sqlite", sqlite_uri(sqlite_path))
    run = write_run(tmp_path / "r1", migrated=11, failed=4)
    assert io.write_outcomes_to_sql(conn_id, "keys_audit", "manual__2025", run) == {
        "migrated_table": "keys_audit_migrated",
        "failed_table": "keys_audit_failed",
    }
    conn = sqlite3.connect(sqlite_path)
    _check_tables(conn.cursor(), "keys_audit", {"manual__2025": run})
    conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgres_sink(tmp_path: Path, postgres_dsn: str, driver: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA audit")

    def connect() -> Any:
        return psycopg.connect(postgres_dsn) if driver == "psycopg" else psycopg2.connect(postgres_dsn)

    runs = {
        "run_1": write_run(tmp_path / "r1", migrated=31, failed=13),
        "run_2": write_run(tmp_path / "r2", migrated=2, failed=1),
    }
    sink = SqlOutcomeSink(connect, "audit.unkey", chunk_rows=4)
    for run_id, directory in runs.items():
        sink.write(run_id, directory)
    with psycopg.connect(postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'audit' ORDER BY table_name, ordinal_position"
        )
        columns = cur.fetchall()
        assert [(t, c) for t, c, _ in columns if t == "unkey_migrated"] == [
            ("unkey_migrated", c)
            for c in ("run_id", "task_key", "hash", "key_id", "source_row", "request_id", "recorded_at")
        ]
        assert dict(((t, c), d) for t, c, d in columns)[("unkey_failed", "recorded_at")] == (
            "timestamp without time zone"
        )
        _check_tables(cur, "audit.unkey", runs)


@pytest.mark.postgres
def test_write_outcomes_to_sql_through_an_airflow_postgres_connection(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = register_connection(monkeypatch, "unkey_sink_pg", postgres_dsn)
    runs = {
        "scheduled__1": write_run(tmp_path / "r1", migrated=40, failed=7),
        "scheduled__2": write_run(tmp_path / "r2", migrated=5, failed=5),
    }
    for run_id, directory in runs.items():
        io.write_outcomes_to_sql(conn_id, "unkey", run_id, directory, chunk_rows=16)
    with psycopg.connect(postgres_dsn) as conn, conn.cursor() as cur:
        _check_tables(cur, "unkey", runs)


@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_mysql_sink(tmp_path: Path, mysql_database: MySqlDatabase, driver: str) -> None:
    """Both tables on MariaDB/MySQL: DATETIME(6) for the time, a schema-qualified (database.table)
    prefix, several runs, and a retried task that replaces its rows."""
    prefix = f"{mysql_database.name}.unkey"
    runs = {
        "run_1": write_run(tmp_path / "r1", migrated=31, failed=13),
        "run_2": write_run(tmp_path / "r2", migrated=2, failed=1),
    }
    sink = SqlOutcomeSink(lambda: mysql_database.connect(driver), prefix, chunk_rows=4)
    sink.write("run_1", write_run(tmp_path / "earlier_try", migrated=50, failed=20))
    for run_id, directory in runs.items():
        written = sink.write(run_id, directory)  # run_1: the retry replaces the earlier try's rows
        assert written == {
            "migrated": pq.read_metadata(directory / "migrated.parquet").num_rows,
            "failed": pq.read_metadata(directory / "failed.parquet").num_rows,
        }
    conn = mysql_database.connect(driver)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (mysql_database.name,),
        )
        columns = [tuple(str(v) for v in row) for row in cursor.fetchall()]
        assert [c for t, c, _ in columns if t == "unkey_migrated"] == [
            "run_id", "task_key", "hash", "key_id", "source_row", "request_id", "recorded_at"
        ]  # fmt: skip
        types = {(t, c): typ for t, c, typ in columns}
        assert types[("unkey_migrated", "recorded_at")] == "datetime(6)"
        assert types[("unkey_failed", "hash")] == "text"
        assert types[("unkey_failed", "source_row")] == "bigint(20)"
        _check_tables(cursor, prefix, runs)
        cursor.execute(f"SELECT DISTINCT recorded_at FROM {prefix}_failed WHERE run_id = 'run_2'")
        stamps = cursor.fetchall()
        assert len(stamps) == 1 and isinstance(stamps[0][0], dt.datetime)
        cursor.close()
    finally:
        conn.close()


@pytest.mark.mysql
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_mysql_sink_writes_a_table_in_one_transaction(
    tmp_path: Path, mysql_database: MySqlDatabase, driver: str
) -> None:
    run = write_run(tmp_path / "r1", migrated=23, failed=3)
    conn = mysql_database.connect(driver)
    cursor = conn.cursor()
    # InnoDB, with a rule that row 20 breaks: after 4 chunks of 5 rows were inserted.
    cursor.execute(
        "CREATE TABLE out_migrated (run_id VARCHAR(256), task_key VARCHAR(256), hash VARCHAR(256), "
        "key_id VARCHAR(256), source_row BIGINT CHECK (source_row < 20), request_id VARCHAR(256), "
        "recorded_at DATETIME(6)) ENGINE=InnoDB"
    )
    conn.close()
    sink = SqlOutcomeSink(lambda: mysql_database.connect(driver), "out", chunk_rows=5)
    with pytest.raises(Exception, match=r"(?i)constraint"):
        sink.write("run_1", run)
    conn = mysql_database.connect(driver)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM out_migrated")
        assert cursor.fetchone()[0] == 0
        cursor.close()
    finally:
        conn.close()


def test_a_retried_task_replaces_its_rows_and_keeps_its_siblings(tmp_path: Path, sqlite_path: Path) -> None:
    """A task retry writes its outcomes again: they replace its earlier ones, not add to them."""
    first = write_run(tmp_path / "try1", migrated=12, failed=5)
    second = write_run(tmp_path / "try2", migrated=7, failed=2)
    sibling = write_run(tmp_path / "sibling", migrated=3, failed=1)
    sink = SqlOutcomeSink(lambda: sqlite3.connect(sqlite_path), "out", chunk_rows=4)
    sink.write("run_1", first, "migrate[0]")
    sink.write("run_1", sibling, "migrate[1]")
    sink.write("run_1", second, "migrate[0]")  # the retry of map index 0
    conn = sqlite3.connect(sqlite_path)
    counts = dict(conn.execute("SELECT task_key, COUNT(*) FROM out_migrated GROUP BY task_key").fetchall())
    failed = dict(conn.execute("SELECT task_key, COUNT(*) FROM out_failed GROUP BY task_key").fetchall())
    conn.close()
    assert counts == {"migrate[0]": 7, "migrate[1]": 3}
    assert failed == {"migrate[0]": 2, "migrate[1]": 1}


def test_copy_outputs_keeps_an_earlier_try_s_files(tmp_path: Path) -> None:
    """A retried task must not overwrite the only record of the key ids its earlier try created."""
    destination = tmp_path / "out"
    first = write_run(tmp_path / "try1", migrated=9, failed=2)
    second = write_run(tmp_path / "try2", migrated=0, failed=11)
    copy_outputs(first, str(destination))
    copy_outputs(second, str(destination))
    kept = sorted(p.name for p in destination.glob("*.previous-*.parquet"))
    assert (
        len(kept) == 2 and kept[0].startswith("failed.previous-") and kept[1].startswith("migrated.previous-")
    )
    earlier = destination / kept[1]
    assert pq.read_metadata(earlier).num_rows == 9
    assert pq.read_metadata(destination / "migrated.parquet").num_rows == 0
