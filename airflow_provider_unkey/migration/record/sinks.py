"""Sinks: where a run's ``migrated.parquet`` and ``failed.parquet`` go after the run.

Nothing here imports Airflow.

* :func:`copy_outputs` copies both files to a directory on any fsspec filesystem (S3, GCS, a local
  path...), streaming them.
* :class:`SqlOutcomeSink` appends their rows, tagged with the run id, to two tables
  ``<prefix>_migrated`` and ``<prefix>_failed`` that it creates when missing. The tables use portable
  types and work on SQLite, PostgreSQL and MySQL/MariaDB.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from airflow_provider_unkey.migration.read import driver_family

log = logging.getLogger(__name__)

#: The files a run writes, by outcome (``skipped`` only when asked for).
OUTPUT_FILES = {
    "migrated": "migrated.parquet",
    "failed": "failed.parquet",
    "skipped": "skipped.parquet",
    # The report (migration/record/report.py), when one was written.
    "report": "report.md",
    "plot": "throughput.png",
}
_REQUIRED_OUTPUTS = ("migrated", "failed")


def copy_outputs(local_dir: str | Path, destination: str, filesystem: Any | None = None) -> dict[str, str]:
    """Copy ``migrated.parquet`` and ``failed.parquet`` (and ``skipped.parquet``, when written) from
    ``local_dir`` into ``destination``.

    The files are streamed (fsspec's ``put_file`` copies in blocks), so their size does not matter.
    Files of the same name already at the destination (an earlier try of the same task) are kept,
    renamed ``migrated.previous-<UTC time>.parquet``: they may hold the only record of key ids that
    Unkey will not return again.

    :param local_dir: the local directory the run wrote.
    :param destination: a directory: a path on ``filesystem``, or a URL (``s3://bucket/runs/1``) when
        ``filesystem`` is ``None``.
    :param filesystem: an ``fsspec.AbstractFileSystem``; ``None``: the one ``destination`` names.
    :return: outcome (``migrated``, ``failed``) -> the copied file's URL.
    :raises FileNotFoundError: when ``local_dir`` lacks one of the files.
    """
    import fsspec  # type: ignore[import-untyped]

    local = Path(local_dir)
    sources = {name: local / filename for name, filename in OUTPUT_FILES.items()}
    missing = [str(sources[name]) for name in _REQUIRED_OUTPUTS if not sources[name].is_file()]
    sources = {name: path for name, path in sources.items() if path.is_file()}
    if missing:
        raise FileNotFoundError(f"no run outputs to copy: {', '.join(missing)} missing")
    if filesystem is None:
        filesystem, destination = fsspec.core.url_to_fs(destination)
    root = destination.rstrip("/") or "/"
    filesystem.makedirs(root, exist_ok=True)
    copied = {}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    for name, path in sources.items():
        target = f"{root.rstrip('/')}/{path.name}"
        if filesystem.exists(target):
            kept = f"{root.rstrip('/')}/{path.stem}.previous-{stamp}{path.suffix}"
            filesystem.mv(target, kept)
            log.warning("kept the earlier %s as %s", target, kept)
        filesystem.put_file(str(path), target)
        copied[name] = str(filesystem.unstrip_protocol(target))
    return copied


# --- SQL ----------------------------------------------------------------------------------------------

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PREFIX = re.compile(rf"^(?:({_IDENTIFIER})\.)?({_IDENTIFIER})$")
#: PostgreSQL cuts identifiers at 63 bytes (MySQL at 64); "_migrated" takes 9 of them.
_MAX_PREFIX_NAME = 63 - len("_migrated")


def validate_table_prefix(prefix: str) -> str:
    """Check that ``prefix`` is a plain SQL identifier, optionally schema-qualified (``schema.name``).

    Only letters, digits and underscores pass, so the table names can go into SQL text safely.

    :return: ``prefix``.
    :raises ValueError: otherwise.
    """
    match = _PREFIX.match(prefix) if isinstance(prefix, str) else None
    if match is None:
        raise ValueError(
            f"table prefix {prefix!r} is not an SQL identifier: use letters, digits and underscores, "
            "not starting with a digit, optionally after a schema name and a dot (e.g. 'audit.unkey')"
        )
    if len(match.group(2)) > _MAX_PREFIX_NAME or len(match.group(1) or "") > 63:
        raise ValueError(f"table prefix {prefix!r} is too long: at most {_MAX_PREFIX_NAME} characters")
    return prefix


#: Columns of the two tables, in insert order, with their portable types.
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "migrated": (
        ("run_id", "VARCHAR(256) NOT NULL"),
        ("task_key", "VARCHAR(256) NOT NULL"),
        ("hash", "VARCHAR(256) NOT NULL"),
        ("key_id", "VARCHAR(256) NOT NULL"),
        ("source_row", "BIGINT NOT NULL"),
        ("request_id", "VARCHAR(256)"),
        ("recorded_at", "TIMESTAMP NOT NULL"),
    ),
    "failed": (
        ("run_id", "VARCHAR(256) NOT NULL"),
        ("task_key", "VARCHAR(256) NOT NULL"),
        # The hash as the source had it: a rejected one may be of any length.
        ("hash", "TEXT"),
        ("reason", "VARCHAR(256) NOT NULL"),
        ("stage", "VARCHAR(256) NOT NULL"),
        ("detail", "TEXT"),
        ("source_row", "BIGINT NOT NULL"),
        ("request_id", "VARCHAR(256)"),
        ("recorded_at", "TIMESTAMP NOT NULL"),
    ),
}


def _paramstyle(connection: Any) -> str:
    """The DB-API paramstyle of the driver module that made ``connection``."""
    parts = type(connection).__module__.split(".")
    for end in range(len(parts), 0, -1):  # mysql.connector.connection_cext -> mysql.connector
        style = getattr(sys.modules.get(".".join(parts[:end])), "paramstyle", None)
        if isinstance(style, str):
            return style
    return "qmark"


def _placeholders(paramstyle: str, count: int) -> str:
    if paramstyle == "qmark":
        return ", ".join("?" * count)
    if paramstyle in ("format", "pyformat"):
        return ", ".join(["%s"] * count)
    if paramstyle == "numeric":
        return ", ".join(f":{i}" for i in range(1, count + 1))
    raise ValueError(f"the DB-API paramstyle {paramstyle!r} is not supported (use qmark, format or numeric)")


class SqlOutcomeSink:
    """Appends a run's outcomes to the tables ``<prefix>_migrated`` and ``<prefix>_failed``.

    ``<prefix>_migrated (run_id, task_key, hash, key_id, source_row, request_id, recorded_at)`` and
    ``<prefix>_failed (run_id, task_key, hash, reason, stage, detail, source_row, request_id,
    recorded_at)`` are created when missing (``VARCHAR(256)``, ``TEXT``, ``BIGINT``, ``TIMESTAMP``; ``DATETIME(6)`` on
    MySQL). ``recorded_at`` is the time of the write, in UTC, the same for all rows of one write.

    Each table is written in one transaction: all of a run's rows, or none. The rows of one
    ``(run_id, task_key)`` replace any written before under the same pair, so a retried task (or a
    rerun of the same Airflow run) does not append its outcomes twice, while mapped tasks of one run,
    each with its own ``task_key``, keep theirs side by side. The Parquet files are read
    a batch at a time and inserted in chunks of ``chunk_rows`` (``executemany``; ``COPY`` with psycopg
    3; ``execute_values`` with psycopg2), so memory stays flat.

    :param connect: returns a new DB-API connection; the sink closes it.
    :param table_prefix: an SQL identifier, optionally schema-qualified (``audit.unkey``).
    :param chunk_rows: rows per insert round trip.
    """

    def __init__(self, connect: Callable[[], Any], table_prefix: str, *, chunk_rows: int = 5_000) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.connect = connect
        self.table_prefix = validate_table_prefix(table_prefix)
        self.chunk_rows = chunk_rows

    @property
    def tables(self) -> dict[str, str]:
        """Outcome (``migrated``, ``failed``) -> table name."""
        return {name: f"{self.table_prefix}_{name}" for name in _COLUMNS}

    @staticmethod
    def _column_type(sql_type: str, family: str) -> str:
        if family == "mysql":
            # MySQL's TIMESTAMP ends in 2038 and may update itself; DATETIME keeps what is written.
            return sql_type.replace("TIMESTAMP", "DATETIME(6)")
        return sql_type

    def create_tables(self, connection: Any) -> None:
        """Create both tables on ``connection`` when missing, and commit."""
        family = driver_family(connection)
        for name, table in self.tables.items():
            columns = ", ".join(f"{col} {self._column_type(typ, family)}" for col, typ in _COLUMNS[name])
            statement = f"CREATE TABLE IF NOT EXISTS {table} ({columns})"
            # Two tasks creating the same table at once can both pass IF NOT EXISTS, and one then fails
            # (PostgreSQL: a duplicate pg_type entry). The second attempt finds the table.
            for attempt in range(3):
                cursor = connection.cursor()
                try:
                    cursor.execute(statement)
                    connection.commit()
                    break
                except Exception:
                    connection.rollback()
                    if attempt == 2:
                        raise
                    log.info("creating %s failed, probably raced by another task; retrying", table)
                finally:
                    cursor.close()

    def write(self, run_id: str, local_dir: str | Path, task_key: str = "-") -> dict[str, int]:
        """Create the tables if needed and write the rows of the run's two Parquet files.

        :param run_id: tags every row (e.g. the Airflow run id).
        :param local_dir: the directory with ``migrated.parquet`` and ``failed.parquet``.
        :param task_key: which task of the run wrote them (``task_id`` or ``task_id[map_index]``);
            rows already written under the same ``run_id`` and ``task_key`` are replaced.
        :return: outcome -> rows written.
        """
        for name, value in (("run_id", run_id), ("task_key", task_key)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise ValueError(
                    f"{name} must be a non-empty string of at most 256 characters, got {value!r}"
                )
        files = {name: Path(local_dir) / OUTPUT_FILES[name] for name in _COLUMNS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no run outputs to write: {', '.join(missing)} missing")
        recorded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        connection = self.connect()
        try:
            if getattr(connection, "autocommit", False) is True:
                connection.autocommit = False  # one transaction per table needs explicit commits
            self.create_tables(connection)
            family = driver_family(connection)
            # SQLite has no datetime type: store the ISO text its TIMESTAMP affinity expects.
            stamp: Any = recorded_at.isoformat(sep=" ") if family == "sqlite" else recorded_at
            written = {}
            placeholders = _placeholders(_paramstyle(connection), 2).split(", ")
            for name, table in self.tables.items():
                columns = [col for col, _ in _COLUMNS[name]]
                rows = self._rows(files[name], columns, (run_id, task_key), stamp)
                try:
                    cursor = connection.cursor()
                    try:
                        cursor.execute(
                            f"DELETE FROM {table} WHERE run_id = {placeholders[0]} AND task_key = {placeholders[1]}",
                            (run_id, task_key),
                        )
                        if cursor.rowcount and cursor.rowcount > 0:
                            log.info(
                                "replacing %d rows of run %s, task %s in %s",
                                cursor.rowcount,
                                run_id,
                                task_key,
                                table,
                            )
                    finally:
                        cursor.close()
                    written[name] = self._insert(connection, table, columns, rows)
                    connection.commit()
                except BaseException:
                    connection.rollback()
                    raise
                log.info("appended %d rows of run %s to %s", written[name], run_id, table)
            return written
        finally:
            connection.close()

    def _rows(
        self, path: Path, columns: Sequence[str], tags: tuple[str, str], stamp: Any
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The file's rows as insert tuples, ``chunk_rows`` at a time."""
        data_columns = [c for c in columns if c not in ("run_id", "task_key", "recorded_at")]
        parquet = pq.ParquetFile(path)
        try:
            for batch in parquet.iter_batches(batch_size=self.chunk_rows, columns=data_columns):
                values = [batch.column(c).to_pylist() for c in data_columns]
                yield [(*tags, *row, stamp) for row in zip(*values, strict=True)]
        finally:
            parquet.close()

    def _insert(
        self, connection: Any, table: str, columns: Sequence[str], chunks: Iterator[list[tuple[Any, ...]]]
    ) -> int:
        root = type(connection).__module__.split(".")[0]
        column_list = ", ".join(columns)
        count = 0
        cursor = connection.cursor()
        try:
            if root == "psycopg":
                # COPY streams rows in one command: far faster than INSERTs.
                with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                    for chunk in chunks:
                        for row in chunk:
                            copy.write_row(row)
                        count += len(chunk)
                return count
            if root == "psycopg2":
                extras = importlib.import_module("psycopg2.extras")
                for chunk in chunks:
                    extras.execute_values(
                        cursor, f"INSERT INTO {table} ({column_list}) VALUES %s", chunk, page_size=1000
                    )
                    count += len(chunk)
                return count
            placeholders = _placeholders(_paramstyle(connection), len(columns))
            statement = f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})"
            for chunk in chunks:
                cursor.executemany(statement, chunk)
                count += len(chunk)
            return count
        finally:
            cursor.close()
