"""JSON Schema -> field plan (the same plan nodes as Avro, run by the same engine).

The compiler walks the whole schema as written. Every ``"confluent:tags"`` value and every registry
``metadata.tags`` pattern (matched against confluent's JSON full names: ``$``, then ``.name`` per property; array
items and ``allOf``/``oneOf``/``anyOf`` branches add no segment) is either enforced by the plan or refused with a
``PolicyError`` naming the field and the schema location. A tag is never ignored; only tags the configuration
declares plaintext (``fieldcrypt.plaintext.tags``) need no enforcement.

Enforced (a tag on a schema applies to the instance that schema validates):

- ``properties`` at any depth; ``$ref`` at any depth (also to a tagged string definition), recursive ``$ref``
  (``RefNode`` + ``FieldPlan.named``); ``$ref`` siblings are applied in every draft (never ignored).
- A tagged string: ``Leaf`` kind ``string``; with ``contentEncoding: base64``: kind ``base64`` (the decoded bytes
  are encrypted). Nullable through ``"type": [..., "null"]`` or ``oneOf``/``anyOf`` with one non-null branch.
- A tagged array of strings: every element is encrypted; a tagged map (``additionalProperties`` of strings,
  no declared or pattern properties): every value is encrypted.
- ``items``, array-form ``items`` + ``additionalItems`` (drafts 4 to 2019-09), ``prefixItems`` + ``items``
  (2020-12, and schemas without ``$schema``, which jsonschema reads as 2020-12).
- ``additionalProperties`` (with or without ``properties``), ``patternProperties`` (``RecordNode`` declared,
  patterns, extra; the engine refuses a key that two different tagged schemas claim).
- ``allOf``: every branch and the parent's own keywords apply to one value; their plans are merged.
- ``oneOf``/``anyOf`` of several non-null schemas: ``ChoiceNode``; the engine picks the branches the value
  validates against. Keywords beside ``oneOf`` (``properties``...) are merged into every branch.
- The data-subject id (``rules.data_subject``): one property, reached from the root through ``properties``
  only (``$ref``, ``allOf`` and nullable wrappers allowed), typed string and/or integer, not also encrypted.

Refused (``PolicyError``):

- A tag for encryption on a number, boolean, object (other than a map of strings) or untyped value: only
  text can be encrypted and stay valid against the schema.
- ``pattern``, ``maxLength``, ``enum``, ``const``, ``minLength`` > 30, ``not``, ``if``/``then``/``else`` on any
  schema constraining a tagged string (``allOf``, ``$ref``, ``oneOf``/``anyOf`` branches included): the
  ciphertext could not satisfy them. ``contentEncoding`` other than base64: the encoding cannot be kept.
  (``format`` and ``contentMediaType`` are annotations jsonschema does not assert: allowed.)
- An encrypting or data-subject tag anywhere inside ``not``, ``if``/``then``/``else``, ``dependentSchemas``,
  schema-valued ``dependencies``, ``contains``, ``propertyNames``, ``unevaluatedProperties``,
  ``unevaluatedItems``, ``contentSchema``, the target of ``$dynamicRef``/``$recursiveRef``, a keyword the
  draft ignores (``prefixItems`` before 2020-12, ``additionalItems`` in 2020-12 or beside a single ``items``) or
  any unknown keyword: which values they apply to depends on the data, or on nothing.
- Conflicting plans for one value (a string in one ``allOf`` branch, an object in another), two tagged
  ``oneOf``/``anyOf`` on one value, a recursive ``$ref`` to a non-object schema, an invalid pattern regex, a
  ``patternProperties`` regex the engine matches (a tagged one, or any beside a tagged ``additionalProperties``)
  that the bounded regex engine cannot run (``fieldcrypt.core.regex``: a backreference, a lookaround...).

``default``, ``const``, ``enum`` and ``examples`` hold data, not schemas: not walked. ``$defs``/``definitions``
apply only through ``$ref``: an unreferenced definition is scanned (malformed or undeclared tags still raise)
but its tags apply to nothing, since no value is validated against it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from fieldcrypt.core.plan import (
    MISSING,
    ArrayNode,
    ChoiceNode,
    FieldPlan,
    FieldStep,
    Leaf,
    Matcher,
    Node,
    NullableNode,
    RecordNode,
    RefNode,
    TagCollector,
    TagRules,
)
from fieldcrypt.core.regex import Unsupported, bounded
from fieldcrypt.errors import PolicyError

__all__ = ["compile_json", "merge"]

Resolve = Callable[[str], Any]
MatcherFor = Callable[[Any], Matcher]
Member = tuple[dict[str, Any], str, tuple[str, ...]]  # a schema object, its location, the $refs followed to it
#: shortest text a value ciphertext can be: base64 of 22 bytes (a later value of the record, empty plaintext)
_MIN_CIPHERTEXT_CHARS = 30
_BLOCKING = ("pattern", "maxLength", "enum", "const", "not", "if", "then", "else")
_DATA = frozenset({"default", "const", "enum", "examples"})
_PLAIN = _DATA | {
    *("$schema", "$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$comment", "$vocabulary"),
    *("title", "description", "type", "format", "contentMediaType", "contentEncoding", "readOnly", "writeOnly"),
    *("deprecated", "required", "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum"),
    *("exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties"),
    *("dependentRequired", "minContains", "maxContains", "confluent:tags", "$ref", "allOf"),
}
_OBJECT = ("properties", "patternProperties", "additionalProperties")
_ARRAY = ("items", "prefixItems", "additionalItems")
_STRING, _ARRAY_T, _OBJECT_T, _NULL = (frozenset({t}) for t in ("string", "array", "object", "null"))
_LEGACY_DRAFTS = ("draft-03", "draft-04", "draft-06", "draft-07", "2019-09")


def _by_name(step: FieldStep) -> str:
    """Properties are visited, and their values numbered (docs/wire-format.md), in code-point order of their names:
    the order of a JSON object's keys carries no meaning, and registries re-serialize schemas (some sort the keys),
    so a consumer's copy of the schema may list them in another order than the producer's."""
    return step.name


#: the path of the document itself (every other value's path is longer: $.a, $[], $[*])
_ROOT = "$"

#: the most subschema visits one compilation may make (see _Compiler._step); real schemas need a few thousand
MAX_VISITS = 20_000


def compile_json(
    schema: Any, rules: TagRules, resolve: Resolve, matcher: MatcherFor, collector: TagCollector | None = None
) -> FieldPlan:
    """Compile a parsed JSON Schema into a :class:`FieldPlan`. ``resolve`` looks up ``$ref`` targets,
    ``matcher(subschema)`` tells whether a value validates against a subschema (refs resolved from the root);
    ``collector``: the :class:`TagCollector` to read tags with (default: ``rules.collector()``)."""
    c = _Compiler(schema, rules, resolve, matcher, collector)
    root = c.walk(schema, _At(_ROOT, _ROOT, (), "#"), ())
    c.scan_unreferenced()
    c.tags.finish()
    root, named = c.prune(root)
    if len(c.subjects) > 1:
        raise PolicyError(
            "several properties are tagged as the data-subject id: " + ", ".join(s[0] for s in c.subjects)
        )
    subject = c.subjects[0] if c.subjects else None
    return FieldPlan(
        root=root,
        named=named,
        leaves=tuple(c.leaves),
        data_subject=subject[1] if subject else None,
        data_subject_path=subject[0] if subject else None,
        data_subject_kind=subject[2] if subject else "string",
        decisions=tuple(c.tags.decisions),
        identity=schema_identity(schema),
    )


def schema_identity(schema: Any) -> str | None:
    """What a JSON value is bound to besides its path (format version 2): the schema's ``$id``, else its ``title``,
    else None (the default key domain: the subject, or ``fieldcrypt.domain``). A non-string ``$id``/``title`` is
    not one (the registry would not have accepted such a schema as valid)."""
    if isinstance(schema, dict):
        for keyword in ("$id", "title"):
            value = schema.get(keyword)
            if isinstance(value, str) and value:
                return f"{keyword}={value}"  # named by keyword: a title never equals another schema's $id
    return None


@dataclass(frozen=True)
class _At:
    path: str  # the value's path for messages: $.a.b, $.list[], $.map[*]
    full: str  # confluent's full name, for metadata.tags: $.a.b
    names: tuple[str, ...] | None  # property names from the root, while reached through properties only
    ptr: str  # schema location: #/properties/a/items

    def prop(self, name: str) -> _At:
        names = None if self.names is None else (*self.names, name)
        return _At(f"{self.path}.{name}", f"{self.full}.{name}", names, f"{self.ptr}/properties/{_esc(name)}")

    def under(self, keyword: str, suffix: str = "", keep: bool = False) -> _At:
        return _At(self.path + suffix, self.full, self.names if keep else None, f"{self.ptr}/{keyword}")


@dataclass(frozen=True)
class _Inh:
    """What the enclosing schemas of the same value pass down: tags (to a branch deciding for them), types."""

    tags: frozenset[str] = frozenset()
    types: frozenset[str] | None = None
    outer: tuple[dict[str, Any], ...] = ()  # their schema objects, whose constraints a tagged string must meet
    #: every schema that may judge the value as a whole (asked on first use; see _Related): what may stand in for
    #: it when it cannot be read is decided against them. None: the root document (its own schema only)
    roots: Callable[[], tuple[Any, ...]] | None = None


_NONE = _Inh()


class _Related:
    """The schema objects that may judge one object or array value, or the values it holds: those of the value
    (itself, its $ref targets, allOf branches), the enclosing ones of the same value (``outer``), and what they
    reach through ``$ref``, ``allOf``, ``oneOf``, ``anyOf``, ``then``, ``else``, ``dependentSchemas`` and schema
    ``dependencies`` (any branch may be the one that applies). Gathered once, on first use (a tagged value below).

    Whether null may stand in for a child value is asked of all of them (:meth:`property`, :meth:`undeclared`,
    :meth:`items`): null is returned only where every one that may apply to the child accepts null; a ``not`` or a
    dynamic reference among them makes it a placeholder (which one applies cannot be told from the schema).
    """

    def __init__(self, compiler: _Compiler, schemas: list[Any], at: _At) -> None:
        self._compiler, self._schemas, self._at = compiler, schemas, at
        self._found: tuple[list[dict[str, Any]], bool] | None = None

    def _all(self) -> tuple[list[dict[str, Any]], bool]:
        if self._found is None:
            out: list[dict[str, Any]] = []
            opaque = False
            seen: set[int] = set()
            todo = list(self._schemas)
            while todo:
                s = todo.pop()
                if not isinstance(s, dict) or id(s) in seen:
                    continue
                seen.add(id(s))
                out.append(s)
                opaque = opaque or any(k in s for k in ("not", "$dynamicRef", "$recursiveRef"))
                for k in ("allOf", "oneOf", "anyOf"):
                    todo.extend(s[k] if isinstance(s.get(k), list) else ())
                todo.extend(s[k] for k in ("then", "else") if k in s)
                for k in ("dependentSchemas", "dependencies"):
                    todo.extend(s[k].values() if isinstance(s.get(k), dict) else ())
                if isinstance(s.get("$ref"), str):
                    todo.append(self._compiler.resolve(s["$ref"], self._at))
            self._found = (out, opaque)
        return self._found

    def property(self, name: str) -> tuple[Any, ...]:
        """The schemas that may apply to the value of declared property ``name``: its declarations, the
        patternProperties whose regex may match it, else additionalProperties, in every related schema object."""
        found, opaque = self._all()
        out: list[Any] = [False] if opaque else []
        for s in found:
            props, pats = s.get("properties"), s.get("patternProperties")
            declared = isinstance(props, dict) and name in props
            if declared:
                out.append(props[name])  # type: ignore[index]  # a dict holding name
            matched = [sub for rx, sub in pats.items() if _may_match(rx, name)] if isinstance(pats, dict) else []
            out.extend(matched)
            if not declared and not matched and "additionalProperties" in s:
                out.append(s["additionalProperties"])
        return tuple(out)

    def undeclared(self) -> tuple[Any, ...]:
        """The schemas that may apply to the value of a key no property declares: every patternProperties and
        additionalProperties schema of every related schema object."""
        found, opaque = self._all()
        out: list[Any] = [False] if opaque else []
        for s in found:
            pats = s.get("patternProperties")
            out.extend(pats.values() if isinstance(pats, dict) else ())
            out.extend([s["additionalProperties"]] if "additionalProperties" in s else [])
        return tuple(out)

    def items(self, at: int | None, start: int = 0) -> tuple[Any, ...]:
        """The schemas that may apply to the array item at position ``at`` (None: any position from ``start`` on),
        read as the draft reads each related schema object (``prefixItems`` + ``items``, or the array form of
        ``items`` + ``additionalItems``)."""
        found, opaque = self._all()
        out: list[Any] = [False] if opaque else []
        for s in found:
            items, listed = s.get("items"), s.get("prefixItems")
            prefix: list[Any] = []
            if isinstance(items, list):  # draft 4 to 2019-09 tuple form
                prefix, rest = items, s.get("additionalItems")
            elif self._compiler.legacy:
                rest = items
            else:
                prefix, rest = listed if isinstance(listed, list) else [], items
            if at is not None:
                out.extend([prefix[at]] if at < len(prefix) else [rest] if rest is not None else [])
            else:
                out.extend([*prefix[start:], *([rest] if rest is not None else [])])
        return tuple(out)


def _may_match(rx: str, name: str) -> bool:
    """Whether a patternProperties regex matches a property name; True when that cannot be told in bounded time."""
    try:
        return bool(bounded(rx).search(name))
    except Exception:
        return True


def _esc(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _bounded(rx: str, path: str, what: str) -> None:
    """A regex the engine will match must run on the bounded engine (``fieldcrypt.core.regex``): a schema is not a
    way to stall a producer or a lint run. Refused otherwise, never matched with Python's backtracking ``re``."""
    try:
        bounded(rx)
    except Unsupported as exc:
        raise PolicyError(
            f"{what} {rx!r} is not one fieldcrypt can match in bounded time: {exc} (docs/policy.md lists what a "
            "pattern may use)",
            field_path=path,
        ) from None


