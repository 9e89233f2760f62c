"""Reading a topic, or a range of it, for ``fieldcrypt verify`` and ``fieldcrypt scan``; and the schema registry
calls both make.

    with TopicReader("orders", kafka_conf, timeout=30) as reader:
        for message in reader:          # confluent_kafka.Message, values and keys as bytes
            ...
        reader.spans                    # per partition: the offsets read

Every failure of the parts around is one clear error, never a traceback or a flood of log lines:

* a topic or partition that does not exist: ``NotFoundError`` (exit 5); the topic is never created;
* no broker answers within ``timeout`` seconds, or the brokers stop answering while the topic is read (no record
  and no end of partition for ``timeout`` seconds): ``UnavailableError`` (exit 4), quoting librdkafka's last error;
* librdkafka refuses a property, the cluster refuses the credentials, or the topic may not be read:
  ``ConfigurationError`` (exit 3), naming the property, never its value;
* the schema registry does not answer: ``UnavailableError``; refuses the credentials (HTTP 401/403):
  ``ConfigurationError``.

librdkafka's own log lines (it would print one per reconnection attempt to stderr) go to a private logger; the last
ones are kept and quoted in errors.

Where a partition ends: it is read from its start (or ``from_offset``) up to the end offset seen when reading began
(or ``to_offset``, exclusive). Brokers report that end as the high watermark, but Tansu 0.6 reports the base offset
of the last batch plus one after a batched produce (6 records, high watermark 1), so the watermark is a lower bound
only: on reaching it, the reader takes the high watermark its fetches reported (which Tansu gets right) once, and a
partition is also done when the consumer reaches its end (librdkafka's end-of-partition event). The topic is never
joined as a consumer group and no offset is committed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from fieldcrypt.core.schemas import HTTP_ERRORS as _HTTP_ERRORS
from fieldcrypt.errors import ConfigurationError, FieldcryptError
from fieldcrypt.inspect.errors import NotFoundError, UnavailableError

__all__ = [
    "BadRecord",
    "BadRecords",
    "NotFoundError",
    "RecordSchema",
    "Schemas",
    "Span",
    "TopicReader",
    "UnavailableError",
    "registry_client",
    "registry_errors",
    "schema_id_of",
]


#: what verify and scan set on their consumer, whatever the properties say: no group membership, no commits
_FORCED: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "error",  # an offset past the end (or removed by retention) ends that partition
}
_RETRIABLE_TOPIC_ERRORS = frozenset(
    {KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT}
)
_KEEP_LOG = 5


class _Tail(logging.Handler):
    """Keeps librdkafka's last few log lines (to quote in an error) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=_KEEP_LOG)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a log line is never worth failing for
            pass


def _short(text: str) -> str:
    """librdkafka's error text without the broker prefix and state suffix: 'Connect to ipv4#... failed: ...'."""
    text = re.sub(r"^\S+/(?:\d+|bootstrap): ", "", text.strip())
    return re.sub(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$", "", text)


def _config_error(exc: BaseException) -> ConfigurationError:
    text = str(exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc)
    text = re.sub(r'Invalid value "[^"]*"', "invalid value", text)  # librdkafka quotes the value: never shown
    found = re.search(r'property:? "([^"]+)"', text)
    where = f" ({found.group(1)!r})" if found else ""
    return ConfigurationError(f"librdkafka refused a Kafka setting{where}: {text}")


@dataclass
class Span:
    """One partition's part of the read: offsets ``start`` up to ``end`` (exclusive: the end seen when reading
    began, or ``to_offset``); ``next``: the offset after the last record read; ``read``: records read."""

    partition: int
    start: int
    end: int
    stop: int | None = None  # to_offset, exclusive
    next: int = 0
    read: int = 0
    done: bool = False
    refreshed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "from": self.start, "to": self.next, "read": self.read}


