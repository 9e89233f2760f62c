"""fieldcrypt.core.regex: schema patterns matched in linear time (RE2), with Python's ``re`` answers.

Written from the attack: ``^(a+)+$`` searched in 34 ``a`` and a ``!`` ran for hours with ``re``. Every answer is
compared with ``re`` itself (handwritten patterns for each construct, generated ones, every BMP code point for the
Unicode classes), so a Python release whose parser changes the tree fails here."""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka.schema_registry.wildcard_matcher import wildcard_match as confluent_wildcard_match
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldcrypt.core.confluent import wildcard, wildcard_match
from fieldcrypt.core.regex import Unmatchable, Unsupported, bounded

ATTACK = "a" * 34 + "!"


def test_the_attack_is_answered_at_once() -> None:
    start = time.perf_counter()
    assert bounded("^(a+)+$").search(ATTACK) is False
    assert bounded("^(a+)+$").search("a" * 34) is True
    assert bounded("(x+x+)+y").search("x" * 100_000) is False  # a long text: linear, not exponential
    assert bounded("^(a|a)*$", whole=True).search("a" * 5_000 + "!") is False
    assert time.perf_counter() - start < 2


TEXTS = [
    "",
    "a",
    "ab",
    "abc",
    "a\n",
    "email",
    "email\n",
    "email\n\n",
    "\nemail",
    "x-email",
    "x-",
    "X-Email",
    "pii_ssn",
    "a1",
    "12",
    "٣",  # ARABIC-INDIC DIGIT THREE: Python's \d, not RE2's
    "²",  # SUPERSCRIPT TWO: Python's \w, not its \d
    "\U0001d7d9",  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE: \d, outside the BMP
    "é",
    "ß",
    "_",
    "-",
    " ",
    "\t",
    "\u2003",  # EM SPACE: Python's \s
    "\x1c",  # FILE SEPARATOR: Python's \s too
    "\x0b",  # VERTICAL TAB: Python's \s, not RE2's
    "\u00a0",
    "a b",
    "aaa!",
    "a.b.c",
    "Order.email",
    "名前",
    "]",
    "\\",
    "^",
    "$",
]

