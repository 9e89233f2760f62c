"""The key lifecycle in one run: per-person keys, rotation, KEK rotation with rewrap, crypto-shredding of one person,
what consumers then read, and the audit trail. No broker needed: records are serialized and read back directly.

    python examples/key_lifecycle.py [--store sqlite:////tmp/keys.db | postgresql://...]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

SCHEMA = (Path(__file__).resolve().parent.parent / "schemas" / "customer_event.avsc").read_text()
CTX = SerializationContext("customer-events", MessageField.VALUE)


def event(person: str, n: int) -> dict[str, object]:
    return {
        "customerId": person,
        "email": f"{person}@example.com",
        "ssn": None,
        "fullName": f"{person.title()} #{n}",
        "purchaseAmount": 10.0 * n,
        "currency": "EUR",
        "items": n,
        "country": "DE",
        "timestamp": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="key store URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="fieldcrypt-lifecycle-"))
    store = fieldcrypt.create_key_store(args.store or f"sqlite:///{state / 'keys.db'}")  # `fieldcrypt keys init`
    kek_v1 = fieldcrypt.create_local_kek(state / "kek-v1.json")
    keyring = fieldcrypt.Keyring(store, kek_v1, actor="example", shred_log=state / "shred-log.jsonl")
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})

    ser = AvroSerializer(registry, SCHEMA, keyring=keyring)
    log = [ser(event(p, n), CTX) for n in range(2) for p in ("alice", "bob", "carol")]
    print(f"1. produced {len(log)} records for alice, bob, carol: one key per person")

    rotated = keyring.rotate("customer-events-value", "alice", reason="quarterly rotation")
    assert rotated is not None
    log.append(ser(event("alice", 2), CTX))
    print(f"2. rotated alice's key: version {rotated.version} now encrypts, version 1 still decrypts")

    kek_v2 = fieldcrypt.create_local_kek(state / "kek-v2.json")
    keyring = fieldcrypt.Keyring(store, [kek_v2, kek_v1], actor="example", shred_log=state / "shred-log.jsonl")
    count = keyring.rewrap(reason="KEK rotation")
    keyring = fieldcrypt.Keyring(store, kek_v2, actor="example", shred_log=state / "shred-log.jsonl")
    print(f"3. KEK rotated: {count} data keys rewrapped under kek-v2; kek-v1 can be destroyed; no Kafka data touched")

    report = keyring.shred_person("bob", reason="GDPR erasure request #1234")
    print(f"4. shredded bob: {report}")
    print(f"   shredding bob again: {keyring.shred_person('bob')}")

    reader = AvroDeserializer(registry, conf={"fieldcrypt.on.erased": "placeholder"}, keyring=keyring)
    print("5. what any consumer reads now (the log itself never changed):")
    for data in log:
        rec = reader(data, CTX)
        print(f"   {rec['customerId']:<6} email={rec['email']!s:<20} fullName={rec['fullName']}")
    print(f"   reader stats: {reader.stats}")

    print("6. audit log:")
    for entry in keyring.audit():
        who = f" person={entry.person}" if entry.person else ""
        print(f"   #{entry.seq} {entry.operation:<7} by {entry.actor}{who} keys={len(entry.key_ids)} {entry.reason}")
    keyring.close()


if __name__ == "__main__":
    main()
