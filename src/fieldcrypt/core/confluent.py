"""The quarantine of confluent-kafka's private serde API, shared by every format (docs/compatibility.md).

Only this module and each format's ``confluent.py`` (``fieldcrypt.avro.confluent``,
``fieldcrypt.json_schema.confluent``) touch confluent's private attributes, methods and modules;
``tests/test_confluent_private_api.py`` checks that, and that every private name used here still exists, so an
upgrade that moves one fails loudly. What is here:

* **the serde base**: what confluent's constructor set up (:func:`configured`: a frozen :class:`Configured` read once,
  so the serde classes' hot path reads plain attributes), the subject name strategy (:func:`subject_of`), the schema
  a serializer writes with (:func:`writer_schema`, :func:`is_latest_mode`, :func:`auto_registers`), the registry
  lookups a deserializer makes (:func:`get_writer_schema`, :func:`get_reader_schema`), the conf keys confluent
  accepts (:func:`default_conf`), and the registry client's REST client and HTTP library (:func:`rest_client`,
  :func:`registry_transport_error`, :func:`wildcard_to_regexp`);
* **confluent's data-contract rules** (``ruleSet``), executed through confluent's own rule machinery.

fieldcrypt's serdes run the rules of the schema written or read exactly where confluent's classes run them, by
calling confluent's ``_execute_rules`` / ``_get_migrations`` / ``_execute_migrations`` with confluent's own field
transformers (``common.avro.transform``, ``common.json_schema.transform``: each format's ``confluent.py`` hands its
own to :func:`write_rules`, :func:`read_rules` and :func:`csfle_read` as a :data:`FieldRules`) and the serde's rule
registry:

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
(:func:`fieldcrypt.json_schema.confluent.bounded_transform`), and every rule context the formats' field transformers
are handed matches its wildcards with :func:`wildcard_match` (:func:`bounded_tags`).

The private confluent methods and helpers used here are checked by ``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import attrs
from confluent_kafka.schema_registry import RegisteredSchema, Schema, prefix_schema_id_serializer
from confluent_kafka.schema_registry.common import serde as _serde
from confluent_kafka.schema_registry.common.schema_registry_client import Rule, RuleKind, RuleMode, RulePhase, RuleSet
from confluent_kafka.schema_registry.common.serde import DLQ_HEADER_PREFIX
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt.core import regex as _regex
from fieldcrypt.errors import ConfigurationError, PolicyError
from fieldcrypt.keys import _loop

__all__ = [
    "BUILDER",
    "CONFIGURED",
    "Configured",
    "FieldRules",
    "async_build_with",
    "auto_registers",
    "bounded_tags",
    "build_with",
    "built_values",
    "configured",
    "csfle_read",
    "default_conf",
    "get_reader_schema",
    "get_writer_schema",
    "has_encrypt_rules",
    "has_migrations",
    "is_async_strategy",
    "is_confluent_client",
    "is_latest_mode",
    "migrate",
    "read_rules",
    "refuse_encoding_rules",
    "registry_transport_error",
    "rest_client",
    "subject_of",
    "track_original_key",
    "wildcard",
    "wildcard_match",
    "wildcard_stars",
    "wildcard_to_regexp",
    "wire_reset",
    "wire_set",
    "write_rules",
    "writer_schema",
]

# -- the serde base: what confluent's constructors set up -----------------------------------------------------------

#: the private attributes of confluent's serdes :func:`configured` reads, by the field of :class:`Configured` they fill
#: (a serde class has the ones of its role and format; the upgrade test checks each class has its own)
CONFIGURED: dict[str, str] = {
    "registry": "_registry",
    "schema": "_schema",
    "schema_name": "_schema_name",
    "to_dict": "_to_dict",
    "from_dict": "_from_dict",
    "schema_id_serializer": "_schema_id_serializer",
    "schema_id_deserializer": "_schema_id_deserializer",
    "strict": "_strict",
    "strict_allow_default": "_strict_allow_default",
    "parsed_schema": "_parsed_schema",
    "reader_schema": "_reader_schema",
    "return_record_name": "_return_record_name",
    "validate": "_validate",
    "json_encode": "_json_encode",
    "json_decode": "_json_decode",
    "msg_class": "_msg_class",
}


@dataclass(frozen=True, slots=True)
class Configured:
    """What confluent's serde constructor set up from its arguments and conf, read once right after it ran
    (:func:`configured`): the fieldcrypt serde classes read these on every record instead of confluent's private
    attributes. A field the serde's role or format does not have is None (False for the flags)."""

    registry: Any
    schema: Schema | None
    schema_name: str | None
    to_dict: Callable[..., Any] | None
    from_dict: Callable[..., Any] | None
    schema_id_serializer: Callable[..., Any] | None
    schema_id_deserializer: Callable[..., Any] | None
    strict: bool
    strict_allow_default: bool
    parsed_schema: Any  # Avro: confluent's parsed schema_str
    reader_schema: Any  # Avro deserializer: the parsed reader schema (schema_str), or None
    return_record_name: bool
    validate: bool  # JSON: validate documents
    json_encode: Callable[..., Any] | None
    json_decode: Callable[..., Any] | None
    msg_class: Any  # Protobuf: the message class confluent parses records into
    prefix_framing: bool  # the serializer writes the 5-byte prefix (confluent's default schema id serializer)


