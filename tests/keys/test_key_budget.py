"""Issue #8: a key's encryption cap holds across processes, restarts and forks; a producer whose key was shredded
elsewhere moves to a new key; expired cache entries leave an idle process without waiting for a lookup.

Values are counted per key id from the ciphertexts themselves (their headers), not from the store's counter."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import fastavro
import pytest
from conftest import customer, load_schema, value_ctx
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import FakeClock, KeyNotFoundError, Keyring, RotationPolicy
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire as _wire

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'budget.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}

#: one tagged value per record, no data subject: every record spends one encryption of the domain's key
ONE_VALUE = {
    "type": "record",
    "name": "Token",
    "namespace": "budget",
    "fields": [{"name": "secret", "type": "string", "confluent:tags": ["PII"]}],
}
PARSED = fastavro.parse_schema({**ONE_VALUE, "fields": [{"name": "secret", "type": "string"}]})
CAP = 1000
PROCESSES = 20
RECORDS = 90

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Overrides conftest's: the same tests on SQLite and PostgreSQL."""
    with STORES[request.param](tmp_path) as url:
        yield fieldcrypt.create_key_store(url)


def key_id_of(framed: bytes) -> int:
    """The key id in the header of the record's one encrypted value (confluent framing: 5 bytes)."""
    record: Any = fastavro.schemaless_reader(io.BytesIO(framed[5:]), PARSED)
    return _wire.parse(_wire.decode_text(record["secret"]))[0]


def produce(ser: AvroSerializer, n: int, tag: str) -> Counter[int]:
    return Counter(key_id_of(ser({"secret": f"{tag}-{i}"}, value_ctx())) for i in range(n))


def fork_all(works: list[Callable[[], dict[str, Any]]], *, parallel: bool, timeout: float = 60.0) -> list[dict]:
    """Run each ``work`` in a forked child (all at once, or one after the other); return what each reported."""
    results: list[dict[str, Any]] = []
    running: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout

    def collect(pid: int, fd: int) -> None:
        data = b""
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                for p, _ in running:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                pytest.fail("a forked child hung")
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        os.close(fd)
        os.waitpid(pid, 0)
        results.append(json.loads(data) if data else {"error": "the child reported nothing"})

    for work in works:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, never return into pytest
            os.close(read)
            try:
                out = work()
            except BaseException as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(out).encode())
            os._exit(0)
        os.close(write)
        running.append((pid, read))
        if not parallel:
            collect(*running.pop())
    while running:
        collect(*running.pop(0))
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors
    return results


def check_cap(store_url: str, kek_uri: str, counts: Counter[int], expected_values: int) -> None:
    assert sum(counts.values()) == expected_values
    assert len(counts) > 1, "the cap never made the key rotate"
    over = {k: n for k, n in counts.items() if n > CAP}
    assert not over, f"keys that encrypted more than {CAP} values: {over}"
    with Keyring(store_url, kek_uri) as kr:
        charged = {k.key_id: k.encryptions for k in kr.keys()}
    assert set(counts) <= set(charged)
    for key_id, used in counts.items():  # every use was charged to the store before it happened
        assert used <= charged[key_id] <= CAP, (key_id, used, charged[key_id])


def fresh_producer(store_url: str, kek_uri: str, registry: Any, tag: str) -> Callable[[], dict[str, Any]]:
    """A new process: its own keyring and serializer."""

    def work() -> dict[str, Any]:
        with Keyring(store_url, kek_uri, rotation=RotationPolicy(max_encryptions=CAP)) as kr:
            ser = AvroSerializer(registry, json.dumps(ONE_VALUE), keyring=kr)
            return {"counts": produce(ser, RECORDS, tag)}

    return work


def merged(results: list[dict[str, Any]]) -> Counter[int]:
    total: Counter[int] = Counter()
    for r in results:
        total.update({int(k): n for k, n in r["counts"].items()})
    return total


# -- 9. the cap holds across processes -------------------------------------------------------------------------------
def test_cap_holds_across_concurrent_processes(store_url: str, kek_uri: str, registry) -> None:
    works = [fresh_producer(store_url, kek_uri, registry, f"p{i}") for i in range(PROCESSES)]
    counts = merged(fork_all(works, parallel=True))
    check_cap(store_url, kek_uri, counts, PROCESSES * RECORDS)


def test_cap_holds_across_restarts(store_url: str, kek_uri: str, registry) -> None:
    works = [fresh_producer(store_url, kek_uri, registry, f"r{i}") for i in range(PROCESSES)]
    counts = merged(fork_all(works, parallel=False))
    check_cap(store_url, kek_uri, counts, PROCESSES * RECORDS)


def test_cap_holds_when_forked_from_a_parent_holding_a_leased_key(store_url: str, kek_uri: str, registry) -> None:
    kr = Keyring(store_url, kek_uri, rotation=RotationPolicy(max_encryptions=CAP))
    try:
        ser = AvroSerializer(registry, json.dumps(ONE_VALUE), keyring=kr)
        counts = produce(ser, 5, "parent-before")  # the parent holds a lease of 31 with 26 left
        leased = kr.encryption_key("orders-value")
        assert 0 < leased.remaining() < RotationPolicy(max_encryptions=CAP).leased

        def child() -> dict[str, Any]:
            return {"counts": produce(ser, RECORDS, f"child-{os.getpid()}")}

        counts += merged(fork_all([child] * PROCESSES, parallel=True))
        counts += produce(ser, RECORDS, "parent-after")  # the parent spends its own lease, then leases again
    finally:
        kr.close()
    check_cap(store_url, kek_uri, counts, 5 + (PROCESSES + 1) * RECORDS)


