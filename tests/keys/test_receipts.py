"""A receipt per erasure (issue 22): what it holds (and never: the id given), that it verifies against its seal and
the key store, and each way it stops verifying; a receipt that cannot be made is refused before anything is
destroyed."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from fieldcrypt import Keyring, create_key_store
from fieldcrypt.cli import main as cli
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys.kek import create_local_kek

PEOPLE = ["alice@example.com", "bob-42", "carol"]


@pytest.fixture
def shop(tmp_path: Path) -> tuple[str, str]:
    kek = create_local_kek(tmp_path / "kek.json")
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    create_key_store(url)
    with Keyring(url, kek) as kr:
        for p in PEOPLE:
            kr.encryption_key("orders-value", p)
            kr.encryption_key("customers-value", p)
        kr.rotate("customers-value", "bob-42", reason="rotation")
    return url, kek


def _run(*argv: str) -> tuple[int, Any]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(list(argv))
    out = buf.getvalue()
    return code, json.loads(out) if out.startswith(("{", "[")) else out


def test_a_receipt_names_keys_and_entries_never_the_id(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    path = tmp_path / "ERASE-7.json"
    code, report = _run("keys", "shred", "--data-subject", "bob-42", "--reason", "ERASE-7", "--yes", "--json",
                        "--receipt", str(path), "--store", url, "--kek", kek)  # fmt: skip
    assert code == 0 and report["receipt"] == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "bob-42" not in text  # by pseudonyms only
    doc = json.loads(text)
    assert doc["request"]["reason"] == "ERASE-7" and doc["destroyed"] == 3
    [subject] = doc["subjects"]
    assert subject["outcome"] == "erased" and len(subject["keys"]) == 3
    assert {k["domain"] for k in subject["keys"]} == {"orders-value", "customers-value"}
    assert {k["kek"] for k in subject["keys"]} == {kek}
    assert all(r.startswith("ps1:") for r in subject["references"]) and len(subject["references"]) == 2
    assert doc["audit"]["first_seq"] <= doc["audit"]["last_seq"]
    assert "backups" in " ".join(doc["scope"]["does_not_cover"])
    with Keyring(url, kek) as kr:
        [entry] = [e for e in kr.audit(operation="shred")]
        assert entry.seq == doc["audit"]["last_seq"] and entry.reason == "ERASE-7"
        assert kr.verify_audit().sealed_seq == entry.seq  # the receipt sealed the chain up to its entry
    code, checked = _run("keys", "receipt", "verify", str(path), "--json", "--store", url, "--kek", kek)
    assert code == 0 and checked["ok"] and checked["seal"] == "authentic" and checked["keys"] == 3


def test_the_api_returns_one_receipt_for_a_batch(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    with Keyring(url, kek) as kr:
        report = kr.shred_persons(["alice@example.com", "carol", "nobody"], reason="ERASE-8", receipt=True)
        doc = report.receipt.document
        assert [s["outcome"] for s in doc["subjects"]] == ["erased", "erased", "no key held"]
        assert doc["audit"]["last_seq"] - doc["audit"]["first_seq"] == 2  # one entry per data subject
        assert kr.verify_receipt(report.receipt).ok
        path = report.receipt.write(tmp_path / "r.json")
        assert kr.verify_receipt(path).ok
        assert "alice" not in path.read_text() and "nobody" not in path.read_text()


def _receipt(url: str, kek: str, tmp_path: Path) -> Path:
    path = tmp_path / "r.json"
    with Keyring(url, kek) as kr:
        kr.shred_person("carol", reason="ERASE-9", receipt=True).receipt.write(path)
    return path


def test_an_edited_receipt_is_forged(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    path = _receipt(url, kek, tmp_path)
    # under another KEK than the one it names: not checked, so not valid
    other = create_local_kek(tmp_path / "other.json")
    code, checked = _run("keys", "receipt", "verify", str(path), "--json", "--store", url, "--kek", other)
    assert code == 7 and checked["seal"] == "unchecked"
    doc = json.loads(path.read_text())
    doc["request"]["reason"] = "ERASE-10"
    path.write_text(json.dumps(doc))
    code, checked = _run("keys", "receipt", "verify", str(path), "--json", "--store", url, "--kek", kek)
    assert code == 7 and checked["seal"] == "forged"


def test_keys_back_from_a_backup_fail_the_receipt(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    db = Path(url[len("sqlite:///") :])
    with Keyring(url, kek) as kr:
        kr.purge()
    shutil.copy(db, tmp_path / "backup.db")
    path = _receipt(url, kek, tmp_path)
    assert _run("keys", "receipt", "verify", str(path), "--store", url, "--kek", kek)[0] == 0
    shutil.copy(tmp_path / "backup.db", db)  # restored without re-applying the shred log
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    code, checked = _run("keys", "receipt", "verify", str(path), "--json", "--store", url, "--kek", kek)
    assert code == 7 and checked["entry"] == "missing"
    assert {s for _, s in [(k["key_id"], k["state"]) for k in checked["not_destroyed"]]} == {"present"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dry-run"], "dry run"),
        ([], "needs the KEK"),
    ],
)
def test_a_receipt_that_cannot_be_made_destroys_nothing(
    shop: tuple[str, str], tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, kek = shop
    kek_args = [] if message == "needs the KEK" else ["--kek", kek]
    code = cli(["keys", "shred", "--data-subject", "carol", "--reason", "R", "--yes", "--receipt",
                str(tmp_path / "r.json"), "--store", url, *kek_args, *extra])  # fmt: skip
    assert code in (2, 3) and message in capsys.readouterr().err
    with Keyring(url, kek) as kr:
        assert len(kr.keys(person="carol")) == 2 and not (tmp_path / "r.json").exists()


def test_an_existing_receipt_file_is_never_overwritten(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    (tmp_path / "r.json").write_text("evidence of another request")
    code = cli(["keys", "shred", "--data-subject", "carol", "--reason", "R", "--yes", "--receipt",
                str(tmp_path / "r.json"), "--store", url, "--kek", kek])  # fmt: skip
    assert code == 2 and (tmp_path / "r.json").read_text() == "evidence of another request"
    with Keyring(url, kek) as kr:
        assert len(kr.keys(person="carol")) == 2
        with pytest.raises(ConfigurationError, match="dry run"):
            kr.shred_person("carol", reason="R", dry_run=True, receipt=True)
        with pytest.raises(ConfigurationError, match="True or False"):
            kr.shred_person("carol", reason="R", receipt="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"receipt": "fieldcrypt erasure receipt", "version": 2}', '{"receipt": "other"}'],
)
def test_what_is_not_a_receipt_is_refused_by_name(shop: tuple[str, str], tmp_path: Path, content: str) -> None:
    url, kek = shop
    (tmp_path / "r.json").write_text(content)
    code, _ = _run("keys", "receipt", "verify", str(tmp_path / "r.json"), "--store", url, "--kek", kek)
    assert code == 3


def test_a_receipt_resealed_by_a_kek_holder_still_fails_against_the_audit_log(
    shop: tuple[str, str], tmp_path: Path
) -> None:
    """The seal is symmetric: whoever holds the KEK can seal anything. What the receipt says must also be what its
    audit entries say: a receipt moved to another person, or another request, is refused."""
    import base64
    import hashlib

    from fieldcrypt.keys import evidence

    url, kek = shop
    path = _receipt(url, kek, tmp_path)  # carol's
    with Keyring(url, kek) as kr:
        alice = kr._stored("orders-value", "alice@example.com", create=False)
        for change in ("person", "reason"):
            doc = json.loads(path.read_text())
            if change == "person":
                doc["subjects"][0]["references"] = [alice]
            else:
                doc["request"]["reason"] = "ERASE-other"
            body = {k: v for k, v in doc.items() if k != "seal"}
            digest = hashlib.sha256(evidence._canonical(body)).digest()
            tag = kr.kek.aead.encrypt(digest, evidence._RECEIPT_AD)
            doc["seal"]["tag"] = base64.b64encode(tag).decode()
            forged = tmp_path / f"forged-{change}.json"
            forged.write_text(json.dumps(doc))
            checked = kr.verify_receipt(forged)
            assert checked.seal == "authentic" and not checked.ok and checked.mismatches, change


def test_a_receipt_with_a_key_given_twice_is_refused(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    path = _receipt(url, kek, tmp_path)
    text = path.read_text()
    path.write_text(text.replace('"destroyed": 2,', '"destroyed": 250,\n  "destroyed": 2,', 1))
    code, _ = _run("keys", "receipt", "verify", str(path), "--store", url, "--kek", kek)
    assert code == 3


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["audit"].update(last_seq=2**70),
        lambda d: d["subjects"][0]["keys"][0].update(key_id="0x" + "f" * 400),
        lambda d: d.update(subjects=[[[[[]]]]]),
        lambda d: d["request"].pop("reason"),
    ],
)
def test_a_receipt_out_of_shape_is_refused_by_name_never_a_traceback(
    shop: tuple[str, str], tmp_path: Path, change: Any
) -> None:
    url, kek = shop
    path = _receipt(url, kek, tmp_path)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    code, _ = _run("keys", "receipt", "verify", str(path), "--store", url, "--kek", kek)
    assert code == 3
    with Keyring(url, kek) as kr, pytest.raises(ConfigurationError):
        kr.verify_receipt(evidence_receipt(doc))


def evidence_receipt(doc: dict[str, Any]) -> Any:
    from fieldcrypt.keys.evidence import Receipt

    return Receipt(doc)


def test_a_reason_that_is_not_text_destroys_nothing(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    with Keyring(url, kek) as kr:
        with pytest.raises(ConfigurationError, match="UTF-8"):
            kr.shred_person("carol", reason="ticket \udcff")  # (a byte that is not UTF-8, as argv gives it)
        assert len(kr.keys(person="carol")) == 2


def test_the_receipt_file_is_taken_before_the_shred(shop: tuple[str, str], tmp_path: Path) -> None:
    url, kek = shop
    long_name = tmp_path / ("r" * 300 + ".json")
    code = cli(["keys", "shred", "--data-subject", "carol", "--reason", "R", "--yes", "--receipt", str(long_name),
                "--store", url, "--kek", kek])  # fmt: skip
    assert code in (2, 3)
    with Keyring(url, kek) as kr:
        assert len(kr.keys(person="carol")) == 2  # nothing destroyed: the file could not be made
