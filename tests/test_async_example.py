"""examples/async_end_to_end.py: confluent's asyncio producer and consumer with fieldcrypt's asyncio twins, on a real
broker and a registry over HTTP. It must run and show what it claims."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLE = ROOT / "examples" / "async_end_to_end.py"


@pytest.mark.broker
def test_the_async_example_produces_reads_shreds_and_never_stalls_the_loop() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--records", "30", "--concurrency", "30"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.rstrip().endswith("OK")
    encrypted = int(re.search(r"(\d+) values encrypted", out).group(1))  # type: ignore[union-attr]
    assert encrypted == 30 * 2 + 15  # email and fullName of 30 people, ssn of the 15 who have one
    assert "jane.doe0@example.com" in out.split("== 3.")[0]  # read back with the keyring
    assert "jane.doe0@example.com" not in out.split("== 3.")[1]  # erased after the shred
    assert "longest stall while producing and reading" in out  # (measured, not judged: tests/test_async_serde.py)


def test_the_async_example_refuses_too_few_records() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--records", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--records must be at least 2" in done.stderr
