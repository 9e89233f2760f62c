"""A topic moving from Confluent CSFLE to fieldcrypt: one fieldcrypt consumer reads the CSFLE history (through
confluent's ENCRYPT executor and its DEK registry) and the new fieldcrypt records; neither is read by the other's
scheme, and a CSFLE value that does not authenticate is never returned."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentAvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer as ConfluentJSONSerializer
from confluent_kafka.schema_registry.rule_registry import RuleRegistry
from confluent_kafka.schema_registry.rules.encryption.encrypt_executor import FieldEncryptionExecutor
from confluent_kafka.schema_registry.rules.encryption.localkms.local_driver import LocalKmsDriver
from confluent_kafka.schema_registry.schema_registry_client import Rule, RuleKind, RuleMode, RuleParams, RuleSet
from conftest import value_ctx

from fieldcrypt import DecryptionError, Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
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
    """A CSFLE ciphertext's first bytes are random: about one in 128 parses as a fieldcrypt header (0x01 or 0x02,
    an index out of place, an unknown key id). Such CSFLE history is still handed to confluent's executor."""
    from fieldcrypt import _wire

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
