"""confluent's data-contract rules (``ruleSet``), executed through confluent's own rule machinery.

fieldcrypt's serdes run the rules of the schema written or read exactly where confluent's classes run them, by
calling confluent's ``_execute_rules`` / ``_get_migrations`` / ``_execute_migrations`` with confluent's own field
transformers (``common.avro.transform``, ``common.json_schema.transform``) and the serde's rule registry:

    write:  to_dict -> WRITE domain rules (CEL, CEL_FIELD, JSONata...) -> fieldcrypt encrypts -> encode
    read:   decode -> fieldcrypt decrypts -> migration rules (UPGRADE/DOWNGRADE) -> READ domain rules -> from_dict

So a CEL condition or a CEL_FIELD transform sees plaintext on both sides, never ciphertext it could corrupt, and
fieldcrypt's encryption stands where confluent's ENCRYPT transform stands (the last domain rule on write, the
first on read). ENCRYPT / ENCRYPT_PAYLOAD rules are not executed: fieldcrypt's encryption replaces them
(docs/compatibility.md). As in confluent, domain rules run on write only when the schema written comes from the
registry (``use.latest.version`` / ``use.schema.id`` / ``use.latest.with.metadata``), migrations only with a
latest schema on read. The rules get a deep copy of the record: the caller's object is never changed.

Confluent's rule machinery matches with Python's backtracking ``re`` in two places that see record data or field
names: the JSON transformer picks ``oneOf``/``anyOf`` branches and ``type``-list members with jsonschema's plain
``validate`` (a schema's ``pattern`` searched in a value), and ``RuleContext.get_tags`` matches ``metadata.tags``
wildcards against each field's full name. So a hostile schema with a rule could stall a consumer. fieldcrypt runs
both on RE2 with the same answers: the JSON transformer is confluent's own code re-bound to a bounded ``validate``
(:func:`fieldcrypt.json_schema.validation.bounded_transform`), and every rule context the field transformers below are
handed matches its wildcards with :func:`fieldcrypt.core.regex.wildcard_match` (:func:`_bounded_tags`).

The private confluent methods and helpers used here are checked by ``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import attrs
from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.common import avro as _avro
from confluent_kafka.schema_registry.common import json_schema as _json
from confluent_kafka.schema_registry.common import serde as _serde
from confluent_kafka.schema_registry.common.schema_registry_client import RuleMode, RuleSet
from confluent_kafka.schema_registry.common.serde import DLQ_HEADER_PREFIX
from confluent_kafka.serialization import SerializationContext
from fastavro.schema import expand_schema
from referencing import Resource

from fieldcrypt.core import regex as _regex

__all__ = [
    "csfle_read",
    "has_encrypt_rules",
    "has_migrations",
    "migrate",
    "read_rules_avro",
    "read_rules_json",
    "write_rules_avro",
    "write_rules_json",
]

#: rule types fieldcrypt's own encryption replaces
_REPLACED = frozenset({"ENCRYPT", "ENCRYPT_PAYLOAD"})


def _domain_rules(schema: Schema | None) -> Schema | None:
    """``schema`` without the rules fieldcrypt replaces, or None when no domain rule is left to run."""
    rule_set = schema.rule_set if schema is not None else None
    if schema is None or rule_set is None or not rule_set.domain_rules:
        return None
    kept = [r for r in rule_set.domain_rules if str(r.type).upper() not in _REPLACED]
    if not kept:
        return None
    if len(kept) == len(rule_set.domain_rules):
        return schema
    rules: RuleSet = attrs.evolve(rule_set, domain_rules=kept, encoding_rules=None)
    evolved: Schema = attrs.evolve(schema, rule_set=rules)
    return evolved


def has_encrypt_rules(schema: Schema | None) -> bool:
    """Whether a schema carries a Confluent CSFLE ENCRYPT rule (its history may hold CSFLE ciphertext)."""
    rule_set = schema.rule_set if schema is not None else None
    return bool(
        rule_set and rule_set.domain_rules and any(str(r.type).upper() == "ENCRYPT" for r in rule_set.domain_rules)
    )


def _rebound_get_tags() -> Any:
    """confluent's ``RuleContext.get_tags``, its ``wildcard_match`` (``re.compile(...).fullmatch``) replaced by
    fieldcrypt's, on RE2 with the same answers."""
    plain = _serde.RuleContext.get_tags
    env = dict(plain.__globals__)
    env["wildcard_match"] = _regex.wildcard_match
    return types.FunctionType(plain.__code__, env, plain.__name__, plain.__defaults__, plain.__closure__)


class _BoundedRuleContext(_serde.RuleContext):
    """confluent's ``RuleContext`` whose ``metadata.tags`` wildcards are matched in time linear in the field name."""

    __slots__ = ()
    get_tags = _rebound_get_tags()


def _bounded_tags(rule_ctx: Any) -> Any:
    """``rule_ctx`` (the ``RuleContext`` confluent made for one rule, before its transformer enters any field) as a
    :class:`_BoundedRuleContext` (it has ``__slots__``: the class is swapped, nothing else changes). Every field
    transformer below calls this first, also for the context confluent's DLQ action makes to redact a record."""
    if type(rule_ctx) is _serde.RuleContext:
        rule_ctx.__class__ = _BoundedRuleContext
    elif not isinstance(rule_ctx, _BoundedRuleContext):  # a confluent release that makes another kind: look first
        raise RuntimeError(f"cannot bound the wildcard matching of a {type(rule_ctx).__qualname__}")
    return rule_ctx


