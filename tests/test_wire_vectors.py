"""Frozen wire-format vectors (tests/vectors/avro_v1.json). A change that breaks this test is a format change."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import Keyring, RotationPolicy
from fieldcrypt import _wire as wire
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

VECTORS = json.loads((Path(__file__).parent / "vectors" / "avro_v1.json").read_text())


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: (bytes.fromhex(v) if k == "blob" else v) for k, v in raw.items()}


@pytest.fixture
def frozen(tmp_path: Path) -> tuple[Keyring, SchemaRegistryClient]:
    (tmp_path / "kek.json").write_text(json.dumps(VECTORS["kek_keyset"]))
    (tmp_path / "kek.json").chmod(0o600)  # a KEK readable by others is refused
    url = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    # the frozen key was created at time 0: no age rotation, or the keyring would (rightly) replace it
    keyring = Keyring(url, f"local-kek://{tmp_path / 'kek.json'}", rotation=RotationPolicy(max_age=None))
    k = VECTORS["key"]
    db = sqlite3.connect(tmp_path / "keys.db")
    db.execute(
        "INSERT INTO fieldcrypt_keys (key_id, domain, person, version, state, kek_uri, wrapped, created_at) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?, 0)",
        (
            k["key_id"],
            k["domain"],
            k["person"],
            k["version"],
            f"local-kek://{tmp_path / 'kek.json'}",
            bytes.fromhex(k["wrapped"]),
        ),
    )
    db.commit()
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    return keyring, registry


def test_frozen_bytes_decrypt(frozen) -> None:
    keyring, registry = frozen
    registry.register_schema(f"{VECTORS['topic']}-value", Schema(json.dumps(VECTORS["schema"]), "AVRO"))
    de = AvroDeserializer(registry, keyring=keyring)
    for case in VECTORS["cases"]:
        assert de(bytes.fromhex(case["framed"]), value_ctx(VECTORS["topic"])) == _record(case["record"])


def test_encryption_reproduces_frozen_bytes(frozen) -> None:
    keyring, registry = frozen
    ser = AvroSerializer(registry, json.dumps(VECTORS["schema"]), keyring=keyring)
    for case in VECTORS["cases"]:
        with mock.patch("fieldcrypt._engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
            assert ser(_record(case["record"]), value_ctx(VECTORS["topic"])).hex() == case["framed"]


def test_layout_as_documented() -> None:
    """docs/wire-format.md: version, key id, LEB128 index, the record nonce on index 0 only, then GCM body."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(f"{VECTORS['topic']}-value", Schema(json.dumps(VECTORS["schema"]), "AVRO"))
    case = VECTORS["cases"][0]
    seen = Plain(registry)(bytes.fromhex(case["framed"]), value_ctx(VECTORS["topic"]))
    key_id = VECTORS["key"]["key_id"]
    email = wire.decode_text(seen["email"])
    assert email[0] == 1 and int.from_bytes(email[1:5], "big") == key_id
    assert email[5] == 0 and email[6:18] == bytes.fromhex(case["record_nonce"])
    assert len(email) == 1 + 4 + 1 + 12 + len("vector@example.com") + 16
    blob = seen["blob"]
    assert blob[5] == 1 and len(blob) == 1 + 4 + 1 + 3 + 16  # index 1, no nonce
    labels = [wire.decode_text(t["label"]) for t in seen["tags"]]
    assert [b[5] for b in labels] == [2, 3]
    assert "=" not in seen["email"]
