"""Key-encryption keys: created only on purpose, chosen by URI scheme, missing extras named."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fieldcrypt import ConfigurationError, create_local_kek, open_kek


def test_create_local_kek(tmp_path: Path) -> None:
    uri = create_local_kek(tmp_path / "kek.json")
    assert uri == f"local-kek://{tmp_path / 'kek.json'}"
    assert stat.S_IMODE(os.stat(tmp_path / "kek.json").st_mode) == 0o600
    kek = open_kek(uri)
    ct = kek.aead.encrypt(b"dek", b"ad")
    assert open_kek(uri).aead.decrypt(ct, b"ad") == b"dek"
    assert "local-kek://" in repr(kek) and "value" not in repr(kek)


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    uri = create_local_kek(tmp_path / "kek.json")
    before = (tmp_path / "kek.json").read_text()
    with pytest.raises(ConfigurationError):
        create_local_kek(tmp_path / "kek.json")
    assert (tmp_path / "kek.json").read_text() == before
    assert create_local_kek(tmp_path / "kek.json", overwrite=True) == uri
    assert (tmp_path / "kek.json").read_text() != before


def test_missing_or_bad_local_kek(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_kek(f"local-kek://{tmp_path}/nope.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="not a readable"):
        open_kek(f"local-kek://{tmp_path}/bad.json")
    with pytest.raises(ConfigurationError, match="not a URI"):
        open_kek(str(tmp_path / "kek.json"))


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError) as err:
        open_kek("nosuch-kms://key")
    assert "local-kek://" in str(err.value) and "aws-kms://" in str(err.value)


def test_kms_scheme_without_its_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # as on a machine without `tink[awskms]`: importing Tink's AWS integration fails
    monkeypatch.setitem(sys.modules, "tink.integration.awskms", None)
    with pytest.raises(ConfigurationError, match=r"tink\[awskms\]"):
        open_kek("aws-kms://arn:aws:kms:eu-west-1:123456789012:key/abc")


def test_registered_tink_kms_client_is_used(tmp_path: Path) -> None:
    import tink

    inner = open_kek(create_local_kek(tmp_path / "kek.json")).aead

    class Client(tink.KmsClient):
        def does_support(self, key_uri: str) -> bool:
            return key_uri.startswith("test-kms://")

        def get_aead(self, key_uri: str):  # type: ignore[no-untyped-def]
            return inner

    tink.register_kms_client(Client())
    kek = open_kek("test-kms://key-1")
    assert kek.aead.decrypt(inner.encrypt(b"x", b""), b"") == b"x"
