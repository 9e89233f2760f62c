"""The byte layout of one encrypted value, and the associated data that binds it to its context.

This is the only module that knows the layout. Writers write version 2 unless pinned to 1
(``fieldcrypt.format.version``); readers read both, unless ``fieldcrypt.min.format.version`` is 2.

Format version 2::

    offset  size   content
    0       1      format version, 0x02
    1       1      flags: bits 0-1 mode (0: record-bound AES-256-GCM; 1: deterministic AES-SIV, below), bit 2
                   (0x04): the value carries a masked view, bits 3-7 zero. This release writes and reads flags 0x00,
                   0x04 and 0x01; any other value is refused as a feature of a newer writer (docs/wire-format.md)
    2       4      key id, unsigned big-endian
    6       1..5   value index i in the record, unsigned LEB128
    ...     12     only when i == 0: the record nonce N, 96 random bits
    ...     4      only when i == 0: n, the number of record-bound values in the record, unsigned big-endian
    -- only when flags bit 2 is set: the masked view --
    ...     1..5   v, the length of the view's sealed text below, unsigned LEB128 (minimal; v >= 16)
    ...     4      view key id, unsigned big-endian: a data key of the key domain "<domain>/masked", same person
    ...     v      AES-256-GCM ciphertext and tag of the masked text (UTF-8) under the view key
    -- then, as without a view --
    ...     m      AES-256-GCM ciphertext of the value
    ...     16     AES-GCM tag

    total: m + 40 bytes for the first encrypted value of a record, m + 23 for each later one (i < 128); a view adds
    len(varint(v)) + 4 + v bytes, v = len(masked text) + 16

Deterministic values (flags 0x01: joins, grouping, record keys)::

    offset  size   content
    0       1      0x02
    1       1      0x01
    2       4      key id: a data key of the key domain "<domain>/det" (AES-256-SIV), same person
    6       16     the synthetic IV (RFC 5297)
    22      m      the AES-SIV ciphertext of the value

    total: m + 22 bytes

No index, no nonce, and not counted in n: equal plaintexts under one key give equal values, in any record, field
or topic. Associated data (one component): ``b"fieldcrypt" 0x02 | 0x01 | key id (4) | lp(domain)``, the key's own
domain (``<domain>/det``); the person is bound by the key (each person's own), which a reader requires to be the
record's data subject. Not the schema identity or the value path, so a value joins across subjects and
differently named fields of one domain; moving it to another field of the same domain and person is not detected
(docs/wire-format.md says what that allows).

Associated data of a view: the value's own associated data (below, with the flags byte 0x04) followed by
``b"view"``. Its nonce is the value's own (``N`` or ``N XOR i``): the view key is a key of a ``/masked`` domain,
which encrypts views only (no value is ever written under such a domain), one view per value, so a (view key,
nonce) pair repeats only if a record nonce does, the bound the values themselves have. The view comes before the
value's ciphertext so that a reader finds where that ciphertext begins without knowing its length.

Associated data, version 2::

    b"fieldcrypt" 0x02 | flags (1) | key id (4) | lp(domain) | lp(person) | lp(schema identity) | n (4)
                       | lp(value path)

The schema identity binds a JSON value to its schema (``$id``, else ``title``, else the default key domain: the
subject or ``fieldcrypt.domain``), as an Avro value is bound by its path, which starts at the record's full name
(the identity of an Avro record schema is empty; other Avro roots bind the default key domain). A reader requires
value i at position i of the record (in the order below) and exactly n values: dropping, nulling or adding a value
is detected. Every value binds n (value 0 carries it), so
an altered n fails every value a reader can authenticate, even when value 0's own key is shredded.

Format version 1 (read; written only when pinned)::

    offset  size   content
    0       1      format version, 0x01
    1       4      key id, unsigned big-endian: names the data key (DEK) in the key store
    5       1..5   value index i in the record, unsigned LEB128 (0 for the record's first encrypted value)
    ...     12     only when i == 0: the record nonce N, 96 random bits
    ...     n      AES-256-GCM ciphertext of the value: UTF-8 for strings, raw for bytes
    ...     16     AES-GCM tag

    total: n + 34 bytes for the first encrypted value of a record, n + 22 for each later one (i < 128)

The record's encrypted values are numbered 0, 1, 2, ... in schema order (arrays and maps in element order).
Value i is encrypted with nonce ``N XOR i`` (i xor-ed into the last 4 bytes of N, big-endian). N is fresh
random per record, so a (key, nonce) pair never repeats within the limits of random 96-bit nonces (the same
bound as one random nonce per value), and no later value can be decrypted outside its own record: moving a
ciphertext into another record gives it that record's N, and the GCM tag fails.

An Avro/JSON ``bytes`` value holds these bytes as they are. A ``string`` value holds them as standard base64
text without padding, so the record stays valid against the registered schema and readable without keys.
The layout never depends on configuration: the header always names the key, whatever the key scope.

Associated data, version 1 (never transmitted; each side computes it from what it knows)::

    b"fieldcrypt" 0x01 | key id (4) | lp(domain) | lp(person) | lp(value path)

``lp(x)`` is a 4-byte big-endian length then the UTF-8 bytes; an absent person is the length 0xFFFFFFFF with no
bytes. The value path is the concrete path of the value in the record (``bench.Event.items[2].email``, map
keys JSON-quoted), so a ciphertext moved to another field, array slot or map entry fails. Domain and person are
those the reader expects from its subject and from the record's data-subject field, so a ciphertext moved to
another subject or person fails.
"""

