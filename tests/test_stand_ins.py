"""What an unreadable value (key shredded: erased; no key: denied) reads as keeps the record valid against its
schema (issue finding 10). ``null`` mode returns None only where the schema admits null at the value's position
(Avro: a union holding "null"; JSON Schema: every schema that may judge the value accepts null), else the
placeholder, which is the ``fieldcrypt.placeholder`` text as the field's type holds it (UTF-8 bytes for Avro bytes,
base64 of them for a JSON base64 string). ``placeholder`` mode returns it everywhere; ``raise`` raises; ``marker``
returns ``Erased``/``Denied`` (not schema-valid, by design). With a reader schema, the reader's nullability counts
too. Every returned record is checked with fastavro's ``validate`` or jsonschema.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import ConfigurationError, Denied, Erased, Keyring, KeyShreddedError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.avro.policy import compile_avro, reader_nulls
from fieldcrypt.core.plan import TagRules
from fieldcrypt.errors import KeyNotFoundError
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

PII = ["PII"]
PLACEHOLDER = "<erased>"
DENIED = "<denied>"

ADDRESS = {
    "type": "record",
    "name": "Address",
    "fields": [
        {"name": "street", "type": "string", "confluent:tags": PII},
        {"name": "zip", "type": ["null", "string"], "default": None, "confluent:tags": PII},
    ],
}
AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Person",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "name", "type": "string", "confluent:tags": PII},
        {"name": "nick", "type": ["null", "string"], "default": None, "confluent:tags": PII},
        {"name": "either", "type": ["null", "string", "bytes"], "default": None, "confluent:tags": PII},
        {"name": "emails", "type": {"type": "array", "items": "string"}, "confluent:tags": PII},
        {"name": "notes", "type": {"type": "array", "items": ["null", "string"]}, "confluent:tags": PII},
        {"name": "phones", "type": {"type": "map", "values": "string"}, "confluent:tags": PII},
        {"name": "address", "type": ADDRESS},
        {"name": "previous", "type": ["null", "Address"], "default": None},
        {"name": "photo", "type": "bytes", "confluent:tags": PII},
        {"name": "thumb", "type": ["null", "bytes"], "default": None, "confluent:tags": PII},
    ],
}
PERSON_AVRO: dict[str, Any] = {
    "id": "p-1",
    "name": "Ada",
    "nick": "ada",
    "either": "text",
    "emails": ["a@x.example", "b@x.example"],
    "notes": ["n1", "n2"],
    "phones": {"home": "+49 1", "work": "+49 2"},
    "address": {"street": "Main 1", "zip": "10115"},
    "previous": {"street": "Old 2", "zip": "53111"},
    "photo": b"\x89PNG",
    "thumb": b"\x00\x01",
}
#: what default ``null`` mode returns for the person above once every value is unreadable
NULL_AVRO: dict[str, Any] = {
    "id": "p-1",
    "name": PLACEHOLDER,
    "nick": None,
    "either": None,
    "emails": [PLACEHOLDER, PLACEHOLDER],
    "notes": [None, None],
    "phones": {"home": PLACEHOLDER, "work": PLACEHOLDER},
    "address": {"street": PLACEHOLDER, "zip": None},
    "previous": {"street": PLACEHOLDER, "zip": None},
    "photo": PLACEHOLDER.encode(),
    "thumb": None,
}
PLACEHOLDER_AVRO: dict[str, Any] = {
    **NULL_AVRO,
    "nick": PLACEHOLDER,
    "either": PLACEHOLDER,
    "notes": [PLACEHOLDER, PLACEHOLDER],
    "address": {"street": PLACEHOLDER, "zip": PLACEHOLDER},
    "previous": {"street": PLACEHOLDER, "zip": PLACEHOLDER},
    "thumb": PLACEHOLDER.encode(),
}
TAGGED_AVRO = 15  # tagged values of the person (each counted erased or denied once)

JSON: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Person",
    "type": "object",
    "properties": {
        "id": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "name": {"type": "string", "confluent:tags": PII},
        "nick": {"type": ["string", "null"], "confluent:tags": PII},
        "alias": {"oneOf": [{"type": "null"}, {"type": "string", "confluent:tags": PII}]},
        "emails": {"type": "array", "items": {"type": "string"}, "confluent:tags": PII},
        "notes": {"type": "array", "items": {"type": ["string", "null"], "confluent:tags": PII}},
        "phones": {"type": "object", "additionalProperties": {"type": "string"}, "confluent:tags": PII},
        "extras": {"type": "object", "additionalProperties": {"type": ["string", "null"], "confluent:tags": PII}},
        "address": {"$ref": "#/$defs/Address"},
        "previous": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Address"}]},
        "photo": {"type": "string", "contentEncoding": "base64", "confluent:tags": PII},
        "thumb": {"type": ["string", "null"], "contentEncoding": "base64", "confluent:tags": PII},
        # nullable in its own schema, but a patternProperties schema matching its name refuses null
        "code": {"type": ["string", "null"], "confluent:tags": PII},
        # nullable in its own schema, but an allOf branch declaring it again refuses null
        "label": {"type": ["string", "null"], "confluent:tags": PII},
    },
    "patternProperties": {"^co": {"type": "string"}},
    "allOf": [{"properties": {"label": {"type": "string"}}}],
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {
                "street": {"type": "string", "confluent:tags": PII},
                "zip": {"type": ["string", "null"], "confluent:tags": PII},
            },
        }
    },
}
PERSON_JSON: dict[str, Any] = {
    "id": "p-1",
    "name": "Ada",
    "nick": "ada",
    "alias": "countess",
    "emails": ["a@x.example", "b@x.example"],
    "notes": ["n1", "n2"],
    "phones": {"home": "+49 1"},
    "extras": {"x": "y"},
    "address": {"street": "Main 1", "zip": "10115"},
    "previous": {"street": "Old 2", "zip": "53111"},
    "photo": "iVBORw==",
    "thumb": "AAE=",
    "code": "c-1",
    "label": "l",
}
B64 = "PGVyYXNlZD4="  # base64 of the placeholder's UTF-8 bytes
NULL_JSON: dict[str, Any] = {
    "id": "p-1",
    "name": PLACEHOLDER,
    "nick": None,
    "alias": None,
    "emails": [PLACEHOLDER, PLACEHOLDER],
    "notes": [None, None],
    "phones": {"home": PLACEHOLDER},
    "extras": {"x": None},
    "address": {"street": PLACEHOLDER, "zip": None},
    "previous": {"street": PLACEHOLDER, "zip": None},
    "photo": B64,
    "thumb": None,
    "code": PLACEHOLDER,
    "label": PLACEHOLDER,
}
PLACEHOLDER_JSON: dict[str, Any] = {
    **NULL_JSON,
    "nick": PLACEHOLDER,
    "alias": PLACEHOLDER,
    "notes": [PLACEHOLDER, PLACEHOLDER],
    "extras": {"x": PLACEHOLDER},
    "address": {"street": PLACEHOLDER, "zip": PLACEHOLDER},
    "previous": {"street": PLACEHOLDER, "zip": PLACEHOLDER},
    "thumb": B64,
}
TAGGED_JSON = 17


@pytest.fixture
def kek(tmp_path: Path) -> str:
    return fieldcrypt.create_local_kek(tmp_path / "kek.json")


@pytest.fixture
def stores(tmp_path: Path) -> Callable[[str], str]:
    def make(name: str) -> str:
        return fieldcrypt.create_key_store(f"sqlite:///{tmp_path / name}.db")

    return make


@pytest.fixture
def keyrings(stores: Callable[[str], str], kek: str) -> Iterator[Callable[[str], Keyring]]:
    made: list[Keyring] = []

    def open_keyring(store: str) -> Keyring:
        keyring = Keyring(stores(store) if "/" not in store else store, kek)
        made.append(keyring)
        return keyring

    yield open_keyring
    for keyring in made:
        keyring.close()


def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def unreadable(
    fmt: str, how: str, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> tuple[SchemaRegistryClient, bytes, Keyring]:
    """A person written, and a keyring for which every value is unreadable: ``erased`` (the person shredded in the
    producer's store) or ``denied`` (another key store: no key of the record is known)."""
    store = stores(f"producer-{uuid.uuid4().hex}")
    producer = keyrings(store)
    reg = registry()
    if fmt == "avro":
        data = AvroSerializer(reg, json.dumps(AVRO), keyring=producer)(PERSON_AVRO, value_ctx())
    else:
        data = JSONSerializer(json.dumps(JSON), reg, keyring=producer)(PERSON_JSON, value_ctx())
    assert data is not None
    if how == "erased":
        producer.shred_person("p-1")
        return reg, data, keyrings(store)
    return reg, data, keyrings("elsewhere")


def reader(fmt: str, reg: SchemaRegistryClient, keyring: Keyring, conf: dict[str, Any], schema: Any = None) -> Any:
    if fmt == "avro":
        return AvroDeserializer(reg, None if schema is None else json.dumps(schema), conf=conf, keyring=keyring)
    return JSONDeserializer(None, schema_registry_client=reg, conf=conf, keyring=keyring)


def valid(fmt: str, record: Any, schema: dict[str, Any]) -> None:
    if fmt == "avro":
        assert fastavro.validation.validate(record, fastavro.parse_schema(json.loads(json.dumps(schema))))
    else:
        jsonschema.validate(record, schema)


def as_denied(value: Any) -> Any:
    """An expected read with the denied placeholder (``fieldcrypt.denied.placeholder``, ``<denied>``) where the
    erased one stands: no reader takes "no access" for an erasure."""
    if isinstance(value, dict):
        return {k: as_denied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_denied(v) for v in value]
    return {PLACEHOLDER: DENIED, B64: "PGRlbmllZD4=", PLACEHOLDER.encode(): DENIED.encode()}.get(value, value)


EXPECTED = {
    ("avro", "null"): NULL_AVRO,
    ("avro", "placeholder"): PLACEHOLDER_AVRO,
    ("json", "null"): NULL_JSON,
    ("json", "placeholder"): PLACEHOLDER_JSON,
}


@pytest.mark.parametrize("how", ["erased", "denied"])
@pytest.mark.parametrize("mode", ["default", "null", "placeholder"])
@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_unreadable_values_keep_the_record_valid_against_its_schema(
    fmt: str, mode: str, how: str, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    reg, data, keyring = unreadable(fmt, how, keyrings, stores)
    key = f"fieldcrypt.on.{how}"
    conf = {} if mode == "default" else {key: mode}
    if mode == "default" and how == "denied":
        conf = {key: "null"}  # on.denied defaults to raise (below)
    de = reader(fmt, reg, keyring, conf)
    out = de(data, value_ctx())
    expected = EXPECTED[fmt, "placeholder" if mode == "placeholder" else "null"]
    assert out == (expected if how == "erased" else as_denied(expected))
    valid(fmt, out, AVRO if fmt == "avro" else JSON)
    assert (de.stats.erased, de.stats.denied) == (
        (TAGGED_AVRO if fmt == "avro" else TAGGED_JSON, 0)
        if how == "erased"
        else (0, TAGGED_AVRO if fmt == "avro" else TAGGED_JSON)
    )


@pytest.mark.parametrize("how", ["erased", "denied"])
@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_raise_and_marker_modes_are_unchanged(
    fmt: str, how: str, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    reg, data, keyring = unreadable(fmt, how, keyrings, stores)
    key = f"fieldcrypt.on.{how}"
    with pytest.raises(KeyShreddedError if how == "erased" else KeyNotFoundError):
        reader(fmt, reg, keyring, {key: "raise"})(data, value_ctx())
    if how == "denied":  # the default for no access
        with pytest.raises(KeyNotFoundError):
            reader(fmt, reg, keyring, {})(data, value_ctx())
    out = reader(fmt, reg, keyring, {key: "marker"})(data, value_ctx())
    marker = Erased if how == "erased" else Denied
    assert isinstance(out["name"], marker) and isinstance(out["nick"], marker)
    assert isinstance(out["address"]["zip"], marker) and all(isinstance(e, marker) for e in out["emails"])


def test_the_placeholder_text_is_configurable_and_fits_each_type(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    for fmt in ("avro", "json"):
        reg, data, keyring = unreadable(fmt, "erased", keyrings, stores)
        out = reader(fmt, reg, keyring, {"fieldcrypt.placeholder": "[gelöscht]"})(data, value_ctx())
        assert out["name"] == "[gelöscht]" and out["nick"] is None
        if fmt == "avro":
            assert out["photo"] == "[gelöscht]".encode()
        else:
            import base64

            assert base64.b64decode(out["photo"]) == "[gelöscht]".encode()
        valid(fmt, out, AVRO if fmt == "avro" else JSON)


def test_a_placeholder_that_is_not_unicode_is_refused_at_construction(keyring: Keyring) -> None:
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.placeholder"):
        AvroDeserializer(registry(), conf={"fieldcrypt.placeholder": "\ud800"}, keyring=keyring)


# --- a reader schema: the record is returned in its shape, so its nullability counts too ------------------------


def _reader_avro(nick: Any) -> dict[str, Any]:
    fields = [
        f if f["name"] != "nick" else {**f, "type": nick, "default": None if nick != "string" else ""}
        for f in AVRO["fields"]
    ]
    return {**AVRO, "fields": fields}


@pytest.mark.parametrize("nick", [["null", "string"], "string"])
def test_avro_reader_schema_nullability_counts(
    nick: Any, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    """The reader (schema_str) makes nick non-nullable: null there would fail schema resolution, so the placeholder
    stands in; where the reader admits null as the writer does, null."""
    reg, data, keyring = unreadable("avro", "erased", keyrings, stores)
    schema = _reader_avro(nick)
    out = reader("avro", reg, keyring, {}, schema)(data, value_ctx())
    assert out["nick"] == (None if nick != "string" else PLACEHOLDER)
    assert out["address"] == {"street": PLACEHOLDER, "zip": None}
    valid("avro", out, schema)


def test_avro_latest_version_nullability_counts(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    reg, data, keyring = unreadable("avro", "erased", keyrings, stores)
    latest = _reader_avro("string")
    reg.register_schema("orders-value", Schema(json.dumps(latest), "AVRO"))
    out = AvroDeserializer(reg, conf={"use.latest.version": True}, keyring=keyring)(data, value_ctx())
    assert out["nick"] == PLACEHOLDER and out["either"] is None
    valid("avro", out, latest)


def test_json_latest_version_nullability_counts(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    reg, data, keyring = unreadable("json", "erased", keyrings, stores)
    latest = json.loads(json.dumps(JSON))
    latest["properties"]["nick"]["type"] = "string"
    reg.register_schema("orders-value", Schema(json.dumps(latest), "JSON"))
    out = JSONDeserializer(None, schema_registry_client=reg, conf={"use.latest.version": True}, keyring=keyring)(
        data, value_ctx()
    )
    assert out["nick"] == PLACEHOLDER and out["alias"] is None
    jsonschema.validate(out, latest)
    jsonschema.validate(out, JSON)


def test_reader_nulls_follow_avro_resolution() -> None:
    """Aliases, renamed namespaces and unions in the reader: the paths are the writer's (as the plan names them)."""
    writer = fastavro.parse_schema(json.loads(json.dumps(AVRO)))
    renamed = json.loads(json.dumps(AVRO))
    renamed["namespace"] = "other"
    for f in renamed["fields"]:
        if f["name"] == "nick":
            f["name"], f["aliases"] = "nickname", ["nick"]
        if f["name"] == "thumb":
            f["type"] = "bytes"
            f.pop("default")
    renamed["fields"] = [f for f in renamed["fields"] if f["name"] != "either"]  # dropped: anything goes
    reader = fastavro.parse_schema(renamed)
    plan = compile_avro(writer, TagRules())
    nullable = {leaf.path for leaf in plan.leaves if leaf.nullable}
    assert nullable == {
        "t.Person.nick",
        "t.Person.either<string>",
        "t.Person.either<bytes>",
        "t.Person.notes[]",
        "t.Address.zip",
        "t.Person.thumb",
    }
    assert reader_nulls(writer, writer) == nullable
    assert reader_nulls(writer, reader) == nullable - {"t.Person.thumb"}


# --- a placeholder that would not fit: refused when the schema is first seen ----------------------------------


def _json_with(prop: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "P",
        "properties": {"id": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]}, "v": prop},
    }


def _write_json(schema: dict[str, Any], value: Any, keyring: Keyring) -> tuple[SchemaRegistryClient, bytes]:
    reg = registry()
    data = JSONSerializer(json.dumps(schema), reg, keyring=keyring)({"id": "p-1", "v": value}, value_ctx())
    assert data is not None
    return reg, data


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ({"type": "string", "minLength": 12, "confluent:tags": PII}, "a long enough value"),
        ({"type": "string", "contentEncoding": "base64", "minLength": 16, "confluent:tags": PII}, "A" * 24),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True, "confluent:tags": PII}, ["a", "b"]),
        ({"type": "array", "items": {"type": "string", "confluent:tags": PII}, "contains": {"minLength": 1}}, ["a"]),
    ],
    ids=["minLength", "base64-minLength", "uniqueItems", "contains"],
)
def test_a_stand_in_that_cannot_fit_fails_only_the_records_it_would_stand_in(
    prop: dict[str, Any], value: Any, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    store = stores("producer")
    reg, data = _write_json(_json_with(prop), value, keyrings(store))
    # the schema is read, and a record whose values are readable reads as written, whatever the modes
    for conf in ({}, {"fieldcrypt.on.erased": "placeholder"}, {"fieldcrypt.on.denied": "null"}):
        assert reader("json", reg, keyrings(store), conf)(data, value_ctx())["v"] == value
    # once the person is shredded, a stand-in there would break the schema: that record is refused, naming the field
    keyrings(store).shred_person("p-1")
    for conf in ({}, {"fieldcrypt.on.erased": "placeholder"}):
        with pytest.raises(ConfigurationError, match=r"fieldcrypt\.on\.erased") as err:
            reader("json", reg, keyrings(store), conf)(data, value_ctx())
        assert err.value.field_path is not None and err.value.field_path.startswith("$.v")
    # nothing stands in (raise, marker): the truth, as configured
    with pytest.raises(KeyShreddedError):
        reader("json", reg, keyrings(store), {"fieldcrypt.on.erased": "raise"})(data, value_ctx())
    marked = reader("json", reg, keyrings(store), {"fieldcrypt.on.erased": "marker"})(data, value_ctx())["v"]
    assert all(isinstance(m, Erased) for m in (marked if isinstance(marked, list) else [marked]))


def test_one_stand_in_in_a_unique_items_array_is_read(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    """uniqueItems fails only on equal stand-ins: one erased item among clear ones keeps the array unique."""
    store = stores("producer")
    schema = _json_with({"type": "array", "items": {"type": ["string", "integer"]}, "uniqueItems": True})
    schema["properties"]["v"]["items"] = {"oneOf": [{"type": "string", "confluent:tags": PII}, {"type": "integer"}]}
    reg, data = _write_json(schema, ["secret", 7, 8], keyrings(store))
    keyrings(store).shred_person("p-1")
    out = reader("json", reg, keyrings(store), {})(data, value_ctx())
    assert out["v"] == ["<erased>", 7, 8]
    jsonschema.validate(out, schema)


def test_a_placeholder_long_enough_for_minlength_is_read(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    store = stores("producer")
    schema = _json_with({"type": "string", "minLength": 12, "confluent:tags": PII})
    producer = keyrings(store)
    reg, data = _write_json(schema, "a long enough value", producer)
    producer.shred_person("p-1")
    conf = {"fieldcrypt.placeholder": "<value erased>"}
    out = reader("json", reg, keyrings(store), conf)(data, value_ctx())
    assert out["v"] == "<value erased>"
    jsonschema.validate(out, schema)


# --- decided once per value position, when the plan is compiled ---------------------------------------------------


def _json_plan(schema: dict[str, Any]) -> dict[str, tuple[bool, int]]:
    from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJSONSerializer

    from fieldcrypt.json_schema.policy import compile_json
    from fieldcrypt.json_schema.serde import _Parsed

    text = json.dumps(schema)
    parsed = _Parsed(ConfluentJSONSerializer(text, registry()), Schema(text, "JSON"))
    plan = compile_json(parsed.schema, TagRules(), parsed.resolve, parsed.matcher)
    return {leaf.path: (leaf.nullable, leaf.min_length) for leaf in plan.leaves}


def _s(*types: str, **extra: Any) -> dict[str, Any]:
    return {"type": list(types) if len(types) > 1 else types[0], "confluent:tags": PII, **extra}


def test_json_nullability_per_value_position() -> None:
    schema = {
        "type": "object",
        "properties": {
            "ref": {"$ref": "#/$defs/Opt"},
            "refs": {"type": "array", "items": {"$ref": "#/$defs/Opt"}},
            "grid": {"type": "array", "items": {"type": "array", "items": _s("string", "null")}},
            "pair": {"type": "array", "prefixItems": [_s("string"), _s("string", "null")]},
            "map": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": _s("string")}},
            "any": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 3, "confluent:tags": PII}]},
            "shapes": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"k": {"const": "a"}, "v": _s("string", "null")},
                        "required": ["k"],
                    },
                    {"type": "object", "properties": {"k": {"const": "b"}, "v": {"type": "string"}}, "required": ["k"]},
                ]
            },
            "both": {"allOf": [{"type": ["string", "null"]}, _s("string", "null")]},
            "narrowed": {"allOf": [{"type": "string"}, _s("string", "null")]},
            "guarded": {"type": "object", "properties": {"v": _s("string", "null")}, "not": {"required": ["x"]}},
        },
        "$defs": {"Opt": _s("string", "null", minLength=2)},
    }
    assert _json_plan(schema) == {
        "$.ref": (True, 2),
        "$.refs[]": (True, 2),
        "$.grid[][]": (True, 0),
        "$.pair[0]": (False, 0),
        "$.pair[1]": (True, 0),
        "$.map[*][*]": (False, 0),
        "$.any": (True, 3),
        # another oneOf branch declares v a string: null could break the record, whichever branch it matched
        "$.shapes.v": (False, 0),
        "$.both": (True, 0),
        "$.narrowed": (False, 0),
        # a ``not`` on the object: what it refuses is not followed, so the placeholder (valid) stands in
        "$.guarded.v": (False, 0),
    }


