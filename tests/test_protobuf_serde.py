"""fieldcrypt's Protobuf twins: what a producer and a consumer of a tagged Protobuf topic rely on.

The schema of the example (examples/protobuf/customer.proto) tags, with ``(confluent.field_meta).tags``: a string, an
``optional`` string, a repeated string, a map's values, a nested message's field, bytes and a ``oneof`` member; its
``id`` is the data-subject id (per-person keys)."""

from __future__ import annotations

import base64
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Metadata,
    MetadataTags,
    Schema,
    SchemaRegistryClient,
    header_schema_id_serializer,
)
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as PlainDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as PlainSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.errors import (
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    KeyNotFoundError,
    MalformedRecordError,
    PolicyError,
)
from fieldcrypt.protobuf import ProtobufDeserializer, ProtobufSerializer
from tests.proto_schemas import cls, enum, field, file, files, map_entry, message, unique

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "protobuf"))
import customer_pb2

NO_DEPRECATED = {"use.deprecated.format": False}


def ctx(topic: str = "customers") -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def customer(i: int = 1) -> Any:
    c = customer_pb2.Customer(
        id=f"c-{i}",
        email=f"ann{i}@example.com",
        name="Ann Example",
        phone="+44 20 7946 0000",
        aliases=["annie", "a.e."],
        photo=b"\x89PNG\x00\x01",
        pager="555-0100",
        country="GB",
        loyalty_points=42,
    )
    c.contacts["work"] = "ann@work.example"
    c.contacts["home"] = "ann@home.example"
    c.address.street = "1 High Street"
    c.address.city = "London"
    return c


def serde(registry: SchemaRegistryClient, keyring: Keyring, **conf: Any) -> tuple[Any, Any]:
    reading = ("fieldcrypt.on.", "fieldcrypt.placeholder", "fieldcrypt.denied.placeholder")
    read_conf = {k: v for k, v in conf.items() if not k.startswith("fieldcrypt.format")}
    write_conf = {k: v for k, v in conf.items() if not k.startswith(reading)}
    ser = ProtobufSerializer(customer_pb2.Customer, registry, {**NO_DEPRECATED, **write_conf}, keyring=keyring)
    de = ProtobufDeserializer(customer_pb2.Customer, {**NO_DEPRECATED, **read_conf}, registry, keyring=keyring)
    return ser, de


def test_round_trip_every_placement_and_the_callers_message_unchanged(registry: Any, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    msg = customer()
    before = msg.SerializeToString()
    data = ser(msg, ctx())
    assert msg.SerializeToString() == before  # never mutated
    assert de(data, ctx()) == msg
    assert type(de(data, ctx())) is customer_pb2.Customer
    assert ser.stats.values == 10  # email name phone aliases(2) contacts(2) street photo pager
    for secret in (b"ann1@example.com", b"Ann Example", b"annie", b"ann@work.example", b"1 High Street", b"555-0100"):
        assert secret not in data
    assert b"\x89PNG" not in data
    assert b"London" in data and b"GB" in data and b"c-1" in data  # untagged and the id stay in clear


def test_confluents_plain_deserializer_reads_ciphertext_where_keys_are_missing(registry: Any, keyring: Keyring) -> None:
    ser, _ = serde(registry, keyring)
    data = ser(customer(), ctx())
    plain = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)(data, ctx())
    assert plain.country == "GB" and plain.loyalty_points == 42 and plain.address.city == "London"
    for text in (plain.email, plain.name, plain.phone, plain.aliases[0], plain.contacts["work"], plain.pager):
        assert text.startswith("A")  # a value ciphertext's version byte, as unpadded base64 text
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    assert plain.photo[:1] in (b"\x01", b"\x02") and plain.photo != customer().photo
    assert plain.HasField("phone") and plain.WhichOneof("reach") == "pager"


def test_unset_optional_and_oneof_stay_unset_and_empty_strings_are_encrypted(registry: Any, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    msg = customer_pb2.Customer(id="c-9", desk=7)  # phone unset, the oneof holds an untagged int
    data = ser(msg, ctx())
    out = de(data, ctx())
    assert out == msg and not out.HasField("phone") and out.WhichOneof("reach") == "desk"
    plain = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)(data, ctx())
    assert plain.email != "" and plain.name != ""  # implicit-presence "" is a value: encrypted, so counted
    assert not plain.HasField("phone")


