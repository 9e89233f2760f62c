"""The Avro serde as producers and consumers use it: round trip, nothing readable on the wire, no mutation."""

from __future__ import annotations

import copy
import io
import json

import fastavro
import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentAvroSerializer
from conftest import avsc, customer, ids_of, load_schema, order, value_ctx

from fieldcrypt import ConfigurationError, Keyring, PolicyError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

PLAINTEXTS = ["person1@example.com", "001-45-6789", "Person Number 1"]


def test_round_trip_customer(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    for i in range(20):
        rec = customer(i)
        assert de(ser(rec, value_ctx()), value_ctx()) == rec


def test_round_trip_nested_order(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("order.avsc"), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    for i in range(5):
        rec = order(i)
        assert de(ser(rec, value_ctx()), value_ctx()) == rec


def test_no_plaintext_on_the_wire_and_plain_consumer_reads_ciphertext(registry, keyring: Keyring) -> None:
    rec = customer(1)
    data = ser_bytes = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)(rec, value_ctx())
    for secret in PLAINTEXTS:
        assert secret.encode() not in data
    seen = ConfluentAvroDeserializer(registry)(ser_bytes, value_ctx())
    # schema-valid, untagged fields untouched, tagged fields hold ciphertext (text, not the value)
    assert fastavro.validate(seen, fastavro.parse_schema(avsc("customer_event.avsc")), raise_errors=False)
    for field in ("customerId", "purchaseAmount", "currency", "items", "country", "timestamp"):
        assert seen[field] == rec[field]
    for field in ("email", "ssn", "fullName"):
        assert isinstance(seen[field], str) and seen[field] != rec[field]
        assert rec[field] not in seen[field]


def test_nested_plaintext_absent(registry, keyring: Keyring) -> None:
    rec = order(3)
    data = AvroSerializer(registry, load_schema("order.avsc"), keyring=keyring)(rec, value_ctx())
    secrets = ["Zoë Ångström 3", "Hauptstraße 3", "Berlin", "Old Road 3", "Bonn", "Köln", "w3@corp.example", "10003"]
    for secret in [*secrets, "h3@home.example"]:
        assert secret.encode() not in data
    assert rec["signature"] not in data
    assert b"gold" in data  # untagged values are written as they are


def test_framing_matches_confluent(registry, keyring: Keyring) -> None:
    schema = load_schema("customer_event.avsc")
    ours = AvroSerializer(registry, schema, keyring=keyring)(customer(1), value_ctx())
    theirs = ConfluentAvroSerializer(registry, schema)(customer(1), value_ctx())
    assert ours[:5] == theirs[:5]  # magic byte 0 + the same registered schema id
    assert ours[0] == 0
    schema_id = int.from_bytes(ours[1:5], "big")
    assert registry.get_latest_version("orders-value").schema_id == schema_id


def test_caller_record_is_never_mutated(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("order.avsc"), keyring=keyring)
    rec = order(2)
    before = copy.deepcopy(rec)
    ser(rec, value_ctx())
    assert rec == before
    rec2 = customer(2)
    before2 = copy.deepcopy(rec2)
    AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)(rec2, value_ctx("other"))
    assert rec2 == before2


def test_to_dict_and_from_dict(registry, keyring: Keyring) -> None:
    class Customer:
        def __init__(self, d: dict) -> None:
            self.__dict__.update(d)

    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), lambda o, ctx: dict(o.__dict__), keyring=keyring)
    de = AvroDeserializer(registry, from_dict=lambda d, ctx: Customer(d), keyring=keyring)
    out = de(ser(Customer(customer(4)), value_ctx()), value_ctx())
    assert isinstance(out, Customer) and out.email == "person4@example.com"


def test_none_is_none(registry, keyring: Keyring) -> None:
    assert AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)(None, value_ctx()) is None
    assert AvroDeserializer(registry, keyring=keyring)(None, value_ctx()) is None


