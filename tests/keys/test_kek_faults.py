"""Why a KEK could not unwrap a data key: real exceptions, raised through Tink's own integration code.

Each third-party exception is raised by a stub client *inside* Tink 1.16's ``_AwsKmsAead``, ``_GcpKmsAead`` or
``_HcVaultKmsAead``, so it reaches :func:`classify_failure` wrapped exactly as Tink wraps it (or escaping raw, where
Tink lets it). The end-to-end half talks HTTP to a real KMS API (moto's server) and to a tiny server that answers
every call with one AWS error.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import botocore.config
import botocore.exceptions as boto_exc
import google.api_core.exceptions as gexc
import google.auth.exceptions as gauth
import hvac.exceptions as vexc
import pytest
import requests.exceptions
import tink
import urllib3.exceptions
from kms_fakes import moto_kms_server
from tink import aead
from tink.integration import awskms, gcpkms, hcvault

from fieldcrypt import create_local_kek, open_kek
from fieldcrypt.crypto.cipher import ensure_tink
from fieldcrypt.keys.kek import Kek, classify_failure, is_transient

ARN = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
GCP = "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k"


class Raising:
    """A KMS client stub whose decrypt raises ``exc`` (boto3's, Cloud KMS's and hvac's call shapes)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.secrets = self
        self.transit = self

    def decrypt(self, **_: Any) -> Any:
        raise self.exc

    def decrypt_data(self, **_: Any) -> Any:
        raise self.exc


def failure(kek_aead: aead.Aead, ct: bytes = b"vault:v1:AAAA", ad: bytes = b"") -> BaseException:
    with pytest.raises(BaseException) as err:
        kek_aead.decrypt(ct, ad)
    return err.value


def aws(exc: BaseException) -> tuple[Kek, BaseException]:
    kek_aead = awskms.new_client(boto3_client=Raising(exc)).get_aead(f"aws-kms://{ARN}")
    return Kek(f"aws-kms://{ARN}", kek_aead), failure(kek_aead, b"wrapped", b"ad")


def gcp(exc: BaseException) -> tuple[Kek, BaseException]:
    kek_aead = gcpkms.new_client(kms_v1_client=Raising(exc)).get_aead(GCP)
    return Kek(GCP, kek_aead), failure(kek_aead, b"wrapped", b"ad")


def vault(exc: BaseException) -> tuple[Kek, BaseException]:
    kek_aead = hcvault.new_aead("transit/keys/k", Raising(exc))
    return Kek("hcvault://transit/keys/k", kek_aead), failure(kek_aead)


def client_error(code: str, status: int = 400) -> boto_exc.ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return boto_exc.ClientError(response, "Decrypt")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, "unavailable"),
        ("KMSInternalException", 500, "unavailable"),
        ("DependencyTimeoutException", 503, "unavailable"),
        ("KeyUnavailableException", 500, "unavailable"),
        ("ServiceUnavailableException", 503, "unavailable"),
        ("RequestLimitExceeded", 400, "unavailable"),
        ("SomeNewServerFault", 502, "unavailable"),
        ("SomeNewRateLimit", 429, "unavailable"),
        ("AccessDeniedException", 400, "denied"),
        ("DisabledException", 400, "denied"),
        ("KMSInvalidStateException", 400, "denied"),
        ("NotFoundException", 400, "denied"),
        ("IncorrectKeyException", 400, "denied"),
        ("UnrecognizedClientException", 400, "denied"),
        ("InvalidCiphertextException", 400, "corrupt"),
        ("ValidationException", 400, "unknown"),
        ("NotImplemented", 501, "unknown"),
    ],
)
def test_aws_client_errors(code: str, status: int, expected: str) -> None:
    kek, exc = aws(client_error(code, status))
    assert isinstance(exc, tink.TinkError)  # tink wraps ClientError (as __context__, not __cause__)
    assert exc.__cause__ is None and isinstance(exc.__context__, boto_exc.ClientError)
    assert classify_failure(kek, exc, b"wrapped") == expected
    assert is_transient(exc) is (expected == "unavailable")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (boto_exc.EndpointConnectionError(endpoint_url="https://kms.eu-west-1.amazonaws.com"), "unavailable"),
        (boto_exc.ConnectTimeoutError(endpoint_url="https://kms"), "unavailable"),
        (boto_exc.ReadTimeoutError(endpoint_url="https://kms"), "unavailable"),
        (boto_exc.ConnectionClosedError(endpoint_url="https://kms"), "unavailable"),
        (boto_exc.ProxyConnectionError(proxy_url="http://proxy"), "unavailable"),
        (boto_exc.SSLError(endpoint_url="https://kms", error=ssl.SSLCertVerificationError(1, "bad cert")), "unknown"),
        (boto_exc.NoCredentialsError(), "unknown"),
    ],
)
def test_botocore_errors_escape_tink_raw(exc: BaseException, expected: str) -> None:
    kek, raised = aws(exc)
    assert raised is exc  # tink 1.16 catches only ClientError
    assert classify_failure(kek, raised, b"wrapped") == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gexc.ServiceUnavailable("m"), "unavailable"),
        (gexc.TooManyRequests("m"), "unavailable"),
        (gexc.ResourceExhausted("m"), "unavailable"),
        (gexc.DeadlineExceeded("m"), "unavailable"),
        (gexc.InternalServerError("m"), "unavailable"),
        (gexc.RetryError("Timeout of 60.0s exceeded", gexc.ServiceUnavailable("m")), "unavailable"),
        (gexc.PermissionDenied("m"), "denied"),
        (gexc.Unauthenticated("m"), "denied"),
        (gexc.NotFound("m"), "denied"),
        (gexc.FailedPrecondition("The request must be made against a CryptoKeyVersion that is ENABLED"), "denied"),
        (gexc.InvalidArgument("Decryption failed: the ciphertext is invalid."), "corrupt"),
        (gexc.MethodNotImplemented("m"), "unknown"),
        (gexc.OutOfRange("m"), "unknown"),
    ],
)
def test_google_api_core_errors(exc: BaseException, expected: str) -> None:
    kek, raised = gcp(exc)
    assert isinstance(raised, tink.TinkError) and raised.__context__ is exc
    assert classify_failure(kek, raised, b"wrapped") == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gauth.TransportError("metadata server unreachable"), "unavailable"),
        (gauth.RefreshError("temporarily", retryable=True), "unavailable"),
        (gauth.RefreshError("invalid_grant"), "unknown"),
        (gauth.DefaultCredentialsError("no credentials"), "unknown"),
    ],
)
def test_google_auth_errors_escape_tink_raw(exc: BaseException, expected: str) -> None:
    kek, raised = gcp(exc)
    assert raised is exc
    assert classify_failure(kek, raised, b"wrapped") == expected