def _encrypt_rules_only(schema: Schema) -> Schema:
    """The writer schema with its ENCRYPT rules only, each set to run on read and to raise when it fails: a rule's
    ``onFailure`` (``NONE`` swallows the executor's failure and returns the record as it came), ``disabled`` flag,
    mode or the rule set's ``enableAt`` may change what confluent would do, never what fieldcrypt accepts."""
    assert schema.rule_set is not None and schema.rule_set.domain_rules is not None
    kept = [
        attrs.evolve(r, mode=RuleMode.WRITEREAD, on_success="NONE", on_failure="ERROR", disabled=False)
        for r in schema.rule_set.domain_rules
        if str(r.type).upper() == "ENCRYPT"
    ]
    evolved: Schema = attrs.evolve(
        schema,
        rule_set=attrs.evolve(
            schema.rule_set, domain_rules=kept, migration_rules=None, encoding_rules=None, enable_at=None
        ),
    )
    return evolved


def _without_replay_headers(ctx: SerializationContext) -> SerializationContext:
    """``ctx`` without confluent's dead-letter-queue headers (``__rule.*``): a record carrying
    ``__rule.name=<the ENCRYPT rule>`` would have confluent skip the rule as a DLQ replay. Any producer can set
    headers, so they never decide whether a value is decrypted."""
    headers = ctx.headers
    if not headers:
        return ctx
    items = headers.items() if isinstance(headers, dict) else headers
    kept = [(k, v) for k, v in items if not (isinstance(k, str) and k.startswith(DLQ_HEADER_PREFIX))]
    return SerializationContext(ctx.topic, ctx.field, kept)


def csfle_read(
    serde: Any, ctx: SerializationContext, subject: str, writer_raw: Schema, parsed: Any, record: Any
) -> Any:
    """Decrypt a record Confluent CSFLE wrote (migration from CSFLE): the writer schema's ENCRYPT rules only, through
    confluent's FieldEncryptionExecutor (registered by the application, with its DEK registry and ``rule_conf``).
    ``parsed`` is the writer schema as this serde parses it (fastavro dict, or None for JSON)."""
    target = _encrypt_rules_only(writer_raw)
    ctx = _without_replay_headers(ctx)
    if parsed is not None:
        expanded = expand_schema(parsed)

        def avro_transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
            return _avro.transform(_bounded_tags(rule_ctx), expanded, msg, field_transform)

        inline = _avro.get_inline_tags(parsed)
        return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, record, inline, avro_transformer)
    transformer = _json_transformer(serde, writer_raw)
    return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, record, None, transformer)


def write_rules_avro(serde: Any, ctx: SerializationContext, subject: str, written: Schema | None, value: Any) -> Any:
    target = _domain_rules(written)
    if target is None or written is None:
        return value
    parsed = serde._get_parsed_schema(written)
    expanded = expand_schema(parsed)

    def field_transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return _avro.transform(_bounded_tags(rule_ctx), expanded, msg, field_transform)

    return serde._execute_rules(
        ctx,
        subject,
        RuleMode.WRITE,
        None,
        target,
        copy.deepcopy(value),
        _avro.get_inline_tags(parsed),
        field_transformer,
    )


def read_rules_avro(
    serde: Any, ctx: SerializationContext, subject: str, reader_raw: Schema | None, reader: Any, value: Any
) -> Any:
    target = _domain_rules(reader_raw)
    if target is None:
        return value
    expanded = expand_schema(reader)

    def field_transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return _avro.transform(_bounded_tags(rule_ctx), expanded, msg, field_transform)

    inline = _avro.get_inline_tags(reader) if reader is not None else None
    return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, value, inline, field_transformer)


def _json_transformer(serde: Any, schema: Schema) -> Any:
    from fieldcrypt.json_schema.validation import bounded_transform

    transform = bounded_transform()  # confluent's, its branch choices validated on RE2
    parsed, ref_registry = serde._get_parsed_schema(schema)
    resolver = ref_registry.resolver_with_root(Resource.from_contents(parsed, default_specification=_json.DEFAULT_SPEC))

    def field_transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return transform(_bounded_tags(rule_ctx), parsed, ref_registry, resolver, "$", msg, field_transform)

    return field_transformer


def write_rules_json(serde: Any, ctx: SerializationContext, subject: str, written: Schema | None, value: Any) -> Any:
    target = _domain_rules(written)
    if target is None or written is None:
        return value
    transformer = _json_transformer(serde, written)
    return serde._execute_rules(ctx, subject, RuleMode.WRITE, None, target, copy.deepcopy(value), None, transformer)


def read_rules_json(serde: Any, ctx: SerializationContext, subject: str, reader_raw: Schema | None, value: Any) -> Any:
    target = _domain_rules(reader_raw)
    if target is None or reader_raw is None:
        return value
    transformer = _json_transformer(serde, reader_raw)
    return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, value, None, transformer)


def migrate(
    serde: Any, ctx: SerializationContext, subject: str, writer_raw: Schema, latest: RegisteredSchema, value: Any
) -> tuple[Any, bool]:
    """Run the migration rules between the writer's schema and the latest one, as confluent's deserializer does.
    Returns the record and whether any migration ran (then no schema resolution follows, as in confluent)."""
    if not has_migrations(writer_raw, latest.schema):
        return value, False  # no rule to run: skip the lookup confluent makes only to find them
    migrations = serde._get_migrations(subject, writer_raw, latest, None)
    if not migrations:
        return value, False
    return serde._execute_migrations(ctx, subject, migrations, value), True


def has_migrations(*schemas: Schema | None) -> bool:
    """Whether any of the schemas carries migration rules."""
    return any(s is not None and s.rule_set is not None and bool(s.rule_set.migration_rules) for s in schemas)
