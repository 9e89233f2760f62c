"""Every page of README.md and docs/ runs as written (tests/docs_harness.py says how), and the harness itself
catches what it exists to catch: a renamed flag, a missing mark, an unknown mark."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_harness import (
    ROOT,
    Block,
    Directive,
    DocsError,
    PageRun,
    check_block,
    check_fieldcrypt_args,
    console_commands,
    logical_lines,
    pages,
    read_blocks,
    shown_lines,
    simple_commands,
)

PAGES = pages()


def _pg_admin() -> str | None:
    from pg import PG_BASE, require_pg

    try:
        require_pg()
    except pytest.skip.Exception:
        return None
    return PG_BASE


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.broker
@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.lang in {"bash", "console", "python"} for b in read_blocks(p))], ids=_ids
)
def test_page_runs(page: Path, tmp_path: Path) -> None:
    blocks = read_blocks(page)
    run = PageRun(page, tmp_path, _pg_admin())
    try:
        run.run(blocks)
    except DocsError as exc:
        transcript = "\n".join(run.transcript[-40:])
        raise DocsError(f"{exc}\n\n--- the page's last steps ---\n{transcript}") from None


def test_every_page_reads() -> None:
    """Marks are well formed, every mark marks a block, and every not-run mark gives a reason."""
    for page in PAGES:
        for block in read_blocks(page):
            reason = block.directive("not-run")
            if reason is not None:
                assert len(reason.split()) >= 3, f"{block.where}: say why the block is not run here"


def test_every_block_is_checked_without_running_it() -> None:
    """Without a broker too: every block's fieldcrypt command lines parse with the real CLI parser, its Python
    compiles and names real fieldcrypt objects with fitting arguments, YAML names real options, TOML loads as a
    configuration file; a block that cannot run here (not-run) is checked the same way."""
    not_run = 0
    for page in PAGES:
        for block in read_blocks(page):
            check_block(block)
            not_run += block.directive("not-run") is not None
    assert not_run  # there are such blocks (cloud KMS, benchmarks)


def test_the_static_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    def block(lang: str, text: str) -> Block:
        return Block(ROOT / "README.md", 1, lang, text, (Directive("not-run", "a cloud account needed"),))

    check_block(
        block("python", "from fieldcrypt import Keyring\nKeyring('sqlite:///k.db', 'local-kek:///k', cache_ttl=300)\n")
    )
    for lang, text, message in [
        ("python", "from fieldcrypt import Keyring\nKeyring('s', 'k', cache_ttl_seconds=300)\n", "signature"),
        ("python", "import fieldcrypt\nfieldcrypt.KekFromUri('x')\n", "has no KekFromUri"),
        ("sh", "fieldcrypt keys list\n", "neither run nor checked"),
        ("Python", "import fieldcrypt\n", "neither run nor checked"),
        ("", "fieldcrypt keys frobnicate\n", "must be ```bash"),
        ("yaml", "- run: fieldcrypt schema lint schemas/*.avsc --since-rev main\n", "no option --since-rev"),
        (
            "yaml",
            "hooks:\n  - id: fieldcrypt-schema-lint\n    args: [--previous-rev, HEAD, --plaintext-tags, X]\n",
            "no option --plaintext-tags",
        ),
        ("toml", 'key_store = "sqlite:///keys.db"\n', "unknown setting"),
    ]:
        with pytest.raises(DocsError, match=message):
            check_block(block(lang, text))


def test_ci_runs_the_readme_test_command() -> None:
    """The README's test command is not run by the suite (it is the suite): CI runs exactly it."""
    (block,) = [b for b in read_blocks(ROOT / "README.md") if "-m pytest" in b.text]
    assert (block.directive("not-run") or "").startswith("this is the test suite itself")
    (command,) = logical_lines(block.text)
    assert command in (ROOT / ".ci" / "run").read_text()


def test_the_fresh_clone_timer_knows_its_pages() -> None:
    """tools/fresh_clone.py (the figures in docs/getting-started/index.md) names pages that exist and run here."""
    import subprocess
    import sys

    plan = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fresh_clone.py"), "--plan"], capture_output=True, text=True, timeout=60
    )
    assert plan.returncode == 0, plan.stderr
    for role in ("quick-start", "developers", "key-admins", "auditors"):
        assert f"{role}: clone, python3 -m venv .venv, then" in plan.stdout
    assert "docs/erasure-runbook.md" in plan.stdout


