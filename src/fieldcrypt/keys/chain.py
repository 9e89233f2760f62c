"""The audit log as a hash chain: each entry's hash covers the previous entry's hash, its own position and every
column it holds, so an entry edited, removed, reordered or inserted afterwards breaks the chain at that entry.

    hash(n) = SHA-256( hash(n-1) || seq (8 bytes, big-endian) || at (IEEE-754 double, big-endian)
                       || for actor, operation, domain, person, key_ids, reason, detail:
                          length (4 bytes, big-endian; -1 for a NULL domain) || UTF-8 bytes )
    hash(0) = 32 zero bytes

The store computes it as it appends (PostgreSQL's functions compute the same bytes in SQL:
``fieldcrypt_audit_append`` in :mod:`fieldcrypt.keys._pg_roles`), under a lock that keeps the chain linear however
many processes append at once. Whoever can write the database can recompute a whole chain, so the head is also
**sealed**: a seal is the (seq, hash) of an entry, authenticated under a KEK an admin holds (an AEAD ciphertext of
the hash with the seal's context as associated data, so an AWS, GCP or Vault KEK seals as a local keyset does).
A rewritten chain no longer matches its seals; a seal cannot be made without the KEK.

This module is pure: it links and checks rows handed to it; the stores read and write them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GENESIS",
    "AuditCheck",
    "ChainBreak",
    "Seal",
    "SealProblem",
    "check",
    "link",
    "seal_context",
]

#: the hash before the first entry
GENESIS = bytes(32)
_Q = struct.Struct(">q")
_D = struct.Struct(">d")
_I = struct.Struct(">i")
_NULL = _I.pack(-1)
_SEAL = b"fieldcrypt audit seal\x00v1\x00"


def _text(value: Any) -> bytes:
    if value is None:
        return _NULL
    data = str(value).encode("utf-8")
    return _I.pack(len(data)) + data


def link(prev: bytes | None, seq: int, row: Sequence[Any]) -> bytes:
    """The hash of the entry at ``seq`` whose columns after ``seq`` are ``row`` (at, actor, operation, domain,
    person, key_ids, reason, detail), following the entry whose hash is ``prev``: :func:`links` of one."""
    return links(prev, seq, [row])[0]


def links(prev: bytes | None, seq: int, rows: Sequence[Sequence[Any]]) -> list[bytes]:
    """The hashes of consecutive entries from ``seq`` on (each row as for :func:`link`), the first following
    ``prev``: :func:`link` over a batch, the columns a batch repeats (actor, operation, domain, reason) encoded
    once."""
    out: list[bytes] = []
    memo: dict[Any, bytes] = {}
    sha, q, d = hashlib.sha256, _Q.pack, _D.pack
    for at, actor, operation, domain, person, key_ids, reason, detail in rows:
        head = memo.get((actor, operation, domain))
        if head is None:
            head = memo[(actor, operation, domain)] = _text(actor) + _text(operation) + _text(domain)
        tail = memo.get(reason)
        if tail is None:
            tail = memo[reason] = _text(reason)
        p = person.encode("utf-8")
        k = key_ids.encode("utf-8")
        t = detail.encode("utf-8")
        prev = sha(
            b"".join(
                (
                    prev or b"",
                    q(seq),
                    d(float(at)),
                    head,
                    _I.pack(len(p)),
                    p,
                    _I.pack(len(k)),
                    k,
                    tail,
                    _I.pack(len(t)),
                    t,
                )
            )
        ).digest()
        out.append(prev)
        seq += 1
    return out


def seal_context(seq: int, digest: bytes, at: float, actor: str) -> bytes:
    """The associated data of a seal of the entry (seq, digest), made at ``at`` by ``actor``."""
    return _SEAL + _Q.pack(int(seq)) + bytes(digest) + _D.pack(float(at)) + actor.encode("utf-8")


@dataclass(frozen=True)
class Seal:
    """The head of the chain at ``seq`` (its ``hash``), authenticated under the KEK ``kek_uri`` (``tag``)."""

    seq: int
    hash: bytes
    at: float
    actor: str
    kek_uri: str
    tag: bytes = field(repr=False)


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain first breaks: the entry at ``seq`` and what was done there (``edited``, ``removed``,
    ``reordered``, ``inserted``), in words (``text``)."""

    seq: int
    kind: str
    text: str


@dataclass(frozen=True)
class SealProblem:
    """A seal that does not hold: ``why`` is ``mismatch`` (the chain at ``seq`` is not the chain sealed),
    ``forged`` (the tag does not authenticate under the KEK named) or ``unchecked`` (no such KEK given)."""

    seq: int
    kek_uri: str
    why: str


@dataclass(frozen=True)
class AuditCheck:
    """The result of checking an audit log's chain and seals (:meth:`fieldcrypt.Keyring.verify_audit`).

    ``ok``: no break, and no seal that fails (``mismatch``, ``forged``). A seal whose KEK was not given is listed in
    ``problems`` as ``unchecked``: it does not fail the check, but without a seal checked (``sealed_seq`` 0) a
    chain rewritten as a whole would not show."""

    entries: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None = None
    seals: int = 0
    sealed_seq: int = 0
    problems: tuple[SealProblem, ...] = ()
    #: entries after the last seal that holds (chained, but a rewrite of them would not show)
    unsealed: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None and all(p.why == "unchecked" for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "break": None
            if self.broken is None
            else {"seq": self.broken.seq, "kind": self.broken.kind, "text": self.broken.text},
            "seals": self.seals,
            "sealed_through": self.sealed_seq,
            "unsealed_entries": self.unsealed,
            "seal_problems": [{"seq": p.seq, "kek": p.kek_uri, "why": p.why} for p in self.problems],
        }


