"""fieldcrypt ciphertexts in fields the record's schema does not tag (docs/compatibility.md).

A record written with a schema version that tags ``email`` and re-framed with the id of a version that does not
(same subject, same shape) decodes cleanly, and its ciphertexts would come back as the values of untagged fields.
The deserializers look for such values in every record they read:

1. :func:`candidates` walks the record once, as it is returned (after decryption, so no tagged ciphertext is left
   to look at and nothing is held across decryption), looking only at ``str`` and ``bytes`` values and rejecting
   nearly all of them with a prefix and length test (a value ciphertext starts with its format version, 0x01 or
   0x02: base64 text ``A`` then one of 32 letters). No decoding, no allocation for a record that has none: this is
   the whole cost for almost every record. For an Avro record nothing was decrypted in, a search of the encoded
   payload (in C) skips even the walk when no string there can start like a ciphertext
   (:func:`avro_candidates`).
2. :func:`review`, only when some value passed: its text is decoded (unpadded base64 as string fields carry it,
   padded base64 as JSON ``contentEncoding: base64`` does) and :func:`fieldcrypt.crypto.wire.parse_value` decides
   whether it is a value ciphertext. In a record with tagged values, the record is decoded again as it arrived: a
   candidate that
   decryption changed was a tagged value (its plaintext merely looks like a ciphertext); one it left as it was is
   in an untagged field. The keyring (through its cache) then says whether the key store knows the key it names:
   held, shredded, or held but not for this KEK. A key the store does not know leaves the value alone (a random
   token can parse by chance; so can a ciphertext of another key store, which this one cannot judge).
3. ``fieldcrypt.on.untagged.ciphertext``: ``raise`` (default) refuses the record with a ``DecryptionError`` naming
   subject, field path and key id; ``accept`` returns the value as it is and counts it
   (``stats.untagged_ciphertext``, per field path).

Field paths are the data's shape, never its content, as ``fieldcrypt scan`` writes them: ``$`` the value,
``.name`` a field the schema declares, ``[]`` array items, ``[*]`` map values and undeclared object keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fieldcrypt.core.compiled import compile_screen
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    FieldcryptError,
    KeyCorruptedError,
    KeyNotFoundError,
    KeyShreddedError,
)
from fieldcrypt.keys.source import KeyMeter, KeySource

__all__ = [
    "CONF_KEY",
    "Found",
    "avro_candidates",
    "candidates",
    "declared_names",
    "field_path",
    "fieldcrypts",
    "has_binary",
    "key_id_of",
    "key_known",
    "mode_of",
    "quick",
    "review",
    "value_of",
]

CONF_KEY = "fieldcrypt.on.untagged.ciphertext"
MODES = ("raise", "accept")

#: the first byte of a value ciphertext: its format version (1; 2 is the next format)
_VERSIONS = (1, 2)
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: base64 text of such a value: the first character comes from the version's top 6 bits, the second from its last
#: 2 bits and the key id's first 4 (0x01: Q..f, 0x02: g..v)
_FIRST = frozenset(_B64[b >> 2] for b in _VERSIONS)
_SECOND = frozenset(_B64[((b & 0x03) << 4) | hi] for b in _VERSIONS for hi in range(16))
_FIRST_BYTES = frozenset(_VERSIONS)
#: shorter than any value ciphertext (a version, a key id, an index and a 16-byte GCM tag), and its base64 length
_MIN_BLOB = 16
_MIN_TEXT = (_MIN_BLOB * 4 + 2) // 3
assert len(_FIRST) == 1  # every version below 4 encodes to "A": the walk's range tests rely on one first character
#: the same tests as ranges, one chained comparison each in the walk (a superset: "AQ" <= x < "Aw" also lets through
#: the few ASCII characters between Z and a, which :func:`key_id_of` rejects)
_TEXT_LO = min(_FIRST) + min(_SECOND)
_TEXT_HI = min(_FIRST) + chr(ord(max(_SECOND)) + 1)
_BYTES_LO = bytes((min(_VERSIONS),))
_BYTES_HI = bytes((max(_VERSIONS) + 1,))
#: the Avro payload screen, in C: a string is its UTF-8 bytes verbatim in the payload, so a text ciphertext there
#: contains "A" and its second character. (JSON has none: an escape such as \u0041, or a UTF-16 document, would
#: hide a value from a search of the text, and a sound search costs about what the walk does.)
_AVRO_TEXT = re.compile(f"{min(_FIRST)}[{min(_SECOND)}-{max(_SECOND)}]".encode())

#: (position, value): a position is the keys and indexes from the record to the value; Avro's (name, value) union
#: pairs are not positions of their own
Found = list[tuple[tuple[Any, ...], Any]]


def mode_of(conf: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """``conf`` without ``fieldcrypt.on.untagged.ciphertext`` (a copy: what is left for the other keys), and its
    value. Anything but a mapping is passed on as it is, for the serde's own check."""
    if not isinstance(conf, Mapping) or CONF_KEY not in conf:
        return conf, "raise"
    rest = dict(conf)
    mode = rest.pop(CONF_KEY)
    if mode not in MODES:
        raise ConfigurationError(f"{CONF_KEY} must be one of {', '.join(MODES)}")
    return rest, mode


