"""What a KEK is sent when it wraps a data key: a digest of the key's context, never the domain or the person (a
KMS logs its encryption context; a shred cannot reach those logs). The digest still binds the wrapped key."""

from __future__ import annotations

from pathlib import Path

import pytest
import tink
from tink import aead

from fieldcrypt import Kek, Keyring, create_key_store, create_local_kek
from fieldcrypt.crypto.cipher import _legacy_wrap_ad, unwrap_data_key, wrap_ad
from fieldcrypt.keys.kek import open_kek

PERSON = "person-4711-do-not-log"
DOMAIN = "customers-domain-do-not-log"


class Recording(aead.Aead):
    def __init__(self, inner: aead.Aead) -> None:
        self.inner, self.seen = inner, []

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        self.seen.append(associated_data)
        return self.inner.encrypt(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        self.seen.append(associated_data)
        return self.inner.decrypt(ciphertext, associated_data)


@pytest.fixture
def local(tmp_path: Path) -> Kek:
    return open_kek(create_local_kek(tmp_path / "kek.json"))


def test_the_kek_never_sees_domain_or_person(tmp_path: Path, local: Kek) -> None:
    rec = Recording(local.aead)
    url = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    with Keyring(url, Kek("recording://kek", rec)) as kr:
        key = kr.encryption_key(DOMAIN, PERSON)
    with Keyring(url, Kek("recording://kek", rec)) as kr:
        assert kr.decryption_key(key.key_id).person == kr._stored(
            DOMAIN, PERSON
        )  # looked up by id alone: the store's name
    assert len(rec.seen) >= 2
    for ad in rec.seen:
        assert PERSON.encode() not in ad and DOMAIN.encode() not in ad
        # the KEK wraps the domain's branch key (data keys are wrapped by it, locally): a digest of its context; and
        # the domain's pseudonym key: a digest of its domain and its fingerprint
        if ad.startswith(b"fieldcrypt-pseudonym-key\x02"):
            assert len(ad) == len(b"fieldcrypt-pseudonym-key\x02") + 32 + 16
            continue
        assert ad.startswith(b"fieldcrypt-branch\x01") and len(ad) == len(b"fieldcrypt-branch\x01") + 32


def test_the_digest_binds_every_part_of_the_context() -> None:
    base = wrap_ad(7, DOMAIN, PERSON, 1)
    assert len({base, wrap_ad(8, DOMAIN, PERSON, 1), wrap_ad(7, DOMAIN + "x", PERSON, 1)}) == 3
    assert len({base, wrap_ad(7, DOMAIN, None, 1), wrap_ad(7, DOMAIN, PERSON, 2), wrap_ad(7, DOMAIN, "", 1)}) == 4


def test_keys_wrapped_with_the_legacy_context_still_unwrap_and_nothing_else_does(local: Kek) -> None:
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM_RAW)
    legacy = tink.proto_keyset_format.serialize_encrypted(handle, local.aead, _legacy_wrap_ad(7, DOMAIN, PERSON, 1))
    assert unwrap_data_key(legacy, 7, DOMAIN, PERSON, 1, local.aead).person == PERSON
    with pytest.raises(tink.TinkError):
        unwrap_data_key(legacy, 7, DOMAIN, "someone-else", 1, local.aead)
