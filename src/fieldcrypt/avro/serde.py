"""Avro serializer and deserializer: drop-in replacements for confluent-kafka's, plus ``keyring=``.

    from fieldcrypt import Keyring
    from fieldcrypt.avro import AvroSerializer, AvroDeserializer

    keyring = Keyring("sqlite:///keys.db", "local-kek:///etc/fieldcrypt/kek.json")
    serializer = AvroSerializer(registry, schema_str, conf={"auto.register.schemas": True}, keyring=keyring)
    deserializer = AvroDeserializer(registry, keyring=keyring)

They subclass confluent's classes, take the same positional arguments and conf keys (plus ``fieldcrypt.*``
keys, see ``fieldcrypt.core.serde.FIELDCRYPT_CONF``), and write the same Confluent framing. Fields tagged ``PII``
(inline ``"confluent:tags"`` or registry ``metadata.tags``) are encrypted; everything else is byte-for-byte what
confluent's serializer writes. Confluent data-contract rules (CEL, CEL_FIELD, JSONata migrations) run through
confluent's own executors, around encryption (``fieldcrypt.core.confluent``); ENCRYPT rules are replaced by fieldcrypt's
encryption. Differences from confluent's classes: docs/compatibility.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as _ConfluentAvroDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as _ConfluentAvroSerializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import schemaless_reader, schemaless_writer

from fieldcrypt.avro.confluent import ParsedSchemas, field_rules
from fieldcrypt.avro.depth import check_depth, is_recursive
from fieldcrypt.avro.policy import compile_avro, reader_nulls
from fieldcrypt.core.confluent import (
    configured,
    default_conf,
    is_latest_mode,
    key_trackers,
    migrate,
    read_rules,
    refuse_encoding_rules,
    subject_of,
    track_original_key,
    wire_reset,
    wire_set,
    write_rules,
)
from fieldcrypt.core.lookalike import avro_candidates as lookalikes
from fieldcrypt.core.lookalike import avro_screen, has_binary
from fieldcrypt.core.lookalike import mode_of as untagged_mode
from fieldcrypt.core.lookalike import review as review_lookalikes
from fieldcrypt.core.outcomes import Outcomes
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
from fieldcrypt.core.written import WriteEntries
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys import _loop
from fieldcrypt.keys.source import KeySource
from fieldcrypt.observe.stats import SerdeStats

__all__ = ["AvroDeserializer", "AvroSerializer"]

_AVRO = "AVRO"


def _is_bytes_schema(parsed: Any) -> bool:
    return parsed == "bytes" or (isinstance(parsed, dict) and parsed.get("type") == "bytes")


def _untuple(value: Any) -> Any:
    """Drop the (name, value) tuples a named-type read leaves in unions; a decoded Avro value holds no other."""
    if isinstance(value, tuple):
        return _untuple(value[1])
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (tuple, dict, list)):
                value[k] = _untuple(v)
        return value
    if isinstance(value, list):
        return [_untuple(v) if isinstance(v, (tuple, dict, list)) else v for v in value]
    return value


_ParsedSchemas = ParsedSchemas  # (fieldcrypt.avro.confluent)


class AvroSerializer(Reconfigurable, _ConfluentAvroSerializer):
    """confluent's ``AvroSerializer`` that encrypts tagged fields. Same arguments, plus ``keyring=``."""

    def __init__(
        self,
        schema_registry_client: SchemaRegistryClient,
        schema_str: str | Schema | None = None,
        to_dict: Callable[[object, SerializationContext], dict[str, Any]] | None = None,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        confluent_conf, self._opts = split_conf(conf)
        valid = [*default_conf(_ConfluentAvroSerializer), *FIELDCRYPT_CONF, *WRITE_CONF]
        call_confluent_init(
            lambda: super(AvroSerializer, self).__init__(
                schema_registry_client, schema_str, to_dict, confluent_conf, rule_conf, rule_registry
            ),
            valid,
        )
        self._confluent = configured(self)  # what confluent's constructor set up, read on every record
        self._keyring = check_keyring(keyring)
        #: what this serializer has done: records, values encrypted, key lookups, errors (fieldcrypt.SerdeStats)
        self.stats = SerdeStats("serializer")
        parse = ParsedSchemas(self)
        self._plans = PlanCache(schema_registry_client, parse, compile_avro, self._opts.rules)
        # reject bad tags when the serializer first sees the schema; what is written must keep every tag of it
        schema = self._confluent.schema
        local_plan = self._plans.compile(schema) if schema is not None else None
        self._entries = WriteEntries(
            self,
            self._plans,
            _AVRO,
            self._confluent.parsed_schema,
            local_plan,
            allow_tag_removal=self._opts.allow_tag_removal,
        )
        # the subject name strategy is a function of (topic, field, schema name); the schema name is fixed here
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._policy = PolicyCheck(self._keyring, writing=True, stats=self.stats)
        #: (topic, field) -> the writer of the next records of that kind (:meth:`_lane`)
        self._lanes: dict[tuple[str, Any], Callable[[object, SerializationContext], bytes]] = {}

    def __call__(self, obj: object, ctx: SerializationContext | None = None) -> bytes | None:
        if ctx is not None and obj is not None:
            lane = self._lanes.get((ctx.topic, ctx.field))
            if lane is not None:
                return lane(obj, ctx)  # (which tracks the key as below)
        try:
            return self._serialize(obj, ctx)
        finally:
            track_original_key(obj, ctx)  # as confluent: its DLQ action names the key of a value that failed

    def _serialize(self, obj: object, ctx: SerializationContext | None) -> bytes | None:
        if obj is None:
            return None
        if ctx is not None:  # (the asyncio twin's way in: __call__ looks for a lane itself)
            lane = self._lanes.get((ctx.topic, ctx.field))
            if lane is not None:
                return lane(obj, ctx)
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
            domain = self._opts.domain or subject
            self._policy(cached, domain, subject)
            encrypted, state = cached.runner.encrypt_counted(
                value, self._keyring, subject, domain, self.stats, self._opts.format_version
            )
            fo = io.BytesIO()
            if c.prefix_framing:
                fo.write(prefix)
            if _is_bytes_schema(cached.parsed):
                fo.write(encrypted if isinstance(encrypted, bytes) else str(encrypted).encode())
            else:
                schemaless_writer(
                    fo, cached.parsed, encrypted, strict=c.strict, strict_allow_default=c.strict_allow_default
                )
            if c.prefix_framing:
                out = fo.getvalue()
                if not self._entries.latest_mode and not _is_bytes_schema(cached.parsed) and len(self._lanes) < 10_000:
                    # what this record's kind (topic, field) fixed, for the next ones (_lane)
                    self._lanes[(ctx.topic, ctx.field)] = self._lane(subject, cached, prefix, domain, ctx)
            else:
                assert c.schema_id_serializer is not None
                out = c.schema_id_serializer(fo.getvalue(), ctx, schema_id)
        except Exception as exc:
            refused(self.stats, exc)
            raise
        self.stats._wrote(state)  # counted once the record is done: one lock per record
        return out

    def _lane(
        self, subject: str, cached: CachedPlan, prefix: bytes, domain: str, first: SerializationContext
    ) -> Callable[[object, SerializationContext], bytes]:
        """:meth:`_serialize` for the next records of a (topic, field) written with prefix framing, outside
        ``use.latest.version``: their subject, schema id, plan and domain are what this record found (the subject
        name strategy is a function of topic, field and the serializer's schema; the entry of a subject outside
        latest mode does not change), bound once into one function."""
        c, stats, parsed, prepared = self._confluent, self.stats, cached.parsed, self._prepared
        encrypt = cached.runner.writer(self._keyring, subject, domain, stats, self._opts.format_version)
        to_dict, active, once, wrote, new_buffer = c.to_dict, _loop.active, _loop.once, stats._wrote, io.BytesIO
        # fastavro's defaults, passed only when they are not (a keyword argument costs a little on every record)
        flags = {"strict": True} if c.strict else {}
        if c.strict_allow_default:
            flags["strict_allow_default"] = True
        remember, forget = key_trackers()  # track_original_key, for this lane's field
        is_key = first.field == MessageField.KEY

        def write(obj: object, ctx: SerializationContext) -> bytes:
            try:
                try:
                    if to_dict is None and active() is None:
                        value = obj  # what _prepared gives outside latest mode without to_dict (once(): no replay)
                    else:
                        value = once("record", prepared, obj, ctx, subject, cached)
                    encrypted, state = encrypt(value)
                    fo = new_buffer()
                    fo.write(prefix)
                    if flags:
                        schemaless_writer(fo, parsed, encrypted, **flags)
                    else:
                        schemaless_writer(fo, parsed, encrypted)
                    out = fo.getvalue()
                except Exception as exc:
                    refused(stats, exc)
                    raise
                wrote(state)
                return out
            finally:
                if is_key:
                    remember(obj)
                else:
                    forget()

        return write

    def _prepared(self, obj: object, ctx: SerializationContext, subject: str, cached: CachedPlan) -> Any:
        c = self._confluent
        value = c.to_dict(obj, ctx) if c.to_dict is not None else obj
        if self._entries.latest_mode:
            value = write_rules(self, ctx, subject, cached.source, value, field_rules)
        return value


class AvroDeserializer(Reconfigurable, _ConfluentAvroDeserializer):
    """confluent's ``AvroDeserializer`` that decrypts tagged fields. Same arguments, plus ``keyring=``."""

    def __init__(
        self,
        schema_registry_client: SchemaRegistryClient,
        schema_str: str | Schema | None = None,
        from_dict: Callable[[dict[str, Any], SerializationContext], object] | None = None,
        return_record_name: bool = False,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        conf, self._on_untagged = untagged_mode(conf)  # fieldcrypt.on.untagged.ciphertext (fieldcrypt.core.lookalike)
        confluent_conf, self._opts = split_conf(conf, reading=True)
        valid = [*default_conf(_ConfluentAvroDeserializer), *FIELDCRYPT_CONF, *READ_CONF]
        call_confluent_init(
            lambda: super(AvroDeserializer, self).__init__(
                schema_registry_client,
                schema_str,
                from_dict,
                return_record_name,
                confluent_conf,
                rule_conf,
                rule_registry,
            ),
            valid,
        )
        self._confluent = configured(self)  # what confluent's constructor set up, read on every record
        self._keyring = check_keyring(keyring)
        self._plans = PlanCache(schema_registry_client, ParsedSchemas(self), compile_avro, self._opts.rules)
        #: (writer schema id, reader schema id or "local") -> the outcomes with the reader's nullability
        self._reader_outcomes: dict[tuple[int | str, int | str], Outcomes] = {}
        self._subjects: dict[
            tuple[str, str, str | None], str
        ] = {}  # (topic, field) -> subject, for topic-based strategies
        #: what this deserializer has done: records, values read, erased, denied, key lookups, errors (never values)
        self.stats = SerdeStats("deserializer")
        self._policy = PolicyCheck(self._keyring, writing=False, stats=self.stats)
        self._latest_mode = is_latest_mode(self)
        self._binary: dict[int | str, bool] = {}  # schema id -> may hold bytes/fixed values (fieldcrypt.core.lookalike)
        #: (topic, field, schema id bytes) -> the reader of the next records of that kind (_open_lane)
        self._lanes: dict[tuple[str, Any, bytes], Callable[[bytes, SerializationContext], Any]] = {}

    def __call__(self, data: bytes | None, ctx: SerializationContext | None = None) -> Any:
        if ctx is not None and type(data) is bytes and len(data) > 5 and data[0] == 0 and not ctx.headers:
            lane = self._lanes.get((ctx.topic, ctx.field, data[1:5]))
            if lane is not None:  # (a lane's schema has no rules: nothing reads the wire bytes set below)
                return lane(data, ctx)  # (which tracks the key as below)
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
        try:  # one try for the whole record: a refused record is counted and logged (never with a value)
            check_framing(data)
            subject = subject_lookup(ctx, cached_subject, self, self._subjects, ctx, None)  # may ask the registry
            if prefix_framed(data, ctx):
                schema_id = int.from_bytes(data[1:5], "big")
                cached = self._plans.get(schema_id) or self._plans.load(schema_id, subject)
                payload = io.BytesIO(data)
                payload.seek(5)
            else:
                sid = SchemaId(_AVRO)
                try:
                    raw = self._confluent.schema_id_deserializer(data, ctx, sid)  # type: ignore[misc]
                except Exception as exc:
                    raise malformed(exc, subject) from exc
                payload = raw if isinstance(raw, io.BytesIO) else io.BytesIO(raw)
                key = sid.id if sid.id is not None else str(sid.guid)
                cached = self._plans.get(key) or self._plans.load(
                    key, subject, writer_schema_of(self, sid, subject), from_record=True
                )
            writer = cached.parsed
            if subject is None and isinstance(writer, dict):
                subject = subject_of(self, ctx, writer.get("name"))
            refuse_encoding_rules(cached.source, subject)  # confluent would run them on the bytes before parsing
            # one lookup per record, as confluent makes: it decides both the stand-ins and the shape returned
            latest = reader_schema(self, subject) if self._latest_mode and subject is not None else None
            state = None  # the record's counts, once its tagged values are decrypted
            untagged = None  # field paths of ciphertexts in untagged fields, accepted (fieldcrypt.core.lookalike)
            if _is_bytes_schema(writer):  # confluent writes a bytes schema's value raw, without Avro's length
                out = payload.read()
                if not cached.runner.plan.is_empty:  # a tagged top-level bytes value: decrypted, or refused
                    self._policy(cached, self._opts.domain or subject, subject)
                    domain = key_domain(self._opts.domain, subject)
                    out, state = decrypt_record(self, cached, out, subject, domain, ctx, writer, field_rules)
            else:
                plan = cached.runner.plan
                start = payload.tell()  # where the record's bytes begin (decoded again only to judge a lookalike)
                try:
                    if is_recursive(writer):  # fastavro's C reader would crash the process on a deep record
                        check_depth(writer, payload.getvalue()[payload.tell() :], subject)
                    if plan.named_read:  # unions of several named types holding tags: the reader must say which
                        record: Any = schemaless_reader(
                            payload, writer, None, return_named_type=True, return_named_type_override=True
                        )
                    else:
                        record = schemaless_reader(payload, writer, None, False)
                except Exception as exc:
                    raise malformed(exc, subject) from exc
                self._policy(cached, self._opts.domain or subject, subject)
                if plan.is_empty:  # values that may be ciphertext (None: the usual answer, often from the payload)
                    found = lookalikes(record, payload.getvalue(), not self._binary_schema(cached.schema_id, writer))
                else:
                    domain = key_domain(self._opts.domain, subject)
                    outcomes = self._outcomes_for(cached, subject, latest)
                    record, state = decrypt_record(
                        self, cached, record, subject, domain, ctx, writer, field_rules, outcomes
                    )
                    found = lookalikes(record, b"", False)  # decrypted: what is left looks like ciphertext
                if found is not None:  # rare: judged against the record as it arrived
                    untagged = self._review(
                        found,
                        subject,
                        writer,
                        None if plan.is_empty else lambda: self._decode_again(payload, start, writer, plan.named_read),
                    )
                out = self._resolve(record, cached, writer, subject, ctx, latest)
                if latest is None and state is not None and ctx is not None and subject is not None:
                    self._open_lane(data, ctx, subject, cached, writer, domain, outcomes)
        except Exception as exc:
            mapped = registry_failure(exc, "the subject or a schema this record needs", None, role="reader")
            refused(self.stats, mapped or exc)
            if mapped is not None:
                raise mapped from exc
            raise
        self.stats._record(state, untagged)  # counted once the record is done: one lock per record
        return out

    def _open_lane(
        self,
        data: bytes,
        ctx: SerializationContext,
        subject: str,
        cached: CachedPlan,
        writer: Any,
        domain: str,
        outcomes: Outcomes,
    ) -> None:
        """After a record read the general way: when every step it took is fixed by (topic, field, schema id), keep
        what they decided, for :meth:`_lane` to read the next records of that kind with: prefix framing without
        schema-id headers, no ``use.latest.version``, no reader schema and no record names to return, a writer
        schema without rules, recursion or named-type unions, a plan that tags something."""
        plan = cached.runner.plan
        c = self._confluent
        if (
            type(data) is not bytes
            or data[0] != 0
            or ctx.headers
            or self._latest_mode
            or c.reader_schema is not None
            or c.return_record_name
            or plan.named_read
            or plan.is_empty
            or _is_bytes_schema(writer)
            or is_recursive(writer)
            or cached.source is None
            or cached.source.rule_set is not None
            or len(self._lanes) >= 10_000
        ):
            return
        self._lanes[(ctx.topic, ctx.field, data[1:5])] = self._lane(
            subject, cached, writer, domain, outcomes, ctx.field
        )

    def _lane(
        self, subject: str, cached: CachedPlan, writer: Any, domain: str, outcomes: Outcomes, field: Any
    ) -> Callable[[bytes, SerializationContext], Any]:
        """:meth:`_deserialize` for the next records of a kind read before (:meth:`_open_lane`): the same steps,
        without deciding again what its kind fixed, bound once into one function."""
        stats, review, again = self.stats, self._review, self._decode_again
        decrypt = cached.runner.reader(self._keyring, subject, domain, outcomes, stats)
        from_dict, counted, new_buffer = self._confluent.from_dict, stats._record, io.BytesIO
        screen = avro_screen(writer)  # lookalikes(record, b"", False) for this schema's records
        remember, forget = key_trackers()  # track_original_key, for this lane's field
        is_key = field == MessageField.KEY

        def read(data: bytes, ctx: SerializationContext) -> Any:
            try:
                untagged = None
                try:
                    payload = new_buffer(data)
                    payload.seek(5)
                    try:
                        record = schemaless_reader(payload, writer, None, False)
                    except Exception as exc:
                        raise malformed(exc, subject) from exc
                    record, state = decrypt(record)
                    found = screen(record)  # decrypted: what is left looks like ciphertext
                    if found is not None:  # rare: judged against the record as it arrived
                        untagged = review(found, subject, writer, lambda: again(payload, 5, writer, False))
                    out = from_dict(record, ctx) if from_dict is not None else record
                except Exception as exc:
                    refused(stats, exc)
                    raise
                counted(state, untagged)  # counted once the record is done: one lock per record
                return out
            finally:
                if is_key:
                    remember(data)
                else:
                    forget()

        return read

    def _review(self, found: Any, subject: str | None, schema: Any, again: Any) -> list[str] | None:
        """Values that look like ciphertext in untagged fields, judged (fieldcrypt.core.lookalike.review); ``again``:
        the record as it arrived, decoded again (None when nothing was decrypted)."""
        return review_lookalikes(found, self._keyring, self.stats, subject, schema, self._on_untagged, again)

    def _binary_schema(self, schema_id: int | str, writer: Any) -> bool:
        """Whether the writer's schema may hold bytes or fixed values (fieldcrypt.core.lookalike.has_binary), by id."""
        binary = self._binary.get(schema_id)
        if binary is None:
            binary = has_binary(writer)
            if len(self._binary) < 10_000:
                self._binary[schema_id] = binary
        return binary

    @staticmethod
    def _decode_again(payload: io.BytesIO, start: int, writer: Any, named: bool) -> Any:
        """The record as it arrived, before decryption changed it: its bytes decoded again
        (fieldcrypt.core.lookalike)."""
        again = io.BytesIO(payload.getvalue())
        again.seek(start)
        if named:
            return schemaless_reader(again, writer, None, return_named_type=True, return_named_type_override=True)
        return schemaless_reader(again, writer, None, False)

    def _outcomes_for(self, cached: CachedPlan, subject: str | None, latest: Any) -> Outcomes:
        """What unreadable values read as for a record of ``cached``'s schema returned in the reader's shape: null
        only where the writer's and the reader's schema both admit it (``reader_nulls``), once per schema pair."""
        outcomes = self._opts.outcomes
        if "null" not in (outcomes.on_erased, outcomes.on_denied):
            return outcomes
        reader = self._reader_for(subject, cached.schema_id, latest)
        if reader is None:
            return outcomes
        key = (cached.schema_id, latest.schema_id if latest is not None else "local")
        found = self._reader_outcomes.get(key)
        if found is None:
            found = replace(outcomes, reader_nulls=reader_nulls(cached.parsed, reader))
            if len(self._reader_outcomes) < 10_000:
                self._reader_outcomes[key] = found
        return found

    def _resolve(
        self,
        record: Any,
        cached: Any,
        writer: Any,
        subject: str | None,
        ctx: SerializationContext | None,
        latest: Any,
    ) -> Any:
        """The decrypted record in the reader's shape: migration rules or schema resolution, then READ rules.
        ``latest``: the reader schema use.latest.version names (looked up once for the record), or None."""
        plan = cached.runner.plan
        if latest is not None and ctx is not None and subject is not None and cached.source is not None:
            if plan.named_read:
                record = _untuple(record)
            record, migrated = migrate(self, ctx, subject, cached.source, latest, record)
            if migrated:  # as confluent: the migration rules produce the reader's shape, no resolution follows
                return self._read_rules(ctx, subject, latest.schema, ParsedSchemas(self)(latest.schema), record)
        c = self._confluent
        reader = self._reader_for(subject, cached.schema_id, latest)
        if reader is not None or c.return_record_name:
            try:
                record = self._project(record, writer, reader if reader is not None else writer)
            except Exception as exc:
                raise malformed(exc, subject) from exc
        elif plan.named_read:
            record = _untuple(record)
        reader_raw: Schema | None
        if latest is not None:
            reader_raw, reader_parsed = latest.schema, reader if reader is not None else writer
        elif c.reader_schema is not None:
            reader_raw, reader_parsed = c.schema, c.reader_schema
        else:
            reader_raw, reader_parsed = cached.source, writer
        return self._read_rules(ctx, subject, reader_raw, reader_parsed, record)

    def _read_rules(
        self, ctx: SerializationContext | None, subject: str | None, raw: Schema | None, parsed: Any, record: Any
    ) -> Any:
        """READ domain rules on the decrypted record (plaintext), then from_dict, as confluent orders them."""
        if ctx is not None and subject is not None:
            record = read_rules(self, ctx, subject, raw, parsed, record, field_rules)
        from_dict = self._confluent.from_dict
        if from_dict is not None:
            return from_dict(record, ctx)  # confluent passes ctx as it came
        return record

    def _reader_for(self, subject: str | None, writer_id: int | str, latest: Any) -> Any:
        """The reader schema to resolve to, or None when the record is already in it (no re-encoding). ``latest``:
        the latest schema this call already looked up (one lookup per record, as confluent makes)."""
        if self._latest_mode and subject is not None:
            if latest is not None:
                if latest.schema_id == writer_id:
                    return None
                return ParsedSchemas(self)(latest.schema)
        return self._confluent.reader_schema

    def _project(self, record: Any, writer: Any, reader: Any) -> Any:
        """Apply Avro schema resolution (reader schema, record names) to a decrypted record."""
        buf = io.BytesIO()
        schemaless_writer(buf, writer, record)
        buf.seek(0)
        return schemaless_reader(buf, writer, reader, self._confluent.return_record_name)
