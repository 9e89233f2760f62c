"""The uses of confluent-kafka's private Protobuf serde API (the Protobuf quarantine module, docs/compatibility.md).

Parsing a registered schema with confluent's reference resolution (``_get_parsed_schema``: a ``DescriptorPool`` with
the well-known types, ``confluent/meta.proto`` and every reference fetched with ``format=serialized``), the
references a serializer registers before its schema (``_resolve_dependencies``), the schema text of a generated
class (``common.protobuf._schema_to_str``), and the Protobuf field transformer confluent's rule machinery runs
data-contract rules with (``common.protobuf.transform``). Checked by ``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common import protobuf as _protobuf
from confluent_kafka.schema_registry.confluent import meta_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from fieldcrypt.core.confluent import FieldRules, Transformer, bounded_tags
from fieldcrypt.errors import MalformedRecordError

__all__ = [
    "FORMAT_SERIALIZED",
    "META",
    "ParsedProto",
    "ParsedSchemas",
    "field_rules_for",
    "is_builtin",
    "is_map_field",
    "is_repeated",
    "local_parsed",
    "references",
    "schema_text",
]

#: the ``format`` every registry read of a Protobuf schema asks for: the base64 ``FileDescriptorProto`` confluent's
#: serdes parse (a Confluent registry answers ``.proto`` text otherwise)
FORMAT_SERIALIZED = "serialized"

#: confluent's ``confluent/meta.proto`` (``field_meta``, ``message_meta``, ``file_meta``, ``enum_meta``,
#: ``enum_value_meta``: extension 1088 of each options message); imported here so the extensions are registered
META = meta_pb2


@dataclass(frozen=True)
class ParsedProto:
    """A Protobuf schema as a pool of descriptors: ``file`` is the schema's own file, ``files`` it and the
    non-builtin files it imports (references), in dependency order."""

    file: FileDescriptor
    files: tuple[FileDescriptor, ...]
    _classes: dict[str, type[Message]] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def message(self, full_name: str) -> Descriptor | None:
        """The message type ``full_name`` among the schema's files, or None."""
        for f in self.files:
            found = _find(f, full_name)
            if found is not None:
                return found
        return None

    def by_indexes(self, indexes: Sequence[int], subject: str | None = None) -> Descriptor:
        """The message a record's message indexes name in the schema's own file (``[0]``: its first message)."""
        if not indexes:
            indexes = [0]
        types: Any = self.file.message_types_by_name
        messages = list(types.values())
        desc: Descriptor | None = None
        for depth, i in enumerate(indexes):
            if not isinstance(i, int) or i < 0 or i >= len(messages):
                what = "top-level message(s)" if depth == 0 else "nested message(s)"
                raise MalformedRecordError(
                    f"the record's message index {i} is out of range: the schema has {len(messages)} {what}",
                    subject=subject,
                )
            desc = messages[i]
            messages = list(desc.nested_types)
        assert desc is not None
        if desc.GetOptions().map_entry:  # a map's synthetic entry type: no record is one
            raise MalformedRecordError("the record's message indexes name a map entry, not a message", subject=subject)
        return desc

    def indexes_of(self, desc: Descriptor) -> list[int]:
        """The message indexes of ``desc`` in the schema's own file (confluent's ``_create_index_array``, computed
        against this schema, not a generated class's file)."""
        path: list[int] = []
        d: Descriptor | None = desc
        while d is not None:
            parent = d.containing_type
            siblings = (
                list(parent.nested_types) if parent is not None else list(self.file.message_types_by_name.values())
            )
            path.append([s.full_name for s in siblings].index(d.full_name))
            d = parent
        return path[::-1]

    def cls(self, desc: Descriptor) -> type[Message]:
        """The message class of ``desc`` (one per descriptor, made once)."""
        made = self._classes.get(desc.full_name)
        if made is None:
            made = self._classes[desc.full_name] = GetMessageClass(desc)
        return made


def _find(f: FileDescriptor, full_name: str) -> Descriptor | None:
    stack = list(f.message_types_by_name.values())
    while stack:
        d = stack.pop()
        if d.full_name == full_name:
            return d
        stack.extend(d.nested_types)
    return None


