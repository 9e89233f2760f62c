"""The contract every key store implementation passes: SQLite and PostgreSQL (add new stores to STORES)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from pg import pg_schema_url

from fieldcrypt import KeyStore, open_store
from fieldcrypt.keys.store import AuditEntry, ShredRecord, WrapLater

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'contract.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}


@pytest.fixture(params=sorted(STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with STORES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[KeyStore]:
    s = open_store(store_url, create=True)
    yield s
    s.close()


def wrap_with(tag: bytes) -> Callable[[int, int], bytes]:
    return lambda key_id, version: tag + key_id.to_bytes(4, "big") + version.to_bytes(4, "big")


def audit(op: str = "create") -> AuditEntry:
    return AuditEntry(at=1.0, actor="tester", operation=op, reason="contract")


def test_create_then_get_and_active(store: KeyStore) -> None:
    assert store.active("d", None) is None
    made = store.create("d", None, "local-kek:///k", wrap_with(b"w"), 100.0, audit())
    assert 0 < made.key_id < 2**32 and made.version == 1 and made.state == "active"
    assert made.wrapped == b"w" + made.key_id.to_bytes(4, "big") + (1).to_bytes(4, "big")
    assert store.get(made.key_id) == made
    assert store.active("d", None) == made
    assert store.get(made.key_id ^ 1) is None


def test_create_is_idempotent_per_domain_and_person(store: KeyStore) -> None:
    a = store.create("d", "alice", "k", wrap_with(b"1"), 1.0, audit())
    again = store.create("d", "alice", "k", wrap_with(b"2"), 2.0, audit())
    assert again == a
    b = store.create("d", "bob", "k", wrap_with(b"3"), 3.0, audit())
    dom = store.create("d", None, "k", wrap_with(b"4"), 4.0, audit())
    other = store.create("e", "alice", "k", wrap_with(b"5"), 5.0, audit())
    assert len({a.key_id, b.key_id, dom.key_id, other.key_id}) == 4
    assert store.active("d", "alice") == a and store.active("d", None) == dom
    assert [k.key_id for k in store.keys("d")] == [dom.key_id, a.key_id, b.key_id]
    assert [k.key_id for k in store.keys(person="alice")] == [a.key_id, other.key_id]
    assert len(list(store.keys())) == 4
    assert [e.operation for e in store.audit_log()] == ["create"] * 4


def test_rotation_retires_and_is_raced_safely(store: KeyStore) -> None:
    v1 = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())
    v2 = store.create("d", "p", "k", wrap_with(b"2"), 2.0, audit("rotate"), retire=v1.key_id)
    assert v2.version == 2 and v2.key_id != v1.key_id
    assert store.get(v1.key_id).state == "retired"  # type: ignore[union-attr]
    assert store.active("d", "p") == v2
    # a second process asking to retire v1 again gets v2, not v3
    assert store.create("d", "p", "k", wrap_with(b"3"), 3.0, audit("rotate"), retire=v1.key_id) == v2
    assert store.audit_log()[-1].key_ids == (v1.key_id, v2.key_id)


def test_rotate_retires_only_the_listed_key_while_it_is_active(store: KeyStore) -> None:
    v1 = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())
    v2 = store.rotate("d", "p", v1.key_id, "k", wrap_with(b"2"), 2.0, audit("rotate"))
    assert v2 is not None and v2.version == 2 and store.active("d", "p") == v2
    assert store.get(v1.key_id).state == "retired"  # type: ignore[union-attr]
    assert store.audit_log()[-1].key_ids == (v1.key_id, v2.key_id)
    entries = len(store.audit_log())
    # compare and swap: the key listed is no longer the active one (rotated elsewhere): nothing changes
    assert store.rotate("d", "p", v1.key_id, "k", wrap_with(b"3"), 3.0, audit("rotate")) is None
    # shredded: no key is created for the person (create() would make a fresh version 1)
    store.shred(None, ["p"], 4.0, audit("shred"))
    assert store.rotate("d", "p", v2.key_id, "k", wrap_with(b"4"), 5.0, audit("rotate")) is None
    assert store.rotate("d", "p", 12345, "k", wrap_with(b"5"), 5.0, audit("rotate")) is None  # never held
    assert store.active("d", "p") is None and list(store.keys("d", "p")) == []
    assert len(store.audit_log()) == entries + 1  # the shred only
    # the KeyStore default (plugin stores written before rotate) agrees
    w1 = store.create("d", "q", "k", wrap_with(b"6"), 6.0, audit())
    w2 = KeyStore.rotate(store, "d", "q", w1.key_id, "k", wrap_with(b"7"), 7.0, audit("rotate"))
    assert w2 is not None and w2.version == 2 and store.active("d", "q") == w2
    assert KeyStore.rotate(store, "d", "q", w1.key_id, "k", wrap_with(b"8"), 8.0, audit("rotate")) is None
    store.shred(None, ["q"], 9.0, audit("shred"))
    assert KeyStore.rotate(store, "d", "q", w2.key_id, "k", wrap_with(b"9"), 9.0, audit("rotate")) is None
    assert list(store.keys("d", "q")) == []


def test_rotate_wrap_later_rolls_the_retirement_back(store: KeyStore) -> None:
    v1 = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())

    def later(key_id: int, version: int) -> bytes:
        raise WrapLater(key_id, version)

    with pytest.raises(WrapLater) as asked:
        store.rotate("d", "p", v1.key_id, "k", later, 2.0, audit("rotate"))
    assert asked.value.version == 2 and store.active("d", "p") == v1 and len(store.audit_log()) == 1
    v2 = store.rotate("d", "p", v1.key_id, "k", wrap_with(b"2"), 3.0, audit("rotate"), key_id=asked.value.key_id)
    assert v2 is not None and v2.key_id == asked.value.key_id and v2.version == 2


def test_a_shred_overlapping_a_rotation_destroys_the_new_key_too(store_url: str, store: KeyStore) -> None:
    """A shred that starts while a rotation's transaction is open (it waits for it) also destroys the key that
    rotation makes: on PostgreSQL a DELETE under READ COMMITTED would re-check the row it waited for, never see the
    new one, and leave the person with an active key after the shred."""
    v1 = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())
    other = open_store(store_url)
    shredding: list[threading.Thread] = []
    outcome: list[object] = []

    def shred() -> None:
        try:
            outcome.append(other.shred(None, ["p"], 3.0, audit("shred")))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    def wrap_while_a_shred_waits(key_id: int, version: int) -> bytes:
        # inside the rotation's transaction, after v1 was retired: a shred starts and must wait for it
        shredding.append(threading.Thread(target=shred))
        shredding[0].start()
        shredding[0].join(0.5)
        assert shredding[0].is_alive(), f"the shred did not wait for the rotation's transaction: {outcome}"
        return b"2" + key_id.to_bytes(4, "big")

    try:
        v2 = store.rotate("d", "p", v1.key_id, "k", wrap_while_a_shred_waits, 2.0, audit("rotate"))
        shredding[0].join(30)
        assert v2 is not None and len(outcome) == 1 and isinstance(outcome[0], list), outcome
        assert sorted(r.key_id for r in outcome[0]) == sorted([v1.key_id, v2.key_id])
        assert store.active("d", "p") is None and list(store.keys("d", "p")) == []
        assert {r.key_id for r in store.shred_log()} == {v1.key_id, v2.key_id}
    finally:
        for t in shredding:
            t.join(30)
        other.close()


def _held_shred(store_url: str, hold: str, *, after: bool = False) -> tuple[KeyStore, threading.Event, threading.Event]:
    """A second store whose shred stops at its first ``hold`` step (``_delete_pass`` with ``after``: right after the
    first DELETE; ``_audit_rows``: after every DELETE, before the audit chain's lock) until released, its transaction
    open."""
    other = open_store(store_url)
    reached, release = threading.Event(), threading.Event()
    step = getattr(other, hold)

    def held(*args: object) -> object:
        done = step(*args) if after else None
        if not reached.is_set():
            reached.set()
            assert release.wait(30), "never released"
        return done if after else step(*args)

    setattr(other, hold, held)
    return other, reached, release


def test_an_open_shred_does_not_block_other_persons_key_writes(store_url: str, store: KeyStore) -> None:
    """While a shred's transaction is open (a batch of 100,000 persons takes tens of seconds on PostgreSQL),
    producers create and top up the keys of other persons at once: the shred locks only the rows it deletes."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a shred holds every other write until it commits")
    import time

    store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())
    q = store.create("d", "q", "k", wrap_with(b"2"), 1.0, audit())
    r = store.create("d", "r", "k", wrap_with(b"3"), 1.0, audit())
    other, reached, release = _held_shred(store_url, "_audit_rows")
    outcome: list[object] = []
    shredding = threading.Thread(target=lambda: outcome.append(other.shred(None, ["p"], 3.0, audit("shred"))))
    shredding.start()
    try:
        assert reached.wait(10), outcome
        started = time.monotonic()
        made = store.create("d", "new", "k", wrap_with(b"4"), 2.0, audit(), charge=7)  # a new person's first record
        assert store.reserve(q.key_id, 5, 100) == 5  # a lease top-up
        rotated = store.rotate("d", "r", r.key_id, "k", wrap_with(b"5"), 2.0, audit("rotate"))
        assert time.monotonic() - started < 1.0
        assert made.encryptions == 7 and rotated is not None and shredding.is_alive()
    finally:
        release.set()
        shredding.join(30)
        other.close()
    assert len(outcome) == 1 and isinstance(outcome[0], list) and [x.person for x in outcome[0]] == ["p"]
    assert store.active("d", "new") == made and store.active("d", "r") == rotated


