"""Bounded means bounded: every duration a Keyring takes is a finite number within stated limits.

The attack: ``Keyring(cache_ttl=float("inf"))`` was accepted, so a process kept shredded keys in memory forever and
the promise "a shred reaches every process within cache_ttl" was void without a word. NaN slipped past the same
check (``nan <= 0`` is false); a bool or a numeric string was converted silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fieldcrypt import ConfigurationError, FakeClock, Keyring, RotationPolicy
from fieldcrypt.keys.cache import TtlCache
from fieldcrypt.keys.source import MAX_CACHE_TTL, MAX_RETRIES

NOT_A_DURATION = [math.inf, -math.inf, math.nan, -1, -0.5, 0, True, False, "300", None, [300]]


@pytest.mark.parametrize("ttl", NOT_A_DURATION, ids=repr)
def test_cache_ttl_that_voids_the_shred_bound_is_refused(store_url: str, kek_uri: str, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="cache_ttl"):
        Keyring(store_url, kek_uri, cache_ttl=ttl)  # type: ignore[arg-type]


def test_cache_ttl_limit_is_a_day(store_url: str, kek_uri: str) -> None:
    with Keyring(store_url, kek_uri, cache_ttl=MAX_CACHE_TTL) as kr:
        assert kr.cache_ttl == 86_400.0
    with Keyring(store_url, kek_uri, cache_ttl=1) as kr:  # an int is a number of seconds too
        assert kr.cache_ttl == 1.0 and isinstance(kr.cache_ttl, float)
    with pytest.raises(ConfigurationError, match=r"at most 86400"):
        Keyring(store_url, kek_uri, cache_ttl=MAX_CACHE_TTL + 1)
    with pytest.raises(ConfigurationError, match="cache_ttl"):
        Keyring(store_url, kek_uri, cache_ttl=10**400)  # an int too large for a float: no OverflowError


def test_refused_before_anything_is_opened(tmp_path: Path, kek_uri: str) -> None:
    # the bad setting is reported, not the store that does not exist (nothing is opened or started first)
    with pytest.raises(ConfigurationError, match="cache_ttl"):
        Keyring(f"sqlite:///{tmp_path / 'absent.db'}", kek_uri, cache_ttl=math.inf)


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "10"], ids=repr)
def test_cache_size_must_be_a_positive_int(store_url: str, kek_uri: str, size: object) -> None:
    with pytest.raises(ConfigurationError, match="cache_size"):
        Keyring(store_url, kek_uri, cache_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("backoff", [math.inf, math.nan, -0.1, True, "0.05", 61], ids=repr)
def test_backoff_is_bounded(store_url: str, kek_uri: str, backoff: object) -> None:
    # inf made time.sleep raise OverflowError, nan ValueError, a negative value ValueError: raw, not fieldcrypt's
    with pytest.raises(ConfigurationError, match="backoff"):
        Keyring(store_url, kek_uri, backoff=backoff)  # type: ignore[arg-type]
    with Keyring(store_url, kek_uri, backoff=0) as kr:
        assert kr is not None


@pytest.mark.parametrize("retries", [-1, MAX_RETRIES + 1, 10**6, True, 1.0], ids=repr)
def test_retries_are_bounded(store_url: str, kek_uri: str, retries: object) -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        Keyring(store_url, kek_uri, retries=retries)  # type: ignore[arg-type]


@pytest.mark.parametrize("age", [math.inf, math.nan, 0, -1, True], ids=repr)
def test_rotation_max_age_is_finite(age: object) -> None:
    # inf meant "never by age" without saying so; None says it
    with pytest.raises(ConfigurationError, match="max_age"):
        RotationPolicy(max_age=age)  # type: ignore[arg-type]
    assert RotationPolicy(max_age=None).max_age is None


@pytest.mark.parametrize("ttl", [math.inf, math.nan, 0, -1, True], ids=repr)
def test_the_cache_itself_refuses_an_unbounded_ttl(ttl: object) -> None:
    with pytest.raises(ConfigurationError):
        TtlCache(10, ttl, FakeClock())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TtlCache(True, 60, FakeClock())


@pytest.mark.parametrize("age", [10**400, 1e308, 200 * 365.25 * 86400.0])
def test_a_rotation_age_beyond_a_century_is_refused_not_an_overflow_later(age: object) -> None:
    """10**400 was accepted and every write then failed with a raw OverflowError; 1e308 meant 'never', which is
    spelled None."""
    with pytest.raises(ConfigurationError):
        RotationPolicy(max_age=age)  # type: ignore[arg-type]


def test_cache_ttl_cannot_be_set_after_construction(keyring) -> None:
    with pytest.raises(AttributeError):
        keyring.cache_ttl = float("inf")


def test_rotation_is_a_rotation_policy_fixed_at_construction(store_url: str, kek_uri: str) -> None:
    with pytest.raises(ConfigurationError):
        Keyring(store_url, kek_uri, rotation="never")  # type: ignore[arg-type]
    with Keyring(store_url, kek_uri) as kr, pytest.raises(AttributeError):
        kr.rotation = "nonsense"  # type: ignore[misc]
