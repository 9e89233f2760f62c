"""Field plans: what to encrypt in a record, compiled once per schema id, independent of the schema language.

A plan is a tree of frozen nodes that follows only the parts of a record that lead to a tagged field:

    RecordNode(name, steps=(FieldStep("email", Leaf(...)), FieldStep("address", NullableNode(RecordNode(...))))
    ArrayNode(items, prefix) / MapNode(values) / NullableNode(child) / RefNode(name)  (RefNode: recursive types)
    UnionNode(branches)  (Avro unions of several types)  /  ChoiceNode(branches)  (JSON oneOf/anyOf)

Avro and JSON Schema compile to the same nodes, so both serdes share one engine (``core.engine``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fieldcrypt.core.confluent import wildcard, wildcard_match, wildcard_stars
from fieldcrypt.core.masks import get_mask
from fieldcrypt.core.regex import MAX_WILDCARD_STARS, Unmatchable, Unsupported
from fieldcrypt.errors import ConfigurationError, PolicyError
from fieldcrypt.keys.store import COMPANION_SUFFIXES, companion_of

__all__ = [
    "DEFAULT_DATA_SUBJECT_TAG",
    "DEFAULT_TAGS",
    "ArrayNode",
    "ChoiceNode",
    "FieldPlan",
    "FieldStep",
    "Leaf",
    "MapNode",
    "Node",
    "NullableNode",
    "RecordNode",
    "RefNode",
    "TagCollector",
    "TagRules",
    "UnionBranch",
    "UnionNode",
]

DEFAULT_TAGS: tuple[str, ...] = ("PII",)
DEFAULT_DATA_SUBJECT_TAG = "DATA_SUBJECT_ID"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Leaf:
    """A tagged value to encrypt. ``domain`` None means the serde's default domain (the registry subject).

    ``kind``: ``string`` (UTF-8 text, ciphertext as unpadded base64 text), ``bytes`` (raw), or ``base64`` (a JSON
    string with ``contentEncoding: base64``: the decoded bytes are encrypted, the ciphertext is padded base64).

    What a reader may put here instead of a value it cannot read (``fieldcrypt.core.engine.Outcomes``): ``nullable``,
    whether the schema admits null at this value's position (Avro: the value is a branch of a union holding
    ``"null"``; JSON Schema: every schema that may apply to the value accepts null), decided by the compiler once,
    and never true for the record value itself (a None record is a Kafka tombstone to confluent's deserializers);
    ``min_length``, the largest JSON ``minLength`` a placeholder must meet here.

    ``mask``: the name of the mask whose output the writer also writes, as the value's masked view, under the key
    domain ``<domain>/masked`` (``fieldcrypt.masks``; ``fieldcrypt.core.masks``), None for no view.
    """

    path: str  # schema path for messages, e.g. "bench.Event.items[].email"
    kind: Literal["string", "bytes", "base64"]
    domain: str | None
    tags: frozenset[str]
    nullable: bool = False
    min_length: int = 0
    mask: str | None = None
    #: encrypted deterministically (``fieldcrypt.deterministic.tags``): AES-SIV under the key of
    #: ``<domain>/det`` and the person, so equal values give equal ciphertexts (joins, grouping, record keys)
    deterministic: bool = False


@dataclass(frozen=True)
class FieldStep:
    name: str
    node: Node
    default: Any = MISSING  # schema default, encrypted when the field is absent from the record


@dataclass(frozen=True)
class RecordNode:
    """A record (Avro) or object (JSON). ``steps``: the declared fields that lead to tagged values.

    JSON objects only: ``declared`` names every declared property (tagged or not), ``patterns`` are
    ``patternProperties`` whose schemas hold tags, ``extra`` is an ``additionalProperties`` schema holding tags
    (for keys neither declared nor matched by any pattern of ``all_patterns``).
    """

    name: str
    steps: tuple[FieldStep, ...]
    declared: frozenset[str] = frozenset()
    patterns: tuple[tuple[str, Node], ...] = ()
    extra: Node | None = None
    all_patterns: tuple[str, ...] = ()  # every patternProperties regex, tagged or not (they exclude keys from extra)


@dataclass(frozen=True)
class ArrayNode:
    """An array. ``items`` applies to every element past ``prefix`` (JSON ``prefixItems``: per-position nodes).
    ``together``: the JSON keyword (``uniqueItems``, ``contains``) that judges its items together, so stand-ins for
    unreadable values (equal to one another) could break it (None: no such keyword)."""

    items: Node | None
    prefix: tuple[Node | None, ...] = ()
    together: str | None = None


@dataclass(frozen=True)
class MapNode:
    values: Node


@dataclass(frozen=True)
class NullableNode:
    """A value that may be null. ``name``: Avro only, the tuple-notation name of the non-null branch
    (``("ns.Address", {...})`` selects it), so union hints fastavro accepts are understood, not skipped."""

    child: Node
    name: str | None = None


@dataclass(frozen=True)
class RefNode:
    """A reference to a named record type compiled elsewhere in the plan (recursive schemas)."""

    name: str


@dataclass(frozen=True)
class UnionBranch:
    """One branch of an Avro union: its tuple-notation name (fullname of a named type, else the type name), its
    parsed schema (for fastavro's own validation, which picks the branch exactly as fastavro's writer does), the
    Python type family a reader returns for it, and its plan (None: nothing tagged in this branch)."""

    name: str
    schema: Any = field(compare=False, hash=False)
    family: str
    node: Node | None


@dataclass(frozen=True)
class UnionNode:
    """An Avro union of several non-null types, at least one of which holds tagged values. On write the engine
    chooses the branch as fastavro does (tuple notation, ``-type``, else validation) and emits tuple notation so
    the writer cannot choose another; on read the value arrives as ``(name, value)`` when the union has several
    named types (``named_read``), else its Python type tells the branch."""

    branches: tuple[UnionBranch, ...]
    nullable: bool
    named_read: bool


Matcher = Callable[[Any], bool]


@dataclass(frozen=True)
class ChoiceNode:
    """JSON ``oneOf``/``anyOf``: the branches the instance validates against decide what is encrypted. Every
    validating branch must call for the same plan (else the document is refused as ambiguous), on the plaintext
    and again on the ciphertext, so a reader that only sees the ciphertext reaches the same plan. For ``anyOf``,
    validating branches that tag nothing are left out (anyOf applies every branch; they add no encryption)."""

    keyword: str  # "oneOf" or "anyOf", for messages
    path: str
    branches: tuple[tuple[Matcher, Node | None], ...] = field(hash=False)


Node = Leaf | RecordNode | ArrayNode | MapNode | NullableNode | RefNode | UnionNode | ChoiceNode


@dataclass(frozen=True)
class FieldPlan:
    """Everything the engine needs for one schema: the node tree, the named records and the data-subject field."""

    root: Node | None  # None: the schema has no tagged field
    named: Mapping[str, RecordNode]
    leaves: tuple[Leaf, ...]
    data_subject: tuple[str, ...] | None  # field names from the root to the data-subject id, if any
    data_subject_path: str | None = None
    #: "string", "integer" (JSON: 1 == 1.0), "int" (Avro int/long: ints only), or a union of them ("string|int")
    data_subject_kind: str = "string"
    #: Avro: fastavro's named schemas (for union branch validation); read with return_named_type when set
    avro_named: Mapping[str, Any] | None = None
    named_read: bool = False
    #: every tag placement the compiler saw: (location, tag, decision), decision in encrypt/subject/plaintext
    decisions: tuple[tuple[str, str, str], ...] = ()
    #: what a version-2 value's associated data binds the value to besides its path: a JSON schema's ``$id``, else
    #: its ``title`` (None: neither, so the default key domain); Avro: "" (its paths start at the record's full name)
    identity: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.root is None


@dataclass(frozen=True)
class TagRules:
    """What each tag means: encrypt (``fieldcrypt.tags``), the data-subject id (``fieldcrypt.data.subject.tag``),
    or declared plaintext (``fieldcrypt.plaintext.tags``); and which tags map to named key domains.

    Every tag a schema carries must be one of these (see :class:`TagCollector`): a tag nobody declared is a
    ``PolicyError``, so a typo in the configuration fails when the schema is first seen, never silently.

    ``metadata_tags`` are the registered schema's ``metadata.tags`` (path pattern -> tags), matched with
    confluent's wildcard rules against the field's full name (``namespace.Record.field``) and, for convenience,
    against the name without namespace (``Record.field``). Every pattern must match at least one field.
    """

    encrypt: frozenset[str] = frozenset(DEFAULT_TAGS)
    data_subject: str = DEFAULT_DATA_SUBJECT_TAG
    domains: Mapping[str, str] = field(default_factory=dict)
    metadata_tags: tuple[tuple[str, frozenset[str]], ...] = ()
    plaintext: frozenset[str] = frozenset()
    #: tag -> mask name (``fieldcrypt.masks``): values carrying the tag also get a masked view
    masks: Mapping[str, str] = field(default_factory=dict)
    #: tags whose values are encrypted deterministically (``fieldcrypt.deterministic.tags``)
    deterministic: frozenset[str] = frozenset()

    def with_metadata(self, tags: object) -> TagRules:
        if not tags:
            return self
        if not isinstance(tags, Mapping):
            raise PolicyError("the schema's metadata.tags must map field path patterns to lists of tags")
        pairs = []
        for pattern, values in tags.items():
            if not isinstance(pattern, str) or not pattern.strip():
                raise PolicyError("a metadata.tags path pattern must be a non-empty string")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise PolicyError(f"metadata.tags[{pattern!r}] must be a list of tags, not a single value")
            values = list(values)
            if not values or not all(isinstance(t, str) and t for t in values):
                raise PolicyError(f"metadata.tags[{pattern!r}] must be a non-empty list of tag names")
            try:  # matched as confluent does, but in linear time (RE2): a pattern cannot stall a serializer
                wildcard(pattern)
                stars = wildcard_stars(pattern)
            except (re.error, Unsupported) as exc:
                raise PolicyError(f"metadata.tags path pattern {pattern!r} cannot be matched: {exc}") from None
            if stars > MAX_WILDCARD_STARS:  # confluent's own matcher (Python's re) would take ~n**stars steps
                raise PolicyError(
                    f"metadata.tags path pattern {pattern!r} holds {stars} '*'/'**' wildcards, more than "
                    f"{MAX_WILDCARD_STARS}: confluent's matcher (backtracking re) could stall on a long field name "
                    '(docs/policy.md, "Patterns")'
                )
            pairs.append((pattern, frozenset(values)))
        return replace(self, metadata_tags=tuple(sorted(pairs)))

    def domain_for(self, tags: frozenset[str], path: str) -> str | None:
        named = {self.domains[t] for t in tags & self.encrypt if t in self.domains}
        if len(named) > 1:
            raise PolicyError(
                f"tags map the field to several key domains ({', '.join(sorted(named))})", field_path=path
            )
        return next(iter(named)) if named else None

    def mask_for(self, tags: frozenset[str], path: str, kind: str) -> str | None:
        """The mask of an encrypted value carrying ``tags`` (None: no masked view). Two masks for one value, or a
        mask on a value that is not text, is a ``PolicyError`` naming the value's path."""
        if not self.masks:
            return None
        named = {self.masks[t] for t in tags & self.encrypt if t in self.masks}
        if not named:
            return None
        if len(named) > 1:
            raise PolicyError(
                f"tags give the value several masks ({', '.join(sorted(named))}) in fieldcrypt.masks; a value has "
                "one masked view",
                field_path=path,
            )
        if kind != "string":
            raise PolicyError(
                f"a tag of fieldcrypt.masks marks the value for a masked view, but it is {kind}, not text: only "
                "string values can be masked (drop the mask for this tag, or tag the value otherwise)",
                field_path=path,
            )
        return next(iter(named))

    def deterministic_for(self, tags: frozenset[str], path: str, mask: str | None) -> bool:
        """Whether an encrypted value carrying ``tags`` is encrypted deterministically. A deterministic value with a
        masked view is a ``PolicyError`` naming its path: a view is sealed with the record's nonce, which a
        deterministic value does not have (give the two treatments to different fields)."""
        if not self.deterministic or not tags & self.encrypt & self.deterministic:
            return False
        if mask is not None:
            raise PolicyError(
                "the value is marked deterministic (fieldcrypt.deterministic.tags) and masked (fieldcrypt.masks); "
                "a deterministic value carries no masked view: drop one of the two for its tags",
                field_path=path,
            )
        return True

    def collector(self) -> TagCollector:
        return TagCollector(self)

    @staticmethod
    def from_conf(
        tags: object = DEFAULT_TAGS,
        data_subject: object = DEFAULT_DATA_SUBJECT_TAG,
        domains: object = None,
        plaintext: object = (),
        masks: object = None,
        deterministic: object = (),
    ) -> TagRules:
        encrypt = _tag_list(tags, "fieldcrypt.tags", allow_empty=False)
        clear = _tag_list(plaintext, "fieldcrypt.plaintext.tags", allow_empty=True)
        if not isinstance(data_subject, str) or not data_subject.strip() or data_subject != data_subject.strip():
            raise ConfigurationError("fieldcrypt.data.subject.tag must be a non-empty tag name")
        domains = {} if domains is None else domains
        if not isinstance(domains, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in domains.items()
        ):
            raise ConfigurationError("fieldcrypt.tag.domains must map tag names to non-empty domain names")
        reserved = sorted(v for v in domains.values() if companion_of(v) is not None)
        if reserved:
            raise ConfigurationError(
                f"fieldcrypt.tag.domains names {', '.join(map(repr, reserved))}: key domains ending in "
                f"{' or '.join(map(repr, COMPANION_SUFFIXES))} are reserved (masked views, deterministic keys)"
            )
        stray = sorted(set(domains) - encrypt)
        if stray:
            raise ConfigurationError(
                f"fieldcrypt.tag.domains maps {', '.join(map(repr, stray))}, which fieldcrypt.tags does not list"
            )
        if data_subject in encrypt:
            raise ConfigurationError("the data-subject tag cannot also be an encryption tag")
        if data_subject in clear:
            raise ConfigurationError("the data-subject tag cannot also be a plaintext tag")
        both = sorted(encrypt & clear)
        if both:
            raise ConfigurationError(f"tags {', '.join(map(repr, both))} are both encrypted and declared plaintext")
        det = _tag_list(deterministic, "fieldcrypt.deterministic.tags", allow_empty=True)
        stray_det = sorted(det - encrypt)
        if stray_det:
            raise ConfigurationError(
                f"fieldcrypt.deterministic.tags lists {', '.join(map(repr, stray_det))}, which fieldcrypt.tags does "
                "not list: only encrypted values can be encrypted deterministically"
            )
        return TagRules(encrypt, data_subject, dict(domains), (), clear, _masks(masks, encrypt), det)


def _masks(value: object, encrypt: frozenset[str]) -> dict[str, str]:
    """``fieldcrypt.masks``: tag -> the name of a known mask, each tag one of ``fieldcrypt.tags`` (a masked view is a
    second form of an encrypted value, never of a value left in clear)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError('fieldcrypt.masks must map tag names to mask names, e.g. {"PII": "email"}')
    stray = sorted(set(value) - encrypt)
    if stray:
        raise ConfigurationError(
            f"fieldcrypt.masks maps {', '.join(map(repr, stray))}, which fieldcrypt.tags does not list: only "
            f"encrypted values get a masked view (fieldcrypt.tags: {sorted(encrypt)})"
        )
    for name in value.values():
        get_mask(name)  # an unknown name: ConfigurationError listing the known ones
    return dict(value)


def _tag_list(value: object, key: str, *, allow_empty: bool) -> frozenset[str]:
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(t, str) and t.strip() and t == t.strip() for t in value
    ):
        raise ConfigurationError(f"{key} must be a list of tag names (or a comma-separated string)")
    if not value and not allow_empty:
        raise ConfigurationError(f"{key} must name at least one tag")
    return frozenset(value)


class TagCollector:
    """Reads the tags of one schema, for one compilation: checks that every inline tag list is well formed, that
    every tag is a decision of the :class:`TagRules`, and (``finish``) that every ``metadata.tags`` pattern matched
    some field. Records every placement in ``decisions`` (location, tag, decision)."""

    def __init__(self, rules: TagRules) -> None:
        self.rules = rules
        self._matched: set[str] = set()
        self.decisions: list[tuple[str, str, str]] = []

    def inline(self, raw: object, location: str) -> frozenset[str]:
        """The tags of one ``"confluent:tags"`` value (``MISSING`` when absent), checked and decided."""
        if raw is MISSING:
            return frozenset()
        if not isinstance(raw, list) or not all(isinstance(t, str) and t.strip() for t in raw):
            raise PolicyError('"confluent:tags" must be a list of tag names', field_path=location)
        return self._decide(frozenset(raw), location)

    def field(self, full_name: str, raw: object, location: str | None = None) -> frozenset[str]:
        """Inline tags plus the ``metadata.tags`` patterns matching ``full_name``."""
        where = location or full_name
        found = set(self.inline(raw, where))
        if self.rules.metadata_tags:
            short = full_name.rsplit(".", 2)
            short_name = ".".join(short[-2:]) if len(short) >= 2 else full_name
            extra: set[str] = set()
            for pattern, tags in self.rules.metadata_tags:
                try:
                    matched = wildcard_match(full_name, pattern) or (
                        short_name != full_name and wildcard_match(short_name, pattern)
                    )
                except Unmatchable:
                    raise PolicyError(
                        "the field name holds a lone surrogate (not Unicode): metadata.tags patterns cannot be "
                        "matched against it",
                        field_path=where,
                    ) from None
                if matched:
                    self._matched.add(pattern)
                    extra.update(tags)
            found.update(self._decide(frozenset(extra), where))
        return frozenset(found)

    def _decide(self, tags: frozenset[str], location: str) -> frozenset[str]:
        rules = self.rules
        for tag in sorted(tags):
            if tag in rules.encrypt:
                decision = "encrypt"
            elif tag == rules.data_subject:
                decision = "subject"
            elif tag in rules.plaintext:
                decision = "plaintext"
            else:
                raise PolicyError(
                    f"the schema tags this with {tag!r}, which the configuration does not decide: list it in "
                    "fieldcrypt.tags (encrypt) or fieldcrypt.plaintext.tags (leave in clear), or name it in "
                    f"fieldcrypt.data.subject.tag (configured: tags {sorted(rules.encrypt)}, plaintext "
                    f"{sorted(rules.plaintext)}, data subject {rules.data_subject!r})",
                    field_path=location,
                )
            self.decisions.append((location, tag, decision))
        return tags

    def applies(self, path: str, tags: frozenset[str], schemas: tuple[Any, ...]) -> frozenset[str]:
        """The tags that apply to the value at ``path`` (``schemas``: its schema objects). The compilers pass every
        value position they visit through here and use what it returns; this returns ``tags`` as they are (schema
        lint's collector, ``fieldcrypt.lint``, records the positions)."""
        return tags

    def finish(self) -> None:
        unmatched = [p for p, _ in self.rules.metadata_tags if p not in self._matched]
        if unmatched:
            raise PolicyError(
                f"metadata.tags pattern(s) {', '.join(map(repr, unmatched))} match no field of the schema "
                "(patterns are matched against Record.field / namespace.Record.field in Avro, $.a.b in JSON Schema)"
            )
