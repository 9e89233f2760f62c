"""Issue 19, part 3: record keys. ``fieldcrypt.StringKeySerializer`` / ``StringKeyDeserializer`` encrypt a string
record key deterministically under its own person's key of ``<domain>/det``: the same key gives the same bytes in
every process (same partition, compaction works), different keys give unrelated bytes, a shred of the person makes
the key read as erased, and any altered, moved or non-fieldcrypt key is refused. The Avro/JSON serdes used as key
serializers give equal bytes for equal keys when their tagged fields are deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, SerializingProducer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext, StringDeserializer
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    Keyring,
    KeyShreddedError,
    MalformedRecordError,
    StringKeyDeserializer,
    StringKeySerializer,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer


def key_ctx(topic: str = "customers") -> SerializationContext:
    return SerializationContext(topic, MessageField.KEY)


def test_equal_keys_give_equal_bytes_in_every_keyring_and_process(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser = StringKeySerializer(keyring=kr)
        a, b = ser("cust-1", key_ctx()), ser("cust-1", key_ctx())
        other = ser("cust-2", key_ctx())
    assert a == b and a != other and b"cust-1" not in a
    with Keyring(store_url, kek_uri) as later:  # a restart: the key comes from the store
        assert StringKeySerializer(keyring=later)("cust-1", key_ctx()) == a
    code = (
        "import sys, fieldcrypt; from confluent_kafka.serialization import MessageField, SerializationContext\n"
        "with fieldcrypt.Keyring(sys.argv[1], sys.argv[2]) as kr:\n"
        "    ser = fieldcrypt.StringKeySerializer(keyring=kr)\n"
        "    sys.stdout.write(ser('cust-1', SerializationContext('customers', MessageField.KEY)).decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, store_url, kek_uri], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.encode() == a


def test_the_bytes_are_base64_text_of_a_deterministic_value(keyring: Keyring) -> None:
    data = StringKeySerializer(keyring=keyring)("cust-1", key_ctx())
    assert data is not None
    text = StringDeserializer("utf_8")(data, key_ctx())  # confluent's reader: text, as tools show keys
    assert text == data.decode("ascii")
    blob = wire.decode_text(text)
    key_id, _ = wire.parse_deterministic(blob)
    assert len(blob) == len("cust-1") + 22
    assert [k.domain for k in keyring.keys() if k.key_id == key_id] == ["customers-key/det"]


@pytest.mark.parametrize("key", ["cust-1", "Zoë Ångström <zoe@example.com>", "x" * 5000, "42", " padded "])
def test_round_trip(keyring: Keyring, key: str) -> None:
    data = StringKeySerializer(keyring=keyring)(key, key_ctx())
    assert StringKeyDeserializer(keyring=keyring)(data, key_ctx()) == key


def test_tombstone_keys_stay_none_and_the_codec_is_confluents(keyring: Keyring) -> None:
    assert StringKeySerializer(keyring=keyring)(None, key_ctx()) is None
    assert StringKeyDeserializer(keyring=keyring)(None, key_ctx()) is None
    ser = StringKeySerializer("utf_16", keyring=keyring)
    data = ser("cust-1", key_ctx())
    assert data is not None and data.decode("utf_16") == StringKeySerializer(keyring=keyring)(
        "cust-1", key_ctx()
    ).decode("ascii")  # type: ignore[union-attr]
    assert StringKeyDeserializer("utf_16", keyring=keyring)(data, key_ctx()) == "cust-1"


def test_the_domain_is_the_subject_or_fieldcrypt_domain(keyring: Keyring) -> None:
    ser = StringKeySerializer(keyring=keyring)
    orders, customers = ser("cust-1", key_ctx("orders")), ser("cust-1", key_ctx("customers"))
    assert orders != customers  # one domain per topic by default: unrelated bytes
    shared = StringKeySerializer(keyring=keyring, conf={"fieldcrypt.domain": "customers"})
    a, b = shared("cust-1", key_ctx("orders")), shared("cust-1", key_ctx("payments"))
    assert a == b  # one domain for both topics: co-partitioned joins
    assert shared("cust-1") == a  # no ctx needed with fieldcrypt.domain
    de = StringKeyDeserializer(keyring=keyring, conf={"fieldcrypt.domain": "customers"})
    assert de(a) == "cust-1"
    with pytest.raises(DecryptionError):  # read as another domain's key: refused, not erased
        StringKeyDeserializer(keyring=keyring)(a, key_ctx("orders"))
    with pytest.raises(ConfigurationError, match="SerializationContext"):
        ser("cust-1")


def test_shredding_the_person_erases_the_key(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser = StringKeySerializer(keyring=kr)
        erased, kept = ser("cust-1", key_ctx()), ser("cust-2", key_ctx())
        later = ser("cust-1", key_ctx())
        report = kr.shred_person("cust-1", reason="erasure 19.3")
        assert "customers-key/det" in {r.domain for r in report.destroyed}
        key_id = wire.parse_deterministic(wire.decode_text(erased.decode()))[0]  # type: ignore[union-attr]
        de = StringKeyDeserializer(keyring=kr)
        marker = de(erased, key_ctx())
        assert marker == fieldcrypt.Erased("key", key_id) and marker == de(later, key_ctx())  # one per person
        assert de(kept, key_ctx()) == "cust-2"
        assert de.stats.erased == 1 + 1 and de.stats.erased_by_field == {"key": 2} and de.stats.records == 3
        null = StringKeyDeserializer(keyring=kr, conf={"fieldcrypt.on.erased": "null"})
        assert null(erased, key_ctx()) is None
        with pytest.raises(KeyShreddedError) as raised:
            StringKeyDeserializer(keyring=kr, conf={"fieldcrypt.on.erased": "raise"})(erased, key_ctx())
        assert "cust-1" not in str(raised.value) and raised.value.subject == "customers-key"
        # a new record of the person gets a new key: the erased key bytes are never written again
        assert ser("cust-1", key_ctx()) != erased


def test_a_consumer_without_the_domains_kek_is_denied(store_url: str, kek_uri: str, tmp_path: Any) -> None:
    other_kek = fieldcrypt.create_local_kek(tmp_path / "other.json")
    with Keyring(store_url, {"customers-key": kek_uri, "*": kek_uri}) as producer:
        data = StringKeySerializer(keyring=producer)("cust-1", key_ctx())
    with Keyring(store_url, {"analytics": other_kek}) as team:
        with pytest.raises(AccessDeniedError):
            StringKeyDeserializer(keyring=team)(data, key_ctx())
        marker = StringKeyDeserializer(keyring=team, conf={"fieldcrypt.on.denied": "marker"})(data, key_ctx())
        assert isinstance(marker, fieldcrypt.Denied)


def test_tampered_keys_are_refused(keyring: Keyring) -> None:
    data = StringKeySerializer(keyring=keyring)("cust-1", key_ctx())
    assert data is not None
    blob = wire.decode_text(data.decode())
    de = StringKeyDeserializer(keyring=keyring)
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            forged = bytearray(blob)
            forged[i] ^= bit
            with pytest.raises(DecryptionError):  # a flipped key id names an unknown key: KeyNotFoundError
                de(wire.encode_text(bytes(forged)).encode(), key_ctx())
    with pytest.raises(DecryptionError):
        de(data[:-2], key_ctx())
    with pytest.raises(DecryptionError):  # a padded spelling of the same bytes
        de(data + b"==", key_ctx())


@pytest.mark.parametrize("value", [b"s3cret-1", b"", b"\xff\xfe", b"czNjcmV0LTE" * 3])
def test_a_key_that_is_not_fieldcrypts_is_refused_without_echoing_it(keyring: Keyring, value: bytes) -> None:
    with pytest.raises(DecryptionError) as raised:
        StringKeyDeserializer(keyring=keyring)(value, key_ctx())
    assert type(raised.value) is DecryptionError and "s3cret" not in str(raised.value)
    assert "czNjcmV0" not in str(raised.value)
    with pytest.raises(MalformedRecordError):
        StringKeyDeserializer(keyring=keyring)("s3cret-1", key_ctx())  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [4242, b"s3cret-1", "", "   ", "s3cret\x00-1", "s3cret-\ud800"])
def test_keys_that_cannot_be_a_person_are_refused_without_echoing_them(keyring: Keyring, key: Any) -> None:
    ser = StringKeySerializer(keyring=keyring)
    with pytest.raises(EncryptionError) as raised:
        ser(key, key_ctx())
    assert "s3cret" not in str(raised.value) and "4242" not in str(raised.value)
    assert ser.stats.errors == 1 and ser.stats.records == 0


def test_another_persons_value_copied_into_the_key_is_refused(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    """A deterministic value of the key's domain, written in a field of cust-1's record (under cust-1's key), copied
    into a record key: it decrypts, but to a text that is not the key's person."""
    schema = {
        "type": "record",
        "name": "Customer",
        "namespace": "t",
        "fields": [
            {"name": "cid", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "ref", "type": "string", "confluent:tags": ["JOIN"]},
        ],
    }
    conf = {
        "fieldcrypt.tags": ["JOIN"],
        "fieldcrypt.deterministic.tags": ["JOIN"],
        "fieldcrypt.tag.domains": {"JOIN": "customers"},
    }
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring, conf=conf)
    plain = AvroDeserializer(registry, keyring=keyring, conf=conf)
    from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer

    blind = ConfluentAvroDeserializer(registry)
    keys = StringKeySerializer(keyring=keyring, conf={"fieldcrypt.domain": "customers"})
    reader = StringKeyDeserializer(keyring=keyring, conf={"fieldcrypt.domain": "customers"})

    # a field holding the person's own id is the same text as their record key: values join with keys
    own = blind(ser({"cid": "cust-1", "ref": "cust-1"}, value_ctx("profiles")), value_ctx("profiles"))
    assert own["ref"].encode() == keys("cust-1", key_ctx("orders"))
    # another text under cust-1's key: refused as a key
    data = ser({"cid": "cust-1", "ref": "cust-2"}, value_ctx("profiles"))
    assert plain(data, value_ctx("profiles"))["ref"] == "cust-2"
    copied = blind(data, value_ctx("profiles"))["ref"].encode()
    with pytest.raises(DecryptionError) as raised:
        reader(copied, key_ctx("orders"))
    assert type(raised.value) is DecryptionError and raised.value.field_path == "key"


