"""JSON Schema -> field plan: every tag placement is enforced or refused naming its location, never ignored."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJSONSerializer
from conftest import value_ctx

from fieldcrypt import EncryptionError, Keyring, PolicyError
from fieldcrypt.core.plan import (
    ArrayNode,
    ChoiceNode,
    FieldPlan,
    Leaf,
    Node,
    NullableNode,
    RecordNode,
    RefNode,
    TagRules,
)
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.json_schema.policy import compile_json
from fieldcrypt.json_schema.serde import _Parsed

PII = ["PII"]
RULES = TagRules.from_conf(plaintext=["PUBLIC"])


def obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def tagged(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "confluent:tags": PII, **extra}


@pytest.fixture
def compile_(registry: Any) -> Any:
    def run(schema: dict[str, Any], rules: TagRules = RULES) -> FieldPlan:
        text = json.dumps(schema)
        parsed = _Parsed(ConfluentJSONSerializer(text, registry), Schema(text, "JSON"))
        return compile_json(parsed.schema, rules, parsed.resolve, parsed.matcher)

    return run


def leaves(plan: FieldPlan) -> dict[str, str]:
    return {leaf.path: leaf.kind for leaf in plan.leaves}


def step(node: Node | None, name: str) -> Node:
    assert isinstance(node, RecordNode), node
    return next(s.node for s in node.steps if s.name == name)


# -- enforced placements ------------------------------------------------------------------------------------------
DEFS_EMAIL = {"Email": tagged()}
ENFORCED: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("nested properties", obj(a=obj(b=obj(c=tagged()))), {"$.a.b.c": "string"}),
    ("ref to tagged string", {**obj(email={"$ref": "#/$defs/Email"}), "$defs": DEFS_EMAIL}, {"$.email": "string"}),
    (
        "tag beside ref",
        {**obj(e={"$ref": "#/$defs/S", "confluent:tags": PII}), "$defs": {"S": {"type": "string"}}},
        {"$.e": "string"},
    ),
    ("nullable type list", obj(s={"type": ["string", "null"], "confluent:tags": PII}), {"$.s": "string"}),
    (
        "nullable oneOf",
        obj(s={"oneOf": [{"type": "null"}, {"type": "string"}], "confluent:tags": PII}),
        {"$.s": "string"},
    ),
    ("nullable anyOf branch tag", obj(s={"anyOf": [tagged(), {"type": "null"}]}), {"$.s": "string"}),
    ("base64", obj(b=tagged(contentEncoding="base64", contentMediaType="image/png")), {"$.b": "base64"}),
    ("format allowed", obj(e=tagged(format="email", minLength=3)), {"$.e": "string"}),
    (
        "array of tagged strings",
        obj(l={"type": "array", "items": {"type": "string"}, "confluent:tags": PII}),
        {"$.l[]": "string"},
    ),
    ("items tagged", obj(l={"type": "array", "items": tagged()}), {"$.l[]": "string"}),
    ("array of objects", obj(l={"type": "array", "items": obj(x=tagged())}), {"$.l[].x": "string"}),
    (
        "map of tagged strings",
        obj(m={"type": "object", "additionalProperties": {"type": "string"}, "confluent:tags": PII}),
        {"$.m[*]": "string"},
    ),
    (
        "additionalProperties beside properties",
        {**obj(a=tagged()), "additionalProperties": tagged()},
        {"$.a": "string", "$[*]": "string"},
    ),
    (
        "patternProperties",
        {"type": "object", "patternProperties": {"^x-": tagged(), "^y-": {"type": "string"}}},
        {"$[*]": "string"},
    ),
    ("allOf", {"allOf": [obj(a=tagged()), obj(b=tagged()), {"required": ["a"]}]}, {"$.a": "string", "$.b": "string"}),
    (
        "allOf tag and constraint",
        {"allOf": [obj(a={"confluent:tags": PII}), obj(a={"type": "string"})]},
        {"$.a": "string"},
    ),
    (
        "draft-7 tuple items",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            **obj(t={"type": "array", "items": [tagged(), {"type": "integer"}], "additionalItems": tagged()}),
        },
        {"$.t[0]": "string", "$.t[]": "string"},  # a position of its own, then the additional items
    ),
    (
        "prefixItems",
        obj(t={"type": "array", "prefixItems": [{"type": "integer"}, tagged()], "items": obj(z=tagged())}),
        {"$.t[1]": "string", "$.t[].z": "string"},
    ),
    ("plaintext tag on object", obj(o={**obj(a={"type": "integer"}), "confluent:tags": ["PUBLIC"]}), {}),
    ("plaintext tag under not", obj(a={"type": "string", "not": {"confluent:tags": ["PUBLIC"]}}), {}),
    ("unreferenced def", {**obj(a={"type": "string"}), "$defs": DEFS_EMAIL}, {}),
]


@pytest.mark.parametrize(("case", "schema", "expected"), ENFORCED, ids=[c[0] for c in ENFORCED])
def test_enforced_placements(compile_: Any, case: str, schema: dict[str, Any], expected: dict[str, str]) -> None:
    plan = compile_(schema)
    assert leaves(plan) == expected
    assert plan.is_empty == (not expected)
    assert all(d in ("encrypt", "plaintext", "subject") for _, _, d in plan.decisions)


def test_nullable_and_kinds(compile_: Any) -> None:
    plan = compile_(
        obj(
            s={"oneOf": [{"type": "null"}, {"type": "string"}], "confluent:tags": PII},
            b=tagged(contentEncoding="base64"),
        )
    )
    assert step(plan.root, "s") == NullableNode(Leaf("$.s", "string", None, frozenset(PII), nullable=True))
    assert step(plan.root, "b") == Leaf("$.b", "base64", None, frozenset(PII))


def test_record_node_for_additional_and_pattern_properties(compile_: Any) -> None:
    schema = {
        **obj(a=tagged(), b={"type": "integer"}),
        "patternProperties": {"^x-": tagged(), "^n-": {"type": "integer"}},
        "additionalProperties": tagged(),
    }
    root = compile_(schema).root
    assert isinstance(root, RecordNode) and root.name == "$"
    assert root.declared == {"a", "b"} and root.all_patterns == ("^x-", "^n-")
    assert [rx for rx, _ in root.patterns] == ["^x-"] and isinstance(root.extra, Leaf)
    assert [s.name for s in root.steps] == ["a"]


def test_prefix_items_node(compile_: Any) -> None:
    node = step(compile_(obj(t={"type": "array", "prefixItems": [{"type": "integer"}, tagged()]})).root, "t")
    assert isinstance(node, ArrayNode) and node.items is None
    # each position has its own path: a tag moving from one position to another is a removal, and lint's rows
    # tell the positions apart (found by review: one "$.t[]" row called the untagged position encrypted)
    assert node.prefix == (None, Leaf("$.t[1]", "string", None, frozenset(PII)))


def test_allof_merges_branches_and_parent(compile_: Any) -> None:
    schema = {**obj(c=tagged()), "allOf": [obj(a=tagged()), {"$ref": "#/$defs/B"}], "$defs": {"B": obj(b=tagged())}}
    root = compile_(schema).root
    assert isinstance(root, RecordNode) and sorted(s.name for s in root.steps) == ["a", "b", "c"]


def test_oneof_of_objects_is_a_choice_with_the_parent_merged(compile_: Any) -> None:
    kinds = [obj(kind={"const": k}, **({"secret": tagged()} if k == "a" else {})) for k in ("a", "b")]
    plan = compile_({**obj(always=tagged()), "oneOf": kinds})
    choice = plan.root
    assert isinstance(choice, ChoiceNode) and choice.keyword == "oneOf" and choice.path == "$"
    (match_a, node_a), (match_b, node_b) = choice.branches
    assert sorted(s.name for s in node_a.steps) == ["always", "secret"]  # type: ignore[union-attr]
    assert [s.name for s in node_b.steps] == ["always"]  # type: ignore[union-attr]
    assert match_a({"kind": "a"}) and not match_a({"kind": "b"}) and match_b({"kind": "b"})


def test_matcher_resolves_refs_against_the_root(compile_: Any) -> None:
    branches = [{"$ref": "#/$defs/A"}, obj(n={"type": "integer"}, s=tagged())]
    schema = {**obj(v={"anyOf": branches}), "$defs": {"A": {**obj(a=tagged()), "required": ["a"]}}}
    choice = step(compile_(schema).root, "v")
    assert isinstance(choice, ChoiceNode)
    match_a = choice.branches[0][0]
    assert match_a({"a": "x"}) and not match_a({"n": 1})


def test_recursive_refs_use_named_records(compile_: Any) -> None:
    node = {**obj(label=tagged(), kids={"type": "array", "items": {"$ref": "#/$defs/N"}})}
    plan = compile_({**obj(tree={"$ref": "#/$defs/N"}), "$defs": {"N": node}})
    assert set(plan.named) == {"#/$defs/N"}
    kids = step(plan.named["#/$defs/N"], "kids")
    assert kids == ArrayNode(RefNode("#/$defs/N"))


def test_untagged_recursion_compiles_to_an_empty_plan(compile_: Any) -> None:
    node = obj(label={"type": "string"}, kids={"type": "array", "items": {"$ref": "#/$defs/N"}})
    plan = compile_({**obj(tree={"$ref": "#/$defs/N"}), "$defs": {"N": node}})
    assert plan.is_empty and not plan.named


def test_data_subject(compile_: Any) -> None:
    sid = {"type": ["string", "integer"], "confluent:tags": ["DATA_SUBJECT_ID"]}
    schema = {
        **obj(owner={"$ref": "#/$defs/O"}),
        "$defs": {"O": {"allOf": [obj(id={"oneOf": [{"type": "null"}, sid]})]}},
    }
    plan = compile_(schema)
    assert plan.data_subject == ("owner", "id") and plan.data_subject_path == "$.owner.id"
    assert plan.data_subject_kind == "string|integer"
    assert ("$.owner.id", "DATA_SUBJECT_ID", "subject") not in plan.decisions  # the tag sits on a branch schema
    assert any(t == "DATA_SUBJECT_ID" and d == "subject" for _, t, d in plan.decisions)


def test_metadata_tags_reach_refs_and_unmatched_patterns_raise(compile_: Any) -> None:
    schema = {**obj(a=obj(b={"$ref": "#/$defs/S"})), "$defs": {"S": {"type": "string"}}}
    plan = compile_(schema, RULES.with_metadata({"$.a.b": ["PII"]}))
    assert leaves(plan) == {"$.a.b": "string"}
    with pytest.raises(PolicyError, match=r"\$\.nope"):
        compile_(schema, RULES.with_metadata({"$.nope": ["PII"]}))


# -- refusals --------------------------------------------------------------------------------------------------------
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("tag on integer", obj(n={"type": "integer", "confluent:tags": PII}), "$.n"),
    ("tag on object", obj(o={**obj(a={"type": "string"}), "confluent:tags": PII}), "$.o"),
    ("tag without type", obj(x={"confluent:tags": PII}), "$.x"),
    ("tag on array of numbers", obj(l={"type": "array", "items": {"type": "number"}, "confluent:tags": PII}), "$.l[]"),
    ("maxLength", obj(s=tagged(maxLength=8)), "maxLength"),
    ("pattern in allOf sibling", obj(s={"allOf": [tagged(), {"pattern": "^a"}]}), "pattern"),
    (
        "enum in ref target",
        {**obj(s={"$ref": "#/$defs/E", "confluent:tags": PII}), "$defs": {"E": {"type": "string", "enum": ["a"]}}},
        "enum",
    ),
    ("large minLength", obj(s=tagged(minLength=31)), "minLength"),
    ("other contentEncoding", obj(s=tagged(contentEncoding="base32")), "base32"),
    ("not", obj(a={"not": obj(x=tagged())}), "#/properties/a/not"),
    ("if/then", obj(a={"if": {"type": "object"}, "then": obj(x=tagged())}), "#/properties/a/then"),
    ("dependentSchemas", {**obj(a={"type": "string"}), "dependentSchemas": {"a": obj(b=tagged())}}, "dependentSchemas"),
    (
        "dependencies",
        {"$schema": "http://json-schema.org/draft-07/schema#", "dependencies": {"a": obj(b=tagged())}},
        "dependencies/a",
    ),
    ("contains", obj(l={"type": "array", "contains": tagged()}), "#/properties/l/contains"),
    ("propertyNames", {"type": "object", "propertyNames": tagged()}, "propertyNames"),
    ("unevaluatedProperties", {"type": "object", "unevaluatedProperties": tagged()}, "unevaluatedProperties"),
    ("unevaluatedItems", obj(l={"type": "array", "unevaluatedItems": tagged()}), "unevaluatedItems"),
    ("unknown keyword", obj(a={"type": "object", "x-custom": {"deep": [tagged()]}}), "x-custom"),
    (
        "additionalItems in 2020-12",
        obj(l={"type": "array", "items": {"type": "string"}, "additionalItems": tagged()}),
        "additionalItems",
    ),
    (
        "prefixItems in draft-07",
        {"$schema": "http://json-schema.org/draft-07/schema#", **obj(l={"type": "array", "prefixItems": [tagged()]})},
        "prefixItems",
    ),
    ("ref into not", {**obj(a={"not": {"$ref": "#/$defs/Email"}}), "$defs": DEFS_EMAIL}, "#/properties/a/not"),
    ("dynamicRef target", {"$dynamicAnchor": "n", **obj(a=tagged(), b={"$dynamicRef": "#n"})}, "$dynamicRef"),
    ("conflicting allOf shapes", obj(a={"allOf": [tagged(), {"properties": {"z": tagged()}}]}), "$.a"),
    ("undeclared tag", obj(a={"type": "string", "confluent:tags": ["SECRETZ"]}), "SECRETZ"),
    ("malformed tags", obj(a={"type": "string", "confluent:tags": "PII"}), "$.a"),
    (
        "undeclared tag in unreferenced def",
        {"$defs": {"X": {"type": "string", "confluent:tags": ["NOPE"]}}},
        "#/$defs/X",
    ),
    ("undeclared tag under not", obj(a={"not": {"confluent:tags": ["NOPE"]}}), "NOPE"),
    (
        "subject in array",
        obj(l={"type": "array", "items": obj(id={"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]})}),
        "$.l[].id",
    ),
    (
        "subject in choice",
        obj(
            c={"oneOf": [obj(id={"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]}), obj(n={"type": "integer"})]}
        ),
        "$.c.id",
    ),
    ("subject number", obj(id={"type": "number", "confluent:tags": ["DATA_SUBJECT_ID"]}), "$.id"),
    ("subject encrypted", obj(id={"type": "string", "confluent:tags": ["DATA_SUBJECT_ID", "PII"]}), "$.id"),
    (
        "two subjects",
        obj(
            a={"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            b={"type": "integer", "confluent:tags": ["DATA_SUBJECT_ID"]},
        ),
        "$.b",
    ),
]


@pytest.mark.parametrize(("case", "schema", "where"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refusals_name_the_location(compile_: Any, case: str, schema: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError) as err:
        compile_(schema)
    assert where in str(err.value)


def test_unreferenced_tagged_definition_applies_to_nothing(compile_: Any) -> None:
    plan = compile_({**obj(a={"type": "string"}), "$defs": DEFS_EMAIL})
    assert plan.is_empty and ("#/$defs/Email", "PII", "encrypt") in plan.decisions


# -- end to end ------------------------------------------------------------------------------------------------------
SECRET = "s3cret-Ünïcode@example.com"
ROUND_TRIPS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "ref",
        {**obj(email={"$ref": "#/$defs/Email"}, n={"type": "integer"}), "$defs": DEFS_EMAIL},
        {"email": SECRET, "n": 1},
    ),
    ("allOf", {"allOf": [obj(a=tagged()), obj(b={"type": "string"})]}, {"a": SECRET, "b": "clear"}),
    (
        "oneOf",
        {
            "oneOf": [
                {**obj(kind={"const": "a"}, secret=tagged()), "required": ["kind"]},
                {**obj(kind={"const": "b"}, n={"type": "integer"}), "required": ["kind"]},
            ]
        },
        {"kind": "a", "secret": SECRET},
    ),
    ("additionalProperties", {**obj(a={"type": "integer"}), "additionalProperties": tagged()}, {"a": 1, "k1": SECRET}),
    (
        "patternProperties",
        {"type": "object", "patternProperties": {"^pii_": tagged()}},
        {"pii_email": SECRET, "other": 3},
    ),
    ("prefixItems", obj(t={"type": "array", "prefixItems": [{"type": "integer"}, tagged()]}), {"t": [1, SECRET]}),
    ("base64", obj(b=tagged(contentEncoding="base64")), {"b": base64.b64encode(SECRET.encode()).decode()}),
    (
        "array of strings",
        obj(l={"type": "array", "items": {"type": "string"}, "confluent:tags": PII}),
        {"l": [SECRET, SECRET + "2"]},
    ),
]


@pytest.mark.parametrize(("case", "schema", "doc"), ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_round_trip(registry: Any, keyring: Keyring, case: str, schema: dict[str, Any], doc: dict[str, Any]) -> None:
    text = json.dumps(schema)
    ser = JSONSerializer(text, registry, keyring=keyring)
    de = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)
    data = ser(doc, value_ctx())
    for plain in (SECRET, json.dumps(SECRET)[1:-1], base64.b64encode(SECRET.encode()).decode()):
        assert plain.encode() not in data
    assert de(data, value_ctx()) == doc


def test_invalid_pattern_regex_is_refused() -> None:
    schema = {"type": "object", "patternProperties": {"(": tagged()}}  # confluent's check_schema refuses it too
    with pytest.raises(PolicyError, match=r"regex '\('"):
        compile_json(schema, RULES, lambda ref: None, lambda s: lambda v: True)


# -- hostile patterns (issue 15, item 6): matched in linear time, or refused ----------------------------------------

ATTACK = "a" * 34 + "!"  # with ^(a+)+$, Python's re backtracks for hours

_SERIALIZE_IN_A_CHILD = """
import json, sys, time
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from fieldcrypt import Keyring
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

