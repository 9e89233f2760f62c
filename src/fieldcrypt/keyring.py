"""The Keyring: where wrapped data keys live, what wraps them, and their lifecycle.

    keyring = Keyring("sqlite:///keys.db", "local-kek:///etc/fieldcrypt/kek.json")

Serializers ask it for the active key of a (domain, person); deserializers for the key a ciphertext names. Key
admins rotate, rewrap, shred and audit through it (or the ``fieldcrypt`` CLI, which calls the same methods).

Caching: unwrapped keys stay in memory, at most ``cache_size`` of them, each at most ``cache_ttl`` seconds after
it was loaded (never extended by use), so a key shredded elsewhere stops working here within ``cache_ttl``.
Rotation: an active key is replaced when it is older than ``rotation.max_age`` or has encrypted
``rotation.max_encryptions`` values; a rotation that fails raises, it never falls back to the old key.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import tink

from fieldcrypt._crypto import DataKey, new_data_key, rewrap_data_key, unwrap_data_key
from fieldcrypt.clock import Clock, SystemClock
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreUnavailableError,
    format_key_id,
)
from fieldcrypt.keys import _fork
from fieldcrypt.keys.cache import TtlCache
from fieldcrypt.keys.kek import Kek, open_kek
from fieldcrypt.keys.store import AuditEntry, KeyRecord, KeyStore, ShredRecord, open_store, redact_url

__all__ = ["Keyring", "RotationPolicy", "ShredReport"]

log = logging.getLogger("fieldcrypt.keys")
T = TypeVar("T")

DEFAULT_CACHE_SIZE = 10_000
DEFAULT_CACHE_TTL = 300.0
#: AES-GCM with random 96-bit nonces: NIST SP 800-38D limits a key to 2^32 encryptions; stay far below
HARD_MAX_ENCRYPTIONS = 2**31


@dataclass(frozen=True)
class RotationPolicy:
    """When an active data key is replaced by a new version (old versions keep decrypting).

    ``max_age``: seconds after creation (None: never by age). ``max_encryptions``: values encrypted, counted in
    the key store in leases of ``lease`` per process, so the count can overshoot by at most ``lease`` per process.
    """

    max_age: float | None = 90 * 86400.0
    max_encryptions: int = 2**30
    lease: int = 65_536

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= 0:
            raise ConfigurationError("rotation max_age must be positive seconds, or None")
        if not 0 < self.max_encryptions <= HARD_MAX_ENCRYPTIONS:
            raise ConfigurationError(f"rotation max_encryptions must be between 1 and {HARD_MAX_ENCRYPTIONS}")
        if not 0 < self.lease <= self.max_encryptions:
            raise ConfigurationError("rotation lease must be between 1 and max_encryptions")


@dataclass(frozen=True)
class ShredReport:
    """What a shred did. ``destroyed`` empty means it was a no-op (nothing held, or already shredded)."""

    target: str
    destroyed: tuple[ShredRecord, ...]
    previously_shredded: int = 0

    @property
    def noop(self) -> bool:
        return not self.destroyed

    def __str__(self) -> str:
        if self.destroyed:
            return f"{self.target}: {_count(len(self.destroyed), 'key')} destroyed"
        if self.previously_shredded:
            return f"{self.target}: nothing to do, already shredded ({_count(self.previously_shredded, 'key')} earlier)"
        return f"{self.target}: nothing to do, no key held"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rewrap(record: KeyRecord, new: Kek, old: Kek) -> bytes:
    return rewrap_data_key(
        record.wrapped, record.key_id, record.domain, record.person, record.version, old.aead, new.aead
    )


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class _Retry:
    attempts: int = 4
    backoff: float = 0.05
    sleep: Callable[[float], None] = field(default=time.sleep)


class Keyring:
    """Where data keys live (``store``: URL or :class:`KeyStore`) and what wraps them (``kek``: URI or :class:`Kek`,
    or a list whose first entry wraps new keys and whose others still unwrap keys they wrapped, for KEK rotation).
    """

    def __init__(
        self,
        store: str | KeyStore,
        kek: str | Kek | Sequence[str | Kek],
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        rotation: RotationPolicy | None = None,
        clock: Clock | None = None,
        actor: str | None = None,
        retries: int = 3,
        backoff: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        shred_log: str | os.PathLike[str] | None = None,
    ) -> None:
        keks = [kek] if isinstance(kek, (str, Kek)) else list(kek)
        if not keks or not all(isinstance(k, (str, Kek)) for k in keks):
            raise ConfigurationError("kek must be a KEK URI such as local-kek:///path/kek.json, a Kek, or a list")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.keks = [open_kek(k) if isinstance(k, str) else k for k in keks]
        self.kek = self.keks[0]
        if isinstance(store, KeyStore):
            self.store = store
        elif isinstance(store, str):
            self.store = open_store(store)
        else:
            raise ConfigurationError("store must be a key store URL such as sqlite:///keys.db, or a KeyStore")
        self.rotation = rotation or RotationPolicy()
        self.actor = actor or _default_actor()
        self.cache_ttl = float(cache_ttl)
        self._retry = _Retry(max(1, retries + 1), backoff, sleep)
        self._cache_size = cache_size
        self._new_caches()
        self._shred_log = Path(shred_log) if shred_log is not None else None
        if self._shred_log is not None and self._shred_log.exists():
            self.restore(reason="re-apply the shred log at startup", quiet=True)
        _fork.track(self)

    def _new_caches(self) -> None:
        size, ttl = self._cache_size, self.cache_ttl
        self._by_id: TtlCache[int, DataKey] = TtlCache(size, ttl, self.clock)
        self._active: TtlCache[tuple[str, str | None], DataKey] = TtlCache(size, ttl, self.clock)
        self._erased: TtlCache[int, ShredRecord] = TtlCache(size, 86400.0 * 365, self.clock)
        self._create_lock = threading.Lock()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and empty caches. A cached key carries the parent's leased encryption
        budget, which the child must not spend a second time; the child reloads keys and leases its own."""
        self._new_caches()

    # -- hot path -------------------------------------------------------------------------------------------------
    def encryption_key(self, domain: str, person: str | None = None) -> DataKey:
        """The active data key of (domain, person): created on first use, rotated when due."""
        cached = self._active.get((domain, person))
        if cached is not None:
            return cached
        with self._create_lock:
            cached = self._active.get((domain, person), count=False)
            if cached is not None:
                return cached
            record = self._call(lambda: self.store.active(domain, person))
            if record is None:
                key = self._create(domain, person, None, "create", "first use")
            elif self._expired(record):
                key = self._create(domain, person, record.key_id, "rotate", "max_age reached")
            else:
                key = self._unwrap(record)
            return self._activate(key, record if record is not None and record.key_id == key.key_id else None)

    def renew(self, key: DataKey) -> DataKey:
        """Called by the engine when a key's local budget is spent: count it in the store, rotate at the cap."""
        with self._create_lock:
            if key.budget[0] > 0:
                return key
            lease = self.rotation.lease
            total = self._call(lambda: self.store.reserve(key.key_id, lease))
            if total < self.rotation.max_encryptions:
                key.budget[0] = lease
                return key
            new = self._create(key.domain, key.person, key.key_id, "rotate", "max_encryptions reached")
            return self._activate(new, None)

    def decryption_key(self, key_id: int) -> DataKey:
        """The data key with this id. Raises ``KeyShreddedError`` if it was destroyed, ``KeyNotFoundError`` if the
        store never held it, ``AccessDeniedError`` if this KEK cannot unwrap it."""
        cached = self._by_id.get(key_id)
        if cached is not None:
            return cached
        erased = self._erased.get(key_id)
        if erased is not None:
            raise KeyShreddedError("the data key was shredded: this data is erased", key_id=key_id)
        record = self._call(lambda: self.store.get(key_id))
        if record is None:
            gone = self._call(lambda: self.store.shredded(key_id))
            if gone is not None:
                self._erased.put(key_id, gone)
                raise KeyShreddedError("the data key was shredded: this data is erased", key_id=key_id)
            raise KeyNotFoundError("no data key with this id in the key store", key_id=key_id)
        key = self._unwrap(record)
        self._by_id.put(key_id, key)
        return key

    # -- internals ---------------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """Run a key-store call, retrying ``KeyStoreUnavailableError`` with exponential backoff, then raising."""
        delay = self._retry.backoff
        for attempt in range(self._retry.attempts):
            try:
                return fn()
            except KeyStoreUnavailableError:
                if attempt + 1 == self._retry.attempts:
                    raise
                self._retry.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _expired(self, record: KeyRecord) -> bool:
        age = self.rotation.max_age
        return age is not None and record.created_at + age <= self.clock.now()

    def _activate(self, key: DataKey, record: KeyRecord | None) -> DataKey:
        created = record.created_at if record is not None else self.clock.now()
        until = None if self.rotation.max_age is None else created + self.rotation.max_age
        key.budget[0] = self.rotation.lease  # counted in the store when spent (see renew)
        self._active.put((key.domain, key.person), key, until)
        self._by_id.put(key.key_id, key)
        return key

    def _audit(self, operation: str, reason: str = "", **kw: Any) -> AuditEntry:
        return AuditEntry(at=self.clock.now(), actor=self.actor, operation=operation, reason=reason, **kw)

    def _create(self, domain: str, person: str | None, retire: int | None, operation: str, reason: str) -> DataKey:
        made: list[DataKey] = []

        def wrap(key_id: int, version: int) -> bytes:
            try:
                key, wrapped = new_data_key(key_id, domain, person, version, self.kek.aead)
            except tink.TinkError as exc:
                raise KeyStoreUnavailableError(f"KEK {self.kek.uri!r} could not wrap a new data key") from exc
            made.append(key)
            return wrapped

        audit = self._audit(operation, reason, domain=domain, person=person)
        record = self._call(
            lambda: self.store.create(domain, person, self.kek.uri, wrap, self.clock.now(), audit, retire=retire)
        )
        if made and made[-1].key_id == record.key_id:
            log.info("%s data key %s in domain %r (%s)", operation, format_key_id(record.key_id), domain, reason)
            return made[-1]
        return self._unwrap(record)

    def _unwrap(self, record: KeyRecord) -> DataKey:
        return self._with_kek(
            record,
            lambda kek: unwrap_data_key(
                record.wrapped, record.key_id, record.domain, record.person, record.version, kek.aead
            ),
        )

    def _with_kek(self, record: KeyRecord, use: Callable[[Kek], T]) -> T:
        """``use(kek)`` with the first configured KEK that can unwrap ``record`` (the one that wrapped it first)."""
        for kek in sorted(self.keks, key=lambda k: k.uri != record.kek_uri):
            try:
                return use(kek)
            except tink.TinkError:
                continue
        raise AccessDeniedError(
            f"no configured KEK can unwrap this data key (it was wrapped by {record.kek_uri!r})", key_id=record.key_id
        )

    # -- admin ---------------------------------------------------------------------------------------------------
    def publish_policy(self, fingerprint: str, policy: str) -> str:
        """Record what producers encrypt for a schema and domain (first writer wins); returns the recorded one."""
        return self._call(lambda: self.store.publish_policy(fingerprint, policy, self.clock.now()))

    def published_policy(self, fingerprint: str) -> str | None:
        return self._call(lambda: self.store.published_policy(fingerprint))

    def keys(self, domain: str | None = None, person: str | None = None) -> list[KeyRecord]:
        """The stored keys (metadata; wrapped material is never shown)."""
        return list(self.store.keys(domain, person))

    def rotate(self, domain: str, person: str | None = None, *, reason: str = "") -> KeyRecord | None:
        """Replace the active key of (domain, person) by a new version now. Returns None if it has no key."""
        current = self.store.active(domain, person)
        if current is None:
            return None
        key = self._create(domain, person, current.key_id, "rotate", reason or "requested")
        self._active.discard((domain, person))
        return self.store.get(key.key_id)

    def rewrap(self, *, reason: str = "", progress: Callable[[int, int], None] | None = None) -> int:
        """Re-wrap every stored data key under the primary KEK (``kek[0]``); no Kafka data is touched.
        Afterwards the other KEKs can be retired. Returns how many keys were rewrapped."""
        records = list(self.store.keys())
        items: list[tuple[int, str, bytes]] = []
        for i, record in enumerate(records):
            if record.kek_uri != self.kek.uri or len(self.keks) == 1:
                rewrapped = self._with_kek(record, partial(_rewrap, record, self.kek))
                items.append((record.key_id, self.kek.uri, rewrapped))
            if progress is not None:
                progress(i + 1, len(records))
        audit = self._audit("rewrap", reason, detail=f"to {self.kek.uri}")
        return self.store.update_wrapped(items, audit)

    def shred_domain(self, domain: str, *, reason: str = "") -> ShredReport:
        """Destroy every key of a domain (all persons, all versions): its data is erased everywhere."""
        return self._shred(f"domain {domain!r}", domain, None, reason)

    def shred_person(self, person: str, *, domain: str | None = None, reason: str = "") -> ShredReport:
        """Destroy one person's keys in every domain (or one domain): their data is erased everywhere."""
        return self._shred("data subject", domain, [person], reason, person=person)

    def shred_persons(self, persons: Iterable[str], *, domain: str | None = None, reason: str = "") -> ShredReport:
        """Destroy the keys of many persons in one transaction (e.g. a file of erasure requests)."""
        people = [p for p in dict.fromkeys(persons) if p]
        return self._shred(f"{len(people)} data subjects", domain, people, reason)

    def _shred(
        self, target: str, domain: str | None, persons: list[str] | None, reason: str, person: str | None = None
    ) -> ShredReport:
        audit = self._audit("shred", reason, domain=domain, person=person)
        destroyed = self._call(lambda: self.store.shred(domain, persons, self.clock.now(), audit))
        for r in destroyed:
            self._by_id.discard(r.key_id)
            self._active.discard((r.domain, r.person))
            self._erased.put(r.key_id, r)
        self._append_shred_log(destroyed)
        previously = 0
        if not destroyed:
            previously = self._call(lambda: self.store.count_shredded(domain, persons))
        report = ShredReport(target, tuple(destroyed), previously)
        log.info("shred %s", report)
        return report

    def _append_shred_log(self, destroyed: Sequence[ShredRecord]) -> None:
        if self._shred_log is None or not destroyed:
            return
        with open(self._shred_log, "a", encoding="utf-8") as f:
            for r in destroyed:
                f.write(json.dumps({"key_id": r.key_id, "domain": r.domain, "person": r.person, "at": r.shredded_at}))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    def export_shred_log(self) -> list[ShredRecord]:
        return list(self.store.shred_log())

    def restore(
        self, entries: Iterable[ShredRecord] | None = None, *, reason: str = "", quiet: bool = False
    ) -> list[int]:
        """After restoring the key store from an older backup: re-apply the shred log (``entries``, or the
        ``shred_log`` file this keyring keeps), so no shredded key comes back. Returns the ids destroyed again."""
        if entries is None:
            if self._shred_log is None or not self._shred_log.exists():
                raise ConfigurationError("no shred log to re-apply: pass entries or configure shred_log=PATH")
            entries = [
                ShredRecord(int(d["key_id"]), d["domain"], d["person"], float(d["at"]))
                for d in map(json.loads, self._shred_log.read_text().splitlines())
                if d
            ]
        entries = list(entries)
        known = {r.key_id for r in self.store.shred_log()}
        if quiet and all(e.key_id in known for e in entries):
            return []
        destroyed = self.store.apply_shred_log(entries, self._audit("restore", reason or "re-apply shred log"))
        for key_id in destroyed:
            self._by_id.discard(key_id)
        self._active.clear()
        return destroyed

    def audit(self, limit: int | None = None) -> list[AuditEntry]:
        """The append-only audit log of key operations, oldest first."""
        return self.store.audit_log(limit)

    def clear_cache(self) -> None:
        self._by_id.clear()
        self._active.clear()

    def close(self) -> None:
        self.clear_cache()
        self.store.close()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Keyring(store={redact_url(self.store.url)!r}, kek={self.kek.uri!r})"