from __future__ import annotations

import binascii
import struct

__all__ = [
    "DETERMINISTIC",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "LATEST_VERSION",
    "NONCE_LEN",
    "SIV_LEN",
    "TAG_LEN",
    "VIEW",
    "VIEW_AD",
    "DeterministicValue",
    "UnsupportedValue",
    "ad_prefix",
    "ad_prefix_v2",
    "count_field",
    "decode_base64",
    "decode_text",
    "derive_nonce",
    "deterministic_ad",
    "deterministic_header",
    "encode_base64",
    "encode_text",
    "forms_record",
    "is_deterministic",
    "key_header",
    "key_header_v2",
    "lp",
    "parse",
    "parse_deterministic",
    "parse_value",
    "path_ad",
    "varint",
    "view_part",
    "with_view",
]

FORMAT_VERSION = 1  # of key_header / parse / ad_prefix: version 1
#: version-2 flags bit 2: the value carries a masked view
VIEW = 0x04
#: what a view's associated data appends to its value's
VIEW_AD = b"view"
LATEST_VERSION = 2
FORMAT_VERSIONS = (1, 2)
NONCE_LEN = 12
COUNT_LEN = 4
TAG_LEN = 16
MAX_INDEX = 0xFFFFFFFF

_LEN = struct.Struct(">I")
_pack_len = _LEN.pack
_AD_MAGIC = b"fieldcrypt\x01"
_NO_PERSON = b"\xff\xff\xff\xff"


def lp(data: bytes) -> bytes:
    """Length-prefixed bytes, as every variable part of the associated data is written."""
    return _pack_len(len(data)) + data


def _varint(i: int) -> bytes:
    out = bytearray()
    while True:
        byte = i & 0x7F
        i >>= 7
        if i:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_VARINTS = [_varint(i) for i in range(1024)]


def varint(i: int) -> bytes:
    """Unsigned LEB128 of a value index."""
    return _VARINTS[i] if i < 1024 else _varint(i)


def key_header(key_id: int) -> bytes:
    """The first 5 bytes of every value a key encrypts: version and key id."""
    return bytes((FORMAT_VERSION,)) + _LEN.pack(key_id)


def derive_nonce(record_nonce: bytes, index: int) -> bytes:
    """The nonce of value ``index``: the record nonce with ``index`` xor-ed into its last 4 bytes."""
    return record_nonce[:8] + _pack_len(_LEN.unpack_from(record_nonce, 8)[0] ^ index)


_MIN_LEN = 6 + TAG_LEN
_MIN_LEN_FIRST = _MIN_LEN + NONCE_LEN
_unpack_key_id = struct.Struct(">I").unpack_from


