"""Every benchmark script runs here in a tiny smoke mode, so it cannot rot. The figures it prints are not
asserted (they are measured in full runs, docs/benchmarks.md); that it runs, and prints its ratios, is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCH.parent, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_serde_smoke() -> None:
    out = _run("bench/bench_serde.py", "--records", "40", "--people", "20", "--repeat", "1")
    assert "# ratios" in out
    for pair in ("fieldcrypt vs plain", "fieldcrypt vs csfle", "fieldcrypt vs fieldcrypt-v1", "per-person vs"):
        assert pair in out, pair


@pytest.mark.slow
def test_bench_lifecycle_smoke() -> None:
    out = _run(
        "bench/bench_lifecycle.py",
        "--people",
        "40",
        "--batch",
        "10",
        "--records",
        "40",
        "--hot",
        "10",
        "--stores",
        "sqlite",
        "--shred-all",
    )
    assert "40 people" in out
    assert '"bench": "shred-all", "store": "sqlite", "people": 40' in out and '"keys_left": 0' in out
    assert '"bench": "audit-chain"' in out


@pytest.mark.slow
def test_bench_masks_smoke() -> None:
    out = _run("bench/bench_masks.py", "--records", "40", "--repeat", "1")
    assert "# ratios" in out
    for line in ("avro masks vs plain", "json masks vs plain", "masks-view-read"):
        assert line in out, line


@pytest.mark.slow
def test_bench_kms_calls_smoke() -> None:
    """Counted by moto's server: before branch keys a KMS wrap (Encrypt + Tink's Decrypt check) per person and an
    unwrap per person; after, one of each per domain whatever the number of people."""
    out = _run("bench/bench_kms_calls.py", "--people", "30")
    rows = {(r["case"], r["phase"]): r for r in map(json.loads, (x for x in out.splitlines() if x.startswith("{")))}
    # each producer's first store also wraps the store's pseudonym key once (one Encrypt: docs/key-model.md)
    assert (rows["before", "producer"]["kms_encrypt"], rows["before", "producer"]["kms_decrypt"]) == (31, 30)
    assert (rows["before", "consumer"]["kms_encrypt"], rows["before", "consumer"]["kms_decrypt"]) == (0, 30)
    assert (rows["after", "producer"]["kms_encrypt"], rows["after", "producer"]["kms_decrypt"]) == (2, 1)
    assert (rows["after", "consumer"]["kms_encrypt"], rows["after", "consumer"]["kms_decrypt"]) == (0, 1)
    assert all(r["kms_other"] == 0 for r in rows.values())
    assert "ratio 30x" in out


@pytest.mark.slow
def test_bench_lifecycle_smoke_postgresql_shreds_as_an_admin_role() -> None:
    from pg import require_pg

    require_pg()
    out = _run(
        "bench/bench_lifecycle.py", "--people", "40", "--batch", "10", "--stores", "postgresql", "--skip-throughput"
    )
    assert '"store": "postgresql", "shred_as": "admin role"' in out


@pytest.mark.slow
def test_bench_deterministic_smoke() -> None:
    out = _run("bench/bench_deterministic.py", "--records", "40", "--repeat", "1")
    assert "# ratios" in out
    for line in ("avro deterministic vs randomized", "json deterministic vs randomized"):
        assert line in out, line
    out = _run("bench/bench_deterministic.py", "--records", "40", "--repeat", "1", "--people", "10")
    assert "per-person keys, 10 people" in out and "# ratios" in out


@pytest.mark.slow
def test_bench_record_keys_smoke() -> None:
    out = _run("bench/bench_record_keys.py", "--keys", "40", "--people", "10", "--repeat", "1")
    rows = {r["case"]: r for r in map(json.loads, (x for x in out.splitlines() if x.startswith("{")))}
    assert rows["fieldcrypt"]["bytes"] == 46.0 and rows["confluent"]["bytes"] == 12.0  # 12 characters + 22, base64
    assert rows["fieldcrypt"]["key_cache_misses"] == 10  # one key per person, cached after
    assert "record keys  ser" in out


@pytest.mark.slow
def test_bench_async_smoke() -> None:
    out = _run(
        "bench/bench_async.py", "--records", "40", "--people", "20", "--concurrency", "10", "--repeat", "1",
        "--store-latency-ms", "1",
    )  # fmt: skip
    assert "# ratios" in out
    for line in (
        "avro fieldcrypt-async vs plain-async",
        "json fieldcrypt-async vs fieldcrypt-sync",
        "longest loop stall",
    ):
        assert line in out, line


@pytest.mark.slow
def test_bench_protobuf_smoke() -> None:
    out = _run(
        "bench/bench_protobuf.py", "--records", "40", "--people", "20", "--concurrency", "10", "--repeat", "1",
        "--store-latency-ms", "1",
    )  # fmt: skip
    assert "# ratios" in out
    for line in (
        "protobuf fieldcrypt vs plain",
        "protobuf fieldcrypt-async vs plain-async",
        "protobuf fieldcrypt-async vs fieldcrypt (sync)",
        "longest loop stall",
    ):
        assert line in out, line


@pytest.mark.slow
def test_bench_memory_smoke() -> None:
    out = _run("bench/bench_memory.py", "--records", "300", "--people", "300", "--hot", "20", "--samples", "3")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["records"] for r in rows[:-1]] == [100, 200, 300]
    assert rows[-1]["bench"] == "memory" and rows[-1]["max_cached_keys"] > 0


@pytest.mark.slow
def test_bench_run_all_smoke() -> None:
    """The one command that runs every bench and prints the ratios side by side."""
    out = _run("bench/run.py", "--smoke")
    for line in (
        "| fieldcrypt vs limit |",
        "| fieldcrypt-default vs limit |",
        "| json-fieldcrypt vs json-limit |",
        "| fieldcrypt vs csfle |",
        "| fieldcrypt-default vs limit (interleaved) |",
        "| json-fieldcrypt-default vs json-limit (interleaved) |",
        "| per-person vs per-domain (interleaved) |",
    ):
        assert line in out
    assert "| sqlite (file owner) |" in out and "memory:" in out


@pytest.mark.slow
def test_bench_detectors_smoke() -> None:
    out = _run("bench/bench_detectors.py", "--n", "20")
    assert "|" in out  # its Markdown tables


def test_the_hand_written_limit_does_the_security_work_it_is_credited_with() -> None:
    """bench/limit.py is what the hot path is judged against: it must refuse what fieldcrypt refuses on read."""
    sys.path.insert(0, str(BENCH))
    try:
        from limit import avro_limit  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    schema = {"type": "record", "name": "R", "namespace": "n", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": "string"}]}  # fmt: skip
    ser, de = avro_limit(schema, ["a", "b"])
    data = ser({"a": "x", "b": "y"})
    assert de(data) == {"a": "x", "b": "y"}
    import io

    import fastavro
    from cryptography.exceptions import InvalidTag

    record = fastavro.schemaless_reader(io.BytesIO(data[5:]), fastavro.parse_schema(schema), None)
    swapped = {"a": record["b"], "b": record["a"]}  # values moved between fields: the associated data says no
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), swapped)
    with pytest.raises((ValueError, InvalidTag)):
        de(data[:5] + out.getvalue())
    flipped = {**record, "a": record["a"] + "A"}  # not canonical base64
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), flipped)
    with pytest.raises((ValueError, InvalidTag)):  # an extra character: not the writer's bytes
        de(data[:5] + out.getvalue())
