"""The rows of an SQL query as a lazy stream of Arrow record batches: :class:`SqlSource`.

Nothing here imports Airflow. The query runs on a DB-API connection and ``batch_rows`` rows are fetched
at a time through a server-side cursor (PostgreSQL, MySQL/MariaDB) or SQLite's native stepping cursor,
so at most a few batches are in memory. How SQL values become Arrow columns, and how the schema stays
the same across chunks, is described on :class:`SqlSource`. :func:`driver_family` (which database a
connection talks to) serves :mod:`~airflow_provider_unkey.migration.record.sinks` too.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from airflow_provider_unkey.migration.read.errors import SourceError

log = logging.getLogger(__name__)


def driver_family(connection: Any) -> str:
    """Which database a DB-API connection talks to, from its driver's module.

    :return: ``postgresql`` (psycopg 3, psycopg2), ``mysql`` (mysqlclient, PyMySQL,
        mysql-connector), ``sqlite`` (sqlite3) or ``other``.
    """
    root = type(connection).__module__.split(".")[0]
    if root in ("psycopg", "psycopg2"):
        return "postgresql"
    if root in ("MySQLdb", "pymysql", "mysql"):
        return "mysql"
    if root in ("sqlite3", "_sqlite3"):
        return "sqlite"
    return "other"


_SERVER_SIDE = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
_SERVER_SIDE_CHOICES = (*_SERVER_SIDE, "none")


def _open_cursor(connection: Any, kind: str, itersize: int) -> Any:
    """A cursor that streams: named (server-side) for PostgreSQL, unbuffered for MySQL."""
    if kind == "postgresql":
        # A server-side cursor lives in a transaction. In autocommit mode only a WITH HOLD cursor
        # could, and PostgreSQL materialises all of its rows when the DECLARE commits: leave
        # autocommit instead (the source owns the connection and closes it).
        if getattr(connection, "autocommit", False) is True:
            connection.autocommit = False
        # Both psycopg 3 and psycopg2 open a server-side cursor when given a name.
        cursor = connection.cursor(name=f"unkey_source_{uuid.uuid4().hex[:16]}")
        cursor.itersize = itersize
        return cursor
    if kind == "mysql":
        root = type(connection).__module__.split(".")[0]
        if root in ("MySQLdb", "pymysql"):
            return connection.cursor(importlib.import_module(f"{root}.cursors").SSCursor)
        if root == "mysql":  # mysql-connector: unbuffered unless asked otherwise
            return connection.cursor(buffered=False)
        log.warning("no unbuffered cursor known for %s: using its default cursor", type(connection))
    return connection.cursor()


def _abandon_result(cursor: Any) -> bool:
    """Leave an unbuffered MySQL result unread, so that closing the connection ends the query.

    Closing PyMySQL's ``SSCursor`` reads the rest of the result and throws it away: stopping after the
    first batch of a large table would still read all of it. mysql-connector-python's unbuffered cursor
    refuses to close (``Unread result found``) but its connection closes without reading. Either way the
    connection is closed next, and the server ends the query when it can no longer send rows.

    :return: whether the cursor must not be closed (``False``: close it as usual; mysqlclient's cursor,
        whose result is freed by the C client, is closed as usual).
    """
    root = type(cursor).__module__.split(".")[0]
    if root == "pymysql":
        result = getattr(cursor, "_result", None)
        if result is not None and getattr(result, "unbuffered_active", False):
            result.unbuffered_active = False  # or its __del__ reads on from the closed connection
        return True
    return root == "mysql"


#: PostgreSQL type OIDs (the ``type_code`` psycopg puts in ``cursor.description``) -> Arrow types.
_PG_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    26: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    18: pa.string(),
    19: pa.string(),
    25: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    2950: pa.string(),
    114: pa.string(),
    3802: pa.string(),
    17: pa.binary(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1000: pa.list_(pa.bool_()),
    1005: pa.list_(pa.int64()),
    1007: pa.list_(pa.int64()),
    1016: pa.list_(pa.int64()),
    1009: pa.list_(pa.string()),
    1014: pa.list_(pa.string()),
    1015: pa.list_(pa.string()),
    1021: pa.list_(pa.float64()),
    1022: pa.list_(pa.float64()),
}
_PG_JSON = {114, 3802}
_PG_NUMERIC = 1700


@dataclass(slots=True)
class _SqlColumn:
    """One result column: its Arrow type (``None`` until the first chunk fixes it) and how to read it."""

    name: str
    type: pa.DataType | None = None
    json: bool = False  #: render every value as JSON text (PostgreSQL json/jsonb)


def _column_hints(description: Sequence[Any], family: str) -> list[_SqlColumn]:
    columns = [_SqlColumn(str(d[0])) for d in description]
    if family != "postgresql":
        return columns
    for column, d in zip(columns, description, strict=True):
        oid = d[1]
        if not isinstance(oid, int):
            continue
        if oid in _PG_JSON:
            column.json = True
        if oid == _PG_NUMERIC:
            precision, scale = d[4], d[5]
            if isinstance(precision, int) and isinstance(scale, int) and 0 < precision <= 76:
                column.type = (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)
        else:
            column.type = _PG_TYPES.get(oid)
    return columns


_SCALARS = (str, bool, int, float, Decimal, bytes, dt.date, dt.time, dt.timedelta)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _normalize_value(value: Any) -> Any:
    """A value pyarrow can convert: dicts and nested structures become JSON text, others their text."""
    if isinstance(value, dict):
        return _json_text(value)
    if isinstance(value, list | tuple):
        if all(item is None or isinstance(item, _SCALARS) for item in value):
            return list(value)
        if all(item is None or isinstance(item, list | tuple) for item in value):
            return [_normalize_value(item) for item in value]  # a multi-dimensional array
        return _json_text(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value)  # UUID, IP address, range and other driver types


def _normalize(values: Sequence[Any]) -> Sequence[Any]:
    out: list[Any] | None = None
    for i, value in enumerate(values):
        if value is None or isinstance(value, _SCALARS):
            continue
        if out is None:
            out = list(values)
        out[i] = _normalize_value(value)
    return values if out is None else out


def _db_text(value: Any) -> str | None:
    """How a value is written into a text column that was fixed before the value was seen."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return _json_text(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _settle(inferred: pa.DataType) -> pa.DataType:
    """The type a column keeps for the whole query, from the type its first chunk has.

    Null types (an all-null column, empty arrays) become text; decimals get the widest precision at the
    inferred scale, so that later chunks with larger numbers still fit.
    """
    if pa.types.is_null(inferred):
        return pa.string()
    if pa.types.is_list(inferred) or pa.types.is_large_list(inferred):
        return pa.list_(_settle(inferred.value_type))
    if pa.types.is_decimal(inferred):
        return pa.decimal128(38, inferred.scale) if inferred.scale <= 38 else inferred
    return inferred


