"""Send: put prepared keys into request bodies and post them concurrently, at the pace the server and
the workspace rate limit allow.

Nothing here imports Airflow. :class:`Batcher` appends each key's JSON to a body until
``batch_size`` keys or ``max_request_bytes``. :class:`MigrationEngine` posts the bodies from a pool of
worker threads, as many in flight as its ``ConcurrencyLimiter`` allows and as fast as its
:class:`RatePacer` allows, and hands every answer to the outcome writer. What a request that still
fails after its retries means (split the batch, reject a key, wait, give up, abort) is one table,
:data:`ACTIONS`, read by :func:`classify`.
"""

from __future__ import annotations

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
    check_headroom,
    check_window,
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
    "MigrationAborted",
    "MigrationEngine",
    "RatePacer",
    "check_headroom",
    "check_window",
    "classify",
]
