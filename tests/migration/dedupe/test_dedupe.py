"""DigestSet against a plain Python dict, on random data, forced prefix collisions and compactions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from airflow_provider_unkey.migration.dedupe.digests import DigestSet


class Reference:
    """What DigestSet must answer: a dict of digest -> first source row."""

    def __init__(self) -> None:
        self.first: dict[bytes, int] = {}

    def add(self, digest_rows: np.ndarray, rows: np.ndarray) -> list[int]:
        out = []
        for digest, row in zip(digest_rows, rows.tolist(), strict=True):
            key = bytes(digest)
            if key in self.first:
                out.append(self.first[key])
            else:
                self.first[key] = row
                out.append(-1)
        return out


def pool(rng: np.random.Generator, size: int, collide: int = 0) -> np.ndarray:
    """``size`` distinct digests; ``collide`` of them share their first 8 bytes with another one."""
    digests = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    for _ in range(collide):
        a, b = rng.integers(0, size, 2)
        digests[b, :8] = digests[a, :8]
    digests[:, 31] = np.arange(size) % 256  # keep them distinct whatever the collisions did
    digests[:, 30] = np.arange(size) // 256 % 256
    assert len({bytes(d) for d in digests}) == size
    return digests


def run_both(
    calls: list[tuple[np.ndarray, np.ndarray]], buffer_size: int
) -> tuple[DigestSet, list[np.ndarray], list[list[int]]]:
    ours, ref = DigestSet(buffer_size=buffer_size), Reference()
    got, want = [], []
    for digest_rows, rows in calls:
        got.append(ours.add(digest_rows, rows))
        want.append(ref.add(digest_rows, rows))
    return ours, got, want


def random_calls(
    rng: np.random.Generator, digests: np.ndarray, n_calls: int, max_call: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    calls, row = [], 0
    for _ in range(n_calls):
        n = int(rng.integers(0, max_call + 1))
        picks = rng.integers(0, len(digests), n)
        calls.append((digests[picks], np.arange(row, row + n, dtype=np.int64)))
        row += n
    return calls


@pytest.mark.parametrize("buffer_size", [1, 3, 64, 65_536])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_dict_on_random_data(buffer_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # A small pool drawn with replacement: duplicates within calls and across calls.
    digests = pool(rng, 400, collide=40)
    calls = random_calls(rng, digests, n_calls=60, max_call=50)
    ours, got, want = run_both(calls, buffer_size)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.int64
        assert g.tolist() == w
    assert len(ours) == len({bytes(d) for c, _ in calls for d in c})
    inner = sum(len(w) - len({bytes(d) for d in c}) for (c, _), w in zip(calls, want, strict=True))
    assert inner > 0, "the data must hold duplicates inside a call"


def test_duplicates_inside_one_call_point_at_the_first_row() -> None:
    d = pool(np.random.default_rng(3), 3)
    digest_rows = d[[0, 1, 0, 2, 1, 0]]
    rows = np.array([10, 11, 12, 13, 14, 15])
    ours = DigestSet()
    assert ours.add(digest_rows, rows).tolist() == [-1, -1, 10, -1, 11, 10]
    # Across calls: the first occurrence stays the one of the earlier call.
    assert ours.add(d[[2, 0]], np.array([20, 21])).tolist() == [13, 10]
    assert len(ours) == 3


def test_forced_prefix_collisions_across_and_inside_calls() -> None:
    """Distinct digests with the same first 8 bytes: the prefix search must fall back to the full digest."""
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, size=32, dtype=np.uint8)
    same_prefix = np.tile(base, (6, 1))
    same_prefix[:, 8] = [5, 1, 4, 2, 3, 0]  # differ only after the prefix, in no particular order
    for buffer_size in (1, 2, 1000):
        ours, ref = DigestSet(buffer_size=buffer_size), Reference()
        calls = [
            (same_prefix[[0, 2]], np.array([0, 1])),
            (same_prefix[[1, 1, 3]], np.array([2, 3, 4])),  # new, its duplicate, new
            (same_prefix[[5, 4, 0, 3, 2, 1]], np.arange(5, 11)),  # the ones not yet seen come last
            (same_prefix, np.arange(11, 17)),
        ]
        for digest_rows, rows in calls:
            assert ours.add(digest_rows, rows).tolist() == ref.add(digest_rows, rows)
        assert len(ours) == 6


def test_prefix_collisions_with_many_runs() -> None:
    rng = np.random.default_rng(5)
    digests = pool(rng, 300, collide=0)
    digests[:150, :8] = digests[0, :8]  # half of them share one prefix
    calls = random_calls(rng, digests, n_calls=40, max_call=30)
    _, got, want = run_both(calls, buffer_size=4)
    assert [g.tolist() for g in got] == want


def test_compaction_boundaries_and_logarithmic_runs() -> None:
    rng = np.random.default_rng(9)
    buffer_size = 16
    ours = DigestSet(buffer_size=buffer_size)
    ref = Reference()
    total = 0
    # Calls that land exactly on, just below and just above the buffer size.
    for n in [16, 15, 1, 17, 16, 32, 5, 11, 64, 1, 1, 14] * 6:
        digest_rows = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
        rows = np.arange(total, total + n)
        assert ours.add(digest_rows, rows).tolist() == ref.add(digest_rows, rows)
        # Every digest added so far is found again, whichever run or buffer holds it.
        seen = np.array([np.frombuffer(k, np.uint8) for k in ref.first])
        again = ours.add(seen, np.full(len(seen), -5))
        assert again.tolist() == list(ref.first.values())
        total += n
    assert len(ours) == len(ref.first) == total
    merged = len(ours._index.memory_runs)
    assert merged <= math.log2(total / buffer_size) + 2
    assert ours.nbytes == total * (8 + 24 + 8)  # prefix, rest of the digest, source row


def test_non_contiguous_input_and_empty_calls() -> None:
    rng = np.random.default_rng(1)
    d = pool(rng, 20)
    wide = np.zeros((20, 64), np.uint8)
    wide[:, ::2] = d  # a strided view, not C-contiguous
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    ours = DigestSet()
    assert ours.add(np.zeros((0, 32), np.uint8), np.zeros(0, np.int64)).tolist() == []
    assert ours.add(view, np.arange(20)).tolist() == [-1] * 20
    assert ours.add(d[::-1], np.arange(20, 40)).tolist() == list(range(19, -1, -1))
    assert ours.add(np.zeros((0, 32), np.uint8), np.zeros(0, np.int64)).tolist() == []
    assert len(ours) == 20
