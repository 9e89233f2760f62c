"""Issue 15 items 7 and 12: a fieldcrypt ciphertext in a field the record's schema does not tag.

Written from the attack: a producer (or anyone who may register a schema version) writes a record with a schema that
tags ``email``, registers a version of the same subject without the tag, and re-frames the record's bytes with that
version's id. The record decodes cleanly and, before this change, its ciphertexts came back as the plain values of
untagged fields (``stats.records_untagged == 1``), with no error and no count. Now the deserializer refuses such a
value when it names a key the consumer's key store knows (held, shredded or denied), unless the consumer opts out
with ``fieldcrypt.on.untagged.ciphertext=accept``, which counts it; on SQLite and PostgreSQL key stores."""

from __future__ import annotations

import copy
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from conftest import customer, load_schema, order, value_ctx
from fastavro import parse_schema, schemaless_reader
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import Keyring, create_key_store
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.core.lookalike import candidates, declared_names, field_path, key_id_of
from fieldcrypt.core.serde import WRITE_CONF
from fieldcrypt.crypto.wire import decode_text, encode_base64, encode_text
from fieldcrypt.errors import AccessDeniedError, ConfigurationError, DecryptionError, KeyShreddedError
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}
FORMATS = ("avro", "json")
ACCEPT = {"fieldcrypt.on.untagged.ciphertext": "accept"}
#: writers pinned to value format 1 where the serializer writes a later one by default
FORMAT_1 = {"fieldcrypt.format.version": 1} if "fieldcrypt.format.version" in WRITE_CONF else None
PII = ("email", "ssn", "fullName")


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield create_key_store(url)


@pytest.fixture
def keyring(store_url: str, kek_uri: str) -> Iterator[Keyring]:
    with Keyring(store_url, kek_uri) as kr:
        yield kr


def json_customer(i: int = 1) -> dict[str, Any]:
    rec = customer(i)
    rec["purchaseAmount"] = float(rec["purchaseAmount"])
    return rec


def json_order(i: int) -> dict[str, Any]:
    return {
        "orderId": f"o-{i}",
        "customer": {"name": f"Zoë Ångström {i}", "phone": f"+49 {i}", "loyaltyTier": "gold"},
        "shipTo": {"street": f"Hauptstraße {i}", "city": "Berlin", "postcode": f"{10_000 + i}"},
        "previousAddresses": [
            {"street": f"Old Road {i}", "city": "Bonn", "postcode": "53111"},
            {"street": "", "city": "Köln", "postcode": "50667"},
        ],
        "contacts": {"work": {"email": f"w{i}@corp.example", "note": "n"}},
        "total": 99.5,
    }


def untag(text: str, keep: tuple[str, ...] = ()) -> str:
    """The schema without its tags (but on the fields named in ``keep``): the version an attacker registers."""

    def strip(node: Any, name: str | None = None) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "confluent:tags" and name not in keep:
                    continue
                out[k] = strip(v, node.get("name") if k == "type" else k if isinstance(v, dict) else name)
            return out
        if isinstance(node, list):
            return [strip(v, name) for v in node]
        return node

    schema = json.loads(text)
    if "fields" in schema:  # Avro: a field's tags sit next to its name
        schema = copy.deepcopy(schema)

        def fields(rec: Any) -> None:
            if isinstance(rec, dict):
                for f in rec.get("fields", []):
                    tags = f.get("confluent:tags")
                    if tags is not None and f["name"] not in keep:
                        del f["confluent:tags"]
                    fields(f["type"])
                for v in rec.values():
                    if isinstance(v, (dict, list)):
                        fields(v)
            elif isinstance(rec, list):
                for v in rec:
                    fields(v)

        fields(schema)
        return json.dumps(schema)
    props = schema.get("properties", {})
    for name, prop in props.items():
        if name not in keep:
            prop.pop("confluent:tags", None)
    return json.dumps(strip(schema))


