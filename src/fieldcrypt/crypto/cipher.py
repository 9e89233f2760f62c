"""Data keys: the only module that encrypts field data.

A data key (DEK) is a Tink keyset holding one AES-256-GCM key (``AES256_GCM_RAW``): Tink generates it and
wraps it with the key-encryption key (``tink.proto_keyset_format.serialize_encrypted``, with associated data
naming the key id, domain, person and version), so DEKs leave this module only wrapped.

The field cipher is AES-256-GCM on that key. fieldcrypt chooses the nonce itself (one random nonce per record,
see ``crypto.wire``), which Tink's Python API does not accept, so the cipher call goes through ``cryptography``'s
AESGCM on the same key bytes. A value with index 0 is exactly Tink's RAW AES-GCM output (nonce || ct || tag).
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import tink
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from google.protobuf.message import DecodeError
from tink import aead, daead, secret_key_access
from tink.proto import aes_gcm_pb2, aes_siv_pb2, tink_pb2

from fieldcrypt.crypto import wire as _wire
from fieldcrypt.crypto.failures import fails_authentication
from fieldcrypt.errors import format_key_id

__all__ = [
    "CIPHER_ERRORS",
    "BranchKey",
    "DataKey",
    "encrypted_keyset",
    "for_values_of",
    "new_branch_key",
    "new_data_key",
    "person_check_of",
    "rewrap_data_key",
    "split_check",
    "unwrap_branch_handle",
    "unwrap_branch_key",
    "unwrap_data_key",
    "unwrap_handle",
    "with_check",
    "wrap_ad",
    "wrap_branch_handle",
    "wrap_handle",
]

_registered = False
_register_lock = threading.Lock()

#: what a DataKey's cipher raises when a ciphertext or its associated data does not verify
CIPHER_ERRORS: tuple[type[BaseException], ...] = (InvalidTag, ValueError, OverflowError)
TinkError = tink.TinkError


def ensure_tink() -> None:
    """Register Tink's AEAD primitives once, on first use rather than at import time."""
    global _registered
    if not _registered:
        with _register_lock:
            if not _registered:
                aead.register()
                daead.register()
                _registered = True


@dataclass(frozen=True, eq=False)
class DataKey:
    """One usable data key. ``repr`` shows ids only, never key material."""

    key_id: int
    domain: str
    person: str | None
    version: int
    cipher: Any = field(repr=False)  # AESGCM: encrypt(nonce, data, ad) / decrypt(nonce, data, ad)
    header: bytes = field(repr=False)  # _wire.key_header(key_id)
    ad_prefix: bytes = field(repr=False)  # _wire.ad_prefix(key_id, domain, person)
    header2: bytes = field(repr=False, default=b"")  # _wire.key_header_v2(key_id)
    ad_prefix2: bytes = field(repr=False, default=b"")  # _wire.ad_prefix_v2(key_id, domain, person)
    #: a deterministic key's AES-SIV (``encrypt(data, [ad])`` / ``decrypt``); its ``cipher`` then refuses every call
    #: (and a randomized key's ``siv`` does), so a value pointed at a key of the other kind reads as tampered
    siv: Any = field(repr=False, default=None)
    #: the encryptions this process may still do with the key, leased from the key store (write side): an iterator
    #: over a range, so that taking one (``next``) is a single atomic step even with many producer threads
    budget: list[Iterator[int]] = field(default_factory=lambda: [iter(())], repr=False)
    #: a data subject's key: the id of the data subject it was made for, as its person check (stored beside the
    #: wrapped key, encrypted under the key: :func:`person_check_of`) names it. None: no check (a domain's key, or a
    #: key of a store that names people by their ids)
    owner: str | None = field(repr=False, default=None)

    def belongs_to(self, person: str) -> bool:
        """Whether ``person`` (a data-subject id as a record names it) is the one this key was made for: the key
        store names them by a pseudonym only a pseudonym-key holder computes; the key itself tells any reader of the
        key (its person check)."""
        return self.owner is not None and hmac.compare_digest(
            self.owner.encode("utf-8", "surrogatepass"), person.encode("utf-8", "surrogatepass")
        )

    def lease(self, count: int) -> None:
        """Allow ``count`` more encryptions (what the key store granted)."""
        self.budget[0] = iter(range(count))

    def remaining(self) -> int:
        return operator.length_hint(self.budget[0])

    @property
    def deterministic(self) -> bool:
        """Whether this is a deterministic (AES-SIV) key: equal plaintexts give equal ciphertexts under it."""
        return not isinstance(self.siv, _Refuses)

    def __repr__(self) -> str:
        person = "" if self.person is None else ", person=<set>"
        return f"DataKey(key_id={format_key_id(self.key_id)}, domain={self.domain!r}{person}, version={self.version})"


