"""Random schemas with tags in random places, and a record for each, for the tag-coverage property tests.

Every string/bytes value of a generated record is a unique marker, and the generator knows, independently of
fieldcrypt's compiler, which markers are tagged ``PII`` (a field tag flows into the field's type through array
items, map values and union branches, not into nested records; a tag on a type schema applies to that type) and
whether the schema must be refused (a malformed tag, a tag nobody configured, a ``metadata.tags`` pattern that
matches no field). The property: fieldcrypt refuses the schema, or no PII marker reaches the wire.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

#: conf every generated schema is compiled with: PII encrypted, PUBLIC declared plaintext
CONF = {"fieldcrypt.tags": ["PII"], "fieldcrypt.plaintext.tags": ["PUBLIC"]}
_TAGS: list[Any] = [None] * 5 + [["PII"]] * 4 + [["PUBLIC"]] * 2 + [["PII", "PUBLIC"], []]
_BAD_TAGS: list[Any] = [
    ["OTHER"],
    "PII",
    [1],
]  # undeclared, a string, not strings, not JSON


@dataclass
class Generated:
    schema: Any
    record: Any
    secret: list[bytes] = field(default_factory=list)  # markers tagged PII: must never be on the wire
    clear: list[bytes] = field(default_factory=list)  # markers nobody tagged: must be on the wire
    must_refuse: list[str] = field(default_factory=list)  # why the schema must be refused, if it must
    metadata: dict[str, tuple[str, ...]] = field(default_factory=dict)
    placements: int = 0  # tag placements carrying PII


class _Avro:
    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.n = 0
        self.g = Generated(None, None)
        self.fields: list[str] = []  # Record.field names, for metadata patterns

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def _tags(self) -> tuple[Any, set[str]]:
        """A random "confluent:tags" value (None: absent) and the tags it contributes."""
        raw = self.r.choice(_BAD_TAGS[:3]) if self.r.random() < 0.03 else self.r.choice(_TAGS)
        if raw is None:
            return None, set()
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            self.g.must_refuse.append(f"malformed tags {raw!r}")
            return raw, set()
        if "OTHER" in raw:
            self.g.must_refuse.append("undeclared tag OTHER")
        if "PII" in raw:
            self.g.placements += 1
        return raw, set(raw)

    def _marker(self, kind: str, tagged: bool) -> Any:
        text = f"plain{self.n:04d}-{''.join(self.r.choice('abcdefghijklmnop') for _ in range(14))}"
        self.n += 1
        (self.g.secret if tagged else self.g.clear).append(text.encode())
        return text if kind == "string" else text.encode()

    def type_(self, depth: int, inherited: set[str]) -> tuple[Any, Any]:
        """(schema, value) for a random type; ``inherited``: the enclosing field's tags."""
        r = self.r
        choices = ["string", "string", "string", "bytes", "int", "enum", "fixed"]
        if depth > 0:
            choices += ["array", "map", "record", "nullable", "records_union", "array", "record"]
        kind = r.choice(choices)
        unions = kind in ("nullable", "records_union")  # a union is a JSON list: it has no place for tags
        raw, own = self._tags() if not unions and r.random() < 0.25 else (None, set())
        tags = inherited | own

        def with_tags(schema: dict[str, Any]) -> dict[str, Any]:
            if raw is not None:
                schema["confluent:tags"] = raw
            return schema

        if kind in ("string", "bytes"):
            schema: Any = with_tags({"type": kind}) if raw is not None or r.random() < 0.5 else kind
            return schema, self._marker(kind, "PII" in tags)
        if kind == "int":
            return (with_tags({"type": "int"}) if raw is not None else "int"), r.randint(-5, 5)
        if kind == "enum":
            return with_tags({"type": "enum", "name": self._name("E"), "symbols": ["A", "B"]}), "A"
        if kind == "fixed":
            return with_tags({"type": "fixed", "name": self._name("F"), "size": 4}), b"\x00\x01\x02\x03"
        if kind == "array":
            items, first = self.type_(depth - 1, tags)
            values = [first]
            return with_tags({"type": "array", "items": items}), values
        if kind == "map":
            values, first = self.type_(depth - 1, tags)
            return with_tags({"type": "map", "values": values}), {"k0": first}
        if kind == "record":
            return self.record(depth - 1, tagged_as_value="PII" in tags, raw=raw)
        if kind == "nullable":
            marks = len(self.g.secret), len(self.g.clear)
            inner, value = self.type_(depth - 1, inherited)
            if r.random() < 0.2:  # null: the markers generated for the value are not in the record
                del self.g.secret[marks[0] :], self.g.clear[marks[1] :]
                value = None
            return ["null", inner], value
        # a union of two record types (and null): the value follows one of them
        before = len(self.g.secret), len(self.g.clear)
        a, va = self.record(depth - 1)
        middle = len(self.g.secret), len(self.g.clear)
        b, vb = self.record(depth - 1)
        if "PII" in inherited:
            self.g.must_refuse.append("PII on a union of records")
        if r.random() < 0.5:  # the value is an A: B's markers are not in the record
            del self.g.secret[middle[0] :], self.g.clear[middle[1] :]
            return ["null", a, b], va
        a_secret = self.g.secret[before[0] : middle[0]]
        a_clear = self.g.clear[before[1] : middle[1]]
        self.g.secret = [m for m in self.g.secret if m not in a_secret]
        self.g.clear = [m for m in self.g.clear if m not in a_clear]
        return ["null", a, b], (f"gen.{b['name']}", vb) if r.random() < 0.5 else vb

    def record(self, depth: int, *, tagged_as_value: bool = False, raw: Any = None) -> tuple[Any, Any]:
        name = self._name("R")
        if tagged_as_value:
            self.g.must_refuse.append("PII on a record type")
        fields, value = [], {}
        for _ in range(self.r.randint(1, 3)):
            fname = self._name("f")
            f_raw, f_tags = self._tags()
            ftype, fvalue = self.type_(depth, f_tags)
            f: dict[str, Any] = {"name": fname, "type": ftype}
            if f_raw is not None:
                f["confluent:tags"] = f_raw
            fields.append(f)
            value[fname] = fvalue
            self.fields.append(f"{name}.{fname}")
        schema: dict[str, Any] = {"type": "record", "name": name, "fields": fields}
        if raw is not None:
            schema["confluent:tags"] = raw
        return schema, value


