"""Memory stays flat: the resident set size (RSS) of a producer serializing --records records with per-person keys
over a store of --people persons, sampled as it goes (the curve, not only the end), next to the key cache's size.

    python bench/bench_memory.py [--records 10000000] [--people 1000000] [--hot 20000] [--samples 20]

The records are drawn as bench_lifecycle.py draws them: 95% uniformly from a hot set of --hot people that fits the
cache, 5% uniformly from the rest of the store. Keys are real (Tink keys wrapped by a local KEK) for every person the
run touches, made before the run; the other persons' rows are bulk-inserted. Records are made one at a time and
dropped once serialized, so what grows, if anything, is fieldcrypt's. The cache holds --hot * 1.3 keys (room for
the hot set and the cold churn). Prints one JSON line per sample, then the growth from the first sample after
warm-up to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_lifecycle import DOMAIN, SCHEMA, fill, person, store_url

import fieldcrypt

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """The resident set size now (not the peak): /proc/self/statm's second field."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def picks(seed: int, records: int, people: int, hot: int) -> Iterator[int]:
    rng = random.Random(seed)
    for _ in range(records):
        yield rng.randrange(hot) if rng.random() >= 0.05 else rng.randrange(hot, people)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--people", type=int, default=1_000_000)
    ap.add_argument("--hot", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    from fieldcrypt.avro import AvroSerializer

    tmp = Path(tempfile.mkdtemp(prefix="fieldcrypt-bench-"))
    cache = max(1, args.hot * 13 // 10)
    touched = set(picks(7, args.records, args.people, args.hot))
    print(
        f"# python {sys.version.split()[0]}; {args.records} records, {args.people} people in the store, "
        f"{len(touched)} touched, hot set {args.hot}, cache {cache} keys",
        flush=True,
    )
    kek = fieldcrypt.create_local_kek(tmp / f"kek-{uuid.uuid4().hex}.json")
    with store_url("sqlite", tmp) as url:
        fieldcrypt.create_key_store(url)
        keyring = fieldcrypt.Keyring(url, kek, cache_size=cache)
        t0 = time.perf_counter()
        for i in touched:  # real keys for everyone the run touches
            keyring.encryption_key(DOMAIN, person(i))
        setup_s = time.perf_counter() - t0
        fill(url, args.people, skip=touched)
        keyring.clear_cache()
        del touched
        registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        ctx = SerializationContext("bench", MessageField.VALUE)
        ser = AvroSerializer(registry, json.dumps(SCHEMA), keyring=keyring)
        every = max(1, args.records // args.samples)
        curve: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for n, i in enumerate(picks(7, args.records, args.people, args.hot), 1):
            ser(
                {
                    "customerId": person(i),
                    "email": f"{person(i)}@example.com",
                    "ssn": f"{i % 1000:03d}-45-6789",
                    "fullName": f"Person {i}",
                    "purchaseAmount": 1.5,
                    "currency": "EUR",
                },
                ctx,
            )
            if n % every == 0 or n == args.records:
                row = {
                    "records": n,
                    "rss_mib": round(rss_mib(), 1),
                    "cached_keys": len(keyring._active) + len(keyring._by_id),
                    "elapsed_s": round(time.perf_counter() - t0, 1),
                }
                curve.append(row)
                print(json.dumps(row), flush=True)
        elapsed = time.perf_counter() - t0
        keyring.close()
    warm = curve[min(1, len(curve) - 1)]
    last = curve[-1]
    print(
        json.dumps(
            {
                "bench": "memory",
                "records": args.records,
                "people": args.people,
                "cache_size": cache,
                "setup_real_keys_s": round(setup_s, 1),
                "rss_after_warmup_mib": warm["rss_mib"],
                "rss_end_mib": last["rss_mib"],
                "rss_growth_mib": round(last["rss_mib"] - warm["rss_mib"], 1),
                "max_cached_keys": max(r["cached_keys"] for r in curve),
                "ser_rps": round(args.records / elapsed),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
