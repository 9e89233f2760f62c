"""Key-encryption keys (KEKs): who wraps the data keys. Chosen by URI scheme.

=====================  ==================================================================
``local-kek://PATH``   a Tink AES-256-GCM keyset in a local JSON file (one machine; create it
                       explicitly with :func:`create_local_kek` or ``fieldcrypt kek create PATH``;
                       refused if group or others may access it: ``chmod 600 PATH``)
``aws-kms://...``      AWS KMS through Tink (``pip install 'tink[awskms]'``)
``gcp-kms://...``      Google Cloud KMS through Tink (``pip install 'tink[gcpkms]'``)
``hcvault://...``      HashiCorp Vault transit through Tink (``pip install 'tink[hcvault]'``;
                       ``VAULT_ADDR``/``VAULT_TOKEN`` from the environment)
any other              a ``tink.KmsClient`` registered with ``tink.register_kms_client``, or a
                       plugin in the ``fieldcrypt.kek`` entry-point group (name = scheme, value =
                       callable taking the URI and returning a Tink ``Aead``)
=====================  ==================================================================

``local-kek:///abs/path.json`` names an absolute path, ``local-kek://rel/path.json`` a relative one.

Deadlines
---------
A KMS that accepts connections and never answers must not stall a producer: :func:`open_kek` builds Tink's AWS,
Cloud KMS and Vault clients with ``timeout`` seconds (``Keyring(kms_timeout=...)``, default
:data:`DEFAULT_KMS_TIMEOUT`) as their connect and read timeouts and without client-side retries (fieldcrypt retries,
within the same deadline): boto3 ``Config(connect_timeout, read_timeout, retries={"total_max_attempts": 1})``,
Cloud KMS ``timeout=`` and ``retry=None`` on each call, hvac ``Client(timeout=)``. The keyring adds a total deadline
per key operation for every remote KEK, these and any other (see ``fieldcrypt.keys._deadline``).

Why an unwrap failed
--------------------
:func:`classify_failure` turns what ``kek.aead.decrypt(wrapped, ad)`` raised into ``"unavailable"``, ``"denied"``,
``"corrupt"`` or ``"unknown"``; the mapping table is in :mod:`fieldcrypt.crypto.failures`, which the cipher reads too.
"""

from __future__ import annotations

import importlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import tink
from tink import aead, secret_key_access

from fieldcrypt.crypto.cipher import ensure_tink
from fieldcrypt.crypto.failures import classify, is_transient
from fieldcrypt.errors import ConfigurationError, EncryptionError, KeyStoreUnavailableError
from fieldcrypt.keys._deadline import KmsTimeout
from fieldcrypt.keys._files import check_path, destination, shown

__all__ = [
    "DEFAULT_KMS_TIMEOUT",
    "MAX_KMS_TIMEOUT",
    "Kek",
    "check_kms_timeout",
    "classify_failure",
    "create_local_kek",
    "is_transient",
    "open_kek",
    "wrap_failure",
]

LOCAL_SCHEME = "local-kek"
_EXTRAS = {"aws-kms": "awskms", "gcp-kms": "gcpkms", "hcvault": "hcvault"}

#: seconds one key operation waits for the KMS by default (its connect and read timeouts, and its total deadline,
#: fieldcrypt's retries included): a KMS answers in milliseconds, so a few seconds rides out a slow call and a
#: retry, and a silent KMS costs a producer no more than this
DEFAULT_KMS_TIMEOUT = 5.0
#: the longest ``kms_timeout`` taken
MAX_KMS_TIMEOUT = 300.0


def check_kms_timeout(value: object) -> float:
    """``kms_timeout``: an int or float of seconds, more than 0 and at most :data:`MAX_KMS_TIMEOUT`; anything else
    (``inf``, ``nan``, 0, negative, a bool, a string) is a ``ConfigurationError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_KMS_TIMEOUT:
        raise ConfigurationError(
            f"kms_timeout must be a number of seconds, more than 0 and at most {MAX_KMS_TIMEOUT:g} (a finite number)"
        )
    return float(value)


@dataclass(frozen=True, eq=False)
class Kek:
    """A usable key-encryption key. ``uri`` names it in the key store; ``repr`` never shows key material.

    ``key_ids``: for a local keyset, the ids of its enabled keys that write a Tink output prefix (``None`` for a
    remote KEK); ``raw_keys``: whether that keyset also has enabled RAW keys. Both only serve
    :func:`classify_failure`.
    """

    uri: str
    aead: aead.Aead = field(repr=False)
    key_ids: frozenset[int] | None = field(default=None, repr=False)
    raw_keys: bool = field(default=False, repr=False)

    def __repr__(self) -> str:
        return f"Kek({self.uri!r})"

    @property
    def remote(self) -> bool:
        """Whether a call may wait on a network (anything but a local keyset): the keyring gives it a deadline."""
        return self.key_ids is None


def _scheme(uri: str) -> str:
    if "://" not in uri:
        raise ConfigurationError(
            f"KEK {uri!r} is not a URI; use local-kek://PATH, aws-kms://..., gcp-kms://... or hcvault://..."
        )
    return uri.split("://", 1)[0].lower()


def local_path(uri: str) -> Path:
    return Path(uri.split("://", 1)[1])


def create_local_kek(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Create a new local KEK file (mode 0600) and return its ``local-kek://`` URI.

    Refuses to overwrite an existing file unless ``overwrite=True``: losing a KEK loses every key it wrapped. The
    keyset is written to a fresh temporary file in the same directory (mode 0600, fsynced), then hard-linked into
    place, which fails rather than clobbers if the file appeared meanwhile (``overwrite=True``: renamed over it).
    A symbolic link is written through (its target gets the keyset, the link stays; the URI names the link).
    """
    ensure_tink()
    p = check_path(path, "the KEK file").absolute()  # the URI names the path asked for (a link stays a link)
    target = destination(p, "the KEK file")
    if target.exists() and not overwrite:
        raise _exists(p)
    if target.is_dir():
        raise ConfigurationError(f"cannot write the KEK file {shown(p, target)}: it is a directory")
    if not target.parent.is_dir():
        raise ConfigurationError(
            f"directory {str(target.parent)!r} for the KEK file {shown(p, target)} does not exist"
            if target != p
            else f"directory {str(p.parent)!r} for the KEK file does not exist"
        )
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    try:
        _write_keyset(target, text, overwrite)
    except OSError as exc:  # named by the file asked for, never by the temporary file beside it
        raise ConfigurationError(
            f"cannot write the KEK file {shown(p, target)}: {exc.strerror or type(exc).__name__}"
        ) from None
    return f"{LOCAL_SCHEME}://{p}"


def _write_keyset(p: Path, text: str, overwrite: bool) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")  # mode 0600, O_EXCL
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
                os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise _exists(p) from None
            tmp.unlink()
        _fsync_dir(p.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _exists(p: Path) -> ConfigurationError:
    return ConfigurationError(f"KEK file {str(p)!r} already exists; refusing to overwrite it")


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # a directory cannot be opened on Windows; NTFS journals the rename
        return
    dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# tink_pb2 enum values (KeyStatusType.ENABLED, OutputPrefixType.RAW), stable in Tink's protobuf
_ENABLED = 1
_RAW = 3


def _open_local(uri: str) -> Kek:
    p = local_path(uri)
    if not p.is_file():
        raise ConfigurationError(
            f"local KEK file {str(p)!r} does not exist; create it explicitly with "
            f"`fieldcrypt kek create {p}` or fieldcrypt.create_local_kek()"
        )
    try:
        with open(p, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)  # of the file read here, not one swapped in later
            text = f.read() if os.name == "nt" or not mode & 0o077 else None
    except (ValueError, OSError) as exc:
        raise ConfigurationError(f"local KEK file {str(p)!r} is not a readable Tink AEAD keyset") from exc
    if text is None:
        raise ConfigurationError(
            f"local KEK file {str(p)!r} has mode {mode:04o}: group or others may access it; "
            f"restrict it to its owner with `chmod 600 {p}`"
        )
    try:
        handle = tink.json_proto_keyset_format.parse(text, secret_key_access.TOKEN)
        primitive: aead.Aead = handle.primitive(aead.Aead)
        keys = [k for k in handle.keyset_info().key_info if k.status == _ENABLED]
    except (tink.TinkError, ValueError, OSError) as exc:
        raise ConfigurationError(f"local KEK file {str(p)!r} is not a readable Tink AEAD keyset") from exc
    return Kek(
        uri,
        primitive,
        key_ids=frozenset(k.key_id for k in keys if k.output_prefix_type != _RAW),
        raw_keys=any(k.output_prefix_type == _RAW for k in keys),
    )


class _CloudKmsWithDeadline:
    """A Cloud KMS client whose ``encrypt`` and ``decrypt`` (the two calls Tink's ``_GcpKmsAead`` makes) carry a
    timeout and no client-side retry (its default retries a decrypt for up to 60 s)."""

    def __init__(self, client: Any, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    def encrypt(self, request: Any = None, **kwargs: Any) -> Any:
        return self._client.encrypt(request=request, **kwargs, timeout=self._timeout, retry=None)

    def decrypt(self, request: Any = None, **kwargs: Any) -> Any:
        return self._client.decrypt(request=request, **kwargs, timeout=self._timeout, retry=None)


def _aws_kms_client(uri: str, timeout: float) -> Any:
    """The boto3 KMS client of an ``aws-kms://`` URI: its region taken from the key ARN (as Tink's AwsKmsClient
    does), boto3's default credential chain and endpoint settings, and timeouts of ``timeout`` seconds."""
    boto3: Any = importlib.import_module("boto3")  # no type stubs; an ImportError names the extra, as for Tink's
    botocore_config: Any = importlib.import_module("botocore.config")

    parts = uri[len("aws-kms://") :].split(":")
    if len(parts) < 6:
        raise tink.TinkError("invalid key URI")
    config = botocore_config.Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})
    return boto3.session.Session(region_name=parts[3]).client("kms", config=config)


