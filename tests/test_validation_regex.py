"""JSON Schema validation cannot be stalled by a schema's regex (issue 15, item 6).

Written from the attack: a schema with ``"pattern": "^(a+)+$"`` on an untagged string property (or the same regex in
``patternProperties``, beside ``additionalProperties`` or ``unevaluatedProperties``, in ``propertyNames``, in a
``oneOf`` branch) and a record whose value or key is 34 ``a`` and a ``!``: jsonschema and fastjsonschema searched it
with Python's backtracking ``re``, and the validating serializer, the deserializer (validation is on by default) and
the serializer's branch choice ran for hours. Each attack runs in a child process, so a regression fails on its
timeout instead of stalling the suite; the verdict must be Python ``re``'s (checked on a shorter text ``re`` answers
at once)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.serialization import SerializationError
from conftest import value_ctx
from jsonschema import validators

from fieldcrypt import EncryptionError, Keyring, PolicyError
from fieldcrypt.errors import MalformedRecordError
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.json_schema.serde import _fast_validator
from fieldcrypt.json_schema.validation import NO_REMOTE, bounded_class, refusals, searches_re
from fieldcrypt.lint import lint_schema

EVIL = "^(a+)+$"
ATTACK = "a" * 34 + "!"  # with EVIL, Python's re backtracks for hours
SHORT = "a" * 12 + "!"  # the same shape, which re answers at once: the verdict to give
TAGGED = {"type": "string", "confluent:tags": ["PII"]}
DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"email": TAGGED, **props}}


# (schema, record with "ATTACK" where the attack goes, the verdicts: validating serializer, serializer with
# validation off, validating deserializer). "ok", or the error class the call must raise.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, str, str]]] = {
    # no $schema, draft-07: what fastjsonschema compiled, and searched with re
    "pattern": (
        _obj(code={"type": "string", "pattern": EVIL}),
        {"code": "ATTACK", "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    "pattern-draft-07": (
        {**_obj(code={"type": "string", "pattern": EVIL}), "$schema": DRAFT7},
        {"code": "ATTACK", "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    "pattern-2020-12": (
        {**_obj(code={"type": "string", "pattern": EVIL}), "$schema": DRAFT2020},
        {"code": "ATTACK", "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    # re.search finds no match in the key, so nothing constrains its value: valid
    "patternProperties": (
        {**_obj(), "patternProperties": {EVIL: {"type": "integer"}}},
        {"ATTACK": "any", "email": "p@example.com"},
        ("ok", "ok", "ok"),
    ),
    # jsonschema joins the regexes with | and searches each key not declared: the key is an extra one
    "additionalProperties": (
        {**_obj(), "patternProperties": {EVIL: {}, "^x-": {}}, "additionalProperties": False},
        {"ATTACK": 1, "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    "additionalProperties-draft-07": (
        {**_obj(), "$schema": DRAFT7, "patternProperties": {EVIL: {}}, "additionalProperties": False},
        {"ATTACK": 1, "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    "unevaluatedProperties": (
        {**_obj(), "$schema": DRAFT2020, "patternProperties": {EVIL: {}}, "unevaluatedProperties": False},
        {"ATTACK": 1, "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    "propertyNames": (
        {**_obj(), "propertyNames": {"pattern": EVIL + "|^email$"}},
        {"ATTACK": 1, "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    # jsonschema's evolve switches to a subschema's $schema draft (its plain class, with re): kept bounded
    "pattern-under-another-$schema": (
        _obj(code={"$schema": DRAFT7, "type": "string", "pattern": EVIL}),
        {"code": "ATTACK", "email": "p@example.com"},
        ("SerializationError", "ok", "MalformedRecordError"),
    ),
    # the serializer's branch choice (validation off) matches the branches with jsonschema: no branch matches
    "oneOf-branch-choice": (
        {
            "type": "object",
            "oneOf": [
                {
                    "properties": {"kind": {"const": "a"}, "code": {"pattern": EVIL}, "email": TAGGED},
                    "required": ["kind"],
                },
                {"properties": {"kind": {"const": "b"}}, "required": ["kind"]},
            ],
        },
        {"kind": "a", "code": "ATTACK", "email": "p@example.com"},
        ("SerializationError", "EncryptionError", "MalformedRecordError"),
    ),
}

_IN_A_CHILD = """
import json, sys, time
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from fieldcrypt import Keyring
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

store, kek, spec = sys.argv[1:]
schema, record, attack = json.loads(spec)
record = {(attack if k == "ATTACK" else k): (attack if v == "ATTACK" else v) for k, v in record.items()}
registry = SchemaRegistryClient.new_client({"url": "mock://hostile-validation"})
ctx = SerializationContext("t", MessageField.VALUE)
text = json.dumps(schema)
out = {}

def run(name, call):
    start = time.monotonic()
    try:
        result = call()
        out[name] = ["ok"]
    except Exception as exc:
        result = None
        out[name] = [c.__name__ for c in type(exc).__mro__]
    out[name + " seconds"] = time.monotonic() - start
    return result

