"""``fieldcrypt verify``: re-read a topic (or a range of it) through the registry and the key store, and count, per
key domain or data subject, how many encrypted values are readable, erased (key shredded) or denied (no key), and
how many tagged fields hold plaintext.

Each record's format comes from the registry (the schema type of its schema id: Avro or JSON Schema), so one topic
may hold both; ``fmt`` only checks it. A record that cannot be verified is counted as a *bad record*, with its
partition and offset, and the reading goes on:

==========================  ===========================================================================
``not-framed``              not Confluent-framed (no magic byte 0 and schema id)
``schema-id-in-header``     the schema id is in a header (GUID framing), which is not read here
``unknown-schema-id``       the registry does not hold its schema id
``unsupported-schema-type`` a schema of a type fieldcrypt does not read (Avro, JSON Schema and Protobuf)
``format-mismatch``         its schema type is not the one ``fmt`` names
``schema-refused``          its schema cannot be honoured with this tag configuration (PolicyError)
``undecodable``             its bytes are not a record of its schema (MalformedRecordError)
``tampered``                a ciphertext is altered or moved, a stored key fails authentication, or the
                            record mixes ciphertext and plaintext in tagged fields (DecryptionError); on a topic
                            moving from CSFLE, also a record whose values look like fieldcrypt ciphertext but are
                            none of this key store's (CSFLE ciphertexts, which verify cannot decrypt: the detail
                            says so and names no key id)
``unattributed``            (``by="domain"``) its values read, but the key domains of its values, asked of the key
                            store after, do not give the outcomes the deserializer gave (a key shredded or restored
                            meanwhile): its values are counted in no domain
==========================  ===========================================================================

Values in fields the record's schema does not tag that hold a fieldcrypt ciphertext of a key the key store knows
(a record re-framed with the id of a schema version without the tag: ``fieldcrypt.core.lookalike``) are read as they
are and listed per subject and field path, with the first offsets (``untagged_ciphertext``).

Findings (what makes ``fieldcrypt verify`` exit 7): plaintext values in tagged fields, ciphertext in untagged
fields, tampered records, and other bad records. Readable, erased and denied values, and tombstones (records
without a value), are information. A key store or KMS that is unavailable, a broker or registry that does not
answer, and a tag configuration that disagrees with the producers' end the run with an error instead: an
unavailable KMS is never counted as denied.

Per key domain (``by="domain"``), the domain of a value is the key store's, never the reader's configuration: the
value's header names its key id, and the key's row in the store (or, for a shredded key, its shred-log entry) names
the domain. The outcome is what the keyring given reads: ``readable``; ``masked`` (no key for the value, but for its
masked view: ``fieldcrypt.masks``); ``erased`` (the key was shredded); ``denied`` (the store holds the key but no
KEK of the keyring unwraps it, a KMS refusing access included, or the store holds no key of that id). Two rows are
not domains, and their ``domain`` is None in :meth:`VerifyReport.as_dict`: ``UNKNOWN_KEY`` (values naming a key id
the store never held nor shredded: another store's, or a corrupt header; denied, and never guessed to be any domain)
and ``NO_KEY`` (plaintext values in tagged fields: no key, so no domain). A row's ``records`` are the records
holding a value of it (one record may count in several rows); its ``tampered``, the tampered records whose refusal
names a key of the domain (the key id a tampered value names is not authenticated: a hint where to look, not proof).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from fieldcrypt.core.format import Undecodable
from fieldcrypt.core.lookalike import value_of
from fieldcrypt.crypto.wire import UnsupportedValue
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    FieldcryptError,
    KeyCorruptedError,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreUnavailableError,
    MalformedRecordError,
    PolicyError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
    UnsupportedSchemaTypeError,
    format_key_id,
)
from fieldcrypt.formats import format_by_key, format_for, keys, supported
from fieldcrypt.inspect.topic import (
    BadRecord,
    BadRecords,
    NotFoundError,
    RecordSchema,
    Schemas,
    Span,
    TopicReader,
    UnavailableError,
    registry_errors,
    schema_id_of,
)
from fieldcrypt.keys.keyring import Keyring

__all__ = [
    "BY",
    "NO_KEY",
    "UNKNOWN_KEY",
    "Counts",
    "DomainCounts",
    "Untagged",
    "VerifyReport",
    "bad_record_of",
    "verify_topic",
]

#: what ``by`` may be: count per key domain (as the key store records it) or per data subject
BY = ("domain", "data-subject")
#: the row of values naming a key id the key store never held nor shredded (with ``by="domain"``): not a domain
UNKNOWN_KEY = "(unknown key)"
#: the row of plaintext values in tagged fields (with ``by="domain"``): no key, so no domain
NO_KEY = "(no key)"

#: the deserializers' outcomes: every value is counted, none raises but tampering
_READ_CONF = {
    "fieldcrypt.on.erased": "marker",
    "fieldcrypt.on.denied": "marker",
    "fieldcrypt.on.plaintext": "accept",
    "fieldcrypt.on.untagged.ciphertext": "accept",
}
#: partitions and offsets kept per (subject, field) with ciphertext in an untagged field
MAX_OFFSETS = 20


@dataclass
class Counts:
    """One row: records, ciphertext values and their outcomes, plaintext values in tagged fields."""

    records: int = 0
    values: int = 0
    erased: int = 0
    denied: int = 0
    plaintext: int = 0
    plaintext_by_field: dict[str, int] = field(default_factory=dict)

    @property
    def readable(self) -> int:
        return self.values - self.erased - self.denied

    def add_plaintext(self, values: int, by_field: Mapping[str, int]) -> None:
        self.plaintext += values
        for path, n in by_field.items():
            self.plaintext_by_field[path] = self.plaintext_by_field.get(path, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "readable": self.readable,
            "erased": self.erased,
            "denied": self.denied,
            "plaintext": self.plaintext,
            "plaintext_fields": dict(sorted(self.plaintext_by_field.items())),
        }


@dataclass
class DomainCounts(Counts):
    """One key domain's row (``by="domain"``): as :class:`Counts`, with ``masked`` apart from ``readable`` (values
    this keyring has no key for, read as their masked view: ``fieldcrypt.masks``), and ``tampered``: the tampered
    records whose refusal names a key of this domain."""

    masked: int = 0
    tampered: int = 0

    @property
    def readable(self) -> int:
        return self.values - self.erased - self.denied - self.masked

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "readable": self.readable,
            "masked": self.masked,
            "erased": self.erased,
            "denied": self.denied,
            "tampered": self.tampered,
            "plaintext": self.plaintext,
            "plaintext_fields": dict(sorted(self.plaintext_by_field.items())),
        }


def _row_name(label: str) -> dict[str, Any]:
    """A domain row's name in the JSON output: the domain, or None and what the row holds instead."""
    if label == UNKNOWN_KEY:
        return {"domain": None, "key": "unknown"}
    if label == NO_KEY:
        return {"domain": None, "key": "none"}
    return {"domain": label, "key": "known"}


