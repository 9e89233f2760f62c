"""What a schema format provides: the one small interface between the format-agnostic parts and a format folder.

A format is a folder beside ``fieldcrypt/avro/`` and ``fieldcrypt/json_schema/`` holding its policy compiler (schema
to :class:`fieldcrypt.core.plan.FieldPlan`), its serde classes, its ``confluent.py`` (the uses of confluent-kafka's
private API for the format) and a ``format.py`` whose module-level ``FORMAT`` implements :class:`SchemaFormat`. The
format registry (``fieldcrypt.formats``, above the format folders) maps the registry's ``schemaType`` to it, and the
tools that inspect schemas and topics (``fieldcrypt.inspect``: lint, scan, verify) reach every format through it
only. Nothing in ``fieldcrypt.core`` imports a format; the serde classes hand the core what is theirs (the rule
transformer, a JSON object's undeclared properties) as arguments.

Every member works on what the format itself produced: ``parsed`` is what :meth:`SchemaFormat.parser` returned for
a schema (a fastavro dict; a JSON schema with its validators), a record is what :meth:`SchemaFormat.decode` returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from fieldcrypt.core.plan import FieldPlan, TagCollector, TagRules
from fieldcrypt.errors import PolicyError

__all__ = [
    "Raw",
    "SchemaFormat",
    "Undecodable",
    "ValueShape",
    "Visit",
    "Walker",
    "declared_properties",
    "plan_of",
    "text",
    "walk_document",
]

Visit = Callable[[str, str, tuple[Any, ...] | None], None]  # text, field path, position (None: a key)
Raw = Callable[[Any, str, tuple[Any, ...]], None]  # a str or bytes value as decoded, field path, position
#: every text of a decoded record: ``walker(record, visit, raw)`` (see :meth:`SchemaFormat.walker`)
Walker = Callable[[Any, Visit, "Raw | None"], None]


class Undecodable(Exception):
    """A record's bytes are not a record of its schema; the message says why without quoting any value."""


@dataclass(frozen=True)
class ValueShape:
    """One value position of a schema as schema lint shows it: its type (``string``, ``record Address``,
    ``string (email)``), whether it is a container (records, arrays, maps: their values have rows), whether a tag
    there could be enforced (string or bytes), and its declared ``format`` (JSON Schema; None elsewhere)."""

    type: str
    container: bool
    encryptable: bool
    fmt: str | None = None


@runtime_checkable
class SchemaFormat(Protocol):
    """A schema format fieldcrypt reads and writes. Implementations are stateless module-level instances."""

    #: the name shown to people: ``Avro``, ``JSON Schema``
    name: str
    #: the registry's ``schemaType``: ``AVRO``, ``JSON`` (confluent's registry reports Avro as None or ``AVRO``)
    schema_type: str
    #: the short name the CLI takes (``--type``, ``--format``): ``avro``, ``json``
    key: str
    #: file suffixes that hold this format's schemas and no other's (``.avsc``; ``schema lint`` reads ``.json``
    #: files by their content, as Avro and JSON Schema both use it)
    suffixes: tuple[str, ...]
    #: the serde classes (subclasses of confluent's, plus ``keyring=``)
    serializer: type
    deserializer: type

    def parser(self, registry: SchemaRegistryClient | None, *, writing: bool) -> Callable[[Schema], Any]:
        """A function parsing a registered schema (references resolved through ``registry``, confluent's own
        parsing, metadata ignored) as the serializer (``writing``) or deserializer of the format parses it, without
        keys. Raises whatever the parsing raises for a text that is no schema of the format."""
        ...

    def compile(self, parsed: Any, rules: TagRules, collector: TagCollector | None = None) -> FieldPlan:
        """The field plan of a parsed schema under ``rules`` (the format's policy compiler alone), reading tags
        through ``collector`` (default ``rules.collector()``). Raises ``PolicyError`` for the plan's refusals."""
        ...

    def refusals(self, parsed: Any) -> Sequence[tuple[str, str, str]]:
        """What the serializer refuses the schema for besides the plan's own refusals, after them, as (what,
        location, reason): the JSON Schema regexes the bounded engine does not run. Usually empty."""
        ...

    def deserializer_for(self, registry: SchemaRegistryClient, conf: Mapping[str, Any], keyring: Any) -> Any:
        """The format's deserializer reading any schema id from ``registry`` with ``conf`` and ``keyring``."""
        ...

    def decode(self, parsed: Any, payload: bytes, *, named: bool, schema_id: int | str, subject: str | None) -> Any:
        """The record in ``payload`` (the bytes after the Confluent framing) decoded and checked as the format's
        deserializer does, without decrypting (``named``: unions of named types read as (name, value) pairs, as
        ``FieldPlan.named_read`` asks). Raises :class:`Undecodable` with a message naming ``schema_id``."""
        ...

    def walker(self, parsed: Any) -> Walker:
        """A function calling ``visit(text, path, position)`` for every text of a decoded record of this schema
        (strings, UTF-8 bytes, map keys and undeclared keys with position None), with the field path (``$``,
        ``.name``, ``[]`` items, ``[*]`` values, ``(keys)``), and ``raw(value, path, position)`` (when given) for
        every string and bytes value as decoded. Computed once per schema; paths show the data's shape only."""
        ...

    def shape(self, calls: list[tuple[Any, ...]]) -> ValueShape:
        """The :class:`ValueShape` of one value position, from the schema objects each visit of the policy
        compiler passed for it (``fieldcrypt.core.recorder.ValueRecord.calls``)."""
        ...

    def names(self, path: str, parsed: Any) -> tuple[str, str] | None:
        """The field name a value path (suffixes such as ``[]`` stripped) ends with and the name of the record or
        object holding it (schema lint's hints match on both), or None for the root."""
        ...

    def explain(self, exc: Exception, schema: Schema) -> BaseException:
        """The clearest error for a schema :meth:`parser` refused with ``exc`` (``exc`` itself, usually)."""
        ...


