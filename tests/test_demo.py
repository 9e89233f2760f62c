"""The README's first Quick start command runs this demo: it must work and show what it claims. (Its --keep and
--from-env, with `fieldcrypt dev up`, are tested in tests/test_dev.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from conftest import ROOT

import fieldcrypt

#: the README's promise: the whole demo in under a minute of machine time
DEMO_LIMIT_S = 60
DEMO = ROOT / "examples" / "end_to_end.py"
#: what the deserializers read a shredded value as: None, or the placeholder where the schema does not admit null
ERASED = (None, "<erased>")


def demo_event(i: int) -> dict[str, Any]:
    """The event the demo sends for customer ``i``, as it shows it (the columns printed)."""
    return {
        "customerId": f"cust-{i:03d}",
        "email": f"jane.doe{i}@example.com",
        "ssn": f"078-05-{1120 + i:04d}" if i % 2 == 0 else None,
        "fullName": ["Jane Doe", "Zoë Ångström", "李小龙"][i % 3],
        "purchaseAmount": round(19.99 * (i + 1), 2),
    }


def sections(out: str) -> dict[str, str]:
    """The demo's output by section, keyed by the start of its title ("1.", "2."... "The schema")."""
    parts = out.split("\n== ")[1:]
    return {part.split(" ", 1)[0] if part[0].isdigit() else part.split(":", 1)[0]: part for part in parts}


def rows(section: str) -> dict[str, list[dict[str, Any]]]:
    """The records a section shows, per format ("avro", "json"; "" for unlabelled rows)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in section.splitlines()[1:]:
        label, _, rest = line.partition("  ")
        if line.startswith("{"):
            found.setdefault("", []).append(json.loads(line))
        elif label in ("avro", "json") and rest.lstrip().startswith("{"):
            found.setdefault(label, []).append(json.loads(rest))
    return found


@pytest.mark.broker
def test_end_to_end_demo_shows_the_whole_promise_within_a_minute(tmp_path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO), "--records", "4", "--state", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEMO_LIMIT_S,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < DEMO_LIMIT_S
    out = result.stdout
    assert out.rstrip().splitlines()[-1] == "OK"
    assert "Try the fieldcrypt command" not in out  # its own broker is gone when it exits: nothing to try
    part = sections(out)
    assert list(part) == ["The schema", "1.", "2.", "3.", "4.", "5."]
    sent = [demo_event(i) for i in range(4)]
    tagged = ("email", "ssn", "fullName")
    secrets = [str(e[k]) for e in sent for k in tagged if e[k] is not None]

    # what the schema tags, as schema lint reads it
    assert (
        "\ntagged fields: email, ssn, fullName (PII, encrypted); customerId (DATA_SUBJECT_ID, per-person keys)\n"
        in part["The schema"]
    )
    assert "\nin clear:      purchaseAmount, currency, items, country, timestamp\n" in part["The schema"]

    # 1. what the producer sent, once; 2. a consumer with keys reads it back in plaintext, in both formats
    assert rows(part["1."]) == {"": sent}
    assert rows(part["2."]) == {"avro": sent, "json": sent}

    # 3. a consumer without keys: the tagged values are ciphertext, the untagged ones (and nulls) as sent
    blind = rows(part["3."])
    assert set(blind) == {"avro", "json"}
    for fmt, read in blind.items():
        assert len(read) == len(sent), fmt
        for got, want in zip(read, sent, strict=True):
            assert got["customerId"] == want["customerId"] and got["purchaseAmount"] == want["purchaseAmount"]
            for k in tagged:
                assert (got[k] is None) == (want[k] is None) and (want[k] is None or got[k] != want[k]), (fmt, k)
    assert not any(secret in part["3."] for secret in secrets)

    # 4. the shred of cust-000 through the Keyring API, with a reason: its key in each topic's subject destroyed
    shred = part["4."]
    assert 'keyring.shred_person("cust-000", reason="erasure request (demo)")' in shred
    assert "\ndata subject: 2 keys destroyed (the key store held 8: one per person and topic)\n" in shred
    assert re.findall(r"\n  0x[0-9a-f]{8}  customer-events-[0-9a-f]{6}-(avro|json)-value", shred) == ["avro", "json"]

    # 5. read again with keys: cust-000's tagged values read as erased, its untagged ones and everyone else as sent
    again = rows(part["5."])
    assert set(again) == {"avro", "json"}
    for fmt, read in again.items():
        [shredded] = [r for r in read if r["customerId"] == "cust-000"]
        assert all(shredded[k] in ERASED for k in tagged), (fmt, shredded)
        assert shredded["purchaseAmount"] == sent[0]["purchaseAmount"]
        assert [r for r in read if r["customerId"] != "cust-000"] == sent[1:], fmt
    assert not any(str(sent[0][k]) in part["5."] for k in ("email", "ssn"))  # its name is cust-003's too
    for name in ("Avro", "JSON Schema"):
        assert (
            f"\n{name}: 4 produced, 4 decrypted, 4 in ciphertext without keys; "
            "after the shred: 1 erased (cust-000), 3 decrypted\n" in part["5."]
        )


def test_the_demo_derives_the_tagged_fields_from_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the demo's "tagged fields" line is written by hand: tag another field, and it says so."""
    spec = importlib.util.spec_from_file_location("end_to_end", DEMO)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "end_to_end", demo)  # its dataclass looks its module up
    spec.loader.exec_module(demo)
    schema = json.loads(demo.SCHEMA)
    for f in schema["fields"]:
        if f["name"] == "country":
            f["confluent:tags"] = ["PII"]
    tagged, clear, encrypted = demo.schema_fields(json.dumps(schema), "AVRO")
    assert tagged == "email, ssn, fullName, country (PII, encrypted); customerId (DATA_SUBJECT_ID, per-person keys)"
    assert clear == "purchaseAmount, currency, items, timestamp"
    assert encrypted == ("email", "ssn", "fullName", "country")


