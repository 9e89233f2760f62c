"""``fieldcrypt scan``: audit a topic (or a range of it) for personal data in clear, per subject and field path.

Every record is decoded with its writer schema from the registry (Avro or JSON Schema, per schema id) and walked:

* **tagged fields** (those the schema tags for encryption, with the producers' tag configuration): each value is a
  fieldcrypt ciphertext (recognised by its format, ``fieldcrypt.crypto.wire``: no key is needed to see that a value is
  not in clear), empty, or **plaintext** (a finding). With a key store and KEK, ciphertexts are also decrypted
  and counted as readable, erased (key shredded), denied (no key) or tampered (a finding). In a record whose writer
  schema carries a Confluent CSFLE ENCRYPT rule, the layout alone cannot tell: about 1 CSFLE ciphertext in 256 parses
  as a fieldcrypt value. There the values that parse (tagged, and untagged lookalikes) are fieldcrypt ciphertext
  only when together they form one fieldcrypt record or (with a key store) one names a key the store knows
  (``fieldcrypt.core.lookalike.fieldcrypts``); otherwise they count as the record's other CSFLE values do (plaintext:
  scan has no CSFLE keys), not as fieldcrypt ciphertext. (Without keys, a CSFLE record whose only tagged value
  happens to be a whole fieldcrypt value 0 still counts as one: about once in 65,536.) Deterministic values
  (``fieldcrypt.deterministic.tags``, flags 0x01) are counted apart (``deterministic``), with how many distinct
  ciphertexts they are and how often the most frequent one occurs: the equality a deterministic field reveals,
  measured. Ciphertexts are compared by a keyed digest held in memory for the run, never kept or printed.
* **untagged fields**: every text value (strings, UTF-8 bytes, map keys and undeclared object keys) is given to the
  detectors (``fieldcrypt.detectors``); a value in which one finds something is a finding. A string or bytes value
  that is a fieldcrypt ciphertext (by its format; with a key store, only one naming a key the store knows) is a
  finding too: the schema of its record does not tag the field (a record re-framed with the id of a schema version
  without the tag, ``fieldcrypt.core.lookalike``).
* records that are **not Confluent-framed** but are text (JSON or plain) are scanned as text, under the subject
  ``(not Confluent-framed)``; those that cannot be read at all (binary without framing, unknown schema id, a
  Protobuf schema, bytes that do not decode with their schema, a schema the tag configuration cannot honour) are
  *records not examined* (a finding: the scan cannot vouch for them).

Field paths are the data's shape, never its content: ``$`` the value, ``.name`` a record field or declared
property, ``[]`` array items, ``[*]`` map values (and undeclared object keys), ``(keys)`` the keys of a map.
Nothing found is ever kept: the report holds counts, field paths, detector names, partitions and offsets.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from fieldcrypt.core.confluent import has_encrypt_rules
from fieldcrypt.core.format import Undecodable, Walker, plan_of
from fieldcrypt.core.format import walk_document as walk_json
from fieldcrypt.core.lookalike import fieldcrypts, key_id_of, key_known
from fieldcrypt.core.lookalike import quick as quick_lookalike
from fieldcrypt.core.outcomes import Denied, Erased, Outcomes
from fieldcrypt.core.plan import (
    ArrayNode,
    ChoiceNode,
    FieldPlan,
    Leaf,
    MapNode,
    Node,
    NullableNode,
    RecordNode,
    RefNode,
    UnionNode,
)
from fieldcrypt.core.regex import Unmatchable, bounded
from fieldcrypt.core.serde import CachedPlan, PlanCache, PolicyCheck, split_conf
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.errors import (
    ConfigurationError,
    DecryptionError,
    FieldcryptError,
    KeyStoreUnavailableError,
    PolicyError,
    SchemaRegistryUnavailableError,
    UnsupportedSchemaTypeError,
)
from fieldcrypt.formats import format_for, supported
from fieldcrypt.inspect.detectors import Detector
from fieldcrypt.inspect.topic import (
    BadRecord,
    BadRecords,
    RecordSchema,
    Schemas,
    Span,
    TopicReader,
    UnavailableError,
    registry_errors,
    schema_id_of,
)
from fieldcrypt.keys.keyring import Keyring

__all__ = ["RAW_SUBJECT", "FieldReport", "ScanReport", "SubjectReport", "scan_topic"]

#: the subject records without Confluent framing are reported under
RAW_SUBJECT = "(not Confluent-framed)"
#: the longest text given to the detectors (the rest of a longer value is not scanned)
MAX_TEXT = 100_000
#: partitions and offsets kept per field (of the records where it had a finding)
MAX_OFFSETS = 20
#: distinct deterministic ciphertexts told apart per field (beyond, ``distinct`` is a lower bound: memory stays bounded)
MAX_DISTINCT = 200_000
#: the run's digest key: deterministic ciphertexts are compared by a keyed digest that means nothing outside the run
_RUN_KEY = os.urandom(16)
_OUTCOMES = Outcomes(on_erased="marker", on_denied="marker", on_plaintext="accept")


# -- the report -------------------------------------------------------------------------------------------------


@dataclass
class FieldReport:
    """One field path of one subject. Tagged fields count their values as ciphertext, empty or plaintext (and, when
    decrypted, readable, erased, denied, tampered or unverified; ``with_view``: of the ciphertexts, those carrying a
    masked view, ``fieldcrypt.masks``; ``masked``: of the readable ones, those read as their view, the key store
    granting the view's key but not the value's); untagged ones count the values scanned and, per
    detector, the values it flagged, and the fieldcrypt ciphertexts they hold (``ciphertext``: a finding there).
    ``offsets``: the first records where the field had a finding."""

    field: str
    tagged: bool
    schema_path: str | None = None
    values: int = 0
    empty: int = 0
    ciphertext: int = 0
    plaintext: int = 0
    readable: int = 0
    erased: int = 0
    denied: int = 0
    tampered: int = 0
    unverified: int = 0
    with_view: int = 0
    masked: int = 0
    #: of the ciphertexts, the deterministic ones (flags 0x01): equal values of one key domain and person give equal
    #: ciphertexts
    deterministic: int = 0
    flagged: int = 0  # untagged values in which a detector found something
    detections: dict[str, int] = dataclasses.field(default_factory=dict)
    offsets: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    more_offsets: int = 0
    #: deterministic ciphertexts by their keyed digest (never a value: a digest under a key of this run), counted
    _seen: collections.Counter[bytes] = dataclasses.field(default_factory=collections.Counter, repr=False)
    _beyond: int = 0  # deterministic values not told apart once MAX_DISTINCT digests are held

    def saw_deterministic(self, blob: bytes) -> None:
        """Count one deterministic ciphertext, to measure how many distinct ones the field holds."""
        self.deterministic += 1
        digest = hashlib.blake2b(blob, digest_size=16, key=_RUN_KEY).digest()
        if digest in self._seen or len(self._seen) < MAX_DISTINCT:
            self._seen[digest] += 1
        else:
            self._beyond += 1

    @property
    def distinct(self) -> int:
        """How many distinct deterministic ciphertexts the field holds (a lower bound past ``MAX_DISTINCT``)."""
        return len(self._seen)

    @property
    def distinct_is_lower_bound(self) -> bool:
        """Whether more than ``MAX_DISTINCT`` distinct ciphertexts were met (``distinct`` counts the first ones)."""
        return bool(self._beyond)

    @property
    def most_frequent(self) -> int:
        """How many of the field's deterministic values share its most frequent ciphertext (0: none)."""
        return max(self._seen.values(), default=0)

    @property
    def findings(self) -> int:
        return self.plaintext + self.tampered + self.flagged + (0 if self.tagged else self.ciphertext)

    def found_at(self, partition: int, offset: int) -> None:
        where = (partition, offset)
        if where in self.offsets[-1:]:
            return
        if len(self.offsets) < MAX_OFFSETS:
            self.offsets.append(where)
        else:
            self.more_offsets += 1

    def as_dict(self, decrypted: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "tagged": self.tagged}
        if self.tagged:
            out.update(
                schema_path=self.schema_path,
                values=self.values,
                empty=self.empty,
                ciphertext=self.ciphertext,
                with_view=self.with_view,
                deterministic=self.deterministic,
                plaintext=self.plaintext,
            )
            if self.deterministic:
                out.update(
                    distinct=self.distinct,
                    distinct_is_lower_bound=self.distinct_is_lower_bound,
                    most_frequent=self.most_frequent,
                )
            if decrypted:
                out.update(
                    readable=self.readable,
                    masked=self.masked,
                    erased=self.erased,
                    denied=self.denied,
                    tampered=self.tampered,
                    unverified=self.unverified,
                )
        else:
            out.update(
                values=self.values,
                flagged=self.flagged,
                detections=dict(sorted(self.detections.items())),
                ciphertext=self.ciphertext,
            )
        out["offsets"] = [{"partition": p, "offset": o} for p, o in self.offsets]
        out["more_offsets"] = self.more_offsets
        return out


