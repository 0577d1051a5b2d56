"""What the helper modules of ``MigrateKeysOperator`` read of it: a protocol, not the operator's class.

The operator's module imports its helpers (``migrate_keys_inputs``, ``migrate_keys_outputs``,
``lineage``); a helper that takes the operator types it as :class:`MigrateKeysTask`, so that no helper
imports the operator's module (an import circle). mypy checks that the operator has each attribute
named here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.sdk.types import Logger


class MigrateKeysTask(Protocol):
    """A ``MigrateKeysOperator``, as its helpers read it: ``BaseOperator``'s attributes and its arguments."""

    # BaseOperator's
    @property
    def log(self) -> Logger: ...
    @property
    def dag_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def do_xcom_push(self) -> bool: ...

    # The migration
    @property
    def api_id(self) -> str: ...
    @property
    def unkey_conn_id(self) -> str: ...
    @property
    def validate_only(self) -> bool: ...

    # The source
    @property
    def parquet_path(self) -> str | list[str] | None: ...
    @property
    def partition(self) -> dict[str, Any] | None: ...
    @property
    def sql(self) -> str | None: ...
    @property
    def sql_conn_id(self) -> str | None: ...
    @property
    def parameters(self) -> Mapping[str, Any] | Sequence[Any] | None: ...
    @property
    def hook_params(self) -> dict[str, Any] | None: ...

    # The ledger and the outputs
    @property
    def ledger_flush_interval(self) -> float: ...
    @property
    def output_conn_id(self) -> str | None: ...
    @property
    def output_table_prefix(self) -> str | None: ...
    @property
    def xcom_max_rows(self) -> int: ...
    @property
    def max_invalid_ratio(self) -> float | None: ...
    @property
    def max_failed_ratio(self) -> float | None: ...