def test_configuration(keyring: Keyring) -> None:
    with pytest.raises(ConfigurationError, match=r"valid keys are: fieldcrypt\.domain$"):
        StringKeySerializer(keyring=keyring, conf={"fieldcrypt.on.erased": "null"})
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.domain, fieldcrypt\.on\.denied, fieldcrypt\.on\.erased"):
        StringKeyDeserializer(keyring=keyring, conf={"fieldcrypt.tags": ["PII"]})
    with pytest.raises(ConfigurationError, match="merging all erased persons"):
        StringKeyDeserializer(keyring=keyring, conf={"fieldcrypt.on.erased": "placeholder"})
    with pytest.raises(ConfigurationError, match="codec"):
        StringKeySerializer("no_such_codec", keyring=keyring)
    with pytest.raises(ConfigurationError, match="keyring"):
        StringKeySerializer(keyring="sqlite:///keys.db")
    with pytest.raises(ConfigurationError, match="reserved"):
        StringKeySerializer(keyring=keyring, conf={"fieldcrypt.domain": "customers/det"})
    with pytest.raises(ConfigurationError, match="non-empty"):
        StringKeySerializer(keyring=keyring, conf={"fieldcrypt.domain": " "})


def test_stats(keyring: Keyring) -> None:
    ser, de = StringKeySerializer(keyring=keyring), StringKeyDeserializer(keyring=keyring)
    for i in range(3):
        de(ser(f"cust-{i % 2}", key_ctx()), key_ctx())
    assert ser.stats.records == 3 and ser.stats.values_encrypted == 3 and ser.stats.key_lookups == 3
    assert ser.stats.key_cache_misses == 2  # one per person; the third is cached
    assert de.stats.records == 3 and de.stats.values_decrypted == 3 and de.stats.erased == 0