class TopicReader:
    """The records of ``topic`` from each partition's start (or ``from_offset``) to its end when reading began (or
    ``to_offset``, exclusive). ``partitions``: read only these; ``max_records``: stop after that many in all.
    ``conf``: librdkafka properties (all of them are passed on; ``group.id`` defaults to a fresh one, and the
    consumer never joins the group or commits). ``progress(done, total)`` is called as records arrive."""

    def __init__(
        self,
        topic: str,
        conf: Mapping[str, Any],
        *,
        timeout: float,
        purpose: str = "read",
        partitions: list[int] | None = None,
        from_offset: int | None = None,
        to_offset: int | None = None,
        max_records: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(topic, str) or not topic.strip():
            raise ConfigurationError("no topic given")
        if timeout <= 0:
            raise ConfigurationError("the timeout must be more than 0 seconds")
        for name, value in (("from_offset", from_offset), ("to_offset", to_offset), ("max_records", max_records)):
            if value is not None and value < 0:
                raise ConfigurationError(f"{name} must not be negative")
        if from_offset is not None and to_offset is not None and to_offset < from_offset:
            raise ConfigurationError("to_offset is before from_offset")
        self.topic = topic
        self.timeout = timeout
        self._clock = clock
        self._wanted = partitions
        self._from, self._to, self._max = from_offset, to_offset, max_records
        self._progress = progress
        self._errors: list[KafkaError] = []
        self._log = _Tail()
        logger = logging.Logger(f"fieldcrypt.{purpose}.librdkafka")  # not in logging's tree: nothing propagates
        logger.addHandler(self._log)
        settings = dict(conf)
        settings.setdefault("group.id", f"fieldcrypt-{purpose}-{uuid.uuid4().hex}")
        settings.update(_FORCED)
        settings["logger"] = logger
        settings["error_cb"] = self._on_error
        try:
            self._consumer = Consumer(settings)
        except KafkaException as exc:
            raise _config_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"the Kafka settings are not valid: {exc}") from None
        self.spans: list[Span] = []
        self.read = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- errors ---------------------------------------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        self._errors.append(err)
        del self._errors[:-_KEEP_LOG]

    def _last_error(self) -> str:
        if self._errors:
            return _short(self._errors[-1].str())
        if self._log.lines:
            return _short(self._log.lines[-1])
        return ""

    def _refused(self) -> None:
        """Raise at once for what waiting will not cure: refused credentials."""
        for err in self._errors:
            if err.code() == KafkaError._AUTHENTICATION:
                raise ConfigurationError(f"the Kafka cluster refused the credentials: {_short(err.str())}")

    def _unavailable(self, what: str) -> UnavailableError:
        last = self._last_error()
        return UnavailableError(f"{what} within {self.timeout:g}s" + (f" (last error: {last})" if last else ""))

    # -- opening --------------------------------------------------------------------------------------------------
    def _metadata(self) -> Any:
        deadline = self._clock() + self.timeout
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._unavailable("no Kafka broker answered")
            try:
                meta = self._consumer.list_topics(self.topic, timeout=min(1.0, remaining))
            except KafkaException:
                self._consumer.poll(0)  # serves error_cb and the log: the errors since (nothing is assigned yet)
                self._refused()
                continue
            found = meta.topics.get(self.topic)
            error = found.error if found is not None else None
            if found is not None and error is None and found.partitions:
                return found
            code = error.code() if error is not None else None
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART or (found is None and code is None):
                raise NotFoundError(f"topic {self.topic!r} does not exist")
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise ConfigurationError(
                    f"not authorized to read topic {self.topic!r}: check the credentials and the topic's ACLs"
                )
            if code not in _RETRIABLE_TOPIC_ERRORS and error is not None:
                raise UnavailableError(f"the broker cannot serve topic {self.topic!r}: {error.str()}")
            time.sleep(min(0.2, max(0.0, deadline - self._clock())))

    def _open(self) -> None:
        meta = self._metadata()
        partitions = sorted(meta.partitions)
        if self._wanted is not None:
            missing = sorted(set(self._wanted) - set(partitions))
            if missing:
                raise NotFoundError(
                    f"topic {self.topic!r} has no partition {', '.join(map(str, missing))} "
                    f"(it has {len(partitions)}: 0 to {len(partitions) - 1})"
                )
            partitions = sorted(set(self._wanted))
        deadline = self._clock() + self.timeout
        assign = []
        for p in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=max(0.1, deadline - self._clock())
                )
            except KafkaException:
                self._refused()
                raise self._unavailable(f"the broker did not give the offsets of partition {p}") from None
            start = max(low, self._from) if self._from is not None else low
            span = Span(p, start, high, self._to, next=start)
            self.spans.append(span)
            if (self._to is not None and start >= self._to) or start > high:
                span.done = True  # nothing there (a from_offset past the high watermark reads nothing)
                continue
            # read even when the watermark says there is nothing (Tansu under-reports): the end of the partition
            # (or an offset removed by retention meanwhile: auto.offset.reset=error) ends it at once
            assign.append(TopicPartition(self.topic, p, start))
        if assign:
            self._consumer.assign(assign)

    # -- reading --------------------------------------------------------------------------------------------------
    def total(self) -> int:
        """Records to read as far as the watermarks tell (a lower bound on Tansu)."""
        total = 0
        for s in self.spans:
            end = s.end if s.stop is None else min(s.end, s.stop)
            total += max(0, end - s.start)
        return max(total, self.read)

    def _finish(self, span: Span) -> None:
        span.done = True
        try:
            self._consumer.pause([TopicPartition(self.topic, span.partition)])
        except KafkaException:
            pass

    def __iter__(self) -> Iterator[Message]:
        by_partition = {s.partition: s for s in self.spans}
        active = sum(1 for s in self.spans if not s.done)
        last_seen = self._clock()
        shown = 0.0
        while active and (self._max is None or self.read < self._max):
            msg = self._consumer.poll(0.2)
            now = self._clock()
            if msg is None:
                if now - last_seen > self.timeout:
                    self._refused()
                    left = ", ".join(str(s.partition) for s in self.spans if not s.done)
                    last = self._last_error()
                    raise UnavailableError(
                        f"the brokers stopped answering for {self.timeout:g}s after {self.read} record(s) "
                        f"(partitions not finished: {left})" + (f" (last error: {last})" if last else "")
                    )
                continue
            partition = msg.partition()
            span = by_partition.get(partition) if partition is not None else None
            err = msg.error()
            if err is not None:
                code = err.code()
                if code in (KafkaError._PARTITION_EOF, KafkaError._AUTO_OFFSET_RESET):
                    last_seen = now
                    if span is not None and not span.done:
                        self._finish(span)
                        active -= 1
                elif code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise ConfigurationError(f"not authorized to read topic {self.topic!r}")
                elif code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise NotFoundError(f"topic {self.topic!r} was deleted while it was read")
                else:
                    self._on_error(err)
                continue
            last_seen = now
            offset = msg.offset()
            if span is None or span.done or offset is None:
                continue
            if span.stop is not None and offset >= span.stop:
                self._finish(span)
                active -= 1
                continue
            span.read += 1
            span.next = offset + 1
            self.read += 1
            if self._progress is not None and now - shown >= 0.1:
                shown = now
                self._progress(self.read, self.total())
            yield msg
            if span.next >= span.end and not span.refreshed:
                span.refreshed = True  # the watermark of the fetches (Tansu's ListOffsets under-reports)
                try:
                    _, high = self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, span.partition), cached=True
                    )
                    span.end = max(span.end, high)
                except KafkaException:
                    pass
            if span.next >= span.end or (span.stop is not None and span.next >= span.stop):
                self._finish(span)
                active -= 1
        if self._progress is not None:
            self._progress(self.read, self.total())

    def close(self) -> None:
        consumer: Consumer | None = self.__dict__.pop("_consumer", None)
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError):
                pass

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- bad records ------------------------------------------------------------------------------------------------


