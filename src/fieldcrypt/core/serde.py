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
from confluent_kafka.serialization import SerializationContext, SerializationError

from fieldcrypt.core.confluent import (
    FieldRules,
    csfle_read,
    has_encrypt_rules,
    subject_of,
)
from fieldcrypt.core.engine import PlanRunner, RecordState
from fieldcrypt.core.lookalike import fieldcrypts, value_of
from fieldcrypt.core.outcomes import STRICT, Outcomes
from fieldcrypt.core.plan import DEFAULT_DATA_SUBJECT_TAG, DEFAULT_TAGS, FieldPlan, TagRules
from fieldcrypt.core.schemas import registry_failure, writer_schema_by_id
from fieldcrypt.crypto.wire import FORMAT_VERSIONS, LATEST_VERSION
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
    UnknownSchemaError,
    UnsupportedFormatError,
    format_key_id,
)
from fieldcrypt.keys import _loop
from fieldcrypt.keys.source import KeySource
from fieldcrypt.keys.store import COMPANION_SUFFIXES, companion_of
from fieldcrypt.observe.stats import SerdeStats

__all__ = [
    "FIELDCRYPT_CONF",
    "READ_CONF",
    "WRITE_CONF",
    "Options",
    "PlanCache",
    "PolicyCheck",
    "Reconfigurable",
    "call_confluent_init",
    "decrypt_record",
    "key_domain",
    "malformed",
    "refuse_unrun",
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
    "fieldcrypt.masks": "dict mapping a tag of fieldcrypt.tags to a mask (email, phone, card, name, date, or a "
    "registered one): its values also get a masked view, under the key domain <domain>/masked, for consumers "
    "granted only that view (format version 2; producers and consumers must agree; default none)",
    "fieldcrypt.deterministic.tags": "tags of fieldcrypt.tags whose values are encrypted deterministically (AES-SIV "
    "under the key of <domain>/det and the person): equal values give equal ciphertexts, so they join, group and "
    "compact; reveals equality within the domain (list or comma-separated string; default none)",
}
#: serializer-only keys
WRITE_CONF: Mapping[str, str] = {
    "fieldcrypt.format.version": "the value format version written: 2 (default) or 1, to pin it while consumers "
    "of an older fieldcrypt are upgraded (docs/wire-format.md, 'Rolling out a format version')",
    "fieldcrypt.allow.tag.removal": "True to write with a schema that encrypts fewer fields than the local "
    "schema_str, or, among the fields it would write in clear, than earlier producers of the subject (recorded in "
    "the key store) or any registered version of the subject (default False: refused)",
}
#: deserializer-only keys: what to return for a value that cannot be read (see fieldcrypt.core.engine.Outcomes)
READ_CONF: Mapping[str, str] = {
    "fieldcrypt.on.erased": "raise | null | placeholder | marker, for values whose key was shredded (default null: "
    "None where the schema admits null at the value's position, else the placeholder; marker objects are not "
    "schema-valid)",
    "fieldcrypt.on.denied": "raise | null | placeholder | marker, for values this consumer has no key for "
    "(default raise)",
    "fieldcrypt.placeholder": "the text standing in for an unreadable value in 'placeholder' mode, and in 'null' "
    "mode where the schema does not admit null (bytes fields: its UTF-8 bytes; base64 strings: their base64; "
    "default <erased>)",
    "fieldcrypt.denied.placeholder": "the text standing in for a value this consumer may not read (no key, or a "
    "KEK without access), as fieldcrypt.placeholder does for an erased one (default <denied>; never equal to it)",
    "fieldcrypt.min.format.version": "the lowest value format version read: 1 (default) or 2, to refuse values "
    "of format 1 (UnsupportedFormatError) once every producer writes 2",
    "fieldcrypt.on.plaintext": "raise | accept, for tagged fields holding plaintext (records written before "
    "encryption began; counted in stats.plaintext; never accepted in a record that also holds ciphertext; "
    "default raise)",
    "fieldcrypt.on.untagged.ciphertext": "raise | accept, for a field the record's schema does not tag holding a "
    "fieldcrypt ciphertext of a key the key store knows (a record re-framed with another schema version's id; "
    "accept: returned as it is, counted in stats.untagged_ciphertext; default raise)",
}


@dataclass(frozen=True)
class Options:
    rules: TagRules
    domain: str | None
    outcomes: Outcomes = STRICT
    allow_tag_removal: bool = False
    format_version: int = LATEST_VERSION


