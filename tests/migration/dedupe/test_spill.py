"""Bounded memory: DigestSet and KnownHashes with budgets so small that they spill to disk many times,
against plain Python dicts and sets (and against the unlimited index), plus the spill files' cleanup."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from airflow_provider_unkey.migration.dedupe import spill
from airflow_provider_unkey.migration.dedupe.digests import DigestSet
from airflow_provider_unkey.migration.dedupe.spill import SortedRuns
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter
from airflow_provider_unkey.migration.prepare import hashes
from tests.migration.dedupe.test_dedupe import Reference, pool, random_calls
from tests.migration.test_engine import API, MIGRATION

MINE = LedgerScope("dag", "run_9", "migrate", -1, 2)


@pytest.fixture(params=[2, 5, 256], ids=lambda b: f"block{b}")
def block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Records a block of a disk run: tiny blocks make equal prefixes span blocks and windows."""
    monkeypatch.setattr(spill, "_BLOCK_RECORDS", request.param)
    return int(request.param)


def key(digest: np.ndarray) -> bytes:
    """What KnownHashes matches on: the first 16 bytes."""
    return bytes(digest[:16])


def spill_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# --- DigestSet ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1, 4096, 20_000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digest_set_spilling_matches_a_dict(budget: int, seed: int, block: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    digests = pool(rng, 2_000, collide=200)
    digests[:120, :8] = digests[0, :8]  # one prefix shared by 120 digests: spans blocks and runs
    calls = random_calls(rng, digests, n_calls=70, max_call=90)
    ours, ref = DigestSet(buffer_size=16, memory_budget=budget, spill_dir=tmp_path), Reference()
    for digest_rows, rows in calls:
        assert ours.add(digest_rows, rows).tolist() == ref.add(digest_rows, rows)
    assert ours.spills >= 5 and len(ours) == len(ref.first)
    # Everything seen is found again at its first row, wherever it lives; nothing else is.
    seen = np.array([np.frombuffer(k, np.uint8) for k in ref.first])
    assert ours.add(seen, np.full(len(seen), -7)).tolist() == list(ref.first.values())
    unseen = pool(np.random.default_rng(seed + 100), 300)
    unseen[:50, :8] = digests[0, :8]  # a known prefix, an unknown digest
    assert (ours.add(unseen, np.arange(300)) == -1).all()
    ours.close()


def test_duplicates_within_a_call_across_calls_and_across_a_spill(tmp_path: Path) -> None:
    d = pool(np.random.default_rng(4), 6)
    ours = DigestSet(buffer_size=1, memory_budget=1, spill_dir=tmp_path)  # spills after every call
    assert ours.add(d[[0, 1, 0, 2, 1]], np.array([10, 11, 12, 13, 14])).tolist() == [-1, -1, 10, -1, 11]
    assert ours.spills == 1 and ours.nbytes < 100  # only the filter and a sparse index in memory
    # Spilled ones, and new ones repeated in the same call that spills them next.
    assert ours.add(d[[3, 2, 3, 0, 4]], np.array([20, 21, 22, 23, 24])).tolist() == [-1, 13, 20, 10, -1]
    assert ours.add(d[[4, 3, 5, 5, 1]], np.array([30, 31, 32, 33, 34])).tolist() == [24, 20, -1, 32, 11]
    assert len(ours) == 6 and ours.spills == 3 and ours.disk_bytes == 6 * 40
    ours.close()


