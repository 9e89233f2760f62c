"""The key store is not a plaintext index of people: its keys, shred log and audit log name data subjects by keyed
pseudonyms; the API takes plain ids; a store made by an older fieldcrypt is refused until it is migrated, and the
migration (SQLite and PostgreSQL) keeps every record readable, is resumable and idempotent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from conftest import customer, load_schema, value_ctx
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto.cipher import split_check, with_check
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    KeyCorruptedError,
    KeyShreddedError,
    KeyStoreUnavailableError,
)
from fieldcrypt.keys import _sql
from fieldcrypt.keys.keyring import migrate_pseudonyms
from fieldcrypt.keys.pseudonyms import is_pseudonym
from fieldcrypt.keys.registry import open_store
from fieldcrypt.keys.store import AuditEntry, PseudonymKey

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'people.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}
TABLES = ("fieldcrypt_keys", "fieldcrypt_shredded", "fieldcrypt_audit")


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield fieldcrypt.create_key_store(url)


def persons(url: str) -> set[str]:
    """Every data-subject id the three tables hold, as stored."""
    store: Any = open_store(url)
    try:
        return {str(p) for t in TABLES for (p,) in store._read(f"SELECT DISTINCT person FROM {t} WHERE person <> ''")}
    finally:
        store.close()


def sql(url: str, statement: str) -> None:
    store: Any = open_store(url)
    try:
        with store._tx() as ex:
            ex(statement, ())
    finally:
        store.close()


def old_store(url: str, kek: str, registry: Any) -> tuple[list[bytes], Any]:
    """A store as an older fieldcrypt left it: ids in clear in keys, shred log and audit log, keys wrapped for them."""
    clear = type("Clear", (type(open_store(url)),), {"supports_pseudonyms": False})
    with Keyring(clear(url), kek) as old:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=old)
        written = [ser(customer(i), value_ctx()) for i in range(4)]
        old.shred_person("cust-3", reason="erasure 1")
    sql(url, "DELETE FROM fieldcrypt_pseudonym_keys")
    sql(url, "DELETE FROM fieldcrypt_meta")
    fieldcrypt.create_key_store(url)  # keys init, after the upgrade: finds ids in clear
    return written, ser


def test_a_new_store_holds_pseudonyms_and_the_api_takes_ids(store_url: str, kek_uri: str, registry) -> None:
    with Keyring(store_url, kek_uri) as kr:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=kr)
        data = ser(customer(1), value_ctx())
        [key] = kr.keys(person="cust-1")
        assert key.person == "cust-1"  # named as the caller named them
        report = kr.shred_person("cust-1", reason="erasure 7")
        assert [(p.person, p.outcome) for p in report.persons] == [("cust-1", "erased")]
        assert [r.person for r in report.destroyed] == ["cust-1"]
        assert [e.person for e in kr.audit(person="cust-1")] == ["cust-1", "cust-1"]
        assert [r.person for r in kr.shredded_keys(person="cust-1")] == ["cust-1"]
        pseudonym = kr._stored("orders-value", "cust-1")
        assert [r.person for r in kr.shredded_keys()] == [pseudonym]  # a listing of everyone: no way back
    stored = persons(store_url)
    assert stored == {pseudonym} and all(is_pseudonym(p) for p in stored)
    with Keyring(store_url, kek_uri) as reader:  # another process: the record reads as erased, not as tampered
        got = AvroDeserializer(registry, keyring=reader)(data, value_ctx())
        assert got["email"] is None or got["email"] == "<erased>"


def test_each_domain_has_its_own_pseudonyms_and_only_its_kek_holders_name_its_people(
    store_url: str, kek_uri: str, tmp_path: Path
) -> None:
    """Two teams, each with the KEK of its own domain only: each writes its data subjects' keys without the other
    (a domain's pseudonym key is made by its first writer, under the domain's KEK), the same person has unrelated
    pseudonyms in the two domains, and an admin holding one team's KEK cannot search the other's domain: a shred or
    a listing that would silently miss it is refused before anything is done."""
    other = fieldcrypt.create_local_kek(tmp_path / "other.json")
    with Keyring(store_url, {"orders": kek_uri}) as team_a:
        team_a.encryption_key("orders", "cust-1")
    with Keyring(store_url, {"billing": other}) as team_b:
        assert team_b.encryption_key("billing", "cust-1").person == "cust-1"  # no admin step, no KEK of team a
        assert [r.domain for r in team_b.keys("billing", person="cust-1")] == ["billing"]
        with pytest.raises(ConfigurationError, match=r"pseudonyms of key domain\(s\) 'orders'.*Nothing was done"):
            team_b.shred_person("cust-1", reason="erasure 9")
        with pytest.raises(ConfigurationError, match="'orders'"):
            team_b.keys(person="cust-1")
        in_b = team_b._stored("billing", "cust-1")
    with Keyring(store_url, {"orders": kek_uri, "billing": other}) as admin:
        in_a = admin._stored("orders", "cust-1")
        assert in_a != in_b and is_pseudonym(in_a) and is_pseudonym(in_b)
        assert {r.domain for r in admin.keys(person="cust-1")} == {"orders", "billing"}
        report = admin.shred_person("cust-1", reason="erasure 9")
        assert {r.domain for r in report.destroyed} == {"orders", "billing"}
        [entry] = [e for e in admin.audit(person="cust-1") if e.operation == "shred"]  # one entry per person
        assert len(entry.key_ids) == 2
    store: Any = open_store(store_url)
    try:
        raw = [str(p) for (p,) in store._read("SELECT person FROM fieldcrypt_audit WHERE operation = 'shred'")]
    finally:
        store.close()
    assert len(raw) == 1 and set(raw[0].split()) == {in_a, in_b}  # the person named by both pseudonyms


def test_a_reader_needs_no_pseudonym_key(store_url: str, kek_uri: str, registry: Any) -> None:
    """A consumer never loads a pseudonym key: the data key it unwraps says whose key it is (its person check), so a
    consumer reads every data subject's values without one (and without the KMS call it would cost)."""
    with Keyring(store_url, kek_uri) as producer:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=producer)
        one, two = ser(customer(1), value_ctx()), ser(customer(2), value_ctx())
    with Keyring(store_url, kek_uri) as reader:
        de = AvroDeserializer(registry, keyring=reader)
        assert de(one, value_ctx()) == customer(1) and de(two, value_ctx()) == customer(2)
        assert reader._pseudonyms == {}  # nothing loaded to read


def test_an_old_store_is_refused_then_migrated_and_every_record_still_reads(
    store_url: str, kek_uri: str, registry, monkeypatch
) -> None:
    written, _ser = old_store(store_url, kek_uri, registry)
    assert {"cust-0", "cust-1", "cust-2", "cust-3"} <= persons(store_url)
    with pytest.raises(ConfigurationError, match="keys migrate-pseudonyms"):
        Keyring(store_url, kek_uri)
    # a run stopped half-way (a KMS outage, a crash) is run again and goes on where it stopped
    monkeypatch.setattr(_sql, "_BATCH", 2)
    real = _sql.SqlKeyStore.pseudonymize

    def stopping(self: Any, of: Any, rewrap: Any, *args: Any, **kw: Any) -> int:
        seen: list[int] = []

        def failing(record: Any, named: str) -> bytes:
            seen.append(record.key_id)
            if len(seen) > 2:
                raise RuntimeError("stopped")
            return rewrap(record, named)  # type: ignore[no-any-return]

        return real(self, of, failing, *args, **kw)

    monkeypatch.setattr(_sql.SqlKeyStore, "pseudonymize", stopping)
    with pytest.raises(RuntimeError):
        migrate_pseudonyms(store_url, kek_uri, reason="upgrade 2027")
    monkeypatch.setattr(_sql.SqlKeyStore, "pseudonymize", real)
    with pytest.raises(ConfigurationError, match="migration unfinished"):
        Keyring(store_url, kek_uri)
    assert migrate_pseudonyms(store_url, kek_uri, reason="upgrade 2027") == 1  # 3 keys, 2 done before the stop
    assert migrate_pseudonyms(store_url, kek_uri) == 0  # idempotent
    assert all(is_pseudonym(p) for p in persons(store_url))
    with Keyring(store_url, kek_uri) as kr:
        reader = AvroDeserializer(registry, keyring=kr, conf={"fieldcrypt.on.erased": "placeholder"})
        read = [reader(d, value_ctx()) for d in written]
        assert [r["customerId"] for r in read] == ["cust-0", "cust-1", "cust-2", "cust-3"]
        assert read[1] == customer(1) and read[3]["email"] == "<erased>"
        assert [p.outcome for p in kr.shred_person("cust-3", reason="again").persons] == ["already erased"]
        ops = [e.operation for e in kr.audit(person="cust-3")]
        assert ops[:2] == ["create", "shred"] and ops[-1] == "shred"
        assert [e.operation for e in kr.audit(operation="pseudonymize")][-1:] == ["pseudonymize"]
    with pytest.raises(KeyStoreUnavailableError, match=r"IntegrityError|RaiseException"):  # the trigger
        sql(store_url, "UPDATE fieldcrypt_audit SET person = 'x'")  # append-only again


def test_a_resumed_or_concurrent_migration_leaves_no_id_in_clear_and_hashes_none_twice(
    store_url: str, kek_uri: str, registry, monkeypatch
) -> None:
    """Found by review: a migration with another run of it going on at the same time, and an older producer adding a
    key meanwhile, must leave no id in clear and hash none twice (a shred would then miss that person's keys)."""
    old_store(store_url, kek_uri, registry)
    clear = type("Clear", (type(open_store(store_url)),), {"supports_pseudonyms": False})
    monkeypatch.setattr(_sql, "_BATCH", 1)
    real = _sql.SqlKeyStore.pseudonymize
    calls: list[int] = []

    def interleaved(self: Any, of: Any, rewrap: Any, *args: Any, **kw: Any) -> int:
        def one_more(record: Any, named: str) -> bytes:
            calls.append(record.key_id)
            if len(calls) == 2:
                real(open_store(store_url), of, rewrap, *args, **kw)  # another run, to its end
                with Keyring(clear(store_url), kek_uri) as older:  # an older producer, after it
                    older.encryption_key("orders-value", "cust-late")
            return rewrap(record, named)  # type: ignore[no-any-return]

        return real(self, of, one_more, *args, **kw)

    monkeypatch.setattr(_sql.SqlKeyStore, "pseudonymize", interleaved)
    migrate_pseudonyms(store_url, kek_uri, reason="upgrade")
    monkeypatch.setattr(_sql.SqlKeyStore, "pseudonymize", real)
    assert all(is_pseudonym(p) for p in persons(store_url))
    with Keyring(store_url, kek_uri) as kr:
        for person in ("cust-0", "cust-1", "cust-2", "cust-late"):  # found by their ids: hashed exactly once
            assert [r.person for r in kr.keys(person=person)] == [person], person  # (shown as the id given)


def _rows(url: str) -> dict[str, tuple[int, bytes]]:
    store: Any = open_store(url)
    try:
        rows = store._read("SELECT person, key_id, wrapped FROM fieldcrypt_keys WHERE person <> ''")
        return {str(p): (int(k), bytes(w)) for p, k, w in rows}
    finally:
        store.close()


def _set_wrapped(url: str, key_id: int, wrapped: bytes) -> None:
    store: Any = open_store(url)
    try:
        with store._tx() as ex:
            ex("UPDATE fieldcrypt_keys SET wrapped = ? WHERE key_id = ?", (wrapped, key_id))
    finally:
        store.close()


@pytest.mark.parametrize("attack", ["stripped", "transplanted"])
def test_a_person_check_taken_off_or_swapped_in_the_store_never_reads_as_the_person(
    store_url: str, kek_uri: str, registry: Any, attack: str
) -> None:
    """Someone who can write the key store removes a key's person check, or puts another key's there: the key is
    then nobody's (its values read as tampered) or corrupt, never another person's."""
    with Keyring(store_url, kek_uri) as producer:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=producer)
        one = ser(customer(1), value_ctx())
        ser(customer(2), value_ctx())
        p1, p2 = producer._stored("orders-value", "cust-1"), producer._stored("orders-value", "cust-2")
    rows = _rows(store_url)
    (k1, w1), (_k2, w2) = rows[str(p1)], rows[str(p2)]
    c1, bare1 = split_check(w1)
    assert c1 and b"cust-1" not in w1  # the check is the id encrypted, never the id
    if attack == "stripped":
        _set_wrapped(store_url, k1, bare1)
        expected: type[Exception] = DecryptionError
    else:
        _set_wrapped(store_url, k1, with_check(split_check(w2)[0], bare1))
        expected = KeyCorruptedError
    with Keyring(store_url, kek_uri) as reader:
        de = AvroDeserializer(registry, keyring=reader)
        with pytest.raises(expected) as err:
            de(one, value_ctx())
        assert not isinstance(err.value, (KeyShreddedError, AccessDeniedError))


def test_a_kek_change_carries_the_pseudonym_key_and_erasure_by_id_works_after_the_old_kek_is_gone(
    store_url: str, kek_uri: str, tmp_path: Path, registry: Any
) -> None:
    """Found by review: add, promote, rewrap, retire left the pseudonym key wrapped only by the retired KEK, so once
    it was destroyed nobody could write a new data subject or erase anyone by id."""
    new = fieldcrypt.create_local_kek(tmp_path / "new.json")
    with Keyring(store_url, {"orders-value": kek_uri}) as producer:
        data = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=producer)(customer(1), value_ctx())
    with Keyring(store_url, {"orders-value": kek_uri, "payments-value": new}) as admin:  # new: held for another
        admin.add_kek("orders-value", new, reason="rotation")
        admin.promote_kek("orders-value", new, reason="rotation")
    with Keyring(store_url, {"orders-value": [new, kek_uri]}) as admin:
        admin.rewrap(domain="orders-value")
        admin.retire_kek("orders-value", kek_uri, reason="rotation")
    assert {r.kek_uri for r in open_store(store_url).pseudonym_keys("orders-value")} == {new}  # the retired copy: gone
    with Keyring(store_url, {"orders-value": new}) as after:  # the old KEK destroyed
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=after)
        ser(customer(2), value_ctx())
        assert [p.outcome for p in after.shred_person("cust-1", reason="erasure 3").persons] == ["erased"]
        assert AvroDeserializer(registry, keyring=after)(data, value_ctx())["email"] == "<erased>"


def test_a_pseudonym_key_copy_under_a_kek_the_domain_does_not_record_is_refused_and_ignored(
    store_url: str, kek_uri: str, tmp_path: Path
) -> None:
    """Found by review: one team's login could store a pseudonym key of its own making under its own KEK for another
    team's domain, blocking that domain's writers or, read by a keyring holding both KEKs, taking it over."""
    other = fieldcrypt.create_local_kek(tmp_path / "other.json")
    with Keyring(store_url, {"orders": kek_uri}) as owner:
        owner.encryption_key("orders", "cust-1")
    store: Any = open_store(store_url)
    try:
        planted = PseudonymKey(other, b"x" * 60, "0123456789abcdef", 0.0, "orders")
        with pytest.raises(Exception, match="not recorded for key domain"):
            store.add_pseudonym_key(planted, AuditEntry(at=1.0, actor="x", operation="pseudonymize"))
        with store._tx() as ex:  # written past the store's checks (a login that may write the table)
            ex(
                "INSERT INTO fieldcrypt_pseudonym_keys (domain, kek_uri, wrapped, fingerprint, created_at) "
                "VALUES ('orders', ?, ?, '0123456789abcdef', 0)",
                (other, b"x" * 60),
            )
        assert {r.kek_uri for r in store.pseudonym_keys("orders")} == {kek_uri}  # ignored
    finally:
        store.close()
    with Keyring(store_url, {"orders": [kek_uri, other]}) as both:
        assert both.encryption_key("orders", "cust-2").person == "cust-2"
        assert [r.person for r in both.keys("orders", person="cust-1")] == ["cust-1"]  # the domain's own key


def test_a_domain_whose_pseudonym_key_is_lost_is_refused_never_rekeyed_or_skipped(store_url: str, kek_uri: str) -> None:
    """Found by review: a domain holding data subjects' keys whose pseudonym-key rows were deleted got a new key (its
    people's keys unreachable by id) and was skipped by a shred by id (their keys survived an erasure)."""
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders", "cust-1")
        kr.encryption_key("payments", "cust-1")
    sql(store_url, "DELETE FROM fieldcrypt_pseudonym_keys WHERE domain = 'payments'")
    with Keyring(store_url, kek_uri) as kr:
        with pytest.raises(KeyCorruptedError, match=r"'payments'.*Nothing was done"):
            kr.shred_person("cust-1", reason="erasure 4")
        assert len(kr.keys()) == 2
        with pytest.raises(KeyCorruptedError, match="no pseudonym key"):
            kr.encryption_key("payments", "cust-2")


def test_a_shred_by_id_where_no_domain_holds_data_subjects_says_no_key_held(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders")  # a domain's key, nobody's
        report = kr.shred_person("cust-1", reason="erasure 5")
        assert [(p.person, p.outcome) for p in report.persons] == [("cust-1", "no key held")]
        assert len(kr.keys()) == 1


def test_a_garbage_copy_under_a_recorded_kek_is_replaced_not_trusted_by_a_kek_change(
    store_url: str, kek_uri: str, tmp_path: Path
) -> None:
    """Found by review: any producer login may add a copy under a KEK the domain records; a copy of garbage under the
    domain's next KEK made kek add skip it and retire drop the only real copy."""
    new = fieldcrypt.create_local_kek(tmp_path / "new.json")
    with Keyring(store_url, {"orders": [kek_uri, new]}) as admin:
        admin.encryption_key("orders", "cust-0")  # recorded under kek_uri, the domain's first copy
        admin.add_kek("orders", new)
    sql(store_url, f"DELETE FROM fieldcrypt_pseudonym_keys WHERE kek_uri = '{new}'")  # as before the copy was added
    store: Any = open_store(store_url)
    try:
        [real] = store.pseudonym_keys("orders")
        store.add_pseudonym_key(
            PseudonymKey(new, b"\x01" * 64, real.fingerprint, 0.0, "orders"),
            AuditEntry(at=1.0, actor="someone", operation="pseudonymize"),
        )
    finally:
        store.close()
    with Keyring(store_url, {"orders": [kek_uri, new]}) as admin:
        admin.add_kek("orders", new)  # again: the copy under it is checked, found wrong, replaced
        admin.promote_kek("orders", new)
        admin.rewrap(domain="orders")
        admin.retire_kek("orders", kek_uri)
    with Keyring(store_url, {"orders": new}) as after:  # the old KEK gone
        assert [p.outcome for p in after.shred_person("cust-0", reason="erasure 6").persons] == ["erased"]


def test_a_domain_lost_from_both_the_pseudonym_keys_and_the_domain_records_is_still_found(
    store_url: str, kek_uri: str
) -> None:
    """Found by review: a partial restore of the two small tables hid a domain from a shred by id, which then said
    'erased' while the person's keys there survived."""
    with Keyring(store_url, kek_uri) as kr:
        kr.encryption_key("orders", "cust-1")
        kr.encryption_key("payments", "cust-1")
    sql(store_url, "DELETE FROM fieldcrypt_pseudonym_keys WHERE domain = 'payments'")
    sql(store_url, "DELETE FROM fieldcrypt_domains WHERE domain = 'payments'")
    with Keyring(store_url, kek_uri) as kr:
        with pytest.raises(KeyCorruptedError, match="'payments'"):
            kr.shred_person("cust-1", reason="erasure 7")
        with pytest.raises(KeyCorruptedError, match="'payments'"):
            kr.rotate("payments", "cust-1")
        assert len(kr.keys()) == 2


def test_an_audit_by_id_can_name_the_domain_a_team_holds(store_url: str, kek_uri: str, tmp_path: Path) -> None:
    other = fieldcrypt.create_local_kek(tmp_path / "other.json")
    with Keyring(store_url, {"orders": kek_uri, "hr": other}) as kr:
        kr.encryption_key("orders", "cust-1")
        kr.encryption_key("hr", "cust-1")
    with Keyring(store_url, {"orders": kek_uri}) as team:
        with pytest.raises(ConfigurationError, match="'hr'"):
            team.audit(person="cust-1")
        assert [(e.operation, e.domain) for e in team.audit(person="cust-1", domain="orders")] == [("create", "orders")]
        with pytest.raises(ConfigurationError, match="give one too"):  # a domain alone is never ignored
            team.audit(domain="orders")
