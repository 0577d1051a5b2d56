"""Batching: pack serialised keys into request bodies, by count and by bytes.

Nothing here imports Airflow. :class:`Batcher` appends the compact JSON of each key (as
:class:`~airflow_provider_unkey.migration.prepare.preparer.KeyPreparer` serialised it) to a request body until
``batch_size`` keys or ``max_request_bytes``; nothing is serialised twice. A :class:`Batch` carries the
keys of one request, with their source rows and wire hashes, and splits into halves or drops keys when
the engine must isolate the keys at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from airflow_provider_unkey.migration.prepare import PreparedRows
from airflow_provider_unkey.rules import MAX_BODY_BYTES

#: Defaults chosen from the benchmarks (see docs/benchmarks.md).
DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class Batch:
    """Keys that go out in one request: source rows, wire hashes, serialised key objects.

    ``maybe_committed`` is set when an earlier request carrying these keys got no response: Unkey may
    have created them then, so their coming back as existing says nothing about who created them.
    """

    rows: list[int]
    hashes: list[str]
    keys: list[bytes]
    maybe_committed: bool = False
    #: attempts spent on it that count against the retry policy (a 429 is not one of them)
    attempts: int = 0
    #: times the workspace rate limit refused it (429)
    refused: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def halves(self, maybe_committed: bool = False) -> tuple[Batch, Batch]:
        mid = len(self) // 2
        flag = self.maybe_committed or maybe_committed
        return (
            Batch(self.rows[:mid], self.hashes[:mid], self.keys[:mid], flag),
            Batch(self.rows[mid:], self.hashes[mid:], self.keys[mid:], flag),
        )

    def without(self, indexes: set[int], maybe_committed: bool = False) -> Batch:
        keep = [i for i in range(len(self)) if i not in indexes]
        return Batch(
            [self.rows[i] for i in keep],
            [self.hashes[i] for i in keep],
            [self.keys[i] for i in keep],
            self.maybe_committed or maybe_committed,
        )


class Batcher:
    """Packs serialised keys into requests of at most ``batch_size`` keys and ``max_request_bytes``.

    :param migration_id: the body's ``migrationId``.
    :param api_id: the body's ``apiId``.
    :param batch_size: keys per request.
    :param max_request_bytes: bytes per request body, well below Unkey's 10 MiB.
    """

    def __init__(self, migration_id: str, api_id: str, batch_size: int, max_request_bytes: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1024 <= max_request_bytes <= MAX_BODY_BYTES:
            raise ValueError(
                f"max_request_bytes must be between 1024 and {MAX_BODY_BYTES}, got {max_request_bytes}"
            )
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self._prefix = (
            '{"migrationId":' + json.dumps(migration_id) + ',"apiId":' + json.dumps(api_id) + ',"keys":['
        ).encode()
        self._suffix = b"]}"
        self._current = Batch([], [], [])
        self._bytes = len(self._prefix) + len(self._suffix)

    @property
    def max_key_bytes(self) -> int:
        """The largest serialised key object that fits in a request on its own."""
        return self.max_request_bytes - len(self._prefix) - len(self._suffix)

    def body(self, batch: Batch) -> bytes:
        """The request body of ``batch``."""
        return self._prefix + b",".join(batch.keys) + self._suffix

    def add(self, prepared: PreparedRows) -> Iterator[Batch]:
        """Add keys; yield each batch that is full (by count, or because the next key would not fit).

        Whole runs of keys are placed at once: their sizes' running sum says how many fit.
        """
        n = len(prepared.keys)
        if not n:
            return
        rows, hashes, keys = prepared.rows.tolist(), prepared.hashes, prepared.keys
        sizes = np.fromiter(map(len, keys), dtype=np.int64, count=n) + 1  # each key and its comma
        i = 0
        while i < n:
            current = self._current
            room = max(self.batch_size - len(current), 0)  # the sizer may have lowered batch_size
            fits = int(
                np.searchsorted(np.cumsum(sizes[i : i + room]), self.max_request_bytes - self._bytes, "right")
            )
            if fits == 0 and not current.rows:
                fits = 1  # a key alone over the cap (the preparer stops those): let the server judge it
            if fits:
                end = i + fits
                current.rows.extend(rows[i:end])
                current.hashes.extend(hashes[i:end])
                current.keys.extend(keys[i:end])
                self._bytes += int(sizes[i:end].sum())
                i = end
            if len(current) >= self.batch_size or (
                i < n and self._bytes + int(sizes[i]) > self.max_request_bytes
            ):
                yield current
                self._current, self._bytes = Batch([], [], []), len(self._prefix) + len(self._suffix)

    def flush(self) -> Batch | None:
        """The last, partly filled batch, if any."""
        if not self._current.rows:
            return None
        batch, self._current = self._current, Batch([], [], [])
        self._bytes = len(self._prefix) + len(self._suffix)
        return batch