def _row_order(label: str) -> tuple[int, str]:
    """Domains first, by name; then the unknown key ids; then the plaintext values."""
    return ({UNKNOWN_KEY: 1, NO_KEY: 2}.get(label, 0), label)


@dataclass
class Untagged:
    """Ciphertext values in one untagged field of one subject, and the first records that hold them."""

    values: int = 0
    offsets: list[tuple[int, int]] = field(default_factory=list)
    more_offsets: int = 0

    def found_at(self, partition: int, offset: int) -> None:
        if (partition, offset) in self.offsets[-1:]:
            return
        if len(self.offsets) < MAX_OFFSETS:
            self.offsets.append((partition, offset))
        else:
            self.more_offsets += 1


@dataclass
class VerifyReport:
    """What ``verify_topic`` found. ``rows``: per key domain or data subject; ``bad``: records not verified."""

    topic: str
    by: str
    rows: dict[str, Counts] = field(default_factory=dict)
    #: with ``data_subject``: only that person's row is kept (``by`` is data-subject), and their readable values
    #: are a finding (the proof of an erasure: every value of theirs erased, none readable nor in clear)
    data_subject: str | None = None
    bad: BadRecords = field(default_factory=BadRecords)
    spans: list[Span] = field(default_factory=list)
    records: int = 0
    tombstones: int = 0
    #: (subject, field path) -> ciphertext values found in that untagged field
    untagged: dict[tuple[str, str], Untagged] = field(default_factory=dict)

    def findings(self) -> dict[str, int]:
        tampered = self.bad.by_reason.get("tampered", 0)
        found = {
            "plaintext": sum(r.plaintext for r in self.rows.values()),
            "untagged_ciphertext": sum(u.values for u in self.untagged.values()),
            "tampered": tampered,
            "bad_records": self.bad.count - tampered,
        }
        if self.data_subject is not None:
            found["readable_of_data_subject"] = sum(r.readable for r in self.rows.values())
        return found

    @property
    def clean(self) -> bool:
        return not any(self.findings().values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "by": self.by,
            **({} if self.data_subject is None else {"data_subject": self.data_subject}),
            "partitions": [s.as_dict() for s in self.spans],
            "records": self.records,
            "tombstones": self.tombstones,
            "rows": self._rows(),
            "untagged_ciphertext": [
                {
                    "subject": subject,
                    "field": path,
                    "values": u.values,
                    "offsets": [{"partition": p, "offset": o} for p, o in u.offsets],
                    "more_offsets": u.more_offsets,
                }
                for (subject, path), u in sorted(self.untagged.items())
            ],
            "bad_records": self.bad.as_dict(),
            "findings": self.findings(),
            "clean": self.clean,
        }

    def _rows(self) -> list[dict[str, Any]]:
        if self.by != "domain":
            return [{self.by: k, **v.as_dict()} for k, v in sorted(self.rows.items())]
        return [{**_row_name(k), **v.as_dict()} for k, v in sorted(self.rows.items(), key=lambda kv: _row_order(kv[0]))]

    def row(self, name: str) -> Counts:
        """The row of ``name`` (a domain, a data subject, ``UNKNOWN_KEY`` or ``NO_KEY``), created empty."""
        found = self.rows.get(name)
        if found is None:
            found = self.rows[name] = DomainCounts() if self.by == "domain" else Counts()
        return found