#: a row of the audit log as the check reads it: (seq, at, actor, operation, domain, person, key_ids, reason,
#: detail, hash)
Row = Sequence[Any]


def _digest(value: Any) -> bytes | None:
    """A link as stored: 32 bytes, or None for anything else (NULL, empty, text, a number)."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == len(GENESIS):
        return bytes(value)
    return None


def _links(prev: bytes | None, seq: int, row: Row) -> bool:
    digest = _digest(row[9])
    if digest is None:
        return False
    try:
        return link(prev, seq, row[1:9]) == digest
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError, AttributeError, struct.error):  # another type
        return False


def _classify(rows: list[Row], j: int) -> ChainBreak:
    """What was done at ``rows[j]``, the first entry that does not link to the one before it."""
    r = rows[j]
    seq = int(r[0])
    prev_seq = int(rows[j - 1][0]) if j else 0
    prev = _digest(rows[j - 1][9]) if j else GENESIS
    nxt = rows[j + 1] if j + 1 < len(rows) else None
    if _digest(r[9]) is None:
        return ChainBreak(seq, "inserted", f"entry {seq} carries no chain link: it was written outside fieldcrypt")
    if seq > prev_seq + 1:
        gone = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1} to {seq - 1}"
        return ChainBreak(seq, "removed", f"entry {gone} was removed (entry {seq} no longer follows its predecessor)")
    if nxt is not None:
        n_seq = int(nxt[0])
        if _links(_digest(r[9]), n_seq, nxt):
            return ChainBreak(seq, "edited", f"entry {seq} was edited after it was written")
        if _digest(nxt[9]) is not None and _links(_digest(nxt[9]), n_seq, r):
            return ChainBreak(seq, "reordered", f"entries {seq} and {n_seq} were swapped")
        if _links(prev, n_seq - 1, nxt):
            return ChainBreak(seq, "inserted", f"entry {seq} was inserted (the entries after it were renumbered)")
        if _links(_digest(r[9]), n_seq + 1, nxt):
            return ChainBreak(
                seq, "removed", f"an entry before {seq} was removed (the entries after it were renumbered)"
            )
    hashes = [(GENESIS, 0)] + [(d, int(x[0])) for x in rows if (d := _digest(x[9])) is not None and int(x[0]) != seq]
    for h, s in hashes:
        # written as entry s + 1 after the entry now at s, or (two entries swapped) as entry s after it
        for written in (s + 1, s):
            if written != seq and written > 0 and _links(h, written, r):
                return ChainBreak(seq, "reordered", f"entry {seq} was moved: it was written as entry {written}")
    if nxt is None:
        return ChainBreak(seq, "edited", f"entry {seq}, the newest, was edited, or written outside fieldcrypt")
    return ChainBreak(seq, "edited", f"entry {seq} was edited, and the chain after it rewritten")


def check(
    rows: Iterable[Row],
    seals: Iterable[Seal],
    authentic: Callable[[Seal], bool | None],
) -> AuditCheck:
    """Check an audit log (``rows`` in seq order) and its seals (read before the rows: a seal names an entry the rows
    hold, unless the log lost it). ``authentic(seal)``: True if the tag authenticates under its KEK, False if not,
    None if that KEK is not at hand."""
    listed = list(rows)
    hashes: dict[int, bytes | None] = {}
    broken: ChainBreak | None = None
    prev: bytes | None = GENESIS
    for j, r in enumerate(listed):
        seq = int(r[0])
        hashes[seq] = _digest(r[9])
        if broken is None and not _links(prev, seq, r):  # (a gap the chain covers is no removal: an old store's)
            broken = _classify(listed, j)
        prev = hashes[seq]
    problems: list[SealProblem] = []
    count = 0
    sealed = 0
    for s in seals:
        count += 1
        if hashes.get(s.seq) != s.hash or (broken is not None and s.seq >= broken.seq):
            problems.append(SealProblem(s.seq, s.kek_uri, "mismatch"))
            continue
        verdict = authentic(s)
        if verdict is None:
            problems.append(SealProblem(s.seq, s.kek_uri, "unchecked"))
        elif not verdict:
            problems.append(SealProblem(s.seq, s.kek_uri, "forged"))
        else:
            sealed = max(sealed, s.seq)
    last = listed[-1] if listed else None
    unsealed = sum(1 for r in listed if int(r[0]) > sealed)
    return AuditCheck(
        entries=len(listed),
        head_seq=int(last[0]) if last is not None else 0,
        head_hash=(_digest(last[9]) or b"").hex() if last is not None else "",
        broken=broken,
        seals=count,
        sealed_seq=sealed,
        problems=tuple(problems),
        unsealed=unsealed,
    )
