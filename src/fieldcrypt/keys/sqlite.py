"""SQLite key store: the embedded default for one machine (several processes on it may share the file).

Created explicitly (``create=True``: :func:`fieldcrypt.create_key_store`, ``fieldcrypt keys init``); a new file is
mode 0600 (SQLite gives ``keys.db-wal`` and ``keys.db-shm`` the same mode). Opening a file that does not exist,
or that holds no fieldcrypt tables, is a ``ConfigurationError``: a typo never starts an empty store.

Deleted rows are overwritten on disk (``PRAGMA secure_delete``), and after a shred the write-ahead log is
checkpointed and truncated (:meth:`SqliteKeyStore.purge`) so the destroyed wrapped keys do not linger in
``keys.db-wal``. A reader inside a long transaction blocks the truncation: ``purge`` then says so (the shred is
reported "pending" and is retried), it never reports done.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fieldcrypt.errors import ConfigurationError, KeyStoreUnavailableError
from fieldcrypt.keys import _fork
from fieldcrypt.keys._sql import TABLES, Execute, SqlKeyStore
from fieldcrypt.keys.store import check_role, missing_store_error

__all__ = ["SqliteKeyStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fieldcrypt_keys (
    key_id      INTEGER PRIMARY KEY,           -- 1 .. 2^32-1, random, never reused
    domain      TEXT    NOT NULL,
    person      TEXT    NOT NULL,              -- '' for a domain-wide key
    version     INTEGER NOT NULL,
    state       TEXT    NOT NULL,              -- 'active' | 'retired'
    kek_uri     TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    created_at  REAL    NOT NULL,
    encryptions INTEGER NOT NULL DEFAULT 0,
    UNIQUE (domain, person, version)
);
CREATE INDEX IF NOT EXISTS fieldcrypt_keys_person ON fieldcrypt_keys (person);
CREATE UNIQUE INDEX IF NOT EXISTS fieldcrypt_keys_one_active ON fieldcrypt_keys (domain, person) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS fieldcrypt_shredded (
    key_id      INTEGER PRIMARY KEY,
    domain      TEXT    NOT NULL,
    person      TEXT    NOT NULL,
    shredded_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS fieldcrypt_shredded_person ON fieldcrypt_shredded (person);
CREATE INDEX IF NOT EXISTS fieldcrypt_shredded_domain ON fieldcrypt_shredded (domain);
CREATE TABLE IF NOT EXISTS fieldcrypt_audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL    NOT NULL,
    actor       TEXT    NOT NULL,
    operation   TEXT    NOT NULL,
    domain      TEXT,
    person      TEXT    NOT NULL DEFAULT '',
    key_ids     TEXT    NOT NULL DEFAULT '',
    reason      TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT '',
    hash        BLOB    NOT NULL               -- its link in the chain (fieldcrypt.keys.chain)
);
CREATE TABLE IF NOT EXISTS fieldcrypt_audit_seals (
    seq         INTEGER NOT NULL,              -- the audit entry sealed (the chain's head then)
    hash        BLOB    NOT NULL,              -- its hash
    at          REAL    NOT NULL,
    actor       TEXT    NOT NULL,
    kek_uri     TEXT    NOT NULL,              -- the KEK that authenticates the seal
    tag         BLOB    NOT NULL,
    PRIMARY KEY (seq, kek_uri)
);
CREATE TABLE IF NOT EXISTS fieldcrypt_policies (
    fingerprint TEXT    PRIMARY KEY,           -- sha256 of (schema as registered, key domain)
    policy      TEXT    NOT NULL,              -- JSON: the fields producers encrypt, their domains, the data subject
    created_at  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS fieldcrypt_domains (
    domain      TEXT    PRIMARY KEY,
    primary_kek TEXT    NOT NULL,              -- the KEK that wraps the domain's new branch keys
    accepted    TEXT    NOT NULL DEFAULT '[]', -- JSON list: KEKs that may still wrap some of its keys
    created_at  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS fieldcrypt_branches (
    branch_id   INTEGER PRIMARY KEY,           -- from the key ids' space: never a data key's id
    domain      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT    NOT NULL,              -- 'active' | 'retired'
    kek_uri     TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    created_at  REAL    NOT NULL,
    UNIQUE (domain, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS fieldcrypt_branches_one_active ON fieldcrypt_branches (domain) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS fieldcrypt_pseudonym_keys (
    domain      TEXT    NOT NULL,              -- the key domain whose data subjects it names
    kek_uri     TEXT    NOT NULL,              -- the KEK that wraps this copy of the domain's pseudonym key
    wrapped     BLOB    NOT NULL,
    fingerprint TEXT    NOT NULL,              -- names the key (an HMAC of a constant under it)
    created_at  REAL    NOT NULL,
    PRIMARY KEY (domain, kek_uri)
);
CREATE TABLE IF NOT EXISTS fieldcrypt_meta (
    name        TEXT    PRIMARY KEY,           -- 'persons': 'pseudonyms' | 'clear' | 'migrating'
    value       TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS fieldcrypt_audit_append_only_u BEFORE UPDATE ON fieldcrypt_audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS fieldcrypt_audit_append_only_d BEFORE DELETE ON fieldcrypt_audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS fieldcrypt_audit_seals_append_only_u BEFORE UPDATE ON fieldcrypt_audit_seals
    BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS fieldcrypt_audit_seals_append_only_d BEFORE DELETE ON fieldcrypt_audit_seals
    BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;
"""

