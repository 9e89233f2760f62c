"""What the Avro and JSON serdes share: fieldcrypt's conf keys, subjects and domains, and the plan cache."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import SerializationContext, SerializationError

from fieldcrypt._engine import STRICT, Outcomes, PlanRunner
from fieldcrypt._plan import DEFAULT_DATA_SUBJECT_TAG, DEFAULT_TAGS, FieldPlan, TagRules
from fieldcrypt._registry import fetch_schema
from fieldcrypt.errors import ConfigurationError, FieldcryptError
from fieldcrypt.keyring import Keyring

__all__ = ["FIELDCRYPT_CONF", "READ_CONF", "Options", "PlanCache", "call_confluent_init", "split_conf"]

#: fieldcrypt's own conf keys, accepted next to confluent's in the same ``conf`` dict
FIELDCRYPT_CONF: Mapping[str, str] = {
    "fieldcrypt.tags": "tags whose fields are encrypted (list or comma-separated string; default PII)",
    "fieldcrypt.data.subject.tag": f"tag marking the data-subject id field (default {DEFAULT_DATA_SUBJECT_TAG})",
    "fieldcrypt.plaintext.tags": "tags the schema carries that mean 'leave in clear' (list; default none). Every "
    "tag in a schema must be encrypted, the data-subject tag, or listed here",
    "fieldcrypt.tag.domains": "dict mapping a tag to a named key domain shared across subjects",
    "fieldcrypt.domain": "the default key domain (default: the registry subject)",
}
#: deserializer-only keys: what to return for a value that cannot be read (see fieldcrypt._engine.Outcomes)
READ_CONF: Mapping[str, str] = {
    "fieldcrypt.on.erased": "raise | null | placeholder | marker, for values whose key was shredded (default null)",
    "fieldcrypt.on.denied": "raise | null | placeholder | marker, for values this consumer has no key for "
    "(default raise)",
    "fieldcrypt.placeholder": "the text returned in 'placeholder' mode (default <erased>)",
}


@dataclass(frozen=True)
class Options:
    rules: TagRules
    domain: str | None
    outcomes: Outcomes = STRICT


def split_conf(conf: Mapping[str, Any] | None, *, reading: bool = False) -> tuple[dict[str, Any] | None, Options]:
    """Separate fieldcrypt's keys from confluent's (the rest is left for confluent to check)."""
    if conf is not None and not isinstance(conf, Mapping):
        raise ConfigurationError("conf must be a dict")
    rest = dict(conf or {})
    outcomes = STRICT
    if reading:
        outcomes = Outcomes(
            on_erased=rest.pop("fieldcrypt.on.erased", "null"),
            on_denied=rest.pop("fieldcrypt.on.denied", "raise"),
            placeholder=rest.pop("fieldcrypt.placeholder", "<erased>"),
        )
    rules = TagRules.from_conf(
        rest.pop("fieldcrypt.tags", DEFAULT_TAGS),
        rest.pop("fieldcrypt.data.subject.tag", DEFAULT_DATA_SUBJECT_TAG),
        rest.pop("fieldcrypt.tag.domains", None),
        rest.pop("fieldcrypt.plaintext.tags", ()),
    )
    domain = rest.pop("fieldcrypt.domain", None)
    if domain is not None and (not isinstance(domain, str) or not domain):
        raise ConfigurationError("fieldcrypt.domain must be a non-empty string")
    return (rest if conf is not None else None), Options(rules, domain, outcomes)


def call_confluent_init(init: Callable[[], None], valid: list[str]) -> None:
    """Run confluent's constructor; turn its 'Unrecognized properties' into an error listing every valid key."""
    try:
        init()
    except ValueError as exc:
        if isinstance(exc, FieldcryptError):
            raise
        text = str(exc)
        if text.startswith("Unrecognized properties"):
            raise ConfigurationError(f"{text}; valid keys are: {', '.join(sorted(valid))}") from None
        raise ConfigurationError(text) from exc


def check_keyring(keyring: object) -> Keyring:
    if not isinstance(keyring, Keyring):
        raise ConfigurationError("keyring= must be a fieldcrypt.Keyring (where keys live and what wraps them)")
    return keyring


