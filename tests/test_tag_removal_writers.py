"""A writer never drops a tag the subject carries (issue 15, item 2), written from the two attacks:

(a) after someone registers a version without a tag, a producer in latest mode (``use.latest.version``,
    ``use.schema.id``, ``use.latest.with.metadata``) writes the field in clear, although earlier producers of the
    subject encrypted it (recorded in the key store);
(b) schema authors tag only in the registry (``metadata.tags`` on version 1); a producer with an untagged local
    schema auto-registers version 2 without the metadata (a registry that does not inherit it) and writes the
    field in clear, with nothing in the key store yet.

Key store on SQLite and PostgreSQL; registries ``mock://`` and the development registry over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Metadata,
    MetadataProperties,
    MetadataTags,
    Schema,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from conftest import customer, load_schema, value_ctx
from pg import pg_schema_url

from fieldcrypt import ConfigurationError, Keyring, PolicyError, create_key_store
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def keyring(request: pytest.FixtureRequest, tmp_path: Path, kek_uri: str) -> Iterator[Keyring]:
    with STORES[request.param](tmp_path) as url, Keyring(create_key_store(url), kek_uri) as kr:
        yield kr


@dataclass(frozen=True)
class Fmt:
    name: str
    text: str
    email: str  # the path of the email field in plans and errors
    make: Callable[..., Any]

    def untagged_email(self) -> str:
        schema = json.loads(self.text)
        if self.name == "AVRO":
            del next(f for f in schema["fields"] if f["name"] == "email")["confluent:tags"]
        else:
            del schema["properties"]["email"]["confluent:tags"]
        return json.dumps(schema)

    def untagged(self) -> str:
        """The schema without any inline tag (what a producer that knows nothing of tags holds)."""

        def strip(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: strip(v) for k, v in node.items() if k != "confluent:tags"}
            if isinstance(node, list):
                return [strip(v) for v in node]
            return node

        return json.dumps(strip(json.loads(self.text)))

    def ser(self, registry: Any, schema: Any, keyring: Keyring, **conf: Any) -> Any:
        return self.make(registry, schema, conf, keyring)


AVRO = Fmt(
    "AVRO",
    load_schema("customer_event.avsc"),
    "CustomerEvent.email",
    lambda reg, schema, conf, kr: AvroSerializer(reg, schema, conf=conf, keyring=kr),
)
JSON = Fmt(
    "JSON",
    load_schema("customer_event.schema.json"),
    "$.email",
    lambda reg, schema, conf, kr: JSONSerializer(schema, reg, conf=conf, keyring=kr),
)
FORMATS = [pytest.param(AVRO, id="avro"), pytest.param(JSON, id="json")]
LATEST = {"auto.register.schemas": False, "use.latest.version": True}
EMAIL = b"person1@example.com"


def new_registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def metadata_tags(fmt: Fmt) -> Metadata:
    """``metadata.tags`` tagging email only, as schema authors put them in the registry (tuples: KNOWN-ISSUES)."""
    return Metadata(tags=MetadataTags({fmt.email: ("PII",)}), properties=None, sensitive=None)


def refused_naming(fmt: Fmt, subject: str) -> Any:
    return pytest.raises(PolicyError, match=f"{re.escape(fmt.email)}.*{re.escape(subject)}")


# -- (a) latest mode after a version without the tag ---------------------------------------------------------------

MODES: dict[str, Callable[[int], dict[str, Any]]] = {
    "use.latest.version": lambda sid: dict(LATEST),
    "use.schema.id": lambda sid: {"auto.register.schemas": False, "use.schema.id": sid},
    "use.latest.with.metadata": lambda sid: {"auto.register.schemas": False, "use.latest.with.metadata": {"v": "2"}},
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_latest_mode_writer_refuses_a_version_that_drops_a_tag_producers_encrypted(
    fmt: Fmt, mode: str, keyring: Keyring
) -> None:
    registry, t = new_registry(), topic()
    subject = f"{t}-value"
    assert EMAIL not in fmt.ser(registry, fmt.text, keyring)(customer(1), value_ctx(t))  # v1: email encrypted
    v2 = Schema(
        fmt.untagged_email(),
        fmt.name,
        metadata=Metadata(tags=None, properties=MetadataProperties({"v": "2"}), sensitive=None),
    )
    sid = registry.register_schema(subject, v2)  # someone registers a version without the tag
    ser = fmt.ser(registry, None, keyring, **MODES[mode](sid))  # no local schema_str to compare with
    for _ in range(2):  # and again: a refusal is not a cache miss that lets the next record through
        with refused_naming(fmt, subject):
            ser(customer(1), value_ctx(t))
    assert ser.stats.snapshot().errors == 2
    opted = fmt.ser(registry, None, keyring, **MODES[mode](sid), **{"fieldcrypt.allow.tag.removal": True})
    assert EMAIL in opted(customer(1), value_ctx(t))  # opted in: what the written schema says


@pytest.mark.parametrize("fmt", FORMATS)
def test_latest_mode_writers_record_what_they_encrypt(fmt: Fmt, keyring: Keyring) -> None:
    """Only latest-mode producers ever wrote: what they encrypted is recorded, so later writers are checked."""
    registry, t = new_registry(), topic()
    subject = f"{t}-value"
    registry.register_schema(subject, Schema(fmt.text, fmt.name))
    assert EMAIL not in fmt.ser(registry, None, keyring, **LATEST)(customer(1), value_ctx(t))
    registry.register_schema(subject, Schema(fmt.untagged_email(), fmt.name))
    with refused_naming(fmt, subject):  # another latest-mode producer, on the untagged latest version
        fmt.ser(registry, None, keyring, **LATEST)(customer(1), value_ctx(t))
    with refused_naming(fmt, subject):  # an auto-registering one with the untagged schema (now the latest, too)
        fmt.ser(registry, fmt.untagged_email(), keyring)(customer(1), value_ctx(t))
    with refused_naming(fmt, subject):  # nor by looking the untagged version up
        fmt.ser(registry, fmt.untagged_email(), keyring, **{"auto.register.schemas": False})(customer(1), value_ctx(t))


def test_one_key_store_check_per_subject_and_schema_id(keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, t = new_registry(), topic()
    subject = f"{t}-value"
    registry.register_schema(subject, Schema(AVRO.text, "AVRO"))
    calls: list[str] = []
    merge = keyring.merge_policy

    def counted(name: str, items: Any) -> list[str]:
        calls.append(name)
        return merge(name, items)

    monkeypatch.setattr(keyring, "merge_policy", counted)
    ser = AVRO.ser(registry, None, keyring, **LATEST)
    ser(customer(1), value_ctx(t))
    first = len(calls)
    assert 2 <= first <= 3  # the record read (under its name and its legacy name), and written the first time only
    for i in range(20):
        ser(customer(i), value_ctx(t))
    assert len(calls) == first  # not per record
    registry.register_schema(subject, Schema(AVRO.untagged_email(), "AVRO"))
    registry.clear_latest_caches()
    for _ in range(5):
        with pytest.raises(PolicyError):
            ser(customer(1), value_ctx(t))
    assert len(calls) == first + 2  # the new schema id checked once; its refusal is not re-read per record


def test_each_subject_is_checked_even_when_subjects_share_a_schema_id(http_registry: Any, keyring: Keyring) -> None:
    """Two subjects registering the same schema get the same id: what one subject allows, the other may not."""
    registry, t, u = SchemaRegistryClient({"url": http_registry.url}), topic(), topic()
    AVRO.ser(registry, AVRO.text, keyring)(customer(1), value_ctx(u))  # u's producers encrypt email
    untagged = Schema(AVRO.untagged_email(), "AVRO")
    registry.register_schema(f"{t}-value", untagged)  # t never carried the tag
    assert registry.register_schema(f"{u}-value", untagged) == registry.register_schema(f"{t}-value", untagged)
    ser = AVRO.ser(registry, None, keyring, **LATEST)
    assert EMAIL in ser(customer(1), value_ctx(t))  # allowed for t: nothing of t was ever encrypted
    with refused_naming(AVRO, f"{u}-value"):
        ser(customer(1), value_ctx(u))


def test_a_field_declared_plaintext_by_a_latest_writer_is_a_configuration_error(keyring: Keyring) -> None:
    schema = json.loads(AVRO.text)
    next(f for f in schema["fields"] if f["name"] == "currency")["confluent:tags"] = ["FINANCE"]
    text = json.dumps(schema)
    registry, t = new_registry(), topic()
    AVRO.ser(registry, text, keyring, **{"fieldcrypt.tags": ["PII", "FINANCE"]})(customer(1), value_ctx(t))
    other = AVRO.ser(registry, None, keyring, **LATEST, **{"fieldcrypt.plaintext.tags": ["FINANCE"]})
    with pytest.raises(ConfigurationError, match=r"CustomerEvent\.currency"):
        other(customer(1), value_ctx(t))


# -- (b) tags kept only in the registry's metadata, and a registry that does not inherit them ---------------------


class InheritingRegistry(type(new_registry())):  # type: ignore[misc]
    """confluent's mock registry, inheriting a subject's latest ``metadata`` into a new version registered
    without any (as Confluent Schema Registry does)."""

    def register_schema_full_response(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> Any:
        if schema.metadata is None:
            try:
                latest = self.get_latest_version(subject_name)
            except SchemaRegistryError:
                latest = None
            if latest is not None and latest.schema.metadata is not None:
                schema = Schema(schema.schema_str, schema.schema_type, schema.references, latest.schema.metadata)
        return super().register_schema_full_response(subject_name, schema, normalize_schemas)


class Registries:
    """A registry of one kind: confluent's ``mock://`` or the development registry over HTTP."""

    def __init__(self, kind: str, http: Any) -> None:
        self.kind = kind
        self.client = new_registry() if kind == "mock" else SchemaRegistryClient({"url": http.url})

    def author_registers(self, subject: str, fmt: Fmt, text: str, tags: dict[str, list[str]] | None) -> int:
        """What schema authors do with other tooling: register a version, metadata tags included."""
        meta = None if tags is None else Metadata(MetadataTags({k: tuple(v) for k, v in tags.items()}), None, None)
        return int(self.client.register_schema(subject, Schema(text, fmt.name, metadata=meta)))


