"""fieldcrypt end to end, the whole promise in one run: the schema tags fields; a producer encrypts the tagged ones;
a consumer with keys reads plaintext, a consumer without keys reads ciphertext (the untagged fields stay readable);
one person is shredded, and the consumer with keys then reads that person's tagged values as erased while everyone
else's still decrypt. By default everything runs here: a real Kafka-protocol broker (Tansu) in its own process,
confluent's in-process schema registry, a SQLite key store and a local KEK in a temporary directory.

    python examples/end_to_end.py [--records 5] [--state DIR] [--topic NAME]

Keep the stack up afterwards, to try the fieldcrypt command on the demo's topics (it prints the commands; Ctrl-C
stops it):

    python examples/end_to_end.py --keep

Or run against a stack of your own, e.g. the one `fieldcrypt dev up --env-file .fieldcrypt-dev.env` starts in
another terminal (docs/local-stack.md):

    source .fieldcrypt-dev.env && python examples/end_to_end.py --from-env
    python examples/end_to_end.py --bootstrap-servers 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081 \
        --state DIR          # or --store URL --kek URI

The demo shreds cust-000 (in every key domain of the key store, as `fieldcrypt keys shred --data-subject cust-000`
does); the commands it prints with --keep shred cust-001.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, BrokerError, RegistryServer, create_topic
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer
from fieldcrypt.lint import lint_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA = (SCHEMAS / "customer_event.avsc").read_text()
JSON_SCHEMA = (SCHEMAS / "customer_event.schema.json").read_text()

#: what --from-env reads: the variables `fieldcrypt dev up` prints, which the fieldcrypt command reads too
ENV = {
    "bootstrap_servers": "FIELDCRYPT_BOOTSTRAP_SERVERS",
    "schema_registry": "FIELDCRYPT_SCHEMA_REGISTRY",
    "store": "FIELDCRYPT_STORE",
    "kek": "FIELDCRYPT_KEK",
}

#: the person the demo shreds; the `fieldcrypt keys shred` command it prints with --keep names another one
SHREDDED, SHRED_NEXT = "cust-000", "cust-001"
#: what a shredded value reads as with the deserializers' default fieldcrypt.on.erased: None, or the placeholder
#: (fieldcrypt.placeholder, default <erased>)
ERASED = (None, "<erased>")
REASON = "erasure request (demo)"
#: the columns of the records shown
SHOWN = ("customerId", "email", "ssn", "fullName", "purchaseAmount")
#: what a verdict of fieldcrypt.lint means for a tagged field
MEANING = {"encrypted": "encrypted", "data-subject": "per-person keys", "plaintext (declared)": "in clear on purpose"}


def event(i: int) -> dict[str, Any]:
    return {
        "customerId": f"cust-{i:03d}",
        "email": f"jane.doe{i}@example.com",
        "ssn": f"078-05-{1120 + i:04d}" if i % 2 == 0 else None,
        "fullName": ["Jane Doe", "Zoë Ångström", "李小龙"][i % 3],
        "purchaseAmount": round(19.99 * (i + 1), 2),
        "currency": "EUR",
        "items": i + 1,
        "country": "DE",
        "timestamp": 1_710_498_600_000 + i,
    }


def schema_fields(schema_str: str, schema_type: str) -> tuple[str, str, tuple[str, ...]]:
    """What the serializers do with each field, as `fieldcrypt schema lint` reports it: the tagged fields grouped by
    tag and verdict ("email, ssn (PII, encrypted); customerId (DATA_SUBJECT_ID, per-person keys)"), the fields in
    clear, and the names of the encrypted ones."""
    report = lint_schema(schema_str, schema_type)
    if report.refused:  # the serializer would refuse it too
        raise SystemExit("; ".join(f.message for f in report.findings if f.kind == "refused"))
    tagged: dict[tuple[tuple[str, ...], str], list[str]] = {}
    clear: list[str] = []
    for row in report.rows:
        name = row.path.rsplit(".", 1)[-1]  # a top-level field: example.shop.CustomerEvent.email, $.email
        if row.tags:
            tagged.setdefault((row.tags, row.verdict), []).append(name)
        else:
            clear.append(name)
    first = sorted(tagged, key=lambda group: group[1] != "encrypted")  # the encrypted fields first
    groups = "; ".join(f"{', '.join(tagged[g])} ({', '.join(g[0])}, {MEANING.get(g[1], g[1])})" for g in first)
    return groups, ", ".join(clear), tuple(p.rsplit(".", 1)[-1] for p in report.encrypted)


@dataclass
class Format:
    """One serialization format of the demo: its topic, fieldcrypt's serializer and deserializer (with the keyring),
    confluent's own deserializer (no keys), what its schema tags (:func:`schema_fields`), and what was read."""

    name: str
    topic: str
    serializer: Any
    deserializer: Any
    plain: Any
    fields: tuple[str, str, tuple[str, ...]]
    authorized: list[dict[str, Any]] = field(default_factory=list)  # read with keys
    blind: list[dict[str, Any]] = field(default_factory=list)  # read without keys
    again: list[dict[str, Any]] = field(default_factory=list)  # read with keys after the shred

    @property
    def label(self) -> str:
        return f"{self.name.split()[0].lower():<6}"  # "avro  ", "json  "

    def ciphertext(self, read: dict[str, Any], sent: dict[str, Any]) -> bool:
        """Every encrypted value differs from the one sent (a null stays null), the other fields are as sent."""
        encrypted = self.fields[2]
        return all((read[k] != v or v is None) if k in encrypted else read[k] == v for k, v in sent.items())

    def erased(self, read: dict[str, Any], sent: dict[str, Any]) -> bool:
        """Every encrypted value reads as erased (a null stays null), the other fields as sent."""
        encrypted = self.fields[2]
        return all(read[k] in ERASED if k in encrypted else read[k] == v for k, v in sent.items())

    def counts(self, sent: list[dict[str, Any]]) -> tuple[int, int, int, int]:
        """Records decrypted, in ciphertext without keys, erased after the shred, and decrypted after it."""
        after = list(zip(self.again, sent, strict=False))
        return (
            sum(a == s for a, s in zip(self.authorized, sent, strict=False)),
            sum(self.ciphertext(b, s) for b, s in zip(self.blind, sent, strict=False)),
            sum(s["customerId"] == SHREDDED and self.erased(a, s) for a, s in after),
            sum(s["customerId"] != SHREDDED and a == s for a, s in after),
        )

    def summary(self, sent: list[dict[str, Any]]) -> str:
        decrypted, ciphertext, erased, still = self.counts(sent)
        return (
            f"{len(sent)} produced, {decrypted} decrypted, {ciphertext} in ciphertext without keys; "
            f"after the shred: {erased} erased ({SHREDDED}), {still} decrypted"
        )

    def as_promised(self, sent: list[dict[str, Any]]) -> bool:
        n = len(sent)
        read = [len(self.authorized), len(self.blind), len(self.again)]
        return read == [n, n, n] and self.counts(sent) == (n, n, 1, n - 1)


