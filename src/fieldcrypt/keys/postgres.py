"""PostgreSQL key store, shared by many producers and consumers on many hosts (psycopg 3).

    Keyring("postgresql://fieldcrypt@db.internal:5432/keys", kek)

Creation of a domain's or person's key is serialized with a transaction-scoped advisory lock, and a partial
unique index allows one active key per (domain, person), so concurrent first use on many hosts yields one key. A
shred locks only the rows it deletes, and deletes again until nothing is left, so no key a rotation in flight makes
escapes it (SqlKeyStore._delete) while other persons' key writes go on.
Deleted rows stay in the table file until VACUUM and in WAL, replicas and backups: see docs/key-lifecycle.md.

Least privilege (docs/least-privilege.md): producers create keys, charge leases and record domains and policies
only through the SECURITY DEFINER functions of :mod:`fieldcrypt.keys._pg_roles` (this store always uses them,
whatever role it connects as, so one code path is tested); :meth:`PostgresKeyStore.grant` gives a database role
one of the four fieldcrypt roles. A role that tries what it may not gets a ``ConfigurationError`` naming the act and
the grant that allows it, never ``KeyStoreUnavailableError`` (retrying cannot help).
"""

from __future__ import annotations

import functools
import hashlib
import shlex
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fieldcrypt.errors import ConfigurationError, KeyStoreUnavailableError
from fieldcrypt.keys import _fork
from fieldcrypt.keys._pg_roles import ACTS, FUNCTIONS, GRANTS, Act, function_ddl, signatures
from fieldcrypt.keys._sql import (
    _CHAIN_COLUMNS,
    _KEKS_HELD,
    TABLES,
    Execute,
    SqlKeyStore,
    _domain_record,
    _record,
    unrecorded_error,
)
from fieldcrypt.keys.store import (
    AuditEntry,
    BranchGone,
    DomainKeks,
    KekChanged,
    KeyRecord,
    PseudonymKey,
    ShredRecord,
    WrapFn,
    check_role,
    missing_store_error,
    redact_url,
    scrub,
    with_views,
)

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
    """CREATE TABLE IF NOT EXISTS fieldcrypt_pseudonym_keys (
        domain      TEXT NOT NULL,
        kek_uri     TEXT NOT NULL,
        wrapped     BYTEA NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (domain, kek_uri))""",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_meta (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION fieldcrypt_audit_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS fieldcrypt_audit_append_only ON fieldcrypt_audit",
    "CREATE TRIGGER fieldcrypt_audit_append_only BEFORE UPDATE OR DELETE ON fieldcrypt_audit "
    "FOR EACH ROW EXECUTE FUNCTION fieldcrypt_audit_append_only()",
    # the chain (fieldcrypt.keys.chain): each entry's link (the functions write theirs with fieldcrypt_audit_append)
    "ALTER TABLE fieldcrypt_audit ADD COLUMN IF NOT EXISTS hash BYTEA",
    """CREATE TABLE IF NOT EXISTS fieldcrypt_audit_seals (
        seq         BIGINT NOT NULL,
        hash        BYTEA NOT NULL,
        at          DOUBLE PRECISION NOT NULL,
        actor       TEXT NOT NULL,
        kek_uri     TEXT NOT NULL,
        tag         BYTEA NOT NULL,
        PRIMARY KEY (seq, kek_uri))""",
    "DROP TRIGGER IF EXISTS fieldcrypt_audit_seals_append_only ON fieldcrypt_audit_seals",
    "CREATE TRIGGER fieldcrypt_audit_seals_append_only BEFORE UPDATE OR DELETE ON fieldcrypt_audit_seals "
    "FOR EACH ROW EXECUTE FUNCTION fieldcrypt_audit_append_only()",
]