with Keyring(store, kek) as keyring:
    validating = JSONSerializer(text, registry, keyring=keyring)
    unvalidated = JSONSerializer(text, registry, conf={"validate": False}, keyring=keyring)
    run("write", lambda: validating(record, ctx))
    data = run("write unvalidated", lambda: unvalidated(record, ctx))
    if data is None:  # framed by hand: the deserializer validates before it decrypts
        schema_id = registry.register_schema("t-value", Schema(text, "JSON"))
        data = b"\\0" + schema_id.to_bytes(4, "big") + json.dumps(record).encode()
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    run("read", lambda: de(data, ctx))
print(json.dumps(out))
"""


def _valid_with_re(schema: dict[str, Any], record: dict[str, Any]) -> bool:
    """What jsonschema (Python's re) answers for the record with the attack shortened to one re answers at once."""
    short = {(SHORT if k == "ATTACK" else k): (SHORT if v == "ATTACK" else v) for k, v in record.items()}
    plain = validators.validator_for(schema)(schema)
    return bool(plain.is_valid(short))


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_regex_cannot_stall_validation(case: str, store_url: str, kek_uri: str) -> None:
    schema, record, expected = CASES[case]
    assert (expected[0] == "ok") is _valid_with_re(schema, record)  # the verdict Python's re gives
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_CHILD, store_url, kek_uri, json.dumps([schema, record, ATTACK])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 60, "as long as a backtracking regex"
    out = json.loads(done.stdout.splitlines()[-1])
    for name, verdict in zip(("write", "write unvalidated", "read"), expected, strict=True):
        assert verdict in out[name], (name, out[name])
        assert out[f"{name} seconds"] < 5, (name, out[f"{name} seconds"])
    if expected[0] != "ok":  # the validating serializer's own error family, as confluent's raises
        assert "SerializationError" in out["write"] and "FieldcryptError" not in out["write"]


# -- the same answers as jsonschema with re, where both run --------------------------------------------------------

PATTERNS = ["", "a", "^a", "a$", "^a$", "^email$", "^x-", "ab|ac", "^a{2,3}$", r"^\d+$", r"^\w+$", r"\s", "[^a]", "^$"]
TEXTS = ["", "a", "aa", "aaa", "a\n", "email", "email\n", "x-y", "ab", "12", "٣", "a b", "b", "名前"]
DRAFTS = [validators.Draft4Validator, validators.Draft7Validator, validators.Draft201909Validator]
DRAFTS += [validators.Draft202012Validator]


def _schemas(rx: str, other: str) -> list[dict[str, Any]]:
    return [
        {"type": "string", "pattern": rx},
        {"type": "object", "patternProperties": {rx: {"type": "integer"}}},
        {"type": "object", "patternProperties": {rx: {}, other: {}}, "additionalProperties": False},
        {"type": "object", "properties": {"b": {}}, "patternProperties": {rx: {}}, "additionalProperties": False},
        {"type": "object", "propertyNames": {"pattern": rx}},
        {"type": "object", "patternProperties": {rx: {}}, "unevaluatedProperties": False},
        {"allOf": [{"patternProperties": {rx: {}}}], "unevaluatedProperties": {"type": "integer"}},
    ]


@pytest.mark.parametrize("draft", DRAFTS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rx", PATTERNS)
def test_the_same_verdicts_and_errors_as_jsonschema(draft: Any, rx: str) -> None:
    for schema in _schemas(rx, "^x-"):
        plain, ours = draft(schema), bounded_class(draft)(schema)
        for text in TEXTS:
            for instance in (text, {text: 1}, {text: "s", "b": 1}, {text: 1, "x-z": "s"}):
                expected = sorted(e.message for e in plain.iter_errors(instance))
                assert sorted(e.message for e in ours.iter_errors(instance)) == expected, (schema, instance)


@pytest.mark.parametrize("draft", [*DRAFTS, validators.Draft3Validator, validators.Draft6Validator])
def test_no_keyword_function_of_a_bounded_class_reaches_re(draft: Any) -> None:
    cls = bounded_class(draft)
    assert cls is not draft and bounded_class(cls) is cls
    assert [k for k, fn in cls.VALIDATORS.items() if searches_re(fn)] == []
    assert {k for k, fn in draft.VALIDATORS.items() if searches_re(fn)} <= {
        "pattern",
        "patternProperties",
        "additionalProperties",
        "unevaluatedProperties",
    }
    assert re.search(EVIL, "aaa")  # jsonschema's own functions (and re) are untouched


def test_evolve_keeps_the_bounded_class_whatever_a_subschema_names_as_its_draft() -> None:
    cls = bounded_class(validators.Draft202012Validator)
    v = cls({"properties": {"x": {"$schema": DRAFT7, "pattern": "^a"}}})
    evolved = v.evolve(schema={"$schema": DRAFT7, "pattern": "^a"})
    assert type(evolved) is bounded_class(validators.Draft7Validator)
    assert not v.is_valid({"x": "b"}) and v.is_valid({"x": "a"})
    assert validators.validator_for({"$schema": DRAFT7}) is validators.Draft7Validator  # jsonschema's own registry


# -- what the bounded engine does not run: the schema is refused ---------------------------------------------------


def test_a_regex_the_bounded_engine_cannot_run_refuses_the_schema_naming_where(registry, keyring: Keyring) -> None:
    """Never searched with Python's re instead (the attack again), never skipped (jsonschema says invalid)."""
    schema = _obj(code={"type": "string", "pattern": "^(?!internal_)"})
    with pytest.raises(PolicyError) as raised:
        JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    assert raised.value.field_path == "#/properties/code/pattern"
    assert "'^(?!internal_)'" in raised.value.reason and "lookahead or lookbehind at position 1" in raised.value.reason
    # a reader meets it at the first record of that schema, and so does lint
    schema_id = registry.register_schema("orders-value", Schema(json.dumps(schema), "JSON"))
    data = b"\0" + schema_id.to_bytes(4, "big") + json.dumps({"code": "x", "email": "p@example.com"}).encode()
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    with pytest.raises(PolicyError) as read:
        de(data, value_ctx())
    assert read.value.reason == raised.value.reason
    refused = [f for f in lint_schema(json.dumps(schema), "JSON").findings if f.kind == "refused"]
    assert [(f.location, f.reason) for f in refused] == [(raised.value.field_path, raised.value.reason)]


def test_a_refused_regex_in_a_referenced_schema_is_named_with_its_reference(registry, keyring: Keyring) -> None:
    code = {"type": "string", "pattern": "\\bcode"}
    registry.register_schema("code", Schema(json.dumps(code), "JSON"))
    schema = {"type": "object", "properties": {"code": {"$ref": "code.json"}, "email": TAGGED}}
    refs = [SchemaReference("code.json", "code", 1)]
    with pytest.raises(PolicyError) as raised:
        JSONSerializer(Schema(json.dumps(schema), "JSON", refs), registry, keyring=keyring)
    assert raised.value.field_path == "code.json#/pattern" and "word boundary" in raised.value.reason


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "patternProperties": {"(?P<a>x)": {}, "(?P<a>y)": {}}, "additionalProperties": False},
        {"properties": {"a": {"pattern": "(?i)x"}}},
        {"$defs": {"unused": {"pattern": "(a)\\1"}}},
        {"items": [{"pattern": "a++"}]},
    ],
)
def test_every_regex_validation_may_search_with_counts(schema: dict[str, Any]) -> None:
    assert refusals(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": [{"pattern": "(?=x)"}], "const": {"pattern": "(?=x)"}, "default": {"pattern": "(?=x)"}},
        {"properties": {"pattern": {"type": "string"}, "x": {"examples": [{"pattern": "\\b"}]}}},
    ],
)
def test_values_that_are_not_schemas_are_not_regexes(schema: dict[str, Any]) -> None:
    assert refusals(schema) == []


