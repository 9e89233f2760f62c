"""Writes v2_views.json, the frozen vectors of format-2 values carrying a masked view (flags 0x04), Avro and JSON
Schema, with avro_v1.json's test-only KEK and data key (the values' key, domain ``vectors-value``, person ``p-1``)
and one more test-only data key, the views' (domain ``vectors-value/masked``, same person), wrapped by the same KEK.
Run it only when the layout of a view changes, which is a format change: the tests reading the file prove it has not.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from make_v2 import V1, _cases, keyring_with_v1_key

import fieldcrypt
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.crypto.cipher import new_data_key
from fieldcrypt.json_schema import JSONSerializer

HERE = Path(__file__).parent
VIEW_KEY_ID = 0x5EE0_0001
CONF: dict[str, Any] = {"fieldcrypt.tags": ["EMAIL", "NAME"], "fieldcrypt.masks": {"EMAIL": "email", "NAME": "name"}}
AVRO_SCHEMA = {
    "type": "record",
    "name": "Viewed",
    "namespace": "fieldcrypt.test",
    "fields": [
        {"name": "person", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["EMAIL"]},
        {"name": "name", "type": ["null", "string"], "default": None, "confluent:tags": ["NAME"]},
        {"name": "aliases", "type": {"type": "array", "items": "string"}, "confluent:tags": ["NAME"]},
        {"name": "plain", "type": "string"},
    ],
}
JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "fieldcrypt.test.Viewed",
    "type": "object",
    "properties": {
        "person": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"type": "string", "confluent:tags": ["EMAIL"]},
        "name": {"type": ["null", "string"], "confluent:tags": ["NAME"]},
        "aliases": {"type": "array", "items": {"type": "string", "confluent:tags": ["NAME"]}},
        "plain": {"type": "string"},
    },
    "required": ["person", "email"],
}
RECORDS = [
    {"person": "p-1", "email": "Vector@Example.COM", "name": "Zoë Ångström", "aliases": ["Ann Lee"], "plain": "v"},
    {"person": "p-1", "email": "x@y", "name": None, "aliases": [], "plain": ""},
]


def view_key(tmp: Path) -> dict[str, Any]:
    """The views' data key, wrapped by the test KEK as a key store holds it."""
    (tmp / "kek.json").write_text(json.dumps(V1["kek_keyset"]))
    (tmp / "kek.json").chmod(0o600)
    kek = fieldcrypt.open_kek(f"local-kek://{tmp / 'kek.json'}")
    domain = f"{V1['key']['domain']}/masked"
    _, wrapped = new_data_key(VIEW_KEY_ID, domain, V1["key"]["person"], 1, kek.aead)
    return {
        "key_id": VIEW_KEY_ID,
        "domain": domain,
        "person": V1["key"]["person"],
        "version": 1,
        "wrapped": wrapped.hex(),
    }


def add_key(db_path: Path, kek_uri: str, key: dict[str, Any]) -> None:
    db = sqlite3.connect(db_path)
    db.execute(
        "INSERT INTO fieldcrypt_keys (key_id, domain, person, version, state, kek_uri, wrapped, created_at) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?, 0)",
        (key["key_id"], key["domain"], key["person"], key["version"], kek_uri, bytes.fromhex(key["wrapped"])),
    )
    db.commit()
    db.close()


def main() -> None:
    key = view_key(Path(tempfile.mkdtemp()))
    ctx = SerializationContext(V1["topic"], MessageField.VALUE)
    cases: dict[str, Any] = {}
    for fmt, schema in (("avro", AVRO_SCHEMA), ("json", JSON_SCHEMA)):
        tmp = Path(tempfile.mkdtemp())  # a key store per format (a subject records what its producers encrypt)
        keyring = keyring_with_v1_key(tmp)
        add_key(tmp / "keys.db", f"local-kek://{tmp / 'kek.json'}", key)
        registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        registry.register_schema(f"{V1['topic']}-value", Schema(json.dumps(schema), fmt.upper()))
        if fmt == "avro":
            ser: Any = AvroSerializer(registry, json.dumps(schema), conf=CONF, keyring=keyring)
        else:
            ser = JSONSerializer(json.dumps(schema), registry, conf=CONF, keyring=keyring)
        cases[fmt] = {"schema": schema, "cases": _cases(ser, RECORDS, ctx, 30 if fmt == "avro" else 130)}
    out = {
        "format_version": 2,
        "flags": 4,
        "comment": "Test-only keys (avro_v1.json's, and the views' key below). "
        "Do not regenerate; see make_v2_views.py.",
        "topic": V1["topic"],
        "conf": CONF,
        "view_key": key,
        **cases,
    }
    (HERE / "v2_views.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote", HERE / "v2_views.json", file=sys.stderr)


if __name__ == "__main__":
    main()
