"""The uses of confluent-kafka's private JSON Schema serde API (the JSON quarantine module, docs/compatibility.md).

Parsing a registered schema with confluent's reference resolution (``_get_parsed_schema``), confluent's validator
for it (``_get_validator``), and the JSON field transformer confluent's rule machinery runs data-contract rules with
(``common.json_schema.transform``, re-bound to validate on RE2: ``validation.bounded_transform``), handed to
:mod:`fieldcrypt.core.confluent` as a :data:`fieldcrypt.core.confluent.FieldRules`. Checked by
``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common import json_schema as _json
from referencing import Resource

from fieldcrypt.core.confluent import Transformer, bounded_tags
from fieldcrypt.json_schema.validation import bounded_transform

__all__ = ["field_rules", "parse", "validator"]


def parse(serde: Any, schema: Schema) -> tuple[Any, Any]:
    """The schema parsed (a dict or bool) and its ``referencing`` registry, references resolved through the serde's
    registry client, as confluent's serdes parse it."""
    return serde._get_parsed_schema(schema)  # type: ignore[no-any-return]


def validator(serde: Any, schema: Schema, parsed: Any, registry: Any) -> Any:
    """confluent's validator for a parsed schema (the draft's jsonschema class, the metaschema checked)."""
    return serde._get_validator(schema, parsed, registry)


def field_rules(serde: Any, schema: Schema, parsed: Any = None) -> tuple[Transformer, Any]:
    """confluent's JSON field transformer for ``schema`` (parsed again here, as confluent does; ``parsed`` unused),
    its branch choices validated on RE2, and no inline tags (JSON has none for rules)."""
    transform = bounded_transform()
    root, ref_registry = serde._get_parsed_schema(schema)
    resolver = ref_registry.resolver_with_root(Resource.from_contents(root, default_specification=_json.DEFAULT_SPEC))

    def transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return transform(bounded_tags(rule_ctx), root, ref_registry, resolver, "$", msg, field_transform)

    return transformer, None
