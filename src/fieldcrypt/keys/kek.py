"""Key-encryption keys (KEKs): who wraps the data keys. Chosen by URI scheme.

=====================  ==================================================================
``local-kek://PATH``   a Tink AES-256-GCM keyset in a local JSON file (one machine; create it
                       explicitly with :func:`create_local_kek` or ``fieldcrypt kek create PATH``)
``aws-kms://...``      AWS KMS through Tink (``pip install 'tink[awskms]'``)
``gcp-kms://...``      Google Cloud KMS through Tink (``pip install 'tink[gcpkms]'``)
``hcvault://...``      HashiCorp Vault transit through Tink (``pip install 'tink[hcvault]'``;
                       ``VAULT_ADDR``/``VAULT_TOKEN`` from the environment)
any other              a ``tink.KmsClient`` registered with ``tink.register_kms_client``, or a
                       plugin in the ``fieldcrypt.kek`` entry-point group (name = scheme, value =
                       callable taking the URI and returning a Tink ``Aead``)
=====================  ==================================================================

``local-kek:///abs/path.json`` names an absolute path, ``local-kek://rel/path.json`` a relative one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import tink
from tink import aead, secret_key_access

from fieldcrypt._crypto import ensure_tink
from fieldcrypt.errors import ConfigurationError, KeyStoreUnavailableError

__all__ = ["Kek", "create_local_kek", "open_kek"]

LOCAL_SCHEME = "local-kek"
_EXTRAS = {"aws-kms": "awskms", "gcp-kms": "gcpkms", "hcvault": "hcvault"}


@dataclass(frozen=True, eq=False)
class Kek:
    """A usable key-encryption key. ``uri`` names it in the key store; ``repr`` never shows key material."""

    uri: str
    aead: aead.Aead = field(repr=False)

    def __repr__(self) -> str:
        return f"Kek({self.uri!r})"


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

    Refuses to overwrite an existing file unless ``overwrite=True``: losing a KEK loses every key it wrapped.
    """
    ensure_tink()
    p = Path(path).absolute()
    if p.exists() and not overwrite:
        raise ConfigurationError(f"KEK file {str(p)!r} already exists; refusing to overwrite it")
    if not p.parent.is_dir():
        raise ConfigurationError(f"directory {str(p.parent)!r} for the KEK file does not exist")
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, p)
    return f"{LOCAL_SCHEME}://{p}"


def _open_local(uri: str) -> aead.Aead:
    p = local_path(uri)
    if not p.is_file():
        raise ConfigurationError(
            f"local KEK file {str(p)!r} does not exist; create it explicitly with "
            f"`fieldcrypt kek create {p}` or fieldcrypt.create_local_kek()"
        )
    try:
        handle = tink.json_proto_keyset_format.parse(p.read_text(), secret_key_access.TOKEN)
        primitive: aead.Aead = handle.primitive(aead.Aead)
    except (tink.TinkError, ValueError, OSError) as exc:
        raise ConfigurationError(f"local KEK file {str(p)!r} is not a readable Tink AEAD keyset") from exc
    return primitive


def _open_tink_integration(scheme: str, uri: str) -> aead.Aead:
    extra = _EXTRAS[scheme]
    try:
        if scheme == "aws-kms":
            from tink.integration import awskms

            return awskms.AwsKmsClient(uri, None).get_aead(uri)
        if scheme == "gcp-kms":
            from tink.integration import gcpkms

            return gcpkms.GcpKmsClient(uri, None).get_aead(uri)
        import hvac
        from tink.integration import hcvault

        client = hvac.Client(url=os.environ.get("VAULT_ADDR"), token=os.environ.get("VAULT_TOKEN"))
        return hcvault.new_aead(uri, client)
    except ImportError as exc:
        raise ConfigurationError(
            f"KEK scheme {scheme}:// needs Tink's integration; did you forget to install `tink[{extra}]`?"
        ) from exc
    except tink.TinkError as exc:
        raise KeyStoreUnavailableError(f"cannot open KEK {uri!r}") from exc


def open_kek(uri: str) -> Kek:
    """Open the KEK a URI names. Raises ``ConfigurationError`` for an unknown scheme or missing local file."""
    scheme = _scheme(uri)
    ensure_tink()
    if scheme == LOCAL_SCHEME:
        return Kek(uri, _open_local(uri))
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
        return Kek(uri, _open_tink_integration(scheme, uri))
    raise ConfigurationError(
        f"no KEK driver for scheme {scheme}://; known: {LOCAL_SCHEME}://, {', '.join(s + '://' for s in _EXTRAS)}, "
        "Tink KmsClients registered with tink.register_kms_client, and 'fieldcrypt.kek' entry points"
    )
