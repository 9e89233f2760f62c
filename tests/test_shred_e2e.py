"""Crypto-shredding end to end: several producer and consumer processes, a real broker, the shared PostgreSQL key
store and a registry over HTTP. Mid-stream one person and one domain are shredded; after the cache TTL every
consumer reports erased for exactly the records under destroyed keys and the plaintext for all others, and
produced == consumed exactly."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pg import pg_schema_url

import fieldcrypt

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PRODUCERS, CONSUMERS, PER_PHASE, PEOPLE = 3, 2, 40, 10
TOPICS = ("orders", "profiles")
TTL = 2.0
SCHEMA = (Path(__file__).resolve().parent.parent / "schemas" / "customer_event.avsc").read_text()


def _record(producer: int, seq: int) -> dict[str, Any]:
    person = f"p-{seq % PEOPLE:03d}"
    return {
        "customerId": person,
        "email": f"{person}.{producer}.{seq}@example.com",
        "ssn": f"{producer}-{seq:04d}",
        "fullName": f"Name {producer}/{seq}",
        "purchaseAmount": float(seq),
        "currency": "EUR",
        "items": producer,
        "country": "DE",
        "timestamp": seq,
    }


def _keyring(store: str, kek: str) -> Any:
    return fieldcrypt.Keyring(store, kek, cache_ttl=TTL)


def producer_main(
    n: int,
    bootstrap: str,
    registry_url: str,
    store: str,
    kek: str,
    topics: dict[str, str],
    phase_a_done: Any,
    go_b: Any,
) -> None:
    from confluent_kafka import SerializingProducer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import StringSerializer

    from fieldcrypt.avro import AvroSerializer

    producer = SerializingProducer(
        {
            "bootstrap.servers": bootstrap,
            "key.serializer": StringSerializer("utf_8"),
            "value.serializer": AvroSerializer(
                SchemaRegistryClient({"url": registry_url}), SCHEMA, keyring=_keyring(store, kek)
            ),
        }
    )
    for phase in (0, 1):
        if phase == 1:
            go_b.wait(60)
        for seq in range(phase * PER_PHASE, (phase + 1) * PER_PHASE):
            rec = _record(n, seq)
            topic = topics[TOPICS[seq % 2]]
            producer.produce(topic, key=f"{n}:{seq}", value=rec)
            producer.poll(0)
        assert producer.flush(30) == 0
        if phase == 0:
            phase_a_done.put(n)


def consumer_main(
    n: int,
    bootstrap: str,
    registry_url: str,
    store: str,
    kek: str,
    topics: dict[str, str],
    expected: int,
    start_pass_2: Any,
    out: Any,
) -> None:
    from confluent_kafka import DeserializingConsumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import StringDeserializer

    from fieldcrypt import Erased
    from fieldcrypt.avro import AvroDeserializer

    keyring = _keyring(store, kek)
    registry = SchemaRegistryClient({"url": registry_url})
    for pass_no in (1, 2):
        if pass_no == 2:
            start_pass_2.wait(120)
        consumer = DeserializingConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"c{n}-{pass_no}-{uuid.uuid4().hex[:6]}",
                "key.deserializer": StringDeserializer("utf_8"),
                "value.deserializer": AvroDeserializer(
                    registry, conf={"fieldcrypt.on.erased": "marker"}, keyring=keyring
                ),
            }
        )
        consumer.assign([TopicPartition(t, 0, 0) for t in topics.values()])
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while len(seen) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            status = {f: ("erased" if isinstance(value[f], Erased) else value[f]) for f in ("email", "ssn", "fullName")}
            seen[f"{msg.topic()}|{msg.key()}"] = (value["customerId"], status)
        extra = consumer.poll(2.0)  # nothing beyond what was produced
        consumer.close()
        out.put((n, pass_no, seen, extra is not None and extra.error() is None))


def test_shred_mid_stream_across_processes(broker, http_registry, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    kek = fieldcrypt.create_local_kek(tmp_path / "kek.json")
    run = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-{run}" for name in TOPICS}
    for t in topics.values():
        broker.create_topic(t)
    total = PRODUCERS * 2 * PER_PHASE
    with pg_schema_url() as store:
        admin = fieldcrypt.Keyring(fieldcrypt.create_key_store(store), kek)
        phase_a_done, go_b, pass_2, out = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Queue()
        args = (broker.bootstrap_servers, http_registry.url, store, kek, topics)
        consumers = [ctx.Process(target=consumer_main, args=(n, *args, total, pass_2, out)) for n in range(CONSUMERS)]
        producers = [ctx.Process(target=producer_main, args=(n, *args, phase_a_done, go_b)) for n in range(PRODUCERS)]
        for p in consumers + producers:
            p.start()
        try:
            assert sorted(phase_a_done.get(timeout=120) for _ in producers) == list(range(PRODUCERS))
            person = admin.shred_person("p-007", reason="erasure request")
            domain = admin.shred_domain(f"{topics['profiles']}-value", reason="topic retired")
            assert person.destroyed and domain.destroyed
            go_b.set()
            for p in producers:
                p.join(120)
                assert p.exitcode == 0
            time.sleep(TTL + 0.5)  # every cache in every process has expired since the shred
            pass_2.set()
            reports = [out.get(timeout=180) for _ in range(2 * CONSUMERS)]
        finally:
            go_b.set()
            pass_2.set()
            for p in consumers + producers:
                p.join(30)
                if p.is_alive():
                    p.kill()
        shredded = {r.key_id for r in admin.export_shred_log()}
        truth = _ground_truth(http_registry.url, broker.bootstrap_servers, topics, total)
        assert [e.operation for e in admin.audit()].count("shred") == 2

    expected_erased = {k for k, ids in truth.items() if ids & shredded}
    assert expected_erased, "the shred must have hit some records"
    for n, pass_no, seen, extra in reports:
        assert len(seen) == total and not extra, (n, pass_no, len(seen))  # produced == consumed, exactly
        if pass_no == 1:
            continue
        for key, (person, status) in seen.items():
            topic, ident = key.split("|")
            producer_no, seq = map(int, ident.split(":"))
            if key in expected_erased:
                assert set(status.values()) == {"erased"}, (key, status)
                assert person == "p-007" or topic == topics["profiles"]
            else:
                rec = _record(producer_no, seq)
                assert status == {f: rec[f] for f in ("email", "ssn", "fullName")}, (key, status)
    # everything written before the shred for that person or domain is erased
    for key in truth:
        topic, ident = key.split("|")
        producer_no, seq = map(int, ident.split(":"))
        before = seq < PER_PHASE
        hit = _record(producer_no, seq)["customerId"] == "p-007" or topic == topics["profiles"]
        if before and hit:
            assert key in expected_erased, key
        if not hit:
            assert key not in expected_erased, key


def _ground_truth(registry_url: str, bootstrap: str, topics: dict[str, str], total: int) -> dict[str, set[int]]:
    """The key ids each record names, read with confluent's plain deserializer (no keys needed)."""
    from confluent_kafka import DeserializingConsumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import StringDeserializer

    from fieldcrypt.crypto import wire as _wire

    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry_url})),
        }
    )
    consumer.assign([TopicPartition(t, 0, 0) for t in topics.values()])
    truth: dict[str, set[int]] = {}
    deadline = time.monotonic() + 60
    while len(truth) < total and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        v = msg.value()
        truth[f"{msg.topic()}|{msg.key()}"] = {
            _wire.parse(_wire.decode_text(v[f]))[0] for f in ("email", "ssn", "fullName")
        }
    consumer.close()
    assert len(truth) == total
    return truth
