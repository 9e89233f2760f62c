"""The Protobuf twins, measured beside confluent's plain Protobuf serdes, in one run.

    python bench/bench_protobuf.py [--records 20000] [--people 2000] [--concurrency 200] [--store-latency-ms 2]

Part 1, throughput with warm keys: a message of 9 fields, 3 of them tagged strings (as bench_serde.py's Avro
record), one key per domain:
  plain             confluent's ProtobufSerializer / ProtobufDeserializer, no encryption
  fieldcrypt        fieldcrypt's Protobuf twins
  plain-async       confluent's AsyncProtobufSerializer / AsyncProtobufDeserializer, one record awaited at a time
  fieldcrypt-async  fieldcrypt's asyncio twins, the same way

Part 2, the asyncio twin under concurrency with cold keys: --people new data subjects (per-person keys),
--concurrency serialize calls in flight on one event loop, a key store whose every call takes --store-latency-ms.
A ticker task measures the longest time the loop went without running it:
  fieldcrypt-async  the asyncio twin: cold lookups run on the keyring's async door
  sync-on-loop      the sync twin called from a coroutine: every cold lookup blocks the loop

Prints one JSON line per case, then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from typing import Any

from bench_async import _rate, _sync_rate, cold_keys
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, SchemaRegistryClient
from confluent_kafka.schema_registry.confluent import meta_pb2
from confluent_kafka.schema_registry.protobuf import AsyncProtobufDeserializer as PlainAsyncDeserializer
from confluent_kafka.schema_registry.protobuf import AsyncProtobufSerializer as PlainAsyncSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as PlainDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as PlainSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

import fieldcrypt
from fieldcrypt.protobuf import (
    AsyncProtobufDeserializer,
    AsyncProtobufSerializer,
    ProtobufDeserializer,
    ProtobufSerializer,
)

CTX = SerializationContext("bench-protobuf", MessageField.VALUE)
CONF = {"use.deprecated.format": False}
F = descriptor_pb2.FieldDescriptorProto
#: (name, type, tags): bench_serde.py's record as a message
FIELDS = [
    ("customer_id", F.TYPE_STRING, None),
    ("email", F.TYPE_STRING, "PII"),
    ("full_name", F.TYPE_STRING, "PII"),
    ("ssn", F.TYPE_STRING, "PII"),
    ("purchase_amount", F.TYPE_DOUBLE, None),
    ("currency", F.TYPE_STRING, None),
    ("items", F.TYPE_INT32, None),
    ("country", F.TYPE_STRING, None),
    ("timestamp", F.TYPE_INT64, None),
]


def message_class(subject_tag: bool) -> Any:
    """The bench message, built in a fresh pool (no protoc needed); ``subject_tag``: customer_id is the data-subject
    id (per-person keys)."""
    f = descriptor_pb2.FileDescriptorProto(name=f"bench_{uuid.uuid4().hex[:8]}.proto", package="bench", syntax="proto3")
    f.dependency.append("confluent/meta.proto")
    m = f.message_type.add(name="Event")
    for number, (name, kind, tag) in enumerate(FIELDS, start=1):
        fd = m.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
        tag = "DATA_SUBJECT_ID" if (name == "customer_id" and subject_tag) else tag
        if tag is not None:
            fd.options.Extensions[meta_pb2.field_meta].tags.append(tag)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(meta_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(f)
    return GetMessageClass(pool.FindMessageTypeByName("bench.Event"))


def event(cls: Any, i: int) -> Any:
    return cls(
        customer_id=f"cust-{i}",
        email=f"person{i}@example.com",
        full_name="Jane Q. Doe",
        ssn=f"078-05-{1120 + i % 1000:04d}",
        purchase_amount=19.99 + i,
        currency="EUR",
        items=1 + i % 4,
        country="DE",
        timestamp=1_710_498_600_000 + i,
    )


async def throughput(cls: Any, records: list[Any], keyring: Any, repeat: int) -> dict[str, dict[str, Any]]:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    rows: dict[str, dict[str, Any]] = {}
    cases = (
        ("plain", PlainSerializer(cls, registry, CONF), PlainDeserializer(cls, CONF, registry)),
        (
            "fieldcrypt",
            ProtobufSerializer(cls, registry, CONF, keyring=keyring),
            ProtobufDeserializer(cls, CONF, registry, keyring=keyring),
        ),
    )
    for name, s, d in cases:
        s(records[0], CTX)  # registered, keys made: warm
        ser_rps, framed = await _sync_rate(lambda r, s=s: s(r, CTX), records, repeat)
        de_rps, back = await _sync_rate(lambda b, d=d: d(b, CTX), framed, repeat)
        assert back[-1].email == records[-1].email
        rows[name] = {"case": f"protobuf {name}", "ser_rps": round(ser_rps), "de_rps": round(de_rps)}
        print(json.dumps(rows[name]), flush=True)
    return rows


async def throughput_async(cls: Any, records: list[Any], keyring: Any, repeat: int) -> dict[str, dict[str, Any]]:
    registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    rows: dict[str, dict[str, Any]] = {}
    cases = (
        (
            "plain-async",
            await PlainAsyncSerializer(cls, registry, CONF),
            await PlainAsyncDeserializer(cls, CONF, registry),
        ),
        (
            "fieldcrypt-async",
            await AsyncProtobufSerializer(cls, registry, CONF, keyring=keyring),
            await AsyncProtobufDeserializer(cls, CONF, registry, keyring=keyring),
        ),
    )
    for name, s, d in cases:
        await s(records[0], CTX)
        ser_rps, framed = await _rate(lambda r, s=s: s(r, CTX), records, repeat)
        de_rps, back = await _rate(lambda b, d=d: d(b, CTX), framed, repeat)
        assert back[-1].email == records[-1].email
        rows[name] = {"case": f"protobuf {name}", "ser_rps": round(ser_rps), "de_rps": round(de_rps)}
        print(json.dumps(rows[name]), flush=True)
    return rows


async def concurrency(tmp: str, people: int, inflight: int, latency: float) -> dict[str, dict[str, Any]]:
    cls = message_class(subject_tag=True)

    async def make(registry: Any, keyring: Any) -> Any:
        return await AsyncProtobufSerializer(cls, registry, CONF, keyring=keyring)

    return await cold_keys(tmp, people, inflight, latency, make, lambda i: event(cls, i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--store-latency-ms", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-protobuf-")
    keyring = fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db"),
        fieldcrypt.create_local_kek(os.path.join(tmp, "k.json")),
    )
    cls = message_class(subject_tag=False)
    records = [event(cls, i) for i in range(args.records)]
    print(f"# {args.records} records, best of {args.repeat}; python {sys.version.split()[0]}", flush=True)
    sync_rows = asyncio.run(throughput(cls, records, keyring, args.repeat))
    async_rows = asyncio.run(throughput_async(cls, records, keyring, args.repeat))
    cold = asyncio.run(concurrency(tmp, args.people, args.concurrency, args.store_latency_ms / 1000))
    print("# ratios (serialize, deserialize)")
    for mine, other, rows in (
        ("fieldcrypt", "plain", sync_rows),
        ("fieldcrypt-async", "plain-async", async_rows),
    ):
        a, b = rows[mine], rows[other]
        print(f"protobuf {mine} vs {other}: {a['ser_rps'] / b['ser_rps']:.2f}x, {a['de_rps'] / b['de_rps']:.2f}x")
    a, b = async_rows["fieldcrypt-async"], sync_rows["fieldcrypt"]
    ratios = f"{a['ser_rps'] / b['ser_rps']:.2f}x, {a['de_rps'] / b['de_rps']:.2f}x"
    print(f"protobuf fieldcrypt-async vs fieldcrypt (sync): {ratios}")
    a, s = cold["fieldcrypt-async"], cold["sync-on-loop"]
    print(f"cold keys, fieldcrypt-async vs sync-on-loop: {a['rps'] / s['rps']:.2f}x records/s")
    print(
        f"cold keys, longest loop stall: fieldcrypt-async {a['max_loop_stall_ms']} ms, "
        f"sync-on-loop {s['max_loop_stall_ms']} ms"
    )


if __name__ == "__main__":
    main()
