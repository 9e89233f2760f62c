"""Regular expressions from schemas, matched in time linear in the text they search.

Schema authors write two kinds of pattern that fieldcrypt matches: JSON Schema ``patternProperties`` regexes and
``metadata.tags`` path wildcards. A schema can come from a pull request that CI lints or from whoever may register
a version, and the keys and names matched come from producers, so a pattern is hostile input. Python's ``re``
backtracks: ``^(a+)+$`` searched in 34 ``a`` and a ``!`` runs for hours. fieldcrypt matches them with RE2
(google-re2): time linear in the text, memory per pattern capped (:data:`MAX_MEM`).

**The answers are Python's.** JSON Schema says patterns are ECMA-262, but the validator confluent and fieldcrypt use
(jsonschema) searches with Python's ``re.search``, and the keys fieldcrypt encrypts must be the keys whose values the
validator checks against the tagged schema. So a pattern is parsed by Python's own parser (the tree ``re.compile``
would run) and that tree is written out in the small part of RE2's syntax that means the same thing:

- every character, character class and ``.`` as explicit code point ranges (Python's ``\\d``, ``\\w`` and ``\\s``
  are Unicode, RE2's ASCII: their members are asked of ``re`` itself, once per process);
- ``^`` and ``\\A`` as ``\\A``, ``\\Z`` as ``\\z``; ``$``, which in Python also matches before a final newline
  (``^email$`` matches ``"email\\n"``), as "an optional newline, then the end", where nothing follows it;
- groups as non-capturing groups; lazy repetition as greedy (whether a search finds a match does not depend on it).

:class:`Unsupported` (with its position in the pattern, when found) is raised for what no linear-time engine runs
or RE2 would answer differently: backreferences, lookahead and lookbehind, conditionals, atomic groups and
possessive repetition, ``\\b``/``\\B`` (Python's are Unicode, RE2's ASCII), inline flags (``(?i)``; not ECMA-262
either), a ``$`` with more pattern after it, repetition counts above 1000, and patterns whose RE2 program outgrows
:data:`MAX_MEM`. A text holding a lone surrogate (JSON's ``"\\ud800"`` escape reads as one) is not Unicode RE2 can
search: :meth:`Bounded.search` raises :class:`Unmatchable`.

Python's parser is private (``re._parser``, ``sre_parse`` before 3.11): tests/test_regex.py compares the answers
with ``re``'s own, so a Python release that changes the tree fails there, not in a serializer.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

__all__ = [
    "MAX_MEM",
    "MAX_WILDCARD_STARS",
    "Bounded",
    "Unmatchable",
    "Unsupported",
    "bounded",
]

try:  # pragma: no cover - which one depends on the Python version
    _parser: Any = importlib.import_module("re._parser")
    _constants: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - Python 3.10
    _parser = importlib.import_module("sre_parse")
    _constants = importlib.import_module("sre_constants")

#: RE2's memory budget per pattern (its default, stated): a pattern whose program needs more is refused
MAX_MEM = 8 << 20
#: the most ``*``/``**`` a ``metadata.tags`` wildcard may hold (:func:`wildcard_stars`)
MAX_WILDCARD_STARS = 4
_MAX_TEXT = 4 << 20  # the RE2 pattern text written for one schema pattern, at most
_MAX_COUNT = 1000  # RE2's largest repetition count
_TOP = 0x10FFFF
_Ranges = tuple[tuple[int, int], ...]


class Unsupported(ValueError):
    """A valid Python regex that the bounded engine does not run. ``reason`` says why, ``position`` where (an index
    into the pattern, or None when it could not be located)."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason if position is None else f"{reason} at position {position}")
        self.reason, self.position = reason, position


class Unmatchable(ValueError):
    """A text the bounded engine cannot search: it holds a lone surrogate, which is not Unicode."""


