"""Arrow building blocks of the column-wise path: JSON text written from whole columns.

Everything here works on whole arrays (``pyarrow.compute`` and NumPy); the kernels
(:mod:`.kernels`) are built from these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare.row_values import WS

LS = pa.large_string()
INT64_MAX = rules.INT64_MAX
#: Floats beyond this are not exact integers; the row-by-row path decides on them.
_FLOAT_EXACT = 2**53
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # what json.dumps(ensure_ascii=False) escapes in a string
_MS_PER_UNIT = {"s": 1000, "ms": 1}
_UNITS_PER_MS = {"us": 1000, "ns": 1_000_000}


@dataclass(slots=True)
class FieldJson:
    """One field of a batch, written column-wise.

    :param json: the field's JSON value per row; null where the row leaves the field out (and, of no
        consequence, where ``unsure``).
    :param unsure: rows the column-wise checks could not settle; they take the row-by-row path.
    """

    json: pa.Array
    unsure: np.ndarray


def is_text_type(t: pa.DataType) -> bool:
    """``string``, ``large_string`` or ``string_view``."""
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    )


def is_binary_type(t: pa.DataType) -> bool:
    """``binary``, ``large_binary``, ``binary_view`` or ``fixed_size_binary`` (of any width)."""
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or (hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(t))
    )


def is_list_type(t: pa.DataType) -> bool:
    """Any Arrow list type."""
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def lit(text: str) -> pa.Scalar:
    """A ``large_string`` scalar."""
    return pa.scalar(text, LS)


def concat(*parts: Any) -> pa.Array:
    """Element-wise concatenation; null where any part is null."""
    return pc.binary_join_element_wise(*parts, lit(""))


def np_mask(arr: Any) -> np.ndarray:
    """A boolean Arrow array as NumPy, nulls false."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def valid(arr: pa.Array) -> np.ndarray:
    """Where ``arr`` is not null, as NumPy."""
    return np_mask(pc.is_valid(arr))


def plain(arr: pa.Array) -> pa.Array:
    """Dictionary-decoded, and any text as ``large_string`` (so every string kernel sees one type)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if is_text_type(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(LS)
    return arr


def where(mask: np.ndarray, values: pa.Array) -> pa.Array:
    """``values`` where ``mask``, else null."""
    return pc.if_else(pa.array(mask, pa.bool_()), values, pa.scalar(None, values.type))


def json_strings(values: pa.Array) -> pa.Array:
    """Each string (``large_string``) as a JSON string literal, exactly as :func:`json.dumps` writes it."""
    quoted = concat(lit('"'), values, lit('"'))
    needs = np_mask(pc.match_substring_regex(values, _NEEDS_ESCAPE))
    if needs.any():
        # Quotes, backslashes and control characters are rare: escape those few rows in Python.
        idx = np.flatnonzero(needs)
        escaped = [json.dumps(s, ensure_ascii=False) for s in values.take(pa.array(idx)).to_pylist()]
        quoted = pc.replace_with_mask(quoted, pa.array(needs), pa.array(escaped, LS))
    return quoted


def int_text(values: np.ndarray, ok: np.ndarray) -> pa.Array:
    """``values`` written in decimal where ``ok``, else null."""
    return pc.cast(pa.array(values, pa.int64(), mask=~ok), LS)


def member(name: str, value: pa.Array) -> pa.Array:
    """``,"name":value`` per row, ``""`` where ``value`` is null: an optional member of an object."""
    return pc.fill_null(concat(lit(f',"{name}":'), value), "")


def object_of(members: list[tuple[str, pa.Array]], present: np.ndarray, *, first_required: bool) -> pa.Array:
    """``{"a":...,"b":...}`` per row from each member's JSON value (null where the row leaves it out).

    :param members: ``(name, JSON value)`` in the order they are written.
    :param present: the rows that have the object.
    :param first_required: the first member is required. The object then starts with it, and is null
        where it is (rows without the object, or rows that lack a required member: the row path
        judges those); no optional member can lead, so there is no comma to drop.
    :return: the object's JSON, null where the row has none.
    """
    if first_required:
        (name, value), rest = members[0], members[1:]
        return concat(lit(f'{{"{name}":'), value, *(member(n, v) for n, v in rest), lit("}"))
    # Any member may be absent: every fragment carries its comma, and the leading one is dropped.
    joined = concat(*(member(n, v) for n, v in members)) if len(members) > 1 else member(*members[0])
    return where(present, concat(lit("{"), pc.utf8_ltrim(joined, ","), lit("}")))


def join_lists(parents_counts: np.ndarray, items_json: pa.Array) -> pa.Array:
    """``[a,b,...]`` per row from the JSON of each item, given how many items each row has."""
    n = len(parents_counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(parents_counts, out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), items_json)
    return concat(lit("["), pc.binary_join(lists, lit(",")), lit("]"))


def integers(column: pa.Array, *, dates: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column as int64, as the row path's integer (or, with ``dates``, Unix-ms) conversion would.

    :return: ``values``, ``present`` (the row has a value: not null, not NaN) and ``settled`` (the
        value converted here; a present row that is not settled is left to the row-by-row path).
    """
    column = plain(column)
    t = column.type
    n = len(column)
    present = valid(column)
    none = np.zeros(n, dtype=bool)
    if pa.types.is_integer(t):
        raw = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        settled = present & (raw <= INT64_MAX) if pa.types.is_uint64(t) else present
        return raw.astype(np.int64), present, settled
    if pa.types.is_floating(t):
        raw = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        present = ~np.isnan(raw)  # NaN is pandas' null
        with np.errstate(invalid="ignore"):
            settled = present & (np.abs(raw) <= _FLOAT_EXACT) & (np.floor(raw) == raw)
        return np.where(settled, raw, 0).astype(np.int64), present, settled
    if pa.types.is_decimal(t):
        # Exact: through the decimal's text, whole numbers only ("12" or "12.00").
        column, fraction = pc.cast(column, LS), r"(\.0*)?"
    else:
        fraction = ""
    if is_text_type(column.type):
        text = pc.utf8_trim(column, WS)
        settled = np_mask(pc.match_substring_regex(text, rf"^-?[0-9]{{1,18}}{fraction}$"))
        digits = pc.replace_substring_regex(text, r"\..*$", "") if fraction else text
        values = pc.fill_null(pc.cast(where(settled, digits), pa.int64()), 0)
        return values.to_numpy(zero_copy_only=False), present, settled
    if dates and pa.types.is_timestamp(t):
        raw = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        if t.unit in _MS_PER_UNIT:
            factor = _MS_PER_UNIT[t.unit]
            settled = present & (np.abs(raw) <= INT64_MAX // factor)
            return np.where(settled, raw, 0) * factor, present, settled
        return raw // _UNITS_PER_MS[t.unit], present, present  # floor, as the reference does
    if dates and pa.types.is_date32(t):
        raw = pc.fill_null(column.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
        return raw.astype(np.int64) * 86_400_000, present, present
    if dates and pa.types.is_date64(t):
        return pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), present, present
    return np.zeros(n, dtype=np.int64), present, none


def duplicated_parents(values: pa.Array, parents: np.ndarray) -> np.ndarray:
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