class _Refuses:
    """The cipher a key does not have (a deterministic key's AES-GCM, a randomized key's AES-SIV): every call is a
    ``ValueError``, which readers report as tampering."""

    def encrypt(self, *args: Any) -> bytes:
        raise ValueError("this data key is of the other kind")

    decrypt = encrypt


_REFUSES = _Refuses()


def wrap_ad(key_id: int, domain: str, person: str | None, version: int) -> bytes:
    """Associated data binding a wrapped DEK to its id, domain, person and version.

    The KEK is given a SHA-256 digest of that context, never the context itself: it names the key domain and the
    data subject, and a KEK outside this process logs what it is sent (AWS KMS passes associated data on as the
    encryption context, which CloudTrail records in clear), where no shred can reach it. The digest binds the
    wrapped key to exactly the same context."""
    return b"fieldcrypt-dek\x02" + hashlib.sha256(_wrap_context(key_id, domain, person, version)).digest()


def _wrap_context(key_id: int, domain: str, person: str | None, version: int) -> bytes:
    who = b"\xff\xff\xff\xff" if person is None else _wire.lp(person.encode())
    return key_id.to_bytes(4, "big") + _wire.lp(domain.encode()) + who + version.to_bytes(4, "big")


def _legacy_wrap_ad(key_id: int, domain: str, person: str | None, version: int) -> bytes:
    """The associated data of keys wrapped before the digest (``\\x01``: the context itself). Read, never written:
    a rewrap moves such a key to the digest form."""
    return b"fieldcrypt-dek\x01" + _wrap_context(key_id, domain, person, version)


def _kek_decrypt(kek: aead.Aead, encrypted: bytes, key_id: int, domain: str, person: str | None, version: int) -> bytes:
    try:
        keyset: bytes = kek.decrypt(encrypted, wrap_ad(key_id, domain, person, version))
        return keyset
    except Exception as first:
        if not _may_be_legacy(first):
            raise
        try:
            legacy: bytes = kek.decrypt(encrypted, _legacy_wrap_ad(key_id, domain, person, version))
            return legacy
        except Exception:
            raise first from None


def _may_be_legacy(exc: BaseException) -> bool:
    """Whether a failed unwrap may be a key wrapped with the legacy context: only an authentication failure can be.
    A denied or unavailable KEK is not asked twice (one KMS call per attempt, as the retry budget promises)."""
    return fails_authentication(exc)


_GCM_URL = "type.googleapis.com/google.crypto.tink.AesGcmKey"
_SIV_URL = "type.googleapis.com/google.crypto.tink.AesSivKey"


def _key_bytes(serialized_keyset: bytes) -> bytes:
    """The AES-256-GCM key of a randomized data key's keyset."""
    kind, value = _key_material(serialized_keyset)
    if kind != _GCM_URL:
        raise TinkError("a data key must be a single AES-GCM key")
    return value


def _key_material(serialized_keyset: bytes) -> tuple[str, bytes]:
    """(type URL, key bytes) of a data key's keyset: one enabled AES-256-GCM key (32 bytes) or AES-SIV key (64 bytes:
    AES-256-SIV)."""
    keyset = tink_pb2.Keyset.FromString(serialized_keyset)
    if len(keyset.key) != 1 or keyset.key[0].status != tink_pb2.ENABLED:
        raise TinkError("a data key must be a keyset of one enabled key")
    (key,) = keyset.key
    url = key.key_data.type_url
    if url == _GCM_URL:
        value: bytes = aes_gcm_pb2.AesGcmKey.FromString(key.key_data.value).key_value
        if len(value) != 32:
            raise TinkError("a data key must be AES-256")
        return url, value
    if url == _SIV_URL:
        siv: bytes = aes_siv_pb2.AesSivKey.FromString(key.key_data.value).key_value
        if len(siv) != 64:
            raise TinkError("a deterministic data key must be AES-256-SIV (64 bytes)")
        return url, siv
    raise TinkError("a data key must be a single AES-GCM or AES-SIV key")


