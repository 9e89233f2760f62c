"""``fieldcrypt schema lint``: per field path the serializer's own verdict (the same refusals with the same reasons,
the same encrypted paths), hints for personal data in clear, tags removed against a previous version (file, git
revision, registered version), exit codes for CI and pre-commit, the --json shape, and nothing of the schema's
values in any output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.schema_registry import Metadata, MetadataTags, Schema, SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import ROOT, SCHEMAS, avsc
from tag_schemas import CONF as GENERATED_CONF
from tag_schemas import avro as generated_avro
from tag_schemas import json_schema as generated_json

from fieldcrypt import Keyring, PolicyError
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.cli import main
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.json_schema import JSONSerializer
from fieldcrypt.lint import (
    FORMAT_HINTS,
    NAME_HINTS,
    QUALIFIERS,
    Hint,
    hint_for,
    lint_schema,
    normalize_name,
    removed_tags,
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("FIELDCRYPT_CONFIG", "FIELDCRYPT_SCHEMA_REGISTRY", "FIELDCRYPT_REGISTRY_USER_INFO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["schema", "lint", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def lint_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def write(tmp_path: Path, name: str, schema: Any) -> str:
    path = tmp_path / name
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema), encoding="utf-8")
    return str(path)


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {r["path"]: r["verdict"] for r in report["rows"]}


def kinds(report: dict[str, Any]) -> list[str]:
    return [f["kind"] for f in report["findings"]]


ACCOUNT_AVRO = {
    "type": "record",
    "name": "Account",
    "namespace": "acme",
    "fields": [
        {"name": "accountId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "nickname", "type": ["null", "string"], "default": None, "confluent:tags": ["PUBLIC"]},
        {"name": "aliases", "type": {"type": "array", "items": "string"}, "confluent:tags": ["PII"]},
        {"name": "notes", "type": {"type": "map", "values": {"type": "string", "confluent:tags": ["PII"]}}},
        {
            "name": "home",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "street", "type": "string", "confluent:tags": ["PII"]},
                    {"name": "city", "type": "string", "confluent:tags": ["PUBLIC"]},
                ],
            },
        },
        {
            "name": "event",
            "type": [
                {
                    "type": "record",
                    "name": "Login",
                    "fields": [{"name": "ip", "type": "string", "confluent:tags": ["PII"]}],
                },
                {"type": "record", "name": "Logout", "fields": [{"name": "reason", "type": "string"}]},
            ],
        },
        {"name": "photo", "type": ["null", "bytes"], "default": None, "confluent:tags": ["PII"]},
        {"name": "age", "type": "int"},
    ],
}

ACCOUNT_JSON = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Account",
    "type": "object",
    "properties": {
        "accountId": {"type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        "email": {"$ref": "#/$defs/Email"},
        "phones": {"type": "array", "items": {"type": "string"}, "confluent:tags": ["PII"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "confluent:tags": ["PII"]},
        "ssn": {"oneOf": [{"type": "null"}, {"type": "string"}], "confluent:tags": ["PII"]},
        "both": {"allOf": [{"type": "string"}, {"confluent:tags": ["PII"]}]},
        "extra": {"type": "object", "patternProperties": {"^x-": {"type": "string", "confluent:tags": ["PII"]}}},
        "nickname": {"type": "string", "confluent:tags": ["PUBLIC"]},
        "blob": {"type": "string", "contentEncoding": "base64", "confluent:tags": ["PII"]},
        "age": {"type": "integer"},
    },
    "$defs": {"Email": {"type": "string", "format": "email", "confluent:tags": ["PII"]}},
}


# -- verdicts ------------------------------------------------------------------------------------------------------


def test_avro_verdicts_per_path_nested_arrays_maps_unions(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "account.avsc", ACCOUNT_AVRO)
    code, [report] = lint_json(capsys, path, "--plaintext-tag", "PUBLIC", "--tag-domain", "PII=customers")
    assert code == 0 and report["schema_type"] == "AVRO" and report["findings"] == []
    assert verdicts(report) == {
        "acme.Account.accountId": "data-subject",
        "acme.Account.email": "encrypted",
        "acme.Account.nickname": "plaintext (declared)",
        "acme.Account.aliases[]": "encrypted",
        "acme.Account.notes[*]": "encrypted",
        "acme.Address.street": "encrypted",
        "acme.Address.city": "plaintext (declared)",
        "acme.Login.ip": "encrypted",
        "acme.Logout.reason": "clear",
        "acme.Account.photo": "encrypted",
        "acme.Account.age": "clear",
    }
    rows = {r["path"]: r for r in report["rows"]}
    assert rows["acme.Account.email"]["domain"] == "customers" and rows["acme.Account.email"]["tags"] == ["PII"]
    assert rows["acme.Account.photo"]["type"] == "bytes" and rows["acme.Account.age"]["type"] == "int"
    # declared plaintext keeps its hint (shown), but is not a finding
    assert rows["acme.Account.nickname"]["hint"] == "pii-hint:name" and rows["acme.Address.city"]["hint"]


def test_json_schema_verdicts_ref_items_maps_oneof_allof_patterns(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "account.schema.json", ACCOUNT_JSON)
    code, [report] = lint_json(capsys, path, "--plaintext-tag", "PUBLIC")
    assert code == 0 and report["schema_type"] == "JSON" and report["findings"] == []
    assert verdicts(report) == {
        "$.accountId": "data-subject",
        "$.email": "encrypted",
        "$.phones[]": "encrypted",
        "$.labels[*]": "encrypted",
        "$.ssn": "encrypted",
        "$.both": "encrypted",
        "$.extra[*]": "encrypted",
        "$.nickname": "plaintext (declared)",
        "$.blob": "encrypted",
        "$.age": "clear",
    }
    rows = {r["path"]: r for r in report["rows"]}
    assert rows["$.email"]["type"] == "string (email)" and rows["$.ssn"]["type"] == "string|null"
    assert rows["$.blob"]["type"] == "string (base64)" and rows["$.email"]["domain"] is None


def test_every_refusal_in_one_run_the_first_being_the_serializers(registry, keyring: Keyring, tmp_path, capsys) -> None:
    schema = {
        "type": "record",
        "name": "Bad",
        "namespace": "t",
        "fields": [
            {"name": "age", "type": "int", "confluent:tags": ["PII"]},
            {"name": "email", "type": "string", "confluent:tags": ["PII"]},
            {"name": "note", "type": "string", "confluent:tags": ["INTERNAL"]},
            {
                "name": "addr",
                "type": {"type": "record", "name": "Addr", "fields": [{"name": "line", "type": "string"}]},
                "confluent:tags": ["PII"],
            },
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}, "confluent:tags": ["PII"]},
            {"name": "scores", "type": {"type": "map", "values": "int"}, "confluent:tags": ["PII"]},
            {"name": "either", "type": ["string", "int"], "confluent:tags": ["PII"]},
            {"name": "who", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "who2", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        ],
    }
    with pytest.raises(PolicyError) as raised:
        AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    code, [report] = lint_json(capsys, write(tmp_path, "bad.avsc", schema))
    assert code == 7
    refused = [f for f in report["findings"] if f["kind"] == "refused"]
    assert (refused[0]["location"], refused[0]["reason"]) == (raised.value.field_path, raised.value.reason)
    assert [f["path"] for f in refused] == [
        "t.Bad.age",
        "t.Bad.note",
        "t.Bad.addr",
        "t.Bad.id",
        "t.Bad.scores[*]",
        "t.Bad.either<int>",
        "t.Bad.who",
        "t.Bad.who2",
    ]
    assert "INTERNAL" in refused[1]["reason"] and "does not decide" in refused[1]["reason"]
    v = verdicts(report)
    assert v["t.Bad.email"] == "encrypted" and v["t.Bad.either<string>"] == "encrypted"
    assert v["t.Bad.addr"] == "refused" and v["t.Addr.line"] == "clear"


def test_json_refusals_under_keywords_and_on_definitions(registry, keyring: Keyring, tmp_path, capsys) -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "not": {"confluent:tags": ["PII"]}},
            "b": {"type": "integer", "confluent:tags": ["PII"]},
            "c": {"$ref": "#/$defs/Other"},
            "d": {"type": "string", "maxLength": 5, "confluent:tags": ["PII"]},
            "e": {"type": "string", "confluent:tags": ["PII"]},
        },
        "$defs": {
            "Other": {"type": "string", "confluent:tags": ["SECRET"]},
            "Unused": {"type": "string", "confluent:tags": ["NOPE"]},
        },
    }
    with pytest.raises(PolicyError) as raised:
        JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    code, [report] = lint_json(capsys, write(tmp_path, "bad.schema.json", schema))
    refused = [f for f in report["findings"] if f["kind"] == "refused"]
    assert code == 7
    assert (refused[0]["location"], refused[0]["reason"]) == (raised.value.field_path, raised.value.reason)
    by_path = {f["path"]: f for f in refused}
    assert set(by_path) == {"$.a", "$.b", "$.c", "$.d", "#/$defs/Unused"}
    # a tag on a definition: reported at the values that use it, naming where the tag is
    assert by_path["$.c"]["location"] == "#/$defs/Other" and "(tagged at #/$defs/Other)" in by_path["$.c"]["message"]
    assert "maxLength" in by_path["$.d"]["reason"] and verdicts(report)["$.e"] == "encrypted"


# -- lint's verdict is the serializer's ---------------------------------------------------------------------------


def _serializer_verdict(kind: str, schema: Schema, conf: dict[str, Any], keyring: Keyring) -> Any:
    """The real serializer's verdict: the PolicyError it raises (field_path, reason), or the paths it encrypts."""
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    try:
        if kind == "AVRO":
            ser: Any = AvroSerializer(registry, schema, conf=conf, keyring=keyring)
        else:
            ser = JSONSerializer(schema, registry, conf=conf, keyring=keyring)
    except PolicyError as exc:
        return (exc.field_path, exc.reason)
    except Exception:  # cannot parse it: lint says invalid
        return "invalid"
    plan = ser._plans.compile(ser._schema)  # what its constructor compiled and checked
    return {leaf.path for leaf in plan.leaves}


