"""KMS calls for N cold people, before and after branch keys, counted by the KMS itself: moto's KMS in server mode
(a real HTTP KMS API in its own process), whose request recorder logs every request it receives.

    python bench/bench_kms_calls.py [--people 10000]

Two cases, side by side in one run, each with its own AWS KMS key (aws-kms:// through Tink's AwsKmsClient and boto3,
as in production) and its own SQLite key store, one key domain:
  before  the key store says it keeps no branch keys (``supports_branches = False``): every data key is wrapped by
          the KMS key directly, as fieldcrypt did before branch keys
  after   the built-in store: one branch key per domain, wrapped by the KMS key; the data keys under it locally
Phases, each counted apart (the recorder is reset before each):
  producer  a keyring makes a key for each of N new people (Tink checks each wrap by unwrapping it: Encrypt + Decrypt)
  consumer  a new keyring (a cold cache, as a new consumer process) unwraps each of those N keys once
Prints one JSON line per case and phase (KMS Encrypt and Decrypt requests moto received, other KMS requests, seconds),
then the ratios before / after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fieldcrypt
from fieldcrypt.keys.sqlite import SqliteKeyStore

DOMAIN = "people"
#: dummy credentials and no shared AWS configuration: only moto is ever reached
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_DEFAULT_REGION": "eu-west-1",
}


class Direct(SqliteKeyStore):
    """The "before" store: no branch keys, so the keyring wraps every data key with the KEK itself."""

    supports_branches = False


class Moto:
    """moto's server in a child process, recording the requests it receives (its /moto-api/recorder/ endpoints)."""

    def __init__(self, state: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **AWS_ENV, "MOTO_RECORDER_FILEPATH": str(state / "moto-recording.jsonl")}
        self.log = (state / "moto.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self._call("reset-recording")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: see {state / 'moto.log'}") from None
                time.sleep(0.2)

    def _call(self, action: str) -> bytes:
        request = urllib.request.Request(f"{self.url}/moto-api/recorder/{action}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=60) as reply:
            body: bytes = reply.read()
            return body

    @contextmanager
    def recording(self, into: Counter[str]) -> Iterator[None]:
        """Count the KMS requests moto receives inside the block, by action (X-Amz-Target: TrentService.Encrypt)."""
        self._call("reset-recording")
        self._call("start-recording")
        try:
            yield
        finally:
            self._call("stop-recording")
            for line in self._call("download-recording").decode().splitlines():
                if line.strip():
                    headers = {k.lower(): v for k, v in json.loads(line)["headers"].items()}
                    into[headers.get("x-amz-target", "other").removeprefix("TrentService.")] += 1

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def measure(
    case: str, store: Callable[[], fieldcrypt.KeyStore], kek: str, people: int, moto: Moto
) -> dict[str, dict[str, Any]]:
    """The producer's and the consumer's KMS calls; each keyring opens the store anew (closing a keyring closes it)."""
    rows: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    t0 = time.perf_counter()
    with moto.recording(counts), fieldcrypt.Keyring(store(), {DOMAIN: kek}) as producer:
        ids = [producer.encryption_key(DOMAIN, f"person-{i:07d}").key_id for i in range(people)]
    rows["producer"] = _row(case, "producer", people, counts, time.perf_counter() - t0)
    counts = Counter()
    t0 = time.perf_counter()
    with moto.recording(counts), fieldcrypt.Keyring(store(), {DOMAIN: kek}, cache_size=people + 10) as consumer:
        for key_id in ids:
            consumer.decryption_key(key_id)
    rows["consumer"] = _row(case, "consumer", people, counts, time.perf_counter() - t0)
    return rows


def _row(case: str, phase: str, people: int, counts: Counter[str], seconds: float) -> dict[str, Any]:
    other = sum(n for action, n in counts.items() if action not in ("Encrypt", "Decrypt"))
    row = {
        "case": case,
        "phase": phase,
        "people": people,
        "kms_encrypt": counts["Encrypt"],
        "kms_decrypt": counts["Decrypt"],
        "kms_other": other,
        "kms_calls": counts["Encrypt"] + counts["Decrypt"] + other,
        "seconds": round(seconds, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=10_000, help="cold people: one new data key each (default 10000)")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="fieldcrypt-bench-kms-"))
    moto = Moto(state)
    os.environ.update(AWS_ENV)
    os.environ["AWS_ENDPOINT_URL_KMS"] = moto.url  # boto3, inside Tink's AwsKmsClient too, calls moto
    import boto3

    print(
        f"# {args.people} people, one key domain; KMS requests counted by moto {moto.url}; python "
        f"{sys.version.split()[0]}",
        flush=True,
    )
    try:
        kms = boto3.client("kms", region_name="eu-west-1")
        rows = {}
        for case, make in (("before", Direct), ("after", SqliteKeyStore)):
            arn = kms.create_key(Description=f"fieldcrypt bench {case}")["KeyMetadata"]["Arn"]
            url = fieldcrypt.create_key_store(f"sqlite:///{state / f'{case}.db'}")
            rows[case] = measure(case, functools.partial(make, url), f"aws-kms://{arn}", args.people, moto)
    finally:
        moto.stop()
        shutil.rmtree(state, ignore_errors=True)

    print(f"\n# KMS calls for {args.people} cold people, before (a KMS wrap per data key) / after (branch keys)")
    for phase in ("producer", "consumer"):
        b, a = rows["before"][phase], rows["after"][phase]
        ratio = b["kms_calls"] / max(a["kms_calls"], 1)
        print(
            f"{phase:<9} before {b['kms_calls']:>6} calls ({b['kms_encrypt']} Encrypt, {b['kms_decrypt']} Decrypt) "
            f"{b['seconds']:>7.2f} s   after {a['kms_calls']:>3} calls ({a['kms_encrypt']} Encrypt, "
            f"{a['kms_decrypt']} Decrypt) {a['seconds']:>6.2f} s   ratio {ratio:,.0f}x"
        )


if __name__ == "__main__":
    main()
