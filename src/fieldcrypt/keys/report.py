"""What an admin operation did: a shred, per person (the evidence a key admin keeps for an erasure request), and a
rotation of a whole domain, per key (rotated, or skipped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fieldcrypt.keys.store import ShredRecord

__all__ = ["PersonShred", "Rotation", "RotationReport", "ShredReport", "SkippedRotation"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class PersonShred:
    """One data subject of a shred: the keys destroyed now, and how many an earlier shred already destroyed."""

    person: str = field(repr=False)
    key_ids: tuple[int, ...]
    previously_shredded: int = 0

    @property
    def outcome(self) -> str:
        """``erased`` (keys destroyed now), ``already erased`` (an earlier shred did it) or ``no key held``."""
        if self.key_ids:
            return "erased"
        return "already erased" if self.previously_shredded else "no key held"


@dataclass(frozen=True)
class ShredReport:
    """What a shred did (or, with ``dry_run``, would do). ``destroyed`` empty means it was a no-op.

    ``persons`` names every data subject of a person shred, each with its outcome. ``pending`` is True when the
    keys are gone from the store but a copy may remain for now in a file the store controls (SQLite's WAL, held by
    a reader): re-run the shred until it is False.
    """

    target: str
    destroyed: tuple[ShredRecord, ...]
    previously_shredded: int = 0
    persons: tuple[PersonShred, ...] = ()
    dry_run: bool = False
    pending: bool = False
    #: the sealed receipt (:class:`fieldcrypt.keys.evidence.Receipt`) of a shred that asked for one, else None
    receipt: Any = field(default=None, repr=False, compare=False)

    @property
    def noop(self) -> bool:
        return not self.destroyed

    def __str__(self) -> str:
        keys = _count(len(self.destroyed), "key")
        if self.dry_run:
            return f"{self.target}: would destroy {keys} (dry run, nothing destroyed)"
        if self.destroyed:
            text = f"{self.target}: {keys} destroyed"
        elif self.previously_shredded:
            text = f"{self.target}: nothing to do, already shredded ({_count(self.previously_shredded, 'key')} earlier)"
        else:
            text = f"{self.target}: nothing to do, no key held"
        if self.pending:
            text += (
                "; PENDING: a reader holds the key store's write-ahead log, so the destroyed wrapped keys may remain "
                "in it; re-run the shred (nothing more is destroyed) until it completes"
            )
        return text


@dataclass(frozen=True)
class Rotation:
    """One active key replaced by :meth:`fieldcrypt.Keyring.rotate_domain`: the key retired (``retired``, its id)
    and the new active key (``key_id``, ``version``) of (``domain``, ``person``; None: the domain-wide key), both
    by this call."""

    domain: str
    person: str | None = field(repr=False)
    retired: int
    key_id: int
    version: int


@dataclass(frozen=True)
class SkippedRotation:
    """An active key :meth:`fieldcrypt.Keyring.rotate_domain` listed but did not rotate, because it was no longer the
    active key of (``domain``, ``person``) when its turn came: ``why`` is ``"shredded"`` (the key was destroyed; no
    key was created for that person) or ``"rotated elsewhere"`` (another rotation retired it first; the new key is
    not this call's). ``key_id``: the key listed."""

    domain: str
    person: str | None = field(repr=False)
    key_id: int
    why: str


@dataclass(frozen=True)
class RotationReport:
    """What :meth:`fieldcrypt.Keyring.rotate_domain` did to a domain's active keys, in data-subject order (the
    domain-wide key first): each key it rotated, and each it skipped. Both empty: the domain had no active key."""

    domain: str
    rotated: tuple[Rotation, ...] = ()
    skipped: tuple[SkippedRotation, ...] = ()
