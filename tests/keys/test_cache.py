"""Key cache entries expire a fixed time after load (not after last use), and the cache is bounded."""

from __future__ import annotations

import pytest

from fieldcrypt import ConfigurationError, FakeClock
from fieldcrypt.keys.cache import TtlCache


def test_expires_after_load_even_when_used() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10, 60, clock)
    cache.put("k", 1)
    for _ in range(5):
        clock.advance(11)
        assert cache.get("k") == 1  # used every 11 s: still dies at 60 s after load
    clock.advance(5)
    assert cache.get("k") is None


def test_bounded_lru() -> None:
    cache: TtlCache[int, int] = TtlCache(3, 60, FakeClock())
    for i in range(3):
        cache.put(i, i)
    assert cache.get(0) == 0  # 0 is now most recently used
    cache.put(3, 3)
    assert cache.get(1) is None and cache.get(0) == 0 and len(cache) == 3


def test_rejects_bad_bounds() -> None:
    with pytest.raises(ConfigurationError):
        TtlCache(0, 60, FakeClock())
    with pytest.raises(ConfigurationError):
        TtlCache(10, 0, FakeClock())


def test_the_system_clock_is_read_when_asked(monkeypatch) -> None:
    """A cache on the system clock reads ``time.time`` at each lookup (never a copy taken when it was made), so an
    application or a test that moves the time moves the cache's expiry with it."""
    import time

    from fieldcrypt.clock import SystemClock
    from fieldcrypt.keys.cache import TtlCache

    cache: TtlCache[str, str] = TtlCache(10, 60.0, SystemClock())
    cache.put("k", "v")
    assert cache.get("k") == "v"
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert cache.get("k") is None