def quick(v: Any) -> bool:
    """Whether a str or bytes value may be a value ciphertext (the cheap test; :func:`key_id_of` decides)."""
    if type(v) is str:
        return len(v) >= _MIN_TEXT and v[0] in _FIRST and v[1] in _SECOND
    if type(v) is bytes:
        return len(v) >= _MIN_BLOB and v[0] in _FIRST_BYTES
    return False


def candidates(record: Any) -> Found | None:
    """The str and bytes values of a decoded record (JSON document, Avro record) that pass :func:`quick`, with their
    positions; None (the usual answer) when there are none. Iterative: a deeply nested document cannot exhaust the
    stack here."""
    t = type(record)
    if t is dict:  # first, the usual record: scalars only, and no text that starts like a ciphertext
        for x in record.values():
            tx = type(x)
            if tx is str:
                if _TEXT_LO <= x < _TEXT_HI:
                    break
            elif tx is dict or tx is list or tx is tuple or tx is bytes:
                break
        else:
            return None
    elif t is not list and t is not tuple:
        return [((), record)] if quick(record) else None
    found: Found | None = None
    text_lo, text_hi, bytes_lo, bytes_hi, min_text, min_blob = (
        _TEXT_LO,
        _TEXT_HI,
        _BYTES_LO,
        _BYTES_HI,
        _MIN_TEXT,
        _MIN_BLOB,
    )
    stack: list[tuple[Any, tuple[Any, ...]]] = [(record, ())]
    pop, push = stack.pop, stack.append
    while stack:
        v, at = pop()
        t = type(v)
        if t is dict:
            items: Any = v.items()
        elif t is list:
            items = enumerate(v)
        else:  # an Avro union value read with its type name: (name, value), the same position
            if len(v) != 2:
                continue
            x = v[1]
            if quick(x):
                found = found or []
                found.append((at, x))
            elif type(x) in (dict, list, tuple):
                push((x, at))
            continue
        for k, x in items:
            tx = type(x)
            if tx is str:
                if text_lo <= x < text_hi and len(x) >= min_text:
                    if found is None:
                        found = []
                    found.append(((*at, k), x))
            elif tx is bytes:
                if bytes_lo <= x < bytes_hi and len(x) >= min_blob:
                    if found is None:
                        found = []
                    found.append(((*at, k), x))
            elif tx is dict or tx is list or tx is tuple:
                push((x, (*at, k)))
    return found


