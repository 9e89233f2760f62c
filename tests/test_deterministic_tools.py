"""Issue 19, part 5: the leak of deterministic values, stated and measured by the tools. ``fieldcrypt schema lint``
marks deterministic values (``--deterministic-tag``, ``fieldcrypt.deterministic.tags``) and warns on those whose
schema suggests few distinct values; ``fieldcrypt scan`` counts deterministic values apart and measures how many
distinct ciphertexts a field holds, never printing a value."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from conftest import value_ctx

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.avro.format import FORMAT as AVRO_FORMAT
from fieldcrypt.cli import main
from fieldcrypt.core.plan import TagRules
from fieldcrypt.lint import few_values, lint_schema

AVRO = {
    "type": "record",
    "name": "Customer",
    "namespace": "example.shop",
    "fields": [
        {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["JOIN"]},
        {"name": "countryCode", "type": "string", "confluent:tags": ["JOIN"]},
        {"name": "isVip", "type": "string", "confluent:tags": ["JOIN"]},
        {"name": "gender", "type": ["null", "string"], "default": None, "confluent:tags": ["JOIN"]},
        {"name": "note", "type": "string", "confluent:tags": ["PII"]},
        {"name": "visits", "type": "int"},
    ],
}
JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Customer",
    "type": "object",
    "properties": {
        "email": {"type": "string", "confluent:tags": ["JOIN"]},
        "birthDate": {"type": "string", "format": "date", "confluent:tags": ["JOIN"]},
        "seenAt": {"type": "string", "format": "date-time", "confluent:tags": ["JOIN"]},
        "status": {"type": "string", "enum": ["new", "gold"], "confluent:tags": ["JOIN"]},
    },
}
CONF: dict[str, Any] = {
    "fieldcrypt.tags": ["PII", "JOIN"],
    "fieldcrypt.deterministic.tags": ["JOIN"],
    "fieldcrypt.tag.domains": {"JOIN": "customers"},
}
FLAGS = ["--tag", "PII,JOIN", "--deterministic-tag", "JOIN", "--tag-domain", "JOIN=customers"]
A = "example.shop.Customer."


def test_lint_marks_deterministic_values_as_the_serializer_encrypts_them() -> None:
    report = lint_schema(json.dumps(AVRO), "AVRO", conf=CONF)
    rows = {r.path: r for r in report.rows}
    det = {p for p, r in rows.items() if r.deterministic}
    assert det == {A + "email", A + "countryCode", A + "isVip", A + "gender"}
    assert not rows[A + "note"].deterministic and rows[A + "email"].domain == "customers"
    # the same paths the serializer's plan encrypts deterministically
    parsed = AVRO_FORMAT.parser(None, writing=True)(Schema(json.dumps(AVRO), "AVRO"))
    rules = TagRules.from_conf(CONF["fieldcrypt.tags"], deterministic=CONF["fieldcrypt.deterministic.tags"])
    plan = AVRO_FORMAT.compile(parsed, rules, rules.collector())
    assert {leaf.path for leaf in plan.leaves if leaf.deterministic} == det


def test_lint_warns_on_deterministic_values_with_few_distinct_values() -> None:
    report = lint_schema(json.dumps(AVRO), "AVRO", conf=CONF)
    rows = {r.path: r for r in report.rows}
    assert rows[A + "countryCode"].few_values == "a short code"
    assert rows[A + "isVip"].few_values == "a yes/no value as text"
    assert rows[A + "gender"].few_values == "a category"
    assert rows[A + "email"].few_values is None and rows[A + "note"].few_values is None
    warned = [f for f in report.findings if f.kind == "deterministic"]
    assert [f.path for f in warned] == [A + "countryCode", A + "isVip", A + "gender"]
    assert "within each person's values" in warned[0].message  # per-person keys: the leak is within one person
    # without the deterministic setting nothing is deterministic, nothing is warned
    plain = lint_schema(json.dumps(AVRO), "AVRO", conf={"fieldcrypt.tags": ["PII", "JOIN"]})
    assert not any(r.deterministic or r.few_values for r in plain.rows)
    assert not any(f.kind == "deterministic" for f in plain.findings)


def test_lint_json_date_format_warns_and_an_enum_is_refused() -> None:
    report = lint_schema(json.dumps(JSON_SCHEMA), "JSON", conf=CONF)
    rows = {r.path: r for r in report.rows}
    assert rows["$.birthDate"].few_values == "a date (format date)" and rows["$.birthDate"].deterministic
    assert rows["$.seenAt"].few_values is None and rows["$.email"].few_values is None
    assert rows["$.status"].verdict == "refused"  # an enum on a tagged string: the serializer refuses it
    (warned,) = [f for f in report.findings if f.kind == "deterministic"]
    assert "across the whole key domain" in warned.message  # no data-subject field: one key for everyone


@pytest.mark.parametrize(
    ("name", "fmt", "why"),
    [
        ("countryCode", None, "a short code"),
        ("currency_code", None, "a short code"),
        ("hasConsent", None, "a yes/no value as text"),
        ("newsletterOptIn", None, "a yes/no value as text"),
        ("MARITAL_STATUS", None, "a category"),
        ("bloodType", None, "a category"),
        ("birthDate", "date", "a date (format date)"),
        ("email", None, None),
        ("customerName", None, None),
        ("iban", None, None),
        ("createdAt", "date-time", None),
    ],
)
def test_few_values_heuristics(name: str, fmt: str | None, why: str | None) -> None:
    assert few_values(name, fmt) == why


def test_lint_cli_column_json_key_fail_on_and_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "customer.avsc"
    path.write_text(json.dumps(AVRO))
    assert main(["schema", "lint", str(path), *FLAGS]) == 7
    out = capsys.readouterr().out
    assert "DETERMINISTIC" in out.upper() and "yes (customers/det)" in out and "few-values" in out
    assert "deterministic: example.shop.Customer.countryCode: deterministic and a short code" in out
    assert "3 deterministic warning(s) -- failing on deterministic" in out
    assert main(["schema", "lint", str(path), *FLAGS, "--json"]) == 7
    (report,) = json.loads(capsys.readouterr().out)
    rows = {r["path"]: r for r in report["rows"]}
    assert rows[A + "email"]["deterministic"] is True and rows[A + "note"]["deterministic"] is False
    assert rows[A + "gender"]["few_values"] == "a category"
    assert {f["kind"] for f in report["findings"]} == {"deterministic"}
    # reported, not failed on; or accepted per path
    assert main(["schema", "lint", str(path), *FLAGS, "--fail-on", "refused,removed,hints"]) == 0
    capsys.readouterr()
    accepted = ["--ignore-hint", "**.countryCode", "--ignore-hint", "**.isVip", "--ignore-hint", "**.gender"]
    assert main(["schema", "lint", str(path), *FLAGS, *accepted]) == 0
    capsys.readouterr()
    # no column without deterministic values
    assert main(["schema", "lint", str(path), "--tag", "PII,JOIN"]) == 0
    assert "DETERMINISTIC" not in capsys.readouterr().out.upper()
    # a deterministic tag that is not encrypted is the serializer's ConfigurationError
    assert main(["schema", "lint", str(path), "--tag", "PII,JOIN", "--deterministic-tag", "OTHER"]) == 3
    assert "fieldcrypt.tags does not list" in capsys.readouterr().err


def test_lint_refuses_deterministic_with_a_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "customer.avsc"
    path.write_text(json.dumps(AVRO))
    assert main(["schema", "lint", str(path), *FLAGS, "--mask", "JOIN=email", "--json"]) == 7
    (report,) = json.loads(capsys.readouterr().out)
    refused = {f["path"] for f in report["findings"] if f["kind"] == "refused"}
    assert A + "email" in refused


# -- scan: deterministic values counted apart, their distinct ciphertexts measured ------------------------------------
def _scan_world(tmp_path: Path, broker: Any, http_registry: Any) -> tuple[str, list[str], Keyring, str]:
    from confluent_kafka import Producer

    store = f"sqlite:///{tmp_path / 'keys.db'}"
    kek = fieldcrypt.create_local_kek(tmp_path / "kek.json")
    fieldcrypt.create_key_store(store)
    keyring = Keyring(store, kek)
    topic = f"det-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    registry = SchemaRegistryClient({"url": http_registry.url})
    ser = AvroSerializer(registry, json.dumps(AVRO), conf=CONF, keyring=keyring)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    # two people; c-1 writes the same email 3 times and the same country 4 times
    people = [("c-1", "jane@example.com", "DE"), ("c-1", "jane@example.com", "DE"), ("c-1", "jane@example.com", "DE")]
    people += [("c-1", "jane.doe@example.com", "DE"), ("c-2", "joe@example.com", "FR")]
    for cid, email, country in people:
        rec = {"customerId": cid, "email": email, "countryCode": country, "isVip": "false", "gender": None}
        rec |= {"note": "n", "visits": 1}
        producer.produce(topic, value=ser(rec, value_ctx(topic)), partition=0)
    assert producer.flush(30) == 0
    common = [topic, "--bootstrap-servers", broker.bootstrap_servers, "--schema-registry", http_registry.url]
    return topic, [*common, "--timeout", "10", *FLAGS], keyring, str(kek)


@pytest.mark.broker
def test_scan_counts_deterministic_values_and_their_distinct_ciphertexts(
    tmp_path: Path, broker: Any, http_registry: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    _, common, keyring, kek = _scan_world(tmp_path, broker, http_registry)
    code = main(["scan", *common, "--json"])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    fields = {f["field"]: f for s in json.loads(out)["subjects"] for f in s["fields"] if f["tagged"]}
    email, country, vip, note = fields["$.email"], fields["$.countryCode"], fields["$.isVip"], fields["$.note"]
    assert (email["ciphertext"], email["deterministic"], email["distinct"], email["most_frequent"]) == (5, 5, 3, 3)
    assert (country["distinct"], country["most_frequent"]) == (2, 4)  # DE of c-1 four times, FR of c-2 once
    assert (vip["distinct"], vip["most_frequent"]) == (2, 4)  # "false" per person: one ciphertext each
    assert email["distinct_is_lower_bound"] is False
    assert note["deterministic"] == 0 and "distinct" not in note  # randomized
    assert "$.gender" not in fields or fields["$.gender"]["values"] == 0  # all null
    code = main(["scan", *common])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "DETERMINISTIC" in out.upper() and "3 (60%), top 3" in out
    # decrypting: deterministic values are read like the others
    code = main(["scan", *common, "--json", "--store", f"sqlite:///{tmp_path / 'keys.db'}", "--kek", kek])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    fields = {f["field"]: f for s in json.loads(out)["subjects"] for f in s["fields"] if f["tagged"]}
    assert (fields["$.email"]["readable"], fields["$.email"]["tampered"]) == (5, 0)
    for planted in ("jane", "joe@", '"DE"', '"FR"', '"false"'):
        assert planted not in out and planted not in err
    keyring.close()
