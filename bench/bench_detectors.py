"""False and true positives of fieldcrypt's value detectors (``fieldcrypt.detectors``), on generated data.

    python bench/bench_detectors.py [--n 5000] [--seed 20261123] [--detectors all]

Generates, deterministically (one seeded random generator), --n values of each kind of data that is *not*
personal data (UUIDs, words and sentences, product codes, timestamps, dates, amounts, order numbers, numeric ids,
EAN-13 barcodes, base64, fieldcrypt ciphertexts, URLs, version strings, user agents, log lines, private IP
addresses...), runs every detector on every value, and prints, as Markdown tables (pasted into docs/scan.md):

1. each detector's false-positive rate over all non-personal values, and its worst generator;
2. the rate per generator and detector (only the cells that are not 0);
3. each detector's true-positive rate on generated valid personal data of its kind (bare, and inside a sentence);
4. the throughput of each detector (values per second; machine-dependent).

A value counts once per detector however many matches it holds.
"""

from __future__ import annotations

import argparse
import base64
import random
import string
import sys
import time
import uuid
from collections.abc import Callable

from fieldcrypt.detectors import Detector, luhn_ok, select_detectors

Gen = Callable[[random.Random], str]

WORDS = (
    "order shipment invoice customer account balance transfer product review delivery status pending complete "
    "warehouse region north south east west priority standard express return refund discount coupon basket "
    "session login logout click view page search filter sort export import batch job worker queue retry timeout "
    "error warning info debug metric counter gauge latency throughput region zone cluster node replica leader "
    "green blue red yellow small medium large extra quantity price total tax net gross currency euro dollar "
    "monday tuesday friday january march october spring summer winter alpha beta gamma delta omega version"
).split()
TLDS = ("com", "org", "net", "de", "fr", "co.uk", "io", "nl", "es")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1970, 2030), rng.randint(1, 12), rng.randint(1, 28)


# -- data that is not personal data --------------------------------------------------------------------------------


def g_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def g_hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(rng.choice((32, 64, 128, 160))):x}"


def g_words(rng: random.Random) -> str:
    return _words(rng, 1, 12)


def g_sentence(rng: random.Random) -> str:
    y, m, d = _date(rng)
    return rng.choice(
        (
            f"Order {rng.randint(1000, 99999999)} shipped in {rng.randint(1, 9)} boxes on {y}-{m:02d}-{d:02d}",
            f"{rng.randint(2, 500)} items at {rng.randint(1, 999)}.{rng.randint(0, 99):02d} EUR, {_words(rng, 2, 6)}",
            f"batch {rng.randint(1, 10**6)} took {rng.random() * 100:.3f} s for {rng.randint(1, 10**7)} records",
            f"{_words(rng, 3, 8)} ({rng.randint(1, 100)}%) since {d:02d}.{m:02d}.{y}",
            f"ticket #{rng.randint(1, 10**6)}: {_words(rng, 4, 10)}",
        )
    )


def g_product_code(rng: random.Random) -> str:
    return rng.choice(
        (
            f"SKU-{_digits(rng, rng.randint(4, 10))}",
            f"{_alnum(rng, 2, string.ascii_uppercase)}-{_digits(rng, 4)}-{_alnum(rng, 2, string.ascii_uppercase)}",
            f"PRD{_digits(rng, 8)}",
            f"{_alnum(rng, 2, string.ascii_uppercase)}{_digits(rng, 6)}{rng.choice('ABCDEFGH')}",
            f"{_alnum(rng, 3, string.ascii_uppercase)}/{_digits(rng, 5)}/{_alnum(rng, 2)}",
            _alnum(rng, rng.randint(8, 20)),
        )
    )


def g_timestamp(rng: random.Random) -> str:
    y, m, d = _date(rng)
    hh, mm, ss = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice(
        (
            f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{rng.randint(0, 999):03d}Z",
            f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}+{rng.randint(0, 12):02d}:{rng.choice((0, 30)):02d}",
            f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}",
            f"{d:02d}.{m:02d}.{y} {hh:02d}:{mm:02d}",
            f"{m:02d}/{d:02d}/{y} {hh % 12 + 1}:{mm:02d} {rng.choice(('AM', 'PM'))}",
            str(rng.randint(0, 2_000_000_000)),
            str(rng.randint(1_500_000_000_000, 1_900_000_000_000)),
            str(rng.randint(1_500_000_000_000_000, 1_900_000_000_000_000)),
        )
    )


