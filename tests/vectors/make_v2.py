"""Writes v2.json, the frozen vectors of value format version 2 (Avro and JSON Schema), with the test-only KEK and
data key of avro_v1.json (so both versions read from one key store). Run it only when introducing a format version:
the tests that read the file are what prove format 2 has not changed."""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path
from unittest import mock

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt import RotationPolicy
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.json_schema import JSONSerializer

HERE = Path(__file__).parent
V1 = json.loads((HERE / "avro_v1.json").read_text())
JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "fieldcrypt.test.Vector",
    "type": "object",
    "properties": {
        "person": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"type": "string", "confluent:tags": ["PII"]},
        "note": {"type": ["null", "string"], "confluent:tags": ["PII"]},
        "tags": {"type": "array", "items": {"type": "string", "confluent:tags": ["PII"]}},
        "plain": {"type": "string"},
    },
    "required": ["person", "email"],
}
JSON_RECORDS = [
    {"person": "p-1", "email": "vector@example.com", "note": None, "tags": ["a", "Ünïcode ✓"], "plain": "visible"},
    {"person": "p-1", "email": "", "note": "second", "tags": [], "plain": ""},
]


def keyring_with_v1_key(tmp: Path) -> fieldcrypt.Keyring:
    """A key store holding avro_v1.json's data key, under its KEK (what tests/test_wire_vectors.py sets up too)."""
    (tmp / "kek.json").write_text(json.dumps(V1["kek_keyset"]))
    (tmp / "kek.json").chmod(0o600)
    url = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
    k = V1["key"]
    db = sqlite3.connect(tmp / "keys.db")
    db.execute(
        "INSERT INTO fieldcrypt_keys (key_id, domain, person, version, state, kek_uri, wrapped, created_at) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?, 0)",
        (
            k["key_id"],
            k["domain"],
            k["person"],
            k["version"],
            f"local-kek://{tmp / 'kek.json'}",
            bytes.fromhex(k["wrapped"]),
        ),
    )
    db.commit()
    return fieldcrypt.Keyring(url, f"local-kek://{tmp / 'kek.json'}", rotation=RotationPolicy(max_age=None))


def _cases(ser: object, records: list[dict[str, object]], ctx: SerializationContext, first: int) -> list[object]:
    cases = []
    for i, rec in enumerate(records):
        nonce = bytes(range(first + i * 12, first + i * 12 + 12))
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=nonce):
            data = ser(rec, ctx)  # type: ignore[operator]
        cases.append(
            {
                "record": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in rec.items()},
                "record_nonce": nonce.hex(),
                "framed": data.hex(),
            }
        )
    return cases


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    keyring = keyring_with_v1_key(tmp)
    ctx = SerializationContext(V1["topic"], MessageField.VALUE)
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    avro = AvroSerializer(registry, json.dumps(V1["schema"]), keyring=keyring)
    from make_avro_v1 import RECORDS

    avro_cases = _cases(avro, RECORDS, ctx, 100)
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(f"{V1['topic']}-value", Schema(json.dumps(JSON_SCHEMA), "JSON"))
    js = JSONSerializer(json.dumps(JSON_SCHEMA), registry, keyring=keyring)
    json_cases = _cases(js, JSON_RECORDS, ctx, 200)
    out = {
        "format_version": 2,
        "comment": "Test-only keys (avro_v1.json's). Do not regenerate for format 2; see make_v2.py.",
        "topic": V1["topic"],
        "avro": {"schema": V1["schema"], "cases": avro_cases},
        "json": {"schema": JSON_SCHEMA, "cases": json_cases},
    }
    (HERE / "v2.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote", HERE / "v2.json", file=sys.stderr)


if __name__ == "__main__":
    main()
