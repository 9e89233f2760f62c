"""fieldcrypt's twins of confluent-kafka 2.16's Protobuf serde builders, for the ``key.serializer.builder`` /
``value.serializer.builder`` (and ``...deserializer.builder``) properties of confluent's serializing producers and
deserializing consumers: confluent's setters and constructor arguments, plus ``keyring=`` (or ``set_keyring``);
they build fieldcrypt's serdes.

    producer = SerializingProducer({
        "bootstrap.servers": brokers,
        "value.serializer.builder": ProtobufSerializerBuilder(
            schema_registry_config={"url": registry_url}, message_type=Customer,
            serializer_config={"use.deprecated.format": False}, keyring=keyring,
        ),
    })
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry.protobuf import (
    AsyncProtobufDeserializerBuilder as _ConfluentAsyncDeserializerBuilder,
)
from confluent_kafka.schema_registry.protobuf import AsyncProtobufSerializerBuilder as _ConfluentAsyncSerializerBuilder
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializerBuilder as _ConfluentDeserializerBuilder
from confluent_kafka.schema_registry.protobuf import ProtobufSerializerBuilder as _ConfluentSerializerBuilder

from fieldcrypt.core.confluent import async_build_with, build_with
from fieldcrypt.core.serde import KeyringBuilder
from fieldcrypt.protobuf.aio import AsyncProtobufDeserializer, AsyncProtobufSerializer
from fieldcrypt.protobuf.serde import ProtobufDeserializer, ProtobufSerializer

__all__ = [
    "AsyncProtobufDeserializerBuilder",
    "AsyncProtobufSerializerBuilder",
    "ProtobufDeserializerBuilder",
    "ProtobufSerializerBuilder",
]


class ProtobufSerializerBuilder(KeyringBuilder, _ConfluentSerializerBuilder):
    """confluent's ``ProtobufSerializerBuilder``, building :class:`fieldcrypt.protobuf.ProtobufSerializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: ProtobufSerializer(
                v["msg_type"], client, v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class ProtobufDeserializerBuilder(KeyringBuilder, _ConfluentDeserializerBuilder):
    """confluent's ``ProtobufDeserializerBuilder``, building :class:`fieldcrypt.protobuf.ProtobufDeserializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: ProtobufDeserializer(
                v["msg_type"], v["deserializer_conf"], client, v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncProtobufSerializerBuilder(KeyringBuilder, _ConfluentAsyncSerializerBuilder):
    """confluent's ``AsyncProtobufSerializerBuilder``, building :class:`fieldcrypt.protobuf.AsyncProtobufSerializer`;
    plus ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncProtobufSerializer(
                v["msg_type"], client, v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncProtobufDeserializerBuilder(KeyringBuilder, _ConfluentAsyncDeserializerBuilder):
    """confluent's ``AsyncProtobufDeserializerBuilder``, building
    :class:`fieldcrypt.protobuf.AsyncProtobufDeserializer`; plus ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncProtobufDeserializer(
                v["msg_type"], v["deserializer_conf"], client, v["rule_conf"], v["rule_registry"],
                keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip
