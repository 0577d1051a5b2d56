"""One run of ``MigrateKeysOperator``'s migration: its first lines in the log, the run, and its release.

The source and the ledger are opened by :mod:`~airflow_provider_unkey.operators.migrate_keys_inputs`;
what becomes of the outcomes is :mod:`~airflow_provider_unkey.operators.migrate_keys_outputs`'s. The
run's metrics go through Airflow's ``Stats`` (:mod:`~airflow_provider_unkey.metrics`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from airflow_provider_unkey.metrics import MigrationMetrics
from airflow_provider_unkey.migration.engine import (
    MigrationAborted,
    MigrationConfig,
    MigrationSummary,
    RunControl,
    run_migration,
)
from airflow_provider_unkey.migration.ledger import KnownHashes, LedgerWriter
from airflow_provider_unkey.migration.record import Timeline
from airflow_provider_unkey.operators.migrate_keys_outputs import save_partial_outputs

if TYPE_CHECKING:
    from airflow.sdk.types import Logger

    from airflow_provider_unkey.client import UnkeyClient


def log_start(
    log: Logger, config: MigrationConfig, output_path: str, ledger_path: str, known: KnownHashes
) -> None:
    """Log what the run migrates, where its outputs go, and what the ledger knows already."""
    log.info(
        "Migrating keys into API %s with migration %s (%s hashes on the wire); outputs to %s%s",
        config.api_id,
        config.migration_id,
        config.algorithm,
        output_path,
        " [dry run: nothing is sent]" if config.dry_run else "",
    )
    log.info(
        "Ledger %s: %d hashes of earlier tries of this task to resume from, %d known from other runs"
        " (not sent again)",
        ledger_path,
        known.mine_count,
        known.others_count,
    )


def migrate(
    log: Logger,
    source: Iterable[pa.RecordBatch],
    total: int | None,
    client: UnkeyClient | None,
    config: MigrationConfig,
    work_dir: Path,
    output_path: str,
    known: KnownHashes,
    ledger: LedgerWriter | None,
    control: RunControl,
) -> tuple[MigrationSummary, Timeline, MigrationAborted | None]:
    """Run the migration into ``work_dir``, its metrics to Airflow's ``Stats`` as it goes.

    :param output_path: where the outcomes recorded so far are saved when the run fails.
    :param control: what ``on_kill`` stops the run with.
    :return: the summary, the run's timeline (for the report), and the abort when the run was
        aborted with a summary (the task fails once its outputs are written).
    """
    aborted: MigrationAborted | None = None
    timeline = Timeline()
    metrics = MigrationMetrics.for_current_task(config.migration_id, config.api_id)
    try:
        with metrics.observing(client):
            summary = run_migration(
                source,
                client,
                config,
                work_dir,
                total_rows=total,
                emit=log.info,
                ledger=ledger,
                known=known,
                control=control,
                timeline=timeline,
                listeners=[metrics],
            )
    except MigrationAborted as exc:
        if exc.summary is None:
            raise
        aborted, summary = exc, exc.summary
    except Exception:
        # Whatever stopped the run, keep what it recorded: the ids of the keys it created are
        # nowhere else (Unkey answers those hashes as existing from now on).
        save_partial_outputs(log, work_dir, output_path)
        raise
    finally:
        known.close()  # the index's spill files, if it had to spill
    return summary, timeline, aborted


def release(client: UnkeyClient | None, ledger: LedgerWriter | None, work_dir: Path) -> None:
    """Release what the run held, whether it ended or failed."""
    if ledger is not None:
        ledger.close()  # no-op after a run that ended; after a crash, flushes what it recorded
    if client is not None:
        client.close()
    shutil.rmtree(work_dir, ignore_errors=True)
