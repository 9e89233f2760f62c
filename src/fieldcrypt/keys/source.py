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
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from fieldcrypt.clock import Clock, SystemClock
from fieldcrypt.crypto.cipher import (
    BranchKey,
    DataKey,
    encrypted_keyset,
    for_values_of,
    new_branch_key,
    new_data_key,
    unwrap_branch_key,
    unwrap_data_key,
)
from fieldcrypt.crypto.failures import names_another_key
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    FieldcryptError,
    KeyCorruptedError,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreUnavailableError,
    format_key_id,
)
from fieldcrypt.keys import _fork, _loop
from fieldcrypt.keys._deadline import KeyLocks, KmsRunner, KmsTimeout
from fieldcrypt.keys.cache import TtlCache
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek, check_kms_timeout, classify_failure, open_kek, wrap_failure
from fieldcrypt.keys.pseudonyms import Pseudonyms, is_pseudonym
from fieldcrypt.keys.pseudonyms import load as load_pseudonyms
from fieldcrypt.keys.registry import open_store
from fieldcrypt.keys.store import (
    AuditEntry,
    BranchGone,
    DomainKeks,
    KekChanged,
    KeyRecord,
    KeyStore,
    ShredRecord,
    WrapFn,
    WrapLater,
    check_id,
    companion_of,
    is_deterministic,
    redact_url,
)

__all__ = ["DEFAULT_DOMAIN", "AsyncKeySource", "KeyMeter", "KeySource", "RotationPolicy"]

