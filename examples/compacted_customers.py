"""A compacted topic of customers, keyed by customer id: the keys are encrypted, and a shred erases keys and values.

A compacted topic keeps the latest record per key, so its keys must be equal bytes for equal customers: fieldcrypt's
StringKeySerializer encrypts each key deterministically, under that customer's own key of the key domain
"<topic>-key/det". The same id always gives the same key bytes (the same partition, the same compaction key), the
key bytes hold no plaintext, and tools that read keys as strings show base64 text. The values are encrypted per
customer as usual (AvroSerializer, the customerId field tagged DATA_SUBJECT_ID).

    1. create a compacted topic (cleanup.policy=compact, small segments) with 3 partitions
    2. produce several updates per customer; each customer's records go to one partition
    3. read the raw bytes: no key holds a customer id, no value an email or address
    4. read with keys: the latest value per customer (what compaction keeps)
    5. shred one customer: their keys read as fieldcrypt.Erased, their tagged fields as "<erased>"
    6. write a tombstone per erased key (the raw key bytes read from the topic): compaction may then drop the
       customer's records, and the latest value per customer no longer lists them

The broker here is Tansu (`pip install 'fieldcrypt[broker]'`). Tansu 0.6.0 accepts cleanup.policy=compact and reports
it, but never compacts: every record stays in the topic, which step 4 counts. "The latest value per customer" is
therefore what a reader keeping the last value per key sees, exactly what a compacting broker would leave (and what
a table built from the topic holds); against a Kafka broker (--bootstrap-servers) compaction also removes the older
records.

    python examples/compacted_customers.py [--customers 4] [--updates 3] [--state DIR]
    source .fieldcrypt-dev.env && python examples/compacted_customers.py --from-env     # a stack of your own
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, DeserializingConsumer, Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, create_topic

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Customer",
        "namespace": "example.crm",
        "fields": [
            {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "email", "type": "string", "confluent:tags": ["PII"]},
            {"name": "address", "type": "string", "confluent:tags": ["PII"]},
            {"name": "tier", "type": "string"},
            {"name": "version", "type": "int"},
        ],
    }
)
#: the topic's settings: compaction, and segments small enough that a Kafka broker would compact within seconds
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "100",
}
PARTITIONS = 3
SHREDDED = "cust-000"
REASON = "erasure request (compacted customers example)"
TIERS = ("bronze", "silver", "gold", "platinum")


def customer(i: int, version: int) -> dict[str, Any]:
    """Customer ``i``'s record as of update ``version``: the email and address change with every update."""
    return {
        "customerId": f"cust-{i:03d}",
        "email": f"customer.{i}.v{version}@mail.example",
        "address": f"{10 + version} Harbour Street, Flat {i}",
        "tier": TIERS[version % len(TIERS)],
        "version": version,
    }


def produce(bootstrap: str, topic: str, keys: Any, values: Any, records: list[dict[str, Any]]) -> dict[str, int]:
    """Produce each record keyed by its customer id; returns each customer's partition (as the broker assigned)."""
    producer = SerializingProducer({"bootstrap.servers": bootstrap, "key.serializer": keys, "value.serializer": values})
    partitions: dict[str, set[int]] = {}

    def delivered(err: Any, msg: Any, cid: str) -> None:
        if err is None:
            partitions.setdefault(cid, set()).add(msg.partition())

    for rec in records:
        cid = rec["customerId"]
        producer.produce(topic, key=cid, value=rec, on_delivery=lambda err, msg, c=cid: delivered(err, msg, c))
    producer.flush(30)
    producer.close()
    if any(len(p) != 1 for p in partitions.values()):
        raise SystemExit("a customer's records went to more than one partition")
    return {cid: next(iter(p)) for cid, p in partitions.items()}


