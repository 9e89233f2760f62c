"""Planted canary values never reach logs, error messages, reprs or tracebacks; nor does key material."""

from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from pathlib import Path

import pytest
from conftest import customer, load_schema, value_ctx

from fieldcrypt import FieldcryptError, Keyring, create_key_store
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire
from fieldcrypt.crypto.cipher import _key_bytes

CANARY = "CANARY-7f3a9-secret@example.com"


def _texts(exc: BaseException) -> list[str]:
    out = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        out += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    return out


def test_canary_never_leaks(registry, keyring: Keyring, kek_uri: str, caplog, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    rec = customer(1, email=CANARY, fullName=CANARY)
    good = ser(rec, value_ctx())
    assert de(good, value_ctx())["email"] == CANARY
    errors: list[BaseException] = []

    # tampered ciphertexts, values moved between subjects, wrong types, unknown keys, wrong KEK
    from confluent_kafka.schema_registry.avro import AvroDeserializer as Plain

    plain = Plain(registry)(good, value_ctx())
    blob = wire.decode_text(plain["email"])
    for bad in (blob[:-1], blob[:10], bytes([blob[0] ^ 1]) + blob[1:], blob[:5] + bytes([blob[5] ^ 0x40]) + blob[6:]):
        import io

        import fastavro
        from conftest import avsc

        fo = io.BytesIO(good[:5])
        fo.seek(5)
        fastavro.schemaless_writer(
            fo, fastavro.parse_schema(avsc("customer_event.avsc")), dict(plain, email=wire.encode_text(bad))
        )
        try:
            de(fo.getvalue(), value_ctx())
        except FieldcryptError as exc:
            errors.append(exc)
    for attempt in (
        lambda: de(good, value_ctx("elsewhere")),
        lambda: ser(customer(1, email=CANARY.encode()), value_ctx()),
        lambda: ser(customer(1, ssn=12), value_ctx()),
        lambda: AvroDeserializer(
            registry, keyring=Keyring(create_key_store(f"sqlite:///{tmp_path}/empty.db"), kek_uri)
        )(good, value_ctx()),
    ):
        with pytest.raises(FieldcryptError) as err:
            attempt()
        errors.append(err.value)
    assert len(errors) >= 7

    # key material: the DEK bytes and the KEK file's key value
    dek = keyring.decryption_key(wire.parse(blob)[0])
    raw_key = _raw_key(keyring, dek.key_id)
    secrets = [CANARY, base64.b64encode(raw_key).decode(), raw_key.hex()]
    kek_json = json.loads(Path(kek_uri.split("://", 1)[1]).read_text())
    secrets.append(kek_json["key"][0]["keyData"]["value"])

    texts = [t for e in errors for t in _texts(e)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(keyring), repr(dek), repr(keyring.keys()), repr(keyring.kek), repr(ser), repr(keyring.store)]
    for text in texts:
        for secret in secrets:
            assert secret not in text, text
    assert caplog.records, "expected some logging to check"


def _raw_key(keyring: Keyring, key_id: int) -> bytes:
    """The DEK's AES key bytes, unwrapped here only so the test can look for them."""
    import tink
    from tink import secret_key_access

    from fieldcrypt.crypto.cipher import split_check, wrap_ad

    record = keyring.store.get(key_id)
    assert record is not None
    ad = wrap_ad(record.key_id, record.domain, record.person, record.version)
    # the data key is wrapped by its domain's branch key (itself wrapped by the KEK)
    wrapping = (
        keyring._branch(record.branch_id, record, time.monotonic() + 5).aead if record.branch_id else keyring.kek.aead
    )
    handle = tink.proto_keyset_format.parse_encrypted(split_check(record.wrapped)[1], wrapping, ad)
    return _key_bytes(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


def test_store_url_password_is_redacted() -> None:
    from fieldcrypt.keys.store import redact_url

    assert redact_url("postgresql://admin:hunter2@db:5432/keys") == "postgresql://admin:***@db:5432/keys"
    assert "hunter2" not in redact_url("postgresql://admin:hunter2@db/keys?sslmode=require")
