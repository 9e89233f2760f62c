"""fieldcrypt end to end: a producer encrypts tagged fields, an authorized consumer decrypts them, and a consumer
without keys sees ciphertext. By default everything runs here: a real Kafka-protocol broker (Tansu) in its own
process, confluent's in-process schema registry, a SQLite key store and a local KEK in a temporary directory.

    python examples/end_to_end.py [--records 5] [--state DIR]

Keep the stack up afterwards, to try the fieldcrypt command on the demo's topics (it prints the commands; Ctrl-C
stops it):

    python examples/end_to_end.py --keep

Or run against a stack of your own, e.g. the one `fieldcrypt dev up --env-file .fieldcrypt-dev.env` starts in
another terminal (docs/local-stack.md):

    source .fieldcrypt-dev.env && python examples/end_to_end.py --from-env
    python examples/end_to_end.py --bootstrap-servers 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081 \
        --state DIR          # or --store URL --kek URI
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
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer as PlainAvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as PlainJSONDeserializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.dev import CONSUMER_DEFAULTS, Broker, RegistryServer, create_topic
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer

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


def show(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {title}")
    for row in rows:
        print(
            json.dumps(
                {k: row[k] for k in ("customerId", "email", "ssn", "fullName", "purchaseAmount")}, ensure_ascii=False
            )
        )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5, help="how many records to produce per format")
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
    state = Path(args.state or temporary).absolute()
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
    print(f"{fc} verify {avro} --by data-subject")
    print(f"{fc} verify {json_topic} --format json")
    print(f"{fc} scan {avro}                  # options: docs/scan.md")
    print(f"{fc} keys list")
    print(f"{fc} keys shred --data-subject cust-001 --reason 'erasure request' --yes")
    print(f"{fc} verify {avro} --by data-subject   # cust-001: erased")


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
        topic = f"customer-events-{uuid.uuid4().hex[:6]}"

        print(f"key store: {keyring.store.url}\nKEK:       {keyring.kek.uri}")
        print(f"registry:  {registry_url or 'in-process'}\nbroker:    {broker_name}")
        formats = [
            (
                "Avro",
                AvroSerializer(registry, SCHEMA, keyring=keyring),
                AvroDeserializer(registry, keyring=keyring),
                PlainAvroDeserializer(registry),
            ),
            (
                "JSON Schema",
                JSONSerializer(JSON_SCHEMA, registry, keyring=keyring),
                JSONDeserializer(None, schema_registry_client=registry, keyring=keyring),
                PlainJSONDeserializer(None, schema_registry_client=registry),
            ),
        ]
        ok = True
        sent = [event(i) for i in range(args.records)]
        topics: dict[str, str] = {}
        for name, serializer, deserializer, plain in formats:
            fmt_topic = topics[name] = f"{topic}-{name.split()[0].lower()}"
            create_topic(bootstrap, fmt_topic)  # one partition: Tansu would auto-create four
            producer = SerializingProducer(
                {
                    "bootstrap.servers": bootstrap,
                    "key.serializer": StringSerializer("utf_8"),
                    "value.serializer": serializer,
                }
            )
            for rec in sent:
                producer.produce(fmt_topic, key=rec["customerId"], value=rec)
            producer.flush(30)
            producer.close()  # now: confluent-kafka 2.16 keeps the client alive as long as its serializers
            print(f"\n######## {name}: topic {fmt_topic}")
            show("producer sent", sent)
            authorized = consume(bootstrap, fmt_topic, deserializer, len(sent))
            show(f"authorized consumer read (fieldcrypt {type(deserializer).__name__} with the keyring)", authorized)
            blind = consume(bootstrap, fmt_topic, plain, len(sent))
            show(f"consumer without keys read (confluent's plain {type(plain).__name__})", blind)
            good = (
                authorized == sent
                and len(blind) == len(sent)
                and all(b["email"] != s["email"] for b, s in zip(blind, sent, strict=True))
            )
            print(f"{name}: {len(sent)} produced, {len(authorized)} decrypted, {len(blind)} read without keys")
            ok = ok and good

        keys = keyring.keys()
        print(f"\n{len(keys)} data keys (one per person and subject) in {keyring.store.url}")
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
