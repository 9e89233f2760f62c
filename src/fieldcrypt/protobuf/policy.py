"""Protobuf schema -> field plan, for one root message, by one walk over every message of the schema's files.

Tags come from where confluent's tooling puts them: the field option ``[(confluent.field_meta) = { tags: ["PII"] }]``
(``confluent/meta.proto``), and the registered schema's ``metadata.tags`` path patterns, matched against the field's
full name (``package.Message.field``) and its short name (``Message.field``). Every message type of the schema's own
file and of the files it imports (references) is checked, used by the root or not; the plan follows the root.

Enforced (encrypted): a tagged ``string`` or ``bytes`` field, singular (with or without presence: ``optional``,
``oneof`` members), repeated (each element) or a map's values (the tag on the map field), in any message reached
from the root (nested, imported, recursive). String values are written as unpadded base64 text and bytes values as
raw bytes, so the record stays valid for confluent's plain ``ProtobufDeserializer``.

Refused (``PolicyError`` naming the location), never ignored:
- an encryption tag on a message-typed field (wrappers, ``Timestamp``, ``Any``, a repeated or map of messages): tag
  the message's string/bytes fields;
- on an enum, number or bool field (a ciphertext is none of these); on a group;
- an encryption or data-subject tag in ``message_meta``, ``file_meta``, ``enum_meta`` or ``enum_value_meta``
  (declared plaintext tags there are recorded);
- any tag on an extension field declared in the schema (extensions are not planned: declare the field);
- the data-subject tag anywhere but one singular string or integer field reached from the root through singular
  message fields; with the encryption tag on the same field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

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
)
from fieldcrypt.errors import PolicyError
from fieldcrypt.protobuf.confluent import META as _META
from fieldcrypt.protobuf.confluent import ParsedProto, is_map_field, is_repeated

META: Any = _META  # (generated code: its extensions are not typed)

__all__ = ["compile_protobuf", "field_kind"]

_T = FieldDescriptor
_INTS = frozenset(
    {
        _T.TYPE_INT32,
        _T.TYPE_INT64,
        _T.TYPE_UINT32,
        _T.TYPE_UINT64,
        _T.TYPE_SINT32,
        _T.TYPE_SINT64,
        _T.TYPE_FIXED32,
        _T.TYPE_FIXED64,
        _T.TYPE_SFIXED32,
        _T.TYPE_SFIXED64,
    }
)
_NAMES = {
    _T.TYPE_DOUBLE: "double",
    _T.TYPE_FLOAT: "float",
    _T.TYPE_BOOL: "bool",
    _T.TYPE_ENUM: "enum",
    _T.TYPE_GROUP: "group",
    _T.TYPE_MESSAGE: "message",
    _T.TYPE_STRING: "string",
    _T.TYPE_BYTES: "bytes",
}


def field_kind(fd: FieldDescriptor) -> str:
    """A field's type as messages name it: ``string``, ``bytes``, ``int32``..., ``message Name``, ``enum Name``."""
    if fd.type in _INTS:
        names = {v: k for k, v in vars(_T).items() if k.startswith("TYPE_") and isinstance(v, int)}
        return str(names[fd.type][5:].lower())
    name = _NAMES.get(fd.type, "unknown")
    if fd.type in (_T.TYPE_MESSAGE, _T.TYPE_GROUP) and fd.message_type is not None:
        return f"{name} {fd.message_type.full_name}"
    if fd.type == _T.TYPE_ENUM and fd.enum_type is not None:
        return f"enum {fd.enum_type.full_name}"
    return name


def _raw(options: Any, ext: Any, where: str) -> Any:
    """The tags of one options message's confluent meta extension, or ``MISSING`` when it has none. An empty or
    blank tag is refused here, naming the option (the collector's message speaks of Avro's and JSON's key)."""
    try:
        if not options.HasExtension(ext):
            return MISSING
        tags = list(options.Extensions[ext].tags)
    except KeyError:  # an options message confluent's meta does not extend
        return MISSING
    if not all(t.strip() for t in tags):
        raise PolicyError("confluent meta tags must be tag names; one is empty or blank", field_path=where)
    return tags


@dataclass(frozen=True)
class _Field:
    """One field of a message type, as the compiler decided it: its plan node (a leaf, a leaf container, or a
    message reference: ``target``), or nothing."""

    name: str
    fd: FieldDescriptor
    leaf: Node | None  # a string/bytes value (or container of them) to encrypt
    target: str | None  # the message type its values are (None: not a message)
    container: str  # "one" (singular, implicit presence), "opt" (presence), "list", "map"