def test_shredding_a_person_reads_as_erased(registry: Any, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    data = ser(customer(1), ctx())
    other = ser(customer(2), ctx())
    keyring.shred_person("c-1", reason="test")
    out = de(data, ctx())
    assert out.email == "<erased>" and out.name == "<erased>" and out.aliases == ["<erased>", "<erased>"]
    assert not out.HasField("phone")  # an optional field: erased reads as unset (on.erased=null)
    assert out.photo == b"<erased>"
    assert out.WhichOneof("reach") is None  # a oneof member has presence: unset
    assert out.country == "GB"
    assert de.stats.erased == 10
    assert de(other, ctx()) == customer(2)


def test_a_consumer_without_keys_is_denied_and_tampering_is_refused(
    registry: Any, keyring: Keyring, tmp_path: Path
) -> None:
    ser, _ = serde(registry, keyring)
    data = ser(customer(), ctx())
    stranger = Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'other.db'}"),
        fieldcrypt.create_local_kek(tmp_path / "other.json"),
    )
    with pytest.raises(KeyNotFoundError):
        ProtobufDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry, keyring=stranger)(data, ctx())
    plain = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)(data, ctx())
    plain.email, plain.name = plain.name, plain.email  # two ciphertexts swapped between fields
    framing = data[: len(data) - len(plain.SerializeToString())]
    forged = bytes(framing) + plain.SerializeToString()
    de = ProtobufDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry, keyring=keyring)
    with pytest.raises(DecryptionError):
        de(forged, ctx())


def test_marker_outcomes_are_refused_for_protobuf(registry: Any, keyring: Keyring) -> None:
    with pytest.raises(ConfigurationError, match="marker"):
        ProtobufDeserializer(
            customer_pb2.Customer, {**NO_DEPRECATED, "fieldcrypt.on.erased": "marker"}, registry, keyring=keyring
        )


# -- tag placements: enforced or refused, never ignored ------------------------------------------------------------


def _serializer(registry: Any, keyring: Keyring, proto: Any, root: str, **conf: Any) -> Any:
    return ProtobufSerializer(cls(files(proto), root), registry, {**NO_DEPRECATED, **conf}, keyring=keyring)


@pytest.mark.parametrize(
    ("fields", "nested", "match"),
    [
        ([field("age", 1, "int32", tags=["PII"])], [], "int32"),
        ([field("ok", 1, "bool", tags=["PII"])], [], "bool"),
        ([field("inner", 1, "message", type_name=".p.M.In", tags=["PII"])], [message("In", [])], "message"),
        (
            [field("inner", 1, "message", type_name=".p.M.In", repeated=True, tags=["PII"])],
            [message("In", [])],
            "message",
        ),
        ([field("e", 1, "enum", type_name=".p.M.E", tags=["PII"])], [], "enum"),
        ([field("ids", 1, "string", repeated=True, tags=["DATA_SUBJECT_ID"])], [], "data-subject"),
        ([field("x", 1, "string", tags=["SECRET"])], [], "does not decide"),
        ([field("x", 1, "string", tags=["PII", "DATA_SUBJECT_ID"])], [], "data-subject"),
    ],
)
def test_tags_where_no_ciphertext_fits_are_refused(
    registry: Any, keyring: Keyring, fields: list[Any], nested: list[Any], match: str
) -> None:
    enums = [enum("E", ["A", "B"])] if any(f.type_name == ".p.M.E" for f in fields) else []
    proto = file(unique("refuse"), "p", [message("M", fields, nested=nested, enums=enums)])
    with pytest.raises(PolicyError, match=match):
        _serializer(registry, keyring, proto, "p.M")


@pytest.mark.parametrize("where", ["message", "file", "enum"])
def test_encryption_tags_on_messages_files_and_enums_are_refused(registry: Any, keyring: Keyring, where: str) -> None:
    m = message("M", [field("x", 1, "string")], tags=["PII"] if where == "message" else None)
    enums = [enum("E", ["A"], tags=["PII"])] if where == "enum" else []
    proto = file(unique("meta"), "p", [m], tags=["PII"] if where == "file" else None, enums=enums)
    with pytest.raises(PolicyError, match="tag the fields"):
        _serializer(registry, keyring, proto, "p.M")


def test_plaintext_tags_on_a_message_are_recorded_not_refused(registry: Any, keyring: Keyring) -> None:
    m = message("M", [field("x", 1, "string", tags=["PII"])], tags=["PUBLIC"])
    M = cls(files(file(unique("plain"), "p", [m])), "p.M")
    ser = ProtobufSerializer(M, registry, {**NO_DEPRECATED, "fieldcrypt.plaintext.tags": ["PUBLIC"]}, keyring=keyring)
    assert b"secret" not in ser(M(x="secret"), ctx())


