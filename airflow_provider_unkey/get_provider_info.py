"""Provider metadata, returned by the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_unkey import __version__


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ``ProvidersManager`` reads about this provider, without importing the hook."""
    from airflow_provider_unkey.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-unkey",
        "name": "Unkey",
        "description": "Migrate pre-hashed API keys into `Unkey <https://unkey.com>`__ without rotating them.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Unkey",
                "external-doc-url": "https://www.unkey.com/docs/api-reference/v2/keys/migrate-api-keys",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "Unkey", "python-modules": ["airflow_provider_unkey.hooks.unkey"]},
        ],
        "operators": [
            {
                "integration-name": "Unkey",
                "python-modules": [
                    "airflow_provider_unkey.operators.migrate_keys",
                    "airflow_provider_unkey.operators.verify_keys",
                ],
            },
        ],
        "connection-types": [
            {
                "connection-type": "unkey",
                "hook-class-name": "airflow_provider_unkey.hooks.unkey.UnkeyHook",
                "hook-name": "Unkey",
                "ui-field-behaviour": {
                    "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
                    "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
                    "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
        # The button on a migration task instance: its API in Unkey's dashboard.
        "extra-links": ["airflow_provider_unkey.links.UnkeyDashboardLink"],
        # unkey://<host>/<api_id>: the API a migration's keys land in, as an Airflow asset.
        "asset-uris": [
            {
                "schemes": ["unkey"],
                "handler": "airflow_provider_unkey.assets.sanitize_uri",
                "factory": "airflow_provider_unkey.assets.create_asset",
            }
        ],
    }