class Swap:
    """A record written with the tagged schema, and the same bytes re-framed with an untagged version's id."""

    def __init__(
        self,
        fmt: str,
        keyring: Keyring,
        kind: str = "customer",
        keep: tuple[str, ...] = (),
        conf: dict[str, Any] | None = None,
    ) -> None:
        self.fmt, self.keyring = fmt, keyring
        self.registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        self.topic = f"swap-{uuid.uuid4().hex[:8]}"
        name = {"customer": "customer_event", "order": "order"}[kind]
        self.text = load_schema(f"{name}.{'avsc' if fmt == 'avro' else 'schema.json'}")
        if fmt == "avro":
            self.record = customer(1) if kind == "customer" else order(2)
            ser: Any = AvroSerializer(self.registry, self.text, conf=conf, keyring=keyring)
        else:
            self.record = json_customer(1) if kind == "customer" else json_order(2)
            ser = JSONSerializer(self.text, self.registry, conf=conf, keyring=keyring)
        self.data: bytes = ser(self.record, value_ctx(self.topic))
        version2 = Schema(untag(self.text, keep), "AVRO" if fmt == "avro" else "JSON")
        self.v2 = self.registry.register_schema(f"{self.topic}-value", version2)
        self.forged = b"\x00" + self.v2.to_bytes(4, "big") + self.data[5:]

    def reader(self, keyring: Keyring | None = None, **conf: Any) -> Any:
        kr = keyring or self.keyring
        if self.fmt == "avro":
            return AvroDeserializer(self.registry, conf=conf or None, keyring=kr)
        return JSONDeserializer(None, schema_registry_client=self.registry, conf=conf or None, keyring=kr)

    def read(self, data: bytes | None = None, keyring: Keyring | None = None, **conf: Any) -> tuple[Any, Any]:
        de = self.reader(keyring, **conf)
        return de(self.forged if data is None else data, value_ctx(self.topic)), de

    def as_written(self) -> Any:
        """The record as the tagged schema's bytes hold it: ciphertext in the tagged fields (no key used)."""
        if self.fmt == "avro":
            return schemaless_reader(io.BytesIO(self.data[5:]), parse_schema(json.loads(self.text)), None, False)
        return json.loads(self.data[5:])


