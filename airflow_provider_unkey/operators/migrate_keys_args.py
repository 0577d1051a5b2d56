"""``MigrateKeysOperator``'s arguments: their checks, and the placeholders for values known only later.

The operator checks its arguments when the DAG is parsed (in ``__init__``, and in ``partial()`` for
mapped tasks) and again in ``execute``, once the templated ones are rendered. The checks are here; the
arguments themselves, and their defaults, are ``MigrateKeysOperator.__init__``'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk.definitions._internal.mixins import ResolveMixin

from airflow_provider_unkey.migration.engine import MigrationConfig
from airflow_provider_unkey.migration.read import check_partition

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


#: ``__init__``'s arguments and their defaults; the required ones stand in as not given yet. Filled by
#: :mod:`~airflow_provider_unkey.operators.migrate_keys` once the operator's class exists: its
#: signature is the one list of them, and this module does not import it (that would be a circle).
_ARGUMENT_DEFAULTS: dict[str, Any] = {}


def _argument_defaults(init: Callable[..., None]) -> dict[str, Any]:
    """``init``'s keyword-only arguments and their defaults, as :data:`_ARGUMENT_DEFAULTS` holds them."""
    return {
        name: (_RENDERED_LATER if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(init).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
