"""Runs a field plan over one record: encrypts on write, decrypts on read. Shared by the Avro and JSON serdes.

Plans are compiled once per schema into closures, so the hot path is a few dict operations and one AEAD call
per tagged value. On write, containers on the way to a tagged field are copied (the caller's record is never
mutated); on read, the freshly decoded record is updated in place.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

from fieldcrypt.core import compiled as _compiled
from fieldcrypt.core.masks import MaskError, apply_mask, get_mask, view_domain
from fieldcrypt.core.outcomes import STRICT, Denied, Erased, Outcomes
from fieldcrypt.core.plan import (
    MISSING,
    ArrayNode,
    ChoiceNode,
    FieldPlan,
    Leaf,
    MapNode,
    Node,
    NullableNode,
    RecordNode,
    RefNode,
    UnionNode,
)
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.crypto.cipher import CIPHER_ERRORS, DataKey
from fieldcrypt.errors import (
    AccessDeniedError,
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    FieldcryptError,
    KeyNotFoundError,
    KeyShreddedError,
    UnsupportedFormatError,
)
from fieldcrypt.keys import _loop
from fieldcrypt.keys.source import KeySource
from fieldcrypt.keys.store import DET_SUFFIX, companion_of
from fieldcrypt.observe.stats import SerdeStats

__all__ = ["Denied", "Erased", "Outcomes", "PlanRunner", "ReadStats", "RecordState"]

Step = Callable[[Any, str, "RecordState"], Any]
_b2a = _wire.encode_text
_a2b = _wire.decode_text
_path_ad = _wire.path_ad
_PATH_MEMO = 4096  # per leaf: associated-data suffixes kept for repeated paths (array slots beyond are computed)
_derive = _wire.derive_nonce
_varint = _wire.varint
_parse = _wire.parse_value
_count_field = _wire.count_field
_INDEX0 = _wire.varint(0)
_compiled_slow = _compiled.SLOW
_ENC_ERRORS: tuple[type[BaseException], ...] = (*CIPHER_ERRORS, UnicodeEncodeError)
_DEC_ERRORS: tuple[type[BaseException], ...] = (*CIPHER_ERRORS, UnicodeDecodeError)
_urandom = os.urandom  # the record nonce source (a module global so wire-format vectors can pin it)


#: the counters of a deserializer, before serializers kept the same ones (``fieldcrypt.SerdeStats``)
ReadStats = SerdeStats


#: the reason of the DecryptionError for a tagged value that is no fieldcrypt ciphertext at all
NOT_A_CIPHERTEXT = "the field does not hold a fieldcrypt ciphertext"


class RecordState:
    """What one record's values share: subject, default domain, person, keys in use, record nonce and value count;
    and its counts (values, outcomes, key lookups), added to the serde's ``SerdeStats`` once the record is done.
    It is the keyring's ``KeyMeter`` for the record's lookups.

    One is made per record: the attributes every record sets are slots set here; the others are class-level
    defaults, set on the instance (its ``__dict__``) only by the records that need them (a record read with an
    erased value, a masked view, the general walker's pending values...)."""

    __slots__ = (
        "__dict__",
        "count",
        "default_domain",
        "ident",
        "keyring",
        "keys",
        "lookups",
        "misses",
        "nonce",
        "outcomes",
        "person",
        "stats",
        "subject",
    )

    # rarely set: class-level defaults (immutable; a record that needs one sets its own)
    erased = 0  # read side: values whose key was shredded
    denied = 0  # read side: values this consumer has no key for
    stood_in = 0  # read side: of them, values null or the placeholder replaced (Outcomes.apply)
    deterministic = 0  # deterministic values so far (not record-bound: no index, not in the count)
    last_key: DataKey | None = None  # read side: the key of the previous value
    last_missing: int | None = None  # read side: the id of the previous value's key when it was unreadable
    plain: list[str] | None = None  # read side: paths of tagged values accepted as plaintext
    unreadable: list[tuple[bool, str]] | None = None  # read side: (erased, path) of unreadable values
    masked: list[str] | None = None  # read side: paths of values read as their masked view
    view_ids: set[int] | None = None  # read side: the view keys looked up (one lookup counted per key)
    seen: list[tuple[str, Any]] | None = None  # tagged_values: (path, value) of each tagged value, as it is
    version = _wire.LATEST_VERSION  # write side: the format written; read side: of the record's values
    pending: list[_Pending] | None = None  # version 2, write side: values sealed once the count is known
    total: int | None = None  # version 2, read side: the count value 0 carries

    def __init__(
        self,
        keyring: KeySource,
        subject: str | None,
        default_domain: str,
        person: str | None,
        outcomes: Outcomes = STRICT,
        stats: SerdeStats | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.stats = stats
        self.lookups = 0  # data-key lookups made of the keyring (one per key, not per value)
        self.misses = 0  # of them, those that needed the key store
        self.keyring = keyring
        self.subject = subject
        self.default_domain = default_domain
        self.person = person
        self.keys: dict[str, DataKey] = {}
        self.count = 0  # encrypted values so far: the next value's index (see crypto.wire)
        self.nonce: bytes | None = None  # the record nonce
        self.ident = b""  # version 2: lp(schema identity), bound into every value's associated data

    # the keyring's KeyMeter protocol
    def key_miss(self) -> None:
        self.misses += 1

    def key_store_call(self, seconds: float, failed: bool) -> None:
        if self.stats is not None:
            self.stats.key_store_call(seconds, failed)

    def refused(self) -> None:
        """The record raised: its lookups still count (its values do not)."""
        if self.stats is not None and self.lookups:
            self.stats._lookups(self)


def _refers(node: Node | None) -> bool:
    """Whether a plan node reaches a ``RefNode`` (a recursive type), following every child kind."""
    if node is None or isinstance(node, Leaf):
        return False
    if isinstance(node, RefNode):
        return True
    if isinstance(node, RecordNode):
        children: list[Node | None] = [*(s.node for s in node.steps), *(n for _, n in node.patterns), node.extra]
    elif isinstance(node, ArrayNode):
        children = [node.items, *node.prefix]
    elif isinstance(node, MapNode):
        children = [node.values]
    elif isinstance(node, NullableNode):
        children = [node.child]
    elif isinstance(node, UnionNode):
        children = [b.node for b in node.branches]
    elif isinstance(node, ChoiceNode):
        children = [n for _, n in node.branches]
    else:
        raise TypeError(f"unknown plan node {type(node).__name__}")
    return any(_refers(c) for c in children)


class _Deep:
    """Recursive schemas (linked lists, trees) nest as deep as their data: while a runner walks one, the
    interpreter's recursion limit is raised (pure-Python calls use no C stack since 3.11), so the walker goes at
    least as deep as fastavro's compiled writer and confluent's JSON encoder do. Shared by threads: the first to
    enter raises the limit, the last to leave restores it."""

    LIMIT = 40_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getrecursionlimit()
                if self._saved < self.LIMIT:
                    sys.setrecursionlimit(self.LIMIT)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setrecursionlimit(self._saved)


_DEEP = _Deep()


class PlanRunner:
    """Encrypts and decrypts records according to one :class:`FieldPlan`.

    Every walker step either handles the value shape its writer accepts (any ``Mapping`` as a record or map, any
    iterable fastavro writes as an array, Avro union tuple notation and ``-type`` hints) or raises; none passes a
    value it did not understand through to the writer.
    """

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
        self._collect_root: Step | None = None  # compiled on first use (tagged_values)
        self._idents: dict[str, bytes] = {}  # lp(default domain), for plans without an identity of their own
        self._ident_fixed = _wire.lp((plan.identity or "").encode("utf-8"))
        self._subject_names = plan.data_subject
        self._recursive = any(_refers(n) for n in (plan.root, *plan.named.values()))  # nests as deep as its data
        self._subject_kinds = frozenset(plan.data_subject_kind.split("|"))
        self._string_ids = "string" in self._subject_kinds
        # the common record shape, compiled into straight-line functions (fieldcrypt.core.compiled); None: the
        # general walker does all. Both give the same bytes and the same outcomes.
        self._fast_enc: Callable[[Any, RecordState], Any] | None = None
        self._fast_dec: Callable[[Any, RecordState], Any] | None = None
        if root is not None and not self._recursive:
            self._fast_enc = _compiled.compile_encrypt(plan, self._root_path, sys.modules[__name__])
            self._fast_dec = _compiled.compile_decrypt(plan, self._root_path, sys.modules[__name__])
        self._checked_domains: set[str] = set()  # default domains seen not to be companion domains

    # -- public ------------------------------------------------------------------------------------------------
    def person_of(self, record: Any, error: type[FieldcryptError] = EncryptionError) -> str | None:
        """The record's data-subject id in its one canonical form (``1`` and ``1.0`` are the same person), None
        when the field is absent or null. A value of the wrong type raises ``error``."""
        names = self._subject_names
        if names is None:
            return None
        value = record
        for name in names:
            value = value.get(name) if type(value) is dict or isinstance(value, Mapping) else None
        if value is None:
            return None
        if type(value) is str and self._string_ids and value.isascii() and value.strip() and "\x00" not in value:
            return value  # the common case, without a call (ASCII: no lone surrogate)
        return canonical_person(value, self._subject_kinds, self.plan.data_subject_path, error)

    def ident(self, default_domain: str) -> bytes:
        """lp(schema identity) for version-2 associated data: the plan's (``$id=...`` or ``title=...`` of a JSON
        schema; empty for an Avro record, whose value paths start at its full name), else ``domain=`` and the default
        key domain."""
        identity = self.plan.identity
        if identity is not None:
            return self._ident_fixed
        found = self._idents.get(default_domain)
        if found is None:
            found = _wire.lp(f"domain={default_domain}".encode())
            if len(self._idents) < 1000:
                self._idents[default_domain] = found
        return found

    def encrypt(
        self,
        record: Any,
        keyring: KeySource,
        subject: str | None,
        default_domain: str,
        stats: SerdeStats | None = None,
        version: int = _wire.LATEST_VERSION,
    ) -> Any:
        """A copy of ``record`` with every tagged value encrypted. Raises, and returns nothing, on any failure.
        Counts the record into ``stats``."""
        out, state = self.encrypt_counted(record, keyring, subject, default_domain, stats, version)
        if stats is not None:
            stats._record(state)
        return out

    def encrypt_counted(
        self,
        record: Any,
        keyring: KeySource,
        subject: str | None,
        default_domain: str,
        stats: SerdeStats | None,
        version: int = _wire.LATEST_VERSION,
    ) -> tuple[Any, RecordState | None]:
        """:meth:`encrypt`, and the record's state (None: the plan tags nothing) for the caller to count once the
        whole record is done (``stats._record``). Lookups of a record that raises are counted into ``stats``.
        ``version``: the value format written (``fieldcrypt.format.version``)."""
        if self._enc_root is None:
            return record, None
        if default_domain not in self._checked_domains:
            self._check_domain(default_domain, subject)
        person = self._person_to_write(record, subject)
        state = RecordState(keyring, subject, default_domain, person, STRICT, stats)
        if version != 2:
            state.version = version
            return self._walk_encrypt(record, state), state
        state.ident = self.ident(default_domain)
        return self._encrypt_v2(record, state), state

    def writer(
        self, keyring: KeySource, subject: str | None, default_domain: str, stats: SerdeStats | None, version: int
    ) -> Callable[[Any], tuple[Any, RecordState | None]]:
        """``encrypt_counted`` with its arguments fixed, for a serde that writes many records of one kind (its lanes):
        what depends only on them (the domain check, the associated data's identity) is done once, here; the records
        give the same bytes, errors and counts as through :meth:`encrypt_counted`."""
        fast = self._fast_enc
        if self._enc_root is None or fast is None or version != 2:
            return partial(
                self.encrypt_counted,
                keyring=keyring,
                subject=subject,
                default_domain=default_domain,
                stats=stats,
                version=version,
            )
        if default_domain not in self._checked_domains:
            self._check_domain(default_domain, subject)
        ident = self.ident(default_domain)
        per_person = self._subject_names is not None
        person_to_write, encrypt_v2 = self._person_to_write, self._encrypt_v2

        def write(record: Any) -> tuple[Any, RecordState | None]:
            person = person_to_write(record, subject) if per_person else None
            state = RecordState(keyring, subject, default_domain, person, STRICT, stats)
            state.ident = ident
            return encrypt_v2(record, state), state

        return write

    def _encrypt_v2(self, record: Any, state: RecordState) -> Any:
        """Encrypt ``record`` in value format 2 with a fresh ``state``: by the compiled function when there is one and
        the record is of its shape, else by the general walker."""
        fast = self._fast_enc
        if fast is not None:
            try:
                out = fast(record, state)
            except _loop.SIGNALS:
                raise
            except BaseException:
                state.refused()
                raise
            if out is not _compiled_slow:
                return out
        state.pending = []
        return self._walk_encrypt(record, state)

    def _person_to_write(self, record: Any, subject: str | None) -> str | None:
        try:
            person = self.person_of(record)
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject) from None
        if person is None and self._subject_names is not None:
            raise EncryptionError(
                "the record has no data-subject id, so its per-person key cannot be chosen",
                subject=subject,
                field_path=self.plan.data_subject_path,
            )
        return person

    def _walk_encrypt(self, record: Any, state: RecordState) -> Any:
        """The general walker's encryption of ``record`` (compiled plans leave every other shape to it)."""
        assert self._enc_root is not None  # (the callers return plans that tag nothing as they are)
        try:
            if not self._recursive:
                out = self._enc_root(record, self._root_path, state)
            else:
                with _DEEP:
                    out = self._enc_root(record, self._root_path, state)
            if state.pending:  # version 2: every value binds the record's value count, known only now
                final = _seal(state.pending, state)
                if final is not _NOT_ROOT:
                    return final  # the record is that one value
            return out
        except RecursionError:
            state.refused()
            raise EncryptionError("the record is nested too deeply to encrypt", subject=state.subject) from None
        except _loop.SIGNALS:  # an asyncio serde's attempt stopped for I/O: it runs again (fieldcrypt.core.aio)
            raise
        except BaseException:
            state.refused()
            raise

    def _check_domain(self, default_domain: str, subject: str | None) -> None:
        if default_domain and companion_of(default_domain) is not None:
            raise ConfigurationError(
                f"the key domain {default_domain!r} ends in a suffix reserved for companion domains (masked views "
                "'/masked', deterministic keys '/det'): set fieldcrypt.domain",
                subject=subject,
            )
        if len(self._checked_domains) < 1000:
            self._checked_domains.add(default_domain)

    def decrypt(
        self,
        record: Any,
        keyring: KeySource,
        subject: str | None,
        default_domain: str,
        outcomes: Outcomes = STRICT,
        stats: SerdeStats | None = None,
    ) -> Any:
        """Decrypt every tagged value of a freshly decoded record, in place; returns it. Counts into ``stats``."""
        out, state = self.decrypt_counted(record, keyring, subject, default_domain, outcomes, stats)
        if stats is not None:
            stats._record(state)
        return out

    def decrypt_counted(
        self,
        record: Any,
        keyring: KeySource,
        subject: str | None,
        default_domain: str,
        outcomes: Outcomes,
        stats: SerdeStats | None,
    ) -> tuple[Any, RecordState | None]:
        """:meth:`decrypt`, and the record's state to count, as :meth:`encrypt_counted`."""
        if self._dec_root is None:
            return record, None
        state = RecordState(keyring, subject, default_domain, self._person_to_read(record, subject), outcomes, stats)
        state.version = 0  # not known until the first value
        state.ident = self.ident(default_domain)
        return self._decrypt_in(record, state), state

    def reader(
        self, keyring: KeySource, subject: str | None, default_domain: str, outcomes: Outcomes, stats: SerdeStats | None
    ) -> Callable[[Any], tuple[Any, RecordState | None]]:
        """``decrypt_counted`` with its arguments fixed (as :meth:`writer`), for a serde's lanes."""
        if self._dec_root is None:
            return partial(
                self.decrypt_counted,
                keyring=keyring,
                subject=subject,
                default_domain=default_domain,
                outcomes=outcomes,
                stats=stats,
            )
        ident = self.ident(default_domain)
        per_person = self._subject_names is not None
        person_to_read, decrypt_in = self._person_to_read, self._decrypt_in

        def read(record: Any) -> tuple[Any, RecordState | None]:
            person = person_to_read(record, subject) if per_person else None
            state = RecordState(keyring, subject, default_domain, person, outcomes, stats)
            state.version = 0  # not known until the first value
            state.ident = ident
            return decrypt_in(record, state), state

        return read

    def _person_to_read(self, record: Any, subject: str | None) -> str | None:
        try:
            return self.person_of(record, DecryptionError)
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject) from None

    def _decrypt_in(self, record: Any, state: RecordState) -> Any:
        """Decrypt ``record`` in place with a fresh ``state`` (:meth:`decrypt_counted`), checking the record whole."""
        subject = state.subject
        fast = self._fast_dec
        assert self._dec_root is not None  # (the callers return plans that tag nothing as they are)
        try:
            if fast is not None:
                out = fast(record, state)
                if out is _compiled_slow:  # left as it was, but the counts of lookups the fast path made
                    state.lookups = state.misses = 0
                    out = self._dec_root(record, self._root_path, state)
            elif not self._recursive:
                out = self._dec_root(record, self._root_path, state)
            else:
                with _DEEP:
                    out = self._dec_root(record, self._root_path, state)
        except RecursionError:
            state.refused()
            raise DecryptionError("the record is nested too deeply to decrypt", subject=subject) from None
        except _loop.SIGNALS:  # an asyncio serde's attempt stopped for I/O: it runs again (fieldcrypt.core.aio)
            raise
        except BaseException:
            state.refused()
            raise
        if state.total is not None and state.total != state.count:
            state.refused()
            raise DecryptionError(
                f"the record holds {state.count} encrypted values where its writer wrote {state.total}: a value was "
                "removed, nulled or added",
                subject=subject,
            )
        if state.version == 2 and state.total is None and state.count:
            state.refused()
            raise _moved_record(subject)  # value 0, which carries the count, is missing
        plain = state.plain
        if plain and (state.count or state.deterministic):
            state.refused()
            raise DecryptionError(
                "the record mixes fieldcrypt ciphertext and plaintext in tagged fields: plaintext is accepted only "
                "in records written before encryption began",
                subject=subject,
                field_path=plain[0],
            )
        return out

    # -- compilation: write side --------------------------------------------------------------------------------
    def _enc(self, node: Node) -> Step:
        if isinstance(node, Leaf):
            return _enc_leaf(node)
        if isinstance(node, NullableNode):
            return _nullable(self._enc(node.child), node.name, writing=True)
        if isinstance(node, ArrayNode):
            return _array(node, self._enc, writing=True)
        if isinstance(node, MapNode):
            values = self._enc(node.values)

            def map_(v: Any, p: str, st: RecordState) -> Any:
                if type(v) is not dict and not isinstance(v, Mapping):
                    raise _shape("a map", v, p, st, EncryptionError)
                out: dict[Any, Any] = {}
                for k, x in v.items():
                    r = out[_key(k, p, st, EncryptionError)] = values(x, f"{p}[{json.dumps(k)}]", st)
                    if r.__class__ is _Pending:
                        r.parent, r.slot = out, k
                return out

            return map_
        if isinstance(node, RefNode):
            return _ref(self._enc_named, node.name)
        if isinstance(node, UnionNode):
            return self._enc_union(node)
        if isinstance(node, ChoiceNode):
            return _choice(node, self._enc, writing=True)
        steps = [(s.name, "." + s.name, self._enc(s.node), s.default) for s in node.steps]
        others = _other_keys(node, self._enc, EncryptionError)

        def record(v: Any, p: str, st: RecordState) -> Any:
            if type(v) is not dict and not isinstance(v, Mapping):
                raise _shape("a record", v, p, st, EncryptionError)
            out = dict(v)
            for name, suffix, fn, default in steps:
                x = v.get(name, MISSING)
                if x is MISSING:
                    if default is MISSING:
                        continue
                    x = default
                r = out[name] = fn(x, p + suffix, st)
                if r.__class__ is _Pending:
                    r.parent, r.slot = out, name
            if others is not None:
                others(v, out, p, st)
            return out

        return record

    def _enc_union(self, node: UnionNode) -> Step:
        from fastavro.validation import _validate  # fastavro's own check, so the branch is the one it would write

        named = self.plan.avro_named or {}
        branches = [(b, self._enc(b.node) if b.node is not None else None) for b in node.branches]
        by_name = {b.name: (b, fn) for b, fn in branches}
        # the field names of each record branch, for fastavro's most-fields rule (None: not a record)
        fields = [_record_fields(_resolved(b.schema, named)) for b, _ in branches]

        def choose(v: Any, p: str, st: RecordState) -> tuple[Any, Any, Any]:
            if isinstance(v, tuple):  # tuple notation: ("ns.Name", value)
                if len(v) != 2 or v[0] not in by_name:
                    raise EncryptionError(
                        "the union value in tuple notation names no type of the union",
                        subject=st.subject,
                        field_path=p,
                    )
                b, fn = by_name[v[0]]
                return b, fn, v[1]
            # fastavro's write_union, step for step: records by most fields in common, float gives way to double,
            # any other type that validates wins at once
            best: Any = None
            most, could_be_float = -1, False
            for (b, fn), names in zip(branches, fields, strict=True):
                if could_be_float:
                    if b.name == "double":
                        best = (b, fn)
                        break
                    continue
                if not _validate(v, b.schema, named, raise_errors=False, field="", options={}):
                    continue
                if names is not None:
                    common = len(names.intersection(v))
                    if common > most:
                        best, most = (b, fn), common
                elif b.name == "float":
                    best, could_be_float = (b, fn), True
                else:
                    best = (b, fn)
                    break
            if best is None:
                raise EncryptionError("the value matches no type of the union", subject=st.subject, field_path=p)
            if best[0].node is None:
                # fastavro would write it under an untagged branch, in clear; if a tagged branch fits it too (bytes
                # also validate as an array of ints), the writer cannot be trusted to have meant the untagged one
                for b, _ in branches:
                    if b.node is not None and _validate(v, b.schema, named, raise_errors=False, field="", options={}):
                        raise EncryptionError(
                            f"the value fits the tagged union branch {b.name} but would be written, in clear, as "
                            f"{best[0].name} (the branch fastavro picks first); write it in tuple notation, "
                            f'("{b.name}", value), or order the union so that the tagged branch comes first',
                            subject=st.subject,
                            field_path=p,
                        )
            return best[0], best[1], v

        def union(v: Any, p: str, st: RecordState) -> Any:
            if v is None:
                return None
            b, fn, inner = choose(v, p, st)
            if b.name == "null":
                return None
            if fn is None:
                return (b.name, inner)
            r = fn(inner, f"{p}<{b.name}>", st)
            if r.__class__ is _Pending:
                r.union = b.name  # sealed as (name, value): the container places the pending value itself
                return r
            return (b.name, r)

        return union

    # -- compilation: read side ---------------------------------------------------------------------------------
    def _dec(self, node: Node) -> Step:
        return self._reading(_dec_leaf, self._dec_named)(node)

    def _reading(self, leaf_step: Callable[[Leaf], Step], table: dict[str, Step]) -> Callable[[Node], Step]:
        """The read-side compiler: every container step as the reader walks it, with ``leaf_step`` at the leaves and
        ``table`` for named (recursive) types. Decryption uses ``_dec_leaf``; :meth:`tagged_values` a collector."""

        def compile_node(node: Node) -> Step:
            if isinstance(node, Leaf):
                return leaf_step(node)
            if isinstance(node, NullableNode):
                return _nullable(compile_node(node.child), node.name, writing=False)
            if isinstance(node, ArrayNode):
                return _array(node, compile_node, writing=False)
            if isinstance(node, MapNode):
                values = compile_node(node.values)

                def map_(v: Any, p: str, st: RecordState) -> Any:
                    if not isinstance(v, dict):
                        raise _shape("a map", v, p, st, DecryptionError)
                    for k, x in v.items():
                        v[k] = values(x, f"{p}[{json.dumps(k)}]", st)
                    return v

                return map_
            if isinstance(node, RefNode):
                return _ref(table, node.name)
            if isinstance(node, UnionNode):
                return self._dec_union(node, compile_node)
            if isinstance(node, ChoiceNode):
                return _choice(node, compile_node, writing=False)
            steps = [(s.name, "." + s.name, compile_node(s.node)) for s in node.steps]
            others = _other_keys(node, compile_node, DecryptionError)

            def record(v: Any, p: str, st: RecordState) -> Any:
                if not isinstance(v, dict):
                    raise _shape("a record", v, p, st, DecryptionError)
                for name, suffix, fn in steps:
                    if name in v:
                        v[name] = fn(v[name], p + suffix, st)
                if others is not None:
                    others(v, v, p, st)
                return v

            return record

        return compile_node

    def tagged_values(self, record: Any, subject: str | None) -> list[tuple[str, Any]]:
        """(path, value) of every tagged value of a decoded record, in the reader's walk order, as they are (nothing
        decrypted; the record is not changed). Raises ``DecryptionError`` where its shape is not the schema's."""
        if self._dec_root is None:
            return []
        collect = self._collect_root
        if collect is None:
            table: dict[str, Step] = {}
            compile_node = self._reading(_collect_leaf, table)
            for name, node in self.plan.named.items():
                table[name] = compile_node(node)
            assert self.plan.root is not None
            collect = self._collect_root = compile_node(self.plan.root)
        state = RecordState(None, subject, "", None)  # type: ignore[arg-type]  # no key is looked up
        seen: list[tuple[str, Any]] = []
        state.seen = seen
        if not self._recursive:
            collect(record, self._root_path, state)
        else:
            with _DEEP:
                collect(record, self._root_path, state)
        return seen

    def _dec_union(self, node: UnionNode, compile_node: Callable[[Node], Step]) -> Step:
        by_name = {b.name: (b, compile_node(b.node) if b.node is not None else None) for b in node.branches}
        # what a reader returns without a name: one branch per Python type family (the compiler refused the rest)
        by_family: dict[str, Any] = {}
        for b in node.branches:
            if node.named_read and b.name not in _UNNAMED:
                continue  # arrives as (name, value)
            by_family.setdefault(b.family, []).append(by_name[b.name])

        def union(v: Any, p: str, st: RecordState) -> Any:
            if v is None:
                return None
            if isinstance(v, tuple) and len(v) == 2 and v[0] in by_name:
                b, fn = by_name[v[0]]
                return v if fn is None else (v[0], fn(v[1], f"{p}<{b.name}>", st))
            found = by_family.get(_FAMILY.get(type(v), type(v).__name__))
            if not found:
                raise _shape("a value of the union", v, p, st, DecryptionError)
            tagged = [(b, fn) for b, fn in found if fn is not None]
            if not tagged:
                return v
            b, fn = tagged[0]
            return fn(v, f"{p}<{b.name}>", st)

        return union


