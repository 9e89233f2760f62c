"""Waiting with a deadline: KMS calls (:class:`KmsRunner`) and the per-key locks around them (:class:`KeyLocks`).

A KEK call that has not returned in time is abandoned, never waited for.

A KMS client blocked on a socket that accepted the connection and never answers cannot be interrupted from Python,
so each remote KEK call runs in a worker thread and the caller waits for it only until its deadline; then it gets
:class:`KmsTimeout` (a ``TimeoutError``, which :func:`fieldcrypt.keys.kek.classify_failure` reads as
"unavailable") and goes on. The abandoned worker ends when the client's own connect or read timeout fires
(fieldcrypt gives the KEKs it builds from a URI timeouts no longer than the deadline: see ``kek.open_kek``).

At most ``workers`` calls of one runner are in flight at a time. When that many are stuck on a silent KMS, further
calls wait for a free worker until their own deadline and time out, so a silent KMS never grows the number of
threads. Deadlines are ``time.monotonic()`` values: real time, since the wait is on a real socket (an injected
:class:`fieldcrypt.clock.Clock` serves expiry and rotation, not network waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from fieldcrypt.keys import _loop

__all__ = ["KeyLocks", "KmsRunner", "KmsTimeout"]

T = TypeVar("T")


class KmsTimeout(TimeoutError):
    """A KEK call did not return before the deadline of the key operation it served."""


class _Box(Generic[T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.value: T | None = None


class KmsRunner:
    """Runs KEK calls in daemon worker threads, at most ``workers`` at a time, each waited for until a deadline."""

    def __init__(self, workers: int = 8) -> None:
        self._slots = threading.BoundedSemaphore(workers)

    def run(self, fn: Callable[[], T], deadline: float, what: str) -> T:
        """``fn()``'s result or exception, if it comes before ``deadline`` (a ``time.monotonic()`` value); else
        :class:`KmsTimeout` naming ``what`` (a KEK URI: never key material or a value)."""
        if deadline <= time.monotonic():
            raise KmsTimeout(f"{what}: the deadline had passed; no call was made")
        slots = self._slots  # the one this call acquires is the one its worker releases, even after a fork
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise KmsTimeout(f"{what}: every KMS worker is still waiting for an answer; no call was made")
        box: _Box[T] = _Box()

        def work() -> None:
            try:
                box.value = fn()
            except BaseException as exc:  # handed to the caller, who raises it as its own
                box.error = exc
            finally:
                slots.release()
                box.done.set()

        try:
            threading.Thread(target=work, name="fieldcrypt-kms-call", daemon=True).start()
        except BaseException:
            slots.release()
            raise
        if not box.done.wait(max(0.0, deadline - time.monotonic())):
            raise KmsTimeout(f"{what}: no answer before the deadline")
        if box.error is not None:
            raise box.error
        return box.value  # type: ignore[return-value]  # set when error is None


class KeyLocks:
    """One lock per key (a (domain, person) pair) while a thread holds it or waits for it, waited for only until
    the waiter's deadline. Threads that need the same key wait for the one fetching it instead of asking the KMS
    themselves; threads that need another key never wait. An entry goes away when nobody holds or waits for it, so
    a million persons leave no million locks behind."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.RLock, list[int]]] = {}

    @contextmanager
    def hold(self, key: Hashable, deadline: float, on_timeout: Callable[[], BaseException]) -> Iterator[None]:
        """Hold the lock of ``key``; raise ``on_timeout()`` if it is not free before ``deadline``."""
        if _loop.current() is not None:  # an asyncio serde's call reached a cold path on its loop: off the loop
            raise _loop.OffLoop
        with self._guard:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = (threading.RLock(), [0])
            entry[1][0] += 1
        lock, users = entry
        try:
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise on_timeout()
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0 and self._locks.get(key) is entry:
                    del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