def _reached(roots: Any, compiler: _Compiler, at: _At) -> Iterator[dict[str, Any]]:
    """Each schema object among ``roots`` and those they reach through allOf, oneOf, anyOf and $ref, once."""
    todo = list(roots)
    seen: set[int] = set()
    while todo:
        s = todo.pop()
        if not isinstance(s, dict) or id(s) in seen:
            continue
        seen.add(id(s))
        yield s
        for k in ("allOf", "oneOf", "anyOf"):
            todo.extend(s[k] if isinstance(s.get(k), list) else ())
        if isinstance(s.get("$ref"), str):
            todo.append(compiler.resolve(s["$ref"], at))


def _min_length(roots: tuple[Any, ...], compiler: _Compiler, at: _At) -> int:
    """The largest ``minLength`` among ``roots`` and the schemas they reach (allOf, oneOf, anyOf, $ref): what a
    placeholder standing in for the value must meet (the largest, whichever branch applies)."""
    lengths = (s["minLength"] for s in _reached(roots, compiler, at) if isinstance(s.get("minLength"), int))
    return max((n for n in lengths if not isinstance(n, bool)), default=0)


def _unicode(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _types(schema: dict[str, Any]) -> frozenset[str] | None:
    t = schema.get("type")
    if isinstance(t, str):
        return frozenset({t})
    return frozenset(x for x in t if isinstance(x, str)) if isinstance(t, list) else None


def _meet(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The types both allow (an integer is a number)."""
    if a is None or b is None:
        return a if b is None else b
    both = a & b
    return both | {"integer"} if ("integer" in a and "number" in b) or ("number" in a and "integer" in b) else both


def _unwrap(node: Node) -> Node:
    return node.child if isinstance(node, NullableNode) else node


def merge(a: Node | None, b: Node | None, path: str) -> Node | None:
    """One plan for a value two schemas apply to (``allOf`` branches, keywords beside ``$ref`` or ``oneOf``)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if isinstance(a, NullableNode) or isinstance(b, NullableNode):
        inner = merge(_unwrap(a), _unwrap(b), path)
        return None if inner is None else NullableNode(inner)
    if isinstance(a, ChoiceNode) != isinstance(b, ChoiceNode):
        choice, other = (a, b) if isinstance(a, ChoiceNode) else (b, a)
        assert isinstance(choice, ChoiceNode)
        branches = tuple((m, merge(n, other, path)) for m, n in choice.branches)
        return ChoiceNode(choice.keyword, choice.path, branches)
    if isinstance(a, Leaf) and isinstance(b, Leaf) and None not in (a.mask, b.mask) and a.mask != b.mask:
        raise PolicyError(
            f"the schemas that apply to this value give it several masks ({a.mask}, {b.mask}) in "
            "fieldcrypt.masks; a value has one masked view",
            field_path=path,
        )
    if (
        isinstance(a, Leaf)
        and isinstance(b, Leaf)
        and a.kind == b.kind
        and (a.domain == b.domain or None in (a.domain, b.domain))
        and (a.mask == b.mask or None in (a.mask, b.mask))
    ):
        if (a.deterministic or b.deterministic) and (a.mask or b.mask):
            raise PolicyError(
                "the schemas that apply to this value make it deterministic (fieldcrypt.deterministic.tags) and "
                "masked (fieldcrypt.masks); a deterministic value carries no masked view",
                field_path=path,
            )
        # one value: null may stand in only if both admit it, and a placeholder must meet both minLengths
        nullable, shortest = a.nullable and b.nullable, max(a.min_length, b.min_length)
        det = a.deterministic or b.deterministic  # the tags of both apply
        return Leaf(a.path, a.kind, a.domain or b.domain, a.tags | b.tags, nullable, shortest, a.mask or b.mask, det)
    if isinstance(a, RecordNode) and isinstance(b, RecordNode):
        return _merge_records(a, b, path)
    if isinstance(a, ArrayNode) and isinstance(b, ArrayNode):
        width = max(len(a.prefix), len(b.prefix))
        at = [a.prefix[i] if i < len(a.prefix) else a.items for i in range(width)]
        bt = [b.prefix[i] if i < len(b.prefix) else b.items for i in range(width)]
        together = " and ".join(dict.fromkeys(k for t in (a.together, b.together) if t for k in t.split(" and ")))
        prefix = tuple(merge(x, y, path) for x, y in zip(at, bt, strict=True))
        return ArrayNode(merge(a.items, b.items, path), prefix, together or None)
    raise PolicyError(
        f"the schemas that apply to this value call for different treatments ({type(a).__name__} and "
        f"{type(b).__name__}, e.g. a tagged string in one allOf branch and an object in another, or two tagged "
        "oneOf/anyOf); make them agree",
        field_path=path,
    )


def _merge_records(a: RecordNode, b: RecordNode, path: str) -> RecordNode:
    steps = {s.name: s.node for s in a.steps}
    for s in b.steps:
        steps[s.name] = merge(steps.get(s.name), s.node, f"{path}.{s.name}")  # type: ignore[assignment]
    patterns = dict(a.patterns)
    for rx, node in b.patterns:
        patterns[rx] = merge(patterns.get(rx), node, f"{path}[*]")  # type: ignore[assignment]
    # declared / all_patterns only say which keys an ``extra`` schema covers: keep the ones of the side that has it
    if (
        a.extra is not None
        and b.extra is not None
        and (a.extra, a.declared, a.all_patterns)
        != (
            b.extra,
            b.declared,
            b.all_patterns,
        )
    ):
        raise PolicyError(
            "two schemas of this object have different tagged additionalProperties; use one", field_path=path
        )
    side = a if a.extra is not None else b if b.extra is not None else None
    declared = side.declared if side else a.declared | b.declared
    all_patterns = side.all_patterns if side else tuple(dict.fromkeys((*a.all_patterns, *b.all_patterns)))
    return RecordNode(
        a.name,
        tuple(sorted((FieldStep(n, node) for n, node in steps.items()), key=_by_name)),
        declared,
        tuple(patterns.items()),
        side.extra if side else None,
        all_patterns,
    )


class _Compiler:
    def __init__(
        self, root: Any, rules: TagRules, resolve: Resolve, matcher: MatcherFor, collector: TagCollector | None = None
    ) -> None:
        self.root, self.rules, self.resolve_ref, self.matcher = root, rules, resolve, matcher
        self.tags: TagCollector = collector or rules.collector()
        self.decisive = rules.encrypt | {rules.data_subject}
        draft = root.get("$schema") if isinstance(root, dict) else None
        self.legacy = isinstance(draft, str) and any(d in draft for d in _LEGACY_DRAFTS)
        self.named: dict[str, RecordNode] = {}
        self.recursive: set[str] = set()
        self.nullable_refs: set[str] = set()
        self.leaves: list[Leaf] = []
        self.subjects: list[tuple[str, tuple[str, ...], str]] = []
        self.visited: set[int] = set()
        self.work = 0  # subschemas visited, bounded by MAX_VISITS (see _step)
        self.defs: list[tuple[Any, str]] = []

    def resolve(self, ref: str, at: _At) -> Any:
        try:
            return self.resolve_ref(ref)
        except Exception as exc:
            raise PolicyError(f"cannot resolve $ref {ref!r} at {at.ptr}: {exc}", field_path=at.path) from None

    # -- one value: the schema objects that apply to it (the schema, its $ref targets, allOf branches) ----------
    def _step(self, at: _At) -> None:
        """Count one subschema visit: a schema whose $ref / anyOf / oneOf / allOf nesting expands beyond MAX_VISITS
        (2 branches referring to the next definition, 30 deep, is 2**30 visits from 2.7 kB) is refused, so that
        it cannot stall lint, a serializer's construction or a consumer's first record."""
        self.work += 1
        if self.work > MAX_VISITS:
            raise PolicyError(
                f"the schema expands to more than {MAX_VISITS:,} subschema visits through nested $ref, anyOf, oneOf "
                "or allOf (an expansion bomb?); refused so that it cannot stall the serializer or lint",
                field_path=at.path,
            )

    def gather(
        self, schema: Any, at: _At, stack: tuple[str, ...], also: tuple[Member, ...] = ()
    ) -> tuple[list[Member], set[str], frozenset[str] | None]:
        self._step(at)
        members: list[Member] = []
        recursive: set[str] = set()
        types: list[frozenset[str] | None] = [None]

        def visit(s: Any, ptr: str, stack: tuple[str, ...]) -> None:
            if s is True:
                return
            if s is False:
                types[0] = frozenset()  # nothing validates
                return
            if not isinstance(s, dict):
                raise PolicyError(f"the schema at {ptr} is not an object or boolean", field_path=at.path)
            members.append((s, ptr, stack))
            types[0] = _meet(types[0], _types(s))
            ref = s.get("$ref")
            if isinstance(ref, str):
                if ref in stack:
                    recursive.add(ref)
                else:
                    visit(self.resolve(ref, at), ref, (*stack, ref))
            branches = s.get("allOf")
            for i, branch in enumerate(branches if isinstance(branches, list) else ()):
                visit(branch, f"{ptr}/allOf/{i}", stack)

        visit(schema, at.ptr, stack)
        for s, ptr, st in also:  # more schemas of the same value: the same property in several allOf branches
            visit(s, ptr, st)
        return members, recursive, types[0]

    def walk(
        self,
        schema: Any,
        at: _At,
        stack: tuple[str, ...],
        inh: _Inh = _NONE,
        prop: bool = False,
        also: tuple[Member, ...] = (),
    ) -> Node | None:
        members, recursive, own_types = self.gather(schema, at, stack, also)
        self.recursive |= recursive
        tags = set(inh.tags)
        if prop:
            first = members[0][0] if members and members[0][0] is schema else {}
            tags |= self.tags.field(at.full, first.get("confluent:tags", MISSING), at.path)
        for m, ptr, _ in members:
            self.visited.add(id(m))
            if not (prop and m is schema):
                tags |= self.tags.inline(m.get("confluent:tags", MISSING), ptr)
        tags = set(self.tags.applies(at.path, frozenset(tags), tuple(m for m, _, _ in members)))
        types = _meet(own_types, inh.types)
        encrypt, subject = tags & self.rules.encrypt, self.rules.data_subject in tags
        choices = any("oneOf" in m or "anyOf" in m for m, _, _ in members)
        delegate = (encrypt or subject) and types is None and choices  # the oneOf/anyOf branches say the type
        kinds = None if types is None else types - {"null"}
        here: list[Node | None] = [RefNode(r) for r in sorted(recursive)]
        element: tuple[str, frozenset[str]] | None = None  # ("array"|"object", tags every element/value carries)
        roots = inh.roots if inh.roots is not None else (lambda: (schema, *(s for s, _, _ in also)))
        if subject and not delegate:
            self.subject(at, frozenset(tags), kinds)
        if encrypt and not delegate and kinds != frozenset():
            if kinds == _STRING:
                here.append(self.leaf(at, frozenset(tags), [m for m, _, _ in members], inh, roots()))
            elif kinds == _ARRAY_T and any(k in m for m, _, _ in members for k in _ARRAY):
                element = ("array", frozenset(tags))
            elif kinds == _OBJECT_T and self.is_map(members):
                element = ("object", frozenset(tags))
            else:
                shown = "/".join(sorted(kinds)) if kinds else "unspecified"
                raise PolicyError(
                    f"the value is tagged for encryption ({', '.join(sorted(encrypt))}) but has type {shown}; "
                    "only strings (optionally nullable, or base64 contentEncoding), arrays of strings (with items) "
                    "and maps of strings (additionalProperties) can be encrypted: tag the string properties inside",
                    field_path=at.path,
                )
        outer = (*inh.outer, *(m for m, _, _ in members))
        down = _Inh(frozenset(tags) if delegate else frozenset(), types, outer, roots)
        related = _Related(self, list(outer), at)  # for the values this one holds
        parts = [self.keywords(m, replace(at, ptr=ptr), st, element, down, related) for m, ptr, st in members]
        records = self.records(members, at, element, related)
        parts = [merge(p, r, at.path) for p, r in zip(parts, records, strict=True)]
        node: Node | None = None
        for part in (*here, *parts):
            node = merge(node, part, at.path)
        array = _unwrap(node) if node is not None else None
        if isinstance(array, ArrayNode):
            kws = [
                kw for kw in ("uniqueItems", "contains") if any(kw in m and m[kw] is not False for m, _, _ in members)
            ]
            if kws:  # the reader checks stand-ins placed in it (core.engine._array)
                array = replace(array, together=" and ".join(kws))
                node = replace(node, child=array) if isinstance(node, NullableNode) else array
        for ref in {r for _, _, st in members for r in st[len(stack) :]} & self.recursive:
            self.name(ref, [p for (_, _, st), p in zip(members, parts, strict=True) if ref in st], types, at)
        if node is not None and types is not None and "null" in types and not isinstance(node, NullableNode):
            node = NullableNode(node)
        return node

    def name(self, ref: str, parts: list[Node | None], types: Any, at: _At) -> None:
        """A recursive $ref target: its plan, by name, for the RefNodes that point back to it."""
        node: Node | None = None
        for part in parts:
            node = merge(node, part, at.path)
        if node is None or ref in self.named:
            return
        if not isinstance(node, RecordNode):
            raise PolicyError(f"the recursive $ref {ref!r} must be an object schema to hold tags", field_path=at.path)
        self.named[ref] = node
        if types is not None and "null" in types:
            self.nullable_refs.add(ref)

    def accepts_null(self, schema: Any) -> bool:
        """Whether null validates against ``schema`` (jsonschema, through the serde's matcher); False when that
        cannot be told (a reference the matcher cannot follow): a placeholder then stands in, never a guess."""
        if isinstance(schema, bool):
            return schema
        try:
            return bool(self.matcher(schema)(None))
        except Exception:
            return False

    def is_map(self, members: list[Member]) -> bool:
        if any(m.get("properties") or m.get("patternProperties") for m, _, _ in members):
            return False
        return any(isinstance(m.get("additionalProperties"), dict) for m, _, _ in members)

    def leaf(self, at: _At, tags: frozenset[str], members: list[dict[str, Any]], inh: _Inh, roots: Any) -> Leaf:
        found: set[str] = set()
        encodings: set[Any] = set()
        shortest = _min_length(roots, self, at)
        for s in _reached([*members, *inh.outer], self, at):
            found.update(k for k in _BLOCKING if k in s)
            if isinstance(s.get("minLength"), int) and s["minLength"] > _MIN_CIPHERTEXT_CHARS:
                found.add("minLength")
            if isinstance(s.get("minLength"), int):
                shortest = max(shortest, s["minLength"])
            if "contentEncoding" in s:
                encodings.add(s["contentEncoding"])
        if encodings - {"base64"}:
            raise PolicyError(
                f"the value is tagged for encryption but has contentEncoding {sorted(map(str, encodings))}; only "
                "base64 (the decoded bytes are encrypted) can be kept",
                field_path=at.path,
            )
        if found:
            raise PolicyError(
                f"the value is tagged for encryption but its schema has {', '.join(sorted(found))}, which the "
                "ciphertext cannot satisfy; move that check to the producer",
                field_path=at.path,
            )
        kind: Literal["string", "base64"] = "base64" if encodings else "string"
        # the document itself ($) never: a record value of None is what confluent's deserializers return for a
        # tombstone (a deletion, to compacting sinks), so an unreadable root value reads as the placeholder
        nullable = at.path != _ROOT and all(self.accepts_null(r) for r in roots)
        domain, mask = self.rules.domain_for(tags, at.path), self.rules.mask_for(tags, at.path, kind)
        if mask is not None and shortest:
            raise PolicyError(
                f"the value has a masked view ({mask!r} mask) and its schema a minLength ({shortest}): a reader given "
                "the mask (shorter than the value) would read a document its schema refuses; drop the minLength or "
                "the mask",
                field_path=at.path,
            )
        det = self.rules.deterministic_for(tags, at.path, mask)
        leaf = Leaf(at.path, kind, domain, tags, nullable, shortest, mask, det)
        self.leaves.append(leaf)
        return leaf

    def subject(self, at: _At, tags: frozenset[str], kinds: frozenset[str] | None) -> None:
        if at.names is None or not at.names:
            raise PolicyError(
                "the data-subject id must be a property reached from the root through properties only (not inside "
                "an array, map, patternProperties or a oneOf/anyOf choice)",
                field_path=at.path,
            )
        if tags & self.rules.encrypt:
            raise PolicyError("the data-subject id property cannot itself be encrypted", field_path=at.path)
        if not kinds or not kinds <= {"string", "integer"}:
            raise PolicyError("the data-subject id property must be a string or an integer", field_path=at.path)
        kind = "|".join(k for k in ("string", "integer") if k in kinds)
        self.subjects.append((at.path, at.names, kind))

    # -- the keywords of one schema object ------------------------------------------------------------------------
    def keywords(
        self,
        m: dict[str, Any],
        at: _At,
        stack: tuple[str, ...],
        element: tuple[str, frozenset[str]] | None,
        inh: _Inh,
        related: _Related,
    ) -> Node | None:
        node: Node | None = None
        for key, value in m.items():
            if key in _PLAIN or key in _OBJECT or key in _ARRAY:
                continue
            if key in ("oneOf", "anyOf"):
                node = merge(node, self.choice(key, value, at, stack, inh), at.path)
            elif key in ("$defs", "definitions") and isinstance(value, dict):
                self.defs.extend((v, f"{at.ptr}/{key}/{_esc(str(k))}") for k, v in value.items())
            elif key in ("$dynamicRef", "$recursiveRef") and isinstance(value, str):
                try:
                    target = self.resolve_ref(value)
                except Exception:
                    target = self.root  # a dynamic target may be any schema
                self.forbid(key, target, at)
            elif key == "dependencies" and isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, dict):
                        self.forbid(f"dependencies/{_esc(str(k))}", v, at)
            else:  # not, if/then/else, contains, propertyNames, unevaluated*, dependentSchemas, unknown keywords
                self.forbid(key, value, at, schema=key in _SCHEMA_VALUED)
        return merge(node, self.array(m, at, stack, element, related), at.path)

    def choice(self, key: str, branches: Any, at: _At, stack: tuple[str, ...], inh: _Inh) -> Node | None:
        if not isinstance(branches, list):
            raise PolicyError(f"{key} at {at.ptr} must be a list of schemas", field_path=at.path)
        null = [self.gather(b, at.under(f"{key}/{i}"), stack)[2] == _NULL for i, b in enumerate(branches)]
        real = [i for i, n in enumerate(null) if not n]
        single = len(real) <= 1  # nullable, or one schema: the same value
        nodes = [self.walk(b, at.under(f"{key}/{i}", keep=single), stack, inh) for i, b in enumerate(branches)]
        if single:
            node = nodes[real[0]] if real else None
            return (
                NullableNode(node)
                if node is not None and len(branches) > 1 and not isinstance(node, NullableNode)
                else node
            )
        if all(n is None for n in nodes):
            return None
        return ChoiceNode(key, at.path, tuple((self.matcher(b), n) for b, n in zip(branches, nodes, strict=True)))

    def records(
        self, members: list[Member], at: _At, element: tuple[str, frozenset[str]] | None, related: _Related
    ) -> list[Node | None]:
        """Per schema object: its object keywords. A property declared by several of them is one value."""
        by_name: dict[str, list[Member]] = {}
        for m, ptr, st in members:
            props = m.get("properties")
            for name, sub in props.items() if isinstance(props, dict) else ():
                by_name.setdefault(name, []).append((sub, f"{ptr}/properties/{_esc(name)}", st))
        out: list[Node | None] = []
        for m, _, st in members:
            props, pats, extra_schema = (m.get(k) for k in _OBJECT)
            steps = []
            for name in props if isinstance(props, dict) else ():
                group = by_name.pop(name, None)
                if group:  # the first schema object declaring it walks them all
                    first, *rest = group
                    where = replace(at.prop(name), ptr=first[1])
                    inh = _Inh(roots=partial(related.property, name))
                    node = self.walk(first[0], where, first[2], inh, prop=True, also=(*rest,))
                    steps.extend([FieldStep(name, node)] if node is not None else [])
            patterns, all_patterns = [], []
            for rx, sub in pats.items() if isinstance(pats, dict) else ():
                try:
                    re.compile(rx)
                except (re.error, RecursionError) as exc:
                    raise PolicyError(f"patternProperties regex {rx!r} is invalid: {exc}", field_path=at.path) from None
                all_patterns.append(rx)
                node = self.walk(
                    sub, at.under(f"patternProperties/{_esc(rx)}", "[*]"), st, _Inh(roots=related.undeclared)
                )
                if node is not None:  # tagged: the engine searches every key of the object with it
                    _bounded(rx, f"{at.path}[*]", "a tagged patternProperties regex")
                patterns.extend([(rx, node)] if node is not None else [])
            extra = None
            if extra_schema is not None:
                tags = element[1] if element and element[0] == "object" else frozenset()
                where = at.under("additionalProperties", "[*]")
                extra = self.walk(extra_schema, where, st, _Inh(tags, roots=related.undeclared))
            for rx in all_patterns if extra is not None else ():  # they decide which keys the tagged schema covers
                _bounded(rx, f"{at.path}[*]", "a patternProperties regex beside a tagged additionalProperties")
            declared = frozenset(props) if isinstance(props, dict) else frozenset()
            for name in declared if patterns else ():  # searched by the tagged patterns, as every key is
                if not _unicode(name):
                    raise PolicyError(
                        f"property name {json.dumps(name)} holds a lone surrogate (not Unicode): no regex can be "
                        "matched against it in bounded time, and a tagged patternProperties regex must be",
                        field_path=at.path,
                    )
            useful = steps or patterns or extra is not None
            out.append(
                RecordNode(
                    at.path, tuple(sorted(steps, key=_by_name)), declared, tuple(patterns), extra, tuple(all_patterns)
                )
                if useful
                else None
            )
        return out

    def array(
        self,
        m: dict[str, Any],
        at: _At,
        stack: tuple[str, ...],
        element: tuple[str, frozenset[str]] | None,
        related: _Related,
    ) -> Node | None:
        items = m.get("items")
        prefix: Any = []
        ignored: tuple[str, ...]
        if isinstance(items, list):  # draft 4 to 2019-09 tuple form
            prefix, prefix_kw, rest, rest_kw, ignored = items, "items", m.get("additionalItems"), "additionalItems", ()
        elif self.legacy:
            prefix_kw, rest, rest_kw, ignored = "", items, "items", ("additionalItems",)
        else:
            prefix, prefix_kw, rest, rest_kw = m.get("prefixItems") or [], "prefixItems", items, "items"
            ignored = ("additionalItems",)
        for key in (*ignored, *(("prefixItems",) if self.legacy or prefix_kw == "items" else ())):
            if key in m:
                self.forbid(key, m[key], at, reason="this draft ignores it here, so it applies to no value")
        tags = element[1] if element and element[0] == "array" else frozenset()
        nodes = tuple(
            self.walk(s, at.under(f"{prefix_kw}/{i}", f"[{i}]"), stack, _Inh(tags, roots=partial(related.items, i)))
            for i, s in enumerate(prefix)
        )
        inh = _Inh(tags, roots=partial(related.items, None, len(prefix)))
        last = self.walk(rest, at.under(rest_kw, "[]"), stack, inh) if rest is not None else None
        if last is None and all(n is None for n in nodes):
            return None
        return ArrayNode(last, nodes)

    # -- places tags cannot be enforced ---------------------------------------------------------------------------
    def forbid(self, key: str, value: Any, at: _At, schema: bool = True, reason: str = "") -> None:
        found = self.scan(value, f"{at.ptr}/{key}", at.full if schema else None, schema, set())
        if found:
            why = reason or "which values it applies to depends on the data, so fieldcrypt cannot enforce it"
            raise PolicyError(
                f"{key!r} at {at.ptr}/{key} holds schemas tagged {', '.join(sorted(found))}; {why}. Tag properties "
                "reached through properties, items, additionalProperties, patternProperties, $ref, allOf, oneOf or "
                "anyOf instead",
                field_path=at.path,
            )

    def scan(self, v: Any, ptr: str, full: str | None, schema: bool, seen: set[str], prop: bool = False) -> set[str]:
        """Every decisive tag in ``v`` (checking all tags found, and following $refs in schemas)."""
        found: set[str] = set()
        if isinstance(v, list):
            for i, x in enumerate(v):
                found |= self.scan(x, f"{ptr}/{i}", full, schema, seen)
        if not isinstance(v, dict):
            return found
        raw = v.get("confluent:tags", MISSING)
        found |= (self.tags.field(full, raw, ptr) if prop and full else self.tags.inline(raw, ptr)) & self.decisive
        ref = v.get("$ref")
        if schema and isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            found |= self.scan(self.resolve(ref, _At(ptr, "", None, ptr)), ref, full, schema, seen)
        for k, x in v.items():
            if k == "confluent:tags" or (schema and k in _DATA):
                continue
            if schema and k == "properties" and isinstance(x, dict):
                for name, sub in x.items():
                    sub_full = None if full is None else f"{full}.{name}"
                    found |= self.scan(sub, f"{ptr}/properties/{_esc(name)}", sub_full, schema, seen, prop=True)
            else:
                found |= self.scan(x, f"{ptr}/{_esc(str(k))}", full, schema, seen)
        return found

    def scan_unreferenced(self) -> None:
        while self.defs:
            schema, ptr = self.defs.pop()
            if id(schema) not in self.visited:
                self.visited.add(id(schema))
                self.scan(schema, ptr, None, True, set())  # checked, applies to nothing

    # -- drop RefNodes to recursive types with nothing tagged --------------------------------------------------
    def prune(self, root: Node | None) -> tuple[Node | None, dict[str, RecordNode]]:
        live: set[str] = set()
        while True:
            more = {n for n, r in self.named.items() if n not in live and _holds(r, live)}
            if not more:
                break
            live |= more
        named = {n: r for n, r in self.named.items() if n in live}
        pruned = {n: _prune(r, live, self.nullable_refs) for n, r in named.items()}
        return _prune(root, live, self.nullable_refs), {n: r for n, r in pruned.items() if isinstance(r, RecordNode)}


_SCHEMA_VALUED = frozenset(
    {"not", "if", "then", "else", "contains", "propertyNames", "unevaluatedProperties", "unevaluatedItems"}
    | {"dependentSchemas", "contentSchema"}
)


def _holds(node: Node | None, live: set[str]) -> bool:
    """Whether ``node`` leads to a Leaf (through RefNodes to ``live`` names)."""
    if node is None:
        return False
    if isinstance(node, Leaf):
        return True
    if isinstance(node, RefNode):
        return node.name in live
    if isinstance(node, NullableNode):
        return _holds(node.child, live)
    if isinstance(node, ArrayNode):
        return _holds(node.items, live) or any(_holds(n, live) for n in node.prefix)
    if isinstance(node, ChoiceNode):
        return any(_holds(n, live) for _, n in node.branches)
    if isinstance(node, RecordNode):
        return any(_holds(n, live) for n in (*(s.node for s in node.steps), *(n for _, n in node.patterns), node.extra))
    raise AssertionError(f"unexpected plan node {node!r}")


def _prune(node: Node | None, live: set[str], nullable: set[str]) -> Node | None:
    if node is None or not _holds(node, live):
        return None
    if isinstance(node, RefNode):
        return NullableNode(node) if node.name in nullable else node
    if isinstance(node, NullableNode):
        child = _prune(node.child, live, nullable)
        return NullableNode(_unwrap(child)) if child is not None else None
    if isinstance(node, ArrayNode):
        prefix = tuple(_prune(n, live, nullable) for n in node.prefix)
        return replace(node, items=_prune(node.items, live, nullable), prefix=prefix)
    if isinstance(node, ChoiceNode):
        return replace(node, branches=tuple((m, _prune(n, live, nullable)) for m, n in node.branches))
    if isinstance(node, RecordNode):
        steps = [(s.name, _prune(s.node, live, nullable)) for s in node.steps]
        patterns = [(rx, _prune(n, live, nullable)) for rx, n in node.patterns]
        return replace(
            node,
            steps=tuple(FieldStep(name, n) for name, n in steps if n is not None),
            patterns=tuple((rx, n) for rx, n in patterns if n is not None),
            extra=_prune(node.extra, live, nullable),
        )
    return node
