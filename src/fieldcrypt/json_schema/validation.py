"""JSON Schema validation whose regexes run in time linear in the record (issue 15, item 6).

The serializer validates the plaintext, and the deserializer what it receives, with jsonschema (the validator class
confluent picks for the schema's draft). jsonschema searches record data with Python's backtracking ``re``:
``pattern`` (and ``propertyNames``, which applies it to keys), ``patternProperties``, ``additionalProperties`` (which
joins the ``patternProperties`` regexes with ``|``) and ``unevaluatedProperties``. So ``"pattern": "^(a+)+$"``, tagged
or not, and a value of 34 ``a`` and a ``!`` stalled every producer writing it and every consumer reading it.

:func:`bounded_validator` gives an instance of confluent's validator class extended
(``jsonschema.validators.extend``) with its own keyword functions, re-bound: the same code, whose ``re`` (and that of
the jsonschema helpers it calls) is :class:`_BoundedRe`, a ``search`` on RE2 (:func:`fieldcrypt.core.regex.bounded`).
The answers stay Python's ``re.search``'s, so what is valid does not change; only the time does. ``evolve`` (what
``descend``, ``$ref`` and :meth:`fieldcrypt.json_schema._Parsed.matcher` use) keeps the extended class, also into a
subschema whose ``$schema`` names another draft (jsonschema would switch to that draft's plain class).

A regex the bounded engine does not run (a lookaround, a backreference, ``\\b``, an inline flag...), anywhere in
the schema or a schema it references, refuses the schema (:func:`refusals`; a ``PolicyError`` naming the regex and
where it stands, raised by :class:`fieldcrypt.json_schema._Parsed` when the schema is first used): never searched
with ``re`` instead, never skipped. One met only while validating (in a schema a remote ``$ref`` fetched) is a
``PolicyError`` then. A text holding a lone surrogate (not Unicode; RE2 searches UTF-8) raises
:class:`fieldcrypt.core.regex.Unmatchable` out of the validator: the caller refuses the record.

confluent's own JSON field transformer, which fieldcrypt runs for a schema with field-level rules
(:mod:`fieldcrypt.core.confluent`), picks ``oneOf``/``anyOf`` branches and ``type``-list members with jsonschema's plain
``validate``: :func:`fieldcrypt.json_schema.confluent.bounded_transform` is that transformer re-bound to
:func:`bounded_validate`.
"""

from __future__ import annotations

import re
import threading
import types
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import attrs
from jsonschema import validators

from fieldcrypt.core.regex import Bounded, Unsupported, bounded
from fieldcrypt.errors import PolicyError

__all__ = [
    "NO_REMOTE",
    "REGEX_KEYWORDS",
    "bounded_class",
    "bounded_validate",
    "bounded_validator",
    "patterns_of",
    "refusals",
]

_ADVICE = "(docs/policy.md, \"Patterns\", lists what a pattern may use; rewrite it, e.g. '(?i)x' as '[Xx]')"


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Bounded:
    return bounded(pattern)


class _BoundedRe:
    """What jsonschema's keyword functions see as the module ``re``: only ``search``, on RE2, with ``re.search``'s
    answers (they use its truth value only). Any other ``re`` function they might call one day is an
    ``AttributeError``, not a silent backtracking search."""

    @staticmethod
    def search(pattern: str, string: str) -> bool:
        if not isinstance(string, str):  # as re.search refuses it, without searching anything
            raise TypeError(f"expected a string to search, not {type(string).__name__}")
        try:
            compiled = _compiled(pattern)
        except Unsupported as exc:
            raise PolicyError(f"pattern {pattern!r} cannot be matched in bounded time: {exc} {_ADVICE}") from None
        return compiled.search(string)  # Unmatchable: a lone surrogate


# -- the keyword functions, re-bound --------------------------------------------------------------------------------

_REBOUND: dict[Any, Any] = {}
_LOCK = threading.Lock()


