"""Value detectors: does a text hold personal data of a known shape (an email address, a phone number, a card
number...)? ``fieldcrypt scan`` runs them over the untagged text of every record; they are plain functions of a
string, usable anywhere.

    from fieldcrypt import detectors

    detectors.get_detector("iban").find("pay to DE89 3704 0044 0532 0130 00")   # 1 (found once)
    [d.name for d in detectors.default_detectors()]                              # what scan runs by default

    detectors.register_detector(detectors.Detector(
        "employee_id", "ACME employee numbers (E- and six digits)",
        lambda text: len(re.findall(r"\\bE-\\d{6}\\b", text)),
    ))

A :class:`Detector` has a ``name``, a one-line ``description`` and ``find(text) -> int``: how many occurrences the
text holds (0: none). Detectors never return or keep what they found, so nothing that uses them can print it.

Where detectors come from (:func:`available_detectors`): the built-in ones below, then plugins (entry points of
the group ``fieldcrypt.detectors``, each a :class:`Detector`, a list of them, or a function returning either),
then those given to :func:`register_detector` in this process. ``fieldcrypt scan --detector module:attribute``
loads one more the same way (:func:`load_detector`).

Built-in detectors (every number is checked the way its issuer defines it, so a random digit string rarely
passes; ``docs/scan.md`` lists the false-positive rates measured by ``bench/bench_detectors.py``):

==============  =======================================================================================
email           ``local@domain.tld``: RFC 5322 "dot-atom" local part, domain labels, an alphabetic (or
                ``xn--``) top-level domain that is not a file extension (``icon@2x.png`` is not an address)
phone           international ``+CC ...`` numbers (8 to 15 digits, E.164), national numbers written with a
                trunk ``0`` or an ``(area code)`` and separators (9 to 12 digits), North-American
                ``(212) 555-0123`` / ``212-555-0123``, and bare mobile numbers of a few countries (``07...`` UK,
                ``015...``-``017...`` DE); never a bare digit run otherwise (timestamps, amounts and order
                numbers are digit runs)
payment_card    13 to 19 digits (contiguous, or in the groups cards are printed in), an issuer prefix
                (IIN) of Visa, Mastercard, American Express, Discover, JCB, Diners, UnionPay or Maestro with
                a length that issuer uses, and the Luhn check digit
iban            country code, check digits and the account number, the length the IBAN registry gives
                for that country, and the ISO 7064 mod-97 checksum
us_ssn          US Social Security numbers ``AAA-GG-SSSS`` (dashes or spaces), without the ranges never
                issued (area 000, 666, 900-999; group 00; serial 0000) and known published numbers
uk_nino         UK National Insurance numbers ``AB 12 34 56 C``: the prefix letters HMRC allocates (not D,
                F, I, Q, U, V; second letter not O; not BG, GB, NK, KN, TN, NT, ZZ), suffix A to D
es_dni          Spanish DNI (8 digits and the check letter) and NIE (X, Y or Z, 7 digits, check letter)
fr_nir          French social security numbers (NIR): sex, year, month, department (2A/2B for Corsica),
                commune, order, and the 2-digit key (97 - number mod 97)
ip_address      public IPv4 and IPv6 addresses (``ipaddress``'s ``is_global``): private, loopback,
                link-local, shared and documentation ranges are not personal data of anyone
nl_bsn          (not in the default set) Dutch citizen service numbers: 9 digits passing the "11-proof";
                one random 9-digit number in 11 passes it, so it is only useful where 9-digit numbers are
                rare: choose it with ``--detectors default,nl_bsn``
==============  =======================================================================================
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import import_module, metadata

from fieldcrypt.errors import ConfigurationError

__all__ = [
    "BUILTIN_DETECTORS",
    "ENTRY_POINT_GROUP",
    "IBAN_LENGTHS",
    "Detector",
    "available_detectors",
    "bsn_ok",
    "default_detectors",
    "dni_ok",
    "get_detector",
    "iban_ok",
    "load_detector",
    "luhn_ok",
    "nir_ok",
    "register_detector",
    "select_detectors",
]

#: the entry-point group plugins add detectors through
ENTRY_POINT_GROUP = "fieldcrypt.detectors"

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class Detector:
    """One kind of personal data. ``find(text)`` returns how many occurrences ``text`` holds (0: none); it must
    not keep or log what it found. ``default``: part of the set ``fieldcrypt scan`` runs when no
    ``--detectors`` are chosen."""

    name: str
    description: str
    find: Callable[[str], int]
    default: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"a detector name must be lowercase letters, digits and underscores, starting with a letter: "
                f"{self.name!r}"
            )
        if not callable(self.find):
            raise ConfigurationError(f"detector {self.name!r}: find must be a function of a string")

    def __repr__(self) -> str:
        return f"Detector({self.name!r})"


# -- email ------------------------------------------------------------------------------------------------------

_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_EMAIL = re.compile(
    rf"(?<![\w!#$%&'*+/=?^`{{|}}~.-]){_ATOM}(?:\.{_ATOM})*@((?:{_LABEL}\.)+(?:[^\W\d_]{{2,63}}|xn--[a-z0-9-]{{1,59}}))"
    r"(?![\w-]|\.[^\W_])",
    re.IGNORECASE,
)
#: "top-level domains" that are file extensions in names like icon@2x.png (none is a delegated TLD but .zip/.mov,
#: which are far more often file names than mail domains)
_FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff pdf zip gz tgz mov mp3 mp4 avi css js json xml html htm txt csv "
    "log yaml yml toml ini cfg conf md rst py java class jar war so dll exe bin dat".split()
)


def _email(text: str) -> int:
    if "@" not in text:
        return 0
    found = 0
    for m in _EMAIL.finditer(text):
        local, _, domain = m.group(0).rpartition("@")
        if len(local) > 64 or len(domain) > 253:
            continue
        if domain.rsplit(".", 1)[-1].lower() in _FILE_EXTENSIONS:
            continue
        found += 1
    return found


# -- phone ------------------------------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9](?:[ .-]?(?:\(\d{1,4}\)|\d)){5,20}(?!\w|[.,:/-]\d)")
_PHONE_NATIONAL = re.compile(
    r"(?<![\w.,:/+-])(?<!\d )(?:\(0?[1-9]\d{1,4}\) ?|0[1-9]\d{0,3}[ .\-/])\d{2,8}(?:[ .-]\d{2,8}){0,3}"
    r"(?!\w|[.,:/-]\d| \d)"
)
_PHONE_NANP = re.compile(r"(?<![\w.+-])(?:\(([2-9]\d\d)\) ?|([2-9]\d\d)([-.]))[2-9]\d\d[-.]\d{4}(?!\w|[-.]\d)")
_PHONE_MOBILE = re.compile(r"(?<![\w.,+-])(?:07[1-9]\d{8}|01[5-7]\d{8,9})(?!\w|[.,-]\d)")
_DATE_LIKE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2}")


def _phone(text: str) -> int:
    if len(text) < 7:
        return 0
    found = 0
    spans: list[tuple[int, int]] = []
    for m in _PHONE_INTL.finditer(text):
        if 8 <= len(_DIGIT.findall(m.group(0))) <= 15:
            found += 1
            spans.append(m.span())
    for m in _PHONE_NANP.finditer(text):
        if not _inside(m.span(), spans):
            found += 1
            spans.append(m.span())
    for m in _PHONE_NATIONAL.finditer(text):
        if _inside(m.span(), spans) or _DATE_LIKE.fullmatch(m.group(0)):
            continue
        if 9 <= len(_DIGIT.findall(m.group(0))) <= 12:
            found += 1
            spans.append(m.span())
    for m in _PHONE_MOBILE.finditer(text):
        if not _inside(m.span(), spans):
            found += 1
    return found


def _inside(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in spans)


# -- payment cards ----------------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){11,18}(?!\w|[.,-]\d)")
#: the groups cards are printed in, by length (contiguous digits are always accepted)
_CARD_GROUPS = {
    14: ((4, 6, 4),),
    15: ((4, 6, 5),),
    16: ((4, 4, 4, 4),),
    17: ((4, 4, 4, 5),),
    18: ((4, 4, 4, 6),),
    19: ((4, 4, 4, 4, 3), (6, 13)),
}


def _card_brand_ok(digits: str) -> bool:
    n = len(digits)
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":  # Visa (13-digit numbers are no longer issued, and EAN-13 barcodes starting 40-49 pass Luhn)
        return n in (16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:  # Discover
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 == 62:  # UnionPay
        return 16 <= n <= 19
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):  # Maestro
        return 12 <= n <= 19
    return False


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string, as card numbers carry it."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(text: str) -> int:
    found = 0
    for m in _CARD.finditer(text):
        raw = m.group(0)
        digits = raw.replace(" ", "").replace("-", "")
        if not 12 <= len(digits) <= 19:
            continue
        if digits != raw:
            seps = {c for c in raw if not c.isdigit()}
            if len(seps) != 1:
                continue
            groups = tuple(len(g) for g in raw.split(seps.pop()))
            if groups not in _CARD_GROUPS.get(len(digits), ()):
                continue
        if _card_brand_ok(digits) and luhn_ok(digits):
            found += 1
    return found


# -- IBAN -------------------------------------------------------------------------------------------------------

#: IBAN lengths by country (SWIFT IBAN registry)
IBAN_LENGTHS: dict[str, int] = {
    **dict.fromkeys(("NO",), 15),
    **dict.fromkeys(("BE",), 16),
    **dict.fromkeys(("DK", "FI", "FK", "FO", "GL", "NL", "SD"), 18),
    **dict.fromkeys(("MK", "SI"), 19),
    **dict.fromkeys(("AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"), 20),
    **dict.fromkeys(("CH", "HR", "LI", "LV"), 21),
    **dict.fromkeys(("BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"), 22),
    **dict.fromkeys(("AE", "GI", "IL", "IQ", "OM", "SO", "TL"), 23),
    **dict.fromkeys(("AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"), 24),
    **dict.fromkeys(("LY", "PT", "ST"), 25),
    **dict.fromkeys(("IS", "TR"), 26),
    **dict.fromkeys(("BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"), 27),
    **dict.fromkeys(("AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "NI", "PL", "SV"), 28),
    **dict.fromkeys(("BR", "EG", "PS", "QA", "UA"), 29),
    **dict.fromkeys(("JO", "KW", "MU", "YE"), 30),
    **dict.fromkeys(("MT", "SC"), 31),
    **dict.fromkeys(("LC",), 32),
    **dict.fromkeys(("RU",), 33),
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])")


def iban_ok(iban: str) -> bool:
    """Whether ``iban`` (without spaces) has its country's length and a valid mod-97 checksum."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban(text: str) -> int:
    found = 0
    for m in _IBAN.finditer(text):
        raw = m.group(0)
        compact = raw.replace(" ", "")
        length = IBAN_LENGTHS.get(compact[:2].upper())
        if length is None or len(compact) < length:
            continue
        if len(compact) > length:  # the pattern ran on into the next word ("... 3000 from"): cut at a space
            seen, cut = 0, len(raw)
            for i, c in enumerate(raw):
                if c != " ":
                    seen += 1
                    if seen == length:
                        cut = i + 1
                        break
            if cut >= len(raw) or raw[cut] != " ":
                continue
            compact = compact[:length]
        if iban_ok(compact):
            found += 1
    return found


