"""The faults the emulator injects: what production does to a client, on demand and reproducibly.

:class:`Faults` is what a test configures; :class:`FaultSource` holds the faults in force and the one
seeded random generator, and draws each request's faults (:class:`FaultDraw`) at once under its lock.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Faults:
    """Faults the emulator injects into API requests (never into ``/v2/liveness``). All off by default.

    Random decisions come from the emulator's one seeded :class:`random.Random`, so a single-threaded
    client sending the same requests sees the same faults on every run.

    :param latency: seconds added to every API request.
    :param latency_per_key: seconds added per key of a ``keys.migrateKeys`` request.
    :param error_rate: share (0-1) of requests answered with a status drawn from ``error_statuses``
        without committing anything.
    :param error_statuses: the statuses ``error_rate`` draws from.
    :param rate_limit_storm: the next N requests are answered 429 (counts down as they are served).
    :param storm_retry_after: ``Retry-After`` (and ``RateLimit-Reset``) seconds of a storm's 429s, which
        carry every rate-limit header like any 429 (``RateLimit-Limit`` is the configured limit, or 0).
    :param reset_rate: share of requests whose connection is reset (TCP RST) before anything is read.
    :param drop_after_commit_rate: share of successful ``keys.migrateKeys`` requests whose keys are
        committed and whose connection is then closed without any response.
    """

    latency: float = 0.0
    latency_per_key: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_storm: int = 0
    storm_retry_after: int = 1
    reset_rate: float = 0.0
    drop_after_commit_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "drop_after_commit_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("latency", "latency_per_key", "rate_limit_storm", "storm_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self.error_statuses = tuple(self.error_statuses)
        if self.error_rate > 0 and not self.error_statuses:
            raise ValueError("error_rate needs at least one status in error_statuses")
        if any(not 400 <= s <= 599 for s in self.error_statuses):
            raise ValueError(f"error_statuses must be 4xx/5xx statuses, got {self.error_statuses!r}")


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """The faults one request gets, drawn at once under the fault lock."""

    latency: float
    latency_per_key: float
    storm_retry_after: int | None = None  # set: this request is part of a rate-limit storm
    reset: bool = False
    error_status: int | None = None


class FaultSource:
    """The faults in force and their one seeded RNG, behind one lock.

    :param faults: copied; ``None`` for no faults.
    :param seed: seed of every random decision.
    """

    def __init__(self, faults: Faults | None, seed: int) -> None:
        self._lock = threading.Lock()
        self._faults = dataclasses.replace(faults) if faults is not None else Faults()
        self._rng = random.Random(seed)

    def current(self) -> Faults:
        """A copy of the faults in force (``rate_limit_storm`` is what is left of the storm)."""
        with self._lock:
            return dataclasses.replace(self._faults)

    def update(self, **fields: Any) -> Faults:
        """Change some fields; :return: a copy of the faults now in force.

        :raises TypeError: for a name that is not a :class:`Faults` field.
        """
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **fields)
            return dataclasses.replace(self._faults)

    def draw(self) -> FaultDraw:
        """The faults of one API request (a storm's 429 counts down here)."""
        with self._lock:
            faults = self._faults
            if faults.rate_limit_storm > 0:
                faults.rate_limit_storm -= 1
                return FaultDraw(faults.latency, 0.0, storm_retry_after=faults.storm_retry_after)
            # Draw only for faults that are on: the sequence one fault sees does not depend on the
            # fields of faults that are off.
            rng = self._rng
            reset = faults.reset_rate > 0 and rng.random() < faults.reset_rate
            error_status = None
            if not reset and faults.error_rate > 0 and rng.random() < faults.error_rate:
                error_status = rng.choice(faults.error_statuses)
            return FaultDraw(faults.latency, faults.latency_per_key, reset=reset, error_status=error_status)

    def drop_after_commit(self) -> bool:
        """Whether a committed ``keys.migrateKeys`` answer is dropped (drawn only while the rate is on)."""
        with self._lock:
            rate = self._faults.drop_after_commit_rate
            return rate > 0 and self._rng.random() < rate
