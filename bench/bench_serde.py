"""Serialize/deserialize throughput and size: confluent plain Avro, confluent CSFLE, fieldcrypt. One process, one run.

    python bench/bench_serde.py [--records 20000] [--people 100000] [--repeat 3]

Cases (the same records, 3 of 9 fields tagged PII, as in shared/bench/anchor_csfle.py):
  plain          confluent AvroSerializer/AvroDeserializer, anchor conf (use.latest.version, no auto-register)
  csfle          confluent CSFLE: ENCRYPT rule on PII tags, local KMS, mock registry + mock DEK registry
  fieldcrypt     fieldcrypt's serde, same conf as plain, per-domain keys (SQLite key store, local KEK)
  fieldcrypt-v1  the same, writing value format 1 (fieldcrypt.format.version=1): what format 2's bindings cost
  plain-default / fieldcrypt-default   both with confluent's default conf (auto.register.schemas)
  per-person     fieldcrypt with one key per person: --people distinct people, all keys cached (warm),
                 compared with per-domain on the same records; the cold pass (creating every key) is reported too
Prints one JSON line per case, then the ratios. Throughput is the best of --repeat passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentDe
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentSer
from confluent_kafka.serialization import MessageField, SerializationContext
from limit import avro_limit, json_limit

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CustomerEvent",
    "namespace": "bench",
    "fields": [
        {"name": "customerId", "type": "string"},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "ssn", "type": "string", "confluent:tags": ["PII"]},
        {"name": "fullName", "type": "string", "confluent:tags": ["PII"]},
        {"name": "purchaseAmount", "type": "double"},
        {"name": "currency", "type": "string"},
        {"name": "items", "type": "int"},
        {"name": "country", "type": "string"},
        {"name": "timestamp", "type": "long"},
    ],
}
PII = [f["name"] for f in SCHEMA["fields"] if "confluent:tags" in f]
LATEST = {"auto.register.schemas": False, "use.latest.version": True}
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "CustomerEvent",
    "properties": {
        f["name"]: {
            "type": {"string": "string", "double": "number", "int": "integer", "long": "integer"}[f["type"]],
            **({"confluent:tags": f["confluent:tags"]} if "confluent:tags" in f else {}),
        }
        for f in SCHEMA["fields"]
    },
    "required": [f["name"] for f in SCHEMA["fields"]],
}


def rec(i: int, people: int | None = None) -> dict[str, Any]:
    p = i if people is None else i % people
    return {
        "customerId": f"CUST{p:08d}",
        "email": f"user{i}@example.com",
        "ssn": f"{i % 1000:03d}-45-{i % 10000:04d}",
        "fullName": f"Person Number {i}",
        "purchaseAmount": 299.99 + i % 100,
        "currency": "EUR",
        "items": i % 7,
        "country": "DE",
        "timestamp": 1710498600000 + i,
    }


def measure(
    name: str,
    ser: Callable[..., bytes],
    de: Callable[..., Any],
    records: list[dict[str, Any]],
    topic: str,
    repeat: int,
    copy_input: bool = False,
) -> dict[str, Any]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    ser(dict(records[0]), ctx)
    best_ser = best_de = 0.0
    out: list[bytes] = []
    for _ in range(repeat):
        inputs = [dict(r) for r in records] if copy_input else records  # CSFLE mutates its input
        t0 = time.perf_counter()
        out = [ser(r, ctx) for r in inputs]
        t1 = time.perf_counter()
        back = [de(b, ctx) for b in out]
        t2 = time.perf_counter()
        best_ser, best_de = max(best_ser, len(records) / (t1 - t0)), max(best_de, len(records) / (t2 - t1))
        assert back[-1] == records[-1], (name, back[-1])
    row = {
        "case": name,
        "ser_rps": round(best_ser),
        "de_rps": round(best_de),
        "bytes": round(sum(map(len, out)) / len(out), 1),
    }
    print(json.dumps(row), flush=True)
    return row


def interleaved(
    cases: dict[str, tuple[Any, Any, str]], records: list[dict[str, Any]], rounds: int
) -> dict[str, tuple[float, float]]:
    """(best serialize, best deserialize) records/s per case, the cases' passes alternating round by round."""
    best = {name: (0.0, 0.0) for name in cases}
    for _ in range(rounds):
        for name, (ser, de, topic) in cases.items():
            ctx = SerializationContext(topic, MessageField.VALUE)
            t0 = time.perf_counter()
            out = [ser(r, ctx) for r in records]
            t1 = time.perf_counter()
            for b in out:
                de(b, ctx)
            t2 = time.perf_counter()
            s, d = best[name]
            best[name] = (max(s, len(records) / (t1 - t0)), max(d, len(records) / (t2 - t1)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--people", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    records = [rec(i) for i in range(args.records)]
    text = json.dumps(SCHEMA)
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-")
    kek = fieldcrypt.create_local_kek(os.path.join(tmp, "kek.json"))
    keyring = fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db"), kek, cache_size=max(10_000, args.people + 10)
    )
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    print(f"# {args.records} records, best of {args.repeat}; python {sys.version.split()[0]}", flush=True)
    rows: dict[str, dict[str, Any]] = {}

    for subject in ("plain-value", "fieldcrypt-value"):
        client.register_schema(subject, Schema(text, "AVRO"))
    rows["plain"] = measure(
        "plain", ConfluentSer(client, text, conf=LATEST), ConfluentDe(client), records, "plain", args.repeat
    )
    pairs: dict[str, tuple[Any, Any, str]] = {}  # the headline cases, measured again interleaved at the end
    pairs["limit"] = (*avro_limit(SCHEMA, PII), "limit")
    rows["limit"] = measure("limit", *pairs["limit"][:2], records, "limit", args.repeat)
    rows["fieldcrypt"] = measure(
        "fieldcrypt",
        AvroSerializer(client, text, conf=LATEST, keyring=keyring),
        AvroDeserializer(client, keyring=keyring),
        records,
        "fieldcrypt",
        args.repeat,
    )
    client.register_schema("fieldcrypt-v1-value", Schema(text, "AVRO"))
    rows["fieldcrypt-v1"] = measure(  # value format 1 (pinned), beside the default format 2: what binding costs
        "fieldcrypt-v1",
        AvroSerializer(client, text, conf={**LATEST, "fieldcrypt.format.version": 1}, keyring=keyring),
        AvroDeserializer(client, keyring=keyring),
        records,
        "fieldcrypt-v1",
        args.repeat,
    )
    rows["plain-default"] = measure(
        "plain-default", ConfluentSer(client, text), ConfluentDe(client), records, "pd", args.repeat
    )
    pairs["fieldcrypt-default"] = (
        AvroSerializer(client, text, keyring=keyring),
        AvroDeserializer(client, keyring=keyring),
        "fd",
    )
    rows["fieldcrypt-default"] = measure(
        "fieldcrypt-default", *pairs["fieldcrypt-default"][:2], records, "fd", args.repeat
    )

    from confluent_kafka.schema_registry.rules.encryption.encrypt_executor import FieldEncryptionExecutor
    from confluent_kafka.schema_registry.rules.encryption.localkms.local_driver import LocalKmsDriver
    from confluent_kafka.schema_registry.schema_registry_client import Rule, RuleKind, RuleMode, RuleParams, RuleSet

    FieldEncryptionExecutor.register()
    LocalKmsDriver.register()
    rule = Rule(
        "encrypt-pii",
        "",
        RuleKind.TRANSFORM,
        RuleMode.WRITEREAD,
        "ENCRYPT",
        ["PII"],
        RuleParams({"encrypt.kek.name": "kek1", "encrypt.kms.type": "local-kms", "encrypt.kms.key.id": "mykey"}),
        None,
        None,
        "ERROR,NONE",
        False,
    )
    client.register_schema("csfle-value", Schema(text, "AVRO", [], None, RuleSet(None, [rule])))
    rc = {"secret": "mysecret"}
    rows["csfle"] = measure(
        "csfle",
        ConfluentSer(client, text, conf=LATEST, rule_conf=rc),
        ConfluentDe(client, rule_conf=rc),
        records,
        "csfle",
        args.repeat,
        copy_input=True,
    )

    # JSON Schema: the same records, confluent's plain JSON serde, CSFLE for JSON, fieldcrypt's JSON serde
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer as ConfluentJsonDe
    from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJsonSer

    from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

    jtext = json.dumps(JSON_SCHEMA)
    for subject in ("json-plain-value", "json-fieldcrypt-value"):
        client.register_schema(subject, Schema(jtext, "JSON"))
    rows["json-plain"] = measure(
        "json-plain",
        ConfluentJsonSer(jtext, client, conf=LATEST),
        ConfluentJsonDe(None, schema_registry_client=client),
        records,
        "json-plain",
        args.repeat,
    )
    pairs["json-limit"] = (*json_limit(JSON_SCHEMA, PII), "json-limit")
    rows["json-limit"] = measure("json-limit", *pairs["json-limit"][:2], records, "json-limit", args.repeat)
    rows["json-fieldcrypt"] = measure(
        "json-fieldcrypt",
        JSONSerializer(jtext, client, conf=LATEST, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=client, keyring=keyring),
        records,
        "json-fieldcrypt",
        args.repeat,
    )
    rows["json-plain-default"] = measure(
        "json-plain-default",
        ConfluentJsonSer(jtext, client),
        ConfluentJsonDe(None, schema_registry_client=client),
        records,
        "jpd",
        args.repeat,
    )
    pairs["json-fieldcrypt-default"] = (
        JSONSerializer(jtext, client, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=client, keyring=keyring),
        "jfd",
    )
    rows["json-fieldcrypt-default"] = measure(
        "json-fieldcrypt-default", *pairs["json-fieldcrypt-default"][:2], records, "jfd", args.repeat
    )

    client.register_schema("json-csfle-value", Schema(jtext, "JSON", [], None, RuleSet(None, [rule])))
    rows["json-csfle"] = measure(
        "json-csfle",
        ConfluentJsonSer(jtext, client, conf=LATEST, rule_conf=rc),
        ConfluentJsonDe(None, schema_registry_client=client, rule_conf=rc),
        records,
        "json-csfle",
        args.repeat,
        copy_input=True,
    )

    # per person: one key per data subject, --people of them
    person_schema = copy.deepcopy(SCHEMA)
    person_schema["fields"][0]["confluent:tags"] = ["DATA_SUBJECT_ID"]
    ptext = json.dumps(person_schema)
    people_records = [rec(i, args.people) for i in range(args.people)]
    pser = AvroSerializer(client, ptext, keyring=keyring)
    ctx = SerializationContext("people", MessageField.VALUE)
    t0 = time.perf_counter()
    for r in people_records:
        pser(r, ctx)
    cold = args.people / (time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "case": "per-person-cold",
                "people": args.people,
                "ser_rps": round(cold),
                "note": "every record creates, wraps and stores a new key",
            }
        ),
        flush=True,
    )
    pairs["per-person"] = (pser, AvroDeserializer(client, keyring=keyring), "people")
    pairs["per-domain"] = (
        AvroSerializer(client, text, keyring=keyring),
        AvroDeserializer(client, keyring=keyring),
        "domain",
    )
    rows["per-person"] = measure("per-person", *pairs["per-person"][:2], people_records, "people", args.repeat)
    rows["per-domain"] = measure("per-domain", *pairs["per-domain"][:2], people_records, "domain", args.repeat)
    # the headline ratios again, each pair's passes alternating (a machine whose speed drifts during the run moves
    # both sides alike): best of 2 * --repeat + 1 passes each
    for a, b, inputs in [
        ("fieldcrypt-default", "limit", records),
        ("json-fieldcrypt-default", "json-limit", records),
        ("per-person", "per-domain", people_records),
    ]:
        best = interleaved({k: pairs[k] for k in (a, b)}, inputs, 2 * args.repeat + 1)
        print(
            json.dumps(
                {
                    "case": f"{a}~{b}",
                    "interleaved": True,
                    "ser_ratio": round(best[a][0] / best[b][0], 3),
                    "de_ratio": round(best[a][1] / best[b][1], 3),
                    "ser_rps": [round(best[a][0]), round(best[b][0])],
                    "de_rps": [round(best[a][1]), round(best[b][1])],
                }
            ),
            flush=True,
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# max RSS {rss:.0f} MiB with {len(keyring.keys())} keys stored, cache size {args.people + 10}")

    def ratio(a: str, b: str, k: str) -> str:
        return f"{rows[a][k] / rows[b][k]:.2f}x"

    print("\n# ratios (higher is better for throughput; bytes: lower is better)")
    for a, b in [
        ("fieldcrypt", "limit"),
        ("fieldcrypt", "plain"),
        ("fieldcrypt", "csfle"),
        ("fieldcrypt", "fieldcrypt-v1"),
        ("fieldcrypt-default", "plain-default"),
        ("json-fieldcrypt", "json-limit"),
        ("json-fieldcrypt", "json-plain"),
        ("json-fieldcrypt", "json-csfle"),
        ("json-fieldcrypt-default", "json-plain-default"),
        ("per-person", "per-domain"),
    ]:
        print(
            f"{a:>23} vs {b:<18} ser {ratio(a, b, 'ser_rps'):>7}  de {ratio(a, b, 'de_rps'):>7}  "
            f"bytes {rows[a]['bytes']} vs {rows[b]['bytes']}"
        )


if __name__ == "__main__":
    main()
