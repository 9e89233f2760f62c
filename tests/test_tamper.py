"""Every altered or moved ciphertext is rejected: bit flips, truncation, swaps of fields/records/persons/subjects."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer as ConfluentAvroDeserializer
from conftest import avsc, customer, load_schema, value_ctx

from fieldcrypt import DecryptionError, Keyring
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.crypto import wire

TAGGED = ("email", "ssn", "fullName")


class Wire:
    """Read a produced record as plain Avro, edit its ciphertext fields, write it back with the same framing."""

    def __init__(self, registry: Any, schema_name: str = "customer_event.avsc") -> None:
        self.plain = ConfluentAvroDeserializer(registry)
        self.parsed = fastavro.parse_schema(avsc(schema_name))

    def read(self, data: bytes, topic: str = "orders") -> dict[str, Any]:
        rec: dict[str, Any] = self.plain(data, value_ctx(topic))
        return rec

    def write(self, framing: bytes, rec: dict[str, Any]) -> bytes:
        fo = io.BytesIO()
        fo.write(framing[:5])
        fastavro.schemaless_writer(fo, self.parsed, rec)
        return fo.getvalue()


@pytest.fixture
def setup(registry, keyring: Keyring) -> tuple[AvroSerializer, AvroDeserializer, Wire]:
    ser = AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring)
    return ser, AvroDeserializer(registry, keyring=keyring), Wire(registry)


def _unb64(text: str) -> bytes:
    return wire.decode_text(text)


def test_every_bit_flip_and_truncation_is_rejected(setup) -> None:
    ser, de, w = setup
    data = ser(customer(1), value_ctx())
    rec = w.read(data)
    for field in TAGGED:
        blob = _unb64(rec[field])
        variants = [blob[:n] for n in range(len(blob))]
        for i in range(len(blob) * 8):
            flipped = bytearray(blob)
            flipped[i // 8] ^= 1 << (i % 8)
            variants.append(bytes(flipped))
        for bad in variants:
            forged = dict(rec, **{field: wire.encode_text(bad)})
            with pytest.raises(DecryptionError) as err:
                de(w.write(data, forged), value_ctx())
            assert err.value.field_path is not None and err.value.subject == "orders-value"


def test_non_ciphertext_text_is_rejected(setup) -> None:
    ser, de, w = setup
    data = ser(customer(1), value_ctx())
    rec = w.read(data)
    for junk in ["", "x", "not base64 at all!", rec["email"] + "A", "person1@example.com"]:
        with pytest.raises(DecryptionError):
            de(w.write(data, dict(rec, email=junk)), value_ctx())


def test_swap_between_fields_of_one_record(setup) -> None:
    ser, de, w = setup
    data = ser(customer(1), value_ctx())
    rec = w.read(data)
    for a, b in [("email", "ssn"), ("email", "fullName"), ("ssn", "fullName")]:
        with pytest.raises(DecryptionError):
            de(w.write(data, dict(rec, **{a: rec[b], b: rec[a]})), value_ctx())
        with pytest.raises(DecryptionError):
            de(w.write(data, dict(rec, **{a: rec[b]})), value_ctx())


def test_swap_between_records_of_the_same_person(setup) -> None:
    ser, de, w = setup
    one = ser(customer(1), value_ctx())
    two = ser(customer(1, email="second@example.com", fullName="Other"), value_ctx())
    r1, r2 = w.read(one), w.read(two)
    for field in TAGGED:
        with pytest.raises(DecryptionError):
            de(w.write(two, dict(r2, **{field: r1[field]})), value_ctx())


def test_swap_between_records_in_domain_scope(registry, keyring: Keyring) -> None:
    schema = avsc("customer_event.avsc")
    schema["fields"][0].pop("confluent:tags")  # no data subject: one key for the whole subject
    ser = AvroSerializer(registry, json.dumps(schema), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    w = Wire(registry)
    one, two = ser(customer(1), value_ctx()), ser(customer(2), value_ctx())
    r1, r2 = w.read(one), w.read(two)
    for field in TAGGED:
        with pytest.raises(DecryptionError):
            de(w.write(two, dict(r2, **{field: r1[field]})), value_ctx())


def test_swap_between_persons(setup) -> None:
    ser, de, w = setup
    alice = w.read(ser(customer(1), value_ctx()))
    bob_bytes = ser(customer(2), value_ctx())
    bob = w.read(bob_bytes)
    # Bob's record carrying Alice's ciphertexts, and Alice's record relabelled as Bob's
    with pytest.raises(DecryptionError):
        de(w.write(bob_bytes, dict(bob, email=alice["email"])), value_ctx())
    with pytest.raises(DecryptionError):
        de(w.write(bob_bytes, dict(alice, customerId=bob["customerId"])), value_ctx())


def test_swap_between_subjects(registry, keyring: Keyring) -> None:
    schema = load_schema("customer_event.avsc")
    ser = AvroSerializer(registry, schema, keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    w = Wire(registry)
    from_a = ser(customer(1), value_ctx("topic-a"))
    ser(customer(1), value_ctx("topic-b"))
    # the same bytes presented as a record of another subject: wrong domain
    with pytest.raises(DecryptionError):
        de(from_a, value_ctx("topic-b"))
    rec_b_bytes = ser(customer(1), value_ctx("topic-b"))
    rec_a, rec_b = w.read(from_a, "topic-a"), w.read(rec_b_bytes, "topic-b")
    with pytest.raises(DecryptionError):
        de(w.write(rec_b_bytes, dict(rec_b, email=rec_a["email"])), value_ctx("topic-b"))
    assert de(from_a, value_ctx("topic-a")) == customer(1)


def test_array_slots_are_bound(registry, keyring: Keyring) -> None:
    from conftest import order

    ser = AvroSerializer(registry, load_schema("order.avsc"), keyring=keyring)
    de = AvroDeserializer(registry, keyring=keyring)
    w = Wire(registry, "order.avsc")
    data = ser(order(1), value_ctx())
    rec = w.read(data)
    prev = rec["previousAddresses"]
    swapped = dict(rec, previousAddresses=[prev[1], prev[0]])
    with pytest.raises(DecryptionError):
        de(w.write(data, swapped), value_ctx())
    contacts = rec["contacts"]
    moved = dict(rec, contacts={"work": contacts["home"], "home": contacts["work"]})
    with pytest.raises(DecryptionError):
        de(w.write(data, moved), value_ctx())


def test_only_the_written_spelling_of_a_text_ciphertext_reads(setup) -> None:
    """An attacker re-spells a string ciphertext: the last base64 character changed only in bits that carry no data,
    `=` padding added (one or two), whitespace or a newline around it. Each spelling decodes to the same bytes
    under a lenient base64 decoder; every one must be a DecryptionError, and the written text must still read."""
    import binascii

    ser, de, w = setup
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    tried = 0
    for n in range(1, 7):  # several records: ciphertext lengths of every residue mod 3
        data = ser(dict(customer(n), fullName="x" * n), value_ctx())
        rec = w.read(data)
        for field in TAGGED:
            text = rec[field]
            blob = binascii.a2b_base64(text + "=" * (-len(text) % 4))
            spellings = {text + "=", text + "==", text + "===", text + "\n", " " + text, text + " "}
            last = b64.index(text[-1])
            spellings |= {text[:-1] + b64[(last & ~0x0F) | low] for low in range(16)}
            spellings |= {text[:-1] + b64[(last & ~0x03) | low] for low in range(4)}
            spellings.discard(text)
            for alt in spellings:
                try:
                    same = binascii.a2b_base64(alt + "=" * (-len(alt.strip()) % 4)) == blob
                except binascii.Error:
                    same = False
                if not same:
                    continue  # a different byte string: covered by the bit-flip test
                tried += 1
                with pytest.raises(DecryptionError):
                    de(w.write(data, dict(rec, **{field: alt})), value_ctx())
            assert de(w.write(data, rec), value_ctx())[field] is not None
    assert tried > 30  # the attack really produced same-bytes spellings
