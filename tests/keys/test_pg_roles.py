"""Issue 18, part 2: least privilege in the shared key store, enforced by PostgreSQL, tested with one login per
fieldcrypt role: consumers only read keys; producers also create keys, charge leases and record domains and
policies, through the store's functions only (never a table-level write); admins rotate, rewrap, shred and
restore; auditors read the audit log and the shred log, never key material. SQLite stays single-user."""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from conftest import value_ctx
from pg import PG_BASE, pg_schema_url

from fieldcrypt import ConfigurationError, Keyring, KeyStoreUnavailableError, create_key_store, create_local_kek
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.cli import main as cli
from fieldcrypt.keys.postgres import _lock_id
from fieldcrypt.keys.registry import grant_role, open_store
from fieldcrypt.keys.store import ROLES

#: a call of each producers' function (on a key id that exists: {key})
PRODUCER_CALLS = (
    "SELECT * FROM fieldcrypt_create_key('d', 'p', 'k', 1, NULL, 0, 0, NULL, NULL, NULL, 1, 'x', 'create', '', '')",
    "SELECT * FROM fieldcrypt_create_branch('d', 'k', 1, NULL, NULL, NULL, NULL, 1, 'x', 'create', '')",
    "SELECT fieldcrypt_reserve({key}, 1, 10)",
    "SELECT * FROM fieldcrypt_claim_domain('z', 'k', 1, 1, 'x', 'kek-map', '', '')",
    "SELECT fieldcrypt_publish_policy('f', 'p', 1)",
    "SELECT fieldcrypt_merge_policy('n', ARRAY['a'], 1)",
)


def _as(url: str, login: str, password: str | None = None) -> str:
    """``url`` connecting as ``login`` (trust auth: any password is accepted, and must never be shown)."""
    scheme, rest = url.split("://", 1)
    who = login if password is None else f"{login}:{password}"
    return f"{scheme}://{who}@{rest.split('@', 1)[-1]}"


