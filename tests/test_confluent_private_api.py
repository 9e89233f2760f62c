"""The private parts of confluent-kafka's serdes fieldcrypt relies on: this fails loudly on an upgrade that moves
one (the pin is confluent-kafka>=2.16.1,<2.17), instead of a serde failing at run time."""

from __future__ import annotations

import inspect
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common import avro as common_avro
from confluent_kafka.schema_registry.common import json_schema as common_json
from confluent_kafka.schema_registry.common import protobuf as common_protobuf
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from google.protobuf import empty_pb2

SCHEMA = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}'
JSON_SCHEMA = '{"type": "object", "properties": {"a": {"type": "string"}}}'

METHODS = {
    "_execute_rules": [
        "ser_ctx",
        "subject",
        "rule_mode",
        "source",
        "target",
        "message",
        "inline_tags",
        "field_transformer",
        "original_message",
    ],
    "_execute_rules_with_phase": [
        "ser_ctx",
        "subject",
        "rule_phase",
        "rule_mode",
        "source",
        "target",
        "message",
        "inline_tags",
        "field_transformer",
        "original_message",
    ],
    "_get_migrations": ["subject", "source_info", "target", "fmt"],
    "_execute_migrations": ["ser_ctx", "subject", "migrations", "message"],
    "_get_reader_schema": ["subject"],
    "_get_writer_schema": ["schema_id", "subject"],
    "_get_parsed_schema": [],
}
ATTRIBUTES = [
    "_registry",
    "_schema",
    "_subject_name_func",
    "_strategy_accepts_client",
    "_subject_name_conf",
    "_use_latest_version",
    "_use_latest_with_metadata",
    "_use_schema_id",
]
WRITE_ATTRIBUTES = ["_auto_register", "_normalize_schemas", "_known_subjects_lock", "_schema_name"]


#: what fieldcrypt.core.confluent.configured reads, per confluent serde class (fields of Configured)
_SERIALIZER = ["registry", "schema", "schema_name", "to_dict", "schema_id_serializer"]
_DESERIALIZER = ["registry", "schema", "from_dict", "schema_id_deserializer"]
CONFIGURED = {
    "AvroSerializer": [*_SERIALIZER, "strict", "strict_allow_default", "parsed_schema"],
    "AvroDeserializer": [*_DESERIALIZER, "reader_schema", "return_record_name"],
    "JSONSerializer": [*_SERIALIZER, "validate", "json_encode"],
    "JSONDeserializer": [*_DESERIALIZER, "validate", "json_decode"],
    "ProtobufSerializer": ["registry", "schema", "schema_id_serializer", "msg_class"],
    "ProtobufDeserializer": ["registry", "schema_id_deserializer", "msg_class"],
}


def _instances() -> list[object]:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    return [
        AvroSerializer(registry, SCHEMA),
        AvroDeserializer(registry),
        JSONSerializer(JSON_SCHEMA, registry),
        JSONDeserializer(JSON_SCHEMA, schema_registry_client=registry),
        ProtobufSerializer(empty_pb2.Empty, registry, {"use.deprecated.format": False}),
        ProtobufDeserializer(empty_pb2.Empty, {"use.deprecated.format": False}, registry),
    ]


@pytest.mark.parametrize("serde", _instances(), ids=lambda s: type(s).__name__)
def test_private_methods_and_attributes_used_still_exist(serde: object) -> None:
    reading = "Deserializer" in type(serde).__name__
    for name, params in METHODS.items():
        if name in ("_get_migrations", "_execute_migrations", "_get_writer_schema") and not reading:
            continue
        method = getattr(serde, name, None)
        assert callable(method), f"{type(serde).__name__}.{name} is gone"
        names = list(inspect.signature(method).parameters)
        assert names[: len(params)] == params, f"{type(serde).__name__}.{name} changed its parameters: {names}"
    protobuf = type(serde).__name__.startswith("Protobuf")
    wanted = [a for a in ATTRIBUTES if not (protobuf and reading and a == "_schema")]  # (no schema: the class's)
    if not reading:
        wanted += [a for a in WRITE_ATTRIBUTES if not (protobuf and a == "_schema_name")]
    if protobuf:
        wanted += ["_msg_class", *([] if reading else ["_ref_reference_subject_func", "_skip_known_types"])]
    for name in wanted:
        assert hasattr(serde, name), f"{type(serde).__name__}.{name} is gone"


