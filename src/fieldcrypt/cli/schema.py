"""``fieldcrypt schema lint``: per field of a schema file or registered subject, what fieldcrypt's serializers will
do (encrypt, key per person, leave in clear, refuse), the untagged fields that look like personal data, and the
tags removed since the previous version. For CI jobs and pre-commit hooks (docs/schema-lint.md).

Exit codes: 0 clean; 7 findings (a refused schema, a tag removed, a hint: as ``--fail-on`` says; a file that is not
a schema always); 2 usage; 3 configuration (tags, hint files, registry credentials); 4 registry unreachable; 5 a
file, subject, version or git revision not found.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from fieldcrypt.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    NotFoundError,
    UnavailableError,
    UsageError,
    add_policy_options,
    clean,
    emit,
    given,
    policy_conf,
    seconds,
    table,
)
from fieldcrypt.errors import ConfigurationError, FieldcryptError
from fieldcrypt.formats import formats, keys
from fieldcrypt.inspect.lint import (
    NAME_HINTS,
    Hint,
    SchemaReport,
    lint_schema,
    parse_hints,
    removed_tags,
    rules_from_conf,
)
from fieldcrypt.inspect.topic import MALFORMED_ANSWER, not_a_registry, registry_client

__all__ = ["classify", "register"]

FAIL_ON = ("refused", "removed", "hints", "deterministic")
_KIND = {"refused": "refused", "removed": "removed", "hint": "hints", "deterministic": "deterministic"}


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    schema = sub.add_parser(
        "schema", help="schema checks: lint", description="Check schemas against fieldcrypt's tag policy."
    )
    actions = schema.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser(
        "lint",
        parents=[parents["common"]],
        help="what fieldcrypt will encrypt, refuse or leave in clear, per field",
        description="Lint schema files (Avro .avsc/.avro, JSON Schema .json) or registered subjects: per field "
        "path, what the serializers will do (encrypted, data-subject, plaintext (declared), clear, refused, with the "
        "reason), the untagged fields whose names or formats look like personal data (hints), and the tags removed "
        "since the previous version. The verdicts are the serializers' own: the same compiler, the same tag "
        "settings. Exit 7 on findings (see --fail-on), 0 when clean.",
    )
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="schema files to lint (Avro .avsc/.avro, JSON Schema .json)"
    )
    p.add_argument(
        "--type",
        choices=keys(),
        help="the files' schema type (default: by extension; a .json file with JSON Schema keywords is JSON Schema, "
        "a record/enum/fixed is Avro, anything else is refused)",
    )
    p.add_argument(
        "--subject", action="append", default=None, help="a registry subject to lint (repeatable; needs a registry)"
    )
    p.add_argument(
        "--version",
        dest="subject_version",
        metavar="N|latest",
        help="the subject's version to lint (default: latest)",
    )
    prev = p.add_mutually_exclusive_group()
    prev.add_argument(
        "--previous",
        metavar="FILE",
        help="the previous version of the one schema linted, to report tags removed (default for --subject: the "
        "version registered before it)",
    )
    prev.add_argument("--previous-version", metavar="N", help="with --subject: compare with this registered version")
    prev.add_argument(
        "--previous-rev",
        metavar="REV",
        help="compare each FILE with its copy at this git revision (HEAD in a pre-commit hook); files new there "
        "have nothing to compare",
    )
    add_policy_options(p)
    hints = p.add_argument_group("hints (untagged fields that look like personal data)")
    hints.add_argument(
        "--hint",
        action="append",
        default=None,
        metavar="CATEGORY=REGEX",
        help="one more name hint: a regular expression searched in the normalized field name (repeatable)",
    )
    hints.add_argument(
        "--hint-names",
        action="append",
        default=None,
        metavar="FILE",
        help="a file of name hints, one CATEGORY=REGEX per line, # comments (repeatable)",
    )
    hints.add_argument(
        "--no-default-hints", action="store_true", help="use only --hint and --hint-names, not the default list"
    )
    hints.add_argument(
        "--ignore-hint",
        action="append",
        default=None,
        metavar="PATTERN",
        help="never hint these paths, nor warn on their deterministic values (metadata.tags wildcards: '**.city', "
        "'Order.note', '$.a.b'; repeatable)",
    )
    p.add_argument(
        "--fail-on",
        default=",".join(FAIL_ON),
        metavar="LIST",
        help="which findings exit 7: a comma-separated subset of refused, removed, hints, deterministic (a "
        "deterministic value whose schema suggests few distinct values), or none (default: "
        "%(default)s; a file that is not a schema always does)",
    )
    reg = p.add_argument_group("registry (for --subject)")
    reg.add_argument("--schema-registry", metavar="URL", help="schema registry URL ($FIELDCRYPT_SCHEMA_REGISTRY)")
    reg.add_argument(
        "--registry-conf",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="a SchemaRegistryClient setting, repeatable (basic.auth.user.info=..., ssl.ca.location=...)",
    )
    reg.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on an unreachable registry after about this long, retries included (default: %(default)s)",
    )
    p.set_defaults(run=run)


# -- the command line -----------------------------------------------------------------------------------------------


def _positive(value: str | None, flag: str, latest: bool = False) -> int | None:
    if value is None or (latest and value == "latest"):
        return None
    if not value.isdigit() or int(value) == 0:
        raise UsageError(f"{flag} must be a version number (1, 2, ...){' or latest' if latest else ''}")
    return int(value)


def _fail_on(text: str) -> set[str]:
    words = {w.strip() for w in text.split(",") if w.strip()}
    if words == {"none"}:
        return set()
    if not words or not words <= set(FAIL_ON):
        raise UsageError(f"--fail-on takes a comma-separated subset of {', '.join(FAIL_ON)}, or none")
    return words


def _hints(args: argparse.Namespace) -> list[Hint]:
    mine: list[Hint] = []
    for path in args.hint_names or []:
        given(path, "--hint-names")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"--hint-names {path!r} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigurationError(f"--hint-names {path!r} cannot be read: {exc.strerror}") from None
        mine += parse_hints(text.splitlines(), f"--hint-names {path!r}")
    for item in args.hint or []:
        mine += parse_hints([item])
    if args.no_default_hints and not mine:
        raise UsageError("--no-default-hints needs --hint or --hint-names (or pass --fail-on without hints)")
    return mine if args.no_default_hints else [*mine, *NAME_HINTS]


#: keywords only a JSON Schema has at its top (Avro's are type, name, namespace, fields, symbols, items, values...)
_JSON_SCHEMA_KEYS: tuple[str, ...] = ("$schema", "$id", "$ref", "$defs", "definitions", "properties")
_JSON_SCHEMA_KEYS += ("patternProperties", "additionalProperties", "allOf", "anyOf", "oneOf", "required")


def classify(path: str, text: str, forced: str | None) -> str:
    """AVRO or JSON for a schema file; ``ValueError`` (a one-line reason) when that cannot be told for sure."""
    if forced is not None:
        return forced.upper()
    suffix = Path(path).suffix.lower()
    for fmt in formats():
        if suffix in fmt.suffixes:
            return fmt.schema_type
    if suffix != ".json":
        known = [s for fmt in formats() for s in fmt.suffixes] + [".json"]
        raise ValueError(
            f"unknown file type (expected {', '.join(known[:-1])} or {known[-1]}): pass "
            + " or ".join(f"--type {k}" for k in keys())
        )
    import json

    try:
        doc = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    if isinstance(doc, dict):
        kinds: list[Any] = doc["type"] if isinstance(doc.get("type"), list) else [doc.get("type")]
        if "object" in kinds or any(k in doc for k in _JSON_SCHEMA_KEYS):
            return "JSON"
        if doc.get("type") in ("record", "error", "enum", "fixed") and "name" in doc:
            return "AVRO"
    if isinstance(doc, bool):
        return "JSON"
    raise ValueError(
        "cannot tell an Avro schema from a JSON Schema here (no $schema, not type object or record): pass --type"
    )


# -- inputs --------------------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    """The file's text, or None if it is not UTF-8 (a finding, not an error)."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