def vault_error(cls: type[vexc.VaultError], *errors: str) -> vexc.VaultError:
    return cls(errors=list(errors) or None, method="post", url="http://vault/v1/transit/decrypt/k")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (vault_error(vexc.VaultDown, "Vault is sealed"), "unavailable"),
        (vault_error(vexc.InternalServerError, "internal error"), "unavailable"),
        (vault_error(vexc.BadGateway), "unavailable"),
        (vault_error(vexc.RateLimitExceeded, "request path: rate limit quota exceeded"), "unavailable"),
        (vault_error(vexc.Forbidden, "permission denied"), "denied"),
        (vault_error(vexc.Unauthorized), "denied"),
        (vault_error(vexc.InvalidPath, "no handler for route"), "denied"),
        (vault_error(vexc.InvalidRequest, "encryption key not found"), "denied"),
        (vault_error(vexc.InvalidRequest, "invalid ciphertext: version is too new"), "denied"),
        (
            vault_error(vexc.InvalidRequest, "ciphertext or signature version is disallowed by policy (too old)"),
            "denied",
        ),
        (vault_error(vexc.InvalidRequest, "cipher: message authentication failed"), "corrupt"),
        (vault_error(vexc.InvalidRequest, "invalid ciphertext: no prefix"), "corrupt"),
        (vault_error(vexc.InvalidRequest, "missing required field"), "unknown"),
        (vault_error(vexc.UnexpectedError, "teapot"), "unknown"),
        (requests.exceptions.ConnectionError("Connection refused"), "unavailable"),
        (requests.exceptions.ReadTimeout("read timed out"), "unavailable"),
        (requests.exceptions.InvalidURL("bad url"), "unknown"),
    ],
)
def test_vault_errors(exc: BaseException, expected: str) -> None:
    kek, raised = vault(exc)
    assert isinstance(raised, tink.TinkError) and raised.__context__ is exc  # hcvault wraps everything
    assert classify_failure(kek, raised, b"vault:v1:AAAA") == expected


def test_vault_refusal_of_associated_data_is_unknown() -> None:
    kek_aead = hcvault.new_aead("transit/keys/k", Raising(AssertionError("not called")))
    raised = failure(kek_aead, b"vault:v1:AAAA", b"ad")
    assert isinstance(raised.__context__, NotImplementedError)
    assert classify_failure(Kek("hcvault://transit/keys/k", kek_aead), raised, b"vault:v1:AAAA") == "unknown"