#: an entry without its link is refused (a writer of an older fieldcrypt would break the chain): a new store's column
#: is NOT NULL; a store made before the chain gets the column from initialize (SQLite adds no NOT NULL column
#: without a default), and this trigger instead
_AUDIT_CHAINED = (
    "CREATE TRIGGER IF NOT EXISTS fieldcrypt_audit_chained BEFORE INSERT ON fieldcrypt_audit WHEN NEW.hash IS NULL "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are hash-chained: an entry without its link is refused'); END"
)


_AUDIT_GUARD_U = (
    "CREATE TRIGGER fieldcrypt_audit_append_only_u BEFORE UPDATE ON fieldcrypt_audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
)


def _path_of(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ConfigurationError(f"SQLite key store URL must start with sqlite:/// (got {url!r})")
    path = url[len("sqlite:///") :]
    if not path:
        raise ConfigurationError("SQLite key store URL names no file")
    if path != ":memory:" and not Path(path).absolute().parent.is_dir():
        raise ConfigurationError(f"directory for the SQLite key store {path!r} does not exist")
    return path


def _new_private_file(path: str) -> None:
    """Create an empty file readable and writable by its owner only (0600, whatever the umask allows)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigurationError(f"cannot create the SQLite key store {path!r}: {exc.strerror}") from None
    os.close(fd)


_CACHE = -65536  # KiB: the page cache of a connection
_SHRED_CACHE = -262144  # KiB: during a shred (SqliteKeyStore.shred)


class SqliteKeyStore(SqlKeyStore):
    def __init__(self, url: str, *, create: bool = False, busy_timeout: float = 30.0) -> None:
        self.url = url
        self._path = _path_of(url)
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._closed = False
        if self._path == ":memory:" and not create:
            raise missing_store_error(url, "is in memory, so it is new and empty: open it with create=True")
        if self._path != ":memory:" and not Path(self._path).exists():
            if not create:
                raise missing_store_error(url, "does not exist")
            _new_private_file(self._path)
        self._db: sqlite3.Connection | None = self._open()
        if create:
            self.initialize()
        else:
            self._check_tables()
        _fork.track(self)

    def initialize(self) -> None:
        try:
            db = self._connection()
            db.executescript(_SCHEMA)
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(fieldcrypt_keys)").fetchall()}
            audit = {str(r[1]): bool(r[3]) for r in db.execute("PRAGMA table_info(fieldcrypt_audit)").fetchall()}
            if "hash" not in audit:
                db.execute("ALTER TABLE fieldcrypt_audit ADD COLUMN hash BLOB")  # a store made before the chain
            if not audit.get("hash"):  # (nullable: an upgraded store's)
                db.execute(_AUDIT_CHAINED)
        except sqlite3.Error as exc:
            raise KeyStoreUnavailableError(f"cannot create the SQLite key store {self._path!r}") from exc
        with self._tx() as ex:
            if "branch_id" not in columns:  # a store made before branch keys
                ex("ALTER TABLE fieldcrypt_keys ADD COLUMN branch_id INTEGER NOT NULL DEFAULT 0", ())
            self._upgrade(ex, time.time())

    def _lift_audit_guard(self, ex: Execute) -> None:
        ex("DROP TRIGGER fieldcrypt_audit_append_only_u", ())

    def _restore_audit_guard(self, ex: Execute) -> None:
        ex(_AUDIT_GUARD_U, ())

    def _check_tables(self) -> None:
        rows = self._read("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'fieldcrypt%'")
        present = {str(r[0]) for r in rows}
        if not present:
            raise missing_store_error(self.url, "holds no fieldcrypt tables (not a key store, or never initialized)")
        if not set(TABLES) <= present:
            raise missing_store_error(self.url, "was created by an older fieldcrypt and needs its tables upgraded")

    def _open(self) -> sqlite3.Connection:
        # mode=rw: never create the file here (only create=True does, above); a file deleted meanwhile is an error
        target = ":memory:" if self._path == ":memory:" else f"file:{quote(str(Path(self._path).absolute()))}?mode=rw"
        try:
            db = sqlite3.connect(
                target, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False, uri=True
            )
            db.execute("PRAGMA secure_delete = ON")
            if self._path != ":memory:":
                db.execute("PRAGMA journal_mode = WAL")
                # key-cache misses read one row by index: map the file and keep a larger page cache, so a store of
                # millions of keys is read from memory instead of through a 2 MiB page cache
                db.execute("PRAGMA mmap_size = 1073741824")
                db.execute(f"PRAGMA cache_size = {_CACHE}")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise KeyStoreUnavailableError(f"cannot open SQLite key store {self._path!r}") from exc
            raise missing_store_error(self.url, "is not an SQLite database") from exc
        return db

    def shred(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`SqlKeyStore.shred`, with a larger page cache for its transaction: a shred of many persons rewrites
        pages all over the table and its indexes, and a page evicted before the commit is written to the WAL twice
        (100,000 persons in a store of 1,000,000: 9 s with the usual 64 MiB, 5 s with 256 MiB; the cache is
        allocated as pages are read, and given back to the usual size after)."""
        with self._lock:
            db = self._connection()
            try:
                db.execute(f"PRAGMA cache_size = {_SHRED_CACHE}")
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            try:
                return super().shred(*args, **kwargs)
            finally:
                if self._db is db:
                    db.execute(f"PRAGMA cache_size = {_CACHE}")

    def _after_fork(self) -> None:
        """In a forked child: never touch the parent's connection (SQLite forbids it); open a new one on next use."""
        self._lock = threading.RLock()
        if self._db is not None:
            _fork.abandon(self._db)
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise KeyStoreUnavailableError("the SQLite key store is closed")
        if self._db is None:
            if self._path == ":memory:":
                raise KeyStoreUnavailableError("an in-memory SQLite key store cannot be used after fork()")
            self._db = self._open()
        return self._db

    def _fail(self, exc: sqlite3.Error) -> KeyStoreUnavailableError:
        return KeyStoreUnavailableError(f"SQLite key store {self._path!r} failed: {type(exc).__name__}")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            db = self._connection()
            try:
                return db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc

    @contextmanager
    def _tx(self, lock: tuple[str, str] | None = None) -> Iterator[Execute]:
        with self._lock:
            db = self._connection()

            def ex(sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return db.execute(sql, tuple(args)).fetchall()

            try:
                db.execute("BEGIN IMMEDIATE")  # one writer at a time across processes
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            try:
                yield ex
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise self._fail(exc) from exc
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def grant(self, role: str, dbrole: str) -> list[str]:
        """SQLite has no database roles: whoever can open the file can do everything a key admin can."""
        check_role(role)
        raise ConfigurationError(
            f"SQLite key store {self._path!r} is single-user: it has no database roles to grant; whoever can read "
            "and write the file can read, create and shred every key, so protect the file (mode 0600, owned by the "
            "one account that runs fieldcrypt). Give producers, consumers, admins and auditors different rights "
            "with a PostgreSQL key store"
        )

    def purge(self) -> bool:
        """Checkpoint and truncate the WAL. False while a reader's open transaction blocks the truncation (the
        destroyed wrapped keys may still be in ``keys.db-wal``); True once the log is empty."""
        if self._path == ":memory:":
            return True
        with self._lock:
            db = self._connection()
            try:
                db.execute("PRAGMA busy_timeout = 1000")  # wait a little for readers; the caller retries
                (busy, _log, _done) = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return int(busy) == 0

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._db is not None:
                    self._db.close()
                    self._db = None
