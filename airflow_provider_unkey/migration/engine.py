"""The migration engine: batch by count and bytes, send batches concurrently, record every outcome.

Nothing here imports Airflow. :func:`run_migration` wires a stream of Arrow record batches, with the
settings of a :class:`MigrationConfig`, through
:class:`~airflow_provider_unkey.migration.prepare.preparer.KeyPreparer` (validation),
:class:`~airflow_provider_unkey.migration.dedupe.digests.DigestSet` (deduplication across the whole source),
:class:`Batcher` and :class:`MigrationEngine` (sending), into an
:class:`~airflow_provider_unkey.migration.record.outcomes.OutcomeWriter`, and checks at the end that every
row read has exactly one outcome.

The engine lives in modules that import each other one way only:

* :mod:`~airflow_provider_unkey.migration.record.progress`: :class:`Progress` and :class:`MigrationSummary`;
* :mod:`~airflow_provider_unkey.migration.send.batching`: :class:`Batch` and :class:`Batcher`;
* :mod:`~airflow_provider_unkey.migration.send.failures`: what a failed request means (:data:`ACTIONS`,
  :func:`classify`) and :class:`MigrationAborted`;
* :mod:`~airflow_provider_unkey.migration.send.pacing`: :class:`RatePacer`, the workspace rate limit;
* :mod:`~airflow_provider_unkey.migration.send.sending`: :class:`MigrationEngine`;
* :mod:`~airflow_provider_unkey.migration.config`: :class:`MigrationConfig`, the settings of a run;
* :mod:`~airflow_provider_unkey.migration.run`: :func:`run_migration`, :class:`RunControl` and
  :class:`InvariantError`.

This module gathers their names, so that ``from airflow_provider_unkey.migration.engine import ...``
keeps working.
"""

from __future__ import annotations

from airflow_provider_unkey.migration import run as _run
from airflow_provider_unkey.migration.config import MigrationConfig
from airflow_provider_unkey.migration.record.progress import MigrationSummary, Progress
from airflow_provider_unkey.migration.run import InvariantError, RunControl, run_migration
from airflow_provider_unkey.migration.send import failures as _failures
from airflow_provider_unkey.migration.send import sending as _sending
from airflow_provider_unkey.migration.send.batching import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_REQUEST_BYTES,
    Batch,
    Batcher,
)
from airflow_provider_unkey.migration.send.failures import (
    ACTIONS,
    SPLIT_WITHOUT_RETRY,
    Action,
    MigrationAborted,
    classify,
)
from airflow_provider_unkey.migration.send.pacing import (
    DEFAULT_RATE_LIMIT_HEADROOM,
    UNKEY_RATE_LIMIT_WINDOW,
    RatePacer,
)
from airflow_provider_unkey.migration.send.sending import DEFAULT_MAX_CONCURRENCY, MigrationEngine

__all__ = [
    "ACTIONS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_RATE_LIMIT_HEADROOM",
    "SPLIT_WITHOUT_RETRY",
    "UNKEY_RATE_LIMIT_WINDOW",
    "Action",
    "Batch",
    "Batcher",
    "InvariantError",
    "MigrationAborted",
    "MigrationConfig",
    "MigrationEngine",
    "MigrationSummary",
    "Progress",
    "RatePacer",
    "RunControl",
    "classify",
    "run_migration",
]

# The private names at the address they had before the engine was split (the tests use some).
_KEY_INDEX = _failures._KEY_INDEX
_OTHER_SERVER_ERROR = _failures._OTHER_SERVER_ERROR
_named_keys = _failures._named_keys
_what_to_fix = _failures._what_to_fix
_MAYBE_CREATED = _sending._MAYBE_CREATED
_emit_resumed = _run._emit_resumed