class BadRecord(Exception):
    """A record that cannot be read as what it should be. ``reason``: a short code (``not-framed``,
    ``unknown-schema-id``, ``tampered``...); ``detail``: one line without any value."""

    def __init__(self, reason: str, detail: str, **where: Any) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.where = {k: v for k, v in where.items() if v is not None}


@dataclass
class BadRecords:
    """Bad records by reason, and the first ``limit`` of them with partition and offset."""

    limit: int = 20
    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, message: Message, bad: BadRecord, part: str = "value") -> None:
        self.count += 1
        self.by_reason[bad.reason] = self.by_reason.get(bad.reason, 0) + 1
        if len(self.first) < self.limit:
            entry: dict[str, Any] = {"partition": message.partition(), "offset": message.offset()}
            if part != "value":
                entry["part"] = part
            entry.update({"reason": bad.reason, "detail": bad.detail, **bad.where})
            self.first.append(entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_reason": dict(sorted(self.by_reason.items())),
            "first": self.first,
            "more": max(0, self.count - len(self.first)),
        }


def schema_id_of(data: bytes, headers: Any, part: str = "value") -> int:
    """The schema id of a Confluent-framed value (magic byte 0, 4-byte id); else a :class:`BadRecord`."""
    names = {h[0] for h in headers} if isinstance(headers, list) else set(headers or ())
    if f"__{part}_schema_id" in names:
        raise BadRecord(
            "schema-id-in-header", "the schema id is in a record header (GUID framing), which is not read here"
        )
    if len(data) <= 5 or data[0] != 0:
        raise BadRecord("not-framed", "not Confluent-framed (no magic byte 0 and schema id)")
    return int.from_bytes(data[1:5], "big")