def compile_protobuf(
    parsed: ParsedProto,
    rules: TagRules,
    collector: TagCollector | None = None,
    root: str | None = None,
    *,
    fallback: bool = False,
    every_message: bool = False,
) -> FieldPlan:
    """Compile a parsed Protobuf schema into the :class:`FieldPlan` of its message ``root`` (a full name; default:
    its first message, confluent's message index ``[0]``). A schema without that message is a ``PolicyError``, or,
    with ``fallback`` (another registered version of a subject, compared with for tag removal), planned through its
    top-level message of the same short name, else its first one. Every message, enum and file of the schema is
    checked, used by the root or not. ``every_message`` (schema lint): the plan's ``leaves`` are those of every message
    of the schema's own file, whichever a record is (each is encrypted when that message is written)."""
    compiler = _Compiler(collector or rules.collector(), rules)
    for f in parsed.files:
        compiler.file(f)
    first = list(parsed.file.message_types_by_name.values())
    if root is not None and root not in compiler.types and not fallback:
        raise PolicyError(f"the Protobuf schema has no message {root} to plan")
    if root is None or root not in compiler.types:
        # a schema without the message (another version of a subject, compared with for tag removal): the message of
        # the same short name, else its first one, as confluent's deserializer picks a reader message
        if not first:
            raise PolicyError("the Protobuf schema declares no message")
        short = root.rsplit(".", 1)[-1] if root is not None else None
        root = next((d.full_name for d in first if d.name == short), first[0].full_name)
    compiler.tags.finish()
    holding = compiler.holding()
    named: dict[str, RecordNode] = {}
    leaves: list[Leaf] = []
    reachable = compiler.reachable(root)
    for name in reachable:
        if name in holding:
            named[name] = compiler.record(name, holding)
            leaves.extend(compiler.leaves[name])
    subject = compiler.data_subject(root, reachable)
    if every_message:
        own = {d.full_name for d in first}
        for name in compiler.types:
            if _in_file(name, own) and name not in reachable:
                leaves.extend(compiler.leaves.get(name, ()))
    return FieldPlan(
        root=RefNode(root) if root in holding else None,
        named=named,
        leaves=tuple(leaves),
        data_subject=tuple(subject[1]) if subject else None,
        data_subject_path=subject[0] if subject else None,
        data_subject_kind=subject[2] if subject else "string",
        decisions=tuple(compiler.tags.decisions),
        identity="",  # value paths start at the root message's full name, as an Avro record's do
    )


def _in_file(name: str, own: set[str]) -> bool:
    """Whether message ``name`` is one of ``own`` (a file's top-level messages) or nested in one."""
    return any(name == o or name.startswith(o + ".") for o in own)


