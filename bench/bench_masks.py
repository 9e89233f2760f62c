"""What masked views cost: bytes per record and serialize/deserialize rates, with and without ``fieldcrypt.masks``,
Avro and JSON Schema side by side. One process, one run.

    python bench/bench_masks.py [--records 20000] [--repeat 3]

The records of bench_serde.py (3 of 9 fields tagged; names "Person Nr42 Doe"): ``email`` tagged EMAIL,
``fullName`` NAME, ``ssn`` PII, one key per domain. Cases, per format:
  plain           the same fieldcrypt serde and records, no masks (each value its ciphertext only)
  masks           fieldcrypt.masks {EMAIL: email, NAME: name}: email and fullName also carry their masked view
  masks-view-read the masks case's records read by a consumer holding only the view key (<domain>/masked): it reads
                  the two masks, and ssn as the placeholder (no key, no view)
Prints one JSON line per case, then the ratios. Throughput is the best of --repeat passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

from bench_serde import JSON_SCHEMA, LATEST, SCHEMA, measure, rec
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

TAGS = {"email": ["EMAIL"], "fullName": ["NAME"], "ssn": ["PII"]}
CONF: dict[str, Any] = {"fieldcrypt.tags": ["PII", "EMAIL", "NAME"]}  # the deserializers' (LATEST: serializers')
MASKS = {"fieldcrypt.masks": {"EMAIL": "email", "NAME": "name"}}


def _tagged(schema: dict[str, Any], avro: bool) -> str:
    out = copy.deepcopy(schema)
    if avro:
        for f in out["fields"]:
            if f["name"] in TAGS:
                f["confluent:tags"] = TAGS[f["name"]]
    else:
        for name, prop in out["properties"].items():
            if name in TAGS:
                prop["confluent:tags"] = TAGS[name]
    return json.dumps(out)


def measure_read(name: str, de: Any, framed: list[bytes], topic: str, repeat: int) -> dict[str, Any]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    best = 0.0
    back: list[Any] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        back = [de(b, ctx) for b in framed]
        best = max(best, len(framed) / (time.perf_counter() - t0))
    assert back[-1]["email"] == "***@example.com" and back[-1]["fullName"] == "P. N. D."
    row = {"case": name, "de_rps": round(best), "masked_per_record": de.stats.masked / max(de.stats.records, 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    # the name mask reads names whose parts start with a letter: "Person Nr42 Doe" (bench_serde's "Person Number 42"
    # would be refused, as a producer refuses any value its mask cannot read)
    records = [dict(rec(i), fullName=f"Person Nr{i} Doe") for i in range(args.records)]
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-")
    values_kek = fieldcrypt.create_local_kek(os.path.join(tmp, "values.json"))
    views_kek = fieldcrypt.create_local_kek(os.path.join(tmp, "views.json"))
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db")
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    print(f"# {args.records} records, best of {args.repeat}; python {sys.version.split()[0]}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    for fmt in ("avro", "json"):
        text = _tagged(SCHEMA if fmt == "avro" else JSON_SCHEMA, fmt == "avro")
        for case in ("plain", "masks"):
            topic = f"{fmt}-{case}"
            client.register_schema(f"{topic}-value", Schema(text, fmt.upper()))
            # the views' key wrapped by a KEK of its own (a view-only consumer holds just that one)
            with fieldcrypt.Keyring(store, views_kek) as maker:
                maker.encryption_key(f"{topic}-value/masked")
            producer = fieldcrypt.Keyring(store, [values_kek, views_kek])
            conf = {**CONF, **(MASKS if case == "masks" else {})}
            if fmt == "avro":
                ser: Any = AvroSerializer(client, text, conf={**LATEST, **conf}, keyring=producer)
                de: Any = AvroDeserializer(client, conf=conf, keyring=producer)
            else:
                ser = JSONSerializer(text, client, conf={**LATEST, **conf}, keyring=producer)
                de = JSONDeserializer(None, schema_registry_client=client, conf=conf, keyring=producer)
            rows[f"{fmt}-{case}"] = measure(f"{fmt}-{case}", ser, de, records, topic, args.repeat)
            if case == "masks":
                ctx = SerializationContext(topic, MessageField.VALUE)
                framed = [ser(r, ctx) for r in records]
                viewer = fieldcrypt.Keyring(store, views_kek)
                read = {**conf, "fieldcrypt.on.denied": "placeholder"}
                view_de: Any = (
                    AvroDeserializer(client, conf=read, keyring=viewer)
                    if fmt == "avro"
                    else JSONDeserializer(None, schema_registry_client=client, conf=read, keyring=viewer)
                )
                rows[f"{fmt}-view-read"] = measure_read(f"{fmt}-masks-view-read", view_de, framed, topic, args.repeat)

    def ratio(a: str, b: str, k: str) -> str:
        return f"{rows[a][k] / rows[b][k]:.2f}x"

    print("\n# ratios, masks vs plain (throughput: higher is better; bytes: lower is better)")
    for fmt in ("avro", "json"):
        a, b = f"{fmt}-masks", f"{fmt}-plain"
        extra = rows[a]["bytes"] - rows[b]["bytes"]
        print(
            f"{fmt:>4} masks vs plain  ser {ratio(a, b, 'ser_rps'):>6}  de {ratio(a, b, 'de_rps'):>6}  "
            f"bytes {rows[a]['bytes']} vs {rows[b]['bytes']} (+{extra:.1f} per record, 2 views)  "
            f"view-only reader de {ratio(f'{fmt}-view-read', b, 'de_rps'):>6}"
        )


if __name__ == "__main__":
    main()