def test_a_map_of_int_keys_a_nested_message_and_recursion(registry: Any, keyring: Keyring) -> None:
    node = message(
        "Node",
        [
            field("label", 1, "string", tags=["PII"]),
            field("next", 2, "message", type_name=".p.Node"),
            field("notes", 3, "message", type_name=".p.Node.NotesEntry", repeated=True, tags=["PII"]),
            field("kids", 4, "message", type_name=".p.Node", repeated=True),
        ],
        nested=[map_entry("NotesEntry", "int32", "string")],
    )
    proto = file(unique("node"), "p", [node])
    pool = files(proto)
    Node = cls(pool, "p.Node")
    ser = ProtobufSerializer(Node, registry, NO_DEPRECATED, keyring=keyring)
    de = ProtobufDeserializer(Node, NO_DEPRECATED, registry, keyring=keyring)
    n = Node(label="root")
    n.notes[5] = "five"
    n.notes[-1] = "minus one"
    n.next.label = "second"
    n.next.next.label = "third"
    n.kids.add(label="kid")
    data = ser(n, ctx())
    for secret in (b"root", b"five", b"minus one", b"second", b"third", b"kid"):
        assert secret not in data
    assert de(data, ctx()) == n
    assert ser.stats.values == 6


def test_the_plan_comes_from_the_registry_metadata_tags_too(registry: Any, keyring: Keyring) -> None:
    """A field the generated class does not tag, tagged by the registered schema's metadata.tags, is encrypted."""
    plain_class = customer_pb2.Customer
    registry.register_schema(
        "customers-value",
        Schema(
            PlainSerializer(plain_class, registry, NO_DEPRECATED)._schema.schema_str,
            "PROTOBUF",
            [],
            Metadata(tags=MetadataTags({"shop.Customer.country": ["PII"]}), properties=None, sensitive=None),
        ),
    )
    ser = ProtobufSerializer(
        plain_class,
        registry,
        {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True},
        keyring=keyring,
    )
    data = ser(customer(), ctx())
    assert PlainDeserializer(plain_class, NO_DEPRECATED, registry)(data, ctx()).country != "GB"
    de = ProtobufDeserializer(plain_class, NO_DEPRECATED, registry, keyring=keyring)
    assert de(data, ctx()).country == "GB"


def test_a_metadata_pattern_matching_no_field_is_refused(registry: Any, keyring: Keyring) -> None:
    registry.register_schema(
        "customers-value",
        Schema(
            PlainSerializer(customer_pb2.Customer, registry, NO_DEPRECATED)._schema.schema_str,
            "PROTOBUF",
            [],
            Metadata(tags=MetadataTags({"shop.Customer.nope": ["PII"]}), properties=None, sensitive=None),
        ),
    )
    ser = ProtobufSerializer(
        customer_pb2.Customer,
        registry,
        {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True},
        keyring=keyring,
    )
    with pytest.raises(PolicyError, match="match no field"):
        ser(customer(), ctx())


def test_a_class_newer_than_the_schema_written_is_refused(registry: Any, keyring: Keyring) -> None:
    """use.latest.version writes with the registry's schema: a field the class has and the schema lacks arrives as an
    unknown field: refused, never written unplanned (a tagged one is refused earlier, as a dropped tag)."""
    old = file(unique("old"), "v", [message("M", [field("email", 1, "string", tags=["PII"])])])
    new_fields = [field("email", 1, "string", tags=["PII"]), field("nick", 2, "string")]
    Old, New = cls(files(old), "v.M"), cls(files(file(unique("new"), "v", [message("M", new_fields)])), "v.M")
    ProtobufSerializer(Old, registry, NO_DEPRECATED, keyring=keyring)(Old(email="a@b"), ctx())
    latest = {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True}
    ser = ProtobufSerializer(New, registry, latest, keyring=keyring)
    with pytest.raises(EncryptionError, match="does not declare"):
        ser(New(email="a@b", nick="annie"), ctx())
    assert ser(New(email="a@b"), ctx()) is not None  # without the unknown field: written
    tagged = [*new_fields[:1], field("ssn", 2, "string", tags=["PII"])]
    Tagged = cls(files(file(unique("tagged"), "v", [message("M", tagged)])), "v.M")
    with pytest.raises(PolicyError, match="drops tags"):
        ProtobufSerializer(Tagged, registry, latest, keyring=keyring)(Tagged(email="a@b", ssn="1"), ctx())


def test_a_reader_refuses_fields_its_writer_schema_does_not_declare(registry: Any, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring)
    data = ser(customer(), ctx())
    extra = bytes([0xA8, 0x06, 0x01])  # field 101, varint 1: not in the schema
    with pytest.raises(MalformedRecordError, match="does not declare"):
        de(data + extra, ctx())


