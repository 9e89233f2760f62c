"""fieldcrypt's serdes next to confluent-kafka's, call for call, on confluent's ``mock://`` registry.

Untagged schemas: fieldcrypt writes the very bytes confluent writes and reads back the same values. Tagged schemas:
each side reads back the plaintext it wrote, and confluent's plain deserializer reads fieldcrypt's bytes (tagged
values then hold ciphertext, every other field is equal). Both sides register the same subjects and fieldcrypt
asks the registry nothing confluent would not.
"""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    dual_schema_id_deserializer,
    header_schema_id_serializer,
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentAvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as ConfluentJSONDeserializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

TOPIC = "accounts"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


def new_registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def untag(node: Any) -> Any:
    """``node`` without any ``confluent:tags``, at any depth."""
    if isinstance(node, dict):
        return {k: untag(v) for k, v in node.items() if k != "confluent:tags"}
    if isinstance(node, list):
        return [untag(v) for v in node]
    return node


# -- the two formats ---------------------------------------------------------------------------------------------

AVRO_ACCOUNT = {
    "type": "record",
    "name": "Account",
    "namespace": "example.diff",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "name", "type": "string", "confluent:tags": ["PII"]},
        {"name": "secret", "type": "bytes", "confluent:tags": ["PII"]},
        {"name": "note", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "amount", "type": "double"},
        {"name": "count", "type": "int"},
    ],
}
JSON_ACCOUNT = {
    "$schema": DRAFT7,
    "title": "Account",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string", "confluent:tags": ["PII"]},
        "note": {"type": ["string", "null"], "confluent:tags": ["PII"]},
        "amount": {"type": "number"},
        "count": {"type": "integer"},
    },
    "required": ["id", "name", "amount", "count"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Fmt:
    name: str
    account: dict[str, Any]
    ser: tuple[type, type]  # (confluent's, fieldcrypt's)
    de: tuple[type, type]

    def schema(self, tagged: bool) -> str:
        return json.dumps(self.account if tagged else untag(self.account))

    def record(self, i: int) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "id": f"acct-{i}",
            "name": f"Account Holder Number {i}",
            "note": None if i % 2 else f"a private note about holder {i}",
            "amount": 10.25 * i,
            "count": i,
        }
        if self.name == "avro":
            rec["secret"] = bytes([65 + i]) * 16
        return rec


AVRO = Fmt(
    "avro", AVRO_ACCOUNT, (ConfluentAvroSerializer, AvroSerializer), (ConfluentAvroDeserializer, AvroDeserializer)
)
JSON = Fmt(
    "json", JSON_ACCOUNT, (ConfluentJSONSerializer, JSONSerializer), (ConfluentJSONDeserializer, JSONDeserializer)
)
FORMATS = [pytest.param(AVRO, id="avro"), pytest.param(JSON, id="json")]
TAGGED = [pytest.param(False, id="untagged"), pytest.param(True, id="tagged")]


@dataclass
class Side:
    """One side of the comparison: confluent's classes (no keyring) or fieldcrypt's."""

    keyring: Keyring | None

    def _extra(self) -> dict[str, Any]:
        return {"keyring": self.keyring} if self.keyring is not None else {}

    def ser(self, fmt: Fmt, registry: Any, schema: Any, conf: dict[str, Any] | None = None, **kw: Any) -> Any:
        cls = fmt.ser[self.keyring is not None]
        return cls(schema_str=schema, schema_registry_client=registry, conf=conf, **kw, **self._extra())

    def de(self, fmt: Fmt, registry: Any, schema: Any = None, conf: dict[str, Any] | None = None, **kw: Any) -> Any:
        cls = fmt.de[self.keyring is not None]
        return cls(schema_str=schema, schema_registry_client=registry, conf=conf, **kw, **self._extra())


@dataclass
class Run:
    registry: Any
    written: list[tuple[bytes | None, Any]] = field(default_factory=list)  # (bytes, headers)
    read: list[Any] = field(default_factory=list)


