"""Schema lookups through confluent-kafka's SchemaRegistryClient, with one work-around.

confluent-kafka 2.16 builds ``MetadataTags`` with list values from a registry response and then hashes the
schema to cache it, which raises ``TypeError: unhashable type: 'list'`` for every schema that carries
``metadata.tags``. Reproducer (no server needed)::

    from confluent_kafka.schema_registry import Schema
    hash(Schema.from_dict({"schema": "{}", "metadata": {"tags": {"R.email": ["PII"]}}}))  # TypeError

When the client fails that way, the same request is sent through the client's own REST session and the
response parsed without the client's cache. Register schemas with tuples as tag values
(``MetadataTags({"R.email": ("PII",)})``) to avoid the bug on the producer side.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient

__all__ = ["fetch_schema"]


def fetch_schema(registry: SchemaRegistryClient, schema_id: int, subject: str | None) -> Schema:
    """The schema registered under ``schema_id``, metadata included."""
    try:
        return registry.get_schema(schema_id, subject)
    except TypeError:
        rest: Any = getattr(registry, "_rest_client", None)
        if rest is None:
            raise
        query = {"subject": subject} if subject is not None else None
        response = rest.get(f"schemas/ids/{schema_id}", query)
        schema: Schema = RegisteredSchema.from_dict(response).schema
        return schema
