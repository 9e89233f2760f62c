"""A tiny JSON schema whose anyOf branches refer twice to the next definition expands to 2**N subschemas (2.7 kB for
N = 30): schema lint, a serializer's construction and a consumer's first record went exponential (issue 15, item 6:
hostile schemas cannot hang the tools). The policy compiler now refuses a schema beyond a bounded number of visits,
as a PolicyError and a lint finding, within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def bomb(n: int) -> dict[str, object]:
    defs: dict[str, object] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/definitions/d{i + 1}"}, {"$ref": f"#/definitions/d{i + 1}"}]} for i in range(n)
    }
    defs[f"d{n}"] = {"type": "integer"}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "T",
        "type": "object",
        "definitions": defs,
        "properties": {
            "email": {"type": "string", "confluent:tags": ["PII"]},
            "w": {"oneOf": [{"$ref": "#/definitions/d0"}, {"type": "string"}]},
        },
    }


def test_lint_refuses_an_expansion_bomb_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.schema.json"
    path.write_text(json.dumps(bomb(30)))
    done = subprocess.run(
        [sys.executable, "-m", "fieldcrypt.cli", "schema", "lint", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr[-2000:]
    assert "expansion bomb" in done.stdout


CHILD = """
import json, sys, uuid
sys.path.insert(0, {tests!r})
from test_expansion_bomb import bomb
import fieldcrypt
from confluent_kafka.schema_registry import SchemaRegistryClient
from fieldcrypt.json_schema import JSONSerializer
kek = fieldcrypt.create_local_kek({tmp!r} + "/kek.json")
kr = fieldcrypt.Keyring(fieldcrypt.create_key_store("sqlite:///" + {tmp!r} + "/k.db"), kek)
reg = SchemaRegistryClient.new_client({{"url": "mock://" + uuid.uuid4().hex}})
try:
    JSONSerializer(json.dumps(bomb(30)), reg, keyring=kr)
except fieldcrypt.PolicyError as exc:
    print("refused", exc.reason[:60])
"""


def test_the_serializer_refuses_an_expansion_bomb_quickly(tmp_path: Path) -> None:
    code = CHILD.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the serializer's construction did not finish within 60 s")
    assert done.stdout.startswith("refused"), done.stderr[-2000:]


def test_an_ordinary_nested_schema_still_compiles() -> None:
    from fieldcrypt.core.plan import TagRules
    from fieldcrypt.json_schema.policy import compile_json

    schema = bomb(8)  # 2**8 expansions: well within the bound

    def resolve(ref: str) -> object:
        return schema["definitions"][ref.rsplit("/", 1)[1]]  # type: ignore[index]

    plan = compile_json(schema, TagRules(), resolve, lambda sub: lambda value: True)
    assert [leaf.path for leaf in plan.leaves] == ["$.email"]
