"""Runs a field plan over one record: encrypts on write, decrypts on read. Shared by the Avro and JSON serdes.

Plans are compiled once per schema into closures, so the hot path is a few dict operations and one AEAD call
per tagged value. On write, containers on the way to a tagged field are copied (the caller's record is never
mutated); on read, the freshly decoded record is updated in place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fieldcrypt import _wire
from fieldcrypt._crypto import CIPHER_ERRORS, DataKey
from fieldcrypt._plan import MISSING, ArrayNode, FieldPlan, Leaf, MapNode, Node, NullableNode, RecordNode, RefNode
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    FieldcryptError,
    KeyNotFoundError,
    KeyShreddedError,
    format_key_id,
)
from fieldcrypt.keyring import Keyring

__all__ = ["Denied", "Erased", "Outcomes", "PlanRunner", "ReadStats", "RecordState"]

Step = Callable[[Any, str, "RecordState"], Any]
_b2a = _wire.encode_text
_a2b = _wire.decode_text
_path_ad = _wire.path_ad
_PATH_MEMO = 4096  # per leaf: associated-data suffixes kept for repeated paths (array slots beyond are computed)
_derive = _wire.derive_nonce
_varint = _wire.varint
_parse = _wire.parse
_INDEX0 = _wire.varint(0)
_ENC_ERRORS: tuple[type[BaseException], ...] = (*CIPHER_ERRORS, UnicodeEncodeError)
_DEC_ERRORS: tuple[type[BaseException], ...] = (*CIPHER_ERRORS, UnicodeDecodeError)
_urandom = os.urandom  # the record nonce source (a module global so wire-format vectors can pin it)


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


@dataclass
class ReadStats:
    """Counters a deserializer keeps (``deserializer.stats``): records with tagged values, encrypted values seen,
    and how many of them were erased or denied. Counts only; never values."""

    records: int = 0
    values: int = 0
    erased: int = 0
    denied: int = 0

    @property
    def readable(self) -> int:
        return self.values - self.erased - self.denied


@dataclass(frozen=True)
class Outcomes:
    """What a deserializer returns for a value it cannot read: erased (key shredded) or denied (no access).

    ``raise``: raise ``KeyShreddedError`` / ``AccessDeniedError`` / ``KeyNotFoundError``; ``null``: None;
    ``placeholder``: the ``placeholder`` text (UTF-8 bytes for bytes fields); ``marker``: an ``Erased`` or ``Denied``
    object. A tampered or moved ciphertext always raises ``DecryptionError``.
    """

    on_erased: str = "null"
    on_denied: str = "raise"
    placeholder: str = "<erased>"

    def __post_init__(self) -> None:
        for name in ("on_erased", "on_denied"):
            if getattr(self, name) not in _MODES:
                raise ConfigurationError(f"fieldcrypt.{name.replace('_', '.')} must be one of {', '.join(_MODES)}")
        if not isinstance(self.placeholder, str):
            raise ConfigurationError("fieldcrypt.placeholder must be a string")

    def apply(self, exc: FieldcryptError, leaf: Leaf, key_id: int, st: RecordState) -> Any:
        erased = isinstance(exc, KeyShreddedError)
        if erased:
            st.erased += 1
        else:
            st.denied += 1
        mode = self.on_erased if erased else self.on_denied
        if mode == "raise":
            raise exc.with_context(subject=st.subject, field_path=leaf.path) from None
        if mode == "null":
            return None
        if mode == "placeholder":
            return self.placeholder if leaf.kind == "string" else self.placeholder.encode()
        return (Erased if erased else Denied)(leaf.path, key_id)


STRICT = Outcomes(on_erased="raise", on_denied="raise")


class RecordState:
    """What one record's values share: subject, default domain, person, keys in use, record nonce and value count."""

    __slots__ = (
        "count",
        "default_domain",
        "denied",
        "erased",
        "keyring",
        "keys",
        "last_key",
        "nonce",
        "outcomes",
        "person",
        "subject",
    )

    def __init__(
        self,
        keyring: Keyring,
        subject: str | None,
        default_domain: str,
        person: str | None,
        outcomes: Outcomes = STRICT,
    ) -> None:
        self.outcomes = outcomes
        self.erased = 0  # read side: values whose key was shredded
        self.denied = 0  # read side: values this consumer has no key for
        self.keyring = keyring
        self.subject = subject
        self.default_domain = default_domain
        self.person = person
        self.keys: dict[str, DataKey] = {}
        self.count = 0  # encrypted values so far: the next value's index (see _wire)
        self.nonce: bytes | None = None  # the record nonce
        self.last_key: DataKey | None = None  # read side: the key of the previous value


