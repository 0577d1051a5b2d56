"""The error every source raises when it cannot be read as asked.

Its own module so that :mod:`~airflow_provider_unkey.migration.parquet_source` and
:mod:`~airflow_provider_unkey.migration.sql_source` share it without importing each other; both
re-export it, and so does :mod:`~airflow_provider_unkey.migration.sources`. Nothing here imports Airflow.
"""

from __future__ import annotations


class SourceError(ValueError):
    """A source cannot be read as asked: nothing matched, a file is unreadable, a query has no rows."""


__all__ = ["SourceError"]
