"""``MigrateKeysOperator``: move pre-hashed keys from Parquet or SQL into Unkey, every key accounted for."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_unkey.arrow_memory import returning_arrow_memory
from airflow_provider_unkey.assets import add_default_outlets, event_extra, record_asset_events
from airflow_provider_unkey.hooks.unkey import UnkeyHook
from airflow_provider_unkey.links import UnkeyDashboardLink, push_dashboard_url
from airflow_provider_unkey.migration.engine import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_RATE_LIMIT_HEADROOM,
    UNKEY_RATE_LIMIT_WINDOW,
    MigrationConfig,
    RunControl,
)

# _check_arguments is also imported from here (the tests check rendered arguments with it).
from airflow_provider_unkey.operators.migrate_keys_args import (
    _ARGUMENT_DEFAULTS,
    _argument_defaults,
    _check_arguments,
    _in_a_pool,
)
from airflow_provider_unkey.operators.migrate_keys_inputs import open_ledger, read_source
from airflow_provider_unkey.operators.migrate_keys_mapped import _mapped_partial
from airflow_provider_unkey.operators.migrate_keys_outputs import (
    check_outcome,
    default_output_path,
    log_done,
    push_frames,
    upload_outcomes,
    warn_if_worker_local,
    write_outcome_tables,
    write_run_report,
)
from airflow_provider_unkey.operators.migrate_keys_run import log_start, migrate, release

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions.mappedoperator import OperatorPartial

    from airflow_provider_unkey.operators.lineage import Lineage


class MigrateKeysOperator(BaseOperator):
    """Migrate pre-hashed API keys into Unkey from Parquet or SQL.

    Rows stream through in Arrow record batches: mapped to Unkey's key fields, validated against
    Unkey's rules, deduplicated across the whole source, packed into requests by count and bytes and
    sent concurrently. Every row ends in exactly one outcome, written to ``migrated.parquet`` and
    ``failed.parquet`` under ``output_path`` (and to SQL tables when ``output_conn_id`` is set), with
    ``report.md`` for a person to read.

    The arguments come in four groups: the source (exactly one of ``parquet_path`` and ``sql``), the
    mapping and formats, sending, and the outputs. ``BaseOperator``'s ``do_xcom_push=False`` pushes
    nothing to XCom (not the summary, not the frames or their URIs, not the summary of a failed run);
    the outputs and the ledger are written all the same.

    A task declares its API's asset, ``unkey://api.unkey.com/<api_id>``, as an outlet when ``api_id``
    is literal text and it is given no ``outlets``; a successful run puts its counts in the event's
    ``extra`` of every ``unkey://`` outlet (:mod:`~airflow_provider_unkey.assets`). Its extra link opens
    the API in Unkey's dashboard (:mod:`~airflow_provider_unkey.links`).

    :param parquet_path: a Parquet file, a directory (dataset), a glob, or a list of files; a local
        path or any ``ObjectStoragePath`` URI (``file://``, ``s3://conn_id@bucket/...``). Templated.
    :param partition: the share of a Parquet source this task migrates, as the partition helper
        (:func:`~airflow_provider_unkey.operators.io.parquet_partitions`) produces it for
        ``.expand_kwargs``: ``{"by": "row_groups", "row_groups": {file: [index, ...]}}`` reads only
        those row groups; ``{"by": "hash", "index": i, "count": n, ...}`` reads the whole source and
        keeps the rows whose hash falls in partition ``i`` of ``n`` (other rows belong to other tasks
        and get no outcome here).
    :param sql: a query (templated; a path ending in ``.sql`` is read as a template).
    :param sql_conn_id: the common-sql connection to run ``sql`` on.
    :param parameters: parameters for ``sql``, as common-sql's operators take them. Templated.
    :param hook_params: keyword arguments for the ``sql_conn_id`` connection's hook (as common-sql's
        ``hook_params``), e.g. ``{"schema": "warehouse"}``.

    :param column_mapping: Unkey field -> source column, for any of ``hash``, ``name``,
        ``externalId``, ``meta``, ``roles``, ``permissions``, ``expires``, ``enabled``,
        ``credits.remaining``, ``credits.refill.interval``, ``credits.refill.amount``,
        ``credits.refill.refillDay``, ``ratelimits``. Unmapped fields are not sent. Default: every
        field whose name is a column of the source.
    :param hash_format: what the hash column holds: ``sha256_base64`` (default), ``sha256_hex``, or
        ``sha256_binary`` (raw 32-byte digests; a binary column, such as ``BYTEA`` or ``BINARY(32)``,
        is read as that whatever this says).
    :param algorithm: the migration's algorithm: ``sha256`` (Unkey's native; base64 goes on the wire,
        hex is converted) or ``github.com/seamapi/prefixed-api-key`` (alias ``seam``; hex on the wire).
    :param list_delimiter: separates roles and permissions held in one text column.

    :param migration_id: the migration id Unkey support set up. Templated.
    :param api_id: the API the keys go to. Templated.
    :param unkey_conn_id: the ``unkey`` connection.
    :param batch_size: keys per request to start with. The task doubles it while that lowers the
        latency per key (a request within a second), and under a workspace rate limit that holds the
        run back (up to ``max_request_bytes`` and a quarter of Unkey's 60 s timeout).
    :param max_request_bytes: bytes per request body, well below Unkey's 10 MiB.
    :param max_concurrency: the most requests in flight at once in this task. The task finds the
        right number below it from the latency and errors of the answers (``adaptive``), and paces
        its requests to the workspace rate limit the answers state. With an Airflow ``pool``, the task
        takes ``max_concurrency`` slots (unless ``pool_slots`` is given), so the pool's size bounds the
        concurrent requests of all tasks that share it, mapped ones included. A task in a pool never
        has more requests in flight than the slots it holds: with ``pool_slots`` below
        ``max_concurrency``, ``pool_slots`` is the cap.
    :param adaptive: find the concurrency and the batch size as the run goes (the default); ``False``
        keeps exactly ``max_concurrency`` requests in flight and ``batch_size`` keys in each.
    :param rate_limit_headroom: the share of the workspace rate limit that the migration never takes
        (default 0.25). Every request of the workspace counts against its limit, the ``keys.verifyKey``
        calls of its production services too: the task keeps the whole workspace's use below
        ``limit * (1 - rate_limit_headroom)``, yields when production rises and takes the room back when
        it falls. Mapped tasks of one migration share that room. A request the limit refuses (429) is
        sent again when the pace allows, and does not use up a retry; with an ``execution_timeout``,
        the task stops sending again shortly before it (see docs/operator.md).
    :param rate_limit_window: the window of the workspace rate limit, in seconds: 60 for Unkey; set it
        only for an emulator whose window is compressed.
    :param validate_only: read, validate, deduplicate and batch; report what would be sent
        (``would_send``); call nothing. (``dry_run`` would clash with ``BaseOperator.dry_run()``.)

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
    :return: a summary: ``total``, ``migrated``, ``failed``, ``failed_by_reason``, ``skipped``,
        ``resumed``, durations, keys/s, output URIs (``ledger`` among them). Pushed to XCom as
        ``return_value`` unless ``do_xcom_push`` is ``False``.
    """

    template_fields: Sequence[str] = (
        "migration_id",
        "api_id",
        "parquet_path",
        "sql",
        "parameters",
        "output_path",
        "ledger_path",
        "output_table_prefix",
        "column_mapping",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "column_mapping": "json"}
    ui_color = "#e8f0fe"
    operator_extra_links: tuple[UnkeyDashboardLink, ...] = (UnkeyDashboardLink(),)

    def __init__(
        self,
        *,
        migration_id: str,
        api_id: str,
        unkey_conn_id: str = UnkeyHook.default_conn_name,
        parquet_path: str | list[str] | None = None,
        partition: dict[str, Any] | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        hook_params: dict[str, Any] | None = None,
        column_mapping: dict[str, str] | None = None,
        hash_format: str = "sha256_base64",
        algorithm: str = "sha256",
        list_delimiter: str = ",",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        adaptive: bool = True,
        rate_limit_headroom: float = DEFAULT_RATE_LIMIT_HEADROOM,
        rate_limit_window: float = UNKEY_RATE_LIMIT_WINDOW,
        output_path: str | None = None,
        ledger_path: str | None = None,
        list_skipped: bool = False,
        ledger_flush_interval: float = 1.0,
        on_kill_timeout: float = 30.0,
        output_conn_id: str | None = None,
        output_table_prefix: str | None = None,
        xcom_max_rows: int = 10_000,
        validate_only: bool = False,
        max_invalid_ratio: float | None = None,
        max_failed_ratio: float | None = None,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        if _in_a_pool(kwargs.get("pool")) and "pool_slots" not in kwargs:
            kwargs["pool_slots"] = max_concurrency
        add_default_outlets(kwargs, api_id, validate_only)  # a mapped task's come from partial()
        super().__init__(**kwargs)
        if not self.do_xcom_push:
            self.operator_extra_links = ()  # its URL would be an XCom: no link, as no XCom
        self.migration_id = migration_id
        self.api_id = api_id
        self.unkey_conn_id = unkey_conn_id
        self.parquet_path = parquet_path
        self.partition = partition
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.parameters = parameters
        self.hook_params = hook_params
        self.column_mapping = column_mapping
        self.hash_format = hash_format
        self.algorithm = algorithm
        self.list_delimiter = list_delimiter
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self.max_concurrency = max_concurrency
        self.adaptive = adaptive
        self.rate_limit_headroom = rate_limit_headroom
        self.rate_limit_window = rate_limit_window
        self.output_path = output_path
        self.ledger_path = ledger_path
        self.list_skipped = list_skipped
        self.ledger_flush_interval = ledger_flush_interval
        self.on_kill_timeout = on_kill_timeout
        self._control: RunControl | None = None
        self.output_conn_id = output_conn_id
        self.output_table_prefix = output_table_prefix
        self.xcom_max_rows = xcom_max_rows
        self.validate_only = validate_only
        #: What the run learned for OpenLineage: the base URL, the outputs and the summary.
        self._lineage_seen: dict[str, Any] | None = None
        self.max_invalid_ratio = max_invalid_ratio
        self.max_failed_ratio = max_failed_ratio
        self.progress_interval = progress_interval
        # The arguments are checked now, so that a bad one fails the DAG's parse; the templated ones
        # are checked again once rendered, in execute. Mapped tasks get the same checks in partial().
        _check_arguments(self._arguments(), parsing=True)

    def _arguments(self) -> dict[str, Any]:
        """This task's arguments, by the names ``__init__`` takes."""
        return {name: getattr(self, name) for name in _ARGUMENT_DEFAULTS}

    @classmethod
    def partial(cls, **kwargs: Any) -> OperatorPartial:  # type: ignore[override]
        """``BaseOperator.partial``, plus what ``__init__`` does for an unmapped task.

        ``partial()`` never runs ``__init__``, so its checks and its ``pool_slots`` rule are done here:
        the arguments given to ``partial`` are checked at once, the literal ones given to
        ``expand``/``expand_kwargs`` when they are, and a task in a pool takes ``max_concurrency``
        slots (the largest of the mapped values, when ``max_concurrency`` is mapped).
        """
        add_default_outlets(kwargs, kwargs.get("api_id"), kwargs.get("validate_only", False))
        return _mapped_partial(super().partial(**kwargs), kwargs)

    # --- pieces ----------------------------------------------------------------------------------------
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

    def _within_time_budget(self, config: MigrationConfig) -> MigrationConfig:
        """``config`` with the time the sending may take: the ``execution_timeout`` less a reserve
        (a tenth, at most a minute) for writing the outputs, so that keys still refused by the rate
        limit when it runs out are recorded ``gave_up`` rather than lost with a killed task."""
        timeout = self.execution_timeout
        if timeout is None:
            return config
        seconds = timeout.total_seconds()
        return dataclasses.replace(config, time_budget=max(seconds - min(60.0, seconds / 10), 1.0))

    def _within_pool_slots(self, config: MigrationConfig) -> MigrationConfig:
        """``config`` with no more requests in flight than the pool slots this task holds.

        A mapped task whose ``max_concurrency`` came from an ``XComArg`` holds the slots that were
        known when the DAG was parsed; so does a task given ``pool_slots`` below ``max_concurrency``.
        """
        slots = int(getattr(self, "pool_slots", 1) or 1)
        if not _in_a_pool(getattr(self, "pool", None)) or config.max_concurrency <= slots:
            return config
        self.log.info(
            "max_concurrency=%d, but the task holds %d slots of pool %r: at most %d requests in flight",
            config.max_concurrency,
            slots,
            self.pool,
            slots,
        )
        return dataclasses.replace(config, max_concurrency=slots)

    def _warn_if_worker_local(self, output_path: str, ledger_path: str) -> None:
        """Warn when the outputs or the ledger would stay on this worker's disk under a remote executor."""
        warn_if_worker_local(self.log, getattr(self, "executor", None), output_path, ledger_path)

    # --- the task --------------------------------------------------------------------------------------
    @returning_arrow_memory()  # the whole task: reading, outputs and XCom too (see arrow_memory)
    def execute(self, context: Context) -> dict[str, Any] | None:
        """Migrate this task's keys and record every outcome; the summary is the return value."""
        push_dashboard_url(self, context)  # the link's XCom, empty until the connection is read
        config = self._within_pool_slots(_check_arguments(self._arguments()))  # rendered by now
        config = self._within_time_budget(config)
        output_path, ledger_path = self._output_locations(context)
        client = None
        if not config.dry_run:
            client = UnkeyHook(self.unkey_conn_id, pool_size=config.max_concurrency).client
            push_dashboard_url(self, context, self.unkey_conn_id, client.base_url, config.api_id)
        source, total = read_source(self, config)
        known, ledger = open_ledger(self, context, config, ledger_path)
        work_dir = Path(tempfile.mkdtemp(prefix="unkey-migrate-"))
        log_start(self.log, config, output_path, ledger_path, known)
        self._control = control = RunControl()  # what on_kill stops the run with
        try:
            summary, timeline, aborted = migrate(
                self.log, source, total, client, config, work_dir, output_path, known, ledger, control
            )
            write_run_report(self, context, config, summary, timeline, work_dir, output_path, ledger_path)
            outputs = upload_outcomes(self.log, summary, work_dir, output_path, ledger_path)
            summary.outputs.update(write_outcome_tables(self, context, work_dir))
            push_frames(self, context, summary, outputs, work_dir)
        finally:
            self._control = None
            release(client, ledger, work_dir)
        result = summary.as_dict()
        base_url = client.base_url if client is not None else None
        self._lineage_seen = {
            "base_url": base_url,
            "outputs": dict(summary.outputs),
            "summary": result,
        }
        log_done(self.log, summary)
        check_outcome(self, context, summary, result, aborted, ledger_path)
        extra = event_extra(
            context, result, api_id=config.api_id, migration_id=config.migration_id, base_url=base_url
        )
        record_asset_events(self.log, self.outlets, context, extra)
        # The task runner pushes the return value only when do_xcom_push is on.
        return result if self.do_xcom_push else None

    def _output_locations(self, context: Context) -> tuple[str, str]:
        """Where the outputs and the ledger go (with a warning if only this worker would see them)."""
        from airflow_provider_unkey.operators import io

        output_path = self.output_path or default_output_path(self.dag_id, self.task_id, context)
        ledger_path = self.ledger_path or io.join_path(output_path, "ledger")
        self._warn_if_worker_local(output_path, ledger_path)
        return output_path, ledger_path

    # --- OpenLineage (used when the OpenLineage provider is installed) ---------------------------------
    def _lineage(self, *, complete: bool) -> Lineage:
        from airflow_provider_unkey.operators.lineage import task_lineage

        return task_lineage(self, self._lineage_seen, complete=complete)

    def get_openlineage_facets_on_start(self) -> Lineage:
        """OpenLineage: the source read and the Unkey API written (the provider's listener calls this)."""
        return self._lineage(complete=False)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """OpenLineage: the source, the Unkey API with the keys migrated, the output files and tables."""
        return self._lineage(complete=True)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        """OpenLineage: as on completion, with whatever outputs the failed run wrote."""
        return self._lineage(complete=True)


# The operator's signature is the one list of its arguments; the checks take their defaults from it.
_ARGUMENT_DEFAULTS.update(_argument_defaults(MigrateKeysOperator.__init__))
