"""A Keyring opened before fork() keeps working in the child and in the parent (pre-forking servers,
multiprocessing's "fork" start method), for both key stores."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from pg import pg_schema_url

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.keys import _fork

STORES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": lambda tmp: nullcontext(f"sqlite:///{tmp / 'fork.db'}"),
    "postgresql": lambda tmp: pg_schema_url(),
}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")


@pytest.fixture(params=sorted(STORES))
def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Keyring]:
    with STORES[request.param](tmp_path) as url:
        kr = Keyring(fieldcrypt.create_key_store(url), fieldcrypt.create_local_kek(tmp_path / "kek.json"))
        yield kr
        kr.close()


def in_child(work: Callable[[], dict[str, Any]], timeout: float = 20.0) -> dict[str, Any]:
    """Run ``work`` in a forked child; return what it reported. Fails (and kills the child) if it hangs."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        try:
            out = work()
        except BaseException as exc:  # report, never return into pytest in the child
            out = {"error": f"{type(exc).__name__}: {exc}"}
        # the worst case at interpreter exit: whatever the child inherited is finalized
        for conn in _fork._abandoned:
            try:
                conn.close()
            except Exception:
                pass
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        pytest.fail("the forked child hung")
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    result: dict[str, Any] = json.loads(data)
    return result


def test_child_reads_and_creates_keys_and_parent_keeps_working(keyring: Keyring) -> None:
    before = keyring.encryption_key("orders-value")
    store = keyring.store

    def child() -> dict[str, Any]:
        old = keyring.decryption_key(before.key_id)
        new = keyring.encryption_key("child-domain")
        return {"old": old.key_id, "new": new.key_id, "same_object": old is before}

    got = in_child(child)
    assert "error" not in got, got["error"] if "error" in got else ""
    assert got["old"] == before.key_id and not got["same_object"]  # reloaded from the store, not inherited
    # the parent's own connection survived the child's exit: a store call, no retry, succeeds at once
    assert store.get(got["new"]) is not None
    assert store.get(before.key_id) is not None
    assert keyring.encryption_key("parent-after-fork").key_id not in (before.key_id, got["new"])


def test_fork_while_another_thread_creates_a_key_does_not_hang_the_child(keyring: Keyring) -> None:
    keyring.encryption_key("warm")  # the store's connection is open
    holding, release = threading.Event(), threading.Event()

    def creator() -> None:  # a thread inside the creation of the key the child asks for, at the moment of fork()
        with keyring._key_lock("created-in-child", None, time.monotonic() + 10):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=creator)
    t.start()
    holding.wait(5)
    try:
        got = in_child(lambda: {"id": keyring.encryption_key("created-in-child").key_id}, timeout=10)
    finally:
        release.set()
        t.join()
    assert "error" not in got and keyring.store.get(got["id"]) is not None