# -- the attack -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_record_reframed_with_an_untagged_version_is_refused(fmt: str, keyring: Keyring) -> None:
    swap = Swap(fmt, keyring)
    assert swap.read(swap.data)[0] == swap.record  # the record as written reads as it should
    with pytest.raises(DecryptionError) as caught:
        swap.read()
    exc = caught.value
    assert type(exc) is DecryptionError  # tampering: logged as such, never "erased" or "no access"
    assert exc.subject == f"{swap.topic}-value" and exc.field_path == "$.email" and exc.key_id is not None
    assert "fieldcrypt.on.untagged.ciphertext=accept" in str(exc)
    written = swap.as_written()
    for name in PII:  # neither the ciphertext nor the plaintext is in the message
        assert written[name] not in str(exc) and str(swap.record[name]) not in str(exc)
    assert key_id_of(written["email"]) == exc.key_id


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_opt_out_reads_them_as_they_are_and_counts_them(fmt: str, keyring: Keyring) -> None:
    swap = Swap(fmt, keyring)
    out, de = swap.read(**ACCEPT)
    assert out == swap.as_written()  # the values as the bytes hold them: ciphertext, nothing decrypted
    stats = de.stats
    assert (stats.records, stats.records_untagged, stats.errors) == (1, 1, 0)
    assert stats.untagged_ciphertext == 3
    assert stats.untagged_ciphertext_by_field == {"$.email": 1, "$.ssn": 1, "$.fullName": 1}
    assert stats.as_dict()["untagged_ciphertext_by_field"] == {"$.email": 1, "$.ssn": 1, "$.fullName": 1}
    # the default refuses, and counts the refusal as an error
    _, strict = swap.read(swap.data)
    with pytest.raises(DecryptionError):
        strict(swap.forged, value_ctx(swap.topic))
    assert strict.stats.errors_by_type == {"DecryptionError": 1} and strict.stats.untagged_ciphertext == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_version_that_drops_some_tags(fmt: str, keyring: Keyring) -> None:
    """Version 2 still tags email (and the data-subject id): it is decrypted, and ssn and fullName, no longer
    tagged, are refused or counted. (Written in value format 1, where the first value carries the record's nonce
    and nothing binds how many values follow. In format 2 the record's value count is bound, and the engine
    refuses the record as tampered before any untagged value is looked at; without the first value, later ones
    cannot be read in either format.)"""
    if "fieldcrypt.format.version" in WRITE_CONF:
        with pytest.raises(DecryptionError):
            Swap(fmt, keyring, keep=("email", "customerId")).read(**ACCEPT)
    swap = Swap(fmt, keyring, keep=("email", "customerId"), conf=FORMAT_1)
    if decode_text(swap.as_written()["email"])[0] != 1:  # a release that cannot pin format 1 (yet)
        with pytest.raises(DecryptionError):
            swap.read(**ACCEPT)
        return
    with pytest.raises(DecryptionError) as caught:
        swap.read()
    assert caught.value.field_path == "$.ssn" and type(caught.value) is DecryptionError
    out, de = swap.read(**ACCEPT)
    written = swap.as_written()
    assert out["email"] == swap.record["email"]  # still tagged: decrypted
    assert (out["ssn"], out["fullName"]) == (written["ssn"], written["fullName"])
    assert de.stats.untagged_ciphertext_by_field == {"$.ssn": 1, "$.fullName": 1}
    assert de.stats.records_untagged == 0 and de.stats.values_decrypted == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_values_have_paths_of_the_shape_never_of_the_data(fmt: str, keyring: Keyring) -> None:
    swap = Swap(fmt, keyring, kind="order")
    with pytest.raises(DecryptionError):
        swap.read()
    out, de = swap.read(**ACCEPT)
    expected = {
        "$.customer.name": 1,
        "$.customer.phone": 1,
        "$.shipTo.street": 1,
        "$.shipTo.city": 1,
        "$.shipTo.postcode": 1,
        "$.previousAddresses[].street": 2,
        "$.previousAddresses[].city": 2,
        "$.previousAddresses[].postcode": 2,
        "$.contacts[*].email": 2 if fmt == "avro" else 1,  # map keys ("work", "home") are data: never shown
    }
    if fmt == "avro":
        expected["$.signature"] = 1  # a bytes value: the ciphertext as raw bytes
    assert de.stats.untagged_ciphertext_by_field == expected
    assert out == swap.as_written()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_shredded_or_denied_key_is_still_a_key_the_store_knows(
    fmt: str, keyring: Keyring, store_url: str, tmp_path: Path
) -> None:
    swap = Swap(fmt, keyring)
    other_kek = fieldcrypt.create_local_kek(tmp_path / "other-kek.json")
    with Keyring(store_url, other_kek) as stranger:  # the same key store, a KEK that wraps none of its keys
        with pytest.raises(AccessDeniedError):
            stranger.decryption_key(key_id_of(swap.as_written()["email"]))  # type: ignore[arg-type]
        with pytest.raises(DecryptionError, match=r"\$\.email"):
            swap.read(keyring=stranger)
    keyring.shred_person("cust-1", reason="erasure request")
    with pytest.raises(KeyShreddedError):
        keyring.decryption_key(key_id_of(swap.as_written()["email"]))  # type: ignore[arg-type]
    with pytest.raises(DecryptionError) as caught:
        swap.read()
    assert type(caught.value) is DecryptionError
    out, de = swap.read(**ACCEPT)
    assert de.stats.untagged_ciphertext == 3 and out["email"] == swap.as_written()["email"]


def forged_value(key_id: int, *, text: bool = True) -> Any:
    """A value with a ciphertext's layout (format 1, value index 1) naming ``key_id``: no key made it."""
    blob = b"\x01" + key_id.to_bytes(4, "big") + b"\x01" + os.urandom(24)
    return encode_text(blob) if text else blob


def write_untagged(fmt: str, swap: Swap, record: dict[str, Any], keyring: Keyring) -> tuple[bytes, Any, str]:
    """``record`` written with the swap's schema untagged, to a new topic; a fieldcrypt deserializer for it."""
    untagged_schema = untag(swap.text)
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    de: Any
    if fmt == "avro":
        data = AvroSerializer(swap.registry, untagged_schema, keyring=keyring)(record, value_ctx(topic))
        de = AvroDeserializer(swap.registry, keyring=keyring)
    else:
        data = JSONSerializer(untagged_schema, swap.registry, keyring=keyring)(record, value_ctx(topic))
        de = JSONDeserializer(None, schema_registry_client=swap.registry, keyring=keyring)
    assert data is not None
    return data, de, topic


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lookalike_naming_a_key_the_store_never_held_is_left_alone(fmt: str, keyring: Keyring) -> None:
    """A random token can parse as a ciphertext by chance (and so can one of another key store): it is returned,
    not counted, not refused."""
    swap = Swap(fmt, keyring)
    record = dict(swap.record)
    record["country"] = forged_value(0x0BADC0DE)
    data, de, topic = write_untagged(fmt, swap, record, keyring)
    assert de(data, value_ctx(topic)) == record
    assert de.stats.untagged_ciphertext == 0 and de.stats.errors == 0


