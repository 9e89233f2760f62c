"""Support for fieldcrypt's own tests, demo and benchmarks. Not public API."""
