"""``fieldcrypt verify``: re-read a topic from its start and count, per domain or data subject, how many encrypted
values are readable, erased (key shredded) or denied (no key).

It reads every partition from offset 0 until it has passed the end offsets seen at the start and the topic has
then been quiet for ``IDLE`` seconds (some brokers, Tansu among them, under-report the high watermark after a
batched produce, so the watermark alone is not trusted), or until the timeout."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt._engine import ReadStats
from fieldcrypt.avro import AvroDeserializer
from fieldcrypt.json_schema import JSONDeserializer
from fieldcrypt.keyring import Keyring

__all__ = ["verify_topic"]

IDLE = 2.0


def verify_topic(
    keyring: Keyring, topic: str, bootstrap: str, registry_url: str, by: str, timeout: float, fmt: str = "avro"
) -> dict[str, dict[str, Any]]:
    registry = SchemaRegistryClient.new_client({"url": registry_url})
    # plaintext in tagged fields (history from before encryption began) is counted per field, not an error
    conf = {"fieldcrypt.on.erased": "marker", "fieldcrypt.on.denied": "marker", "fieldcrypt.on.plaintext": "accept"}
    de: AvroDeserializer | JSONDeserializer
    if fmt == "json":
        de = JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring)
    else:
        de = AvroDeserializer(registry, conf=conf, keyring=keyring)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fieldcrypt-verify-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    per: dict[str, ReadStats] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        ctx = SerializationContext(topic, MessageField.VALUE)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and (ends or time.monotonic() - quiet_since < IDLE):
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            quiet_since = time.monotonic()
            partition, offset, data = msg.partition(), msg.offset(), msg.value()
            if partition is None or offset is None or data is None:
                continue
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            before = ReadStats(**{**asdict(de.stats), "plaintext_by_field": dict(de.stats.plaintext_by_field)})
            record: Any = de(data, ctx)
            after = de.stats
            if by == "domain":
                key = de._opts.domain or f"{topic}-value"
            else:
                plan = de._plans.get(int.from_bytes(data[1:5], "big"))
                key = (plan.runner.person_of(record) if plan is not None else None) or "-"
            row = per.setdefault(key, ReadStats())
            row.records += 1
            row.values += after.values - before.values
            row.erased += after.erased - before.erased
            row.denied += after.denied - before.denied
            row.plaintext += after.plaintext - before.plaintext
            for path, n in after.plaintext_by_field.items():
                gained = n - before.plaintext_by_field.get(path, 0)
                if gained:
                    row.plaintext_by_field[path] = row.plaintext_by_field.get(path, 0) + gained
    finally:
        consumer.close()
    return {
        k: {
            "records": s.records,
            "readable": s.readable,
            "erased": s.erased,
            "denied": s.denied,
            "plaintext": s.plaintext,
            "plaintext_fields": dict(sorted(s.plaintext_by_field.items())),
        }
        for k, s in per.items()
    }
