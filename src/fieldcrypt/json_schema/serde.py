"""JSON Schema serializer and deserializer: drop-in replacements for confluent-kafka's, plus ``keyring=``.

    from fieldcrypt.json_schema import JSONSerializer, JSONDeserializer

    serializer = JSONSerializer(schema_str, registry, keyring=keyring)
    deserializer = JSONDeserializer(None, schema_registry_client=registry, keyring=keyring)

Same positional arguments and conf keys as confluent's (plus ``fieldcrypt.*``). The serializer validates the
plaintext document against the schema, then encrypts the tagged string properties; the encrypted document is
still valid against the registered schema, so confluent's plain ``JSONDeserializer`` (validation on) reads it.
The deserializer validates what it receives, as confluent's does, then decrypts.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as _ConfluentJSONDeserializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer as _ConfluentJSONSerializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import SerializationContext, SerializationError
from jsonschema import ValidationError
from jsonschema.exceptions import SchemaError
from referencing import Resource
from referencing.jsonschema import DRAFT202012

from fieldcrypt.core.confluent import (
    configured,
    default_conf,
    has_migrations,
    is_latest_mode,
    migrate,
    read_rules,
    refuse_encoding_rules,
    track_original_key,
    wire_reset,
    wire_set,
    write_rules,
)
from fieldcrypt.core.lookalike import candidates as lookalikes
from fieldcrypt.core.lookalike import mode_of as untagged_mode
from fieldcrypt.core.lookalike import review as review_lookalikes
from fieldcrypt.core.outcomes import Outcomes
from fieldcrypt.core.plan import FieldPlan, TagRules
from fieldcrypt.core.schemas import reader_schema, registry_failure, subject_lookup, writer_schema_of
from fieldcrypt.core.serde import (
    FIELDCRYPT_CONF,
    READ_CONF,
    WRITE_CONF,
    CachedPlan,
    PlanCache,
    PolicyCheck,
    Reconfigurable,
    cached_subject,
    call_confluent_init,
    check_framing,
    check_keyring,
    decrypt_record,
    key_domain,
    malformed,
    prefix_framed,
    refused,
    split_conf,
)
from fieldcrypt.core.written import WriteEntries, writes_path
from fieldcrypt.errors import ConfigurationError, EncryptionError, MalformedRecordError, PolicyError
from fieldcrypt.json_schema import confluent as _confluent
from fieldcrypt.json_schema.policy import compile_json
from fieldcrypt.keys import _loop
from fieldcrypt.keys.source import KeySource
from fieldcrypt.observe.stats import SerdeStats

__all__ = ["JSONDeserializer", "JSONSerializer"]

_JSON = "JSON"


_FAST_DRAFTS = (
    None,
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-07/schema#",
)


_NEWER_KEYWORDS = frozenset(
    {
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "minContains",
        "maxContains",
        "$anchor",
    }
)


def _keywords(schema: Any) -> set[str]:
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.update(k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _fast_validator(schema: Any, source: Schema) -> Callable[[Any], Any] | None:
    """A compiled validator (fastjsonschema) for self-contained draft-04/06/07 schemas, else None.

    jsonschema, which confluent uses, stays the authority: the compiled one only answers "valid" quickly, and
    any "invalid" is re-checked by jsonschema (which also words the error). Formats are not checked, as jsonschema
    does not check them by default either. Never for a schema with a regex (``pattern``, ``patternProperties``,
    anywhere): the generated code would search record data with Python's backtracking ``re``, so jsonschema, whose
    searches run on RE2 here (fieldcrypt.json_schema.validation), validates those alone; nor one whose ``$ref``
    leaves it
    (fastjsonschema would fetch it with urllib, and compile its patterns).
    """
    from fieldcrypt.json_schema.validation import NO_REMOTE, REGEX_KEYWORDS

    if source.references or not isinstance(schema, dict) or schema.get("$schema") not in _FAST_DRAFTS:
        return None
    keywords = _keywords(schema)
    if _NEWER_KEYWORDS & keywords:
        return None  # jsonschema reads a schema without $schema as 2020-12: keep its meaning for these
    if REGEX_KEYWORDS & keywords:
        return None  # a property named "pattern" counts too: only slower
    try:
        import fastjsonschema

        compiled: Callable[[Any], Any] = fastjsonschema.compile(
            schema, handlers=NO_REMOTE, use_default=False, use_formats=False, detailed_exceptions=False
        )
        return compiled
    except Exception:
        return None


class _Parsed:
    """A registered JSON schema, parsed with confluent's reference resolution, and its validators.

    ``validator`` is confluent's (the draft's jsonschema class, the metaschema checked), extended so that every
    regex it searches record data with runs on RE2, with ``re.search``'s answers (fieldcrypt.json_schema.validation);
    ``evolve`` keeps that class. ``refusals``: (regex, where, reason) of each regex of the schema, or of a schema it
    references, that the bounded engine does not run; :meth:`check` raises the first as a ``PolicyError`` (when the
    plan is compiled, and before any validation: docs/policy.md, "Patterns")."""

    __slots__ = ("_matchers", "_writing", "fast", "refusals", "registry", "schema", "source", "validator")

    def __init__(self, serde: Any, source: Schema) -> None:
        from fieldcrypt.json_schema.validation import bounded_validator, refusals

        bare = Schema(source.schema_str, source.schema_type or _JSON, source.references or [])
        self.source = bare
        self.schema, self.registry = _confluent.parse(serde, bare)
        confluent_validator = _confluent.validator(serde, bare, self.schema, self.registry)
        self.validator = bounded_validator(confluent_validator, self.schema, self.registry)
        self.refusals = refusals(self.schema, self.registry)
        self.fast = _fast_validator(self.schema, bare)
        self._matchers: dict[int, tuple[Any, Callable[[Any], bool]]] = {}
        self._writing = isinstance(serde, _ConfluentJSONSerializer)

    def check(self, subject: str | None = None) -> None:
        """Raise the first of :attr:`refusals` as a ``PolicyError``: no record is validated with such a schema."""
        if self.refusals:
            _, where, reason = self.refusals[0]
            raise PolicyError(reason, subject=subject, field_path=where)

    def resolve(self, ref: str) -> Any:
        root = Resource.from_contents(self.schema, default_specification=DRAFT202012)
        return self.registry.resolver_with_root(root).lookup(ref).contents

    def matcher(self, subschema: Any) -> Callable[[Any], bool]:
        """Whether a value validates against ``subschema`` (a part of this schema; its $refs resolve from the root,
        since the evolved validator keeps the root's resolver). Cached per subschema object."""
        found = self._matchers.get(id(subschema))
        if found is None or found[0] is not subschema:
            from fieldcrypt.core.regex import Unmatchable
            from fieldcrypt.errors import DecryptionError

            is_valid: Callable[[Any], bool] = self.validator.evolve(schema=subschema).is_valid
            error = EncryptionError if self._writing else DecryptionError

            def matches(value: Any) -> bool:
                try:
                    return is_valid(value)
                except Unmatchable:  # which branch applies cannot be told: never guessed
                    raise error(
                        "a string or key of the value holds a lone surrogate (not Unicode): the schema's patterns "
                        "deciding which branch applies cannot be matched against it"
                    ) from None

            found = self._matchers[id(subschema)] = (subschema, matches)  # holding it keeps the id unique
        return found[1]


def _compile(parsed: _Parsed, rules: TagRules) -> FieldPlan:
    plan = compile_json(parsed.schema, rules, parsed.resolve, parsed.matcher)
    parsed.check()  # after the plan's own refusals, which name the value path (a tagged regex included)
    return plan


def _validate(parsed: _Parsed, document: Any, subject: str | None, error: type[Exception] = SerializationError) -> None:
    """Validate like confluent does, but with an error that names where and which rule, never the value."""
    parsed.check(subject)  # a regex the bounded engine does not run: the schema is refused, whatever the record
    if parsed.fast is not None:
        try:
            parsed.fast(document)
            return
        except Exception:
            pass
    from fieldcrypt.core.regex import Unmatchable

    try:
        parsed.validator.validate(document)  # its regexes run on RE2: linear in the document (_Parsed)
    except ValidationError as exc:
        where = exc.json_path
        raise error(
            f"the document does not match the schema of subject {subject!r} at {where}: "
            f"'{exc.validator}' constraint failed"
        ) from None
    except Unmatchable:  # not Unicode: no regex is run on it (EncryptionError on write, as the engine's)
        message = (
            f"the document cannot be validated against the schema of subject {subject!r}: a string or key that "
            "the schema's patterns must be matched against holds a lone surrogate (not Unicode)"
        )
        if parsed._writing:
            raise EncryptionError(message, subject=subject) from None
        raise error(message) from None


def takes_undeclared(parent: str, values: Mapping[str, Any]) -> bool:
    """Whether the value at ``parent`` (a value path of a schema whose every value path is in ``values``, with the
    schema objects of each visit: ``fieldcrypt.core.written.value_paths``) takes properties it does not declare: every
    object does unless it says ``additionalProperties: false`` (or ``unevaluatedProperties: false``) without
    ``patternProperties``; a path not in the schema is written only as an undeclared value of an object above it."""
    calls = values.get(parent)
    if calls is None:
        return writes_path(parent, values, takes_undeclared)
    for members in calls:
        if not any(
            isinstance(m, dict)
            and (m.get("additionalProperties") is False or m.get("unevaluatedProperties") is False)
            and not m.get("patternProperties")
            for m in members
        ):
            return True
    return False


class JSONSerializer(Reconfigurable, _ConfluentJSONSerializer):
    """confluent's ``JSONSerializer`` that encrypts tagged properties. Same arguments, plus ``keyring=``."""

    def __init__(
        self,
        schema_str: str | Schema | None,
        schema_registry_client: SchemaRegistryClient,
        to_dict: Callable[[object, SerializationContext], dict[str, Any]] | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        json_encode: Callable[[Any], str | bytes] | None = None,
        *,
        keyring: KeySource,
    ) -> None:
        confluent_conf, self._opts = split_conf(conf)
        valid = [*default_conf(_ConfluentJSONSerializer), *FIELDCRYPT_CONF, *WRITE_CONF]
        call_confluent_init(
            lambda: super(JSONSerializer, self).__init__(
                schema_str, schema_registry_client, to_dict, confluent_conf, rule_conf, rule_registry, json_encode
            ),
            valid,
        )
        self._confluent = configured(self)  # what confluent's constructor set up, read on every record
        self._keyring = check_keyring(keyring)
        #: what this serializer has done: records, values encrypted, key lookups, errors (fieldcrypt.SerdeStats)
        self.stats = SerdeStats("serializer")
        self._plans = PlanCache(schema_registry_client, lambda s: _Parsed(self, s), _compile, self._opts.rules)
        # reject bad tags when the serializer first sees the schema; what is written must keep every tag of it
        local_plan = self._local_plan()
        self._entries = WriteEntries(
            self,
            self._plans,
            _JSON,
            None,
            local_plan,
            allow_tag_removal=self._opts.allow_tag_removal,
            undeclared=takes_undeclared,
        )
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._policy = PolicyCheck(self._keyring, writing=True, stats=self.stats)

    def _local_plan(self) -> FieldPlan | None:
        """The plan of the local ``schema_str``. Under use.latest.version / use.schema.id confluent never resolves
        that text's ``$ref``s (the registered schema carries the references), and neither does this: a local schema
        whose references only the registry can resolve gives no local plan, and the written schema decides."""
        schema = self._confluent.schema
        if schema is None:
            return None
        try:
            return self._plans.compile(schema)
        except PolicyError as exc:
            if is_latest_mode(self) and exc.reason.startswith("cannot resolve $ref"):
                return None
            raise
        except SchemaError as exc:  # confluent checked it against its draft's metaschema (a regex re cannot compile)
            where = "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in exc.path)
            detail = f" ({exc.message})" if exc.validator == "format" else ""  # others may quote whole subschemas
            raise ConfigurationError(
                f"schema_str is not a valid JSON Schema: {where} fails the metaschema's {exc.validator!r}{detail}"
            ) from None

    def __call__(self, obj: object, ctx: SerializationContext | None = None) -> bytes | None:
        try:
            return self._serialize(obj, ctx)
        finally:
            track_original_key(obj, ctx)  # as confluent: its DLQ action names the key of a value that failed

    def _serialize(self, obj: object, ctx: SerializationContext | None) -> bytes | None:
        if obj is None:
            return None
        c = self._confluent
        try:  # one try for the whole record: a refused record is counted and logged (never with a value)
            subject = cached_subject(self, self._subjects, ctx, c.schema_name)
            if subject is None:
                raise ConfigurationError("fieldcrypt serializers need a SerializationContext (topic and field)")
            assert ctx is not None  # a subject implies a context
            cached, prefix, schema_id = self._entries.get(subject)
            # to_dict, then the WRITE rules of the schema written (in latest mode; as WriteEntries resolved it), on
            # plaintext: once per record, also when an asyncio twin's call is attempted again (fieldcrypt.core.aio)
            value = _loop.once("record", self._prepared, obj, ctx, subject, cached)  # (one record a call)
            if c.validate:
                try:
                    _validate(cached.parsed, value, subject)  # the plaintext, before encryption
                except RecursionError:
                    raise EncryptionError("the document is nested too deeply to validate", subject=subject) from None
            domain = self._opts.domain or subject
            self._policy(cached, domain, subject)
            encrypted, state = cached.runner.encrypt_counted(
                value, self._keyring, subject, domain, self.stats, self._opts.format_version
            )
            assert c.json_encode is not None
            encoded = c.json_encode(encrypted)
            payload = encoded.encode("utf-8") if isinstance(encoded, str) else encoded
            if c.prefix_framing:
                out = prefix + payload
            else:
                assert c.schema_id_serializer is not None
                out = c.schema_id_serializer(payload, ctx, schema_id)
        except Exception as exc:
            refused(self.stats, exc)
            raise
        self.stats._wrote(state)  # counted once the record is done: one lock per record
        return out

    def _prepared(self, obj: object, ctx: SerializationContext, subject: str, cached: CachedPlan) -> Any:
        c = self._confluent
        value = c.to_dict(obj, ctx) if c.to_dict is not None else obj
        if self._entries.latest_mode:
            value = write_rules(self, ctx, subject, cached.source, value, _confluent.field_rules)
        return value


class JSONDeserializer(Reconfigurable, _ConfluentJSONDeserializer):
    """confluent's ``JSONDeserializer`` that decrypts tagged properties. Same arguments, plus ``keyring=``."""

    def __init__(
        self,
        schema_str: str | Schema | None,
        from_dict: Callable[[dict[str, Any], SerializationContext], object] | None = None,
        schema_registry_client: SchemaRegistryClient | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        json_decode: Callable[[Any], Any] | None = None,
        *,
        keyring: KeySource,
    ) -> None:
        conf, self._on_untagged = untagged_mode(conf)  # fieldcrypt.on.untagged.ciphertext (fieldcrypt.core.lookalike)
        confluent_conf, self._opts = split_conf(conf, reading=True)
        valid = [*default_conf(_ConfluentJSONDeserializer), *FIELDCRYPT_CONF, *READ_CONF]
        call_confluent_init(
            lambda: super(JSONDeserializer, self).__init__(
                schema_str, from_dict, schema_registry_client, confluent_conf, rule_conf, rule_registry, json_decode
            ),
            valid,
        )
        self._confluent = configured(self)  # what confluent's constructor set up, read on every record
        self._keyring = check_keyring(keyring)
        self._plans = PlanCache(
            schema_registry_client,  # type: ignore[arg-type]
            lambda s: _Parsed(self, s),
            _compile,
            self._opts.rules,
        )
        #: (writer schema id, reader schema id) -> the outcomes with the reader schema's nullability
        self._reader_outcomes: dict[tuple[int | str, int], Outcomes] = {}
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        #: (topic, field, schema id bytes) -> what reading a document of that kind decided (_open_lane)
        self._lanes: dict[tuple[str, Any, bytes], tuple[Any, ...]] = {}
        self._latest_mode = is_latest_mode(self)
        self._readers: dict[int, _Parsed] = {}  # use.latest.version: parsed reader schemas by id
        #: what this deserializer has done: records, values read, erased, denied, key lookups, errors (never values)
        self.stats = SerdeStats("deserializer")
        self._policy = PolicyCheck(self._keyring, writing=False, stats=self.stats)

    def __call__(self, data: bytes | None, ctx: SerializationContext | None = None) -> Any:
        try:
            token = wire_set(data)  # (the bytes a rule's DLQ action sends)
            try:
                return self._deserialize(data, ctx)
            finally:
                wire_reset(token)
        finally:
            track_original_key(data, ctx)  # as confluent: a record key, for the DLQ action of the value read next

    def _deserialize(self, data: bytes | None, ctx: SerializationContext | None) -> Any:
        if data is None:
            return None
        if ctx is not None and type(data) is bytes and len(data) > 5 and data[0] == 0 and not ctx.headers:
            lane = self._lanes.get((ctx.topic, ctx.field, data[1:5]))
            if lane is not None:
                return self._read_lane(lane, data, ctx)
        c = self._confluent
        try:  # one try for the whole record: a refused record is counted and logged (never with a value)
            check_framing(data)
            subject = subject_lookup(ctx, cached_subject, self, self._subjects, ctx, None)  # may ask the registry
            if prefix_framed(data, ctx):
                key: int | str = int.from_bytes(data[1:5], "big")
                payload: Any = data[5:]
                writer: Schema | None = None
            else:
                sid = SchemaId(_JSON)
                try:
                    assert c.schema_id_deserializer is not None
                    raw = c.schema_id_deserializer(data, ctx, sid)
                except Exception as exc:
                    raise malformed(exc, subject) from exc
                payload = raw.read() if isinstance(raw, io.BytesIO) else raw
                key = sid.id if sid.id is not None else str(sid.guid)
                writer = writer_schema_of(self, sid, subject) if c.registry is not None else None
            from_record = writer is not None  # a header named it
            if c.registry is None:
                if c.schema is None:
                    raise ConfigurationError("pass schema_str or a schema registry client")
                key, writer, from_record = "local", c.schema, False
            cached = self._plans.get(key) or self._plans.load(key, subject, writer, from_record=from_record)
            if subject is None and ctx is not None and isinstance(cached.parsed.schema, dict):
                subject = cached_subject(self, self._subjects, ctx, cached.parsed.schema.get("title"))
            refuse_encoding_rules(cached.source, subject)  # confluent would run them on the bytes before parsing
            try:
                document = c.json_decode(payload)  # type: ignore[misc]
            except Exception as exc:
                raise malformed(exc, subject) from exc
            latest = reader_schema(self, subject) if self._latest_mode and subject is not None else None
            migrating = (
                latest is not None and cached.source is not None and has_migrations(cached.source, latest.schema)
            )
            # with migration rules the document arrives in the writer's shape, and the rules make the reader's
            reader = cached.parsed if migrating else (self._reader_for(latest) or cached.parsed)
            if c.validate:
                try:  # what arrived: ciphertext in tagged properties
                    _validate(reader, document, subject, MalformedRecordError)
                except Exception as exc:
                    raise malformed(exc, subject) from exc
            self._policy(cached, self._opts.domain or subject, subject)
            state = None
            untagged = None  # field paths of ciphertexts in untagged properties, accepted (fieldcrypt.core.lookalike)
            if not cached.runner.plan.is_empty:
                domain = key_domain(self._opts.domain, subject)
                outcomes = self._outcomes_for(cached, subject, None if reader is cached.parsed else latest)
                document, state = decrypt_record(
                    self, cached, document, subject, domain, ctx, None, _confluent.field_rules, outcomes
                )
            found = lookalikes(document)  # values that may be ciphertext, once decrypted (None: the usual answer)
            if found is not None:  # rare: judged against the document as it arrived
                untagged = self._review(
                    found,
                    subject,
                    cached.parsed.schema,
                    None if cached.runner.plan.is_empty else lambda: c.json_decode(payload),  # type: ignore[misc]
                )
            if ctx is not None and subject is not None:
                if migrating:
                    assert latest is not None and cached.source is not None
                    document, _ = migrate(self, ctx, subject, cached.source, latest, document)
                reader_raw = latest.schema if latest is not None else (c.schema or cached.source)
                document = read_rules(self, ctx, subject, reader_raw, None, document, _confluent.field_rules)
            if c.from_dict is not None:
                document = c.from_dict(document, ctx)  # confluent passes ctx as it came
            if state is not None and latest is None and ctx is not None and subject is not None:
                self._open_lane(data, ctx, subject, cached, domain, outcomes)
        except Exception as exc:
            mapped = registry_failure(exc, "the subject or a schema this record needs", None, role="reader")
            refused(self.stats, mapped or exc)
            if mapped is not None:
                raise mapped from exc
            raise
        self.stats._record(state, untagged)  # counted once the record is done: one lock per record
        return document

    def _open_lane(
        self, data: bytes, ctx: SerializationContext, subject: str, cached: CachedPlan, domain: str, outcomes: Outcomes
    ) -> None:
        """After a document read the general way: when every step it took is fixed by (topic, field, schema id), keep
        what they decided for :meth:`_read_lane`: a registry, prefix framing without schema-id headers, no
        ``use.latest.version``, a writer schema (and local schema) without rules, a plan that tags something."""
        c = self._confluent
        if (
            type(data) is not bytes
            or data[0] != 0
            or ctx.headers
            or c.registry is None
            or self._latest_mode
            or cached.runner.plan.is_empty
            or cached.source is None
            or cached.source.rule_set is not None
            or (c.schema is not None and c.schema.rule_set is not None)
            or len(self._lanes) >= 10_000
        ):
            return
        self._lanes[(ctx.topic, ctx.field, data[1:5])] = (subject, cached, domain, outcomes)

    def _read_lane(self, lane: tuple[Any, ...], data: bytes, ctx: SerializationContext) -> Any:
        """:meth:`_deserialize` for a document of a kind read before (:meth:`_open_lane`): the same steps, without
        deciding again what its kind fixed."""
        subject, cached, domain, outcomes = lane
        c = self._confluent
        payload = data[5:]
        untagged = None
        try:
            try:
                document = c.json_decode(payload)  # type: ignore[misc]
                if c.validate:
                    _validate(cached.parsed, document, subject, MalformedRecordError)
            except Exception as exc:
                raise malformed(exc, subject) from exc
            document, state = cached.runner.decrypt_counted(
                document, self._keyring, subject, domain, outcomes, self.stats
            )
            found = lookalikes(document)
            if found is not None:  # rare: judged against the document as it arrived
                untagged = self._review(found, subject, cached.parsed.schema, lambda: c.json_decode(payload))  # type: ignore[misc]
            if c.from_dict is not None:
                document = c.from_dict(document, ctx)
        except Exception as exc:
            refused(self.stats, exc)
            raise
        self.stats._record(state, untagged)
        return document

    def _review(self, found: Any, subject: str | None, schema: Any, again: Any) -> list[str] | None:
        """Values that look like ciphertext in untagged fields, judged (fieldcrypt.core.lookalike.review); ``again``:
        the record as it arrived, decoded again (None when nothing was decrypted)."""
        return review_lookalikes(found, self._keyring, self.stats, subject, schema, self._on_untagged, again)

    def _outcomes_for(self, cached: CachedPlan, subject: str | None, latest: Any) -> Outcomes:
        """What unreadable values read as when the document is validated against a reader schema (``latest``, None:
        the writer's alone): null only where both schemas admit it at the value's path, and the placeholder checked
        against the reader's minLength too; the reader's plan is compiled once per schema pair."""
        outcomes = self._opts.outcomes
        if latest is None or latest.schema_id is None or latest.schema_id == cached.schema_id or not outcomes.stands_in:
            return outcomes
        key = (cached.schema_id, latest.schema_id)
        found = self._reader_outcomes.get(key)
        if found is None:
            plan = self._plans.compile(latest.schema)
            nullable: dict[str, bool] = {}
            longest: dict[str, int] = {}
            for leaf in plan.leaves:  # a path several oneOf branches reach: null only if each admits it
                nullable[leaf.path] = nullable.get(leaf.path, True) and leaf.nullable
                longest[leaf.path] = max(longest.get(leaf.path, 0), leaf.min_length)
            found = replace(
                outcomes,
                reader_nulls=frozenset(p for p, ok in nullable.items() if ok),
                reader_min_lengths=frozenset((p, n) for p, n in longest.items() if n),
            )
            if len(self._reader_outcomes) < 10_000:
                self._reader_outcomes[key] = found
        return found

    def _reader_for(self, latest: Any) -> _Parsed | None:
        """The parsed reader schema of ``latest`` (looked up once per record by the caller), or None."""
        if latest is not None:
            if latest.schema_id is not None:
                parsed = self._readers.get(latest.schema_id)
                if parsed is None:
                    parsed = self._readers[latest.schema_id] = _Parsed(self, latest.schema)
                return parsed
        return None
