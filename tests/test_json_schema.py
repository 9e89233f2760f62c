"""The JSON Schema serde holds every guarantee the Avro one does, tested the same way."""

from __future__ import annotations

import copy
import json
import logging
import uuid
from typing import Any

import pytest
from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.error import ValueSerializationError
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as ConfluentJSONDeserializer
from confluent_kafka.schema_registry.schema_registry_client import Metadata, MetadataTags
from confluent_kafka.serialization import SerializationError
from conftest import customer, ids_of, load_schema, value_ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fail_closed import DownStore

from fieldcrypt import (
    DecryptionError,
    EncryptionError,
    Erased,
    FieldcryptError,
    Keyring,
    KeyShreddedError,
    KeyStoreUnavailableError,
    PolicyError,
    create_key_store,
)
from fieldcrypt._testing.broker import CONSUMER_DEFAULTS
from fieldcrypt.crypto import wire
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

CUSTOMER = load_schema("customer_event.schema.json")
ORDER = load_schema("order.schema.json")
CANARY = "CANARY-json-41ab@example.com"


def json_customer(i: int = 1, **over: Any) -> dict[str, Any]:
    rec = customer(i, **over)
    rec["purchaseAmount"] = float(rec["purchaseAmount"])
    return rec


def json_order(i: int = 1) -> dict[str, Any]:
    return {
        "orderId": f"o-{i}",
        "customer": {"name": f"Zoë Ångström {i}", "phone": None if i % 2 else f"+49 {i}", "loyaltyTier": "gold"},
        "shipTo": {"street": f"Hauptstraße {i}", "city": "Berlin", "postcode": f"{10_000 + i}"},
        "previousAddresses": [
            {"street": f"Old Road {i}", "city": "Bonn", "postcode": "53111"},
            {"street": "", "city": "Köln", "postcode": "50667"},
        ],
        "contacts": {"work": {"email": f"w{i}@corp.example", "note": "n"}},
        "total": 99.5,
    }


