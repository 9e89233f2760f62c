"""Erasure evidence: the audit chain checked and sealed, and a receipt per erasure.

**Seals.** :func:`seal` authenticates the chain's head (its seq and hash, :mod:`fieldcrypt.keys.chain`) under the
keyring's KEK: an AEAD ciphertext of the head's hash, with the seal's context (seq, time, actor) as associated data.
:func:`verify_audit` relinks the whole chain, names the first entry edited, removed, reordered or inserted, and
checks each seal whose KEK the keyring holds. Seal with a KEK only key admins hold: whoever holds it can seal a
chain they rewrote.

**Receipts.** A shred asked for one (``receipt=True``; ``fieldcrypt keys shred --receipt FILE``) returns, with its
report, a JSON document for the request: reason, time, actor, each data subject by the pseudonyms the key store
holds (never the id given), the keys destroyed (id, domain, KEK), the span of audit entries it wrote (first and
last seq, the last one's hash), what an erasure by key destruction covers and what it does not, and a seal over
all of it under the KEK. :func:`verify_receipt` checks the seal, that the store's chain is intact up to the
receipt's last entry and holds it unchanged, and that every key it names is destroyed (in the shred log, not in the
store: a key restored from a backup shows here).

    {"receipt": "fieldcrypt erasure receipt", "version": 1, "request": {...}, "subjects": [...],
     "domain": ..., "keys": [...], "audit": {"first_seq", "last_seq", "last_hash"}, "scope": {...},
     "seal": {"kek": URI, "tag": base64}}
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyStoreUnavailableError, format_key_id
from fieldcrypt.keys import chain
from fieldcrypt.keys._files import check_path, destination, shown
from fieldcrypt.keys.pseudonyms import NO_KEK

if TYPE_CHECKING:
    from fieldcrypt.keys.kek import Kek
    from fieldcrypt.keys.report import ShredReport
    from fieldcrypt.keys.store import KeyRecord

#: a :class:`fieldcrypt.keys.admin.KeyAdmin`, which imports this module (so it is not imported back)
KeyAdmin = Any

__all__ = ["Receipt", "ReceiptCheck", "read_receipt", "seal", "verify_audit", "verify_receipt"]

log = logging.getLogger("fieldcrypt.keys")

RECEIPT = "fieldcrypt erasure receipt"
_VERSION = 1
_RECEIPT_AD = b"fieldcrypt erasure receipt\x00v1"
#: what a receipt says an erasure by key destruction does and does not cover (docs/key-lifecycle.md)
SCOPE = {
    "covers": (
        "every copy of the values these keys encrypted (topics, mirrors, replicas, exports and backups of the "
        "records) is unreadable from the time of the audit entries: the keys are destroyed in the key store"
    ),
    "does_not_cover": [
        "keys a running process loaded before the shred, until its cache_ttl has passed",
        "copies of the wrapped keys in key-store backups, WAL archives and replicas until their retention ends "
        "(still wrapped by the KEK; re-apply the shred log after a restore)",
        "fields not encrypted (the data-subject id itself, untagged fields, message keys and headers in clear)",
        "plaintext copies made downstream (warehouses, search indexes, logs, caches of decrypted values)",
        "records written before their fields were encrypted, or after the shred (new keys)",
    ],
    "see": "docs/key-lifecycle.md#what-is-not-protected",
}


def sealing_kek(admin: KeyAdmin, what: str) -> Kek:
    kek: Kek = admin._src.kek
    if kek.uri == NO_KEK:
        raise ConfigurationError(
            f"{what} is sealed under a KEK an admin holds: pass --kek URI (a KEK of yours), set FIELDCRYPT_KEK, or "
            "open the Keyring with one"
        )
    return kek


def _kek_by_uri(admin: KeyAdmin, uri: str) -> Kek | None:
    keks: list[Kek] = list(admin._src.keks)
    for kek in keks:
        if kek.uri == uri:
            return kek
    return None


def _opens(admin: KeyAdmin, kek: Kek, tag: bytes, expected: bytes, ad: bytes) -> bool | None:
    """Whether ``tag`` authenticates ``expected`` under ``kek`` with ``ad``: None when a remote KEK denies this
    process access (it cannot tell); a KEK that cannot be reached raises (retried within the deadline)."""
    from fieldcrypt.keys.kek import classify_failure

    src = admin._src
    deadline = src._deadline()

    def attempt() -> bool | None:
        try:
            opened = src._kms(lambda: kek.aead.decrypt(tag, ad), deadline, f"KEK {kek.uri!r}")
        except Exception as exc:  # tink.TinkError, a KMS client's own exception, KmsTimeout
            verdict = classify_failure(kek, exc, tag)
            if not kek.remote or verdict == "corrupt":
                return False  # not made by this KEK, or not over this content
            if verdict == "denied":
                return None
            raise KeyStoreUnavailableError(f"KEK {kek.uri!r} could not check a seal ({type(exc).__name__})") from None
        return bool(hmac.compare_digest(opened, expected))

    result: bool | None = src._call(attempt, deadline)
    return result


def seal(admin: KeyAdmin) -> chain.Seal:
    """Seal the audit chain's head (as it is now) under the keyring's KEK, and record the seal in the store."""
    src = admin._src
    kek = sealing_kek(admin, "a seal of the audit log")
    checked = verify_audit(admin)
    if checked.broken is not None:  # a seal on a broken chain proves nothing: say what is wrong instead
        raise ConfigurationError(
            f"the audit log's chain is broken at entry {checked.broken.seq} ({checked.broken.kind}): "
            f"{checked.broken.text}; not sealed"
        )
    head = src._call(lambda: _head(admin))
    if head is None:
        raise ConfigurationError("the audit log is empty: nothing to seal")
    seq, digest = head
    at = src.clock.now()
    ad = chain.seal_context(seq, digest, at, src.actor)
    tag = admin._wrap_with(kek, "an audit seal", lambda: kek.aead.encrypt(digest, ad))
    made = chain.Seal(seq, digest, float(at), src.actor, kek.uri, tag)
    src._call(lambda: src.store.add_seal(made))
    return made


def _head(admin: KeyAdmin) -> tuple[int, bytes] | None:
    store = admin._src.store
    newest = store.audit_log(1)
    if not newest:
        return None
    rows = store.audit_chain(newest[-1].seq - 1, 1)
    if not rows or rows[0][9] is None:
        raise ConfigurationError(
            f"the newest audit entry ({newest[-1].seq}) carries no chain link: check the log with "
            "`fieldcrypt keys audit --verify` before sealing it"
        )
    return int(rows[0][0]), bytes(rows[0][9])


def _rows(admin: KeyAdmin, until: int | None = None) -> list[tuple[Any, ...]]:
    """The audit entries (to seq ``until`` if given), in seq order, read a page at a time."""
    store = admin._src.store
    out: list[tuple[Any, ...]] = []
    after = -(2**62)
    while True:
        rows = admin._src._call(lambda a=after: store.audit_chain(a, 5000))
        for r in rows:
            if until is not None and int(r[0]) > until:
                return out
            out.append(r)
        if len(rows) < 5000:
            return out
        after = int(rows[-1][0])


def verify_audit(admin: KeyAdmin, *, until: int | None = None) -> chain.AuditCheck:
    """Check the audit chain (to entry ``until`` if given) and every seal in it whose KEK this keyring holds."""
    return _verified(admin, until)[0]


def _verified(admin: KeyAdmin, until: int | None) -> tuple[chain.AuditCheck, list[tuple[Any, ...]]]:
    """:func:`verify_audit`, and the entries it read."""
    src = admin._src
    # the seals first: each names an entry the rows read after it hold (a seal made meanwhile is not a mismatch)
    seals = [s for s in src._call(src.store.audit_seals) if until is None or s.seq <= until]
    rows = _rows(admin, until)

    def authentic(s: chain.Seal) -> bool | None:
        kek = _kek_by_uri(admin, s.kek_uri)
        if kek is None:
            return None
        return _opens(admin, kek, s.tag, s.hash, chain.seal_context(s.seq, s.hash, s.at, s.actor))

    return chain.check(rows, seals, authentic), rows


# -- receipts ---------------------------------------------------------------------------------------------------------
def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Receipt:
    """The receipt of one erasure request (see the module's docstring). ``document`` is the JSON object as
    written, seal included; :meth:`write` puts it in a file (mode 0600)."""

    document: Mapping[str, Any] = field(repr=False)

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, sort_keys=True) + "\n"

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        asked = check_path(path, "the receipt")
        p = destination(asked, "the receipt")
        name = shown(asked, p)
        if not p.parent.is_dir():
            raise ConfigurationError(f"cannot write the receipt {name}: directory {str(p.parent)!r} does not exist")
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL), 0o600)
        except FileExistsError:
            raise ConfigurationError(f"the receipt {name} already exists; pass --force to replace it") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot write the receipt {name}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        return p


def reserve(path: str | os.PathLike[str]) -> Path:
    """Create the receipt's file, empty (mode 0600), before the shred it is for: a name that cannot be written, or
    that exists, is refused while nothing is destroyed yet. Returns the file to write (a link's target)."""
    asked = check_path(path, "the receipt")
    try:
        p = destination(asked, "the receipt")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the receipt {str(asked)!r}: {exc.strerror or type(exc).__name__} (nothing was destroyed)"
        ) from None
    name = shown(asked, p)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"the receipt {name} already exists: name a new file (nothing was destroyed)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the receipt {name}: {exc.strerror or type(exc).__name__} (nothing was destroyed)"
        ) from None
    os.close(fd)
    return p


