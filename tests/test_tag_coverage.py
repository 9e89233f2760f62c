"""Total tag coverage: schemas with tags in random places are refused, or no tagged value reaches the wire.

The generator (``tag_schemas``) decides on its own which values are tagged; fieldcrypt's compiler is not asked.
``python tests/test_tag_coverage.py [N]`` prints the counts of placements enforced, refused and ignored.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import tag_schemas
from confluent_kafka.schema_registry import Metadata, MetadataTags, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as PlainProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldcrypt import Keyring, PolicyError
from fieldcrypt.avro import AvroDeserializer, AvroSerializer
from fieldcrypt.json_schema import JSONDeserializer, JSONSerializer


def check_wire(g: tag_schemas.Generated, data: bytes | None, text: str) -> bytes:
    """An accepted schema: it must not have been refusable, no tagged marker is on the wire, every other one is."""
    assert not g.must_refuse, f"accepted a schema that must be refused: {g.must_refuse}: {text}"
    assert data is not None
    for marker in g.secret:
        assert marker not in data, f"tagged value in clear: {marker!r} in {text}"
    for marker in g.clear:
        assert marker in data, f"untagged value missing: {marker!r} in {text}"
    return data


def run_avro(seed: int, keyring: Keyring) -> tuple[str, int]:
    """Serialize one generated schema's record; returns ("refused"|"enforced", PII placements)."""
    g = tag_schemas.avro(seed)
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    meta = Metadata(tags=MetadataTags(g.metadata), properties=None, sensitive=None) if g.metadata else None
    schema = Schema(json.dumps(g.schema), "AVRO", metadata=meta)
    ctx = SerializationContext(f"t{seed}", MessageField.VALUE)
    try:
        ser = AvroSerializer(registry, schema, conf=dict(tag_schemas.CONF), keyring=keyring)
    except PolicyError:
        return "refused", g.placements
    data = check_wire(g, ser(g.record, ctx), json.dumps(g.schema))
    out = AvroDeserializer(registry, conf=dict(tag_schemas.CONF), keyring=keyring)(data, ctx)
    assert out == _plain(g.record)
    return "enforced", g.placements


def _plain(value: Any) -> Any:
    """The record as a reader returns it: tuple notation dropped."""
    if isinstance(value, tuple):
        return _plain(value[1])
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_avro_tags_in_random_places_are_refused_or_encrypted(seed: int, keyring: Keyring) -> None:
    run_avro(seed, keyring)


def test_the_generator_exercises_both_outcomes(keyring: Keyring) -> None:
    outcomes = [run_avro(seed, keyring)[0] for seed in range(60)]
    assert outcomes.count("refused") >= 5 and outcomes.count("enforced") >= 20


def run_json(seed: int, keyring: Keyring) -> tuple[str, int]:
    """The same for a generated JSON Schema: ("refused"|"enforced", PII placements)."""
    g = tag_schemas.json_schema(seed)
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    # a topic of its own: the key store records per subject what its producers encrypted (the Avro run's t{seed})
    ctx = SerializationContext(f"json-t{seed}", MessageField.VALUE)
    text = json.dumps(g.schema)
    try:
        ser = JSONSerializer(text, registry, conf=dict(tag_schemas.CONF), keyring=keyring)
    except PolicyError:
        return "refused", g.placements
    data = check_wire(g, ser(g.record, ctx), text)
    de = JSONDeserializer(None, schema_registry_client=registry, conf=dict(tag_schemas.CONF), keyring=keyring)
    assert de(data, ctx) == g.record, text
    return "enforced", g.placements


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_json_tags_in_random_places_are_refused_or_encrypted(seed: int, keyring: Keyring) -> None:
    run_json(seed, keyring)


def test_the_json_generator_exercises_both_outcomes(keyring: Keyring) -> None:
    outcomes = [run_json(seed, keyring)[0] for seed in range(60)]
    assert outcomes.count("refused") >= 5 and outcomes.count("enforced") >= 20


def run_protobuf(seed: int, keyring: Keyring) -> tuple[str, int]:
    """The same for a generated Protobuf schema (a root file importing another, tags in field_meta, message_meta,
    file_meta, enum_meta and metadata.tags): ("refused"|"enforced", PII placements)."""
    import base64

    from fieldcrypt.protobuf import ProtobufDeserializer, ProtobufSerializer

    g = tag_schemas.protobuf(seed)
    protos, _ = g.schema
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ctx = SerializationContext(f"proto-t{seed}", MessageField.VALUE)
    conf = {**tag_schemas.CONF, "use.deprecated.format": False}
    text = " | ".join(base64.b64encode(p.SerializeToString()).decode() for p in protos)
    message_type = type(g.record)
    if g.metadata:  # the registry's version carries metadata.tags: the serializer writes with it
        meta = Metadata(tags=MetadataTags(g.metadata), properties=None, sensitive=None)
        plain = PlainProtobufSerializer(message_type, registry, {"use.deprecated.format": False})
        refs = plain._resolve_dependencies(ctx, message_type.DESCRIPTOR.file)
        registry.register_schema(
            f"proto-t{seed}-value", Schema(plain._schema.schema_str, "PROTOBUF", refs, metadata=meta)
        )
        conf |= {"auto.register.schemas": False, "use.latest.version": True}
    try:
        ser = ProtobufSerializer(message_type, registry, conf, keyring=keyring)
        data = ser(g.record, ctx)
    except PolicyError:
        return "refused", g.placements
    data = check_wire(g, data, text)
    read_conf = {k: v for k, v in conf.items() if k.startswith(("fieldcrypt.", "use.deprecated"))}
    de = ProtobufDeserializer(message_type, read_conf, registry, keyring=keyring)
    assert de(data, ctx) == g.record, text
    return "enforced", g.placements


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_protobuf_tags_in_random_places_are_refused_or_encrypted(seed: int, keyring: Keyring) -> None:
    run_protobuf(seed, keyring)


def test_the_protobuf_generator_exercises_both_outcomes(keyring: Keyring) -> None:
    outcomes = [run_protobuf(seed, keyring)[0] for seed in range(60)]
    assert outcomes.count("refused") >= 5 and outcomes.count("enforced") >= 20


def main(n: int) -> None:  # pragma: no cover - the measurement printed in the closing note
    import tempfile

    import fieldcrypt

    with tempfile.TemporaryDirectory() as tmp:
        kek = fieldcrypt.create_local_kek(f"{tmp}/kek.json")
        with Keyring(fieldcrypt.create_key_store(f"sqlite:///{tmp}/keys.db"), kek) as keyring:
            for label, run in (("Avro", run_avro), ("JSON Schema", run_json), ("Protobuf", run_protobuf)):
                counts = {"enforced": 0, "refused": 0}
                schemas = {"enforced": 0, "refused": 0}
                for seed in range(n):
                    outcome, placements = run(seed, keyring)
                    counts[outcome] += placements
                    schemas[outcome] += 1
                print(
                    f"{label}: {n} generated schemas; PII tag placements enforced {counts['enforced']} "
                    f"(in {schemas['enforced']} schemas), refused {counts['refused']} "
                    f"(in {schemas['refused']} schemas), "
                    "ignored 0 (every accepted schema was checked: no tagged value on the wire)"
                )


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