# -- national identifiers ---------------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w]|-\d)")
_SSN_PUBLISHED = frozenset({"078051120", "219099999", "123456789"})  # Woolworth's wallet card, SSA ads, "123-45-6789"


def _us_ssn(text: str) -> int:
    return sum(1 for m in _SSN.finditer(text) if re.sub(r"\D", "", m.group(0)) not in _SSN_PUBLISHED)


_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"( ?)\d{2}\1\d{2}\1\d{2}\1[A-D](?![A-Za-z0-9])"
)


def _uk_nino(text: str) -> int:
    return len(_NINO.findall(text))


_DNI = re.compile(r"(?<![A-Za-z0-9])([XYZ]?)-?(\d{7,8})-?([A-Z])(?![A-Za-z0-9])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_ok(number: str, letter: str, nie_prefix: str = "") -> bool:
    """The check letter of a Spanish DNI (8 digits) or NIE (X/Y/Z and 7 digits)."""
    if nie_prefix:
        if len(number) != 7:
            return False
        number = str("XYZ".index(nie_prefix)) + number
    elif len(number) != 8:
        return False
    return _DNI_LETTERS[int(number) % 23] == letter


def _es_dni(text: str) -> int:
    return sum(1 for m in _DNI.finditer(text) if dni_ok(m.group(2), m.group(3), m.group(1)))


_NIR = re.compile(
    r"(?<![\w])([12])( ?)(\d{2})\2(0[1-9]|1[0-2]|[2-9]\d)\2(\d{2}|2[AB])\2(\d{3})\2(\d{3})\2(\d{2})(?![\w])"
)


def nir_ok(number13: str, key: str) -> bool:
    """The key of a French NIR: 97 - (its 13 characters mod 97), Corsica's department 2A/2B counted as 19/18."""
    number = number13.upper()
    corsica = {"2A": "19", "2B": "18"}.get(number[5:7])
    if corsica is not None:
        number = number[:5] + corsica + number[7:]
    if len(number) != 13 or not number.isdigit() or not key.isdigit():
        return False
    return 97 - int(number) % 97 == int(key)


def _fr_nir(text: str) -> int:
    found = 0
    for m in _NIR.finditer(text):
        sex, _, year, month, dept, commune, order, key = m.groups()
        if order == "000" or commune == "000":
            continue
        if nir_ok(sex + year + month + dept + commune + order, key):
            found += 1
    return found


_BSN = re.compile(r"(?<![\w.,-])\d{9}(?!\w|[.,-]\d)")


def bsn_ok(digits: str) -> bool:
    """The Dutch "11-proof" of a 9-digit BSN: 9·d1 + 8·d2 + ... + 2·d8 - d9 is a multiple of 11 (not all zeros)."""
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - int(digits[8])
    return total % 11 == 0


def _nl_bsn(text: str) -> int:
    return sum(1 for m in _BSN.finditer(text) if bsn_ok(m.group(0)))


# -- IP addresses -----------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")


def _ip(text: str) -> int:
    found = 0
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                if ipaddress.IPv4Address(m.group(0)).is_global:
                    found += 1
            except ValueError:
                continue
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            try:
                address = ipaddress.IPv6Address(m.group(0))
            except ValueError:
                continue
            if address.is_global and address.ipv4_mapped is None:
                found += 1
    return found


#: the detectors fieldcrypt ships, in the order scan reports them
BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector("email", "email addresses (local@domain.tld)", _email),
    Detector("phone", "phone numbers: international +CC, national with trunk 0 or area code, NANP", _phone),
    Detector("payment_card", "payment card numbers: issuer prefix, length and Luhn check", _card),
    Detector("iban", "IBANs: country length and mod-97 checksum", _iban),
    Detector("us_ssn", "US Social Security numbers (issued ranges only)", _us_ssn),
    Detector("uk_nino", "UK National Insurance numbers (allocated prefixes)", _uk_nino),
    Detector("es_dni", "Spanish DNI and NIE numbers with their check letter", _es_dni),
    Detector("fr_nir", "French social security numbers (NIR) with their key", _fr_nir),
    Detector("ip_address", "public IPv4 and IPv6 addresses", _ip),
    Detector("nl_bsn", "Dutch citizen service numbers (BSN, 11-proof)", _nl_bsn, default=False),
)