def run(
    side: Side,
    fmt: Fmt,
    registry: Any,
    records: Iterable[Any],
    schema: Any,
    *,
    ser_conf: dict[str, Any] | None = None,
    de_conf: dict[str, Any] | None = None,
    ser_kw: dict[str, Any] | None = None,
    de_kw: dict[str, Any] | None = None,
    key: bool = False,
    headers: Callable[[], Any] | None = None,
) -> Run:
    """Serialize every record, then deserialize every result, with one side's classes."""
    where = MessageField.KEY if key else MessageField.VALUE
    ser = side.ser(fmt, registry, schema, ser_conf, **(ser_kw or {}))
    out = Run(registry)
    for rec in records:
        h = headers() if headers is not None else None
        out.written.append((ser(rec, SerializationContext(TOPIC, where, h)), h))
    de = side.de(fmt, registry, None, de_conf, **(de_kw or {}))
    out.read = [de(data, SerializationContext(TOPIC, where, h)) for data, h in out.written]
    return out


def assert_ciphertext_view(seen: Any, plain: Any, tagged: set[str]) -> None:
    """What confluent's plain deserializer returns for fieldcrypt's bytes: ciphertext (of the same type, not
    containing the value) in tagged fields, everything else equal."""
    if isinstance(plain, dict):
        assert isinstance(seen, dict) and seen.keys() == plain.keys()
        for k, v in plain.items():
            if k in tagged and v is not None:
                assert type(seen[k]) is type(v) and seen[k] != v, k
                assert v not in seen[k], k
            else:
                assert_ciphertext_view(seen[k], v, tagged)
    elif isinstance(plain, list):
        assert isinstance(seen, list) and len(seen) == len(plain)
        for s, p in zip(seen, plain, strict=True):
            assert_ciphertext_view(s, p, tagged)
    else:
        assert seen == plain


def compare(
    theirs: Run,
    ours: Run,
    records: list[Any],
    tagged: set[str] | None,
    fmt: Fmt,
    *,
    de_conf: dict[str, Any] | None = None,
    key: bool = False,
    expected: list[Any] | None = None,
) -> None:
    assert sorted(ours.registry.get_subjects()) == sorted(theirs.registry.get_subjects())
    assert ours.read == theirs.read
    assert theirs.read == (records if expected is None else expected)
    if not tagged:
        assert ours.written == theirs.written  # the same bytes (and headers)
        return
    for (data, _), rec in zip(ours.written, records, strict=True):
        assert data is None or all(str(rec[t]).encode() not in data for t in tagged if rec.get(t) is not None)
    plain_de = fmt.de[0](schema_str=None, schema_registry_client=ours.registry, conf=de_conf)
    where = MessageField.KEY if key else MessageField.VALUE
    for (data, h), rec in zip(ours.written, records, strict=True):
        assert_ciphertext_view(plain_de(data, SerializationContext(TOPIC, where, h)), rec, tagged)


def tagged_names(fmt: Fmt, tagged: bool) -> set[str] | None:
    if not tagged:
        return None
    return {"name", "note", "secret"} if fmt.name == "avro" else {"name", "note"}


@pytest.fixture
def sides(keyring: Keyring) -> tuple[Side, Side]:
    return Side(None), Side(keyring)


# -- subject name strategies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [topic_subject_name_strategy, topic_record_subject_name_strategy, record_subject_name_strategy],
    ids=lambda s: s.__name__,
)
@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_subject_name_strategies(fmt: Fmt, tagged: bool, strategy: Any, sides: tuple[Side, Side]) -> None:
    conf = {"subject.name.strategy": strategy}
    records = [fmt.record(i) for i in range(4)]
    theirs, ours = (
        run(s, fmt, new_registry(), records, fmt.schema(tagged), ser_conf=conf, de_conf=conf) for s in sides
    )
    expected_subject = {
        topic_subject_name_strategy: f"{TOPIC}-value",
        topic_record_subject_name_strategy: f"{TOPIC}-example.diff.Account" if fmt is AVRO else f"{TOPIC}-Account",
        record_subject_name_strategy: "example.diff.Account" if fmt is AVRO else "Account",
    }[strategy]
    assert ours.registry.get_subjects() == [expected_subject]
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt, de_conf=conf)


