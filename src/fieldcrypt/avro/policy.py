"""Avro schema -> field plan, by one walk over the whole schema as written.

Every schema node is visited: each named type, each record field, array ``items``, map ``values`` and every
union branch, at any depth. Tags come from ``"confluent:tags"`` on fields and on type schemas, and from the
registered schema's ``metadata.tags`` (see ``TagRules``); every tag is checked by a ``TagCollector``. A field's
tags apply to its type as confluent's CSFLE applies them: through array items, map values and union branches,
down to the ``string``/``bytes`` values, but not into nested records (whose fields carry their own tags).

Enforced (encrypted):
- a tagged ``string`` or ``bytes`` field, nullable or not;
- the ``string``/``bytes`` items of a tagged array field, the values of a tagged map field, or an items/values
  schema tagged itself (``{"type": "string", "confluent:tags": ["PII"]}``), at any depth;
- tagged fields inside records reached through unions of several types (several record types in one topic,
  records with null): the branch is chosen exactly as fastavro's writer chooses it (tuple notation, ``-type``,
  else validation) and written in tuple notation so the writer cannot choose another.

Refused (``PolicyError`` naming the location), each because a ciphertext cannot be written there or a reader
could not tell what was encrypted:
- an encryption tag on a record type, or on a field whose type is a record (tag the record's fields);
- on an ``enum``, a ``fixed``, a number or boolean (a ciphertext is neither), or on a string/bytes with a
  ``logicalType`` (uuid, decimal: readers would fail to convert the ciphertext);
- a union in which a tagged branch returns, on read, the same Python type as another branch (``["string",
  "MyEnum"]`` with a tagged string; a map and a single record with tags): the decoded value cannot tell them apart;
- the data-subject tag anywhere but one string/int/long field reached from the root through record fields only.
"""

from __future__ import annotations

from typing import Any

from fieldcrypt.core.plan import (
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
    TagCollector,
    TagRules,
    UnionBranch,
    UnionNode,
)
from fieldcrypt.errors import PolicyError

