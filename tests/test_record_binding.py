"""Format version 2 binds a record's encrypted values together and a JSON value to its schema (issue 15, items 3
and 9): an attacker who can produce to the topic nulls, drops or adds an encrypted value, or copies a ciphertext
into a record of another JSON schema sharing the key domain; each is a DecryptionError. Version 1 values (still
read) allow both, which is what ``fieldcrypt.min.format.version=2`` closes."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from conftest import value_ctx

from fieldcrypt import DecryptionError, Keyring, UnsupportedFormatError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

AVRO = {
    "type": "record",
    "name": "Contact",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "phone", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "notes", "type": {"type": "array", "items": "string"}, "default": [], "confluent:tags": ["PII"]},
        {"name": "city", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
    ],
}
PARSED = fastavro.parse_schema(AVRO)
RECORD = {"id": "p-1", "email": "a@example.com", "phone": "+4915112345678", "notes": ["x", "y"], "city": "Bonn"}


def _decode(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(data[5:]), PARSED, None)
    return out


def _encode(prefix: bytes, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, record)
    return prefix[:5] + buf.getvalue()


def _avro_pair(registry: Any, keyring: Keyring, version: int = 2, **read: Any) -> tuple[Any, Any]:
    ser = AvroSerializer(registry, json.dumps(AVRO), conf={"fieldcrypt.format.version": version}, keyring=keyring)
    return ser, AvroDeserializer(registry, conf=read, keyring=keyring)


ALTERATIONS = {
    "null the first value": lambda r: dict(r, email=None),
    "null a middle value": lambda r: dict(r, phone=None),
    "null the last value": lambda r: dict(r, city=None),
    "drop an array element's value": lambda r: dict(r, notes=r["notes"][:1]),
    "drop the last array element": lambda r: dict(r, notes=r["notes"][:-1]),
    "null every value but the first": lambda r: dict(r, phone=None, notes=[], city=None),
}


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
def test_removing_an_encrypted_value_is_detected(registry, keyring: Keyring, alteration: str) -> None:
    ser, de = _avro_pair(registry, keyring)
    data = ser(RECORD, value_ctx())
    assert de(data, value_ctx()) == RECORD
    altered = _encode(data, ALTERATIONS[alteration](_decode(data)))
    with pytest.raises(DecryptionError) as err:
        de(altered, value_ctx())
    assert type(err.value) is DecryptionError  # tampered: not "erased", not "no access"
    assert "a@example.com" not in str(err.value)


def test_adding_a_value_from_another_record_is_detected(registry, keyring: Keyring) -> None:
    ser, de = _avro_pair(registry, keyring)
    sparse = ser(dict(RECORD, city=None), value_ctx())
    full = _decode(ser(RECORD, value_ctx()))
    with pytest.raises(DecryptionError):
        de(_encode(sparse, dict(_decode(sparse), city=full["city"])), value_ctx())


def test_version_1_still_reads_and_documents_its_gap(registry, keyring: Keyring) -> None:
    """A writer pinned to version 1 (rollout): its values read, and nulling one is not detected (what
    docs/wire-format.md says version 1 still allows) until consumers set fieldcrypt.min.format.version=2."""
    ser, de = _avro_pair(registry, keyring, version=1)
    data = ser(RECORD, value_ctx())
    assert de(data, value_ctx()) == RECORD
    nulled = _encode(data, dict(_decode(data), city=None))
    assert de(nulled, value_ctx())["city"] is None  # version 1: undetected
    strict = AvroDeserializer(registry, conf={"fieldcrypt.min.format.version": 2}, keyring=keyring)
    with pytest.raises(UnsupportedFormatError):
        strict(nulled, value_ctx())


def test_a_record_whose_values_are_all_null_reads(registry, keyring: Keyring) -> None:
    ser, de = _avro_pair(registry, keyring)
    empty = {"id": "p-1", "email": None, "phone": None, "notes": [], "city": None}
    assert de(ser(empty, value_ctx()), value_ctx()) == empty


def test_erased_values_keep_the_count(registry, keyring: Keyring) -> None:
    """A shredded person's record reads as erased (on.erased=null), not as tampered: the count still holds."""
    ser, de = _avro_pair(registry, keyring)
    data = ser(RECORD, value_ctx())
    keyring.shred_person("p-1", reason="test")
    out = de(data, value_ctx())
    # null where the schema admits it; the items of an array of strings cannot be null: the placeholder
    assert out["email"] is None and out["city"] is None and out["notes"] == ["<erased>", "<erased>"]
    assert fastavro.validation.validate(out, PARSED)


