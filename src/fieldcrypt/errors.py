"""The exceptions fieldcrypt raises.

Every error is a :class:`FieldcryptError`; catch the subclass you act on differently::

    FieldcryptError
    ├── ConfigurationError          bad constructor argument, conf key, URL, missing extra or KEK file
    ├── PolicyError                 the schema's tags cannot be honoured (e.g. a tag on an int field)
    │   └── UnsupportedSchemaTypeError  a schema type no format of fieldcrypt reads (PROTOBUF, an unknown one)
    ├── KeyStoreUnavailableError    the key store or the KEK could not be reached, after retries (retryable later)
    ├── SchemaRegistryUnavailableError  the registry could not be asked for a record's schema: no answer, 5xx, 408,
    │                               429 (after confluent's retries) or 401/403; the record may be good: retry later
    ├── EncryptionError             a tagged field could not be encrypted; nothing was produced
    ├── MalformedRecordError        the bytes or document are not a record of the writer's schema (also confluent's
    │   │                           SerializationError, as confluent raises for the same input)
    │   └── UnknownSchemaError      the record names a schema id or GUID the registry does not hold (HTTP 404)
    └── DecryptionError             a field ciphertext is malformed, tampered with or moved (opaque)
        ├── AccessDeniedError       the key exists, but this process's KEK cannot unwrap it ("no access")
        ├── KeyCorruptedError       the stored wrapped key fails authentication under the KEK that wrapped it
        │                           (its key-store row is corrupt, or was tampered with or swapped: "tampered")
        ├── UnsupportedFormatError  the value is in a format version this reader does not accept: below
        │                           fieldcrypt.min.format.version, or a newer writer's feature ("upgrade")
        └── KeyNotFoundError        it names a key id the key store does not hold (corrupt, or another store)
            └── KeyShreddedError    ... because that key was destroyed on purpose (crypto-shredding: "erased")

``ConfigurationError`` and ``PolicyError`` are also ``ValueError``s, as confluent's own configuration errors are;
``KeyNotFoundError`` is also a ``LookupError``. Catch ``KeyShreddedError`` before ``DecryptionError`` to tell
"erased" from "tampered".

Messages name the registry subject, the field path and the key id involved. They never contain a field
value, plaintext, ciphertext or key material, so they are safe to log.
"""

from __future__ import annotations

from confluent_kafka.serialization import SerializationError

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "DecryptionError",
    "EncryptionError",
    "FieldcryptError",
    "KeyCorruptedError",
    "KeyNotFoundError",
    "KeyShreddedError",
    "KeyStoreUnavailableError",
    "MalformedRecordError",
    "PolicyError",
    "SchemaRegistryUnavailableError",
    "UnknownSchemaError",
    "UnsupportedFormatError",
    "UnsupportedSchemaTypeError",
]


class FieldcryptError(Exception):
    """Root of every error fieldcrypt raises.

    ``subject``, ``field_path`` and ``key_id`` are set where known, so callers can act without parsing text.
    """

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        field_path: str | None = None,
        key_id: int | None = None,
    ) -> None:
        context = []
        if subject is not None:
            context.append(f"subject={subject!r}")
        if field_path is not None:
            context.append(f"field={field_path!r}")
        if key_id is not None:
            context.append(f"key_id={format_key_id(key_id)}")
        super().__init__(f"{message}: {' '.join(context)}" if context else message)
        self.reason = message
        self.subject = subject
        self.field_path = field_path
        self.key_id = key_id

    def with_context(self, *, subject: str | None = None, field_path: str | None = None) -> FieldcryptError:
        """A copy of this error of the same class, with the subject and field path filled in where unknown."""
        copy = type(self)(
            self.reason,
            subject=self.subject if self.subject is not None else subject,
            field_path=self.field_path if self.field_path is not None else field_path,
            key_id=self.key_id,
        )
        if "owner" in self.__dict__:
            copy.owner = self.__dict__["owner"]  # type: ignore[attr-defined]
        return copy