# -- Avro-framed keys: the existing serializer, used as the key serializer ---------------------------------------
KEY_SCHEMA = {
    "type": "record",
    "name": "CustomerKey",
    "namespace": "t",
    "fields": [
        {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
    ],
}
DET = {"fieldcrypt.deterministic.tags": ["PII"]}


JSON_KEY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "CustomerKey",
    "type": "object",
    "properties": {
        "customerId": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"type": "string", "confluent:tags": ["PII"]},
    },
    "required": ["customerId", "email"],
    "additionalProperties": False,
}


def _key_serdes(fmt: str, registry: SchemaRegistryClient, keyring: Keyring, conf: Any) -> tuple[Any, Any]:
    """A key serializer and deserializer of ``fmt`` (Avro, or its JSON Schema twin) for the customer key schema."""
    if fmt == "avro":
        return (
            AvroSerializer(registry, json.dumps(KEY_SCHEMA), keyring=keyring, conf=conf),
            AvroDeserializer(registry, keyring=keyring, conf=conf),
        )
    return (
        JSONSerializer(json.dumps(JSON_KEY_SCHEMA), registry, keyring=keyring, conf=conf),
        JSONDeserializer(None, schema_registry_client=registry, keyring=keyring, conf=conf),
    )


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_a_framed_key_with_deterministic_fields_gives_equal_bytes(
    fmt: str, registry: SchemaRegistryClient, keyring: Keyring
) -> None:
    """An Avro- or JSON-Schema-framed key: equal keys are equal bytes (partitioning, compaction), the key holds no
    plaintext of its tagged field, and a shred of the person makes it read as erased."""
    ser, de = _key_serdes(fmt, registry, keyring, DET)
    key = {"customerId": "cust-1", "email": "jane@example.com"}
    a, b = ser(key, key_ctx()), ser(dict(key), key_ctx())
    assert a == b and b"jane@example.com" not in a
    assert ser({**key, "customerId": "cust-2"}, key_ctx()) != a
    assert registry.get_latest_version("customers-key").schema_id is not None  # the key subject
    assert de(a, key_ctx()) == key
    # without deterministic tags the key is randomized: equal keys differ (no partitioning, no compaction)
    randomized, _ = _key_serdes(fmt, registry, keyring, None)
    assert randomized(key, key_ctx("other")) != randomized(key, key_ctx("other"))
    keyring.shred_person("cust-1", reason="erasure 19.3")
    keyring.clear_cache()
    assert de(a, key_ctx())["email"] == "<erased>"


