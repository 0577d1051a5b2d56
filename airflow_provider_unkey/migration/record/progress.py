"""How a run reports itself: :class:`Progress` while it goes, :class:`MigrationSummary` when it ends.

Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_unkey.migration.record.outcomes import OutcomeWriter
from airflow_provider_unkey.migration.record.timeline import Timeline

log = logging.getLogger(__name__)


class Progress:
    """Logs progress every ``interval`` seconds: keys done of total, keys/s, ETA, outcome counts."""

    def __init__(
        self,
        writer: OutcomeWriter,
        total: int | None,
        interval: float = 5.0,
        emit: Callable[[str], None] | None = None,
        timeline: Timeline | None = None,
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

    def maybe_log(self, force: bool = False) -> None:
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