def _open_tink_integration(scheme: str, uri: str, timeout: float) -> aead.Aead:
    extra = _EXTRAS[scheme]
    try:
        if scheme == "aws-kms":
            from tink.integration import awskms

            return awskms.new_client(boto3_client=_aws_kms_client(uri, timeout), key_uri=uri).get_aead(uri)
        if scheme == "gcp-kms":
            from google.cloud import kms_v1
            from tink.integration import gcpkms

            if not uri.startswith("gcp-kms://"):
                raise tink.TinkError("Invalid key_uri.")
            client = _CloudKmsWithDeadline(kms_v1.KeyManagementServiceClient(), timeout)
            return gcpkms.new_client(kms_v1_client=client, key_uri=uri).get_aead(uri)
        import hvac
        from tink.integration import hcvault

        vault = hvac.Client(url=os.environ.get("VAULT_ADDR"), token=os.environ.get("VAULT_TOKEN"), timeout=timeout)
        return hcvault.new_aead(uri, vault)
    except ImportError as exc:
        raise ConfigurationError(
            f"KEK scheme {scheme}:// needs Tink's integration; did you forget to install `tink[{extra}]`?"
        ) from exc
    except tink.TinkError as exc:
        raise KeyStoreUnavailableError(f"cannot open KEK {uri!r}") from exc
    except Exception as exc:
        # google-auth's DefaultCredentialsError, botocore's NoRegionError...: raised while building the client,
        # before any key is used; a setting is missing, nothing to retry
        if type(exc).__name__ in ("DefaultCredentialsError", "NoRegionError", "NoCredentialsError"):
            raise ConfigurationError(
                f"KEK {uri!r}: the {scheme} client has no credentials or region ({type(exc).__name__}); see the "
                "KMS setup page of the documentation"
            ) from None
        raise


def open_kek(uri: str, *, timeout: float = DEFAULT_KMS_TIMEOUT) -> Kek:
    """Open the KEK a URI names. Raises ``ConfigurationError`` for an unknown scheme or missing local file.

    ``timeout``: the connect and read timeout, in seconds, of the AWS, Cloud KMS and Vault clients built here (see
    "Deadlines" above); a plugin or a registered Tink client keeps its own, and gets the keyring's deadline."""
    timeout = check_kms_timeout(timeout)
    scheme = _scheme(uri)
    ensure_tink()
    if scheme == LOCAL_SCHEME:
        return _open_local(uri)
    for ep in entry_points(group="fieldcrypt.kek"):
        if ep.name == scheme:
            return Kek(uri, ep.load()(uri))
    try:
        client = tink.kms_client_from_uri(uri)
    except tink.TinkError:
        client = None
    if client is not None:
        return Kek(uri, client.get_aead(uri))
    if scheme in _EXTRAS:
        return Kek(uri, _open_tink_integration(scheme, uri, timeout))
    raise ConfigurationError(
        f"no KEK driver for scheme {scheme}://; known: {LOCAL_SCHEME}://, {', '.join(s + '://' for s in _EXTRAS)}, "
        "Tink KmsClients registered with tink.register_kms_client, and 'fieldcrypt.kek' entry points"
    )


def classify_failure(kek: Kek, exc: BaseException, wrapped_ciphertext: bytes) -> str:
    """Why ``kek.aead.decrypt(wrapped_ciphertext, ad)`` raised ``exc``: one of ``"unavailable"`` (transient: retry
    with backoff), ``"denied"`` (this KEK has no access), ``"corrupt"`` (the KEK that wrapped it fails to
    authenticate it) or ``"unknown"`` (raise a clear error). The mapping is the table in
    :mod:`fieldcrypt.crypto.failures`."""
    return classify(exc, kek.uri, kek.key_ids, kek.raw_keys, wrapped_ciphertext)


def wrap_failure(kek: Kek, exc: BaseException, timeout: float, what: str = "a new data key") -> Exception:
    """What a KEK's failure to wrap ``what`` (a new data key, branch key or pseudonym key) is: unavailable (retried)
    when it timed out, is down or failed in a way fieldcrypt does not recognise; an ``EncryptionError`` (no retry)
    when it refused."""
    if isinstance(exc, KmsTimeout):
        return KeyStoreUnavailableError(
            f"KEK {kek.uri!r} did not answer within kms_timeout ({timeout:g} s); it could not wrap {what}"
        )
    verdict = classify_failure(kek, exc, b"")
    if verdict == "unavailable":
        return KeyStoreUnavailableError(f"KEK {kek.uri!r} is unavailable; it could not wrap {what}")
    if verdict == "denied":
        return EncryptionError(f"KEK {kek.uri!r} refused to wrap {what}: this process has no access to it")
    return KeyStoreUnavailableError(
        f"KEK {kek.uri!r} could not wrap {what}: an error fieldcrypt does not recognise ({type(exc).__name__})"
    )
