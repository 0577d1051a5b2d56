"""The rules of Unkey's ``keys.migrateKeys`` request, in one place.

Written from Unkey's OpenAPI description (``V2KeysMigrateKeysRequestBody`` and the schemas it
references) and from what the real server does beyond the schema. Nothing here reads the spec at run
time: users do not have it. A differential test (``tests/test_rules_differential.py``) proves that
:func:`schema_violations` accepts a body exactly when the published spec does.

* :mod:`.fields` — the table of the key's fields (:data:`KEY_FIELD_TABLE`), which everything reads;
* :mod:`.check` — the checks of a key or a body, schema and server, read from the table;
* :mod:`.codegen` — compiles the table into the fast checks that :mod:`.check` runs;
* :mod:`.formats` — hash formats and migration algorithms;
* :mod:`.docs` — the field table of ``docs/api-rules.md``, generated from the table.

The emulator answers by these rules and the operator's validation rejects rows by them, so a row
the operator lets through is a row the server accepts.
"""

from __future__ import annotations

from airflow_provider_unkey.rules.check import (
    Violation,
    key_schema_violations,
    key_server_violations,
    null_remaining_violation,
    null_violation,
    schema_violations,
    server_violations,
    value_ok,
)
from airflow_provider_unkey.rules.fields import (
    CREDITS_MAX,
    FIELDS,
    ID_MAX_LENGTH,
    ID_MIN_LENGTH,
    INT64_MAX,
    KEY_FIELD_TABLE,
    KEY_FIELDS,
    MAPPABLE_PATHS,
    Field,
    JsonType,
    field,
    members,
)
from airflow_provider_unkey.rules.formats import (
    ALGORITHM_ALIASES,
    ALGORITHM_SEAM,
    ALGORITHM_SHA256,
    HASH_FORMAT_TABLE,
    HASH_FORMATS,
    SHA256_BASE64_LAST_CHARS,
    SHA256_BASE64_RE,
    SHA256_HEX_RE,
    WIRE_FORMATS,
    HashFormat,
    canonical_algorithm,
)

# --- limits beyond the key object (BEHAVIOUR.md) -----------------------------------------------------
#: Request bodies above this are refused with 413.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: The server's own timeout for one request (then 408).
SERVER_TIMEOUT_SECONDS = 60.0

__all__ = [
    "ALGORITHM_ALIASES",
    "ALGORITHM_SEAM",
    "ALGORITHM_SHA256",
    "CREDITS_MAX",
    "FIELDS",
    "HASH_FORMATS",
    "HASH_FORMAT_TABLE",
    "ID_MAX_LENGTH",
    "ID_MIN_LENGTH",
    "INT64_MAX",
    "KEY_FIELDS",
    "KEY_FIELD_TABLE",
    "MAPPABLE_PATHS",
    "MAX_BODY_BYTES",
    "SERVER_TIMEOUT_SECONDS",
    "SHA256_BASE64_LAST_CHARS",
    "SHA256_BASE64_RE",
    "SHA256_HEX_RE",
    "WIRE_FORMATS",
    "Field",
    "HashFormat",
    "JsonType",
    "Violation",
    "canonical_algorithm",
    "field",
    "key_schema_violations",
    "key_server_violations",
    "members",
    "null_remaining_violation",
    "null_violation",
    "schema_violations",
    "server_violations",
    "value_ok",
]
