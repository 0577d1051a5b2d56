"""The ledger: durable segments, compaction, the compact index, resume, shared ledgers and incremental runs.

Runs go over real HTTP to the emulator; every run is checked for the invariant (each row read has
exactly one outcome: migrated, failed or skipped) and against what the emulator received.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey.client import UnkeyClient
from airflow_provider_unkey.migration.engine import (
    MigrationConfig,
    MigrationSummary,
    RunControl,
    run_migration,
)
from airflow_provider_unkey.migration.ledger import (
    LEDGER_SCHEMA,
    KnownHashes,
    LedgerScope,
    LedgerWriter,
    read_ledger,
)
from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.migration.record.outcomes import Reason, Stage
from airflow_provider_unkey.testing import UnkeyEmulator, seam_hash
from tests.migration.test_engine import API, FAST, MIGRATE, MIGRATION, ROOT, b64

TRY1 = LedgerScope("dag", "run_1", "migrate", -1, 1)


@pytest.fixture
def emu(unkey_emulator: UnkeyEmulator) -> UnkeyEmulator:
    """The package's own fixture: root key ``unkey_root_test``, API ``api_test``, migration ``mig_test``."""
    return unkey_emulator


@pytest.fixture
def client(emu: UnkeyEmulator) -> Iterator[UnkeyClient]:
    c = UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=8)
    yield c
    c.close()


def keys(start: int, stop: int, *, invalid: Collection[int] = (), dup: Collection[int] = ()) -> pa.Table:
    """Rows ``start``..``stop``: row i has hash b64(i) (b64(i - 1) when i is in ``dup``), a name."""
    hashes_ = [b64(i - 1) if i in dup else b64(i) for i in range(start, stop)]
    names = ["" if i in invalid else f"key {i}" for i in range(start, stop)]
    return pa.table({"hash": hashes_, "name": names})


def batches(table: pa.Table, size: int = 40) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=size)


def migrate(
    table: pa.Table,
    client: UnkeyClient | None,
    out: Path,
    ledger_dir: Path,
    scope: LedgerScope,
    **kwargs: Any,
) -> MigrationSummary:
    """One run with a ledger, as the operator wires it: load what is known, record, close."""
    algorithm = kwargs.pop("algorithm", "sha256")
    known = KnownHashes.load(ledger_dir, scope, hashes.wire_format(algorithm))
    dry_run = kwargs.get("dry_run", False)
    ledger = None if dry_run else LedgerWriter(ledger_dir, scope, migration_id=MIGRATION, api_id=API)
    summary = run_migration(
        batches(table),
        client,
        MigrationConfig(
            MIGRATION, API, batch_size=16, max_concurrency=3, retry=FAST, algorithm=algorithm, **kwargs
        ),
        out,
        ledger=ledger,
        known=known,
    )
    check(summary)
    return summary


def crashed_try(ledger_dir: Path, scope: LedgerScope) -> None:
    """What a try killed with SIGKILL leaves: its attempt marker, and no close()."""
    LedgerWriter(ledger_dir, scope, migration_id=MIGRATION, api_id=API, flush_interval=3600)


def check(summary: MigrationSummary) -> None:
    migrated = pq.read_table(summary.outputs["migrated"])
    failed = pq.read_table(summary.outputs["failed"])
    assert summary.total == summary.migrated + summary.failed + summary.skipped + summary.would_send
    assert migrated.num_rows == summary.migrated and failed.num_rows == summary.failed
    if "skipped" in summary.outputs:
        assert pq.read_table(summary.outputs["skipped"]).num_rows == summary.skipped


def outcome_rows(summary: MigrationSummary) -> set[tuple[Any, ...]]:
    """Every outcome as (source_row, hash, key_id or reason): what two runs must agree on."""
    migrated = pq.read_table(summary.outputs["migrated"]).to_pylist()
    failed = pq.read_table(summary.outputs["failed"]).to_pylist()
    return {(r["source_row"], r["hash"], r["key_id"]) for r in migrated} | {
        (r["source_row"], r["hash"], r["reason"]) for r in failed
    }


# --- the writer -------------------------------------------------------------------------------------


