"""Key stores: where wrapped data keys live. Chosen by URL scheme.

==============================  ===========================================================
``sqlite:///rel/keys.db``       SQLite file for one machine (SQLAlchemy-style URL: three slashes
``sqlite:////abs/keys.db``      then a relative path, four for an absolute one); the embedded default
``postgresql://user@host/db``   PostgreSQL, shared by many producers and consumers on many hosts
                                (``pip install 'fieldcrypt[postgres]'``: psycopg 3)
any other scheme                a plugin in the ``fieldcrypt.keystore`` entry-point group (name = scheme,
                                value = callable taking the URL and returning a :class:`KeyStore`)
==============================  ===========================================================

A store holds wrapped DEKs with their ids and metadata, the shred log (ids of destroyed keys, kept forever) and
the audit log. It never sees plaintext keys or data. Every implementation passes the contract suite in
``tests/keys/test_store_contract.py``.

A store is created explicitly, like a KEK: :func:`create_key_store` (``fieldcrypt keys init --store URL``).
Opening one that does not exist (a mistyped SQLite path, a PostgreSQL database without fieldcrypt's tables) is a
``ConfigurationError`` naming that command, never a new empty store that no consumer shares.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fieldcrypt.errors import ConfigurationError, format_key_id

__all__ = [
    "COMPANION_SUFFIXES",
    "DET_SUFFIX",
    "OPERATIONS",
    "ROLES",
    "VIEW_SUFFIX",
    "AuditEntry",
    "BranchGone",
    "DomainKeks",
    "KekChanged",
    "KeyRecord",
    "KeyStore",
    "PseudonymKey",
    "ShredRecord",
    "WrapLater",
    "check_id",
    "check_role",
    "check_shred_target",
    "companion_of",
    "is_deterministic",
    "missing_store_error",
    "redact_url",
    "with_views",
]

#: the suffix of the key domain that holds the masked views of a domain's values (``contact`` -> ``contact/masked``):
#: shredding a domain, or a person in a domain, shreds its views too
VIEW_SUFFIX = "/masked"
#: the suffix of the key domain that holds a domain's deterministic (AES-SIV) data keys (``contact`` ->
#: ``contact/det``): its keys never rotate by age or count; shredding the domain, or a person in it, shreds them too;
#: without a KEK mapping entry of its own it takes the domain's
DET_SUFFIX = "/det"
#: the suffixes of a domain's companion domains; a domain name may not end in one
COMPANION_SUFFIXES = (VIEW_SUFFIX, DET_SUFFIX)


def is_deterministic(domain: str) -> bool:
    """Whether ``domain`` holds deterministic (AES-SIV) data keys: a ``<domain>/det`` companion."""
    return domain.endswith(DET_SUFFIX)


def companion_of(domain: str) -> str | None:
    """The domain a companion domain belongs to (``contact/det`` -> ``contact``), or None for any other domain."""
    for suffix in COMPANION_SUFFIXES:
        if domain.endswith(suffix):
            return domain[: -len(suffix)]
    return None


def with_views(domain: str) -> list[str]:
    """A domain and its companion domains (masked views, deterministic keys); a companion domain alone: itself."""
    if companion_of(domain) is not None:
        return [domain]
    return [domain, *(domain + suffix for suffix in COMPANION_SUFFIXES)]


#: called with (key_id, version) inside the store's transaction; returns the wrapped DEK for that id, or raises
#: :class:`WrapLater` (the keyring's never calls a KMS there)
WrapFn = Callable[[int, int], bytes]


class WrapLater(Exception):
    """Raised by a ``wrap`` callback inside :meth:`KeyStore.create`: the new key must be wrapped for ``key_id`` and
    ``version`` (both bound into the wrapped key's associated data) outside any transaction, because wrapping is a
    KMS call. The store rolls its transaction back and lets it propagate; the keyring wraps a key for exactly that
    pair and calls ``create`` again with ``key_id=key_id``, which re-checks everything in a new transaction."""

    def __init__(self, key_id: int, version: int) -> None:
        super().__init__(f"wrap a new data key for key id {format_key_id(key_id)}, version {version}")
        self.key_id = key_id
        self.version = version


class BranchGone(Exception):
    """Raised by :meth:`KeyStore.create` and :meth:`KeyStore.rotate` when the branch key named by ``branch_id`` is no
    longer in the store (its domain was shredded, or it was retired and purged): the new data key, wrapped by it,
    would be unreadable. Nothing was written; the keyring drops the branch key it cached and tries again."""

    def __init__(self, branch_id: int) -> None:
        super().__init__(f"branch key {format_key_id(branch_id)} is gone")
        self.branch_id = branch_id


class KekChanged(Exception):
    """Raised by :meth:`KeyStore.create_branch` when the KEK named is no longer the domain's recorded primary (an
    admin promoted another meanwhile): nothing was written; the keyring reads the record again."""

    def __init__(self, domain: str, primary: str) -> None:
        super().__init__(f"the primary KEK of key domain {domain!r} is now {primary!r}")
        self.domain = domain
        self.primary = primary


@dataclass(frozen=True)
class DomainKeks:
    """The KEKs of one key domain, as the key store records them: ``primary`` wraps the domain's new (branch) keys;
    ``accepted`` KEKs may still wrap some of its keys (during a KEK change). A key of the domain wrapped by any other
    KEK is refused as tampered. Recorded when the domain's first key is made (or by an admin beforehand); changed
    only by audited admin acts (:meth:`fieldcrypt.Keyring.add_kek`, ``promote_kek``, ``retire_kek``)."""

    domain: str
    primary: str
    accepted: tuple[str, ...] = ()

    @property
    def keks(self) -> tuple[str, ...]:
        """Every KEK that may wrap a key of this domain, the primary first."""
        return (self.primary, *self.accepted)


@dataclass(frozen=True)
class KeyRecord:
    """One stored data key. ``person`` is None for a domain-wide key. ``encryptions`` counts the encryptions
    producers reserved (leased in blocks of ``RotationPolicy.lease`` before use, never handed back): the values
    actually encrypted are at most this, and the rotation cap counts it (the CLI shows it as RESERVED)."""

    key_id: int
    domain: str
    person: str | None
    version: int
    kek_uri: str
    wrapped: bytes = field(repr=False)
    created_at: float
    state: str = "active"  # 'active' (used for new data) or 'retired' (decrypts old data only)
    encryptions: int = 0
    #: the branch key of the domain that wraps this data key (``wrapped`` is then a local AES-GCM ciphertext under
    #: it, and ``kek_uri`` names the KEK that wraps that branch key); 0: wrapped by the KEK itself (keys made before
    #: branch keys, and stores without them). For a branch key's own record: 0.
    branch_id: int = 0

    def __repr__(self) -> str:
        who = "" if self.person is None else ", person=<set>"
        return (
            f"KeyRecord(key_id={format_key_id(self.key_id)}, domain={self.domain!r}{who}, "
            f"version={self.version}, state={self.state!r})"
        )


@dataclass(frozen=True)
class ShredRecord:
    """A destroyed key: its id stays in the shred log forever, so it is never reused or restored."""

    key_id: int
    domain: str
    person: str | None
    shredded_at: float


@dataclass(frozen=True)
class PseudonymKey:
    """One stored copy of a key domain's pseudonym key (:mod:`fieldcrypt.keys.pseudonyms`): wrapped by the KEK
    ``kek_uri``; ``fingerprint`` (16 hex digits, an HMAC of a constant under the key: it names the key and reveals
    nothing of it) and ``domain`` are bound into the wrap's associated data."""

    kek_uri: str
    wrapped: bytes = field(repr=False)
    fingerprint: str
    created_at: float = 0.0
    domain: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """One key operation. Never holds plaintext or key material."""

    at: float
    actor: str
    operation: str  # create | rotate | rewrap | shred | restore
    domain: str | None = None
    person: str | None = None
    key_ids: tuple[int, ...] = ()
    reason: str = ""
    detail: str = ""
    seq: int = 0


