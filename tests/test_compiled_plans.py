"""The compiled hot path (fieldcrypt.core.compiled) against the general walker it stands in for: for every record
shape, the same bytes (nonce pinned), the same errors, the same outcomes and counts; on read, the same answer for
intact, tampered, erased and plaintext values. And the generated source never holds a schema's names."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from unittest import mock

import fastavro
import pytest

import fieldcrypt
from fieldcrypt.avro.policy import compile_avro
from fieldcrypt.core import compiled
from fieldcrypt.core.engine import PlanRunner
from fieldcrypt.core.outcomes import Outcomes
from fieldcrypt.core.plan import TagRules
from fieldcrypt.json_schema.policy import compile_json
from fieldcrypt.observe.stats import SerdeStats

NONCE = bytes(range(12))

AVRO = {
    "type": "record",
    "name": "Customer",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
        {"name": "email", "type": "string", "confluent:tags": ["PII"]},
        {"name": "note", "type": ["null", "string"], "default": None, "confluent:tags": ["PII"]},
        {"name": "blob", "type": "bytes", "default": "", "confluent:tags": ["PII"]},
        {"name": "city", "type": "string", "default": "Berlin", "confluent:tags": ["PII"]},
        {"name": "amount", "type": "double"},
    ],
}


def _runners(plan: Any) -> tuple[PlanRunner, PlanRunner]:
    fast, general = PlanRunner(plan), PlanRunner(plan)
    assert fast._fast_enc is not None and fast._fast_dec is not None  # the shape this file is about is compiled
    general._fast_enc = general._fast_dec = None
    return fast, general


@pytest.fixture
def keyring(tmp_path: Path) -> fieldcrypt.Keyring:
    kek = fieldcrypt.create_local_kek(str(tmp_path / "kek.json"))
    return fieldcrypt.Keyring(fieldcrypt.create_key_store(f"sqlite:///{tmp_path}/keys.db"), kek)


def _avro_plan(schema: dict[str, Any], per_person: bool = True) -> Any:
    if not per_person:
        schema = copy.deepcopy(schema)
        schema["fields"][0].pop("confluent:tags")
    return compile_avro(fastavro.parse_schema(copy.deepcopy(schema)), TagRules())


def _json_plan(schema: dict[str, Any]) -> Any:
    return _json_plan_with(schema, TagRules())


def _json_plan_with(schema: dict[str, Any], rules: TagRules) -> Any:
    return compile_json(schema, rules, lambda ref: None, lambda s: lambda v: True)


def _counts(stats: SerdeStats) -> dict[str, Any]:
    """What a record's work counted, but the key store's calls and misses (the first of two runs creates the key)."""
    return {k: v for k, v in vars(stats.snapshot()).items() if not k.startswith(("key_store", "key_cache", "_"))}


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    stats = SerdeStats("x")
    try:
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=NONCE):
            out = fn(*args, stats=stats)
    except Exception as exc:  # the error, as a user sees it
        return "raised", (type(exc).__name__, str(exc), _counts(stats))
    return "ok", (out, _counts(stats))


WRITES = [
    {"id": "p1", "email": "a@example.com", "note": "hi", "blob": b"\x00\x01", "city": "Paris", "amount": 1.0},
    {"id": "p1", "email": "ä@exämple.com", "note": None, "blob": b"", "amount": 2.0},  # non-ASCII; city defaulted
    {"id": "p2", "email": "x", "amount": 3.0},  # note, blob and city from their defaults
    {"id": "p2", "email": "\ud800", "amount": 3.0},  # a lone surrogate: refused
    {"id": "p2", "email": 7, "amount": 3.0},  # not a string: refused
    {"id": "p2", "email": "e", "note": ("string", "tuple"), "amount": 3.0},  # Avro tuple notation
    {"id": "p2", "email": "e", "note": ("int", 1), "amount": 3.0},  # a branch the union does not have
    {"id": "p2", "email": "e", "blob": bytearray(b"ab"), "amount": 3.0},  # bytes-like
    {"id": "p2", "email": "e", "blob": "text", "amount": 3.0},  # not bytes
    {"id": None, "email": "e", "amount": 3.0},  # no data-subject id
    {"email": "e", "amount": 3.0},
    {"id": "p3", "amount": 3.0},  # email absent, no default
    ["not", "a", "record"],
]


@pytest.mark.parametrize("per_person", [True, False])
def test_compiled_writes_what_the_general_walker_writes(keyring: fieldcrypt.Keyring, per_person: bool) -> None:
    fast, general = _runners(_avro_plan(AVRO, per_person))
    for record in WRITES:
        before = copy.deepcopy(record)
        a = _outcome(fast.encrypt, record, keyring, "s-value", "s-value")
        b = _outcome(general.encrypt, record, keyring, "s-value", "s-value")
        assert a == b, record
        assert record == before  # never the caller's object
        if a[0] == "ok" and isinstance(record, dict) and "email" in record:
            assert a[1][0]["email"] != record["email"]  # encrypted, not passed through


def _written(runner: PlanRunner, keyring: fieldcrypt.Keyring, record: dict[str, Any]) -> dict[str, Any]:
    with mock.patch("fieldcrypt.core.engine._urandom", return_value=NONCE):
        return runner.encrypt(record, keyring, "s-value", "s-value")  # type: ignore[no-any-return]


def _tampered(written: dict[str, Any]) -> list[dict[str, Any]]:
    """The written record, and every alteration a reader must see through."""
    out = [written]
    out.append({**written, "email": written["city"], "city": written["email"]})  # two values swapped
    out.append({**written, "email": written["email"][:-2]})  # truncated
    out.append({**written, "email": written["email"] + "A"})  # not canonical base64
    out.append({**written, "email": written["email"][:-1] + chr(ord(written["email"][-1]) ^ 1)})  # a bit flipped
    out.append({**written, "email": "plain@example.com"})  # plaintext in a tagged field
    out.append({**written, "note": None})  # a value nulled: the count no longer matches
    out.append({**written, "id": "someone-else"})  # another person's record now
    out.append({k: v for k, v in written.items() if k != "city"})  # a value removed
    out.append({**written, "email": 5})  # not text at all
    return out


@pytest.mark.parametrize("outcomes", [Outcomes(), Outcomes(on_plaintext="accept", on_erased="null", on_denied="null")])
def test_compiled_reads_what_the_general_walker_reads(keyring: fieldcrypt.Keyring, outcomes: Outcomes) -> None:
    fast, general = _runners(_avro_plan(AVRO))
    written = _written(general, keyring, WRITES[0])
    assert _written(fast, keyring, WRITES[0]) == written
    for record in _tampered(written):
        a = _outcome(fast.decrypt, copy.deepcopy(record), keyring, "s-value", "s-value", outcomes)
        b = _outcome(general.decrypt, copy.deepcopy(record), keyring, "s-value", "s-value", outcomes)
        assert a == b, record
    ok = _outcome(fast.decrypt, copy.deepcopy(written), keyring, "s-value", "s-value", outcomes)
    assert ok[0] == "ok" and ok[1][0]["email"] == "a@example.com"
    # erased: the person's key shredded, both say so the same way
    keyring.shred_person("p1", reason="test")
    a = _outcome(fast.decrypt, copy.deepcopy(written), keyring, "s-value", "s-value", outcomes)
    b = _outcome(general.decrypt, copy.deepcopy(written), keyring, "s-value", "s-value", outcomes)
    assert a == b and "a@example.com" not in repr(a)


def test_a_value_under_another_domains_key_is_refused_when_fields_have_domains(keyring: fieldcrypt.Keyring) -> None:
    """Two fields of two key domains: a writer holding both keys cannot make a reader take one field's value in the
    other's domain (the key's owner is checked per value, not once per record)."""
    schema = {
        "type": "object",
        "title": "T",
        "properties": {
            "a": {"type": "string", "confluent:tags": ["PII"]},
            "b": {"type": "string", "confluent:tags": ["HEALTH"]},
        },
    }
    rules = TagRules(encrypt=frozenset({"PII", "HEALTH"}), domains={"HEALTH": "health"})
    fast, general = _runners(_json_plan_with(schema, rules))
    written = _written(general, keyring, {"a": "x", "b": "y"})
    key_a = keyring.encryption_key("s-value")
    # the same record re-made with the HEALTH field's value under the default domain's key: only the general
    # walker's key choice differs, so write it with a plan that puts both in one domain and graft the value
    one = compile_json(
        schema, TagRules(encrypt=frozenset({"PII", "HEALTH"})), lambda ref: None, lambda s: lambda v: True
    )
    forged = _written(PlanRunner(one), keyring, {"a": "x", "b": "y"})
    assert key_a.key_id is not None and forged["b"] != written["b"]
    a = _outcome(fast.decrypt, dict(forged), keyring, "s-value", "s-value", Outcomes())
    b = _outcome(general.decrypt, dict(forged), keyring, "s-value", "s-value", Outcomes())
    assert a == b and a[0] == "raised" and "DecryptionError" in a[1][0]


def test_the_generated_source_holds_no_name_from_the_schema(keyring: fieldcrypt.Keyring) -> None:
    """Whoever registers a schema chooses its property names: none of them reaches the code compiled."""
    evil = ["__import__('os').system('exit 3')", '"\n raise SystemExit #', "x' or 1 or '", "_n0", "dec"]
    schema = {
        "type": "object",
        "title": "Evil\nimport os",
        "properties": {name: {"type": "string", "confluent:tags": ["PII"]} for name in evil},
    }
    sources: list[str] = []
    real = compiled._build

    def spy(source: str, namespace: dict[str, Any], name: str) -> Any:
        sources.append(source)
        return real(source, namespace, name)

    with mock.patch.object(compiled, "_build", spy):
        fast, general = _runners(_json_plan(schema))
    assert len(sources) == 4  # two runners, each compiled for both directions
    for source in sources:
        for name in [*evil[:3], "Evil", "import os"]:
            assert name not in source
    record = {name: f"value {i}" for i, name in enumerate(evil)}
    a = _outcome(fast.encrypt, record, keyring, "s-value", "s-value")
    assert a == _outcome(general.encrypt, record, keyring, "s-value", "s-value") and a[0] == "ok"
    back = fast.decrypt(copy.deepcopy(a[1][0]), keyring, "s-value", "s-value")
    assert back == record


def test_shapes_the_compiler_leaves_to_the_general_walker() -> None:
    """Masked views, deterministic values, nested records, arrays: no compiled function, the walker does all."""
    nested = {
        "type": "record",
        "name": "N",
        "fields": [{"name": "a", "type": {"type": "record", "name": "In", "fields": [
            {"name": "e", "type": "string", "confluent:tags": ["PII"]}]}}],
    }  # fmt: skip
    arrays = {
        "type": "record",
        "name": "A",
        "fields": [{"name": "a", "type": {"type": "array", "items": "string"}, "confluent:tags": ["PII"]}],
    }
    masked = {"type": "record", "name": "M", "fields": [{"name": "e", "type": "string", "confluent:tags": ["PII"]}]}
    for schema, rules in [
        (nested, TagRules()),
        (arrays, TagRules()),
        (masked, TagRules(masks={"PII": "email"})),
        (masked, TagRules(deterministic=frozenset({"PII"}))),
    ]:
        runner = PlanRunner(compile_avro(fastavro.parse_schema(schema), rules))
        assert runner._fast_enc is None and runner._fast_dec is None, json.dumps(schema)


def _lane_outcome(fn: Any, record: Any) -> tuple[str, Any]:
    """As :func:`_outcome`, for a function of the record alone that returns (out, state) and leaves the counting to
    its caller (the serdes' lanes count once the record is done)."""
    stats = SerdeStats("x")
    try:
        with mock.patch("fieldcrypt.core.engine._urandom", return_value=NONCE):
            out, state = fn(stats)(record)
    except Exception as exc:
        return "raised", (type(exc).__name__, str(exc), _counts(stats))
    if state is not None:
        stats._record(state)
    return "ok", (out, _counts(stats))


@pytest.mark.parametrize("per_person", [True, False])
def test_a_lanes_writer_and_reader_give_what_the_runner_gives(keyring: fieldcrypt.Keyring, per_person: bool) -> None:
    """``PlanRunner.writer`` / ``reader`` (what a serde's lane calls per record, arguments fixed once) against
    ``encrypt`` / ``decrypt``: the same bytes, errors and counts for every record shape, tampering, erasure."""
    runner = PlanRunner(_avro_plan(AVRO, per_person))
    for record in WRITES:
        a = _lane_outcome(lambda st: runner.writer(keyring, "s-value", "s-value", st, 2), record)
        b = _outcome(runner.encrypt, record, keyring, "s-value", "s-value")
        assert a == b, record
    written = _written(runner, keyring, WRITES[0])
    outcomes = Outcomes(on_plaintext="accept", on_erased="null", on_denied="null")
    for record in _tampered(written):
        a = _lane_outcome(lambda st: runner.reader(keyring, "s-value", "s-value", outcomes, st), copy.deepcopy(record))
        b = _outcome(runner.decrypt, copy.deepcopy(record), keyring, "s-value", "s-value", outcomes)
        assert a == b, record


def test_a_key_renewed_within_a_record_is_used_for_the_values_after_it(tmp_path: Path) -> None:
    """A lease of one encryption: the compiled writer renews the key before every value (the key it looked up once
    for the record is then the renewed one) and writes what the general walker writes."""
    kek = fieldcrypt.create_local_kek(str(tmp_path / "kek.json"))
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path}/keys.db")
    keyring = fieldcrypt.Keyring(store, kek, rotation=fieldcrypt.RotationPolicy(max_encryptions=1000, lease=1))
    fast, general = _runners(_avro_plan(AVRO, per_person=False))
    record = WRITES[0]
    general.encrypt(record, keyring, "s-value", "s-value")  # the key made: each run below starts with none leased
    a = _outcome(fast.encrypt, record, keyring, "s-value", "s-value")
    b = _outcome(general.encrypt, record, keyring, "s-value", "s-value")
    assert a == b and a[0] == "ok" and a[1][1]["key_lookups"] == 5  # one lookup, four renewals
    assert fast.decrypt(copy.deepcopy(a[1][0]), keyring, "s-value", "s-value") == {**record, "blob": b"\x00\x01"}
    assert keyring.store.active("s-value", None).encryptions >= 8  # four values a record, each leased on its own


def test_a_key_rotated_within_a_record_encrypts_the_values_after_it(tmp_path: Path) -> None:
    """At most two encryptions a key: a record of four values rotates in the middle; the compiled writer, like the
    general walker, writes the values after the rotation under the new key (none beyond the old key's cap)."""
    from fieldcrypt.core.lookalike import key_id_of

    kek = fieldcrypt.create_local_kek(str(tmp_path / "kek.json"))
    store = fieldcrypt.create_key_store(f"sqlite:///{tmp_path}/keys.db")
    keyring = fieldcrypt.Keyring(store, kek, rotation=fieldcrypt.RotationPolicy(max_encryptions=2, lease=1))
    fast, general = _runners(_avro_plan(AVRO, per_person=False))
    for runner in (fast, general):
        out = runner.encrypt(WRITES[0], keyring, "s-value", "s-value")
        ids = [key_id_of(out[name]) for name in ("email", "note", "blob", "city")]
        assert ids[0] == ids[1] != ids[2] == ids[3], ids  # two values a key
        assert runner.decrypt(copy.deepcopy(out), keyring, "s-value", "s-value") == {**WRITES[0]}