def _make(
    handle: tink.KeysetHandle, key_id: int, domain: str, person: str | None, version: int, check: bytes = b""
) -> DataKey:
    return _from_keyset(
        tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN), key_id, domain, person, version, check
    )


# -- the person check: which data subject a key was made for, provable with the key alone ----------------------------
#: the first bytes of a stored wrapped key that carries a person check: never the start of Tink's EncryptedKeyset
#: (a protobuf message starts with a field tag, never 0)
_CHECKED = b"\x00fcp1"
_CHECK_AD = b"fieldcrypt data subject of a data key"
_NONCE = 12


def _check_cipher(material: bytes) -> AESGCM:
    return AESGCM(hmac.digest(material, b"fieldcrypt person check key", "sha256"))


def person_check_of(handle: Any, person: str) -> bytes:
    """The person check of a data key (a Tink keyset handle) for the data subject ``person``: the id, AES-256-GCM
    encrypted under a key derived from the data key's own bytes. Stored beside the wrapped key (the key store names
    the person by a pseudonym only a pseudonym-key holder computes): whoever unwraps the data key learns whose key it
    is, and nobody else; a shred destroys it with the key."""
    material = _key_material(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))[1]
    nonce = os.urandom(_NONCE)
    return nonce + _check_cipher(material).encrypt(nonce, person.encode("utf-8", "surrogatepass"), _CHECK_AD)


def _owner_of(material: bytes, check: bytes) -> str:
    """The data subject a person check names (``TinkError`` if it is not this key's)."""
    try:
        plain = _check_cipher(material).decrypt(check[:_NONCE], check[_NONCE:], _CHECK_AD)
        return plain.decode("utf-8", "surrogatepass")
    except (InvalidTag, ValueError) as exc:
        raise TinkError("the person check of the data key fails authentication") from exc


def with_check(check: bytes, wrapped: bytes) -> bytes:
    """A stored wrapped key carrying ``check`` (b"": as it is)."""
    if not check:
        return wrapped
    if not _NONCE + 16 < len(check) <= 0xFFFF:
        raise ValueError("not a person check")
    return _CHECKED + len(check).to_bytes(2, "big") + check + wrapped


def split_check(stored: bytes) -> tuple[bytes, bytes]:
    """(person check, Tink's wrapped keyset) of a stored wrapped key; (b"", stored) for one without a check."""
    if stored[: len(_CHECKED)] != _CHECKED:
        return b"", stored
    start = len(_CHECKED) + 2
    size = int.from_bytes(stored[len(_CHECKED) : start], "big")
    if size <= _NONCE + 16 or len(stored) < start + size:
        raise TinkError("the wrapped data key's person check is cut short")
    return stored[start : start + size], stored[start + size :]


def _from_keyset(
    keyset: bytes, key_id: int, domain: str, person: str | None, version: int, check: bytes = b""
) -> DataKey:
    kind, material = _key_material(keyset)
    siv = kind == _SIV_URL
    return DataKey(
        key_id=key_id,
        domain=domain,
        person=person,
        version=version,
        cipher=_REFUSES if siv else AESGCM(material),
        siv=AESSIV(material) if siv else _REFUSES,
        header=_wire.key_header(key_id),
        ad_prefix=_wire.ad_prefix(key_id, domain, person),
        header2=_wire.key_header_v2(key_id),
        ad_prefix2=_wire.ad_prefix_v2(key_id, domain, person),
        owner=_owner_of(material, check) if check else None,
    )


class _Same:
    """The default of ``values_for``: the person the wrap binds."""


_SAME = _Same()


