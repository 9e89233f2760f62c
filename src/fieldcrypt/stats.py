"""The serdes' counters where they were before observability got its folder (``fieldcrypt.stats``), kept so code
importing them, and ``SerdeStats`` pickled by an earlier build, keep working: a face of
:mod:`fieldcrypt.observe.stats`. New code uses ``fieldcrypt.SerdeStats`` and ``fieldcrypt.metrics.LATENCY_BUCKETS``."""

from fieldcrypt.observe.stats import LATENCY_BUCKETS, SerdeStats

__all__ = ["LATENCY_BUCKETS", "SerdeStats"]