def configured(serde: Any) -> Configured:
    """:class:`Configured` from a serde whose confluent constructor has run."""
    values: dict[str, Any] = {
        field: getattr(serde, attr, None) for field, attr in CONFIGURED.items()
    }  # (confluent's are slots)
    for flag in ("strict", "strict_allow_default", "return_record_name", "validate"):
        values[flag] = bool(values[flag])
    return Configured(**values, prefix_framing=values["schema_id_serializer"] is prefix_schema_id_serializer)


def default_conf(cls: type) -> list[str]:
    """The conf keys a confluent serde class accepts."""
    return list(cls._default_conf)  # type: ignore[attr-defined]


def track_original_key(obj: Any, ctx: SerializationContext | None) -> None:
    """What confluent's serializers do after each call: remember a record key (``ctx.field`` KEY) for the value
    serialized next, whose failing rule's DLQ action names it; forget it after a value."""
    if ctx is not None and ctx.field == MessageField.KEY:
        _serde.set_original_key(obj)
    else:
        _serde.clear_original_key()  # type: ignore[no-untyped-call]


def key_trackers() -> tuple[Callable[[Any], None], Callable[[], object]]:
    """(remember, forget): what :func:`track_original_key` calls for a KEY record and for any other, for a serde
    that decided the field once (its lanes)."""
    # forget: clear_original_key's one step, bound (a call fewer per record; the private name is checked by
    # tests/test_confluent_private_api.py)
    return _serde.set_original_key, partial(_serde._ORIGINAL_KEY.set, None)


def subject_of(serde: Any, ctx: SerializationContext | None, record_name: str | None) -> str | None:
    """The registry subject, through confluent's configured subject name strategy."""
    if ctx is None:
        return None
    if serde._strategy_accepts_client:
        return serde._subject_name_func(ctx, record_name, serde._registry, serde._subject_name_conf)  # type: ignore[no-any-return]
    return serde._subject_name_func(ctx, record_name)  # type: ignore[no-any-return]


