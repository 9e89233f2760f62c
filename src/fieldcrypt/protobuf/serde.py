"""Protobuf serializer and deserializer: drop-in replacements for confluent-kafka's, plus ``keyring=``.

    from fieldcrypt.protobuf import ProtobufSerializer, ProtobufDeserializer

    serializer = ProtobufSerializer(Customer, registry, {"use.deprecated.format": False}, keyring=keyring)
    deserializer = ProtobufDeserializer(Customer, {"use.deprecated.format": False}, registry, keyring=keyring)

They subclass confluent's classes, take the same positional arguments and conf keys (plus ``fieldcrypt.*`` keys),
and write the same Confluent framing (schema id, then the message indexes). Fields tagged ``PII`` (the field option
``(confluent.field_meta).tags``, or registry ``metadata.tags``) are encrypted: string fields hold unpadded base64
text, bytes fields raw bytes, so the record stays valid for confluent's plain ``ProtobufDeserializer``. The plan
comes from the schema as the registry holds it, never from the generated class alone; the caller's message is never
changed (the serializer encrypts a copy re-read under the registry's descriptor). Differences from confluent's
classes: docs/compatibility.md.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as _ConfluentProtobufDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as _ConfluentProtobufSerializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import SerializationContext
from google.protobuf import empty_pb2, json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from fieldcrypt.core.confluent import (
    FieldRules,
    configured,
    default_conf,
    is_latest_mode,
    migrate,
    read_rules,
    refuse_encoding_rules,
    subject_of,
    track_original_key,
    wire_reset,
    wire_set,
    write_rules,
)
from fieldcrypt.core.lookalike import candidates as lookalikes
from fieldcrypt.core.lookalike import mode_of as untagged_mode
from fieldcrypt.core.lookalike import review as review_lookalikes
from fieldcrypt.core.plan import FieldPlan
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
    refused,
    schema_fingerprint,
    split_conf,
)
from fieldcrypt.core.written import WriteEntries
from fieldcrypt.errors import ConfigurationError, EncryptionError, FieldcryptError, MalformedRecordError, PolicyError
from fieldcrypt.keys import _loop
from fieldcrypt.keys.source import KeySource
from fieldcrypt.observe.stats import SerdeStats
from fieldcrypt.protobuf.confluent import (
    FORMAT_SERIALIZED,
    ParsedProto,
    ParsedSchemas,
    field_rules_for,
    is_repeated,
    local_parsed,
    references,
    schema_text,
)
from fieldcrypt.protobuf.policy import compile_protobuf
from fieldcrypt.protobuf.project import Projector, key_text, number_paths, unknown_fields

__all__ = ["ProtobufDeserializer", "ProtobufSerializer", "encode_indexes", "message_tree", "read_indexes"]

_PROTOBUF = "PROTOBUF"


def encode_indexes(indexes: list[int]) -> bytes:
    """The message indexes as confluent frames them after the schema id: ``[0]`` as the single byte 0, else the
    count and each index as zigzag varints."""
    if list(indexes) == [0]:
        return b"\x00"
    out = bytearray()
    for n in (len(indexes), *indexes):
        z = (n << 1) ^ (n >> 63)
        while True:
            b = z & 0x7F
            z >>= 7
            if z:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
    return bytes(out)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        if at >= len(data) or shift > 63:
            raise MalformedRecordError("the record's message indexes are cut short or malformed")
        b = data[at]
        n |= (b & 0x7F) << shift
        at += 1
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), at
        shift += 7


def read_indexes(payload: bytes) -> tuple[list[int], bytes]:
    """The message indexes at the start of a record's payload (after the 5-byte prefix), and the message bytes."""
    count, at = _varint(payload, 0)
    if count == 0:
        return [0], payload[at:]
    if count < 0 or count > 100_000:
        raise MalformedRecordError("the record's message indexes are malformed")
    indexes = []
    for _ in range(count):
        i, at = _varint(payload, at)
        indexes.append(i)
    return indexes, payload[at:]


def proto_fingerprint(schema: Schema, root: str) -> str:
    """:func:`fieldcrypt.core.serde.schema_fingerprint` of a Protobuf schema for records of message ``root``: a
    schema file holds several messages, each its own plan and policy."""
    return hashlib.sha256(f"{schema_fingerprint(schema)}\0{root}".encode()).hexdigest()