def test_a_bare_string_avro_key_uses_the_domain_wide_key(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    """No data-subject field: one deterministic key for the whole domain, which no person's shred reaches (why
    StringKeySerializer is the record-key serializer for per-person erasure)."""
    schema = json.dumps({"type": "string", "confluent:tags": ["PII"]})
    ser = AvroSerializer(registry, schema, keyring=keyring, conf=DET)
    a = ser("cust-1", key_ctx())
    assert a == ser("cust-1", key_ctx()) and b"cust-1" not in a
    assert {(k.domain, k.person) for k in keyring.keys() if k.domain.endswith("/det")} == {("customers-key/det", None)}


# -- the real broker -------------------------------------------------------------------------------------------
@pytest.mark.broker
def test_the_same_key_goes_to_the_same_partition(broker: Any, keyring: Keyring) -> None:
    topic = f"customers-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=3)
    producer = SerializingProducer(
        {"bootstrap.servers": broker.bootstrap_servers, "key.serializer": StringKeySerializer(keyring=keyring)}
    )
    sent: list[tuple[str, int]] = []
    customers = [f"cust-{i}" for i in range(12)]
    for round_ in range(3):
        for c in customers:
            producer.produce(
                topic,
                key=c,
                value=f"{c} #{round_}".encode(),
                on_delivery=lambda err, msg, c=c: sent.append((c, msg.partition())),
            )
    assert producer.flush(30) == 0
    by_key: dict[str, set[int]] = {}
    for c, p in sent:
        by_key.setdefault(c, set()).add(p)
    assert len(sent) == 36 and all(len(ps) == 1 for ps in by_key.values())
    assert len({p for ps in by_key.values() for p in ps}) > 1  # the keys spread over the partitions

    de = StringKeyDeserializer(keyring=keyring)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": uuid.uuid4().hex})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    read: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while len(read) < 36 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            assert b"cust" not in msg.key()
            read.append((de(msg.key(), key_ctx(topic)), msg.partition()))
    consumer.close()
    assert sorted(read) == sorted(sent)


def test_found_by_review_a_codec_that_is_no_text_encoding_and_an_invisible_key_are_refused(tmp_path: Path) -> None:
    from fieldcrypt import ConfigurationError, EncryptionError, Keyring, StringKeySerializer, create_key_store

    store = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    with Keyring(store, fieldcrypt.create_local_kek(tmp_path / "kek.json")) as kr:
        for codec in ("rot13", "base64", "hex"):
            with pytest.raises(ConfigurationError, match="text encoding"):
                StringKeySerializer(codec, keyring=kr, conf={"fieldcrypt.domain": "customers"})
        ser = StringKeySerializer(keyring=kr, conf={"fieldcrypt.domain": "customers"})
        for invisible in ("\u200b", "\ufeff", "\u200b \u2060"):
            with pytest.raises(EncryptionError, match="blank"):
                ser(invisible)