def test_same_value_encrypts_differently_each_time(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    assert ser(customer(1), value_ctx()) != ser(customer(1), value_ctx())


def test_per_person_keys_are_distinct(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    for i in range(3):
        ser(customer(i), value_ctx())
    keys = keyring.keys("orders-value")
    assert ids_of(keyring, keys, ["cust-0", "cust-1", "cust-2"]) == ["cust-0", "cust-1", "cust-2"]
    assert len({k.key_id for k in keys}) == 3
    assert len({k.wrapped for k in keys}) == 3


def test_domain_scope_without_data_subject(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][0].pop("confluent:tags")
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    for i in range(3):
        assert de(ser(customer(i), value_ctx("t")), value_ctx("t")) == customer(i)
    [key] = keyring.keys("t-value")
    assert key.person is None


def test_named_domain_shared_across_topics(registry, keyring: Keyring) -> None:
    conf = {"fieldcrypt.tag.domains": {"PII": "customers"}}
    schema = load_schema("customer_event.avsc")
    a = AvroSerializer(registry, schema, conf=conf, keyring=keyring)
    de = AvroDeserializer(registry, conf=conf, keyring=keyring)
    for topic in ("t1", "t2"):
        assert de(a(customer(1), value_ctx(topic)), value_ctx(topic)) == customer(1)
    assert [k.domain for k in keyring.keys()] == ["customers"]


def test_use_latest_version_and_reader_schema(registry, keyring: Keyring) -> None:
    schema = load_schema("customer_event.avsc")
    AvroSerializer(registry, schema, keyring=keyring)(customer(1), value_ctx())
    ser = AvroSerializer(
        registry, schema, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    data = ser(customer(2), value_ctx())
    reader = avsc("customer_event.avsc")
    reader["fields"] = [f for f in reader["fields"] if f["name"] in ("customerId", "email", "items")]
    de = AvroDeserializer(registry, json.dumps(reader), keyring=keyring)
    assert de(data, value_ctx()) == {"customerId": "cust-2", "email": "person2@example.com", "items": 2}


def test_unknown_conf_key_lists_valid_keys(registry, keyring: Keyring) -> None:
    with pytest.raises(ConfigurationError) as err:
        AvroSerializer(
            registry, load_schema("customer_event.avsc"), conf={"auto.register.schema": True}, keyring=keyring
        )
    assert "auto.register.schemas" in str(err.value) and "fieldcrypt.tags" in str(err.value)
    with pytest.raises(ValueError):  # still a ValueError, as confluent's is
        AvroDeserializer(registry, conf={"nope": 1}, keyring=keyring)


def test_keyring_is_required(registry) -> None:
    with pytest.raises(TypeError):
        AvroSerializer(registry, load_schema("customer_event.avsc"))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        AvroSerializer(registry, load_schema("customer_event.avsc"), keyring="sqlite:///x.db")  # type: ignore[arg-type]


def test_tag_on_unsupported_type_rejected_at_construction(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][6]["confluent:tags"] = ["PII"]  # items: int
    with pytest.raises(PolicyError) as err:
        AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    assert "example.shop.CustomerEvent.items" in str(err.value) and "int" in str(err.value)


def test_other_tags_are_not_encrypted_unless_configured(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][5]["confluent:tags"] = ["FINANCE"]  # currency
    rec = {**customer(1), "currency": "EUR-finance-tagged"}  # long enough not to occur in ciphertext by chance
    with pytest.raises(PolicyError, match="FINANCE"):  # a tag nobody decided is refused, never ignored
        AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    clear = {"fieldcrypt.plaintext.tags": ["FINANCE"]}
    data = AvroSerializer(registry, json.dumps(schema), conf=clear, keyring=keyring)(rec, value_ctx())
    assert b"EUR-finance-tagged" in data
    conf = {"fieldcrypt.tags": ["PII", "FINANCE"]}
    data = AvroSerializer(registry, json.dumps(schema), conf=conf, keyring=keyring)(rec, value_ctx("t2"))
    assert b"EUR-finance-tagged" not in data
    assert AvroDeserializer(registry, conf=conf, keyring=keyring)(data, value_ctx("t2")) == rec


def test_missing_tagged_field_with_default_is_encrypted(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][3]["default"] = "anonymous-default"
    rec = customer(1)
    del rec["fullName"]
    data = AvroSerializer(registry, json.dumps(schema), keyring=keyring)(rec, value_ctx())
    assert b"anonymous-default" not in data
    out = AvroDeserializer(registry, keyring=keyring)(data, value_ctx())
    assert out["fullName"] == "anonymous-default"


def test_untagged_schema_writes_exactly_what_confluent_writes(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    for f in schema["fields"]:
        f.pop("confluent:tags", None)
    text = json.dumps(schema)
    ours = AvroSerializer(registry, text, keyring=keyring)(customer(1), value_ctx())
    theirs = ConfluentAvroSerializer(registry, text)(customer(1), value_ctx())
    assert ours == theirs
    assert keyring.keys() == []


def test_payload_is_plain_avro(registry, keyring: Keyring) -> None:
    data = AvroSerializer(registry, load_schema("order.avsc"), keyring=keyring)(order(1), value_ctx())
    parsed = fastavro.parse_schema(avsc("order.avsc"))
    rec = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, None)
    assert rec["orderId"] == "o-1" and rec["customer"]["loyaltyTier"] == "gold"


def test_deserializer_use_latest_version(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    de = AvroDeserializer(registry, conf={"use.latest.version": True}, keyring=keyring)
    for i in range(3):
        assert de(ser(customer(i), value_ctx()), value_ctx()) == customer(i)


def test_one_serde_shared_by_threads(registry, store_url: str, kek_uri: str) -> None:
    """Producers share one serializer across threads: every record round-trips, concurrent first use of a person
    creates exactly one active key, and rotations forced by a small encryption cap happen safely under load."""
    from concurrent.futures import ThreadPoolExecutor

    from fieldcrypt import RotationPolicy

    with Keyring(store_url, kek_uri, rotation=RotationPolicy(max_encryptions=60, lease=7)) as keyring:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
        de = AvroDeserializer(registry, keyring=keyring)

        def work(t: int) -> list[bool]:
            recs = [customer(i % 8) for i in range(t, t + 120)]
            return [de(ser(r, value_ctx()), value_ctx()) == r for r in recs]

        with ThreadPoolExecutor(6) as pool:
            results = [ok for batch in pool.map(work, range(6)) for ok in batch]
        assert len(results) == 720 and all(results)
        stored = keyring.keys()
        active = [k for k in stored if k.state == "active"]
        people = [f"cust-{i}" for i in range(8)]
        assert ids_of(keyring, active, people) == people  # one active key per person
        assert len(stored) > len(active)  # the cap forced rotations; retired versions still decrypt (checked above)