store, kek, attack = sys.argv[1:]
schema = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "string", "confluent:tags": ["PII"]}}}
registry = SchemaRegistryClient.new_client({"url": "mock://hostile"})
ctx = SerializationContext("t", MessageField.VALUE)
start = time.monotonic()
with Keyring(store, kek) as keyring:
    # validation off: what is left to match the keys is fieldcrypt's engine (jsonschema's own matching: docs/policy.md)
    ser = JSONSerializer(json.dumps(schema), registry, conf={"validate": False}, keyring=keyring)
    data = ser({attack: "open-value", "a" * 34: "SECRET-value"}, ctx)
    de = JSONDeserializer(None, schema_registry_client=registry, conf={"validate": False}, keyring=keyring)
    back = de(data, ctx)
print(json.dumps({"seconds": time.monotonic() - start, "clear": b"open-value" in data,
                  "secret": b"SECRET-value" in data, "back": back == {attack: "open-value", "a" * 34: "SECRET-value"}}))
"""


def test_a_hostile_pattern_cannot_stall_the_serializer_or_the_deserializer(store_url: str, kek_uri: str) -> None:
    """The serializer's plan and its per-key matching (``engine._other_keys``) on the attack: a key of 34 ``a`` and a
    ``!`` is searched with the tagged ``^(a+)+$`` on every write and read. In a child process, so a regression fails
    on its timeout instead of stalling the suite."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SERIALIZE_IN_A_CHILD, store_url, kek_uri, ATTACK],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {**result, "clear": True, "secret": False, "back": True}
    assert result["seconds"] < 30


