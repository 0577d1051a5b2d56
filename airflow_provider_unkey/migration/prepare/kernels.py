"""Whole columns at a time: one Arrow kernel per JSON type, chosen from the field table.

A kernel converts a source column to its field's JSON text and checks it with whole-array Arrow and
NumPy operations against the field's entry in :data:`rules.KEY_FIELD_TABLE` (lengths, ranges,
patterns, item limits, duplicates). A row passes only when every check the rules would make of the
field is settled in its favour; anything else is marked ``unsure`` and goes to the row path, which
converts it with :mod:`.row_values` and lets the rules say what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare.arrow_json import (
    INT64_MAX,
    LS,
    FieldJson,
    duplicated_parents,
    int_text,
    integers,
    is_list_type,
    is_text_type,
    join_lists,
    json_strings,
    lit,
    np_mask,
    object_of,
    plain,
    valid,
    where,
)
from airflow_provider_unkey.migration.prepare.row_values import (
    FALSE_TEXTS,
    TRUE_TEXTS,
    WS,
    Converter,
    RowError,
    converter_for,
    decode_for_check,
    is_missing,
    wire_json,
)

Kernel = Callable[[pa.Array], FieldJson]
_BIG = 2**63


def _all_unsure(column: pa.Array) -> FieldJson:
    return FieldJson(pa.nulls(len(column), LS), valid(column))


def _lengths_ok(text: pa.Array, entry: rules.Field) -> np.ndarray:
    length = np.nan_to_num(pc.utf8_length(text).to_numpy(zero_copy_only=False), nan=-1)
    high = min(x for x in (entry.max_length, entry.max_stored_length, _BIG) if x is not None)
    ok: np.ndarray = (length >= (entry.min_length or 0)) & (length <= high)
    if entry.pattern is not None:
        ok &= np_mask(pc.match_substring_regex(text, entry.pattern))  # RE2 reads ECMA's $ alike
    if entry.enum:
        ok &= np_mask(pc.is_in(text, value_set=pa.array(entry.enum, LS)))
    return ok


# --- scalars -------------------------------------------------------------------------------------------
def string_kernel(entry: rules.Field) -> Kernel:
    """Text (integers written in decimal, as the row path does), within the entry's bounds."""

    def kernel(column: pa.Array) -> FieldJson:
        column = plain(column)
        t = column.type
        if is_text_type(t):
            text, present, settled = column, valid(column), valid(column)
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            values, present, settled = integers(column)
            text = int_text(values, settled)
        else:
            return _all_unsure(column)
        ok = settled & _lengths_ok(text, entry)
        return FieldJson(json_strings(text), present & ~ok)

    return kernel


def integer_kernel(entry: rules.Field) -> Kernel:
    """Integers (whole floats, decimals, digit text; dates and timestamps for Unix ms) within bounds."""
    low = entry.minimum if entry.minimum is not None else -_BIG
    # The rules' bound and Go's int64, whichever is lower.
    high = min(entry.maximum if entry.maximum is not None else INT64_MAX, INT64_MAX)
    dates = entry.unit == "unix_ms"

    def kernel(column: pa.Array) -> FieldJson:
        values, present, settled = integers(column, dates=dates)
        ok = settled & (values >= low) & (values <= high)
        return FieldJson(int_text(values, ok), present & ~ok)

    return kernel


def boolean_kernel(entry: rules.Field) -> Kernel:
    """Booleans, 0/1 numbers and the words the row path reads as true or false."""

    def kernel(column: pa.Array) -> FieldJson:
        column = plain(column)
        t = column.type
        present = valid(column)
        if pa.types.is_boolean(t):
            return FieldJson(pc.if_else(column, lit("true"), lit("false")), np.zeros(len(column), dtype=bool))
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            raw = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
            present = ~np.isnan(raw)
            true, false = raw == 1, raw == 0
        elif is_text_type(t):
            text = pc.utf8_lower(pc.utf8_trim(column, WS))
            true = np_mask(pc.is_in(text, value_set=pa.array(TRUE_TEXTS, LS)))
            false = np_mask(pc.is_in(text, value_set=pa.array(FALSE_TEXTS, LS)))
        else:
            return _all_unsure(column)
        words = pc.if_else(pa.array(true), lit("true"), lit("false"))
        return FieldJson(where(true | false, words), present & ~(true | false))

    return kernel


