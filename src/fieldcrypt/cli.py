"""The ``fieldcrypt`` command for key admins. Every command is also a Keyring method (the Python API).

    fieldcrypt kek create PATH [--force]
    fieldcrypt keys init   --store URL                create the key store (or upgrade its tables); SQLite: 0600
    fieldcrypt keys list   [--domain D] [--data-subject ID]
    fieldcrypt keys show   KEY_ID
    fieldcrypt keys rotate --domain D [--data-subject ID] [--reason R]
    fieldcrypt keys rewrap --kek NEW --old-kek OLD [--old-kek ...] [--reason R]
    fieldcrypt keys shred  (--domain D | --data-subject ID | --from-file FILE) [--domain D] --reason R
                           [--dry-run] [--yes]    asks for confirmation on a terminal; scripts pass --yes
    fieldcrypt keys audit  [--limit N] [--data-subject ID] [--operation OP] [--since ISO-8601]
    fieldcrypt keys shred-log FILE [--force]       export the shred log (keep it apart from database backups)
    fieldcrypt keys restore --shred-log FILE       after restoring an older backup: re-apply the shred log
    fieldcrypt verify --topic T --bootstrap-servers B --schema-registry URL [--format avro|json]
                      [--by domain|data-subject]

Common options: ``--store URL`` ($FIELDCRYPT_STORE), ``--kek URI`` ($FIELDCRYPT_KEK; needed to read or rewrap
data, not to list, shred or audit), ``--actor NAME`` (recorded in the audit log), ``--json`` (machine-readable).
Exit codes: 0 done, 1 unexpected error (or a shred not confirmed), 2 usage, 3 configuration error, 4 key store
unavailable, 5 key not found, 6 shred pending (keys destroyed, but a copy may remain in the SQLite WAL while a
reader holds it: re-run the same command).

JSON output (``--json``) follows one convention everywhere: key ids as ``0x`` and eight hex digits, times as
ISO-8601 in UTC, lists as JSON arrays. Tables escape control characters (``\x1b``, ``\n``, bidi overrides...) in
every cell, since domains and data-subject ids come from producers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from fieldcrypt.errors import (
    ConfigurationError,
    FieldcryptError,
    KeyNotFoundError,
    KeyStoreUnavailableError,
    format_key_id,
)
from fieldcrypt.keyring import Keyring, ShredReport
from fieldcrypt.keys import shredlog
from fieldcrypt.keys.kek import Kek, create_local_kek
from fieldcrypt.keys.store import OPERATIONS, AuditEntry, KeyRecord, create_key_store, redact_url

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_NOT_FOUND, EXIT_PENDING = 0, 1, 2, 3, 4, 5, 6


class UsageError(Exception):
    """A command line that cannot mean what was asked (exit 2); nothing was changed."""


class _NoKekAead:
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        raise ConfigurationError("this command needs the KEK: pass --kek URI or set FIELDCRYPT_KEK")

    decrypt = encrypt


_time = shredlog.iso_time


def clean(text: str) -> str:
    """Text safe to print on a terminal: control and format characters (escape sequences, newlines, bidi
    overrides) and backslashes are shown escaped, so a forged id cannot draw or hide rows."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        "\\\\" if c == "\\" else c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _key_row(r: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": format_key_id(r.key_id),
        "domain": r.domain,
        "data_subject": r.person,
        "version": r.version,
        "state": r.state,
        "encryptions": r.encryptions,
        "kek": r.kek_uri,
        "created_at": _time(r.created_at),
    }


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


def _abbreviated(ids: list[str]) -> str:
    return ",".join(ids[:4]) + (f",+{len(ids) - 4}" if len(ids) > 4 else "")


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


