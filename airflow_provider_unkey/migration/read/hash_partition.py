"""Split a source by the first character of its hashes, so that equal hashes, and hence duplicates,
always land in the same partition.

Nothing here imports Airflow. :func:`parquet_hash_partitions` has every task read the whole Parquet
source and keep its share (:func:`hash_partition_mask`); :func:`sql_partitions` puts the share in the
query's ``WHERE``. A binary hash column (raw digests, ``hash_format="sha256_binary"``) splits by its
first byte instead. :mod:`~airflow_provider_unkey.migration.read.partition` splits Parquet by files
and row groups.
"""

from __future__ import annotations

import heapq
import os
import string
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey.migration.prepare import SHA256_BINARY, column_format
from airflow_provider_unkey.migration.read.partition import (
    PARQUET_PATH_KEY,
    PARTITION_KEY,
    SQL_KEY,
    SUBQUERY_ALIAS,
)

#: The characters a hash can start with, grouped so that each group is closed under case folding:
#: a case-insensitive collation (MySQL's default) then still puts every hash in exactly one group.
_BASE64_GROUPS: tuple[tuple[str, ...], ...] = (
    *((upper, lower) for upper, lower in zip(string.ascii_uppercase, string.ascii_lowercase, strict=True)),
    *((digit,) for digit in string.digits),
    ("+",),
    ("/",),
)
_HEX_GROUPS: tuple[tuple[str, ...], ...] = (
    *((digit,) for digit in string.digits),
    *((lower, lower.upper()) for lower in "abcdef"),
)
#: A raw digest's first byte, as two uppercase hex digits (as SQL's ``HEX()`` writes it): 256 groups.
_BYTE_GROUPS: tuple[tuple[str, ...], ...] = tuple((f"{b:02X}",) for b in range(256))
#: hash format -> (groups of first characters, whether the format tells cases apart).
HASH_FIRST_CHARACTERS: dict[str, tuple[tuple[tuple[str, ...], ...], bool]] = {
    "sha256_base64": (_BASE64_GROUPS, True),
    "sha256_hex": (_HEX_GROUPS, False),
    SHA256_BINARY: (_BYTE_GROUPS, True),
}


def first_characters(n: int, hash_format: str) -> tuple[list[list[str]], list[str]]:
    """Deal the characters a hash can start with to at most ``n`` partitions, about evenly.

    The groups of first characters are dealt heaviest first, each to the lightest partition: digests
    are uniform, so the partitions get about equal shares. The same ``n`` and ``hash_format`` always
    give the same answer, so a partition can be rebuilt from its index.

    :return: each partition's characters, and every character of the alphabet (a hash starting with
        none of them, or no hash at all, belongs to the last partition). For ``sha256_binary`` a
        "character" is the first byte in two uppercase hex digits (``"00"`` ... ``"FF"``).
    """
    if n < 1:
        raise ValueError(f"the number of partitions must be at least 1, got {n}")
    try:
        groups, case_sensitive = HASH_FIRST_CHARACTERS[hash_format]
    except KeyError:
        raise ValueError(
            f"hash_format must be one of {sorted(HASH_FIRST_CHARACTERS)}, got {hash_format!r}"
        ) from None
    n = min(n, len(groups))
    # Every digit of a digest is equally likely: in base64 a letter group holds two of the 64
    # characters, in hex every group is one of the 16 nibbles.
    weights = {group: len(group) if case_sensitive else 1 for group in groups}
    heap = [(0, i) for i in range(n)]
    chars: list[list[str]] = [[] for _ in range(n)]
    for group in sorted(groups, key=weights.__getitem__, reverse=True):
        load, i = heapq.heappop(heap)
        chars[i].extend(group)
        heapq.heappush(heap, (load + weights[group], i))
    return chars, [c for group in groups for c in group]