def names_in(code: types.CodeType) -> set[str]:
    """The global names ``code`` (and the functions, comprehensions and generators written inside it) refers to."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= names_in(const)
    return found


def _rebound(fn: Any) -> Any:
    """``fn`` with every ``re`` it reaches through the global names it (or a jsonschema function it calls, at any
    depth) uses replaced by :class:`_BoundedRe`; ``fn`` itself when it reaches none. A copy of the function with
    a copy of its module's globals: jsonschema's own functions, and its other users, are untouched."""
    if fn in _REBOUND:
        return _REBOUND[fn]
    if not isinstance(fn, types.FunctionType) or not fn.__module__.startswith("jsonschema") or not searches_re(fn):
        return fn
    env: dict[str, Any] = dict(fn.__globals__)
    copy = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__qualname__, copy.__doc__ = fn.__kwdefaults__, fn.__qualname__, fn.__doc__
    copy.__module__ = fn.__module__
    _REBOUND[fn] = copy  # before the walk: a helper that calls itself (or a cycle) reaches the copy
    for name in names_in(fn.__code__):
        value = fn.__globals__.get(name)
        if value is re:
            env[name] = _BoundedRe
        elif isinstance(value, types.FunctionType):
            env[name] = _rebound(value)
    return copy


_CLASSES: dict[Any, Any] = {}  # confluent's (jsonschema's) validator class -> its bounded extension
_BOUNDED: set[Any] = set()


def bounded_class(base: Any) -> Any:
    """``base`` (a jsonschema validator class) extended with its keyword functions re-bound to RE2, cached; a class
    this gave is its own answer."""
    if base in _BOUNDED:
        return base
    found = _CLASSES.get(base)
    if found is not None:
        return found
    with _LOCK:
        found = _CLASSES.get(base)
        if found is not None:
            return found
        keywords = {k: _rebound(fn) for k, fn in base.VALIDATORS.items()}
        cls = validators.extend(base, {k: fn for k, fn in keywords.items() if fn is not base.VALIDATORS[k]})
        cls.__name__ = cls.__qualname__ = f"Bounded{base.__name__}"
        plain_evolve = cls.evolve

        def evolve(self: Any, **changes: Any) -> Any:
            new = plain_evolve(self, **changes)
            kind = type(new)
            if kind in _BOUNDED:
                return new
            # a subschema's $schema named another draft: jsonschema picked that draft's plain class
            target = bounded_class(kind)
            return target(**{f.alias: getattr(new, f.name) for f in attrs.fields(kind) if f.init})

        cls.evolve = evolve
        _BOUNDED.add(cls)
        _CLASSES[base] = cls
        return cls


def bounded_validator(validator: Any, schema: Any, registry: Any) -> Any:
    """``validator`` (confluent's, built for ``schema`` with ``registry``, its metaschema checked) as an instance of
    its bounded class."""
    cls = bounded_class(type(validator))
    return cls(schema, registry=registry, format_checker=validator.format_checker)


def bounded_validate(instance: Any, schema: Any, cls: Any = None, *args: Any, **kwargs: Any) -> None:
    """``jsonschema.validate`` (same arguments, same class choice, the metaschema checked as it does) with the
    validator class bounded: what confluent's field transformer calls, in
    :func:`fieldcrypt.json_schema.confluent.bounded_transform`."""
    base = cls if cls is not None else validators.validator_for(schema)
    validators.validate(instance, schema, bounded_class(base), *args, **kwargs)


# -- the patterns a schema holds ------------------------------------------------------------------------------------

_DATA = frozenset({"enum", "const", "default", "examples"})  # values, not schemas
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"})


def _esc(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def patterns_of(schema: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """(regex, where) for every regex jsonschema may search record data with, in document order: ``pattern``
    values, ``patternProperties`` keys and, where ``additionalProperties`` stands beside several of them, their
    ``|``-joined form (what jsonschema searches). ``where`` is a JSON pointer. Every schema object counts, used or
    not (a ``$ref`` may reach any); values of ``enum``, ``const``, ``default`` and ``examples`` are not schemas."""
    stack: list[tuple[Any, str]] = [(schema, where)]
    while stack:
        node, at = stack.pop()
        children: list[tuple[Any, str]] = []
        if isinstance(node, list):
            children = [(x, f"{at}/{i}") for i, x in enumerate(node)]
        elif isinstance(node, dict):
            pats = node.get("patternProperties")
            if isinstance(pats, dict) and len(pats) > 1 and "additionalProperties" in node:
                if all(isinstance(p, str) for p in pats):
                    yield "|".join(pats), f"{at}/patternProperties (joined with '|' for additionalProperties)"
            for key, value in node.items():
                if not isinstance(key, str) or key in _DATA:
                    continue
                here = f"{at}/{_esc(key)}"
                if key == "pattern" and isinstance(value, str):
                    yield value, here
                elif key in _NAMED and isinstance(value, dict):
                    for name, sub in value.items():
                        if key == "patternProperties" and isinstance(name, str):
                            yield name, f"{here}/{_esc(name)}"
                        children.append((sub, f"{here}/{_esc(str(name))}"))
                else:
                    children.append((value, here))
        stack.extend(reversed(children))


def refusals(schema: Any, registry: Any = None) -> list[tuple[str, str, str]]:
    """(regex, where, reason) for each regex of ``schema``, or of a schema it references (the resources of
    ``registry``, a ``referencing.Registry``), that the bounded engine does not run or Python does not compile: the
    schema is refused (``PolicyError``) rather than any record searched with ``re``."""
    sources: list[tuple[Any, str]] = [(schema, "#")]
    for uri in registry if registry is not None else ():
        sources.append((registry[uri].contents, f"{uri}#"))
    found = []
    for contents, root in sources:
        for rx, where in patterns_of(contents, root):
            reason = _refused(rx, where)
            if reason is not None:
                found.append((rx, where, reason))
    return found


def _refused(rx: str, where: str) -> str | None:
    try:
        _compiled(rx)
    except Unsupported as exc:
        return (
            f"the schema's regex {rx!r} at {where}, which validation searches records with, is not one fieldcrypt "
            f"can match in bounded time: {exc} {_ADVICE}"
        )
    except (re.error, OverflowError, TypeError) as exc:
        return f"the schema's regex {rx!r} at {where} is not a valid regex: {exc}"
    return None


def searches_re(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` still reaches the module ``re`` through its globals (or a jsonschema function it calls):
    what tests ask of every keyword function of a bounded class."""
    seen: set[Any] = set()
    todo = [fn]
    while todo:
        f = todo.pop()
        if f in seen or not isinstance(f, types.FunctionType):
            continue
        seen.add(f)
        for name in names_in(f.__code__):
            value = f.__globals__.get(name)
            if value is re:
                return True
            if isinstance(value, types.FunctionType):
                todo.append(value)
    return False


# -- fastjsonschema -------------------------------------------------------------------------------------------------


def _no_remote(uri: str) -> Any:
    raise ValueError(f"{uri}: the compiled validator does not fetch schemas")


class _NoRemote(dict[str, Callable[[str], Any]]):
    """fastjsonschema's ``handlers`` that refuse every URI scheme: a ``$ref`` it cannot resolve within the schema
    would be fetched with ``urllib`` (a schema never seen here, whose patterns it would compile with ``re``), and
    is the end of the compiled validator instead (jsonschema, bounded, decides)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> Callable[[str], Any]:
        return _no_remote


NO_REMOTE = _NoRemote()

#: keywords with which fastjsonschema's generated code searches record data with Python's ``re`` (``propertyNames``
#: does through ``pattern``); a schema naming one anywhere is validated by jsonschema, bounded, alone
REGEX_KEYWORDS = frozenset({"pattern", "patternProperties"})