def produce(bootstrap: str, fmt: Format, records: list[dict[str, Any]]) -> None:
    try:
        create_topic(bootstrap, fmt.topic)  # one partition: Tansu would auto-create four
    except BrokerError as exc:  # e.g. --topic names a topic an earlier run (or someone else) made with 4 partitions
        raise BrokerError(
            f"{exc}; the demo needs topics of one partition (it reads the records back in the order sent): pass "
            "another --topic NAME, or start a fresh stack (stop `fieldcrypt dev up` and run it again: its topics "
            "live in memory)"
        ) from None
    producer = SerializingProducer(
        {
            "bootstrap.servers": bootstrap,
            "key.serializer": StringSerializer("utf_8"),
            "value.serializer": fmt.serializer,
        }
    )
    for rec in records:
        producer.produce(fmt.topic, key=rec["customerId"], value=rec)
    producer.flush(30)
    producer.close()  # now: confluent-kafka 2.16 keeps the client alive as long as its serializers


def shred(keyring: fieldcrypt.Keyring) -> fieldcrypt.ShredReport:
    """The demo's erasure request, as `fieldcrypt keys shred --data-subject cust-000 --reason ...` makes it."""
    report = keyring.shred_person(SHREDDED, reason=REASON)
    for _ in range(20):  # a reader holds SQLite's write-ahead log: the same shred again (docs/erasure-runbook.md)
        if not report.pending:
            break
        time.sleep(0.1)
        report = keyring.shred_person(SHREDDED, reason=REASON)
    return report


def consume(bootstrap: str, topic: str, deserializer: Any, count: int) -> list[Any]:
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": deserializer,
            **CONSUMER_DEFAULTS,
        }
    )
    consumer.subscribe([topic])
    values: list[Any] = []
    deadline = time.monotonic() + 60
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    consumer.close()
    return values


def shorten(value: Any) -> Any:
    """A ciphertext, shortened for the screen (a value in clear is never this long here)."""
    return f"{value[:12]}…" if isinstance(value, str) and len(value) > 24 else value


