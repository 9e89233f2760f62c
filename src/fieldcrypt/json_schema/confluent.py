"""The uses of confluent-kafka's private JSON Schema serde API (the JSON quarantine module, docs/compatibility.md).

Parsing a registered schema with confluent's reference resolution (``_get_parsed_schema``), confluent's validator
for it (``_get_validator``), and the JSON field transformer confluent's rule machinery runs data-contract rules with
(``common.json_schema.transform``, re-bound to validate on RE2: :func:`bounded_transform`), handed to
:mod:`fieldcrypt.core.confluent` as a :data:`fieldcrypt.core.confluent.FieldRules`. Checked by
``tests/test_confluent_private_api.py``.
"""

from __future__ import annotations

import re
import threading
import types
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common import json_schema as _json
from jsonschema import validators
from referencing import Resource

from fieldcrypt.core.confluent import Transformer, bounded_tags
from fieldcrypt.json_schema.validation import bounded_validate, names_in
from fieldcrypt.keys import _loop

__all__ = ["bounded_transform", "field_rules", "parse", "validator"]


def parse(serde: Any, schema: Schema) -> tuple[Any, Any]:
    """The schema parsed (a dict or bool) and its ``referencing`` registry, references resolved through the serde's
    registry client, as confluent's serdes parse it."""
    return serde._get_parsed_schema(schema)  # type: ignore[no-any-return]


def validator(serde: Any, schema: Schema, parsed: Any, registry: Any) -> Any:
    """confluent's validator for a parsed schema (the draft's jsonschema class, the metaschema checked)."""
    return serde._get_validator(schema, parsed, registry)


def field_rules(serde: Any, schema: Schema, parsed: Any = None) -> tuple[Transformer, Any]:
    """confluent's JSON field transformer for ``schema`` (parsed again here, as confluent does; ``parsed`` unused),
    its branch choices validated on RE2, and no inline tags (JSON has none for rules)."""
    transform = bounded_transform()
    root, ref_registry = serde._get_parsed_schema(schema)
    resolver = ref_registry.resolver_with_root(Resource.from_contents(root, default_specification=_json.DEFAULT_SPEC))

    def transformer(rule_ctx: Any, field_transform: Any, msg: Any) -> Any:
        return transform(bounded_tags(rule_ctx), root, ref_registry, resolver, "$", msg, field_transform)

    return transformer, None


_TRANSFORM: list[Any] = []
_TRANSFORM_LOCK = threading.Lock()


def bounded_transform() -> Callable[..., Any]:
    """confluent's JSON field transformer (``common.json_schema.transform``), re-bound: each function of that
    module copied with a copy of its globals in which ``validate`` (jsonschema's, with which the transformer picks
    the ``oneOf``/``anyOf`` branch and the ``type``-list member a rule applies to) is :func:`bounded_validate`, and
    the module's own functions are these copies (so the recursion stays in them). The same code, the same answers,
    every regex on RE2. Raises ``RuntimeError`` if the module reaches ``re`` or jsonschema's validation another way
    (a confluent release that does must be looked at, not run with a backtracking search)."""
    if _TRANSFORM:
        return cast(Callable[..., Any], _TRANSFORM[0])
    import jsonschema
    from confluent_kafka.schema_registry.common import json_schema as module

    with _loop.taken(_TRANSFORM_LOCK):  # (on an asyncio serde's loop: never waited for)
        if _TRANSFORM:
            return cast(Callable[..., Any], _TRANSFORM[0])
        env: dict[str, Any] = dict(vars(module))
        env["validate"] = bounded_validate
        own = {
            name: fn
            for name, fn in vars(module).items()
            if isinstance(fn, types.FunctionType) and fn.__module__ == module.__name__
        }
        for name, fn in own.items():
            copy = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
            copy.__kwdefaults__, copy.__qualname__, copy.__doc__ = fn.__kwdefaults__, fn.__qualname__, fn.__doc__
            copy.__module__ = fn.__module__
            env[name] = copy
        unbounded = (re, jsonschema, validators, jsonschema.validate, validators.validate, validators.validator_for)
        for name, fn in own.items():
            for used in sorted(names_in(fn.__code__)):
                value = env.get(used)
                if any(value is u for u in unbounded) or (
                    isinstance(value, types.FunctionType)
                    and value.__module__ != module.__name__
                    and value.__module__.startswith("jsonschema")
                ):
                    raise RuntimeError(
                        f"confluent's {module.__name__}.{name} reaches {used!r} ({value!r}): fieldcrypt cannot bound "
                        "the regexes its field transformer searches records with"
                    )
        _TRANSFORM.append(env["transform"])
        return cast(Callable[..., Any], _TRANSFORM[0])