def test_message_indexes_name_a_nested_root_and_the_second_message(registry: Any, keyring: Keyring) -> None:
    outer = message(
        "Outer",
        [field("a", 1, "string", tags=["PII"])],
        nested=[message("Inner", [field("b", 1, "string", tags=["PII"])])],
    )
    second = message("Second", [field("c", 1, "string", tags=["PII"])])
    pool = files(file(unique("idx"), "ix", [outer, second]))
    for name, value, indexes in (
        ("ix.Outer.Inner", {"b": "bee"}, b"\x04\x00\x00"),
        ("ix.Second", {"c": "sea"}, b"\x02\x02"),
    ):
        C = cls(pool, name)
        data = ProtobufSerializer(C, registry, NO_DEPRECATED, keyring=keyring)(C(**value), ctx(name))
        assert data[5 : 5 + len(indexes)] == indexes
        assert PlainDeserializer(C, NO_DEPRECATED, registry)(data, ctx(name)) != C(**value)
        assert ProtobufDeserializer(C, NO_DEPRECATED, registry, keyring=keyring)(data, ctx(name)) == C(**value)


def test_header_framing(registry: Any, keyring: Keyring) -> None:
    ser = ProtobufSerializer(
        customer_pb2.Customer,
        registry,
        {**NO_DEPRECATED, "schema.id.serializer": header_schema_id_serializer},
        keyring=keyring,
    )
    c = SerializationContext("customers", MessageField.VALUE, [])
    data = ser(customer(), c)
    de = ProtobufDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry, keyring=keyring)
    assert de(data, c) == customer()


def test_deterministic_values(registry: Any, keyring: Keyring) -> None:
    ser, de = serde(
        registry,
        keyring,
        **{"fieldcrypt.deterministic.tags": ["PII"], "fieldcrypt.tags": ["PII"]},
    )
    a, b = ser(customer(1), ctx()), ser(customer(1), ctx())
    plain = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)
    assert plain(a, ctx()).email == plain(b, ctx()).email  # equal values, equal ciphertexts: joins work
    assert de(a, ctx()) == customer(1)


def test_no_registry_client_reads_with_the_generated_class(registry: Any, keyring: Keyring) -> None:
    ser, _ = serde(registry, keyring)
    data = ser(customer(), ctx())
    de = ProtobufDeserializer(customer_pb2.Customer, NO_DEPRECATED, None, keyring=keyring)
    assert de(data, ctx()) == customer()


def test_a_consumer_granted_only_the_masked_view_reads_the_mask(registry: Any, tmp_path: Path) -> None:
    from tests.test_masked_views import keyring_with

    contact = message(
        "Contact",
        [
            field("customer_id", 1, "string", tags=["DATA_SUBJECT_ID"]),
            field("email", 2, "string", tags=["EMAIL"]),
            field("ssn", 3, "string", tags=["PII"], optional=True, oneof=0),
            field("country", 4, "string"),
        ],
        oneofs=["_ssn"],
    )
    Contact = cls(files(file(unique("contact"), "crm", [contact])), "crm.Contact")
    conf = {**NO_DEPRECATED, "fieldcrypt.tags": ["PII", "EMAIL"], "fieldcrypt.masks": {"EMAIL": "email"}}
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    subject = "contacts-value"
    domains = (subject, f"{subject}/masked")
    keks = {d: fieldcrypt.create_local_kek(tmp_path / f"kek-{i}.json") for i, d in enumerate(domains)}
    with keyring_with(store, keks, ("c1",)) as producer, Keyring(store, keks[f"{subject}/masked"]) as masked:
        rec = Contact(customer_id="c1", email="jane.doe@Example.com", ssn="123-45-6789", country="DE")
        data = ProtobufSerializer(Contact, registry, conf, keyring=producer)(rec, ctx("contacts"))
        full = ProtobufDeserializer(Contact, conf, registry, keyring=producer)
        assert full(data, ctx("contacts")) == rec
        view = ProtobufDeserializer(Contact, {**conf, "fieldcrypt.on.denied": "null"}, registry, keyring=masked)
        got = view(data, ctx("contacts"))
        assert got.email == "***@example.com" and not got.HasField("ssn") and got.country == "DE"
        assert view.stats.masked == 1 and view.stats.denied == 1


def test_map_entries_read_in_any_order(registry: Any, keyring: Keyring) -> None:
    """Protobuf does not keep a map's order on the wire (another client may write its entries in any order): each
    value's bound position follows the key order, so a record whose entries arrive reordered reads the same."""
    ser, de = serde(registry, keyring)
    msg = customer()
    for i in range(40):
        msg.contacts[f"k{i:02d}"] = f"v{i}@example.com"
    data = ser(msg, ctx())
    plain = PlainDeserializer(customer_pb2.Customer, NO_DEPRECATED, registry)(data, ctx())
    entries = list(plain.contacts.items())
    body = plain.SerializeToString()
    prefix = data[: len(data) - len(body)]
    plain.ClearField("contacts")
    reordered = plain.SerializeToString()
    for k, v in reversed(entries):  # one entry per wire record, in reverse key order, appended by hand
        entry = customer_pb2.Customer()
        entry.contacts[k] = v
        reordered += entry.SerializeToString()
    assert de(prefix + reordered, ctx()) == msg


