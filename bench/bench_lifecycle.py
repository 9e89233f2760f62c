"""Key lifecycle at scale: shredding in a store of 1,000,000 people, and per-person encryption throughput.

    python bench/bench_lifecycle.py [--people 1000000] [--batch 10000] [--records 200000] [--stores sqlite,postgresql]
                                    [--shred-all] [--skip-throughput]

1. Shred: fills each key store with --people persons (one key each in one domain; the rows are bulk-inserted with
   random wrapped bytes, since shredding never unwraps), then times `fieldcrypt keys shred --data-subject ID`
   (the CLI, in process, including opening the store) and `fieldcrypt keys shred --from-file` of --batch people.
2. Per-person throughput: a store of --people persons where the keys the run touches are real Tink keys;
   records are drawn so that ~95% of them hit a cached key (a hot set that fits the cache) and ~5% go to cold
   people (load from the store + unwrap). Compared with per-domain keys on the same records; RSS is reported to
   show memory bounded by the cache size.
PostgreSQL: postgresql://root@127.0.0.1:5432/test (a scratch schema, filled by that role, the store's owner),
skipped if unreachable. Its shreds run as a login of the fieldcrypt admin role, as in production
(`fieldcrypt keys grant --role admin`; docs/least-privilege.md), created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import fieldcrypt
from fieldcrypt.cli import main as cli
from fieldcrypt.keys.registry import grant_role

PG = os.environ.get("FIELDCRYPT_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")
DOMAIN = "bench-value"  # the subject of topic "bench": the serializer's default domain


@contextlib.contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}"
        return
    import psycopg

    schema = f"fcbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def admin_login(url: str) -> Iterator[str]:
    """The store's URL as a new login role granted the fieldcrypt admin role (dropped afterwards): what a key
    admin's shred runs as. SQLite stores are single-user: the URL itself."""
    if url.startswith("sqlite"):
        yield url
        return
    import psycopg

    name = f"fcbench_admin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        grant_role(url, "admin", name)
        scheme, rest = url.split("://", 1)
        yield f"{scheme}://{name}@{rest.split('@', 1)[-1]}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")


def person(i: int) -> str:
    return f"person-{i:07d}"


