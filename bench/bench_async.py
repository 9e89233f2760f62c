"""The asyncio twins, measured beside confluent's plain asyncio serdes and fieldcrypt's sync twins, in one run.

    python bench/bench_async.py [--records 20000] [--people 2000] [--concurrency 200] [--store-latency-ms 2]

Part 1, throughput with warm keys (bench_serde.py's records, 3 of 9 fields tagged, one key per domain), Avro and
JSON Schema, each case awaited one record at a time on one event loop:
  plain-async       confluent's AsyncAvroSerializer / AsyncJSONSerializer (and deserializers), no encryption
  fieldcrypt-async  fieldcrypt's asyncio twins
  fieldcrypt-sync   fieldcrypt's sync twins, called directly (what the asyncio shell adds on top)

Part 2, under concurrency with cold keys: --people new data subjects (per-person keys), --concurrency serialize
calls in flight at once on one event loop, a key store whose every call takes --store-latency-ms (a network hop to
a shared store). A ticker task measures the longest time the loop went without running it:
  fieldcrypt-async  the asyncio twin: cold lookups run on the keyring's async door
  sync-on-loop      the sync twin called from a coroutine, as an application without the asyncio twins would:
                    every cold lookup blocks the loop

Prints one JSON line per case, then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench_serde import JSON_SCHEMA, SCHEMA, rec
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AsyncAvroDeserializer as PlainAsyncAvroDeserializer
from confluent_kafka.schema_registry.avro import AsyncAvroSerializer as PlainAsyncAvroSerializer
from confluent_kafka.schema_registry.json_schema import AsyncJSONDeserializer as PlainAsyncJSONDeserializer
from confluent_kafka.schema_registry.json_schema import AsyncJSONSerializer as PlainAsyncJSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AsyncAvroDeserializer, AsyncAvroSerializer
from fieldcrypt.core.aio import RegistryView  # noqa: F401  (imported so a broken shell fails the smoke run early)
from fieldcrypt.json_schema import AsyncJSONDeserializer, AsyncJSONSerializer

CTX = SerializationContext("bench-async", MessageField.VALUE)


async def _rate(call: Callable[[Any], Awaitable[Any]], items: list[Any], repeat: int) -> tuple[float, list[Any]]:
    best, out = 0.0, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = [await call(x) for x in items]
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best, out


async def _sync_rate(call: Callable[[Any], Any], items: list[Any], repeat: int) -> tuple[float, list[Any]]:
    best, out = 0.0, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = [call(x) for x in items]
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best, out


async def throughput(fmt: str, records: list[dict[str, Any]], keyring: Any, repeat: int) -> dict[str, dict[str, Any]]:
    registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    schema = json.dumps(SCHEMA if fmt == "avro" else JSON_SCHEMA)
    if fmt == "avro":
        plain_ser = await PlainAsyncAvroSerializer(registry, schema)
        plain_de = await PlainAsyncAvroDeserializer(registry)
        ser = await AsyncAvroSerializer(registry, schema, keyring=keyring)
        de = await AsyncAvroDeserializer(registry, keyring=keyring)
    else:
        plain_ser = await PlainAsyncJSONSerializer(schema, registry)
        plain_de = await PlainAsyncJSONDeserializer(None, schema_registry_client=registry)
        ser = await AsyncJSONSerializer(schema, registry, keyring=keyring)
        de = await AsyncJSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    rows: dict[str, dict[str, Any]] = {}
    for name, s, d in (("plain-async", plain_ser, plain_de), ("fieldcrypt-async", ser, de)):
        await s(records[0], CTX)  # registered, keys made: warm
        ser_rps, framed = await _rate(lambda r, s=s: s(r, CTX), records, repeat)
        de_rps, back = await _rate(lambda b, d=d: d(b, CTX), framed, repeat)
        assert back[-1]["email"] == records[-1]["email"]
        rows[name] = {"case": f"{fmt} {name}", "ser_rps": round(ser_rps), "de_rps": round(de_rps)}
    sync_ser, sync_de = ser._fieldcrypt, de._fieldcrypt  # the sync twins the asyncio ones run
    ser_rps, framed = await _sync_rate(lambda r: sync_ser(r, CTX), records, repeat)
    de_rps, _ = await _sync_rate(lambda b: sync_de(b, CTX), framed, repeat)
    rows["fieldcrypt-sync"] = {"case": f"{fmt} fieldcrypt-sync", "ser_rps": round(ser_rps), "de_rps": round(de_rps)}
    for row in rows.values():
        print(json.dumps(row), flush=True)
    return rows


class _LatentStore:
    """The key store, each call ``latency`` seconds slower (a network hop to a shared store)."""

    def __init__(self, inner: Any, latency: float) -> None:
        self._inner = inner
        self._latency = latency

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._latency)
            return attr(*args, **kwargs)

        return call


async def _stalled(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(seconds ``work()`` took, the longest the loop went without running a 1 ms ticker meanwhile)."""
    stop = asyncio.Event()
    longest = 0.0

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    t0 = time.perf_counter()
    await work()
    took = time.perf_counter() - t0
    stop.set()
    await ticker
    return took, longest


