"""Record: every row's one outcome, the run's progress and its report, and where outcomes are copied.

Nothing here imports Airflow. :class:`OutcomeWriter` streams each outcome to ``migrated.parquet``,
``failed.parquet`` (and ``skipped.parquet``), passing new ones to an :class:`OutcomeRecorder` such as
the ledger; :class:`Reason` and :class:`Stage` say why and where a row was not migrated.
:class:`Progress` logs the run as it goes (and hands each :class:`ProgressListener` a
:class:`ProgressSnapshot`, with the sender's :class:`SendingState`), :class:`MigrationSummary` sums it
up, :class:`Timeline` keeps its samples and :func:`write_report` turns them into ``report.md``. :func:`copy_outputs` and
:class:`SqlOutcomeSink` take the outputs on to object storage or SQL tables.
"""

from __future__ import annotations

from airflow_provider_unkey.migration.record.outcomes import (
    FAILED_SCHEMA,
    MIGRATED_SCHEMA,
    SKIPPED_SCHEMA,
    OutcomeRecorder,
    OutcomeWriter,
)
from airflow_provider_unkey.migration.record.progress import (
    MigrationSummary,
    Progress,
    ProgressListener,
    ProgressSnapshot,
    SendingState,
)
from airflow_provider_unkey.migration.record.reasons import Reason, Stage
from airflow_provider_unkey.migration.record.report import PLOT_FILE, REPORT_FILE, write_report
from airflow_provider_unkey.migration.record.sinks import (
    OUTPUT_FILES,
    SqlOutcomeSink,
    copy_outputs,
    validate_table_prefix,
)
from airflow_provider_unkey.migration.record.timeline import Sample, Timeline

__all__ = [
    "FAILED_SCHEMA",
    "MIGRATED_SCHEMA",
    "OUTPUT_FILES",
    "PLOT_FILE",
    "REPORT_FILE",
    "SKIPPED_SCHEMA",
    "MigrationSummary",
    "OutcomeRecorder",
    "OutcomeWriter",
    "Progress",
    "ProgressListener",
    "ProgressSnapshot",
    "Reason",
    "Sample",
    "SendingState",
    "SqlOutcomeSink",
    "Stage",
    "Timeline",
    "copy_outputs",
    "validate_table_prefix",
    "write_report",
]