PATTERNS = [
    "",
    "a",
    "^a",
    "a$",
    "^a$",
    "^email$",
    r"\Aemail\Z",
    "^x-",
    "^(x|y)-",
    "ab|ac",
    "a|b$",
    "(a$)?",
    "(a|b$)",
    "^a*$",
    "^a+?$",
    "^a{2,3}$",
    "a{,2}b",
    "^a{0}$",
    "a{2}",
    "^.$",
    "^.*$",
    "^..$",
    r"\d",
    r"^\d+$",
    r"\D",
    r"^\w+$",
    r"\W",
    r"\s",
    r"^\S*$",
    "[a-c]",
    "^[^a]",
    "[^\\d]",
    "[\\d_]",
    "[^\\w]",
    "[\\s\\d]",
    "[]a]",
    "[^]a]",
    "[\\]]",
    "\\\\",
    "\\^",
    "\\$",
    "[$^]",
    "^[a-z0-9_]+$",
    "(?:ab)+",
    "(?P<name>a)b",
    "(a)(b)",
    "[é-ü]",
    "名",
    "^$",
    "$",
    "^",
    "\\n",
    "^email\\n$",
    "\\.",
    "^Order\\.",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_same_answers_as_re(pattern: str) -> None:
    for whole in (False, True):
        compiled = bounded(pattern, whole)
        for text in TEXTS:
            expected = (re.fullmatch if whole else re.search)(pattern, text) is not None
            assert compiled.search(text) is expected, (pattern, text, whole, compiled.source[:200])


def test_dollar_matches_before_a_final_newline_as_in_python() -> None:
    """A tagged ``^email$`` covers the key ``"email\\n"`` (re and jsonschema say so); RE2's ``$`` would not."""
    assert re.search("^email$", "email\n") and bounded("^email$").search("email\n")
    assert not bounded("^email$").search("email\n\n") and not bounded("^email$", whole=True).search("email\n")


_CLASSES = [r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", "[^\\d\\s]", "[\\w-]", "."]


@pytest.mark.parametrize("rx", _CLASSES)
def test_unicode_classes_are_pythons_on_every_code_point_of_the_bmp(rx: str) -> None:
    compiled, reference = bounded(rx), re.compile(rx)
    astral = range(0x10000, 0x110000, 97)
    for c in (*range(0xD800), *range(0xE000, 0x10000), *astral):
        ch = chr(c)
        assert compiled.search(ch) is (reference.search(ch) is not None), (rx, hex(c))


_ATOMS = st.sampled_from(
    ["a", "b", "é", "٣", "_", " ", "\\n", ".", "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "[ab]", "[^a]", "[a-c\\d]"]
)


def _patterns() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{,2}", "*?", "+?"]))
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda s: f"({s})"),
            quantified.map(lambda t: f"(?:{t[0]}){t[1]}"),
        )

    body = st.recursive(_ATOMS, extend, max_leaves=8)
    return st.tuples(st.sampled_from(["", "^", "\\A"]), body, st.sampled_from(["", "$", "\\Z"])).map("".join)


@settings(max_examples=400, deadline=None)
@given(_patterns(), st.lists(st.text(alphabet="abé٣_ \n-x²", max_size=8), min_size=1, max_size=6))
def test_generated_patterns_answer_as_re(pattern: str, texts: list[str]) -> None:
    for whole in (False, True):
        compiled = bounded(pattern, whole)
        for text in texts:
            expected = (re.fullmatch if whole else re.search)(pattern, text) is not None
            assert compiled.search(text) is expected, (pattern, text, whole)


REFUSED = [
    ("(a)\\1", "a backreference", 3),
    ("(?P<x>a)(?P=x)", "a backreference", 8),
    ("a(?=b)", "a lookahead or lookbehind", 1),
    ("^(?!internal_)", "a lookahead or lookbehind", 1),
    ("(?<=a)b", "a lookahead or lookbehind", 0),
    ("(?<!a)b", "a lookahead or lookbehind", 0),
    ("(a)?(?(1)b|c)", "a conditional group", 4),
    ("(?>a+)b", "an atomic group", 0),
    ("a++b", "a possessive repetition", 2),
    ("\\bemail\\b", "a word boundary", 0),
    ("x\\B", "a word boundary", 1),
    ("(?i)email", "inline flags", 0),
    ("x(?i:email)", "inline flags", 1),
    ("(?m)^a$", "inline flags", 0),
    ("(?x) a b", "inline flags", 0),
    ("a$b", "a '$' with more pattern after it", 1),
    ("[$](a$)+", "a '$' with more pattern after it", 5),
    ("a{1001}", "a repetition count above 1000", 1),
]


@pytest.mark.parametrize(("pattern", "reason", "position"), REFUSED)
def test_what_no_linear_engine_runs_is_refused_with_its_position(pattern: str, reason: str, position: int) -> None:
    re.compile(pattern)  # valid for Python
    with pytest.raises(Unsupported) as caught:
        bounded(pattern)
    assert caught.value.reason.startswith(reason) and caught.value.position == position
    assert str(caught.value).endswith(f"at position {position}")


def test_patterns_too_large_for_re2_and_invalid_ones() -> None:
    with pytest.raises(Unsupported, match="too large"):
        bounded(r"\w{500}\w{500}\w{500}")
    with pytest.raises(Unsupported, match="nested too deeply"):
        bounded("(" * 5000 + ")" * 5000)
    with pytest.raises(re.error):
        bounded("(")


def test_a_lone_surrogate_is_not_searched() -> None:
    with pytest.raises(Unmatchable):
        bounded("^x").search("x\ud800")
    assert bounded("^x").search("x\U0001f600")  # a real astral character is fine


_GLOB = st.text(alphabet="ab.*?", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_GLOB, st.lists(st.text(alphabet="ab.", max_size=8), min_size=1, max_size=6))
def test_wildcards_answer_as_confluents(glob: str, names: list[str]) -> None:
    for name in names:
        assert wildcard_match(name, glob) is confluent_wildcard_match(name, glob), (glob, name)


def test_wildcards_of_metadata_tags_cannot_stall() -> None:
    """``**a`` twelve times: confluent's regex backtracks polynomially (~minutes on a 40-letter name)."""
    start = time.perf_counter()
    assert wildcard_match("a" * 40, "**a" * 12 + "**b") is False
    assert wildcard_match("Order.email", "**.email") and wildcard_match("shop.Order.email", "*.email") is False
    assert time.perf_counter() - start < 2
    with pytest.raises(re.error):
        wildcard("a[")