def split_conf(conf: Mapping[str, Any] | None, *, reading: bool = False) -> tuple[dict[str, Any] | None, Options]:
    """Separate fieldcrypt's keys from confluent's (the rest is left for confluent to check)."""
    if conf is not None and not isinstance(conf, Mapping):
        raise ConfigurationError("conf must be a dict")
    rest = dict(conf or {})
    refuse_unrun(rest)
    outcomes = STRICT
    if reading:
        outcomes = Outcomes(
            on_erased=rest.pop("fieldcrypt.on.erased", "null"),
            on_denied=rest.pop("fieldcrypt.on.denied", "raise"),
            placeholder=rest.pop("fieldcrypt.placeholder", "<erased>"),
            denied_placeholder=rest.pop("fieldcrypt.denied.placeholder", "<denied>"),
            on_plaintext=rest.pop("fieldcrypt.on.plaintext", "raise"),
            min_version=_version(rest.pop("fieldcrypt.min.format.version", 1), "fieldcrypt.min.format.version"),
        )
    rules = TagRules.from_conf(
        rest.pop("fieldcrypt.tags", DEFAULT_TAGS),
        rest.pop("fieldcrypt.data.subject.tag", DEFAULT_DATA_SUBJECT_TAG),
        rest.pop("fieldcrypt.tag.domains", None),
        rest.pop("fieldcrypt.plaintext.tags", ()),
        rest.pop("fieldcrypt.masks", None),
        rest.pop("fieldcrypt.deterministic.tags", ()),
    )
    domain = rest.pop("fieldcrypt.domain", None)
    if domain is not None and (not isinstance(domain, str) or not domain.strip()):
        raise ConfigurationError("fieldcrypt.domain must be a non-empty string")
    if domain is not None and companion_of(domain) is not None:
        raise ConfigurationError(
            f"fieldcrypt.domain {domain!r}: key domains ending in {' or '.join(map(repr, COMPANION_SUFFIXES))} are "
            "reserved (masked views, deterministic keys)"
        )
    allow = False
    version = LATEST_VERSION
    if not reading:
        allow = rest.pop("fieldcrypt.allow.tag.removal", False)
        if not isinstance(allow, bool):
            raise ConfigurationError("fieldcrypt.allow.tag.removal must be True or False")
        version = _version(rest.pop("fieldcrypt.format.version", LATEST_VERSION), "fieldcrypt.format.version")
        if version < 2 and rules.deterministic:
            raise ConfigurationError(
                "fieldcrypt.deterministic.tags needs value format version 2 (format 1 has no deterministic values): "
                "drop fieldcrypt.format.version=1 once consumers read format 2"
            )
        if version < 2 and rules.masks:
            raise ConfigurationError(
                "fieldcrypt.masks needs value format version 2 (format 1 cannot carry a masked view): drop "
                "fieldcrypt.format.version=1 once consumers read format 2, or drop fieldcrypt.masks until then"
            )
    return (rest if conf is not None else None), Options(rules, domain, outcomes, allow, version)


class Reconfigurable:
    """confluent's configuration methods a serde may be called with after construction, kept true for the fieldcrypt
    serdes (first among their bases): validation rules asked for are refused, as in the conf (they are not run), and
    a new subject name strategy drops the subjects cached under the old one."""

    def configure_validation_rules(self, conf: dict[str, Any]) -> None:
        refuse_unrun(conf)
        super().configure_validation_rules(conf)  # type: ignore[misc]

    def configure_subject_name_strategy(self, *args: Any, **kwargs: Any) -> None:
        super().configure_subject_name_strategy(*args, **kwargs)  # type: ignore[misc]
        for cache in ("_subjects", "_lanes"):  # what was decided with the old strategy
            found = getattr(self, cache, None)
            if found is not None:
                found.clear()


def refuse_unrun(conf: Mapping[str, Any]) -> None:
    """confluent 2.16's inline validation rules (``validation.rules.*``) are accepted by its constructors, but the
    fieldcrypt serdes do not run them (docs/compatibility.md): a conf asking for them is refused, never silently
    skipped. Left at confluent's defaults (disabled, no executor) it is accepted as it is."""
    execution = conf.get("validation.rules.execution")
    if execution is not None and str(getattr(execution, "name", execution)).strip().upper() != "DISABLED":
        raise ConfigurationError(
            "validation.rules.execution: fieldcrypt's serializers and deserializers do not run confluent's inline "
            "validation rules yet (docs/compatibility.md); leave it DISABLED, or validate before serializing"
        )
    if conf.get("validation.rules.executor") is not None:
        raise ConfigurationError(
            "validation.rules.executor: fieldcrypt's serializers and deserializers do not run confluent's inline "
            "validation rules yet (docs/compatibility.md)"
        )


def _version(value: Any, key: str) -> int:
    """A format version given as a conf value: 1 or 2, as an int or its decimal text (as properties files give)."""
    if isinstance(value, str) and value.strip() in ("1", "2"):
        return int(value.strip())
    if type(value) is int and value in FORMAT_VERSIONS:
        return value
    raise ConfigurationError(f"{key} must be one of {', '.join(map(str, FORMAT_VERSIONS))}")


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


def key_domain(configured: str | None, subject: str | None) -> str:
    """The default key domain of a record: ``fieldcrypt.domain``, else the subject; neither is a usage error."""
    domain = configured or subject
    if domain is None:
        raise ConfigurationError("cannot choose the key domain: pass a SerializationContext or set fieldcrypt.domain")
    if companion_of(domain) is not None:
        raise ConfigurationError(
            f"the subject names the key domain {domain!r}, but key domains ending in "
            f"{' or '.join(map(repr, COMPANION_SUFFIXES))} are reserved (masked views, deterministic keys): set "
            "fieldcrypt.domain",
            subject=subject,
        )
    return domain


def check_keyring(keyring: object) -> KeySource:
    if not isinstance(keyring, KeySource):
        raise ConfigurationError("keyring= must be a fieldcrypt.Keyring (where keys live and what wraps them)")
    return keyring


@dataclass(frozen=True)
class CachedPlan:
    schema_id: int | str  # a GUID for GUID-framed records
    parsed: Any
    runner: PlanRunner
    fingerprint: str = ""  # of the schema as registered (text, references, metadata.tags): see PolicyCheck
    source: Schema | None = None  # the schema as registered (its ruleSet is run by fieldcrypt.core.confluent)


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
    policy: dict[str, Any] = {"v": 1, "encrypt": fields, "subject": plan.data_subject_path}
    det = sorted({leaf.path for leaf in plan.leaves if leaf.deterministic})
    if det:  # (absent without deterministic values: policies recorded before them still compare equal)
        policy["deterministic"] = det
    masks = sorted({(leaf.path, leaf.mask) for leaf in plan.leaves if leaf.mask is not None})
    if masks:  # (absent without masks: policies recorded before masked views still compare equal)
        policy["mask"] = masks
    return json.dumps(policy, separators=(",", ":"))


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
    ours_det, theirs_det = set(a.get("deterministic", ())), set(b.get("deterministic", ()))
    if ours_det != theirs_det:
        det_parts = []
        if theirs_det - ours_det:
            det_parts.append(f"producers encrypt {', '.join(sorted(theirs_det - ours_det))} deterministically")
        if ours_det - theirs_det:
            det_parts.append(f"this configuration expects {', '.join(sorted(ours_det - theirs_det))} deterministic")
        parts.append(f"{' and '.join(det_parts)} (fieldcrypt.deterministic.tags)")
    our_masks = {p: m for p, m in a.get("mask", ())}
    their_masks = {p: m for p, m in b.get("mask", ())}
    masked = sorted(p for p in set(our_masks) | set(their_masks) if our_masks.get(p) != their_masks.get(p))
    if masked:
        said = ", ".join(
            f"{p} ({their_masks.get(p) or 'none'} for producers, {our_masks.get(p) or 'none'} here)" for p in masked
        )
        parts.append(f"the masked views differ (fieldcrypt.masks): {said}")
    return "; ".join(parts) or "the recorded policy differs"