#: the key of a KEK mapping that stands for every domain the mapping does not name
DEFAULT_DOMAIN = "*"

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

    # A meter that is a record's state may also have ``person``: the record's data subject (as the record names it).
    # A key the store names by that person's pseudonym is then given out for their values (KeySource._load).


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
        kms_timeout: float = DEFAULT_KMS_TIMEOUT,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ConfigurationError(f"retries must be an int from 0 to {MAX_RETRIES}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigurationError("cache_size must be a positive int")
        cache_ttl = _seconds(cache_ttl, "cache_ttl", MAX_CACHE_TTL)
        backoff = _seconds(backoff, "backoff", MAX_BACKOFF, zero=True)
        self.kms_timeout = check_kms_timeout(kms_timeout)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._kek_map = _kek_map(kek, self.kms_timeout)
        self.keks = list({k.uri: k for keks in self._kek_map.values() for k in keks}.values())
        default = self._kek_map.get(DEFAULT_DOMAIN)
        #: the KEK that wraps new keys of a domain without recorded KEKs and without an entry of its own (the first
        #: of the ``"*"`` entry, or the first KEK given)
        self.kek = default[0] if default else self.keks[0]
        self._remote = any(k.remote for k in self.keks)  # KEK calls get a worker thread and a deadline
        if isinstance(store, KeyStore):
            self.store = store
        elif isinstance(store, str):
            self.store = open_store(store)
        else:
            raise ConfigurationError("store must be a key store URL such as sqlite:///keys.db, or a KeyStore")
        self._prewrap = _takes(self.store, "key_id")
        #: new data keys are wrapped by a branch key of their domain (stores that keep them: the built-in ones)
        self._branching = self.store.supports_branches and _takes(self.store, "branch_id")
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
        #: each key domain's pseudonym key, unwrapped when a data subject of the domain is first written (or an admin
        #: names one): fieldcrypt.keys.pseudonyms. Readers never load one (a key's person check tells them whose)
        self._pseudonyms: dict[str, Pseudonyms] = {}
        #: domain -> (until, reason) when it could not be loaded (no KEK of it here): not asked again till then
        self._pseudonyms_failed: dict[str, tuple[float, str, bool]] = {}
        #: domain -> until when its pseudonym key is not asked for again to tell an erased key's owner (KMS down)
        self._owners_down: dict[str, float] = {}
        #: an admin's last batch of ids and their pseudonyms (a CLI shred's preview, then the shred: hashed once);
        #: dropped by the shred itself
        self._pseudonyms_memo: tuple[Any, list[tuple[str, ...]]] | None = None
        #: whether the store was found to name people by pseudonyms (checked when opened; if the store was down
        #: then, before this key source first names a person)
        self._persons_ok = not self.store.supports_pseudonyms or self._accepts_clear_ids
        if not self._persons_ok:
            try:
                self._check_persons(retry=False)
            except KeyStoreUnavailableError:
                pass  # a store down now (one attempt, no wait): checked before the first write (fail closed there)
        self._opened()
        _fork.track(self)
        self._start_sweeper()

    #: whether this key source may open a store whose data-subject ids are not yet pseudonyms (the migration's)
    _accepts_clear_ids = False

    def _check_persons(self, *, retry: bool = True) -> None:
        """A store upgraded from an older fieldcrypt holds data-subject ids in clear until it is migrated: refused."""
        form = self._call(self.store.persons_form) if retry else self.store.persons_form()
        self._persons_ok = form == "pseudonyms"
        if form != "pseudonyms":
            raise ConfigurationError(
                f"key store {redact_url(self.store.url)!r} holds data-subject ids in clear (made by an older fieldcrypt"
                f"{', migration unfinished' if form == 'migrating' else ''}): stop its producers and run "
                "`fieldcrypt keys migrate-pseudonyms --store URL --kek URI` (docs/key-model.md#pseudonyms) before "
                "this version uses it"
            )

    def _stored(self, domain: str, person: str | None, *, create: bool = True) -> str | None:
        """``person`` as the key store names it in ``domain``: its keyed pseudonym there (a store without pseudonyms:
        as it is). ``create``: the domain's pseudonym key is made if it has none (a writer's first data subject)."""
        if person is None:
            return None
        if not self.store.supports_pseudonyms:
            return person
        if is_pseudonym(person):
            raise ConfigurationError(_PSEUDONYM_SHAPED)
        if not self._persons_ok:
            self._check_persons()
        named = self._pseudonyms.get(domain)
        if named is None:
            named = self._load_pseudonyms(domain, create=create)
        return named.of(person)

    def _load_pseudonyms(self, domain: str, *, create: bool = True) -> Pseudonyms:
        """``domain``'s pseudonym key, unwrapped once per key source (one KEK call), made on the domain's first
        need when ``create``."""

        def timeout() -> KeyStoreUnavailableError:
            return KeyStoreUnavailableError(
                f"another thread of this process has been unwrapping the pseudonym key of key domain {domain!r} for "
                f"longer than kms_timeout ({self.kms_timeout:g} s)"
            )

        failed = self._pseudonyms_failed.get(domain)
        if failed is not None and time.monotonic() < failed[0] and (failed[2] or not create):
            raise ConfigurationError(failed[1])  # remembered for cache_ttl: no store read per record
        with self._key_locks.hold(("pseudonyms", domain), self._deadline(), timeout):
            found = self._pseudonyms.get(domain)
            if found is None:
                try:
                    found = load_pseudonyms(self, domain, create=create)
                except ConfigurationError as exc:  # no KEK of the key here: the same answer for a while
                    self._pseudonyms_failed[domain] = (time.monotonic() + self.cache_ttl, exc.reason, create)
                    raise
                self._pseudonyms[domain] = found
            return found

    def _check_reader(self, reader: str | None, key_id: int) -> None:
        """A record naming a key-store pseudonym as its data subject is refused: the pseudonym of a key looked up by
        id would pass for it (someone copied a person's values into a record that names their pseudonym)."""
        if reader is not None and is_pseudonym(reader) and self.store.supports_pseudonyms:
            raise DecryptionError(_PSEUDONYM_SHAPED, key_id=key_id)

    def _for_reader(self, key: DataKey, reader: str | None) -> DataKey:
        """A cached data subject's key, for the record being read: as cached when it names ``reader`` already (or
        nobody reads: a lookup by id alone); for ``reader``'s values when the store names it by their pseudonym (the
        cache then keeps that, with the same expiry); else as cached, naming someone else (a moved ciphertext)."""
        self._check_reader(reader, key.key_id)
        if reader is None or key.person == reader:
            return key
        if not key.belongs_to(reader):  # proven by the key itself: no pseudonym key needed to read
            return key
        theirs = for_values_of(key, reader)
        self._by_id.swap(key.key_id, key, theirs)
        return theirs

    def _read_as(self, exc: DecryptionError, person: str | None) -> None:
        """An error about a key the store names by a pseudonym, told as a reader of ``person`` sees it: its
        ``owner`` names ``person`` when the pseudonym is theirs (so "erased" stays "erased"; any other owner reads as
        a moved ciphertext)."""
        owner = exc.owner
        if owner is not None and person is not None and owner[1] is not None and owner[1] != person:
            named = self._pseudonyms.get(owner[0])
            if named is None and is_pseudonym(owner[1]) and isinstance(exc, KeyShreddedError):
                # an erased key: whose it was is asked of the domain's pseudonym key, if this reader holds a KEK of it
                # (one KEK call per domain and process), so a value re-pointed at another person's erased key reads
                # as tampered. Any failure (no such KEK, a KMS outage) leaves it untold: never another outcome than
                # the error's own. (No access, or a corrupt row: unreadable whoever it was for; no KEK call)
                named = self._owner_names(owner[0])
            if is_pseudonym(owner[1]) and named is not None:
                theirs = named.of(person) == owner[1]
            else:
                # a reader that holds no pseudonym key (most consumers: it is loaded for writing and admin work only,
                # never to read, so a KMS outage or a KEK without a copy never turns a read into another outcome):
                # whose key it is cannot be told here, its domain still is; the key is unreadable to this keyring
                # whoever it was for, so it reads as what the error says (erased, no access)
                theirs = is_pseudonym(owner[1])
            if theirs:
                exc.owner = (owner[0], person)

    def _owner_lookup_pending(self, exc: DecryptionError, person: str | None) -> bool:
        """Whether :meth:`_read_as` of ``exc`` for ``person`` would load a pseudonym key (a store read and a KEK
        call), not answer from memory."""
        owner = exc.owner
        if owner is None or person is None or owner[1] is None or owner[1] == person:
            return False
        if not isinstance(exc, KeyShreddedError) or not is_pseudonym(owner[1]) or owner[0] in self._pseudonyms:
            return False
        down = self._owners_down.get(owner[0])
        failed = self._pseudonyms_failed.get(owner[0])
        now = time.monotonic()
        return not ((down is not None and now < down) or (failed is not None and now < failed[0]))

    def _owner_names(self, domain: str) -> Pseudonyms | None:
        """``domain``'s pseudonym key for telling whose an erased key was, or None: no KEK of it here, or it could not
        be had now (a KMS outage: not asked again for ``cache_ttl``, so erased values do not each wait for it)."""
        until = self._owners_down.get(domain)
        if until is not None and time.monotonic() < until:
            return None
        try:
            return self._load_pseudonyms(domain, create=False)
        except (KeyStoreUnavailableError, EncryptionError, KeyCorruptedError):  # down, refused, corrupt: for a while
            self._owners_down[domain] = time.monotonic() + min(self.cache_ttl, 60.0)
            return None
        except FieldcryptError:  # no KEK of it here (remembered by _load_pseudonyms)
            return None

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
        #: the KEKs the store records per domain (None: none recorded), and the unwrapped branch keys
        self._domain_keks: TtlCache[str, tuple[DomainKeks | None]] = TtlCache(size, ttl, self.clock)
        self._branches: TtlCache[int, BranchKey] = TtlCache(size, ttl, self.clock)
        self._active_branches: TtlCache[str, BranchKey] = TtlCache(size, ttl, self.clock)
        #: domains whose "no access" was logged at WARNING within cache_ttl
        self._denied_domains: TtlCache[str, bool] = TtlCache(size, ttl, self.clock)
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
        caches = (self._by_id, self._active, self._erased, self._missing)
        caches += (self._domain_keks, self._branches, self._active_branches)  # type: ignore[assignment]
        return sum(cache.sweep() for cache in caches)

    # -- the sync door ------------------------------------------------------------------------------------------------
    def encryption_key(self, domain: str, person: str | None = None, meter: KeyMeter | None = None) -> DataKey:
        """The active data key of (domain, person), with a leased budget: created on first use, rotated when due.
        ``meter`` is told whether the lookup needed the key store, and how long each call took."""
        cached = self._active.get((domain, person))
        if cached is not None:
            return cached
        replay = _loop.current()
        if replay is not None:  # an asyncio serde's call on its event loop: the async door looks it up
            door = AsyncKeySource(self)
            return _replayed(replay, ("active", domain, person), meter, partial(door.encryption_key, domain, person))
        return self._fetch_active(domain, person, meter)

    def renew(self, key: DataKey, meter: KeyMeter | None = None) -> DataKey:
        """Called by the engine when a key's leased budget is spent: lease more, or move to the next key (rotated
        at the cap, or created anew when this one was shredded elsewhere)."""
        replay = _loop.current()
        if replay is not None:  # an asyncio serde's call on its event loop: the async door renews it
            if key.remaining() > 0:
                return key
            return _replayed(replay, ("renew", _Same(key)), meter, partial(AsyncKeySource(self).renew, key))
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
            if cached.person is None:
                return cached
            reader = _reader(meter)
            if reader is not None and cached.person == reader and cached.owner == reader:
                # given out for this data subject before (_for_reader): its id was checked then, and the key proves
                # it is the one it was made for
                return cached
            return self._for_reader(cached, reader)
        reader = _reader(meter)
        self._check_reader(reader, key_id)
        replay = _loop.current()
        try:
            self._recall(key_id)
            if replay is not None:  # an asyncio serde's call on its event loop: the async door looks it up
                door = AsyncKeySource(self)
                return _replayed(replay, ("id", key_id, reader), meter, partial(door.decryption_key, key_id))
            return self._fetch_by_id(key_id, meter, reader)
        except DecryptionError as exc:
            if replay is not None and self._owner_lookup_pending(exc, reader):  # a store read and a KEK call
                name = ("owner", key_id, reader)
                _loop.answer(replay, name, _loop.in_executor(partial(self._read_as, exc, reader)))
            self._read_as(exc, reader)
            raise

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
            if person is not None and self.store.supports_pseudonyms and is_pseudonym(person):
                raise EncryptionError(_PSEUDONYM_SHAPED)  # the record's data, not the configuration, is at fault
            self._writing_kek(domain)  # a writer whose KEK of the domain is not its recorded primary is refused
            stored = self._stored(domain, person)
            record = self._call(lambda: self.store.active(domain, stored))
            if is_deterministic(domain):
                return self._deterministic(domain, person, record, deadline)
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
                key = self._unwrap(record, deadline, person)
                return self._lease_and_activate(key, record.created_at, deadline)
            return key if key.remaining() > 0 else self._lease_and_activate(key, None, deadline)

    def _deterministic(self, domain: str, person: str | None, record: KeyRecord | None, deadline: float) -> DataKey:
        """The deterministic (AES-SIV) key of (domain, person): made on first use, then the same key in every
        process and after every restart, never rotated by age or count (a rotation breaks joins, partitioning and
        compaction: it is an admin's act, :meth:`fieldcrypt.Keyring.rotate`). No encryption budget is leased: the
        bound that matters for AES-SIV is not a nonce count (docs/key-model.md)."""
        if record is None:
            key = self._create(domain, person, None, "create", "first use", deadline, version=1)
        else:
            key = self._unwrap(record, deadline, person)
        if not key.deterministic:  # a randomized key under a deterministic domain: the row is not what it says
            raise _corrupt(record) if record is not None else KeyCorruptedError("not a deterministic key")
        self._active.put((domain, person), key, None)
        self._by_id.put(key.key_id, key)
        return key

    def _fetch_by_id(self, key_id: int, meter: KeyMeter | None, reader: str | None = None) -> DataKey:
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
                return cached if cached.person is None else self._for_reader(cached, reader)
            self._recall(key_id, count=False)
            if meter is not None:
                meter.key_miss()
            return self._load(key_id, deadline, reader)

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
            stored = self._stored(key.domain, key.person)
            record = self._call(lambda k=key, s=stored: self.store.active(k.domain, s))  # type: ignore[misc]
            if record is not None and record.key_id != key.key_id:
                key, created = self._unwrap(record, deadline, key.person), record.created_at
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

    def _load(self, key_id: int, deadline: float | None = None, reader: str | None = None) -> DataKey:
        """A key the caches do not answer for, from the store (and the KEK); the answer is cached, negative too.

        A data subject's key is given out for ``reader``, the data subject of the record being read, when the store
        names it by ``reader``'s pseudonym: its values' associated data binds that id. Read for anyone else (another
        person's record: a moved ciphertext; or no record), it names the pseudonym, and no value of a record reads
        under it until :meth:`_for_reader` gives it out for its data subject."""
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
            key = self._unwrap(record, deadline)  # as the row names it; for the reader's values below
        except AccessDeniedError as exc:
            reason, owner = exc.reason, exc.owner

            def denied() -> DecryptionError:
                err = AccessDeniedError(reason, key_id=key_id)
                err.owner = owner
                return err

            self._missing.put(key_id, denied)
            # once per domain and cache_ttl at WARNING (a consumer holding some domains' KEKs meets the others' keys
            # all the time, one per person), each key at DEBUG
            first = self._denied_domains.get(record.domain) is None
            if first:
                self._denied_domains.put(record.domain, True)
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "no access to data key %s: no KEK of its domain here, or that KEK refused (wrapped by %r)",
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
        if key.person is not None and reader is not None and key.belongs_to(reader):
            key = for_values_of(key, reader)
        self._by_id.put(key_id, key)
        log.debug("data key %s loaded from the key store", kid, extra=_ev("key.loaded", kid, domain=record.domain))
        return key

    def _call(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """Run a key-store or KEK call, retrying ``KeyStoreUnavailableError`` with exponential backoff, then raising.
        With a ``deadline`` (a KEK call's), no retry starts that would begin after it. Each attempt is timed and
        reported to the meter of this thread or task (see :meth:`metering`)."""
        if _loop.current() is not None:  # blocking work an asyncio serde's call reached on its loop: off the loop
            raise _loop.OffLoop
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
        stored = self._stored(domain, person)
        audit = self._audit(operation, reason, domain=domain, person=stored)

        def put(wrap: WrapFn, key_id: int | None, branch_id: int, kek_uri: str) -> KeyRecord:
            now = self.clock.now()
            if not self._prewrap:  # a plugin store whose create() takes no key_id
                return self.store.create(domain, stored, kek_uri, wrap, now, audit, retire=retire, charge=charge)
            extra = {"branch_id": branch_id} if branch_id else {}
            return self.store.create(
                domain, stored, kek_uri, wrap, now, audit, retire=retire, charge=charge, key_id=key_id, **extra
            )

        made, record = self._store_new_key(domain, person, version, deadline, put, stored)
        if made is not None and made.key.key_id == record.key_id:
            key = self._created(made, domain, person, operation, reason)
            if lease:
                key.lease(charge)
                return self._activate(key, record.created_at)
            return key
        key = self._unwrap(record, deadline, person)
        key.lease(0)
        return key

    def _store_new_key(
        self,
        domain: str,
        person: str | None,
        version: int | None,
        deadline: float,
        put: Callable[[WrapFn, int | None, int, str], R],
        stored: str | None,
    ) -> tuple[_Wrapped | None, R]:
        """``put(wrap, key_id, branch_id, kek_uri)``: a store call that may insert a new key, wrapped outside its
        transaction (see :meth:`_create`) by the domain's active branch key ``branch_id`` (0: by the KEK
        ``kek_uri`` itself, for a store without branch keys). Returns the key wrapped for it last (None if none was)
        and what ``put`` returned. ``stored``: ``person`` as the store names it (bound into the wrap)."""
        if not self._prewrap:  # a plugin store whose create() takes no key_id: the KMS call runs in its transaction
            made_in_tx: list[_Wrapped] = []
            kek_uri = self._writing_kek(domain).uri

            def wrap_inside(key_id: int, version: int) -> bytes:
                made_in_tx.append(self._wrap_attempt(domain, person, key_id, version, deadline, stored))
                return made_in_tx[-1].wrapped

            result = self._call(lambda: put(wrap_inside, None, 0, kek_uri))
            return (made_in_tx[-1] if made_in_tx else None), result
        for _ in range(_CREATE_ROUNDS):
            # a branch-wrapped key's row names the KEK of its branch key (the store fills it in)
            kek_uri = self._writing_kek(domain).uri
            branch = self._active_branch(domain, deadline) if self._branching else None
            branch_id = 0 if branch is None else branch.branch_id
            made = (
                None
                if version is None
                else self._wrap_new(domain, person, _fresh_id(), version, deadline, branch, stored)
            )
            try:
                for _ in range(_CREATE_ROUNDS):
                    wrap = partial(_take_prepared, made)
                    proposed = made.key.key_id if made is not None else None
                    try:
                        result = self._call(
                            lambda w=wrap, k=proposed, b=branch_id, u=kek_uri: put(w, k, b, u)  # type: ignore[misc]
                        )
                    except WrapLater as later:
                        made = self._wrap_new(domain, person, later.key_id, later.version, deadline, branch, stored)
                        continue
                    return made, result
            except BranchGone:  # the domain was shredded (or its branch key purged) meanwhile: take the next one
                self._active_branches.discard(domain)
                self._branches.discard(branch_id)
                continue
            raise KeyStoreUnavailableError(
                f"could not create a data key in domain {domain!r}: the key store's versions kept changing while "
                "new keys were wrapped"
            )
        raise KeyStoreUnavailableError(
            f"could not create a data key in domain {domain!r}: its branch keys kept disappearing (shredded) while "
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

    def _wrap_new(
        self,
        domain: str,
        person: str | None,
        key_id: int,
        version: int,
        deadline: float,
        branch: BranchKey | None,
        stored: str | None,
    ) -> _Wrapped:
        """A new data key wrapped for (key_id, version): by ``branch`` (locally, no KMS call), or by the domain's
        primary KEK when the store keeps no branch keys (with retries within ``deadline``); outside any
        transaction."""
        if branch is not None:
            key, wrapped = new_data_key(
                key_id, domain, stored, version, branch.aead, deterministic=is_deterministic(domain), values_for=person
            )
            return _Wrapped(key, wrapped)
        return self._call(lambda: self._wrap_attempt(domain, person, key_id, version, deadline, stored), deadline)

    def _wrap_attempt(
        self, domain: str, person: str | None, key_id: int, version: int, deadline: float, stored: str | None
    ) -> _Wrapped:
        kek = self._writing_kek(domain)
        det = is_deterministic(domain)
        try:
            key, wrapped = self._kms(
                lambda: new_data_key(key_id, domain, stored, version, kek.aead, deterministic=det, values_for=person),
                deadline,
                f"KEK {kek.uri!r}",
            )
        except Exception as exc:  # tink.TinkError, a KMS client's own exception that tink let through, KmsTimeout
            raise wrap_failure(kek, exc, self.kms_timeout) from exc
        return _Wrapped(key, wrapped)

    # -- which KEK, per key domain ------------------------------------------------------------------------------------
    def _held(self, domain: str) -> tuple[tuple[Kek, ...], bool]:
        """The KEKs this key source holds for ``domain``, and whether its configuration names the domain itself
        (else they are the ``"*"`` entry's, or none)."""
        own = self._kek_map.get(domain)
        if own is not None:
            return own, True
        parent = companion_of(domain)
        if parent is not None and is_deterministic(domain) and parent in self._kek_map:
            return self._kek_map[parent], True  # a domain's deterministic keys: its KEK, unless mapped apart
        return self._kek_map.get(DEFAULT_DOMAIN, ()), False

    def kek_uris(self, domain: str) -> tuple[str, ...]:
        """The URIs of the KEKs this key source holds for ``domain`` (its own entry, else the ``"*"`` entry's)."""
        return tuple(k.uri for k in self._held(domain)[0])

    def domain_keks(self, domain: str) -> DomainKeks | None:
        """The KEKs the key store records for ``domain`` (cached for ``cache_ttl``), or None if it records none."""
        cached = self._domain_keks.get(domain)
        if cached is not None:
            return cached[0]
        found = self._call(lambda: self.store.domain_keks(domain))
        self._domain_keks.put(domain, (found,))
        return found

    def _writing_kek(self, domain: str) -> Kek:
        """The KEK that wraps ``domain``'s new (branch) keys: the primary the store records for it, which this key
        source must hold. A domain without a record gets this key source's KEK for it, recorded first-writer-wins
        (an audited ``kek-map``). A configuration that disagrees with the record is a ``ConfigurationError`` naming
        the domain: keys of one domain are never wrapped by two KEKs by accident."""
        held, own = self._held(domain)
        record = self.domain_keks(domain)
        if record is None:
            if not held:
                raise ConfigurationError(
                    f"key domain {domain!r} has no KEK: this keyring's KEK mapping has no entry for it and no "
                    f"{DEFAULT_DOMAIN!r} entry; map it (kek={{{domain!r}: 'URI'}})"
                )
            audit = self._audit("kek-map", "first key of the domain", domain=domain)
            record = self._call(lambda: self.store.claim_domain(domain, held[0].uri, self.clock.now(), audit))
            self._domain_keks.put(domain, (record,))
        for kek in held:
            if kek.uri == record.primary:
                return kek
        configured = ", ".join(repr(k.uri) for k in held) or "none"
        where = f"maps it to {configured}" if own else f"holds {configured} for it (its {DEFAULT_DOMAIN!r} entry)"
        raise ConfigurationError(
            f"key domain {domain!r} is wrapped by KEK {record.primary!r} (recorded in the key store), but this keyring "
            f"{where}; configure the domain's KEK, or change it with `fieldcrypt kek add|promote` and "
            "`fieldcrypt keys rewrap`"
        )

    def _kek_of(self, record: KeyRecord, what: str) -> Kek:
        """The one KEK that may unwrap ``record`` (a data key wrapped by a KEK, or a branch key): the KEK its row
        names, which must be one the store records for its domain (else the row is tampered with:
        ``KeyCorruptedError``) and one this key source holds for that domain (else ``AccessDeniedError``, without any
        KMS call). No other KEK is ever tried on it."""
        recorded = self.domain_keks(record.domain)
        if recorded is not None and record.kek_uri not in recorded.keks:  # changed since cached? read it again
            self._domain_keks.discard(record.domain)
            recorded = self.domain_keks(record.domain)
        allowed = recorded.keks if recorded is not None else (record.kek_uri,)
        if record.kek_uri not in allowed:
            err = KeyCorruptedError(
                f"the key store says this {what} of domain {record.domain!r} is wrapped by KEK {record.kek_uri!r}, "
                f"which is not a KEK recorded for that domain: its row was tampered with or swapped",
                key_id=record.key_id,
            )
            err.owner = (record.domain, record.person)
            raise err
        held, _own = self._held(record.domain)
        for kek in held:
            if kek.uri == record.kek_uri:
                return kek
        err2 = AccessDeniedError(
            f"this keyring holds no KEK of key domain {record.domain!r} (its keys are wrapped by {record.kek_uri!r})",
            key_id=record.key_id,
        )
        err2.owner = (record.domain, record.person)
        raise err2

    # -- branch keys --------------------------------------------------------------------------------------------------
    def _active_branch(self, domain: str, deadline: float) -> BranchKey | None:
        """The branch key that wraps ``domain``'s new data keys (made on first use, and anew when older than
        ``rotation.max_age``), or None when the store keeps no branch keys."""
        if not self.store.supports_branches:
            return None
        cached = self._active_branches.get(domain)
        if cached is not None:
            return cached

        def timeout() -> KeyStoreUnavailableError:
            return KeyStoreUnavailableError(
                f"another thread of this process has been fetching the branch key of domain {domain!r} for longer "
                f"than kms_timeout ({self.kms_timeout:g} s)"
            )

        with self._key_locks.hold(("branch", domain), deadline, timeout):  # one thread per domain makes it
            cached = self._active_branches.get(domain, count=False)
            if cached is not None:
                return cached
            return self._load_active_branch(domain, deadline)

    def _load_active_branch(self, domain: str, deadline: float) -> BranchKey:
        record = self._call(lambda: self.store.active_branch(domain))
        if record is not None and not self._expired(record):
            branch = self._branch_key(record, deadline)
        else:
            branch = self._new_branch(domain, record, deadline)
        until = None
        if self.rotation.max_age is not None:
            made = record.created_at if record is not None and branch.branch_id == record.key_id else self.clock.now()
            until = made + self.rotation.max_age
        self._active_branches.put(domain, branch, until)
        return branch

    def _new_branch(self, domain: str, current: KeyRecord | None, deadline: float) -> BranchKey:
        """A new branch key of ``domain`` (retiring ``current``), wrapped by the domain's primary KEK outside the
        store's transaction; or the one another process made meanwhile. If an admin promoted another KEK since this
        process read the domain's record, the record is read again (and this process must hold the new primary)."""
        try:
            return self._new_branch_under(self._writing_kek(domain), domain, current, deadline)
        except KekChanged:
            self._forget_domain(domain)
        try:
            return self._new_branch_under(self._writing_kek(domain), domain, current, deadline)
        except KekChanged:
            raise KeyStoreUnavailableError(
                f"the primary KEK of key domain {domain!r} kept changing while a branch key was made"
            ) from None

    def _new_branch_under(self, kek: Kek, domain: str, current: KeyRecord | None, deadline: float) -> BranchKey:
        reason = "first use" if current is None else "max_age reached"
        audit = self._audit("create" if current is None else "rotate", reason, domain=domain)
        retire = None if current is None else current.key_id

        def wrap_new(branch_id: int, version: int) -> tuple[BranchKey, bytes]:
            def attempt() -> tuple[BranchKey, bytes]:
                try:
                    return self._kms(
                        lambda: new_branch_key(branch_id, domain, version, kek.aead), deadline, f"KEK {kek.uri!r}"
                    )
                except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
                    raise wrap_failure(kek, exc, self.kms_timeout, "a new branch key") from exc

            return self._call(attempt, deadline)

        # wrapped (a KMS call) outside the store's transaction, for the id and version the store then checks, as a
        # data key is (see _create)
        made = [wrap_new(_fresh_id(), 1 if current is None else current.version + 1)]
        for _ in range(_CREATE_ROUNDS):
            prepared = made[-1]

            def take(branch_id: int, version: int, p: tuple[BranchKey, bytes] = prepared) -> bytes:
                if p[0].branch_id == branch_id and p[0].version == version:
                    return p[1]
                raise WrapLater(branch_id, version)

            try:
                record = self._call(
                    lambda t=take, k=prepared[0].branch_id: self.store.create_branch(  # type: ignore[misc]
                        domain, kek.uri, t, self.clock.now(), audit, retire=retire, key_id=k
                    )
                )
            except WrapLater as later:
                made.append(wrap_new(later.key_id, later.version))
                continue
            break
        else:
            raise KeyStoreUnavailableError(
                f"could not create a branch key in domain {domain!r}: the key store's versions kept changing"
            )
        made_keys = [m[0] for m in made]
        if made_keys[-1].branch_id == record.key_id:
            log.info(
                "new branch key %s in domain %r (%s)",
                format_key_id(record.key_id),
                domain,
                reason,
                extra=_ev("key.branch_created", record.key_id, domain=domain, kek=kek.uri),
            )
            self._branches.put(record.key_id, made_keys[-1])
            return made_keys[-1]
        return self._branch_key(record, deadline)

    def _branch(self, branch_id: int, owner: KeyRecord, deadline: float) -> BranchKey:
        """The branch key that wraps the data key ``owner`` (cached)."""
        cached = self._branches.get(branch_id)
        if cached is None:
            record = self._call(lambda: self.store.branch(branch_id))
            if record is None or record.domain != owner.domain:
                err = KeyCorruptedError(
                    "the data key names a branch key its domain does not hold: its key-store row is corrupt, or was "
                    "tampered with or swapped",
                    key_id=owner.key_id,
                )
                err.owner = (owner.domain, owner.person)
                raise err
            try:
                cached = self._branch_key(record, deadline)
            except (DecryptionError, KeyStoreUnavailableError) as exc:  # named by the data key asked for
                again = type(exc)(exc.reason, key_id=owner.key_id)
                if isinstance(again, DecryptionError):
                    again.owner = (owner.domain, owner.person)
                raise again from None
        if cached.domain != owner.domain:
            raise _corrupt(owner)
        return cached

    def _branch_key(self, record: KeyRecord, deadline: float) -> BranchKey:
        """A stored branch key, unwrapped by the one KEK that may (one KMS call), and cached. One thread per branch
        key unwraps it; the others wait for it (within their deadline), then find it cached."""
        cached = self._branches.get(record.key_id)
        if cached is not None:
            return cached

        def timeout() -> KeyStoreUnavailableError:
            return KeyStoreUnavailableError(
                f"another thread of this process has been unwrapping the branch key of domain {record.domain!r} for "
                f"longer than kms_timeout ({self.kms_timeout:g} s)",
                key_id=record.key_id,
            )

        with self._key_locks.hold(("branch key", record.key_id), deadline, timeout):
            cached = self._branches.get(record.key_id, count=False)
            if cached is not None:
                return cached
            return self._unwrap_branch(record, deadline)

    def _unwrap_branch(self, record: KeyRecord, deadline: float) -> BranchKey:
        branch = self._with_kek(
            record,
            lambda kek: unwrap_branch_key(record.wrapped, record.key_id, record.domain, record.version, kek.aead),
            deadline,
            "branch key",
        )
        self._branches.put(record.key_id, branch)
        return branch

    def _kms(self, fn: Callable[[], T], deadline: float, what: str) -> T:
        """``fn()`` (a KEK call), waited for at most until ``deadline`` when a configured KEK is remote (then it
        runs in a worker thread: a KMS that never answers cannot hold this thread); else called here."""
        if _loop.current() is not None:  # (as in _call)
            raise _loop.OffLoop
        if not self._remote:
            return fn()
        return self._kms_runner.run(fn, deadline, what)

    def _unwrap(self, record: KeyRecord, deadline: float | None = None, person: str | None = None) -> DataKey:
        """The data key of ``record``, for the values of ``person`` (the data subject as a record names it; the row
        names its pseudonym). Without ``person``: the id as the row names it."""
        until = self._deadline() if deadline is None else deadline
        reader = record.person if person is None else person
        if record.branch_id:
            branch = self._branch(record.branch_id, record, until)
            try:
                return unwrap_data_key(
                    record.wrapped,
                    record.key_id,
                    record.domain,
                    record.person,
                    record.version,
                    branch.aead,
                    values_for=reader,
                )
            except Exception:  # the branch key is local: a failure is the row's, never the KMS's
                raise _corrupt(record) from None
        return self._with_kek(
            record,
            lambda kek: unwrap_data_key(
                record.wrapped, record.key_id, record.domain, record.person, record.version, kek.aead, values_for=reader
            ),
            until,
        )

    def _with_kek(
        self, record: KeyRecord, use: Callable[[Kek], T], deadline: float | None = None, what: str = "data key"
    ) -> T:
        """``use(kek)`` with the one KEK that may unwrap ``record`` (see :meth:`_kek_of`).

        A failure is classified (:func:`fieldcrypt.keys.kek.classify_failure`); transient ones are retried
        with backoff (the whole attempt, through ``_call``), within ``deadline`` (default: ``kms_timeout`` from
        now)."""
        inner = encrypted_keyset(record.wrapped)
        if inner is None:
            raise _corrupt(record)
        kek = self._kek_of(record, what)
        until = self._deadline() if deadline is None else deadline
        return self._call(lambda: self._try_kek(record, kek, use, inner, until), until)

    def _try_kek(self, record: KeyRecord, kek: Kek, use: Callable[[Kek], T], inner: bytes, deadline: float) -> T:
        try:
            return self._kms(lambda: use(kek), deadline, f"KEK {kek.uri!r}")
        except Exception as failure:  # tink.TinkError, a KMS client's own exception that tink let through, KmsTimeout
            exc = failure
            verdict, name = classify_failure(kek, exc, inner), type(exc).__name__
        if verdict == "corrupt" or names_another_key(exc):
            # the row names this KEK, and it says the ciphertext is another KMS key's: the row is not what it says
            raise _corrupt(record)
        if verdict == "unavailable" and name == KmsTimeout.__name__:
            raise KeyStoreUnavailableError(
                f"KEK {kek.uri!r} did not answer within kms_timeout ({self.kms_timeout:g} s)", key_id=record.key_id
            )
        if verdict == "unavailable":
            raise KeyStoreUnavailableError(f"KEK {kek.uri!r} is unavailable ({name})", key_id=record.key_id)
        if verdict != "denied":
            raise KeyStoreUnavailableError(
                f"KEK {kek.uri!r} failed with an error fieldcrypt does not recognise ({name}); "
                "it is not reported as no access",
                key_id=record.key_id,
            )
        err = AccessDeniedError(
            f"KEK {kek.uri!r} refused to unwrap this key of domain {record.domain!r}: this process has no access to it",
            key_id=record.key_id,
        )
        err.owner = (record.domain, record.person)
        raise err

    # -- what key administration (fieldcrypt.keys.admin) uses besides _call, _audit, _deadline, _kms, _with_kek,
    # -- _unwrap, _store_new_key and _created: the caches learn what it changed ---------------------------------------
    def _forget_shredded(self, destroyed: Iterable[ShredRecord]) -> None:
        """Keys this process destroyed: dropped from the caches, remembered as shredded."""
        records = list(destroyed)
        gone = {r.key_id for r in records}
        self._by_id.discard_many(gone)
        self._erased.put_many((r.key_id, r) for r in records[-self._erased.max_entries :])
        if len(self._active):
            self._active.discard_where(lambda key: key.key_id in gone)  # keyed by id as records name it

    def _forget_restored(self, key_ids: Iterable[int]) -> None:
        """Keys destroyed again after a restore: dropped, and every active key looked up anew."""
        for key_id in key_ids:
            self._by_id.discard(key_id)
        self._active.clear()

    def _forget_domain(self, domain: str) -> None:
        """The KEKs of ``domain`` changed (an admin act): the next use reads them again."""
        self._domain_keks.discard(domain)
        self._active_branches.discard(domain)

    def _forget_active(self, key_id: int) -> None:
        """The key ``key_id`` is no longer active (an admin's rotation): the next lookup reads the new one."""
        self._active.discard_where(lambda key: key.key_id == key_id)

    # -- policy records (published by serdes) and life cycle ----------------------------------------------------------
    def publish_policy(self, fingerprint: str, policy: str) -> str:
        """Record what producers encrypt for a schema and domain (first writer wins); returns the recorded one."""
        replay = _loop.current()
        if replay is not None:  # an asyncio serde's call on its event loop: the store is asked in the executor
            call = partial(self._metered, self._meter.get(), self.publish_policy, fingerprint, policy)
            return self._policy_flight(replay, ("publish", fingerprint, policy), call)  # type: ignore[no-any-return]
        return self._call(lambda: self.store.publish_policy(fingerprint, policy, self.clock.now()))

    def published_policy(self, fingerprint: str) -> str | None:
        replay = _loop.current()
        if replay is not None:
            call = partial(self._metered, self._meter.get(), self.published_policy, fingerprint)
            return self._policy_flight(replay, ("published", fingerprint), call)  # type: ignore[no-any-return]
        return self._call(lambda: self.store.published_policy(fingerprint))

    def merge_policy(self, name: str, items: Sequence[str]) -> list[str]:
        """Add ``items`` to the set recorded under ``name``; returns the set as it was (see KeyStore.merge_policy)."""
        replay = _loop.current()
        if replay is not None:
            call = partial(self._metered, self._meter.get(), self.merge_policy, name, tuple(items))
            return self._policy_flight(replay, ("merge", name, tuple(items)), call)  # type: ignore[no-any-return]
        return self._call(lambda: self.store.merge_policy(name, list(items), self.clock.now()))

    def _policy_flight(self, replay: _loop.Replay, name: Hashable, call: Callable[[], Any]) -> Any:
        """A policy record for a replayed call: the store asked in the executor, one call shared by every call of
        the event loop asking the same at once (single flight, as key lookups)."""
        door = AsyncKeySource(self)
        return _loop.answer(replay, name, lambda: door._shared(("policy", name), call))

    def _metered(self, meter: KeyMeter | None, fn: Callable[..., T], *args: Any) -> T:
        with self.metering(meter):
            return fn(*args)

    def clear_cache(self) -> None:
        self._pseudonyms_failed.clear()
        self._by_id.clear()
        self._active.clear()
        self._missing.clear()
        self._domain_keks.clear()
        self._branches.clear()
        self._active_branches.clear()

    def close(self) -> None:
        self._closed = True
        self._stop_sweeper.set()
        self.clear_cache()
        self.store.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _kek_repr(self) -> str:
        """The KEK configuration as repr shows it: the URI (of the first KEK), or the mapping of URIs per domain."""
        if list(self._kek_map) == [DEFAULT_DOMAIN]:
            return repr(self.kek.uri)
        shown = {d: [k.uri for k in keks] if len(keks) > 1 else keks[0].uri for d, keks in self._kek_map.items()}
        return repr(shown)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={redact_url(self.store.url)!r}, kek={self._kek_repr()})"


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
            return cached if cached.person is None else src._for_reader(cached, _reader(meter))
        reader = _reader(meter)
        src._check_reader(reader, key_id)
        try:
            src._recall(key_id)
            return await self._shared(("id", key_id, reader), partial(src._fetch_by_id, key_id, meter, reader))
        except DecryptionError as exc:
            if src._owner_lookup_pending(exc, reader):  # a store read and a KEK call: never on the event loop
                await asyncio.get_running_loop().run_in_executor(None, src._read_as, exc, reader)
            else:
                src._read_as(exc, reader)
            raise

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


_PSEUDONYM_SHAPED = (
    "the data-subject id has the shape of a key-store pseudonym (ps1: and 22 characters), which is reserved: a record "
    "naming one is refused"
)

#: how many times a creation may find the store changed (another version, a taken id) and wrap anew
_CREATE_ROUNDS = 8


class _Same:
    """An object as a request name of a replay: equal only to itself (and kept alive, so its id is not reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


class _Probe:
    """The meter of a lookup the async door makes for a replayed call: it notes whether the lookup needed the key
    store (the attempt that gets the answer counts the miss) and passes the rest to the record's meter."""

    __slots__ = ("meter", "missed", "person")

    def __init__(self, meter: KeyMeter | None) -> None:
        self.meter = meter
        self.missed = False
        self.person = _reader(meter)

    def key_miss(self) -> None:
        self.missed = True

    def key_store_call(self, seconds: float, failed: bool) -> None:
        if self.meter is not None:
            self.meter.key_store_call(seconds, failed)


def _replayed(
    replay: _loop.Replay, name: Hashable, meter: KeyMeter | None, lookup: Callable[..., Awaitable[DataKey]]
) -> DataKey:
    """A data key for a replayed call: the answer the replay holds, or :class:`fieldcrypt.keys._loop.Await` for
    ``lookup(meter=probe)`` on the async door (a lookup that needed the key store is counted on the replay: the next
    attempt finds the key cached)."""

    async def make() -> DataKey:
        probe = _Probe(meter)
        try:
            return await lookup(meter=probe)
        finally:
            if probe.missed:
                replay.misses += 1

    return _loop.answer(replay, name, make)  # type: ignore[no-any-return]


def _reader(meter: object) -> str | None:
    """The data subject of the record a lookup is for: a serde's per-record state (the meter) names it."""
    person = getattr(meter, "person", None)
    return person if isinstance(person, str) else None


def _fresh_id() -> int:
    """A random key id to propose to the store (which gives another if this one is taken or was ever shredded)."""
    return secrets.randbits(32) or 1


def _take_prepared(made: _Wrapped | None, key_id: int, version: int) -> bytes:
    """The store's ``wrap`` callback: the key wrapped beforehand, if it was wrapped for exactly this id and version;
    else :class:`WrapLater` (roll back, wrap outside the transaction, come back)."""
    if made is not None and made.key.key_id == key_id and made.key.version == version:
        return made.wrapped
    raise WrapLater(key_id, version)


def _takes(store: KeyStore, name: str) -> bool:
    """Whether ``store.create`` accepts the keyword ``name`` (every built-in store; a plugin written before it may
    not)."""
    try:
        params = inspect.signature(store.create).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _kek_map(kek: object, timeout: float) -> dict[str, tuple[Kek, ...]]:
    """A KEK configuration as {key domain or ``"*"``: the KEKs held for it}, each opened once. A KEK, or a list of
    them, is the ``"*"`` entry. Anything else (an empty list or mapping, a key that is not a domain, a value that is
    not a KEK) is a ``ConfigurationError``."""
    usage = (
        "kek must be a KEK URI such as local-kek:///path/kek.json, a Kek, a list of them, or a mapping from key domain "
        f"(or {DEFAULT_DOMAIN!r} for every other domain) to one of those"
    )
    if isinstance(kek, Mapping):
        entries = list(kek.items())
        if not entries:
            raise ConfigurationError(f"{usage}; the mapping is empty")
    else:
        entries = [(DEFAULT_DOMAIN, kek)]
    opened: dict[str, Kek] = {}
    out: dict[str, tuple[Kek, ...]] = {}
    for domain, value in entries:
        if domain != DEFAULT_DOMAIN:
            check_id(domain, "a key domain in the KEK mapping")
            if domain != domain.strip():
                raise ConfigurationError(
                    f"{usage}; the key domain {domain!r} has surrounding spaces (it would name another domain)"
                )
        items = [value] if isinstance(value, (str, Kek)) else value
        if isinstance(items, (bytes, bytearray, Mapping)) or not isinstance(items, Sequence) or not items:
            raise ConfigurationError(f"{usage} (entry {domain!r})")
        keks: list[Kek] = []
        for k in items:
            if isinstance(k, Kek):
                found = opened.setdefault(k.uri, k)
            elif isinstance(k, str) and k.strip():
                found = opened.get(k) or opened.setdefault(k, open_kek(k, timeout=timeout))
            else:
                raise ConfigurationError(f"{usage} (entry {domain!r} holds a {type(k).__name__})")
            if found not in keks:
                keks.append(found)
        out[domain] = tuple(keks)
    return out


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
