"""The migration engine: batch by count and bytes, send batches concurrently, record every outcome.

Nothing here imports Airflow. :func:`run_migration` wires a stream of Arrow record batches through
:class:`~airflow_provider_unkey.migration.prepare.KeyPreparer` (validation),
:class:`~airflow_provider_unkey.migration.dedupe.DigestSet` (deduplication across the whole source),
:class:`Batcher` and :class:`MigrationEngine` (sending), into an
:class:`~airflow_provider_unkey.migration.outcomes.OutcomeWriter`, and checks at the end that every
row read has exactly one outcome.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.exceptions import (
    UnkeyAPIError,
    UnkeyAuthenticationError,
    UnkeyError,
    UnkeyPermissionError,
    UnkeyTransportError,
)
from airflow_provider_unkey.migration.dedupe import DigestSet
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerWriter
from airflow_provider_unkey.migration.outcomes import OutcomeWriter, Reason, Stage
from airflow_provider_unkey.migration.prepare import KeyPreparer, PreparedRows, resolve_mapping
from airflow_provider_unkey.rules import MAX_BODY_BYTES

log = logging.getLogger(__name__)

#: Defaults chosen from the benchmarks (see docs/benchmarks.md).
DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 4
_KEY_INDEX = re.compile(r"^body\.keys\[(\d+)\]")
#: Added to a failure's detail when a request carrying the key got no response.
_MAYBE_CREATED = (
    "; a request carrying this key got no response, so Unkey may have created it (a rerun reports it as"
    " already_exists)"
)


class Action(StrEnum):
    """What the engine does with a batch whose request failed (after the client's retries)."""

    ABORT = "abort"  #: stop the run: nothing more is sent; this batch and the rest are not_sent
    SPLIT = "split"  #: send the batch again as two halves, to isolate the keys at fault
    REJECT = "reject"  #: the single key is refused: rejected_by_api
    GIVE_UP = "give_up"  #: retries ran out on a problem of the service or the network: gave_up


#: The one table of what a failed request means: status -> (batch of several keys, single key).
#: 400: the body is refused (a 400 whose errors[] names keys drops those first). 401/403/404: the root
#: key, its permission, the API or the migration is wrong; no batch can succeed. 408 (the 60 s server
#: timeout), 413 and 500 (a duplicate role, a null remaining...): about this batch's content or size.
#: 502-504 and 429 after the retries: the service is unwell or busy, and splitting would only multiply
#: requests.
ACTIONS: dict[int, tuple[Action, Action]] = {
    400: (Action.SPLIT, Action.REJECT),
    401: (Action.ABORT, Action.ABORT),
    403: (Action.ABORT, Action.ABORT),
    404: (Action.ABORT, Action.ABORT),
    408: (Action.SPLIT, Action.REJECT),
    413: (Action.SPLIT, Action.REJECT),
    429: (Action.GIVE_UP, Action.GIVE_UP),
    500: (Action.SPLIT, Action.REJECT),
    502: (Action.GIVE_UP, Action.GIVE_UP),
    503: (Action.GIVE_UP, Action.GIVE_UP),
    504: (Action.GIVE_UP, Action.GIVE_UP),
}
#: Any other 5xx is treated as a 500; any other status, and a transport error, as a give-up.
_OTHER_SERVER_ERROR = ACTIONS[500]
#: Statuses on which a batch of several keys is split after its first attempt rather than retried:
#: a retry would fail the same way (and a 408 costs up to 60 s an attempt).
SPLIT_WITHOUT_RETRY = frozenset({408, 500})


def classify(exc: UnkeyAPIError | UnkeyTransportError, keys: int) -> Action:
    """What to do with a batch of ``keys`` keys whose request ended in ``exc``."""
    if isinstance(exc, UnkeyAPIError):
        row = ACTIONS.get(exc.status) or (_OTHER_SERVER_ERROR if exc.status >= 500 else None)
        if row is not None:
            return row[0] if keys > 1 else row[1]
    return Action.GIVE_UP


def _named_keys(exc: UnkeyAPIError | UnkeyTransportError, keys: int) -> set[int]:
    """The key indexes a 400's ``errors[]`` names (``body.keys[3].name``), within the batch."""
    if not isinstance(exc, UnkeyAPIError) or exc.status != 400:
        return set()
    named = {int(m.group(1)) for e in exc.errors if (m := _KEY_INDEX.match(e.location))}
    return {i for i in named if i < keys}


class MigrationAborted(UnkeyError):
    """The run stopped: Unkey refused the root key, its permissions, the API or the migration.

    :param message: what to fix.
    :param cause: the API error that stopped the run.
    """

    def __init__(self, message: str, cause: UnkeyAPIError) -> None:
        super().__init__(message)
        self.cause = cause
        #: What the run did before it stopped; set by :func:`run_migration`.
        self.summary: MigrationSummary | None = None


class InvariantError(UnkeyError):
    """Rows read and outcomes recorded do not reconcile: a bug, reported loudly."""


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
        """Add keys; yield each batch that is full."""
        envelope = len(self._prefix) + len(self._suffix)
        for row, wire_hash, key in zip(prepared.rows.tolist(), prepared.hashes, prepared.keys, strict=True):
            size = len(key) + 1
            if self._current.rows and (
                len(self._current) >= self.batch_size or self._bytes + size > self.max_request_bytes
            ):
                yield self._current
                self._current, self._bytes = Batch([], [], []), envelope
            self._current.rows.append(row)
            self._current.hashes.append(wire_hash)
            self._current.keys.append(key)
            self._bytes += size

    def flush(self) -> Batch | None:
        """The last, partly filled batch, if any."""
        if not self._current.rows:
            return None
        batch, self._current = self._current, Batch([], [], [])
        self._bytes = len(self._prefix) + len(self._suffix)
        return batch


def _what_to_fix(exc: UnkeyAPIError, migration_id: str, api_id: str) -> str:
    if isinstance(exc, UnkeyAuthenticationError):
        return (
            "Unkey does not know the root key (401): put a valid root key in the Unkey connection's password."
        )
    if isinstance(exc, UnkeyPermissionError):
        return (
            f"The root key may not create keys in API {api_id!r} (403): give it the permission "
            f"api.*.create_key or api.{api_id}.create_key."
        )
    if exc.code == "migration_not_found":
        return (
            f"Unkey does not know migration id {migration_id!r} (404): use the migration id that Unkey "
            "support set up for your workspace."
        )
    return f"Unkey does not know API {api_id!r} in the root key's workspace (404): check api_id."


class Progress:
    """Logs progress every ``interval`` seconds: keys done of total, keys/s, ETA, outcome counts."""

    def __init__(
        self,
        writer: OutcomeWriter,
        total: int | None,
        interval: float = 5.0,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.total = total
        self.interval = interval
        self.emit = emit or log.info
        self.started = time.monotonic()
        self._last = self.started

    def maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        done = self.writer.total
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        if self.total:
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            position = f"{done:,}/{self.total:,} keys ({100 * done / self.total:.1f}%), ETA {eta:,.0f}s"
        else:
            position = f"{done:,} keys"
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.writer.failed_by_reason.items())) or "none"
        skipped = (
            f", skipped (in the ledger) {self.writer.skipped_count:,}" if self.writer.skipped_count else ""
        )
        self.emit(
            f"{position}, {rate:,.0f} keys/s; migrated {self.writer.migrated_count:,}, failed: {reasons}"
            f"{skipped}"
        )