def _shred_text(summary: dict[str, Any], report: ShredReport) -> str:
    lines = [clean(str(report))]
    if summary["data_subjects"]:
        rows = [
            {"data_subject": d["data_subject"], "outcome": d["outcome"], "keys": _abbreviated(d["key_ids"])}
            for d in summary["data_subjects"]
        ]
        lines.append(_table(rows))
    elif report.destroyed:
        lines.append(f"keys: {_abbreviated(summary['key_ids'])}")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    cell = {c: ["-" if r[c] in (None, "", []) else clean(_cell(r[c])) for r in rows] for c in cols}
    widths = {c: max(len(c), *(len(v) for v in cell[c])) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += ["  ".join(cell[c][i].ljust(widths[c]) for c in cols).rstrip() for i in range(len(rows))]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return _abbreviated(value) if isinstance(value, list) else str(value)


class _Progress:
    """A progress bar on stderr when it is a terminal (or --progress); silent otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=os.environ.get("FIELDCRYPT_STORE"), help="key store URL ($FIELDCRYPT_STORE)")
    common.add_argument("--kek", action="append", default=None, help="KEK URI ($FIELDCRYPT_KEK)")
    common.add_argument("--actor", default=None, help="who is acting, for the audit log (default user@host)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--progress", action="store_true", default=None, help="show progress even when not a tty")

    p = argparse.ArgumentParser(prog="fieldcrypt", description="Key administration for fieldcrypt.")
    sub = p.add_subparsers(dest="area", required=True)

    kek = sub.add_parser("kek", help="key-encryption keys").add_subparsers(dest="action", required=True)
    create = kek.add_parser("create", help="create a local KEK file (Tink AES-256-GCM keyset, mode 0600)")
    create.add_argument("path")
    create.add_argument("--force", action="store_true", help="overwrite an existing file (loses its keys!)")

    keys = sub.add_parser("keys", help="data keys").add_subparsers(dest="action", required=True)
    keys.add_parser(
        "init", parents=[common], help="create the key store at --store (or upgrade its tables); SQLite files: 0600"
    )
    cmd = keys.add_parser("list", parents=[common], help="list stored data keys")
    cmd.add_argument("--domain")
    cmd.add_argument("--data-subject")
    cmd = keys.add_parser("show", parents=[common], help="show one data key")
    cmd.add_argument("key_id", help="e.g. 0x1a2b3c4d")
    cmd = keys.add_parser("rotate", parents=[common], help="replace the active key of a domain (or person) now")
    cmd.add_argument("--domain", required=True)
    cmd.add_argument("--data-subject")
    cmd.add_argument("--reason", default="")
    cmd = keys.add_parser("rewrap", parents=[common], help="re-wrap every key under the new KEK (--kek)")
    cmd.add_argument("--old-kek", action="append", default=[], help="a KEK that wrapped existing keys")
    cmd.add_argument("--reason", default="")
    cmd = keys.add_parser("shred", parents=[common], help="destroy keys: their data is erased everywhere")
    cmd.add_argument("--domain", help="a whole domain, or with --data-subject/--from-file: only in this domain")
    cmd.add_argument("--data-subject", help="one person, in every domain")
    cmd.add_argument(
        "--from-file", "--file", dest="from_file", help="a file of data-subject ids, one per line (# comments allowed)"
    )
    cmd.add_argument("--reason", required=True, help="why (e.g. the erasure request's ticket); kept in the audit log")
    cmd.add_argument("--dry-run", action="store_true", help="list what would be destroyed; destroy nothing")
    cmd.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (needed without a terminal)")
    cmd = keys.add_parser("audit", parents=[common], help="show the audit log")
    cmd.add_argument("--limit", type=int, default=None, help="only the newest N entries")
    cmd.add_argument("--data-subject", help="only entries naming this data subject")
    cmd.add_argument("--operation", choices=OPERATIONS, help="only entries of this operation")
    cmd.add_argument("--since", help="only entries at or after this ISO-8601 date or time (UTC unless given)")
    cmd = keys.add_parser("shred-log", parents=[common], help="export the shred log to a file (JSON lines)")
    cmd.add_argument("file")
    cmd.add_argument("--force", action="store_true", help="replace an existing file")
    cmd = keys.add_parser("restore", parents=[common], help="re-apply a shred log after restoring a backup")
    cmd.add_argument("--shred-log", required=True)
    cmd.add_argument("--reason", default="")

    verify = sub.add_parser("verify", parents=[common], help="re-read a topic: readable, erased, denied values")
    verify.add_argument("--topic", required=True)
    verify.add_argument("--bootstrap-servers", required=True)
    verify.add_argument("--schema-registry", required=True)
    verify.add_argument("--format", choices=["avro", "json"], default="avro", help="the topic's schema type")
    verify.add_argument("--by", choices=["domain", "data-subject"], default="domain")
    verify.add_argument("--timeout", type=float, default=30.0)
    return p


def _keyring(args: argparse.Namespace, *, needs_kek: bool) -> Keyring:
    if not args.store:
        raise ConfigurationError("no key store: pass --store URL or set FIELDCRYPT_STORE")
    keks: list[str | Kek] = list(
        args.kek or ([os.environ["FIELDCRYPT_KEK"]] if os.environ.get("FIELDCRYPT_KEK") else [])
    )
    keks += getattr(args, "old_kek", [])
    if not keks:
        if needs_kek:
            raise ConfigurationError("this command needs the KEK: pass --kek URI or set FIELDCRYPT_KEK")
        keks = [Kek("(no KEK given)", _NoKekAead())]
    return Keyring(args.store, keks, actor=args.actor)


def _print(args: argparse.Namespace, rows: Any, text: Callable[[], str]) -> None:
    print(json.dumps(rows, indent=2, default=str) if args.json else text())


def _given(value: str | None, flag: str) -> str | None:
    """An option's value, refusing an empty or blank one (an unset shell variable must not widen a command)."""
    if value is not None and not value.strip():
        raise UsageError(f"{flag} is empty or blank")
    return value


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
    domain = _given(args.domain, "--domain")
    person = _given(args.data_subject, "--data-subject")
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
    plan = run(dry_run=True)
    if args.dry_run:
        return plan, EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to shred without confirmation: not a terminal; pass --yes in scripts")
        sys.stderr.write(f"{clean(str(plan))}.\nThis cannot be undone. Type 'yes' to destroy: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() != "yes":
            sys.stderr.write("not confirmed; nothing destroyed\n")
            raise _NotConfirmed
    report = run()
    return report, EXIT_PENDING if report.pending else EXIT_OK


class _NotConfirmed(Exception):
    pass


def _key_id(text: str) -> int:
    try:
        key_id = int(text, 16 if text.lower().startswith("0x") else 10)
    except ValueError:
        raise UsageError(f"key id {text!r} is not a number such as 0x1a2b3c4d") from None
    if not 0 < key_id < 2**32:
        raise UsageError(f"key id {text!r} is out of range (1 to 0xffffffff)")
    return key_id


def _run_init(args: argparse.Namespace) -> int:
    if not args.store:
        raise ConfigurationError("no key store: pass --store URL or set FIELDCRYPT_STORE")
    create_key_store(args.store)
    url = redact_url(args.store)
    _print(args, {"store": url, "initialized": True}, lambda: f"key store {url} is ready")
    return EXIT_OK


def _run_keys(args: argparse.Namespace) -> int:
    if args.action == "init":
        return _run_init(args)
    kr = _keyring(args, needs_kek=args.action in ("rewrap",))
    progress = _Progress(args.action, sys.stderr.isatty() if args.progress is None else args.progress)
    code = EXIT_OK
    try:
        if args.action == "list":
            rows = [
                _key_row(r)
                for r in kr.keys(_given(args.domain, "--domain"), _given(args.data_subject, "--data-subject"))
            ]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "show":
            key_id = _key_id(args.key_id)
            record = kr.store.get(key_id)
            if record is None:
                gone = kr.store.shredded(key_id)
                if gone is not None:
                    rows = [{**shredlog.row(gone), "state": "shredded"}]
                    _print(args, rows, lambda: _table(rows))
                    return EXIT_OK
                raise KeyNotFoundError("no data key with this id in the key store", key_id=key_id)
            rows = [_key_row(record)]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "rotate":
            domain = _given(args.domain, "--domain")
            assert domain is not None
            new = kr.rotate(domain, _given(args.data_subject, "--data-subject"), reason=args.reason)
            if new is None:
                raise KeyNotFoundError(f"no active key for domain {args.domain!r} (and this data subject)")
            rows = [_key_row(new)]
            _print(args, rows, lambda: "rotated; new active key:\n" + _table(rows))
        elif args.action == "rewrap":
            count = kr.rewrap(reason=args.reason, progress=progress)
            _print(args, {"rewrapped": count, "kek": kr.kek.uri}, lambda: f"{count} keys rewrapped under {kr.kek.uri}")
        elif args.action == "shred":
            report, code = _shred(args, kr)
            summary = _shred_summary(report, args.reason)
            _print(args, summary, lambda: _shred_text(summary, report))
        elif args.action == "audit":
            since = None
            if args.since is not None:
                try:
                    since = shredlog.parse_time(args.since)
                except ValueError:
                    raise UsageError(f"--since {args.since!r} is not an ISO-8601 date or time") from None
            if args.limit is not None and args.limit < 0:
                raise UsageError("--limit must not be negative")
            entries = kr.audit(
                args.limit,
                person=_given(args.data_subject, "--data-subject"),
                operation=args.operation,
                since=since,
            )
            rows = [_audit_row(e) for e in entries]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "shred-log":
            count = shredlog.write(args.file, kr.export_shred_log(), overwrite=args.force)
            _print(
                args,
                {"exported": count, "file": args.file},
                lambda: f"{count} shred-log entries written to {args.file}",
            )
        elif args.action == "restore":
            applied = shredlog.read(args.shred_log)
            destroyed = kr.restore(applied, reason=args.reason)
            pending = bool(destroyed) and not kr.purge()
            code = EXIT_PENDING if pending else EXIT_OK
            _print(
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


def _run_verify(args: argparse.Namespace) -> int:
    from fieldcrypt._verify import verify_topic

    kr = _keyring(args, needs_kek=True)
    try:
        counts = verify_topic(
            kr, args.topic, args.bootstrap_servers, args.schema_registry, args.by, args.timeout, args.format
        )
    finally:
        kr.close()
    rows = [{args.by: k, **v} for k, v in sorted(counts.items())]
    _print(args, rows, lambda: _table(rows))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.area == "kek":
            uri = create_local_kek(args.path, overwrite=args.force)
            print(uri)
            return EXIT_OK
        if args.area == "verify":
            return _run_verify(args)
        return _run_keys(args)
    except UsageError as exc:
        print(f"fieldcrypt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _NotConfirmed:
        return EXIT_ERROR
    except ConfigurationError as exc:
        print(f"fieldcrypt: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyStoreUnavailableError as exc:
        print(f"fieldcrypt: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyNotFoundError as exc:
        print(f"fieldcrypt: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (FieldcryptError, OSError) as exc:
        print(f"fieldcrypt: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
