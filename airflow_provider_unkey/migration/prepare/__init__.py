"""Prepare: turn a source's Arrow record batches into valid key objects, ready to send.

Nothing here imports Airflow. :func:`resolve_mapping` maps Unkey's key fields to the source's
columns; :class:`KeyPreparer` then returns, for each record batch, the valid rows as
:class:`PreparedRows` (the hash as it goes on the wire, its 32-byte digest, the key object as compact
JSON) and the others as :class:`Rejects`, each with a detail naming its row and field. The hash
helpers (:func:`wire_format`, :func:`column_format`, :func:`digests`, :func:`format_mask`) convert
between the formats a source may hold and the one Unkey takes, on whole arrays.

The work is split by job: ``mapping`` (columns to fields), ``hashes`` (vectorised hash formats),
``kernels`` and ``arrow_json`` (each JSON type's vectorised check and serialisation), ``row_values``
(the reference conversion of one value), and ``preparer`` (the pipeline of one batch).
"""

from __future__ import annotations

from airflow_provider_unkey.migration.prepare.hashes import (
    HASH_FORMATS,
    SHA256_BINARY,
    HashFormat,
    column_format,
    digests,
    format_mask,
    wire_format,
)
from airflow_provider_unkey.migration.prepare.preparer import (
    KEY_FIELD_PATHS,
    KeyPreparer,
    MappingError,
    PreparedRows,
    Rejects,
    resolve_mapping,
)

__all__ = [
    "HASH_FORMATS",
    "KEY_FIELD_PATHS",
    "SHA256_BINARY",
    "HashFormat",
    "KeyPreparer",
    "MappingError",
    "PreparedRows",
    "Rejects",
    "column_format",
    "digests",
    "format_mask",
    "resolve_mapping",
    "wire_format",
]
