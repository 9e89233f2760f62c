"""The documentation, run as a test: every shell and Python block of README.md and docs/ runs, page by page, top
to bottom, as a newcomer would type it, or carries a ``not-run`` mark with its reason (and is still checked
statically: its ``fieldcrypt`` command lines are parsed by the real CLI parser, its Python compiles and its
``fieldcrypt`` imports resolve).

How a page runs (tests/test_docs_run.py):

- in a fresh directory holding links to the repository's ``schemas/``, ``examples/``, ``bench/``, ``docs/``,
  ``src/``, ``tests/``, ``pyproject.toml`` and ``mkdocs.yml``, and ``.venv`` linked to the test environment, with
  ``HOME`` there and no ``FIELDCRYPT_*`` variable set;
- ``bash`` blocks line by line in bash (``set -eo pipefail``; the environment and the working directory carry from
  one line and one block to the next, as in one terminal); ``console`` blocks run each ``$ `` command, and a
  ``$ echo $?`` after a command states the exit status it must have; every output line shown must be printed
  (whitespace aside), except lines holding what differs between runs (key ids, temporary paths, ports, times,
  ciphertexts) and lines elided with ``...``;
- other blocks are checked for what they name: YAML (``fieldcrypt`` commands, the pre-commit hook's args), TOML (a
  configuration file, read by the CLI's own loader); a block spelt ``sh``, ``py``... or an unlabelled one holding
  ``fieldcrypt`` commands fails (it would run nowhere);
- ``python`` blocks in one interpreter per page, sharing their globals, as in one script;
- installation lines (``python3 -m venv .venv``, ``pip install SPEC``) are checked, not run: every extra they name
  exists, and the test environment has what the line would install (``tools/fresh_clone.py`` runs them for real);
- long-running commands (``fieldcrypt dev up``, ``mkdocs serve``, ``end_to_end.py --keep``) start in the
  background, as in a second terminal; the page waits until they are ready and stops them (Ctrl-C) at its end;
- the names of a real deployment map to the page's own: ``/etc/``, ``/var/lib/``, ``/mnt/`` to directories of the
  page (which exist, empty, as on a fresh machine: a guide must create its own subdirectories),
  ``kafka.internal:9092`` and ``http(s)://registry.internal[:8081]`` to the broker and registry of the page's
  ``fieldcrypt dev up``, ``postgresql://fieldcrypt@db.internal/keys`` to a fresh PostgreSQL database owned by a
  login role ``fieldcrypt``.

Marks are HTML comments right before a block (invisible on the site):

``<!-- docs: not-run REASON -->``      the block is not run here (a cloud account, minutes of benchmark), only checked
``<!-- docs: file PATH -->``           the block's text is written to PATH (a config file a later command reads)
``<!-- docs: capture NAME REGEX -->``  after the block, NAME stands for REGEX's first group in its output
``<!-- docs: exit N -->``              the block's last command exits N
``<!-- docs: tty ANSWER -->``          each command runs on a terminal, ANSWER typed at its prompt
``<!-- docs: raises NAME -->``         the Python block raises the exception NAME (a bug the page shows)
``<!-- docs: python-setup`` ... ``-->`` hidden Python run before the next block (context a reference page assumes)

An unknown mark, or a ``bash``/``console``/``python`` block run nowhere and marked nowhere, fails the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import types
import urllib.request
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = {"bash", "console", "python"}
#: spellings of a runnable language the harness would not run: a block in one of them fails the suite
MISSPELT = {
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "shell-session": "console",
    "py": "python",
    "python3": "python",
    "pycon": "python",
    "ipython": "python",
}
DIRECTIVES = {"not-run", "file", "capture", "exit", "tty", "raises", "python-setup"}
LINKED = ("schemas", "examples", "bench", "docs", "src", "tests", "tools", "pyproject.toml", "mkdocs.yml")
COMMAND_TIMEOUT = 300.0
READY_TIMEOUT = 120.0


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


# --- reading a page ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    kind: str
    arg: str


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str
    directives: tuple[Directive, ...] = ()

    @property
    def where(self) -> str:
        return f"{rel(self.page)}:{self.line}"

    def directive(self, kind: str) -> str | None:
        found = [d.arg for d in self.directives if d.kind == kind]
        return found[-1] if found else None

    def all(self, kind: str) -> list[str]:
        return [d.arg for d in self.directives if d.kind == kind]


class DocsError(AssertionError):
    pass


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"^\s*<!--\s*docs:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*(?P<end>-->)?\s*$")


def read_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page with the marks right before it (blank lines between are allowed)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[Directive] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        mark = _MARK.match(line)
        if mark:
            kind, arg = mark["kind"], mark["arg"]
            where = f"{rel(page)}:{i + 1}"
            if kind not in DIRECTIVES:
                raise DocsError(f"{where}: unknown docs mark {kind!r} (known: {', '.join(sorted(DIRECTIVES))})")
            if mark["end"] is None:  # a multi-line mark: its body runs to the closing -->
                body = [arg] if arg else []
                i += 1
                while i < len(lines) and lines[i].strip() != "-->":
                    body.append(lines[i])
                    i += 1
                if i == len(lines):
                    raise DocsError(f"{where}: docs mark {kind!r} is never closed with -->")
                arg = textwrap.dedent("\n".join(body))
            elif kind == "python-setup":
                raise DocsError(f"{where}: python-setup takes its code on the lines below, closed by -->")
            if kind in DIRECTIVES - {"python-setup"} and not arg.strip():
                raise DocsError(f"{where}: docs mark {kind!r} needs an argument (not-run: the reason)")
            pending.append(Directive(kind, arg))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, marker = fence["indent"], fence["fence"]
            lang = fence["info"].strip().split(" ")[0] if fence["info"].strip() else ""
            start = i + 1
            body = []
            i += 1
            while i < len(lines) and not (lines[i].startswith(indent) and lines[i][len(indent) :].rstrip() == marker):
                body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            blocks.append(Block(page, start, lang, "\n".join(body) + "\n", tuple(pending)))
            pending = []
            i += 1
            continue
        if line.strip() and pending:
            raise DocsError(f"{rel(page)}:{i + 1}: a docs mark must come right before a block")
        i += 1
    if pending:
        raise DocsError(f"{rel(page)}: a docs mark at the end of the page marks no block")
    return blocks


# --- shell text -------------------------------------------------------------------------------------------------


def logical_lines(script: str) -> list[str]:
    """A bash block as the commands a user types: continuation lines joined, heredoc bodies kept with their
    command, comments and blank lines dropped."""
    out: list[str] = []
    lines = script.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            end = heredoc.group(1)
            body = [line]
            while i + 1 < len(lines):
                i += 1
                body.append(lines[i])
                if lines[i].strip() == end:
                    break
            line = "\n".join(body)
        out.append(line)
        i += 1
    return out


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one logical line (split on && || ; |), as words; comments and redirections
    dropped. Used for static checks, never to run anything."""
    line = line.split("\n")[0]  # a heredoc's body is data
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError as exc:
        raise DocsError(f"cannot read shell line {line!r}: {exc}") from exc
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if set(token) <= set(";&|()"):
            commands.append([])
        elif set(token) <= set("<>"):
            skip_next = True  # the redirection's target
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


