"""``fieldcrypt scan TOPIC``: audit a topic for personal data in clear (docs/scan.md).

Reports, per subject and field path, the values of tagged fields that are fieldcrypt ciphertext, empty or plaintext
(with ``--store``/``--kek``: readable, erased, denied or tampered), and the untagged values in which a detector
(``fieldcrypt.detectors``) finds personal data or that are fieldcrypt ciphertext. It never prints a value: counts,
field paths, detector names, partitions and offsets only.

Exit codes: 0 nothing found; 7 findings: plaintext in tagged fields, personal data or fieldcrypt ciphertext in
untagged fields, tampered values, or records that could not be examined; 3, 4, 5 as for every command
(configuration, a broker, registry or key store not answering within ``--timeout``, a topic or partition that does
not exist).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from fieldcrypt.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    UsageError,
    add_policy_options,
    clean,
    emit,
    policy_conf,
    table,
)
from fieldcrypt.cli.keys import keyring_of
from fieldcrypt.cli.verify import (
    add_merge_option,
    add_range_options,
    add_topic_options,
    emit_merged,
    merged_report,
    progress_of,
    range_of,
    summary_lines,
    timed,
    topic_of,
)

__all__ = ["register"]

_LABELS = {
    "plaintext_in_tagged_fields": "plaintext value(s) in tagged fields",
    "personal_data_in_untagged_fields": "untagged value(s) holding personal data",
    "ciphertext_in_untagged_fields": "fieldcrypt ciphertext(s) in untagged fields",
    "tampered": "tampered value(s)",
    "records_not_examined": "record(s) not examined",
}


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        parents=[parents["common"], parents["store"], parents["cluster"]],
        help="audit a topic for plaintext personal data (tagged fields in clear, untagged fields that look personal)",
        description="Read a topic through the registry and report, per subject and field path, tagged values that "
        "are fieldcrypt ciphertext or plaintext, and untagged values in which a detector finds personal data "
        "(emails, phone numbers, card numbers, IBANs, national ids, IP addresses). No key is needed; with --store "
        "and --kek, ciphertexts are also decrypted (readable, erased, denied, tampered). Never prints a value. "
        "Exit 7 when personal data is found in clear, or records cannot be examined.",
    )
    add_topic_options(p, "scan")
    g = p.add_argument_group("detectors")
    g.add_argument(
        "--detectors",
        metavar="NAMES",
        help="comma-separated detector names; 'default' is the default set, 'all' every one (--list-detectors)",
    )
    g.add_argument(
        "--detector",
        action="append",
        metavar="MODULE:ATTRIBUTE",
        help="load more detectors: a fieldcrypt.detectors.Detector, a list of them, or a function returning "
        "either (repeatable; the module is imported)",
    )
    g.add_argument("--list-detectors", action="store_true", help="list the detectors known and exit")
    p.add_argument("--keys", action="store_true", help="scan record keys too (default: values only)")
    add_range_options(p)
    add_merge_option(p)
    add_policy_options(p)
    p.set_defaults(run=run)


def _detectors(args: argparse.Namespace) -> list[Any]:
    from fieldcrypt.inspect.detectors import load_detector, select_detectors

    extra = [d for spec in args.detector or [] for d in load_detector(spec)]
    if args.detectors is not None and not args.detectors.strip():
        raise UsageError("--detectors is empty or blank")
    return select_detectors(args.detectors, extra)


def _offsets(f: Any) -> str:
    shown = ", ".join(f"{p}:{o}" for p, o in f.offsets[:4])
    more = len(f.offsets) - 4 + f.more_offsets
    return shown + (f", +{more}" if more > 0 else "")


def _rows(report: Any) -> tuple[list[dict[str, Any]], int]:
    """Table rows: every tagged field, and the untagged fields with findings; and how many untagged fields
    without findings were left out."""
    rows: list[dict[str, Any]] = []
    quiet = 0
    # the masked-view columns only where a value carries one (fieldcrypt.masks)
    views = any(f.with_view for s in report.subjects.values() for f in s.fields.values())
    # and the deterministic ones only where a value is deterministic (fieldcrypt.deterministic.tags)
    det = any(f.deterministic for s in report.subjects.values() for f in s.fields.values())
    for (_, part), subject in sorted(report.subjects.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for f in sorted(subject.fields.values(), key=lambda f: (not f.tagged, f.field)):
            if not f.tagged and not f.flagged and not f.ciphertext:
                quiet += 1
                continue
            row: dict[str, Any] = {"subject": subject.subject}
            if report.keys_scanned:
                row["part"] = part
            row.update(field=f.field, tagged="yes" if f.tagged else "no", values=f.values)
            row["ciphertext"] = f.ciphertext if f.tagged or f.ciphertext else ""
            if views:
                row["with view"] = f.with_view if f.tagged else ""
            if det:
                row["deterministic"] = f.deterministic if f.tagged else ""
                row["distinct"] = _distinct(f) if f.tagged and f.deterministic else ""
            row["plaintext"] = f.plaintext if f.tagged else ""
            if report.decrypted:
                for name in ("readable", "masked", "erased", "denied", "tampered"):
                    if name != "masked" or views:
                        row[name] = getattr(f, name) if f.tagged else ""
            row["detected"] = ", ".join(f"{k} {v}" for k, v in sorted(f.detections.items()))
            row["offsets"] = _offsets(f)
            rows.append(row)
    return rows, quiet


def _distinct(f: Any) -> str:
    """``12 (60%), top 5``: distinct deterministic ciphertexts, their share of the field's deterministic values, and
    how many share the most frequent one (the equality a deterministic field reveals)."""
    more = "+" if f.distinct_is_lower_bound else ""
    return f"{f.distinct}{more} ({f.distinct / f.deterministic:.0%}), top {f.most_frequent}"


def run(args: argparse.Namespace) -> int:
    from fieldcrypt.inspect.scan import scan_topic
    from fieldcrypt.inspect.topic import registry_client

    detectors = _detectors(args)
    if args.list_detectors:
        from fieldcrypt.inspect.detectors import available_detectors

        chosen = {d.name for d in detectors}
        known = [
            *available_detectors(),
            *(d for d in detectors if d.name not in {a.name for a in available_detectors()}),
        ]
        listed = [
            {"name": d.name, "default": d.default, "chosen": d.name in chosen, "description": d.description}
            for d in known
        ]
        emit(args, listed, lambda: table(listed))
        return EXIT_OK
    merged = merged_report(args)
    if merged is not None:
        return emit_merged(args, merged, _LABELS)
    topic = topic_of(args)
    where = range_of(args)
    conf = policy_conf(args)
    kafka = args.settings.kafka_conf()
    registry = registry_client(args.settings.registry_conf(), args.timeout)
    settings = args.settings
    started = time.monotonic()
    keyring = None
    if (settings.store and settings.keks) or args.store is not None or args.kek:
        keyring = keyring_of(args, needs_kek=True)  # a store or KEK given on the command line: both are needed
    try:
        with progress_of(args, f"scan {topic}").running() as progress:
            report = scan_topic(
                topic,
                kafka,
                registry,
                detectors=detectors,
                keyring=keyring,
                conf=conf,
                keys=args.keys,
                timeout=args.timeout,
                progress=progress,
                **where,
            )
    finally:
        if keyring is not None:
            keyring.close()
    data = timed(report.as_dict(), time.monotonic() - started)

    def text() -> str | None:
        rows, quiet = _rows(report)
        shown = table(rows) if rows else "(no tagged fields, and nothing found in untagged ones)"
        if shown is not None:
            print(shown)
        lines = summary_lines(report, report.findings(), _LABELS)
        notes = [f"detectors: {', '.join(clean(n) for n in report.detectors) or '(none)'}"]
        if quiet:
            notes.append(f"{quiet} untagged field(s) scanned with nothing found (listed with --json)")
        if not report.decrypted:
            notes.append("ciphertexts recognised by their format, not decrypted (decrypt with --store and --kek)")
        if not report.keys_scanned:
            notes.append("record keys not scanned (--keys)")
        print("\n".join([lines[0], *notes, *lines[1:]]))
        return None

    code = EXIT_OK if report.clean else EXIT_FINDINGS
    emit(args, data, text, code)
    return code