def avro_candidates(record: Any, payload: bytes, screen: bool) -> Found | None:
    """:func:`candidates` of a decoded Avro record. With ``screen`` (a record nothing was decrypted in, whose schema
    has no ``bytes`` or ``fixed`` value: see :func:`has_binary`), the walk is skipped when the encoded ``payload``
    cannot hold a text ciphertext."""
    if screen and _AVRO_TEXT.search(payload) is None:
        return None
    return candidates(record)


_NUMBERS = frozenset({"int", "long", "float", "double", "boolean", "null"})


def avro_screen(schema: Any) -> Callable[[Any], Found | None]:
    """:func:`candidates` for the records one parsed Avro record schema decodes to (as fastavro's reader gives
    them, record names not returned), without walking every field: plain ``string`` fields are range-tested in one
    expression, fields of primitive number types are skipped (fastavro reads them as numbers, never text), every
    other field is tested as the walk tests it; a record that may hold a candidate is walked whole. Any other schema:
    :func:`candidates` itself."""
    if not isinstance(schema, dict) or schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        return candidates
    texts: list[str] = []
    others: list[str] = []
    for f in schema["fields"]:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            return candidates
        t = f.get("type")
        if t == "string":
            texts.append(f["name"])
        elif not (isinstance(t, str) and t in _NUMBERS):
            others.append(f["name"])
    if len(texts) + len(others) > 64:
        return candidates
    return compile_screen(texts, others, candidates, (_TEXT_LO, _TEXT_HI))


def has_binary(schema: Any) -> bool:
    """Whether a parsed Avro schema may hold ``bytes`` or ``fixed`` values (conservatively: the word anywhere in
    it). Such values are not text in the payload, so the payload screen cannot rule them out."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif node in ("bytes", "fixed"):
            return True
    return False


_GONE = object()


def _at(record: Any, at: tuple[Any, ...]) -> Any:
    """The value at ``at`` (through union pairs), or ``_GONE`` when the record has no such position."""
    v = record
    try:
        for step in at:
            while type(v) is tuple:
                v = v[1]
            v = v[step]
        while type(v) is tuple:
            v = v[1]
    except (LookupError, TypeError):
        return _GONE
    return v


def key_id_of(v: Any) -> int | None:
    """The key id of a value ciphertext held as text (unpadded or padded base64) or bytes, a newer writer's value
    whose feature this release does not read included (its header still names the key); None when ``v`` is not
    one."""
    found = value_of(v)
    if found is None:
        return None
    return found.key_id if isinstance(found, _wire.UnsupportedValue) else found[1]


def value_of(v: Any) -> _wire.Value | _wire.UnsupportedValue | None:
    """A value ciphertext held as text (unpadded or padded base64) or bytes, parsed
    (:func:`fieldcrypt.crypto.wire.parse_value`); a newer writer's value as the ``UnsupportedValue`` it raises; None
    when ``v`` is not one."""
    try:
        if type(v) is str:
            try:
                blob = _wire.decode_text(v)
            except ValueError:
                blob = _wire.decode_base64(v)
        elif type(v) is bytes:
            blob = v
        else:
            return None
        return _wire.parse_value(blob)
    except _wire.UnsupportedValue as exc:
        return exc
    except (ValueError, TypeError):
        return None


def fieldcrypts(values: list[Any], keyring: KeySource | None, meter: KeyMeter | None = None) -> bool | None:
    """Whether the values of one record (its non-null tagged values, and any others that may hold its ciphertexts)
    are fieldcrypt's, where Confluent CSFLE ciphertexts may sit (a record whose writer schema carries an ENCRYPT
    rule); None when none parses as a value ciphertext (:func:`value_of`). Layout alone cannot tell: a CSFLE
    ciphertext's first bytes are random, and about 1 in 256 parses as a fieldcrypt value. They are fieldcrypt's when
    every one parses and together they form one record's encrypted values
    (:func:`fieldcrypt.crypto.wire.forms_record`: a
    fieldcrypt writer's record always does; a CSFLE record with one tagged value about once in 65,536, with more far
    less often), or when one names a key the key store knows (:func:`key_known`). Without a key store (``keyring``
    None) the layout decides, and values of a newer writer's format feature are fieldcrypt's when all are.
    ``KeyStoreUnavailableError`` propagates."""
    parsed = [value_of(v) for v in values]
    found = [p for p in parsed if p is not None]
    if not found:
        return None
    whole = len(found) == len(parsed)
    if whole and _wire.forms_record(found):
        return True
    if keyring is None:
        return whole and all(isinstance(p, _wire.UnsupportedValue) for p in found)
    return any(key_known(keyring, p.key_id if isinstance(p, _wire.UnsupportedValue) else p[1], meter) for p in found)


def key_known(keyring: KeySource, key_id: int, meter: KeyMeter | None = None) -> bool:
    """Whether the key store knows ``key_id``: holds it (readable here, or only under another KEK, or corrupt) or
    shredded it. ``KeyStoreUnavailableError`` (and other failures to ask) propagate: nothing is decided."""
    try:
        keyring.decryption_key(key_id, meter)
    except KeyShreddedError:
        return True
    except KeyNotFoundError:
        return False
    except (AccessDeniedError, KeyCorruptedError):
        return True
    return True


def declared_names(schema: Any) -> frozenset[str]:
    """Every field name an Avro schema declares (``fields``) and every property a JSON schema declares
    (``properties``), anywhere in it: names from the schema text, never data."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            fields = node.get("fields")
            if isinstance(fields, list):
                found.update(f["name"] for f in fields if isinstance(f, dict) and isinstance(f.get("name"), str))
            props = node.get("properties")
            if isinstance(props, dict):
                found.update(k for k in props if isinstance(k, str))
            stack.extend(v for k, v in node.items() if k not in ("default", "const", "enum", "examples"))
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(found)