def _assert_same(kind: str, schema: Schema, conf: dict[str, Any], keyring: Keyring) -> None:
    expected = _serializer_verdict(kind, schema, conf, keyring)
    report = lint_schema(schema, kind, conf)
    refused = [f for f in report.findings if f.kind == "refused"]
    if expected == "invalid":
        assert [f.kind for f in report.findings] == ["invalid"] and report.rows == []
    elif isinstance(expected, tuple):
        assert refused, f"the serializer refuses ({expected}), lint does not"
        assert (refused[0].location, refused[0].reason) == expected
        assert report.refused
    else:
        assert refused == [] and not [f for f in report.findings if f.kind == "invalid"]
        assert set(report.encrypted) == expected


@pytest.mark.parametrize("seed", range(80))
def test_generated_avro_schemas_lint_as_the_serializer_decides(seed: int, keyring: Keyring) -> None:
    g = generated_avro(seed)
    meta = _meta(dict(g.metadata)) if g.metadata else None
    _assert_same("AVRO", Schema(json.dumps(g.schema), "AVRO", metadata=meta), GENERATED_CONF, keyring)


@pytest.mark.parametrize("seed", range(80))
def test_generated_json_schemas_lint_as_the_serializer_decides(seed: int, keyring: Keyring) -> None:
    g = generated_json(seed)
    _assert_same("JSON", Schema(json.dumps(g.schema), "JSON"), GENERATED_CONF, keyring)


CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("AVRO", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long", "confluent:tags": ["PII"]}]}, {}),
    ("AVRO", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "confluent:tags": "PII"}]}, {}),
    ("AVRO", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "confluent:tags": ["X"]}]}, {}),
    (
        "AVRO",
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "confluent:tags": ["pii"]}]},
        {"fieldcrypt.tags": ["PII"]},
    ),
    (
        "AVRO",
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "confluent:tags": ["SECRET"]}]},
        {"fieldcrypt.tags": ["SECRET"], "fieldcrypt.tag.domains": {"SECRET": "vault"}},
    ),
    (
        "AVRO",
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A"]}, "confluent:tags": ["PII"]}
            ],
        },
        {},
    ),
    (
        "AVRO",
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "u", "type": ["string", {"type": "enum", "name": "E", "symbols": ["A"]}]}],
            "confluent:tags": [],
        },
        {},
    ),
    ("AVRO", ["null", {"type": "string", "confluent:tags": ["PII"]}], {}),
    ("AVRO", {"type": "string", "confluent:tags": ["PII"]}, {}),
    (
        "AVRO",
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "k", "type": "int", "confluent:tags": ["DATA_SUBJECT_ID"]}],
        },
        {},
    ),
    ("JSON", {"type": "object", "properties": {"a": {"type": "boolean", "confluent:tags": ["PII"]}}}, {}),
    ("JSON", {"type": "object", "properties": {"a": {"type": "string", "enum": ["x"], "confluent:tags": ["PII"]}}}, {}),
    ("JSON", {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, {}),
    ("JSON", {"type": "object", "properties": {"a": {"type": "string"}}, "x-tags": {"confluent:tags": ["PII"]}}, {}),
    ("JSON", {"type": "object", "patternProperties": {"(": {"type": "string"}}}, {}),
    ("JSON", {"type": "array", "items": {"type": "string", "confluent:tags": ["PII"]}}, {}),
    (
        "JSON",
        {
            "type": "object",
            "properties": {"a": {"type": "string", "contentEncoding": "base32", "confluent:tags": ["PII"]}},
        },
        {},
    ),
]


@pytest.mark.parametrize(("kind", "schema", "conf"), CASES, ids=lambda v: json.dumps(v)[:60] if v else "{}")
def test_handwritten_schemas_lint_as_the_serializer_decides(kind, schema, conf, keyring: Keyring) -> None:
    _assert_same(kind, Schema(json.dumps(schema), kind), conf, keyring)


