"""A topic moving from Confluent CSFLE to fieldcrypt: one fieldcrypt consumer reads the CSFLE history (through
confluent's ENCRYPT executor and its DEK registry) and the new fieldcrypt records; neither is read by the other's
scheme, and a CSFLE value that does not authenticate is never returned."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import tempfile
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentAvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJSONSerializer
from confluent_kafka.schema_registry.rule_registry import RuleRegistry
from confluent_kafka.schema_registry.rules.encryption.encrypt_executor import FieldEncryptionExecutor
from confluent_kafka.schema_registry.rules.encryption.localkms.local_driver import LocalKmsDriver
from confluent_kafka.schema_registry.schema_registry_client import Rule, RuleKind, RuleMode, RuleParams, RuleSet
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import value_ctx
from test_scan import fields, run

import fieldcrypt
from fieldcrypt import DecryptionError, KeyNotFoundError, Keyring, KeyShreddedError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.core.lookalike import CONF_KEY, value_of
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

RULE_CONF = {"secret": "a-local-kms-secret"}
AVRO = {
    "type": "record",
    "name": "Customer",
    "fields": [
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "country", "type": "string"},
    ],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "confluent:tags": ["PII"]},
        "country": {"type": "string"},
    },
}


def _encrypt_rule() -> Rule:
    params = RuleParams(
        {
            "encrypt.kek.name": f"kek-{uuid.uuid4().hex[:6]}",
            "encrypt.kms.type": "local-kms",
            "encrypt.kms.key.id": "mykey",
        }
    )
    return Rule(
        "encrypt-pii",
        "",
        RuleKind.TRANSFORM,
        RuleMode.WRITEREAD,
        "ENCRYPT",
        ["PII"],
        params,
        None,
        None,
        "ERROR,ERROR",
        False,
    )


def _rules() -> RuleRegistry:
    """A private rule registry with a fresh ENCRYPT executor (it binds itself to the first registry client it is
    configured with): never confluent's global one, which every later serde in the process would configure."""
    LocalKmsDriver.register()
    rules = RuleRegistry()
    rules.register_executor(FieldEncryptionExecutor())
    return rules


def _setup(fmt: str) -> tuple[SchemaRegistryClient, Any, Any, Any, RuleRegistry]:
    rules = _rules()
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    text, kind = (json.dumps(AVRO), "AVRO") if fmt == "avro" else (json.dumps(JSON_SCHEMA), "JSON")
    registry.register_schema("orders-value", Schema(text, kind, [], None, RuleSet(None, [_encrypt_rule()])))
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    if fmt == "avro":
        csfle = ConfluentAvroSerializer(registry, text, conf=conf, rule_conf=RULE_CONF, rule_registry=rules)
        return registry, csfle, AvroSerializer, AvroDeserializer, rules
    csfle = ConfluentJSONSerializer(text, registry, conf=conf, rule_conf=RULE_CONF, rule_registry=rules)
    return registry, csfle, JSONSerializer, JSONDeserializer, rules


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_one_consumer_reads_csfle_history_and_fieldcrypt_records(fmt: str, keyring: Keyring) -> None:
    registry, csfle, ser_cls, de_cls, rules = _setup(fmt)
    old = csfle({"email": "old@example.com", "country": "DE"}, value_ctx())
    assert b"old@example.com" not in old  # CSFLE encrypted it
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    text = json.dumps(AVRO if fmt == "avro" else JSON_SCHEMA)
    if fmt == "avro":
        ours = ser_cls(registry, text, conf=conf, keyring=keyring)
        de = de_cls(
            registry, conf={"use.latest.version": True}, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring
        )
    else:
        ours = ser_cls(text, registry, conf=conf, keyring=keyring)
        de = de_cls(
            None,
            schema_registry_client=registry,
            conf={"use.latest.version": True},
            rule_conf=RULE_CONF,
            rule_registry=rules,
            keyring=keyring,
        )
    new = ours({"email": "new@example.com", "country": "FR"}, value_ctx())
    assert b"new@example.com" not in new
    assert de(old, value_ctx()) == {"email": "old@example.com", "country": "DE"}
    assert de(new, value_ctx()) == {"email": "new@example.com", "country": "FR"}
    assert keyring.keys() != []  # the new record's key is fieldcrypt's, in its store


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_a_csfle_value_that_does_not_authenticate_is_never_returned(fmt: str, keyring: Keyring) -> None:
    registry, csfle, _, de_cls, rules = _setup(fmt)
    old = csfle({"email": "old@example.com", "country": "DE"}, value_ctx())
    if fmt == "avro":
        de = de_cls(
            registry, conf={"use.latest.version": True}, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring
        )
        # flip a byte inside the encrypted email (after the 5-byte prefix and the length varint)
        tampered = old[:10] + bytes([old[10] ^ 1]) + old[11:]
    else:
        de = de_cls(None, schema_registry_client=registry, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring)
        doc = json.loads(old[5:])
        doc["email"] = doc["email"][:-6] + ("A" if doc["email"][-6] != "A" else "B") + doc["email"][-5:]
        tampered = old[:5] + json.dumps(doc).encode()
    with pytest.raises(DecryptionError):
        de(tampered, value_ctx())
    with pytest.raises(DecryptionError):  # plaintext where CSFLE ciphertext belongs is not accepted either
        de(old[:5] + _plain_payload(fmt, {"email": "in clear", "country": "DE"}), value_ctx())


