"""One value at a time: the reference conversions of a source value to its key field (the row path).

The column-wise kernels (:mod:`.kernels`) convert whole columns and must agree with these; rows they
cannot settle come here, and the rules (:mod:`airflow_provider_unkey.rules`) judge the result. The
conversion for a field is chosen from its JSON type in the field table (:func:`converter_for`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from airflow_provider_unkey import rules

Converter = Callable[[Any, str], Any]


class RowError(ValueError):
    """A value that cannot become its field; the message names the field."""


#: Trimmed around text values on both paths (ASCII whitespace: both paths agree on what it is).
WS = " \t\n\r\x0b\x0c"
INT_TEXT = re.compile(r"-?[0-9]+\Z")  # ASCII digits only: int() would also take '²' or '٣'
TRUE_TEXTS = ("true", "1", "t", "yes")
FALSE_TEXTS = ("false", "0", "f", "no")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def _to_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise RowError(f"{field}: must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # pandas writes nullable integer columns as float64; accept whole numbers.
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise RowError(f"{field}: must be an integer, got {value!r}")
    if isinstance(value, decimal.Decimal):
        # SQL NUMERIC columns arrive as decimals.
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        raise RowError(f"{field}: must be an integer, got {value}")
    if isinstance(value, str):
        text = value.strip(WS)
        if INT_TEXT.match(text):
            return int(text)
    raise RowError(f"{field}: must be an integer, got {value!r}")


def _to_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip(WS).lower()
        if text in TRUE_TEXTS or text in FALSE_TEXTS:
            return text in TRUE_TEXTS
    raise RowError(f"{field}: must be true or false, got {value!r}")


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


def decode_for_check(text: str) -> Any:
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


def decode_strict(text: str, field: str) -> Any:
    try:
        return _STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"{field}: is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError as exc:
        raise RowError(f"{field}: is not valid JSON ({exc})") from None
    except RecursionError:
        raise RowError(f"{field}: is not valid JSON (nested too deeply)") from None


def _json_safe(value: Any, field: str) -> Any:
    """``value`` with what JSON cannot hold converted (dates, decimals) or refused (NaN, bytes)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise RowError(f"{field}: holds {value!r}, which JSON cannot carry")
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
    raise RowError(f"{field}: holds a {type(value).__name__}, which JSON cannot carry")


def _to_json_object(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return decode_strict(value, field)
    if isinstance(value, list) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        value = dict(value)  # an Arrow map column
    return _json_safe(value, field)


def _to_string_list(delimiter: str) -> Callable[[Any, str], Any]:
    def convert(value: Any, field: str) -> Any:
        if isinstance(value, str):
            stripped = value.strip(WS)
            if stripped.startswith("["):
                return decode_strict(stripped, field)
            return [part.strip(WS) for part in stripped.split(delimiter) if part.strip(WS)]
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
    if isinstance(value, str) and not INT_TEXT.match(value.strip(WS)):
        # ISO 8601 text, as SQLite and CSV exports keep timestamps.
        try:
            parsed = dt.datetime.fromisoformat(value.strip(WS))
        except ValueError:
            raise RowError(
                f"{field}: must be a timestamp, Unix milliseconds or ISO 8601 text, got {value!r}"
            ) from None
        return _to_expires(parsed, field)
    return _to_int(value, field)


def _to_object_list(value: Any, field: str) -> Any:
    # Not _to_json_object: it would read an empty list as an empty Arrow map, {}.
    # Null members are dropped: a source with a struct column gives every item every member.
    value = decode_strict(value, field) if isinstance(value, str) else _json_safe(value, field)
    if isinstance(value, list):
        return [
            {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
            for item in value
        ]
    return value


def wire_json(value: Any) -> str:
    """Compact JSON as the wire carries it: UTF-8 as is, no NaN."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a JSON escape such as "\ud800") has no UTF-8: escape it instead.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def converter_for(entry: rules.Field, list_delimiter: str) -> Converter:
    """How a source value becomes the field ``entry`` describes, by its JSON type.

    :param entry: a mappable field of the key (see :data:`rules.MAPPABLE_PATHS`).
    :param list_delimiter: separates the items of a list held in one text value.
    """
    if entry.type == "string":
        return _to_text
    if entry.type == "integer":
        return _to_expires if entry.unit == "unix_ms" else _to_int
    if entry.type == "boolean":
        return _to_bool
    if entry.type == "object":
        return _to_json_object
    if entry.type == "array":
        item = rules.field(f"{entry.path}[]")
        if item.type == "object":
            return _to_object_list
        return _to_string_list(list_delimiter)
    raise AssertionError(entry.type)  # pragma: no cover - JsonType is closed