def _meta(tags: dict[str, tuple[str, ...]]) -> Metadata:
    return Metadata(tags=MetadataTags(tags), properties=None, sensitive=None)


def test_metadata_tags_lint_as_registered(keyring: Keyring) -> None:
    text = json.dumps(avsc("customer_event.avsc"))
    schema = Schema(text, "AVRO", metadata=_meta({"**.country": ("PII",), "CustomerEvent.currency": ("PUBLIC",)}))
    conf = {"fieldcrypt.plaintext.tags": ["PUBLIC"]}
    _assert_same("AVRO", schema, conf, keyring)
    v = {r.path: r.verdict for r in lint_schema(schema, conf=conf).rows}
    assert v["example.shop.CustomerEvent.country"] == "encrypted"
    assert v["example.shop.CustomerEvent.currency"] == "plaintext (declared)"
    nowhere = Schema(text, "AVRO", metadata=_meta({"CustomerEvent.Email": ("PII",)}))
    _assert_same("AVRO", nowhere, {}, keyring)
    report = lint_schema(nowhere)
    assert [f.path for f in report.findings] == [None] and "match no field" in report.findings[0].message
    assert len(report.encrypted) == 3  # still compiled past the unmatched pattern


# -- the registry ----------------------------------------------------------------------------------------------------


def _register(http_registry: Any, subject: str, *schemas: Schema) -> None:
    client = SchemaRegistryClient({"url": http_registry.url})
    for s in schemas:
        client.register_schema(subject, s)


def test_a_subject_with_metadata_tags_against_its_previous_version(http_registry, capsys) -> None:
    subject = f"lint-{uuid.uuid4().hex[:8]}-value"
    v1 = avsc("customer_event.avsc")
    v2 = json.loads(json.dumps(v1))
    v2["fields"][1].pop("confluent:tags")  # email: PII removed
    v2["fields"][3].pop("confluent:tags")  # fullName: now through metadata.tags
    v2["fields"].pop(2)  # ssn: gone, which producers refuse as they refuse a tag removal
    meta = _meta({"CustomerEvent.fullName": ("PII",)})
    _register(http_registry, subject, Schema(json.dumps(v1), "AVRO"), Schema(json.dumps(v2), "AVRO", metadata=meta))
    reg = ["--schema-registry", http_registry.url]
    code, [report] = lint_json(capsys, "--subject", subject, *reg)
    assert code == 7 and report["version"] == 2 and report["subject"] == subject and report["schema_id"]
    assert report["previous"] == f"{subject} version 1"
    v = verdicts(report)
    assert v["example.shop.CustomerEvent.fullName"] == "encrypted" and v["example.shop.CustomerEvent.email"] == "clear"
    assert {r["path"]: r["domain"] for r in report["rows"]}["example.shop.CustomerEvent.fullName"] == subject
    removed = [f for f in report["findings"] if f["kind"] == "removed"]
    assert [f["path"] for f in removed] == ["example.shop.CustomerEvent.email", "example.shop.CustomerEvent.ssn"]
    assert kinds(report) == ["hint", "removed", "removed"]
    code, [report] = lint_json(capsys, "--subject", subject, "--version", "1", *reg)
    assert code == 0 and report["previous"] is None and len(report["rows"]) == 9
    code, [report] = lint_json(capsys, "--subject", subject, "--previous-version", "1", "--fail-on", "removed", *reg)
    assert code == 7 and kinds(report) == ["hint", "removed", "removed"]
    code, [report] = lint_json(capsys, "--subject", subject, "--fail-on", "refused", *reg)
    assert code == 0


def test_a_json_subject_and_registry_errors(http_registry, capsys) -> None:
    subject = f"lint-{uuid.uuid4().hex[:8]}-value"
    _register(http_registry, subject, Schema((SCHEMAS / "customer_event.schema.json").read_text(), "JSON"))
    reg = ["--schema-registry", http_registry.url]
    code, [report] = lint_json(capsys, "--subject", subject, *reg)
    assert code == 0 and report["schema_type"] == "JSON" and verdicts(report)["$.email"] == "encrypted"
    code, out, _ = run(capsys, "--subject", "no-such-subject", *reg, "--json")
    assert code == 5 and json.loads(out)["error"]["exit_code"] == 5
    code, _, err = run(capsys, "--subject", subject, "--version", "9", *reg)
    assert code == 5 and "version 9" in err
    code, _, err = run(capsys, "--subject", subject, "--previous-version", "9", *reg)
    assert code == 5
    closed = ["--schema-registry", "http://127.0.0.1:9", "--registry-conf", "max.retries=0", "--timeout", "2"]
    code, _, err = run(capsys, "--subject", subject, *closed)
    assert code == 4 and "did not answer" in err
    code, _, err = run(capsys, "--subject", subject)
    assert code == 3 and "no schema registry" in err


# -- hints -----------------------------------------------------------------------------------------------------------

HINTED = [
    ("email", "", "email"),
    ("customerEmail", "", "email"),
    ("e_mail", "", "email"),
    ("EMAIL_ADDRESS", "", "email"),
    ("phoneNumber", "", "phone"),
    ("mobile", "", "phone"),
    ("msisdn", "", "phone"),
    ("firstName", "", "name"),
    ("last_name", "", "name"),
    ("surname", "", "name"),
    ("cardholderName", "", "name"),
    ("name", "Customer", "name"),
    ("name", "UserProfile", "name"),
    ("streetAddress", "", "address"),
    ("postalCode", "", "address"),
    ("zip", "", "address"),
    ("city", "", "address"),
    ("addressLine2", "", "address"),
    ("dateOfBirth", "", "birth_date"),
    ("DOB", "", "birth_date"),
    ("birthday", "", "birth_date"),
    ("ssn", "", "national_id"),
    ("socialSecurityNumber", "", "national_id"),
    ("nino", "", "national_id"),
    ("passportNo", "", "national_id"),
    ("taxId", "", "national_id"),
    ("national_id", "", "national_id"),
    ("personnummer", "", "national_id"),
    ("driversLicenseNumber", "", "national_id"),
    ("IBAN", "", "bank_account"),
    ("bankAccountNumber", "", "bank_account"),
    ("creditCardNumber", "", "payment_card"),
    ("pan", "", "payment_card"),
    ("cvv2", "", "payment_card"),
    ("ipAddress", "", "ip_address"),
    ("clientIp", "", "ip_address"),
    ("IPv6Address", "", "ip_address"),
    ("remoteAddr", "", "ip_address"),
]