def make_receipt(
    admin: KeyAdmin,
    report: ShredReport,
    held: list[KeyRecord],
    groups: list[tuple[str, ...]] | None,
    reason: str,
    at: float,
    span_before: tuple[int, int, bytes] | None,
) -> Receipt:
    """The sealed receipt of a shred that just ran (``held``: the keys it was to destroy, read just before, for
    their KEKs; ``groups``: each data subject's pseudonyms, in the order of ``report.persons``)."""
    src = admin._src
    kek = sealing_kek(admin, "a receipt")
    span = src.store.last_audit_span()
    if span is None or span is span_before:
        raise ConfigurationError("the shred wrote no audit entry this process can name")
    first, last, digest = span
    keks = {r.key_id: r.kek_uri for r in held}
    owner = {r.key_id: r.person for r in held}
    gone = {r.key_id: r for r in report.destroyed}

    def key_row(key_id: int) -> dict[str, Any]:
        r = gone[key_id]
        return {"key_id": format_key_id(key_id), "domain": r.domain, "kek": keks.get(key_id, "")}

    subjects = []
    if groups is not None:
        for person, names in zip(report.persons, groups, strict=True):
            refs = sorted({str(owner[k]) for k in person.key_ids if owner.get(k)})
            subjects.append(
                {
                    "references": refs or list(names[:1]),
                    "outcome": person.outcome,
                    "keys": [key_row(k) for k in person.key_ids],
                    "previously_shredded": person.previously_shredded,
                }
            )
    body: dict[str, Any] = {
        "receipt": RECEIPT,
        "version": _VERSION,
        "request": {"reason": reason, "at": _iso(at), "at_epoch": at, "actor": src.actor, "target": report.target},
        "store": _store_name(src.store.url),
        "subjects": subjects,
        "keys": [key_row(r.key_id) for r in report.destroyed] if groups is None else [],
        "destroyed": len(report.destroyed),
        "audit": {"first_seq": first, "last_seq": last, "last_hash": digest.hex()},
        "scope": SCOPE,
    }
    digest_body = hashlib.sha256(_canonical(body)).digest()
    tag = admin._wrap_with(kek, "a receipt", lambda: kek.aead.encrypt(digest_body, _RECEIPT_AD))
    body["seal"] = {"kek": kek.uri, "tag": base64.b64encode(tag).decode("ascii")}
    # the audit chain's head sealed too, so rewriting the chain later shows without the receipt: best effort (the
    # receipt pins the chain by itself; a login that may not add seals still gets its receipt)
    try:
        at_seal = src.clock.now()
        ad = chain.seal_context(last, digest, at_seal, src.actor)
        seal_tag = admin._wrap_with(kek, "an audit seal", lambda: kek.aead.encrypt(digest, ad))
        src._call(lambda: src.store.add_seal(chain.Seal(last, digest, float(at_seal), src.actor, kek.uri, seal_tag)))
    except FieldcryptError as exc:
        log.warning("the receipt is written, but the audit log was not sealed at its entries: %s", exc)
    return Receipt(body)


