"""fieldcrypt's twins of confluent-kafka 2.16's Avro serde builders, for the ``key.serializer.builder`` /
``value.serializer.builder`` (and ``...deserializer.builder``) properties of confluent's serializing producers and
deserializing consumers: confluent's setters and constructor arguments, plus ``keyring=`` (or ``set_keyring``);
they build fieldcrypt's serdes.

    producer = await AsyncSerializingProducer({
        "bootstrap.servers": brokers,
        "value.serializer.builder": AsyncAvroSerializerBuilder(
            schema_registry_config={"url": registry_url}, schema=schema_str, keyring=keyring
        ),
    })
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry.avro import AsyncAvroDeserializerBuilder as _ConfluentAsyncDeserializerBuilder
from confluent_kafka.schema_registry.avro import AsyncAvroSerializerBuilder as _ConfluentAsyncSerializerBuilder
from confluent_kafka.schema_registry.avro import AvroDeserializerBuilder as _ConfluentDeserializerBuilder
from confluent_kafka.schema_registry.avro import AvroSerializerBuilder as _ConfluentSerializerBuilder

from fieldcrypt.avro.aio import AsyncAvroDeserializer, AsyncAvroSerializer
from fieldcrypt.avro.serde import AvroDeserializer, AvroSerializer
from fieldcrypt.core.confluent import async_build_with, build_with
from fieldcrypt.core.serde import KeyringBuilder

__all__ = [
    "AsyncAvroDeserializerBuilder",
    "AsyncAvroSerializerBuilder",
    "AvroDeserializerBuilder",
    "AvroSerializerBuilder",
]


class AvroSerializerBuilder(KeyringBuilder, _ConfluentSerializerBuilder):
    """confluent's ``AvroSerializerBuilder``, building :class:`fieldcrypt.avro.AvroSerializer`; plus ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: AvroSerializer(
                client, v["schema"], v["to_dict"], v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AvroDeserializerBuilder(KeyringBuilder, _ConfluentDeserializerBuilder):
    """confluent's ``AvroDeserializerBuilder``, building :class:`fieldcrypt.avro.AvroDeserializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: AvroDeserializer(
                client, v["schema"], v["from_dict"], bool(v["return_record_name"]), v["deserializer_conf"],
                v["rule_conf"], v["rule_registry"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncAvroSerializerBuilder(KeyringBuilder, _ConfluentAsyncSerializerBuilder):
    """confluent's ``AsyncAvroSerializerBuilder``, building :class:`fieldcrypt.avro.AsyncAvroSerializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncAvroSerializer(
                client, v["schema"], v["to_dict"], v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncAvroDeserializerBuilder(KeyringBuilder, _ConfluentAsyncDeserializerBuilder):
    """confluent's ``AsyncAvroDeserializerBuilder``, building :class:`fieldcrypt.avro.AsyncAvroDeserializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncAvroDeserializer(
                client, v["schema"], v["from_dict"], bool(v["return_record_name"]), v["deserializer_conf"],
                v["rule_conf"], v["rule_registry"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip
