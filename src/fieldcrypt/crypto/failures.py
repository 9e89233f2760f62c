"""Why a key-encryption key failed to unwrap: the classification of what a KEK's decrypt raised, read by the KEKs
(:func:`fieldcrypt.keys.kek.classify_failure`) and by the cipher (:func:`fails_authentication`, before it tries a
legacy associated data). It sits in crypto/, below both, and imports no fieldcrypt module.

Why an unwrap failed
--------------------
:func:`classify_failure` turns what ``kek.aead.decrypt(wrapped, ad)`` raised into one of four outcomes:

``"unavailable"``  transient (throttled, 5xx, timeout, connection or DNS failure): retry with backoff, then report
``"denied"``       this KEK has no access (IAM, key disabled / pending deletion / not found, another key's ciphertext)
``"corrupt"``      the KEK that wrapped it is here, and the wrapped bytes fail authentication: corrupt or tampered
``"unknown"``      anything else: raise a clear error; never read as "denied"

It walks the exception chain (``__cause__``, ``__context__``, and the wrapped error of urllib3's ``reason``,
botocore's ``error=`` and api_core's ``RetryError.cause``), outermost first, and the first exception it recognises
decides. Third-party exceptions are recognised by module and class name, so botocore, google-api-core and hvac stay
optional. What Tink 1.16's integrations raise, read from their source:

- ``awskms`` catches only ``botocore.exceptions.ClientError`` and raises ``tink.TinkError(e)`` inside the ``except``
  (so the ClientError is ``__context__``, not ``__cause__``). Everything else escapes *raw*: botocore's
  ``EndpointConnectionError``, ``ConnectTimeoutError``, ``ReadTimeoutError``, ``NoCredentialsError``, ...
- ``gcpkms`` catches ``google.api_core.exceptions.GoogleAPIError`` the same way; google-auth errors (``RefreshError``,
  ``TransportError``) escape raw.
- ``hcvault`` wraps *every* exception (hvac's ``VaultError`` subclasses, requests' ``ConnectionError``, its own
  ``NotImplementedError`` for non-empty associated data) in ``tink.TinkError`` as ``__context__``.

=================  ======================================================================================
source             mapping
=================  ======================================================================================
AWS ``ClientError``  by ``response["Error"]["Code"]``:
                   unavailable: ThrottlingException, Throttling, ThrottledException, RequestThrottled(Exception),
                   TooManyRequestsException, RequestLimitExceeded, SlowDown, PriorRequestNotComplete,
                   RequestTimeout(Exception), KMSInternalException, DependencyTimeoutException,
                   KeyUnavailableException (AWS: "the key was not available; you can retry"),
                   ServiceUnavailable(Exception),
                   InternalFailure, InternalError, InternalServerError, InternalServerException;
                   denied: AccessDeniedException, AccessDenied, DisabledException, KMSInvalidStateException
                   (disabled, pending deletion or import), NotFoundException, IncorrectKeyException (the ciphertext
                   names another KMS key), InvalidKeyUsageException, InvalidGrantTokenException,
                   UnrecognizedClientException, InvalidClientTokenId, InvalidSignatureException, SignatureDoesNotMatch,
                   IncompleteSignature, MissingAuthenticationToken, ExpiredToken(Exception), AuthFailure;
                   corrupt: InvalidCiphertextException (also a wrong encryption context, i.e. moved key);
                   another code: HTTP 429 or 5xx (not 501) -> unavailable, else unknown
botocore           ``ConnectionError`` and ``HTTPClientError`` subclasses (EndpointConnectionError, ConnectTimeoutError,
                   ReadTimeoutError, ProxyConnectionError, ConnectionClosedError, ...) -> unavailable;
                   any other ``BotoCoreError`` (NoCredentialsError, NoRegionError, ...) -> unknown
google.api_core    ServiceUnavailable, TooManyRequests, ResourceExhausted, DeadlineExceeded, GatewayTimeout,
                   InternalServerError, BadGateway, Aborted, Unknown, DataLoss, RetryError -> unavailable;
                   PermissionDenied, Forbidden, Unauthenticated, Unauthorized, NotFound,
                   FailedPrecondition (key version disabled or destroyed) -> denied;
                   InvalidArgument (Cloud KMS: "the ciphertext is invalid", also another key's) -> corrupt;
                   another: ``code`` 429 or 5xx (not 501) -> unavailable, else unknown
google.auth        TransportError, TimeoutError, or ``retryable`` -> unavailable; else unknown
hvac               VaultDown (sealed), InternalServerError, BadGateway, RateLimitExceeded -> unavailable;
                   Forbidden, Unauthorized, InvalidPath -> denied;
                   InvalidRequest by Vault's transit message: "not found", "too new", "too old",
                   "disallowed by policy" -> denied; "invalid ciphertext", "authentication failed" -> corrupt;
                   another message or class -> unknown
requests, urllib3  connection, timeout, protocol, proxy and chunked-encoding errors, MaxRetryError -> unavailable;
                   another -> unknown
built-in           ConnectionError, TimeoutError, socket.gaierror/herror, OSError with a network errno -> unavailable
TLS                ``ssl.SSLCertVerificationError`` anywhere in the chain -> unknown (configuration, not a blip)
hcvault KEK        ``UnicodeDecodeError`` (the wrapped bytes are not a Vault ciphertext) -> corrupt
=================  ======================================================================================

A local keyset (``local-kek://``) raises a bare ``tink.TinkError("Decryption failed.")`` for every failure, so
the 5-byte Tink output prefix of the wrapped bytes (``0x01`` TINK or ``0x00`` LEGACY/CRUNCHY, then the 4-byte
big-endian key id) decides, against the ids of the keyset's *enabled* prefixed keys (:attr:`Kek.key_ids`):

- the prefix names one of them -> ``"corrupt"``: that key wrapped it, and authentication failed;
- the prefix names another id (another keyset, or a disabled key of this one) -> ``"denied"``;
- no Tink prefix (shorter than 5 bytes, or a first byte other than 0x00/0x01) -> ``"corrupt"``: no prefixed key
  writes such bytes;
- but if the keyset has enabled RAW keys (which write no prefix, so no key id), a failure that does not name one
  of its prefixed keys is ``"unknown"``: a wrong keyset and tampered bytes look the same.

The prefix itself is not authenticated: a flipped bit inside it reads as ``"denied"``, not ``"corrupt"``.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from typing import Literal

import tink

__all__ = ["classify", "fails_authentication", "is_transient"]

_Outcome = Literal["unavailable", "denied", "corrupt", "unknown"]

_AWS_UNAVAILABLE = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
    }
)
_AWS_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
        "IncorrectKeyException",
        "InvalidKeyUsageException",
        "InvalidGrantTokenException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
_AWS_CORRUPT = frozenset({"InvalidCiphertextException"})

_GOOGLE_API_CORE: dict[str, _Outcome] = {
    **dict.fromkeys(
        (
            "ServiceUnavailable",
            "TooManyRequests",
            "ResourceExhausted",
            "DeadlineExceeded",
            "GatewayTimeout",
            "InternalServerError",
            "BadGateway",
            "Aborted",
            "Unknown",
            "DataLoss",
            "RetryError",
        ),
        "unavailable",
    ),
    **dict.fromkeys(
        ("PermissionDenied", "Forbidden", "Unauthenticated", "Unauthorized", "NotFound", "FailedPrecondition"),
        "denied",
    ),
    "InvalidArgument": "corrupt",
}
_HVAC: dict[str, _Outcome] = {
    **dict.fromkeys(("VaultDown", "InternalServerError", "BadGateway", "RateLimitExceeded"), "unavailable"),
    **dict.fromkeys(("Forbidden", "Unauthorized", "InvalidPath"), "denied"),
}
_VAULT_DENIED_MESSAGES = ("not found", "too new", "too old", "disallowed by policy")
_VAULT_CORRUPT_MESSAGES = ("invalid ciphertext", "authentication failed")
_REQUESTS_UNAVAILABLE = frozenset({"ConnectionError", "Timeout", "ChunkedEncodingError"})
_URLLIB3_UNAVAILABLE = frozenset(
    {
        "TimeoutError",
        "NewConnectionError",
        "NameResolutionError",
        "ProtocolError",
        "ProxyError",
        "MaxRetryError",
        "SSLError",
        "IncompleteRead",
    }
)
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "EHOSTDOWN",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "EPIPE",
        "EAGAIN",
    )
    if hasattr(errno, name)
)


def classify(
    exc: BaseException, uri: str, key_ids: frozenset[int] | None, raw_keys: bool, wrapped_ciphertext: bytes
) -> _Outcome:
    """Why a KEK's decrypt of ``wrapped_ciphertext`` raised ``exc`` (the table above). ``uri``: the KEK's; ``key_ids``
    and ``raw_keys``: a local keyset's enabled prefixed key ids and whether it has RAW keys (None: not a local
    keyset)."""
    verdict = _classify_chain(exc, _scheme_or_none(uri))
    if verdict is not None:
        return verdict
    if key_ids is not None and isinstance(exc, tink.TinkError):
        return _classify_local(key_ids, raw_keys, wrapped_ciphertext)
    return "unknown"


def fails_authentication(exc: BaseException) -> bool:
    """Whether ``exc`` (from a KEK's decrypt) may be a failed authentication, i.e. not a denied, unavailable or
    otherwise failing service: a local Tink error, or a KMS that says the ciphertext does not authenticate."""
    return _classify_chain(exc, None) in (None, "corrupt")


def names_another_key(exc: BaseException) -> bool:
    """Whether the KMS said the ciphertext is another KMS key's (AWS ``IncorrectKeyException``): asked of the one KEK
    a key's row names, that row is not what it says."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if type(e).__name__ == "IncorrectKeyException" or code == "IncorrectKeyException":
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) says the KEK's service is only unavailable for now."""
    return _classify_chain(exc, None) == "unavailable"