# --- static checks ----------------------------------------------------------------------------------------------


def cli_parser() -> argparse.ArgumentParser:
    from fieldcrypt.cli import build_parser

    return build_parser()


class _ParseError(Exception):
    pass


def check_fieldcrypt_args(words: list[str], where: str) -> None:
    """``fieldcrypt ARGS`` parses with the real parser (nothing runs): a renamed flag or command fails here."""
    parser = cli_parser()

    def fail(message: str) -> None:
        raise _ParseError(message)

    def patch(p: argparse.ArgumentParser) -> None:
        p.error = fail  # type: ignore[method-assign,assignment]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    patch(sub)

    patch(parser)
    args = [re.sub(r"\$\{?(\w+)\}?", "placeholder", w) for w in words[1:]]
    if "--help" in args or "-h" in args:
        return
    try:
        with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
            parser.parse_args(args)
    except _ParseError as exc:
        raise DocsError(f"{where}: `fieldcrypt {' '.join(words[1:])}` does not parse: {exc}") from None
    except SystemExit as exc:
        raise DocsError(f"{where}: `fieldcrypt {' '.join(words[1:])}` does not parse (exit {exc.code})") from None


_PIP = re.compile(r"^(?:\S*/)?pip3?$")


def install_spec_ok(spec: str, where: str) -> None:
    """A ``pip install`` argument names extras that exist, and the test environment has what it installs."""
    m = re.fullmatch(r"(?P<name>\.|[A-Za-z0-9_.-]+)(?:\[(?P<extras>[^\]]*)\])?(?P<version>[<>=!~].*)?", spec)
    if not m:
        raise DocsError(f"{where}: cannot read the pip requirement {spec!r}")
    name = "fieldcrypt" if m["name"] == "." else m["name"]
    extras = [e.strip() for e in (m["extras"] or "").split(",") if e.strip()]
    if name == "fieldcrypt":
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for extra in extras:
            if extra not in declared:
                raise DocsError(f"{where}: fieldcrypt has no extra {extra!r} (extras: {', '.join(declared)})")
            for requirement in declared[extra]:
                req_name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]
                if req_name != "fieldcrypt":
                    _installed(req_name, where)
        return
    dist = _installed(name, where) if name != "tink" or not extras else metadata.distribution("tink")
    provided = set(dist.metadata.get_all("Provides-Extra") or [])
    for extra in extras:
        if extra not in provided:
            raise DocsError(f"{where}: {name} has no extra {extra!r} (it has: {', '.join(sorted(provided))})")


