"""Split a source into partitions, one per mapped task (``MigrateKeysOperator.partial(...).expand_kwargs``).

Nothing here imports Airflow; :mod:`airflow_provider_unkey.operators.io` wraps these for connection ids
and storage URIs.

* Parquet splits by row groups, read from the files' footers, balanced by row count:
  :func:`parquet_partitions`. Every partition names the source as given plus the row groups it reads:
  ``{"parquet_path": <the source>, "partition": {"by": "row_groups", "row_groups": {<file>: [<row
  group>, ...]}}}``. Keeping the source (directory, glob or list) as it was keeps hive partition
  columns and the schema the same in every partition.
* Parquet can also split by the first character of the hash
  (:func:`~airflow_provider_unkey.migration.read.hash_partition.parquet_hash_partitions`): every
  task reads the whole source and keeps its share, so duplicates across files meet in one partition:
  ``{"parquet_path": <the source>, "partition": {"by": "hash", "index": i, "count": n, ...}}``.
* SQL splits by the first character of the hash column, so that equal hashes, and hence duplicates,
  always land in the same partition and deduplication stays complete:
  :func:`~airflow_provider_unkey.migration.read.hash_partition.sql_partitions` returns
  ``{"sql": "SELECT * FROM (<sql>) AS unkey_src WHERE ..."}``.

A binary hash column (raw digests, ``hash_format="sha256_binary"``) splits by its first byte instead.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from typing import Any, Literal

from airflow_provider_unkey.migration.read.parquet import ParquetSource

#: The keys of a Parquet partition dict (the operator's arguments of the same names).
PARQUET_PATH_KEY = "parquet_path"
PARTITION_KEY = "partition"
#: The key of an SQL partition dict.
SQL_KEY = "sql"
#: The alias of the wrapped query.
SUBQUERY_ALIAS = "unkey_src"

PartitionBy = Literal["auto", "files", "row_groups"]


def check_partition(spec: Any) -> dict[str, Any] | None:
    """``spec`` as the operator's ``partition`` argument, checked: what the helpers here produce.

    ``{"by": "row_groups", "row_groups": {file: [index, ...]}}`` reads only those row groups;
    ``{"by": "hash", "index": i, "count": n, "column": "hash", "hash_format": ...}`` keeps only the rows
    whose hash falls in partition ``i`` of ``n`` (``column`` and ``hash_format`` may be left out: the
    operator's ``column_mapping`` and ``hash_format`` then say).

    :return: ``spec`` with its numbers as ``int``, or ``None`` for no partition.
    :raises ValueError: naming what is wrong.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"partition must be a dict from the partition helpers, got {type(spec).__name__}")
    by = spec.get("by")
    if by == "row_groups":
        groups = spec.get("row_groups")
        if set(spec) != {"by", "row_groups"} or not isinstance(groups, dict):
            raise ValueError(
                'partition by row_groups is {"by": "row_groups", "row_groups": {file: [index, ...]}},'
                f" got {spec!r}"
            )
        for path, indexes in groups.items():
            if not isinstance(indexes, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indexes
            ):
                raise ValueError(
                    f"partition row_groups[{path!r}] must be a list of row group indexes, got {indexes!r}"
                )
        return spec
    if by == "hash":
        unknown = set(spec) - {"by", "index", "count", "column", "hash_format"}
        if unknown or "index" not in spec or "count" not in spec:
            raise ValueError(
                'partition by hash is {"by": "hash", "index": i, "count": n[, "column": ...,'
                f' "hash_format": ...]}}, got {spec!r}'
            )
        index, count = spec["index"], spec["count"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count)) or not (
            0 <= index < count
        ):
            raise ValueError(
                f"partition by hash needs integers 0 <= index < count, got {index!r} of {count!r}"
            )
        return spec
    raise ValueError(f"partition must say by 'row_groups' or by 'hash', got by={by!r}")


