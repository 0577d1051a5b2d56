"""What differs between the Airflow 3 releases this provider supports (3.1.1 and later), in one place.

The provider imports from ``airflow.sdk``, Airflow 3's public surface for providers, and falls back
here to what Airflow 3.1 had before ``airflow.sdk`` grew it in 3.2. Each fallback names the release
that made it unnecessary: delete it when the floor in ``pyproject.toml`` reaches that release.

``Stats`` is the metrics client Airflow configures from its ``[metrics]`` settings (StatsD, Datadog's
DogStatsD or OpenTelemetry; one that drops everything when they are off): the provider never makes a
client of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:  # airflow.sdk.exceptions.AirflowException and AirflowFailException: Airflow 3.2
    from airflow.sdk.exceptions import AirflowException, AirflowFailException  # type: ignore[attr-defined]
except ImportError:  # Airflow 3.1: the very classes its task runner catches
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined]
        AirflowException,
        AirflowFailException,
    )

try:  # airflow.sdk.observability.stats.Stats: Airflow 3.2 (3.3 deprecates airflow.stats, with a warning)
    from airflow.sdk.observability.stats import Stats
except ImportError:  # Airflow 3.1: the Stats that configures itself from [metrics] when first used
    from airflow.stats import Stats  # type: ignore[no-redef,attr-defined]

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "Stats",
    "connection_form_widgets",
    "storage_conn_id",
]


def storage_conn_id(path: ObjectStoragePath) -> str | None:
    """The Airflow connection an ``ObjectStoragePath`` reaches its storage with (None: the default).

    ``ObjectStoragePath.conn_id`` arrived in Airflow 3.2, which moved the id out of ``storage_options``;
    Airflow 3.1's path keeps it there.
    """
    try:
        conn_id = path.conn_id  # type: ignore[attr-defined]  # to mypy on Airflow 3.1
    except AttributeError:  # Airflow 3.1
        conn_id = path.storage_options.get("conn_id")
    return None if conn_id is None else str(conn_id)


def connection_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The connection form's extra fields as WTForms fields, from their ``conn-fields`` declaration.

    Airflow 3.2 reads ``conn-fields`` and ``ui-field-behaviour`` from the provider info and no longer
    calls a hook's ``get_connection_form_widgets``. Airflow 3.1 only calls the hook, and only when WTForms
    is importable (the FAB provider brings it); its API server then swaps WTForms' field classes for its
    own, which become the UI's fields. Without these the 3.1 form would offer none of the extras, while
    ``ui-field-behaviour`` hides the raw ``extra`` box. Only field classes Airflow accepts are used: a
    number is a text field (the hook parses text), and nothing needs Flask-AppBuilder.
    """
    # WTForms ships no types; Airflow itself does not depend on it.
    from wtforms import BooleanField, IntegerField, StringField  # type: ignore[import-untyped,import-not-found]
    from wtforms.validators import Optional  # type: ignore[import-untyped,import-not-found]

    classes = {"boolean": BooleanField, "integer": IntegerField}
    widgets: dict[str, Any] = {}
    for name, field in conn_fields.items():
        schema = field.get("schema", {})
        types = schema.get("type", "string")
        kind = next((t for t in ([types] if isinstance(types, str) else types) if t != "null"), "string")
        default = schema.get("default")
        if kind == "number" and default is not None:
            default = str(default)
        widgets[name] = classes.get(kind, StringField)(
            field.get("label", name),
            validators=[Optional()],
            description=field.get("description", ""),
            default=default,
        )
    return widgets
