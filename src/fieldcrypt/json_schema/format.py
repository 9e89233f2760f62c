"""JSON Schema as a :class:`fieldcrypt.core.format.SchemaFormat` (registered in ``fieldcrypt.formats``): its parser,
policy compiler, decoder, record walker and schema-lint shapes, built from this folder's modules."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as _PlainDeserializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer as _PlainSerializer

from fieldcrypt.core.format import Undecodable, ValueShape, Walker, declared_properties, walk_document
from fieldcrypt.core.plan import FieldPlan, TagCollector, TagRules
from fieldcrypt.errors import MalformedRecordError
from fieldcrypt.json_schema.policy import compile_json
from fieldcrypt.json_schema.serde import JSONDeserializer, JSONSerializer, _Parsed, _validate

__all__ = ["FORMAT", "JSONSchemaFormat"]

_SUFFIX = re.compile(r"(?:\[\]|\[\*\]|<[^<>]*>)+$")
_ORDER = ("string", "integer", "number", "boolean", "object", "array", "null")
_CONTAINER_KEYS = ("properties", "patternProperties", "additionalProperties", "items", "prefixItems")


def _types(members: tuple[Any, ...]) -> frozenset[str] | None:
    found: frozenset[str] | None = None
    for m in members:
        t = m.get("type") if isinstance(m, dict) else None
        if isinstance(t, str):
            ts = frozenset({t})
        elif isinstance(t, list):
            ts = frozenset(x for x in t if isinstance(x, str))
        else:
            continue
        if found is None:
            found = ts
        else:
            both = found & ts
            if ("integer" in found and "number" in ts) or ("number" in found and "integer" in ts):
                both |= {"integer"}
            found = both
    return found


class JSONSchemaFormat:
    """JSON Schema (``schemaType`` JSON)."""

    name = "JSON Schema"
    schema_type = "JSON"
    key = "json"
    suffixes: tuple[str, ...] = ()
    serializer: type = JSONSerializer
    deserializer: type = JSONDeserializer

    def parser(self, registry: SchemaRegistryClient | None, *, writing: bool) -> Callable[[Schema], Any]:
        plain: Any = _PlainSerializer(None, registry) if writing else None
        if not writing:
            plain = _PlainDeserializer(None, schema_registry_client=registry)
        return lambda schema: _Parsed(plain, schema)

    def compile(self, parsed: Any, rules: TagRules, collector: TagCollector | None = None) -> FieldPlan:
        return compile_json(parsed.schema, rules, parsed.resolve, parsed.matcher, collector)

    def refusals(self, parsed: Any) -> Sequence[tuple[str, str, str]]:
        return list(parsed.refusals)

    def deserializer_for(self, registry: SchemaRegistryClient, conf: Mapping[str, Any], keyring: Any) -> Any:
        return JSONDeserializer(None, schema_registry_client=registry, conf=dict(conf), keyring=keyring)

    def decode(self, parsed: Any, payload: bytes, *, named: bool, schema_id: int | str, subject: str | None) -> Any:
        try:
            document = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Undecodable(f"the record is not JSON ({type(exc).__name__})") from None
        try:
            _validate(parsed, document, subject, MalformedRecordError)
        except (MalformedRecordError, RecursionError) as exc:
            raise Undecodable(str(exc) or type(exc).__name__) from None
        return document

    def walker(self, parsed: Any) -> Walker:
        declared = declared_properties(parsed.schema)
        return lambda record, visit, raw: walk_document(record, visit, declared, raw=raw)

    def shape(self, calls: list[tuple[Any, ...]]) -> ValueShape:
        kinds: set[str] = set()
        for members in calls:
            kinds |= _types(members) or set()
        objects = [m for call in calls for m in call if isinstance(m, dict)]
        fmt = next((m["format"] for m in objects if isinstance(m.get("format"), str)), None)
        encoding = next((m["contentEncoding"] for m in objects if isinstance(m.get("contentEncoding"), str)), None)
        if kinds:
            container = bool(kinds & {"object", "array"}) and kinds <= {"object", "array", "null"}
        else:
            container = any(k in m for m in objects for k in _CONTAINER_KEYS)
        shown = "|".join(k for k in _ORDER if k in kinds) or ("object" if container else "any")
        note = fmt or encoding
        return ValueShape(
            f"{shown} ({note})" if note else shown,
            container,
            not container and (not kinds or "string" in kinds),
            fmt,
        )

    def names(self, path: str, parsed: Any) -> tuple[str, str] | None:
        if path in ("$", ""):
            return None
        head, _, name = path.rpartition(".")
        parent = _SUFFIX.sub("", head).rpartition(".")[2]
        if parent in ("$", ""):
            root = parsed.schema.get("title", "") if isinstance(parsed.schema, dict) else ""
            return name, str(root)
        return name, parent

    def explain(self, exc: Exception, schema: Schema) -> BaseException:
        return exc


FORMAT = JSONSchemaFormat()