def _plain_payload(fmt: str, record: dict[str, Any]) -> bytes:
    """What a producer that skipped the ENCRYPT rule would write after the same 5-byte prefix."""
    if fmt == "json":
        return json.dumps(record).encode()
    import io

    from fastavro import parse_schema, schemaless_writer

    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(AVRO), record)
    return buf.getvalue()


# -- the record or the rule cannot steer the CSFLE read path (issue 15, item 1) -----------------------------------
TWO_TAGGED = {
    "type": "record",
    "name": "Customer",
    "fields": [
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "phone", "type": "string", "confluent:tags": ["PII"]},
        {"name": "country", "type": "string"},
    ],
}


def _rule(on_failure: str = "ERROR,ERROR", disabled: bool = False, mode: RuleMode = RuleMode.WRITEREAD) -> Rule:
    base = _encrypt_rule()
    return Rule(
        base.name, "", RuleKind.TRANSFORM, mode, "ENCRYPT", ["PII"], base.params, None, None, on_failure, disabled
    )


def _registry_with(schema: dict[str, Any], rule: Rule, enable_at: str | None = None) -> SchemaRegistryClient:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema(
        "orders-value", Schema(json.dumps(schema), "AVRO", [], None, RuleSet(None, [rule], None, enable_at))
    )
    return registry


def _avro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    import io

    from fastavro import parse_schema, schemaless_writer

    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), record)
    return buf.getvalue()


def _consumer(registry: SchemaRegistryClient, keyring: Keyring, rules: RuleRegistry, **conf: Any) -> AvroDeserializer:
    return AvroDeserializer(
        registry, conf={"use.latest.version": True, **conf}, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring
    )


def _ctx_with(headers: list[tuple[str, bytes]]) -> Any:
    from confluent_kafka.serialization import MessageField, SerializationContext

    return SerializationContext("orders", MessageField.VALUE, headers)


FORGED = {"email": "forged@example.com", "country": "DE"}