def writer_schema(serde: Any, subject: str, schema: Schema | None = None, fmt: str | None = None) -> Any:
    """What confluent's serializer would write with for ``subject``: the registered schema (``RegisteredSchema``)
    from use.schema.id / use.latest.version / use.latest.with.metadata, else the serializer's own schema (``schema``
    when given: Protobuf's, with its references), registered (auto.register.schemas) or looked up. ``fmt``: the
    format registry reads ask for (Protobuf: ``serialized``)."""
    latest = serde._get_reader_schema(subject, fmt=fmt) if fmt is not None else serde._get_reader_schema(subject)
    if latest is not None:
        return latest
    schema = schema if schema is not None else serde._schema
    if schema is None:
        raise ConfigurationError("no schema to write with: pass schema_str, or set use.latest.version", subject=subject)
    with _loop.taken(serde._known_subjects_lock):  # (on an asyncio serde's loop: never waited for)
        if serde._auto_register:
            return serde._registry.register_schema_full_response(
                subject, schema, normalize_schemas=serde._normalize_schemas
            )
        return serde._registry.lookup_schema(subject, schema, normalize_schemas=serde._normalize_schemas)


def is_latest_mode(serde: Any) -> bool:
    """True when the schema to write with can change between calls (so it is not cached per subject)."""
    return bool(
        serde._use_latest_version or serde._use_latest_with_metadata is not None or serde._use_schema_id is not None
    )


def auto_registers(serde: Any) -> bool:
    """Whether the serializer registers its schema (``auto.register.schemas``)."""
    return bool(serde._auto_register)


def get_writer_schema(serde: Any, sid: Any, subject: str | None, fmt: str | None = None) -> Any:
    """The schema a record names in a header (schema id or GUID: confluent's ``SchemaId``), as confluent's
    deserializer looks it up (through its client's cache)."""
    if fmt is not None:
        return serde._get_writer_schema(sid, subject, fmt=fmt)
    return serde._get_writer_schema(sid, subject)


def get_reader_schema(serde: Any, subject: str, fmt: str | None = None) -> Any:
    """The reader schema use.latest.version / use.latest.with.metadata / use.schema.id name (None without them)."""
    if fmt is not None:
        return serde._get_reader_schema(subject, fmt=fmt)
    return serde._get_reader_schema(subject)


# -- confluent 2.16's serde builders (key.serializer.builder, value.deserializer.builder...) -------------------------

#: the private attributes of confluent's serde builders :func:`built_values` reads, by the name it gives them (a
#: builder class has the ones of its role and format; the upgrade test checks each class has its own)
BUILDER: dict[str, str] = {
    "registry_client": "_schema_registry_client",
    "registry_conf": "_schema_registry_conf",
    "schema": "_schema_str",
    "to_dict": "_to_dict",
    "from_dict": "_from_dict",
    "return_record_name": "_return_record_name",
    "serializer_conf": "_serializer_conf",
    "deserializer_conf": "_deserializer_conf",
    "rule_conf": "_rule_conf",
    "rule_registry": "_rule_registry",
    "json_encode": "_json_encode",
    "json_decode": "_json_decode",
    "msg_type": "_msg_type",
    "serializer_init": "_serializer_init",
    "deserializer_init": "_deserializer_init",
}


def built_values(builder: Any) -> dict[str, Any]:
    """What the application set on a confluent serde builder (its setters or constructor), by :data:`BUILDER`'s
    names; None for what it did not set or its class does not have."""
    return {name: getattr(builder, attr, None) for name, attr in BUILDER.items()}


def build_with(builder: Any, construct: Callable[[Any, dict[str, Any]], Any], conf: dict[str, Any]) -> Any:
    """confluent's sync builder's ``build(conf, is_key)``, constructing ``construct(client, values)`` instead of
    confluent's class: the registry client made from the builder's registry conf (and owned by the serde) as
    confluent's builders make it."""
    from confluent_kafka.schema_registry._sync.serde import build_serde

    v = built_values(builder)
    init = v["serializer_init"] or v["deserializer_init"]
    serde = build_serde(v["registry_client"], v["registry_conf"], lambda client: construct(client, v), init)
    return serde, dict(conf)


