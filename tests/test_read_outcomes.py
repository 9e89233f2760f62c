"""Outcomes are classified truthfully (issue #8, point 4): what a reader or writer reports when a KEK or a key-store
row fails it, through the real serdes, Tink's own AWS KMS integration over HTTP, and real SQLite / PostgreSQL.

- a KMS that is throttled, failing (5xx) or unreachable: ``KeyStoreUnavailableError`` after the configured retries,
  whatever ``on.denied`` says; the same deserializer reads again once the KMS answers;
- a KMS that denies access: the ``on.denied`` outcome, one KMS call per key (negatively cached for ``cache_ttl``);
- a corrupt or swapped ``wrapped`` column: ``KeyCorruptedError``, always raised; another consumer's KEK: denied;
- a header re-pointed at another person's or domain's key: ``DecryptionError`` (tampered), never "erased";
- a KEK raising something no driver knows: ``KeyStoreUnavailableError`` naming it, never "no access";
- a KMS refusing to wrap a new key: ``EncryptionError``, nothing produced and nothing stored.

Only the KMS service is fake (``kms_fakes``): an HTTP server speaking KMS's JSON protocol.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import tink
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from conftest import customer, load_schema, value_ctx
from kms_fakes import OTHER_ARN, FakeKms, closed_port, fake_kms, kek_at
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import (
    AccessDeniedError,
    DecryptionError,
    Denied,
    EncryptionError,
    Erased,
    FakeClock,
    Keyring,
    KeyShreddedError,
    KeyStoreUnavailableError,
    create_key_store,
)
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.crypto.cipher import encrypted_keyset
from fieldcrypt.errors import KeyCorruptedError, KeyNotFoundError
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.keys.kek import Kek
from fieldcrypt.keys.pseudonyms import is_pseudonym

AVRO = load_schema("customer_event.avsc")
JSON = load_schema("customer_event.schema.json")
FORMATS = ("avro", "json")
PII = ("email", "ssn", "fullName")
DOMAIN = "orders-value"  # the default key domain: the registry subject of topic "orders"
#: what ``on.erased`` / ``on.denied`` = null reads the PII fields as: null where the schema admits it (ssn is
#: ["null", "string"]), the placeholder where it does not (email, fullName)
UNREADABLE = ["<erased>", None, "<erased>"]
#: the same for a value this consumer may not read: its own placeholder, never the erased one
DENIED = ["<denied>", None, "<denied>"]

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'keys.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield create_key_store(url)


@pytest.fixture
def keyrings(store_url: str) -> Iterator[Callable[..., Keyring]]:
    """Opens keyrings on the test's store (each with its own caches, as separate processes have), closed after."""
    made: list[Keyring] = []

    def open_keyring(kek: str | Kek | list[str | Kek], **kw: Any) -> Keyring:
        keyring = Keyring(store_url, kek, **kw)
        made.append(keyring)
        return keyring

    yield open_keyring
    for keyring in made:
        keyring.close()


@pytest.fixture(scope="module")
def kms_server() -> Iterator[FakeKms]:
    with fake_kms() as kms:
        yield kms


@pytest.fixture
def kms(kms_server: FakeKms) -> Iterator[FakeKms]:
    kms_server.reset()
    yield kms_server
    kms_server.reset()


@pytest.fixture
def local_kek(tmp_path: Path) -> str:
    return fieldcrypt.create_local_kek(tmp_path / "kek.json")