def test_csfle_history_in_protobuf_reads_and_never_unverified(registry: Any, keyring: Keyring) -> None:
    """A topic moving from Confluent CSFLE to fieldcrypt: records confluent's ProtobufSerializer encrypted with an
    ENCRYPT rule are read (through confluent's executor and the application's rule registry), fieldcrypt's own
    too; a CSFLE value altered in flight is refused, never returned."""
    from confluent_kafka.schema_registry.common.schema_registry_client import RuleSet

    from tests.test_csfle_migration import RULE_CONF, _encrypt_rule, _rules

    rules = _rules()
    person = message(
        "Person",
        [
            field("email", 1, "string", tags=["PII"]),
            field("picture", 2, "bytes", tags=["PII"]),
            field("country", 3, "string"),
            field("home", 4, "message", type_name=".csfle.Address"),
        ],
    )
    address = message("Address", [field("street", 1, "string", tags=["PII"])])
    Person = cls(files(file(unique("csfle"), "csfle", [person, address])), "csfle.Person")

    def rec(i: int) -> Any:
        p = Person(email=f"ann{i}@example.com", picture=b"\x89PNG", country="DE")
        p.home.street = f"{i} High Street"
        return p

    text = PlainSerializer(Person, registry, NO_DEPRECATED)._schema.schema_str
    registry.register_schema("customers-value", Schema(text, "PROTOBUF", [], None, RuleSet(None, [_encrypt_rule()])))
    latest = {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True}
    csfle = PlainSerializer(Person, registry, latest, rule_conf=RULE_CONF, rule_registry=rules)
    old = csfle(rec(1), ctx())
    assert b"ann1@example.com" not in old and b"1 High Street" not in old
    de = ProtobufDeserializer(
        Person, NO_DEPRECATED, registry, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring
    )
    assert de(old, ctx()) == rec(1)
    ours = ProtobufSerializer(Person, registry, latest, keyring=keyring)
    assert de(ours(rec(2), ctx()), ctx()) == rec(2)
    assert old[5] == 0  # message indexes [0]: the message follows
    email = Person.FromString(old[6:]).email.encode()  # CSFLE's ciphertext, as base64 text
    tampered = old.replace(email, email[:20] + (b"A" if email[20:21] != b"A" else b"B") + email[21:])
    with pytest.raises(DecryptionError):
        de(tampered, ctx())
    stranger = ProtobufDeserializer(Person, NO_DEPRECATED, registry, keyring=keyring)  # no CSFLE keys: refused
    with pytest.raises(DecryptionError):
        stranger(old, ctx())


# -- found by review: each a record or schema an attacker or an evolving registry can produce -----------------------


def test_a_registry_version_renaming_a_tagged_field_is_refused(registry: Any, keyring: Keyring) -> None:
    """use.latest.version writes by field number: a version that renamed the class's tagged field 2 (untagged) and
    declared the tagged name under another number would write the value in clear."""
    from fieldcrypt.protobuf.confluent import schema_text

    name = unique("rename")
    mine = [field("id", 1, "string"), field("email", 2, "string", tags=["PII"])]
    C = cls(files(file(name, "lv", [message("C", mine)])), "lv.C")
    theirs = [field("id", 1, "string"), field("mail", 2, "string"), field("email", 20, "string", tags=["PII"])]
    R = cls(files(file(name, "lv", [message("C", theirs)])), "lv.C")
    registry.register_schema("customers-value", Schema(schema_text(R), "PROTOBUF", []))
    latest = {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True}
    with pytest.raises(PolicyError, match="renamed or renumbered"):
        ProtobufSerializer(C, registry, latest, keyring=keyring)(C(id="1", email="alice@secret.example"), ctx())
    allowed = {**latest, "fieldcrypt.allow.tag.removal": True}
    assert b"alice@secret" in ProtobufSerializer(C, registry, allowed, keyring=keyring)(C(email="alice@secret"), ctx())


def test_proto2_required_and_defaulted_fields_read_as_the_placeholder_when_erased(
    registry: Any, keyring: Keyring
) -> None:
    from google.protobuf import descriptor_pb2

    f = file(
        unique("p2"),
        "p2",
        [
            message(
                "R",
                [
                    field("id", 1, "string", tags=["DATA_SUBJECT_ID"]),
                    field("email", 2, "string", tags=["PII"]),
                    field("nick", 3, "string", tags=["PII"]),
                    field("note", 4, "string", tags=["PII"]),
                ],
            )
        ],
    )
    f.syntax = "proto2"
    fields = f.message_type[0].field
    fields[1].label = descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
    fields[2].default_value = "anonymous"
    R = cls(files(f), "p2.R")
    ser = ProtobufSerializer(R, registry, NO_DEPRECATED, keyring=keyring)
    data = ser(R(id="x", email="a@b.example", nick="ann", note="n"), ctx())
    keyring.shred_person("x", reason="test")
    out = ProtobufDeserializer(R, NO_DEPRECATED, registry, keyring=keyring)(data, ctx())
    assert out.email == "<erased>" and out.nick == "<erased>"  # never a missing required field or the default
    assert not out.HasField("note")  # an optional field without a default reads as unset