class PlanRunner:
    """Encrypts and decrypts records according to one :class:`FieldPlan`."""

    def __init__(self, plan: FieldPlan) -> None:
        self.plan = plan
        self._enc_named: dict[str, Step] = {}
        self._dec_named: dict[str, Step] = {}
        for name, node in plan.named.items():
            self._enc_named[name] = self._enc(node)
            self._dec_named[name] = self._dec(node)
        root = plan.root
        self._root_path = (
            root.name if isinstance(root, RecordNode) else (root.name if isinstance(root, RefNode) else "")
        )
        self._enc_root = self._enc(root) if root is not None else None
        self._dec_root = self._dec(root) if root is not None else None
        self._subject_names = plan.data_subject

    # -- public ------------------------------------------------------------------------------------------------
    def person_of(self, record: Any) -> str | None:
        names = self._subject_names
        if names is None:
            return None
        value = record
        for name in names:
            value = value.get(name) if isinstance(value, dict) else None
        if value is None or value == "" or isinstance(value, bool):
            return None
        return value if isinstance(value, str) else str(value)

    def encrypt(self, record: Any, keyring: Keyring, subject: str | None, default_domain: str) -> Any:
        """A copy of ``record`` with every tagged value encrypted. Raises, and returns nothing, on any failure."""
        if self._enc_root is None:
            return record
        person = self.person_of(record)
        if person is None and self._subject_names is not None:
            raise EncryptionError(
                "the record has no data-subject id, so its per-person key cannot be chosen",
                subject=subject,
                field_path=self.plan.data_subject_path,
            )
        return self._enc_root(record, self._root_path, RecordState(keyring, subject, default_domain, person))

    def decrypt(
        self,
        record: Any,
        keyring: Keyring,
        subject: str | None,
        default_domain: str,
        outcomes: Outcomes = STRICT,
        stats: ReadStats | None = None,
    ) -> Any:
        """Decrypt every tagged value of a freshly decoded record, in place; returns it. Counts into ``stats``."""
        if self._dec_root is None:
            return record
        state = RecordState(keyring, subject, default_domain, self.person_of(record), outcomes)
        out = self._dec_root(record, self._root_path, state)
        if stats is not None:
            stats.records += 1
            stats.erased += state.erased
            stats.denied += state.denied
            stats.values += state.count
        return out

    # -- compilation: write side --------------------------------------------------------------------------------
    def _enc(self, node: Node) -> Step:
        if isinstance(node, Leaf):
            return _enc_leaf(node)
        if isinstance(node, NullableNode):
            child = self._enc(node.child)
            return lambda v, p, st: None if v is None else child(v, p, st)
        if isinstance(node, ArrayNode):
            items = self._enc(node.items)
            return lambda v, p, st: (
                [items(x, f"{p}[{i}]", st) for i, x in enumerate(v)] if isinstance(v, (list, tuple)) else v
            )
        if isinstance(node, MapNode):
            values = self._enc(node.values)
            return lambda v, p, st: (
                {k: values(x, f"{p}[{json.dumps(k)}]", st) for k, x in v.items()} if isinstance(v, dict) else v
            )
        if isinstance(node, RefNode):
            table, name = self._enc_named, node.name  # a recursive type with nothing tagged is not in the table
            return lambda v, p, st: table[name](v, p, st) if name in table else v
        steps = [(s.name, "." + s.name, self._enc(s.node), s.default) for s in node.steps]

        def record(v: Any, p: str, st: RecordState) -> Any:
            if not isinstance(v, dict):
                return v  # not a record: let the schema writer reject it
            out = dict(v)
            for name, suffix, fn, default in steps:
                x = v.get(name, MISSING)
                if x is MISSING:
                    if default is MISSING:
                        continue
                    x = default
                out[name] = fn(x, p + suffix, st)
            return out

        return record

    # -- compilation: read side ---------------------------------------------------------------------------------
    def _dec(self, node: Node) -> Step:
        if isinstance(node, Leaf):
            return _dec_leaf(node)
        if isinstance(node, NullableNode):
            child = self._dec(node.child)
            return lambda v, p, st: None if v is None else child(v, p, st)
        if isinstance(node, ArrayNode):
            items = self._dec(node.items)

            def array(v: Any, p: str, st: RecordState) -> Any:
                for i, x in enumerate(v):
                    v[i] = items(x, f"{p}[{i}]", st)
                return v

            return array
        if isinstance(node, MapNode):
            values = self._dec(node.values)

            def map_(v: Any, p: str, st: RecordState) -> Any:
                for k, x in v.items():
                    v[k] = values(x, f"{p}[{json.dumps(k)}]", st)
                return v

            return map_
        if isinstance(node, RefNode):
            table, name = self._dec_named, node.name
            return lambda v, p, st: table[name](v, p, st) if name in table else v
        steps = [(s.name, "." + s.name, self._dec(s.node)) for s in node.steps]

        def record(v: Any, p: str, st: RecordState) -> Any:
            for name, suffix, fn in steps:
                if name in v:
                    v[name] = fn(v[name], p + suffix, st)
            return v

        return record