def test_segments_read_as_one_dataset_and_compact_into_one_file(tmp_path: Path) -> None:
    ledger = LedgerWriter(tmp_path / "ledger", TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    ledger.record_migrated([b64(1), b64(2)], ["key_1", "key_2"], [0, 1], "req_1")
    assert ledger.flush() == 2
    ledger.record_failed([b64(3)], [2], Reason.ALREADY_EXISTS, Stage.SEND, ["exists"], "req_2")
    ledger.record_failed([None], [3], Reason.INVALID, Stage.VALIDATE, ["hash: missing"], None)
    assert ledger.flush() == 2
    assert ledger.flush() == 0  # nothing new: no empty segment
    files = sorted(p.name for p in (tmp_path / "ledger").glob("*.parquet"))
    assert len(files) == 2 and all(f.startswith("seg-") for f in files)
    # While the try runs, its marker stands beside the segments (hidden from dataset readers).
    assert len(list((tmp_path / "ledger").glob("_attempt-*.json"))) == 1
    # Any reader of Parquet datasets sees one table with the documented columns.
    table = ds.dataset(tmp_path / "ledger", format="parquet").to_table()
    assert table.schema.names == LEDGER_SCHEMA.names and table.num_rows == 4
    rows = {r["source_row"]: r for r in table.to_pylist()}
    assert rows[0]["key_id"] == "key_1" and rows[0]["reason"] is None and rows[0]["request_id"] == "req_1"
    assert rows[2]["reason"] == "already_exists" and rows[2]["key_id"] is None
    assert rows[3]["hash"] is None and rows[3]["detail"] == "hash: missing"
    assert {
        (r["dag_id"], r["run_id"], r["task_id"], r["map_index"], r["try_number"]) for r in rows.values()
    } == {("dag", "run_1", "migrate", -1, 1)}
    assert all(r["recorded_at"] is not None and r["migration_id"] == MIGRATION for r in rows.values())
    ledger.close()
    files = [p.name for p in (tmp_path / "ledger").iterdir()]
    assert len(files) == 1 and not files[0].startswith("seg-")  # compacted, and the marker is gone
    assert read_ledger(tmp_path / "ledger").num_rows == 4


def test_the_background_thread_writes_segments_without_being_asked(tmp_path: Path) -> None:
    ledger = LedgerWriter(tmp_path, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=0.01)
    ledger.record_migrated([b64(1)], ["key_1"], [0], "req")
    # The flusher runs on its own: wait for its segment (no deadline: a busy machine only delays it).
    while not any(tmp_path.glob("seg-*.parquet")):
        threading.Event().wait(0.01)
    assert read_ledger(tmp_path).column("key_id").to_pylist() == ["key_1"]
    ledger.close()


def test_a_full_buffer_is_written_early(tmp_path: Path) -> None:
    ledger = LedgerWriter(
        tmp_path, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600, max_buffer_rows=10
    )
    ledger.record_migrated([b64(i) for i in range(10)], [f"k{i}" for i in range(10)], list(range(10)), "r")
    while not any(tmp_path.glob("seg-*.parquet")):
        threading.Event().wait(0.01)
    ledger.close()
    assert read_ledger(tmp_path).num_rows == 10


def test_no_temporary_file_is_left_or_read(tmp_path: Path) -> None:
    ledger = LedgerWriter(tmp_path, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    ledger.record_migrated([b64(1)], ["key_1"], [0], "req")
    ledger.flush()
    # A half-written file from a killed writer has a hidden name that no dataset reader picks up.
    (tmp_path / "_seg-killed.parquet.tmp").write_bytes(b"PAR1 torn")
    assert read_ledger(tmp_path).num_rows == 1
    ledger.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("_")) == [
        p.name for p in tmp_path.glob("*.parquet") if not p.name.startswith("_")
    ]


def test_object_storage_gets_whole_segments(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/ledger-{tmp_path.name}"
    ledger = LedgerWriter(root, TRY1, migration_id=MIGRATION, api_id=API, filesystem=fs, flush_interval=3600)
    ledger.record_migrated([b64(1)], ["key_1"], [0], "req")
    ledger.flush()
    ledger.record_migrated([b64(2)], ["key_2"], [1], "req")
    ledger.flush()
    assert len(fs.glob(f"{root}/seg-*.parquet")) == 2
    known = KnownHashes.load(root, LedgerScope("dag", "run_2", "migrate"), "sha256_base64", filesystem=fs)
    assert known.others_count == 2
    ledger.close()
    assert len(fs.ls(root)) == 1
    assert read_ledger(root, filesystem=fs).column("key_id").to_pylist() == ["key_1", "key_2"]


# --- the index --------------------------------------------------------------------------------------


def digests_of(values: list[str], fmt: str = "sha256_base64") -> np.ndarray:
    return hashes.digests(pa.array(values), fmt)


def test_index_tells_this_task_instances_records_from_other_runs(tmp_path: Path) -> None:
    earlier = LedgerWriter(tmp_path, TRY1, migration_id=MIGRATION, api_id=API)
    earlier.record_migrated([b64(1)], ["key_1"], [0], "req_1")
    earlier.record_failed([b64(2)], [1], Reason.UNCONFIRMED, Stage.SEND, ["lost"], "req_2")
    earlier.record_failed([b64(3)], [2], Reason.GAVE_UP, Stage.SEND, ["503"], "req_3")  # may not exist
    earlier.flush()  # and then the process died: no close(), the attempt marker stays
    other = LedgerWriter(tmp_path, LedgerScope("dag", "run_0", "migrate"), migration_id=MIGRATION, api_id=API)
    other.record_failed([b64(4)], [0], Reason.ALREADY_EXISTS, Stage.SEND, ["exists"], "req_4")
    other.record_failed([b64(5)], [1], Reason.REJECTED_BY_API, Stage.SEND, ["400"], "req_5")
    other.record_migrated([b64(1)], ["key_1"], [0], "req_0")
    other.close()

    known = KnownHashes.load(tmp_path, LedgerScope("dag", "run_1", "migrate", -1, 2), "sha256_base64")
    assert known.resumed_try == 1 and known.mine_count == 2 and known.others_count == 2
    seen = known.lookup(digests_of([b64(i) for i in range(7)]))
    mine = seen.mine.tolist()
    assert [m >= 0 for m in mine] == [False, True, True, False, False, False, False]
    assert known.records.take(pa.array([mine[1], mine[2]])).column("key_id").to_pylist() == ["key_1", None]
    # Another run's record counts only where this task instance has none; a give-up or a reject
    # says nothing of whether the key exists.
    assert seen.known.tolist() == [False, False, False, False, True, False, False]
    # 16 bytes of digest a hash, and a record number (mine) or a presence byte (others).
    assert known.nbytes == 24 * known.mine_count + 17 * known.others_count


def test_index_ignores_hashes_of_the_other_wire_format(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"sk_x").digest()
    ledger = LedgerWriter(tmp_path, TRY1, migration_id=MIGRATION, api_id=API)
    ledger.record_migrated([digest.hex()], ["key_seam"], [0], "req")
    ledger.close()
    other = LedgerScope("dag", "run_2", "migrate")
    assert len(KnownHashes.load(tmp_path, other, "sha256_base64")) == 0
    assert len(KnownHashes.load(tmp_path, other, "sha256_hex")) == 1
    # A hash of the right length that is no hash at all (a ledger edited by hand) is skipped too.
    edited = LedgerWriter(
        tmp_path, LedgerScope("dag", "run_0", "migrate"), migration_id=MIGRATION, api_id=API
    )
    edited.record_migrated(["!" * 44, b64(1)], ["key_bad", "key_1"], [0, 1], "req")
    edited.close()
    known = KnownHashes.load(tmp_path, other, "sha256_base64")
    assert len(known) == 1 and known.lookup(hashes.digests(pa.array([b64(1)]), "sha256_base64")).known.all()


def test_a_missing_ledger_knows_nothing(tmp_path: Path) -> None:
    known = KnownHashes.load(tmp_path / "nowhere", TRY1, "sha256_base64")
    assert len(known) == 0 and known.resumed_try is None
    assert not (tmp_path / "nowhere").exists()


# --- runs -------------------------------------------------------------------------------------------


def test_every_outcome_reaches_the_ledger(emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path) -> None:
    emu.add_existing_hash(b64(5))
    summary = migrate(keys(0, 100, invalid={3}, dup={9}), client, tmp_path / "out", tmp_path / "ledger", TRY1)
    assert summary.failed_by_reason == {"invalid": 1, "duplicate_in_source": 1, "already_exists": 1}
    ledger = read_ledger(tmp_path / "ledger").to_pylist()
    assert len(ledger) == 100
    by_row = {r["source_row"]: r for r in ledger}
    created = {h: k.key_id for h, k in emu.keys.items()}
    for record in by_row.values():
        if record["reason"] is None:
            assert created[record["hash"]] == record["key_id"]
    assert by_row[3]["reason"] == "invalid" and by_row[9]["reason"] == "duplicate_in_source"
    assert by_row[5]["reason"] == "already_exists"
    assert len(list((tmp_path / "ledger").glob("*.parquet"))) == 1  # compacted


def test_a_retry_resumes_and_its_outputs_equal_an_uninterrupted_run(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    table = keys(0, 200, invalid={7}, dup={50})
    emu.add_existing_hash(b64(20))
    emu.add_existing_hash(b64(150))
    # Try 1 got through the first 120 rows and recorded them, then died. Then rows 120..140 were in
    # flight: Unkey created their keys, but try 1 never recorded it.
    migrate(table.slice(0, 120), client, tmp_path / "try1", tmp_path / "ledger", TRY1)
    crashed_try(tmp_path / "ledger", TRY1)
    in_flight = keys(120, 140)
    migrate(in_flight, client, tmp_path / "lost", tmp_path / "lost-ledger", TRY1)
    emu.reset_log()

    retry = migrate(
        table, client, tmp_path / "try2", tmp_path / "ledger", LedgerScope("dag", "run_1", "migrate", -1, 2)
    )
    # Only what try 1 did not record was sent again.
    sent = emu.hash_counts
    assert set(sent) == {b64(i) for i in range(120, 200)} and set(sent.values()) == {1}
    assert retry.resumed == 120 - 2  # the invalid and the duplicate row are judged afresh
    assert retry.skipped == 0
    unconfirmed = pq.read_table(retry.outputs["failed"]).filter(pc.equal(pc.field("reason"), "unconfirmed"))
    # The keys in flight at the crash, and also the key that existed before (row 150), which Unkey
    # answers alike: after a crash, an existing hash the ledger does not know cannot be told apart.
    assert sorted(unconfirmed.column("source_row").to_pylist()) == [*range(120, 140), 150]
    assert all("try 1 of this task stopped" in d for d in unconfirmed.column("detail").to_pylist())

    # The same source, uninterrupted, against a fresh Unkey holding the same pre-existing keys.
    with UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as fresh:
        fresh.add_existing_hash(b64(20))
        fresh.add_existing_hash(b64(150))
        with UnkeyClient(ROOT, fresh.url, retry=FAST) as c:
            whole = migrate(table, c, tmp_path / "whole", tmp_path / "whole-ledger", TRY1)
    assert (retry.total, retry.migrated + retry.failed) == (whole.total, whole.migrated + whole.failed)

    def shape(summary: MigrationSummary) -> set[tuple[Any, ...]]:
        # Key ids differ between the two Unkeys; the in-flight keys lost theirs: compare the rest.
        return {(r, h, "key" if str(o).startswith("key_") else o) for r, h, o in outcome_rows(summary)}

    expected = shape(whole)
    lost = {(r, b64(r), "key") for r in range(120, 140)}
    differ = {(150, b64(150), "already_exists")}
    assert shape(retry) == (expected - lost - differ) | {
        (r, b64(r), "unconfirmed") for r in [*range(120, 140), 150]
    }
    # The key ids the first try recorded come back in the retry's outputs.
    try1 = pq.read_table(tmp_path / "try1" / "migrated.parquet").to_pylist()
    retried = {r["hash"]: r["key_id"] for r in pq.read_table(retry.outputs["migrated"]).to_pylist()}
    assert all(retried[r["hash"]] == r["key_id"] for r in try1)


def test_a_retry_without_records_still_reports_unconfirmed(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    # Try 1 created keys but died before its first segment: the ledger has only its attempt marker.
    migrate(keys(0, 10), client, tmp_path / "lost", tmp_path / "elsewhere", TRY1)
    retry = LedgerScope("dag", "run_1", "migrate", -1, 2)
    assert KnownHashes.load(tmp_path / "ledger", retry, "sha256_base64").resumed_try is None
    crashed_try(tmp_path / "ledger", TRY1)
    known = KnownHashes.load(tmp_path / "ledger", retry, "sha256_base64")
    assert known.resumed_try == 1 and len(known) == 0
    summary = run_migration(
        batches(keys(0, 10)),
        client,
        MigrationConfig(MIGRATION, API, retry=FAST),
        tmp_path / "out",
        known=known,
    )
    assert summary.failed_by_reason == {"unconfirmed": 10}


def test_a_try_that_recorded_everything_leaves_nothing_in_doubt(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    # Try 1 failed after recording every outcome (say, its source broke): its retry reports its
    # outcomes again, and a hash Unkey already had is already_exists, not unconfirmed.
    migrate(keys(0, 10), client, tmp_path / "try1", tmp_path / "ledger", TRY1)
    emu.add_existing_hash(b64(10))
    retry = LedgerScope("dag", "run_1", "migrate", -1, 2)
    again = migrate(keys(0, 11), client, tmp_path / "try2", tmp_path / "ledger", retry)
    assert (again.resumed, again.migrated) == (10, 10)
    assert again.failed_by_reason == {"already_exists": 1}


def test_other_runs_keys_are_skipped_and_only_new_rows_are_sent(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    emu.add_existing_hash(b64(3))
    first = migrate(
        keys(0, 100), client, tmp_path / "r1", ledger, LedgerScope("dag", "scheduled_1", "migrate")
    )
    assert first.migrated == 99
    emu.reset_log()
    # The source grew by 60 rows, one of them invalid and one a duplicate of an old row.
    grown = pa.concat_tables([keys(0, 100), keys(100, 160, invalid={110}, dup={101})])
    second = migrate(
        grown,
        client,
        tmp_path / "r2",
        ledger,
        LedgerScope("dag", "scheduled_2", "migrate"),
        list_skipped=True,
    )
    assert set(emu.hash_counts) == {b64(i) for i in range(100, 160)} - {b64(110), b64(101)}
    assert second.skipped == 100  # 99 migrated and 1 already existing, both known to exist
    assert second.failed_by_reason == {"invalid": 1, "duplicate_in_source": 1}
    assert second.migrated == 58 and second.resumed == 0
    skipped = pq.read_table(second.outputs["skipped"])
    assert sorted(skipped.column("source_row").to_pylist()) == list(range(100))
    # The ledger now knows all of them: a third run sends nothing.
    emu.reset_log()
    third = migrate(grown, client, tmp_path / "r3", ledger, LedgerScope("dag", "scheduled_3", "migrate"))
    assert emu.hash_counts == {} and third.skipped == 158 and third.migrated == 0
    assert "skipped" not in third.outputs  # counted only, unless asked


def test_a_dry_run_counts_what_the_ledger_would_skip(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    migrate(keys(0, 50), client, tmp_path / "r1", tmp_path / "ledger", TRY1)
    dry = migrate(
        keys(0, 80),
        None,
        tmp_path / "dry",
        tmp_path / "ledger",
        LedgerScope("dag", "run_2", "migrate"),
        dry_run=True,
    )
    assert (dry.skipped, dry.would_send, dry.migrated) == (50, 30, 0)
    assert read_ledger(tmp_path / "ledger").num_rows == 50  # a dry run records nothing


def test_a_seam_rerun_after_verification_creates_no_second_key(tmp_path: Path) -> None:
    secrets_ = [f"acme_{i:08d}_{'x' * 20}{i:04d}" for i in range(30)]
    table = pa.table({"hash": [seam_hash(s) for s in secrets_]})
    emulator = UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION, algorithm="seam")
    with emulator as emu, UnkeyClient(ROOT, emu.url, retry=FAST) as client:
        ledger = tmp_path / "ledger"
        first = migrate(
            table, client, tmp_path / "r1", ledger, TRY1, hash_format="sha256_hex", algorithm="seam"
        )
        assert first.migrated == 30
        # Users start verifying: Unkey replaces those seam hashes with its own.
        for s in secrets_[:10]:
            assert client.verify_key(s, MIGRATION).code == "VALID"
        assert len(emu.keys) == 30
        again = migrate(
            table,
            client,
            tmp_path / "r2",
            ledger,
            LedgerScope("dag", "run_2", "migrate"),
            hash_format="sha256_hex",
            algorithm="seam",
        )
        assert again.skipped == 30 and again.requests == 0
        assert len(emu.keys) == 30  # no second key for any of them
        for s in secrets_:
            assert client.verify_key(s, MIGRATION).code == "VALID"


def test_run_control_stops_sending_and_flushes_the_ledger(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    control = RunControl()
    stopped = threading.Event()

    def source() -> Iterator[pa.RecordBatch]:
        for i in range(50):
            if i == 5:
                # Stop from another thread, as Airflow's on_kill does from a signal handler.
                threading.Thread(target=lambda: (control.stop(timeout=30), stopped.set())).start()
                stopped.wait()
            yield from batches(keys(i * 20, (i + 1) * 20), 20)

    summary = run_migration(
        source(),
        client,
        MigrationConfig(MIGRATION, API, batch_size=20, retry=FAST),
        tmp_path / "out",
        control=control,
    )
    assert summary.stopped
    check(summary)
    # Before the stop, 100 rows were read; what was sent has an outcome and nothing went out after.
    sent_before = len(emu.hash_counts)
    assert summary.migrated == sent_before and summary.total < 50 * 20
    assert summary.failed_by_reason.get("not_sent", 0) == summary.total - sent_before


def test_run_control_flush_records_what_was_sent(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    control = RunControl()
    ledger = LedgerWriter(tmp_path / "ledger", TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    flushed: list[int] = []

    def source() -> Iterator[pa.RecordBatch]:
        yield from batches(keys(0, 60), 20)
        # Everything so far has been handed to the engine; stopping waits for it and flushes.
        assert control.stop(timeout=60)
        recorded = read_ledger(tmp_path / "ledger").column("reason").to_pylist()
        flushed.append(sum(r is None for r in recorded))
        yield from batches(keys(60, 80), 20)

    summary = run_migration(
        source(),
        client,
        MigrationConfig(MIGRATION, API, batch_size=20, max_concurrency=1, retry=FAST),
        tmp_path / "out",
        ledger=ledger,
        control=control,
    )
    assert summary.stopped
    # What was sent before the stop is in the ledger when stop() returns, before the run closes it.
    assert flushed == [summary.migrated] and summary.migrated > 0


def test_a_408_on_a_batch_is_split_after_one_attempt(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    emu.set_faults(error_rate=1.0, error_statuses=(408,))
    summary = run_migration(
        batches(keys(0, 4)), client, MigrationConfig(MIGRATION, API, batch_size=4, retry=FAST), tmp_path
    )
    # 4 keys -> 2 + 2 -> 1+1+1+1: each multi-key batch tried once; single keys get the whole policy.
    assert summary.failed_by_reason == {"rejected_by_api": 4}
    statuses = [r.status for r in emu.requests if r.path == MIGRATE]
    assert len(statuses) == 1 + 2 + 4 * FAST.max_attempts and set(statuses) == {408}


def test_mapped_tasks_share_a_ledger_without_touching_each_others_files(tmp_path: Path) -> None:
    writers = [
        LedgerWriter(
            tmp_path, LedgerScope("dag", "run_1", "migrate", i, 1), migration_id=MIGRATION, api_id=API
        )
        for i in range(2)
    ]
    for i, w in enumerate(writers):
        for part in range(3):
            w.record_migrated([b64(f"{i}-{part}")], [f"key_{i}_{part}"], [part], "req")
            w.flush()
    writers[0].close()  # compacts only map index 0's segments
    assert len(list(tmp_path.glob("seg-*-m1-*.parquet"))) == 3
    writers[1].close()
    table = read_ledger(tmp_path)
    assert sorted(table.column("map_index").to_pylist()) == [0, 0, 0, 1, 1, 1]
    assert len(list(tmp_path.glob("*.parquet"))) == 2


def test_for_sql_sources_an_anti_join_leaves_old_rows_out(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    """The query docs/reliability.md gives, against the outcome tables SqlOutcomeSink writes."""
    import sqlite3

    from airflow_provider_unkey.migration.read import SqlSource
    from airflow_provider_unkey.migration.record.sinks import SqlOutcomeSink

    db = str(tmp_path / "warehouse.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE api_keys (key_hash TEXT, owner TEXT)")
        conn.executemany("INSERT INTO api_keys VALUES (?, ?)", [(b64(i), f"user_{i}") for i in range(50)])
    emu.add_existing_hash(b64(7))
    query = """
        SELECT k.key_hash AS hash, k.owner AS "externalId"
        FROM api_keys AS k
        WHERE NOT EXISTS (SELECT 1 FROM unkey_outcomes_migrated AS m WHERE m.hash = k.key_hash)
          AND NOT EXISTS (
            SELECT 1 FROM unkey_outcomes_failed AS f
            WHERE f.hash = k.key_hash AND f.reason IN ('already_exists', 'unconfirmed')
          )
    """
    sink = SqlOutcomeSink(lambda: sqlite3.connect(db), "unkey_outcomes")
    with sqlite3.connect(db) as conn:
        sink.create_tables(conn)
    first = run_migration(
        SqlSource(lambda: sqlite3.connect(db), query),
        client,
        MigrationConfig(MIGRATION, API, retry=FAST),
        tmp_path / "r1",
    )
    assert (first.migrated, first.failed_by_reason) == (49, {"already_exists": 1})
    sink.write("run_1", tmp_path / "r1")
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO api_keys VALUES (?, ?)", [(b64(i), f"user_{i}") for i in range(50, 60)])
    emu.reset_log()
    second = run_migration(
        SqlSource(lambda: sqlite3.connect(db), query),
        client,
        MigrationConfig(MIGRATION, API, retry=FAST),
        tmp_path / "r2",
    )
    assert (second.total, second.migrated) == (10, 10)
    assert set(emu.hash_counts) == {b64(i) for i in range(50, 60)}


def test_a_long_run_rolls_over_to_new_compacted_files(tmp_path: Path) -> None:
    ledger = LedgerWriter(
        tmp_path, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600, compact_rows=20
    )
    for part in range(7):
        ledger.record_migrated([b64(f"{part}-{i}") for i in range(10)], ["k"] * 10, list(range(10)), "req")
        ledger.flush()
    # Every 20 rows a compacted file was put in place and its two segments deleted; the 7th segment
    # is still on its own, its rows in an unfinished hidden file.
    assert len(list(tmp_path.glob("seg-*.parquet"))) == 1
    assert len([p for p in tmp_path.glob("*.parquet") if not p.name.startswith("seg-")]) == 3
    assert read_ledger(tmp_path).num_rows == 70
    ledger.close()
    assert not list(tmp_path.glob("seg-*")) and not list(tmp_path.glob("_*"))
    assert read_ledger(tmp_path).num_rows == 70


def test_a_dead_trys_leftovers_are_compacted_by_the_next(tmp_path: Path) -> None:
    dead = LedgerWriter(tmp_path, TRY1, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    for part in range(3):
        dead.record_migrated([b64(f"dead-{part}")], ["k"], [part], "req")
        dead.flush()
    assert len(list(tmp_path.glob("_*.partial"))) == 1  # its compacted file, never finished
    retry = LedgerScope("dag", "run_1", "migrate", -1, 2)
    ledger = LedgerWriter(tmp_path, retry, migration_id=MIGRATION, api_id=API, flush_interval=3600)
    ledger.record_migrated([b64("new")], ["k"], [3], "req")
    ledger.close()
    assert not list(tmp_path.glob("seg-*")) and not list(tmp_path.glob("_*.partial"))
    assert read_ledger(tmp_path).num_rows == 4
