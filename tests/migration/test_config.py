"""MigrationConfig: every setting of a run checked once, normalised, then frozen."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from airflow_provider_unkey import rules
from airflow_provider_unkey.client import RetryPolicy
from airflow_provider_unkey.migration import engine
from airflow_provider_unkey.migration.config import MIN_REQUEST_BYTES, MigrationConfig

BASE: dict[str, Any] = {"migration_id": "mig", "api_id": "api"}


def make(**changes: Any) -> MigrationConfig:
    return MigrationConfig(**{**BASE, **changes})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("migration_id", "", "migration_id must be a non-empty string"),
        ("migration_id", None, "migration_id must be a non-empty string"),
        ("api_id", "", "api_id must be a non-empty string"),
        ("api_id", 7, "api_id must be a non-empty string"),
        ("column_mapping", "{{ params.mapping }}", "column_mapping must map key fields"),
        (
            "column_mapping",
            {"hash": "h", "prefix": "p"},
            r"column_mapping names unknown key fields \['prefix'\]",
        ),
        ("column_mapping", {"hash": ""}, "column_mapping must name a source column"),
        ("column_mapping", {"hash": 3}, "column_mapping must name a source column"),
        ("hash_format", "md5", "hash_format must be one of"),
        ("algorithm", "bcrypt", "unknown migration algorithm 'bcrypt'"),
        ("algorithm", None, "algorithm must be a string"),
        ("list_delimiter", "", "list_delimiter must not be empty"),
        ("batch_size", 0, "batch_size must be at least 1, got 0"),
        ("batch_size", 1.5, "batch_size must be an integer"),
        ("batch_size", True, "batch_size must be an integer"),
        ("max_request_bytes", MIN_REQUEST_BYTES - 1, "max_request_bytes must be between"),
        ("max_request_bytes", rules.MAX_BODY_BYTES + 1, "max_request_bytes must be between"),
        ("max_request_bytes", "4MiB", "max_request_bytes must be an integer"),
        ("max_concurrency", 0, "max_concurrency must be at least 1"),
        ("max_concurrency", -3, "max_concurrency must be at least 1"),
        ("retry", {"max_attempts": 3}, "retry must be a RetryPolicy"),
        ("dry_run", "yes", "dry_run must be True or False"),
        ("progress_interval", -1.0, "progress_interval must be a number of seconds"),
        ("progress_interval", float("nan"), "progress_interval must be a number of seconds"),
        ("progress_interval", "5", "progress_interval must be a number of seconds"),
        ("list_skipped", None, "list_skipped must be True or False"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_each_bad_value_names_its_argument(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        make(**{field: value})
    assert field in str(caught.value)


def test_defaults_are_the_engine_defaults() -> None:
    config = make()
    assert config.batch_size == engine.DEFAULT_BATCH_SIZE
    assert config.max_request_bytes == engine.DEFAULT_MAX_REQUEST_BYTES
    assert config.max_concurrency == engine.DEFAULT_MAX_CONCURRENCY
    assert (config.column_mapping, config.retry, config.dry_run, config.list_skipped) == (
        None,
        None,
        False,
        False,
    )


def test_limits_are_inclusive() -> None:
    assert make(max_request_bytes=MIN_REQUEST_BYTES).max_request_bytes == MIN_REQUEST_BYTES
    assert make(max_request_bytes=rules.MAX_BODY_BYTES).max_request_bytes == rules.MAX_BODY_BYTES
    assert make(batch_size=1, max_concurrency=1, progress_interval=0).progress_interval == 0


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("sha256", rules.ALGORITHM_SHA256),
        ("seam", rules.ALGORITHM_SEAM),
        (rules.ALGORITHM_SEAM, rules.ALGORITHM_SEAM),
    ],
)
def test_the_algorithm_is_kept_under_its_canonical_name(given: str, canonical: str) -> None:
    assert make(algorithm=given).algorithm == canonical


def test_the_mapping_is_a_frozen_copy() -> None:
    given = {"hash": "key_hash", "name": "label"}
    config = make(column_mapping=given)
    given["name"] = "changed"
    assert config.column_mapping == {"hash": "key_hash", "name": "label"}
    with pytest.raises(TypeError):
        config.column_mapping["hash"] = "other"  # type: ignore[index]


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(MigrationConfig)])
def test_the_config_is_frozen(field: str) -> None:
    config = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))


def test_replace_checks_again() -> None:
    config = make(batch_size=10)
    assert dataclasses.replace(config, api_id="other").batch_size == 10
    with pytest.raises(ValueError, match="api_id"):
        dataclasses.replace(config, api_id="")


def test_the_config_pickles_and_copies() -> None:
    config = make(
        column_mapping={"hash": "h", "roles": "r"},
        algorithm="seam",
        hash_format="sha256_hex",
        retry=RetryPolicy(max_attempts=2),
        dry_run=True,
        list_skipped=True,
        progress_interval=0.5,
    )
    for again in (pickle.loads(pickle.dumps(config)), copy.deepcopy(config), copy.copy(config)):
        assert again == config
        assert again.column_mapping == {"hash": "h", "roles": "r"}
        with pytest.raises(TypeError):
            again.column_mapping["hash"] = "x"  # type: ignore[index]


def test_the_engine_exports_the_config() -> None:
    assert engine.MigrationConfig is MigrationConfig
    assert "MigrationConfig" in engine.__all__
