"""JSON Schema: fieldcrypt's twins of confluent-kafka's ``JSONSerializer`` and ``JSONDeserializer`` (plus
``keyring=``).

    from fieldcrypt.json_schema import JSONSerializer, JSONDeserializer

The format folder: ``policy.py`` compiles a JSON schema to a field plan, ``validation.py`` validates records on RE2,
``serde.py`` holds the serde classes, ``confluent.py`` the uses of confluent-kafka's private JSON API, and
``format.py`` the :class:`fieldcrypt.core.format.SchemaFormat` that registers all of it (docs/architecture.md).
"""

from fieldcrypt.json_schema.aio import AsyncJSONDeserializer, AsyncJSONSerializer
from fieldcrypt.json_schema.builders import (
    AsyncJSONDeserializerBuilder,
    AsyncJSONSerializerBuilder,
    JSONDeserializerBuilder,
    JSONSerializerBuilder,
)
from fieldcrypt.json_schema.serde import JSONDeserializer, JSONSerializer

__all__ = [
    "AsyncJSONDeserializer",
    "AsyncJSONDeserializerBuilder",
    "AsyncJSONSerializer",
    "AsyncJSONSerializerBuilder",
    "JSONDeserializer",
    "JSONDeserializerBuilder",
    "JSONSerializer",
    "JSONSerializerBuilder",
]
