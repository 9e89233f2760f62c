"""Key lifecycle with a fake clock: rotation by age and count, cache expiry after load, shred visibility at the
TTL, erased/denied outcomes, rewrap under a new KEK, restore from an older backup, and the audit trail."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import customer, load_schema, value_ctx

import fieldcrypt
from fieldcrypt import (
    AccessDeniedError,
    Denied,
    Erased,
    FakeClock,
    Keyring,
    KeyShreddedError,
    KeyStoreUnavailableError,
    RotationPolicy,
    create_key_store,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

SCHEMA = load_schema("customer_event.avsc")
CANARY = "CANARY-9d2e-lifecycle@example.com"


def serde(registry: Any, keyring: Keyring, **read_conf: Any) -> tuple[AvroSerializer, AvroDeserializer]:
    conf = {f"fieldcrypt.{k.replace('_', '.')}": v for k, v in read_conf.items()}
    return AvroSerializer(registry, SCHEMA, keyring=keyring), AvroDeserializer(registry, conf=conf, keyring=keyring)


def key_ids(data: bytes, registry: Any) -> set[int]:
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    from fieldcrypt.crypto import wire as _wire

    rec = Plain(registry)(data, value_ctx())
    return {_wire.parse(_wire.decode_text(rec[f]))[0] for f in ("email", "ssn", "fullName") if rec[f] is not None}


def test_rotation_by_age(registry, store_url: str, kek_uri: str) -> None:
    clock = FakeClock()
    keyring = Keyring(store_url, kek_uri, clock=clock, rotation=RotationPolicy(max_age=3600), cache_ttl=300)
    ser, de = serde(registry, keyring)
    old = ser(customer(1), value_ctx())
    clock.advance(3599)
    assert key_ids(ser(customer(1), value_ctx()), registry) == key_ids(old, registry)
    clock.advance(2)  # the key is now 3601 s old: the next record must use a new version
    new = ser(customer(1), value_ctx())
    assert key_ids(new, registry).isdisjoint(key_ids(old, registry))
    versions = {k.version: k.state for k in keyring.keys(person="cust-1")}
    assert versions == {1: "retired", 2: "active"}
    assert de(old, value_ctx()) == customer(1) and de(new, value_ctx()) == customer(1)
    # the domain's KEK is recorded, the store's pseudonym key made, the domain's branch key made, then the data key;
    # at max_age both keys are replaced
    assert [e.operation for e in keyring.audit()] == ["kek-map", "pseudonymize", "create", "create", "rotate", "rotate"]


def test_rotation_by_count(registry, store_url: str, kek_uri: str) -> None:
    keyring = Keyring(store_url, kek_uri, rotation=RotationPolicy(max_encryptions=12, lease=4))
    ser, de = serde(registry, keyring)
    produced = [ser(customer(1), value_ctx()) for _ in range(10)]  # 3 values each
    keys = keyring.keys(person="cust-1")
    assert len(keys) >= 2 and [k.state for k in keys][-1] == "active"
    assert all(k.encryptions <= 12 for k in keys)
    assert sum(len(key_ids(p, registry)) for p in produced) >= 10
    for data in produced:
        assert de(data, value_ctx()) == customer(1)


def test_failed_rotation_raises_instead_of_reusing_the_expired_key(registry, store_url: str, kek_uri: str) -> None:
    clock = FakeClock()
    keyring = Keyring(store_url, kek_uri, clock=clock, rotation=RotationPolicy(max_age=60), retries=0)
    ser, _ = serde(registry, keyring)
    ser(customer(1), value_ctx())
    clock.advance(61)
    keyring.store.close()  # the store is gone exactly when the rotation is due
    with pytest.raises(KeyStoreUnavailableError):
        ser(customer(1), value_ctx())


def test_cache_expires_after_load_not_after_use(registry, store_url: str, kek_uri: str) -> None:
    clock = FakeClock()
    admin = Keyring(store_url, kek_uri)
    consumer = Keyring(store_url, kek_uri, clock=clock, cache_ttl=60)
    ser, _ = serde(registry, admin)
    _, de = serde(registry, consumer, on_erased="marker")
    data = ser(customer(7, email=CANARY), value_ctx())
    assert de(data, value_ctx())["email"] == CANARY  # loaded at t=0
    admin.shred_person("cust-7", reason="erasure request #7")
    for _ in range(5):  # used constantly, still expires 60 s after load
        clock.advance(11)
        assert de(data, value_ctx())["email"] == CANARY
    clock.advance(5)
    out = de(data, value_ctx())
    assert isinstance(out["email"], Erased) and isinstance(out["fullName"], Erased)
    assert out["customerId"] == "cust-7" and out["purchaseAmount"] == customer(7)["purchaseAmount"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # null where the schema admits it (ssn: ["null", "string"]); the placeholder where it does not (email)
        ("null", ("<erased>", None)),
        ("placeholder", ("<erased>", "<erased>")),
        ("marker", (Erased, Erased)),
        ("raise", KeyShreddedError),
    ],
)
def test_erased_outcomes(registry, keyring: Keyring, mode: str, expected: Any) -> None:
    ser, _ = serde(registry, keyring)
    data = ser(customer(1), value_ctx())
    other = ser(customer(2), value_ctx())
    report = keyring.shred_person("cust-1")
    assert len(report.destroyed) == 1
    _, de = serde(registry, keyring, on_erased=mode)
    if expected is KeyShreddedError:
        with pytest.raises(KeyShreddedError) as err:
            de(data, value_ctx())
        assert err.value.field_path == "example.shop.CustomerEvent.email" and err.value.key_id is not None
    else:
        out = de(data, value_ctx())
        for value, want in zip((out["email"], out["ssn"]), expected, strict=True):
            assert isinstance(value, want) if isinstance(want, type) else value == want
        assert out["customerId"] == "cust-1"
    assert de(other, value_ctx()) == customer(2)  # everyone else stays readable


def test_denied_is_distinct_from_erased(registry, keyring: Keyring, store_url: str, tmp_path: Path) -> None:
    ser, _ = serde(registry, keyring)
    data = ser(customer(1), value_ctx())
    stranger = Keyring(store_url, fieldcrypt.create_local_kek(tmp_path / "stranger.json"))
    _, de = serde(registry, stranger, on_erased="null", on_denied="marker")
    out = de(data, value_ctx())
    assert isinstance(out["email"], Denied)
    _, strict = serde(registry, stranger)
    with pytest.raises(AccessDeniedError):
        strict(data, value_ctx())
    empty = Keyring(create_key_store(f"sqlite:///{tmp_path / 'empty.db'}"), keyring.kek)
    _, de2 = serde(registry, empty, on_denied="placeholder", denied_placeholder="[no access]")
    assert de2(data, value_ctx())["email"] == "[no access]"


def test_shred_domain_and_noop_reports(registry, keyring: Keyring) -> None:
    ser, de = serde(registry, keyring, on_erased="marker")
    a = ser(customer(1), value_ctx("topic-a"))
    b = ser(customer(1), value_ctx("topic-b"))
    report = keyring.shred_domain("topic-a-value", reason="topic retired")
    assert len(report.destroyed) == 1 and not report.noop
    assert isinstance(de(a, value_ctx("topic-a"))["email"], Erased)
    assert de(b, value_ctx("topic-b")) == customer(1)
    again = keyring.shred_domain("topic-a-value")
    assert again.noop and again.previously_shredded == 1 and "already shredded" in str(again)
    nobody = keyring.shred_person("never-seen")
    assert nobody.noop and "no key held" in str(nobody)
    ops = [(e.operation, e.reason) for e in keyring.audit()]
    assert ops[-3:] == [("shred", "topic retired"), ("shred", ""), ("shred", "")]


def test_rotation_and_rewrap_keep_old_data_readable(registry, store_url: str, kek_uri: str, tmp_path: Path) -> None:
    old_kek = kek_uri
    keyring = Keyring(store_url, old_kek)
    ser, _ = serde(registry, keyring)
    before = [ser(customer(i), value_ctx()) for i in range(3)]
    rotated = keyring.rotate("orders-value", "cust-0", reason="scheduled")
    assert rotated is not None and rotated.version == 2
    new_kek = fieldcrypt.create_local_kek(tmp_path / "kek-2.json")
    during = Keyring(store_url, [new_kek, old_kek])  # new KEK wraps new keys; old one still unwraps
    ser2, de2 = serde(registry, during)
    mid = ser2(customer(0), value_ctx())
    assert all(de2(d, value_ctx()) == customer(i) for i, d in enumerate(before))
    seen = []
    # one KMS call: the domain's branch key moves to the new KEK; the 4 data keys under it need none
    assert during.rewrap(reason="KEK rotation", progress=lambda n, total: seen.append((n, total))) == 1
    assert seen[-1] == (1, 1)
    assert {k.kek_uri for k in during.keys()} == {new_kek}
    assert during.domains()[0].keks == (new_kek,)  # the old KEK, now unused, was retired
    after = Keyring(store_url, new_kek)  # the old KEK is retired: everything still reads
    _, de3 = serde(registry, after)
    assert [de3(d, value_ctx()) for d in before] == [customer(i) for i in range(3)]
    assert de3(mid, value_ctx()) == customer(0)
    assert key_ids(mid, registry) == {rotated.key_id}
    assert [e.operation for e in after.audit()] == [
        *("kek-map", "pseudonymize", "create"),  # the domain's KEK recorded, the pseudonym key and branch key made
        *("create", "create", "create", "rotate"),
        "kek-add",  # the one-shot KEK rotation, each step audited
        "pseudonymize",  # the domain's new KEK gets a copy of its pseudonym key (its holders name its people)
        *("kek-promote", "rewrap", "kek-retire"),
    ]


def test_restore_from_older_backup_cannot_resurrect(registry, tmp_path: Path, kek_uri: str) -> None:
    db = tmp_path / "keys.db"
    shred_log = tmp_path / "shred-log.jsonl"  # kept apart from the database and its backups
    keyring = Keyring(create_key_store(f"sqlite:///{db}"), kek_uri, shred_log=shred_log)
    ser, _ = serde(registry, keyring)
    data = ser(customer(1), value_ctx())
    ser(customer(2), value_ctx())
    keyring.store._read("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    shutil.copy(db, tmp_path / "backup.db")  # nightly backup, taken before the erasure
    keyring.shred_person("cust-1", reason="GDPR art. 17")
    keyring.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", db)  # disaster: the old backup is restored

    reopened = Keyring(f"sqlite:///{db}", kek_uri, shred_log=shred_log)  # re-applies the shred log on open
    _, de = serde(registry, reopened, on_erased="marker")
    assert isinstance(de(data, value_ctx())["email"], Erased)
    assert reopened.keys(person="cust-1") == []
    assert reopened.keys(person="cust-2") != []
    assert reopened.audit()[-1].operation == "restore"


def test_audit_has_one_entry_per_operation_and_no_plaintext(registry, keyring: Keyring, tmp_path: Path) -> None:
    ser, _ = serde(registry, keyring)
    ser(customer(1, email=CANARY), value_ctx())
    ser(customer(2, email=CANARY), value_ctx())
    keyring.rotate("orders-value", "cust-1", reason="manual")
    keyring.rewrap(reason="kek check")
    keyring.shred_person("cust-2", reason="erasure")
    keyring.restore([], reason="drill")
    ops = [e.operation for e in keyring.audit()]
    assert ops == ["kek-map", "pseudonymize", "create", "create", "create", "rotate", "rewrap", "shred", "restore"]
    for entry in keyring.audit():
        assert CANARY not in repr(entry) and entry.actor and entry.at > 0
    import sqlite3

    db = sqlite3.connect(keyring.store.url[len("sqlite:///") :])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # enforced by the database itself
        db.execute("DELETE FROM fieldcrypt_audit")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE fieldcrypt_audit SET reason = 'edited'")
