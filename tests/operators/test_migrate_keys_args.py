"""MigrateKeysOperator's arguments: checked when the DAG is parsed, not when the task runs."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_unkey.migration.engine import DEFAULT_MAX_CONCURRENCY
from airflow_provider_unkey.operators import io
from airflow_provider_unkey.operators.migrate_keys import MigrateKeysOperator, _check_arguments


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
        ({"partition": {"by": "files"}}, "by 'row_groups' or by 'hash'"),
        ({"partition": {"by": "hash", "index": 2, "count": 2}}, "0 <= index < count"),
        (
            {"parquet_path": None, "sql": "SELECT 1", "sql_conn_id": "db", "partition": {"by": "hash"}},
            "io.sql_partitions",
        ),
        ({"hook_params": "schema=x"}, "hook_params must be a dict"),
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
        _check_arguments(op._arguments())
    op.column_mapping, op.api_id = {"hash": "h"}, "api_rendered"
    config = _check_arguments(op._arguments())
    assert (config.api_id, config.column_mapping) == ("api_rendered", {"hash": "h"})


def test_the_operator_settings_become_the_config() -> None:
    op = make(algorithm="seam", hash_format="sha256_hex", batch_size=5, validate_only=True, list_skipped=True)
    config = _check_arguments(op._arguments())
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
    assert {"migration_id", "api_id", "parquet_path", "sql", "parameters", "output_path"} <= set(
        op.template_fields
    )
    assert ".sql" in op.template_ext


def test_common_sql_names_and_no_clash_with_base_operator() -> None:
    op = make(
        parquet_path=None, sql="SELECT 1", sql_conn_id="db", parameters={"a": 1}, hook_params={"schema": "s"}
    )
    assert (op.parameters, op.hook_params) == ({"a": 1}, {"schema": "s"})
    assert callable(op.dry_run)  # BaseOperator's, untouched
    for old in ("sql_parameters", "dry_run", "parquet_row_groups", "hash_partition"):
        with pytest.raises(TypeError, match=old):
            make(**{old: True})


# --- mapped tasks: partial() never runs __init__ ----------------------------------------------------


def mapped(partial: dict[str, Any], expand: Any) -> Any:
    from airflow.sdk import DAG

    with DAG("unkey_args_mapped", schedule=None):
        base = {"task_id": "m", "migration_id": "mig", "api_id": "api_12345678"}
        return MigrateKeysOperator.partial(**{**base, **partial}).expand_kwargs(expand)


def test_mapped_tasks_in_a_pool_hold_max_concurrency_slots() -> None:
    parts = [{"parquet_path": "/a"}, {"parquet_path": "/b"}]
    assert mapped({"pool": "unkey", "max_concurrency": 6}, parts).partial_kwargs["pool_slots"] == 6
    assert mapped({"pool": "unkey"}, parts).partial_kwargs["pool_slots"] == DEFAULT_MAX_CONCURRENCY
    # Mapped concurrency: the largest of the literal values.
    varied = [{"parquet_path": "/a", "max_concurrency": 3}, {"parquet_path": "/b", "max_concurrency": 5}]
    assert mapped({"pool": "unkey"}, varied).partial_kwargs["pool_slots"] == 5
    # Given slots win; without a pool, a task takes one slot of the default pool.
    assert (
        mapped({"pool": "unkey", "max_concurrency": 6, "pool_slots": 2}, parts).partial_kwargs["pool_slots"]
        == 2
    )
    assert mapped({"max_concurrency": 6}, parts).partial_kwargs["pool_slots"] == 1


def test_mapped_pool_from_default_args() -> None:
    from airflow.sdk import DAG

    with DAG("unkey_args_default_pool", schedule=None, default_args={"pool": "unkey"}):
        op = MigrateKeysOperator.partial(
            task_id="m", migration_id="mig", api_id="api_12345678", max_concurrency=4
        ).expand_kwargs([{"parquet_path": "/a"}])
    assert op.partial_kwargs["pool"] == "unkey" and op.partial_kwargs["pool_slots"] == 4


@pytest.mark.parametrize(
    ("partial", "expand", "message"),
    [
        (
            {"batch_size": 0},
            [{"parquet_path": "/a"}],
            r"MigrateKeysOperator.partial\(\): batch_size must be at least 1",
        ),
        ({"hash_format": "md5"}, [{"parquet_path": "/a"}], "partial.*hash_format"),
        (
            {},
            [{"parquet_path": "/a"}, {"parquet_path": "/b", "sql": "x"}],
            "expand item 1: give exactly one source",
        ),
        (
            {},
            [{"parquet_path": "/a", "partition": {"by": "hash", "index": 0}}],
            "expand item 0: partition by hash",
        ),
        ({}, [{"sql": "SELECT 1"}], "expand item 0: sql needs sql_conn_id"),
        (
            {"parquet_path": "/a"},
            [{"max_concurrency": 0}],
            "expand item 0: max_concurrency must be at least 1",
        ),
    ],
)
def test_mapped_arguments_fail_at_parse_time(partial: dict[str, Any], expand: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapped(partial, expand)


def test_mapped_arguments_known_only_at_run_time_pass_the_parse() -> None:
    from airflow.sdk import DAG, task

    with DAG("unkey_args_xcom", schedule=None):

        @task
        def parts() -> list[dict[str, Any]]:
            return [{"parquet_path": "/a"}]

        op = MigrateKeysOperator.partial(
            task_id="m", migration_id="mig", api_id="api_12345678", pool="unkey"
        ).expand_kwargs(parts())
        # max_concurrency is not mapped here: its default gives the slots
        assert op.partial_kwargs["pool_slots"] == DEFAULT_MAX_CONCURRENCY
        MigrateKeysOperator.partial(task_id="m2", api_id="api_12345678").expand(
            migration_id=parts(), parquet_path=["/a"]
        )


def test_requests_in_flight_never_exceed_the_slots_held() -> None:
    config = _check_arguments(make(max_concurrency=16)._arguments())
    assert (
        make(pool="unkey", max_concurrency=16, pool_slots=4)._within_pool_slots(config).max_concurrency == 4
    )
    assert make(pool="unkey", max_concurrency=16)._within_pool_slots(config).max_concurrency == 16
    assert make(max_concurrency=16)._within_pool_slots(config).max_concurrency == 16


# --- where the outputs land -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "distributed"),
    [
        ("LocalExecutor", None),
        ("airflow.executors.local_executor.LocalExecutor", None),
        ("CeleryExecutor", "CeleryExecutor"),
        ("KubernetesExecutor,LocalExecutor", "KubernetesExecutor"),
        ("LocalExecutor,CeleryExecutor", None),
        ("celery:airflow.providers.celery.executors.celery_executor.CeleryExecutor", "CeleryExecutor"),
    ],
)
def test_distributed_executor(monkeypatch: pytest.MonkeyPatch, setting: str, distributed: str | None) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", setting)
    assert io.distributed_executor() == distributed
    assert io.distributed_executor("CeleryExecutor") == "CeleryExecutor"  # the task's own executor wins


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/shared rw,relatime shared:2 - nfs4 fs:/export rw
31 22 0:41 / /mnt/gcs rw,relatime shared:3 - fuse.gcsfuse bucket rw
32 30 0:42 / /mnt/shared/scratch rw,relatime shared:4 - tmpfs tmpfs rw
33 22 0:43 / /mnt/my\\040disk rw,relatime shared:5 - xfs /dev/sdb rw
"""


