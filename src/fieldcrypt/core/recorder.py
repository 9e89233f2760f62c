"""A tag collector that records every value position of a schema and every tag placed, deciding nothing.

A format's policy compiler, run with :func:`neutral` rules and a :class:`Recorder`, visits the whole schema whatever
its tags say: schema lint builds its rows from the visit (``fieldcrypt.inspect.lint``), and a serializer asks which
value paths a schema can write at all (``fieldcrypt.core.written.value_paths``) before it refuses a dropped tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fieldcrypt.core.plan import TagCollector, TagRules
from fieldcrypt.errors import PolicyError

__all__ = ["Recorder", "ValueRecord", "neutral"]


@dataclass
class ValueRecord:
    """One value position: the tags that apply to it, and the schema objects of each visit (as the format's
    compiler passes them to :meth:`TagCollector.applies`)."""

    tags: frozenset[str] = frozenset()
    calls: list[tuple[Any, ...]] = field(default_factory=list)


class Recorder(TagCollector):
    """Records every value position and every tag placement, deciding nothing (the compiler runs with rules under
    which no tag is decisive, so it visits the whole schema whatever the tags say)."""

    def __init__(self, rules: TagRules) -> None:
        super().__init__(rules)
        self.values: dict[str, ValueRecord] = {}
        self.placements: list[tuple[str, str]] = []  # (location, tag)
        self._raw_at: dict[int, tuple[Any, str]] = {}  # id of a "confluent:tags" list -> (it, its location)
        self.paths_of: dict[str, set[str]] = {}  # a tag location (JSON pointer) -> the value paths it applies to

    def inline(self, raw: object, location: str) -> frozenset[str]:
        try:
            tags = super().inline(raw, location)
        except PolicyError:  # malformed: the deciding pass refuses it, with the serializer's words
            return frozenset()
        if isinstance(raw, list):
            self._raw_at[id(raw)] = (raw, location)
        return tags

    def _decide(self, tags: frozenset[str], location: str) -> frozenset[str]:
        self.placements.extend((location, t) for t in sorted(tags))
        return tags

    def applies(self, path: str, tags: frozenset[str], schemas: tuple[Any, ...]) -> frozenset[str]:
        value = self.values.setdefault(path, ValueRecord())
        value.tags |= tags
        value.calls.append(schemas)
        for s in schemas:
            raw = s.get("confluent:tags") if isinstance(s, dict) else None
            known = self._raw_at.get(id(raw)) if raw is not None else None
            if known is not None and known[0] is raw:
                self.paths_of.setdefault(known[1], set()).add(path)
        return tags

    def finish(self) -> None:
        pass


def neutral(rules: TagRules) -> TagRules:
    """Rules under which no tag encrypts or names a data subject (the metadata.tags patterns are kept)."""
    return TagRules(frozenset({"\0lint"}), "\0lint-subject", {}, rules.metadata_tags, frozenset())
