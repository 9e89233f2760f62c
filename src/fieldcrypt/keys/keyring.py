"""The Keyring: where wrapped data keys live, what wraps them, and their lifecycle.

    keyring = Keyring("sqlite:///keys.db", "local-kek:///etc/fieldcrypt/kek.json")

Serializers ask it for the active key of a (domain, person); deserializers for the key a ciphertext names. Key
admins rotate, rewrap, shred and audit through it (or the ``fieldcrypt`` CLI, which calls the same methods).

Caching: unwrapped keys stay in memory, at most ``cache_size`` of them, each at most ``cache_ttl`` seconds after
it was loaded (never extended by use). A background thread drops expired entries without waiting for a lookup, so
a key shredded elsewhere leaves even an idle process's memory within ``cache_ttl`` (plus a sweep interval of at
most 5 s). Key ids that are unknown or that this KEK cannot unwrap are cached too (negatively, same bounds), so a
consumer without access does not call the KMS once per value.

Rotation: an active key is replaced when it is older than ``rotation.max_age`` or has encrypted
``rotation.max_encryptions`` values; a rotation that fails raises, it never falls back to the old key. The count
is kept in the key store and charged before use: a process takes a lease of ``rotation.lease`` encryptions
(atomically, clipped at the cap) before it encrypts, so no number of processes, restarts or forks can encrypt more
than ``max_encryptions`` values under one key. Unused parts of a lease are never handed back (the count errs high).

Outcomes: a key-store or KMS failure that is transient (network, throttling, 5xx) is retried with exponential
backoff, then raised as ``KeyStoreUnavailableError``; a KEK without access is ``AccessDeniedError``; a wrapped key
that fails authentication under the KEK that wrapped it is ``KeyCorruptedError``; an error no driver classifies is
``KeyStoreUnavailableError`` naming its type. Never a raw third-party exception.

Deadlines: a key operation waits for the KMS at most ``kms_timeout`` seconds in total (its retries, and the wait for
another thread fetching the same key, included), then raises ``KeyStoreUnavailableError``; remote KEK calls run in a
bounded pool of worker threads and are abandoned at the deadline (``fieldcrypt.keys._deadline``). No KMS call runs
inside a key-store transaction or under a lock that lookups of other keys wait on: a new key is wrapped before the
store's transaction, which re-checks the active key, the shred log and the version before inserting it (see
:meth:`Keyring._create` and docs/key-lifecycle.md, "A shred racing a key creation").
"""

from __future__ import annotations

import contextlib
import getpass
import inspect
import logging
import os
import secrets
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fieldcrypt.clock import Clock, SystemClock
from fieldcrypt.crypto.cipher import (
    DataKey,
    encrypted_keyset,
    new_data_key,
    unwrap_data_key,
    unwrap_handle,
    wrap_handle,
)
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    KeyCorruptedError,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreUnavailableError,
    format_key_id,
)
from fieldcrypt.keys import _fork, shredlog
from fieldcrypt.keys._deadline import KeyLocks, KmsRunner, KmsTimeout
from fieldcrypt.keys._files import destination, shown
from fieldcrypt.keys.cache import TtlCache
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek, check_kms_timeout, classify_failure, open_kek
from fieldcrypt.keys.registry import open_store
from fieldcrypt.keys.report import PersonShred, Rotation, RotationReport, ShredReport, SkippedRotation
from fieldcrypt.keys.store import (
    OPERATIONS,
    AuditEntry,
    KeyRecord,
    KeyStore,
    ShredRecord,
    WrapFn,
    WrapLater,
    check_id,
    check_shred_target,
    redact_url,
)

__all__ = [
    "KeyMeter",
    "Keyring",
    "PersonShred",
    "Rotation",
    "RotationPolicy",
    "RotationReport",
    "ShredReport",
    "SkippedRotation",
]

log = logging.getLogger("fieldcrypt.keys")  # the events are listed in docs/observability.md
T = TypeVar("T")
R = TypeVar("R")
_perf = time.perf_counter
#: the reasons the keyring itself gives for creating or rotating a key (logged; an admin's reason is not)
_AUTOMATIC = frozenset({"first use", "max_age reached", "max_encryptions reached", "previous key shredded"})


class KeyMeter(Protocol):
    """Told about one caller's lookups and key-store calls (a serde's per-record state, or its ``SerdeStats``)."""

    def key_miss(self) -> None:
        """A lookup the cache could not answer: it goes to the key store."""

    def key_store_call(self, seconds: float, failed: bool) -> None:
        """One key-store or KEK call (one attempt) returned after ``seconds``; ``failed``: it was unavailable."""


DEFAULT_CACHE_SIZE = 10_000
DEFAULT_CACHE_TTL = 300.0
#: the longest ``cache_ttl`` taken: a day. The TTL is the bound of the erasure promise (a shred reaches every process
#: within it), so it must be a finite number an erasure runbook can state; beyond a day caching saves nothing
#: measurable (one key-store read and one KMS call per key and process a day). See docs/key-lifecycle.md.
MAX_CACHE_TTL = 86_400.0
#: the longest rotation age accepted: longer means "never", which is spelled None (a float near 1e308 overflowed)
MAX_ROTATION_AGE = 100 * 365.25 * 86_400.0
#: the most ``retries`` taken, and the longest first ``backoff`` (it doubles per retry)
MAX_RETRIES = 20
MAX_BACKOFF = 60.0
#: AES-GCM with random 96-bit nonces: NIST SP 800-38D limits a key to 2^32 encryptions; stay far below
HARD_MAX_ENCRYPTIONS = 2**31


