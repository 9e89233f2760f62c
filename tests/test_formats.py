"""The format registry (``fieldcrypt.formats``) and the interface every format implements (``SchemaFormat``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

import fieldcrypt.formats as registry_module
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.core.format import SchemaFormat, ValueShape
from fieldcrypt.errors import PolicyError, UnsupportedFormatError, UnsupportedSchemaTypeError
from fieldcrypt.formats import format_by_key, format_for, formats
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.json_schema.format import JSONSchemaFormat
from fieldcrypt.lint import lint_schema

MEMBERS = ("name", "schema_type", "key", "serializer", "deserializer")
METHODS = ("parser", "compile", "refusals", "deserializer_for", "decode", "walker", "shape", "names", "explain")


def test_the_registry_maps_schema_types_to_formats() -> None:
    assert format_for(None) is format_for("AVRO") is format_for("avro")
    assert format_for("AVRO").serializer is AvroSerializer and format_for("AVRO").deserializer is AvroDeserializer
    assert format_for("JSON").serializer is JSONSerializer and format_for("JSON").deserializer is JSONDeserializer
    assert [f.schema_type for f in formats()] == ["AVRO", "JSON", "PROTOBUF"]
    assert format_by_key("json") is format_for("JSON")


def test_the_registry_names_each_format_as_the_format_does() -> None:
    """The registry knows each format's names without importing it (a ``fieldcrypt keys`` command imports none of
    them); they are the format's own."""
    for (key, name, schema_type, _), fmt in zip(registry_module._REGISTERED, formats(), strict=True):
        assert (fmt.key, fmt.name, fmt.schema_type) == (key, name, schema_type)
    assert registry_module.keys() == [f.key for f in formats()]
    assert registry_module.supported() == "Avro, JSON Schema and Protobuf"


def test_a_keys_command_imports_no_format_nor_schema_tool() -> None:
    """``fieldcrypt keys ...`` starts without the formats (confluent's registry client, jsonschema, protobuf)."""
    import subprocess
    import sys

    code = (
        "import sys; from fieldcrypt.cli import main; main(['keys', 'list', '--help']);"
        "print(sorted(m for m in sys.modules if m.startswith(('fieldcrypt.avro', 'fieldcrypt.json_schema', "
        "'fieldcrypt.protobuf', 'fieldcrypt.inspect.lint', 'confluent_kafka.schema_registry'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("schema_type", ["THRIFT", "garbage", "", "JSONX"])
def test_an_unknown_schema_type_is_refused_naming_the_supported_ones(schema_type: str) -> None:
    with pytest.raises(UnsupportedSchemaTypeError) as raised:
        format_for(schema_type)
    assert repr(schema_type) in str(raised.value) and "AVRO, JSON" in str(raised.value)
    assert isinstance(raised.value, PolicyError) and not isinstance(raised.value, UnsupportedFormatError)


@pytest.mark.parametrize("fmt", formats(), ids=lambda f: f.key)
def test_every_registered_format_implements_the_interface(fmt: SchemaFormat) -> None:
    assert isinstance(fmt, SchemaFormat)
    for name in MEMBERS:
        assert getattr(fmt, name), name
    for name in METHODS:
        assert callable(getattr(fmt, name)), name


def test_a_format_plugs_in_through_the_registry_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third format registered in ``fieldcrypt.formats`` is what lint, scan and verify find for its schema type,
    with no change to the core or the tools: here a toy one reading JSON schemas under the type TOY."""
    shapes: list[Any] = []

    class Toy(JSONSchemaFormat):
        name, schema_type, key = "Toy", "TOY", "toy"

        def shape(self, calls: list[tuple[Any, ...]]) -> ValueShape:
            shapes.append(calls)
            return super().shape(calls)

    toy = Toy()
    monkeypatch.setattr(registry_module, "_REGISTERED", (*registry_module._REGISTERED, toy))
    assert format_for("toy") is toy and format_by_key("toy") is toy
    properties = {"email": {"type": "string", "confluent:tags": ["PII"]}, "n": {"type": "integer"}}
    text = json.dumps({"type": "object", "properties": properties})
    report = lint_schema(text, "TOY")
    assert report.schema_type == "TOY" and report.encrypted == ["$.email"] and shapes
    assert not [f for f in report.findings if f.kind == "invalid"]

    from fieldcrypt.inspect.scan import _Formats
    from fieldcrypt.inspect.topic import RecordSchema

    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    schema_id = client.register_schema("t-value", Schema(text, "JSON"))
    scan_formats = _Formats(client, {})
    record = RecordSchema(schema_id, "TOY", "t-value", Schema(text, "JSON"))
    cached = scan_formats.plan(record)
    assert [leaf.path for leaf in cached.runner.plan.leaves] == ["$.email"]
    assert scan_formats.decode(record, cached, b'{"email": "a@b.c", "n": 1}') == {"email": "a@b.c", "n": 1}

    monkeypatch.setattr(registry_module, "_REGISTERED", registry_module._REGISTERED[:3])
    assert format_for("AVRO").key == "avro"
    assert "fieldcrypt's serdes are Avro, JSON Schema and Protobuf" in lint_schema(text, "TOY").findings[0].message
    monkeypatch.setattr(registry_module, "_REGISTERED", (toy, *registry_module._REGISTERED))  # first in the list
    assert format_for("AVRO").key == "avro" and format_for("TOY") is toy and formats()[0] is toy
