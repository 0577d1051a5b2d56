"""Hash formats and migration algorithms: what a key's ``hash`` holds, by the migration's algorithm.

A migration id names its algorithm. ``sha256`` (Unkey's native) takes the standard padded base64 of
the SHA-256 digest of the whole key; the seam algorithm (``github.com/seamapi/prefixed-api-key``)
takes the lowercase hex SHA-256 of the key's long token. The vectorised checks in
:mod:`airflow_provider_unkey.migration.prepare.hashes` and the preparer's messages read these entries.

The table holds the text Unkey takes. A source may also hold the raw 32-byte digest in a binary
column (``sha256_binary``); that is a source format only, never on the wire, so it is defined in
:mod:`airflow_provider_unkey.migration.prepare.hashes` and not here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HashFormat:
    """One way of writing a SHA-256 digest as text.

    :param name: the ``hash_format`` setting's value.
    :param width: characters per hash.
    :param pattern: the whole hash, as an RE2 / ECMA-262 pattern (``$`` is the very end).
    :param description: how it looks, for a person.
    :param canonical_last: base64 only: the characters the last one before ``=`` may be.
    """

    name: str
    width: int
    pattern: str
    description: str
    canonical_last: frozenset[str] | None = None

    @property
    def regex(self) -> re.Pattern[str]:
        """``pattern`` for Python's ``re`` (``\\Z``, since Python's ``$`` also matches before a final newline)."""
        return re.compile(self.pattern.removeprefix("^").removesuffix("$") + r"\Z")


#: 32 bytes are 256 bits: the 43rd base64 character carries the last 4 bits and two zero bits, so it is
#: one of these 16; a hash of the base64 shape with any other one is the base64 of no SHA-256 digest.
SHA256_BASE64_LAST_CHARS = frozenset("AEIMQUYcgkosw048")

HASH_FORMAT_TABLE: Mapping[str, HashFormat] = {
    "sha256_base64": HashFormat(
        "sha256_base64",
        44,
        r"^[A-Za-z0-9+/]{43}=$",
        "44 characters of standard base64 ending in '='",
        SHA256_BASE64_LAST_CHARS,
    ),
    "sha256_hex": HashFormat("sha256_hex", 64, r"^[0-9a-fA-F]{64}$", "64 hex characters"),
}
HASH_FORMATS: tuple[str, ...] = tuple(HASH_FORMAT_TABLE)
SHA256_BASE64_RE = HASH_FORMAT_TABLE["sha256_base64"].regex
SHA256_HEX_RE = HASH_FORMAT_TABLE["sha256_hex"].regex

ALGORITHM_SHA256 = "sha256"
ALGORITHM_SEAM = "github.com/seamapi/prefixed-api-key"
#: A migration's algorithm by the names users give it; ``seam`` is a short alias.
ALGORITHM_ALIASES: Mapping[str, str] = {
    ALGORITHM_SHA256: ALGORITHM_SHA256,
    ALGORITHM_SEAM: ALGORITHM_SEAM,
    "seam": ALGORITHM_SEAM,
}
#: The hash format each algorithm expects on the wire (hex is written lowercase).
WIRE_FORMATS: Mapping[str, str] = {ALGORITHM_SHA256: "sha256_base64", ALGORITHM_SEAM: "sha256_hex"}


def canonical_algorithm(algorithm: str) -> str:
    """A migration algorithm's canonical name (``sha256`` or the seam one; ``seam`` is an alias).

    :raises ValueError: for any other name.
    """
    try:
        return ALGORITHM_ALIASES[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown migration algorithm {algorithm!r}: use 'sha256' (Unkey's native) or "
            f"'{ALGORITHM_SEAM}' (alias 'seam')"
        ) from None