# --- values checked one row at a time, still without building the key ---------------------------------
def _each_row(column: pa.Array, field: str, convert: Converter, accept: Callable[[Any], bool]) -> FieldJson:
    """Any column, a row at a time: convert, check the field's value alone, serialise."""
    out: list[str | None] = []
    unsure = np.zeros(len(column), dtype=bool)
    for i, value in enumerate(column.to_pylist()):
        if is_missing(value):
            out.append(None)
            continue
        try:
            converted = convert(value, field)
            if not accept(converted):
                raise RowError(field)
            out.append(wire_json(converted))
        except (RowError, ValueError, TypeError):
            unsure[i] = True
            out.append(None)
    return FieldJson(pa.array(out, LS), unsure)


def _json_text(column: pa.Array, accept: Callable[[Any], bool]) -> FieldJson:
    """JSON text (``large_string``) that goes out as it came, where it parses strictly and ``accept``
    says the rules would take the decoded value."""
    texts = column.to_pylist()
    unsure = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if text is None:
            continue
        try:
            obj = decode_for_check(text)
        except (ValueError, RecursionError):
            unsure[i] = True
            continue
        if not accept(obj):
            unsure[i] = True
    return FieldJson(column, unsure)


def object_kernel(entry: rules.Field) -> Kernel:
    """A JSON object: JSON text, an Arrow struct or map, checked by the rules' fast check."""
    accept = rules.value_ok(entry.path)
    convert = converter_for(entry, ",")

    def kernel(column: pa.Array) -> FieldJson:
        column = plain(column)
        if is_text_type(column.type):
            return _json_text(column, accept)
        return _each_row(column, entry.path, convert, accept)

    return kernel


# --- arrays ----------------------------------------------------------------------------------------------
def _list_values(
    column: pa.Array, delimiter: str
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray] | None:
    """Items of a list column (or of delimited / JSON text) with each item's row, as the row path splits them.

    :return: ``values`` (``large_string``), ``parents``, ``present`` and ``unsure`` rows; ``None`` for
        a column type the column-wise path does not convert.
    """
    column = plain(column)
    t = column.type
    present = valid(column)
    unsure = np.zeros(len(column), dtype=bool)
    if is_list_type(t):
        values = plain(pc.list_flatten(column))
        if pa.types.is_null(values.type):
            values = values.cast(LS)
        if not pa.types.is_large_string(values.type):
            return None
        return values, pc.list_parent_indices(column).to_numpy().astype(np.int64), present, unsure
    if not is_text_type(t):
        return None
    text = pc.utf8_trim(column, WS)
    is_json = np_mask(pc.starts_with(text, "["))
    split = pc.split_pattern(where(~is_json, text), delimiter)
    parts = pc.utf8_trim(pc.list_flatten(split), WS)
    keep = np_mask(pc.greater(pc.utf8_length(parts), 0))
    values = parts.filter(pa.array(keep))
    parents = pc.list_parent_indices(split).to_numpy().astype(np.int64)[keep]
    if is_json.any():
        extra: list[Any] = []
        extra_parents: list[int] = []
        rows = np.flatnonzero(is_json)
        for i, item in zip(rows.tolist(), text.take(pa.array(rows)).to_pylist(), strict=True):
            try:
                decoded = decode_for_check(item)
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
        values = pa.concat_arrays([values, pa.array(extra, LS)])
        parents = np.concatenate([parents, np.asarray(extra_parents, dtype=np.int64)])
        order = np.argsort(parents, kind="stable")
        values, parents = values.take(pa.array(order)), parents[order]
    return values, parents, present, unsure


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


