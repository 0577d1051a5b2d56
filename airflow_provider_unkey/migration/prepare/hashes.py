"""Vectorised hash handling: check a column's format, extract binary digests, write the wire format.

A source column holds SHA-256 digests as standard padded base64 (``sha256_base64``, Unkey's native
format), as hex (``sha256_hex``) or as the raw 32 bytes (``sha256_binary``: a ``BYTEA`` or
``BINARY(32)`` column, Arrow ``binary``, ``large_binary``, ``binary_view`` or ``fixed_size_binary``).
What goes on the wire depends on the migration's algorithm: base64 for ``sha256``, lowercase hex for
the seam algorithm (``github.com/seamapi/prefixed-api-key``). Conversion between them is lossless, and
is done on whole arrays with NumPy, not row by row.

A binary column is read as raw digests whatever ``hash_format`` says: its type says what it holds,
and bytes are never base64 or hex text. ``sha256_binary`` is not one of the rules' formats
(:data:`~airflow_provider_unkey.rules.HASH_FORMAT_TABLE` lists the text Unkey takes); it exists so
that a user can say so where the column's type is not known in advance (SQL partitions).
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare.arrow_json import is_binary_type
from airflow_provider_unkey.rules import HASH_FORMAT_TABLE, WIRE_FORMATS, canonical_algorithm

__all__ = [
    "HASH_FORMATS",
    "SHA256_BINARY",
    "HashFormat",
    "canonical_algorithm",
    "column_format",
    "digests",
    "encode",
    "format_mask",
    "readable",
    "wire_format",
]

HashFormat = Literal["sha256_base64", "sha256_hex"]
DIGEST_SIZE = 32
#: The raw 32-byte digest in a binary column.
SHA256_BINARY = "sha256_binary"
#: What a source's hash column may hold: the rules' text formats, and the raw digest.
HASH_FORMATS: tuple[str, ...] = (*rules.HASH_FORMATS, SHA256_BINARY)
_BASE64 = HASH_FORMAT_TABLE["sha256_base64"]
_HEX = HASH_FORMAT_TABLE["sha256_hex"]
_CANONICAL_LAST_RE = "^[" + "".join(sorted(_BASE64.canonical_last or ())) + "]$"
_HEX_LOOKUP = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LOOKUP[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LOOKUP[_c] = 10 + _i
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def wire_format(algorithm: str) -> HashFormat:
    """The hash format Unkey expects on the wire for a migration of ``algorithm``."""
    return WIRE_FORMATS[canonical_algorithm(algorithm)]  # type: ignore[return-value]


def column_format(column_type: pa.DataType, hash_format: str) -> str:
    """The format a hash column of ``column_type`` is read as: ``sha256_binary`` for any binary type
    (dictionary-encoded too), else ``hash_format``."""
    value_type = column_type.value_type if pa.types.is_dictionary(column_type) else column_type
    return SHA256_BINARY if is_binary_type(value_type) else hash_format


def _text(hashes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array of plain text (regex kernels take neither dictionaries nor string views);
    binary as ``large_binary`` (kernels such as ``binary_length`` take no views, and one offset
    layout serves every binary type)."""
    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    if pa.types.is_dictionary(hashes.type):
        hashes = hashes.dictionary_decode()
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(hashes.type):
        hashes = hashes.cast(pa.large_string())
    if is_binary_type(hashes.type) and not pa.types.is_large_binary(hashes.type):
        hashes = hashes.cast(pa.large_binary())
    return hashes


