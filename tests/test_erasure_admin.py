"""Issue #8: erasure and key operations do exactly what was asked (API and CLI, SQLite and PostgreSQL).

Stores are created explicitly and never by a typo; a shred refuses empty, blank or mistyped targets and destroys
nothing then; it asks before destroying; it leaves per-person evidence; secrets in store URLs never show; forged
ids cannot draw rows in tables; a torn shred-log line is a clear error with a recovery; a reader that holds the
SQLite WAL makes a shred "pending", never silently done.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import sqlite3
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import customer, load_schema, value_ctx
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import ConfigurationError, FakeClock, Keyring, KeyStoreUnavailableError
from fieldcrypt.cli import main
from fieldcrypt.errors import format_key_id
from fieldcrypt.keys.admin import KeyAdmin
from fieldcrypt.keys.store import redact_url

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}

KEY_ID = re.compile(r"^0x[0-9a-f]{8}$")
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


# -- helpers ---------------------------------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def pg_tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {str(r[0]) for r in rows}


def drop_table(url: str, table: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        db = sqlite3.connect(path)
        db.execute(f"DROP TABLE {table}")
        db.commit()
        db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")


def state(kr: Keyring) -> tuple[list[int], list[int]]:
    """What a refused shred must leave as it was: every key id, and the shred log."""
    return sorted(k.key_id for k in kr.keys()), sorted(r.key_id for r in kr.export_shred_log())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_json_convention(value: Any) -> None:
    """Key ids as 0x + 8 hex digits, times as ISO-8601 with an offset, lists as JSON arrays, everywhere."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "key_id":
                assert isinstance(v, str) and KEY_ID.match(v), (k, v)
            elif k in ("key_ids", "destroyed_again"):
                assert isinstance(v, list), (k, v)
                assert all(isinstance(x, str) and KEY_ID.match(x) for x in v), (k, v)
            elif k == "at" or k.endswith("_at"):  # null: not applicable (a live key's shredded_at)
                assert v is None or isinstance(v, str), (k, v)
                assert v is None or datetime.fromisoformat(v).tzinfo is not None, (k, v)
            elif k == "data_subjects":
                assert isinstance(v, list), (k, v)
            check_json_convention(v)
    elif isinstance(value, list):
        for item in value:
            check_json_convention(item)


class FakeTty:
    """A terminal on stdin that answers the confirmation prompt."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked = 0

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        self.asked += 1
        return self.answer


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# -- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(params=sorted(STORES))
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL nobody has created yet (SQLite: no file; PostgreSQL: an empty schema)."""
    with STORES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def store_url(fresh_url: str) -> str:
    """Overrides conftest's: the same tests on SQLite and PostgreSQL."""
    return fieldcrypt.create_key_store(fresh_url)


# -- 1. explicit creation --------------------------------------------------------------------------------------------
def test_missing_store_is_refused_and_never_created(fresh_url: str, kek_uri: str, capsys) -> None:
    with pytest.raises(ConfigurationError, match="fieldcrypt keys init"):
        Keyring(fresh_url, kek_uri)
    code, _, err = run(
        capsys, "keys", "shred", "--data-subject", "cust-001", "--store", fresh_url, "--reason", "r", "--yes"
    )
    assert code == 3 and "keys init" in err
    code, _, err = run(capsys, "keys", "list", "--store", fresh_url)
    assert code == 3 and "keys init" in err
    path = sqlite_path(fresh_url)
    if path is not None:
        assert not path.exists() and list(path.parent.iterdir()) == [path.parent / "kek.json"]
    else:
        assert pg_tables(fresh_url) == set()


def test_mistyped_relative_sqlite_path_in_the_cli_creates_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(
        capsys, "keys", "shred", "--data-subject", "cust-001", "--store", "sqlite:///typo.db", "--reason", "r", "--yes"
    )
    assert code == 3 and "fieldcrypt keys init" in err
    assert list(tmp_path.iterdir()) == []


def test_keys_init_creates_is_private_and_idempotent(fresh_url: str, kek_uri: str, capsys) -> None:
    with umask(0):  # the mode must not depend on the umask
        code, out, _ = run(capsys, "keys", "init", "--store", fresh_url, "--json")
        assert code == 0 and json.loads(out)["initialized"] is True
        path = sqlite_path(fresh_url)
        if path is not None:
            assert mode(path) == 0o600
        with Keyring(fresh_url, kek_uri) as kr:
            made = kr.encryption_key("orders-value", "cust-1")
            kr.keys()
            if path is not None:  # while in use: the WAL and its index are no wider than the database
                for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                    assert side.exists() and mode(side) & 0o177 == 0, (side, oct(mode(side)))
        code, _, _ = run(capsys, "keys", "init", "--store", fresh_url)
    assert code == 0
    with Keyring(fresh_url, kek_uri) as kr:
        assert [k.key_id for k in kr.keys()] == [made.key_id]
        assert kr.decryption_key(made.key_id).key_id == made.key_id
        # KEK recorded; the store's pseudonym key made (for cust-1's key); branch; key
        assert [e.operation for e in kr.audit()] == ["kek-map", "pseudonymize", "create", "create"]


def test_existing_non_sqlite_file_is_refused_and_left_alone(tmp_path: Path, capsys) -> None:
    kek_file = tmp_path / "kek.json"
    uri = fieldcrypt.create_local_kek(kek_file)
    before = kek_file.read_bytes()
    url = f"sqlite:///{kek_file}"
    with pytest.raises(ConfigurationError):
        Keyring(url, uri)
    with pytest.raises(ConfigurationError):
        fieldcrypt.create_key_store(url)
    code, _, _ = run(capsys, "keys", "init", "--store", url)
    assert code == 3
    assert kek_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek.json"]
    fieldcrypt.open_kek(uri)  # still a working KEK


def test_store_missing_a_table_needs_an_upgrade_and_init_fixes_it(store_url: str, kek_uri: str, capsys) -> None:
    with Keyring(store_url, kek_uri) as kr:
        made = kr.encryption_key("orders-value", "cust-1")
    drop_table(store_url, "fieldcrypt_policies")
    with pytest.raises(ConfigurationError, match="upgrade") as caught:
        Keyring(store_url, kek_uri)
    assert "fieldcrypt keys init" in str(caught.value)
    code, _, err = run(capsys, "keys", "list", "--store", store_url)
    assert code == 3 and "upgrade" in err
    code, _, _ = run(capsys, "keys", "init", "--store", store_url)
    assert code == 0
    with Keyring(store_url, kek_uri) as kr:
        assert [k.key_id for k in kr.keys()] == [made.key_id]
        assert kr.publish_policy("fp", "{}") == "{}"  # the upgraded table is there


