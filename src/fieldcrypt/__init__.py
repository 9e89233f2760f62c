"""fieldcrypt: field-level encryption for Kafka records, with keys you can shred.

Public API (everything else is private and may change)::

    fieldcrypt.Keyring                 where data keys live and what wraps them; rotate, rewrap, shred, audit
    fieldcrypt.RotationPolicy          when data keys rotate (age, count)
    fieldcrypt.create_local_kek        make a local key-encryption key file (explicitly)
    fieldcrypt.avro.AvroSerializer     drop-in for confluent's, plus keyring=
    fieldcrypt.avro.AvroDeserializer
    fieldcrypt.json_schema.JSONSerializer / JSONDeserializer   the same for JSON Schema
    fieldcrypt.avro.AsyncAvroSerializer ... AsyncJSONDeserializer   the asyncio twins (docs/asyncio.md)
    fieldcrypt.StringKeySerializer / StringKeyDeserializer     record keys: confluent's StringSerializer, keys
                                       encrypted deterministically per person (same key, same bytes; shreddable);
                                       AsyncStringKeySerializer / AsyncStringKeyDeserializer for confluent_kafka.aio
    fieldcrypt.Erased, fieldcrypt.Denied   what an unreadable value reads as with fieldcrypt.on.*="marker"
    fieldcrypt.register_mask           add a mask for masked views (fieldcrypt.masks; docs/policy.md)
    fieldcrypt.SerdeStats              the counters on serializer.stats / deserializer.stats (docs/observability.md)
    fieldcrypt.metrics                 optional Prometheus export of those counters (pip install 'fieldcrypt[metrics]')
    fieldcrypt.create_key_store        make a key store (explicitly; opening a missing one is an error)
    fieldcrypt.open_store / KeyStore   key stores by URL (sqlite:///, postgresql://, plugins)
    fieldcrypt.open_kek / Kek          key-encryption keys by URI (local-kek://, Tink KMS URIs, plugins)
    fieldcrypt.FakeClock / Clock       injected time, for tests of rotation and cache expiry
    fieldcrypt.errors                  the exception tree (also re-exported here)
    the `fieldcrypt` command           key administration (fieldcrypt.cli)
"""

from __future__ import annotations

from fieldcrypt.clock import Clock, FakeClock, SystemClock
from fieldcrypt.core.masks import register_mask
from fieldcrypt.core.outcomes import Denied, Erased
from fieldcrypt.core.record_key import (
    AsyncStringKeyDeserializer,
    AsyncStringKeySerializer,
    StringKeyDeserializer,
    StringKeySerializer,
)
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
    MalformedRecordError,
    PolicyError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
    UnsupportedFormatError,
    UnsupportedSchemaTypeError,
)
from fieldcrypt.keys.kek import Kek, create_local_kek, open_kek
from fieldcrypt.keys.keyring import Keyring, Rotation, RotationPolicy, RotationReport, ShredReport, SkippedRotation
from fieldcrypt.keys.registry import create_key_store, open_store
from fieldcrypt.keys.store import AuditEntry, DomainKeks, KeyRecord, KeyStore, ShredRecord
from fieldcrypt.observe.stats import SerdeStats

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AsyncStringKeyDeserializer",
    "AsyncStringKeySerializer",
    "AuditEntry",
    "Clock",
    "ConfigurationError",
    "DecryptionError",
    "Denied",
    "DomainKeks",
    "EncryptionError",
    "Erased",
    "FakeClock",
    "FieldcryptError",
    "Kek",
    "KeyCorruptedError",
    "KeyNotFoundError",
    "KeyRecord",
    "KeyShreddedError",
    "KeyStore",
    "KeyStoreUnavailableError",
    "Keyring",
    "MalformedRecordError",
    "PolicyError",
    "Rotation",
    "RotationPolicy",
    "RotationReport",
    "SchemaRegistryUnavailableError",
    "SerdeStats",
    "ShredRecord",
    "ShredReport",
    "SkippedRotation",
    "StringKeyDeserializer",
    "StringKeySerializer",
    "SystemClock",
    "UnknownSchemaError",
    "UnsupportedFormatError",
    "UnsupportedSchemaTypeError",
    "__version__",
    "create_key_store",
    "create_local_kek",
    "open_kek",
    "open_store",
    "policy_conf",
    "register_mask",
]


def policy_conf(path: str | None = None) -> dict[str, object]:
    """The ``[policy]`` table of the fieldcrypt configuration file (tags, plaintext tags, data-subject tag, tag
    domains, masks, deterministic tags, domain) as serde conf keys, so producers, consumers and the ``fieldcrypt``
    tools share one policy: ``AvroSerializer(registry, schema, keyring=kr, conf={**fieldcrypt.policy_conf()})``.
    ``path``, else ``$FIELDCRYPT_CONFIG``, else ``~/.config/fieldcrypt/config.toml`` (absent: ``{}``)."""
    from fieldcrypt.cli._config import policy_conf as read

    return read(path)
