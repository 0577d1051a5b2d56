"""What a test does to a running emulator: turn its controls and read what it has seen.

:class:`EmulatorControls` holds the methods of
:class:`~airflow_provider_unkey.testing.emulator.UnkeyEmulator` that change, while it runs, the faults,
the workspace rate limit, production traffic and capacity, and those that read the store, the request
log and the counters. Each one hands over to the part that holds the state (and its lock); the
emulator builds the parts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from airflow_provider_unkey.testing.capacity import Capacity, Load, Stats
from airflow_provider_unkey.testing.faults import Faults, FaultSource
from airflow_provider_unkey.testing.production import Production, ProductionBurst, ProductionStats
from airflow_provider_unkey.testing.ratelimit import RateLimiter
from airflow_provider_unkey.testing.request_log import RequestLog, RequestRecord
from airflow_provider_unkey.testing.store import Store, StoredKey


class EmulatorControls:
    """The controls and the readouts of :class:`~airflow_provider_unkey.testing.emulator.UnkeyEmulator`,
    a mixin of it: the emulator's constructor builds the parts declared here."""

    _store: Store
    _faults: FaultSource
    _limiter: RateLimiter
    _production: Production
    _capacity: Capacity
    _log: RequestLog

    # --- faults ---------------------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        """A copy of the faults in force (``rate_limit_storm`` is what is left of the storm)."""
        return self._faults.current()

    def set_faults(self, **fields: Any) -> Faults:
        """Change some fault fields while running (thread-safe); unnamed fields keep their values.

        :return: the faults now in force.
        :raises TypeError: for a name that is not a :class:`Faults` field.
        """
        return self._faults.update(**fields)

    # --- rate limit -----------------------------------------------------------------------------------
    @property
    def rate_limit(self) -> int | None:
        """Requests per window per workspace, or ``None`` for no limit."""
        return self._limiter.limit

    @rate_limit.setter
    def rate_limit(self, limit: int | None) -> None:
        self.set_rate_limit(limit)

    @property
    def rate_limit_window(self) -> float:
        """The rate limit's window, in seconds."""
        return self._limiter.window

    @rate_limit_window.setter
    def rate_limit_window(self, window: float) -> None:
        self._limiter.configure(self._limiter.limit, window)

    def set_rate_limit(self, limit: int | None, window: float | None = None) -> None:
        """Switch the workspace rate limit on (``limit`` requests per ``window`` s), to 0 (everything
        refused, 429 without headers) or off (``None``).

        Thread-safe, while running too. The requests counted so far stay counted, as in Unkey when a
        workspace's limit changes (its counters are keyed by the window's length, so a new window
        length starts from nothing).

        :param window: seconds (whole milliseconds); ``None`` keeps the current window.
        :raises ValueError: for a negative limit or a window under a millisecond.
        """
        self._limiter.configure(limit, self._limiter.window if window is None else window)

    # --- production traffic ---------------------------------------------------------------------------
    @property
    def production(self) -> ProductionStats:
        """What the workspace's own production traffic has met so far: requests sent, accepted and
        refused (429), the times of the refusals and of the surges; separate from :meth:`stats` and
        :attr:`requests`, which are the HTTP clients' own. As of the time production was last run to
        (the production thread keeps it current while the emulator runs; :meth:`advance_production`)."""
        return self._production.stats()

    def set_production_traffic(
        self,
        per_minute: float | None,
        *,
        burst: ProductionBurst | None = None,
        workspace_id: str | None = None,
    ) -> None:
        """Simulate the workspace's own production traffic from now: its services calling
        ``keys.verifyKey``, ``per_minute`` requests a minute evenly spaced (the first at once), counted
        against the workspace rate limit like the HTTP clients' requests.

        Replaces the steady rate and the bursts; a surge in progress ends; the counters stay.
        ``per_minute`` ``None`` or 0 without ``burst`` stops production. Thread-safe.

        :param burst: recurring bursts at another rate, e.g. ``ProductionBurst(54, 30, every=300)``.
        :param workspace_id: the workspace whose limit production shares; ``None`` keeps it
            (``production_workspace_id``, ``ws_default`` by default).
        :raises ValueError: for a negative rate.
        """
        self._production.configure(per_minute, burst, workspace_id)

    def surge_production(self, per_minute: float, seconds: float) -> None:
        """From now, for ``seconds``, production sends ``per_minute`` requests a minute instead of its
        steady rate (and bursts), then returns to it. A surge in progress ends. Thread-safe.

        :raises ValueError: for a negative rate or a duration that is not positive.
        """
        self._production.surge(per_minute, seconds)

    def advance_production(self, until: float | None = None) -> ProductionStats:
        """Send every production request scheduled up to ``until`` on the rate limiter's clock (each
        counted at its own time), as the production thread does; for a test with a fake clock.

        :param until: a time on the rate limiter's clock; ``None`` for now.
        :return: :attr:`production` afterwards.
        """
        self._production.advance(until)
        return self._production.stats()

    # --- capacity -------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int | None:
        """Requests processed at once at most, or ``None`` for no limit."""
        return self._capacity.limit

    @capacity.setter
    def capacity(self, capacity: int | None) -> None:
        self._capacity.configure(capacity)

    def set_capacity(self, capacity: int | None) -> None:
        """Limit the requests processed at once to ``capacity`` (``None`` or 0: no limit).

        Thread-safe, while running too: a larger capacity lets waiting requests in at once, in their
        order; a smaller one takes no slot back from the requests in flight.

        :raises ValueError: for a negative capacity.
        """
        self._capacity.configure(capacity)

    @property
    def load(self) -> Load:
        """Requests processed and waiting now, and their peaks since the last :meth:`reset_log`."""
        return self._capacity.load()

    def stats(self, path: str | None = None) -> Stats:
        """Counters (by status, 429s, 408s), latency quantiles and the load, for a benchmark's report.

        :param path: only the requests of this path (e.g. ``"/v2/keys.migrateKeys"``); ``None`` for all.
        """
        records = self._log.requests()
        if path is not None:
            records = [r for r in records if r.path == path]
        return Stats.of(records, self._capacity.load())

    # --- inspection -----------------------------------------------------------------------------------
    @property
    def keys(self) -> dict[str, StoredKey]:
        """A snapshot of the store's hash index: the hash each key is stored under -> the key.

        That is the hash it was migrated (or seeded) with, or, for a seam-hashed key rehashed by its
        first valid verification, its native hash (:attr:`StoredKey.native_hash`) instead.
        """
        return self._store.snapshot()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        return self._log.requests()

    @property
    def hash_counts(self) -> Counter[str]:
        """How many times each hash arrived in a ``keys.migrateKeys`` body, whatever the answer."""
        return self._log.hash_counts()

    @property
    def status_counts(self) -> Counter[int | str]:
        """How many answers of each status were sent (``"reset"``, ``"dropped_after_commit"`` too)."""
        return self._log.status_counts()

    def reset_log(self) -> None:
        """Forget the request log, counters and load peaks; the store, the rate limiter's counts and
        production traffic's counters stay."""
        self._log.clear()
        self._capacity.reset_peaks()