@pytest.mark.parametrize(
    "case",
    ["dlq-header", "on-failure-none", "disabled", "mode-write-only", "enable-at-cloud", "header-and-none"],
)
def test_forged_plaintext_is_never_read_as_decrypted(case: str, keyring: Keyring) -> None:
    """A producer writes plaintext into the tagged field of a topic whose schema carries a CSFLE ENCRYPT rule, and
    adds the DLQ header naming the rule, or the rule's settings make confluent skip it or swallow its failure."""
    rules = _rules()
    rule = _rule(
        on_failure="ERROR,NONE" if case in ("on-failure-none", "header-and-none") else "ERROR,ERROR",
        disabled=case == "disabled",
        mode=RuleMode.WRITE if case == "mode-write-only" else RuleMode.WRITEREAD,
    )
    registry = _registry_with(AVRO, rule, "CLOUD" if case == "enable-at-cloud" else None)
    sid = registry.get_latest_version("orders-value").schema_id
    forged = b"\x00" + sid.to_bytes(4, "big") + _avro(AVRO, FORGED)
    headers = [("__rule.name", rule.name.encode())] if "header" in case else []
    de = _consumer(registry, keyring, rules)
    with pytest.raises(DecryptionError):
        de(forged, _ctx_with(headers))
    assert de.stats.plaintext == 0
    # under the explicit opt-in it is plaintext, and counted as such: never "decrypted"
    accepting = _consumer(registry, keyring, rules, **{"fieldcrypt.on.plaintext": "accept"})
    assert accepting(forged, _ctx_with(headers)) == FORGED
    assert accepting.stats.plaintext == 1
    # a real CSFLE record under the same rule still reads
    csfle = ConfluentAvroSerializer(
        registry,
        json.dumps(AVRO),
        conf={"auto.register.schemas": False, "use.latest.version": True},
        rule_conf=RULE_CONF,
        rule_registry=rules,
    )
    if case not in ("disabled", "mode-write-only", "enable-at-cloud"):  # confluent itself would not encrypt then
        old = csfle({"email": "old@example.com", "country": "DE"}, value_ctx())
        assert b"old@example.com" not in old
        assert de(old, _ctx_with(headers)) == {"email": "old@example.com", "country": "DE"}


@pytest.mark.parametrize("on_failure", ["ERROR,ERROR", "ERROR,NONE"])
def test_a_fieldcrypt_ciphertext_mixed_with_forged_plaintext_is_never_returned(
    on_failure: str, keyring: Keyring
) -> None:
    """A record mixing a real fieldcrypt ciphertext (copied from a record fieldcrypt wrote) with forged plaintext in
    another tagged field: neither the raw ciphertext nor the plaintext comes back as a value."""
    rules = _rules()
    registry = _registry_with(TWO_TAGGED, _rule(on_failure=on_failure))
    ser = AvroSerializer(
        registry,
        json.dumps(TWO_TAGGED),
        conf={"auto.register.schemas": False, "use.latest.version": True},
        keyring=keyring,
    )
    real = ser({"email": "a@example.com", "phone": "+4915112345678", "country": "DE"}, value_ctx())
    import io

    from fastavro import parse_schema, schemaless_reader

    seen = schemaless_reader(io.BytesIO(real[5:]), parse_schema(TWO_TAGGED), None)
    sid = registry.get_latest_version("orders-value").schema_id
    for accept in ("raise", "accept"):
        de = _consumer(registry, keyring, rules, **{"fieldcrypt.on.plaintext": accept})
        for headers in ([], [("__rule.name", b"encrypt-pii")]):
            mixed = dict(seen, phone="+4915100000000")
            with pytest.raises(DecryptionError):
                de(b"\x00" + sid.to_bytes(4, "big") + _avro(TWO_TAGGED, mixed), _ctx_with(headers))
        assert de(real, value_ctx())["email"] == "a@example.com"


@pytest.mark.parametrize("case", ["dlq-header", "on-failure-none"])
def test_forged_plaintext_in_a_json_document_is_never_read_as_decrypted(case: str, keyring: Keyring) -> None:
    rules = _rules()
    rule = _rule(on_failure="ERROR,NONE" if case == "on-failure-none" else "ERROR,ERROR")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    registry.register_schema("orders-value", Schema(json.dumps(JSON_SCHEMA), "JSON", [], None, RuleSet(None, [rule])))
    sid = registry.get_latest_version("orders-value").schema_id
    forged = b"\x00" + sid.to_bytes(4, "big") + json.dumps(FORGED).encode()
    headers = [("__rule.name", b"encrypt-pii")] if case == "dlq-header" else []
    de = JSONDeserializer(
        None, schema_registry_client=registry, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring
    )
    with pytest.raises(DecryptionError):
        de(forged, _ctx_with(headers))
    csfle = ConfluentJSONSerializer(
        json.dumps(JSON_SCHEMA),
        registry,
        conf={"auto.register.schemas": False, "use.latest.version": True},
        rule_conf=RULE_CONF,
        rule_registry=rules,
    )
    assert de(csfle({"email": "old@example.com", "country": "DE"}, value_ctx()), _ctx_with(headers))["email"] == (
        "old@example.com"
    )