def g_date(rng: random.Random) -> str:
    y, m, d = _date(rng)
    return rng.choice(
        (
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}.{m:02d}.{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}-{m:02d}-{y}",
            f"{y}{m:02d}{d:02d}",
        )
    )


def g_amount(rng: random.Random) -> str:
    v = rng.random() * 10 ** rng.randint(0, 9)
    return rng.choice(
        (
            f"{v:,.2f}",
            f"EUR {v:.2f}",
            f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " €",
            f"-{v:.2f}",
            f"${v:,.2f}",
            f"{v:.6f}",
            f"{int(v)}",
            f"{v:.2f} {rng.choice(('USD', 'GBP', 'CHF', 'JPY'))}",
        )
    )


def g_order_number(rng: random.Random) -> str:
    return rng.choice(
        (
            f"ORD-{rng.randint(2000, 2030)}-{rng.randint(0, 999999):06d}",
            f"{rng.randint(0, 10**9):010d}",
            f"{rng.randint(0, 10**11):012d}",
            f"INV/{rng.randint(2000, 2030)}/{rng.randint(1, 99999):05d}",
            f"{_digits(rng, 3)}-{_digits(rng, 7)}-{_digits(rng, 7)}",
            f"PO {_digits(rng, 4)} {_digits(rng, 4)}",
        )
    )


def g_numeric_id(rng: random.Random) -> str:
    return str(rng.randint(1, 9)) + _digits(rng, rng.randint(5, 18))


def _ean13(rng: random.Random, prefix: str) -> str:
    body = prefix + _digits(rng, 12 - len(prefix))
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body))
    return body + str((10 - total % 10) % 10)


def g_ean13(rng: random.Random) -> str:
    return _ean13(rng, rng.choice(("400", "401", "4006381", "50", "54", "76", "80", "87", "978", "979", "30", "84")))


def g_base64(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(rng.randint(6, 96))).decode()


def g_ciphertext(rng: random.Random) -> str:
    blob = b"\x01" + rng.randbytes(4) + b"\x00" + rng.randbytes(12) + rng.randbytes(rng.randint(1, 60) + 16)
    return base64.b64encode(blob).decode().rstrip("=")


def g_url(rng: random.Random) -> str:
    host = rng.choice(("shop.example.com", "api.internal", "cdn.example.net", "10.2.3.4:8080", "localhost:3000"))
    return f"https://{host}/{rng.choice(WORDS)}/{rng.randint(1, 10**6)}?ref={_alnum(rng, 8)}&page={rng.randint(1, 50)}"


def g_version(rng: random.Random) -> str:
    a, b, c, d = rng.randint(0, 20), rng.randint(0, 40), rng.randint(0, 200), rng.randint(0, 30000)
    return rng.choice(
        (f"{a}.{b}.{c}", f"v{a}.{b}.{c}-rc.{rng.randint(1, 9)}", f"{a}.{b}", f"{a}.{b}.{c}.{d}", f"^{a}.{b}")
    )


def g_user_agent(rng: random.Random) -> str:
    return (
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{rng.randint(90, 130)}.0.{rng.randint(4000, 6999)}.{rng.randint(1, 250)} Safari/537.36"
    )


def g_log_line(rng: random.Random) -> str:
    y, m, d = _date(rng)
    return (
        f"{y}-{m:02d}-{d:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d},"
        f"{rng.randint(0, 999):03d} {rng.choice(('INFO', 'WARN', 'ERROR'))} [worker-{rng.randint(1, 64)}] "
        f"{_words(rng, 2, 6)} {rng.randint(1, 10**5)} in {rng.random():.3f}s pid={rng.randint(100, 65535)}"
    )


def g_file_path(rng: random.Random) -> str:
    return rng.choice(
        (
            f"/var/log/{rng.choice(WORDS)}-{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}.log",
            f"static/img/{rng.choice(WORDS)}@{rng.randint(2, 3)}x.png",
            f"C:\\Users\\Public\\{rng.choice(WORDS)}_{rng.randint(1, 999)}.csv",
        )
    )