async def concurrency(tmp: str, people: int, inflight: int, latency: float) -> dict[str, dict[str, Any]]:
    schema = json.loads(json.dumps(SCHEMA))
    for f in schema["fields"]:
        if f["name"] == "customerId":
            f["confluent:tags"] = ["DATA_SUBJECT_ID"]
    text = json.dumps(schema)

    async def make(registry: Any, keyring: Any) -> Any:
        return await AsyncAvroSerializer(registry, text, keyring=keyring)

    return await cold_keys(tmp, people, inflight, latency, make, rec)


async def cold_keys(
    tmp: str,
    people: int,
    inflight: int,
    latency: float,
    make: Callable[[Any, Any], Awaitable[Any]],
    record: Callable[[int], Any],
) -> dict[str, dict[str, Any]]:
    """--people new data subjects serialized with --concurrency calls in flight on one loop, a key store --latency
    slower per call: the asyncio twin ``make(registry, keyring)`` returns (records of ``record(i)``), and the sync
    twin it runs, called from a coroutine. One row per case."""
    rows: dict[str, dict[str, Any]] = {}
    for case in ("fieldcrypt-async", "sync-on-loop"):
        store = fieldcrypt.create_key_store(f"sqlite:///{tmp}/{case}-{uuid.uuid4().hex[:6]}.db")
        keyring = fieldcrypt.Keyring(
            store, fieldcrypt.create_local_kek(os.path.join(tmp, f"{case}-{uuid.uuid4().hex[:6]}.json"))
        )
        registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        ser = await make(registry, keyring)
        await ser(record(10**9), CTX)  # registered, its policy recorded: only the per-person keys are cold below
        keyring.store = _LatentStore(keyring.store, latency)
        records = [record(i) for i in range(people)]  # one record per new person: every key lookup is cold
        limit = asyncio.Semaphore(inflight)
        sync_ser = ser._fieldcrypt

        async def one(r: Any, case: str = case, sync_ser: Any = sync_ser, ser: Any = ser, limit: Any = limit) -> None:
            async with limit:
                if case == "fieldcrypt-async":
                    await ser(r, CTX)
                else:
                    sync_ser(r, CTX)  # blocks the loop for each cold lookup
                    await asyncio.sleep(0)

        async def all_of(records: list[Any] = records, one: Any = one) -> None:
            await asyncio.gather(*(one(r) for r in records))

        took, stall = await _stalled(all_of)
        rows[case] = {
            "case": f"cold {case}",
            "people": people,
            "concurrency": inflight,
            "store_latency_ms": latency * 1000,
            "rps": round(people / took),
            "max_loop_stall_ms": round(stall * 1000, 1),
        }
        print(json.dumps(rows[case]), flush=True)
        keyring.close()
    return rows


async def main_async(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-async-")
    keyring = fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db"),
        fieldcrypt.create_local_kek(os.path.join(tmp, "k.json")),
    )
    records = [rec(i) for i in range(args.records)]
    print(f"# {args.records} records, best of {args.repeat}; python {sys.version.split()[0]}", flush=True)
    tables = {fmt: await throughput(fmt, records, keyring, args.repeat) for fmt in ("avro", "json")}
    cold = await concurrency(tmp, args.people, args.concurrency, args.store_latency_ms / 1000)
    print("# ratios (serialize, deserialize)")
    for fmt, rows in tables.items():
        a, p, s = rows["fieldcrypt-async"], rows["plain-async"], rows["fieldcrypt-sync"]
        for other, b in (("plain-async", p), ("fieldcrypt-sync", s)):
            ratios = f"{a['ser_rps'] / b['ser_rps']:.2f}x, {a['de_rps'] / b['de_rps']:.2f}x"
            print(f"{fmt} fieldcrypt-async vs {other}: {ratios}")
    a, s = cold["fieldcrypt-async"], cold["sync-on-loop"]
    print(f"cold keys, fieldcrypt-async vs sync-on-loop: {a['rps'] / s['rps']:.2f}x records/s")
    print(
        f"cold keys, longest loop stall: fieldcrypt-async {a['max_loop_stall_ms']} ms, "
        f"sync-on-loop {s['max_loop_stall_ms']} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--store-latency-ms", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