def hash_partition_mask(hashes: pa.Array, index: int, count: int, hash_format: str) -> pa.BooleanArray:
    """Which of ``hashes`` belong to partition ``index`` of ``count`` (as :func:`first_characters` deals).

    Equal hashes always fall in the same partition, so deduplication inside each partition is
    deduplication across the whole source. Nulls, empty hashes and hashes starting with a character
    outside the alphabet belong to the last partition, so every row is in exactly one.

    A binary column (read as raw digests whatever ``hash_format`` says, as the preparer reads it) and
    any column under ``sha256_binary`` are dealt by their first byte, into ``count`` partitions: the
    count that ``hash_format``'s alphabet gave (at most 38 for base64, 16 for hex) stays the count.
    """
    value_type = hashes.type.value_type if pa.types.is_dictionary(hashes.type) else hashes.type
    binary = column_format(value_type, hash_format) == SHA256_BINARY
    chars, every = first_characters(count, SHA256_BINARY if binary else hash_format)
    if not 0 <= index < len(chars):
        raise ValueError(f"partition index {index} is outside 0..{len(chars) - 1}")
    if pa.types.is_dictionary(hashes.type):
        hashes = hashes.dictionary_decode()
    if binary:
        # One binary layout for every type (slicing takes no views); text declared binary by its UTF-8.
        first = pc.binary_slice(hashes.cast(pa.large_binary()), 0, 1)

        def value_set(group: list[str]) -> pa.Array:
            return pa.array([bytes.fromhex(c) for c in group], pa.large_binary())
    else:
        first = pc.utf8_slice_codeunits(hashes, 0, 1)

        def value_set(group: list[str]) -> pa.Array:
            return pa.array(group, pa.string())

    mine = pc.fill_null(pc.is_in(first, value_set=value_set(chars[index])), False)
    if index < len(chars) - 1:
        return mine
    known = pc.fill_null(pc.is_in(first, value_set=value_set(every)), False)
    return pc.or_(mine, pc.invert(known))


def parquet_hash_partitions(
    parquet_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    n: int,
    *,
    hash_column: str = "hash",
    hash_format: str = "sha256_base64",
) -> list[dict[str, Any]]:
    """Split a Parquet source into at most ``n`` partitions by the first character of the hash.

    Each mapped task reads the whole source and keeps its share of the rows, so the source is read
    ``n`` times; in exchange, duplicates across files land in one partition and are caught as
    ``duplicate_in_source``, as with :func:`sql_partitions`.

    :return: ``[{"parquet_path": ..., "partition": {"by": "hash", "index": i, "count": n, "column":
        ..., "hash_format": ...}}, ...]``.
    """
    chars, _ = first_characters(n, hash_format)
    path_value: str | list[str] = (
        os.fspath(parquet_path)
        if isinstance(parquet_path, str | os.PathLike)
        else [os.fspath(p) for p in parquet_path]
    )
    return [
        {
            PARQUET_PATH_KEY: path_value,
            PARTITION_KEY: {
                "by": "hash",
                "index": i,
                "count": len(chars),
                "column": hash_column,
                "hash_format": hash_format,
            },
        }
        for i in range(len(chars))
    ]


def quote_identifier(name: str, dialect: str | None = None) -> str:
    """``name`` quoted as one SQL identifier: backticks for MySQL/MariaDB, double quotes otherwise.

    :raises ValueError: for an empty name or one with a NUL character.
    """
    if not name or "\x00" in name:
        raise ValueError(f"not a column name: {name!r}")
    if (dialect or "").lower() in ("mysql", "mariadb"):
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _literals(chars: Sequence[str]) -> str:
    # The characters come from the fixed alphabets above, none of them a quote or a backslash.
    return ", ".join(f"'{c}'" for c in chars)


#: Binary hash columns: the dialects whose first byte in hex :func:`_first_byte_hex` can write.
BINARY_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")


