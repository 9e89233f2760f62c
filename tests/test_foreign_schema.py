"""A record naming a schema this consumer cannot read is a bad record when that schema is no version of the subject
being read (another team's schema, or one of another format): one forged or corrupt record must not stop every
consumer with a PolicyError, which docs/errors.md says means "stop and fix". A schema of the subject itself that
this consumer cannot read still is a PolicyError: its configuration is what needs fixing."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema
from conftest import value_ctx

from fieldcrypt import Keyring, MalformedRecordError, PolicyError, UnknownSchemaError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer

ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [{"name": "email", "type": "string", "confluent:tags": ["PII"]}],
}
OTHER_TEAM = {
    "type": "record",
    "name": "Payment",
    "fields": [{"name": "iban", "type": "string", "confluent:tags": ["FIN"]}],  # a tag this consumer does not know
}


def _framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def test_a_record_naming_another_subjects_unreadable_schema_is_a_bad_record(registry, keyring: Keyring) -> None:
    ser = AvroSerializer(registry, json.dumps(ORDER), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    good = ser({"email": "a@example.com"}, value_ctx())
    other = registry.register_schema("payments-value", Schema(json.dumps(OTHER_TEAM), "AVRO"))
    json_id = registry.register_schema("events-value", Schema(json.dumps({"type": "object"}), "JSON"))
    for schema_id in (other, json_id):
        with pytest.raises(UnknownSchemaError) as err:
            de(_framed(schema_id, good[5:]), value_ctx())
        assert isinstance(err.value, MalformedRecordError)
        assert str(schema_id) in str(err.value)
    assert de(good, value_ctx()) == {"email": "a@example.com"}  # the consumer goes on


def test_a_schema_of_the_subject_itself_that_cannot_be_read_is_still_a_policy_error(registry, keyring: Keyring) -> None:
    sid = registry.register_schema("orders-value", Schema(json.dumps(OTHER_TEAM), "AVRO"))
    de = AvroDeserializer(registry, keyring=keyring)
    with pytest.raises(PolicyError) as err:
        de(_framed(sid, b"\x00"), value_ctx())
    assert not isinstance(err.value, MalformedRecordError)


def test_json_consumer_and_an_avro_schema_id(registry, keyring: Keyring) -> None:
    sid = registry.register_schema("avro-only-value", Schema(json.dumps(ORDER), "AVRO"))
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    with pytest.raises(UnknownSchemaError):
        de(_framed(sid, b'{"email": "x"}'), value_ctx())


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_the_same_forgery_with_the_schema_id_in_a_header(registry, keyring: Keyring, fmt: str) -> None:
    """The schema id in the record's __value_schema_id header (confluent's header framing) names the foreign schema:
    the record chose it just the same, so it is a bad record, not a reason to stop."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    other = registry.register_schema("payments-value", Schema(json.dumps(OTHER_TEAM), "AVRO"))
    json_id = registry.register_schema("events-value", Schema(json.dumps({"type": "object"}), "JSON"))
    de = (
        AvroDeserializer(registry, keyring=keyring)
        if fmt == "avro"
        else JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    )
    for schema_id in (other, json_id) if fmt == "avro" else (other,):
        ctx = SerializationContext(
            "orders", MessageField.VALUE, [("__value_schema_id", b"\x00" + schema_id.to_bytes(4, "big"))]
        )
        with pytest.raises(UnknownSchemaError):
            de(b'{"email": "x"}' if fmt == "json" else b"\x0cabcdef", ctx)  # more than 5 bytes, as confluent needs
