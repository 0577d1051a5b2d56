"""The settings of a migration run, checked once: :class:`MigrationConfig`.

Nothing here imports Airflow. :func:`~airflow_provider_unkey.migration.run.run_migration` reads every
setting from a :class:`MigrationConfig`; the live objects of a run (the source, the client, the
ledger, the output directory) stay its arguments. ``MigrateKeysOperator`` builds the config from its
arguments when the DAG is parsed, so that a bad argument fails the parse, and again once its
templated fields are rendered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from airflow_provider_unkey.client import RetryPolicy
from airflow_provider_unkey.migration.prepare import HASH_FORMATS, KEY_FIELD_PATHS
from airflow_provider_unkey.migration.send import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_RATE_LIMIT_HEADROOM,
    UNKEY_RATE_LIMIT_WINDOW,
    check_headroom,
    check_window,
)
from airflow_provider_unkey.rules import MAX_BODY_BYTES, canonical_algorithm

__all__ = ["MIN_REQUEST_BYTES", "MigrationConfig"]

#: The smallest ``max_request_bytes``: room for the envelope and a key with a few fields.
MIN_REQUEST_BYTES = 1024


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _frozen_mapping(value: object) -> MappingProxyType[str, str] | None:
    """``column_mapping`` checked and frozen: known key fields, each fed by a named column."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"column_mapping must map key fields to source columns (a dict), got {type(value).__name__}"
        )
    unknown = sorted(str(field) for field in set(value) - set(KEY_FIELD_PATHS))
    if unknown:
        raise ValueError(
            f"column_mapping names unknown key fields {unknown}; the fields are {KEY_FIELD_PATHS}"
        )
    bad = {field: column for field, column in value.items() if not isinstance(column, str) or not column}
    if bad:
        raise ValueError(f"column_mapping must name a source column for each field, got {bad}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class MigrationConfig:
    """Every setting of a migration run, checked and normalised when it is built, immutable after.

    Build a variant with :func:`dataclasses.replace`: it is checked again. The config pickles and
    copies (its mapping travels as a plain dict).

    :param migration_id: the migration id Unkey support set up.
    :param api_id: the API the keys go to.
    :param column_mapping: key field -> source column (``None``: every field whose name is a column of
        the source). Kept as a read-only mapping.
    :param hash_format: what the hash column holds, one of
        :data:`~airflow_provider_unkey.migration.prepare.hashes.HASH_FORMATS`.
    :param algorithm: the migration's algorithm, ``sha256`` or the seam algorithm (alias ``seam``);
        kept under its canonical name (:func:`~airflow_provider_unkey.rules.canonical_algorithm`).
    :param list_delimiter: separates roles or permissions held in one text column.
    :param batch_size: keys per request (to start with, when ``adaptive``).
    :param max_request_bytes: bytes per request body, between :data:`MIN_REQUEST_BYTES` and Unkey's
        limit (:data:`~airflow_provider_unkey.rules.MAX_BODY_BYTES`).
    :param max_concurrency: the most requests in flight at once (with ``adaptive``, the cap).
    :param adaptive: find the concurrency and, under a rate limit, the batch size as the run goes;
        ``False`` keeps ``max_concurrency`` requests in flight and ``batch_size`` keys in each.
    :param rate_limit_headroom: the share of the workspace rate limit the run never takes: the whole
        workspace's use, production's included, stays below ``limit * (1 - rate_limit_headroom)``.
    :param rate_limit_window: the window of the workspace rate limit, in seconds (Unkey's is a minute;
        set it for an emulator whose window is compressed).
    :param time_budget: seconds the sending may take: requests the rate limit refused are sent again
        until then, and given up after (``None``: no bound).
    :param retry: the retry policy for batches (``None``: the client's).
    :param dry_run: read, validate, deduplicate and batch, but send nothing.
    :param progress_interval: seconds between progress lines (0: a line after every batch).
    :param list_skipped: also write the rows skipped as known to the ledger to ``skipped.parquet``.
    :raises ValueError: naming the first argument that is not valid, and why.
    """

    migration_id: str
    api_id: str
    column_mapping: Mapping[str, str] | None = None
    hash_format: str = "sha256_base64"
    algorithm: str = "sha256"
    list_delimiter: str = ","
    batch_size: int = DEFAULT_BATCH_SIZE
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    adaptive: bool = True
    rate_limit_headroom: float = DEFAULT_RATE_LIMIT_HEADROOM
    rate_limit_window: float = UNKEY_RATE_LIMIT_WINDOW
    time_budget: float | None = None
    retry: RetryPolicy | None = None
    dry_run: bool = False
    progress_interval: float = 5.0
    list_skipped: bool = False

    def __post_init__(self) -> None:
        _check_text("migration_id", self.migration_id)
        _check_text("api_id", self.api_id)
        object.__setattr__(self, "column_mapping", _frozen_mapping(self.column_mapping))
        if self.hash_format not in HASH_FORMATS:
            raise ValueError(f"hash_format must be one of {HASH_FORMATS}, got {self.hash_format!r}")
        if not isinstance(self.algorithm, str):
            raise ValueError(f"algorithm must be a string, got {self.algorithm!r}")
        # canonical_algorithm's ValueError names the algorithm and the accepted names.
        object.__setattr__(self, "algorithm", canonical_algorithm(self.algorithm))
        if not isinstance(self.list_delimiter, str) or not self.list_delimiter:
            raise ValueError(f"list_delimiter must not be empty, got {self.list_delimiter!r}")
        _check_count("batch_size", self.batch_size)
        _check_count("max_request_bytes", self.max_request_bytes)
        if not MIN_REQUEST_BYTES <= self.max_request_bytes <= MAX_BODY_BYTES:
            raise ValueError(
                f"max_request_bytes must be between {MIN_REQUEST_BYTES} and {MAX_BODY_BYTES},"
                f" got {self.max_request_bytes}"
            )
        _check_count("max_concurrency", self.max_concurrency)
        _check_flag("adaptive", self.adaptive)
        object.__setattr__(self, "rate_limit_headroom", check_headroom(self.rate_limit_headroom))
        object.__setattr__(self, "rate_limit_window", check_window(self.rate_limit_window))
        budget = self.time_budget
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not math.isfinite(budget)
            or budget <= 0
        ):
            raise ValueError(f"time_budget must be a number of seconds above 0 or None, got {budget!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy or None, got {type(self.retry).__name__}")
        _check_flag("dry_run", self.dry_run)
        interval = self.progress_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval < 0
        ):
            raise ValueError(f"progress_interval must be a number of seconds, 0 or more, got {interval!r}")
        _check_flag("list_skipped", self.list_skipped)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A MappingProxyType does not pickle: the mapping travels as a dict and is frozen again.
        values = [getattr(self, f.name) for f in fields(self)]
        return type(self), tuple(dict(v) if isinstance(v, MappingProxyType) else v for v in values)