@pytest.mark.parametrize(
    ("patterns", "extra", "position"),
    [
        ({"^(?!id$)": tagged()}, None, "lookahead or lookbehind at position 1"),
        ({"^(\\w)\\1": tagged()}, None, "backreference at position 5"),
        ({"^n_": {"type": "integer"}, "\\bx": {"type": "integer"}}, tagged(), "word boundary"),
    ],
)
def test_a_pattern_the_engine_would_match_but_re2_cannot_run_is_refused(
    compile_: Any, patterns: dict[str, Any], extra: Any, position: str
) -> None:
    schema: dict[str, Any] = {"type": "object", "patternProperties": patterns}
    if extra is not None:
        schema["additionalProperties"] = extra
    with pytest.raises(PolicyError) as raised:
        compile_(schema)
    assert raised.value.field_path == "$[*]" and position in raised.value.reason
    assert "bounded time" in raised.value.reason


def test_an_untagged_pattern_fieldcrypt_never_matches_is_not_refused(compile_: Any) -> None:
    plan = compile_({**obj(email=tagged()), "patternProperties": {"^(?!x)(a)\\1": {"type": "string"}}})
    assert leaves(plan) == {"$.email": "string"}


def test_a_key_with_a_lone_surrogate_is_refused_where_patterns_decide(registry: Any, keyring: Keyring) -> None:
    schema = {"type": "object", "patternProperties": {"^x": tagged()}}
    ser = JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    assert ser({"xa": "secret", "b": "open"}, value_ctx())
    with pytest.raises(EncryptionError, match="lone surrogate"):
        ser({"x\ud800": "secret"}, value_ctx())
    declared = {"type": "object", "properties": {"x\ud800": {"type": "string"}}, "patternProperties": {"^x": tagged()}}
    with pytest.raises(PolicyError, match="lone surrogate"):
        compile_json(declared, RULES, lambda ref: None, lambda s: lambda v: True)