@dataclass(frozen=True, eq=False)
class Bounded:
    """A pattern compiled for RE2. ``source``: the RE2 pattern it was written as."""

    pattern: str
    source: str
    _re: Any

    def search(self, text: str) -> bool:
        """Whether ``re.search(pattern, text)`` (``re.fullmatch`` when compiled ``whole``) would find a match."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise Unmatchable("the text holds a lone surrogate (not Unicode): no pattern is run on it") from None
        return self._re.search(data) is not None


@lru_cache(maxsize=512)
def bounded(pattern: str, whole: bool = False) -> Bounded:
    """``pattern`` compiled for RE2, to answer as ``re.search`` does (``re.fullmatch`` if ``whole``).

    Raises ``re.error`` for a pattern Python refuses (as ``re.compile`` would) and :class:`Unsupported` for one the
    bounded engine does not run."""
    try:
        re.compile(pattern)  # Python's own verdict first, errors its compiler finds included
        tree = _parser.parse(pattern)
        if tree.state.flags & ~_constants.SRE_FLAG_UNICODE:
            raise _Refused("inline flags (not ECMA-262)", "flags")
        writer = _Writer(whole)
        body = writer.sequence(tree, tail=True)
    except RecursionError:
        raise Unsupported("groups nested too deeply") from None
    except _Refused as exc:
        raise Unsupported(exc.reason, _locate(pattern, exc.kind)) from None
    source = rf"\A(?:{body})\z" if whole else body
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False
    options.never_capture = True
    try:
        compiled = re2.compile(source.encode("utf-8"), options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise Unsupported(f"too large for the bounded engine ({detail})") from None
    return Bounded(pattern, source, compiled)


# -- writing Python's tree as RE2 ---------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        self.reason, self.kind = reason, kind


_REFUSED = {
    "GROUPREF": ("a backreference", "backreference"),
    "GROUPREF_EXISTS": ("a conditional group", "conditional"),
    "ASSERT": ("a lookahead or lookbehind", "lookaround"),
    "ASSERT_NOT": ("a lookahead or lookbehind", "lookaround"),
    "ATOMIC_GROUP": ("an atomic group", "atomic"),
    "POSSESSIVE_REPEAT": ("a possessive repetition", "possessive"),
}
_BOUNDARY = ("a word boundary (\\b, \\B: Python's are Unicode, RE2's ASCII)", "boundary")


class _Writer:
    def __init__(self, whole: bool) -> None:
        self.whole, self.size = whole, 0

    def sequence(self, items: Iterable[tuple[Any, Any]], tail: bool) -> str:
        """``tail``: nothing of the pattern follows the sequence (where a ``$`` may stand)."""
        listed = list(items)
        return "".join(self.item(op, av, tail and i == len(listed) - 1) for i, (op, av) in enumerate(listed))

    def chars(self, ranges: _Ranges) -> str:
        out = _class(ranges)
        self.size += len(out)
        if self.size > _MAX_TEXT:
            raise _Refused("too large for the bounded engine", "")
        return out

    def item(self, op: Any, av: Any, tail: bool) -> str:
        name = op.name
        if name == "LITERAL":
            return self.chars(((av, av),))
        if name == "NOT_LITERAL":
            return self.chars(_complement(((av, av),)))
        if name == "ANY":  # no DOTALL (flags are refused): every character but a newline
            return self.chars(_complement(((10, 10),)))
        if name == "IN":
            return self.chars(_set(av))
        if name == "BRANCH":
            return "(?:" + "|".join(self.sequence(b, tail) for b in av[1]) + ")"
        if name == "SUBPATTERN":
            _, add, remove, sub = av
            if add or remove:
                raise _Refused("inline flags (not ECMA-262)", "flags")
            return "(?:" + self.sequence(sub, tail) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = av
            unbounded = high == _constants.MAXREPEAT
            if low > _MAX_COUNT or (not unbounded and high > _MAX_COUNT):
                raise _Refused(f"a repetition count above {_MAX_COUNT}", "count")
            body = self.sequence(sub, tail and not unbounded and high <= 1)
            return f"(?:{body}){{{low},{'' if unbounded else high}}}"
        if name == "AT":
            at = av.name
            if at in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
                return r"\A"
            if at == "AT_END_STRING":
                return r"\z"
            if at == "AT_END":
                if not tail:
                    raise _Refused("a '$' with more pattern after it", "dollar")
                return r"\z" if self.whole else r"(?:\x{a})?\z"
            raise _Refused(*_BOUNDARY)
        if name in _REFUSED:
            raise _Refused(*_REFUSED[name])
        raise _Refused(f"a construct the bounded engine does not know ({name})", "")


def _set(items: Iterable[tuple[Any, Any]]) -> _Ranges:
    negate, found = False, []
    for op, av in items:
        name = op.name
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            found.append((av, av))
        elif name == "RANGE":
            found.append((av[0], av[1]))
        elif name == "CATEGORY":
            found.extend(_category(av.name))
        else:
            raise _Refused(f"a construct the bounded engine does not know ({name} in a class)", "")
    return _complement(found) if negate else _merge(found)


def _merge(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    out, start = [], 0
    for lo, hi in _merge(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _TOP:
        out.append((start, _TOP))
    return tuple(out)


def _class(ranges: _Ranges) -> str:
    """RE2 syntax for exactly these code points. Surrogates are left out: no text searched holds one."""
    kept = _merge(r for r in _without_surrogates(ranges))
    if not kept:
        return r"[^\x{0}-\x{10ffff}]"  # matches nothing
    if len(kept) == 1 and kept[0][0] == kept[0][1]:
        return _char(kept[0][0])
    return "[" + "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in kept) + "]"


def _without_surrogates(ranges: _Ranges) -> Iterable[tuple[int, int]]:
    for lo, hi in ranges:
        if lo < 0xD800:
            yield lo, min(hi, 0xD7FF)
        if hi > 0xDFFF:
            yield max(lo, 0xE000), hi


def _char(c: int) -> str:
    return chr(c) if chr(c) in _PLAIN else f"\\x{{{c:x}}}"


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")  # the same in and out of a class


_CATEGORIES = {"DIGIT": r"\d", "SPACE": r"\s", "WORD": r"\w"}


def _category(name: str) -> _Ranges:
    """The code points of ``\\d``, ``\\s``, ``\\w`` (or their negations) as Python's ``re`` has them."""
    kind = name.removeprefix("CATEGORY_")
    negated = kind.startswith("NOT_")
    rx = _CATEGORIES.get(kind.removeprefix("NOT_"))
    if rx is None:
        raise _Refused(f"a construct the bounded engine does not know ({name})", "")
    members = _members()[rx]
    return _complement(members) if negated else members


