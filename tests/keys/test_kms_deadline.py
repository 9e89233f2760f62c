"""A KMS that stops answering cannot stall producers, and a shred racing a key creation stays a shred.

The attack: an AWS KMS endpoint that accepts connections and never answers. One serializer call blocked for
boto3's read timeout (60 s) times botocore's retries times fieldcrypt's; and the new key was wrapped inside the
key store's transaction and under the keyring's creation lock, so the silent KMS also held the SQLite write lock
(every other writer of the file waited), the PostgreSQL advisory lock and the store's connection lock.

Here the endpoint is a TCP socket on 127.0.0.1 that accepts and never answers (nor closes): every test stops by
itself within a few seconds. The race tests stop a key creation between its wrap and its insert with a KEK that
waits for the test, run a shred (or another creation) meanwhile, and check what comes out, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import customer, load_schema, value_ctx
from kms_fakes import URI, fake_kms, kek_at
from pg import pg_schema_url
from tink import aead

from fieldcrypt import (
    ConfigurationError,
    Keyring,
    KeyShreddedError,
    KeyStoreUnavailableError,
    RotationPolicy,
    create_key_store,
    open_kek,
)
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.clock import FakeClock
from fieldcrypt.keys._deadline import KmsRunner, KmsTimeout
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek, _CloudKmsWithDeadline
from fieldcrypt.keys.sqlite import SqliteKeyStore
from fieldcrypt.keys.store import KeyStore

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield create_key_store(url)


@dataclass
class Silent:
    """A KMS endpoint that accepts connections and never answers."""

    endpoint: str
    accepted: threading.Event
    connections: list[socket.socket] = field(default_factory=list)


@contextmanager
def silent_endpoint() -> Iterator[Silent]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    silent = Silent(f"http://127.0.0.1:{server.getsockname()[1]}", threading.Event())
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            silent.connections.append(conn)  # kept open, never read from, never answered
            silent.accepted.set()

    thread = threading.Thread(target=accept, name="silent-kms", daemon=True)
    thread.start()
    try:
        yield silent
    finally:
        stop.set()
        thread.join(2)
        for conn in silent.connections:
            conn.close()
        server.close()


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Silent]:
    """A silent endpoint that ``aws-kms://`` KEKs opened from their URI (``open_kek``) talk to."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    with silent_endpoint() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", endpoint.endpoint)
        yield endpoint