class MigrationEngine:
    """Sends batches concurrently and records each key's outcome.

    A batch Unkey rejects as a whole (400, or a 500, 408 or 413 that persists after retries) is split
    in halves until the offending keys are isolated, so one bad key costs only itself; a 400 whose
    ``errors[]`` names key indexes drops those keys at once. 401, 403 and 404 stop the run: no further
    batch goes out, keys not yet sent are recorded ``not_sent``, and :class:`MigrationAborted` says what
    to fix.

    :param client: the Unkey client (its pool should hold ``max_concurrency`` connections).
    :param batcher: builds request bodies.
    :param writer: where outcomes go.
    :param max_concurrency: requests in flight at once.
    :param retry: the retry policy for batches (default: the client's).
    :param progress: logs progress between batches.
    :param abort_event: set when the run must stop; the source should stop reading then.
    :param resumed_try: this run resumes a task instance whose try ``resumed_try`` stopped: hashes
        Unkey reports as existing are reported ``unconfirmed`` (that try may have sent them before it
        could record their outcome), not ``already_exists``.
    """

    def __init__(
        self,
        client: UnkeyClient,
        migration_id: str,
        api_id: str,
        batcher: Batcher,
        writer: OutcomeWriter,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        progress: Progress | None = None,
        abort_event: threading.Event | None = None,
        resumed_try: int | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.client = client
        self.migration_id = migration_id
        self.api_id = api_id
        self.batcher = batcher
        self.writer = writer
        self.max_concurrency = max_concurrency
        # A 500 for a batch of several keys is most often about one of them: split at once rather than
        # wait through every retry. A 408 is the 60 s server timeout: halves finish sooner, while
        # retrying the whole batch would cost up to 60 s an attempt. A single key gets the whole
        # policy: its 500 or 408 may be transient.
        self.single_retry = retry or client.retry
        self.batch_retry = dataclasses.replace(
            self.single_retry, no_retry_statuses=self.single_retry.no_retry_statuses | SPLIT_WITHOUT_RETRY
        )
        self.progress = progress
        self.resumed_try = resumed_try
        self.requests = 0
        self.batches = 0
        self._abort = abort_event or threading.Event()
        self._fatal: UnkeyAPIError | None = None
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no batch is being sent (at most ``timeout`` seconds); say whether that happened."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    # --- one batch, in a worker thread -------------------------------------------------------------
    def _not_sent(self, batch: Batch) -> None:
        reason = f"not sent: the run stopped ({self._fatal})" if self._fatal else "not sent: the run stopped"
        self.writer.failed(batch.hashes, batch.rows, Reason.NOT_SENT, Stage.SEND, reason)

    def _record(
        self,
        batch: Batch,
        migrated: list[tuple[str, str]],
        failed: list[str],
        request_id: str,
        unanswered: int,
    ) -> None:
        index = {h: i for i, h in enumerate(batch.hashes)}
        done: set[int] = set()
        m_hashes, m_ids, m_rows = [], [], []
        for h, key_id in migrated:
            i = index.get(h)
            if i is None or i in done:
                log.warning("Unkey answered request %s with a hash it was not sent; ignored", request_id)
                continue
            done.add(i)
            m_hashes.append(h)
            m_ids.append(key_id)
            m_rows.append(batch.rows[i])
        self.writer.migrated(m_hashes, m_ids, m_rows, request_id)
        f_idx = []
        for h in failed:
            i = index.get(h)
            if i is not None and i not in done:
                done.add(i)
                f_idx.append(i)
        if unanswered:
            detail = (
                f"Unkey reported the hash as existing after {unanswered} attempt(s) whose response was lost: "
                "the key was most likely created by this run, but Unkey does not return its keyId"
            )
            reason = Reason.UNCONFIRMED
        elif self.resumed_try is not None:
            detail = (
                f"Unkey reported the hash as existing, and the ledger holds no outcome for it: try "
                f"{self.resumed_try} of this task stopped with requests in flight, so it most likely "
                "created this key, but Unkey does not return its keyId"
            )
            reason = Reason.UNCONFIRMED
        else:
            detail, reason = "a key with this hash already exists in Unkey", Reason.ALREADY_EXISTS
        self.writer.failed(
            [batch.hashes[i] for i in f_idx],
            [batch.rows[i] for i in f_idx],
            reason,
            Stage.SEND,
            detail,
            request_id,
        )
        missing = [i for i in range(len(batch)) if i not in done]
        if missing:
            self.writer.failed(
                [batch.hashes[i] for i in missing],
                [batch.rows[i] for i in missing],
                Reason.REJECTED_BY_API,
                Stage.SEND,
                "Unkey's answer listed this hash neither as migrated nor as failed",
                request_id,
            )

    def _send(self, batch: Batch) -> None:
        # ``_active`` went up when the batch was handed to the pool (see run()).
        try:
            self._send_parts(batch)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _send_parts(self, batch: Batch) -> None:
        stack = [batch]
        while stack:
            part = stack.pop()
            if not len(part):
                continue
            if self._abort.is_set():
                self._not_sent(part)
                continue
            try:
                with self._lock:
                    self.requests += 1
                result = self.client.migrate_keys(
                    self.migration_id,
                    self.api_id,
                    self.batcher.body(part),
                    retry=self.batch_retry if len(part) > 1 else self.single_retry,
                )
            except (UnkeyAPIError, UnkeyTransportError) as exc:
                action = classify(exc, len(part))
                lost = exc.unanswered_attempts > 0
                named = _named_keys(exc, len(part))
                if action is Action.ABORT:
                    assert isinstance(exc, UnkeyAPIError)  # only statuses abort
                    with self._lock:
                        if self._fatal is None:
                            self._fatal = exc
                    self._abort.set()
                    self._not_sent(part)
                elif named:  # a 400 that names its keys: drop them, send the rest
                    assert isinstance(exc, UnkeyAPIError)
                    self._reject(part, named, exc)
                    stack.append(part.without(named, lost))
                elif action is Action.SPLIT:
                    stack.extend(reversed(part.halves(lost)))
                elif action is Action.REJECT:
                    assert isinstance(exc, UnkeyAPIError)
                    self._reject(part, {0}, exc)
                else:
                    self._give_up(part, exc)
            else:
                self._record(
                    part,
                    result.migrated,
                    result.failed,
                    result.request_id,
                    result.unanswered_attempts or int(part.maybe_committed),
                )

    def _reject(self, batch: Batch, indexes: set[int], exc: UnkeyAPIError) -> None:
        for i in sorted(indexes):
            prefix = f"body.keys[{i}]"
            own = [
                e
                for e in exc.errors
                if e.location == prefix
                or e.location.startswith(prefix + ".")
                or e.location.startswith(prefix + "[")
            ]
            if own:
                detail = "; ".join(
                    f"{e.location.removeprefix(prefix).lstrip('.') or 'key'}: {e.message}" for e in own
                )
            else:
                detail = f"Unkey answered {exc.status}: {exc.detail or exc.title}"
            if batch.maybe_committed or exc.unanswered_attempts:
                detail += _MAYBE_CREATED
            self.writer.failed(
                [batch.hashes[i]], [batch.rows[i]], Reason.REJECTED_BY_API, Stage.SEND, detail, exc.request_id
            )

    def _give_up(self, batch: Batch, exc: UnkeyError) -> None:
        request_id = exc.request_id if isinstance(exc, UnkeyAPIError) else None
        detail = f"retries exhausted after {exc.attempts} attempt(s): {exc}"
        if exc.unanswered_attempts:
            detail += f"; {exc.unanswered_attempts} attempt(s) got no response"
        if exc.unanswered_attempts or batch.maybe_committed:
            detail += _MAYBE_CREATED
        self.writer.failed(batch.hashes, batch.rows, Reason.GAVE_UP, Stage.SEND, detail, request_id)

    # --- the run, in the calling thread ------------------------------------------------------------
    def run(self, batches: Iterable[Batch]) -> None:
        """Send every batch; return when all have an outcome.

        At most ``2 * max_concurrency`` batches are held at once, so memory stays flat however long
        the input is.

        :raises MigrationAborted: after the in-flight batches ended, when Unkey refused the root key,
            its permissions, the API or the migration.
        """
        in_flight: set[Future[None]] = set()
        limit = 2 * self.max_concurrency
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="unkey-migrate") as pool:
            try:
                for batch in batches:
                    if self._abort.is_set():
                        # Keep draining: the source stops reading (it watches abort_event), and what
                        # it had read gets its outcome.
                        self._not_sent(batch)
                        continue
                    while len(in_flight) >= limit:
                        done, in_flight = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                        if self.progress:
                            self.progress.maybe_log()
                    self.batches += 1
                    with self._idle:
                        self._active += 1
                    in_flight.add(pool.submit(self._send, batch))
                    if self.progress:
                        self.progress.maybe_log()
                while in_flight:
                    done, in_flight = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                    if self.progress:
                        self.progress.maybe_log()
            except BaseException:
                self._abort.set()
                raise
        if self._fatal is not None:
            raise MigrationAborted(_what_to_fix(self._fatal, self.migration_id, self.api_id), self._fatal)


