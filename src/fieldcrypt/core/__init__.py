"""The format-agnostic core: what to encrypt where (``plan.py``), the engine that runs a plan over a record
(``engine.py``), what every format's serde shares (``serde.py``), the format interface and registry (``format.py``),
and the quarantine of confluent-kafka's shared private API (``confluent.py``). Knows no schema format: formats
import the core, never the reverse (docs/architecture.md)."""