#: the lock every writer of the audit log takes before it reads the chain's head (held to commit), as the functions'
#: ``fieldcrypt_audit_append`` takes it: fieldcrypt_lock('fieldcrypt audit', 'chain')
_CHAIN_LOCK = ("fieldcrypt audit", "chain")
_F8 = struct.Struct(">d")
#: the types of _CHAIN_COLUMNS, for a binary COPY
_CHAIN_TYPES = ("int8", "float8", "text", "text", "text", "text", "text", "text", "text", "bytea")


def _lock_id(domain: str, person: str) -> int:
    """The advisory lock of (domain, person): the first 8 bytes of sha256(domain NUL person), as the functions'
    ``fieldcrypt_lock`` computes them (an admin's rotation and a producer's creation serialize on it)."""
    digest = hashlib.sha256(f"{domain}\0{person}".encode()).digest()[:8]
    return int.from_bytes(digest, "big", signed=True)


#: how many times one creation may find a different (id, version) to wrap for within its transaction
_ROUNDS = 8


class _Denied(ConfigurationError):
    """A permission the database refused (SQLSTATE 42501); the store's method names what was tried."""


def _sql(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresKeyStore(SqlKeyStore):
    _share = " FOR SHARE"

    # -- set-based: any number of persons, audit entries or shred-log rows in one statement (arrays) ----------------
    def _person_conditions(self, domain: str | None, persons: Iterable[str] | None) -> Iterator[tuple[str, list[Any]]]:
        if persons is None:
            yield from super()._person_conditions(domain, persons)
            return
        people = list(persons)
        args: list[Any]
        if any(" " in p for p in people):
            # %b: arrays sent in binary (psycopg's text form quotes each element with a regular expression)
            cond, args = "person = ANY(%b)", [people]
        else:
            # one string split by the server: psycopg dumps a list element by element in Python (0.15 s per 100,000),
            # and no person here holds a space (pseudonyms never do; an id in clear that does takes the array above)
            cond, args = "person = ANY(string_to_array(%s, ' '))", [" ".join(people)]
        if domain is not None:
            cond += " AND domain = ANY(%b)"
            args.append(list(with_views(domain)))
        yield cond, args

    # ``at`` read as its 8 bytes (float8send): the link covers them, and a float read back as text depends on the
    # session's extra_float_digits
    _chain_select = (
        "SELECT seq, float8send(at), actor, operation, domain, person, key_ids, reason, detail, hash "
        "FROM fieldcrypt_audit WHERE seq > ? ORDER BY seq LIMIT ?"
    )

    def _chain_rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [(r[0], _F8.unpack(bytes(r[1]))[0], *r[2:]) for r in rows]

    def _chain_head(self, ex: Execute) -> tuple[int, bytes | None]:
        ex("SELECT pg_advisory_xact_lock(?)", (_lock_id(*_CHAIN_LOCK),))
        return super()._chain_head(ex)  # (a new statement: READ COMMITTED sees the last holder's commit)

    def _append_audit_rows(self, ex: Execute, rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) < 2:
            super()._append_audit_rows(ex, rows)
            return
        # COPY (INSERT privilege only), binary: the links as bytes, no text escaping
        copy = ex.copy  # type: ignore[attr-defined]  # this store's Execute (_tx)
        copy(f"COPY fieldcrypt_audit ({_CHAIN_COLUMNS}) FROM STDIN (FORMAT BINARY)", rows, _CHAIN_TYPES)

    def _delete_pass(self, ex: Execute, cond: str, args: Sequence[Any], now: float) -> list[ShredRecord]:
        # the rows deleted and logged in one statement (READ COMMITTED: the log gets exactly the rows deleted)
        rows = ex(
            f"WITH d AS (DELETE FROM fieldcrypt_keys WHERE {cond} RETURNING key_id, domain, person), "
            "logged AS (INSERT INTO fieldcrypt_shredded (key_id, domain, person, shredded_at) "
            "SELECT key_id, domain, person, ? FROM d ON CONFLICT (key_id) DO NOTHING) "
            "SELECT key_id, domain, person FROM d",
            [*args, now],
        )
        return [ShredRecord(int(k), str(d), None if p == "" else str(p), now) for k, d, p in rows]

    def _log_shreds(self, ex: Execute, records: Sequence[ShredRecord]) -> None:
        if not records:
            return
        ex(
            "INSERT INTO fieldcrypt_shredded (key_id, domain, person, shredded_at) "
            "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[]) ON CONFLICT (key_id) DO NOTHING",
            [
                [r.key_id for r in records],
                [r.domain for r in records],
                [r.person or "" for r in records],
                [float(r.shredded_at) for r in records],  # (ints and floats cannot share one binary array)
            ],
        )

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
        """Create or upgrade the tables and the producers' functions (owned by the role running this: the store's
        owner, who alone may run it)."""
        try:
            with self._tx() as ex:
                ex("SELECT pg_advisory_xact_lock(?)", (_lock_id("fieldcrypt", "schema"),))
                for statement in _SCHEMA:
                    ex(statement, ())
                (schema,) = ex("SELECT quote_ident(current_schema())", ())[0]
                if schema is None:
                    raise ConfigurationError(
                        f"key store {redact_url(self.url)!r}: no schema of the search_path exists to create the "
                        "key store in"
                    )
                for statement in function_ddl(str(schema)):
                    ex(statement.replace("%", "%%"), ())  # %ROWTYPE is no placeholder
                self._upgrade(ex, time.time())
                # every entry linked (a new store's, or an upgraded one's relinked): an unlinked one is refused from
                # now on (a store with one already is left as it is, for `keys audit --verify` to name it)
                ex(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM fieldcrypt_audit WHERE hash IS NULL) THEN "
                    "ALTER TABLE fieldcrypt_audit ALTER COLUMN hash SET NOT NULL; END IF; END $$",
                    (),
                )
        except _Denied:
            user = self._user()
            raise ConfigurationError(
                f"database role {user!r} may not initialize or upgrade key store {redact_url(self.url)!r}: only the "
                "store's owner (the role that first ran `fieldcrypt keys init`) may, since it owns the tables and "
                "the producers' functions"
            ) from None

    def _check_tables(self) -> None:
        """The database (in its search_path) must hold fieldcrypt's tables: a mistyped database or schema is an
        error, not a new store; and the producers' functions (a store made before them must be upgraded)."""
        names = [f"{name}({types})" for name, types in FUNCTIONS]
        rows = self._read(
            "SELECT "
            + ", ".join(["to_regclass(?) IS NOT NULL"] * len(TABLES) + ["to_regprocedure(?) IS NOT NULL"] * len(names)),
            [*TABLES, *names],
        )
        present = {t for t, ok in zip(TABLES, rows[0], strict=False) if ok}
        if not present:
            raise missing_store_error(
                self.url, "holds no fieldcrypt tables (wrong database or schema, or never initialized)"
            )
        if present != set(TABLES):
            raise missing_store_error(self.url, "was created by an older fieldcrypt and needs its tables upgraded")
        if not all(rows[0][len(TABLES) :]):
            raise missing_store_error(
                self.url, "was created by an older fieldcrypt and needs its functions (least privilege) added"
            )

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
                # every transaction READ COMMITTED, whatever the role's or database's default: the audit chain's
                # head and the shred's DELETE passes read what the last lock holder committed
                self._conn.isolation_level = self._psycopg.IsolationLevel.READ_COMMITTED
            except self._psycopg.Error as exc:
                # not chained: a driver's message about a malformed URL may quote it, secrets included
                reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self.url)
                if isinstance(exc, self._psycopg.ProgrammingError):  # the URL itself is wrong: retrying cannot help
                    raise ConfigurationError(f"PostgreSQL key store URL {redact_url(self.url)!r}: {reason}") from None
                raise KeyStoreUnavailableError(
                    f"cannot reach PostgreSQL key store {redact_url(self.url)!r}: {reason}"
                ) from None
        return self._conn

    def _fail(self, exc: Exception) -> Exception:
        if isinstance(exc, self._psycopg.errors.InsufficientPrivilege):  # retrying cannot help: a clear error
            return _Denied(
                f"database role {self._user()!r} lacks a privilege in key store {redact_url(self.url)!r}; the "
                "store's owner grants one with `fieldcrypt keys grant --role producer|consumer|admin|auditor ROLE`"
            )
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None  # reconnect on the next call
        return KeyStoreUnavailableError(f"PostgreSQL key store {redact_url(self.url)!r} failed: {type(exc).__name__}")

    def _user(self) -> str:
        """The database role this store connects as (a name, never a secret)."""
        conn = self._conn
        try:
            return str(conn.info.user) if conn is not None and not conn.closed else "(not connected)"
        except Exception:
            return "(unknown)"

    def _denied(self, act: Act) -> ConfigurationError:
        user = self._user()
        role, *others = act.roles
        also = f" (or {', '.join(others)})" if others else ""
        return ConfigurationError(
            f"database role {user!r} may not {act.text} in key store {redact_url(self.url)!r}: it is not a fieldcrypt "
            f"{role}{also}; the store's owner grants it with `fieldcrypt keys grant --role {role} {shlex.quote(user)} "
            "--store URL`"
        )

    # -- the producers' writes, through the store's functions (see fieldcrypt.keys._pg_roles) --------------------
    def create(
        self,
        domain: str,
        person: str | None,
        kek_uri: str,
        wrap: WrapFn,
        now: float,
        audit: AuditEntry,
        *,
        retire: int | None = None,
        charge: int = 0,
        key_id: int | None = None,
        branch_id: int = 0,
    ) -> KeyRecord:
        owner = person or ""
        fixed = (domain, owner, kek_uri, now, retire, charge, branch_id)
        said = (audit.at, audit.actor, audit.operation, audit.reason, audit.detail)
        with self._tx() as ex:
            proposal: tuple[int | None, int | None, bytes | None] = (key_id, None, None)
            for _ in range(_ROUNDS):
                rows = ex(
                    "SELECT * FROM fieldcrypt_create_key(?::text, ?::text, ?::text, ?::float8, ?::bigint, ?::bigint, "
                    "?::bigint, ?::bigint, ?::integer, ?::bytea, ?::float8, ?::text, ?::text, ?::text, ?::text)",
                    (*fixed, *proposal, *said),
                )
                status, new_id, version, *rest = rows[0]
                if status == "wrap":  # WrapLater from wrap() rolls the transaction back and reaches the caller
                    proposal = (int(new_id), int(version), wrap(int(new_id), int(version)))
                    continue
                if status == "branch-gone":
                    raise BranchGone(branch_id)
                if status not in ("existing", "created"):
                    raise KeyStoreUnavailableError(f"fieldcrypt_create_key answered {status!r}")
                return _record((new_id, domain, owner, version, *rest))
        raise KeyStoreUnavailableError(
            f"could not create a data key in domain {domain!r}: the key store kept giving another id or version"
        )

    def create_branch(
        self,
        domain: str,
        kek_uri: str,
        wrap: WrapFn,
        now: float,
        audit: AuditEntry,
        *,
        retire: int | None = None,
        key_id: int | None = None,
    ) -> KeyRecord:
        said = (audit.at, audit.actor, audit.operation, audit.reason)
        with self._tx() as ex:
            proposal: tuple[int | None, int | None, bytes | None] = (key_id, None, None)
            for _ in range(_ROUNDS):
                rows = ex(
                    "SELECT * FROM fieldcrypt_create_branch(?::text, ?::text, ?::float8, ?::bigint, ?::bigint, "
                    "?::integer, ?::bytea, ?::float8, ?::text, ?::text, ?::text)",
                    (domain, kek_uri, now, retire, *proposal, *said),
                )
                status, new_id, version, kek, wrapped, created, state = rows[0]
                if status == "wrap":
                    proposal = (int(new_id), int(version), wrap(int(new_id), int(version)))
                    continue
                if status == "kek-changed":
                    raise KekChanged(domain, str(kek))
                if status not in ("existing", "created"):
                    raise KeyStoreUnavailableError(f"fieldcrypt_create_branch answered {status!r}")
                return _record((new_id, domain, "", version, kek, wrapped, created, state, 0, 0))
        raise KeyStoreUnavailableError(
            f"could not create a branch key in domain {domain!r}: the key store kept giving another id or version"
        )

    def reserve(self, key_id: int, count: int, limit: int) -> int | None:
        if count < 0 or limit < 0:
            raise ConfigurationError("a lease's count and limit must not be negative")
        (granted,) = self._read("SELECT fieldcrypt_reserve(?::bigint, ?::bigint, ?::bigint)", (key_id, count, limit))[0]
        return None if granted is None else int(granted)

    def claim_domain(
        self, domain: str, kek_uri: str, now: float, audit: AuditEntry, *, accept_held: bool = False
    ) -> DomainKeks:
        if accept_held:  # an admin's map_kek: table privileges, one transaction
            return super().claim_domain(domain, kek_uri, now, audit, accept_held=True)
        found = self.domain_keks(domain)
        if found is not None:
            return found
        others = sorted({str(u) for (u,) in self._read(_KEKS_HELD, (domain, domain))} - {kek_uri})
        if others:
            raise unrecorded_error(domain, others)
        rows = self._read(
            "SELECT * FROM fieldcrypt_claim_domain(?::text, ?::text, ?::float8, ?::float8, ?::text, ?::text, "
            "?::text, ?::text)",
            (domain, kek_uri, now, audit.at, audit.actor, audit.operation, audit.person or "", audit.reason),
        )
        return _domain_record(rows[0])

    def add_pseudonym_key(self, key: PseudonymKey, audit: AuditEntry) -> str:
        recorded = self.domain_keks(key.domain)  # said clearly here; the function refuses it all the same
        if recorded is None or key.kek_uri not in recorded.keks:
            raise ConfigurationError(
                f"KEK {key.kek_uri!r} is not recorded for key domain {key.domain!r}: a pseudonym key is stored only "
                "under the domain's own KEKs"
            )
        rows = self._read(
            "SELECT fieldcrypt_add_pseudonym_key(?::text, ?::text, ?::bytea, ?::text, ?::float8, ?::float8, ?::text, "
            "?::text)",
            (
                key.domain,
                key.kek_uri,
                key.wrapped,
                key.fingerprint,
                key.created_at,
                audit.at,
                audit.actor,
                audit.reason,
            ),
        )
        return str(rows[0][0])

    _in_clear = "person <> '' AND person !~ '^ps1:[A-Za-z0-9_-]{22}$'"
    _position = "strpos"

    def _lift_audit_guard(self, ex: Execute) -> None:
        # ALTER TABLE: the store's owner only, who alone runs the migration (as `keys init`)
        ex("ALTER TABLE fieldcrypt_audit DISABLE TRIGGER fieldcrypt_audit_append_only", ())

    def _restore_audit_guard(self, ex: Execute) -> None:
        ex("ALTER TABLE fieldcrypt_audit ENABLE TRIGGER fieldcrypt_audit_append_only", ())

    def publish_policy(self, fingerprint: str, policy: str, now: float) -> str:
        rows = self._read("SELECT fieldcrypt_publish_policy(?::text, ?::text, ?::float8)", (fingerprint, policy, now))
        return str(rows[0][0])

    def merge_policy(self, name: str, items: Sequence[str], now: float) -> list[str]:
        import json

        rows = self._read("SELECT fieldcrypt_merge_policy(?::text, ?::text[], ?::float8)", (name, list(items), now))
        before = rows[0][0]
        return sorted(json.loads(before)) if before is not None else []

    # -- least privilege ----------------------------------------------------------------------------------------
    def grant(self, role: str, dbrole: str) -> list[str]:
        """Give the database role ``dbrole`` (which must exist: ``CREATE ROLE ... LOGIN`` is the DBA's) what the
        fieldcrypt ``role`` may do in this store (see docs/least-privilege.md); returns the statements run. Run by
        the store's owner; GRANTs only, so it is idempotent and never takes a privilege away."""
        check_role(role)
        if not isinstance(dbrole, str) or not dbrole.strip() or "\x00" in dbrole:
            raise ConfigurationError("the database role to grant must be a non-empty name")
        sql = self._psycopg.sql
        ident = sql.Identifier(dbrole)
        done: list[str] = []
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (dbrole,))
                    if cur.fetchone() is None:
                        raise ConfigurationError(
                            f"database role {dbrole!r} does not exist: create it first (e.g. CREATE ROLE "
                            f"{ident.as_string(conn)} LOGIN, a DBA's task), then grant it a fieldcrypt role"
                        )
                    cur.execute(
                        "SELECT pg_has_role(current_user, c.relowner, 'USAGE'), pg_get_userbyid(c.relowner), "
                        "current_schema() FROM pg_class c WHERE c.oid = 'fieldcrypt_keys'::regclass"
                    )
                    mine, owner, schema = cur.fetchone()
                    if not mine:
                        raise ConfigurationError(
                            f"database role {self._user()!r} may not grant fieldcrypt roles in key store "
                            f"{redact_url(self.url)!r}: only the store's owner ({owner!r}) may; connect as it"
                        )
                    usage = "SELECT has_schema_privilege(%s, %s, 'USAGE')"
                    cur.execute(usage, (dbrole, schema))
                    if not cur.fetchone()[0]:
                        statement = sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
                        cur.execute(statement)
                        done.append(statement.as_string(conn))
                        cur.execute(usage, (dbrole, schema))
                        if not cur.fetchone()[0]:
                            raise ConfigurationError(
                                f"database role {dbrole!r} may not use schema {schema!r}, and {self._user()!r} may "
                                f"not let it: ask the schema's owner to GRANT USAGE ON SCHEMA {schema} TO {dbrole}"
                            )
                    for template in GRANTS[role]:
                        statement = sql.SQL(template).format(role=ident, functions=sql.SQL(signatures()))
                        cur.execute(statement)
                        done.append(statement.as_string(conn))

                    def ex(q: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                        cur.execute(_sql(q), tuple(args))
                        return list(cur.fetchall()) if cur.description is not None else []

                    # the grant is a key admin's act like any other: in the audit log, in the same transaction
                    self._audit(
                        ex,
                        AuditEntry(
                            at=time.time(),
                            actor=f"fieldcrypt keys grant (database role {self._user()})",
                            operation="grant",
                            detail=f"database role {dbrole} is a fieldcrypt {role} ({len(done)} statements)",
                        ),
                    )
            except self._psycopg.Error as exc:
                raise self._fail(exc) from exc
        return done

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

                    def copy(sql: str, rows: Iterable[Sequence[Any]], types: Sequence[str] | None = None) -> None:
                        with cur.copy(sql) as c:
                            if types is not None:
                                c.set_types(list(types))
                            for row in rows:
                                c.write_row(row)

                    ex.copy = copy  # type: ignore[attr-defined]  # many rows at once (_audits)
                    yield ex
            except self._psycopg.Error as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _guard(name: str, act: Act) -> Callable[..., Any]:
    """``PostgresKeyStore.<name>``, with a permission error turned into one that names ``act`` and its grant."""
    method = getattr(PostgresKeyStore, name)

    @functools.wraps(method)
    def guarded(self: PostgresKeyStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _Denied:
            raise self._denied(act) from None

    return guarded


for _name, _act in ACTS.items():
    setattr(PostgresKeyStore, _name, _guard(_name, _act))