_registered: dict[str, Detector] = {}


def register_detector(detector: Detector, *, replace: bool = False) -> None:
    """Add a detector for this process (``fieldcrypt scan`` and :func:`select_detectors` then know it). A name that
    is taken (built-in, plugin or registered) is a :class:`~fieldcrypt.errors.ConfigurationError` unless
    ``replace``."""
    if not isinstance(detector, Detector):
        raise ConfigurationError("register_detector takes a fieldcrypt.detectors.Detector")
    if not replace and detector.name in {d.name for d in available_detectors()}:
        raise ConfigurationError(f"a detector named {detector.name!r} exists already (pass replace=True)")
    _registered[detector.name] = detector


def _as_detectors(obj: object, where: str) -> list[Detector]:
    if isinstance(obj, Detector):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(d, Detector) for d in obj):
        return list(obj)
    if callable(obj):
        try:
            made = obj()
        except TypeError as exc:
            raise ConfigurationError(
                f"{where} must be a Detector, a list of Detectors, or a function of no arguments returning them"
            ) from exc
        if isinstance(made, Detector) or (
            isinstance(made, (list, tuple)) and made and all(isinstance(d, Detector) for d in made)
        ):
            return _as_detectors(made, where)
    raise ConfigurationError(
        f"{where} must be a Detector, a list of Detectors, or a function of no arguments returning them"
    )


