"""Writes avro_v1.json, the frozen wire-format vectors. Run it only when introducing a new format version:
the test that reads the file is what proves format 1 has not changed."""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path
from unittest import mock

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AvroSerializer

HERE = Path(__file__).parent
SCHEMA = {
    "type": "record",
    "name": "Vector",
    "namespace": "fieldcrypt.test",
    "fields": [
        {"name": "person", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "note", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "blob", "type": "bytes", "confluent:tags": ["PII"]},
        {
            "name": "tags",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Tag",
                    "fields": [{"name": "label", "type": "string", "confluent:tags": ["PII"]}],
                },
            },
        },
        {"name": "plain", "type": "string"},
    ],
}
RECORDS = [
    {
        "person": "p-1",
        "email": "vector@example.com",
        "note": None,
        "blob": b"\x00\x01\xff",
        "tags": [{"label": "a"}, {"label": "Ünïcode ✓"}],
        "plain": "visible",
    },
    {"person": "p-1", "email": "", "note": "second", "blob": b"", "tags": [], "plain": ""},
]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    kek_uri = fieldcrypt.create_local_kek(tmp / "kek.json")
    keyring = fieldcrypt.Keyring(fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}"), kek_uri)
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ser = AvroSerializer(registry, json.dumps(SCHEMA), keyring=keyring)
    ctx = SerializationContext("vectors", MessageField.VALUE)
    cases = []
    for i, rec in enumerate(RECORDS):
        nonce = bytes(range(i * 12, i * 12 + 12))
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=nonce):
            data = ser(rec, ctx)
        cases.append(
            {
                "record": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in rec.items()},
                "record_nonce": nonce.hex(),
                "framed": data.hex(),
            }
        )
    db = sqlite3.connect(tmp / "keys.db")
    ((key_id, domain, person, version, wrapped),) = db.execute(
        "SELECT key_id, domain, person, version, wrapped FROM fieldcrypt_keys"
    ).fetchall()
    out = {
        "format_version": 1,
        "comment": "Test-only keys. Do not regenerate for format 1; see make_avro_v1.py.",
        "kek_keyset": json.loads((tmp / "kek.json").read_text()),
        "key": {
            "key_id": key_id,
            "domain": domain,
            "person": person,
            "version": version,
            "wrapped": bytes(wrapped).hex(),
        },
        "schema": SCHEMA,
        "topic": "vectors",
        "cases": cases,
    }
    (HERE / "avro_v1.json").write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", HERE / "avro_v1.json", file=sys.stderr)


if __name__ == "__main__":
    main()