async def async_build_with(
    builder: Any, construct: Callable[[Any, dict[str, Any]], Any], conf: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """:func:`build_with` for confluent's asyncio builders (``construct`` returns the awaitable constructor)."""
    from confluent_kafka.schema_registry._async.serde import async_build_serde

    v = built_values(builder)
    init = v["serializer_init"] or v["deserializer_init"]
    serde = await async_build_serde(v["registry_client"], v["registry_conf"], lambda client: construct(client, v), init)
    return serde, dict(conf)


def is_async_strategy(strategy: Any) -> bool:
    """Whether ``strategy`` is confluent's asyncio associated subject name strategy (awaited by its asyncio serdes)."""
    from confluent_kafka.schema_registry._async.serde import AsyncAssociatedNameStrategy

    return isinstance(strategy, AsyncAssociatedNameStrategy)


def is_confluent_client(registry: Any) -> bool:
    """Whether ``registry`` is confluent's own registry client class (sync, or async behind an asyncio twin's
    ``fieldcrypt.core.aio.RegistryView``) with its own ``get_version``, whose cache the direct REST requests of
    ``fieldcrypt.core.written`` avoid."""
    from confluent_kafka.schema_registry import AsyncSchemaRegistryClient, SchemaRegistryClient

    inner = getattr(registry, "fieldcrypt_async_client", None)
    if inner is not None:
        return type(inner).get_version is AsyncSchemaRegistryClient.get_version
    return type(registry).get_version is SchemaRegistryClient.get_version


def rest_client(registry: Any) -> Any:
    """The REST client of confluent's registry client (its ``base_urls``, direct uncached ``get``), or None for a
    client without one."""
    return getattr(registry, "_rest_client", None)


def registry_transport_error() -> type[BaseException]:
    """The transport error base class of the HTTP library confluent's registry client uses."""
    from confluent_kafka.schema_registry.common._httpx_compat import httpx

    return httpx.TransportError


def wildcard_to_regexp(pattern: str) -> str:
    """confluent's translation of a ``metadata.tags`` path wildcard to a regular expression (``.`` separated)."""
    from confluent_kafka.schema_registry.wildcard_matcher import _wildcard_to_regexp

    return _wildcard_to_regexp(pattern, ".")


# -- metadata.tags wildcards, as confluent reads them, on RE2 ------------------------------------------------------


def wildcard(pattern: str) -> _regex.Bounded:
    """A ``metadata.tags`` path wildcard (``**.ssn``, ``Order.*``) compiled as confluent's ``wildcard_match`` reads
    it: confluent's own translation to a regex, matched whole. Raises as :func:`bounded` does."""
    return _regex.bounded(wildcard_to_regexp(pattern), whole=True)


def wildcard_stars(pattern: str) -> int:
    """How many unbounded repetitions (a ``*`` or ``**`` of the wildcard) confluent's translation of ``pattern``
    holds: with k of them, confluent's own ``wildcard_match`` (Python's ``re``) may take time of the order of
    n**k in a field name of n characters that fails to match. Raises ``re.error`` for a translation Python refuses."""
    count, stack = 0, [_regex._parser.parse(wildcard_to_regexp(pattern))]
    while stack:
        for op, av in stack.pop():
            name = op.name
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                count += av[1] == _regex._constants.MAXREPEAT
                stack.append(av[2])
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                stack.append(av[-1])
            elif name == "BRANCH":
                stack.extend(av[1])
    return count


def wildcard_match(text: str, pattern: str) -> bool:
    """confluent's ``wildcard_match(text, pattern)``, in time linear in ``text``."""
    return wildcard(pattern).search(text)


# -- data-contract rules --------------------------------------------------------------------------------------------

#: confluent's field transformer for one rule: ``(rule_ctx, field_transform, message) -> message``
Transformer = Callable[[Any, Any, Any], Any]
#: a format's rule fields: ``(serde, schema, parsed or None) -> (transformer, inline tags)``, the transformer
#: confluent's own for the format, calling :func:`bounded_tags` on every rule context first
#: (``fieldcrypt.avro.confluent``, ``fieldcrypt.json_schema.confluent``)
FieldRules = Callable[[Any, Schema, Any], tuple[Transformer, Any]]

#: rule types fieldcrypt's own encryption replaces
_REPLACED = frozenset({"ENCRYPT", "ENCRYPT_PAYLOAD"})


#: the name of the rule :func:`_domain_rules` adds for confluent's DLQ action to redact fieldcrypt's tagged fields
REDACT_RULE = "fieldcrypt-redact"


def _redaction(tags: frozenset[str], mode: RuleMode) -> Rule:
    """A rule that never runs (disabled, and of a mode the rule list it is in never executes) but whose type and tags
    tell confluent's DLQ action which fields to redact (``dlq.redact.rule.types``, default ``ENCRYPT``): the values
    fieldcrypt encrypts, which a failing WRITE rule would otherwise tee to the dead-letter topic in clear."""
    return Rule(REDACT_RULE, None, RuleKind.TRANSFORM, mode, "ENCRYPT", sorted(tags), None, None, None, None, True)


def _domain_rules(schema: Schema | None, redact: frozenset[str] = frozenset()) -> Schema | None:
    """``schema`` without the rules fieldcrypt replaces, or None when no domain rule is left to run. ``redact``: the
    encryption tags, carried (with those of the schema's ENCRYPT rules) by a rule that never runs, for confluent's DLQ
    action to redact."""
    rule_set = schema.rule_set if schema is not None else None
    if schema is None or rule_set is None or not rule_set.domain_rules:
        return None
    kept = [r for r in rule_set.domain_rules if str(r.type).upper() not in _REPLACED]
    if not kept:
        return None
    replaced = {t for r in rule_set.domain_rules if str(r.type).upper() in _REPLACED for t in (r.tags or ())}
    tags = frozenset(redact) | replaced
    if tags:  # (UPDOWN: never executed among domain rules, which run on WRITE and READ only)
        kept.append(_redaction(tags, RuleMode.UPDOWN))
    elif len(kept) == len(rule_set.domain_rules):
        return schema
    rules: RuleSet = attrs.evolve(rule_set, domain_rules=kept, encoding_rules=None)
    evolved: Schema = attrs.evolve(schema, rule_set=rules)
    return evolved


#: the record's bytes as they arrived, while a deserializer reads it (:data:`wire_set`): what confluent's DLQ action
#: sends when a READ or migration rule fails, as confluent's deserializers hand it over, never the decrypted record
_WIRE: ContextVar[Any] = ContextVar("fieldcrypt_wire", default=None)


#: around a deserializer's call (``token = wire_set(data)``; ``finally: wire_reset(token)``): the record's bytes, for
#: the rules it runs (:func:`read_rules`, :func:`migrate`); two calls, not a context manager (one costs 1-2 us a record)
wire_set = _WIRE.set
wire_reset = _WIRE.reset


def refuse_encoding_rules(schema: Schema | None, subject: str | None) -> None:
    """A schema with ENCODING-phase rules (confluent runs them on the serialized bytes: ENCRYPT_PAYLOAD, a custom
    transform) is refused (``PolicyError``): fieldcrypt's serdes do not run them, and writing without them would send
    in clear what the schema asks to be encrypted as a whole (or write bytes its other readers cannot read)."""
    rule_set = schema.rule_set if schema is not None else None
    rules = [r for r in (rule_set.encoding_rules or ()) if not r.disabled] if rule_set is not None else []
    if rules:
        kinds = ", ".join(sorted({str(r.type) for r in rules}))
        raise PolicyError(
            f"the schema carries ENCODING-phase rules ({kinds}), which fieldcrypt's serializers and deserializers do "
            "not run (docs/compatibility.md): tag the fields to encrypt instead of encrypting the payload",
            subject=subject,
        )


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
    env["wildcard_match"] = wildcard_match
    return types.FunctionType(plain.__code__, env, plain.__name__, plain.__defaults__, plain.__closure__)


class _BoundedRuleContext(_serde.RuleContext):
    """confluent's ``RuleContext`` whose ``metadata.tags`` wildcards are matched in time linear in the field name."""

    __slots__ = ()
    get_tags = _rebound_get_tags()


def bounded_tags(rule_ctx: Any) -> Any:
    """``rule_ctx`` (the ``RuleContext`` confluent made for one rule, before its transformer enters any field) as a
    :class:`_BoundedRuleContext` (it has ``__slots__``: the class is swapped, nothing else changes). Every format's
    field transformer calls this first, also for the context confluent's DLQ action makes to redact a record."""
    if type(rule_ctx) is _serde.RuleContext:
        rule_ctx.__class__ = _BoundedRuleContext
    elif not isinstance(rule_ctx, _BoundedRuleContext):  # a confluent release that makes another kind: look first
        raise RuntimeError(f"cannot bound the wildcard matching of a {type(rule_ctx).__qualname__}")
    return rule_ctx


_bounded_tags = bounded_tags  # the name tests know


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
    serde: Any,
    ctx: SerializationContext,
    subject: str,
    writer_raw: Schema,
    parsed: Any,
    record: Any,
    field_rules: FieldRules,
) -> Any:
    """Decrypt a record Confluent CSFLE wrote (migration from CSFLE): the writer schema's ENCRYPT rules only, through
    confluent's FieldEncryptionExecutor (registered by the application, with its DEK registry and ``rule_conf``).
    ``parsed`` is the writer schema as this serde parses it (fastavro dict, or None for JSON); ``field_rules``: the
    format's (:data:`FieldRules`)."""
    if _loop.current() is not None:  # confluent's executor asks its DEK registry with a blocking client: off the loop
        raise _loop.OffLoop
    target = _encrypt_rules_only(writer_raw)
    ctx = _without_replay_headers(ctx)
    transformer, inline = field_rules(serde, writer_raw, parsed)
    return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, record, inline, transformer)


