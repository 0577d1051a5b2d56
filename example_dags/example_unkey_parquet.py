"""Migrate a legacy system's API keys into Unkey from a Parquet export, report the failures, prove keys verify.

The legacy system stored the hex SHA-256 of each key, the owner's id, its scopes as comma-separated
text and an expiry; the export also has the usual few bad rows (a missing hash, a hash in the wrong
format, a scope with a space, a key exported twice). ``MigrateKeysOperator`` maps the columns to
Unkey's key fields, converts the hex hashes to the base64 that a ``sha256`` migration wants, rejects
the bad rows with a reason naming the field, and migrates the rest; every row ends in
``migrated.parquet`` or ``failed.parquet``. A downstream task reads the ``failed`` frame from XCom and
reports it; ``VerifyKeysOperator`` proves that known test keys verify with their old plaintext.

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
from airflow.sdk import Param, XComArg, dag, task

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator
from airflow_provider_unkey.operators.verify_keys import VerifyKeysOperator

#: Bad rows planted in the export, by row number, and what is wrong with each.
BAD_ROWS = {7: "missing hash", 11: "base64 in the hex column", 13: "scope with a space"}
DUPLICATE_ROWS = {21: 20}  # row 21 repeats row 20's key


def demo_plaintext(i: int) -> str:
    """The i-th key the legacy system handed out."""
    return f"sk_live_demo_{i:08d}"


def export_dir() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "unkey_demo"


@dag(
    dag_id="example_unkey_parquet",
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
def example_unkey_parquet() -> None:
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
        progress_interval=1.0,
    )

    @task
    def report_failed(failed: Any) -> dict[str, int]:
        """What a downstream task does with the failures: here, count them by reason and list them.

        ``failed`` is the ``failed`` frame from XCom (a pandas DataFrame), or its URI when the run
        failed more rows than ``xcom_max_rows``.
        """
        import pandas as pd

        frame = failed if isinstance(failed, pd.DataFrame) else pd.read_parquet(failed)
        by_reason = frame["reason"].value_counts().to_dict()
        print(f"{len(frame)} rows failed: {by_reason}")
        for row in frame.sort_values("source_row").itertuples():
            print(f"  row {row.source_row}: {row.reason}: {row.detail}")
        return {str(k): int(v) for k, v in by_reason.items()}

    # Keys whose plaintext the legacy system's test accounts hold. Row 7 was exported without a
    # hash, so it was never migrated: it must not verify.
    prove = VerifyKeysOperator(
        task_id="prove_keys_verify",
        migration_id="{{ params.migration_id }}",
        keys={f"row {i}": demo_plaintext(i) for i in (0, 1, 7, 20, 29)},
        expected_codes={"row 7": "NOT_FOUND"},
    )

    exported = export_legacy_keys()
    exported >> migrate
    report_failed(XComArg(migrate, key="failed"))
    migrate >> prove


dag_object = example_unkey_parquet()
