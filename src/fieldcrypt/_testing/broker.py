"""The test broker: :mod:`fieldcrypt.dev.broker` (public), re-exported under the name the tests import."""

from __future__ import annotations

from fieldcrypt.dev.broker import CONSUMER_DEFAULTS, TANSU_PACKAGE, Broker, BrokerError, create_topic, find_tansu

__all__ = ["CONSUMER_DEFAULTS", "TANSU_PACKAGE", "Broker", "BrokerError", "create_topic", "find_tansu"]
