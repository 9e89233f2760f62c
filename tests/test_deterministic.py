"""Issue 19, parts 1, 2 and 6: deterministic values for joins, grouping and record keys.

Tags listed in ``fieldcrypt.deterministic.tags`` are encrypted with AES-SIV under the key of ``<domain>/det`` and the
record's person: equal values of one key domain and person give equal ciphertexts in every record, field, subject
and process, and unrelated ones in any other domain or person; the key never rotates by itself; shredding the person
erases them; every other guarantee of a randomized value holds.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from conftest import value_ctx
from hypothesis import given, settings
from hypothesis import strategies as hst

import fieldcrypt
from fieldcrypt import (
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    FakeClock,
    Keyring,
    PolicyError,
    RotationPolicy,
    create_key_store,
    create_local_kek,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.core.lookalike import key_id_of
from fieldcrypt.crypto import wire
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer


def avro_schema(name: str = "Order") -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "t",
        "fields": [
            {"name": "cid", "type": "string", "confluent:tags": ["SUBJECT"]},
            {"name": "email", "type": "string", "confluent:tags": ["JOIN"]},
            {"name": "note", "type": "string", "confluent:tags": ["PII"]},
            {"name": "n", "type": "int"},
        ],
    }


JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {
        "cid": {"type": "string", "confluent:tags": ["SUBJECT"]},
        "email": {"type": "string", "confluent:tags": ["JOIN"]},
        "note": {"type": "string", "confluent:tags": ["PII"]},
        "n": {"type": "integer"},
    },
    "required": ["cid", "email", "note", "n"],
}
CONF: dict[str, Any] = {
    "fieldcrypt.tags": ["PII", "JOIN"],
    "fieldcrypt.deterministic.tags": ["JOIN"],
    "fieldcrypt.data.subject.tag": "SUBJECT",
    "fieldcrypt.tag.domains": {"JOIN": "customers"},
}


def record(cid: str = "c-1", email: str = "jane@example.com", n: int = 1) -> dict[str, Any]:
    return {"cid": cid, "email": email, "note": "a note", "n": n}


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def serdes(fmt: str, registry: SchemaRegistryClient, keyring: Keyring, name: str = "Order", **conf: Any) -> Any:
    """A serializer and a deserializer; ``conf`` adds to both, except the read-only ``fieldcrypt.on.*`` keys."""
    read = {k: v for k, v in conf.items() if k.startswith("fieldcrypt.on.")}
    both = {**CONF, **{k: v for k, v in conf.items() if k not in read}}
    if fmt == "avro":
        return (
            AvroSerializer(registry, json.dumps(avro_schema(name)), keyring=keyring, conf=both),
            AvroDeserializer(registry, keyring=keyring, conf={**both, **read}),
        )
    schema = {**JSON_SCHEMA, "title": name}
    return (
        JSONSerializer(json.dumps(schema), registry, keyring=keyring, conf=both),
        JSONDeserializer(None, schema_registry_client=registry, keyring=keyring, conf={**both, **read}),
    )


def stored(fmt: str, registry: SchemaRegistryClient, data: bytes, topic: str) -> dict[str, Any]:
    """The record as a consumer without fieldcrypt sees it (ciphertext as text)."""
    plain: Any = (
        PlainAvroDeserializer(registry)
        if fmt == "avro"
        else PlainJSONDeserializer(None, schema_registry_client=registry)
    )
    out: dict[str, Any] = plain(data, value_ctx(topic))
    return out


FORMATS = ["avro", "json"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_equal_values_join_across_records_topics_and_processes(
    fmt: str, registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        orders, _ = serdes(fmt, registry, kr, "Order")
        customers, _ = serdes(fmt, registry, kr, "Customer")
        a = stored(fmt, registry, orders(record(), value_ctx("orders")), "orders")
        b = stored(fmt, registry, orders(record(n=2), value_ctx("orders")), "orders")
        c = stored(fmt, registry, customers(record(), value_ctx("customers")), "customers")  # another subject
        other_person = stored(fmt, registry, orders(record(cid="c-2"), value_ctx("orders")), "orders")
        other_value = stored(fmt, registry, orders(record(email="joe@example.com"), value_ctx("orders")), "orders")
    assert a["email"] == b["email"] == c["email"] != "jane@example.com"  # joinable, and no plaintext
    assert a["note"] != b["note"]  # randomized fields stay randomized
    assert other_person["email"] != a["email"] and other_value["email"] != a["email"]
    # another process (a new keyring, after a restart) uses the same key, so the same text
    with Keyring(store_url, kek_uri) as later:
        orders, de = serdes(fmt, registry, later, "Order")
        again = orders(record(), value_ctx("orders"))
        assert stored(fmt, registry, again, "orders")["email"] == a["email"]
        assert de(again, value_ctx("orders")) == record()
    blob = wire.decode_text(a["email"])
    assert wire.is_deterministic(blob) and len(blob) == len("jane@example.com") + 22
    keys = {r.domain for r in Keyring(store_url, kek_uri).keys()}
    assert "customers/det" in keys


@pytest.mark.parametrize("fmt", FORMATS)
def test_another_domain_gives_unrelated_text(
    fmt: str, registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser, _ = serdes(fmt, registry, kr)
        elsewhere, _ = serdes(fmt, registry, kr, **{"fieldcrypt.tag.domains": {"JOIN": "partners"}})
        a = stored(fmt, registry, ser(record(), value_ctx("orders")), "orders")
        b = stored(fmt, registry, elsewhere(record(), value_ctx("orders2")), "orders2")
    assert a["email"] != b["email"]


def test_a_deterministic_key_never_rotates_by_itself(
    registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    clock = FakeClock(1_000.0)
    rotation = RotationPolicy(max_age=60, max_encryptions=3, lease=1)
    with Keyring(store_url, kek_uri, clock=clock, rotation=rotation) as kr:
        ser, de = serdes("avro", registry, kr)
        first = stored("avro", registry, ser(record(), value_ctx()), "orders")["email"]
        for _ in range(10):  # past the count cap, and past max_age
            clock.advance(61)
            data = ser(record(), value_ctx())
        assert stored("avro", registry, data, "orders")["email"] == first
        assert de(data, value_ctx()) == record()
        det = [k for k in kr.keys() if k.domain == "customers/det"]
        assert len(det) == 1 and det[0].version == 1
        # an admin's rotation is the one way to a new key: values after it no longer match those before
        kr.rotate("customers/det", "c-1", reason="documented deterministic-key rotation")
        kr.clear_cache()
        after = stored("avro", registry, ser(record(), value_ctx()), "orders")["email"]
        assert after != first and de(data, value_ctx()) == record()  # the old values still read


@pytest.mark.parametrize("fmt", FORMATS)
def test_shredding_the_person_erases_their_deterministic_values(
    fmt: str, registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser, de = serdes(fmt, registry, kr, **{"fieldcrypt.on.erased": "marker"})
        data = ser(record(), value_ctx("orders"))
        report = kr.shred_person("c-1", reason="erasure 19")
        assert "customers/det" in {r.domain for r in report.destroyed}
        out = de(data, value_ctx("orders"))
    assert isinstance(out["email"], fieldcrypt.Erased) and isinstance(out["note"], fieldcrypt.Erased)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_moved_or_tampered_is_refused(
    fmt: str, registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser, de = serdes(fmt, registry, kr)
        jane = stored(fmt, registry, ser(record(), value_ctx("orders")), "orders")
        data_joe = ser(record(cid="c-2", email="joey@example.com"), value_ctx("orders"))  # as long as Jane's
        joe = stored(fmt, registry, data_joe, "orders")
        # Jane's deterministic value written into Joe's record (same domain, another person)
        forged = data_joe.replace(joe["email"].encode(), jane["email"].encode())
        assert forged != data_joe
        with pytest.raises(DecryptionError):
            de(forged, value_ctx("orders"))
        blob = bytearray(wire.decode_text(joe["email"]))
        blob[-1] ^= 1
        tampered = data_joe.replace(joe["email"].encode(), wire.encode_text(bytes(blob)).encode())
        with pytest.raises(DecryptionError):
            de(tampered, value_ctx("orders"))


def test_producers_and_consumers_must_agree_on_the_treatment(
    registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser, _ = serdes("avro", registry, kr)
        data = ser(record(), value_ctx())
        randomized = {k: v for k, v in CONF.items() if k != "fieldcrypt.deterministic.tags"}
        de = AvroDeserializer(registry, keyring=kr, conf=randomized)
        with pytest.raises(ConfigurationError, match="deterministic"):
            de(data, value_ctx())


def test_what_the_configuration_refuses(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    schema = json.dumps(avro_schema())
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.tags does not list"):
        AvroSerializer(registry, schema, keyring=keyring, conf={**CONF, "fieldcrypt.deterministic.tags": ["OTHER"]})
    with pytest.raises(ConfigurationError, match="format version 2"):
        AvroSerializer(registry, schema, keyring=keyring, conf={**CONF, "fieldcrypt.format.version": 1})
    with pytest.raises(PolicyError, match="no masked view"):
        masked = AvroSerializer(registry, schema, keyring=keyring, conf={**CONF, "fieldcrypt.masks": {"JOIN": "email"}})
        masked(record(), value_ctx())
    with pytest.raises(ConfigurationError, match="reserved"):
        AvroSerializer(registry, schema, keyring=keyring, conf={**CONF, "fieldcrypt.tag.domains": {"JOIN": "x/det"}})


def test_the_caller_s_record_is_never_mutated(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    ser, _ = serdes("avro", registry, keyring)
    rec = record()
    before = copy.deepcopy(rec)
    ser(rec, value_ctx())
    assert rec == before


def test_without_a_data_subject_the_domain_key_is_used(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    schema = avro_schema()
    schema["fields"][0] = {"name": "cid", "type": "string"}
    conf = {k: v for k, v in CONF.items() if k != "fieldcrypt.data.subject.tag"}
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring, conf=conf)
    a = stored("avro", registry, ser(record(cid="c-1"), value_ctx()), "orders")["email"]
    b = stored("avro", registry, ser(record(cid="c-2"), value_ctx()), "orders")["email"]
    assert a == b  # one domain-wide deterministic key: equal values match across people


@settings(max_examples=40, deadline=None)
@given(hst.text(max_size=40), hst.text(max_size=40))
def test_property_equal_in_equal_out_and_round_trip(x: str, y: str) -> None:
    with _SHARED.keyring() as kr:
        ser, de = serdes("avro", _SHARED.registry, kr)
        dx, dx2, dy = (ser(record(email=v), value_ctx()) for v in (x, x, y))
        sx, sx2, sy = (stored("avro", _SHARED.registry, d, "orders")["email"] for d in (dx, dx2, dy))
        assert sx == sx2
        assert (sx == sy) == (x == y)
        assert de(dx, value_ctx())["email"] == x and de(dy, value_ctx())["email"] == y


class _Shared:
    """One store and KEK for the property test's examples (each example opens its own keyring: restarts)."""

    def __init__(self) -> None:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="fieldcrypt-det-"))
        self.store = create_key_store(f"sqlite:///{tmp / 'keys.db'}")
        self.kek = create_local_kek(tmp / "kek.json")
        self.registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})

    def keyring(self) -> Keyring:
        return Keyring(self.store, self.kek)