class KeyStore(abc.ABC):
    """Storage of wrapped DEKs. Thread-safe; raises ``KeyStoreUnavailableError`` on I/O failure."""

    url: str

    @abc.abstractmethod
    def get(self, key_id: int) -> KeyRecord | None:
        """The key with this id, or None."""

    @abc.abstractmethod
    def active(self, domain: str, person: str | None) -> KeyRecord | None:
        """The active key of (domain, person), or None."""

    @abc.abstractmethod
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
        """Atomically return the active key of (domain, person), creating it if there is none. A key created here
        starts with ``charge`` encryptions counted (the creator's first lease, saving a :meth:`reserve`).

        With ``retire=key_id``: if that key is still the active one, retire it and create the next version
        (rotation); if another process already rotated it, return the new active key. Concurrent callers in any
        number of processes end up with one active key. New ids are random, unused and not in the shred log.
        ``audit`` is written in the same transaction when a key is created.

        ``key_id``: the id to give a new key, if it is unused and not in the shred log (checked in the
        transaction); otherwise a random one. ``wrap`` is called in the transaction with the new key's id and
        version (the next after every version the store holds for (domain, person)); it may raise
        :class:`WrapLater`, which rolls the transaction back and propagates. The keyring's ``wrap`` never calls a
        KMS: it returns a key wrapped beforehand for exactly that pair, or raises ``WrapLater``. A store whose
        ``create`` takes no ``key_id`` (a plugin written before it) still works: its ``wrap`` then calls the KMS
        inside its transaction.

        ``branch_id``: the branch key of ``domain`` that ``wrap`` wraps the new key with (0: the KEK itself); if the
        store no longer holds it, :class:`BranchGone` is raised and nothing is written.
        """

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
        """An admin's rotation, as a compare-and-swap: if the key ``retire`` is still the active key of (domain,
        person), retire it and create the next version (``wrap`` and ``key_id`` as for :meth:`create`; ``audit``
        written in the same transaction, naming both keys) and return the new key. Otherwise (the key was shredded,
        or another rotation retired it first) change nothing, write no audit entry and return None: unlike
        :meth:`create`, this never makes a key for a (domain, person) whose listed key is gone.

        The built-in stores do this in one transaction. This default, for plugin stores written before it, checks
        and then calls :meth:`create`: a shred that commits between the two can still be followed by a new key, so
        a plugin should override it."""
        current = self.active(domain, person)
        if current is None or current.key_id != retire:
            return None
        asked: list[int] = []

        def wrap_here(new_id: int, version: int) -> bytes:
            asked.append(new_id)
            return wrap(new_id, version)

        extra: dict[str, int] = {} if not branch_id else {"branch_id": branch_id}
        if key_id is None:
            made = self.create(domain, person, kek_uri, wrap_here, now, audit, retire=retire, **extra)
        else:
            made = self.create(domain, person, kek_uri, wrap_here, now, audit, retire=retire, key_id=key_id, **extra)
        return made if asked and made.key_id == asked[-1] else None

    @abc.abstractmethod
    def reserve(self, key_id: int, count: int, limit: int) -> int | None:
        """Atomically charge up to ``count`` encryptions to the key, never taking its count beyond ``limit``, and
        return how many were granted (0 when the key is at its limit), or None if the store no longer holds the key
        (shredded). Callers charge a lease here before they use it, so concurrent processes never exceed ``limit``
        together (see Keyring)."""

    @abc.abstractmethod
    def keys(self, domain: str | None = None, person: str | None = None) -> Iterator[KeyRecord]:
        """Stored keys, optionally of one domain and/or person, ordered by domain, person, version."""

    def keys_of(self, domain: str | None, persons: Sequence[str]) -> list[KeyRecord]:
        """The stored keys of ``persons`` (as the store names them), in ``domain`` and the domain of its masked views,
        or in every domain: what a shred of them would destroy (its preview). This default reads :meth:`keys` per
        person and domain; the built-in stores answer a few hundred persons a statement."""
        domains: list[str | None] = [None] if domain is None else list(with_views(domain))
        return [r for p in persons for d in domains for r in self.keys(d, p)]

    def active_keys(self, domain: str, after: str | None = None, limit: int = 500) -> list[KeyRecord]:
        """One page of the active keys of ``domain``, ordered by data subject, the domain-wide key first: at most
        ``limit``, and only those of persons after ``after`` when given (``""`` stands for the domain-wide key). A
        caller pages through a domain of any size this way, passing the last page's last person, so no read holds
        a whole domain (:meth:`fieldcrypt.Keyring.rotate_domain`). This default reads :meth:`keys`; the built-in
        stores answer from their (domain, person) index."""
        found = [r for r in self.keys(domain) if r.state == "active" and (after is None or (r.person or "") > after)]
        return sorted(found, key=lambda r: r.person or "")[:limit]

    @abc.abstractmethod
    def shred(
        self, domain: str | None, persons: Iterable[str] | None, now: float, audit: AuditEntry, **options: Any
    ) -> list[ShredRecord]:
        """Destroy every key of ``domain`` (all persons) or of ``persons`` (in ``domain``, or in every domain if
        None). Destroyed ids go to the shred log. Returns what was destroyed; nothing to destroy is no error.
        A store that keeps pseudonyms (:attr:`supports_pseudonyms`) also takes ``groups``: ``persons`` grouped per
        data subject (their pseudonyms in each key domain), one audit entry per group naming them space-separated.

        The targets are checked first with :func:`check_shred_target` (an empty or blank id destroys nothing).
        Evidence is written in the same transaction: for a domain, one audit entry; for persons, one entry per
        person naming the keys destroyed, or "no key held" (and whether earlier shreds erased some)."""

    @abc.abstractmethod
    def shredded(self, key_id: int) -> ShredRecord | None:
        """The shred-log entry of a destroyed key, or None."""

    @abc.abstractmethod
    def shred_log(self) -> Iterator[ShredRecord]:
        """Every destroyed key, oldest first."""

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> Iterator[ShredRecord]:
        """The destroyed keys of one domain and/or person (all without either), ordered by domain, person and shred
        time: what ``fieldcrypt keys list`` shows as shredded. This default reads the whole log; the built-in stores
        answer from their indexes."""
        found = [
            r
            for r in self.shred_log()
            if (domain is None or r.domain == domain) and (person is None or r.person == person)
        ]
        return iter(sorted(found, key=lambda r: (r.domain, r.person or "", r.shredded_at, r.key_id)))

    def shredded_counts(self, domain: str | None, persons: Sequence[str]) -> dict[str, int]:
        """How many destroyed keys of each person (in ``domain``, or in any) the shred log holds."""
        wanted = set(persons)
        counts = dict.fromkeys(persons, 0)
        for r in self.shred_log():
            if r.person in wanted and (domain is None or r.domain == domain):
                counts[r.person] += 1
        return counts

    def count_shredded(self, domain: str | None, persons: Sequence[str] | None) -> int:
        """How many destroyed keys of ``domain`` (all persons) and/or ``persons`` the shred log holds: what a no-op
        shred reports. This default reads the whole log; stores override it with an indexed query."""
        wanted = None if persons is None else set(persons)
        return sum(
            1
            for r in self.shred_log()
            if (domain is None or r.domain == domain) and (wanted is None or r.person in wanted)
        )

    @abc.abstractmethod
    def apply_shred_log(self, entries: Iterable[ShredRecord], audit: AuditEntry) -> list[int]:
        """Re-apply a shred log (after restoring an older backup): destroy every key it names that the store
        holds again, and record the entries. Returns the ids destroyed now."""

    @abc.abstractmethod
    def update_wrapped(self, items: Iterable[tuple[int, str, bytes]], audit: AuditEntry) -> int:
        """Replace (key_id, kek_uri, wrapped) for existing keys (KEK rotation). Returns how many were updated."""

    @abc.abstractmethod
    def append_audit(self, entry: AuditEntry) -> None:
        """Record an operation that changed nothing in the store (e.g. a shred that found no key)."""

    @abc.abstractmethod
    def audit_log(
        self,
        limit: int | None = None,
        *,
        person: str | Sequence[str] | None = None,
        operation: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, oldest first (the newest ``limit`` if given); only those of ``person``, of ``operation``
        and at or after ``since`` (epoch seconds) when given."""

    # -- the audit chain (fieldcrypt.keys.chain): stores that keep none say so when asked ---------------------------
    def audit_chain(self, after: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Up to ``limit`` audit entries after seq ``after`` with their links (:data:`fieldcrypt.keys.chain.Row`)."""
        raise ConfigurationError(f"key store {type(self).__name__} keeps no hash-chained audit log")

    def audit_seals(self) -> list[Any]:
        """The seals of the audit chain (:class:`fieldcrypt.keys.chain.Seal`), by seq."""
        raise ConfigurationError(f"key store {type(self).__name__} keeps no hash-chained audit log")

    def add_seal(self, seal: Any) -> None:
        """Record a seal of the audit chain."""
        raise ConfigurationError(f"key store {type(self).__name__} keeps no hash-chained audit log")

    def key_ids_held(self, key_ids: Sequence[int]) -> tuple[set[int], set[int]]:
        """Of ``key_ids``: those the store holds, and those its shred log holds."""
        held = {k for k in key_ids if self.get(k) is not None}
        return held, {k for k in key_ids if self.shredded(k) is not None}

    def last_shred_counts(self) -> dict[str, int] | None:
        """Per data subject (as stored), the keys the shred log held before this thread's last shred of persons;
        None if the store does not say (a report then reads the shred log again)."""
        return None

    def last_audit_span(self) -> tuple[int, int, bytes] | None:
        """(first seq, last seq, last hash) of the audit entries this thread's last write appended, or None."""
        return None

    def publish_policy(self, fingerprint: str, policy: str, now: float) -> str:
        """Record the encryption policy producers use for one schema and key domain (``fingerprint``), unless one
        is recorded already; return the recorded one. Stores that keep no policies return ``policy``: producers and
        consumers sharing them cannot have a configuration mismatch detected for them."""
        return policy

    def published_policy(self, fingerprint: str) -> str | None:
        """The policy recorded for ``fingerprint``, or None."""
        return None

    def merge_policy(self, name: str, items: Sequence[str], now: float) -> list[str]:
        """Add ``items`` to the set recorded under ``name`` (e.g. every field a subject's producers ever encrypted);
        return the set as it was before, sorted. Stores that keep no policies return ``[]``."""
        return []

    # -- key domains and their KEKs; branch keys (the built-in stores; a plugin store without them keeps data keys
    # -- wrapped by the KEK directly, and a KEK mismatch between processes is not detected for it) -----------------
    #: whether the store keeps domain KEK records and branch keys (:class:`fieldcrypt.keys._sql.SqlKeyStore` does)
    supports_branches = False

    def domain_keks(self, domain: str) -> DomainKeks | None:
        """The KEKs recorded for ``domain``, or None (no key was ever made in it, or the store keeps none)."""
        return None

    def domains(self) -> list[DomainKeks]:
        """Every domain's recorded KEKs, ordered by domain."""
        return []

    def claim_domain(
        self, domain: str, kek_uri: str, now: float, audit: AuditEntry, *, accept_held: bool = False
    ) -> DomainKeks:
        """Record ``kek_uri`` as the primary KEK of ``domain`` unless the domain has a record already (first writer
        wins; ``audit`` written only if this call recorded it); return the record. A domain without a record whose
        keys another KEK wraps (made before records, or by an older fieldcrypt) is refused with a
        ``ConfigurationError``, unless ``accept_held`` (an admin's ``map_kek``): those KEKs are then recorded as
        accepted. Stores without domain records return one naming ``kek_uri``."""
        return DomainKeks(domain, kek_uri)

    def unrecorded_domains(self) -> dict[str, list[str]]:
        """Domains holding keys but no record of their KEKs, with the KEKs their keys name."""
        return {}

    def change_domain_keks(self, expected: DomainKeks, new: DomainKeks, audit: AuditEntry) -> DomainKeks | None:
        """An admin's change of a domain's KEKs, as a compare-and-swap: if the record is still ``expected``, write
        ``new`` and ``audit`` in one transaction and return ``new``; else change nothing and return None."""
        raise NotImplementedError(f"{type(self).__name__} keeps no KEK records per key domain")

    def domains_in_use(self) -> list[str]:
        """Every domain that holds keys or has recorded KEKs, sorted."""
        return sorted({r.domain for r in self.keys()} | {d.domain for d in self.domains()})

    def kek_usage(self, domain: str) -> dict[str, int]:
        """How many keys of ``domain`` each KEK wraps (branch keys, and data keys wrapped by a KEK directly)."""
        counts: dict[str, int] = {}
        for r in self.keys(domain):
            if not r.branch_id:
                counts[r.kek_uri] = counts.get(r.kek_uri, 0) + 1
        return counts

    def branch(self, branch_id: int) -> KeyRecord | None:
        """The branch key with this id (a :class:`KeyRecord` with ``person`` None), or None."""
        return None

    def active_branch(self, domain: str) -> KeyRecord | None:
        """The branch key of ``domain`` that wraps its new data keys, or None."""
        return None

    def branches(self, domain: str | None = None) -> list[KeyRecord]:
        """The branch keys (of one domain), ordered by domain and version."""
        return []

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
        """As :meth:`create`, for the active branch key of ``domain`` (``kek_uri``: the KEK that wraps it, which must
        be the domain's recorded primary when the transaction runs, else :class:`KekChanged` and nothing is
        written)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no branch keys")

    def update_branches(self, items: Iterable[tuple[int, str, bytes]], audit: AuditEntry) -> int:
        """Replace (branch_id, kek_uri, wrapped) of existing branch keys (a domain's KEK change); the data keys they
        wrap are relabelled with the new KEK. Returns how many were updated."""
        raise NotImplementedError(f"{type(self).__name__} keeps no branch keys")

    # -- data-subject ids as pseudonyms (fieldcrypt.keys.pseudonyms; docs/key-model.md#pseudonyms) --------------------
    #: whether the store keeps a pseudonym key, so that keyrings hand it keyed pseudonyms of data-subject ids, never
    #: the ids (the built-in stores do; a plugin store without it is handed the ids as they are, as before)
    supports_pseudonyms = False

    def persons_form(self) -> str:
        """How the store holds data-subject ids: ``"pseudonyms"``; ``"clear"`` (a store upgraded from an older
        fieldcrypt, not yet migrated: keyrings refuse it) or ``"migrating"`` (a migration began and has not
        finished: run it again)."""
        return "clear"

    def pseudonym_keys(self, domain: str | None = None) -> list[PseudonymKey]:
        """Every stored copy of ``domain``'s pseudonym key (of every domain's, if None), oldest first (none: the
        domain has no pseudonym key yet). Only copies of the key recorded first for their domain."""
        return []

    def add_pseudonym_key(self, key: PseudonymKey, audit: AuditEntry) -> str:
        """Store a copy of ``key.domain``'s pseudonym key under another KEK, unless that KEK has one, with ``audit``;
        a copy of another key (a fingerprint other than the one recorded first for the domain) is not stored.
        Returns the fingerprint recorded for the domain."""
        raise NotImplementedError(f"{type(self).__name__} keeps no pseudonym key")

    def drop_pseudonym_copy(self, domain: str, kek_uri: str) -> bool:
        """Delete ``domain``'s pseudonym-key copy under ``kek_uri`` (a KEK the domain retires); whether there was
        one."""
        raise NotImplementedError(f"{type(self).__name__} keeps no pseudonym key")

    def key_domains(self) -> list[str]:
        """Every domain holding a key or a shred-log entry."""
        return sorted({r.domain for r in self.keys()} | {r.domain for r in self.shredded_keys()})

    def holds_persons(self, domain: str) -> bool:
        """Whether ``domain`` holds (or held: its shred log) any data subject's key."""
        return any(r.person is not None for r in self.keys(domain)) or any(
            r.person is not None for r in self.shredded_keys(domain)
        )

    def pseudonymize(
        self,
        of: Callable[[str, str], str],
        rewrap: Callable[[KeyRecord, str], bytes],
        fingerprint: str,
        audit: AuditEntry,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Migrate a store whose data-subject ids are in clear: every id in its keys, shred log and audit log is
        replaced by its pseudonym in its domain (``of(domain, id)``; an audit entry without a domain: the domain of
        its first key), and every per-person data key is rewrapped for it (``rewrap(record,
        pseudonym)`` returns the key wrapped with associated data naming the pseudonym). Resumable and idempotent:
        work done is recorded as it is done, with ``fingerprint`` (a run under another pseudonym key is refused);
        a store already migrated returns 0. Returns how many data keys were rewrapped."""
        raise NotImplementedError(f"{type(self).__name__} keeps no pseudonym key")

    def grant(self, role: str, dbrole: str) -> list[str]:
        """Give the database role ``dbrole`` what the fieldcrypt ``role`` (one of :data:`ROLES`) may do in this
        store; returns what was granted. Stores whose database has roles implement it (PostgreSQL); the others
        refuse with a ``ConfigurationError`` saying why."""
        check_role(role)
        raise ConfigurationError(
            f"key store {redact_url(self.url)!r} ({type(self).__name__}) has no database roles to grant; "
            "fieldcrypt keys grant works with PostgreSQL key stores"
        )

    def initialize(self) -> None:  # noqa: B027 - optional hook; a store without tables has nothing to create
        """Create (or upgrade) what the store needs; called by :func:`create_key_store`. Idempotent."""

    def purge(self) -> bool:
        """After a shred: make sure no copy of the destroyed rows stays in files this store controls (SQLite: its
        write-ahead log). True when done; False when something (a long reader) blocks it for now: the shred is
        "pending" and the caller retries. Stores that cannot tell return True and document what remains."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook; a store without connections has nothing to release
        """Release connections. Idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"


#: query parameters whose values are secrets (libpq's password and sslpassword, and the usual names elsewhere)
_SECRET_PARAM = re.compile(r"pass|secret|token|credential|auth|key$", re.IGNORECASE)


#: the operations the audit log records (``kek-*``: changes to which KEKs a key domain uses)
OPERATIONS = (
    "create",
    "rotate",
    "rewrap",
    "shred",
    "restore",
    "kek-map",
    "kek-add",
    "kek-promote",
    "kek-retire",
    "pseudonymize",
    "audit-chain",
    "grant",
)


#: the fieldcrypt roles of a shared key store (``fieldcrypt keys grant --role``; docs/least-privilege.md): producers
#: read keys, create keys and charge leases; consumers read keys; admins rotate, rewrap, shred and restore;
#: auditors read the audit log and the shred log, never key material
ROLES = ("producer", "consumer", "admin", "auditor")


def check_role(role: object) -> str:
    """A fieldcrypt role's name; anything else is a ``ConfigurationError`` listing the accepted ones."""
    if not isinstance(role, str) or role not in ROLES:
        shown = repr(role) if isinstance(role, str) else type(role).__name__
        raise ConfigurationError(f"unknown fieldcrypt role {shown}; one of {', '.join(ROLES)}")
    return role


def check_id(value: object, what: str) -> str:
    """A domain or data-subject id: a non-blank ``str``. Anything else is a ``ConfigurationError`` (an unset shell
    variable must never widen a shred to "everything")."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{what} is empty or blank")
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise ConfigurationError(f"{what} holds a NUL character or a lone surrogate: no key can be stored under it")
    return value


def check_shred_target(domain: object, persons: object) -> list[str] | None:
    """Validate what a shred names: a domain, persons (in a domain or all), never nothing. Returns the persons,
    deduplicated in order (None for a whole domain). A ``str`` where persons belong is refused: iterating it would
    shred one-character ids ("12" would erase persons "1" and "2")."""
    if domain is not None:
        check_id(domain, "domain")
    if persons is None:
        if domain is None:
            raise ConfigurationError("a shred needs a domain, data subjects, or both")
        return None
    if isinstance(persons, (str, bytes, bytearray, Mapping)):
        raise ConfigurationError(
            "data subjects must be a list (or other iterable) of ids, not a single string or a mapping; "
            "use shred_person(id) for one"
        )
    try:
        people = list(persons)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigurationError(f"data subjects must be an iterable of ids, got {type(persons).__name__}") from None
    if not people:
        raise ConfigurationError("no data-subject ids given: nothing to shred")
    for i, p in enumerate(people, 1):
        if not (isinstance(p, str) and p.isascii() and p and not p.isspace() and "\x00" not in p):  # the common case
            check_id(p, f"data-subject id #{i}")
    return list(dict.fromkeys(people))


def redact_url(url: str) -> str:
    """The URL with every secret replaced by ``***``: the password of the userinfo and the value of any query
    parameter that names one (``password``, ``sslpassword``, ``token``...). For repr, messages, logs and CLI output.
    Text that is not a URL is not echoed at all (a libpq ``key=value`` string may hold a password)."""
    if not isinstance(url, str):
        return "<not a URL>"
    if "://" not in url:
        return "<not a URL>" if "=" in url or "@" in url else url
    scheme, rest = url.split("://", 1)
    rest, hash_, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    if q:
        parts = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            parts.append(f"{name}=***" if eq and _SECRET_PARAM.search(name) else item)
        query = "&".join(parts)
    return f"{scheme}://{creds}{at}{host}{q}{query}{hash_}{'***' if fragment else ''}"


def secrets_of(url: str) -> list[str]:
    """The secret values a URL carries (userinfo password, secret query parameters), raw and percent-decoded."""
    from urllib.parse import unquote

    found: list[str] = []
    if "://" in url:
        rest = url.split("://", 1)[1].partition("#")[0]
        rest, _, query = rest.partition("?")
        creds, at, _ = rest.rpartition("@")
        if at and ":" in creds:
            found.append(creds.split(":", 1)[1])
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            if eq and value and _SECRET_PARAM.search(name):
                found.append(value)
    return [v for s in found for v in {s, unquote(s)} if v]


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with every secret of ``url`` replaced by ``***``."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def missing_store_error(url: str, what: str) -> ConfigurationError:
    """The error for a store that was never created (or predates this version's tables)."""
    return ConfigurationError(
        f"key store {redact_url(url)!r} {what}; create it explicitly with "
        f"`fieldcrypt keys init --store URL` or fieldcrypt.create_key_store(URL)"
    )