def consume(bootstrap: str, topic: str, count: int, keys: Any = None, values: Any = None) -> list[Any]:
    """``count`` records from the start of every partition: (partition, offset, key, value), deserialized if given
    deserializers, raw bytes otherwise."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"compacted-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        **CONSUMER_DEFAULTS,
    }
    if keys is not None:
        consumer: Any = DeserializingConsumer({**conf, "key.deserializer": keys, "value.deserializer": values})
    else:
        consumer = Consumer(conf)
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 60
    while len(out) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    consumer.close()
    return sorted(out, key=lambda r: (r[0], r[1]))


def latest_per_key(records: list[Any]) -> dict[Any, Any]:
    """What compaction keeps: per key, the value at the highest offset (a tombstone, None, removes the key)."""
    table: dict[Any, Any] = {}
    for _, _, key, value in records:  # in offset order per partition; a key lives in one partition
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=4, help="how many customers (at least 2)")
    ap.add_argument("--updates", type=int, default=3, help="how many records per customer (at least 2)")
    ap.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="a running broker (default: start one here)")
    ap.add_argument("--schema-registry", metavar="URL", help="URL of a Confluent-compatible registry")
    ap.add_argument(
        "--from-env",
        action="store_true",
        help="take the broker and registry from FIELDCRYPT_BOOTSTRAP_SERVERS and FIELDCRYPT_SCHEMA_REGISTRY (the key "
        "store and the KEK stay this run's own)",
    )
    ap.add_argument("--state", metavar="DIR", help="directory for the key store and KEK file (default: a temp dir)")
    args = ap.parse_args()
    if args.customers < 2 or args.updates < 2:
        ap.error(f"--customers and --updates: at least 2 ({SHREDDED} is shredded, the others stay readable)")
    if args.from_env:
        args.bootstrap_servers = args.bootstrap_servers or os.environ.get("FIELDCRYPT_BOOTSTRAP_SERVERS")
        args.schema_registry = args.schema_registry or os.environ.get("FIELDCRYPT_SCHEMA_REGISTRY")
        if not args.bootstrap_servers:
            ap.error("--from-env: FIELDCRYPT_BOOTSTRAP_SERVERS not set (source the file of `fieldcrypt dev up`)")
    return args


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` mid-run unwinds as Ctrl-C does: the broker (its own session) is stopped


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _stop)
    checks: list[tuple[str, bool]] = []
    with ExitStack() as stack:
        state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="fieldcrypt-compacted-"))
        if not args.state:
            stack.callback(shutil.rmtree, state, ignore_errors=True)
        state = state.absolute()
        state.mkdir(parents=True, exist_ok=True)
        store = fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}")  # `fieldcrypt keys init --store URL`
        kek_path = state / "kek.json"
        kek = f"local-kek://{kek_path}" if kek_path.exists() else fieldcrypt.create_local_kek(kek_path)
        registry_url = args.schema_registry
        registry = SchemaRegistryClient.new_client({"url": registry_url or f"mock://compacted-{uuid.uuid4().hex}"})
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            bootstrap = stack.enter_context(Broker()).bootstrap_servers
        topic = f"customers-{uuid.uuid4().hex[:6]}"
        keyring = stack.enter_context(fieldcrypt.Keyring(store, kek))
        print(f"key store: {store}\nregistry:  {registry_url or 'in-process'}\nbroker:    {bootstrap}")

        print(f"\n== 1. A compacted topic {topic}, {PARTITIONS} partitions: {json.dumps(COMPACTED)}")
        create_topic(bootstrap, topic, PARTITIONS, config=COMPACTED)

        customers = [f"cust-{i:03d}" for i in range(args.customers)]
        sent = [customer(i, v) for v in range(args.updates) for i in range(args.customers)]
        print(f"\n== 2. Produce {len(sent)} records: {args.updates} updates of each of {len(customers)} customers")
        print("key.serializer: fieldcrypt.StringKeySerializer(keyring=keyring), value.serializer: AvroSerializer")
        keys = fieldcrypt.StringKeySerializer(keyring=keyring)
        placed = produce(bootstrap, topic, keys, AvroSerializer(registry, SCHEMA, keyring=keyring), sent)
        key_ctx = SerializationContext(topic, MessageField.KEY)
        for cid in customers:
            print(f"{cid}  partition {placed[cid]}  key {keys(cid, key_ctx).decode('ascii')}")  # the same every time
        checks.append(("every customer's records went to one partition", len(placed) == len(customers)))

        print("\n== 3. The raw bytes, as a consumer without fieldcrypt (or kcat) reads them")
        raw = consume(bootstrap, topic, len(sent))
        for partition, offset, key, _ in raw[: len(customers)]:
            print(f"partition {partition} offset {offset}  key {key.decode('ascii')}")
        secrets = [rec[f].encode() for rec in sent for f in ("email", "address")]
        no_plain_keys = all(cid.encode() not in key for _, _, key, _ in raw for cid in customers)
        no_plain_values = all(s not in value for _, _, _, value in raw for s in secrets)
        print(f"a customer id in a key: {not no_plain_keys}; an email or address in a value: {not no_plain_values}")
        print("(each value's customerId, the DATA_SUBJECT_ID field, is written in clear by design: docs/key-model.md)")
        checks.append(("no key holds a customer id, no value an email or address", no_plain_keys and no_plain_values))

        print("\n== 4. The latest value per customer (what compaction keeps), read with the keys")
        read = consume(
            bootstrap,
            topic,
            len(sent),
            fieldcrypt.StringKeyDeserializer(keyring=keyring),
            AvroDeserializer(registry, keyring=keyring),
        )
        latest = latest_per_key(read)
        for cid, value in sorted(latest.items()):
            print(f"{cid}  {json.dumps(value, ensure_ascii=False)}")
        kept = "" if len(raw) < len(sent) else ": Tansu does not compact (a Kafka broker would drop the older ones)"
        print(f"the topic holds {len(raw)} of the {len(sent)} records written{kept}")
        newest = {rec["customerId"]: rec for rec in sent}  # the last update of each customer
        checks.append(("the latest value per customer is their last update", latest == newest))

        print(f'\n== 5. Shred {SHREDDED}: keyring.shred_person("{SHREDDED}", reason="{REASON}")')
        report = keyring.shred_person(SHREDDED, reason=REASON)
        for r in sorted(report.destroyed, key=lambda r: r.domain):
            print(f"  {r.key_id:#010x}  {r.domain}")
        reader = fieldcrypt.StringKeyDeserializer(keyring=keyring)  # fieldcrypt.on.erased: marker (the default)
        after = consume(bootstrap, topic, len(sent), reader, AvroDeserializer(registry, keyring=keyring))
        table = latest_per_key(after)
        for key, value in sorted(table.items(), key=lambda kv: str(kv[0])):
            print(f"{key!r:<40}  {json.dumps(value, ensure_ascii=False)}")
        theirs = [(k, v) for _, _, k, v in after if isinstance(k, fieldcrypt.Erased)]
        gone = [rec for rec in sent if rec["customerId"] == SHREDDED]
        text = json.dumps([[str(k), v] for _, _, k, v in after], ensure_ascii=False)
        unreadable = (
            len(theirs) == len(gone)
            and all(v["email"] == v["address"] == "<erased>" for _, v in theirs)
            and not any(rec[f] in text for rec in gone for f in ("email", "address"))
            and SHREDDED not in {k for k in table if isinstance(k, str)}
        )
        print(f"{SHREDDED}'s records: {len(theirs)}, each key a fieldcrypt.Erased, each tagged field <erased>")
        checks.append((f"no key or tagged value of {SHREDDED} is readable", unreadable))
        others = {k: v for k, v in table.items() if isinstance(k, str)}
        checks.append(("the other customers read as before", others == {c: newest[c] for c in customers[1:]}))

        print("\n== 6. A tombstone per erased key: its raw bytes, read from the topic (no key needed)")
        erased_keys = sorted({k for _, _, k, _ in raw if isinstance(reader(k, key_ctx), fieldcrypt.Erased)})
        tombstones = Producer({"bootstrap.servers": bootstrap})
        for raw_key in erased_keys:
            tombstones.produce(topic, key=raw_key, value=None)
            print(f"tombstone  key {raw_key.decode('ascii')}")
        tombstones.flush(30)
        tombstones.close()
        final = consume(
            bootstrap, topic, len(sent) + len(erased_keys), reader, AvroDeserializer(registry, keyring=keyring)
        )
        table = latest_per_key(final)
        print(f"the latest value per customer now lists: {', '.join(sorted(map(str, table)))}")
        checks.append(("one tombstone for the erased customer's key", len(erased_keys) == 1))
        checks.append(
            ("after the tombstone, the erased customer is gone", table == {c: newest[c] for c in customers[1:]})
        )

    print()
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    ok = all(ok for _, ok in checks)
    print("\nOK" if ok else "\nMISMATCH", flush=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or kill mid-run: everything started is stopped by now
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except fieldcrypt.FieldcryptError as exc:  # a broker, key store or KEK problem: one line, not a traceback
        print(f"compacted_customers.py: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