def new_data_key(
    key_id: int,
    domain: str,
    person: str | None,
    version: int,
    kek: aead.Aead,
    *,
    deterministic: bool = False,
    values_for: str | _Same | None = _SAME,
) -> tuple[DataKey, bytes]:
    """A fresh random DEK and its wrapped form (for the key store). Per-person keys are independent random keys.
    ``deterministic``: an AES-256-SIV key (Tink's deterministic AEAD), for values that must join. ``person`` is the
    data subject as the key store names it (a pseudonym), bound into the wrap; ``values_for``, the id the values'
    associated data binds (the record's data subject; default: ``person``)."""
    ensure_tink()
    template = daead.deterministic_aead_key_templates.AES256_SIV if deterministic else None
    handle = tink.new_keyset_handle(template or aead.aead_key_templates.AES256_GCM_RAW)
    wrapped = tink.proto_keyset_format.serialize_encrypted(handle, kek, wrap_ad(key_id, domain, person, version))
    reader = person if isinstance(values_for, _Same) else values_for
    # a key the store names by a pseudonym carries the MAC of the id it was made for: its readers check it
    check = person_check_of(handle, reader) if reader is not None and reader != person else b""
    return _make(handle, key_id, domain, reader, version, check), with_check(check, wrapped)


def for_values_of(key: DataKey, person: str | None) -> DataKey:
    """The same data key, for the values of ``person`` (their associated data binds that id): a key the key store
    names by a pseudonym, given out for the record whose data subject it is (the caller checked
    :meth:`DataKey.belongs_to`)."""
    return replace(
        key,
        person=person,
        ad_prefix=_wire.ad_prefix(key.key_id, key.domain, person),
        ad_prefix2=_wire.ad_prefix_v2(key.key_id, key.domain, person),
    )


def rewrap_data_key(
    wrapped: bytes, key_id: int, domain: str, person: str | None, version: int, old: aead.Aead, new: aead.Aead
) -> bytes:
    """The same DEK wrapped under another KEK (KEK rotation), with the same associated data. Raises
    ``tink.TinkError`` if ``old`` cannot unwrap it. The key never leaves Tink's keyset handle. A person check
    stays as it is."""
    check, _ = split_check(wrapped)
    return with_check(
        check,
        wrap_handle(unwrap_handle(wrapped, key_id, domain, person, version, old), key_id, domain, person, version, new),
    )


def unwrap_handle(wrapped: bytes, key_id: int, domain: str, person: str | None, version: int, old: aead.Aead) -> Any:
    """The first half of :func:`rewrap_data_key`: the stored DEK as a Tink keyset handle (a KEK call to ``old``)."""
    ensure_tink()
    wrapped = split_check(wrapped)[1]
    ad = wrap_ad(key_id, domain, person, version)
    try:
        return tink.proto_keyset_format.parse_encrypted(wrapped, old, ad)
    except Exception as first:
        if not _may_be_legacy(first):
            raise
        try:
            return tink.proto_keyset_format.parse_encrypted(
                wrapped, old, _legacy_wrap_ad(key_id, domain, person, version)
            )
        except Exception:
            raise first from None


def wrap_handle(handle: Any, key_id: int, domain: str, person: str | None, version: int, new: aead.Aead) -> bytes:
    """The second half of :func:`rewrap_data_key`: the handle wrapped under ``new`` (a KEK call to ``new``), without
    a person check (the caller keeps the stored one: :func:`split_check`, :func:`with_check`)."""
    rewrapped: bytes = tink.proto_keyset_format.serialize_encrypted(
        handle, new, wrap_ad(key_id, domain, person, version)
    )
    return rewrapped


def encrypted_keyset(wrapped: bytes) -> bytes | None:
    """The KEK ciphertext inside a stored wrapped DEK (Tink's ``EncryptedKeyset``), or None if the bytes are not
    one: what a KEK failure is classified against (its Tink prefix names the KEK key that wrapped it)."""
    try:
        inner: bytes = tink_pb2.EncryptedKeyset.FromString(split_check(wrapped)[1]).encrypted_keyset
    except (DecodeError, TinkError):  # not a keyset, or a person check cut short
        return None
    return inner or None