@pytest.fixture
def logins(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A key store (owned by the test's superuser) and one login per fieldcrypt role, granted it: the store's URL
    as the owner, and as each login."""
    with pg_schema_url() as url:
        create_key_store(url)
        names = {role: f"fc_{role}_{uuid.uuid4().hex[:8]}" for role in ROLES}
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            for name in names.values():
                conn.execute(f"CREATE ROLE {name} LOGIN")
        try:
            for role, name in names.items():
                grant_role(url, role, name)
            yield url, {role: _as(url, name) for role, name in names.items()}
        finally:
            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for name in names.values():
                    conn.execute(f"DROP OWNED BY {name}")
                    conn.execute(f"DROP ROLE {name}")


SCHEMA = {
    "type": "record",
    "name": "Customer",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["SUBJECT"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "visits", "type": "int"},
    ],
}
CONF = {"fieldcrypt.tags": ["PII"], "fieldcrypt.data.subject.tag": "SUBJECT"}


def _produce(store: str, kek: str, registry: SchemaRegistryClient, people: int = 3) -> list[bytes]:
    with Keyring(store, kek) as keyring:
        ser = AvroSerializer(registry, json.dumps(SCHEMA), keyring=keyring, conf=CONF)
        return [
            ser({"id": f"p-{i}", "email": f"p{i}@example.com", "visits": i}, value_ctx("customers"))
            for i in range(people)
        ]


def _read(store: str, kek: str, registry: SchemaRegistryClient, data: list[bytes]) -> list[dict[str, Any]]:
    with Keyring(store, kek) as keyring:
        de = AvroDeserializer(registry, keyring=keyring, conf=CONF)
        return [de(d, value_ctx("customers")) for d in data]


def _refused(url: str, statement: str) -> None:
    """The statement, run by ``url``'s login, is refused by PostgreSQL (SQLSTATE 42501: insufficient privilege)."""
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def _key_id(owner: str) -> int:
    with psycopg.connect(owner, autocommit=True) as conn:
        row = conn.execute("SELECT key_id FROM fieldcrypt_keys ORDER BY key_id LIMIT 1").fetchone()
    assert row is not None
    return int(row[0])


def _writes(key: int) -> list[str]:
    """Every table-level write a non-admin might try: overwrite a wrapped key, reset a count, delete or insert a key,
    change or delete the audit log, delete the shred log, change a domain's KEK, branch keys and policies."""
    return [
        f"UPDATE fieldcrypt_keys SET wrapped = '\\x00' WHERE key_id = {key}",
        f"UPDATE fieldcrypt_keys SET encryptions = 0 WHERE key_id = {key}",
        f"DELETE FROM fieldcrypt_keys WHERE key_id = {key}",
        "INSERT INTO fieldcrypt_keys (key_id, domain, person, version, state, kek_uri, wrapped, created_at) "
        "VALUES (7, 'd', 'p', 99, 'retired', 'k', '\\x00', 0)",
        "UPDATE fieldcrypt_audit SET reason = 'x'",
        "DELETE FROM fieldcrypt_audit",
        "INSERT INTO fieldcrypt_audit (at, actor, operation) VALUES (0, 'x', 'shred')",
        "DELETE FROM fieldcrypt_shredded",
        "INSERT INTO fieldcrypt_shredded VALUES (7, 'd', 'p', 0)",
        "UPDATE fieldcrypt_domains SET primary_kek = 'k'",
        "DELETE FROM fieldcrypt_branches",
        "UPDATE fieldcrypt_branches SET wrapped = '\\x00'",
        "UPDATE fieldcrypt_policies SET policy = '[]'",
        "DELETE FROM fieldcrypt_policies",
    ]


def test_a_consumer_reads_and_decrypts_but_writes_nothing(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    owner, urls = logins
    kek = create_local_kek(tmp_path / "kek.json")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    data = _produce(urls["producer"], kek, registry)
    assert [r["email"] for r in _read(urls["consumer"], kek, registry, data)] == [f"p{i}@example.com" for i in range(3)]
    key = _key_id(owner)
    for statement in [*_writes(key), *(c.format(key=key) for c in PRODUCER_CALLS)]:
        _refused(urls["consumer"], statement)
    with Keyring(urls["consumer"], kek) as consumer:
        with pytest.raises(ConfigurationError) as err:
            consumer.shred_person("p-1", reason="test")
        assert "may not shred keys" in str(err.value) and "fieldcrypt keys grant --role admin" in str(err.value)
        assert not isinstance(err.value, KeyStoreUnavailableError)  # never retried
        with pytest.raises(ConfigurationError, match="not a fieldcrypt producer"):
            consumer.encryption_key("new-domain", "p-9")
        with pytest.raises(ConfigurationError, match="may not read the audit log"):
            consumer.audit()
    with Keyring(owner, kek) as admin:
        assert len(admin.keys()) == 3 and admin.shredded_keys() == []


def test_a_producer_writes_only_through_the_functions(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    from fieldcrypt import RotationPolicy

    owner, urls = logins
    kek = create_local_kek(tmp_path / "kek.json")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    data = _produce(urls["producer"], kek, registry)  # keys, branch keys, domains, policies, leases
    assert [r["id"] for r in _read(urls["consumer"], kek, registry, data)] == ["p-0", "p-1", "p-2"]
    # a rotation by cap is a producer's (a creation that retires): allowed
    with Keyring(urls["producer"], kek, rotation=RotationPolicy(max_encryptions=4, lease=2)) as producer:
        first = producer.encryption_key("d", "p").key_id
        for _ in range(3):
            producer.encryption_key("d", "p")
            producer.clear_cache()
        assert producer.store.active("d", producer._stored("d", "p")).key_id != first  # type: ignore[union-attr]
    key = _key_id(owner)
    for statement in _writes(key):
        _refused(urls["producer"], statement)
    with Keyring(urls["producer"], kek) as producer:
        with pytest.raises(ConfigurationError, match=r"may not shred keys .* fieldcrypt admin"):
            producer.shred_person("p-1", reason="test")
        with pytest.raises(ConfigurationError, match="may not rotate keys"):
            producer.rotate("d", "p")
        with pytest.raises(ConfigurationError, match="may not read the audit log"):
            producer.audit()
    with Keyring(owner, kek) as admin:
        assert admin.shredded_keys() == [] and all(e.operation != "shred" for e in admin.audit())


def test_the_reserve_function_never_lowers_a_count_nor_passes_the_cap(
    logins: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    owner, urls = logins
    with Keyring(urls["producer"], create_local_kek(tmp_path / "kek.json")) as producer:
        key = producer.encryption_key("d", "p").key_id
    store = open_store(owner)
    count = store.get(key).encryptions  # type: ignore[union-attr]
    with psycopg.connect(urls["producer"], autocommit=True) as conn:
        assert conn.execute(f"SELECT fieldcrypt_reserve({key}, 5, 1)").fetchone() == (0,)  # a limit below: nothing
        for bad in (f"{key}, -5, 100", f"{key}, 5, -1"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute(f"SELECT fieldcrypt_reserve({bad})")
        assert store.get(key).encryptions == count  # type: ignore[union-attr]
        # far beyond the hard cap: clipped at 2^31 (AES-GCM with random nonces), whatever limit is asked
        (granted,) = conn.execute(f"SELECT fieldcrypt_reserve({key}, {2**40}, {2**40})").fetchone()  # type: ignore[misc]
        assert granted == 2**31 - count and store.get(key).encryptions == 2**31  # type: ignore[union-attr]
        assert conn.execute(f"SELECT fieldcrypt_reserve({key}, 1, {2**40})").fetchone() == (0,)
        assert conn.execute("SELECT fieldcrypt_reserve(12345, 1, 10)").fetchone() == (None,)  # no such key
        # the create function only creates: an audit entry it writes is a create or a rotate, never a shred
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(PRODUCER_CALLS[0].replace("'create'", "'shred'"))
    store.close()


def test_an_auditor_reads_the_logs_but_no_key_material(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    owner, urls = logins
    kek = create_local_kek(tmp_path / "kek.json")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    _produce(urls["producer"], kek, registry)
    with Keyring(urls["admin"], kek) as admin:
        assert len(admin.shred_person("p-1", reason="erasure 1").destroyed) == 1
    for argv in (
        ["keys", "audit", "--json", "--store", urls["auditor"]],
        ["keys", "list", "--state", "shredded", "--json", "--store", urls["auditor"]],
    ):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert cli(argv) == 0
        rows = json.loads(buf.getvalue())
        assert rows and (argv[1] != "audit" or any(r["operation"] == "shred" for r in rows))
    for table in ("fieldcrypt_keys", "fieldcrypt_branches", "fieldcrypt_policies"):
        _refused(urls["auditor"], f"SELECT * FROM {table}")
    for statement in _writes(_key_id(owner)):
        _refused(urls["auditor"], statement)
    with Keyring(urls["auditor"], kek) as auditor:
        # the store names people by pseudonyms: an auditor holding a KEK of the pseudonym key asks by id
        [gone] = auditor.shredded_keys()
        assert gone.person == auditor._stored(gone.domain, "p-1", create=False)
        assert [r.person for r in auditor.shredded_keys(person="p-1")] == ["p-1"]
        with pytest.raises(ConfigurationError, match=r"may not read data keys .* fieldcrypt consumer"):
            auditor.keys()


def test_only_an_admin_shreds_rotates_rewraps_and_restores(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    owner, urls = logins
    kek = create_local_kek(tmp_path / "kek.json")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    _produce(urls["producer"], kek, registry)
    key = _key_id(owner)
    for role in ("consumer", "producer", "auditor"):  # nobody but an admin deletes a key
        _refused(urls[role], f"DELETE FROM fieldcrypt_keys WHERE key_id = {key}")
        with Keyring(urls[role], kek) as kr, pytest.raises(ConfigurationError, match="fieldcrypt admin"):
            kr.shred_domain("customers-value", reason="test")
    with Keyring(urls["admin"], kek) as admin:
        exported = [r for r in admin.export_shred_log()]
        report = admin.shred_person("p-0", reason="erasure 7")
        assert len(report.destroyed) == 1
        assert admin.rotate("customers-value", "p-2") is not None
        assert admin.restore([*exported, *admin.export_shred_log()]) == []
    new = create_local_kek(tmp_path / "new.json")
    with Keyring(urls["admin"], [new, kek]) as admin:  # a KEK change: add, promote, rewrap, retire
        assert admin.rewrap() >= 1
        assert {e.operation for e in admin.audit()} >= {"shred", "rotate", "rewrap", "restore", "kek-promote"}
    # even an admin cannot change the audit log or remove an entry of the shred log (and the trigger stops the owner)
    for statement in ("DELETE FROM fieldcrypt_audit", "UPDATE fieldcrypt_audit SET reason = ''"):
        _refused(urls["admin"], statement)
        with psycopg.connect(owner, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
    _refused(urls["admin"], "DELETE FROM fieldcrypt_shredded")


def test_grant_is_idempotent_and_checks_what_it_is_given(
    logins: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner, urls = logins
    name = urls["consumer"].split("://", 1)[1].split("@", 1)[0]
    assert grant_role(owner, "consumer", name) == grant_role(owner, "consumer", name)  # GRANTs only: run again
    with pytest.raises(ConfigurationError, match="unknown fieldcrypt role 'reader'; one of producer, consumer"):
        grant_role(owner, "reader", name)
    with pytest.raises(ConfigurationError, match="does not exist: create it first"):
        grant_role(owner, "consumer", "fc_nobody_" + uuid.uuid4().hex[:8])
    # only the store's owner grants: an admin cannot make itself (or anyone) more
    with pytest.raises(ConfigurationError, match="only the store's owner"):
        grant_role(urls["admin"], "admin", name)
    with pytest.raises(ConfigurationError, match="only the store's owner"):
        create_key_store(urls["admin"])  # keys init (upgrade) replaces the functions: the owner's too
    # the CLI: the same, and an unknown --role lists the accepted ones (usage: exit 2)
    assert cli(["keys", "grant", "--role", "auditor", name, "--store", owner]) == 0
    assert f"database role '{name}' is a fieldcrypt auditor" in capsys.readouterr().out
    assert cli(["keys", "grant", "--role", "reader", name, "--store", owner]) == 2
    assert "choose from 'producer', 'consumer', 'admin', 'auditor'" in capsys.readouterr().err
    # SQLite is single-user
    sqlite = f"sqlite:///{tmp_path / 'keys.db'}"
    create_key_store(sqlite)
    with pytest.raises(ConfigurationError, match=r"single-user.*mode 0600"):
        grant_role(sqlite, "consumer", name)
    assert cli(["keys", "grant", "--role", "consumer", name, "--store", sqlite]) == 3
    assert "single-user" in capsys.readouterr().err


def test_a_refused_privilege_never_shows_the_urls_secrets(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _owner, urls = logins
    name = urls["consumer"].split("://", 1)[1].split("@", 1)[0]
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    with_password = _as(urls["consumer"], name, secret) + f"&sslpassword={secret}x"
    with Keyring(with_password, create_local_kek(tmp_path / "kek.json")) as consumer:
        with pytest.raises(ConfigurationError) as err:
            consumer.shred_domain("d", reason="test")
    assert secret not in str(err.value) and name in str(err.value)


def test_a_store_without_the_functions_must_be_upgraded(logins: tuple[str, dict[str, str]]) -> None:
    owner, _urls = logins
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("DROP FUNCTION fieldcrypt_reserve(bigint, bigint, bigint)")
    with pytest.raises(ConfigurationError, match="needs its functions"):
        open_store(owner)
    create_key_store(owner)
    open_store(owner).close()


def test_the_functions_and_python_take_the_same_advisory_locks(logins: tuple[str, dict[str, str]]) -> None:
    """An admin's rotation (Python) and a producer's creation (the function) serialize on one lock per (domain,
    person): both compute it as the first 8 bytes of sha256(domain NUL person)."""
    owner, _urls = logins
    cases = [
        ("d", "p", "convert_to('p', 'UTF8')"),
        ("ünï", "", "''::bytea"),
        ("d", "\x00branch", "'\\x006272616e6368'"),
    ]
    for domain, rest, sql_rest in cases:
        with psycopg.connect(owner) as conn:  # one transaction: the lock is held until its end
            conn.execute("SELECT fieldcrypt_lock(%s, " + sql_rest + ")", (domain,))
            (classid, objid) = conn.execute(
                "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ).fetchone()  # type: ignore[misc]
            conn.rollback()
        taken = int.from_bytes((int(classid) << 32 | int(objid)).to_bytes(8, "big"), "big", signed=True)
        assert taken == _lock_id(domain, rest), (domain, rest)
    assert re.fullmatch(r"-?\d+", str(_lock_id("d", "p")))


def test_two_teams_on_the_shared_store_each_with_its_login_and_its_domains_keks(
    logins: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Issue 18 end to end on PostgreSQL: one producer login writes contact, health and masked fields; support (a
    consumer login holding the contact KEK), analytics (the contact/masked KEK only) and payments (health) each read
    what their KEKs open, the rest as denied; an admin login shreds one person, and every team reads it as erased."""
    _owner, urls = logins
    kek = {
        d: create_local_kek(tmp_path / f"{d.replace('/', '-')}.json") for d in ("contact", "contact/masked", "health")
    }
    schema = {
        "type": "record",
        "name": "Patient",
        "namespace": "t",
        "fields": [
            {"name": "id", "type": "string", "confluent:tags": ["SUBJECT"]},
            {"name": "email", "type": "string", "confluent:tags": ["CONTACT"]},
            {"name": "diagnosis", "type": "string", "confluent:tags": ["HEALTH"]},
        ],
    }
    conf: dict[str, Any] = {
        "fieldcrypt.tags": ["CONTACT", "HEALTH"],
        "fieldcrypt.tag.domains": {"CONTACT": "contact", "HEALTH": "health"},
        "fieldcrypt.data.subject.tag": "SUBJECT",
        "fieldcrypt.masks": {"CONTACT": "email"},
    }
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    people = [{"id": f"p-{i}", "email": f"jane{i}@example.com", "diagnosis": "flu"} for i in range(2)]
    with Keyring(urls["producer"], kek) as producer:
        ser = AvroSerializer(registry, json.dumps(schema), keyring=producer, conf=conf)
        data = [ser(p, value_ctx("patients")) for p in people]

    def read(keks: dict[str, str]) -> list[dict[str, Any]]:
        with Keyring(urls["consumer"], keks) as team:
            de = AvroDeserializer(registry, keyring=team, conf={**conf, "fieldcrypt.on.denied": "placeholder"})
            return [de(d, value_ctx("patients")) for d in data]

    support = {"contact": kek["contact"]}
    analytics = {"contact/masked": kek["contact/masked"]}
    payments = {"health": kek["health"]}
    assert read(support) == [{**p, "diagnosis": "<denied>"} for p in people]
    assert read(analytics) == [{"id": p["id"], "email": "***@example.com", "diagnosis": "<denied>"} for p in people]
    assert read(payments) == [{**p, "email": "<denied>"} for p in people]
    with Keyring(urls["consumer"], kek) as team, pytest.raises(ConfigurationError, match="fieldcrypt admin"):
        team.shred_person("p-0", domain="contact", reason="a consumer may not")
    with Keyring(urls["admin"], kek) as admin:
        report = admin.shred_person("p-0", reason="erasure 12")
    assert {r.domain for r in report.destroyed} == {"contact", "contact/masked", "health"}
    for keks in (support, analytics, payments):
        first = read(keks)[0]
        assert first["email"] == "<erased>" and first["diagnosis"] == "<erased>"


def test_the_audit_chain_under_least_privilege(logins: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """Producers' entries (the functions' trigger) and an admin's (linked in Python, COPY) make one chain; an
    admin seals it and writes a receipt; an auditor checks both; nobody but the owner can touch the seals."""
    _owner, urls = logins
    kek = create_local_kek(tmp_path / "kek.json")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    _produce(urls["producer"], kek, registry, people=4)
    receipt = tmp_path / "receipt.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["keys", "shred", "--from-file", str(_ids(tmp_path, ["p-0", "p-1"])), "--reason", "ERASE-9",
                    "--yes", "--receipt", str(receipt), "--store", urls["admin"], "--kek", kek])  # fmt: skip
    assert code == 0 and receipt.exists()
    with Keyring(urls["admin"], kek) as admin:
        admin.seal_audit()
    for kek_given in ([], ["--kek", kek]):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert cli(["keys", "audit", "--verify", "--json", "--store", urls["auditor"], *kek_given]) == 0
        report = json.loads(buf.getvalue())
        assert report["ok"] and report["seals"] >= 1
        assert (report["sealed_through"] == report["head"]["seq"]) == bool(kek_given)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["keys", "receipt", "verify", str(receipt), "--store", urls["auditor"], "--kek", kek]) == 0
    with Keyring(urls["admin"], kek) as admin:  # each fieldcrypt role given is an entry of the chain too
        granted = [e.detail for e in admin.audit(operation="grant")]
        assert all(any(f"fieldcrypt {r} " in d for d in granted) for r in ("consumer", "producer", "auditor", "admin"))
    for role in ("consumer", "producer", "auditor"):
        _refused(urls[role], "INSERT INTO fieldcrypt_audit_seals VALUES (1, '\\x00', 1, 'x', 'k', '\\x00')")
    for statement in ("DELETE FROM fieldcrypt_audit_seals", "UPDATE fieldcrypt_audit_seals SET tag = '\\x00'"):
        _refused(urls["admin"], statement)
    for role in ("consumer", "producer"):
        _refused(urls[role], "SELECT * FROM fieldcrypt_audit_seals")


def _ids(tmp_path: Path, ids: list[str]) -> Path:
    p = tmp_path / "ids.txt"
    p.write_text("\n".join(ids) + "\n")
    return p


def _keys_made(url: str, kek: str, base: int) -> None:
    with Keyring(url, kek) as kr:
        for i in range(20):
            kr.encryption_key("customers-value", f"c{base}-{i}")


def _shreds_made(url: str, kek: str) -> None:
    with Keyring(url, kek) as kr:
        for i in range(10):
            kr.shred_persons([f"c0-{i}", f"c1-{i}"], reason="concurrent")


def test_the_chain_holds_whatever_the_logins_session_defaults(
    logins: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Logins whose sessions default to REPEATABLE READ and round floats read back as text: producers and an admin
    write at once, and an auditor checks the chain intact (fieldcrypt sets what it relies on itself)."""
    import multiprocessing

    _owner, urls = logins
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        for role in ("producer", "admin", "auditor"):
            name = urls[role].split("://", 1)[1].split("@", 1)[0]
            conn.execute(f"ALTER ROLE {name} SET default_transaction_isolation = 'repeatable read'")
            conn.execute(f"ALTER ROLE {name} SET extra_float_digits = 0")
    kek = create_local_kek(tmp_path / "kek.json")
    with Keyring(urls["producer"], kek) as kr:
        kr.encryption_key("customers-value", "first")
        with kr.store._tx() as ex:  # (the session's default says otherwise)
            assert ex("SHOW transaction_isolation", ()) == [("read committed",)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_keys_made, args=(urls["producer"], kek, b)) for b in range(2)]
    procs.append(ctx.Process(target=_shreds_made, args=(urls["admin"], kek)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli(["keys", "audit", "--verify", "--json", "--store", urls["auditor"]]) == 0
    assert json.loads(buf.getvalue())["entries"] >= 41