def _installed(name: str, where: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise DocsError(f"{where}: the docs install {name!r}, which the test environment lacks") from None


def is_install(words: list[str]) -> bool:
    if words[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]):
        return True
    return bool(words) and bool(_PIP.match(words[0])) and len(words) > 1 and words[1] == "install"


def check_install(words: list[str], where: str) -> None:
    if words[1:3] == ["-m", "venv"]:
        if words[3:] != [".venv"]:
            raise DocsError(f"{where}: the docs make the virtual environment .venv, not {words[3:]}")
        return
    for word in words[2:]:
        if word in ("-q", "-e", "-U", "--upgrade"):
            continue
        if word.startswith("-"):
            raise DocsError(f"{where}: pip option {word} is not known to the docs harness")
        install_spec_ok(word, where)


def check_line(words: list[str], where: str) -> None:
    """Static checks of one simple command, whether it runs or not."""
    prog = words[0]
    if prog.endswith("fieldcrypt") and "/" not in prog.replace(".venv/bin/", ""):
        check_fieldcrypt_args(words, where)
    elif is_install(words):
        check_install(words, where)
    elif re.fullmatch(r"(?:\S*/)?python3?", prog) and len(words) > 1 and words[1].endswith(".py"):
        if not (ROOT / words[1]).is_file():
            raise DocsError(f"{where}: {words[1]} does not exist in the repository")


