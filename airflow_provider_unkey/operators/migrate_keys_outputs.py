"""Where a ``MigrateKeysOperator`` run's outcomes go: the files and the report, XCom, and the checks.

The outcome files themselves are written by the migration (:mod:`airflow_provider_unkey.migration`);
this module places them (``output_path``, the SQL tables), reports on them, pushes them to XCom, and
fails the task when the run was aborted or stopped, or too many rows failed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_unkey._compat import AirflowException, AirflowFailException
from airflow_provider_unkey.migration.engine import MigrationAborted, MigrationConfig, MigrationSummary
from airflow_provider_unkey.migration.record import OUTPUT_FILES, Reason, Timeline, write_report

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import Logger

    from airflow_provider_unkey.operators.migrate_keys_task import MigrateKeysTask

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=-]+")


def task_label(task_id: str, ti: Any) -> str:
    """``task_id``, or ``task_id[map_index]`` for a mapped task instance."""
    map_index = getattr(ti, "map_index", -1)
    return task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"


def default_output_path(dag_id: str, task_id: str, context: Context) -> str:
    """``$AIRFLOW_HOME/unkey_migrations/<dag>/<run>/<task>`` (``/map_<index>`` for a mapped task)."""
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    ti = context["ti"]
    parts = [dag_id, context["run_id"], task_id]
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        parts.append(f"map_{map_index}")
    return str(home.joinpath("unkey_migrations", *(_UNSAFE_PATH_CHARS.sub("_", p) for p in parts)))


def warn_if_worker_local(log: Logger, task_executor: str | None, output_path: str, ledger_path: str) -> None:
    """Warn when the outputs or the ledger would stay on this worker's disk under a remote executor.

    The ids of the keys created are recorded nowhere else, and the ledger is what a retry on
    another worker resumes from.

    :param task_executor: the task's own ``executor``, if it names one.
    """
    from airflow_provider_unkey.operators import io

    executor = io.distributed_executor(task_executor)
    if executor is None:
        return
    for what, path, argument in (
        ("outputs (the only record of the key ids Unkey created)", output_path, "output_path"),
        ("ledger (what a retry on another worker resumes from)", ledger_path, "ledger_path"),
    ):
        disk = io.worker_local_disk(path)
        if disk is not None:
            log.warning(
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


def write_run_report(
    task: MigrateKeysTask,
    context: Context,
    config: MigrationConfig,
    summary: MigrationSummary,
    timeline: Timeline,
    work_dir: Path,
    output_path: str,
    ledger_path: str,
) -> None:
    """Write ``report.md`` (and its plot) beside the outputs; a report that fails loses nothing."""
    from airflow_provider_unkey.operators import io

    ti = context["ti"]
    label = task_label(task.task_id, ti)
    source = task.parquet_path if task.parquet_path is not None else f"SQL on {task.sql_conn_id}"
    facts = {
        "task": f"{task.dag_id} / {context['run_id']} / {label}, try {getattr(ti, 'try_number', 1)}",
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
        task.log.exception("The migration report could not be written; the outcomes are unaffected")


def upload_outcomes(
    log: Logger, summary: MigrationSummary, work_dir: Path, output_path: str, ledger_path: str
) -> dict[str, str]:
    """Upload the outcome files and the report to ``output_path``, and name them in ``summary.outputs``.

    :return: the files uploaded, by name (``migrated``, ``failed``, ``report``, ...).
    """
    from airflow_provider_unkey.operators import io

    outputs = io.upload_outputs(work_dir, output_path)
    summary.outputs = {**outputs, "ledger": str(ledger_path)}
    if "report" in outputs:
        log.info("The migration report: %s", outputs["report"])
    return outputs


def write_outcome_tables(task: MigrateKeysTask, context: Context, work_dir: Path) -> dict[str, str]:
    """Append the outcomes to the tables ``<prefix>_migrated`` and ``<prefix>_failed``, if any are set.

    :return: the tables, as ``summary.outputs`` names them (``migrated_table``, ``failed_table``).
    """
    from airflow_provider_unkey.operators import io

    if not (task.output_conn_id and task.output_table_prefix):
        return {}
    # One key per try: a retry's rows go beside the earlier try's, which may hold key ids
    # that Unkey will not return again (it answers those hashes as already existing).
    ti = context["ti"]
    task_key = f"{task_label(task.task_id, ti)}#try{getattr(ti, 'try_number', 1)}"
    return io.write_outcomes_to_sql(
        task.output_conn_id, task.output_table_prefix, context["run_id"], work_dir, task_key
    )


def save_partial_outputs(log: Logger, work_dir: Path, output_path: str) -> None:
    """After a failed run, save the outcomes it recorded to ``output_path``, if it wrote any."""
    from airflow_provider_unkey.operators import io

    if not (work_dir / "migrated.parquet").exists() or not (work_dir / "failed.parquet").exists():
        return
    try:
        outputs = io.upload_outputs(work_dir, output_path)
    except Exception:
        log.exception("The run failed, and its partial outcomes could not be saved from %s", work_dir)
        return
    log.error("The run failed; the outcomes it recorded before failing are in %s", outputs)


def log_done(log: Logger, summary: MigrationSummary) -> None:
    """Log the run's counts, its speed, and where its outputs are."""
    log.info(
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


def push_summary(task: MigrateKeysTask, context: Context, result: dict[str, Any]) -> None:
    """Push a failed run's summary (a successful run returns it), unless ``do_xcom_push`` is off."""
    if task.do_xcom_push:
        context["ti"].xcom_push(key="summary", value=result)


def push_frames(
    task: MigrateKeysTask,
    context: Context,
    summary: MigrationSummary,
    outputs: dict[str, str],
    local_dir: Path,
) -> None:
    """Push the ``migrated``/``failed``/``skipped`` frames to XCom, or their URIs above ``xcom_max_rows``."""
    import pyarrow.parquet as pq

    if not task.do_xcom_push:
        return
    ti = context["ti"]
    counts = {"migrated": summary.migrated, "failed": summary.failed, "skipped": summary.skipped}
    for name, rows in counts.items():
        if name not in outputs:
            continue  # skipped rows are listed only when asked for
        if rows <= task.xcom_max_rows:
            ti.xcom_push(key=name, value=pq.read_table(local_dir / f"{name}.parquet").to_pandas())
        else:
            task.log.info(
                "%s has %d rows, over xcom_max_rows=%d: pushing its URI to XCom instead (%s)",
                name,
                rows,
                task.xcom_max_rows,
                outputs[name],
            )
            ti.xcom_push(key=name, value=outputs[name])


def check_ratios(
    task: MigrateKeysTask, summary: MigrationSummary, context: Context, result: dict[str, Any]
) -> None:
    """Fail the task when more rows are invalid, or failed, than the ratios allow.

    :raises AirflowFailException: after pushing the summary, naming the ratios exceeded.
    """
    if not summary.total:
        return
    invalid = summary.failed_by_reason.get(Reason.INVALID.value, 0) / summary.total
    failed = summary.failed / summary.total
    problems = []
    if task.max_invalid_ratio is not None and invalid > task.max_invalid_ratio:
        problems.append(
            f"{invalid:.2%} of rows are invalid, over max_invalid_ratio={task.max_invalid_ratio:.2%}"
        )
    if task.max_failed_ratio is not None and failed > task.max_failed_ratio:
        problems.append(f"{failed:.2%} of rows failed, over max_failed_ratio={task.max_failed_ratio:.2%}")
    if problems:
        push_summary(task, context, result)
        raise AirflowFailException(
            "; ".join(problems) + f". The outcomes are in {summary.outputs.get('failed', 'failed.parquet')}"
        )


def check_outcome(
    task: MigrateKeysTask,
    context: Context,
    summary: MigrationSummary,
    result: dict[str, Any],
    aborted: MigrationAborted | None,
    ledger_path: str,
) -> None:
    """Fail the task (its outputs written by now) if the run was aborted or stopped, or is over a ratio.

    :param aborted: what aborted the run, if it was.
    :raises AirflowFailException: when the run was aborted or is over a ratio (no retry).
    :raises AirflowException: when ``on_kill`` stopped the run (a retry resumes from the ledger).
    """
    if aborted is not None:
        push_summary(task, context, result)
        raise AirflowFailException(str(aborted))
    if summary.stopped:
        # on_kill: the outcomes and the ledger are saved; a retry resumes from the ledger.
        raise AirflowException(
            "the task was stopped before every row was sent; the outcomes recorded so far are in "
            f"{summary.outputs.get('failed')} and the ledger {ledger_path}: a retry resumes from it"
        )
    check_ratios(task, summary, context, result)
