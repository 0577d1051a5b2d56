"""The field table of ``docs/api-rules.md``, generated from :data:`~.fields.KEY_FIELD_TABLE`.

``python -m airflow_provider_unkey.rules.docs docs/api-rules.md`` rewrites the table between the
page's ``<!-- fields:begin -->`` and ``<!-- fields:end -->`` markers; a test fails when the page is
not current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_provider_unkey.rules.fields import CREDITS_MAX, KEY_FIELD_TABLE, Field

BEGIN, END = "<!-- fields:begin -->", "<!-- fields:end -->"


def _number(n: int) -> str:
    if n == CREDITS_MAX:
        return "2⁶³ (as the spec writes it)"
    return str(n)


def _schema_rule(f: Field) -> str:
    parts: list[str] = []
    if f.required:
        parts.append("required")
    if f.nullable:
        parts.append("may be null")
    if f.type == "string":
        if f.enum:
            parts.append("one of " + ", ".join(f"`{v}`" for v in f.enum))
        elif f.max_length is not None:
            parts.append(f"{f.min_length or 0} to {f.max_length} characters")
        elif f.min_length is not None:
            parts.append(f"≥ {f.min_length} characters")
        if f.pattern:
            parts.append(f"matching `{f.pattern}`")
    elif f.type == "integer":
        if f.minimum is not None and f.maximum is not None:
            parts.append(f"{_number(f.minimum)} … {_number(f.maximum)}")
        elif f.minimum is not None:
            parts.append(f"≥ {_number(f.minimum)}")
        if f.unit == "unix_ms":
            parts.append("Unix time in ms")
    elif f.type == "array":
        if f.min_items is not None:
            parts.append(f"≥ {f.min_items} items")
        if f.max_items is not None:
            parts.append(f"≤ {f.max_items} items")
    elif f.type == "object":
        if f.max_properties is not None:
            parts.append(f"≤ {f.max_properties} members")
        if f.closed:
            parts.append("no other members")
    return ", ".join(parts) or "—"


def _server_rule(f: Field) -> str:
    parts: list[str] = []
    if f.type == "integer":
        parts.append("`int64`, written without a fraction, else **400**")
    if f.max_stored_length is not None:
        parts.append(
            f"over {f.max_stored_length} characters: **500** (a `varchar({f.max_stored_length})` column)"
        )
    if f.unique_items is not None:
        parts.append(f"the same {f.unique_items} twice: **500**")
    if f.required_when is not None:
        parts.append(f"required when `{f.required_when[0]}` is `{f.required_when[1]}`, else **400**")
    if f.null_status is not None:
        parts.append(f"`null`: **{f.null_status}** (the handler reads it without a null check)")
    return "; ".join(parts) or "—"


def field_table() -> str:
    """The Markdown table of every key field: type, the schema's rule and the server's."""
    lines = [
        "| field | JSON type | meaning | the schema | the server, beyond the schema |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in KEY_FIELD_TABLE:
        lines.append(f"| `{f.path}` | {f.type} | {f.doc} | {_schema_rule(f)} | {_server_rule(f)} |")
    return "\n".join(lines) + "\n"


def render(page: str) -> str:
    """``page`` with the text between the markers replaced by :func:`field_table`.

    :raises ValueError: when the page lacks the markers.
    """
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page needs {BEGIN} and {END} around the field table")
    return page[: start + len(BEGIN)] + "\n" + field_table() + page[end:]


def main(argv: list[str]) -> int:
    """Rewrite the field table of each page given."""
    for name in argv:
        path = Path(name)
        path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
