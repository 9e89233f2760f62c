"""The CLI as people and scripts expect a command-line tool to behave: help and --version, exit 2 for every usage
error (JSON with --json), quiet on a closed pipe, and settings from a config file < environment < flags."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fieldcrypt import create_key_store
from fieldcrypt.cli import build_parser, main
from fieldcrypt.cli._config import Settings, read_properties, resolve
from fieldcrypt.errors import ConfigurationError

CLEAN_ENV = (
    "FIELDCRYPT_CONFIG",
    "FIELDCRYPT_STORE",
    "FIELDCRYPT_KEK",
    "FIELDCRYPT_ACTOR",
    "FIELDCRYPT_BOOTSTRAP_SERVERS",
    "FIELDCRYPT_KMS_TIMEOUT",
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's own config or env may leak into these tests."""
    for name in (*CLEAN_ENV, "FIELDCRYPT_KAFKA_CONFIG", "FIELDCRYPT_SCHEMA_REGISTRY", "FIELDCRYPT_REGISTRY_USER_INFO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{' '.join(path) or 'fieldcrypt'} {a.option_strings or a.dest}"
        for path, parser in walk(build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help.strip())
    ]
    assert missing == []


def test_bare_command_and_bare_groups_print_help(capsys) -> None:
    code, out, err = run(capsys)
    assert code == 0 and out.startswith("usage: fieldcrypt") and "keys" in out and err == ""
    code, out, _ = run(capsys, "keys")
    assert code == 0 and out.startswith("usage: fieldcrypt keys") and "shred" in out


