"""From source rows to key objects: map columns, validate, and serialise, one Arrow batch at a time.

Every row of a batch comes out either as a serialised key object ready for a request, or as a reject
with a detail naming the field. Everything about a field comes from the rules' field table
(:data:`rules.KEY_FIELD_TABLE`); two paths share the work:

* **Column-wise** (every row, first): each mapped column goes through the Arrow kernel of its
  field's JSON type (:mod:`.kernels`), which converts and checks it with whole-array operations, and
  each row's key object is assembled as JSON text from per-field fragments, objects such as
  ``credits`` from their members' columns. A row passes only when every check the rules would make
  of its fields is settled in its favour.
* **Row by row** (the few rows the column-wise path cannot settle: a failed check, an unusual type):
  the key object is built in Python with the reference conversions (:mod:`.row_values`) and checked
  by :func:`rules.key_schema_violations` and :func:`rules.key_server_violations`, the rules the
  emulator answers by. Rejects get their detail from here, so it is the rules' own wording.

A row let through is a row the server accepts. The kernels mirror the rules field by field, which
holds because the rules judge each mapped field on its own, and a rule across fields (a required
member of ``credits`` or of its refill, a monthly refill's ``refillDay``) is read from the table where
the object is assembled. ``tests/migration/prepare/test_prepare.py`` checks on random batches that the two
paths write the same keys and that every key let through passes the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.migration.prepare.arrow_json import (
    LS,
    concat,
    lit,
    member,
    np_mask,
    object_of,
    plain,
    valid,
)
from airflow_provider_unkey.migration.prepare.hash_problems import hash_problems
from airflow_provider_unkey.migration.prepare.kernels import kernel_for
from airflow_provider_unkey.migration.prepare.mapping import KEY_FIELD_PATHS, MappingError, resolve_mapping
from airflow_provider_unkey.migration.prepare.row_values import (
    RowError,
    converter_for,
    is_missing,
    wire_json,
)

__all__ = ["KEY_FIELD_PATHS", "KeyPreparer", "MappingError", "PreparedRows", "Rejects", "resolve_mapping"]


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
    """Rows that failed validation: source row, the hash as the source had it (a binary hash as
    lowercase hex), and what is wrong."""

    rows: list[int]
    hashes: list[str | None]
    details: list[str]

    def __len__(self) -> int:
        return len(self.rows)


class KeyPreparer:
    """Turns source record batches into serialised key objects and rejects.

    :param mapping: field path -> column, from :func:`resolve_mapping`.
    :param hash_format: what the hash column holds: ``sha256_base64``, ``sha256_hex`` or
        ``sha256_binary``. A binary column is read as raw 32-byte digests whatever it says.
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
        if not list_delimiter:
            raise ValueError("list_delimiter must not be empty")
        self.mapping = dict(mapping)
        self.hash_format = hash_format
        self.algorithm = hashes.canonical_algorithm(algorithm)
        self.wire_format = hashes.wire_format(self.algorithm)
        self.list_delimiter = list_delimiter
        self.max_key_bytes = max_key_bytes
        mapped = [rules.field(f) for f in KEY_FIELD_PATHS[1:] if f in self.mapping]
        self._fields = [(f.path, self.mapping[f.path], converter_for(f, list_delimiter)) for f in mapped]
        self._kernels = {f.path: kernel_for(f, list_delimiter) for f in mapped}
        # Members whose null the server refuses (credits.remaining): where an assembled object needs
        # one that the row lacks, the row path writes the null the server would see.
        self._null_refused = [
            f.path for f in rules.KEY_FIELD_TABLE if f.null_status and f.path in KEY_FIELD_PATHS
        ]

    @property
    def hash_only(self) -> bool:
        """True when only the hash is mapped: the fast, fully vectorised path."""
        return not self._fields

    def prepare(self, batch: pa.RecordBatch, first_row: int) -> tuple[PreparedRows, Rejects]:
        """Validate and serialise one batch.

        :param batch: source rows.
        :param first_row: the source row number of the batch's first row.
        :return: the valid rows and the rejects; together they hold every row of the batch once.
        """
        n = batch.num_rows
        raw = plain(batch.column(self.mapping["hash"]))
        hash_format = hashes.column_format(raw.type, self.hash_format)
        if pa.types.is_binary_view(raw.type):
            raw = raw.cast(pa.large_binary())  # take() has no kernel for binary views
        ok = hashes.format_mask(raw, hash_format)
        ok_np = np_mask(ok)
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        rejects = Rejects([], [], [])
        shown: list[pa.Array] = []  # the hashes as rejects show them, built once, if any row fails

        def show(i: int) -> str | None:
            if not shown:
                shown.append(hashes.readable(raw))
            value: str | None = shown[0][i].as_py()
            return value

        if not ok_np.all():
            for i, problem in enumerate(hash_problems(raw, ok, hash_format)):
                if problem is not None:
                    rejects.rows.append(first_row + i)
                    rejects.hashes.append(show(i))
                    rejects.details.append(problem)
        good_idx = np.flatnonzero(ok_np)
        take = pa.array(good_idx, type=pa.int64()) if len(good_idx) < n else None
        good_raw = raw.take(take) if take is not None else raw
        digest_rows = hashes.digests(good_raw, hash_format)
        wire = (
            good_raw
            if hash_format == self.wire_format and self.wire_format == "sha256_base64"
            else hashes.encode(digest_rows, self.wire_format).cast(LS)
        )
        wire_list = wire.to_pylist()
        if self.hash_only:
            keys_arrow = concat(lit('{"hash":"'), wire, lit('"}'))
            keys = keys_arrow.cast(pa.large_binary()).to_pylist()
            return PreparedRows(rows[good_idx], wire_list, digest_rows, keys), rejects

        columns = {
            f: (batch.column(col).take(take) if take is not None else batch.column(col))
            for f, col, _ in self._fields
        }
        keys_arrow, unsure = self._assemble(wire, columns)
        accepted = ~unsure
        keys_by_row: list[bytes | None]
        if not unsure.any():
            keys_by_row = keys_arrow.cast(pa.large_binary()).to_pylist()
        else:
            keys_by_row = [None] * len(good_idx)
            fast = np.flatnonzero(accepted)
            fast_keys = keys_arrow.filter(pa.array(accepted)).cast(pa.large_binary()).to_pylist()
            for j, key in zip(fast.tolist(), fast_keys, strict=True):
                keys_by_row[j] = key
            slow = np.flatnonzero(unsure)
            slow_take = pa.array(slow, type=pa.int64())
            values = {f: columns[f].take(slow_take).to_pylist() for f, _, _ in self._fields}
            for k, j in enumerate(slow.tolist()):
                outcome = self._one_row(wire_list[j], {f: values[f][k] for f, _, _ in self._fields})
                if isinstance(outcome, bytes):
                    keys_by_row[j] = outcome
                    accepted[j] = True
                else:
                    rejects.rows.append(int(rows[good_idx[j]]))
                    rejects.hashes.append(show(int(good_idx[j])))
                    rejects.details.append(outcome)
        keep = np.flatnonzero(accepted)
        keys = [k for k in keys_by_row if k is not None]
        return (
            PreparedRows(rows[good_idx][keep], [wire_list[j] for j in keep], digest_rows[keep], keys),
            rejects,
        )

    # --- column-wise ------------------------------------------------------------------------------
    def _assemble(self, wire: pa.Array, columns: dict[str, pa.Array]) -> tuple[pa.Array, np.ndarray]:
        """Every row's key object as JSON text, and the rows that need the row-by-row path."""
        n = len(wire)
        unsure = np.zeros(n, dtype=bool)
        values: dict[str, pa.Array] = {}
        for path, column in columns.items():
            converted = self._kernels[path](column)
            values[path] = converted.json
            unsure |= converted.unsure
        parts: list[Any] = [lit('{"hash":"'), wire, lit('"')]
        for name in rules.KEY_FIELDS[1:]:
            got = self._value(name, values, unsure)
            if got is not None:
                parts.append(member(name, got[0]))
        parts.append(lit("}"))
        keys = concat(*parts)
        unsure |= pc.binary_length(keys).to_numpy(zero_copy_only=False) > self.max_key_bytes
        return keys, unsure

    def _value(
        self, path: str, values: dict[str, pa.Array], unsure: np.ndarray
    ) -> tuple[pa.Array, np.ndarray] | None:
        """The JSON value at ``path`` per row (null where the row leaves it out) and the rows that have
        it, or None when no column feeds it.

        An object assembled from its members' columns (``credits``) is there when any member is; the
        table's rules across its members are checked here, marking in ``unsure`` the rows that lack
        a required member or one that another member's value requires (a monthly refill's day).
        """
        if path in values:
            return values[path], valid(values[path])
        if rules.field(path).type != "object":
            return None
        got = {}
        for name in rules.members(path):
            value = self._value(f"{path}.{name}", values, unsure)
            if value is not None:
                got[name] = value
        if not got:
            return None
        present = np.logical_or.reduce([mask for _, mask in got.values()])
        for name in rules.members(path):
            entry = rules.field(f"{path}.{name}")
            given = got[name][1] if name in got else np.zeros_like(present)
            if entry.required:
                unsure |= present & ~given
            if entry.required_when is not None and entry.required_when[0] in got:
                sibling, said = entry.required_when
                unsure |= np_mask(pc.equal(got[sibling][0], lit(wire_json(said)))) & ~given
        first = rules.field(f"{path}.{next(iter(got))}")
        members = [(name, value) for name, (value, _) in got.items()]
        return object_of(members, present, first_required=first.required), present

    # --- row by row ---------------------------------------------------------------------------------
    def _one_row(self, wire_hash: str, values: dict[str, Any]) -> bytes | str:
        """A row's serialised key object, or the detail of what is wrong with it."""
        try:
            key = self._build(wire_hash, values)
        except RowError as exc:
            return str(exc)
        violations = rules.key_schema_violations(key, "key") or rules.key_server_violations(key, "key")
        if violations:
            return _describe(violations[0])
        try:
            encoded = wire_json(key).encode()
        except (ValueError, TypeError) as exc:
            return f"key: cannot be written as JSON ({exc})"
        if len(encoded) > self.max_key_bytes:
            return f"key: the key object is {len(encoded)} bytes, over the {self.max_key_bytes}-byte limit of one request"
        return encoded

    def _build(self, wire_hash: str, values: dict[str, Any]) -> dict[str, Any]:
        key: dict[str, Any] = {"hash": wire_hash}
        for path, _, convert in self._fields:
            value = values[path]
            if is_missing(value):
                continue  # a null leaves the field out
            try:
                converted = convert(value, path)
            except RowError:
                raise
            except (ValueError, TypeError, RecursionError) as exc:
                # Data no converter foresaw (an Arrow map keyed by lists...) is a reject, not a crash.
                raise RowError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
            *parents, name = path.split(".")
            into = key
            for parent in parents:
                into = into.setdefault(parent, {})
            into[name] = converted
        for path in self._null_refused:
            # An object the row has (a refill) needs this member, which the row lacks: the server would
            # see a null and fail the whole request, so the row is invalid whatever else it lacks.
            # (Without the object, no member is no object.)
            parent, _, name = path.rpartition(".")
            target = _at(key, parent)
            if target is not None and name not in target and rules.field(path).required:
                raise RowError(_describe(rules.null_violation(rules.field(path), f"key.{path}", target)))
        return key


def _at(key: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The object at dotted ``path`` in ``key``, if the key has one."""
    target: Any = key
    for part in path.split(".") if path else ():
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else None


def _describe(violation: rules.Violation) -> str:
    location = violation.location.removeprefix("key.").removeprefix("key")
    return f"{location or 'key'}: {violation.message}"
