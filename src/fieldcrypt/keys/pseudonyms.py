"""Data-subject ids as the key store holds them: keyed pseudonyms, one pseudonym key per key domain.

    ps1:<22 characters>  =  "ps1:" + base64url(HMAC-SHA256(pseudonym key, "fieldcrypt data subject" NUL id)[:16])

The key store never holds a data-subject id: its keys, its shred log and its audit log name each person by this
pseudonym, and so does the shred-log file. The API and the CLI take plain ids and hash them, so "which keys does
cust-1 have, was cust-1 erased?" is answered for whoever holds the domain's KEK, and for nobody who only reads the
database (a backup, a replica, a DBA, an auditor's login): without the key, a pseudonym cannot be computed from an id
(nor an id guessed and checked against it), and there is no way back from a pseudonym to the id. The same person has
unrelated pseudonyms in two domains, so the store does not even link one person's keys across domains.

**A domain's pseudonym key** (32 random bytes) is made by the first keyring that writes a data subject's key of the
domain, wrapped under the KEK that wraps the domain's keys (the one it records for the domain), and managed like the
domain's branch keys: stored only wrapped (a row per KEK in ``fieldcrypt_pseudonym_keys``, with associated data
binding the domain and its fingerprint); an admin's ``kek add`` wraps it under the domain's new KEK too, and a writer
holding a KEK of the domain that lacks a copy adds one. Whoever holds a KEK of the domain can compute its pseudonyms
(one KEK call per process and domain); nobody else is asked to. Readers never need it: a data key tells its readers
whose key it is by itself (its person check, :func:`fieldcrypt.crypto.cipher.person_check_of`). Rows of a different key
(a fingerprint other than the one recorded first for the domain) are never accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from fieldcrypt.errors import (
    ConfigurationError,
    EncryptionError,
    FieldcryptError,
    KeyCorruptedError,
    KeyStoreUnavailableError,
)
from fieldcrypt.keys._deadline import KmsTimeout
from fieldcrypt.keys.kek import classify_failure, wrap_failure
from fieldcrypt.keys.store import PseudonymKey

if TYPE_CHECKING:
    from fieldcrypt.keys.kek import Kek

#: a :class:`fieldcrypt.keys.source.KeySource`, which imports this module (so it is not imported back)
KeySource = Any

__all__ = ["NO_KEK", "PREFIX", "PseudonymKey", "Pseudonyms", "add_copy", "copy_is", "is_pseudonym", "load", "share"]

log = logging.getLogger("fieldcrypt.keys")
#: every pseudonym starts with this (the version of the scheme)
PREFIX = "ps1:"
_SHAPE = re.compile(r"ps1:[A-Za-z0-9_-]{22}\Z")
_CONTEXT = b"fieldcrypt data subject\x00"
_FINGERPRINT = b"fieldcrypt pseudonym key fingerprint"
_AD = b"fieldcrypt-pseudonym-key\x02"
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

    def many(self, people: list[str]) -> list[str]:
        """The pseudonyms of ``people``, uncached (an admin's batch: thousands of ids, each hashed once)."""
        base = hmac.new(self._key, _CONTEXT, "sha256")
        out = []
        for person in people:
            h = base.copy()
            h.update(person.encode("utf-8", "surrogatepass"))
            out.append(PREFIX + base64.urlsafe_b64encode(h.digest()[:16]).rstrip(b"=").decode("ascii"))
        return out

    def __repr__(self) -> str:
        return f"Pseudonyms(fingerprint={self.fingerprint!r})"


def fingerprint(key: bytes) -> str:
    return hmac.digest(key, _FINGERPRINT, "sha256")[:8].hex()


def _ad(domain: str, fp: str) -> bytes:
    """The associated data of a wrapped pseudonym key: binds its domain (hashed: a KMS never sees a domain's name, as
    for data keys) and fingerprint."""
    return _AD + hashlib.sha256(domain.encode("utf-8")).digest() + fp.encode("ascii")


def _keks_of(source: KeySource, domain: str) -> list[Kek]:
    """The KEKs ``source`` holds for ``domain`` (none stands in for a missing one)."""
    return [k for k in source._held(domain)[0] if k.uri != NO_KEK]


def load(source: KeySource, domain: str, *, create: bool = True) -> Pseudonyms:
    """The pseudonym key of ``domain``, unwrapped by a KEK ``source`` holds for it; made (and wrapped under the
    domain's writing KEK) if the domain has none yet and ``create``. Then copies are added under the domain's other
    recorded KEKs ``source`` holds that have none (:func:`share`)."""
    store = source.store
    held = _keks_of(source, domain)
    if not held:
        raise ConfigurationError(
            f"data-subject ids of key domain {domain!r} are kept as pseudonyms, which only a holder of the domain's "
            "KEK can compute: pass --kek URI (or DOMAIN=URI), set FIELDCRYPT_KEK, or set kek in the configuration file"
        )
    rows = source._call(lambda: store.pseudonym_keys(domain))
    if not rows:
        if not create:
            raise ConfigurationError(
                f"key domain {domain!r} has no pseudonym key yet (no data subject's key was ever made in it): its "
                "first writer of a data subject's key makes it"
            )
        writing = source._writing_kek(domain)  # the domain's recorded primary (claimed now if it has none)
        if not source._accepts_clear_ids and source._call(lambda: store.holds_persons(domain)):
            # its data subjects' keys name them under a key the store no longer holds (rows deleted, a partial
            # restore): a new key would make every one of them unreachable by id, and their erasure impossible
            raise KeyCorruptedError(
                f"key domain {domain!r} holds data subjects' keys but the key store holds no pseudonym key of it "
                "(its rows were deleted or not restored): restore them from a backup of the key store"
            )
        key = secrets.token_bytes(32)
        made = Pseudonyms(key, source._cache_size)
        recorded = _add(source, domain, key, made.fingerprint, [writing])
        if recorded == made.fingerprint:
            _share_quietly(source, domain, made, None)
            return made
        rows = source._call(lambda: store.pseudonym_keys(domain))  # another process made one first: use it
    found = _unwrap_any(source, domain, rows)
    _share_quietly(source, domain, found, rows)
    return found


def _share_quietly(source: KeySource, domain: str, p: Pseudonyms, rows: list[PseudonymKey] | None) -> None:
    try:
        share(source, domain, p, rows)
    except FieldcryptError as exc:  # a login that may not write (a consumer's), a KEK that does not answer
        log.info("pseudonym key of a domain not shared with its other KEKs here: %s", type(exc).__name__)


def share(source: KeySource, domain: str, p: Pseudonyms, rows: list[PseudonymKey] | None = None) -> int:
    """Wrap ``domain``'s pseudonym key ``p`` under each KEK the store records for the domain that ``source`` holds
    and that has no copy yet; returns how many were added."""
    if rows is None:
        rows = source._call(lambda: source.store.pseudonym_keys(domain))
    have = {r.kek_uri for r in rows}
    recorded = source.domain_keks(domain)
    allowed = set(recorded.keks) if recorded is not None else set()
    missing = [k for k in _keks_of(source, domain) if k.uri not in have and k.uri in allowed]
    if not missing:
        return 0
    _add(source, domain, p._key, p.fingerprint, missing)
    return len(missing)


def _add(source: KeySource, domain: str, key: bytes, fp: str, keks: list[Kek]) -> str:
    """Store ``key`` wrapped under each of ``keks`` as ``domain``'s pseudonym key; returns the fingerprint the store
    records for the domain (another process's, if it made the domain's key first: then nothing of this one is
    stored)."""
    recorded = fp
    for kek in keks:
        deadline = source._deadline()

        def wrap(k: Kek = kek, until: float = deadline) -> bytes:
            try:
                out: bytes = source._kms(lambda: k.aead.encrypt(key, _ad(domain, fp)), until, f"KEK {k.uri!r}")
                return out
            except ConfigurationError:
                raise
            except Exception as exc:  # tink.TinkError, a KMS client's error, KmsTimeout
                raise wrap_failure(k, exc, source.kms_timeout, "the domain's pseudonym key") from exc

        row = PseudonymKey(kek.uri, source._call(wrap, deadline), fp, source.clock.now(), domain)
        audit = source._audit("pseudonymize", "a KEK that may compute the domain's data-subject pseudonyms")
        recorded = str(source._call(partial(source.store.add_pseudonym_key, row, _with_domain(audit, domain))))
        if recorded != fp:
            return recorded
    return recorded


def _with_domain(audit: Any, domain: str) -> Any:
    from dataclasses import replace

    return replace(audit, domain=domain)


def copy_is(source: KeySource, row: PseudonymKey, kek: Kek, p: Pseudonyms) -> bool:
    """Whether ``row`` unwraps, under ``kek``, to the pseudonym key ``p`` (False for any failure: a planted or corrupt
    copy, a KEK that refuses; a KMS that is down raises ``KeyStoreUnavailableError``)."""
    deadline = source._deadline()
    try:
        got = source._kms(lambda: kek.aead.decrypt(row.wrapped, _ad(row.domain, row.fingerprint)), deadline, kek.uri)
    except KmsTimeout as exc:
        raise KeyStoreUnavailableError(f"KEK {kek.uri!r} did not answer within kms_timeout") from exc
    except Exception as exc:  # tink.TinkError, a KMS client's error
        if classify_failure(kek, exc, row.wrapped) == "unavailable":
            raise KeyStoreUnavailableError(f"KEK {kek.uri!r} is unavailable ({type(exc).__name__})") from exc
        return False
    return hmac.compare_digest(bytes(got), p._key)


def add_copy(source: KeySource, domain: str, p: Pseudonyms, kek: Kek) -> None:
    """Wrap ``domain``'s pseudonym key ``p`` under ``kek`` (a KEK the store records for the domain)."""
    _add(source, domain, p._key, p.fingerprint, [kek])


def _unwrap_any(source: KeySource, domain: str, rows: list[PseudonymKey]) -> Pseudonyms:
    """``domain``'s pseudonym key from the first of its copies a KEK ``source`` holds for it unwraps. A KEK that is
    down or answers with an error fieldcrypt does not recognise is ``KeyStoreUnavailableError``; one that refuses
    sends it to the next copy, and so does a copy that fails authentication. Then: every held copy refused is an
    ``EncryptionError`` (no access), one failing authentication a ``KeyCorruptedError``; a ``ConfigurationError``
    only when this keyring holds no KEK of any copy."""
    first = rows[0].fingerprint
    held = {k.uri: k for k in _keks_of(source, domain)}
    recorded = source.domain_keks(domain)
    allowed = set(recorded.keks) if recorded is not None else set()  # a copy under any other KEK was planted
    usable = [r for r in rows if r.fingerprint == first and r.kek_uri in held and r.kek_uri in allowed]
    failures: list[str] = []
    corrupt = False
    for row in usable:
        kek = held[row.kek_uri]
        deadline = source._deadline()

        def attempt(r: PseudonymKey = row, k: Kek = kek, until: float = deadline) -> Any:
            try:
                return source._kms(
                    lambda: k.aead.decrypt(r.wrapped, _ad(domain, r.fingerprint)), until, f"KEK {k.uri!r}"
                )
            except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
                if isinstance(exc, KmsTimeout):
                    raise KeyStoreUnavailableError(
                        f"KEK {k.uri!r} did not answer within kms_timeout ({source.kms_timeout:g} s); it could not "
                        f"unwrap the pseudonym key of key domain {domain!r}"
                    ) from exc
                verdict = classify_failure(k, exc, r.wrapped)
                if verdict == "denied" and k.uri.startswith("local-kek:"):
                    verdict = "corrupt"  # a local keyset never refuses: the row is not what it says
                if verdict in ("denied", "corrupt"):
                    return exc
                raise KeyStoreUnavailableError(
                    f"KEK {k.uri!r} could not unwrap the pseudonym key of key domain {domain!r} "
                    f"({'unavailable' if verdict == 'unavailable' else 'an error fieldcrypt does not recognise'}: "
                    f"{type(exc).__name__})"
                ) from exc

        got = source._call(attempt, deadline)
        if isinstance(got, BaseException):  # refused, or a copy that is not what it says: try the next copy
            failures.append(f"{row.kek_uri!r} ({type(got).__name__})")
            corrupt = (
                corrupt or kek.uri.startswith("local-kek:") or classify_failure(kek, got, row.wrapped) == "corrupt"
            )
            continue
        key = bytes(got)
        if len(key) != 32 or not hmac.compare_digest(fingerprint(key), row.fingerprint):
            failures.append(f"{row.kek_uri!r} (not the recorded key)")
            corrupt = True
            continue
        return Pseudonyms(key, source._cache_size)
    if usable and corrupt:
        raise KeyCorruptedError(
            f"the pseudonym key of key domain {domain!r} fails authentication under the KEK that wrapped it: its "
            f"key-store row is corrupt or was tampered with (tried {', '.join(failures)})"
        )
    if usable:
        raise EncryptionError(
            f"the KEKs of key domain {domain!r} this keyring holds refused to unwrap its pseudonym key: this process "
            f"has no access to them (tried {', '.join(failures)})"
        )
    wrapped_by = ", ".join(sorted({repr(r.kek_uri) for r in rows if r.fingerprint == first}))
    why = f"; tried {', '.join(failures)}" if failures else ""
    raise ConfigurationError(
        f"this keyring cannot compute the data-subject pseudonyms of key domain {domain!r}: the domain's pseudonym "
        f"key is wrapped by {wrapped_by}, and this keyring holds none of those KEKs for it{why}. A key admin who "
        f"holds one of them wraps it under this keyring's KEK: `fieldcrypt kek add {domain} URI` "
        "(docs/key-model.md#pseudonyms)"
    )
