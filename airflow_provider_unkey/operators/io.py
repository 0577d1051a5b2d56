"""Airflow glue for sources and sinks: storage URIs through ``ObjectStoragePath``, SQL through ``DbApiHook``.

The readers and writers themselves live in :mod:`airflow_provider_unkey.migration.read`,
:mod:`~airflow_provider_unkey.migration.record.sinks` and :mod:`~airflow_provider_unkey.migration.read.partition`
and know nothing of Airflow; this module only turns connection ids and URIs into what they take.

Paths may be local paths (``/data/keys.parquet``) or any ``ObjectStoragePath`` URI, with the Airflow
connection in the user part: ``file:///data/keys/``, ``s3://aws_default@bucket/keys/*.parquet``,
``gs://google_cloud_default@bucket/keys/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook, ObjectStoragePath

from airflow_provider_unkey._compat import storage_conn_id
from airflow_provider_unkey.migration import read
from airflow_provider_unkey.migration.read import ParquetSource, PartitionBy, SqlSource
from airflow_provider_unkey.migration.record import OUTPUT_FILES, SqlOutcomeSink, copy_outputs

PathLike = str | os.PathLike[str] | ObjectStoragePath
_LOCAL_PROTOCOLS = ("", "file", "local")


def _storage_path(path: PathLike) -> ObjectStoragePath:
    if isinstance(path, ObjectStoragePath):
        return path
    text = os.fspath(path)
    # A plain path is local: make it absolute, so that it means the same in every task.
    return ObjectStoragePath(text if "://" in text else os.path.abspath(text))


def _path_text(path: PathLike) -> str:
    """How a path goes into a partition dict: a URI as given, a local path made absolute."""
    if isinstance(path, ObjectStoragePath):
        return str(path)
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


def _resolve(path_or_uri: PathLike | Sequence[PathLike]) -> tuple[pafs.FileSystem, str | list[str]]:
    """The pyarrow filesystem and the path(s) on it for a local path, a URI, or a list of them."""
    many = not isinstance(path_or_uri, str | os.PathLike | ObjectStoragePath)
    items = [_storage_path(p) for p in path_or_uri] if many else [_storage_path(path_or_uri)]  # type: ignore[union-attr,arg-type]
    if not items:
        raise ValueError("no Parquet paths given: the list is empty")
    first = items[0]
    stores = {(p.protocol or "", storage_conn_id(p)) for p in items}
    if len(stores) > 1:
        raise ValueError(
            f"the Parquet paths must all be on one storage with one connection, got {sorted(stores, key=str)}"
        )
    filesystem: pafs.FileSystem
    if (first.protocol or "") in _LOCAL_PROTOCOLS:
        filesystem = pafs.LocalFileSystem()  # pyarrow's own: faster than going through fsspec
    else:
        # The path's fsspec filesystem carries the Airflow connection's credentials.
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(first.fs))
    paths = [p.path for p in items]
    return filesystem, paths if many else paths[0]


def parquet_source(path_or_uri: PathLike | Sequence[PathLike], **kwargs: Any) -> ParquetSource:
    """A :class:`~airflow_provider_unkey.migration.read.ParquetSource` on any storage.

    :param path_or_uri: a file, a directory, a glob, or a list of files: local paths or
        ``ObjectStoragePath`` URIs (``s3://conn_id@bucket/keys/``).
    :param kwargs: passed on: ``columns``, ``batch_rows``, ``row_groups`` (keys as
        :func:`parquet_partitions` gives them).
    """
    filesystem, paths = _resolve(path_or_uri)
    return ParquetSource(paths, filesystem=filesystem, **kwargs)


def sql_hook(conn_id: str, hook_params: Mapping[str, Any] | None = None) -> DbApiHook:
    """The SQL hook of an Airflow connection.

    :param hook_params: keyword arguments for the hook, as common-sql's operators take them.
    :raises TypeError: when the connection's hook is not a ``DbApiHook`` (not an SQL database).
    """
    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook(hook_params=dict(hook_params or {}))  # type: ignore[no-untyped-call]
    if not isinstance(hook, DbApiHook):
        raise TypeError(
            f"connection {conn_id!r} (type {connection.conn_type!r}) has the hook {type(hook).__name__}, "
            "which is not an SQL hook (airflow.providers.common.sql DbApiHook): use a connection to an "
            "SQL database, such as postgres, mysql or sqlite"
        )
    return hook


def _dialect(hook: DbApiHook) -> str:
    try:
        name = str(hook.dialect_name)
    except Exception:  # a hook whose URI cannot be built: fall back to the connection type
        name = str(getattr(hook, "conn_type", "") or "")
    return name.lower()


def server_side_cursor_for(hook: DbApiHook) -> str:
    """Which streaming cursor suits the hook's database: ``postgresql``, ``mysql`` or ``none``."""
    dialect = _dialect(hook)
    if dialect.startswith("postgres"):
        return "postgresql"
    if dialect in ("mysql", "mariadb"):
        return "mysql"
    return "none"


def sql_source(
    sql: str,
    sql_conn_id: str,
    parameters: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    hook_params: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> SqlSource:
    """A :class:`~airflow_provider_unkey.migration.read.SqlSource` on an Airflow SQL connection.

    Connections are opened through the hook (``hook.get_conn``); PostgreSQL and MySQL read through a
    server-side cursor.

    :param sql: the query.
    :param sql_conn_id: an Airflow connection to an SQL database.
    :param parameters: the query's parameters.
    :param hook_params: keyword arguments for the connection's hook.
    :param kwargs: passed on: ``batch_rows``, ``server_side_cursor`` (default: by the hook's dialect).
    """
    hook = sql_hook(sql_conn_id, hook_params)
    kwargs.setdefault("server_side_cursor", server_side_cursor_for(hook))
    return SqlSource(hook.get_conn, sql, parameters, **kwargs)


def upload_outputs(local_dir: str | Path, output_path: PathLike) -> dict[str, str]:
    """Copy a run's ``migrated.parquet`` and ``failed.parquet`` (and ``skipped.parquet``) into ``output_path``.

    :param local_dir: the local directory the run wrote.
    :param output_path: a directory: a local path or an ``ObjectStoragePath`` URI.
    :return: outcome (``migrated``, ``failed``, ``skipped``) -> the copied file's URI (with the
        connection id).
    """
    destination = _storage_path(output_path)
    copied = copy_outputs(local_dir, destination.path, filesystem=destination.fs)
    return {name: str(destination / filename) for name, filename in OUTPUT_FILES.items() if name in copied}


def join_path(directory: PathLike, name: str) -> str:
    """``name`` inside ``directory`` (a local path or a URI), as text."""
    return str(_storage_path(directory) / name)


def ledger_location(path: PathLike) -> tuple[str, Any | None]:
    """Where a ledger lives: its path and fsspec filesystem (``None`` for a local directory)."""
    storage = _storage_path(path)
    if (storage.protocol or "") in _LOCAL_PROTOCOLS:
        return storage.path, None
    return storage.path, storage.fs


def write_outcomes_to_sql(
    conn_id: str, table_prefix: str, run_id: str, local_dir: str | Path, task_key: str = "-", **kwargs: Any
) -> dict[str, str]:
    """Append a run's outcomes to ``<table_prefix>_migrated`` and ``<table_prefix>_failed``.

    The tables are created when missing; see
    :class:`~airflow_provider_unkey.migration.record.sinks.SqlOutcomeSink`.

    :param conn_id: an Airflow connection to an SQL database.
    :param table_prefix: an SQL identifier, optionally schema-qualified.
    :param run_id: tags every row.
    :param local_dir: the local directory the run wrote.
    :param task_key: the task (and map index) that wrote them: its earlier rows for ``run_id`` are
        replaced, so a retried task does not write its outcomes twice.
    :param kwargs: passed on: ``chunk_rows``.
    :return: ``{"migrated_table": ..., "failed_table": ...}``.
    """
    sink = SqlOutcomeSink(sql_hook(conn_id).get_conn, table_prefix, **kwargs)
    sink.write(run_id, local_dir, task_key)
    return {f"{name}_table": table for name, table in sink.tables.items()}


def parquet_partitions(
    path_or_uri: PathLike | Sequence[PathLike],
    n: int,
    *,
    by: PartitionBy | Literal["hash"] = "auto",
    hash_column: str = "hash",
    hash_format: str = "sha256_base64",
) -> list[dict[str, Any]]:
    """Split a Parquet source into at most ``n`` partitions for ``MigrateKeysOperator.expand_kwargs``.

    :param path_or_uri: the source, as :func:`parquet_source` takes it.
    :param n: how many partitions at most.
    :param by: ``auto``, ``files`` or ``row_groups`` (see
        :func:`~airflow_provider_unkey.migration.read.parquet_partitions`): each task reads its
        share of the files; or ``hash``: each task reads the whole source and keeps the rows whose hash
        falls in its partition, so duplicates across files are caught (see
        :func:`~airflow_provider_unkey.migration.read.parquet_hash_partitions`).
    :param hash_column: with ``by="hash"``: the column that holds the hash.
    :param hash_format: with ``by="hash"``: what that column holds.
    :return: ``[{"parquet_path": ..., "partition": {"by": "row_groups", "row_groups": {...}}}, ...]``
        or, by hash, ``[{"parquet_path": ..., "partition": {"by": "hash", "index": i, ...}}, ...]``.
    """
    given: str | list[str]
    if isinstance(path_or_uri, str | os.PathLike | ObjectStoragePath):
        given = _path_text(path_or_uri)
    else:
        given = [_path_text(p) for p in path_or_uri]
    if by == "hash":
        return read.parquet_hash_partitions(given, n, hash_column=hash_column, hash_format=hash_format)
    return read.parquet_partitions(parquet_source(path_or_uri), n, parquet_path=given, by=by)


def sql_partitions(
    sql: str, sql_conn_id: str, hash_column: str, n: int, *, hash_format: str = "sha256_base64"
) -> list[dict[str, str]]:
    """Split a query into at most ``n`` queries by the hash's first character, quoted for the connection.

    :param sql: the source query.
    :param sql_conn_id: the Airflow connection the query runs on (for its SQL dialect).
    :param hash_column: the column holding the hash, as the query returns it.
    :param n: how many partitions at most.
    :param hash_format: ``sha256_base64``, ``sha256_hex`` or ``sha256_binary`` (a ``BYTEA`` or
        ``BINARY(32)`` column of raw digests: split by its first byte).
    :return: ``[{"sql": ...}, ...]``; see :func:`~airflow_provider_unkey.migration.read.sql_partitions`.
    """
    dialect = _dialect(sql_hook(sql_conn_id))
    return read.sql_partitions(sql, hash_column, n, hash_format=hash_format, dialect=dialect)


#: Executors that run a task on the machine of the scheduler that queued it.
_LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
#: Filesystem types that other machines see too: network filesystems, and FUSE mounts of object
#: stores (s3fs, gcsfuse, juicefs, ...).
_SHARED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2"}
)


def distributed_executor(task_executor: str | None = None) -> str | None:
    """The executor's name when tasks run on workers that need not share a disk, else ``None``.

    :param task_executor: the task's own ``executor``, if it sets one; else the first of
        ``[core] executor``.
    """
    name = task_executor
    if not name:
        try:
            from airflow.sdk.configuration import conf
        except ImportError:  # Airflow before the task SDK kept its configuration
            from airflow.configuration import conf
        name = str(conf.get("core", "executor", fallback="") or "").split(",")[0].strip()
    if not name:
        return None
    # "alias:module.Class", "module.Class" or "Class"
    short = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return None if short in _LOCAL_EXECUTORS else short


def worker_local_disk(path: PathLike, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """What local disk ``path`` is on, or ``None`` when other machines see it too.

    Storage URIs other than ``file://`` are remote. A local path on a network filesystem (NFS, SMB,
    CephFS, a FUSE mount of an object store, ...) is shared; any other local path is this machine's.

    :return: e.g. ``"ext4 mounted at /"``, or ``None``.
    """
    text = _path_text(path)
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "file":
        return None
    local = Path(rest if sep else text).expanduser().absolute()
    best: tuple[str, str] | None = None
    try:
        with open(mountinfo, encoding="utf-8") as lines:
            for line in lines:
                # "<id> <parent> <major:minor> <root> <mount point> <options> ... - <fstype> <source> ..."
                left, _, right = line.partition(" - ")
                fields, fs = left.split(), right.split()
                if len(fields) < 5 or not fs:
                    continue
                point = fields[4].replace("\\040", " ")
                if (local == Path(point) or Path(point) in local.parents) and (
                    best is None or len(point) >= len(best[0])
                ):
                    best = (point, fs[0])
    except OSError:
        return "a local disk"
    if best is None:
        return "a local disk"
    point, fstype = best
    if fstype in _SHARED_FILESYSTEMS or fstype.startswith("fuse."):
        return None
    return f"{fstype} mounted at {point}"
