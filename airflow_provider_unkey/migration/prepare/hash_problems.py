"""What is wrong with a hash that does not fit its format, in words that say what to set.

Nothing here imports Airflow. :class:`~airflow_provider_unkey.migration.prepare.preparer.KeyPreparer`
checks the hash column on whole arrays; only the rows that fail come here for their detail.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare import hashes
from airflow_provider_unkey.migration.prepare.arrow_json import np_mask

__all__ = ["hash_problems"]


def hash_problems(raw: pa.Array, ok: pa.BooleanArray, hash_format: str) -> list[str | None]:
    """A detail for each row whose hash does not fit ``hash_format`` (None where it does).

    :param hash_format: the format the column is read as (:func:`hashes.column_format`).
    """
    if hash_format == hashes.SHA256_BINARY:
        return _binary_problems(raw, ok)
    details: list[str | None] = []
    declared = rules.HASH_FORMAT_TABLE[hash_format]
    others = [f for f in rules.HASH_FORMAT_TABLE.values() if f is not declared]
    for value, good in zip(raw.to_pylist(), ok.to_pylist(), strict=True):
        if good:
            details.append(None)
        elif value is None or value == "":
            details.append("hash: is missing")
        elif declared.regex.match(value):
            # The shape fits but the value is not canonical (base64 with stray bits).
            details.append("hash: is not canonical base64 (its last character before '=' has stray bits)")
        elif other := next((f for f in others if f.regex.match(value)), None):
            details.append(_wrong_format(declared, other))
        else:
            details.append(
                f"hash: is not a SHA-256 digest in {declared.name} ({declared.description}); "
                f"got {len(value)} characters"
            )
    return details


def _binary_problems(raw: pa.Array, ok: pa.BooleanArray) -> list[str | None]:
    """:func:`hash_problems` for a column read as ``sha256_binary``.

    A binary value must be 32 bytes. Hex or base64 text stored in a binary column (a ``VARBINARY(64)``)
    is named as such; a text column under ``hash_format='sha256_binary'`` gets the setting that fits it.
    """
    details: list[str | None] = [None] * len(raw)
    bad = np.flatnonzero(~np_mask(ok))
    values = raw.take(pa.array(bad, pa.int64())).to_pylist()
    for i, value in zip(bad.tolist(), values, strict=True):
        if value is None or len(value) == 0:
            details[i] = "hash: is missing"
        elif isinstance(value, str):
            other = next((f for f in rules.HASH_FORMAT_TABLE.values() if f.regex.match(value)), None)
            details[i] = (
                f"hash: is {other.name.removeprefix('sha256_')} text, but hash_format is "
                f"{hashes.SHA256_BINARY} (raw 32-byte digests in a binary column); set hash_format='{other.name}'"
                if other is not None
                else f"hash: is not a SHA-256 digest in {hashes.SHA256_BINARY} (32 bytes in a binary "
                f"column); got text of {len(value)} characters"
            )
        else:
            details[i] = (
                f"hash: is {len(value)} bytes, a SHA-256 digest is {hashes.DIGEST_SIZE}" + _text_hint(value)
            )
    return details


def _text_hint(value: bytes) -> str:
    """A hint when the bytes of a binary hash are a text format's hash (hex kept in a VARBINARY(64))."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return ""
    other = next((f for f in rules.HASH_FORMAT_TABLE.values() if f.regex.match(text)), None)
    if other is None:
        return ""
    return (
        f" (they are {other.name.removeprefix('sha256_')} text: read the column as text, "
        f"with hash_format='{other.name}')"
    )


def _wrong_format(declared: rules.HashFormat, other: rules.HashFormat) -> str:
    if declared.name == "sha256_base64":
        return (
            "hash: is hex, but hash_format is sha256_base64; set hash_format='sha256_hex' "
            "(it is converted losslessly for a sha256 migration)"
        )
    return f"hash: is {other.name.removeprefix('sha256_')}, but hash_format is {declared.name}; set hash_format='{other.name}'"