# -- Avro top-level unions ---------------------------------------------------------------------------------------

DEPOSIT = {
    "type": "record",
    "name": "Deposit",
    "namespace": "example.diff",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "iban", "type": "string", "confluent:tags": ["PII"]},
        {"name": "amount", "type": "double"},
    ],
}
REFUND = {
    "type": "record",
    "name": "Refund",
    "namespace": "example.diff",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "reason", "type": "string", "confluent:tags": ["PII"]},
        {"name": "ref", "type": "string"},
    ],
}


def deposit(i: int) -> dict[str, Any]:
    return {"id": f"d-{i}", "iban": f"DE89 3704 0044 0532 0130 0{i}", "amount": 5.5 * i}


def refund(i: int) -> dict[str, Any]:
    return {"id": f"r-{i}", "reason": f"refund reason for customer {i}", "ref": f"d-{i}"}


@pytest.mark.parametrize(
    "union, records",
    [
        pytest.param([DEPOSIT, REFUND], [deposit(1), refund(2), deposit(3), refund(4)], id="record|record"),
        pytest.param([DEPOSIT, "null"], [deposit(1), None, deposit(3)], id="record|null"),
        pytest.param(["null", REFUND], [None, refund(2), refund(5)], id="null|record"),
    ],
)
@pytest.mark.parametrize("tagged", TAGGED)
def test_avro_top_level_union(union: list[Any], records: list[Any], tagged: bool, sides: tuple[Side, Side]) -> None:
    schema = json.dumps(union if tagged else untag(union))
    theirs, ours = (run(s, AVRO, new_registry(), records, schema) for s in sides)
    compare(theirs, ours, records, {"iban", "reason"} if tagged else None, AVRO)


# -- schema references -------------------------------------------------------------------------------------------

AVRO_ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "example.diff",
    "fields": [
        {"name": "street", "type": "string", "confluent:tags": ["PII"]},
        {"name": "city", "type": "string"},
    ],
}
AVRO_CUSTOMER = {
    "type": "record",
    "name": "Customer",
    "namespace": "example.diff",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "name", "type": "string", "confluent:tags": ["PII"]},
        {"name": "home", "type": "example.diff.Address"},
        {"name": "previous", "type": {"type": "array", "items": "example.diff.Address"}},
    ],
}
JSON_ADDRESS = {
    "$schema": DRAFT7,
    "type": "object",
    "properties": {"street": {"type": "string", "confluent:tags": ["PII"]}, "city": {"type": "string"}},
    "required": ["street", "city"],
}
JSON_CUSTOMER = {
    "$schema": DRAFT7,
    "title": "Customer",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string", "confluent:tags": ["PII"]},
        "home": {"$ref": "address.json"},
        "previous": {"type": "array", "items": {"$ref": "address.json"}},
    },
    "required": ["id", "name", "home", "previous"],
}


def with_references(fmt: Fmt, tagged: bool, registry: Any) -> Schema:
    """Register the address schema under its own subject; return the customer schema that references it."""
    address, main = (AVRO_ADDRESS, AVRO_CUSTOMER) if fmt is AVRO else (JSON_ADDRESS, JSON_CUSTOMER)
    kind = fmt.name.upper()
    if not tagged:
        address, main = untag(address), untag(main)
    ref_subject, ref_name = ("address", "example.diff.Address") if fmt is AVRO else ("address-json", "address.json")
    registry.register_schema(ref_subject, Schema(json.dumps(address), kind))
    return Schema(json.dumps(main), kind, [SchemaReference(ref_name, ref_subject, 1)])