@pytest.mark.parametrize("serde", _instances(), ids=lambda s: type(s).__name__)
def test_the_constructor_settings_read_still_exist(serde: object) -> None:
    from fieldcrypt.core.confluent import CONFIGURED as ATTRS
    from fieldcrypt.core.confluent import default_conf

    for field in CONFIGURED[type(serde).__name__]:
        assert hasattr(serde, ATTRS[field]), f"{type(serde).__name__}.{ATTRS[field]} is gone"
    assert "auto.register.schemas" in default_conf(type(serde)) or "Deserializer" in type(serde).__name__
    assert default_conf(type(serde))
    if type(serde).__name__.startswith("JSON"):
        assert callable(getattr(serde, "_get_validator", None)), f"{type(serde).__name__}._get_validator is gone"


def test_registry_client_internals_used_still_exist() -> None:
    from fieldcrypt.core.confluent import registry_transport_error, rest_client, wildcard_to_regexp

    client = SchemaRegistryClient({"url": "http://localhost:1"})
    assert rest_client(client) is not None and hasattr(rest_client(client), "base_urls")
    assert issubclass(registry_transport_error(), Exception)
    assert wildcard_to_regexp("**.ssn")


def test_the_key_trackers_are_confluents_own() -> None:
    """A lane forgets the record key through the context variable confluent's DLQ action reads
    (``get_original_key``); remembering is confluent's own function."""
    from confluent_kafka.schema_registry.common import serde as common_serde

    from fieldcrypt.core.confluent import key_trackers

    remember, forget = key_trackers()
    remember(b"k")
    assert common_serde.get_original_key() == b"k"
    forget()
    assert common_serde.get_original_key() is None


def test_rule_helpers_used_still_exist() -> None:
    assert callable(common_avro.transform) and callable(common_avro.get_inline_tags)
    assert callable(common_json.transform) and common_json.DEFAULT_SPEC is not None
    for name in ("transform", "_is_builtin", "_is_repeated", "is_map_field", "_schema_to_str"):
        assert callable(getattr(common_protobuf, name, None)), f"common.protobuf.{name} is gone"
    assert callable(getattr(ProtobufSerializer, "_resolve_dependencies", None))
    assert list(inspect.signature(ProtobufSerializer._resolve_dependencies).parameters) == ["self", "ctx", "file_desc"]
    for cls in (ProtobufSerializer, ProtobufDeserializer):
        assert "fmt" in inspect.signature(cls._get_reader_schema).parameters
    assert "fmt" in inspect.signature(ProtobufDeserializer._get_writer_schema).parameters


# -- quarantine: only these modules touch confluent's private API ------------------------------------------------

#: one module per format boundary (docs/compatibility.md): the shared serde base and rule execution, then each format
QUARANTINE = frozenset(
    {
        "fieldcrypt.core.confluent",
        "fieldcrypt.avro.confluent",
        "fieldcrypt.json_schema.confluent",
        "fieldcrypt.protobuf.confluent",
    }
)


def _confluent_private_names() -> frozenset[str]:
    """Every private attribute of confluent's serdes and registry clients, read from real instances and classes (so a
    release that adds one is covered): what a fieldcrypt module outside the quarantine must not touch."""
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    objects: list[object] = [*_instances(), registry, SchemaRegistryClient({"url": "http://localhost:1"})]
    objects += [type(o) for o in objects]
    return frozenset(name for o in objects for name in dir(o) if name.startswith("_") and not name.startswith("__"))


