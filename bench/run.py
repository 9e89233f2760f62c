"""Every headline figure of docs/benchmarks.md in one command, measured in one run on this machine:

    python bench/run.py            # the full sizes (tens of minutes; PostgreSQL at 127.0.0.1:5432 if it answers)
    python bench/run.py --quick    # the same cases at small sizes (a few minutes)
    python bench/run.py --smoke    # tiny sizes: that everything runs (the test suite runs this), no figure to quote

Runs, each in its own process, and prints their lines as they come:
  bench_serde.py      fieldcrypt beside the hand-written limit, confluent's plain serdes and Confluent CSFLE
                      (Avro and JSON Schema), and per-person keys beside per-domain ones
  bench_lifecycle.py  shreds in a store of --people persons (SQLite, PostgreSQL as the admin role), and per-person
                      throughput at ~95% cache hits
  bench_memory.py     RSS over many records with per-person keys (the curve)
then one table of the ratios and rates, with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

SIZES = {
    "full": {
        "serde": ["--records", "20000", "--people", "100000", "--repeat", "3"],
        "lifecycle": ["--people", "1000000", "--batch", "100000", "--records", "200000", "--hot", "20000"],
        "memory": ["--records", "10000000", "--people", "1000000", "--hot", "20000", "--samples", "20"],
    },
    "quick": {
        "serde": ["--records", "20000", "--people", "5000", "--repeat", "3"],
        "lifecycle": ["--people", "200000", "--batch", "20000", "--records", "50000", "--hot", "5000"],
        "memory": ["--records", "500000", "--people", "200000", "--hot", "5000", "--samples", "10"],
    },
    "smoke": {
        "serde": ["--records", "40", "--people", "20", "--repeat", "1"],
        "lifecycle": ["--people", "300", "--batch", "20", "--records", "200", "--hot", "20", "--stores", "sqlite"],
        "memory": ["--records", "300", "--people", "300", "--hot", "20", "--samples", "3"],
    },
}


def run(script: str, argv: list[str]) -> list[dict[str, Any]]:
    """Run one bench script; echo its output; return its JSON lines."""
    print(f"\n$ python bench/{script} {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), *argv],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )
    rows = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("{"):
            rows.append(json.loads(line))
    if proc.wait() != 0:
        raise SystemExit(f"bench/{script} failed (exit {proc.returncode})")
    return rows


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    sizes = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    serde = {r["case"]: r for r in run("bench_serde.py", sizes["serde"]) if "case" in r}
    life = run("bench_lifecycle.py", sizes["lifecycle"])
    memory = [r for r in run("bench_memory.py", sizes["memory"]) if r.get("bench") == "memory"]

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"\n# summary: {datetime.date.today().isoformat()}, {platform.node() or 'this machine'}, {os.cpu_count()} "
        f"cores ({cpu}), python {platform.python_version()}; throughput ratios are per run, rates in records/s"
    )
    print(
        "# fieldcrypt, plain, csfle (and json-*): conf use.latest.version=true (no lanes); *-default: default conf; "
        "limit: bench/limit.py, by hand"
    )
    lines = ["| what | serialize | deserialize |", "|---|---|---|"]
    for r in serde.values():
        if r.get("interleaved"):  # the headline pairs, their passes alternating
            a, b = r["case"].split("~")
            lines.append(f"| {a} vs {b} (interleaved) | {r['ser_ratio']:.2f}x | {r['de_ratio']:.2f}x |")
    for a, b in [
        ("fieldcrypt-default", "limit"),
        ("fieldcrypt", "limit"),
        ("json-fieldcrypt", "json-limit"),
        ("fieldcrypt", "plain"),
        ("json-fieldcrypt", "json-plain"),
        ("fieldcrypt", "csfle"),
        ("json-fieldcrypt", "json-csfle"),
        ("per-person", "per-domain"),
    ]:
        if a in serde and b in serde:
            lines.append(
                f"| {a} vs {b} | {_x(serde[a]['ser_rps'], serde[b]['ser_rps'])} "
                f"| {_x(serde[a]['de_rps'], serde[b]['de_rps'])} |"
            )
    for r in life:
        if r.get("bench") == "per-person":
            lines.append(
                f"| per-person ({r['people_in_store']} people, {r['hit_rate']:.0%} cache hits) vs per-domain "
                f"| {r['ratio_ser']:.2f}x | {r['ratio_de']:.2f}x |"
            )
    print("\n".join(lines))
    shreds = [
        "| shred (store, as) | people in store | one | batch from a file | batch again (no-op) | audit chain's cost |",
        "|---|---|---|---|---|---|",
    ]
    for r in life:
        if r.get("bench") == "shred":
            batch = next(k for k in r if k.endswith("_from_file_s"))
            again = next(
                k for k in r if k.startswith("shred_") and k.endswith("_again_noop_s") and k != "shred_again_noop_s"
            )
            n = batch[len("shred_") : -len("_from_file_s")]
            shreds.append(
                f"| {r['store']} ({r['shred_as']}) | {r['people']} | {r['shred_one_s']} s | {n} people: "
                f"{r[batch]} s ({round(int(n) / r[batch]) if r[batch] else '-'} people/s) | {r[again]} s "
                f"| {r.get('audit_chain_cost', '-')} |"
            )
    print("\n" + "\n".join(shreds))
    for m in memory:
        print(
            f"\nmemory: {m['records']} records, per-person keys over {m['people']} people, cache {m['cache_size']} "
            f"keys: RSS {m['rss_after_warmup_mib']} MiB after warm-up, {m['rss_end_mib']} MiB at the end "
            f"(growth {m['rss_growth_mib']} MiB), at most {m['max_cached_keys']} keys cached"
        )


if __name__ == "__main__":
    main()
