"""Frozen wire-format vectors (tests/vectors/avro_v1.json). A change that breaks this test is a format change."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import tink
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import Keyring, RotationPolicy
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire
from fieldcrypt.crypto.cipher import person_check_of, unwrap_handle, with_check, wrap_handle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "avro_v1.json").read_text())
V2 = json.loads((Path(__file__).parent / "vectors" / "v2.json").read_text())


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: (bytes.fromhex(v) if k == "blob" else v) for k, v in raw.items()}


def _add_frozen_key(tmp_path: Path, keyring: Keyring, k: dict[str, Any]) -> None:
    """Put the frozen data key ``k`` into the test's key store as the key store holds a data subject's key: under the
    keyed pseudonym of its person (its domain's pseudonym key, as ``keyring`` computes it), wrapped by the frozen
    KEK with associated data binding that pseudonym, with its person check. The key material is the frozen one
    (unwrapped from the vector's wrapping, which binds the person in clear), so the values it encrypts are the frozen
    bytes: their associated data binds the person the record names."""
    kek_uri = f"local-kek://{tmp_path / 'kek.json'}"
    kek = fieldcrypt.open_kek(kek_uri).aead
    pseudonym = keyring._stored(k["domain"], k["person"])
    assert pseudonym is not None and pseudonym != k["person"]
    ids = (k["key_id"], k["domain"])
    handle = unwrap_handle(bytes.fromhex(k["wrapped"]), *ids, k["person"], k["version"], kek)
    # with the key's person check (the id, encrypted under the key), as a producer stores it
    wrapped = with_check(person_check_of(handle, k["person"]), wrap_handle(handle, *ids, pseudonym, k["version"], kek))
    db = sqlite3.connect(tmp_path / "keys.db")
    db.execute(
        "INSERT INTO fieldcrypt_keys (key_id, domain, person, version, state, kek_uri, wrapped, created_at) "
        "VALUES (?, ?, ?, ?, 'active', ?, ?, 0)",
        (k["key_id"], k["domain"], pseudonym, k["version"], kek_uri, wrapped),
    )
    db.commit()
    db.close()


@pytest.fixture
def frozen(tmp_path: Path) -> tuple[Keyring, SchemaRegistryClient]:
    (tmp_path / "kek.json").write_text(json.dumps(VECTORS["kek_keyset"]))
    (tmp_path / "kek.json").chmod(0o600)  # a KEK readable by others is refused
    url = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    # the frozen key was created at time 0: no age rotation, or the keyring would (rightly) replace it
    keyring = Keyring(url, f"local-kek://{tmp_path / 'kek.json'}", rotation=RotationPolicy(max_age=None))
    _add_frozen_key(tmp_path, keyring, VECTORS["key"])
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
    ser = AvroSerializer(
        registry, json.dumps(VECTORS["schema"]), conf={"fieldcrypt.format.version": 1}, keyring=keyring
    )
    for case in VECTORS["cases"]:
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
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


# -- format version 2 (tests/vectors/v2.json, same key) -----------------------------------------------------------
def _serdes(fmt: str, registry: SchemaRegistryClient, keyring: Keyring, **conf: Any) -> tuple[Any, Any]:
    from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

    text = json.dumps(V2[fmt]["schema"])
    if fmt == "avro":
        registry.register_schema(f"{V2['topic']}-value", Schema(text, "AVRO"))
        return AvroSerializer(registry, text, keyring=keyring), AvroDeserializer(registry, conf=conf, keyring=keyring)
    registry.register_schema(f"{V2['topic']}-value", Schema(text, "JSON"))
    return (
        JSONSerializer(text, registry, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_v2_frozen_bytes_decrypt_and_reproduce(frozen, fmt: str) -> None:
    keyring, registry = frozen
    ser, de = _serdes(fmt, registry, keyring, **{"fieldcrypt.min.format.version": 2})
    for case in V2[fmt]["cases"]:
        record = _record(case["record"])
        assert de(bytes.fromhex(case["framed"]), value_ctx(V2["topic"])) == record
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
            assert ser(record, value_ctx(V2["topic"])).hex() == case["framed"]


def test_min_format_version_refuses_v1_values_and_default_reads_both(frozen) -> None:
    keyring, registry = frozen
    _, strict = _serdes("avro", registry, keyring, **{"fieldcrypt.min.format.version": 2})
    lenient = AvroDeserializer(registry, keyring=keyring)
    for case in VECTORS["cases"]:
        with pytest.raises(fieldcrypt.UnsupportedFormatError):
            strict(bytes.fromhex(case["framed"]), value_ctx(VECTORS["topic"]))
        assert lenient(bytes.fromhex(case["framed"]), value_ctx(VECTORS["topic"])) == _record(case["record"])
    for case in V2["avro"]["cases"]:
        assert lenient(bytes.fromhex(case["framed"]), value_ctx(V2["topic"])) == _record(case["record"])


@pytest.mark.parametrize("bad", [0, "3", 3, 1.0, True, None])
def test_format_version_settings_are_checked(bad: Any) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    keyring = mock.MagicMock(spec=Keyring)
    with pytest.raises(fieldcrypt.ConfigurationError):
        AvroSerializer(
            registry, json.dumps(VECTORS["schema"]), conf={"fieldcrypt.format.version": bad}, keyring=keyring
        )
    with pytest.raises(fieldcrypt.ConfigurationError):
        AvroDeserializer(registry, conf={"fieldcrypt.min.format.version": bad}, keyring=keyring)


def test_v2_layout_as_documented() -> None:
    """docs/wire-format.md: version 2, flags 0, key id, LEB128 index; on index 0 the record nonce and the count."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(f"{V2['topic']}-value", Schema(json.dumps(V2["avro"]["schema"]), "AVRO"))
    case = V2["avro"]["cases"][0]
    seen = Plain(registry)(bytes.fromhex(case["framed"]), value_ctx(V2["topic"]))
    key_id = VECTORS["key"]["key_id"]
    email = wire.decode_text(seen["email"])
    assert email[:2] == b"\x02\x00" and int.from_bytes(email[2:6], "big") == key_id
    assert email[6] == 0 and email[7:19] == bytes.fromhex(case["record_nonce"])
    assert int.from_bytes(email[19:23], "big") == 4  # email, blob, two labels (the null note is not counted)
    assert len(email) == 2 + 4 + 1 + 12 + 4 + len("vector@example.com") + 16
    blob = seen["blob"]
    assert blob[:2] == b"\x02\x00" and blob[6] == 1 and len(blob) == 2 + 4 + 1 + 3 + 16  # index 1, no nonce
    labels = [wire.decode_text(t["label"]) for t in seen["tags"]]
    assert [b[6] for b in labels] == [2, 3]


# -- format version 2 with masked views (tests/vectors/v2_views.json: the values' and the views' keys) -----------
VIEWS = json.loads((Path(__file__).parent / "vectors" / "v2_views.json").read_text())


def _add_view_key(tmp_path: Path, keyring: Keyring) -> None:
    _add_frozen_key(tmp_path, keyring, VIEWS["view_key"])


def _view_serdes(fmt: str, registry: SchemaRegistryClient, keyring: Keyring) -> tuple[Any, Any]:
    from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

    text, conf = json.dumps(VIEWS[fmt]["schema"]), VIEWS["conf"]
    registry.register_schema(f"{VIEWS['topic']}-value", Schema(text, fmt.upper()))
    if fmt == "avro":
        return AvroSerializer(registry, text, conf=conf, keyring=keyring), AvroDeserializer(
            registry, conf=conf, keyring=keyring
        )
    return (
        JSONSerializer(text, registry, conf=conf, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_v2_view_frozen_bytes_decrypt_and_reproduce(frozen, tmp_path: Path, fmt: str) -> None:
    keyring, registry = frozen
    _add_view_key(tmp_path, keyring)
    ser, de = _view_serdes(fmt, registry, keyring)
    for case in VIEWS[fmt]["cases"]:
        assert de(bytes.fromhex(case["framed"]), value_ctx(VIEWS["topic"])) == case["record"]
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
            assert ser(case["record"], value_ctx(VIEWS["topic"])).hex() == case["framed"]


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_v2_view_frozen_bytes_read_as_masks_without_the_values_key(tmp_path: Path, fmt: str) -> None:
    """A reader whose key store holds only the views' key reads the frozen records' masks."""
    (tmp_path / "kek.json").write_text(json.dumps(VECTORS["kek_keyset"]))
    (tmp_path / "kek.json").chmod(0o600)
    fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    with Keyring(
        f"sqlite:///{tmp_path / 'keys.db'}",
        f"local-kek://{tmp_path / 'kek.json'}",
        rotation=RotationPolicy(max_age=None),
    ) as keyring:
        _add_view_key(tmp_path, keyring)
        _, de = _view_serdes(fmt, registry, keyring)
        first, second = (bytes.fromhex(c["framed"]) for c in VIEWS[fmt]["cases"])
        got = de(first, value_ctx(VIEWS["topic"]))
        assert got == {"person": "p-1", "email": "***@example.com", "name": "Z. Å.", "aliases": ["A. L."], "plain": "v"}
        assert de(second, value_ctx(VIEWS["topic"])) == dict(VIEWS[fmt]["cases"][1]["record"], email="***@y")


def test_v2_view_layout_as_documented() -> None:
    """docs/wire-format.md: flags 0x04; after the index (and, on index 0, nonce and count) the view: LEB128 v, the
    view key id, v bytes of sealed masked text; then the value's own ciphertext and tag."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(f"{VIEWS['topic']}-value", Schema(json.dumps(VIEWS["avro"]["schema"]), "AVRO"))
    case = VIEWS["avro"]["cases"][0]
    seen = Plain(registry)(bytes.fromhex(case["framed"]), value_ctx(VIEWS["topic"]))
    email = wire.decode_text(seen["email"])
    assert email[:2] == b"\x02\x04" and int.from_bytes(email[2:6], "big") == VECTORS["key"]["key_id"]
    assert email[6] == 0 and email[7:19] == bytes.fromhex(case["record_nonce"])
    assert int.from_bytes(email[19:23], "big") == 3  # email, name, one alias
    masked = len("***@example.com")
    assert email[23] == masked + 16 and int.from_bytes(email[24:28], "big") == VIEWS["view_key"]["key_id"]
    assert len(email) == 23 + 1 + 4 + masked + 16 + len("Vector@Example.COM") + 16
    name = wire.decode_text(seen["name"])
    assert name[:2] == b"\x02\x04" and name[6] == 1 and name[7] == len("Z. Å.".encode()) + 16
    assert len(name) == 7 + 1 + 4 + len("Z. Å.".encode()) + 16 + len("Zoë Ångström".encode()) + 16


# -- format version 2, deterministic values (tests/vectors/det.json: the record-bound key and a deterministic one) --
DET = json.loads((Path(__file__).parent / "vectors" / "det.json").read_text())


def _add_det_key(tmp_path: Path, keyring: Keyring) -> None:
    _add_frozen_key(tmp_path, keyring, DET["det_key"])


def _det_serdes(fmt: str, registry: SchemaRegistryClient, keyring: Keyring) -> tuple[Any, Any]:
    from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

    text, conf = json.dumps(DET[fmt]["schema"]), DET["conf"]
    registry.register_schema(f"{DET['topic']}-value", Schema(text, fmt.upper()))
    if fmt == "avro":
        return AvroSerializer(registry, text, conf=conf, keyring=keyring), AvroDeserializer(
            registry, conf=conf, keyring=keyring
        )
    return (
        JSONSerializer(text, registry, conf=conf, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_det_frozen_bytes_decrypt_and_reproduce(frozen, tmp_path: Path, fmt: str) -> None:
    keyring, registry = frozen
    _add_det_key(tmp_path, keyring)
    ser, de = _det_serdes(fmt, registry, keyring)
    for case in DET[fmt]["cases"]:
        record = _record(case["record"]) if fmt == "avro" else case["record"]
        assert de(bytes.fromhex(case["framed"]), value_ctx(DET["topic"])) == record
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
            assert ser(record, value_ctx(DET["topic"])).hex() == case["framed"]
    # the frozen key is the one in use: never replaced by age or count (created at time 0, read and written again)
    assert [k.key_id for k in keyring.keys() if k.domain == "customers/det"] == [DET["det_key"]["key_id"]]


def _det_values(fmt: str) -> list[dict[str, Any]]:
    """The frozen records as a reader without fieldcrypt sees them (deterministic values as text)."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvro
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSON

    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(f"{DET['topic']}-value", Schema(json.dumps(DET[fmt]["schema"]), fmt.upper()))
    plain: Any = PlainAvro(registry) if fmt == "avro" else PlainJSON(None, schema_registry_client=registry)
    return [plain(bytes.fromhex(c["framed"]), value_ctx(DET["topic"])) for c in DET[fmt]["cases"]]


def _siv_key() -> Any:
    """The frozen deterministic key's AES-SIV, unwrapped from the vector file by hand (not through the key source)."""
    import tempfile

    from cryptography.hazmat.primitives.ciphers.aead import AESSIV
    from tink import secret_key_access
    from tink.proto import aes_siv_pb2, tink_pb2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kek.json"
        path.write_text(json.dumps(VECTORS["kek_keyset"]))
        path.chmod(0o600)
        kek = fieldcrypt.open_kek(f"local-kek://{path}")
        k = DET["det_key"]
        handle = unwrap_handle(bytes.fromhex(k["wrapped"]), k["key_id"], k["domain"], k["person"], 1, kek.aead)
    keyset = tink_pb2.Keyset.FromString(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))
    assert keyset.key[0].key_data.type_url.endswith("AesSivKey")
    return AESSIV(aes_siv_pb2.AesSivKey.FromString(keyset.key[0].key_data.value).key_value)


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_det_layout_and_associated_data_as_documented(fmt: str) -> None:
    """docs/wire-format.md: 0x02, flags 0x01, the key id of the <domain>/det key, then the AES-SIV output (synthetic
    IV, then ciphertext): m + 22 bytes, no index, nonce or count. Associated data: b"fieldcrypt" 0x02 | 0x01 | key id
    | lp(key domain), nothing of the person, schema or field path; equal values are equal bytes across records and
    fields."""
    first, second = _det_values(fmt)
    key_id = DET["det_key"]["key_id"]
    unwrap = wire.decode_text
    email = unwrap(first["email"])
    assert email[:2] == b"\x02\x01" and int.from_bytes(email[2:6], "big") == key_id
    assert len(email) == 2 + 4 + 16 + len("vector@example.com")
    assert wire.is_deterministic(email) and wire.parse_deterministic(email) == (key_id, email[6:])
    # joins: the same value in another record and in another field of the same domain and person
    assert first["email"] == second["email"] == first["billingEmail"]
    assert len(unwrap(second["billingEmail"])) == 22  # an empty value
    ad = b"fieldcrypt\x02" + b"\x01" + key_id.to_bytes(4, "big") + len(b"customers/det").to_bytes(4, "big")
    ad += b"customers/det"
    assert wire.deterministic_ad(key_id, "customers/det") == ad
    siv = _siv_key()
    assert siv.decrypt(email[6:], [ad]) == b"vector@example.com"
    blob = first["blob"] if fmt == "avro" else wire.decode_base64(first["blob"])
    assert blob[:2] == b"\x02\x01" and siv.decrypt(blob[6:], [ad]) == b"\x00\x01\xff"
    # the record-bound values around them are counted without the deterministic ones: n = 1 in the first record
    note = unwrap(second["note"])
    assert note[:2] == b"\x02\x00" and note[6] == 0 and int.from_bytes(note[19:23], "big") == 1
    assert first["note"] is None and second["code"] is None


def test_det_values_are_refused_by_a_reader_of_an_older_format() -> None:
    """A release before deterministic values reads flags 0x01 as a feature of a newer writer: the parser of
    record-bound values says so (UnsupportedValue, the deserializer's UnsupportedFormatError), never plaintext."""
    first, _ = _det_values("avro")
    with pytest.raises(wire.UnsupportedValue) as info:
        wire.parse_value(wire.decode_text(first["email"]))
    assert info.value.key_id == DET["det_key"]["key_id"]


# -- Protobuf records, format version 2 (tests/vectors/protobuf_v2.json, same key) ---------------------------------
PROTO = json.loads((Path(__file__).parent / "vectors" / "protobuf_v2.json").read_text())


def _proto_class() -> Any:
    """The frozen schema's message class, built from the FileDescriptorProto as the registry holds it (no protoc)."""
    import base64

    from confluent_kafka.schema_registry.confluent import meta_pb2
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.message_factory import GetMessageClass

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(meta_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(base64.b64decode(PROTO["schema"]))
    return GetMessageClass(pool.FindMessageTypeByName(PROTO["message"]))


def test_protobuf_frozen_bytes_decrypt_and_reproduce(frozen) -> None:
    from fieldcrypt.protobuf import ProtobufDeserializer, ProtobufSerializer

    keyring, registry = frozen
    Vector = _proto_class()
    conf = {"use.deprecated.format": False}
    ser = ProtobufSerializer(Vector, registry, conf, keyring=keyring)
    de = ProtobufDeserializer(Vector, {**conf, "fieldcrypt.min.format.version": 2}, registry, keyring=keyring)
    for case in PROTO["cases"]:
        message = Vector.FromString(bytes.fromhex(case["message"]))
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes.fromhex(case["record_nonce"])):
            assert ser(message, value_ctx(PROTO["topic"])).hex() == case["framed"]
        assert de(bytes.fromhex(case["framed"]), value_ctx(PROTO["topic"])) == message


def test_protobuf_layout_as_documented(frozen) -> None:
    """docs/wire-format.md, Protobuf: a string field holds the value's unpadded base64 text, a bytes field its bytes,
    in format 2's layout (version 2, flags 0, key id, LEB128 index; on index 0 the record nonce and the count);
    values are numbered in the plan's walk order (fields by number, map entries by key, whatever the declaration
    order); the framing is
    confluent's (magic byte, schema id, message indexes: [0] as one zero byte)."""
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as Plain

    _, registry = frozen
    Vector = _proto_class()
    conf = {"use.deprecated.format": False}
    from fieldcrypt.protobuf import ProtobufSerializer

    ProtobufSerializer(Vector, registry, conf, keyring=frozen[0])  # (constructing registers nothing)
    case = PROTO["cases"][0]
    framed = bytes.fromhex(case["framed"])
    assert framed[0] == 0 and framed[5] == 0  # prefix, then message indexes [0]
    from confluent_kafka.schema_registry import Schema

    registry.register_schema(f"{PROTO['topic']}-value", Schema(PROTO["schema"], "PROTOBUF"))
    seen = Plain(Vector, conf, registry)(framed, value_ctx(PROTO["topic"]))
    email = wire.decode_text(seen.email)
    assert email[:2] == b"\x02\x00" and int.from_bytes(email[2:6], "big") == VECTORS["key"]["key_id"]
    assert "=" not in seen.email
    order = [
        seen.email,
        seen.note,
        *seen.tags,
        seen.attrs["k"],
        seen.attrs["é"],
        seen.codes[-7],
        seen.codes[3],
        seen.blob,
        seen.inner.secret,
        seen.pager,
    ]
    blobs = [v if isinstance(v, bytes) else wire.decode_text(v) for v in order]
    assert [b[6] for b in blobs] == list(range(len(order)))  # value indexes in walk order
    assert blobs[0][7:19] == bytes.fromhex(case["record_nonce"])
    assert int.from_bytes(blobs[0][19:23], "big") == len(order)  # the count: every value of the record