class PolicyCheck:
    """Producers record, in the key store, what they encrypt for each (schema, key domain); consumers compare.

    A consumer configured differently from its producers (other ``fieldcrypt.tags``, ``plaintext.tags``,
    data-subject tag or domains) would either return ciphertext as a value or report plaintext as tampering; with
    the policy in the shared key store it raises a ``ConfigurationError`` naming the difference instead. Checked
    once per schema and domain per serde; schemas without any tag need no check (no configuration encrypts them).
    """

    def __init__(self, keyring: KeySource, *, writing: bool, stats: SerdeStats | None = None) -> None:
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
            if self._writing:
                self._field_domains(plan, domain, subject)
            if theirs is not None and theirs != mine:
                who = "another producer of this schema" if self._writing else "the producers of this schema"
                raise ConfigurationError(
                    f"this fieldcrypt configuration disagrees with {who} (recorded in the key store): "
                    f"{_describe(mine, theirs)}; align fieldcrypt.tags, fieldcrypt.plaintext.tags, "
                    "fieldcrypt.data.subject.tag, fieldcrypt.tag.domains, fieldcrypt.masks and "
                    "fieldcrypt.deterministic.tags",
                    subject=subject,
                )
        if len(self._done) < 10_000:
            self._done.add((cached.fingerprint, domain))

    def _field_domains(self, plan: FieldPlan, domain: str, subject: str | None) -> None:
        """Record, per default domain (the subject) and field path, the key domain its values go to (first writer
        wins, whatever the schema version); a producer that would put a field under another domain is refused
        before it writes, so one misconfigured producer cannot put ``health`` fields under ``contact`` keys."""
        keyring = self._keyring
        for leaf in plan.leaves:
            mine = leaf.domain or domain
            name = hashlib.sha256(f"field-domain\0{domain}\0{leaf.path}".encode()).hexdigest()
            try:
                with keyring.metering(self._stats):
                    recorded = keyring.publish_policy(name, mine)
            except FieldcryptError as exc:
                raise exc.with_context(subject=subject, field_path=leaf.path) from exc
            if recorded != mine:
                raise ConfigurationError(
                    f"the producers of this subject encrypt this field (tags {', '.join(sorted(leaf.tags))}) under "
                    f"key domain {recorded!r} (recorded in the key store); this configuration would use {mine!r}: "
                    "align fieldcrypt.tag.domains and fieldcrypt.domain",
                    subject=subject,
                    field_path=leaf.path,
                )


