"""Writes det.json, the frozen vectors of deterministic values (format 2, flags 0x01: AES-256-SIV), Avro and JSON
Schema, with avro_v1.json's test-only KEK and record-bound data key (domain ``vectors-value``, person ``p-1``) and one
more test-only data key, a deterministic one (domain ``customers/det``, the ``/det`` companion of the named domain
``customers``, same person), wrapped by the same KEK. Equal values give equal bytes: the two records' ``email`` and
the first record's ``billingEmail`` are one ciphertext. Run it only when the layout or the associated data of a
deterministic value changes, which is a format change: the tests reading the file prove it has not.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from make_v2 import V1, _cases, keyring_with_v1_key
from make_v2_views import add_key

import fieldcrypt
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.crypto.cipher import new_data_key
from fieldcrypt.json_schema import JSONSerializer

HERE = Path(__file__).parent
DET_KEY_ID = 0xDE70_0001
CONF: dict[str, Any] = {
    "fieldcrypt.tags": ["PII", "JOIN"],
    "fieldcrypt.deterministic.tags": ["JOIN"],
    "fieldcrypt.tag.domains": {"JOIN": "customers"},
}
AVRO_SCHEMA = {
    "type": "record",
    "name": "Joined",
    "namespace": "fieldcrypt.test",
    "fields": [
        {"name": "person", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["JOIN"]},
        {"name": "billingEmail", "type": "string", "confluent:tags": ["JOIN"]},
        {"name": "note", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "code", "type": ["null", "string"], "default": None, "confluent:tags": ["JOIN"]},
        {"name": "blob", "type": "bytes", "confluent:tags": ["JOIN"]},
        {"name": "plain", "type": "string"},
    ],
}
JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "fieldcrypt.test.Joined",
    "type": "object",
    "properties": {
        "person": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"type": "string", "confluent:tags": ["JOIN"]},
        "billingEmail": {"type": "string", "confluent:tags": ["JOIN"]},
        "note": {"type": ["null", "string"], "confluent:tags": ["PII"]},
        "code": {"type": ["null", "string"], "confluent:tags": ["JOIN"]},
        "blob": {"type": "string", "contentEncoding": "base64", "confluent:tags": ["JOIN"]},
        "plain": {"type": "string"},
    },
    "required": ["person", "email"],
}
AVRO_RECORDS: list[dict[str, Any]] = [
    {
        "person": "p-1",
        "email": "vector@example.com",
        "billingEmail": "vector@example.com",
        "note": None,
        "code": "DE",
        "blob": b"\x00\x01\xff",
        "plain": "visible",
    },
    {
        "person": "p-1",
        "email": "vector@example.com",
        "billingEmail": "",
        "note": "Ünïcode ✓",
        "code": None,
        "blob": b"",
        "plain": "",
    },
]


def det_key(tmp: Path) -> dict[str, Any]:
    """The deterministic data key (AES-256-SIV), wrapped by the test KEK as a key store holds it."""
    (tmp / "kek.json").write_text(json.dumps(V1["kek_keyset"]))
    (tmp / "kek.json").chmod(0o600)
    kek = fieldcrypt.open_kek(f"local-kek://{tmp / 'kek.json'}")
    _, wrapped = new_data_key(DET_KEY_ID, "customers/det", V1["key"]["person"], 1, kek.aead, deterministic=True)
    return {
        "key_id": DET_KEY_ID,
        "domain": "customers/det",
        "person": V1["key"]["person"],
        "version": 1,
        "wrapped": wrapped.hex(),
    }


def main() -> None:
    import base64

    key = det_key(Path(tempfile.mkdtemp()))
    ctx = SerializationContext(V1["topic"], MessageField.VALUE)
    json_records = [{**r, "blob": base64.b64encode(r["blob"]).decode()} for r in AVRO_RECORDS]
    cases: dict[str, Any] = {}
    for fmt, schema, records in (("avro", AVRO_SCHEMA, AVRO_RECORDS), ("json", JSON_SCHEMA, json_records)):
        tmp = Path(tempfile.mkdtemp())  # a key store per format (a subject records what its producers encrypt)
        keyring = keyring_with_v1_key(tmp)
        add_key(tmp / "keys.db", f"local-kek://{tmp / 'kek.json'}", key)
        registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        registry.register_schema(f"{V1['topic']}-value", Schema(json.dumps(schema), fmt.upper()))
        if fmt == "avro":
            ser: Any = AvroSerializer(registry, json.dumps(schema), conf=CONF, keyring=keyring)
        else:
            ser = JSONSerializer(json.dumps(schema), registry, conf=CONF, keyring=keyring)
        cases[fmt] = {"schema": schema, "cases": _cases(ser, records, ctx, 60 if fmt == "avro" else 160)}
        keyring.close()
    out = {
        "format_version": 2,
        "flags": 1,
        "comment": "Test-only keys (avro_v1.json's, and the deterministic key below). "
        "Do not regenerate; see make_det.py.",
        "topic": V1["topic"],
        "conf": CONF,
        "det_key": key,
        **cases,
    }
    (HERE / "det.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote", HERE / "det.json", file=sys.stderr)


if __name__ == "__main__":
    main()