def test_csfle_values_that_look_like_a_fieldcrypt_header_still_read(keyring: Keyring) -> None:
    """A CSFLE ciphertext's first bytes are random: one in 128 starts with a fieldcrypt format byte (0x01 or 0x02),
    and about one Avro string in 800 parses as a whole fieldcrypt value (an index out of place, an unknown key id).
    Such CSFLE history is still handed to confluent's executor."""
    from fieldcrypt.crypto import wire as _wire

    registry, csfle, _, de_cls, rules = _setup("avro")
    de = de_cls(registry, conf={"use.latest.version": True}, rule_conf=RULE_CONF, rule_registry=rules, keyring=keyring)
    strict = de_cls(
        registry,
        conf={"use.latest.version": True, "fieldcrypt.min.format.version": 2},
        rule_conf=RULE_CONF,
        rule_registry=rules,
        keyring=keyring,
    )
    import io

    from fastavro import parse_schema, schemaless_reader

    parsed = parse_schema(AVRO)
    found = 0
    for i in range(4000):
        email = f"p{i:04d}@example.com"  # 17 characters: a CSFLE ciphertext of 45 bytes, base64 without padding
        data = csfle({"email": email, "country": "DE"}, value_ctx())
        text = schemaless_reader(io.BytesIO(data[5:]), parsed, None)["email"]
        try:
            _wire.parse_value(_wire.decode_text(text))
        except _wire.UnsupportedValue:
            pass
        except ValueError:
            continue  # fieldcrypt would not take it for its own
        found += 1
        assert de(data, value_ctx()) == {"email": email, "country": "DE"}
        assert strict(data, value_ctx()) == {"email": email, "country": "DE"}
        if found == 3:
            break
    assert found == 3


def test_csfle_history_is_decrypted_under_on_plaintext_accept(keyring: Keyring) -> None:
    """A consumer that also reads plaintext history (on.plaintext=accept) gets CSFLE values decrypted, never their
    base64 ciphertext as 'plaintext'; the plaintext history still reads, counted."""
    registry, csfle, _, de_cls, rules = _setup("avro")
    de = de_cls(
        registry,
        conf={"use.latest.version": True, "fieldcrypt.on.plaintext": "accept"},
        rule_conf=RULE_CONF,
        rule_registry=rules,
        keyring=keyring,
    )
    old = csfle({"email": "old@example.com", "country": "DE"}, value_ctx())
    assert de(old, value_ctx()) == {"email": "old@example.com", "country": "DE"}
    assert de.stats.plaintext == 0
    history = old[:5] + _plain_payload("avro", {"email": "before@example.com", "country": "DE"})
    assert de(history, value_ctx()) == {"email": "before@example.com", "country": "DE"}
    assert de.stats.plaintext == 1


# -- CSFLE values that parse as a fieldcrypt value, per path ---------------------------------------------------------
# A CSFLE ciphertext is Tink's AES-GCM output (a random 12-byte IV, the ciphertext, the tag), base64 in string fields.
# Its first byte is 0x01 or 0x02 once in 128, and about once in 256 the whole value parses as a fieldcrypt value
# (measured on 40,000 real ones: bytes 1 in 247, padded base64 1 in 260, Avro strings, where fieldcrypt's unpadded
# text admits only lengths without padding, 1 in 800), naming a random key id. A record of them forms a fieldcrypt
# record (fieldcrypt.crypto.wire.forms_record) far less often: one value about once in 65,536 (index 0 of format 1).
# Generated ones cover the common classes; the rare ones are built with the writer's own DEK and a chosen IV, which
# confluent's executor decrypts like any other.
THREE = {
    "type": "record",
    "name": "Customer",
    "fields": [
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "blob", "type": "bytes", "confluent:tags": ["PII"]},
        {"name": "note", "type": "string", "confluent:tags": ["SECRET"]},  # CSFLE's, not fieldcrypt's
        {"name": "country", "type": "string"},
    ],
}
SECRET_IN_CLEAR = {"fieldcrypt.plaintext.tags": "SECRET"}  # fieldcrypt leaves SECRET fields alone, CSFLE does not


