"""Arrow allocates from jemalloc while a migration runs, and the pool the process had comes back after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_unkey.arrow_memory import returning_arrow_memory
from airflow_provider_unkey.migration.engine import MigrationConfig, run_migration

try:
    pa.jemalloc_memory_pool()
    JEMALLOC = True
except NotImplementedError:
    JEMALLOC = False

needs_jemalloc = pytest.mark.skipif(not JEMALLOC, reason="this pyarrow build has no jemalloc")


@pytest.fixture(autouse=True)
def _no_user_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)


@pytest.fixture
def system_pool() -> Iterator[None]:
    """The process starts the test on the system pool, so that a switch is visible."""
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    yield
    pa.set_memory_pool(before)


@needs_jemalloc
def test_within_the_block_arrow_allocates_from_jemalloc_and_after_it_from_the_pool_it_had(
    system_pool: object,
) -> None:
    with returning_arrow_memory() as backend:
        assert backend == "jemalloc" == pa.default_memory_pool().backend_name
        buffer = pa.array(range(100_000))  # allocated from jemalloc, freed after the switch back
    assert pa.default_memory_pool().backend_name == "system"
    del buffer


@needs_jemalloc
def test_nested_blocks_switch_once_and_the_outermost_switches_back(system_pool: object) -> None:
    with returning_arrow_memory():
        with returning_arrow_memory() as inner:
            assert inner == "jemalloc"
        assert pa.default_memory_pool().backend_name == "jemalloc"
    assert pa.default_memory_pool().backend_name == "system"


def test_a_pool_the_user_chose_is_left_alone(system_pool: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    with returning_arrow_memory() as backend:
        assert backend == "system"
    assert pa.default_memory_pool().backend_name == "system"


def test_the_pool_comes_back_when_the_block_raises(system_pool: object) -> None:
    with pytest.raises(RuntimeError), returning_arrow_memory():
        raise RuntimeError("the run failed")
    assert pa.default_memory_pool().backend_name == "system"


@needs_jemalloc
def test_run_migration_reads_its_source_with_jemalloc(system_pool: object, tmp_path: Path) -> None:
    seen: list[str] = []

    def source() -> Iterator[pa.RecordBatch]:
        seen.append(pa.default_memory_pool().backend_name)  # read lazily, inside the run
        yield pa.record_batch({"hash": pa.array([], pa.string())})

    config = MigrationConfig("mig_test", "api_test", dry_run=True)
    summary = run_migration(source(), None, config, tmp_path)
    assert seen == ["jemalloc"]
    assert summary.total == 0
    assert pa.default_memory_pool().backend_name == "system"
