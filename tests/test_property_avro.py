"""Property: deserializer(serializer(r)) == r over generated tagged schemas and records.

Schemas nest records, arrays and maps of records, nullable unions, tagged strings and bytes; values include
empty and non-ASCII strings and nulls. Every tagged value is also checked to be absent from the wire.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from conftest import value_ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

_names = itertools.count()
TEXT = st.text(max_size=12)  # includes "" and non-ASCII; no surrogates
PII = ["PII"]


def _record_schema(draw: Any, depth: int) -> tuple[dict[str, Any], Any]:
    name = f"R{next(_names)}"
    fields, values = [], {}
    for i in range(draw(st.integers(1, 4))):
        fname = f"f{i}"
        ftype, fvalues, tagged = _field(draw, depth)
        field: dict[str, Any] = {"name": fname, "type": ftype}
        if tagged:
            field["confluent:tags"] = PII
        fields.append(field)
        values[fname] = fvalues
    return {"type": "record", "name": name, "fields": fields}, st.fixed_dictionaries(values)


def _field(draw: Any, depth: int) -> tuple[Any, Any, bool]:
    kinds = ["tstr", "tbytes", "tnull", "str", "int", "double", "bool"]
    if depth < 3:
        kinds += ["rec", "arr", "map", "optrec"]
    kind = draw(st.sampled_from(kinds))
    if kind == "tstr":
        return "string", TEXT, True
    if kind == "tbytes":
        return "bytes", st.binary(max_size=12), True
    if kind == "tnull":
        return ["null", "string"], st.none() | TEXT, True
    if kind == "str":
        return "string", TEXT, False
    if kind == "int":
        return "int", st.integers(-(2**31), 2**31 - 1), False
    if kind == "double":
        return "double", st.floats(allow_nan=False), False
    if kind == "bool":
        return "boolean", st.booleans(), False
    sub, sub_values = _record_schema(draw, depth + 1)
    if kind == "rec":
        return sub, sub_values, False
    if kind == "arr":
        return {"type": "array", "items": sub}, st.lists(sub_values, max_size=3), False
    if kind == "map":
        return {"type": "map", "values": sub}, st.dictionaries(TEXT, sub_values, max_size=3), False
    return ["null", sub], st.none() | sub_values, False


@st.composite
def schema_and_records(draw: Any) -> tuple[dict[str, Any], list[Any]]:
    schema, values = _record_schema(draw, 0)
    return schema, draw(st.lists(values, min_size=1, max_size=4))


def _tagged_values(schema: Any, value: Any, named: dict[str, Any], public: list[Any]) -> list[Any]:
    """Every value of a tagged field in the record (to check none appears on the wire); ``public`` collects
    the untagged strings, bytes and map keys, which may legitimately contain the same text."""
    out: list[Any] = []
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, list):
        branch = next((b for b in schema if b != "null"), None)
        return [] if value is None else _tagged_values(branch, value, named, public)
    if isinstance(schema, dict) and schema.get("type") == "record":
        named[schema["name"]] = schema
        for f in schema["fields"]:
            v = value[f["name"]]
            if "confluent:tags" in f:
                if v is not None:
                    out.append(v)
            elif isinstance(v, (str, bytes)):
                public.append(v)
            else:
                out += _tagged_values(f["type"], v, named, public)
    elif isinstance(schema, dict) and schema.get("type") == "array":
        for v in value:
            out += _tagged_values(schema["items"], v, named, public)
    elif isinstance(schema, dict) and schema.get("type") == "map":
        public.extend(value)
        for v in value.values():
            out += _tagged_values(schema["values"], v, named, public)
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=schema_and_records())
def test_round_trip_over_generated_schemas(case: tuple[dict[str, Any], list[Any]], keyring: Keyring) -> None:
    schema, records = case
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    topic = f"t-{uuid.uuid4().hex}"  # the key store (shared by the examples) records what each subject encrypted
    for record in records:
        data = ser(record, value_ctx(topic))
        public: list[Any] = []
        for secret in _tagged_values(schema, record, {}, public):
            raw = secret.encode() if isinstance(secret, str) else secret
            if len(raw) >= 6 and not any(secret in p for p in public if type(p) is type(secret)):
                assert raw not in data
        assert de(data, value_ctx(topic)) == record