def _git_copy(path: str, rev: str) -> str | None:
    """The file's content at git revision ``rev`` (None: not in that revision, a new file)."""
    where = Path(path).resolve()
    try:
        check = subprocess.run(
            ["git", "-C", str(where.parent), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        raise ConfigurationError("--previous-rev needs git on PATH") from None
    if check.returncode != 0:
        if rev == "HEAD" and _git(where.parent, "rev-parse", "--git-dir") == 0:
            return None  # a repository without a commit yet (a pre-commit hook before the first commit)
        raise NotFoundError(f"--previous-rev {rev!r} is not a commit of a git repository holding {path}")
    show = subprocess.run(
        ["git", "-C", str(where.parent), "show", f"{rev}:./{where.name}"], capture_output=True, timeout=60
    )
    if show.returncode != 0:
        return None
    try:
        return bytes(show.stdout).decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _git(cwd: Path, *argv: str) -> int:
    return subprocess.run(["git", "-C", str(cwd), *argv], capture_output=True, timeout=60).returncode


class _Registry:
    """The subjects' registry, through confluent's client; its errors as the CLI's exit codes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.client = registry_client(args.settings.registry_conf(), args.timeout)

    def call(self, what: str, fn: Any, *params: Any) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        from fieldcrypt.core.confluent import registry_transport_error

        try:
            return fn(*params)
        except SchemaRegistryError as exc:
            status, code = exc.http_status_code, exc.error_code
            if status == 404 or code in (40401, 40402, 40403):
                raise NotFoundError(f"{what}: not found in the schema registry ({exc.error_message})") from None
            if status in (401, 403):
                raise ConfigurationError(
                    f"{what}: the schema registry refused the request (HTTP {status}): check its credentials"
                ) from None
            if status >= 500 or status < 0:
                raise UnavailableError(f"{what}: the schema registry failed (HTTP {status})") from None
            raise FieldcryptError(f"{what}: the schema registry answered HTTP {status}: {exc.error_message}") from None
        except (registry_transport_error(), OSError) as exc:
            raise UnavailableError(f"{what}: the schema registry did not answer ({type(exc).__name__})") from None
        except MALFORMED_ANSWER as exc:
            raise not_a_registry(what, exc) from None

    def version(self, subject: str, version: int | None) -> Any:
        what = f"subject {subject!r}" if version is None else f"subject {subject!r} version {version}"
        if version is None:
            found = self.call(what, self.client.get_latest_version, subject)
        else:
            found = self.call(what, self.client.get_version, subject, version)
        schema = getattr(found, "schema", None)
        if not isinstance(getattr(found, "version", None), int) or not isinstance(
            getattr(schema, "schema_str", None), str
        ):
            raise not_a_registry(what, TypeError("RegisteredSchema"))
        return found

    def before(self, subject: str, version: int) -> int | None:
        versions = self.call(f"subject {subject!r}", self.client.get_versions, subject)
        older = [v for v in versions if v < version]
        return max(older) if older else None


# -- the run -------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    files = [p for p in (given(f, "FILE") for f in args.files) if p is not None]
    subjects = [s for s in (given(x, "--subject") for x in args.subject or []) if s is not None]
    if not files and not subjects:
        raise UsageError("name the schemas: fieldcrypt schema lint FILE... or --subject SUBJECT")
    version = _positive(given(args.subject_version, "--version"), "--version", latest=True)
    previous_version = _positive(given(args.previous_version, "--previous-version"), "--previous-version")
    if (args.subject_version is not None or previous_version is not None) and not subjects:
        raise UsageError("--version and --previous-version apply to --subject")
    if args.previous is not None and len(files) + len(subjects) != 1:
        raise UsageError("--previous compares one schema: lint one FILE or one --subject with it")
    if args.previous_rev is not None and (not files or not args.previous_rev.strip() or args.previous_rev[0] == "-"):
        raise UsageError("--previous-rev needs FILEs and a git revision (HEAD, main, a commit)")
    fail_on = _fail_on(args.fail_on)
    conf = policy_conf(args)
    rules_from_conf(conf)  # a bad tag setting is exit 3 before anything is read
    hints = _hints(args)
    ignore = [p for p in (given(x, "--ignore-hint") for x in args.ignore_hint or []) if p is not None]
    for path in [*files, *([args.previous] if args.previous else [])]:
        if not Path(path).is_file():
            raise NotFoundError(f"{path}: no such file" if not Path(path).exists() else f"{path}: not a file")
    registry = _Registry(args) if subjects else None

    def lint_text(text: str | None, source: str, forced: str | None = args.type) -> SchemaReport:
        if text is None:
            return _invalid(source, "not UTF-8 text")
        try:
            kind = classify(source, text, forced)
        except ValueError as exc:
            return _invalid(source, str(exc))
        return lint_schema(text, kind, conf, hints=hints, ignore_hints=ignore, source=source)

    def lint_registered(subject: str, registered: Any) -> SchemaReport:
        return lint_schema(
            registered.schema,
            registered.schema.schema_type or "AVRO",
            conf,
            registry=registry.client if registry else None,
            hints=hints,
            ignore_hints=ignore,
            source=f"{subject} version {registered.version}",
            subject=subject,
            version=registered.version,
            schema_id=registered.schema_id,
        )

    reports = []
    for path in files:
        report = lint_text(_read(path), path)
        before: SchemaReport | None = None
        if args.previous is not None:
            before = lint_text(_read(args.previous), args.previous, args.type or report.schema_type)
        elif args.previous_rev is not None:
            old = _git_copy(path, args.previous_rev)
            if old is not None:
                before = lint_text(old, f"{path}@{args.previous_rev}", args.type or report.schema_type)
        reports.append(_compare(report, before))
    for subject in subjects:
        assert registry is not None
        current = registry.version(subject, version)
        report = lint_registered(subject, current)
        before = None
        if args.previous is not None:
            before = lint_text(_read(args.previous), args.previous, args.type or report.schema_type)
        else:
            older = previous_version or registry.before(subject, int(current.version))
            if older is not None:
                before = lint_registered(subject, registry.version(subject, older))
        reports.append(_compare(report, before))

    code = EXIT_FINDINGS if _failing(reports, fail_on) else EXIT_OK
    emit(args, [r.as_dict() for r in reports], lambda: _human(reports, fail_on), code)
    return code


def _invalid(source: str, why: str) -> SchemaReport:
    from fieldcrypt.inspect.lint import Finding

    return SchemaReport(source, None, findings=[Finding("invalid", None, f"{source}: {why}")])


def _compare(report: SchemaReport, before: SchemaReport | None) -> SchemaReport:
    if before is None:
        return report
    from fieldcrypt.inspect.lint import Finding

    report.previous = before.source
    if any(f.kind == "invalid" for f in before.findings):
        why = "; ".join(f.message for f in before.findings if f.kind == "invalid")
        report.findings.append(Finding("invalid", None, f"the previous version cannot be read: {why}"))
    else:
        report.findings += removed_tags(before, report)
    return report


def _failing(reports: list[SchemaReport], fail_on: set[str]) -> list[str]:
    """What makes this run exit 7, in --fail-on's words (and ``invalid``, which always does)."""
    kinds = {f.kind for r in reports for f in r.findings}
    return sorted({"invalid"} & kinds | {_KIND[k] for k in kinds if _KIND.get(k) in fail_on})


def _human(reports: list[SchemaReport], fail_on: set[str]) -> None:
    counts = dict.fromkeys(("encrypted", "data-subject", "plaintext (declared)", "clear"), 0)
    for report in reports:
        title = f"{report.source} ({report.schema_type or 'unreadable'})"
        if report.previous:
            title += f", compared with {report.previous}"
        if report.rows:
            masked = any(r.mask for r in report.rows)  # the column only where a value has a masked view
            det = any(r.deterministic for r in report.rows)  # and where a value is deterministic
            rows = [
                {
                    "path": r.path,
                    "type": r.type,
                    "verdict": r.verdict,
                    "tags": list(r.tags),
                    "domain": (r.domain or "(subject)") if r.verdict == "encrypted" else None,
                    **(
                        {"masked view": f"{r.mask} ({r.domain or '(subject)'}/masked)" if r.mask else None}
                        if masked
                        else {}
                    ),
                    **(
                        {"deterministic": f"yes ({r.domain or '(subject)'}/det)" if r.deterministic else None}
                        if det
                        else {}
                    ),
                    "hint": f"pii-hint:{r.hint}" if r.hint else ("few-values" if r.few_values else None),
                }
                for r in report.rows
            ]
            text = table(rows, title=clean(title))
            if text is not None:
                print(text)
        else:
            print(clean(title))
        for r in report.rows:
            if r.verdict in counts:
                counts[r.verdict] += 1
        for f in report.findings:
            print(f"  {f.kind}: {clean(f.message)}")
        for r in report.rows:
            if r.verdict == "encrypted" and r.reason:
                print(f"  note: {clean(r.path)}: encrypted {clean(r.reason)}")
        print()
    kinds = ("refused", "removed", "hint", "deterministic")
    found = {k: sum(1 for r in reports for f in r.findings if f.kind == k) for k in kinds}
    invalid = sum(1 for r in reports for f in r.findings if f.kind == "invalid")
    failing = _failing(reports, fail_on)
    summary = (
        f"{len(reports)} schema{'s' if len(reports) != 1 else ''}: {counts['encrypted']} encrypted, "
        f"{counts['data-subject']} data subject, {counts['plaintext (declared)']} declared plaintext, "
        f"{counts['clear']} clear; {found['refused']} refused, {found['removed']} tag(s) removed, "
        f"{found['hint']} hint(s)"
        + (f", {found['deterministic']} deterministic warning(s)" if found["deterministic"] else "")
        + (f", {invalid} unreadable" if invalid else "")
    )
    print(summary + (f" -- failing on {', '.join(failing)}" if failing else ""))