def test_message_indexes_naming_a_map_entry_are_malformed(registry: Any, keyring: Keyring) -> None:
    from fieldcrypt.protobuf.serde import encode_indexes

    ser, de = serde(registry, keyring)
    data = ser(customer(), ctx())
    with pytest.raises(MalformedRecordError, match="map entry"):
        de(data[:5] + encode_indexes([0, 0]) + data[6:], ctx())


def test_ciphertext_hidden_by_an_older_schemas_id_is_refused(registry: Any, keyring: Keyring) -> None:
    """A record re-framed with the id of an older version that does not declare the tagged field: its ciphertext is
    an unknown field there, and a field of the caller's class: the untagged-ciphertext check sees it."""
    from fieldcrypt.protobuf.confluent import schema_text

    name = unique("old")
    V1 = cls(
        files(file(name, "rf", [message("C", [field("id", 1, "string"), field("email", 2, "string", tags=["PII"])])])),
        "rf.C",
    )
    V0 = cls(files(file(name, "rf", [message("C", [field("id", 1, "string")])])), "rf.C")
    old_id = registry.register_schema("old-value", Schema(schema_text(V0), "PROTOBUF", []))
    data = ProtobufSerializer(V1, registry, NO_DEPRECATED, keyring=keyring)(V1(id="1", email="alice@x"), ctx())
    forged = b"\x00" + old_id.to_bytes(4, "big") + data[5:]
    with pytest.raises(DecryptionError, match="does not tag this field"):
        ProtobufDeserializer(V1, NO_DEPRECATED, registry, keyring=keyring)(forged, ctx())


@pytest.mark.parametrize("shape", ["two paths", "recursive"])
def test_a_data_subject_id_reached_twice_is_refused(registry: Any, keyring: Keyring, shape: str) -> None:
    person = message(
        "Person",
        [
            field("id", 1, "string", tags=["DATA_SUBJECT_ID"]),
            field("email", 2, "string", tags=["PII"]),
            *([field("referrer", 3, "message", type_name=".ds.Person")] if shape == "recursive" else []),
        ],
    )
    order = message(
        "Order",
        [field("buyer", 1, "message", type_name=".ds.Person")]
        + ([field("seller", 2, "message", type_name=".ds.Person")] if shape == "two paths" else []),
    )
    O = cls(files(file(unique("ds"), "ds", [person, order])), "ds.Order")  # noqa: E741
    with pytest.raises(PolicyError, match="data-subject"):
        ProtobufSerializer(O, registry, NO_DEPRECATED, keyring=keyring)


def test_field_names_that_shadow_message_methods_work(registry: Any, keyring: Keyring) -> None:
    names = ["ByteSize", "HasField", "ListFields", "CopyFrom", "ClearField", "DiscardUnknownFields"]
    fields = [field("id", 1, "string")] + [field(n, i + 2, "string", tags=["PII"]) for i, n in enumerate(names)]
    C = cls(files(file(unique("shadow"), "sh", [message("C", fields)])), "sh.C")
    msg = C.FromString(C(id="1").SerializeToString())
    for n in names:
        setattr(msg, n, f"secret-{n}")
    data = ProtobufSerializer(C, registry, NO_DEPRECATED, keyring=keyring)(msg, ctx())
    assert b"secret-" not in data
    assert ProtobufDeserializer(C, NO_DEPRECATED, registry, keyring=keyring)(data, ctx()) == msg


def test_tags_inside_a_map_entry_are_refused(registry: Any, keyring: Keyring) -> None:
    from confluent_kafka.schema_registry.confluent import meta_pb2

    entry = map_entry("MEntry", "string", "string")
    entry.field[1].options.Extensions[meta_pb2.field_meta].tags.append("PII")
    m = message("R", [field("m", 1, "message", type_name=".me.R.MEntry", repeated=True)], nested=[entry])
    with pytest.raises(PolicyError, match="map's entry"):
        ProtobufSerializer(cls(files(file(unique("me"), "me", [m])), "me.R"), registry, NO_DEPRECATED, keyring=keyring)