def test_disk_runs_stay_logarithmic_and_merged_files_go(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    ours = DigestSet(memory_budget=1, spill_dir=tmp_path)
    ref, total = Reference(), 0
    for _ in range(200):
        digest_rows = rng.integers(0, 256, size=(7, 32), dtype=np.uint8)
        rows = np.arange(total, total + 7)
        assert ours.add(digest_rows, rows).tolist() == ref.add(digest_rows, rows)
        total += 7
        runs = ours._index.disk_runs
        assert runs <= math.log2(total / 7) + 2
        assert len(spill_files(tmp_path)) == runs  # merged runs' files are deleted at once
    assert ours.spills == 200 and ours.disk_bytes == total * 40
    ours.close()


def test_unlimited_budget_never_spills(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ours = DigestSet(buffer_size=8, memory_budget=None, spill_dir=tmp_path)
    digests = rng.integers(0, 256, size=(5_000, 32), dtype=np.uint8)
    ours.add(digests, np.arange(5_000))
    assert ours.spills == 0 and ours.nbytes == 5_000 * 40 and ours._index.spill_directory is None
    assert spill_files(tmp_path) == []


@pytest.mark.parametrize("budget", [0, -1, 1.5, True, "1MiB"])
def test_a_budget_that_is_not_a_positive_byte_count_is_rejected(budget: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        DigestSet(memory_budget=budget)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget"):
        KnownHashes.load(tmp_path, MINE, "sha256_base64", memory_budget=budget)  # type: ignore[arg-type]


def test_spill_files_are_removed_on_close_and_on_garbage_collection(tmp_path: Path) -> None:
    digests = np.random.default_rng(5).integers(0, 256, size=(500, 32), dtype=np.uint8)
    closed = DigestSet(buffer_size=16, memory_budget=2048, spill_dir=tmp_path / "a")
    (tmp_path / "a").mkdir()
    for start in range(0, 500, 50):
        closed.add(digests[start : start + 50], np.arange(start, start + 50))
    directory = closed._index.spill_directory
    assert directory is not None and Path(directory).parent == tmp_path / "a"
    assert spill_files(tmp_path / "a")
    closed.close()
    assert list((tmp_path / "a").iterdir()) == []
    closed.close()  # twice is fine

    (tmp_path / "b").mkdir()
    with DigestSet(memory_budget=2048, spill_dir=tmp_path / "b") as scoped:
        scoped.add(digests, np.arange(500))
        assert spill_files(tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []

    (tmp_path / "c").mkdir()
    dropped = DigestSet(memory_budget=2048, spill_dir=tmp_path / "c")
    dropped.add(digests, np.arange(500))
    assert spill_files(tmp_path / "c")
    del dropped
    gc.collect()
    assert list((tmp_path / "c").iterdir()) == []


def test_the_default_spill_directory_is_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ours = DigestSet(memory_budget=1)
    ours.add(np.zeros((1, 32), np.uint8), np.array([0]))
    assert ours._index.spill_directory is not None
    assert Path(ours._index.spill_directory).parent == tmp_path
    assert Path(ours._index.spill_directory).name.startswith("unkey-dedupe-")
    ours.close()
    assert list(tmp_path.iterdir()) == []


# --- SortedRuns: repeated keys answer with the first one added -------------------------------------


@pytest.mark.parametrize("budget", [1, 3000, None])
def test_repeated_keys_answer_with_the_first_added_before_and_after_sealing(
    budget: int | None, block: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    prefixes = rng.integers(0, 40, 3_000).astype(np.uint64) << np.uint64(40)  # many shared prefixes
    tails = rng.integers(0, 3, 3_000).astype(np.uint64)  # and many repeated keys
    runs = SortedRuns(np.uint64, np.int64, buffer_size=32, memory_budget=budget, spill_dir=tmp_path)
    first: dict[tuple[int, int], int] = {}
    for start in range(0, 3_000, 97):
        stop = min(start + 97, 3_000)
        runs.add(prefixes[start:stop], tails[start:stop], np.arange(start, stop, dtype=np.int64))
        for i in range(start, stop):
            first.setdefault((int(prefixes[i]), int(tails[i])), i)
    queries_p = rng.integers(0, 42, 2_000).astype(np.uint64) << np.uint64(40)
    queries_t = rng.integers(0, 4, 2_000).astype(np.uint64)
    want = [first.get((int(p), int(t)), -1) for p, t in zip(queries_p, queries_t, strict=True)]
    for _ in ("before", "after"):
        found = np.full(2_000, -1, dtype=np.int64)
        runs.lookup(queries_p, queries_t, found)
        assert found.tolist() == want
        runs.seal()
    assert runs.disk_runs == (0 if budget is None else 1)
    runs.close()


# --- KnownHashes --------------------------------------------------------------------------------------


def write_ledger(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Records of three other runs and of this task instance's first try (with repeats and 128-bit
    look-alikes); the digests recorded by others and by this task instance."""
    pool_ = rng.integers(0, 256, size=(1_500, 32), dtype=np.uint8)
    pool_[:60, :8] = pool_[0, :8]  # one shared 8-byte prefix
    pool_[60:80, :16] = pool_[60, :16]  # the same first 16 bytes: one hash to a 128-bit match
    others: list[np.ndarray] = []
    mine: list[np.ndarray] = []
    for scope, picks in (
        (LedgerScope("dag", "run_1", "migrate"), rng.integers(0, 1_000, 700)),
        (LedgerScope("dag", "run_2", "migrate", 3), rng.integers(0, 1_200, 500)),
        (LedgerScope("other_dag", "run_9", "migrate", -1, 2), rng.integers(200, 1_300, 400)),
        (LedgerScope("dag", "run_9", "migrate", -1, 1), rng.integers(500, 1_400, 600)),
    ):
        writer = LedgerWriter(root, scope, migration_id=MIGRATION, api_id=API, flush_interval=3600)
        for start in range(0, len(picks), 64):
            chosen = pool_[picks[start : start + 64]]
            text = hashes.encode(chosen, "sha256_base64").to_pylist()
            writer.record_migrated(
                text, [f"key_{start + i}" for i in range(len(text))], list(range(len(text))), "r"
            )
            writer.flush()
            (mine if scope.run_id == MINE.run_id and scope.dag_id == MINE.dag_id else others).append(chosen)
        writer.close()
    return np.concatenate(others), np.concatenate(mine)


@pytest.mark.parametrize("budget", [1, 2048, 30_000])
def test_known_hashes_spilling_matches_the_unlimited_index_and_a_set(
    budget: int, block: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(budget)
    others, mine = write_ledger(tmp_path / "ledger", rng)
    unlimited = KnownHashes.load(
        tmp_path / "ledger", MINE, "sha256_base64", memory_budget=None, batch_rows=100
    )
    spilled = KnownHashes.load(
        tmp_path / "ledger", MINE, "sha256_base64", memory_budget=budget, batch_rows=100, spill_dir=tmp_path
    )
    assert spilled.disk_bytes > 0 and unlimited.disk_bytes == 0
    assert (spilled.mine_count, spilled.others_count) == (unlimited.mine_count, unlimited.others_count)
    assert (spilled.mine_count, spilled.others_count) == (len(mine), len(others))
    others_set = {key(d) for d in others}
    record_hashes = hashes.digests(spilled.records.column("hash"), "sha256_base64")
    first_record: dict[bytes, int] = {}
    for i, d in enumerate(record_hashes):
        first_record.setdefault(key(d), i)
    queries = np.concatenate([others, mine, rng.integers(0, 256, size=(500, 32), dtype=np.uint8)])
    queries[-100:, :8] = others[0, :8]  # unknown, with a known prefix
    queries[-50:, :16] = mine[0, :16]  # "unknown", but a 128-bit match of a hash of mine
    queries = queries[rng.permutation(len(queries))]
    for start in range(0, len(queries), 333):  # unsorted batches, as the engine looks them up
        q = queries[start : start + 333]
        got, want = spilled.lookup(q), unlimited.lookup(q)
        assert got.mine.tolist() == want.mine.tolist()
        assert got.known.tolist() == want.known.tolist()
        assert got.mine.tolist() == [first_record.get(key(d), -1) for d in q]
        assert got.known.tolist() == [key(d) in others_set and key(d) not in first_record for d in q]
    spilled.close()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("unkey-")] == []


def test_known_hashes_records_stay_in_index_order(tmp_path: Path) -> None:
    """What ``mine`` points at is the record of that hash (``records`` and the index agree)."""
    rng = np.random.default_rng(12)
    _, mine = write_ledger(tmp_path / "ledger", rng)
    known = KnownHashes.load(tmp_path / "ledger", MINE, "sha256_base64", memory_budget=1, batch_rows=50)
    seen = known.lookup(mine)
    assert (seen.mine >= 0).all()
    recorded = hashes.digests(known.records.take(pa.array(seen.mine)).column("hash"), "sha256_base64")
    assert (recorded[:, :16] == mine[:, :16]).all()
    known.close()