def avro(seed: int) -> Generated:
    gen = _Avro(random.Random(seed))
    schema, value = gen.record(gen.r.randint(1, 3))
    schema["namespace"] = "gen"
    gen.g.schema, gen.g.record = schema, value
    if gen.r.random() < 0.2:
        target = gen.r.choice(gen.fields)
        if gen.r.random() < 0.7:
            gen.g.metadata[target] = ("PUBLIC",)  # plaintext: changes nothing, but must match a field
        else:
            gen.g.metadata[target + "x"] = ("PUBLIC",)
            gen.g.must_refuse.append("metadata.tags pattern that matches no field")
    return gen.g


# -- JSON Schema (draft 2020-12: no "$schema") ---------------------------------------------------------------------
#: keywords whose subschemas apply depending on the data (or never): an encrypting tag inside must be refused
_JSON_REFUSED_PLACES = ("not", "if", "then", "propertyNames", "x-custom")


class _Json(_Avro):
    """Schemas whose tags sit on properties, items, additionalProperties, $ref/$defs, allOf, oneOf, nullable types
    and in refused places. A type builder returns ``(schema, make)``; ``make()`` returns a value valid against the
    schema and records its markers as it goes, so only markers that are really in the document are recorded.

    A PII tag (own, beside a ``$ref``, or from an enclosing array) on a string encrypts it; on an array of strings,
    each item; on a map of strings (``additionalProperties`` only), each value; on any other object, an integer or
    an array of objects it must be refused. PII anywhere inside ``not``/``if``/``then``/``contains``/
    ``propertyNames``/an unknown keyword must be refused.
    """

    def __init__(self, r: random.Random) -> None:
        super().__init__(r)
        self.defs: dict[str, Any] = {}
        #: definitions a further $ref may use: (name, "string"|"nullable"|"object", the definition's tags, make)
        self.reusable: list[tuple[str, str, set[str], Any]] = []

    def _tagged(self, schema: dict[str, Any], p: float = 0.3) -> tuple[dict[str, Any], set[str]]:
        """Maybe tag ``schema`` (with probability ``p``; half of those ``["PII"]``); returns it and its tags."""
        if self.r.random() >= p:
            return schema, set()
        if self.r.random() < 0.5:
            raw, own = self._tags()
        else:
            raw, own = ["PII"], {"PII"}
            self.g.placements += 1
        if raw is not None:
            schema["confluent:tags"] = raw
        return schema, own

    def _refused_place(self, keyword: str) -> dict[str, Any]:
        """A subschema for ``keyword`` that never changes validity of the generated documents."""
        if self.r.random() < 0.6:
            raw, own = self._tags()
        else:  # the interesting case, more often than _tags() would draw it
            raw, own = ["PII"], {"PII"}
            self.g.placements += 1
        if "PII" in own:
            self.g.must_refuse.append(f"PII inside {keyword}")
        inner: dict[str, Any] = {"type": "string"}
        if raw is not None:
            inner["confluent:tags"] = raw
        if keyword != "contains" and self.r.random() < 0.5:
            # an object with a required property no document has: false for every generated object (and, for
            # propertyNames, properties/required do not apply to the names, which are strings)
            name = self._name("zz")
            inner = {"properties": {name: inner}, "required": [name]}
        elif keyword == "x-custom" and raw is not None and self.r.random() < 0.5:
            inner = {"confluent:tags": raw}  # no schema keyword at all: still a tag placement
        return inner

    def type_(self, depth: int, inherited: set[str], kinds: tuple[str, ...] | None = None) -> tuple[Any, Any]:
        r = self.r
        if kinds is None:
            kinds = ("string", "string", "string", "integer", "nullable")
            if depth > 0:
                kinds += ("array", "array", "object", "object", "map", "ref", "ref", "allOf", "oneOf")
        kind = r.choice(kinds)
        if kind == "string":
            schema, own = self._tagged({"type": "string"}, 0.4)
            secret = "PII" in inherited | own
            return schema, lambda: self._marker("string", secret)
        if kind == "integer":
            schema, own = self._tagged({"type": "integer"}, 0.1)
            if "PII" in inherited | own:
                self.g.must_refuse.append("PII on an integer")
            return schema, lambda: r.randint(-5, 5)
        if kind == "nullable":
            schema, own = self._tagged({"type": ["string", "null"]})
            secret = "PII" in inherited | own
            return schema, lambda: None if r.random() < 0.2 else self._marker("string", secret)
        if kind == "array":
            holder, own = self._tagged({"type": "array"})
            tags = inherited | own
            item_kinds = ("string", "string", "object", "ref", "nullable", "oneOf", "allOf")
            items, make_item = self.type_(depth - 1, tags, item_kinds)
            holder["items"] = items
            is_strings = isinstance(items, dict) and items.get("type") == "string"
            if is_strings and r.random() < 0.4:
                holder["contains"] = self._refused_place("contains")
            count = r.randint(1, 2)
            return holder, lambda: [make_item() for _ in range(count)]
        if kind == "map":
            holder, own = self._tagged({"type": "object"})
            tags = inherited | own
            values, make_value = self.type_(depth - 1, tags, ("string", "string", "object", "ref", "nullable"))
            holder["additionalProperties"] = values
            keys = [self._name("x") for _ in range(r.randint(1, 2))]
            return holder, lambda: {k: make_value() for k in keys}
        if kind == "ref":
            ref, own = self._tagged({}, 0.2)  # a tag beside $ref applies to the target
            tags = inherited | own
            if self.reusable and r.random() < 0.5:  # a second $ref to a definition
                name, target_kind, def_tags, make = r.choice(self.reusable)
                ref["$ref"] = f"#/$defs/{name}"
                if target_kind == "object":
                    if "PII" in tags:
                        self.g.must_refuse.append("PII beside a $ref to an object")
                    return ref, make
                secret = "PII" in tags | def_tags
                nullable = target_kind == "nullable"
                return ref, lambda: None if nullable and r.random() < 0.2 else self._marker("string", secret)
            name = self._name("D")
            ref["$ref"] = f"#/$defs/{name}"
            target, make = self.type_(depth - 1, tags, ("string", "string", "object", "nullable"))
            self.defs[name] = target
            def_tags = target.get("confluent:tags")
            if target.get("type") == "object":
                if "PII" not in tags:
                    self.reusable.append((name, "object", set(), make))
            elif (isinstance(def_tags, list) and all(isinstance(t, str) for t in def_tags)) or def_tags is None:
                target_kind = "string" if target["type"] == "string" else "nullable"
                self.reusable.append((name, target_kind, set(def_tags or ()), None))
            return ref, make
        if kind == "allOf":
            holder, own = self._tagged({}, 0.08)
            tags = inherited | own
            if "PII" in tags:
                self.g.must_refuse.append("PII on an allOf of objects")
            # no additionalProperties in a branch: it would apply to the other branch's properties
            a, make_a = self.object(depth - 1, set(), extra=False)
            b, make_b = self.object(depth - 1, set(), extra=False)
            shared = self._shared([a, b], untyped_second=True) if r.random() < 0.4 else None
            if r.random() < 0.3:  # a branch through $ref
                name = self._name("D")
                self.defs[name], b = b, {"$ref": f"#/$defs/{name}"}
            holder["allOf"] = [a, b]
            if shared is None:
                return holder, lambda: {**make_a(), **make_b()}
            name, tagged = shared
            secret = any(tagged)  # both branches apply to the one value
            return holder, lambda: {**make_a(), **make_b(), name: self._marker("string", secret)}
        if kind == "oneOf":
            holder, own = self._tagged({}, 0.08)
            if "PII" in inherited | own:
                self.g.must_refuse.append("PII on a oneOf of objects")
            branches, makes = [], []
            for const in ("a", "b"):
                branch, make = self.object(depth - 1, set())
                branch["properties"] = {"kind": {"const": const}, **branch["properties"]}
                branch["required"] = ["kind"]
                branches.append(branch)
                makes.append((const, make))
            holder["oneOf"] = branches
            chosen = r.randrange(2)
            const, make = makes[chosen]
            if r.random() < 0.4:  # a property in both branches, tagged in either, neither or both
                name, tagged = self._shared(branches)
                secret = tagged[chosen]  # only the branch the value validates against applies
                return holder, lambda: {"kind": const, **make(), name: self._marker("string", secret)}
            return holder, lambda: {"kind": const, **make()}
        return self.object(depth - 1, inherited)

    def _shared(self, branches: list[dict[str, Any]], untyped_second: bool = False) -> tuple[str, list[bool]]:
        """Declare one more string property in every branch, each maybe tagged; which branches tag it PII."""
        name, tagged = self._name("s"), []
        for i, branch in enumerate(branches):
            untyped = untyped_second and i == 1 and self.r.random() < 0.5  # only a tag: the type is in branch a
            schema, own = self._tagged({} if untyped else {"type": "string"}, 0.5)
            branch["properties"][name] = schema
            tagged.append("PII" in own)
        return name, tagged

    def object(self, depth: int, inherited: set[str], *, extra: bool = True) -> tuple[dict[str, Any], Any]:
        """An object with 1-3 properties, maybe ``additionalProperties`` and a refused-place keyword."""
        r = self.r
        schema, own = self._tagged({"type": "object"}, 0.08)
        if "PII" in inherited | own:
            self.g.must_refuse.append("PII on an object with properties")
        props: dict[str, Any] = {}
        makes: list[tuple[str, Any]] = []
        for _ in range(r.randint(1, 3)):
            name = self._name("p")
            props[name], make = self.type_(max(depth, 0), set())
            makes.append((name, make))
        schema["properties"] = props
        more: list[tuple[str, Any]] = []
        if extra and r.random() < 0.25:
            values, make_value = self.type_(depth - 1, set(), ("string", "string", "nullable", "object", "ref"))
            schema["additionalProperties"] = values
            more = [(self._name("x"), make_value)]
        if r.random() < 0.12:
            keyword = r.choice(_JSON_REFUSED_PLACES)
            inner = self._refused_place(keyword)
            if keyword == "then":
                schema["if"] = {"type": "string"}  # false for an object: "then" never applies
            schema[keyword] = inner
        return schema, lambda: {name: make() for name, make in makes + more}


