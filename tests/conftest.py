"""Fixtures shared by the whole suite: a fresh local KEK + SQLite key store, a registry, contexts."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import settings

import fieldcrypt
from fieldcrypt import Keyring

# CI replays the same generated examples every run, so a red build always reproduces; elsewhere every run
# draws new ones (and a failure prints the seed to replay it with --hypothesis-seed)
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"


def load_schema(name: str) -> str:
    return (SCHEMAS / name).read_text()


@pytest.fixture
def kek_uri(tmp_path: Path) -> str:
    return fieldcrypt.create_local_kek(tmp_path / "kek.json")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A new SQLite key store, created explicitly as users do (``fieldcrypt keys init``)."""
    return fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")


@pytest.fixture
def keyring(store_url: str, kek_uri: str) -> Iterator[Keyring]:
    with Keyring(store_url, kek_uri) as kr:
        yield kr


@pytest.fixture
def registry() -> SchemaRegistryClient:
    """confluent's in-process registry (``mock://``), a fresh one per test."""
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def value_ctx(topic: str = "orders") -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def customer(i: int = 1, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "customerId": f"cust-{i}",
        "email": f"person{i}@example.com",
        "ssn": f"{i:03d}-45-6789",
        "fullName": f"Person Number {i}",
        "purchaseAmount": 12.5 + i,
        "currency": "EUR",
        "items": i % 7,
        "country": "DE",
        "timestamp": 1_710_498_600_000 + i,
    }
    rec.update(over)
    return rec


def order(i: int = 1) -> dict[str, Any]:
    return {
        "orderId": f"o-{i}",
        "customer": {"name": f"Zoë Ångström {i}", "phone": None if i % 2 else f"+49 30 {i:06d}", "loyaltyTier": "gold"},
        "shipTo": {"street": f"Hauptstraße {i}", "city": "Berlin", "postcode": f"{10_000 + i}"},
        "previousAddresses": [
            {"street": f"Old Road {i}", "city": "Bonn", "postcode": "53111"},
            {"street": "", "city": "Köln", "postcode": "50667"},
        ],
        "contacts": {
            "work": {"email": f"w{i}@corp.example", "note": "n"},
            "home": {"email": f"h{i}@home.example", "note": ""},
        },
        "signature": bytes([i % 256]) * 8,
        "total": 99.5,
    }


def avsc(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(load_schema(name))
    return loaded


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """A real Tansu broker process on a free loopback port, shared by the session's broker tests."""
    from fieldcrypt._testing.broker import Broker

    with Broker() as b:
        yield b


@pytest.fixture(scope="session")
def http_registry() -> Iterator[Any]:
    """A Confluent-compatible registry over real HTTP (fieldcrypt._testing.registry), shared by the session."""
    from fieldcrypt._testing.registry import RegistryServer

    with RegistryServer() as server:
        yield server


def ids_of(keyring: Any, keys: Any, candidates: Any) -> list[str]:
    """The data-subject ids (among ``candidates``) that ``keys`` belong to: the key store names each by its keyed
    pseudonym in the key's domain, which ``keyring`` computes (docs/key-model.md#pseudonyms). A key of someone else
    is listed as its pseudonym."""
    found = []
    for k in keys:
        if k.person is None:
            continue
        names = {keyring._stored(k.domain, c, create=False): c for c in candidates}
        found.append(names.get(k.person, k.person))
    return sorted(found)
