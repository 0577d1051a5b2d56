"""A migration's metrics, through the ``Stats`` that Airflow configures: StatsD, DogStatsD or OpenTelemetry.

The core knows nothing of Airflow: it hands each progress listener a
:class:`~airflow_provider_unkey.migration.record.ProgressSnapshot` at every progress line and once
when the run ends, and the client calls its observers after every HTTP attempt.
:class:`MigrationMetrics` is both, and turns them into ``Stats`` calls:

- **counters** at every progress line, as increments since the last (never one call per key), whose
  sums are exactly the run's own totals: the summary's ``migrated``, ``failed_by_reason``,
  ``skipped``, ``requests`` and ``throttle["rate_limited_answers"]``;
- **gauges** at every progress line: the throughput, the requests in flight and their limit, the keys a
  request carries, the share of the workspace rate limit in use and the time waited for it;
- one **timer** value per HTTP request (never per key): how long Unkey took to answer it.

Every name is under :data:`PREFIX` (Airflow puts its own ``statsd_prefix`` or ``otel_prefix`` in
front, ``airflow`` by default); every metric is tagged with the task and the migration
(:meth:`MigrationMetrics.for_current_task`). :data:`METRICS` lists them all (docs/operating.md shows the
table). A metric that cannot be emitted is logged once and the migration goes on without it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, cast

from airflow_provider_unkey._compat import Stats
from airflow_provider_unkey.client import MIGRATE_KEYS_PATH, Attempt, UnkeyClient
from airflow_provider_unkey.migration.engine import ProgressSnapshot

log = logging.getLogger(__name__)

#: Every metric's name starts with this (after Airflow's own prefix).
PREFIX = "unkey.migration"

#: Every metric: name (under :data:`PREFIX`) -> (type, the tags it adds to the run's, what it is).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "keys_migrated": ("counter", (), "keys migrated (resumed from an earlier try's ledger too)"),
    "keys_failed": ("counter", ("reason",), "keys that failed, by the reason of `failed.parquet`"),
    "keys_skipped": ("counter", (), "keys not sent: the ledger shows them in Unkey already"),
    "requests": ("counter", (), "requests sent, as the summary's `requests` counts them"),
    "http_requests": (
        "counter",
        ("status_class",),
        "HTTP requests to `keys.migrateKeys`, the client's retries too, by the class of the answer",
    ),
    "rate_limited": ("counter", (), "answers that were 429: the workspace rate limit refused a request"),
    "splits": ("counter", (), "batches split in two after an answer that blamed their content"),
    "keys_per_second": ("gauge", (), "keys given an outcome a second since the last progress line"),
    "requests_in_flight": ("gauge", (), "requests being sent now"),
    "concurrency_limit": ("gauge", (), "requests the task allows in flight now"),
    "batch_size": ("gauge", (), "keys a request carries now"),
    "rate_limit_share": ("gauge", (), "this run's share of the workspace rate limit now, 0 to 1"),
    "rate_limit_waited_seconds": ("gauge", (), "seconds so far a request waited for the rate limit"),
    "request_duration": ("timer", ("status_class",), "how long one HTTP request took to be answered"),
}


class StatsBackend(Protocol):
    """What is used of Airflow's ``Stats`` (a fake in tests)."""

    def incr(
        self, stat: str, count: int = ..., rate: float = ..., *, tags: dict[str, Any] | None = ...
    ) -> Any:
        """Add ``count`` to a counter."""

    def gauge(self, stat: str, value: float, *, tags: dict[str, Any] | None = ...) -> Any:
        """Set a gauge."""

    def timing(self, stat: str, dt: dt.timedelta, *, tags: dict[str, Any] | None = ...) -> Any:
        """Record a duration."""


