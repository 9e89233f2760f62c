"""confluent's rule machinery, as fieldcrypt runs it, cannot be stalled by a schema's regex (issue 15, item 6).

Written from the attack: a schema that carries a field-level rule (``CEL_FIELD``) makes fieldcrypt run confluent's
own field transformer, which (1) picks a JSON ``oneOf``/``anyOf`` branch or ``type``-list member with jsonschema's
plain ``validate`` (Python's backtracking ``re``): ``{"oneOf": [{"pattern": "^(a+)+$"}, {"pattern": "!$"}]}`` and
the value ``"a" * 30 + "!"`` passed fieldcrypt's validation (on RE2) and then hung the consumer in the transformer;
(2) matches ``metadata.tags`` wildcards against every field's full name with ``re`` (``wildcard_match``):
``**a**a**a**b`` on a 2,000-letter Avro field name takes hours, ``**a`` 24 times on 60 letters as long. Each attack
runs in a child process, so a regression fails on its timeout instead of stalling the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from typing import Any

import pytest
from confluent_kafka.schema_registry import Metadata, MetadataTags, Schema
from conftest import value_ctx

from fieldcrypt import ConfigurationError, Keyring, PolicyError
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.core.confluent import wildcard_match, wildcard_stars
from fieldcrypt.json_schema import JSONSerializer
from fieldcrypt.json_schema.confluent import bounded_transform
from fieldcrypt.json_schema.validation import bounded_validate

EVIL = "^(a+)+$"
KEY = "a" * 30 + "!"  # with EVIL, Python's re backtracks for hours
DRAFT7 = "http://json-schema.org/draft-07/schema#"

_IN_A_CHILD = r"""
import json, sys, time
from confluent_kafka.schema_registry import Metadata, MetadataTags, Rule, RuleKind, RuleMode, RuleSet, Schema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.rules.cel.cel_field_executor import CelFieldExecutor
from confluent_kafka.serialization import MessageField, SerializationContext
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

store, kek, case = sys.argv[1], sys.argv[2], sys.argv[3]
EVIL, KEY, DRAFT7 = "^(a+)+$", "a" * 30 + "!", "http://json-schema.org/draft-07/schema#"
CelFieldExecutor.register()
registry = SchemaRegistryClient.new_client({"url": "mock://rules-regex"})
ctx = SerializationContext("t", MessageField.VALUE)
LATEST = {"auto.register.schemas": False, "use.latest.version": True}
SEEN = "name == 'v' ? value + '-seen' : value"  # marks the value the transformer reached, through the branch chosen


def rule(mode):
    return Rule("mark", "", RuleKind.TRANSFORM, mode, "CEL_FIELD", None, None, SEEN, None, None, False)


def json_schema(v, **extra):
    doc = {"$schema": DRAFT7, "title": "T", "type": "object",
           "properties": {"email": {"type": "string", "confluent:tags": ["PII"]}, "v": v}}
    doc.update(extra)
    return json.dumps(doc)


def json_read(keyring, text):
    registry.register_schema("t-value", Schema(text, "JSON", rule_set=RuleSet(None, [rule(RuleMode.READ)])))
    data = JSONSerializer(text, registry, conf={"auto.register.schemas": False, "use.latest.version": True},
                          keyring=keyring)({"email": "x@example.com", "v": KEY}, ctx)
    return JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)(data, ctx)


def json_write(keyring, text):
    registry.register_schema("t-value", Schema(text, "JSON", rule_set=RuleSet(None, [rule(RuleMode.WRITE)])))
    ser = JSONSerializer(text, registry, conf=LATEST, keyring=keyring)
    data = ser({"email": "x@example.com", "v": KEY}, ctx)
    return JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)(data, ctx)


def avro_read(keyring, long_name, wildcard, short="aaab"):
    fields = [{"name": long_name, "type": "string"}, {"name": short, "type": "string"},
              {"name": "v", "type": "string"}, {"name": "email", "type": "string"}]
    text = json.dumps({"type": "record", "name": "R", "fields": fields})
    tags = MetadataTags({"R.email": ["PII"], wildcard: ["OTHER"]})
    rules = RuleSet(None, [rule(RuleMode.READ)])
    registry.register_schema("t-value", Schema(text, "AVRO", metadata=Metadata(tags, None, None), rule_set=rules))
    conf = {"fieldcrypt.plaintext.tags": ["OTHER"]}
    ser = AvroSerializer(registry, None, conf={**LATEST, **conf}, keyring=keyring)
    data = ser({long_name: "w", short: "z", "v": "y", "email": "x@example.com"}, ctx)
    out = AvroDeserializer(registry, keyring=keyring, conf=conf)(data, ctx)
    return {"v": out["v"], "email": out["email"]}


CASES = {
    # the reviewer's: a oneOf branch choice on read, the value valid (the second branch)
    "json oneOf read": lambda kr: json_read(kr, json_schema({"oneOf": [{"type": "string", "pattern": EVIL},
                                                                      {"type": "string", "pattern": "!$"}]})),
    # the same on write (WRITE rules run before validation, which then sees "...!-seen")
    "json oneOf write": lambda kr: json_write(kr, json_schema({"oneOf": [{"type": "string", "pattern": EVIL},
                                                                        {"type": "string", "pattern": "!"}]})),
    # an anyOf branch through a $ref
    "json anyOf $ref read": lambda kr: json_read(kr, json_schema(
        {"anyOf": [{"$ref": "#/definitions/E"}, {"type": "string"}]},
        definitions={"E": {"type": "string", "pattern": EVIL}})),
    # a type list: the member is chosen with validate; the value is invalid (validation refuses it after the rule)
    "json type list write": lambda kr: json_write(kr, json_schema({"type": ["string", "null"], "pattern": EVIL})),
    # a metadata.tags wildcard of four '**' (accepted) against a 2,000-letter field name
    "avro wildcard read": lambda kr: avro_read(kr, "a" * 2000, "**a**a**a**b"),
    # the reviewer's: 25 of them (refused)
    "avro many stars": lambda kr: avro_read(kr, "a" * 60, "**" + "a**" * 24 + "b", "a" * 30 + "b"),
}