class _CsfleWriter:
    """confluent's CSFLE serializer (local KMS, mock registry and DEK registry) for one Avro schema, and its DEK."""

    def __init__(self, schema: dict[str, Any], tags: tuple[str, ...] = ("PII",)) -> None:
        self.executor = FieldEncryptionExecutor()
        LocalKmsDriver.register()
        self.rules = RuleRegistry()
        self.rules.register_executor(self.executor)
        base = _encrypt_rule()
        self.kek = base.params.params["encrypt.kek.name"]
        rule = Rule(base.name, "", RuleKind.TRANSFORM, RuleMode.WRITEREAD, "ENCRYPT", list(tags), base.params, None,
                    None, "ERROR,ERROR", False)  # fmt: skip
        self.rule_set = RuleSet(None, [rule])
        self.schema = schema
        self.registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        self.registry.register_schema("orders-value", Schema(json.dumps(schema), "AVRO", [], None, self.rule_set))
        self.serializer = ConfluentAvroSerializer(
            self.registry,
            json.dumps(schema),
            conf={"auto.register.schemas": False, "use.latest.version": True},
            rule_conf=RULE_CONF,
            rule_registry=self.rules,
        )

    def __call__(self, record: dict[str, Any]) -> bytes:
        data: bytes = self.serializer(copy.deepcopy(record), value_ctx())  # confluent's CSFLE writes into the dict
        return data

    def decoded(self, data: bytes) -> dict[str, Any]:
        from fastavro import parse_schema, schemaless_reader

        found: dict[str, Any] = schemaless_reader(io.BytesIO(data[5:]), parse_schema(self.schema), None)
        return found

    def framed(self, record: dict[str, Any]) -> bytes:
        """A record as this writer's schema frames it, its values as given (CSFLE ciphertexts built below)."""
        sid = self.registry.get_latest_version("orders-value").schema_id
        return b"\x00" + sid.to_bytes(4, "big") + _avro(self.schema, record)

    def ciphertext(self, first: bytes, plaintext: bytes) -> bytes:
        """A CSFLE ciphertext of ``plaintext`` under this writer's DEK, as Tink's AES-256-GCM writes it, whose random
        IV happens to start with ``first``."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from tink.proto import aes_gcm_pb2

        dek = self.executor.executor.client.get_dek(self.kek, "orders-value")
        key = aes_gcm_pb2.AesGcmKey.FromString(dek.get_key_material_bytes()).key_value
        iv = first + os.urandom(12 - len(first))
        return iv + AESGCM(key).encrypt(iv, plaintext, b"")

    def consumer(self, keyring: Keyring, csfle: bool = True, **conf: Any) -> AvroDeserializer:
        """fieldcrypt's deserializer of this topic; without ``csfle``, as ``fieldcrypt verify`` reads: no CSFLE keys."""
        extra: dict[str, Any] = {"rule_conf": RULE_CONF, "rule_registry": self.rules} if csfle else {}
        return AvroDeserializer(
            self.registry, conf={"use.latest.version": True, **SECRET_IN_CLEAR, **conf}, keyring=keyring, **extra
        )


def _record(i: int) -> dict[str, Any]:
    email = f"p{i}@example.com"
    return {"email": email, "blob": email.encode(), "note": f"note {i}", "country": "DE"}


def _parses(v: Any, tagged: bool) -> bool:
    """Whether a value parses as a fieldcrypt value: in a tagged Avro field as the reader parses it (a string as
    unpadded base64), elsewhere as the untagged-field check does (padded base64 too)."""
    if not tagged:
        return value_of(v) is not None
    try:
        _wire.parse_value(_wire.decode_text(v) if isinstance(v, str) else v)
    except _wire.UnsupportedValue:
        return True
    except ValueError:
        return False
    return True


