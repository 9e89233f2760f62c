"""Writes protobuf_v2.json, the frozen vectors of value format version 2 in Protobuf records, with the test-only KEK
and data key of avro_v1.json (one key store reads every vector file). The schema is frozen as the registry holds it
(base64 of its FileDescriptorProto), so the vectors do not depend on protoc. Run it only when introducing a format
version: the tests that read the file are what prove the Protobuf layout has not changed."""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

sys.path[:0] = [str(Path(__file__).resolve().parent.parent.parent), str(Path(__file__).resolve().parent.parent)]
import fieldcrypt  # noqa: E402
from fieldcrypt import RotationPolicy  # noqa: E402
from fieldcrypt.protobuf import ProtobufSerializer  # noqa: E402
from tests.proto_schemas import cls, field, file, files, map_entry, message  # noqa: E402
from tests.test_wire_vectors import VECTORS as V1  # noqa: E402
from tests.test_wire_vectors import _add_frozen_key  # noqa: E402

HERE = Path(__file__).parent


def schema() -> Any:
    """The vector schema: every enforced placement once (string, optional, repeated, string- and int-keyed map values,
    bytes, a oneof member, a nested message's field), the data-subject id, an untagged field."""
    vector = message(
        "Vector",
        [
            field("person", 1, "string", tags=["DATA_SUBJECT_ID"]),
            field("email", 2, "string", tags=["PII"]),
            field("note", 3, "string", tags=["PII"], optional=True, oneof=1),
            field("tags", 4, "string", tags=["PII"], repeated=True),
            field("attrs", 5, "message", type_name=".fieldcrypt.test.Vector.AttrsEntry", repeated=True, tags=["PII"]),
            field("codes", 6, "message", type_name=".fieldcrypt.test.Vector.CodesEntry", repeated=True, tags=["PII"]),
            field("blob", 7, "bytes", tags=["PII"]),
            field("inner", 8, "message", type_name=".fieldcrypt.test.Inner"),
            field("pager", 9, "string", tags=["PII"], oneof=0),
            field("desk", 10, "int32", oneof=0),
            field("plain", 11, "string"),
        ],
        nested=[map_entry("AttrsEntry", "string", "string"), map_entry("CodesEntry", "int32", "string")],
        oneofs=["reach", "_note"],
    )
    inner = message("Inner", [field("secret", 1, "string", tags=["PII"])])
    return file("vector.proto", "fieldcrypt.test", [vector, inner])


def records(Vector: Any) -> list[Any]:
    a = Vector(person="p-1", email="vector@example.com", note="a note", tags=["a", "Ünïcode ✓"], blob=b"\x00\xff")
    a.attrs["k"] = "v"
    a.attrs["é"] = "ü"
    a.codes[-7] = "minus seven"
    a.codes[3] = "three"
    a.inner.secret = "inner secret"
    a.pager = "555-0100"
    a.plain = "visible"
    b = Vector(person="p-1", email="", desk=4)  # an empty string is a value too; unset optional and oneof stay unset
    return [a, b]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "kek.json").write_text(json.dumps(V1["kek_keyset"]))
    (tmp / "kek.json").chmod(0o600)
    url = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
    keyring = fieldcrypt.Keyring(url, f"local-kek://{tmp / 'kek.json'}", rotation=RotationPolicy(max_age=None))
    _add_frozen_key(tmp, keyring, V1["key"])  # as tests/test_wire_vectors.py's fixture holds it
    ctx = SerializationContext(V1["topic"], MessageField.VALUE)
    proto = schema()
    Vector = cls(files(proto), "fieldcrypt.test.Vector")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ser = ProtobufSerializer(Vector, registry, {"use.deprecated.format": False}, keyring=keyring)
    cases = []
    for i, rec in enumerate(records(Vector)):
        nonce = bytes(range(150 + i * 12, 150 + i * 12 + 12))
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=nonce):
            data = ser(rec, ctx)
        cases.append(
            {
                "message": rec.SerializeToString(deterministic=True).hex(),
                "record_nonce": nonce.hex(),
                "framed": data.hex(),
            }
        )
    out = {
        "format_version": 2,
        "comment": "Test-only keys (avro_v1.json's). Do not regenerate for format 2; see make_protobuf.py.",
        "topic": V1["topic"],
        "schema": base64.b64encode(proto.SerializeToString(deterministic=True)).decode(),
        "message": "fieldcrypt.test.Vector",
        "cases": cases,
    }
    (HERE / "protobuf_v2.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote", HERE / "protobuf_v2.json", file=sys.stderr)


if __name__ == "__main__":
    main()