class _Compiler:
    def __init__(self, tags: TagCollector, rules: TagRules) -> None:
        self.tags = tags
        self.rules = rules
        self.types: dict[str, list[_Field]] = {}
        self.leaves: dict[str, list[Leaf]] = {}
        self.subject_fields: dict[str, list[_Field]] = {}  # message -> its fields tagged as the data-subject id
        self._files: set[str] = set()

    # -- reading every tag of the schema --------------------------------------------------------------------------
    def file(self, f: FileDescriptor) -> None:
        if f.name in self._files:
            return
        self._files.add(f.name)
        where = f"file {f.name}"
        self._meta(_raw(f.GetOptions(), META.file_meta, where), where, "a file")
        for enum in f.enum_types_by_name.values():
            self._enum(enum)
        for ext in f.extensions_by_name.values():
            self._extension(ext)
        for desc in f.message_types_by_name.values():
            self.message(desc)

    def _meta(self, raw: Any, location: str, what: str) -> None:
        tags = self.tags.applies(location, self.tags.inline(raw, location), ())
        if tags & (self.rules.encrypt | {self.rules.data_subject}):
            raise PolicyError(
                f"{what} carries an encryption or data-subject tag ({', '.join(sorted(tags))}); fieldcrypt encrypts "
                "string and bytes fields: tag the fields instead",
                field_path=location,
            )

    def _enum(self, enum: EnumDescriptor) -> None:
        where = f"enum {enum.full_name}"
        self._meta(_raw(enum.GetOptions(), META.enum_meta, where), where, "an enum")
        for value in enum.values:
            where = f"enum value {enum.full_name}.{value.name}"
            self._meta(_raw(value.GetOptions(), META.enum_value_meta, where), where, "an enum value")

    def _extension(self, ext: FieldDescriptor) -> None:
        where = f"extension {ext.full_name}"
        tags = self.tags.field(ext.full_name, _raw(ext.GetOptions(), META.field_meta, where), where)
        if tags:
            raise PolicyError(
                "an extension field carries tags; fieldcrypt does not plan extensions: declare the field in the "
                "message",
                field_path=ext.full_name,
            )

    def message(self, desc: Descriptor) -> None:
        name = desc.full_name
        if name in self.types:
            return
        self.types[name] = []  # (recursive types: visited once)
        self._meta(_raw(desc.GetOptions(), META.message_meta, f"message {name}"), f"message {name}", "a message")
        for enum in desc.enum_types:
            self._enum(enum)
        for ext in desc.extensions:
            self._extension(ext)
        for nested in desc.nested_types:
            if not nested.GetOptions().map_entry:
                self.message(nested)
        self._current: list[Leaf] = []
        # in field-number order: a value's position in the record is bound, and a registry re-serializing the schema
        # may declare the fields in another order
        self.types[name] = [self._field(desc, fd) for fd in sorted(desc.fields, key=lambda fd: fd.number)]
        self.leaves[name] = self._current
        for fd in desc.fields:
            t = fd.message_type
            if t is not None and not t.GetOptions().map_entry:
                self.message(t)
            elif t is not None:
                value = t.fields_by_name["value"]
                if value.message_type is not None:
                    self.message(value.message_type)

    def _field(self, desc: Descriptor, fd: FieldDescriptor) -> _Field:
        full = fd.full_name
        tags = self.tags.field(full, _raw(fd.GetOptions(), META.field_meta, full))
        rules = self.rules
        if rules.data_subject in tags:
            if tags & rules.encrypt:
                raise PolicyError("the data-subject id field cannot itself be encrypted", field_path=full)
            if is_repeated(fd) or fd.type not in (_INTS | {_T.TYPE_STRING}):
                raise PolicyError(
                    f"the data-subject id field has type {'repeated ' if is_repeated(fd) else ''}{field_kind(fd)}; "
                    "it must be a singular string or integer field",
                    field_path=full,
                )
            tags = tags - {rules.data_subject}
            found = _Field(fd.name, fd, None, None, "opt" if fd.has_presence else "one")
            self.subject_fields.setdefault(desc.full_name, []).append(found)
        if is_map_field(fd):
            self._map_entry(fd)
            value = fd.message_type.fields_by_name["value"]
            path = f"{full}[*]"
            tags = self.tags.applies(path, tags, (value,))
            node = self._value(value, path, tags, full)
            target = value.message_type.full_name if value.message_type is not None else None
            return _Field(fd.name, fd, MapNode(node) if node is not None else None, target, "map")
        if is_repeated(fd):
            path = f"{full}[]"
            tags = self.tags.applies(path, tags, (fd,))
            node = self._value(fd, path, tags, full)
            target = fd.message_type.full_name if fd.message_type is not None else None
            return _Field(fd.name, fd, ArrayNode(node) if node is not None else None, target, "list")
        tags = self.tags.applies(full, tags, (fd,))
        # an unreadable value stands in as unset only where unset reads as unset: not a proto2 required field (the
        # message could not be serialized) nor one with a declared default (it would read as that value)
        nullable = fd.has_presence and not fd.is_required and not fd.has_default_value
        node = self._value(fd, full, tags, full, nullable=nullable)
        target = fd.message_type.full_name if fd.message_type is not None else None
        if node is not None:
            leaves_node: Node = NullableNode(node) if fd.has_presence else node
            return _Field(fd.name, fd, leaves_node, None, "opt" if fd.has_presence else "one")
        return _Field(fd.name, fd, None, target, "opt" if fd.has_presence else "one")

    def _map_entry(self, fd: FieldDescriptor) -> None:
        """A map's entry type is the map's structure: tags on it, its key or its value field (possible in a hand-built
        descriptor) are refused; the map field carries the tags of its values."""
        entry = fd.message_type
        found = [_raw(entry.GetOptions(), META.message_meta, fd.full_name)]
        found += [_raw(f.GetOptions(), META.field_meta, fd.full_name) for f in entry.fields]
        if any(raw is not MISSING and raw for raw in found):
            raise PolicyError(
                "a map's entry type carries tags: tag the map field itself (its values are then encrypted; keys are "
                "structure and stay clear)",
                field_path=fd.full_name,
            )

    def _value(
        self, fd: FieldDescriptor, path: str, tags: frozenset[str], full: str, nullable: bool = False
    ) -> Leaf | None:
        """The leaf of a value of field ``fd`` (a map's ``value`` field for map values), or None."""
        encrypt = tags & self.rules.encrypt
        if not encrypt:
            return None
        if fd.type not in (_T.TYPE_STRING, _T.TYPE_BYTES):
            what = field_kind(fd)
            hint = (
                "tag its string or bytes fields instead"
                if fd.type in (_T.TYPE_MESSAGE, _T.TYPE_GROUP)
                else "only string and bytes values can be encrypted"
            )
            raise PolicyError(f"the value is tagged for encryption but has type {what}; {hint}", field_path=full)
        kind = "string" if fd.type == _T.TYPE_STRING else "bytes"
        mask = self.rules.mask_for(tags, path, kind)
        leaf = Leaf(
            path=path,
            kind=kind,  # type: ignore[arg-type]
            domain=self.rules.domain_for(tags, path),
            tags=tags,
            nullable=nullable,
            mask=mask,
            deterministic=self.rules.deterministic_for(tags, path, mask),
        )
        self._current.append(leaf)
        return leaf

    # -- the plan of one root -----------------------------------------------------------------------------------------
    def holding(self) -> set[str]:
        """The message types whose values hold tagged values (directly, or through fields of such types)."""
        return self._holders({name for name, fields in self.types.items() if any(f.leaf is not None for f in fields)})

    def _holding_subject(self) -> set[str]:
        """The message types whose values hold a data-subject id field (directly or through message fields)."""
        return self._holders(set(self.subject_fields))

    def _holders(self, held: set[str]) -> set[str]:
        """``held`` and every message type with a field of a type in it, to a fixed point (recursion included)."""
        changed = True
        while changed:
            changed = False
            for name, fields in self.types.items():
                if name not in held and any(f.target in held for f in fields):
                    held.add(name)
                    changed = True
        return held

    def reachable(self, root: str) -> list[str]:
        """The message types a value of ``root`` can hold, ``root`` first."""
        order, stack, seen = [], [root], {root}
        while stack:
            name = stack.pop()
            order.append(name)
            for f in self.types.get(name, ()):
                if f.target is not None and f.target not in seen:
                    seen.add(f.target)
                    stack.append(f.target)
        return order

    def record(self, name: str, holding: set[str]) -> RecordNode:
        steps: list[FieldStep] = []
        for f in self.types[name]:
            node: Node | None = f.leaf
            if node is None and f.target in holding:
                assert f.target is not None
                ref = RefNode(f.target)
                made: dict[str, Node] = {
                    "one": ref,
                    "opt": NullableNode(ref),
                    "list": ArrayNode(ref),
                    "map": MapNode(ref),
                }
                node = made[f.container]
            if node is not None:
                steps.append(FieldStep(f.name, node))
        return RecordNode(name, tuple(steps))

    def data_subject(self, root: str, reachable: list[str]) -> tuple[str, list[str], str] | None:
        """The one field tagged as the data-subject id, reached from ``root`` through singular message fields."""
        found: list[tuple[str, list[str], str]] = []
        reached: set[str] = set()
        holds = self._holding_subject()

        def walk(name: str, names: list[str], path: tuple[str, ...]) -> None:
            for f in self.subject_fields.get(name, ()):
                kind = "string" if f.fd.type == _T.TYPE_STRING else "int"
                found.append((f.fd.full_name, [*names, f.name], kind))
                reached.add(f.fd.full_name)
            for f in self.types.get(name, ()):
                if f.target is None or f.target not in holds or f.container not in ("one", "opt"):
                    continue  # (an id inside a repeated field or a map is refused below)
                if f.target in path:  # a message holding the id nests itself: whose id would its values be under?
                    raise PolicyError(
                        "the data-subject id is in a recursive message: a nested copy names another person, whose "
                        "values would be encrypted under the outer person's key",
                        field_path=f.fd.full_name,
                    )
                walk(f.target, [*names, f.name], (*path, f.target))

        walk(root, [], (root,))
        for name in reachable:
            for f in self.subject_fields.get(name, ()):
                if f.fd.full_name not in reached:
                    raise PolicyError(
                        "the data-subject id must be a singular field of the message (or of messages nested in it "
                        "through singular fields), not inside a repeated field or a map",
                        field_path=f.fd.full_name,
                    )
        if len(found) > 1:
            raise PolicyError("several fields are tagged as the data-subject id: " + ", ".join(p for p, _, _ in found))
        return found[0] if found else None
