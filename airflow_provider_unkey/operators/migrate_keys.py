"""``MigrateKeysOperator``: move pre-hashed keys from Parquet or SQL into Unkey, every key accounted for."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from airflow.sdk import BaseOperator
from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.definitions.mappedoperator import OperatorPartial

from airflow_provider_unkey._compat import AirflowException, AirflowFailException
from airflow_provider_unkey.hooks.unkey import UnkeyHook
from airflow_provider_unkey.migration.engine import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_RATE_LIMIT_HEADROOM,
    UNKEY_RATE_LIMIT_WINDOW,
    MigrationAborted,
    MigrationConfig,
    MigrationSummary,
    RunControl,
    run_migration,
)
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerScope, LedgerWriter
from airflow_provider_unkey.migration.prepare.hashes import wire_format
from airflow_provider_unkey.migration.read.partition import check_partition
from airflow_provider_unkey.migration.record.outcomes import Reason
from airflow_provider_unkey.migration.record.report import write_report
from airflow_provider_unkey.migration.record.sinks import OUTPUT_FILES
from airflow_provider_unkey.migration.record.timeline import Timeline

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions._internal.expandinput import ExpandInput
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from airflow_provider_unkey.operators.lineage import Lineage

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=-]+")
#: Stands in, when the DAG is parsed, for a templated argument that is not text yet (an XComArg): the
#: rendered value is checked when the task runs.
_RENDERED_LATER = "<rendered when the task runs>"


def _text_or_later(value: object) -> object:
    """A templated argument as :class:`MigrationConfig` can check it at parse time."""
    return value if isinstance(value, str) else _RENDERED_LATER


def _is_later(value: object) -> bool:
    """Whether ``value`` is only known when the task runs (an ``XComArg``, a mapped argument)."""
    return isinstance(value, ResolveMixin)


#: Airflow's pool for tasks that name none: a task there takes one slot, as any other task does.
_DEFAULT_POOL = "default_pool"


def _in_a_pool(pool: object) -> bool:
    """Whether the task names a pool of its own (then it takes ``max_concurrency`` slots of it)."""
    return bool(pool) and pool != _DEFAULT_POOL


def _check_arguments(args: Mapping[str, Any], *, parsing: bool = False, where: str = "") -> MigrationConfig:
    """The operator's arguments, checked; the run's settings as :class:`MigrationConfig` checks them.

    :param args: the arguments by ``__init__``'s names (a missing one takes its default).
    :param parsing: the DAG is being parsed: templated fields may not be rendered, and any argument
        may be an ``XComArg`` or a mapped value. Those stand in as placeholders, checked when the task
        runs.
    :param where: what to name in the error (a mapped task's ``expand_kwargs`` item).
    :raises ValueError: naming the first argument that is not valid.
    """
    a = {**_ARGUMENT_DEFAULTS, **args}
    if parsing:
        # A value known only at run time is checked then; until then, the default stands in.
        a = {k: (_ARGUMENT_DEFAULTS.get(k) if _is_later(v) else v) for k, v in a.items()}
    try:
        return _checked(a, args, parsing=parsing)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None


def _checked(a: Mapping[str, Any], given: Mapping[str, Any], *, parsing: bool) -> MigrationConfig:
    source_later = parsing and any(_is_later(given.get(k)) for k in ("parquet_path", "sql"))
    if not source_later and (a["parquet_path"] is None) == (a["sql"] is None):
        raise ValueError("give exactly one source: parquet_path, or sql with sql_conn_id")
    if a["sql"] is not None and not a["sql_conn_id"]:
        raise ValueError("sql needs sql_conn_id: the common-sql connection to run it on")
    if a["partition"] is not None:
        if a["sql"] is not None:
            raise ValueError(
                "partition splits a Parquet source; an SQL source is split into queries by"
                " io.sql_partitions(), one `sql` per task"
            )
        check_partition(a["partition"])
    if a["hook_params"] is not None and not isinstance(a["hook_params"], dict):
        raise ValueError(f"hook_params must be a dict of the hook's arguments, got {a['hook_params']!r}")
    for name in ("max_invalid_ratio", "max_failed_ratio"):
        ratio = a[name]
        if ratio is not None and not 0 <= ratio <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {ratio}")
    if a["ledger_flush_interval"] <= 0 or a["on_kill_timeout"] < 0:
        raise ValueError("ledger_flush_interval must be positive and on_kill_timeout not negative")
    if bool(a["output_conn_id"]) != bool(a["output_table_prefix"]):
        raise ValueError("output_conn_id and output_table_prefix go together")
    migration_id, api_id, column_mapping = a["migration_id"], a["api_id"], a["column_mapping"]
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
        hash_format=a["hash_format"],
        algorithm=a["algorithm"],
        list_delimiter=a["list_delimiter"],
        batch_size=a["batch_size"],
        max_request_bytes=a["max_request_bytes"],
        max_concurrency=a["max_concurrency"],
        adaptive=a["adaptive"],
        rate_limit_headroom=a["rate_limit_headroom"],
        rate_limit_window=a["rate_limit_window"],
        dry_run=a["validate_only"],
        progress_interval=a["progress_interval"],
        list_skipped=a["list_skipped"],
    )


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
    :param batch_size: keys per request; under a workspace rate limit that holds the run back, the
        task raises it (up to ``max_request_bytes`` and a quarter of Unkey's 60 s timeout).
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
        super().__init__(**kwargs)
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
        partial_op = super().partial(**kwargs)
        mapped = _MigrateKeysPartial(
            operator_class=partial_op.operator_class, kwargs=partial_op.kwargs, params=partial_op.params
        )
        partial_op._expand_called = True  # replaced by `mapped`: no "never mapped" warning for it
        mapped.pool_slots_given = "pool_slots" in kwargs or "pool_slots" in (
            _default_args(kwargs, partial_op.kwargs.get("dag"))
        )
        try:
            mapped.check(None)
        except ValueError:
            mapped._expand_called = True  # it fails here: no "never mapped" warning on top
            raise
        return mapped

    # --- pieces ----------------------------------------------------------------------------------------
    def _source(self, config: MigrationConfig) -> tuple[Iterable[pa.RecordBatch], int | None]:
        from airflow_provider_unkey.operators import io

        if self.parquet_path is not None:
            spec = check_partition(self.partition)
            if spec is not None and spec["by"] == "hash":
                return self._only_my_partition(io.parquet_source(self.parquet_path), spec, config), None
            row_groups = spec["row_groups"] if spec is not None else None
            source = io.parquet_source(self.parquet_path, row_groups=row_groups)
            return source, source.count_rows()
        assert self.sql is not None and self.sql_conn_id is not None
        return io.sql_source(self.sql, self.sql_conn_id, self.parameters, hook_params=self.hook_params), None

    @staticmethod
    def _only_my_partition(
        source: Iterable[pa.RecordBatch], spec: Mapping[str, Any], config: MigrationConfig
    ) -> Iterator[pa.RecordBatch]:
        from airflow_provider_unkey.migration.read.partition import hash_partition_mask

        mapped = (config.column_mapping or {}).get("hash", "hash")
        column, index, count = spec.get("column", mapped), int(spec["index"]), int(spec["count"])
        hash_format = spec.get("hash_format", config.hash_format)
        for batch in source:
            if column not in batch.schema.names:
                raise ValueError(
                    f"partition names the hash column {column!r}, which the source does not have"
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
        """Warn when the outputs or the ledger would stay on this worker's disk under a remote executor.

        The ids of the keys created are recorded nowhere else, and the ledger is what a retry on
        another worker resumes from.
        """
        from airflow_provider_unkey.operators import io

        executor = io.distributed_executor(getattr(self, "executor", None))
        if executor is None:
            return
        for what, path, argument in (
            ("outputs (the only record of the key ids Unkey created)", output_path, "output_path"),
            ("ledger (what a retry on another worker resumes from)", ledger_path, "ledger_path"),
        ):
            disk = io.worker_local_disk(path)
            if disk is not None:
                self.log.warning(
                    "The %s go to %s, on this worker's own disk (%s), under the %s: they are lost with"
                    " the worker and invisible to the other workers. Set %s to shared storage (an"
                    " ObjectStoragePath URI such as s3://conn_id@bucket/prefix, or a shared volume"
                    " mounted on every worker). See docs/operator.md, 'Under a distributed executor'.",
                    what,
                    path,
                    disk,
                    executor,
                    argument,
                )

    def _task_label(self, ti: Any) -> str:
        """``task_id``, or ``task_id[map_index]`` for a mapped task instance."""
        map_index = getattr(ti, "map_index", -1)
        return self.task_id if map_index is None or map_index < 0 else f"{self.task_id}[{map_index}]"

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

        config = self._within_pool_slots(_check_arguments(self._arguments()))  # rendered by now
        config = self._within_time_budget(config)
        output_path = self.output_path or self._default_output_path(context)
        ledger_path = self.ledger_path or io.join_path(output_path, "ledger")
        self._warn_if_worker_local(output_path, ledger_path)
        client = None
        if not config.dry_run:
            client = UnkeyHook(self.unkey_conn_id, pool_size=config.max_concurrency).client
        source, total = self._source(config)
        scope = self._ledger_scope(context)
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
        timeline = Timeline()
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
                    timeline=timeline,
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
            self._write_report(work_dir, summary, timeline, config, context, output_path, str(ledger_path))
            outputs = io.upload_outputs(work_dir, output_path)
            summary.outputs = {**outputs, "ledger": str(ledger_path)}
            if "report" in outputs:
                self.log.info("The migration report: %s", outputs["report"])
            if self.output_conn_id and self.output_table_prefix:
                # One key per try: a retry's rows go beside the earlier try's, which may hold key ids
                # that Unkey will not return again (it answers those hashes as already existing).
                ti = context["ti"]
                task_key = f"{self._task_label(ti)}#try{getattr(ti, 'try_number', 1)}"
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
        self._lineage_seen = {
            "base_url": client.base_url if client is not None else None,
            "outputs": dict(summary.outputs),
            "summary": result,
        }
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

    def _write_report(
        self,
        work_dir: Path,
        summary: MigrationSummary,
        timeline: Timeline,
        config: MigrationConfig,
        context: Context,
        output_path: str,
        ledger_path: str,
    ) -> None:
        """Write ``report.md`` (and its plot) beside the outputs; a report that fails loses nothing."""
        from airflow_provider_unkey.operators import io

        ti = context["ti"]
        task = self._task_label(ti)
        source = self.parquet_path if self.parquet_path is not None else f"SQL on {self.sql_conn_id}"
        facts = {
            "task": f"{self.dag_id} / {context['run_id']} / {task}, try {getattr(ti, 'try_number', 1)}",
            "migration": f"{config.migration_id} ({config.algorithm}) into API {config.api_id}",
            "source": source if isinstance(source, str) else ", ".join(map(str, source)),
        }
        if config.dry_run:
            facts["mode"] = "validate only: nothing was sent"
        # Where upload_outputs will put the outcome files this run wrote (skipped.parquet only if listed).
        outputs = {
            name: io.join_path(output_path, OUTPUT_FILES[name])
            for name in ("migrated", "failed", "skipped")
            if (work_dir / OUTPUT_FILES[name]).exists()
        }
        outputs["ledger"] = ledger_path
        try:
            write_report(work_dir, summary, timeline, facts=facts, outputs=outputs)
        except Exception:
            self.log.exception("The migration report could not be written; the outcomes are unaffected")

    # --- OpenLineage (used when the OpenLineage provider is installed) ---------------------------------
    def _lineage(self, *, complete: bool) -> Lineage:
        from airflow_provider_unkey.operators.lineage import migration_lineage

        seen = self._lineage_seen or {}
        base_url = seen.get("base_url")
        if base_url is None:
            try:
                conn = UnkeyHook.get_connection(self.unkey_conn_id)
                base_url = UnkeyHook.base_url_from(conn.host, conn.schema, conn.port)
            except Exception:  # no connection at hand: the lineage names no Unkey output
                base_url = None
        return migration_lineage(
            parquet_path=self.parquet_path,
            sql=self.sql,
            sql_conn_id=self.sql_conn_id,
            hook_params=self.hook_params,
            base_url=None if self.validate_only else base_url,
            api_id=str(self.api_id),
            outputs=seen.get("outputs", {}) if complete else {},
            output_conn_id=self.output_conn_id,
            summary=seen.get("summary") if complete else None,
        )

    def get_openlineage_facets_on_start(self) -> Lineage:
        """OpenLineage: the source read and the Unkey API written (the provider's listener calls this)."""
        return self._lineage(complete=False)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage:
        """OpenLineage: the source, the Unkey API with the keys migrated, the output files and tables."""
        return self._lineage(complete=True)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Lineage:
        """OpenLineage: as on completion, with whatever outputs the failed run wrote."""
        return self._lineage(complete=True)

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


#: ``__init__``'s arguments and their defaults; the required ones stand in as not given yet.
_ARGUMENT_DEFAULTS: dict[str, Any] = {
    name: (_RENDERED_LATER if p.default is inspect.Parameter.empty else p.default)
    for name, p in inspect.signature(MigrateKeysOperator.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def _default_args(kwargs: Mapping[str, Any], dag: Any) -> dict[str, Any]:
    """The ``default_args`` that reach a ``partial()`` call: its own, then the DAG's."""
    merged = dict(getattr(dag, "default_args", None) or {})
    merged.update(kwargs.get("default_args") or {})
    return merged


class _MigrateKeysPartial(OperatorPartial):
    """``MigrateKeysOperator.partial(...)``: checks what ``expand`` adds and sets the pool slots."""

    pool_slots_given: bool = False

    def check(self, expand_input: ExpandInput | None) -> None:
        """Check the arguments as ``__init__`` would, for every mapped task whose arguments are known.

        :raises ValueError: naming the argument, and the ``expand_kwargs`` item it came from.
        """
        known = {k: v for k, v in self.kwargs.items() if k in _ARGUMENT_DEFAULTS}
        if expand_input is None:
            # partial() alone: what expand adds is not known yet, so only the given arguments count.
            mapped_later = {k: _ResolvedLater() for k in ("parquet_path", "sql") if k not in known}
            _check_arguments({**known, **mapped_later}, parsing=True, where="MigrateKeysOperator.partial(): ")
            return
        items = _literal_items(expand_input)
        if items is None:
            return  # an XComArg: its values are checked when each task runs
        concurrency = []
        for n, item in enumerate(items):
            _check_arguments({**known, **item}, parsing=True, where=f"expand item {n}: ")
            value = item.get("max_concurrency", known.get("max_concurrency", DEFAULT_MAX_CONCURRENCY))
            if isinstance(value, int):
                concurrency.append(value)
        if concurrency and "max_concurrency" not in known:
            self._pool_slots(max(concurrency))

    def _pool_slots(self, max_concurrency: int) -> None:
        if _in_a_pool(self.kwargs.get("pool")) and not self.pool_slots_given:
            self.kwargs["pool_slots"] = max_concurrency

    def _expand(self, expand_input: ExpandInput, *, strict: bool) -> MappedOperator:
        max_concurrency = self.kwargs.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
        if isinstance(max_concurrency, int):
            self._pool_slots(max_concurrency)
        self._expand_called = True
        self.check(expand_input)
        return super()._expand(expand_input, strict=strict)


class _ResolvedLater(ResolveMixin):
    """Stands in for an argument ``expand`` will give."""

    def iter_references(self) -> Iterable[Any]:
        return iter(())

    def resolve(self, context: Any) -> Any:  # pragma: no cover - never resolved
        raise NotImplementedError


def _literal_items(expand_input: ExpandInput) -> list[dict[str, Any]] | None:
    """Each mapped task's arguments, when ``expand``/``expand_kwargs`` were given literal values.

    :return: ``None`` when any of them comes from an ``XComArg`` (known only when the tasks run).
    """
    value: Any = expand_input.value
    if isinstance(value, Mapping):  # expand(name=[...], ...): the cross product
        lists: dict[str, Any] = dict(value)
        if any(_is_later(v) or not isinstance(v, Sequence) or isinstance(v, str) for v in lists.values()):
            return None
        items: list[dict[str, Any]] = [{}]
        for name, values in lists.items():
            items = [{**item, name: v} for item in items for v in values]
        return items
    if _is_later(value) or not isinstance(value, Sequence):
        return None
    if any(_is_later(item) for item in value):
        return None
    return [dict(item) for item in value]