def test_avro_nullability_per_value_position() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": ["null", "string"]}}},
            {"name": "deep", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
            {"name": "opt", "type": ["null", {"type": "map", "values": "string"}]},
            {"name": "single", "type": ["string"]},  # a union of one branch: no null
        ],
    }
    for f in schema["fields"]:
        f["confluent:tags"] = PII
    plan = compile_avro(fastavro.parse_schema(schema), TagRules())
    assert {leaf.path: leaf.nullable for leaf in plan.leaves} == {
        "R.grid[][]": True,
        "R.deep[*][]": False,
        "R.opt[*]": False,  # the map may be null, its values may not
        "R.single": False,
    }


def test_one_value_two_schemas_merge_to_the_stricter_stand_in() -> None:
    from fieldcrypt.core.plan import Leaf
    from fieldcrypt.json_schema.policy import merge

    loose = Leaf("$.v", "string", None, frozenset(PII), nullable=True, min_length=3)
    strict = Leaf("$.v", "string", None, frozenset(PII), nullable=False, min_length=5)
    merged = merge(loose, strict, "$.v")
    assert isinstance(merged, Leaf) and (merged.nullable, merged.min_length) == (False, 5)


def test_a_placeholder_that_would_match_another_oneof_branch_is_refused(
    keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    """Branch B takes short strings only: the ciphertext (long) matched A alone, "<erased>" would match both, so the
    document would fail its oneOf. Refused for that record (never returned invalid); a longer placeholder reads."""
    schema = _json_with(
        {
            "oneOf": [
                {"type": "object", "properties": {"s": _s("string")}, "required": ["s"]},
                {"type": "object", "properties": {"s": {"type": "string", "maxLength": 10}}, "required": ["s"]},
            ]
        }
    )
    store = stores("producer")
    producer = keyrings(store)
    reg, data = _write_json(schema, {"s": "longer than ten"}, producer)
    producer.shred_person("p-1")
    keyring = keyrings(store)
    with pytest.raises(ConfigurationError, match="2 oneOf branches") as err:
        reader("json", reg, keyring, {})(data, value_ctx())
    assert err.value.field_path == "$.v"
    out = reader("json", reg, keyring, {"fieldcrypt.placeholder": "<value erased>"})(data, value_ctx())
    assert out["v"] == {"s": "<value erased>"}
    jsonschema.validate(out, schema)
    marked = reader("json", reg, keyring, {"fieldcrypt.on.erased": "marker"})(data, value_ctx())
    assert isinstance(marked["v"]["s"], Erased)


# --- the record value itself: never None (a tombstone) --------------------------------------------------------------
ROOT_SCHEMAS: dict[str, list[dict[str, Any] | list[Any]]] = {
    "avro": [
        ["null", {"type": "string", "confluent:tags": PII}],
        ["null", "int", {"type": "string", "confluent:tags": PII}],
        ["null", {"type": "bytes", "confluent:tags": PII}],
    ],
    "json": [
        {"type": ["string", "null"], "confluent:tags": PII},
        {"oneOf": [{"type": "null"}, {"type": "string", "confluent:tags": PII}]},
        {"$ref": "#/$defs/Opt", "$defs": {"Opt": {"type": ["string", "null"], "confluent:tags": PII}}},
    ],
}


def _root_value(schema: Any) -> Any:
    """What the producer writes: bytes for an Avro bytes branch, else text."""
    return b"secret bytes" if isinstance(schema, list) and schema[-1]["type"] == "bytes" else "secret"


@pytest.mark.parametrize("how", ["erased", "denied"])
@pytest.mark.parametrize(
    ("fmt", "schema"), [(fmt, s) for fmt, schemas in ROOT_SCHEMAS.items() for s in schemas], ids=lambda v: str(v)
)
def test_an_unreadable_nullable_root_value_reads_as_the_placeholder_not_none(
    fmt: str, schema: Any, how: str, keyrings: Callable[[str], Keyring], stores: Callable[[str], str]
) -> None:
    """A record value of None is what confluent's deserializers return for a Kafka tombstone (compacting sinks
    delete the key): an erased or denied value that is the whole record reads as the placeholder, valid against
    the schema, with the default on.erased=null (and on.denied=null)."""
    store = stores(f"producer-{uuid.uuid4().hex}")
    producer = keyrings(store)
    reg = registry()
    value = _root_value(schema)
    if fmt == "avro":
        data = AvroSerializer(reg, json.dumps(schema), keyring=producer)(value, value_ctx())
    else:
        data = JSONSerializer(json.dumps(schema), reg, keyring=producer)(value, value_ctx())
    assert data is not None and (value if isinstance(value, bytes) else value.encode()) not in data
    assert reader(fmt, reg, keyrings(store), {})(data, value_ctx()) == value  # readable: as written
    if how == "erased":
        [domain] = {k.domain for k in producer.keys()}
        producer.shred_domain(domain, reason="erasure")
        keyring, conf = keyrings(store), {}
    else:
        keyring, conf = keyrings("elsewhere"), {"fieldcrypt.on.denied": "null"}
    out = reader(fmt, reg, keyring, conf)(data, value_ctx())
    assert out is not None
    text = PLACEHOLDER if how == "erased" else DENIED
    assert out == (text.encode() if isinstance(value, bytes) else text)
    if fmt == "avro":
        assert fastavro.validation.validate(out, fastavro.parse_schema(json.loads(json.dumps(schema))))
    else:
        jsonschema.validate(out, schema)
    # placeholder mode: the same; raise and marker: unchanged
    key = f"fieldcrypt.on.{how}"
    assert reader(fmt, reg, keyring, {key: "placeholder"})(data, value_ctx()) == out
    assert isinstance(
        reader(fmt, reg, keyring, {key: "marker"})(data, value_ctx()), Erased if how == "erased" else Denied
    )


def test_the_root_value_is_never_nullable_in_the_plan() -> None:
    """Decided at compile time, like every other position; values below the root keep their own nullability."""
    for schema in ROOT_SCHEMAS["avro"]:
        plan = compile_avro(fastavro.parse_schema(schema), TagRules())
        assert [leaf.nullable for leaf in plan.leaves] == [False], schema
    for schema in ROOT_SCHEMAS["json"]:
        assert set(_json_plan(schema).values()) == {(False, 0)}, schema
    wrapped = {"type": "array", "items": {"type": ["string", "null"], "confluent:tags": PII}}
    assert _json_plan(wrapped) == {"$[]": (True, 0)}
    avro_items = {"type": "array", "items": ["null", {"type": "string", "confluent:tags": PII}]}
    assert [leaf.nullable for leaf in compile_avro(fastavro.parse_schema(avro_items), TagRules()).leaves] == [True]
