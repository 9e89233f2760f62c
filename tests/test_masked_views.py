"""Masked views (issue 18, part 3), through the public serdes with a ``mock://`` registry, Avro and JSON Schema: a
consumer with the value's key reads the plaintext; one granted only the masked view of the key domain reads the
mask; one with neither gets ``fieldcrypt.on.denied`` for that field while the others stay readable. Shredding a
person erases value and mask; an erased value never reads as its mask; a tampered view is tampering; a producer
pinned to format 1 with masks, an unknown mask, a mask on bytes or two masks on one value are refused; a consumer
configured without the producers' masks learns of it."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    Denied,
    EncryptionError,
    Erased,
    Keyring,
    PolicyError,
    UnsupportedFormatError,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

TOPIC = "contacts"
SUBJECT = "contacts-value"  # the default key domain
AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Contact",
    "namespace": "example.crm",
    "fields": [
        {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["EMAIL"]},
        {"name": "fullName", "type": "string", "confluent:tags": ["NAME"]},
        {"name": "ssn", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "country", "type": "string"},
    ],
}
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Contact",
    "type": "object",
    "properties": {
        "customerId": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"type": "string", "confluent:tags": ["EMAIL"]},
        "fullName": {"type": "string", "confluent:tags": ["NAME"]},
        "ssn": {"type": ["string", "null"], "confluent:tags": ["PII"]},
        "country": {"type": "string"},
    },
    "required": ["customerId", "email", "fullName", "country"],
    "additionalProperties": False,
}
PATHS = {
    "avro": {f: f"example.crm.Contact.{f}" for f in ("email", "fullName", "ssn")},
    "json": {f: f"$.{f}" for f in ("email", "fullName", "ssn")},
}
CONF: dict[str, Any] = {
    "fieldcrypt.tags": ["PII", "EMAIL", "NAME"],
    "fieldcrypt.tag.domains": {"EMAIL": "contact"},
    "fieldcrypt.masks": {"EMAIL": "email", "NAME": "name"},
}
#: the key domains of these records: the values' and their masked views'
DOMAINS = ("contact", "contact/masked", SUBJECT, f"{SUBJECT}/masked")
PEOPLE = ("c1", "c2")
FORMATS = ("avro", "json")


def record(person: str = "c1", **over: Any) -> dict[str, Any]:
    rec = {
        "customerId": person,
        "email": f"jane.{person}@Example.com",
        "fullName": "Jane van Doe",
        "ssn": "123-45-6789",
        "country": "DE",
    }
    rec.update(over)
    return rec


def keyring_with(store: str, keks: dict[str, str], people: tuple[str, ...] = ()) -> Keyring:
    """A keyring holding the KEK of each key domain of ``keks`` (domain -> KEK URI), each domain's keys (of
    ``people``) wrapped by its own KEK.

    Today a Keyring wraps every new key with its first KEK, so the keys of each (domain, person) are made here first,
    each by a keyring holding only its domain's KEK; the keyring returned holds them all and unwraps each key with the
    KEK that wrapped it. Once per-domain KEKs land, this helper is ``Keyring(store, keks)`` (and needs no people)."""
    for domain, kek in keks.items():
        with Keyring(store, kek) as maker:
            for person in people:
                maker.encryption_key(domain, person)
    return Keyring(store, list(dict.fromkeys(keks.values())))


class World:
    """One key store, one KEK per key domain, the producer's keyring, and the registry."""

    def __init__(self, tmp: Path, registry: Any) -> None:
        self.tmp = tmp
        self.registry = registry
        self.store = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
        self.keks = {d: fieldcrypt.create_local_kek(tmp / f"kek-{i}.json") for i, d in enumerate(DOMAINS)}
        self.nobody = fieldcrypt.create_local_kek(tmp / "kek-nobody.json")
        self.opened: list[Keyring] = []
        self.producer = self._keep(keyring_with(self.store, self.keks, PEOPLE))

    def _keep(self, keyring: Keyring) -> Keyring:
        self.opened.append(keyring)
        return keyring

    def reader(self, *domains: str) -> Keyring:
        """A consumer's keyring granted these key domains (their KEKs) and no other."""
        keks = [self.keks[d] for d in domains] or [self.nobody]
        return self._keep(Keyring(self.store, keks))

    def serializer(self, fmt: str, conf: dict[str, Any] | None = None, keyring: Keyring | None = None) -> Any:
        conf = CONF if conf is None else conf
        keyring = keyring or self.producer
        if fmt == "avro":
            return AvroSerializer(self.registry, json.dumps(AVRO), conf=conf, keyring=keyring)
        return JSONSerializer(json.dumps(JSON_SCHEMA), self.registry, conf=conf, keyring=keyring)

    def deserializer(self, fmt: str, keyring: Keyring, **extra: Any) -> Any:
        conf = {**CONF, **extra}
        if fmt == "avro":
            return AvroDeserializer(self.registry, conf=conf, keyring=keyring)
        return JSONDeserializer(None, schema_registry_client=self.registry, conf=conf, keyring=keyring)

    def ciphertexts(self, fmt: str, data: bytes) -> dict[str, str]:
        """The record as a consumer without fieldcrypt sees it (tagged values as base64 text)."""
        plain: Any = (
            PlainAvroDeserializer(self.registry)
            if fmt == "avro"
            else PlainJSONDeserializer(None, schema_registry_client=self.registry)
        )
        found: dict[str, str] = plain(data, value_ctx(TOPIC))
        return found