def unwrap_data_key(
    wrapped: bytes,
    key_id: int,
    domain: str,
    person: str | None,
    version: int,
    kek: aead.Aead,
    *,
    values_for: str | _Same | None = _SAME,
) -> DataKey:
    """Unwrap a stored DEK. Raises ``tink.TinkError`` if the KEK or the associated data does not match.
    ``person``: as the key store names it (bound into the wrap); ``values_for``: as for :func:`new_data_key`.

    Reads Tink's ``EncryptedKeyset`` directly (what ``proto_keyset_format.parse_encrypted`` does, without building
    a KeysetHandle that would be serialized again): a key-cache miss costs ~half as much.
    """
    ensure_tink()
    check, wrapped = split_check(wrapped)
    try:
        encrypted = tink_pb2.EncryptedKeyset.FromString(wrapped).encrypted_keyset
    except DecodeError as exc:
        raise TinkError("the wrapped data key is not an encrypted Tink keyset") from exc
    keyset = _kek_decrypt(kek, encrypted, key_id, domain, person, version)
    reader = person if isinstance(values_for, _Same) else values_for
    try:
        return _from_keyset(keyset, key_id, domain, reader, version, check)
    except (DecodeError, ValueError) as exc:
        raise TinkError("the wrapped data key is not a valid keyset") from exc


# -- branch keys: one per key domain (and version) between the KEK and the domain's data keys ---------------------
@dataclass(frozen=True, eq=False)
class BranchKey:
    """An unwrapped branch key: a Tink AES-256-GCM AEAD that wraps the data keys of one domain locally, so a new or
    cold (domain, person) key costs no KMS call. ``repr`` shows ids only."""

    branch_id: int
    domain: str
    version: int
    aead: Any = field(repr=False)

    def __repr__(self) -> str:
        return f"BranchKey(branch_id={format_key_id(self.branch_id)}, domain={self.domain!r}, version={self.version})"


def branch_ad(branch_id: int, domain: str, version: int) -> bytes:
    """Associated data binding a wrapped branch key to its id, domain and version (a digest, as for data keys: the
    KEK may log it). Its prefix differs from a data key's, so neither wrapped form passes for the other."""
    context = branch_id.to_bytes(4, "big") + _wire.lp(domain.encode()) + version.to_bytes(4, "big")
    return b"fieldcrypt-branch\x01" + hashlib.sha256(context).digest()


def new_branch_key(branch_id: int, domain: str, version: int, kek: aead.Aead) -> tuple[BranchKey, bytes]:
    """A fresh branch key and its form wrapped by the KEK (one KMS call)."""
    ensure_tink()
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    wrapped = tink.proto_keyset_format.serialize_encrypted(handle, kek, branch_ad(branch_id, domain, version))
    return BranchKey(branch_id, domain, version, handle.primitive(aead.Aead)), wrapped


def unwrap_branch_handle(wrapped: bytes, branch_id: int, domain: str, version: int, kek: aead.Aead) -> Any:
    """The stored branch key as a Tink keyset handle (one KMS call). Raises ``tink.TinkError`` if the KEK or the
    associated data does not match."""
    ensure_tink()
    return tink.proto_keyset_format.parse_encrypted(wrapped, kek, branch_ad(branch_id, domain, version))


def unwrap_branch_key(wrapped: bytes, branch_id: int, domain: str, version: int, kek: aead.Aead) -> BranchKey:
    """The stored branch key, usable (one KMS call)."""
    handle = unwrap_branch_handle(wrapped, branch_id, domain, version, kek)
    try:
        primitive = handle.primitive(aead.Aead)
    except TinkError as exc:
        raise TinkError("the wrapped branch key is not an AEAD keyset") from exc
    return BranchKey(branch_id, domain, version, primitive)


def wrap_branch_handle(handle: Any, branch_id: int, domain: str, version: int, new: aead.Aead) -> bytes:
    """A branch key's handle wrapped under another KEK (a domain's KEK change: one KMS call per branch key)."""
    rewrapped: bytes = tink.proto_keyset_format.serialize_encrypted(handle, new, branch_ad(branch_id, domain, version))
    return rewrapped
