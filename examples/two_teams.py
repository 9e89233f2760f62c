"""Two teams, one topic, one KEK per key domain: who reads which field is decided by which KEKs a team holds.

A clinic writes patient records to one topic. The producer encrypts each tagged field under the key domain its tag
maps to, and the key store records one KEK per domain:

    contact         email and phone (tags CONTACT, PHONE)       the support team holds this KEK
    contact/masked  their masked views (***@example.com)        the analytics team holds only this one
    health          the diagnosis (tag HEALTH)                  the payments team (insurance claims) holds this one

Each team's consumer reads the same records with its own keyring and prints what it can read: its fields in clear,
the masks, and "<denied>" for the rest (fieldcrypt.on.denied = placeholder), counted in stats.denied_by_field. Then
one patient is shredded (every domain, the masked views too) and each team reads again: that patient's tagged
fields are "<erased>" for everyone, the others read as before.

    python examples/two_teams.py [--records 4] [--state DIR]
    python examples/two_teams.py --aws-kms [--region eu-west-1]  # a new AWS KMS key per domain, deleted after 7 days
    python examples/two_teams.py --kek contact=URI --kek contact/masked=URI --kek health=URI   # KEKs you have

By default everything runs here: a real Kafka-protocol broker (Tansu) in its own process, confluent's in-process
schema registry, a SQLite key store and one local KEK file per domain in a temporary directory. Against a stack of
your own (`fieldcrypt dev up --env-file .fieldcrypt-dev.env`, docs/local-stack.md):

    source .fieldcrypt-dev.env && python examples/two_teams.py --from-env     # its broker and registry

--aws-kms needs Tink's AWS integration (`pip install 'tink[awskms]'`) and AWS credentials allowed kms:CreateKey,
kms:ScheduleKeyDeletion, kms:Encrypt and kms:Decrypt (docs/kms/aws.md: the permissions each team needs);
AWS_ENDPOINT_URL_KMS points boto3 at another KMS endpoint (tests/test_two_teams.py runs this file against moto's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import StringDeserializer, StringSerializer

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, create_topic

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Patient",
        "namespace": "example.clinic",
        "fields": [
            {"name": "patientId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "email", "type": "string", "confluent:tags": ["CONTACT"]},
            {"name": "phone", "type": "string", "confluent:tags": ["PHONE"]},
            {"name": "diagnosis", "type": "string", "confluent:tags": ["HEALTH"]},
            {"name": "visits", "type": "int"},
        ],
    }
)
#: the producers' and the consumers' configuration: which tags are encrypted, in which key domain, with which mask
CONF: dict[str, Any] = {
    "fieldcrypt.tags": ["CONTACT", "PHONE", "HEALTH"],
    "fieldcrypt.tag.domains": {"CONTACT": "contact", "PHONE": "contact", "HEALTH": "health"},
    "fieldcrypt.masks": {"CONTACT": "email", "PHONE": "phone"},  # their views go to the domain contact/masked
}
#: what a consumer reads for a value it holds no key of, and for one whose key was shredded
READING = {"fieldcrypt.on.denied": "placeholder", "fieldcrypt.on.erased": "placeholder"}
DOMAINS = ("contact", "contact/masked", "health")
#: each team and the key domains whose KEK it holds
TEAMS = {"support": ("contact",), "analytics": ("contact/masked",), "payments": ("health",)}
TAGGED = ("email", "phone", "diagnosis")
SHREDDED = "p-000"
REASON = "erasure request (two teams example)"
DIAGNOSES = ("J10.1 influenza", "E11.9 type 2 diabetes", "I10 hypertension", "M54.5 low back pain")


def patient(i: int) -> dict[str, Any]:
    return {
        "patientId": f"p-{i:03d}",
        "email": f"patient.{i}@mail{i % 2}.example",
        "phone": f"+49 30 5550-{1000 + i:04d}",
        "diagnosis": DIAGNOSES[i % len(DIAGNOSES)],
        "visits": i + 1,
    }


def local_keks(state: Path) -> dict[str, str]:
    """One local KEK file per key domain (`fieldcrypt kek create PATH`), reused if the state directory has it."""
    keks = {}
    for domain in DOMAINS:
        path = state / f"kek-{domain.replace('/', '-')}.json"
        keks[domain] = f"local-kek://{path}" if path.exists() else fieldcrypt.create_local_kek(path)
    return keks


def produce(bootstrap: str, topic: str, serializer: Any, records: list[dict[str, Any]]) -> None:
    create_topic(bootstrap, topic)  # one partition: the records are read back in the order sent
    producer = SerializingProducer(
        {"bootstrap.servers": bootstrap, "key.serializer": StringSerializer("utf_8"), "value.serializer": serializer}
    )
    for rec in records:
        producer.produce(topic, key=rec["patientId"], value=rec)
    producer.flush(30)
    producer.close()


def consume(bootstrap: str, topic: str, team: str, deserializer: Any, count: int) -> list[dict[str, Any]]:
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{team}-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    values: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    consumer.close()
    return values


def read_as_teams(
    bootstrap: str, topic: str, registry: Any, store: str, keks: dict[str, str], count: int
) -> dict[str, list[dict[str, Any]]]:
    """Each team reads the topic with a keyring holding only its own domains' KEKs (as its own process would), and
    prints each record as it reads it, then its counters."""
    read = {}
    for team, domains in TEAMS.items():
        with fieldcrypt.Keyring(store, {d: keks[d] for d in domains}) as keyring:
            de = AvroDeserializer(registry, conf={**CONF, **READING}, keyring=keyring)
            read[team] = consume(bootstrap, topic, team, de, count)
            holds = ", ".join(domains)
            for rec in read[team]:
                print(f"{team:<10} {f'({holds})':<17} {json.dumps(rec, ensure_ascii=False)}")
            stats = de.stats
            short = {path.rsplit(".", 1)[-1]: n for path, n in stats.denied_by_field.items()}
            masked = {path.rsplit(".", 1)[-1]: n for path, n in stats.masked_by_field.items()}
            print(
                f"{team:<10} {stats.records} records: {stats.masked} masked {masked}, "
                f"{stats.denied} denied {short}, {stats.erased} erased"
            )
    return read


def expected(team: str, sent: dict[str, Any], shredded: bool = False) -> dict[str, Any]:
    """What ``team`` may read of the record ``sent``: nothing more, nothing less."""
    if shredded:
        return {**sent, **dict.fromkeys(TAGGED, "<erased>")}
    if team == "support":
        return {**sent, "diagnosis": "<denied>"}
    if team == "analytics":
        return {
            **sent,
            "email": "***@" + sent["email"].rsplit("@", 1)[1],
            "phone": "**** " + sent["phone"][-4:],
            "diagnosis": "<denied>",
        }
    return {**sent, "email": "<denied>", "phone": "<denied>"}


def as_promised(read: dict[str, list[dict[str, Any]]], sent: list[dict[str, Any]], after_shred: bool) -> bool:
    return all(
        got == [expected(team, s, after_shred and s["patientId"] == SHREDDED) for s in sent]
        for team, got in read.items()
    )


def aws_keks(region: str | None) -> tuple[Any, list[str], dict[str, str]]:
    """One new AWS KMS key per key domain: the boto3 client, their key ids (to schedule their deletion), the KEKs."""
    import boto3

    kms = boto3.client("kms", region_name=region)
    created = {d: kms.create_key(Description=f"fieldcrypt two_teams KEK of {d}")["KeyMetadata"] for d in DOMAINS}
    return kms, [k["KeyId"] for k in created.values()], {d: f"aws-kms://{k['Arn']}" for d, k in created.items()}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=4, help="how many patients' records to produce (at least 2)")
    ap.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="a running broker (default: start one here)")
    ap.add_argument("--schema-registry", metavar="URL", help="URL of a Confluent-compatible registry")
    ap.add_argument(
        "--from-env",
        action="store_true",
        help="take the broker and registry from FIELDCRYPT_BOOTSTRAP_SERVERS and FIELDCRYPT_SCHEMA_REGISTRY (the key "
        "store and the KEKs stay this run's own: one KEK per key domain)",
    )
    ap.add_argument("--state", metavar="DIR", help="directory for the key store and KEK files (default: a temp dir)")
    keks = ap.add_mutually_exclusive_group()
    keks.add_argument("--aws-kms", action="store_true", help="one new AWS KMS key per key domain as its KEK")
    keks.add_argument(
        "--kek",
        metavar="DOMAIN=URI",
        action="append",
        help=f"the KEK of a key domain, for each of {', '.join(DOMAINS)} (repeat; instead of local KEK files)",
    )
    ap.add_argument("--region", help="for --aws-kms (default: boto3's, e.g. $AWS_REGION)")
    args = ap.parse_args()
    if args.records < 2:
        ap.error(f"--records: at least 2 ({SHREDDED} is shredded, the others stay readable)")
    if args.from_env:
        args.bootstrap_servers = args.bootstrap_servers or os.environ.get("FIELDCRYPT_BOOTSTRAP_SERVERS")
        args.schema_registry = args.schema_registry or os.environ.get("FIELDCRYPT_SCHEMA_REGISTRY")
        if not args.bootstrap_servers:
            ap.error("--from-env: FIELDCRYPT_BOOTSTRAP_SERVERS not set (source the file of `fieldcrypt dev up`)")
    if args.kek:
        given = dict(k.partition("=")[::2] for k in args.kek)
        if set(given) != set(DOMAINS) or not all(given.values()):
            ap.error(f"--kek: give DOMAIN=URI for each of {', '.join(DOMAINS)}")
        args.kek = given
    return args


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` mid-run unwinds as Ctrl-C does: the broker (its own session) is stopped


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _stop)
    # a team without a domain's KEK is the design here, not a fault: its values are counted in stats.denied_by_field,
    # so fieldcrypt's warning per key it may not unwrap is not shown
    logging.getLogger("fieldcrypt").setLevel(logging.ERROR)
    with ExitStack() as stack:
        state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="fieldcrypt-two-teams-"))
        if not args.state:
            stack.callback(shutil.rmtree, state, ignore_errors=True)
        state = state.absolute()
        state.mkdir(parents=True, exist_ok=True)
        store = fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}")  # `fieldcrypt keys init --store URL`
        if args.aws_kms:
            kms, key_ids, keks = aws_keks(args.region)
            for key_id in key_ids:  # by key id: moto 5.2 fails ScheduleKeyDeletion given an ARN (AWS accepts both)
                stack.callback(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        else:
            keks = args.kek or local_keks(state)

        registry_url = args.schema_registry
        registry = SchemaRegistryClient.new_client({"url": registry_url or f"mock://two-teams-{uuid.uuid4().hex}"})
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            bootstrap = stack.enter_context(Broker()).bootstrap_servers
        topic = f"patients-{uuid.uuid4().hex[:6]}"

        print(f"key store: {store}\nregistry:  {registry_url or 'in-process'}\nbroker:    {bootstrap}")
        print("\n== The key domains and their KEKs: one KEK per domain")
        for domain in DOMAINS:
            teams = [t for t, held in TEAMS.items() if domain in held]
            print(f"{domain:<15} {keks[domain]}   held by the producer and {', '.join(teams)}")

        sent = [patient(i) for i in range(args.records)]
        print(f"\n== 1. The producer (all three KEKs) writes {len(sent)} patients' records to {topic}")
        producer_keyring = stack.enter_context(fieldcrypt.Keyring(store, keks))
        produce(bootstrap, topic, AvroSerializer(registry, SCHEMA, conf=CONF, keyring=producer_keyring), sent)
        for rec in sent:
            print(json.dumps(rec, ensure_ascii=False))
        for d in producer_keyring.domains():  # what the key store recorded when each domain's first key was made
            print(f"the key store records: {d.domain} is wrapped by {d.primary}")

        print("\n== 2. Each team reads the topic with the KEKs it holds")
        before = read_as_teams(bootstrap, topic, registry, store, keks, len(sent))

        print(f'\n== 3. Shred {SHREDDED}: keyring.shred_person("{SHREDDED}", reason="{REASON}")')
        print(f"as `fieldcrypt keys shred --data-subject {SHREDDED} --reason ...` does: every domain, the views too")
        report = producer_keyring.shred_person(SHREDDED, reason=REASON)
        print(report)
        for r in sorted(report.destroyed, key=lambda r: r.domain):
            print(f"  {r.key_id:#010x}  {r.domain}")

        print(f"\n== 4. Each team reads again: {SHREDDED}'s tagged fields are erased for everyone")
        after = read_as_teams(bootstrap, topic, registry, store, keks, len(sent))

        ok = as_promised(before, sent, after_shred=False) and as_promised(after, sent, after_shred=True)
        print("\nOK" if ok else "\nMISMATCH", flush=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or kill mid-run: everything started is stopped by now
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except fieldcrypt.FieldcryptError as exc:  # a broker, key store or KEK problem: one line, not a traceback
        print(f"two_teams.py: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
