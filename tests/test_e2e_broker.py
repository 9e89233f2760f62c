"""End to end through a real broker (Tansu, separate process): SerializingProducer -> DeserializingConsumer."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import DeserializingConsumer, SerializingProducer, TopicPartition
from confluent_kafka.error import ValueSerializationError
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer
from conftest import customer, load_schema
from test_fail_closed import DownStore

from fieldcrypt import Keyring
from fieldcrypt._testing.broker import CONSUMER_DEFAULTS
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

pytestmark = pytest.mark.broker
N = 300


def consume_all(broker: Any, topic: str, value_deserializer: Any, expected: int, timeout: float = 60) -> list[Any]:
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": value_deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value()))
        # nothing beyond what was produced
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None
    finally:
        consumer.close()
    return out


def test_produce_and_consume_through_a_real_broker(broker, registry, keyring: Keyring) -> None:
    topic = f"customers-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    producer = SerializingProducer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "key.serializer": StringSerializer("utf_8"),
            "value.serializer": AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring),
        }
    )
    sent = [customer(i) for i in range(N)]
    delivered: list[Any] = []
    for rec in sent:
        producer.produce(topic, key=rec["customerId"], value=rec, on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0
    assert delivered == [None] * N

    got = consume_all(broker, topic, AvroDeserializer(registry, keyring=keyring), N)
    assert len(got) == N
    assert sorted((k, v["email"]) for k, v in got) == sorted((r["customerId"], r["email"]) for r in sent)
    assert [v for _, v in got] == sent  # one partition: order kept

    # a consumer without keys reads schema-valid records whose tagged fields hold ciphertext
    blind = consume_all(broker, topic, ConfluentAvroDeserializer(registry), N)
    assert len(blind) == N
    for (_, seen), rec in zip(blind, sent, strict=True):
        assert seen["customerId"] == rec["customerId"] and seen["purchaseAmount"] == rec["purchaseAmount"]
        assert seen["email"] != rec["email"] and rec["email"] not in seen["email"]


def test_fieldcrypt_as_key_serializer(broker, registry, keyring: Keyring) -> None:
    topic = f"keyed-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    key_schema = '{"type": "record", "name": "Key", "fields": [{"name": "id", "type": "string"}]}'
    producer = SerializingProducer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "key.serializer": AvroSerializer(registry, key_schema, keyring=keyring),
            "value.serializer": AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring),
        }
    )
    producer.produce(topic, key={"id": "k1"}, value=customer(1))
    assert producer.flush(30) == 0
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "key.deserializer": AvroDeserializer(registry, keyring=keyring),
            "value.deserializer": AvroDeserializer(registry, keyring=keyring),
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    deadline, msg = time.monotonic() + 60, None
    while msg is None and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
    consumer.close()
    assert msg is not None and msg.key() == {"id": "k1"} and msg.value() == customer(1)


def test_fail_closed_nothing_reaches_the_broker(broker, registry, kek_uri: str) -> None:
    topic = f"closed-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    producer = SerializingProducer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "value.serializer": AvroSerializer(
                registry, load_schema("customer_event.avsc"), keyring=Keyring(DownStore(), kek_uri)
            ),
        }
    )
    for i in range(5):
        with pytest.raises(ValueSerializationError):
            producer.produce(topic, value=customer(i))
    assert producer.flush(10) == 0
    from confluent_kafka import Consumer

    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": uuid.uuid4().hex})
    low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()
    assert high - low == 0
