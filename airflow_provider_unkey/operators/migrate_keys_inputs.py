"""What a ``MigrateKeysOperator`` run starts from: its share of the source, and the ledger of earlier runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_provider_unkey.migration.engine import MigrationConfig
from airflow_provider_unkey.migration.ledger import LedgerScope

if TYPE_CHECKING:
    from airflow.sdk import Context


def only_my_partition(
    source: Iterable[pa.RecordBatch], spec: Mapping[str, Any], config: MigrationConfig
) -> Iterator[pa.RecordBatch]:
    """The rows of ``source`` whose hash falls in this task's partition (``{"by": "hash", ...}``).

    :raises ValueError: when the source has no column of the name the partition gives the hashes.
    """
    from airflow_provider_unkey.migration.read.partition import hash_partition_mask

    mapped = (config.column_mapping or {}).get("hash", "hash")
    column, index, count = spec.get("column", mapped), int(spec["index"]), int(spec["count"])
    hash_format = spec.get("hash_format", config.hash_format)
    for batch in source:
        if column not in batch.schema.names:
            raise ValueError(f"partition names the hash column {column!r}, which the source does not have")
        yield batch.filter(hash_partition_mask(batch.column(column), index, count, hash_format))


def ledger_scope(dag_id: str, task_id: str, context: Context) -> LedgerScope:
    """The task instance, and its try, that the ledger records this run's outcomes under."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return LedgerScope(
        dag_id=dag_id,
        run_id=context["run_id"],
        task_id=task_id,
        map_index=-1 if map_index is None else int(map_index),
        try_number=int(getattr(ti, "try_number", 1) or 1),
    )