# -- the schema registry ----------------------------------------------------------------------------------------

_REGISTRY_NUMBERS: dict[str, type] = {
    "timeout": float,
    "max.retries": int,
    "retries.wait.ms": int,
    "retries.max.wait.ms": int,
    "cache.capacity": int,
    "cache.latest.ttl.sec": int,
}


def registry_client(conf: Mapping[str, Any], timeout: float) -> SchemaRegistryClient:
    """confluent's SchemaRegistryClient with ``conf`` (numbers given as text, as on a command line, are converted).
    Unless ``conf`` says otherwise, the requests, with their retries, give up after about ``timeout`` seconds."""
    settings = dict(conf)
    # the Java clients' basic.auth.credentials.source (in many properties files, and set by
    # FIELDCRYPT_REGISTRY_USER_INFO): confluent-kafka's client has no such setting and refuses it; USER_INFO and URL
    # are what it does anyway (basic.auth.user.info, or user:password@ in the URL)
    source = settings.pop("basic.auth.credentials.source", None)
    if source is not None and str(source).upper() not in ("USER_INFO", "URL"):
        raise ConfigurationError(
            "the schema registry setting 'basic.auth.credentials.source' can be USER_INFO or URL here "
            "(confluent-kafka's client takes basic.auth.user.info, or the credentials in the URL)"
        )
    if source is not None and str(source).upper() == "USER_INFO" and "basic.auth.user.info" not in settings:
        raise ConfigurationError("basic.auth.credentials.source is USER_INFO but basic.auth.user.info is not set")
    for key, kind in _REGISTRY_NUMBERS.items():
        if isinstance(settings.get(key), str):
            try:
                settings[key] = kind(settings[key])
            except ValueError:
                raise ConfigurationError(f"the schema registry setting {key!r} must be a number") from None
    for key in ("max.retries", "retries.wait.ms", "retries.max.wait.ms", "timeout"):
        value = settings.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
            raise ConfigurationError(f"the schema registry setting {key!r} must be a number, 0 or more")
    settings.setdefault("max.retries", 2)
    settings.setdefault("timeout", max(0.5, timeout / (int(settings["max.retries"]) + 1)))
    settings.setdefault("retries.wait.ms", 200)
    settings.setdefault("retries.max.wait.ms", max(200, int(timeout * 250)))
    try:
        return SchemaRegistryClient.new_client(settings)  # mock:// too, as confluent's serdes take it
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"the schema registry settings are not valid: {exc}") from None


_SUBJECT_LOOKUP_ERRORS: tuple[type[BaseException], ...] = (SchemaRegistryError, *_HTTP_ERRORS)


#: what confluent's registry client raises when a server answers 200 with a body that is not a registry's (an HTML
#: page, a JSON list...): only ever caught around a registry client call, never around decoding
MALFORMED_ANSWER = (ValueError, TypeError, KeyError, AttributeError)


