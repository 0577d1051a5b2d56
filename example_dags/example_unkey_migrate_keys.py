"""Migrate pre-hashed keys into Unkey, then prove a sample of them verifies.

The keys' hashes come from a legacy system (here: made up from a seed, so that the verification task
can recompute a few plaintexts). Run it against the bundled emulator with ``make demo``, or against
Unkey itself with an ``unkey_default`` connection holding your root key and the ``migration_id`` and
``api_id`` params set to yours.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_unkey.hooks.unkey import UnkeyHook


def demo_plaintext(i: int) -> str:
    """The i-th made-up plaintext key of the legacy system."""
    return f"sk_live_demo_{i:08d}"


def sha256_base64(plaintext: str) -> str:
    """Unkey's native hash: standard base64 of the SHA-256 digest of the whole key."""
    return base64.b64encode(hashlib.sha256(plaintext.encode()).digest()).decode()


@dag(
    dag_id="example_unkey_migrate_keys",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["unkey", "example"],
    params={
        "migration_id": Param("mig_demo", type="string", minLength=3),
        "api_id": Param("api_demo", type="string", minLength=3),
        "key_count": Param(2000, type="integer", minimum=1),
        "batch_size": Param(500, type="integer", minimum=1),
    },
)
def example_unkey_migrate_keys() -> None:
    @task
    def migrate(params: dict[str, Any]) -> dict[str, int]:
        hook = UnkeyHook()
        count, size = int(params["key_count"]), int(params["batch_size"])
        migrated = failed = 0
        for start in range(0, count, size):
            keys = [
                {"hash": sha256_base64(demo_plaintext(i)), "name": f"demo key {i}", "meta": {"legacy_id": i}}
                for i in range(start, min(start + size, count))
            ]
            result = hook.migrate_keys(params["migration_id"], params["api_id"], keys)
            migrated += len(result.migrated)
            failed += len(result.failed)
        print(f"migrated {migrated} keys, {failed} already existed, of {count}")
        if migrated + failed != count:
            raise RuntimeError(f"{count - migrated - failed} keys have no outcome")
        return {"total": count, "migrated": migrated, "failed": failed}

    @task
    def verify_sample(summary: dict[str, int], params: dict[str, Any]) -> list[str]:
        hook = UnkeyHook()
        sample = sorted({0, summary["total"] // 2, summary["total"] - 1})
        codes = []
        for i in sample:
            result = hook.verify_key(demo_plaintext(i), migration_id=params["migration_id"])
            print(f"key #{i}: {result.code} ({result.key_id})")
            if not result.valid:
                raise RuntimeError(f"migrated key #{i} does not verify: {result.code}")
            codes.append(result.code)
        return codes

    verify_sample(migrate())


dag_object = example_unkey_migrate_keys()