def test_vault_bytes_that_are_not_a_vault_ciphertext_are_corrupt() -> None:
    kek, _ = vault(AssertionError("not called"))
    raised = failure(kek.aead, b"\xff\xfe")  # tink's hcvault decodes the ciphertext as text first
    assert classify_failure(kek, raised, b"\xff\xfe") == "corrupt"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "unavailable"),
        (TimeoutError("timed out"), "unavailable"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unavailable"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unavailable"),
        (urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection"), "unavailable"),  # type: ignore[arg-type]
        (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError()), "unavailable"),
        (urllib3.exceptions.LocationParseError("::bad"), "unknown"),
        (OSError(errno.ENOENT, "No such file"), "unknown"),
        (ValueError("something else"), "unknown"),
        (tink.TinkError("a KMS said no, without a cause"), "unknown"),
    ],
)
def test_raw_transport_and_other_errors(exc: BaseException, expected: str) -> None:
    kek, raised = aws(exc)
    assert classify_failure(kek, raised, b"wrapped") == expected


def test_the_chain_is_walked_through_unrecognised_wrappers() -> None:
    """A plugin's own exception, raised from a connection failure (MaxRetryError's ``reason`` included)."""
    root = urllib3.exceptions.MaxRetryError(None, "/", reason=ConnectionRefusedError())  # type: ignore[arg-type]
    try:
        try:
            raise root
        except urllib3.exceptions.MaxRetryError as e:
            raise RuntimeError("my KMS plugin failed") from e
    except RuntimeError as e:
        wrapped = e
    kek = Kek("my-kms://k", aead_of_nothing())
    assert classify_failure(kek, wrapped, b"x") == "unavailable"
    assert is_transient(wrapped) and not is_transient(ValueError("x"))
    assert classify_failure(kek, tink.TinkError("Decryption failed."), b"x") == "unknown"  # not a local keyset


def aead_of_nothing() -> aead.Aead:
    class Nothing(aead.Aead):
        def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
            raise AssertionError

        def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
            raise AssertionError

    return Nothing()


# --- local keysets: the Tink prefix names the key ------------------------------------------------------------


def local_failure(kek: Kek, ct: bytes) -> str:
    with pytest.raises(tink.TinkError) as err:
        kek.aead.decrypt(ct, b"ad")
    return classify_failure(kek, err.value, ct)


def test_local_keyset_tampered_is_corrupt_and_another_keyset_is_denied(tmp_path: Path) -> None:
    kek = open_kek(create_local_kek(tmp_path / "kek.json"))
    other = open_kek(create_local_kek(tmp_path / "other.json"))
    assert kek.key_ids is not None and len(kek.key_ids) == 1 and not kek.raw_keys
    assert repr(kek) == f"Kek({kek.uri!r})"
    ct = kek.aead.encrypt(b"data key", b"ad")
    assert local_failure(kek, ct[:-1] + bytes([ct[-1] ^ 1])) == "corrupt"
    assert local_failure(kek, ct[:20]) == "corrupt"
    assert local_failure(kek, ct[:3]) == "corrupt"  # not even a Tink prefix
    assert local_failure(other, ct) == "denied"
    assert local_failure(kek, other.aead.encrypt(b"data key", b"ad")) == "denied"


def write_keyset(path: Path, keys: list[dict[str, Any]], primary: int) -> str:
    path.write_text(json.dumps({"primaryKeyId": primary, "key": keys}))
    path.chmod(0o600)
    return f"local-kek://{path}"


def keyset_keys(template: Any) -> list[dict[str, Any]]:
    ensure_tink()
    handle = tink.new_keyset_handle(template)
    text = tink.json_proto_keyset_format.serialize(handle, tink.secret_key_access.TOKEN)
    keys: list[dict[str, Any]] = json.loads(text)["key"]
    return keys


def test_local_keyset_disabled_key_is_denied(tmp_path: Path) -> None:
    old, new = keyset_keys(aead.aead_key_templates.AES256_GCM)[0], keyset_keys(aead.aead_key_templates.AES256_GCM)[0]
    both = open_kek(write_keyset(tmp_path / "both.json", [old, new], old["keyId"]))
    ct_old = both.aead.encrypt(b"data key", b"ad")
    disabled = open_kek(write_keyset(tmp_path / "rotated.json", [{**old, "status": "DISABLED"}, new], new["keyId"]))
    assert disabled.key_ids == {new["keyId"]}
    assert local_failure(disabled, ct_old) == "denied"
    assert local_failure(both, ct_old[:-1] + bytes([ct_old[-1] ^ 1])) == "corrupt"


