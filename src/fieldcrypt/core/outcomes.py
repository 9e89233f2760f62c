"""What a deserializer returns for a value it cannot read: the outcomes (``fieldcrypt.on.erased``, ``on.denied``,
``on.plaintext``, the placeholder) and the markers ``fieldcrypt.Erased`` / ``fieldcrypt.Denied``. Apart from the
engine that applies them, so ``import fieldcrypt`` needs no plan, schema or confluent-kafka code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fieldcrypt.crypto import wire as _wire
from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyShreddedError, format_key_id

if TYPE_CHECKING:
    from fieldcrypt.core.plan import Leaf

__all__ = ["STRICT", "Denied", "Erased", "Outcomes"]


class Counts(Protocol):
    """What :meth:`Outcomes.apply` reads and counts on a record's engine state."""

    subject: str | None
    erased: int
    denied: int
    stood_in: int
    #: (erased, field path) of each unreadable value, for the per-field counters
    unreadable: list[tuple[bool, str]] | None


class _Unreadable:
    """A value a consumer cannot read, returned instead of it when the deserializer is configured with "marker"."""

    __slots__ = ("field_path", "key_id")
    kind = "unreadable"

    def __init__(self, field_path: str, key_id: int) -> None:
        self.field_path = field_path
        self.key_id = key_id

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        assert isinstance(other, _Unreadable)
        return (other.field_path, other.key_id) == (self.field_path, self.key_id)

    def __hash__(self) -> int:
        return hash((type(self), self.field_path, self.key_id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(field_path={self.field_path!r}, key_id={format_key_id(self.key_id)})"


class Erased(_Unreadable):
    """The value's key was shredded: the value is erased, everywhere, for good."""

    kind = "erased"


class Denied(_Unreadable):
    """This consumer has no access to the value's key (unknown id in its key store, or a KEK that cannot unwrap)."""

    kind = "denied"


_MODES = ("raise", "null", "placeholder", "marker")
_STAND_INS = ("null", "placeholder")


@dataclass(frozen=True)
class Outcomes:
    """What a deserializer returns for a value it cannot read: erased (key shredded) or denied (no access).

    ``raise``: raise ``KeyShreddedError`` / ``AccessDeniedError`` / ``KeyNotFoundError``; ``null``: None where the
    schema admits null at the value's position (``Leaf.nullable``, and the reader schema's where ``reader_nulls``
    says), else the placeholder (always at the root: a None record would read as a tombstone); ``placeholder``:
    the placeholder; ``marker``: an ``Erased`` or ``Denied`` object (never valid against the schema: for code that
    inspects each value). The placeholder is the ``placeholder``
    text as the field's type holds it (:meth:`stand_in`). ``null`` and ``placeholder`` keep the record valid
    against its schema; a record where a stand-in could not (shorter than a JSON ``minLength``; in an array whose
    ``uniqueItems`` or ``contains`` judges its items together, :func:`_array`) is a ``ConfigurationError`` naming
    the field, and records without unreadable values there read as usual. A tampered or moved ciphertext always
    raises ``DecryptionError``.
    """

    on_erased: str = "null"
    on_denied: str = "raise"
    placeholder: str = "<erased>"
    #: the placeholder of a denied value: never the erased one, so no reader takes "no access" for an erasure
    denied_placeholder: str = "<denied>"
    #: ``raise``: a tagged field holding plaintext is a DecryptionError; ``accept``: it is returned as it is (and
    #: counted), unless another tagged value of the same record is a fieldcrypt ciphertext
    on_plaintext: str = "raise"
    #: the lowest value format version read (``fieldcrypt.min.format.version``); older values raise
    #: ``UnsupportedFormatError``
    min_version: int = 1
    #: the record is returned in a reader schema's shape (Avro schema resolution, a JSON reader schema): the writer's
    #: value paths at which the reader's schema admits null too (None: no reader schema, the writer's decides)
    reader_nulls: frozenset[str] | None = None
    #: (value path, minLength) where a JSON reader schema asks more of a placeholder than the writer's
    reader_min_lengths: frozenset[tuple[str, int]] = frozenset()

    def __post_init__(self) -> None:
        if type(self.min_version) is not int or self.min_version not in _wire.FORMAT_VERSIONS:
            raise ConfigurationError(
                f"fieldcrypt.min.format.version must be one of {', '.join(map(str, _wire.FORMAT_VERSIONS))}"
            )
        if self.on_plaintext not in ("raise", "accept"):
            raise ConfigurationError("fieldcrypt.on.plaintext must be raise or accept")
        for name in ("on_erased", "on_denied"):
            if getattr(self, name) not in _MODES:
                raise ConfigurationError(f"fieldcrypt.{name.replace('_', '.')} must be one of {', '.join(_MODES)}")
        for name, text in (("placeholder", self.placeholder), ("denied.placeholder", self.denied_placeholder)):
            if not isinstance(text, str):
                raise ConfigurationError(f"fieldcrypt.{name} must be a string")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    f"fieldcrypt.{name} must be valid Unicode (it holds a lone surrogate)"
                ) from None
        if self.placeholder == self.denied_placeholder:
            raise ConfigurationError(
                "fieldcrypt.placeholder and fieldcrypt.denied.placeholder must differ: an erased value and one this "
                "consumer may not read are different outcomes"
            )

    @property
    def stands_in(self) -> bool:
        """Whether a value may be replaced by null or the placeholder (a ``null`` or ``placeholder`` mode)."""
        return self.on_erased in _STAND_INS or self.on_denied in _STAND_INS

    def stand_in(self, kind: str, *, denied: bool = False) -> Any:
        """The placeholder as a field of ``kind`` holds it: the text (string); its UTF-8 bytes (Avro bytes); the
        base64 of its UTF-8 bytes (a JSON string with ``contentEncoding: base64``, whose readable values are returned
        as base64 text too). One rule: a reader decoding the field gets the placeholder's UTF-8 bytes."""
        text = self.denied_placeholder if denied else self.placeholder
        if kind == "string":
            return text
        if kind == "bytes":
            return text.encode("utf-8")
        if kind == "base64":
            return _wire.encode_base64(text.encode("utf-8"))
        raise AssertionError(f"unknown leaf kind {kind!r}")

    def apply(self, exc: FieldcryptError, leaf: Leaf, key_id: int, st: Counts) -> Any:
        erased = isinstance(exc, KeyShreddedError)
        if erased:
            st.erased += 1
        else:
            st.denied += 1
        if st.unreadable is None:
            st.unreadable = []
        st.unreadable.append((erased, leaf.path))
        mode = self.on_erased if erased else self.on_denied
        if mode == "raise":
            raise exc.with_context(subject=st.subject, field_path=leaf.path) from None
        if mode == "marker":
            return (Erased if erased else Denied)(leaf.path, key_id)
        st.stood_in += 1
        if mode == "null" and leaf.nullable and (self.reader_nulls is None or leaf.path in self.reader_nulls):
            return None
        value = self.stand_in(leaf.kind, denied=not erased)
        need = max([leaf.min_length, *(n for p, n in self.reader_min_lengths if p == leaf.path)])
        if need and leaf.kind != "bytes" and len(value) < need:
            raise ConfigurationError(
                f"fieldcrypt.{'placeholder' if erased else 'denied.placeholder'} is shorter"
                f"{' once base64-encoded' if leaf.kind == 'base64' else ''} "
                f"({len(value)} characters) than the field's minLength ({need}), so this record, with an "
                f"unreadable value there, would not match its schema: set a longer fieldcrypt.placeholder, or "
                "fieldcrypt.on.erased / fieldcrypt.on.denied to raise or marker",
                subject=st.subject,
                field_path=leaf.path,
                key_id=key_id,
            )
        return value


STRICT = Outcomes(on_erased="raise", on_denied="raise")
