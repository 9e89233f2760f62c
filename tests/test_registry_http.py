"""Through a registry over real HTTP: metadata.tags registered by other tooling, compact schema text."""

from __future__ import annotations

import json
import urllib.error
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


def _error_of(call) -> tuple[int, int]:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        call()
    except SchemaRegistryError as exc:
        return exc.http_status_code, exc.error_code
    raise AssertionError("no SchemaRegistryError")


def test_the_test_registry_answers_with_confluents_status_and_error_codes(http_registry) -> None:
    from confluent_kafka.schema_registry import Schema

    client = SchemaRegistryClient({"url": http_registry.url})
    subject = f"codes-{uuid.uuid4().hex[:8]}"
    assert _error_of(lambda: client.get_latest_version(subject)) == (404, 40401)
    assert _error_of(lambda: client.get_schema(10**6)) == (404, 40403)
    assert _error_of(lambda: client.register_schema(subject, Schema("{not json", "AVRO"))) == (422, 42201)
    v1 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]})
    v2 = json.dumps(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int"}]}
    )
    first = client.register_schema(subject, Schema(v1, "AVRO"))
    second = client.register_schema(subject, Schema(v2, "AVRO"))
    assert first != second and client.get_versions(subject) == [1, 2]
    assert client.get_latest_version(subject).schema_id == second
    assert client.get_version(subject, 1).schema_id == first
    assert _error_of(lambda: client.get_version(subject, 3)) == (404, 40402)
    assert client.lookup_schema(subject, Schema(v1, "AVRO")).version == 1
    other = json.dumps({"type": "record", "name": "S", "fields": []})
    assert _error_of(lambda: client.lookup_schema(subject, Schema(other, "AVRO"))) == (404, 40403)
    try:
        urllib.request.urlopen(f"{http_registry.url}/subjects/{subject}/versions/x", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 422 and json.loads(exc.read())["error_code"] == 42202
    else:
        raise AssertionError("an invalid version was accepted")


def test_several_versions_references_and_latest_over_http(http_registry, keyring: Keyring) -> None:
    """use.latest.version writes with the newest version; a tagged field inside a referenced named type is
    encrypted; a fresh consumer reads it back; confluent's plain reader sees ciphertext there."""
    from confluent_kafka.schema_registry import Schema, SchemaReference

    topic = f"t-{uuid.uuid4().hex[:8]}"
    client = SchemaRegistryClient({"url": http_registry.url})
    contact = {
        "type": "record",
        "name": "Contact",
        "namespace": "ex",
        "fields": [{"name": "email", "type": "string", "confluent:tags": ["PII"]}],
    }
    client.register_schema("ex.Contact", Schema(json.dumps(contact), "AVRO"))
    ref = [SchemaReference("ex.Contact", "ex.Contact", 1)]
    v1 = {"type": "record", "name": "Event", "namespace": "ex", "fields": [{"name": "contact", "type": "ex.Contact"}]}
    v2 = {**v1, "fields": [*v1["fields"], {"name": "n", "type": "int", "default": 0}]}
    for v in (v1, v2):
        client.register_schema(f"{topic}-value", Schema(json.dumps(v), "AVRO", ref))
    ser = AvroSerializer(
        client, None, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    data = ser({"contact": {"email": "p@example.com"}, "n": 7}, value_ctx(topic))
    assert b"p@example.com" not in data
    assert int.from_bytes(data[1:5], "big") == client.get_latest_version(f"{topic}-value").schema_id
    fresh = SchemaRegistryClient({"url": http_registry.url})
    assert AvroDeserializer(fresh, keyring=keyring)(data, value_ctx(topic)) == {
        "contact": {"email": "p@example.com"},
        "n": 7,
    }
    assert PlainAvroDeserializer(fresh)(data, value_ctx(topic))["contact"]["email"] != "p@example.com"


def test_a_registry_that_drops_metadata_keeps_inline_tags_working(keyring: Keyring) -> None:
    """Several open-source registries drop metadata and ruleSet: inline tags still carry the policy."""
    from fieldcrypt._testing.registry import RegistryServer

    with RegistryServer(keep_metadata=False) as server:
        topic = f"t-{uuid.uuid4().hex[:8]}"
        client = SchemaRegistryClient({"url": server.url})
        data = AvroSerializer(client, json.dumps(avsc("order.avsc")), keyring=keyring)(order_record(), value_ctx(topic))
        fresh = SchemaRegistryClient({"url": server.url})
        assert AvroDeserializer(fresh, keyring=keyring)(data, value_ctx(topic)) == order_record()
        assert "metadata" not in json.loads(urllib.request.urlopen(f"{server.url}/schemas/ids/1", timeout=10).read())


def order_record() -> dict:
    from conftest import order

    return order(3)
