"""Issue 15 item 8: every deserializer failure is a FieldcryptError, and a consumer can tell a record that names a
schema the registry does not hold (the record is bad: skip it) from a registry it cannot reach (retry: never skip).

Written from the attack: fuzzed records with one bit flipped in the schema id raised confluent's own
``SchemaRegistryError`` from the writer-schema lookup, outside the error wrapping, so a consumer catching
``FieldcryptError`` crashed."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    header_schema_id_serializer,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import customer, load_schema, value_ctx

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.errors import (
    ConfigurationError,
    FieldcryptError,
    MalformedRecordError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

AVRO = load_schema("customer_event.avsc")
JSON = load_schema("customer_event.schema.json")
#: the registry client's retries kept short, so an outage is reported in well under a second
FAST = {"max.retries": 1, "retries.wait.ms": 10, "retries.max.wait.ms": 20, "timeout": 2}
#: the subject from the topic, without confluent's default association lookup (one more registry request)
TOPIC = {"subject.name.strategy": topic_subject_name_strategy}


def json_customer(i: int = 1) -> dict[str, Any]:
    rec = customer(i)
    rec["purchaseAmount"] = float(rec["purchaseAmount"])
    return rec


def write(fmt: str, registry: SchemaRegistryClient, keyring: Keyring, topic: str = "orders") -> bytes:
    if fmt == "avro":
        return AvroSerializer(registry, AVRO, keyring=keyring)(customer(1), value_ctx(topic))  # type: ignore[return-value]
    return JSONSerializer(JSON, registry, keyring=keyring)(json_customer(1), value_ctx(topic))  # type: ignore[return-value]


def reader(fmt: str, registry: SchemaRegistryClient, keyring: Keyring, **conf: Any) -> Any:
    if fmt == "avro":
        return AvroDeserializer(registry, conf=conf or None, keyring=keyring)
    return JSONDeserializer(None, schema_registry_client=registry, conf=conf or None, keyring=keyring)


def with_id(data: bytes, schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + data[5:]


def mock() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeRegistry:
    """A registry-shaped HTTP server whose answer the test sets: ``status`` and ``body`` for every request, or,
    with ``schema`` set and ``status`` 200, that schema for ``GET /schemas/ids/1``. Counts the requests."""

    def __init__(self) -> None:
        self.status = 500
        self.body: Any = {"error_code": 50001, "message": "store error"}
        self.schema: tuple[str, str] | None = None  # (schema text, schema type)
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests += 1
                status, body = fake.status, fake.body
                if status == 200 and fake.schema is not None:
                    if self.path.split("?")[0] == "/schemas/ids/1":
                        body = {"schema": fake.schema[0], "schemaType": fake.schema[1], "id": 1}
                    else:
                        status, body = 404, {"error_code": 40403, "message": "Schema not found"}
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def client(self) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": self.url, **FAST})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    try:
        yield server
    finally:
        server.close()


FORMATS = ("avro", "json")


# -- a record naming a schema that does not exist: the record is bad --------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_flipped_schema_id_is_an_unknown_schema_in_the_fieldcrypt_tree(fmt: str, keyring: Keyring) -> None:
    registry = mock()
    data = write(fmt, registry, keyring)
    schema_id = int.from_bytes(data[1:5], "big")
    de = reader(fmt, registry, keyring)
    for bit in range(31):  # every flip of the 31 bits an id has that names no schema of this registry
        flipped = schema_id ^ (1 << bit)
        with pytest.raises(UnknownSchemaError) as caught:
            de(with_id(data, flipped), value_ctx())
        assert isinstance(caught.value, MalformedRecordError) and isinstance(caught.value, FieldcryptError)
        assert f"schema id {flipped}" in str(caught.value) and caught.value.subject == "orders-value"
        assert isinstance(caught.value.__cause__, SchemaRegistryError)  # the registry's answer, chained
    assert de.stats.errors_by_type == {"UnknownSchemaError": 31}
    assert de(data, value_ctx()) == (customer(1) if fmt == "avro" else json_customer(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_id_no_registry_can_hold_is_refused_without_asking(fmt: str, keyring: Keyring) -> None:
    """Registry ids are Java ints: an id with the top bit set names nothing (a Confluent registry answers such a
    path with a plain 404, which would otherwise read as 'not a registry'). No request is made."""
    data = write(fmt, mock(), keyring)
    unreachable = SchemaRegistryClient({"url": f"http://127.0.0.1:{closed_port()}", **FAST})
    de = reader(fmt, unreachable, keyring, **TOPIC)
    started = time.monotonic()
    with pytest.raises(UnknownSchemaError, match=r"schema id 2147483649\b"):
        de(with_id(data, 2**31 + 1), value_ctx())
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_schema_id_over_http(fmt: str, http_registry: Any, keyring: Keyring) -> None:
    client = SchemaRegistryClient({"url": http_registry.url, **FAST})
    topic = f"t-{uuid.uuid4().hex[:8]}"
    data = write(fmt, client, keyring, topic)
    with pytest.raises(UnknownSchemaError, match=r"schema id 1000000\b.*HTTP 404, error code 40403"):
        reader(fmt, SchemaRegistryClient({"url": http_registry.url}), keyring)(with_id(data, 10**6), value_ctx(topic))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_schema_guid_in_a_header(fmt: str, keyring: Keyring) -> None:
    registry = mock()
    ctx = SerializationContext("h", MessageField.VALUE, [])
    conf = {"schema.id.serializer": header_schema_id_serializer}
    if fmt == "avro":
        data = AvroSerializer(registry, AVRO, conf=conf, keyring=keyring)(customer(1), ctx)
    else:
        data = JSONSerializer(JSON, registry, conf=conf, keyring=keyring)(json_customer(1), ctx)
    [(name, guid)] = ctx.headers
    forged = SerializationContext("h", MessageField.VALUE, [(name, guid[:-1] + bytes([guid[-1] ^ 1]))])
    with pytest.raises(UnknownSchemaError, match="schema GUID"):
        reader(fmt, registry, keyring)(data, forged)


# -- a registry that cannot be reached: retryable, never a bad record -------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_registry_that_is_down_is_unavailable(fmt: str, keyring: Keyring) -> None:
    data = write(fmt, mock(), keyring)
    de = reader(fmt, SchemaRegistryClient({"url": f"http://127.0.0.1:{closed_port()}", **FAST}), keyring)
    started = time.monotonic()
    with pytest.raises(SchemaRegistryUnavailableError, match="did not answer") as caught:
        de(data, value_ctx())  # confluent's default subject strategy asks first: either lookup, the same error
    assert caught.value.status is None and not isinstance(caught.value, MalformedRecordError)
    assert time.monotonic() - started < 5
    assert de.stats.errors_by_type == {"SchemaRegistryUnavailableError": 1}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", [500, 503, 429, 401, 403])
def test_registry_errors_and_refused_credentials_are_unavailable(
    fmt: str, status: int, fake: FakeRegistry, keyring: Keyring
) -> None:
    data = with_id(write(fmt, mock(), keyring), 1)
    fake.status, fake.body = status, {"error_code": status * 100 + 1, "message": "no"}
    with pytest.raises(SchemaRegistryUnavailableError, match=f"HTTP {status}") as caught:
        reader(fmt, fake.client(), keyring, **TOPIC)(data, value_ctx())
    assert caught.value.status == status and "schema id 1" in str(caught.value)
    retried = status not in (401, 403)
    assert fake.requests == (FAST["max.retries"] + 1 if retried else 1)  # confluent's client retried 5xx and 429


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_good_record_refused_during_an_outage_reads_once_the_registry_is_back(
    fmt: str, fake: FakeRegistry, keyring: Keyring
) -> None:
    """A consumer must not skip good records during a registry outage: the same bytes read after it."""
    registry = mock()
    data = write(fmt, registry, keyring)
    source = registry.get_schema(int.from_bytes(data[1:5], "big"))
    fake.schema = (source.schema_str, source.schema_type or "AVRO")
    de = reader(fmt, fake.client(), keyring)
    record = with_id(data, 1)
    with pytest.raises(SchemaRegistryUnavailableError):
        de(record, value_ctx())
    fake.status = 200
    assert de(record, value_ctx()) == (customer(1) if fmt == "avro" else json_customer(1))


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b"<html>Not Found</html>"), (404, {"error_code": 404, "message": "HTTP 404 Not Found"}), (400, {})],
    ids=["html-404", "plain-404", "400"],
)
def test_a_server_that_is_not_a_registry_is_a_configuration_error(
    status: int, body: Any, fake: FakeRegistry, keyring: Keyring
) -> None:
    """A 404 without a registry error code is a wrong URL, not a bad record: a consumer that skipped every record
    then would lose them all."""
    fake.status, fake.body = status, body
    data = with_id(write("avro", mock(), keyring), 1)
    with pytest.raises(ConfigurationError):
        reader("avro", fake.client(), keyring)(data, value_ctx())


def test_a_registry_answering_200_with_something_else_is_a_configuration_error(
    fake: FakeRegistry, keyring: Keyring
) -> None:
    fake.status, fake.body = 200, [1, 2, 3]
    data = with_id(write("avro", mock(), keyring), 1)
    with pytest.raises(ConfigurationError, match="not a schema registry's"):
        reader("avro", fake.client(), keyring)(data, value_ctx())


# -- use.latest.version: the reader schema the consumer's settings name -----------------------------------------


class LatestFails(type(mock())):  # type: ignore[misc]
    """confluent's mock registry whose latest-version lookup fails as told."""

    fail: BaseException | None = None

    def get_latest_version(self, subject_name: str, fmt: str | None = None) -> Any:
        if self.fail is not None:
            raise self.fail
        return super().get_latest_version(subject_name, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_latest_version_lookups(fmt: str, keyring: Keyring) -> None:
    registry = LatestFails({"url": f"mock://{uuid.uuid4().hex}"})
    data = write(fmt, registry, keyring)
    de = reader(fmt, registry, keyring, **{"use.latest.version": True})
    assert de(data, value_ctx()) is not None
    registry.fail = SchemaRegistryError(503, 50301, "unavailable")
    with pytest.raises(SchemaRegistryUnavailableError, match=r"reader schema of subject 'orders-value'.*HTTP 503"):
        de(data, value_ctx())
    from confluent_kafka.schema_registry.common._httpx_compat import httpx

    registry.fail = httpx.ConnectError("refused")
    with pytest.raises(SchemaRegistryUnavailableError, match="did not answer"):
        de(data, value_ctx())
    registry.fail = SchemaRegistryError(404, 40401, "Subject not found")
    with pytest.raises(ConfigurationError, match="does not hold the reader schema of subject 'orders-value'"):
        de(data, value_ctx())


@contextmanager
def registry_refusing_references() -> Iterator[tuple[SchemaRegistryClient, list[Any]]]:
    fails: list[Any] = []

    class Refusing(type(mock())):  # type: ignore[misc]
        def get_version(self, *args: Any, **kwargs: Any) -> Any:
            if fails:
                raise fails[0]
            return super().get_version(*args, **kwargs)

    yield Refusing({"url": f"mock://{uuid.uuid4().hex}"}), fails


def test_a_referenced_schema_the_registry_cannot_give(keyring: Keyring) -> None:
    """Resolving the writer schema's references asks the registry too: an outage there is unavailable, a missing
    reference is a schema this consumer cannot read (PolicyError), never a raw SchemaRegistryError."""
    from confluent_kafka.schema_registry import SchemaReference

    from fieldcrypt.errors import PolicyError

    contact = {"type": "record", "name": "Contact", "namespace": "ex", "fields": [{"name": "n", "type": "string"}]}
    event = {"type": "record", "name": "Event", "namespace": "ex", "fields": [{"name": "c", "type": "ex.Contact"}]}
    for failure, error in [
        (SchemaRegistryError(500, 50001, "store error"), SchemaRegistryUnavailableError),
        (SchemaRegistryError(404, 40402, "Version not found"), PolicyError),
    ]:
        with registry_refusing_references() as (registry, fails):
            registry.register_schema("ex.Contact", Schema(json.dumps(contact), "AVRO"))
            ref = [SchemaReference("ex.Contact", "ex.Contact", 1)]
            schema_id = registry.register_schema("orders-value", Schema(json.dumps(event), "AVRO", ref))
            fails.append(failure)
            with pytest.raises(error, match="a schema that schema id"):
                AvroDeserializer(registry, keyring=keyring)(with_id(b"\x00" * 5 + b"\x02n", schema_id), value_ctx())


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_schema_guid_over_http_is_a_bad_record(fmt: str, http_registry: Any, keyring: Keyring) -> None:
    """A record whose header names a GUID (or whose first byte says GUID framing): the dev registry holds no GUIDs
    and answers 40403, so the record is bad, not the registry's URL ("is the URL the schema registry's?")."""
    client = SchemaRegistryClient({"url": http_registry.url, **FAST})
    topic = f"t-{uuid.uuid4().hex[:8]}"
    data = write(fmt, client, keyring, topic)
    guid = uuid.uuid4().bytes
    ctx = SerializationContext(topic, MessageField.VALUE, [("__value_schema_id", b"\x01" + guid)])
    with pytest.raises(UnknownSchemaError):
        reader(fmt, SchemaRegistryClient({"url": http_registry.url}), keyring)(data[5:] + b"", ctx)
