"""``fieldcrypt kek`` and ``fieldcrypt keys``: the key admin's commands. Every command is also a Keyring method
(the Python API).

JSON output (``--json``) follows one convention everywhere: key ids as ``0x`` and eight hex digits, times as
ISO-8601 in UTC, lists as JSON arrays. Tables escape control characters (``\\x1b``, ``\\n``, bidi overrides...) in
every cell, since domains and data-subject ids come from producers.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from functools import partial
from typing import Any

from fieldcrypt.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_PENDING,
    NotFoundError,
    Progress,
    UsageError,
    clean,
    emit,
    given,
    plain_table,
    table,
)
from fieldcrypt.cli._config import Settings, kek_setting
from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyNotFoundError, format_key_id
from fieldcrypt.keys import evidence, shredlog
from fieldcrypt.keys.kek import DEFAULT_KMS_TIMEOUT, Kek, create_local_kek
from fieldcrypt.keys.keyring import Keyring, ShredReport, SkippedRotation, migrate_pseudonyms
from fieldcrypt.keys.pseudonyms import NO_KEK
from fieldcrypt.keys.registry import create_key_store, grant_role, open_store
from fieldcrypt.keys.store import OPERATIONS, ROLES, AuditEntry, KeyRecord, ShredRecord, redact_url

__all__ = ["keyring_of", "register"]


class _NoKekAead:
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        raise ConfigurationError("this command needs the KEK: pass --kek URI or set FIELDCRYPT_KEK")

    decrypt = encrypt


_time = shredlog.iso_time

#: what the RESERVED column (JSON ``reserved``) counts; said by ``keys list --help``, ``keys show --help`` and under
#: ``keys show``'s table
RESERVED = (
    "RESERVED is the number of encryptions reserved by producers (in blocks of rotation.lease, 65536 by default); "
    "the values actually encrypted are at most this; the rotation cap (rotation.max_encryptions) counts reservations."
)


def _key_row(r: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": format_key_id(r.key_id),
        "domain": r.domain,
        "data_subject": r.person,
        "version": r.version,
        "state": r.state,
        "reserved": r.encryptions,
        "kek": r.kek_uri,
        "created_at": _time(r.created_at),
        "shredded_at": None,
    }


def _shredded_row(r: ShredRecord) -> dict[str, Any]:
    """A destroyed key, in the columns of a held one (what it no longer has is null): the shred log keeps its id,
    domain, data subject and shred time."""
    return {
        "key_id": format_key_id(r.key_id),
        "domain": r.domain,
        "data_subject": r.person,
        "version": None,
        "state": "shredded",
        "reserved": None,
        "kek": None,
        "created_at": None,
        "shredded_at": _time(r.shredded_at),
    }


def _key_table(rows: list[dict[str, Any]]) -> str | None:
    """Keys as a table; the SHREDDED_AT column only when a shredded key is listed (JSON always has the field)."""
    if not any(r["shredded_at"] for r in rows):
        rows = [{k: v for k, v in r.items() if k != "shredded_at"} for r in rows]
    return table(rows)


#: ``keys list --state``: which keys (``stored``: the ones the store holds, active and retired)
_STATES = {
    "active": ("active",),
    "retired": ("retired",),
    "shredded": ("shredded",),
    "stored": ("active", "retired"),
    "all": ("active", "retired", "shredded"),
}


def _list(args: argparse.Namespace, kr: Keyring) -> None:
    domain, person = given(args.domain, "--domain"), given(args.data_subject, "--data-subject")
    state = args.state or ("all" if domain is not None or person is not None else "stored")
    wanted = _STATES[state]
    rows: list[dict[str, Any]] = []
    if set(wanted) - {"shredded"}:  # held keys first, in the store's order; then the shredded ones
        rows += [_key_row(r) for r in kr.keys(domain, person) if r.state in wanted]
    if "shredded" in wanted:
        rows += [_shredded_row(r) for r in kr.shredded_keys(domain, person)]
    emit(args, rows, lambda: _key_table(rows))


def _audit_row(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": _time(e.at),
        "actor": e.actor,
        "operation": e.operation,
        "domain": e.domain,
        "data_subject": e.person,
        "key_ids": [format_key_id(k) for k in e.key_ids],
        "reason": e.reason,
        "detail": e.detail,
    }


def _shred_summary(report: ShredReport, reason: str) -> dict[str, Any]:
    return {
        "target": report.target,
        "dry_run": report.dry_run,
        "pending": report.pending,
        "noop": report.noop,
        "destroyed": len(report.destroyed),
        "key_ids": [format_key_id(r.key_id) for r in report.destroyed],
        "previously_shredded": report.previously_shredded,
        "reason": reason,
        "data_subjects": [
            {
                "data_subject": p.person,
                "outcome": "would be erased" if report.dry_run and p.key_ids else p.outcome,
                "key_ids": [format_key_id(k) for k in p.key_ids],
                "previously_shredded": p.previously_shredded,
            }
            for p in report.persons
        ],
    }


#: the keys the shred confirmation lists before asking (``--dry-run`` lists every one)
_PLAN_SHOWN = 50
#: the data subjects a done shred lists in text (``--json`` lists every one; the audit log has an entry for each)
_DONE_SHOWN = 1000


def _plan_rows(report: ShredReport) -> list[dict[str, Any]]:
    """What a shred would destroy: one row per key (data subject, domain, key id), and one for each person named
    who holds no key (with why: "no key held", "already erased"). The table of ``--dry-run`` and of the prompt."""
    if not report.persons:
        return [_plan_row(r.person, r.domain, r.key_id, "would be erased") for r in report.destroyed]
    held: dict[str | None, list[ShredRecord]] = {}
    for r in report.destroyed:
        held.setdefault(r.person, []).append(r)
    rows = []
    for p in report.persons:
        keys = held.get(p.person, [])
        rows += [_plan_row(p.person, r.domain, r.key_id, "would be erased") for r in keys]
        if not keys:
            rows.append(_plan_row(p.person, None, None, p.outcome))
    return rows


def _plan_row(person: str | None, domain: str | None, key_id: int | None, outcome: str) -> dict[str, Any]:
    key = format_key_id(key_id) if key_id is not None else None
    return {"data_subject": person, "domain": domain, "key_id": key, "outcome": outcome}


def _confirmation(plan: ShredReport) -> str:
    """The question asked on a terminal before a shred: what will be destroyed (the plan's table), then 'yes'?"""
    keys = plan.destroyed
    subjects = len({r.person for r in keys if r.person is not None})
    shared = sum(1 for r in keys if r.person is None)
    parts = [f"{_count(len(keys) - shared, 'key')} of {_count(subjects, 'data subject')}"] if subjects else []
    if shared:
        parts.append(_count(shared, "domain-wide key"))
    rows = _plan_rows(plan)
    shown = plain_table(rows[:_PLAN_SHOWN])
    if len(rows) > _PLAN_SHOWN:
        shown += f"\n... and {len(rows) - _PLAN_SHOWN} more (--dry-run lists them all)"
    if not keys:
        return (
            f"{clean(plan.target)}: no key to destroy; the shred records the request in the audit log:\n{shown}\n"
            "Type 'yes' to record it: "
        )
    return f"This will destroy {' and '.join(parts)}:\n{shown}\nThis cannot be undone. Type 'yes' to destroy them: "


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shred_text(report: ShredReport) -> str | None:
    print(clean(str(report)))
    if report.dry_run:
        return table(_plan_rows(report))
    if report.persons:
        subjects = report.persons
        rows = [
            {"data_subject": p.person, "outcome": p.outcome, "keys": [format_key_id(k) for k in p.key_ids]}
            for p in subjects[:_DONE_SHOWN]
        ]
        shown = table(rows)
        if len(subjects) <= _DONE_SHOWN:
            return shown
        outcomes: dict[str, int] = {}
        for p in subjects:
            outcomes[p.outcome] = outcomes.get(p.outcome, 0) + 1
        counted = ", ".join(f"{n} {clean(str(o))}" for o, n in sorted(outcomes.items()))
        more = f"... and {len(subjects) - _DONE_SHOWN} more data subjects (--json lists them all); in all: {counted}"
        return more if shown is None else f"{shown}\n{more}"
    if report.destroyed:
        ids = [format_key_id(r.key_id) for r in report.destroyed[:5]]
        return f"keys: {','.join(ids[:4])}" + (f",+{len(report.destroyed) - 4}" if len(report.destroyed) > 4 else "")
    return None


def _show_text(rows: list[dict[str, Any]]) -> None:
    shown = _key_table(rows)
    if shown is not None:
        print(shown)
    print(RESERVED)


def register(sub: Any, common: argparse.ArgumentParser, store: argparse.ArgumentParser) -> None:
    """Add ``kek`` and ``keys`` to the top-level subcommands."""
    kek = sub.add_parser("kek", help="key-encryption keys (local keysets)", description="Key-encryption keys.")
    kek_sub = kek.add_subparsers(dest="action", metavar="ACTION")
    create = kek_sub.add_parser(
        "create",
        parents=[common],
        help="create a local KEK file (Tink AES-256-GCM keyset, mode 0600)",
        description="Create a local KEK file and print its URI (local-kek:///PATH). Refuses to overwrite.",
    )
    create.add_argument("path", help="where to write the keyset file")
    create.add_argument("--force", action="store_true", help="overwrite an existing file (loses its keys!)")
    create.set_defaults(run=_run_kek)
    kek_list = kek_sub.add_parser(
        "list",
        parents=[common, store],
        help="which KEK wraps each key domain (primary, and accepted ones during a change)",
        description="List each key domain's KEKs as the key store records them: PRIMARY wraps its new keys; "
        "ACCEPTED may still wrap some of its keys during a KEK change; KEYS counts the keys each KEK wraps.",
    )
    kek_list.set_defaults(run=_run_domain_kek)
    for name, help_text in (
        ("map", "record the KEK of a domain that has none yet (before its first producer runs)"),
        ("add", "step 1 of a KEK change: accept a new KEK for a domain (then let every client learn it)"),
        ("promote", "step 2: make an accepted KEK the domain's primary (then: keys rewrap --domain)"),
        ("retire", "step 4: drop an accepted KEK that no longer wraps any key of the domain"),
    ):
        p = kek_sub.add_parser(
            name,
            parents=[common, store],
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. An audited admin act; the keyring opened with "
            "--kek must hold the KEK named.",
        )
        p.add_argument("domain", help="the key domain")
        p.add_argument("uri", help="the KEK's URI")
        p.add_argument("--reason", default="", help="why, for the audit log")
        p.set_defaults(run=_run_domain_kek)

    keys = sub.add_parser("keys", help="data keys: list, rotate, rewrap, shred, audit", description="Data keys.")
    ks = keys.add_subparsers(dest="action", metavar="ACTION")
    parents = [common, store]

    def cmd(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ks.add_parser(name, parents=parents, help=help, description=description or help)
        p.set_defaults(run=_run_keys)
        return p

    cmd("init", "create the key store at --store (or upgrade its tables); SQLite files: 0600")
    c = cmd(
        "list",
        "list data keys: active, retired, and shredded ones",
        "List data keys: the ones the store holds (active: encrypts new data; retired: decrypts old data only) and "
        "shredded ones (from the shred log: id, domain, data subject and SHREDDED_AT; the rest is gone). By default, "
        "with --domain or --data-subject every state is listed (a shredded person's keys show as shredded), "
        f"without them only the keys the store holds (--state stored). {RESERVED}",
    )
    c.add_argument("--domain", help="only keys of this key domain")
    c.add_argument("--data-subject", help="only keys of this data subject (person)")
    c.add_argument(
        "--state",
        choices=list(_STATES),
        default=None,
        help="only keys in this state; stored: active and retired; all: shredded ones too (default: all with "
        "--domain or --data-subject, else stored)",
    )
    c = cmd("show", "show one data key (also a shredded one)", f"Show one data key (also a shredded one). {RESERVED}")
    c.add_argument("key_id", help="the key id as tables print it, e.g. 0x1a2b3c4d (or decimal)")
    c = cmd(
        "rotate",
        "replace every active key of a domain (or one person's) now",
        "Replace active keys by new versions now (old versions keep decrypting). Without --data-subject: every "
        "active key of the domain, its domain-wide key and each data subject's key (read a page at a time, so a "
        "domain of any size works); each rotation is its own audit-log entry. Prints how many keys were rotated "
        "(--json lists them). Exit 5 when there is no active key to rotate.",
    )
    c.add_argument("--domain", required=True, help="the key domain (default domain: the registry subject)")
    c.add_argument(
        "--data-subject", help="rotate only this person's key in the domain (default: every active key of the domain)"
    )
    c.add_argument("--reason", default="", help="why, for the audit log")
    c = cmd(
        "rewrap",
        "re-wrap keys under their domain's primary KEK (one domain with --domain); old KEKs with --old-kek",
        "Re-wrap the keys of a domain (--domain) or of every domain that another KEK wraps under the domain's "
        "primary KEK: its branch keys (one KMS call each; the data keys under them need none) and any data key "
        "wrapped by a KEK directly. With --kek NEW --old-kek OLD (no DOMAIN=URI), NEW is first added and promoted "
        "for each domain, and OLD retired once unused: a one-shot KEK rotation, each step audited.",
    )
    c.add_argument("--domain", help="only this key domain (other domains are not touched)")
    c.add_argument("--old-kek", action="append", default=[], help="a KEK that wrapped existing keys (repeatable)")
    c.add_argument("--reason", default="", help="why, for the audit log")
    c = cmd(
        "shred",
        "destroy keys: their data is erased everywhere",
        "Destroy keys: every copy of the data they encrypted becomes unreadable. On a terminal it lists every key it "
        "will destroy (data subject, domain, key id) and asks you to type yes; scripts pass --yes. Exit 6: "
        "destroyed, but a copy may remain in the SQLite write-ahead log "
        "while a reader holds it; re-run the same command.",
    )
    c.add_argument("--domain", help="a whole domain, or with --data-subject/--from-file: only in this domain")
    c.add_argument("--data-subject", help="one person, in every domain")
    c.add_argument(
        "--from-file", "--file", dest="from_file", help="a file of data-subject ids, one per line (# comments allowed)"
    )
    c.add_argument("--reason", required=True, help="why (e.g. the erasure request's ticket); kept in the audit log")
    c.add_argument(
        "--dry-run",
        action="store_true",
        help="list every key that would be destroyed (data subject, domain, key id); destroy nothing",
    )
    c.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    c.add_argument(
        "--receipt",
        metavar="FILE",
        help="write the request's receipt to FILE (JSON, mode 0600; it must not exist): the keys destroyed per data "
        "subject (by pseudonym), the audit entries, sealed under --kek; check it with 'keys receipt verify FILE'",
    )
    c = cmd(
        "audit",
        "show the audit log (append-only and hash-chained: who did what, when, why)",
        "Show the audit log, or with --verify check its hash chain (exit 7 naming the first entry edited, removed, "
        "reordered or inserted, or a seal that does not hold) and with --seal seal its newest entry under --kek.",
    )
    c.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain from the first entry, and every seal whose KEK (--kek) is given; exit 7 on a break",
    )
    c.add_argument("--seal", action="store_true", help="seal the newest entry under --kek (a KEK only admins hold)")
    c.add_argument("--limit", type=int, default=None, help="only the newest N entries")
    c.add_argument("--data-subject", help="only entries naming this data subject")
    c.add_argument("--domain", help="with --data-subject: look for them in this key domain (and its companions) only")
    c.add_argument("--operation", choices=OPERATIONS, help="only entries of this operation")
    c.add_argument("--since", help="only entries at or after this ISO-8601 date or time (UTC unless given)")
    c = cmd(
        "receipt",
        "check an erasure receipt against its seal and the key store",
        "Check an erasure receipt written by 'keys shred --receipt FILE': its seal (under the KEK it names: pass it "
        "with --kek), the audit chain up to its entries, those entries unchanged, and every key it names destroyed. "
        "Exit 0 when all hold, 7 when one does not.",
    )
    c.add_argument("receipt_action", metavar="verify", choices=["verify"], help="verify (the one action)")
    c.add_argument("file", help="the receipt file")
    c = cmd("shred-log", "export the shred log to a file (JSON lines; keep it apart from database backups)")
    c.add_argument(
        "file", help="the file to write (mode 0600; its directory must exist); a symbolic link is written through"
    )
    c.add_argument("--force", action="store_true", help="replace an existing file")
    c = cmd(
        "grant",
        "give a PostgreSQL role a fieldcrypt role: producer, consumer, admin or auditor",
        "Give the database role DBROLE (created beforehand, e.g. CREATE ROLE name LOGIN) what a fieldcrypt ROLE may "
        "do in the PostgreSQL key store at --store: consumer: read keys; producer: read keys, create keys, charge "
        "leases, record key domains and policies (through the store's functions only); admin: also rotate, rewrap, "
        "shred and restore; auditor: read the audit log, the shred log and the KEKs of key domains, no key "
        "material. Run by the store's owner; GRANTs only (run again: no change). SQLite stores are single-user.",
    )
    c.add_argument("--role", required=True, choices=ROLES, help="the fieldcrypt role to give")
    c.add_argument("dbrole", metavar="DBROLE", help="the PostgreSQL role (a login, or a group role of logins)")
    c = cmd(
        "migrate-pseudonyms",
        "replace the data-subject ids a store made by an older fieldcrypt holds by keyed pseudonyms",
        "Replace every data-subject id the key store holds (keys, shred log, audit log) by its keyed pseudonym "
        "(HMAC-SHA256 under the store's pseudonym key, made now if the store has none and wrapped under each --kek), "
        "and rewrap each data subject's key for it. Run once after `keys init` upgraded a store made by an older "
        "fieldcrypt, with producers stopped; --kek must hold the KEK of every domain with data subjects' keys. "
        "Resumable (run it again after an interruption) and idempotent; on a migrated store it only wraps the "
        "pseudonym key under the --kek given that lack a copy. PostgreSQL: the store's owner runs it.",
    )
    c.add_argument("--reason", default="", help="why, for the audit log")
    c = cmd("restore", "after restoring an older backup of the store: re-apply a shred log")
    c.add_argument("--shred-log", required=True, help="the shred-log file exported with 'keys shred-log'")
    c.add_argument("--reason", default="", help="why, for the audit log")


def _file_argument(path: str, what: str) -> None:
    """Refuse a file argument that names no file: empty or blank (``Path("")`` is the current directory), or ``-``
    (standard output: a KEK or a list of erased data subjects is written to a file of mode 0600, never to a terminal
    or a pipe)."""
    if not path.strip():
        raise UsageError(f"the path of {what} is empty; name the file to write")
    if path == "-":
        raise UsageError(f"{what} is not written to standard output ('-'): name a file (it is written mode 0600)")


def _run_kek(args: argparse.Namespace) -> int:
    _file_argument(args.path, "the KEK file")
    uri = create_local_kek(args.path, overwrite=args.force)
    emit(args, {"kek": uri, "path": args.path}, lambda: uri)
    return EXIT_OK


def _run_domain_kek(args: argparse.Namespace) -> int:
    """``fieldcrypt kek list|map|add|promote|retire``: the KEKs of key domains, as the key store records them."""
    kr = keyring_of(args, needs_kek=args.action != "list")
    try:
        if args.action != "list":
            domain = given(args.domain, "DOMAIN")
            assert domain is not None
            act = {"map": kr.map_kek, "add": kr.add_kek, "promote": kr.promote_kek, "retire": kr.retire_kek}
            act[args.action](domain, args.uri, reason=args.reason)
        rows = []
        for d in kr.domains():
            if args.action != "list" and d.domain != args.domain:
                continue
            try:
                used: dict[str, int] | None = kr.store.kek_usage(d.domain)
            except ConfigurationError:  # a role that may read the domains' KEKs but no key (an auditor)
                used = None
            for role, uri in [("primary", d.primary), *(("accepted", u) for u in d.accepted)]:
                keys = None if used is None else used.get(uri, 0)
                rows.append({"domain": d.domain, "role": role, "kek": uri, "keys": keys})
        emit(args, rows, lambda: table(rows))
    finally:
        kr.close()
    return EXIT_OK


def store_url(settings: Settings) -> str:
    if not settings.store:
        raise ConfigurationError(
            "no key store: pass --store URL, set FIELDCRYPT_STORE, or set store in the configuration file"
        )
    return settings.store


def keyring_of(args: argparse.Namespace, *, needs_kek: bool) -> Keyring:
    """The Keyring the settings name (store and KEKs); without a KEK, one that can list, shred and audit."""
    settings: Settings = args.settings
    url = store_url(settings)
    items = list(settings.keks) + list(getattr(args, "old_kek", None) or [])
    kek: Any = kek_setting(items)
    if not items:
        if needs_kek:
            raise ConfigurationError(
                "this command needs the KEK: pass --kek URI, set FIELDCRYPT_KEK, or set kek in the configuration file"
            )
        kek = [Kek(NO_KEK, _NoKekAead())]
    timeout = DEFAULT_KMS_TIMEOUT if settings.kms_timeout is None else settings.kms_timeout
    return Keyring(url, kek, actor=settings.actor, shred_log=settings.shred_log, kms_timeout=timeout)


def _persons_file(path: str) -> list[str]:
    if not path.strip():
        raise UsageError("--from-file is empty")
    try:
        with open(path, encoding="utf-8") as f:
            people = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise UsageError(f"--from-file {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"--from-file {path!r} cannot be read: {exc.strerror}") from None
    if not people:
        raise UsageError(f"--from-file {path!r} names no data subject (only blank lines or comments)")
    return people


def _shred(args: argparse.Namespace, kr: Keyring) -> tuple[ShredReport, int]:
    domain = given(args.domain, "--domain")
    person = given(args.data_subject, "--data-subject")
    if not args.reason.strip():
        raise UsageError("--reason is empty or blank; say why (e.g. the erasure request's reference)")
    if person is not None and args.from_file is not None:
        raise UsageError("give --data-subject or --from-file, not both")
    if person is not None:
        run = partial(kr.shred_person, person, domain=domain, reason=args.reason)
    elif args.from_file is not None:
        run = partial(kr.shred_persons, _persons_file(args.from_file), domain=domain, reason=args.reason)
    elif domain is not None:
        run = partial(kr.shred_domain, domain, reason=args.reason)
    else:
        raise UsageError("say what to shred: --domain, --data-subject or --from-file")
    want = getattr(args, "receipt", None) is not None
    if args.yes and not args.dry_run:  # confirmed beforehand: no preview to show (a scripted shred of 100,000
        report = run(receipt=want)  # persons would otherwise read their keys twice)
        return report, EXIT_PENDING if report.pending else EXIT_OK
    plan = run(dry_run=True)
    if args.dry_run:
        return plan, EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to shred without confirmation: not a terminal; pass --yes in scripts")
        sys.stderr.write(_confirmation(plan))  # in one write: the table, then the question
        sys.stderr.flush()
        if not _confirmed(sys.stdin.readline()):
            sys.stderr.write("not confirmed (only 'yes' destroys); nothing destroyed\n")
            raise NotConfirmed
    report = run(receipt=want)
    return report, EXIT_PENDING if report.pending else EXIT_OK


def _chain_text(c: Any) -> str:
    """``keys audit --verify`` in words: the verdict, the break, the seals."""
    if c.broken is not None:
        head = f"BROKEN at entry {c.broken.seq} ({c.broken.kind}): {c.broken.text}"
    else:
        head = f"audit chain intact: {c.entries} entries, head {c.head_seq} ({c.head_hash[:16]}...)"
    lines = [head]
    failing = [p for p in c.problems if p.why != "unchecked"]
    unchecked = [p for p in c.problems if p.why == "unchecked"]
    for p in failing:
        what = "does not match the chain" if p.why == "mismatch" else "does not authenticate under its KEK (forged)"
        lines.append(f"SEAL of entry {p.seq} by {p.kek_uri} {what}")
    if c.sealed_seq:
        lines.append(f"sealed through entry {c.sealed_seq}; {c.unsealed} entries after it are chained, not sealed")
    elif c.entries:
        lines.append(
            "no seal checked: a rewrite of the whole chain would not show (seal it: "
            "'fieldcrypt keys audit --seal --kek URI'; check seals by passing their KEK)"
        )
    if unchecked:
        keks = sorted({p.kek_uri for p in unchecked})
        lines.append(f"{len(unchecked)} seals not checked: their KEK is not given ({', '.join(keks)})")
    return "\n".join(lines)


def _receipt_text(path: str, c: Any) -> str:
    verdict = "VALID" if c.ok else "NOT VALID"
    lines = [f"receipt {clean(path)!r}: {verdict}"]
    seal = {
        "authentic": "seal authentic",
        "forged": "SEAL FORGED: the receipt was changed, or not sealed by the KEK it names",
        "unchecked": "SEAL NOT CHECKED: pass the KEK it names (--kek)",
    }[c.seal]
    lines.append(seal)
    if c.chain.broken is not None:
        lines.append(f"AUDIT CHAIN BROKEN at entry {c.chain.broken.seq}: {c.chain.broken.text}")
    lines.append(
        {
            "same": "its audit entries are in the log, unchanged",
            "changed": "ITS LAST AUDIT ENTRY WAS CHANGED",
            "missing": "ITS LAST AUDIT ENTRY IS MISSING from the log",
        }[c.entry]
    )
    for m in c.mismatches:
        lines.append(f"ITS AUDIT ENTRIES DIFFER: {m}")
    if c.not_destroyed:
        shown_ = ", ".join(f"{k} ({s})" for k, s in c.not_destroyed[:20])
        lines.append(f"{len(c.not_destroyed)} of {c.keys} keys NOT DESTROYED: {shown_}")
    else:
        lines.append(f"all {c.keys} keys it names are destroyed")
    return "\n".join(lines)


def _confirmed(line: str) -> bool:
    """Whether the answer read from the terminal is exactly ``yes``: the line's end (newline, CR, or both) removed,
    nothing else. ``YES``, `` yes``, ``yes.`` or ``y`` destroy nothing."""
    return line.removesuffix("\n").removesuffix("\r") == "yes"


class NotConfirmed(Exception):
    pass


#: the rotations ``keys rotate`` of a whole domain lists in its table (``--json`` lists every one)
_ROTATIONS_SHOWN = 20


def _rotate(args: argparse.Namespace, kr: Keyring, progress: Progress) -> None:
    domain = given(args.domain, "--domain")
    assert domain is not None
    person = given(args.data_subject, "--data-subject")
    if person is not None:
        new = kr.rotate(domain, person, reason=args.reason)
        if new is None:
            raise NotFoundError(_not_rotated(kr, domain, person))
        rows = [_key_row(new)]
        emit(args, rows, lambda: print("rotated; new active key:") or table(rows))
        return
    try:
        with progress.running():
            report = kr.rotate_domain(domain, reason=args.reason, progress=progress)
    except FieldcryptError:
        count = progress.done
        if count:  # the ones before the failure stay rotated: say so (each is in the audit log)
            sys.stderr.write(
                f"fieldcrypt: {count} active {'key' if count == 1 else 'keys'} of domain {clean(domain)!r} were "
                "rotated before the error below (see 'fieldcrypt keys audit --operation rotate')\n"
            )
        raise
    done, skipped = report.rotated, report.skipped
    if not done:
        raise NotFoundError(
            f"no active key in domain {domain!r}: nothing rotated"
            + (f" ({_skipped_text(skipped)}; no key was created for them)" if skipped else "")
        )
    subjects = sum(1 for r in done if r.person is not None)
    rows = [
        {
            "data_subject": r.person,
            "retired_key_id": format_key_id(r.retired),
            "key_id": format_key_id(r.key_id),
            "version": r.version,
        }
        for r in done
    ]
    skipped_rows = [{"data_subject": r.person, "key_id": format_key_id(r.key_id), "skipped": r.why} for r in skipped]
    summary = {
        "domain": domain,
        "rotated": len(done),
        "data_subject_keys": subjects,
        "keys": rows,
        "skipped": skipped_rows,
    }
    parts = [f"{subjects} data subject{'' if subjects == 1 else 's'}' keys"] if subjects else []
    if len(done) > subjects:
        parts.insert(0, "the domain-wide key")

    def text() -> str | None:
        print(
            f"{len(done)} active {'key' if len(done) == 1 else 'keys'} of domain {clean(domain)!r} rotated "
            f"({' and '.join(parts)}); each rotation is in the audit log"
        )
        shown = table(rows[:_ROTATIONS_SHOWN])
        if shown is not None:
            print(shown)
        if len(rows) > _ROTATIONS_SHOWN:
            print(f"... and {len(rows) - _ROTATIONS_SHOWN} more (--json lists them all)")
        if skipped:
            print(f"{_skipped_text(skipped)}; not rotated, and no key was created for them:")
            print(table(skipped_rows[:_ROTATIONS_SHOWN]))
            if len(skipped_rows) > _ROTATIONS_SHOWN:
                print(f"... and {len(skipped_rows) - _ROTATIONS_SHOWN} more (--json lists them all)")
        return None

    emit(args, summary, text)


def _skipped_text(skipped: tuple[SkippedRotation, ...]) -> str:
    """How many listed keys were no longer active when their turn came, and why (``keys rotate`` of a domain)."""
    shredded = sum(1 for r in skipped if r.why == "shredded")
    why = [f"{shredded} shredded"] if shredded else []
    if len(skipped) > shredded:
        why.append(f"{len(skipped) - shredded} rotated elsewhere")
    return f"{_count(len(skipped), 'key')} skipped ({' and '.join(why)} while this command ran)"


def _not_rotated(kr: Keyring, domain: str, person: str) -> str:
    """Why ``keys rotate --data-subject`` rotated nothing (exit 5)."""
    if any(r.state == "active" for r in kr.keys(domain, person)):  # the store names people by pseudonyms
        return (
            f"the active key of this data subject in domain {domain!r} was replaced by another rotation while this "
            "one ran: nothing rotated by this command"
        )
    gone = kr.shredded_keys(domain, person)
    if gone:
        return (
            f"this data subject's keys in domain {domain!r} were shredded ({_count(len(gone), 'key')}, last at "
            f"{_time(max(r.shredded_at for r in gone))}): the data subject is erased; nothing rotated, and no key "
            "was created (a producer writing new data for them creates one)"
        )
    return f"no active key of this data subject in domain {domain!r}: nothing rotated"


def _key_id(text: str) -> int:
    """A key id as the tables print it (``0x1a2b3c4d``), or in decimal. Eight hex digits without ``0x`` are
    refused rather than guessed (``12345678`` could be either)."""
    text = text.strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]{1,8}", text):
        key_id = int(text, 16)
    elif re.fullmatch(r"[0-9a-fA-F]{8}", text):
        raise UsageError(f"key id {clean(text)!r} is ambiguous: key ids are hexadecimal, write 0x{clean(text)}")
    elif re.fullmatch(r"[0-9]{1,10}", text):
        key_id = int(text)
    else:
        raise UsageError(f"key id {clean(text)!r} is not a key id such as 0x1a2b3c4d")
    if not 0 < key_id < 2**32:
        raise UsageError(f"key id {text!r} is out of range (1 to 0xffffffff)")
    return key_id


def _run_init(args: argparse.Namespace) -> int:
    target = store_url(args.settings)
    create_key_store(target)
    url = redact_url(target)
    store = open_store(target)
    try:
        waiting = store.unrecorded_domains()
        clear = store.supports_pseudonyms and store.persons_form() != "pseudonyms"
    finally:
        store.close()
    if clear:  # an upgraded store: keyrings refuse it until its ids are pseudonyms
        sys.stderr.write(
            "fieldcrypt: warning: this key store holds data-subject ids in clear (made by an older fieldcrypt): "
            "keyrings refuse it until a key admin runs `fieldcrypt keys migrate-pseudonyms --kek URI` "
            "(with producers stopped)\n"
        )
    for domain, uris in waiting.items():  # an upgraded store whose domain's keys several KEKs wrap
        sys.stderr.write(
            f"fieldcrypt: warning: key domain {clean(domain)!r} holds keys wrapped by {len(uris)} KEKs "
            f"({', '.join(clean(u) for u in uris)}) and no record of which is its own: writers of it are refused "
            f"until a key admin records it: fieldcrypt kek map {clean(domain)} URI\n"
        )
    emit(
        args,
        {"store": url, "initialized": True, **({"domains_to_map": waiting} if waiting else {})},
        lambda: f"key store {url} is ready",
    )
    return EXIT_OK


def _run_migrate(args: argparse.Namespace) -> int:
    """``fieldcrypt keys migrate-pseudonyms``: see :func:`fieldcrypt.keys.keyring.migrate_pseudonyms`."""
    settings = args.settings
    url = store_url(settings)
    keks = list(settings.keks)
    if not keks:
        raise ConfigurationError(
            "this command needs the KEK: pass --kek URI, set FIELDCRYPT_KEK, or set kek in the configuration file"
        )
    progress = Progress(args.action, sys.stderr.isatty() if args.progress is None else args.progress)
    timeout = DEFAULT_KMS_TIMEOUT if settings.kms_timeout is None else settings.kms_timeout
    done = migrate_pseudonyms(
        url, kek_setting(keks), actor=settings.actor, reason=args.reason, progress=progress, kms_timeout=timeout
    )
    shown_url = redact_url(url)
    emit(
        args,
        {"store": shown_url, "rewrapped": done, "pseudonyms": True},
        lambda: f"key store {shown_url} names data subjects by pseudonyms ({_count(done, 'data key')} rewrapped now)",
    )
    return EXIT_OK


def _run_grant(args: argparse.Namespace) -> int:
    target = store_url(args.settings)
    dbrole = given(args.dbrole, "DBROLE")
    assert dbrole is not None
    done = grant_role(target, args.role, dbrole)
    url = redact_url(target)
    emit(
        args,
        {"store": url, "role": args.role, "database_role": dbrole, "statements": done},
        lambda: f"database role {clean(dbrole)!r} is a fieldcrypt {args.role} of key store {url}",
    )
    return EXIT_OK


def _check_usage(args: argparse.Namespace) -> None:
    """Refuse a bad command line before anything is opened, so a usage error is exit 2 whatever the settings."""
    if args.action == "show":
        args.key_id_value = _key_id(args.key_id)
    for flag in ("domain", "data_subject"):
        if hasattr(args, flag):
            given(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.action == "shred-log":
        _file_argument(args.file, "the shred log")
    if args.action == "restore" and not args.shred_log.strip():
        raise UsageError("--shred-log is empty; name the shred-log file to re-apply")
    if args.action == "shred" and not args.reason.strip():
        raise UsageError("--reason is empty or blank; say why (e.g. the erasure request's reference)")
    if args.action == "shred" and args.receipt is not None:
        _file_argument(args.receipt, "the receipt")
        if args.dry_run:
            raise UsageError("--receipt with --dry-run: a dry run destroys nothing, so it has no receipt")
        if os.path.lexists(args.receipt):
            raise UsageError(f"the receipt {clean(args.receipt)!r} already exists: name a new file (nothing destroyed)")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.receipt))):
            raise UsageError(f"the directory of the receipt {clean(args.receipt)!r} does not exist (nothing destroyed)")
    if args.action == "receipt" and not args.file.strip():
        raise UsageError("the receipt file's path is empty")
    if args.action == "audit" and args.verify and args.seal:
        raise UsageError("--verify or --seal, not both (--seal checks the chain before it seals it)")
    if args.action == "audit" and (args.verify or args.seal):
        listing = [f for f in ("limit", "data_subject", "domain", "operation", "since") if getattr(args, f) is not None]
        if listing:
            flags = ", ".join("--" + f.replace("_", "-") for f in listing)
            raise UsageError(f"--verify and --seal work on the whole log: drop {flags}")
    if args.action == "audit":
        if args.limit is not None and args.limit < 0:
            raise UsageError("--limit must not be negative")
        args.since_value = None
        if args.since is not None:
            try:
                args.since_value = shredlog.parse_time(args.since)
            except ValueError:
                raise UsageError(f"--since {clean(args.since)!r} is not an ISO-8601 date or time") from None