class PlanCache:
    """Field plans by schema id, compiled once from the schema *as registered* (so inline tags and registry
    ``metadata.tags`` give producers and consumers the same plan)."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        parse: Callable[[Schema], Any],
        compile_plan: Callable[[Any, TagRules], FieldPlan],
        rules: TagRules,
        *,
        fmt: str | None = None,
        fingerprint: Callable[[Schema], str] | None = None,
    ) -> None:
        #: the format every registry read of a schema asks for (Protobuf: ``serialized``), None for the default
        self.fmt = fmt
        self._fingerprint = fingerprint or schema_fingerprint
        self._registry = registry
        self._parse = parse
        self._compile = compile_plan
        self._rules = rules
        self._plans: dict[int | str, CachedPlan] = {}
        self._membership: dict[tuple[str, str], bool] = {}  # (subject, schema id or GUID) -> not a version of it
        self._lock = threading.Lock()

    def get(self, schema_id: int | str) -> CachedPlan | None:
        return self._plans.get(schema_id)

    def load(
        self, schema_id: int | str, subject: str | None, schema: Schema | None = None, *, from_record: bool = False
    ) -> CachedPlan:
        """The plan of ``schema_id``, compiled once. ``schema``: the schema, when the caller has it (else looked up
        by id); ``from_record``: the record itself named it (a header's id or GUID), as a prefix id always does."""
        found = self._plans.get(schema_id)
        if found is not None:
            return found
        with _loop.taken(self._lock):  # (on an asyncio serde's loop: never waited for)
            found = self._plans.get(schema_id)
            if found is not None:
                return found
            named_by_record = from_record or schema is None  # the record chose it (not this serde's own settings)
            if schema is None:  # the lookup confluent's deserializer makes, through the client's cache
                if not isinstance(schema_id, int):
                    raise ConfigurationError("a schema GUID cannot be looked up without its schema")
                schema = writer_schema_by_id(self._registry, schema_id, subject, self.fmt)  # a bad id: Unknown...
            try:
                plan = self.compile(schema)
                cached = CachedPlan(schema_id, self._parse(schema), PlanRunner(plan), self._fingerprint(schema), schema)
            except FieldcryptError as exc:
                if isinstance(exc, PolicyError) and named_by_record and self._foreign(schema_id, subject, schema):
                    raise _foreign_schema(schema_id, subject, exc.reason) from exc
                raise
            except Exception as exc:  # the writer's schema is not one this serde's format can parse
                # resolving its references asks the registry: an outage is not a schema this serde cannot read
                mapped = registry_failure(
                    exc, f"a schema that schema id {schema_id} references", subject, role="reference"
                )
                if mapped is not None:
                    raise mapped from exc
                reason = f"schema id {schema_id} cannot be read as this deserializer's format ({type(exc).__name__})"
                if named_by_record and self._foreign(schema_id, subject, schema):
                    raise _foreign_schema(schema_id, subject, reason) from exc
                raise PolicyError(reason, subject=subject) from exc
            self._plans[schema_id] = cached
            return cached

    def _foreign(self, schema_id: int | str, subject: str | None, schema: Schema) -> bool:
        """Whether a schema id a record names is no version of the subject being read: asked only when that schema
        cannot be read here (so a record naming another team's schema, or one of another format, is a bad record,
        not a reason to stop every consumer), once per (subject, id). False when it cannot be told."""
        if subject is None:
            return False
        key = (subject, str(schema_id))
        known = self._membership.get(key)
        if known is not None:
            return known
        try:
            if isinstance(schema_id, int):
                versions = self._registry.get_versions(subject)
                foreign = all(self._registry.get_version(subject, v).schema_id != schema_id for v in versions)
            else:  # a GUID: is this schema registered under the subject?
                self._registry.lookup_schema(subject, schema)
                foreign = False
        except SchemaRegistryError as exc:
            # no such subject; for a GUID's schema, also no such schema under it
            foreign = exc.http_status_code == 404 and exc.error_code in (40400, 40401, 40403)
        except Exception:
            return False  # an outage: the original error stands
        if len(self._membership) < 10_000:
            self._membership[key] = foreign
        return foreign

    def compile(self, schema: Schema) -> FieldPlan:
        tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
        return self._compile(self._parse(schema), self._rules.with_metadata(tags))


def _foreign_schema(schema_id: int | str, subject: str | None, reason: str) -> UnknownSchemaError:
    return UnknownSchemaError(
        f"the record names schema id {schema_id}, which is no version of this subject and cannot be read here "
        f"({reason}): a forged or corrupt record, or one written for another subject",
        subject=subject,
    )


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
    field_rules: FieldRules,
    outcomes: Outcomes | None = None,
) -> tuple[Any, RecordState | None]:
    """Decrypt a decoded record; returns it and its counts (for ``SerdeStats._record``, once the record is done).
    When its writer schema carries a Confluent CSFLE ENCRYPT rule (a topic moving from CSFLE to fieldcrypt), a
    record fieldcrypt cannot read as its own (plaintext included, and values that merely look like a fieldcrypt
    header, naming an unknown key, or a key of the store by chance without forming a fieldcrypt record) is handed to
    confluent's ENCRYPT executor, which authenticates it with CSFLE's own keys; each tagged value is then judged as
    it came out (``_not_decrypted_by_csfle``). If that fails too, fieldcrypt's verdict stands, with the user's
    outcomes (``on.plaintext=accept`` included), unless the values that look like fieldcrypt's are not
    (``_fieldcrypts_verdict``). A value is never returned unverified.
    ``field_rules``: the format's, for confluent's executor (``fieldcrypt.core.confluent.FieldRules``).
    ``outcomes``: the serde's, with a reader schema's nullability (``Outcomes.reader_nulls``); default its own."""
    runner, keyring, stats = cached.runner, serde._keyring, serde.stats
    outcomes = outcomes or serde._opts.outcomes
    if ctx is None or subject is None or not has_encrypt_rules(cached.source):
        return runner.decrypt_counted(record, keyring, subject, domain, outcomes, stats)
    original = copy.deepcopy(record)
    # unknown key ids, denied keys and plaintext must raise here, to be told apart from CSFLE values (a CSFLE
    # ciphertext is base64 text too, and about one in 256 parses as a fieldcrypt value, naming a random key id). An
    # erased value is returned only from a record whose structure the engine checked (value 0 and its nonce; in
    # format 2 each position and the count), which a CSFLE record has about once in 65,536 per tagged value
    first = replace(outcomes, on_denied="raise", on_plaintext="raise")
    try:
        return runner.decrypt_counted(record, keyring, subject, domain, first, stats)
    except DecryptionError as exc:
        unknown = type(exc) is KeyNotFoundError and exc.owner is None  # no key of fieldcrypt's: maybe CSFLE's
        held = isinstance(exc, (AccessDeniedError, KeyNotFoundError, KeyCorruptedError)) and not unknown
        if held and _forms_record(runner, original, subject):
            # fieldcrypt's key (shredded, denied, its stored row tampered with), named by a fieldcrypt record: a CSFLE
            # record would have to name one of the store's keys by chance and form a record too
            if isinstance(exc, (KeyShreddedError, KeyCorruptedError)):
                raise  # erased (on.erased=raise), or its stored row tampered with
            return runner.decrypt_counted(original, keyring, subject, domain, outcomes, stats)  # the user's outcome
        # anything else (not a ciphertext, a header out of place, an unknown key id, an unsupported format, a held
        # key named by values that form no fieldcrypt record) may be a CSFLE value: confluent's executor is asked,
        # and each value judged after it ran
    assert cached.source is not None
    try:
        out = csfle_read(serde, ctx, subject, cached.source, parsed_writer, copy.deepcopy(original), field_rules)
        undecrypted = _not_decrypted_by_csfle(runner, original, out, subject)
    except Exception:
        return _fieldcrypts_verdict(runner, original, keyring, subject, domain, outcomes, stats)  # not CSFLE either
    if undecrypted is None:
        return out, RecordState(keyring, subject, domain, None)  # CSFLE's values: not fieldcrypt's to count
    if undecrypted:  # some values CSFLE decrypted, others it returned as they came: never a record to trust
        raise DecryptionError(
            "the record mixes values Confluent's ENCRYPT executor decrypted with tagged values it did not",
            subject=subject,
            field_path=undecrypted[0],
        )
    return _fieldcrypts_verdict(runner, original, keyring, subject, domain, outcomes, stats)  # CSFLE decrypted nothing


