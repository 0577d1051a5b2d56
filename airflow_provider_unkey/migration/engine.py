"""The migration engine's one public door: read, prepare, deduplicate, send, record.

Nothing here imports Airflow. :func:`run_migration` wires a stream of Arrow record batches, with the
settings of a :class:`MigrationConfig`, through the stages of the pipeline, each a package of
``airflow_provider_unkey.migration`` whose ``__init__`` names what it offers:

* ``read``: :class:`~airflow_provider_unkey.migration.read.ParquetSource` and
  :class:`~airflow_provider_unkey.migration.read.SqlSource`, and the partitions of a source between
  mapped tasks;
* ``prepare``: :class:`~airflow_provider_unkey.migration.prepare.KeyPreparer` validates each batch and
  serialises its keys;
* ``dedupe``: :class:`~airflow_provider_unkey.migration.dedupe.DigestSet` finds duplicates across the
  whole source;
* ``ledger``: :class:`~airflow_provider_unkey.migration.ledger.KnownHashes` says what earlier runs
  recorded, :class:`~airflow_provider_unkey.migration.ledger.LedgerWriter` records this one's outcomes;
* ``send``: :class:`Batcher` and :class:`MigrationEngine` post the keys at the pace the server and the
  workspace rate limit (:class:`RatePacer`) allow; :data:`ACTIONS` says what a failed request means;
* ``record``: :class:`~airflow_provider_unkey.migration.record.OutcomeWriter` writes every row's one
  outcome; :class:`Progress` and :class:`MigrationSummary` report the run, and a
  :class:`ProgressListener` is handed a :class:`ProgressSnapshot` (with the sender's
  :class:`SendingState`) at every progress line and when the run ends.

:mod:`~airflow_provider_unkey.migration.config` holds :class:`MigrationConfig`, and
:mod:`~airflow_provider_unkey.migration.run` holds :func:`run_migration`, :class:`RunControl` and
:class:`InvariantError`, which checks at the end that every row read has exactly one outcome. This
module gathers the names a caller needs.
"""

from __future__ import annotations

from airflow_provider_unkey.migration.config import MigrationConfig
from airflow_provider_unkey.migration.record import (
    MigrationSummary,
    Progress,
    ProgressListener,
    ProgressSnapshot,
    SendingState,
)
from airflow_provider_unkey.migration.run import InvariantError, RunControl, run_migration
from airflow_provider_unkey.migration.send import (
    ACTIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_RATE_LIMIT_HEADROOM,
    SPLIT_WITHOUT_RETRY,
    UNKEY_RATE_LIMIT_WINDOW,
    Action,
    Batch,
    Batcher,
    MigrationAborted,
    MigrationEngine,
    RatePacer,
    classify,
)

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
    "ProgressListener",
    "ProgressSnapshot",
    "RatePacer",
    "RunControl",
    "SendingState",
    "classify",
    "run_migration",
]
