"""What encrypted record keys cost: fieldcrypt.StringKeySerializer / StringKeyDeserializer against confluent's
StringSerializer / StringDeserializer, keys per second and bytes per key, side by side in one process, one run.

    python bench/bench_record_keys.py [--keys 50000] [--people 5000] [--repeat 3]

The keys are customer ids ``cust-0000042`` (12 characters), ``--keys`` of them drawn round-robin from ``--people``
persons (a stream of updates: each person's key recurs). fieldcrypt's key serde uses one deterministic key per person
(``<topic>-key/det``), made on the first pass (measured apart: ``first_pass_kps``, one key creation per person) and
cached after it; throughput is the best of ``--repeat`` passes over warm keys. Prints one JSON line per case, then the
ratios (fieldcrypt / confluent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from confluent_kafka.serialization import MessageField, SerializationContext, StringDeserializer, StringSerializer

import fieldcrypt


def rate(fn: Any, items: list[Any], ctx: SerializationContext, repeat: int) -> tuple[float, list[Any]]:
    best, out = 0.0, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = [fn(x, ctx) for x in items]
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=50000, help="keys per pass")
    ap.add_argument("--people", type=int, default=5000, help="distinct persons among them (at most 10,000: the cache)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    keys = [f"cust-{i % args.people:07d}" for i in range(args.keys)]
    ctx = SerializationContext("customers", MessageField.KEY)
    tmp = tempfile.mkdtemp(prefix="fieldcrypt-bench-")
    kek = fieldcrypt.create_local_kek(os.path.join(tmp, "kek.json"))
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db")
    print(
        f"# {args.keys} keys of {args.people} persons, best of {args.repeat}; python {sys.version.split()[0]}",
        flush=True,
    )
    rows: dict[str, dict[str, Any]] = {}

    ser_rps, data = rate(StringSerializer("utf_8"), keys, ctx, args.repeat)
    de_rps, back = rate(StringDeserializer("utf_8"), data, ctx, args.repeat)
    assert back == keys
    rows["confluent"] = {"case": "confluent", "ser_kps": round(ser_rps), "de_kps": round(de_rps)}
    rows["confluent"]["bytes"] = round(sum(map(len, data)) / len(data), 1)

    with fieldcrypt.Keyring(store, kek) as keyring:
        ser = fieldcrypt.StringKeySerializer(keyring=keyring)
        de = fieldcrypt.StringKeyDeserializer(keyring=keyring)
        first = list(dict.fromkeys(keys))
        t0 = time.perf_counter()
        for k in first:  # one key creation per person (AES-SIV keygen, branch-key wrap, SQLite insert)
            ser(k, ctx)
        first_kps = len(first) / (time.perf_counter() - t0)
        ser_rps, data = rate(ser, keys, ctx, args.repeat)
        keyring.clear_cache()  # the reader starts cold, as a new consumer process does: a store read per person
        t0 = time.perf_counter()
        for d in data[: len(first)]:
            de(d, ctx)
        cold_de = len(first) / (time.perf_counter() - t0)
        de_rps, back = rate(de, data, ctx, args.repeat)
        assert back == keys
        rows["fieldcrypt"] = {
            "case": "fieldcrypt",
            "ser_kps": round(ser_rps),
            "de_kps": round(de_rps),
            "bytes": round(sum(map(len, data)) / len(data), 1),
            "first_pass_kps": round(first_kps),
            "cold_de_kps": round(cold_de),
            "key_cache_misses": ser.stats.key_cache_misses,
        }
    for row in rows.values():
        print(json.dumps(row), flush=True)

    f, c = rows["fieldcrypt"], rows["confluent"]
    print("\n# ratios, fieldcrypt vs confluent (throughput: higher is better; bytes: lower is better)")
    print(
        f"record keys  ser {f['ser_kps'] / c['ser_kps']:.3f}x  de {f['de_kps'] / c['de_kps']:.3f}x  "
        f"bytes {f['bytes']} vs {c['bytes']} (+{f['bytes'] - c['bytes']:.1f} per key)"
    )


if __name__ == "__main__":
    main()
