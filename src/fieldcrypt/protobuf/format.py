"""Protobuf as a :class:`fieldcrypt.core.format.SchemaFormat` (registered in ``fieldcrypt.formats``): its parser,
policy compiler, decoder, record walker and schema-lint shapes, built from this folder's modules.

A Protobuf schema is a file of messages; lint, scan and verify plan its first message (confluent's message index
``[0]``, what a topic's records are in the usual one-message-per-schema layout). A record of another message of the
file is reported as undecodable by scan, never read against the wrong plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as _PlainDeserializer
from google.protobuf import empty_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from fieldcrypt.core.format import Raw, Undecodable, ValueShape, Visit, Walker, text
from fieldcrypt.core.plan import FieldPlan, TagCollector, TagRules
from fieldcrypt.errors import MalformedRecordError
from fieldcrypt.protobuf.confluent import FORMAT_SERIALIZED, ParsedProto, ParsedSchemas, is_map_field, is_repeated
from fieldcrypt.protobuf.policy import compile_protobuf, field_kind
from fieldcrypt.protobuf.project import unknown_fields
from fieldcrypt.protobuf.serde import ProtobufDeserializer, ProtobufSerializer, message_tree, read_indexes

__all__ = ["FORMAT", "ProtobufFormat", "walk_protobuf"]


def walk_protobuf(desc: Descriptor, record: Any, visit: Visit, raw: Raw | None = None) -> None:
    """Every text of a decoded Protobuf record (``message_tree``: string and bytes values, map keys) with its field
    path: ``.name`` a declared field, ``[]`` repeated items, ``[*]`` map values, ``(keys)`` map keys."""

    def walk(d: Descriptor, v: Any, path: str, at: tuple[Any, ...]) -> None:
        if not isinstance(v, dict):
            return
        for fd in d.fields:
            if fd.name not in v:
                continue
            x = v[fd.name]
            where, pos = f"{path}.{fd.name}", (*at, fd.name)
            if is_map_field(fd) and isinstance(x, dict):
                value = fd.message_type.fields_by_name["value"]
                for k, item in x.items():
                    if fd.message_type.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
                        visit(k, f"{where}(keys)", None)
                    one(value, item, f"{where}[*]", (*pos, k))
            elif is_repeated(fd) and isinstance(x, list):
                for i, item in enumerate(x):
                    one(fd, item, f"{where}[]", (*pos, i))
            else:
                one(fd, x, where, pos)

    def one(fd: FieldDescriptor, v: Any, path: str, at: tuple[Any, ...]) -> None:
        if fd.message_type is not None:
            walk(fd.message_type, v, path, at)
        elif isinstance(v, (str, bytes)):
            text(v, path, at, visit, raw)

    walk(desc, record, "$", ())


_OUTCOME_KEYS = ("fieldcrypt.on.erased", "fieldcrypt.on.denied")


def _first(parsed: ParsedProto) -> Descriptor:
    return parsed.by_indexes([0])


class ProtobufFormat:
    """Protobuf (``schemaType`` PROTOBUF; schemas read with ``format=serialized``)."""

    name = "Protobuf"
    schema_type = "PROTOBUF"
    key = "protobuf"
    #: no file suffix: lint reads Protobuf schemas from the registry (a .proto needs protoc), or a file holding the
    #: base64 FileDescriptorProto the registry serves with format=serialized (--type protobuf)
    suffixes: tuple[str, ...] = ()
    serializer: type = ProtobufSerializer
    deserializer: type = ProtobufDeserializer
    #: the ``format`` registry reads of a Protobuf schema ask for (what ``parser`` reads); the tools read schemas so
    registry_format = FORMAT_SERIALIZED

    def parser(self, registry: SchemaRegistryClient | None, *, writing: bool) -> Callable[[Schema], Any]:
        return ParsedSchemas(_PlainDeserializer(empty_pb2.Empty, {"use.deprecated.format": False}, registry))

    def compile(self, parsed: Any, rules: TagRules, collector: TagCollector | None = None) -> FieldPlan:
        # schema lint (a collector) reports every message's fields; scan and verify plan the first message
        return compile_protobuf(parsed, rules, collector, every_message=collector is not None)

    def refusals(self, parsed: Any) -> Sequence[tuple[str, str, str]]:
        return ()

    def deserializer_for(self, registry: SchemaRegistryClient, conf: Mapping[str, Any], keyring: Any) -> Any:
        # a message cannot hold marker objects: the tools count outcomes from the deserializer's stats
        conf = {k: ("placeholder" if k in _OUTCOME_KEYS and v == "marker" else v) for k, v in conf.items()}
        return ProtobufDeserializer(None, {"use.deprecated.format": False, **conf}, registry, keyring=keyring)

    def decode(self, parsed: Any, payload: bytes, *, named: bool, schema_id: int | str, subject: str | None) -> Any:
        try:
            indexes, body = read_indexes(payload)
            desc = parsed.by_indexes(indexes)
        except MalformedRecordError as exc:
            raise Undecodable(f"schema id {schema_id}: {exc.reason}") from None
        first = _first(parsed)
        if desc.full_name != first.full_name:
            raise Undecodable(
                f"schema id {schema_id}: the record is a {desc.full_name}, not the schema's first message "
                f"{first.full_name}, which fieldcrypt's scan and verify plan"
            )
        try:
            work = parsed.cls(desc).FromString(body)
        except DecodeError:
            raise Undecodable(f"the record does not decode with schema id {schema_id}") from None
        if unknown_fields(work):
            raise Undecodable(f"schema id {schema_id}: the record holds fields its schema does not declare")
        return message_tree(work)

    def walker(self, parsed: Any) -> Walker:
        desc = _first(parsed)
        return lambda record, visit, raw: walk_protobuf(desc, record, visit, raw)

    def shape(self, calls: list[tuple[Any, ...]]) -> ValueShape:
        fds = [s for call in calls for s in call if isinstance(s, FieldDescriptor)]
        if not fds:
            return ValueShape("-", False, False)
        fd = fds[-1]
        kind = field_kind(fd)
        return ValueShape(kind, fd.message_type is not None, kind in ("string", "bytes"))

    def names(self, path: str, parsed: Any) -> tuple[str, str] | None:
        parts = path.rsplit(".", 2)
        return (parts[-1], parts[-2] if len(parts) >= 2 else "") if path else None

    def explain(self, exc: Exception, schema: Schema) -> BaseException:
        return exc


FORMAT = ProtobufFormat()
