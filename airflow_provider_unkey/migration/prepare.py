"""From source rows to key objects: map columns, validate, and serialise, one Arrow batch at a time.

Every row of a batch comes out either as a serialised key object ready for a request, or as a reject
with a detail naming the field. The hash is checked and converted with whole-array operations; the
other fields are converted per row and then checked by :mod:`airflow_provider_unkey.rules`, the same
rules the emulator answers by, so a row let through is a row the server accepts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration import hashes

#: The key object's fields a column can map to (dotted paths for nested ones).
KEY_FIELD_PATHS: tuple[str, ...] = (
    "hash",
    "name",
    "externalId",
    "meta",
    "roles",
    "permissions",
    "expires",
    "enabled",
    "credits.remaining",
    "credits.refill.interval",
    "credits.refill.amount",
    "credits.refill.refillDay",
    "ratelimits",
)


class MappingError(ValueError):
    """The column mapping does not fit the source (unknown field, missing column, wrong type)."""


def resolve_mapping(column_mapping: Mapping[str, str] | None, schema: pa.Schema) -> dict[str, str]:
    """Which source column feeds which key field.

    :param column_mapping: Unkey field path -> source column. ``None`` maps every field to a column of
        the same name, where one exists.
    :param schema: the source's schema.
    :raises MappingError: for an unknown field, a column the source lacks, or no ``hash``.
    """
    names = set(schema.names)
    if column_mapping is None:
        mapping = {field: field for field in KEY_FIELD_PATHS if field in names}
    else:
        unknown = sorted(set(column_mapping) - set(KEY_FIELD_PATHS))
        if unknown:
            raise MappingError(
                f"column_mapping names unknown key fields {unknown}; the fields are {', '.join(KEY_FIELD_PATHS)}"
            )
        missing = {f: c for f, c in column_mapping.items() if c not in names}
        if missing:
            raise MappingError(
                f"column_mapping refers to columns the source does not have: {missing}; "
                f"the source's columns are {sorted(names)}"
            )
        mapping = dict(column_mapping)
    if "hash" not in mapping:
        raise MappingError(
            f"no column for the key's hash: map 'hash' in column_mapping (the source's columns are {sorted(names)})"
        )
    refill = [f for f in mapping if f.startswith("credits.refill.")]
    if refill and "credits.remaining" not in mapping:
        raise MappingError(f"{refill} need 'credits.remaining' mapped too (Unkey requires it with a refill)")
    hash_type = schema.field(mapping["hash"]).type
    if not (
        pa.types.is_string(hash_type)
        or pa.types.is_large_string(hash_type)
        or pa.types.is_dictionary(hash_type)
    ):
        raise MappingError(f"the hash column {mapping['hash']!r} must hold text, not {hash_type}")
    return mapping


@dataclass(slots=True)
class PreparedRows:
    """The valid rows of one source batch, ready to be deduplicated and sent.

    :param rows: source row numbers.
    :param hashes: the hash of each row as it goes on the wire.
    :param digests: ``(n, 32)`` binary digests, for deduplication.
    :param keys: each row's key object, serialised as compact JSON.
    """

    rows: np.ndarray
    hashes: list[str]
    digests: np.ndarray
    keys: list[bytes]

    def take(self, mask: np.ndarray) -> PreparedRows:
        """The rows where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return PreparedRows(
            self.rows[idx], [self.hashes[i] for i in idx], self.digests[idx], [self.keys[i] for i in idx]
        )


@dataclass(slots=True)
class Rejects:
    """Rows that failed validation: source row, the hash as the source had it, and what is wrong."""

    rows: list[int]
    hashes: list[str | None]
    details: list[str]

    def __len__(self) -> int:
        return len(self.rows)


class _RowError(ValueError):
    """A value that cannot become its field; the message names the field."""


