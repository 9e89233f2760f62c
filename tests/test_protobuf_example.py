"""examples/protobuf_end_to_end.py: confluent's producer and consumer with fieldcrypt's Protobuf twins, on a real
broker and a registry over HTTP. It must run and show what it claims."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLE = ROOT / "examples" / "protobuf_end_to_end.py"


@pytest.mark.broker
def test_the_protobuf_example_produces_reads_and_shreds() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--records", "6"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.rstrip().endswith("OK")
    encrypted = int(re.search(r"(\d+) values encrypted", out).group(1))  # type: ignore[union-attr]
    # per customer: email name aliases(2) contacts street photo pager, and phone for the 3 even ones
    assert encrypted == 6 * 8 + 3
    assert "jane.doe0@example.com" in out.split("== 4.")[0]
    assert "jane.doe0@example.com" not in out.split("== 4.")[1]
    assert "without keys: Ag" in out  # ciphertext where keys are missing: format 2's version byte, as base64 text


def test_the_protobuf_example_refuses_too_few_records() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--records", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--records must be at least 2" in done.stderr