__all__ = ["compile_avro", "named_types", "reader_nulls"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NAMED = ("record", "error", "enum", "fixed")
_SUBJECT_TYPES = {"string": "string", "int": "int", "long": "int"}
#: what fastavro's reader returns for a branch, as the engine names Python types (``core.engine._FAMILY``)
_FAMILIES = {
    "null": "None",
    "boolean": "bool",
    "int": "int",
    "long": "int",
    "float": "float",
    "double": "float",
    "string": "str",
    "bytes": "bytes",
    "enum": "str",
    "fixed": "bytes",
    "array": "list",
    "map": "dict",
    "record": "dict",
    "error": "dict",
}
_LOGICAL_FAMILIES = {
    "decimal": "Decimal",
    "uuid": "UUID",
    "date": "date",
    "time-millis": "time",
    "time-micros": "time",
    "timestamp-millis": "datetime",
    "timestamp-micros": "datetime",
    "local-timestamp-millis": "datetime",
    "local-timestamp-micros": "datetime",
}


def named_types(schema: Any) -> dict[str, Any]:
    """Every named type a parsed schema defines, by full name, wherever it is (a top-level union or array too)."""
    found: dict[str, Any] = {}
    stack = [schema]
    while stack:
        t = stack.pop()
        if isinstance(t, list):
            stack.extend(t)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in _NAMED and isinstance(t.get("name"), str):
                if t["name"] in found:
                    continue
                found[t["name"]] = t
            if kind in ("record", "error"):
                stack.extend(f.get("type") for f in t.get("fields", ()) if isinstance(f, dict))
            elif kind == "array":
                stack.append(t.get("items"))
            elif kind == "map":
                stack.append(t.get("values"))
            elif isinstance(kind, (dict, list)):
                stack.append(kind)
    return found


def compile_avro(schema: Any, rules: TagRules, collector: TagCollector | None = None) -> FieldPlan:
    """Compile a fastavro-parsed schema (``fastavro.parse_schema``) into a :class:`FieldPlan`. ``collector``: the
    :class:`TagCollector` to read tags with (default: ``rules.collector()``)."""
    compiler = _Compiler(named_types(schema), collector or rules.collector(), rules)
    root = compiler.node(schema, _root_path(schema), frozenset(), root=True)
    subject = compiler.data_subject(schema)
    compiler.tags.finish()
    return FieldPlan(
        root=root,
        named={k: v for k, v in compiler.records.items() if v is not None},
        leaves=tuple(compiler.leaves),
        data_subject=tuple(subject[1]) if subject else None,
        data_subject_path=subject[0] if subject else None,
        data_subject_kind=subject[2] if subject else "string",
        avro_named=compiler.named,
        named_read=compiler.named_read,
        decisions=tuple(compiler.tags.decisions),
        # a record root's value paths start at its full name; other roots (arrays, maps, unions, primitives) bind the
        # default key domain instead, as a JSON schema without $id or title does
        identity="" if isinstance(schema, dict) and schema.get("type") in ("record", "error") else None,
    )


def _root_path(schema: Any) -> str:
    return str(schema["name"]) if isinstance(schema, dict) and "name" in schema else ""


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
    def __init__(self, named: dict[str, Any], tags: TagCollector, rules: TagRules) -> None:
        self.named = named
        self.tags = tags
        self.rules = rules
        self.records: dict[str, RecordNode | None] = {}
        self._in_progress: set[str] = set()
        self._recursive: set[str] = set()
        self.leaves: list[Leaf] = []
        self.field_tags: dict[str, frozenset[str]] = {}  # full field name -> its tags (every field visited)
        self.type_subject: list[str] = []  # locations where a type (not a field) carries the data-subject tag
        self.named_read = False

    def _resolve(self, t: Any, where: str) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVES:
            if t not in self.named:
                raise PolicyError(f"the schema refers to an unknown type {t!r}", field_path=where or None)
            return self.named[t]
        return t

    def node(
        self, t: Any, path: str, inherited: frozenset[str], nullable: bool = False, *, root: bool = False
    ) -> Node | None:
        """The plan for a value of schema ``t`` at ``path``; ``inherited``: the tags of the enclosing field;
        ``nullable``: the value is a branch of a union holding ``"null"`` (so null may stand in for it); ``root``:
        the value is the whole record value (see :meth:`_union`)."""
        t = self._resolve(t, path)
        if isinstance(t, list):
            return self._union(t, path, inherited, root=root)
        own = self.tags.inline(t.get("confluent:tags", MISSING), path) if isinstance(t, dict) else frozenset()
        tags = self.tags.applies(path, inherited | own, (t,))
        if self.rules.data_subject in own & tags:
            self.type_subject.append(path)
        encrypt = tags & self.rules.encrypt
        kind = t.get("type") if isinstance(t, dict) else t
        if isinstance(kind, (dict, list)):  # {"type": {"type": ...}}: a schema wrapped once more
            return self.node(kind, path, tags, nullable, root=root)
        if kind in ("string", "bytes"):
            if not encrypt:
                return None
            if isinstance(t, dict) and "logicalType" in t:
                raise PolicyError(
                    f"the value is tagged for encryption but has type {_type_name(t)}; a reader would fail to "
                    "convert its ciphertext: drop the logicalType or the tag",
                    field_path=path,
                )
            mask = self.rules.mask_for(tags, path, kind)
            leaf = Leaf(
                path=path,
                kind=kind,
                domain=self.rules.domain_for(tags, path),
                tags=tags,
                nullable=nullable,
                mask=mask,
                deterministic=self.rules.deterministic_for(tags, path, mask),
            )
            self.leaves.append(leaf)
            return leaf
        if kind in ("record", "error"):
            if encrypt:
                raise PolicyError(
                    f"a record ({t['name']}) is tagged for encryption; tag its string or bytes fields instead",
                    field_path=path,
                )
            return self.record(t)
        if kind == "array":
            items = self.node(t["items"], f"{path}[]", tags)
            return ArrayNode(items) if items is not None else None
        if kind == "map":
            values = self.node(t["values"], f"{path}[*]", tags)
            return MapNode(values) if values is not None else None
        if kind in _PRIMITIVES or kind in ("enum", "fixed"):
            if encrypt:
                raise PolicyError(
                    f"the value is tagged for encryption but has type {_type_name(t)}; only string and bytes "
                    "values (in records, arrays, maps and unions) can be encrypted",
                    field_path=path,
                )
            return None
        raise PolicyError(f"the schema has a type fieldcrypt does not know: {_type_name(t)}", field_path=path or None)

    def _union(self, branches: list[Any], path: str, inherited: frozenset[str], *, root: bool = False) -> Node | None:
        """A union. Its branches may stand in with null when it holds ``"null"``, except at the ``root``: a record
        value of None is what confluent's deserializers return for a tombstone (a deletion, to compacting sinks), so
        an unreadable root value reads as the placeholder, never as None."""
        resolved_all = [(b, self._resolve(b, path)) for b in branches]
        for _, r in resolved_all:
            if isinstance(r, list) or (isinstance(r, dict) and isinstance(r.get("type"), list)):
                # Avro: "Unions may not immediately contain other unions" (a registry refuses the schema; fastavro
                # parses it, then writes or reads the inner branches wrongly)
                raise PolicyError("a union directly inside a union is not valid Avro", field_path=path or None)
        several = sum(1 for _, r in resolved_all if _kind(r) != "null") > 1
        has_null = any(_kind(r) == "null" for _, r in resolved_all)
        compiled = []
        for b, resolved in resolved_all:
            name = _branch_name(resolved)
            where = f"{path}<{name}>" if several else path
            node = None if name == "null" else self.node(b, where, inherited, has_null and not root)
            compiled.append((name, b, resolved, node))
        if all(n is None for *_, n in compiled):
            return None
        non_null = [c for c in compiled if c[0] != "null"]
        nullable = len(non_null) < len(compiled)
        if len(non_null) == 1:
            name, _, _, node = non_null[0]
            assert node is not None
            return NullableNode(node, name=name)
        named = [c for c in non_null if _kind(c[2]) in _NAMED]
        named_read = len(named) >= 2  # fastavro then returns (name, value) for those branches
        families: dict[str, list[tuple[str, Node | None]]] = {}
        for name, _, resolved, node in non_null:
            if named_read and _kind(resolved) in _NAMED:
                continue
            families.setdefault(_family(resolved), []).append((name, node))
        for family, members in families.items():
            if len(members) > 1 and any(n is not None for _, n in members):
                raise PolicyError(
                    f"a union holds tagged values in a branch that a reader cannot tell apart from another "
                    f"({', '.join(n for n, _ in members)} all read as {family})",
                    field_path=path or None,
                )
        self.named_read = self.named_read or named_read
        return UnionNode(
            branches=tuple(UnionBranch(name, b, _family(resolved), node) for name, b, resolved, node in compiled),
            nullable=nullable,
            named_read=named_read,
        )

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
            tags = self.tags.applies(full, self.tags.field(full, f.get("confluent:tags", MISSING)), ())
            self.field_tags[full] = tags
            if self.rules.data_subject in tags:
                if tags & self.rules.encrypt:
                    raise PolicyError("the data-subject id field cannot itself be encrypted", field_path=full)
                node = self.node(f["type"], full, tags - {self.rules.data_subject})
            else:
                node = self.node(f["type"], full, tags)
            if node is not None:
                steps.append(FieldStep(str(f["name"]), node, f.get("default", MISSING)))
        self._in_progress.discard(name)
        result = RecordNode(name, tuple(steps)) if steps else None
        if result is None and name in self._recursive:
            # Only reachable through itself and holds nothing tagged: a RefNode to it would do nothing.
            result = RecordNode(name, ())
        self.records[name] = result
        return result

    def data_subject(self, schema: Any) -> tuple[str, list[str], str] | None:
        """The one field tagged as the data-subject id, reached from the root through record fields only."""
        if self.type_subject:
            raise PolicyError(
                "the data-subject tag belongs on a record field, not on a type", field_path=self.type_subject[0]
            )
        found: list[tuple[str, list[str], str]] = []
        seen: set[str] = set()

        def walk(t: Any, names: list[str]) -> None:
            t = self._resolve(t, "")
            if not (isinstance(t, dict) and t.get("type") in ("record", "error")) or t["name"] in seen:
                return
            seen.add(t["name"])
            for f in t["fields"]:
                full = f"{t['name']}.{f['name']}"
                if self.rules.data_subject in self.field_tags.get(full, frozenset()):
                    found.append((full, [*names, str(f["name"])], self._subject_kind(f["type"], full)))
                else:
                    walk(f["type"], [*names, str(f["name"])])

        walk(schema, [])
        everywhere = [full for full, tags in self.field_tags.items() if self.rules.data_subject in tags]
        reached = {full for full, _, _ in found}
        for full in everywhere:
            if full not in reached:
                raise PolicyError(
                    "the data-subject id must be a plain field of the record (or of records nested in it), "
                    "not inside an array, map or union of records",
                    field_path=full,
                )
        if len(found) > 1:
            raise PolicyError("several fields are tagged as the data-subject id: " + ", ".join(p for p, _, _ in found))
        return found[0] if found else None

    def _subject_kind(self, t: Any, full: str) -> str:
        t = self._resolve(t, full)
        branches = t if isinstance(t, list) else [t]
        kinds: set[str] = set()
        for b in branches:
            b = self._resolve(b, full)
            kind = b.get("type") if isinstance(b, dict) and "logicalType" not in b else b
            if kind == "null":
                continue
            if not isinstance(kind, str) or kind not in _SUBJECT_TYPES:
                raise PolicyError(
                    f"the data-subject id field has type {_type_name(b)}; it must be string, int or long "
                    "(optionally nullable)",
                    field_path=full,
                )
            kinds.add(_SUBJECT_TYPES[kind])
        if not kinds:
            raise PolicyError("the data-subject id field must be string, int or long", field_path=full)
        return "|".join(sorted(kinds))


_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_DROPPED: Any = object()  # the reader has no field for the writer's value: it is skipped, whatever it holds


def reader_nulls(writer: Any, reader: Any) -> frozenset[str]:
    """The paths (as :func:`compile_avro` names them) of the writer's string and bytes union branches at which a
    record resolved to ``reader`` (Avro schema resolution, as fastavro's reader applies it) may hold null: the
    reader's schema has a union holding ``"null"`` at that value's position, or drops the field that holds it.
    Elsewhere a writer's null would fail resolution (or cannot be written), so a stand-in must be a value."""
    names = (named_types(writer), named_types(reader))
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()

    def resolved(t: Any, side: int) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVES:
            return names[side].get(t, t)
        while isinstance(t, dict) and isinstance(t.get("type"), (dict, list)):
            t = t["type"]
        return t

    def matches(w: Any, r: Any) -> bool:
        """fastavro's ``match_types`` for one writer type and one reader type (neither a union)."""
        wk, rk = _kind(w), _kind(r)
        if wk in _NAMED or rk in _NAMED:
            if wk != rk or not isinstance(w, dict) or not isinstance(r, dict):
                return False
            short = str(w["name"]).split(".")[-1]
            return short == str(r["name"]).split(".")[-1] or bool({w["name"], short} & set(r.get("aliases", ())))
        return wk == rk or (wk, rk) in _PROMOTIONS

    def walk(w: Any, r: Any, path: str, null_ok: bool) -> None:
        w = resolved(w, 0)
        r = r if r is _DROPPED or r is None else resolved(r, 1)
        if isinstance(w, list):
            branches = [resolved(b, 0) for b in w]
            several = sum(1 for b in branches if _kind(b) != "null") > 1
            reader_null = r is _DROPPED or (isinstance(r, list) and any(_kind(resolved(x, 1)) == "null" for x in r))
            for b in branches:
                name = _branch_name(b)
                if name != "null":
                    walk(b, _branch_for(b, r), f"{path}<{name}>" if several else path, reader_null)
            return
        kind = _kind(w)
        if kind in ("string", "bytes"):
            if null_ok:
                found.add(path)
        elif kind in ("record", "error"):
            key = (str(w["name"]), id(r))
            if key in seen:
                return
            seen.add(key)
            fields: dict[str, Any] | None = None  # the reader's fields by name and alias (None: no reader record)
            if isinstance(r, dict) and _kind(r) in ("record", "error") and matches(w, r):
                fields = {a: f for f in r["fields"] for a in f.get("aliases", ())}
                fields.update((f["name"], f) for f in r["fields"])
            for f in w["fields"]:
                if r is _DROPPED:
                    inner = _DROPPED
                elif fields is None:
                    inner = None  # the reader cannot read this record here
                else:
                    other = fields.get(f["name"])
                    inner = _DROPPED if other is None else other["type"]
                walk(f["type"], inner, f"{w['name']}.{f['name']}", False)
        elif kind in ("array", "map"):
            part, suffix = ("items", "[]") if kind == "array" else ("values", "[*]")
            inner = r if r is _DROPPED else (r[part] if isinstance(r, dict) and _kind(r) == kind else None)
            walk(w[part], inner, f"{path}{suffix}", False)

    def _branch_for(b: Any, r: Any) -> Any:
        if r is _DROPPED or r is None:
            return r
        candidates = r if isinstance(r, list) else [r]
        for x in candidates:
            x = resolved(x, 1)
            if matches(b, x):
                return x
        return None  # the reader cannot read this branch: no value of it resolves

    walk(writer, reader, _root_path(writer), False)
    return frozenset(found)


def _kind(t: Any) -> str:
    return str(t.get("type")) if isinstance(t, dict) else str(t)


def _branch_name(t: Any) -> str:
    """fastavro's tuple-notation name of a union branch: the full name of a named type, else the type name."""
    kind = _kind(t)
    if kind in _NAMED and isinstance(t, dict):
        return str(t["name"])
    return kind


def _family(t: Any) -> str:
    if isinstance(t, dict) and "logicalType" in t and t["logicalType"] in _LOGICAL_FAMILIES:
        return _LOGICAL_FAMILIES[t["logicalType"]]
    return _FAMILIES.get(_kind(t), _kind(t))