def field_path(at: tuple[Any, ...], names: frozenset[str]) -> str:
    """The printable path of a position: declared names shown, data keys as ``[*]``, indexes as ``[]``."""
    out = ["$"]
    for step in at:
        if isinstance(step, str):
            out.append(f".{step}" if step in names else "[*]")
        else:
            out.append("[]")
    return "".join(out)


def review(
    found: Found,
    keyring: KeySource,
    meter: KeyMeter | None,
    subject: str | None,
    schema: Any,
    mode: str,
    original: Callable[[], Any] | None = None,
) -> list[str] | None:
    """The candidates ``found`` in a record as it is returned (decrypted): a value ciphertext in an untagged field,
    of a key the store knows, raises a ``DecryptionError`` (``mode`` raise), or has its field path returned to be
    counted (``mode`` accept). ``schema``: the writer's schema (Avro or JSON), for field names. ``original``: for a
    record whose tagged values were decrypted, decodes it again as it arrived; a candidate is in an untagged field
    only if that copy holds the same value there (decryption changes every value it reads: a tagged value whose
    plaintext happens to be a ciphertext is not judged). Called only when a candidate parses, which is rare."""
    parsed = [(at, v, key_id) for at, v in found if (key_id := key_id_of(v)) is not None]
    if not parsed:
        return None
    if original is not None:
        before = original()
        parsed = [(at, v, key_id) for at, v, key_id in parsed if _same(_at(before, at), v)]
    names: frozenset[str] | None = None
    paths: list[str] | None = None
    for at, _, key_id in parsed:
        if names is None:
            names = declared_names(schema)
        path = field_path(at, names)
        try:
            known = key_known(keyring, key_id, meter)
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject, field_path=path) from exc
        if not known:
            continue
        if mode != "accept":
            raise DecryptionError(
                "the record's schema does not tag this field, but it holds a fieldcrypt ciphertext of a key this key "
                "store knows (a record re-framed with the id of a schema version without the tag?); set "
                f"{CONF_KEY}=accept to read such values as they are, counted",
                subject=subject,
                field_path=path,
                key_id=key_id,
            )
        if paths is None:
            paths = []
        paths.append(path)
    return paths


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