def parse(blob: bytes) -> tuple[int, int, bytes | None, bytes]:
    """Split a value ciphertext into (key id, value index, record nonce or None, GCM body).

    The record nonce is present for index 0 only. Reads versions 1 and 2 (:func:`parse_value` says which, and
    more); raises ``ValueError`` if ``blob`` is neither.
    """
    if blob[:1] == b"\x02":
        value = parse_value(blob)  # (a masked view is skipped: the body is the value's own)
        return value[1], value[2], value[3], value[5]
    if len(blob) < _MIN_LEN or blob[0] != FORMAT_VERSION:
        raise ValueError("not a fieldcrypt value ciphertext")
    key_id: int = _unpack_key_id(blob, 1)[0]
    index = blob[5]
    if index == 0:
        if len(blob) < _MIN_LEN_FIRST:
            raise ValueError("not a fieldcrypt value ciphertext")
        return key_id, 0, blob[6:18], blob[18:]
    if index < 0x80:
        return key_id, index, None, blob[6:]
    index, pos = _index(blob, 5)
    if len(blob) - pos < TAG_LEN:
        raise ValueError("not a fieldcrypt value ciphertext")
    return key_id, index, None, blob[pos:]


def ad_prefix(key_id: int, domain: str, person: str | None) -> bytes:
    """The part of the associated data shared by every value one key encrypts (all but the path)."""
    who = _NO_PERSON if person is None else lp(person.encode("utf-8"))
    return _AD_MAGIC + _LEN.pack(key_id) + lp(domain.encode("utf-8")) + who


def path_ad(path: str) -> bytes:
    """The last part of a value's associated data, ``lp(path)``; the whole is ``ad_prefix(...) + path_ad(path)``."""
    raw = path.encode("utf-8")
    return _pack_len(len(raw)) + raw


def encode_text(blob: bytes) -> str:
    """Text form of a value ciphertext for ``string`` fields: standard base64 without padding."""
    return binascii.b2a_base64(blob, newline=False).rstrip(b"=").decode("ascii")


_PAD = ("", "", "==", "=")


def decode_text(text: str) -> bytes:
    """Inverse of :func:`encode_text`. Raises ``ValueError`` on anything but canonical unpadded base64: the one
    spelling ``encode_text`` gives (unused low bits zero), so no altered character decodes to the same bytes.
    (A value that is not a ``str`` raises ``TypeError`` or ``ValueError``.)"""
    n = len(text) % 4
    # unused low bits set, or padding: not encode_text's spelling
    if n == 1 or (n and text[-1] not in _CANONICAL_LAST[n]) or "=" in text:
        raise ValueError("not a fieldcrypt value ciphertext")
    try:
        return binascii.a2b_base64((text + _PAD[n]).encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not a fieldcrypt value ciphertext") from exc


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: by len % 4: the characters a canonical last character can be (the bits that carry no data are zero)
_CANONICAL_LAST: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset(),
    frozenset(c for i, c in enumerate(_B64) if not i & 0x0F),
    frozenset(c for i, c in enumerate(_B64) if not i & 0x03),
)


def encode_base64(blob: bytes) -> str:
    """Standard padded base64 (RFC 4648), for JSON strings with ``contentEncoding: base64``."""
    return binascii.b2a_base64(blob, newline=False).decode("ascii")


def decode_base64(text: str) -> bytes:
    """Inverse of :func:`encode_base64`; canonical padded base64 only, else ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    try:
        blob = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64 text") from exc
    if encode_base64(blob) != text:
        raise ValueError("not canonical base64 text")
    return blob


# -- version 2 ---------------------------------------------------------------------------------------------------
_AD_MAGIC_V2 = b"fieldcrypt\x02"
_RECORD_BOUND = 0x00
#: v2 flags this release writes and reads: record-bound values (mode 0), with or without a masked view (bit 2);
#: deterministic values (mode 1) have their own layout (:func:`parse_deterministic`)
_KNOWN_FLAGS = frozenset({_RECORD_BOUND, VIEW})
#: the flags of a deterministic value
DETERMINISTIC = 0x01
SIV_LEN = 16


class UnsupportedValue(ValueError):
    """A well-formed value header of a format version or feature this reader does not read (a newer writer).
    ``key_id``: the key the header names (version 2 fixes where it is, whatever the flags)."""

    def __init__(self, message: str, key_id: int) -> None:
        super().__init__(message)
        self.key_id = key_id


class DeterministicValue(UnsupportedValue):
    """Raised by :func:`parse_value` for a deterministic value (flags 0x01): it has no index, nonce or count (read it
    with :func:`parse_deterministic`), and is no part of the record's binding (:func:`forms_record` leaves it out)."""


