"""``fieldcrypt scan`` against a real broker and registry: a topic mixing fieldcrypt records, plaintext history,
garbage, unknown schema ids, a JSON Schema record, a tampered ciphertext, raw text and a tombstone; exact counts per
subject and field, offsets, exit codes; and no planted value anywhere in the output."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer as PlainAvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import customer, load_schema
from fastavro import parse_schema, schemaless_reader

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.avro.format import walk_avro
from fieldcrypt.cli import main
from fieldcrypt.core.plan import TagRules
from fieldcrypt.inspect.scan import tagged_values
from fieldcrypt.json_schema import JSONSerializer

SIGNUP = json.dumps(
    {
        "type": "record",
        "name": "Signup",
        "namespace": "test.scan",
        "fields": [
            {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "email", "type": "string", "confluent:tags": ["PII"]},
            {"name": "phone", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
            {"name": "note", "type": "string"},
            {"name": "labels", "type": {"type": "array", "items": "string"}},
            {"name": "attributes", "type": {"type": "map", "values": "string"}},
            {
                "name": "address",
                "type": {
                    "type": "record",
                    "name": "Address",
                    "fields": [
                        {"name": "street", "type": "string", "confluent:tags": ["PII"]},
                        {"name": "city", "type": "string"},
                    ],
                },
            },
            {"name": "amount", "type": "double"},
        ],
    }
)

#: every value planted in the topic that must never appear in any output
PLANTED = {
    "note_email": "planted.note@example.org",
    "label_phone": "+49 30 9876543",
    "key_email": "planted.key@example.net",
    "attr_iban": "DE89 3704 0044 0532 0130 00",
    "tagged_email": "plain.tagged@example.com",
    "tagged_phone": "+44 20 7946 0958",
    "tagged_street": "1 Plain Street",
    "note_card": "4111 1111 1111 1111",
    "raw_email": "raw.text@example.com",
    "record_key": "record.key@example.com",
    "encrypted_phone": "+49 151 23456789",
    "encrypted_email": "person1@example.com",
}


def signup(i: int, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "customerId": f"cust-{i}",
        "email": f"person{i}@example.com",
        "phone": None,
        "note": "hello world",
        "labels": ["gold"],
        "attributes": {"tier": "gold"},
        "address": {"street": f"{i} Main Road", "city": "Berlin"},
        "amount": 12.5,
    }
    rec.update(over)
    return rec


@dataclass
class MixedTopic:
    topic: str
    bootstrap: str
    registry_url: str
    store_url: str
    kek_uri: str

    def args(self, *extra: str) -> list[str]:
        return [
            self.topic,
            "--bootstrap-servers",
            self.bootstrap,
            "--schema-registry",
            self.registry_url,
            "--timeout",
            "10",
            *extra,
        ]

    def keys(self) -> list[str]:
        return ["--store", self.store_url, "--kek", self.kek_uri]


def build_mixed_topic(broker: Any, http_registry: Any, tmp: Path) -> MixedTopic:
    """One partition, offsets:

    0 fieldcrypt Avro, clean                         1 fieldcrypt Avro, email in the untagged note; a raw key
    2 fieldcrypt Avro (cust-2, shredded): phone in labels, email as a map key, IBAN as a map value
    3 confluent's plain serializer: plaintext in the tagged email, phone and street; a card number in the note
    4 garbage bytes (not framed, not text)          5 framed, unknown schema id
    6 fieldcrypt JSON Schema record (customer 6)    7 fieldcrypt Avro with its email ciphertext altered
    8 raw JSON text with an email                   9 tombstone
    """
    topic = f"scan-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    kek = fieldcrypt.create_local_kek(tmp / "kek.json")
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
    registry = SchemaRegistryClient({"url": http_registry.url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    with Keyring(store, kek) as kr:
        avro = AvroSerializer(registry, SIGNUP, keyring=kr)
        plain = PlainAvroSerializer(registry, SIGNUP)
        json_ser = JSONSerializer(  # another schema type on the same subject: its tags are other paths
            load_schema("customer_event.schema.json"),
            registry,
            conf={"fieldcrypt.allow.tag.removal": True},
            keyring=kr,
        )
        tampered = avro(signup(7), ctx)
        assert tampered is not None
        decoded = schemaless_reader(io.BytesIO(tampered[5:]), parse_schema(json.loads(SIGNUP)), None)
        ciphertext = decoded["email"].encode()
        swapped = b"A" if ciphertext[30:31] != b"A" else b"B"
        tampered = tampered.replace(ciphertext, ciphertext[:30] + swapped + ciphertext[31:], 1)
        json_doc = customer(6)
        json_doc["purchaseAmount"] = float(json_doc["purchaseAmount"])
        values: list[tuple[bytes | None, bytes | None]] = [
            (None, avro(signup(0), ctx)),
            (
                PLANTED["record_key"].encode(),
                avro(signup(1, note=f"mail {PLANTED['note_email']} please", phone=PLANTED["encrypted_phone"]), ctx),
            ),
            (
                None,
                avro(
                    signup(
                        2,
                        labels=["gold", f"call {PLANTED['label_phone']}"],
                        attributes={PLANTED["key_email"]: PLANTED["attr_iban"]},
                    ),
                    ctx,
                ),
            ),
            (
                None,
                plain(
                    signup(
                        3,
                        email=PLANTED["tagged_email"],
                        phone=PLANTED["tagged_phone"],
                        address={"street": PLANTED["tagged_street"], "city": "Bonn"},
                        note=f"card {PLANTED['note_card']}",
                    ),
                    ctx,
                ),
            ),
            (None, b"\xff\xfe\x00garbage\x81"),
            (None, b"\x00" + (987654).to_bytes(4, "big") + b"\x02xx"),
            (None, json_ser(json_doc, ctx)),
            (None, tampered),
            (None, json.dumps({"contact": PLANTED["raw_email"], "n": 1}).encode()),
            (b"gone", None),
        ]
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
        for key, value in values:
            producer.produce(topic, key=key, value=value, partition=0)
        assert producer.flush(30) == 0
        kr.shred_person("cust-2", reason="test erasure")
    return MixedTopic(topic, broker.bootstrap_servers, http_registry.url, store, kek)


@pytest.fixture(scope="module")
def mixed(broker: Any, http_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedTopic]:
    yield build_mixed_topic(broker, http_registry, tmp_path_factory.mktemp("mixed"))


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def assert_nothing_planted(*texts: str) -> None:
    whole = "\n".join(texts)
    for name, value in PLANTED.items():
        for variant in {value, value.replace(" ", ""), value.split("@")[0]}:
            assert variant not in whole, f"{name} leaked"
    assert "Traceback" not in whole


def fields(report: dict[str, Any], subject: str, part: str = "value") -> dict[str, dict[str, Any]]:
    [found] = [s for s in report["subjects"] if s["subject"] == subject and s["part"] == part]
    return {f["field"] + ("" if f["tagged"] else " (untagged)"): f for f in found["fields"]}


# --- the mixed topic --------------------------------------------------------------------------------------------


@pytest.mark.broker
def test_scan_without_keys_counts_every_field_and_exits_7(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "scan", *mixed.args("--json"))
    assert code == 7, err
    report = json.loads(out)
    assert report["records"] == 10 and report["tombstones"] == 1 and report["decrypted"] is False
    assert report["partitions"] == [{"partition": 0, "from": 0, "to": 10, "read": 10}]
    assert report["findings"] == {
        "plaintext_in_tagged_fields": 3,
        "personal_data_in_untagged_fields": 6,
        "ciphertext_in_untagged_fields": 0,
        "tampered": 0,
        "records_not_examined": 2,
    }
    subject = f"{mixed.topic}-value"
    [value_subject] = [s for s in report["subjects"] if s["subject"] == subject]
    assert value_subject["schema_type"] == "AVRO+JSON" and value_subject["records"] == 6
    f = fields(report, subject)
    email = f["$.email"]
    assert (email["values"], email["ciphertext"], email["plaintext"]) == (6, 5, 1)
    assert email["schema_path"] == "test.scan.Signup.email" and email["offsets"] == [{"partition": 0, "offset": 3}]
    assert (f["$.phone"]["ciphertext"], f["$.phone"]["plaintext"]) == (1, 1)
    street = f["$.address.street"]
    assert (street["values"], street["ciphertext"], street["plaintext"]) == (5, 4, 1)
    assert street["schema_path"] == "test.scan.Address.street"
    assert (f["$.ssn"]["ciphertext"], f["$.fullName"]["ciphertext"]) == (1, 1)  # the JSON Schema record
    note = f["$.note (untagged)"]
    assert note["values"] == 5 and note["flagged"] == 2
    assert note["detections"] == {"email": 1, "payment_card": 1}
    assert note["offsets"] == [{"partition": 0, "offset": 1}, {"partition": 0, "offset": 3}]
    assert f["$.labels[] (untagged)"]["detections"] == {"phone": 1}
    assert f["$.attributes(keys) (untagged)"]["detections"] == {"email": 1}
    assert f["$.attributes[*] (untagged)"]["detections"] == {"iban": 1}
    for quiet in ("$.customerId", "$.address.city", "$.country", "$.currency"):
        assert f[f"{quiet} (untagged)"]["flagged"] == 0
    assert "$.email (untagged)" not in f  # tagged values are never counted as untagged text too
    raw = fields(report, "(not Confluent-framed)")
    assert raw["$.contact (untagged)"]["detections"] == {"email": 1}
    bad = report["bad_records"]
    assert bad["by_reason"] == {"not-framed": 1, "unknown-schema-id": 1}
    assert [(b["offset"], b["reason"]) for b in bad["first"]] == [(4, "not-framed"), (5, "unknown-schema-id")]
    assert report["clean"] is False
    assert_nothing_planted(out, err)


@pytest.mark.broker
def test_scan_with_keys_tells_readable_erased_tampered(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "scan", *mixed.args("--json", "--keys", *mixed.keys()))
    assert code == 7, err
    report = json.loads(out)
    assert report["decrypted"] is True and report["keys_scanned"] is True
    f = fields(report, f"{mixed.topic}-value")
    email = f["$.email"]
    assert (email["readable"], email["erased"], email["denied"], email["tampered"]) == (3, 1, 0, 1)
    assert email["offsets"] == [{"partition": 0, "offset": 3}, {"partition": 0, "offset": 7}]
    street = f["$.address.street"]
    assert (street["readable"], street["erased"], street["tampered"], street["unverified"]) == (2, 1, 0, 1)
    assert f["$.phone"]["readable"] == 1
    assert report["findings"]["tampered"] == 1
    # record keys: the raw key of offset 1 is scanned as text
    assert fields(report, "(not Confluent-framed)", "key")["$ (untagged)"]["detections"] == {"email": 1}
    assert report["findings"]["personal_data_in_untagged_fields"] == 7
    assert_nothing_planted(out, err)


@pytest.mark.broker
def test_scan_human_output_names_fields_and_offsets_never_values(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "scan", *mixed.args("--progress", *mixed.keys()))
    assert code == 7
    assert "$.attributes(keys)" in out and "iban 1" in out and "0:3" in out
    assert "bad records: 2 (not-framed 1, unknown-schema-id 1)" in out
    assert "partition 0 offset 5: unknown-schema-id: schema id 987654 is not in the registry" in out
    assert "findings: 3 plaintext value(s) in tagged fields, 6 untagged value(s) holding personal data" in out
    assert "untagged field(s) scanned with nothing found" in out
    assert_nothing_planted(out, err)


@pytest.mark.broker
def test_scan_detector_choice_and_plugins(mixed: MixedTopic, capfd) -> None:
    code, out, _ = run(capfd, "scan", *mixed.args("--json", "--detectors", "iban"))
    report = json.loads(out)
    assert report["detectors"] == ["iban"] and report["findings"]["personal_data_in_untagged_fields"] == 1
    code, out, _ = run(
        capfd, "scan", *mixed.args("--json", "--detectors", "email", "--detector", "test_detectors:GOLD_DETECTOR")
    )
    report = json.loads(out)
    assert report["detectors"] == ["email", "gold_tier"]
    f = fields(report, f"{mixed.topic}-value")
    assert f["$.labels[] (untagged)"]["detections"] == {"gold_tier": 5}
    code, out, err = run(capfd, "scan", *mixed.args("--detectors", "nosuch"))
    assert code == 3 and "no detector named 'nosuch'" in err
    code, out, _ = run(capfd, "scan", "--list-detectors", "--json")
    listed = {d["name"]: d for d in json.loads(out)}
    assert code == 0 and listed["nl_bsn"]["default"] is False and listed["email"]["chosen"] is True


@pytest.mark.broker
def test_scan_ranges(mixed: MixedTopic, capfd) -> None:
    code, out, _ = run(
        capfd, "scan", *mixed.args("--json", "--partition", "0", "--from-offset", "1", "--to-offset", "4")
    )
    report = json.loads(out)
    assert report["partitions"] == [{"partition": 0, "from": 1, "to": 4, "read": 3}] and report["records"] == 3
    assert report["bad_records"]["count"] == 0
    code, out, _ = run(capfd, "scan", *mixed.args("--json", "--max-records", "1"))
    report = json.loads(out)
    assert report["records"] == 1 and code == 0 and report["clean"] is True  # offset 0 is clean
    code, out, err = run(capfd, "scan", *mixed.args("--partition", "3"))
    assert code == 5 and "has no partition 3" in err


@pytest.mark.broker
def test_scan_of_a_missing_topic_is_not_found(broker, http_registry, capfd) -> None:
    name = f"no-such-{uuid.uuid4().hex[:6]}"
    code, out, _ = run(
        capfd, "scan", name, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--json"
    )
    assert code == 5 and json.loads(out)["error"]["message"] == f"topic {name!r} does not exist"
    from confluent_kafka.admin import AdminClient

    assert name not in AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10).topics


@pytest.mark.broker
def test_records_an_attacker_writes_are_scanned_or_counted_never_shown(broker, http_registry, capfd) -> None:
    """Found by review: object keys of unframed JSON that are identifiers (an IBAN, a NIE) were printed as field
    paths and never scanned; a bare card number was skipped as a JSON number; deep nesting ended the scan."""
    topic = f"attacker-{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic)
    iban, nie, card = "GB29NWBK60161331926819", "X1234567L", "4111111111111111"
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for value in (
        json.dumps({iban: "x", nie: "y", "note": "fine"}).encode(),
        card.encode(),  # a bare JSON number
        b"[" * 200_000 + b"]" * 200_000,  # nested too deeply for any JSON parser
        b"after the deep one, mail " + b"later@example.org",
    ):
        producer.produce(topic, value)
    producer.flush(10)
    code, out, err = run(
        capfd, "scan", topic, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--json"
    )
    for secret in (iban, nie, card, "later@example.org"):
        assert secret not in out + err
    assert "Traceback" not in err and code == 7
    report = json.loads(out)
    raw = fields(report, "(not Confluent-framed)")
    assert raw["$(keys) (untagged)"]["detections"] == {"iban": 1, "es_dni": 1}
    assert raw["$.note (untagged)"]["values"] == 1  # a plain identifier key is still shown
    assert raw["$ (untagged)"]["detections"] == {"payment_card": 1, "email": 1}
    assert report["bad_records"]["by_reason"] == {"undecodable": 1}
    assert report["records"] == 4


# --- the walkers, without a broker --------------------------------------------------------------------------------


def test_tagged_values_and_untagged_text_follow_the_schema() -> None:
    from fastavro import parse_schema

    from fieldcrypt.avro.policy import compile_avro

    schema = parse_schema(json.loads(load_schema("order.avsc")))
    plan = compile_avro(schema, TagRules())
    record = {
        "orderId": "o-1",
        "customer": {"name": "N", "phone": None, "loyaltyTier": "gold"},
        "shipTo": {"street": "S", "city": "C", "postcode": "P"},
        "previousAddresses": [{"street": "S1", "city": "C1", "postcode": "P1"}],
        "contacts": {"a@example.com": {"email": "E", "note": "call +49 30 1234567"}},
        "signature": b"sig",
        "total": 1.0,
    }
    tagged = {(t.path, t.leaf.path) for t in tagged_values(plan, record)}
    assert tagged == {
        ("$.customer.name", "example.shop.Customer.name"),
        ("$.shipTo.street", "example.shop.Address.street"),
        ("$.shipTo.city", "example.shop.Address.city"),
        ("$.shipTo.postcode", "example.shop.Address.postcode"),
        ("$.previousAddresses[].street", "example.shop.Address.street"),
        ("$.previousAddresses[].city", "example.shop.Address.city"),
        ("$.previousAddresses[].postcode", "example.shop.Address.postcode"),
        ("$.contacts[*].email", "example.shop.Contact.email"),
        ("$.signature", "example.shop.Order.signature"),
    }
    texts: list[tuple[str, bool]] = []
    walk_avro(schema, record, lambda text, path, at: texts.append((path, at is None)))
    paths = {p for p, _ in texts}
    assert "$.contacts(keys)" in paths and "$.contacts[*].note" in paths and "$.previousAddresses[].city" in paths
    assert ("$.contacts(keys)", True) in texts  # a map key has no position of its own
