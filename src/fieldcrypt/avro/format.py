"""Avro as a :class:`fieldcrypt.core.format.SchemaFormat` (registered in ``fieldcrypt.formats``): its parser, policy
compiler, decoder, record walker and schema-lint shapes, built from this folder's modules."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as _PlainDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as _PlainSerializer
from fastavro import schemaless_reader

from fieldcrypt.avro.confluent import ParsedSchemas
from fieldcrypt.avro.depth import check_depth
from fieldcrypt.avro.policy import compile_avro, named_types
from fieldcrypt.avro.serde import AvroDeserializer, AvroSerializer
from fieldcrypt.core.format import Raw, Undecodable, ValueShape, Visit, Walker, text
from fieldcrypt.core.plan import FieldPlan, TagCollector, TagRules
from fieldcrypt.errors import MalformedRecordError

__all__ = ["FORMAT", "AvroFormat", "walk_avro"]


def _kind(t: Any) -> Any:
    return t.get("type") if isinstance(t, dict) else t


#: the Avro types a decoded Python value can come from
_KINDS: dict[type, tuple[str, ...]] = {
    str: ("string", "enum"),
    bytes: ("bytes", "fixed"),
    list: ("array",),
    dict: ("record", "error", "map"),
}


def _branch(branches: list[Any], v: Any, named: Mapping[str, Any]) -> tuple[Any, Any]:
    """The union branch a decoded value came from (schema, value); (None, v) when none can hold it."""
    resolved = [named.get(b, b) if isinstance(b, str) else b for b in branches]
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
        for r in resolved:
            if (r.get("name") if isinstance(r, dict) else r) == v[0]:
                return r, v[1]
        return None, v[1]
    want = _KINDS.get(type(v), ())
    candidates = [r for r in resolved if _kind(r) in want]
    if isinstance(v, dict) and len(candidates) > 1:
        for r in candidates:
            if _kind(r) in ("record", "error") and {f["name"] for f in r["fields"]} == set(v):
                return r, v
    return (candidates[0] if candidates else None), v


def walk_avro(schema: Any, record: Any, visit: Visit, raw: Raw | None = None) -> None:
    """Every text of an Avro record (strings, UTF-8 bytes, map keys) with its field path; ``raw`` also sees every
    string and bytes value as it is (binary ones too)."""
    named = named_types(schema)

    def walk(t: Any, v: Any, path: str, at: tuple[Any, ...]) -> None:
        if v is None:
            return
        if isinstance(t, str) and t in named:
            t = named[t]
        if isinstance(t, list):
            branch, inner = _branch(t, v, named)
            if branch is not None:
                walk(branch, inner, path, at)
            return
        kind = _kind(t)
        if isinstance(kind, (dict, list)):
            walk(kind, v, path, at)
        elif kind in ("record", "error") and isinstance(v, dict):
            for f in t["fields"]:
                if f["name"] in v:
                    walk(f["type"], v[f["name"]], f"{path}.{f['name']}", (*at, f["name"]))
        elif kind == "array" and isinstance(v, list):
            for i, x in enumerate(v):
                walk(t["items"], x, f"{path}[]", (*at, i))
        elif kind == "map" and isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str):
                    visit(k, f"{path}(keys)", None)
                walk(t["values"], x, f"{path}[*]", (*at, k))
        elif kind in ("string", "bytes"):
            text(v, path, at, visit, raw)
        # enum symbols, numbers, booleans, fixed and logical types (dates, UUIDs, decimals) are not scanned

    walk(schema, record, "$", ())


class AvroFormat:
    """Avro (``schemaType`` AVRO, or None as confluent's registry reports it)."""

    name = "Avro"
    schema_type = "AVRO"
    key = "avro"
    suffixes: tuple[str, ...] = (".avsc", ".avro")
    serializer: type = AvroSerializer
    deserializer: type = AvroDeserializer

    def parser(self, registry: SchemaRegistryClient | None, *, writing: bool) -> Callable[[Schema], Any]:
        plain = _PlainSerializer(registry, None) if writing else _PlainDeserializer(registry)
        return ParsedSchemas(plain)

    def compile(self, parsed: Any, rules: TagRules, collector: TagCollector | None = None) -> FieldPlan:
        return compile_avro(parsed, rules, collector)

    def refusals(self, parsed: Any) -> Sequence[tuple[str, str, str]]:
        return ()

    def deserializer_for(self, registry: SchemaRegistryClient, conf: Mapping[str, Any], keyring: Any) -> Any:
        return AvroDeserializer(registry, conf=dict(conf), keyring=keyring)

    def decode(self, parsed: Any, payload: bytes, *, named: bool, schema_id: int | str, subject: str | None) -> Any:
        if parsed == "bytes" or (isinstance(parsed, dict) and parsed.get("type") == "bytes"):
            return payload  # confluent writes a bytes schema's value raw
        try:
            check_depth(parsed, payload)  # a deep record of a recursive schema would crash fastavro's reader
            return schemaless_reader(
                io.BytesIO(payload), parsed, None, return_named_type=named, return_named_type_override=named
            )
        except MalformedRecordError as exc:
            raise Undecodable(f"schema id {schema_id}: {exc.reason}") from None
        except Exception as exc:
            raise Undecodable(f"the record does not decode with schema id {schema_id} ({type(exc).__name__})") from None

    def walker(self, parsed: Any) -> Walker:
        return lambda record, visit, raw: walk_avro(parsed, record, visit, raw)

    def shape(self, calls: list[tuple[Any, ...]]) -> ValueShape:
        types = [s for call in calls for s in call]
        t = types[-1] if types else None
        if isinstance(t, str):
            return ValueShape(t, False, t in ("string", "bytes"))
        if not isinstance(t, dict):
            return ValueShape("-", False, False)
        kind, logical = str(t.get("type")), t.get("logicalType")
        if kind in ("record", "error", "enum", "fixed"):
            shown = f"{kind} {str(t.get('name', '')).rsplit('.', 1)[-1]}"
        else:
            shown = f"{kind} ({logical})" if isinstance(logical, str) else kind
        return ValueShape(
            shown, kind in ("record", "error", "array", "map"), kind in ("string", "bytes") and not logical
        )

    def names(self, path: str, parsed: Any) -> tuple[str, str] | None:
        parts = path.rsplit(".", 2)
        return (parts[-1], parts[-2] if len(parts) >= 2 else "") if path else None

    def explain(self, exc: Exception, schema: Schema) -> BaseException:
        """fastavro's own error for a schema confluent's repository parsing failed on with a bare TypeError or
        KeyError (an unknown named type, a missing ``type``), when plain ``parse_schema`` names the problem."""
        if not isinstance(exc, (TypeError, KeyError)) or schema.references:
            return exc
        import fastavro

        try:
            fastavro.parse_schema(json.loads(schema.schema_str or ""))
        except Exception as plain:
            return plain
        return exc


FORMAT = AvroFormat()
