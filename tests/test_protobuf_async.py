"""The Protobuf asyncio twins (AsyncProtobufSerializer/Deserializer): the sync twins' record work on the event loop.
What a user relies on: the same bytes and outcomes as the sync twins, each reading the other's output, references
(imports) registered through the async client, and an event loop that never waits on the key store."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt import Keyring
from fieldcrypt.errors import ConfigurationError, PolicyError
from fieldcrypt.protobuf import (
    AsyncProtobufDeserializer,
    AsyncProtobufSerializer,
    ProtobufDeserializer,
    ProtobufSerializer,
)
from tests.proto_schemas import cls, field, file, files, message, unique

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "protobuf"))
import customer_pb2

CONF = {"use.deprecated.format": False}


def ctx() -> SerializationContext:
    return SerializationContext("customers", MessageField.VALUE)


def _clients() -> tuple[SchemaRegistryClient, AsyncSchemaRegistryClient]:
    url = f"mock://{uuid.uuid4().hex}"
    return SchemaRegistryClient.new_client({"url": url}), AsyncSchemaRegistryClient.new_client({"url": url})


def customer(i: int) -> Any:
    c = customer_pb2.Customer(id=f"c-{i}", email=f"p{i}@example.com", name="Ann", aliases=["a", "b"], pager="5")
    c.contacts["work"] = f"w{i}@example.com"
    c.address.street = "1 High Street"
    return c


def test_async_and_sync_twins_write_equal_bytes_and_read_each_other(keyring: Keyring) -> None:
    sync_registry, async_registry = _clients()
    sync_ser = ProtobufSerializer(customer_pb2.Customer, sync_registry, CONF, keyring=keyring)
    sync_de = ProtobufDeserializer(customer_pb2.Customer, CONF, sync_registry, keyring=keyring)
    msg = customer(7)
    before = msg.SerializeToString()

    async def main() -> None:
        ser = await AsyncProtobufSerializer(customer_pb2.Customer, async_registry, CONF, keyring=keyring)
        de = await AsyncProtobufDeserializer(customer_pb2.Customer, CONF, async_registry, keyring=keyring)
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=bytes(range(12))):
            theirs = sync_ser(msg, ctx())
            ours = await ser(msg, ctx())
        assert ours == theirs  # the same record work: the same bytes with the same random source
        assert b"p7@example.com" not in ours
        assert await de(theirs, ctx()) == msg
        assert sync_de(await ser(customer(8), ctx()), ctx()) == customer(8)
        assert msg.SerializeToString() == before  # the caller's message is never changed
        assert ser.stats.values == 2 * sync_ser.stats.values and ser.stats.records == 2

    asyncio.run(main())


def test_async_twins_register_references_and_refuse_bad_tags(keyring: Keyring) -> None:
    """An imported file is a reference: registered (auto.register.schemas) through the async client first."""
    common = file(unique("common"), "lib", [message("Address", [field("street", 1, "string", tags=["PII"])])])
    root = file(
        unique("order"),
        "shop",
        [message("Order", [field("ship_to", 1, "message", type_name=".lib.Address"), field("note", 2, "string")])],
        deps=[common.name],
    )
    pool = files(common, root)
    Order = cls(pool, "shop.Order")
    _, registry = _clients()

    async def main() -> None:
        ser = await AsyncProtobufSerializer(Order, registry, CONF, keyring=keyring)
        de = await AsyncProtobufDeserializer(Order, CONF, registry, keyring=keyring)
        order = Order(note="leave at door")
        order.ship_to.street = "1 High Street"
        data = await ser(order, ctx())
        assert b"1 High Street" not in data and b"leave at door" in data
        assert await de(data, ctx()) == order
        assert await registry.get_subjects() == sorted([common.name, "customers-value"])
        bad = cls(files(file(unique("bad"), "b", [message("M", [field("n", 1, "int32", tags=["PII"])])])), "b.M")
        with pytest.raises(PolicyError, match="int32"):
            await AsyncProtobufSerializer(bad, registry, CONF, keyring=keyring)
        with pytest.raises(ConfigurationError, match="marker"):
            await AsyncProtobufDeserializer(
                Order, {**CONF, "fieldcrypt.on.denied": "marker"}, registry, keyring=keyring
            )

    asyncio.run(main())


def test_the_loop_never_waits_on_a_slow_key_store(keyring: Keyring, caplog: pytest.LogCaptureFixture) -> None:
    """Cold lookups of new people, concurrently, with a key store 0.2 s slow per call: the store is only ever called
    off the event loop's thread, through the keyring's async door (not the fallback moving a whole call off it)."""
    from tests.test_async_serde import _max_stall, _SlowStore

    _, registry = _clients()
    caplog.set_level(logging.DEBUG, logger="fieldcrypt.serde")

    async def main() -> None:
        ser = await AsyncProtobufSerializer(customer_pb2.Customer, registry, CONF, keyring=keyring)
        de = await AsyncProtobufDeserializer(customer_pb2.Customer, CONF, registry, keyring=keyring)
        await ser(customer(0), ctx())  # the schema registered, its policy recorded
        slow = keyring.store = _SlowStore(keyring.store, 0.2)
        loop_thread = threading.get_ident()
        written, stall = await _max_stall(lambda: asyncio.gather(*(ser(customer(i), ctx()) for i in range(1, 11))))
        assert slow.calls and loop_thread not in slow.threads
        assert stall < 0.15, f"the loop stalled {stall:.3f} s"
        keyring.clear_cache()
        read, stall = await _max_stall(lambda: asyncio.gather(*(de(d, ctx()) for d in written)))
        assert read == [customer(i) for i in range(1, 11)]
        assert loop_thread not in slow.threads and stall < 0.15

    asyncio.run(main())
    assert not [r for r in caplog.records if getattr(r, "event", None) == "serde.off_loop"]


def test_protobuf_builders_build_fieldcrypt_serdes(keyring: Keyring) -> None:
    from fieldcrypt.protobuf import (
        AsyncProtobufDeserializerBuilder,
        AsyncProtobufSerializerBuilder,
        ProtobufDeserializerBuilder,
        ProtobufSerializerBuilder,
    )

    sync_registry, async_registry = _clients()
    conf = {"bootstrap.servers": "x"}
    ser, rest = (
        ProtobufSerializerBuilder(keyring=keyring, serializer_config=CONF)
        .set_schema_registry_client(sync_registry)
        .set_message_type(customer_pb2.Customer)
        .build(conf, False)
    )
    de, _ = (
        ProtobufDeserializerBuilder(schema_registry_client=sync_registry, message_type=customer_pb2.Customer)
        .set_deserializer_config(CONF)
        .set_keyring(keyring)
        .build(conf, False)
    )
    assert type(ser) is ProtobufSerializer and type(de) is ProtobufDeserializer and rest == conf
    data = ser(customer(1), ctx())
    assert b"p1@example.com" not in data and de(data, ctx()) == customer(1)
    with pytest.raises(ConfigurationError, match="keyring"):
        ProtobufSerializerBuilder(schema_registry_client=sync_registry, message_type=customer_pb2.Customer).build(
            conf, False
        )

    async def main() -> None:
        aser, _ = await AsyncProtobufSerializerBuilder(
            schema_registry_client=async_registry, message_type=customer_pb2.Customer, serializer_config=CONF,
            keyring=keyring,
        ).build(conf, False)  # fmt: skip
        ade, _ = await AsyncProtobufDeserializerBuilder(
            schema_registry_client=async_registry, message_type=customer_pb2.Customer, deserializer_config=CONF,
            keyring=keyring,
        ).build(conf, False)  # fmt: skip
        assert type(aser) is AsyncProtobufSerializer and type(ade) is AsyncProtobufDeserializer
        assert await ade(await aser(customer(2), ctx()), ctx()) == customer(2)

    asyncio.run(main())