class SchemaDriftError(SourceError):
    """A later chunk of a query holds values that do not fit the type its first chunk fixed."""


def _first_array(column: _SqlColumn, values: Sequence[Any]) -> pa.Array:
    """Convert a column's first chunk and fix the column's type."""
    if column.json:
        column.type = pa.string()
        return pa.array([None if v is None else _json_text(v) for v in values], pa.string())
    normalized = _normalize(values)
    if column.type is not None:
        try:
            return pa.array(normalized, column.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError):
            pass  # the declared type does not hold these values (e.g. a 2-D array): infer instead
    try:
        inferred = pa.array(normalized)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError):
        # Mixed types in one column (SQLite allows it): keep the column as text.
        column.type = pa.string()
        return pa.array([_db_text(v) for v in values], pa.string())
    column.type = _settle(inferred.type)
    return inferred if inferred.type == column.type else inferred.cast(column.type)


def _next_array(column: _SqlColumn, values: Sequence[Any]) -> pa.Array:
    """Convert a later chunk into the column's fixed type."""
    target = column.type
    assert target is not None
    if column.json:
        return pa.array([None if v is None else _json_text(v) for v in values], pa.string())
    normalized = _normalize(values)
    try:
        return pa.array(normalized, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError) as exc:
        if pa.types.is_string(target):
            return pa.array([_db_text(v) for v in values], pa.string())
        try:
            # A lossless conversion (an int into a float or decimal column, '12' into an int column).
            return pa.array(normalized).cast(target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, ValueError):
            example = next((v for v in values if v is not None), None)
            raise SchemaDriftError(
                f"column {column.name!r} became {target} from the query's first rows, but a later row "
                f"holds {example!r} ({type(example).__name__}), which does not fit ({exc}); cast the "
                f"column in the query (e.g. CAST({column.name} AS TEXT)) to give it one type"
            ) from exc