@pytest.fixture
def world(tmp_path: Path, registry: Any) -> Iterator[World]:
    w = World(tmp_path, registry)
    yield w
    for keyring in w.opened:
        keyring.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_consumer_reads_what_it_was_granted(fmt: str, world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fieldcrypt")
    rec = record()
    before = copy.deepcopy(rec)
    data = world.serializer(fmt)(rec, value_ctx(TOPIC))
    assert rec == before  # the caller's record is never changed
    paths = PATHS[fmt]
    marker = {"fieldcrypt.on.denied": "marker"}

    full = world.deserializer(fmt, world.reader("contact", SUBJECT), **marker)
    assert full(data, value_ctx(TOPIC)) == rec  # the value's key: the plaintext, never the mask
    assert full.stats.masked == 0 and not full.stats.masked_by_field

    masked = world.deserializer(fmt, world.reader("contact/masked", f"{SUBJECT}/masked"), **marker)
    got = masked(data, value_ctx(TOPIC))
    assert got == dict(
        rec, email="***@example.com", fullName="J. V. D.", ssn=Denied(paths["ssn"], got["ssn"].key_id)
    )  # the views; ssn has none (PII is not masked): on.denied
    stats = masked.stats
    assert stats.masked == 2 and stats.masked_by_field == {paths["email"]: 1, paths["fullName"]: 1}
    assert stats.denied == 1 and stats.denied_by_field == {paths["ssn"]: 1}
    assert stats.values == 3 and stats.values_decrypted == 2  # a masked value is read (its view), not denied

    # neither the value's key nor its view's (contact): on.denied for that field, the others read as granted
    other = world.deserializer(fmt, world.reader(SUBJECT), **marker)
    got = other(data, value_ctx(TOPIC))
    assert got == dict(rec, email=Denied(paths["email"], got["email"].key_id))
    assert other.stats.masked == 0 and other.stats.denied_by_field == {paths["email"]: 1}

    nobody = world.deserializer(fmt, world.reader(), **marker)
    got = nobody(data, value_ctx(TOPIC))
    assert all(isinstance(got[f], Denied) for f in ("email", "fullName", "ssn")) and got["country"] == "DE"

    # the default on.denied (raise) does not stop the views: only the value without one raises
    strict = world.deserializer(fmt, world.reader("contact/masked", f"{SUBJECT}/masked"))
    assert strict(world.serializer(fmt)(record(ssn=None), value_ctx(TOPIC)), value_ctx(TOPIC)) == record(
        email="***@example.com", fullName="J. V. D.", ssn=None
    )
    with pytest.raises(AccessDeniedError) as denied:
        strict(data, value_ctx(TOPIC))
    assert denied.value.field_path == paths["ssn"]

    logged = " ".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for secret in ("jane.", "Jane", "***@", "J. V. D.", "123-45"):
        assert secret not in logged


@pytest.mark.parametrize("fmt", FORMATS)
def test_shredding_a_person_erases_the_value_and_its_mask(fmt: str, world: World) -> None:
    ser = world.serializer(fmt)
    first, second = (ser(record(p), value_ctx(TOPIC)) for p in PEOPLE)
    report = world.producer.shred_person("c1")
    assert {r.domain for r in report.destroyed} == set(DOMAINS)  # the views' keys are the person's keys too
    erased = {"fieldcrypt.on.erased": "marker", "fieldcrypt.on.denied": "marker"}
    for granted in (("contact", SUBJECT), ("contact/masked", f"{SUBJECT}/masked")):
        de = world.deserializer(fmt, world.reader(*granted), **erased)
        got = de(first, value_ctx(TOPIC))
        assert all(isinstance(got[f], Erased) for f in ("email", "fullName", "ssn")), granted
        assert de.stats.masked == 0 and de.stats.erased == 3
        assert de(second, value_ctx(TOPIC))["email"] in ("jane.c2@Example.com", "***@example.com")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_erased_value_never_reads_as_its_mask(fmt: str, world: World) -> None:
    """The value's key shredded while its view's key is not (a shred of the domain ``contact`` alone): erased wins."""
    data = world.serializer(fmt)(record(ssn=None), value_ctx(TOPIC))
    world.producer.shred_domain("contact")
    masked = world.deserializer(fmt, world.reader("contact/masked", f"{SUBJECT}/masked"))
    got = masked(data, value_ctx(TOPIC))
    assert got["email"] == "<erased>" and got["fullName"] == "J. V. D."  # on.erased=null; a required field
    assert masked.stats.erased_by_field == {PATHS[fmt]["email"]: 1} and masked.stats.masked == 1


def _tampered_view(world: World, fmt: str, data: bytes, field: str) -> bytes:
    text = world.ciphertexts(fmt, data)[field]
    blob = _wire.decode_text(text)
    view = _wire.parse_value(blob)[6]
    assert view is not None
    at = blob.index(view[1]) + 3  # a byte of the view's sealed text
    forged = _wire.encode_text(blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :])
    assert len(forged) == len(text) and data.count(text.encode()) == 1
    return data.replace(text.encode(), forged.encode())


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tampered_view_is_tampering_never_denied(fmt: str, world: World) -> None:
    data = _tampered_view(world, fmt, world.serializer(fmt)(record(), value_ctx(TOPIC)), "email")
    for on_denied in ("raise", "null", "marker"):
        masked = world.deserializer(
            fmt, world.reader("contact/masked", f"{SUBJECT}/masked"), **{"fieldcrypt.on.denied": on_denied}
        )
        with pytest.raises(DecryptionError) as tampered:
            masked(data, value_ctx(TOPIC))
        assert type(tampered.value) is DecryptionError and tampered.value.field_path == PATHS[fmt]["email"]
        assert tampered.value.key_id is not None
    # a reader of the value does not open the view (it may hold no key of the view's domain): the value is intact
    full = world.deserializer(fmt, world.reader("contact", SUBJECT))
    assert full(data, value_ctx(TOPIC)) == record()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_view_moved_to_another_field_is_tampering(fmt: str, world: World) -> None:
    data = world.serializer(fmt)(record(fullName="Jane Doe"), value_ctx(TOPIC))
    texts = world.ciphertexts(fmt, data)
    email, name = (_wire.decode_text(texts[f]) for f in ("email", "fullName"))
    e_view, n_view = _wire.parse_value(email)[6], _wire.parse_value(name)[6]
    assert e_view is not None and n_view is not None
    swapped = name.replace(_wire.view_part(*n_view), _wire.view_part(n_view[0], e_view[1][: len(n_view[1])]))
    forged = data.replace(texts["fullName"].encode(), _wire.encode_text(swapped).encode())
    masked = world.deserializer(fmt, world.reader("contact/masked", f"{SUBJECT}/masked"))
    with pytest.raises(DecryptionError) as moved:
        masked(forged, value_ctx(TOPIC))
    assert type(moved.value) is DecryptionError


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_older_reader_calls_a_view_a_newer_format(fmt: str, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    data = world.serializer(fmt)(record(), value_ctx(TOPIC))
    monkeypatch.setattr(_wire, "_KNOWN_FLAGS", frozenset({0}))  # a release before masked views
    with pytest.raises(UnsupportedFormatError):
        world.deserializer(fmt, world.reader("contact", SUBJECT))(data, value_ctx(TOPIC))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_producer_pinned_to_format_1_with_masks_is_refused(fmt: str, world: World) -> None:
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.masks needs value format version 2"):
        world.serializer(fmt, {**CONF, "fieldcrypt.format.version": 1})
    world.serializer(fmt, {k: v for k, v in CONF.items() if k != "fieldcrypt.masks"} | {"fieldcrypt.format.version": 1})


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_consumer_without_the_producers_masks_learns_of_it(fmt: str, world: World) -> None:
    data = world.serializer(fmt)(record(), value_ctx(TOPIC))
    conf = {k: v for k, v in CONF.items() if k != "fieldcrypt.masks"}
    reader = world.reader("contact", SUBJECT)
    de = (
        AvroDeserializer(world.registry, conf=conf, keyring=reader)
        if fmt == "avro"
        else JSONDeserializer(None, schema_registry_client=world.registry, conf=conf, keyring=reader)
    )
    with pytest.raises(ConfigurationError) as mismatch:
        de(data, value_ctx(TOPIC))
    assert "fieldcrypt.masks" in str(mismatch.value) and PATHS[fmt]["email"] in str(mismatch.value)
    other = {**CONF, "fieldcrypt.masks": {"EMAIL": "email", "NAME": "email"}}
    with pytest.raises(ConfigurationError, match="masked views differ"):
        world.deserializer(fmt, reader, **other)(data, value_ctx(TOPIC))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_its_mask_cannot_read_refuses_the_record(fmt: str, world: World) -> None:
    ser = world.serializer(fmt)
    rec = record(email="no-at-sign-here")
    with pytest.raises(EncryptionError) as refused:
        ser(rec, value_ctx(TOPIC))
    err = refused.value
    assert err.field_path == PATHS[fmt]["email"] and err.subject == SUBJECT and "'email' mask" in str(err)
    assert "no-at-sign" not in str(err) and "Jane" not in str(err)
    assert rec == record(email="no-at-sign-here") and ser.stats.records == 0 and ser.stats.errors == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_mask_configuration_errors_name_what_is_wrong(fmt: str, world: World) -> None:
    def refused(conf: dict[str, Any]) -> str:
        with pytest.raises(ConfigurationError) as bad:
            world.serializer(fmt, {**CONF, **conf})
        return str(bad.value)

    unknown = refused({"fieldcrypt.masks": {"EMAIL": "emial"}})
    assert "emial" in unknown and all(m in unknown for m in ("card", "date", "email", "name", "phone"))
    assert "SECRET" in refused({"fieldcrypt.masks": {"SECRET": "email"}})  # not a tag of fieldcrypt.tags
    assert "reserved" in refused({"fieldcrypt.domain": "people/masked"})
    assert "reserved" in refused({"fieldcrypt.tag.domains": {"EMAIL": "contact/masked"}})
    assert "must map tag names" in refused({"fieldcrypt.masks": ["email"]})
    with pytest.raises(ConfigurationError, match="reserved"):  # the reader's default domain too
        world.deserializer(fmt, world.reader(), **{"fieldcrypt.domain": "x/masked"})


def test_two_masks_on_one_value_or_a_mask_on_bytes_is_a_policy_error(world: World) -> None:
    both = {**CONF, "fieldcrypt.masks": {"EMAIL": "email", "NAME": "name"}}
    two = copy.deepcopy(AVRO)
    two["fields"][1]["confluent:tags"] = ["EMAIL", "NAME"]
    with pytest.raises(PolicyError) as several:
        AvroSerializer(world.registry, json.dumps(two), conf=both, keyring=world.producer)
    assert several.value.field_path == "example.crm.Contact.email" and "several masks" in str(several.value)
    raw = copy.deepcopy(AVRO)
    raw["fields"][2]["type"] = "bytes"
    with pytest.raises(PolicyError) as binary:
        AvroSerializer(world.registry, json.dumps(raw), conf=both, keyring=world.producer)
    assert binary.value.field_path == "example.crm.Contact.fullName" and "only string values" in str(binary.value)
    b64 = copy.deepcopy(JSON_SCHEMA)
    b64["properties"]["fullName"]["contentEncoding"] = "base64"
    with pytest.raises(PolicyError) as encoded:
        JSONSerializer(json.dumps(b64), world.registry, conf=both, keyring=world.producer)
    assert encoded.value.field_path == "$.fullName"
    split = copy.deepcopy(JSON_SCHEMA)  # allOf: two schemas of one value, each with another mask
    split["properties"]["fullName"] = {
        "allOf": [{"type": "string", "confluent:tags": ["NAME"]}, {"confluent:tags": ["EMAIL"]}]
    }
    with pytest.raises(PolicyError) as merged:
        JSONSerializer(json.dumps(split), world.registry, conf=both, keyring=world.producer)
    assert merged.value.field_path is not None and "masks" in str(merged.value)


# -- schema lint and scan know masked fields --------------------------------------------------------------------------
MASK_FLAGS = ["--tag", "PII,EMAIL,NAME", "--tag-domain", "EMAIL=contact"]
MASK_FLAGS += ["--mask", "EMAIL=email", "--mask", "NAME=name"]


def test_schema_lint_shows_each_fields_masked_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fieldcrypt.cli import main
    from fieldcrypt.lint import lint_schema

    report = lint_schema(json.dumps(AVRO), "AVRO", conf=CONF, subject=SUBJECT)
    rows = {r.path: r for r in report.rows}
    assert rows["example.crm.Contact.email"].mask == "email" and rows["example.crm.Contact.email"].domain == "contact"
    assert rows["example.crm.Contact.fullName"].mask == "name" and rows["example.crm.Contact.ssn"].mask is None
    assert rows["example.crm.Contact.country"].mask is None
    for fmt, schema in (("avro", AVRO), ("json", JSON_SCHEMA)):
        path = tmp_path / ("contact.avsc" if fmt == "avro" else "contact.schema.json")
        path.write_text(json.dumps(schema))
        assert main(["schema", "lint", str(path), "--json", *MASK_FLAGS]) == 0
        found = {r["path"]: r["mask"] for r in json.loads(capsys.readouterr().out)[0]["rows"]}
        assert found[PATHS[fmt]["email"]] == "email" and found[PATHS[fmt]["ssn"]] is None
        assert main(["schema", "lint", str(path), *MASK_FLAGS]) == 0
        out = capsys.readouterr().out
        assert "MASKED VIEW" in out.upper() and "email (contact/masked)" in out and "name ((subject)/masked)" in out
    assert main(["schema", "lint", str(path), "--mask", "EMAIL=email"]) != 0  # EMAIL is not a tag of --tag
    assert "fieldcrypt.tags does not list" in capsys.readouterr().err


@pytest.mark.broker
def test_scan_counts_values_with_a_view_and_those_read_as_masks(
    broker: Any, http_registry: Any, world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from fieldcrypt.cli import main

    topic = f"masked-{world.tmp.name[-8:]}".replace("_", "-")
    broker.create_topic(topic)
    registry = SchemaRegistryClient({"url": http_registry.url})
    conf = {**CONF, "fieldcrypt.domain": SUBJECT}  # the key domains the world's KEKs were given
    ser = AvroSerializer(registry, json.dumps(AVRO), conf=conf, keyring=world.producer)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for person in PEOPLE:
        producer.produce(topic, value=ser(record(person, ssn=None), value_ctx(topic)), partition=0)
    assert producer.flush(30) == 0
    common = [topic, "--bootstrap-servers", broker.bootstrap_servers, "--schema-registry", http_registry.url]
    common += ["--timeout", "10", "--json", *MASK_FLAGS, "--domain", SUBJECT]

    code = main(["scan", *common])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    fields = {f["field"]: f for s in json.loads(out)["subjects"] for f in s["fields"] if f["tagged"]}
    assert (fields["$.email"]["ciphertext"], fields["$.email"]["with_view"]) == (2, 2)
    assert fields["$.fullName"]["with_view"] == 2
    keys = ["--store", world.store, "--kek", world.keks["contact/masked"], "--kek", world.keks[f"{SUBJECT}/masked"]]
    code = main(["scan", *common, *keys])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    fields = {f["field"]: f for s in json.loads(out)["subjects"] for f in s["fields"] if f["tagged"]}
    assert (fields["$.email"]["readable"], fields["$.email"]["masked"], fields["$.email"]["denied"]) == (2, 2, 0)
    assert "jane" not in out and "***@" not in out and "J. V. D." not in out


def test_a_stripped_view_or_one_naming_an_unknown_key_is_tampering_never_denied(world: World) -> None:
    """Found by review: a masked-only reader cannot authenticate the value itself, so a value of a masked field
    whose view was stripped (flags cleared), or whose view names a key id the store never held, must not read as
    "denied"."""
    fmt = "json"  # a text document: a value may change length in place
    data = world.serializer(fmt)(record(), value_ctx(TOPIC))
    text = world.ciphertexts(fmt, data)["email"]
    blob = _wire.decode_text(text)
    view = _wire.parse_value(blob)[6]
    assert view is not None
    part = _wire.view_part(*view)
    stripped = bytes([2, 0]) + blob[2:].replace(part, b"", 1)
    unknown = blob.replace(part, _wire.view_part(0x0BADBEEF, view[1]), 1)
    masked = world.deserializer(
        fmt, world.reader("contact/masked", f"{SUBJECT}/masked"), **{"fieldcrypt.on.denied": "null"}
    )
    for forged in (stripped, unknown):
        with pytest.raises(DecryptionError) as tampered:
            masked(data.replace(text.encode(), _wire.encode_text(forged).encode()), value_ctx(TOPIC))
        assert type(tampered.value) is DecryptionError


def test_a_masked_json_value_with_a_min_length_is_refused(tmp_path: Path) -> None:
    """Found by review: a reader given the mask would read a document its schema refuses (the mask is shorter)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from fieldcrypt import Keyring, PolicyError, create_key_store, create_local_kek
    from fieldcrypt.json_schema import JSONSerializer

    schema = {
        "type": "object",
        "title": "Signup",
        "properties": {"email": {"type": "string", "minLength": 8, "confluent:tags": ["EMAIL"]}},
    }
    store = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    with Keyring(store, create_local_kek(tmp_path / "kek.json")) as kr, pytest.raises(PolicyError, match="minLength"):
        registry = SchemaRegistryClient.new_client({"url": "mock://minlength"})
        conf = {"fieldcrypt.tags": ["EMAIL"], "fieldcrypt.masks": {"EMAIL": "email"}}
        JSONSerializer(json.dumps(schema), registry, keyring=kr, conf=conf)({"email": "jane@example.com"}, value_ctx())