def fill(url: str, people: int, skip: set[int] | None = None, kek: str | None = None) -> float:
    """Bulk-insert one key per person (random wrapped bytes), each named by its pseudonym as the store holds it
    (``kek``: the domain's KEK; the domain's pseudonym key is made here). Returns seconds (the pseudonyms' HMACs
    included)."""
    fieldcrypt.create_key_store(url)  # creates the tables
    skip = skip or set()
    named = str
    if kek is not None:
        keyring = fieldcrypt.Keyring(url, kek)
        keyring._stored(DOMAIN, "-")  # the domain's pseudonym key: made and wrapped by the KEK
        named = partial(keyring._stored, DOMAIN)  # type: ignore[assignment]
        keyring.close()
    rows = (
        # the columns of fieldcrypt_keys, branch_id (0: wrapped by the KEK itself) last
        (random.getrandbits(32) | 1, DOMAIN, named(person(i)), 1, "active", "bench", os.urandom(100), 0.0, 0, 0)
        for i in range(people)
        if i not in skip
    )
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite:///") :])
        db.execute("PRAGMA journal_mode = WAL")
        with db:
            db.executemany("INSERT OR IGNORE INTO fieldcrypt_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            seen: set[int] = set()
            with cur.copy("COPY fieldcrypt_keys FROM STDIN") as copy_:
                for row in rows:
                    if row[0] in seen:
                        continue
                    seen.add(row[0])
                    copy_.write_row(row)
            cur.execute("ANALYZE fieldcrypt_keys")
    return time.perf_counter() - t0


def timed_cli(*argv: str) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        code = cli(list(argv))
    assert code == 0, argv
    return time.perf_counter() - t0


def bench_shred(kind: str, tmp: Path, people: int, batch: int) -> dict[str, Any]:
    kek = fieldcrypt.create_local_kek(tmp / f"kek-{uuid.uuid4().hex}.json")
    with store_url(kind, tmp) as owner_url:
        fill_s = fill(owner_url, people, kek=kek)
        with admin_login(owner_url) as url:
            row = _shred_as(kind, tmp, url, people, batch, fill_s, kek, random.sample(range(people), batch))
    row.update(chain_cost(kind, tmp, people, batch, kek))
    return row


def bench_shred_all(kind: str, tmp: Path, people: int) -> dict[str, Any]:
    """Every person of a store of ``people`` at once: `fieldcrypt keys shred --from-file` of all their ids (the CLI
    in process, its start-up included; PostgreSQL as the admin role)."""
    kek = fieldcrypt.create_local_kek(tmp / f"kek-{uuid.uuid4().hex}.json")
    with store_url(kind, tmp) as owner_url:
        fill(owner_url, people, kek=kek)
        with admin_login(owner_url) as url:
            ids = tmp / "everyone.txt"
            ids.write_text("\n".join(person(i) for i in range(people)) + "\n")
            took = timed_cli("keys", "shred", "--from-file", str(ids), "--store", url, "--kek", kek, "--reason",
                             "bench", "--yes")  # fmt: skip
            store = fieldcrypt.open_store(url)
            left = sum(1 for _ in store.keys(DOMAIN))
            store.close()
    row = {"bench": "shred-all", "store": kind, "people": people, "shred_all_s": round(took, 1), "keys_left": left}
    print(json.dumps(row), flush=True)
    return row


def chain_cost(kind: str, tmp: Path, people: int, batch: int, kek: str) -> dict[str, Any]:
    """What the audit log's hash chain costs a shred of ``batch`` people: two stores filled alike, one whose audit
    log is written as before the chain (issue 22), the same batches shredded in each, in the order ABBA (so neither
    store always goes first), twice. Returns the mean seconds of each and the difference."""
    orders = (("chained", "unchained"), ("unchained", "chained")) * 2
    samples = random.sample(range(people), len(orders) * batch)
    times: dict[str, list[float]] = {"chained": [], "unchained": []}
    with store_url(kind, tmp) as a_owner, store_url(kind, tmp) as b_owner:
        fill(a_owner, people, kek=kek)
        fill(b_owner, people, kek=kek)
        with admin_login(a_owner) as a, admin_login(b_owner) as b:
            for r, order in enumerate(orders):
                ids = tmp / "chain-cost.txt"
                ids.write_text("\n".join(person(i) for i in samples[r * batch : (r + 1) * batch]) + "\n")
                for mode in order:
                    url, owner = (a, a_owner) if mode == "chained" else (b, b_owner)
                    args = ["--store", url, "--kek", kek, "--reason", "bench", "--yes"]
                    with unchained(owner) if mode == "unchained" else contextlib.nullcontext():
                        times[mode].append(timed_cli("keys", "shred", "--from-file", str(ids), *args))
    chained, base = (sum(times[m]) / len(times[m]) for m in ("chained", "unchained"))
    out = {
        f"shred_{batch}_chained_mean_s": round(chained, 2),
        f"shred_{batch}_unchained_mean_s": round(base, 2),
        "audit_chain_cost": f"{(chained / base - 1) * 100:+.1f}%",
    }
    print(json.dumps({"bench": "audit-chain", "store": kind, "people": people, **out}), flush=True)
    return out


@contextlib.contextmanager
def unchained(owner_url: str) -> Iterator[None]:
    """Within: audit entries written as before the hash chain (no link, no lock, no head read; the store's guard
    against unlinked entries lifted for it). A baseline for the bench only."""
    from fieldcrypt.keys import _sql

    def plain(self: Any, ex: Any, rows: Any) -> None:  # (the entries' columns, _sql._audit_row's)
        cols = "at, actor, operation, domain, person, key_ids, reason, detail"
        if owner_url.startswith("postgresql") and len(rows) > 1:
            ex.copy(f"COPY fieldcrypt_audit ({cols}) FROM STDIN", rows)
            return
        for i in range(0, len(rows), 100):
            chunk = rows[i : i + 100]
            marks = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
            ex(f"INSERT INTO fieldcrypt_audit ({cols}) VALUES {marks}", [v for r in chunk for v in r])

    if owner_url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(owner_url[len("sqlite:///") :])
        if "hash" in {r[1] for r in db.execute("PRAGMA table_info(fieldcrypt_audit)")}:
            # the table as it was before the chain (its entries so far are the fill's: not needed here)
            db.executescript(
                "DROP TABLE fieldcrypt_audit; CREATE TABLE fieldcrypt_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "at REAL NOT NULL, actor TEXT NOT NULL, operation TEXT NOT NULL, domain TEXT, person TEXT NOT NULL "
                "DEFAULT '', key_ids TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL "
                "DEFAULT '');"
            )
        db.close()
    else:
        import psycopg

        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE fieldcrypt_audit ALTER COLUMN hash DROP NOT NULL")
            # entries numbered by the sequence again, as before the chain (linked ones carry their own numbers)
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('fieldcrypt_audit', 'seq'), "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM fieldcrypt_audit), false)"
            )
    saved = _sql.SqlKeyStore._audit_rows
    _sql.SqlKeyStore._audit_rows = plain  # type: ignore[method-assign]
    try:
        yield
    finally:
        _sql.SqlKeyStore._audit_rows = saved  # type: ignore[method-assign]


