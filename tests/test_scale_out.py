"""``fieldcrypt scan`` and ``verify`` split across processes: three real processes, each reading one partition of a
real broker's topic and writing its JSON report, merged by ``--merge`` into the counts one process reading every
partition gives; and the merges that would count wrong are refused."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer as PlainAvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader
from test_scan import SIGNUP, signup

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.cli import main

PARTITIONS = 3


@pytest.fixture(scope="module")
def topic(broker: Any, http_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A topic of 3 partitions: fieldcrypt records of 12 people (2 of them erased), plaintext ones, a tampered
    value, garbage and a tombstone, spread over the partitions."""
    tmp = tmp_path_factory.mktemp("scale")
    name = f"scale-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions=PARTITIONS)
    kek = fieldcrypt.create_local_kek(tmp / "kek.json")
    store = f"sqlite:///{tmp / 'keys.db'}"
    registry = SchemaRegistryClient({"url": http_registry.url})
    ctx = SerializationContext(name, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    with Keyring(fieldcrypt.create_key_store(store), kek) as kr:
        ser = AvroSerializer(registry, SIGNUP, keyring=kr)
        plain = PlainAvroSerializer(registry, SIGNUP)
        for i in range(60):
            value = ser(signup(i % 12), ctx) if i % 10 else plain(signup(i % 12), ctx)
            producer.produce(name, value=value, partition=i % PARTITIONS)
        tampered = ser(signup(3), ctx)
        assert tampered is not None
        email = schemaless_reader(io.BytesIO(tampered[5:]), parse_schema(json.loads(SIGNUP)), None)["email"].encode()
        tampered = tampered.replace(email, email[:20] + (b"A" if email[20:21] != b"A" else b"B") + email[21:], 1)
        producer.produce(name, value=tampered, partition=1)
        producer.produce(name, value=b"\xffgarbage", partition=2)
        producer.produce(name, key=b"gone", value=None, partition=0)
        assert producer.flush(30) == 0
        kr.shred_person("cust-4", reason="test")
        kr.shred_person("cust-7", reason="test")
    cluster = ["--bootstrap-servers", broker.bootstrap_servers, "--schema-registry", http_registry.url]
    return {"name": name, "cluster": [*cluster, "--timeout", "20"], "keys": ["--store", store, "--kek", kek]}


def _one(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    assert "Traceback" not in err
    return code, json.loads(out)


def _split(command: str, topic: dict[str, Any], tmp: Path, *extra: str) -> list[Path]:
    """The command run as 3 processes at once, one partition each, each writing its report to a file."""
    files = [tmp / f"{command}-{p}.json" for p in range(PARTITIONS)]
    procs = []
    for p, path in enumerate(files):
        argv = [command, topic["name"], *topic["cluster"], "--partition", str(p), "--json", *extra]
        with path.open("w") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "fieldcrypt.cli", *argv], stdout=out))
    for proc in procs:
        assert proc.wait(120) in (0, 7)
    return files


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what says how it was read: timings, shards, and the order findings' offsets arrived in."""
    out = {k: v for k, v in report.items() if k not in ("run", "shards", "partitions")}
    for s in out.get("subjects", []):
        for f in s["fields"]:
            f["offsets"] = sorted((o["partition"], o["offset"]) for o in f["offsets"])
    for u in out.get("untagged_ciphertext", []):
        u["offsets"] = sorted((o["partition"], o["offset"]) for o in u["offsets"])
    out["bad_records"]["first"] = sorted(json.dumps(e, sort_keys=True) for e in out["bad_records"]["first"])
    out["partitions"] = [(s["partition"], s["from"], s["to"], s["read"]) for s in report["partitions"]]
    return out


@pytest.mark.broker
@pytest.mark.parametrize("command", ["scan", "verify"])
def test_three_processes_merged_count_what_one_process_counts(
    topic: dict[str, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str], command: str
) -> None:
    code, single = _one(capfd, command, topic["name"], *topic["cluster"], "--json", *topic["keys"])
    assert code == 7  # plaintext in tagged fields, a tampered record, garbage
    assert single["records"] == 63 and single["tombstones"] == 1
    files = _split(command, topic, tmp_path, *topic["keys"])
    parts = [json.loads(f.read_text()) for f in files]
    assert sorted(p["partitions"][0]["partition"] for p in parts) == [0, 1, 2]
    assert all(p["run"]["records_per_second"] > 0 for p in parts)  # each process says how fast it read
    code_merged, merged = _one(capfd, command, "--merge", *map(str, files), "--json")
    assert code_merged == code
    assert _counts(merged) == _counts(single)
    assert [s["records"] for s in merged["shards"]] == [p["records"] for p in parts]
    if command == "verify":
        erased = sum(r["erased"] for r in merged["rows"])
        assert erased > 0 and merged["findings"]["tampered"] == 1
    else:
        assert merged["findings"]["plaintext_in_tagged_fields"] > 0
    # the text form: every shard's rate, the findings of the whole
    assert main([command, "--merge", *map(str, files)]) == code
    out, _ = capfd.readouterr()
    assert "records/s" in out and "findings:" in out


