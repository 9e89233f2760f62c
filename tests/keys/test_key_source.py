"""The key source's two doors (``fieldcrypt.keys.source``): single flight on the sync and the async door, warm
lookups answered from memory, cancellation and errors of a shared lookup, per-task meters, and a producer's
process that never loads key administration."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from fieldcrypt import KeyNotFoundError, Keyring, KeyShreddedError, KeyStoreUnavailableError
from fieldcrypt.keys.kek import Kek, open_kek
from fieldcrypt.keys.source import AsyncKeySource, KeySource
from fieldcrypt.keys.sqlite import SqliteKeyStore

N = 12
#: a branch key wrapped (Tink checks a wrap by unwrapping it), and the new store's pseudonym key wrapped (once per store
#: and KEK: docs/key-model.md#pseudonyms)
ONE_WRAP = Counter(wrap=2, unwrap=1)


class CountingStore(SqliteKeyStore):
    """A real SQLite store that counts the hot path's calls, can be slowed down (to widen a race) or made to fail
    (``fail``: raised by every counted call)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.fail: BaseException | None = None
        self._count_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.calls[name] += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail

    def active(self, *a: Any, **kw: Any) -> Any:
        self._count("active")
        return super().active(*a, **kw)

    def get(self, *a: Any, **kw: Any) -> Any:
        self._count("get")
        return super().get(*a, **kw)

    def create(self, *a: Any, **kw: Any) -> Any:  # **kw: it takes key_id, as the built-in stores do
        self._count("create")
        return super().create(*a, **kw)

    def reserve(self, *a: Any, **kw: Any) -> Any:
        self._count("reserve")
        return super().reserve(*a, **kw)

    def shredded(self, *a: Any, **kw: Any) -> Any:
        self._count("shredded")
        return super().shredded(*a, **kw)


