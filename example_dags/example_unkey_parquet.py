"""Migrate a legacy system's API keys into Unkey from a Parquet export, then prove some still verify.

The legacy system stored the hex SHA-256 of each key, the owner's id, its scopes as comma-separated
text and an expiry; the export also has the usual few bad rows (a missing hash, a hash in the wrong
format, a scope with a space, a key exported twice). ``MigrateKeysOperator`` maps the columns to
Unkey's key fields, converts the hex hashes to the base64 that a ``sha256`` migration wants, rejects
the bad rows with a reason naming the field, and migrates the rest; every row ends in
``migrated.parquet`` or ``failed.parquet``.

Run it against the bundled emulator with ``make demo``, or against Unkey with an ``unkey_default``
connection holding your root key and the ``migration_id`` and ``api_id`` params set to yours.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_unkey.hooks.unkey import UnkeyHook
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator

#: Bad rows planted in the export, by row number, and what is wrong with each.
BAD_ROWS = {7: "missing hash", 11: "base64 in the hex column", 13: "scope with a space"}
DUPLICATE_ROWS = {21: 20}  # row 21 repeats row 20's key


def demo_plaintext(i: int) -> str:
    """The i-th key the legacy system handed out."""
    return f"sk_live_demo_{i:08d}"


def export_dir() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "unkey_demo"


@dag(
    dag_id="example_unkey_migrate_keys",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["unkey", "example"],
    params={
        "migration_id": Param("mig_demo", type="string", minLength=3),
        "api_id": Param("api_demo", type="string", minLength=3),
        "key_count": Param(10_000, type="integer", minimum=30),
    },
)
def example_unkey_migrate_keys() -> None:
    @task
    def export_legacy_keys(params: dict[str, Any]) -> str:
        """Stand-in for the legacy system's export job."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        count = int(params["key_count"])
        hashes: list[str | None] = []
        for i in range(count):
            source = DUPLICATE_ROWS.get(i, i)
            hashes.append(hashlib.sha256(demo_plaintext(source).encode()).hexdigest())
        hashes[7] = None
        hashes[11] = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="
        scopes = ["docs.read,docs.write" if i % 3 else "docs.read" for i in range(count)]
        scopes[13] = "docs.read,billing admin"
        expires = pendulum.datetime(2030, 1, 1, tz="UTC")
        table = pa.table(
            {
                "key_hash": pa.array(hashes, pa.string()),
                "owner_id": [f"user_{i % 997}" for i in range(count)],
                "label": [f"legacy key {i}" for i in range(count)],
                "scopes": scopes,
                "meta_json": [
                    json.dumps({"legacy_id": i, "plan": "pro" if i % 2 else "free"}) for i in range(count)
                ],
                "expires_at": pa.array([expires] * count, pa.timestamp("ms", tz="UTC")),
            }
        )
        path = export_dir() / "legacy_keys.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=4096)
        return str(path)

    migrate = MigrateKeysOperator(
        task_id="migrate_keys",
        migration_id="{{ params.migration_id }}",
        api_id="{{ params.api_id }}",
        parquet_path="{{ ti.xcom_pull(task_ids='export_legacy_keys') }}",
        hash_format="sha256_hex",
        algorithm="sha256",
        column_mapping={
            "hash": "key_hash",
            "externalId": "owner_id",
            "name": "label",
            "permissions": "scopes",
            "meta": "meta_json",
            "expires": "expires_at",
        },
        max_invalid_ratio=0.01,
        xcom_max_rows=100,
    )

    @task
    def verify_sample(summary: dict[str, Any], params: dict[str, Any]) -> dict[str, str]:
        """Prove that keys migrated by hash verify with their old plaintext."""
        hook = UnkeyHook()
        print(f"Migration summary: {json.dumps(summary, indent=2)}")
        total = summary["total"]
        sample = {0, 1, total // 2, total - 1}
        codes = {}
        for i in sorted(sample):
            result = hook.verify_key(demo_plaintext(i), migration_id=params["migration_id"])
            print(f"key #{i}: {result.code} ({result.key_id})")
            if not result.valid:
                raise RuntimeError(f"migrated key #{i} does not verify: {result.code}")
            codes[str(i)] = result.code
        bad = hook.verify_key("sk_live_never_issued", migration_id=params["migration_id"])
        print(f"a key never issued: {bad.code}")
        return codes

    exported = export_legacy_keys()
    exported >> migrate
    verify_sample(migrate.output)


dag_object = example_unkey_migrate_keys()
