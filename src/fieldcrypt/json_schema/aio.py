"""JSON Schema asyncio twins: drop-in replacements for confluent-kafka's ``AsyncJSONSerializer`` and
``AsyncJSONDeserializer``, plus ``keyring=``.

    from fieldcrypt.json_schema import AsyncJSONSerializer, AsyncJSONDeserializer

    serializer = await AsyncJSONSerializer(schema_str, registry, keyring=keyring)
    data = await serializer(record, SerializationContext("orders", MessageField.VALUE))

They subclass confluent's asyncio classes and take the same arguments and conf keys (plus ``fieldcrypt.*``). Each
runs the record work of the sync twin (``fieldcrypt.json_schema.JSONSerializer``) on the event loop, awaiting its
registry requests on the async client and its cold key lookups on the keyring's async door (``fieldcrypt.core.aio``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, Schema
from confluent_kafka.schema_registry.json_schema import AsyncJSONDeserializer as _ConfluentAsyncJSONDeserializer
from confluent_kafka.schema_registry.json_schema import AsyncJSONSerializer as _ConfluentAsyncJSONSerializer
from confluent_kafka.serialization import SerializationContext

from fieldcrypt.core.aio import AsyncDeserializerTwin, AsyncSerializerTwin, built, confluent_part
from fieldcrypt.json_schema.serde import JSONDeserializer, JSONSerializer
from fieldcrypt.keys.source import KeySource

__all__ = ["AsyncJSONDeserializer", "AsyncJSONSerializer"]


class AsyncJSONSerializer(AsyncSerializerTwin, _ConfluentAsyncJSONSerializer):  # type: ignore[misc]
    """confluent's ``AsyncJSONSerializer`` that encrypts tagged properties: ``await AsyncJSONSerializer(...)``, the
    same arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]  # (confluent's asyncinit: the constructor is awaited)
        self,
        schema_str: str | Schema | None,
        schema_registry_client: AsyncSchemaRegistryClient,
        to_dict: Callable[[object, SerializationContext], dict[str, Any]] | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        json_encode: Callable[[Any], str | bytes] | None = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: JSONSerializer(
                schema_str, view, to_dict, conf, rule_conf, rule_registry, json_encode, keyring=keyring
            ),
            schema_registry_client,
            conf,
        )
        await super().__init__(
            schema_str, schema_registry_client, to_dict, confluent_part(conf), rule_conf, rule_registry, json_encode
        )
        #: what this serializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats


class AsyncJSONDeserializer(AsyncDeserializerTwin, _ConfluentAsyncJSONDeserializer):
    """confluent's ``AsyncJSONDeserializer`` that decrypts tagged properties: ``await AsyncJSONDeserializer(...)``,
    the same arguments, plus ``keyring=``."""

    async def __init__(  # type: ignore[misc]
        self,
        schema_str: str | Schema | None,
        from_dict: Callable[[dict[str, Any], SerializationContext], object] | None = None,
        schema_registry_client: AsyncSchemaRegistryClient | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        json_decode: Callable[[Any], Any] | None = None,
        *,
        keyring: KeySource,
    ) -> None:
        self._fieldcrypt = await built(
            lambda view: JSONDeserializer(
                schema_str, from_dict, view, conf, rule_conf, rule_registry, json_decode, keyring=keyring
            ),
            schema_registry_client,
            conf,
        )
        await super().__init__(
            schema_str, from_dict, schema_registry_client, confluent_part(conf), rule_conf, rule_registry, json_decode
        )
        #: what this deserializer has done (fieldcrypt.SerdeStats), as the sync twin counts it
        self.stats = self._fieldcrypt.stats
