"""JSON Schema -> field plan (the same plan nodes as Avro, run by the same engine).

Tags come from ``"confluent:tags"`` on property schemas at any depth (nested objects, arrays of objects, maps
via ``additionalProperties``, ``$ref``/``$defs``, ``oneOf``/``anyOf`` with ``null``, ``"type": [..., "null"]``)
and from the registered schema's ``metadata.tags``, matched against confluent's JSON full names (``$.a.b``:
properties joined by dots from ``$``, array items under their array's name).

Only string properties can be encrypted for now (typed fields come later). A string keyword the ciphertext
cannot satisfy (``pattern``, ``maxLength``, ``enum``, ``const``, a large ``minLength``) is rejected too,
since the encrypted document must stay valid against the registered schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fieldcrypt._plan import (
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

__all__ = ["compile_json"]

Resolve = Callable[[str], Any]
ROOT = "$"
#: shortest text a value ciphertext can be: base64 of 22 bytes (a later value of the record, empty plaintext)
_MIN_CIPHERTEXT_CHARS = 30
_BLOCKING = ("pattern", "maxLength", "enum", "const", "contentEncoding", "contentMediaType")


def compile_json(schema: Any, rules: TagRules, resolve: Resolve) -> FieldPlan:
    """Compile a parsed JSON Schema (``resolve`` looks up ``$ref`` targets) into a :class:`FieldPlan`."""
    compiler = _Compiler(rules, resolve)
    root = compiler.node(schema, ROOT, (), names=[])
    if isinstance(root, RecordNode) and root.name != ROOT:
        root = RecordNode(ROOT, root.steps)
    subject = compiler.subject_fields[0] if compiler.subject_fields else None
    if len(compiler.subject_fields) > 1:
        raise PolicyError(
            "several properties are tagged as the data-subject id: " + ", ".join(p for p, _ in compiler.subject_fields)
        )
    return FieldPlan(
        root=root,
        named=compiler.named,
        leaves=tuple(compiler.leaves),
        data_subject=tuple(subject[1]) if subject else None,
        data_subject_path=subject[0] if subject else None,
    )


def _types(schema: Any) -> list[str]:
    t = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    return []


class _Compiler:
    def __init__(self, rules: TagRules, resolve: Resolve) -> None:
        self.rules = rules
        self.resolve = resolve
        self.named: dict[str, RecordNode] = {}
        self.leaves: list[Leaf] = []
        self.subject_fields: list[tuple[str, list[str]]] = []

    def _deref(self, schema: Any, stack: tuple[str, ...]) -> tuple[Any, tuple[str, ...], str | None]:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            ref = schema["$ref"]
            if ref in stack:
                return None, stack, ref
            stack = (*stack, ref)
            schema = self.resolve(ref)
            seen += 1
            if seen > 64:
                raise PolicyError(f"$ref chain too deep at {ref!r}")
        return schema, stack, None

    def _nullable_branch(self, schema: dict[str, Any]) -> tuple[list[Any], bool]:
        """For oneOf/anyOf: the non-null branches, and whether null is allowed."""
        branches = schema.get("oneOf") or schema.get("anyOf") or []
        non_null = [b for b in branches if not (isinstance(b, dict) and _types(b) == ["null"])]
        return non_null, len(non_null) < len(branches)

    def node(self, schema: Any, path: str, stack: tuple[str, ...], *, names: list[str] | None = None) -> Node | None:
        outer = stack
        schema, stack, recursive = self._deref(schema, stack)
        if recursive is not None:
            return RefNode(recursive) if recursive in self.named or recursive in stack else None
        if not isinstance(schema, dict):
            return None
        if "oneOf" in schema or "anyOf" in schema:
            branches, nullable = self._nullable_branch(schema)
            nodes = [n for n in (self.node(b, path, stack, names=names) for b in branches) if n is not None]
            if not nodes:
                return None
            if len(branches) > 1:
                raise PolicyError(
                    "a oneOf/anyOf of several non-null schemas contains tagged properties; this is not supported yet",
                    field_path=path,
                )
            return NullableNode(nodes[0]) if nullable else nodes[0]
        if "allOf" in schema and any(self.node(s, path, stack) is not None for s in schema["allOf"]):
            raise PolicyError("tagged properties inside allOf are not supported yet", field_path=path)
        types = _types(schema)
        nullable = "null" in types
        if "properties" in schema or "object" in types:
            node = self._object(schema, path, stack, names)
        elif "array" in types or "items" in schema:
            items = schema.get("items")
            child = self.node(items, path, stack) if isinstance(items, dict) else None
            node = ArrayNode(child) if child is not None else None
        else:
            node = None
        if node is None:
            return None
        if stack != outer and isinstance(node, RecordNode):
            self.named.setdefault(stack[-1], node)  # recursive references to this $ref find it here
        return NullableNode(node) if nullable else node

    def _object(
        self, schema: dict[str, Any], path: str, stack: tuple[str, ...], names: list[str] | None
    ) -> Node | None:
        steps = []
        props = schema.get("properties") or {}
        for name, prop in props.items():
            full = f"{path}.{name}"
            tags = self.rules.tags_for(full, prop.get("confluent:tags") if isinstance(prop, dict) else None)
            if self.rules.data_subject in tags:
                self._subject(prop, full, tags, names, stack)
            if tags & self.rules.encrypt:
                steps.append(FieldStep(name, self._leaf(prop, full, tags, stack)))
                continue
            child = self.node(prop, full, stack, names=None if names is None else [*names, name])
            if child is not None:
                steps.append(FieldStep(name, child))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            child = self.node(extra, path, stack)
            if child is not None:
                if props:
                    raise PolicyError(
                        "tagged additionalProperties next to declared properties are not supported yet", field_path=path
                    )
                return MapNode(child)
        return RecordNode(path, tuple(steps)) if steps else None

    def _subject(
        self, prop: Any, full: str, tags: frozenset[str], names: list[str] | None, stack: tuple[str, ...]
    ) -> None:
        if names is None:
            raise PolicyError(
                "the data-subject id must be a property of the root object or of nested objects, "
                "not inside an array or map",
                field_path=full,
            )
        if tags & self.rules.encrypt:
            raise PolicyError("the data-subject id property cannot itself be encrypted", field_path=full)
        resolved, _, _ = self._deref(prop, stack)
        kinds = {t for t in _types(resolved) if t != "null"}
        if not kinds or not kinds <= {"string", "integer"}:
            raise PolicyError("the data-subject id property must be a string or an integer", field_path=full)
        self.subject_fields.append((full, [*names, full.rsplit(".", 1)[1]]))

    def _leaf(self, prop: Any, full: str, tags: frozenset[str], stack: tuple[str, ...]) -> Node:
        resolved, _, _ = self._deref(prop, stack)
        if not isinstance(resolved, dict):
            raise PolicyError("a tagged property needs a schema", field_path=full)
        nullable = False
        if "oneOf" in resolved or "anyOf" in resolved:
            branches, nullable = self._nullable_branch(resolved)
            if len(branches) != 1:
                raise PolicyError("a tagged property must be a string (or a string or null)", field_path=full)
            resolved, _, _ = self._deref(branches[0], stack)
        types = _types(resolved)
        nullable = nullable or "null" in types
        kinds = [t for t in types if t != "null"]
        if kinds != ["string"]:
            shown = "/".join(kinds) or "unspecified"
            raise PolicyError(
                f"the property is tagged for encryption but has type {shown}; only string properties "
                "(optionally nullable) can be encrypted for now",
                field_path=full,
            )
        blocking = [k for k in _BLOCKING if k in resolved]
        if resolved.get("minLength", 0) > _MIN_CIPHERTEXT_CHARS:
            blocking.append("minLength")
        if blocking:
            raise PolicyError(
                f"the property is tagged for encryption but its schema has {', '.join(blocking)}, which the "
                "ciphertext cannot satisfy; move that check to the producer",
                field_path=full,
            )
        leaf = Leaf(path=full, kind="string", domain=self.rules.domain_for(tags, full), tags=tags)
        self.leaves.append(leaf)
        return NullableNode(leaf) if nullable else leaf
