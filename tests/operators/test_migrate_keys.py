"""MigrateKeysOperator end to end: ``dag.test()`` against the live emulator, Parquet and SQL sources.

In every run the invariant holds (rows = migrated + failed) and the emulator received every valid hash
exactly once.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.migration.send.throttle import INITIAL_CONCURRENCY
from airflow_provider_unkey.testing import UnkeyEmulator
from tests import databases

postgres_dsn = databases.postgres_dsn
pytestmark = pytest.mark.slow

ROOT_KEY = "unkey_root_test"
EXPIRES = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)


def b64(plaintext: str) -> str:
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT_KEY, api_id="api_test", migration_id="mig_test") as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": ROOT_KEY}),
        )
        yield emu


def run_dag(dag_id: str, tmp_path: Path, source: str, **conf: Any) -> tuple[str, dict[str, Any], Path]:
    """Run a test DAG; return the migrate task's state, the report, and the output directory."""
    import importlib

    module = importlib.import_module("tests.dags.unkey_operator_test_dags")
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == dag_id)
    output = tmp_path / "out"
    report = tmp_path / "report.json"
    # Every param every time: a DAG keeps the params of its previous test run.
    run_conf = {"migration_id": "mig_test", "api_id": "api_test", "partitions": 4, **conf}
    run = dag.test(run_conf={"source": source, "output_path": str(output), "report": str(report), **run_conf})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states.get("report") == "success", states
    return str(states["migrate"]), json.loads(report.read_text()), output


def outcomes(output: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        pq.read_table(output / "migrated.parquet").to_pylist(),
        pq.read_table(output / "failed.parquet").to_pylist(),
    )


def assert_accounted(
    total: int, migrated: list[dict[str, Any]], failed: list[dict[str, Any]], emu: UnkeyEmulator
) -> None:
    """Every row has one outcome; every migrated hash reached Unkey exactly once."""
    rows = sorted([m["source_row"] for m in migrated] + [f["source_row"] for f in failed])
    assert rows == list(range(total))
    for m in migrated:
        assert emu.hash_counts[m["hash"]] == 1, m
        assert emu.keys[m["hash"]].key_id == m["key_id"]
    sent_again = {h: c for h, c in emu.hash_counts.items() if c != 1}
    assert not sent_again, sent_again


def legacy_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ddl: str, insert: str, rows: list[tuple[Any, ...]]
) -> None:
    """A legacy SQLite database, registered as the connection ``unkey_test_sqlite``."""
    db_path = tmp_path / "legacy.db"
    with sqlite3.connect(db_path) as conn:
        conn.execute(ddl)
        conn.executemany(insert, rows)
    monkeypatch.setenv(
        "AIRFLOW_CONN_UNKEY_TEST_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(db_path)})
    )


def simple_table(n: int, offset: int = 0) -> pa.Table:
    return pa.table(
        {
            "hash": [b64(f"sk_simple_{offset + i}") for i in range(n)],
            "name": [f"k{offset + i}" for i in range(n)],
        }
    )