def string_array_kernel(entry: rules.Field, delimiter: str) -> Kernel:
    """A list of strings: an Arrow list, delimited text or a JSON array in text."""
    item = rules.field(f"{entry.path}[]")
    max_items = entry.max_items if entry.max_items is not None else _BIG
    convert = converter_for(entry, delimiter)
    accept = rules.value_ok(entry.path)

    def kernel(column: pa.Array) -> FieldJson:
        listed = _list_values(column, delimiter)
        if listed is None:
            return _each_row(column, entry.path, convert, accept)
        values, parents, present, unsure = listed
        n = len(column)
        counts = np.bincount(parents, minlength=n)
        good = valid(values) & _lengths_ok(values, item)
        unsure = unsure | (counts > max_items)
        unsure[parents[~good]] = True
        if entry.unique_items is not None:
            unsure[duplicated_parents(values, parents)] = True  # the server answers 500
        joined = join_lists(counts, json_strings(pc.fill_null(values, "")))
        return FieldJson(where(present, joined), present & unsure)

    return kernel


_SCALAR_TYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "string": lambda t: is_text_type(t) or (pa.types.is_dictionary(t) and is_text_type(t.value_type)),
    "integer": pa.types.is_integer,
    "boolean": pa.types.is_boolean,
}


def object_array_kernel(entry: rules.Field) -> Kernel:
    """A list of objects of scalar members: an Arrow list of structs, or JSON text."""
    members = [rules.field(f"{entry.path}[].{name}") for name in _item_members(entry.path)]
    kernels = {m.name: _SCALAR_KERNELS[m.type](m) for m in members}
    max_items = entry.max_items if entry.max_items is not None else _BIG
    fast = rules.value_ok(entry.path)
    convert = converter_for(entry, ",")

    def accept(value: Any) -> bool:
        # The row path drops null members before the rules see them: leave such items to it.
        return fast(value) and all(None not in item.values() for item in value)

    def structs_fit(t: pa.DataType) -> bool:
        item_type = t.value_type if is_list_type(t) else None
        if item_type is None or not pa.types.is_struct(item_type):
            return False
        names = {item_type.field(i).name for i in range(item_type.num_fields)}
        return names == {m.name for m in members} and all(
            _SCALAR_TYPES[m.type](item_type.field(m.name).type) for m in members
        )

    def kernel(column: pa.Array) -> FieldJson:
        if not structs_fit(column.type):
            column = plain(column)
            if is_text_type(column.type):
                return _json_text(column, accept)
            return _each_row(column, entry.path, convert, accept)
        n = len(column)
        present = valid(column)
        items = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy().astype(np.int64)
        good = valid(items)
        fields: list[tuple[str, pa.Array]] = []
        for m in members:
            converted = kernels[m.name](pc.struct_field(items, m.name))
            if m.required:
                good &= valid(converted.json)
            good &= ~converted.unsure
            fields.append((m.name, converted.json))
        counts = np.bincount(parents, minlength=n)
        unsure = counts > max_items
        unsure[parents[~good]] = True
        item_json = object_of(fields, np.ones(len(items), dtype=bool), first_required=members[0].required)
        joined = join_lists(counts, pc.fill_null(item_json, "{}"))
        return FieldJson(where(present, joined), present & unsure)

    return kernel


def _item_members(path: str) -> list[str]:
    prefix = f"{path}[]."
    return [f.path[len(prefix) :] for f in rules.KEY_FIELD_TABLE if f.path.startswith(prefix)]


_SCALAR_KERNELS: dict[str, Callable[[rules.Field], Kernel]] = {
    "string": string_kernel,
    "integer": integer_kernel,
    "boolean": boolean_kernel,
}


def kernel_for(entry: rules.Field, list_delimiter: str) -> Kernel:
    """The kernel for a mappable field, by its JSON type (and, for arrays, its items' type)."""
    if entry.type in _SCALAR_KERNELS:
        return _SCALAR_KERNELS[entry.type](entry)
    if entry.type == "object":
        return object_kernel(entry)
    if entry.type == "array":
        if rules.field(f"{entry.path}[]").type == "object":
            return object_array_kernel(entry)
        return string_array_kernel(entry, list_delimiter)
    raise AssertionError(entry.type)  # pragma: no cover - JsonType is closed