class RunControl:
    """Lets another thread stop a run (Airflow's ``on_kill``): nothing more is sent, requests in flight
    get a bounded time to end, and the ledger is flushed.

    Pass it to :func:`run_migration`; call :meth:`stop` from anywhere, a signal handler included.
    """

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.engine: MigrationEngine | None = None
        self.ledger: LedgerWriter | None = None

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the run; wait at most about ``timeout`` seconds for requests in flight, then flush the ledger.

        :return: whether every request in flight ended (and its outcome was flushed) in time.
        """
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        engine, ledger = self.engine, self.ledger
        idle = engine.wait_idle(timeout) if engine is not None else True
        if ledger is not None:
            # From another thread: the caller may be a signal handler that interrupted a thread holding
            # the ledger's buffer lock, and waiting on it here would never end.
            flusher = threading.Thread(target=ledger.flush, name="unkey-ledger-stop", daemon=True)
            flusher.start()
            flusher.join(max(deadline - time.monotonic(), 1.0))
            idle = idle and not flusher.is_alive()
        return idle


@dataclass(slots=True)
class MigrationSummary:
    """What a run did; every count reconciles: ``total == migrated + failed + skipped (+ would_send)``.

    ``skipped`` rows were not sent because the ledger shows a key with their hash exists in Unkey
    (another run recorded it). ``resumed`` rows (counted in ``migrated`` and ``failed``) took their
    outcome from an earlier try of the same task instance.
    """

    total: int
    migrated: int
    failed: int
    failed_by_reason: dict[str, int]
    skipped: int = 0
    resumed: int = 0
    would_send: int = 0
    batches: int = 0
    requests: int = 0
    dry_run: bool = False
    aborted: str | None = None
    stopped: bool = False
    duration_seconds: float = 0.0
    prepare_seconds: float = 0.0
    keys_per_second: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for XCom)."""
        return asdict(self)