def _shred_as(
    kind: str,
    tmp: Path,
    url: str,
    people: int,
    batch: int,
    fill_s: float,
    kek: str,
    sample: list[int],
) -> dict[str, Any]:
    """The shreds of bench_shred, run with the key store URL ``url`` (PostgreSQL: an admin role's login) and a KEK
    of the store's pseudonym key (the CLI hashes each id it is given; one KEK unwrap per command)."""
    s = ["--store", url, "--kek", kek, "--reason", "bench", "--yes"]
    one = timed_cli("keys", "shred", "--data-subject", person(people // 2), *s)
    ids = tmp / "erasures.txt"
    ids.write_text("\n".join(person(i) for i in sample) + "\n")
    many = timed_cli("keys", "shred", "--from-file", str(ids), *s)
    again = timed_cli("keys", "shred", "--data-subject", person(people // 2), *s)
    # the batch re-run: a no-op
    file_again = timed_cli("keys", "shred", "--from-file", str(ids), *s)
    store = fieldcrypt.open_store(url)
    left = sum(1 for _ in store.keys(DOMAIN))
    store.close()
    row = {
        "bench": "shred",
        "store": kind,
        "shred_as": "admin role" if kind == "postgresql" else "file owner",
        "people": people,
        "fill_s": round(fill_s, 1),
        "shred_one_s": round(one, 3),
        f"shred_{batch}_from_file_s": round(many, 2),
        "shred_again_noop_s": round(again, 3),
        f"shred_{batch}_again_noop_s": round(file_again, 3),
        "keys_left": left,
    }
    print(json.dumps(row), flush=True)
    return row


SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CustomerEvent",
    "namespace": "bench",
    "fields": [
        {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "ssn", "type": "string", "confluent:tags": ["PII"]},
        {"name": "fullName", "type": "string", "confluent:tags": ["PII"]},
        {"name": "purchaseAmount", "type": "double"},
        {"name": "currency", "type": "string"},
    ],
}


def bench_per_person(kind: str, tmp: Path, people: int, records: int, hot: int) -> dict[str, Any]:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    from fieldcrypt.avro import AvroDeserializer, AvroSerializer

    rng = random.Random(7)
    cold_n = records // 20
    cache = hot * 13 // 10  # LRU over random picks: room for the hot set plus the cold churn
    picks = [rng.randrange(hot) if rng.random() >= 0.05 else rng.randrange(hot, people) for _ in range(records)]
    touched = set(picks)
    kek = fieldcrypt.create_local_kek(tmp / f"kek-{uuid.uuid4().hex}.json")
    with store_url(kind, tmp) as url:
        fieldcrypt.create_key_store(url)  # a key store is never implicit
        t0 = time.perf_counter()
        keyring = fieldcrypt.Keyring(url, kek, cache_size=cache)
        for i in touched:  # real keys for everyone the run touches
            keyring.encryption_key(DOMAIN, person(i))
        real_s = time.perf_counter() - t0
        fill_s = fill(url, people, skip=touched)
        keyring.clear_cache()
        recs = [
            {
                "customerId": person(i),
                "email": f"{person(i)}@example.com",
                "ssn": f"{i % 1000:03d}-45-6789",
                "fullName": f"Person {i}",
                "purchaseAmount": 1.5,
                "currency": "EUR",
            }
            for i in picks
        ]
        registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        ctx = SerializationContext("bench", MessageField.VALUE)
        ser = AvroSerializer(registry, json.dumps(SCHEMA), keyring=keyring)
        # the consumer is another process: its own keyring, its own cache
        reader = fieldcrypt.Keyring(url, kek, cache_size=cache)
        de = AvroDeserializer(registry, keyring=reader)
        warm = {i: r for i, r in zip(picks, recs, strict=True) if i < hot}
        for r in warm.values():  # warm the hot set, as a running producer and consumer would have: by use
            de(ser(r, ctx), ctx)
        keyring._active.hits = keyring._active.misses = 0
        t0 = time.perf_counter()
        out = [ser(r, ctx) for r in recs]
        person_rps = records / (time.perf_counter() - t0)
        hit_rate = keyring._active.hits / max(1, keyring._active.hits + keyring._active.misses)
        reader._by_id.hits = reader._by_id.misses = 0
        t0 = time.perf_counter()
        back = [de(b, ctx) for b in out]
        person_de = records / (time.perf_counter() - t0)
        de_hit_rate = reader._by_id.hits / max(1, reader._by_id.hits + reader._by_id.misses)
        assert back[-1] == recs[-1]
        domain_schema = copy.deepcopy(SCHEMA)
        domain_schema["fields"][0].pop("confluent:tags")
        dser = AvroSerializer(registry, json.dumps(domain_schema), keyring=keyring)
        dctx = SerializationContext("bench-domain", MessageField.VALUE)
        dser(recs[0], dctx)
        t0 = time.perf_counter()
        dout = [dser(r, dctx) for r in recs]
        domain_rps = records / (time.perf_counter() - t0)
        dde = AvroDeserializer(registry, keyring=reader)
        t0 = time.perf_counter()
        for b in dout:
            dde(b, dctx)
        domain_de = records / (time.perf_counter() - t0)
        cached = len(keyring._active) + len(keyring._by_id) + len(reader._by_id)
        keyring.close()
        reader.close()
    row = {
        "bench": "per-person",
        "store": kind,
        "people_in_store": people,
        "records": records,
        "cold_records": cold_n,
        "cache_size": cache,
        "hit_rate": round(hit_rate, 3),
        "de_hit_rate": round(de_hit_rate, 3),
        "per_person_ser_rps": round(person_rps),
        "per_domain_ser_rps": round(domain_rps),
        "ratio_ser": round(person_rps / domain_rps, 2),
        "per_person_de_rps": round(person_de),
        "per_domain_de_rps": round(domain_de),
        "ratio_de": round(person_de / domain_de, 2),
        "cached_entries": cached,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "setup_real_keys_s": round(real_s, 1),
        "setup_fill_s": round(fill_s, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--hot", type=int, default=20_000)
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--shred-all", action="store_true", help="also shred every person of a store of --people at once")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fieldcrypt-bench-"))
    print(f"# python {sys.version.split()[0]}; {args.people} people", flush=True)
    for kind in args.stores.split(","):
        if kind == "postgresql":
            try:
                import psycopg

                psycopg.connect(PG, connect_timeout=3).close()
            except Exception as exc:
                print(f"# postgresql skipped: {type(exc).__name__}", flush=True)
                continue
        bench_shred(kind, tmp, args.people, args.batch)
        if args.shred_all:
            bench_shred_all(kind, tmp, args.people)
    if not args.skip_throughput:
        bench_per_person("sqlite", tmp, args.people, args.records, args.hot)


if __name__ == "__main__":
    main()