def show(rows: list[dict[str, Any]], label: str = "", short: bool = False) -> None:
    for row in rows:
        shown = {k: shorten(row[k]) if short else row[k] for k in SHOWN}
        print(f"{label}{json.dumps(shown, ensure_ascii=False)}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--records", type=int, default=5, help="how many customers' events to produce per format (at least 2)"
    )
    ap.add_argument(
        "--topic",
        metavar="NAME",
        help="write the Avro events to NAME and the JSON Schema ones to NAME-json "
        "(default: customer-events-<random>-avro and -json)",
    )
    ap.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="a running broker (default: start one here)")
    ap.add_argument("--schema-registry", metavar="URL", help="URL of a Confluent-compatible registry")
    ap.add_argument("--state", metavar="DIR", help="directory for the KEK file and key store (default: a temp dir)")
    ap.add_argument("--store", metavar="URL", help="an existing key store (with --kek; instead of --state)")
    ap.add_argument("--kek", metavar="URI", help="the KEK of --store (several: separated by commas)")
    ap.add_argument(
        "--from-env",
        action="store_true",
        help="take the broker, registry, key store and KEK from " + ", ".join(ENV.values()) + " (flags win)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="after the run, keep the broker, registry, key store and KEK up and print the fieldcrypt commands to "
        "try on the demo's topics; Ctrl-C stops them",
    )
    args = ap.parse_args()
    if args.records < 2:
        ap.error(f"--records: at least 2 ({SHREDDED} is shredded, the others stay readable)")
    if args.from_env:
        for dest, var in ENV.items():
            if getattr(args, dest) is None and os.environ.get(var):
                setattr(args, dest, os.environ[var])
        missing = [var for dest, var in ENV.items() if getattr(args, dest) is None]
        if missing:
            ap.error(f"--from-env: {', '.join(missing)} not set (source the file of `fieldcrypt dev up --env-file`)")
    if (args.store is None) != (args.kek is None):
        ap.error("--store and --kek go together")
    if args.store is not None and args.state is not None:
        ap.error("give --state or --store/--kek, not both")
    return args


def open_keyring(args: argparse.Namespace) -> tuple[fieldcrypt.Keyring, Path | None]:
    """The demo's keyring, and the temporary directory holding its key store and KEK (None: kept, --state)."""
    if args.store is not None:  # someone else's key store and KEK (`fieldcrypt dev up` made them)
        return fieldcrypt.Keyring(args.store, [k.strip() for k in args.kek.split(",") if k.strip()]), None
    temporary = None if args.state else Path(tempfile.mkdtemp(prefix="fieldcrypt-demo-"))
    state = Path(args.state or str(temporary)).absolute()
    state.mkdir(parents=True, exist_ok=True)
    kek_file = state / "kek.json"
    # Creating a KEK is an explicit act: a Keyring never creates one behind your back.
    kek_uri = f"local-kek://{kek_file}" if kek_file.exists() else fieldcrypt.create_local_kek(kek_file)
    # So is creating the key store (`fieldcrypt keys init --store URL`): opening a missing store is an error, never a
    # new empty one. create_key_store is idempotent: a --state directory from an earlier run keeps its keys.
    store_url = fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}")
    return fieldcrypt.Keyring(store_url, kek_uri), temporary


