"""Schema lint, public face of :mod:`fieldcrypt.inspect.lint` (docs/schema-lint.md)."""

from fieldcrypt.inspect.lint import (
    FEW_VALUE_FORMATS,
    FEW_VALUE_NAMES,
    FORMAT_HINTS,
    NAME_HINTS,
    QUALIFIERS,
    VERDICTS,
    Finding,
    Hint,
    Row,
    SchemaReport,
    few_values,
    hint_for,
    lint_schema,
    normalize_name,
    parse_hints,
    removed_tags,
)

__all__ = [
    "FEW_VALUE_FORMATS",
    "FEW_VALUE_NAMES",
    "FORMAT_HINTS",
    "NAME_HINTS",
    "QUALIFIERS",
    "VERDICTS",
    "Finding",
    "Hint",
    "Row",
    "SchemaReport",
    "few_values",
    "hint_for",
    "lint_schema",
    "normalize_name",
    "parse_hints",
    "removed_tags",
]
