"""Records of recursive Avro schemas nested deeper than fastavro's C reader survives: refused before decoding
(fastavro overflows the C stack and kills the process at a few thousand levels), and every record under the limit
decodes as before."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from conftest import value_ctx

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer
from fieldcrypt.avro.depth import MAX_DEPTH, check_depth, is_recursive
from fieldcrypt.errors import MalformedRecordError

TREE = {
    "type": "record",
    "name": "Tree",
    "namespace": "t",
    "fields": [
        {"name": "label", "type": "string", "confluent:tags": ["PII"]},
        {"name": "weight", "type": "double"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 3}},
        {"name": "blob", "type": "bytes"},
        {"name": "children", "type": {"type": "array", "items": "Tree"}},
        {"name": "named", "type": {"type": "map", "values": "Tree"}},
        {"name": "next", "type": ["null", "Tree"], "default": None},
    ],
}


def leaf(label: str) -> dict[str, Any]:
    return {
        "label": label,
        "weight": 1.5,
        "kind": "B",
        "tag": b"abc",
        "blob": b"\x00\xff",
        "children": [],
        "named": {},
        "next": None,
    }


def chain(depth: int) -> dict[str, Any]:
    """A record nested ``depth`` records deep through ``next``."""
    node = leaf("end")
    for i in range(depth - 1):
        node = {**leaf(f"n{i}"), "next": node}
    return node


def nesting(node: dict[str, Any]) -> int:
    """Levels as the guard counts them: records, arrays, maps and unions inside each other."""
    inner = [2 + nesting(c) for c in node["children"]] + [2 + nesting(c) for c in node["named"].values()]
    if node["next"] is not None:
        inner.append(1 + nesting(node["next"]))
    return 1 + max(inner, default=0)


def random_tree(rng: random.Random, depth: int) -> dict[str, Any]:
    """A chain through ``next`` about ``depth`` records long, with small side trees in arrays and maps."""
    node = leaf("x" * rng.randrange(0, 5))
    if depth > 1:
        if rng.random() < 0.15:
            node["children"] = [random_tree(rng, min(depth - 1, 3)) for _ in range(rng.randrange(1, 3))]
        if rng.random() < 0.1:
            node["named"] = {"k": random_tree(rng, min(depth - 1, 2))}
        if rng.random() < 0.997:
            node["next"] = random_tree(rng, depth - 1)
    return node


def encode(record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(json.dumps(TREE))), record)
    return buf.getvalue()


def test_recursion_is_found_through_unions_containers_and_other_types() -> None:
    assert is_recursive(fastavro.parse_schema(json.loads(json.dumps(TREE))))
    flat = {"type": "record", "name": "F", "fields": [{"name": "a", "type": {"type": "array", "items": "string"}}]}
    assert not is_recursive(fastavro.parse_schema(flat))
    mutual = {
        "type": "record",
        "name": "A",
        "fields": [
            {
                "name": "b",
                "type": ["null", {"type": "record", "name": "B", "fields": [{"name": "a", "type": ["null", "A"]}]}],
            }
        ],
    }
    assert is_recursive(fastavro.parse_schema(mutual))
    reused = {  # a named type used twice is not recursion
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "x", "type": {"type": "record", "name": "P", "fields": [{"name": "s", "type": "string"}]}},
            {"name": "y", "type": "P"},
        ],
    }
    assert not is_recursive(fastavro.parse_schema(reused))


def test_the_guard_counts_exactly_and_lets_every_record_under_the_limit_through() -> None:
    parsed = fastavro.parse_schema(json.loads(json.dumps(TREE)))
    rng = random.Random(7)
    seen_deep = 0
    for _ in range(120):
        tree = random_tree(rng, rng.randrange(200, 300))
        data = encode(tree)
        levels = nesting(tree)
        if levels > MAX_DEPTH and len(data) > MAX_DEPTH:
            seen_deep += 1
            with pytest.raises(MalformedRecordError):
                check_depth(parsed, data)
        else:
            check_depth(parsed, data)  # no refusal under the limit
            assert fastavro.schemaless_reader(io.BytesIO(data), parsed) is not None
    assert seen_deep > 10 and seen_deep < 110  # the generator reaches both sides of the limit
    check_depth(parsed, encode(chain(MAX_DEPTH // 2)))  # next: 2 levels a record (the record, the union)
    with pytest.raises(MalformedRecordError, match=f"deeper than {MAX_DEPTH} levels"):
        check_depth(parsed, encode(chain(MAX_DEPTH // 2 + 1)))


def test_a_deep_record_is_a_malformed_record_not_a_dead_consumer(registry: Any, keyring: Keyring) -> None:
    # bytes any producer can write; fastavro's reader alone segfaults on them (the C stack overflows)
    node = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "v", "type": "string", "confluent:tags": ["PII"]},
            {"name": "next", "type": ["null", "Node"]},
        ],
    }
    schema_id = registry.register_schema("deep-value", Schema(json.dumps(node), "AVRO"))

    def framed(depth: int) -> bytes:  # v = "" (one byte), then the union index: 1 = another Node, 0 = null
        return b"\x00" + schema_id.to_bytes(4, "big") + b"\x00\x02" * (depth - 1) + b"\x00\x00"

    de = AvroDeserializer(registry, conf={"fieldcrypt.on.plaintext": "accept"}, keyring=keyring)
    with pytest.raises(MalformedRecordError) as err:
        de(framed(5000), value_ctx("deep"))
    assert err.value.subject == "deep-value"
    shallow = de(framed(40), value_ctx("deep"))
    assert shallow["v"] == "" and shallow["next"]["next"] is not None


def test_bytes_the_walk_cannot_read_are_left_to_fastavro() -> None:
    parsed = fastavro.parse_schema(json.loads(json.dumps(TREE)))
    check_depth(parsed, b"\xff" * (MAX_DEPTH * 4))  # an endless varint: no verdict here
    check_depth(parsed, encode(chain(240))[: MAX_DEPTH + 10])  # truncated