def test_a_shred_deletes_again_the_keys_committed_during_its_first_delete(store_url: str, store: KeyStore) -> None:
    """After its first DELETE a shred deletes again, in a new statement, until nothing is left: a key committed
    for a shredded person meanwhile (here a first use in another domain) is destroyed and logged like the others,
    and a rotation of a key the shred has deleted waits for it and then finds nothing to rotate."""
    p1 = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit())
    keep = store.create("d", "q", "k", wrap_with(b"2"), 1.0, audit())
    other, reached, release = _held_shred(store_url, "_delete_pass", after=True)
    outcome: list[object] = []
    rotation: list[object] = []
    shredding = threading.Thread(target=lambda: outcome.append(other.shred(None, ["p", "q2"], 3.0, audit("shred"))))
    rotating = threading.Thread(
        target=lambda: rotation.append(store.rotate("d", "p", p1.key_id, "k", wrap_with(b"4"), 2.0, audit("rotate")))
    )
    shredding.start()
    try:
        assert reached.wait(10), outcome
        if store_url.startswith("postgresql"):  # SQLite's single writer holds both until the shred commits
            late = store.create("e", "p", "k", wrap_with(b"3"), 2.0, audit())  # committed after the first DELETE
            rotating.start()
            rotating.join(0.5)
            assert rotating.is_alive(), "the rotation did not wait for the shred's row lock"
    finally:
        release.set()
        shredding.join(30)
        if rotating.is_alive() or rotation:
            rotating.join(30)
        other.close()
    assert len(outcome) == 1 and isinstance(outcome[0], list), outcome
    destroyed = {x.key_id for x in outcome[0]}
    if store_url.startswith("postgresql"):
        assert rotation == [None] and destroyed == {p1.key_id, late.key_id}
    else:
        assert destroyed == {p1.key_id}
    assert list(store.keys(person="p")) == [] and store.active("d", "q") == keep
    assert {x.key_id for x in store.shred_log()} == destroyed
    shreds = [e for e in store.audit_log() if e.operation == "shred"]
    assert [(e.person, set(e.key_ids)) for e in shreds] == [("p", destroyed), ("q2", set())]