@pytest.mark.parametrize(
    ("path", "disk"),
    [
        ("s3://aws_default@bucket/keys", None),
        ("gs://bucket/keys", None),
        ("/var/lib/airflow/out", "ext4 mounted at /"),
        ("file:///var/lib/airflow/out", "ext4 mounted at /"),
        ("/mnt/shared/unkey/ledger", None),
        ("/mnt/gcs/ledger", None),
        ("/mnt/shared/scratch/out", "tmpfs mounted at /mnt/shared/scratch"),
        ("/mnt/my disk/out", "xfs mounted at /mnt/my disk"),
    ],
)
def test_worker_local_disk(tmp_path: Any, path: str, disk: str | None) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert io.worker_local_disk(path, mountinfo=str(mountinfo)) == disk


def test_a_distributed_executor_with_local_outputs_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    def warnings(output_path: str, ledger_path: str) -> list[str]:
        with capture_logs() as logs:
            op._warn_if_worker_local(output_path, ledger_path)
        return [e["event"] % tuple(e.get("positional_args", ())) for e in logs if e["log_level"] == "warning"]

    monkeypatch.setattr(
        io, "worker_local_disk", lambda path: None if path.startswith("s3://") else "ext4 mounted at /"
    )
    op = make()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert warnings("/data/out", "/data/out/ledger") == []
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert warnings("s3://aws_default@b/out", "s3://aws_default@b/ledger") == []
    [text] = warnings("/data/out", "s3://aws_default@b/ledger")
    assert "outputs (the only record of the key ids Unkey created) go to /data/out" in text
    assert "on this worker's own disk (ext4 mounted at /), under the CeleryExecutor" in text
    assert "Set output_path to shared storage" in text
    [text] = warnings("s3://aws_default@b/out", "/data/ledger")
    assert "ledger (what a retry on another worker resumes from)" in text and "Set ledger_path" in text