NOT_HINTED = [
    ("hostname", ""),
    ("fileName", ""),
    ("username", ""),
    ("user_name", ""),
    ("productName", ""),
    ("displayName", ""),
    ("companyName", ""),
    ("bankName", ""),
    ("name", "Product"),
    ("name", "CustomerSegment"),
    ("name", "Topic"),
    ("emailVerified", ""),
    ("emailTemplateId", ""),
    ("email_status", ""),
    ("phoneType", ""),
    ("phoneCountryCode", ""),
    ("ip_version", ""),
    ("addressId", ""),
    ("macAddress", ""),
    ("serverAddress", ""),
    ("brokerAddress", ""),
    ("cardType", ""),
    ("cardLast4", ""),
    ("mobileOs", ""),
    ("customerId", ""),
    ("country", ""),
    ("currency", ""),
    ("loyaltyTier", ""),
    ("namespace", ""),
]


@pytest.mark.parametrize(("name", "context", "category"), HINTED)
def test_names_that_look_like_personal_data(name: str, context: str, category: str) -> None:
    assert hint_for(name, context) == category


@pytest.mark.parametrize(("name", "context"), NOT_HINTED)
def test_names_that_do_not(name: str, context: str) -> None:
    assert hint_for(name, context) is None


def test_name_normalization() -> None:
    assert normalize_name("customerEmailAddress") == "customer email address"
    words = "customer email address"
    assert normalize_name("CUSTOMER-EMAIL_ADDRESS") == normalize_name("customer.email address") == words
    assert normalize_name("IPv4Address") == "ipv 4 address" and normalize_name("HTTPServerName") == "http server name"
    assert normalize_name("addressLine1") == "address line 1"


def test_hints_in_schemas_by_name_and_format_on_every_scalar(tmp_path: Path, capsys) -> None:
    avro = {
        "type": "record",
        "name": "Customer",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "email", "type": ["null", "string"], "default": None},
            {"name": "emailVerified", "type": "boolean"},  # not data
            {"name": "phone", "type": "long"},  # personal, and no tag could encrypt a long: the finding says so
            {"name": "born", "type": {"type": "int", "logicalType": "date"}},
            {
                "name": "home",
                "type": {"type": "record", "name": "Address", "fields": [{"name": "street", "type": "string"}]},
            },
        ],
    }
    code, [report] = lint_json(capsys, write(tmp_path, "c.avsc", avro))
    hints = {r["path"]: r["hint"] for r in report["rows"] if r["hint"]}
    assert code == 7 and hints == {
        "Customer.name": "pii-hint:name",
        "Customer.email": "pii-hint:email",
        "Address.street": "pii-hint:address",
        "Customer.phone": "pii-hint:phone",
    }
    messages = {f["path"]: f["message"] for f in report["findings"]}
    assert kinds(report) == ["hint"] * 4 and "tag it PII" in messages["Customer.name"]
    assert "encrypts only strings and bytes, not long: store it as a string" in messages["Customer.phone"]
    js = {
        "title": "Signup",
        "type": "object",
        "properties": {
            "contact": {"type": "string", "format": "email"},  # by format
            "origin": {"type": "string", "format": "ipv4"},
            "startDate": {"type": "string", "format": "date"},  # a date is not personal by itself
            "people": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "name": {"type": "string"},  # the name of a signup form, not of a person
        },
    }
    code, [report] = lint_json(capsys, write(tmp_path, "s.schema.json", js))
    assert {r["path"]: r["hint"] for r in report["rows"] if r["hint"]} == {
        "$.contact": "pii-hint:email",
        "$.origin": "pii-hint:ip_address",
        "$.people[].name": "pii-hint:name",
    }
    assert FORMAT_HINTS["idn-email"] == "email" and "date" not in FORMAT_HINTS


def test_hints_are_extensible(tmp_path: Path, capsys) -> None:
    schema = {
        "type": "record",
        "name": "Staff",
        "fields": [{"name": "employeeNumber", "type": "string"}, {"name": "city", "type": "string"}],
    }
    path = write(tmp_path, "staff.avsc", schema)
    code, [report] = lint_json(capsys, path)
    assert code == 7 and [r["hint"] for r in report["rows"]] == [None, "pii-hint:address"]
    code, [report] = lint_json(capsys, path, "--hint", r"employee_id=\bemployee (id|no|number)\b")
    assert [r["hint"] for r in report["rows"]] == ["pii-hint:employee_id", "pii-hint:address"]
    hint_file = tmp_path / "hints.txt"
    hint_file.write_text("# our own\n\nemployee_id = \\bemployee number\\b\n", encoding="utf-8")
    code, [report] = lint_json(capsys, path, "--hint-names", str(hint_file), "--no-default-hints")
    assert code == 7 and [r["hint"] for r in report["rows"]] == ["pii-hint:employee_id", None]
    code, [report] = lint_json(capsys, path, "--ignore-hint", "**.city")
    assert code == 0 and report["findings"] == []
    code, [report] = lint_json(capsys, path, "--ignore-hint", "Staff.city", "--plaintext-tag", "PUBLIC")
    assert code == 0
    assert run(capsys, path, "--hint", "bad=(")[0] == 3
    assert run(capsys, path, "--hint", "no-regex")[0] == 3
    assert run(capsys, path, "--hint", "two words=x")[0] == 3
    hint_file.write_text("employee_id\n", encoding="utf-8")
    assert run(capsys, path, "--hint-names", str(hint_file))[0] == 3
    assert run(capsys, path, "--hint-names", str(tmp_path / "missing.txt"))[0] == 3
    assert run(capsys, path, "--no-default-hints")[0] == 2
    # the Python API: own hints first, with a context
    hints = (Hint("employee_id", r"\bemployee number\b"), Hint("name", r"^alias$", within=r"\bagent$"), *NAME_HINTS)
    report_api = lint_schema(json.dumps(schema), "AVRO", hints=hints)
    assert [r.hint for r in report_api.rows] == ["employee_id", "address"]
    assert hint_for("alias", "SecretAgent", hints=hints) == "name" and hint_for("alias", "Product", hints=hints) is None
    with pytest.raises(ConfigurationError):
        Hint("x", "(")


def test_declared_plaintext_is_the_way_to_keep_a_personal_field_in_clear(tmp_path: Path, capsys) -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "city", "type": "string", "confluent:tags": ["PUBLIC"]}],
    }
    path = write(tmp_path, "r.avsc", schema)
    code, [report] = lint_json(capsys, path, "--plaintext-tag", "PUBLIC")
    assert code == 0 and report["rows"][0]["verdict"] == "plaintext (declared)" and report["rows"][0]["hint"]
    code, [report] = lint_json(capsys, path)  # PUBLIC not configured: the serializer refuses the schema too
    assert code == 7 and kinds(report) == ["refused"]


# -- tags removed ----------------------------------------------------------------------------------------------------


