"""OpenLineage for ``MigrateKeysOperator``: where the migrated keys came from and where they went.

Used only when the OpenLineage provider is installed (its listener calls the operator's
``get_openlineage_facets_on_*`` methods); nothing here is imported otherwise.

* Inputs: the Parquet source (a dataset per path: ``file`` for local paths, ``s3://<bucket>`` and
  the like for object storage, the connection id left out), or the tables the SQL query reads, as
  the OpenLineage provider's SQL parser finds them on the connection (with the query as a job facet).
* Outputs: the Unkey API the keys were created in (namespace: the base URL; name: ``apis/<api id>``,
  with the number of keys migrated), the ``migrated``/``failed`` files and, with ``output_conn_id``,
  the outcome tables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_unkey.operators.migrate_keys_task import MigrateKeysTask

    #: What the operator's lineage holds: datasets and facets of any kind.
    Lineage = OperatorLineage[Dataset, Any]

#: ObjectStoragePath schemes -> the schemes OpenLineage's naming uses.
_SCHEMES = {"gcs": "gs", "s3a": "s3", "s3n": "s3"}


def storage_dataset(path: str) -> Any:
    """A path or storage URI as an OpenLineage dataset (``file`` + absolute path, or ``<scheme>://<bucket>`` + key).

    The connection id an ``ObjectStoragePath`` URI carries (``s3://aws_default@bucket/key``) is not part
    of the dataset's name: the same object has one name whichever connection reads it.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    scheme, sep, rest = str(path).partition("://")
    if not sep:
        return Dataset(namespace="file", name=os.path.abspath(path))
    if scheme == "file":
        return Dataset(namespace="file", name="/" + rest.lstrip("/"))
    netloc, _, key = rest.partition("/")
    bucket = netloc.rpartition("@")[2]
    return Dataset(namespace=f"{_SCHEMES.get(scheme, scheme)}://{bucket}", name=key or "/")


def unkey_dataset(base_url: str, api_id: str, migrated: int | None = None) -> Any:
    """The Unkey API the keys went to; with ``migrated``, how many keys the run created there."""
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )

    facets: dict[str, Any] = (
        {}
        if migrated is None
        else {"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=migrated)}
    )
    return OutputDataset(namespace=base_url.rstrip("/"), name=f"apis/{api_id}", outputFacets=facets)


def sql_lineage(sql: str, conn_id: str, hook: Any) -> Lineage | None:
    """The tables ``sql`` reads, by the OpenLineage provider's SQL parser on the connection's dialect."""
    from airflow.providers.openlineage.sqlparser import get_openlineage_facets_with_sql

    return get_openlineage_facets_with_sql(hook=hook, sql=sql, conn_id=conn_id, database=None)


def table_datasets(hook: Any, tables: Iterable[str]) -> list[Any]:
    """The outcome tables as datasets in the connection's namespace (when the hook can name it)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.sqlparser import SQLParser

    try:
        info = hook.get_openlineage_database_info(hook.get_connection(hook.get_conn_id()))
    except (AttributeError, NotImplementedError):
        return []
    if info is None:
        return []
    namespace = SQLParser.create_namespace(info)
    database = info.database or ""
    schema = (
        hook.get_openlineage_default_schema() if hasattr(hook, "get_openlineage_default_schema") else None
    )
    prefix = ".".join(p for p in (database, schema) if p)
    return [Dataset(namespace=namespace, name=f"{prefix}.{t}" if prefix else t) for t in tables]


def migration_lineage(
    *,
    parquet_path: str | list[str] | None,
    sql: str | None,
    sql_conn_id: str | None,
    hook_params: Mapping[str, Any] | None,
    base_url: str | None,
    api_id: str,
    outputs: Mapping[str, str],
    output_conn_id: str | None,
    summary: Mapping[str, Any] | None,
) -> Lineage:
    """The lineage of one migration task, as far as it is known (before the run: no counts, no files)."""
    from airflow.providers.common.compat.openlineage.facet import SQLJobFacet
    from airflow.providers.openlineage.extractors import OperatorLineage

    lineage: Lineage = OperatorLineage()
    if parquet_path is not None:
        paths = [parquet_path] if isinstance(parquet_path, str) else list(parquet_path)
        lineage.inputs.extend(storage_dataset(p) for p in paths)
    elif sql is not None and sql_conn_id is not None:
        from airflow_provider_unkey.operators import io

        parsed = None
        try:
            parsed = sql_lineage(sql, sql_conn_id, io.sql_hook(sql_conn_id, hook_params))
        except Exception:  # lineage never fails the task: the query's text is still a facet
            parsed = None
        if parsed is not None:  # (OperatorLineage.merge is newer than some providers we support)
            lineage.inputs.extend(parsed.inputs or [])
            lineage.outputs.extend(parsed.outputs or [])
            lineage.run_facets.update(parsed.run_facets or {})
            lineage.job_facets.update(parsed.job_facets or {})
        lineage.job_facets.setdefault("sql", SQLJobFacet(query=sql))
    if base_url:
        migrated = None if summary is None else int(summary.get("migrated", 0))
        lineage.outputs.append(unkey_dataset(base_url, api_id, migrated))
    for name in ("migrated", "failed"):
        if name in outputs:
            lineage.outputs.append(storage_dataset(outputs[name]))
    tables = [outputs[k] for k in ("migrated_table", "failed_table") if k in outputs]
    if output_conn_id and tables:
        from airflow_provider_unkey.operators import io

        with contextlib.suppress(Exception):  # lineage never fails the task
            lineage.outputs.extend(table_datasets(io.sql_hook(output_conn_id), tables))
    return lineage


def task_lineage(task: MigrateKeysTask, seen: Mapping[str, Any] | None, *, complete: bool) -> Lineage:
    """The lineage of a ``MigrateKeysOperator`` task: on start, or with what its run saw (``complete``).

    :param seen: what the run learned: the base URL, the outputs and the summary (``None`` before it).
    """
    from airflow_provider_unkey.hooks.unkey import UnkeyHook

    seen = seen or {}
    base_url = seen.get("base_url")
    if base_url is None:
        try:
            conn = UnkeyHook.get_connection(task.unkey_conn_id)
            base_url = UnkeyHook.base_url_from(conn.host, conn.schema, conn.port)
        except Exception:  # no connection at hand: the lineage names no Unkey output
            base_url = None
    return migration_lineage(
        parquet_path=task.parquet_path,
        sql=task.sql,
        sql_conn_id=task.sql_conn_id,
        hook_params=task.hook_params,
        base_url=None if task.validate_only else base_url,
        api_id=str(task.api_id),
        outputs=seen.get("outputs", {}) if complete else {},
        output_conn_id=task.output_conn_id,
        summary=seen.get("summary") if complete else None,
    )
