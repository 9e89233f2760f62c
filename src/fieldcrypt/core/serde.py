"""What the Avro and JSON serdes share: fieldcrypt's conf keys, subjects and domains, and the plan cache."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import SerializationContext, SerializationError

from fieldcrypt.core.confluent import (
    FieldRules,
    auto_registers,
    configured,
    csfle_read,
    has_encrypt_rules,
    is_latest_mode,
    rest_client,
    subject_of,
    writer_schema,
)
from fieldcrypt.core.engine import PlanRunner, RecordState
from fieldcrypt.core.lookalike import fieldcrypts, value_of
from fieldcrypt.core.outcomes import STRICT, Outcomes
from fieldcrypt.core.plan import DEFAULT_DATA_SUBJECT_TAG, DEFAULT_TAGS, FieldPlan, TagRules
from fieldcrypt.core.recorder import Recorder, neutral
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
from fieldcrypt.keys.source import KeySource
from fieldcrypt.observe.stats import SerdeStats

__all__ = [
    "FIELDCRYPT_CONF",
    "READ_CONF",
    "WRITE_CONF",
    "Options",
    "PlanCache",
    "PolicyCheck",
    "call_confluent_init",
    "decrypt_record",
    "key_domain",
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
    outcomes = STRICT
    if reading:
        outcomes = Outcomes(
            on_erased=rest.pop("fieldcrypt.on.erased", "null"),
            on_denied=rest.pop("fieldcrypt.on.denied", "raise"),
            placeholder=rest.pop("fieldcrypt.placeholder", "<erased>"),
            on_plaintext=rest.pop("fieldcrypt.on.plaintext", "raise"),
            min_version=_version(rest.pop("fieldcrypt.min.format.version", 1), "fieldcrypt.min.format.version"),
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
    version = LATEST_VERSION
    if not reading:
        allow = rest.pop("fieldcrypt.allow.tag.removal", False)
        if not isinstance(allow, bool):
            raise ConfigurationError("fieldcrypt.allow.tag.removal must be True or False")
        version = _version(rest.pop("fieldcrypt.format.version", LATEST_VERSION), "fieldcrypt.format.version")
    return (rest if conf is not None else None), Options(rules, domain, outcomes, allow, version)


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
        with self._lock:
            found = self._plans.get(schema_id)
            if found is not None:
                return found
            named_by_record = from_record or schema is None  # the record chose it (not this serde's own settings)
            if schema is None:  # the lookup confluent's deserializer makes, through the client's cache
                if not isinstance(schema_id, int):
                    raise ConfigurationError("a schema GUID cannot be looked up without its schema")
                schema = writer_schema_by_id(self._registry, schema_id, subject)  # a bad id: UnknownSchemaError
            try:
                plan = self.compile(schema)
                cached = CachedPlan(
                    schema_id, self._parse(schema), PlanRunner(plan), schema_fingerprint(schema), schema
                )
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


WriteEntry = tuple[CachedPlan, bytes, SchemaId]

#: error codes of a 404 answer to "the latest version of this subject" that mean it has none: subject not found
#: (40401), version not found (40402), and confluent's ``mock://`` registry's 40400. Any other answer is an error.
_NO_LATEST = frozenset({40400, 40401, 40402})


class WriteEntries:
    """What a serializer writes with, per subject (or per subject and schema id in latest mode): the field plan
    and parsed schema, the 5-byte Confluent prefix, and the ``SchemaId`` for other framings.

    It also keeps a writer from dropping a tag the subject carries, unless ``fieldcrypt.allow.tag.removal``: the
    schema written must encrypt every path that the local ``schema_str`` encrypts and, where the schema written
    would write that path in clear (``writes_path``: a field it cannot write is not lost), every path the subject's
    producers encrypted before (the key store's record, per subject name: read once per subject, in latest mode
    once per subject and schema id) and every path any registered version of the subject encrypts (``_registered``:
    the version numbers once per subject, or per subject and schema id, each version read once per serializer).
    Every writer adds what it encrypts to the record. A refusal is kept (the record only grows), so a refused
    subject costs no lookup per record."""

    def __init__(
        self,
        serde: Any,
        plans: PlanCache,
        schema_type: str,
        local_parsed: Any = None,
        local_plan: FieldPlan | None = None,
        allow_tag_removal: bool = False,
        undeclared: Callable[[str, Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self._serde = serde
        self._configured = configured(serde)  # the registry client and local schema confluent's constructor set up
        self._undeclared = undeclared  # the format's: whether a parent value path takes values it does not declare
        self._plans = plans
        self._local_plan = local_plan
        self._allow_removal = allow_tag_removal
        self._type = schema_type
        self._local_parsed = local_parsed  # confluent writes with its own parsed schema when not in latest mode
        self.latest_mode = is_latest_mode(serde)
        self._by_subject: dict[str, WriteEntry] = {}
        self._by_id: dict[tuple[str, int], WriteEntry] = {}  # per subject too: subjects share ids, not records
        self._refused: dict[tuple[str, int | None], FieldcryptError] = {}  # (subject, schema id or None): for good
        #: registered versions read and planned, by (subject, version number): versions do not change
        self._versions: dict[tuple[str, int], tuple[RegisteredSchema, frozenset[str]]] = {}
        self._written: dict[str, dict[str, Any]] = {}  # a schema's fingerprint -> its value paths (value_paths)

    def get(self, subject: str) -> WriteEntry:
        entry = None if self.latest_mode else self._by_subject.get(subject)
        return entry if entry is not None else self._resolve(subject)

    def _resolve(self, subject: str) -> WriteEntry:
        record: tuple[str, list[str]] | None = None  # the key store's record: its name and what it held
        deferred: set[str] = set()  # paths only the latest version's metadata.tags could keep (see _check_local)
        registering = not self.latest_mode and auto_registers(self._serde) and self._local_plan is not None
        if registering:  # checked before the registration: a refused schema is not registered
            assert self._local_plan is not None
            record, deferred = self._check_local(subject, self._local_plan)
        registered = writer_schema(self._serde, subject)
        if registered.schema_id is None:
            raise ConfigurationError("the registry returned no schema id", subject=subject)
        key = (subject, registered.schema_id)
        known = self._by_id.get(key)
        if known is not None:  # use.latest.version: the same schema as last time
            return known
        if key in self._refused:  # this schema id was refused for this subject, and stays refused
            raise self._refused[key].with_context(subject=subject)
        schema = registered.schema
        if (schema is None or schema.schema_str is None) and not self.latest_mode:
            schema = self._configured.schema  # a registry answering the registration with the id only: what was sent
            if registering and deferred:  # whether it inherited the latest version's metadata.tags: read it back
                schema = self._read_back(subject, registered.schema_id, schema)
        if not registering and not self.latest_mode:
            # auto.register.schemas=False: confluent's client answers a lookup with the schema it was given, not the
            # one registered: plan from the version found, as registered (its metadata.tags), whichever it is
            schema = self._registered_copy(subject, registered)
        cached = self._plans.load(registered.schema_id, subject, schema)
        plan = cached.runner.plan
        if self._local_plan is not None:
            self._check_kept(self._local_plan, plan, subject, "the local schema_str", registered.schema_id)
        written = encrypted_paths(plan)
        if not registering:  # latest mode, or a schema looked up: nothing registered, the schema written is checked
            writes = self._writes(cached.source if cached.source is not None else schema)
            record = self._check_recorded(subject, key, plan, written, writes)
            self._check_registry(subject, key, registered, plan, written, writes)
        elif deferred - written:
            assert record is not None and self._local_plan is not None
            lost = sorted(deferred - written)
            self._refuse_uninherited(subject, record[0], lost, self._local_plan, registered.schema_id)
        if not self.latest_mode and self._local_parsed is not None:
            cached = CachedPlan(cached.schema_id, self._local_parsed, cached.runner, cached.fingerprint, cached.source)
        prefix = b"\x00" + registered.schema_id.to_bytes(4, "big")
        entry = (cached, prefix, SchemaId(self._type, registered.schema_id, registered.guid))
        if record is not None and written - set(record[1]):
            self._merge(record[0], sorted(written), subject)
        if not self.latest_mode:
            self._by_subject[subject] = entry
        elif len(self._by_id) < 1000:
            self._by_id[key] = entry
        return entry

    def _record_names(self, subject: str) -> tuple[str, str]:
        """The key-store record of the paths a subject's producers encrypted, by the subject's name alone (a
        registry's URLs have many spellings: two registries sharing a key store and a subject name share the
        record, which can only refuse too much), and the record's name up to 0.x, by the registry URLs as this
        client spells them, still read so that what was recorded under it is not lost."""
        where = json.dumps(["encrypted-fields", subject])
        urls = getattr(rest_client(self._configured.registry), "base_urls", None) or []
        legacy = json.dumps(["encrypted-fields", sorted(map(str, urls)), subject])
        return tuple(  # type: ignore[return-value]
            "encrypted-fields:" + hashlib.sha256(w.encode("utf-8")).hexdigest() for w in (where, legacy)
        )

    def _read_record(self, subject: str) -> tuple[str, list[str]]:
        """The record's name and the paths it holds (with those of its legacy name, carried over into it)."""
        name, legacy = self._record_names(subject)
        before = self._merge(name, [], subject)
        old = set(self._merge(legacy, [], subject)) - set(before)
        if old:
            self._merge(name, sorted(old), subject)
        return name, sorted(set(before) | old)

    def _merge(self, name: str, paths: list[str], subject: str) -> list[str]:
        """Add ``paths`` to the record (none: just read it); returns what it held before."""
        keyring: KeySource = self._serde._keyring
        try:
            with keyring.metering(self._serde.stats):
                return keyring.merge_policy(name, paths)
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject) from exc

    def _check_local(self, subject: str, local: FieldPlan) -> tuple[tuple[str, list[str]], set[str]]:
        """Before auto-registering the local schema: it must encrypt every path the subject's producers encrypted
        before (the key store's record) and every path any registered version of the subject encrypts, where the
        local schema would write that path in clear (``_writes``: a path it does not have is not lost). Returns the
        record (name, paths) and the lost paths that the latest version's ``metadata.tags`` could still keep: a
        registry that inherits metadata into a version registered without any (Confluent's does; others drop it)
        keeps them, so those are checked in the version the registry answers with (``_refuse_uninherited``)."""
        if (subject, None) in self._refused:
            raise self._refused[(subject, None)].with_context(subject=subject)
        name, before = self._read_record(subject)
        if self._allow_removal:
            return (name, before), set()
        writes = self._writes(self._configured.schema)
        mine = encrypted_paths(local)
        lost_before = {p for p in set(before) - mine if writes(p)}
        by_version: dict[str, tuple[int | None, int | None]] = {}  # a lost path -> the newest version encrypting it
        latest: RegisteredSchema | None = None
        for got, paths, deleted in self._registered(subject, (subject, None), "register"):
            latest = got if latest is None and not deleted else latest
            for path in paths - mine:
                if writes(path):
                    by_version.setdefault(path, (got.schema_id, got.version))
        lost = lost_before | set(by_version)
        if not lost:
            return (name, before), set()
        if latest is not None and latest.schema is not None and lost <= self._inherited(latest.schema.metadata):
            return (name, before), lost
        sources = []
        if lost_before:
            sources.append(
                f"{', '.join(sorted(lost_before))} (encrypted by earlier producers of this subject, recorded in the "
                "key store)"
            )
        sources.extend(_version_sources({p: v for p, v in by_version.items() if p not in lost_before}))
        raise self._refusal((subject, None), sorted(lost), local, subject, "the schema to register", "; ".join(sources))

    def _check_recorded(
        self, subject: str, key: tuple[str, int], plan: FieldPlan, written: set[str], writes: Callable[[str], bool]
    ) -> tuple[str, list[str]]:
        """Latest mode (use.latest.version, use.latest.with.metadata, use.schema.id) and a looked-up schema
        (auto.register.schemas=False), once per subject and schema id: the schema written must encrypt every path
        the subject's producers encrypted before, where it would write that path in clear (``_writes``)."""
        name, before = self._read_record(subject)
        lost = sorted(p for p in set(before) - written if writes(p))
        if lost and not self._allow_removal:
            raise self._refusal(
                key,
                lost,
                plan,
                subject,
                f"the schema written (id {key[1]})",
                f"{', '.join(lost)} (encrypted by earlier producers of this subject, recorded in the key store)",
            )
        return name, before

    def _refusal(
        self, key: tuple[str, int | None], lost: list[str], plan: FieldPlan, subject: str, what: str, sources: str
    ) -> FieldcryptError:
        """The error refusing to write without ``lost`` (kept under ``key``): a ConfigurationError when the schema
        still tags them all and this configuration declares them plaintext, else a PolicyError."""
        declared_plain = {loc for loc, _, decision in plan.decisions if decision == "plaintext"}
        exc: FieldcryptError
        if set(lost) <= declared_plain:  # the schema still tags them: this configuration leaves them in clear
            exc = ConfigurationError(
                "this fieldcrypt configuration disagrees with another producer of this subject (recorded in the "
                f"key store): producers encrypt {', '.join(lost)}, which this configuration leaves in clear; "
                "align fieldcrypt.tags and fieldcrypt.plaintext.tags",
                subject=subject,
            )
        else:
            exc = PolicyError(
                f"{what} drops tags the subject carries, so these would be written in clear: {sources}; set "
                "fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )
        if len(self._refused) < 10_000:
            self._refused[key] = exc
        return exc

    def _writes(self, schema: Schema | None) -> Callable[[str], bool]:
        """Whether a schema would put a value of ``path`` on the wire (in clear, unless it encrypts it), once per
        schema text per serializer; see :func:`writes_path`. A schema that cannot be walked writes everything."""
        if schema is None or schema.schema_str is None:
            return lambda path: True
        known = self._written.get(schema_fingerprint(schema))
        if known is None:
            known = value_paths(self._plans, schema)
            if len(self._written) < 10_000:
                self._written[schema_fingerprint(schema)] = known
        values, undeclared = known, self._undeclared
        return lambda path: writes_path(path, values, undeclared)

    def _registered(
        self, subject: str, key: tuple[str, int | None], verb: str, skip: int | None = None
    ) -> Iterator[tuple[RegisteredSchema, frozenset[str], bool]]:
        """Every registered version of ``subject``, newest first (soft-deleted ones too, where the client can list
        them), with the paths it encrypts and whether it is soft-deleted: the version numbers once per call
        (``get_versions``, and with ``deleted=True``), each version read and planned once per serializer (registered
        versions do not change). Lazy: a caller that stops early reads no more. A subject the registry does not
        hold: none. ``skip``: the number of the version written (not read: nothing to compare it with)."""
        numbers = self._version_numbers(subject)
        for number, deleted in numbers:
            if number == skip and not deleted:
                continue
            found = self._versions.get((subject, number))
            if found is None:
                got = self._fetch_version(subject, number, 0, deleted=deleted)
                if got is None or got.schema is None or got.schema.schema_str is None:
                    continue
                found = (got, frozenset(encrypted_paths(self._plan_version(subject, got, "registered", key, verb))))
                if len(self._versions) < 10_000:
                    self._versions[(subject, number)] = found
            yield (*found, deleted)

    def _version_numbers(self, subject: str) -> list[tuple[int, bool]]:
        """The subject's version numbers, newest first, each with whether it is soft-deleted (listed only with
        ``deleted=True``; a client that keeps no deleted versions, as confluent's ``mock://`` one, lists the live
        ones again)."""
        registry = self._configured.registry
        try:
            live = {int(v) for v in registry.get_versions(subject)}
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise  # unreachable, unauthorized...: not "no version", so nothing is registered or written
            live = set()
        every = set(live)
        try:
            every |= {int(v) for v in registry.get_versions(subject, deleted=True)}
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise
        except (TypeError, ValueError):
            pass  # a client that lists no deleted versions: those are remembered through the key store's record
        return [(v, v not in live) for v in sorted(every, reverse=True)]

    def _plan_version(
        self, subject: str, got: RegisteredSchema, role: str, key: tuple[str, int | None], verb: str
    ) -> FieldPlan:
        """The plan of a registered version compared with; one that cannot be planned is refused (under ``key``,
        for good), since what it encrypts is unknown: refuse rather than guess. A registry that fails while its
        references are resolved is not such a version: that error is raised, and the next record asks again."""
        assert got.schema is not None
        try:
            return self._plans.compile(got.schema)
        except Exception as exc:
            what = f"a schema that schema id {got.schema_id} references"
            mapped = registry_failure(exc, what, subject, role="reference")
            if mapped is not None:
                raise mapped from exc
            reason = exc.reason if isinstance(exc, FieldcryptError) else f"not this format ({type(exc).__name__})"
            err = PolicyError(
                f"the subject's {role} registered version (id {got.schema_id}) cannot be planned with this "
                f"configuration, so what it encrypts is unknown: {reason}; set fieldcrypt.allow.tag.removal=True "
                f"to {verb} without comparing",
                subject=subject,
            )
            if len(self._refused) < 10_000:
                self._refused[key] = err
            raise err from exc

    def _fetch_version(
        self, subject: str, version: int | None, schema_id: int, deleted: bool = False
    ) -> RegisteredSchema | None:
        """A version of ``subject`` as the registry holds it (by number; by ``schema_id`` when the number is
        unknown), or None when the registry has no such subject or version (a 404). confluent's client caches a
        looked-up version (by number and by id) as the schema the lookup was *given*, without the registered
        ``metadata``, so with confluent's own client the registry is asked directly, uncached (the caller keeps
        the answer); another client class (the mock registry, one with its own ``get_version``) is asked through
        ``get_version`` / ``get_schema``. ``deleted``: a soft-deleted version (asked with ``deleted=true``)."""
        registry = self._configured.registry
        rest: Any = rest_client(registry)
        direct = rest is not None and type(registry).get_version is SchemaRegistryClient.get_version
        try:
            if version is None:
                if direct:
                    found = rest.get(f"schemas/ids/{int(schema_id)}", {"subject": subject})
                    schema = RegisteredSchema.from_dict({**found, "id": schema_id}).schema
                else:
                    schema = registry.get_schema(schema_id, subject)
                return RegisteredSchema(schema_id=schema_id, guid=None, schema=schema, subject=subject, version=None)
            if direct:
                return RegisteredSchema.from_dict(
                    rest.get(
                        f"subjects/{quote(subject, safe='')}/versions/{int(version)}",
                        {"deleted": "true"} if deleted else None,
                    )
                )
            if deleted:
                return registry.get_version(subject, version, deleted=True)  # type: ignore[no-any-return]
            return registry.get_version(subject, version)  # type: ignore[no-any-return]
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise  # unreachable, unauthorized...: not "no such version", so nothing is written
            return None

    def _registered_copy(self, subject: str, registered: Any) -> Schema:
        """auto.register.schemas=False: the version the lookup found, as registered (its ``metadata.tags``), once
        per subject per serializer. One that cannot be read back is refused (not kept: the next record asks)."""
        got = self._fetch_version(subject, registered.version, registered.schema_id)
        if got is None or got.schema_id != registered.schema_id or got.schema is None or got.schema.schema_str is None:
            raise PolicyError(
                f"the version the lookup found (id {registered.schema_id}, version {registered.version}) cannot be "
                "read back from the registry, so what it encrypts is unknown",
                subject=subject,
            )
        return got.schema

    def _check_registry(
        self,
        subject: str,
        key: tuple[str, int],
        registered: Any,
        plan: FieldPlan,
        written: set[str],
        writes: Callable[[str], bool],
    ) -> None:
        """Latest mode and a looked-up schema, once per subject and schema id: the schema written must encrypt every
        path that any other registered version of the subject encrypts (soft-deleted ones too, where the client
        lists them), where it would write that path in clear (``_writes``). So a version registered without a tag,
        two versions later, or an older one pinned (use.schema.id, use.latest.with.metadata, a lookup), is refused
        even before any fieldcrypt producer wrote; a version that adds a tagged field the schema written does not
        have is not. A subject the registry does not hold (404): nothing to compare."""
        if self._allow_removal:
            return
        by_version: dict[str, tuple[int | None, int | None]] = {}
        mine = registered.version if isinstance(registered.version, int) else None
        for got, paths, _ in self._registered(subject, key, "write", mine):
            if got.schema_id == registered.schema_id:
                continue
            for path in paths - written:
                if writes(path):
                    by_version.setdefault(path, (got.schema_id, got.version))
        if by_version:
            raise self._refusal(
                key,
                sorted(by_version),
                plan,
                subject,
                f"the schema written (id {key[1]})",
                "; ".join(_version_sources(by_version)),
            )

    def _read_back(self, subject: str, schema_id: int, sent: Schema | None) -> Schema | None:
        """A registry answered the registration with the id only: the version as registered (a registry that
        inherits the latest version's ``metadata`` carries it), one request per subject per serializer (the entry
        is kept). What was sent when it cannot be read back (then the version is refused as not inheriting)."""
        got = self._fetch_version(subject, None, schema_id)
        if got is None or got.schema is None or got.schema.schema_str is None:
            return sent
        return got.schema

    def _inherited(self, metadata: Any) -> set[str]:
        """What the local schema encrypts in a registry that inherits the latest version's ``metadata`` into a
        version registered without any. Nothing when the local schema has metadata of its own, or when those tags
        do not fit it (then no registry could keep them)."""
        local = self._configured.schema
        tags = metadata.tags.tags if metadata is not None and metadata.tags is not None else None
        if not tags or local is None or local.metadata is not None:
            return set()
        try:
            plan = self._plans.compile(Schema(local.schema_str, local.schema_type, local.references, metadata))
        except Exception:
            return set()
        return encrypted_paths(plan)

    def _refuse_uninherited(self, subject: str, name: str, lost: list[str], local: FieldPlan, schema_id: int) -> None:
        """The registry answered the registration with a version that lacks tags the latest version carried in its
        ``metadata.tags`` (it did not inherit them). That version is registered now, as confluent's serializer
        would have registered it, and is the subject's latest: record the paths in the key store, so that every
        later writer of the subject (latest mode included) refuses it as well."""
        self._merge(name, lost, subject)
        raise self._refusal(
            (subject, None),
            lost,
            local,
            subject,
            f"the version registered (id {schema_id})",
            f"{', '.join(lost)} (encrypted by the subject's previous latest version through its metadata.tags, "
            "which the registry did not carry into the new version; tag them in the schema_str)",
        )

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


def _version_sources(by_version: Mapping[str, tuple[int | None, int | None]]) -> list[str]:
    """``by_version``: a lost path -> (schema id, version) of a registered version encrypting it; as refusal text."""
    grouped: dict[tuple[int | None, int | None], list[str]] = {}
    for path, version in by_version.items():
        grouped.setdefault(version, []).append(path)
    return [
        f"{', '.join(sorted(paths))} (encrypted by the subject's registered version {version}, id {schema_id})"
        for (schema_id, version), paths in sorted(grouped.items(), key=lambda kv: -(kv[0][1] or 0))
    ]


@dataclass(frozen=True)
class _Recording(TagRules):
    """Tag rules whose collector is a given recorder (``value_paths``): no tag is decisive, every value position is
    visited."""

    def collector(self) -> Any:
        return self.__dict__["_visit"]


def value_paths(plans: PlanCache, schema: Schema) -> dict[str, Any]:
    """Every value path a schema can write (tagged or not), spelled as plan paths are, each with the schema objects
    it was visited with (a JSON object's, to tell whether it takes properties it does not declare): the policy
    compiler's walk under rules that decide nothing (``fieldcrypt.core.recorder``, schema lint's too). Empty when it
    cannot be walked (then ``writes_path`` counts every path as written: refuse rather than guess)."""
    tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
    try:
        undecided = neutral(plans._rules.with_metadata(tags))
        rules = _Recording(**{name: getattr(undecided, name) for name in undecided.__dataclass_fields__})
        visit = Recorder(undecided)
        object.__setattr__(rules, "_visit", visit)
        plans._compile(plans._parse(schema), rules)
    except Exception:
        return {}
    return {path: value.calls for path, value in visit.values.items()}


#: a union branch in a path (``ex.A.u<string>``): the same field is written whichever branches the union has
_BRANCH = re.compile(r"<[^<>]*>")


#: a format's answer to "does the value at this parent path take values its schema does not declare" (a JSON object
#: without ``additionalProperties: false``), given every value path of the schema (``value_paths``)
Undeclared = Callable[[str, Mapping[str, Any]], bool]


def writes_path(path: str, values: Mapping[str, Any], undeclared: Undeclared | None) -> bool:
    """Whether a schema with these value paths (``value_paths``) would write a value at ``path``, so dropping its
    tag writes it in clear. The data-subject id's mark always counts (values would go under the shared key). A path
    the schema has (union branches aside: ``f<string>`` and ``f`` are the same field), or, in a format whose values
    take undeclared children (``undeclared``: JSON objects), one a value it has (or could write) takes as one."""
    if not values or path.endswith(" (data-subject id)") or path in values:
        return True
    if _BRANCH.sub("", path) in {_BRANCH.sub("", p) for p in values}:  # a union's branches changed, not the field
        return True
    if undeclared is None:
        return False
    return any(path[i + 1 :] and undeclared(path[:i], values) for i in range(len(path)) if path[i] == "." and path[:i])


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
