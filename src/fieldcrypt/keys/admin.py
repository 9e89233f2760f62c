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
from functools import partial
from pathlib import Path
from typing import Any

from fieldcrypt.crypto.cipher import DataKey, unwrap_handle, wrap_handle
from fieldcrypt.errors import ConfigurationError, format_key_id
from fieldcrypt.keys import shredlog
from fieldcrypt.keys._files import destination, shown
from fieldcrypt.keys.kek import Kek
from fieldcrypt.keys.report import PersonShred, Rotation, RotationReport, ShredReport, SkippedRotation
from fieldcrypt.keys.source import KeySource, _ev, _wrap_failure
from fieldcrypt.keys.store import (
    OPERATIONS,
    AuditEntry,
    KeyRecord,
    ShredRecord,
    WrapFn,
    check_id,
    check_shred_target,
)

__all__ = ["KeyAdmin"]

log = logging.getLogger("fieldcrypt.keys")  # the events are listed in docs/observability.md

#: how many active keys :meth:`KeyAdmin.rotate_domain` reads at a time (the stores' batch size)
_ROTATE_PAGE = 500


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _unwrap_handle(record: KeyRecord, old: Kek) -> Any:
    return unwrap_handle(record.wrapped, record.key_id, record.domain, record.person, record.version, old.aead)