_UNATTRIBUTED = BadRecord(
    "unattributed",
    "its values read, but verify could not give each encrypted value's key domain the same outcome (a key shredded or "
    "restored while the record was read?)",
)


def _judge(keyring: Keyring, key_id: int) -> tuple[str, str]:
    """A key id's row and what its values read as with ``keyring``: its domain as the key store records it (the key's
    row, or the shred log's entry for a shredded key), or ``UNKNOWN_KEY``; ``readable``, ``erased``, ``denied`` (a KEK
    that may not unwrap it, or an id the store never held) or ``tampered`` (its stored key fails authentication). A
    key store or KMS that is unavailable raises ``KeyStoreUnavailableError``: nothing is decided."""
    outcome = "readable"
    owner: tuple[str, str | None] | None
    try:
        owner = (keyring.decryption_key(key_id).domain, None)
    except KeyShreddedError as exc:
        owner, outcome = exc.owner, "erased"
    except AccessDeniedError as exc:
        owner, outcome = exc.owner, "denied"
    except KeyCorruptedError as exc:
        owner, outcome = exc.owner, "tampered"
    except KeyNotFoundError:
        owner, outcome = None, "denied"
    if owner is None:
        return UNKNOWN_KEY, outcome
    if owner[0] in (UNKNOWN_KEY, NO_KEY):
        raise ConfigurationError(
            f"the key store holds keys of domain {owner[0]!r}, the name verify --by domain gives values that are in no "
            "domain: count with --by data-subject",
            key_id=key_id,
        )
    return owner[0], outcome


def _domain_row(report: VerifyReport, label: str) -> DomainCounts:
    row = report.row(label)
    assert isinstance(row, DomainCounts)
    return row


def _value_outcome(keyring: Keyring, value: Any, judged: dict[int, tuple[str, str]]) -> tuple[str, str] | None:
    """A tagged value's row and outcome (:func:`_judge` of the key its header names, memoised in ``judged``); a value
    this keyring may not read but whose masked view it may is ``masked``, and ``erased`` when the view's key was
    shredded (as the deserializer reads it). None for a value that is no ciphertext (null, plaintext)."""
    found = value_of(value) if value is not None else None
    if found is None:
        return None
    if isinstance(found, UnsupportedValue):
        key_id, view = found.key_id, None
    else:
        key_id, view = found[1], found[6]

    def judge(kid: int) -> tuple[str, str]:
        known = judged.get(kid)
        if known is None:
            known = judged[kid] = _judge(keyring, kid)
        return known

    label, outcome = judge(key_id)
    if outcome == "denied" and view is not None:
        seen = judge(view[0])[1]
        outcome = {"readable": "masked", "erased": "erased", "tampered": "tampered"}.get(seen, "denied")
    return label, outcome