# -- JSON values are bound to their schema ------------------------------------------------------------------------
def _json_schema(title: str | None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "customerId": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            "email": {"type": "string", "confluent:tags": ["PII"]},
        },
        "required": ["customerId", "email"],
    }
    if title is not None:
        schema["title"] = title
    return schema


SHARED = {"fieldcrypt.tag.domains": {"PII": "customers"}}


@pytest.mark.parametrize("titles", [("Order", "PublicProfile"), (None, None)])
def test_a_json_ciphertext_moved_to_another_schema_sharing_the_domain_fails(
    registry, keyring: Keyring, titles: tuple[str | None, str | None]
) -> None:
    """An Order's email ciphertext copied into a PublicProfile record of the same person: with a named domain
    shared by both subjects the key is the same, and JSON paths both read $.email."""
    order, profile = (json.dumps(_json_schema(t)) for t in titles)
    w_order = JSONSerializer(order, registry, conf=SHARED, keyring=keyring)
    w_profile = JSONSerializer(profile, registry, conf=SHARED, keyring=keyring)
    r = JSONDeserializer(None, schema_registry_client=registry, conf=SHARED, keyring=keyring)
    a = w_order({"customerId": "c-1", "email": "secret@example.com"}, value_ctx("orders"))
    b = w_profile({"customerId": "c-1", "email": "public@example.com"}, value_ctx("profiles"))
    assert r(a, value_ctx("orders"))["email"] == "secret@example.com"
    moved = json.loads(b[5:])
    moved["email"] = json.loads(a[5:])["email"]
    with pytest.raises(DecryptionError):
        r(b[:5] + json.dumps(moved).encode(), value_ctx("profiles"))
    # pinned to version 1, the same move reads (the gap version 2 closes)
    v1 = {**SHARED, "fieldcrypt.format.version": 1}
    a1 = JSONSerializer(order, registry, conf=v1, keyring=keyring)(
        {"customerId": "c-1", "email": "s@x.io"}, value_ctx("orders")
    )
    moved["email"] = json.loads(a1[5:])["email"]
    assert r(b[:5] + json.dumps(moved).encode(), value_ctx("profiles"))["email"] == "s@x.io"


def test_a_mirrored_json_topic_reads_through_fieldcrypt_domain(registry, keyring: Keyring) -> None:
    """A schema with neither $id nor title is bound to the default domain (the subject): a mirror whose subject
    differs reads it by naming the original subject in fieldcrypt.domain, as for keys."""
    schema = json.dumps(_json_schema(None))
    data = JSONSerializer(schema, registry, keyring=keyring)({"customerId": "c-1", "email": "m@x.io"}, value_ctx())
    registry.register_schema("mirror.orders-value", Schema(schema, "JSON"))
    mirror = JSONDeserializer(
        None, schema_registry_client=registry, conf={"fieldcrypt.domain": "orders-value"}, keyring=keyring
    )
    assert mirror(data, value_ctx("mirror.orders"))["email"] == "m@x.io"
    plain = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    with pytest.raises(DecryptionError):
        plain(data, value_ctx("mirror.orders"))


# -- the count cannot be rewritten in a value 0 the reader cannot authenticate ------------------------------------
SPLIT = {
    "type": "record",
    "name": "Payment",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "iban", "type": ["null", "string"], "default": None, "confluent:tags": ["FIN"]},
        {"name": "phone", "type": ["null", "string"], "default": None, "confluent:tags": ["FIN"]},
    ],
}
SPLIT_CONF = {"fieldcrypt.tags": ["PII", "FIN"], "fieldcrypt.tag.domains": {"FIN": "finance"}}


def _rewrite_value0(text: str, *, count: int | None = None, key_id: int | None = None) -> str:
    from fieldcrypt.crypto import wire as _wire

    blob = bytearray(_wire.decode_text(text))
    assert blob[0] == 2 and blob[6] == 0  # version 2, value 0
    if key_id is not None:
        blob[2:6] = key_id.to_bytes(4, "big")
    if count is not None:
        blob[19:23] = count.to_bytes(4, "big")
    return _wire.encode_text(bytes(blob))