class Sleeps(list[float]):
    """The injected ``sleep``: records each backoff delay instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def serde(fmt: str, registry: Any, keyring: Keyring, **read: Any) -> tuple[Any, Any]:
    conf = {f"fieldcrypt.{k.replace('_', '.')}": v for k, v in read.items()}
    if fmt == "avro":
        return AvroSerializer(registry, AVRO, keyring=keyring), AvroDeserializer(registry, conf=conf, keyring=keyring)
    return (
        JSONSerializer(JSON, registry, keyring=keyring),
        JSONDeserializer(None, schema_registry_client=registry, conf=conf, keyring=keyring),
    )


def ciphertexts(fmt: str, registry: Any, data: bytes, topic: str = "orders") -> dict[str, str]:
    """The encrypted fields of a record as a consumer without fieldcrypt sees them (base64 text)."""
    plain: Any = (
        PlainAvroDeserializer(registry)
        if fmt == "avro"
        else PlainJSONDeserializer(None, schema_registry_client=registry)
    )
    record = plain(data, value_ctx(topic))
    return {f: record[f] for f in PII}


def key_of(fmt: str, registry: Any, data: bytes, topic: str = "orders") -> int:
    ids = {_wire.parse(_wire.decode_text(text))[0] for text in ciphertexts(fmt, registry, data, topic).values()}
    assert len(ids) == 1
    return ids.pop()


def repoint(fmt: str, registry: Any, data: bytes, field: str, key_id: int) -> bytes:
    """``data`` with one value's header naming ``key_id`` (bytes 1..4 of the value, see ``crypto.wire``); nothing else
    changes, so the record stays valid for its schema."""
    text = ciphertexts(fmt, registry, data)[field]
    blob = _wire.decode_text(text)
    at = 2 if blob[0] == 2 else 1  # the key id follows the version (and, in version 2, the flags)
    forged = _wire.encode_text(blob[:at] + key_id.to_bytes(4, "big") + blob[at + 4 :])
    assert len(forged) == len(text) and data.count(text.encode()) == 1
    return data.replace(text.encode(), forged.encode())


# --- the key store's rows, edited behind fieldcrypt's back --------------------------------------------------------


def _sql(url: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            return conn.execute(sql, args).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.replace("?", "%s"), args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def read_wrapped(url: str, key_id: int) -> bytes:
    (row,) = _sql(url, "SELECT wrapped FROM fieldcrypt_keys WHERE key_id = ?", (key_id,))
    return bytes(row[0])


def write_wrapped(url: str, key_id: int, wrapped: bytes) -> None:
    _sql(url, "UPDATE fieldcrypt_keys SET wrapped = ? WHERE key_id = ?", (wrapped, key_id))


def flip_inside_kek_ciphertext(wrapped: bytes) -> bytes:
    """Flip the last byte of the KEK's ciphertext inside the stored wrapped key (its tag, for a Tink keyset); the
    protobuf framing and the Tink prefix stay intact, so this is corruption the KEK itself must detect."""
    inner = encrypted_keyset(wrapped)
    assert inner is not None
    at = wrapped.index(inner) + len(inner) - 1
    return wrapped[:at] + bytes([wrapped[at] ^ 0x01]) + wrapped[at + 1 :]


# --- 1, 2: a KMS that is throttled, failing or unreachable -------------------------------------------------------


@pytest.mark.parametrize("code", ["ThrottlingException", "KMSInternalException"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_unavailable_kms_raises_after_retries_then_reads_when_it_recovers(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms, fmt: str, code: str
) -> None:
    ser, _ = serde(fmt, registry, keyrings(kek_at(kms.endpoint)))
    data = ser(customer(1), value_ctx())
    kms.fail("Decrypt", code)
    kms.calls.clear()  # count the consumer's calls only
    sleeps = Sleeps()
    consumer = keyrings(kek_at(kms.endpoint), retries=3, backoff=0.01, sleep=sleeps)
    _, de = serde(fmt, registry, consumer, on_denied="null", on_erased="null")
    with pytest.raises(Exception) as err:
        de(data, value_ctx())
    assert type(err.value) is KeyStoreUnavailableError  # not AccessDeniedError, not a tink or botocore error
    assert err.value.key_id == key_of(fmt, registry, data)
    assert kms.calls["Decrypt"] == 4  # retries + 1 attempts, each one KMS call
    assert len(sleeps) == 3 and sleeps[0] == pytest.approx(0.01)
    assert all(later > earlier for earlier, later in itertools.pairwise(sleeps)), sleeps  # exponential backoff
    kms.fail("Decrypt", None)  # the KMS recovers: nothing was cached as "no access"
    assert de(data, value_ctx()) == customer(1)
    assert kms.calls["Decrypt"] == 5


def test_no_retries_means_one_attempt_and_no_sleep(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    ser, _ = serde("avro", registry, keyrings(kek_at(kms.endpoint)))
    data = ser(customer(1), value_ctx())
    kms.fail("Decrypt", "ThrottlingException")
    kms.calls.clear()
    sleeps = Sleeps()
    _, de = serde("avro", registry, keyrings(kek_at(kms.endpoint), retries=0, sleep=sleeps), on_denied="marker")
    with pytest.raises(KeyStoreUnavailableError):
        de(data, value_ctx())
    assert kms.calls["Decrypt"] == 1 and sleeps == []


def test_kms_at_a_closed_port_is_unavailable_never_a_botocore_error(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    ser, _ = serde("avro", registry, keyrings(kek_at(kms.endpoint)))
    data = ser(customer(1), value_ctx())
    down = closed_port()
    sleeps = Sleeps()
    _, de = serde("avro", registry, keyrings(kek_at(down), retries=2, sleep=sleeps), on_denied="null")
    with pytest.raises(Exception) as err:
        de(data, value_ctx())  # tink lets botocore's EndpointConnectionError escape raw
    assert type(err.value) is KeyStoreUnavailableError
    assert not isinstance(err.value, botocore.exceptions.BotoCoreError)
    assert len(sleeps) == 2
    # the writer's side: a new key cannot be wrapped either
    writer, _ = serde("avro", registry, keyrings(kek_at(down), retries=1, sleep=Sleeps()))
    with pytest.raises(Exception) as err:
        writer(customer(2), value_ctx())
    assert type(err.value) is KeyStoreUnavailableError


# --- 3: no access, negatively cached --------------------------------------------------------------------------


def test_denied_kms_is_the_on_denied_outcome_with_one_kms_call_per_key(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    ser, _ = serde("avro", registry, keyrings(kek_at(kms.endpoint)))
    records = [ser(customer(1 + i % 2), value_ctx()) for i in range(34)]  # 17 records (51 values) per key
    kms.fail("Decrypt", "AccessDeniedException")
    kms.calls.clear()
    clock = FakeClock()
    consumer = keyrings(kek_at(kms.endpoint), clock=clock, cache_ttl=60)
    _, de = serde("avro", registry, consumer, on_denied="null")
    for i, data in enumerate(records):
        out = de(data, value_ctx())
        assert [out[f] for f in PII] == DENIED
        assert out["customerId"] == f"cust-{1 + i % 2}" and out["currency"] == "EUR"
    assert kms.calls["Decrypt"] == 2  # one per key, not one per value
    assert de.stats.denied == 102 and de.stats.erased == 0
    _, strict = serde("avro", registry, consumer)
    with pytest.raises(AccessDeniedError) as err:
        strict(records[0], value_ctx())
    assert not isinstance(err.value, (KeyCorruptedError, KeyNotFoundError))
    _, marked = serde("avro", registry, consumer, on_denied="marker", on_erased="null")
    assert isinstance(marked(records[0], value_ctx())["email"], Denied)
    key_id = key_of("avro", registry, records[0])
    for _ in range(2):  # the first denial and the cached one both name the key's owner
        with pytest.raises(AccessDeniedError) as err:
            consumer.decryption_key(key_id)
        # looked up by id alone (no record): the key store's name of its owner, a pseudonym
        assert err.value.owner[0] == DOMAIN and is_pseudonym(err.value.owner[1])
    assert kms.calls["Decrypt"] == 2
    kms.fail("Decrypt", None)  # access granted: still denied until the negative entry expires
    clock.advance(59)
    assert de(records[0], value_ctx())["email"] == "<denied>"
    assert kms.calls["Decrypt"] == 2
    clock.advance(2)
    assert de(records[0], value_ctx()) == customer(1)
    assert kms.calls["Decrypt"] == 3


# --- 4: a corrupt or swapped wrapped key, and a consumer with another KEK --------------------------------------


@pytest.fixture(params=["local-kek", "aws-kms"])
def wrapping_kek(request: pytest.FixtureRequest, local_kek: str, kms: FakeKms) -> Callable[[], str | Kek]:
    """A fresh handle to the KEK producers wrap with (a new one per keyring, as each process opens its own)."""
    if request.param == "local-kek":
        return lambda: local_kek
    return lambda: kek_at(kms.endpoint)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_wrapped_key_is_key_corrupted_even_with_on_denied_null(
    registry: Any,
    keyrings: Callable[..., Keyring],
    store_url: str,
    wrapping_kek: Callable[[], str | Kek],
    fmt: str,
) -> None:
    ser, _ = serde(fmt, registry, keyrings(wrapping_kek()))
    data = ser(customer(1), value_ctx())
    key_id = key_of(fmt, registry, data)
    write_wrapped(store_url, key_id, flip_inside_kek_ciphertext(read_wrapped(store_url, key_id)))
    consumer = keyrings(wrapping_kek())
    for mode in ("null", "marker", "placeholder", "raise"):
        _, de = serde(fmt, registry, consumer, on_denied=mode, on_erased=mode)
        with pytest.raises(KeyCorruptedError) as err:
            de(data, value_ctx())
        assert err.value.key_id == key_id
    with pytest.raises(KeyCorruptedError) as err:
        consumer.decryption_key(key_id)
    assert err.value.owner[0] == DOMAIN and is_pseudonym(err.value.owner[1])  # by id alone: the store's name


def test_swapped_wrapped_keys_are_key_corrupted(
    registry: Any, keyrings: Callable[..., Keyring], store_url: str, wrapping_kek: Callable[[], str | Kek]
) -> None:
    ser, _ = serde("avro", registry, keyrings(wrapping_kek()))
    one, two = ser(customer(1), value_ctx()), ser(customer(2), value_ctx())
    a, b = key_of("avro", registry, one), key_of("avro", registry, two)
    wrapped_a, wrapped_b = read_wrapped(store_url, a), read_wrapped(store_url, b)
    write_wrapped(store_url, a, wrapped_b)
    write_wrapped(store_url, b, wrapped_a)
    _, de = serde("avro", registry, keyrings(wrapping_kek()), on_denied="null", on_erased="null")
    for data in (one, two):
        with pytest.raises(KeyCorruptedError):
            de(data, value_ctx())


def test_a_consumer_with_another_local_kek_is_denied_not_corrupted(
    registry: Any, keyrings: Callable[..., Keyring], tmp_path: Path, wrapping_kek: Callable[[], str | Kek]
) -> None:
    """A local keyset that did not wrap the key (its URI differs from the row's) has no access; it cannot know the
    row is tampered. Whatever the wrapping KEK's ciphertext looks like (a Tink prefix or a KMS's own format)."""
    ser, _ = serde("avro", registry, keyrings(wrapping_kek()))
    data = ser(customer(1), value_ctx())
    stranger = keyrings(fieldcrypt.create_local_kek(tmp_path / "stranger.json"))
    _, de = serde("avro", registry, stranger, on_denied="null")
    assert [de(data, value_ctx())[f] for f in PII] == DENIED
    _, strict = serde("avro", registry, stranger)
    with pytest.raises(AccessDeniedError) as err:
        strict(data, value_ctx())
    assert not isinstance(err.value, KeyCorruptedError)


def test_a_consumer_with_another_kms_key_is_denied(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    ser, _ = serde("avro", registry, keyrings(kek_at(kms.endpoint)))
    data = ser(customer(1), value_ctx())
    _, de = serde("avro", registry, keyrings(kek_at(kms.endpoint, OTHER_ARN)), on_denied="marker")
    assert isinstance(de(data, value_ctx())["email"], Denied)


# --- 5: headers re-pointed at other keys ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["email", "fullName"])  # the record's first value (with the nonce) and a later one
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_repointed_at_another_persons_or_domains_shredded_key_is_tampered_not_erased(
    registry: Any, keyrings: Callable[..., Keyring], local_kek: str, fmt: str, field: str
) -> None:
    admin = keyrings(local_kek)
    ser, _ = serde(fmt, registry, admin)
    mine, theirs = ser(customer(1), value_ctx()), ser(customer(2), value_ctx())
    elsewhere = ser(customer(1), value_ctx("payments"))  # the same person's key in another domain
    other_person, other_domain = key_of(fmt, registry, theirs), key_of(fmt, registry, elsewhere, "payments")
    admin.shred_person("cust-2", reason="erasure request")
    admin.shred_domain("payments-value", reason="topic retired")
    forged = {k: repoint(fmt, registry, mine, field, k) for k in (other_person, other_domain)}
    consumer = keyrings(local_kek)
    _, de = serde(fmt, registry, consumer, on_erased="null", on_denied="null")
    _, marked = serde(fmt, registry, consumer, on_erased="marker", on_denied="marker")
    for _ in range(2):  # from the key store, then from the cache of shredded ids
        for target, data in forged.items():
            for reader in (de, marked):
                with pytest.raises(DecryptionError) as err:
                    reader(data, value_ctx())
                assert not isinstance(err.value, (KeyNotFoundError, AccessDeniedError, KeyCorruptedError))
                assert err.value.key_id == target  # the header parsed: it names the other key
        assert de(mine, value_ctx()) == customer(1)
        assert [de(theirs, value_ctx())[f] for f in PII] == UNREADABLE  # the genuine erasure
        assert all(isinstance(marked(theirs, value_ctx())[f], Erased) for f in PII)
    _, strict = serde(fmt, registry, consumer, on_erased="raise", on_denied="raise")
    with pytest.raises(KeyShreddedError):
        strict(theirs, value_ctx())
    with pytest.raises(DecryptionError) as err:
        strict(forged[other_person], value_ctx())
    assert not isinstance(err.value, KeyNotFoundError)


def test_a_value_repointed_at_a_key_this_consumer_cannot_unwrap_is_tampered_not_denied(
    registry: Any, keyrings: Callable[..., Keyring], local_kek: str, tmp_path: Path
) -> None:
    ser, _ = serde("avro", registry, keyrings(local_kek))
    mine = ser(customer(1), value_ctx())
    other_ser, _ = serde("avro", registry, keyrings(fieldcrypt.create_local_kek(tmp_path / "team-b.json")))
    # team B's topic (its domain, wrapped by its KEK, which this consumer does not hold)
    theirs = other_ser(customer(2), value_ctx("team-b"))
    target = key_of("avro", registry, theirs, "team-b")
    forged = repoint("avro", registry, mine, "email", target)
    _, de = serde("avro", registry, keyrings(local_kek), on_denied="null", on_erased="null")
    for _ in range(2):  # the denial is negatively cached: the cached error must still name the key's owner
        with pytest.raises(DecryptionError) as err:
            de(forged, value_ctx())
        assert not isinstance(err.value, (AccessDeniedError, KeyNotFoundError)) and err.value.key_id == target
        assert [de(theirs, value_ctx("team-b"))[f] for f in PII] == DENIED  # the genuine denial


def test_a_key_id_that_never_existed_is_not_found_the_denied_outcome(
    registry: Any, keyrings: Callable[..., Keyring], local_kek: str
) -> None:
    ser, _ = serde("avro", registry, keyrings(local_kek))
    mine = ser(customer(1), value_ctx())
    known = {k.key_id for k in keyrings(local_kek).keys()}
    unknown = next(k for k in iter(lambda: secrets.randbits(32), None) if k and k not in known)
    forged = repoint("avro", registry, mine, "email", unknown)
    consumer = keyrings(local_kek)
    _, strict = serde("avro", registry, consumer, on_erased="null", on_denied="raise")
    with pytest.raises(KeyNotFoundError) as err:
        strict(forged, value_ctx())
    assert not isinstance(err.value, KeyShreddedError) and err.value.key_id == unknown
    _, marked = serde("avro", registry, consumer, on_erased="marker", on_denied="marker")
    out = marked(forged, value_ctx())
    assert isinstance(out["email"], Denied) and not isinstance(out["email"], Erased)
    assert out["ssn"] == customer(1)["ssn"]  # the record's other values are untouched


# --- 6: an exception no driver recognises ------------------------------------------------------------------------


class Broken(tink.aead.Aead):
    """A KEK plugin that fails with its own exception type."""

    def __init__(self) -> None:
        self.calls = 0

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        self.calls += 1
        raise RuntimeError("plugin exploded")

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        self.calls += 1
        raise RuntimeError("plugin exploded")


def test_an_unrecognised_kek_error_is_unavailable_naming_its_type_not_denied(
    registry: Any, keyrings: Callable[..., Keyring], local_kek: str
) -> None:
    ser, _ = serde("avro", registry, keyrings(local_kek))
    data = ser(customer(1), value_ctx())
    broken = Kek(local_kek, Broken())  # the KEK that wrapped the key, now misbehaving
    _, de = serde("avro", registry, keyrings(broken, sleep=Sleeps()), on_denied="null", on_erased="null")
    with pytest.raises(Exception) as err:
        de(data, value_ctx())
    assert type(err.value) is KeyStoreUnavailableError and "RuntimeError" in str(err.value)
    stranger = Broken()  # a plugin KEK that did not wrap it: never asked (the domain's KEK is recorded)
    _, de = serde("avro", registry, keyrings(Kek("my-kms://key/1", stranger), sleep=Sleeps()), on_denied="null")
    assert [de(data, value_ctx())[f] for f in PII] == DENIED
    assert stranger.calls == 0
    writer, _ = serde("avro", registry, keyrings(Kek("my-kms://key/1", Broken()), sleep=Sleeps()))
    with pytest.raises(Exception) as err:
        writer(customer(2), value_ctx("fresh"))  # a new domain: its first (branch) key is wrapped by it
    assert type(err.value) is KeyStoreUnavailableError and "RuntimeError" in str(err.value)


# --- 7: a KMS that will not wrap a new key ----------------------------------------------------------------------


def test_a_kms_refusing_to_wrap_raises_encryption_error_and_stores_nothing(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    kms.fail("Encrypt", "AccessDeniedException")
    producer = keyrings(kek_at(kms.endpoint), sleep=Sleeps())
    ser, de = serde("avro", registry, producer)
    for _ in range(2):
        with pytest.raises(EncryptionError) as err:
            ser(customer(1), value_ctx())
        assert not isinstance(err.value, KeyStoreUnavailableError)
    assert kms.calls["Encrypt"] == 2  # no access is not retried
    assert producer.keys() == []  # no key row was left behind
    kms.fail("Encrypt", None)
    data = ser(customer(1), value_ctx())
    assert de(data, value_ctx()) == customer(1)


def test_a_throttled_kms_on_wrap_is_unavailable_after_retries(
    registry: Any, keyrings: Callable[..., Keyring], kms: FakeKms
) -> None:
    kms.fail("Encrypt", "ThrottlingException")
    sleeps = Sleeps()
    producer = keyrings(kek_at(kms.endpoint), retries=2, backoff=0.01, sleep=sleeps)
    ser, de = serde("avro", registry, producer)
    with pytest.raises(Exception) as err:
        ser(customer(1), value_ctx())
    assert type(err.value) is KeyStoreUnavailableError
    assert kms.calls["Encrypt"] == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0]
    assert producer.keys() == []
    kms.fail("Encrypt", None)
    assert de(ser(customer(1), value_ctx()), value_ctx()) == customer(1)