def _scheme_or_none(uri: str) -> str | None:
    return uri.split("://", 1)[0].lower() if "://" in uri else None


def _classify_local(key_ids: frozenset[int], raw_keys: bool, ct: bytes) -> _Outcome:
    if len(ct) >= 5 and ct[0] in (0x00, 0x01):
        if int.from_bytes(ct[1:5], "big") in key_ids:
            return "corrupt"
        return "unknown" if raw_keys else "denied"
    return "unknown" if raw_keys else "corrupt"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it wraps, outermost first (breadth-first, each once, at most 64)."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue and len(seen) < 64:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        kwargs = getattr(e, "kwargs", None)  # botocore: SSLError(error=e), ...
        wrapped = [
            e.__cause__,
            e.__context__,
            getattr(e, "reason", None),  # urllib3 MaxRetryError / NewConnectionError
            getattr(e, "cause", None),  # google.api_core RetryError
            kwargs.get("error") if isinstance(kwargs, dict) else None,
            *e.args,  # requests: ConnectionError(MaxRetryError(...))
        ]
        queue.extend(w for w in wrapped if isinstance(w, BaseException))


def _classify_chain(exc: BaseException, scheme: str | None) -> _Outcome | None:
    chain = list(_chain(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return "unknown"
    for e in chain:
        verdict = _classify_one(e, scheme)
        if verdict is not None:
            return verdict
    return None


def _classify_one(e: BaseException, scheme: str | None) -> _Outcome | None:
    """The verdict one exception gives, or None to look further down the chain."""
    mro = type(e).__mro__
    module = type(e).__module__
    root = module.split(".", 1)[0]
    names = [c.__name__ for c in mro if c.__module__.split(".", 1)[0] == root]
    if root == "botocore":
        if "ClientError" in names:
            return _classify_aws(e)
        if "ConnectionError" in names or "HTTPClientError" in names:
            return "unavailable"
        if "BotoCoreError" in names:
            return "unknown"
    elif module.startswith("google.api_core"):
        for name in names:
            if name in _GOOGLE_API_CORE:
                return _GOOGLE_API_CORE[name]
        code = getattr(e, "code", None)
        return _by_http_status(code if isinstance(code, int) else None)
    elif module.startswith("google.auth"):
        if "TransportError" in names or "TimeoutError" in names or getattr(e, "retryable", False) is True:
            return "unavailable"
        return "unknown"
    elif root == "hvac":
        for name in names:
            if name in _HVAC:
                return _HVAC[name]
        if "InvalidRequest" in names:
            message = str(e.args[0] if e.args else "").lower()
            if any(m in message for m in _VAULT_DENIED_MESSAGES):
                return "denied"
            if any(m in message for m in _VAULT_CORRUPT_MESSAGES):
                return "corrupt"
        if "VaultError" in names:
            return "unknown"
    elif root == "requests":
        return "unavailable" if _REQUESTS_UNAVAILABLE.intersection(names) else "unknown"
    elif root == "urllib3":
        return "unavailable" if _URLLIB3_UNAVAILABLE.intersection(names) else "unknown"
    if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return "unavailable"
    if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
        return "unavailable"
    if scheme == "hcvault" and isinstance(e, UnicodeDecodeError):  # tink: ciphertext.decode() before the call
        return "corrupt"
    return None


def _classify_aws(e: BaseException) -> _Outcome:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return "unknown"
    code = str(response.get("Error", {}).get("Code", ""))
    if code in _AWS_UNAVAILABLE:
        return "unavailable"
    if code in _AWS_DENIED:
        return "denied"
    if code in _AWS_CORRUPT:
        return "corrupt"
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _by_http_status(status if isinstance(status, int) else None)


def _by_http_status(status: int | None) -> _Outcome:
    if status is not None and (status == 429 or (500 <= status < 600 and status != 501)):
        return "unavailable"
    return "unknown"
