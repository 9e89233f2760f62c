"""The SQL both built-in key stores share; SQLite and PostgreSQL differ only in connections, locking and DDL."""

from __future__ import annotations

import abc
import math
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from fieldcrypt.errors import ConfigurationError, KeyStoreUnavailableError
from fieldcrypt.keys import chain
from fieldcrypt.keys.store import (
    AuditEntry,
    BranchGone,
    DomainKeks,
    KekChanged,
    KeyRecord,
    KeyStore,
    PseudonymKey,
    ShredRecord,
    WrapFn,
    check_shred_target,
    with_views,
)

__all__ = ["TABLES", "Execute", "SqlKeyStore"]

#: the tables every built-in store holds; a store missing some of them must be initialized (or upgraded) first
TABLES = (
    "fieldcrypt_keys",
    "fieldcrypt_shredded",
    "fieldcrypt_audit",
    "fieldcrypt_audit_seals",
    "fieldcrypt_policies",
    "fieldcrypt_domains",
    "fieldcrypt_branches",
    "fieldcrypt_pseudonym_keys",
    "fieldcrypt_meta",
)

#: runs one statement inside the current transaction and returns its rows
Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

_COLUMNS = "key_id, domain, person, version, kek_uri, wrapped, created_at, state, encryptions, branch_id"
_BRANCH_COLUMNS = "branch_id, domain, '', version, kek_uri, wrapped, created_at, state, 0, 0"
_BATCH = 500
#: audit entries per INSERT statement (10 parameters each)
_AUDIT_BATCH = 90
#: the columns of an audit entry, as the chain reads them (chain.Row)
_CHAIN_COLUMNS = "seq, at, actor, operation, domain, person, key_ids, reason, detail, hash"
#: audit entries read per statement when the chain is checked or relinked
_CHAIN_PAGE = 5000
_CHAIN_AFTER = f"SELECT {_CHAIN_COLUMNS} FROM fieldcrypt_audit WHERE seq > ? ORDER BY seq LIMIT ?"


def _conditions(domain: str | None, persons: Iterable[str] | None) -> Iterator[tuple[str, list[Any]]]:
    """WHERE clauses (with their arguments) selecting a domain's rows, or some persons' rows (in one domain, or in
    all), in batches of at most ``_BATCH`` persons. A domain counts with the domain of its masked views."""
    domains = with_views(domain) if domain is not None else []
    in_domains = f"domain IN ({', '.join('?' * len(domains))})"
    if persons is None:
        yield in_domains, list(domains)
        return
    people = sorted(persons)  # in index order: each batch reads and rewrites neighbouring index pages
    for i in range(0, len(people), _BATCH):
        chunk = people[i : i + _BATCH]
        cond = f"person IN ({', '.join('?' * len(chunk))})"
        args: list[Any] = list(chunk)
        if domain is not None:
            cond += f" AND {in_domains}"
            args += domains
        yield cond, args


def _audit_row(entry: AuditEntry) -> list[Any]:
    """An audit entry's column values, as ``fieldcrypt_audit`` holds them (after ``seq``)."""
    return [
        float(entry.at),  # (a clock may give ints: one array type on PostgreSQL)
        entry.actor,
        entry.operation,
        entry.domain,
        entry.person or "",
        ",".join([f"0x{k:08x}" for k in entry.key_ids]) if entry.key_ids else "",  # (format_key_id's form)
        entry.reason,
        entry.detail,
    ]