def _plugins() -> list[Detector]:
    found: list[Detector] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"the detector plugin {ep.name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}"
            ) from exc
        found += _as_detectors(loaded, f"the detector plugin {ep.name!r} ({ep.value})")
    return found


def available_detectors() -> list[Detector]:
    """Every detector known to this process: built-in, plugins, registered (a later one replaces an earlier one of
    the same name)."""
    by_name = {d.name: d for d in BUILTIN_DETECTORS}
    for d in _plugins():
        by_name[d.name] = d
    by_name.update(_registered)
    return list(by_name.values())


def default_detectors() -> list[Detector]:
    """The detectors ``fieldcrypt scan`` runs when none are chosen (every available one with ``default``)."""
    return [d for d in available_detectors() if d.default]


def get_detector(name: str) -> Detector:
    """The available detector named ``name``; an unknown name is a ConfigurationError listing the known ones."""
    for d in available_detectors():
        if d.name == name:
            return d
    known = ", ".join(d.name for d in available_detectors())
    raise ConfigurationError(f"no detector named {name!r}; known: {known}")


def select_detectors(names: str | Sequence[str] | None, extra: Iterable[Detector] = ()) -> list[Detector]:
    """The detectors a list of names chooses (``"email,iban"``, or a sequence): ``default`` stands for the default
    set, ``all`` for every available one. ``None`` or empty: the default set. ``extra`` detectors (``--detector``
    module:attribute) are added; each detector appears once."""
    extra = list(extra)
    known = {d.name: d for d in [*available_detectors(), *extra]}
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    chosen: list[Detector] = []
    words = [n for n in (names or []) if n]
    if names is not None and not words and list(names):
        raise ConfigurationError("--detectors names no detector")
    if not words:
        chosen = default_detectors()
    for word in words:
        if word == "default":
            chosen += default_detectors()
        elif word == "all":
            chosen += list(known.values())
        elif word in known:
            chosen.append(known[word])
        else:
            raise ConfigurationError(f"no detector named {word!r}; known: {', '.join(known)}")
    chosen += extra
    out: dict[str, Detector] = {}
    for d in chosen:
        out.setdefault(d.name, known.get(d.name, d))
    return list(out.values())


def load_detector(spec: str) -> list[Detector]:
    """The detectors named by ``module:attribute`` (``--detector``): the attribute is a :class:`Detector`, a list of
    them, or a function of no arguments returning either. The module is imported (it runs code: name only
    modules you trust)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name.strip() or not attribute.strip():
        raise ConfigurationError(f"--detector expects module:attribute, got {spec!r}")
    try:
        module = import_module(module_name.strip())
    except ImportError as exc:
        raise ConfigurationError(f"--detector {spec!r}: module {module_name!r} cannot be imported ({exc})") from None
    obj: object = module
    for part in attribute.strip().split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"--detector {spec!r}: {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return _as_detectors(obj, f"--detector {spec!r}")
