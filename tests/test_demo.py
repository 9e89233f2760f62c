"""The README's first Quick start command runs this demo: it must work and show what it claims. (Its --keep and
--from-env, with `fieldcrypt dev up`, are tested in tests/test_dev.py.)"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.broker
def test_end_to_end_demo(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "end_to_end.py"), "--records", "4", "--state", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Avro: 4 produced, 4 decrypted, 4 read without keys" in out
    assert "JSON Schema: 4 produced, 4 decrypted, 4 read without keys" in out and out.rstrip().endswith("OK")
    for section in out.split("consumer without keys read")[1:]:
        blind = section.split("==")[0]
        assert "jane.doe0@example.com" not in blind and "Jane Doe" not in blind
        assert "cust-000" in blind  # untagged fields stay readable
    assert "Try the fieldcrypt command" not in out  # its own broker is gone when it exits: nothing to try


def test_the_demo_uses_only_public_api() -> None:
    source = (ROOT / "examples" / "end_to_end.py").read_text()
    assert "fieldcrypt._" not in source and "from fieldcrypt.dev import" in source


def test_key_lifecycle_example() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "key_lifecycle.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bob    email=<erased>" in out and "alice  email=alice@example.com" in out
    assert "nothing to do, already shredded" in out
    # the reader's counters (ReadStats, or SerdeStats with more of them): 7 records, 14 values, bob's 4 erased
    assert re.search(r"\brecords=7, .*\bvalues=14, erased=4, denied=0, plaintext=0, plaintext_by_field=\{\}", out)