def _bytes_of(binary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (``int64``, relative to the first value) and the data of a ``large_binary`` array."""
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset : binary.offset + len(binary) + 1
    ]
    data_buffer = binary.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[int(offsets[0]) : int(offsets[-1])]


def _fixed_width_chars(strings: pa.Array, width: int) -> np.ndarray:
    """The bytes of ``strings`` (each exactly ``width`` ASCII bytes, no nulls) as an ``(n, width)`` view."""
    _, data = _bytes_of(pc.cast(strings, pa.large_binary()))
    return data.reshape(len(strings), width)


def format_mask(hashes: pa.Array | pa.ChunkedArray, hash_format: str) -> pa.BooleanArray:
    """True where a hash has the declared format (nulls are false).

    Base64 must also be canonical: its last character before ``=`` encodes two zero bits, so that one
    digest has exactly one spelling (Unkey compares hashes as strings). A binary column holds a digest
    where a value is exactly 32 bytes, whatever ``hash_format`` says; a text column is never
    ``sha256_binary``.

    :param hashes: text (``string``, ``large_string``, ``string_view``) or binary (``binary``,
        ``large_binary``, ``binary_view``, ``fixed_size_binary``), maybe dictionary-encoded, sliced or
        chunked.
    :param hash_format: one of :data:`HASH_FORMATS`.
    """
    if hash_format not in HASH_FORMATS:
        raise ValueError(f"unknown hash_format {hash_format!r}: use one of {', '.join(HASH_FORMATS)}")
    hashes = _text(hashes)
    if is_binary_type(hashes.type):
        return pc.fill_null(pc.equal(pc.binary_length(hashes), DIGEST_SIZE), False)
    if hash_format == SHA256_BINARY:
        return pa.array(np.zeros(len(hashes), dtype=bool))
    if hash_format == "sha256_base64":
        mask = pc.fill_null(pc.match_substring_regex(hashes, _BASE64.pattern), False)
        # Canonical: the 43rd character is one of the 16 with the low two bits zero.
        last = pc.utf8_slice_codeunits(hashes, 42, 43)
        canonical = pc.fill_null(pc.match_substring_regex(last, _CANONICAL_LAST_RE), False)
        return pc.and_(mask, canonical)
    return pc.fill_null(pc.match_substring_regex(hashes, _HEX.pattern), False)


def digests(hashes: pa.Array | pa.ChunkedArray, hash_format: str) -> np.ndarray:
    """Binary digests, shape ``(n, 32)`` ``uint8``, of hashes that all passed :func:`format_mask`
    (a binary column's values are the digests, whatever ``hash_format`` says)."""
    hashes = _text(hashes)
    n = len(hashes)
    if n == 0:
        return np.zeros((0, DIGEST_SIZE), dtype=np.uint8)
    if is_binary_type(hashes.type):
        _, data = _bytes_of(hashes)
        return data.reshape(n, DIGEST_SIZE)
    if hash_format == "sha256_base64":
        chars = _fixed_width_chars(hashes, _BASE64.width).copy()
        # 32 bytes are 43 characters and one '='; read them as 33 bytes whose last is zero.
        chars[:, 43] = ord("A")
        decoded = np.frombuffer(base64.b64decode(chars.tobytes(), validate=True), dtype=np.uint8)
        return decoded.reshape(n, 33)[:, :DIGEST_SIZE]
    if hash_format == "sha256_hex":
        nibbles = _HEX_LOOKUP[_fixed_width_chars(hashes, _HEX.width)]
        packed: np.ndarray = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
        return packed
    raise ValueError(f"unknown hash_format {hash_format!r}")


def encode(digest_rows: np.ndarray, hash_format: str) -> pa.Array:
    """Write ``(n, 32)`` digests as hash strings of ``hash_format`` (hex is lowercase).

    :return: a ``string`` array (``large_string`` past 2 GiB of text); for ``sha256_binary`` a
        ``fixed_size_binary(32)`` array.
    """
    n = len(digest_rows)
    if hash_format == SHA256_BINARY:
        raw = np.ascontiguousarray(digest_rows, dtype=np.uint8)
        return pa.Array.from_buffers(pa.binary(DIGEST_SIZE), n, [None, pa.py_buffer(raw.tobytes())])
    if hash_format == "sha256_base64":
        padded = np.zeros((n, 33), dtype=np.uint8)
        padded[:, :DIGEST_SIZE] = digest_rows
        chars = np.frombuffer(base64.b64encode(padded.tobytes()), dtype=np.uint8).reshape(n, 44).copy()
        chars[:, 43] = ord("=")
        width = 44
    elif hash_format == "sha256_hex":
        chars = np.empty((n, 64), dtype=np.uint8)
        chars[:, 0::2] = _HEX_DIGITS[digest_rows >> 4]
        chars[:, 1::2] = _HEX_DIGITS[digest_rows & 0x0F]
        width = 64
    else:
        raise ValueError(f"unknown hash_format {hash_format!r}")
    # 32-bit offsets hold 2 GiB of text (33 million hex hashes); beyond that, 64-bit ones.
    large = width * n >= 2**31
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int64 if large else np.int32)
    text_type = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(text_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])


def readable(hashes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Hashes as a person reads them in an output: text as it is, binary as lowercase hex (any length).

    :return: text for text; ``large_string`` hex for binary, null where the value is.
    """
    hashes = _text(hashes)
    if not is_binary_type(hashes.type):
        return hashes
    offsets, data = _bytes_of(hashes)
    chars = np.empty(2 * len(data), dtype=np.uint8)
    chars[0::2] = _HEX_DIGITS[data >> 4]
    chars[1::2] = _HEX_DIGITS[data & 0x0F]
    validity = hashes.buffers()[0]
    if validity is not None and hashes.offset:
        validity = pc.is_valid(hashes).buffers()[1]  # a bitmap that starts at this slice's first value
    return pa.Array.from_buffers(
        pa.large_string(),
        len(hashes),
        [validity, pa.py_buffer(2 * offsets), pa.py_buffer(chars.tobytes())],
        null_count=hashes.null_count,
    )
