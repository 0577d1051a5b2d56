"""From source rows to key objects: map columns, validate, and serialise, one Arrow batch at a time.

Every row of a batch comes out either as a serialised key object ready for a request, or as a reject
with a detail naming the field. Two paths share the work:

* **Column-wise** (every row, first): each mapped column is converted and checked with whole-array
  Arrow and NumPy operations (string and list lengths, the permission pattern, integer ranges,
  duplicate roles), and each row's key object is assembled as JSON text from per-field fragments. A
  row passes only when every check that :mod:`airflow_provider_unkey.rules` would make of its fields
  is settled in its favour; meta held as JSON text is parsed row by row, still without building the
  key object.
* **Row by row** (the few rows the column-wise path cannot settle: a failed check, an unusual type):
  the key object is built in Python and checked by :func:`rules.key_schema_violations` and
  :func:`rules.key_server_violations`, the rules the emulator answers by. Rejects get their detail
  from here, so it is the rules' own wording.

A row let through is a row the server accepts. The column-wise checks mirror the rules field by
field, which holds because the rules judge each top-level field on its own (a rule across fields,
such as a monthly refill's ``refillDay`` or a refill's integer ``remaining``, is mirrored where it
lives: in ``credits``);
``tests/migration/test_prepare.py`` checks on random batches that the two paths write the same keys and
that every key let through passes the rules.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration import hashes

#: The key object's fields a column can map to: the rules' fields, with ``credits`` as dotted paths.
KEY_FIELD_PATHS: tuple[str, ...] = tuple(
    path
    for field in rules.KEY_FIELDS
    for path in (
        ("credits.remaining", *(f"credits.refill.{name}" for name in rules.REFILL_FIELDS))
        if field == "credits"
        else (field,)
    )
)


class MappingError(ValueError):
    """The column mapping does not fit the source (unknown field, missing column, wrong type)."""


def _is_text_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    )


def resolve_mapping(column_mapping: Mapping[str, str] | None, schema: pa.Schema) -> dict[str, str]:
    """Which source column feeds which key field.

    :param column_mapping: Unkey field path -> source column. ``None`` maps every field to a column of
        the same name, where one exists.
    :param schema: the source's schema.
    :raises MappingError: for an unknown field, a column the source lacks, no ``hash``, a refill
        without ``credits.remaining``, or a hash column that does not hold text.
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
    # A dictionary column is text only if its values are (an int-valued dictionary is not a hash).
    value_type = hash_type.value_type if pa.types.is_dictionary(hash_type) else hash_type
    if not _is_text_type(value_type):
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


# --- one value at a time: the reference conversions (the row-by-row path) ----------------------------
#: Trimmed around text values on both paths (ASCII whitespace: both paths agree on what it is).
_WS = " \t\n\r\x0b\x0c"
_INT_TEXT = re.compile(r"-?[0-9]+\Z")  # ASCII digits only: int() would also take '²' or '٣'
_TRUE_TEXTS = ("true", "1", "t", "yes")
_FALSE_TEXTS = ("false", "0", "f", "no")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


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
    if isinstance(value, decimal.Decimal):
        # SQL NUMERIC columns arrive as decimals.
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        raise _RowError(f"{field}: must be an integer, got {value}")
    if isinstance(value, str):
        text = value.strip(_WS)
        if _INT_TEXT.match(text):
            return int(text)
    raise _RowError(f"{field}: must be an integer, got {value!r}")


def _to_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip(_WS).lower()
        if text in _TRUE_TEXTS or text in _FALSE_TEXTS:
            return text in _TRUE_TEXTS
    raise _RowError(f"{field}: must be true or false, got {value!r}")


def _to_text(value: Any, field: str) -> Any:
    # Integer ids (a user id as externalId) are written in decimal; anything else is left to the rules.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # a pandas integer column with nulls is float64
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


# Python's json takes NaN, Infinity and 1e400 (as inf); JSON and Unkey's parser do not.
_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
#: Below this many ``[`` and ``{`` (so below twice as many characters) a value cannot nest deeply
#: enough for the decoder above to refuse it: it refuses near Python's recursion limit (1000 frames,
#: less those already on the stack), orjson only past 1024 levels.
_SHALLOW_OPENERS = 256


