"""PostgreSQL key store, shared by many producers and consumers on many hosts (psycopg 3).

    Keyring("postgresql://fieldcrypt@db.internal:5432/keys", kek)

Creation of a domain's or person's key is serialized with a transaction-scoped advisory lock, and a partial
unique index allows one active key per (domain, person), so concurrent first use on many hosts yields one key. A
shred locks only the rows it deletes, and deletes again until nothing is left, so no key a rotation in flight makes
escapes it (SqlKeyStore._delete) while other persons' key writes go on.
Deleted rows stay in the table file until VACUUM and in WAL, replicas and backups: see docs/key-lifecycle.md.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fieldcrypt.errors import ConfigurationError, KeyStoreUnavailableError
from fieldcrypt.keys import _fork
from fieldcrypt.keys._sql import TABLES, Execute, SqlKeyStore
from fieldcrypt.keys.store import missing_store_error, redact_url, scrub

__all__ = ["PostgresKeyStore"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS fieldcrypt_keys (
        key_id      BIGINT PRIMARY KEY,
        domain      TEXT    NOT NULL,
        person      TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        state       TEXT    NOT NULL,
        kek_uri     TEXT    NOT NULL,
        wrapped     BYTEA   NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        encryptions BIGINT  NOT NULL DEFAULT 0,
        UNIQUE (domain, person, version))""",
    "CREATE INDEX IF NOT EXISTS fieldcrypt_keys_person ON fieldcrypt_keys (person)",
    "CREATE UNIQUE INDEX IF NOT EXISTS fieldcrypt_keys_one_active ON fieldcrypt_keys (domain, person) "
    "WHERE state = 'active'",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_shredded (
        key_id      BIGINT PRIMARY KEY,
        domain      TEXT NOT NULL,
        person      TEXT NOT NULL,
        shredded_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS fieldcrypt_shredded_person ON fieldcrypt_shredded (person)",
    "CREATE INDEX IF NOT EXISTS fieldcrypt_shredded_domain ON fieldcrypt_shredded (domain)",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_audit (
        seq         BIGSERIAL PRIMARY KEY,
        at          DOUBLE PRECISION NOT NULL,
        actor       TEXT NOT NULL,
        operation   TEXT NOT NULL,
        domain      TEXT,
        person      TEXT NOT NULL DEFAULT '',
        key_ids     TEXT NOT NULL DEFAULT '',
        reason      TEXT NOT NULL DEFAULT '',
        detail      TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_policies (
        fingerprint TEXT PRIMARY KEY,
        policy      TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL)""",
    "ALTER TABLE fieldcrypt_keys ADD COLUMN IF NOT EXISTS branch_id BIGINT NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_domains (
        domain      TEXT PRIMARY KEY,
        primary_kek TEXT NOT NULL,
        accepted    TEXT NOT NULL DEFAULT '[]',
        created_at  DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_branches (
        branch_id   BIGINT PRIMARY KEY,
        domain      TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        state       TEXT    NOT NULL,
        kek_uri     TEXT    NOT NULL,
        wrapped     BYTEA   NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        UNIQUE (domain, version))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS fieldcrypt_branches_one_active ON fieldcrypt_branches (domain) "
    "WHERE state = 'active'",
    """CREATE OR REPLACE FUNCTION fieldcrypt_audit_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS fieldcrypt_audit_append_only ON fieldcrypt_audit",
    "CREATE TRIGGER fieldcrypt_audit_append_only BEFORE UPDATE OR DELETE ON fieldcrypt_audit "
    "FOR EACH ROW EXECUTE FUNCTION fieldcrypt_audit_append_only()",
]


def _lock_id(domain: str, person: str) -> int:
    digest = hashlib.blake2b(f"{domain}\0{person}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sql(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresKeyStore(SqlKeyStore):
    _share = " FOR SHARE"

    def __init__(self, url: str, *, create: bool = False, connect_timeout: int = 10) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigurationError(
                "the PostgreSQL key store needs psycopg 3; did you forget to install `fieldcrypt[postgres]`?"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._conn: Any = None
        self._closed = False
        if create:
            self.initialize()
        else:
            self._check_tables()
        _fork.track(self)

    def initialize(self) -> None:
        with self._tx() as ex:
            ex("SELECT pg_advisory_xact_lock(?)", (_lock_id("fieldcrypt", "schema"),))
            for statement in _SCHEMA:
                ex(statement, ())
            self._upgrade(ex, time.time())

    def _check_tables(self) -> None:
        """The database (in its search_path) must hold fieldcrypt's tables: a mistyped database or schema is an
        error, not a new store."""
        rows = self._read(
            "SELECT " + ", ".join("to_regclass(?) IS NOT NULL" for _ in TABLES),
            TABLES,
        )
        present = {t for t, ok in zip(TABLES, rows[0], strict=True) if ok}
        if not present:
            raise missing_store_error(
                self.url, "holds no fieldcrypt tables (wrong database or schema, or never initialized)"
            )
        if present != set(TABLES):
            raise missing_store_error(self.url, "was created by an older fieldcrypt and needs its tables upgraded")

    def _after_fork(self) -> None:
        """In a forked child: the connection's socket is the parent's; leave it to the parent, connect anew."""
        self._lock = threading.RLock()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                fileno = conn.pgconn.socket
            except Exception:
                fileno = None
            _fork.abandon_socket(conn, fileno)

    def _connection(self) -> Any:
        if self._closed:
            raise KeyStoreUnavailableError("the PostgreSQL key store is closed")
        if self._conn is None or self._conn.closed:
            try:
                self._conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout)
            except self._psycopg.Error as exc:
                # not chained: a driver's message about a malformed URL may quote it, secrets included
                reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self.url)
                if isinstance(exc, self._psycopg.ProgrammingError):  # the URL itself is wrong: retrying cannot help
                    raise ConfigurationError(f"PostgreSQL key store URL {redact_url(self.url)!r}: {reason}") from None
                raise KeyStoreUnavailableError(
                    f"cannot reach PostgreSQL key store {redact_url(self.url)!r}: {reason}"
                ) from None
        return self._conn

    def _fail(self, exc: Exception) -> KeyStoreUnavailableError:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None  # reconnect on the next call
        return KeyStoreUnavailableError(f"PostgreSQL key store {redact_url(self.url)!r} failed: {type(exc).__name__}")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.execute(_sql(sql), tuple(args))
                    return list(cur.fetchall())
            except self._psycopg.Error as exc:
                raise self._fail(exc) from exc

    @contextmanager
    def _tx(self, lock: tuple[str, str] | None = None) -> Iterator[Execute]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    if lock is not None:
                        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(*lock),))

                    def ex(sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                        cur.execute(_sql(sql), tuple(args))
                        return list(cur.fetchall()) if cur.description is not None else []

                    yield ex
            except self._psycopg.Error as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