# -- 10. a producer whose key is shredded elsewhere ------------------------------------------------------------------
def key_ids(data: bytes, registry: Any) -> list[int]:
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    rec = Plain(registry)(data, value_ctx())
    return [_wire.parse(_wire.decode_text(rec[f]))[0] for f in ("email", "ssn", "fullName")]


def test_short_lease_producer_moves_to_a_new_key_after_a_shred(
    store_url: str, kek_uri: str, registry, tmp_path: Path
) -> None:
    lease = 5
    producer = Keyring(store_url, kek_uri, rotation=RotationPolicy(max_encryptions=100, lease=lease))
    admin = Keyring(store_url, kek_uri)
    reader = Keyring(store_url, kek_uri)
    try:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=producer)
        de = AvroDeserializer(registry, keyring=reader)
        first = ser(customer(1), value_ctx())
        [old] = set(key_ids(first, registry))
        report = admin.shred_person("cust-1", reason="erasure request")
        assert [r.key_id for r in report.destroyed] == [old]

        after = [ser(customer(1), value_ctx()) for _ in range(4)]  # 12 values; no KeyStoreUnavailableError
        used = [k for data in after for k in key_ids(data, registry)]
        assert used.count(old) <= lease - 3  # at most what was left of the lease the shred found
        [new] = set(used) - {old}
        assert new != old and used[-6:] == [new] * 6
        assert [k.key_id for k in admin.keys(person="cust-1")] == [new]
        assert de(after[-1], value_ctx()) == customer(1)
    finally:
        for kr in (producer, admin, reader):
            kr.close()


def test_big_lease_producer_moves_to_a_new_key_within_the_cache_ttl(store_url: str, kek_uri: str, registry) -> None:
    clock = FakeClock()
    producer = Keyring(
        store_url, kek_uri, clock=clock, cache_ttl=60, rotation=RotationPolicy(max_encryptions=10**6, lease=10**5)
    )
    admin = Keyring(store_url, kek_uri)
    try:
        ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=producer)
        [old] = set(key_ids(ser(customer(1), value_ctx()), registry))
        admin.shred_person("cust-1", reason="erasure request")
        clock.advance(61)  # past the TTL: the cached key (and its big lease) must be gone
        [new] = set(key_ids(ser(customer(1), value_ctx()), registry))
        assert new != old
        assert [k.key_id for k in admin.keys(person="cust-1")] == [new]
    finally:
        producer.close()
        admin.close()


# -- 11. expired cache entries leave without a lookup ----------------------------------------------------------------
def caches(kr: Keyring) -> dict[str, int]:
    return {
        "by_id": len(kr._by_id),
        "active": len(kr._active),
        "missing": len(kr._missing),
        # the domains' recorded KEKs and the branch keys (by id, and each domain's active one)
        "domain": len(kr._domain_keks),
        "branch": len(kr._branches),
        "active branch": len(kr._active_branches),
    }


#: what the two tests below leave cached: two data keys (one active), one unknown id, two domains' KEK records,
#: their two branch keys, one of them the active branch of the domain written to
KEPT = {"by_id": 2, "active": 1, "missing": 1, "domain": 2, "branch": 2, "active branch": 1}


def sweepers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "fieldcrypt-key-cache-sweeper"}


def test_idle_keyring_drops_expired_keys_and_its_sweeper_stops_on_close(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as writer:
        other = writer.encryption_key("payments-value", "cust-2").key_id
    before = sweepers()
    kr = Keyring(store_url, kek_uri, cache_ttl=0.2)
    try:
        [mine] = sweepers() - before
        kr.encryption_key("orders-value", "cust-1")
        kr.decryption_key(other)
        with pytest.raises(KeyNotFoundError):
            kr.decryption_key(0x0BADBEEF)
        assert caches(kr) == KEPT
        time.sleep(0.6)  # idle: no lookup at all
        assert not any(caches(kr).values())
        assert mine.is_alive()
    finally:
        kr.close()
    mine.join(timeout=2)
    assert not mine.is_alive()


def test_sweep_drops_exactly_the_expired_entries(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as writer:
        other = writer.encryption_key("payments-value", "cust-2").key_id
    clock = FakeClock()
    with Keyring(store_url, kek_uri, clock=clock, cache_ttl=60) as kr:
        kr.encryption_key("orders-value", "cust-1")
        kr.decryption_key(other)
        with pytest.raises(KeyNotFoundError):
            kr.decryption_key(0x0BADBEEF)
        clock.advance(59)
        assert kr.sweep() == 0 and caches(kr) == KEPT
        clock.advance(2)
        assert kr.sweep() == sum(KEPT.values()) and not any(caches(kr).values())
