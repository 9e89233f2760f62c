"""The audit log as a hash chain (issue 22): edits, removals, reorderings and insertions made with SQL behind
fieldcrypt's back are named at the first entry they touch; a chain rewritten as a whole no longer matches its seals;
concurrent writers keep it linear; SQLite and PostgreSQL link the same bytes (PostgreSQL's functions in SQL)."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from pg import pg_schema_url

from fieldcrypt import Keyring, create_key_store, open_store
from fieldcrypt.cli import main as cli
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys import chain
from fieldcrypt.keys.kek import create_local_kek

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'chain.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        create_key_store(url)
        yield url


def _sql(url: str, *statements: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run statements behind fieldcrypt's back, as whoever can write the database: guards off (SQLite: the
    triggers dropped; PostgreSQL: as superuser, triggers not fired)."""
    rows: list[tuple[Any, ...]] = []
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        for t in ("fieldcrypt_audit_append_only_u", "fieldcrypt_audit_append_only_d", "fieldcrypt_audit_chained",
                  "fieldcrypt_audit_seals_append_only_u", "fieldcrypt_audit_seals_append_only_d"):  # fmt: skip
            db.execute(f"DROP TRIGGER IF EXISTS {t}")
        for s in statements:
            rows = db.execute(s, args if "?" in s else ()).fetchall()
        db.close()
        return rows
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for s in statements:
            cur = conn.execute(s.replace("?", "%s"), args if "?" in s else ())
            rows = list(cur.fetchall()) if cur.description is not None else []
    return rows


def _history(url: str, kek: str, people: int = 4) -> None:
    """Keys made, rotated and shredded: entries from every writer (on PostgreSQL: the functions' trigger, and
    Python's COPY of a batch shred)."""
    with Keyring(url, kek) as kr:
        for i in range(people):
            kr.encryption_key("customers-value", f"p-{i}")
        kr.encryption_key("customers-value")
        kr.rotate("customers-value", "p-0", reason="rotation")
        kr.shred_persons(["p-1", "p-2", "nobody"], reason="ERASE-1")


def _verify(url: str, kek: str | None = None) -> tuple[int, dict[str, Any]]:
    argv = ["keys", "audit", "--verify", "--json", "--store", url] + (["--kek", kek] if kek else [])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(argv)
    return code, json.loads(buf.getvalue())


def _seqs(url: str) -> list[int]:
    return [int(r[0]) for r in _sql(url, "SELECT seq FROM fieldcrypt_audit ORDER BY seq")]


def test_an_intact_chain_verifies_and_both_stores_link_the_same_bytes(store_url: str, tmp_path: Path) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    code, report = _verify(store_url)
    assert code == 0 and report["ok"] and report["break"] is None
    seqs = _seqs(store_url)
    assert seqs == list(range(1, len(seqs) + 1)) and report["entries"] == len(seqs) >= 8
    # recomputed here from the columns as stored: the link is the documented function of them
    prev = chain.GENESIS
    for r in _sql(store_url, "SELECT seq, at, actor, operation, domain, person, key_ids, reason, detail, hash "
                             "FROM fieldcrypt_audit ORDER BY seq"):  # fmt: skip
        prev = chain.link(prev, r[0], r[1:9])
        assert prev == bytes(r[9])


def _shift(url: str, start: int, by: int) -> list[str]:
    """Statements renumbering the entries from ``start`` on by ``by`` (through a far range: no key clashes)."""
    return [
        f"UPDATE fieldcrypt_audit SET seq = seq + 1000000 WHERE seq >= {start}",
        f"UPDATE fieldcrypt_audit SET seq = seq - 1000000 + ({by}) WHERE seq >= 1000000",
    ]


