"""Key administration: rotate on request, rewrap, shred, re-apply the shred log, audit and list keys.

    KeyAdmin(keyring, shred_log).shred_person("cust-1", reason="erasure request 7")

:class:`fieldcrypt.Keyring` (and the ``fieldcrypt keys`` CLI, through it) imports this module inside each admin
method, so a producer's or consumer's process, which only looks keys up, never loads it. A :class:`KeyAdmin`
holds no state of its own: it works on a :class:`~fieldcrypt.keys.source.KeySource` through the few methods that
source keeps for it (``_call``, ``_audit``, ``_deadline``, ``_kms``, ``_with_kek``, ``_unwrap``, ``_store_new_key``,
``_created`` and the ``_forget_*`` methods that tell its caches what changed), so a shred or a rotation here is seen
by that source's next lookup at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from fieldcrypt.crypto.cipher import (
    DataKey,
    person_check_of,
    split_check,
    unwrap_branch_handle,
    unwrap_handle,
    with_check,
    wrap_branch_handle,
    wrap_handle,
)
from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyCorruptedError, format_key_id
from fieldcrypt.keys import evidence, shredlog
from fieldcrypt.keys._files import destination, shown
from fieldcrypt.keys.kek import Kek, wrap_failure
from fieldcrypt.keys.pseudonyms import add_copy as add_pseudonym_copy
from fieldcrypt.keys.pseudonyms import copy_is as pseudonym_copy_is
from fieldcrypt.keys.pseudonyms import is_pseudonym
from fieldcrypt.keys.pseudonyms import share as share_pseudonyms
from fieldcrypt.keys.report import PersonShred, Rotation, RotationReport, ShredReport, SkippedRotation
from fieldcrypt.keys.source import KeySource, _ev
from fieldcrypt.keys.store import (
    OPERATIONS,
    AuditEntry,
    DomainKeks,
    KeyRecord,
    KeyStore,
    ShredRecord,
    WrapFn,
    check_id,
    check_shred_target,
    with_views,
)

__all__ = ["KeyAdmin"]

log = logging.getLogger("fieldcrypt.keys")  # the events are listed in docs/observability.md

#: how many active keys :meth:`KeyAdmin.rotate_domain` reads at a time (the stores' batch size)
_ROTATE_PAGE = 500


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _text(reason: object) -> str:
    if not isinstance(reason, str):
        raise ConfigurationError("reason must be a str")
    return reason


def _unwrap_handle(record: KeyRecord, old: Kek) -> Any:
    return unwrap_handle(record.wrapped, record.key_id, record.domain, record.person, record.version, old.aead)


def _named(record: Any, person: str | None) -> Any:
    """A key-store row, naming its data subject as the caller did (the row names their pseudonym)."""
    return record if person is None or record.person is None else replace(record, person=person)


class KeyAdmin:
    """The administration of ``source``'s keys (``shred_log``: the file every shred appends to, or None). The
    methods are :class:`fieldcrypt.Keyring`'s admin methods, documented there."""

    __slots__ = ("_log_file", "_src")

    def __init__(self, source: KeySource, shred_log: Path | None = None) -> None:
        self._src = source
        self._log_file = shred_log

    def _pseudonyms_of(self, people: list[str], domain: str | None, *, remember: bool = False) -> list[tuple[str, ...]]:
        """Each of ``people`` as the key store names them: their pseudonym in every key domain that holds data
        subjects' keys (``domain`` and its companion domains, if given), one tuple per person. A store that keeps
        ids as given: each id alone. Refused (``ConfigurationError``, before anything is done) when this keyring
        cannot compute the pseudonyms of such a domain: what it does would silently miss that domain's keys."""
        src = self._src
        if not src.store.supports_pseudonyms:
            return [(p,) for p in people]
        for p in people:
            if is_pseudonym(p):
                src._stored("", p)  # refused: an id of a pseudonym's shape (it would pass for the pseudonym)
        keyed = {r.domain for r in src._call(lambda: src.store.pseudonym_keys(None))}
        # every domain that could hold a data subject's key: those with a pseudonym key, and any other the store
        # knows (recorded, or holding keys) that holds one anyway (its pseudonym key lost: refused below)
        try:
            # recorded or not (a lost record must not hide a domain's keys either)
            known = {d.domain for d in src._call(src.store.domains)} | set(src._call(src.store.key_domains))
            if domain is not None:
                wanted = set(with_views(domain))
                keyed, known = keyed & wanted, known & wanted
            lost = sorted(d for d in known - keyed if src._call(lambda d=d: src.store.holds_persons(d)))  # type: ignore[misc]
        except ConfigurationError:  # a login that may not read keys (an auditor's): it lists logs, never shreds
            if domain is not None:
                keyed &= set(with_views(domain))
            lost = []
        if lost:
            raise KeyCorruptedError(
                f"key domain(s) {', '.join(map(repr, lost))} hold data subjects' keys but the key store holds no "
                "pseudonym key of them (rows deleted, or not restored): nobody's keys can be found there by id. "
                "Restore the key store's fieldcrypt_pseudonym_keys rows from a backup. Nothing was done"
            )
        domains = sorted(keyed)
        named: list[Any] = []
        missing: list[str] = []
        for d in domains:
            try:
                named.append(src._load_pseudonyms(d, create=False))
            except ConfigurationError:
                missing.append(d)
        if missing:
            raise ConfigurationError(
                "this keyring cannot compute the data-subject pseudonyms of key domain(s) "
                f"{', '.join(map(repr, missing))} (it holds no KEK they are wrapped by), so it cannot find anyone's "
                "keys there; pass those domains' KEKs (--kek DOMAIN=URI), or name one domain (--domain) whose KEK it "
                "holds. Nothing was done"
            )
        if not named:
            return [() for _ in people]
        # the CLI asks twice for one batch (its preview, then the shred): hashed once
        key = (tuple(n.fingerprint for n in named), tuple(people))
        memo, src._pseudonyms_memo = src._pseudonyms_memo, None  # kept until the next call only, whatever it is
        if memo is not None and memo[0] == key:
            return list(memo[1])
        groups = list(zip(*(n.many(people) for n in named), strict=True))
        if remember:
            src._pseudonyms_memo = (key, groups)
        return groups

    def keys(self, domain: str | None = None, person: str | None = None) -> list[KeyRecord]:
        """The work of :meth:`fieldcrypt.Keyring.keys`, documented there."""
        return self._listed(self._src.store.keys, domain, person)

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> list[ShredRecord]:
        """The work of :meth:`fieldcrypt.Keyring.shredded_keys`, documented there."""
        return self._listed(self._src.store.shredded_keys, domain, person)

    def _listed(
        self, listing: Callable[[str | None, str | None], Iterable[Any]], domain: str | None, person: str | None
    ) -> list[Any]:
        """The rows ``listing(domain, person)`` gives, of everyone (as the store names them), or of ``person``: by
        their pseudonym in each domain searched, each row naming them as the caller did."""
        if domain is not None:
            check_id(domain, "domain")
        if person is None:
            return list(self._src._call(lambda: listing(domain, None)))
        check_id(person, "data-subject id")
        (names,) = self._pseudonyms_of([person], domain)
        return [_named(r, person) for n in names for r in self._src._call(lambda n=n: listing(domain, n))]  # type: ignore[misc]

    def rotate(self, domain: str, person: str | None = None, *, reason: str = "") -> KeyRecord | None:
        """The work of :meth:`fieldcrypt.Keyring.rotate`, documented there."""
        check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        if person is not None and self._src.store.supports_pseudonyms:
            held = {r.domain for r in self._src._call(lambda: self._src.store.pseudonym_keys(domain))}
            if domain not in held:
                if self._src._call(lambda: self._src.store.holds_persons(domain)):
                    raise KeyCorruptedError(
                        f"key domain {domain!r} holds data subjects' keys but the key store holds no pseudonym key "
                        "of it (rows deleted, or not restored): nobody's key can be found there by id"
                    )
                return None  # no data subject's key was ever made in the domain
            stored = self._src._stored(domain, person, create=False)
        else:
            stored = person
        current = self._src._call(lambda: self._src.store.active(domain, stored))
        if current is None:
            return None
        key = self._rotate_key(current, reason or "requested", person)
        made = None if key is None else self._src._call(lambda: self._src.store.get(key.key_id))
        return None if made is None else _named(made, person)

    def rotate_domain(
        self, domain: str, *, reason: str = "", progress: Callable[[int, int], None] | None = None
    ) -> RotationReport:
        """The work of :meth:`fieldcrypt.Keyring.rotate_domain`, documented there."""
        check_id(domain, "domain")
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        rotated: list[Rotation] = []
        skipped: list[SkippedRotation] = []
        after: str | None = None
        while True:
            page = self._src._call(lambda a=after: self._src.store.active_keys(domain, a, _ROTATE_PAGE))  # type: ignore[misc]
            for current in page:
                key = self._rotate_key(current, reason or "requested")
                if key is None:
                    gone = self._src._call(lambda c=current: self._src.store.shredded(c.key_id))  # type: ignore[misc]
                    why = "shredded" if gone is not None else "rotated elsewhere"
                    skipped.append(SkippedRotation(domain, current.person, current.key_id, why))
                else:
                    rotated.append(Rotation(domain, current.person, current.key_id, key.key_id, key.version))
                if progress is not None:
                    progress(len(rotated), 0)
            if len(page) < _ROTATE_PAGE:
                return RotationReport(domain, tuple(rotated), tuple(skipped))
            after = page[-1].person or ""

    def _rotate_key(self, current: KeyRecord, reason: str, person: str | None = None) -> DataKey | None:
        """An admin's rotation of ``current``: its next version, made only if ``current`` is still the active key
        when the store's transaction runs (a compare-and-swap, :meth:`KeyStore.rotate`). None when it is not (it
        was shredded, or another rotation retired it): nothing is created then, no audit entry written. ``person``:
        the data subject as the caller named them (else the key is made for the pseudonym the row names)."""
        domain, stored, deadline = current.domain, current.person, self._src._deadline()
        named = stored if person is None else person
        if person is None and stored is not None and is_pseudonym(stored):
            # rotated by its pseudonym (all keys of a domain): the current key names its person (its person check),
            # and the next one is made for them, so their readers still tell it is theirs
            try:
                named = self._src._unwrap(current, deadline).owner or stored
            except FieldcryptError:
                now = self._src._call(lambda: self._src.store.active(domain, stored))
                if now is None or now.key_id != current.key_id:
                    return None  # shredded or rotated meanwhile: nothing to rotate
                raise
        audit = self._src._audit("rotate", reason, domain=domain, person=stored)

        def put(wrap: WrapFn, key_id: int | None, branch_id: int, kek_uri: str) -> KeyRecord | None:
            now = self._src.clock.now()
            extra = {"branch_id": branch_id} if branch_id else {}
            return self._src.store.rotate(
                domain, stored, current.key_id, kek_uri, wrap, now, audit, key_id=key_id, **extra
            )

        made, record = self._src._store_new_key(domain, named, current.version + 1, deadline, put, stored)
        self._src._forget_active(current.key_id)
        if record is None:
            return None
        if made is None or made.key.key_id != record.key_id:  # a plugin store that kept a key of its own making
            return self._src._unwrap(record, deadline, named)
        return self._src._created(made, domain, named, "rotate", reason)

    # -- which KEKs wrap a domain's keys: map, add, promote, rewrap, retire (each an audited act) ----------------
    def domains(self) -> list[DomainKeks]:
        """The work of :meth:`fieldcrypt.Keyring.domains`, documented there."""
        return list(self._src._call(self._src.store.domains))

    def map_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """The work of :meth:`fieldcrypt.Keyring.map_kek`, documented there."""
        check_id(domain, "domain")
        self._check_reachable(domain, kek_uri)
        audit = self._src._audit("kek-map", _text(reason) or "requested", domain=domain)
        record = self._src._call(
            lambda: self._src.store.claim_domain(domain, kek_uri, self._src.clock.now(), audit, accept_held=True)
        )
        self._src._forget_domain(domain)
        self._share_pseudonyms(domain)
        if record.primary != kek_uri:
            raise ConfigurationError(
                f"key domain {domain!r} is already wrapped by KEK {record.primary!r}; change it with add_kek, "
                "promote_kek, rewrap and retire_kek (`fieldcrypt kek add|promote|retire`, "
                "`fieldcrypt keys rewrap`)"
            )
        return record

    def add_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """The work of :meth:`fieldcrypt.Keyring.add_kek`, documented there."""
        current = self._recorded(domain)
        if kek_uri in current.keks:
            if self._carry_pseudonyms(domain, kek_uri):  # a copy a former run could not add
                self._check_owner(current)
            return current
        self._check_reachable(domain, kek_uri)
        self._check_owner(current)
        new = DomainKeks(domain, current.primary, (*current.accepted, kek_uri))
        done = self._change(current, new, "kek-add", reason, f"accepted {kek_uri}")
        try:
            self._carry_pseudonyms(domain, kek_uri)
        except FieldcryptError as exc:
            raise type(exc)(
                f"KEK {kek_uri!r} was added to key domain {domain!r}, but the domain's pseudonym key could not be "
                f"wrapped under it ({exc.reason}); run `fieldcrypt kek add {domain} {kek_uri}` again before "
                "promoting it"
            ) from exc
        return done

    def _carry_pseudonyms(self, domain: str, kek_uri: str) -> bool:
        """Wrap ``domain``'s pseudonym key under its KEK ``kek_uri`` unless it has a copy there (a domain with none:
        nothing); whether one was added. Its holders can then name the domain's data subjects, and the domain's
        KEK change (add, promote, rewrap, retire) carries the key along."""
        src = self._src
        if not src.store.supports_pseudonyms:
            return False
        rows = src._call(lambda: src.store.pseudonym_keys(domain))
        if not rows:
            return False
        kek = next((k for k in src.keks if k.uri == kek_uri), None)
        if kek is None:
            raise ConfigurationError(
                f"this keyring does not hold KEK {kek_uri!r}: the pseudonym key of key domain {domain!r} cannot be "
                "wrapped under it"
            )
        src._forget_domain(domain)
        named = src._load_pseudonyms(domain, create=False)
        there = [r for r in rows if r.kek_uri == kek_uri]
        if there and pseudonym_copy_is(src, there[0], kek, named):
            return False
        if there:  # a copy that is not the domain's key (planted, or corrupt): replaced
            src._call(lambda: src.store.drop_pseudonym_copy(domain, kek_uri))
        add_pseudonym_copy(src, domain, named, kek)
        return True

    def _share_pseudonyms(self, domain: str) -> None:
        """A KEK just given to ``domain`` learns the domain's pseudonym key (wrapped under it) when this keyring holds
        it and a KEK of the key: the new KEK's holders can then look the domain's data subjects up
        (fieldcrypt.keys.pseudonyms). A domain without one yet gets it from its first writer."""
        src = self._src
        if not src.store.supports_pseudonyms:
            return
        if not src._call(lambda: src.store.pseudonym_keys(domain)):
            return
        try:
            share_pseudonyms(src, domain, src._load_pseudonyms(domain, create=False))
        except FieldcryptError as exc:  # the KEK change is made; say what is left to do
            log.warning(
                "the pseudonym key of a key domain was not wrapped under its new KEK now (%s): a keyring holding both "
                "adds it when it first writes a data subject's key",
                type(exc).__name__,
            )

    def promote_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """The work of :meth:`fieldcrypt.Keyring.promote_kek`, documented there."""
        current = self._recorded(domain)
        if current.primary == kek_uri:
            return current
        if kek_uri not in current.accepted:
            raise ConfigurationError(
                f"KEK {kek_uri!r} is not an accepted KEK of key domain {domain!r}: add it first (add_kek, "
                "`fieldcrypt keys kek add`) and let every client learn it, then promote it"
            )
        self._check_reachable(domain, kek_uri)
        self._check_owner(current)
        self._carry_pseudonyms(domain, kek_uri)  # the new primary holds a copy first (else: refused, nothing changed)
        accepted = (*(u for u in current.accepted if u != kek_uri), current.primary)
        new = DomainKeks(domain, kek_uri, accepted)
        return self._change(current, new, "kek-promote", reason, f"primary {kek_uri}; was {current.primary}")

    def retire_kek(self, domain: str, kek_uri: str, *, reason: str = "") -> DomainKeks:
        """The work of :meth:`fieldcrypt.Keyring.retire_kek`, documented there."""
        current = self._recorded(domain)
        if kek_uri == current.primary:
            raise ConfigurationError(
                f"KEK {kek_uri!r} is the primary KEK of key domain {domain!r}: promote another one first"
            )
        if kek_uri not in current.accepted:
            return current
        used = self._src._call(lambda: self._src.store.kek_usage(domain)).get(kek_uri, 0)
        if used:
            raise ConfigurationError(
                f"KEK {kek_uri!r} still wraps {_count(used, 'key')} of key domain {domain!r}: rewrap the domain first "
                f"(`fieldcrypt keys rewrap --domain {domain}`)"
            )
        new = DomainKeks(domain, current.primary, tuple(u for u in current.accepted if u != kek_uri))
        rows = self._src._call(lambda: self._src.store.pseudonym_keys(domain))
        copies = {r.kek_uri for r in rows}
        if kek_uri in copies and not self._verified_copy(domain, [r for r in rows if r.kek_uri in new.keks]):
            raise ConfigurationError(
                f"KEK {kek_uri!r} holds the only verified copy of key domain {domain!r}'s pseudonym key: wrap it "
                f"under the domain's primary first (`fieldcrypt kek add {domain} {current.primary}` with both "
                "KEKs), or nobody could name the domain's data subjects again"
            )
        done = self._change(current, new, "kek-retire", reason, f"retired {kek_uri}")
        if kek_uri in copies:  # its holders no longer name the domain's data subjects
            self._src._call(lambda: self._src.store.drop_pseudonym_copy(domain, kek_uri))
        return done

    def _verified_copy(self, domain: str, rows: list[Any]) -> bool:
        """Whether one of ``rows`` (copies of ``domain``'s pseudonym key) is the domain's key, unwrapped by a KEK this
        keyring holds: a row's presence proves nothing (any producer login may add one under a recorded KEK)."""
        src = self._src
        held = {k.uri: k for k in src.keks}
        try:
            named = src._load_pseudonyms(domain, create=False)
        except FieldcryptError:
            return False
        return any(r.kek_uri in held and pseudonym_copy_is(src, r, held[r.kek_uri], named) for r in rows)

    def _recorded(self, domain: str) -> DomainKeks:
        check_id(domain, "domain")
        self._src._forget_domain(domain)
        record = self._src.domain_keks(domain)
        if record is None:
            raise ConfigurationError(
                f"key domain {domain!r} has no recorded KEK yet (no key was made in it): map its first KEK with "
                "map_kek (`fieldcrypt kek map`), or let its first producer record it"
            )
        return record

    def _change(self, current: DomainKeks, new: DomainKeks, operation: str, reason: str, detail: str) -> DomainKeks:
        audit = self._src._audit(operation, _text(reason) or "requested", domain=current.domain, detail=detail)
        done = self._src._call(lambda: self._src.store.change_domain_keks(current, new, audit))
        self._src._forget_domain(current.domain)
        if done is None:
            raise ConfigurationError(
                f"the KEKs of key domain {current.domain!r} changed while this change was made (another admin?); "
                "look again (`fieldcrypt kek list`) and retry"
            )
        log.info(
            "key domain %r: %s",
            current.domain,
            detail,
            extra=_ev("key.kek_changed", domain=current.domain, operation=operation, kek=new.primary),
        )
        return done

    def _check_owner(self, current: DomainKeks) -> None:
        """Changing which KEKs wrap a domain takes an admin who holds its primary KEK for it (the one who could
        unwrap its keys): holding the new KEK alone would let one team's admin move another team's domain under its
        own KEK."""
        if current.primary not in self._src.kek_uris(current.domain):
            raise ConfigurationError(
                f"this keyring does not hold the primary KEK of key domain {current.domain!r} "
                f"({current.primary!r}): only an admin who holds it may change the domain's KEKs"
            )

    def _check_reachable(self, domain: str, kek_uri: str) -> None:
        """An admin act naming a KEK must hold it (so a typo cannot stop every producer): a KEK this keyring was
        configured with, for this domain or as its default."""
        if not isinstance(kek_uri, str) or not kek_uri.strip():
            raise ConfigurationError("a KEK URI must be a non-empty str")
        if kek_uri not in {k.uri for k in self._src.keks}:
            raise ConfigurationError(
                f"this keyring does not hold KEK {kek_uri!r}: open the keyring with it (kek={{{domain!r}: "
                f"[{kek_uri!r}, ...]}}, or --kek {domain}={kek_uri}) so that the change is made by someone who can "
                "use it"
            )

    def rewrap(
        self, *, domain: str | None = None, reason: str = "", progress: Callable[[int, int], None] | None = None
    ) -> int:
        """The work of :meth:`fieldcrypt.Keyring.rewrap`, documented there."""
        if domain is not None:
            check_id(domain, "domain")
        domains = [domain] if domain is not None else self._src._call(self._src.store.domains_in_use)
        done = 0
        for d in domains:
            done += self._rewrap_domain(d, reason, progress)
        return done

    def _rewrap_domain(self, domain: str, reason: str, progress: Callable[[int, int], None] | None) -> int:
        """Move the keys of one domain that another KEK wraps to its primary KEK. With a keyring that names no KEK
        for the domain of its own, whose first KEK is not yet the domain's primary (``keys rewrap --kek NEW --kek
        OLD``), that KEK is added and promoted first, and the KEKs left unused are retired: each an audited act."""
        src = self._src
        src._forget_domain(domain)
        record = src.domain_keks(domain)
        held, own = src._held(domain)
        if record is not None and not any(k.uri in record.keks for k in held):
            # another team's domain (a rewrap of every domain: keys rewrap --kek NEW --old-kek OLD): not touched
            log.info(
                "key domain %r skipped by the rewrap: this keyring holds none of its KEKs",
                domain,
                extra=_ev("key.rewrap_skipped", domain=domain),
            )
            return 0
        if record is not None and not own and held and record.primary != held[0].uri:
            self.add_kek(domain, held[0].uri, reason=reason or "rewrap to the keyring's KEK")
            record = self.promote_kek(domain, held[0].uri, reason=reason or "rewrap to the keyring's KEK")
        target = src._writing_kek(domain)
        branches = [b for b in src._call(lambda: src.store.branches(domain)) if b.kek_uri != target.uri]
        direct = [
            r
            for r in src._call(lambda: src.store.keys(domain))
            # one KEK in all: rewrapped in place (moves keys wrapped before the digest context to it)
            if not r.branch_id and (r.kek_uri != target.uri or len(src.keks) == 1)
        ]
        total = len(branches) + len(direct)
        moved_branches: list[tuple[int, str, bytes]] = []
        for i, b in enumerate(branches):
            handle = src._with_kek(
                b,
                lambda kek, b=b: unwrap_branch_handle(b.wrapped, b.key_id, b.domain, b.version, kek.aead),  # type: ignore[misc]
                what="branch key",
            )
            wrapped = self._wrap_with(
                target,
                f"branch key {format_key_id(b.key_id)}",
                lambda h=handle, b=b: wrap_branch_handle(h, b.key_id, b.domain, b.version, target.aead),  # type: ignore[misc]
            )
            moved_branches.append((b.key_id, target.uri, wrapped))
            if progress is not None:
                progress(i + 1, total)
        items: list[tuple[int, str, bytes]] = []
        for i, record_ in enumerate(direct, len(branches)):
            handle = src._with_kek(record_, partial(_unwrap_handle, record_))
            wrapped = self._wrap_with(
                target,
                f"data key {format_key_id(record_.key_id)}",
                lambda h=handle, r=record_: with_check(  # type: ignore[misc]
                    split_check(r.wrapped)[0], wrap_handle(h, r.key_id, r.domain, r.person, r.version, target.aead)
                ),
            )
            items.append((record_.key_id, target.uri, wrapped))
            if progress is not None:
                progress(i + 1, total)
        done = 0
        if moved_branches:
            audit = src._audit("rewrap", reason, domain=domain, detail=f"to {target.uri}")
            done += src._call(lambda: src.store.update_branches(moved_branches, audit))
        if items or not moved_branches:
            audit = src._audit("rewrap", reason, domain=domain, detail=f"to {target.uri}")
            done += src._call(lambda: src.store.update_wrapped(items, audit))
        src._forget_domain(domain)
        if not own and held and record is not None:
            # the one-shot form (keys rewrap --kek NEW --kek OLD): the old KEKs, now unused, are retired
            current = src.domain_keks(domain)
            for uri in current.accepted if current is not None else ():
                if not src._call(lambda: src.store.kek_usage(domain)).get(uri, 0):
                    self.retire_kek(domain, uri, reason=reason or "unused after rewrap")
        log.info(
            "%d keys of domain %r rewrapped under KEK %r",
            done,
            domain,
            target.uri,
            extra=_ev("key.rewrapped", domain=domain, kek=target.uri, keys=done),
        )
        return done

    def _wrap_with(self, kek: Kek, what: str, wrap: Callable[[], bytes]) -> bytes:
        """``wrap()`` (a KEK call to ``kek``), with retries within the deadline; its failures name ``kek``."""
        deadline = self._src._deadline()

        def attempt() -> bytes:
            try:
                return self._src._kms(wrap, deadline, f"KEK {kek.uri!r}")
            except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
                raise wrap_failure(kek, exc, self._src.kms_timeout, what) from exc

        return self._src._call(attempt, deadline)

    def shred_domain(
        self, domain: str, *, reason: str = "", dry_run: bool = False, receipt: bool = False
    ) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_domain`, documented there."""
        check_id(domain, "domain")
        return self._shred(f"domain {domain!r}", domain, None, reason, dry_run, receipt)

    def shred_person(
        self, person: str, *, domain: str | None = None, reason: str = "", dry_run: bool = False, receipt: bool = False
    ) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_person`, documented there."""
        check_id(person, "data-subject id")
        return self._shred("data subject", domain, [person], reason, dry_run, receipt)

    def shred_persons(
        self,
        persons: Iterable[str],
        *,
        domain: str | None = None,
        reason: str = "",
        dry_run: bool = False,
        receipt: bool = False,
    ) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_persons`, documented there."""
        people = check_shred_target(domain, persons)
        assert people is not None
        return self._shred(_count(len(people), "data subject"), domain, people, reason, dry_run, receipt)

    def _check_receipt(self, dry_run: bool) -> None:
        """Refuse a receipt that could not be made, before anything is destroyed."""
        if dry_run:
            raise ConfigurationError("a dry run destroys nothing, so it has no receipt: drop receipt (--receipt)")
        evidence.sealing_kek(self, "a receipt")
        store = self._src.store
        if type(store).last_audit_span is KeyStore.last_audit_span:
            raise ConfigurationError(f"key store {type(store).__name__} keeps no hash-chained audit log: no receipt")
        if store.supports_pseudonyms and self._src._call(store.persons_form) != "pseudonyms":
            raise ConfigurationError(
                "this key store still names data subjects by their ids (made by an older fieldcrypt): a receipt "
                "names them by pseudonyms only; run `fieldcrypt keys migrate-pseudonyms` first. Nothing was destroyed"
            )

    def _shred(
        self,
        target: str,
        domain: str | None,
        persons: list[str] | None,
        reason: str,
        dry_run: bool,
        receipt: bool = False,
    ) -> ShredReport:
        people = check_shred_target(domain, persons)
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        if not isinstance(receipt, bool):
            raise ConfigurationError("receipt must be True or False")
        if receipt:
            self._check_receipt(dry_run)
        now = self._src.clock.now()
        # the store names each person by a pseudonym per key domain; the report names them as the caller did
        # a dry run (the CLI's preview) leaves them for the shred that follows it (the next call takes them)
        groups = None if people is None else self._pseudonyms_of(people, domain, remember=dry_run)
        stored = None if groups is None else [n for g in groups for n in g]
        names = (
            {} if people is None or groups is None else {n: p for p, g in zip(people, groups, strict=True) for n in g}
        )
        options = {"groups": groups} if groups is not None and self._src.store.supports_pseudonyms else {}
        if people is not None and not stored:  # no domain holds any data subject's key: nobody holds one
            if receipt:
                raise ConfigurationError(
                    "no key domain holds data subjects' keys: there is nothing to erase and no audit entry to give a "
                    "receipt for"
                )
            return ShredReport(
                target, (), 0, tuple(PersonShred(p, (), 0) for p in people), dry_run=dry_run, pending=False
            )
        if dry_run:
            held = self._held(domain, stored)
            destroyed = tuple(ShredRecord(r.key_id, r.domain, names.get(r.person or "", r.person), now) for r in held)
            return self._report(target, domain, people, destroyed, names, dry_run=True, pending=False)
        log_file = self._log_file
        where = None if log_file is None else destination(log_file, "the shred log")  # a link: its target's directory
        if log_file is not None and where is not None and not where.parent.is_dir():  # refused before any is destroyed
            raise ConfigurationError(
                f"shred_log {shown(log_file, where)}: directory {str(where.parent)!r} does not exist; nothing was "
                "destroyed"
            )
        self._src._pseudonyms_memo = None  # the ids are not kept past the shred
        batch = f"batch {uuid.uuid4().hex[:12]}" if people is not None and len(people) > 1 else ""
        audit = self._src._audit("shred", reason, domain=domain, detail=batch)
        held = self._held(domain, stored) if receipt else []  # (their KEKs, for the receipt)
        span_before = self._src.store.last_audit_span()
        counts_before = self._src.store.last_shred_counts()
        destroyed = tuple(self._src._call(lambda: self._src.store.shred(domain, stored, now, audit, **options)))
        earlier = self._src.store.last_shred_counts()
        if earlier is counts_before:  # (not this shred's: the report reads the shred log)
            earlier = None
        self._src._forget_shredded(destroyed)
        unlogged: OSError | None = None
        if log_file is not None:
            try:
                shredlog.append(log_file, destroyed)
            except OSError as exc:
                unlogged = exc
        pending = not self.purge()
        if unlogged is not None:  # the keys are gone: say so, and how to bring the file up to date
            raise ConfigurationError(
                f"{_count(len(destroyed), 'key')} destroyed, but the shred log {str(log_file)!r} could not be "
                f"appended ({unlogged.strerror or type(unlogged).__name__}): rewrite it from the key store with "
                f"`fieldcrypt keys shred-log {log_file} --force`"
            )
        shown_ = (
            tuple(
                ShredRecord(r.key_id, r.domain, names.get(r.person or "", r.person), r.shredded_at) for r in destroyed
            )
            if names
            else destroyed
        )
        report = self._report(target, domain, people, shown_, names, dry_run=False, pending=pending, earlier=earlier)
        if receipt:
            try:
                made = evidence.make_receipt(self, report, held, groups, reason, now, span_before)
            except FieldcryptError as exc:
                raise type(exc)(
                    f"{_count(len(destroyed), 'key')} destroyed, but the receipt could not be made: {exc}"
                ) from exc
            report = replace(report, receipt=made)
        log.info(
            "shred %s",
            str(report),  # the text names no person; the report object does (a handler may log args as they are)
            extra=_ev(
                "key.shredded",
                domain=domain,
                persons=len(people) if people is not None else None,
                keys=len(destroyed),
                pending=pending,
            ),
        )
        return report

    def _held(self, domain: str | None, people: list[str] | None) -> list[KeyRecord]:
        """What a shred would destroy (a domain with its masked views' domain)."""
        domains: list[str | None] = [None] if domain is None else list(with_views(domain))
        if people is None:
            return [r for d in domains for r in self._src._call(lambda d=d: self._src.store.keys(d))]  # type: ignore[misc]
        held = list(self._src._call(lambda: self._src.store.keys_of(domain, people)))
        # in the order the persons were given (then domain, version), as a report lists them
        pos: dict[str, int] = {}
        for i, p in enumerate(people):
            pos.setdefault(p, i)  # (a person given twice: their first place)
        return sorted(held, key=lambda r: (pos.get(r.person or "", len(people)), r.domain, r.version))

    def _report(
        self,
        target: str,
        domain: str | None,
        people: list[str] | None,
        destroyed: tuple[ShredRecord, ...],
        names: dict[str, str],
        *,
        dry_run: bool,
        pending: bool,
        earlier: dict[str, int] | None = None,
    ) -> ShredReport:
        previously = 0
        persons: tuple[PersonShred, ...] = ()
        if people is not None:
            mine: dict[str, list[int]] = {p: [] for p in people}
            for r in destroyed:
                mine.setdefault(r.person or "", []).append(r.key_id)
            counts: dict[str, int] = {}
            if earlier is not None and not dry_run:  # the shred counted them before it destroyed anything
                for p, n in earlier.items():
                    counts[names.get(p, p)] = counts.get(names.get(p, p), 0) + n
                persons = tuple(PersonShred(p, tuple(mine[p]), counts.get(p, 0)) for p in people)
            else:
                by_stored = self._src._call(lambda: self._src.store.shredded_counts(domain, list(names) or people))
                for p, n in by_stored.items():
                    counts[names.get(p, p)] = counts.get(names.get(p, p), 0) + n
                persons = tuple(
                    PersonShred(p, tuple(mine[p]), counts.get(p, 0) - (0 if dry_run else len(mine[p]))) for p in people
                )
            previously = sum(p.previously_shredded for p in persons)
        elif not destroyed:
            previously = self._src._call(lambda: self._src.store.count_shredded(domain, None))
        return ShredReport(target, destroyed, previously, persons, dry_run=dry_run, pending=pending)

    def purge(self) -> bool:
        """The work of :meth:`fieldcrypt.Keyring.purge`, documented there."""
        delay = self._src._retry.backoff
        for attempt in range(self._src._retry.attempts + 2):
            if self._src._call(self._src.store.purge):
                return True
            if attempt + 1 < self._src._retry.attempts + 2:
                self._src._retry.sleep(delay)
                delay *= 2
        log.warning(
            "shred pending: the key store's write-ahead log is held by a reader; re-run the shred",
            extra=_ev("key.shred_pending"),
        )
        return False

    def export_shred_log(self) -> list[ShredRecord]:
        return list(self._src._call(self._src.store.shred_log))

    def restore(
        self, entries: Iterable[ShredRecord] | None = None, *, reason: str = "", quiet: bool = False
    ) -> list[int]:
        """The work of :meth:`fieldcrypt.Keyring.restore`, documented there."""
        if entries is None:
            if self._log_file is None or not self._log_file.exists():
                raise ConfigurationError("no shred log to re-apply: pass entries or configure shred_log=PATH")
            entries = shredlog.read(self._log_file)
        entries = list(entries)
        known = {r.key_id for r in self._src._call(self._src.store.shred_log)}
        if quiet and all(e.key_id in known for e in entries):
            return []
        # a file written before pseudonyms names people by their ids: the store gets their pseudonyms
        entries = [e if e.person is None or is_pseudonym(e.person) else self._hashed(e) for e in entries]
        audit = self._src._audit("restore", reason or "re-apply shred log")
        destroyed = self._src._call(lambda: self._src.store.apply_shred_log(entries, audit))
        self._src._forget_restored(destroyed)
        self.purge()
        log.info(
            "shred log re-applied: %d data keys destroyed again",
            len(destroyed),
            extra=_ev("key.restored", keys=len(destroyed)),
        )
        return destroyed

    def _hashed(self, entry: ShredRecord) -> ShredRecord:
        """An entry of a shred-log file written before pseudonyms (it names an id): named by its pseudonym in its
        domain; by the pseudonym its key's row holds if this keyring holds no KEK of the domain (by none if the store
        has no row of it either: the key is destroyed all the same)."""
        try:
            return replace(entry, person=self._src._stored(entry.domain, entry.person, create=False))
        except (ConfigurationError, KeyCorruptedError):
            row = self._src._call(lambda: self._src.store.get(entry.key_id))
            return replace(entry, person=row.person if row is not None else None)

    def migrate_pseudonyms(self, *, reason: str = "", progress: Callable[[int, int], None] | None = None) -> int:
        """The work of :func:`fieldcrypt.keys.keyring.migrate_pseudonyms`, documented there."""
        src = self._src
        store = src.store
        if not store.supports_pseudonyms:
            raise ConfigurationError(f"key store {store!r} keeps no pseudonym key: its data-subject ids stay as given")
        # each domain's pseudonym key is made on its first use here (wrapped under the domain's KEK); an audit entry
        # naming a person but no domain (and no key the store knows) is named by the first domain's pseudonym
        fallback: list[str] = []

        def of(domain: str, person: str) -> str:
            if not domain:
                if not fallback:
                    fallback.append(min((r.domain for r in src._call(lambda: store.keys(None, None))), default="*"))
                domain = fallback[0]
            named = src._stored(domain, person)
            assert named is not None
            return named

        def rewrap(record: KeyRecord, pseudonym: str) -> bytes:
            """The data key of ``record`` (its row names the id), wrapped again for its pseudonym, with the key's
            check of the id (so its readers tell whose key it is without the pseudonym key)."""
            ids = (record.key_id, record.domain)
            assert record.person is not None
            if record.branch_id:  # wrapped by its branch key: local, no KMS call
                branch = src._branch(record.branch_id, record, src._deadline()).aead
                handle = unwrap_handle(record.wrapped, *ids, record.person, record.version, branch)
                check = person_check_of(handle, record.person)
                return with_check(check, wrap_handle(handle, *ids, pseudonym, record.version, branch))
            handle = src._with_kek(record, partial(_unwrap_handle, record))
            check = person_check_of(handle, record.person)
            kek = src._kek_of(record, "data key")
            return with_check(
                check,
                self._wrap_with(
                    kek,
                    f"data key {format_key_id(record.key_id)}",
                    lambda: wrap_handle(handle, *ids, pseudonym, record.version, kek.aead),
                ),
            )

        audit = src._audit("pseudonymize", _text(reason) or "data-subject ids replaced by pseudonyms")
        done = src._call(lambda: store.pseudonymize(of, rewrap, "per-domain", audit, progress=progress))
        log.info(
            "key store migrated to pseudonyms: %d data keys rewrapped",
            done,
            extra=_ev("key.pseudonymized", keys=done),
        )
        self.purge()  # SQLite: the ids in clear leave the write-ahead log too (PostgreSQL: see docs/key-model.md)
        return done

    def audit(
        self,
        limit: int | None = None,
        *,
        person: str | None = None,
        operation: str | None = None,
        since: float | None = None,
        domain: str | None = None,
    ) -> list[AuditEntry]:
        """The work of :meth:`fieldcrypt.Keyring.audit`, documented there."""
        if person is not None:
            check_id(person, "data-subject id")
        if operation is not None and operation not in OPERATIONS:
            raise ConfigurationError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigurationError("limit must be a non-negative int")
        if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
            raise ConfigurationError("since must be epoch seconds (int or float)")
        if person is None:
            if domain is not None:  # never ignored: it says where to look for a data subject, nothing else
                raise ConfigurationError("domain (--domain) names where to look for a data subject: give one too")
            return self._src._call(lambda: self._src.store.audit_log(limit, operation=operation, since=since))
        if domain is not None:
            check_id(domain, "domain")
        (names,) = self._pseudonyms_of([person], domain)
        if not names:
            return []
        found = self._src._call(
            lambda: self._src.store.audit_log(
                limit, person=names[0] if len(names) == 1 else list(names), operation=operation, since=since
            )
        )
        return [replace(e, person=person) for e in found]