_SHARED = _Shared()


def test_the_configuration_file_marks_deterministic_tags(
    registry: SchemaRegistryClient, keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'conf and config file': the [policy] table of the fieldcrypt configuration file, as serde conf keys."""
    config = tmp_path / "fieldcrypt.toml"
    config.write_text(
        '[policy]\ntags = ["PII", "JOIN"]\ndeterministic_tags = ["JOIN"]\ndata_subject_tag = "SUBJECT"\n'
        'tag_domains = { JOIN = "customers" }\n'
    )
    assert fieldcrypt.policy_conf(str(config)) == CONF
    monkeypatch.setenv("FIELDCRYPT_CONFIG", str(config))
    ser = AvroSerializer(registry, json.dumps(avro_schema()), keyring=keyring, conf=fieldcrypt.policy_conf())
    a, b = (stored("avro", registry, ser(record(n=i), value_ctx()), "orders")["email"] for i in (1, 2))
    assert a == b
    config.write_text('[policy]\ndeterministic_tag = ["JOIN"]\n')  # a typo is an error, never ignored
    with pytest.raises(ConfigurationError, match="unknown"):
        fieldcrypt.policy_conf(str(config))


def test_every_placement_of_a_deterministic_tag(registry: SchemaRegistryClient, keyring: Keyring) -> None:
    """Arrays, maps, unions and bytes: each value deterministic where its tag says so."""
    schema = {
        "type": "record",
        "name": "Many",
        "namespace": "t",
        "fields": [
            {"name": "emails", "type": {"type": "array", "items": {"type": "string", "confluent:tags": ["JOIN"]}}},
            {"name": "byName", "type": {"type": "map", "values": {"type": "string", "confluent:tags": ["JOIN"]}}},
            {"name": "maybe", "type": ["null", {"type": "string", "confluent:tags": ["JOIN"]}], "default": None},
            {"name": "raw", "type": "bytes", "confluent:tags": ["JOIN"]},
        ],
    }
    conf = {"fieldcrypt.tags": ["JOIN"], "fieldcrypt.deterministic.tags": ["JOIN"]}
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring, conf=conf)
    de = AvroDeserializer(registry, keyring=keyring, conf=conf)
    rec = {"emails": ["a@x.io", "a@x.io", "b@x.io"], "byName": {"k": "a@x.io"}, "maybe": "a@x.io", "raw": b"a@x.io"}
    data = ser(rec, value_ctx())
    plain = PlainAvroDeserializer(registry)(data, value_ctx())
    e = plain["emails"]
    assert e[0] == e[1] != e[2] and plain["byName"]["k"] == e[0] == plain["maybe"]
    # a bytes field holds the value's bytes (no base64 text): the same bytes as the text field's, decoded
    assert wire.is_deterministic(plain["raw"]) and plain["raw"] == wire.decode_text(e[0])
    assert de(data, value_ctx()) == rec


def test_the_tools_take_the_configuration_file_s_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fieldcrypt schema lint (as scan and verify) reads the [policy] table; a flag replaces that key."""
    from fieldcrypt.cli import main

    schema = tmp_path / "order.avsc"
    schema.write_text(json.dumps(avro_schema()))
    config = tmp_path / "fieldcrypt.toml"
    config.write_text('[policy]\ntags = ["PII", "JOIN"]\ndeterministic_tags = ["JOIN"]\ndata_subject_tag = "SUBJECT"\n')
    assert main(["schema", "lint", str(schema), "--config", str(config), "--json"]) in (0, 7)
    [report] = json.loads(capsys.readouterr().out)
    det = {r["path"]: r["deterministic"] for r in report["rows"]}
    assert det == {"t.Order.cid": False, "t.Order.email": True, "t.Order.note": False, "t.Order.n": False}
    # a flag replaces the file's value for its key: no deterministic tag left
    assert main(["schema", "lint", str(schema), "--config", str(config), "--json", "--deterministic-tag", "PII"]) in (
        0,
        7,
    )
    [report] = json.loads(capsys.readouterr().out)
    assert {r["path"] for r in report["rows"] if r["deterministic"]} == {"t.Order.note"}


def test_deterministic_values_are_no_part_of_the_record_binding(
    registry: SchemaRegistryClient, keyring: Keyring
) -> None:
    """Found by review: a record mixing deterministic and record-bound values still forms one for the tools that
    judge ciphertext without keys (scan, the CSFLE migration read)."""
    ser, _ = serdes("avro", registry, keyring)
    plain = stored("avro", registry, ser(record(), value_ctx()), "orders")
    parsed: list[Any] = []
    for field in ("email", "note"):
        try:
            parsed.append(wire.parse_value(wire.decode_text(plain[field])))
        except wire.UnsupportedValue as exc:
            parsed.append(exc)
    assert isinstance(parsed[0], wire.DeterministicValue) and wire.forms_record(parsed)
    assert wire.forms_record(parsed[:1])  # deterministic values alone


def test_a_record_naming_a_key_store_pseudonym_as_its_data_subject_is_refused(
    registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    """Found by review: a person's deterministic value copied into a record whose data subject is that person's
    pseudonym (which listings show) must not read: pseudonym-shaped ids are reserved."""
    with Keyring(store_url, kek_uri) as producer:
        ser, _ = serdes("json", registry, producer)
        data = ser(record(), value_ctx())
        pseudonym = producer._stored("orders-value", "c-1")
        assert pseudonym is not None and pseudonym.startswith("ps1:")
        with pytest.raises(EncryptionError, match="pseudonym") as err:  # the record is at fault, not the conf
            ser(record(cid=pseudonym), value_ctx())
        assert err.value.subject == "orders-value"
    forged = data.replace(b'"c-1"', json.dumps(pseudonym).encode())
    with Keyring(store_url, kek_uri) as reader:  # a fresh process: keys looked up by id name pseudonyms
        _, de = serdes("json", registry, reader)
        with pytest.raises(DecryptionError, match="pseudonym"):
            de(forged, value_ctx())


def test_a_record_naming_a_pseudonym_is_refused_when_its_key_is_cached_under_that_name(
    registry: SchemaRegistryClient, store_url: str, kek_uri: str
) -> None:
    """The same forgery, read by a consumer whose cache holds the person's key as the key store names it (looked up
    by id for no record): the key's name is the record's data subject then, and the record is still refused."""
    schema = {
        "type": "object",
        "title": "P",
        "properties": {
            "cid": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            "note": {"type": "string", "confluent:tags": ["PII"]},
        },
        "required": ["cid", "note"],
    }
    with Keyring(store_url, kek_uri) as producer:
        data = JSONSerializer(json.dumps(schema), registry, keyring=producer)({"cid": "c-1", "note": "x"}, value_ctx())
        pseudonym = producer._stored("orders-value", "c-1")
    forged = data.replace(b'"c-1"', json.dumps(pseudonym).encode())
    with Keyring(store_url, kek_uri) as reader:
        reader.decryption_key(key_id_of(json.loads(forged[5:])["note"]))  # cached, named by the pseudonym
        de = JSONDeserializer(None, schema_registry_client=registry, keyring=reader)
        with pytest.raises(DecryptionError, match="pseudonym"):
            de(forged, value_ctx())
        assert de(data, value_ctx()) == {"cid": "c-1", "note": "x"}  # the person's own record reads
        with pytest.raises(DecryptionError, match="pseudonym"):
            de(forged, value_ctx())  # and the forgery still does not, with the key cached for the person