def json_schema(seed: int) -> Generated:
    gen = _Json(random.Random(seed))
    kind = gen.r.choice(["object", "object", "allOf", "oneOf"])
    schema, make = gen.type_(gen.r.randint(1, 3), set(), (kind,))
    if gen.defs:
        schema["$defs"] = gen.defs
    gen.g.schema, gen.g.record = schema, make()
    return gen.g


# -- Protobuf (confluent's (confluent.field_meta).tags, message_meta, file_meta, enum_meta) ------------------------
#: field kinds a generated message draws from: (kind, encryptable when PII-tagged)
_PROTO_KINDS = ["string", "string", "bytes", "int32", "enum", "message", "optional", "oneof", "repeated_string",
                "repeated_message", "map_string", "map_int", "map_message"]  # fmt: skip


class _Proto:
    """A random Protobuf schema (a root file and a file it imports) and the value of its first message. Values are
    built as a spec (field name -> value) and set on the message once the files are in a pool."""

    def __init__(self, r: random.Random, seed: int) -> None:
        from tests.proto_schemas import enum as _enum

        self.r = r
        self.n = 0
        self.g = Generated(None, None)
        self.seed = seed
        self.fields: list[str] = []  # full names, for metadata patterns
        self.dep_messages: list[Any] = []
        self._enum = _enum

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def _tags(self, p: float = 0.4) -> list[str] | None:
        if self.r.random() > p:
            return None
        raw = self.r.choice([["PII"]] * 4 + [["PUBLIC"]] * 2 + [["PII", "PUBLIC"], [], ["OTHER"]])
        if "OTHER" in raw:
            self.g.must_refuse.append("undeclared tag OTHER")
        if "PII" in raw:
            self.g.placements += 1
        return list(raw)

    def _marker(self, tagged: bool) -> str:
        text = f"plain{self.n:04d}-{''.join(self.r.choice('abcdefghijklmnop') for _ in range(14))}"
        self.n += 1
        (self.g.secret if tagged else self.g.clear).append(text.encode())
        return text

    def message(
        self, package: str, depth: int, in_dep: bool = False, pkg: str | None = None
    ) -> tuple[Any, str, dict[str, Any]]:
        """(DescriptorProto, full name, value spec) of a new message type, named under ``package`` (a file's package,
        or the message it is nested in) in the file of package ``pkg``."""
        pkg = pkg or package
        from tests.proto_schemas import field as _field
        from tests.proto_schemas import map_entry, message

        name = self._name("M")
        full = f"{package}.{name}"
        fields, nested, spec, oneofs, enums = [], [], {}, [], []
        msg_tags = self._tags(0.1)
        if msg_tags and {"PII"} & set(msg_tags):
            self.g.must_refuse.append("PII in message_meta")
        number = 0
        for _ in range(self.r.randint(1, 3)):
            number += 1
            fname = self._name("f")
            tags = self._tags()
            pii = bool(tags and "PII" in tags)
            kinds = _PROTO_KINDS if depth > 0 else [k for k in _PROTO_KINDS if "message" not in k]
            kind = self.r.choice(kinds)
            self.fields.append(f"{full}.{fname}")
            if kind in ("string", "bytes"):
                fields.append(_field(fname, number, kind, tags=tags))
                m = self._marker(pii)
                spec[fname] = m if kind == "string" else m.encode()
            elif kind == "optional":
                fields.append(_field(fname, number, "string", tags=tags, optional=True, oneof=len(oneofs)))
                oneofs.append(f"_{fname}")
                spec[fname] = self._marker(pii)
            elif kind == "oneof":
                oneofs.insert(0, f"o{fname}")  # (a real oneof first: synthetic ones must come last)
                for f in fields:
                    if f.HasField("oneof_index"):
                        f.oneof_index += 1
                fields.append(_field(fname, number, "string", tags=tags, oneof=0))
                number += 1
                fields.append(_field(fname + "n", number, "int32", oneof=0))
                spec[fname] = self._marker(pii)
            elif kind == "int32":
                fields.append(_field(fname, number, "int32", tags=tags))
                spec[fname] = self.r.randint(1, 9)
                if pii:
                    self.g.must_refuse.append("PII on an int32")
            elif kind == "enum":
                ename = self._name("E")
                etags = self._tags(0.2)
                if etags and "PII" in etags:
                    self.g.must_refuse.append("PII in enum_meta")
                enums.append(self._enum(ename, [f"{ename}_ZERO", f"{ename}_ONE"], tags=etags))
                fields.append(_field(fname, number, "enum", tags=tags, type_name=f".{full}.{ename}"))
                spec[fname] = 1
                if pii:
                    self.g.must_refuse.append("PII on an enum")
            elif kind == "repeated_string":
                fields.append(_field(fname, number, "string", tags=tags, repeated=True))
                spec[fname] = [self._marker(pii), self._marker(pii)]
            elif kind in ("message", "repeated_message", "map_message"):
                where = self.r.random()
                if where < 0.3 and not in_dep:  # a type of the imported file (a reference)
                    d, dfull, dspec = self.message(f"dep{self.seed}", depth - 1, in_dep=True)
                    self.dep_messages.append(d)
                    type_name = f".{dfull}"
                elif where < 0.6:  # a nested type
                    d, _, dspec = self.message(full, depth - 1, in_dep, pkg)
                    nested.append(d)
                    type_name = f".{full}.{d.name}"
                else:
                    d, dfull, dspec = self.message(pkg, depth - 1, in_dep, pkg)
                    self.extra.setdefault(pkg, []).append(d)
                    type_name = f".{dfull}"
                if pii:
                    self.g.must_refuse.append("PII on a message-typed field")
                if kind == "message":
                    fields.append(_field(fname, number, "message", tags=tags, type_name=type_name))
                    spec[fname] = dspec
                elif kind == "repeated_message":
                    fields.append(_field(fname, number, "message", tags=tags, type_name=type_name, repeated=True))
                    spec[fname] = [dspec]
                else:
                    entry = f"{fname.capitalize()}Entry"
                    nested.append(map_entry(entry, "string", "message", type_name))
                    fields.append(
                        _field(fname, number, "message", tags=tags, type_name=f".{full}.{entry}", repeated=True)
                    )
                    spec[fname] = {"k0": dspec}
            else:  # map_string, map_int: values are the tagged values, keys stay clear
                key = "string" if kind == "map_string" else "int32"
                entry = f"{fname.capitalize()}Entry"
                nested.append(map_entry(entry, key, "string"))
                fields.append(_field(fname, number, "message", tags=tags, type_name=f".{full}.{entry}", repeated=True))
                spec[fname] = {("k0" if key == "string" else 7): self._marker(pii)}
        d = message(name, fields, nested=nested, oneofs=oneofs, tags=msg_tags, enums=enums)
        return d, full, spec

    extra: dict[str, list[Any]]


