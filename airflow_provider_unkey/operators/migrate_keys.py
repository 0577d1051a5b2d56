"""``MigrateKeysOperator``: move pre-hashed keys from Parquet or SQL into Unkey, every key accounted for."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from airflow.sdk import BaseOperator

from airflow_provider_unkey._compat import AirflowException, AirflowFailException
from airflow_provider_unkey.hooks.unkey import UnkeyHook
from airflow_provider_unkey.migration.engine import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    MigrationAborted,
    MigrationConfig,
    MigrationSummary,
    RunControl,
    run_migration,
)
from airflow_provider_unkey.migration.hashes import wire_format
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter
from airflow_provider_unkey.migration.outcomes import Reason

if TYPE_CHECKING:
    from airflow.sdk import Context

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=-]+")
#: Stands in, when the DAG is parsed, for a templated argument that is not text yet (an XComArg): the
#: rendered value is checked when the task runs.
_RENDERED_LATER = "<rendered when the task runs>"


def _text_or_later(value: object) -> object:
    """A templated argument as :class:`MigrationConfig` can check it at parse time."""
    return value if isinstance(value, str) else _RENDERED_LATER


class MigrateKeysOperator(BaseOperator):
    """Migrate pre-hashed API keys into Unkey from Parquet or SQL.

    Rows stream through in Arrow record batches: mapped to Unkey's key fields, validated against
    Unkey's rules, deduplicated across the whole source, packed into requests by count and bytes and
    sent concurrently. Every row ends in exactly one outcome, written to ``migrated.parquet`` and
    ``failed.parquet`` under ``output_path`` (and to SQL tables when ``output_conn_id`` is set).

    Exactly one source:

    :param parquet_path: a Parquet file, a directory (dataset), a glob, or a list of files; a local
        path or any ``ObjectStoragePath`` URI (``file://``, ``s3://conn_id@bucket/...``). Templated.
    :param parquet_row_groups: read only these row groups (``{file: [indexes]}``), as produced by the
        partition helper.
    :param hash_partition: keep only the rows whose hash falls in this partition
        (``{"index", "count", "column", "hash_format"}``), as ``parquet_partitions(..., by="hash")``
        produces; other rows belong to other tasks and get no outcome here.
    :param sql: a query (templated; a path ending in ``.sql`` is read as a template).
    :param sql_conn_id: the common-sql connection to run ``sql`` on.
    :param sql_parameters: parameters for ``sql``.

    Mapping and formats:

    :param column_mapping: Unkey field -> source column, for any of ``hash``, ``name``,
        ``externalId``, ``meta``, ``roles``, ``permissions``, ``expires``, ``enabled``,
        ``credits.remaining``, ``credits.refill.interval``, ``credits.refill.amount``,
        ``credits.refill.refillDay``, ``ratelimits``. Unmapped fields are not sent. Default: every
        field whose name is a column of the source.
    :param hash_format: what the hash column holds: ``sha256_base64`` (default) or ``sha256_hex``.
    :param algorithm: the migration's algorithm: ``sha256`` (Unkey's native; base64 goes on the wire,
        hex is converted) or ``github.com/seamapi/prefixed-api-key`` (alias ``seam``; hex on the wire).
    :param list_delimiter: separates roles and permissions held in one text column.

    Sending:

    :param migration_id: the migration id Unkey support set up. Templated.
    :param api_id: the API the keys go to. Templated.
    :param unkey_conn_id: the ``unkey`` connection.
    :param batch_size: keys per request; under a workspace rate limit that holds the run back, the
        task raises it (up to ``max_request_bytes`` and a quarter of Unkey's 60 s timeout).
    :param max_request_bytes: bytes per request body, well below Unkey's 10 MiB.
    :param max_concurrency: the most requests in flight at once in this task. The task finds the
        right number below it from the latency and errors of the answers (``adaptive``), and paces
        its requests to the workspace rate limit the answers state. With an Airflow ``pool``, the task
        takes ``max_concurrency`` slots (unless ``pool_slots`` is given), so the pool's size bounds the
        concurrent requests of all tasks that share it, mapped ones included.
    :param adaptive: find the concurrency and the batch size as the run goes (the default); ``False``
        keeps exactly ``max_concurrency`` requests in flight and ``batch_size`` keys in each.
    :param dry_run: read, validate, deduplicate and batch; report what would be sent; call nothing.

    Outputs:

    :param output_path: a local directory or ``ObjectStoragePath`` URI for ``migrated.parquet`` and
        ``failed.parquet``. Templated. Default: ``$AIRFLOW_HOME/unkey_migrations/<dag>/<run>/<task>``.
    :param ledger_path: the ledger: a directory of Parquet files (local or any ``ObjectStoragePath``
        URI) where every outcome is recorded durably as batches complete, and which reads as one table.
        A retry of the task resumes from it: hashes its earlier tries recorded are not sent again and
        their outcomes are reported again. Hashes that other runs recorded as existing in Unkey
        (migrated, ``already_exists``, ``unconfirmed``) are skipped: share one ledger between the runs
        of a scheduled DAG and each run sends only new keys. Templated. Default: ``ledger/`` inside
        the task's output location. See docs/reliability.md.
    :param list_skipped: also write the rows skipped as known to the ledger to ``skipped.parquet``
        (and XCom); by default they are only counted.
    :param ledger_flush_interval: seconds between the ledger's segments: the most a crash can lose.
    :param on_kill_timeout: when the task is killed, seconds to wait for requests in flight before the
        ledger is flushed.
    :param output_conn_id: a common-sql connection to also append the outcomes to tables.
    :param output_table_prefix: the tables are ``<prefix>_migrated`` and ``<prefix>_failed``. Templated.
    :param xcom_max_rows: push the ``migrated`` and ``failed`` frames to XCom when they have at most
        this many rows; above it, push their URIs instead.
    :param max_invalid_ratio: fail the task (after writing its outputs) when more than this share of
        rows is invalid.
    :param max_failed_ratio: fail the task (after writing its outputs) when more than this share of
        rows failed for any reason.
    :param progress_interval: seconds between progress lines in the task log.
    :param do_xcom_push: (``BaseOperator``'s) ``False`` pushes nothing to XCom: not the summary, not
        the frames or their URIs, not the summary of a failed run. The outputs and the ledger are
        written all the same.
    :return: a summary: ``total``, ``migrated``, ``failed``, ``failed_by_reason``, ``skipped``,
        ``resumed``, durations, keys/s, output URIs (``ledger`` among them). Pushed to XCom as
        ``return_value`` unless ``do_xcom_push`` is ``False``.
    """

    template_fields: Sequence[str] = (
        "migration_id",
        "api_id",
        "parquet_path",
        "sql",
        "sql_parameters",
        "output_path",
        "ledger_path",
        "output_table_prefix",
        "column_mapping",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "column_mapping": "json"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        migration_id: str,
        api_id: str,
        unkey_conn_id: str = UnkeyHook.default_conn_name,
        parquet_path: str | list[str] | None = None,
        parquet_row_groups: dict[str, list[int]] | None = None,
        hash_partition: dict[str, Any] | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        sql_parameters: dict[str, Any] | Sequence[Any] | None = None,
        column_mapping: dict[str, str] | None = None,
        hash_format: str = "sha256_base64",
        algorithm: str = "sha256",
        list_delimiter: str = ",",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        adaptive: bool = True,
        output_path: str | None = None,
        ledger_path: str | None = None,
        list_skipped: bool = False,
        ledger_flush_interval: float = 1.0,
        on_kill_timeout: float = 30.0,
        output_conn_id: str | None = None,
        output_table_prefix: str | None = None,
        xcom_max_rows: int = 10_000,
        dry_run: bool = False,
        max_invalid_ratio: float | None = None,
        max_failed_ratio: float | None = None,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("pool") and "pool_slots" not in kwargs:
            kwargs["pool_slots"] = max_concurrency
        super().__init__(**kwargs)
        if (parquet_path is None) == (sql is None):
            raise ValueError("give exactly one source: parquet_path, or sql with sql_conn_id")
        if sql is not None and not sql_conn_id:
            raise ValueError("sql needs sql_conn_id: the common-sql connection to run it on")
        for name, ratio in (("max_invalid_ratio", max_invalid_ratio), ("max_failed_ratio", max_failed_ratio)):
            if ratio is not None and not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {ratio}")
        if ledger_flush_interval <= 0 or on_kill_timeout < 0:
            raise ValueError("ledger_flush_interval must be positive and on_kill_timeout not negative")
        if bool(output_conn_id) != bool(output_table_prefix):
            raise ValueError("output_conn_id and output_table_prefix go together")
        self.migration_id = migration_id
        self.api_id = api_id
        self.unkey_conn_id = unkey_conn_id
        self.parquet_path = parquet_path
        self.parquet_row_groups = parquet_row_groups
        self.hash_partition = hash_partition
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.sql_parameters = sql_parameters
        self.column_mapping = column_mapping
        self.hash_format = hash_format
        self.algorithm = algorithm
        self.list_delimiter = list_delimiter
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self.max_concurrency = max_concurrency
        self.adaptive = adaptive
        self.output_path = output_path
        self.ledger_path = ledger_path
        self.list_skipped = list_skipped
        self.ledger_flush_interval = ledger_flush_interval
        self.on_kill_timeout = on_kill_timeout
        self._control: RunControl | None = None
        self.output_conn_id = output_conn_id
        self.output_table_prefix = output_table_prefix
        self.xcom_max_rows = xcom_max_rows
        # BaseOperator already has a dry_run() method: keep the flag under another name.
        self.send_nothing = dry_run
        self.max_invalid_ratio = max_invalid_ratio
        self.max_failed_ratio = max_failed_ratio
        self.progress_interval = progress_interval
        # The run's settings are checked now, so that a bad one fails the DAG's parse; the templated
        # ones are checked again once rendered, in execute.
        self._migration_config(parsing=True)

    def _migration_config(self, *, parsing: bool = False) -> MigrationConfig:
        """The run's settings, checked by :class:`MigrationConfig`.

        :param parsing: the DAG is being parsed and the templated fields are not rendered: a templated
            ``migration_id`` or ``api_id`` that is not text yet, a ``column_mapping`` that is not a
            mapping yet, or a column in it that is not text yet, stands in as a placeholder.
        :raises ValueError: naming the first argument that is not valid.
        """
        migration_id: Any = self.migration_id
        api_id: Any = self.api_id
        column_mapping: Any = self.column_mapping
        if parsing:
            migration_id, api_id = _text_or_later(migration_id), _text_or_later(api_id)
            if isinstance(column_mapping, Mapping):
                column_mapping = {field: _text_or_later(column) for field, column in column_mapping.items()}
            else:
                column_mapping = None
        return MigrationConfig(
            migration_id=migration_id,
            api_id=api_id,
            column_mapping=column_mapping,
            hash_format=self.hash_format,
            algorithm=self.algorithm,
            list_delimiter=self.list_delimiter,
            batch_size=self.batch_size,
            max_request_bytes=self.max_request_bytes,
            max_concurrency=self.max_concurrency,
            adaptive=self.adaptive,
            dry_run=self.send_nothing,
            progress_interval=self.progress_interval,
            list_skipped=self.list_skipped,
        )

    # --- pieces ----------------------------------------------------------------------------------------
    def _source(self) -> tuple[Iterable[pa.RecordBatch], int | None]:
        from airflow_provider_unkey.operators import io

        if self.parquet_path is not None:
            source = io.parquet_source(self.parquet_path, row_groups=self.parquet_row_groups)
            if self.hash_partition is not None:
                return self._only_my_partition(source), None
            return source, source.count_rows()
        assert self.sql is not None and self.sql_conn_id is not None
        return io.sql_source(self.sql, self.sql_conn_id, self.sql_parameters), None

    def _only_my_partition(self, source: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from airflow_provider_unkey.migration.partition import hash_partition_mask

        assert self.hash_partition is not None
        spec = self.hash_partition
        column, index, count = spec.get("column", "hash"), int(spec["index"]), int(spec["count"])
        hash_format = spec.get("hash_format", self.hash_format)
        for batch in source:
            if column not in batch.schema.names:
                raise ValueError(
                    f"hash_partition names the column {column!r}, which the source does not have"
                )
            yield batch.filter(hash_partition_mask(batch.column(column), index, count, hash_format))

    def _ledger_scope(self, context: Context) -> LedgerScope:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return LedgerScope(
            dag_id=self.dag_id,
            run_id=context["run_id"],
            task_id=self.task_id,
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(ti, "try_number", 1) or 1),
        )

    def on_kill(self) -> None:
        """Stop sending; wait up to ``on_kill_timeout`` for requests in flight; flush the ledger."""
        control = self._control
        if control is None:
            return
        self.log.warning(
            "The task is being killed: no new request goes out; waiting up to %.0fs for the requests in"
            " flight, then flushing the ledger",
            self.on_kill_timeout,
        )
        if control.stop(self.on_kill_timeout):
            self.log.warning("Requests in flight ended and their outcomes are in the ledger")
        else:
            self.log.warning(
                "Some requests were still in flight after %.0fs; their keys will be re-sent by a retry and"
                " reported unconfirmed if Unkey created them",
                self.on_kill_timeout,
            )

    def _default_output_path(self, context: Context) -> str:
        home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
        ti = context["ti"]
        parts = [self.dag_id, context["run_id"], self.task_id]
        map_index = getattr(ti, "map_index", -1)
        if map_index is not None and map_index >= 0:
            parts.append(f"map_{map_index}")
        return str(home.joinpath("unkey_migrations", *(_UNSAFE_PATH_CHARS.sub("_", p) for p in parts)))

    def _push_summary(self, context: Context, result: dict[str, Any]) -> None:
        """Push a failed run's summary (a successful run returns it), unless ``do_xcom_push`` is off."""
        if self.do_xcom_push:
            context["ti"].xcom_push(key="summary", value=result)

    def _push_frames(
        self, context: Context, summary: MigrationSummary, outputs: dict[str, str], local_dir: Path
    ) -> None:
        import pyarrow.parquet as pq

        if not self.do_xcom_push:
            return
        ti = context["ti"]
        counts = {"migrated": summary.migrated, "failed": summary.failed, "skipped": summary.skipped}
        for name, rows in counts.items():
            if name not in outputs:
                continue  # skipped rows are listed only when asked for
            if rows <= self.xcom_max_rows:
                ti.xcom_push(key=name, value=pq.read_table(local_dir / f"{name}.parquet").to_pandas())
            else:
                self.log.info(
                    "%s has %d rows, over xcom_max_rows=%d: pushing its URI to XCom instead (%s)",
                    name,
                    rows,
                    self.xcom_max_rows,
                    outputs[name],
                )
                ti.xcom_push(key=name, value=outputs[name])

    # --- the task --------------------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow_provider_unkey.operators import io

        config = self._migration_config()  # the templated fields are rendered now
        output_path = self.output_path or self._default_output_path(context)
        client = None
        if not config.dry_run:
            client = UnkeyHook(self.unkey_conn_id, pool_size=config.max_concurrency).client
        source, total = self._source()
        scope = self._ledger_scope(context)
        ledger_path = self.ledger_path or io.join_path(output_path, "ledger")
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
                flush_interval=self.ledger_flush_interval,
            )
        work_dir = Path(tempfile.mkdtemp(prefix="unkey-migrate-"))
        self.log.info(
            "Migrating keys into API %s with migration %s (%s hashes on the wire); outputs to %s%s",
            config.api_id,
            config.migration_id,
            config.algorithm,
            output_path,
            " [dry run: nothing is sent]" if config.dry_run else "",
        )
        self.log.info(
            "Ledger %s: %d hashes of earlier tries of this task to resume from, %d known from other runs"
            " (not sent again)",
            ledger_path,
            known.mine_count,
            known.others_count,
        )
        aborted: MigrationAborted | None = None
        self._control = control = RunControl()
        try:
            try:
                summary = run_migration(
                    source,
                    client,
                    config,
                    work_dir,
                    total_rows=total,
                    emit=self.log.info,
                    ledger=ledger,
                    known=known,
                    control=control,
                )
            except MigrationAborted as exc:
                if exc.summary is None:
                    raise
                aborted, summary = exc, exc.summary
            except Exception:
                # Whatever stopped the run, keep what it recorded: the ids of the keys it created are
                # nowhere else (Unkey answers those hashes as existing from now on).
                self._save_partial_outputs(work_dir, output_path)
                raise
            finally:
                known.close()  # the index's spill files, if it had to spill
            outputs = io.upload_outputs(work_dir, output_path)
            summary.outputs = {**outputs, "ledger": str(ledger_path)}
            if self.output_conn_id and self.output_table_prefix:
                # One key per try: a retry's rows go beside the earlier try's, which may hold key ids
                # that Unkey will not return again (it answers those hashes as already existing).
                ti = context["ti"]
                map_index = getattr(ti, "map_index", -1)
                task_key = (
                    self.task_id if map_index is None or map_index < 0 else f"{self.task_id}[{map_index}]"
                ) + f"#try{getattr(ti, 'try_number', 1)}"
                tables = io.write_outcomes_to_sql(
                    self.output_conn_id, self.output_table_prefix, context["run_id"], work_dir, task_key
                )
                summary.outputs.update(tables)
            self._push_frames(context, summary, outputs, work_dir)
        finally:
            self._control = None
            if ledger is not None:
                ledger.close()  # no-op after a run that ended; after a crash, flushes what it recorded
            if client is not None:
                client.close()
            shutil.rmtree(work_dir, ignore_errors=True)

        result = summary.as_dict()
        self.log.info(
            "Done: %d rows, %d migrated, %d failed %s, %d skipped (known to the ledger)%s%s; %.0f keys/s"
            " over %.1fs. Outputs: %s",
            summary.total,
            summary.migrated,
            summary.failed,
            summary.failed_by_reason,
            summary.skipped,
            f", {summary.resumed} resumed from earlier tries" if summary.resumed else "",
            f", {summary.would_send} would be sent" if summary.dry_run else "",
            summary.keys_per_second,
            summary.duration_seconds,
            summary.outputs,
        )
        if aborted is not None:
            self._push_summary(context, result)
            raise AirflowFailException(str(aborted))
        if summary.stopped:
            # on_kill: the outcomes and the ledger are saved; a retry resumes from the ledger.
            raise AirflowException(
                "the task was stopped before every row was sent; the outcomes recorded so far are in "
                f"{summary.outputs.get('failed')} and the ledger {ledger_path}: a retry resumes from it"
            )
        self._check_ratios(summary, context, result)
        # The task runner pushes the return value only when do_xcom_push is on.
        return result if self.do_xcom_push else None

    def _save_partial_outputs(self, work_dir: Path, output_path: str) -> None:
        from airflow_provider_unkey.operators import io

        if not (work_dir / "migrated.parquet").exists() or not (work_dir / "failed.parquet").exists():
            return
        try:
            outputs = io.upload_outputs(work_dir, output_path)
        except Exception:
            self.log.exception(
                "The run failed, and its partial outcomes could not be saved from %s", work_dir
            )
            return
        self.log.error("The run failed; the outcomes it recorded before failing are in %s", outputs)

    def _check_ratios(self, summary: MigrationSummary, context: Context, result: dict[str, Any]) -> None:
        if not summary.total:
            return
        invalid = summary.failed_by_reason.get(Reason.INVALID.value, 0) / summary.total
        failed = summary.failed / summary.total
        problems = []
        if self.max_invalid_ratio is not None and invalid > self.max_invalid_ratio:
            problems.append(
                f"{invalid:.2%} of rows are invalid, over max_invalid_ratio={self.max_invalid_ratio:.2%}"
            )
        if self.max_failed_ratio is not None and failed > self.max_failed_ratio:
            problems.append(f"{failed:.2%} of rows failed, over max_failed_ratio={self.max_failed_ratio:.2%}")
        if problems:
            self._push_summary(context, result)
            raise AirflowFailException(
                "; ".join(problems)
                + f". The outcomes are in {summary.outputs.get('failed', 'failed.parquet')}"
            )