@lru_cache(maxsize=1)
def _members() -> dict[str, _Ranges]:
    every = "".join(map(chr, range(_TOP + 1)))
    return {rx: tuple((m.start(), m.end() - 1) for m in re.finditer(rx + "+", every)) for rx in _CATEGORIES.values()}


# -- where in the pattern -----------------------------------------------------------------------------------------


def _locate(pattern: str, kind: str) -> int | None:
    """The position of the first construct of ``kind`` in ``pattern`` (outside classes and escapes), or None."""
    i, n, dollars = 0, len(pattern), []
    while i < n:
        c, nxt = pattern[i], pattern[i + 1 : i + 2]
        if c == "\\":
            if (kind == "boundary" and nxt in ("b", "B")) or (kind == "backreference" and nxt in "123456789" and nxt):
                return i
            i += 2
            continue
        if c == "[":  # skip the class: a ']' first (after an optional '^') is a literal
            j = i + 2 if nxt == "^" else i + 1
            j += 1 if pattern[j : j + 1] == "]" else 0
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        elif c == "(" and nxt == "?":
            rest = pattern[i + 2 : i + 4]
            if (
                (kind == "lookaround" and (rest[:1] in ("=", "!") or rest in ("<=", "<!")))
                or (kind == "backreference" and rest == "P=")
                or (kind == "conditional" and rest[:1] == "(")
                or (kind == "atomic" and rest[:1] == ">")
                or (kind == "flags" and rest[:1] and rest[:1] in "aiLmsux-")
            ):
                return i
        elif kind == "possessive" and c in "*+?}" and nxt == "+" and i > 0:
            return i + 1
        elif kind == "count" and c == "{":
            m = re.match(r"\{(\d*)(?:,(\d*))?\}", pattern[i:])
            if m and any(g and (len(g) > 6 or int(g) > _MAX_COUNT) for g in m.groups()):
                return i
        elif kind == "dollar" and c == "$":
            dollars.append(i)
            if pattern[i + 1 :].lstrip(")")[:1] not in ("", "|"):
                return i
        i += 1
    return dollars[0] if dollars else None