# -- 2. shred input validation ---------------------------------------------------------------------------------------
@pytest.fixture
def populated(keyring: Keyring) -> Keyring:
    for person in ("1", "2", "x", "cust-1"):
        keyring.encryption_key("orders-value", person)
    keyring.encryption_key("orders-value")
    keyring.encryption_key("D", "cust-1")
    return keyring


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda kr: kr.shred_person(""), id="person-empty"),
        pytest.param(lambda kr: kr.shred_person("  "), id="person-blank"),
        pytest.param(lambda kr: kr.shred_person(None), id="person-None"),
        pytest.param(lambda kr: kr.shred_persons("12"), id="persons-str"),
        pytest.param(lambda kr: kr.shred_persons({"1": "x", "2": "y"}), id="persons-mapping"),
        pytest.param(lambda kr: kr.shred_persons(b"12"), id="persons-bytes"),
        pytest.param(lambda kr: kr.shred_persons([]), id="persons-empty-list"),
        pytest.param(lambda kr: kr.shred_persons(iter([])), id="persons-empty-iterator"),
        pytest.param(lambda kr: kr.shred_persons(["a", ""]), id="persons-one-empty"),
        pytest.param(lambda kr: kr.shred_persons(["1", None]), id="persons-one-None"),
        pytest.param(lambda kr: kr.shred_domain(""), id="domain-empty"),
        pytest.param(lambda kr: kr.shred_domain(" \t"), id="domain-blank"),
        pytest.param(lambda kr: kr.shred_domain(None), id="domain-None"),
        pytest.param(lambda kr: kr.shred_person("x", domain=""), id="person-in-empty-domain"),
        pytest.param(lambda kr: kr.shred_persons(["x"], domain=" "), id="persons-in-blank-domain"),
        pytest.param(lambda kr: kr.shred_person("x", dry_run=False, reason=None), id="reason-None"),
    ],
)
def test_api_refuses_shred_targets_and_destroys_nothing(populated: Keyring, call: Any) -> None:
    before = state(populated)
    audit_before = len(populated.audit())
    with pytest.raises(ConfigurationError):
        call(populated)
    assert state(populated) == before and len(populated.audit()) == audit_before
    # "12" was not read as persons "1" and "2": both still hold their key
    assert len(populated.keys(person="1")) == 1 and len(populated.keys(person="2")) == 1


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--data-subject", ""], id="data-subject-empty"),
        pytest.param(["--data-subject", "   "], id="data-subject-blank"),
        pytest.param(["--domain", ""], id="domain-empty"),
        pytest.param(["--domain", "  "], id="domain-blank"),
        pytest.param(["--domain", "orders-value", "--data-subject", ""], id="domain-and-empty-subject"),
        pytest.param(["--domain", "", "--data-subject", "cust-1"], id="empty-domain-and-subject"),
        pytest.param(["--from-file", ""], id="from-file-empty-name"),
        pytest.param(["--from-file", "{empty}"], id="from-file-empty"),
        pytest.param(["--from-file", "{comments}"], id="from-file-comments-only"),
        pytest.param(["--from-file", "{missing}"], id="from-file-missing"),
        pytest.param(["--domain", "orders-value", "--from-file", "{comments}"], id="domain-and-comments-file"),
        pytest.param([], id="no-target"),
    ],
)
def test_cli_refuses_shred_targets_with_exit_2(
    populated: Keyring, store_url: str, tmp_path: Path, argv: list[str], capsys
) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "comments.txt").write_text("# erasure batch 12\n\n   \n  # nobody yet\n")
    files = {
        "{empty}": str(tmp_path / "empty.txt"),
        "{comments}": str(tmp_path / "comments.txt"),
        "{missing}": str(tmp_path / "nope.txt"),
    }
    before = state(populated)
    argv = [files.get(a, a) for a in argv]
    code, out, err = run(capsys, "keys", "shred", *argv, "--store", store_url, "--reason", "ticket 1", "--yes")
    assert code == 2, (out, err)
    assert state(populated) == before
    code, out, _ = run(capsys, "keys", "list", "--store", store_url, "--json", "--domain", "orders-value")
    assert code == 0 and len(json.loads(out)) == 5  # every key of the domain is still there


@pytest.mark.parametrize(
    "reason", [pytest.param(None, id="missing"), pytest.param("  ", id="blank"), pytest.param("", id="empty")]
)
def test_cli_shred_needs_a_reason(populated: Keyring, store_url: str, reason: str | None, capsys) -> None:
    before = state(populated)
    extra = [] if reason is None else ["--reason", reason]
    code, _, err = run(capsys, "keys", "shred", "--data-subject", "cust-1", "--store", store_url, "--yes", *extra)
    assert code == 2 and "reason" in err
    assert state(populated) == before


def _shred_cust_1(store_url: str, kek_uri: str) -> list[str]:
    """The command line of the confirmation tests: shred cust-1 (ticket 3)."""
    return ["keys", "shred", "--data-subject", "cust-1", "--store", store_url, "--kek", kek_uri, "--reason", "ticket 3"]