def customer_with_addresses(i: int) -> dict[str, Any]:
    return {
        "id": f"c-{i}",
        "name": f"Customer With Address {i}",
        "home": {"street": f"Lindenallee {i}", "city": "Potsdam"},
        "previous": [{"street": f"Alte Gasse {i}", "city": "Jena"}, {"street": f"Ringstrasse {i}", "city": "Wien"}],
    }


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_references(fmt: Fmt, tagged: bool, sides: tuple[Side, Side]) -> None:
    records = [customer_with_addresses(i) for i in range(3)]
    runs = []
    for side in sides:
        registry = new_registry()
        runs.append(run(side, fmt, registry, records, with_references(fmt, tagged, registry)))
    theirs, ours = runs
    assert sorted(ours.registry.get_subjects()) == sorted(
        [f"{TOPIC}-value", "address" if fmt is AVRO else "address-json"]
    )
    compare(theirs, ours, records, {"name", "street"} if tagged else None, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_references_with_latest_version(fmt: Fmt, sides: tuple[Side, Side]) -> None:
    records = [customer_with_addresses(i) for i in range(3)]
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    runs = []
    for side in sides:
        registry = new_registry()
        registry.register_schema(f"{TOPIC}-value", with_references(fmt, True, registry))
        runs.append(run(side, fmt, registry, records, None, ser_conf=conf, de_conf={"use.latest.version": True}))
    compare(*runs, records, {"name", "street"}, fmt)


# -- schema selection: use.latest.version, use.schema.id, normalize.schemas ------------------------------------------


@pytest.mark.parametrize("local", [pytest.param(False, id="schema_str=None"), pytest.param(True, id="schema_str")])
@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_use_latest_version(fmt: Fmt, tagged: bool, local: bool, sides: tuple[Side, Side]) -> None:
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    records = [fmt.record(i) for i in range(4)]
    runs = []
    for side in sides:
        registry = new_registry()
        registry.register_schema(f"{TOPIC}-value", Schema(fmt.schema(tagged), fmt.name.upper()))
        schema = fmt.schema(tagged) if local else None
        runs.append(run(side, fmt, registry, records, schema, ser_conf=conf, de_conf={"use.latest.version": True}))
    theirs, ours = runs
    assert ours.registry.get_versions(f"{TOPIC}-value") == [1]  # nothing registered
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt)


def _with_extra_field(fmt: Fmt, tagged: bool) -> str:
    schema = json.loads(fmt.schema(tagged))
    if fmt is AVRO:
        schema["fields"].append({"name": "extra", "type": ["null", "string"], "default": None})
    else:
        schema["properties"]["extra"] = {"type": ["string", "null"]}
    return json.dumps(schema)


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_use_schema_id(fmt: Fmt, tagged: bool, sides: tuple[Side, Side]) -> None:
    """use.schema.id pins an older version while a newer one is the latest."""
    records = [fmt.record(i) for i in range(3)]
    runs = []
    for side in sides:
        registry = new_registry()
        first = registry.register_schema(f"{TOPIC}-value", Schema(fmt.schema(tagged), fmt.name.upper()))
        registry.register_schema(f"{TOPIC}-value", Schema(_with_extra_field(fmt, tagged), fmt.name.upper()))
        conf = {"auto.register.schemas": False, "use.schema.id": first}
        runs.append(run(side, fmt, registry, records, None, ser_conf=conf))
    theirs, ours = runs
    for data, _ in ours.written:
        assert data is not None and int.from_bytes(data[1:5], "big") == 1
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt)


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_normalize_schemas(fmt: Fmt, tagged: bool, sides: tuple[Side, Side]) -> None:
    schema = json.loads(fmt.schema(tagged))
    text = json.dumps(dict(reversed(list(schema.items()))), indent=4)  # unusual key order and spacing
    records = [fmt.record(i) for i in range(3)]
    theirs, ours = (run(s, fmt, new_registry(), records, text, ser_conf={"normalize.schemas": True}) for s in sides)
    registered = [r.registry.get_latest_version(f"{TOPIC}-value").schema.schema_str for r in (theirs, ours)]
    assert registered[0] == registered[1]
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt)