def check_python(code: str, where: str) -> None:
    try:
        tree = compile(code, where, "exec", flags=0x400, dont_inherit=True)  # PyCF_ONLY_AST
    except SyntaxError as exc:
        raise DocsError(f"{where}: the Python block does not compile: {exc}") from None
    import ast
    import importlib

    assert isinstance(tree, ast.Module)
    bound: dict[str, Any] = {}  # names the block binds to fieldcrypt objects
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fieldcrypt":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    raise DocsError(f"{where}: {node.module} has no {alias.name}")
                bound[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fieldcrypt":
                    importlib.import_module(alias.name)
                    bound[(alias.asname or alias.name).split(".")[0]] = importlib.import_module("fieldcrypt")

    def resolve(expr: ast.expr) -> Any:
        if isinstance(expr, ast.Name):
            return bound.get(expr.id)
        if isinstance(expr, ast.Attribute):
            owner = resolve(expr.value)
            if owner is None or not isinstance(owner, types.ModuleType):
                return None
            if not hasattr(owner, expr.attr):
                raise DocsError(f"{where}: {owner.__name__} has no {expr.attr}")
            return getattr(owner, expr.attr)
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            resolve(node)
        if isinstance(node, ast.Call) and not any(isinstance(a, ast.Starred) for a in node.args):
            target = resolve(node.func)
            if target is None or any(k.arg is None for k in node.keywords):
                continue
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                continue
            try:
                signature.bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords if k.arg})
            except TypeError as exc:
                name = getattr(target, "__qualname__", str(target))
                raise DocsError(
                    f"{where}: {name}(...) as the page calls it does not fit its signature: {exc}"
                ) from None


def check_block(block: Block) -> None:
    if block.lang.lower() in MISSPELT or (block.lang != block.lang.lower() and block.lang.lower() in RUNNABLE):
        raise DocsError(
            f"{block.where}: a ```{block.lang} block is neither run nor checked: write ```"
            f"{MISSPELT.get(block.lang.lower(), block.lang.lower())}"
        )
    if block.lang in ("", "text") and re.search(r"^(\$ )?fieldcrypt \S", block.text, re.M):
        raise DocsError(f"{block.where}: a block of fieldcrypt commands must be ```bash or ```console, to be run")
    if block.lang == "yaml":
        check_yaml(block)
    elif block.lang == "toml":
        check_toml(block)
    if block.lang == "python":
        if "--8<--" in block.text:  # a snippet the site includes from a file that runs elsewhere
            for path in re.findall(r'--8<--\s*"([^":]+)', block.text):
                if not (ROOT / path).is_file():
                    raise DocsError(f"{block.where}: included file {path} does not exist")
            return
        check_python(block.text, block.where)
    elif block.lang == "bash":
        for line in logical_lines(block.text):
            for words in simple_commands(line):
                check_line(words, block.where)
    elif block.lang == "console":
        for command, _ in console_commands(block.text):
            for words in simple_commands(command):
                check_line(words, block.where)


def check_yaml(block: Block) -> None:
    """A YAML block (a CI job, a pre-commit config): each ``fieldcrypt ...`` command line in it, and the args of
    the ``fieldcrypt-schema-lint`` hook, name real commands and options."""
    lines = block.text.splitlines()
    for n, line in enumerate(lines):
        m = re.search(r"(?:^|run: |- |\| )\s*(fieldcrypt [^#]*)", line)
        if m:
            command = m.group(1).rstrip(" \\")
            if line.rstrip().endswith("\\") and n + 1 < len(lines):
                command += " " + lines[n + 1].strip().rstrip(" \\")
            check_inline(command.replace("'", " ").replace('"', " "), block.where)
    hook_args = re.search(r"id: fieldcrypt-schema-lint\b.*?args: \[([^\]]*)\]", block.text, re.S)
    if hook_args:
        flags = [a.strip() for a in hook_args.group(1).split(",")]
        check_inline("fieldcrypt schema lint " + " ".join(flags), block.where)


