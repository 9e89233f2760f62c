"""A data-contract rule failing with a DLQ action (confluent's ``DlqAction``) never tees a tagged value in clear:
on read the dead-letter record is the record's bytes as they arrived (as confluent's deserializers send them), on
write fieldcrypt's tagged fields are redacted as confluent redacts its ENCRYPT rules' tags. Avro, JSON Schema and
Protobuf."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common.schema_registry_client import Rule, RuleKind, RuleMode, RuleSet
from confluent_kafka.schema_registry.rule_registry import RuleRegistry
from confluent_kafka.schema_registry.rules.cel.cel_executor import CelExecutor
from confluent_kafka.schema_registry.rules.dlq.dlq_action import DlqAction
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.protobuf import ProtobufDeserializer, ProtobufSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "protobuf"))
import customer_pb2

SECRET = "secret.person@example.com"
LATEST = {"auto.register.schemas": False, "use.latest.version": True}
AVRO = {
    "type": "record",
    "name": "P",
    "fields": [{"name": "email", "type": "string", "confluent:tags": ["PII"]}, {"name": "n", "type": "int"}],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {"email": {"type": "string", "confluent:tags": ["PII"]}, "n": {"type": "integer"}},
}


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None, on_delivery: Any = None):
        self.sent.append(value)

    def poll(self, timeout: float) -> None:
        pass

    def flush(self) -> None:
        pass


def _rules() -> tuple[RuleRegistry, FakeProducer]:
    producer = FakeProducer()
    rules = RuleRegistry()
    rules.register_executor(CelExecutor())
    rules.register_action(DlqAction({"dlq.topic": "dlq", "producer": producer}))
    return rules, producer


def _rule(mode: RuleMode, expr: str) -> Rule:
    return Rule("check", "", RuleKind.CONDITION, mode, "CEL", None, None, expr, "NONE", "DLQ", False)


def _serdes(fmt: str, registry: Any, keyring: Keyring, rules: RuleRegistry | None) -> tuple[Any, Any, Any]:
    """(serializer in latest mode, deserializer, a record) of the format."""
    if fmt == "avro":
        return (
            AvroSerializer(registry, None, conf=LATEST, rule_registry=rules, keyring=keyring),
            AvroDeserializer(registry, rule_registry=rules, keyring=keyring),
            {"email": SECRET, "n": 1},
        )
    if fmt == "json":
        return (
            JSONSerializer(None, registry, conf=LATEST, rule_registry=rules, keyring=keyring),
            JSONDeserializer(None, schema_registry_client=registry, rule_registry=rules, keyring=keyring),
            {"email": SECRET, "n": 1},
        )
    conf = {"use.deprecated.format": False}
    return (
        ProtobufSerializer(customer_pb2.Customer, registry, {**conf, **LATEST}, rule_registry=rules, keyring=keyring),
        ProtobufDeserializer(customer_pb2.Customer, conf, registry, rule_registry=rules, keyring=keyring),
        customer_pb2.Customer(id="c-1", email=SECRET, loyalty_points=1),
    )


def _schema(fmt: str, rule: Rule) -> Schema:
    if fmt == "protobuf":
        from fieldcrypt.protobuf.confluent import schema_text

        return Schema(schema_text(customer_pb2.Customer), "PROTOBUF", [], None, RuleSet(None, [rule]))
    text = json.dumps(AVRO if fmt == "avro" else JSON_SCHEMA)
    return Schema(text, fmt.upper(), [], None, RuleSet(None, [rule]))


FIELD = {"avro": "n", "json": "n", "protobuf": "loyalty_points"}


@pytest.mark.parametrize("fmt", ["avro", "json", "protobuf"])
def test_a_failing_read_rule_sends_the_bytes_as_they_arrived(fmt: str, keyring: Keyring) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ctx = SerializationContext("t", MessageField.VALUE)
    registry.register_schema("t-value", _schema(fmt, _rule(RuleMode.READ, f"message.{FIELD[fmt]} > 100")))
    rules, producer = _rules()
    ser, de, record = _serdes(fmt, registry, keyring, rules)
    data = ser(record, ctx)
    assert SECRET.encode() not in data
    with pytest.raises(SerializationError):
        de(data, ctx)
    assert producer.sent == [data]  # the record as it arrived: ciphertext, never the decrypted record


@pytest.mark.parametrize("fmt", ["avro", "json", "protobuf"])
def test_a_failing_write_rule_redacts_the_tagged_fields(fmt: str, keyring: Keyring) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ctx = SerializationContext("t", MessageField.VALUE)
    registry.register_schema("t-value", _schema(fmt, _rule(RuleMode.WRITE, f"message.{FIELD[fmt]} > 100")))
    rules, producer = _rules()
    ser, _, record = _serdes(fmt, registry, keyring, rules)
    with pytest.raises(SerializationError):
        ser(record, ctx)
    [sent] = producer.sent
    assert SECRET.encode() not in sent and b"email" in sent  # the record, its tagged value redacted


@pytest.mark.parametrize("fmt", ["avro", "json", "protobuf"])
@pytest.mark.parametrize("asyncio_twin", [False, True])
def test_reading_tracks_the_record_key_as_confluents_deserializers_do(
    fmt: str, asyncio_twin: bool, keyring: Keyring
) -> None:
    """A KEY read is remembered for the DLQ action of the value read next; a VALUE read forgets it: on the first
    record of a kind and on the later ones (a lane), with the sync and the asyncio twins."""
    import asyncio

    from confluent_kafka.schema_registry.common.serde import get_original_key, set_original_key

    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    if fmt == "protobuf":
        conf = {"use.deprecated.format": False}
        ser: Any = ProtobufSerializer(customer_pb2.Customer, registry, conf, keyring=keyring)
        record: Any = customer_pb2.Customer(id="c-1", email=SECRET, loyalty_points=1)
    elif fmt == "avro":
        ser, record = AvroSerializer(registry, json.dumps(AVRO), keyring=keyring), {"email": SECRET, "n": 1}
    else:
        ser, record = JSONSerializer(json.dumps(JSON_SCHEMA), registry, keyring=keyring), {"email": SECRET, "n": 1}
    key_ctx, value_ctx = SerializationContext("t", MessageField.KEY), SerializationContext("t", MessageField.VALUE)
    key, value = ser(record, key_ctx), ser(record, value_ctx)
    if asyncio_twin:
        from fieldcrypt.avro import AsyncAvroDeserializer
        from fieldcrypt.json_schema import AsyncJSONDeserializer
        from fieldcrypt.protobuf import AsyncProtobufDeserializer

        twin = {"avro": AsyncAvroDeserializer, "json": AsyncJSONDeserializer, "protobuf": AsyncProtobufDeserializer}

        async def reads() -> list[Any]:
            if fmt == "protobuf":
                de = await twin[fmt](customer_pb2.Customer, {"use.deprecated.format": False}, registry, keyring=keyring)
            elif fmt == "avro":
                de = await twin[fmt](registry, keyring=keyring)
            else:
                de = await twin[fmt](None, schema_registry_client=registry, keyring=keyring)
            keyring.clear_cache()  # cold keys: the first reads run in the loop's executor (a copied context)
            seen = []
            for _ in range(3):
                await de(key, key_ctx)
                seen.append(get_original_key())
                await de(value, value_ctx)
                seen.append(get_original_key())
            return seen

        seen = asyncio.run(reads())
    else:
        if fmt == "protobuf":
            de: Any = ProtobufDeserializer(
                customer_pb2.Customer, {"use.deprecated.format": False}, registry, keyring=keyring
            )
        elif fmt == "avro":
            de = AvroDeserializer(registry, keyring=keyring)
        else:
            de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
        seen = []
        for _ in range(3):
            set_original_key("stale key of another record")
            de(key, key_ctx)
            seen.append(get_original_key())
            de(value, value_ctx)
            seen.append(get_original_key())
        de(key, key_ctx)
        assert de(None, value_ctx) is None and get_original_key() is None  # a null value forgets it too
    assert seen == [key, None] * 3