def subject_of(serde: Any, ctx: SerializationContext | None, record_name: str | None) -> str | None:
    """The registry subject, through confluent's configured subject name strategy."""
    if ctx is None:
        return None
    if serde._strategy_accepts_client:
        return serde._subject_name_func(ctx, record_name, serde._registry, serde._subject_name_conf)  # type: ignore[no-any-return]
    return serde._subject_name_func(ctx, record_name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class CachedPlan:
    schema_id: int | str  # a GUID for GUID-framed records
    parsed: Any
    runner: PlanRunner


class PlanCache:
    """Field plans by schema id, compiled once from the schema *as registered* (so inline tags and registry
    ``metadata.tags`` give producers and consumers the same plan)."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        parse: Callable[[Schema], Any],
        compile_plan: Callable[[Any, TagRules], FieldPlan],
        rules: TagRules,
    ) -> None:
        self._registry = registry
        self._parse = parse
        self._compile = compile_plan
        self._rules = rules
        self._plans: dict[int | str, CachedPlan] = {}
        self._lock = threading.Lock()

    def get(self, schema_id: int | str) -> CachedPlan | None:
        return self._plans.get(schema_id)

    def load(self, schema_id: int | str, subject: str | None, schema: Schema | None = None) -> CachedPlan:
        found = self._plans.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            found = self._plans.get(schema_id)
            if found is not None:
                return found
            if schema is None or (schema.metadata is None and isinstance(schema_id, int)):
                if not isinstance(schema_id, int):
                    raise ConfigurationError("a schema GUID cannot be looked up without its schema")
                schema = fetch_schema(self._registry, schema_id, subject)
            plan = self.compile(schema)
            cached = CachedPlan(schema_id, self._parse(schema), PlanRunner(plan))
            self._plans[schema_id] = cached
            return cached

    def compile(self, schema: Schema) -> FieldPlan:
        tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
        return self._compile(self._parse(schema), self._rules.with_metadata(tags))


def cached_subject(
    serde: Any, cache: dict[tuple[str, str], str], ctx: SerializationContext | None, record_name: str | None
) -> str | None:
    """The subject for (topic, field), through confluent's strategy once, then from ``cache``."""
    if ctx is None:
        return None
    subject = cache.get((ctx.topic, ctx.field))
    if subject is None:
        subject = subject_of(serde, ctx, record_name)
        if subject is not None and len(cache) < 10_000:
            cache[(ctx.topic, ctx.field)] = subject
    return subject


def writer_schema(serde: Any, subject: str) -> Any:
    """What confluent's serializer would write with for ``subject``: the registered schema (``RegisteredSchema``)
    from use.schema.id / use.latest.version / use.latest.with.metadata, else the serializer's own schema,
    registered (auto.register.schemas) or looked up."""
    latest = serde._get_reader_schema(subject)
    if latest is not None:
        return latest
    if serde._schema is None:
        raise ConfigurationError("no schema to write with: pass schema_str, or set use.latest.version", subject=subject)
    with serde._known_subjects_lock:
        if serde._auto_register:
            return serde._registry.register_schema_full_response(
                subject, serde._schema, normalize_schemas=serde._normalize_schemas
            )
        return serde._registry.lookup_schema(subject, serde._schema, normalize_schemas=serde._normalize_schemas)


def is_latest_mode(serde: Any) -> bool:
    """True when the schema to write with can change between calls (so it is not cached per subject)."""
    return bool(
        serde._use_latest_version or serde._use_latest_with_metadata is not None or serde._use_schema_id is not None
    )


WriteEntry = tuple[CachedPlan, bytes, SchemaId]


class WriteEntries:
    """What a serializer writes with, per subject (or per schema id under use.latest.version): the field plan and
    parsed schema, the 5-byte Confluent prefix, and the ``SchemaId`` for other framings."""

    def __init__(self, serde: Any, plans: PlanCache, schema_type: str, local_parsed: Any = None) -> None:
        self._serde = serde
        self._plans = plans
        self._type = schema_type
        self._local_parsed = local_parsed  # confluent writes with its own parsed schema when not in latest mode
        self.latest_mode = is_latest_mode(serde)
        self._by_subject: dict[str, WriteEntry] = {}
        self._by_id: dict[int, WriteEntry] = {}

    def get(self, subject: str) -> WriteEntry:
        entry = None if self.latest_mode else self._by_subject.get(subject)
        return entry if entry is not None else self._resolve(subject)

    def _resolve(self, subject: str) -> WriteEntry:
        registered = writer_schema(self._serde, subject)
        if registered.schema_id is None:
            raise ConfigurationError("the registry returned no schema id", subject=subject)
        known = self._by_id.get(registered.schema_id)
        if known is not None:  # use.latest.version: the same schema as last time
            return known
        cached = self._plans.load(registered.schema_id, subject, registered.schema)
        if not self.latest_mode and self._local_parsed is not None:
            cached = CachedPlan(cached.schema_id, self._local_parsed, cached.runner)
        prefix = b"\x00" + registered.schema_id.to_bytes(4, "big")
        entry = (cached, prefix, SchemaId(self._type, registered.schema_id, registered.guid))
        if not self.latest_mode:
            self._by_subject[subject] = entry
        elif len(self._by_id) < 1000:
            self._by_id[registered.schema_id] = entry
        return entry


def check_framing(data: bytes) -> None:
    """confluent's check, with confluent's error, for data too short to carry the Confluent framing."""
    if len(data) <= 5:
        raise SerializationError(
            f"Expecting data framing of length 6 bytes or more but total data size is {len(data)} bytes. "
            "This message was not produced with a Confluent Schema Registry serializer"
        )


_SCHEMA_ID_HEADERS = frozenset({"__key_schema_id", "__value_schema_id"})


def prefix_framed(data: bytes, ctx: SerializationContext | None) -> bool:
    """True when the schema id is in the 5-byte prefix; False when a schema-id header carries it (GUID framing,
    where the payload itself may well start with a zero byte)."""
    if data[0] != 0:
        return False
    headers = ctx.headers if ctx is not None else None
    if not headers:
        return True
    keys = headers.keys() if isinstance(headers, dict) else (h[0] for h in headers)
    return not any(k in _SCHEMA_ID_HEADERS for k in keys)