def g_private_network(rng: random.Random) -> str:
    return rng.choice(
        (
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "127.0.0.1",
            f"fd{rng.getrandbits(8):02x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}",
            ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6)),  # a MAC address
        )
    )


def g_coordinates(rng: random.Random) -> str:
    return f"{rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}"


def g_durations(rng: random.Random) -> str:
    h, m, s = rng.randint(0, 99), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice((f"PT{h}H{m}M", f"{h:02d}:{m:02d}:{s:02d}", f"{h}h {m}m {s}s", f"{rng.randint(1, 10**6)} ms"))


def g_tracking(rng: random.Random) -> str:
    return rng.choice(
        (f"1Z{_alnum(rng, 16)}", _digits(rng, 12), "9" + _digits(rng, 21), f"JD{_digits(rng, 18)}", _digits(rng, 20))
    )


NOT_PERSONAL: dict[str, Gen] = {
    "uuid": g_uuid,
    "hex id": g_hex_id,
    "words": g_words,
    "sentence": g_sentence,
    "product code": g_product_code,
    "timestamp": g_timestamp,
    "date": g_date,
    "amount": g_amount,
    "order number": g_order_number,
    "numeric id (6-19 digits)": g_numeric_id,
    "EAN-13 / ISBN": g_ean13,
    "base64": g_base64,
    "fieldcrypt ciphertext": g_ciphertext,
    "URL": g_url,
    "version string": g_version,
    "user agent": g_user_agent,
    "log line": g_log_line,
    "file path": g_file_path,
    "private address / MAC": g_private_network,
    "coordinates": g_coordinates,
    "duration": g_durations,
    "tracking number": g_tracking,
}

# -- personal data, one generator per detector ---------------------------------------------------------------------


def p_email(rng: random.Random) -> str:
    user = rng.choice(("jane.doe", "j_smith", "max.mustermann+shop", "o'brien", "zoë.ångström", "user"))
    return f"{user}{rng.randint(0, 999)}@{rng.choice(('mail', 'example', 'firma-gmbh', 'uni.ac'))}.{rng.choice(TLDS)}"


def p_phone(rng: random.Random) -> str:
    return rng.choice(
        (
            f"+49 30 {_digits(rng, 7)}",
            f"+49{rng.choice(('151', '160', '171'))}{_digits(rng, 8)}",
            f"+33 6 {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
            f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
            f"+1 ({rng.randint(201, 989)}) {rng.randint(200, 999)}-{_digits(rng, 4)}",
            f"030 {_digits(rng, 7)}",
            f"(0{rng.randint(20, 99)}) {_digits(rng, 7)}",
            f"01 {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
            f"020 {_digits(rng, 4)} {_digits(rng, 4)}",
            f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{_digits(rng, 4)}",
            f"07{rng.randint(1, 9)}{_digits(rng, 8)}",
            f"0{rng.choice(('151', '160', '176'))}{_digits(rng, 8)}",
        )
    )


def _with_luhn(body: str) -> str:
    for check in string.digits:
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def p_card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        (("4", 16), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)),
    )
    number = _with_luhn(prefix + _digits(rng, length - len(prefix) - 1))
    if length == 16 and rng.random() < 0.5:
        sep = rng.choice((" ", "-"))
        return sep.join(number[i : i + 4] for i in range(0, 16, 4))
    if length == 15 and rng.random() < 0.5:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    return number