def test_tags_removed_against_a_previous_file(tmp_path: Path, capsys) -> None:
    before = avsc("customer_event.avsc")
    after = json.loads(json.dumps(before))
    fields = {f["name"]: f for f in after["fields"]}
    fields["email"]["confluent:tags"] = ["PUBLIC"]  # encrypted -> declared plaintext: removed
    fields["customerId"].pop("confluent:tags")  # the data-subject id -> clear: removed
    after["fields"] = [f for f in after["fields"] if f["name"] != "ssn"]  # gone: the serializer refuses it too
    fields["country"]["confluent:tags"] = ["PII"]  # added: fine
    old, new = write(tmp_path, "old.avsc", before), write(tmp_path, "new.avsc", after)
    code, [report] = lint_json(capsys, new, "--previous", old, "--plaintext-tag", "PUBLIC")
    removed = [f for f in report["findings"] if f["kind"] == "removed"]
    assert code == 7 and report["previous"] == old
    by_path = {f["path"]: f["message"] for f in removed}
    assert sorted(by_path) == [
        "example.shop.CustomerEvent.customerId",
        "example.shop.CustomerEvent.email",
        "example.shop.CustomerEvent.ssn",
    ]
    assert "the data-subject id" in by_path["example.shop.CustomerEvent.customerId"]
    assert "plaintext (declared)" in by_path["example.shop.CustomerEvent.email"]
    assert "is not in this schema" in by_path["example.shop.CustomerEvent.ssn"]
    code, [report] = lint_json(capsys, new, "--previous", old, "--plaintext-tag", "PUBLIC", "--fail-on", "refused")
    assert code == 0
    code, [report] = lint_json(capsys, old, "--previous", old)
    assert code == 0 and report["findings"] == []
    # the API
    assert [f.path for f in removed_tags(lint_schema(json.dumps(before)), lint_schema(json.dumps(before)))] == []
    broken = write(tmp_path, "broken.avsc", "{")
    code, [report] = lint_json(capsys, old, "--previous", broken)
    assert code == 7 and kinds(report) == ["invalid"] and "previous version" in report["findings"][0]["message"]


def _git(repo: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *argv],
        check=True,
        capture_output=True,
    )


def test_tags_removed_against_a_git_revision(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    _git(repo, "init", "-q")
    schema = avsc("customer_event.avsc")
    path = write(repo / "schemas", "customer.avsc", schema)
    code, [report] = lint_json(capsys, path, "--previous-rev", "HEAD")  # no commit yet: nothing to compare
    assert code == 0 and report["previous"] is None
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    schema["fields"][1].pop("confluent:tags")
    write(repo / "schemas", "customer.avsc", schema)
    new = write(repo / "schemas", "new.avsc", avsc("order.avsc"))
    code, reports = lint_json(capsys, path, new, "--previous-rev", "HEAD", "--fail-on", "removed")
    assert code == 7 and reports[0]["previous"] == f"{path}@HEAD" and reports[1]["previous"] is None
    assert [f["path"] for f in reports[0]["findings"] if f["kind"] == "removed"] == ["example.shop.CustomerEvent.email"]
    assert run(capsys, path, "--previous-rev", "no-such-branch")[0] == 5
    assert run(capsys, path, "--previous-rev", "--help")[0] == 2
    assert run(capsys, str(SCHEMAS / "order.avsc"), "--previous-rev", "HEAD", "--fail-on", "removed")[0] == 0


# -- exit codes, inputs, output --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], 2),
        (["--fail-on", "hint"], 2),
        (["FILE", "--fail-on", ""], 2),
        (["FILE", "--version", "2"], 2),
        (["FILE", "FILE", "--previous", "FILE"], 2),
        (["FILE", "--previous", "FILE", "--previous-rev", "HEAD"], 2),
        (["--subject", " "], 2),
        (["--subject", "s", "--version", "0"], 2),
        (["FILE", "--tag", "PII,"], 2),
        (["FILE", "--tag-domain", "PII"], 2),
        (["FILE", "--plaintext-tag", "PII"], 3),
        (["FILE", "--tag-domain", "PUBLIC=x"], 3),
        (["FILE", "--data-subject-tag", "PII"], 3),
        (["MISSING"], 5),
        (["FILE", "--previous", "MISSING"], 5),
        (["FILE"], 0),
        (["FILE", "--tag", "PII", "--tag", "SECRET"], 0),
        (["FILE", "--tag", "pii"], 7),  # the schema's PII is then decided by nobody: refused, as by the serializer
        (["FILE", "--tag", "pii", "--fail-on", "hints,removed"], 0),
        (["FILE", "--tag", "pii", "--fail-on", "none"], 0),
    ],
)
def test_exit_codes(tmp_path: Path, capsys, argv: list[str], code: int) -> None:
    path = str(SCHEMAS / "customer_event.avsc")
    argv = [path if a == "FILE" else str(tmp_path / "missing.avsc") if a == "MISSING" else a for a in argv]
    got, out, err = run(capsys, *argv)
    assert got == code, out + err


