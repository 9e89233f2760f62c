"""fieldcrypt end to end: a producer encrypts tagged fields, an authorized consumer decrypts them, and a consumer
without keys sees ciphertext. Everything runs here: a real Kafka-protocol broker (Tansu) in its own process,
confluent's in-process schema registry (or yours: --schema-registry URL), a SQLite key store and a local KEK.

    python examples/end_to_end.py [--records 5] [--schema-registry http://localhost:8081] [--state DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer

import fieldcrypt
from fieldcrypt._testing.broker import CONSUMER_DEFAULTS, Broker
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA = (SCHEMAS / "customer_event.avsc").read_text()
JSON_SCHEMA = (SCHEMAS / "customer_event.schema.json").read_text()


def event(i: int) -> dict[str, Any]:
    return {
        "customerId": f"cust-{i:03d}",
        "email": f"jane.doe{i}@example.com",
        "ssn": f"078-05-{1120 + i:04d}" if i % 2 == 0 else None,
        "fullName": ["Jane Doe", "Zoë Ångström", "李小龙"][i % 3],
        "purchaseAmount": round(19.99 * (i + 1), 2),
        "currency": "EUR",
        "items": i + 1,
        "country": "DE",
        "timestamp": 1_710_498_600_000 + i,
    }


def consume(bootstrap: str, topic: str, deserializer: Any, count: int) -> list[Any]:
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    values: list[Any] = []
    deadline = time.monotonic() + 60
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    consumer.close()
    return values


def show(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {title}")
    for row in rows:
        print(
            json.dumps(
                {k: row[k] for k in ("customerId", "email", "ssn", "fullName", "purchaseAmount")}, ensure_ascii=False
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5)
    ap.add_argument("--schema-registry", default=None, help="URL of a Confluent-compatible registry")
    ap.add_argument("--state", default=None, help="directory for the KEK file and key store (default: a temp dir)")
    args = ap.parse_args()

    state = Path(args.state or tempfile.mkdtemp(prefix="fieldcrypt-demo-"))
    state.mkdir(parents=True, exist_ok=True)
    kek_file = state / "kek.json"
    # Creating a KEK is an explicit act: a Keyring never creates one behind your back.
    kek_uri = f"local-kek://{kek_file}" if kek_file.exists() else fieldcrypt.create_local_kek(kek_file)
    # So is creating the key store (`fieldcrypt keys init --store URL`): opening a missing store is an error, never a
    # new empty one. create_key_store is idempotent: a --state directory from an earlier run keeps its keys.
    store_url = fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}")
    keyring = fieldcrypt.Keyring(store_url, kek_uri)
    registry = SchemaRegistryClient.new_client({"url": args.schema_registry or f"mock://demo-{uuid.uuid4().hex}"})
    topic = f"customer-events-{uuid.uuid4().hex[:6]}"

    print(f"key store: {keyring.store.url}\nKEK:       {kek_uri}\nregistry:  {args.schema_registry or 'in-process'}")
    formats = [
        (
            "Avro",
            AvroSerializer(registry, SCHEMA, keyring=keyring),
            AvroDeserializer(registry, keyring=keyring),
            PlainAvroDeserializer(registry),
        ),
        (
            "JSON Schema",
            JSONSerializer(JSON_SCHEMA, registry, keyring=keyring),
            JSONDeserializer(None, schema_registry_client=registry, keyring=keyring),
            PlainJSONDeserializer(None, schema_registry_client=registry),
        ),
    ]
    ok = True
    sent = [event(i) for i in range(args.records)]
    with Broker() as broker:
        print(f"broker:    Tansu at {broker.bootstrap_servers}")
        for name, serializer, deserializer, plain in formats:
            fmt_topic = f"{topic}-{name.split()[0].lower()}"
            broker.create_topic(fmt_topic)
            producer = SerializingProducer(
                {
                    "bootstrap.servers": broker.bootstrap_servers,
                    "key.serializer": StringSerializer("utf_8"),
                    "value.serializer": serializer,
                }
            )
            for rec in sent:
                producer.produce(fmt_topic, key=rec["customerId"], value=rec)
            producer.flush(30)
            producer.close()  # now: confluent-kafka 2.16 keeps the client alive as long as its serializers
            print(f"\n######## {name}: topic {fmt_topic}")
            show("producer sent", sent)
            authorized = consume(broker.bootstrap_servers, fmt_topic, deserializer, len(sent))
            show(f"authorized consumer read (fieldcrypt {type(deserializer).__name__} with the keyring)", authorized)
            blind = consume(broker.bootstrap_servers, fmt_topic, plain, len(sent))
            show(f"consumer without keys read (confluent's plain {type(plain).__name__})", blind)
            good = (
                authorized == sent
                and len(blind) == len(sent)
                and all(b["email"] != s["email"] for b, s in zip(blind, sent, strict=True))
            )
            print(f"{name}: {len(sent)} produced, {len(authorized)} decrypted, {len(blind)} read without keys")
            ok = ok and good

    keys = keyring.keys()
    print(f"\n{len(keys)} data keys (one per person and subject) in {keyring.store.url}")
    print("OK" if ok else "MISMATCH")
    keyring.close()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
