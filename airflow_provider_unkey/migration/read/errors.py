"""The error every source raises when it cannot be read as asked.

Its own module so that :mod:`~airflow_provider_unkey.migration.read.parquet` and
:mod:`~airflow_provider_unkey.migration.read.sql` share it without importing each other; both
re-export it, and so does :mod:`~airflow_provider_unkey.migration.read`. Nothing here imports Airflow.
"""

from __future__ import annotations


class SourceError(ValueError):
    """A source cannot be read as asked: nothing matched, a file is unreadable, a query has no rows."""


__all__ = ["SourceError"]
