"""``fieldcrypt verify TOPIC``: re-read a topic and count, per key domain or data subject, the encrypted values
that are readable, erased (key shredded) or denied (no key), the plaintext values in tagged fields, and the
records that could not be verified (with their partitions and offsets).

``--by domain`` (the default) names each value's domain as the key store records it (the row of the key its header
names, or the shred log's entry for a shredded key), never as the reader's options say; values naming a key id the
store never held are in the row ``(unknown key)``, plaintext values in tagged fields in ``(no key)`` (in ``--json``:
``"domain": null`` with ``"key": "unknown"`` or ``"none"``). The exit codes are the same for both ``--by``.

Exit codes: 0 no findings; 7 findings: plaintext values in tagged fields, fieldcrypt ciphertext in untagged fields
(a record re-framed with the id of a schema version without the tag), tampered records, or other bad records
(not Confluent-framed, unknown schema id, undecodable...); erased and denied values are information. 3, 4, 5: a
configuration error, a broker/registry/key store that did not answer within ``--timeout``, a topic or partition
that does not exist.

Also here: the options ``verify`` and ``scan`` share (the topic, a range of it, the tag configuration).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fieldcrypt.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    Progress,
    UsageError,
    add_policy_options,
    clean,
    emit,
    given,
    policy_conf,
    table,
)
from fieldcrypt.cli.keys import keyring_of
from fieldcrypt.formats import keys
from fieldcrypt.inspect.verify import BY, NO_KEY, UNKNOWN_KEY

__all__ = [
    "add_range_options",
    "add_topic_options",
    "progress_of",
    "quiet_record_logs",
    "range_of",
    "register",
    "summary_lines",
    "topic_of",
]


def add_topic_options(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("topic_arg", nargs="?", metavar="TOPIC", help="the topic to read")
    p.add_argument("--topic", help="the topic to read (the same as TOPIC)")
    p.set_defaults(command_name=command)


def add_range_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to read (default: every partition, from its start to its end when reading begins)")
    g.add_argument("--partition", type=int, action="append", metavar="N", help="read only this partition (repeatable)")
    g.add_argument("--from-offset", type=int, metavar="OFFSET", help="first offset to read in each partition")
    g.add_argument(
        "--to-offset", type=int, metavar="OFFSET", help="stop before this offset in each partition (exclusive)"
    )
    g.add_argument("--max-records", type=int, metavar="N", help="stop after reading this many records in all")


def topic_of(args: argparse.Namespace) -> str:
    if args.topic_arg and args.topic and args.topic_arg != args.topic:
        raise UsageError("two different topics given (TOPIC and --topic)")
    topic: str | None = args.topic_arg or args.topic
    if topic is None or not topic.strip():
        raise UsageError(f"name the topic: fieldcrypt {getattr(args, 'command_name', 'verify')} TOPIC")
    return topic


def range_of(args: argparse.Namespace) -> dict[str, Any]:
    """The reader's range arguments, checked."""
    for flag in ("from_offset", "to_offset", "max_records"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must not be negative")
    if args.partition is not None and any(p < 0 for p in args.partition):
        raise UsageError("--partition must not be negative")
    if args.from_offset is not None and args.to_offset is not None and args.to_offset < args.from_offset:
        raise UsageError("--to-offset is before --from-offset")
    if args.max_records == 0:
        raise UsageError("--max-records 0 reads nothing")
    return {
        "partitions": args.partition,
        "from_offset": args.from_offset,
        "to_offset": args.to_offset,
        "max_records": args.max_records,
    }


@contextmanager
def quiet_record_logs() -> Iterator[None]:
    """While a command reports every refused record itself: the serdes' own warnings about them ("refused a record
    (tampered...)") are not printed a second time by logging's last-resort handler (when the application, here the
    CLI, configured no logging). Configured handlers still receive them."""
    logger = logging.getLogger("fieldcrypt.serde")
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    quiet = logging.NullHandler()
    logger.addHandler(quiet)
    try:
        yield
    finally:
        logger.removeHandler(quiet)


def progress_of(args: argparse.Namespace, label: str) -> Progress:
    return Progress(label, sys.stderr.isatty() if args.progress is None else args.progress)


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        parents=[parents["common"], parents["store"], parents["cluster"]],
        help="re-read a topic: readable, erased, denied and plaintext values; bad records",
        description="Re-read a topic through the registry and the key store (each record's format, Avro or JSON "
        "Schema, is read from the registry by its schema id: nothing to choose), and count per key domain (or data "
        "subject) the values that are readable, erased, denied, or plaintext in tagged fields. Records that cannot "
        "be verified are counted with their partitions and offsets, and the reading goes on. Exit 7 when tagged "
        "fields hold plaintext or records are tampered or unreadable.",
    )
    add_topic_options(p, "verify")
    p.add_argument(
        "--schema-type",
        choices=keys(),
        default=None,
        help="a check, never needed to read: each record's format (Avro or JSON Schema) is read from the registry "
        "by its schema id; with this, records of the other type count as bad records (format-mismatch)",
    )
    # the old spelling, kept hidden so scripts that pass it keep working (it did the same check)
    p.add_argument("--format", dest="old_format", choices=keys(), default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--by",
        choices=BY,
        default=None,
        help="count per key domain (as the key store records each value's key; default) or per data subject",
    )
    p.add_argument(
        "--data-subject",
        metavar="ID",
        help="count only this person's values (by the records' data-subject field), never printing one; exit 7 if "
        "any is readable or in clear (the proof of an erasure: every one erased). Implies --by data-subject",
    )
    add_range_options(p)
    add_merge_option(p)
    add_policy_options(p)
    p.set_defaults(run=run)


