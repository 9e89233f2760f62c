"""Every tag is a decision; the schema written keeps the tags; producers and consumers cannot disagree silently;
one person, one id; every read failure is a fieldcrypt error."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from confluent_kafka.schema_registry import Metadata, MetadataTags, Schema
from conftest import avsc, customer, ids_of, value_ctx

from fieldcrypt import ConfigurationError, DecryptionError, EncryptionError, Keyring, PolicyError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.errors import FieldcryptError
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

CUSTOMER = json.dumps(avsc("customer_event.avsc"))


@pytest.mark.parametrize(
    "conf",
    [
        {"fieldcrypt.tags": ["pii"]},  # a typo: the schema's PII is then decided by nobody
        {"fieldcrypt.data.subject.tag": "DATA_SUBJECT"},
        {"fieldcrypt.tags": ["PII", "PUBLIC"], "fieldcrypt.data.subject.tag": "CUSTOMER_ID"},
    ],
    ids=repr,
)
def test_a_typo_in_the_tag_configuration_fails_at_construction(registry, keyring: Keyring, conf: Any) -> None:
    with pytest.raises(PolicyError, match="does not decide"):
        AvroSerializer(registry, CUSTOMER, conf=conf, keyring=keyring)


@pytest.mark.parametrize(
    "conf",
    [
        {"fieldcrypt.plaintext.tags": ["PII"]},  # both encrypted and plaintext
        {"fieldcrypt.tag.domains": {"PI": "customers"}},  # maps a tag nobody encrypts
        {"fieldcrypt.plaintext.tags": "PII,"},
        {"fieldcrypt.plaintext.tags": [""]},
        {"fieldcrypt.tags": []},
    ],
    ids=repr,
)
def test_contradictory_conf_is_a_configuration_error(registry, keyring: Keyring, conf: Any) -> None:
    with pytest.raises(ConfigurationError):
        AvroSerializer(registry, CUSTOMER, conf=conf, keyring=keyring)


@pytest.mark.parametrize("raw", ["PII", [1], None, [""], {"PII": True}], ids=repr)
def test_malformed_inline_tags_are_refused(registry, keyring: Keyring, raw: Any) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][1]["confluent:tags"] = raw
    with pytest.raises(PolicyError, match="confluent:tags"):
        AvroSerializer(registry, json.dumps(schema), keyring=keyring)


@pytest.mark.parametrize("pattern", ["CustomerEvent.Email", "$.email", "Nope.*"])
def test_a_metadata_pattern_that_matches_no_field_is_refused(registry, keyring: Keyring, pattern: str) -> None:
    meta = Metadata(tags=MetadataTags({pattern: ("PII",)}), properties=None, sensitive=None)
    with pytest.raises(PolicyError, match="match no field"):
        AvroSerializer(registry, Schema(CUSTOMER, "AVRO", metadata=meta), keyring=keyring)


def test_the_readme_metadata_pattern_on_a_json_schema_is_refused(registry, keyring: Keyring) -> None:
    text = json.dumps({"type": "object", "properties": {"email": {"type": "string"}}})
    meta = Metadata(tags=MetadataTags({"CustomerEvent.email": ("PII",)}), properties=None, sensitive=None)
    with pytest.raises(PolicyError, match="match no field"):
        JSONSerializer(Schema(text, "JSON", metadata=meta), registry, keyring=keyring)
    ok = Metadata(tags=MetadataTags({"$.email": ("PII",)}), properties=None, sensitive=None)
    data = JSONSerializer(Schema(text, "JSON", metadata=ok), registry, keyring=keyring)(
        {"email": "someone-long@example.com"}, value_ctx()
    )
    assert data is not None and b"someone-long@example.com" not in data


def _untagged_email() -> str:
    schema = avsc("customer_event.avsc")
    del schema["fields"][1]["confluent:tags"]  # email
    return json.dumps(schema)


def test_the_written_schema_must_keep_the_local_tags(registry, keyring: Keyring) -> None:
    registry.register_schema("orders-value", Schema(_untagged_email(), "AVRO"))
    conf = {"use.latest.version": True, "auto.register.schemas": False}
    ser = AvroSerializer(registry, CUSTOMER, conf=conf, keyring=keyring)
    with pytest.raises(PolicyError, match=r"CustomerEvent\.email"):
        ser(customer(1), value_ctx())
    ser = AvroSerializer(registry, CUSTOMER, conf={**conf, "fieldcrypt.allow.tag.removal": True}, keyring=keyring)
    assert b"person1@example.com" in ser(customer(1), value_ctx())  # opted in: what the written schema says


def test_a_new_version_that_drops_a_tag_needs_the_opt_in(registry, keyring: Keyring) -> None:
    AvroSerializer(registry, CUSTOMER, keyring=keyring)(customer(1), value_ctx())  # v1: email tagged
    with pytest.raises(PolicyError, match=r"CustomerEvent\.email"):
        AvroSerializer(registry, _untagged_email(), keyring=keyring)(customer(1), value_ctx())
    assert len(registry.get_versions("orders-value")) == 1  # nothing registered, nothing produced
    opted = AvroSerializer(registry, _untagged_email(), conf={"fieldcrypt.allow.tag.removal": True}, keyring=keyring)
    assert b"person1@example.com" in opted(customer(1), value_ctx())


def test_a_consumer_configured_otherwise_gets_a_configuration_error(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][5]["confluent:tags"] = ["FINANCE"]  # currency
    text = json.dumps(schema)
    ser = AvroSerializer(registry, text, conf={"fieldcrypt.tags": ["PII", "FINANCE"]}, keyring=keyring)
    data = ser({**customer(1), "currency": "EUR-finance-tagged"}, value_ctx())
    reader = AvroDeserializer(registry, conf={"fieldcrypt.plaintext.tags": ["FINANCE"]}, keyring=keyring)
    with pytest.raises(ConfigurationError, match=r"CustomerEvent\.currency") as err:
        reader(data, value_ctx())  # without the check: the ciphertext returned as the currency
    assert not isinstance(err.value, DecryptionError)
    both = AvroDeserializer(registry, conf={"fieldcrypt.tags": ["PII", "FINANCE"]}, keyring=keyring)
    assert both(data, value_ctx())["currency"] == "EUR-finance-tagged"


def test_two_producers_with_different_policies_collide_loudly(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][5]["confluent:tags"] = ["FINANCE"]
    text = json.dumps(schema)
    AvroSerializer(registry, text, conf={"fieldcrypt.tags": ["PII", "FINANCE"]}, keyring=keyring)(
        customer(1), value_ctx()
    )
    other = AvroSerializer(registry, text, conf={"fieldcrypt.plaintext.tags": ["FINANCE"]}, keyring=keyring)
    with pytest.raises(ConfigurationError, match="another producer"):
        other(customer(2), value_ctx())


JSON_PERSON = json.dumps(
    {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "confluent:tags": ["DATA_SUBJECT_ID"]},
            "email": {"type": "string", "confluent:tags": ["PII"]},
        },
    }
)


def test_one_person_one_id_in_json(registry, keyring: Keyring) -> None:
    ser = JSONSerializer(JSON_PERSON, registry, keyring=keyring)
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    one = ser({"id": 1, "email": "first-spelling@example.com"}, value_ctx())
    other = ser({"id": 1.0, "email": "second-spelling@example.com"}, value_ctx())
    assert ids_of(keyring, keyring.keys(), ["1"]) == ["1"]
    assert de(other, value_ctx())["email"] == "second-spelling@example.com"
    keyring.shred_person("1", reason="test")
    keyring.clear_cache()
    # both erased (email is a non-nullable string: the placeholder stands in for it)
    assert de(one, value_ctx())["email"] == "<erased>" and de(other, value_ctx())["email"] == "<erased>"
    assert de.stats.erased == 2


@pytest.mark.parametrize("person", [42.7, True, "42"])
def test_avro_int_data_subjects_must_be_ints(registry, keyring: Keyring, person: Any) -> None:
    schema = {
        "type": "record",
        "name": "P",
        "fields": [
            {"name": "id", "type": "long", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        ],
    }
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    with pytest.raises(EncryptionError, match="data-subject"):
        ser({"id": person, "email": "someone-long@example.com"}, value_ctx())
    assert keyring.keys() == []


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff", b"\x01garbage", "not-bytes"],
    ids=repr,
)
def test_malformed_bytes_raise_a_fieldcrypt_error(registry, keyring: Keyring, data: Any) -> None:
    AvroSerializer(registry, CUSTOMER, keyring=keyring)(customer(1), value_ctx())  # registers schema id 1
    for de in (
        AvroDeserializer(registry, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, keyring=keyring),
    ):
        with pytest.raises(FieldcryptError):
            de(data, value_ctx())


def test_structurally_wrong_json_with_validation_off_is_a_fieldcrypt_error(registry, keyring: Keyring) -> None:
    ser = JSONSerializer(JSON_PERSON, registry, keyring=keyring)
    ser({"id": 1, "email": "someone-long@example.com"}, value_ctx())
    de = JSONDeserializer(None, schema_registry_client=registry, conf={"validate": False}, keyring=keyring)
    for doc in (b"[1, 2]", b'"text"', b'{"id": 1, "email": 5}', b'{"id": 1, "email": ["x"]}', b"{"):
        with pytest.raises(FieldcryptError):
            de(b"\x00\x00\x00\x00\x01" + doc, value_ctx())


def test_an_altered_base64_character_never_decodes_to_the_same_ciphertext() -> None:
    from fieldcrypt.crypto import wire as _wire

    blob = os.urandom(35)  # 35 bytes: the last character carries 2 unused bits
    text = _wire.encode_text(blob)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for i in (0, len(text) - 1):
        for c in alphabet:
            altered = text[:i] + c + text[i + 1 :]
            if altered == text:
                continue
            try:
                assert _wire.decode_text(altered) != blob
            except ValueError:
                pass  # refused: not the canonical spelling