def message_tree(message: Message) -> dict[str, Any]:
    """Every string and bytes value of a message, as a tree of dicts (field names, map keys as text) and lists:
    what the untagged-ciphertext check looks at (``fieldcrypt.core.lookalike``)."""
    out: dict[str, Any] = {}
    for fd, v in type(message).ListFields(message):  # (through the class: a field may shadow the method)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                out[fd.name] = {key_text(k): message_tree(x) for k, x in sorted(v.items())}
            elif value_fd.type in (value_fd.TYPE_STRING, value_fd.TYPE_BYTES):
                out[fd.name] = {key_text(k): x for k, x in sorted(v.items())}
        elif fd.message_type is not None:
            out[fd.name] = [message_tree(x) for x in v] if is_repeated(fd) else message_tree(v)
        elif fd.type in (fd.TYPE_STRING, fd.TYPE_BYTES):
            out[fd.name] = list(v) if is_repeated(fd) else v
    return out


def _names(parsed: ParsedProto) -> dict[str, Any]:
    """Every field name the schema's files declare, as ``fieldcrypt.core.lookalike`` reads a schema's names."""
    names: set[str] = set()
    for f in parsed.files:
        stack = list(f.message_types_by_name.values())
        while stack:
            d = stack.pop()
            names.update(fd.name for fd in d.fields)
            stack.extend(d.nested_types)
    return {"fields": [{"name": n} for n in sorted(names)]}


@dataclass(frozen=True)
class _Shape:
    """What a record of one (schema, root message) is read or written with."""

    cached: CachedPlan
    desc: Descriptor
    cls: type[Message]
    projector: Projector
    indexes: list[int]
    #: confluent's rule transformer for records of this message (made once: a CSFLE read on a projection)
    rules: FieldRules = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", field_rules_for(self.desc.full_name, self.projector.project))


def _message_class(value: Any, what: str) -> None:
    """``value`` is a generated message class (confluent's constructors would fail on anything else with an
    AttributeError)."""
    if not (isinstance(value, type) and issubclass(value, Message)):
        raise ConfigurationError(f"{what} must be a generated Protobuf message class, not {type(value).__name__}")


def _refuse_unknown(work: Message, subject: str | None, *, writing: bool) -> None:
    if unknown_fields(work):
        if writing:
            raise EncryptionError(
                "the message holds fields the schema written does not declare (a generated class newer than the "
                "registered schema?): they could be tagged there, so the record is refused",
                subject=subject,
            )
        raise MalformedRecordError(
            "the record holds fields its writer schema does not declare: they cannot be told apart from tagged ones",
            subject=subject,
        )