@dataclass
class SubjectReport:
    """The records of one subject (value or key part) and their fields."""

    subject: str
    part: str
    schema_type: str
    schema_ids: set[int] = field(default_factory=set)
    records: int = 0
    fields: dict[tuple[str, bool], FieldReport] = field(default_factory=dict)

    def field_of(self, path: str, tagged: bool, schema_path: str | None = None) -> FieldReport:
        found = self.fields.get((path, tagged))
        if found is None:
            found = self.fields[(path, tagged)] = FieldReport(path, tagged, schema_path)
        return found

    def as_dict(self, decrypted: bool) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "part": self.part,
            "schema_type": self.schema_type,
            "schema_ids": sorted(self.schema_ids),
            "records": self.records,
            "fields": [
                f.as_dict(decrypted) for f in sorted(self.fields.values(), key=lambda f: (not f.tagged, f.field))
            ],
        }


@dataclass
class ScanReport:
    """What :func:`scan_topic` found."""

    topic: str
    detectors: list[str]
    keys_scanned: bool
    decrypted: bool
    spans: list[Span] = field(default_factory=list)
    records: int = 0
    tombstones: int = 0
    subjects: dict[tuple[str, str], SubjectReport] = field(default_factory=dict)
    bad: BadRecords = field(default_factory=BadRecords)

    def subject_of(self, subject: str, part: str, schema_type: str) -> SubjectReport:
        found = self.subjects.get((subject, part))
        if found is None:
            found = self.subjects[(subject, part)] = SubjectReport(subject, part, schema_type)
        elif found.schema_type != schema_type and schema_type not in found.schema_type.split("+"):
            found.schema_type = f"{found.schema_type}+{schema_type}"
        return found

    def fields(self) -> Iterator[tuple[SubjectReport, FieldReport]]:
        for s in self.subjects.values():
            for f in s.fields.values():
                yield s, f

    def findings(self) -> dict[str, int]:
        return {
            "plaintext_in_tagged_fields": sum(f.plaintext for _, f in self.fields()),
            "personal_data_in_untagged_fields": sum(f.flagged for _, f in self.fields()),
            "ciphertext_in_untagged_fields": sum(f.ciphertext for _, f in self.fields() if not f.tagged),
            "tampered": sum(f.tampered for _, f in self.fields()),
            "records_not_examined": self.bad.count,
        }

    @property
    def clean(self) -> bool:
        return not any(self.findings().values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": [s.as_dict() for s in self.spans],
            "records": self.records,
            "tombstones": self.tombstones,
            "keys_scanned": self.keys_scanned,
            "decrypted": self.decrypted,
            "detectors": self.detectors,
            "subjects": [
                s.as_dict(self.decrypted) for _, s in sorted(self.subjects.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            ],
            "bad_records": self.bad.as_dict(),
            "findings": self.findings(),
            "clean": self.clean,
        }


# -- tagged values: the plan's leaves, where a record holds them ------------------------------------------------

#: the Python type a decoded value has, by the family name plan branches use (as the engine reads unions)
_FAMILY: dict[type, str] = {
    type(None): "None",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    list: "list",
    dict: "dict",
}
_UNNAMED = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string", "array", "map"})


@dataclass(frozen=True)
class _Tagged:
    at: tuple[Any, ...]  # the concrete position (record fields, array indexes, map keys): never printed
    path: str  # the field path shown
    leaf: Leaf
    value: Any


class _Mismatch(Exception):
    """The record does not have the shape its plan describes."""


def tagged_values(plan: FieldPlan, record: Any) -> list[_Tagged]:
    """Every non-null value of ``record`` in a tagged field, found the way the engine's reader finds them."""
    out: list[_Tagged] = []
    seen: set[tuple[Any, ...]] = set()

    def walk(node: Node, v: Any, path: str, at: tuple[Any, ...]) -> None:
        if v is None:
            return
        if isinstance(node, Leaf):
            if at not in seen:
                seen.add(at)
                out.append(_Tagged(at, path, node, v))
        elif isinstance(node, NullableNode):
            if isinstance(v, tuple) and len(v) == 2 and v[0] == node.name:
                v = v[1]
            walk(node.child, v, path, at)
        elif isinstance(node, ArrayNode):
            if not isinstance(v, list):
                raise _Mismatch
            for i, x in enumerate(v):
                child = node.prefix[i] if i < len(node.prefix) else node.items
                if child is not None:
                    walk(child, x, f"{path}[]", (*at, i))
        elif isinstance(node, MapNode):
            if not isinstance(v, dict):
                raise _Mismatch
            for k, x in v.items():
                walk(node.values, x, f"{path}[*]", (*at, k))
        elif isinstance(node, RefNode):
            walk(plan.named[node.name], v, path, at)
        elif isinstance(node, UnionNode):
            if isinstance(v, tuple) and len(v) == 2:
                for b in node.branches:
                    if b.name == v[0]:
                        if b.node is not None:
                            walk(b.node, v[1], path, at)
                        return
                raise _Mismatch
            family = _FAMILY.get(type(v), type(v).__name__)
            for b in node.branches:
                if node.named_read and b.name not in _UNNAMED:
                    continue
                if b.family == family and b.node is not None:
                    walk(b.node, v, path, at)
                    return
        elif isinstance(node, ChoiceNode):
            for matches, child in node.branches:  # every validating branch's tags (the same value counts once)
                if child is not None and matches(v):
                    walk(child, v, path, at)
        elif isinstance(node, RecordNode):
            if not isinstance(v, dict):
                raise _Mismatch
            names = set()
            for step in node.steps:
                names.add(step.name)
                if step.name in v:
                    walk(step.node, v[step.name], f"{path}.{step.name}", (*at, step.name))
            if node.patterns or node.extra is not None:
                for k, x in v.items():
                    if k in names or not isinstance(k, str):
                        continue
                    try:  # as the engine matches them: RE2, linear in the key (a record cannot stall a scan)
                        found = [n for rx, n in node.patterns if bounded(rx).search(k)]
                        if (
                            node.extra is not None
                            and k not in node.declared
                            and not any(bounded(rx).search(k) for rx in node.all_patterns)
                        ):
                            found.append(node.extra)
                    except Unmatchable:  # a key the reader refuses: a bad record
                        raise _Mismatch from None
                    for n in found:
                        walk(n, x, f"{path}[*]", (*at, k))
        else:  # a node kind this walker does not know: refuse rather than skip it
            raise TypeError(f"unknown plan node {type(node).__name__}")

    if plan.root is not None:
        walk(plan.root, record, "$", ())
    return out


def _state(leaf: Leaf, v: Any) -> str:
    """ciphertext, empty or plaintext: a fieldcrypt ciphertext is recognised by its layout, without a key."""
    blob: bytes | None = None
    try:
        if leaf.kind == "bytes":
            blob = v if isinstance(v, bytes) else None
        elif leaf.kind == "base64":
            blob = _wire.decode_base64(v)
        elif isinstance(v, str):
            blob = _wire.decode_text(v)
        if blob is not None:
            _wire.parse(blob)
            return "ciphertext"
    except _wire.UnsupportedValue:
        return "ciphertext"  # a newer writer's value (format 2 feature this release does not read): not in clear
    except (ValueError, TypeError):
        pass
    return "empty" if v in ("", b"") else "plaintext"


def _deterministic_blob(leaf: Leaf, v: Any) -> bytes | None:
    """The bytes of a value counted as ciphertext when it is a deterministic value (format 2, flags 0x01), by its
    layout; else None."""
    try:
        if leaf.kind == "bytes":
            blob = v if isinstance(v, bytes) else b""
        elif leaf.kind == "base64":
            blob = _wire.decode_base64(v)
        else:
            blob = _wire.decode_text(v)
        _wire.parse_deterministic(blob)
    except (ValueError, TypeError):
        return None
    return blob


def _has_view(leaf: Leaf, v: Any) -> bool:
    """Whether a value counted as ciphertext carries a masked view (format 2, flags bit 2), by its layout."""
    try:
        if leaf.kind == "bytes":
            blob = v if isinstance(v, bytes) else b""
        elif leaf.kind == "base64":
            blob = _wire.decode_base64(v)
        else:
            blob = _wire.decode_text(v)
        return _wire.parse_value(blob)[6] is not None
    except (ValueError, TypeError):
        return False


def _pair(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)


def _at(record: Any, at: tuple[Any, ...]) -> Any:
    """The value at a concrete position (through Avro's (name, value) union pairs)."""
    v = record
    for step in at:
        while _pair(v):
            v = v[1]
        v = v[step]
    while _pair(v):
        v = v[1]
    return v


# -- the scan ---------------------------------------------------------------------------------------------------


class _Formats:
    """Per schema type, through the format registry (``fieldcrypt.formats``): the plan cache (schemas parsed with
    confluent's own reference resolution, compiled with the tag configuration), the decoder and the record walker.
    No fieldcrypt deserializer is needed: decoding takes no key."""

    def __init__(self, registry: SchemaRegistryClient, conf: Mapping[str, Any]) -> None:
        rest, self.options = split_conf(dict(conf), reading=True)
        if rest:
            raise ConfigurationError(f"unknown conf keys for scan: {', '.join(sorted(rest))}")
        self._registry = registry
        self._plans: dict[str, PlanCache] = {}
        self._refused: dict[int, BadRecord] = {}
        self._walkers: dict[int, Walker] = {}

    def _cache(self, kind: str) -> PlanCache:
        found = self._plans.get(kind)
        if found is None:
            fmt = format_for(kind)
            found = PlanCache(
                self._registry,
                fmt.parser(self._registry, writing=False),
                lambda parsed, rules: plan_of(fmt, parsed, rules),
                self.options.rules,
            )
            self._plans[kind] = found
        return found

    def plan(self, schema: RecordSchema) -> CachedPlan:
        refused = self._refused.get(schema.schema_id)
        if refused is not None:
            raise refused
        try:
            with registry_errors(f"schema id {schema.schema_id}"):
                return self._cache(schema.schema_type).load(schema.schema_id, schema.subject, schema.schema)
        except SchemaRegistryUnavailableError as exc:  # resolving its references: the registry, not the schema
            if exc.status in (401, 403):
                raise ConfigurationError(f"{exc} (check the registry's credentials)") from None
            raise UnavailableError(str(exc)) from None
        except (PolicyError, SchemaRegistryError) as exc:
            bad = BadRecord("schema-refused", f"schema id {schema.schema_id}: {exc}")
            self._refused[schema.schema_id] = bad
            raise bad from None

    def decode(self, schema: RecordSchema, cached: CachedPlan, payload: bytes) -> Any:
        fmt = format_for(schema.schema_type)
        named = cached.runner.plan.named_read
        try:
            return fmt.decode(cached.parsed, payload, named=named, schema_id=schema.schema_id, subject=schema.subject)
        except Undecodable as exc:
            raise BadRecord("undecodable", str(exc)) from None

    def walker(self, schema: RecordSchema, cached: CachedPlan) -> Walker:
        found = self._walkers.get(schema.schema_id)
        if found is None:
            found = self._walkers[schema.schema_id] = format_for(schema.schema_type).walker(cached.parsed)
        return found


class _Scanner:
    def __init__(
        self,
        report: ScanReport,
        detectors: list[Detector],
        formats: _Formats,
        schemas: Schemas,
        keyring: Keyring | None,
        topic: str,
    ) -> None:
        self.report = report
        self.detectors = detectors
        self.formats = formats
        self.schemas = schemas
        self.keyring = keyring
        self.topic = topic
        self._policy = PolicyCheck(keyring, writing=False) if keyring is not None else None

    def detect(self, fieldr: FieldReport, text: str, partition: int, offset: int) -> None:
        fieldr.values += 1
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT]
        hit = False
        for d in self.detectors:
            try:
                found = d.find(text)
            except Exception as exc:
                raise ConfigurationError(f"detector {d.name!r} failed ({type(exc).__name__})") from None
            if found:
                fieldr.detections[d.name] = fieldr.detections.get(d.name, 0) + 1
                hit = True
        if hit:
            fieldr.flagged += 1
            fieldr.found_at(partition, offset)

    def raw(self, data: bytes, part: str, partition: int, offset: int) -> None:
        """A record without Confluent framing: scanned as text (JSON or not), else not examined."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("not-framed", "not Confluent-framed, and not UTF-8 text") from None
        try:
            document: Any = json.loads(text)
        except RecursionError:
            raise BadRecord("undecodable", "not Confluent-framed, and JSON nested too deeply to scan") from None
        except ValueError:
            document = text
        found: list[tuple[str, str]] = []
        try:
            walk_json(document, lambda value, path, at: found.append((path, value)), None, self.plain)
        except RecursionError:
            raise BadRecord("undecodable", "not Confluent-framed, and JSON nested too deeply to scan") from None
        subject = self.report.subject_of(RAW_SUBJECT, part, "raw")
        subject.records += 1
        for path, value in found:
            self.detect(subject.field_of(path, False), value, partition, offset)

    def plain(self, text: str) -> bool:
        """Whether no detector finds anything in ``text`` (a key that may then be shown in a field path)."""
        return not any(d.find(text) for d in self.detectors)

    def framed(self, data: bytes, headers: Any, part: str, partition: int, offset: int) -> None:
        try:
            schema_id = schema_id_of(data, headers, part)
        except BadRecord as bad:
            if bad.reason != "not-framed":
                raise
            self.raw(data, part, partition, offset)
            return
        schema = self.schemas.get(schema_id, part)
        try:
            format_for(schema.schema_type)
        except UnsupportedSchemaTypeError:
            raise BadRecord(
                "unsupported-schema-type",
                f"schema id {schema_id} is of schema type {schema.schema_type}; fieldcrypt reads {supported()}",
            ) from None
        cached = self.formats.plan(schema)
        found: list[tuple[str, str]] = []  # (path, text) of the untagged texts, gathered before anything is counted
        try:
            record = self.formats.decode(schema, cached, data[5:])
            try:
                tagged = tagged_values(cached.runner.plan, record)
            except _Mismatch:
                raise BadRecord("undecodable", f"the record does not have the shape of schema id {schema_id}") from None
            skip = {t.at for t in tagged}
            lookalikes: list[tuple[str, Any]] = []  # (path, value) of untagged values that may be ciphertext

            def visit(value: str, path: str, at: tuple[Any, ...] | None) -> None:
                if at is None or at not in skip:
                    found.append((path, value))

            def raw(value: Any, path: str, at: tuple[Any, ...]) -> None:
                if quick_lookalike(value) and at not in skip:
                    lookalikes.append((path, value))

            self.formats.walker(schema, cached)(record, visit, raw)
        except RecursionError:
            raise BadRecord("undecodable", f"schema id {schema_id}: the record is nested too deeply to scan") from None
        subject = self.report.subject_of(schema.subject, part, schema.schema_type)
        subject.schema_ids.add(schema_id)
        subject.records += 1
        reports: list[tuple[_Tagged, FieldReport, str]] = []
        states = [_state(t.leaf, t.value) for t in tagged]
        if has_encrypt_rules(schema.schema):  # CSFLE ciphertexts may be here: layout alone does not tell them apart
            values = [t.value for t in tagged] + [v for _, v in lookalikes if key_id_of(v) is not None]
            if fieldcrypts(values, self.keyring) is False:
                states = ["plaintext" if s == "ciphertext" else s for s in states]  # not fieldcrypt's: CSFLE's
                lookalikes = []
        for t, state in zip(tagged, states, strict=True):
            fr = subject.field_of(t.path, True, t.leaf.path)
            fr.values += 1
            if state == "ciphertext":
                fr.ciphertext += 1
                det = _deterministic_blob(t.leaf, t.value)
                if det is not None:
                    fr.saw_deterministic(det)
                elif _has_view(t.leaf, t.value):
                    fr.with_view += 1
            elif state == "empty":
                fr.empty += 1
            else:
                fr.plaintext += 1
                fr.found_at(partition, offset)
            reports.append((t, fr, state))
        if self.keyring is not None and any(s == "ciphertext" for _, _, s in reports):
            self.decrypt(cached, record, reports, part, partition, offset)
        for path, value in found:
            self.detect(subject.field_of(path, False), value, partition, offset)
        for path, value in lookalikes:
            key_id = key_id_of(value)
            if key_id is None or (self.keyring is not None and not key_known(self.keyring, key_id)):
                continue  # not a value ciphertext, or (with a key store) one of a key this store never knew
            fr = subject.field_of(path, False)
            fr.ciphertext += 1
            fr.found_at(partition, offset)

    def decrypt(
        self,
        cached: CachedPlan,
        record: Any,
        reports: list[tuple[_Tagged, FieldReport, str]],
        part: str,
        partition: int,
        offset: int,
    ) -> None:
        assert self.keyring is not None
        subject = f"{self.topic}-{part}"
        domain = self.formats.options.domain or subject
        ciphertexts = [(t, fr) for t, fr, s in reports if s == "ciphertext"]
        mixed = any(s == "plaintext" for _, _, s in reports)
        try:
            if self._policy is not None:
                self._policy(cached, domain, subject)
            out, state = cached.runner.decrypt_counted(
                copy.deepcopy(record), self.keyring, subject, domain, _OUTCOMES, None
            )
        except (KeyStoreUnavailableError, ConfigurationError):
            raise
        except FieldcryptError as exc:
            # a record mixing plaintext and ciphertext is refused as a whole: its plaintext is already counted
            blamed = None
            if isinstance(exc, DecryptionError) and not mixed:
                blamed = next((fr for t, fr in ciphertexts if t.leaf.path == exc.field_path), ciphertexts[0][1])
                blamed.tampered += 1
                blamed.found_at(partition, offset)
            for _, fr in ciphertexts:
                if fr is not blamed:
                    fr.unverified += 1
            return
        views = list(state.masked or ()) if state is not None else []  # leaf paths of the values read as views
        for t, fr in ciphertexts:
            value = _at(out, t.at)
            if isinstance(value, Erased):
                fr.erased += 1
            elif isinstance(value, Denied):
                fr.denied += 1
            else:
                fr.readable += 1
                if t.leaf.path in views and _has_view(t.leaf, t.value):  # (views are read in the walk's order)
                    views.remove(t.leaf.path)
                    fr.masked += 1


def scan_topic(
    topic: str,
    kafka_conf: Mapping[str, Any],
    registry: SchemaRegistryClient,
    *,
    detectors: Iterable[Detector],
    keyring: Keyring | None = None,
    conf: Mapping[str, Any] | None = None,
    keys: bool = False,
    timeout: float = 30.0,
    partitions: list[int] | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    max_records: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Scan ``topic`` (all of it, or the range given) for personal data in clear: see the module docstring.
    ``keyring``: also decrypt ciphertexts (readable, erased, denied, tampered); ``conf``: the producers' fieldcrypt
    tag configuration (``fieldcrypt.tags``, ``fieldcrypt.plaintext.tags``, ``fieldcrypt.data.subject.tag``,
    ``fieldcrypt.tag.domains``, ``fieldcrypt.domain``); ``keys``: scan record keys too."""
    chosen = list(detectors)
    formats = _Formats(registry, conf or {})
    report = ScanReport(topic, [d.name for d in chosen], keys, keyring is not None)
    scanner = _Scanner(report, chosen, formats, Schemas(registry, topic), keyring, topic)
    with TopicReader(
        topic,
        kafka_conf,
        timeout=timeout,
        purpose="scan",
        partitions=partitions,
        from_offset=from_offset,
        to_offset=to_offset,
        max_records=max_records,
        progress=progress,
    ) as reader:
        report.spans = reader.spans
        for msg in reader:
            report.records += 1
            partition, offset = msg.partition() or 0, msg.offset() or 0
            parts = [("value", msg.value())]
            if keys:
                parts.append(("key", msg.key()))
            for part, data in parts:
                if data is None:
                    if part == "value":
                        report.tombstones += 1
                    continue
                try:
                    scanner.framed(data, msg.headers(), part, partition, offset)
                except BadRecord as bad:
                    report.bad.add(msg, bad, part)
    return report
