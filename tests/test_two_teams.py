"""examples/two_teams.py, run as a user runs it against a real broker (Tansu): one topic, one producer, three teams each
holding the KEK of its own key domains. Each team prints what it may read and nothing more; after a shred of one
patient, that patient's tagged fields read as erased for every team. Once with a local KEK file per domain, once with
one AWS KMS key per domain, through moto's KMS in server mode (the pattern of tests/test_docs.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT
from kms_fakes import moto_kms_server

EXAMPLE = ROOT / "examples" / "two_teams.py"
spec = importlib.util.spec_from_file_location("two_teams", EXAMPLE)
assert spec is not None and spec.loader is not None
two_teams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(two_teams)


@pytest.fixture
def moto_kms() -> Iterator[Any]:
    """moto's KMS server (tests/kms_fakes.py), reset when the test ends."""
    with moto_kms_server() as client:
        yield client


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "no access to data key" not in done.stderr  # no noise, no value
    return done.stdout


def sections(out: str) -> dict[str, str]:
    """The output by section: "domains", "1", "2", "3", "4"."""
    found = {}
    for part in out.split("\n== ")[1:]:
        found["domains" if part.startswith("The key domains") else part.split(".", 1)[0]] = part
    return found


def reads(section: str) -> dict[str, list[dict[str, Any]]]:
    """The records each team printed in a section."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in section.splitlines():
        team, _, rest = line.partition(" ")
        if team in two_teams.TEAMS and "{" in rest and rest.rstrip().endswith("}") and '"patientId"' in rest:
            found.setdefault(team, []).append(json.loads(rest[rest.index("{") :]))
    return found


def check_outcomes(out: str, records: int) -> dict[str, str]:
    assert out.rstrip().splitlines()[-1] == "OK", out
    part = sections(out)
    assert list(part) == ["domains", "1", "2", "3", "4"]
    sent = [two_teams.patient(i) for i in range(records)]
    shredded = two_teams.SHREDDED

    before, after = reads(part["2"]), reads(part["4"])
    assert list(before) == list(after) == ["support", "analytics", "payments"]
    for team in two_teams.TEAMS:
        assert before[team] == [two_teams.expected(team, s) for s in sent], team
        assert after[team] == [two_teams.expected(team, s, s["patientId"] == shredded) for s in sent], team
    # spelt out once, for the reader of this test
    p1 = sent[1]
    assert before["support"][1] == {**p1, "diagnosis": "<denied>"}
    assert before["analytics"][1] == {
        **p1,
        "email": "***@mail1.example",
        "phone": "**** 1001",
        "diagnosis": "<denied>",
    }
    assert before["payments"][1] == {**p1, "email": "<denied>", "phone": "<denied>"}

    # nothing a team may not read appears on its lines, in any section
    for team, domains in two_teams.TEAMS.items():
        lines = "\n".join(line for line in out.splitlines() if line.startswith(f"{team} "))
        hidden = {
            "support": ("diagnosis",),
            "analytics": ("email", "phone", "diagnosis"),
            "payments": ("email", "phone"),
        }[team]
        for s in sent:
            for field in hidden:
                assert s[field] not in lines, (team, field)
        assert f"({', '.join(domains)})" in lines
    # the shredded patient's values appear nowhere after the shred
    for field in two_teams.TAGGED:
        assert sent[0][field] not in part["3"] + part["4"], field

    # the counters each team printed: denied and masked per field
    n = records
    assert f"support    {n} records: 0 masked {{}}, {n} denied {{'diagnosis': {n}}}, 0 erased" in part["2"]
    assert (
        f"analytics  {n} records: {2 * n} masked {{'email': {n}, 'phone': {n}}}, {n} denied {{'diagnosis': {n}}}, "
        "0 erased" in part["2"]
    )
    assert (
        f"payments   {n} records: 0 masked {{}}, {2 * n} denied {{'email': {n}, 'phone': {n}}}, 0 erased" in part["2"]
    )
    assert f"support    {n} records: 0 masked {{}}, {n - 1} denied {{'diagnosis': {n - 1}}}, 3 erased" in part["4"]
    # the shred: the patient's key in each domain, the masked views' included
    assert "data subject: 3 keys destroyed" in part["3"]
    assert [line.split()[-1] for line in part["3"].splitlines() if line.startswith("  0x")] == list(two_teams.DOMAINS)
    return part


def recorded_keks(part: dict[str, str]) -> dict[str, str]:
    """The KEK the key store recorded for each domain, as the example printed it."""
    found = {}
    for line in part["1"].splitlines():
        if line.startswith("the key store records: "):
            domain, _, kek = line.removeprefix("the key store records: ").partition(" is wrapped by ")
            found[domain] = kek
    return found


@pytest.mark.broker
@pytest.mark.slow
def test_two_teams_each_read_what_their_keks_allow() -> None:
    part = check_outcomes(run("--records", "3"), 3)
    keks = recorded_keks(part)
    assert sorted(keks) == sorted(two_teams.DOMAINS) and len(set(keks.values())) == 3
    assert all(k.startswith("local-kek:///") for k in keks.values())


@pytest.mark.broker
@pytest.mark.slow
def test_two_teams_with_one_aws_kms_key_per_domain(moto_kms: Any) -> None:
    before = {k["KeyId"] for k in moto_kms.list_keys()["Keys"]}  # keys a test before this one left in moto
    part = check_outcomes(run("--aws-kms", "--records", "3"), 3)
    keks = recorded_keks(part)
    assert sorted(keks) == sorted(two_teams.DOMAINS) and len(set(keks.values())) == 3
    created = {k["KeyId"] for k in moto_kms.list_keys()["Keys"]} - before
    assert len(created) == 3  # one KMS key per key domain, made by the example
    assert {f"aws-kms://{moto_kms.describe_key(KeyId=k)['KeyMetadata']['Arn']}" for k in created} == set(keks.values())
    states = {moto_kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] for k in created}
    assert states == {"PendingDeletion"}  # the example deletes the keys it created


def test_two_teams_refuses_an_incomplete_kek_mapping() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--kek", "contact=local-kek:///nowhere.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--kek: give DOMAIN=URI for each of contact, contact/masked, health" in done.stderr