def _by_domain(
    keyring: Keyring, de: Any, schema: RecordSchema, data: bytes, read: tuple[int, int, int, int]
) -> dict[str, tuple[int, int, int, int]] | None:
    """Per row (a domain, or ``UNKNOWN_KEY``): the record's encrypted values, erased, denied and masked. The record is
    decoded again as it arrived (nothing decrypted) and the keys each tagged ciphertext names are judged by
    :func:`_value_outcome`. None when that does not add up to what the deserializer read (``read``: values, erased,
    denied, masked), so no value is counted under an outcome the deserializer did not give it."""
    cached = de._plans.get(schema.schema_id)
    if cached is None:
        return None
    try:
        raw = format_for(schema.schema_type).decode(
            cached.parsed,
            data[5:],
            named=cached.runner.plan.named_read,
            schema_id=schema.schema_id,
            subject=schema.subject,
        )
        tagged = cached.runner.tagged_values(raw, schema.subject)
    except (Undecodable, FieldcryptError):
        return None
    rows: dict[str, list[int]] = {}
    judged: dict[int, tuple[str, str]] = {}
    for _, value in tagged:
        found = _value_outcome(keyring, value, judged)
        if found is None:
            continue  # null, or plaintext (counted by the deserializer)
        label, outcome = found
        if outcome == "tampered":
            return None
        row = rows.setdefault(label, [0, 0, 0, 0])
        row[0] += 1
        row[1] += outcome == "erased"
        row[2] += outcome == "denied"
        row[3] += outcome == "masked"
    totals = tuple(sum(r[i] for r in rows.values()) for i in range(4))
    if totals != read:
        return None
    return {label: (r[0], r[1], r[2], r[3]) for label, r in rows.items()}


def bad_record_of(exc: Exception, schema_id: int) -> BadRecord:
    """A deserializer's refusal as a bad record; what must end the run (key store down, configuration) is
    re-raised."""
    if isinstance(exc, BadRecord):
        return exc
    if isinstance(exc, SchemaRegistryUnavailableError):  # the registry, not the record: end the run, as for others
        if exc.status in (401, 403):
            raise ConfigurationError(
                f"{exc} (check the registry's credentials: --registry-conf basic.auth.user.info=USER:PASSWORD, or "
                "FIELDCRYPT_REGISTRY_USER_INFO)"
            ) from None
        raise UnavailableError(str(exc)) from None
    if isinstance(exc, UnknownSchemaError):
        return BadRecord("unknown-schema-id", str(exc))
    if isinstance(exc, (KeyStoreUnavailableError, ConfigurationError, UnavailableError, NotFoundError)):
        raise exc
    where: dict[str, Any] = {}
    if isinstance(exc, FieldcryptError):
        where = {"field": exc.field_path, "key_id": format_key_id(exc.key_id) if exc.key_id is not None else None}
    if isinstance(exc, DecryptionError):
        return BadRecord("tampered", str(exc), **where)
    if isinstance(exc, PolicyError):
        return BadRecord("schema-refused", f"schema id {schema_id}: {exc}", **where)
    if isinstance(exc, MalformedRecordError):
        return BadRecord("undecodable", str(exc), **where)
    if isinstance(exc, FieldcryptError):
        return BadRecord("unreadable", str(exc), **where)
    if isinstance(exc, SchemaRegistryError):
        return BadRecord("unknown-schema-id", f"schema id {schema_id}: {exc}")
    # another library's message may quote a value: its type only
    return BadRecord("undecodable", f"the record does not decode with schema id {schema_id} ({type(exc).__name__})")


