"""The uses of confluent-kafka's private Avro serde API (the Avro quarantine module, docs/compatibility.md).

Parsing a registered schema with confluent's reference resolution (``_get_parsed_schema``), and the Avro field
transformer confluent's rule machinery runs data-contract rules with (``common.avro.transform``), handed to
:mod:`fieldcrypt.core.confluent` as a :data:`fieldcrypt.core.confluent.FieldRules`. Checked by
``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common import avro as _avro
from fastavro.schema import expand_schema

from fieldcrypt.core.confluent import Transformer, bounded_tags

__all__ = ["ParsedSchemas", "field_rules"]


class ParsedSchemas:
    """Parse a registered schema with confluent's reference resolution (through the serde's registry client and its
    cache), ignoring metadata (the plan reads ``metadata.tags`` from the schema as registered)."""

    def __init__(self, serde: Any) -> None:
        self._serde = serde

    def __call__(self, schema: Schema) -> Any:
        bare = Schema(schema.schema_str, schema.schema_type or "AVRO", schema.references or [])
        return self._serde._get_parsed_schema(bare)


def field_rules(serde: Any, schema: Schema, parsed: Any) -> tuple[Transformer, Any]:
    """confluent's Avro field transformer for ``schema`` (``parsed``: as the serde parsed it; None: parsed here, as
    confluent's serializer parses the schema it writes with) and the schema's inline tags."""
    if parsed is None:
        parsed = serde._get_parsed_schema(schema)
    expanded = expand_schema(parsed)

    def transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return _avro.transform(bounded_tags(rule_ctx), expanded, msg, field_transform)

    return transformer, _avro.get_inline_tags(parsed)