class ConfigurationError(FieldcryptError, ValueError):
    """A constructor argument, conf key, URL or local file is wrong. Fix the configuration; retrying will not help."""


class PolicyError(FieldcryptError, ValueError):
    """The schema asks for something fieldcrypt cannot do (a tag on an unsupported type, two data-subject fields...)."""


class UnsupportedSchemaTypeError(PolicyError):
    """A schema type (the registry's ``schemaType``) that no registered fieldcrypt format reads
    (``fieldcrypt.formats.format_for``): the message names it and the supported ones. Not an
    ``UnsupportedFormatError``, which is about a value's wire format and may mean tampering."""


class KeyStoreUnavailableError(FieldcryptError):
    """The key store or the key-encryption key could not be reached. Retryable; the producer fails closed meanwhile."""


class SchemaRegistryUnavailableError(FieldcryptError):
    """The schema registry could not be asked for the schema a record needs: it did not answer (connection refused,
    timeout), failed or throttled (HTTP 5xx, 408, 429) after the registry client's own retries, or refused this
    client's credentials (401, 403). The record may well be good: do not skip it; retry later (for 401/403, once the
    credentials are fixed). ``status``: the HTTP status, None when no answer came."""

    status: int | None = None

    def with_context(self, *, subject: str | None = None, field_path: str | None = None) -> FieldcryptError:
        copy = super().with_context(subject=subject, field_path=field_path)
        if isinstance(copy, SchemaRegistryUnavailableError):
            copy.status = self.status
        return copy


class EncryptionError(FieldcryptError):
    """A tagged field could not be encrypted. The record was not serialized, so nothing is produced."""


class MalformedRecordError(FieldcryptError, SerializationError):
    """The bytes (or JSON document) are not a record of the writer's schema: truncated, corrupt, not produced by a
    schema-registry serializer, or shaped otherwise than the schema says. The cause is chained."""


class UnknownSchemaError(MalformedRecordError):
    """The record names a schema (by id, or by GUID in a header) that the schema registry does not hold, or one that
    is no version of the subject being read and that this deserializer cannot read (another team's schema with
    tags it does not configure, a schema of another format): a corrupt or forged record, or one written through
    another registry or for another subject. The record is bad, not the registry or this consumer's settings; skip
    it or dead-letter it. The message names the schema id."""


class DecryptionError(FieldcryptError):
    """A field ciphertext is malformed, was tampered with, or was moved to another field, record, person or subject.

    Deliberately opaque, like Fernet's ``InvalidToken``: it does not say which check failed.
    """

    #: (domain, data subject) of the key a ciphertext names, where the key store knows it (never in the message): a
    #: reader compares it with the value's own context, so a header re-pointed at another person's key is tampering
    owner: tuple[str, str | None] | None = None


class AccessDeniedError(DecryptionError):
    """The data key exists, but this process's key-encryption key cannot unwrap it: this consumer has no access."""


class KeyCorruptedError(DecryptionError):
    """The key store's wrapped data key fails authentication under the KEK that wrapped it: the row is corrupt, or
    was tampered with or swapped with another key's. Not "no access": this KEK is the right one. Always raised."""


class UnsupportedFormatError(DecryptionError):
    """The value is in a format this reader does not accept: a version below ``fieldcrypt.min.format.version``, or a
    feature of a newer writer (upgrade readers before writers: docs/wire-format.md). Neither tampered nor erased."""


class KeyNotFoundError(DecryptionError, LookupError):
    """The key store holds no data key with the id a ciphertext names (wrong key store, or never created)."""


class KeyShreddedError(KeyNotFoundError):
    """The data key was destroyed on purpose: the data it protected is erased."""


def format_key_id(key_id: int) -> str:
    """The printable form of a key id, as in errors, logs and the CLI: ``0x`` and eight hex digits."""
    return f"0x{key_id:08x}"
