"""Every input shape the writers accept is encrypted or refused, through both serializers.

fastavro writes any Mapping as a record or map, any iterable as an array, and unions in tuple notation or with a
``-type`` hint; ``json`` writes tuples as arrays, and a custom ``json_encode`` may accept more. fieldcrypt's walker
must see the same values the writer writes: here every shape is tried, and the only outcomes allowed are "no
tagged value in the bytes, and it reads back" or an ``EncryptionError`` (nothing produced).
"""

from __future__ import annotations

import collections
import json
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from conftest import value_ctx

from fieldcrypt import EncryptionError, Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

SECRETS = [b"secret-email-0000001", b"secret-item-00000002", b"secret-map-000000003", b"secret-branch-000004"]


class CustomMapping(Mapping[str, Any]):
    """A Mapping that is not a dict (as an ORM row or a pydantic model's view can be)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


MAPPINGS: list[Callable[[dict[str, Any]], Any]] = [
    dict,
    types.MappingProxyType,
    collections.UserDict,
    CustomMapping,
    collections.OrderedDict,
]
SEQUENCES: list[Callable[[list[Any]], Any]] = [
    list,
    tuple,
    collections.deque,
    lambda v: iter(v),
    lambda v: (x for x in v),
]

AVRO_BRANCH_A = {
    "type": "record",
    "name": "Created",
    "fields": [{"name": "who", "type": "string", "confluent:tags": ["PII"]}],
}
AVRO_BRANCH_B = {"type": "record", "name": "Deleted", "fields": [{"name": "why", "type": "string"}]}
AVRO = {
    "type": "record",
    "name": "Shapes",
    "namespace": "t",
    "fields": [
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "list", "type": {"type": "array", "items": "string"}, "confluent:tags": ["PII"]},
        {"name": "map", "type": {"type": "map", "values": "string"}, "confluent:tags": ["PII"]},
        {"name": "event", "type": ["null", AVRO_BRANCH_A, AVRO_BRANCH_B]},
    ],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "confluent:tags": ["PII"]},
        "list": {"type": "array", "items": {"type": "string", "confluent:tags": ["PII"]}},
        "map": {"type": "object", "additionalProperties": {"type": "string", "confluent:tags": ["PII"]}},
        "event": {"type": "object", "properties": {"who": {"type": "string", "confluent:tags": ["PII"]}}},
    },
}


def plain() -> dict[str, Any]:
    return {
        "email": SECRETS[0].decode(),
        "list": [SECRETS[1].decode()],
        "map": {"k": SECRETS[2].decode()},
        "event": {"who": SECRETS[3].decode()},
    }


def shaped(mapping: Callable[[dict[str, Any]], Any], sequence: Callable[[list[Any]], Any], event: Any) -> Any:
    rec = plain()
    return mapping({**rec, "list": sequence(rec["list"]), "map": mapping(rec["map"]), "event": event})


def check(data: bytes | None) -> bytes:
    assert data is not None
    for secret in SECRETS:
        assert secret not in data, f"{secret!r} written in clear"
    return data


AVRO_EVENTS: list[Callable[[Callable[[dict[str, Any]], Any]], Any]] = [
    lambda m: m({"who": SECRETS[3].decode()}),  # chosen by validation, as fastavro chooses
    lambda m: ("t.Created", m({"who": SECRETS[3].decode()})),  # tuple notation
    lambda m: m({"-type": "t.Created", "who": SECRETS[3].decode()}),  # a -type hint
]


@pytest.mark.parametrize("mapping", MAPPINGS, ids=lambda m: getattr(m, "__name__", "mapping"))
@pytest.mark.parametrize("sequence", SEQUENCES, ids=["list", "tuple", "deque", "iterator", "generator"])
@pytest.mark.parametrize("event", AVRO_EVENTS, ids=["validated", "tuple-notation", "type-hint"])
def test_avro_every_shape_is_encrypted(registry, keyring: Keyring, mapping: Any, sequence: Any, event: Any) -> None:
    ser = AvroSerializer(registry, json.dumps(AVRO), keyring=keyring)
    data = check(ser(shaped(mapping, sequence, event(mapping)), value_ctx()))
    out = AvroDeserializer(registry, keyring=keyring)(data, value_ctx())
    assert out == plain()


@pytest.mark.parametrize(
    "bad",
    [
        {"list": "one-string-not-an-array"},  # fastavro would write its characters as an array
        {"list": b"some-bytes-000000000"},
        {"list": {"a": "mapping-as-array"}},
        {"map": [("k", "pairs-are-not-a-map")]},
        {"email": b"bytes-for-a-string-1"},
        {"email": 12345},
        {"event": ("t.Nope", {"who": "unknown-branch-name"})},
        {"event": ("t.Created", {"who": "x"}, "extra")},
    ],
    ids=repr,
)
def test_avro_shapes_it_cannot_see_into_are_refused(registry, keyring: Keyring, bad: dict[str, Any]) -> None:
    ser = AvroSerializer(registry, json.dumps(AVRO), keyring=keyring)
    with pytest.raises(EncryptionError):
        ser({**plain(), **bad}, value_ctx())


@pytest.mark.parametrize("mapping", MAPPINGS, ids=lambda m: getattr(m, "__name__", "mapping"))
@pytest.mark.parametrize("sequence", [list, tuple], ids=["list", "tuple"])
def test_json_every_shape_is_encrypted(registry, keyring: Keyring, mapping: Any, sequence: Any) -> None:
    # validation off: jsonschema accepts only dicts and lists, json.dumps only dicts, lists and tuples; with a
    # custom encoder that writes any Mapping, fieldcrypt must still find every tagged value
    conf = {"validate": False}
    encode: Callable[[Any], str] = lambda v: json.dumps(v, default=dict)  # noqa: E731
    ser = JSONSerializer(json.dumps(JSON_SCHEMA), registry, conf=conf, json_encode=encode, keyring=keyring)
    data = check(ser(shaped(mapping, sequence, mapping({"who": SECRETS[3].decode()})), value_ctx()))
    out = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)(data, value_ctx())
    assert out == plain()


@pytest.mark.parametrize(
    "bad",
    [{"list": "one-string-not-an-array"}, {"map": [["k", "pairs"]]}, {"email": 12345}, {"map": {1: "int-key"}}],
    ids=repr,
)
def test_json_shapes_it_cannot_see_into_are_refused(registry, keyring: Keyring, bad: dict[str, Any]) -> None:
    ser = JSONSerializer(json.dumps(JSON_SCHEMA), registry, conf={"validate": False}, keyring=keyring)
    with pytest.raises(EncryptionError):
        ser({**plain(), **bad}, value_ctx())


def test_the_callers_objects_are_not_consumed_or_changed(registry, keyring: Keyring) -> None:
    rec = plain()
    before = json.dumps(rec)
    AvroSerializer(registry, json.dumps(AVRO), keyring=keyring)(rec, value_ctx())
    assert json.dumps(rec) == before