def test_active_keys_pages_a_domain_by_data_subject(store: KeyStore) -> None:
    dom = store.create("d", None, "k", wrap_with(b"0"), 1.0, audit())
    a, c = (store.create("d", p, "k", wrap_with(b"1"), 1.0, audit()) for p in ("a", "c"))
    b1 = store.create("d", "b", "k", wrap_with(b"2"), 1.0, audit())
    b2 = store.create("d", "b", "k", wrap_with(b"3"), 2.0, audit("rotate"), retire=b1.key_id)
    store.create("e", "a", "k", wrap_with(b"4"), 1.0, audit())  # another domain
    store.shred("d", ["z"], 3.0, audit("shred"))  # nothing held: no effect
    assert store.active_keys("d") == [dom, a, b2, c]  # the domain-wide key first, then by person; active only
    assert store.active_keys("d", None, 2) == [dom, a]
    assert store.active_keys("d", "a", 2) == [b2, c]
    assert store.active_keys("d", "", 10) == [a, b2, c]  # "" is the domain-wide key's place
    assert store.active_keys("d", "c") == [] and store.active_keys("nowhere") == []
    # the KeyStore default (for plugin stores, from keys()) agrees with the store's own query
    for after, limit in ((None, 500), (None, 2), ("a", 2), ("", 10), ("c", 5)):
        assert KeyStore.active_keys(store, "d", after, limit) == store.active_keys("d", after, limit)


