"""Protobuf asyncio twins: drop-in replacements for confluent-kafka's ``AsyncProtobufSerializer`` and
``AsyncProtobufDeserializer``, plus ``keyring=``.

    serializer = await AsyncProtobufSerializer(Customer, registry, {"use.deprecated.format": False}, keyring=keyring)
    data = await serializer(message, SerializationContext("customers", MessageField.VALUE))

They subclass confluent's asyncio classes and take the same arguments and conf keys (plus ``fieldcrypt.*``). Each
runs the record work of the sync twin (``fieldcrypt.protobuf.ProtobufSerializer``) on the event loop, awaiting its
registry requests on the async client and its cold key lookups on the keyring's async door (``fieldcrypt.core.aio``):
the same bytes, errors, conf keys and ``stats``, and each reads the other's records.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import AsyncProtobufDeserializer as _ConfluentAsyncProtobufDeserializer
from confluent_kafka.schema_registry.protobuf import AsyncProtobufSerializer as _ConfluentAsyncProtobufSerializer
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from fieldcrypt.core.aio import AsyncDeserializerTwin, AsyncSerializerTwin, built, confluent_part
from fieldcrypt.keys.source import KeySource
from fieldcrypt.protobuf.serde import ProtobufDeserializer, ProtobufSerializer

__all__ = ["AsyncProtobufDeserializer", "AsyncProtobufSerializer"]


class AsyncProtobufSerializer(AsyncSerializerTwin, _ConfluentAsyncProtobufSerializer):  # type: ignore[misc]
    """confluent's ``AsyncProtobufSerializer`` that encrypts tagged fields: ``await AsyncProtobufSerializer(...)``,
    the same arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]  # (confluent's asyncinit: the constructor is awaited)
        self,
        msg_type: type[Message],
        schema_registry_client: AsyncSchemaRegistryClient,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: ProtobufSerializer(msg_type, view, conf, rule_conf, rule_registry, keyring=keyring),
            schema_registry_client,
            conf,
        )
        await super().__init__(msg_type, schema_registry_client, confluent_part(conf), rule_conf, rule_registry)
        #: what this serializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats


class AsyncProtobufDeserializer(AsyncDeserializerTwin, _ConfluentAsyncProtobufDeserializer):
    """confluent's ``AsyncProtobufDeserializer`` that decrypts tagged fields: ``await AsyncProtobufDeserializer(...)``,
    the same arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]
        self,
        message_type: type[Message] | None,
        conf: dict[str, Any] | None = None,
        schema_registry_client: AsyncSchemaRegistryClient | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: ProtobufDeserializer(message_type, conf, view, rule_conf, rule_registry, keyring=keyring),
            schema_registry_client,
            conf,
        )
        await super().__init__(
            message_type or empty_pb2.Empty, confluent_part(conf), schema_registry_client, rule_conf, rule_registry
        )  # (None: the sync twin returns the writer's messages; confluent's class needs one)
        #: what this deserializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats
