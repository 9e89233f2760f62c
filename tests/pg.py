"""PostgreSQL for tests: 127.0.0.1:5432, database ``test``, trust auth. Each test gets its own schema.

With CI=true an unreachable server fails the test; elsewhere such tests skip with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_BASE = os.environ.get("FIELDCRYPT_TEST_PG", "postgresql://root@127.0.0.1:5432/test")


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5)


def require_pg() -> None:
    try:
        _admin_connect().close()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"PostgreSQL at {PG_BASE} is unreachable in CI: {exc}") from exc
        pytest.skip(f"PostgreSQL at {PG_BASE} is unreachable: {type(exc).__name__}")


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A key store URL whose tables live in a fresh schema, dropped afterwards."""
    require_pg()
    schema = f"fc_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in PG_BASE else "?"
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    finally:
        with _admin_connect() as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
