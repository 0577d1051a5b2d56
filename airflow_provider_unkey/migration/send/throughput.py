"""The engine's throughput controls: what every answer teaches them, and what they allow.

Nothing here imports Airflow. :class:`ThroughputControls` is the part of
:class:`~airflow_provider_unkey.migration.send.sending.MigrationEngine` that feeds each HTTP attempt
to its ``ConcurrencyLimiter``, :class:`~airflow_provider_unkey.migration.send.pacing.RatePacer` and
``BatchSizer`` (:mod:`~airflow_provider_unkey.migration.send.throttle`), holds requests to the
concurrency they allow, and reports their state for progress lines, the report and the summary.
"""

from __future__ import annotations

import threading
import time

from airflow_provider_unkey.client import MIGRATE_KEYS_PATH, Attempt
from airflow_provider_unkey.migration.send.batching import Batcher
from airflow_provider_unkey.migration.send.failures import ACTIONS, Action
from airflow_provider_unkey.migration.send.pacing import RatePacer
from airflow_provider_unkey.migration.send.throttle import BatchSizer, ConcurrencyLimiter

#: Seconds between the checks whether the batch may grow.
_GROW_EVERY = 1.0


class ThroughputControls:
    """How many requests the engine keeps in flight and how many keys each carries, found as it goes.

    The engine sets these attributes in its constructor.
    """

    batcher: Batcher
    max_concurrency: int
    limiter: ConcurrencyLimiter | None
    pacer: RatePacer
    sizer: BatchSizer | None
    _abort: threading.Event
    _local: threading.local
    _in_flight: int
    _gate: threading.Condition
    _waited_at_last_grow: float
    _last_grow_check: float
    _unticketed: int
    _capped_at_reopen: int
    _reopen_after: int

    # --- what the answers teach ------------------------------------------------------------------------
    def _observe(self, attempt: Attempt) -> None:
        """Called by the client after each HTTP attempt, in the worker thread that made it."""
        if attempt.path != MIGRATE_KEYS_PATH:
            return
        if attempt.status is not None and ACTIONS.get(attempt.status, (None,))[0] is Action.ABORT:
            # An answer that stops the run (401, 403, 404): hold every other request back now, before
            # its worker gets to classify it, and let it neither free nor add a place.
            self._abort.set()
            return
        keys = int(getattr(self._local, "keys", 0))
        self.pacer.observe(attempt, self._local.ticket)
        if self.limiter is not None:
            full = keys >= max(1, self.batcher.batch_size // 2)
            self.limiter.on_answer(
                attempt.seconds, keys, attempt.status, full, attempt.ended - attempt.seconds
            )
        if self.sizer is not None and self.sizer.on_answer(attempt.seconds, keys, attempt.status):
            self._set_batch_size()
        self._maybe_reopen_sizer()

    def _maybe_reopen_sizer(self) -> None:
        """Where the concurrency cap binds (rounds near the latency floor at the cap), try bigger
        batches again; each try doubles the capped rounds before the next."""
        limiter, sizer = self.limiter, self.sizer
        if limiter is None or sizer is None or self.pacer.limited:
            return
        with self._gate:
            if limiter.capped_rounds - self._capped_at_reopen < self._reopen_after:
                return
            self._capped_at_reopen = limiter.capped_rounds
            if sizer.reopen():
                self._reopen_after *= 2

    def _on_split(self) -> None:
        """A batch was split: the sizer stops growing for the latency per key (and may step back)."""
        if self.sizer is not None:
            self.sizer.on_split()
            self._set_batch_size()

    def _set_batch_size(self) -> None:
        assert self.sizer is not None
        if self.batcher.batch_size != self.sizer.size:
            self.batcher.batch_size = self.sizer.size
            if self.limiter is not None:
                self.limiter.forget_floor()  # latencies change with the size

    def _maybe_grow_batches(self) -> None:
        """Under a rate limit that holds the run back, put more keys in each request."""
        if self.sizer is None or not self.pacer.limited:
            return
        now = time.monotonic()
        if now - self._last_grow_check < _GROW_EVERY:
            return
        waited = self.pacer.waited
        binding = waited > self._waited_at_last_grow or self.pacer.holding or self.pacer.would_wait()
        self._waited_at_last_grow = waited
        if not binding:
            return  # checked again at the next answer: the first batches are not built at the old size
        # A second between doublings: the requests of the new size teach the sizer their latency.
        self._last_grow_check = now
        if self.sizer.grow():
            self._set_batch_size()

    def _enter(self) -> bool:
        """Take a place under the concurrency limit, waiting for one; ``False`` (and no place) when the
        run stops meanwhile."""
        with self._gate:
            while True:
                if self._abort.is_set():  # checked with a place free too: a stopped run sends nothing
                    return False
                if self._in_flight < self.concurrency():
                    break
                self._gate.wait(0.5)
            self._in_flight += 1
            return True

    def _ticketed(self) -> None:
        """The batch this worker thread sends no longer waits for a place or the pace (once a batch)."""
        if getattr(self._local, "unticketed", False):
            self._local.unticketed = False
            with self._gate:
                self._unticketed -= 1

    def _leave(self) -> None:
        with self._gate:
            self._in_flight -= 1
            self._gate.notify_all()  # the limit may have grown too

    def concurrency(self) -> int:
        """Requests to keep in flight now."""
        return self.limiter.limit if self.limiter is not None else self.max_concurrency

    def describe(self) -> str:
        """The throughput controls' state, for progress lines."""
        parts = [f"in flight {self._in_flight}, limit {self.concurrency()}/{self.max_concurrency}"]
        parts.append(f"{self.batcher.batch_size:,} keys a request")
        rate, share, limit = self.pacer.rate(), self.pacer.share(), self.pacer.limit
        if rate is not None and share is not None:
            parts.append(
                f"paced to {rate * 60:.1f} req/min by the rate limit ({share:.0%} of the workspace's"
                f" {limit:,} used by this run, {self.pacer.headroom:.0%} left free), waited"
                f" {self.pacer.waited:,.1f} s for it"
            )
        return ", ".join(parts)

    def state(self) -> dict[str, int]:
        """The throughput controls as numbers, for the report's timeline."""
        return {
            "in_flight": self._in_flight,
            "limit": self.concurrency(),
            "batch_size": self.batcher.batch_size,
        }

    def throttle_summary(self) -> dict[str, float | int]:
        """What the throughput controls ended at, for the summary."""
        return {
            "max_concurrency": self.max_concurrency,
            "final_concurrency": self.concurrency(),
            "peak_concurrency": self.limiter.peak if self.limiter is not None else self.max_concurrency,
            "final_batch_size": self.batcher.batch_size,
            "paced_seconds": round(self.pacer.waited, 3),
            "rate_limited_answers": self.pacer.refused,
            "rate_limit": self.pacer.limit or 0,
            "rate_limit_headroom": self.pacer.headroom,
            "rate_limit_share_peak": round(self.pacer.peak_share, 4),
            "rate_limit_share_mean": round(self.pacer.mean_share() or 0.0, 4),
            "rate_limit_workspace_peak": round(self.pacer.peak_workspace_share, 4),
        }