def test_files_that_are_not_schemas_are_findings_and_the_rest_is_linted(tmp_path: Path, capsys) -> None:
    files = [
        write(tmp_path, "notjson.avsc", "{not json"),
        write(tmp_path, "unknown.avsc", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}),
        write(tmp_path, "badtype.schema.json", {"type": 5}),
        write(tmp_path, "unclear.json", {"title": "what is this"}),
        write(tmp_path, "schema.txt", {"type": "object"}),
        str(SCHEMAS / "customer_event.avsc"),
    ]
    (tmp_path / "binary.avro").write_bytes(b"Obj\x01\xff\xfe\x00")
    files.append(str(tmp_path / "binary.avro"))
    code, reports = lint_json(capsys, *files)
    assert code == 7 and [kinds(r) for r in reports] == [["invalid"]] * 5 + [[], ["invalid"]]
    for path, report in zip(files, reports, strict=True):
        for f in report["findings"]:
            assert f["message"].startswith(path) and "\n" not in f["message"]
    assert "Nope" in reports[1]["findings"][0]["message"] and "--type" in reports[4]["findings"][0]["message"]
    code, [report] = lint_json(capsys, files[4], "--type", "json")
    assert code == 0 and report["schema_type"] == "JSON"
    code, [report] = lint_json(capsys, files[3], "--fail-on", "none")
    assert code == 7  # a file that is not a schema always fails: fail closed
    code, [report] = lint_json(capsys, write(tmp_path, "avro-in.json", avsc("customer_event.avsc")))
    assert code == 0 and report["schema_type"] == "AVRO"
    assert run(capsys, str(tmp_path))[0] == 5  # a directory is no schema file
    ref_only = {"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {"email": {"type": "string"}}}}}
    code, [report] = lint_json(capsys, write(tmp_path, "ref.json", ref_only))
    assert report["schema_type"] == "JSON" and verdicts(report) == {"$.email": "clear"}


def test_the_api_takes_a_producers_whole_conf() -> None:
    conf = {"auto.register.schemas": False, "use.latest.version": True, "fieldcrypt.tags": "PII,SECRET"}
    conf |= {"fieldcrypt.on.erased": "null", "fieldcrypt.allow.tag.removal": True, "fieldcrypt.domain": "crm"}
    report = lint_schema((SCHEMAS / "customer_event.avsc").read_text(), "AVRO", conf)
    assert {r.domain for r in report.rows if r.verdict == "encrypted"} == {"crm"}
    with pytest.raises(ConfigurationError, match="unknown fieldcrypt conf key"):
        lint_schema("{}", "JSON", {"fieldcrypt.tag.domain": {"PII": "x"}})
    with pytest.raises(ConfigurationError):
        lint_schema("{}", "JSON", {"fieldcrypt.tags": []})
    report = lint_schema("{}", "THRIFT")
    assert [f.kind for f in report.findings] == ["invalid"] and "THRIFT" in report.findings[0].message
    report = lint_schema("{}", "PROTOBUF")  # no serialized FileDescriptorProto: no message to plan
    assert [f.kind for f in report.findings] == ["refused"] and "declares no message" in report.findings[0].message


#: a schema with one finding: an untagged city (the example schemas have none)
SHIPMENT = {"type": "record", "name": "Shipment", "fields": [{"name": "city", "type": "string"}]}


def test_json_output_shape(tmp_path: Path, capsys) -> None:
    files = [str(SCHEMAS / "order.avsc"), str(SCHEMAS / "customer_event.schema.json")]
    code, reports = lint_json(capsys, *files, write(tmp_path, "shipment.avsc", SHIPMENT))
    assert code == 7 and isinstance(reports, list) and len(reports) == 3
    assert [f["kind"] for r in reports for f in r["findings"]] == ["hint"]
    for report in reports:
        assert set(report) == {"source", "schema_type", "subject", "version", "schema_id", "previous"} | {
            "rows",
            "findings",
        }
        for row in report["rows"]:
            assert set(row) == {
                "path",
                "type",
                "verdict",
                "tags",
                "domain",
                "mask",
                "deterministic",
                "few_values",
                "reason",
                "hint",
            }
            assert row["verdict"] in ("encrypted", "data-subject", "plaintext (declared)", "clear", "refused")
        for f in report["findings"]:
            assert set(f) >= {"kind", "path", "message"} and f["kind"] in ("refused", "removed", "hint", "invalid")
    code, [report] = lint_json(capsys, write(tmp_path, "r.avsc", {"type": "record", "name": "R", "fields": []}))
    assert code == 0 and report["rows"] == [] and report["findings"] == []


def test_human_output_table_findings_and_summary(tmp_path: Path, capsys) -> None:
    shipment = write(tmp_path, "shipment.avsc", SHIPMENT)
    code, out, _ = run(capsys, str(SCHEMAS / "order.avsc"), str(SCHEMAS / "customer_event.avsc"), shipment)
    lines = out.splitlines()
    assert code == 7 and lines[0] == f"{SCHEMAS / 'order.avsc'} (AVRO)"
    assert lines[1].split() == ["PATH", "TYPE", "VERDICT", "TAGS", "DOMAIN", "HINT"]
    assert "  hint: Shipment.city: looks like personal data (address)" in out
    assert lines[-1] == (
        "3 schemas: 10 encrypted, 1 data subject, 0 declared plaintext, 10 clear; 0 refused, 0 tag(s) removed, "
        "1 hint(s) -- failing on hints"
    )


def test_values_in_the_schema_are_never_printed(tmp_path: Path, capsys) -> None:
    secret = "Jane-Doe-1984-canary"
    avro = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "email", "type": "string", "default": secret, "confluent:tags": ["PII"]},
            {"name": "n", "type": "int", "default": secret},  # invalid: fastavro's error quotes the default
        ],
    }
    js = {
        "type": "object",
        "examples": [{"email": secret}],
        "properties": {
            "email": {"type": "string", "default": secret, "examples": [secret], "confluent:tags": ["PII"]},
            "kind": {"const": secret},
            "tier": {"enum": [secret]},
            "bad": {"type": "string", "minLength": secret},  # invalid: jsonschema's error quotes the subschema
        },
    }
    files = [write(tmp_path, "r.avsc", avro), write(tmp_path, "r.schema.json", js)]
    valid = {**js, "properties": {k: v for k, v in js["properties"].items() if k != "bad"}}
    ok = write(tmp_path, "ok.schema.json", valid)
    for argv in ([*files, ok], [*files, ok, "--json"]):
        code, out, err = run(capsys, *argv)
        assert code == 7 and secret not in out + err


def test_control_characters_in_names_are_escaped(tmp_path: Path, capsys) -> None:
    js = {"type": "object", "properties": {"e\x1b[31mmail\nX": {"type": "string", "format": "email"}}}
    code, out, _ = run(capsys, write(tmp_path, "x.schema.json", js))
    assert code == 7 and "\x1b" not in out and "\\x1b" in out and "mail\\nX" in out


# -- the repository: example schemas, pre-commit hook, documentation ------------------------------------------------


def test_the_example_schemas_pass_their_own_lint(capsys) -> None:
    """schemas/ holds the tagged examples: nothing refused, no tag removed, no untagged field that looks personal
    (Address.city, part of a person's address, is tagged PII like street and postcode)."""
    files = sorted(str(p) for p in SCHEMAS.iterdir())
    code, reports = lint_json(capsys, *files)
    assert code == 0 and [r["findings"] for r in reports] == [[], [], [], []]
    assert all(r["schema_type"] in ("AVRO", "JSON") for r in reports)


#: the command the schema authors' guide runs on the example schemas, as it is written there
DOCUMENTED_LINT = "fieldcrypt schema lint schemas/*.avsc schemas/*.schema.json"


