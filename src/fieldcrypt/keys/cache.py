"""A bounded cache whose entries expire a fixed time after they were loaded, not after last use.

Expiry-after-load bounds how long a process can keep using a key after it was shredded elsewhere;
the size bound keeps memory flat however many people or domains pass through.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from fieldcrypt.clock import Clock, SystemClock
from fieldcrypt.errors import ConfigurationError

__all__ = ["TtlCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Least-recently-used eviction beyond ``max_entries``; every entry dies ``ttl`` seconds after it was put."""

    def __init__(self, max_entries: int, ttl: float, clock: Clock) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("cache size must be a positive integer")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:  # false for nan
            raise ConfigurationError("cache TTL must be a positive, finite number of seconds")
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self._clock = clock
        # a lookup reads the system clock inline (a call fewer on the hot path), any other clock through its now()
        self._system = type(clock) is SystemClock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # guards writes only: held around a few dict operations (microseconds), never while a key store or KMS is
        # called, so the async door may read from the event loop (get() takes it only to drop an expired entry)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, *, count: bool = True) -> V | None:
        """The live value, or None. ``count=False`` for a re-check that should not skew the hit rate."""
        entry = self._data.get(key)
        if entry is not None:
            if entry[0] > (time.time() if self._system else self._clock.now()):
                self.hits += count
                try:
                    self._data.move_to_end(key)
                except KeyError:  # evicted by another thread meanwhile
                    pass
                return entry[1]
            with self._lock:
                if self._data.get(key) is entry:
                    del self._data[key]
        self.misses += count
        return None

    def put(self, key: K, value: V, expires_at: float | None = None) -> None:
        """Cache ``value`` until ``ttl`` seconds from now, or until ``expires_at`` if that is sooner."""
        with self._lock:
            until = self._clock.now() + self.ttl
            self._data[key] = (until if expires_at is None else min(until, expires_at), value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def sweep(self) -> int:
        """Drop every expired entry now, without waiting for a lookup; returns how many were dropped."""
        now = time.time() if self._system else self._clock.now()
        # a copy taken in one C call: get() moves entries to the end without the lock, which would break a
        # Python-level iteration ("OrderedDict mutated during iteration") and kill the sweeper thread. The scan runs
        # outside the lock, so a lookup never waits for it; the lock covers only the deletions, each re-checked (an
        # entry put again meanwhile stays)
        dead = [(k, entry) for k, entry in list(self._data.items()) if entry[0] <= now]
        dropped = 0
        with self._lock:
            for k, entry in dead:
                if self._data.get(k) is entry:
                    del self._data[k]
                    dropped += 1
        return dropped

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        """:meth:`put` of each (key, value), in order, under one lock and one reading of the clock (only the last
        ``max_entries`` can stay)."""
        with self._lock:
            until = self._clock.now() + self.ttl
            for key, value in items:
                self._data[key] = (until, value)
                self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def discard_many(self, keys: Iterable[K]) -> None:
        with self._lock:
            if self._data:
                for key in keys:
                    self._data.pop(key, None)

    def swap(self, key: K, old: V, new: V) -> None:
        """Replace ``old``, the live value of ``key``, by ``new``, keeping its expiry (nothing if it changed)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[1] is old:
                self._data[key] = (entry[0], new)

    def discard_where(self, doomed: Callable[[V], bool]) -> int:
        """Drop every entry whose value ``doomed`` accepts; returns how many were dropped."""
        found = [(k, entry) for k, entry in list(self._data.items()) if doomed(entry[1])]
        dropped = 0
        with self._lock:
            for k, entry in found:
                if self._data.get(k) is entry:
                    del self._data[k]
                    dropped += 1
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"TtlCache(entries={len(self._data)}, max_entries={self.max_entries}, ttl={self.ttl})"