def test_a_tagged_value_whose_plaintext_is_a_ciphertext_is_not_an_untagged_one(keyring: Keyring) -> None:
    """A value the engine decrypted is a tagged value, whatever its plaintext looks like (a ciphertext encrypted
    again by a pipeline that read it without keys): only values still in place after decryption are judged."""
    swap = Swap("avro", keyring)
    inner = swap.as_written()["email"]
    record = customer(2, email=inner)
    ser = AvroSerializer(swap.registry, swap.text, keyring=keyring)
    topic = f"twice-{uuid.uuid4().hex[:8]}"
    de = AvroDeserializer(swap.registry, keyring=keyring)
    assert de(ser(record, value_ctx(topic)), value_ctx(topic))["email"] == inner
    assert de.stats.untagged_ciphertext == 0


def test_json_escapes_do_not_hide_a_ciphertext(keyring: Keyring) -> None:
    r"""JSON text may spell "A" as \u0041 (and any character so): the check runs on the decoded document."""
    swap = Swap("json", keyring)
    document = swap.data[5:].decode()
    ct = swap.as_written()["email"]
    escaped = document.replace(ct, "".join(f"\\u{ord(c):04x}" for c in ct))
    assert escaped != document and ct not in escaped
    with pytest.raises(DecryptionError, match=r"\$\.email"):
        swap.read(swap.forged[:5] + escaped.encode())


def test_json_base64_values_are_recognised(keyring: Keyring) -> None:
    """A value of a ``contentEncoding: base64`` property carries padded base64: recognised as well."""
    swap = Swap("json", keyring)
    written = swap.as_written()
    padded = encode_base64(decode_text(written["email"]))
    assert key_id_of(padded) == key_id_of(written["email"])
    topic = f"b64-{uuid.uuid4().hex[:8]}"
    schema = json.loads(untag(swap.text))
    schema["properties"]["email"]["contentEncoding"] = "base64"
    schema["properties"]["email"].pop("format", None)
    record = dict(swap.record, email=padded)
    data = JSONSerializer(json.dumps(schema), swap.registry, keyring=keyring)(record, value_ctx(topic))
    de = JSONDeserializer(None, schema_registry_client=swap.registry, keyring=keyring)
    with pytest.raises(DecryptionError, match=r"\$\.email"):
        de(data, value_ctx(topic))


# -- the opt-out and its configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_setting_is_checked_and_listed(fmt: str, keyring: Keyring) -> None:
    swap = Swap(fmt, keyring)
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.on\.untagged\.ciphertext must be one of raise, accept"):
        swap.reader(**{"fieldcrypt.on.untagged.ciphertext": "ignore"})
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.on\.untagged\.ciphertext"):
        swap.reader(**{"fieldcrypt.on.untagged.ciphertxt": "accept"})  # a typo lists the valid keys
    assert swap.reader(**{"fieldcrypt.on.untagged.ciphertext": "raise"})(swap.data, value_ctx(swap.topic))


def test_the_count_is_exported_to_prometheus(keyring: Keyring) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from fieldcrypt.metrics import register_prometheus

    swap = Swap("avro", keyring)
    _, de = swap.read(**ACCEPT)
    metrics = CollectorRegistry()
    register_prometheus(reader=de, registry=metrics)
    labels = {"serde": "reader", "role": "deserializer", "field": "$.email"}
    assert metrics.get_sample_value("fieldcrypt_values_untagged_ciphertext_total", labels) == 1
    text = generate_latest(metrics).decode()
    assert swap.as_written()["email"] not in text


# -- the walk: what it looks at, and the paths it names ---------------------------------------------------------