@pytest.mark.parametrize("case", ["value 0 erased", "value 0 repointed at an unknown key (on.denied=null)"])
def test_a_count_rewritten_in_an_unreadable_value_0_is_detected(registry, keyring: Keyring, case: str) -> None:
    """Value 0 (email) cannot be authenticated by this reader: its key was shredded, or the attacker repointed it at
    a key id nobody holds. The attacker lowers the count it carries and nulls a later value (phone) that would
    have been caught: the values the reader can authenticate (iban) bind the true count."""
    parsed = fastavro.parse_schema(SPLIT)
    ser = AvroSerializer(registry, json.dumps(SPLIT), conf=SPLIT_CONF, keyring=keyring)
    read_conf = dict(SPLIT_CONF)
    if case.startswith("value 0 repointed"):
        read_conf["fieldcrypt.on.denied"] = "null"
    de = AvroDeserializer(registry, conf=read_conf, keyring=keyring)
    record = {"id": "P", "email": "p@example.com", "iban": "DE89370400440532013000", "phone": "+4915112345678"}
    data = ser(record, value_ctx())
    seen = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, None)
    if case == "value 0 erased":
        keyring.shred_person("P", domain="orders-value", reason="test")
        email = _rewrite_value0(seen["email"], count=2)
    else:
        email = _rewrite_value0(seen["email"], count=2, key_id=0xDEADBEEF)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, dict(seen, email=email, phone=None))
    with pytest.raises(DecryptionError) as err:
        de(data[:5] + buf.getvalue(), value_ctx())
    assert type(err.value) is DecryptionError
    # untouched, the erased record reads as erased
    if case == "value 0 erased":
        assert de(data, value_ctx())["email"] is None


def test_a_tagged_top_level_bytes_value_is_decrypted_and_forged_plaintext_refused(registry, keyring: Keyring) -> None:
    """A subject whose schema is a tagged bytes value (confluent writes it raw, after the 5-byte prefix)."""
    schema = json.dumps({"type": "bytes", "confluent:tags": ["PII"]})
    ser = AvroSerializer(registry, schema, keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    data = ser(b"secret bytes", value_ctx())
    assert b"secret bytes" not in data
    assert de(data, value_ctx()) == b"secret bytes"
    with pytest.raises(DecryptionError):
        de(data[:5] + b"forged in clear", value_ctx())
    accepting = AvroDeserializer(registry, conf={"fieldcrypt.on.plaintext": "accept"}, keyring=keyring)
    assert accepting(data[:5] + b"forged in clear", value_ctx()) == b"forged in clear"
    assert accepting.stats.plaintext == 1


def test_an_avro_array_root_value_moved_between_subjects_sharing_a_domain_fails(registry, keyring: Keyring) -> None:
    """Top-level array schemas have no record name in their paths ([0].email): they are bound to the subject."""

    def items(name: str) -> str:
        record = {
            "type": "record",
            "name": name,
            "fields": [{"name": "email", "type": "string", "confluent:tags": ["PII"]}],
        }
        return json.dumps({"type": "array", "items": record})

    orders = AvroSerializer(registry, items("Order"), conf=SHARED, keyring=keyring)
    profiles = AvroSerializer(registry, items("PublicProfile"), conf=SHARED, keyring=keyring)
    de = AvroDeserializer(registry, conf=SHARED, keyring=keyring)
    a = orders([{"email": "secret@example.com"}], value_ctx("orders"))
    b = profiles([{"email": "public@example.com"}], value_ctx("profiles"))
    assert de(a, value_ctx("orders")) == [{"email": "secret@example.com"}]
    with pytest.raises(DecryptionError):
        de(b[:5] + a[5:], value_ctx("profiles"))  # the Order array's bytes framed as a PublicProfile array


def test_a_title_never_equals_another_schemas_id(registry, keyring: Keyring) -> None:
    """One schema titled urn:x, another with $id urn:x, sharing a named domain: their identities differ."""
    titled = _json_schema("urn:x")
    with_id = dict(_json_schema(None), **{"$id": "urn:x"})
    a = JSONSerializer(json.dumps(titled), registry, conf=SHARED, keyring=keyring)(
        {"customerId": "c-1", "email": "secret@example.com"}, value_ctx("orders")
    )
    b = JSONSerializer(json.dumps(with_id), registry, conf=SHARED, keyring=keyring)(
        {"customerId": "c-1", "email": "public@example.com"}, value_ctx("profiles")
    )
    r = JSONDeserializer(None, schema_registry_client=registry, conf=SHARED, keyring=keyring)
    moved = json.loads(b[5:])
    moved["email"] = json.loads(a[5:])["email"]
    with pytest.raises(DecryptionError):
        r(b[:5] + json.dumps(moved).encode(), value_ctx("profiles"))