def _first_byte_hex(column: str, dialect: str | None) -> str:
    """An SQL expression for the first byte of a binary ``column`` as two uppercase hex digits
    (``''`` for an empty value, NULL for NULL), in ``dialect``.

    :raises ValueError: for a dialect without one here (SQL has no portable way to read a byte).
    """
    name = (dialect or "").lower()
    if name.startswith("postgres"):
        return f"UPPER(ENCODE(SUBSTRING({column} FROM 1 FOR 1), 'hex'))"
    if name in ("mysql", "mariadb"):
        return f"HEX(SUBSTRING({column}, 1, 1))"
    if name == "sqlite":
        return f"HEX(SUBSTR({column}, 1, 1))"
    raise ValueError(
        f"partitions of a binary hash column (hash_format='{SHA256_BINARY}') need the SQL dialect, one of "
        f"{', '.join(BINARY_DIALECTS[:-1])} or {BINARY_DIALECTS[-1]}; got {dialect!r}"
    )


def sql_partitions(
    sql: str,
    hash_column: str,
    n: int,
    *,
    hash_format: str = "sha256_base64",
    dialect: str | None = None,
) -> list[dict[str, str]]:
    """Split a query into at most ``n`` queries by the first character of the hash column.

    Each partition is ``SELECT * FROM (<sql>) AS unkey_src WHERE SUBSTR(<hash>, 1, 1) IN (...)``. The
    first characters are grouped (a letter with its other case; for hex, one group per nibble) and the
    groups dealt to the partitions, heaviest first, each to the lightest partition: digests are uniform,
    so partitions get about equal shares. The last partition also takes the rows whose hash is NULL,
    empty or starts with any other character, so the partitions together return every row of ``sql``
    exactly once, and a hash and its duplicates always fall in the same partition.

    There are at most 38 groups for ``sha256_base64`` and 16 for ``sha256_hex``: a larger ``n`` gives
    that many partitions.

    A binary column (``BYTEA``, ``BINARY(32)``, a BLOB: ``hash_format="sha256_binary"``) is split by its
    first byte, written as hex by the dialect's functions (PostgreSQL
    ``UPPER(ENCODE(SUBSTRING(h FROM 1 FOR 1), 'hex'))``, MySQL/MariaDB ``HEX(SUBSTRING(h, 1, 1))``,
    SQLite ``HEX(SUBSTR(h, 1, 1))``), into at most 256 partitions. A text format's first character on
    a binary column would still give every row exactly once, but nearly all in the last partition.

    :param sql: the source query (its parameters, if any, stay as they are).
    :param hash_column: the name of the column that holds the hash, as the query returns it.
    :param n: how many partitions at most.
    :param hash_format: ``sha256_base64``, ``sha256_hex`` or ``sha256_binary``.
    :param dialect: the database's SQL dialect (``postgresql``, ``mysql``, ``sqlite``, ...), for quoting;
        with ``sha256_binary``, one of :data:`BINARY_DIALECTS`.
    :return: ``[{"sql": ...}, ...]``.
    :raises ValueError: for ``n`` below 1, an empty query, an unknown ``hash_format``, or a binary
        column in a dialect not in :data:`BINARY_DIALECTS`.
    """
    if n < 1:
        raise ValueError(f"the number of partitions must be at least 1, got {n}")
    inner = sql.strip().rstrip(";").rstrip()
    if not inner:
        raise ValueError("the query is empty")
    column = quote_identifier(hash_column, dialect)
    chars, every = first_characters(n, hash_format)
    first = _first_byte_hex(column, dialect) if hash_format == SHA256_BINARY else f"SUBSTR({column}, 1, 1)"
    n = len(chars)
    out = []
    for i, mine in enumerate(chars):
        predicate = f"{first} IN ({_literals(mine)})"
        if i == n - 1:
            predicate += f" OR {column} IS NULL OR {first} NOT IN ({_literals(every)})"
        out.append({SQL_KEY: f"SELECT * FROM ({inner}) AS {SUBQUERY_ALIAS} WHERE {predicate}"})
    return out