def _forms_record(runner: PlanRunner, record: Any, subject: str | None) -> bool:
    """Whether the record's tagged values, as they came, are one fieldcrypt record by their layout
    (``fieldcrypt.core.lookalike.fieldcrypts`` without a key store): a fieldcrypt writer's record always is."""
    return bool(fieldcrypts([v for _, v in runner.tagged_values(record, subject) if v is not None], None))


def _fieldcrypts_verdict(
    runner: PlanRunner,
    record: Any,
    keyring: KeySource,
    subject: str | None,
    domain: str,
    outcomes: Outcomes,
    stats: SerdeStats | None,
) -> tuple[Any, RecordState | None]:
    """fieldcrypt's verdict on a record of a schema with a CSFLE ENCRYPT rule that confluent's executor did not
    decrypt (no CSFLE keys here, as in ``fieldcrypt verify``, its DEK registry down, or not CSFLE's). A CSFLE
    ciphertext whose first bytes parse as a fieldcrypt header (about 1 in 256) would be judged as fieldcrypt's:
    tampered, of a newer format, or the ``on.denied`` outcome of a key id that is CSFLE bytes. So where that verdict
    is not a plain reading, the record's values that parse are looked at (``fieldcrypt.core.lookalike.fieldcrypts``):
    when they neither form a fieldcrypt record nor name a key the store knows, the record is refused as holding no
    fieldcrypt ciphertext, naming no key."""
    seen = runner.tagged_values(record, subject)  # as it came: the engine decrypts in place
    values = [v for _, v in seen if v is not None]
    try:
        out, state = runner.decrypt_counted(record, keyring, subject, domain, outcomes, stats)
    except DecryptionError:
        if fieldcrypts(values, keyring) is False:
            raise _not_fieldcrypts(seen, subject) from None
        raise
    if state is not None and state.denied and fieldcrypts(values, keyring) is False:
        state.refused()
        raise _not_fieldcrypts(seen, subject)
    return out, state


def _not_fieldcrypts(seen: list[tuple[str, Any]], subject: str | None) -> DecryptionError:
    paths = [p for p, v in seen if value_of(v) is not None]
    return DecryptionError(
        "the record's tagged values are not fieldcrypt ciphertexts of this key store (a value that starts like one "
        "names no key the store knows, and they do not form a fieldcrypt record: a Confluent CSFLE ciphertext), and "
        "Confluent's ENCRYPT executor did not decrypt them",
        subject=subject,
        field_path=paths[0] if paths else None,
    )


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
    # an unsupported format is a warning too: a reserved flag cannot be authenticated, so it may be tampering
    tampered = type(exc) is DecryptionError or isinstance(exc, (KeyCorruptedError, UnsupportedFormatError))
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


class KeyringBuilder:
    """What fieldcrypt's twins of confluent's serde builders add (first among their bases): ``keyring=`` (keyword)
    and :meth:`set_keyring`; the serde built without one is refused (``ConfigurationError``), as the serdes are."""

    def __init__(self, *args: Any, keyring: KeySource | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fieldcrypt_keyring = keyring

    def set_keyring(self, keyring: KeySource) -> Any:
        """The keyring of the serde to build (where data keys live and what wraps them); returns the builder."""
        self._fieldcrypt_keyring = keyring
        return self
