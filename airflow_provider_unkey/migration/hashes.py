"""Vectorised hash handling: check a column's format, extract binary digests, write the wire format.

A source column holds SHA-256 digests as standard padded base64 (``sha256_base64``, Unkey's native
format) or as hex (``sha256_hex``). What goes on the wire depends on the migration's algorithm:
base64 for ``sha256``, lowercase hex for the seam algorithm (``github.com/seamapi/prefixed-api-key``).
Conversion between the two is lossless, and is done on whole arrays with NumPy, not row by row.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_unkey.rules import HASH_FORMAT_TABLE, HASH_FORMATS, WIRE_FORMATS, canonical_algorithm

__all__ = [
    "HASH_FORMATS",
    "HashFormat",
    "canonical_algorithm",
    "digests",
    "encode",
    "format_mask",
    "wire_format",
]

HashFormat = Literal["sha256_base64", "sha256_hex"]
DIGEST_SIZE = 32
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


def _text(hashes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array of plain text (regex kernels take neither dictionaries nor string views)."""
    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    if pa.types.is_dictionary(hashes.type):
        hashes = hashes.dictionary_decode()
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(hashes.type):
        hashes = hashes.cast(pa.large_string())
    return hashes


def _fixed_width_chars(strings: pa.Array, width: int) -> np.ndarray:
    """The bytes of ``strings`` (each exactly ``width`` ASCII bytes, no nulls) as an ``(n, width)`` view."""
    binary = pc.cast(strings, pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset : binary.offset + len(binary) + 1
    ]
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return data.reshape(len(binary), width)


def format_mask(hashes: pa.Array | pa.ChunkedArray, hash_format: str) -> pa.BooleanArray:
    """True where a hash has the declared format (nulls are false).

    Base64 must also be canonical: its last character before ``=`` encodes two zero bits, so that one
    digest has exactly one spelling (Unkey compares hashes as strings).

    :param hashes: text (``string``, ``large_string``, ``string_view`` or dictionary-encoded text),
        sliced or chunked.
    :param hash_format: ``sha256_base64`` or ``sha256_hex``.
    """
    hashes = _text(hashes)
    if hash_format == "sha256_base64":
        mask = pc.fill_null(pc.match_substring_regex(hashes, _BASE64.pattern), False)
        # Canonical: the 43rd character is one of the 16 with the low two bits zero.
        last = pc.utf8_slice_codeunits(hashes, 42, 43)
        canonical = pc.fill_null(pc.match_substring_regex(last, _CANONICAL_LAST_RE), False)
        return pc.and_(mask, canonical)
    if hash_format == "sha256_hex":
        return pc.fill_null(pc.match_substring_regex(hashes, _HEX.pattern), False)
    raise ValueError(f"unknown hash_format {hash_format!r}: use one of {', '.join(HASH_FORMATS)}")


def digests(hashes: pa.Array | pa.ChunkedArray, hash_format: str) -> np.ndarray:
    """Binary digests, shape ``(n, 32)`` ``uint8``, of hashes that all passed :func:`format_mask`."""
    hashes = _text(hashes)
    n = len(hashes)
    if n == 0:
        return np.zeros((0, DIGEST_SIZE), dtype=np.uint8)
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

    :return: a ``string`` array (``large_string`` past 2 GiB of text).
    """
    n = len(digest_rows)
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
