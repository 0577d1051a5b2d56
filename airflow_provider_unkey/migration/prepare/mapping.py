"""Which source column feeds which key field: the column mapping, checked against the source's schema."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from airflow_provider_unkey import rules
from airflow_provider_unkey.migration.prepare.arrow_json import is_binary_type, is_text_type

#: The key object's fields a column can map to, from the rules' field table: whole values, with
#: ``credits`` as its members' dotted paths.
KEY_FIELD_PATHS: tuple[str, ...] = rules.MAPPABLE_PATHS


class MappingError(ValueError):
    """The column mapping does not fit the source (unknown field, missing column, wrong type)."""


def _needs(mapped: set[str]) -> dict[str, list[str]]:
    """Required fields that must be mapped with the mapped ones: ``{missing: [fields needing it]}``.

    A field inside an object the key assembles from several columns (``credits``) needs that object's
    required members whose absence the server would read as a null it refuses (``credits.remaining``
    with a refill): without their column, every row with the field would fail. A missing column for
    any other required member leaves the rows that need it to be rejected by name.
    """
    needs: dict[str, list[str]] = {}
    for path in sorted(mapped, key=KEY_FIELD_PATHS.index):
        parent = rules.field(path).parent
        while parent:
            for entry in rules.KEY_FIELD_TABLE:
                needed = entry.parent == parent and entry.required and entry.null_status is not None
                if needed and entry.path not in mapped and path not in needs.setdefault(entry.path, []):
                    needs[entry.path].append(path)
            parent = rules.field(parent).parent
    return {missing: fields for missing, fields in needs.items() if fields}


def resolve_mapping(column_mapping: Mapping[str, str] | None, schema: pa.Schema) -> dict[str, str]:
    """Which source column feeds which key field.

    :param column_mapping: Unkey field path -> source column. ``None`` maps every field to a column of
        the same name, where one exists.
    :param schema: the source's schema.
    :raises MappingError: for an unknown field, a column the source lacks, no ``hash``, a field whose
        object needs a required member that is not mapped (a refill without ``credits.remaining``), or
        a hash column that holds neither text nor binary digests.
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
    needs = _needs(set(mapping))
    if needs:
        # Outermost first: a refill needs credits.remaining before it needs its own interval.
        raise MappingError(
            "; ".join(
                f"{fields} need {required!r} mapped too (Unkey requires it with them)"
                for required, fields in sorted(needs.items(), key=lambda item: item[0].count("."))
            )
        )
    hash_type = schema.field(mapping["hash"]).type
    # A dictionary column is text only if its values are (an int-valued dictionary is not a hash).
    value_type = hash_type.value_type if pa.types.is_dictionary(hash_type) else hash_type
    if not (is_text_type(value_type) or is_binary_type(value_type)):
        raise MappingError(
            f"the hash column {mapping['hash']!r} must hold text (base64 or hex) or binary digests, "
            f"not {hash_type}"
        )
    return mapping
