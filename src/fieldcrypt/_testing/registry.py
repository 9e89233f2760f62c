"""The test registry: :mod:`fieldcrypt.dev.registry` (public), re-exported under the name the tests import.
``fieldcrypt dev registry`` runs one in the foreground."""

from __future__ import annotations

from fieldcrypt.dev.registry import RegistryServer

__all__ = ["RegistryServer"]