def p_iban(rng: random.Random) -> str:
    country, length = rng.choice((("DE", 22), ("FR", 27), ("GB", 22), ("NL", 18), ("ES", 24), ("IT", 27), ("BE", 16)))
    if country in ("GB", "NL"):
        bban = _alnum(rng, 4, string.ascii_uppercase) + _digits(rng, length - 8)
    else:
        bban = _digits(rng, length - 4)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def p_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    sep = rng.choice(("-", " "))
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def p_nino(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    second = rng.choice(
        [c for c in "ABCEGHJKLMNPRSTWXYZ" if first + c not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")]
    )
    d = _digits(rng, 6)
    suffix = rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {suffix}"
    return f"{first}{second}{d}{suffix}"


def p_dni(rng: random.Random) -> str:
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    if rng.random() < 0.7:
        n = _digits(rng, 8)
        return f"{n}{letters[int(n) % 23]}"
    prefix = rng.choice("XYZ")
    n = _digits(rng, 7)
    return f"{prefix}{n}{letters[int(str('XYZ'.index(prefix)) + n) % 23]}"


def p_nir(rng: random.Random) -> str:
    body = (
        f"{rng.randint(1, 2)}{rng.randint(0, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 95):02d}"
        f"{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    )
    key = 97 - int(body) % 97
    if rng.random() < 0.5:
        return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:]} {key:02d}"
    return f"{body}{key:02d}"


def p_ip(rng: random.Random) -> str:
    import ipaddress

    while True:
        if rng.random() < 0.7:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(rng.getrandbits(32))
        else:
            address = ipaddress.IPv6Address((0x2000 + rng.getrandbits(12)) << 112 | rng.getrandbits(112))
        if address.is_global:
            return str(address)


def p_bsn(rng: random.Random) -> str:
    while True:
        digits = _digits(rng, 9)
        total = sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - int(digits[8])
        if total % 11 == 0 and digits != "000000000":
            return digits


PERSONAL: dict[str, Gen] = {
    "email": p_email,
    "phone": p_phone,
    "payment_card": p_card,
    "iban": p_iban,
    "us_ssn": p_ssn,
    "uk_nino": p_nino,
    "es_dni": p_dni,
    "fr_nir": p_nir,
    "ip_address": p_ip,
    "nl_bsn": p_bsn,
}
SENTENCES = ("Contact: {}, thanks", "{}", "ref {} (see ticket)", "please use {} from now on.")


def _pct(hits: int, n: int) -> str:
    if not hits:
        return "0"
    rate = 100 * hits / n
    return f"{rate:.2f}%" if rate >= 0.01 else f"{rate:.3f}%"


def measure(detectors: list[Detector], n: int, seed: int) -> None:
    rng = random.Random(seed)
    corpus = {name: [gen(rng) for _ in range(n)] for name, gen in NOT_PERSONAL.items()}
    hits = {name: {d.name: sum(1 for v in values if d.find(v)) for d in detectors} for name, values in corpus.items()}
    total = n * len(corpus)

    print(f"Non-personal data: {len(corpus)} generators x {n} values (seed {seed}).\n")
    print("| detector | false positives | worst generator |")
    print("|---|---|---|")
    for d in detectors:
        all_hits = sum(hits[g][d.name] for g in corpus)
        worst = max(corpus, key=lambda g: hits[g][d.name])
        worst_text = f"{worst} ({_pct(hits[worst][d.name], n)})" if hits[worst][d.name] else "-"
        print(f"| {d.name} | {_pct(all_hits, total)} | {worst_text} |")

    print("\nPer generator (values flagged, only where not 0):\n")
    print("| generator | " + " | ".join(d.name for d in detectors) + " |")
    print("|---|" + "---|" * len(detectors))
    for g in corpus:
        if any(hits[g].values()):
            cells = [_pct(hits[g][d.name], n) if hits[g][d.name] else "" for d in detectors]
            print(f"| {g} | " + " | ".join(cells) + " |")
    quiet = [g for g in corpus if not any(hits[g].values())]
    print(f"\nNo detector flagged any value of: {', '.join(quiet)}.")

    print("\nTrue positives on generated valid personal data:\n")
    print("| detector | bare value | in a sentence |")
    print("|---|---|---|")
    for d in detectors:
        gen = PERSONAL.get(d.name)
        if gen is None:
            print(f"| {d.name} | (no generator) | |")
            continue
        values = [gen(rng) for _ in range(n)]
        bare = sum(1 for v in values if d.find(v))
        embedded = sum(1 for v in values if d.find(rng.choice(SENTENCES).format(v)))
        print(f"| {d.name} | {_pct(bare, n)} | {_pct(embedded, n)} |")

    print("\nThroughput (values per second over the whole non-personal corpus; machine-dependent):\n")
    print("| detector | values/s |")
    print("|---|---|")
    every = [v for values in corpus.values() for v in values]
    for d in detectors:
        start = time.perf_counter()
        for v in every:
            d.find(v)
        took = time.perf_counter() - start
        print(f"| {d.name} | {len(every) / took:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5000, help="values per generator (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=20261123, help="random seed (default: %(default)s)")
    parser.add_argument("--detectors", default="all", help="detector names, comma-separated (default: all)")
    args = parser.parse_args(argv)
    measure(select_detectors(args.detectors), args.n, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
