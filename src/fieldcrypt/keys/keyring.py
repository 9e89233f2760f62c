"""The Keyring: where wrapped data keys live, what wraps them, and their lifecycle.

    keyring = Keyring("sqlite:///keys.db", "local-kek:///etc/fieldcrypt/kek.json")

Serializers ask it for the active key of a (domain, person); deserializers for the key a ciphertext names. Key
admins rotate, rewrap, shred and audit through it (or the ``fieldcrypt`` CLI, which calls the same methods).

The class joins two roles, each in its own module: the hot path (:class:`fieldcrypt.keys.source.KeySource`:
lookups, caches, leases, key creation and rotation when due; its docstring tells how caching, rotation, outcomes
and deadlines work) and key administration (:class:`fieldcrypt.keys.admin.KeyAdmin`: rotate on request, rewrap,
shred, restore, audit, listings). The admin methods import their module when first called, so a process that
only serializes and deserializes never loads it. Serdes depend on ``KeySource``, never on this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fieldcrypt.clock import Clock
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek
from fieldcrypt.keys.report import PersonShred, Rotation, RotationReport, ShredReport, SkippedRotation
from fieldcrypt.keys.source import DEFAULT_CACHE_SIZE, DEFAULT_CACHE_TTL, KeyMeter, KeySource, RotationPolicy
from fieldcrypt.keys.store import AuditEntry, DomainKeks, KeyRecord, KeyStore, ShredRecord, redact_url

if TYPE_CHECKING:
    from fieldcrypt.keys.admin import KeyAdmin
    from fieldcrypt.keys.chain import AuditCheck, Seal
    from fieldcrypt.keys.evidence import Receipt, ReceiptCheck

__all__ = [
    "KeyMeter",
    "Keyring",
    "PersonShred",
    "Rotation",
    "RotationPolicy",
    "RotationReport",
    "ShredReport",
    "SkippedRotation",
    "migrate_pseudonyms",
]


class Keyring(KeySource):
    """Where data keys live (``store``: URL or :class:`KeyStore`) and what wraps them (``kek``).

    ``kek`` is one KEK (URI or :class:`Kek`), a list of them, or a mapping from key domain to KEK(s), with ``"*"``
    for every domain the mapping does not name::

        Keyring(store, {"contact": "aws-kms://.../contact", "health": "aws-kms://.../health", "*": "local-kek://d"})

    The key store records which KEK wraps each domain (when its first key is made, or by :meth:`map_kek`); a keyring
    whose KEK for a domain disagrees with the record may not write to it (``ConfigurationError`` naming the domain),
    and a key is unwrapped only by its domain's recorded KEK, never by another KEK the keyring holds. A keyring
    without a domain's KEK reads its values as denied (``fieldcrypt.on.denied``). A plain KEK or list is the ``"*"``
    entry: the first KEK is recorded for a new domain; the others unwrap keys they wrapped (KEK rotation).

    The store must exist (:func:`fieldcrypt.create_key_store`, ``fieldcrypt keys init``).
    """

    def __init__(
        self,
        store: str | KeyStore,
        kek: str | Kek | Sequence[str | Kek] | Mapping[str, str | Kek | Sequence[str | Kek]],
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
        kms_timeout: float = DEFAULT_KMS_TIMEOUT,
    ) -> None:
        self._shred_log = Path(shred_log) if shred_log is not None else None
        super().__init__(
            store,
            kek,
            cache_size=cache_size,
            cache_ttl=cache_ttl,
            rotation=rotation,
            clock=clock,
            actor=actor,
            retries=retries,
            backoff=backoff,
            sleep=sleep,
            kms_timeout=kms_timeout,
        )

    def _opened(self) -> None:
        """At start-up, re-apply the shred log file (if configured and present) when the store lacks an entry of it:
        a store restored from an older backup gets no shredded key back. The check reads the file and the store's
        shred log; only a store that needs it loads the admin module (the usual start-up does not)."""
        log_file = self._shred_log
        if log_file is None or not log_file.exists():
            return
        from fieldcrypt.keys import shredlog

        entries = shredlog.read(log_file)
        known = {r.key_id for r in self._call(self.store.shred_log)}
        if any(e.key_id not in known for e in entries):
            self._admin().restore(entries, reason="re-apply the shred log at startup", quiet=True)

    def _admin(self) -> KeyAdmin:
        """Key administration of this keyring (imported on first use: producers and consumers never load it)."""
        from fieldcrypt.keys.admin import KeyAdmin

        return KeyAdmin(self, self._shred_log)

    # -- key administration (fieldcrypt.keys.admin) ------------------------------------------------------------------
    def keys(self, domain: str | None = None, person: str | None = None) -> list[KeyRecord]:
        """The stored keys, active and retired (metadata; wrapped material is never shown). Shredded keys are gone
        from the store: :meth:`shredded_keys` lists them."""
        return self._admin().keys(domain, person)

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> list[ShredRecord]:
        """The destroyed keys (from the shred log: id, domain, person, shred time) of one domain and/or person, or
        all of them."""
        return self._admin().shredded_keys(domain, person)

    def rotate(self, domain: str, person: str | None = None, *, reason: str = "") -> KeyRecord | None:
        """Replace the active key of (domain, person) by a new version now (``person`` None: the domain-wide key
        only; :meth:`rotate_domain` replaces every person's too). Returns the new key, or None when nothing was
        rotated: (domain, person) has no active key (never had one, or it was shredded, also while this call ran),
        or another rotation replaced it first. A shredded person never gets a key from a rotation."""
        return self._admin().rotate(domain, person, reason=reason)

    def rotate_domain(
        self, domain: str, *, reason: str = "", progress: Callable[[int, int], None] | None = None
    ) -> RotationReport:
        """Replace every active key of a domain now: the domain-wide key and each data subject's key, each by its
        next version, each rotation in its own store transaction with its own audit entry (as :meth:`rotate`).
        The keys are read a page of ``_ROTATE_PAGE`` at a time, in data-subject order, so a domain of millions of
        persons is never held in one read or transaction. ``progress(rotated, 0)`` after each key.

        Each rotation retires exactly the key listed, if it is still the active one (a compare-and-swap in the
        store's transaction). A listed key that is no longer active when its turn comes, because it was shredded or
        another rotation replaced it, is skipped: no key is created for it (a shredded person stays without one)
        and it is reported in ``skipped``, not ``rotated``. Returns both, in data-subject order (both empty if the
        domain has no active key). A failure (KMS, store) raises; the keys rotated before it stay rotated (and
        audited)."""
        return self._admin().rotate_domain(domain, reason=reason, progress=progress)

    def rewrap(
        self, *, domain: str | None = None, reason: str = "", progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Re-wrap the keys of one domain (or of every domain) that another KEK wraps under the domain's primary
        KEK: its branch keys (one KMS call each) and any data key wrapped by a KEK directly; no Kafka data is
        touched, and other domains are not. Returns how many keys were rewrapped. Each domain's rewrap is audited.

        A keyring configured with a plain KEK list (``[NEW, OLD]``, no entry of the domain's own) whose first KEK is
        not yet the domain's primary first adds and promotes it, and afterwards retires the KEKs left unused: the
        one-shot KEK rotation of ``fieldcrypt keys rewrap --kek NEW --kek OLD``."""
        return self._admin().rewrap(domain=domain, reason=reason, progress=progress)

    # -- which KEK wraps each key domain ---------------------------------------------------------------------------
    def domains(self) -> list[DomainKeks]:
        """The recorded KEKs of every key domain (primary and accepted), ordered by domain."""
        return self._admin().domains()

    def map_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """Record ``kek_uri`` as the KEK of a domain that has none yet (before its first producer runs), as an
        audited ``kek-map``. The same KEK again is a no-op; another is a ``ConfigurationError`` (change a domain's
        KEK with :meth:`add_kek`, :meth:`promote_kek`, :meth:`rewrap`, :meth:`retire_kek`). This keyring must hold
        the KEK, so a typo cannot stop every producer."""
        return self._admin().map_kek(domain, kek_uri, reason=reason)

    def add_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """Step 1 of a KEK change: accept ``kek_uri`` for a domain besides its primary (audited ``kek-add``). Then
        let every client learn it (add it to their KEK mapping for the domain) before :meth:`promote_kek`."""
        return self._admin().add_kek(domain, kek_uri, reason=reason)

    def promote_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """Step 2: make an accepted KEK the domain's primary (new branch keys are wrapped by it); the old primary
        stays accepted (audited ``kek-promote``). Step 3 is :meth:`rewrap` of the domain."""
        return self._admin().promote_kek(domain, kek_uri, reason=reason)

    def retire_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """Step 4: drop an accepted KEK that wraps none of the domain's keys any more (audited ``kek-retire``);
        refused while it still wraps one, or while it is the primary."""
        return self._admin().retire_kek(domain, kek_uri, reason=reason)

    def shred_domain(
        self, domain: str, *, reason: str = "", dry_run: bool = False, receipt: bool = False
    ) -> ShredReport:
        """Destroy every key of a domain (all persons, all versions): its data is erased everywhere. With
        ``receipt``, the report carries a sealed :class:`fieldcrypt.keys.evidence.Receipt` (``report.receipt``)."""
        return self._admin().shred_domain(domain, reason=reason, dry_run=dry_run, receipt=receipt)

    def shred_person(
        self, person: str, *, domain: str | None = None, reason: str = "", dry_run: bool = False, receipt: bool = False
    ) -> ShredReport:
        """Destroy one person's keys in every domain (or one domain): their data is erased everywhere. With
        ``receipt``, the report carries a sealed :class:`fieldcrypt.keys.evidence.Receipt` (``report.receipt``):
        the request's evidence, naming the person by the pseudonyms the key store holds, sealed under this
        keyring's KEK (refused before anything is destroyed when it holds none)."""
        return self._admin().shred_person(person, domain=domain, reason=reason, dry_run=dry_run, receipt=receipt)

    def shred_persons(
        self,
        persons: Iterable[str],
        *,
        domain: str | None = None,
        reason: str = "",
        dry_run: bool = False,
        receipt: bool = False,
    ) -> ShredReport:
        """Destroy the keys of many persons in one transaction (e.g. a file of erasure requests). Every id must be
        a non-blank ``str`` and there must be at least one; otherwise ``ConfigurationError`` and nothing is
        destroyed. The audit log gets one entry per person, naming the keys destroyed or "no key held".
        ``receipt``: as for :meth:`shred_person`, one receipt for the whole request."""
        return self._admin().shred_persons(persons, domain=domain, reason=reason, dry_run=dry_run, receipt=receipt)

    def verify_audit(self) -> AuditCheck:
        """Check the audit log's hash chain from its first entry (naming the first entry edited, removed,
        reordered or inserted) and each seal of it whose KEK this keyring holds (``fieldcrypt keys audit
        --verify``)."""
        from fieldcrypt.keys import evidence

        return evidence.verify_audit(self._admin())

    def seal_audit(self) -> Seal:
        """Seal the audit log's newest entry under this keyring's KEK (one only key admins hold), so that a rewrite
        of the whole chain up to it shows in :meth:`verify_audit` (``fieldcrypt keys audit --seal``)."""
        from fieldcrypt.keys import evidence

        return evidence.seal(self._admin())

    def verify_receipt(self, receipt: Receipt | str | os.PathLike[str]) -> ReceiptCheck:
        """Check an erasure receipt (a :class:`Receipt`, or the path of its file) against its seal (with the KEK
        it names, if this keyring holds it) and the key store: the audit chain intact up to its entries, which are
        unchanged, and every key it names destroyed (``fieldcrypt keys receipt verify FILE``)."""
        from fieldcrypt.keys import evidence

        if not isinstance(receipt, evidence.Receipt):
            receipt = evidence.read_receipt(receipt)
        return evidence.verify_receipt(self._admin(), receipt)

    def purge(self) -> bool:
        """Ask the store to drop every copy of destroyed rows from its files (SQLite: truncate the WAL), retrying
        with backoff while a reader blocks it. False when still blocked: the last shred is "pending"."""
        return self._admin().purge()

    def export_shred_log(self) -> list[ShredRecord]:
        """Every destroyed key the store's shred log holds (what ``fieldcrypt keys shred-log`` writes to a file)."""
        return self._admin().export_shred_log()

    def restore(
        self, entries: Iterable[ShredRecord] | None = None, *, reason: str = "", quiet: bool = False
    ) -> list[int]:
        """After restoring the key store from an older backup: re-apply the shred log (``entries``, or the
        ``shred_log`` file this keyring keeps), so no shredded key comes back. Returns the ids destroyed again.
        A torn or corrupt line in the file is a ``ConfigurationError`` naming the line; nothing is applied."""
        return self._admin().restore(entries, reason=reason, quiet=quiet)

    def audit(
        self,
        limit: int | None = None,
        *,
        person: str | None = None,
        operation: str | None = None,
        since: float | None = None,
        domain: str | None = None,
    ) -> list[AuditEntry]:
        """The append-only audit log of key operations, oldest first; optionally only the newest ``limit``, those
        naming one data subject, one operation (create, rotate, rewrap, shred, restore), or at/after ``since``.
        ``domain`` (with ``person``): look the person up in that key domain and its companions only (a keyring
        holding some domains' KEKs; by default every domain holding data subjects' keys)."""
        return self._admin().audit(limit, person=person, operation=operation, since=since, domain=domain)

    def __repr__(self) -> str:
        return f"Keyring(store={redact_url(self.store.url)!r}, kek={self._kek_repr()})"


class _Migrating(Keyring):
    """The keyring of :func:`migrate_pseudonyms`: the one that may open a store whose ids are still in clear."""

    _accepts_clear_ids = True


def migrate_pseudonyms(
    store: str | KeyStore,
    kek: str | Kek | Sequence[str | Kek] | Mapping[str, str | Kek | Sequence[str | Kek]],
    *,
    actor: str | None = None,
    reason: str = "",
    progress: Callable[[int, int], None] | None = None,
    kms_timeout: float = DEFAULT_KMS_TIMEOUT,
) -> int:
    """Replace every data-subject id a key store made by an older fieldcrypt holds (in its keys, its shred log and
    its audit log) by its keyed pseudonym, and rewrap each data subject's key for it (its wrap binds the pseudonym);
    returns how many data keys were rewrapped. The API twin of ``fieldcrypt keys migrate-pseudonyms``.

    Run it once, after ``fieldcrypt keys init`` upgraded the store's tables and before this version's producers and
    consumers use it (they refuse the store until then), with producers stopped, and with ``kek`` holding the KEK of
    every domain that has data subjects' keys. The pseudonym key is made on the way (wrapped under each KEK given),
    unless the store has one. Resumable: a run stopped anywhere (a crash, a KMS outage) is run again and goes on where
    it stopped; on a store already migrated it changes nothing but wraps the pseudonym key under KEKs given that lack
    a copy. On PostgreSQL it is the store's owner's (it lifts the audit log's append-only trigger for its one rewrite,
    in the transaction that rewrites it)."""
    with _Migrating(store, kek, actor=actor, kms_timeout=kms_timeout) as keyring:
        return keyring._admin().migrate_pseudonyms(reason=reason, progress=progress)