def _colliding(
    writer: _CsfleWriter, fields: tuple[str, ...], wanted: int, clean: tuple[str, ...] = ()
) -> list[tuple[dict[str, Any], bytes]]:
    """Real CSFLE records, written one by one, in which one of ``fields`` parses as a fieldcrypt value (and none of
    ``clean`` does: ``fields=()`` gives records in which none of ``clean`` parses)."""
    found = []
    for i in range(20_000):
        data = writer(_record(i))
        values = writer.decoded(data)
        if any(_parses(values[f], f != "note") for f in clean):
            continue  # (a CSFLE value parses as a fieldcrypt one about once in 256: never where it must not)
        if not fields or any(_parses(values[f], f != "note") for f in fields):
            found.append((_record(i), data))
            if len(found) == wanted:
                return found
    raise AssertionError("no CSFLE value parsed as a fieldcrypt value")  # about 1 in 256: not reached


def test_generated_csfle_values_that_parse_as_fieldcrypt_values_read_through_every_path(keyring: Keyring) -> None:
    """Real CSFLE records whose tagged values (string or bytes) or untagged values parse as fieldcrypt values: the
    CSFLE read path decrypts them; a reader without CSFLE keys (as ``fieldcrypt verify``) refuses them as not
    fieldcrypt's, naming no key id (it named the CSFLE bytes as a key and called them tampered); the untagged-field
    check never refuses them."""
    writer = _CsfleWriter(THREE, ("PII", "SECRET"))
    reader = writer.consumer(keyring)
    no_keys = writer.consumer(keyring, csfle=False)
    verify_like = writer.consumer(
        keyring,
        csfle=False,
        **{"fieldcrypt.on.denied": "marker", "fieldcrypt.on.plaintext": "accept", CONF_KEY: "accept"},
    )
    for record, data in _colliding(writer, ("email", "blob"), 3):
        assert reader(data, value_ctx()) == record
        for de in (no_keys, verify_like):
            with pytest.raises(DecryptionError) as refused:
                de(data, value_ctx())
            assert type(refused.value) is DecryptionError and refused.value.key_id is None  # no CSFLE bytes as a key
    assert reader.stats.untagged_ciphertext == 0 and verify_like.stats.denied == 0
    for record, data in _colliding(writer, ("note",), 3):  # untagged for fieldcrypt
        assert reader(data, value_ctx()) == record
    assert reader.stats.untagged_ciphertext == 0


def test_the_untagged_field_check_leaves_csfle_values_alone(keyring: Keyring) -> None:
    """CSFLE ciphertexts that parse as fieldcrypt values, in a field fieldcrypt does not tag, next to fieldcrypt's own
    values: the untagged-field check (``fieldcrypt.core.lookalike``) asks the key store, which never held their key ids,
    and returns them as they are, in its strictest mode. (Unchanged: a value naming a key the store holds would be
    refused; for a random key id that is about one chance in 2**32 per key in the store.)"""
    writer = _CsfleWriter(THREE, ("PII", "SECRET"))
    ours = AvroSerializer(
        writer.registry,
        json.dumps(THREE),
        conf={"auto.register.schemas": False, "use.latest.version": True, **SECRET_IN_CLEAR},
        keyring=keyring,
    )
    de = writer.consumer(keyring, **{CONF_KEY: "raise"})
    for record, data in _colliding(writer, ("note",), 3):
        note = writer.decoded(data)["note"]  # CSFLE's ciphertext, as it sits in the topic
        mine = dict(record, note=note)
        assert de(ours(mine, value_ctx()), value_ctx()) == mine
    assert de.stats.untagged_ciphertext == 0