@pytest.mark.broker
def test_one_data_subjects_proof_over_three_processes(
    topic: dict[str, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The erasure proof of one person (verify --data-subject) for a topic read by several processes: merged, it
    is what one process finds; shares of other persons or of all persons are not added to it."""
    person = ["--data-subject", "cust-4", *topic["keys"]]
    code, single = _one(capfd, "verify", topic["name"], *topic["cluster"], "--json", *person)
    [row] = single["rows"]
    assert row["erased"] > 0 and row["readable"] == 0 and single["data_subject"] == "cust-4"
    files = _split("verify", topic, tmp_path, *person)
    code_merged, merged = _one(capfd, "verify", "--merge", *map(str, files), "--json")
    assert (code_merged, _counts(merged)) == (code, _counts(single))
    (tmp_path / "o").mkdir()
    other = _split("verify", topic, tmp_path / "o", "--data-subject", "cust-5", *topic["keys"])
    assert main(["verify", "--merge", str(files[0]), str(other[1]), str(files[2])]) == 3
    assert "data_subject" in capfd.readouterr().err


@pytest.mark.broker
def test_a_merge_that_would_count_wrong_is_refused(
    topic: dict[str, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    files = _split("scan", topic, tmp_path)
    # a partition twice: its records would count twice
    assert main(["scan", "--merge", str(files[0]), str(files[0]), "--json"]) not in (0, 7)
    said = "".join(capfd.readouterr())  # with --json, the error is JSON on stdout
    assert "partition 0" in said and "twice" in said
    # reports read with other settings (here: decryption) are not one reading
    (tmp_path / "k").mkdir()
    decrypted = _split("scan", topic, tmp_path / "k", *topic["keys"])[0]
    assert main(["scan", "--merge", str(decrypted), str(files[1])]) not in (0, 7)
    _, err = capfd.readouterr()
    assert "decrypted" in err
    # a verify report with scan reports, not JSON, not a report, a topic given too
    (tmp_path / "v").mkdir()
    verify = _split("verify", topic, tmp_path / "v", *topic["keys"])
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    text = tmp_path / "text.txt"
    text.write_text("not json")
    for argv in (
        ["scan", "--merge", str(files[0]), str(verify[1])],
        ["scan", "--merge", str(junk)],
        ["scan", "--merge", str(text)],
        ["scan", topic["name"], "--merge", str(files[0])],
        ["scan", "--merge", str(tmp_path / "missing.json")],
    ):
        assert main(argv) not in (0, 7), argv
        _, err = capfd.readouterr()
        assert "Traceback" not in err


def _scan_share(partition: int, **over: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "topic": "t",
        "detectors": ["email"],
        "keys_scanned": False,
        "decrypted": False,
        "partitions": [{"partition": partition, "from": 0, "to": 5, "read": 5}],
        "records": 5,
        "tombstones": 0,
        "subjects": [
            {
                "subject": "t-value",
                "part": "value",
                "schema_type": "AVRO",
                "schema_ids": [1],
                "records": 5,
                "fields": [{"field": "$.email", "tagged": True, "values": 5, "ciphertext": 2, "plaintext": 3}],
            }
        ],
        "bad_records": {"count": 0, "by_reason": {}, "first": []},
    }
    report.update(over)
    return report


def test_a_share_that_is_not_a_report_as_written_is_refused_before_anything_is_added(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A corrupt or hostile share cannot cancel another's findings (a negative count), crash the merge, or carry
    keys no report writes into the merged one."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_scan_share(0)))
    assert main(["scan", "--merge", str(good), "--json"]) == 7  # the plaintext of the one share is a finding
    capfd.readouterr()
    field = {"field": "$.email", "tagged": True, "values": 0, "plaintext": -3}
    hostile = [
        {"subjects": [{**_scan_share(1)["subjects"][0], "fields": [field]}]},  # cancels the other's plaintext
        {"subjects": [{**_scan_share(1)["subjects"][0], "fields": [{"tagged": True}]}]},
        {"subjects": [{**_scan_share(1)["subjects"][0], "schema_ids": [1, "a"]}]},
        {"subjects": [{**_scan_share(1)["subjects"][0], "fields": [{**field, "plaintext": "5"}]}]},
        {"subjects": [{**_scan_share(1)["subjects"][0], "fields": [{**field, "plaintext": 1, "note": "x"}]}]},
        {"bad_records": {"count": 1, "by_reason": [1], "first": []}},
        {"bad_records": {"count": 1, "by_reason": {"tampered": -1}, "first": "ab"}},
        {"partitions": [{"partition": 1}]},
        {"partitions": []},  # records read from no partition: could be given twice
        {"secret": "value"},
    ]
    for i, over in enumerate(hostile):
        bad = tmp_path / f"bad-{i}.json"
        bad.write_text(json.dumps(_scan_share(1, **over)))
        for argv in (["scan", "--merge", str(good), str(bad), "--json"], ["scan", "--merge", str(good), str(bad)]):
            assert main(argv) == 3, over
            said = "".join(capfd.readouterr())
            assert "Traceback" not in said and bad.name in said
