"""Messages as the engine sees them: a *projection* of a Protobuf message is a plain ``dict`` tree shaped like the
field plan (only the fields the plan steps into, and the path to the data-subject id), so the format-neutral engine
(``fieldcrypt.core.engine``) encrypts and decrypts Protobuf values unchanged; :meth:`Projector.apply` writes its
output back into the message (one fieldcrypt owns: never the caller's).

    projection = projector.project(message)     # {"name": "Ann", "address": {"street": "..."}, "tags": ["a", "b"]}
    projector.apply(engine_output, message)      # each leaf set, cleared (None where presence allows) or kept

Unset fields with presence (``optional``, ``oneof`` members, message fields) project as None (the engine skips them);
map keys project as text (a string key as it is, an integer as its decimal digits, a bool as ``true``/``false``),
so value paths read ``Order.counts["5"]``; a map's entries project in key order (the wire does not keep their order,
and each value's position in the record is bound to it).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from fieldcrypt.core.plan import ArrayNode, FieldPlan, Leaf, MapNode, Node, NullableNode, RecordNode, RefNode
from fieldcrypt.errors import EncryptionError

__all__ = ["Projection", "Projector", "key_text", "number_paths", "unknown_fields"]


def key_text(k: Any) -> str:
    """A map key as the projection spells it."""
    if isinstance(k, bool):
        return "true" if k else "false"
    return k if isinstance(k, str) else str(k)


def number_paths(plan: FieldPlan, root: Descriptor) -> dict[tuple[int, ...], str]:
    """What a plan encrypts, by field numbers from the root message (the identity of a field on the wire, whatever
    its name), each with the leaf's path; the data-subject id's numbers map to ``(data-subject id)``. A recursive
    message is followed once."""
    found: dict[tuple[int, ...], str] = {}

    def walk(node: Node | None, desc: Descriptor, at: tuple[int, ...], seen: frozenset[str]) -> None:
        if isinstance(node, RefNode):
            if node.name in seen:
                return
            seen = seen | {node.name}
            node = plan.named.get(node.name)
        if not isinstance(node, RecordNode):
            return
        for step in node.steps:
            fd = desc.fields_by_name.get(step.name)
            if fd is None:
                continue
            inner: Node | None = step.node
            while isinstance(inner, (NullableNode, ArrayNode, MapNode)):
                inner = (
                    inner.child
                    if isinstance(inner, NullableNode)
                    else (inner.items if isinstance(inner, ArrayNode) else inner.values)
                )
            if isinstance(inner, Leaf):
                found[(*at, fd.number)] = inner.path
                continue
            target = fd.message_type
            if target is not None and target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
            if target is not None:
                walk(inner, target, (*at, fd.number), seen)

    walk(plan.root, root, (), frozenset())
    if plan.data_subject:
        desc, numbers = root, []
        for name in plan.data_subject:
            fd = desc.fields_by_name[name]
            numbers.append(fd.number)
            desc = fd.message_type
        found[tuple(numbers)] = "(data-subject id)"
    return found


def unknown_fields(message: Message) -> bool:
    """Whether a message holds, anywhere in it, fields its descriptor does not declare."""
    cls = type(message)  # (methods through the class: a field may shadow one on the instance, as "ByteSize" can)
    copy = cls()
    cls.CopyFrom(copy, message)
    before = cls.ByteSize(copy)
    cls.DiscardUnknownFields(copy)
    return bool(cls.ByteSize(copy) != before)


class Projection(dict):  # type: ignore[type-arg]
    """A message's projection (a plain dict to the engine) that keeps the message it was made from: confluent's
    rule machinery (a Confluent CSFLE read) runs on that message, never on the dict. A deep copy copies both."""

    message: Message


class Projector:
    """The projection of messages of one root type under one plan (compiled per plan and root descriptor)."""

    def __init__(self, plan: FieldPlan, root: Descriptor) -> None:
        self.plan = plan
        self.root = root
        #: the data-subject path's fields, by message full name: field name -> the rest of the path
        self._subject: dict[str, dict[str, tuple[str, ...]]] = {}
        if plan.data_subject:
            desc = root
            names = plan.data_subject
            for i, name in enumerate(names):
                self._subject.setdefault(desc.full_name, {})[name] = tuple(names[i + 1 :])
                fd = desc.fields_by_name[name]
                if i + 1 < len(names):
                    desc = fd.message_type
        self._ds = plan.data_subject

    # -- message -> dict ----------------------------------------------------------------------------------------
    def project(self, message: Message) -> Projection:
        node = self.plan.root
        out = Projection(self._record(node, message, self._ds or ()))
        out.message = message
        return out

    def _named(self, node: Node | None) -> RecordNode | None:
        if isinstance(node, RefNode):
            return self.plan.named[node.name]
        assert node is None or isinstance(node, RecordNode)
        return node

    def _record(self, node: Node | None, msg: Message, ds: tuple[str, ...]) -> dict[str, Any]:
        record = self._named(node)
        out: dict[str, Any] = {}
        if record is not None:
            for step in record.steps:
                out[step.name] = self._value(step.node, msg, step.name)
        if ds:
            name, rest = ds[0], ds[1:]
            fd: FieldDescriptor = type(msg).DESCRIPTOR.fields_by_name[name]
            if rest:
                inner = getattr(msg, name) if type(msg).HasField(msg, name) else None
                if inner is None:
                    out.setdefault(name, None)
                else:
                    have = out.get(name)
                    sub = self._record(None, inner, rest)
                    if isinstance(have, dict):
                        have.update({k: v for k, v in sub.items() if k not in have})
                    else:
                        out[name] = sub
            else:
                if fd.has_presence and not type(msg).HasField(msg, name):
                    out[name] = None
                else:
                    v = getattr(msg, name)
                    out[name] = None if (not fd.has_presence and v in ("", 0)) else v
        return out

    def _value(self, node: Node, msg: Message, name: str) -> Any:
        if isinstance(node, NullableNode):
            if not type(msg).HasField(msg, name):
                return None
            return self._one(node.child, getattr(msg, name))
        if isinstance(node, ArrayNode):
            items = node.items
            assert items is not None
            values = getattr(msg, name)
            if isinstance(items, Leaf):
                return list(values)
            return [self._record(items, m, ()) for m in values]
        if isinstance(node, MapNode):
            # in key order: a map's order on the wire is not kept, and a value's position in the record is bound
            values = sorted(getattr(msg, name).items())
            if isinstance(node.values, Leaf):
                return {key_text(k): v for k, v in values}
            return {key_text(k): self._record(node.values, v, ()) for k, v in values}
        return self._one(node, getattr(msg, name))

    def _one(self, node: Node, value: Any) -> Any:
        if isinstance(node, Leaf):
            return value
        return self._record(node, value, ())

    # -- dict -> message ----------------------------------------------------------------------------------------
    def apply(self, projection: Any, message: Message) -> Message:
        """Write the engine's output for ``message``'s projection back into ``message`` (changed in place)."""
        node = self.plan.root
        if node is not None:
            self._apply_record(node, projection, message)
        return message

    def _apply_record(self, node: Node, out: Any, msg: Message) -> None:
        record = self._named(node)
        assert record is not None
        if not isinstance(out, dict):
            raise EncryptionError("the engine returned no message")
        for step in record.steps:
            self._apply_value(step.node, out.get(step.name), msg, step.name)

    def _apply_value(self, node: Node, v: Any, msg: Message, name: str) -> None:
        if isinstance(node, NullableNode):
            if v is None:
                if isinstance(node.child, Leaf) and type(msg).HasField(msg, name):
                    type(msg).ClearField(msg, name)  # an unreadable value standing in as null: the field reads unset
                return
            if isinstance(node.child, Leaf):
                _set(msg, name, v)
            else:
                self._apply_record(node.child, v, getattr(msg, name))
            return
        if isinstance(node, ArrayNode):
            rep = getattr(msg, name)
            items = node.items
            assert items is not None
            if not isinstance(v, list) or len(v) != len(rep):
                raise EncryptionError("the engine returned another number of repeated values")
            if isinstance(items, Leaf):
                for i, x in enumerate(v):
                    if rep[i] is not x:
                        rep[i] = x
            else:
                for i, x in enumerate(v):
                    self._apply_record(items, x, rep[i])
            return
        if isinstance(node, MapNode):
            values = getattr(msg, name)
            if not isinstance(v, dict):
                raise EncryptionError("the engine returned no map")
            if isinstance(node.values, Leaf):
                for k in list(values.keys()):
                    values[k] = v[key_text(k)]
            else:
                for k in list(values.keys()):
                    self._apply_record(node.values, v[key_text(k)], values[k])
            return
        if isinstance(node, Leaf):
            if v is None:
                raise EncryptionError("an unreadable value cannot stand in as null in a field without presence")
            _set(msg, name, v)
            return
        self._apply_record(node, v, getattr(msg, name))


def _set(msg: Message, name: str, v: Any) -> None:
    if getattr(msg, name) is not v:
        setattr(msg, name, v)
