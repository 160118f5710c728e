"""Shared fixtures: the real test PostgreSQL server and per-test databases.

Tests that need PostgreSQL use the ``pg_url`` / ``pg_db`` fixtures. When the server is not
reachable they FAIL (never skip): scripts/test.sh starts it (scripts/pg-start.sh).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://pipekit:pk_test_Secret_7731@127.0.0.1:54329/postgres"
PG_ADMIN_URL = os.environ.get("PIPEKIT_TEST_PG", DEFAULT_PG)
PG_PASSWORD = "pk_test_Secret_7731"


def _admin_conn():
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:  # pragma: no cover - environment problem
        pytest.fail(
            f"the test PostgreSQL server is not reachable at {PG_ADMIN_URL.split('@')[-1]}: {e}. "
            "Start it with scripts/pg-start.sh (scripts/test.sh does).",
            pytrace=False,
        )


def _url_for(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def _fresh_database(prefix: str) -> Iterator[str]:
    name = prefix + uuid.uuid4().hex[:12]
    with _admin_conn() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        with _admin_conn() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; yields its libpq URL."""
    yield from _fresh_database("t_")


@pytest.fixture
def pg_db2() -> Iterator[str]:
    """A second fresh PostgreSQL database (cross-database copies)."""
    yield from _fresh_database("t2_")


def jdbc_url(libpq_url: str) -> str:
    """postgresql://u:p@host:port/db -> jdbc:postgresql://host:port/db (user/password kept apart)."""
    rest = libpq_url.split("://", 1)[1]
    hostpart = rest.split("@", 1)[1]
    return "jdbc:postgresql://" + hostpart
