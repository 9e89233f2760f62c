"""fieldcrypt on Protobuf, end to end: confluent's producer and consumer with fieldcrypt's Protobuf twins, against a
real Kafka-protocol broker (Tansu) and a registry over HTTP.

    python examples/protobuf_end_to_end.py [--records 10]

The schema is examples/protobuf/customer.proto: fields tagged with confluent's own field option
``[(confluent.field_meta).tags = "PII"]``, the customer id tagged ``DATA_SUBJECT_ID`` (per-person keys). What it
shows, in order:

1. a producer (``SerializingProducer``) encrypts the tagged fields: a string, an ``optional`` string, a repeated
   string, a map's values, a nested message's field, bytes and a ``oneof`` member; the caller's messages are left
   as they were;
2. a consumer with the keyring reads plaintext; confluent's own ``ProtobufDeserializer``, without keys, reads the
   same records with ciphertext in the tagged fields (the untagged ones stay readable);
3. the asyncio twin (``AsyncProtobufDeserializer``) reads them too, from one event loop;
4. one person (c-000) is shredded, and the consumer then reads their tagged values as erased (an ``optional``
   field as unset, others as ``<erased>``) while everyone else's still decrypt.

Everything runs here: the broker in its own process, the development registry in a thread, a SQLite key store and
a local KEK in a temporary directory (``pip install 'fieldcrypt[broker]'`` brings the broker).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as PlainProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

import fieldcrypt
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, RegistryServer, create_topic
from fieldcrypt.protobuf import AsyncProtobufDeserializer, ProtobufDeserializer, ProtobufSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent / "protobuf"))
import customer_pb2  # (generated from examples/protobuf/customer.proto)

CONF = {"use.deprecated.format": False}


def customer(i: int) -> Any:
    c = customer_pb2.Customer(
        id=f"c-{i:03d}",
        email=f"jane.doe{i}@example.com",
        name=["Jane Doe", "Zoë Ångström", "李小龙"][i % 3],
        aliases=["jd", f"jane{i}"],
        photo=bytes([0x89, 0x50, 0x4E, 0x47, i % 256]),
        pager=f"555-01{i:02d}",
        country="DE",
        loyalty_points=10 * i,
    )
    if i % 2 == 0:
        c.phone = f"+49 30 1234 {i:04d}"
    c.contacts["work"] = f"jane{i}@work.example"
    c.address.street = f"{i} Hauptstraße"
    c.address.city = "Berlin"
    return c


def consume(bootstrap: str, topic: str, deserializer: Any, count: int) -> list[Any]:
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"proto-demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "value.deserializer": deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    values: list[Any] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(str(msg.error()))
            values.append(msg.value())
    finally:
        consumer.close()
    if len(values) < count:
        raise RuntimeError(f"read {len(values)} of {count} records within 60 s")
    return sorted(values, key=lambda v: v.id)


async def read_async(registry_url: str, keyring: Any, topic: str, payloads: list[bytes]) -> list[Any]:
    registry = AsyncSchemaRegistryClient({"url": registry_url})
    reader = await AsyncProtobufDeserializer(customer_pb2.Customer, CONF, registry, keyring=keyring)
    ctx = SerializationContext(topic, MessageField.VALUE)
    return list(await asyncio.gather(*(reader(p, ctx) for p in payloads)))


def run(bootstrap: str, registry_url: str, state: Path, records: int) -> int:
    keyring = fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}"), fieldcrypt.create_local_kek(state / "kek.json")
    )
    topic = f"customers-proto-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    registry = SchemaRegistryClient({"url": registry_url})
    serializer = ProtobufSerializer(customer_pb2.Customer, registry, CONF, keyring=keyring)
    producer = SerializingProducer(
        {"bootstrap.servers": bootstrap, "key.serializer": StringSerializer(), "value.serializer": serializer}
    )

    print(f"== 1. {records} customers produced; tagged fields encrypted, the caller's messages unchanged")
    sent = [customer(i) for i in range(records)]
    before = [m.SerializeToString() for m in sent]
    for m in sent:
        producer.produce(topic, key=m.id, value=m)
    producer.flush()
    del producer  # (closed before the broker stops)
    assert [m.SerializeToString() for m in sent] == before
    print(f"   {serializer.stats.values} values encrypted in {serializer.stats.records} records")

    print("== 2. read back: with the keyring, and with confluent's own deserializer (no keys)")
    readable = consume(
        bootstrap, topic, ProtobufDeserializer(customer_pb2.Customer, CONF, registry, keyring=keyring), records
    )
    plain = consume(bootstrap, topic, PlainProtobufDeserializer(customer_pb2.Customer, CONF, registry), records)
    for mine, theirs in list(zip(readable, plain, strict=True))[:3]:
        print(f"   {mine.id}: {mine.email:<26} | without keys: {theirs.email[:26]}...  (country {theirs.country})")
    assert readable == sent
    assert all(p.email != m.email and p.address.street != m.address.street for p, m in zip(plain, sent, strict=True))
    assert [p.loyalty_points for p in plain] == [m.loyalty_points for m in sent]

    print("== 3. the asyncio twin reads them too, all at once from one event loop")
    ctx = SerializationContext(topic, MessageField.VALUE)
    payloads = [serializer(m, ctx) for m in sent]
    assert asyncio.run(read_async(registry_url, keyring, topic, payloads)) == sent  # type: ignore[arg-type]
    print(f"   {len(payloads)} records read by AsyncProtobufDeserializer")

    print("== 4. c-000 shredded: their tagged values read as erased, everyone else's still decrypt")
    keyring.shred_person("c-000", reason="protobuf demo: erasure request")
    after = consume(
        bootstrap, topic, ProtobufDeserializer(customer_pb2.Customer, CONF, registry, keyring=keyring), records
    )
    first = after[0]
    print(f"   c-000: email={first.email!r} phone set={first.HasField('phone')} street={first.address.street!r}")
    print(f"   c-001: email={after[1].email!r}")
    assert first.email == "<erased>" and not first.HasField("phone") and first.country == "DE"
    assert after[1] == sent[1]
    keyring.close()
    print("OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=10, help="customers to produce (default 10)")
    args = parser.parse_args(argv)
    if args.records < 2:
        parser.error("--records must be at least 2")
    with tempfile.TemporaryDirectory() as tmp, RegistryServer() as registry, Broker() as broker:
        return run(broker.bootstrap_servers, registry.url, Path(tmp), args.records)


if __name__ == "__main__":
    sys.exit(main())
