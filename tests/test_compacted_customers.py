"""examples/compacted_customers.py, run as a user runs it against a real broker (Tansu): a compacted topic keyed by
customer id through fieldcrypt.StringKeySerializer. Each customer's records go to one partition, the raw keys hold no
customer id, the latest value per customer is their last update, a shred makes that customer's keys read as erased
and their tagged fields as <erased>, and a tombstone per erased key (its raw bytes, read from the topic) removes the
customer from the latest values. Tansu does not compact: the example says so, and this test holds it to that."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLE = ROOT / "examples" / "compacted_customers.py"
spec = importlib.util.spec_from_file_location("compacted_customers", EXAMPLE)
assert spec is not None and spec.loader is not None
compacted = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compacted)


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def sections(out: str) -> dict[str, str]:
    return {part.split(".", 1)[0]: part for part in out.split("\n== ")[1:]}


@pytest.mark.broker
def test_compacted_customers() -> None:
    customers, updates = 3, 2
    out = run("--customers", str(customers), "--updates", str(updates))
    assert out.rstrip().splitlines()[-1] == "OK", out
    assert "FAIL" not in out
    part = sections(out)
    assert list(part) == ["1", "2", "3", "4", "5", "6"]
    sent = [compacted.customer(i, v) for v in range(updates) for i in range(customers)]
    ids = [f"cust-{i:03d}" for i in range(customers)]

    # 2: one key text per customer, shown once per customer; 3: the raw keys are those texts, and no id
    keys = {}
    for line in part["2"].splitlines():
        if line.startswith("cust-"):
            cid, _, _, _, key = line.split()
            keys[cid] = key
    assert sorted(keys) == ids and len(set(keys.values())) == customers
    raw_keys = [line.split()[-1] for line in part["3"].splitlines() if line.startswith("partition ")]
    assert raw_keys and set(raw_keys) <= set(keys.values())
    assert not any(cid in part["3"] for cid in ids)
    assert "a customer id in a key: False; an email or address in a value: False" in part["3"]

    # 4: the latest value per customer, and the statement of what Tansu did
    latest = {
        line.split()[0]: json.loads(line.split(maxsplit=1)[1])
        for line in part["4"].splitlines()[1:]
        if line.startswith("cust-")
    }
    assert latest == {rec["customerId"]: rec for rec in sent}
    n = len(sent)
    assert f"the topic holds {n} of the {n} records written: Tansu does not compact" in part["4"]

    # 5: the shred covers the key domain's deterministic key and the value domain; nothing of cust-000 is readable
    domains = [line.split()[-1] for line in part["5"].splitlines() if line.startswith("  0x")]
    assert [d.rsplit("-", 1)[-1] for d in domains] == ["key/det", "value"]
    gone = [rec for rec in sent if rec["customerId"] == compacted.SHREDDED]
    for rec in gone:
        assert rec["email"] not in part["5"] + part["6"] and rec["address"] not in part["5"] + part["6"]
    assert "Erased(field_path='key', key_id=0x" in part["5"]
    assert f"{compacted.SHREDDED}'s records: {updates}, each key a fieldcrypt.Erased" in part["5"]
    for rec in sent[-customers + 1 :]:  # the others' last updates still read
        assert rec["email"] in part["5"]

    # 6: one tombstone, with the erased customer's key bytes
    tomb = [line.split()[-1] for line in part["6"].splitlines() if line.startswith("tombstone")]
    assert tomb == [keys[compacted.SHREDDED]]
    assert f"now lists: {', '.join(ids[1:])}" in part["6"]


def test_compacted_customers_refuses_too_few_customers() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--customers", "1"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "at least 2" in done.stderr
