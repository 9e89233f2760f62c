"""The ``fieldcrypt`` command for key admins. Every command is also a Keyring method (the Python API).

    fieldcrypt kek create PATH [--force]
    fieldcrypt keys list   [--domain D] [--data-subject ID]
    fieldcrypt keys show   KEY_ID
    fieldcrypt keys rotate --domain D [--data-subject ID] [--reason R]
    fieldcrypt keys rewrap --kek NEW --old-kek OLD [--old-kek ...] [--reason R]
    fieldcrypt keys shred  (--domain D | --data-subject ID | --from-file FILE) [--domain D] [--reason R]
    fieldcrypt keys audit  [--limit N]
    fieldcrypt keys shred-log FILE                 export the shred log (keep it apart from database backups)
    fieldcrypt keys restore --shred-log FILE       after restoring an older backup: re-apply the shred log
    fieldcrypt verify --topic T --bootstrap-servers B --schema-registry URL [--format avro|json]
                      [--by domain|data-subject]

Common options: ``--store URL`` ($FIELDCRYPT_STORE), ``--kek URI`` ($FIELDCRYPT_KEK; needed to read or rewrap
data, not to list, shred or audit), ``--actor NAME`` (recorded in the audit log), ``--json`` (machine-readable).
Exit codes: 0 done, 1 unexpected error, 2 usage, 3 configuration error, 4 key store unavailable, 5 key not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from fieldcrypt.errors import (
    ConfigurationError,
    FieldcryptError,
    KeyNotFoundError,
    KeyStoreUnavailableError,
    format_key_id,
)
from fieldcrypt.keyring import Keyring, ShredReport
from fieldcrypt.keys.kek import Kek, create_local_kek
from fieldcrypt.keys.store import AuditEntry, KeyRecord, ShredRecord

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4, 5


class _NoKekAead:
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        raise ConfigurationError("this command needs the KEK: pass --kek URI or set FIELDCRYPT_KEK")

    decrypt = encrypt


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


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
    ids = [format_key_id(k) for k in e.key_ids]
    return {
        "seq": e.seq,
        "at": _time(e.at),
        "actor": e.actor,
        "operation": e.operation,
        "domain": e.domain,
        "data_subject": e.person,
        "keys": ",".join(ids[:4]) + (f",+{len(ids) - 4}" if len(ids) > 4 else ""),
        "reason": e.reason,
        "detail": e.detail,
    }


def _shred_row(r: ShredRecord) -> dict[str, Any]:
    return {"key_id": r.key_id, "domain": r.domain, "person": r.person, "at": r.shredded_at}


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    cell = {c: ["-" if r[c] in (None, "") else str(r[c]) for r in rows] for c in cols}
    widths = {c: max(len(c), *(len(v) for v in cell[c])) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += ["  ".join(cell[c][i].ljust(widths[c]) for c in cols).rstrip() for i in range(len(rows))]
    return "\n".join(lines)


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
    cmd.add_argument("--reason", default="")
    cmd = keys.add_parser("audit", parents=[common], help="show the audit log")
    cmd.add_argument("--limit", type=int, default=None)
    cmd = keys.add_parser("shred-log", parents=[common], help="export the shred log to a file (JSON lines)")
    cmd.add_argument("file")
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


def _shred(args: argparse.Namespace, kr: Keyring) -> ShredReport:
    if args.data_subject and args.from_file:
        raise ConfigurationError("give --data-subject or --from-file, not both")
    if args.data_subject:
        return kr.shred_person(args.data_subject, domain=args.domain, reason=args.reason)
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as f:
            people = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        return kr.shred_persons(people, domain=args.domain, reason=args.reason)
    if args.domain:
        return kr.shred_domain(args.domain, reason=args.reason)
    raise ConfigurationError("say what to shred: --domain, --data-subject or --from-file")


def _run_keys(args: argparse.Namespace) -> int:
    kr = _keyring(args, needs_kek=args.action in ("rewrap",))
    progress = _Progress(args.action, sys.stderr.isatty() if args.progress is None else args.progress)
    try:
        if args.action == "list":
            rows = [_key_row(r) for r in kr.keys(args.domain, args.data_subject)]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "show":
            try:
                key_id = int(args.key_id, 0)
            except ValueError:
                raise ConfigurationError("key id must be a number such as 0x1a2b3c4d") from None
            record = kr.store.get(key_id)
            if record is None:
                gone = kr.store.shredded(key_id)
                if gone is not None:
                    rows = [
                        {
                            "key_id": format_key_id(key_id),
                            "state": "shredded",
                            "domain": gone.domain,
                            "data_subject": gone.person,
                            "shredded_at": _time(gone.shredded_at),
                        }
                    ]
                    _print(args, rows, lambda: _table(rows))
                    return EXIT_OK
                raise KeyNotFoundError("no data key with this id in the key store", key_id=key_id)
            rows = [_key_row(record)]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "rotate":
            new = kr.rotate(args.domain, args.data_subject, reason=args.reason)
            if new is None:
                raise KeyNotFoundError(f"no active key for domain {args.domain!r} (and this data subject)")
            rows = [_key_row(new)]
            _print(args, rows, lambda: "rotated; new active key:\n" + _table(rows))
        elif args.action == "rewrap":
            count = kr.rewrap(reason=args.reason, progress=progress)
            _print(args, {"rewrapped": count, "kek": kr.kek.uri}, lambda: f"{count} keys rewrapped under {kr.kek.uri}")
        elif args.action == "shred":
            report = _shred(args, kr)
            summary = {
                "target": report.target,
                "destroyed": len(report.destroyed),
                "noop": report.noop,
                "previously_shredded": report.previously_shredded,
                "key_ids": [format_key_id(r.key_id) for r in report.destroyed],
            }
            _print(args, summary, lambda: str(report))
        elif args.action == "audit":
            rows = [_audit_row(e) for e in kr.audit(args.limit)]
            _print(args, rows, lambda: _table(rows))
        elif args.action == "shred-log":
            entries = kr.export_shred_log()
            with open(args.file, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(_shred_row(r)) + "\n" for r in entries)
            _print(args, {"exported": len(entries)}, lambda: f"{len(entries)} shred-log entries written to {args.file}")
        elif args.action == "restore":
            with open(args.shred_log, encoding="utf-8") as f:
                entries = [
                    ShredRecord(int(d["key_id"]), d["domain"], d["person"], float(d["at"]))
                    for d in map(json.loads, f)
                    if d
                ]
            destroyed = kr.restore(entries, reason=args.reason)
            _print(
                args,
                {"applied": len(entries), "destroyed_again": len(destroyed)},
                lambda: f"{len(entries)} shred-log entries applied; {len(destroyed)} restored keys destroyed again",
            )
    finally:
        kr.close()
    return EXIT_OK


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
    args = _parser().parse_args(argv)
    try:
        if args.area == "kek":
            uri = create_local_kek(args.path, overwrite=args.force)
            print(uri)
            return EXIT_OK
        if args.area == "verify":
            return _run_verify(args)
        return _run_keys(args)
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