class CountingAead:
    """A local KEK's AEAD that counts wraps (encrypt) and unwraps (decrypt)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        with self._lock:
            self.calls["wrap"] += 1
        return self.inner.encrypt(plaintext, associated_data)  # type: ignore[no-any-return]

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        with self._lock:
            self.calls["unwrap"] += 1
        return self.inner.decrypt(ciphertext, associated_data)  # type: ignore[no-any-return]


class Raising(SqliteKeyStore):
    """A store that must not be called (a warm lookup answers from memory)."""

    def __getattribute__(self, name: str) -> Any:
        if name in {"active", "get", "create", "reserve", "shredded"} and object.__getattribute__(self, "armed"):
            raise AssertionError(f"the key store was called ({name}) for a warm lookup")
        return object.__getattribute__(self, name)


def counting_kek(kek_uri: str) -> tuple[Kek, CountingAead]:
    local = open_kek(kek_uri)
    counted = CountingAead(local.aead)
    return Kek(local.uri, counted, key_ids=local.key_ids, raw_keys=local.raw_keys), counted  # type: ignore[arg-type]


@pytest.fixture
def counted(store_url: str, kek_uri: str) -> Iterator[tuple[Keyring, CountingStore, CountingAead]]:
    store = CountingStore(store_url)
    kek, aead = counting_kek(kek_uri)
    with Keyring(store, kek, retries=0) as keyring:
        yield keyring, store, aead


def in_threads(n: int, fn: Any) -> list[Any]:
    """``fn()`` in ``n`` threads released at once; their results (or exceptions)."""
    start = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn()
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


# -- the sync door ---------------------------------------------------------------------------------------------------
def test_threads_cold_on_one_person_share_one_creation_and_one_kms_call(counted: Any) -> None:
    keyring, store, aead = counted
    store.delay = 0.02  # every store call is slow: the other threads arrive while the first is creating the key
    keys = in_threads(N, lambda: keyring.encryption_key("orders", "cust-1"))
    assert all(k is keys[0] for k in keys), keys
    assert store.calls["active"] == 1 and store.calls["create"] == 1, store.calls
    assert aead.calls == ONE_WRAP
    assert [k.key_id for k in keyring.store.keys("orders", keyring._stored("orders", "cust-1"))] == [keys[0].key_id]


def test_threads_cold_on_one_key_id_share_one_read_and_one_unwrap(counted: Any, store_url: str, kek_uri: str) -> None:
    keyring, store, aead = counted
    with Keyring(store_url, kek_uri) as producer:
        key_id = producer.encryption_key("orders", "cust-1").key_id
    store.delay = 0.02
    keys = in_threads(N, lambda: keyring.decryption_key(key_id))
    assert all(k is keys[0] for k in keys) and keys[0].key_id == key_id, keys
    assert store.calls == Counter(get=1), store.calls
    assert aead.calls == Counter(unwrap=1)
    assert len(keyring._key_locks) == 0  # no lock left behind per key id


# -- the async door --------------------------------------------------------------------------------------------------
def test_coroutines_cold_on_one_person_share_one_call(counted: Any) -> None:
    keyring, store, aead = counted
    store.delay = 0.02
    door = AsyncKeySource(keyring)

    async def main() -> list[Any]:
        return await asyncio.gather(*(door.encryption_key("orders", "cust-1") for _ in range(N)))

    keys = asyncio.run(main())
    assert all(k is keys[0] for k in keys)
    assert store.calls["active"] == 1 and store.calls["create"] == 1, store.calls
    assert aead.calls == ONE_WRAP
    assert keyring._flights == {}  # the entry goes when the call ends
    assert keyring.encryption_key("orders", "cust-1") is keys[0]  # the sync door sees the same cache


def test_coroutines_cold_on_one_key_id_share_one_call(counted: Any, store_url: str, kek_uri: str) -> None:
    keyring, store, aead = counted
    with Keyring(store_url, kek_uri) as producer:
        key_id = producer.encryption_key("orders", "cust-1").key_id
    store.delay = 0.02
    door = AsyncKeySource(keyring)

    async def main() -> list[Any]:
        return await asyncio.gather(*(door.decryption_key(key_id) for _ in range(N)))

    keys = asyncio.run(main())
    assert all(k is keys[0] for k in keys) and keys[0].key_id == key_id
    assert store.calls == Counter(get=1) and aead.calls == Counter(unwrap=1)


def test_cancelling_one_waiter_leaves_the_others_the_key_and_the_store_one_key(counted: Any) -> None:
    keyring, store, aead = counted
    store.delay = 0.05
    door = AsyncKeySource(keyring)

    async def main() -> tuple[list[Any], Any]:
        tasks = [asyncio.create_task(door.encryption_key("orders", "cust-1")) for _ in range(N)]
        await asyncio.sleep(0.01)  # every task waits on the shared lookup now
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, await door.encryption_key("orders", "cust-1")

    results, later = asyncio.run(main())
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(r is later for r in results[1:]), results
    assert later.remaining() > 0
    assert [k.key_id for k in keyring.store.keys("orders", keyring._stored("orders", "cust-1"))] == [later.key_id]
    assert store.calls["create"] == 1 and aead.calls == ONE_WRAP


def test_cancelling_every_waiter_still_finishes_the_key(counted: Any) -> None:
    keyring, store, _ = counted
    store.delay = 0.05
    door = AsyncKeySource(keyring)

    async def main() -> None:
        task = asyncio.create_task(door.encryption_key("orders", "cust-1"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while keyring._flights:  # the executor call goes on to its end
            await asyncio.sleep(0.01)

    asyncio.run(main())
    [record] = keyring.store.keys("orders", keyring._stored("orders", "cust-1"))
    assert keyring.encryption_key("orders", "cust-1").key_id == record.key_id  # cached, whole: no new key made
    assert store.calls["create"] == 1


def test_a_loop_closed_mid_lookup_leaves_no_flight_and_is_freed(counted: Any) -> None:
    """A caller that gives up (a timeout) and closes its loop before the executor call ends: the lookup still ends,
    its flight is forgotten, and the closed loop is not kept alive by the key source."""
    import gc
    import weakref

    keyring, store, _ = counted
    store.delay = 0.2
    door = AsyncKeySource(keyring)
    loop = asyncio.new_event_loop()

    async def impatient() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(door.encryption_key("orders", "cust-1"), 0.01)

    loop.run_until_complete(impatient())
    loop.close()
    deadline = time.monotonic() + 10
    while keyring._flights and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not keyring._flights
    closed = weakref.ref(loop)
    del loop
    gc.collect()
    assert closed() is None
    [record] = keyring.store.keys("orders", keyring._stored("orders", "cust-1"))
    assert keyring.encryption_key("orders", "cust-1").key_id == record.key_id


def test_a_store_error_reaches_every_waiter_and_a_later_call_retries(counted: Any) -> None:
    keyring, store, aead = counted
    store.delay = 0.02
    store.fail = KeyStoreUnavailableError("key store down (test)")
    door = AsyncKeySource(keyring)

    async def all_of_them() -> list[Any]:
        return await asyncio.gather(
            *(door.encryption_key("orders", "cust-1") for _ in range(N)), return_exceptions=True
        )

    errors = asyncio.run(all_of_them())
    assert all(isinstance(e, KeyStoreUnavailableError) for e in errors), errors
    assert store.calls["active"] == 1  # one shared attempt (retries=0)
    assert keyring._flights == {}
    store.fail = None
    key = asyncio.run(door.encryption_key("orders", "cust-1"))
    assert store.calls["active"] == 2 and store.calls["create"] == 1 and aead.calls == ONE_WRAP
    assert key.remaining() > 0


def test_a_store_error_on_the_sync_door_reaches_every_thread_and_a_later_call_retries(counted: Any) -> None:
    keyring, store, _ = counted
    store.delay = 0.02
    store.fail = KeyStoreUnavailableError("key store down (test)")
    errors = in_threads(4, lambda: keyring.encryption_key("orders", "cust-1"))
    assert all(isinstance(e, KeyStoreUnavailableError) for e in errors), errors
    store.fail = None
    assert keyring.encryption_key("orders", "cust-1").remaining() > 0
    assert store.calls["create"] == 1


def test_warm_async_lookups_never_call_the_store(store_url: str, kek_uri: str) -> None:
    store = Raising(store_url)
    object.__setattr__(store, "armed", False)
    with Keyring(store, kek_uri) as keyring:
        key = keyring.encryption_key("orders", "cust-1")
        with Keyring(store_url, kek_uri) as admin:
            gone = admin.encryption_key("orders", "cust-2").key_id
            admin.shred_person("cust-2")
        with pytest.raises(KeyShreddedError):
            keyring.decryption_key(gone)
        with pytest.raises(KeyNotFoundError):
            keyring.decryption_key(0x0BAD)
        object.__setattr__(store, "armed", True)  # from here on, any store call fails the test
        door = AsyncKeySource(keyring)

        async def warm() -> None:
            assert await door.encryption_key("orders", "cust-1") is key
            assert await door.decryption_key(key.key_id) is key
            with pytest.raises(KeyShreddedError):
                await door.decryption_key(gone)  # remembered as shredded
            with pytest.raises(KeyNotFoundError):
                await door.decryption_key(0x0BAD)  # remembered as unknown
            assert await door.renew(key) is key  # budget left: nothing to charge

        asyncio.run(warm())
        object.__setattr__(store, "armed", False)


class Meter:
    def __init__(self) -> None:
        self.misses = 0
        self.calls = 0

    def key_miss(self) -> None:
        self.misses += 1

    def key_store_call(self, seconds: float, failed: bool) -> None:
        self.calls += 1


def test_two_tasks_metering_at_once_each_see_their_own_meter(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri) as keyring:
        keyring.encryption_key("orders", "warm-up")  # the domain's branch key is made (and cached) here
        door = AsyncKeySource(keyring)
        first, second = Meter(), Meter()

        async def main() -> None:
            inside = asyncio.Event()  # made inside the loop (Python 3.10 binds it at creation)
            entered = [0]

            async def task(meter: Meter, person: str, sync_calls: int) -> None:
                with keyring.metering(meter):
                    entered[0] += 1
                    if entered[0] == 2:
                        inside.set()
                    await inside.wait()  # both tasks are inside their metering blocks now
                    await door.encryption_key("orders", person)  # meter=None: the block's meter counts
                    for _ in range(sync_calls):  # sync calls made by this task, interleaved with the other's
                        keyring.published_policy("no-such-fingerprint")
                        await asyncio.sleep(0)

            await asyncio.gather(task(first, "cust-1", 1), task(second, "cust-2", 5))

        asyncio.run(main())
        # each meter saw one cold creation (its store and KEK calls, the same for both persons) and its own sync calls
        created = first.calls - 1
        assert created > 0
        assert second.calls == created + 5, (first.calls, second.calls)


def test_the_async_door_needs_a_key_source() -> None:
    from fieldcrypt import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"fieldcrypt\.Keyring"):
        AsyncKeySource(object())  # type: ignore[arg-type]
    assert issubclass(Keyring, KeySource)


# -- a producer's process -------------------------------------------------------------------------------------------
PRODUCER = """
import json, sys, uuid
import fieldcrypt, fieldcrypt.avro
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
schema = open(sys.argv[3]).read()
ctx = SerializationContext("orders", MessageField.VALUE)
keyring = fieldcrypt.Keyring(sys.argv[1], sys.argv[2], shred_log=sys.argv[4])
ser = fieldcrypt.avro.AvroSerializer(registry, schema, keyring=keyring)
de = fieldcrypt.avro.AvroDeserializer(registry, keyring=keyring)
record = json.loads(sys.argv[5])
assert de(ser(record, ctx), ctx) == record
loaded_before = "fieldcrypt.keys.admin" in sys.modules
report = keyring.shred_person(record["customerId"])
print(json.dumps({"before": loaded_before, "after": "fieldcrypt.keys.admin" in sys.modules,
                  "destroyed": len(report.destroyed)}))
