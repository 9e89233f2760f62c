"""What every ``fieldcrypt`` command shares: exit codes, usage errors, output (tables, ``--json``), progress.

Tables and progress bars use rich (``pip install 'fieldcrypt[cli]'``) when the output is a terminal; without rich,
or when the output is a pipe or a file, tables are plain aligned text (stable for scripts: one row per line, no
borders, no wrapping) and progress is a single redrawn line on stderr. A rich table never breaks a header, key id,
date, domain or data subject across lines (only free text such as a reason or a KEK URI wraps); a table too wide for
the terminal is printed as one block of ``NAME  value`` lines per row instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fieldcrypt.inspect.errors import NotFoundError, UnavailableError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_FINDINGS",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "ArgumentParser",
    "NotFoundError",
    "Progress",
    "UnavailableError",
    "UsageError",
    "add_policy_options",
    "clean",
    "emit",
    "given",
    "plain_table",
    "policy_conf",
    "seconds",
    "table",
]

#: exit codes, the same for every command (docs/cli.md lists them)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_NOT_FOUND, EXIT_PENDING = 0, 1, 2, 3, 4, 5, 6
#: ``schema lint`` / ``scan`` / ``verify`` found what they look for (plaintext personal data, a refused tag...)
EXIT_FINDINGS = 7


class UsageError(Exception):
    """A command line that cannot mean what was asked (exit 2); nothing was changed."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line raises :class:`UsageError` (so ``--json`` can word it as JSON, and every
    usage error anywhere exits 2) instead of printing and exiting on its own."""

    def error(self, message: str) -> Any:  # argparse's signature is NoReturn
        raise UsageError(f"{message} (see '{self.prog} --help')")


def clean(text: str) -> str:
    """Text safe to print on a terminal: control and format characters (escape sequences, newlines, bidi
    overrides) and backslashes are shown escaped, so a forged id cannot draw or hide rows."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        "\\\\" if c == "\\" else c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def given(value: str | None, flag: str) -> str | None:
    """An option's value, refusing an empty or blank one (an unset shell variable must not widen a command)."""
    if value is not None and not value.strip():
        raise UsageError(f"{flag} is empty or blank")
    return value


def _abbreviated(ids: list[str], sep: str = ",") -> str:
    return sep.join(ids[:4]) + (f"{sep}+{len(ids) - 4}" if len(ids) > 4 else "")


def _cell(value: Any, sep: str = ",") -> str:
    if value in (None, "", []):
        return "-"
    if isinstance(value, list):
        return clean(_abbreviated([str(v) for v in value], sep))
    if isinstance(value, dict):
        return clean(", ".join(f"{k}={v}" for k, v in value.items()))
    return clean(str(value))


def _rich_console() -> Any:
    if not sys.stdout.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(highlight=False, soft_wrap=False)


#: columns of free text (an admin's reason, a KEK URI, a hint): the only ones a rich table wraps between words and
#: folds within a word. Every other cell (key ids, dates, domains, data subjects, counts, states) stays whole.
FREE_TEXT = frozenset({"reason", "kek", "detail", "description", "hint"})
#: the narrowest a free-text column is squeezed to (a longer word, such as a KEK URI, folds)
_FREE_MIN = 8
#: how far apart rich puts two columns here: one padding (collapsed) and a one-character divider (no outer edge)
_GAP = 2


def _rich_widths(cols: list[str], cells: dict[str, list[str]], lists: set[str], room: int) -> dict[str, int] | None:
    """Column widths (cells, without the gaps) that fit ``room``: every header, and every cell of a column that is
    neither free text nor a list, whole; list columns (key ids) broken only between items; free text squeezed down to
    ``_FREE_MIN`` (never below its header). None when that does not fit."""
    from rich.cells import cell_len

    natural = {c: max(len(c), *(cell_len(v) for v in cells[c])) for c in cols}
    least = dict(natural)
    for c in cols:
        if c in FREE_TEXT:
            least[c] = max(len(c), min(natural[c], _FREE_MIN))
        elif c in lists:
            least[c] = max(len(c), *(cell_len(w) for v in cells[c] for w in v.split()))
    widths = dict(natural)
    excess = sum(widths.values()) - room
    while excess > 0:
        roomiest = max(cols, key=lambda c: widths[c] - least[c])
        give = min(excess, widths[roomiest] - least[roomiest])
        if give <= 0:
            return None
        widths[roomiest] -= give
        excess -= give
    return widths