@pytest.fixture(params=["mock", "http"])
def registries(request: pytest.FixtureRequest) -> Registries:
    return Registries(request.param, request.getfixturevalue("http_registry") if request.param == "http" else None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_auto_register_refuses_to_drop_tags_that_live_only_in_registry_metadata(
    fmt: Fmt, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    registries.author_registers(subject, fmt, fmt.untagged(), {fmt.email: ["PII"]})  # v1, by schema authors
    ser = fmt.ser(client, fmt.untagged(), keyring)  # no earlier producer: the key store knows nothing
    for _ in range(2):
        with refused_naming(fmt, subject):
            ser(customer(1), value_ctx(t))
    # the version was registered before the refusal (confluent's serializer registers it too; a registry that
    # inherits metadata would have kept the tag): every later writer of the subject refuses it as well
    with refused_naming(fmt, subject):
        fmt.ser(client, None, keyring, **LATEST)(customer(1), value_ctx(t))
    with refused_naming(fmt, subject):
        fmt.ser(client, fmt.untagged(), keyring)(customer(1), value_ctx(t))
    opted = fmt.ser(client, fmt.untagged(), keyring, **{"fieldcrypt.allow.tag.removal": True})
    assert EMAIL in opted(customer(1), value_ctx(t))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_inline_tag_only_the_registry_holds_is_refused_before_registering(
    fmt: Fmt, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    registries.author_registers(subject, fmt, fmt.text, None)  # v1 tagged inline, no producer wrote yet
    with refused_naming(fmt, subject):
        fmt.ser(client, fmt.untagged_email(), keyring)(customer(1), value_ctx(t))
    assert client.get_versions(subject) == [1]  # metadata could not have kept it: nothing registered


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_registry_that_inherits_metadata_keeps_the_tag(fmt: Fmt, keyring: Keyring) -> None:
    """The latest version tags email in metadata, the local schema does not, and the registry inherits the metadata
    into the new version: that version encrypts email, so it is written, encrypted."""
    registry, t = InheritingRegistry({"url": f"mock://{uuid.uuid4().hex}"}), topic()
    subject = f"{t}-value"
    registry.register_schema(subject, Schema(fmt.untagged(), fmt.name, metadata=metadata_tags(fmt)))
    local = json.loads(fmt.untagged())
    local["doc" if fmt.name == "AVRO" else "description"] = "version 2"  # a new version, not v1 again
    data = fmt.ser(registry, json.dumps(local), keyring)(customer(1), value_ctx(t))
    assert EMAIL not in data and sorted(registry.get_versions(subject)) == [1, 2]
    assert fmt.ser(registry, json.dumps(local), keyring)(customer(2), value_ctx(t)) is not None  # and again


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_new_subject_and_an_unchanged_one_need_nothing_more(
    fmt: Fmt, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    assert EMAIL in fmt.ser(client, fmt.untagged(), keyring)(customer(1), value_ctx(t))  # new subject: nothing lost
    u = topic()
    registries.author_registers(f"{u}-value", fmt, fmt.untagged(), {fmt.email: ["PII"]})
    local = Schema(fmt.untagged(), fmt.name, metadata=metadata_tags(fmt))  # the producer carries the same tags
    assert EMAIL not in fmt.ser(client, local, keyring)(customer(1), value_ctx(u))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_looked_up_version_keeps_the_tags_of_its_metadata(fmt: Fmt, http_registry: Any, keyring: Keyring) -> None:
    """auto.register.schemas=False: the registry answers the lookup of the untagged text with the version schema
    authors registered, metadata.tags included; that version encrypts email, so writers (the second one too, now
    that the key store records email) write, and are not refused for what their local text lacks."""
    client, t = SchemaRegistryClient({"url": http_registry.url}), topic()
    Registries("http", http_registry).client.register_schema(
        f"{t}-value", Schema(fmt.untagged(), fmt.name, metadata=metadata_tags(fmt))
    )
    for i in range(2):
        ser = fmt.ser(client, fmt.untagged(), keyring, **{"auto.register.schemas": False})
        assert EMAIL not in ser(customer(1), value_ctx(t)), i


class CountingLookups(type(new_registry())):  # type: ignore[misc]
    def __init__(self, conf: dict[str, Any], fail: SchemaRegistryError | None = None) -> None:
        super().__init__(conf)
        self.lookups = 0  # get_version: one per registered version read
        self.listings = 0  # get_versions: the subject's version numbers
        self.fail = fail

    def get_version(self, *args: Any, **kwargs: Any) -> Any:
        self.lookups += 1
        if self.fail is not None:
            raise self.fail
        return super().get_version(*args, **kwargs)

    def get_versions(self, *args: Any, **kwargs: Any) -> Any:
        self.listings += 1
        if self.fail is not None:
            raise self.fail
        return super().get_versions(*args, **kwargs)


def test_registry_lookups_per_subject_per_serializer(keyring: Keyring) -> None:
    """Each registered version is read once per serializer (versions do not change); the version numbers are
    listed once per subject (auto-register) or per subject and schema id (other modes), twice: live, and with the
    soft-deleted ones (a client that keeps none, as ``mock://``, lists the live ones again)."""
    registry, t = CountingLookups({"url": f"mock://{uuid.uuid4().hex}"}), topic()
    registry.register_schema(f"{t}-value", Schema(AVRO.untagged(), "AVRO", metadata=metadata_tags(AVRO)))
    ser = AVRO.ser(registry, AVRO.untagged(), keyring)
    for _ in range(3):
        with pytest.raises(PolicyError):
            ser(customer(1), value_ctx(t))
    # registered (the registry might have inherited v1's metadata.tags), then refused once, for good
    assert (registry.lookups, registry.listings) == (1, 2)  # listed live, and with the soft-deleted
    ok = AVRO.ser(registry, AVRO.text, keyring)
    for i in range(5):
        ok(customer(i), value_ctx(t))
        ok(customer(i), value_ctx(topic()))  # each new subject: listed, no version to read
    assert (registry.lookups, registry.listings) == (1 + 2, 2 + 2 + 2 * 5)  # t: its versions 1 and 2, once
    AVRO.ser(registry, AVRO.text, keyring, **{"fieldcrypt.allow.tag.removal": True})(customer(1), value_ctx(t))
    assert (registry.lookups, registry.listings) == (3, 14)  # nothing to refuse, nothing to look up
    latest = AVRO.ser(registry, None, keyring, **LATEST)
    for i in range(5):
        latest(customer(i), value_ctx(t))
    # latest mode: every version but the one written (this serializer reads v1 and v2 once); the numbers once
    assert (registry.lookups, registry.listings) == (5, 16)


@pytest.mark.parametrize(
    "error", [SchemaRegistryError(500, 50001, "store error"), SchemaRegistryError(401, 401, "unauthorized")], ids=str
)
def test_a_failed_lookup_is_not_a_new_subject(keyring: Keyring, error: SchemaRegistryError) -> None:
    registry = CountingLookups({"url": f"mock://{uuid.uuid4().hex}"}, fail=error)
    with pytest.raises(SchemaRegistryError):
        AVRO.ser(registry, AVRO.untagged(), keyring)(customer(1), value_ctx("orders"))
    assert registry.get_subjects() == []  # nothing registered, nothing written


# -- (c) every write mode compares the schema written with what the subject carries (review, round 2) -------------
#
# The attacks: a lookup (auto.register.schemas=False) matching an older version whose registry metadata.tags tag the
# field, planned from the local text; use.latest.version after a version without the tag, before any fieldcrypt
# producer wrote (so the key store knows nothing); use.latest.with.metadata / use.schema.id pinned to an older
# untagged version while the latest tags the field; and a producer naming the registry by another URL, whose
# key-store record of encrypted fields was another record.


def new_version(fmt: Fmt, text: str) -> str:
    """The same shape under another text: a new version of the subject, not the same one again."""
    schema = json.loads(text)
    schema["doc" if fmt.name == "AVRO" else "description"] = f"version {uuid.uuid4().hex[:6]}"
    return json.dumps(schema)


def deserializer(fmt: Fmt, registry: Any, keyring: Keyring) -> Any:
    if fmt.name == "AVRO":
        return AvroDeserializer(registry, keyring=keyring)
    return JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)


def schema_id(data: bytes) -> int:
    return int.from_bytes(data[1:5], "big")


LOOKUP = {"auto.register.schemas": False}
ALLOW = {"fieldcrypt.allow.tag.removal": True}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lookup_matching_an_older_version_plans_from_its_registered_metadata(
    fmt: Fmt, http_registry: Any, keyring: Keyring
) -> None:
    """Authors registered v1 (untagged text, email tagged in metadata.tags), then v2; a producer holding v1's
    untagged text looks it up: the registry matches v1, whose metadata tags email."""
    t = topic()
    subject = f"{t}-value"
    admin = SchemaRegistryClient({"url": http_registry.url})
    v1 = admin.register_schema(subject, Schema(fmt.untagged(), fmt.name, metadata=metadata_tags(fmt)))
    admin.register_schema(subject, Schema(new_version(fmt, fmt.untagged()), fmt.name, metadata=metadata_tags(fmt)))
    client = SchemaRegistryClient({"url": http_registry.url})
    data = fmt.ser(client, fmt.untagged(), keyring, **LOOKUP)(customer(1), value_ctx(t))
    assert schema_id(data) == v1 and EMAIL not in data
    fresh = SchemaRegistryClient({"url": http_registry.url})  # a consumer elsewhere, planning v1 as registered
    assert deserializer(fmt, fresh, keyring)(data, value_ctx(t))["email"] == "person1@example.com"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lookup_matching_an_older_untagged_version_is_refused_when_the_latest_tags_the_field(
    fmt: Fmt, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    registries.author_registers(subject, fmt, fmt.untagged_email(), None)  # v1 without the tag
    registries.author_registers(subject, fmt, fmt.text, None)  # v2 tags email; no producer wrote yet
    ser = fmt.ser(client, fmt.untagged_email(), keyring, **LOOKUP)
    for _ in range(2):
        with refused_naming(fmt, subject):
            ser(customer(1), value_ctx(t))
    assert EMAIL in fmt.ser(client, fmt.untagged_email(), keyring, **LOOKUP, **ALLOW)(customer(1), value_ctx(t))


@pytest.mark.parametrize("where", ["inline", "metadata"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_latest_version_without_a_tag_its_previous_version_carried_is_refused_before_anyone_wrote(
    fmt: Fmt, where: str, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    if where == "inline":
        registries.author_registers(subject, fmt, fmt.text, None)
        registries.author_registers(subject, fmt, fmt.untagged_email(), None)
    else:  # v2 registered by other tooling without the metadata of v1 (a registry that does not inherit it)
        registries.author_registers(subject, fmt, fmt.untagged(), {fmt.email: ["PII"]})
        registries.author_registers(subject, fmt, new_version(fmt, fmt.untagged()), None)
    ser = fmt.ser(client, None, keyring, **LATEST)  # the key store is empty: no fieldcrypt producer ever wrote
    for _ in range(2):
        with refused_naming(fmt, subject) as refused:
            ser(customer(1), value_ctx(t))
        assert "registered version 1" in str(refused.value)
    assert EMAIL in fmt.ser(client, None, keyring, **LATEST, **ALLOW)(customer(1), value_ctx(t))


def _app(name: str) -> Metadata:
    return Metadata(tags=None, properties=MetadataProperties({"app": name}), sensitive=None)


PINNED: dict[str, Callable[[int], dict[str, Any]]] = {
    "use.latest.with.metadata": lambda sid: {"use.latest.with.metadata": {"app": "old"}},
    "use.schema.id": lambda sid: {"use.schema.id": sid},
}


@pytest.mark.parametrize("mode", list(PINNED))
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_writer_pinned_to_an_older_untagged_version_is_refused_when_the_latest_tags_the_field(
    fmt: Fmt, mode: str, keyring: Keyring
) -> None:
    registry, t = new_registry(), topic()
    subject = f"{t}-value"
    v1 = registry.register_schema(subject, Schema(fmt.untagged_email(), fmt.name, metadata=_app("old")))
    registry.register_schema(subject, Schema(fmt.text, fmt.name, metadata=_app("new")))  # the latest tags email
    ser = fmt.ser(registry, None, keyring, **LOOKUP, **PINNED[mode](v1))
    for _ in range(2):
        with refused_naming(fmt, subject) as refused:
            ser(customer(1), value_ctx(t))
        assert "registered version 2" in str(refused.value)
    opted = fmt.ser(registry, None, keyring, **LOOKUP, **PINNED[mode](v1), **ALLOW)
    assert EMAIL in opted(customer(1), value_ctx(t))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_pinned_or_latest_writer_keeping_every_tag_writes(fmt: Fmt, http_registry: Any, keyring: Keyring) -> None:
    """The comparison refuses only what is lost: an older version tagged like the latest, and a latest version
    that adds a field to the previous one, are written, encrypted."""
    client, t = SchemaRegistryClient({"url": http_registry.url}), topic()
    subject = f"{t}-value"
    v1 = client.register_schema(subject, Schema(fmt.text, fmt.name))
    client.register_schema(subject, Schema(new_version(fmt, fmt.text), fmt.name))
    for conf in ({"use.schema.id": v1}, {"use.latest.version": True}):
        assert EMAIL not in fmt.ser(client, None, keyring, **LOOKUP, **conf)(customer(1), value_ctx(t))
    assert EMAIL not in fmt.ser(client, fmt.text, keyring, **LOOKUP)(customer(1), value_ctx(t))


class CountingVersions(type(new_registry())):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__({"url": f"mock://{uuid.uuid4().hex}"})
        self.asked: list[str] = []

    def get_version(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append("get_version")
        return super().get_version(*args, **kwargs)

    def get_versions(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append("get_versions")
        return super().get_versions(*args, **kwargs)


@pytest.mark.parametrize("mode", ["latest", "lookup"])
def test_the_comparison_costs_requests_per_subject_and_schema_id_not_per_record(mode: str, keyring: Keyring) -> None:
    registry, t = CountingVersions(), topic()
    subject = f"{t}-value"
    registry.register_schema(subject, Schema(new_version(AVRO, AVRO.text), "AVRO", []))
    registry.register_schema(subject, Schema(AVRO.text.strip(), "AVRO", []))  # as the serializer sends it
    ser = (
        AVRO.ser(registry, None, keyring, **LATEST)
        if mode == "latest"
        else AVRO.ser(registry, AVRO.text, keyring, **LOOKUP)
    )
    for i in range(20):
        ser(customer(i), value_ctx(t))
    # the subject's version numbers and each version but the one written, to compare with; a lookup also reads the
    # version it found, as registered
    assert sorted(registry.asked) == ["get_version"] * (1 if mode == "latest" else 2) + ["get_versions"] * 2


@pytest.mark.parametrize("spelling", ["localhost", "trailing-slash", "repeated"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_record_of_encrypted_fields_does_not_depend_on_how_the_registry_url_is_spelled(
    fmt: Fmt, spelling: str, http_registry: Any, keyring: Keyring
) -> None:
    url = http_registry.url
    other = {
        "localhost": f"http://localhost:{http_registry.port}",
        "trailing-slash": f"{url}/",
        "repeated": f"{url},{url}",
    }
    t = topic()
    subject = f"{t}-value"
    first = SchemaRegistryClient({"url": url})
    assert EMAIL not in fmt.ser(first, fmt.text, keyring)(customer(1), value_ctx(t))  # recorded: email encrypted
    first.register_schema(subject, Schema(fmt.untagged_email(), fmt.name))
    first.register_schema(subject, Schema(new_version(fmt, fmt.untagged_email()), fmt.name))  # v3 next to v2: alike
    with refused_naming(fmt, subject) as refused:  # only the key store's record knows email was encrypted
        fmt.ser(SchemaRegistryClient({"url": other[spelling]}), None, keyring, **LATEST)(customer(1), value_ctx(t))
    assert "recorded in the key store" in str(refused.value)


def _record(name: list[Any]) -> str:
    return "encrypted-fields:" + hashlib.sha256(json.dumps(["encrypted-fields", *name]).encode()).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_record_kept_under_its_legacy_name_is_still_read_and_carried_over(
    fmt: Fmt, http_registry: Any, keyring: Keyring
) -> None:
    """Up to 0.x the record was named after the registry URLs as the client spelled them: what a deployment
    recorded there is still checked, and carried into the record named after the subject alone."""
    client, t = SchemaRegistryClient({"url": http_registry.url}), topic()
    subject = f"{t}-value"
    path = f"example.shop.{fmt.email}" if fmt.name == "AVRO" else fmt.email
    keyring.merge_policy(_record([sorted(client._rest_client.base_urls), subject]), [path])  # an older fieldcrypt
    client.register_schema(subject, Schema(fmt.untagged_email(), fmt.name))
    client.register_schema(subject, Schema(new_version(fmt, fmt.untagged_email()), fmt.name))
    with refused_naming(fmt, subject):
        fmt.ser(client, None, keyring, **LATEST)(customer(1), value_ctx(t))
    assert path in keyring.merge_policy(_record([subject]), [])
    localhost = SchemaRegistryClient({"url": f"http://localhost:{http_registry.port}"})
    with refused_naming(fmt, subject):  # another spelling: the same record now
        fmt.ser(localhost, None, keyring, **LATEST)(customer(1), value_ctx(t))


# -- (d) every registered version counts, and only for what the schema written can write (review, round 3) ---------
#
# The attacks: v1 tags email (inline or in metadata.tags), v2 drops the tag, v3 is an ordinary evolution of v2: every
# mode compared only with the latest version or the one before, so a v3 writer put email in clear. And the other way
# round, ordinary evolution was refused: producers still on v1 while v2 adds a new tagged field (a rolling
# upgrade), or a v2 that removes a tagged field altogether, "would write in clear" a field they do not have.

WRITERS: dict[str, Callable[[Fmt, int, str], tuple[Any, dict[str, Any]]]] = {
    "use.latest.version": lambda fmt, sid, text: (None, dict(LATEST)),
    "use.schema.id": lambda fmt, sid, text: (None, {"auto.register.schemas": False, "use.schema.id": sid}),
    "lookup": lambda fmt, sid, text: (text, dict(LOOKUP)),
    "auto-register": lambda fmt, sid, text: (new_version(fmt, text), {}),
}


def with_field(fmt: Fmt, text: str, name: str, tagged: bool, closed: bool = True) -> str:
    """``text`` with one more string field (Avro: with a default); JSON: its root closed or open to others."""
    schema = json.loads(text)
    field: dict[str, Any] = {"type": "string"}
    if tagged:
        field["confluent:tags"] = ["PII"]
    if fmt.name == "AVRO":
        schema["fields"].append({"name": name, **field, "default": ""})
    else:
        schema["properties"][name] = field
        schema["additionalProperties"] = not closed and {"type": "string"}
    return json.dumps(schema)


def field_path(fmt: Fmt, name: str) -> str:
    return fmt.email.replace("email", name)


@pytest.mark.parametrize("mode", list(WRITERS))
@pytest.mark.parametrize("where", ["inline", "metadata"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tag_dropped_two_versions_ago_is_refused_in_every_mode(
    fmt: Fmt, where: str, mode: str, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    if where == "inline":
        registries.author_registers(subject, fmt, fmt.text, None)
    else:
        registries.author_registers(subject, fmt, fmt.untagged(), {fmt.email: ["PII"]})
    registries.author_registers(subject, fmt, new_version(fmt, fmt.untagged_email()), None)  # tag lost
    v3_text = new_version(fmt, fmt.untagged_email())
    v3 = registries.author_registers(subject, fmt, v3_text, None)  # the next ordinary evolution
    text, conf = WRITERS[mode](fmt, v3, v3_text if where == "inline" else fmt.untagged())
    if mode == "lookup" and where == "metadata":
        text = v3_text
    for _ in range(2):  # the key store is empty: only version 1 knows email was encrypted
        with refused_naming(fmt, subject) as refused:
            fmt.ser(client, text, keyring, **conf)(customer(1), value_ctx(t))
        assert "registered version 1" in str(refused.value)
    assert EMAIL in fmt.ser(client, text, keyring, **conf, **ALLOW)(customer(1), value_ctx(t))


@pytest.mark.parametrize("mode", ["use.schema.id", "lookup", "auto-register"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_producers_still_on_v1_keep_writing_while_v2_adds_a_tagged_field(
    fmt: Fmt, mode: str, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    v1_text = json.dumps(json.loads(fmt.text))  # as the serializer sends it
    v1 = registries.author_registers(subject, fmt, v1_text, None)
    v2_text = with_field(fmt, fmt.text, "phone", tagged=True)
    registries.author_registers(subject, fmt, v2_text, None)
    fmt.ser(client, v2_text, keyring, **LOOKUP)({**customer(2), "phone": "+43 1"}, value_ctx(t))  # recorded: phone
    text, conf = WRITERS[mode](fmt, v1, v1_text)
    if mode == "auto-register":
        text = v1_text
    for _ in range(2):
        assert EMAIL not in fmt.ser(client, text, keyring, **conf)(customer(1), value_ctx(t))
    # the same field kept without its tag is refused
    untagged = with_field(fmt, fmt.text, "phone", tagged=False)
    with pytest.raises(PolicyError, match=re.escape(field_path(fmt, "phone"))):
        fmt.ser(client, new_version(fmt, untagged), keyring)(customer(1), value_ctx(t))


@pytest.mark.parametrize("mode", ["use.latest.version", "lookup", "auto-register"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_removing_a_tagged_field_is_not_a_tag_removal(
    fmt: Fmt, mode: str, registries: Registries, keyring: Keyring
) -> None:
    client, t = registries.client, topic()
    subject = f"{t}-value"
    v1_text = with_field(fmt, fmt.text, "phone", tagged=True)
    registries.author_registers(subject, fmt, v1_text, None)
    fmt.ser(client, v1_text, keyring, **LOOKUP)({**customer(2), "phone": "+43 1"}, value_ctx(t))  # recorded: phone
    v2_text = json.dumps(json.loads(fmt.text))  # phone removed altogether
    v2 = registries.author_registers(subject, fmt, v2_text, None)
    text, conf = WRITERS[mode](fmt, v2, v2_text)
    assert EMAIL not in fmt.ser(client, text, keyring, **conf)(customer(1), value_ctx(t))


def test_a_json_object_open_to_other_properties_can_still_write_a_removed_field(
    registries: Registries, keyring: Keyring
) -> None:
    """JSON: a property the schema written does not declare is written in clear as an undeclared one, unless the
    object is closed (additionalProperties: false, no patternProperties): removing a tagged property from an open
    object is a tag removal."""
    client, t = registries.client, topic()
    subject = f"{t}-value"
    registries.author_registers(subject, JSON, with_field(JSON, JSON.text, "phone", tagged=True, closed=False), None)
    v2 = json.loads(JSON.text)
    v2["additionalProperties"] = {"type": "string"}
    with pytest.raises(PolicyError, match=re.escape("$.phone")):
        JSON.ser(client, json.dumps(v2), keyring)(customer(1), value_ctx(t))


def test_a_soft_deleted_version_still_counts(http_registry: Any, keyring: Keyring, monkeypatch: Any) -> None:
    """A registry over REST is asked for soft-deleted versions too (``deleted=true``); ``mock://`` forgets a deleted
    version, which only the key store's record then remembers."""
    client, t = SchemaRegistryClient({"url": http_registry.url}), topic()
    subject = f"{t}-value"
    client.register_schema(subject, Schema(AVRO.text, "AVRO"))
    client.register_schema(subject, Schema(AVRO.untagged_email(), "AVRO"))
    real = SchemaRegistryClient.get_versions

    def live_only(self: Any, subject_name: str, deleted: bool = False, **kwargs: Any) -> Any:
        found = real(self, subject_name, deleted=deleted, **kwargs)
        return found if deleted else [v for v in found if v != 1]  # version 1 soft-deleted

    monkeypatch.setattr(SchemaRegistryClient, "get_versions", live_only)
    with refused_naming(AVRO, subject) as refused:
        AVRO.ser(SchemaRegistryClient({"url": http_registry.url}), None, keyring, **LATEST)(customer(1), value_ctx(t))
    assert "registered version 1" in str(refused.value)


def test_a_registry_answering_with_the_id_only_is_read_back_before_refusing(
    http_registry: Any, keyring: Keyring, monkeypatch: Any
) -> None:
    """A registry that inherits the latest version's metadata (as Confluent's does) and answers a registration
    with ``{"id": N}`` only: the version registered is read back, and carries the tags."""
    from fieldcrypt.dev import registry as devreg

    register = devreg._State.register

    def inheriting(self: Any, subject: str, body: dict[str, Any]) -> Any:
        if not body.get("metadata") and self.subjects.get(subject):
            latest = self.schemas[self.subjects[subject][-1] - 1]
            if latest.get("metadata"):
                body = {**body, "metadata": latest["metadata"]}
        return register(self, subject, body)

    monkeypatch.setattr(devreg._State, "register", inheriting)
    t = topic()
    subject = f"{t}-value"
    admin = SchemaRegistryClient({"url": http_registry.url})
    admin.register_schema(subject, Schema(AVRO.untagged(), "AVRO", metadata=metadata_tags(AVRO)))
    ser = AVRO.ser(SchemaRegistryClient({"url": http_registry.url}), new_version(AVRO, AVRO.untagged()), keyring)
    for _ in range(2):
        assert EMAIL not in ser(customer(1), value_ctx(t))
    assert admin.get_version(subject, "latest").version == 2