def not_a_registry(what: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"the schema registry's answer to {what} is not a schema registry's ({type(exc).__name__}): is the URL "
        "the registry's?"
    )


@contextmanager
def registry_errors(what: str) -> Iterator[None]:
    """Registry failures as fieldcrypt errors: no answer (or 5xx, 429) -> UnavailableError, 401/403 ->
    ConfigurationError; other registry errors (404...) pass through as SchemaRegistryError."""
    try:
        yield
    except SchemaRegistryError as exc:
        status = exc.http_status_code
        if status in (401, 403):
            raise ConfigurationError(
                f"the schema registry refused {what} (HTTP {status}): check its credentials "
                "(--registry-conf basic.auth.user.info=USER:PASSWORD, or FIELDCRYPT_REGISTRY_USER_INFO)"
            ) from None
        if status == 429 or status >= 500:
            raise UnavailableError(f"the schema registry failed on {what} (HTTP {status})") from None
        raise
    except _HTTP_ERRORS as exc:
        raise UnavailableError(f"the schema registry did not answer {what} ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class RecordSchema:
    """A record's writer schema as the registry holds it: id, type (AVRO, JSON, PROTOBUF) and the subject to
    report it under."""

    schema_id: int
    schema_type: str
    subject: str
    schema: Schema


def _registry_format(schema_type: Any) -> str | None:
    """The ``format`` a schema of this type is read with (a format's optional ``registry_format``: Protobuf's
    ``serialized``), None for the registry's default form or a type no format reads."""
    from fieldcrypt.errors import UnsupportedSchemaTypeError
    from fieldcrypt.formats import format_for

    try:
        fmt = format_for(schema_type if isinstance(schema_type, str) or schema_type is None else str(schema_type))
    except UnsupportedSchemaTypeError:
        return None
    found = getattr(fmt, "registry_format", None)
    return found if isinstance(found, str) else None


class Schemas:
    """Schema ids to their type and subject, asked of the registry once per id. The subject is the topic's own
    (``TOPIC-value``) when the schema is registered under it, else a ``TOPIC-...`` subject, else the first subject
    the registry names; ``TOPIC-value`` when the registry names none."""

    def __init__(self, registry: SchemaRegistryClient, topic: str) -> None:
        self.registry = registry
        self.topic = topic
        self._known: dict[tuple[int, str], RecordSchema | BadRecord] = {}

    def get(self, schema_id: int, part: str = "value") -> RecordSchema:
        found = self._known.get((schema_id, part))
        if found is None:
            found = self._load(schema_id, part)
            if len(self._known) < 10_000:
                self._known[(schema_id, part)] = found
        if isinstance(found, BadRecord):
            raise found
        return found

    def _load(self, schema_id: int, part: str) -> RecordSchema | BadRecord:
        try:
            with registry_errors(f"schema id {schema_id}"):
                schema = self.registry.get_schema(schema_id)
                wanted = _registry_format(schema.schema_type)
                if wanted is not None:  # Protobuf: the form the format parses (a registry answers .proto text else)
                    schema = self.registry.get_schema(schema_id, None, wanted)
            if not isinstance(schema.schema_str, str):
                raise TypeError("schema_str")
        except FieldcryptError:
            raise  # registry_errors' verdict (ConfigurationError is a ValueError too)
        except MALFORMED_ANSWER as exc:
            raise not_a_registry(f"schema id {schema_id}", exc) from None
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return BadRecord("unknown-schema-id", f"schema id {schema_id} is not in the registry")
            raise UnavailableError(f"the schema registry failed on schema id {schema_id}: {exc}") from None
        subject = f"{self.topic}-{part}"
        try:
            subjects = sorted({v.subject for v in self.registry.get_schema_versions(schema_id) if v.subject})
        except _SUBJECT_LOOKUP_ERRORS:
            subjects = []  # a registry without the endpoint, or credentials that may not list subjects
        if subjects and subject not in subjects:
            own = [s for s in subjects if s.startswith(f"{self.topic}-")]
            subject = own[0] if own else subjects[0]
        return RecordSchema(schema_id, (schema.schema_type or "AVRO").upper(), subject, schema)