@pytest.mark.parametrize("command", [DOCUMENTED_LINT, "fieldcrypt schema lint schemas/*"])
def test_the_documented_lint_of_the_example_schemas_exits_0(command: str, tmp_path: Path) -> None:
    """The guide's command and the shortest form (what a pre-commit hook over schemas/ runs), in a shell at the
    repository's root, with the fieldcrypt command this environment installs and no configuration of its own."""
    assert f"\n{DOCUMENTED_LINT}\n" in (ROOT / "docs" / "getting-started" / "schema-authors.md").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDCRYPT_")}
    env |= {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("4 schemas: ") and " 0 hint(s)" in done.stdout


def test_pre_commit_hook_definition() -> None:
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "fieldcrypt-schema-lint" and hook["entry"] == "fieldcrypt schema lint"
    assert hook["language"] == "python" and hook["args"] == ["--previous-rev", "HEAD"]
    files = re.compile(hook["files"])
    assert files.search("schemas/order.avsc") and files.search("a/customer_event.schema.json")
    assert not files.search("package.json") and not files.search("schema.json.bak")
    doc = (ROOT / "docs" / "schema-lint.md").read_text()
    assert "id: fieldcrypt-schema-lint" in doc and "--previous-rev" in doc


def test_the_documentation_lists_every_default_hint_and_flag() -> None:
    doc = (ROOT / "docs" / "schema-lint.md").read_text()
    for h in NAME_HINTS:
        assert f"{h.category:<13}{h.pattern}" in doc, h
        assert h.within is None or h.within in doc
    qualifiers = doc.split("does not count", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    assert set(qualifiers.split()) == set(QUALIFIERS)
    for fmt in FORMAT_HINTS:
        assert f"`{fmt}`" in doc
    from fieldcrypt.cli import build_parser

    lint = build_parser()._subparsers._group_actions[0].choices["schema"]  # type: ignore[union-attr]
    lint = lint._subparsers._group_actions[0].choices["lint"]
    for action in lint._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help", "--config", "--json", "--schema-registry", "--registry-conf", "--timeout"):
                assert f"`{flag}" in doc, flag


_U = {"type": "array", "items": "string"}
_B = {"type": "record", "name": "B", "fields": [{"name": "s", "type": "string", "confluent:tags": ["PII"]}]}
_REMOVAL_PAIRS = {
    # name: (fields before, fields after); every schema is record ex.A
    "union narrowed": (
        [{"name": "u", "type": ["null", "string", _U], "confluent:tags": ["PII"]}],
        [{"name": "u", "type": ["null", "string"]}],
    ),
    "record renamed": ([{"name": "b", "type": _B}], [{"name": "b", "type": {**_B, "name": "B2"}}]),
    "field renamed": (
        [{"name": "mail", "type": "string", "confluent:tags": ["PII"]}],
        [{"name": "email", "type": "string", "confluent:tags": ["PII"]}],
    ),
    "field removed": (
        [{"name": "x", "type": "string"}, {"name": "mail", "type": "string", "confluent:tags": ["PII"]}],
        [{"name": "x", "type": "string"}],
    ),
    "data-subject tag removed": (
        [
            {"name": "id", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "s", "type": "string", "confluent:tags": ["PII"]},
        ],
        [{"name": "id", "type": "string"}, {"name": "s", "type": "string", "confluent:tags": ["PII"]}],
    ),
    "tag added": (
        [{"name": "mail", "type": "string"}],
        [{"name": "mail", "type": "string", "confluent:tags": ["PII"]}],
    ),
    "nothing changed": ([{"name": "b", "type": _B}], [{"name": "b", "type": _B}]),
}


@pytest.mark.parametrize("case", sorted(_REMOVAL_PAIRS))
def test_removed_tags_are_exactly_what_a_producer_refuses(case: str, keyring: Keyring) -> None:
    """Found by review: lint compared rows by path and passed a narrowed union or a renamed record, which the
    serializer refuses."""
    before, after = (
        json.dumps({"type": "record", "name": "A", "namespace": "ex", "fields": f}) for f in _REMOVAL_PAIRS[case]
    )
    lint_says = bool(removed_tags(lint_schema(before), lint_schema(after)))
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ctx = SerializationContext("t", MessageField.VALUE)
    AvroSerializer(registry, before, keyring=keyring)(_record(json.loads(before)), ctx)
    try:
        AvroSerializer(registry, after, keyring=keyring)(_record(json.loads(after)), ctx)
        refused = False
    except PolicyError:
        refused = True
    # a field (or record) removed or renamed is a removed tag to lint, which cannot tell a rename from a loss; the
    # producer is not refused, since the schema written cannot write the old path at all (docs/compatibility.md)
    assert lint_says == (refused or case in _NOT_WRITABLE)


_NOT_WRITABLE = {"field removed", "field renamed", "record renamed"}


def _record(schema: dict[str, Any]) -> dict[str, Any]:
    def value(t: Any) -> Any:
        if isinstance(t, list):
            return None if "null" in t else value(t[0])
        if isinstance(t, dict):
            if t["type"] == "record":
                return {f["name"]: value(f["type"]) for f in t["fields"]}
            return ["v"]
        return "v"

    return value(schema)  # type: ignore[no-any-return]


def test_a_declared_property_a_tagged_pattern_matches_is_encrypted_as_the_serializer_does(keyring: Keyring) -> None:
    # found by review: lint said clear; JSON Schema applies both subschemas, and the serializer encrypts it
    schema = {
        "type": "object",
        "properties": {"px": {"type": "string"}, "q": {"type": "string"}},
        "patternProperties": {"^p": {"type": "string", "confluent:tags": ["PII"]}},
    }
    report = lint_schema(json.dumps(schema), "JSON")
    rows = {r.path: r for r in report.rows}
    assert rows["$.px"].verdict == "encrypted" and "patternProperties '^p'" in (rows["$.px"].reason or "")
    assert rows["$.q"].verdict == "clear"
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    data = JSONSerializer(json.dumps(schema), registry, keyring=keyring)(
        {"px": "secret-px", "q": "open-q"}, SerializationContext("t", MessageField.VALUE)
    )
    assert b"secret-px" not in data and b"open-q" in data


def test_a_value_only_some_oneof_branches_encrypt_says_so(tmp_path: Path, capsys) -> None:
    # found by review: lint said "encrypted" unconditionally; the serializer leaves the value in clear in records
    # of the branch that does not tag it
    schema = {
        "type": "object",
        "oneOf": [
            {"properties": {"kind": {"const": "p"}, "email": {"type": "string", "confluent:tags": ["PII"]}}},
            {"properties": {"kind": {"const": "q"}, "email": {"type": "string"}}},
        ],
    }
    path = write(tmp_path, "one.schema.json", schema)
    code, [report] = lint_json(capsys, path)
    [row] = [r for r in report["rows"] if r["path"] == "$.email"]
    assert row["verdict"] == "encrypted" and "only in values that validate against a oneOf branch" in row["reason"]
    assert code == 0 and main(["schema", "lint", path]) == 0
    assert "note: $.email: encrypted only in values" in capsys.readouterr().out


def test_prefix_items_positions_have_rows_of_their_own(keyring: Keyring) -> None:
    # found by review: one "$.p[]" row called every position encrypted; the serializer encrypts the tagged one
    schema = {
        "type": "object",
        "properties": {
            "p": {"type": "array", "prefixItems": [{"type": "string", "confluent:tags": ["PII"]}, {"type": "string"}]}
        },
    }
    rows = {r.path: r.verdict for r in lint_schema(json.dumps(schema), "JSON").rows}
    assert rows["$.p[0]"] == "encrypted" and rows.get("$.p[1]", "clear") == "clear"
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    data = JSONSerializer(json.dumps(schema), registry, keyring=keyring)(
        {"p": ["SECRET-FIRST", "open-second"]}, SerializationContext("t", MessageField.VALUE)
    )
    assert b"SECRET-FIRST" not in data and b"open-second" in data
    moved = {
        "type": "object",
        "properties": {
            "p": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string", "confluent:tags": ["PII"]}]}
        },
    }
    assert [
        f.path for f in removed_tags(lint_schema(json.dumps(schema), "JSON"), lint_schema(json.dumps(moved), "JSON"))
    ] == ["$.p[0]"]


def test_a_property_a_tagged_pattern_still_covers_is_no_removal() -> None:
    pattern = {"^x": {"type": "string", "confluent:tags": ["PII"]}}
    before = {"type": "object", "properties": {"xa": {"type": "string"}}, "patternProperties": pattern}
    after = {"type": "object", "patternProperties": pattern}
    assert removed_tags(lint_schema(json.dumps(before), "JSON"), lint_schema(json.dumps(after), "JSON")) == []


# -- hostile patterns (issue 15, item 6) ----------------------------------------------------------------------------

_TAGGED = {"type": "string", "confluent:tags": ["PII"]}
_LINT_IN_A_CHILD = "import sys; from fieldcrypt.cli import main; sys.exit(main(sys.argv[1:]))"


def test_a_hostile_pattern_cannot_stall_lint(tmp_path: Path) -> None:
    """A tagged ``^(a+)+$`` and a declared property of 34 ``a`` and a ``!`` ran for hours (Python's backtracking
    ``re``): a schema in a pull request stalled CI. Run in a child process, so a regression fails on its timeout
    instead of stalling the suite."""
    attack, covered = "a" * 34 + "!", "a" * 34
    schema = {
        "type": "object",
        "properties": {attack: {"type": "string"}, covered: {"type": "string"}},
        "patternProperties": {"^(a+)+$": _TAGGED},
    }
    path = write(tmp_path, "hostile.schema.json", schema)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDCRYPT_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _LINT_IN_A_CHILD, "schema", "lint", "--json", path],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert time.monotonic() - start < 60, "lint took as long as a backtracking regex"
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    rows = verdicts(report)
    # as re.search (and jsonschema) answer: the pattern does not match the attack's name, it matches the other
    assert rows[f"$.{attack}"] == "clear" and rows[f"$.{covered}"] == "encrypted" and rows["$[*]"] == "encrypted"
    assert report["findings"] == []


def test_a_tagged_pattern_the_bounded_engine_cannot_run_is_a_finding_and_a_policy_error(
    registry, keyring: Keyring, tmp_path: Path, capsys
) -> None:
    """Never a silent pass: not matched with Python's re instead, not skipped (keys it covers would go out in clear)."""
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "patternProperties": {"^(?!id$)": _TAGGED}}
    with pytest.raises(PolicyError) as raised:
        JSONSerializer(json.dumps(schema), registry, keyring=keyring)
    assert raised.value.field_path == "$[*]"
    assert "'^(?!id$)'" in raised.value.reason and "lookahead or lookbehind at position 1" in raised.value.reason
    code, [report] = lint_json(capsys, write(tmp_path, "lookahead.schema.json", schema))
    refused = [f for f in report["findings"] if f["kind"] == "refused"]
    assert code == 7 and len(refused) == 1
    assert (refused[0]["location"], refused[0]["reason"]) == (raised.value.field_path, raised.value.reason)
    assert verdicts(report)["$.id"] == "clear"


