"""A local stack to try fieldcrypt: a broker, a schema registry and a key store with its KEK, on this machine.

    with LocalStack(topics=["orders"]) as stack:
        os.environ.update(stack.env())      # what the fieldcrypt command reads
        ...

``fieldcrypt dev up`` runs one in the foreground. The broker and the registry keep everything in memory; the key
store (SQLite, ``keys.db``) and the local KEK (``kek.json``) live in a state directory: ``state=`` keeps it (and
reuses what an earlier run left there), the default is a temporary directory removed by :meth:`LocalStack.stop`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fieldcrypt.dev.broker import Broker, create_topic
from fieldcrypt.dev.registry import RegistryServer
from fieldcrypt.keys.kek import create_local_kek, open_kek
from fieldcrypt.keys.registry import create_key_store

__all__ = [
    "ENV_BOOTSTRAP_SERVERS",
    "ENV_KEK",
    "ENV_SCHEMA_REGISTRY",
    "ENV_STORE",
    "KEK_FILE",
    "STORE_FILE",
    "LocalStack",
    "local_keys",
]

#: the environment variables the ``fieldcrypt`` command reads (see ``fieldcrypt.cli._config``)
ENV_BOOTSTRAP_SERVERS = "FIELDCRYPT_BOOTSTRAP_SERVERS"
ENV_SCHEMA_REGISTRY = "FIELDCRYPT_SCHEMA_REGISTRY"
ENV_STORE = "FIELDCRYPT_STORE"
ENV_KEK = "FIELDCRYPT_KEK"

#: the files of a state directory (the same as ``examples/end_to_end.py --state DIR`` uses)
KEK_FILE = "kek.json"
STORE_FILE = "keys.db"


def local_keys(state: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """A SQLite key store and a local KEK in the directory ``state`` (created if missing): ``(store_url, kek_uri,
    reused)``. What an earlier run left there is kept and reused (``reused`` is then True): creating the store is
    idempotent, and an existing KEK file is never replaced (it is opened, so that a bad one is refused here)."""
    directory = Path(state).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    kek_file = directory / KEK_FILE
    reused = kek_file.exists()
    if reused:
        kek_uri = f"local-kek://{kek_file}"
        open_kek(kek_uri)  # refuse now, not at first use, a file that is no keyset or that others may read
    else:
        kek_uri = create_local_kek(kek_file)
    store_url = create_key_store(f"sqlite:///{directory / STORE_FILE}")
    return store_url, kek_uri, reused


class LocalStack:
    """A development broker (:class:`~fieldcrypt.dev.Broker`), registry (:class:`~fieldcrypt.dev.RegistryServer`)
    and key store with a local KEK, each optional; started by the constructor, stopped by :meth:`stop` (or the
    ``with`` block). ``topics`` are created with one partition each.

    ``state``: the directory of the key store and KEK, kept after :meth:`stop`; default a temporary one that
    :meth:`stop` removes. ``broker_port`` / ``registry_port``: listen there instead of on free ports.
    """

    def __init__(
        self,
        *,
        broker: bool = True,
        registry: bool = True,
        keys: bool = True,
        state: str | os.PathLike[str] | None = None,
        broker_port: int | None = None,
        registry_port: int | None = None,
        topics: Iterable[str] = (),
        keep_metadata: bool = True,
    ) -> None:
        self.broker: Broker | None = None
        self.registry: RegistryServer | None = None
        self.state: Path | None = None
        self.state_is_temporary = False
        self.store_url: str | None = None
        self.kek_uri: str | None = None
        self.reused_keys = False
        self._stopped = False
        self.topics = list(dict.fromkeys(topics))
        try:
            if keys:
                if state is None:
                    self.state = Path(tempfile.mkdtemp(prefix="fieldcrypt-dev-"))
                    self.state_is_temporary = True
                else:
                    self.state = Path(state).absolute()
                self.store_url, self.kek_uri, self.reused_keys = local_keys(self.state)
            if registry:
                self.registry = RegistryServer(registry_port or 0, keep_metadata=keep_metadata)
            if broker:
                self.broker = Broker(port=broker_port)
                for topic in self.topics:
                    create_topic(self.broker.bootstrap_servers, topic)
        except BaseException:
            self.stop()
            raise

    @property
    def bootstrap_servers(self) -> str | None:
        return self.broker.bootstrap_servers if self.broker is not None else None

    @property
    def registry_url(self) -> str | None:
        return self.registry.url if self.registry is not None else None

    @property
    def running(self) -> bool:
        """False once stopped, or once the broker process has gone."""
        return not self._stopped and (self.broker is None or self.broker.running)

    def env(self) -> dict[str, str]:
        """The ``FIELDCRYPT_*`` environment variables that point the ``fieldcrypt`` command at this stack."""
        values = {
            ENV_BOOTSTRAP_SERVERS: self.bootstrap_servers,
            ENV_SCHEMA_REGISTRY: self.registry_url,
            ENV_STORE: self.store_url,
            ENV_KEK: self.kek_uri,
        }
        return {k: v for k, v in values.items() if v is not None}

    def stop(self) -> None:
        """Stop the broker and the registry; remove the state directory if it is a temporary one. Idempotent."""
        self._stopped = True
        try:
            if self.broker is not None:
                self.broker.stop()
        finally:
            if self.registry is not None:
                self.registry.stop()
            if self.state_is_temporary and self.state is not None:
                shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
