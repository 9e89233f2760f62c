"""What deterministic values cost: bytes per record and serialize/deserialize rates of the same records with one
field randomized (record-bound AES-256-GCM, the default) and deterministic (AES-256-SIV,
``fieldcrypt.deterministic.tags``), Avro and JSON Schema side by side. One process, one run.

    python bench/bench_deterministic.py [--records 20000] [--repeat 3] [--people N]

The records of bench_serde.py (9 fields): ``email`` tagged JOIN, ``ssn`` and ``fullName`` PII (randomized in both
cases). Cases, per format:
  randomized     fieldcrypt.tags [PII, JOIN]: every value record-bound (a nonce, an index and the count in the
                 record's first value)
  deterministic  the same, with fieldcrypt.deterministic.tags [JOIN]: email under the key of <domain>/det, equal
                 emails equal ciphertexts
One key per domain (``--people N``: per-person keys, customerId tagged as the data subject, N people). Prints one JSON
line per case, then the ratios. Throughput is the best of --repeat passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import uuid
from typing import Any

from bench_serde import JSON_SCHEMA, LATEST, SCHEMA, measure, rec
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

TAGS = {"email": ["JOIN"], "ssn": ["PII"], "fullName": ["PII"], "customerId": ["DATA_SUBJECT_ID"]}
CONF: dict[str, Any] = {"fieldcrypt.tags": ["PII", "JOIN"]}
DETERMINISTIC = {"fieldcrypt.deterministic.tags": ["JOIN"]}


def _tagged(schema: dict[str, Any], avro: bool, people: bool) -> str:
    tags = TAGS if people else {k: v for k, v in TAGS.items() if k != "customerId"}
    out = copy.deepcopy(schema)
    if avro:
        for f in out["fields"]:
            if f["name"] in tags:
                f["confluent:tags"] = tags[f["name"]]
    else:
        for name, prop in out["properties"].items():
            if name in tags:
                prop["confluent:tags"] = tags[name]
    return json.dumps(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--people", type=int, default=None, help="per-person keys for this many people (default: none)")
    args = ap.parse_args()
    records = [rec(i, args.people) for i in range(args.records)]
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-")
    kek = fieldcrypt.create_local_kek(os.path.join(tmp, "kek.json"))
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db")
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    keys = f"per-person keys, {args.people} people" if args.people else "one key per domain"
    print(f"# {args.records} records, {keys}, best of {args.repeat}; python {sys.version.split()[0]}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    with fieldcrypt.Keyring(store, kek) as keyring:
        for fmt in ("avro", "json"):
            text = _tagged(SCHEMA if fmt == "avro" else JSON_SCHEMA, fmt == "avro", args.people is not None)
            for case in ("randomized", "deterministic"):
                topic = f"{fmt}-{case}"
                client.register_schema(f"{topic}-value", Schema(text, fmt.upper()))
                conf = {**CONF, **(DETERMINISTIC if case == "deterministic" else {})}
                if fmt == "avro":
                    ser: Any = AvroSerializer(client, text, conf={**LATEST, **conf}, keyring=keyring)
                    de: Any = AvroDeserializer(client, conf=conf, keyring=keyring)
                else:
                    ser = JSONSerializer(text, client, conf={**LATEST, **conf}, keyring=keyring)
                    de = JSONDeserializer(None, schema_registry_client=client, conf=conf, keyring=keyring)
                rows[f"{fmt}-{case}"] = measure(f"{fmt}-{case}", ser, de, records, topic, args.repeat)

    def ratio(a: str, b: str, k: str) -> str:
        return f"{rows[a][k] / rows[b][k]:.2f}x"

    print("\n# ratios, deterministic vs randomized (throughput: higher is better; bytes: lower is better)")
    for fmt in ("avro", "json"):
        a, b = f"{fmt}-deterministic", f"{fmt}-randomized"
        diff = rows[a]["bytes"] - rows[b]["bytes"]
        print(
            f"{fmt:>4} deterministic vs randomized  ser {ratio(a, b, 'ser_rps'):>6}  de {ratio(a, b, 'de_rps'):>6}  "
            f"bytes {rows[a]['bytes']} vs {rows[b]['bytes']} ({diff:+.1f} per record)"
        )


if __name__ == "__main__":
    main()