TAMPERING: dict[str, tuple[Callable[[str], list[str]], str, int]] = {
    # name: (statements, the kind named, the entry named: from the 3rd entry)
    "edited": (lambda u: ["UPDATE fieldcrypt_audit SET reason = 'nothing happened' WHERE seq = 3"], "edited", 3),
    "removed": (lambda u: ["DELETE FROM fieldcrypt_audit WHERE seq = 3"], "removed", 4),
    "removed and renumbered": (
        lambda u: ["DELETE FROM fieldcrypt_audit WHERE seq = 3", *_shift(u, 4, -1)],
        "removed",
        3,
    ),
    "swapped": (
        lambda u: [
            "UPDATE fieldcrypt_audit SET seq = -5 WHERE seq = 3",
            "UPDATE fieldcrypt_audit SET seq = 3 WHERE seq = 4",
            "UPDATE fieldcrypt_audit SET seq = 4 WHERE seq = -5",
        ],
        "reordered",
        3,
    ),
    "inserted and renumbered": (
        lambda u: [
            *_shift(u, 3, 1),
            "INSERT INTO fieldcrypt_audit (seq, at, actor, operation, domain, person, key_ids, reason, detail, hash) "
            "VALUES (3, 1.0, 'x', 'create', 'd', '', '', '', '', ?)",
        ],
        "inserted",
        3,
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_the_first_entry_tampered_with_is_named(store_url: str, tmp_path: Path, tampering: str) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    statements, kind, seq = TAMPERING[tampering]
    _sql(store_url, *statements(store_url), args=(os.urandom(32),))
    code, report = _verify(store_url)
    assert code == 7 and not report["ok"]
    assert (report["break"]["kind"], report["break"]["seq"]) == (kind, seq), report["break"]


def test_an_entry_written_outside_fieldcrypt_is_an_insertion(store_url: str, tmp_path: Path) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    last = _seqs(store_url)[-1]
    _sql(  # (no link: an empty one, the column being NOT NULL)
        store_url,
        "INSERT INTO fieldcrypt_audit (seq, at, actor, operation, domain, person, key_ids, reason, detail, hash) "
        f"VALUES ({last + 1}, 1.0, 'mallory', 'restore', NULL, '', '', '', '', ?)",
        args=(b"",),
    )
    code, report = _verify(store_url)
    assert code == 7 and report["break"]["kind"] == "inserted" and report["break"]["seq"] == last + 1
    with pytest.raises(Exception, match="hash"):  # an entry without its link is refused
        _sql(store_url, "INSERT INTO fieldcrypt_audit (seq, at, actor, operation) VALUES (99999, 1, 'x', 'create')")


def test_a_chain_rewritten_whole_no_longer_matches_its_seal(store_url: str, tmp_path: Path) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    with Keyring(store_url, kek) as kr:
        sealed = kr.seal_audit()
        assert kr.verify_audit().ok and kr.verify_audit().sealed_seq == sealed.seq
    # whoever can write the database edits an entry and recomputes every link after it: the chain alone holds
    _sql(store_url, "UPDATE fieldcrypt_audit SET reason = 'routine' WHERE seq = 2")
    prev = chain.GENESIS
    rows = _sql(store_url, "SELECT seq, at, actor, operation, domain, person, key_ids, reason, detail FROM "
                           "fieldcrypt_audit ORDER BY seq")  # fmt: skip
    for r in rows:
        prev = chain.link(prev, r[0], r[1:])
        _sql(store_url, f"UPDATE fieldcrypt_audit SET hash = ? WHERE seq = {r[0]}", args=(prev,))
    code, report = _verify(store_url)  # the seal names the hash it sealed: a mismatch shows without the KEK
    assert code == 7 and report["break"] is None
    assert report["seal_problems"] == [{"seq": sealed.seq, "kek": kek, "why": "mismatch"}]
    # ... and if the seal's row is rewritten too, only its KEK tells: unchecked without it, forged with it
    _sql(
        store_url,
        f"UPDATE fieldcrypt_audit_seals SET hash = ? WHERE seq = {sealed.seq}",
        args=(rows_hash(store_url, sealed.seq),),
    )
    code, report = _verify(store_url)
    assert code == 0 and report["seal_problems"] == [{"seq": sealed.seq, "kek": kek, "why": "unchecked"}]
    code, report = _verify(store_url, kek)
    assert code == 7 and report["seal_problems"] == [{"seq": sealed.seq, "kek": kek, "why": "forged"}]
    # a seal made without the KEK (a tag of someone's own) does not authenticate
    _sql(store_url, "DELETE FROM fieldcrypt_audit_seals")
    _sql(
        store_url,
        "INSERT INTO fieldcrypt_audit_seals (seq, hash, at, actor, kek_uri, tag) VALUES (?, ?, ?, ?, ?, ?)",
        args=(rows[-1][0], prev, 1.0, "mallory", kek, os.urandom(60)),
    )
    code, report = _verify(store_url, kek)
    assert code == 7 and report["seal_problems"] == [{"seq": rows[-1][0], "kek": kek, "why": "forged"}]


def rows_hash(url: str, seq: int) -> bytes:
    return bytes(_sql(url, f"SELECT hash FROM fieldcrypt_audit WHERE seq = {seq}")[0][0])


def _writer(url: str, kek: str, n: int, base: int, go: Any) -> None:
    with Keyring(url, kek) as kr:
        kr.encryption_key("customers-value", f"w{base}-warm")
        go.wait(60)  # every writer at once
        for i in range(n):
            kr.encryption_key("customers-value", f"w{base}-{i}")  # PostgreSQL: the function's entry (trigger)
            if i % 2:  # an admin's entries (linked in Python)
                kr.shred_persons([f"w{base}-{i}", f"w{base}-{i - 1}"], reason="concurrent")


def test_many_processes_appending_at_once_keep_the_chain_linear(store_url: str, tmp_path: Path) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    with Keyring(store_url, kek) as kr:
        kr.encryption_key("customers-value", "first")  # the domain's KEK and pseudonym key, once
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(store_url, kek, 30, b, go)) for b in range(6)]
    for p in procs:
        p.start()
    before = len(_seqs(store_url))
    while len(_seqs(store_url)) < before + 6:  # each writer's warm-up key
        pass
    go.set()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    seqs = _seqs(store_url)
    # each writer: 31 creations, 15 shreds of 2 persons (one entry each)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 6 * 61
    code, report = _verify(store_url)
    assert code == 0 and report["ok"], report["break"]


