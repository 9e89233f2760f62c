"""The documentation site: it builds with warnings as errors (broken links and anchors, missing snippets), its
generated CLI reference covers every command of the parser, the AWS KMS example it shows runs against a real KMS
HTTP API (moto's server), and the Vault limitation docs/kms/vault.md states still holds."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tink
from conftest import ROOT
from kms_fakes import moto_kms_server
from tink.integration import hcvault

import fieldcrypt
from fieldcrypt import KeyStoreUnavailableError, open_kek

#: a store URL in the builder's environment must not reach the published page (argparse defaults read it)
CANARY_STORE = "postgresql://docs-canary:not-a-password@db.invalid/keys"


def cli_parser() -> argparse.ArgumentParser:
    cli = importlib.import_module("fieldcrypt.cli")
    build = getattr(cli, "build_parser", None) or cli._parser
    parser: argparse.ArgumentParser = build()
    return parser


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command but hidden ones, as its words after ``fieldcrypt``, depth first (aliases once)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen |= {id(action.choices[a.dest]) for a in action._choices_actions if a.help == argparse.SUPPRESS}
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield (*path, name)
                    yield from command_paths(sub, (*path, name))


def parser_at(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for word in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[word]
    return parser


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "FIELDCRYPT_STORE": CANARY_STORE, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert not (ROOT / "docs" / "cli.md").exists(), "cli.md is generated at build time, not committed"

    # the architecture's diagram is a mermaid block, which Material renders as a diagram (not shown as code)
    architecture = (site / "architecture" / "index.html").read_text(encoding="utf-8")
    assert '<pre class="mermaid">' in architecture and "flowchart TD" in architecture
    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "docs-canary" not in page and "not-a-password" not in page
    parser = cli_parser()
    paths = list(command_paths(parser))
    assert ("keys", "shred") in paths and ("kek", "create") in paths and ("verify",) in paths
    # each command has its section, in walk order, holding its name, usage line and every argument
    starts = []
    for path in paths:
        anchor = f'id="{"-".join(path)}"'
        assert anchor in page, f"no section for fieldcrypt {' '.join(path)}"
        starts.append(page.index(anchor))
    assert starts == sorted(starts)
    ends = [*starts[1:], page.index('id="exit-codes"')]
    for path, start, end in zip(paths, starts, ends, strict=True):
        section = page[start:end]
        name = " ".join(("fieldcrypt", *path))
        assert name in section
        sub = parser_at(parser, path)
        for action in sub._actions:
            if (
                isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
                or action.help == argparse.SUPPRESS
            ):
                continue  # hidden options (an old spelling kept for scripts) are left out of the reference
            for flag in action.option_strings or [action.metavar if isinstance(action.metavar, str) else action.dest]:
                assert f"<code>{flag}</code>" in section, f"{name}: {flag} missing"
    codes = {
        attr: value
        for mod_name, mod in list(sys.modules.items())
        if mod_name == "fieldcrypt.cli" or mod_name.startswith("fieldcrypt.cli.")
        for attr, value in vars(mod).items()
        if attr.startswith("EXIT_") and isinstance(value, int)
    }
    assert {"EXIT_OK", "EXIT_USAGE", "EXIT_PENDING"} <= set(codes)
    exit_table = page[page.index('id="exit-codes"') :]
    for attr, value in codes.items():
        assert re.search(rf"<td[^>]*>{value}</td>\s*<td><code>{attr}</code></td>", exit_table), attr

    aws = (site / "kms" / "aws" / "index.html").read_text(encoding="utf-8")
    assert "kek_from_client" in aws and "--8&lt;--" not in aws  # the snippet was included, its markers dropped


# --- the AWS KMS example, against moto's KMS server -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_kms() -> Iterator[Any]:
    """moto's KMS server (tests/kms_fakes.py) for this module's tests."""
    with moto_kms_server() as client:
        yield client


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kms_aws_example", ROOT / "examples" / "kms_aws.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_aws_kms_example(moto_kms: Any, tmp_path: Path) -> None:
    example = load_example()
    old, new = (moto_kms.create_key(Description="docs test")["KeyMetadata"]["Arn"] for _ in range(2))
    result = example.run(old, new, tmp_path)

    assert result.read == example.RECORD and result.read_after_rewrap == example.RECORD
    email = example.RECORD["email"].encode()
    assert email not in result.data and example.RECORD["customerId"].encode() in result.data  # only the tag is hidden
    assert result.kek_uri == f"aws-kms://{old}" and result.kek_uris_in_store == {f"aws-kms://{new}"}
    # the stored data key is a KMS ciphertext: moto's Decrypt of it, under the new key, works; nothing else does
    with fieldcrypt.Keyring(f"sqlite:///{tmp_path / 'keys.db'}", example.kek_from_client(moto_kms, new)) as kr:
        (record,) = kr.keys()
        assert record.kek_uri == f"aws-kms://{new}"
        key = kr.decryption_key(record.key_id)  # one kms:Decrypt through the client built as the page shows
        # looked up by id alone, it names the data subject as the store does: by pseudonym (docs/key-model.md)
        assert (key.key_id, key.person) == (record.key_id, kr._stored(record.domain, example.RECORD["customerId"]))


def test_aws_kms_example_script(moto_kms: Any) -> None:
    """The command the page shows, as a user runs it (it creates its own keys and schedules their deletion)."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kms_aws.py"), "--create-keys"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("OK")
    states = [moto_kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] for k in moto_kms.list_keys()["Keys"]]
    assert states.count("PendingDeletion") == 2  # the two keys the script created, and only those


# --- what docs/kms/vault.md says about hcvault:// ---------------------------------------------------------------


class _NoVault:
    """An hvac client stand-in that must never be called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Vault was called ({name})")


def test_vault_limitation_stated_in_the_docs_still_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/kms/vault.md: hcvault:// cannot be used with Tink 1.16. When this test fails, the integration has
    changed: update that page (and the README's KEK row)."""
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")  # nothing listens: no call is made anyway
    monkeypatch.setenv("VAULT_TOKEN", "dummy")
    with pytest.raises(KeyStoreUnavailableError, match="cannot open KEK") as err:
        open_kek("hcvault://transit/keys/fieldcrypt")
    assert "Invalid key_path" in str(err.value.__cause__)
    # and Tink's Vault AEAD refuses associated data, which fieldcrypt always uses when wrapping a data key
    aead = hcvault.new_aead("transit/keys/fieldcrypt", _NoVault())
    with pytest.raises(tink.TinkError) as refused:
        aead.encrypt(b"data key", b"fieldcrypt-dek associated data")
    assert isinstance(refused.value.__context__, NotImplementedError)
