"""fieldcrypt's twins of confluent 2.16's serde builders (``value.serializer.builder`` and friends): confluent's
setters plus ``keyring=``, building fieldcrypt's serdes, including inside confluent's asyncio producer and consumer
on a real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, SchemaRegistryClient
from conftest import customer, load_schema, value_ctx

from fieldcrypt import Keyring
from fieldcrypt.avro import (
    AsyncAvroDeserializerBuilder,
    AsyncAvroSerializer,
    AsyncAvroSerializerBuilder,
    AvroDeserializer,
    AvroDeserializerBuilder,
    AvroSerializer,
    AvroSerializerBuilder,
)
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.json_schema import (
    AsyncJSONDeserializerBuilder,
    AsyncJSONSerializerBuilder,
    JSONDeserializer,
    JSONDeserializerBuilder,
    JSONSerializer,
    JSONSerializerBuilder,
)


def test_sync_builders_build_fieldcrypt_serdes(keyring: Keyring) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    for ser_builder, de_builder, ser_cls, de_cls, schema in (
        (AvroSerializerBuilder, AvroDeserializerBuilder, AvroSerializer, AvroDeserializer, "customer_event.avsc"),
        (
            JSONSerializerBuilder,
            JSONDeserializerBuilder,
            JSONSerializer,
            JSONDeserializer,
            "customer_event.schema.json",
        ),
    ):
        conf = {"bootstrap.servers": "x"}
        ser, rest = (
            ser_builder(keyring=keyring)
            .set_schema_registry_client(registry)
            .set_schema(load_schema(schema))
            .build(conf, False)
        )
        de, _ = de_builder(schema_registry_client=registry).set_keyring(keyring).build(conf, False)
        assert type(ser) is ser_cls and type(de) is de_cls and rest == conf
        data = ser(customer(1), value_ctx(schema))  # (a topic per format: one subject holds one format's schemas)
        assert b"person1@example.com" not in data
        assert de(data, value_ctx(schema)) == customer(1)


def test_a_builder_without_a_keyring_is_refused() -> None:
    builder = AvroSerializerBuilder(schema_registry_client=SchemaRegistryClient.new_client({"url": "mock://x"}))
    with pytest.raises(ConfigurationError, match="keyring"):
        builder.set_schema(load_schema("customer_event.avsc")).build({}, False)


def test_async_builders_build_fieldcrypt_serdes(keyring: Keyring) -> None:
    async def main() -> None:
        registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        for ser_builder, de_builder, schema in (
            (AsyncAvroSerializerBuilder, AsyncAvroDeserializerBuilder, "customer_event.avsc"),
            (AsyncJSONSerializerBuilder, AsyncJSONDeserializerBuilder, "customer_event.schema.json"),
        ):
            ser, _ = await ser_builder(
                schema_registry_client=registry, schema=load_schema(schema), keyring=keyring
            ).build({}, False)
            de, _ = await de_builder(schema_registry_client=registry, keyring=keyring).build({}, False)
            assert ser.__module__.startswith("fieldcrypt.") and de.__module__.startswith("fieldcrypt.")
            data = await ser(customer(2), value_ctx(schema))
            assert b"person2@example.com" not in data
            assert await de(data, value_ctx(schema)) == customer(2)

    asyncio.run(main())


@pytest.mark.broker
def test_confluents_asyncio_producer_and_consumer_build_the_twins(broker: Any, keyring: Keyring) -> None:
    """As confluent documents its asyncio clients: the serdes given as builders in the client's configuration."""
    from confluent_kafka.aio import AsyncDeserializingConsumer, AsyncSerializingProducer
    from confluent_kafka.serialization import StringDeserializer, StringSerializer

    from fieldcrypt._testing.broker import CONSUMER_DEFAULTS

    topic = f"builders-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    schema = load_schema("customer_event.avsc")

    async def main() -> list[Any]:
        registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})  # one, shared
        producer = await AsyncSerializingProducer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "key.serializer": StringSerializer(),
                "value.serializer.builder": AsyncAvroSerializerBuilder(
                    schema_registry_client=registry, schema=schema, keyring=keyring
                ),
            }
        )
        for i in range(3):
            await producer.produce(topic, key=f"cust-{i}", value=customer(i))
        await producer.flush()
        await producer.close()
        consumer = await AsyncDeserializingConsumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": f"builders-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "key.deserializer": StringDeserializer(),
                "value.deserializer.builder": AsyncAvroDeserializerBuilder(
                    schema_registry_client=registry, keyring=keyring
                ),
                **CONSUMER_DEFAULTS,
            }
        )
        values: list[Any] = []
        try:
            await consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            while len(values) < 3 and time.monotonic() < deadline:
                msg = await consumer.poll(1.0)
                if msg is not None and not msg.error():
                    values.append(msg.value())
        finally:
            await consumer.close()
        return values

    values = asyncio.run(main())
    assert sorted(values, key=lambda v: v["customerId"]) == [customer(i) for i in range(3)]


def test_a_builder_with_a_registry_conf_owns_the_client_it_makes(keyring: Keyring) -> None:
    """As confluent's builders: from ``schema_registry_config`` the serde makes its own client (and closes it)."""

    async def main() -> Any:
        builder = AsyncAvroSerializerBuilder(
            schema_registry_config={"url": f"mock://{uuid.uuid4().hex}"},
            schema=load_schema("customer_event.avsc"),
            keyring=keyring,
        )
        ser, _ = await builder.build({}, False)
        assert isinstance(ser, AsyncAvroSerializer)
        data = await ser(customer(3), value_ctx())
        await ser.aclose()
        return data

    assert b"person3@example.com" not in asyncio.run(main())