# -- GUID framing in a header ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [list, dict], ids=["list-headers", "dict-headers"])
@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_guid_header_framing(fmt: Fmt, tagged: bool, headers: Callable[[], Any], sides: tuple[Side, Side]) -> None:
    """One registry for both sides, so the schema (and its GUID) is the same one."""
    registry = new_registry()
    ser_conf = {"schema.id.serializer": header_schema_id_serializer}
    de_conf = {"schema.id.deserializer": dual_schema_id_deserializer}
    records = [fmt.record(i) for i in range(3)]
    theirs, ours = (
        run(s, fmt, registry, records, fmt.schema(tagged), ser_conf=ser_conf, de_conf=de_conf, headers=headers)
        for s in sides
    )
    guid = registry.get_latest_version(f"{TOPIC}-value").guid
    for data, h in ours.written:
        assert data is not None and not data.startswith(b"\x00\x00\x00\x00\x01")  # no prefix
        values = list(h.values()) if isinstance(h, dict) else [v for k, v in h if k == "__value_schema_id"]
        assert values == [b"\x01" + uuid.UUID(guid).bytes]
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt, de_conf=de_conf)


# -- custom conversions ------------------------------------------------------------------------------------------


class Account:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Account) and vars(self) == vars(other)


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_to_dict_and_from_dict(fmt: Fmt, tagged: bool, sides: tuple[Side, Side]) -> None:
    records = [fmt.record(i) for i in range(3)]
    runs, calls = [], []
    for side in sides:
        seen: list[tuple[str, str]] = []

        def to_dict(obj: Account, ctx: SerializationContext, seen: list[tuple[str, str]] = seen) -> dict[str, Any]:
            seen.append(("to", ctx.topic))
            return dict(vars(obj))

        def from_dict(d: dict[str, Any], ctx: SerializationContext, seen: list[tuple[str, str]] = seen) -> Account:
            seen.append(("from", ctx.topic))
            return Account(**d)

        objs = [Account(**r) for r in records]
        out = run(
            side,
            fmt,
            new_registry(),
            objs,
            fmt.schema(tagged),
            ser_kw={"to_dict": to_dict},
            de_kw={"from_dict": from_dict},
        )
        runs.append(out)
        calls.append(seen)
    theirs, ours = runs
    assert calls[0] == calls[1]
    assert ours.read == theirs.read == [Account(**r) for r in records]
    if not tagged:
        assert ours.written == theirs.written
    else:
        compare(theirs, ours, records, tagged_names(fmt, tagged), fmt, expected=theirs.read)


@pytest.mark.parametrize("tagged", TAGGED)
def test_json_encode_and_decode(tagged: bool, sides: tuple[Side, Side]) -> None:
    def encode(obj: Any) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(data: bytes | str) -> Any:
        return json.loads(data, parse_float=Decimal)

    records = [JSON.record(i) for i in range(4)]
    theirs, ours = (
        run(
            s,
            JSON,
            new_registry(),
            records,
            JSON.schema(tagged),
            ser_kw={"json_encode": encode},
            de_kw={"json_decode": decode},
        )
        for s in sides
    )
    expected = [{**r, "amount": Decimal(str(r["amount"]))} for r in records]
    assert ours.read == theirs.read == expected
    if not tagged:
        assert ours.written == theirs.written
        assert all(
            data is not None and data[5:] == encode(r) for (data, _), r in zip(ours.written, records, strict=True)
        )
    else:
        for data, _ in ours.written:
            assert data is not None and data[5:].startswith(b'{"amount":')  # fieldcrypt used the encoder
        compare(theirs, ours, records, tagged_names(JSON, tagged), JSON, expected=theirs.read)


# -- keys --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_key_serialization(fmt: Fmt, tagged: bool, sides: tuple[Side, Side]) -> None:
    records = [fmt.record(i) for i in range(3)]
    theirs, ours = (run(s, fmt, new_registry(), records, fmt.schema(tagged), key=True) for s in sides)
    assert ours.registry.get_subjects() == [f"{TOPIC}-key"]
    compare(theirs, ours, records, tagged_names(fmt, tagged), fmt, key=True)