def _run_keys(args: argparse.Namespace) -> int:
    _check_usage(args)
    if args.action == "init":
        return _run_init(args)
    if args.action == "grant":
        return _run_grant(args)
    if args.action == "migrate-pseudonyms":
        return _run_migrate(args)
    needs_kek = (
        args.action in ("rewrap", "rotate", "receipt")
        or (args.action == "audit" and args.seal)
        or (args.action == "shred" and args.receipt is not None)
    )
    kr = keyring_of(args, needs_kek=needs_kek)
    progress = Progress(args.action, sys.stderr.isatty() if args.progress is None else args.progress)
    code = EXIT_OK
    try:
        if args.action == "list":
            _list(args, kr)
        elif args.action == "show":
            key_id = args.key_id_value
            record = kr.store.get(key_id)
            if record is None:
                gone = kr.store.shredded(key_id)
                if gone is not None:
                    rows = [_shredded_row(gone)]
                    emit(args, rows, lambda: _key_table(rows))
                    return EXIT_OK
                raise KeyNotFoundError("no data key with this id in the key store", key_id=key_id)
            rows = [_key_row(record)]
            emit(args, rows, lambda: _show_text(rows))
        elif args.action == "rotate":
            _rotate(args, kr, progress)
        elif args.action == "rewrap":
            domain = given(args.domain, "--domain")
            count = kr.rewrap(domain=domain, reason=args.reason, progress=progress)
            where = {d.domain: d.primary for d in kr.domains() if domain is None or d.domain == domain}
            emit(
                args,
                {"rewrapped": count, "kek": kr.kek.uri if domain is None else where.get(domain), "domains": where},
                lambda: (
                    f"{_count(count, 'key')} rewrapped"
                    + "".join(f"\n  {clean(d)}: {clean(uri)}" for d, uri in where.items())
                ),
            )
        elif args.action == "shred":
            reserved = None if args.receipt is None else evidence.reserve(args.receipt)  # (before any key is gone)
            try:
                report, code = _shred(args, kr)
            except BaseException:
                if reserved is not None:
                    reserved.unlink(missing_ok=True)
                raise
            written = None
            if reserved is not None:
                if report.receipt is None:  # a dry run, or not confirmed: nothing destroyed, no receipt
                    reserved.unlink(missing_ok=True)
                else:
                    written = str(report.receipt.write(reserved, overwrite=True))
            # the JSON report only for --json (100,000 persons' rows cost a few tenths of a second)
            summary = _shred_summary(report, args.reason) if args.json else None
            if summary is not None and written is not None:
                summary["receipt"] = written

            def text() -> str | None:
                out = _shred_text(report)
                if written is None:
                    return out
                line = f"receipt written to {clean(written)} (check it: fieldcrypt keys receipt verify FILE)"
                return line if out is None else f"{out}\n{line}"

            emit(args, summary, text, code)
        elif args.action == "receipt":
            check = kr.verify_receipt(args.file)
            data = check.as_dict()
            code = EXIT_OK if check.ok else EXIT_FINDINGS
            emit(args, data, lambda: _receipt_text(args.file, check), code)
        elif args.action == "audit" and args.seal:
            made = kr.seal_audit()
            data = {"sealed": made.seq, "hash": made.hash.hex(), "kek": made.kek_uri, "at": _time(made.at)}
            said = f"audit log sealed at entry {made.seq} ({made.hash.hex()[:16]}...) by {made.kek_uri}"
            emit(args, data, lambda: said)
        elif args.action == "audit" and args.verify:
            checked = kr.verify_audit()
            code = EXIT_OK if checked.ok else EXIT_FINDINGS
            emit(args, checked.as_dict(), lambda: _chain_text(checked), code)
        elif args.action == "audit":
            since = args.since_value
            entries = kr.audit(
                args.limit,
                person=given(args.data_subject, "--data-subject"),
                operation=args.operation,
                since=since,
                domain=given(args.domain, "--domain"),
            )
            rows = [_audit_row(e) for e in entries]
            emit(args, rows, lambda: table(rows))
        elif args.action == "shred-log":
            count = shredlog.write(args.file, kr.export_shred_log(), overwrite=args.force)
            emit(
                args,
                {"exported": count, "file": args.file},
                lambda: f"{count} shred-log entries written to {args.file}",
            )
        elif args.action == "restore":
            applied = shredlog.read(args.shred_log)
            if not applied:  # a file cut to nothing would otherwise restore "successfully"
                sys.stderr.write(
                    f"fieldcrypt: warning: the shred log {clean(args.shred_log)!r} is empty (0 entries): if it is a "
                    "copy, it may be truncated; check it against the original, or write it anew from a current key "
                    "store with 'fieldcrypt keys shred-log FILE'\n"
                )
            destroyed = kr.restore(applied, reason=args.reason)
            pending = bool(destroyed) and not kr.purge()
            code = EXIT_PENDING if pending else EXIT_OK
            emit(
                args,
                {"applied": len(applied), "destroyed_again": [format_key_id(k) for k in destroyed], "pending": pending},
                lambda: (
                    f"{len(applied)} shred-log entries applied; {len(destroyed)} restored keys destroyed again"
                    + ("; PENDING: re-run while a reader holds the write-ahead log" if pending else "")
                ),
            )
    finally:
        kr.close()
    return code