class ProtobufSerializer(Reconfigurable, _ConfluentProtobufSerializer):
    """confluent's ``ProtobufSerializer`` that encrypts tagged fields. Same arguments, plus ``keyring=``."""

    def __init__(
        self,
        msg_type: type[Message],
        schema_registry_client: SchemaRegistryClient,
        conf: dict[str, Any] | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        _message_class(msg_type, "msg_type")
        confluent_conf, self._opts = split_conf(conf)
        valid = [*default_conf(_ConfluentProtobufSerializer), *FIELDCRYPT_CONF, *WRITE_CONF]
        call_confluent_init(
            lambda: super(ProtobufSerializer, self).__init__(
                msg_type, schema_registry_client, confluent_conf, rule_conf, rule_registry
            ),
            valid,
        )
        self._confluent = configured(self)
        self._keyring = check_keyring(keyring)
        #: what this serializer has done: records, values encrypted, key lookups, errors (fieldcrypt.SerdeStats)
        self.stats = SerdeStats("serializer")
        self._type = msg_type
        self._root = msg_type.DESCRIPTOR.full_name
        self._rules = field_rules_for(self._root)  # confluent's rule transformer for this message (WRITE rules)
        local = local_parsed(msg_type)
        schema = self._confluent.schema
        assert schema is not None
        self._parse = ParsedSchemas(self, (schema, local))
        self._plans = PlanCache(
            schema_registry_client,
            self._parse,
            partial(compile_protobuf, root=self._root, fallback=True),  # (its other registered versions too)
            self._opts.rules,
            fmt=FORMAT_SERIALIZED,
            fingerprint=partial(proto_fingerprint, root=self._root),
        )
        local_plan = self._plans.compile(schema)  # bad tags fail here, at construction
        self._local_numbers = number_paths(local_plan, msg_type.DESCRIPTOR)
        self._to_register: dict[str, Schema] = {}
        self._entries = WriteEntries(
            self,
            self._plans,
            _PROTOBUF,
            local,
            local_plan,
            allow_tag_removal=self._opts.allow_tag_removal,
            to_register=self._to_register.__getitem__,
        )
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._policy = PolicyCheck(self._keyring, writing=True, stats=self.stats)
        self._shapes: dict[tuple[str, int | str], _Shape] = {}

    def __call__(self, message: Message, ctx: SerializationContext | None = None) -> bytes | None:
        try:
            return self._serialize(message, ctx)
        finally:
            track_original_key(message, ctx)  # as confluent: its DLQ action names the key of a value that failed

    def _serialize(self, message: Message, ctx: SerializationContext | None) -> bytes | None:
        if message is None:
            return None
        if not isinstance(message, self._type):
            raise ValueError(f"message must be of type {self._type} not {type(message)}")
        c = self._confluent
        try:
            subject = cached_subject(self, self._subjects, ctx, self._root)
            if subject is None:
                raise ConfigurationError("fieldcrypt serializers need a SerializationContext (topic and field)")
            assert ctx is not None
            if not self._entries.latest_mode and subject not in self._to_register:
                refs = references(self, ctx, self._type)  # registered first (auto.register.schemas), as confluent
                self._to_register[subject] = Schema(schema_text(self._type), _PROTOBUF, refs)
            cached, _, schema_id = self._entries.get(subject)
            shape = self._shape(subject, cached)
            value = _loop.once("record", self._prepared, message, ctx, subject, cached)
            domain = self._opts.domain or subject
            self._policy(cached, domain, subject)
            plan = cached.runner.plan
            out: bytes
            if plan.is_empty:  # nothing tagged: written as confluent writes it (counted as an untagged record)
                body = type(value).SerializeToString(value)
                _, state = cached.runner.encrypt_counted(
                    {}, self._keyring, subject, domain, self.stats, self._opts.format_version
                )
            else:
                # a copy of the message, read again under the descriptor of the schema written: fields the caller's
                # class declares under other names line up by number, and fields it lacks are found
                try:
                    work = shape.cls.FromString(type(value).SerializeToString(value))
                except DecodeError as exc:
                    raise EncryptionError(
                        "the message does not decode with the schema written", subject=subject
                    ) from exc
                _refuse_unknown(work, subject, writing=True)
                encrypted, state = cached.runner.encrypt_counted(
                    shape.projector.project(work), self._keyring, subject, domain, self.stats, self._opts.format_version
                )
                # map entries in key order: the same record gives the same bytes (frozen vectors, compaction)
                body = shape.cls.SerializeToString(shape.projector.apply(encrypted, work), deterministic=True)
            if c.prefix_framing:
                assert schema_id.id is not None
                out = b"\x00" + schema_id.id.to_bytes(4, "big") + encode_indexes(shape.indexes) + body
            else:
                assert c.schema_id_serializer is not None
                guid = str(schema_id.guid) if schema_id.guid is not None else None
                sid = SchemaId(_PROTOBUF, schema_id.id, guid, list(shape.indexes))
                out = bytes(c.schema_id_serializer(body, ctx, sid))
        except Exception as exc:
            refused(self.stats, exc)
            raise
        self.stats._wrote(state)  # counted once the record is done: one lock per record
        return out

    def _shape(self, subject: str, cached: CachedPlan) -> _Shape:
        key = (subject, cached.schema_id)
        found = self._shapes.get(key)
        if found is not None and found.cached is cached:
            return found
        parsed: ParsedProto = cached.parsed
        desc = parsed.message(self._root)
        if desc is None or desc.file is not parsed.file:
            raise PolicyError(
                f"the schema written (id {cached.schema_id}) declares no message {self._root} in its own file",
                subject=subject,
            )
        if not self._opts.allow_tag_removal:
            self._check_numbers(cached, desc, subject)
        found = _Shape(cached, desc, parsed.cls(desc), Projector(cached.runner.plan, desc), parsed.indexes_of(desc))
        if len(self._shapes) < 10_000:
            self._shapes[key] = found
        return found

    def _check_numbers(self, cached: CachedPlan, desc: Descriptor, subject: str) -> None:
        """The schema written must encrypt every field the generated class encrypts, by field number: the message is
        written as its fields' numbers say, so a registry version that renamed a tagged field (and left it untagged),
        or moved the tag to another number, would otherwise write it in clear. (The tag-removal check of
        ``fieldcrypt.core.written`` compares paths, by name.)"""
        written = number_paths(cached.runner.plan, desc)
        lost = sorted(path for numbers, path in self._local_numbers.items() if numbers not in written)
        if lost:
            raise PolicyError(
                f"the schema written (id {cached.schema_id}) does not encrypt the field numbers the generated class "
                f"encrypts at {', '.join(lost)} (a field renamed or renumbered without its tag): they would be "
                "written in clear; set fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )

    def _prepared(self, message: Message, ctx: SerializationContext, subject: str, cached: CachedPlan) -> Any:
        if self._entries.latest_mode:
            return write_rules(self, ctx, subject, cached.source, message, self._rules)
        return message


class _PlansById:
    """What ``fieldcrypt verify`` reads of a deserializer (``_plans.get(schema_id)``): the plan of a schema's first
    message, once a record of it was read."""

    def __init__(self, shapes: dict[tuple[int | str, tuple[int, ...]], _Shape]) -> None:
        self._shapes = shapes

    def get(self, schema_id: int | str) -> CachedPlan | None:
        found = self._shapes.get((schema_id, (0,)))
        return found.cached if found is not None else None


class ProtobufDeserializer(Reconfigurable, _ConfluentProtobufDeserializer):
    """confluent's ``ProtobufDeserializer`` that decrypts tagged fields. Same arguments, plus ``keyring=``.

    ``message_type`` None (a fieldcrypt extension, for tools that read any topic): records are returned as messages
    of the writer's schema (classes made from the registry's descriptors); a registry client is then required."""

    def __init__(
        self,
        message_type: type[Message] | None,
        conf: dict[str, Any] | None = None,
        schema_registry_client: SchemaRegistryClient | None = None,
        rule_conf: dict[str, Any] | None = None,
        rule_registry: Any = None,
        *,
        keyring: KeySource,
    ) -> None:
        if message_type is not None:
            _message_class(message_type, "message_type")
        conf, self._on_untagged = untagged_mode(conf)
        confluent_conf, self._opts = split_conf(conf, reading=True)
        outcomes = self._opts.outcomes
        if "marker" in (outcomes.on_erased, outcomes.on_denied):
            raise ConfigurationError(
                "fieldcrypt.on.erased / fieldcrypt.on.denied = marker: a Protobuf field cannot hold a marker object; "
                "use null, placeholder or raise"
            )
        valid = [*default_conf(_ConfluentProtobufDeserializer), *FIELDCRYPT_CONF, *READ_CONF]
        if message_type is None and schema_registry_client is None:
            raise ConfigurationError("a ProtobufDeserializer without a message_type needs a schema registry client")
        call_confluent_init(
            lambda: super(ProtobufDeserializer, self).__init__(
                message_type or empty_pb2.Empty, confluent_conf, schema_registry_client, rule_conf, rule_registry
            ),
            valid,
        )
        self._confluent = configured(self)
        self._keyring = check_keyring(keyring)
        self._type = message_type
        #: what this deserializer has done: records, values read, erased, denied, key lookups, errors (never values)
        self.stats = SerdeStats("deserializer")
        self._policy = PolicyCheck(self._keyring, writing=False, stats=self.stats)
        self._latest_mode = is_latest_mode(self)
        self._parse = ParsedSchemas(self)
        self._roots: dict[str, PlanCache] = {}  # root message -> its plans, by schema id
        self._shapes: dict[tuple[int | str, tuple[int, ...]], _Shape] = {}
        self._plans = _PlansById(self._shapes)
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._local: _Shape | None = None
        self._last: tuple[int, _Shape] | None = None
        self._names: dict[int | str, dict[str, Any]] = {}

    def _plans_for(self, root: str) -> PlanCache:
        plans = self._roots.get(root)
        if plans is None:
            plans = self._roots[root] = PlanCache(
                self._confluent.registry,
                self._parse,
                partial(compile_protobuf, root=root),
                self._opts.rules,
                fmt=FORMAT_SERIALIZED,
                fingerprint=partial(proto_fingerprint, root=root),
            )
        return plans

    def _local_shape(self) -> _Shape:
        """No registry client: the plan of the generated class's own schema (as confluent parses into it)."""
        if self._local is None:
            assert self._type is not None
            parsed = local_parsed(self._type)
            desc = self._type.DESCRIPTOR
            plan: FieldPlan = compile_protobuf(parsed, self._opts.rules, root=desc.full_name)
            from fieldcrypt.core.engine import PlanRunner

            cached = CachedPlan("local", parsed, PlanRunner(plan), "", None)
            self._local = _Shape(cached, desc, self._type, Projector(plan, desc), parsed.indexes_of(desc))
        return self._local

    def _shape(self, sid: SchemaId, indexes: tuple[int, ...], subject: str | None) -> _Shape:
        key: int | str = sid.id if sid.id is not None else str(sid.guid)
        found = self._shapes.get((key, indexes))
        if found is not None:
            return found
        writer = writer_schema_of(self, sid, subject, FORMAT_SERIALIZED)
        try:
            parsed = self._parse(writer)
        except FieldcryptError:
            raise
        except Exception as exc:
            mapped = registry_failure(exc, f"a schema that schema id {key} references", subject, role="reference")
            if mapped is not None:
                raise mapped from exc
            raise PolicyError(
                f"schema id {key} cannot be read as this deserializer's format ({type(exc).__name__})", subject=subject
            ) from exc
        desc = parsed.by_indexes(list(indexes), subject)
        cached = self._plans_for(desc.full_name).load(key, subject, writer, from_record=True)
        found = _Shape(cached, desc, parsed.cls(desc), Projector(cached.runner.plan, desc), list(indexes))
        if len(self._shapes) < 10_000:
            self._shapes[(key, indexes)] = found
        return found

    def __call__(self, data: bytes | None, ctx: SerializationContext | None = None) -> Any:
        try:
            if data is None:  # (a key tracked as confluent does, for None too)
                return None
            token = wire_set(data)  # (the bytes a rule's DLQ action sends)
            try:
                return self._deserialize(data, ctx)
            finally:
                wire_reset(token)
        finally:
            track_original_key(data, ctx)

    def _deserialize(self, data: bytes, ctx: SerializationContext | None) -> Any:
        state = None
        untagged = None
        try:
            check_framing(data)
            subject = subject_lookup(ctx, cached_subject, self, self._subjects, ctx, None)
            sid = SchemaId(_PROTOBUF)
            try:
                payload = self._confluent.schema_id_deserializer(data, ctx, sid)  # type: ignore[misc]
            except Exception as exc:
                raise malformed(exc, subject) from exc
            body = payload.read() if isinstance(payload, io.BytesIO) else bytes(payload)
            indexes = tuple(sid.message_indexes) if sid.message_indexes else (0,)
            if self._confluent.registry is None:
                shape = self._local_shape()
            else:
                shape = self._shape(sid, indexes, subject)
            cached = shape.cached
            if subject is None:
                subject = subject_of(self, ctx, shape.desc.full_name)
            refuse_encoding_rules(cached.source, subject)
            latest = None
            if self._latest_mode and subject is not None and self._confluent.registry is not None:
                latest = reader_schema(self, subject, FORMAT_SERIALIZED)
            try:
                work = shape.cls.FromString(body)
            except DecodeError as exc:
                raise malformed(exc, subject) from exc
            plan = cached.runner.plan
            self._policy(cached, self._opts.domain or subject, subject)
            if not plan.is_empty:
                _refuse_unknown(work, subject, writing=False)
                domain = key_domain(self._opts.domain, subject)
                projection = shape.projector.project(work)
                decrypted, state = decrypt_record(
                    self,
                    cached,
                    projection,
                    subject,
                    domain,
                    ctx,
                    cached.parsed,
                    shape.rules,
                )
                shape.projector.apply(decrypted, work)
            out, reader = self._resolve(work, shape, subject, ctx, latest)
            # ciphertext in untagged fields, looked for in the message as returned: a field the writer schema does not
            # declare but the caller's class does (a record re-framed with an older schema's id) is seen there
            found = lookalikes(message_tree(out))
            if found is not None:
                untagged = review_lookalikes(
                    found,
                    self._keyring,
                    self.stats,
                    subject,
                    self._names_of(cached),
                    self._on_untagged,
                    None if plan.is_empty else lambda: message_tree(type(out).FromString(body)),
                )
            out = self._read_rules(out, reader, subject, ctx)
            self._last = (id(out), shape)  # (person_of: the shape the message returned was read with)
        except Exception as exc:
            mapped = registry_failure(exc, "the subject or a schema this record needs", None, role="reader")
            refused(self.stats, mapped or exc)
            if mapped is not None:
                raise mapped from exc
            raise
        self.stats._record(state, untagged)
        return out

    def person_of(self, message: Message) -> str | None:
        """The data-subject id of the message this deserializer returned last (None: another message, its schema has
        no id, or it is unset), as ``fieldcrypt verify --by data-subject`` groups records."""
        last = self._last
        if last is None or last[0] != id(message):
            return None  # not the message this deserializer returned last: its schema is not known here
        shape = last[1]
        if shape.cached.runner.plan.data_subject is None:
            return None
        try:
            return shape.cached.runner.person_of(shape.projector.project(message))
        except (KeyError, AttributeError, ValueError):
            return None  # a message of another shape (a migration to the reader's message)

    def _names_of(self, cached: CachedPlan) -> dict[str, Any]:
        names = self._names.get(cached.schema_id)
        if names is None:
            names = _names(cached.parsed)
            if len(self._names) < 10_000:
                self._names[cached.schema_id] = names
        return names

    def _resolve(
        self, work: Message, shape: _Shape, subject: str | None, ctx: SerializationContext | None, latest: Any
    ) -> tuple[Message, tuple[Any, Descriptor]]:
        """The decrypted message as confluent returns it (before the READ rules): migrated to the latest schema's
        message (JSONata, as confluent: through JSON) or in the caller's class; and the reader schema and message
        type the READ rules run with."""
        source = shape.cached.source
        reader_raw = source
        reader_desc = shape.desc
        msg: Message = work
        migrated = False
        if latest is not None and ctx is not None and subject is not None and source is not None:
            reader_parsed = self._parse(latest.schema)
            first = reader_parsed.by_indexes([0], subject)
            reader_desc = reader_parsed.file.message_types_by_name.get(shape.desc.name, first)
            reader_raw = latest.schema
            as_dict = json_format.MessageToDict(work, True)
            as_dict, migrated = migrate(self, ctx, subject, source, latest, as_dict)
            if migrated:
                try:
                    msg = json_format.ParseDict(as_dict, reader_parsed.cls(reader_desc)())
                except Exception:  # its message quotes the value (decrypted here): never chained
                    raise MalformedRecordError(
                        f"the migrated record does not fit the reader schema's message {reader_desc.full_name}",
                        subject=subject,
                    ) from None
        if not migrated and self._type is not None and type(msg) is not self._confluent_class:
            try:
                msg = self._confluent_class.FromString(type(work).SerializeToString(work))
            except DecodeError as exc:
                raise malformed(exc, subject) from exc
        return msg, (reader_raw, reader_desc)

    def _read_rules(
        self, msg: Message, reader: tuple[Any, Descriptor], subject: str | None, ctx: SerializationContext | None
    ) -> Message:
        reader_raw, reader_desc = reader
        if ctx is not None and subject is not None and reader_raw is not None:
            msg = read_rules(self, ctx, subject, reader_raw, None, msg, field_rules_for(reader_desc.full_name))
        return msg

    @property
    def _confluent_class(self) -> type[Message]:
        cls: type[Message] = self._confluent.msg_class  # confluent's GetMessageClass(message_type.DESCRIPTOR)
        return cls
