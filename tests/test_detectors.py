"""The value detectors (fieldcrypt.detectors) on fixed examples: what each must find, what it must not, and the
registry of detectors (built-in, registered, loaded by module:attribute). False-positive rates are measured by
bench/bench_detectors.py, not asserted here."""

from __future__ import annotations

import pytest

import fieldcrypt.inspect.detectors
from fieldcrypt import detectors
from fieldcrypt.detectors import (
    Detector,
    bsn_ok,
    dni_ok,
    get_detector,
    iban_ok,
    load_detector,
    luhn_ok,
    nir_ok,
    register_detector,
    select_detectors,
)
from fieldcrypt.errors import ConfigurationError

#: a plugin for tests/test_scan.py (--detector test_detectors:GOLD_DETECTOR)
GOLD_DETECTOR = Detector("gold_tier", "the word gold (a test plugin)", lambda text: text.count("gold"))

FOUND = {
    "email": ["jane.doe@example.com", "mail: max+shop@firma-gmbh.de.", "zoë@bücher.de", "a@b.co.uk, b@c.io"],
    "phone": [
        "+49 30 1234567",
        "+1 (212) 555-0123",
        "+33 6 12 34 56 78",
        "030 1234567",
        "(030) 1234567",
        "01 23 45 67 89",
        "020 7946 0958",
        "(212) 555-0123",
        "212-555-0123",
        "07700900123",
        "call 01701234567 now",
        "Tel. 030 1234567, Fax 030 1234568",
    ],
    "payment_card": [
        "4111111111111111",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
    ],
    "iban": [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "pay nl91abna0417164300",
    ],
    "us_ssn": ["536-90-4399", "001 45 6789"],
    "uk_nino": ["AB123456C", "JG 10 37 59 A"],
    "es_dni": ["12345678Z", "X1234567L", "Y-1234567-X"],
    "fr_nir": ["1 85 05 78 006 084 91", "185057800608491", f"2 69 05 2A 123 456 {97 - 2690519123456 % 97:02d}"],
    "ip_address": ["8.8.8.8", "from 81.2.69.160:443", "2001:4860:4860::8888", "[2a00:1450:4001:82b::200e]"],
    "nl_bsn": ["111222333", "bsn 123456782"],
}
NOT_FOUND = {
    "email": ["icon@2x.png", "user@localhost", "@handle", "a@b", "name at example dot com"],
    "phone": [
        "2024-03-15",
        "1710498600",
        "1710498600000",
        "12.03.2024",
        "01.02.2024 10:30",
        "1,234,567.89",
        "+05:30",
        "0001234567",
        "000-123-456",
        "v1.2.3",
        "ORD-2024-000123",
        "10:30:00",
        "DE89 3704 0044 0532 0130 00",
    ],
    "payment_card": ["4111111111111112", "1234567890123456", "1710498600000", "4006381333931", "4111 11111 1111 111"],
    "iban": ["DE89370400440532013001", "DE8937040044053201300", "XX89370400440532013000", "ORDER-12345678"],
    "us_ssn": [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45-6789",
        "078-05-1120",
        "536-90 4399",
        "536904399",
    ],
    "uk_nino": ["QQ123456C", "BG123456A", "AB123456E", "DA123456A", "AO123456A"],
    "es_dni": ["12345678A", "1234567Z", "W1234567L"],
    "fr_nir": ["1 85 05 78 006 084 90", "3 85 05 78 006 084 91", "1 85 13 78 006 084 91"],
    "ip_address": [
        "10.0.0.1",
        "192.168.1.20",
        "127.0.0.1",
        "192.0.2.4",
        "256.1.1.1",
        "01.2.3.4",
        "2001:db8::1",
        "::1",
        "fe80::1",
        "12:34:56",
        "00:1a:2b:3c:4d:5e",
        "10.0.19041.1",
    ],
    "nl_bsn": ["123456789", "000000000", "1112223334"],
}


@pytest.mark.parametrize("name,text", [(n, t) for n, texts in FOUND.items() for t in texts])
def test_detector_finds(name: str, text: str) -> None:
    assert get_detector(name).find(text) >= 1, (name, text)


@pytest.mark.parametrize("name,text", [(n, t) for n, texts in NOT_FOUND.items() for t in texts])
def test_detector_does_not_find(name: str, text: str) -> None:
    assert get_detector(name).find(text) == 0, (name, text)


def test_counts_every_occurrence() -> None:
    assert get_detector("email").find("a@example.com b@example.org c@example.net") == 3
    assert get_detector("iban").find("DE89370400440532013000 then GB82 WEST 1234 5698 7654 32 end") == 2


def test_checksums() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # one character short for GB
    assert dni_ok("12345678", "Z") and dni_ok("1234567", "L", "X") and not dni_ok("12345678", "A")
    assert nir_ok("1850578006084", "91") and not nir_ok("1850578006084", "92")
    assert nir_ok("269052A123456", f"{97 - 2690519123456 % 97:02d}")
    assert bsn_ok("111222333") and not bsn_ok("111222334")


def test_no_built_in_detector_finds_anything_in_fieldcrypt_ciphertext() -> None:
    import random

    from fieldcrypt.crypto import wire as _wire

    rng = random.Random(7)
    for _ in range(500):
        blob = b"\x01" + rng.randbytes(4) + b"\x00" + rng.randbytes(12 + 16 + rng.randint(1, 40))
        text = _wire.encode_text(blob)
        assert not any(d.find(text) for d in detectors.BUILTIN_DETECTORS), text


def test_default_set_and_selection() -> None:
    names = [d.name for d in detectors.default_detectors()]
    assert "nl_bsn" not in names and names[:4] == ["email", "phone", "payment_card", "iban"]
    assert [d.name for d in select_detectors("email, iban")] == ["email", "iban"]
    assert [d.name for d in select_detectors("default,nl_bsn")][-1] == "nl_bsn"
    assert {d.name for d in select_detectors("all")} >= {"nl_bsn", "email"}
    assert select_detectors(None) == detectors.default_detectors()
    with pytest.raises(ConfigurationError, match="no detector named 'emial'; known: email"):
        select_detectors("emial")
    with pytest.raises(ConfigurationError, match="names no detector"):
        select_detectors(",")


def test_register_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fieldcrypt.inspect.detectors, "_registered", {})
    custom = Detector("employee_id", "ACME employee ids", lambda text: text.count("E-"), default=False)
    register_detector(custom)
    assert get_detector("employee_id") is custom and custom not in detectors.default_detectors()
    with pytest.raises(ConfigurationError, match="exists already"):
        register_detector(Detector("email", "mine", lambda text: 0))
    register_detector(Detector("email", "mine", lambda text: 0), replace=True)
    assert get_detector("email").description == "mine"
    assert load_detector("test_detectors:GOLD_DETECTOR") == [GOLD_DETECTOR]
    assert load_detector("test_detectors:_factory") == [GOLD_DETECTOR, custom]
    for spec, message in [
        ("nocolon", "module:attribute"),
        ("no_such_module_x:thing", "cannot be imported"),
        ("test_detectors:missing", "has no attribute"),
        ("test_detectors:NOT_FOUND", "must be a Detector"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            load_detector(spec)
    with pytest.raises(ConfigurationError, match="lowercase"):
        Detector("Bad Name", "x", lambda text: 0)


def _factory() -> list[Detector]:
    return [GOLD_DETECTOR, get_detector("employee_id")]