def test_a_consumer_configured_otherwise_than_its_producers_learns_of_it(registry: Any, keyring: Keyring) -> None:
    ser = ProtobufSerializer(customer_pb2.Customer, registry, NO_DEPRECATED, keyring=keyring)
    data = ser(customer(), ctx())
    other = {**NO_DEPRECATED, "fieldcrypt.tag.domains": {"PII": "contact"}}
    with pytest.raises(ConfigurationError, match="disagrees with the producers"):
        ProtobufDeserializer(customer_pb2.Customer, other, registry, keyring=keyring)(data, ctx())


def test_tagged_extensions_and_any_fields_are_refused(registry: Any, keyring: Keyring) -> None:
    from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
    from google.protobuf.message_factory import GetMessageClass

    ext = field("nickname", 1000, "string", tags=["PII"])
    ext.extendee = ".google.protobuf.FieldOptions"
    proto = file(
        unique("ext"), "ex", [message("M", [field("x", 1, "string")])], deps=["google/protobuf/descriptor.proto"]
    )
    proto.extension.append(ext)
    with pytest.raises(PolicyError, match="extension"):
        ProtobufSerializer(cls(files(proto), "ex.M"), registry, NO_DEPRECATED, keyring=keyring)
    m = message("A", [field("payload", 1, "message", type_name=".google.protobuf.Any", tags=["PII"])])
    proto = file(unique("any"), "an", [m], deps=["google/protobuf/any.proto"])
    pool = descriptor_pool.DescriptorPool()
    for dep in (descriptor_pb2, any_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    from confluent_kafka.schema_registry.confluent import meta_pb2

    pool.AddSerializedFile(meta_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    with pytest.raises(PolicyError, match=r"google\.protobuf\.Any"):
        ProtobufSerializer(
            GetMessageClass(pool.FindMessageTypeByName("an.A")), registry, NO_DEPRECATED, keyring=keyring
        )


# -- found by the second review --------------------------------------------------------------------------------------


def test_a_migration_the_reader_cannot_parse_names_no_value(registry: Any, keyring: Keyring) -> None:
    from confluent_kafka.schema_registry.common.schema_registry_client import Rule, RuleKind, RuleMode, RuleSet
    from confluent_kafka.schema_registry.rules.jsonata.jsonata_executor import JsonataExecutor

    from fieldcrypt.protobuf.confluent import schema_text

    JsonataExecutor.register()
    name = unique("mig")
    v1_fields = [field("id", 1, "string"), field("email", 2, "string", tags=["PII"])]
    V1 = cls(files(file(name, "mg", [message("P", v1_fields)])), "mg.P")
    V2 = cls(files(file(name, "mg", [message("P", [field("id", 1, "string"), field("age", 3, "int32")])])), "mg.P")
    registry.register_schema("customers-value", Schema(schema_text(V1), "PROTOBUF", []))
    latest = {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True}
    data = ProtobufSerializer(V1, registry, latest, keyring=keyring)(V1(id="1", email="ann.secret@example.com"), ctx())
    expr = "$merge([$sift($, function($v, $k) {$k != 'email'}), {'age': $.'email'}])"
    up = Rule("up", "", RuleKind.TRANSFORM, RuleMode.UPGRADE, "JSONATA", None, None, expr, None, None, False)
    registry.register_schema("customers-value", Schema(schema_text(V2), "PROTOBUF", [], None, RuleSet([up], None)))
    de = ProtobufDeserializer(V2, {**NO_DEPRECATED, "use.latest.version": True}, registry, keyring=keyring)
    with pytest.raises(MalformedRecordError) as refused:
        de(data, ctx())
    assert "ann.secret" not in str(refused.value) and refused.value.__cause__ is None


def test_person_of_names_the_person_of_the_record_just_read(registry: Any, keyring: Keyring) -> None:
    ser, _ = serde(registry, keyring)
    de = ProtobufDeserializer(None, NO_DEPRECATED, registry, keyring=keyring)
    first = de(ser(customer(1), ctx()), ctx())
    assert de.person_of(first) == "c-1"
    second = de(ser(customer(2), ctx()), ctx())
    assert de.person_of(second) == "c-2" and de.person_of(first) is None  # no longer known: never a guess


def test_the_latest_schema_must_declare_the_message_in_its_own_file(registry: Any, keyring: Keyring) -> None:
    from confluent_kafka.schema_registry import SchemaReference

    from fieldcrypt.protobuf.confluent import schema_text

    a = file(unique("a"), "shop", [message("Order", [field("note", 1, "string", tags=["PII"])])])
    b = file(
        unique("b"), "shop", [message("Wrapper", [field("o", 1, "message", type_name=".shop.Order")])], deps=[a.name]
    )
    pool = files(a, b)
    Order, Wrapper = cls(pool, "shop.Order"), cls(pool, "shop.Wrapper")
    registry.register_schema(a.name, Schema(schema_text(Order), "PROTOBUF", []))
    registry.register_schema(
        "customers-value", Schema(schema_text(Wrapper), "PROTOBUF", [SchemaReference(a.name, a.name, 1)])
    )
    latest = {**NO_DEPRECATED, "auto.register.schemas": False, "use.latest.version": True}
    with pytest.raises(PolicyError, match="in its own file"):
        ProtobufSerializer(Order, registry, latest, keyring=keyring)(Order(note="x"), ctx())


def test_lint_reports_every_message_of_the_file() -> None:
    from fieldcrypt.lint import lint_schema
    from fieldcrypt.protobuf.confluent import schema_text

    address = message("Address", [field("street", 1, "string", tags=["PII"])])
    person = message("Customer", [field("email", 2, "string", tags=["PII"]), field("ssn", 4, "string")])
    C = cls(files(file(unique("two"), "shop", [address, person])), "shop.Customer")
    rows = {r.path: r.verdict for r in lint_schema(Schema(schema_text(C), "PROTOBUF")).rows}
    assert rows["shop.Customer.email"] == "encrypted" and rows["shop.Address.street"] == "encrypted"


def test_a_registry_inheriting_metadata_keeps_a_class_with_imports_writable(keyring: Keyring) -> None:
    """Confluent's registry carries the latest version's metadata.tags into a version registered without any: the
    new version keeps the tag, so a class with imports (references) is written, the field encrypted."""
    from confluent_kafka.schema_registry import Metadata, MetadataTags

    from fieldcrypt.protobuf.confluent import schema_text
    from tests.test_tag_removal_writers import InheritingRegistry

    registry = InheritingRegistry({"url": f"mock://{uuid.uuid4().hex}"})
    common = file(unique("common"), "lib", [message("Address", [field("street", 1, "string")])])
    fields = [field("ship_to", 1, "message", type_name=".lib.Address"), field("note", 2, "string")]
    v1 = file(unique("order"), "shop", [message("Order", fields)], deps=[common.name])
    O1 = cls(files(common, v1), "shop.Order")
    refs = PlainSerializer(O1, registry, NO_DEPRECATED)._resolve_dependencies(ctx(), O1.DESCRIPTOR.file)
    meta = Metadata(tags=MetadataTags({"shop.Order.note": ["PII"]}), properties=None, sensitive=None)
    registry.register_schema("customers-value", Schema(schema_text(O1), "PROTOBUF", refs, meta))
    v2 = file(v1.name.replace("order", "order2"), "shop", [message("Order", [*fields, field("extra", 3, "string")])],
              deps=[common.name])  # fmt: skip
    O2 = cls(files(common, v2), "shop.Order")
    data = ProtobufSerializer(O2, registry, NO_DEPRECATED, keyring=keyring)(O2(note="secret note"), ctx())
    assert b"secret note" not in data


def test_the_asyncio_deserializer_takes_no_message_type(keyring: Keyring) -> None:
    import asyncio

    from confluent_kafka.schema_registry import AsyncSchemaRegistryClient

    from fieldcrypt.protobuf import AsyncProtobufDeserializer, AsyncProtobufSerializer

    async def main() -> Any:
        registry = AsyncSchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        ser = await AsyncProtobufSerializer(customer_pb2.Customer, registry, NO_DEPRECATED, keyring=keyring)
        de = await AsyncProtobufDeserializer(None, NO_DEPRECATED, registry, keyring=keyring)
        return await de(await ser(customer(), ctx()), ctx())

    out = asyncio.run(main())
    assert out.email == "ann1@example.com" and out.address.street == "1 High Street"


@pytest.mark.parametrize("bad", [None, {}, "Customer", customer_pb2.Customer()])
def test_a_message_type_that_is_no_generated_class_is_refused(registry: Any, keyring: Keyring, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="generated Protobuf message class"):
        ProtobufSerializer(bad, registry, NO_DEPRECATED, keyring=keyring)
    if bad is not None:  # (None: the deserializer's extension, returning the writer's messages)
        with pytest.raises(ConfigurationError, match="generated Protobuf message class"):
            ProtobufDeserializer(bad, NO_DEPRECATED, registry, keyring=keyring)


@pytest.mark.parametrize("tag", ["", "  "])
def test_an_empty_or_blank_tag_is_refused(registry: Any, keyring: Keyring, tag: str) -> None:
    M = cls(files(file(unique("blank"), "bl", [message("M", [field("x", 1, "string", tags=[tag])])])), "bl.M")
    with pytest.raises(PolicyError, match="empty or blank") as refused:
        ProtobufSerializer(M, registry, NO_DEPRECATED, keyring=keyring)
    assert refused.value.field_path == "bl.M.x"