def _emit_resumed(writer: OutcomeWriter, fresh: PreparedRows, mine: np.ndarray, known: KnownHashes) -> None:
    """Report again the outcomes that earlier tries of this task instance recorded for these rows."""
    idx = np.flatnonzero(mine >= 0)
    records = known.records.take(pa.array(mine[idx]))
    rows = fresh.rows[idx].tolist()
    wire = [fresh.hashes[i] for i in idx]
    reason_col = records.column("reason").to_pylist()
    key_ids = records.column("key_id").to_pylist()
    details = records.column("detail").to_pylist()
    request_ids = records.column("request_id").to_pylist()
    tries = records.column("try_number").to_pylist()
    groups: dict[str | None, list[int]] = {}
    for j, reason in enumerate(reason_col):
        groups.setdefault(reason, []).append(j)
    for reason, js in groups.items():
        if reason is None:
            writer.migrated(
                [wire[j] for j in js],
                [key_ids[j] for j in js],
                [rows[j] for j in js],
                [request_ids[j] for j in js],
                resumed=True,
            )
        else:
            writer.failed(
                [wire[j] for j in js],
                [rows[j] for j in js],
                Reason(reason),
                Stage.SEND,
                [f"{details[j] or reason} (recorded by try {tries[j]} of this task)" for j in js],
                [request_ids[j] for j in js],
                resumed=True,
            )