@pytest.mark.parametrize(
    "fmt, schema",
    [pytest.param(AVRO, '"string"', id="avro"), pytest.param(JSON, '{"type": "string"}', id="json")],
)
def test_primitive_key(fmt: Fmt, schema: str, sides: tuple[Side, Side]) -> None:
    records = ["k-1", "k-2", "ключ-3"]
    theirs, ours = (run(s, fmt, new_registry(), records, schema, key=True) for s in sides)
    compare(theirs, ours, records, None, fmt, key=True)


# -- registry requests -------------------------------------------------------------------------------------------

_MOCK = type(new_registry())


class CountingRegistry(_MOCK):  # type: ignore[misc, valid-type]
    """confluent's mock registry, counting calls of its public methods (including its own internal ones)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        super().__init__({"url": f"mock://{uuid.uuid4().hex}"})

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or not inspect.ismethod(attr):
            return attr
        calls = object.__getattribute__(self, "calls")

        @functools.wraps(attr)
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return attr(*args, **kwargs)

        return counted


MODES = {
    "auto-register": ({}, {}),
    "latest": ({"auto.register.schemas": False, "use.latest.version": True}, {"use.latest.version": True}),
    "lookup": ({"auto.register.schemas": False}, {}),
    "header": ({"schema.id.serializer": header_schema_id_serializer}, {}),
    "record-strategy": ({"subject.name.strategy": record_subject_name_strategy},) * 2,
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize("fmt", FORMATS)
def test_registry_requests(fmt: Fmt, tagged: bool, mode: str, sides: tuple[Side, Side]) -> None:
    """5 records serialized, then deserialized: per phase, fieldcrypt calls no registry method confluent does not
    call, and no method more often, but on purpose, once per subject (and schema id) per serializer: the subject's
    versions, each read once, before auto-registering and in every other mode (the schema written must keep the
    tags of every registered version where it would write the field; docs/compatibility.md); after a lookup, also
    the version found as registered (to plan from its metadata). (fieldcrypt may call
    fewer: it skips the migration lookup when no schema carries migration rules, and caches plans by schema id.)"""
    ser_conf, de_conf = MODES[mode]
    records = [fmt.record(i) for i in range(5)]
    counts = []
    for side in sides:
        registry = CountingRegistry()
        if mode in ("latest", "lookup"):
            registry.register_schema(f"{TOPIC}-value", Schema(fmt.schema(tagged), fmt.name.upper()))
        registry.calls.clear()
        ser = side.ser(fmt, registry, fmt.schema(tagged), ser_conf)
        de = side.de(fmt, registry, None, de_conf)
        ctxs = [SerializationContext(TOPIC, MessageField.VALUE, [] if mode == "header" else None) for _ in records]
        written = [ser(rec, ctx) for rec, ctx in zip(records, ctxs, strict=True)]
        on_write = Counter(registry.calls)
        assert [de(data, ctx) for data, ctx in zip(written, ctxs, strict=True)] == records
        counts.append({"serialize": on_write, "deserialize": registry.calls - on_write})
    theirs, ours = counts
    # on purpose, once per subject (and schema id) per serializer: the subject's version numbers, live and with the
    # soft-deleted ones (two listings), and each version but the one written, to compare with (none here: a new
    # subject, or only the version written); looking up, also the version found as registered
    extra = {"lookup": Counter(get_version=1, get_versions=2)}
    expected = extra.get(mode, Counter(get_versions=2))
    for method, n in expected.items():
        assert ours["serialize"][method] == theirs["serialize"][method] + n, (method, ours, theirs)
    ours["serialize"] = ours["serialize"] - expected
    for phase in ("serialize", "deserialize"):
        assert set(ours[phase]) <= set(theirs[phase]), (phase, ours, theirs)
        assert {m: n for m, n in ours[phase].items() if n > theirs[phase][m]} == {}, (phase, ours, theirs)
