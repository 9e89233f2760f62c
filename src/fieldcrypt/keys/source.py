"""The hot path of the keys: the data key a producer encrypts with and the key a consumer decrypts with.

    source = KeySource("sqlite:///keys.db", "local-kek:///etc/fieldcrypt/kek.json")   # fieldcrypt.Keyring is one
    key = source.encryption_key("orders", "cust-1")          # the sync door
    key = await AsyncKeySource(source).decryption_key(kid)   # the async door

:class:`KeySource` holds everything a serializer or deserializer needs: the active key of a (domain, person), the
key a ciphertext names, the caches, the encryption leases, key creation and rotation by age or count when a key is
due, and the policy records serdes publish. Key administration (rotate on request, rewrap, shred, restore, audit)
lives in :mod:`fieldcrypt.keys.admin`; :class:`fieldcrypt.Keyring` joins both, and this module never imports it.

Two doors, one key source. The only I/O of the hot path (a key-store read, a key creation, a lease top-up, a KMS
wrap or unwrap) is the *cold path*, written once, in blocking code, in this class. The sync door
(:meth:`KeySource.encryption_key`, :meth:`~KeySource.renew`, :meth:`~KeySource.decryption_key`) answers from the
caches or runs it in the calling thread; the async door (:class:`AsyncKeySource`, the same three methods as
coroutines) answers from the same caches without suspending, or runs the same cold path in the event loop's
executor. Concurrent cold lookups of one key share one store and KMS call on both doors (single flight): threads
wait on a per-key lock and then read the cache; coroutines of one loop await one shared executor call.

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
:meth:`KeySource._create` and docs/key-lifecycle.md, "A shred racing a key creation").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import getpass
import inspect
import logging
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from fieldcrypt.clock import Clock, SystemClock
from fieldcrypt.crypto.cipher import DataKey, encrypted_keyset, new_data_key, unwrap_data_key
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
from fieldcrypt.keys import _fork
from fieldcrypt.keys._deadline import KeyLocks, KmsRunner, KmsTimeout
from fieldcrypt.keys.cache import TtlCache
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek, check_kms_timeout, classify_failure, open_kek
from fieldcrypt.keys.registry import open_store
from fieldcrypt.keys.store import AuditEntry, KeyRecord, KeyStore, ShredRecord, WrapFn, WrapLater, redact_url

__all__ = ["AsyncKeySource", "KeyMeter", "KeySource", "RotationPolicy"]

log = logging.getLogger("fieldcrypt.keys")  # the events are listed in docs/observability.md
T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound="KeySource")
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


class KeySource:
    """The hot path of the keys: where data keys live (``store``: URL or :class:`KeyStore`) and what wraps them
    (``kek``: URI or :class:`Kek`, or a list whose first entry wraps new keys and whose others still unwrap keys they
    wrapped), with the caches and leases in front of them. The sync door is this class's ``encryption_key``,
    ``renew`` and ``decryption_key``; :class:`AsyncKeySource` is the async door onto the same state.

    Applications use :class:`fieldcrypt.Keyring` (this class plus key administration); the store must exist
    (:func:`fieldcrypt.create_key_store`, ``fieldcrypt keys init``).
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
        # the KeyMeter of the lookup this thread or asyncio task is in, if any (see metering): a ContextVar, so two
        # tasks of one thread each see their own; one per key source, so a meter counts this source's calls only
        self._meter: contextvars.ContextVar[KeyMeter | None] = contextvars.ContextVar(
            f"fieldcrypt-key-meter-{id(self):x}", default=None
        )
        self._closed = False
        self._opened()
        _fork.track(self)
        self._start_sweeper()

    def _opened(self) -> None:
        """Called once the key source works, before it is tracked across forks and its sweeper starts: a subclass's
        start-up work (:class:`fieldcrypt.Keyring` re-applies its shred log). Nothing here."""

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
        #: the async door's cold lookups in flight, by (event loop, lookup): see AsyncKeySource
        self._flights: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}

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

    # -- the sync door ------------------------------------------------------------------------------------------------
    def encryption_key(self, domain: str, person: str | None = None, meter: KeyMeter | None = None) -> DataKey:
        """The active data key of (domain, person), with a leased budget: created on first use, rotated when due.
        ``meter`` is told whether the lookup needed the key store, and how long each call took."""
        cached = self._active.get((domain, person))
        if cached is not None:
            return cached
        return self._fetch_active(domain, person, meter)

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

    def decryption_key(self, key_id: int, meter: KeyMeter | None = None) -> DataKey:
        """The data key with this id. Raises ``KeyShreddedError`` if it was destroyed, ``KeyNotFoundError`` if the
        store never held it, ``AccessDeniedError`` if no configured KEK may unwrap it, ``KeyCorruptedError`` if its
        wrapped form fails authentication. The first three carry ``owner`` (domain, person) where known, so a
        reader can tell a header re-pointed at another person's key (tampering) from an erasure. ``meter``: as for
        :meth:`encryption_key`."""
        cached = self._by_id.get(key_id)
        if cached is not None:
            return cached
        self._recall(key_id)
        return self._fetch_by_id(key_id, meter)

    @contextlib.contextmanager
    def metering(self, meter: KeyMeter | None) -> Iterator[None]:
        """Within the block, this thread's (or asyncio task's) key-store and KEK calls are reported to ``meter``
        (None: to nobody new; an enclosing block's meter keeps counting)."""
        if meter is None:
            yield
            return
        token = self._meter.set(meter)
        try:
            yield
        finally:
            self._meter.reset(token)

    # -- the cold path, shared by both doors: blocking, run by the caller's thread or the event loop's executor ------
    def _fetch_active(self, domain: str, person: str | None, meter: KeyMeter | None) -> DataKey:
        """The active key of (domain, person) when the cache has none: from the store (and the KEK), created or
        rotated when due. One thread per key at a time (the others wait, then find it cached)."""
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

    def _fetch_by_id(self, key_id: int, meter: KeyMeter | None) -> DataKey:
        """The key with this id when no cache answers for it: from the store (and the KEK); the answer is cached,
        negative too. One thread per key id at a time (the others wait, then find the answer cached)."""
        deadline = self._deadline()

        def timeout() -> KeyStoreUnavailableError:
            return KeyStoreUnavailableError(
                "another thread of this process has been fetching this data key for longer than kms_timeout "
                f"({self.kms_timeout:g} s)",
                key_id=key_id,
            )

        with self.metering(meter), self._key_locks.hold(key_id, deadline, timeout):
            cached = self._by_id.get(key_id, count=False)
            if cached is not None:
                return cached
            self._recall(key_id, count=False)
            if meter is not None:
                meter.key_miss()
            return self._load(key_id, deadline)

    def _recall(self, key_id: int, *, count: bool = True) -> None:
        """Raise what is remembered of a key id the store does not give out: shredded, unknown, or no access."""
        erased = self._erased.get(key_id, count=count)
        if erased is not None:
            raise _shredded(erased)
        missing = self._missing.get(key_id, count=count)
        if missing is not None:
            raise missing()

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

    def _load(self, key_id: int, deadline: float | None = None) -> DataKey:
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
            key = self._unwrap(record, deadline)
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

    def _call(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """Run a key-store or KEK call, retrying ``KeyStoreUnavailableError`` with exponential backoff, then raising.
        With a ``deadline`` (a KEK call's), no retry starts that would begin after it. Each attempt is timed and
        reported to the meter of this thread or task (see :meth:`metering`)."""
        delay = self._retry.backoff
        attempts = self._retry.attempts
        meter = self._meter.get()
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

    # -- what key administration (fieldcrypt.keys.admin) uses besides _call, _audit, _deadline, _kms, _with_kek,
    # -- _unwrap, _store_new_key and _created: the caches learn what it changed ---------------------------------------
    def _forget_shredded(self, destroyed: Iterable[ShredRecord]) -> None:
        """Keys this process destroyed: dropped from the caches, remembered as shredded."""
        for r in destroyed:
            self._by_id.discard(r.key_id)
            self._active.discard((r.domain, r.person))
            self._erased.put(r.key_id, r)

    def _forget_restored(self, key_ids: Iterable[int]) -> None:
        """Keys destroyed again after a restore: dropped, and every active key looked up anew."""
        for key_id in key_ids:
            self._by_id.discard(key_id)
        self._active.clear()

    def _forget_active(self, domain: str, person: str | None) -> None:
        """(domain, person) has a new active key (an admin's rotation): the next lookup reads it."""
        self._active.discard((domain, person))

    # -- policy records (published by serdes) and life cycle ----------------------------------------------------------
    def publish_policy(self, fingerprint: str, policy: str) -> str:
        """Record what producers encrypt for a schema and domain (first writer wins); returns the recorded one."""
        return self._call(lambda: self.store.publish_policy(fingerprint, policy, self.clock.now()))

    def published_policy(self, fingerprint: str) -> str | None:
        return self._call(lambda: self.store.published_policy(fingerprint))

    def merge_policy(self, name: str, items: Sequence[str]) -> list[str]:
        """Add ``items`` to the set recorded under ``name``; returns the set as it was (see KeyStore.merge_policy)."""
        return self._call(lambda: self.store.merge_policy(name, list(items), self.clock.now()))

    def clear_cache(self) -> None:
        self._by_id.clear()
        self._active.clear()
        self._missing.clear()

    def close(self) -> None:
        self._closed = True
        self._stop_sweeper.set()
        self.clear_cache()
        self.store.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={redact_url(self.store.url)!r}, kek={self.kek.uri!r})"


