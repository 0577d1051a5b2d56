"""The engine over real HTTP: batching, concurrent sending, splitting, fatal errors, faults, dry runs.

Every run is checked for the invariant (each row read has exactly one outcome) and against what the
emulator actually received.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_unkey import rules
from airflow_provider_unkey.client import MigrateKeysResult, RetryPolicy, UnkeyClient
from airflow_provider_unkey.migration.engine import (
    Batch,
    Batcher,
    MigrationAborted,
    MigrationConfig,
    MigrationEngine,
    MigrationSummary,
    run_migration,
)
from airflow_provider_unkey.migration.prepare.preparer import PreparedRows
from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter
from airflow_provider_unkey.testing import Faults, UnkeyEmulator

ROOT, API, MIGRATION = "unkey_root_test", "api_test", "mig_test"
MIGRATE = "/v2/keys.migrateKeys"
#: Retries in milliseconds: a whole run of failing attempts costs next to nothing.
FAST = RetryPolicy(max_attempts=3, max_elapsed=10, initial_wait=0.001, max_wait=0.004, jitter=0.0)


def b64(i: int | str) -> str:
    return base64.b64encode(hashlib.sha256(f"sk_{i}".encode()).digest()).decode()


class RecordingClient(UnkeyClient):
    """An UnkeyClient that notes the size of every body the engine hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[int] = []
        self._bodies_lock = threading.Lock()

    def migrate_keys(
        self,
        migration_id: str,
        api_id: str,
        keys: Sequence[Mapping[str, Any]] | bytes,
        *,
        retry: RetryPolicy | None = None,
    ) -> MigrateKeysResult:
        assert isinstance(keys, bytes)
        with self._bodies_lock:
            self.bodies.append(len(keys))
        return super().migrate_keys(migration_id, api_id, keys, retry=retry)


@pytest.fixture
def emu() -> Iterator[UnkeyEmulator]:
    with UnkeyEmulator.quick(root_key=ROOT, api_id=API, migration_id=MIGRATION) as emulator:
        yield emulator


@pytest.fixture
def client(emu: UnkeyEmulator) -> Iterator[RecordingClient]:
    c = RecordingClient(ROOT, emu.url, retry=FAST, pool_size=8)
    yield c
    c.close()


def migrate_requests(emu: UnkeyEmulator) -> list[Any]:
    return [r for r in emu.requests if r.path == MIGRATE]


def outcomes(summary: MigrationSummary) -> tuple[pa.Table, pa.Table]:
    return pq.read_table(summary.outputs["migrated"]), pq.read_table(summary.outputs["failed"])


def assert_every_row_once(summary: MigrationSummary) -> tuple[pa.Table, pa.Table]:
    """The invariant, from the files: rows read == migrated + failed, each source row exactly once."""
    migrated, failed = outcomes(summary)
    assert summary.total == summary.migrated + summary.failed + summary.would_send
    assert migrated.num_rows == summary.migrated and failed.num_rows == summary.failed
    rows = migrated.column("source_row").to_pylist() + failed.column("source_row").to_pylist()
    if not summary.would_send:
        assert sorted(rows) == list(range(summary.total))
    assert len(rows) == len(set(rows))
    counts: dict[str, int] = {}
    for reason in failed.column("reason").to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    assert counts == summary.failed_by_reason
    return migrated, failed