_UNNAMED = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string", "array", "map"})
#: the Python type a reader returns, by family name (UnionBranch.family uses the same names)
_FAMILY: dict[type, str] = {
    type(None): "None",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    list: "list",
    dict: "dict",
}


def _resolved(schema: Any, named: Mapping[str, Any]) -> Any:
    return named.get(schema, schema) if isinstance(schema, str) else schema


def _record_fields(schema: Any) -> frozenset[str] | None:
    if isinstance(schema, dict) and schema.get("type") in ("record", "error"):
        return frozenset(f["name"] for f in schema["fields"])
    return None


def canonical_person(value: Any, kinds: frozenset[str], path: str | None, error: type[FieldcryptError]) -> str:
    """One spelling per person: strings as they are; integers in decimal (a JSON ``1.0`` is ``1``). Anything else,
    an empty or blank string, a bool, or a fractional number, is refused (``error``)."""
    if isinstance(value, str):
        if "string" in kinds:
            if not value.strip():
                raise error("the data-subject id is empty or blank", field_path=path)
            if "\x00" in value or not _utf8(value):
                raise error(
                    "the data-subject id holds a NUL character or a lone surrogate, which key stores cannot hold",
                    field_path=path,
                )
            return value
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if kinds & {"int", "integer"}:
            return str(value)
    elif isinstance(value, float) and "integer" in kinds and value.is_integer():
        return str(int(value))
    raise error(
        f"the data-subject id must be {' or '.join(sorted(kinds))}, got {type(value).__name__}", field_path=path
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shape(what: str, v: Any, p: str, st: RecordState, error: type[FieldcryptError]) -> FieldcryptError:
    return error(f"expected {what} here, got {type(v).__name__}", subject=st.subject, field_path=p)


def _key(k: Any, p: str, st: RecordState, error: type[FieldcryptError]) -> str:
    if not isinstance(k, str):
        raise error(
            f"map and object keys holding tagged values must be strings, got {type(k).__name__}",
            subject=st.subject,
            field_path=p,
        )
    return k


def _ref(table: dict[str, Step], name: str) -> Step:
    def ref(v: Any, p: str, st: RecordState) -> Any:
        return table[name](v, p, st)

    return ref


def _nullable(child: Step, name: str | None, *, writing: bool) -> Step:
    if not writing:
        return lambda v, p, st: None if v is None else child(v, p, st)

    def nullable(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None
        if name is not None and isinstance(v, tuple):  # Avro tuple notation selects a union branch
            if len(v) == 2 and v[0] == name:
                return child(v[1], p, st)
            if v == ("null", None):
                return None
            raise EncryptionError(
                "the union value in tuple notation names no type of the union", subject=st.subject, field_path=p
            )
        return child(v, p, st)

    return nullable


def _array(node: ArrayNode, compile_node: Callable[[Node], Step], *, writing: bool) -> Step:
    step = _array_items(node, compile_node, writing=writing)
    together = node.together
    if writing or together is None:
        return step

    def judged_together(v: Any, p: str, st: RecordState) -> Any:
        # uniqueItems / contains judge the items together: a stand-in (equal to every other) placed here must not
        # make the record fail them
        stood_in = st.stood_in
        out = step(v, p, st)
        if st.stood_in != stood_in and ("contains" in together or _duplicates(out)):
            raise ConfigurationError(
                f"with stand-ins for unreadable values (equal to one another) the array would fail its {together}, "
                "so the record would not match its schema: set fieldcrypt.on.erased and fieldcrypt.on.denied to "
                "raise or marker for this schema, or drop the keyword",
                subject=st.subject,
                field_path=p,
            )
        return out

    return judged_together


def _duplicates(items: list[Any]) -> bool:
    """Whether a JSON array holds two equal items. (Only stand-ins, all equal text, are new in it: the items the
    writer validated were unique, so comparing their canonical JSON is enough.)"""
    return len({json.dumps(x, sort_keys=True) for x in items}) < len(items)


def _array_items(node: ArrayNode, compile_node: Callable[[Node], Step], *, writing: bool) -> Step:
    items = compile_node(node.items) if node.items is not None else None
    prefix = [compile_node(n) if n is not None else None for n in node.prefix]
    error = EncryptionError if writing else DecryptionError
    if not prefix and items is not None:
        each: Step = items

        def simple(v: Any, p: str, st: RecordState) -> Any:
            if isinstance(v, list):
                seq = v
            elif writing and not isinstance(v, (str, bytes, bytearray, memoryview, Mapping)):
                if _loop.current() is not None and _one_shot(v):
                    # an asyncio serde's attempt may run again after a lookup: a generator read here would be empty
                    # then, so the call runs once, off the loop (fieldcrypt.core.aio)
                    raise _loop.OffLoop
                try:
                    seq = list(v)  # a tuple, deque, set, generator...: what fastavro writes as an array
                except TypeError:
                    raise _shape("an array", v, p, st, error) from None
            else:
                raise _shape("an array", v, p, st, error)
            out = seq if not writing else [None] * len(seq)
            for i, x in enumerate(seq):
                r = out[i] = each(x, f"{p}[{i}]", st)
                if r.__class__ is _Pending:
                    r.parent, r.slot = out, i
            return out

        return simple
    n_prefix = len(prefix)

    def positional(v: Any, p: str, st: RecordState) -> Any:
        if isinstance(v, list):
            seq = v
        elif writing and isinstance(v, tuple):
            seq = list(v)
        else:
            raise _shape("an array", v, p, st, error)
        out = seq if not writing else list(seq)
        for i, x in enumerate(seq):
            fn = prefix[i] if i < n_prefix else items
            if fn is not None:
                r = out[i] = fn(x, f"{p}[{i}]", st)
                if r.__class__ is _Pending:
                    r.parent, r.slot = out, i
        return out

    return positional


def _one_shot(v: Any) -> bool:
    """Whether reading ``v`` may use it up: anything iterable that is not a collection (a generator, an iterator, a
    lazy result set whose ``__iter__`` hands out its one cursor)."""
    return not isinstance(v, Collection)


def _policy_of(node: Node) -> Any:
    """What a node does to a value, not where it was declared: two leaves that encrypt the same way under the same
    domain (a property and a patternProperties regex that matches it, both tagged PII) are one policy."""
    return (Leaf, node.kind, node.domain, node.tags) if isinstance(node, Leaf) else node


def _distinct(nodes: Any) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if not any(n == m for m in out):
            out.append(n)
    return out


def _choice(node: ChoiceNode, compile_node: Callable[[Node], Step], *, writing: bool) -> Step:
    steps = [(m, n, compile_node(n) if n is not None else None) for m, n in node.branches]
    error = EncryptionError if writing else DecryptionError

    any_of = node.keyword == "anyOf"

    def matching(v: Any) -> list[Any]:
        found = _distinct((n, fn) for m, n, fn in steps if m(v))
        if any_of and len(found) > 1:
            # anyOf applies every validating branch (as confluent's CSFLE does): a branch that tags nothing adds
            # nothing, so the tagged one decides, provided it is the only tagged one
            tagged = [x for x in found if x[0] is not None]
            if tagged:
                return tagged
        return found

    def choice(v: Any, p: str, st: RecordState) -> Any:
        found = matching(v)
        if len(found) != 1:
            raise error(
                f"the value matches {'no' if not found else 'several differently tagged'} {node.keyword} branches, "
                "so which properties are encrypted is ambiguous",
                subject=st.subject,
                field_path=p,
            )
        ((n, fn),) = found
        stood_in = st.stood_in
        out = v if fn is None else fn(v, p, st)
        if not writing and st.stood_in != stood_in:
            # null or the placeholder replaced an unreadable value in it: the value must still satisfy the choice
            # (the compiler chose null only where every branch admits it; a placeholder is text as the ciphertext
            # was, but shorter, so a branch the ciphertext failed, e.g. by maxLength, may now match as well)
            valid = sum(1 for m, _, _ in steps if m(out))
            if valid == 0 or (not any_of and valid > 1):
                raise ConfigurationError(
                    f"with the stand-in for an unreadable value, the value would match {valid} {node.keyword} "
                    "branches, so the record would not match its schema: set fieldcrypt.on.erased and "
                    "fieldcrypt.on.denied to raise or marker, change fieldcrypt.placeholder, or add a "
                    "discriminating property (e.g. a const)",
                    subject=st.subject,
                    field_path=p,
                )
        if writing and [m for m, _ in _matching_written(matching, out, st)] != [n]:
            raise EncryptionError(
                f"once encrypted, the value would match another {node.keyword} branch, so a reader could not tell "
                "which properties are encrypted; add a discriminating property (e.g. a const)",
                subject=st.subject,
                field_path=p,
            )
        return out

    return choice


def _matching_written(matching: Callable[[Any], list[Any]], out: Any, st: RecordState) -> list[Any]:
    """The branches an encrypted value matches, as a reader will see it: values not yet sealed (version 2) are checked
    as stand-ins of the final ciphertexts' type and length, put in their places for the check."""
    pending = st.pending
    if not pending:
        return matching(out)
    if out.__class__ is _Pending:
        return matching(out.stand_in())
    placed = [x for x in pending if x.parent is not None]
    for x in placed:
        x.parent[x.slot] = x.stand_in()
    try:
        return matching(out)
    finally:
        for x in placed:
            x.parent[x.slot] = x


def _other_keys(node: RecordNode, compile_node: Callable[[Node], Step], error: type[FieldcryptError]) -> Any:
    """JSON objects: the keys not declared in ``properties`` (patternProperties, additionalProperties)."""
    if not node.patterns and node.extra is None:
        return None
    from fieldcrypt.core.regex import Unmatchable, Unsupported, bounded
    from fieldcrypt.errors import PolicyError

    declared = {s.name: s.node for s in node.steps}
    try:  # linear-time matching (RE2): a key cannot stall the serializer; the policy compiler refused the rest
        patterns = [(bounded(rx), n, compile_node(n)) for rx, n in node.patterns]
        every = [bounded(rx) for rx in node.all_patterns] if node.extra is not None else []
    except Unsupported as exc:
        msg = f"a patternProperties regex cannot be matched in bounded time: {exc}"
        raise PolicyError(msg, field_path=node.name) from None
    extra = (node.extra, compile_node(node.extra)) if node.extra is not None else None
    names = node.declared

    def others(v: Any, out: Any, p: str, st: RecordState) -> None:
        # in code-point order of the keys, not the document's: a copy re-encoded with sorted keys reads the same
        for key, k in sorted(((_key(k, p, st, error), k) for k in list(v)), key=_first):
            try:
                found: list[tuple[Node, Step | None]] = [(n, fn) for rx, n, fn in patterns if rx.search(key)]
                if extra is not None and key not in names and not any(rx.search(key) for rx in every):
                    found.append(extra)
            except Unmatchable:
                raise error(
                    f"key {json.dumps(key)} holds a lone surrogate (not Unicode): the patternProperties regexes "
                    "deciding whether its value is encrypted cannot be matched against it",
                    subject=st.subject,
                    field_path=p,
                ) from None
            if not found:
                continue
            if key in declared:
                found.append((declared[key], None))
            if len(_distinct(_policy_of(n) for n, _ in found)) > 1:
                raise error(
                    f"several differently tagged schemas apply to key {json.dumps(key)}",
                    subject=st.subject,
                    field_path=p,
                )
            if key in declared:
                continue  # the declared property's step already handled it
            fn = found[0][1]
            assert fn is not None
            r = out[k] = fn(v[k], f"{p}[{json.dumps(key)}]", st)
            if r.__class__ is _Pending:
                r.parent, r.slot = out, k

    return others


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _key_for_write(leaf: Leaf, st: RecordState, domain: str | None = None) -> DataKey:
    """The record's first value in this domain (default: the leaf's): ask the keyring (the caller found nothing in
    ``st.keys``)."""
    domain = domain or leaf.domain or st.default_domain
    st.lookups += 1
    try:
        key = st.keyring.encryption_key(domain, st.person, st)
    except FieldcryptError as exc:
        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
    st.keys[domain] = key
    return key


def _renew(leaf: Leaf, st: RecordState, key: DataKey, domain: str | None = None) -> DataKey:
    st.lookups += 1
    try:
        renewed = st.keyring.renew(key, st)
    except FieldcryptError as exc:
        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
    st.keys[domain or leaf.domain or st.default_domain] = renewed
    return renewed


_BYTES_LIKE = (bytes, bytearray, memoryview)


def _plain_bytes(leaf: Leaf) -> Callable[[Any, RecordState], bytes]:
    """The bytes a leaf encrypts: UTF-8 of a string, the bytes of a bytes value, the decoded bytes of base64 text.
    Anything else raises (no other type is ever written in clear)."""
    kind = leaf.kind

    def wrong(v: Any, st: RecordState) -> EncryptionError:
        return EncryptionError(
            f"expected a {kind} value, got {type(v).__name__}", subject=st.subject, field_path=leaf.path
        )

    if kind == "string":

        def text(v: Any, st: RecordState) -> bytes:
            if not isinstance(v, str):
                raise wrong(v, st)
            try:
                return v.encode("utf-8")
            except UnicodeEncodeError:
                raise EncryptionError(
                    "the text is not valid Unicode (lone surrogate)", subject=st.subject, field_path=leaf.path
                ) from None

        return text
    if kind == "bytes":

        def raw(v: Any, st: RecordState) -> bytes:
            if not isinstance(v, _BYTES_LIKE):
                raise wrong(v, st)
            return bytes(v)

        return raw

    def b64(v: Any, st: RecordState) -> bytes:
        if not isinstance(v, str):
            raise wrong(v, st)
        try:
            return _wire.decode_base64(v)
        except ValueError:
            raise EncryptionError(
                "the value is not valid base64, as its schema's contentEncoding says",
                subject=st.subject,
                field_path=leaf.path,
            ) from None

    return b64


class _Pending:
    """Version 2, write side: one encrypted value, encrypted once the walk has counted the record's values (every
    value binds the count in its associated data; value 0 also carries it). The walker puts this object where the
    value goes and tells it where (``parent[slot]``); ``_seal`` encrypts it and puts the ciphertext there.
    """

    __slots__ = ("ad", "data", "index", "key", "leaf", "nonce", "parent", "slot", "union", "view", "wrap")

    def __init__(
        self, key: DataKey, index: int, nonce: bytes, data: bytes, ad: bytes, wrap: Callable[[bytes], Any], leaf: Leaf
    ) -> None:
        self.key = key
        self.index = index
        self.nonce = nonce
        self.data = data
        self.ad = ad  # the value's path part of its associated data (lp(path)); the rest is known at seal time
        self.wrap = wrap
        self.leaf = leaf
        self.parent: Any = None
        self.slot: Any = None
        self.union: str | None = None  # the Avro union branch name, when the value is written in tuple notation
        self.view: tuple[DataKey, bytes] | None = None  # the masked view: its key and the masked text (UTF-8)

    def _head(self, count: bytes) -> bytes:
        if self.index == 0:
            return self.key.header2 + _INDEX0 + self.nonce + count
        return self.key.header2 + _varint(self.index)

    def stand_in(self) -> Any:
        """A value of the final one's type and length (for checks made before the count is known)."""
        view = b"" if self.view is None else _wire.view_part(0, bytes(len(self.view[1]) + _wire.TAG_LEN))
        value = self.wrap(self._head(bytes(_wire.COUNT_LEN)) + view + bytes(len(self.data) + _wire.TAG_LEN))
        return value if self.union is None else (self.union, value)


_NOT_ROOT = object()


def _seal(pending: list[_Pending], st: RecordState) -> Any:
    """Encrypt a version-2 record's values now that their count is known, each into its place; returns the sealed
    value when the record is that one value (a top-level tagged value), else ``_NOT_ROOT``."""
    count = _count_field(st.count)
    tail = st.ident + count  # every value binds the schema identity and n; value 0 carries n
    out = _NOT_ROOT
    for x in pending:
        key = x.key
        view = x.view
        header, prefix, part = key.header2, key.ad_prefix2, b""
        if view is not None:  # flags bit 2, bound in the value's own associated data too
            header, prefix = _wire.with_view(header), _wire.with_view(prefix)
        ad = prefix + tail + x.ad
        try:
            ct = key.cipher.encrypt(x.nonce, x.data, ad)
            if view is not None:
                part = _wire.view_part(view[0].key_id, view[0].cipher.encrypt(x.nonce, view[1], ad + _wire.VIEW_AD))
        except _ENC_ERRORS:
            raise EncryptionError(
                "the value could not be encrypted", subject=st.subject, field_path=x.leaf.path, key_id=key.key_id
            ) from None
        head = header + _INDEX0 + x.nonce + count if x.index == 0 else header + _varint(x.index)
        head += part
        value = x.wrap(head + ct)
        if x.union is not None:
            value = (x.union, value)
        if x.parent is None:
            out = value
        else:
            x.parent[x.slot] = value
    return out


def _enc_leaf(leaf: Leaf) -> Step:
    if leaf.deterministic:
        return _enc_det_leaf(leaf)
    to_bytes = _plain_bytes(leaf)
    is_text = leaf.kind == "string"
    wraps: dict[str, Callable[[bytes], Any]] = {"string": _b2a, "bytes": bytes, "base64": _wire.encode_base64}
    wrap = wraps[leaf.kind]
    fixed_domain = leaf.domain
    memo: dict[str, bytes] = {}
    mask = get_mask(leaf.mask) if leaf.mask is not None else None
    view_fixed = view_domain(fixed_domain) if fixed_domain is not None else None

    def enc(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None  # the schema writer rejects None where the field is not nullable
        if is_text and type(v) is str and v.isascii():
            data = v.encode("ascii")  # the common case, without a call
        else:
            data = to_bytes(v, st)
        key = st.keys.get(fixed_domain or st.default_domain) or _key_for_write(leaf, st)
        while next(key.budget[0], None) is None:  # take one leased encryption, atomically; renew when spent
            key = _renew(leaf, st, key)
        index = st.count
        st.count = index + 1
        pad = memo.get(p) or _remember(memo, p)
        if st.version == 2:
            if index == 0:
                nonce = st.nonce = _urandom(_wire.NONCE_LEN)
            else:
                nonce = _derive(st.nonce, index)  # type: ignore[arg-type]
            pending = _Pending(key, index, nonce, data, pad, wrap, leaf)
            if mask is not None:
                pending.view = _view_for_write(mask, v, leaf, view_fixed, st)
            st.pending.append(pending)  # type: ignore[union-attr]  # a list when writing version 2
            return pending
        else:
            if mask is not None:  # (the serializer refuses fieldcrypt.masks with format 1 when it is made)
                raise EncryptionError(
                    "format version 1 cannot carry a masked view", subject=st.subject, field_path=leaf.path
                )
            ad = key.ad_prefix + pad
            if index == 0:
                nonce = st.nonce = _urandom(_wire.NONCE_LEN)
                head = key.header + _INDEX0 + nonce
            else:
                nonce = _derive(st.nonce, index)  # type: ignore[arg-type]
                head = key.header + _varint(index)
        try:
            ct = key.cipher.encrypt(nonce, data, ad)
        except _ENC_ERRORS:
            raise EncryptionError(
                "the value could not be encrypted", subject=st.subject, field_path=leaf.path, key_id=key.key_id
            ) from None
        return wrap(head + ct)

    return enc


def _view_for_write(mask: Any, v: str, leaf: Leaf, fixed: str | None, st: RecordState) -> tuple[DataKey, bytes]:
    """The masked view of ``v``: its key (the view domain's, same person) and the masked text. A value the mask cannot
    read refuses the record (nothing is sent): the error names the mask, never the value."""
    try:
        text = apply_mask(mask, v).encode("utf-8")
    except MaskError as exc:
        raise EncryptionError(
            f"the value cannot be given its masked view ({leaf.mask!r} mask): {exc}",
            subject=st.subject,
            field_path=leaf.path,
        ) from None
    domain = fixed or view_domain(st.default_domain)
    key = st.keys.get(domain) or _key_for_write(leaf, st, domain)
    while next(key.budget[0], None) is None:  # one leased encryption of the view key, as for a value's
        key = _renew(leaf, st, key, domain)
    return key, text


def _read_view(
    view: tuple[int, bytes],
    denied: DecryptionError,
    key_id: int,
    nonce: bytes,
    pad: bytes,
    leaf: Leaf,
    domain: str,
    st: RecordState,
) -> Any:
    """What a reader without the value's key reads (``denied``: why it has none): the masked view, when it holds the
    view key; else the ``on.denied`` outcome (the ``on.erased`` one when the view key was shredded). A view that does
    not authenticate is tampering."""
    view_id, sealed = view
    seen = st.view_ids
    if seen is None:
        seen = st.view_ids = set()
    if view_id not in seen:
        seen.add(view_id)
        st.lookups += 1
    expected = view_domain(domain)
    try:
        key = st.keyring.decryption_key(view_id, st)
    except (KeyNotFoundError, AccessDeniedError) as exc:
        if exc.owner is not None and exc.owner != (expected, st.person):
            raise _moved(leaf, st, key_id) from None  # another domain's or person's key: not "erased" or "denied"
        if isinstance(exc, KeyShreddedError):
            return st.outcomes.apply(exc, leaf, view_id, st)
        if type(exc) is KeyNotFoundError and isinstance(denied, AccessDeniedError):
            # the value's key is in the store, its view's never was: the view was pointed elsewhere
            raise _moved(leaf, st, key_id) from None
        return st.outcomes.apply(denied, leaf, key_id, st)
    except FieldcryptError as exc:
        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
    if key.domain != expected or key.person != st.person:
        raise _moved(leaf, st, key_id)
    ad = _wire.with_view(_wire.ad_prefix_v2(key_id, domain, st.person)) + st.ident + pad + _wire.VIEW_AD
    try:
        text = key.cipher.decrypt(nonce, sealed, ad).decode("utf-8")
    except _DEC_ERRORS:
        raise _moved(leaf, st, key_id) from None
    if st.masked is None:
        st.masked = []
    st.masked.append(leaf.path)
    return text


def _enc_det_leaf(leaf: Leaf) -> Step:
    """A deterministic value (``Leaf.deterministic``): AES-SIV under the key of ``<domain>/det`` and the record's
    person, associated data naming that key, its domain and person only (crypto.wire): equal values of one domain and
    person give equal ciphertexts in every record, field and subject. Not record-bound: no index, not counted in n."""
    to_bytes = _plain_bytes(leaf)
    wraps: dict[str, Callable[[bytes], Any]] = {"string": _b2a, "bytes": bytes, "base64": _wire.encode_base64}
    wrap = wraps[leaf.kind]
    fixed = None if leaf.domain is None else leaf.domain + DET_SUFFIX
    heads: dict[int, tuple[bytes, list[bytes]]] = {}  # key id -> (header, [associated data]): once per key

    def enc(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None
        data = to_bytes(v, st)
        if st.version != 2:  # (the serializer refuses fieldcrypt.deterministic.tags with format 1 when it is made)
            raise EncryptionError(
                "format version 1 has no deterministic values", subject=st.subject, field_path=leaf.path
            )
        domain = fixed or st.default_domain + DET_SUFFIX
        key = st.keys.get(domain) or _key_for_write(leaf, st, domain)
        head = heads.get(key.key_id)
        if head is None:
            head = (_wire.deterministic_header(key.key_id), [_wire.deterministic_ad(key.key_id, key.domain)])
            if len(heads) < _PATH_MEMO:
                heads[key.key_id] = head
        try:
            ct = key.siv.encrypt(data, head[1])
        except _ENC_ERRORS:
            raise EncryptionError(
                "the value could not be encrypted", subject=st.subject, field_path=leaf.path, key_id=key.key_id
            ) from None
        st.deterministic += 1
        return wrap(head[0] + ct)

    return enc


def _dec_det_leaf(leaf: Leaf) -> Step:
    """Reads what :func:`_enc_det_leaf` writes; a record-bound value here (or a deterministic one where a
    record-bound one belongs) is tampering or a configuration the producers do not share (their recorded policy
    says which)."""
    kind = leaf.kind
    unwrap: Callable[[Any], bytes] = {"string": _a2b, "bytes": _as_bytes, "base64": _wire.decode_base64}[kind]
    is_text = kind == "string"
    fixed = None if leaf.domain is None else leaf.domain + DET_SUFFIX

    def dec(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None
        try:
            blob = unwrap(v)
            key_id, body = _wire.parse_deterministic(blob)
        except (ValueError, TypeError, AttributeError):
            if st.outcomes.on_plaintext == "accept" and isinstance(v, bytes if kind == "bytes" else str):
                try:
                    fieldcrypt_value = _wire.parse_value(unwrap(v)) is not None
                except _wire.UnsupportedValue:  # a well-formed header (another mode, a newer feature): not plaintext
                    fieldcrypt_value = True
                except (ValueError, TypeError, AttributeError):
                    fieldcrypt_value = False
                if not fieldcrypt_value:
                    if st.plain is None:
                        st.plain = []
                    st.plain.append(leaf.path)  # history from before encryption: returned as it is, and counted
                    return v
            raise DecryptionError(
                "the field does not hold a deterministic fieldcrypt ciphertext (the producers' policy says it is "
                "encrypted deterministically)",
                subject=st.subject,
                field_path=leaf.path,
            ) from None
        st.deterministic += 1
        domain = fixed or st.default_domain + DET_SUFFIX
        key = st.last_key
        if key is None or key.key_id != key_id:
            if st.last_missing != key_id:
                st.lookups += 1
            try:
                key = st.last_key = st.keyring.decryption_key(key_id, st)
            except (KeyNotFoundError, AccessDeniedError) as exc:
                st.last_missing = key_id
                if exc.owner is not None and exc.owner != (domain, st.person):
                    raise _moved(leaf, st, key_id) from None  # another domain's or person's key: not "erased"
                return st.outcomes.apply(exc, leaf, key_id, st)
            except FieldcryptError as exc:
                raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
        if key.domain != domain or key.person != st.person or not key.deterministic:
            raise _moved(leaf, st, key_id)
        try:
            pt = key.siv.decrypt(body, [_wire.deterministic_ad(key_id, key.domain)])
            text = pt.decode("utf-8") if is_text else None
        except _DEC_ERRORS:
            raise _moved(leaf, st, key_id) from None
        if text is not None:
            return text
        return pt if kind == "bytes" else _wire.encode_base64(pt)

    return dec


def _dec_leaf(leaf: Leaf) -> Step:
    if leaf.deterministic:
        return _dec_det_leaf(leaf)
    kind = leaf.kind
    unwrap: Callable[[Any], bytes] = {"string": _a2b, "bytes": _as_bytes, "base64": _wire.decode_base64}[kind]
    is_text = kind == "string"
    fixed_domain = leaf.domain
    memo: dict[str, bytes] = {}

    def dec(v: Any, p: str, st: RecordState) -> Any:
        if v is None:
            return None
        try:
            version, key_id, index, record_nonce, count, body, view = _parse(unwrap(v))
        except _wire.UnsupportedValue:
            if _wire.is_deterministic(unwrap(v)):  # known here: a deterministic value where the policy has none
                raise DecryptionError(
                    "the field holds a deterministic fieldcrypt ciphertext where the producers' policy encrypts "
                    "record-bound values",
                    subject=st.subject,
                    field_path=leaf.path,
                ) from None
            raise UnsupportedFormatError(
                "the value was written with a format feature this reader does not read (a newer fieldcrypt): upgrade "
                "readers before writers",
                subject=st.subject,
                field_path=leaf.path,
            ) from None
        except (ValueError, TypeError, AttributeError):
            if st.outcomes.on_plaintext == "accept" and isinstance(v, bytes if kind == "bytes" else str):
                if st.plain is None:
                    st.plain = []
                st.plain.append(leaf.path)  # history from before encryption: returned as it is, and counted
                return v
            raise DecryptionError(NOT_A_CIPHERTEXT, subject=st.subject, field_path=leaf.path) from None
        position = st.count
        st.count = position + 1
        if st.version != version:
            if st.version:
                raise _moved(leaf, st, key_id)  # a writer writes one format per record
            st.version = version
        if version == 2 and index != position:
            raise _moved(leaf, st, key_id)  # a value before it was removed or nulled, or this one was moved
        if record_nonce is not None:
            if st.nonce is not None:
                raise _moved(leaf, st, key_id)  # a record has exactly one value with index 0
            nonce = st.nonce = record_nonce
            st.total = count
            if version == 2:
                st.ident += _count_field(count)  # type: ignore[arg-type]  # every value binds n after the identity
        elif st.nonce is None:
            raise _moved(leaf, st, key_id)
        else:
            nonce = _derive(st.nonce, index)
        key = st.last_key
        if key is None or key.key_id != key_id:
            if st.last_missing != key_id:  # one lookup counted per key of the record, readable or not
                st.lookups += 1
            try:
                key = st.last_key = st.keyring.decryption_key(key_id, st)
            except (KeyNotFoundError, AccessDeniedError) as exc:
                st.last_missing = key_id
                domain = fixed_domain or st.default_domain
                if exc.owner is not None and exc.owner != (domain, st.person):
                    raise _moved(leaf, st, key_id) from None  # another domain's or person's key: not "erased"
                if view is not None and not isinstance(exc, KeyShreddedError) and is_text:
                    # no access to the value (never an erased one: the person is erased, the mask with them)
                    return _read_view(view, exc, key_id, nonce, memo.get(p) or _remember(memo, p), leaf, domain, st)
                if view is None and leaf.mask is not None and version == 2 and isinstance(exc, AccessDeniedError):
                    # producers and consumers agree on the masks (their recorded policy): a value of a masked field
                    # without its view had it stripped
                    raise _moved(leaf, st, key_id) from None
                return st.outcomes.apply(exc, leaf, key_id, st)
            except FieldcryptError as exc:
                raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc
        if key.domain != (fixed_domain or st.default_domain) or key.person != st.person:
            raise _moved(leaf, st, key_id)
        pad = memo.get(p) or _remember(memo, p)
        if version == 2:  # every value binds the count value 0 carries
            ad = key.ad_prefix2 + st.ident + pad  # st.ident: lp(schema identity) and n, from value 0
            if view is not None:  # the flags (bit 2) are bound too; a reader of the value does not open its view
                ad = _wire.with_view(key.ad_prefix2) + st.ident + pad
        else:
            ad = key.ad_prefix + pad
        try:
            pt = key.cipher.decrypt(nonce, body, ad)
            text = pt.decode("utf-8") if is_text else None
        except _DEC_ERRORS:
            raise _moved(leaf, st, key_id) from None
        if version < st.outcomes.min_version:  # refused once authenticated: a forged old value is tampering
            raise UnsupportedFormatError(
                f"the value is in format version {version}, below fieldcrypt.min.format.version",
                subject=st.subject,
                field_path=leaf.path,
                key_id=key_id,
            )
        if text is not None:
            return text
        return pt if kind == "bytes" else _wire.encode_base64(pt)

    return dec


def _collect_leaf(leaf: Leaf) -> Step:
    def collect(v: Any, p: str, st: RecordState) -> Any:
        st.seen.append((p or leaf.path, v))  # type: ignore[union-attr]  # set by tagged_values
        return v

    return collect


def _as_bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):
        raise TypeError("not bytes")
    return v


def _remember(memo: dict[str, bytes], path: str) -> bytes:
    value = _path_ad(path)
    if len(memo) < _PATH_MEMO:
        memo[path] = value
    return value


def _moved_record(subject: str | None) -> DecryptionError:
    return DecryptionError(
        "the record's encrypted values do not match what its writer wrote (one removed, nulled, added or moved)",
        subject=subject,
    )


def _moved(leaf: Leaf, st: RecordState, key_id: int) -> DecryptionError:
    return DecryptionError(
        "the ciphertext is invalid, was tampered with, or was moved from another field, record, person or subject",
        subject=st.subject,
        field_path=leaf.path,
        key_id=key_id,
    )
