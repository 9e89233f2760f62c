"""A fake AWS KMS service for the read/write outcome tests: a real HTTP server speaking KMS's JSON protocol.

Only the service is fake; callers reach it through boto3 and Tink's own ``awskms`` integration, so what fieldcrypt
sees is exactly what Tink raises (``tink.TinkError`` around a botocore ``ClientError``, or a botocore exception
escaping raw). ``Encrypt`` and ``Decrypt`` work for real (AES-GCM under a server-side key, bound to the key id and
the encryption context, so another key id cannot decrypt it) until an error code is set for the operation; then
every call answers that AWS error.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore.config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tink.integration import awskms

from fieldcrypt.keys.kek import Kek

ARN = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
#: another key of the same account: its Decrypt of ARN's ciphertexts fails (bound to the key id)
OTHER_ARN = "arn:aws:kms:eu-west-1:123456789012:key/99999999-8888-7777-6666-555555555555"
URI = f"aws-kms://{ARN}"

#: what every ciphertext blob of this fake starts with (not a Tink output prefix: its first byte is neither 0 nor 1)
MAGIC = b"fake-kms"

#: the HTTP status AWS KMS answers each error code with
STATUS = {
    "ThrottlingException": 400,
    "AccessDeniedException": 400,
    "KMSInternalException": 500,
    "InvalidCiphertextException": 400,
}


class FakeKms:
    """State shared by the handler threads: the server key, per-operation failure codes and call counts."""

    def __init__(self) -> None:
        self._key = AESGCM(os.urandom(32))
        self._lock = threading.Lock()
        self.errors: dict[str, str | None] = {}
        self.calls: Counter[str] = Counter()
        self.endpoint = ""

    def reset(self) -> None:
        with self._lock:
            self.errors.clear()
            self.calls.clear()

    def fail(self, operation: str, code: str | None) -> None:
        """From now on, answer ``operation`` ("Encrypt" or "Decrypt") with AWS error ``code`` (None: work again)."""
        with self._lock:
            self.errors[operation] = code

    def handle(self, operation: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls[operation] += 1
            code = self.errors.get(operation)
        if code is not None:
            return STATUS.get(code, 400), {"__type": code, "message": f"fake KMS says {code}"}
        context = json.dumps([request.get("KeyId", ARN), request.get("EncryptionContext", {})], sort_keys=True)
        if operation == "Encrypt":
            nonce = os.urandom(12)
            sealed = self._key.encrypt(nonce, base64.b64decode(request["Plaintext"]), context.encode())
            blob = MAGIC + nonce + sealed
            return 200, {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": request["KeyId"]}
        if operation == "Decrypt":
            blob = base64.b64decode(request["CiphertextBlob"])
            nonce, sealed = blob[len(MAGIC) : len(MAGIC) + 12], blob[len(MAGIC) + 12 :]
            try:
                if not blob.startswith(MAGIC):
                    raise ValueError("not a ciphertext of this KMS")
                plain = self._key.decrypt(nonce, sealed, context.encode())
            except Exception:
                return 400, {"__type": "InvalidCiphertextException", "message": "fake KMS: invalid ciphertext"}
            return 200, {"Plaintext": base64.b64encode(plain).decode(), "KeyId": request.get("KeyId", ARN)}
        return 400, {"__type": "UnsupportedOperationException", "message": operation}


def _handler(kms: FakeKms) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
            status, answer = kms.handle(operation, json.loads(body or b"{}"))
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            if status != 200:
                self.send_header("x-amzn-ErrorType", answer["__type"])
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def fake_kms() -> Iterator[FakeKms]:
    kms = FakeKms()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kms))
    kms.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield kms
    finally:
        server.shutdown()
        server.server_close()


def kek_at(endpoint: str, arn: str = ARN) -> Kek:
    """An ``aws-kms://`` KEK whose boto3 client talks to ``endpoint``, making exactly one HTTP call per operation
    (botocore's own retries off, so every retry counted is fieldcrypt's)."""
    config = botocore.config.Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
    client = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        config=config,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    uri = f"aws-kms://{arn}"
    return Kek(uri, awskms.new_client(boto3_client=client, key_uri=uri).get_aead(uri))


def closed_port() -> str:
    """An endpoint on a loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def moto_kms_server() -> Iterator[Any]:
    """moto's KMS over HTTP on a loopback port (a real HTTP API), yielding a boto3 client of it. boto3 (inside Tink's
    AwsKmsClient too, and in a child process) reaches it through AWS_ENDPOINT_URL_KMS, with dummy credentials and no
    shared AWS config. Reset when it ends: moto's backends are global to the process, so no test finds another's
    keys."""
    import urllib.request

    import pytest
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "1",
        }.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        mp.setenv("AWS_ENDPOINT_URL_KMS", f"http://{host}:{port}")
        try:
            yield boto3.client("kms", region_name="eu-west-1")
        finally:
            reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST", data=b"")
            urllib.request.urlopen(reset, timeout=30).close()
            server.stop()
