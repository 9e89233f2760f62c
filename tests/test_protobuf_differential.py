"""fieldcrypt's Protobuf twins side by side with confluent's own classes, in one process: on schemas without tags
the bytes are confluent's, byte for byte, and every way of choosing the schema written registers and frames the
same; each side reads the other's records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, header_schema_id_serializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as PlainDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as PlainSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt import Keyring
from fieldcrypt.protobuf import ProtobufDeserializer, ProtobufSerializer
from tests.proto_schemas import cls, field, file, files, map_entry, message, unique

CONF = {"use.deprecated.format": False}


def _schema() -> tuple[Any, Any]:
    """An untagged schema with an import (a reference), a nested type, a map, a oneof and a second message."""
    common = file(unique("common"), "lib", [message("Money", [field("units", 1, "int64"), field("cur", 2, "string")])])
    order = message(
        "Order",
        [
            field("id", 1, "string"),
            field("total", 2, "message", type_name=".lib.Money"),
            field("lines", 3, "message", type_name=".shop.Order.Line", repeated=True),
            field("attrs", 4, "message", type_name=".shop.Order.AttrsEntry", repeated=True),
            field("note", 5, "string", oneof=0),
            field("code", 6, "int32", oneof=0),
        ],
        nested=[message("Line", [field("sku", 1, "string")]), map_entry("AttrsEntry", "string", "string")],
        oneofs=["choice"],
    )
    other = message("Refund", [field("order_id", 1, "string")])
    pool = files(common, file(unique("shop"), "shop", [order, other], deps=[common.name]))
    return cls(pool, "shop.Order"), cls(pool, "shop.Refund")


def _order(Order: Any) -> Any:
    o = Order(id="o-1", note="leave at door")
    o.total.units, o.total.cur = 12, "EUR"
    o.lines.add(sku="A-1")
    o.attrs["gift"] = "yes"
    return o


@pytest.mark.parametrize("mode", ["auto-register", "header", "second message"])
def test_untagged_records_are_confluents_bytes(keyring: Keyring, mode: str) -> None:
    url = f"mock://{uuid.uuid4().hex}"
    theirs_registry = SchemaRegistryClient.new_client({"url": url})
    ours_registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    Order, Refund = _schema()
    conf = dict(CONF)
    if mode == "header":
        conf["schema.id.serializer"] = header_schema_id_serializer
    msg_type, msg = (Refund, Refund(order_id="o-1")) if mode == "second message" else (Order, _order(Order))
    ctx_theirs = SerializationContext("orders", MessageField.VALUE, [])
    ctx_ours = SerializationContext("orders", MessageField.VALUE, [])
    theirs = PlainSerializer(msg_type, theirs_registry, conf)(msg, ctx_theirs)
    ours = ProtobufSerializer(msg_type, ours_registry, conf, keyring=keyring)(msg, ctx_ours)
    if mode == "header":  # a GUID per registry: compare the header's shape and the body
        assert ctx_ours.headers[0][0] == ctx_theirs.headers[0][0]
    else:
        assert ours == theirs
    assert theirs_registry.get_subjects() == ours_registry.get_subjects()  # the reference registered too
    assert PlainDeserializer(msg_type, CONF, ours_registry)(ours, ctx_ours) == msg
    assert ProtobufDeserializer(msg_type, CONF, theirs_registry, keyring=keyring)(theirs, ctx_theirs) == msg


def test_latest_and_lookup_modes_frame_like_confluent(keyring: Keyring) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    Order, _ = _schema()
    PlainSerializer(Order, registry, CONF)(_order(Order), SerializationContext("orders", MessageField.VALUE))
    for extra in ({"auto.register.schemas": False, "use.latest.version": True}, {"auto.register.schemas": False}):
        conf = {**CONF, **extra}
        ctx = SerializationContext("orders", MessageField.VALUE)
        theirs = PlainSerializer(Order, registry, conf)(_order(Order), ctx)
        ours = ProtobufSerializer(Order, registry, conf, keyring=keyring)(_order(Order), ctx)
        assert ours == theirs, extra