# --- the harness catches what it is for ----------------------------------------------------------------------


def test_a_renamed_flag_fails() -> None:
    check_fieldcrypt_args(["fieldcrypt", "keys", "shred", "--data-subject", "c1", "--reason", "r", "--yes"], "t")
    with pytest.raises(DocsError, match="does not parse"):
        check_fieldcrypt_args(["fieldcrypt", "keys", "shred", "--person", "c1", "--reason", "r", "--yes"], "t")
    with pytest.raises(DocsError, match="does not parse"):
        check_fieldcrypt_args(["fieldcrypt", "keys", "erase", "--data-subject", "c1"], "t")


def test_a_renamed_flag_in_a_not_run_block_fails() -> None:
    block = Block(ROOT / "README.md", 1, "bash", "fieldcrypt keys list --sort id\n", (Directive("not-run", "x y z"),))
    with pytest.raises(DocsError, match="--sort"):
        check_block(block)


def test_unknown_marks_and_stray_marks_fail(tmp_path: Path) -> None:
    for text, message in [
        ("<!-- docs: skip -->\n```bash\nls\n```\n", "unknown docs mark"),
        ("<!-- docs: not-run -->\n```bash\nls\n```\n", "needs an argument"),
        ("<!-- docs: exit 3 -->\nsome prose\n```bash\nls\n```\n", "right before a block"),
        ("text\n<!-- docs: exit 3 -->\n", "marks no block"),
    ]:
        page = tmp_path / "page.md"
        page.write_text(text)
        with pytest.raises(DocsError, match=message):
            read_blocks(page)


def test_shell_reading() -> None:
    script = "# a comment\nfieldcrypt verify --topic t \\\n  --json > out.json\ncat > f <<'EOF'\na=1\nEOF\n"
    lines = logical_lines(script)
    assert lines == ["fieldcrypt verify --topic t  --json > out.json", "cat > f <<'EOF'\na=1\nEOF"]
    assert simple_commands("a && b --x 'y z' | c; d > out # note") == [["a"], ["b", "--x", "y z"], ["c"], ["d"]]
    commands = console_commands("$ fieldcrypt keys list\nKEY_ID  DOMAIN  STATE\n0x1  d  active\n$ echo $?\n0\n")
    assert commands[0] == ("fieldcrypt keys list", ["KEY_ID  DOMAIN  STATE", "0x1  d  active"])
    assert shown_lines(commands[0][1]) == ["KEY_ID  DOMAIN  STATE", "0x1  d  active"]  # no volatile key id here
    assert shown_lines(["cust-1  0x83408078", "...", "/tmp/x", "OK"]) == ["OK"]
    with pytest.raises(DocsError):
        console_commands("output first\n$ ls\n")


def test_install_lines_name_real_extras() -> None:
    from docs_harness import check_install

    check_install(["pip", "install", "-q", "-e", ".[test]"], "t")
    with pytest.raises(DocsError, match="no extra 'brokers'"):
        check_install(["pip", "install", ".[brokers]"], "t")
    with pytest.raises(DocsError, match=r"environment \.venv, not"):
        check_install(["python3", "-m", "venv", "env"], "t")


def test_commands_in_prose_name_real_commands_and_flags() -> None:
    """`fieldcrypt ...` in a sentence is documentation too: its command and flags exist."""
    from docs_harness import check_inline, inline_commands

    checked = 0
    for page in PAGES:
        for number, command in inline_commands(page):
            check_inline(command, f"{page.relative_to(ROOT)}:{number}")
            checked += 1
    assert checked > 20
    check_inline("fieldcrypt keys shred --data-subject ID [--dry-run]", "t")
    with pytest.raises(DocsError, match="has no option --person"):
        check_inline("fieldcrypt keys shred --person ID", "t")
    with pytest.raises(DocsError, match="no command 'erase'"):
        check_inline("fieldcrypt erase --data-subject ID", "t")
