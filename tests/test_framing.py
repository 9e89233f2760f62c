"""Schema ids in a Kafka header (confluent's GUID framing) as well as in the 5-byte prefix, for both formats."""

from __future__ import annotations

from confluent_kafka.schema_registry import header_schema_id_serializer
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import load_schema, order
from test_json_schema import json_customer

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

HEADER = {"schema.id.serializer": header_schema_id_serializer}


def test_avro_with_schema_id_header(registry, keyring: Keyring) -> None:
    rec = order(1)
    rec["orderId"] = ""  # the Avro payload then starts with a zero byte, like the prefix's magic byte
    ctx = SerializationContext("h", MessageField.VALUE, [])
    data = AvroSerializer(registry, load_schema("order.avsc"), conf=HEADER, keyring=keyring)(rec, ctx)
    assert data[0] == 0 and [k for k, _ in ctx.headers] == ["__value_schema_id"]
    assert AvroDeserializer(registry, keyring=keyring)(data, ctx) == rec
    assert PlainAvroDeserializer(registry)(data, ctx)["orderId"] == ""


def test_json_with_schema_id_header(registry, keyring: Keyring) -> None:
    ctx = SerializationContext("hj", MessageField.VALUE, [])
    ser = JSONSerializer(load_schema("customer_event.schema.json"), registry, conf=HEADER, keyring=keyring)
    data = ser(json_customer(1), ctx)
    assert data.startswith(b"{")
    assert JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)(data, ctx) == json_customer(1)
