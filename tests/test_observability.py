"""Observability (issue #10, part 7): the counters on ``serializer.stats`` / ``deserializer.stats``, the log events,
and the Prometheus export; none of them ever holds a value, a person's id or key material.

docs/observability.md lists every counter and event tested here."""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from confluent_kafka.serialization import SerializationError
from conftest import customer, load_schema, value_ctx

import fieldcrypt
from fieldcrypt import (
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    Keyring,
    KeyStoreUnavailableError,
    SerdeStats,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.observe.stats import LATENCY_BUCKETS

FORMATS = ("avro", "json")
PII = ("email", "ssn", "fullName")


def record(i: int, **over: Any) -> dict[str, Any]:
    rec = customer(i, **over)
    rec["purchaseAmount"] = float(rec["purchaseAmount"])  # JSON reads it back as a float
    return rec


def serde(fmt: str, registry: Any, keyring: Keyring, **read: Any) -> tuple[Any, Any]:
    conf = {f"fieldcrypt.{k.replace('_', '.')}": v for k, v in read.items()}
    if fmt == "avro":
        return (
            AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring),
            AvroDeserializer(registry, conf=conf, keyring=keyring),
        )
    return (
        JSONSerializer(load_schema("customer_event.schema.json"), registry, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


def tampered(fmt: str, registry: Any, data: bytes) -> bytes:
    """``data`` with one character changed in the middle of the email's ciphertext (same length, valid base64)."""
    plain: Any = (
        PlainAvroDeserializer(registry)
        if fmt == "avro"
        else PlainJSONDeserializer(None, schema_registry_client=registry)
    )
    text = plain(data, value_ctx())["email"]
    i = len(text) // 2
    forged = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
    assert data.count(text.encode()) == 1
    return data.replace(text.encode(), forged.encode())


@pytest.fixture
def other_keyring(store_url: str, kek_uri: str) -> Iterator[Keyring]:
    """Another process on the same store and KEK: its own, empty caches."""
    with Keyring(store_url, kek_uri) as kr:
        yield kr


# --- the counters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_counts_of_a_producer_and_a_consumer(fmt: str, registry, keyring: Keyring, other_keyring: Keyring) -> None:
    ser, _ = serde(fmt, registry, keyring)
    _, de = serde(fmt, registry, other_keyring)
    assert ser.stats.role == "serializer" and de.stats.role == "deserializer"
    assert isinstance(ser.stats, SerdeStats) and type(de.stats) is type(ser.stats)

    first = ser(record(1), value_ctx())
    s = ser.stats.snapshot()
    assert (s.records, s.records_tagged, s.values_encrypted, s.key_cache_hits, s.key_cache_misses) == (1, 1, 3, 0, 1)
    assert s.key_store_calls > 0 and s.key_store_seconds > 0  # the policy record, then the new person's key
    calls = s.key_store_calls
    data = [first, ser(record(2), value_ctx()), ser(record(1), value_ctx())]  # person 2 is new, person 1 is cached
    s = ser.stats.snapshot()
    assert (s.records, s.records_tagged, s.values, s.values_encrypted, s.values_decrypted) == (3, 3, 9, 9, 0)
    assert (s.key_cache_hits, s.key_cache_misses, s.errors) == (1, 2, 0)
    assert s.key_store_calls > calls and s.key_store_failures == 0
    assert sum(s.key_store_latency) == s.key_store_calls and len(s.key_store_latency) == len(LATENCY_BUCKETS) + 1
    assert 0 < s.key_store_max_seconds <= s.key_store_seconds

    assert [de(d, value_ctx()) for d in data] == [record(1), record(2), record(1)]
    d = de.stats.snapshot()
    assert (d.records, d.records_tagged, d.values, d.values_decrypted, d.readable, d.values_encrypted) == (
        3,
        3,
        9,
        9,
        9,
        0,
    )
    assert (d.key_cache_misses, d.key_cache_hits, d.erased, d.denied, d.errors) == (2, 1, 0, 0, 0)
    de(data[1], value_ctx())  # both keys are in memory now
    assert (de.stats.key_cache_misses, de.stats.key_cache_hits) == (2, 2)


def test_records_without_tags_are_counted_as_records_only(registry, keyring: Keyring) -> None:
    schema = json.dumps({"type": "record", "name": "Plain", "fields": [{"name": "n", "type": "long"}]})
    ser = AvroSerializer(registry, schema, keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    assert de(ser({"n": 1}, value_ctx("plain")), value_ctx("plain")) == {"n": 1}
    for stats in (ser.stats, de.stats):
        assert (stats.records, stats.records_tagged, stats.values, stats.key_lookups) == (1, 0, 0, 0)
    assert ser(None, value_ctx("plain")) is None and ser.stats.records == 1  # a tombstone is no record


@pytest.mark.parametrize("fmt", FORMATS)
def test_erased_and_denied_values(fmt: str, registry, keyring: Keyring, store_url: str, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fieldcrypt")
    ser, _ = serde(fmt, registry, keyring)
    data = [ser(record(i % 2), value_ctx()) for i in range(3)]  # persons 0, 1, 0
    keyring.shred_person("cust-0", reason="erasure request")
    _, de = serde(fmt, registry, keyring, on_erased="null")
    out = [de(d, value_ctx()) for d in data]
    # email is a non-nullable string: the placeholder stands in; ssn (nullable) reads as None
    assert out[0]["email"] == "<erased>" and out[0]["ssn"] is None and out[1] == record(1)
    s = de.stats
    assert (s.records, s.values, s.erased, s.denied, s.values_decrypted) == (3, 9, 6, 0, 3)
    assert s.key_lookups == 3  # one per record and key, erased ones too (not one per value)
    # per field path: person 0's two records, 3 tagged values each
    assert sum(s.erased_by_field.values()) == 6 and len(s.erased_by_field) == 3 and not s.denied_by_field
    assert set(s.erased_by_field.values()) == {2}
    assert s.as_dict()["erased_by_field"] == s.erased_by_field

    stranger = Keyring(store_url, fieldcrypt.create_local_kek(tmp_path / "other-kek.json"))  # cannot unwrap any key
    _, blind = serde(fmt, registry, stranger, on_denied="null", on_erased="null")
    [blind(d, value_ctx()) for d in data]
    b = blind.stats
    assert (b.records, b.values, b.erased, b.denied, b.values_decrypted, b.errors) == (3, 9, 6, 3, 0, 0)
    assert b.erased_by_field == s.erased_by_field and set(b.denied_by_field.values()) == {1}
    assert len(b.denied_by_field) == 3  # person 1's record: each tagged field once, by path, never a value
    assert b.key_lookups == 3
    # one warning per key this consumer cannot unwrap, not one per value: the answer is cached
    denied = [r for r in caplog.records if getattr(r, "event", None) == "key.denied"]
    assert len(denied) == 1 and denied[0].levelno == logging.WARNING and denied[0].name == "fieldcrypt.keys"
    assert any(getattr(r, "event", None) == "key.shredded" and r.levelno == logging.INFO for r in caplog.records)
    stranger.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_refused_records_count_as_errors_not_records(fmt: str, registry, keyring: Keyring, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fieldcrypt")
    ser, de = serde(fmt, registry, keyring)
    good = ser(record(1), value_ctx())
    with pytest.raises(EncryptionError if fmt == "avro" else SerializationError) as tagged:
        ser(record(1, email=3), value_ctx())  # a tagged value of the wrong type (JSON: the validator says so first)
    with pytest.raises(Exception) as untagged:
        ser(record(1, items="many"), value_ctx())  # refused by the writer (after encryption) or the validator
    s = ser.stats
    assert (s.records, s.values, s.errors) == (1, 3, 2)
    assert s.errors_by_type == dict(Counter(type(e.value).__name__ for e in (tagged, untagged)))

    with pytest.raises(DecryptionError) as err:
        de(tampered(fmt, registry, good), value_ctx())
    assert type(err.value) is DecryptionError
    assert de(good, value_ctx()) == record(1)
    d = de.stats
    assert (d.records, d.values, d.errors, d.errors_by_type) == (1, 3, 1, {"DecryptionError": 1})
    assert d.key_lookups == 2  # the refused record's lookup counts too
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "record.tampered"]
    assert warning.levelno == logging.WARNING and warning.name == "fieldcrypt.serde"
    assert warning.field_path.endswith("email") and warning.subject == "orders-value"  # type: ignore[attr-defined]
    assert warning.key_id is not None and warning.role == "deserializer"  # type: ignore[attr-defined]
    refused = [r for r in caplog.records if getattr(r, "event", None) == "record.refused"]
    assert len(refused) == 2 and all(r.levelno == logging.DEBUG and r.role == "serializer" for r in refused)  # type: ignore[attr-defined]


def test_key_store_retries_and_outage(registry, store_url: str, kek_uri: str, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fieldcrypt")
    keyring = Keyring(store_url, kek_uri, retries=2, sleep=lambda s: None)
    ser, de = serde("avro", registry, keyring)
    data = ser(record(1), value_ctx())
    keyring.clear_cache()
    real_get, failures = keyring.store.get, [2]

    def flaky(key_id: int) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise KeyStoreUnavailableError("the key store is down (test)")
        return real_get(key_id)

    keyring.store.get = flaky  # type: ignore[method-assign]
    assert de(data, value_ctx()) == record(1)  # two failed attempts, the third answers
    assert (de.stats.key_store_failures, de.stats.key_cache_misses, de.stats.errors) == (2, 1, 0)
    retries = [r for r in caplog.records if getattr(r, "event", None) == "key_store.retry"]
    assert [r.attempt for r in retries] == [1, 2] and {r.levelno for r in retries} == {logging.WARNING}  # type: ignore[attr-defined]

    keyring.clear_cache()
    failures[0] = 10
    with pytest.raises(KeyStoreUnavailableError):
        de(data, value_ctx())
    assert de.stats.errors_by_type == {"KeyStoreUnavailableError": 1} and de.stats.key_store_failures == 5
    [outage] = [r for r in caplog.records if getattr(r, "event", None) == "key_store.unavailable"]
    assert outage.levelno == logging.ERROR and outage.attempts == 3  # type: ignore[attr-defined]
    keyring.close()


def test_exact_totals_from_many_threads(registry, keyring: Keyring, other_keyring: Keyring) -> None:
    """Threads switching as often as the interpreter allows: every record and value is counted, once."""
    threads, per_thread = 8, 150
    ser, _ = serde("avro", registry, keyring)
    _, de = serde("avro", registry, other_keyring)
    data = [ser(record(i % 5), value_ctx()) for i in range(per_thread)]
    ser.stats.reset()
    assert ser.stats.records == 0 and ser.stats.role == "serializer"
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for i, d in enumerate(data):
                ser(record(i % 5), value_ctx())
                de(d, value_ctx())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    n = threads * per_thread
    for stats in (ser.stats, de.stats):
        s = stats.snapshot()
        assert (s.records, s.records_tagged, s.values, s.errors) == (n, n, 3 * n, 0)
        assert s.key_lookups == n and s.key_cache_hits + s.key_cache_misses == n
    assert ser.stats.key_cache_misses == 0  # all five persons' keys were made before the reset
    assert 5 <= de.stats.key_cache_misses <= 5 * threads  # each key loaded at least once, by a thread or several


# --- plain data, compatibility ---------------------------------------------------------------------------------


def test_snapshot_as_dict_reset_and_the_old_read_stats(registry, keyring: Keyring) -> None:
    ser, de = serde("avro", registry, keyring)
    de(ser(record(1), value_ctx()), value_ctx())
    plain = de.stats.as_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert plain["records"] == 1 and plain["values_decrypted"] == 3 and plain["key_cache_hits"] == 1
    assert (
        list(plain["key_store_latency"])[-1] == "+Inf"
        and plain["key_store_latency"]["+Inf"] == plain["key_store_calls"]
    )
    copy = de.stats.snapshot()
    de.stats.reset()
    assert copy.records == 1 and de.stats.records == 0 and de.stats.role == "deserializer"
    assert de.stats.key_store_latency == [0] * (len(LATENCY_BUCKETS) + 1)

    import copy as copying
    import pickle

    assert copying.deepcopy(copy) == copy and pickle.loads(pickle.dumps(copy)) == copy

    from fieldcrypt.core.engine import ReadStats  # the name fieldcrypt verify uses

    assert ReadStats is SerdeStats
    again = ReadStats(**{**asdict(copy), "plaintext_by_field": dict(copy.plaintext_by_field)})
    assert again == copy and again.readable == 3 and again.values == 3


# --- nothing secret anywhere -----------------------------------------------------------------------------------

SECRET_TEXT = "CANARY-plaintext-5b1e@example.com"
SECRET_PERSON = "PERSON-ID-CANARY-77a1"


def _raw_key(keyring: Keyring, key_id: int) -> bytes:
    import tink
    from tink import secret_key_access

    from fieldcrypt.crypto.cipher import _key_bytes, split_check, wrap_ad

    rec = keyring.store.get(key_id)
    assert rec is not None
    ad = wrap_ad(rec.key_id, rec.domain, rec.person, rec.version)
    # the data key is wrapped by its domain's branch key (itself wrapped by the KEK)
    wrapping = keyring._branch(rec.branch_id, rec, time.monotonic() + 5).aead if rec.branch_id else keyring.kek.aead
    handle = tink.proto_keyset_format.parse_encrypted(split_check(rec.wrapped)[1], wrapping, ad)
    return _key_bytes(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_value_person_or_key_in_logs_stats_or_metrics(
    fmt: str, registry, keyring: Keyring, store_url: str, kek_uri: str, tmp_path: Path, caplog
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from fieldcrypt.metrics import register_prometheus

    caplog.set_level(logging.DEBUG)
    ser, de = serde(fmt, registry, keyring)
    mine = record(1, customerId=SECRET_PERSON, email=SECRET_TEXT, fullName=SECRET_TEXT, ssn=SECRET_TEXT)
    good = ser(mine, value_ctx())
    assert de(good, value_ctx()) == mine
    with pytest.raises((EncryptionError, SerializationError)):
        ser({**mine, "email": 3}, value_ctx())
    with pytest.raises(DecryptionError):
        de(tampered(fmt, registry, good), value_ctx())
    [key_id] = [k.key_id for k in keyring.keys(person=SECRET_PERSON)]
    raw = _raw_key(keyring, key_id)
    stranger = Keyring(store_url, fieldcrypt.create_local_kek(tmp_path / "other-kek.json"))
    _, blind = serde(fmt, registry, stranger, on_denied="null")
    denied = blind(good, value_ctx())
    assert denied["email"] == "<denied>" and denied["ssn"] is None  # null only where the schema admits it
    fresh = Keyring(store_url, kek_uri)  # another consumer process: it loads the key from the store
    assert serde(fmt, registry, fresh)[1](good, value_ctx()) == mine
    fresh.close()
    keyring.rotate(keyring.keys()[0].domain, SECRET_PERSON, reason="scheduled")
    keyring.rewrap(reason="KEK rotation")
    keyring.shred_person(SECRET_PERSON, reason="erasure request")
    reader = Keyring(store_url, kek_uri)
    _, late = serde(fmt, registry, reader)
    erased = late(good, value_ctx())
    assert erased["email"] == "<erased>" and erased["ssn"] is None
    metrics = CollectorRegistry()
    register_prometheus(ser, de, blind, late, registry=metrics)

    kek_secret = json.loads(Path(kek_uri.split("://", 1)[1]).read_text())["key"][0]["keyData"]["value"]
    secrets = [SECRET_TEXT, SECRET_PERSON, base64.b64encode(raw).decode(), raw.hex(), kek_secret]
    texts = [r.getMessage() for r in caplog.records]
    texts += [repr(v) for r in caplog.records for v in vars(r).values()]  # every extra field too
    texts += [repr(s.stats) for s in (ser, de, blind, late)]
    texts += [json.dumps(s.stats.as_dict()) for s in (ser, de, blind, late)]
    texts.append(generate_latest(metrics).decode())
    for text in texts:
        for secret in secrets:
            assert secret not in text, text
    events = {getattr(r, "event", None) for r in caplog.records}
    expected = {"key.created", "key.rotated", "key.rewrapped", "key.shredded", "key.loaded", "key.denied"}
    assert expected | {"key.erased", "record.tampered", "record.refused"} <= events
    assert all(r.name.startswith("fieldcrypt.") for r in caplog.records if getattr(r, "event", None))
    stranger.close()
    reader.close()


# --- Prometheus ------------------------------------------------------------------------------------------------


def test_prometheus_exposition(registry, keyring: Keyring) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fieldcrypt.metrics import register_prometheus

    ser, de = serde("avro", registry, keyring)
    metrics = CollectorRegistry()
    collector = register_prometheus(ser, reader=de, registry=metrics)
    data = [ser(record(i), value_ctx()) for i in range(2)]
    with pytest.raises(EncryptionError):
        ser(record(3, email=3), value_ctx())
    for d in data:
        de(d, value_ctx())

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(metrics).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    got = scrape()
    w = (("role", "serializer"), ("serde", "AvroSerializer"))
    r = (("role", "deserializer"), ("serde", "reader"))
    assert got[("fieldcrypt_records_total", w)] == 2 and got[("fieldcrypt_records_total", r)] == 2
    assert got[("fieldcrypt_values_encrypted_total", w)] == 6 and got[("fieldcrypt_values_decrypted_total", r)] == 6
    assert got[("fieldcrypt_errors_total", (("error", "EncryptionError"), *w))] == 1
    assert got[("fieldcrypt_key_cache_misses_total", w)] == 2 and got[("fieldcrypt_key_cache_hits_total", r)] == 2
    assert got[("fieldcrypt_key_store_seconds_count", w)] == ser.stats.key_store_calls
    assert got[("fieldcrypt_key_store_seconds_bucket", (("le", "+Inf"), *w))] == ser.stats.key_store_calls
    assert got[("fieldcrypt_key_store_seconds_sum", w)] == pytest.approx(ser.stats.key_store_seconds)

    ser(record(1), value_ctx())  # read at scrape time: the next scrape sees it, with nothing registered again
    assert scrape()[("fieldcrypt_records_total", w)] == 3
    assert collector.add(AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)) == (
        "AvroSerializer-2"
    )
    assert ("fieldcrypt_records_total", (("role", "serializer"), ("serde", "AvroSerializer-2"))) in scrape()
    with pytest.raises(ConfigurationError, match="already"):
        collector.add(de, "reader")
    with pytest.raises(ConfigurationError):
        register_prometheus(object(), registry=CollectorRegistry())
    custom = CollectorRegistry()
    register_prometheus(de.stats, registry=custom, prefix="shop_fieldcrypt")
    assert "shop_fieldcrypt_records_total" in generate_latest(custom).decode()


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fieldcrypt.metrics import StatsCollector

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"fieldcrypt\[metrics\]"):
        StatsCollector()


def test_stats_and_metrics_are_public() -> None:
    from fieldcrypt import metrics

    assert "SerdeStats" in fieldcrypt.__all__ and fieldcrypt.SerdeStats is SerdeStats
    assert "prometheus_client" not in vars(metrics)  # imported when a collector is made, not before


def test_prometheus_export_refuses_what_it_cannot_use() -> None:
    from prometheus_client import CollectorRegistry

    from fieldcrypt.metrics import register_prometheus

    stats = SerdeStats()
    for prefix in ("fïeld", "1fieldcrypt", "field-crypt", ""):  # exported names would be mangled or invalid
        with pytest.raises(ConfigurationError, match="prefix"):
            register_prometheus(stats, registry=CollectorRegistry(), prefix=prefix)
    with pytest.raises(ConfigurationError, match="CollectorRegistry, got str"):
        register_prometheus(stats, registry="default")  # type: ignore[arg-type]