def status_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx``... for an HTTP status; ``none`` when no answer came (a transport error)."""
    return "none" if status is None else f"{status // 100}xx"


def run_tags(migration_id: str, api_id: str) -> dict[str, str]:
    """The tags of a run: the migration and the API, and the task that runs it when there is one.

    ``dag_id`` and ``task_id`` come from the running task's context, and ``map_index`` for a mapped
    task; outside a task (a script calling the operator's code) only the migration's two are given.
    """
    tags = {"migration_id": migration_id, "api_id": api_id}
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        tags.update(dag_id=str(ti.dag_id), task_id=str(ti.task_id))
        map_index = getattr(ti, "map_index", None)
        if isinstance(map_index, int) and map_index >= 0:
            tags["map_index"] = str(map_index)
    except Exception:  # no task running: the migration's tags alone
        log.debug("No task context for the metrics' tags", exc_info=True)
    return tags


class MigrationMetrics:
    """One run's metrics: a progress listener (call it with each snapshot) and an observer of the client.

    :param tags: given with every metric (:func:`run_tags`); backends without tags drop them.
    :param stats: where the metrics go (default: Airflow's ``Stats``).
    """

    def __init__(self, tags: Mapping[str, str], stats: StatsBackend | None = None) -> None:
        self.tags = dict(tags)
        self._stats = stats if stats is not None else cast(StatsBackend, Stats)
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()  # HTTP requests by status class, so far
        self._emitted: dict[tuple[str, str], int] = {}  # (counter, tag value) -> the increments' sum
        self._failed = False

    @classmethod
    def for_current_task(cls, migration_id: str, api_id: str) -> MigrationMetrics:
        """The metrics of a run of the task running now, through Airflow's ``Stats``."""
        return cls(run_tags(migration_id, api_id))

    @contextmanager
    def observing(self, client: UnkeyClient | None) -> Iterator[MigrationMetrics]:
        """Watch every HTTP attempt of ``client`` (none for a dry run) while the block runs."""
        if client is not None:
            client.observers.append(self.observe)
        try:
            yield self
        finally:
            if client is not None and self.observe in client.observers:
                client.observers.remove(self.observe)

    # --- in the thread that runs the migration -----------------------------------------------------
    def __call__(self, snapshot: ProgressSnapshot, /) -> None:
        """Emit the counters' increments since the last snapshot, and the gauges."""
        try:
            self._emit(snapshot)
        except Exception:
            self._failure()

    def _emit(self, snapshot: ProgressSnapshot) -> None:
        self._count("keys_migrated", snapshot.migrated)
        for reason, count in sorted(snapshot.failed_by_reason.items()):
            self._count("keys_failed", count, "reason", reason)
        self._count("keys_skipped", snapshot.skipped)
        with self._lock:
            attempts = dict(self._attempts)
        for klass, count in sorted(attempts.items()):
            self._count("http_requests", count, "status_class", klass)
        sending = snapshot.sending
        if sending is not None:
            self._count("requests", sending.requests)
            self._count("rate_limited", sending.rate_limited)
            self._count("splits", sending.splits)
        # A run that ended moves no keys and has nothing in flight: its gauges say so, not their last value.
        self._gauge("keys_per_second", 0.0 if snapshot.final else snapshot.keys_per_second)
        if sending is not None:
            self._gauge("requests_in_flight", 0 if snapshot.final else sending.in_flight)
            self._gauge("concurrency_limit", sending.concurrency_limit)
            self._gauge("batch_size", sending.batch_size)
            if sending.rate_limit_share is not None:
                self._gauge("rate_limit_share", sending.rate_limit_share)
            self._gauge("rate_limit_waited_seconds", sending.rate_limit_waited_seconds)

    def _count(self, name: str, total: int, tag: str = "", value: str = "") -> None:
        """Add to counter ``name`` what ``total`` grew by since its last increment.

        The sum of the increments is recorded only once the call went through: an increment that failed
        is part of the next one, so the sums still come to the run's totals.
        """
        key = (name, value)
        increment = total - self._emitted.get(key, 0)
        if increment <= 0:
            return
        tags = {**self.tags, tag: value} if tag else self.tags
        try:
            self._stats.incr(f"{PREFIX}.{name}", increment, tags=tags)
        except Exception:
            self._failure()
            return
        self._emitted[key] = total

    def _gauge(self, name: str, value: float) -> None:
        try:
            self._stats.gauge(f"{PREFIX}.{name}", value, tags=self.tags)
        except Exception:
            self._failure()

    # --- in the worker threads, after every HTTP attempt -------------------------------------------
    def observe(self, attempt: Attempt) -> None:
        """Count the attempt by the class of its answer, and time it (one value per request)."""
        if attempt.path != MIGRATE_KEYS_PATH:
            return
        klass = status_class(attempt.status)
        with self._lock:
            self._attempts[klass] += 1
        try:
            self._stats.timing(
                f"{PREFIX}.request_duration",
                dt.timedelta(seconds=attempt.seconds),
                tags={**self.tags, "status_class": klass},
            )
        except Exception:
            self._failure()

    def _failure(self) -> None:
        """Log the first failure, with its traceback; the migration never stops for a metric."""
        with self._lock:
            first, self._failed = not self._failed, True
        if first:
            log.warning(
                "A metric of the migration could not be emitted; the migration goes on, and later failures"
                " of its metrics are not logged",
                exc_info=True,
            )
