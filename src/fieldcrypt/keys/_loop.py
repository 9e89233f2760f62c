"""Sync record work on an event loop that never blocks it: the replay the asyncio serdes run their calls in.

The asyncio twins (``fieldcrypt.core.aio``) run the sync twins' record work itself, not a copy of it. One call is
run in *attempts* on the event loop, inside a :class:`Replay`:

* I/O the work would make (a registry request, a cold key lookup, a policy record in the key store) is not made on
  the loop. The attempt stops there with :class:`Await`, naming the request and how to await it; the caller awaits
  it (the async registry client; :class:`fieldcrypt.keys.source.AsyncKeySource` for keys, single flight and
  shielded), keeps the answer or the error in the replay, and runs the attempt again. The next attempt gets that
  answer where it asks the same question (:func:`answer`), so a call repeats its work only up to its first
  unanswered request. A warm call (keys cached, schema known) ends in its first attempt without suspending.
* A threading lock is taken on the loop only when it is free (:func:`taken`); when another thread holds it, the
  attempt stops with :class:`Busy` and is retried after a short sleep, so the loop never waits on one.
* Blocking work that has no async door (a key-store call below the lookups above, Confluent's CSFLE executor) stops
  the attempt with :class:`OffLoop`: the caller runs the whole call in the loop's executor instead, where the
  registry is awaited on the loop from that thread and key lookups take the sync door.

The three signals derive from ``BaseException``: the record work's ``except Exception`` handlers (counting a refused
record, mapping errors) never see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

__all__ = [
    "SIGNALS",
    "Abandoned",
    "Await",
    "Busy",
    "OffLoop",
    "Replay",
    "active",
    "answer",
    "current",
    "in_executor",
    "once",
    "taken",
]


class Await(BaseException):
    """An attempt stopped at a request it may not make on the loop: await ``make()``, keep the answer, retry."""

    def __init__(self, name: Hashable, make: Callable[[], Awaitable[Any]]) -> None:
        super().__init__("fieldcrypt: an I/O request to await (not an error)")
        self.name = name
        self.make = make


class Busy(BaseException):
    """An attempt stopped at a lock another thread holds: sleep briefly and retry."""


class OffLoop(BaseException):
    """An attempt reached blocking work with no async door: run the call in the executor."""


class Abandoned(BaseException):
    """A call moved to the executor whose caller stopped waiting (cancelled, or its loop closed): it ends here, at its
    next request to the loop, with no lasting effect (a ``BaseException``: no handler of the record work takes it
    for a failure to remember or count)."""


#: what stops an attempt (not an error: the record work lets them through without counting a refused record)
SIGNALS = (Await, Busy, OffLoop, Abandoned)


class Replay:
    """The requests one call has had answered, across its attempts, and the loop it runs on."""

    __slots__ = ("abandoned", "answers", "loop", "misses", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        #: request name -> (True, answer) or (False, the exception it raised)
        self.answers: dict[Hashable, tuple[bool, Any]] = {}
        #: data-key lookups answered for the call that needed the key store (the call's serde counts them)
        self.misses = 0
        #: the caller stopped waiting for a call moved to the executor (cancelled): its requests to the loop end
        self.abandoned = False


_CURRENT: contextvars.ContextVar[Replay | None] = contextvars.ContextVar("fieldcrypt_replay", default=None)


def current() -> Replay | None:
    """The replay of the call running in this thread's context, when this thread is its event loop's (None in the
    executor, where blocking is what the thread is for)."""
    replay = _CURRENT.get()
    if replay is not None and replay.thread == threading.get_ident():
        return replay
    return None


#: the replay of the call running in this context, on the loop or in the executor for it (``active()``; None
#: outside one)
active: Callable[[], Replay | None] = _CURRENT.get


@contextlib.contextmanager
def running(replay: Replay) -> Iterator[None]:
    """Within the block, this context's work belongs to ``replay``."""
    token = _CURRENT.set(replay)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def answer(replay: Replay, name: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
    """The answer ``replay`` holds for ``name`` (its exception raised again), or :class:`Await` to get it."""
    found = replay.answers.get(name)
    if found is None:
        raise Await(name, make)
    ok, value = found
    if ok:
        return value
    raise value


def once(name: Hashable, make: Callable[..., Any], *args: Any) -> Any:
    """``make(*args)``, made once per call: later attempts of a replayed call (and its run in the executor) get the
    value the first attempt made. For work with effects outside the record (``to_dict``, WRITE rules and their
    actions, which confluent's serdes run once per record) and values that reading uses up. Outside a replay (every
    sync call): ``make(*args)``, nothing more."""
    replay = _CURRENT.get()
    if replay is None:
        return make(*args)
    found = replay.answers.get(name)
    if found is not None:
        return found[1]
    value = make(*args)
    replay.answers[name] = (True, value)
    return value


def in_executor(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``make`` for :func:`answer`: ``fn`` run in the loop's default executor, in a copy of the context as it is when
    the request is awaited (the attempt over: no replay in it, so the sync door runs)."""

    def make() -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, fn)

    return make


@contextlib.contextmanager
def taken(lock: Any) -> Iterator[None]:
    """``with lock:``, except on a replay's loop, where a lock another thread holds is not waited for
    (:class:`Busy`)."""
    if current() is not None:
        if not lock.acquire(blocking=False):
            raise Busy
    else:
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
