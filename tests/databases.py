"""Real databases for tests: a fresh PostgreSQL or MariaDB/MySQL database per test, a SQLite file,
Airflow connections.

A test module makes the fixtures its own by binding them at module level (pytest finds fixtures by
name in the module; a plain ``from tests.databases import postgres_dsn`` works too, but ruff then
reports the test arguments as redefinitions)::

    from tests import databases

    postgres_dsn = databases.postgres_dsn
    mysql_database = databases.mysql_database
    sqlite_path = databases.sqlite_path

PostgreSQL is the server at 127.0.0.1:5432 with trust authentication (user ``root``, else
``postgres``); MariaDB/MySQL the server at 127.0.0.1:3306 (user ``root``, no password). When a server
cannot be reached, tests that need it are skipped, or fail when the ``CI`` environment variable is
set: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import mysql.connector
import psycopg
import pymysql
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


def _unreachable(server: str, host: str, port: int, reason: str) -> NoReturn:
    message = f"{server} at {host}:{port} is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover (skip raises)


@contextmanager
def fresh_postgres_database(prefix: str = "unkey_test") -> Iterator[str]:
    """A fresh, empty database ``<prefix>_<random>``, dropped afterwards; yields its DSN as a URI.

    The URI (``postgresql://user@127.0.0.1:5432/<prefix>_...``) works for psycopg, psycopg2 and as an
    Airflow connection URI. Skips (fails with ``CI`` set) when PostgreSQL is not reachable.
    """
    try:
        admin = _admin_connection()
    except ConnectionError as exc:
        _unreachable("PostgreSQL", PG_HOST, PG_PORT, str(exc))
    name = f"{prefix}_{secrets.token_hex(6)}"
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
def postgres_dsn() -> Iterator[str]:
    """A fresh, empty database ``unkey_test_<random>`` (:func:`fresh_postgres_database`) for one test."""
    with fresh_postgres_database() as dsn:
        yield dsn


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
MYSQL_USER = "root"
#: The MySQL drivers the ``test`` extra installs, both pure Python: mysql-connector-python (what
#: MySqlHook opens with the connection extra ``{"client": "mysql-connector-python"}``) and PyMySQL
#: (the ``SSCursor`` API that mysqlclient shares).
MYSQL_DRIVERS = ("mysql-connector-python", "pymysql")


def mysql_connect(driver: str, database: str, **kwargs: Any) -> Any:
    """A new connection to ``database`` on the MariaDB/MySQL server at 127.0.0.1:3306, as ``root``.

    :param driver: one of :data:`MYSQL_DRIVERS`.
    :param kwargs: passed to the driver's ``connect``.
    """
    if driver == "pymysql":
        return pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=database, connect_timeout=3, **kwargs
        )
    if driver == "mysql-connector-python":
        return mysql.connector.connect(
            host=MYSQL_HOST,
            port=MYSQL_PORT,
            user=MYSQL_USER,
            database=database,
            connection_timeout=3,
            **kwargs,
        )
    raise ValueError(f"unknown MySQL driver {driver!r}: use one of {MYSQL_DRIVERS}")


@dataclass(frozen=True)
class MySqlDatabase:
    """A database on the MariaDB/MySQL server, made for one test."""

    name: str

    def connect(self, driver: str = "mysql-connector-python", **kwargs: Any) -> Any:
        """A new connection to this database through ``driver`` (see :func:`mysql_connect`)."""
        return mysql_connect(driver, self.name, **kwargs)

    @property
    def uri(self) -> str:
        """The database as an Airflow connection URI (``mysql://root@127.0.0.1:3306/<name>``)."""
        return f"mysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{self.name}"


@pytest.fixture
def mysql_database() -> Iterator[MySqlDatabase]:
    """A fresh, empty database ``unkey_test_<random>`` on MariaDB/MySQL at 127.0.0.1:3306 (user ``root``,
    no password), dropped afterwards.

    When the server cannot be reached the test is skipped, or fails when ``CI`` is set.
    """
    try:
        admin = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, autocommit=True, connect_timeout=3
        )
    except pymysql.err.MySQLError as exc:
        _unreachable("MariaDB/MySQL", MYSQL_HOST, MYSQL_PORT, str(exc))
    name = f"unkey_test_{secrets.token_hex(6)}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield MySqlDatabase(name)
    finally:
        with admin.cursor() as cursor:
            # A test may leave a connection open (a generator not closed): end it, or DROP would wait
            # for the metadata locks its query holds.
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                (name,),
            )
            for (thread,) in cursor.fetchall():
                with suppress(pymysql.err.MySQLError):  # it may have ended meanwhile
                    cursor.execute(f"KILL {int(thread)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
