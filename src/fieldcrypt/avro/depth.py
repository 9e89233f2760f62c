"""A guard for records of recursive Avro schemas.

fastavro's C reader recurses once per nesting level of a record and does not check the depth: a record of a
recursive schema (``Node{next: [null, Node]}``) nested a few thousand levels deep overflows the C stack, which kills
the process (a segmentation fault, not an exception) — about 15 kB of bytes from any producer stop every consumer
of the topic (confluent's ``AvroDeserializer`` included). Before such a record is decoded, :func:`check_depth`
walks its bytes without recursion and refuses one nested deeper than :data:`MAX_DEPTH` levels
(``MalformedRecordError``).

Only records of recursive schemas are walked, and only when they are longer than :data:`MAX_DEPTH` bytes (every
level takes at least one byte, so a shorter one cannot be that deep). The walk decides nothing else: on bytes it
cannot read it stops and leaves the verdict to fastavro.
"""

from __future__ import annotations

from typing import Any

from fieldcrypt.avro.policy import named_types
from fieldcrypt.errors import MalformedRecordError

__all__ = ["MAX_DEPTH", "check_depth", "is_recursive"]

#: the deepest nesting (records, arrays, maps and unions inside each other) read from a recursive schema. fastavro
#: overflowed an 8 MiB stack at ~4,500 levels of a one-field record; threads may have smaller stacks.
MAX_DEPTH = 500

_PRIMITIVE_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_VARINTS = frozenset({"int", "long", "enum"})
_LENGTHS = frozenset({"string", "bytes"})
_recursive_cache: dict[int, tuple[Any, bool]] = {}


def is_recursive(schema: Any) -> bool:
    """Whether a fastavro-parsed schema has a named type that holds itself (directly or through others). Asked once
    per record on the read path: a dict lookup, no lock (a dict's get and set are atomic; two threads that miss
    together compute the same answer). The entry keeps the schema, so its id cannot be reused while cached."""
    hit = _recursive_cache.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    found = _find_recursion(schema)
    if len(_recursive_cache) >= 1024:
        _recursive_cache.clear()
    _recursive_cache[id(schema)] = (schema, found)
    return found


def _find_recursion(schema: Any) -> bool:
    open_names: set[str] = set()
    stack: list[tuple[Any, str | None]] = [(schema, None)]  # (type, name to close once its children are done)
    while stack:
        t, closing = stack.pop()
        if closing is not None:
            open_names.discard(closing)
            continue
        if isinstance(t, str):
            if t in open_names:
                return True
        elif isinstance(t, list):
            stack.extend((b, None) for b in t)
        elif isinstance(t, dict):
            kind = t.get("type")
            name = t.get("name") if kind in ("record", "error") else None
            if isinstance(name, str):
                open_names.add(name)
                stack.append((None, name))
            if kind in ("record", "error"):
                stack.extend((f.get("type"), None) for f in t.get("fields", ()) if isinstance(f, dict))
            elif kind == "array":
                stack.append((t.get("items"), None))
            elif kind == "map":
                stack.append((t.get("values"), None))
            elif isinstance(kind, (dict, list)):
                stack.append((kind, None))
    return False


def check_depth(schema: Any, data: bytes | memoryview, subject: str | None = None) -> None:
    """Raise ``MalformedRecordError`` if ``data`` (a record of the fastavro-parsed ``schema``) nests deeper than
    :data:`MAX_DEPTH` levels; return otherwise (also when the bytes cannot be read: fastavro then says why)."""
    if len(data) <= MAX_DEPTH or not is_recursive(schema):
        return
    if _deeper_than(schema, memoryview(data).cast("B"), MAX_DEPTH):
        raise MalformedRecordError(
            f"the record is nested deeper than {MAX_DEPTH} levels (a recursive schema): refused before decoding",
            subject=subject,
        )


class _Stop(Exception):
    """The bytes do not read as the schema says: stop walking."""


def _deeper_than(schema: Any, data: memoryview, limit: int) -> bool:
    named = named_types(schema)
    pos = 0
    end = len(data)
    budget = 16 * end + 1024  # steps: values of no bytes (null items of a huge array) cannot loop for ever

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise _Stop
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7

    def skip(n: int) -> None:
        nonlocal pos
        if n < 0 or pos + n > end:
            raise _Stop
        pos += n

    # tasks: ("v", type, depth) reads one value; ("n", type, depth, left, is_map) reads the rest of an array/map block
    tasks: list[tuple[Any, ...]] = [("v", schema, 0)]
    try:
        while tasks:
            budget -= 1
            if budget < 0:
                return False
            task = tasks.pop()
            if task[0] == "n":
                _, items, depth, left, is_map = task
                if left == 0:
                    count = varint()
                    if count == 0:
                        continue
                    if count < 0:
                        count = -count
                        varint()  # the block's size in bytes
                    left = count
                tasks.append(("n", items, depth, left - 1, is_map))
                tasks.append(("v", items, depth))
                if is_map:
                    skip(varint())  # the key
                continue
            _, t, depth = task
            if isinstance(t, str) and t in named:
                t = named[t]
            if isinstance(t, list):
                if depth + 1 > limit:
                    return True
                index = varint()
                if not 0 <= index < len(t):
                    raise _Stop
                tasks.append(("v", t[index], depth + 1))
                continue
            kind = t.get("type") if isinstance(t, dict) else t
            if isinstance(kind, (dict, list)):
                tasks.append(("v", kind, depth))
            elif kind in _PRIMITIVE_SIZES:
                skip(_PRIMITIVE_SIZES[kind])
            elif kind in _VARINTS:
                varint()
            elif kind in _LENGTHS:
                skip(varint())
            elif kind == "fixed":
                skip(int(t["size"]))
            elif kind in ("record", "error"):
                if depth + 1 > limit:
                    return True
                fields = [f["type"] for f in t.get("fields", ())]
                tasks.extend(("v", f, depth + 1) for f in reversed(fields))
            elif kind in ("array", "map"):
                if depth + 1 > limit:
                    return True
                tasks.append(("n", t["items"] if kind == "array" else t["values"], depth + 1, 0, kind == "map"))
            else:
                raise _Stop  # a type this walk does not know: fastavro decides
    except (_Stop, KeyError, TypeError, ValueError):
        return False
    return False