def test_shredded_keys_by_domain_and_person(store: KeyStore) -> None:
    a1 = store.create("d", "a", "k", wrap_with(b"1"), 1.0, audit())
    a2 = store.create("e", "a", "k", wrap_with(b"2"), 1.0, audit())
    b = store.create("d", "b", "k", wrap_with(b"3"), 1.0, audit())
    dom = store.create("d", None, "k", wrap_with(b"4"), 1.0, audit())
    store.create("d", "c", "k", wrap_with(b"5"), 1.0, audit())  # kept
    store.shred(None, ["a"], 10.0, audit("shred"))
    store.shred("d", ["b"], 20.0, audit("shred"))
    store.shred("e", None, 30.0, audit("shred"))  # nothing left in e: no effect
    store.shred(None, ["zz"], 40.0, audit("shred"))
    ids = lambda rs: [(r.key_id, r.domain, r.person, r.shredded_at) for r in rs]  # noqa: E731
    assert ids(store.shredded_keys(person="a")) == [(a1.key_id, "d", "a", 10.0), (a2.key_id, "e", "a", 10.0)]
    assert ids(store.shredded_keys("d")) == [(a1.key_id, "d", "a", 10.0), (b.key_id, "d", "b", 20.0)]
    assert ids(store.shredded_keys("d", "b")) == [(b.key_id, "d", "b", 20.0)]
    assert len(list(store.shredded_keys())) == 3 and list(store.shredded_keys("d", "c")) == []
    assert store.get(dom.key_id) is not None
    # the KeyStore default (for plugin stores, from shred_log()) agrees with the store's own query
    for domain, person in ((None, None), ("d", None), (None, "a"), ("d", "b"), ("e", None)):
        assert list(KeyStore.shredded_keys(store, domain, person)) == list(store.shredded_keys(domain, person))


def test_reserve_counts(store: KeyStore) -> None:
    k = store.create("d", None, "k", wrap_with(b"w"), 1.0, audit())
    assert store.reserve(k.key_id, 10, 32) == 10
    assert store.reserve(k.key_id, 5, 32) == 5
    assert store.get(k.key_id).encryptions == 15  # type: ignore[union-attr]
    assert store.reserve(k.key_id, 10, 20) == 5  # clipped at the limit
    assert store.get(k.key_id).encryptions == 20  # type: ignore[union-attr]
    assert store.reserve(k.key_id, 10, 20) == 0
    assert store.get(k.key_id).encryptions == 20  # type: ignore[union-attr]
    assert store.reserve(k.key_id ^ 1, 1, 20) is None  # no such key (shredded)