def check_toml(block: Block) -> None:
    """A TOML block is a fieldcrypt configuration file: the CLI's own loader reads it (unknown keys, bad values)."""
    import tempfile

    from fieldcrypt.cli._config import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(block.text, encoding="utf-8")
        try:
            load(path, required=True)
        except Exception as exc:
            raise DocsError(f"{block.where}: the configuration file does not load: {exc}") from None


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines (with continuation lines) and the output lines shown after each."""
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i].strip()
            out.append((command, []))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            raise DocsError(f"console block starts with output, not a `$ ` command: {line!r}")
        i += 1
    return out


#: what differs from run to run in a command's output: such lines of a console block are illustrative
_VOLATILE = re.compile(
    r"0x[0-9a-f]{8}|/tmp/|127\.0\.0\.1:\d|\d{4}-\d\d-\d\dT|\bAg[A-Za-z0-9+/]{6}|…|^\s*\.\.\.\s*$|pid \d"
)


def shown_lines(expected: list[str]) -> list[str]:
    """The lines of a console block's shown output that every run prints as shown (the rest vary: key ids, temporary
    paths, ports, times, ciphertexts, and lines elided with ...)."""
    return [line for line in expected if line.strip() and not _VOLATILE.search(line)]


# --- running a page ---------------------------------------------------------------------------------------------


@dataclass
class Background:
    command: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class PageRun:
    """One page, run top to bottom in its own directory, as one user in one terminal (plus background ones)."""

    page: Path
    tmp: Path
    pg_admin_url: str | None = None
    #: run in the checkout itself with its own .venv, installation lines run for real (tools/fresh_clone.py)
    fresh: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = field(init=False)
    subs: dict[str, str] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)
    python: subprocess.Popen[str] | None = None
    pg_database: str | None = None
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fresh:
            self.cwd = ROOT
            bin_dir = str(ROOT / ".venv" / "bin")
        else:
            self.cwd = self.tmp / "work"
            self.cwd.mkdir()
            for name in LINKED:
                (self.cwd / name).symlink_to(ROOT / name)
            (self.cwd / ".venv").symlink_to(Path(sys.prefix))
            bin_dir = str(Path(sys.executable).parent)
        home = self.tmp / "home"
        home.mkdir()
        root = self.tmp / "root"
        for d in ("etc", "var/lib", "mnt"):
            (root / d).mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDCRYPT_", "VIRTUAL_ENV", "PYTEST"))}
        env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS="120")
        env.pop("PYTHONPATH", None)
        self.env = env
        self.subs = {
            "/etc/": f"{root}/etc/",
            "/var/lib/": f"{root}/var/lib/",
            "/mnt/": f"{root}/mnt/",
        }

    # -- substitution: a deployment's names to this page's --

    def substitute(self, text: str) -> str:
        bootstrap = self.env.get("FIELDCRYPT_BOOTSTRAP_SERVERS")
        registry = self.env.get("FIELDCRYPT_SCHEMA_REGISTRY")
        if bootstrap:
            text = text.replace("kafka.internal:9092", bootstrap)
        if registry:
            text = re.sub(r"https?://registry\.internal(?::8081)?", registry, text)
        if "@db.internal/keys" in text and self.pg_admin_url is not None:  # else: fails where it is really used
            text = text.replace("fieldcrypt@db.internal/keys", self._pg())
        for name, value in self.subs.items():
            if name.startswith("/"):
                text = re.sub(rf"(?<![\w.~-]){re.escape(name)}", value, text)
            else:
                text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(name)}(?![0-9A-Za-z])", value, text)
        return text

    def _pg(self) -> str:
        assert self.pg_admin_url is not None
        if self.pg_database is None:
            import psycopg

            self.pg_database = f"fc_docs_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'fieldcrypt'").fetchone()
                if not exists:
                    with contextlib.suppress(psycopg.errors.DuplicateObject):
                        conn.execute("CREATE ROLE fieldcrypt LOGIN")
                conn.execute(f"CREATE DATABASE {self.pg_database} OWNER fieldcrypt")
        return f"fieldcrypt@127.0.0.1:5432/{self.pg_database}"

    # -- running --

    def run(self, blocks: list[Block]) -> None:
        try:
            for block in blocks:
                self.run_block(block)
        finally:
            self.close()

    def run_block(self, block: Block) -> None:
        if not self.fresh:  # a fresh checkout has no fieldcrypt to check with before its guide installs it
            check_block(block)
        if block.directive("not-run") is not None or "--8<--" in block.text:  # an included file runs on its own
            return
        for setup in block.all("python-setup"):
            self.run_python(setup, block.where + " (python-setup)")
        target = block.directive("file")
        if target is not None:
            path = Path(self.substitute(target))
            path = path if path.is_absolute() else self.cwd / path
            path.write_text(self.substitute(block.text), encoding="utf-8")
            self.transcript.append(f"# {block.where}: wrote {target}")
            if block.lang not in RUNNABLE or block.lang == "python":
                return
        if block.lang not in RUNNABLE:
            return
        if block.lang == "python":
            output = self.run_python(block.text, block.where, block.directive("raises"))
        elif block.lang == "bash":
            output = self.run_bash(block)
        else:
            output = self.run_console(block)
        self.capture(block, output, required=True)

    def capture(self, block: Block, output: str, *, required: bool) -> None:
        """``capture NAME REGEX`` marks: NAME stands for the first group of REGEX in the block's output from now on."""
        for capture in block.all("capture"):
            name, _, regex = capture.partition(" ")
            m = re.search(regex.strip(), output, re.M)
            if m:
                self.subs[name] = m.group(1)
            elif required and name not in self.subs:
                raise DocsError(f"{block.where}: capture {name}: /{regex.strip()}/ matched nothing in:\n{output}")

    def run_bash(self, block: Block) -> str:
        lines = logical_lines(block.text)
        expected_exit = int(block.directive("exit") or 0)
        outputs = []
        for n, line in enumerate(lines):
            want = expected_exit if n == len(lines) - 1 else 0
            outputs.append(self.run_shell(line, block, want))
        return "".join(outputs)

    def run_console(self, block: Block) -> str:
        commands = console_commands(block.text)
        outputs = []
        n = 0
        while n < len(commands):
            command, expected = commands[n]
            want = 0
            if n + 1 < len(commands) and commands[n + 1][0].strip() == "echo $?":
                want = int(commands[n + 1][1][0].strip())
            elif block.directive("exit") is not None and n == len(commands) - 1:
                want = int(block.directive("exit") or 0)
            output = self.run_shell(command, block, want)
            self.capture(block, output, required=False)  # the rest of the block shows the captured names too
            printed = {" ".join(line.split()) for line in output.splitlines()}
            for line in shown_lines(expected):
                wanted = " ".join(self.substitute(line).split())
                if not any(wanted in p for p in printed):
                    raise DocsError(
                        f"{block.where}: `{command}` is shown printing {line.strip()!r}, which it does not print:"
                        f"\n{output}"
                    )
            outputs.append(output)
            n += 2 if n + 1 < len(commands) and commands[n + 1][0].strip() == "echo $?" else 1
        return "".join(outputs)

    def run_shell(self, line: str, block: Block, want: int) -> str:
        words_list = simple_commands(line)
        if not self.fresh and any(is_install(w) for w in words_list):
            line = self._drop_installs(line, block)
            if not line.strip():
                return ""
        line = self.substitute(line)
        self.transcript.append(f"$ {line}")
        if self._is_background(line):
            return self.start_background(line, block)
        state = self.tmp / "state"
        state.mkdir(exist_ok=True)
        script = (
            f"set -eo pipefail\ncd {shlex.quote(str(self.cwd))}\n{line}\n__fc=$?\n"
            f"env -0 > {shlex.quote(str(state / 'env'))}\npwd > {shlex.quote(str(state / 'cwd'))}\nexit $__fc\n"
        )
        (state / "env").unlink(missing_ok=True)
        tty = block.directive("tty")
        if tty is not None:
            code, output = run_on_tty(["bash", "-c", script], self.env, tty)
        else:
            proc = subprocess.run(
                ["bash", "-c", script],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            code, output = proc.returncode, proc.stdout + proc.stderr
        self.transcript.append(output)
        if code != want:
            raise DocsError(f"{block.where}: `{line}` exited {code}, the docs expect {want}:\n{output}")
        if (state / "env").exists():
            pairs = (state / "env").read_bytes().split(b"\0")
            self.env = dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
            self.cwd = Path((state / "cwd").read_text().strip())
        return output

    def _drop_installs(self, line: str, block: Block) -> str:
        parts = [p.strip() for p in line.split("&&")]
        kept = []
        for part in parts:
            cmds = simple_commands(part)
            if len(cmds) == 1 and is_install(cmds[0]):
                check_install(cmds[0], block.where)
                self.transcript.append(f"# checked, not run: {part}")
            else:
                kept.append(part)
        return " && ".join(kept)

    # -- background commands: a second terminal --

    _BACKGROUND = (
        re.compile(r"^(?:\S*/)?fieldcrypt dev (?:up|broker|registry)\b"),
        re.compile(r"^(?:\S*/)?mkdocs serve\b"),
        re.compile(r"^(?:\S*/)?python3? examples/end_to_end\.py\b.*--keep\b"),
    )

    def _is_background(self, line: str) -> bool:
        last = line.split("&&")[-1].strip()
        return any(p.match(last) for p in self._BACKGROUND)

    def start_background(self, line: str, block: Block) -> str:
        """Start ``line``'s last command as a second terminal would, and wait until it is ready: its output so far."""
        *before, last = [p.strip() for p in line.split("&&")]
        if before:
            self.run_shell(" && ".join(before), block, 0)
        last = self.substitute(last)
        log = self.tmp / f"background-{len(self.background)}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            ["bash", "-c", f"cd {shlex.quote(str(self.cwd))} && exec {last}"],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.background.append(Background(last, proc, log))
        words = shlex.split(last)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DocsError(f"{block.where}: `{last}` exited {proc.returncode}:\n{log.read_text()}")
            text = log.read_text(errors="replace")
            if "--env-file" in words:
                env_file = self.cwd / words[words.index("--env-file") + 1]
                if env_file.exists():
                    time.sleep(0.2)  # the banner is printed with the file
                    return log.read_text(errors="replace")
            elif "mkdocs" in words[0] and "Serving on" in text:
                with urllib.request.urlopen("http://127.0.0.1:8000/", timeout=10) as page:
                    assert page.status == 200
                return text
            elif "end_to_end.py" in last and re.search(r"^OK$", text, re.M):
                return text
            elif "fieldcrypt" in words[0] and "export FIELDCRYPT_" in text:
                return text
            time.sleep(0.2)
        raise DocsError(f"{block.where}: `{last}` was not ready in {READY_TIMEOUT:.0f} s:\n{log.read_text()}")

    def stop_background(self) -> list[str]:
        problems = []
        for bg in reversed(self.background):
            if bg.proc.poll() is None:
                os.killpg(bg.proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
                try:
                    bg.proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(bg.proc.pid, signal.SIGKILL)
                    bg.proc.wait()
                    problems.append(f"`{bg.command}` did not stop on Ctrl-C")
                    continue
                if bg.proc.returncode not in (0, -signal.SIGINT, 130) or (
                    "fieldcrypt" in bg.command and bg.proc.returncode != 0
                ):
                    problems.append(f"`{bg.command}` exited {bg.proc.returncode} on Ctrl-C:\n{bg.log.read_text()}")
            else:
                problems.append(f"`{bg.command}` had stopped before the page ended:\n{bg.log.read_text()}")
        self.background.clear()
        return problems

    # -- Python: one interpreter per page --

    def run_python(self, code: str, where: str, raises: str | None = None) -> str:
        if self.python is None:
            python = str(ROOT / ".venv" / "bin" / "python") if self.fresh else sys.executable
            self.python = subprocess.Popen(
                [python, "-c", _PY_RUNNER],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(self.tmp / "python.stderr").open("w"),
                text=True,
                cwd=self.cwd,
            )
        assert self.python.stdin is not None and self.python.stdout is not None
        code = self.substitute(code)
        self.transcript.append(f">>> ({where})\n{code}")
        self.python.stdin.write(json.dumps({"code": code, "env": self.env, "cwd": str(self.cwd), "where": where}))
        self.python.stdin.write("\n")
        self.python.stdin.flush()
        ready, _, _ = select.select([self.python.stdout], [], [], COMMAND_TIMEOUT)
        if not ready:
            raise DocsError(f"{where}: the Python block did not finish in {COMMAND_TIMEOUT:.0f} s")
        reply_line = self.python.stdout.readline()
        if not reply_line:
            raise DocsError(f"{where}: the Python interpreter died:\n{(self.tmp / 'python.stderr').read_text()}")
        reply = json.loads(reply_line)
        self.transcript.append(reply["out"])
        if raises is not None:
            if not reply["error"] or not re.search(rf"^{re.escape(raises)}\b", reply["error"].splitlines()[-1]):
                raise DocsError(f"{where}: the page shows this block raising {raises}; it did not:\n{reply['error']}")
        elif reply["error"]:
            raise DocsError(f"{where}: the Python block failed:\n{reply['error']}\noutput:\n{reply['out']}")
        return str(reply["out"])

    def close(self) -> None:
        problems = self.stop_background()
        if self.python is not None:
            if self.python.stdin:
                self.python.stdin.close()
            try:
                self.python.wait(60)
            except subprocess.TimeoutExpired:
                self.python.kill()
                problems.append("the page's Python interpreter did not exit (a thread or client left open?)")
        if self.pg_database and self.pg_admin_url:
            import psycopg

            with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.pg_database} WITH (FORCE)")
        if problems:
            raise DocsError("\n".join(problems))


_PY_RUNNER = r"""
import contextlib, io, json, os, sys, traceback
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    msg = json.loads(line)
    os.environ.clear(); os.environ.update(msg["env"]); os.chdir(msg["cwd"])
    out = io.StringIO(); error = None
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(msg["code"], msg["where"], "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    sys.__stdout__.write(json.dumps({"out": out.getvalue(), "error": error}) + "\n"); sys.__stdout__.flush()
"""


def run_on_tty(argv: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """Run on a pseudo-terminal, typing ``answer`` once the command has asked (a line ending in ':' or '?')."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the command on the terminal
        os.execvpe(argv[0], argv, env)
    chunks: list[bytes] = []
    answered = False
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace")
        if not answered and re.search(r"[:?]\s*$", text):
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return os.waitstatus_to_exitcode(status), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours and cursor moves


# --- commands in prose ------------------------------------------------------------------------------------------

_INLINE = re.compile(r"`(fieldcrypt [^`]+)`")


def inline_commands(page: Path) -> list[tuple[int, str]]:
    """``fieldcrypt ...`` written in inline code in a page's prose (not in fenced blocks), with line numbers."""
    found = []
    fenced = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            found += [(number, m.group(1)) for m in _INLINE.finditer(line)]
    return found


def check_inline(command: str, where: str) -> None:
    """A command named in prose (``fieldcrypt keys shred --data-subject ID``, with placeholders and ``[...]``)
    names a real command, and each ``--flag`` it shows is one of that command's options."""
    parser = cli_parser()
    words = command.replace("[", " ").replace("]", " ").replace("|", " ").split()[1:]
    path: list[str] = []
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0].startswith("-"):
            break
        if words[0] not in subs[0].choices:
            if path or not words[0].isidentifier():
                break  # a positional argument or a placeholder
            raise DocsError(f"{where}: `{command}`: fieldcrypt has no command {words[0]!r}")
        parser = subs[0].choices[words.pop(0)]
        path.append(parser.prog)
    options = {o for a in parser._actions for o in a.option_strings}
    for word in words:
        flag = word.split("=", 1)[0].rstrip(",.;:)")
        if flag.startswith("--") and len(flag) > 2 and flag not in options:
            raise DocsError(f"{where}: `{command}`: {parser.prog} has no option {flag}")