# -- 3. confirmation -------------------------------------------------------------------------------------------------
def test_shred_asks_for_confirmation(populated: Keyring, store_url: str, kek_uri: str, monkeypatch, capsys) -> None:
    ids = sorted(f"0x{k.key_id:08x}" for k in populated.keys(person="cust-1"))
    assert len(ids) == 2
    shred = _shred_cust_1(store_url, kek_uri)
    before = state(populated)

    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))  # piped "yes" is not a terminal
    code, _, err = run(capsys, *shred)
    assert code == 2 and "--yes" in err
    assert state(populated) == before

    code, out, _ = run(capsys, *shred, "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["dry_run"] is True and sorted(plan["key_ids"]) == ids and plan["destroyed"] == 2
    assert [(d["data_subject"], sorted(d["key_ids"])) for d in plan["data_subjects"]] == [("cust-1", ids)]
    assert plan["data_subjects"][0]["outcome"] != "erased"
    check_json_convention(plan)
    assert state(populated) == before

    refuse = FakeTty("no\n")
    monkeypatch.setattr("sys.stdin", refuse)
    code, _, err = run(capsys, *shred)
    assert code == 1 and refuse.asked == 1 and "nothing destroyed" in err
    assert state(populated) == before

    accept = FakeTty("yes\n")
    monkeypatch.setattr("sys.stdin", accept)
    code, out, err = run(capsys, *shred, "--json")
    assert code == 0 and accept.asked == 1 and "2 keys" in err  # the prompt says what will go
    assert sorted(json.loads(out)["key_ids"]) == ids
    assert populated.keys(person="cust-1") == []

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, _ = run(
        capsys, "keys", "shred", "--data-subject", "2", "--store", store_url, "--kek", kek_uri, "--reason", "t", "--yes"
    )
    assert code == 0 and populated.keys(person="2") == []
    assert len(populated.keys(person="1")) == 1


def on_tty(argv: list[str], answer: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI on a pseudo-terminal (stdin, stdout and stderr), typing ``answer`` once it asks ("...: ").
    Returns the exit code, what it printed before the answer, and everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on the terminal
        try:
            os.execvpe(sys.executable, [sys.executable, "-m", "fieldcrypt.cli", *argv], {**os.environ, **(env or {})})
        finally:
            os._exit(127)
    chunks: list[bytes] = []
    before: str | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        if before is None and text.endswith(": "):
            before = text
            os.write(fd, answer.encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return os.waitstatus_to_exitcode(status), before or "", text


def test_shred_confirmation_on_a_terminal_shows_the_plan(populated: Keyring, store_url: str, kek_uri: str) -> None:
    ids = {(k.domain, format_key_id(k.key_id)) for k in populated.keys(person="cust-1")}
    assert {d for d, _ in ids} == {"D", "orders-value"}
    shred = _shred_cust_1(store_url, kek_uri)
    code, asked, _ = on_tty(shred, "no")
    assert code == 1 and len(populated.keys(person="cust-1")) == 2
    lines = asked.splitlines()
    assert lines[0] == "This will destroy 2 keys of 1 data subject:"
    assert lines[1].split() == ["DATA_SUBJECT", "DOMAIN", "KEY_ID", "OUTCOME"]
    assert {(line.split()[1], line.split()[2]) for line in lines[2:4]} == ids  # every key, with its domain
    assert all(line.split()[0] == "cust-1" for line in lines[2:4])
    assert lines[4] == "This cannot be undone. Type 'yes' to destroy them: "
    assert "dry run" not in asked and "nothing destroyed" not in asked
    code, asked, everything = on_tty(shred, "yes")
    assert code == 0 and populated.keys(person="cust-1") == []
    assert asked.startswith("This will destroy 2 keys of 1 data subject:") and "2 keys destroyed" in everything
    # a whole domain: the domain-wide key is counted apart from the persons' keys
    code, asked, _ = on_tty(["keys", "shred", "--domain", "orders-value", "--store", store_url, "--reason", "t"], "no")
    assert code == 1 and asked.splitlines()[0] == "This will destroy 3 keys of 3 data subjects and 1 domain-wide key:"
    # nothing to destroy: it says so, and what 'yes' does then
    code, asked, _ = on_tty([*shred[:3], "nobody", *shred[4:]], "no")
    assert asked.splitlines()[0] == "data subject: no key to destroy; the shred records the request in the audit log:"
    assert asked.splitlines()[-1] == "Type 'yes' to record it: " and "no key held" in asked


@pytest.mark.parametrize("answer", ["YES", "Yes", " yes", "yes ", "y", "yes yes", "\tyes"])
def test_only_the_exact_answer_yes_destroys_on_a_terminal(
    populated: Keyring, store_url: str, kek_uri: str, answer: str
) -> None:
    before = state(populated)
    shred = _shred_cust_1(store_url, kek_uri)
    code, asked, everything = on_tty(shred, answer)
    assert asked.endswith("Type 'yes' to destroy them: ")
    assert code == 1 and "nothing destroyed" in everything[len(asked) :]
    assert state(populated) == before and len(populated.keys(person="cust-1")) == 2


@pytest.mark.parametrize(
    ("line", "destroys"),
    [("yes\n", True), ("yes\r\n", True), ("yes\r", True), ("yes", True), ("YES\n", False), (" yes\n", False),
     ("yes\n\n", False), ("yes\r\r\n", False), ("", False)],
)  # fmt: skip
def test_the_confirmation_removes_only_the_line_end(
    populated: Keyring, store_url: str, kek_uri: str, monkeypatch, capsys, line: str, destroys: bool
) -> None:
    before = state(populated)
    monkeypatch.setattr("sys.stdin", FakeTty(line))
    shred = ["keys", "shred", "--data-subject", "cust-1", "--store", store_url, "--kek", kek_uri, "--reason", "t"]
    code, _, err = run(capsys, *shred)
    if destroys:
        assert code == 0 and populated.keys(person="cust-1") == []
    else:
        assert code == 1 and "nothing destroyed" in err and state(populated) == before


def test_dry_run_lists_every_key_with_its_domain(populated: Keyring, store_url: str, kek_uri: str, capsys) -> None:
    ids = sorted((k.domain, format_key_id(k.key_id)) for k in populated.keys(person="cust-1"))
    args = ["keys", "shred", "--data-subject", "cust-1", "--store", store_url, "--kek", kek_uri, "--reason", "t"]
    args.append("--dry-run")
    code, out, _ = run(capsys, *args)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "data subject: would destroy 2 keys (dry run, nothing destroyed)"
    assert lines[1].split() == ["DATA_SUBJECT", "DOMAIN", "KEY_ID", "OUTCOME"]
    assert sorted((line.split()[1], line.split()[2]) for line in lines[2:]) == ids
    assert len(populated.keys(person="cust-1")) == 2


# -- 4. per-person evidence and the JSON convention ------------------------------------------------------------------
def test_batch_shred_evidence_per_person(store_url: str, kek_uri: str, tmp_path: Path, capsys) -> None:
    clock = FakeClock(T0)
    with Keyring(store_url, kek_uri, clock=clock) as kr:
        a1 = kr.encryption_key("orders-value", "cust-a").key_id
        a2 = kr.encryption_key("payments-value", "cust-a").key_id
        c1 = kr.encryption_key("orders-value", "cust-c").key_id
        other = kr.encryption_key("orders-value", "cust-z").key_id
        clock.advance(10)
        kr.shred_person("cust-c", reason="earlier request")
        ps = {
            p: kr._stored("orders-value", p) for p in ("cust-a", "cust-b", "cust-c", "cust-z")
        }  # as the store names them
        # a shred of a person names them by their pseudonyms in the domains where keys of theirs were destroyed
        pay = {p: kr._stored("payments-value", p) for p in ps}
        both = {p: f"{ps[p]} {pay[p]}" for p in ps}
    s = ["--store", store_url]
    kek = ["--kek", kek_uri]  # a data subject's pseudonym needs a KEK
    (tmp_path / "batch.txt").write_text("cust-a\ncust-b\n# comment\ncust-c\n")
    code, out, _ = run(
        capsys,
        "keys",
        "shred",
        "--from-file",
        str(tmp_path / "batch.txt"),
        *s,
        *kek,
        "--reason",
        "ticket 7",
        "--yes",
        "--json",
    )
    summary = json.loads(out)
    assert code == 0 and not summary["pending"] and summary["destroyed"] == 2
    check_json_convention(summary)
    got = [
        (d["data_subject"], d["outcome"], sorted(d["key_ids"]), d["previously_shredded"])
        for d in summary["data_subjects"]
    ]
    assert got == [
        ("cust-a", "erased", sorted([f"0x{a1:08x}", f"0x{a2:08x}"]), 0),
        ("cust-b", "no key held", [], 0),
        ("cust-c", "already erased", [], 1),
    ]
    assert sorted(summary["key_ids"]) == sorted([f"0x{a1:08x}", f"0x{a2:08x}"])

    code, out, _ = run(capsys, "keys", "audit", *s, "--json")
    everything = json.loads(out)
    check_json_convention(everything)
    batch = [e for e in everything if e["operation"] == "shred" and e["reason"] == "ticket 7"]
    assert [(e["data_subject"], sorted(e["key_ids"])) for e in batch] == [  # the whole log: pseudonyms
        (both["cust-a"], sorted([f"0x{a1:08x}", f"0x{a2:08x}"])),  # keys in both domains
        (ps["cust-b"], []),  # none anywhere: the first domain's pseudonym only (no link across domains)
        (ps["cust-c"], []),  # erased before, in one domain
    ]
    assert "no key held" in batch[1]["detail"] and "already erased" in batch[2]["detail"]
    for person in ("cust-a", "cust-b", "cust-c", "cust-z"):
        code, out, _ = run(capsys, "keys", "audit", *s, *kek, "--json", "--data-subject", person)
        mine = json.loads(out)
        # one person's entries name them as the caller gave them
        theirs = [
            {**e, "data_subject": person}
            for e in everything
            if e["data_subject"] in (ps[person], pay[person], both[person])
        ]
        assert code == 0 and mine == theirs and mine
    code, out, _ = run(capsys, "keys", "audit", *s, *kek, "--json", "--data-subject", "cust-c")
    assert [(e["operation"], e["key_ids"]) for e in json.loads(out)] == [
        ("create", [f"0x{c1:08x}"]),
        ("shred", [f"0x{c1:08x}"]),
        ("shred", []),
    ]
    code, out, _ = run(capsys, "keys", "audit", *s, "--json", "--operation", "shred")
    shreds = json.loads(out)
    assert [e["data_subject"] for e in shreds] == [ps["cust-c"], both["cust-a"], ps["cust-b"], ps["cust-c"]]
    assert all(e["operation"] == "shred" for e in shreds)

    later = datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() + 120, timezone.utc).isoformat()
    code, out, _ = run(capsys, "keys", "audit", *s, "--json", "--since", later)
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "keys", "audit", *s, "--json", "--since", "2023-11-14T22:13:25Z")
    assert code == 0 and json.loads(out) == shreds  # the creates at T0 are before; every shred is after
    code, out, _ = run(capsys, "keys", "audit", *s, "--json", "--since", "2023-11-14")
    assert code == 0 and json.loads(out) == everything
    for bad in ("yesterday", "2023-13-45", ""):
        code, _, err = run(capsys, "keys", "audit", *s, "--since", bad)
        assert code == 2 and "--since" in err, bad

    # the JSON convention, command by command
    code, out, _ = run(capsys, "keys", "list", *s, "--json")
    listed = json.loads(out)
    assert code == 0 and isinstance(listed, list) and [r["key_id"] for r in listed] == [f"0x{other:08x}"]
    check_json_convention(listed)
    for key_id in (f"0x{other:08x}", f"0x{a1:08x}"):  # held, and shredded
        code, out, _ = run(capsys, "keys", "show", key_id, *s, "--json")
        shown = json.loads(out)
        assert code == 0 and isinstance(shown, list) and shown[0]["key_id"] == key_id
        check_json_convention(shown)
    assert shown[0]["state"] == "shredded"
    log_file = tmp_path / "shreds.jsonl"
    code, _, _ = run(capsys, "keys", "shred-log", str(log_file), *s)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert code == 0 and sorted(r["key_id"] for r in lines) == sorted(f"0x{k:08x}" for k in (a1, a2, c1))
    # the file holds no id either: each key's row names its pseudonym in its domain
    assert {r["data_subject"] for r in lines} == {ps["cust-a"], pay["cust-a"], ps["cust-c"]}
    check_json_convention(lines)
    code, out, _ = run(capsys, "keys", "restore", "--shred-log", str(log_file), *s, "--json")
    assert code == 0
    check_json_convention(json.loads(out))


# -- 5. secrets ------------------------------------------------------------------------------------------------------
SECRETS = ("hunter2", "hunter3", "hunter4", "hunter5")


def no_secret(text: str) -> bool:
    return not any(s in text for s in SECRETS)


def test_redact_url_hides_every_secret() -> None:
    out = redact_url("postgresql://u:hunter2@h/db?password=hunter3&sslpassword=hunter4&sslmode=require")
    assert no_secret(out), out
    assert out.startswith("postgresql://u:") and "@h/db" in out and "sslmode=require" in out
    assert no_secret(redact_url("postgresql://u:hunter2@h/db"))
    assert no_secret(redact_url("postgresql://h/db?PASSWORD=hunter3"))
    assert no_secret(redact_url("host=h port=5432 user=u password=hunter5 dbname=db"))
    assert "hunter" not in redact_url("postgresql://u:hunter%32@h/db?password=hunter%33&sslpassword=hunter%34")


def test_unreachable_postgres_never_shows_its_secrets(kek_uri: str, capsys) -> None:
    pytest.importorskip("psycopg")
    from fieldcrypt.keys.postgres import PostgresKeyStore

    url = "postgresql://u:hunter2@127.0.0.1:1/db?password=hunter3&sslpassword=hunter4&connect_timeout=2"
    for opener in (lambda: PostgresKeyStore(url), lambda: Keyring(url, kek_uri, retries=0)):
        with pytest.raises(KeyStoreUnavailableError) as caught:
            opener()
        text = "".join(traceback.format_exception(caught.value))  # what a logger prints with exc_info
        assert no_secret(str(caught.value)) and no_secret(repr(caught.value)) and no_secret(text), text
        assert "127.0.0.1" in str(caught.value)
    for argv in (
        ["keys", "list"],
        ["keys", "init"],
        ["keys", "shred", "--data-subject", "p", "--reason", "r", "--yes"],
    ):
        code, out, err = run(capsys, *argv, "--store", url)
        assert code == 4 and no_secret(out + err), err


def test_malformed_postgres_url_never_shows_its_secrets(kek_uri: str, capsys) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://u:hunter2@[::1/db?password=hunter3"  # the driver's own message quotes such a URL
    with pytest.raises(fieldcrypt.FieldcryptError) as caught:
        Keyring(url, kek_uri, retries=0)
    text = "".join(traceback.format_exception(caught.value))
    assert no_secret(str(caught.value)) and no_secret(repr(caught.value)) and no_secret(text), text
    code, out, err = run(capsys, "keys", "list", "--store", url)
    assert code in (3, 4) and no_secret(out + err), err


def test_libpq_key_value_string_is_not_echoed(kek_uri: str, capsys) -> None:
    dsn = "host=127.0.0.1 port=1 user=u password=hunter5 dbname=db"
    with pytest.raises(ConfigurationError) as caught:
        Keyring(dsn, kek_uri)
    assert no_secret(str(caught.value)) and no_secret(repr(caught.value))
    code, out, err = run(capsys, "keys", "list", "--store", dsn)
    assert code == 3 and no_secret(out + err), err


def test_a_reachable_store_with_a_password_does_not_show_it(kek_uri: str, capsys) -> None:
    with pg_schema_url() as base:
        scheme, rest = base.split("://", 1)
        user, host = rest.split("@", 1)
        url = f"{scheme}://{user.split(':')[0]}:hunter2@{host}&password=hunter3&sslpassword=hunter4"
        code, out, err = run(capsys, "keys", "init", "--store", url)
        assert code == 0 and no_secret(out + err), out
        with Keyring(url, kek_uri) as kr:
            kr.encryption_key("orders-value", "cust-1")
            assert no_secret(repr(kr)) and no_secret(repr(kr.store)), repr(kr)
        code, out, err = run(capsys, "keys", "list", "--store", url, "--json")
        assert code == 0 and no_secret(out + err)


# -- 6. forged text from producers -----------------------------------------------------------------------------------
FORGED = "evil\nFAKE  0xdeadbeef  orders-value  cust-9\x1b[2J\x1b[31m\u202eflip\rback\u2028sep\\"


def printable_lines(text: str) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    for line in lines:
        assert line.isprintable(), repr(line)
    return lines


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_forged_data_subject_cannot_draw_rows(
    registry, keyring: Keyring, store_url: str, kek_uri: str, fmt: str, capsys
) -> None:
    if fmt == "avro":
        from fieldcrypt.avro import AvroSerializer

        ser: Any = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    else:
        from fieldcrypt.json_schema import JSONSerializer

        ser = JSONSerializer(load_schema("customer_event.schema.json"), registry, keyring=keyring)
    for rec in (customer(1, customerId=FORGED), customer(2)):
        rec["purchaseAmount"] = float(rec["purchaseAmount"])
        ser(rec, value_ctx())
    assert {k.person for k in keyring.keys()} == {
        keyring._stored("orders-value", FORGED),
        keyring._stored("orders-value", "cust-2"),
    }
    s = ["--store", store_url]
    kek = ["--kek", kek_uri]  # a data subject's pseudonym needs a KEK

    code, out, _ = run(capsys, "keys", "list", *s)
    assert code == 0 and len(printable_lines(out)) == 1 + 2
    code, out, _ = run(capsys, "keys", "list", *s, *kek, "--json", "--data-subject", FORGED)
    assert [r["data_subject"] for r in json.loads(out)] == [FORGED]

    code, out, _ = run(
        capsys, "keys", "shred", "--data-subject", FORGED, *s, *kek, "--reason", "forged\x1b[2J", "--yes"
    )
    assert code == 0
    printable_lines(out)
    code, out, _ = run(capsys, "keys", "audit", *s)
    assert code == 0 and len(printable_lines(out)) == 1 + len(keyring.audit())
    code, out, _ = run(capsys, "keys", "audit", *s, *kek, "--json", "--data-subject", FORGED)
    entries = json.loads(out)
    assert [e["operation"] for e in entries] == ["create", "shred"]
    assert all(e["data_subject"] == FORGED for e in entries) and entries[1]["reason"] == "forged\x1b[2J"


# -- 7. a torn shred log ---------------------------------------------------------------------------------------------
def test_torn_shred_log_is_a_clear_error_with_a_recovery(store_url: str, kek_uri: str, tmp_path: Path, capsys) -> None:
    log_file = tmp_path / "shred.jsonl"
    with umask(0), Keyring(store_url, kek_uri, shred_log=log_file) as kr:
        for p in ("cust-1", "cust-2", "cust-3"):
            kr.encryption_key("orders-value", p)
            kr.shred_person(p, reason="r")
        kr.encryption_key("orders-value", "cust-4")
        assert mode(log_file) == 0o600
    lines = log_file.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    log_file.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # the last write was cut short

    with pytest.raises(ConfigurationError) as caught:
        Keyring(store_url, kek_uri, shred_log=log_file)
    assert not isinstance(caught.value, json.JSONDecodeError)
    assert "line 3" in str(caught.value) and "fieldcrypt keys shred-log" in str(caught.value)
    code, _, err = run(capsys, "keys", "restore", "--shred-log", str(log_file), "--store", store_url)
    assert code == 3 and "line 3" in err and "fieldcrypt keys shred-log" in err

    with umask(0):
        code, _, err = run(capsys, "keys", "shred-log", str(log_file), "--store", store_url)
        assert code == 3 and "--force" in err  # never overwritten without asking
        code, _, _ = run(capsys, "keys", "shred-log", str(log_file), "--store", store_url, "--force")
        assert code == 0 and mode(log_file) == 0o600
        code, _, _ = run(capsys, "keys", "shred-log", str(tmp_path / "new.jsonl"), "--store", store_url)
        assert code == 0 and mode(tmp_path / "new.jsonl") == 0o600
    assert len([json.loads(line) for line in log_file.read_text().splitlines()]) == 3
    with Keyring(store_url, kek_uri, shred_log=log_file) as kr:
        assert len(kr.keys(person="cust-4")) == 1  # started, and destroyed nothing more


def test_old_format_shred_log_lines_are_still_read(store_url: str, kek_uri: str, tmp_path: Path) -> None:
    with Keyring(store_url, kek_uri) as kr:
        old = kr.encryption_key("orders-value", "cust-1").key_id
        kept = kr.encryption_key("orders-value", "cust-2").key_id
    log_file = tmp_path / "old.jsonl"
    log_file.write_text(
        json.dumps({"key_id": old, "domain": "orders-value", "person": "cust-1", "at": T0 + 0.5}) + "\n\n"
    )
    with Keyring(store_url, kek_uri, shred_log=log_file) as kr:  # re-applied at startup
        assert [k.key_id for k in kr.keys()] == [kept]
        [gone] = kr.export_shred_log()
        # a line written before pseudonyms names the id: it is hashed as it is applied
        assert (gone.key_id, gone.person, gone.shredded_at) == (old, kr._stored("orders-value", "cust-1"), T0 + 0.5)


def test_shred_log_into_a_missing_directory_is_a_configuration_error(
    store_url: str, kek_uri: str, tmp_path: Path, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders-value", "cust-1")
        kr.shred_person("cust-1", reason="r")
    missing = tmp_path / "mnt" / "shred-log"
    for extra in ([], ["--force"]):
        code, out, err = run(
            capsys, "keys", "shred-log", str(missing / "shred-log.jsonl"), "--store", store_url, *extra
        )
        assert code == 3 and f"directory {str(missing)!r} does not exist" in err, err
        assert ".tmp" not in err and "Errno" not in err and out == ""
    code, out, _ = run(capsys, "keys", "shred-log", str(missing / "shred-log.jsonl"), "--store", store_url, "--json")
    assert code == 3 and json.loads(out)["error"]["exit_code"] == 3 and ".tmp" not in out
    code, _, err = run(capsys, "keys", "shred-log", str(tmp_path), "--store", store_url, "--force")
    assert code == 3 and "is a directory" in err
    assert not missing.exists() and not list(tmp_path.glob(".*.tmp"))


def test_restore_from_a_missing_shred_log_is_a_configuration_error(store_url: str, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "mnt" / "shred-log.jsonl"
    code, _, err = run(capsys, "keys", "restore", "--shred-log", str(missing), "--store", store_url)
    assert code == 3 and f"shred log {str(missing)!r} cannot be read: No such file or directory" in err
    assert "Errno" not in err


def test_shred_log_write_failure_names_the_file_not_its_temporary(
    store_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    target = tmp_path / "shred-log.jsonl"

    def full(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr("fieldcrypt.keys.shredlog.os.replace", full)
    code, _, err = run(capsys, "keys", "shred-log", str(target), "--store", store_url)
    assert code == 3 and f"cannot write the shred log {str(target)!r}: No space left on device" in err
    assert ".tmp" not in err and not target.exists() and not list(tmp_path.glob(".*.tmp"))


def test_kek_create_write_failure_names_the_file_not_its_temporary(tmp_path: Path, monkeypatch, capsys) -> None:
    def denied(**kw: Any) -> Any:
        raise PermissionError(13, "Permission denied", f"{kw['dir']}/{kw['prefix']}x1y2.tmp")

    monkeypatch.setattr("fieldcrypt.keys.kek.tempfile.mkstemp", denied)
    code, _, err = run(capsys, "kek", "create", str(tmp_path / "kek.json"))
    assert code == 3 and f"cannot write the KEK file {str(tmp_path / 'kek.json')!r}: Permission denied" in err
    assert ".tmp" not in err
    code, _, err = run(capsys, "kek", "create", str(tmp_path / "no" / "kek.json"))
    assert code == 3 and f"directory {str(tmp_path / 'no')!r}" in err


@pytest.fixture
def one_shred(store_url: str, kek_uri: str) -> str:
    """A store whose shred log holds one entry."""
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders-value", "cust-1")
        kr.shred_person("cust-1", reason="r")
    return store_url


def leftovers(*dirs: Path) -> list[Path]:
    return [f for d in dirs for f in d.glob(".*.tmp")]


def test_shred_log_force_writes_through_a_symlink(one_shred: str, kek_uri: str, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other-storage"
    other.mkdir()
    target, link = other / "shred-log.jsonl", tmp_path / "shred-log.jsonl"
    target.write_text("old content\n")
    link.symlink_to(target)
    code, _, err = run(capsys, "keys", "shred-log", str(link), "--store", one_shred)
    assert code == 3 and "already exists" in err and "--force" in err  # the target exists: never without asking
    with umask(0):
        code, _, err = run(capsys, "keys", "shred-log", str(link), "--store", one_shred, "--force")
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays a link
    entries = [json.loads(line) for line in target.read_text().splitlines()]
    with Keyring(one_shred, kek_uri) as kr:
        pseudonym = kr._stored("orders-value", "cust-1")  # the shred-log file names data subjects by pseudonyms
    assert [e["data_subject"] for e in entries] == [pseudonym] and mode(target) == 0o600
    assert not leftovers(tmp_path, other)
    # a dangling link is written through (its target created), not replaced
    target.unlink()
    code, _, err = run(capsys, "keys", "shred-log", str(link), "--store", one_shred)
    assert code == 0, err
    assert link.is_symlink() and len(target.read_text().splitlines()) == 1 and mode(target) == 0o600
    # a link to a link: the last target
    chain = tmp_path / "chain.jsonl"
    chain.symlink_to(link)
    code, _, err = run(capsys, "keys", "shred-log", str(chain), "--store", one_shred, "--force")
    assert code == 0 and chain.is_symlink() and link.is_symlink() and len(target.read_text().splitlines()) == 1


def test_shred_log_through_a_dangling_symlink_into_a_missing_directory(one_shred: str, tmp_path: Path, capsys) -> None:
    link = tmp_path / "shred-log.jsonl"
    link.symlink_to(tmp_path / "unmounted" / "shred-log.jsonl")
    for extra in ([], ["--force"]):
        code, out, err = run(capsys, "keys", "shred-log", str(link), "--store", one_shred, *extra)
        assert code == 3 and out == "" and "Traceback" not in err
        assert f"directory {str(tmp_path / 'unmounted')!r} does not exist" in err and "symbolic link" in err
    assert link.is_symlink() and not (tmp_path / "unmounted").exists() and not leftovers(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = run(capsys, "keys", "shred-log", str(loop), "--store", one_shred, "--force")
    assert code == 3 and "symbolic link that cannot be followed" in err and loop.is_symlink()


def test_kek_create_force_writes_through_a_symlink(tmp_path: Path, capsys) -> None:
    other = tmp_path / "secrets"
    other.mkdir()
    target, link = other / "kek.json", tmp_path / "kek.json"
    target.write_text("old keyset\n")
    link.symlink_to(target)
    code, _, err = run(capsys, "kek", "create", str(link))
    assert code == 3 and "already exists" in err and target.read_text() == "old keyset\n"
    code, out, err = run(capsys, "kek", "create", str(link), "--force")
    assert code == 0, err
    assert out.strip() == f"local-kek://{link}"  # the URI names the link, as given
    assert link.is_symlink() and os.readlink(link) == str(target) and mode(target) == 0o600
    assert fieldcrypt.open_kek(out.strip()).uri == out.strip() and "old keyset" not in target.read_text()
    assert not leftovers(tmp_path, other)
    target.unlink()  # dangling: its target is created
    code, out, err = run(capsys, "kek", "create", str(link))
    assert code == 0 and link.is_symlink() and target.is_file() and mode(target) == 0o600, err
    dangling = tmp_path / "elsewhere.json"
    dangling.symlink_to(tmp_path / "unmounted" / "kek.json")
    code, _, err = run(capsys, "kek", "create", str(dangling), "--force")
    assert code == 3 and f"directory {str(tmp_path / 'unmounted')!r}" in err and "does not exist" in err
    assert dangling.is_symlink() and not (tmp_path / "unmounted").exists()


@pytest.mark.parametrize("path", ["", " ", "-"])
def test_empty_or_stdout_file_arguments_are_usage_errors(
    one_shred: str, tmp_path: Path, monkeypatch, capsys, path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    code, out, err = run(capsys, "keys", "shred-log", path, "--store", one_shred)
    what = "is not written to standard output ('-')" if path == "-" else "the path of the shred log is empty"
    assert code == 2 and out == "" and what in err, err
    code, _, err = run(capsys, "kek", "create", path, "--force")
    what = "is not written to standard output ('-')" if path == "-" else "the path of the KEK file is empty"
    assert code == 2 and what in err, err
    if path != "-":
        code, _, err = run(capsys, "keys", "restore", "--shred-log", path, "--store", one_shred)
        assert code == 2 and "--shred-log is empty" in err, err
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no file named '-'


def test_the_api_refuses_an_empty_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="the path of the shred log is empty"):
        fieldcrypt.keys.shredlog.write("", [], overwrite=True)
    with pytest.raises(ConfigurationError, match="the path of the KEK file is empty"):
        fieldcrypt.create_local_kek("", overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_restore_of_an_empty_shred_log_warns(one_shred: str, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "copy.jsonl"
    empty.write_text("")
    code, out, err = run(capsys, "keys", "restore", "--shred-log", str(empty), "--store", one_shred)
    assert code == 0 and out.strip() == "0 shred-log entries applied; 0 restored keys destroyed again"
    assert f"warning: the shred log {str(empty)!r} is empty (0 entries)" in err and "truncated" in err
    code, out, err = run(capsys, "keys", "restore", "--shred-log", str(empty), "--store", one_shred, "--json")
    assert code == 0 and json.loads(out)["applied"] == 0 and "is empty" in err
    full = tmp_path / "full.jsonl"
    run(capsys, "keys", "shred-log", str(full), "--store", one_shred)
    code, _, err = run(capsys, "keys", "restore", "--shred-log", str(full), "--store", one_shred)
    assert code == 0 and "warning" not in err


def test_configured_shred_log_in_a_missing_directory_destroys_nothing(
    store_url: str, kek_uri: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    log_file = tmp_path / "mnt" / "shred-log.jsonl"
    with Keyring(store_url, kek_uri, shred_log=log_file) as kr:
        kr.encryption_key("orders-value", "cust-1")
        before = state(kr)
        with pytest.raises(ConfigurationError, match=r"directory .*mnt'? does not exist; nothing was destroyed"):
            kr.shred_person("cust-1", reason="r")
        assert state(kr) == before
    monkeypatch.setenv("FIELDCRYPT_SHRED_LOG", str(log_file))
    shred = ["keys", "shred", "--data-subject", "cust-1", "--reason", "r", "--yes", "--store", store_url]
    code, _, err = run(capsys, *shred, "--kek", kek_uri)
    assert code == 3 and "nothing was destroyed" in err and ".tmp" not in err
    with Keyring(store_url, kek_uri) as kr:
        assert state(kr) == before
    # a symbolic link to a file in a missing directory (storage not mounted): the same, before anything is destroyed
    link = tmp_path / "shred-log.jsonl"
    link.symlink_to(log_file)
    with Keyring(store_url, kek_uri, shred_log=link) as kr:
        with pytest.raises(ConfigurationError, match=r"directory .*mnt'? does not exist; nothing was destroyed"):
            kr.shred_person("cust-1", reason="r")
        assert state(kr) == before and link.is_symlink()


def test_shred_log_append_failure_says_the_keys_are_destroyed(
    store_url: str, kek_uri: str, tmp_path: Path, monkeypatch
) -> None:
    log_file = tmp_path / "shred-log.jsonl"

    def broken(path: Any, entries: Any) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr("fieldcrypt.keys.shredlog.append", broken)
    with Keyring(store_url, kek_uri, shred_log=log_file) as kr:
        kr.encryption_key("orders-value", "cust-1")
        with pytest.raises(ConfigurationError) as caught:
            kr.shred_person("cust-1", reason="r")
        assert "1 key destroyed, but the shred log" in str(caught.value)
        assert f"fieldcrypt keys shred-log {log_file} --force" in str(caught.value)
        assert kr.keys(person="cust-1") == [] and len(kr.export_shred_log()) == 1  # the truth: it is gone


# -- 9. rotating a whole domain -------------------------------------------------------------------------------------
PERSONS = [f"cust-{i}" for i in range(5)]


def per_person_domain(kr: Keyring) -> dict[str | None, int]:
    """A domain with a domain-wide key and five persons' keys, and another domain: the active key id of each."""
    ids: dict[str | None, int] = {None: kr.encryption_key("orders-value").key_id}
    for p in PERSONS:
        ids[p] = kr.encryption_key("orders-value", p).key_id
    kr.encryption_key("payments-value", "cust-0")
    return ids


def test_rotate_domain_rotates_every_key_a_page_at_a_time(store_url: str, kek_uri: str, monkeypatch) -> None:
    monkeypatch.setattr("fieldcrypt.keys.admin._ROTATE_PAGE", 2)
    with Keyring(store_url, kek_uri) as kr:
        before = per_person_domain(kr)
        other = kr.keys("payments-value")
        pages: list[str | None] = []
        read = kr.store.active_keys

        def spy(domain: str, after: str | None = None, limit: int = 500) -> list[fieldcrypt.KeyRecord]:
            assert limit == 2
            pages.append(after)
            return read(domain, after, limit)

        monkeypatch.setattr(kr.store, "active_keys", spy)
        seen: list[int] = []
        report = kr.rotate_domain("orders-value", reason="scheduled rotation", progress=lambda n, t: seen.append(n))
        done = report.rotated
        assert report.skipped == () and report.domain == "orders-value"
        # a whole domain's report names data subjects by pseudonyms, in their order (the store's)
        order = [None, *sorted(PERSONS, key=lambda p: kr._stored("orders-value", p) or "")]
        stored = [kr._stored("orders-value", p) for p in order]
        assert pages == [None, stored[1], stored[3], stored[5]]  # never the whole domain in one read
        assert [(r.person, r.retired, r.version) for r in done] == [
            (kr._stored("orders-value", p), before[p], 2) for p in order
        ]
        assert seen == [1, 2, 3, 4, 5, 6]
        after = {k.person: k for k in kr.keys("orders-value") if k.state == "active"}
        assert {p: k.key_id for p, k in after.items()} == {r.person: r.key_id for r in done}
        assert all(k.version == 2 for k in after.values()) and not set(before.values()) & {r.key_id for r in done}
        assert {k.key_id for k in kr.keys("orders-value") if k.state == "retired"} == set(before.values())
        assert kr.keys("payments-value") == other  # another domain is left alone
        rotations = kr.audit(operation="rotate")
        assert len(rotations) == 6 and all(e.reason == "scheduled rotation" for e in rotations)
        assert sorted((e.person, e.key_ids) for e in rotations if e.person) == [
            (r.person, (r.retired, r.key_id)) for r in done[1:]
        ]
        assert (
            kr.encryption_key("orders-value", "cust-3").key_id == after[kr._stored("orders-value", "cust-3")].key_id
        )  # used now
        assert kr.rotate_domain("nowhere") == fieldcrypt.RotationReport("nowhere", (), ())


def test_cli_rotate_without_data_subject_rotates_the_whole_domain(
    store_url: str, kek_uri: str, monkeypatch, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        before = per_person_domain(kr)
        stored = sorted(
            kr._stored("orders-value", p) or "" for p in PERSONS
        )  # a whole domain's report names pseudonyms
    rotate = ["keys", "rotate", "--domain", "orders-value", "--store", store_url, "--kek", kek_uri]
    code, out, err = run(capsys, *rotate, "--reason", "scheduled rotation")
    assert code == 0, err
    assert out.splitlines()[0] == (
        "6 active keys of domain 'orders-value' rotated (the domain-wide key and 5 data subjects' keys); "
        "each rotation is in the audit log"
    )
    assert "RETIRED_KEY_ID" in out and all(format_key_id(k) in out for k in before.values())
    code, out, _ = run(capsys, *rotate, "--reason", "again", "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["rotated"], summary["data_subject_keys"], summary["domain"]) == (6, 5, "orders-value")
    assert [(k["data_subject"], k["version"]) for k in summary["keys"]] == [(p, 3) for p in [None, *stored]]
    check_json_convention(summary)
    # one person's key only, as before
    code, out, _ = run(capsys, *rotate, "--data-subject", "cust-1", "--json")
    assert code == 0 and json.loads(out)[0]["version"] == 4
    # nothing to rotate: exit 5, and a message that says so
    code, _, err = run(capsys, "keys", "rotate", "--domain", "nowhere", "--store", store_url, "--kek", kek_uri)
    assert code == 5 and "no active key in domain 'nowhere': nothing rotated" in err
    code, _, err = run(capsys, *rotate, "--data-subject", "nobody")
    assert code == 5 and "no active key of this data subject in domain 'orders-value'" in err
    # a failure midway says how many were rotated before it (they stay rotated, and audited)
    real = KeyAdmin._rotate_key
    calls: list[int] = []

    def flaky(self: KeyAdmin, *a: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyStoreUnavailableError("KEK 'local-kek:///x' is unavailable; it could not wrap a new data key")
        return real(self, *a, **kw)

    monkeypatch.setattr(KeyAdmin, "_rotate_key", flaky)
    code, _, err = run(capsys, *rotate, "--reason", "r")
    assert code == 4 and "2 active keys of domain 'orders-value' were rotated before the error below" in err


# -- 10. shredded keys stay visible ---------------------------------------------------------------------------------
def test_keys_list_shows_a_shredded_persons_keys_as_shredded(store_url: str, kek_uri: str, capsys) -> None:
    clock = FakeClock(T0)
    with Keyring(store_url, kek_uri, clock=clock) as kr:
        gone = [kr.encryption_key("orders-value", "cust-1001").key_id]
        gone.append(kr.rotate("orders-value", "cust-1001").key_id)  # type: ignore[union-attr]
        gone.append(kr.encryption_key("payments-value", "cust-1001").key_id)
        kept = kr.encryption_key("orders-value", "cust-2").key_id
        clock.advance(60)
        kr.shred_person("cust-1001", reason="erasure request 7")
        assert [r.key_id for r in kr.shredded_keys(person="cust-1001")] == sorted(gone[:2]) + gone[2:]
        ps = {p: kr._stored("orders-value", p) for p in ("cust-1001", "cust-2")}  # as listings of everyone name them
    s = ["--store", store_url]
    kek = ["--kek", kek_uri]  # a data subject's pseudonym needs a KEK
    code, out, _ = run(capsys, "keys", "list", "--data-subject", "cust-1001", *s, *kek)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "KEY_ID", "DOMAIN", "DATA_SUBJECT", "VERSION", "STATE", "RESERVED", "KEK", "CREATED_AT", "SHREDDED_AT"
    ]  # fmt: skip
    assert len(lines) == 4 and all(" shredded " in line and "2023-11-14T22:14:20+00:00" in line for line in lines[1:])
    assert {format_key_id(k) for k in gone} == {line.split()[0] for line in lines[1:]}
    code, out, _ = run(capsys, "keys", "list", "--data-subject", "cust-1001", *s, *kek, "--json")
    rows = json.loads(out)
    check_json_convention(rows)
    assert [(r["state"], r["version"], r["created_at"]) for r in rows] == [("shredded", None, None)] * 3
    assert rows[0]["shredded_at"] == "2023-11-14T22:14:20+00:00"
    code, out, _ = run(capsys, "keys", "list", "--domain", "orders-value", *s, "--json")  # a domain: every state
    assert [(r["data_subject"], r["state"]) for r in json.loads(out)] == [
        (ps["cust-2"], "active"),
        (ps["cust-1001"], "shredded"),
        (ps["cust-1001"], "shredded"),
    ]
    code, out, _ = run(capsys, "keys", "list", "--data-subject", "cust-1001", "--state", "stored", *s, *kek)
    assert code == 0 and out.strip() == "(none)"
    code, out, _ = run(capsys, "keys", "list", *s)  # the whole store: the keys it holds, by default
    assert [line.split()[0] for line in out.splitlines()[1:]] == [format_key_id(kept)] and "SHREDDED_AT" not in out
    code, out, _ = run(capsys, "keys", "list", "--state", "all", *s, "--json")
    assert sorted(r["key_id"] for r in json.loads(out)) == sorted(format_key_id(k) for k in [*gone, kept])
    code, out, _ = run(capsys, "keys", "list", "--state", "shredded", "--domain", "payments-value", *s, "--json")
    assert [r["key_id"] for r in json.loads(out)] == [format_key_id(gone[2])]
    code, out, _ = run(capsys, "keys", "list", "--state", "active", *s, "--json")
    assert [r["key_id"] for r in json.loads(out)] == [format_key_id(kept)]
    code, out, _ = run(capsys, "keys", "show", format_key_id(gone[0]), *s, "--json")
    # the same columns; `keys show` names the data subject by its pseudonym
    shown = [{**r, "data_subject": ps["cust-1001"]} for r in rows if r["key_id"] == format_key_id(gone[0])]
    assert json.loads(out) == shown
    code, _, err = run(capsys, "keys", "list", "--state", "gone", *s)
    assert code == 2 and "--state" in err


# -- 8. a reader holding the SQLite WAL ------------------------------------------------------------------------------
def test_shred_is_pending_while_a_reader_holds_the_wal(kek_uri: str, tmp_path: Path, monkeypatch, capsys) -> None:
    db = tmp_path / "keys.db"
    wal = Path(f"{db}-wal")
    url = fieldcrypt.create_key_store(f"sqlite:///{db}")
    kr = Keyring(url, kek_uri, sleep=lambda s: None, retries=0)
    # each purge attempt waits up to 1 s for the reader: the CLI's keyring retries less, without sleeping in between
    monkeypatch.setattr("fieldcrypt.cli.keys.Keyring", partial(Keyring, sleep=lambda s: None, retries=0))
    try:
        kr.encryption_key("orders-value", "cust-1")
        kr.encryption_key("orders-value", "cust-2")
        kr.encryption_key("orders-value", "cust-3")
        raw = sqlite3.connect(db)
        held = {str(p): bytes(w) for p, w in raw.execute("SELECT person, wrapped FROM fieldcrypt_keys").fetchall()}
        raw.close()
        wrapped = {
            p: held[str(kr._stored("orders-value", p))] for p in ("cust-1", "cust-2", "cust-3")
        }  # rows name pseudonyms
        assert wrapped["cust-1"] in wal.read_bytes()  # the test means something: the key is in the WAL now
        shred_cust_2 = ["keys", "shred", "--data-subject", "cust-2", "--store", url, "--kek", kek_uri, "--reason", "r"]
        shred_cust_2.append("--yes")

        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM fieldcrypt_keys").fetchall()  # an open read transaction
        report = kr.shred_person("cust-1", reason="r")
        assert report.pending is True and len(report.destroyed) == 1 and "PENDING" in str(report)
        assert kr.keys(person="cust-1") == []
        code, out, _ = run(capsys, *shred_cust_2)
        assert code == 6 and "PENDING" in out
        reader.execute("COMMIT")  # the reader ends (its connection stays open)

        again = kr.shred_person("cust-1", reason="r")
        assert again.pending is False and again.noop
        assert wal.exists() and wal.stat().st_size == 0
        code, out, _ = run(capsys, *shred_cust_2)
        assert code == 0 and "PENDING" not in out
        for person in ("cust-1", "cust-2"):
            assert wrapped[person] not in wal.read_bytes()
            assert wrapped[person] not in db.read_bytes()  # secure_delete: not in the database file either
        assert wrapped["cust-3"] in db.read_bytes()  # (and the check finds what is there)
        reader.close()
    finally:
        kr.close()


@pytest.mark.parametrize("person", ["a\x00b", "a\ud800b"])
def test_a_data_subject_id_no_store_can_hold_is_refused_before_any_key(registry, keyring: Keyring, person: str) -> None:
    """A NUL (PostgreSQL TEXT cannot hold it) or a lone surrogate is the producer's error on every store, never
    "store unavailable" on one and a stored key on another; the admin side refuses it the same way."""
    from fieldcrypt.avro import AvroSerializer

    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    with pytest.raises(fieldcrypt.EncryptionError, match="NUL character or a lone surrogate"):
        ser(customer(1, customerId=person), value_ctx())
    assert keyring.keys() == []
    with pytest.raises(ConfigurationError, match="NUL character or a lone surrogate"):
        keyring.shred_person(person)


def test_audit_since_must_be_epoch_seconds(keyring: Keyring) -> None:
    """A string compared with the REAL column would silently select nothing (SQLite orders text after numbers)."""
    keyring.encryption_key("d", "p")
    with pytest.raises(ConfigurationError, match="epoch seconds"):
        keyring.audit(since="2020-01-01")  # type: ignore[arg-type]
    assert [e.operation for e in keyring.audit(since=0)] == ["kek-map", "pseudonymize", "create", "create"]


def test_a_preview_lists_the_keys_in_the_order_the_persons_were_given(tmp_path: Path) -> None:
    import fieldcrypt

    with fieldcrypt.Keyring(
        fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'order.db'}"),
        fieldcrypt.create_local_kek(tmp_path / "k.json"),
    ) as kr:
        people = ["zed", "amy", "kim", "bob"]
        made = {p: kr.encryption_key("d", p).key_id for p in people}
        preview = kr.shred_persons([*people, "amy"], domain="d", reason="r", dry_run=True)
        assert [r.key_id for r in preview.destroyed] == [made[p] for p in people]