def test_shred_person_domain_and_log(store: KeyStore) -> None:
    a1 = store.create("d1", "alice", "k", wrap_with(b"w"), 1.0, audit())
    a2 = store.create("d2", "alice", "k", wrap_with(b"w"), 1.0, audit())
    b1 = store.create("d1", "bob", "k", wrap_with(b"w"), 1.0, audit())
    c3 = store.create("d3", "carol", "k", wrap_with(b"w"), 1.0, audit())
    gone = store.shred(None, ["alice"], 50.0, audit("shred"))
    assert sorted(r.key_id for r in gone) == sorted([a1.key_id, a2.key_id])
    assert store.get(a1.key_id) is None and store.get(b1.key_id) is not None
    assert store.shredded(a1.key_id) == ShredRecord(a1.key_id, "d1", "alice", 50.0)
    assert store.shred(None, ["alice"], 60.0, audit("shred")) == []  # twice: a no-op, not an error
    assert store.shred(None, ["nobody"], 60.0, audit("shred")) == []
    gone = store.shred("d3", None, 70.0, audit("shred"))
    assert [r.key_id for r in gone] == [c3.key_id]
    assert {r.key_id for r in store.shred_log()} == {a1.key_id, a2.key_id, c3.key_id}
    assert [e.operation for e in store.audit_log()][-4:] == ["shred"] * 4
    assert store.audit_log()[-1].key_ids == (c3.key_id,)


def test_shred_many_persons_in_one_domain(store: KeyStore) -> None:
    made = [store.create("d", f"p{i}", "k", wrap_with(b"w"), 1.0, audit()) for i in range(1200)]
    other = store.create("e", "p1", "k", wrap_with(b"w"), 1.0, audit())
    gone = store.shred("d", [f"p{i}" for i in range(0, 1200, 2)], 2.0, audit("shred"))
    assert len(gone) == 600
    assert store.get(made[0].key_id) is None and store.get(made[1].key_id) is not None
    assert store.get(other.key_id) is not None
    # what a no-op re-run of the same erasure batch reports, counted across more than one query batch
    assert store.count_shredded("d", [f"p{i}" for i in range(1200)]) == 600
    assert store.count_shredded(None, ["p0", "p1", "p2", "nobody"]) == 2
    assert store.count_shredded("e", ["p0"]) == 0
    assert store.count_shredded("d", None) == 600 and store.count_shredded("e", None) == 0


def test_apply_shred_log_and_ids_never_reused(store: KeyStore) -> None:
    k = store.create("d", "p", "k", wrap_with(b"w"), 1.0, audit())
    other = store.create("d", "q", "k", wrap_with(b"w"), 1.0, audit())
    # a shred log from elsewhere (e.g. exported before this store was restored from a backup) names both keys
    # (times as a hand-made log may give them: an int beside a float)
    log = [ShredRecord(k.key_id, "d", "p", 2), ShredRecord(other.key_id, "d", "q", 2.5)]
    assert sorted(store.apply_shred_log(log, audit("restore"))) == sorted([k.key_id, other.key_id])
    assert store.get(k.key_id) is None and store.shredded(k.key_id) is not None
    assert store.apply_shred_log(log, audit("restore")) == []
    assert store.audit_log()[-1].operation == "restore"
    # ids in the shred log are never handed out again
    for _ in range(50):
        assert store.create("d", "p", "k", wrap_with(b"w"), 3.0, audit()).key_id != k.key_id
        store.shred(None, ["p"], 4.0, audit("shred"))


def test_update_wrapped(store: KeyStore) -> None:
    k = store.create("d", None, "old-kek", wrap_with(b"w"), 1.0, audit())
    assert store.update_wrapped([(k.key_id, "new-kek", b"rewrapped"), (12345, "new-kek", b"x")], audit("rewrap")) == 1
    got = store.get(k.key_id)
    assert got is not None and got.kek_uri == "new-kek" and got.wrapped == b"rewrapped"


