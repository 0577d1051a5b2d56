"""Fixtures of the operator tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite in the throwaway ``AIRFLOW_HOME``), created or upgraded once
    a module: ``dag.test()`` needs it."""
    from airflow.utils import db

    db.initdb()