def test_the_demo_needs_someone_left_after_the_shred() -> None:
    result = subprocess.run([sys.executable, str(DEMO), "--records", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--records: at least 2" in result.stderr


@pytest.mark.broker
def test_a_topic_with_other_partitions_is_a_clean_error(broker: Any, tmp_path) -> None:
    """Against an existing stack, --topic NAME may name a topic made earlier with another partition count (Tansu
    auto-creates 4): one line on stderr saying what to do, exit 1, no traceback."""
    name = f"customer-events-{uuid.uuid4().hex[:6]}"
    broker.create_topic(name, partitions=4)
    argv = ["--bootstrap-servers", broker.bootstrap_servers, "--topic", name, "--state", str(tmp_path)]
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(DEMO), *argv], capture_output=True, text=True, timeout=DEMO_LIMIT_S)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 20  # at once: not after create_topic's 30 s wait for a count that won't come
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"end_to_end.py: topic {name!r} did not appear with 1 partition(s) (it has 4)")
    assert "pass another --topic NAME" in result.stderr and "`fieldcrypt dev up`" in result.stderr
    assert "OK" not in result.stdout.splitlines()


def test_a_fieldcrypt_error_is_a_clean_error(tmp_path) -> None:
    """Any other fieldcrypt error escaping the demo (a KEK file or key store that does not exist): one line, exit 1."""
    kek = fieldcrypt.create_local_kek(tmp_path / "kek.json")
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    for store, kek_uri, says in (
        (missing, f"local-kek://{tmp_path / 'nokek.json'}", "fieldcrypt kek create"),
        (missing, kek, "fieldcrypt keys init"),
    ):
        argv = ["--store", store, "--kek", kek_uri]
        result = subprocess.run([sys.executable, str(DEMO), *argv], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("end_to_end.py: ") and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()


def test_the_demo_uses_only_public_api() -> None:
    source = DEMO.read_text()
    assert "fieldcrypt._" not in source and "from fieldcrypt.dev import" in source
    assert "from fieldcrypt.lint import lint_schema" in source and "keyring.shred_person(" in source


def test_key_lifecycle_example() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "key_lifecycle.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bob    email=<erased>" in out and "alice  email=alice@example.com" in out
    assert "nothing to do, already shredded" in out
    # the reader's counters (ReadStats, or SerdeStats with more of them): 7 records, 14 values, bob's 4 erased
    assert re.search(r"\brecords=7, .*\bvalues=14, erased=4, denied=0, plaintext=0, plaintext_by_field=\{\}", out)