def test_wrap_failure_writes_nothing(store: KeyStore) -> None:
    def boom(key_id: int, version: int) -> bytes:
        raise RuntimeError("KEK down")

    with pytest.raises(RuntimeError):
        store.create("d", None, "k", boom, 1.0, audit())
    assert store.active("d", None) is None and list(store.keys()) == [] and store.audit_log() == []


def test_wrap_later_rolls_back_and_reaches_the_caller(store: KeyStore) -> None:
    # the keyring's wrap never calls a KMS inside the transaction: it asks for the id and version, and comes back
    def later(key_id: int, version: int) -> bytes:
        raise WrapLater(key_id, version)

    with pytest.raises(WrapLater) as asked:
        store.create("d", "p", "k", later, 1.0, audit())
    assert asked.value.version == 1 and 0 < asked.value.key_id < 2**32
    assert store.active("d", "p") is None and list(store.keys()) == [] and store.audit_log() == []
    made = store.create("d", "p", "k", wrap_with(b"w"), 2.0, audit(), key_id=asked.value.key_id)
    assert made.key_id == asked.value.key_id and made.version == 1


def test_a_proposed_key_id_is_used_only_if_unused_and_never_shredded(store: KeyStore) -> None:
    first = store.create("d", "p", "k", wrap_with(b"1"), 1.0, audit(), key_id=0x0A0B0C0D)
    assert first.key_id == 0x0A0B0C0D
    taken = store.create("e", "p", "k", wrap_with(b"2"), 1.0, audit(), key_id=first.key_id)
    assert taken.key_id != first.key_id  # held by another key: a random one instead
    store.shred("d", None, 2.0, audit("shred"))
    again = store.create("d", "p", "k", wrap_with(b"3"), 3.0, audit(), key_id=first.key_id)
    assert again.key_id not in (first.key_id, taken.key_id)  # in the shred log: never given again
    assert store.shredded(first.key_id) is not None and store.get(first.key_id) is None
    for bad in (0, 2**32, -5):
        assert 0 < store.create("f", str(bad), "k", wrap_with(b"4"), 4.0, audit(), key_id=bad).key_id < 2**32


def test_persons_are_opaque_text(store: KeyStore) -> None:
    for person in ["42", "ünïcödé", "a'b\"c;--", "x" * 300]:
        made = store.create("d", person, "k", wrap_with(b"w"), 1.0, audit())
        assert store.active("d", person) == made and made.person == person


def _create_in_process(url: str, barrier: object, out: object) -> None:
    store = open_store(url)
    barrier.wait()  # type: ignore[attr-defined]
    made = store.create("shared", "p", "k", lambda i, v: b"w%d" % i, 1.0, audit())
    out.put(made.key_id)  # type: ignore[attr-defined]
    store.close()


def test_concurrent_first_use_in_many_processes_creates_one_key(store_url: str, store: KeyStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_create_in_process, args=(store_url, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(60)
    assert len(ids) == 1
    assert [k.key_id for k in store.keys("shared")] == list(ids)
    assert len(store.audit_log()) == 1


def test_a_shred_of_persons_takes_exactly_them_whatever_their_ids_hold(store: KeyStore) -> None:
    """Persons are matched whole: an id with a space is not two ids, and ids without one are not split either (the
    PostgreSQL store sends a batch as one string when no id holds a space)."""
    for person in ("a b", "a", "b", "c", "d e f"):
        store.create("d", person, "k", wrap_with(person.encode()), 1.0, audit())
    assert sorted(r.person or "" for r in store.shred(None, ["a b", "c"], 2.0, audit("shred"))) == ["a b", "c"]
    assert sorted(r.person or "" for r in store.shred(None, ["a", "x", "d"], 2.0, audit("shred"))) == ["a"]
    assert sorted(r.person or "" for r in store.keys("d")) == ["b", "d e f"]