def _store_name(url: str) -> str:
    from fieldcrypt.keys.store import redact_url

    return redact_url(url)


_KEYS = {"receipt", "version", "request", "store", "subjects", "keys", "destroyed", "audit", "scope", "seal"}


#: the largest receipt file read (a receipt of 1,000,000 data subjects is about 300 MB)
_MAX_RECEIPT = 1 << 30
_SEQ_MAX = (1 << 63) - 1


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_receipt(path: str | os.PathLike[str]) -> Receipt:
    """A receipt file, checked for its shape (not yet for its seal: :func:`verify_receipt`)."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                raise ConfigurationError(f"the receipt {name!r} is not a regular file")
            data = f.read(_MAX_RECEIPT + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the receipt {name!r}: {exc.strerror}") from None
    if len(data) > _MAX_RECEIPT:
        raise ConfigurationError(f"the receipt {name!r} is larger than any receipt fieldcrypt writes")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError, JSONDecodeError, a duplicate key)
        why = str(exc) if str(exc).startswith("duplicate key") else "not JSON"
        raise ConfigurationError(f"the receipt {name!r} is not as written: {why}") from None
    check_shape(doc, name)
    return Receipt(doc)


def check_shape(doc: Any, name: str) -> None:
    """Refuse (``ConfigurationError`` naming ``name``) a receipt that is not as :func:`make_receipt` writes one."""
    if not isinstance(doc, Mapping) or doc.get("receipt") != RECEIPT:
        raise ConfigurationError(f"{name!r} is not a fieldcrypt erasure receipt")
    if doc.get("version") != _VERSION:
        raise ConfigurationError(f"the receipt {name!r} is of version {doc.get('version')!r}; this reads {_VERSION}")
    if set(doc) != _KEYS:
        extra, missing = sorted(set(doc) - _KEYS), sorted(_KEYS - set(doc))
        raise ConfigurationError(f"the receipt {name!r} is not as written (unknown: {extra}, missing: {missing})")
    audit, sealed, request = doc["audit"], doc["seal"], doc["request"]

    def seq(v: Any) -> bool:
        return type(v) is int and 0 < v <= _SEQ_MAX

    def key(k: Any) -> bool:
        return isinstance(k, Mapping) and isinstance(k.get("key_id"), str) and len(k["key_id"]) <= 18

    ok = (
        isinstance(audit, Mapping)
        and seq(audit.get("first_seq"))
        and seq(audit.get("last_seq"))
        and audit["first_seq"] <= audit["last_seq"]
        and isinstance(audit.get("last_hash"), str)
        and isinstance(request, Mapping)
        and isinstance(request.get("reason"), str)
        and isinstance(request.get("actor"), str)
        and isinstance(sealed, Mapping)
        and isinstance(sealed.get("kek"), str)
        and isinstance(sealed.get("tag"), str)
        and isinstance(doc["subjects"], list)
        and isinstance(doc["keys"], list)
        and all(key(k) for k in doc["keys"])
        and all(
            isinstance(s, Mapping)
            and isinstance(s.get("keys"), list)
            and all(key(k) for k in s["keys"])
            and isinstance(s.get("references"), list)
            and all(isinstance(r, str) for r in s["references"])
            for s in doc["subjects"]
        )
    )
    if not ok:
        raise ConfigurationError(f"the receipt {name!r} is not as written (its request, audit, seal or keys)")


@dataclass(frozen=True)
class ReceiptCheck:
    """What :func:`verify_receipt` found: ``seal`` (``authentic``, ``forged`` or ``unchecked``: the KEK not held),
    ``chain`` (the audit chain up to the receipt's last entry), ``entry`` (the store's entry at that seq holds the
    receipt's hash: ``same``, ``changed`` or ``missing``), and each key named that is not destroyed (``present``:
    in the store again, e.g. restored from a backup; ``unknown``: in neither the store nor the shred log)."""

    seal: str
    chain: chain.AuditCheck
    entry: str
    keys: int
    not_destroyed: tuple[tuple[str, str], ...] = ()
    #: where the audit entries the receipt names do not say what it says (empty: they do)
    mismatches: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return (
            self.seal == "authentic"
            and self.chain.broken is None
            and self.entry == "same"
            and not self.not_destroyed
            and not self.mismatches
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seal": self.seal,
            "audit_chain": self.chain.as_dict(),
            "entry": self.entry,
            "keys": self.keys,
            "not_destroyed": [{"key_id": k, "state": s} for k, s in self.not_destroyed],
            "entries_differ": list(self.mismatches),
        }


def verify_receipt(admin: KeyAdmin, receipt: Receipt) -> ReceiptCheck:
    """Check ``receipt`` against its seal and the key store (see the module's docstring)."""
    src = admin._src
    check_shape(receipt.document, "receipt")
    doc = dict(receipt.document)
    sealed = doc.pop("seal")
    try:
        tag = base64.b64decode(sealed["tag"], validate=True)
    except ValueError:
        tag = b""
    kek = _kek_by_uri(admin, str(sealed["kek"]))
    if kek is None:
        verdict = "unchecked"
    else:
        expected = hashlib.sha256(_canonical(doc)).digest()
        opened = _opens(admin, kek, tag, expected, _RECEIPT_AD) if tag else False
        verdict = "unchecked" if opened is None else "authentic" if opened else "forged"
    first, last = int(doc["audit"]["first_seq"]), int(doc["audit"]["last_seq"])
    checked, rows = _verified(admin, last)
    entries = [r for r in rows if int(r[0]) >= first]  # (the chain check read them: not read again)
    if not entries or int(entries[-1][0]) != last:
        entry = "missing"
    else:
        link = entries[-1][9]
        entry = (
            "same" if chain._digest(link) is not None and bytes(link).hex() == doc["audit"]["last_hash"] else "changed"
        )
    named = [k for s in doc["subjects"] for k in s["keys"]] + list(doc["keys"])
    problems: list[tuple[str, str]] = []
    ids: dict[str, int] = {}
    for k in named:
        text = str(k["key_id"])
        try:
            ids[text] = int(text, 16)
        except ValueError:
            problems.append((text, "unknown"))
    held, shredded = src._call(lambda: src.store.key_ids_held(sorted(set(ids.values()))))
    for text, key_id in ids.items():
        if key_id in held:
            problems.append((text, "present"))  # in the store again: a restored backup, without the shred log
        elif key_id not in shredded:
            problems.append((text, "unknown"))
    differ = _differences(doc, entries, first, last, set(ids.values())) if entry != "missing" else []
    return ReceiptCheck(verdict, checked, entry, len(named), tuple(problems), tuple(differ))


def _differences(
    doc: Mapping[str, Any], entries: list[tuple[Any, ...]], first: int, last: int, key_ids: set[int]
) -> list[str]:
    """Where the audit entries a receipt names do not say what the receipt says: each is a shred of its request
    (reason, actor), the keys they name are the receipt's keys, and each data subject it names is named there."""
    out: list[str] = []
    request = doc["request"]
    if not entries or int(entries[0][0]) != first:
        out.append(f"audit entry {first}, the receipt's first, is not in the log")
    logged: set[int] = set()
    persons: set[str] = set()
    for r in entries:
        seq, operation, actor, reason = int(r[0]), r[3], r[2], r[7]
        if operation != "shred" or reason != request["reason"] or actor != request["actor"]:
            out.append(f"audit entry {seq} is not a shred of this request (its operation, reason or actor differ)")
        persons.update(str(r[5] or "").split())
        for text in str(r[6] or "").split(","):
            if text:
                try:
                    logged.add(int(text, 16))
                except ValueError:
                    out.append(f"audit entry {seq} names a key id that is not one")
    if logged != key_ids:
        out.append(
            f"the audit entries {first} to {last} name {len(logged)} keys destroyed, the receipt {len(key_ids)}, "
            "not the same ones"
        )
    for s in doc["subjects"]:
        if s["keys"] and not set(s["references"]) <= persons:
            out.append("a data subject of the receipt is not named in its audit entries")
    return out
