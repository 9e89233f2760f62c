"""``fieldcrypt verify`` (and what it shares with ``scan``: the topic reader, the registry client, the settings) against
a real broker and registry: exact counts, bad records with their offsets, exit codes; a missing topic, a broker or
registry that does not answer, librdkafka properties and registry settings reaching the clients."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import customer, load_schema
from test_scan import MixedTopic, assert_nothing_planted, build_mixed_topic, run

import fieldcrypt
from fieldcrypt import Keyring
from fieldcrypt.avro import AvroSerializer
from fieldcrypt.cli import main
from fieldcrypt.keys.kek import Kek


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's own settings may leak into these tests."""
    for name in (
        "FIELDCRYPT_CONFIG",
        "FIELDCRYPT_STORE",
        "FIELDCRYPT_KEK",
        "FIELDCRYPT_BOOTSTRAP_SERVERS",
        "FIELDCRYPT_KAFKA_CONFIG",
        "FIELDCRYPT_SCHEMA_REGISTRY",
        "FIELDCRYPT_REGISTRY_USER_INFO",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def mixed(broker: Any, http_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedTopic]:
    yield build_mixed_topic(broker, http_registry, tmp_path_factory.mktemp("mixed"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- counts, bad records, exit codes ------------------------------------------------------------------------------


@pytest.mark.broker
def test_verify_counts_and_lists_bad_records_and_goes_on(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "verify", *mixed.args("--json", *mixed.keys()))
    assert code == 7, err
    report = json.loads(out)
    assert report["records"] == 10 and report["tombstones"] == 1
    assert report["partitions"] == [{"partition": 0, "from": 0, "to": 10, "read": 10}]
    assert report["rows"] == [
        {
            "domain": f"{mixed.topic}-value",  # the key store's domain of the values' keys
            "key": "known",
            "records": 4,  # offsets 0, 1, 2 (shredded), 6 (JSON Schema)
            "readable": 8,
            "masked": 0,
            "erased": 2,
            "denied": 0,
            "tampered": 1,  # offset 7: its altered email names a key of this domain
            "plaintext": 0,
            "plaintext_fields": {},
        },
        {
            "domain": None,  # plaintext values have no key, so no domain
            "key": "none",
            "records": 1,  # offset 3 (plaintext history)
            "readable": 0,
            "masked": 0,
            "erased": 0,
            "denied": 0,
            "tampered": 0,
            "plaintext": 3,
            "plaintext_fields": {
                "test.scan.Address.street": 1,
                "test.scan.Signup.email": 1,
                "test.scan.Signup.phone": 1,
            },
        },
    ]
    bad = report["bad_records"]
    assert [(b["offset"], b["reason"]) for b in bad["first"]] == [
        (4, "not-framed"),
        (5, "unknown-schema-id"),
        (7, "tampered"),
        (8, "not-framed"),
    ]
    assert bad["first"][2]["field"] == "test.scan.Signup.email" and bad["first"][2]["key_id"].startswith("0x")
    assert report["findings"] == {"plaintext": 3, "untagged_ciphertext": 0, "tampered": 1, "bad_records": 3}
    assert report["clean"] is False
    assert err == ""  # the tampered record is reported once, in the report: no log line on stderr
    assert_nothing_planted(out, err)


@pytest.mark.broker
def test_verify_human_output_and_data_subjects(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "verify", *mixed.args("--by", "data-subject", *mixed.keys()))
    assert code == 7 and err == ""
    assert "bad records: 4 (not-framed 2, tampered 1, unknown-schema-id 1)" in out
    assert "partition 0 offset 7: tampered: the ciphertext is invalid" in out
    assert "findings: 3 plaintext value(s) in tagged fields, 1 tampered record(s), 3 other bad record(s)" in out
    assert_nothing_planted(out, err)
    code, out, _ = run(capfd, "verify", *mixed.args("--by", "data-subject", "--json", *mixed.keys()))
    rows = {r["data-subject"]: r for r in json.loads(out)["rows"]}
    assert sorted(rows) == ["cust-0", "cust-1", "cust-2", "cust-3", "cust-6"]
    assert (rows["cust-2"]["readable"], rows["cust-2"]["erased"]) == (0, 2)
    assert (rows["cust-1"]["readable"], rows["cust-3"]["plaintext"]) == (3, 3)


@pytest.mark.broker
def test_verify_schema_type_is_a_check_not_a_requirement(mixed: MixedTopic, capfd) -> None:
    code, out, err = run(capfd, "verify", *mixed.args("--json", "--schema-type", "json", *mixed.keys()))
    assert code == 7 and "Traceback" not in out + err
    report = json.loads(out)
    assert report["bad_records"]["by_reason"]["format-mismatch"] == 5  # the Avro records: 0, 1, 2, 3, 7
    assert report["rows"][0]["records"] == 1  # the JSON Schema record (its values, all of one domain)
    # the old spelling still works for scripts (hidden from help); both given must agree
    code, old, _ = run(capfd, "verify", *mixed.args("--json", "--format", "json", *mixed.keys()))
    assert code == 7 and json.loads(old)["bad_records"]["by_reason"] == report["bad_records"]["by_reason"]
    code, _, err = run(capfd, "verify", *mixed.args("--schema-type", "avro", "--format", "json", *mixed.keys()))
    assert code == 2 and "disagree" in err
    # without it, each record is read in its own format from the registry: no format-mismatch
    code, out, _ = run(capfd, "verify", *mixed.args("--json", *mixed.keys()))
    assert "format-mismatch" not in json.loads(out)["bad_records"]["by_reason"]


def test_verify_help_says_the_format_comes_from_the_registry(capsys) -> None:
    assert main(["verify", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--schema-type {avro,json,protobuf}" in text and "is read from the registry by its schema id" in text
    assert "--format" not in text  # the old, confusable spelling is hidden


def _six_records_cust_1_erased(broker: Any, http_registry: Any, keyring: Keyring) -> str:
    """A new topic of 6 records of cust-0, cust-1 and cust-2 (two each, in one produce batch), cust-1 then shredded."""
    topic = f"verify-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    registry = SchemaRegistryClient({"url": http_registry.url})
    producer = SerializingProducer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "value.serializer": AvroSerializer(registry, load_schema("customer_event.avsc"), keyring=keyring),
        }
    )
    for i in range(6):
        producer.produce(topic, value=customer(i % 3))  # one batch: Tansu then reports a high watermark of 1
    producer.flush(30)
    keyring.shred_person("cust-1")
    return topic


@pytest.mark.broker
def test_verify_clean_topic_exits_0_and_reads_a_batched_produce_to_its_end(
    broker, http_registry, keyring: Keyring, store_url: str, kek_uri: str, capfd
) -> None:
    topic = _six_records_cust_1_erased(broker, http_registry, keyring)
    argv = [topic, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--json"]
    start = time.monotonic()
    code, out, err = run(capfd, "verify", *argv, "--store", store_url, "--kek", kek_uri, "--by", "data-subject")
    assert code == 0, err
    assert time.monotonic() - start < 10  # no waiting for the topic to go quiet
    report = json.loads(out)
    rows = {r["data-subject"]: r for r in report["rows"]}
    assert rows["cust-1"] == {
        "data-subject": "cust-1",
        "records": 2,
        "readable": 0,
        "erased": 6,
        "denied": 0,
        "plaintext": 0,
        "plaintext_fields": {},
    }
    assert rows["cust-0"]["readable"] == 6 and report["records"] == 6 and report["clean"] is True
    code, out, _ = run(capfd, "verify", *argv, "--store", store_url, "--kek", kek_uri, "--to-offset", "2")
    assert code == 0 and json.loads(out)["rows"][0]["records"] == 2


@pytest.mark.broker
def test_verify_one_data_subject_is_the_proof_of_their_erasure(
    broker, http_registry, keyring: Keyring, store_url: str, kek_uri: str, capfd
) -> None:
    topic = _six_records_cust_1_erased(broker, http_registry, keyring)
    argv = [topic, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--store", store_url,
            "--kek", kek_uri]  # fmt: skip
    code, out, err = run(capfd, "verify", *argv, "--data-subject", "cust-1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["data_subject"] == "cust-1" and [r["data-subject"] for r in report["rows"]] == ["cust-1"]
    assert (report["rows"][0]["erased"], report["rows"][0]["readable"]) == (6, 0)
    assert report["findings"]["readable_of_data_subject"] == 0 and report["records"] == 6
    # a person not erased: their readable values are the finding (exit 7), counted, never shown
    code, out, _ = run(capfd, "verify", *argv, "--data-subject", "cust-0")
    assert code == 7 and "6 value(s) of the data subject still readable" in out
    assert customer(0)["email"] not in out
    # nobody of that id in the topic: nothing of theirs readable
    code, out, _ = run(capfd, "verify", *argv, "--data-subject", "cust-9", "--json")
    assert code == 0 and json.loads(out)["rows"] == [
        {"data-subject": "cust-9", "records": 0, "readable": 0, "erased": 0, "denied": 0, "plaintext": 0,
         "plaintext_fields": {}}
    ]  # fmt: skip
    code, _, err = run(capfd, "verify", *argv, "--data-subject", "cust-1", "--by", "domain")
    assert code == 2 and "--data-subject" in err


# --- what is around: topic, broker, registry ----------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("command", ["verify", "scan"])
def test_missing_topic_is_exit_5_naming_it(broker, http_registry, store_url, kek_uri, capfd, command: str) -> None:
    name = f"mistyped-{uuid.uuid4().hex[:6]}"
    argv = [command, name, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url]
    code, out, err = run(capfd, *argv, "--store", store_url, "--kek", kek_uri)
    assert code == 5 and out == "" and err == f"fieldcrypt: topic {name!r} does not exist\n"


@pytest.mark.parametrize("command", ["verify", "scan"])
def test_broker_down_is_exit_4_within_the_timeout_and_quiet(
    store_url, kek_uri, capfd, command: str, http_registry
) -> None:
    argv = [command, "t", "-b", f"127.0.0.1:{closed_port()}", "--schema-registry", http_registry.url]
    start = time.monotonic()
    code, out, err = run(capfd, *argv, "--timeout", "2", "--store", store_url, "--kek", kek_uri)
    took = time.monotonic() - start
    assert code == 4 and out == "" and took < 5, (took, err)
    assert len(err.splitlines()) == 1, err  # librdkafka's reconnection lines do not reach stderr
    assert "no Kafka broker answered within 2s" in err and "Connection refused" in err


@pytest.mark.broker
@pytest.mark.parametrize("command", ["verify", "scan"])
def test_registry_down_is_exit_4_in_one_line(mixed: MixedTopic, capfd, command: str) -> None:
    argv = [command, mixed.topic, "-b", mixed.bootstrap, "--schema-registry", f"http://127.0.0.1:{closed_port()}"]
    start = time.monotonic()
    code, out, err = run(capfd, *argv, "--timeout", "3", *mixed.keys())
    assert code == 4 and out == "" and time.monotonic() - start < 8
    assert err.startswith("fieldcrypt: the schema registry did not answer schema id ") and len(err.splitlines()) == 1


# --- librdkafka properties and registry settings reach the clients --------------------------------------------------


class _Spy:
    """Records the configuration each Consumer is made with, then makes the real one."""

    def __init__(self) -> None:
        self.confs: list[dict[str, Any]] = []

    def __call__(self, conf: dict[str, Any]) -> Any:
        from confluent_kafka import Consumer

        self.confs.append(dict(conf))
        return Consumer(conf)


@pytest.mark.broker
def test_kafka_properties_from_x_and_a_properties_file_reach_the_consumer(
    mixed: MixedTopic, capfd, monkeypatch, tmp_path: Path
) -> None:
    import fieldcrypt.inspect.topic

    spy = _Spy()
    monkeypatch.setattr(fieldcrypt.inspect.topic, "Consumer", spy)
    props = tmp_path / "client.properties"
    props.write_text(f"# kcat -F style\nbootstrap.servers={mixed.bootstrap}\nclient.id=from-file\nfetch.min.bytes=1\n")
    registry = ["--schema-registry", mixed.registry_url]
    code, out, err = run(capfd, "scan", mixed.topic, "-F", str(props), "-X", "client.id=auditor-7", *registry, "--json")
    assert code == 7, err
    [conf] = spy.confs
    assert conf["bootstrap.servers"] == mixed.bootstrap and conf["client.id"] == "auditor-7"  # -X wins over -F
    assert conf["fetch.min.bytes"] == "1" and conf["group.id"].startswith("fieldcrypt-scan-")
    assert conf["enable.auto.commit"] is False and conf["enable.partition.eof"] is True and conf["logger"] is not None
    # a group.id given (ACLs often name the groups a principal may use) is kept
    code, _, _ = run(
        capfd, "scan", mixed.topic, "-X", f"bootstrap.servers={mixed.bootstrap}", "-X", "group.id=audit-1", *registry
    )
    assert spy.confs[-1]["group.id"] == "audit-1"
    # the environment: FIELDCRYPT_KAFKA_CONFIG (a properties file) and FIELDCRYPT_BOOTSTRAP_SERVERS
    monkeypatch.setenv("FIELDCRYPT_KAFKA_CONFIG", str(props))
    monkeypatch.setenv("FIELDCRYPT_SCHEMA_REGISTRY", mixed.registry_url)
    code, out, _ = run(capfd, "scan", mixed.topic, "--json")
    assert code == 7 and spy.confs[-1]["client.id"] == "from-file" and json.loads(out)["records"] == 10


def test_an_invalid_kafka_property_names_the_key_never_the_value(capfd, http_registry) -> None:
    for prop, key in (
        ("no.such.property=s3cret-value-1", "no.such.property"),
        ("security.protocol=s3cret-proto", "security.protocol"),
    ):
        code, out, err = run(
            capfd, "scan", "t", "-b", "127.0.0.1:9", "-X", prop, "--schema-registry", http_registry.url, "--json"
        )
        error = json.loads(out)["error"]
        assert code == 3 and error["type"] == "ConfigurationError" and repr(key) in error["message"]
        assert "s3cret" not in out + err


class _AuthProxy:
    """A registry that wants basic auth: checks the Authorization header, then forwards to the test registry."""

    USER, PASSWORD = "auditor", "pw-4b1d-secret"

    def __init__(self, upstream: str) -> None:
        expected = "Basic " + base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        self.requests: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.requests.append(self.headers.get("Authorization") or "")
                if self.headers.get("Authorization") != expected:
                    body = json.dumps({"error_code": 401, "message": "Unauthorized"}).encode()
                    self.send_response(401)
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    request = urllib.request.Request(
                        upstream + self.path,
                        data=self.rfile.read(length) if length else None,
                        method=self.command,
                        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
                    )
                    try:
                        with urllib.request.urlopen(request, timeout=10) as answer:
                            body, status = answer.read(), answer.status
                    except urllib.error.HTTPError as exc:
                        body, status = exc.read(), exc.code
                    self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.broker
def test_registry_basic_auth_from_registry_conf_and_environment(mixed: MixedTopic, capfd, monkeypatch) -> None:
    proxy = _AuthProxy(mixed.registry_url)
    try:
        argv = ["scan", mixed.topic, "-b", mixed.bootstrap, "--schema-registry", proxy.url, "--json"]
        code, out, err = run(capfd, *argv)
        error = json.loads(out)["error"]
        assert code == 3 and "HTTP 401" in error["message"] and "basic.auth.user.info" in error["message"]
        user_info = f"{_AuthProxy.USER}:{_AuthProxy.PASSWORD}"
        code, out, err = run(capfd, *argv, "--registry-conf", f"basic.auth.user.info={user_info}")
        assert code == 7 and json.loads(out)["records"] == 10 and _AuthProxy.PASSWORD not in out + err
        monkeypatch.setenv("FIELDCRYPT_REGISTRY_USER_INFO", user_info)
        code, out, err = run(capfd, "verify", *argv[1:], *mixed.keys())
        assert code == 7, out
        assert json.loads(out)["rows"][0]["records"] == 4  # the records with encrypted values
        assert proxy.requests and proxy.requests[-1].startswith("Basic ")
        # numbers given as text, as on a command line, reach the client as numbers
        code, out, _ = run(
            capfd,
            *argv,
            "--registry-conf",
            f"basic.auth.user.info={user_info}",
            "--registry-conf",
            "max.retries=0",
            "--registry-conf",
            "timeout=5",
        )
        assert code == 7
        code, out, _ = run(capfd, *argv, "--registry-conf", "max.retries=many")
        assert code == 3 and "'max.retries' must be a number" in json.loads(out)["error"]["message"]
        code, out, _ = run(capfd, *argv, "--registry-conf", "no.such.setting=1")
        assert code == 3 and "no.such.setting" in json.loads(out)["error"]["message"]
    finally:
        proxy.close()


# --- the reader's failure paths, with a stand-in consumer ------------------------------------------------------------


class _FakeConsumer:
    """A consumer whose cluster knows topic 't' (one partition, high watermark 5) but never delivers anything; or,
    with ``refuse``, one that cannot connect and reports refused credentials."""

    refuse = False

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    def list_topics(self, topic: str, timeout: float) -> Any:
        from types import SimpleNamespace

        from confluent_kafka import KafkaError, KafkaException

        if self.refuse:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        return SimpleNamespace(topics={"t": SimpleNamespace(error=None, partitions={0: None})})

    def poll(self, timeout: float) -> None:
        from confluent_kafka import KafkaError

        if self.refuse:
            self.conf["error_cb"](
                KafkaError(
                    KafkaError._AUTHENTICATION, "b1:9092/bootstrap: SASL authentication error: Authentication failed"
                )
            )
        time.sleep(min(timeout, 0.05))

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, 5

    def assign(self, partitions: Any) -> None:
        pass

    def pause(self, partitions: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_brokers_that_stop_answering_while_reading_are_unavailable(monkeypatch) -> None:
    import fieldcrypt.inspect.topic
    from fieldcrypt.inspect.topic import TopicReader, UnavailableError

    monkeypatch.setattr(fieldcrypt.inspect.topic, "Consumer", _FakeConsumer)
    start = time.monotonic()
    with TopicReader("t", {"bootstrap.servers": "b1:9092"}, timeout=0.5) as reader:
        with pytest.raises(UnavailableError, match=r"stopped answering for 0.5s after 0 record\(s\)"):
            list(reader)
    assert time.monotonic() - start < 3


def test_refused_credentials_end_at_once_as_a_configuration_error(monkeypatch) -> None:
    import fieldcrypt.inspect.topic
    from fieldcrypt.errors import ConfigurationError
    from fieldcrypt.inspect.topic import TopicReader

    monkeypatch.setattr(fieldcrypt.inspect.topic, "Consumer", _FakeConsumer)
    monkeypatch.setattr(_FakeConsumer, "refuse", True)
    with pytest.raises(ConfigurationError, match="refused the credentials: SASL authentication error"):
        TopicReader("t", {"bootstrap.servers": "b1:9092"}, timeout=30)


def test_a_registry_answer_that_is_not_a_schema_is_a_configuration_error() -> None:
    from fieldcrypt.errors import ConfigurationError
    from fieldcrypt.inspect.topic import Schemas

    class Garbled:
        def get_schema(self, schema_id: int) -> Any:
            raise json.JSONDecodeError("Expecting value", "<html>", 0)  # a 200 with an HTML page

    with pytest.raises(ConfigurationError, match="is not a schema registry's"):
        Schemas(Garbled(), "t").get(1)  # type: ignore[arg-type]


# --- --by domain: each value's domain from the key store, each outcome for the keyring given ---------------------

#: a record with two key domains: its email is "contact" data, its diagnosis "health" data (fieldcrypt.tag.domains)
TWO_DOMAINS = json.dumps(
    {
        "type": "record",
        "name": "Visit",
        "namespace": "test.verify",
        "fields": [
            {"name": "patientId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
            {"name": "email", "type": "string", "confluent:tags": ["CONTACT"]},
            {"name": "diagnosis", "type": "string", "confluent:tags": ["HEALTH"]},
        ],
    }
)
TWO_DOMAINS_CONF = {
    "fieldcrypt.tags": ["CONTACT", "HEALTH"],
    "fieldcrypt.tag.domains": {"CONTACT": "contact", "HEALTH": "health"},
}
#: the same, as verify's options
TWO_DOMAINS_ARGS = ("--tag", "CONTACT,HEALTH", "--tag-domain", "CONTACT=contact", "--tag-domain", "HEALTH=health")
PATIENTS = ("pat-0", "pat-1", "pat-2")


def domain_keyring(store: str, keks: dict[str, str | Kek], *, writer: bool = False, **kw: Any) -> Keyring:
    """A keyring over ``store`` with each domain's KEK (``keks``: domain -> KEK); a ``writer``'s keys of each domain
    are wrapped by that domain's KEK.

    The one place to switch once a Keyring takes the mapping itself (``Keyring(store, keks)``). Today: for a
    writer, each domain's keys of ``PATIENTS`` are created first by a keyring holding only that domain's KEK (the
    first KEK wraps new keys); the keyring returned holds every KEK (the others unwrap)."""
    if writer:
        for domain, kek in keks.items():
            with Keyring(store, kek) as one:
                for person in PATIENTS:
                    one.encryption_key(domain, person)
    return Keyring(store, list(keks.values()), **kw)


@dataclass
class DomainTopic:
    """A topic of ``PATIENTS``' visits (contact and health values, each domain's keys under its own KEK; ``pat-2``
    shredded) and one record of another key store's (its key ids unknown to this store)."""

    topic: str
    bootstrap: str
    registry_url: str
    store: str
    contact_kek: str
    health_kek: str

    def args(self, *more: str) -> list[str]:
        return [self.topic, "-b", self.bootstrap, "--schema-registry", self.registry_url, "--store", self.store, *more]


def build_domain_topic(broker: Any, http_registry: Any, tmp: Path) -> DomainTopic:
    topic = f"visits-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'keys.db'}")
    contact = fieldcrypt.create_local_kek(tmp / "contact.json")
    health = fieldcrypt.create_local_kek(tmp / "health.json")
    other_store = fieldcrypt.create_key_store(f"sqlite:///{tmp / 'other.db'}")
    other_kek = fieldcrypt.create_local_kek(tmp / "other.json")
    registry = SchemaRegistryClient({"url": http_registry.url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    with domain_keyring(store, {"contact": contact, "health": health}, writer=True) as kr:
        ser = AvroSerializer(registry, TWO_DOMAINS, conf=TWO_DOMAINS_CONF, keyring=kr)
        for person in PATIENTS:
            producer.produce(topic, value=ser(visit(person), ctx), partition=0)
        kr.shred_person("pat-2", reason="test erasure")
    with Keyring(other_store, other_kek) as elsewhere:
        ser = AvroSerializer(registry, TWO_DOMAINS, conf=TWO_DOMAINS_CONF, keyring=elsewhere)
        producer.produce(topic, value=ser(visit("pat-9"), ctx), partition=0)
    assert producer.flush(30) == 0
    return DomainTopic(topic, broker.bootstrap_servers, http_registry.url, store, contact, health)


def visit(person: str) -> dict[str, str]:
    return {"patientId": person, "email": f"{person}@mail.test", "diagnosis": f"secret-diagnosis-of-{person}"}


@pytest.fixture(scope="module")
def visits(broker: Any, http_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> DomainTopic:
    return build_domain_topic(broker, http_registry, tmp_path_factory.mktemp("visits"))


def by_domain(out: str) -> dict[str | None, dict[str, Any]]:
    report = json.loads(out)
    assert report["by"] == "domain"
    rows: dict[str | None, dict[str, Any]] = {}
    for row in report["rows"]:
        domain = row.pop("domain")
        assert (domain is None) == (row["key"] != "known")
        name = domain if domain is not None else f"({row['key']})"
        assert name not in rows
        rows[name] = row
    return rows


def assert_no_secrets(*texts: str) -> None:
    whole = "\n".join(texts)
    for person in (*PATIENTS, "pat-9"):
        assert person not in whole  # no person id (nor a value: they all hold it) with --by domain
    assert "secret-diagnosis" not in whole and "@mail.test" not in whole


def row(records: int, readable: int = 0, erased: int = 0, denied: int = 0, **rest: Any) -> dict[str, Any]:
    return {
        "key": rest.pop("key", "known"),
        "records": records,
        "readable": readable,
        "masked": rest.pop("masked", 0),
        "erased": erased,
        "denied": denied,
        "tampered": rest.pop("tampered", 0),
        "plaintext": rest.pop("plaintext", 0),
        "plaintext_fields": rest.pop("plaintext_fields", {}),
        **rest,
    }


@pytest.mark.broker
def test_verify_by_domain_names_the_key_stores_domains(visits: DomainTopic, capfd) -> None:
    keks = ("--kek", visits.contact_kek, "--kek", visits.health_kek)
    code, out, err = run(capfd, "verify", *visits.args("--json", "--by", "domain", *keks, *TWO_DOMAINS_ARGS))
    assert code == 0, err
    assert by_domain(out) == {
        "contact": row(3, readable=2, erased=1),
        "health": row(3, readable=2, erased=1),
        # another key store's record: its key ids are unknown here, denied, in no domain (never guessed)
        "(unknown)": row(1, denied=2, key="unknown"),
    }
    assert json.loads(out)["findings"] == {"plaintext": 0, "untagged_ciphertext": 0, "tampered": 0, "bad_records": 0}
    assert_no_secrets(out, err)
    # the domain comes from the key store, not from the reader's options: --domain names none of these
    code, again, _ = run(capfd, "verify", *visits.args("--json", *keks, *TWO_DOMAINS_ARGS, "--domain", "not-a-domain"))
    assert code == 0 and by_domain(again) == by_domain(out)
    # the text table: the same rows, the unknown key ids by name
    code, text, err = run(capfd, "verify", *visits.args(*keks, *TWO_DOMAINS_ARGS))
    assert code == 0, err
    lines = [line.split() for line in text.splitlines()]
    header = [
        "DOMAIN",
        "RECORDS",
        "READABLE",
        "MASKED",
        "ERASED",
        "DENIED",
        "TAMPERED",
        "PLAINTEXT",
        "PLAINTEXT_FIELDS",
    ]
    assert header in lines
    assert ["contact", "3", "2", "0", "1", "0", "0", "0"] in lines
    assert ["health", "3", "2", "0", "1", "0", "0", "0"] in lines
    assert ["(unknown", "key)", "1", "0", "0", "0", "2", "0", "0"] in lines and "no findings" in text
    assert_no_secrets(text, err)


@pytest.mark.broker
def test_verify_by_domain_without_a_domains_kek_is_denied_not_erased_nor_tampered(visits: DomainTopic, capfd) -> None:
    for kek, readable, denied in ((visits.contact_kek, "contact", "health"), (visits.health_kek, "health", "contact")):
        code, out, err = run(capfd, "verify", *visits.args("--json", "--kek", kek, *TWO_DOMAINS_ARGS))
        assert code == 0, err  # denied values are information, as before
        rows = by_domain(out)
        assert rows[readable] == row(3, readable=2, erased=1)
        assert rows[denied] == row(3, readable=0, erased=1, denied=2)  # pat-2's key was shredded: erased still
        assert rows["(unknown)"] == row(1, denied=2, key="unknown")
        assert json.loads(out)["clean"] is True
        assert_no_secrets(out, err)


@pytest.mark.broker
def test_verify_by_domain_python_api_and_the_kms_outcomes(broker: Any, http_registry: Any, tmp_path: Path) -> None:
    from kms_fakes import closed_port, fake_kms, kek_at

    from fieldcrypt.errors import KeyStoreUnavailableError
    from fieldcrypt.inspect.verify import NO_KEY, UNKNOWN_KEY, verify_topic

    topic = f"kms-visits-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    contact = fieldcrypt.create_local_kek(tmp_path / "contact.json")
    registry = SchemaRegistryClient({"url": http_registry.url})
    kafka = {"bootstrap.servers": broker.bootstrap_servers}
    with fake_kms() as kms:
        with domain_keyring(store, {"contact": contact, "health": kek_at(kms.endpoint)}, writer=True) as kr:
            ser = AvroSerializer(registry, TWO_DOMAINS, conf=TWO_DOMAINS_CONF, keyring=kr)
            producer = Producer(kafka)
            for person in PATIENTS:
                producer.produce(topic, value=ser(visit(person), SerializationContext(topic, MessageField.VALUE)))
            assert producer.flush(30) == 0

        def verify(health: Kek, **kw: Any) -> Any:
            with domain_keyring(store, {"contact": contact, "health": health}, **kw) as reader:
                return verify_topic(reader, topic, kafka, registry, by="domain", timeout=10, conf=TWO_DOMAINS_CONF)

        report = verify(kek_at(kms.endpoint))
        assert {k: (v.records, v.readable, v.erased, v.denied) for k, v in report.rows.items()} == {
            "contact": (3, 3, 0, 0),
            "health": (3, 3, 0, 0),
        }
        assert UNKNOWN_KEY not in report.rows and NO_KEY not in report.rows and report.clean

        # a KMS that refuses the KEK (AccessDeniedException): denied, not erased, not tampered
        kms.fail("Decrypt", "AccessDeniedException")
        report = verify(kek_at(kms.endpoint))
        assert report.as_dict()["rows"] == [
            {"domain": "contact", **row(3, readable=3)},
            {"domain": "health", **row(3, denied=3)},
        ]
        assert report.clean and report.findings()["tampered"] == 0

        # a KMS that is down (connection refused): unavailable, the run ends; never a report of denied values
        kms.fail("Decrypt", None)
        with pytest.raises(KeyStoreUnavailableError, match="unavailable"):
            verify(kek_at(closed_port()), retries=1, backoff=0.001)


@pytest.mark.broker
def test_verify_cli_kms_down_is_exit_4_and_refused_is_denied(
    broker: Any, http_registry: Any, tmp_path: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kms_fakes import closed_port, fake_kms, kek_at

    import fieldcrypt.cli.verify

    topic = f"kms-cli-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    contact = fieldcrypt.create_local_kek(tmp_path / "contact.json")
    registry = SchemaRegistryClient({"url": http_registry.url})
    argv = [topic, "-b", broker.bootstrap_servers, "--schema-registry", http_registry.url, "--store", store]
    argv += ["--kek", contact, *TWO_DOMAINS_ARGS, "--timeout", "10"]
    with fake_kms() as kms:
        with domain_keyring(store, {"contact": contact, "health": kek_at(kms.endpoint)}, writer=True) as kr:
            ser = AvroSerializer(registry, TWO_DOMAINS, conf=TWO_DOMAINS_CONF, keyring=kr)
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
            producer.produce(topic, value=ser(visit("pat-0"), SerializationContext(topic, MessageField.VALUE)))
            assert producer.flush(30) == 0
        health: list[Kek] = []
        monkeypatch.setattr(  # the CLI's keyring, with the fake KMS's KEK for health (the CLI would take its URI)
            fieldcrypt.cli.verify,
            "keyring_of",
            lambda args, needs_kek: domain_keyring(store, {"contact": contact, "health": health[-1]}, retries=1),
        )
        kms.fail("Decrypt", "AccessDeniedException")
        health.append(kek_at(kms.endpoint))
        code, out, err = run(capfd, "verify", *argv, "--json")
        assert code == 0, err
        rows = by_domain(out)
        assert rows == {"contact": row(1, readable=1), "health": row(1, denied=1)}
        health.append(kek_at(closed_port()))
        code, out, err = run(capfd, "verify", *argv)
        assert code == 4 and out == "", out
        assert "unavailable" in err and "denied" not in err and len(err.splitlines()) == 1, err


def test_verify_by_an_unknown_value_is_refused_listing_the_accepted_ones(capsys, tmp_path: Path) -> None:
    from fieldcrypt.errors import ConfigurationError
    from fieldcrypt.inspect.verify import verify_topic

    assert main(["verify", "t", "--by", "person"]) == 2
    err = capsys.readouterr().err
    assert "--by" in err and "'domain'" in err and "'data-subject'" in err
    with pytest.raises(ConfigurationError, match=r"by must be one of: domain, data-subject \(not 'person'\)"):
        verify_topic(None, "t", {}, None, by="person")  # type: ignore[arg-type]


@pytest.mark.broker
def test_verify_by_domain_counts_masked_views_apart(broker: Any, http_registry: Any, tmp_path: Path) -> None:
    """A keyring holding the key of a domain's masked view but not the value's: ``masked``, never readable."""
    from fieldcrypt.inspect.verify import verify_topic

    topic = f"masked-visits-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path / 'keys.db'}")
    keks = {d: fieldcrypt.create_local_kek(tmp_path / f"{d.replace('/', '-')}.json") for d in DOMAINS_WITH_VIEW}
    conf = {**TWO_DOMAINS_CONF, "fieldcrypt.masks": {"CONTACT": "email"}}
    registry = SchemaRegistryClient({"url": http_registry.url})
    kafka = {"bootstrap.servers": broker.bootstrap_servers}
    with domain_keyring(store, dict(keks), writer=True) as kr:
        ser = AvroSerializer(registry, TWO_DOMAINS, conf=conf, keyring=kr)
        producer = Producer(kafka)
        for person in PATIENTS:
            producer.produce(topic, value=ser(visit(person), SerializationContext(topic, MessageField.VALUE)))
        assert producer.flush(30) == 0
        kr.shred_person("pat-2", domain="contact", reason="test erasure")  # value and view of one domain

    def rows(*granted: str) -> dict[str, tuple[int, int, int, int]]:
        with domain_keyring(store, {d: keks[d] for d in granted}) as reader:
            report = verify_topic(reader, topic, kafka, registry, by="domain", timeout=10, conf=conf)
        assert report.clean and not report.bad.count
        return {k: (v.readable, v.masked, v.erased, v.denied) for k, v in report.rows.items()}  # type: ignore[attr-defined]

    everything = rows(*DOMAINS_WITH_VIEW)
    assert everything == {"contact": (2, 0, 1, 0), "health": (3, 0, 0, 0)}
    assert rows("contact/masked", "health") == {"contact": (0, 2, 1, 0), "health": (3, 0, 0, 0)}
    assert rows("health") == {"contact": (0, 0, 1, 2), "health": (3, 0, 0, 0)}


DOMAINS_WITH_VIEW = ("contact", "contact/masked", "health")