def kms_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fieldcrypt-kms-call" and t.is_alive()]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Outcome:
    """What a call run in another thread returned or raised, and when it ended."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.ended = 0.0
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def join(self, timeout: float) -> Outcome:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not end"
        return self

    @property
    def took(self) -> float:
        return self.ended - self.started


# -- the attack: a serializer call against a KMS that never answers -------------------------------------------------


def test_serializer_call_against_a_silent_kms_fails_within_the_deadline(
    silent: Silent, registry: Any, store_url: str
) -> None:
    with Keyring(store_url, URI, kms_timeout=1.0) as keyring:  # default retries (3): the deadline bounds them too
        serializer = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
        start = time.monotonic()
        with pytest.raises(KeyStoreUnavailableError) as err:
            serializer(customer(1), value_ctx())
        took = time.monotonic() - start
    assert silent.accepted.is_set()  # the KMS was really asked, and never answered
    assert 0.9 <= took < 2.5, took
    assert "did not answer within kms_timeout (1 s)" in str(err.value)
    assert "person1@example.com" not in str(err.value)
    # the abandoned call ends by itself (boto3's read timeout is the deadline, not 60 s), leaving no thread behind
    assert wait_for(lambda: not kms_workers(), 3.0), kms_workers()


def test_default_deadline_is_a_few_seconds(silent: Silent, store_url: str) -> None:
    assert DEFAULT_KMS_TIMEOUT == 5.0
    with Keyring(store_url, URI, retries=0) as keyring:
        assert keyring.kms_timeout == 5.0
        config = keyring.kek.aead.client.meta.config  # the boto3 client open_kek built
        assert (config.connect_timeout, config.read_timeout) == (5.0, 5.0)
        assert config.retries["total_max_attempts"] == 1  # fieldcrypt's retries are the only ones


def test_unwrap_against_a_silent_kms_fails_within_the_deadline(silent: Silent, store_url: str) -> None:
    with fake_kms() as kms, Keyring(store_url, kek_at(kms.endpoint)) as writer:
        key_id = writer.encryption_key("orders").key_id  # wrapped by a KMS that answers
    with Keyring(store_url, URI, kms_timeout=1.0, backoff=0.01) as reader:  # same KMS key, now silent
        start = time.monotonic()
        with pytest.raises(KeyStoreUnavailableError) as err:
            reader.decryption_key(key_id)
        took = time.monotonic() - start
    assert 0.9 <= took < 2.5, took
    assert err.value.key_id == key_id and "kms_timeout" in str(err.value)


def test_a_producer_waiting_on_a_silent_kms_holds_no_store_lock(silent: Silent, any_store: str, kek_uri: str) -> None:
    """While one producer waits for the silent KMS: another process (its own connection) creates the key of the
    same domain and of another one, and shreds; the waiting keyring's own store (same connection and lock) answers
    other threads; then the waiting call fails within its deadline."""
    waiting = Keyring(any_store, [URI, kek_uri], kms_timeout=3.0, retries=0)  # new keys: the silent KMS wraps them
    other = Keyring(any_store, kek_uri)  # another producer, and an admin, with their own connection
    try:
        call = Outcome(lambda: waiting.encryption_key("silent-domain"))  # its branch key: wrapped by the silent KMS
        assert silent.accepted.wait(2), "the wrap never reached the KMS"
        start = time.monotonic()
        # SQLite: the write lock; PostgreSQL: the domain's locks (the domain's KEK is recorded before the wrap)
        assert other.domain_keks("silent-domain").primary == URI  # type: ignore[union-attr]
        other.map_kek("waiting-domain", kek_uri, reason="ticket-0")
        another = other.encryption_key("other-domain")
        other.shred_domain("other-domain", reason="ticket-1")
        other.shred_domain("silent-domain", reason="ticket-1")  # a write to the domain the wrap is for
        assert waiting.store.domain_keks("silent-domain") is not None  # the waiting keyring's own connection
        waiting.shred_domain("never-used", reason="ticket-2")  # a write through it, from another thread
        took = time.monotonic() - start
        assert took < 1.5, f"the key store was blocked for {took:.1f} s by a KMS call"
        assert call.thread.is_alive()  # all of the above happened while the KMS call was still waiting
        call.join(5)
        assert isinstance(call.error, KeyStoreUnavailableError), call.error
        assert call.took < 3.0 + 1.0
        # nothing half-made: no branch key, no data key
        assert waiting.store.active("silent-domain", None) is None
        assert waiting.store.active_branch("silent-domain") is None
        assert waiting.store.get(another.key_id) is None
    finally:
        waiting.close()
        other.close()


def test_threads_needing_the_same_key_wait_at_most_their_deadline_and_others_not_at_all(
    silent: Silent, store_url: str, kek_uri: str
) -> None:
    local = Keyring(store_url, kek_uri)
    ready = local.encryption_key("ready")  # wrapped by the local KEK: no KMS needed to unwrap it
    local.close()
    with Keyring(store_url, [URI, kek_uri], kms_timeout=1.5, retries=0) as keyring:
        first = Outcome(lambda: keyring.encryption_key("silent-domain"))
        assert silent.accepted.wait(2)
        second = Outcome(lambda: keyring.encryption_key("silent-domain"))  # waits for the first, not the KMS
        start = time.monotonic()
        assert keyring.decryption_key(ready.key_id).key_id == ready.key_id  # another key: no waiting
        assert time.monotonic() - start < 0.5
        first.join(4)
        second.join(4)
        assert isinstance(first.error, KeyStoreUnavailableError) and first.took < 2.5
        assert isinstance(second.error, KeyStoreUnavailableError) and second.took < 2.5
        assert len(keyring._key_locks) == 0  # no lock left behind per key


def test_workers_are_bounded_while_the_kms_is_silent() -> None:
    runner = KmsRunner(workers=2)
    block = threading.Event()
    try:
        stuck = [Outcome(lambda: runner.run(lambda: block.wait(5), time.monotonic() + 0.3, "KEK 'x'")) for _ in "ab"]
        for call in stuck:
            call.join(2)
            assert isinstance(call.error, KmsTimeout)
        before = len(kms_workers())
        with pytest.raises(KmsTimeout, match="every KMS worker"):
            runner.run(lambda: None, time.monotonic() + 0.2, "KEK 'x'")
        assert len(kms_workers()) == before == 2  # no third thread for a third call
    finally:
        block.set()
    assert wait_for(lambda: not kms_workers(), 2.0)
    assert runner.run(lambda: 42, time.monotonic() + 1, "KEK 'x'") == 42  # the workers came back
    with pytest.raises(ZeroDivisionError):  # a KEK's own exception reaches the caller as it is, for classifying
        runner.run(lambda: 1 // 0, time.monotonic() + 1, "KEK 'x'")


def test_cloud_kms_calls_carry_the_deadline_and_no_client_retry() -> None:
    from tink.integration import gcpkms

    seen: list[dict[str, Any]] = []

    class Stub:
        def encrypt(self, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return type("Response", (), {"ciphertext": b"sealed"})()

    uri = "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k"
    kek_aead = gcpkms.new_client(kms_v1_client=_CloudKmsWithDeadline(Stub(), 2.5), key_uri=uri).get_aead(uri)
    assert kek_aead.encrypt(b"dek", b"ad") == b"sealed"
    assert seen[0]["timeout"] == 2.5 and seen[0]["retry"] is None


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 0, -1, True, "5", 301], ids=repr)
def test_kms_timeout_is_bounded(store_url: str, kek_uri: str, timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="kms_timeout"):
        Keyring(store_url, kek_uri, kms_timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="kms_timeout"):
        open_kek(kek_uri, timeout=timeout)  # type: ignore[arg-type]


# -- a shred racing a key creation -------------------------------------------------------------------------------


class GatedAead(aead.Aead):
    """A KEK that, when armed, stops its next encrypt (the wrap of a new key) until the test opens the gate."""

    def __init__(self, inner: aead.Aead) -> None:
        self.inner = inner
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.encrypts = 0

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        self.encrypts += 1
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
        return self.inner.encrypt(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        return self.inner.decrypt(ciphertext, associated_data)


@pytest.fixture
def gated(kek_uri: str) -> GatedAead:
    return GatedAead(open_kek(kek_uri).aead)


def gated_kek(gated: GatedAead) -> Kek:
    return Kek("gated-kms://key-1", gated)  # a remote KEK (no local keyset): its calls run with a deadline


def plain_kek(gated: GatedAead) -> Kek:
    return Kek("gated-kms://key-1", gated.inner)  # the same KMS key, seen by another process


def active_rows(store: KeyStore, domain: str, person: str | None) -> list[int]:
    return [r.key_id for r in store.keys(domain, person) if r.state == "active" and r.person == person]


def test_a_shred_between_the_wrap_and_the_insert_of_a_rotation_stays_a_shred(any_store: str, gated: GatedAead) -> None:
    clock = FakeClock(1_000.0)
    rotation = RotationPolicy(max_age=60)
    producer = Keyring(any_store, gated_kek(gated), clock=clock, rotation=rotation, kms_timeout=15)
    admin = Keyring(any_store, plain_kek(gated), clock=clock)
    try:
        old = producer.encryption_key("orders", "p-1")
        clock.advance(61)  # the key is due for rotation: the next lookup wraps version 2
        gated.armed = True
        call = Outcome(lambda: producer.encryption_key("orders", "p-1"))
        assert gated.entered.wait(5), "the rotation never reached its wrap"
        # the wrap is in flight, outside any transaction: the erasure request goes through at once
        start = time.monotonic()
        report = admin.shred_person("p-1", reason="erasure request 7")
        assert time.monotonic() - start < 2.0 and call.thread.is_alive()
        assert [r.key_id for r in report.destroyed] == [old.key_id]
        gated.gate.set()
        new = call.join(10).value
        assert call.error is None, call.error
    finally:
        gated.gate.set()
        producer.close()
        admin.close()
    # the key made after the shred is a new key: the shredded one never comes back, nor does a second active key
    store = Keyring(any_store, plain_kek(gated), clock=clock)
    try:
        assert new.key_id != old.key_id and new.version == 1  # versions start again: the old ones are gone
        assert store.store.get(old.key_id) is None and store.store.shredded(old.key_id) is not None
        assert store.store.shredded(new.key_id) is None
        assert active_rows(store.store, "orders", store._stored("orders", "p-1")) == [new.key_id]
        assert [r.key_id for r in store.store.keys("orders", store._stored("orders", "p-1"))] == [new.key_id]
        with pytest.raises(KeyShreddedError):
            store.decryption_key(old.key_id)
        assert store.decryption_key(new.key_id).key_id == new.key_id
        # the audit log orders them as they happened: the shred of the old key, then the new key
        trail = [(e.operation, e.key_ids) for e in store.audit(person="p-1")]
        assert trail[-2:] == [("shred", (old.key_id,)), ("rotate", (new.key_id,))], trail
        # the KMS wraps branch keys only: version 1, then version 2 (due by age too); data keys are wrapped by the
        # domain's branch key, locally; and the store's pseudonym key, once
        assert gated.encrypts == 3
    finally:
        store.close()


def test_a_domain_shred_during_a_first_creation_does_not_stop_new_records(any_store: str, gated: GatedAead) -> None:
    producer = Keyring(any_store, gated_kek(gated), kms_timeout=15)
    admin = Keyring(any_store, plain_kek(gated))
    try:
        gated.armed = True
        call = Outcome(lambda: producer.encryption_key("orders"))  # wraps the domain's first branch key
        assert gated.entered.wait(5)
        earlier = admin.encryption_key("orders", "p-2")  # another person's key, under a branch key of its own
        branch = admin.store.active_branch("orders")
        report = admin.shred_domain("orders", reason="decommissioned")
        assert branch is not None and admin.store.branch(branch.key_id) is None  # the branch key is destroyed too
        assert [r.key_id for r in report.destroyed] == [earlier.key_id]
        gated.gate.set()
        new = call.join(10).value
        assert call.error is None, call.error
        assert new.key_id != earlier.key_id and admin.store.shredded(new.key_id) is None
        assert active_rows(admin.store, "orders", None) == [new.key_id]
        assert admin.store.get(earlier.key_id) is None  # the shredded key stays shredded
    finally:
        gated.gate.set()
        producer.close()
        admin.close()


def test_another_process_creating_the_key_during_the_wrap_wins_and_the_wrapped_key_is_dropped(
    any_store: str, gated: GatedAead
) -> None:
    producer = Keyring(any_store, gated_kek(gated), kms_timeout=15)
    other = Keyring(any_store, plain_kek(gated))
    try:
        gated.armed = True
        call = Outcome(lambda: producer.encryption_key("orders", "p-3"))
        assert gated.entered.wait(5)
        theirs = other.encryption_key("orders", "p-3")  # not blocked by the wrap in flight
        gated.gate.set()
        mine = call.join(10).value
        assert call.error is None, call.error
        assert mine.key_id == theirs.key_id and mine.remaining() > 0  # one key, leased by both
        assert [r.key_id for r in other.store.keys("orders", other._stored("orders", "p-3"))] == [theirs.key_id]
        assert [e.operation for e in other.audit(person="p-3")] == ["create"]
    finally:
        gated.gate.set()
        producer.close()
        other.close()


class OldPluginStore(SqliteKeyStore):
    """A key store plugin written before ``create`` took ``key_id`` (its ``wrap`` runs inside the transaction)."""

    def create(  # type: ignore[override]
        self,
        domain: str,
        person: str | None,
        kek_uri: str,
        wrap: Any,
        now: float,
        audit: Any,
        *,
        retire: Any = None,
        charge: int = 0,
    ) -> Any:
        return super().create(domain, person, kek_uri, wrap, now, audit, retire=retire, charge=charge)


def test_a_plugin_store_without_key_id_still_creates_keys(store_url: str, kek_uri: str) -> None:
    with Keyring(OldPluginStore(store_url), kek_uri) as keyring:
        assert not keyring._prewrap
        key = keyring.encryption_key("orders")
        assert keyring.store.active("orders", None).key_id == key.key_id  # type: ignore[union-attr]
        rotated = keyring.rotate("orders")
        assert rotated is not None and rotated.version == 2


def test_rewrap_to_a_silent_new_kms_names_the_new_kek(silent: Silent, store_url: str, kek_uri: str) -> None:
    """KEK rotation from a local KEK to a KMS that accepts and never answers: the failure names the KMS (the KEK
    that could not wrap), not the local KEK that unwrapped the key fine."""
    with Keyring(store_url, kek_uri) as old:
        key_id = old.encryption_key("orders").key_id
    with Keyring(store_url, [URI, kek_uri], kms_timeout=1.0, backoff=0.01) as rotating:
        with pytest.raises(KeyStoreUnavailableError) as err:
            rotating.rewrap(reason="rotate to KMS")
    assert URI in str(err.value) and kek_uri not in str(err.value)
    with Keyring(store_url, kek_uri) as old:
        branch = old.store.active_branch("orders")
        assert branch is not None and old.store.get(key_id).branch_id == branch.key_id  # type: ignore[union-attr]
    assert f"branch key 0x{branch.key_id:08x}" in str(err.value)  # the key it could not wrap, by its id
