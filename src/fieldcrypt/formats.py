"""The format registry: which :class:`fieldcrypt.core.format.SchemaFormat` reads a registry ``schemaType``.

It sits above the format folders (it imports them) and below the tools that inspect schemas and topics
(``fieldcrypt.inspect``, the CLI), which reach every format through it. Nothing in ``fieldcrypt.core`` or a format
folder imports it. A new format (a folder implementing the interface) is registered by adding its ``FORMAT`` to
:data:`_REGISTERED`. Unknown types fail closed: only a schema type of None (what confluent's registry reports for
Avro) defaults to Avro.
"""

from __future__ import annotations

from fieldcrypt.avro.format import FORMAT as AVRO
from fieldcrypt.core.format import SchemaFormat
from fieldcrypt.errors import UnsupportedSchemaTypeError
from fieldcrypt.json_schema.format import FORMAT as JSON
from fieldcrypt.protobuf.format import FORMAT as PROTOBUF

__all__ = ["format_by_key", "format_for", "formats", "keys", "supported"]

#: the registered formats, in the order they are listed
_REGISTERED: tuple[SchemaFormat, ...] = (AVRO, JSON, PROTOBUF)
#: the schema type confluent's registry and serdes mean when they give none
_DEFAULT = "AVRO"


def formats() -> tuple[SchemaFormat, ...]:
    """Every registered format."""
    return _REGISTERED


def supported() -> str:
    """The registered formats' names, for messages: ``Avro, JSON Schema and Protobuf``."""
    names = [f.name for f in _REGISTERED]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def format_for(schema_type: str | None) -> SchemaFormat:
    """The format of a registry ``schemaType`` (case-insensitive; None is Avro, as confluent reads it). Raises
    ``UnsupportedSchemaTypeError`` naming the type and the supported ones for any other."""
    wanted = _DEFAULT if schema_type is None else str(schema_type).upper()
    for fmt in _REGISTERED:
        if fmt.schema_type == wanted:
            return fmt
    types = ", ".join(f.schema_type for f in _REGISTERED)
    raise UnsupportedSchemaTypeError(
        f"schema type {schema_type!r} is not one fieldcrypt reads (supported: {types}: {supported()})"
    )


def format_by_key(key: str) -> SchemaFormat:
    """The format the CLI names ``key`` (``avro``, ``json``); ``UnsupportedSchemaTypeError`` for another."""
    for fmt in _REGISTERED:
        if fmt.key == key:
            return fmt
    raise UnsupportedSchemaTypeError(f"format {key!r} is not one fieldcrypt reads ({', '.join(keys())})")


def keys() -> list[str]:
    """The CLI names of the registered formats."""
    return [f.key for f in _REGISTERED]