def serde(
    registry: Any, keyring: Keyring, schema: str = CUSTOMER, **read: Any
) -> tuple[JSONSerializer, JSONDeserializer]:
    conf = {f"fieldcrypt.{k.replace('_', '.')}": v for k, v in read.items()}
    return (
        JSONSerializer(schema, registry, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


def plain(registry: Any, data: bytes, topic: str = "orders") -> dict[str, Any]:
    """What a consumer without keys reads: confluent's JSONDeserializer with validation on."""
    doc: dict[str, Any] = ConfluentJSONDeserializer(None, schema_registry_client=registry)(data, value_ctx(topic))
    return doc


def reframe(data: bytes, doc: dict[str, Any]) -> bytes:
    return data[:5] + json.dumps(doc).encode()


def test_round_trip_and_no_plaintext(registry, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring, ORDER)
    for i in range(4):
        rec = json_order(i)
        data = ser(rec, value_ctx())
        for secret in (f"Zoë Ångström {i}", f"Hauptstraße {i}", f"Old Road {i}", f"w{i}@corp.example"):
            assert secret.encode() not in data and json.dumps(secret)[1:-1].encode() not in data
        assert de(data, value_ctx()) == rec
        seen = plain(registry, data)
        assert seen["orderId"] == rec["orderId"] and seen["customer"]["loyaltyTier"] == "gold"
        assert seen["customer"]["name"] != rec["customer"]["name"]


def test_customer_round_trip_with_format_and_untagged_constraints(registry, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    rec = json_customer(3)
    data = ser(rec, value_ctx())
    assert de(data, value_ctx()) == rec
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == registry.get_latest_version("orders-value").schema_id


def test_validation_happens_on_plaintext_without_leaking_it(registry, keyring: Keyring, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    ser, _ = serde(registry, keyring)
    bad = json_customer(1, currency=CANARY)  # currency has maxLength 3 (untagged): rejected before encryption
    with pytest.raises(SerializationError) as err:
        ser(bad, value_ctx())
    assert "currency" in str(err.value) and "maxLength" in str(err.value) and CANARY not in str(err.value)
    with pytest.raises(SerializationError):
        ser(json_customer(1, email=12345), value_ctx())  # wrong type of a tagged property: the schema says so
    assert keyring.keys() == []  # nothing was encrypted
    assert all(CANARY not in r.getMessage() for r in caplog.records)


def test_caller_document_is_never_mutated(registry, keyring: Keyring) -> None:
    ser, _ = serde(registry, keyring, ORDER)
    rec = json_order(2)
    before = copy.deepcopy(rec)
    ser(rec, value_ctx())
    assert rec == before


def test_tamper_and_swaps_are_rejected(registry, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    a_bytes, b_bytes = ser(json_customer(1), value_ctx()), ser(json_customer(2), value_ctx())
    a2_bytes = ser(json_customer(1, email="other@example.com"), value_ctx())
    a, b, a2 = plain(registry, a_bytes), plain(registry, b_bytes), plain(registry, a2_bytes)
    blob = wire.decode_text(a["email"])
    for i in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecryptionError):
            de(reframe(a_bytes, dict(a, email=wire.encode_text(bytes(flipped)))), value_ctx())
    for n in range(len(blob)):
        with pytest.raises(DecryptionError):
            de(reframe(a_bytes, dict(a, email=wire.encode_text(blob[:n]))), value_ctx())
    forgeries = [
        dict(a, email=a["fullName"], fullName=a["email"]),  # between fields
        dict(a2, email=a["email"]),  # between records of one person
        dict(b, email=a["email"]),  # between persons
        dict(a, customerId="cust-2"),  # relabelled person
    ]
    for forged in forgeries:
        with pytest.raises(DecryptionError):
            de(reframe(a_bytes, forged), value_ctx())
    ser(json_customer(1), value_ctx("elsewhere"))
    with pytest.raises(DecryptionError):  # between subjects
        de(a_bytes, value_ctx("elsewhere"))


def test_fail_closed(registry, kek_uri: str, store_url: str, broker) -> None:
    keyring = Keyring(DownStore(), kek_uri, sleep=lambda s: None)
    ser, _ = serde(registry, keyring)
    rec = json_customer(1)
    with pytest.raises(KeyStoreUnavailableError) as err:
        ser(rec, value_ctx())
    assert err.value.subject == "orders-value"  # the first store call is the policy record (core.serde.PolicyCheck)
    topic = f"json-closed-{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic)
    producer = SerializingProducer({"bootstrap.servers": broker.bootstrap_servers, "value.serializer": ser})
    with pytest.raises(ValueSerializationError):
        producer.produce(topic, value=rec)
    assert producer.flush(10) == 0
    with pytest.raises(EncryptionError):
        serde(registry, Keyring(create_key_store(f"sqlite:///{keyring.kek.uri.split('://')[1]}.db"), kek_uri))[0](
            json_customer(1, customerId=""), value_ctx()
        )


def test_per_person_keys_and_erased_outcome(registry, keyring: Keyring) -> None:
    ser, _ = serde(registry, keyring)
    one, two = ser(json_customer(1), value_ctx()), ser(json_customer(2), value_ctx())
    assert ids_of(keyring, keyring.keys(), ["cust-1", "cust-2"]) == ["cust-1", "cust-2"]
    keyring.shred_person("cust-1", reason="erasure")
    _, marker = serde(registry, keyring, on_erased="marker")
    out = marker(one, value_ctx())
    assert isinstance(out["email"], Erased) and out["customerId"] == "cust-1"
    assert marker(two, value_ctx()) == json_customer(2)
    _, strict = serde(registry, keyring, on_erased="raise")
    with pytest.raises(KeyShreddedError):
        strict(one, value_ctx())
    assert marker.stats.erased == 3


def test_tag_on_non_string_rejected_naming_the_property(registry, keyring: Keyring) -> None:
    schema = json.loads(CUSTOMER)
    schema["properties"]["items"]["confluent:tags"] = ["PII"]
    with pytest.raises(PolicyError) as err:
        JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    assert err.value.field_path == "$.items" and "integer" in str(err.value)
    schema = json.loads(CUSTOMER)
    schema["properties"]["currency"]["confluent:tags"] = ["PII"]  # maxLength 3 cannot hold a ciphertext
    with pytest.raises(PolicyError, match="maxLength"):
        JSONSerializer(json.dumps(schema), registry, keyring=keyring)


def test_metadata_tags(registry, keyring: Keyring) -> None:
    schema = json.loads(CUSTOMER)
    for prop in schema["properties"].values():
        prop.pop("confluent:tags", None)
    text = json.dumps(schema)
    tagged = Schema(
        text, "JSON", [], Metadata(tags=MetadataTags({"$.fullName": ("PII",)}), properties=None, sensitive=None)
    )
    registry.register_schema("orders-value", tagged)
    ser = JSONSerializer(
        text, registry, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    data = ser(json_customer(1), value_ctx())
    assert b"Person Number 1" not in data and b"person1@example.com" in data
    assert JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)(data, value_ctx()) == json_customer(
        1
    )


def test_no_canary_in_errors(registry, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    data = ser(json_customer(1, email=CANARY), value_ctx())
    doc = plain(registry, data)
    errors: list[BaseException] = []
    for forged in (dict(doc, email=doc["email"][:-2]), dict(doc, email=doc["fullName"]), dict(doc, email="x" * 40)):
        with pytest.raises(FieldcryptError) as err:
            de(reframe(data, forged), value_ctx())
        errors.append(err.value)
    for e in errors:
        assert CANARY not in str(e) and CANARY not in repr(e)


@pytest.mark.broker
def test_end_to_end_through_a_real_broker(broker, registry, keyring: Keyring) -> None:
    topic = f"json-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    ser, de = serde(registry, keyring)
    producer = SerializingProducer({"bootstrap.servers": broker.bootstrap_servers, "value.serializer": ser})
    sent = [json_customer(i) for i in range(100)]
    for rec in sent:
        producer.produce(topic, value=rec)
    assert producer.flush(30) == 0
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "value.deserializer": de,
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    import time

    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    consumer.close()
    assert got == sent


# -- property-based round trip over generated JSON schemas ---------------------------------------------------------
TEXT = st.text(max_size=12)


def _object(draw: Any, depth: int) -> tuple[dict[str, Any], Any]:
    props, values = {}, {}
    for i in range(draw(st.integers(1, 4))):
        name = f"p{i}"
        kinds = ["tstr", "tnull", "toneof", "str", "int", "num", "bool"] + (
            ["obj", "arr", "map", "optobj"] if depth < 3 else []
        )
        kind = draw(st.sampled_from(kinds))
        if kind == "tstr":
            props[name], values[name] = {"type": "string", "confluent:tags": ["PII"]}, TEXT
        elif kind == "tnull":
            props[name], values[name] = {"type": ["string", "null"], "confluent:tags": ["PII"]}, st.none() | TEXT
        elif kind == "toneof":
            props[name] = {"oneOf": [{"type": "null"}, {"type": "string"}], "confluent:tags": ["PII"]}
            values[name] = st.none() | TEXT
        elif kind == "str":
            props[name], values[name] = {"type": "string"}, TEXT
        elif kind == "int":
            props[name], values[name] = {"type": "integer"}, st.integers(-(2**53), 2**53)
        elif kind == "num":
            props[name], values[name] = {"type": "number"}, st.floats(allow_nan=False, allow_infinity=False)
        elif kind == "bool":
            props[name], values[name] = {"type": "boolean"}, st.booleans()
        else:
            sub, sub_values = _object(draw, depth + 1)
            if kind == "obj":
                props[name], values[name] = sub, sub_values
            elif kind == "arr":
                props[name], values[name] = {"type": "array", "items": sub}, st.lists(sub_values, max_size=3)
            elif kind == "map":
                props[name] = {"type": "object", "additionalProperties": sub}
                values[name] = st.dictionaries(TEXT, sub_values, max_size=3)
            else:
                props[name], values[name] = {"oneOf": [{"type": "null"}, sub]}, st.none() | sub_values
    return {"type": "object", "properties": props, "required": list(props)}, st.fixed_dictionaries(values)


@st.composite
def schema_and_docs(draw: Any) -> tuple[dict[str, Any], list[Any]]:
    schema, values = _object(draw, 0)
    return schema, draw(st.lists(values, min_size=1, max_size=3))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=schema_and_docs())
def test_round_trip_over_generated_json_schemas(case: tuple[dict[str, Any], list[Any]], keyring: Keyring) -> None:
    schema, docs = case
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ser, de = serde(registry, keyring, json.dumps(schema))
    topic = f"t-{uuid.uuid4().hex}"  # the key store (shared by the examples) records what each subject encrypted
    for doc in docs:
        data = ser(doc, value_ctx(topic))
        assert plain(registry, data) is not None  # still valid against the registered schema
        assert de(data, value_ctx(topic)) == doc


def test_recursive_refs_and_data_subject_in_nested_object(registry, keyring: Keyring) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "owner": {
                "type": "object",
                "properties": {"id": {"type": "integer", "confluent:tags": ["DATA_SUBJECT_ID"]}},
            },
            "tree": {"$ref": "#/definitions/Node"},
        },
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "confluent:tags": ["PII"]},
                    "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                },
            }
        },
    }
    doc = {
        "owner": {"id": 42},
        "tree": {"label": "root-secret", "children": [{"label": "leaf-secret", "children": []}]},
    }
    ser, de = serde(registry, keyring, json.dumps(schema))
    data = ser(doc, value_ctx())
    assert b"leaf-secret" not in data and b"root-secret" not in data
    assert de(data, value_ctx()) == doc
    assert ids_of(keyring, keyring.keys(), ["42"]) == ["42"]