def plan_of(fmt: SchemaFormat, parsed: Any, rules: TagRules) -> FieldPlan:
    """The plan as the format's serializer compiles it: the policy compiler, then the first of its other refusals."""
    plan = fmt.compile(parsed, rules)
    refused = fmt.refusals(parsed)
    if refused:
        _, where, reason = refused[0]
        raise PolicyError(reason, field_path=where)
    return plan


def text(v: Any, path: str, at: tuple[Any, ...], visit: Visit, raw: Raw | None = None) -> None:
    """A string or bytes value for a walker: to ``raw`` as it is, to ``visit`` as text (bytes that are UTF-8)."""
    if raw is not None:
        raw(v, path, at)
    if isinstance(v, str):
        visit(v, path, at)
    elif isinstance(v, (bytes, bytearray)):
        try:
            visit(bytes(v).decode("utf-8"), path, at)
        except UnicodeDecodeError:
            pass  # binary: not text to scan


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def walk_document(
    document: Any,
    visit: Visit,
    declared: frozenset[str] | None,
    plain_key: Callable[[str], bool] | None = None,
    raw: Raw | None = None,
) -> None:
    """Every text of a JSON document with its field path. Object keys are shown when the schema declares them
    (``declared``: schema text, not data), else as ``[*]`` and scanned as text. Without a schema (``declared`` None:
    a record that is not Confluent-framed), a key is shown only if it looks like an identifier and ``plain_key``
    says no detector finds anything in it; integers are then scanned as their digits (a bare card number)."""

    def walk(v: Any, path: str, at: tuple[Any, ...]) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if declared is not None:
                    shown = k in declared
                else:
                    shown = bool(_IDENTIFIER.fullmatch(k)) and plain_key is not None and plain_key(k)
                if not shown:
                    visit(k, f"{path}(keys)", None)
                walk(x, f"{path}.{k}" if shown else f"{path}[*]", (*at, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[]", (*at, i))
        elif declared is None and isinstance(v, int) and not isinstance(v, bool):
            visit(str(v), path, at)
        else:
            text(v, path, at, visit, raw)

    walk(document, "$", ())


def declared_properties(schema: Any) -> frozenset[str]:
    """Every property name a JSON schema declares anywhere (``properties`` keys): names, not data."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                found.update(k for k in props if isinstance(k, str))
            stack.extend(v for k, v in node.items() if k not in ("default", "const", "enum", "examples"))
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(found)