# -- texts no regex runs on ----------------------------------------------------------------------------------------


def test_a_lone_surrogate_where_a_regex_must_be_searched_refuses_the_record(registry, keyring: Keyring) -> None:
    schema = _obj(code={"type": "string", "pattern": "^c"})
    ser = JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    assert de(ser({"code": "cx", "email": "p@example.com"}, value_ctx()), value_ctx())["code"] == "cx"
    with pytest.raises(EncryptionError, match="lone surrogate"):
        ser({"code": "c\ud800", "email": "p@example.com"}, value_ctx())
    schema_id = registry.register_schema("orders-value", Schema(json.dumps(schema), "JSON"))
    data = b"\0" + schema_id.to_bytes(4, "big") + b'{"code": "c\\ud800"}'
    # (with orjson installed, confluent's JSON decoding refuses the escape itself: refused either way)
    with pytest.raises(MalformedRecordError, match=r"lone surrogate|does not decode"):
        de(data, value_ctx())


def test_an_invalid_record_is_still_a_serialization_error(registry, keyring: Keyring) -> None:
    ser = JSONSerializer(json.dumps(_obj(code={"type": "string", "pattern": "^c"})), registry, keyring=keyring)
    with pytest.raises(SerializationError, match=r"at \$\.code: 'pattern' constraint failed"):
        ser({"code": "x"}, value_ctx())


# -- fastjsonschema ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a"},
        {"$schema": DRAFT7, "definitions": {"d": {"patternProperties": {"^a": {}}}}},
        {"type": "object", "propertyNames": {"pattern": "^a"}},
    ],
)
def test_the_compiled_validator_is_never_used_for_a_schema_with_a_regex(schema: dict[str, Any]) -> None:
    assert _fast_validator(schema, Schema(json.dumps(schema), "JSON")) is None
    assert _fast_validator({"type": "string"}, Schema("{}", "JSON")) is not None


def test_the_compiled_validator_never_fetches_a_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``$ref`` outside the schema was fetched with urllib, and its patterns compiled with re."""
    fetched: list[Any] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: fetched.append(a))
    for ref in ("http://127.0.0.1:9/evil.json", "file:///etc/evil.json", "ftp://x/evil.json"):
        schema = {"properties": {"a": {"$ref": ref}}}
        assert _fast_validator(schema, Schema(json.dumps(schema), "JSON")) is None
    assert fetched == [] and "anything" in NO_REMOTE
