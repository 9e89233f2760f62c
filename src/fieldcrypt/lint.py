"""Schema lint, public face of :mod:`fieldcrypt.inspect.lint` (docs/schema-lint.md)."""

from fieldcrypt.inspect.lint import (
    FORMAT_HINTS,
    NAME_HINTS,
    QUALIFIERS,
    VERDICTS,
    Finding,
    Hint,
    Row,
    SchemaReport,
    hint_for,
    lint_schema,
    normalize_name,
    parse_hints,
    removed_tags,
)

__all__ = [
    "FORMAT_HINTS",
    "NAME_HINTS",
    "QUALIFIERS",
    "VERDICTS",
    "Finding",
    "Hint",
    "Row",
    "SchemaReport",
    "hint_for",
    "lint_schema",
    "normalize_name",
    "parse_hints",
    "removed_tags",
]