#: a parsed value ciphertext: (version, key id, index, record nonce or None, count n or None, GCM body, view or
#: None), the view as (view key id, its GCM body)
Value = tuple[int, int, int, "bytes | None", "int | None", bytes, "tuple[int, bytes] | None"]


def key_header_v2(key_id: int, flags: int = _RECORD_BOUND) -> bytes:
    """The first 6 bytes of every version-2 value a key encrypts: version, flags and key id."""
    return bytes((2, flags)) + _LEN.pack(key_id)


def view_part(view_key_id: int, sealed: bytes) -> bytes:
    """The masked view as a value carries it (flags bit 2), before the value's own ciphertext: v, the view key id,
    and ``sealed`` (the view's GCM ciphertext and tag, v bytes)."""
    return varint(len(sealed)) + _LEN.pack(view_key_id) + sealed


def with_view(header_or_ad_prefix: bytes) -> bytes:
    """A version-2 key header (:func:`key_header_v2`) or associated-data prefix (:func:`ad_prefix_v2`) written with
    flags 0x00, with the flags byte set to :data:`VIEW` instead."""
    at = 1 if header_or_ad_prefix[:1] == b"\x02" else len(_AD_MAGIC_V2)
    if header_or_ad_prefix[at] != _RECORD_BOUND:
        raise ValueError("not a version-2 header or associated-data prefix of flags 0x00")
    return header_or_ad_prefix[:at] + bytes((VIEW,)) + header_or_ad_prefix[at + 1 :]


def deterministic_header(key_id: int) -> bytes:
    """The first 6 bytes of a deterministic value: version 2, flags 0x01, key id."""
    return key_header_v2(key_id, DETERMINISTIC)


def deterministic_ad(key_id: int, domain: str) -> bytes:
    """The associated data of a deterministic value: magic, flags 0x01, key id and the key's domain. The person is
    bound by the key itself (each person's deterministic key is their own, and a reader requires the key's person to
    be the record's data subject), so a reader that learns the person from the value (a record key) can check it."""
    return _AD_MAGIC_V2 + bytes((DETERMINISTIC,)) + _LEN.pack(key_id) + lp(domain.encode("utf-8"))


def is_deterministic(blob: bytes) -> bool:
    """Whether ``blob`` has a deterministic value's header (version 2, flags 0x01): say so before :func:`parse`,
    which reads record-bound values only."""
    return blob[:2] == b"\x02\x01"


def parse_deterministic(blob: bytes) -> tuple[int, bytes]:
    """(key id, AES-SIV output) of a deterministic value; ``ValueError`` if ``blob`` is not one."""
    if len(blob) < 6 + SIV_LEN or not is_deterministic(blob):
        raise ValueError("not a deterministic fieldcrypt value")
    return _unpack_key_id(blob, 2)[0], blob[6:]


def count_field(count: int) -> bytes:
    """n, as value 0 of a version-2 record carries it (and binds it in its associated data)."""
    return _LEN.pack(count)


def ad_prefix_v2(key_id: int, domain: str, person: str | None, flags: int = _RECORD_BOUND) -> bytes:
    """Version 2: the part of the associated data shared by every value one key encrypts (all but identity, path
    and, for value 0, the count)."""
    who = _NO_PERSON if person is None else lp(person.encode("utf-8"))
    return _AD_MAGIC_V2 + bytes((flags,)) + _LEN.pack(key_id) + lp(domain.encode("utf-8")) + who


def _index(blob: bytes, pos: int) -> tuple[int, int]:
    """A minimal unsigned LEB128 at ``pos``: (value, position after it)."""
    index, shift = 0, 0
    while True:
        if pos >= len(blob) or shift > 28:
            raise ValueError("not a fieldcrypt value ciphertext")
        byte = blob[pos]
        pos += 1
        index |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if index > MAX_INDEX or (byte == 0 and shift):  # a zero last byte after the first: non-minimal encoding
        raise ValueError("not a fieldcrypt value ciphertext")
    return index, pos


