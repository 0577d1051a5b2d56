"""Read: Parquet files or an SQL query as a lazy stream of Arrow record batches, and how to split a
source between mapped tasks.

Nothing here imports Airflow. Both readers hold at most a few batches in memory, whatever the size of
the input, so :func:`~airflow_provider_unkey.migration.engine.run_migration` can consume them as they
come:

* :class:`ParquetSource` scans a file, a directory (a dataset, hive-partitioned or not), a glob or a
  list of files with :mod:`pyarrow.dataset`, on any :class:`pyarrow.fs.FileSystem` (an fsspec
  filesystem wrapped in :class:`pyarrow.fs.PyFileSystem` works too); it can be limited to some row
  groups of some files, which is how a source is split between mapped tasks.
* :class:`SqlSource` runs a query on a DB-API connection and fetches ``batch_rows`` rows at a time
  through a server-side cursor (PostgreSQL, MySQL/MariaDB) or SQLite's native stepping cursor.

How SQL values become Arrow columns, and how the schema stays the same across chunks, is described on
:class:`SqlSource`.

The readers live in ``parquet`` and ``sql``, their shared :class:`SourceError` in ``errors``, and
the partitions of a source between mapped tasks (by files, row groups or the hash's first
characters) in ``partition`` and ``hash_partition``: :func:`parquet_partitions`, :func:`parquet_hash_partitions`,
:func:`sql_partitions`, checked by :func:`check_partition` and applied to a batch by
:func:`hash_partition_mask`.
"""

from __future__ import annotations

from airflow_provider_unkey.migration.read.errors import SourceError
from airflow_provider_unkey.migration.read.hash_partition import (
    hash_partition_mask,
    parquet_hash_partitions,
    quote_identifier,
    sql_partitions,
)
from airflow_provider_unkey.migration.read.parquet import ParquetSource
from airflow_provider_unkey.migration.read.partition import (
    PARQUET_PATH_KEY,
    PARTITION_KEY,
    SQL_KEY,
    PartitionBy,
    check_partition,
    parquet_partitions,
)
from airflow_provider_unkey.migration.read.sql import SchemaDriftError, SqlSource, driver_family

__all__ = [
    "PARQUET_PATH_KEY",
    "PARTITION_KEY",
    "SQL_KEY",
    "ParquetSource",
    "PartitionBy",
    "SchemaDriftError",
    "SourceError",
    "SqlSource",
    "check_partition",
    "driver_family",
    "hash_partition_mask",
    "parquet_hash_partitions",
    "parquet_partitions",
    "quote_identifier",
    "sql_partitions",
]