@pytest.mark.parametrize("state", ["readable", "shredded", "denied", "unknown"])
@pytest.mark.parametrize("on_erased", ["null", "marker", "raise"])
def test_a_csfle_value_naming_a_key_of_the_store_reads_as_csfle(
    state: str, on_erased: str, keyring: Keyring, store_url: str, tmp_path: Any
) -> None:
    """A CSFLE ciphertext whose random first bytes are a fieldcrypt value 0 (format 1, index 0) naming a key this
    store holds for the subject's domain, next to an ordinary CSFLE value: read as the CSFLE value it is. It was
    read as an erasure (None, a marker, ``KeyShreddedError``) or an ``AccessDeniedError``. (Values that also form a
    fieldcrypt record keep fieldcrypt's outcome: a CSFLE record with one tagged value does about once in 65,536.)"""
    writer = _CsfleWriter(TWO_TAGGED)
    if state == "denied":  # a key wrapped by another KEK, in the same store
        with Keyring(store_url, fieldcrypt.create_local_kek(tmp_path / "other-kek.json")) as other:
            key_id = other.encryption_key("orders-value").key_id
    else:
        key_id = keyring.encryption_key("orders-value").key_id if state != "unknown" else 0x0BADC0DE
    if state == "shredded":
        keyring.shred_domain("orders-value")
    plain = {"email": "old12@example.com", "phone": "+4915112345678", "country": "DE"}
    ordinary = writer.decoded(writer(plain))  # its DEK is created with the first record
    email = base64.b64encode(writer.ciphertext(b"\x01" + key_id.to_bytes(4, "big") + b"\x00", b"old12@example.com"))
    assert _wire.parse_value(_wire.decode_text(email.decode()))[1:3] == (key_id, 0)  # 45 bytes: no base64 padding
    data = writer.framed(dict(ordinary, email=email.decode()))
    de = writer.consumer(keyring, **{"fieldcrypt.on.erased": on_erased})
    assert de(data, value_ctx()) == plain
    assert (de.stats.erased, de.stats.denied) == (0, 0)


def test_a_real_fieldcrypt_record_is_never_taken_for_csfle(keyring: Keyring) -> None:
    """fieldcrypt records on a CSFLE topic: readable, erased, tampered and of another key store keep fieldcrypt's
    verdicts, with and without CSFLE keys."""
    writer = _CsfleWriter(TWO_TAGGED)
    ours = AvroSerializer(
        writer.registry,
        json.dumps(TWO_TAGGED),
        conf={"auto.register.schemas": False, "use.latest.version": True},
        keyring=keyring,
    )
    plain = {"email": "new@example.com", "phone": "+4915112345678", "country": "FR"}
    data = ours(plain, value_ctx())
    for csfle in (True, False):
        assert writer.consumer(keyring, csfle)(data, value_ctx()) == plain
    record = writer.decoded(data)
    moved = writer.framed(dict(record, email=record["phone"], phone=record["email"]))
    for csfle in (True, False):
        with pytest.raises(DecryptionError) as tampered:
            writer.consumer(keyring, csfle)(moved, value_ctx())
        assert tampered.value.key_id is not None  # fieldcrypt's own verdict, on its own key
    with tempfile.TemporaryDirectory() as tmp:  # another key store: its keys are unknown here
        other_store = fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db")
        with Keyring(other_store, fieldcrypt.create_local_kek(f"{tmp}/kek.json")) as other:
            for csfle in (True, False):
                with pytest.raises(KeyNotFoundError):
                    writer.consumer(other, csfle)(data, value_ctx())
    keyring.shred_domain("orders-value")
    for csfle in (True, False):
        de = writer.consumer(keyring, csfle)
        assert de(data, value_ctx()) == dict(plain, email="<erased>", phone="<erased>")  # not nullable: placeholder
        assert de.stats.erased == 2
        with pytest.raises(KeyShreddedError):
            writer.consumer(keyring, csfle, **{"fieldcrypt.on.erased": "raise"})(data, value_ctx())


@pytest.mark.parametrize(
    "first",
    [
        b"\x01\x0b\xad\xc0\xde\x00",
        b"\x02\x01",
        b"\x02\x05",
        # flags 0x04, key id, index 1, a view of 16 bytes under another key id: a masked view naming unknown keys
        b"\x02\x04\x0b\xad\xc0\xde\x01\x10\x0b\xad\xf0\x0d",
    ],
    ids=[
        "format-1-value-0-unknown-key",
        "format-2-reserved-mode",
        "format-2-reserved-mode-with-view",
        "format-2-masked-view-unknown-keys",
    ],
)
def test_without_csfle_keys_a_csfle_value_is_never_read_as_a_key_or_format_of_fieldcrypt(
    first: bytes, keyring: Keyring
) -> None:
    """A reader without CSFLE keys (``fieldcrypt verify``, or a consumer whose DEK registry is down) refuses a CSFLE
    record whose value looks like a fieldcrypt value 0 naming an unknown key, or a newer fieldcrypt format, as what
    it is: it was a ``KeyNotFoundError`` for a key id that is CSFLE bytes, or an ``UnsupportedFormatError`` telling
    to upgrade readers."""
    writer = _CsfleWriter(TWO_TAGGED)
    plain = {"email": "old12@example.com", "phone": "+4915112345678", "country": "DE"}
    ordinary = writer.decoded(writer(plain))
    email = base64.b64encode(writer.ciphertext(first, b"old12@example.com")).decode()
    assert _parses(email, tagged=True)
    data = writer.framed(dict(ordinary, email=email))
    assert writer.consumer(keyring)(data, value_ctx()) == plain  # with CSFLE's keys: decrypted
    for conf in ({}, {"fieldcrypt.on.denied": "null"}, {"fieldcrypt.on.denied": "marker"}):
        with pytest.raises(DecryptionError) as refused:
            writer.consumer(keyring, csfle=False, **conf)(data, value_ctx())
        assert type(refused.value) is DecryptionError and refused.value.key_id is None
        assert refused.value.field_path == "Customer.email"


