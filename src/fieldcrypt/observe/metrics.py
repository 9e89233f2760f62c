"""Prometheus export of the serdes' counters (optional: ``pip install 'fieldcrypt[metrics]'``).

    from fieldcrypt.metrics import register_prometheus

    register_prometheus(serializer, deserializer)                      # the default registry
    register_prometheus(orders=serializer, payments=other, registry=my_registry, prefix="shop_fieldcrypt")

A custom collector reads each serde's :class:`fieldcrypt.SerdeStats` when Prometheus scrapes (a consistent snapshot
per serde), so the hot path pays nothing for it. This is the only module that imports ``prometheus_client``, and
only when a collector is made; fieldcrypt itself does not depend on it. The metrics are listed in
docs/observability.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fieldcrypt.errors import ConfigurationError
from fieldcrypt.observe.stats import LATENCY_BUCKETS, SerdeStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["LATENCY_BUCKETS", "StatsCollector", "register_prometheus"]

_LABELS = ("serde", "role")


def _core() -> Any:
    try:
        from prometheus_client import core
    except ImportError:  # pragma: no cover - the test environment has the extra
        raise ConfigurationError(
            "fieldcrypt.metrics needs prometheus-client: did you forget to install `fieldcrypt[metrics]`?"
        ) from None
    return core


def _stats_of(source: Any) -> SerdeStats:
    stats = source if isinstance(source, SerdeStats) else getattr(source, "stats", None)
    if not isinstance(stats, SerdeStats):
        raise ConfigurationError(
            f"expected a fieldcrypt serializer or deserializer (or its .stats), got {type(source).__name__}"
        )
    return stats


class StatsCollector:
    """A Prometheus collector over named :class:`SerdeStats`; one sample set per serde, labelled ``serde`` (its
    name) and ``role`` (serializer or deserializer). Register it once per registry and prefix; :meth:`add` more
    serdes to it later."""

    def __init__(self, prefix: str = "fieldcrypt") -> None:
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
            raise ConfigurationError("prefix must be a metric name prefix such as fieldcrypt (letters, digits, _)")
        self._core = _core()
        self.prefix = prefix
        self._sources: dict[str, SerdeStats] = {}

    def add(self, source: Any, name: str | None = None) -> str:
        """Export a serde (or a ``SerdeStats``) under ``name`` (default: its class name, numbered when taken);
        returns the name used."""
        stats = _stats_of(source)
        if name is None:
            base = type(source).__name__ if not isinstance(source, SerdeStats) else (stats.role or "stats")
            name, n = base, 1
            while name in self._sources:
                n += 1
                name = f"{base}-{n}"
        elif not isinstance(name, str) or not name:
            raise ConfigurationError("a serde's metrics name must be a non-empty string")
        elif name in self._sources:
            raise ConfigurationError(f"the name {name!r} is already exported by this collector")
        self._sources[name] = stats
        return name

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples (so registering does not read the stats)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        by_name: dict[str, Any] = {f.name: f for f in families}

        def counter(metric: str, labels: list[str], value: float) -> None:
            by_name[f"{self.prefix}_{metric}"].add_metric(labels, value)

        for name, stats in list(self._sources.items()):
            s = stats.snapshot()
            labels = [name, s.role]
            counter("records", labels, s.records)
            counter("records_tagged", labels, s.records_tagged)
            for error, n in sorted(s.errors_by_type.items()):
                counter("errors", [*labels, error], n)
            counter("values_encrypted", labels, s.values_encrypted)
            counter("values_decrypted", labels, s.values_decrypted)
            counter("values_erased", labels, s.erased)
            counter("values_denied", labels, s.denied)
            for path, n in sorted(s.plaintext_by_field.items()):
                counter("values_plaintext", [*labels, path], n)
            for path, n in sorted(s.untagged_ciphertext_by_field.items()):
                counter("values_untagged_ciphertext", [*labels, path], n)
            for path, n in sorted(s.masked_by_field.items()):
                counter("values_masked", [*labels, path], n)
            counter("key_cache_hits", labels, s.key_cache_hits)
            counter("key_cache_misses", labels, s.key_cache_misses)
            counter("key_store_failures", labels, s.key_store_failures)
            buckets, total = [], 0
            for bound, n in zip([*map(repr, LATENCY_BUCKETS), "+Inf"], s.key_store_latency, strict=True):
                total += n
                buckets.append((bound, float(total)))
            by_name[f"{self.prefix}_key_store_seconds"].add_metric(labels, buckets, s.key_store_seconds)
            by_name[f"{self.prefix}_key_store_max_seconds"].add_metric(labels, s.key_store_max_seconds)
        return iter(families)

    def _families(self) -> list[Metric]:
        core, p, labels = self._core, self.prefix, list(_LABELS)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Metric:
            return core.CounterMetricFamily(f"{p}_{name}", doc, labels=[*labels, *extra])  # type: ignore[no-any-return]

        return [
            counter("records", "Records serialized or deserialized (returned)"),
            counter("records_tagged", "Of those, records whose schema has tagged fields"),
            counter("errors", "Records refused (the call raised), by exception class", ("error",)),
            counter("values_encrypted", "Tagged values encrypted (serializers)"),
            counter("values_decrypted", "Tagged values decrypted (deserializers)"),
            counter("values_erased", "Values whose key was shredded, returned as fieldcrypt.on.erased says"),
            counter("values_denied", "Values without access to their key, returned as fieldcrypt.on.denied says"),
            counter("values_plaintext", "Tagged values read as plaintext (fieldcrypt.on.plaintext=accept)", ("field",)),
            counter(
                "values_untagged_ciphertext",
                "Ciphertexts in fields the schema does not tag, read as they are (fieldcrypt.on.untagged.ciphertext)",
                ("field",),
            ),
            counter(
                "values_masked",
                "Values without access to their key read as their masked view (fieldcrypt.masks)",
                ("field",),
            ),
            counter("key_cache_hits", "Data-key lookups answered from the keyring's memory"),
            counter("key_cache_misses", "Data-key lookups that needed the key store"),
            counter("key_store_failures", "Key-store or KEK call attempts that failed as unavailable"),
            core.HistogramMetricFamily(
                f"{p}_key_store_seconds", "Key-store and KEK calls (every attempt) by duration", labels=labels
            ),
            core.GaugeMetricFamily(f"{p}_key_store_max_seconds", "The slowest key-store or KEK call", labels=labels),
        ]


def register_prometheus(
    *sources: Any, registry: CollectorRegistry | None = None, prefix: str = "fieldcrypt", **named: Any
) -> StatsCollector:
    """Export serdes (or their ``SerdeStats``) to a Prometheus registry (default: prometheus_client's global one);
    keyword arguments name them (``orders=serializer``), positional ones are named after their class. Returns the
    collector (``registry.unregister(collector)`` removes it; ``collector.add(serde)`` exports one more)."""
    collector = StatsCollector(prefix)
    for source in sources:
        collector.add(source)
    for name, source in named.items():
        collector.add(source, name)
    if registry is None:
        registry = _core().REGISTRY
    elif not isinstance(registry, _core().CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client CollectorRegistry, got {type(registry).__name__}"
        )
    registry.register(collector)  # a collector by protocol: collect(), describe()
    return collector
