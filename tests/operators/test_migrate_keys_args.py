"""MigrateKeysOperator's arguments: checked when the DAG is parsed, not when the task runs."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator


def make(**kwargs: Any) -> MigrateKeysOperator:
    base: dict[str, Any] = {"task_id": "t", "migration_id": "mig", "api_id": "api", "parquet_path": "/x"}
    base.update(kwargs)
    return MigrateKeysOperator(**{k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parquet_path": None}, "exactly one source"),
        ({"sql": "SELECT 1", "sql_conn_id": "db"}, "exactly one source"),
        ({"parquet_path": None, "sql": "SELECT 1"}, "needs sql_conn_id"),
        ({"hash_format": "md5"}, "hash_format"),
        ({"algorithm": "bcrypt"}, "unknown migration algorithm"),
        ({"column_mapping": {"hash": "h", "prefix": "p"}}, "unknown key fields"),
        ({"batch_size": 0}, "at least 1"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
        ({"migration_id": ""}, "migration_id must be a non-empty string"),
        ({"list_delimiter": ""}, "list_delimiter must not be empty"),
        ({"column_mapping": {"hash": ""}}, "must name a source column"),
        ({"progress_interval": -1}, "progress_interval"),
        ({"max_request_bytes": 11 * 1024 * 1024}, "max_request_bytes"),
        ({"max_failed_ratio": 1.5}, "between 0 and 1"),
        ({"output_conn_id": "db"}, "go together"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_templated_settings_not_yet_rendered_pass_the_parse() -> None:
    class XComArgLike:
        """What a templated field holds before rendering when it is not text (an XComArg, say)."""

    make(migration_id=XComArgLike(), api_id=XComArgLike())
    make(column_mapping="{{ params.column_mapping }}")
    make(column_mapping={"hash": XComArgLike(), "name": "{{ params.name_column }}"})


def test_rendered_settings_are_checked_when_the_task_runs() -> None:
    op = make(column_mapping="{{ params.column_mapping }}")
    op.column_mapping = {"hash": "h", "prefix": "p"}  # as rendering would leave it
    with pytest.raises(ValueError, match="unknown key fields"):
        op._migration_config()
    op.column_mapping, op.api_id = {"hash": "h"}, "api_rendered"
    config = op._migration_config()
    assert (config.api_id, config.column_mapping) == ("api_rendered", {"hash": "h"})


def test_the_operator_settings_become_the_config() -> None:
    op = make(algorithm="seam", hash_format="sha256_hex", batch_size=5, dry_run=True, list_skipped=True)
    config = op._migration_config()
    assert config.algorithm == "github.com/seamapi/prefixed-api-key"
    assert (config.hash_format, config.batch_size, config.dry_run, config.list_skipped) == (
        "sha256_hex",
        5,
        True,
        True,
    )


def test_pool_slots_follow_concurrency() -> None:
    assert make(pool="unkey", max_concurrency=6).pool_slots == 6
    assert make(pool="unkey", max_concurrency=6, pool_slots=2).pool_slots == 2
    assert make(max_concurrency=6).pool_slots == 1


def test_templated_fields() -> None:
    op = make()
    assert {"migration_id", "api_id", "parquet_path", "sql", "output_path"} <= set(op.template_fields)
    assert ".sql" in op.template_ext
