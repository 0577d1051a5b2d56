"""What a ``MigrateKeysOperator`` run starts from: its share of the source, and the ledger of earlier runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_provider_unkey.migration.engine import MigrationConfig
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter
from airflow_provider_unkey.migration.prepare import wire_format
from airflow_provider_unkey.migration.read import check_partition, hash_partition_mask

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_unkey.operators.migrate_keys_task import MigrateKeysTask


def read_source(
    task: MigrateKeysTask, config: MigrationConfig
) -> tuple[Iterable[pa.RecordBatch], int | None]:
    """The record batches of the task's share of its source.

    :return: the batches (read lazily), and how many rows they hold when that is known beforehand.
    """
    from airflow_provider_unkey.operators import io

    if task.parquet_path is not None:
        spec = check_partition(task.partition)
        if spec is not None and spec["by"] == "hash":
            return only_my_partition(io.parquet_source(task.parquet_path), spec, config), None
        row_groups = spec["row_groups"] if spec is not None else None
        source = io.parquet_source(task.parquet_path, row_groups=row_groups)
        return source, source.count_rows()
    assert task.sql is not None and task.sql_conn_id is not None
    return io.sql_source(task.sql, task.sql_conn_id, task.parameters, hook_params=task.hook_params), None


def only_my_partition(
    source: Iterable[pa.RecordBatch], spec: Mapping[str, Any], config: MigrationConfig
) -> Iterator[pa.RecordBatch]:
    """The rows of ``source`` whose hash falls in this task's partition (``{"by": "hash", ...}``).

    :raises ValueError: when the source has no column of the name the partition gives the hashes.
    """
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


def open_ledger(
    task: MigrateKeysTask, context: Context, config: MigrationConfig, ledger_path: str
) -> tuple[KnownHashes, LedgerWriter | None]:
    """The ledger at ``ledger_path``: the hashes it knows, and a writer for this run's outcomes.

    :return: the hashes of this task's earlier tries (to resume from) and of other runs (not sent
        again), and the writer (``None`` for a dry run, which records nothing).
    """
    from airflow_provider_unkey.operators import io

    scope = ledger_scope(task.dag_id, task.task_id, context)
    ledger_root, ledger_fs = io.ledger_location(ledger_path)
    known = KnownHashes.load(ledger_root, scope, wire_format(config.algorithm), filesystem=ledger_fs)
    ledger = None
    if not config.dry_run:
        ledger = LedgerWriter(
            ledger_root,
            scope,
            migration_id=config.migration_id,
            api_id=config.api_id,
            filesystem=ledger_fs,
            flush_interval=task.ledger_flush_interval,
        )
    return known, ledger
