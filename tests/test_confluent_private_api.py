"""The private parts of confluent-kafka's serdes fieldcrypt relies on: this fails loudly on an upgrade that moves
one (the pin is confluent-kafka>=2.16.1,<2.17), instead of a serde failing at run time."""

from __future__ import annotations

import inspect
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common import avro as common_avro
from confluent_kafka.schema_registry.common import json_schema as common_json
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

SCHEMA = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}'
JSON_SCHEMA = '{"type": "object", "properties": {"a": {"type": "string"}}}'

METHODS = {
    "_execute_rules": ["ser_ctx", "subject", "rule_mode", "source", "target", "message", "inline_tags"],
    "_get_migrations": ["subject", "source_info", "target", "fmt"],
    "_execute_migrations": ["ser_ctx", "subject", "migrations", "message"],
    "_get_reader_schema": ["subject"],
    "_get_writer_schema": ["schema_id", "subject"],
    "_get_parsed_schema": [],
}
ATTRIBUTES = [
    "_registry",
    "_schema",
    "_subject_name_func",
    "_strategy_accepts_client",
    "_subject_name_conf",
    "_use_latest_version",
    "_use_latest_with_metadata",
    "_use_schema_id",
]
WRITE_ATTRIBUTES = ["_auto_register", "_normalize_schemas", "_known_subjects_lock", "_schema_name"]


def _instances() -> list[object]:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    return [
        AvroSerializer(registry, SCHEMA),
        AvroDeserializer(registry),
        JSONSerializer(JSON_SCHEMA, registry),
        JSONDeserializer(JSON_SCHEMA, schema_registry_client=registry),
    ]


@pytest.mark.parametrize("serde", _instances(), ids=lambda s: type(s).__name__)
def test_private_methods_and_attributes_used_still_exist(serde: object) -> None:
    reading = "Deserializer" in type(serde).__name__
    for name, params in METHODS.items():
        if name in ("_get_migrations", "_execute_migrations", "_get_writer_schema") and not reading:
            continue
        method = getattr(serde, name, None)
        assert callable(method), f"{type(serde).__name__}.{name} is gone"
        names = list(inspect.signature(method).parameters)
        assert names[: len(params)] == params, f"{type(serde).__name__}.{name} changed its parameters: {names}"
    for name in ATTRIBUTES + ([] if reading else WRITE_ATTRIBUTES):
        assert hasattr(serde, name), f"{type(serde).__name__}.{name} is gone"


def test_rule_helpers_used_still_exist() -> None:
    assert callable(common_avro.transform) and callable(common_avro.get_inline_tags)
    assert callable(common_json.transform) and common_json.DEFAULT_SPEC is not None