def test_version(capsys) -> None:
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"fieldcrypt {version('fieldcrypt')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["keys", "bogus"],
        ["keys", "list", "--no-such-flag"],
        ["keys", "show", "197dbd14"],  # looks like a key id minus 0x: refused, not guessed (and before any store)
        ["keys", "show", "zz"],
        ["keys", "audit", "--limit", "x"],
        ["keys", "audit", "--since", "yesterday"],
        ["keys", "shred", "--domain", "d"],  # --reason missing
        ["keys", "shred", "--domain", "d", "--reason", " "],
        ["keys", "list", "--domain", ""],
        ["verify", "-X", "no-equals-sign", "t"],
        ["kek", "create"],
        ["scan", "t", "--timeout", "nan"],  # float('nan') compares false both ways: once reached librdkafka
        ["verify", "t", "--timeout", "inf"],
        ["verify", "t", "--timeout", "0"],
        ["keys", "list", "--kms-timeout", "inf"],  # the KMS deadline is bounded too
        ["keys", "rewrap", "--kms-timeout", "nan"],
        ["keys", "rotate", "--domain", "d", "--kms-timeout", "301"],
        ["schema", "lint", "x.avsc", "--timeout", "-1"],
        ["schema", "lint", "x.avsc", "--tag-domain", "PII=a", "--tag-domain", "PII=b"],  # which one?
    ],
)
def test_usage_errors_exit_2_before_anything_is_opened(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    assert err.startswith("fieldcrypt") and len(err.strip().splitlines()) == 1 and out == ""
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2 and err == ""
    error = json.loads(out)["error"]
    assert error["exit_code"] == 2 and error["type"] == "UsageError" and error["message"]


def test_json_errors_for_configuration_and_not_found(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert code == 3 and json.loads(out)["error"]["type"] == "ConfigurationError"
    url = f"sqlite:///{tmp_path / 'k.db'}"
    create_key_store(url)
    code, out, _ = run(capsys, "keys", "show", "0x1234", "--store", url, "--json")
    assert code == 5 and "0x00001234" in json.loads(out)["error"]["message"]


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    create_key_store(url)
    # a long output into a reader that stops after one line: no BrokenPipe traceback
    script = tmp_path / "long_list.py"
    script.write_text(
        "import sys\nimport fieldcrypt.cli.keys as k\nfrom fieldcrypt.cli import main\n"
        "k.table = lambda rows, title=None: '\\n'.join(['x' * 200] * 20000)\n"
        f"sys.exit(main(['keys', 'list', '--store', {url!r}]))\n"
    )
    proc = subprocess.run(
        f"{sys.executable} {script} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "x" * 200
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_closed_pipe_keeps_a_findings_exit_code(tmp_path: Path) -> None:
    # a CI step `fieldcrypt schema lint ... | head` must still fail on findings when head stops reading early
    schema = {"type": "record", "name": "R", "fields": [{"name": f"email{i}", "type": "string"} for i in range(2000)]}
    path = _write(tmp_path / "wide.avsc", json.dumps(schema))
    proc = subprocess.run(
        f"{sys.executable} -m fieldcrypt.cli schema lint {path} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 7 and "Traceback" not in proc.stderr, proc.stderr


def test_a_server_that_is_not_a_registry_is_a_one_line_configuration_error(tmp_path: Path, capsys) -> None:
    import http.server
    import threading

    class NotARegistry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # 200 with a body no registry sends
            body = b"[1, 2, 3, 4]" if "versions" in self.path else b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotARegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(capsys, "schema", "lint", "--subject", "s-value", "--schema-registry", url, "--json")
        assert code == 3, (out, err)
        assert "is not a schema registry's" in json.loads(out)["error"]["message"]
        code, out, err = run(capsys, "schema", "lint", "--subject", "s-value", "--schema-registry", url)
        assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        server.shutdown()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["verify", "t", *argv])


def test_settings_precedence_file_then_env_then_flags(monkeypatch, tmp_path: Path) -> None:
    _write(
        tmp_path / "xdg" / "fieldcrypt" / "config.toml",
        'store = "sqlite:///from-file.db"\nkek = ["local-kek:///a.json", "local-kek:///b.json"]\nactor = "file"\n'
        '[kafka]\n"bootstrap.servers" = "file:9092"\n"security.protocol" = "SASL_SSL"\n"socket.timeout.ms" = 5000\n'
        '[registry]\nurl = "http://file:8081"\n',
    )
    s = resolve(_args())
    assert s.store == "sqlite:///from-file.db" and s.keks == ["local-kek:///a.json", "local-kek:///b.json"]
    assert s.kafka == {"bootstrap.servers": "file:9092", "security.protocol": "SASL_SSL", "socket.timeout.ms": "5000"}
    assert s.registry == {"url": "http://file:8081"} and s.actor == "file"

    monkeypatch.setenv("FIELDCRYPT_STORE", "sqlite:///from-env.db")
    monkeypatch.setenv("FIELDCRYPT_KEK", "local-kek:///env.json")
    monkeypatch.setenv("FIELDCRYPT_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("FIELDCRYPT_SCHEMA_REGISTRY", "http://env:8081")
    monkeypatch.setenv("FIELDCRYPT_REGISTRY_USER_INFO", "user:s3cret-pass")
    s = resolve(_args())
    assert s.store == "sqlite:///from-env.db" and s.keks == ["local-kek:///env.json"]
    assert s.kafka["bootstrap.servers"] == "env:9092" and s.kafka["security.protocol"] == "SASL_SSL"
    assert s.registry == {
        "url": "http://env:8081",
        "basic.auth.credentials.source": "USER_INFO",
        "basic.auth.user.info": "user:s3cret-pass",
    }
    assert "s3cret" not in repr(s)

    props = _write(
        tmp_path / "client.properties", "# kcat style\nbootstrap.servers=props:9092\nsasl.mechanisms: PLAIN\n"
    )
    s = resolve(
        _args(
            "--store",
            "sqlite:///flag.db",
            "--kek",
            "local-kek:///flag.json",
            "-F",
            str(props),
            "-b",
            "flag:9092",
            "-X",
            "sasl.username=alice",
            "-X",
            "security.protocol=SSL",
            "--schema-registry",
            "http://flag:8081",
            "--registry-conf",
            "ssl.ca.location=/ca.pem",
        )
    )
    assert s.store == "sqlite:///flag.db" and s.keks == ["local-kek:///flag.json"]
    assert s.kafka == {
        "bootstrap.servers": "flag:9092",  # -b beats the properties file
        "security.protocol": "SSL",  # -X beats the config file
        "socket.timeout.ms": "5000",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "alice",
    }
    assert s.registry["url"] == "http://flag:8081" and s.registry["ssl.ca.location"] == "/ca.pem"


def test_a_named_config_file_must_exist_and_be_valid(monkeypatch, tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "keys", "list", "--config", str(tmp_path / "nope.toml"), "--json")
    assert code == 3 and "does not exist" in json.loads(out)["error"]["message"]
    monkeypatch.setenv("FIELDCRYPT_CONFIG", str(tmp_path / "nope.toml"))
    code, _, err = run(capsys, "keys", "list")
    assert code == 3 and "does not exist" in err
    bad = _write(tmp_path / "bad.toml", 'store = "sqlite:///x.db"\nstorr = "typo"\n')
    code, _, err = run(capsys, "keys", "list", "--config", str(bad))
    assert code == 3 and "unknown setting" in err
    secret = _write(tmp_path / "broken.toml", 'password = "hunter2-secret\n')
    code, _, err = run(capsys, "keys", "list", "--config", str(secret))
    assert code == 3 and "not valid TOML" in err and "hunter2" not in err
    wrong = _write(tmp_path / "wrong.toml", "[kafka]\nlist = [1, 2]\n")
    code, _, err = run(capsys, "keys", "list", "--config", str(wrong))
    assert code == 3 and "'list' must be a string" in err


def test_the_config_file_store_is_used_by_commands(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    cfg = _write(tmp_path / "c.toml", f'store = "{url}"\n')
    code, out, _ = run(capsys, "keys", "init", "--config", str(cfg), "--json")
    assert code == 0 and json.loads(out) == {"store": url, "initialized": True}
    code, out, _ = run(capsys, "keys", "list", "--config", str(cfg), "--json")
    assert code == 0 and json.loads(out) == []


def test_properties_files(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "a.properties",
        "! comment\n# comment\n\nbootstrap.servers = b1:9092,\\\n    b2:9092\nsasl.jaas.config=x=y;\nempty=\n",
    )
    assert read_properties(str(p), "-F") == {
        "bootstrap.servers": "b1:9092,b2:9092",
        "sasl.jaas.config": "x=y;",
        "empty": "",
    }
    # java.util.Properties: whitespace also ends a key (a password after it stays the value, never a key that
    # librdkafka would quote in its refusal), escapes, a key alone has an empty value
    java = _write(
        tmp_path / "j.properties",
        "sasl.password PropSECRET:tail\nclient.id=caf\\u00e9\nssl.key.password=a\\\\b\\=c\njustaword\n",
    )
    assert read_properties(str(java), "-F") == {
        "sasl.password": "PropSECRET:tail",
        "client.id": "caf\u00e9",
        "ssl.key.password": "a\\b=c",
        "justaword": "",
    }
    with pytest.raises(ConfigurationError, match="line 1: a malformed") as err:
        read_properties(str(_write(tmp_path / "u.properties", "sasl.password=SECRET\\u12\n")), "-F")
    assert "SECRET" not in str(err.value)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        read_properties(str(tmp_path / "missing.properties"), "-F")


def test_missing_cluster_settings_name_every_way_to_give_them() -> None:
    with pytest.raises(ConfigurationError, match="FIELDCRYPT_BOOTSTRAP_SERVERS"):
        Settings().kafka_conf()
    with pytest.raises(ConfigurationError, match="FIELDCRYPT_SCHEMA_REGISTRY"):
        Settings().registry_conf()


def test_secrets_from_settings_never_appear_in_errors(tmp_path: Path, capsys) -> None:
    cfg = _write(tmp_path / "c.toml", '[kafka]\n"sasl.password" = "pw-0123456789"\n')
    code, out, err = run(capsys, "verify", "t", "--config", str(cfg), "--json")
    assert code == 3 and "pw-0123456789" not in out + err


def test_shred_log_setting_is_appended_by_a_cli_shred(monkeypatch, tmp_path: Path, capsys) -> None:
    from fieldcrypt import Keyring, create_local_kek

    url = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    kek = create_local_kek(tmp_path / "kek.json")
    with Keyring(url, kek) as kr:
        kr.encryption_key("orders-value", "cust-9")
        pseudonym = kr._stored("orders-value", "cust-9")
    log = tmp_path / "shred.jsonl"
    monkeypatch.setenv("FIELDCRYPT_SHRED_LOG", str(log))
    shred = ["keys", "shred", "--data-subject", "cust-9", "--reason", "ticket-1", "--yes", "--store", url]
    code, out, _ = run(capsys, *shred, "--kek", kek, "--json")
    assert code == 0 and json.loads(out)["destroyed"] == 1
    [line] = log.read_text().splitlines()
    assert json.loads(line)["data_subject"] == pseudonym  # the shred-log file names people by their pseudonyms


def test_kms_timeout_setting_file_then_env_then_flag(monkeypatch, tmp_path: Path, capsys) -> None:
    from fieldcrypt import create_local_kek
    from fieldcrypt.cli.keys import keyring_of

    url = create_key_store(f"sqlite:///{tmp_path / 'k.db'}")
    kek = create_local_kek(tmp_path / "kek.json")
    cfg = _write(tmp_path / "xdg" / "fieldcrypt" / "config.toml", f'store = "{url}"\nkek = "{kek}"\nkms_timeout = 2\n')
    assert resolve(_args()).kms_timeout == 2.0
    monkeypatch.setenv("FIELDCRYPT_KMS_TIMEOUT", "3.5")
    assert resolve(_args()).kms_timeout == 3.5
    args = build_parser().parse_args(["keys", "rewrap", "--kms-timeout", "7"])
    args.settings = resolve(args)
    with keyring_of(args, needs_kek=True) as kr:
        assert kr.kms_timeout == 7.0
    monkeypatch.delenv("FIELDCRYPT_KMS_TIMEOUT")
    cfg.unlink()
    args = build_parser().parse_args(["keys", "list", "--store", url])
    args.settings = resolve(args)
    with keyring_of(args, needs_kek=False) as kr:
        assert kr.kms_timeout == 5.0  # the default
    # TOML has inf and nan: a deadline that never ends is a configuration error, like one that is not a number
    for value in ("inf", "nan", "0", "-1", "true", '"5"', "301"):
        bad = _write(tmp_path / "bad.toml", f'store = "{url}"\nkms_timeout = {value}\n')
        code, _, err = run(capsys, "keys", "list", "--config", str(bad))
        assert code == 3 and "kms_timeout" in err, (value, err)
    for value in ("inf", "nan", "soon"):
        monkeypatch.setenv("FIELDCRYPT_KMS_TIMEOUT", value)
        code, _, err = run(capsys, "keys", "list", "--store", url)
        assert code == 3 and "FIELDCRYPT_KMS_TIMEOUT" in err, (value, err)
