"""Real databases for tests: a fresh PostgreSQL database per test, a SQLite file, Airflow connections.

A test module makes the fixtures its own by binding them at module level (pytest finds fixtures by
name in the module; a plain ``from tests.databases import postgres_dsn`` works too, but ruff then
reports the test arguments as redefinitions)::

    from tests import databases

    postgres_dsn = databases.postgres_dsn
    sqlite_path = databases.sqlite_path

PostgreSQL is the server at 127.0.0.1:5432 with trust authentication (user ``root``, else
``postgres``). When it cannot be reached, tests that need it are skipped, or fail when the ``CI``
environment variable is set: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USERS = ("root", "postgres")
#: Databases that exist on the server, to connect to while creating and dropping test databases.
PG_ADMIN_DATABASES = ("postgres", "test", "root")


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server, as the first user and database that work."""
    errors = []
    for user in dict.fromkeys((os.environ.get("USER", ""), *PG_USERS)):
        if not user:
            continue
        for dbname in PG_ADMIN_DATABASES:
            try:
                return psycopg.connect(
                    host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True, connect_timeout=3
                )
            except psycopg.OperationalError as exc:
                errors.append(f"{user}@{dbname}: {str(exc).strip()}")
    raise ConnectionError("; ".join(errors))


def _unreachable(reason: str) -> NoReturn:
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover (skip raises)


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A fresh, empty database ``unkey_test_<random>``, dropped afterwards; yields its DSN as a URI.

    The URI (``postgresql://user@127.0.0.1:5432/unkey_test_...``) works for psycopg, psycopg2 and as
    an Airflow connection URI.
    """
    try:
        admin = _admin_connection()
    except ConnectionError as exc:
        _unreachable(str(exc))
    name = f"unkey_test_{secrets.token_hex(6)}"
    user = admin.info.user
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        # A test may leave a connection open (a generator not closed): end it, or DROP would fail.
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        if admin.info.server_version >= 130000:
            drop = sql.Composed([drop, sql.SQL(" WITH (FORCE)")])  # waits until those backends are gone
        admin.execute(drop)
        admin.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """The path of a SQLite database file in the test's temporary directory (created on first use)."""
    return tmp_path / "test.db"


def sqlite_uri(path: str | os.PathLike[str]) -> str:
    """The Airflow connection URI of a SQLite file.

    ``sqlite:///`` and the absolute path without its leading slash: the SQLite provider's hook puts the
    slash back (``sqlite:////abs/path.db`` does not open with apache-airflow-providers-sqlite 4.x).
    """
    return "sqlite:///" + os.path.abspath(os.fspath(path)).lstrip("/")


def register_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, uri: str) -> str:
    """Make ``uri`` the Airflow connection ``conn_id`` for this test (``AIRFLOW_CONN_<ID>``).

    :return: ``conn_id``.
    """
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
    return conn_id


MYSQL_HOST = "127.0.0.1"
MYSQL_PORT = 3306


def mysql_connect() -> Any:
    """A connection to MariaDB/MySQL at 127.0.0.1:3306 (root, database ``test``), through MySQLdb or
    PyMySQL; skips the test when neither driver is installed (the project does not depend on one).
    """
    try:
        import MySQLdb

        return MySQLdb.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", database="test")
    except ImportError:
        pass
    try:
        import pymysql
    except ImportError:
        pytest.skip("no MySQL driver (MySQLdb or pymysql) is installed")
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", database="test")
