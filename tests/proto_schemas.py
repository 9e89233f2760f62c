"""Protobuf schemas built in the tests, no protoc needed: ``FileDescriptorProto``s in a fresh descriptor pool (with
confluent's ``meta.proto``), and their generated message classes.

    pool = files(file("shop.proto", "shop", [message("Customer", [field("email", 1, "string", tags=["PII"])])]))
    Customer = cls(pool, "shop.Customer")
"""

from __future__ import annotations

import itertools
from typing import Any

from confluent_kafka.schema_registry.confluent import meta_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": F.TYPE_STRING,
    "bytes": F.TYPE_BYTES,
    "int32": F.TYPE_INT32,
    "int64": F.TYPE_INT64,
    "bool": F.TYPE_BOOL,
    "double": F.TYPE_DOUBLE,
    "enum": F.TYPE_ENUM,
    "message": F.TYPE_MESSAGE,
}
_counter = itertools.count()


def field(
    name: str,
    number: int,
    kind: str,
    *,
    tags: list[str] | None = None,
    repeated: bool = False,
    type_name: str | None = None,
    oneof: int | None = None,
    optional: bool = False,
) -> F:
    fd = F(name=name, number=number, type=_TYPES[kind], label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name is not None:
        fd.type_name = type_name
    if oneof is not None:
        fd.oneof_index = oneof
    if optional:
        fd.proto3_optional = True
    if tags is not None:
        fd.options.Extensions[meta_pb2.field_meta].tags.extend(tags)
    return fd


def message(
    name: str,
    fields: list[F],
    *,
    nested: list[descriptor_pb2.DescriptorProto] = (),  # type: ignore[assignment]
    oneofs: list[str] = (),  # type: ignore[assignment]
    tags: list[str] | None = None,
    enums: list[descriptor_pb2.EnumDescriptorProto] = (),  # type: ignore[assignment]
) -> descriptor_pb2.DescriptorProto:
    d = descriptor_pb2.DescriptorProto(name=name)
    d.field.extend(fields)
    d.nested_type.extend(nested)
    d.enum_type.extend(enums)
    for o in oneofs:
        d.oneof_decl.add(name=o)
    if tags is not None:
        d.options.Extensions[meta_pb2.message_meta].tags.extend(tags)
    return d


def map_entry(name: str, key: str, value: str, value_type: str | None = None) -> descriptor_pb2.DescriptorProto:
    d = message(name, [field("key", 1, key), field("value", 2, value, type_name=value_type)])
    d.options.map_entry = True
    return d


def enum(name: str, values: list[str], *, tags: list[str] | None = None) -> descriptor_pb2.EnumDescriptorProto:
    e = descriptor_pb2.EnumDescriptorProto(name=name)
    for i, v in enumerate(values):
        e.value.add(name=v, number=i)
    if tags is not None:
        e.options.Extensions[meta_pb2.enum_meta].tags.extend(tags)
    return e


def file(
    name: str,
    package: str,
    messages: list[descriptor_pb2.DescriptorProto],
    *,
    deps: list[str] = (),  # type: ignore[assignment]
    tags: list[str] | None = None,
    enums: list[descriptor_pb2.EnumDescriptorProto] = (),  # type: ignore[assignment]
    extensions: list[F] = (),  # type: ignore[assignment]
) -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    f.dependency.extend(["confluent/meta.proto", *deps])
    f.message_type.extend(messages)
    f.enum_type.extend(enums)
    f.extension.extend(extensions)
    if tags is not None:
        f.options.Extensions[meta_pb2.file_meta].tags.extend(tags)
    return f


def files(*protos: descriptor_pb2.FileDescriptorProto) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding confluent's meta.proto (and descriptor.proto) and ``protos``, in order."""
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import descriptor_pb2 as d

    pool.AddSerializedFile(d.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(meta_pb2.DESCRIPTOR.serialized_pb)
    for p in protos:
        pool.Add(p)
    return pool


def cls(pool: descriptor_pool.DescriptorPool, full_name: str) -> Any:
    return GetMessageClass(pool.FindMessageTypeByName(full_name))


def unique(prefix: str) -> str:
    """A file name no other test's pool used (the registry's reference subjects are named by file)."""
    return f"{prefix}{next(_counter)}.proto"
