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
    (tmp_path / "bad.json").chmod(0o600)
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

    import tink.integration

    # as on a machine without `tink[awskms]`: importing Tink's AWS integration fails (also once another test
    # imported it: `from tink.integration import awskms` takes the package attribute before sys.modules)
    monkeypatch.setitem(sys.modules, "tink.integration.awskms", None)
    monkeypatch.delattr(tink.integration, "awskms", raising=False)
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


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_kek_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    uri = create_local_kek(tmp_path / "kek.json")
    os.chmod(tmp_path / "kek.json", mode)
    with pytest.raises(ConfigurationError) as err:
        open_kek(uri)
    message = str(err.value)
    assert str(tmp_path / "kek.json") in message and f"{mode:04o}" in message
    assert f"chmod 600 {tmp_path / 'kek.json'}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_kek_readable_by_its_owner_only_is_accepted(tmp_path: Path, mode: int) -> None:
    uri = create_local_kek(tmp_path / "kek.json")
    os.chmod(tmp_path / "kek.json", mode)
    kek = open_kek(uri)
    assert kek.aead.decrypt(kek.aead.encrypt(b"dek", b"ad"), b"ad") == b"dek"


def test_stale_temp_file_never_widens_the_kek_mode(tmp_path: Path) -> None:
    stale = tmp_path / "kek.json.tmp"  # where an interrupted older version left its temp file
    stale.write_text("stale")
    os.chmod(stale, 0o644)
    old_umask = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        create_local_kek(tmp_path / "kek.json")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "kek.json").st_mode) == 0o600
    assert stale.read_text() == "stale" and stat.S_IMODE(stale.stat().st_mode) == 0o644  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek.json", "kek.json.tmp"]  # no temp file left
    open_kek(f"local-kek://{tmp_path / 'kek.json'}")


def test_a_kek_file_that_appears_meanwhile_is_never_clobbered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tink

    target = tmp_path / "kek.json"
    serialize = tink.json_proto_keyset_format.serialize

    def racing_serialize(*args: object) -> str:
        target.write_text("the other process's KEK")  # after the exists() check, before the file is placed
        return serialize(*args)

    monkeypatch.setattr(tink.json_proto_keyset_format, "serialize", racing_serialize)
    with pytest.raises(ConfigurationError, match="already exists"):
        create_local_kek(target)
    assert target.read_text() == "the other process's KEK"
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]  # the temp file was removed


def test_overwrite_replaces_a_wider_file_with_a_0600_one(tmp_path: Path) -> None:
    target = tmp_path / "kek.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    uri = create_local_kek(target, overwrite=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]
    open_kek(uri)


def test_a_failed_create_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # e.g. a file system without hard links

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(ConfigurationError, match=r"cannot write the KEK file .*kek\.json'?: Operation not permitted$"):
        create_local_kek(tmp_path / "kek.json")  # named by the file asked for, not the temporary one
    assert list(tmp_path.iterdir()) == []
