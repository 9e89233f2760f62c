"""Through a registry over real HTTP: metadata.tags registered by other tooling, compact schema text."""

from __future__ import annotations

import json
import urllib.request
import uuid

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from conftest import avsc, customer, value_ctx

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer


def register_rest(url: str, subject: str, body: dict) -> int:
    req = urllib.request.Request(
        f"{url}/subjects/{subject}/versions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read())["id"])


def test_metadata_tags_registered_over_rest(http_registry, keyring: Keyring) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    schema = avsc("customer_event.avsc")
    for f in schema["fields"]:
        if f["name"] != "customerId":
            f.pop("confluent:tags", None)
    text = json.dumps(schema)
    register_rest(
        http_registry.url,
        f"{topic}-value",
        {"schema": text, "metadata": {"tags": {"**.email": ["PII"], "CustomerEvent.ssn": ["PII"]}}},
    )
    producer_client = SchemaRegistryClient({"url": http_registry.url})
    ser = AvroSerializer(
        producer_client, text, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    data = ser(customer(1), value_ctx(topic))
    assert b"person1@example.com" not in data and b"001-45-6789" not in data
    assert b"Person Number 1" in data  # not tagged anywhere
    consumer_client = SchemaRegistryClient({"url": http_registry.url})  # a fresh client: fetches by id
    assert AvroDeserializer(consumer_client, keyring=keyring)(data, value_ctx(topic)) == customer(1)


def test_inline_tags_with_auto_register_and_plain_reader(http_registry, keyring: Keyring) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    client = SchemaRegistryClient({"url": http_registry.url})
    ser = AvroSerializer(client, json.dumps(avsc("order.avsc")), keyring=keyring)
    from conftest import order

    data = ser(order(5), value_ctx(topic))
    fresh = SchemaRegistryClient({"url": http_registry.url})
    assert AvroDeserializer(fresh, keyring=keyring)(data, value_ctx(topic)) == order(5)
    blind = PlainAvroDeserializer(fresh)(data, value_ctx(topic))
    assert blind["orderId"] == "o-5" and blind["customer"]["name"] != order(5)["customer"]["name"]