class KeyAdmin:
    """The administration of ``source``'s keys (``shred_log``: the file every shred appends to, or None). The
    methods are :class:`fieldcrypt.Keyring`'s admin methods, documented there."""

    __slots__ = ("_log_file", "_src")

    def __init__(self, source: KeySource, shred_log: Path | None = None) -> None:
        self._src = source
        self._log_file = shred_log

    def keys(self, domain: str | None = None, person: str | None = None) -> list[KeyRecord]:
        """The work of :meth:`fieldcrypt.Keyring.keys`, documented there."""
        if domain is not None:
            check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        return list(self._src._call(lambda: self._src.store.keys(domain, person)))

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> list[ShredRecord]:
        """The work of :meth:`fieldcrypt.Keyring.shredded_keys`, documented there."""
        if domain is not None:
            check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        return list(self._src._call(lambda: self._src.store.shredded_keys(domain, person)))

    def rotate(self, domain: str, person: str | None = None, *, reason: str = "") -> KeyRecord | None:
        """The work of :meth:`fieldcrypt.Keyring.rotate`, documented there."""
        check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        current = self._src._call(lambda: self._src.store.active(domain, person))
        if current is None:
            return None
        key = self._rotate_key(current, reason or "requested")
        return None if key is None else self._src._call(lambda: self._src.store.get(key.key_id))

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

    def _rotate_key(self, current: KeyRecord, reason: str) -> DataKey | None:
        """An admin's rotation of ``current``: its next version, made only if ``current`` is still the active key
        when the store's transaction runs (a compare-and-swap, :meth:`KeyStore.rotate`). None when it is not (it
        was shredded, or another rotation retired it): nothing is created then, no audit entry written."""
        domain, person, deadline = current.domain, current.person, self._src._deadline()
        audit = self._src._audit("rotate", reason, domain=domain, person=person)

        def put(wrap: WrapFn, key_id: int | None) -> KeyRecord | None:
            now = self._src.clock.now()
            return self._src.store.rotate(
                domain, person, current.key_id, self._src.kek.uri, wrap, now, audit, key_id=key_id
            )

        made, record = self._src._store_new_key(domain, person, current.version + 1, deadline, put)
        self._src._forget_active(domain, person)
        if record is None:
            return None
        if made is None or made.key.key_id != record.key_id:  # a plugin store that kept a key of its own making
            return self._src._unwrap(record, deadline)
        return self._src._created(made, domain, person, "rotate", reason)

    def rewrap(self, *, reason: str = "", progress: Callable[[int, int], None] | None = None) -> int:
        """The work of :meth:`fieldcrypt.Keyring.rewrap`, documented there."""
        records = list(self._src._call(lambda: self._src.store.keys()))
        items: list[tuple[int, str, bytes]] = []
        for i, record in enumerate(records):
            if record.kek_uri != self._src.kek.uri or len(self._src.keks) == 1:
                # unwrapped by the KEK that can (its failures name it), then wrapped by the primary (its failures
                # name the primary: a silent or refusing new KMS is not blamed on the old KEK)
                handle = self._src._with_kek(record, partial(_unwrap_handle, record))
                items.append((record.key_id, self._src.kek.uri, self._wrap_existing(record, handle)))
            if progress is not None:
                progress(i + 1, len(records))
        audit = self._src._audit("rewrap", reason, detail=f"to {self._src.kek.uri}")
        done = self._src._call(lambda: self._src.store.update_wrapped(items, audit))
        log.info(
            "%d data keys rewrapped under KEK %r",
            done,
            self._src.kek.uri,
            extra=_ev("key.rewrapped", kek=self._src.kek.uri, keys=done),
        )
        return done

    def _wrap_existing(self, record: KeyRecord, handle: Any) -> bytes:
        """A stored data key (``handle``, unwrapped) wrapped under the primary KEK, with retries within the deadline."""
        kek, deadline = self._src.kek, self._src._deadline()

        def attempt() -> bytes:
            try:
                return self._src._kms(
                    lambda: wrap_handle(handle, record.key_id, record.domain, record.person, record.version, kek.aead),
                    deadline,
                    f"KEK {kek.uri!r}",
                )
            except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
                raise _wrap_failure(
                    kek, exc, self._src.kms_timeout, f"data key {format_key_id(record.key_id)}"
                ) from exc

        return self._src._call(attempt, deadline)

    def shred_domain(self, domain: str, *, reason: str = "", dry_run: bool = False) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_domain`, documented there."""
        check_id(domain, "domain")
        return self._shred(f"domain {domain!r}", domain, None, reason, dry_run)

    def shred_person(
        self, person: str, *, domain: str | None = None, reason: str = "", dry_run: bool = False
    ) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_person`, documented there."""
        check_id(person, "data-subject id")
        return self._shred("data subject", domain, [person], reason, dry_run)

    def shred_persons(
        self, persons: Iterable[str], *, domain: str | None = None, reason: str = "", dry_run: bool = False
    ) -> ShredReport:
        """The work of :meth:`fieldcrypt.Keyring.shred_persons`, documented there."""
        people = check_shred_target(domain, persons)
        assert people is not None
        return self._shred(_count(len(people), "data subject"), domain, people, reason, dry_run)

    def _shred(
        self, target: str, domain: str | None, persons: list[str] | None, reason: str, dry_run: bool
    ) -> ShredReport:
        people = check_shred_target(domain, persons)
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        now = self._src.clock.now()
        if dry_run:
            held = self._held(domain, people)
            destroyed = tuple(ShredRecord(r.key_id, r.domain, r.person, now) for r in held)
            return self._report(target, domain, people, destroyed, dry_run=True, pending=False)
        log_file = self._log_file
        where = None if log_file is None else destination(log_file, "the shred log")  # a link: its target's directory
        if log_file is not None and where is not None and not where.parent.is_dir():  # refused before any is destroyed
            raise ConfigurationError(
                f"shred_log {shown(log_file, where)}: directory {str(where.parent)!r} does not exist; nothing was "
                "destroyed"
            )
        batch = f"batch {uuid.uuid4().hex[:12]}" if people is not None and len(people) > 1 else ""
        audit = self._src._audit("shred", reason, domain=domain, detail=batch)
        destroyed = tuple(self._src._call(lambda: self._src.store.shred(domain, people, now, audit)))
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
        report = self._report(target, domain, people, destroyed, dry_run=False, pending=pending)
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
        if people is None:
            return list(self._src._call(lambda: self._src.store.keys(domain)))
        return [r for p in people for r in self._src._call(lambda p=p: self._src.store.keys(domain, p))]  # type: ignore[misc]

    def _report(
        self,
        target: str,
        domain: str | None,
        people: list[str] | None,
        destroyed: tuple[ShredRecord, ...],
        *,
        dry_run: bool,
        pending: bool,
    ) -> ShredReport:
        previously = 0
        persons: tuple[PersonShred, ...] = ()
        if people is not None:
            mine: dict[str, list[int]] = {p: [] for p in people}
            for r in destroyed:
                mine.setdefault(r.person or "", []).append(r.key_id)
            counts = self._src._call(lambda: self._src.store.shredded_counts(domain, people))
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

    def audit(
        self,
        limit: int | None = None,
        *,
        person: str | None = None,
        operation: str | None = None,
        since: float | None = None,
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
        return self._src._call(
            lambda: self._src.store.audit_log(limit, person=person, operation=operation, since=since)
        )