def _older(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store with some history, as a fieldcrypt before the chain left it (no links, no seals table), then
    upgraded by `keys init`."""
    kek = create_local_kek(tmp_path / "kek.json")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    create_key_store(url)
    _history(url, kek)
    _sql(url, "ALTER TABLE fieldcrypt_audit DROP COLUMN hash", "DROP TABLE fieldcrypt_audit_seals")
    assert cli(["keys", "init", "--store", url]) == 0
    return url, kek


def test_an_older_store_is_chained_once_and_a_gap_in_a_chained_one_is_never_laundered(tmp_path: Path) -> None:
    url, _kek = _older(tmp_path)
    assert _verify(url)[0] == 0
    db = sqlite3.connect(url[len("sqlite:///") :])
    with pytest.raises(sqlite3.IntegrityError, match="hash-chained"):  # its column is nullable: a trigger guards it
        db.execute("INSERT INTO fieldcrypt_audit (at, actor, operation) VALUES (1, 'x', 'create')")
    db.close()
    # a chained store with an entry added without its link: `keys init` leaves it for --verify to name
    _sql(
        url,
        "INSERT INTO fieldcrypt_audit (at, actor, operation, domain, person, key_ids, reason, detail) "
        "VALUES (1.0, 'mallory', 'restore', NULL, '', '', '', '')",
    )
    assert cli(["keys", "init", "--store", url]) == 0
    code, report = _verify(url)
    assert code == 7 and report["break"]["kind"] == "inserted"


def test_what_the_check_cannot_link_is_a_break_never_a_traceback(store_url: str, tmp_path: Path) -> None:
    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    if store_url.startswith("sqlite"):  # SQLite keeps whatever type is written
        for statement in ("UPDATE fieldcrypt_audit SET hash = 'abc' WHERE seq = 2",
                          "UPDATE fieldcrypt_audit SET at = 'x' WHERE seq = 3"):  # fmt: skip
            _sql(store_url, statement)
            code, report = _verify(store_url)
            assert code == 7 and report["break"]["seq"] in (2, 3)
    with Keyring(store_url, kek) as kr:
        with pytest.raises(ConfigurationError, match="broken"):  # a broken chain is not sealed
            kr.seal_audit() if store_url.startswith("sqlite") else _break_and_seal(store_url, kr)


def _break_and_seal(url: str, kr: Keyring) -> None:
    _sql(url, "UPDATE fieldcrypt_audit SET reason = 'x' WHERE seq = 2")
    kr.seal_audit()


def test_an_entry_time_that_is_no_number_is_refused_by_every_writer(store_url: str, tmp_path: Path) -> None:
    from fieldcrypt.keys.store import AuditEntry

    kek = create_local_kek(tmp_path / "kek.json")
    _history(store_url, kek)
    store = open_store(store_url)
    try:
        for at in (float("nan"), float("inf")):
            with pytest.raises(ConfigurationError, match="finite"):
                store.append_audit(AuditEntry(at=at, actor="x", operation="shred"))
    finally:
        store.close()
    if store_url.startswith("postgresql"):  # the producers' functions too (a NaN's bits would survive as written)
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT fieldcrypt_claim_domain('d-nan', 'k', 1.0, 'NaN'::float8, 'x', 'kek-map', '', 'r')")
    assert _verify(store_url)[0] == 0


def test_a_postgresql_session_rounding_floats_reads_the_chain_exactly(tmp_path: Path) -> None:
    with pg_schema_url() as url:
        create_key_store(url)
        kek = create_local_kek(tmp_path / "kek.json")
        _history(url, kek)
        rounded = url + "%20-cextra_float_digits%3D0"  # (options=-csearch_path=... -cextra_float_digits=0)
        code, report = _verify(rounded)
        assert code == 0 and report["ok"]


def test_a_store_older_than_the_chain_says_so_once_and_a_sealed_one_is_never_relinked(tmp_path: Path) -> None:
    url, kek = _older(tmp_path)
    with Keyring(url, kek) as kr:
        [said] = kr.audit(operation="audit-chain")
        assert "linked as they were found" in said.detail
        kr.seal_audit()
    # every link wiped (a column dropped and added again) on a sealed store: `keys init` does not relink it
    _sql(url, "ALTER TABLE fieldcrypt_audit DROP COLUMN hash", "ALTER TABLE fieldcrypt_audit ADD COLUMN hash BLOB")
    assert cli(["keys", "init", "--store", url]) == 0
    code, report = _verify(url, kek)
    assert code == 7 and report["break"]["kind"] == "inserted" and report["break"]["seq"] == 1


def test_migrating_pseudonyms_never_relinks_a_broken_chain(tmp_path: Path) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from test_pseudonyms import old_store

    from fieldcrypt.keys.keyring import migrate_pseudonyms

    kek = create_local_kek(tmp_path / "kek.json")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    create_key_store(url)
    old_store(url, kek, SchemaRegistryClient.new_client({"url": "mock://chain-migration"}))

    def broken() -> chain.ChainBreak | None:  # (a store still in clear opens no Keyring: its rows, checked)
        store = open_store(url)
        try:
            return chain.check(store.audit_chain(0, 10_000), [], lambda s: None).broken
        finally:
            store.close()

    assert broken() is None  # (keys init linked what the older version wrote)
    _sql(url, "UPDATE fieldcrypt_audit SET reason = 'rewritten' WHERE seq = 2")
    with pytest.raises(ConfigurationError, match="broken at entry 2"):
        migrate_pseudonyms(url, kek)
    found = broken()
    assert found is not None and found.seq == 2  # still named, not laundered
