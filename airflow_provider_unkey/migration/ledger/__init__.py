"""The ledger: a durable, queryable record of every outcome, so nothing created is ever forgotten.

Nothing here imports Airflow.

A ledger is a directory of Parquet files that reads as one table (``pyarrow.dataset``, DuckDB's
``read_parquet('ledger/*.parquet')``, Spark, pandas), with :data:`LEDGER_SCHEMA`: one row per outcome
with the hash as it went on the wire, the key id Unkey returned (null when unknown), the reason (null
for migrated keys), and which task instance and try recorded it.

:class:`LedgerWriter` records outcomes as batches complete and writes them out as a new *segment*
file every ``flush_interval`` seconds (sooner when ``max_buffer_rows`` pile up). On a local disk each
segment is written to a hidden temporary name, fsynced, renamed into place and its directory fsynced;
on object storage each segment is one object, put whole (nothing is ever appended). A process killed
with SIGKILL therefore loses at most the outcomes of the last ``flush_interval`` seconds, plus the
requests that were in flight. Each segment's rows also go, as it is written, into the try's
compacted file, which is put in place when the run ends (and the segments it holds deleted).

:class:`KnownHashes` reads a ledger back into a compact index (17 bytes a hash in memory up to its
memory budget, 32 MiB by default, then on disk) and says, for a batch of digests, which ones an earlier try of the same task instance
recorded (with their outcome, to report again) and which ones other runs know to exist in Unkey (to
skip).
"""

from __future__ import annotations

from airflow_provider_unkey.migration.ledger.base import (
    EXISTS_IN_UNKEY,
    LEDGER_SCHEMA,
    LedgerError,
    LedgerScope,
    read_ledger,
)
from airflow_provider_unkey.migration.ledger.index import KnownHashes, Lookup
from airflow_provider_unkey.migration.ledger.writer import LedgerWriter

__all__ = [
    "EXISTS_IN_UNKEY",
    "LEDGER_SCHEMA",
    "KnownHashes",
    "LedgerError",
    "LedgerScope",
    "LedgerWriter",
    "Lookup",
    "read_ledger",
]
