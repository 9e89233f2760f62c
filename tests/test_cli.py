"""The fieldcrypt CLI as key admins and scripts use it: tables, --json, exit codes, the same effects as the API."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import customer, load_schema, value_ctx

from fieldcrypt import Keyring, create_key_store
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.cli import main
from fieldcrypt.errors import format_key_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kek_create_and_refuse_overwrite(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "kek", "create", str(tmp_path / "k.json"))
    assert code == 0 and out.strip() == f"local-kek://{tmp_path / 'k.json'}"
    code, _, err = run(capsys, "kek", "create", str(tmp_path / "k.json"))
    assert code == 3 and "already exists" in err


def test_list_show_rotate_shred_audit(
    registry, keyring: Keyring, store_url: str, kek_uri: str, tmp_path, capsys
) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    for i in range(3):
        ser(customer(i), value_ctx())
    s = ["--store", store_url]
    k = ["--kek", kek_uri]
    code, out, _ = run(capsys, "keys", "list", *s)
    # a listing of every key names people by their pseudonyms, never their ids
    assert code == 0 and out.splitlines()[0].split()[:3] == ["KEY_ID", "DOMAIN", "DATA_SUBJECT"]
    assert keyring._stored("orders-value", "cust-2") in out and "cust-2" not in out
    code, _, err = run(capsys, "keys", "list", *s, "--data-subject", "cust-1")
    assert code == 3 and "--kek" in err  # a data subject's keys: only a KEK-holder computes their pseudonym
    code, out, _ = run(capsys, "keys", "list", *s, *k, "--json", "--data-subject", "cust-1")
    [row] = json.loads(out)
    assert row["domain"] == "orders-value" and row["state"] == "active" and row["version"] == 1
    assert row["data_subject"] == "cust-1"
    code, out, _ = run(capsys, "keys", "show", row["key_id"], *s, "--json")
    assert code == 0 and json.loads(out)[0]["key_id"] == row["key_id"]
    assert json.loads(out)[0]["data_subject"] == keyring._stored("orders-value", "cust-1")  # keys show: the pseudonym
    code, out, _ = run(
        capsys,
        "keys",
        "rotate",
        "--domain",
        "orders-value",
        "--data-subject",
        "cust-1",
        *s,
        "--kek",
        kek_uri,
        "--json",
        "--reason",
        "test",
    )
    assert code == 0 and json.loads(out)[0]["version"] == 2
    shred = ["keys", "shred", "--reason", "ticket 42", "--yes"]
    code, out, _ = run(capsys, *shred, "--data-subject", "cust-1", *s, *k, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["destroyed"] == 2 and not summary["noop"]
    assert summary["data_subjects"] == [
        {"data_subject": "cust-1", "outcome": "erased", "key_ids": summary["key_ids"], "previously_shredded": 0}
    ]
    code, out, _ = run(capsys, *shred, "--data-subject", "cust-1", *s, *k)
    assert code == 0 and "already shredded" in out and "already erased" in out
    code, out, _ = run(capsys, "keys", "show", row["key_id"], *s, "--json")
    assert json.loads(out)[0]["state"] == "shredded"
    (tmp_path / "ids.txt").write_text("# erasure batch\ncust-0\n\ncust-2\nnobody\n")
    code, out, _ = run(capsys, *shred, "--from-file", str(tmp_path / "ids.txt"), *s, *k, "--json")
    batch = json.loads(out)
    assert batch["destroyed"] == 2
    assert [(d["data_subject"], d["outcome"]) for d in batch["data_subjects"]] == [
        ("cust-0", "erased"),
        ("cust-2", "erased"),
        ("nobody", "no key held"),
    ]
    code, out, _ = run(capsys, "keys", "audit", *s, "--json")
    entries = json.loads(out)
    ops = [e["operation"] for e in entries]
    # one shred entry per person of the batch: the evidence names everyone, even who had no key
    # first the domain's KEK recorded, the store's pseudonym key made and the domain's branch key made, then the three
    # data keys
    assert ops == [
        "kek-map",
        "pseudonymize",
        "create",
        "create",
        "create",
        "create",
        "rotate",
        "shred",
        "shred",
        "shred",
        "shred",
        "shred",
    ]
    assert entries[7]["reason"] == "ticket 42" and entries[7]["key_ids"] == summary["key_ids"]
    # the whole audit log names people by their pseudonyms
    assert entries[7]["data_subject"] == keyring._stored("orders-value", "cust-1")
    assert [(e["data_subject"], e["detail"].split(";")[0]) for e in entries[-3:]] == [
        (keyring._stored("orders-value", "cust-0"), "1 key destroyed"),
        (keyring._stored("orders-value", "cust-2"), "1 key destroyed"),
        (keyring._stored("orders-value", "nobody"), "no key held"),
    ]
    code, out, _ = run(capsys, "keys", "audit", *s)
    assert code == 0 and "OPERATION" in out.splitlines()[0]
    code, out, _ = run(capsys, *shred, "--file", str(tmp_path / "ids.txt"), *s, *k, "--json")  # alias, again
    assert code == 0 and json.loads(out)["destroyed"] == 0 and json.loads(out)["noop"]


def test_exit_codes(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "keys", "list")
    assert code == 3 and "--store" in err
    store = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    code, _, err = run(capsys, "keys", "show", "0x1", "--store", store)
    assert code == 5 and "0x00000001" in err
    code, _, _ = run(capsys, "keys", "list", "--store", "nosuch://x")
    assert code == 3
    assert main(["keys", "frobnicate"]) == 2
    code, _, err = run(capsys, "keys", "rewrap", "--store", store)
    assert code == 3 and "KEK" in err


def test_shred_log_export_and_restore(registry, keyring: Keyring, store_url: str, tmp_path, capsys) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    ser(customer(1), value_ctx())
    keyring.shred_person("cust-1")
    code, out, _ = run(capsys, "keys", "shred-log", str(tmp_path / "log.jsonl"), "--store", store_url)
    assert code == 0 and len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    other = create_key_store(f"sqlite:///{tmp_path / 'restored.db'}")
    Keyring(other, keyring.kek).encryption_key("x")  # a store to apply it to
    code, out, _ = run(
        capsys, "keys", "restore", "--shred-log", str(tmp_path / "log.jsonl"), "--store", other, "--json"
    )
    assert code == 0 and json.loads(out) == {"applied": 1, "destroyed_again": [], "pending": False}


def test_reserved_encryptions_are_named_for_what_they_are(registry, keyring: Keyring, store_url: str, capsys) -> None:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    for _ in range(3):
        ser(customer(1), value_ctx())  # 3 values, one lease charged
    code, out, _ = run(capsys, "keys", "list", "--store", store_url, "--json")
    [row] = json.loads(out)
    assert code == 0 and row["reserved"] == keyring.rotation.leased == 65536 and "encryptions" not in row
    code, out, _ = run(capsys, "keys", "list", "--store", store_url)
    header = out.splitlines()[0].split()
    assert "RESERVED" in header and "ENCRYPTIONS" not in header
    code, out, _ = run(capsys, "keys", "show", row["key_id"], "--store", store_url)
    assert code == 0 and "RESERVED is the number of encryptions reserved by producers" in out
    assert "the values actually encrypted are at most this" in out
    for command in ("list", "show"):
        code, out, _ = run(capsys, "keys", command, "--help")
        assert code == 0 and "encryptions reserved by producers (in blocks of" in " ".join(out.split())


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


@pytest.mark.parametrize("columns", [100, 80])
def test_terminal_tables_never_break_a_header_key_id_date_or_domain(
    store_url: str, kek_uri: str, columns: int, monkeypatch, capsys
) -> None:
    domains = ["customer-events-value", "orders-value"]
    with Keyring(store_url, kek_uri) as kr:
        for d in domains:
            for i in range(3):
                kr.encryption_key(d, f"cust-{i:06d}")
        kr.encryption_key(domains[1])
        kr.rotate(domains[0], "cust-000001", reason="scheduled rotation after the quarterly review of key usage")
        kr.shred_person("cust-000002", reason="erasure request ERASE-4711 received by the privacy office")
        ids = {format_key_id(k.key_id) for k in kr.keys()} | {format_key_id(r.key_id) for r in kr.export_shred_log()}
        named = ids | {format_key_id(b.key_id) for b in kr.store.branches()}  # the audit log names branch keys too
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal, as wide as COLUMNS says
    s = ["--store", store_url]
    commands = {
        ("keys", "list", "--state", "all", *s): ["KEY_ID", "DATA_SUBJECT", "RESERVED", "CREATED_AT", "SHREDDED_AT"],
        ("keys", "audit", *s): ["SEQ", "OPERATION", "DATA_SUBJECT", "KEY_IDS", "REASON", "DETAIL"],
        ("keys", "shred", "--domain", domains[1], "--reason", "r", "--dry-run", *s): ["DATA_SUBJECT", "KEY_ID"],
    }
    for argv, headers in commands.items():
        code, out, _ = run(capsys, *argv)
        out = ANSI.sub("", out)
        assert code == 0 and max(len(line.rstrip()) for line in out.splitlines()) <= columns, out
        for h in headers:  # every header whole, never DATA_SUBJE / CT
            assert re.search(rf"(?<![A-Z_]){h}(?![A-Z_])", out), (h, out)
        found = re.findall(r"(?<![0-9A-Za-z_:-])0x[0-9a-f]+", out)  # (not "0x" inside a random pseudonym)
        assert found and all(re.fullmatch(r"0x[0-9a-f]{8}", k) for k in found), out  # no key id cut short
        assert set(found) <= named
        assert len(re.findall(ISO, out)) == len(re.findall(r"\d{4}-\d\d-", out)), out  # no date cut short
        for d in domains:
            assert out.count(d) == out.count(d[:10]), (d, out)  # no domain cut short
    code, out, _ = run(capsys, "keys", "list", "--state", "all", *s)
    assert set(re.findall(r"0x[0-9a-f]{8}", out)) == ids  # every key listed, whole
    if "─" not in out:  # too wide for a table here: one block of NAME  value lines per key
        assert len([line for line in out.splitlines() if line.startswith("KEY_ID  ")]) == len(ids)
    code, out, _ = run(capsys, *next(iter(c for c in commands if "--dry-run" in c)))
    assert "─" in out  # a table that fits is still a rich table


def test_terminal_table_falls_back_to_plain_when_nothing_fits(
    store_url: str, kek_uri: str, monkeypatch, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders-value", "cust-1")
    monkeypatch.setenv("COLUMNS", "30")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "keys", "list", "--store", store_url)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["KEY_ID", "DOMAIN", "DATA_SUBJECT"]  # the plain table


def test_keys_help_says_what_the_commands_do(capsys) -> None:
    def helped(*argv: str) -> str:
        assert main([*argv, "--help"]) == 0
        return " ".join(capsys.readouterr().out.split())

    rotate = helped("keys", "rotate")
    assert (
        "Without --data-subject: every active key of the domain, its domain-wide key and each data subject's key"
        in (rotate)
    )
    assert "rotate only this person's key in the domain (default: every active key of the domain)" in rotate
    listing = helped("keys", "list")
    assert "--state {active,retired,shredded,stored,all}" in listing
    assert "(default: all with --domain or --data-subject, else stored)" in listing
    shred = helped("keys", "shred")
    assert "it lists every key it will destroy (data subject, domain, key id) and asks you to type yes" in shred
    assert "list every key that would be destroyed (data subject, domain, key id); destroy nothing" in shred
    assert "the file to write (mode 0600; its directory must exist)" in helped("keys", "shred-log")


@pytest.mark.parametrize(
    "argv", [("-h", "keys"), ("--help", "schema"), ("--", "keys"), ("-", "scan"), ("bogus",), ("keys",)]
)
def test_the_top_level_lists_every_command_whatever_follows(capsys, argv: tuple[str, ...]) -> None:
    """A command line that does not begin with a command gets the whole command line (its help or its error lists
    every command), although one that does imports that command's module alone."""
    code, out, err = run(capsys, *argv)
    text = out + err
    if argv == ("keys",):
        assert code == 0 and "shred" in text  # the keys help
        return
    for command in ("keys", "schema", "verify", "scan", "dev"):
        assert command in text, (argv, text)
