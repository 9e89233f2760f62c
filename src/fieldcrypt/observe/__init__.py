"""Observability: the counters every serde keeps (``stats.py``) and their optional Prometheus export
(``metrics.py``, public as ``fieldcrypt.metrics``)."""
