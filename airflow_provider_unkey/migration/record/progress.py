"""How a run reports itself: :class:`Progress` while it goes, :class:`MigrationSummary` when it ends.

Nothing here imports Airflow. At every progress line, and once when the run ends however it ends,
:class:`Progress` hands each :class:`ProgressListener` a :class:`ProgressSnapshot`: plain numbers, with
the sender's in a :class:`SendingState`, for a caller to turn into metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter
from airflow_provider_unkey.migration.record.timeline import Timeline

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendingState:
    """The sender's numbers at one moment (a :class:`ProgressSnapshot` carries them while keys are sent).

    :param requests: requests sent so far, as the summary's ``requests`` counts them: a request the
        client retried on its own (a 5xx, a timeout) counts once; one the rate limit refused and that
        was sent again counts each time.
    :param splits: batches (or parts of one) split in two after an answer that blamed their content.
    :param rate_limited: answers that were 429 (the summary's ``throttle["rate_limited_answers"]``).
    :param in_flight: requests being sent now.
    :param concurrency_limit: requests the throughput controls allow in flight now.
    :param max_concurrency: the cap of requests in flight.
    :param batch_size: keys a request carries now (a part of a split batch carries fewer).
    :param rate_limit_share: this run's share of the workspace rate limit now, 0 to 1 (``None`` while
        no answer has stated a limit).
    :param rate_limit_waited_seconds: seconds so far during which a request waited for the rate limit.
    """

    requests: int = 0
    splits: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    concurrency_limit: int = 0
    max_concurrency: int = 0
    batch_size: int = 0
    rate_limit_share: float | None = None
    rate_limit_waited_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The run at one moment: what a :class:`ProgressListener` is given.

    Every count is the run's total so far and never falls, so the differences between successive
    snapshots add up to the last one's counts, which are the summary's.

    :param final: the last snapshot of the run (it ended, failed or was stopped).
    :param elapsed_seconds: since the run started.
    :param total: the source's rows, when known.
    :param done: rows with an outcome.
    :param migrated: rows migrated (the summary's ``migrated``, resumed ones included).
    :param failed_by_reason: rows failed, by reason (the summary's ``failed_by_reason``).
    :param skipped: rows skipped as known to the ledger.
    :param keys_per_second: rows given an outcome a second since the previous snapshot (the first:
        since the start).
    :param mean_keys_per_second: rows given an outcome a second since the start.
    :param sending: the sender's numbers; ``None`` in a dry run and before sending starts.
    """

    final: bool
    elapsed_seconds: float
    total: int | None
    done: int
    migrated: int
    failed_by_reason: Mapping[str, int]
    skipped: int
    keys_per_second: float
    mean_keys_per_second: float
    sending: SendingState | None = None

    @property
    def failed(self) -> int:
        """Rows failed, whatever the reason."""
        return sum(self.failed_by_reason.values())


class ProgressListener(Protocol):
    """Called with a :class:`ProgressSnapshot` at every progress line and once when the run ends.

    It is called in the thread that runs the migration; an exception it raises is logged (once) and
    ignored.
    """

    def __call__(self, snapshot: ProgressSnapshot, /) -> None: ...


class Progress:
    """Logs progress every ``interval`` seconds: keys done of total, keys/s, ETA, outcome counts.

    Each line also goes, as a :class:`ProgressSnapshot`, to every one of ``listeners``; :meth:`finish`
    sends the last one.
    """

    def __init__(
        self,
        writer: OutcomeWriter,
        total: int | None,
        interval: float = 5.0,
        emit: Callable[[str], None] | None = None,
        timeline: Timeline | None = None,
        listeners: Iterable[ProgressListener] = (),
    ) -> None:
        self.writer = writer
        self.total = total
        self.interval = interval
        self.emit = emit or log.info
        self.started = time.monotonic()
        self._last = self.started
        #: Appended to each line: the engine's throughput controls (concurrency, batch size, pace).
        self.detail: Callable[[], str] | None = None
        #: The controls as numbers (``in_flight``, ``limit``, ``batch_size``), for the timeline.
        self.state: Callable[[], dict[str, int]] | None = None
        #: The run over time, for the report (bounded however long the run).
        self.timeline = timeline if timeline is not None else Timeline()
        #: Given a snapshot at every line and at the end.
        self.listeners: list[ProgressListener] = list(listeners)
        #: The sender's numbers, for the snapshots (set by the run once it sends).
        self.sending: Callable[[], SendingState] | None = None
        self._snapped_at, self._snapped_done = self.started, 0
        self._broken: set[str] = set()  # what failed and was logged
        self._finished = False

    def maybe_log(self, force: bool = False) -> None:
        """Log a line (and hand the listeners a snapshot) if ``interval`` has passed; ``force``: now."""
        self._tick(force, final=False)

    def finish(self) -> None:
        """The run ended, failed or was stopped: the last line, and the final snapshot (once)."""
        if not self._finished:
            self._finished = True
            self._tick(True, final=True)

    def _tick(self, force: bool, *, final: bool) -> None:
        now = time.monotonic()
        self.timeline.maybe_sample(now - self.started, self.writer.total, self.state, force=force)
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
        detail = f"; {self.detail()}" if self.detail is not None else ""
        self.emit(
            f"{position}, {rate:,.0f} keys/s; migrated {self.writer.migrated_count:,}, failed: {reasons}"
            f"{skipped}{detail}"
        )
        if self.listeners and (final or not self._finished):
            self._notify(self._snapshot(now, final))

    def _snapshot(self, now: float, final: bool) -> ProgressSnapshot:
        """The run now; the next snapshot's ``keys_per_second`` counts from this one."""
        writer = self.writer
        # One C-level copy under the GIL: a worker thread adding a reason meanwhile cannot break it.
        failed_by_reason = dict(writer.failed_by_reason)
        migrated, skipped = writer.migrated_count, writer.skipped_count
        done = migrated + sum(failed_by_reason.values()) + skipped
        span = now - self._snapped_at
        recent = (done - self._snapped_done) / span if span > 0 else 0.0
        self._snapped_at, self._snapped_done = now, done
        elapsed = now - self.started
        sending = None
        if self.sending is not None:
            try:
                sending = self.sending()
            except Exception:  # never worth stopping the run for
                self._failed_once("reading the sender's state")
        return ProgressSnapshot(
            final=final,
            elapsed_seconds=elapsed,
            total=self.total,
            done=done,
            migrated=migrated,
            failed_by_reason=failed_by_reason,
            skipped=skipped,
            keys_per_second=recent,
            mean_keys_per_second=done / elapsed if elapsed > 0 else 0.0,
            sending=sending,
        )

    def _notify(self, snapshot: ProgressSnapshot) -> None:
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:  # a listener (metrics, say) must never stop the run
                self._failed_once(f"the progress listener {listener!r}")

    def _failed_once(self, what: str) -> None:
        """Log the first failure of ``what`` with its traceback; later ones are ignored."""
        if what not in self._broken:
            self._broken.add(what)
            log.warning("%s failed (later failures are not logged); the run goes on", what, exc_info=True)


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
    #: Where the throughput controls ended: concurrency (final, peak, cap), keys a request, seconds
    #: spent pacing to the rate limit, answers that were 429.
    throttle: dict[str, float | int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for XCom)."""
        return asdict(self)