def _fill(msg: Any, spec: dict[str, Any]) -> Any:
    for name, value in spec.items():
        fd = msg.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        if isinstance(value, dict) and fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(v, dict):
                    _fill(target[k], v)
                else:
                    target[k] = v
        elif isinstance(value, dict):
            _fill(target, value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, dict):
                    _fill(target.add(), v)
                else:
                    target.append(v)
        else:
            setattr(msg, name, value)
    return msg


def protobuf(seed: int) -> Generated:
    """A generated Protobuf schema: ``schema`` is (its files, in dependency order; the root message's full name),
    ``record`` a message of it (the class made from a pool of those files)."""
    from tests.proto_schemas import cls, file, files

    gen = _Proto(random.Random(seed), seed)
    gen.extra = {}
    package = f"gen{seed}"
    root, root_full, spec = gen.message(package, gen.r.randint(1, 3))
    dep_package = f"dep{seed}"
    ftags = gen._tags(0.1)
    if ftags and "PII" in ftags:
        gen.g.must_refuse.append("PII in file_meta")
    dep_files = []
    if gen.dep_messages or gen.extra.get(dep_package):
        dep_files.append(file(f"dep{seed}.proto", dep_package, gen.dep_messages + gen.extra.get(dep_package, [])))
    root_file = file(
        f"gen{seed}.proto",
        package,
        [root, *gen.extra.get(package, [])],
        deps=[f.name for f in dep_files],
        tags=ftags,
    )
    protos = [*dep_files, root_file]
    message_class = cls(files(*protos), root_full)
    gen.g.schema = (protos, root_full)
    gen.g.record = _fill(message_class(), spec)
    if gen.r.random() < 0.2:
        target = gen.r.choice(gen.fields)
        if gen.r.random() < 0.7:
            gen.g.metadata[target] = ("PUBLIC",)
        else:
            gen.g.metadata[target + "x"] = ("PUBLIC",)
            gen.g.must_refuse.append("metadata.tags pattern that matches no field")
    return gen.g