def _decode_for_check(text: str) -> Any:
    """Decode ``text`` as :data:`_STRICT_JSON` does, about 2.5 times as fast, for a check only.

    orjson refuses what the strict decoder refuses (NaN, Infinity, numbers that overflow a double,
    trailing data, trailing commas, control characters) and keeps the last of duplicate keys as it
    does. Where the two differ, the strict decoder decides: a value orjson refuses (a lone surrogate
    escape such as ``"\\ud800"``, or not JSON) and a value that may nest deeply go to it. One
    difference is left: an integer beyond 64 bits comes back as a float. Use this where the verdict
    cannot turn on that (the type and size of meta, a ratelimit's integer fields, a list of strings),
    never for a value that is written out again.

    :raises ValueError: not strict JSON (the strict decoder's error, with its wording).
    :raises RecursionError: nested too deeply.
    """
    if len(text) < 2 * _SHALLOW_OPENERS or text.count("[") + text.count("{") < _SHALLOW_OPENERS:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return _STRICT_JSON.decode(text)


def _decode_json(text: str, field: str) -> Any:
    try:
        return _STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _RowError(f"{field}: is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError as exc:
        raise _RowError(f"{field}: is not valid JSON ({exc})") from None
    except RecursionError:
        raise _RowError(f"{field}: is not valid JSON (nested too deeply)") from None


def _json_safe(value: Any, field: str) -> Any:
    """``value`` with what JSON cannot hold converted (dates, decimals) or refused (NaN, bytes)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _RowError(f"{field}: holds {value!r}, which JSON cannot carry")
    if isinstance(value, Mapping):
        return {
            k if isinstance(k, str | int | float | bool) else str(_json_safe(k, field)): _json_safe(v, field)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_json_safe(v, field) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return str(value)
    raise _RowError(f"{field}: holds a {type(value).__name__}, which JSON cannot carry")


def _to_json_object(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return _decode_json(value, field)
    if isinstance(value, list) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        value = dict(value)  # an Arrow map column
    return _json_safe(value, field)


def _to_string_list(delimiter: str) -> Callable[[Any, str], Any]:
    def convert(value: Any, field: str) -> Any:
        if isinstance(value, str):
            stripped = value.strip(_WS)
            if stripped.startswith("["):
                return _decode_json(stripped, field)
            return [part.strip(_WS) for part in stripped.split(delimiter) if part.strip(_WS)]
        return value

    return convert


def _to_expires(value: Any, field: str) -> int:
    # Exact integer arithmetic: timestamp() * 1000 in floats can land one millisecond low.
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int((value - _EPOCH) // _ONE_MS)
    if isinstance(value, dt.date):
        return (value - dt.date(1970, 1, 1)).days * 86_400_000
    if isinstance(value, str) and not _INT_TEXT.match(value.strip(_WS)):
        # ISO 8601 text, as SQLite and CSV exports keep timestamps.
        try:
            parsed = dt.datetime.fromisoformat(value.strip(_WS))
        except ValueError:
            raise _RowError(
                f"{field}: must be a timestamp, Unix milliseconds or ISO 8601 text, got {value!r}"
            ) from None
        return _to_expires(parsed, field)
    return _to_int(value, field)


def _to_ratelimits(value: Any, field: str) -> Any:
    # Not _to_json_object: it would read an empty list as an empty Arrow map, {}.
    value = _decode_json(value, field) if isinstance(value, str) else _json_safe(value, field)
    if isinstance(value, list):
        return [
            {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
            for item in value
        ]
    return value


def _dumps(value: Any) -> str:
    """Compact JSON as the wire carries it: UTF-8 as is, no NaN."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a JSON escape such as "\ud800") has no UTF-8: escape it instead.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def _identity(value: Any, field: str) -> Any:
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- whole columns at a time: the column-wise path ---------------------------------------------------
_LS = pa.large_string()
_INT64_MAX = rules.INT64_MAX
#: Floats beyond this are not exact integers; the row-by-row path decides on them.
_FLOAT_EXACT = 2**53
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # what json.dumps(ensure_ascii=False) escapes in a string
_PERMISSION_RE2 = rules.PERMISSION_PATTERN  # RE2, like ECMA-262, matches $ only at the very end
_MS_PER_UNIT = {"s": 1000, "ms": 1}
_UNITS_PER_MS = {"us": 1000, "ns": 1_000_000}


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, _LS)


