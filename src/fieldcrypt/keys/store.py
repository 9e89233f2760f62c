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
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from fieldcrypt.errors import ConfigurationError, format_key_id

__all__ = ["AuditEntry", "KeyRecord", "KeyStore", "ShredRecord", "open_store", "redact_url"]

#: called with (key_id, version) inside the store's transaction; returns the wrapped DEK for that id
WrapFn = Callable[[int, int], bytes]


@dataclass(frozen=True)
class KeyRecord:
    """One stored data key. ``person`` is None for a domain-wide key; ``encryptions`` counts reserved uses."""

    key_id: int
    domain: str
    person: str | None
    version: int
    kek_uri: str
    wrapped: bytes = field(repr=False)
    created_at: float
    state: str = "active"  # 'active' (used for new data) or 'retired' (decrypts old data only)
    encryptions: int = 0

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
    ) -> KeyRecord:
        """Atomically return the active key of (domain, person), creating it if there is none.

        With ``retire=key_id``: if that key is still the active one, retire it and create the next version
        (rotation); if another process already rotated it, return the new active key. Concurrent callers in any
        number of processes end up with one active key. New ids are random, unused and not in the shred log.
        ``audit`` is written in the same transaction when a key is created.
        """

    @abc.abstractmethod
    def reserve(self, key_id: int, count: int) -> int:
        """Add ``count`` to the key's encryption count and return the new total (for count-based rotation)."""

    @abc.abstractmethod
    def keys(self, domain: str | None = None, person: str | None = None) -> Iterator[KeyRecord]:
        """Stored keys, optionally of one domain and/or person, ordered by domain, person, version."""

    @abc.abstractmethod
    def shred(
        self, domain: str | None, persons: Iterable[str] | None, now: float, audit: AuditEntry
    ) -> list[ShredRecord]:
        """Destroy every key of ``domain`` (all persons) or of ``persons`` (in ``domain``, or in every domain if
        None). Destroyed ids go to the shred log. Returns what was destroyed; nothing to destroy is no error."""

    @abc.abstractmethod
    def shredded(self, key_id: int) -> ShredRecord | None:
        """The shred-log entry of a destroyed key, or None."""

    @abc.abstractmethod
    def shred_log(self) -> Iterator[ShredRecord]:
        """Every destroyed key, oldest first."""

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
    def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (the newest ``limit`` if given)."""

    def publish_policy(self, fingerprint: str, policy: str, now: float) -> str:
        """Record the encryption policy producers use for one schema and key domain (``fingerprint``), unless one
        is recorded already; return the recorded one. Stores that keep no policies return ``policy``: producers and
        consumers sharing them cannot have a configuration mismatch detected for them."""
        return policy

    def published_policy(self, fingerprint: str) -> str | None:
        """The policy recorded for ``fingerprint``, or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook; a store without connections has nothing to release
        """Release connections. Idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for repr and messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def open_store(url: str) -> KeyStore:
    """Open the key store a URL names. Raises ``ConfigurationError`` for an unknown scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"key store {url!r} is not a URL; use sqlite:///PATH, postgresql://... or a plugin")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from fieldcrypt.keys.sqlite import SqliteKeyStore

        return SqliteKeyStore(url)
    if scheme in ("postgresql", "postgres"):
        from fieldcrypt.keys.postgres import PostgresKeyStore

        return PostgresKeyStore(url)
    for ep in entry_points(group="fieldcrypt.keystore"):
        if ep.name == scheme:
            store = ep.load()(url)
            if not isinstance(store, KeyStore):
                raise ConfigurationError(f"key store plugin {scheme!r} did not return a KeyStore")
            return store
    raise ConfigurationError(
        f"no key store for scheme {scheme}://; known: sqlite://, postgresql://, and 'fieldcrypt.keystore' entry points"
    )