def fieldcrypt_command() -> str:
    """How to run the fieldcrypt command from a shell here: the script beside this Python, unless it is on PATH."""
    script = Path(sys.executable).with_name("fieldcrypt")
    on_path = shutil.which("fieldcrypt")
    if on_path and (not script.exists() or Path(on_path).resolve() == script.resolve()):
        return "fieldcrypt"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m fieldcrypt.cli"
    try:
        return shlex.quote(os.path.join(".", script.absolute().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(script))


def show_commands(env: dict[str, str], topics: dict[str, str]) -> None:
    """The fieldcrypt commands to try on the demo's topics, exactly as a shell takes them."""
    fc = fieldcrypt_command()
    avro, json_topic = topics["Avro"], topics["JSON Schema"]
    print("\n== Try the fieldcrypt command on these topics, in another shell:")
    for var, value in env.items():
        print(f"export {var}={shlex.quote(value)}")
    print(f"{fc} verify {avro} --by data-subject   # {SHREDDED}: erased (the demo shredded it)")
    print(f"{fc} verify {json_topic}")
    print(f"{fc} scan {avro}                  # options: docs/scan.md")
    print(f"{fc} keys list")
    print(f"{fc} keys shred --data-subject {SHRED_NEXT} --reason 'erasure request' --yes")
    print(f"{fc} verify {avro} --by data-subject   # {SHREDDED} and {SHRED_NEXT}: erased")


def wait_for_ctrl_c() -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the stack as Ctrl-C does, not leaving the broker behind
    signal.signal(signal.SIGINT, interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the stopping
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping", flush=True)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` mid-run unwinds as Ctrl-C does: the broker (its own session) is stopped


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _stop)
    keyring, temporary = open_keyring(args)
    with ExitStack() as stack:
        if temporary is not None and (args.keep or args.bootstrap_servers is None):
            # the run's own key store and KEK go with its broker (--state keeps them; with an outside broker they
            # stay, as the commands printed at the end use them)
            stack.callback(shutil.rmtree, temporary, ignore_errors=True)
        stack.callback(keyring.close)
        registry_url = args.schema_registry
        if registry_url is None and args.keep:
            # the fieldcrypt command runs in another process: it needs a registry over HTTP, not the in-process one
            registry_url = stack.enter_context(RegistryServer()).url
        registry = SchemaRegistryClient.new_client({"url": registry_url or f"mock://demo-{uuid.uuid4().hex}"})
        bootstrap = args.bootstrap_servers
        broker_name = bootstrap
        if bootstrap is None:
            broker = stack.enter_context(Broker())
            bootstrap, broker_name = broker.bootstrap_servers, f"Tansu at {broker.bootstrap_servers}"
        base = f"customer-events-{uuid.uuid4().hex[:6]}"
        formats = [
            Format(
                "Avro",
                args.topic or f"{base}-avro",
                AvroSerializer(registry, SCHEMA, keyring=keyring),
                AvroDeserializer(registry, keyring=keyring),
                PlainAvroDeserializer(registry),
                schema_fields(SCHEMA, "AVRO"),
            ),
            Format(
                "JSON Schema",
                f"{args.topic}-json" if args.topic else f"{base}-json",
                JSONSerializer(JSON_SCHEMA, registry, keyring=keyring),
                JSONDeserializer(None, schema_registry_client=registry, keyring=keyring),
                PlainJSONDeserializer(None, schema_registry_client=registry),
                schema_fields(JSON_SCHEMA, "JSON"),
            ),
        ]
        topics = {f.name: f.topic for f in formats}

        print(f"key store: {keyring.store.url}\nKEK:       {keyring.kek.uri}")
        print(f"registry:  {registry_url or 'in-process'}\nbroker:    {broker_name}")

        print("\n== The schema: schemas/customer_event.avsc and .schema.json, as `fieldcrypt schema lint` reads them")
        same = formats[0].fields[:2] == formats[1].fields[:2]
        for f in formats[:1] if same else formats:
            prefix = "" if same else f"{f.name}: "
            print(f"{prefix}tagged fields: {f.fields[0]}\n{prefix}in clear:      {f.fields[1]}")

        sent = [event(i) for i in range(args.records)]
        print(f"\n== 1. A producer writes {len(sent)} customers' events, the same in each format")
        print("topics: " + ", ".join(f"{f.topic} ({f.name})" for f in formats))
        for f in formats:
            produce(bootstrap, f, sent)
        show(sent)

        print("\n== 2. A consumer with keys (fieldcrypt's deserializers and the keyring) reads plaintext")
        for f in formats:
            f.authorized = consume(bootstrap, f.topic, f.deserializer, len(sent))
            show(f.authorized, f.label)

        print("\n== 3. A consumer without keys (confluent's own deserializers) reads the tagged fields in ciphertext")
        print("(shortened here), the other fields as sent")
        for f in formats:
            f.blind = consume(bootstrap, f.topic, f.plain, len(sent))
            show(f.blind, f.label, short=True)

        keys = len(keyring.keys())
        print(f'\n== 4. Shred {SHREDDED}: keyring.shred_person("{SHREDDED}", reason="{REASON}"),')
        print(f"as `fieldcrypt keys shred --data-subject {SHREDDED} --reason ...` does")
        report = shred(keyring)
        print(f"{report} (the key store held {keys}: one per person and topic)")
        for r in sorted(report.destroyed, key=lambda r: r.domain):
            print(f"  {r.key_id:#010x}  {r.domain}")

        print(f"\n== 5. The consumer with keys reads again: {SHREDDED}'s tagged values are erased, the others decrypt")
        for f in formats:
            f.again = consume(bootstrap, f.topic, f.deserializer, len(sent))
            show(f.again, f.label)

        print()
        for f in formats:
            print(f"{f.name}: {f.summary(sent)}")
        ok = all(f.as_promised(sent) for f in formats)
        print("OK" if ok else "MISMATCH", flush=True)
        env = {
            ENV["bootstrap_servers"]: bootstrap,
            ENV["schema_registry"]: registry_url or "",
            ENV["store"]: keyring.store.url,
            ENV["kek"]: ",".join(k.uri for k in keyring.keks),
        }
        keyring.close()
        if registry_url is not None and (args.keep or args.bootstrap_servers is not None):
            show_commands(env, topics)
        if args.keep:
            print("\nThe broker, registry, key store and KEK stay up until Ctrl-C.", flush=True)
            wait_for_ctrl_c()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or kill mid-run: everything started is stopped by now
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    # a broker, topic, key store or KEK problem: one line saying what to do, not a traceback
    except fieldcrypt.FieldcryptError as exc:
        print(f"end_to_end.py: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
