"""The schema-registry lookups a deserializer makes, and what their failures mean (docs/errors.md).

A record names its writer schema by id (the Confluent prefix) or GUID (a header); the deserializer asks the registry
for it, and under ``use.latest.version`` / ``use.schema.id`` also for the reader schema. confluent's client raises
its own ``SchemaRegistryError`` or its HTTP library's errors; a consumer that catches ``FieldcryptError`` must see
one of these instead, and must be able to tell a bad record from a registry it cannot reach:

==============================================  ====================================================================
the registry answers 404 with a registry error  the writer's schema: ``UnknownSchemaError`` (the record is bad:
code (40400-40499: schema, subject or version   skip it); a reader schema (``use.latest.version``): a
not found)                                      ``ConfigurationError`` (the consumer's settings name a subject
                                                the registry does not hold)
a schema id above 2**31 - 1                     ``UnknownSchemaError`` without asking: registry ids are Java ints
                                                (a Confluent registry answers such a path with a plain 404)
no answer (refused, reset, timeout, TLS), 5xx,  ``SchemaRegistryUnavailableError`` once the client's own retries
408, 429; an OAuth token that cannot be had     (``max.retries``, ``retries.wait.ms``) are spent: retry later
401, 403                                        ``SchemaRegistryUnavailableError`` (``status`` 401/403): this
                                                client's credentials, not the record; fix them, then retry
404 without a registry error code, another 4xx  ``ConfigurationError``: the URL is not a registry's, or the
a 200 whose body is not a registry's            registry refuses requests of this kind
==============================================  ====================================================================

Every message names the schema id (or GUID, or subject) and the HTTP status and error code; none quotes the
registry's answer (it is not ours to vouch for).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka.schema_registry.error import OAuthTokenError, SchemaRegistryError
from confluent_kafka.serialization import SerializationError

from fieldcrypt.core.confluent import get_reader_schema, get_writer_schema
from fieldcrypt.errors import (
    ConfigurationError,
    FieldcryptError,
    PolicyError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)

__all__ = [
    "HTTP_ERRORS",
    "MAX_SCHEMA_ID",
    "ask",
    "reader_schema",
    "registry_failure",
    "subject_lookup",
    "writer_schema_by_id",
    "writer_schema_of",
]

T = TypeVar("T")

#: the largest schema id a registry can hold (ids are Java ints); a record naming a larger one is bad
MAX_SCHEMA_ID = 0x7FFFFFFF
_RETRYABLE = frozenset({408, 429})


def _http_errors() -> tuple[type[BaseException], ...]:
    """The base error of the HTTP client confluent's registry client uses: httpx2 when installed, else httpx
    (confluent-kafka 2.16 takes whichever Authlib uses)."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


#: what confluent's registry client lets through when the HTTP call itself fails (no answer, TLS, timeout)
HTTP_ERRORS = _http_errors()
#: what confluent's client raises for a 200 whose body is not a registry's (an HTML page, a JSON list...)
_NOT_A_REGISTRY = (ValueError, TypeError, KeyError, AttributeError)


def _unavailable(message: str, subject: str | None, status: int | None) -> SchemaRegistryUnavailableError:
    exc = SchemaRegistryUnavailableError(message, subject=subject)
    exc.status = status
    return exc


def registry_failure(exc: BaseException, what: str, subject: str | None, *, role: str) -> FieldcryptError | None:
    """The fieldcrypt error for a registry call's failure ``exc``, or None when ``exc`` is not a registry failure.
    ``what`` names what was asked for ("schema id 7"). ``role``: ``writer``, the schema the record names (a 404
    means the record is bad); ``reference``, a schema the writer's schema references (a 404: that schema cannot be
    read, a ``PolicyError`` as for any writer schema this serde cannot read); ``reader``, one the consumer's
    settings name (a 404 means the settings are wrong)."""
    if isinstance(exc, FieldcryptError):
        return None
    if isinstance(exc, SchemaRegistryError):
        status, code = exc.http_status_code, exc.error_code
        registry_code = isinstance(code, int) and 40400 <= code <= 40499
        if status == 404 and registry_code:
            if role == "writer":
                return UnknownSchemaError(
                    f"the record names {what}, which the schema registry does not hold (HTTP 404, error code {code})",
                    subject=subject,
                )
            if role == "reference":
                return PolicyError(
                    f"the schema registry does not hold {what} (HTTP 404, error code {code})", subject=subject
                )
            return ConfigurationError(
                f"the schema registry does not hold {what} (HTTP 404, error code {code})", subject=subject
            )
        if status in (401, 403):
            return _unavailable(
                f"the schema registry refused this client's credentials for {what} (HTTP {status}): fix them; the "
                "record was not read",
                subject,
                status,
            )
        if status in _RETRYABLE or (isinstance(status, int) and status >= 500):
            return _unavailable(
                f"the schema registry failed on {what} (HTTP {status}, error code {code}), after retries",
                subject,
                status,
            )
        if status == 404:
            return ConfigurationError(
                f"the server answered the request for {what} with HTTP 404 and no schema registry error code: is the "
                "URL the schema registry's?",
                subject=subject,
            )
        return ConfigurationError(
            f"the schema registry refused the request for {what} (HTTP {status}, error code {code})", subject=subject
        )
    if isinstance(exc, HTTP_ERRORS):
        return _unavailable(f"the schema registry did not answer {what} ({type(exc).__name__})", subject, None)
    if isinstance(exc, OAuthTokenError):
        return _unavailable(f"no OAuth token for the schema registry, to ask for {what}", subject, exc.status_code)
    return None


def ask(call: Callable[[], T], what: str, subject: str | None, *, role: str) -> T:
    """``call()``, a registry lookup; its failure as :func:`registry_failure` says (an answer that is not a
    registry's is a ``ConfigurationError``), chained to the client's error."""
    try:
        return call()
    except Exception as exc:
        mapped = registry_failure(exc, what, subject, role=role)
        if mapped is not None:
            raise mapped from exc
        if isinstance(exc, _NOT_A_REGISTRY) and not isinstance(exc, FieldcryptError):
            raise ConfigurationError(
                f"the schema registry's answer for {what} is not a schema registry's ({type(exc).__name__}): is the "
                "URL the registry's?",
                subject=subject,
            ) from exc
        raise


def _check_id(schema_id: int, subject: str | None) -> None:
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise UnknownSchemaError(
            f"the record names schema id {schema_id}, which no schema registry can hold (ids are 31-bit)",
            subject=subject,
        )


def writer_schema_by_id(registry: Any, schema_id: int, subject: str | None, fmt: str | None = None) -> Any:
    """The schema a record names by id (the Confluent prefix), as confluent's deserializer looks it up."""
    _check_id(schema_id, subject)
    if fmt is not None:
        return ask(
            lambda: registry.get_schema(schema_id, subject, fmt), f"schema id {schema_id}", subject, role="writer"
        )
    return ask(lambda: registry.get_schema(schema_id, subject), f"schema id {schema_id}", subject, role="writer")


def writer_schema_of(serde: Any, sid: Any, subject: str | None, fmt: str | None = None) -> Any:
    """The schema a record names in a header (schema id or GUID: confluent's ``SchemaId``), through confluent's
    ``_get_writer_schema``."""
    if sid.id is not None:
        _check_id(sid.id, subject)
    what = f"schema id {sid.id}" if sid.id is not None else f"schema GUID {sid.guid}"
    return ask(lambda: get_writer_schema(serde, sid, subject, fmt), what, subject, role="writer")


def reader_schema(serde: Any, subject: str, fmt: str | None = None) -> Any:
    """use.latest.version / use.latest.with.metadata / use.schema.id: the reader schema the consumer's settings
    name, through confluent's ``_get_reader_schema`` (None without those settings)."""
    return ask(
        lambda: get_reader_schema(serde, subject, fmt),
        f"the reader schema of subject {subject!r}",
        subject,
        role="reader",
    )


def subject_lookup(ctx: Any, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``: the subject of a record, through confluent's subject name strategy, which may ask the registry
    (its default strategy looks up the topic's associations once per topic). Its failures as fieldcrypt errors:
    the registry's as :func:`registry_failure` says; an answer that is not a registry's, or a strategy that
    refuses its settings, a ``ConfigurationError``."""
    try:
        return call(*args)
    except FieldcryptError:
        raise
    except Exception as exc:
        what = f"the subject of topic {getattr(ctx, 'topic', None)!r}"
        mapped = registry_failure(exc, what, None, role="reader")
        if mapped is not None:
            raise mapped from exc
        if isinstance(exc, (AttributeError, KeyError, TypeError)):
            raise ConfigurationError(
                f"the schema registry's answer for {what} is not a schema registry's ({type(exc).__name__}): is the "
                "URL the registry's?"
            ) from exc
        if isinstance(exc, (ValueError, SerializationError)):  # confluent's: they name the setting, never a value
            raise ConfigurationError(f"the subject name strategy failed for {what}: {exc}") from exc
        raise