class AsyncKeySource:
    """The async door of a :class:`KeySource` (a :class:`fieldcrypt.Keyring`): its three lookups as coroutines,
    with the same arguments, answers and errors, on the same caches::

        keys = AsyncKeySource(keyring)
        key = await keys.encryption_key("orders", "cust-1")

    A lookup the caches answer (a key, or a remembered "shredded", "unknown" or "no access") returns without
    suspending and without any blocking call. A cold one runs the sync door's cold path in the event loop's default
    executor, in a copy of the caller's context (so ``metering`` blocks around the await count it). Concurrent cold
    lookups of one key in one event loop share that one executor call (single flight): every caller awaits it
    through :func:`asyncio.shield`, so cancelling one caller neither cancels the lookup nor leaves a half-made key
    (the others get the key; it is cached); an exception reaches every caller; the entry is dropped when the call
    ends, so a later miss tries again. Lookups from other threads or loops meet it at the cold path's per-key lock.

    Wrappers are cheap and stateless: the flights live on the key source, so two wrappers of one source share them.
    """

    __slots__ = ("_source",)

    def __init__(self, source: KeySource) -> None:
        if not isinstance(source, KeySource):
            raise ConfigurationError("AsyncKeySource needs a fieldcrypt.Keyring (where keys live and what wraps them)")
        self._source = source

    @property
    def source(self) -> KeySource:
        """The key source (the keyring) behind this door."""
        return self._source

    async def encryption_key(self, domain: str, person: str | None = None, meter: KeyMeter | None = None) -> DataKey:
        """:meth:`KeySource.encryption_key`, awaitable."""
        src = self._source
        cached = src._active.get((domain, person))
        if cached is not None:
            return cached
        return await self._shared(("active", domain, person), partial(src._fetch_active, domain, person, meter))

    async def renew(self, key: DataKey, meter: KeyMeter | None = None) -> DataKey:
        """:meth:`KeySource.renew`, awaitable."""
        if key.remaining() > 0:
            return key
        return await self._shared(("renew", key.key_id), partial(self._source.renew, key, meter))

    async def decryption_key(self, key_id: int, meter: KeyMeter | None = None) -> DataKey:
        """:meth:`KeySource.decryption_key`, awaitable."""
        src = self._source
        cached = src._by_id.get(key_id)
        if cached is not None:
            return cached
        src._recall(key_id)
        return await self._shared(("id", key_id), partial(src._fetch_by_id, key_id, meter))

    async def _shared(self, lookup: Hashable, cold: Callable[[], DataKey]) -> DataKey:
        """``cold()`` in the executor, or the run of it another coroutine of this loop already started."""
        loop = asyncio.get_running_loop()
        flights = self._source._flights
        name = (loop, lookup)
        flight = flights.get(name)
        if flight is None:
            flight = loop.run_in_executor(None, _cold_then_forget, flights, name, contextvars.copy_context(), cold)
            flights[name] = flight
            flight.add_done_callback(partial(_landed, flights, name))
        result: DataKey = await asyncio.shield(flight)
        return result