def all_fields_table(n: int) -> tuple[pa.Table, dict[int, str]]:
    """Rows with every key field, and planted bad rows: row -> the field its detail must name."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "key_hash",
            "label",
            "owner",
            "meta_json",
            "role_list",
            "scopes",
            "expires_at",
            "active",
            "credits_left",
            "refill_every",
            "refill_amount",
            "refill_day",
            "limits",
        )
    }
    for i in range(n):
        monthly, daily = i % 3 == 0, i % 3 == 1
        cols["key_hash"].append(b64(f"sk_all_{i}"))
        cols["label"].append(f"key {i}")
        cols["owner"].append(f"user_{i % 7}")
        cols["meta_json"].append(json.dumps({"i": i, "plan": "pro"}))
        cols["role_list"].append(["reader", "admin"] if i % 5 == 0 else ["reader"])
        cols["scopes"].append("docs.read,docs.write")
        cols["expires_at"].append(EXPIRES)
        cols["active"].append(i % 4 != 0)
        cols["credits_left"].append(100 + i)
        cols["refill_every"].append("monthly" if monthly else "daily" if daily else None)
        cols["refill_amount"].append(50 if monthly or daily else None)
        cols["refill_day"].append(15 if monthly else None)
        cols["limits"].append([{"name": "requests", "limit": 10, "duration": 60000, "autoApply": True}])
    bad = {
        3: "hash",
        4: "hash",
        5: "permissions[0]",
        6: "roles[1]",
        9: "credits.refill.refillDay",
        10: "name",
        12: "ratelimits[0].duration",
    }
    cols["key_hash"][3] = None
    cols["key_hash"][4] = hashlib.sha256(b"sk_all_4").hexdigest()
    cols["scopes"][5] = "docs read"
    cols["role_list"][6] = ["a", "a"]
    cols["refill_day"][9] = None
    cols["label"][10] = "x" * 300
    cols["limits"][12] = [{"name": "requests", "limit": 10, "duration": 10, "autoApply": True}]
    cols["key_hash"][14] = cols["key_hash"][2]  # a duplicate of row 2
    table = pa.table(
        {
            **{k: v for k, v in cols.items() if k not in ("expires_at", "limits")},
            "expires_at": pa.array(cols["expires_at"], pa.timestamp("ms", tz="UTC")),
            "limits": pa.array(
                cols["limits"],
                pa.list_(
                    pa.struct(
                        [
                            ("name", pa.string()),
                            ("limit", pa.int64()),
                            ("duration", pa.int64()),
                            ("autoApply", pa.bool_()),
                        ]
                    )
                ),
            ),
        }
    )
    return table, bad


def test_parquet_every_field_round_trips(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path) -> None:
    table, bad = all_fields_table(60)
    path = tmp_path / "keys.parquet"
    pq.write_table(table, path)
    emulator.add_existing_hash(b64("sk_all_15"))
    state, report, output = run_dag("unkey_t_parquet_all_fields", tmp_path, str(path))
    assert state == "success"
    summary = report["return_value"]
    migrated, failed = outcomes(output)
    assert summary["total"] == 60 == summary["migrated"] + summary["failed"]
    assert summary["failed_by_reason"] == {"invalid": len(bad), "duplicate_in_source": 1, "already_exists": 1}
    assert_accounted(60, migrated, failed, emulator)
    by_row = {f["source_row"]: f for f in failed}
    for row, field in bad.items():
        assert by_row[row]["reason"] == "invalid" and by_row[row]["detail"].startswith(field), by_row[row]
    assert by_row[14]["reason"] == "duplicate_in_source" and "row 2" in by_row[14]["detail"]
    assert by_row[15]["reason"] == "already_exists" and by_row[15]["request_id"].startswith("req_")
    # The report beside the outputs, named in the summary.
    assert summary["outputs"]["report"] == str(output / "report.md")
    text = (output / "report.md").read_text()
    assert f"| `invalid` | {len(bad)} |" in text and "| `already_exists` | 1 |" in text
    assert "unkey_t_parquet_all_fields" in text and "mig_test (sha256) into API api_test" in text
    assert summary["outputs"]["plot"] == str(output / "throughput.png")
    # Every field as Unkey stored it.
    stored = emulator.keys[b64("sk_all_0")].request_fields()
    assert stored == {
        "hash": b64("sk_all_0"),
        "name": "key 0",
        "externalId": "user_0",
        "meta": {"i": 0, "plan": "pro"},
        "roles": ["reader", "admin"],
        "permissions": ["docs.read", "docs.write"],
        "expires": int(EXPIRES.timestamp() * 1000),
        "enabled": False,
        "credits": {"remaining": 100, "refill": {"interval": "monthly", "amount": 50, "refillDay": 15}},
        "ratelimits": [{"name": "requests", "limit": 10, "duration": 60000, "autoApply": True}],
    }
    assert emulator.keys[b64("sk_all_1")].request_fields()["credits"] == {
        "remaining": 101,
        "refill": {"interval": "daily", "amount": 50},
    }
    assert "refill" not in emulator.keys[b64("sk_all_2")].request_fields()["credits"]
    # XCom: the frames, as they are small.
    assert len(report["migrated"]["frame"]) == summary["migrated"]
    assert len(report["failed"]["frame"]) == summary["failed"]


@pytest.mark.parametrize("layout", ["file", "directory", "glob", "file_uri"])
def test_parquet_layouts(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path, layout: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for part in range(3):
        pq.write_table(simple_table(40, offset=40 * part), data / f"part-{part}.parquet")
    source = {
        "file": str(data / "part-0.parquet"),
        "directory": str(data),
        "glob": str(data / "part-*.parquet"),
        "file_uri": f"file://{data}",
    }[layout]
    expected = 40 if layout == "file" else 120
    state, report, output = run_dag("unkey_t_parquet", tmp_path, source)
    assert state == "success"
    assert report["return_value"]["total"] == report["return_value"]["migrated"] == expected
    migrated, failed = outcomes(output)
    assert failed == []
    assert_accounted(expected, migrated, failed, emulator)
    assert len(emulator.keys) == expected
    assert {m["hash"] for m in migrated} == set(emulator.keys)
    assert sorted(emulator.keys[m["hash"]].name for m in migrated)[:1] == ["k0"]


def test_dry_run_sends_nothing(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path) -> None:
    table, _bad = all_fields_table(30)
    path = tmp_path / "keys.parquet"
    pq.write_table(table.rename_columns(["hash", *table.column_names[1:]]), path)
    state, report, _output = run_dag("unkey_t_parquet_dry_run", tmp_path, str(path))
    assert state == "success"
    summary = report["return_value"]
    assert summary["dry_run"] is True
    # Default mapping: only the "hash" column is named like a field.
    assert summary["failed_by_reason"] == {"invalid": 2, "duplicate_in_source": 1}
    assert summary["would_send"] == 27 and summary["migrated"] == 0
    assert summary["total"] == summary["would_send"] + summary["failed"]
    assert emulator.requests == []


def test_xcom_above_limit_pushes_uris(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(simple_table(10), path)
    state, report, _output = run_dag("unkey_t_parquet_small_xcom", tmp_path, str(path))
    assert state == "success"
    assert report["migrated"].endswith("migrated.parquet")
    assert Path(report["migrated"].removeprefix("file://")).exists()
    assert report["failed"] == {"frame": []}  # 0 rows: under the limit, pushed as a frame


def test_invalid_ratio_fails_after_writing_outputs(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path
) -> None:
    table = simple_table(20)
    hashes = table.column("hash").to_pylist()
    hashes[0] = hashes[1] = "not-a-hash"
    path = tmp_path / "keys.parquet"
    pq.write_table(table.set_column(0, "hash", pa.array(hashes)), path)
    state, report, output = run_dag("unkey_t_parquet_ratio", tmp_path, str(path))
    assert state == "failed"
    assert report["summary"]["failed_by_reason"] == {"invalid": 2}
    migrated, failed = outcomes(output)
    assert len(migrated) == 18 and len(failed) == 2
    assert_accounted(20, migrated, failed, emulator)


def test_unknown_migration_stops_at_once(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(simple_table(1000), path)
    state, report, output = run_dag("unkey_t_parquet", tmp_path, str(path), migration_id="mig_unknown")
    assert state == "failed"
    summary = report["summary"]
    assert "mig_unknown" in summary["aborted"] and "migration id" in summary["aborted"]
    # No batch goes out after the first 404: at most the ones already in flight (a run starts with
    # INITIAL_CONCURRENCY, and no answer has come back to raise it).
    assert 1 <= len(emulator.requests) <= INITIAL_CONCURRENCY
    assert emulator.keys == {}
    migrated, failed = outcomes(output)
    assert migrated == []
    assert {f["reason"] for f in failed} == {"not_sent"}
    assert summary["total"] == len(failed)


def test_sqlite_source(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy_sqlite(
        tmp_path,
        monkeypatch,
        "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_hash TEXT, owner TEXT, scopes TEXT)",
        "INSERT INTO api_keys (key_hash, owner, scopes) VALUES (?, ?, ?)",
        [(b64(f"sk_sqlite_{i}"), f"user_{i}", "a.read,b.write") for i in range(250)]
        + [(None, "x", "a.read")],
    )
    sql = 'SELECT key_hash AS "hash", owner AS "externalId", scopes AS permissions FROM api_keys ORDER BY id'
    state, report, output = run_dag("unkey_t_sqlite", tmp_path, sql)
    assert state == "success"
    assert report["return_value"]["migrated"] == 250
    assert report["return_value"]["failed_by_reason"] == {"invalid": 1}
    migrated, failed = outcomes(output)
    assert_accounted(251, migrated, failed, emulator)
    assert emulator.keys[b64("sk_sqlite_7")].request_fields()["permissions"] == ["a.read", "b.write"]


def test_mapped_over_four_partitions(airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(simple_table(400), path, row_group_size=50)
    state, report, output = run_dag("unkey_t_mapped", tmp_path, str(path), partitions=4)
    assert state == "success"
    summaries = report["return_value"]
    assert len(summaries) == 4
    assert sum(s["total"] for s in summaries) == 400 == sum(s["migrated"] for s in summaries)
    assert len(emulator.keys) == 400
    assert all(c == 1 for c in emulator.hash_counts.values())
    for i in range(4):
        migrated, failed = outcomes(output / f"part_{i}")
        assert len(migrated) == summaries[i]["migrated"] and failed == []


@pytest.mark.postgres
def test_postgres_source_and_table_sink(
    airflow_db: None,
    emulator: UnkeyEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_dsn: str,
) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE legacy_keys (id serial PRIMARY KEY, key_hash text, owner text, scopes text[], "
            "meta jsonb, expires_at timestamptz, active boolean, credits bigint)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO legacy_keys (key_hash, owner, scopes, meta, expires_at, active, credits) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        hashlib.sha256(f"sk_pg_{i}".encode()).hexdigest(),
                        f"user_{i}",
                        ["docs.read", "docs.write"] if i != 5 else ["docs read"],
                        json.dumps({"i": i}),
                        EXPIRES,
                        i % 2 == 0,
                        i,
                    )
                    for i in range(300)
                ],
            )
    databases.register_connection(monkeypatch, "unkey_test_pg", postgres_dsn)
    # The hex hashes become base64 on the wire: the SQL computes it, so the default mapping applies.
    sql = (
        "SELECT encode(decode(key_hash, 'hex'), 'base64') AS hash, owner AS \"externalId\", "
        "scopes AS permissions, meta, expires_at AS expires, active AS enabled, "
        'credits AS "credits.remaining" FROM legacy_keys ORDER BY id'
    )
    for attempt in range(2):  # the second run appends to the same tables
        state, report, _output = run_dag("unkey_t_postgres", tmp_path / str(attempt), sql)
        assert state == "success"
    summary = report["return_value"]
    assert summary["total"] == 300
    # Second run: everything already exists, but for the invalid row.
    assert summary["failed_by_reason"] == {"invalid": 1, "already_exists": 299}
    first = emulator.keys[b64("sk_pg_0")].request_fields()
    assert first["permissions"] == ["docs.read", "docs.write"]
    assert first["meta"] == {"i": 0} and first["enabled"] is True
    assert first["expires"] == int(EXPIRES.timestamp() * 1000)
    assert first["credits"] == {"remaining": 0}
    assert all(c == 2 for c in emulator.hash_counts.values())  # once per run
    with psycopg.connect(postgres_dsn) as conn:
        migrated = conn.execute(
            "SELECT run_id, count(*) FROM unkey_outcomes_migrated GROUP BY run_id"
        ).fetchall()
        failed = conn.execute(
            "SELECT reason, count(*) FROM unkey_outcomes_failed GROUP BY reason ORDER BY reason"
        ).fetchall()
        runs = conn.execute("SELECT count(DISTINCT run_id) FROM unkey_outcomes_failed").fetchone()
        task_keys = conn.execute("SELECT DISTINCT task_key FROM unkey_outcomes_failed").fetchall()
    assert [count for _, count in migrated] == [299]
    assert failed == [("already_exists", 299), ("invalid", 2)]
    assert runs == (2,)
    assert task_keys == [("migrate#try1",)]
    assert summary["outputs"]["migrated_table"] == "unkey_outcomes_migrated"


def test_root_key_never_reaches_the_task_log(
    airflow_db: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import os

    caplog.set_level(logging.DEBUG)
    secret = "unkey_root_Zq81vX0mP2sLk7"
    with UnkeyEmulator.quick(root_key=secret, api_id="api_test", migration_id="mig_test", seed=3) as emu:
        # Faults make the client log retries and errors: the places a careless client leaks a header.
        emu.set_faults(error_rate=0.3, error_statuses=(500, 503), reset_rate=0.1)
        monkeypatch.setenv(
            "AIRFLOW_CONN_UNKEY_DEFAULT",
            json.dumps({"conn_type": "unkey", "host": emu.url, "password": secret}),
        )
        path = tmp_path / "keys.parquet"
        pq.write_table(simple_table(300), path)
        state, report, output = run_dag("unkey_t_parquet", tmp_path, str(path))
        failures = [r for r in emu.requests if r.status != 200]
    out = capfd.readouterr()
    task_logs = "".join(
        p.read_text(errors="replace") for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log")
    )
    text = out.out + out.err + caplog.text + task_logs
    assert state == "success"
    assert failures, "the faults should have caused retries"
    assert "retrying in" in text
    assert secret not in text
    for name in ("migrated.parquet", "failed.parquet"):
        assert secret.encode() not in (output / name).read_bytes()
    assert secret not in json.dumps(report)


def test_sql_from_a_templated_sql_file(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy_sqlite(
        tmp_path,
        monkeypatch,
        "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_hash TEXT, owner TEXT)",
        "INSERT INTO api_keys (key_hash, owner) VALUES (?, ?)",
        [(b64(f"sk_file_{i}"), f"user_{i}") for i in range(20)],
    )
    # The file's WHERE clause renders params.partitions: 7 rows of the 20.
    state, report, output = run_dag("unkey_t_sqlite_file", tmp_path, "", partitions=7)
    assert state == "success"
    assert report["return_value"]["total"] == report["return_value"]["migrated"] == 7
    assert_accounted(7, *outcomes(output), emulator)
    assert emulator.keys[b64("sk_file_0")].request_fields() == {
        "hash": b64("sk_file_0"),
        "externalId": "user_0",
    }


def test_a_source_failing_midway_keeps_the_key_ids_already_created(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    from tests.dags.unkey_operator_test_dags import COMMON

    chunk = 10_000  # SqlSource's rows per fetch
    batch_size = int(COMMON["batch_size"])
    # Row 2 repeats row 1: the first chunk holds chunk - 1 distinct keys, so that full batches leave a
    # tail of keys behind in the batcher when the source fails.
    hashes = [b64(f"sk_mid_{i}") for i in range(12_000)]
    hashes[1] = hashes[0]
    sendable = (chunk - 1) // batch_size * batch_size
    tail = chunk - 1 - sendable
    assert tail > 0
    legacy_sqlite(
        tmp_path,
        monkeypatch,
        "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_hash TEXT)",
        "INSERT INTO api_keys (key_hash) VALUES (?)",
        [(h,) for h in hashes],
    )

    # The source fails in its second fetch, and only once every full batch of the first chunk has
    # reached Unkey: an event, not a race between the reader and the senders.
    gate_opened = threading.Event()

    def fail_once_the_first_chunk_is_in() -> int:
        # Polls the emulator's store; the bound only turns a hang into a failure (gate_opened unset).
        for _ in range(12_000):
            if len(emulator.keys) >= sendable:
                gate_opened.set()
                break
            time.sleep(0.01)
        raise RuntimeError("the legacy database went away")

    real_get_conn = SqliteHook.get_conn

    def get_conn(self: SqliteHook) -> sqlite3.Connection:
        conn = real_get_conn(self)
        conn.create_function("fail_once_the_first_chunk_is_in", 0, fail_once_the_first_chunk_is_in)
        return conn

    monkeypatch.setattr(SqliteHook, "get_conn", get_conn)
    sql = (
        'SELECT key_hash AS "hash" FROM api_keys '
        "WHERE CASE WHEN id > 11000 THEN fail_once_the_first_chunk_is_in() ELSE 1 END ORDER BY id"
    )
    state, _report, output = run_dag("unkey_t_sqlite_fixed", tmp_path, sql)
    assert gate_opened.is_set()
    assert state == "failed"
    # Every full batch of the first chunk reached Unkey, and the outputs have the keyId of each.
    assert len(emulator.keys) == sendable
    migrated = pq.read_table(output / "migrated.parquet").to_pylist()
    assert {m["hash"]: m["key_id"] for m in migrated} == {h: k.key_id for h, k in emulator.keys.items()}
    # Every row read before the error has its outcome: the first chunk of 10,000.
    failed = pq.read_table(output / "failed.parquet").to_pylist()
    assert len(migrated) + len(failed) == chunk
    assert sorted([m["source_row"] for m in migrated] + [f["source_row"] for f in failed]) == list(
        range(chunk)
    )
    reasons = Counter(f["reason"] for f in failed)
    assert reasons == {"duplicate_in_source": 1, "not_sent": tail}
    not_sent = [f for f in failed if f["reason"] == "not_sent"]
    assert all("reading the source failed" in f["detail"] for f in not_sent)
    assert not {f["hash"] for f in not_sent} & set(emulator.hash_counts)


def test_mapped_by_hash_catches_duplicates_across_files(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(simple_table(150), data / "a.parquet")
    # The second file repeats 20 keys of the first: by hash, each repeat meets its first occurrence.
    pq.write_table(pa.concat_tables([simple_table(20), simple_table(130, offset=150)]), data / "b.parquet")
    state, report, output = run_dag("unkey_t_mapped_by_hash", tmp_path, str(data), partitions=4)
    assert state == "success"
    summaries = report["return_value"]
    assert len(summaries) == 4
    assert sum(s["total"] for s in summaries) == 300
    assert sum(s["migrated"] for s in summaries) == 280
    assert sum(s["failed_by_reason"].get("duplicate_in_source", 0) for s in summaries) == 20
    assert len(emulator.keys) == 280
    assert all(c == 1 for c in emulator.hash_counts.values())
    for i, summary in enumerate(summaries):
        migrated, failed = outcomes(output / f"part_{i}")
        assert len(migrated) + len(failed) == summary["total"]


# --- do_xcom_push ------------------------------------------------------------------------------------
def _xcom_keys(dag_id: str, run_id: str) -> set[str]:
    """The keys ``migrate`` pushed in the run, as Airflow's database holds them."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel.key).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == "migrate"
        )
        return set(session.scalars(query))