def is_builtin(name: str) -> bool:
    """Whether an imported file is one of the types confluent's pools provide (``google/protobuf/*``,
    ``google/type/*``, ``confluent/*``), never registered as a reference."""
    return bool(_protobuf._is_builtin(name))


def is_repeated(fd: Any) -> bool:
    """Whether a field is repeated (maps too), in every protobuf release confluent supports."""
    return bool(_protobuf._is_repeated(fd))


def is_map_field(fd: Any) -> bool:
    """Whether a field is a ``map<K, V>`` (a repeated message of map-entry type)."""
    return bool(_protobuf.is_map_field(fd))


def _parsed(file: FileDescriptor) -> ParsedProto:
    files: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(f: FileDescriptor) -> None:
        if f.name in seen:
            return
        seen.add(f.name)
        for dep in f.dependencies:
            if not is_builtin(dep.name):
                visit(dep)
        files.append(f)

    visit(file)
    files.remove(file)
    return ParsedProto(file, (file, *files))


def local_parsed(msg_type: type[Message]) -> ParsedProto:
    """A generated class's own file as a parsed schema (its imports are in the class's pool)."""
    return _parsed(msg_type.DESCRIPTOR.file)


def schema_text(msg_type: type[Message]) -> str:
    """The schema text confluent registers for a generated class: base64 of its serialized ``FileDescriptorProto``."""
    return str(_protobuf._schema_to_str(msg_type.DESCRIPTOR.file))


class ParsedSchemas:
    """Parse a registered schema with confluent's reference resolution (through the serde's registry client and its
    cache), as a :class:`ParsedProto`; ``local``: the serde's own schema, parsed from its generated class."""

    def __init__(self, serde: Any, local: tuple[Schema, ParsedProto] | None = None) -> None:
        self._serde = serde
        self._local = local
        self._cache: dict[tuple[str, tuple[tuple[str, str, str], ...]], ParsedProto] = {}

    def __call__(self, schema: Schema) -> ParsedProto:
        if self._local is not None and schema is self._local[0]:
            return self._local[1]
        refs = tuple(sorted((str(r.name), str(r.subject), str(r.version)) for r in schema.references or []))
        key = (str(schema.schema_str), refs)
        found = self._cache.get(key)
        if found is not None:
            return found
        bare = Schema(schema.schema_str, "PROTOBUF", schema.references or [])
        fd_proto, pool = self._serde._get_parsed_schema(bare)
        parsed = _parsed(pool.FindFileByName(fd_proto.name))
        if len(self._cache) < 1000:
            self._cache[key] = parsed
        return parsed


def references(serde: Any, ctx: Any, msg_type: type[Message]) -> list[Any]:
    """The references confluent's serializer registers (``auto.register.schemas``) or looks up for the imports of
    its generated class, before its own schema: one per non-builtin import, under the reference subject name
    strategy (default: the import's file name)."""
    return list(serde._resolve_dependencies(ctx, msg_type.DESCRIPTOR.file))


def field_rules_for(root: str, reproject: Callable[[Message], Any] | None = None) -> FieldRules:
    """confluent's Protobuf field transformer for records of message type ``root`` (``common.protobuf.transform``
    over the schema's descriptor of that message), as a :data:`fieldcrypt.core.confluent.FieldRules`. The record it
    runs on is a message, or a projection of one (``fieldcrypt.protobuf.project.Projection``, when a Confluent CSFLE
    record is read: ``core.serde.decrypt_record`` hands the engine's record to confluent's ENCRYPT executor), whose
    message is transformed and projected again with ``reproject``."""

    def rules(serde: Any, schema: Schema, parsed: Any) -> tuple[Transformer, Any]:
        desc = ParsedSchemas(serde)(schema).message(root)
        if desc is None:
            raise MalformedRecordError(f"the schema has no message {root}")

        def transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
            if isinstance(msg, Message):
                return _protobuf.transform(bounded_tags(rule_ctx), desc, msg, field_transform)
            inner = getattr(msg, "message", None)
            if reproject is None or not isinstance(inner, Message):
                raise TypeError("confluent's Protobuf rules run on messages")
            return reproject(_protobuf.transform(bounded_tags(rule_ctx), desc, inner, field_transform))

        return transformer, None

    return rules