def run_migration(
    source: Iterable[pa.RecordBatch],
    client: UnkeyClient | None,
    migration_id: str,
    api_id: str,
    output_dir: str | Path,
    *,
    column_mapping: Mapping[str, str] | None = None,
    hash_format: str = "sha256_base64",
    algorithm: str = "sha256",
    list_delimiter: str = ",",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    retry: RetryPolicy | None = None,
    dry_run: bool = False,
    total_rows: int | None = None,
    progress_interval: float = 5.0,
    emit: Callable[[str], None] | None = None,
    ledger: LedgerWriter | None = None,
    known: KnownHashes | None = None,
    list_skipped: bool = False,
    control: RunControl | None = None,
) -> MigrationSummary:
    """Migrate every row of ``source``; write ``migrated.parquet`` and ``failed.parquet`` to ``output_dir``.

    :param source: Arrow record batches, read lazily (a generator keeps memory flat).
    :param client: the Unkey client; may be ``None`` for a dry run.
    :param migration_id: the migration id Unkey support set up.
    :param api_id: the API the keys go to.
    :param output_dir: a local directory for the two Parquet files.
    :param column_mapping: key field -> source column (``None``: columns named like the fields).
    :param hash_format: what the hash column holds, ``sha256_base64`` or ``sha256_hex``.
    :param algorithm: the migration's algorithm, ``sha256`` or the seam algorithm (``seam``).
    :param list_delimiter: separates roles or permissions held in one text column.
    :param batch_size: keys per request.
    :param max_request_bytes: bytes per request body.
    :param max_concurrency: requests in flight at once.
    :param retry: the retry policy for batches (default: the client's).
    :param dry_run: read, validate, deduplicate and batch, but send nothing.
    :param total_rows: the number of source rows, when known, for progress and ETA.
    :param progress_interval: seconds between progress lines.
    :param emit: where progress lines go (default: this module's logger).
    :param ledger: records every new outcome durably; closed (flushed and compacted) at the end.
    :param known: what the ledger held before the run (:meth:`KnownHashes.load`): hashes an earlier try
        of this task instance recorded as existing get that outcome again; hashes other runs recorded
        as existing are skipped. Invalid and duplicate rows are judged afresh either way.
    :param list_skipped: also write the skipped rows to ``skipped.parquet``.
    :param control: lets another thread stop the run (:meth:`RunControl.stop`).
    :raises MigrationAborted: on 401, 403 or 404, after the outputs are written.
    :raises InvariantError: if rows and outcomes do not reconcile.
    """
    if client is None and not dry_run:
        raise ValueError("a client is needed unless dry_run is set")
    started = time.monotonic()
    writer = OutcomeWriter(output_dir, ledger=ledger, list_skipped=list_skipped)
    dedupe = DigestSet()
    batcher = Batcher(migration_id, api_id, batch_size, max_request_bytes)
    state: dict[str, Any] = {"rows": 0, "prepare": 0.0, "preparer": None, "would_send": 0, "batches": 0}
    progress = Progress(writer, total_rows, progress_interval, emit)
    control = control or RunControl()
    control.ledger = ledger
    abort = control.stop_event
    resumed_try = known.resumed_try if known is not None else None
    skip_detail = "a key with this hash exists in Unkey: the ledger holds an earlier run's outcome for it"

    def read() -> Iterator[pa.RecordBatch]:
        """The source's batches; if reading fails, the rows read but not yet sent get an outcome."""
        iterator = iter(source)
        while True:
            try:
                record_batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                tail = batcher.flush()
                if tail is not None:
                    writer.failed(
                        tail.hashes,
                        tail.rows,
                        Reason.NOT_SENT,
                        Stage.SEND,
                        f"not sent: reading the source failed after this row ({type(exc).__name__}: {exc})",
                    )
                raise
            yield record_batch

    def batches() -> Iterator[Batch]:
        for record_batch in read():
            if abort.is_set():
                break
            t0 = time.monotonic()
            preparer: KeyPreparer | None = state["preparer"]
            if preparer is None:
                mapping = resolve_mapping(column_mapping, record_batch.schema)
                preparer = state["preparer"] = KeyPreparer(
                    mapping,
                    hash_format=hash_format,
                    algorithm=algorithm,
                    list_delimiter=list_delimiter,
                    max_key_bytes=batcher.max_key_bytes,
                )
            prepared, rejects = preparer.prepare(record_batch, state["rows"])
            state["rows"] += record_batch.num_rows
            writer.failed(rejects.hashes, rejects.rows, Reason.INVALID, Stage.VALIDATE, rejects.details)
            first = dedupe.add(prepared.digests, prepared.rows)
            duplicate = first >= 0
            if duplicate.any():
                idx = np.flatnonzero(duplicate)
                writer.failed(
                    [prepared.hashes[i] for i in idx],
                    prepared.rows[idx].tolist(),
                    Reason.DUPLICATE_IN_SOURCE,
                    Stage.DEDUPLICATE,
                    [f"hash: the same hash as source row {r}" for r in first[idx].tolist()],
                )
            fresh = prepared.take(~duplicate)
            if known is not None and len(known):
                seen = known.lookup(fresh.digests)
                if (seen.mine >= 0).any():
                    _emit_resumed(writer, fresh, seen.mine, known)
                if seen.known.any():
                    idx = np.flatnonzero(seen.known)
                    writer.skipped([fresh.hashes[i] for i in idx], fresh.rows[idx].tolist(), skip_detail)
                fresh = fresh.take((seen.mine < 0) & ~seen.known)
            state["prepare"] += time.monotonic() - t0
            yield from batcher.add(fresh)
        tail = batcher.flush()
        if tail is not None:
            yield tail

    aborted: MigrationAborted | None = None
    requests = 0
    try:
        if dry_run:
            for batch in batches():
                state["would_send"] += len(batch)
                state["batches"] += 1
                progress.maybe_log()
        else:
            assert client is not None
            engine = MigrationEngine(
                client,
                migration_id,
                api_id,
                batcher,
                writer,
                max_concurrency=max_concurrency,
                retry=retry,
                progress=progress,
                abort_event=abort,
                resumed_try=resumed_try,
            )
            control.engine = engine
            try:
                engine.run(batches())
            except MigrationAborted as exc:
                aborted = exc
            state["batches"], requests = engine.batches, engine.requests
    finally:
        writer.close()
    progress.maybe_log(force=True)
    duration = time.monotonic() - started
    summary = MigrationSummary(
        total=state["rows"],
        migrated=writer.migrated_count,
        failed=writer.failed_count,
        failed_by_reason=dict(writer.failed_by_reason),
        skipped=writer.skipped_count,
        resumed=writer.resumed_count,
        would_send=state["would_send"],
        batches=state["batches"],
        requests=requests,
        dry_run=dry_run,
        aborted=str(aborted) if aborted else None,
        stopped=abort.is_set() and aborted is None,
        duration_seconds=round(duration, 3),
        prepare_seconds=round(state["prepare"], 3),
        keys_per_second=round(state["rows"] / duration, 1) if duration > 0 else 0.0,
        outputs={"migrated": str(writer.migrated_path), "failed": str(writer.failed_path)},
    )
    if writer.skipped_path is not None:
        summary.outputs["skipped"] = str(writer.skipped_path)
    if summary.total != summary.migrated + summary.failed + summary.skipped + summary.would_send:
        raise InvariantError(
            f"{summary.total} rows read but {summary.migrated} migrated + {summary.failed} failed"
            f" + {summary.skipped} skipped + {summary.would_send} would be sent: rows without an outcome"
            " (a bug; please report it)"
        )
    if aborted is not None:
        aborted.summary = summary
        raise aborted
    return summary