def _where(domain: str | None, person: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause (empty without filters) and its arguments, for the domain and person given."""
    where, args = [], []
    if domain is not None:
        where.append("domain = ?")
        args.append(domain)
    if person is not None:
        where.append("person = ?")
        args.append(person)
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


def _record(row: Sequence[Any]) -> KeyRecord:
    key_id, domain, person, version, kek_uri, wrapped, created_at, state, encryptions, branch_id = row
    return KeyRecord(
        key_id=int(key_id),
        domain=str(domain),
        person=None if person == "" else str(person),
        version=int(version),
        kek_uri=str(kek_uri),
        wrapped=bytes(wrapped),
        created_at=float(created_at),
        state=str(state),
        encryptions=int(encryptions),
        branch_id=int(branch_id or 0),
    )


#: the KEKs that wrap keys of a domain (its branch keys, and data keys wrapped by a KEK itself)
_KEKS_HELD = (
    "SELECT kek_uri FROM fieldcrypt_keys WHERE domain = ? AND branch_id = 0 "
    "UNION SELECT kek_uri FROM fieldcrypt_branches WHERE domain = ?"
)


def unrecorded_error(domain: str, others: Sequence[str]) -> ConfigurationError:
    """A writer's claim of a domain that holds keys other KEKs wrap, with no record of its KEKs."""
    return ConfigurationError(
        f"key domain {domain!r} holds keys wrapped by {', '.join(map(repr, others))}, which no record of its KEKs "
        f"names: a key admin records them (`fieldcrypt kek map {domain} URI`, which accepts the KEKs its keys name)"
    )


def _domain_record(row: Sequence[Any]) -> DomainKeks:
    import json

    domain, primary, accepted = row
    return DomainKeks(str(domain), str(primary), tuple(str(u) for u in json.loads(accepted or "[]")))


def _shred(row: Sequence[Any]) -> ShredRecord:
    key_id, domain, person, at = row
    return ShredRecord(int(key_id), str(domain), None if person == "" else str(person), float(at))


class SqlKeyStore(KeyStore):
    """Implements the KeyStore contract in portable SQL (``?`` placeholders; dialects translate them)."""

    @abc.abstractmethod
    def _tx(self, lock: tuple[str, str] | None = None) -> AbstractContextManager[Execute]:
        """A write transaction; with ``lock``, serialized against other writers of that (domain, person)."""

    @abc.abstractmethod
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One read-only statement."""

    _lock = threading.RLock()
    supports_branches = True

    def _upgrade(self, ex: Execute, now: float) -> None:
        """After the tables exist: record the KEK of every domain without a record whose keys one KEK wraps, once,
        with an audit entry each. A domain whose keys several KEKs wrap is left for an admin (``fieldcrypt kek map``,
        :meth:`unrecorded_domains`): which of them is genuine is not something key rows, which anyone who can write
        them can plant, may decide."""
        if (
            not ex("SELECT 1 FROM fieldcrypt_audit WHERE hash IS NOT NULL LIMIT 1", ())
            and not ex("SELECT 1 FROM fieldcrypt_audit_seals LIMIT 1", ())
            and ex("SELECT 1 FROM fieldcrypt_audit LIMIT 1", ())
        ):
            # a store made before the audit log was chained: its entries so far become the chain's start, and an entry
            # says so (once: a store with any chained entry or any seal is never relinked here, so an entry added or
            # changed outside fieldcrypt stays a break for `keys audit --verify` to name, not something an upgrade
            # launders)
            (count,) = ex("SELECT COUNT(*) FROM fieldcrypt_audit", ())[0]
            self._lift_audit_guard(ex)
            self._relink(ex)
            self._restore_audit_guard(ex)
            self._audit(
                ex,
                AuditEntry(
                    at=now,
                    actor="fieldcrypt keys init",
                    operation="audit-chain",
                    reason="the audit log is hash-chained from here on",
                    detail=f"the {count} entries written before the chain were linked as they were found",
                ),
            )
        rows = ex(
            "SELECT k.domain, MIN(k.kek_uri) FROM fieldcrypt_keys k "
            "WHERE NOT EXISTS (SELECT 1 FROM fieldcrypt_domains d WHERE d.domain = k.domain) "
            "GROUP BY k.domain HAVING COUNT(DISTINCT k.kek_uri) = 1",
            (),
        )
        for domain, kek_uri in rows:
            domain, keks = str(domain), [str(kek_uri)]
            ex(
                "INSERT INTO fieldcrypt_domains (domain, primary_kek, accepted, created_at) VALUES (?, ?, '[]', ?)",
                (domain, keks[0], now),
            )
            self._audit(
                ex,
                AuditEntry(
                    at=now,
                    actor="fieldcrypt keys init",
                    operation="kek-map",
                    domain=domain,
                    reason="recorded from the keys held when the store was upgraded",
                    detail=f"primary {keks[0]}",
                ),
            )
        if not ex("SELECT 1 FROM fieldcrypt_meta WHERE name = 'persons'", ()):
            # a new store holds pseudonyms from its first key; an upgraded one holding ids waits for its migration
            held = ex(
                "SELECT 1 FROM fieldcrypt_keys WHERE person <> '' UNION ALL SELECT 1 FROM fieldcrypt_shredded "
                "WHERE person <> '' UNION ALL SELECT 1 FROM fieldcrypt_audit WHERE person <> '' LIMIT 1",
                (),
            )
            ex("INSERT INTO fieldcrypt_meta (name, value) VALUES ('persons', ?)", ("clear" if held else "pseudonyms",))

    # -- data-subject ids as pseudonyms -----------------------------------------------------------------------------
    supports_pseudonyms = True

    def persons_form(self) -> str:
        rows = self._read("SELECT value FROM fieldcrypt_meta WHERE name = 'persons'")
        return str(rows[0][0]) if rows else "clear"

    def pseudonym_keys(self, domain: str | None = None) -> list[PseudonymKey]:
        # only copies under a KEK recorded for their domain (a copy under any other was planted: ignored), and of
        # the key every copy of the domain shares (add_pseudonym_key refuses any other)
        cols = "p.kek_uri, p.wrapped, p.fingerprint, p.created_at, p.domain, d.primary_kek, d.accepted"
        sql = f"SELECT {cols} FROM fieldcrypt_pseudonym_keys p JOIN fieldcrypt_domains d ON d.domain = p.domain"
        if domain is None:
            rows = self._read(sql + " ORDER BY 5, 4, 1")
        else:
            rows = self._read(sql + " WHERE p.domain = ? ORDER BY 4, 1", (domain,))
        found = []
        for u, w, f, t, d, primary, accepted in rows:
            if str(u) in _domain_record((d, primary, accepted)).keks:
                found.append(PseudonymKey(str(u), bytes(w), str(f), float(t), str(d)))
        return found

    def add_pseudonym_key(self, key: PseudonymKey, audit: AuditEntry) -> str:
        with self._tx((key.domain, "pseudonyms")) as ex:
            rows = ex("SELECT domain, primary_kek, accepted FROM fieldcrypt_domains WHERE domain = ?", (key.domain,))
            if not rows or key.kek_uri not in _domain_record(rows[0]).keks:
                raise ConfigurationError(
                    f"KEK {key.kek_uri!r} is not recorded for key domain {key.domain!r}: a pseudonym key is stored "
                    "only under the domain's own KEKs"
                )
            found = ex("SELECT fingerprint FROM fieldcrypt_pseudonym_keys WHERE domain = ? LIMIT 1", (key.domain,))
            if found and str(found[0][0]) != key.fingerprint:
                return str(found[0][0])
            if not found and key.kek_uri != _domain_record(rows[0]).primary:
                raise ConfigurationError("the first copy of a domain's pseudonym key is under its primary KEK")
            if ex(
                "INSERT INTO fieldcrypt_pseudonym_keys (domain, kek_uri, wrapped, fingerprint, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain, kek_uri) DO NOTHING RETURNING kek_uri",
                (key.domain, key.kek_uri, key.wrapped, key.fingerprint, key.created_at),
            ):
                detail = f"pseudonym key {key.fingerprint} wrapped by {key.kek_uri}"
                self._audit(ex, _with(audit, domain=key.domain, person=None, detail=detail))
        return key.fingerprint

    def drop_pseudonym_copy(self, domain: str, kek_uri: str) -> bool:
        with self._tx((domain, "pseudonyms")) as ex:
            return bool(
                ex(
                    "DELETE FROM fieldcrypt_pseudonym_keys WHERE domain = ? AND kek_uri = ? RETURNING kek_uri",
                    (domain, kek_uri),
                )
            )

    def holds_persons(self, domain: str) -> bool:
        # sargable (person > ''): the partial index on (domain, person) of active keys answers it; a person's retired
        # keys sit beside their active one, and their shredded ones in the shred log
        return bool(
            self._read(
                "SELECT 1 FROM fieldcrypt_keys WHERE state = 'active' AND domain = ? AND person > '' UNION ALL "
                "SELECT 1 FROM fieldcrypt_shredded WHERE domain = ? AND person > '' LIMIT 1",
                (domain, domain),
            )
        )

    def key_domains(self) -> list[str]:
        """Every domain holding an active key or a shred-log entry, by a skip scan of their indexes (one index probe
        per domain, not a scan of every key)."""
        found: set[str] = set()
        for table, cond in (("fieldcrypt_keys", "t.state = 'active' AND "), ("fieldcrypt_shredded", "")):
            rows = self._read(
                "WITH RECURSIVE d(domain) AS ("
                f"SELECT (SELECT MIN(t.domain) FROM {table} t WHERE {cond}t.domain IS NOT NULL) UNION ALL "
                f"SELECT (SELECT MIN(t.domain) FROM {table} t WHERE {cond}t.domain > d.domain) "
                "FROM d WHERE d.domain IS NOT NULL) SELECT domain FROM d WHERE domain IS NOT NULL"
            )
            found.update(str(r[0]) for r in rows)
        return sorted(found)

    def _meta(self, ex: Execute, name: str, value: str) -> None:
        if not ex("UPDATE fieldcrypt_meta SET value = ? WHERE name = ? RETURNING name", (value, name)):
            ex("INSERT INTO fieldcrypt_meta (name, value) VALUES (?, ?)", (name, value))

    def pseudonymize(
        self,
        of: Callable[[str, str], str],
        rewrap: Callable[[KeyRecord, str], bytes],
        fingerprint: str,
        audit: AuditEntry,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        with self._tx() as ex:
            meta = {str(n): str(v) for n, v in ex("SELECT name, value FROM fieldcrypt_meta", ())}
            left = any(
                ex(f"SELECT 1 FROM {t} WHERE {self._in_clear} LIMIT 1", ())
                for t in ("fieldcrypt_keys", "fieldcrypt_shredded", "fieldcrypt_audit")
            )
            if meta.get("persons") == "pseudonyms" and not left:
                return 0  # (ids in clear in a migrated store: an older producer wrote some since; migrated again)
            began = meta.get("migration")
            if began is not None and began != fingerprint:
                raise ConfigurationError(
                    f"a migration of key store {self!r} to pseudonyms began under the pseudonym key {began}, not "
                    f"{fingerprint}: finish it with a keyring holding a KEK of that key"
                )
            first = ex(f"SELECT MIN(seq) FROM fieldcrypt_audit WHERE {self._in_clear}", ())[0][0]
            if first is not None:
                self._check_relink(ex, int(first))
            self._meta(ex, "migration", fingerprint)
            self._meta(ex, "persons", "migrating")
            (total,) = ex(f"SELECT COUNT(*) FROM fieldcrypt_keys WHERE {self._in_clear}", ())[0]
        done = 0
        # the data keys still in clear (whatever their ids: a producer of an older fieldcrypt may have added some
        # meanwhile), in batches, each committed on its own: a run stopped anywhere resumes with what is left. A row
        # changes only if it still holds the id read (compare-and-swap), so two runs at once never hash one twice.
        while True:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE {self._in_clear} ORDER BY key_id LIMIT ?", (_BATCH,)
            )
            if not rows:
                break
            items = []
            for record in map(_record, rows):
                assert record.person is not None
                named = of(record.domain, record.person)
                items.append((named, rewrap(record, named), record.key_id, record.person))
            with self._tx() as ex:
                for item in items:
                    if ex(
                        "UPDATE fieldcrypt_keys SET person = ?, wrapped = ? WHERE key_id = ? AND person = ? "
                        "RETURNING key_id",
                        item,
                    ):
                        done += 1
                self._meta(ex, "migrated_upto", str(items[-1][2]))
            if progress is not None:
                progress(done, int(total))
        # the shred log and the audit log, and the store's form, in one transaction (all or nothing); another run
        # that finished first leaves nothing to do
        with self._tx() as ex:
            if ex(f"SELECT 1 FROM fieldcrypt_keys WHERE {self._in_clear} LIMIT 1", ()):
                raise KeyStoreUnavailableError(
                    "data keys in clear were added while the store was migrated to pseudonyms (a producer of an "
                    "older fieldcrypt?): stop every producer and run the migration again"
                )
            # the shred log: each id by its pseudonym in its row's domain
            for domain, p in ex(f"SELECT DISTINCT domain, person FROM fieldcrypt_shredded WHERE {self._in_clear}", ()):
                ex(
                    "UPDATE fieldcrypt_shredded SET person = ? WHERE domain = ? AND person = ?",
                    (of(str(domain), str(p)), domain, p),
                )
            # the audit log: by the entry's domain; an entry without one (a person's shred across domains) by the
            # domain of its first key
            entries = ex(f"SELECT seq, domain, person, key_ids FROM fieldcrypt_audit WHERE {self._in_clear}", ())
            if entries:
                start = min(int(e[0]) for e in entries)
                self._check_relink(ex, start)
                self._lift_audit_guard(ex)
                for seq, domain, p, key_ids in entries:
                    where = str(domain or "") or self._domain_of_keys(ex, str(key_ids or ""))
                    ex("UPDATE fieldcrypt_audit SET person = ? WHERE seq = ?", (of(where, str(p)), seq))
                self._relink(ex, start)  # the entries changed, so their links did: relinked from the first (said so)
                self._restore_audit_guard(ex)
            detail = f"data-subject ids replaced by pseudonyms (key {fingerprint}); {done} data keys rewrapped"
            if entries:
                detail += f"; the audit chain relinked from entry {start} ({len(entries)} entries rewritten)"
            self._audit(ex, _with(audit, domain=None, person=None, detail=detail))
            self._meta(ex, "persons", "pseudonyms")
        return done

    #: SQL true for a row whose data subject is still an id in clear: not ``ps1:`` and 22 base64url characters, the
    #: pseudonyms' shape (an id of exactly that shape is taken for a pseudonym: docs/key-model.md)
    _in_clear = (
        "person <> '' AND NOT (substr(person, 1, 4) = 'ps1:' AND length(person) = 26 AND "
        "substr(person, 5) NOT GLOB '*[^A-Za-z0-9_-]*')"
    )

    def _domain_of_keys(self, ex: Execute, key_ids: str) -> str:
        """The domain of the first key an audit entry names (``key_ids`` as the audit log holds them), from the keys
        or the shred log; "" if it names none the store knows."""
        for text in key_ids.split(","):
            try:
                kid = int(text.strip(), 16)
            except ValueError:
                continue
            for table in ("fieldcrypt_keys", "fieldcrypt_shredded"):
                found = ex(f"SELECT domain FROM {table} WHERE key_id = ?", (kid,))
                if found:
                    return str(found[0][0])
        return ""

    #: the SQL function giving the 1-based position of a substring (0: absent): SQLite's instr, PostgreSQL's strpos
    _position = "instr"

    def _lift_audit_guard(self, ex: Execute) -> None:
        """Within the migration's transaction only: let it rewrite the audit log's data-subject ids."""
        raise NotImplementedError

    def _restore_audit_guard(self, ex: Execute) -> None:
        """The audit log is append-only again, in the same transaction (nothing commits without it)."""
        raise NotImplementedError

    def unrecorded_domains(self) -> dict[str, list[str]]:
        """The domains that hold keys but no record of their KEKs, with the KEKs their keys name: an admin records
        them (``fieldcrypt kek map DOMAIN URI``); until then, writers of such a domain are refused."""
        rows = self._read(
            "SELECT DISTINCT k.domain, k.kek_uri FROM fieldcrypt_keys k "
            "WHERE NOT EXISTS (SELECT 1 FROM fieldcrypt_domains d WHERE d.domain = k.domain) ORDER BY 1, 2"
        )
        found: dict[str, list[str]] = {}
        for domain, kek_uri in rows:
            found.setdefault(str(domain), []).append(str(kek_uri))
        return found

    # -- key domains' KEKs and branch keys ----------------------------------------------------------------------
    def domain_keks(self, domain: str) -> DomainKeks | None:
        rows = self._read("SELECT domain, primary_kek, accepted FROM fieldcrypt_domains WHERE domain = ?", (domain,))
        return _domain_record(rows[0]) if rows else None

    def domains(self) -> list[DomainKeks]:
        rows = self._read("SELECT domain, primary_kek, accepted FROM fieldcrypt_domains ORDER BY domain")
        return [_domain_record(r) for r in rows]

    def claim_domain(
        self, domain: str, kek_uri: str, now: float, audit: AuditEntry, *, accept_held: bool = False
    ) -> DomainKeks:
        import json

        with self._tx() as ex:
            rows = ex("SELECT domain, primary_kek, accepted FROM fieldcrypt_domains WHERE domain = ?", (domain,))
            if rows:
                return _domain_record(rows[0])
            others = sorted({str(u) for (u,) in ex(_KEKS_HELD, (domain, domain))} - {kek_uri})
            if others and not accept_held:
                raise unrecorded_error(domain, others)
            ex(
                "INSERT INTO fieldcrypt_domains (domain, primary_kek, accepted, created_at) VALUES (?, ?, ?, ?)",
                (domain, kek_uri, json.dumps(others), now),
            )
            detail = f"primary {kek_uri}" + (f"; accepted {', '.join(others)}" if others else "")
            self._audit(ex, _with(audit, domain=domain, detail=detail))
        return DomainKeks(domain, kek_uri, tuple(others))

    def change_domain_keks(self, expected: DomainKeks, new: DomainKeks, audit: AuditEntry) -> DomainKeks | None:
        import json

        with self._tx() as ex:
            if not ex(
                "UPDATE fieldcrypt_domains SET primary_kek = ?, accepted = ? "
                "WHERE domain = ? AND primary_kek = ? AND accepted = ? RETURNING domain",
                (
                    new.primary,
                    json.dumps(list(new.accepted)),
                    expected.domain,
                    expected.primary,
                    json.dumps(list(expected.accepted)),
                ),
            ):
                return None
            self._audit(ex, _with(audit, domain=expected.domain))
        return new

    def domains_in_use(self) -> list[str]:
        rows = self._read(
            "SELECT domain FROM fieldcrypt_keys UNION SELECT domain FROM fieldcrypt_branches "
            "UNION SELECT domain FROM fieldcrypt_domains ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def kek_usage(self, domain: str) -> dict[str, int]:
        rows = self._read(
            "SELECT kek_uri, COUNT(*) FROM fieldcrypt_branches WHERE domain = ? GROUP BY kek_uri "
            "UNION ALL SELECT kek_uri, COUNT(*) FROM fieldcrypt_keys WHERE domain = ? AND branch_id = 0 "
            "GROUP BY kek_uri",
            (domain, domain),
        )
        counts: dict[str, int] = {}
        for uri, n in rows:
            counts[str(uri)] = counts.get(str(uri), 0) + int(n)
        return counts

    def branch(self, branch_id: int) -> KeyRecord | None:
        rows = self._read(f"SELECT {_BRANCH_COLUMNS} FROM fieldcrypt_branches WHERE branch_id = ?", (branch_id,))
        return _record(rows[0]) if rows else None

    def active_branch(self, domain: str) -> KeyRecord | None:
        rows = self._read(
            f"SELECT {_BRANCH_COLUMNS} FROM fieldcrypt_branches WHERE domain = ? AND state = 'active'", (domain,)
        )
        return _record(rows[0]) if rows else None

    def branches(self, domain: str | None = None) -> list[KeyRecord]:
        clause, args = _where(domain, None)
        rows = self._read(f"SELECT {_BRANCH_COLUMNS} FROM fieldcrypt_branches{clause} ORDER BY domain, version", args)
        return [_record(r) for r in rows]

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
        with self._tx((domain, "\x00branch")) as ex:
            rows = ex(
                f"SELECT {_BRANCH_COLUMNS} FROM fieldcrypt_branches WHERE domain = ? AND state = 'active'", (domain,)
            )
            current = _record(rows[0]) if rows else None
            if current is not None and (retire is None or current.key_id != retire):
                return current
            # read under a share lock (PostgreSQL): an admin's change of the domain's KEKs waits for this commit, so
            # a rewrap that follows finds this branch key
            primary = ex(f"SELECT primary_kek FROM fieldcrypt_domains WHERE domain = ?{self._share}", (domain,))
            if primary and str(primary[0][0]) != kek_uri:  # promoted meanwhile: never a branch under an old KEK
                raise KekChanged(domain, str(primary[0][0]))
            if current is not None:
                ex("UPDATE fieldcrypt_branches SET state = 'retired' WHERE branch_id = ?", (current.key_id,))
            (last,) = ex("SELECT COALESCE(MAX(version), 0) FROM fieldcrypt_branches WHERE domain = ?", (domain,))[0]
            branch_id = self._unused_id(ex, key_id)
            version = int(last) + 1
            record = KeyRecord(branch_id, domain, None, version, kek_uri, wrap(branch_id, version), now)
            ex(
                "INSERT INTO fieldcrypt_branches (branch_id, domain, version, state, kek_uri, wrapped, created_at) "
                "VALUES (?, ?, ?, 'active', ?, ?, ?)",
                (branch_id, domain, version, kek_uri, record.wrapped, now),
            )
            ids = (branch_id,) if current is None else (current.key_id, branch_id)
            self._audit(
                ex, _with(audit, key_ids=ids, domain=domain, person=None, detail=f"branch key, wrapped by {kek_uri}")
            )
            return record

    def update_branches(self, items: Iterable[tuple[int, str, bytes]], audit: AuditEntry) -> int:
        done: list[int] = []
        with self._tx() as ex:
            for branch_id, kek_uri, wrapped in items:
                if ex(
                    "UPDATE fieldcrypt_branches SET kek_uri = ?, wrapped = ? WHERE branch_id = ? RETURNING branch_id",
                    (kek_uri, wrapped, branch_id),
                ):
                    ex("UPDATE fieldcrypt_keys SET kek_uri = ? WHERE branch_id = ?", (kek_uri, branch_id))
                    done.append(branch_id)
            self._audit(
                ex,
                _with(
                    audit, key_ids=tuple(done), detail=f"{_plural(len(done), 'branch key')} rewrapped; {audit.detail}"
                ),
            )
        return len(done)

    # -- policies (what producers encrypt, per schema and domain: see fieldcrypt.core.serde.PolicyCheck) --------
    def publish_policy(self, fingerprint: str, policy: str, now: float) -> str:
        with self._tx() as ex:
            ex(
                "INSERT INTO fieldcrypt_policies (fingerprint, policy, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (fingerprint, policy, now),
            )
            rows = ex("SELECT policy FROM fieldcrypt_policies WHERE fingerprint = ?", (fingerprint,))
        return str(rows[0][0])

    def merge_policy(self, name: str, items: Sequence[str], now: float) -> list[str]:
        import json

        with self._tx((name, "policy")) as ex:
            rows = ex("SELECT policy FROM fieldcrypt_policies WHERE fingerprint = ?", (name,))
            before = sorted(json.loads(rows[0][0])) if rows else []
            after = json.dumps(sorted(set(before) | set(items)))
            if not rows:
                ex(
                    "INSERT INTO fieldcrypt_policies (fingerprint, policy, created_at) VALUES (?, ?, ?)",
                    (name, after, now),
                )
            elif set(items) - set(before):
                ex("UPDATE fieldcrypt_policies SET policy = ? WHERE fingerprint = ?", (after, name))
        return before

    def published_policy(self, fingerprint: str) -> str | None:
        rows = self._read("SELECT policy FROM fieldcrypt_policies WHERE fingerprint = ?", (fingerprint,))
        return str(rows[0][0]) if rows else None

    # -- reads ---------------------------------------------------------------------------------------------------
    def get(self, key_id: int) -> KeyRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE key_id = ?", (key_id,))
        return _record(rows[0]) if rows else None

    def active(self, domain: str, person: str | None) -> KeyRecord | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE domain = ? AND person = ? AND state = 'active'",
            (domain, person or ""),
        )
        return _record(rows[0]) if rows else None

    def keys(self, domain: str | None = None, person: str | None = None) -> Iterator[KeyRecord]:
        clause, args = _where(domain, person)
        rows = self._read(f"SELECT {_COLUMNS} FROM fieldcrypt_keys{clause} ORDER BY domain, person, version", args)
        return iter([_record(r) for r in rows])

    def keys_of(self, domain: str | None, persons: Sequence[str]) -> list[KeyRecord]:
        out: list[KeyRecord] = []
        for cond, args in self._person_conditions(domain, persons):  # by the person index
            rows = self._read(
                f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE {cond} ORDER BY domain, person, version", args
            )
            out += [_record(r) for r in rows]
        return out

    def active_keys(self, domain: str, after: str | None = None, limit: int = _BATCH) -> list[KeyRecord]:
        # the partial unique index on (domain, person) WHERE state = 'active' serves this page
        sql = f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE domain = ? AND state = 'active'"
        args: list[Any] = [domain]
        if after is not None:
            sql += " AND person > ?"
            args.append(after)
        rows = self._read(sql + " ORDER BY person LIMIT ?", [*args, int(limit)])
        return [_record(r) for r in rows]

    def shredded(self, key_id: int) -> ShredRecord | None:
        rows = self._read(
            "SELECT key_id, domain, person, shredded_at FROM fieldcrypt_shredded WHERE key_id = ?", (key_id,)
        )
        return _shred(rows[0]) if rows else None

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> Iterator[ShredRecord]:
        clause, args = _where(domain, person)
        rows = self._read(
            f"SELECT key_id, domain, person, shredded_at FROM fieldcrypt_shredded{clause} "
            "ORDER BY domain, person, shredded_at, key_id",
            args,
        )
        return iter([_shred(r) for r in rows])

    def shredded_counts(self, domain: str | None, persons: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(persons, 0)
        for cond, args in self._person_conditions(domain, persons):
            for person, n in self._read(
                f"SELECT person, COUNT(*) FROM fieldcrypt_shredded WHERE {cond} GROUP BY person", args
            ):
                counts[str(person)] = int(n)
        return counts

    def count_shredded(self, domain: str | None, persons: Sequence[str] | None) -> int:
        if persons is None and domain is None:
            return 0
        return sum(
            int(self._read(f"SELECT COUNT(*) FROM fieldcrypt_shredded WHERE {cond}", args)[0][0])
            for cond, args in self._person_conditions(domain, persons)
        )

    def shred_log(self) -> Iterator[ShredRecord]:
        rows = self._read("SELECT key_id, domain, person, shredded_at FROM fieldcrypt_shredded ORDER BY shredded_at")
        return iter([_shred(r) for r in rows])

    def audit_log(
        self,
        limit: int | None = None,
        *,
        person: str | Sequence[str] | None = None,
        operation: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        sql = "SELECT seq, at, actor, operation, domain, person, key_ids, reason, detail FROM fieldcrypt_audit"
        where: list[str] = []
        args: list[Any] = []
        if person is not None:
            # an entry names a person by their pseudonym, or (a person's shred across key domains) by their
            # pseudonyms in each domain, space-separated: any of ``person`` (one, or a person's several) matches
            names = [person] if isinstance(person, str) else list(person)
            contains = f"{self._position}(' ' || person || ' ', ?) > 0"
            where.append("(" + " OR ".join([f"person = ? OR {contains}"] * len(names)) + ")" if names else "1 = 0")
            for n in names:
                args += [n, f" {n} "]
        for column, value in (("operation = ?", operation), ("at >= ?", since)):
            if value is not None:
                where.append(column)
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            rows = self._read(sql + " ORDER BY seq DESC LIMIT ?", (*args, int(limit)))[::-1]
        else:
            rows = self._read(sql + " ORDER BY seq", args)
        return [
            AuditEntry(
                seq=int(seq),
                at=float(at),
                actor=str(actor),
                operation=str(op),
                domain=domain,
                person=None if person in (None, "") else str(person),
                key_ids=tuple(int(k, 16) for k in str(ids).split(",") if k),
                reason=str(reason),
                detail=str(detail),
            )
            for seq, at, actor, op, domain, person, ids, reason, detail in rows
        ]

    # -- writes --------------------------------------------------------------------------------------------------
    def _audit(self, ex: Execute, entry: AuditEntry) -> None:
        self._audits(ex, [entry])

    def _person_conditions(self, domain: str | None, persons: Iterable[str] | None) -> Iterator[tuple[str, list[Any]]]:
        """WHERE clauses selecting a domain's rows or some persons' rows (:func:`_conditions`: a few hundred persons
        a clause); a dialect may select any number in one (PostgreSQL: arrays)."""
        return _conditions(domain, persons)

    def _audits(self, ex: Execute, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries, in their order, each linked to the one before (:mod:`fieldcrypt.keys.chain`): the
        chain's head is read under the chain's lock (held to commit), so concurrent writers append one after
        another. The rows go in a statement per 90 of them (a dialect may write them all in one)."""
        if entries:
            self._audit_rows(ex, [_audit_row(entry) for entry in entries])

    def _audit_rows(self, ex: Execute, rows: list[list[Any]]) -> None:
        """:meth:`_audits` of entries given as their columns (:func:`_audit_row`), linked and written in place."""
        for row in rows:
            if not math.isfinite(row[0]):
                raise ConfigurationError("the time of an audit entry must be a finite number of epoch seconds")
        seq, prev = self._chain_head(ex)
        first = seq + 1
        try:
            hashes = chain.links(prev, first, rows)
        except (UnicodeEncodeError, AttributeError, TypeError):
            raise ConfigurationError(
                "an audit entry's actor, reason or detail is not text that UTF-8 can hold (a lone surrogate from a "
                "byte that is not UTF-8?): nothing was done"
            ) from None
        for i, (row, digest) in enumerate(zip(rows, hashes, strict=True)):  # (in place: no copy of 100,000 rows)
            row.insert(0, first + i)
            row.append(digest)
        self._append_audit_rows(ex, rows)
        self._spans().last = (first, first + len(rows) - 1, hashes[-1])

    def _spans(self) -> threading.local:
        spans: threading.local = self.__dict__.setdefault("_audit_spans", threading.local())
        return spans

    def last_shred_counts(self) -> dict[str, int] | None:
        """Per data subject (as stored) of this thread's last shred of persons: their keys the shred log held before
        it (the report's "already erased"), or None."""
        counts: dict[str, int] | None = getattr(self._spans(), "earlier", None)
        return counts

    def last_audit_span(self) -> tuple[int, int, bytes] | None:
        """(first seq, last seq, last hash) of the audit entries this thread's last write appended."""
        span: tuple[int, int, bytes] | None = getattr(self._spans(), "last", None)
        return span

    def _chain_head(self, ex: Execute) -> tuple[int, bytes | None]:
        """The (seq, hash) of the newest entry ((0, genesis) for none), under the chain's lock: a dialect with
        concurrent writers takes it here (SQLite's transactions have one writer at a time)."""
        rows = ex("SELECT seq, hash FROM fieldcrypt_audit ORDER BY seq DESC LIMIT 1", ())
        if not rows:
            return 0, chain.GENESIS
        seq, digest = rows[0]
        return int(seq), None if digest is None else bytes(digest)

    def _append_audit_rows(self, ex: Execute, rows: Sequence[Sequence[Any]]) -> None:
        for i in range(0, len(rows), _AUDIT_BATCH):
            chunk = rows[i : i + _AUDIT_BATCH]
            ex(
                f"INSERT INTO fieldcrypt_audit ({_CHAIN_COLUMNS}) VALUES "
                + ", ".join("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk),
                [v for row in chunk for v in row],
            )

    def _relink(self, ex: Execute, start: int = 0) -> None:
        """Recompute the links of the entries from seq ``start`` on, in seq order (within a transaction that lifted
        the audit log's guard)."""
        prev: bytes | None = chain.GENESIS
        after = -1
        if start > 0:
            before = ex("SELECT seq, hash FROM fieldcrypt_audit WHERE seq < ? ORDER BY seq DESC LIMIT 1", (start,))
            if before:
                after, prev = int(before[0][0]), None if before[0][1] is None else bytes(before[0][1])
        while True:
            rows = self._chain_rows(ex(self._chain_select, (after, _CHAIN_PAGE)))
            if not rows:
                return
            for r in rows:
                prev = chain.link(prev, int(r[0]), r[1:9])
                ex("UPDATE fieldcrypt_audit SET hash = ? WHERE seq = ?", (prev, r[0]))
            after = int(rows[-1][0])

    def _check_relink(self, ex: Execute, start: int) -> None:
        """Refuse to relink the audit log from entry ``start`` on when its chain is broken (relinking would hide the
        break) or an entry from there on is sealed (the seal would no longer hold)."""
        rows: list[tuple[Any, ...]] = []
        after = -(2**62)
        while True:
            page = self._chain_rows(ex(self._chain_select, (after, _CHAIN_PAGE)))
            rows += page
            if len(page) < _CHAIN_PAGE:
                break
            after = int(page[-1][0])
        broken = chain.check(rows, [], lambda s: None).broken
        if broken is not None:
            raise ConfigurationError(
                f"the audit log's chain is broken at entry {broken.seq} ({broken.kind}): rewriting its entries would "
                "hide that; check it with `fieldcrypt keys audit --verify`. Nothing was migrated"
            )
        if ex("SELECT 1 FROM fieldcrypt_audit_seals WHERE seq >= ? LIMIT 1", (start,)):
            raise ConfigurationError(
                f"audit entries from {start} on name data subjects by their ids, and a seal covers them: rewriting "
                "them would break the seal. Nothing was migrated"
            )

    def audit_chain(self, after: int = 0, limit: int = _CHAIN_PAGE) -> list[tuple[Any, ...]]:
        """Up to ``limit`` audit entries after seq ``after``, in seq order, as the chain check reads them
        (:data:`fieldcrypt.keys.chain.Row`)."""
        return self._chain_rows(self._read(self._chain_select, (int(after), int(limit))))

    #: the statement reading audit entries after a seq (a dialect may read ``at`` as its bytes: _chain_rows)
    _chain_select = _CHAIN_AFTER

    def _chain_rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return rows

    def key_ids_held(self, key_ids: Sequence[int]) -> tuple[set[int], set[int]]:
        """Of ``key_ids``: those the store holds, and those its shred log holds (reads key ids only: an auditor
        may)."""
        held: set[int] = set()
        shredded: set[int] = set()
        ids = [int(k) for k in key_ids]
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            marks = ", ".join("?" * len(chunk))
            held |= {
                int(r[0]) for r in self._read(f"SELECT key_id FROM fieldcrypt_keys WHERE key_id IN ({marks})", chunk)
            }
            shredded |= {
                int(r[0])
                for r in self._read(f"SELECT key_id FROM fieldcrypt_shredded WHERE key_id IN ({marks})", chunk)
            }
        return held, shredded

    def audit_seals(self) -> list[chain.Seal]:
        rows = self._read("SELECT seq, hash, at, actor, kek_uri, tag FROM fieldcrypt_audit_seals ORDER BY seq, kek_uri")
        return [chain.Seal(int(q), bytes(h), float(a), str(w), str(k), bytes(t)) for q, h, a, w, k, t in rows]

    def add_seal(self, seal: chain.Seal) -> None:
        with self._tx() as ex:
            ex(
                "INSERT INTO fieldcrypt_audit_seals (seq, hash, at, actor, kek_uri, tag) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (seal.seq, seal.hash, float(seal.at), seal.actor, seal.kek_uri, seal.tag),
            )

    def append_audit(self, entry: AuditEntry) -> None:
        with self._tx() as ex:
            self._audit(ex, entry)

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
        with self._tx((domain, person or "")) as ex:
            rows = ex(
                f"SELECT {_COLUMNS} FROM fieldcrypt_keys WHERE domain = ? AND person = ? AND state = 'active'",
                (domain, person or ""),
            )
            current = _record(rows[0]) if rows else None
            if current is not None and (retire is None or current.key_id != retire):
                return current  # already there, or another process rotated it first
            if current is not None:
                ex("UPDATE fieldcrypt_keys SET state = 'retired' WHERE key_id = ?", (current.key_id,))
            retired = None if current is None else current.key_id
            return self._insert_next(ex, domain, person, kek_uri, wrap, now, audit, retired, charge, key_id, branch_id)

    def rotate(
        self,
        domain: str,
        person: str | None,
        retire: int,
        kek_uri: str,
        wrap: WrapFn,
        now: float,
        audit: AuditEntry,
        *,
        key_id: int | None = None,
        branch_id: int = 0,
    ) -> KeyRecord | None:
        with self._tx((domain, person or "")) as ex:
            # compare and swap: only the key listed, and only while it is the active one (a shred deletes it, a
            # rotation elsewhere retires it; either way this changes nothing)
            if not ex(
                "UPDATE fieldcrypt_keys SET state = 'retired' "
                "WHERE key_id = ? AND domain = ? AND person = ? AND state = 'active' RETURNING key_id",
                (retire, domain, person or ""),
            ):
                return None
            return self._insert_next(ex, domain, person, kek_uri, wrap, now, audit, retire, 0, key_id, branch_id)

    def _insert_next(
        self,
        ex: Execute,
        domain: str,
        person: str | None,
        kek_uri: str,
        wrap: WrapFn,
        now: float,
        audit: AuditEntry,
        retired: int | None,
        charge: int,
        key_id: int | None,
        branch_id: int = 0,
    ) -> KeyRecord:
        """Insert the next version of (domain, person) as its active key, and its audit entry (naming ``retired``,
        the key it replaces, if any), in the caller's transaction. ``branch_id``: the branch key wrapping it, which
        must still be in the store (else :class:`BranchGone`, and the caller's transaction rolls back)."""
        if branch_id:  # the row names the KEK of its branch key, as it is now
            kek_uri = self._check_branch(ex, domain, branch_id)
        (last,) = ex(
            "SELECT COALESCE(MAX(version), 0) FROM fieldcrypt_keys WHERE domain = ? AND person = ?",
            (domain, person or ""),
        )[0]
        key_id = self._unused_id(ex, key_id)
        version = int(last) + 1
        wrapped = wrap(key_id, version)
        record = KeyRecord(
            key_id, domain, person, version, kek_uri, wrapped, now, encryptions=charge, branch_id=branch_id
        )
        ex(
            f"INSERT INTO fieldcrypt_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
            (key_id, domain, person or "", version, kek_uri, record.wrapped, now, charge, branch_id),
        )
        ids = (key_id,) if retired is None else (retired, key_id)
        self._audit(ex, _with(audit, key_ids=ids, domain=domain, person=person))
        return record

    #: appended to the read of a branch key a new data key is wrapped by (PostgreSQL: `` FOR SHARE``)
    _share = ""

    def _check_branch(self, ex: Execute, domain: str, branch_id: int) -> str:
        """The KEK of the branch key, which must be in the store, in ``domain``. PostgreSQL locks its row until
        commit, so a domain shred, which deletes the domain's branch keys before its data keys, waits for the key
        inserted here and then deletes it too (SQLite has one writer at a time)."""
        rows = ex(
            f"SELECT kek_uri FROM fieldcrypt_branches WHERE branch_id = ? AND domain = ?{self._share}",
            (branch_id, domain),
        )
        if not rows:
            raise BranchGone(branch_id)
        return str(rows[0][0])

    @staticmethod
    def _unused_id(ex: Execute, proposed: int | None = None) -> int:
        """``proposed`` if it is a valid id that no key holds and the shred log does not name, else a random one
        that is (a shredded id is never given again, so no shredded key comes back under its id)."""
        key_id = proposed if proposed is not None and 0 < proposed < 2**32 else secrets.randbits(32)
        while True:
            if key_id and not ex(
                "SELECT 1 FROM fieldcrypt_keys WHERE key_id = ? UNION ALL SELECT 1 FROM fieldcrypt_shredded "
                "WHERE key_id = ? UNION ALL SELECT 1 FROM fieldcrypt_branches WHERE branch_id = ?",
                (key_id, key_id, key_id),
            ):
                return key_id
            key_id = secrets.randbits(32)

    def reserve(self, key_id: int, count: int, limit: int) -> int | None:
        with self._tx() as ex:
            # the UPDATE locks the row until commit (SQLite: the whole write transaction), so "before" is exact
            rows = ex(
                "UPDATE fieldcrypt_keys SET encryptions = encryptions + ? WHERE key_id = ? RETURNING encryptions",
                (count, key_id),
            )
            if not rows:
                return None
            before = int(rows[0][0]) - count
            granted = max(0, min(count, limit - before))
            if before + count > limit:
                ex(
                    "UPDATE fieldcrypt_keys SET encryptions = ? WHERE key_id = ?",
                    (max(before, limit), key_id),
                )
        return granted

    def shred(
        self,
        domain: str | None,
        persons: Iterable[str] | None,
        now: float,
        audit: AuditEntry,
        **options: Any,
    ) -> list[ShredRecord]:
        groups: Sequence[Sequence[str]] | None = options.pop("groups", None)
        if options:
            raise ConfigurationError(f"unknown shred option(s): {', '.join(sorted(options))}")
        people = check_shred_target(domain, persons)
        if groups is not None and people is not None:
            flat = [p for g in groups for p in g]
            if len(flat) != len(people) or set(flat) != set(people):
                raise ConfigurationError("groups must hold each of persons once")
        elif people is not None:
            groups = [(p,) for p in people]
        destroyed: list[ShredRecord] = []
        with self._tx() as ex:
            earlier: dict[str, int] = {}
            if people is not None:
                for cond, args in self._person_conditions(domain, people):
                    for person, n in ex(
                        f"SELECT person, COUNT(*) FROM fieldcrypt_shredded WHERE {cond} GROUP BY person", args
                    ):
                        earlier[str(person)] = int(n)
            branches = 0
            if people is None:  # first: a key being inserted under one of them is waited for, and found below
                assert domain is not None
                views = with_views(domain)
                branches = len(
                    ex(
                        f"DELETE FROM fieldcrypt_branches WHERE domain IN ({', '.join('?' * len(views))}) "
                        "RETURNING branch_id",
                        views,
                    )
                )
            for cond, args in self._person_conditions(domain, people):
                destroyed += self._delete(ex, cond, args, now)
            if people is None:
                ids = tuple(r.key_id for r in destroyed)
                detail = _detail(len(ids), 0, audit.detail)
                if branches:
                    detail += f"; {branches} branch {'key' if branches == 1 else 'keys'} destroyed"
                self._audit(ex, _with(audit, key_ids=ids, person=None, detail=detail))
            else:
                assert groups is not None
                mine: dict[str, list[int]] = {p: [] for p in people}
                for r in destroyed:
                    mine[r.person or ""].append(r.key_id)
                batch = f"{audit.detail}, " if audit.detail else ""
                # one entry per person (a group: their pseudonyms in each key domain searched), naming them by their
                # pseudonyms in the domains where keys of theirs were destroyed, now or before (by the first one if
                # none): never linking a domain they hold no key in. Written as the entries' columns (_audit_row's),
                # the batch's own apart from person, key ids and detail: no AuditEntry per person
                at, actor, operation, domain_, _p, _k, reason, _d = _audit_row(audit)
                rows: list[list[Any]] = []
                for i, group in enumerate(groups, 1):
                    where = f"{batch}{i} of {len(groups)}" if len(groups) > 1 else audit.detail
                    if len(group) == 1:  # (one key domain searched: the common case, without the loops below)
                        named = list(group)
                        held = mine[group[0]]
                        before = earlier.get(group[0], 0)
                    else:
                        held = [k for p in group for k in mine[p]]
                        named = [p for p in group if mine[p] or earlier.get(p)] or list(group[:1])
                        before = sum(earlier.get(p, 0) for p in group)
                    detail = _detail(len(held), before, where)
                    key_ids = ",".join([f"0x{k:08x}" for k in held]) if held else ""
                    rows.append([at, actor, operation, domain_, " ".join(named), key_ids, reason, detail])
                self._audit_rows(ex, rows)
        if people is not None:
            self._spans().earlier = earlier  # (after the commit: counts a report may take as they were)
        return destroyed

    def _delete(self, ex: Execute, cond: str, args: Sequence[Any], now: float) -> list[ShredRecord]:
        """Delete the keys ``cond`` selects (one chunk of persons, or a domain), again and again in new statements
        until one deletes nothing, and log every key deleted.

        Why again: under PostgreSQL's READ COMMITTED a DELETE sees the rows committed when it began (its snapshot).
        A rotation (``rotate``, or ``create`` with ``retire``) that retired a key before our DELETE reached it holds
        that row; the DELETE waits for it, then deletes the retired row, but never sees the new key the rotation
        inserted, even one it inserted before our DELETE began (uncommitted then, so not in the snapshot). It took
        a table lock to stop that, which stalled every producer's key creation and lease top-up for the whole
        shred (one transaction: tens of seconds for 100,000 persons). Now: any such rotation has committed by the
        time our DELETE ends (the DELETE waited for it), so the next statement's new snapshot holds its key, and
        deletes it (and waits in turn for a rotation of that key, and so on).

        Why a pass that deletes nothing ends it: every row we delete stays locked until we commit. A rotation
        whose compare-and-swap UPDATE comes after our DELETE took the row waits for our commit, then finds the
        row gone: it changes nothing and makes no key (``rotate`` returns None; ``create`` with ``retire`` retires
        nothing and makes the next key only after we commit, as any creation after a shred). So a rotation can add
        a key to a targeted person only if it retired, before we deleted it, a row that we then deleted (we waited
        for its commit, so the next pass sees its key) or a row we never saw (itself committed after our last
        snapshot, by a rotation of the same (domain, person): these are serialized by its advisory lock, so
        following them back ends at a first-use creation). When a pass finds nothing, no key from a rotation is
        left. A first-use creation (no active key of that domain and person to read; with one, even one we have
        deleted, ``create`` returns it) committed before our last pass's snapshot is destroyed too, as a record the
        producer writes under it before the shred commits would be; one committing later is a creation the
        shred does not reach: it read and wrote nothing the shred touches, so it is exactly the key the producer
        would get just after the shred (docs/key-lifecycle.md, "A shred racing a key creation"). Producers' writes
        to other persons' keys never wait for a shred. Each pass uses the (domain, person) or person index and
        only this chunk's persons; SQLite's single writer makes every pass after the first find nothing."""
        out: list[ShredRecord] = []
        while True:
            deleted = self._delete_pass(ex, cond, args, now)
            if not deleted:
                break
            out += deleted
        return out

    def _delete_pass(self, ex: Execute, cond: str, args: Sequence[Any], now: float) -> list[ShredRecord]:
        """One DELETE of the keys ``cond`` selects, each deleted key logged in the shred log; what it deleted (a
        dialect may do both in one statement)."""
        rows = ex(f"DELETE FROM fieldcrypt_keys WHERE {cond} RETURNING key_id, domain, person", args)
        deleted = [ShredRecord(int(k), str(d), None if p == "" else str(p), now) for k, d, p in rows]
        self._log_shreds(ex, deleted)
        return deleted

    def _log_shreds(self, ex: Execute, records: Sequence[ShredRecord]) -> None:
        for i in range(0, len(records), _BATCH):
            chunk = records[i : i + _BATCH]
            values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
            args: list[Any] = []
            for r in chunk:
                args += [r.key_id, r.domain, r.person or "", r.shredded_at]
            ex(
                f"INSERT INTO fieldcrypt_shredded (key_id, domain, person, shredded_at) VALUES {values} "
                "ON CONFLICT (key_id) DO NOTHING",
                args,
            )

    def apply_shred_log(self, entries: Iterable[ShredRecord], audit: AuditEntry) -> list[int]:
        entries = list(entries)
        destroyed: list[int] = []
        with self._tx() as ex:
            # by key id: a rotation of a listed key that retired it first is waited for, and the row it retired (the
            # same key id) deleted; one that comes after our DELETE waits for it and finds the key gone. The key a
            # rotation made is not a restored shredded key, and deleting again by key id would find nothing new.
            for i in range(0, len(entries), _BATCH):
                chunk = entries[i : i + _BATCH]
                marks = ", ".join("?" * len(chunk))
                rows = ex(
                    f"DELETE FROM fieldcrypt_keys WHERE key_id IN ({marks}) RETURNING key_id", [e.key_id for e in chunk]
                )
                destroyed += [int(r[0]) for r in rows]
            self._log_shreds(ex, entries)
            self._audit(
                ex,
                _with(
                    audit,
                    key_ids=tuple(destroyed),
                    detail=f"{len(entries)} shred-log entries applied, {len(destroyed)} restored keys destroyed again",
                ),
            )
        return destroyed

    def update_wrapped(self, items: Iterable[tuple[int, str, bytes]], audit: AuditEntry) -> int:
        done: list[int] = []
        with self._tx() as ex:
            for key_id, kek_uri, wrapped in items:
                if ex(
                    "UPDATE fieldcrypt_keys SET kek_uri = ?, wrapped = ? WHERE key_id = ? RETURNING key_id",
                    (kek_uri, wrapped, key_id),
                ):
                    done.append(key_id)
            self._audit(
                ex, _with(audit, key_ids=tuple(done), detail=f"{_plural(len(done), 'key')} rewrapped; {audit.detail}")
            )
        return len(done)


def _detail(destroyed: int, earlier: int, where: str) -> str:
    """What a shred did to one target, as the audit log's ``detail`` says it."""
    if destroyed:
        text = f"{destroyed} {'key' if destroyed == 1 else 'keys'} destroyed"
    elif earlier:
        text = f"no key held (already erased: {earlier} {'key' if earlier == 1 else 'keys'} shredded earlier)"
    else:
        text = "no key held"
    return f"{text}; {where}" if where else text


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _with(entry: AuditEntry, **changes: Any) -> AuditEntry:
    from dataclasses import replace

    return replace(entry, **changes)