def _key_for_write(leaf: Leaf, st: RecordState) -> DataKey:
    """The record's first value in this domain: ask the keyring (the caller found nothing in ``st.keys``)."""
    domain = leaf.domain or st.default_domain
    try:
        key = st.keyring.encryption_key(domain, st.person)
    except FieldcryptError as exc:
        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
    st.keys[domain] = key
    return key


def _renew(leaf: Leaf, st: RecordState, key: DataKey) -> DataKey:
    try:
        renewed = st.keyring.renew(key)
    except FieldcryptError as exc:
        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
    st.keys[leaf.domain or st.default_domain] = renewed
    return renewed


def _enc_leaf(leaf: Leaf) -> Step:
    is_text = leaf.kind == "string"
    expected = str if is_text else bytes
    fixed_domain = leaf.domain
    memo: dict[str, bytes] = {}

    def enc(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None  # the schema writer rejects None where the field is not nullable
        if not isinstance(v, expected):
            raise EncryptionError(
                f"expected a {leaf.kind} value, got {type(v).__name__}", subject=st.subject, field_path=leaf.path
            )
        key = st.keys.get(fixed_domain or st.default_domain) or _key_for_write(leaf, st)
        budget = key.budget
        if budget[0] <= 0:
            key = _renew(leaf, st, key)
            budget = key.budget
        budget[0] -= 1
        index = st.count
        st.count = index + 1
        if index == 0:
            nonce = st.nonce = _urandom(_wire.NONCE_LEN)
            head = key.header + _INDEX0 + nonce
        else:
            nonce = _derive(st.nonce, index)  # type: ignore[arg-type]
            head = key.header + _varint(index)
        pad = memo.get(p) or _remember(memo, p)
        try:
            ct = key.cipher.encrypt(nonce, v.encode("utf-8") if is_text else bytes(v), key.ad_prefix + pad)  # type: ignore[union-attr, arg-type]
        except _ENC_ERRORS:
            raise EncryptionError(
                "the value could not be encrypted", subject=st.subject, field_path=leaf.path, key_id=key.key_id
            ) from None
        return _b2a(head + ct) if is_text else head + ct

    return enc


def _dec_leaf(leaf: Leaf) -> Step:
    is_text = leaf.kind == "string"
    fixed_domain = leaf.domain
    memo: dict[str, bytes] = {}

    def dec(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None
        try:
            key_id, index, record_nonce, body = _parse(_a2b(v) if is_text else v)
        except (ValueError, TypeError, AttributeError):
            raise DecryptionError(
                "the field does not hold a fieldcrypt ciphertext", subject=st.subject, field_path=leaf.path
            ) from None
        st.count += 1
        if record_nonce is not None:
            if st.nonce is not None:
                raise _moved(leaf, st, key_id)  # a record has exactly one value with index 0
            nonce = st.nonce = record_nonce
        elif st.nonce is None:
            raise _moved(leaf, st, key_id)
        else:
            nonce = _derive(st.nonce, index)
        key = st.last_key
        if key is None or key.key_id != key_id:
            try:
                key = st.last_key = st.keyring.decryption_key(key_id)
            except (KeyNotFoundError, AccessDeniedError) as exc:
                return st.outcomes.apply(exc, leaf, key_id, st)
            except FieldcryptError as exc:
                raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
        if key.domain != (fixed_domain or st.default_domain) or key.person != st.person:
            raise _moved(leaf, st, key_id)
        pad = memo.get(p) or _remember(memo, p)
        try:
            pt = key.cipher.decrypt(nonce, body, key.ad_prefix + pad)
            return pt.decode("utf-8") if is_text else pt
        except _DEC_ERRORS:
            raise _moved(leaf, st, key_id) from None

    return dec


def _remember(memo: dict[str, bytes], path: str) -> bytes:
    value = _path_ad(path)
    if len(memo) < _PATH_MEMO:
        memo[path] = value
    return value


def _moved(leaf: Leaf, st: RecordState, key_id: int) -> DecryptionError:
    return DecryptionError(
        "the ciphertext is invalid, was tampered with, or was moved from another field, record, person or subject",
        subject=st.subject,
        field_path=leaf.path,
        key_id=key_id,
    )
