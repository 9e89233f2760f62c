"""MkDocs hooks for the documentation site (``hooks:`` in mkdocs.yml).

``on_files`` adds the page ``cli.md``, the CLI reference, generated at build time from the ``fieldcrypt``
command's own argparse parser (``fieldcrypt.cli.build_parser()``, or ``_parser()`` where that does not exist yet).
It walks the subparsers recursively, so a command added to the parser appears on the next build without a change
here, and renders for each command its help, its usage line and a table of its arguments (flags, value, default,
choices, help). The exit codes come from the ``EXIT_*`` constants of the CLI modules. Nothing generated is
committed.

    python tools/mkdocs_hooks.py        print the generated page (what the site shows)
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: the generated page, relative to docs_dir
CLI_PAGE = "cli.md"
#: usage lines are wrapped at this width, whatever the terminal that builds the site
WIDTH = 100

#: what each exit-code constant means; a constant missing here is listed under its own name
EXIT_MEANINGS = {
    "EXIT_OK": "done",
    "EXIT_ERROR": "an unexpected error, or a shred that was not confirmed",
    "EXIT_USAGE": "usage: the command line cannot mean what was asked (an empty or blank target, an unreadable "
    "`--from-file`, a missing option...); nothing was changed",
    "EXIT_CONFIG": "configuration: no key store or KEK given, a key store that was never created, a KEK file that "
    "does not exist or that others may read, a missing extra",
    "EXIT_UNAVAILABLE": "the key store or KMS is unreachable or throttling, after retries: run it again later",
    "EXIT_NOT_FOUND": "no such key",
    "EXIT_PENDING": "shred pending: the keys are destroyed, but a copy may remain in the SQLite write-ahead log while "
    "a reader holds it; run the same command again until it exits 0",
    "EXIT_FINDINGS": "the command found what it looks for (see the command's page)",
}

_ENV_PREFIX = "FIELDCRYPT_"


@dataclass
class Command:
    """One parser of the tree: ``path`` is its words after ``fieldcrypt`` (empty for the root)."""

    prog: str
    path: list[str]
    parser: argparse.ArgumentParser
    help: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join([self.prog, *self.path])

    @property
    def anchor(self) -> str:
        return "-".join(self.path) or "fieldcrypt"


def load_parser() -> argparse.ArgumentParser:
    """The CLI's parser, freshly imported (``mkdocs serve`` rebuilds see CLI changes), built with no
    ``FIELDCRYPT_*`` variable in the environment: defaults read from it (``--store`` from ``$FIELDCRYPT_STORE``)
    must not put the builder's own store URL or KEK into the published page."""
    for name in [m for m in sys.modules if m == "fieldcrypt.cli" or m.startswith("fieldcrypt.cli.")]:
        del sys.modules[name]
    cli = importlib.import_module("fieldcrypt.cli")
    build = getattr(cli, "build_parser", None) or getattr(cli, "_parser", None)
    if build is None:
        raise RuntimeError("fieldcrypt.cli has neither build_parser() nor _parser(): cannot generate the CLI reference")
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIX)}
    for k in saved:
        del os.environ[k]
    try:
        parser = build()
    finally:
        os.environ.update(saved)
    if not isinstance(parser, argparse.ArgumentParser):
        raise RuntimeError(f"fieldcrypt.cli's parser factory returned {type(parser).__name__}, not an ArgumentParser")
    return parser


def walk(
    parser: argparse.ArgumentParser, path: list[str] | None = None, help: str | None = None, prog: str | None = None
) -> Iterator[Command]:
    """Every command of the tree, depth first, in the order they were added (aliases listed once)."""
    path = path or []
    prog = prog or parser.prog
    names: dict[int, list[str]] = {}
    subs: list[tuple[str, argparse.ArgumentParser, str | None]] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: _help(parser, a) if a.help != argparse.SUPPRESS else a.help for a in action._choices_actions}
        hidden = {id(action.choices[n]) for n, h in helps.items() if h == argparse.SUPPRESS and n in action.choices}
        for name, sub in action.choices.items():
            if id(sub) in hidden:  # a hidden command (help=SUPPRESS) stays hidden, aliases included
                continue
            if id(sub) in names:
                names[id(sub)].append(name)
                continue
            names[id(sub)] = []
            subs.append((name, sub, helps.get(name)))
    yield Command(prog, path, parser, help)
    for name, sub, sub_help in subs:
        for i, command in enumerate(walk(sub, [*path, name], sub_help, prog)):
            if i == 0:
                command.aliases = names[id(sub)]
            yield command


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a command documents: not ``-h``, not hidden ones, not its subcommand selector."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
    ]


def exit_codes() -> list[tuple[int, str, str]]:
    """(code, constant, meaning) for every ``EXIT_*`` int of the imported CLI modules, by code."""
    found: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "fieldcrypt.cli" or name.startswith("fieldcrypt.cli.")):
            continue
        for attr, value in vars(module).items():
            if attr.startswith("EXIT_") and isinstance(value, int) and not isinstance(value, bool):
                found.setdefault(attr, value)
    return sorted((code, name, EXIT_MEANINGS.get(name, name)) for name, code in found.items())


# --- rendering -------------------------------------------------------------------------------------------------

_SPECIAL = re.compile(r"([\\`*_\[\]{}|#])")


def text(value: str) -> str:
    """Plain text (argparse help) as Markdown that shows it as written: inline markup characters escaped, HTML
    special characters as entities, line breaks as spaces."""
    value = " ".join(value.split())
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", value)


def code(value: str) -> str:
    """An inline code span for a table cell (a pipe would end the cell even inside backticks)."""
    value = value.replace("|", "\\|")
    fence = "``" if "`" in value else "`"
    return f"{fence} {value} {fence}" if fence == "``" else f"`{value}`"


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    formatter: argparse.HelpFormatter = parser.formatter_class(prog=parser.prog, width=WIDTH)
    return formatter


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    if "%" not in action.help:
        return action.help
    try:
        return _formatter(parser)._expand_help(action)
    except (KeyError, TypeError, ValueError):  # what argparse's --help would fail on too; show the text as written
        return action.help


def _value(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if not action.option_strings:  # a positional: its name is the first column
        return "" if action.nargs in (None, 1) else code(_formatter(parser)._format_args(action, action.dest))
    default_metavar = action.dest.upper()
    if action.choices is not None and action.metavar is None:
        return ""  # the choices column lists them
    return code(_formatter(parser)._format_args(action, default_metavar))


def _default(action: argparse.Action) -> str:
    if action.required or (not action.option_strings and action.nargs not in ("?", "*")):
        return "**required**"
    value = action.default
    if value is None or value is argparse.SUPPRESS or value is False or value == []:
        return ""
    if value == "":
        return code('""')
    if isinstance(value, (list, tuple)):
        return ", ".join(code(str(v)) for v in value)
    return code(str(value))


def _flags(action: argparse.Action) -> str:
    if action.option_strings:
        return ", ".join(code(s) for s in action.option_strings)
    return code(action.metavar if isinstance(action.metavar, str) else action.dest)


def _choices(action: argparse.Action) -> str:
    if action.choices is None:
        return ""
    return ", ".join(code(str(c)) for c in action.choices)


def _notes(action: argparse.Action) -> str:
    notes = []
    if isinstance(action, (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction)):
        notes.append("repeatable")
    return f" ({', '.join(notes)})" if notes else ""


def argument_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [
        "| argument | value | default | choices | help |",
        "|---|---|---|---|---|",
    ]
    for action in arguments(parser):
        rows.append(
            f"| {_flags(action)} | {_value(parser, action)}{_notes(action)} | {_default(action)} | "
            f"{_choices(action)} | {text(_help(parser, action))} |"
        )
    return rows if len(rows) > 2 else []


def _raw(parser: argparse.ArgumentParser) -> bool:
    return issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)


def _prose(parser: argparse.ArgumentParser, value: str) -> list[str]:
    if _raw(parser):
        return ["```text", value.strip("\n"), "```", ""]
    return [text(value), ""]


def render_command(command: Command, children: list[Command]) -> list[str]:
    parser = command.parser
    out: list[str] = []
    if command.path:
        level = min(1 + len(command.path), 6)
        out += [f"{'#' * level} {command.name} {{ #{command.anchor} }}", ""]
        if command.aliases:
            out += ["Also spelled " + ", ".join(code(a) for a in command.aliases) + ".", ""]
    if command.help:
        sentence = text(command.help)
        out += [sentence[:1].upper() + sentence[1:] + ("" if sentence[-1] in ".!?" else "."), ""]
    if parser.description and parser.description != command.help:
        out += _prose(parser, parser.description)
    out += ["```text", usage(parser), "```", ""]
    if children:
        out += ["| command | what it does |", "|---|---|"]
        out += [f"| [{code(c.name)}](#{c.anchor}) | {text(c.help or '')} |" for c in children]
        out.append("")
    table = argument_table(parser)
    if table:
        out += [*table, ""]
    for group in parser._mutually_exclusive_groups:
        flags = [a.option_strings[0] if a.option_strings else a.dest for a in group._group_actions]
        kind = "exactly one" if group.required else "at most one"
        out += [f"Give {kind} of {', '.join(code(f) for f in flags)}.", ""]
    if parser.epilog:
        out += _prose(parser, parser.epilog)
    return out


def render(parser: argparse.ArgumentParser) -> str:
    commands = list(walk(parser))
    out = [
        "# CLI reference",
        "",
        "<!-- generated at build time by tools/mkdocs_hooks.py from fieldcrypt.cli's argparse parser: "
        "do not edit; change the parser -->",
        "",
        f"Every `{parser.prog}` command, as its parser defines it (this page is generated from the parser when the "
        "site is built). Every command also takes `-h` / `--help`. Output is a table, or JSON with `--json`, "
        "where the command has it; the conventions are in [Key lifecycle](key-lifecycle.md).",
        "",
    ]
    for command in commands:
        depth = len(command.path)
        children = [c for c in commands if len(c.path) == depth + 1 and c.path[:depth] == command.path]
        out += render_command(command, children)
    codes = exit_codes()
    if codes:
        out += ["## Exit codes { #exit-codes }", "", "| code | constant | meaning |", "|---:|---|---|"]
        out += [f"| {n} | {code(name)} | {meaning} |" for n, name, meaning in codes]
        out.append("")
    return "\n".join(out)


# --- MkDocs ------------------------------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    if files.get_file_from_path(CLI_PAGE) is not None:
        raise PluginError(f"{CLI_PAGE} is generated from the CLI's parser: remove docs/{CLI_PAGE}")
    try:
        content = render(load_parser())
    except Exception as exc:
        raise PluginError(f"cannot generate the CLI reference ({CLI_PAGE}): {type(exc).__name__}: {exc}") from exc
    files.append(File.generated(config, CLI_PAGE, content=content))
    return files


if __name__ == "__main__":
    print(render(load_parser()))