@pytest.mark.broker
def test_scan_and_verify_never_count_a_csfle_value_as_fieldcrypt_ciphertext(
    broker: Any, http_registry: Any, tmp_path: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """A topic migrating from CSFLE: real CSFLE records (some with tagged or untagged values that parse as fieldcrypt
    values) and one fieldcrypt record. ``scan`` counts only the fieldcrypt record's values as fieldcrypt ciphertext
    (with and without keys: the CSFLE ones were ciphertext, denied or unverified in tagged fields, and ciphertext in
    the untagged field, a finding); ``verify`` counts no CSFLE value as denied and names no CSFLE bytes as a key."""
    writer = _CsfleWriter(THREE, ("PII", "SECRET"))
    tagged = ("email", "blob")
    csfle = [data for _, data in _colliding(writer, tagged, 2) + _colliding(writer, ("note",), 2, clean=tagged)]
    csfle += [data for _, data in _colliding(writer, (), 2, clean=(*tagged, "note"))]  # nothing parses
    topic = f"csfle-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    registry = SchemaRegistryClient({"url": http_registry.url})
    sid = registry.register_schema(f"{topic}-value", Schema(json.dumps(THREE), "AVRO", [], None, writer.rule_set))
    assert registry.get_schema(sid).rule_set is not None  # the registry keeps the ENCRYPT rule
    kek = fieldcrypt.create_local_kek(tmp_path / "kek.json")
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    with Keyring(store, kek) as kr:
        ours = AvroSerializer(
            registry,
            json.dumps(THREE),
            conf={"auto.register.schemas": False, "use.latest.version": True, **SECRET_IN_CLEAR},
            keyring=kr,
        )
        mine = ours(_record(99), SerializationContext(topic, MessageField.VALUE))
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for data in [*csfle, mine]:
        producer.produce(topic, value=b"\x00" + sid.to_bytes(4, "big") + data[5:], partition=0)
    assert producer.flush(30) == 0
    where = [topic, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--timeout", "10"]
    policy = ["--plaintext-tag", "SECRET", "--json"]
    keys = ["--store", store, "--kek", kek]
    for extra in ([], keys):
        _, out, err = run(capfd, "scan", *where, *policy, *extra)
        report = json.loads(out)
        f = fields(report, f"{topic}-value")
        for tagged in ("$.email", "$.blob"):
            assert (f[tagged]["values"], f[tagged]["ciphertext"]) == (7, 1), err  # the fieldcrypt record's only
            if extra:
                assert (f[tagged]["readable"], f[tagged]["denied"], f[tagged]["unverified"]) == (1, 0, 0)
        assert f["$.note (untagged)"]["ciphertext"] == 0
        assert report["findings"]["ciphertext_in_untagged_fields"] == 0
    _, out, err = run(capfd, "verify", *where, *policy, *keys)
    report = json.loads(out)
    assert sum(row["denied"] for row in report["rows"]) == 0, err
    assert sum(row["readable"] for row in report["rows"]) == 2
    bad = report["bad_records"]
    assert bad["count"] == 2 and all("key_id" not in entry for entry in bad["first"])  # the tagged collisions