def _is_confluent_subclass(cls: object) -> bool:
    return isinstance(cls, type) and any(c.__module__.startswith("confluent_kafka") for c in cls.__mro__[1:])


def _private_uses(module_name: str, source: str, private: frozenset[str]) -> list[str]:
    """Where a module touches confluent's private API: ``x._name`` (and ``getattr(x, "_name")``) for a private name
    of confluent's, on anything but ``self`` of a fieldcrypt class that is not a confluent subclass (which has its own
    attributes); any underscore name of a confluent module (``module._helper``); a confluent module's namespace
    (``vars(module)``, ``module.__dict__``); a private name read from an object's namespace (``x.__dict__["_name"]``,
    ``vars(x)["_name"]``) or through ``operator.attrgetter``; and imports of confluent's private modules or
    underscore names. Not judged (it cannot be, statically): an attribute name computed at run time."""
    import ast
    import importlib
    import inspect as _inspect

    tree = ast.parse(source)
    found: list[str] = []
    cf_modules: set[str] = set()  # local names bound to confluent_kafka modules
    imports_confluent = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "confluent_kafka":
                    imports_confluent = True
                    cf_modules.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "confluent_kafka":
            imports_confluent = True
            parent = importlib.import_module(node.module or "")
            for a in node.names:
                if _inspect.ismodule(getattr(parent, a.name, None)):
                    cf_modules.add(a.asname or a.name)

    def confluent_self(classes: list[str]) -> bool:
        obj: object = importlib.import_module(module_name)  # only modules with classes: never a __main__
        for name in classes:
            obj = getattr(obj, name, None)
        return _is_confluent_subclass(obj)

    def visit(node: ast.AST, classes: list[str]) -> None:
        if isinstance(node, ast.ClassDef):
            classes = [*classes, node.name]
        names: list[tuple[ast.expr, str]] = []
        if isinstance(node, ast.Attribute):
            names.append((node.value, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            names.append((node.args[0], node.args[1].value))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in cf_modules:
            if node.attr.startswith("_") and node.attr not in ("__name__", "__version__"):
                found.append(f"{module_name}:{node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and imports_confluent:
            func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if func == "attrgetter" and any(isinstance(a, ast.Constant) and a.value in private for a in node.args):
                found.append(f"{module_name}:{node.lineno}: attrgetter")
            if func == "vars" and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in cf_modules:
                found.append(f"{module_name}:{node.lineno}: vars({node.args[0].id})")
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            if isinstance(node.value, ast.Name) and node.value.id in cf_modules:
                found.append(f"{module_name}:{node.lineno}: {node.value.id}.__dict__")
        namespace = isinstance(node, ast.Subscript) and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "__dict__")
            or (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "vars"
            )
        )
        if namespace and isinstance(node.slice, ast.Constant) and node.slice.value in private:
            found.append(f"{module_name}:{node.lineno}: namespace[{node.slice.value!r}]")
        for target, name in names:
            if name not in private:
                continue
            own = isinstance(target, ast.Name) and target.id in ("self", "cls") and not confluent_self(classes)
            if not own:
                found.append(f"{module_name}:{node.lineno}: .{name}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in modules:
                if m.startswith("confluent_kafka") and any(p.startswith("_") for p in m.split(".")):
                    found.append(f"{module_name}:{node.lineno}: import {m}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("confluent_kafka"):
                found.extend(f"{module_name}:{node.lineno}: import {a.name}" for a in node.names if a.name[:1] == "_")
        for child in ast.iter_child_nodes(node):
            visit(child, classes)

    visit(tree, [])
    return found


def test_only_the_quarantine_modules_touch_confluents_private_api() -> None:
    import pathlib

    import fieldcrypt

    root = pathlib.Path(fieldcrypt.__file__).parent
    private = _confluent_private_names()
    assert {"_registry", "_schema", "_execute_rules", "_get_parsed_schema", "_rest_client"} <= private
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name in QUARANTINE:
            continue
        found += _private_uses(name, path.read_text(encoding="utf-8"), private)
    assert not found, "confluent's private API outside " + ", ".join(sorted(QUARANTINE)) + ":\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "from confluent_kafka.schema_registry.avro import AvroSerializer\ndef f(s): return s._registry",
        "from confluent_kafka.schema_registry.avro import AvroSerializer\ndef f(s): return getattr(s, '_registry')",
        "from confluent_kafka.schema_registry.avro import AvroSerializer\ndef f(s): return s.__dict__['_registry']",
        "from confluent_kafka.schema_registry.avro import AvroSerializer\ndef f(s): return vars(s)['_registry']",
        "import operator\nfrom confluent_kafka.schema_registry import avro\nf = operator.attrgetter('_registry')",
        "from confluent_kafka.schema_registry.common import avro as ca\nf = ca._schema_loads",
        "from confluent_kafka.schema_registry.common import json_schema\nenv = dict(vars(json_schema))",
        "import confluent_kafka.schema_registry as sr\nx = sr._sync",
        "from confluent_kafka.schema_registry.common import _private_thing",
        "from confluent_kafka.schema_registry._sync import avro",
    ],
)
def test_the_quarantine_check_catches_private_uses(snippet: str) -> None:
    """The check above is one that can fail: each way of reaching confluent's internals is found."""
    assert _private_uses("fieldcrypt.core.plan", snippet, _confluent_private_names()), snippet


def test_the_quarantine_check_leaves_public_uses_alone() -> None:
    snippet = (
        "from confluent_kafka.schema_registry import Schema\n"
        "from confluent_kafka.schema_registry.common import avro as ca\n"
        "class Mine:\n    def f(self): return self._registry\n"
        "def g(s): return Schema(s.schema_str, 'AVRO'), ca.transform, getattr(s, 'schema_str')"
    )
    assert _private_uses("fieldcrypt.core.plan", snippet, _confluent_private_names()) == []


_BUILT_SER = ["registry_client", "registry_conf", "schema", "to_dict", "serializer_conf", "rule_conf", "rule_registry"]
_BUILT_DE = [
    "registry_client",
    "registry_conf",
    "schema",
    "from_dict",
    "deserializer_conf",
    "rule_conf",
    "rule_registry",
]
BUILT = {
    "AvroSerializerBuilder": [*_BUILT_SER, "serializer_init"],
    "AvroDeserializerBuilder": [*_BUILT_DE, "return_record_name", "deserializer_init"],
    "JSONSerializerBuilder": [*_BUILT_SER, "json_encode", "serializer_init"],
    "JSONDeserializerBuilder": [*_BUILT_DE, "json_decode", "deserializer_init"],
    "ProtobufSerializerBuilder": ["registry_client", "registry_conf", "msg_type", "serializer_conf", "rule_conf",
                                  "rule_registry", "serializer_init"],
    "ProtobufDeserializerBuilder": ["registry_client", "registry_conf", "msg_type", "deserializer_conf", "rule_conf",
                                    "rule_registry", "deserializer_init"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUILT))
@pytest.mark.parametrize("flavour", ["", "Async"])
def test_the_serde_builders_keep_what_fieldcrypts_builders_read(name: str, flavour: str) -> None:
    """fieldcrypt's builder twins read what the application set on confluent's builder (fieldcrypt.core.confluent
    built_values): each private attribute must hold the value given to the constructor."""
    from confluent_kafka.schema_registry import avro, json_schema, protobuf

    from fieldcrypt.core.confluent import BUILDER, built_values

    module = avro if name.startswith("Avro") else json_schema if name.startswith("JSON") else protobuf
    builder_cls = getattr(module, flavour + name)
    builder = builder_cls()
    for field in BUILT[name]:
        assert hasattr(builder, BUILDER[field]), (flavour + name, BUILDER[field])
    marker = object()
    given, field = ({"message_type": marker}, "msg_type") if module is protobuf else ({"schema": marker}, "schema")
    assert built_values(builder_cls(**given))[field] is marker