def _concat(*parts: Any) -> pa.Array:
    """Element-wise concatenation; null where any part is null."""
    return pc.binary_join_element_wise(*parts, _lit(""))


def _np_mask(arr: Any) -> np.ndarray:
    """A boolean Arrow array as NumPy, nulls false."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _valid(arr: pa.Array) -> np.ndarray:
    return _np_mask(pc.is_valid(arr))


def _plain(arr: pa.Array) -> pa.Array:
    """Dictionary-decoded, and any text as ``large_string`` (so every string kernel sees one type)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if _is_text_type(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(_LS)
    return arr


def _is_list_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _where(mask: np.ndarray, values: pa.Array) -> pa.Array:
    """``values`` where ``mask``, else null."""
    return pc.if_else(pa.array(mask, pa.bool_()), values, pa.scalar(None, values.type))


def _json_strings(values: pa.Array) -> pa.Array:
    """Each string (``large_string``) as a JSON string literal, exactly as :func:`json.dumps` writes it."""
    quoted = _concat(_lit('"'), values, _lit('"'))
    needs = _np_mask(pc.match_substring_regex(values, _NEEDS_ESCAPE))
    if needs.any():
        # Quotes, backslashes and control characters are rare: escape those few rows in Python.
        idx = np.flatnonzero(needs)
        escaped = [json.dumps(s, ensure_ascii=False) for s in values.take(pa.array(idx)).to_pylist()]
        quoted = pc.replace_with_mask(quoted, pa.array(needs), pa.array(escaped, _LS))
    return quoted


def _int_text(values: np.ndarray, ok: np.ndarray) -> pa.Array:
    """``values`` written in decimal where ``ok``, else null."""
    return pc.cast(pa.array(values, pa.int64(), mask=~ok), _LS)


@dataclass(slots=True)
class _Column:
    """One field of a batch, column-wise.

    :param json: the field's JSON value per row; null where the row leaves the field out (and, of no
        consequence, where ``unsure``).
    :param unsure: rows the column-wise checks could not settle; they take the row-by-row path.
    """

    json: pa.Array
    unsure: np.ndarray


def _all_unsure(column: pa.Array) -> _Column:
    return _Column(pa.nulls(len(column), _LS), _valid(column))


def _integers(column: pa.Array, *, dates: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column as int64, as :func:`_to_int` (or :func:`_to_expires`) would convert it.

    :return: ``values``, ``present`` (the row has a value: not null, not NaN) and ``settled`` (the
        value converted here; a present row that is not settled is left to the row-by-row path).
    """
    column = _plain(column)
    t = column.type
    n = len(column)
    present = _valid(column)
    none = np.zeros(n, dtype=bool)
    if pa.types.is_integer(t):
        raw = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        settled = present & (raw <= _INT64_MAX) if pa.types.is_uint64(t) else present
        return raw.astype(np.int64), present, settled
    if pa.types.is_floating(t):
        raw = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        present = ~np.isnan(raw)  # NaN is pandas' null
        with np.errstate(invalid="ignore"):
            settled = present & (np.abs(raw) <= _FLOAT_EXACT) & (np.floor(raw) == raw)
        return np.where(settled, raw, 0).astype(np.int64), present, settled
    if pa.types.is_decimal(t):
        # Exact: through the decimal's text, whole numbers only ("12" or "12.00").
        column, fraction = pc.cast(column, _LS), r"(\.0*)?"
    else:
        fraction = ""
    if _is_text_type(column.type):
        text = pc.utf8_trim(column, _WS)
        settled = _np_mask(pc.match_substring_regex(text, rf"^-?[0-9]{{1,18}}{fraction}$"))
        digits = pc.replace_substring_regex(text, r"\..*$", "") if fraction else text
        values = pc.fill_null(pc.cast(_where(settled, digits), pa.int64()), 0)
        return values.to_numpy(zero_copy_only=False), present, settled
    if dates and pa.types.is_timestamp(t):
        raw = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        if t.unit in _MS_PER_UNIT:
            factor = _MS_PER_UNIT[t.unit]
            settled = present & (np.abs(raw) <= _INT64_MAX // factor)
            return np.where(settled, raw, 0) * factor, present, settled
        return raw // _UNITS_PER_MS[t.unit], present, present  # floor, as the reference does
    if dates and pa.types.is_date32(t):
        raw = pc.fill_null(column.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
        return raw.astype(np.int64) * 86_400_000, present, present
    if dates and pa.types.is_date64(t):
        return pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), present, present
    return np.zeros(n, dtype=np.int64), present, none


def _integer_column(column: pa.Array, low: int, high: int, *, dates: bool = False) -> _Column:
    values, present, settled = _integers(column, dates=dates)
    # The rules' bound and Go's int64, whichever is lower.
    ok = settled & (values >= low) & (values <= min(high, _INT64_MAX))
    return _Column(_int_text(values, ok), present & ~ok)


def _text_column(
    column: pa.Array, low: int, high: int, *, allowed: tuple[str, ...] = (), integers: bool = True
) -> _Column:
    column = _plain(column)
    t = column.type
    if _is_text_type(t):
        text, present, settled = column, _valid(column), _valid(column)
    elif integers and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        values, present, settled = _integers(column)
        text = _int_text(values, settled)
    else:
        return _all_unsure(column)
    length = pc.utf8_length(text).to_numpy(zero_copy_only=False)
    ok = settled & (np.nan_to_num(length, nan=-1) >= low) & (np.nan_to_num(length, nan=-1) <= high)
    if allowed:
        ok &= _np_mask(pc.is_in(text, value_set=pa.array(allowed, _LS)))
    return _Column(_json_strings(text), present & ~ok)


def _bool_column(column: pa.Array) -> _Column:
    column = _plain(column)
    t = column.type
    present = _valid(column)
    if pa.types.is_boolean(t):
        return _Column(pc.if_else(column, _lit("true"), _lit("false")), np.zeros(len(column), dtype=bool))
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        raw = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        present = ~np.isnan(raw)
        true, false = raw == 1, raw == 0
    elif _is_text_type(t):
        text = pc.utf8_lower(pc.utf8_trim(column, _WS))
        true = _np_mask(pc.is_in(text, value_set=pa.array(_TRUE_TEXTS, _LS)))
        false = _np_mask(pc.is_in(text, value_set=pa.array(_FALSE_TEXTS, _LS)))
    else:
        return _all_unsure(column)
    words = pc.if_else(pa.array(true), _lit("true"), _lit("false"))
    return _Column(_where(true | false, words), present & ~(true | false))


def _each_row(
    column: pa.Array,
    field: str,
    convert: Callable[[Any, str], Any],
    accept: Callable[[Any], bool] | None = None,
) -> _Column:
    """Any column of a top-level field, a row at a time: convert, check the field alone, serialise.

    The rules check each top-level field on its own, so a key holding only this field (and a
    placeholder hash) tells whether the field is fine; ``accept`` is a cheaper check that is at least
    as strict.
    """
    out: list[str | None] = []
    unsure = np.zeros(len(column), dtype=bool)
    for i, value in enumerate(column.to_pylist()):
        if _is_missing(value):
            out.append(None)
            continue
        try:
            converted = convert(value, field)
            if accept is not None:
                if not accept(converted):
                    raise _RowError(field)
            else:
                alone = {"hash": "---", field: converted}
                if rules.key_schema_violations(alone) or rules.key_server_violations(alone):
                    raise _RowError(field)
            out.append(_dumps(converted))
        except (_RowError, ValueError, TypeError):
            unsure[i] = True
            out.append(None)
    return _Column(pa.array(out, _LS), unsure)


def _json_text_column(column: pa.Array, accept: Callable[[Any], bool]) -> _Column:
    """JSON text (``large_string``) that goes out as it came, where it parses strictly and ``accept``
    says the rules would take the decoded value."""
    texts = column.to_pylist()
    unsure = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if text is None:
            continue
        try:
            obj = _decode_for_check(text)
        except (ValueError, RecursionError):
            unsure[i] = True
            continue
        if not accept(obj):
            unsure[i] = True
    return _Column(column, unsure)


def _meta_ok(obj: Any) -> bool:
    """The schema's whole rule for meta (and the server adds none)."""
    return type(obj) is dict and len(obj) <= rules.META_MAX_PROPERTIES


def _ratelimits_ok(obj: Any) -> bool:
    """The rules for ratelimits, schema and server, on a decoded JSON value; stricter where cheaper.

    Items with a null member are left to the row-by-row path, which drops nulls before checking.
    """
    if type(obj) is not list or len(obj) > rules.RATELIMITS_MAX_ITEMS:
        return False
    for item in obj:
        if type(item) is not dict:
            return False
        name, limit, duration = item.get("name"), item.get("limit"), item.get("duration")
        if not (
            type(name) is str
            and rules.RATELIMIT_NAME_MIN_LENGTH <= len(name) <= rules.RATELIMIT_NAME_MAX_LENGTH
            # int, not float: Go's int64 refuses 10.0 (a 400), and bool is no integer.
            and type(limit) is int
            and rules.RATELIMIT_LIMIT_MIN <= limit <= _INT64_MAX
            and type(duration) is int
            and rules.RATELIMIT_DURATION_MIN <= duration <= _INT64_MAX
            and type(item.get("autoApply")) is bool
            and None not in item.values()
        ):
            return False
    return True


def _meta_column(column: pa.Array) -> _Column:
    column = _plain(column)
    if _is_text_type(column.type):
        return _json_text_column(column, _meta_ok)
    return _each_row(column, "meta", _to_json_object, _meta_ok)


def _duplicated_parents(values: pa.Array, parents: np.ndarray) -> np.ndarray:
    """Parents (rows) in which some value occurs twice."""
    if len(values) < 2:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(values)
    # One integer per (row, value): 0 for a null value, 1 + its dictionary index otherwise.
    codes = pc.fill_null(pc.add(encoded.indices, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    width = len(encoded.dictionary) + 1
    pair = parents * width + codes
    pair.sort()
    result: np.ndarray = pair[1:][pair[1:] == pair[:-1]] // width
    return result


def _utf8(text: str, values: list[str]) -> bool:
    """Whether decoded strings have UTF-8 (a JSON escape such as \\ud800 gives a lone surrogate)."""
    if "\\u" not in text:
        return True
    try:
        for value in values:
            value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _list_values(
    column: pa.Array, delimiter: str
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray] | None:
    """Items of a list column (or of delimited / JSON text) with each item's row, as the reference splits them.

    :return: ``values`` (``large_string``), ``parents``, ``present`` and ``unsure`` rows; ``None`` for
        a column type the column-wise path does not convert.
    """
    column = _plain(column)
    t = column.type
    present = _valid(column)
    unsure = np.zeros(len(column), dtype=bool)
    if _is_list_type(t):
        values = _plain(pc.list_flatten(column))
        if pa.types.is_null(values.type):
            values = values.cast(_LS)
        if not pa.types.is_large_string(values.type):
            return None
        return values, pc.list_parent_indices(column).to_numpy().astype(np.int64), present, unsure
    if not _is_text_type(t):
        return None
    text = pc.utf8_trim(column, _WS)
    is_json = _np_mask(pc.starts_with(text, "["))
    split = pc.split_pattern(_where(~is_json, text), delimiter)
    parts = pc.utf8_trim(pc.list_flatten(split), _WS)
    keep = _np_mask(pc.greater(pc.utf8_length(parts), 0))
    values = parts.filter(pa.array(keep))
    parents = pc.list_parent_indices(split).to_numpy().astype(np.int64)[keep]
    if is_json.any():
        extra: list[Any] = []
        extra_parents: list[int] = []
        rows = np.flatnonzero(is_json)
        for i, item in zip(rows.tolist(), text.take(pa.array(rows)).to_pylist(), strict=True):
            try:
                decoded = _decode_for_check(item)
            except (ValueError, RecursionError):
                decoded = None
            if (
                isinstance(decoded, list)
                and all(isinstance(v, str) for v in decoded)
                and _utf8(item, decoded)
            ):
                extra.extend(decoded)
                extra_parents.extend([i] * len(decoded))
            else:
                unsure[i] = True
        values = pa.concat_arrays([values, pa.array(extra, _LS)])
        parents = np.concatenate([parents, np.asarray(extra_parents, dtype=np.int64)])
        order = np.argsort(parents, kind="stable")
        values, parents = values.take(pa.array(order)), parents[order]
    return values, parents, present, unsure


def _list_column(
    column: pa.Array,
    field: str,
    delimiter: str,
    *,
    max_items: int,
    low: int,
    high: int,
    pattern: str | None = None,
    unique: bool = False,
) -> _Column:
    listed = _list_values(column, delimiter)
    if listed is None:
        return _each_row(column, field, _to_string_list(delimiter))
    values, parents, present, unsure = listed
    n = len(column)
    counts = np.bincount(parents, minlength=n)
    length = np.nan_to_num(pc.utf8_length(values).to_numpy(zero_copy_only=False), nan=-1)
    good = _valid(values) & (length >= low) & (length <= high)
    if pattern is not None:
        good &= _np_mask(pc.match_substring_regex(values, pattern))
    unsure = unsure | (counts > max_items)
    unsure[parents[~good]] = True
    if unique:
        unsure[_duplicated_parents(values, parents)] = True
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    items = pa.LargeListArray.from_arrays(pa.array(offsets), _json_strings(pc.fill_null(values, "")))
    joined = _concat(_lit("["), pc.binary_join(items, _lit(",")), _lit("]"))
    return _Column(_where(present, joined), present & unsure)


_RATELIMIT_TYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "name": lambda t: _is_text_type(t) or (pa.types.is_dictionary(t) and _is_text_type(t.value_type)),
    "limit": pa.types.is_integer,
    "duration": pa.types.is_integer,
    "autoApply": pa.types.is_boolean,
}


def _ratelimit_column(column: pa.Array) -> _Column:
    t = column.type
    item_type = t.value_type if _is_list_type(t) else None
    if not (
        item_type is not None
        and pa.types.is_struct(item_type)
        and sorted(item_type.field(i).name for i in range(item_type.num_fields)) == sorted(_RATELIMIT_TYPES)
        and all(check(item_type.field(name).type) for name, check in _RATELIMIT_TYPES.items())
    ):
        column = _plain(column)
        if _is_text_type(column.type):
            return _json_text_column(column, _ratelimits_ok)
        # Structs of another shape, or anything else: a row at a time.
        return _each_row(column, "ratelimits", _to_ratelimits)
    n = len(column)
    present = _valid(column)
    items = pc.list_flatten(column)
    parents = pc.list_parent_indices(column).to_numpy().astype(np.int64)
    name = _plain(pc.struct_field(items, "name"))
    limit, _, limit_ok = _integers(pc.struct_field(items, "limit"))
    duration, _, duration_ok = _integers(pc.struct_field(items, "duration"))
    auto_apply = pc.struct_field(items, "autoApply")
    name_length = np.nan_to_num(pc.utf8_length(name).to_numpy(zero_copy_only=False), nan=-1)
    good = (
        _valid(items)
        & (name_length >= rules.RATELIMIT_NAME_MIN_LENGTH)
        & (name_length <= rules.RATELIMIT_NAME_MAX_LENGTH)
        & limit_ok
        & (limit >= rules.RATELIMIT_LIMIT_MIN)
        & duration_ok
        & (duration >= rules.RATELIMIT_DURATION_MIN)
        & _valid(auto_apply)
    )
    counts = np.bincount(parents, minlength=n)
    unsure = counts > rules.RATELIMITS_MAX_ITEMS
    unsure[parents[~good]] = True
    item_json = _concat(
        _lit('{"name":'),
        _json_strings(pc.fill_null(name, "")),
        _lit(',"limit":'),
        pc.fill_null(_int_text(limit, limit_ok), "0"),
        _lit(',"duration":'),
        pc.fill_null(_int_text(duration, duration_ok), "0"),
        _lit(',"autoApply":'),
        pc.fill_null(pc.if_else(auto_apply, _lit("true"), _lit("false")), "false"),
        _lit("}"),
    )
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), item_json)
    joined = _concat(_lit("["), pc.binary_join(lists, _lit(",")), _lit("]"))
    return _Column(_where(present, joined), present & unsure)


#: Top-level fields in the order both paths write them (credits, assembled from four columns, last).
_TOP_LEVEL = ("name", "externalId", "meta", "roles", "permissions", "expires", "enabled", "ratelimits")


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
        if not list_delimiter:
            raise ValueError("list_delimiter must not be empty")
        self.mapping = dict(mapping)
        self.hash_format = hash_format
        self.algorithm = hashes.canonical_algorithm(algorithm)
        self.wire_format = hashes.wire_format(self.algorithm)
        self.list_delimiter = list_delimiter
        self.max_key_bytes = max_key_bytes
        converters: dict[str, Callable[[Any, str], Any]] = {
            "name": _to_text,
            "externalId": _to_text,
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
        raw = _plain(batch.column(self.mapping["hash"]))
        ok = hashes.format_mask(raw, self.hash_format)
        ok_np = _np_mask(ok)
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        rejects = Rejects([], [], [])
        if not ok_np.all():
            for i, problem in enumerate(self._hash_problems(raw, ok)):
                if problem is not None:
                    rejects.rows.append(first_row + i)
                    rejects.hashes.append(raw[i].as_py())
                    rejects.details.append(problem)
        good_idx = np.flatnonzero(ok_np)
        take = pa.array(good_idx, type=pa.int64()) if len(good_idx) < n else None
        good_raw = raw.take(take) if take is not None else raw
        digest_rows = hashes.digests(good_raw, self.hash_format)
        wire = (
            good_raw
            if self.hash_format == self.wire_format and self.wire_format == "sha256_base64"
            else hashes.encode(digest_rows, self.wire_format).cast(_LS)
        )
        wire_list = wire.to_pylist()
        if self.hash_only:
            keys_arrow = _concat(_lit('{"hash":"'), wire, _lit('"}'))
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
                    rejects.hashes.append(raw[int(good_idx[j])].as_py())
                    rejects.details.append(outcome)
        keep = np.flatnonzero(accepted)
        keys = [k for k in keys_by_row if k is not None]
        return (
            PreparedRows(rows[good_idx][keep], [wire_list[j] for j in keep], digest_rows[keep], keys),
            rejects,
        )

    # --- column-wise ------------------------------------------------------------------------------
    def _column(self, field: str, column: pa.Array) -> _Column:
        if field == "name":
            return _text_column(column, rules.NAME_MIN_LENGTH, rules.NAME_MAX_LENGTH)
        if field == "externalId":
            return _text_column(column, rules.EXTERNAL_ID_MIN_LENGTH, rules.EXTERNAL_ID_MAX_LENGTH)
        if field == "meta":
            return _meta_column(column)
        if field == "roles":
            return _list_column(
                column,
                field,
                self.list_delimiter,
                max_items=rules.ROLES_MAX_ITEMS,
                low=rules.ROLE_MIN_LENGTH,
                high=rules.ROLE_MAX_LENGTH,
                unique=True,  # the server answers 500 to a role given twice
            )
        if field == "permissions":
            return _list_column(
                column,
                field,
                self.list_delimiter,
                max_items=rules.PERMISSIONS_MAX_ITEMS,
                low=rules.PERMISSION_MIN_LENGTH,
                high=rules.PERMISSION_MAX_LENGTH,
                pattern=_PERMISSION_RE2,
            )
        if field == "expires":
            return _integer_column(column, rules.EXPIRES_MIN, rules.EXPIRES_MAX, dates=True)
        if field == "enabled":
            return _bool_column(column)
        if field == "credits.remaining":
            return _integer_column(column, rules.CREDITS_REMAINING_MIN, rules.CREDITS_MAX)
        if field == "credits.refill.interval":
            return _text_column(column, 1, 16, allowed=rules.REFILL_INTERVALS, integers=False)
        if field == "credits.refill.amount":
            return _integer_column(column, rules.REFILL_AMOUNT_MIN, rules.CREDITS_MAX)
        if field == "credits.refill.refillDay":
            return _integer_column(column, rules.REFILL_DAY_MIN, rules.REFILL_DAY_MAX)
        if field == "ratelimits":
            return _ratelimit_column(column)
        raise AssertionError(field)  # pragma: no cover - KEY_FIELD_PATHS is closed

    def _assemble(self, wire: pa.Array, columns: dict[str, pa.Array]) -> tuple[pa.Array, np.ndarray]:
        """Every row's key object as JSON text, and the rows that need the row-by-row path."""
        n = len(wire)
        unsure = np.zeros(n, dtype=bool)
        values: dict[str, pa.Array] = {}
        for field, column in columns.items():
            converted = self._column(field, column)
            values[field] = converted.json
            unsure |= converted.unsure
        # Each optional member carries its leading comma and is "" where the row leaves it out.
        parts: list[Any] = [_lit('{"hash":"'), wire, _lit('"')]
        for field in _TOP_LEVEL:
            if field in values:
                parts.append(pc.fill_null(_concat(_lit(f',"{field}":'), values[field]), ""))
        if any(field.startswith("credits.") for field in values):
            parts.append(self._credits(values, unsure))
        parts.append(_lit("}"))
        keys = _concat(*parts)
        unsure |= pc.binary_length(keys).to_numpy(zero_copy_only=False) > self.max_key_bytes
        return keys, unsure

    @staticmethod
    def _credits(values: dict[str, pa.Array], unsure: np.ndarray) -> pa.Array:
        """The ``credits`` member; marks in ``unsure`` the rows whose refill the rules would refuse."""
        n = len(unsure)
        remaining = values.get("credits.remaining", pa.nulls(n, _LS))
        refill = [values.get(f"credits.refill.{name}") for name in rules.REFILL_FIELDS]
        interval, amount, day = (v if v is not None else pa.nulls(n, _LS) for v in refill)
        has_refill = np.zeros(n, dtype=bool)
        for value in refill:
            if value is not None:
                has_refill |= _valid(value)
        # interval and amount are required in a refill; a monthly one needs its refillDay (a 400); and
        # it needs an integer remaining count: Unkey fails the whole request on "remaining": null (a
        # 500). The row-by-row path rejects those rows with the rules' detail.
        unsure |= has_refill & ~(_valid(interval) & _valid(amount) & _valid(remaining))
        unsure |= _np_mask(pc.equal(interval, _lit('"monthly"'))) & ~_valid(day)
        refill_json = _concat(
            _lit(',"refill":{"interval":'),
            interval,
            _lit(',"amount":'),
            amount,
            pc.fill_null(_concat(_lit(',"refillDay":'), day), ""),
            _lit("}"),
        )
        # No remaining count and no refill: unlimited credits, which is no credits member at all (the
        # concatenation is null, so ""); never "remaining": null.
        member = _concat(
            _lit(',"credits":{"remaining":'),
            remaining,
            pc.fill_null(_where(has_refill, refill_json), ""),
            _lit("}"),
        )
        return pc.fill_null(member, "")

    # --- row by row ---------------------------------------------------------------------------------
    def _one_row(self, wire_hash: str, values: dict[str, Any]) -> bytes | str:
        """A row's serialised key object, or the detail of what is wrong with it."""
        try:
            key = self._build(wire_hash, values)
        except _RowError as exc:
            return str(exc)
        violations = rules.key_schema_violations(key, "key") or rules.key_server_violations(key, "key")
        if violations:
            return _describe(violations[0])
        try:
            encoded = _dumps(key).encode()
        except (ValueError, TypeError) as exc:
            return f"key: cannot be written as JSON ({exc})"
        if len(encoded) > self.max_key_bytes:
            return f"key: the key object is {len(encoded)} bytes, over the {self.max_key_bytes}-byte limit of one request"
        return encoded

    def _build(self, wire_hash: str, values: dict[str, Any]) -> dict[str, Any]:
        key: dict[str, Any] = {"hash": wire_hash}
        credits: dict[str, Any] = {}
        refill: dict[str, Any] = {}
        for field, _, convert in self._fields:
            value = values[field]
            if _is_missing(value):
                continue  # a null leaves the field out
            try:
                converted = convert(value, field)
            except _RowError:
                raise
            except (ValueError, TypeError, RecursionError) as exc:
                # Data no converter foresaw (an Arrow map keyed by lists...) is a reject, not a crash.
                raise _RowError(f"{field}: cannot be read ({type(exc).__name__}: {exc})") from None
            if field.startswith("credits.refill."):
                refill[field.rsplit(".", 1)[1]] = converted
            elif field == "credits.remaining":
                credits["remaining"] = converted
            else:
                key[field] = converted
        if refill:
            if "remaining" not in credits:
                # Would be "remaining": null, on which Unkey fails the whole request: the row is invalid,
                # whatever else its refill lacks. (Without a refill, no remaining count is no credits.)
                violation = rules.null_remaining_violation("key.credits.remaining", refill=True)
                raise _RowError(_describe(violation))
            credits["refill"] = refill
        if credits:
            key["credits"] = credits
        return key


def _describe(violation: rules.Violation) -> str:
    location = violation.location.removeprefix("key.").removeprefix("key")
    return f"{location or 'key'}: {violation.message}"
