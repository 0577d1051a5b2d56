"""Sending: post batches concurrently, split the ones Unkey rejects as a whole, record every outcome.

Nothing here imports Airflow. :class:`MigrationEngine` hands request bodies built by
:class:`~airflow_provider_unkey.migration.send.batching.Batcher` to ``max_concurrency`` worker threads; what
a request that still fails after the client's retries means is decided in
:mod:`~airflow_provider_unkey.migration.send.failures`; how many requests go at once, and how fast, by
its :class:`~airflow_provider_unkey.migration.send.throughput.ThroughputControls`; and each key's
outcome goes, through an :class:`~airflow_provider_unkey.migration.send.answers.AnswerRecorder`, to the
:class:`~airflow_provider_unkey.migration.record.OutcomeWriter`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from airflow_provider_unkey.client import RetryPolicy, UnkeyClient
from airflow_provider_unkey.exceptions import UnkeyAPIError, UnkeyTransportError
from airflow_provider_unkey.migration.record import OutcomeWriter, Progress, Reason, Stage
from airflow_provider_unkey.migration.send.answers import AnswerRecorder
from airflow_provider_unkey.migration.send.batching import Batch, Batcher
from airflow_provider_unkey.migration.send.failures import (
    SPLIT_WITHOUT_RETRY,
    Action,
    MigrationAborted,
    _named_keys,
    _what_to_fix,
    classify,
)
from airflow_provider_unkey.migration.send.pacing import (
    DEFAULT_RATE_LIMIT_HEADROOM,
    UNKEY_RATE_LIMIT_WINDOW,
    RatePacer,
)
from airflow_provider_unkey.migration.send.throttle import (
    INITIAL_CONCURRENCY,
    BatchSizer,
    ConcurrencyLimiter,
)
from airflow_provider_unkey.migration.send.throughput import ThroughputControls

#: The cap of requests in flight; the limiter finds the number below it (see docs/performance.md).
DEFAULT_MAX_CONCURRENCY = 32
#: The largest batch the sizer grows to (the byte cap still applies).
MAX_ADAPTIVE_BATCH_SIZE = 50_000
#: Rounds at the concurrency cap near the latency floor before the sizer tries bigger batches again.
REOPEN_AFTER_CAPPED_ROUNDS = 3
#: Statuses the engine sends again itself: the rate limit's 429 goes through the pacer, not the client.
_WAIT_STATUSES = frozenset({429})


class MigrationEngine(ThroughputControls):
    """Sends batches concurrently and records each key's outcome.

    A batch Unkey rejects as a whole (400, or a 500, 408 or 413 that persists after retries) is split
    in halves until the offending keys are isolated, so one bad key costs only itself; a 400 whose
    ``errors[]`` names key indexes drops those keys at once. 401, 403 and 404 stop the run: no further
    batch goes out, keys not yet sent are recorded ``not_sent``, and :class:`MigrationAborted` says what
    to fix. A 429 means nothing was processed: the batch goes again when the pacer allows, without using
    up one of the attempts that 5xx answers and timeouts get; only ``time_budget`` bounds those waits.

    How fast it sends is found as it goes (:mod:`~airflow_provider_unkey.migration.send.throttle`): a
    :class:`~airflow_provider_unkey.migration.send.throttle.ConcurrencyLimiter` decides how many requests to
    keep in flight, up to ``max_concurrency``; a :class:`~airflow_provider_unkey.migration.send.pacing.RatePacer`
    keeps the whole workspace below its rate limit less ``rate_limit_headroom``; and a
    :class:`~airflow_provider_unkey.migration.send.throttle.BatchSizer` lets requests carry more keys
    while that lowers the latency per key, and while the rate limit holds the run back.

    :param client: the Unkey client (its pool should hold ``max_concurrency`` connections).
    :param batcher: builds request bodies; under a rate limit the engine raises its ``batch_size``.
    :param writer: where outcomes go.
    :param max_concurrency: the most requests in flight at once (with ``adaptive``, a cap; without,
        the number).
    :param adaptive: find the concurrency and the batch size; ``False`` keeps
        ``max_concurrency`` requests in flight and the batch size as configured. Pacing to the rate
        limit is always on.
    :param retry: the retry policy for batches (default: the client's).
    :param progress: logs progress between batches.
    :param abort_event: set when the run must stop; the source should stop reading then.
    :param resumed_try: this run resumes a task instance whose try ``resumed_try`` stopped: hashes
        Unkey reports as existing are reported ``unconfirmed`` (that try may have sent them before it
        could record their outcome), not ``already_exists``.
    :param rate_limit_headroom: the share of the workspace rate limit the run never takes, left to the
        workspace's own traffic (0 to below 1).
    :param rate_limit_window: the window of the workspace rate limit, in seconds (Unkey's: a minute).
    :param time_budget: seconds from the start of :meth:`run` after which a batch that the rate limit
        refused is given up rather than sent again, and a batch still waiting for the pace is not sent;
        ``None``: no bound.
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
        adaptive: bool = True,
        rate_limit_headroom: float = DEFAULT_RATE_LIMIT_HEADROOM,
        rate_limit_window: float = UNKEY_RATE_LIMIT_WINDOW,
        time_budget: float | None = None,
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
        # A 429 is never retried by the client: the engine sends the batch again through the pacer.
        policy = retry or client.retry
        self.single_retry = dataclasses.replace(
            policy, no_retry_statuses=policy.no_retry_statuses | _WAIT_STATUSES
        )
        self.batch_retry = dataclasses.replace(
            self.single_retry, no_retry_statuses=self.single_retry.no_retry_statuses | SPLIT_WITHOUT_RETRY
        )
        self.progress = progress
        self.resumed_try = resumed_try
        self.requests = 0
        self.batches = 0
        #: Batches (or parts) split in two after an answer that blamed one of their keys or the timeout.
        self.splits = 0
        self._abort = abort_event or threading.Event()
        self._fatal: UnkeyAPIError | None = None
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Condition()
        self.adaptive = adaptive
        self.limiter = (
            ConcurrencyLimiter(min(INITIAL_CONCURRENCY, max_concurrency), max_concurrency)
            if adaptive
            else None
        )
        self.pacer = RatePacer(rate_limit_headroom, rate_limit_window)
        if time_budget is not None and not time_budget > 0:
            raise ValueError(f"time_budget must be a number of seconds above 0, got {time_budget!r}")
        self.time_budget = time_budget
        self._deadline = math.inf
        self.sizer = (
            BatchSizer(batcher.batch_size, max(batcher.batch_size, MAX_ADAPTIVE_BATCH_SIZE))
            if adaptive
            else None
        )
        self.answers = AnswerRecorder(writer, resumed_try, time_budget)
        self._local = threading.local()
        self._in_flight = 0  # requests being sent, at most the concurrency limit
        self._gate = threading.Condition()
        self._waited_at_last_grow = 0.0
        self._last_grow_check = 0.0
        self._unticketed = 0  # batches handed to the pool that wait for a place or the pace
        self._capped_at_reopen = 0  # the limiter's capped rounds when the sizer was last reopened
        self._reopen_after = REOPEN_AFTER_CAPPED_ROUNDS

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no batch is being sent (at most ``timeout`` seconds); say whether that happened."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    # --- one batch, in a worker thread -------------------------------------------------------------
    def _not_sent(self, batch: Batch) -> None:
        if self._fatal:
            reason = f"not sent: the run stopped ({self._fatal})"
        elif not self._abort.is_set() and time.monotonic() >= self._deadline:
            reason = (
                f"not sent: the run's time budget of {self.time_budget:g} s ran out while it waited for"
                " the workspace rate limit"
            )
        else:
            reason = "not sent: the run stopped"
        self.writer.failed(batch.hashes, batch.rows, Reason.NOT_SENT, Stage.SEND, reason)

    def _send(self, batch: Batch) -> None:
        # ``_active`` and ``_unticketed`` went up when the batch was handed to the pool (see run()).
        self._local.unticketed = True
        try:
            self._send_parts(batch)
        finally:
            self._ticketed()
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _send_parts(self, batch: Batch) -> None:
        stack = [batch]
        while stack:
            part = stack.pop()
            if not len(part):
                continue
            if self._abort.is_set() or not self._enter():
                self._not_sent(part)
                continue
            ticket = self.pacer.acquire(self._abort, self._deadline)
            self._ticketed()
            if ticket is None or self._abort.is_set():  # the run stopped (or its time ran out) meanwhile
                if ticket is not None:
                    self.pacer.release(ticket)
                self._leave()
                if part.refused and ticket is None and not self._abort.is_set():
                    self.answers.out_of_time(part)
                else:
                    self._not_sent(part)
                continue
            self._local.keys, self._local.ticket = len(part), ticket
            policy = self.batch_retry if len(part) > 1 else self.single_retry
            if part.attempts:
                # The attempts a 429 interrupted are spent; the 429s themselves are not.
                policy = dataclasses.replace(policy, max_attempts=policy.max_attempts - part.attempts)
            try:
                with self._lock:
                    self.requests += 1
                try:
                    result = self.client.migrate_keys(
                        self.migration_id, self.api_id, self.batcher.body(part), retry=policy
                    )
                finally:
                    self.pacer.release(ticket)
                    self._leave()
            except (UnkeyAPIError, UnkeyTransportError) as exc:
                action = classify(exc, len(part))
                lost = exc.unanswered_attempts > 0
                named = _named_keys(exc, len(part))
                if action is Action.WAIT:
                    # Refused before anything was processed: the same batch goes again when the pacer
                    # allows (it learnt the 429's Retry-After), unless the run's time is up.
                    part.attempts += exc.attempts - 1
                    part.refused += 1
                    part.maybe_committed = part.maybe_committed or lost
                    if time.monotonic() >= self._deadline:
                        self.answers.out_of_time(part)
                    else:
                        stack.append(part)
                elif action is Action.ABORT:
                    assert isinstance(exc, UnkeyAPIError)  # only statuses abort
                    with self._lock:
                        if self._fatal is None:
                            self._fatal = exc
                    self._abort.set()
                    self._not_sent(part)
                elif named:  # a 400 that names its keys: drop them, send the rest
                    assert isinstance(exc, UnkeyAPIError)
                    self.answers.rejected(part, named, exc)
                    stack.append(part.without(named, lost))
                elif action is Action.SPLIT:
                    with self._lock:
                        self.splits += 1
                    self._on_split()
                    stack.extend(reversed(part.halves(lost)))
                elif action is Action.REJECT:
                    assert isinstance(exc, UnkeyAPIError)
                    self.answers.rejected(part, {0}, exc)
                else:
                    self.answers.gave_up(part, exc)
            else:
                self.answers.answered(
                    part,
                    result.migrated,
                    result.failed,
                    result.request_id,
                    result.unanswered_attempts or int(part.maybe_committed),
                )

    # --- the run, in the calling thread ------------------------------------------------------------
    def run(self, batches: Iterable[Batch]) -> None:
        """Send every batch; return when all have an outcome.

        At most the concurrency limit of batches (``2 * max_concurrency`` when not ``adaptive``) are
        held at once, so memory stays flat however long the input is.

        :raises MigrationAborted: after the in-flight batches ended, when Unkey refused the root key,
            its permissions, the API or the migration.
        """
        in_flight: set[Future[None]] = set()
        if self.time_budget is not None:
            self._deadline = time.monotonic() + self.time_budget
        self.client.observers.append(self._observe)
        if self.progress is not None:
            self.progress.detail = self.describe
            self.progress.state = self.state

        def room() -> int:
            # Twice the concurrency: while the main thread prepares the next record batch, workers
            # that finish a request find a batch waiting (the gate in _enter holds the rest back).
            # But while the rate limit is unknown, or under one, requests are the scarce thing: a
            # batch built now would wait with today's size, one built later carries more. So too
            # while the sizer still tries bigger batches: the next size applies at once.
            if not self.pacer.known:
                return 2
            if self.pacer.limited or (self.sizer is not None and self.sizer.exploring):
                # At most two batches wait for a place or the pace at once: counted rather than
                # inferred from the pace's state, which a busy machine lets the main thread misread.
                return min(2 * self.concurrency(), len(in_flight) - self._unticketed + 2)
            return 2 * self.concurrency()

        def reap(pending: set[Future[None]]) -> set[Future[None]]:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
            self._maybe_grow_batches()
            if self.progress:
                self.progress.maybe_log()
            return pending

        try:
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="unkey-migrate") as pool:
                try:
                    for batch in batches:
                        if self._abort.is_set():
                            # Keep draining: the source stops reading (it watches abort_event), and
                            # what it had read gets its outcome.
                            self._not_sent(batch)
                            continue
                        while len(in_flight) >= room():
                            in_flight = reap(in_flight)
                        self.batches += 1
                        with self._idle:
                            self._active += 1
                        with self._gate:
                            self._unticketed += 1
                        in_flight.add(pool.submit(self._send, batch))
                        self._maybe_grow_batches()  # before the next batch is built
                        if self.progress:
                            self.progress.maybe_log()
                    while in_flight:
                        in_flight = reap(in_flight)
                except BaseException:
                    self._abort.set()
                    raise
        finally:
            self.client.observers.remove(self._observe)
        if self._fatal is not None:
            raise MigrationAborted(_what_to_fix(self._fatal, self.migration_id, self.api_id), self._fatal)