def source(
    n_batches: int, rows: int, *, start: int = 0, invalid_every: int = 0, dup_every: int = 0
) -> Iterator[pa.RecordBatch]:
    """Record batches of keys with a name and roles; some rows invalid, some repeating an earlier hash."""
    row = start
    for _ in range(n_batches):
        hashes, names, roles = [], [], []
        for _ in range(rows):
            if dup_every and row % dup_every == dup_every - 1:
                hashes.append(b64(row // 2))  # the hash of an earlier row, maybe of an earlier batch
            else:
                hashes.append(b64(row))
            names.append("" if invalid_every and row % invalid_every == 0 else f"key {row}")
            roles.append("admin,reader" if row % 2 else "")
            row += 1
        yield pa.record_batch({"hash": hashes, "name": names, "roles": roles})


def prepared(keys: list[dict[str, Any]]) -> PreparedRows:
    n = len(keys)
    return PreparedRows(
        np.arange(n, dtype=np.int64),
        [k["hash"] for k in keys],
        np.zeros((n, 32), np.uint8),
        [json.dumps(k, separators=(",", ":")).encode() for k in keys],
    )


def batch_of(keys: list[dict[str, Any]], first_row: int = 0) -> Batch:
    return Batch(
        list(range(first_row, first_row + len(keys))),
        [k["hash"] for k in keys],
        [json.dumps(k, separators=(",", ":")).encode() for k in keys],
    )


# --- Batcher ----------------------------------------------------------------------------------------------
def test_batcher_cuts_by_count() -> None:
    batcher = Batcher(MIGRATION, API, batch_size=10, max_request_bytes=rules.MAX_BODY_BYTES)
    keys = [{"hash": b64(i)} for i in range(25)]
    batches = list(batcher.add(prepared(keys[:13])))
    batches += list(batcher.add(prepared(keys[13:])))
    tail = batcher.flush()
    assert tail is not None
    batches.append(tail)
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [h for b in batches for h in b.hashes] == [k["hash"] for k in keys]
    assert batcher.flush() is None
    body = json.loads(batcher.body(batches[0]))
    assert body == {"migrationId": MIGRATION, "apiId": API, "keys": keys[:10]}


def test_batcher_cuts_by_bytes_and_no_body_is_over_the_limit() -> None:
    rng = np.random.default_rng(3)
    limit = 4096
    keys = [{"hash": b64(i), "meta": {"pad": "x" * int(rng.integers(0, 900))}} for i in range(300)]
    batcher = Batcher(MIGRATION, API, batch_size=1000, max_request_bytes=limit)
    batches = list(batcher.add(prepared(keys)))
    tail = batcher.flush()
    assert tail is not None
    batches.append(tail)
    sizes = [len(batcher.body(b)) for b in batches]
    assert max(sizes) <= limit
    # Greedy: each batch but the last is full, the next key would not have fitted.
    for batch, following in itertools.pairwise(batches):
        assert len(batcher.body(batch)) + 1 + len(following.keys[0]) > limit
    assert [json.loads(k) for b in batches for k in b.keys] == keys
    assert [r for b in batches for r in b.rows] == list(range(300))
    for b in batches:
        assert rules.schema_violations(json.loads(batcher.body(b))) == []


def test_batcher_checks_its_limits() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Batcher(MIGRATION, API, batch_size=0, max_request_bytes=4096)
    with pytest.raises(ValueError, match="max_request_bytes"):
        Batcher(MIGRATION, API, batch_size=10, max_request_bytes=100)
    with pytest.raises(ValueError, match="max_request_bytes"):
        Batcher(MIGRATION, API, batch_size=10, max_request_bytes=rules.MAX_BODY_BYTES + 1)


# --- a whole run, concurrent, no faults -----------------------------------------------------------------------
def test_concurrent_run_migrates_every_valid_hash_exactly_once(
    emu: UnkeyEmulator, client: RecordingClient, tmp_path: Path
) -> None:
    emu.set_faults(latency=0.005)  # enough for requests to overlap
    summary = run_migration(
        source(6, 400, invalid_every=41, dup_every=13),
        client,
        MigrationConfig(MIGRATION, API, batch_size=97, max_request_bytes=6000, max_concurrency=4, retry=FAST),
        tmp_path,
    )
    migrated, failed = assert_every_row_once(summary)
    assert summary.total == 2400
    expected_invalid = sum(1 for r in range(2400) if r % 41 == 0)
    assert summary.failed_by_reason["invalid"] == expected_invalid
    assert set(summary.failed_by_reason) == {"invalid", "duplicate_in_source"}

    # What the emulator received: each valid, first-seen hash once, nothing else.
    sent = emu.hash_counts
    assert set(sent.values()) == {1}
    assert set(sent) == set(migrated.column("hash").to_pylist())
    assert len(emu.keys) == summary.migrated
    assert summary.requests == summary.batches == len(migrate_requests(emu))
    assert all(r.status == 200 for r in migrate_requests(emu))
    assert max(client.bodies) <= 6000
    # The key ids recorded are the emulator's, for the right source rows.
    for h, key_id, row in zip(
        *(migrated.column(c).to_pylist() for c in ("hash", "key_id", "source_row")), strict=True
    ):
        stored = emu.keys[h]
        assert stored.key_id == key_id
        assert stored.name == f"key {row}"
        assert stored.roles == (["admin", "reader"] if row % 2 else [])
    # A duplicate points at the row whose hash went out.
    first_row = dict(
        zip(migrated.column("hash").to_pylist(), migrated.column("source_row").to_pylist(), strict=True)
    )
    duplicates = failed.filter(pa.compute.equal(failed.column("reason"), "duplicate_in_source"))
    assert duplicates.num_rows > 0
    for h, detail in zip(
        duplicates.column("hash").to_pylist(), duplicates.column("detail").to_pylist(), strict=True
    ):
        if h in first_row:
            assert detail == f"hash: the same hash as source row {first_row[h]}"
    # Requests did overlap.
    spans = sorted((r.started, r.finished) for r in migrate_requests(emu))
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_dry_run_sends_nothing(emu: UnkeyEmulator, client: RecordingClient, tmp_path: Path) -> None:
    for maybe_client in (None, client):
        summary = run_migration(
            source(3, 100, invalid_every=10),
            maybe_client,
            MigrationConfig(MIGRATION, API, dry_run=True),
            tmp_path / str(maybe_client),
        )
        assert summary.dry_run
        assert summary.total == 300
        assert summary.would_send == 270 and summary.migrated == 0
        assert summary.failed_by_reason == {"invalid": 30}
        assert_every_row_once(summary)
    assert emu.requests == []
    assert client.bodies == []
    with pytest.raises(ValueError, match="client is needed"):
        run_migration(source(1, 1), None, MigrationConfig(MIGRATION, API), tmp_path)


# --- splitting ------------------------------------------------------------------------------------------------
def run_engine(
    client: UnkeyClient, batches: list[Batch], tmp_path: Path, **kw: Any
) -> tuple[MigrationEngine, OutcomeWriter]:
    writer = OutcomeWriter(tmp_path)
    batcher = Batcher(MIGRATION, API, batch_size=1000, max_request_bytes=rules.MAX_BODY_BYTES)
    engine = MigrationEngine(client, MIGRATION, API, batcher, writer, retry=FAST, **kw)
    try:
        engine.run(batches)
    finally:
        writer.close()
    return engine, writer


def test_a_key_the_server_500s_costs_only_itself(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    """A role given twice passes no preparer, but sent anyway it fails the whole request (500)."""
    keys = [{"hash": b64(i), "roles": ["a", "b"]} for i in range(16)]
    keys[11]["roles"] = ["a", "a"]
    engine, writer = run_engine(client, [batch_of(keys)], tmp_path)
    assert writer.migrated_count == 15
    assert dict(writer.failed_by_reason) == {"rejected_by_api": 1}
    failed = pq.read_table(tmp_path / "failed.parquet").to_pylist()
    assert [(f["source_row"], f["hash"]) for f in failed] == [(11, b64(11))]
    assert "500" in failed[0]["detail"] and "duplicate role" in failed[0]["detail"]
    assert set(emu.keys) == {k["hash"] for k in keys} - {b64(11)}
    # Halving isolates it: 16 -> 8 -> 4 -> 2 fail once each (a batch's 500 is not retried, it is split),
    # the lone key gets every attempt; one good half per level.
    assert engine.requests == 1 + 2 * 4
    statuses = [r.status for r in migrate_requests(emu)]
    assert statuses.count(500) == 4 + FAST.max_attempts and statuses.count(200) == 4


def test_a_key_the_server_400s_is_dropped_by_its_index(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    """A monthly refill without refillDay passes the schema; the server's 400 names the key."""
    keys = [{"hash": b64(i), "credits": {"remaining": 5}} for i in range(10)]
    keys[3]["credits"] = {"remaining": 5, "refill": {"interval": "monthly", "amount": 5}}
    engine, writer = run_engine(client, [batch_of(keys, first_row=100)], tmp_path)
    assert writer.migrated_count == 9
    failed = pq.read_table(tmp_path / "failed.parquet").to_pylist()
    assert [(f["source_row"], f["reason"]) for f in failed] == [(103, "rejected_by_api")]
    assert failed[0]["detail"] == "credits.refill.refillDay: is required when interval is monthly"
    assert engine.requests == 2  # no halving: the 400 said which key
    assert len(emu.keys) == 9


# --- fatal answers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "what, fix",
    [
        ("unknown root key", "Unkey does not know the root key (401): put a valid root key"),
        (
            "no create permission",
            "may not create keys in API 'api_test' (403): give it the permission api.*.create_key",
        ),
        ("unknown api", "does not know API 'api_gone' in the root key's workspace (404): check api_id"),
        ("unknown migration", "does not know migration id 'mig_gone' (404)"),
    ],
)
def test_401_403_404_abort_the_run_and_record_the_rest_as_not_sent(
    emu: UnkeyEmulator, tmp_path: Path, what: str, fix: str
) -> None:
    root, api, migration = ROOT, API, MIGRATION
    if what == "unknown root key":
        root = "unkey_root_wrong"
    elif what == "no create permission":
        root = "unkey_root_reader"
        emu.add_root_key(root, permissions=["api.*.read_api"])
    elif what == "unknown api":
        api = "api_gone"
    else:
        migration = "mig_gone"
    concurrency = 2
    with UnkeyClient(root, emu.url, retry=FAST) as client, pytest.raises(MigrationAborted) as caught:
        run_migration(
            source(40, 50),
            client,
            MigrationConfig(migration, api, batch_size=50, max_concurrency=concurrency, retry=FAST),
            tmp_path,
        )
    assert fix in str(caught.value)
    summary: MigrationSummary = caught.value.summary  # type: ignore[attr-defined]
    assert summary.aborted == str(caught.value)
    assert summary.migrated == 0
    assert summary.failed_by_reason == {"not_sent": summary.total}
    # The source stopped being read soon after, and only the requests in flight went out.
    assert 50 <= summary.total < 40 * 50 // 2
    assert 1 <= len(migrate_requests(emu)) <= concurrency
    assert emu.keys == {}
    _, failed = assert_every_row_once(summary)
    assert all(d.startswith("not sent: the run stopped") for d in failed.column("detail").to_pylist())


# --- faults -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [502, 503])
def test_a_5xx_storm_gives_up_after_the_retries(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path, status: int
) -> None:
    emu.set_faults(error_rate=1.0, error_statuses=(status,))
    summary = run_migration(
        source(3, 40),
        client,
        MigrationConfig(MIGRATION, API, batch_size=30, max_concurrency=2, retry=FAST),
        tmp_path,
    )
    _, failed = assert_every_row_once(summary)
    assert summary.failed_by_reason == {"gave_up": 120}
    assert summary.batches == 4
    assert len(migrate_requests(emu)) == 4 * FAST.max_attempts
    assert all(
        d.startswith(f"retries exhausted after {FAST.max_attempts} attempt(s): Unkey API error {status}")
        for d in failed.column("detail").to_pylist()
    )
    assert emu.keys == {}


def test_a_response_lost_after_commit_is_unconfirmed(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    emu.set_faults(drop_after_commit_rate=1.0)
    summary = run_migration(
        source(2, 25),
        client,
        MigrationConfig(MIGRATION, API, batch_size=10, max_concurrency=3, retry=FAST),
        tmp_path,
    )
    _, failed = assert_every_row_once(summary)
    assert summary.failed_by_reason == {"unconfirmed": 50}
    assert len(emu.keys) == 50  # created by the first attempts, whose answers never came
    assert set(emu.hash_counts.values()) == {2}  # sent, lost, sent again
    assert all("response was lost" in d for d in failed.column("detail").to_pylist())


def test_hashes_already_in_unkey_are_already_exists(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    existing = {b64(i) for i in range(0, 60, 7)}
    for h in existing:
        emu.add_existing_hash(h)
    summary = run_migration(
        source(2, 30), client, MigrationConfig(MIGRATION, API, batch_size=16, retry=FAST), tmp_path
    )
    _, failed = assert_every_row_once(summary)
    assert summary.failed_by_reason == {"already_exists": len(existing)}
    assert set(failed.column("hash").to_pylist()) == existing
    assert set(failed.column("detail").to_pylist()) == {"a key with this hash already exists in Unkey"}
    assert summary.migrated == 60 - len(existing)
    assert set(emu.hash_counts.values()) == {1}


def test_lost_responses_then_giving_up_says_keys_may_exist(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    # The first attempt commits and loses its response, the others are reset: the batch gives up,
    # and says the keys may exist.
    emu.set_faults(drop_after_commit_rate=1.0)
    client.on_retry = lambda *_: emu.set_faults(drop_after_commit_rate=0.0, reset_rate=1.0)
    summary = run_migration(
        source(1, 10), client, MigrationConfig(MIGRATION, API, batch_size=10, retry=FAST), tmp_path
    )
    _, failed = assert_every_row_once(summary)
    assert summary.failed_by_reason == {"gave_up": 10}
    detail = failed.column("detail").to_pylist()[0]
    assert f"{FAST.max_attempts} attempt(s) got no response" in detail
    assert "so Unkey may have created it" in detail
    assert len(emu.keys) == 10


def test_progress_is_logged_with_rate_eta_and_outcomes(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    lines: list[str] = []
    summary = run_migration(
        source(4, 50, invalid_every=10),
        client,
        MigrationConfig(MIGRATION, API, batch_size=20, retry=FAST, progress_interval=0.0),
        tmp_path,
        total_rows=200,
        emit=lines.append,
    )
    assert_every_row_once(summary)
    assert lines, "no progress line"
    last = lines[-1]
    assert last.startswith("200/200 keys (100.0%), ETA 0s, ")
    assert "keys/s" in last and f"migrated {summary.migrated:,}" in last and "invalid" in last
    # Without a known total, the count stands alone.
    lines.clear()
    run_migration(
        source(1, 10, start=1000),
        client,
        MigrationConfig(MIGRATION, API, progress_interval=0.0),
        tmp_path / "b",
        emit=lines.append,
    )
    assert lines[-1].startswith("10 keys, ")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chaos_no_key_is_lost_or_misreported(tmp_path: Path, seed: int) -> None:
    """5xx, resets, lost responses and 429 storms at once: what Unkey holds and what we report agree.

    Every key Unkey created is reported either as migrated (with the key id Unkey gave it) or, when its
    response was lost, as unconfirmed or as given up with a warning that it may exist. Every key
    reported as migrated exists in Unkey under that key id.
    """
    faults = Faults(error_rate=0.15, reset_rate=0.05, drop_after_commit_rate=0.1, rate_limit_storm=3)
    with UnkeyEmulator.quick(
        root_key=ROOT, api_id=API, migration_id=MIGRATION, faults=faults, seed=seed
    ) as emu:
        emu.add_existing_hash(b64(5))
        client = UnkeyClient(ROOT, emu.url, retry=FAST, pool_size=4)
        summary = run_migration(
            source(6, 100, invalid_every=37, dup_every=41),
            client,
            MigrationConfig(MIGRATION, API, batch_size=25, max_concurrency=4, retry=FAST),
            tmp_path,
        )
        stored = {h: k.key_id for h, k in emu.keys.items() if k.api_id == API}
    migrated, failed = assert_every_row_once(summary)
    reported = dict(
        zip(migrated.column("hash").to_pylist(), migrated.column("key_id").to_pylist(), strict=True)
    )
    for h, key_id in reported.items():
        assert stored.get(h) == key_id, h
    failures = failed.to_pylist()
    maybe_created = {
        f["hash"]
        for f in failures
        if f["reason"] == "unconfirmed" or "may have created" in (f["detail"] or "")
    }
    unexplained = set(stored) - set(reported) - maybe_created
    assert not unexplained, sorted(unexplained)[:5]
    # A hash sent is reported once: migrated, or failed when sending (duplicates fail earlier, by row).
    assert not set(reported) & {f["hash"] for f in failures if f["stage"] == "send"}
    assert b64(5) not in stored  # the pre-existing key belongs to another workspace
    # The pre-existing key is never reported as ours: already_exists; unconfirmed when its batch also
    # lost a response (the API cannot tell the two apart then); or gave_up when its batch ran out of
    # retries (three attempts, in this much chaos).
    assert {f["reason"] for f in failures if f["hash"] == b64(5)} <= {
        "already_exists",
        "unconfirmed",
        "gave_up",
    }
    assert b64(5) not in reported


def test_keys_of_a_lost_response_stay_unconfirmed_through_a_split(
    emu: UnkeyEmulator, client: UnkeyClient, tmp_path: Path
) -> None:
    """The first attempt commits and loses its response, the retry gets a 500: the engine splits the
    batch, and the halves find the keys existing. Those keys were most likely created by this run:
    unconfirmed, not already_exists."""
    emu.set_faults(drop_after_commit_rate=1.0)

    def then_500(*_: Any) -> None:
        emu.set_faults(drop_after_commit_rate=0.0, error_rate=1.0, error_statuses=(500,))
        client.on_retry = None

    client.on_retry = then_500
    keys = [{"hash": b64(i)} for i in range(8)]
    # The 500 ends with the first (multi-key) retry: clear it once the batch has been split.
    calls = {"n": 0}
    real_migrate = client.migrate_keys

    def migrate(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the halves go out after the retry's 500
            emu.set_faults(error_rate=0.0)
        return real_migrate(*args, **kwargs)

    client.migrate_keys = migrate  # type: ignore[method-assign]
    engine, writer = run_engine(client, [batch_of(keys)], tmp_path)
    writer.close()
    failed = pq.read_table(tmp_path / "failed.parquet").to_pylist()
    assert engine.requests == 3  # the batch (two attempts), then its two halves
    assert writer.migrated_count == 0
    assert {f["reason"] for f in failed} == {"unconfirmed"}, failed
    assert len(failed) == 8 and len(emu.keys) == 8
