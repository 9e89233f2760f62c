"""Which Avro fields are encrypted: inline tags at any depth, registry metadata.tags, and what is rejected."""

from __future__ import annotations

import json
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.schema_registry_client import Metadata, MetadataTags
from conftest import avsc, customer, value_ctx

from fieldcrypt import Keyring, PolicyError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.avro.policy import compile_avro
from fieldcrypt.core.plan import TagRules


def leaves(schema: Any, rules: TagRules | None = None) -> list[str]:
    plan = compile_avro(fastavro.parse_schema(schema), rules or TagRules())
    return sorted(leaf.path for leaf in plan.leaves)


def test_inline_tags_at_every_depth() -> None:
    assert leaves(avsc("order.avsc")) == [
        "example.shop.Address.city",
        "example.shop.Address.postcode",
        "example.shop.Address.street",
        "example.shop.Contact.email",
        "example.shop.Customer.name",
        "example.shop.Customer.phone",
        "example.shop.Order.signature",
    ]


def test_metadata_tags_with_full_names_short_names_and_wildcards() -> None:
    schema = avsc("customer_event.avsc")
    for f in schema["fields"]:
        f.pop("confluent:tags", None)
    rules = TagRules().with_metadata({"CustomerEvent.email": ["PII"], "example.shop.CustomerEvent.ssn": ["PII"]})
    assert leaves(schema, rules) == ["example.shop.CustomerEvent.email", "example.shop.CustomerEvent.ssn"]
    rules = TagRules().with_metadata({"**.full*": ["PII"]})
    assert leaves(schema, rules) == ["example.shop.CustomerEvent.fullName"]
    order = avsc("order.avsc")
    rules = TagRules().with_metadata({"**.Contact.note": ["PII"]})
    assert "example.shop.Contact.note" in leaves(order, rules)


def _tag(field_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type, "confluent:tags": ["PII"]}]}


@pytest.mark.parametrize(
    "field_type",
    [
        "int",
        "long",
        "double",
        "boolean",
        ["null", "int"],
        {"type": "string", "logicalType": "uuid"},
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "fixed", "name": "F", "size": 4},
        ["string", "int"],
        {"type": "array", "items": "int"},
        {"type": "map", "values": ["null", "double"]},
        {"type": "record", "name": "Inner", "fields": [{"name": "y", "type": "string"}]},
    ],
)
def test_tag_on_other_types_is_rejected_naming_the_field(field_type: Any) -> None:
    with pytest.raises(PolicyError) as err:
        leaves(_tag(field_type))
    assert err.value.field_path is not None and err.value.field_path.startswith("R.x")


@pytest.mark.parametrize("field_type", ["string", "bytes", ["null", "string"], ["bytes", "null"], {"type": "string"}])
def test_string_and_bytes_and_nullable_are_accepted(field_type: Any) -> None:
    assert leaves(_tag(field_type)) == ["R.x"]


def test_union_of_several_records_with_tags_is_enforced() -> None:
    a = {"type": "record", "name": "A", "fields": [{"name": "s", "type": "string", "confluent:tags": ["PII"]}]}
    b = {"type": "record", "name": "B", "fields": [{"name": "t", "type": "string"}]}
    schema = {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["null", a, b]}]}
    assert leaves(schema) == ["A.s"]


def test_a_union_directly_inside_a_union_is_refused() -> None:
    inner = ["null", "string"]
    # invalid Avro that fastavro parses and then writes or reads wrongly (found by test_tag_coverage, seed 544)
    a = {"type": "record", "name": "A", "fields": [{"name": "s", "type": "string", "confluent:tags": ["PII"]}]}
    schema = {"type": "record", "name": "R", "fields": [{"name": "u", "type": {"type": "map", "values": [inner, a]}}]}
    with pytest.raises(PolicyError, match="union directly inside a union") as err:
        leaves(schema)
    assert err.value.field_path == "R.u[*]"


def test_recursive_schema() -> None:
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "label", "type": "string", "confluent:tags": ["PII"]},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    }
    assert leaves(schema) == ["Node.label"]


def test_recursive_schema_round_trip(registry, keyring: Keyring) -> None:
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "label", "type": "string", "confluent:tags": ["PII"]},
            {"name": "children", "type": {"type": "array", "items": "Node"}, "default": []},
        ],
    }
    rec = {
        "label": "label-root",
        "children": [
            {"label": "label-a", "children": [{"label": "label-a1-deep", "children": []}]},
            {"label": "label-b", "children": []},
        ],
    }
    data = AvroSerializer(registry, json.dumps(schema), keyring=keyring)(rec, value_ctx())
    # labels long enough that random base64 ciphertext cannot contain them by chance
    assert b"label-a1-deep" not in data and b"label-root" not in data
    assert AvroDeserializer(registry, keyring=keyring)(data, value_ctx()) == rec


def test_data_subject_rules() -> None:
    schema = avsc("customer_event.avsc")
    plan = compile_avro(fastavro.parse_schema(schema), TagRules())
    assert plan.data_subject == ("customerId",)
    both = avsc("customer_event.avsc")
    both["fields"][0]["confluent:tags"] = ["DATA_SUBJECT_ID", "PII"]
    with pytest.raises(PolicyError):
        compile_avro(fastavro.parse_schema(both), TagRules())
    two = avsc("customer_event.avsc")
    two["fields"][5]["confluent:tags"] = ["DATA_SUBJECT_ID"]
    with pytest.raises(PolicyError):
        compile_avro(fastavro.parse_schema(two), TagRules())
    typed = avsc("customer_event.avsc")
    typed["fields"][0]["type"] = "double"
    with pytest.raises(PolicyError):
        compile_avro(fastavro.parse_schema(typed), TagRules())


def test_registry_metadata_tags_drive_both_sides(registry, keyring: Keyring) -> None:
    """Tags only in the registered schema's metadata.tags: the producer encrypts, the consumer decrypts."""
    schema = avsc("customer_event.avsc")
    for f in schema["fields"]:
        f.pop("confluent:tags", None)
    text = json.dumps(schema)
    # tuple values: confluent-kafka 2.16 cannot hash list-valued MetadataTags (see docs/registry-metadata.md)
    tagged = Schema(
        text,
        "AVRO",
        [],
        Metadata(tags=MetadataTags({"CustomerEvent.email": ("PII",)}), properties=None, sensitive=None),
    )
    registry.register_schema("orders-value", tagged)
    ser = AvroSerializer(
        registry, text, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    data = ser(customer(1), value_ctx())
    assert b"person1@example.com" not in data and b"Person Number 1" in data
    assert AvroDeserializer(registry, keyring=keyring)(data, value_ctx()) == customer(1)


def test_metadata_list_hash_bug_is_worked_around() -> None:
    """confluent-kafka's parsed registry answers carry lists; fieldcrypt reads tags from them all the same."""
    from confluent_kafka.schema_registry import RegisteredSchema

    schema = avsc("customer_event.avsc")
    answer = {"id": 7, "schema": json.dumps(schema), "metadata": {"tags": {"**.country": ["PII"]}}}
    parsed = RegisteredSchema.from_dict(answer).schema
    # confluent-kafka 2.16.0 could not hash such a schema (list tag values); 2.16.1 can: tags are read either way
    from fieldcrypt.core.serde import PlanCache

    cache = PlanCache(None, lambda s: fastavro.parse_schema(json.loads(s.schema_str)), compile_avro, TagRules())  # type: ignore[arg-type]
    plan = cache.compile(parsed)
    assert "example.shop.CustomerEvent.country" in [leaf.path for leaf in plan.leaves]