def add_merge_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="REPORT",
        help="merge the JSON reports (--json) of processes that each read some of the partitions (--partition) into "
        "the report one reading of them all gives; reads no topic. A partition in two reports is refused",
    )


def merged_report(args: argparse.Namespace) -> dict[str, Any] | None:
    """The merged report of ``--merge`` files, or None when the command reads a topic."""
    import json

    from fieldcrypt.inspect.merge import merge_reports

    if not args.merge:
        return None
    reading = ("topic", "partition", "from_offset", "to_offset", "max_records")
    if args.topic_arg or any(getattr(args, k) is not None for k in reading):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in reading)
        raise UsageError(f"--merge reads no topic: give the reports only (not TOPIC, {flags})")
    loaded = []
    for path in args.merge:
        try:
            with open(path, encoding="utf-8") as f:
                loaded.append((path, json.load(f)))
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        except ValueError:
            raise UsageError(f"{path}: not JSON (write each report with --json)") from None
    return merge_reports(loaded)


def emit_merged(args: argparse.Namespace, data: dict[str, Any], labels: dict[str, str]) -> int:
    """Print a merged report (JSON with --json); the exit code one reading of every partition would end with."""
    from types import SimpleNamespace

    def text() -> str | None:
        if "rows" in data:
            shown = table(shown_rows(data["rows"]))
            if shown is not None:
                print(shown)
        lines = [f"merged {len(data['shards'])} report(s):"]
        for shard in data["shards"]:
            rate = shard.get("records_per_second")
            lines.append(
                f"  {clean(shard['report'])}: partition(s) {', '.join(map(str, shard['partitions'])) or '(none)'}, "
                f"{shard['records']} record(s)" + (f", {rate} records/s" if rate is not None else "")
            )
        spans = [SimpleNamespace(partition=s["partition"], start=s["from"], next=s["to"]) for s in data["partitions"]]
        bad = data["bad_records"]
        view = SimpleNamespace(
            topic=data["topic"],
            records=data["records"],
            tombstones=data["tombstones"],
            spans=spans,
            bad=SimpleNamespace(count=bad["count"], by_reason=bad["by_reason"], first=bad["first"]),
        )
        untagged = untagged_lines(data.get("untagged_ciphertext", []))
        print("\n".join([*lines, *untagged, *summary_lines(view, data["findings"], labels)]))
        return None

    code = EXIT_OK if data["clean"] else EXIT_FINDINGS
    emit(args, data, text, code)
    return code


