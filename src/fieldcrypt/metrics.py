"""Prometheus export of the serdes' counters, public face of :mod:`fieldcrypt.observe.metrics`
(``pip install 'fieldcrypt[metrics]'``; docs/observability.md)."""

from fieldcrypt.observe.metrics import (
    LATENCY_BUCKETS,
    StatsCollector,
    register_prometheus,
)

__all__ = [
    "LATENCY_BUCKETS",
    "StatsCollector",
    "register_prometheus",
]