def parse_value(blob: bytes) -> Value:
    """Split a value ciphertext of any version this release reads into (version, key id, index, record nonce or
    None, count or None, GCM body); nonce and count come with index 0 only (the count in version 2 only). Raises
    ``UnsupportedValue`` for a version-2 value with flags it does not read, ``ValueError`` for anything that is not
    a value ciphertext."""
    n = len(blob)
    if n >= _MIN_LEN_V2 and blob[0] == 2 and blob[1] == 0 and blob[6] < 0x80:  # the common case, without a call
        index = blob[6]
        if index:
            return 2, _unpack_key_id(blob, 2)[0], index, None, None, blob[7:], None
        if n >= _MIN_LEN_V2_FIRST:
            return 2, _unpack_key_id(blob, 2)[0], 0, blob[7:19], _unpack_key_id(blob, 19)[0], blob[23:], None
        raise ValueError("not a fieldcrypt value ciphertext")
    if not n:
        raise ValueError("not a fieldcrypt value ciphertext")
    if blob[0] == 1:
        key_id, index, first, body = parse(blob)
        return 1, key_id, index, first, None, body, None
    if blob[0] != 2 or n < _MIN_LEN_V2:
        raise ValueError("not a fieldcrypt value ciphertext")
    flags = blob[1]
    if flags == DETERMINISTIC:  # (its own layout: parse_deterministic)
        raise DeterministicValue("a deterministic value", _unpack_key_id(blob, 2)[0])
    if flags not in _KNOWN_FLAGS:
        if flags & 0xF8 or flags & 0x03 == 0x03:
            raise ValueError("not a fieldcrypt value ciphertext")  # bits no version 2 writer sets
        raise UnsupportedValue("a format-2 value feature this reader does not read", _unpack_key_id(blob, 2)[0])
    key: int = _unpack_key_id(blob, 2)[0]
    index, pos = _index(blob, 6)
    nonce: bytes | None = None
    count: int | None = None
    if index == 0:
        end = pos + NONCE_LEN + COUNT_LEN
        if n < end + TAG_LEN:
            raise ValueError("not a fieldcrypt value ciphertext")
        # n is authenticated by the values themselves: an altered n (0 included) fails their tags, as tampering
        nonce, count, pos = blob[pos : pos + NONCE_LEN], _unpack_key_id(blob, pos + NONCE_LEN)[0], end
    view: tuple[int, bytes] | None = None
    if flags & VIEW:
        length, pos = _index(blob, pos)
        start = pos + 4
        if length < TAG_LEN or n < start + length:
            raise ValueError("not a fieldcrypt value ciphertext")
        view, pos = (_unpack_key_id(blob, pos)[0], blob[start : start + length]), start + length
    if n - pos < TAG_LEN:
        raise ValueError("not a fieldcrypt value ciphertext")
    return 2, key, index, nonce, count, blob[pos:], view


_MIN_LEN_V2 = 7 + TAG_LEN  # header (version, flags, key id), a one-byte index, the tag
_MIN_LEN_V2_FIRST = _MIN_LEN_V2 + NONCE_LEN + COUNT_LEN


def forms_record(values: list[Value | UnsupportedValue]) -> bool:
    """Whether parsed values can be the encrypted values of one record as a reader requires them, order aside: one
    format version, indexes 0 to m-1 each once (value 0 carrying the record nonce) and, in version 2, the count m in
    value 0. False when a value is of a format feature this reader does not read (its layout past the key id is not
    known). A value whose first bytes are random (a Confluent CSFLE ciphertext) parses as a value in about 1 case in
    256; a record of such values forms one far less often (a single value: about 1 in 65,536, index 0 of version 1).
    """
    bound = [v for v in values if not isinstance(v, DeterministicValue)]  # deterministic values bind no record
    if not bound and values:
        return True
    parsed = [v for v in bound if not isinstance(v, UnsupportedValue)]
    if not parsed or len(parsed) != len(bound):
        return False
    version = parsed[0][0]
    if any(v[0] != version for v in parsed) or sorted(v[2] for v in parsed) != list(range(len(parsed))):
        return False
    return version != 2 or next(v[4] for v in parsed if v[2] == 0) == len(parsed)
