"""Schema lint, scan and verify on Protobuf: a topic on a real broker written by fieldcrypt's ProtobufSerializer and
by confluent's plain one, through the HTTP development registry (schemas read with format=serialized).

    0 fieldcrypt, clean                              1 fieldcrypt, an email in the untagged country field
    2 fieldcrypt (c-2, shredded)                     3 confluent's plain serializer: the tagged fields in clear
    4 fieldcrypt with its email ciphertext altered
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as PlainDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as PlainSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from test_scan import MixedTopic, fields, run

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.lint import lint_schema
from fieldcrypt.protobuf import ProtobufSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "protobuf"))
import customer_pb2

NO_DEPRECATED = {"use.deprecated.format": False}
PLANTED = "planted.country@example.org"


def customer(i: int, **over: Any) -> Any:
    c = customer_pb2.Customer(
        **{"id": f"c-{i}", "email": f"person{i}@example.com", "name": "Ann", "country": "GB", **over}
    )
    c.address.street = f"{i} High Street"
    c.address.city = "London"
    return c


@pytest.fixture(scope="module")
def topic(broker: Any, http_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedTopic]:
    tmp = tmp_path_factory.mktemp("proto")
    name = f"proto-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name)
    kek = fieldcrypt.create_local_kek(tmp / "kek.json")
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
    registry = SchemaRegistryClient({"url": http_registry.url})
    ctx = SerializationContext(name, MessageField.VALUE)
    with Keyring(store, kek) as kr:
        ser = ProtobufSerializer(customer_pb2.Customer, registry, NO_DEPRECATED, keyring=kr)
        plain = PlainSerializer(customer_pb2.Customer, registry, NO_DEPRECATED)
        tampered = ser(customer(4), ctx)
        seen = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)(tampered, ctx)
        email = seen.email.encode()
        tampered = tampered.replace(email, email[:30] + (b"A" if email[30:31] != b"A" else b"B") + email[31:])
        values = [
            ser(customer(0), ctx),
            ser(customer(1, country=f"mail {PLANTED}"), ctx),
            ser(customer(2), ctx),
            plain(customer(3), ctx),
            tampered,
        ]
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
        for value in values:
            producer.produce(name, value=value, partition=0)
        assert producer.flush(30) == 0
        kr.shred_person("c-2", reason="test erasure")
    yield MixedTopic(name, broker.bootstrap_servers, http_registry.url, store, kek)


@pytest.mark.broker
def test_scan_reads_a_protobuf_topic(topic: MixedTopic, capfd: Any) -> None:
    code, out, err = run(capfd, "scan", *topic.args("--json"))
    assert code == 7, err
    report = json.loads(out)
    subject = f"{topic.topic}-value"
    f = fields(report, subject)
    email = f["$.email"]
    assert email["schema_path"] == "shop.Customer.email"
    assert (email["values"], email["ciphertext"], email["plaintext"]) == (5, 4, 1)
    street = f["$.address.street"]
    assert (street["values"], street["ciphertext"], street["plaintext"]) == (5, 4, 1)
    assert f["$.country (untagged)"]["detections"] == {"email": 1}
    assert f["$.address.city (untagged)"]["flagged"] == 0
    assert report["findings"]["plaintext_in_tagged_fields"] == 3  # email, name and street of offset 3
    assert PLANTED not in out and "person3@example.com" not in out

    code, out, err = run(capfd, "scan", *topic.args("--json", "--keys", *topic.keys()))
    f = fields(json.loads(out), subject)
    assert (f["$.email"]["readable"], f["$.email"]["erased"], f["$.email"]["tampered"]) == (2, 1, 1)


@pytest.mark.broker
def test_verify_reads_a_protobuf_topic(topic: MixedTopic, capfd: Any) -> None:
    code, out, err = run(capfd, "verify", *topic.args("--json", *topic.keys()))
    assert code == 7, out + err
    report = json.loads(out)
    # the plain record's email, name and street, and its photo: a proto3 bytes field without presence reads b"" when
    # unset, a plaintext value to a reader (a fieldcrypt writer encrypts b"" like any value, so it never reads so)
    assert report["findings"]["plaintext"] == 4 and report["findings"]["tampered"] == 1
    [known] = [r for r in report["rows"] if r["key"] == "known"]
    assert (known["records"], known["readable"], known["erased"]) == (3, 8, 4)  # email name street photo
    [plain] = [r for r in report["rows"] if r["key"] == "none"]
    assert plain["plaintext_fields"] == {
        "shop.Address.street": 1,
        "shop.Customer.email": 1,
        "shop.Customer.name": 1,
        "shop.Customer.photo": 1,
    }
    code, out, err = run(capfd, "verify", *topic.args("--json", "--schema-type", "protobuf", *topic.keys()))
    assert json.loads(out)["findings"]["plaintext"] == 4
    code, out, err = run(capfd, "verify", *topic.args("--json", "--by", "data-subject", *topic.keys()))
    rows = {r["data-subject"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {"c-0", "c-1", "c-2", "c-3"}  # offset 4 (tampered) is a bad record
    assert (rows["c-2"]["erased"], rows["c-0"]["readable"], rows["c-3"]["plaintext"]) == (4, 4, 4)


def test_schema_lint_reads_protobuf() -> None:
    text = PlainSerializer(customer_pb2.Customer, None, NO_DEPRECATED)._schema.schema_str
    report = lint_schema(Schema(text, "PROTOBUF"))
    rows = {r.path: r for r in report.rows}
    assert rows["shop.Customer.email"].verdict == "encrypted"
    assert rows["shop.Customer.aliases[]"].verdict == "encrypted"
    assert rows["shop.Customer.contacts[*]"].verdict == "encrypted"
    assert rows["shop.Address.street"].verdict == "encrypted"
    assert rows["shop.Customer.country"].verdict == "clear"
    assert not [f for f in report.findings if f.kind in ("invalid", "refused")]