def test_local_keyset_with_raw_keys_cannot_tell_and_says_unknown(tmp_path: Path) -> None:
    raw = keyset_keys(aead.aead_key_templates.AES256_GCM_RAW)[0]
    tinky = keyset_keys(aead.aead_key_templates.AES256_GCM)[0]
    kek = open_kek(write_keyset(tmp_path / "raw.json", [raw], raw["keyId"]))
    assert kek.key_ids == frozenset() and kek.raw_keys
    ct = kek.aead.encrypt(b"data key", b"ad")
    assert local_failure(kek, ct[:-1] + bytes([ct[-1] ^ 1])) == "unknown"
    mixed = open_kek(write_keyset(tmp_path / "mixed.json", [raw, tinky], tinky["keyId"]))
    ct = mixed.aead.encrypt(b"data key", b"ad")
    assert ct[0] == 1 and local_failure(mixed, ct[:-1] + bytes([ct[-1] ^ 1])) == "corrupt"


# --- end to end over HTTP: moto's KMS server, a closed port, and a server that answers with one error -----------


@pytest.fixture(scope="module")
def moto_kms() -> Iterator[Any]:
    with moto_kms_server() as client:  # moto's KMS over HTTP (tests/kms_fakes.py)
        yield client


def test_moto_round_trip_tamper_and_move(moto_kms: Any) -> None:
    arn = moto_kms.create_key()["KeyMetadata"]["Arn"]
    kek = open_kek(f"aws-kms://{arn}")
    ct = kek.aead.encrypt(b"data key", b"ad")
    assert kek.aead.decrypt(ct, b"ad") == b"data key"
    flipped = ct[:-1] + bytes([ct[-1] ^ 1])
    assert local_failure(kek, flipped) == "corrupt"  # InvalidCiphertextException
    with pytest.raises(tink.TinkError) as err:
        kek.aead.decrypt(ct, b"another field")  # the encryption context differs: a moved wrapped key
    assert classify_failure(kek, err.value, ct) == "corrupt"


def test_moto_another_keys_ciphertext_and_a_missing_key_are_denied(moto_kms: Any) -> None:
    a, b = (moto_kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    ct = open_kek(f"aws-kms://{a}").aead.encrypt(b"data key", b"ad")
    # moto answers AccessDeniedException where AWS answers IncorrectKeyException: both "denied"
    assert local_failure(open_kek(f"aws-kms://{b}"), ct) == "denied"
    missing = a.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert local_failure(open_kek(f"aws-kms://{missing}"), ct) == "denied"  # NotFoundException


def kek_at(endpoint: str) -> Kek:
    config = botocore.config.Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
    client = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        config=config,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    uri = f"aws-kms://{ARN}"
    return Kek(uri, awskms.new_client(boto3_client=client, key_uri=uri).get_aead(uri))


def test_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    kek = kek_at(f"http://127.0.0.1:{port}")
    with pytest.raises(boto_exc.EndpointConnectionError) as err:  # raw: tink 1.16 does not wrap it
        kek.aead.decrypt(b"wrapped", b"ad")
    assert classify_failure(kek, err.value, b"wrapped") == "unavailable"


class OneError(BaseHTTPRequestHandler):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "ThrottlingException"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"__type": self.code, "message": "Rate exceeded"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-ErrorType", self.code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def one_error_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OneError)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "ThrottlingException", "unavailable"),
        (500, "KMSInternalException", "unavailable"),
        (500, "KeyUnavailableException", "unavailable"),
        (503, "ServiceUnavailableException", "unavailable"),
        (400, "AccessDeniedException", "denied"),
        (400, "DisabledException", "denied"),
        (400, "KMSInvalidStateException", "denied"),
        (400, "InvalidCiphertextException", "corrupt"),
        (400, "SomethingNew", "unknown"),
    ],
)
def test_kms_answering_an_error_over_http(
    one_error_server: str, monkeypatch: pytest.MonkeyPatch, status: int, code: str, expected: str
) -> None:
    monkeypatch.setattr(OneError, "status", status)
    monkeypatch.setattr(OneError, "code", code)
    kek = kek_at(one_error_server)
    with pytest.raises(tink.TinkError) as err:
        kek.aead.decrypt(b"wrapped", b"ad")
    assert isinstance(err.value.__context__, boto_exc.ClientError)
    assert err.value.__context__.response["Error"]["Code"] == code
    assert classify_failure(kek, err.value, b"wrapped") == expected
