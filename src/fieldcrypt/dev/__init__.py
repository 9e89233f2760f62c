"""A local stack for development, demos and tests: a real Kafka-protocol broker, a schema registry, a key store
and a local KEK, all on this machine (docs/local-stack.md walks through them).

    fieldcrypt.dev.Broker            Tansu, a Kafka-protocol broker, in a child process (the 'broker' extra)
    fieldcrypt.dev.create_topic      create a topic with an explicit partition count (Tansu auto-creates 4)
    fieldcrypt.dev.CONSUMER_DEFAULTS group-consumer settings that make Tansu's group joins take ~1 s, not ~23 s
    fieldcrypt.dev.RegistryServer    a Confluent-compatible development registry over HTTP, in memory
    fieldcrypt.dev.LocalStack        all of them together, with a key store and a local KEK in a state directory
    fieldcrypt.dev.local_keys        just the key store and local KEK in a directory

The ``fieldcrypt dev up|broker|registry`` commands run them in the foreground and print the ``FIELDCRYPT_*``
environment variables that point the other ``fieldcrypt`` commands at them. Everything here is for development:
no authentication, no TLS, loopback addresses only, topics and schemas in memory.
"""

from __future__ import annotations

from fieldcrypt.dev.broker import CONSUMER_DEFAULTS, TANSU_PACKAGE, Broker, BrokerError, create_topic, find_tansu
from fieldcrypt.dev.registry import RegistryServer
from fieldcrypt.dev.stack import (
    ENV_BOOTSTRAP_SERVERS,
    ENV_KEK,
    ENV_SCHEMA_REGISTRY,
    ENV_STORE,
    KEK_FILE,
    STORE_FILE,
    LocalStack,
    local_keys,
)

__all__ = [
    "CONSUMER_DEFAULTS",
    "ENV_BOOTSTRAP_SERVERS",
    "ENV_KEK",
    "ENV_SCHEMA_REGISTRY",
    "ENV_STORE",
    "KEK_FILE",
    "STORE_FILE",
    "TANSU_PACKAGE",
    "Broker",
    "BrokerError",
    "LocalStack",
    "RegistryServer",
    "create_topic",
    "find_tansu",
    "local_keys",
]
