"""Prometheus export of the serdes' counters, public face of :mod:`fieldcrypt.observe.metrics`
(``pip install 'fieldcrypt[metrics]'``; docs/observability.md)."""

from fieldcrypt.observe.metrics import (
    StatsCollector,
    register_prometheus,
)

__all__ = [
    "StatsCollector",
    "register_prometheus",
]
