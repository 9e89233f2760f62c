"""The keyring's public names where they were before the keys were split by role (``fieldcrypt.keyring``), kept so
code importing them keeps working: a face of :mod:`fieldcrypt.keys.keyring`. New code imports them from
``fieldcrypt`` (``fieldcrypt.Keyring``, ``fieldcrypt.RotationPolicy``, ...)."""

from fieldcrypt.keys.keyring import (
    KeyMeter,
    Keyring,
    PersonShred,
    Rotation,
    RotationPolicy,
    RotationReport,
    ShredReport,
    SkippedRotation,
)

__all__ = [
    "KeyMeter",
    "Keyring",
    "PersonShred",
    "Rotation",
    "RotationPolicy",
    "RotationReport",
    "ShredReport",
    "SkippedRotation",
]