def _cold_then_forget(
    flights: dict[Any, asyncio.Future[Any]], name: Any, context: contextvars.Context, cold: Callable[[], DataKey]
) -> DataKey:
    """The executor's side of a shared lookup: ``cold()`` in the caller's context, then its flight forgotten from
    this thread too, so a loop closed before :func:`_landed` could run (``loop.close()`` after a timeout) leaves no
    entry (and no reference to the loop) behind. Until the lookup ends the entry is its own: no other flight of the
    same name can start while it is there. A caller arriving between the two starts a new lookup, which the cold
    path's per-key lock and the cache answer."""
    try:
        return context.run(cold)
    finally:
        flights.pop(name, None)


def _landed(flights: dict[Any, asyncio.Future[Any]], name: Any, flight: asyncio.Future[Any]) -> None:
    """A shared lookup ended: the next miss starts a new one. Its exception counts as retrieved (each caller that
    still waits raises it; if every caller was cancelled, nobody is left to)."""
    if flights.get(name) is flight:
        del flights[name]
    if not flight.cancelled():
        flight.exception()


@dataclass(frozen=True)
class _Wrapped:
    """A new data key and its wrapped form, made outside the store's transaction for the id and version bound into
    its associated data."""

    key: DataKey
    wrapped: bytes = field(repr=False)


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