def _balanced_files(units: list[tuple[str, int, int]], n: int) -> list[list[tuple[str, int, int]]]:
    """Whole files dealt to ``n`` partitions, largest first, each to the lightest partition."""
    files: dict[str, list[tuple[str, int, int]]] = {}
    for unit in units:
        files.setdefault(unit[0], []).append(unit)
    order = {path: i for i, path in enumerate(files)}
    heap = [(0, i) for i in range(n)]
    parts: list[list[str]] = [[] for _ in range(n)]
    for path in sorted(files, key=lambda p: -sum(u[2] for u in files[p])):
        rows, i = heapq.heappop(heap)
        parts[i].append(path)
        heapq.heappush(heap, (rows + sum(u[2] for u in files[path]), i))
    # Within a partition, read files in the source's order.
    return [[u for path in sorted(part, key=order.__getitem__) for u in files[path]] for part in parts]


def _contiguous_row_groups(units: list[tuple[str, int, int]], n: int) -> list[list[tuple[str, int, int]]]:
    """Row groups cut into ``n`` runs in reading order, each close to ``total / n`` rows.

    A cut goes after the row group that brings the running total nearest to the next multiple of
    ``total / n``, so no partition is more than one row group away from its share.
    """
    total = sum(u[2] for u in units)
    parts: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    done = 0
    k = 0
    for unit in units:
        if k < n - 1 and parts[k] and done + unit[2] / 2 > total * (k + 1) / n:
            k += 1
        parts[k].append(unit)
        done += unit[2]
    return parts


def parquet_partitions(
    source: ParquetSource,
    n: int,
    *,
    parquet_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    by: PartitionBy = "auto",
) -> list[dict[str, Any]]:
    """Split a Parquet source into at most ``n`` partitions of about equal row counts.

    :param source: the whole source (not one limited by ``row_groups``).
    :param n: how many partitions (mapped tasks) at most.
    :param parquet_path: what each partition's ``parquet_path`` holds: the source as the operator is
        given it (a local path, a glob, a directory, a list, a storage URI). ``None``: the files as
        :attr:`ParquetSource.files` lists them.
    :param by: ``files`` keeps each file in one partition (good with many files of similar size);
        ``row_groups`` may split a file between partitions, cutting between row groups (good with few
        large files); ``auto`` takes ``files`` when that is within 10% of an even split, else
        ``row_groups``.
    :return: ``[{"parquet_path": ..., "partition": {"by": "row_groups", "row_groups": {file: [row
        group, ...]}}}, ...]``; the file keys are paths as :attr:`ParquetSource.files` lists them.
        Every row group of the source is in exactly one partition; partitions that would be empty are
        left out. A source without rows gives one partition that reads it all (``partition`` is
        ``None``).
    """
    if n < 1:
        raise ValueError(f"the number of partitions must be at least 1, got {n}")
    if by not in ("auto", "files", "row_groups"):
        raise ValueError(f"by must be 'auto', 'files' or 'row_groups', got {by!r}")
    path_value: str | list[str]
    if parquet_path is None:
        path_value = source.files
    elif isinstance(parquet_path, str | os.PathLike):
        path_value = os.fspath(parquet_path)
    else:
        path_value = [os.fspath(p) for p in parquet_path]
    units = [u for u in source.row_group_rows() if u[2] > 0]
    if not units:
        return [{PARQUET_PATH_KEY: path_value, PARTITION_KEY: None}]
    total = sum(u[2] for u in units)
    if by == "row_groups":
        parts = _contiguous_row_groups(units, n)
    else:
        parts = _balanced_files(units, n)
        heaviest = max(sum(u[2] for u in part) for part in parts)
        if by == "auto" and heaviest > 1.1 * total / min(n, len(units)):
            parts = _contiguous_row_groups(units, n)
    out = []
    for part in parts:
        if not part:
            continue
        groups: dict[str, list[int]] = {}
        for path, index, _ in part:
            groups.setdefault(path, []).append(index)
        out.append({PARQUET_PATH_KEY: path_value, PARTITION_KEY: {"by": "row_groups", "row_groups": groups}})
    return out
