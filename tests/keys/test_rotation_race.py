"""An admin's rotation retires exactly the key it listed, and only while that key is still active: a person shredded
while ``rotate_domain`` runs (or right before ``rotate``) gets no new key, and a key rotated elsewhere meanwhile is
not rotated twice. Both are reported as skipped, never as rotations (API and CLI, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import KeyRecord, Keyring, RotationReport, SkippedRotation
from fieldcrypt.cli import main
from fieldcrypt.errors import format_key_id
from fieldcrypt.keys.admin import KeyAdmin

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'rotate.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}
DOMAIN = "orders-value"
PERSONS = [f"p{i}" for i in range(5)]


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Overrides conftest's: the same tests on SQLite and PostgreSQL."""
    with STORES[request.param](tmp_path) as url:
        yield fieldcrypt.create_key_store(url)


def populate(kr: Keyring) -> dict[str | None, int]:
    """A domain-wide key and five persons' keys: the active key id of each."""
    ids: dict[str | None, int] = {None: kr.encryption_key(DOMAIN).key_id}
    for p in PERSONS:
        ids[p] = kr.encryption_key(DOMAIN, p).key_id
    return ids


def operations(kr: Keyring, person: str) -> list[str]:
    return [e.operation for e in kr.audit(person=person)]


def once(action: Callable[[], object]) -> Callable[[int, int], None]:
    """A progress callback that runs ``action`` after the first key (as another admin would, meanwhile)."""
    fired: list[int] = []

    def progress(done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            action()

    return progress


def test_a_person_shredded_while_the_domain_rotates_gets_no_new_key(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr, Keyring(store_url, kek_uri) as other:
        before = populate(kr)
        report = kr.rotate_domain(DOMAIN, reason="scheduled", progress=once(lambda: other.shred_person("p3")))
        # a listing of a whole domain names data subjects by their pseudonyms (the store holds no more)
        assert report.skipped == (SkippedRotation(DOMAIN, kr._stored(DOMAIN, "p3"), before["p3"], "shredded"),)
        assert [r.person for r in report.rotated] == [
            None,
            *sorted(kr._stored(DOMAIN, p) or "" for p in ("p0", "p1", "p2", "p4")),
        ]
        assert before["p3"] not in {r.retired for r in report.rotated}
        assert (
            kr.keys(DOMAIN, "p3") == [] and kr.store.active(DOMAIN, kr._stored(DOMAIN, "p3")) is None
        )  # no new version 1
        assert operations(kr, "p3") == ["create", "shred"]  # no "rotate p3" after the shred
        assert [r.key_id for r in kr.shredded_keys(DOMAIN, "p3")] == [before["p3"]]
        assert all(k.version == 2 for k in kr.keys(DOMAIN) if k.state == "active")


def test_a_key_rotated_elsewhere_meanwhile_is_skipped_not_rotated_again(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr, Keyring(store_url, kek_uri) as other:
        before = populate(kr)
        theirs: list[KeyRecord | None] = []
        report = kr.rotate_domain(
            DOMAIN, reason="scheduled", progress=once(lambda: theirs.append(other.rotate(DOMAIN, "p2")))
        )
        assert theirs[0] is not None and theirs[0].version == 2
        assert report.skipped == (SkippedRotation(DOMAIN, kr._stored(DOMAIN, "p2"), before["p2"], "rotated elsewhere"),)
        assert kr._stored(DOMAIN, "p2") not in {r.person for r in report.rotated} and len(report.rotated) == 5
        active = kr.store.active(DOMAIN, kr._stored(DOMAIN, "p2"))
        assert active is not None and active.key_id == theirs[0].key_id and active.version == 2  # no version 3
        assert operations(kr, "p2") == ["create", "rotate"]


def test_rotate_right_after_a_shred_creates_no_key(store_url: str, kek_uri: str, monkeypatch) -> None:
    with Keyring(store_url, kek_uri) as kr, Keyring(store_url, kek_uri) as other:
        old = kr.encryption_key(DOMAIN, "p1").key_id
        read = kr.store.active

        def shredded_after_the_read(domain: str, person: str | None) -> KeyRecord | None:
            found = read(domain, person)
            other.shred_person("p1", reason="erasure request")  # between the read and the rotation's transaction
            return found

        monkeypatch.setattr(kr.store, "active", shredded_after_the_read)
        assert kr.rotate(DOMAIN, "p1", reason="scheduled") is None
        monkeypatch.undo()
        assert kr.keys(DOMAIN, "p1") == [] and [r.key_id for r in kr.shredded_keys(DOMAIN, "p1")] == [old]
        assert operations(kr, "p1") == ["create", "shred"]
        assert kr.rotate(DOMAIN, "p1") is None  # and afterwards too
        assert kr.keys(DOMAIN, "p1") == [] and operations(kr, "p1") == ["create", "shred"]


def test_rotate_of_a_key_replaced_meanwhile_rotates_nothing(store_url: str, kek_uri: str, monkeypatch) -> None:
    with Keyring(store_url, kek_uri) as kr, Keyring(store_url, kek_uri) as other:
        kr.encryption_key(DOMAIN, "p1")
        read = kr.store.active
        theirs: list[KeyRecord | None] = []

        def rotated_after_the_read(domain: str, person: str | None) -> KeyRecord | None:
            found = read(domain, person)
            theirs.append(other.rotate(domain, "p1"))  # the store is asked for p1's pseudonym
            return found

        monkeypatch.setattr(kr.store, "active", rotated_after_the_read)
        assert kr.rotate(DOMAIN, "p1") is None
        monkeypatch.undo()
        assert [k.version for k in kr.keys(DOMAIN, "p1")] == [1, 2]
        active = kr.store.active(DOMAIN, kr._stored(DOMAIN, "p1"))
        assert theirs[0] is not None and active is not None and active.key_id == theirs[0].key_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_rotate_reports_a_person_shredded_meanwhile_as_skipped(
    store_url: str, kek_uri: str, monkeypatch, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        before = populate(kr)
        p3 = kr._stored(DOMAIN, "p3")
    real = KeyAdmin._rotate_key
    shredded: list[int] = []

    def shred_p3_first(self: KeyAdmin, current: KeyRecord, reason: str) -> Any:
        if not shredded:  # another admin's shred lands after the domain's keys were listed
            with Keyring(store_url, kek_uri) as other:
                shredded.append(len(other.shred_person("p3").destroyed))
        return real(self, current, reason)

    monkeypatch.setattr(KeyAdmin, "_rotate_key", shred_p3_first)
    rotate = ["keys", "rotate", "--domain", DOMAIN, "--store", store_url, "--kek", kek_uri, "--reason", "r"]
    code, out, err = run(capsys, *rotate)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"5 active keys of domain '{DOMAIN}' rotated (the domain-wide key and 4 data subjects' keys); "
        "each rotation is in the audit log"
    )
    assert "1 key skipped (1 shredded while this command ran); not rotated, and no key was created for them:" in lines
    skipped_row = next(line for line in lines if line.startswith(f"{p3} "))
    assert skipped_row.split() == [p3, format_key_id(before["p3"]), "shredded"]
    shredded.clear()
    monkeypatch.setattr(KeyAdmin, "_rotate_key", shred_p3_first)  # p3 has no key now: listed no more
    code, out, _ = run(capsys, *rotate, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["rotated"] == 5 and summary["skipped"] == [] and shredded == [0]
    with Keyring(store_url, kek_uri) as kr:
        assert kr.keys(DOMAIN, "p3") == [] and "rotate" not in operations(kr, "p3")


def test_cli_rotate_json_lists_skipped_keys_and_nothing_left_is_exit_5(
    store_url: str, kek_uri: str, monkeypatch, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        before = populate(kr)
    real = KeyAdmin._rotate_key

    def shred_everyone_first(self: KeyAdmin, current: KeyRecord, reason: str) -> Any:
        with Keyring(store_url, kek_uri) as other:
            if other.keys(DOMAIN):
                other.shred_domain(DOMAIN, reason="erasure of the whole domain")
        return real(self, current, reason)

    monkeypatch.setattr(KeyAdmin, "_rotate_key", shred_everyone_first)
    code, out, err = run(capsys, "keys", "rotate", "--domain", DOMAIN, "--store", store_url, "--kek", kek_uri)
    assert code == 5 and out == ""
    assert (
        f"no active key in domain '{DOMAIN}': nothing rotated (6 keys skipped (6 shredded while this command ran); "
        "no key was created for them)"
    ) in err
    with Keyring(store_url, kek_uri) as kr:
        assert kr.keys(DOMAIN) == [] and len(kr.shredded_keys(DOMAIN)) == len(before)
        assert kr.audit(operation="rotate") == []


def test_cli_rotate_of_a_shredded_data_subject_is_exit_5_and_creates_nothing(
    store_url: str, kek_uri: str, capsys
) -> None:
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key(DOMAIN, "p1")
        kr.shred_person("p1", reason="erasure request")
    args = ["keys", "rotate", "--domain", DOMAIN, "--data-subject", "p1", "--store", store_url, "--kek", kek_uri]
    code, out, err = run(capsys, *args)
    assert code == 5 and out == ""
    assert (
        f"this data subject's keys in domain '{DOMAIN}' were shredded (1 key, last at " in err
        and "the data subject is erased; nothing rotated, and no key was created" in err
    )
    code, out, _ = run(capsys, *args, "--json")
    assert code == 5 and "were shredded" in json.loads(out)["error"]["message"]
    with Keyring(store_url, kek_uri) as kr:
        assert kr.keys(DOMAIN, "p1") == [] and operations(kr, "p1") == ["create", "shred"]


def test_the_report_of_an_empty_domain_is_empty(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr:
        assert kr.rotate_domain("nowhere") == RotationReport("nowhere")