def test_candidates_look_only_at_str_and_bytes_that_start_like_a_ciphertext() -> None:
    ct, raw = forged_value(7), forged_value(7, text=False)
    record = {
        "a": "Amsterdam is a city with a long name",  # "A" then "m": in the range, parses as nothing
        "b": "AQ",  # too short
        "c": ct,
        "d": [1, {"e": raw, "f": ("ns.R", {"g": ct})}],
        "h": b"\x00" * 40,
        "i": 1.5,
    }
    found = candidates(record)
    assert found is not None
    assert [(at, key_id_of(v)) for at, v in found if key_id_of(v) is not None] == [
        (("c",), 7),
        (("d", 1, "e"), 7),
        (("d", 1, "f", "g"), 7),
    ]
    assert candidates({"x": "plain", "y": [b"\x00", 3]}) is None
    assert candidates(ct) == [((), ct)]
    names = declared_names({"type": "record", "name": "R", "fields": [{"name": "d", "type": "string"}]})
    assert field_path(("d", 1, "secret@example.com"), names) == "$.d[][*]"


def test_a_deep_document_does_not_exhaust_the_stack() -> None:
    deep: Any = forged_value(9)
    for _ in range(50_000):
        deep = [deep]
    found = candidates(deep)
    assert found is not None and len(found[0][0]) == 50_000