@pytest.mark.parametrize(
    ("dag_id", "state", "expected"),
    [
        pytest.param("unkey_x_pushed", "success", {"return_value", "migrated", "failed"}, id="pushes"),
        pytest.param("unkey_x_silent", "success", set(), id="silent"),
        pytest.param(
            "unkey_x_pushed_failing", "failed", {"summary", "migrated", "failed"}, id="pushes-failing"
        ),
        pytest.param("unkey_x_silent_failing", "failed", set(), id="silent-failing"),
    ],
)
def test_do_xcom_push_false_pushes_nothing_and_writes_everything(
    airflow_db: None, emulator: UnkeyEmulator, tmp_path: Path, dag_id: str, state: str, expected: set[str]
) -> None:
    import importlib

    table = simple_table(20)
    hashes = table.column("hash").to_pylist()
    hashes[0] = hashes[1] = "not-a-hash"  # 10% invalid: over the failing DAGs' max_invalid_ratio
    source = tmp_path / "keys.parquet"
    pq.write_table(table.set_column(0, "hash", pa.array(hashes)), source)
    output = tmp_path / "out"
    module = importlib.import_module("tests.dags.unkey_xcom_test_dags")
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == dag_id)

    run = dag.test(run_conf={"source": str(source), "output_path": str(output)})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"migrate": state}
    keys = _xcom_keys(dag_id, run.run_id)
    assert keys >= expected if expected else keys == set()
    # The outputs and the ledger are written whether or not anything is pushed.
    migrated, failed = outcomes(output)
    assert len(migrated) == 18 and len(failed) == 2
    assert_accounted(20, migrated, failed, emulator)
    ledger = pq.read_table(output / "ledger")
    assert ledger.num_rows == 20
