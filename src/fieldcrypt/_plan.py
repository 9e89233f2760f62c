"""Field plans: what to encrypt in a record, compiled once per schema id, independent of the schema language.

A plan is a tree of frozen nodes that follows only the parts of a record that lead to a tagged field:

    RecordNode(name, steps=(FieldStep("email", Leaf(...)), FieldStep("address", NullableNode(RecordNode(...))))
    ArrayNode(items) / MapNode(values) / NullableNode(child) / RefNode(name)  (RefNode: recursive named types)

Avro and JSON Schema compile to the same nodes, so both serdes share one engine (``_engine``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka.schema_registry.wildcard_matcher import wildcard_match

from fieldcrypt.errors import ConfigurationError

__all__ = [
    "DEFAULT_DATA_SUBJECT_TAG",
    "DEFAULT_TAGS",
    "ArrayNode",
    "FieldPlan",
    "FieldStep",
    "Leaf",
    "MapNode",
    "Node",
    "NullableNode",
    "RecordNode",
    "RefNode",
    "TagRules",
]

DEFAULT_TAGS: tuple[str, ...] = ("PII",)
DEFAULT_DATA_SUBJECT_TAG = "DATA_SUBJECT_ID"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Leaf:
    """A tagged field to encrypt. ``domain`` None means the serde's default domain (the registry subject)."""

    path: str  # schema path for messages, e.g. "bench.Event.items[].email"
    kind: Literal["string", "bytes"]
    domain: str | None
    tags: frozenset[str]


@dataclass(frozen=True)
class FieldStep:
    name: str
    node: Node
    default: Any = MISSING  # schema default, encrypted when the field is absent from the record


@dataclass(frozen=True)
class RecordNode:
    name: str
    steps: tuple[FieldStep, ...]


@dataclass(frozen=True)
class ArrayNode:
    items: Node


@dataclass(frozen=True)
class MapNode:
    values: Node


@dataclass(frozen=True)
class NullableNode:
    child: Node


@dataclass(frozen=True)
class RefNode:
    """A reference to a named record type compiled elsewhere in the plan (recursive schemas)."""

    name: str


Node = Leaf | RecordNode | ArrayNode | MapNode | NullableNode | RefNode


@dataclass(frozen=True)
class FieldPlan:
    """Everything the engine needs for one schema: the node tree, the named records and the data-subject field."""

    root: Node | None  # None: the schema has no tagged field
    named: Mapping[str, RecordNode]
    leaves: tuple[Leaf, ...]
    data_subject: tuple[str, ...] | None  # field names from the root to the data-subject id, if any
    data_subject_path: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.root is None


@dataclass(frozen=True)
class TagRules:
    """Which tags mean "encrypt", which marks the data-subject id, and which tags map to named key domains.

    ``metadata_tags`` are the registered schema's ``metadata.tags`` (path pattern -> tags), matched with
    confluent's wildcard rules against the field's full name (``namespace.Record.field``) and, for convenience,
    against the name without namespace (``Record.field``).
    """

    encrypt: frozenset[str] = frozenset(DEFAULT_TAGS)
    data_subject: str = DEFAULT_DATA_SUBJECT_TAG
    domains: Mapping[str, str] = field(default_factory=dict)
    metadata_tags: tuple[tuple[str, frozenset[str]], ...] = ()

    def with_metadata(self, tags: Mapping[str, Iterable[str]] | None) -> TagRules:
        if not tags:
            return self
        pairs = tuple(sorted((str(k), frozenset(str(t) for t in v)) for k, v in tags.items()))
        return TagRules(self.encrypt, self.data_subject, self.domains, pairs)

    def tags_for(self, full_name: str, inline: Sequence[str] | None) -> frozenset[str]:
        found = set(inline or ())
        if self.metadata_tags:
            short = full_name.rsplit(".", 2)
            short_name = ".".join(short[-2:]) if len(short) >= 2 else full_name
            for pattern, tags in self.metadata_tags:
                if wildcard_match(full_name, pattern) or (
                    short_name != full_name and wildcard_match(short_name, pattern)
                ):
                    found.update(tags)
        return frozenset(found)

    def domain_for(self, tags: frozenset[str], path: str) -> str | None:
        named = {self.domains[t] for t in tags & self.encrypt if t in self.domains}
        if len(named) > 1:
            from fieldcrypt.errors import PolicyError

            raise PolicyError(
                f"tags map the field to several key domains ({', '.join(sorted(named))})", field_path=path
            )
        return next(iter(named)) if named else None

    @staticmethod
    def from_conf(
        tags: object = DEFAULT_TAGS, data_subject: object = DEFAULT_DATA_SUBJECT_TAG, domains: object = None
    ) -> TagRules:
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        if not isinstance(tags, (list, tuple, set, frozenset)) or not tags or not all(isinstance(t, str) for t in tags):
            raise ConfigurationError("fieldcrypt.tags must be a non-empty list of tag names")
        if not isinstance(data_subject, str) or not data_subject:
            raise ConfigurationError("fieldcrypt.data.subject.tag must be a non-empty string")
        domains = {} if domains is None else domains
        if not isinstance(domains, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in domains.items()
        ):
            raise ConfigurationError("fieldcrypt.tag.domains must map tag names to non-empty domain names")
        if data_subject in tags:
            raise ConfigurationError("the data-subject tag cannot also be an encryption tag")
        return TagRules(frozenset(tags), data_subject, dict(domains))
