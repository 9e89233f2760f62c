"""Avro asyncio twins: drop-in replacements for confluent-kafka's ``AsyncAvroSerializer`` and
``AsyncAvroDeserializer``, plus ``keyring=``.

    from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
    from fieldcrypt.avro import AsyncAvroSerializer, AsyncAvroDeserializer

    registry = AsyncSchemaRegistryClient({"url": "http://localhost:8081"})
    serializer = await AsyncAvroSerializer(registry, schema_str, keyring=keyring)
    data = await serializer(record, SerializationContext("orders", MessageField.VALUE))

They subclass confluent's asyncio classes and take the same arguments and conf keys (plus ``fieldcrypt.*``). Each
runs the record work of the sync twin (``fieldcrypt.avro.AvroSerializer``) on the event loop, awaiting its registry
requests on the async client and its cold key lookups on the keyring's async door (``fieldcrypt.core.aio``): the
same bytes, errors, conf keys and ``stats``, and each reads the other's records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema
from confluent_kafka.schema_registry.avro import AsyncAvroDeserializer as _ConfluentAsyncAvroDeserializer
from confluent_kafka.schema_registry.avro import AsyncAvroSerializer as _ConfluentAsyncAvroSerializer
from confluent_kafka.serialization import SerializationContext

from fieldcrypt.avro.serde import AvroDeserializer, AvroSerializer
from fieldcrypt.core.aio import AsyncDeserializerTwin, AsyncSerializerTwin, built, confluent_part
from fieldcrypt.keys.source import KeySource

__all__ = ["AsyncAvroDeserializer", "AsyncAvroSerializer"]


class AsyncAvroSerializer(AsyncSerializerTwin, _ConfluentAsyncAvroSerializer):  # type: ignore[misc]
    """confluent's ``AsyncAvroSerializer`` that encrypts tagged fields: ``await AsyncAvroSerializer(...)``, the same
    arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]  # (confluent's asyncinit: the constructor is awaited)
        self,
        schema_registry_client: AsyncSchemaRegistryClient,
        schema_str: str | Schema | None = None,
        to_dict: Callable[[object, SerializationContext], dict[str, Any]] | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: AvroSerializer(view, schema_str, to_dict, conf, rule_conf, rule_registry, keyring=keyring),
            schema_registry_client,
            conf,
        )
        await super().__init__(
            schema_registry_client, schema_str, to_dict, confluent_part(conf), rule_conf, rule_registry
        )
        #: what this serializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats


class AsyncAvroDeserializer(AsyncDeserializerTwin, _ConfluentAsyncAvroDeserializer):
    """confluent's ``AsyncAvroDeserializer`` that decrypts tagged fields: ``await AsyncAvroDeserializer(...)``, the
    same arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]
        self,
        schema_registry_client: AsyncSchemaRegistryClient,
        schema_str: str | Schema | None = None,
        from_dict: Callable[[dict[str, Any], SerializationContext], object] | None = None,
        return_record_name: bool = False,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: AvroDeserializer(
                view, schema_str, from_dict, return_record_name, conf, rule_conf, rule_registry, keyring=keyring
            ),
            schema_registry_client,
            conf,
        )
        await super().__init__(
            schema_registry_client,
            schema_str,
            from_dict,
            return_record_name,
            confluent_part(conf),
            rule_conf,
            rule_registry,
        )
        #: what this deserializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats
