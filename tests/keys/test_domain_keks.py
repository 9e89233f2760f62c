"""Issue 18, part 1: who may read which field is decided by keys, one KEK per key domain.

A key admin maps key domains to KEKs; the key store records the mapping when a domain's first key is made and
refuses a producer configured otherwise; a data key is unwrapped only by its domain's recorded KEK (never by another
KEK the keyring holds); a domain's KEK changes in audited steps without an outage; a branch key per domain keeps KMS
calls flat in the number of people; a consumer holding some KEKs reads their fields and gets ``on.denied`` for the
rest. SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from conftest import value_ctx
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import (
    AccessDeniedError,
    ConfigurationError,
    KeyCorruptedError,
    Keyring,
    create_key_store,
    create_local_kek,
    open_kek,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.cli import main as cli
from fieldcrypt.keys.kek import Kek

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield create_key_store(url)


@pytest.fixture
def keks(tmp_path: Path) -> dict[str, str]:
    return {name: create_local_kek(tmp_path / f"{name}.json") for name in ("contact", "health", "default", "new")}


class Counting:
    """A KEK's AEAD that counts the calls made to it (the KMS calls a remote KEK would get)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.encrypts = 0
        self.decrypts = 0

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        self.encrypts += 1
        return self.inner.encrypt(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        self.decrypts += 1
        return self.inner.decrypt(ciphertext, associated_data)


def counting(uri: str) -> Kek:
    kek = open_kek(uri)
    return dataclasses.replace(kek, aead=Counting(kek.aead))


def calls(kek: Kek) -> tuple[int, int]:
    assert isinstance(kek.aead, Counting)
    return kek.aead.encrypts, kek.aead.decrypts


# -- one KEK per domain -----------------------------------------------------------------------------------------------
def test_each_domain_s_keys_are_wrapped_by_its_own_kek(store: str, keks: dict[str, str]) -> None:
    mapping = {"contact": keks["contact"], "health": keks["health"], "*": keks["default"]}
    with Keyring(store, mapping) as kr:
        c, h, o = kr.encryption_key("contact", "p-1"), kr.encryption_key("health", "p-1"), kr.encryption_key("orders")
        listed = {r.key_id: r.kek_uri for r in kr.keys()}
        assert listed == {c.key_id: keks["contact"], h.key_id: keks["health"], o.key_id: keks["default"]}
        assert {d.domain: d.keks for d in kr.domains()} == {
            "contact": (keks["contact"],),
            "health": (keks["health"],),
            "orders": (keks["default"],),
        }
        # the audit log says which KEK each domain was given, when its first key was made
        maps = [(e.domain, e.detail) for e in kr.audit(operation="kek-map")]
        assert ("health", f"primary {keks['health']}") in maps


def test_a_producer_with_another_kek_for_a_recorded_domain_is_refused(store: str, keks: dict[str, str]) -> None:
    with Keyring(store, {"health": keks["health"]}) as first:
        first.encryption_key("health", "p-1")
    # its own entry wins over a "*" entry that holds the right KEK
    for wrong in ({"health": keks["contact"]}, keks["contact"], {"health": keks["contact"], "*": keks["health"]}):
        with Keyring(store, wrong) as producer, pytest.raises(ConfigurationError) as err:
            producer.encryption_key("health", "p-2")  # a new person: a new key would be made
        assert "'health'" in str(err.value) and keks["health"] in str(err.value)
    with Keyring(store, {"health": keks["health"]}) as kr:  # nothing was made under the wrong KEK
        assert {r.kek_uri for r in kr.keys("health")} == {keks["health"]}


def test_a_key_row_planted_under_another_domain_s_kek_is_never_used(store: str, keks: dict[str, str]) -> None:
    """Someone who can write key rows plants a ``health`` key wrapped by the ``contact`` KEK (its associated data
    right, so the contact KEK unwraps it): a service holding both KEKs must not use it."""
    both = {"contact": keks["contact"], "health": keks["health"]}
    with Keyring(store, both) as kr:
        kr.encryption_key("health", "p-0")  # the health domain exists, recorded under the health KEK
    with Keyring(store, {"planted": keks["contact"]}) as attacker:  # a key made with the contact KEK...
        planted = attacker.encryption_key("planted", "p-9")
    row = next(r for r in Keyring(store, keks["default"]).keys("planted"))
    branch = Keyring(store, keks["default"]).store.branch(row.branch_id)
    assert branch is not None
    # ...its branch key moved into the health domain (rows rewritten in SQL, as such an attacker would)
    _sql(
        store,
        "UPDATE fieldcrypt_branches SET domain = 'health', state = 'retired', version = 99 WHERE branch_id = ?",
        branch.key_id,
    )
    _sql(store, "UPDATE fieldcrypt_keys SET domain = 'health' WHERE key_id = ?", planted.key_id)
    for config in (both, [keks["contact"], keks["health"]]):
        with Keyring(store, config) as reader, pytest.raises(KeyCorruptedError) as err:
            reader.decryption_key(planted.key_id)
        assert "not a KEK recorded for that domain" in str(err.value)


def test_a_consumer_without_the_domain_s_kek_is_denied_without_any_kms_call(store: str, keks: dict[str, str]) -> None:
    with Keyring(store, {"contact": keks["contact"], "health": keks["health"]}) as producer:
        c, h = producer.encryption_key("contact", "p-1"), producer.encryption_key("health", "p-1")
    contact = counting(keks["contact"])
    with Keyring(store, {"contact": contact}) as support:
        assert support.decryption_key(c.key_id).key_id == c.key_id
        before = calls(contact)
        for _ in range(3):  # the second and third time from the negative cache
            with pytest.raises(AccessDeniedError) as err:
                support.decryption_key(h.key_id)
        assert calls(contact) == before  # the contact KEK is never tried on a health key
        assert "'health'" in str(err.value) and err.value.key_id == h.key_id


# -- branch keys: KMS calls do not grow with the number of people ------------------------------------------------------
def test_kms_calls_stay_flat_in_the_number_of_people(store: str, keks: dict[str, str]) -> None:
    people = 300
    writer_kek = counting(keks["contact"])
    with Keyring(store, {"contact": writer_kek}) as producer:
        ids = [producer.encryption_key("contact", f"p-{i}").key_id for i in range(people)]
    # one branch key wrapped (Tink checks a wrap by unwrapping it: 2 calls); 300 person keys wrapped locally
    assert calls(writer_kek) == (2, 1)  # and the store's new pseudonym key wrapped (1 call, once per store and KEK)
    reader_kek = counting(keks["contact"])
    with Keyring(store, {"contact": reader_kek}) as consumer:
        assert [consumer.decryption_key(k).key_id for k in ids] == ids
    assert calls(reader_kek) == (0, 1)  # one unwrap of the branch key for 300 cold person keys


def test_shredding_a_person_destroys_their_keys_in_every_domain_and_a_domain_its_branch_keys(
    store: str, keks: dict[str, str]
) -> None:
    mapping = {"contact": keks["contact"], "health": keks["health"]}
    with Keyring(store, mapping) as kr:
        mine = [kr.encryption_key(d, "p-1").key_id for d in ("contact", "health")]
        other = kr.encryption_key("contact", "p-2").key_id
        assert {r.kek_uri for r in kr.keys(person="p-1")} == {keks["contact"], keks["health"]}
        report = kr.shred_person("p-1", reason="erasure 1")
        assert sorted(r.key_id for r in report.destroyed) == sorted(mine)
        assert kr.decryption_key(other).key_id == other  # the branch key of contact is untouched
        branches = kr.store.branches("contact")
        assert branches
        kr.shred_domain("contact", reason="decommissioned")
        assert kr.store.branches("contact") == [] and kr.store.branches("health") != []
        assert "1 branch key destroyed" in kr.audit(operation="shred")[-1].detail
    with Keyring(store, mapping) as fresh, pytest.raises(fieldcrypt.KeyShreddedError):
        fresh.decryption_key(other)


# -- KEK changes without an outage -------------------------------------------------------------------------------------
def test_a_kek_change_in_audited_steps_with_producers_and_consumers_running(store: str, keks: dict[str, str]) -> None:
    old, new = keks["contact"], keks["new"]
    admin = Keyring(store, {"contact": [old, new]}, actor="admin")
    producer_old = Keyring(store, {"contact": old})  # not yet told of the new KEK
    ids = [producer_old.encryption_key("contact", "p-0").key_id]

    def everyone_reads(*readers: Keyring) -> None:
        for r in readers:
            r.clear_cache()
            assert [r.decryption_key(k).key_id for k in ids] == ids

    # 1. add: accepted, not yet used; every client keeps working
    admin.add_kek("contact", new, reason="KMS key rotation, ticket 12")
    ids.append(producer_old.encryption_key("contact", "p-1").key_id)
    everyone_reads(producer_old, admin)
    # clients learn the new KEK (their configuration lists both)
    learned = Keyring(store, {"contact": [new, old]})
    ids.append(learned.encryption_key("contact", "p-2").key_id)
    # 2. promote: new branch keys are wrapped by the new KEK; keys under the old one still read
    admin.promote_kek("contact", new, reason="ticket 12")
    with pytest.raises(ConfigurationError, match="'contact'"):  # a client that never learned it cannot write
        Keyring(store, {"contact": old}).encryption_key("contact", "p-3")
    ids.append(learned.encryption_key("contact", "p-4").key_id)
    everyone_reads(learned, admin)
    # 3. rewrap: the domain's branch keys move to the new KEK (other domains untouched)
    with Keyring(store, {"other": old}) as elsewhere:
        other_id = elsewhere.encryption_key("other").key_id
    with pytest.raises(ConfigurationError, match="still wraps"):  # 4. refused before the rewrap
        admin.retire_kek("contact", old, reason="ticket 12")
    assert admin.rewrap(domain="contact", reason="ticket 12") >= 1
    assert {r.kek_uri for r in admin.keys("contact")} == {new}
    assert {r.kek_uri for r in admin.keys("other")} == {old}
    everyone_reads(learned, admin)
    # 4. retire the old KEK: it no longer wraps anything of the domain
    record = admin.retire_kek("contact", old, reason="ticket 12")
    assert record.keks == (new,)
    with Keyring(store, {"contact": new, "other": old}) as after:
        everyone_reads(after)
        assert after.decryption_key(other_id).key_id == other_id
    trail = [e.operation for e in admin.audit() if e.domain == "contact" and e.operation.startswith("kek")]
    assert trail == ["kek-map", "kek-add", "kek-promote", "kek-retire"]
    assert all(e.actor == "admin" for e in admin.audit() if e.operation in ("kek-add", "kek-promote", "kek-retire"))
    for kr in (admin, producer_old, learned):
        kr.close()


def test_admin_kek_acts_refuse_what_they_cannot_do(store: str, keks: dict[str, str]) -> None:
    with Keyring(store, {"contact": keks["contact"]}) as kr:
        with pytest.raises(ConfigurationError, match="no recorded KEK"):
            kr.add_kek("contact", keks["contact"])
        kr.map_kek("contact", keks["contact"], reason="set up")
        kr.map_kek("contact", keks["contact"])  # the same again: nothing to do
        with pytest.raises(ConfigurationError, match="does not hold"):  # a KEK this admin cannot use (a typo)
            kr.add_kek("contact", "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/typo")
        with pytest.raises(ConfigurationError, match="not an accepted KEK"):
            kr.promote_kek("contact", keks["health"])
        with pytest.raises(ConfigurationError, match="primary"):
            kr.retire_kek("contact", keks["contact"])


def test_the_kek_mapping_is_checked(store: str, keks: dict[str, str]) -> None:
    for bad in ({}, {"": keks["contact"]}, {"contact": []}, {"contact": [""]}, {"contact": 3}, []):
        with pytest.raises(ConfigurationError):
            Keyring(store, bad)  # type: ignore[arg-type]
    with Keyring(store, {"contact": keks["contact"]}) as kr, pytest.raises(ConfigurationError, match="no KEK"):
        kr.encryption_key("health")  # no entry for it and no "*" entry


# -- a consumer holding some domains' KEKs ---------------------------------------------------------------------------
SCHEMA = {
    "type": "record",
    "name": "Patient",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["SUBJECT"]},
        {"name": "email", "type": "string", "confluent:tags": ["CONTACT"]},
        {"name": "diagnosis", "type": "string", "confluent:tags": ["HEALTH"]},
        {"name": "visits", "type": "int"},
    ],
}
DOMAINS = {"CONTACT": "contact", "HEALTH": "health"}


def serdes(registry: SchemaRegistryClient, keyring: Keyring, **reading: Any) -> tuple[Any, Any]:
    base = {
        "fieldcrypt.tags": ["CONTACT", "HEALTH"],
        "fieldcrypt.tag.domains": DOMAINS,
        "fieldcrypt.data.subject.tag": "SUBJECT",
    }
    ser = AvroSerializer(registry, json.dumps(SCHEMA), keyring=keyring, conf=base)
    de = AvroDeserializer(registry, keyring=keyring, conf={**base, **reading})
    return ser, de


def test_a_consumer_reads_the_fields_of_its_domains_and_the_others_follow_on_denied(
    store: str, keks: dict[str, str]
) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://domains"})
    record = {"id": "p-1", "email": "jane@example.com", "diagnosis": "flu", "visits": 2}
    with Keyring(store, {"contact": keks["contact"], "health": keks["health"]}) as producer:
        ser, _ = serdes(registry, producer)
        data = ser(record, value_ctx("patients"))
    with Keyring(store, {"contact": keks["contact"]}) as support:
        _, de = serdes(registry, support, **{"fieldcrypt.on.denied": "null"})
        assert de(data, value_ctx("patients")) == {**record, "diagnosis": "<denied>"}  # not nullable: the placeholder
        assert de.stats.denied_by_field == {"t.Patient.diagnosis": 1}
        _, strict = serdes(registry, support)  # the default: raise
        with pytest.raises(AccessDeniedError) as err:
            strict(data, value_ctx("patients"))
        assert err.value.field_path is not None and "diagnosis" in err.value.field_path
    with Keyring(store, {"health": keks["health"]}) as payments:
        _, de = serdes(registry, payments, **{"fieldcrypt.on.denied": "null"})
        assert de(data, value_ctx("patients")) == {**record, "email": "<denied>"}


def test_a_producer_cannot_move_a_field_to_another_domain(store: str, keks: dict[str, str]) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://moved"})
    record = {"id": "p-1", "email": "jane@example.com", "diagnosis": "flu", "visits": 2}
    mapping = {"contact": keks["contact"], "health": keks["health"]}
    with Keyring(store, mapping) as good:
        serdes(registry, good)[0](record, value_ctx("patients"))
    with Keyring(store, mapping) as bad:
        ser = AvroSerializer(
            registry,
            json.dumps(SCHEMA),
            keyring=bad,
            conf={
                "fieldcrypt.tags": ["CONTACT", "HEALTH"],
                "fieldcrypt.tag.domains": {"CONTACT": "contact", "HEALTH": "contact"},
                "fieldcrypt.data.subject.tag": "SUBJECT",
            },
        )
        with pytest.raises(ConfigurationError) as err:
            ser(record, value_ctx("patients"))
    assert "t.Patient.diagnosis" in str(err.value) and "'health'" in str(err.value)


# -- the CLI, the configuration file and the environment take the mapping --------------------------------------------
def test_cli_kek_mapping_and_kek_change(
    store: str, keks: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    with Keyring(store, {"contact": keks["contact"], "health": keks["health"]}) as kr:
        kr.encryption_key("contact", "p-1")
        kr.encryption_key("health", "p-1")
    monkeypatch.setenv("FIELDCRYPT_STORE", store)
    monkeypatch.setenv("FIELDCRYPT_KEK", f"contact={keks['contact']},{keks['new']}")
    assert cli(["kek", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["domain"], r["role"], r["kek"]) for r in rows} == {
        ("contact", "primary", keks["contact"]),
        ("health", "primary", keks["health"]),
    }
    assert cli(["kek", "add", "contact", keks["new"], "--reason", "t-1"]) == 0
    assert cli(["kek", "promote", "contact", keks["new"], "--reason", "t-1"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("FIELDCRYPT_KEK")
    config = tmp_path / "config.toml"
    config.write_text(f'[kek]\ncontact = ["{keks["new"]}", "{keks["contact"]}"]\n"*" = "{keks["default"]}"\n')
    assert cli(["keys", "rewrap", "--config", str(config), "--domain", "contact", "--reason", "t-1"]) == 0
    capsys.readouterr()
    assert cli(["kek", "retire", "contact", keks["contact"], "--config", str(config), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["role"], r["kek"], r["keys"]) for r in rows] == [("primary", keks["new"], 1)]  # its branch key
    assert cli(["keys", "list", "--domain", "contact", "--json", "--kek", f"contact={keks['new']}"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["kek"] for r in listed} == {keks["new"]}
    assert cli(["keys", "list", "--domain", "health", "--json"]) == 0
    assert {r["kek"] for r in json.loads(capsys.readouterr().out)} == {keks["health"]}
    assert cli(["kek", "add", "contact"]) == 2  # a usage error: the URI is missing


def _sql(store: str, statement: str, *args: Any) -> None:
    if store.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(store[len("sqlite:///") :])
        with db:
            db.execute(statement, args)
        db.close()
        return
    import psycopg

    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(statement.replace("?", "%s"), args)


def test_shredding_a_domain_or_a_person_in_it_shreds_its_masked_views_too(store: str, keks: dict[str, str]) -> None:
    mapping = {"contact": keks["contact"], "contact/masked": keks["default"], "contactless": keks["health"]}
    with Keyring(store, mapping) as kr:
        value, view = kr.encryption_key("contact", "p-1"), kr.encryption_key("contact/masked", "p-1")
        kept = kr.encryption_key("contactless", "p-1")  # a domain whose name only starts alike
        dry = kr.shred_person("p-1", domain="contact", reason="erasure 2", dry_run=True)
        assert sorted(r.key_id for r in dry.destroyed) == sorted([value.key_id, view.key_id])
        report = kr.shred_person("p-1", domain="contact", reason="erasure 2")
        assert sorted(r.key_id for r in report.destroyed) == sorted([value.key_id, view.key_id])
        assert kr.decryption_key(kept.key_id).key_id == kept.key_id
        kr.encryption_key("contact", "p-2"), kr.encryption_key("contact/masked", "p-2")
        kr.shred_domain("contact", reason="decommissioned")
        assert kr.keys("contact") == [] and kr.keys("contact/masked") == []
        assert kr.store.branches("contact/masked") == [] and kr.keys("contactless") != []


# -- a store made before domain records and branch keys ----------------------------------------------------------------
def test_keys_init_upgrades_an_older_store_and_records_its_domains_keks(store: str, keks: dict[str, str]) -> None:
    from fieldcrypt.keys.registry import open_store

    class Direct(type(open_store(store))):  # type: ignore[misc]
        supports_branches = False  # data keys wrapped by the KEK itself, as before branch keys

    with Keyring(Direct(store), keks["contact"]) as old:
        made = [old.encryption_key("contact", f"p-{i}").key_id for i in range(3)]
    # what an older fieldcrypt's store looks like: no domain records, no branch keys, no branch_id column
    for statement in (
        "DROP TABLE fieldcrypt_domains",
        "DROP TABLE fieldcrypt_branches",
        "ALTER TABLE fieldcrypt_keys DROP COLUMN branch_id",
    ):
        _sql(store, statement)
    with pytest.raises(ConfigurationError, match="upgraded"):
        Keyring(store, keks["contact"])
    assert cli(["keys", "init", "--store", store]) == 0
    with Keyring(store, {"contact": keks["contact"]}) as kr:
        assert kr.domains() == [fieldcrypt.DomainKeks("contact", keks["contact"])]
        assert [kr.decryption_key(k).key_id for k in made] == made  # wrapped by the KEK: read as before
        new = kr.encryption_key("contact", "p-9")
        assert kr.store.get(new.key_id).branch_id != 0  # type: ignore[union-attr]
        assert kr.audit(operation="kek-map")[-1].actor == "fieldcrypt keys init"  # recorded by the upgrade
    with Keyring(store, {"contact": keks["health"]}) as wrong, pytest.raises(ConfigurationError, match="'contact'"):
        wrong.encryption_key("contact", "p-10")


def test_a_producer_that_has_not_seen_a_promotion_never_makes_a_branch_key_under_the_old_kek(
    store: str, keks: dict[str, str]
) -> None:
    from fieldcrypt import FakeClock, RotationPolicy

    old, new = keks["contact"], keks["new"]
    clock = FakeClock(1_000.0)
    producer = Keyring(store, {"contact": [old, new]}, clock=clock, rotation=RotationPolicy(max_age=60))
    producer.encryption_key("contact", "p-1")  # the domain's record (primary: old) is cached now
    with Keyring(store, {"contact": [old, new]}) as admin:
        admin.add_kek("contact", new)
        admin.promote_kek("contact", new)
    clock.advance(61)  # the branch key is due: the producer makes the next one, under the primary of now
    producer.encryption_key("contact", "p-1")
    assert [b.kek_uri for b in producer.store.branches("contact")] == [old, new]
    producer.close()


# -- found by review: what a keyring holding other domains' KEKs may not do ----------------------------------------
def test_one_team_s_rewrap_of_every_domain_leaves_other_teams_domains_alone(store: str, keks: dict[str, str]) -> None:
    with Keyring(store, {"contact": keks["contact"], "health": keks["health"]}) as producer:
        ids = [producer.encryption_key(d, "p-1").key_id for d in ("contact", "health")]
    with Keyring(store, [keks["new"], keks["contact"]]) as contact_admin:  # keys rewrap --kek NEW --old-kek A
        contact_admin.rewrap(reason="rotate the contact team's KEK")
        assert {d.domain: d.keks for d in contact_admin.domains()} == {
            "contact": (keks["new"],),
            "health": (keks["health"],),  # untouched: this admin holds none of its KEKs
        }
        with pytest.raises(ConfigurationError, match="primary KEK of key domain 'health'"):
            contact_admin.add_kek("health", keks["new"])  # holding the new KEK alone is not enough
    with Keyring(store, {"contact": keks["new"], "health": keks["health"]}) as reader:
        assert [reader.decryption_key(k).key_id for k in ids] == ids


def test_a_domain_whose_keys_several_keks_wrap_waits_for_an_admin(store: str, keks: dict[str, str]) -> None:
    from fieldcrypt.keys.registry import open_store

    class Direct(type(open_store(store))):  # type: ignore[misc]
        supports_branches = False

    # b also holds the KEK a's new store wrapped its pseudonym key by (so b can name data subjects), for no domain
    b_keks = {"*": keks["health"], "unused": keks["contact"]}
    with Keyring(Direct(store), keks["contact"]) as a, Keyring(Direct(store), b_keks) as b:
        # keys of one domain under two KEKs, with no record, as a store before domain records may hold them
        a.encryption_key("billing", "p-1")
        b.encryption_key("billing-b", "p-2")
        _sql(store, "UPDATE fieldcrypt_keys SET domain = 'billing' WHERE domain = 'billing-b'")
        _sql(store, "DELETE FROM fieldcrypt_domains")
    create_key_store(store)  # keys init: which of the two is genuine is not for key rows to say
    with Keyring(store, {"billing": keks["contact"]}) as producer:
        assert producer.domains() == [] and producer.store.unrecorded_domains() == {
            "billing": sorted([keks["contact"], keks["health"]])
        }
        with pytest.raises(ConfigurationError, match="kek map billing"):
            producer.encryption_key("billing", "p-3")
        producer.map_kek("billing", keks["contact"], reason="ticket 9")  # the admin vouches
        assert producer.domains()[0].keks == (keks["contact"], keks["health"])
        producer.encryption_key("billing", "p-3")


def test_a_reader_with_a_stale_record_reads_it_again_before_calling_a_row_tampered(
    store: str, keks: dict[str, str]
) -> None:
    old, new = keks["contact"], keks["new"]
    with Keyring(store, {"contact": old}) as producer:
        first = producer.encryption_key("contact", "p-1").key_id
    reader = Keyring(store, {"contact": [new, old]})
    assert reader.decryption_key(first).key_id == first  # the record (primary: old) is cached now
    with Keyring(store, [new, old]) as admin:
        admin.rewrap(reason="one-shot KEK rotation")  # add, promote, rewrap, retire
    reader.clear_cache()
    reader._domain_keks.put("contact", (fieldcrypt.DomainKeks("contact", old),))  # as if read just before
    assert reader.decryption_key(first).key_id == first
    reader.close()