# -- fieldcrypt verify and fieldcrypt scan: an operator sees the swap -------------------------------------------


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's own settings may leak into the command-line runs."""
    for name in (
        "FIELDCRYPT_CONFIG",
        "FIELDCRYPT_STORE",
        "FIELDCRYPT_KEK",
        "FIELDCRYPT_BOOTSTRAP_SERVERS",
        "FIELDCRYPT_KAFKA_CONFIG",
        "FIELDCRYPT_SCHEMA_REGISTRY",
        "FIELDCRYPT_REGISTRY_USER_INFO",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.mark.broker
def test_verify_and_scan_report_the_swap_per_subject_and_field(
    broker: Any, http_registry: Any, tmp_path: Path, isolated_env: None, capfd: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka import Producer

    from fieldcrypt.cli import main

    topic = f"swap-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    kek = fieldcrypt.create_local_kek(tmp_path / "cli-kek.json")
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'cli-keys.db'}")
    registry = SchemaRegistryClient({"url": http_registry.url})
    text = load_schema("customer_event.avsc")
    with Keyring(store, kek) as kr:
        good = AvroSerializer(registry, text, keyring=kr)(customer(1), value_ctx(topic))
        v2 = registry.register_schema(f"{topic}-value", Schema(untag(text), "AVRO"))
        forged = b"\x00" + v2.to_bytes(4, "big") + good[5:]
        written = schemaless_reader(io.BytesIO(good[5:]), parse_schema(json.loads(text)), None, False)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for value in (good, forged):
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0
    common = [topic, "--bootstrap-servers", broker.bootstrap_servers, "--schema-registry", http_registry.url]
    common += ["--timeout", "10"]
    keys = ["--store", store, "--kek", kek]

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        out, err = capfd.readouterr()
        for name in PII:  # never a value: neither the ciphertext nor the plaintext
            assert written[name] not in out + err and str(customer(1)[name]) not in out + err
        return code, out

    code, out = run("verify", *common, *keys, "--json")
    report = json.loads(out)
    assert code == 7 and report["findings"]["untagged_ciphertext"] == 3 and report["clean"] is False
    where = [{"partition": 0, "offset": 1}]
    assert report["untagged_ciphertext"] == [
        {"subject": f"{topic}-value", "field": f, "values": 1, "offsets": where, "more_offsets": 0}
        for f in ("$.email", "$.fullName", "$.ssn")
    ]
    # the good record decrypts (3 values of its domain); the forged one has no tagged value: a finding, in no domain row
    assert report["rows"][0]["records"] == 1 and report["rows"][0]["readable"] == 3
    code, out = run("verify", *common, *keys)
    assert code == 7
    assert f"ciphertext in an untagged field: subject '{topic}-value' field '$.email': 1 value(s) at 0:1" in out
    assert "3 ciphertext value(s) in untagged fields" in out

    for extra in ([], keys):  # by format alone, and with the key store (which knows these keys)
        code, out = run("scan", *common, *extra, "--json")
        report = json.loads(out)
        assert code == 7 and report["findings"]["ciphertext_in_untagged_fields"] == 3
        [subject] = [s for s in report["subjects"] if s["subject"] == f"{topic}-value"]
        untagged = {f["field"]: f for f in subject["fields"] if not f["tagged"]}
        for name in PII:
            assert untagged[f"$.{name}"]["ciphertext"] == 1 and untagged[f"$.{name}"]["offsets"] == where
        tagged = {f["field"]: f for f in subject["fields"] if f["tagged"]}
        assert tagged["$.email"]["ciphertext"] == 1  # the good record's, where the schema tags it
    code, out = run("scan", *common)
    assert code == 7 and "3 fieldcrypt ciphertext(s) in untagged fields" in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_newer_writers_value_in_an_untagged_field_is_not_passed_through(fmt: str, keyring: Keyring) -> None:
    """A format-2 value with a flag this release does not read (a deterministic value, planned) names its key in
    the same header place: in an untagged field, naming a key the store holds, it is refused like any other."""
    key_id = keyring.encryption_key("orders-value").key_id
    newer = encode_text(b"\x02\x01" + key_id.to_bytes(4, "big") + os.urandom(32))
    assert key_id_of(newer) == key_id
    swap = Swap(fmt, keyring)
    record = dict(swap.record, country=newer)
    data, de, topic = write_untagged(fmt, swap, record, keyring)
    with pytest.raises(DecryptionError):
        de(data, value_ctx(topic))


def test_a_lanes_screen_finds_what_the_walk_finds() -> None:
    """``avro_screen`` (a deserializer lane's look for ciphertext left in a decrypted record, compiled per schema)
    against ``candidates``, the walk it stands in for: the same answer for records of every field kind, values inside
    and outside the range a ciphertext's text starts in, records missing fields, and values of unexpected types."""
    import random

    from fieldcrypt.core.lookalike import avro_screen

    schema = parse_schema(
        {
            "type": "record",
            "name": "S",
            "fields": [
                {"name": "s", "type": "string"},
                {"name": "t", "type": "string"},
                {"name": "n", "type": "long"},
                {"name": "d", "type": "double"},
                {"name": "b", "type": "boolean"},
                {"name": "o", "type": ["null", "string", "bytes", {"type": "array", "items": "string"}]},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["AQAAAAAAAAAAAAAAAAAAAAAAAAA", "X"]}},
            ],
        }
    )
    screen = avro_screen(schema)
    assert screen is not candidates  # compiled for this schema
    blob = bytes([2, 0, 0, 0, 0, 7, 0]) + bytes(range(40))
    plain = ["", "plain", "Ag", "Af" + "z" * 40, "B" * 30]  # outside the range, or too short to be a ciphertext
    like = ["AgAAAAAH", encode_text(blob), "AQ" + "A" * 30, "Aw" + "A" * 30]  # inside it
    rng = random.Random(5)

    def text() -> str:
        return rng.choice(like) if rng.random() < 0.08 else rng.choice(plain)

    found = 0
    for _ in range(3000):
        record: dict[str, Any] = {
            "s": text(),
            "t": text(),
            "n": rng.randrange(-5, 5),
            "d": 1.5,
            "b": rng.random() < 0.5,
            "o": rng.choice([None, None, text()]) if rng.random() < 0.9 else rng.choice([b"", blob, [], [text()]]),
            "e": "X" if rng.random() < 0.9 else "AQAAAAAAAAAAAAAAAAAAAAAAAAA",
        }
        if rng.random() < 0.05:
            record.pop(rng.choice(list(record)))  # a record missing a field
        expected = candidates(record)
        assert screen(record) == expected, record
        found += expected is not None
    assert 300 < found < 2700  # both answers were compared many times
    assert screen(["not", "a", "record"]) == candidates(["not", "a", "record"])
    # a schema with containers or bytes: such a value always sends the record to the walk, as the walk's own
    # first pass does
    boxes = parse_schema(
        {
            "type": "record",
            "name": "B",
            "fields": [{"name": "y", "type": "bytes"}, {"name": "m", "type": {"type": "map", "values": "string"}}],
        }
    )
    for record in ({"y": b"", "m": {}}, {"y": blob, "m": {}}, {"y": b"", "m": {"k": like[1]}}):
        assert avro_screen(boxes)(record) == candidates(record)
    assert avro_screen({"type": "array", "items": "string"}) is candidates
