"""Protobuf: fieldcrypt's twins of confluent-kafka's ``ProtobufSerializer`` and ``ProtobufDeserializer`` and their
asyncio twins (plus ``keyring=``).

    from fieldcrypt.protobuf import ProtobufSerializer, ProtobufDeserializer

The format folder: ``policy.py`` compiles a Protobuf schema (a file of messages) to the field plan of one message,
``project.py`` shows a message to the format-neutral engine as a plan-shaped dict and writes the result back,
``serde.py`` holds the serde classes, ``aio.py`` their asyncio twins, ``confluent.py`` the uses of confluent-kafka's
private Protobuf API (docs/architecture.md).
"""

from fieldcrypt.protobuf.aio import AsyncProtobufDeserializer, AsyncProtobufSerializer
from fieldcrypt.protobuf.builders import (
    AsyncProtobufDeserializerBuilder,
    AsyncProtobufSerializerBuilder,
    ProtobufDeserializerBuilder,
    ProtobufSerializerBuilder,
)
from fieldcrypt.protobuf.serde import ProtobufDeserializer, ProtobufSerializer

__all__ = [
    "AsyncProtobufDeserializer",
    "AsyncProtobufDeserializerBuilder",
    "AsyncProtobufSerializer",
    "AsyncProtobufSerializerBuilder",
    "ProtobufDeserializer",
    "ProtobufDeserializerBuilder",
    "ProtobufSerializer",
    "ProtobufSerializerBuilder",
]