BOUNDED_CASES: list[tuple[Any, bool]] = [  # (schema, refused)
    # tagged, and RE2 runs it: accepted
    ({"type": "object", "patternProperties": {"^(a+)+$": _TAGGED}}, False),
    ({"type": "object", "patternProperties": {r"^x-\w+$": _TAGGED, "^y": {"type": "string"}}}, False),
    # tagged, and no linear-time engine runs it (or RE2 would answer differently): refused
    ({"type": "object", "patternProperties": {"(a)\\1": _TAGGED}}, True),
    ({"type": "object", "patternProperties": {"(?i)^email$": _TAGGED}}, True),
    ({"type": "object", "patternProperties": {"\\bemail": _TAGGED}}, True),
    # untagged, but validation searches every record's keys with it (on RE2 too, since issue 15 item 6): refused
    ({"type": "object", "properties": {"a": _TAGGED}, "patternProperties": {"^(?!x)": {"type": "string"}}}, True),
    # untagged, but it decides which keys a tagged additionalProperties covers: refused
    ({"type": "object", "patternProperties": {"^(?=n)": {"type": "integer"}}, "additionalProperties": _TAGGED}, True),
]


@pytest.mark.parametrize(("schema", "refused"), BOUNDED_CASES, ids=lambda v: json.dumps(v)[:70])
def test_patterns_the_bounded_engine_runs_or_refuses_lint_as_the_serializer_decides(
    schema: Any, refused: bool, keyring: Keyring
) -> None:
    _assert_same("JSON", Schema(json.dumps(schema), "JSON"), {}, keyring)
    findings = lint_schema(json.dumps(schema), "JSON").findings
    assert bool([f for f in findings if f.kind == "refused"]) is refused


def test_hostile_metadata_tags_wildcards_cannot_stall_lint_or_crash_it() -> None:
    """``**a`` twelve times: confluent's translation backtracks polynomially on a 40-letter field name (minutes);
    ``a[`` raised a bare re.error out of lint. More than four ``*``/``**`` is refused (confluent's own matcher runs
    it when a rule does); four are matched on RE2, in no time."""
    fields = [{"name": "a" * 40, "type": "string"}, {"name": "b", "type": "string"}]
    avro = {"type": "record", "name": "R", "fields": fields}
    hostile = {"**a" * 12 + "**b": ("PII",), "R.b": ("PII",)}
    start = time.monotonic()
    report = lint_schema(Schema(json.dumps(avro), "AVRO", metadata=_meta(hostile)), "AVRO")
    assert time.monotonic() - start < 10
    assert [f.kind for f in report.findings] == ["refused"] and "holds 13 '*'/'**'" in report.findings[0].message
    four = {"**a**a**a**b": ("PII",), "R.b": ("PII",)}  # matches no field (a finding), quickly
    report = lint_schema(Schema(json.dumps(avro), "AVRO", metadata=_meta(four)), "AVRO")
    assert time.monotonic() - start < 10
    assert {r.path: r.verdict for r in report.rows} == {f"R.{'a' * 40}": "clear", "R.b": "encrypted"}
    report = lint_schema(Schema(json.dumps(avro), "AVRO", metadata=_meta({"a[": ("PII",)})), "AVRO")
    assert [(f.kind, f.path) for f in report.findings] == [("refused", None)]
    assert "metadata.tags path pattern 'a['" in report.findings[0].message


@pytest.mark.parametrize(("schema_type", "kind"), [("", "AVRO"), (None, "AVRO"), ("avro", "AVRO"), ("AVRO", "AVRO")])
def test_a_schema_without_a_type_is_avro_as_confluent_reads_it(schema_type: str | None, kind: str) -> None:
    text = '{"type": "record", "name": "R", "fields": [{"name": "email", "type": "string", "confluent:tags": ["PII"]}]}'
    report = lint_schema(Schema(text, schema_type))
    assert report.schema_type == kind and not [f for f in report.findings if f.kind == "invalid"]
    assert [(row.path, row.verdict) for row in report.rows] == [("R.email", "encrypted")]


@pytest.mark.parametrize("schema_type", ["THRIFT", " AVRO", "xml", 0, False, b"AVRO"])
def test_a_schema_type_no_format_reads_is_an_invalid_finding_naming_the_supported_ones(schema_type: object) -> None:
    report = lint_schema(Schema('{"type": "string"}', schema_type))
    [finding] = report.findings
    assert finding.kind == "invalid" and "Avro, JSON Schema and Protobuf" in finding.message
