"""Data-subject ids as the key store holds them: keyed pseudonyms.

    ps1:<22 characters>  =  "ps1:" + base64url(HMAC-SHA256(pseudonym key, "fieldcrypt data subject" NUL id)[:16])

The key store never holds a data-subject id: its keys, its shred log and its audit log name each person by this
pseudonym, and so does the shred-log file. The API and the CLI take plain ids and hash them, so "which keys does
cust-1 have, was cust-1 erased?" is answered for whoever holds the pseudonym key, and for nobody who only reads the
database (a backup, a replica, a DBA, an auditor's login): without the key, a pseudonym cannot be computed from an id
(nor an id guessed and checked against it), and there is no way back from a pseudonym to the id.

**The pseudonym key** (32 random bytes) is made once per key store, by its first keyring that needs it (or by
``fieldcrypt keys migrate-pseudonyms``), and is managed like a data key: it is stored only wrapped, once under each
KEK that may compute pseudonyms (a row per KEK in ``fieldcrypt_pseudonym_keys``, with associated data binding its
fingerprint), so every keyring that holds any of those KEKs can unwrap it (one KEK call per process). A keyring that
holds the key and KEKs the key is not yet wrapped under adds a copy under each of them (a producer recording a new
domain's KEK does, and an admin's ``kek add``/``kek map``): that is how a new team's KEK learns it. A keyring that
holds none of the KEKs it is wrapped under is refused (``ConfigurationError`` naming them) when it first needs a
pseudonym. Rows of a different key (a fingerprint other than the first one recorded) are never accepted.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyStoreUnavailableError
from fieldcrypt.keys._deadline import KmsTimeout
from fieldcrypt.keys.store import PseudonymKey

if TYPE_CHECKING:
    from fieldcrypt.keys.kek import Kek

#: a :class:`fieldcrypt.keys.source.KeySource`, which imports this module (so it is not imported back)
KeySource = Any

__all__ = ["NO_KEK", "PREFIX", "PseudonymKey", "Pseudonyms", "is_pseudonym", "load", "share"]

log = logging.getLogger("fieldcrypt.keys")
#: every pseudonym starts with this (the version of the scheme)
PREFIX = "ps1:"
_SHAPE = re.compile(r"ps1:[A-Za-z0-9_-]{22}\Z")
_CONTEXT = b"fieldcrypt data subject\x00"
_FINGERPRINT = b"fieldcrypt pseudonym key fingerprint"
_AD = b"fieldcrypt-pseudonym-key\x01"
#: the URI of the stand-in KEK of a CLI command run without one: it wraps and unwraps nothing
NO_KEK = "(no KEK given)"


def is_pseudonym(text: object) -> bool:
    """Whether ``text`` has the shape of a pseudonym (what a shred-log file written by this version holds)."""
    return isinstance(text, str) and _SHAPE.match(text) is not None


class Pseudonyms:
    """Computes the pseudonyms of data-subject ids under one pseudonym key (remembering the last ``cache_size``:
    the hot path asks at most once per record). ``repr`` shows the fingerprint only."""

    __slots__ = ("_cache", "_key", "_limit", "_lock", "fingerprint")

    def __init__(self, key: bytes, cache_size: int = 10_000) -> None:
        if len(key) != 32:
            raise ConfigurationError("a pseudonym key is 32 bytes")
        self._key = key
        self.fingerprint = fingerprint(key)
        self._cache: dict[str, str] = {}
        self._limit = cache_size
        self._lock = threading.Lock()

    def of(self, person: str) -> str:
        """The pseudonym of the data-subject id ``person``."""
        found = self._cache.get(person)
        if found is None:
            mac = hmac.digest(self._key, _CONTEXT + person.encode("utf-8", "surrogatepass"), "sha256")
            found = PREFIX + base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode("ascii")
            with self._lock:
                if len(self._cache) >= self._limit:
                    self._cache.clear()
                self._cache[person] = found
        return found

    def __repr__(self) -> str:
        return f"Pseudonyms(fingerprint={self.fingerprint!r})"


def fingerprint(key: bytes) -> str:
    return hmac.digest(key, _FINGERPRINT, "sha256")[:8].hex()


def _ad(fp: str) -> bytes:
    return _AD + fp.encode("ascii")


def load(source: KeySource, *, create: bool = True) -> Pseudonyms:
    """The pseudonym key of ``source``'s store, unwrapped by a KEK ``source`` holds; made (and wrapped under every KEK
    ``source`` holds) if the store has none yet and ``create``. Then copies are added under the KEKs ``source`` holds
    that have none (:func:`share`)."""
    store = source.store
    if not any(k.uri != NO_KEK for k in source.keks):
        raise ConfigurationError(
            "data-subject ids are kept as pseudonyms, which only a KEK-holder can compute: pass --kek URI (any KEK the "
            "key store's pseudonym key is wrapped by), set FIELDCRYPT_KEK, or set kek in the configuration file"
        )
    rows = source._call(store.pseudonym_keys)
    if not rows:
        if not create:
            raise ConfigurationError(
                f"key store {store!r} has no pseudonym key yet: its first keyring that writes a data subject's key "
                "makes it"
            )
        key = secrets.token_bytes(32)
        made = Pseudonyms(key, source._cache_size)
        recorded = _add(source, key, made.fingerprint, source.keks)
        if recorded == made.fingerprint:
            return made
        rows = source._call(store.pseudonym_keys)  # another process made one first: use it
    found = _unwrap_any(source, rows)
    try:
        share(source, found[1], source.keks, rows)
    except FieldcryptError as exc:  # a login that may not write (a consumer's), a KEK that does not answer
        log.info("pseudonym key not shared with this keyring's other KEKs: %s", type(exc).__name__)
    return found[1]


def share(source: KeySource, p: Pseudonyms, keks: list[Kek], rows: list[PseudonymKey] | None = None) -> int:
    """Wrap the pseudonym key ``p`` under each of ``keks`` that has no copy yet; returns how many were added."""
    if rows is None:
        rows = source._call(source.store.pseudonym_keys)
    have = {r.kek_uri for r in rows}
    missing = [k for k in keks if k.uri not in have and k.uri != NO_KEK]
    if not missing:
        return 0
    _add(source, p._key, p.fingerprint, missing)
    return len(missing)


def _add(source: KeySource, key: bytes, fp: str, keks: list[Kek]) -> str:
    """Store ``key`` wrapped under each of ``keks``; returns the fingerprint the store records (another process's,
    if it made the store's key first: then nothing of this one is stored)."""
    recorded = fp
    for kek in keks:
        if kek.uri == NO_KEK:
            continue
        deadline = source._deadline()

        def wrap(k: Kek = kek, until: float = deadline) -> bytes:
            try:
                out: bytes = source._kms(lambda: k.aead.encrypt(key, _ad(fp)), until, f"KEK {k.uri!r}")
                return out
            except ConfigurationError:
                raise
            except Exception as exc:  # tink.TinkError, a KMS client's error, KmsTimeout
                if isinstance(exc, KmsTimeout):
                    raise KeyStoreUnavailableError(
                        f"KEK {k.uri!r} did not answer within kms_timeout ({source.kms_timeout:g} s); it could not "
                        "wrap the pseudonym key"
                    ) from exc
                raise KeyStoreUnavailableError(
                    f"KEK {k.uri!r} could not wrap the pseudonym key ({type(exc).__name__})"
                ) from exc

        row = PseudonymKey(kek.uri, source._call(wrap, deadline), fp, source.clock.now())
        audit = source._audit("pseudonymize", "a KEK that may compute data-subject pseudonyms")
        recorded = str(source._call(partial(source.store.add_pseudonym_key, row, audit)))
        if recorded != fp:
            return recorded
    return recorded


def _unwrap_any(source: KeySource, rows: list[PseudonymKey]) -> tuple[bytes, Pseudonyms]:
    """The pseudonym key from the first row a KEK of ``source`` unwraps; rows of another key are ignored."""
    first = rows[0].fingerprint
    held = {k.uri: k for k in source.keks}
    usable = [r for r in rows if r.fingerprint == first and r.kek_uri in held]
    failures: list[str] = []
    for row in usable:
        kek = held[row.kek_uri]
        deadline = source._deadline()

        def attempt(r: PseudonymKey = row, k: Kek = kek, until: float = deadline) -> Any:
            return source._kms(lambda: k.aead.decrypt(r.wrapped, _ad(r.fingerprint)), until, f"KEK {k.uri!r}")

        try:
            key = bytes(source._call(attempt, deadline))
        except KeyStoreUnavailableError:
            raise
        except ConfigurationError:
            raise
        except Exception as exc:  # denied, or a copy that fails authentication: try the next copy
            failures.append(f"{row.kek_uri!r} ({type(exc).__name__})")
            continue
        if len(key) != 32 or not hmac.compare_digest(fingerprint(key), row.fingerprint):
            failures.append(f"{row.kek_uri!r} (not the recorded key)")
            continue
        return key, Pseudonyms(key, source._cache_size)
    wrapped_by = ", ".join(sorted({repr(r.kek_uri) for r in rows if r.fingerprint == first}))
    why = f"; tried {', '.join(failures)}" if failures else ""
    raise ConfigurationError(
        f"this keyring cannot compute data-subject pseudonyms: key store {source.store!r} keeps its pseudonym key "
        f"wrapped by {wrapped_by}, and this keyring holds none of those KEKs{why}. A key admin who holds one of them "
        "and this keyring's KEK shares it: `fieldcrypt keys pseudonym-key share --kek HELD --kek NEW` "
        "(docs/key-model.md#pseudonyms)"
    )
