"""Avro schema -> field plan.

Tags come from ``"confluent:tags"`` on record fields at any depth and from the registered schema's
``metadata.tags`` (see ``TagRules``). Only ``string`` and ``bytes`` fields (and unions of one of them with
``null``) can be encrypted for now; a tag on any other type is a ``PolicyError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldcrypt._plan import (
    MISSING,
    ArrayNode,
    FieldPlan,
    FieldStep,
    Leaf,
    MapNode,
    Node,
    NullableNode,
    RecordNode,
    RefNode,
    TagRules,
)
from fieldcrypt.errors import PolicyError

__all__ = ["compile_avro"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_SUBJECT_ID_TYPES = {"string", "int", "long"}


def compile_avro(schema: Any, rules: TagRules) -> FieldPlan:
    """Compile a fastavro-parsed schema (``fastavro.parse_schema``) into a :class:`FieldPlan`."""
    named: Mapping[str, Any] = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    compiler = _Compiler(named, rules)
    root = compiler.node(schema)
    subject_path = compiler.find_data_subject(schema)
    return FieldPlan(
        root=root,
        named={k: v for k, v in compiler.records.items() if v is not None},
        leaves=tuple(compiler.leaves),
        data_subject=tuple(subject_path[1]) if subject_path else None,
        data_subject_path=subject_path[0] if subject_path else None,
    )


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return "union"
    if isinstance(t, dict):
        base = str(t.get("type"))
        return f"{base} ({t['logicalType']})" if "logicalType" in t else base
    return type(t).__name__


class _Compiler:
    def __init__(self, named: Mapping[str, Any], rules: TagRules) -> None:
        self.named = named
        self.rules = rules
        self.records: dict[str, RecordNode | None] = {}
        self._in_progress: set[str] = set()
        self._recursive: set[str] = set()
        self.leaves: list[Leaf] = []

    def _resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVES:
            if t not in self.named:
                raise PolicyError(f"the schema refers to an unknown type {t!r}")
            return self.named[t]
        return t

    def node(self, t: Any) -> Node | None:
        t = self._resolve(t)
        if isinstance(t, list):
            branches = [(b, self.node(b)) for b in t if b != "null"]
            tagged = [n for _, n in branches if n is not None]
            if not tagged:
                return None
            if len(branches) > 1:
                names = ", ".join(_type_name(self._resolve(b)) for b, _ in branches)
                raise PolicyError(
                    f"a union of several types ({names}) contains tagged fields; this is not supported yet"
                )
            return NullableNode(tagged[0]) if "null" in t else tagged[0]
        if isinstance(t, dict):
            kind = t.get("type")
            if kind in ("record", "error"):
                return self.record(t)
            if kind == "array":
                items = self.node(t["items"])
                return ArrayNode(items) if items is not None else None
            if kind == "map":
                values = self.node(t["values"])
                return MapNode(values) if values is not None else None
        return None

    def record(self, r: dict[str, Any]) -> Node | None:
        name = str(r["name"])
        if name in self._in_progress:
            self._recursive.add(name)
            return RefNode(name)
        if name in self.records:
            return RefNode(name) if self.records[name] is not None else None
        self._in_progress.add(name)
        steps = []
        for f in r["fields"]:
            full = f"{name}.{f['name']}"
            tags = self.rules.tags_for(full, f.get("confluent:tags"))
            wanted = tags & self.rules.encrypt
            if wanted:
                node: Node | None = self._leaf(f["type"], full, tags)
            else:
                node = self.node(f["type"])
            if node is not None:
                steps.append(FieldStep(str(f["name"]), node, f.get("default", MISSING)))
        self._in_progress.discard(name)
        result = RecordNode(name, tuple(steps)) if steps else None
        if result is None and name in self._recursive:
            # Only reachable through itself and holds nothing tagged: a RefNode to it would do nothing.
            result = RecordNode(name, ())
        self.records[name] = result
        return result

    def _leaf(self, t: Any, path: str, tags: frozenset[str]) -> Node:
        domain = self.rules.domain_for(tags, path)
        resolved = self._resolve(t)
        nullable = False
        if isinstance(resolved, list):
            non_null = [b for b in resolved if b != "null"]
            nullable = len(non_null) < len(resolved)
            resolved = self._resolve(non_null[0]) if len(non_null) == 1 else resolved
        if isinstance(resolved, dict) and "logicalType" not in resolved and resolved.get("type") in ("string", "bytes"):
            resolved = resolved["type"]
        if resolved not in ("string", "bytes"):
            raise PolicyError(
                f"the field is tagged for encryption but has type {_type_name(resolved)}; "
                "only string and bytes fields (optionally nullable) can be encrypted for now",
                field_path=path,
            )
        leaf = Leaf(path=path, kind=resolved, domain=domain, tags=tags)
        self.leaves.append(leaf)
        return NullableNode(leaf) if nullable else leaf

    def find_data_subject(self, schema: Any) -> tuple[str, list[str]] | None:
        """The one field tagged as the data-subject id, reached through record fields only."""
        found: list[tuple[str, list[str]]] = []
        seen: set[str] = set()

        def walk(t: Any, names: list[str]) -> None:
            t = self._resolve(t)
            if not (isinstance(t, dict) and t.get("type") in ("record", "error")) or t["name"] in seen:
                return
            seen.add(t["name"])
            for f in t["fields"]:
                full = f"{t['name']}.{f['name']}"
                tags = self.rules.tags_for(full, f.get("confluent:tags"))
                if self.rules.data_subject in tags:
                    if tags & self.rules.encrypt:
                        raise PolicyError("the data-subject id field cannot itself be encrypted", field_path=full)
                    ft = self._resolve(f["type"])
                    if isinstance(ft, list):
                        ft = next((self._resolve(b) for b in ft if b != "null"), "null")
                    if isinstance(ft, dict) and "logicalType" not in ft:
                        ft = ft.get("type")
                    if ft not in _SUBJECT_ID_TYPES:
                        raise PolicyError(
                            f"the data-subject id field has type {_type_name(ft)}; it must be string, int or long",
                            field_path=full,
                        )
                    found.append((full, [*names, str(f["name"])]))
                else:
                    walk(f["type"], [*names, str(f["name"])])

        walk(schema, [])
        self._check_subject_not_repeated(schema)
        if len(found) > 1:
            raise PolicyError("several fields are tagged as the data-subject id: " + ", ".join(p for p, _ in found))
        return found[0] if found else None

    def _check_subject_not_repeated(self, schema: Any) -> None:
        """A data-subject tag inside an array, map or union would make the person ambiguous: reject it."""
        seen: set[tuple[str, bool]] = set()

        def walk(t: Any, repeated: bool) -> None:
            t = self._resolve(t)
            if isinstance(t, list):
                for b in t:
                    walk(b, True)
            elif isinstance(t, dict):
                kind = t.get("type")
                if kind == "array":
                    walk(t["items"], True)
                elif kind == "map":
                    walk(t["values"], True)
                elif kind in ("record", "error") and (t["name"], repeated) not in seen:
                    seen.add((t["name"], repeated))
                    for f in t["fields"]:
                        full = f"{t['name']}.{f['name']}"
                        if repeated and self.rules.data_subject in self.rules.tags_for(full, f.get("confluent:tags")):
                            raise PolicyError(
                                "the data-subject id must be a plain field of the record, "
                                "not inside an array, map or union of records",
                                field_path=full,
                            )
                        ft = f["type"]
                        walk(ft, repeated or (isinstance(ft, list) and not _is_nullable_scalar(ft)))

        walk(schema, False)


def _is_nullable_scalar(t: list[Any]) -> bool:
    return all(isinstance(b, str) and b in _PRIMITIVES for b in t)