def verify_topic(
    keyring: Keyring,
    topic: str,
    kafka_conf: Mapping[str, Any],
    registry: SchemaRegistryClient,
    *,
    by: str = "domain",
    timeout: float = 30.0,
    fmt: str | None = None,
    conf: Mapping[str, Any] | None = None,
    partitions: list[int] | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    max_records: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    data_subject: str | None = None,
) -> VerifyReport:
    """Read ``topic`` (all of it, or the range given) and count, per key domain (``by="domain"``) or data subject
    (``by="data-subject"``), what its encrypted values read as. ``conf``: fieldcrypt conf keys for the deserializers
    (``fieldcrypt.tags``, ``fieldcrypt.plaintext.tags``, ``fieldcrypt.tag.domains``, ``fieldcrypt.domain``);
    ``fmt``: ``avro`` or ``json`` to check every record's schema type against. ``data_subject``: count only that
    person's values (by the data-subject field of each record, as written), and count their readable ones as a
    finding: the proof, after an erasure, that none of theirs remains readable or in clear."""
    if by not in BY:
        raise ConfigurationError(f"by must be one of: {', '.join(BY)} (not {by!r})")
    if data_subject is not None:
        if not isinstance(data_subject, str) or not data_subject.strip():
            raise ConfigurationError("data_subject must be a non-blank str (the id as records hold it)")
        if by != "data-subject":
            raise ConfigurationError("data_subject counts per data subject: by must be 'data-subject'")
    if fmt is not None and fmt not in keys():
        raise ConfigurationError(f"fmt must be {' or '.join(keys())}")
    wanted = format_by_key(fmt).schema_type if fmt is not None else None
    read_conf = {**(conf or {}), **_READ_CONF}
    serdes: dict[str, Any] = {}  # schema type -> the format's fieldcrypt deserializer

    def deserializer(kind: str) -> Any:
        found = serdes.get(kind)
        if found is None:
            found = serdes[kind] = format_for(kind).deserializer_for(registry, read_conf, keyring)
        return found

    schemas = Schemas(registry, topic)
    report = VerifyReport(topic, by, data_subject=data_subject)
    if data_subject is not None:
        report.row(data_subject)  # their row, even if no record of theirs is found
    with TopicReader(
        topic,
        kafka_conf,
        timeout=timeout,
        purpose="verify",
        partitions=partitions,
        from_offset=from_offset,
        to_offset=to_offset,
        max_records=max_records,
        progress=progress,
    ) as reader:
        report.spans = reader.spans
        for msg in reader:
            report.records += 1
            data = msg.value()
            if data is None:
                report.tombstones += 1
                continue
            schema_id = -1
            try:
                schema_id = schema_id_of(data, msg.headers())
                schema = schemas.get(schema_id)
                try:
                    format_for(schema.schema_type)
                except UnsupportedSchemaTypeError:
                    raise BadRecord(
                        "unsupported-schema-type",
                        f"schema id {schema_id} is of schema type {schema.schema_type}; fieldcrypt reads {supported()}",
                    ) from None
                if wanted is not None and schema.schema_type != wanted:
                    raise BadRecord(
                        "format-mismatch", f"schema id {schema_id} is of schema type {schema.schema_type}, not {fmt}"
                    )
                de = deserializer(schema.schema_type)
                stats = de.stats
                before = (stats.values, stats.erased, stats.denied, stats.plaintext, dict(stats.plaintext_by_field))
                masked_before = stats.masked
                untagged_before = dict(stats.untagged_ciphertext_by_field)
                ctx = SerializationContext(topic, MessageField.VALUE, msg.headers())
                with registry_errors(f"schema id {schema_id}"):
                    record: Any = de(data, ctx)
            except Exception as exc:
                bad = bad_record_of(exc, schema_id)
                report.bad.add(msg, bad)
                if by == "domain" and bad.reason == "tampered" and isinstance(exc, FieldcryptError):
                    if exc.key_id is not None:  # the key id a tampered value names: unauthenticated, a hint
                        _domain_row(report, _judge(keyring, exc.key_id)[0]).tampered += 1
                continue
            read = (stats.values - before[0], stats.erased - before[1], stats.denied - before[2])
            masked = stats.masked - masked_before
            plaintext = stats.plaintext - before[3]
            gains = ((path, n - before[4].get(path, 0)) for path, n in stats.plaintext_by_field.items())
            plaintext_fields = {path: n for path, n in gains if n}
            if by == "domain":
                by_domain = _by_domain(keyring, de, schema, data, (*read, masked))
                if by_domain is None:
                    report.bad.add(msg, _UNATTRIBUTED)  # a finding: never counted under a guessed domain
                for label, (values, erased, denied, shown_masked) in (by_domain or {}).items():
                    domain_row = _domain_row(report, label)
                    domain_row.records += 1
                    domain_row.values += values
                    domain_row.erased += erased
                    domain_row.denied += denied
                    domain_row.masked += shown_masked
                if plaintext:  # values without a key: in no domain
                    row = report.row(NO_KEY)
                    row.records += 1
                    row.add_plaintext(plaintext, plaintext_fields)
            else:
                plan = de._plans.get(schema_id)
                person = getattr(de, "person_of", None)  # a format whose records are not dicts (Protobuf messages)
                if person is not None:
                    key = person(record) or "-"
                else:
                    key = (plan.runner.person_of(record) if plan is not None else None) or "-"
                if data_subject is not None and key != data_subject:
                    continue  # another person's record (its untagged-field findings are not this proof's)
                row = report.row(key)
                row.records += 1
                row.values += read[0]
                row.erased += read[1]
                row.denied += read[2]
                row.add_plaintext(plaintext, plaintext_fields)
            for path, n in stats.untagged_ciphertext_by_field.items():
                gained = n - untagged_before.get(path, 0)
                if gained:
                    found = report.untagged.setdefault((schema.subject, path), Untagged())
                    found.values += gained
                    found.found_at(msg.partition() or 0, msg.offset() or 0)
    return report
