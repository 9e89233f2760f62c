"""Record keys: the twins of confluent's ``StringSerializer`` / ``StringDeserializer`` whose keys are encrypted
deterministically, so the same customer id always becomes the same key bytes (same partition, log compaction keeps
the latest value per customer) and a shred of that customer makes the key unreadable.

    producer: {"key.serializer": StringKeySerializer(keyring=keyring), "value.serializer": ...}
    consumer: {"key.deserializer": StringKeyDeserializer(keyring=keyring), ...}

The record key **is** the data subject. It is encrypted with AES-SIV under the data key of the key domain
``<domain>/det`` and the person named by the key itself (each person's own key: shredding the person destroys it),
associated data ``crypto.wire.deterministic_ad(key id, key domain)``. ``<domain>`` is ``fieldcrypt.domain``, else the
subject ``<topic>-key`` (confluent's default subject name). The bytes on the wire are the deterministic value's
standard base64 text without padding (``crypto.wire.encode_text``), encoded with ``codec``: tools that read keys as
strings (confluent's ``StringDeserializer``, kcat, the console consumer) keep working and show text.

A reader parses the value, looks its key up by id, decrypts, and requires the key to be the decrypted text's own
(:func:`_belongs_to`): a deterministic value of the same domain copied in from a record's field (encrypted under the
key of the record's person, not of its own text) is tampering. None (a tombstone's key) stays None.

No plan, schema or registry: this module is loaded by ``import fieldcrypt`` and imports neither the engine nor
confluent's schema-registry clients.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Mapping
from functools import partial
from typing import Any

from confluent_kafka.serialization import Deserializer, SerializationContext, Serializer

from fieldcrypt.core.outcomes import Denied, Erased
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.crypto.cipher import CIPHER_ERRORS, DataKey
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    FieldcryptError,
    KeyNotFoundError,
    KeyShreddedError,
    MalformedRecordError,
)
from fieldcrypt.keys.source import KeySource
from fieldcrypt.keys.store import COMPANION_SUFFIXES, DET_SUFFIX, companion_of
from fieldcrypt.observe.stats import SerdeStats

__all__ = ["KEY_CONF", "KEY_PATH", "KEY_READ_CONF", "StringKeyDeserializer", "StringKeySerializer"]

#: the field path record keys are counted under (``stats.erased_by_field``) and that their markers carry
KEY_PATH = "key"
#: the conf keys of both record-key serdes
KEY_CONF: Mapping[str, str] = {
    "fieldcrypt.domain": "the key domain of the record keys (default: the subject, <topic>-key); keys are "
    "encrypted under its companion <domain>/det. Set the same domain on topics whose keys must be equal bytes "
    "(co-partitioned joins)",
}
#: the record-key deserializer's own conf keys
KEY_READ_CONF: Mapping[str, str] = {
    "fieldcrypt.on.erased": "raise | null | marker, for a key whose data key was shredded (default marker: a "
    "fieldcrypt.Erased, equal for every key of one erased person, so a consumer keeping the last value per key "
    "still tells erased persons apart; null returns None, which reads like a record without a key)",
    "fieldcrypt.on.denied": "raise | null | marker, for a key this consumer has no access to (default raise; "
    "marker: a fieldcrypt.Denied, equal for every key of one person)",
}
_MODES = ("raise", "null", "marker")
_DEC_ERRORS: tuple[type[BaseException], ...] = (*CIPHER_ERRORS, UnicodeDecodeError)


class _KeyCall:
    """One key's counts, added to the serde's ``SerdeStats`` when the call returns (the engine's ``RecordState``,
    reduced to what a record key has: one deterministic value). It is the keyring's ``KeyMeter`` for the lookup;
    ``person``, once known, is the data subject a pseudonymizing key store is asked about (:func:`_belongs_to`)."""

    __slots__ = ("denied", "erased", "lookups", "misses", "person", "stats", "unreadable")
    count = 0
    deterministic = 1
    plain = None
    masked = None

    def __init__(self, stats: SerdeStats) -> None:
        self.stats = stats
        self.lookups = 1
        self.misses = 0
        self.erased = 0
        self.denied = 0
        self.unreadable: list[tuple[bool, str]] | None = None
        self.person: str | None = None

    # the keyring's KeyMeter protocol
    def key_miss(self) -> None:
        self.misses += 1

    def key_store_call(self, seconds: float, failed: bool) -> None:
        self.stats.key_store_call(seconds, failed)


class _RecordKeySerde:
    """What both record-key serdes share: the codec, the keyring, the key domain per subject, the counters."""

    _role = ""
    _valid: Mapping[str, str] = KEY_CONF

    def __init__(self, codec: str, keyring: object, conf: Mapping[str, Any] | None) -> None:
        try:
            codecs.lookup(codec)
            "k".encode(codec).decode(codec)  # a text encoding: rot13, base64 or hex would fail on every key
        except (LookupError, TypeError, ValueError):
            raise ConfigurationError(f"codec {codec!r} is not a Python text encoding (e.g. utf_8)") from None
        if not isinstance(keyring, KeySource):
            raise ConfigurationError("keyring= must be a fieldcrypt.Keyring (where keys live and what wraps them)")
        if conf is not None and not isinstance(conf, Mapping):
            raise ConfigurationError("conf must be a dict")
        rest = dict(conf or {})
        unknown = sorted(set(rest) - set(self._valid))
        if unknown:
            raise ConfigurationError(
                f"Unrecognized properties: {', '.join(unknown)}; valid keys are: {', '.join(sorted(self._valid))}"
            )
        domain = rest.get("fieldcrypt.domain")
        if domain is not None:
            if not isinstance(domain, str) or not domain.strip():
                raise ConfigurationError("fieldcrypt.domain must be a non-empty string")
            _check_domain(domain, None)
        self.codec = codec
        self._keyring = keyring
        self._given = rest
        self._domain = domain
        self._domains: dict[tuple[str | None, str | None], tuple[str | None, str]] = {}
        self.stats = SerdeStats(self._role)

    def _det_domain(self, ctx: SerializationContext | None) -> tuple[str | None, str]:
        """(subject, ``<domain>/det``) of a call: the subject is ``<topic>-<field>`` as confluent names it."""
        topic = None if ctx is None else ctx.topic
        field = None if ctx is None else ctx.field
        found = self._domains.get((topic, field))
        if found is not None:
            return found
        subject = None if topic is None else f"{topic}-{field or 'key'}"
        domain = self._domain or subject
        if domain is None:
            raise ConfigurationError(
                "cannot choose the key domain: pass a SerializationContext (the producer and consumer do) or set "
                "fieldcrypt.domain"
            )
        if self._domain is None:
            _check_domain(domain, subject)
        found = (subject, domain + DET_SUFFIX)
        if len(self._domains) < 1024:
            self._domains[(topic, field)] = found
        return found

    def _refused(self, exc: FieldcryptError, st: _KeyCall | None) -> None:
        self.stats._error(exc)
        if st is not None:
            self.stats._lookups(st)  # type: ignore[arg-type]  # _KeyCall has the counts it reads


def _check_domain(domain: str, subject: str | None) -> None:
    if companion_of(domain) is not None:
        raise ConfigurationError(
            f"key domain {domain!r}: key domains ending in {' or '.join(map(repr, COMPANION_SUFFIXES))} are reserved "
            "(masked views, deterministic keys)" + (": set fieldcrypt.domain" if subject is not None else ""),
            subject=subject,
        )


class StringKeySerializer(_RecordKeySerde, Serializer):
    """confluent's ``StringSerializer`` (``codec``, ``__call__(obj, ctx=None)``), plus keyword-only ``keyring=``
    and ``conf=`` (``fieldcrypt.domain``): a string key becomes the base64 text of its deterministic encryption under
    its own person's key of ``<domain>/det``. Equal keys give equal bytes in every process; None stays None.

    Refused, naming the subject and never the key: a key that is not a ``str``, is empty or blank, or holds a NUL
    character or a lone surrogate (``EncryptionError``); no ``ctx`` and no ``fieldcrypt.domain``
    (``ConfigurationError``). ``stats`` counts keys, lookups and key-store calls as a serializer's do."""

    _role = "serializer"

    def __init__(self, codec: str = "utf_8", *, keyring: object, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(codec, keyring, conf)

    def __call__(self, obj: str | None, ctx: SerializationContext | None = None) -> bytes | None:
        if obj is None:
            return None
        st: _KeyCall | None = None
        try:
            subject, det = self._det_domain(ctx)
            plain = _key_text(obj, subject)
            st = _KeyCall(self.stats)
            try:
                key = self._keyring.encryption_key(det, obj, st)
            except FieldcryptError as exc:
                raise exc.with_context(subject=subject, field_path=KEY_PATH) from exc
            try:
                sealed = key.siv.encrypt(plain, [_wire.deterministic_ad(key.key_id, key.domain)])
            except CIPHER_ERRORS:
                raise EncryptionError(
                    "the record key could not be encrypted", subject=subject, key_id=key.key_id
                ) from None
        except FieldcryptError as exc:
            self._refused(exc, st)
            raise
        self.stats._wrote(st)  # type: ignore[arg-type]  # _KeyCall has the counts it reads
        return _wire.encode_text(_wire.deterministic_header(key.key_id) + sealed).encode(self.codec)


class StringKeyDeserializer(_RecordKeySerde, Deserializer):
    """confluent's ``StringDeserializer``, plus keyword-only ``keyring=`` and ``conf=`` (``fieldcrypt.domain``,
    ``fieldcrypt.on.erased``, ``fieldcrypt.on.denied``): reads what :class:`StringKeySerializer` writes, back to the
    key's text. None stays None.

    A key whose data key was shredded reads as ``fieldcrypt.on.erased`` says (default ``marker``: an
    :class:`fieldcrypt.Erased` naming the key id, equal for all keys of one erased person); one this consumer may not
    read, as ``fieldcrypt.on.denied`` says (default ``raise``: ``AccessDeniedError``). Anything that is not a
    fieldcrypt deterministic value of the key domain, or was altered, or is another person's value, is a
    ``DecryptionError`` (a plaintext key too: fail closed); a value that is not bytes, a ``MalformedRecordError``."""

    _role = "deserializer"
    _valid: Mapping[str, str] = {**KEY_CONF, **KEY_READ_CONF}

    def __init__(self, codec: str = "utf_8", *, keyring: object, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(codec, keyring, conf)
        modes = {}
        for name, default in (("fieldcrypt.on.erased", "marker"), ("fieldcrypt.on.denied", "raise")):
            mode = self._given.get(name, default)
            if mode not in _MODES:
                why = (
                    " (placeholder: every erased key would read as the same text, merging all erased persons' "
                    "records into one key)"
                    if mode == "placeholder"
                    else ""
                )
                raise ConfigurationError(f"{name} of a record key must be one of {', '.join(_MODES)}{why}")
            modes[name] = mode
        self._on_erased = modes["fieldcrypt.on.erased"]
        self._on_denied = modes["fieldcrypt.on.denied"]

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if value is None:
            return None
        st: _KeyCall | None = None
        try:
            subject, det = self._det_domain(ctx)
            key_id, body = _parse(value, self.codec, subject)
            st = _KeyCall(self.stats)
            try:
                key = self._keyring.decryption_key(key_id, st)
            except (KeyNotFoundError, AccessDeniedError) as exc:
                if exc.owner is not None and exc.owner[0] != det:
                    raise _moved(subject, key_id) from None  # another domain's key: not "erased" or "denied"
                out = self._unreadable(exc, st, subject, key_id)
                self.stats._record(st)  # type: ignore[arg-type]  # _KeyCall has the counts it reads
                return out
            except FieldcryptError as exc:
                raise exc.with_context(subject=subject, field_path=KEY_PATH) from exc
            if key.domain != det or not key.deterministic:
                raise _moved(subject, key_id)
            try:
                text = key.siv.decrypt(body, [_wire.deterministic_ad(key_id, key.domain)]).decode("utf-8")
            except _DEC_ERRORS:
                raise _moved(subject, key_id) from None
            if not _belongs_to(self._keyring, key, text, st):
                raise _moved(subject, key_id)
        except FieldcryptError as exc:
            self._refused(exc, st)
            raise
        self.stats._record(st)  # type: ignore[arg-type]  # _KeyCall has the counts it reads
        return text

    def _unreadable(self, exc: FieldcryptError, st: _KeyCall, subject: str | None, key_id: int) -> Any:
        erased = isinstance(exc, KeyShreddedError)
        if erased:
            st.erased += 1
        else:
            st.denied += 1
        st.unreadable = [(erased, KEY_PATH)]
        mode = self._on_erased if erased else self._on_denied
        if mode == "raise":
            raise exc.with_context(subject=subject, field_path=KEY_PATH) from None
        if mode == "marker":
            return (Erased if erased else Denied)(KEY_PATH, key_id)
        return None


#: Unicode categories of characters that show nothing: a key of only these is as blank as an empty one
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def _key_text(obj: object, subject: str | None) -> bytes:
    """The UTF-8 bytes of a record key, which is also the person whose key encrypts it: a non-blank ``str`` that a
    key store can hold (no NUL, no lone surrogate), as a record's data-subject id must be."""
    if not isinstance(obj, str):
        raise EncryptionError(f"a record key must be a str, got {type(obj).__name__}", subject=subject)
    if not obj.strip() or all(unicodedata.category(c) in _INVISIBLE for c in obj):
        raise EncryptionError("the record key is empty or blank (or only invisible characters)", subject=subject)
    try:
        plain = obj.encode("utf-8")
    except UnicodeEncodeError:
        plain = b"\x00"
    if b"\x00" in plain:
        raise EncryptionError(
            "the record key holds a NUL character or a lone surrogate, which key stores cannot hold", subject=subject
        )
    return plain


def _parse(value: object, codec: str, subject: str | None) -> tuple[int, bytes]:
    """(key id, AES-SIV output) of a record key's bytes; anything but a deterministic fieldcrypt value is refused."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise MalformedRecordError(f"a record key must be bytes, got {type(value).__name__}", subject=subject)
    try:
        return _wire.parse_deterministic(_wire.decode_text(bytes(value).decode(codec)))
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        raise DecryptionError(
            "the record key is not a fieldcrypt deterministic value (written by fieldcrypt.StringKeySerializer)",
            subject=subject,
            field_path=KEY_PATH,
        ) from None


def _belongs_to(keyring: KeySource, key: DataKey, person: str, st: _KeyCall) -> bool:
    """Whether ``key`` (looked up by id alone) is the data key of ``person``, the text it decrypted: the one check
    that a key's value was not copied in from a field of another person's record. A key store that names persons by
    keyed pseudonyms (``fieldcrypt.keys.pseudonyms``) gives a key looked up by id alone out under the pseudonym; the
    key's own person check (:meth:`fieldcrypt.crypto.cipher.DataKey.belongs_to`) tells whether it was made for
    ``person``, without the pseudonym key."""
    if key.person == person:
        return True
    if key.person is None:
        return False
    return key.belongs_to(person)


def _moved(subject: str | None, key_id: int) -> DecryptionError:
    return DecryptionError(
        "the record key is invalid, was tampered with, or was moved from another key domain or field",
        subject=subject,
        field_path=KEY_PATH,
        key_id=key_id,
    )


class AsyncStringKeySerializer(StringKeySerializer):
    """:class:`StringKeySerializer` for confluent's asyncio producer (``confluent_kafka.aio``), which calls its key
    serializer on the event loop: ``await serializer(key, ctx)``, the same bytes, with a cold key lookup on the
    keyring's async door instead of blocking the loop (``fieldcrypt.core.aio``)."""

    async def __call__(self, obj: str | None, ctx: SerializationContext | None = None) -> bytes | None:  # type: ignore[override]
        from fieldcrypt.core.aio import run  # (here: importing fieldcrypt must not load the record path)

        return await run(partial(StringKeySerializer.__call__, self, obj, ctx))


class AsyncStringKeyDeserializer(StringKeyDeserializer):
    """:class:`StringKeyDeserializer` for confluent's asyncio consumer: ``await deserializer(value, ctx)``, the same
    answers, with a cold key lookup on the keyring's async door."""

    async def __call__(self, value: bytes | None, ctx: SerializationContext | None = None) -> Any:
        from fieldcrypt.core.aio import run

        return await run(partial(StringKeyDeserializer.__call__, self, value, ctx))
