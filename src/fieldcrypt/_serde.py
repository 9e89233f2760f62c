"""What the Avro and JSON serdes share: fieldcrypt's conf keys, subjects and domains, and the plan cache."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import SerializationContext, SerializationError

from fieldcrypt._engine import NOT_A_CIPHERTEXT, STRICT, Outcomes, PlanRunner, RecordState
from fieldcrypt._plan import DEFAULT_DATA_SUBJECT_TAG, DEFAULT_TAGS, FieldPlan, TagRules
from fieldcrypt._rules import csfle_read, has_encrypt_rules
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    FieldcryptError,
    KeyCorruptedError,
    KeyNotFoundError,
    KeyShreddedError,
    MalformedRecordError,
    PolicyError,
    format_key_id,
)
from fieldcrypt.keyring import Keyring
from fieldcrypt.stats import SerdeStats

__all__ = [
    "FIELDCRYPT_CONF",
    "READ_CONF",
    "WRITE_CONF",
    "Options",
    "PlanCache",
    "PolicyCheck",
    "call_confluent_init",
    "decrypt_record",
    "malformed",
    "refused",
    "split_conf",
]

#: fieldcrypt's own conf keys, accepted next to confluent's in the same ``conf`` dict
FIELDCRYPT_CONF: Mapping[str, str] = {
    "fieldcrypt.tags": "tags whose fields are encrypted (list or comma-separated string; default PII)",
    "fieldcrypt.data.subject.tag": f"tag marking the data-subject id field (default {DEFAULT_DATA_SUBJECT_TAG})",
    "fieldcrypt.plaintext.tags": "tags the schema carries that mean 'leave in clear' (list; default none). Every "
    "tag in a schema must be encrypted, the data-subject tag, or listed here",
    "fieldcrypt.tag.domains": "dict mapping a tag to a named key domain shared across subjects",
    "fieldcrypt.domain": "the default key domain (default: the registry subject)",
}
#: serializer-only keys
WRITE_CONF: Mapping[str, str] = {
    "fieldcrypt.allow.tag.removal": "True to write with a schema that encrypts fewer fields than the local "
    "schema_str (use.latest.version / use.schema.id; default False: refused)",
}
#: deserializer-only keys: what to return for a value that cannot be read (see fieldcrypt._engine.Outcomes)
READ_CONF: Mapping[str, str] = {
    "fieldcrypt.on.erased": "raise | null | placeholder | marker, for values whose key was shredded (default null)",
    "fieldcrypt.on.denied": "raise | null | placeholder | marker, for values this consumer has no key for "
    "(default raise)",
    "fieldcrypt.placeholder": "the text returned in 'placeholder' mode (default <erased>)",
    "fieldcrypt.on.plaintext": "raise | accept, for tagged fields holding plaintext (records written before "
    "encryption began; counted in stats.plaintext; never accepted in a record that also holds ciphertext; "
    "default raise)",
}


@dataclass(frozen=True)
class Options:
    rules: TagRules
    domain: str | None
    outcomes: Outcomes = STRICT
    allow_tag_removal: bool = False


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
            on_plaintext=rest.pop("fieldcrypt.on.plaintext", "raise"),
        )
    rules = TagRules.from_conf(
        rest.pop("fieldcrypt.tags", DEFAULT_TAGS),
        rest.pop("fieldcrypt.data.subject.tag", DEFAULT_DATA_SUBJECT_TAG),
        rest.pop("fieldcrypt.tag.domains", None),
        rest.pop("fieldcrypt.plaintext.tags", ()),
    )
    domain = rest.pop("fieldcrypt.domain", None)
    if domain is not None and (not isinstance(domain, str) or not domain.strip()):
        raise ConfigurationError("fieldcrypt.domain must be a non-empty string")
    allow = False
    if not reading:
        allow = rest.pop("fieldcrypt.allow.tag.removal", False)
        if not isinstance(allow, bool):
            raise ConfigurationError("fieldcrypt.allow.tag.removal must be True or False")
    return (rest if conf is not None else None), Options(rules, domain, outcomes, allow)


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
    fingerprint: str = ""  # of the schema as registered (text, references, metadata.tags): see PolicyCheck
    source: Schema | None = None  # the schema as registered (its ruleSet is run by fieldcrypt._rules)


def schema_fingerprint(schema: Schema) -> str:
    """sha256 of a registered schema in canonical form: parsed text (registries may re-serialize it), references
    and metadata.tags. The same in every registry that holds the schema, whatever its id there."""
    try:
        text = json.dumps(json.loads(schema.schema_str or ""), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        text = str(schema.schema_str)
    refs = sorted((str(r.name), str(r.subject), str(r.version)) for r in schema.references or [])
    tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else {}
    meta = sorted((str(k), sorted(map(str, v))) for k, v in (tags or {}).items())
    blob = json.dumps([schema.schema_type or "AVRO", text, refs, meta], separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def policy_of(plan: FieldPlan, domain: str) -> str:
    """What a plan encrypts, under which domains, and the data-subject field: the part of a producer's
    configuration its consumers must share, as canonical JSON."""
    fields = sorted({(leaf.path, leaf.domain or domain) for leaf in plan.leaves})
    return json.dumps({"v": 1, "encrypt": fields, "subject": plan.data_subject_path}, separators=(",", ":"))


def _describe(mine: str, theirs: str) -> str:
    a, b = json.loads(mine), json.loads(theirs)
    ours = {tuple(x) for x in a["encrypt"]}
    others = {tuple(x) for x in b["encrypt"]}
    parts = []
    only_theirs = sorted(p for p, _ in others - ours if p not in {q for q, _ in ours})
    only_ours = sorted(p for p, _ in ours - others if p not in {q for q, _ in others})
    moved = sorted({p for p, _ in ours - others} & {p for p, _ in others - ours})
    if only_theirs:
        parts.append(f"producers encrypt {', '.join(only_theirs)}, which this configuration leaves in clear")
    if only_ours:
        parts.append(f"this configuration decrypts {', '.join(only_ours)}, which producers leave in clear")
    if moved:
        parts.append(f"{', '.join(moved)} use another key domain (fieldcrypt.domain / fieldcrypt.tag.domains)")
    if a["subject"] != b["subject"]:
        parts.append(f"the data-subject field is {b['subject']} for producers, {a['subject']} here")
    return "; ".join(parts) or "the recorded policy differs"


class PolicyCheck:
    """Producers record, in the key store, what they encrypt for each (schema, key domain); consumers compare.

    A consumer configured differently from its producers (other ``fieldcrypt.tags``, ``plaintext.tags``,
    data-subject tag or domains) would either return ciphertext as a value or report plaintext as tampering; with
    the policy in the shared key store it raises a ``ConfigurationError`` naming the difference instead. Checked
    once per schema and domain per serde; schemas without any tag need no check (no configuration encrypts them).
    """

    def __init__(self, keyring: Keyring, *, writing: bool, stats: SerdeStats | None = None) -> None:
        self._keyring = keyring
        self._writing = writing
        self._stats = stats  # the serde's: the key-store calls made here are its calls
        self._done: set[tuple[str, str]] = set()

    def __call__(self, cached: CachedPlan, domain: str | None, subject: str | None) -> None:
        if domain is None or (cached.fingerprint, domain) in self._done:
            return
        plan = cached.runner.plan
        if plan.decisions and cached.fingerprint:
            fp = hashlib.sha256(f"{cached.fingerprint}\0{domain}".encode()).hexdigest()
            mine = policy_of(plan, domain)
            keyring = self._keyring
            try:
                with keyring.metering(self._stats):
                    theirs = keyring.publish_policy(fp, mine) if self._writing else keyring.published_policy(fp)
            except FieldcryptError as exc:
                raise exc.with_context(subject=subject) from exc
            if theirs is not None and theirs != mine:
                who = "another producer of this schema" if self._writing else "the producers of this schema"
                raise ConfigurationError(
                    f"this fieldcrypt configuration disagrees with {who} (recorded in the key store): "
                    f"{_describe(mine, theirs)}; align fieldcrypt.tags, fieldcrypt.plaintext.tags, "
                    "fieldcrypt.data.subject.tag and fieldcrypt.tag.domains",
                    subject=subject,
                )
        if len(self._done) < 10_000:
            self._done.add((cached.fingerprint, domain))


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
            if schema is None:  # the lookup confluent's deserializer makes, through the client's cache
                if not isinstance(schema_id, int):
                    raise ConfigurationError("a schema GUID cannot be looked up without its schema")
                schema = self._registry.get_schema(schema_id, subject)
            try:
                plan = self.compile(schema)
                cached = CachedPlan(
                    schema_id, self._parse(schema), PlanRunner(plan), schema_fingerprint(schema), schema
                )
            except (FieldcryptError, SchemaRegistryError):
                raise
            except Exception as exc:  # the writer's schema is not one this serde's format can parse
                raise PolicyError(
                    f"schema id {schema_id} cannot be read as this deserializer's format ({type(exc).__name__})",
                    subject=subject,
                ) from exc
            self._plans[schema_id] = cached
            return cached

    def compile(self, schema: Schema) -> FieldPlan:
        tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
        return self._compile(self._parse(schema), self._rules.with_metadata(tags))


def cached_subject(
    serde: Any,
    cache: dict[tuple[str, str, str | None], str],
    ctx: SerializationContext | None,
    record_name: str | None,
) -> str | None:
    """The subject for (topic, field, record name), through confluent's strategy once, then from ``cache``. The
    record name is the Avro schema's full name or the JSON schema's ``title``, as confluent passes them."""
    if ctx is None:
        return None
    key = (ctx.topic, ctx.field, record_name)
    subject = cache.get(key)
    if subject is None:
        subject = subject_of(serde, ctx, record_name)
        if subject is not None and len(cache) < 10_000:
            cache[key] = subject
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

    def __init__(
        self,
        serde: Any,
        plans: PlanCache,
        schema_type: str,
        local_parsed: Any = None,
        local_plan: FieldPlan | None = None,
        allow_tag_removal: bool = False,
    ) -> None:
        self._serde = serde
        self._plans = plans
        self._local_plan = local_plan
        self._allow_removal = allow_tag_removal
        self._type = schema_type
        self._local_parsed = local_parsed  # confluent writes with its own parsed schema when not in latest mode
        self.latest_mode = is_latest_mode(serde)
        self._by_subject: dict[str, WriteEntry] = {}
        self._by_id: dict[int, WriteEntry] = {}

    def get(self, subject: str) -> WriteEntry:
        entry = None if self.latest_mode else self._by_subject.get(subject)
        return entry if entry is not None else self._resolve(subject)

    def _resolve(self, subject: str) -> WriteEntry:
        ever = None
        if not self.latest_mode and self._serde._auto_register and self._local_plan is not None:
            ever = self._check_ever_encrypted(subject)
        registered = writer_schema(self._serde, subject)
        if registered.schema_id is None:
            raise ConfigurationError("the registry returned no schema id", subject=subject)
        known = self._by_id.get(registered.schema_id)
        if known is not None:  # use.latest.version: the same schema as last time
            return known
        schema = registered.schema
        if (schema is None or schema.schema_str is None) and not self.latest_mode:
            schema = self._serde._schema  # a registry answering the registration with the id only: what was sent
        cached = self._plans.load(registered.schema_id, subject, schema)
        if self._local_plan is not None:
            self._check_kept(
                self._local_plan, cached.runner.plan, subject, "the local schema_str", registered.schema_id
            )
        if not self.latest_mode and self._local_parsed is not None:
            cached = CachedPlan(cached.schema_id, self._local_parsed, cached.runner, cached.fingerprint, cached.source)
        prefix = b"\x00" + registered.schema_id.to_bytes(4, "big")
        entry = (cached, prefix, SchemaId(self._type, registered.schema_id, registered.guid))
        if ever is not None:
            with self._serde._keyring.metering(self._serde.stats):
                self._serde._keyring.merge_policy(ever, sorted(encrypted_paths(cached.runner.plan)))
        if not self.latest_mode:
            self._by_subject[subject] = entry
        elif len(self._by_id) < 1000:
            self._by_id[registered.schema_id] = entry
        return entry

    def _check_ever_encrypted(self, subject: str) -> str:
        """Before auto-registering: the new schema must encrypt every field this subject's producers encrypted
        before. The record is kept in the key store (a registry lookup of the latest version would be a request
        confluent's serializer never makes). Returns the record's name, to add this schema's fields after it."""
        assert self._local_plan is not None
        # per registry (its URLs as configured) and subject: a subject of another registry is another subject
        urls = getattr(getattr(self._serde._registry, "_rest_client", None), "base_urls", None) or []
        where = json.dumps(["encrypted-fields", sorted(map(str, urls)), subject])
        name = "encrypted-fields:" + hashlib.sha256(where.encode("utf-8")).hexdigest()
        mine = sorted(encrypted_paths(self._local_plan))
        try:
            with self._serde._keyring.metering(self._serde.stats):
                before = self._serde._keyring.merge_policy(name, [])
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject) from exc
        lost = sorted(set(before) - set(mine))
        if lost and not self._allow_removal:
            declared_plain = {loc for loc, _, decision in self._local_plan.decisions if decision == "plaintext"}
            if set(lost) <= declared_plain:  # the schema still tags them: this configuration leaves them in clear
                raise ConfigurationError(
                    "this fieldcrypt configuration disagrees with another producer of this subject (recorded in the "
                    f"key store): producers encrypt {', '.join(lost)}, which this configuration leaves in clear; "
                    "align fieldcrypt.tags and fieldcrypt.plaintext.tags",
                    subject=subject,
                )
            raise PolicyError(
                "the schema to register drops tags that earlier producers of this subject encrypted (recorded in "
                f"the key store), so these would be written in clear: {', '.join(lost)}; set "
                "fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )
        return name

    def _check_kept(
        self, before: FieldPlan, after: FieldPlan, subject: str, source: str, schema_id: Any, written: str = ""
    ) -> None:
        if self._allow_removal:
            return
        lost = sorted(encrypted_paths(before) - encrypted_paths(after))
        if lost:
            raise PolicyError(
                f"{written or f'the schema written (id {schema_id})'} drops tags that {source} carries, so these "
                f"would be written in clear or under the shared key: {', '.join(lost)}; set "
                "fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )


def encrypted_paths(plan: FieldPlan) -> set[str]:
    """The schema paths a plan encrypts (namespace-free, so a re-registered schema compares equal), and its
    data-subject id field: a schema that drops or moves that tag would write the person's values under the
    domain's shared key, beyond the reach of a per-person shred, so it counts as a tag removal too."""
    paths = {leaf.path for leaf in plan.leaves}
    if plan.data_subject_path is not None:
        paths.add(f"{plan.data_subject_path} (data-subject id)")
    return paths


def malformed(exc: Exception, subject: str | None) -> FieldcryptError:
    """What a failure to decode a record's bytes or document is reported as: the error itself if it is
    fieldcrypt's, else a ``MalformedRecordError`` (confluent's framing errors keep their message, which names no
    value). Raise it ``from exc`` so the cause is chained."""
    if isinstance(exc, FieldcryptError):
        return exc
    if isinstance(exc, SerializationError):
        return MalformedRecordError(str(exc), subject=subject)
    return MalformedRecordError(
        f"the record does not decode with its writer schema ({type(exc).__name__})", subject=subject
    )


def decrypt_record(
    serde: Any,
    cached: CachedPlan,
    record: Any,
    subject: str | None,
    domain: str,
    ctx: SerializationContext | None,
    parsed_writer: Any,
) -> tuple[Any, RecordState | None]:
    """Decrypt a decoded record; returns it and its counts (for ``SerdeStats._record``, once the record is done).
    When its writer schema carries a Confluent CSFLE ENCRYPT rule (a topic moving from CSFLE to fieldcrypt), a
    record none of whose tagged values is a fieldcrypt ciphertext is handed to confluent's ENCRYPT executor instead
    (which authenticates it with CSFLE's own keys); if that fails too, fieldcrypt's verdict stands. A fieldcrypt
    record is never read by the CSFLE path, nor the reverse."""
    runner, outcomes, keyring, stats = cached.runner, serde._opts.outcomes, serde._keyring, serde.stats
    if ctx is None or subject is None or not has_encrypt_rules(cached.source):
        return runner.decrypt_counted(record, keyring, subject, domain, outcomes, stats)
    original = copy.deepcopy(record)
    try:  # unknown key ids must raise here, to be told apart from CSFLE values
        return runner.decrypt_counted(record, keyring, subject, domain, replace(outcomes, on_denied="raise"), stats)
    except DecryptionError as exc:
        foreign = (type(exc) is DecryptionError and exc.reason == NOT_A_CIPHERTEXT) or (
            type(exc) is KeyNotFoundError and exc.owner is None
        )
        if not foreign:
            if isinstance(exc, (AccessDeniedError, KeyNotFoundError)) and not isinstance(exc, KeyShreddedError):
                return runner.decrypt_counted(original, keyring, subject, domain, outcomes, stats)  # the user's outcome
            raise
    assert cached.source is not None
    try:
        out = csfle_read(serde, ctx, subject, cached.source, parsed_writer, copy.deepcopy(original))
        undecrypted = _not_decrypted_by_csfle(runner, original, out, subject)
    except Exception:
        return runner.decrypt_counted(original, keyring, subject, domain, outcomes, stats)  # not CSFLE either
    if undecrypted is None:
        return out, RecordState(keyring, subject, domain, None)  # CSFLE's values: not fieldcrypt's to count
    if undecrypted:  # some values CSFLE decrypted, others it returned as they came: never a record to trust
        raise DecryptionError(
            "the record mixes values Confluent's ENCRYPT executor decrypted with tagged values it did not",
            subject=subject,
            field_path=undecrypted[0],
        )
    return runner.decrypt_counted(original, keyring, subject, domain, outcomes, stats)  # CSFLE decrypted nothing


def _not_decrypted_by_csfle(runner: PlanRunner, before: Any, after: Any, subject: str | None) -> list[str] | None:
    """Which tagged values confluent's ENCRYPT executor returned as they came, judged per value after it ran (a rule
    setting or a record header may have made it skip the record or swallow its failure): None when it decrypted
    every non-null tagged value; the paths it left unchanged when it decrypted some; [] when it decrypted none."""
    was = runner.tagged_values(before, subject)
    now = runner.tagged_values(after, subject)
    if [p for p, _ in was] != [p for p, _ in now]:
        raise DecryptionError("the record's tagged values moved under Confluent's ENCRYPT executor", subject=subject)
    same = [
        p
        for (p, old), (_, new) in zip(was, now, strict=True)
        if old is not None and (new is None or (type(old) is type(new) and old == new))
    ]
    changed = sum(1 for _, old in was if old is not None) - len(same)
    if not same:
        return None if changed else []
    return same if changed else []


log = logging.getLogger("fieldcrypt.serde")  # the events are listed in docs/observability.md


def refused(stats: SerdeStats, exc: Exception, subject: str | None = None) -> None:
    """A record the serde refused (its call raises ``exc``): count it and log it, never with a value. Tampering
    (a ``DecryptionError`` itself, or a ``KeyCorruptedError``) is a warning; anything else is the caller's to handle
    and is logged at DEBUG (the keyring logs unavailable and denied keys itself)."""
    stats._error(exc)
    if not isinstance(exc, FieldcryptError):
        if log.isEnabledFor(logging.DEBUG):  # another library's message may quote a value: the type only
            log.debug(
                "%s refused a record: %s",
                stats.role,
                type(exc).__name__,
                extra={"event": "record.refused", "role": stats.role, "subject": subject, "error": type(exc).__name__},
            )
        return
    tampered = type(exc) is DecryptionError or isinstance(exc, KeyCorruptedError)
    level = logging.WARNING if tampered else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s refused a record%s: %s: %s",
            stats.role,
            " (tampered, moved or not a fieldcrypt ciphertext)" if tampered else "",
            type(exc).__name__,
            str(exc),  # the message only: the exception object chains others (a jsonschema error holds the document)
            extra={
                "event": "record.tampered" if tampered else "record.refused",
                "role": stats.role,
                "subject": exc.subject or subject,
                "field_path": exc.field_path,
                "key_id": format_key_id(exc.key_id) if exc.key_id is not None else None,
                "error": type(exc).__name__,
            },
        )


def check_framing(data: bytes) -> None:
    """confluent's check, with confluent's error, for data too short to carry the Confluent framing."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedRecordError(f"expected bytes to deserialize, got {type(data).__name__}")
    if len(data) <= 5:
        raise MalformedRecordError(
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
