"""fieldcrypt's twins of confluent-kafka 2.16's JSON Schema serde builders (see ``fieldcrypt.avro.builders``):
confluent's setters and constructor arguments, plus ``keyring=`` (or ``set_keyring``); they build fieldcrypt's
serdes."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry.json_schema import (
    AsyncJSONDeserializerBuilder as _ConfluentAsyncDeserializerBuilder,
)
from confluent_kafka.schema_registry.json_schema import AsyncJSONSerializerBuilder as _ConfluentAsyncSerializerBuilder
from confluent_kafka.schema_registry.json_schema import JSONDeserializerBuilder as _ConfluentDeserializerBuilder
from confluent_kafka.schema_registry.json_schema import JSONSerializerBuilder as _ConfluentSerializerBuilder

from fieldcrypt.core.confluent import async_build_with, build_with
from fieldcrypt.core.serde import KeyringBuilder
from fieldcrypt.json_schema.aio import AsyncJSONDeserializer, AsyncJSONSerializer
from fieldcrypt.json_schema.serde import JSONDeserializer, JSONSerializer

__all__ = [
    "AsyncJSONDeserializerBuilder",
    "AsyncJSONSerializerBuilder",
    "JSONDeserializerBuilder",
    "JSONSerializerBuilder",
]


class JSONSerializerBuilder(KeyringBuilder, _ConfluentSerializerBuilder):
    """confluent's ``JSONSerializerBuilder``, building :class:`fieldcrypt.json_schema.JSONSerializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: JSONSerializer(
                v["schema"], client, v["to_dict"], v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                v["json_encode"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class JSONDeserializerBuilder(KeyringBuilder, _ConfluentDeserializerBuilder):
    """confluent's ``JSONDeserializerBuilder``, building :class:`fieldcrypt.json_schema.JSONDeserializer`; plus
    ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return build_with(
            self,
            lambda client, v: JSONDeserializer(
                v["schema"], v["from_dict"], client, v["deserializer_conf"], v["rule_conf"], v["rule_registry"],
                v["json_decode"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncJSONSerializerBuilder(KeyringBuilder, _ConfluentAsyncSerializerBuilder):
    """confluent's ``AsyncJSONSerializerBuilder``, building :class:`fieldcrypt.json_schema.AsyncJSONSerializer`;
    plus ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncJSONSerializer(
                v["schema"], client, v["to_dict"], v["serializer_conf"], v["rule_conf"], v["rule_registry"],
                v["json_encode"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip


class AsyncJSONDeserializerBuilder(KeyringBuilder, _ConfluentAsyncDeserializerBuilder):
    """confluent's ``AsyncJSONDeserializerBuilder``, building :class:`fieldcrypt.json_schema.AsyncJSONDeserializer`;
    plus ``keyring=``."""

    def build(self, conf: dict[str, Any], is_key: bool) -> Any:
        keyring = self._fieldcrypt_keyring
        return async_build_with(
            self,
            lambda client, v: AsyncJSONDeserializer(
                v["schema"], v["from_dict"], client, v["deserializer_conf"], v["rule_conf"], v["rule_registry"],
                v["json_decode"], keyring=keyring,  # type: ignore[arg-type]
            ),
            conf,
        )  # fmt: skip