class SqlSource:
    """The rows of an SQL query as a lazy stream of record batches.

    The query runs when iteration starts, on a connection from ``connect``; rows are fetched with
    ``fetchmany(batch_rows)`` and never all at once. PostgreSQL (psycopg 3 or psycopg2) reads through a
    named, server-side cursor; MySQL/MariaDB through an unbuffered cursor (``SSCursor`` with mysqlclient
    and PyMySQL, ``buffered=False`` with mysql-connector-python); SQLite's cursor steps through the
    result natively. The cursor and the connection are closed when the rows run out, on an error, and
    when the consumer stops early (``close()`` on the generator, or dropping it); on MySQL, stopping
    early closes the connection without reading the rest of the result.

    **One schema for the whole query.** Column names come from ``cursor.description`` (a name used
    twice is an error). Each column's Arrow type is fixed once, then every chunk is built with it:

    * PostgreSQL declares types in ``cursor.description``: booleans, integers, floats, text, numeric
      with a precision, dates, times, timestamps (``timestamptz`` as UTC), ``bytea`` and arrays of
      these get their Arrow type from it, even when the first chunk holds only NULLs. ``json`` and
      ``jsonb`` become JSON text. ``uuid`` becomes text.
    * Other columns (and every column of SQLite, MySQL and other drivers) take the type pyarrow infers
      from the first chunk: ``Decimal`` -> ``decimal128(38, scale)``, ``datetime`` -> timestamp (with
      its time zone), lists -> ``list<...>``, dicts -> JSON text, other driver objects -> their text.
      A column all NULL in the first chunk, or holding values of mixed types, becomes text.
    * A later chunk is converted into the fixed type. When its values do not fit: a text column takes
      their text (JSON for dicts and lists, ISO 8601 for dates and times, ``true``/``false``); other
      columns take the value when the conversion is lossless (an integer into a float or decimal
      column); otherwise :class:`SchemaDriftError` says which column to ``CAST`` in the query.

    The source can be iterated more than once: each iteration runs the query again.

    :param connect: returns a new DB-API connection; the source closes it.
    :param sql: one query returning rows (a trailing ``;`` is dropped).
    :param parameters: the query's parameters, in the driver's paramstyle.
    :param batch_rows: rows per fetch and per record batch.
    :param server_side_cursor: ``postgresql``, ``mysql`` or ``none``; ``None`` picks by the
        connection's driver (psycopg/psycopg2 -> ``postgresql``, MySQLdb/PyMySQL/mysql-connector ->
        ``mysql``, others -> ``none``).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        sql: str,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        batch_rows: int = 10_000,
        server_side_cursor: str | None = None,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        if server_side_cursor is not None and server_side_cursor.lower() not in _SERVER_SIDE_CHOICES:
            raise ValueError(
                f"server_side_cursor must be one of {', '.join(_SERVER_SIDE_CHOICES)} or None, "
                f"got {server_side_cursor!r}"
            )
        self.connect = connect
        self.sql = sql.strip().rstrip(";").rstrip()
        self.parameters = parameters
        self.batch_rows = batch_rows
        self.server_side_cursor = server_side_cursor
        self.schema: pa.Schema | None = None  #: known once the first batch was built

    def _cursor_kind(self, connection: Any) -> str:
        if self.server_side_cursor is None:
            return _SERVER_SIDE.get(driver_family(connection), "none")
        return _SERVER_SIDE.get(self.server_side_cursor.lower(), "none")

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        connection = self.connect()
        cursor = None
        kind = "none"
        exhausted = False  # the driver has read the result to its end
        try:
            kind = self._cursor_kind(connection)
            cursor = _open_cursor(connection, kind, self.batch_rows)
            if self.parameters is None:
                cursor.execute(self.sql)
            else:
                cursor.execute(self.sql, self.parameters)
            columns: list[_SqlColumn] | None = None
            schema: pa.Schema | None = None
            while True:
                rows = cursor.fetchmany(self.batch_rows)
                if columns is None:
                    # psycopg2 fills a named cursor's description only after the first fetch.
                    if cursor.description is None:
                        raise SourceError("the query returned no result set: it must be a SELECT")
                    columns = _column_hints(cursor.description, driver_family(connection))
                    names = [c.name for c in columns]
                    twice = sorted({n for n in names if names.count(n) > 1})
                    if twice:
                        raise SourceError(f"the query returns more than one column named {twice}: alias them")
                if not rows:
                    exhausted = True
                    return
                if isinstance(rows[0], Mapping):  # a dict row factory (e.g. the connection's "cursor" extra)
                    rows = [tuple(row[c.name] for c in columns) for row in rows]
                values = list(zip(*rows, strict=True))
                if schema is None:
                    arrays = [_first_array(c, v) for c, v in zip(columns, values, strict=True)]
                    schema = self.schema = pa.schema(
                        [pa.field(c.name, a.type) for c, a in zip(columns, arrays, strict=True)]
                    )
                else:
                    arrays = [_next_array(c, v) for c, v in zip(columns, values, strict=True)]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                if len(rows) < self.batch_rows:
                    exhausted = True
                    return
        finally:
            if cursor is not None and not (kind == "mysql" and not exhausted and _abandon_result(cursor)):
                with suppress(Exception):  # the transaction may have failed; closing still must happen
                    cursor.close()
            connection.close()


__all__ = ["SchemaDriftError", "SourceError", "SqlSource", "driver_family"]