@dataclass(frozen=True)
class RotationPolicy:
    """When an active data key is replaced by a new version (old versions keep decrypting).

    ``max_age``: seconds after creation (None: never by age). ``max_encryptions``: values (AES-GCM invocations,
    the nonce budget) one key may encrypt, in every process together; never exceeded. ``lease``: how many a
    process charges to the store's count at a time, before using them (default: ``max_encryptions // 32``, at
    most 65,536). A process that stops returns nothing, so a key may rotate before ``max_encryptions`` values were
    really encrypted, never after.
    """

    max_age: float | None = 90 * 86400.0
    max_encryptions: int = 2**30
    lease: int | None = None

    def __post_init__(self) -> None:
        if self.max_age is not None and (
            isinstance(self.max_age, bool)
            or not isinstance(self.max_age, (int, float))
            or not 0 < self.max_age <= MAX_ROTATION_AGE  # also false for nan, inf and ints too large for a float
        ):
            raise ConfigurationError(
                f"rotation max_age must be positive seconds, at most {MAX_ROTATION_AGE:.0f} (100 years), or None "
                "(never by age)"
            )
        if isinstance(self.max_encryptions, bool) or not isinstance(self.max_encryptions, int):
            raise ConfigurationError("rotation max_encryptions must be an int")
        if not 0 < self.max_encryptions <= HARD_MAX_ENCRYPTIONS:
            raise ConfigurationError(f"rotation max_encryptions must be between 1 and {HARD_MAX_ENCRYPTIONS}")
        if self.lease is None:
            object.__setattr__(self, "lease", max(1, min(65_536, self.max_encryptions // 32)))
        elif isinstance(self.lease, bool) or not isinstance(self.lease, int):
            raise ConfigurationError("rotation lease must be an int")
        if not 0 < self.leased <= self.max_encryptions:
            raise ConfigurationError("rotation lease must be between 1 and max_encryptions")

    @property
    def leased(self) -> int:
        """The lease size in effect (``lease`` after its default is filled in)."""
        assert self.lease is not None
        return self.lease


def _seconds(value: object, what: str, maximum: float, *, zero: bool = False) -> float:
    """A duration setting: an int or float, finite, more than 0 (or 0 too, with ``zero``) and at most ``maximum``
    seconds. Anything else (``inf``, ``nan``, a negative number, a bool, a string) is a ``ConfigurationError``."""
    low = "0 or more" if zero else "more than 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds ({low}, at most {maximum:g})")
    if not ((0 <= value if zero else 0 < value) and value <= maximum):  # also false for nan
        raise ConfigurationError(f"{what} must be {low} and at most {maximum:g} seconds (a finite number)")
    return float(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _unwrap_handle(record: KeyRecord, old: Kek) -> Any:
    return unwrap_handle(record.wrapped, record.key_id, record.domain, record.person, record.version, old.aead)


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

    The store must exist (:func:`fieldcrypt.create_key_store`, ``fieldcrypt keys init``).
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
        kms_timeout: float = DEFAULT_KMS_TIMEOUT,
    ) -> None:
        keks = [kek] if isinstance(kek, (str, Kek)) else list(kek)
        if not keks or not all(isinstance(k, (str, Kek)) for k in keks):
            raise ConfigurationError("kek must be a KEK URI such as local-kek:///path/kek.json, a Kek, or a list")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ConfigurationError(f"retries must be an int from 0 to {MAX_RETRIES}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigurationError("cache_size must be a positive int")
        cache_ttl = _seconds(cache_ttl, "cache_ttl", MAX_CACHE_TTL)
        backoff = _seconds(backoff, "backoff", MAX_BACKOFF, zero=True)
        self.kms_timeout = check_kms_timeout(kms_timeout)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.keks = [open_kek(k, timeout=self.kms_timeout) if isinstance(k, str) else k for k in keks]
        self.kek = self.keks[0]
        self._remote = any(k.remote for k in self.keks)  # KEK calls get a worker thread and a deadline
        if isinstance(store, KeyStore):
            self.store = store
        elif isinstance(store, str):
            self.store = open_store(store)
        else:
            raise ConfigurationError("store must be a key store URL such as sqlite:///keys.db, or a KeyStore")
        self._prewrap = _takes_key_id(self.store)
        rotation = rotation or RotationPolicy()
        if not isinstance(rotation, RotationPolicy):
            raise ConfigurationError("rotation must be a fieldcrypt.RotationPolicy")
        self._rotation = rotation
        self.actor = actor or _default_actor()
        self._cache_ttl = cache_ttl
        self._retry = _Retry(retries + 1, backoff, sleep)
        self._cache_size = cache_size
        self._new_caches()
        self._meters = threading.local()  # the KeyMeter of the lookup this thread is in, if any (see metering)
        self._closed = False
        self._shred_log = Path(shred_log) if shred_log is not None else None
        if self._shred_log is not None and self._shred_log.exists():
            self.restore(reason="re-apply the shred log at startup", quiet=True)
        _fork.track(self)
        self._start_sweeper()

    @property
    def rotation(self) -> RotationPolicy:
        """When active keys are replaced (checked at construction; fixed for the keyring's life)."""
        return self._rotation

    @property
    def cache_ttl(self) -> float:
        """Seconds an unwrapped key stays in memory after loading: the bound on how long a shred elsewhere takes to
        reach this process. Fixed at construction (checked there), so it cannot be set to something unbounded."""
        return self._cache_ttl

    def _new_caches(self) -> None:
        size, ttl = self._cache_size, self.cache_ttl
        self._by_id: TtlCache[int, DataKey] = TtlCache(size, ttl, self.clock)
        self._active: TtlCache[tuple[str, str | None], DataKey] = TtlCache(size, ttl, self.clock)
        self._erased: TtlCache[int, ShredRecord] = TtlCache(size, 86400.0 * 365, self.clock)
        #: key ids the store does not hold, or that no configured KEK may unwrap: the error to raise again
        self._missing: TtlCache[int, Callable[[], DecryptionError]] = TtlCache(size, ttl, self.clock)
        self._key_locks = KeyLocks()
        self._kms_runner = KmsRunner()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and empty caches. A cached key carries the parent's leased encryption
        budget, which the child must not spend a second time; the child reloads keys and leases its own."""
        self._new_caches()
        if not self._closed:
            self._start_sweeper()

    def _start_sweeper(self) -> None:
        """A daemon thread that drops expired cache entries every ``min(cache_ttl / 4, 5 s)`` (real time)."""
        interval = min(max(self.cache_ttl / 4, 0.05), 5.0)
        ref = weakref.ref(self)
        stop = self._stop_sweeper = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                keyring = ref()
                if keyring is None:
                    return
                keyring.sweep()
                del keyring

        threading.Thread(target=run, name="fieldcrypt-key-cache-sweeper", daemon=True).start()

    def sweep(self) -> int:
        """Drop every expired cache entry now (the sweeper thread calls this); returns how many were dropped."""
        return sum(cache.sweep() for cache in (self._by_id, self._active, self._erased, self._missing))

    # -- hot path -------------------------------------------------------------------------------------------------
    def encryption_key(self, domain: str, person: str | None = None, meter: KeyMeter | None = None) -> DataKey:
        """The active data key of (domain, person), with a leased budget: created on first use, rotated when due.
        ``meter`` is told whether the lookup needed the key store, and how long each call took."""
        cached = self._active.get((domain, person))
        if cached is not None:
            return cached
        deadline = self._deadline()
        with self.metering(meter), self._key_lock(domain, person, deadline):
            cached = self._active.get((domain, person), count=False)
            if cached is not None:
                return cached
            if meter is not None:
                meter.key_miss()
            record = self._call(lambda: self.store.active(domain, person))
            if record is None:
                key = self._create(domain, person, None, "create", "first use", deadline, lease=True, version=1)
            elif self._expired(record):
                key = self._create(
                    domain,
                    person,
                    record.key_id,
                    "rotate",
                    "max_age reached",
                    deadline,
                    lease=True,
                    version=record.version + 1,
                )
            else:
                key = self._unwrap(record, deadline)
                return self._lease_and_activate(key, record.created_at, deadline)
            return key if key.remaining() > 0 else self._lease_and_activate(key, None, deadline)

    def renew(self, key: DataKey, meter: KeyMeter | None = None) -> DataKey:
        """Called by the engine when a key's leased budget is spent: lease more, or move to the next key (rotated
        at the cap, or created anew when this one was shredded elsewhere)."""
        deadline = self._deadline()
        with self.metering(meter), self._key_lock(key.domain, key.person, deadline):
            if key.remaining() > 0:
                return key
            if meter is not None:
                meter.key_miss()
            self._active.discard((key.domain, key.person))
            return self._lease_and_activate(key, None, deadline)

    def _key_lock(self, domain: str, person: str | None, deadline: float) -> contextlib.AbstractContextManager[None]:
        """The lock of (domain, person) in this process: threads needing that key wait for the one fetching it (at
        most until their deadline); threads needing another key do not wait. The KMS calls made under it have the
        same deadline, and no key-store transaction is open while they run."""

        def timeout() -> KeyStoreUnavailableError:
            return KeyStoreUnavailableError(
                f"another thread of this process has been fetching the data key of domain {domain!r}"
                f"{' for a data subject' if person is not None else ''} for longer than kms_timeout "
                f"({self.kms_timeout:g} s)"
            )

        return self._key_locks.hold((domain, person), deadline, timeout)

    def _deadline(self) -> float:
        """The deadline of a key operation starting now: ``kms_timeout`` seconds of real (monotonic) time."""
        return time.monotonic() + self.kms_timeout

    def _lease_and_activate(self, key: DataKey, created: float | None, deadline: float) -> DataKey:
        """Charge a lease for ``key`` in the store and cache it as active; when its cap is reached, rotate; when it
        is gone (shredded elsewhere), use or create the new active key. ``created`` None: look it up."""
        lease, cap = self.rotation.leased, self.rotation.max_encryptions
        for _ in range(4):
            grant = self._call(lambda k=key: self.store.reserve(k.key_id, lease, cap))  # type: ignore[misc]
            if grant is not None:
                if grant > 0:
                    key.lease(grant)
                    return self._activate(key, created)
                key = self._create(
                    key.domain,
                    key.person,
                    key.key_id,
                    "rotate",
                    "max_encryptions reached",
                    deadline,
                    lease=True,
                    version=key.version + 1,
                )
                if key.remaining() > 0:
                    return key
                created = None
                continue
            # shredded elsewhere: another process may already have made the next key; else make it
            self._by_id.discard(key.key_id)
            record = self._call(lambda k=key: self.store.active(k.domain, k.person))  # type: ignore[misc]
            if record is not None and record.key_id != key.key_id:
                key, created = self._unwrap(record, deadline), record.created_at
            else:
                key = self._create(
                    key.domain, key.person, None, "create", "previous key shredded", deadline, lease=True, version=1
                )
                if key.remaining() > 0:
                    return key
                created = None
        raise KeyStoreUnavailableError(
            "could not lease an encryption budget: the active key keeps changing (shredded or rotated elsewhere)",
            key_id=key.key_id,
        )

    def decryption_key(self, key_id: int, meter: KeyMeter | None = None) -> DataKey:
        """The data key with this id. Raises ``KeyShreddedError`` if it was destroyed, ``KeyNotFoundError`` if the
        store never held it, ``AccessDeniedError`` if no configured KEK may unwrap it, ``KeyCorruptedError`` if its
        wrapped form fails authentication. The first three carry ``owner`` (domain, person) where known, so a
        reader can tell a header re-pointed at another person's key (tampering) from an erasure. ``meter``: as for
        :meth:`encryption_key`."""
        cached = self._by_id.get(key_id)
        if cached is not None:
            return cached
        erased = self._erased.get(key_id)
        if erased is not None:
            raise _shredded(erased)
        missing = self._missing.get(key_id)
        if missing is not None:
            raise missing()
        if meter is None:
            return self._load(key_id)
        meter.key_miss()
        with self.metering(meter):
            return self._load(key_id)

    def _load(self, key_id: int) -> DataKey:
        """A key the caches do not answer for, from the store (and the KEK); the answer is cached, negative too."""
        kid = format_key_id(key_id)
        record = self._call(lambda: self.store.get(key_id))
        if record is None:
            gone = self._call(lambda: self.store.shredded(key_id))
            if gone is not None:
                self._erased.put(key_id, gone)
                log.debug("data key %s was shredded: its values read as erased", kid, extra=_ev("key.erased", kid))
                raise _shredded(gone)

            def unknown() -> DecryptionError:
                return KeyNotFoundError("no data key with this id in the key store", key_id=key_id)

            self._missing.put(key_id, unknown)
            log.warning(
                "data key %s is not in the key store (a value names a key this store never held)",
                kid,
                extra=_ev("key.not_found", kid),
            )
            raise unknown()
        try:
            key = self._unwrap(record)
        except AccessDeniedError as exc:
            reason, owner = exc.reason, exc.owner

            def denied() -> DecryptionError:
                err = AccessDeniedError(reason, key_id=key_id)
                err.owner = owner
                return err

            self._missing.put(key_id, denied)
            log.warning(
                "no access to data key %s: no configured KEK can unwrap it (wrapped by %r)",
                kid,
                record.kek_uri,
                extra=_ev("key.denied", kid, domain=record.domain, kek=record.kek_uri),
            )
            raise
        except KeyCorruptedError:
            log.error(
                "data key %s fails authentication under the KEK that wrapped it: its key-store row is corrupt or "
                "was tampered with",
                kid,
                extra=_ev("key.corrupted", kid, domain=record.domain),
            )
            raise
        self._by_id.put(key_id, key)
        log.debug("data key %s loaded from the key store", kid, extra=_ev("key.loaded", kid, domain=record.domain))
        return key

    @contextlib.contextmanager
    def metering(self, meter: KeyMeter | None) -> Iterator[None]:
        """Within the block, this thread's key-store and KEK calls are reported to ``meter`` (None: to nobody new;
        an enclosing block's meter keeps counting)."""
        if meter is None:
            yield
            return
        local = self._meters
        outer = getattr(local, "meter", None)
        local.meter = meter
        try:
            yield
        finally:
            local.meter = outer

    # -- internals ---------------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """Run a key-store or KEK call, retrying ``KeyStoreUnavailableError`` with exponential backoff, then raising.
        With a ``deadline`` (a KEK call's), no retry starts that would begin after it. Each attempt is timed and
        reported to the thread's meter (see :meth:`metering`)."""
        delay = self._retry.backoff
        attempts = self._retry.attempts
        meter: KeyMeter | None = getattr(self._meters, "meter", None)
        for attempt in range(attempts):
            start = _perf()
            try:
                result = fn()
            except KeyStoreUnavailableError as exc:
                if meter is not None:
                    meter.key_store_call(_perf() - start, True)
                if attempt + 1 == attempts or (deadline is not None and time.monotonic() + delay >= deadline):
                    log.error(
                        "key store or KEK unavailable after %d attempts: %s",
                        attempt + 1,
                        exc.reason,
                        extra=_ev("key_store.unavailable", exc.key_id, attempts=attempt + 1, error=type(exc).__name__),
                    )
                    raise
                log.warning(
                    "key store or KEK unavailable (attempt %d of %d), retrying in %.3f s: %s",
                    attempt + 1,
                    attempts,
                    delay,
                    exc.reason,
                    extra=_ev("key_store.retry", exc.key_id, attempt=attempt + 1, attempts=attempts, delay=delay),
                )
                self._retry.sleep(delay)
                delay *= 2
            except BaseException:
                if meter is not None:
                    meter.key_store_call(_perf() - start, False)  # it answered (no access, corrupt, ...)
                raise
            else:
                if meter is not None:
                    meter.key_store_call(_perf() - start, False)
                return result
        raise AssertionError("unreachable")

    def _expired(self, record: KeyRecord) -> bool:
        age = self.rotation.max_age
        return age is not None and record.created_at + age <= self.clock.now()

    def _activate(self, key: DataKey, created: float | None) -> DataKey:
        if created is None:
            record = self._call(lambda: self.store.get(key.key_id))
            created = record.created_at if record is not None else self.clock.now()
        until = None if self.rotation.max_age is None else created + self.rotation.max_age
        self._active.put((key.domain, key.person), key, until)
        self._by_id.put(key.key_id, key)
        return key

    def _audit(self, operation: str, reason: str = "", **kw: Any) -> AuditEntry:
        return AuditEntry(at=self.clock.now(), actor=self.actor, operation=operation, reason=reason, **kw)

    def _create(
        self,
        domain: str,
        person: str | None,
        retire: int | None,
        operation: str,
        reason: str,
        deadline: float | None = None,
        *,
        lease: bool = False,
        version: int | None = None,
    ) -> DataKey:
        """Create (or rotate to) the next key. With ``lease``, a key created here comes with its first lease charged
        and is cached as active (budget > 0); a key another process created meanwhile comes back with budget 0.
        ``version``: the version the new key will most likely get (what the caller just read), so it is wrapped
        before the first transaction, which then usually inserts it.

        The new key is wrapped (a KMS call) outside every key-store transaction: the store's transaction names the
        id and version to wrap it for (:class:`WrapLater`) and is rolled back; the key is wrapped for exactly that
        pair; a new transaction re-checks everything (the active key, the shred log, the next version) and inserts
        it, or returns the active key another process made meanwhile (this one is then dropped, never stored).
        docs/key-lifecycle.md, "A shred racing a key creation", says what a shred in between does."""
        if deadline is None:
            deadline = self._deadline()
        charge = self.rotation.leased if lease else 0
        audit = self._audit(operation, reason, domain=domain, person=person)

        def put(wrap: WrapFn, key_id: int | None) -> KeyRecord:
            now = self.clock.now()
            if not self._prewrap:  # a plugin store whose create() takes no key_id
                return self.store.create(domain, person, self.kek.uri, wrap, now, audit, retire=retire, charge=charge)
            return self.store.create(
                domain, person, self.kek.uri, wrap, now, audit, retire=retire, charge=charge, key_id=key_id
            )

        made, record = self._store_new_key(domain, person, version, deadline, put)
        if made is not None and made.key.key_id == record.key_id:
            key = self._created(made, domain, person, operation, reason)
            if lease:
                key.lease(charge)
                return self._activate(key, record.created_at)
            return key
        key = self._unwrap(record, deadline)
        key.lease(0)
        return key

    def _rotate_key(self, current: KeyRecord, reason: str) -> DataKey | None:
        """An admin's rotation of ``current``: its next version, made only if ``current`` is still the active key
        when the store's transaction runs (a compare-and-swap, :meth:`KeyStore.rotate`). None when it is not (it
        was shredded, or another rotation retired it): nothing is created then, no audit entry written."""
        domain, person, deadline = current.domain, current.person, self._deadline()
        audit = self._audit("rotate", reason, domain=domain, person=person)

        def put(wrap: WrapFn, key_id: int | None) -> KeyRecord | None:
            now = self.clock.now()
            return self.store.rotate(domain, person, current.key_id, self.kek.uri, wrap, now, audit, key_id=key_id)

        made, record = self._store_new_key(domain, person, current.version + 1, deadline, put)
        self._active.discard((domain, person))
        if record is None:
            return None
        if made is None or made.key.key_id != record.key_id:  # a plugin store that kept a key of its own making
            return self._unwrap(record, deadline)
        return self._created(made, domain, person, "rotate", reason)

    def _store_new_key(
        self,
        domain: str,
        person: str | None,
        version: int | None,
        deadline: float,
        put: Callable[[WrapFn, int | None], R],
    ) -> tuple[_Wrapped | None, R]:
        """``put(wrap, key_id)``: a store call that may insert a new key, wrapped outside its transaction (see
        :meth:`_create`). Returns the key wrapped for it last (None if none was) and what ``put`` returned."""
        if not self._prewrap:  # a plugin store whose create() takes no key_id: the KMS call runs in its transaction
            made_in_tx: list[_Wrapped] = []

            def wrap_inside(key_id: int, version: int) -> bytes:
                made_in_tx.append(self._wrap_attempt(domain, person, key_id, version, deadline))
                return made_in_tx[-1].wrapped

            result = self._call(lambda: put(wrap_inside, None))
            return (made_in_tx[-1] if made_in_tx else None), result
        made = None if version is None else self._wrap_new(domain, person, _fresh_id(), version, deadline)
        for _ in range(_CREATE_ROUNDS):
            wrap = partial(_take_prepared, made)
            proposed = made.key.key_id if made is not None else None
            try:
                result = self._call(lambda w=wrap, k=proposed: put(w, k))  # type: ignore[misc]
            except WrapLater as later:
                made = self._wrap_new(domain, person, later.key_id, later.version, deadline)
                continue
            return made, result
        raise KeyStoreUnavailableError(
            f"could not create a data key in domain {domain!r}: the key store's versions kept changing while "
            "new keys were wrapped"
        )

    def _created(self, made: _Wrapped, domain: str, person: str | None, operation: str, reason: str) -> DataKey:
        """The key this process made and the store kept: logged (the reason only if the keyring gave it)."""
        kid = format_key_id(made.key.key_id)
        why = reason if reason in _AUTOMATIC else "requested"  # an admin's own words go to the audit log only
        event = "key.created" if operation == "create" else "key.rotated"
        log.info(
            "new data key %s in domain %r%s (%s: %s)",
            kid,
            domain,
            " for a data subject" if person is not None else "",
            "created" if operation == "create" else "rotated",
            why,
            extra=_ev(event, kid, domain=domain, per_person=person is not None, reason=why),
        )
        return made.key

    def _wrap_new(self, domain: str, person: str | None, key_id: int, version: int, deadline: float) -> _Wrapped:
        """A new data key wrapped for (key_id, version), with retries within ``deadline``; outside any transaction."""
        return self._call(lambda: self._wrap_attempt(domain, person, key_id, version, deadline), deadline)

    def _wrap_attempt(self, domain: str, person: str | None, key_id: int, version: int, deadline: float) -> _Wrapped:
        kek = self.kek
        try:
            key, wrapped = self._kms(
                lambda: new_data_key(key_id, domain, person, version, kek.aead), deadline, f"KEK {kek.uri!r}"
            )
        except Exception as exc:  # tink.TinkError, a KMS client's own exception that tink let through, KmsTimeout
            raise _wrap_failure(kek, exc, self.kms_timeout) from exc
        return _Wrapped(key, wrapped)

    def _wrap_existing(self, record: KeyRecord, handle: Any) -> bytes:
        """A stored data key (``handle``, unwrapped) wrapped under the primary KEK, with retries within the deadline."""
        kek, deadline = self.kek, self._deadline()

        def attempt() -> bytes:
            try:
                return self._kms(
                    lambda: wrap_handle(handle, record.key_id, record.domain, record.person, record.version, kek.aead),
                    deadline,
                    f"KEK {kek.uri!r}",
                )
            except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
                raise _wrap_failure(kek, exc, self.kms_timeout, f"data key {format_key_id(record.key_id)}") from exc

        return self._call(attempt, deadline)

    def _kms(self, fn: Callable[[], T], deadline: float, what: str) -> T:
        """``fn()`` (a KEK call), waited for at most until ``deadline`` when a configured KEK is remote (then it
        runs in a worker thread: a KMS that never answers cannot hold this thread); else called here."""
        if not self._remote:
            return fn()
        return self._kms_runner.run(fn, deadline, what)

    def _unwrap(self, record: KeyRecord, deadline: float | None = None) -> DataKey:
        return self._with_kek(
            record,
            lambda kek: unwrap_data_key(
                record.wrapped, record.key_id, record.domain, record.person, record.version, kek.aead
            ),
            deadline,
        )

    def _with_kek(self, record: KeyRecord, use: Callable[[Kek], T], deadline: float | None = None) -> T:
        """``use(kek)`` with the first configured KEK that can unwrap ``record`` (the one that wrapped it first).

        Each failure is classified (:func:`fieldcrypt.keys.kek.classify_failure`); transient ones are retried
        with backoff (the whole attempt, through ``_call``), within ``deadline`` (default: ``kms_timeout`` from
        now)."""
        inner = encrypted_keyset(record.wrapped)
        if inner is None:
            raise _corrupt(record)
        until = self._deadline() if deadline is None else deadline
        return self._call(lambda: self._try_keks(record, use, inner, until), until)

    def _try_keks(self, record: KeyRecord, use: Callable[[Kek], T], inner: bytes, deadline: float) -> T:
        verdicts: list[tuple[Kek, str, str]] = []
        for kek in sorted(self.keks, key=lambda k: k.uri != record.kek_uri):
            try:
                return self._kms(lambda k=kek: use(k), deadline, f"KEK {kek.uri!r}")  # type: ignore[misc]
            except Exception as exc:  # tink.TinkError, a KMS client's own exception that tink let through, KmsTimeout
                verdict = classify_failure(kek, exc, inner)
                if verdict == "corrupt" and kek.uri != record.kek_uri and not _names_own_key(kek, inner):
                    verdict = "denied"  # a KEK that did not wrap it cannot say "tampered", unless the prefix is its own
                verdicts.append((kek, verdict, type(exc).__name__))
        kinds = {v for _, v, _ in verdicts}
        if "corrupt" in kinds:
            raise _corrupt(record)
        for kek, verdict, name in verdicts:
            if verdict == "unavailable" and name == KmsTimeout.__name__:
                raise KeyStoreUnavailableError(
                    f"KEK {kek.uri!r} did not answer within kms_timeout ({self.kms_timeout:g} s)", key_id=record.key_id
                )
            if verdict == "unavailable":
                raise KeyStoreUnavailableError(f"KEK {kek.uri!r} is unavailable ({name})", key_id=record.key_id)
        for kek, verdict, name in verdicts:
            if verdict != "denied":
                raise KeyStoreUnavailableError(
                    f"KEK {kek.uri!r} failed with an error fieldcrypt does not recognise ({name}); "
                    "it is not reported as no access",
                    key_id=record.key_id,
                )
        err = AccessDeniedError(
            f"no configured KEK can unwrap this data key (it was wrapped by {record.kek_uri!r})", key_id=record.key_id
        )
        err.owner = (record.domain, record.person)
        raise err

    # -- admin ---------------------------------------------------------------------------------------------------
    def publish_policy(self, fingerprint: str, policy: str) -> str:
        """Record what producers encrypt for a schema and domain (first writer wins); returns the recorded one."""
        return self._call(lambda: self.store.publish_policy(fingerprint, policy, self.clock.now()))

    def published_policy(self, fingerprint: str) -> str | None:
        return self._call(lambda: self.store.published_policy(fingerprint))

    def merge_policy(self, name: str, items: Sequence[str]) -> list[str]:
        """Add ``items`` to the set recorded under ``name``; returns the set as it was (see KeyStore.merge_policy)."""
        return self._call(lambda: self.store.merge_policy(name, list(items), self.clock.now()))

    def keys(self, domain: str | None = None, person: str | None = None) -> list[KeyRecord]:
        """The stored keys, active and retired (metadata; wrapped material is never shown). Shredded keys are gone
        from the store: :meth:`shredded_keys` lists them."""
        if domain is not None:
            check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        return list(self._call(lambda: self.store.keys(domain, person)))

    def shredded_keys(self, domain: str | None = None, person: str | None = None) -> list[ShredRecord]:
        """The destroyed keys (from the shred log: id, domain, person, shred time) of one domain and/or person, or
        all of them."""
        if domain is not None:
            check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        return list(self._call(lambda: self.store.shredded_keys(domain, person)))

    def rotate(self, domain: str, person: str | None = None, *, reason: str = "") -> KeyRecord | None:
        """Replace the active key of (domain, person) by a new version now (``person`` None: the domain-wide key
        only; :meth:`rotate_domain` replaces every person's too). Returns the new key, or None when nothing was
        rotated: (domain, person) has no active key (never had one, or it was shredded, also while this call ran),
        or another rotation replaced it first. A shredded person never gets a key from a rotation."""
        check_id(domain, "domain")
        if person is not None:
            check_id(person, "data-subject id")
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        current = self._call(lambda: self.store.active(domain, person))
        if current is None:
            return None
        key = self._rotate_key(current, reason or "requested")
        return None if key is None else self._call(lambda: self.store.get(key.key_id))

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
        check_id(domain, "domain")
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        rotated: list[Rotation] = []
        skipped: list[SkippedRotation] = []
        after: str | None = None
        while True:
            page = self._call(lambda a=after: self.store.active_keys(domain, a, _ROTATE_PAGE))  # type: ignore[misc]
            for current in page:
                key = self._rotate_key(current, reason or "requested")
                if key is None:
                    gone = self._call(lambda c=current: self.store.shredded(c.key_id))  # type: ignore[misc]
                    why = "shredded" if gone is not None else "rotated elsewhere"
                    skipped.append(SkippedRotation(domain, current.person, current.key_id, why))
                else:
                    rotated.append(Rotation(domain, current.person, current.key_id, key.key_id, key.version))
                if progress is not None:
                    progress(len(rotated), 0)
            if len(page) < _ROTATE_PAGE:
                return RotationReport(domain, tuple(rotated), tuple(skipped))
            after = page[-1].person or ""

    def rewrap(self, *, reason: str = "", progress: Callable[[int, int], None] | None = None) -> int:
        """Re-wrap every stored data key under the primary KEK (``kek[0]``); no Kafka data is touched.
        Afterwards the other KEKs can be retired. Returns how many keys were rewrapped."""
        records = list(self._call(lambda: self.store.keys()))
        items: list[tuple[int, str, bytes]] = []
        for i, record in enumerate(records):
            if record.kek_uri != self.kek.uri or len(self.keks) == 1:
                # unwrapped by the KEK that can (its failures name it), then wrapped by the primary (its failures
                # name the primary: a silent or refusing new KMS is not blamed on the old KEK)
                handle = self._with_kek(record, partial(_unwrap_handle, record))
                items.append((record.key_id, self.kek.uri, self._wrap_existing(record, handle)))
            if progress is not None:
                progress(i + 1, len(records))
        audit = self._audit("rewrap", reason, detail=f"to {self.kek.uri}")
        done = self._call(lambda: self.store.update_wrapped(items, audit))
        log.info(
            "%d data keys rewrapped under KEK %r",
            done,
            self.kek.uri,
            extra=_ev("key.rewrapped", kek=self.kek.uri, keys=done),
        )
        return done

    def shred_domain(self, domain: str, *, reason: str = "", dry_run: bool = False) -> ShredReport:
        """Destroy every key of a domain (all persons, all versions): its data is erased everywhere."""
        check_id(domain, "domain")
        return self._shred(f"domain {domain!r}", domain, None, reason, dry_run)

    def shred_person(
        self, person: str, *, domain: str | None = None, reason: str = "", dry_run: bool = False
    ) -> ShredReport:
        """Destroy one person's keys in every domain (or one domain): their data is erased everywhere."""
        check_id(person, "data-subject id")
        return self._shred("data subject", domain, [person], reason, dry_run)

    def shred_persons(
        self, persons: Iterable[str], *, domain: str | None = None, reason: str = "", dry_run: bool = False
    ) -> ShredReport:
        """Destroy the keys of many persons in one transaction (e.g. a file of erasure requests). Every id must be
        a non-blank ``str`` and there must be at least one; otherwise ``ConfigurationError`` and nothing is
        destroyed. The audit log gets one entry per person, naming the keys destroyed or "no key held"."""
        people = check_shred_target(domain, persons)
        assert people is not None
        return self._shred(_count(len(people), "data subject"), domain, people, reason, dry_run)

    def _shred(
        self, target: str, domain: str | None, persons: list[str] | None, reason: str, dry_run: bool
    ) -> ShredReport:
        people = check_shred_target(domain, persons)
        if not isinstance(reason, str):
            raise ConfigurationError("reason must be a str")
        now = self.clock.now()
        if dry_run:
            held = self._held(domain, people)
            destroyed = tuple(ShredRecord(r.key_id, r.domain, r.person, now) for r in held)
            return self._report(target, domain, people, destroyed, dry_run=True, pending=False)
        log_file = self._shred_log
        where = None if log_file is None else destination(log_file, "the shred log")  # a link: its target's directory
        if log_file is not None and where is not None and not where.parent.is_dir():  # refused before any is destroyed
            raise ConfigurationError(
                f"shred_log {shown(log_file, where)}: directory {str(where.parent)!r} does not exist; nothing was "
                "destroyed"
            )
        batch = f"batch {uuid.uuid4().hex[:12]}" if people is not None and len(people) > 1 else ""
        audit = self._audit("shred", reason, domain=domain, detail=batch)
        destroyed = tuple(self._call(lambda: self.store.shred(domain, people, now, audit)))
        for r in destroyed:
            self._by_id.discard(r.key_id)
            self._active.discard((r.domain, r.person))
            self._erased.put(r.key_id, r)
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
            return list(self._call(lambda: self.store.keys(domain)))
        return [r for p in people for r in self._call(lambda p=p: self.store.keys(domain, p))]  # type: ignore[misc]

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
            counts = self._call(lambda: self.store.shredded_counts(domain, people))
            persons = tuple(
                PersonShred(p, tuple(mine[p]), counts.get(p, 0) - (0 if dry_run else len(mine[p]))) for p in people
            )
            previously = sum(p.previously_shredded for p in persons)
        elif not destroyed:
            previously = self._call(lambda: self.store.count_shredded(domain, None))
        return ShredReport(target, destroyed, previously, persons, dry_run=dry_run, pending=pending)

    def purge(self) -> bool:
        """Ask the store to drop every copy of destroyed rows from its files (SQLite: truncate the WAL), retrying
        with backoff while a reader blocks it. False when still blocked: the last shred is "pending"."""
        delay = self._retry.backoff
        for attempt in range(self._retry.attempts + 2):
            if self._call(self.store.purge):
                return True
            if attempt + 1 < self._retry.attempts + 2:
                self._retry.sleep(delay)
                delay *= 2
        log.warning(
            "shred pending: the key store's write-ahead log is held by a reader; re-run the shred",
            extra=_ev("key.shred_pending"),
        )
        return False

    def export_shred_log(self) -> list[ShredRecord]:
        return list(self._call(self.store.shred_log))

    def restore(
        self, entries: Iterable[ShredRecord] | None = None, *, reason: str = "", quiet: bool = False
    ) -> list[int]:
        """After restoring the key store from an older backup: re-apply the shred log (``entries``, or the
        ``shred_log`` file this keyring keeps), so no shredded key comes back. Returns the ids destroyed again.
        A torn or corrupt line in the file is a ``ConfigurationError`` naming the line; nothing is applied."""
        if entries is None:
            if self._shred_log is None or not self._shred_log.exists():
                raise ConfigurationError("no shred log to re-apply: pass entries or configure shred_log=PATH")
            entries = shredlog.read(self._shred_log)
        entries = list(entries)
        known = {r.key_id for r in self._call(self.store.shred_log)}
        if quiet and all(e.key_id in known for e in entries):
            return []
        audit = self._audit("restore", reason or "re-apply shred log")
        destroyed = self._call(lambda: self.store.apply_shred_log(entries, audit))
        for key_id in destroyed:
            self._by_id.discard(key_id)
        self._active.clear()
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
        """The append-only audit log of key operations, oldest first; optionally only the newest ``limit``, those
        naming one data subject, one operation (create, rotate, rewrap, shred, restore), or at/after ``since``."""
        if person is not None:
            check_id(person, "data-subject id")
        if operation is not None and operation not in OPERATIONS:
            raise ConfigurationError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigurationError("limit must be a non-negative int")
        if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
            raise ConfigurationError("since must be epoch seconds (int or float)")
        return self._call(lambda: self.store.audit_log(limit, person=person, operation=operation, since=since))

    def clear_cache(self) -> None:
        self._by_id.clear()
        self._active.clear()
        self._missing.clear()

    def close(self) -> None:
        self._closed = True
        self._stop_sweeper.set()
        self.clear_cache()
        self.store.close()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Keyring(store={redact_url(self.store.url)!r}, kek={self.kek.uri!r})"


@dataclass(frozen=True)
class _Wrapped:
    """A new data key and its wrapped form, made outside the store's transaction for the id and version bound into
    its associated data."""

    key: DataKey
    wrapped: bytes = field(repr=False)


#: how many active keys :meth:`Keyring.rotate_domain` reads at a time (the stores' batch size)
_ROTATE_PAGE = 500

#: how many times a creation may find the store changed (another version, a taken id) and wrap anew
_CREATE_ROUNDS = 8


def _fresh_id() -> int:
    """A random key id to propose to the store (which gives another if this one is taken or was ever shredded)."""
    return secrets.randbits(32) or 1


def _take_prepared(made: _Wrapped | None, key_id: int, version: int) -> bytes:
    """The store's ``wrap`` callback: the key wrapped beforehand, if it was wrapped for exactly this id and version;
    else :class:`WrapLater` (roll back, wrap outside the transaction, come back)."""
    if made is not None and made.key.key_id == key_id and made.key.version == version:
        return made.wrapped
    raise WrapLater(key_id, version)


def _takes_key_id(store: KeyStore) -> bool:
    """Whether ``store.create`` accepts ``key_id`` (every built-in store; a plugin written before it may not)."""
    try:
        params = inspect.signature(store.create).parameters
    except (TypeError, ValueError):
        return False
    return "key_id" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _ev(event: str, key_id: int | str | None = None, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of a log record: the event name and its fields (never a value, key material or person id)."""
    if isinstance(key_id, int):
        key_id = format_key_id(key_id)
    return {"event": event, "key_id": key_id, **fields}


def _names_own_key(kek: Kek, inner: bytes) -> bool:
    """Whether a wrapped key's Tink prefix names a key of this (local) KEK's keyset."""
    ids = kek.key_ids
    return ids is not None and len(inner) >= 5 and inner[0] == 1 and int.from_bytes(inner[1:5], "big") in ids


def _shredded(gone: ShredRecord) -> KeyShreddedError:
    err = KeyShreddedError("the data key was shredded: this data is erased", key_id=gone.key_id)
    err.owner = (gone.domain, gone.person)
    return err


def _corrupt(record: KeyRecord) -> KeyCorruptedError:
    err = KeyCorruptedError(
        "the stored wrapped data key fails authentication under the KEK that wrapped it: its key-store row is "
        "corrupt, or was tampered with or swapped",
        key_id=record.key_id,
    )
    err.owner = (record.domain, record.person)
    return err


def _wrap_failure(kek: Kek, exc: BaseException, timeout: float, what: str = "a new data key") -> Exception:
    if isinstance(exc, KmsTimeout):
        return KeyStoreUnavailableError(
            f"KEK {kek.uri!r} did not answer within kms_timeout ({timeout:g} s); it could not wrap {what}"
        )
    verdict = classify_failure(kek, exc, b"")
    if verdict == "unavailable":
        return KeyStoreUnavailableError(f"KEK {kek.uri!r} is unavailable; it could not wrap {what}")
    if verdict == "denied":
        return EncryptionError(f"KEK {kek.uri!r} refused to wrap {what}: this process has no access to it")
    return KeyStoreUnavailableError(
        f"KEK {kek.uri!r} could not wrap {what}: an error fieldcrypt does not recognise ({type(exc).__name__})"
    )