"""


def test_a_producer_never_loads_key_administration(store_url: str, kek_uri: str, tmp_path: Path) -> None:
    from conftest import customer

    shred_log = tmp_path / "shred-log.jsonl"
    shred_log.write_text("")  # present and empty: the start-up check reads it and needs no admin
    schema = ROOT / "schemas" / "customer_event.avsc"
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER, store_url, kek_uri, str(schema), str(shred_log), json.dumps(customer(1))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"before": False, "after": True, "destroyed": 1}


def test_the_async_door_asks_whose_an_erased_key_was_off_the_event_loop(store_url: str, kek_uri: str) -> None:
    """Found by review: telling whose an erased key was may load the domain's pseudonym key (a key-store read and a
    KEK call); through the async door that runs in the executor, never on the event loop, and the answer is the
    sync door's (another person's erased key: tampered, not erased)."""
    import threading
    import types

    from fieldcrypt.errors import KeyShreddedError

    with Keyring(store_url, kek_uri) as producer:
        key_id = producer.encryption_key("orders", "cust-1").key_id
        producer.shred_person("cust-1", reason="erasure")
    with Keyring(store_url, kek_uri) as reader:
        loads: list[str] = []
        real = reader._load_pseudonyms

        def recording(domain: str, *, create: bool = True) -> Any:
            loads.append(threading.current_thread().name)
            return real(domain, create=create)

        reader._load_pseudonyms = recording  # type: ignore[method-assign]
        door = AsyncKeySource(reader)

        async def read(person: str) -> BaseException:
            try:
                meter = types.SimpleNamespace(
                    person=person, key_miss=lambda: None, key_store_call=lambda seconds, failed: None
                )
                await door.decryption_key(key_id, meter)  # type: ignore[arg-type]
            except KeyShreddedError as exc:
                return exc
            raise AssertionError("an erased key was given out")

        theirs, other = asyncio.run(read("cust-1")), asyncio.run(read("cust-2"))
        assert loads and threading.main_thread().name not in loads  # in the executor
        assert theirs.owner == ("orders", "cust-1")  # theirs: erased
        assert other.owner is not None and other.owner[1] != "cust-2"  # another's: the engine reads it as moved