def timed(data: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The report with how long this process read, and its records per second (what a merge reports per shard)."""
    data["run"] = {
        "seconds": round(seconds, 3),
        "records_per_second": round(data["records"] / seconds) if seconds > 0 else None,
    }
    return data


def summary_lines(report: Any, findings: dict[str, int], labels: dict[str, str]) -> list[str]:
    """The lines after the table: what was read, the bad records, the findings."""
    spans = report.spans
    lines = [
        f"read {report.records} record(s) of topic {clean(report.topic)!r} from {len(spans)} partition(s): "
        + ", ".join(f"{s.partition} [{s.start}, {s.next})" for s in spans)
        + (f"; {report.tombstones} tombstone(s)" if report.tombstones else "")
    ]
    bad = report.bad
    if bad.count:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(bad.by_reason.items()))
        lines.append(f"bad records: {bad.count} ({reasons})")
        for entry in bad.first:
            part = f" ({entry['part']})" if "part" in entry else ""
            lines.append(
                f"  partition {entry['partition']} offset {entry['offset']}{part}: {entry['reason']}: "
                f"{clean(str(entry['detail']))}"
            )
        if bad.count > len(bad.first):
            lines.append(f"  ... and {bad.count - len(bad.first)} more (the first {len(bad.first)} are listed)")
    found = [f"{n} {labels[k]}" for k, n in findings.items() if n]
    lines.append(f"findings: {', '.join(found)}" if found else "no findings")
    return lines


def untagged_lines(found: list[dict[str, Any]]) -> list[str]:
    """Fields the records' schemas do not tag that hold fieldcrypt ciphertext (a record re-framed with the id of a
    schema version without the tag), with the first partition:offset of each."""
    lines = []
    for u in found:
        where = ", ".join(f"{o['partition']}:{o['offset']}" for o in u["offsets"][:4])
        more = len(u["offsets"]) - 4 + u["more_offsets"]
        lines.append(
            f"ciphertext in an untagged field: subject {clean(u['subject'])!r} field {clean(u['field'])!r}: "
            f"{u['values']} value(s) at {where}{f', +{more}' if more > 0 else ''} (the records' schema does not tag "
            "the field: a record re-framed with another schema version's id?)"
        )
    return lines


def shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the table shows them: a row that is no domain by its name (``(unknown key)``, ``(no key)``)."""
    names = {"unknown": UNKNOWN_KEY, "none": NO_KEY}
    shown = []
    for row in rows:
        if "key" not in row:  # --by data-subject
            shown.append(row)
            continue
        rest = {k: v for k, v in row.items() if k not in ("domain", "key")}
        shown.append({"domain": row["domain"] if row["key"] == "known" else names[row["key"]], **rest})
    return shown


_LABELS = {
    "plaintext": "plaintext value(s) in tagged fields",
    "untagged_ciphertext": "ciphertext value(s) in untagged fields",
    "tampered": "tampered record(s)",
    "bad_records": "other bad record(s)",
    "readable_of_data_subject": "value(s) of the data subject still readable",
}


def _schema_type(args: argparse.Namespace) -> str | None:
    """``--schema-type``, or its old spelling ``--format`` (hidden, for scripts); both given must agree."""
    new: str | None = args.schema_type
    old: str | None = args.old_format
    if old is not None and new is not None and new != old:
        raise UsageError(f"--schema-type {new} and --format {old} disagree (--format is the old name of --schema-type)")
    return new if new is not None else old


def run(args: argparse.Namespace) -> int:
    from fieldcrypt.inspect.topic import registry_client
    from fieldcrypt.inspect.verify import verify_topic

    merged = merged_report(args)
    if merged is not None:
        return emit_merged(args, merged, _LABELS)
    topic = topic_of(args)
    person = given(args.data_subject, "--data-subject")
    if person is not None and args.by == "domain":
        raise UsageError("--data-subject counts one person's values: drop --by domain")
    by = "data-subject" if person is not None else (args.by or "domain")
    schema_type = _schema_type(args)
    where = range_of(args)
    conf = policy_conf(args)
    kafka = args.settings.kafka_conf()
    registry = registry_client(args.settings.registry_conf(), args.timeout)
    kr = keyring_of(args, needs_kek=True)
    started = time.monotonic()
    try:
        with quiet_record_logs(), progress_of(args, f"verify {topic}").running() as progress:
            report = verify_topic(
                kr,
                topic,
                kafka,
                registry,
                by=by,
                timeout=args.timeout,
                fmt=schema_type,
                conf=conf,
                progress=progress,
                data_subject=person,
                **where,
            )
    finally:
        kr.close()
    data = timed(report.as_dict(), time.monotonic() - started)

    def text() -> str | None:
        shown = table(shown_rows(data["rows"]))
        if shown is not None:
            print(shown)
        print(
            "\n".join(
                [*untagged_lines(data["untagged_ciphertext"]), *summary_lines(report, report.findings(), _LABELS)]
            )
        )
        return None

    code = EXIT_OK if report.clean else EXIT_FINDINGS
    emit(args, data, text, code)
    return code