def write_rules(
    serde: Any, ctx: SerializationContext, subject: str, written: Schema | None, value: Any, field_rules: FieldRules
) -> Any:
    """The WRITE domain rules of the schema written, on a deep copy of the plaintext record."""
    refuse_encoding_rules(written, subject)  # confluent would run them after encoding, on this path only
    opts = getattr(serde, "_opts", None)
    target = _domain_rules(written, opts.rules.encrypt if opts is not None else frozenset())
    if target is None or written is None:
        return value
    transformer, inline = field_rules(serde, written, None)
    return serde._execute_rules(ctx, subject, RuleMode.WRITE, None, target, copy.deepcopy(value), inline, transformer)


def read_rules(
    serde: Any,
    ctx: SerializationContext,
    subject: str,
    reader_raw: Schema | None,
    parsed: Any,
    value: Any,
    field_rules: FieldRules,
) -> Any:
    """The READ domain rules of the reader schema (``parsed``: as this serde parsed it, None when it did not) on the
    decrypted record."""
    target = _domain_rules(reader_raw)
    if target is None or reader_raw is None:
        return value
    transformer, inline = field_rules(serde, reader_raw, parsed)
    # the record's bytes as they arrived (as confluent's deserializers hand them over): what a DLQ action sends
    return serde._execute_rules(ctx, subject, RuleMode.READ, None, target, value, inline, transformer, _WIRE.get())


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
    # confluent's _execute_migrations, with the record's bytes as they arrived for a DLQ action (confluent migrates
    # before its ENCRYPT executor decrypts; fieldcrypt after it decrypted: the record is plaintext here)
    wire = _WIRE.get()
    for m in migrations:
        if m.source is not None and m.target is not None:
            value = serde._execute_rules_with_phase(
                ctx, subject, RulePhase.MIGRATION, m.rule_mode, m.source.schema, m.target.schema, value, None, None,
                wire,
            )  # fmt: skip
    return value, True


def has_migrations(*schemas: Schema | None) -> bool:
    """Whether any of the schemas carries migration rules."""
    return any(s is not None and s.rule_set is not None and bool(s.rule_set.migration_rules) for s in schemas)