def table(rows: list[dict[str, Any]], *, title: str | None = None) -> str | None:
    """Rows as a table: rich on a terminal (printed here; returns None), plain aligned text otherwise.

    On a terminal, no header, key id, date, domain or data subject is ever broken across lines: only free-text
    columns (``FREE_TEXT``) wrap, and lists wrap between items. When the table cannot fit that way, each row is
    printed as a block of ``NAME  value`` lines instead (as psql's expanded display); on a terminal narrower than
    that too, the plain table."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    console = _rich_console()
    if console is not None:
        from rich import box
        from rich.cells import cell_len
        from rich.table import Table
        from rich.text import Text

        lists = {c for c in cols if any(isinstance(r.get(c), list) for r in rows)}
        cells = {c: [_cell(r.get(c), ", " if c in lists else ",") for r in rows] for c in cols}
        widths = _rich_widths(cols, cells, lists, console.width - _GAP * (len(cols) - 1))
        if widths is not None:
            t = Table(
                box=box.SIMPLE_HEAD,
                show_edge=False,
                pad_edge=False,
                collapse_padding=True,
                title=title,
                title_justify="left",
            )
            for c in cols:
                wraps = c in FREE_TEXT or c in lists
                t.add_column(c.upper(), width=widths[c], no_wrap=not wraps, overflow="fold" if wraps else "crop")
            for i in range(len(rows)):
                t.add_row(*(Text(cells[c][i]) for c in cols))
            console.print(t)
            return None
        label = max(len(c) for c in cols)
        whole = [cell_len(v) for c in cols if c not in FREE_TEXT and c not in lists for v in cells[c]]
        if label + _GAP + max(whole, default=0) <= console.width:
            if title:
                console.print(Text(title))
            for i in range(len(rows)):
                grid = Table.grid(padding=(0, _GAP, 0, 0))
                grid.add_column(no_wrap=True, width=label)
                grid.add_column(overflow="fold")
                for c in cols:
                    grid.add_row(Text(c.upper()), Text(cells[c][i]))
                if i:
                    console.print()
                console.print(grid)
            return None
    return plain_table(rows, title=title)


def plain_table(rows: list[dict[str, Any]], *, title: str | None = None) -> str:
    """Rows as plain aligned text (what :func:`table` prints off a terminal): one row per line, columns two spaces
    apart, cells escaped, ``-`` for nothing."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    cells = {c: [_cell(r.get(c)) for r in rows] for c in cols}
    widths = {c: max(len(c), *(len(v) for v in cells[c])) for c in cols}
    lines = [title] if title else []
    lines.append("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    lines += ["  ".join(cells[c][i].ljust(widths[c]) for c in cols).rstrip() for i in range(len(rows))]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str | None], code: int = EXIT_OK) -> None:
    """Print ``data`` as JSON with ``--json``, else the human text (``text`` may print itself and return None).
    ``code``: the exit code the command ends with, kept when the reader goes away mid-output (``| head``): a
    findings exit must not turn into 0 because the output was cut short."""
    args.exit_code = code
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return
    out = text()
    if out is not None:
        print(out)


class Progress:
    """Progress on stderr when it is a terminal (or ``--progress``); silent otherwise. Called as
    ``progress(done, total)``; ``total`` 0 means unknown. Shows counts only, never values."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled
        self.done = 0  #: the last count reported, shown or not (a command can say how far it got before a failure)
        self._bar: Any = None
        self._task: Any = None
        self._plain_shown = False

    @contextmanager
    def running(self) -> Iterator[Progress]:
        try:
            yield self
        finally:
            self.close()

    def __call__(self, done: int, total: int = 0) -> None:
        self.done = done
        if not self.enabled:
            return
        if self._bar is None and self._task is None:
            self._start(total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None)
            return
        if total:
            width = 30
            filled = width * min(done, total) // total
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        else:
            sys.stderr.write(f"\r{self.label}: {done}")
        sys.stderr.flush()
        self._plain_shown = True

    def _start(self, total: int) -> None:
        self._task = False  # started, plain unless rich is there
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        from rich.console import Console

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total or None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._plain_shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._plain_shown = False


def add_policy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tag configuration (the producers' fieldcrypt.* settings; default: PII is encrypted)")
    g.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="a tag whose fields are encrypted (fieldcrypt.tags; repeatable or comma-separated; default PII)",
    )
    g.add_argument(
        "--plaintext-tag",
        action="append",
        metavar="TAG",
        help="a tag that means 'leave in clear' (fieldcrypt.plaintext.tags; repeatable or comma-separated)",
    )
    g.add_argument(
        "--data-subject-tag",
        metavar="TAG",
        help="the tag of the field naming the person (fieldcrypt.data.subject.tag; default DATA_SUBJECT_ID)",
    )
    g.add_argument(
        "--tag-domain",
        action="append",
        metavar="TAG=DOMAIN",
        help="the key domain of a tag (fieldcrypt.tag.domains; repeatable)",
    )
    g.add_argument(
        "--domain", metavar="DOMAIN", help="the default key domain (fieldcrypt.domain; default: the subject)"
    )
    g.add_argument(
        "--mask",
        action="append",
        metavar="TAG=MASK",
        help="the mask of a tag's masked view (fieldcrypt.masks: email, phone, card, name, date or a plug-in; "
        "repeatable)",
    )
    g.add_argument(
        "--deterministic-tag",
        action="append",
        metavar="TAG",
        help="a tag of --tag whose values are encrypted deterministically (fieldcrypt.deterministic.tags: equal "
        "values give equal ciphertexts; repeatable or comma-separated)",
    )


def policy_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The fieldcrypt conf keys the tag options give, over the configuration file's ``[policy]`` table (a flag given
    replaces that key's value from the file)."""
    settings = getattr(args, "settings", None)
    conf: dict[str, Any] = dict(getattr(settings, "policy", None) or {})
    if args.tag is not None:
        conf["fieldcrypt.tags"] = _words(args.tag, "--tag")
    if args.plaintext_tag is not None:
        conf["fieldcrypt.plaintext.tags"] = _words(args.plaintext_tag, "--plaintext-tag")
    if args.data_subject_tag is not None:
        conf["fieldcrypt.data.subject.tag"] = given(args.data_subject_tag, "--data-subject-tag")
    if args.tag_domain is not None:
        domains: dict[str, str] = {}
        for item in args.tag_domain:
            tag, eq, domain = item.partition("=")
            if not eq or not tag.strip() or not domain.strip():
                raise UsageError("--tag-domain expects TAG=DOMAIN")
            if domains.get(tag.strip(), domain.strip()) != domain.strip():
                raise UsageError("--tag-domain gives one tag two domains")
            domains[tag.strip()] = domain.strip()
        conf["fieldcrypt.tag.domains"] = domains
    if args.domain is not None:
        conf["fieldcrypt.domain"] = given(args.domain, "--domain")
    if getattr(args, "mask", None) is not None:
        masks: dict[str, str] = {}
        for item in args.mask:
            tag, eq, mask = item.partition("=")
            if not eq or not tag.strip() or not mask.strip():
                raise UsageError("--mask expects TAG=MASK, e.g. --mask EMAIL=email")
            if masks.get(tag.strip(), mask.strip()) != mask.strip():
                raise UsageError("--mask gives one tag two masks")
            masks[tag.strip()] = mask.strip()
        conf["fieldcrypt.masks"] = masks
    if getattr(args, "deterministic_tag", None) is not None:
        conf["fieldcrypt.deterministic.tags"] = _words(args.deterministic_tag, "--deterministic-tag")
    return conf


def _words(values: list[str], flag: str) -> list[str]:
    out = [w.strip() for v in values for w in v.split(",")]
    if not all(out):
        raise UsageError(f"{flag} has an empty tag name")
    return out


#: the longest --timeout taken: a day (librdkafka and httpx take milliseconds as 32-bit ints, inf/nan as errors)
MAX_TIMEOUT = 86_400.0


def kms_seconds(text: str) -> float:
    """An argparse ``type`` for ``--kms-timeout``: seconds, more than 0 and at most ``MAX_KMS_TIMEOUT`` (300)."""
    from fieldcrypt.keys.kek import MAX_KMS_TIMEOUT

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_KMS_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_KMS_TIMEOUT:.0f} seconds")
    return value


def seconds(text: str) -> float:
    """An argparse ``type`` for ``--timeout``: a number of seconds, more than 0 and at most a day (``nan``,
    ``inf``, 0 and negative values are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
    return value