start = time.monotonic()
with Keyring(store, kek) as keyring:
    try:
        result = json.dumps(CASES[case](keyring), sort_keys=True)
    except Exception as exc:
        result = f"{type(exc).__name__}: {exc}"
print(json.dumps({"result": result, "seconds": time.monotonic() - start}))
"""

EXPECTED = {
    "json oneOf read": json.dumps({"email": "x@example.com", "v": KEY + "-seen"}, sort_keys=True),
    "json oneOf write": json.dumps({"email": "x@example.com", "v": KEY + "-seen"}, sort_keys=True),
    "json anyOf $ref read": json.dumps({"email": "x@example.com", "v": KEY + "-seen"}, sort_keys=True),
    "json type list write": "SerializationError: the document does not match the schema",
    "avro wildcard read": json.dumps({"email": "x@example.com", "v": "y-seen"}, sort_keys=True),
    "avro many stars": "PolicyError: metadata.tags path pattern '**a**a",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_a_hostile_schema_cannot_stall_the_rules(case: str, store_url: str, kek_uri: str) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_CHILD, store_url, kek_uri, case], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 60, "as long as a backtracking regex"
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["result"].startswith(EXPECTED[case]), out["result"]
    assert out["seconds"] < 10, out["seconds"]


# -- what the bounded machinery is ---------------------------------------------------------------------------------


def _functions(env: dict[str, Any]) -> list[types.FunctionType]:
    return [v for v in env.values() if isinstance(v, types.FunctionType) and v.__globals__ is env]


def test_the_json_transformer_validates_on_re2_only() -> None:
    from confluent_kafka.schema_registry.common import json_schema as confluent

    transform = bounded_transform()
    env = transform.__globals__
    assert transform.__code__ is confluent.transform.__code__  # confluent's code, re-bound
    assert env["validate"] is bounded_validate
    for name in ("transform", "_transform_field", "_validate_subschema", "_validate_subtypes"):
        assert env[name].__globals__ is env and env[name] is not getattr(confluent, name)
    assert {f.__name__ for f in _functions(env)} >= {"transform", "_validate_subschema", "_validate_subtypes"}
    assert confluent.validate is not bounded_validate  # confluent's own module is untouched


def test_the_rule_context_matches_wildcards_on_re2() -> None:
    from confluent_kafka.schema_registry.common.serde import RuleContext

    from fieldcrypt.core.confluent import _bounded_tags, _BoundedRuleContext

    assert _BoundedRuleContext.get_tags.__globals__["wildcard_match"] is wildcard_match
    assert RuleContext.get_tags.__globals__["wildcard_match"] is not wildcard_match
    with pytest.raises(RuntimeError):
        _bounded_tags(object())


def test_the_same_branches_as_jsonschema_with_re() -> None:
    """Where ``re`` answers at once, the bounded validate answers as jsonschema's."""
    from jsonschema import ValidationError, validate

    schemas = [{"type": "string", "pattern": EVIL}, {"type": "string", "pattern": "!$"}, {"pattern": r"^\w+$"}]
    for schema in schemas:
        for text in ["aaaa", "a" * 12 + "!", "", "٣", 5, "a\n"]:
            try:
                validate(text, schema)
                expected = True
            except ValidationError:
                expected = False
            try:
                bounded_validate(text, schema)
                got = True
            except ValidationError:
                got = False
            assert got is expected, (schema, text)


@pytest.mark.parametrize(
    ("pattern", "stars"),
    [("**.ssn", 1), ("Order.*", 1), ("a**.b*", 2), ("**.*.x", 1), ("a?b", 0), ("**a**a**a**b", 4), ("***", 2)],
)
def test_wildcard_stars(pattern: str, stars: int) -> None:
    assert wildcard_stars(pattern) == stars


def test_more_than_four_stars_are_refused_for_every_schema(registry: Any, keyring: Keyring) -> None:
    """Refused whether a rule runs or not, naming the pattern: nobody needs five."""
    text = json.dumps({"type": "record", "name": "R", "fields": [{"name": "email", "type": "string"}]})
    wildcard = "**e**m**a**i**l"
    registry.register_schema(
        "orders-value", Schema(text, "AVRO", metadata=Metadata(MetadataTags({wildcard: ["PII"]}), None, None))
    )
    ser = AvroSerializer(
        registry, None, conf={"auto.register.schemas": False, "use.latest.version": True}, keyring=keyring
    )
    with pytest.raises(PolicyError, match=r"\*\*e\*\*m\*\*a\*\*i\*\*l.*holds 5"):
        ser({"email": "x@example.com"}, value_ctx())


def test_an_invalid_regex_in_the_local_schema_is_a_configuration_error(registry: Any, keyring: Keyring) -> None:
    """It raised jsonschema's own SchemaError out of the constructor."""
    text = json.dumps(
        {
            "$schema": DRAFT7,
            "type": "object",
            "properties": {"email": {"type": "string", "confluent:tags": ["PII"]}, "id": {"pattern": "(unclosed"}},
        }
    )
    with pytest.raises(ConfigurationError, match=r"#/properties/id/pattern fails the metaschema's 'format'"):
        JSONSerializer(text, registry, keyring=keyring)
