"""Fork safety for objects that hold database connections, locks or leased encryption budgets.

A process that opens a key store or a Keyring and then forks (multiprocessing's "fork" start method, pre-forking
servers) leaves the child with copies of the parent's connections, of locks another thread may have held, and of
the parent's cached keys with their leased encryption counts. Using any of them from the child is unsafe: SQLite
forbids carrying a connection across ``fork()``, and a PostgreSQL connection shares its socket with the parent.

Objects register here; in a forked child each one's ``_after_fork()`` runs before any other code. They drop what
they inherited and reconnect, reload and re-lease lazily. Inherited connections are never used or closed in the
child: a libpq connection closed there would tell the server to end the *parent's* session.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Protocol

__all__ = ["abandon", "abandon_socket", "track"]


class _ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_abandoned: list[Any] = []  # inherited connections, kept referenced so the child never finalizes them
_registered = False
_register_lock = threading.Lock()


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj._after_fork()


def track(obj: _ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked after this call (registered on first use, not on import)."""
    global _registered
    if not _registered:
        with _register_lock:
            if not _registered and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _registered = True
    _live.add(obj)


def abandon(conn: Any) -> None:
    """Keep an inherited connection object alive, unused, for the rest of the child's life."""
    _abandoned.append(conn)


def abandon_socket(conn: Any, fileno: int | None) -> None:
    """Abandon an inherited network connection and point its descriptor at /dev/null in this process, so that
    whatever the client library writes on it later (a goodbye at exit) never reaches the parent's socket."""
    abandon(conn)
    if fileno is None or fileno < 0:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fileno)
    except OSError:
        pass
    finally:
        os.close(null)
