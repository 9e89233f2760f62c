"""fieldcrypt on asyncio, end to end: confluent's asyncio producer and consumer (``confluent_kafka.aio``) with
fieldcrypt's asyncio twins, against a real Kafka-protocol broker (Tansu) and a registry over HTTP reached with
``AsyncSchemaRegistryClient``.

    python examples/async_end_to_end.py [--records 20] [--concurrency 20]

What it shows, in order:

1. a producer encrypts the tagged fields of many records produced concurrently from one event loop;
2. a consumer with the keyring reads plaintext; confluent's own asyncio deserializer, without keys, reads the
   same records with ciphertext in the tagged fields (the untagged ones stay readable);
3. one person (cust-000) is shredded, and the consumer then reads their tagged values as erased while everyone
   else's still decrypt;
4. the event loop kept running throughout: the longest it went without running another task is printed.

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

from confluent_kafka.aio import AsyncDeserializingConsumer, AsyncSerializingProducer
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AsyncAvroDeserializer as PlainAsyncAvroDeserializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer

import fieldcrypt
from fieldcrypt.avro import AsyncAvroDeserializer, AsyncAvroSerializer
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, RegistryServer, create_topic

SCHEMA = (Path(__file__).resolve().parent.parent / "schemas" / "customer_event.avsc").read_text()


def event(i: int) -> dict[str, Any]:
    return {
        "customerId": f"cust-{i:03d}",
        "email": f"jane.doe{i}@example.com",
        "ssn": f"078-05-{1120 + i:04d}" if i % 2 == 0 else None,
        "fullName": ["Jane Doe", "Zoë Ångström", "李小龙"][i % 3],
        "purchaseAmount": round(19.99 * (i + 1), 2),
        "currency": "EUR",
        "items": 1 + i % 4,
        "country": "DE",
        "timestamp": 1_710_498_600_000 + i,
    }


class Stalls:
    """Measures the longest time the event loop went without running this ticker (a blocked loop shows here)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Stalls:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def consume(bootstrap: str, topic: str, deserializer: Any, count: int) -> list[Any]:
    consumer = await AsyncDeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"async-demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer(),
            "value.deserializer": deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    values: list[Any] = []
    try:
        await consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            msg = await consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(str(msg.error()))
            values.append(msg.value())
    finally:
        await consumer.close()
    if len(values) < count:
        raise RuntimeError(f"read {len(values)} of {count} records within 60 s")
    return sorted(values, key=lambda v: v["customerId"])


async def run(bootstrap: str, registry_url: str, state: Path, records: int, concurrency: int) -> int:
    keyring = fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}"), fieldcrypt.create_local_kek(state / "kek.json")
    )
    topic = f"customer-events-async-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    registry = AsyncSchemaRegistryClient({"url": registry_url})
    serializer = await AsyncAvroSerializer(registry, SCHEMA, keyring=keyring)
    producer = await AsyncSerializingProducer(
        {"bootstrap.servers": bootstrap, "key.serializer": StringSerializer(), "value.serializer": serializer}
    )

    print(f"== 1. {records} records produced, up to {concurrency} at once, from one event loop")
    limit = asyncio.Semaphore(concurrency)

    async def send(i: int) -> None:
        async with limit:
            await producer.produce(topic, key=f"cust-{i:03d}", value=event(i))

    with Stalls() as stalls:
        started = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(records)))
        await producer.flush()
        took = time.perf_counter() - started
    await producer.close()
    print(f"   {took:.2f} s; {serializer.stats.values} values encrypted, {serializer.stats.key_cache_misses} cold key")
    print(f"   lookups through the keyring's async door; the loop's longest stall: {stalls.longest * 1000:.0f} ms")

    print("== 2. read back: with the keyring, and with confluent's own deserializer (no keys)")
    with Stalls() as read_stalls:
        reader = await AsyncAvroDeserializer(registry, keyring=keyring)
        readable = await consume(bootstrap, topic, reader, records)
    plain = await consume(bootstrap, topic, await PlainAsyncAvroDeserializer(registry), records)
    for mine, theirs in list(zip(readable, plain, strict=True))[:3]:
        print(f"   {mine['customerId']}: {mine['email']:<26} | without keys: {str(theirs['email'])[:26]}...")
    assert [v["email"] for v in readable] == [event(i)["email"] for i in range(records)]
    assert all(v["email"] != event(i)["email"] for i, v in enumerate(plain))
    assert [v["purchaseAmount"] for v in plain] == [event(i)["purchaseAmount"] for i in range(records)]

    print("== 3. cust-000 shredded: their tagged values read as erased, everyone else's still decrypt")
    keyring.shred_person("cust-000", reason="async demo: erasure request")
    after = await consume(bootstrap, topic, await AsyncAvroDeserializer(registry, keyring=keyring), records)
    print(f"   cust-000: email={after[0]['email']!r} fullName={after[0]['fullName']!r}")
    print(f"   cust-001: email={after[1]['email']!r}")
    assert after[0]["email"] in (None, "<erased>") and after[1]["email"] == event(1)["email"]

    print("== 4. the event loop never waited on the key store or the registry")
    longest = max(stalls.longest, read_stalls.longest)
    print(f"   longest stall while producing and reading: {longest * 1000:.0f} ms")
    keyring.close()
    print("OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20, help="records to produce (default 20)")
    parser.add_argument("--concurrency", type=int, default=20, help="produce calls in flight at once (default 20)")
    args = parser.parse_args(argv)
    if args.records < 2 or args.concurrency < 1:
        parser.error("--records must be at least 2 and --concurrency at least 1")
    with tempfile.TemporaryDirectory() as tmp, RegistryServer() as registry, Broker() as broker:
        return asyncio.run(run(broker.bootstrap_servers, registry.url, Path(tmp), args.records, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
