"""The format registry: which :class:`fieldcrypt.core.format.SchemaFormat` reads a registry ``schemaType``.

It sits above the format folders (it imports them) and below the tools that inspect schemas and topics
(``fieldcrypt.inspect``, the CLI), which reach every format through it. Nothing in ``fieldcrypt.core`` or a format
folder imports it. A new format (a folder implementing the interface) is registered by adding a line naming it and
the module holding its ``FORMAT`` to :data:`_REGISTERED`. Unknown types fail closed: only a schema type of None
(what confluent's registry reports for Avro) defaults to Avro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fieldcrypt.errors import UnsupportedSchemaTypeError

if TYPE_CHECKING:
    from fieldcrypt.core.format import SchemaFormat

__all__ = ["format_by_key", "format_for", "formats", "keys", "supported"]

#: the registered formats, in the order they are listed: (CLI name, name, registry schema type, the module holding
#: its ``FORMAT``), or a format object itself. The lines are known without importing the format folders, which bring
#: confluent's registry clients, jsonschema and protobuf (a few tenths of a second): a command that reads no schema
#: (``fieldcrypt keys ...``) imports none of them. ``tests/test_formats.py`` checks that each ``FORMAT`` agrees.
_REGISTERED: tuple[tuple[str, str, str, str] | SchemaFormat, ...] = (
    ("avro", "Avro", "AVRO", "fieldcrypt.avro.format"),
    ("json", "JSON Schema", "JSON", "fieldcrypt.json_schema.format"),
    ("protobuf", "Protobuf", "PROTOBUF", "fieldcrypt.protobuf.format"),
)
#: the schema type confluent's registry and serdes mean when they give none
_DEFAULT = "AVRO"
#: (the ``_REGISTERED`` they were loaded for, the formats): loaded again when ``_REGISTERED`` is another tuple
_loaded: tuple[Any, tuple[SchemaFormat, ...]] = (None, ())


def _names(entry: tuple[str, str, str, str] | SchemaFormat) -> tuple[str, str, str]:
    """(CLI name, name, schema type) of a registered line, without importing its format."""
    if isinstance(entry, tuple):
        return entry[0], entry[1], entry[2]
    return entry.key, entry.name, entry.schema_type


def formats() -> tuple[SchemaFormat, ...]:
    """Every registered format (their folders imported on the first call)."""
    global _loaded
    registered = _REGISTERED
    if _loaded[0] is not registered:
        _loaded = (
            registered,
            tuple(
                importlib.import_module(entry[3]).FORMAT if isinstance(entry, tuple) else entry for entry in registered
            ),
        )
    return _loaded[1]


def supported() -> str:
    """The registered formats' names, for messages: ``Avro, JSON Schema and Protobuf``."""
    names = [_names(entry)[1] for entry in _REGISTERED]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def format_for(schema_type: str | None) -> SchemaFormat:
    """The format of a registry ``schemaType`` (case-insensitive; None is Avro, as confluent reads it). Raises
    ``UnsupportedSchemaTypeError`` naming the type and the supported ones for any other."""
    wanted = _DEFAULT if schema_type is None else str(schema_type).upper()
    if wanted in (_names(entry)[2] for entry in _REGISTERED):  # (an unknown type imports no format)
        for fmt in formats():
            if fmt.schema_type == wanted:
                return fmt
    types = ", ".join(_names(entry)[2] for entry in _REGISTERED)
    raise UnsupportedSchemaTypeError(
        f"schema type {schema_type!r} is not one fieldcrypt reads (supported: {types}: {supported()})"
    )


def format_by_key(key: str) -> SchemaFormat:
    """The format the CLI names ``key`` (``avro``, ``json``); ``UnsupportedSchemaTypeError`` for another."""
    if key in keys():  # (an unknown name imports no format)
        for fmt in formats():
            if fmt.key == key:
                return fmt
    raise UnsupportedSchemaTypeError(f"format {key!r} is not one fieldcrypt reads ({', '.join(keys())})")


def keys() -> list[str]:
    """The CLI names of the registered formats."""
    return [_names(entry)[0] for entry in _REGISTERED]
