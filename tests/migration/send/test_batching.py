"""``Batcher`` places whole runs of keys at once; it must cut exactly where a key-by-key packer would,
also when the engine changes ``batch_size`` between chunks."""

from __future__ import annotations

import json
import random

import numpy as np

from airflow_provider_unkey.migration.prepare.preparer import PreparedRows
from airflow_provider_unkey.migration.send.batching import Batch, Batcher


def reference(
    chunks: list[list[bytes]], sizes_by_chunk: list[int], max_bytes: int, envelope: int
) -> list[list[bytes]]:
    """The key-by-key packer: close a batch when it holds ``batch_size`` keys or the next key would
    take the body over ``max_bytes``."""
    out: list[list[bytes]] = []
    current: list[bytes] = []
    used = envelope
    for keys, batch_size in zip(chunks, sizes_by_chunk, strict=True):
        for key in keys:
            if current and (len(current) >= batch_size or used + len(key) + 1 > max_bytes):
                out.append(current)
                current, used = [], envelope
            current.append(key)
            used += len(key) + 1
        if current and len(current) >= batch_size:
            out.append(current)
            current, used = [], envelope
    if current:
        out.append(current)
    return out


def chunk(keys: list[bytes], first: int) -> PreparedRows:
    n = len(keys)
    return PreparedRows(
        np.arange(first, first + n, dtype=np.int64),
        [f"h{first + i}" for i in range(n)],
        np.zeros((n, 32), dtype=np.uint8),
        keys,
    )


def test_runs_of_keys_are_cut_where_a_key_by_key_packer_cuts() -> None:
    rng = random.Random(5)
    for trial in range(200):
        max_bytes = rng.choice([1024, 2048, 5000])
        chunks = [
            [json.dumps({"hash": "x" * rng.randint(3, 400)}).encode() for _ in range(rng.randint(0, 60))]
            for _ in range(rng.randint(1, 6))
        ]
        sizes = [rng.choice([1, 2, 7, 20, 1000]) for _ in chunks]
        batcher = Batcher("mig", "api", sizes[0], max_bytes)
        envelope = len(batcher.body(Batch([], [], [])))
        got: list[Batch] = []
        first = 0
        for keys, batch_size in zip(chunks, sizes, strict=True):
            batcher.batch_size = batch_size  # as the engine's sizer does between chunks
            got += list(batcher.add(chunk(keys, first)))
            first += len(keys)
        tail = batcher.flush()
        if tail is not None:
            got.append(tail)
        want = reference(chunks, sizes, max_bytes, envelope)
        assert [b.keys for b in got] == want, trial
        assert [r for b in got for r in b.rows] == list(range(first))
        for b in got:
            assert len(batcher.body(b)) <= max_bytes or len(b) == 1
