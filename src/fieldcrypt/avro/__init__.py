"""Avro: fieldcrypt's twins of confluent-kafka's ``AvroSerializer`` and ``AvroDeserializer`` (plus ``keyring=``).

    from fieldcrypt.avro import AvroSerializer, AvroDeserializer

The format folder: ``policy.py`` compiles an Avro schema to a field plan, ``depth.py`` guards recursive schemas,
``serde.py`` holds the serde classes, ``confluent.py`` the uses of confluent-kafka's private Avro API, and
``format.py`` the :class:`fieldcrypt.core.format.SchemaFormat` that registers all of it (docs/architecture.md).
"""

from fieldcrypt.avro.aio import AsyncAvroDeserializer, AsyncAvroSerializer
from fieldcrypt.avro.builders import (
    AsyncAvroDeserializerBuilder,
    AsyncAvroSerializerBuilder,
    AvroDeserializerBuilder,
    AvroSerializerBuilder,
)
from fieldcrypt.avro.serde import AvroDeserializer, AvroSerializer

__all__ = [
    "AsyncAvroDeserializer",
    "AsyncAvroDeserializerBuilder",
    "AsyncAvroSerializer",
    "AsyncAvroSerializerBuilder",
    "AvroDeserializer",
    "AvroDeserializerBuilder",
    "AvroSerializer",
    "AvroSerializerBuilder",
]