def _to_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise _RowError(f"{field}: must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # pandas writes nullable integer columns as float64; accept whole numbers.
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _RowError(f"{field}: must be an integer, got {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise _RowError(f"{field}: must be an integer, got {value!r}")


def _to_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "t", "f", "yes", "no"):
        return value.strip().lower() in ("true", "1", "t", "yes")
    raise _RowError(f"{field}: must be true or false, got {value!r}")


def _to_json_object(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise _RowError(f"{field}: is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if isinstance(value, list) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        return dict(value)  # an Arrow map column
    return value


def _to_string_list(delimiter: str) -> Callable[[Any, str], Any]:
    def convert(value: Any, field: str) -> Any:
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return _to_json_object(stripped, field)
            return [part.strip() for part in stripped.split(delimiter) if part.strip()]
        return value

    return convert


def _to_expires(value: Any, field: str) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000)
    return _to_int(value, field)


def _to_ratelimits(value: Any, field: str) -> Any:
    value = _to_json_object(value, field)
    if isinstance(value, list):
        return [
            {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
            for item in value
        ]
    return value


def _identity(value: Any, field: str) -> Any:
    return value


class KeyPreparer:
    """Turns source record batches into serialised key objects and rejects.

    :param mapping: field path -> column, from :func:`resolve_mapping`.
    :param hash_format: what the hash column holds: ``sha256_base64`` or ``sha256_hex``.
    :param algorithm: the migration's algorithm; it fixes the hash format on the wire.
    :param list_delimiter: separates roles and permissions held in one text column.
    :param max_key_bytes: a key object larger than this cannot fit in a request.
    """

    def __init__(
        self,
        mapping: Mapping[str, str],
        *,
        hash_format: str = "sha256_base64",
        algorithm: str = "sha256",
        list_delimiter: str = ",",
        max_key_bytes: int = rules.MAX_BODY_BYTES // 2,
    ) -> None:
        if hash_format not in hashes.HASH_FORMATS:
            raise ValueError(f"hash_format must be one of {hashes.HASH_FORMATS}, got {hash_format!r}")
        self.mapping = dict(mapping)
        self.hash_format = hash_format
        self.algorithm = hashes.canonical_algorithm(algorithm)
        self.wire_format = hashes.wire_format(self.algorithm)
        self.max_key_bytes = max_key_bytes
        converters: dict[str, Callable[[Any, str], Any]] = {
            "name": _identity,
            "externalId": _identity,
            "meta": _to_json_object,
            "roles": _to_string_list(list_delimiter),
            "permissions": _to_string_list(list_delimiter),
            "expires": _to_expires,
            "enabled": _to_bool,
            "credits.remaining": _to_int,
            "credits.refill.interval": _identity,
            "credits.refill.amount": _to_int,
            "credits.refill.refillDay": _to_int,
            "ratelimits": _to_ratelimits,
        }
        self._fields = [(f, self.mapping[f], converters[f]) for f in KEY_FIELD_PATHS[1:] if f in self.mapping]

    @property
    def hash_only(self) -> bool:
        """True when only the hash is mapped: the fast, fully vectorised path."""
        return not self._fields

    def _hash_problems(self, raw: pa.Array, ok: pa.BooleanArray) -> list[str | None]:
        """A detail for each row whose hash does not fit the declared format (None where it does)."""
        details: list[str | None] = []
        declared = self.hash_format
        for value, good in zip(raw.to_pylist(), ok.to_pylist(), strict=True):
            if good:
                details.append(None)
            elif value is None or value == "":
                details.append("hash: is missing")
            elif declared == "sha256_base64" and rules.SHA256_HEX_RE.match(value):
                details.append(
                    "hash: is hex, but hash_format is sha256_base64; set hash_format='sha256_hex' "
                    "(it is converted losslessly for a sha256 migration)"
                )
            elif declared == "sha256_hex" and rules.SHA256_BASE64_RE.match(value):
                details.append(
                    "hash: is base64, but hash_format is sha256_hex; set hash_format='sha256_base64'"
                )
            elif declared == "sha256_base64" and rules.SHA256_BASE64_RE.match(value):
                details.append("hash: is not canonical base64 (its last character before '=' has stray bits)")
            else:
                expected = (
                    "44 characters of standard base64 ending in '='"
                    if declared == "sha256_base64"
                    else "64 hex characters"
                )
                details.append(
                    f"hash: is not a SHA-256 digest in {declared} ({expected}); got {len(value)} characters"
                )
        return details

    def prepare(self, batch: pa.RecordBatch, first_row: int) -> tuple[PreparedRows, Rejects]:
        """Validate and serialise one batch.

        :param batch: source rows.
        :param first_row: the source row number of the batch's first row.
        :return: the valid rows and the rejects; together they hold every row of the batch once.
        """
        n = batch.num_rows
        raw = batch.column(self.mapping["hash"])
        if pa.types.is_dictionary(raw.type):
            raw = raw.dictionary_decode()
        ok = hashes.format_mask(raw, self.hash_format)
        ok_np = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        rejects = Rejects([], [], [])
        if not ok_np.all():
            for i, problem in enumerate(self._hash_problems(raw, ok)):
                if problem is not None:
                    rejects.rows.append(first_row + i)
                    rejects.hashes.append(raw[i].as_py())
                    rejects.details.append(problem)
        good_idx = np.flatnonzero(ok_np)
        good_raw = raw.take(pa.array(good_idx, type=pa.int64())) if len(good_idx) < n else raw
        digest_rows = hashes.digests(good_raw, self.hash_format)
        wire = (
            good_raw
            if self.hash_format == self.wire_format and self.wire_format == "sha256_base64"
            else hashes.encode(digest_rows, self.wire_format)
        )
        if self.hash_only:
            keys_arrow = pc.binary_join_element_wise('{"hash":"', wire, '"}', "")
            wire_list = wire.to_pylist()
            keys = [k.encode() for k in keys_arrow.to_pylist()]
            return PreparedRows(rows[good_idx], wire_list, digest_rows, keys), rejects

        columns = {
            f: batch.column(col).take(pa.array(good_idx, type=pa.int64())).to_pylist()
            for f, col, _ in self._fields
        }
        wire_list = wire.to_pylist()
        keep: list[int] = []
        keys = []
        for j, h in enumerate(wire_list):
            try:
                key = self._build(h, {f: columns[f][j] for f, _, _ in self._fields})
            except _RowError as exc:
                detail: str | None = str(exc)
            else:
                violations = rules.key_schema_violations(key, "key") or rules.key_server_violations(
                    key, "key"
                )
                detail = _describe(violations[0]) if violations else None
                if detail is None:
                    encoded = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode()
                    if len(encoded) > self.max_key_bytes:
                        detail = f"key: the key object is {len(encoded)} bytes, over the {self.max_key_bytes}-byte limit of one request"
            if detail is None:
                keep.append(j)
                keys.append(encoded)
            else:
                row = int(rows[good_idx[j]])
                rejects.rows.append(row)
                rejects.hashes.append(raw[int(good_idx[j])].as_py())
                rejects.details.append(detail)
        keep_np = np.asarray(keep, dtype=np.int64)
        return (
            PreparedRows(rows[good_idx][keep_np], [wire_list[j] for j in keep], digest_rows[keep_np], keys),
            rejects,
        )

    def _build(self, wire_hash: str, values: dict[str, Any]) -> dict[str, Any]:
        key: dict[str, Any] = {"hash": wire_hash}
        credits: dict[str, Any] = {}
        refill: dict[str, Any] = {}
        for field, _, convert in self._fields:
            value = values[field]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue  # a null leaves the field out
            converted = convert(value, field)
            if field.startswith("credits.refill."):
                refill[field.rsplit(".", 1)[1]] = converted
            elif field == "credits.remaining":
                credits["remaining"] = converted
            else:
                key[field] = converted
        if refill:
            credits.setdefault("remaining", None)
            credits["refill"] = refill
        if credits:
            key["credits"] = credits
        return key


def _describe(violation: rules.Violation) -> str:
    location = violation.location.removeprefix("key.").removeprefix("key")
    return f"{location or 'key'}: {violation.message}"