def test_use_latest_version_on_both_sides(registry, keyring: Keyring) -> None:
    registry.register_schema("orders-value", Schema(CUSTOMER, "JSON"))
    latest = {"auto.register.schemas": False, "use.latest.version": True}
    ser = JSONSerializer(CUSTOMER, registry, conf=latest, keyring=keyring)
    de = JSONDeserializer(None, schema_registry_client=registry, conf={"use.latest.version": True}, keyring=keyring)
    for i in range(3):
        assert de(ser(json_customer(i), value_ctx()), value_ctx()) == json_customer(i)


def test_values_read_whatever_order_the_registry_or_a_mirror_gives_object_keys(keyring: Keyring) -> None:
    """Found by review: values were numbered in the order of the schema text's properties, so a consumer whose
    registry returned the schema re-serialized (some sort keys) failed every record with two tagged values, as
    tampered. Now properties and other keys are visited in code-point order on both sides."""
    props = {
        "z_card": {"type": "string", "confluent:tags": ["PII"]},
        "a_mail": {"type": "string", "confluent:tags": ["PII"]},
        "id": {"type": "string"},
    }
    schema = {
        "type": "object",
        "properties": props,
        "patternProperties": {"^x_": {"type": "string", "confluent:tags": ["PII"]}},
        "additionalProperties": False,
    }
    reordered = {**schema, "properties": dict(reversed(list(props.items())))}
    producer_registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    consumer_registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    # the consumer's registry holds the same schema under the same id, its keys in another order
    consumer_registry.register_schema("o-value", Schema(json.dumps(reordered, sort_keys=True), "JSON"))
    ser = JSONSerializer(json.dumps(schema), producer_registry, keyring=keyring)
    doc = {"x_b": "second", "a_mail": "m@example.com", "id": "1", "x_a": "first", "z_card": "4111111111111111"}
    data = ser(doc, value_ctx("o"))
    de = JSONDeserializer(None, schema_registry_client=consumer_registry, keyring=keyring)
    assert de(data, value_ctx("o")) == doc
    # a mirror that re-encodes the document with sorted keys: the same values
    body = json.loads(data[5:])
    mirrored = data[:5] + json.dumps(body, sort_keys=True).encode()
    assert de(mirrored, value_ctx("o")) == doc
    assert (
        JSONDeserializer(None, schema_registry_client=producer_registry, keyring=keyring)(data, value_ctx("o")) == doc
    )


def test_a_property_and_a_pattern_that_both_tag_it_alike_encrypt_it_once(registry, keyring: Keyring) -> None:
    # found by review: every record with the key was refused as "several differently tagged schemas apply"
    schema = {
        "type": "object",
        "properties": {"xa": {"type": "string", "confluent:tags": ["PII"]}},
        "patternProperties": {"^x": {"type": "string", "confluent:tags": ["PII"]}},
    }
    ser = JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    data = ser({"xa": "SECRET-A", "xb": "SECRET-B"}, value_ctx())
    assert b"SECRET" not in data
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    assert de(data, value_ctx()) == {"xa": "SECRET-A", "xb": "SECRET-B"}
    differently = {
        **schema,
        "patternProperties": {"^x": {"type": "string", "contentEncoding": "base64", "confluent:tags": ["PII"]}},
    }
    with pytest.raises(EncryptionError, match="several differently tagged schemas"):
        JSONSerializer(json.dumps(differently), registry, keyring=keyring)({"xa": "aGk"}, value_ctx("other"))
