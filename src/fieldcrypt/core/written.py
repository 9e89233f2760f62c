"""The schema a serializer writes, per subject: ``WriteEntries`` resolves it (``schema_str``, ``auto.register.schemas``,
``use.latest.version``, ``use.schema.id``, ``use.latest.with.metadata``) into its plan, framing and schema id, and
keeps a writer from dropping a tag the subject carries (``fieldcrypt.allow.tag.removal``; docs/compatibility.md,
"Tag removal"). Shared by every format's serializer; the read side and the conf keys are in ``core/serde.py``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.serde import SchemaId

from fieldcrypt.core.confluent import (
    auto_registers,
    configured,
    is_confluent_client,
    is_latest_mode,
    rest_client,
    writer_schema,
)
from fieldcrypt.core.plan import FieldPlan, TagRules
from fieldcrypt.core.recorder import Recorder, neutral
from fieldcrypt.core.schemas import registry_failure
from fieldcrypt.core.serde import CachedPlan, PlanCache, schema_fingerprint
from fieldcrypt.errors import (
    ConfigurationError,
    FieldcryptError,
    PolicyError,
)
from fieldcrypt.keys.source import KeySource

__all__ = ["WriteEntries", "encrypted_paths", "value_paths", "writes_path"]

WriteEntry = tuple[CachedPlan, bytes, SchemaId]

#: error codes of a 404 answer to "the latest version of this subject" that mean it has none: subject not found
#: (40401), version not found (40402), and confluent's ``mock://`` registry's 40400. Any other answer is an error.
_NO_LATEST = frozenset({40400, 40401, 40402})


class WriteEntries:
    """What a serializer writes with, per subject (or per subject and schema id in latest mode): the field plan
    and parsed schema, the 5-byte Confluent prefix, and the ``SchemaId`` for other framings.

    It also keeps a writer from dropping a tag the subject carries, unless ``fieldcrypt.allow.tag.removal``: the
    schema written must encrypt every path that the local ``schema_str`` encrypts and, where the schema written
    would write that path in clear (``writes_path``: a field it cannot write is not lost), every path the subject's
    producers encrypted before (the key store's record, per subject name: read once per subject, in latest mode
    once per subject and schema id) and every path any registered version of the subject encrypts (``_registered``:
    the version numbers once per subject, or per subject and schema id, each version read once per serializer).
    Every writer adds what it encrypts to the record. A refusal is kept (the record only grows), so a refused
    subject costs no lookup per record."""

    def __init__(
        self,
        serde: Any,
        plans: PlanCache,
        schema_type: str,
        local_parsed: Any = None,
        local_plan: FieldPlan | None = None,
        allow_tag_removal: bool = False,
        undeclared: Callable[[str, Mapping[str, Any]], bool] | None = None,
        to_register: Callable[[str], Schema] | None = None,
    ) -> None:
        self._serde = serde
        #: the schema to register or look up for a subject, when it is not the serde's own as constructed (Protobuf:
        #: with the references of its imports, registered first); asked once per subject, never in latest mode
        self._to_register = to_register
        self._fmt = plans.fmt  # the format registry reads ask for (Protobuf: serialized)
        self._configured = configured(serde)  # the registry client and local schema confluent's constructor set up
        self._undeclared = undeclared  # the format's: whether a parent value path takes values it does not declare
        self._plans = plans
        self._local_plan = local_plan
        self._allow_removal = allow_tag_removal
        self._type = schema_type
        self._local_parsed = local_parsed  # confluent writes with its own parsed schema when not in latest mode
        self.latest_mode = is_latest_mode(serde)
        self._by_subject: dict[str, WriteEntry] = {}
        self._by_id: dict[tuple[str, int], WriteEntry] = {}  # per subject too: subjects share ids, not records
        self._refused: dict[tuple[str, int | None], FieldcryptError] = {}  # (subject, schema id or None): for good
        #: registered versions read and planned, by (subject, version number): versions do not change
        self._versions: dict[tuple[str, int], tuple[RegisteredSchema, frozenset[str]]] = {}
        self._written: dict[str, dict[str, Any]] = {}  # a schema's fingerprint -> its value paths (value_paths)

    def get(self, subject: str) -> WriteEntry:
        entry = None if self.latest_mode else self._by_subject.get(subject)
        return entry if entry is not None else self._resolve(subject)

    def _resolve(self, subject: str) -> WriteEntry:
        record: tuple[str, list[str]] | None = None  # the key store's record: its name and what it held
        deferred: set[str] = set()  # paths only the latest version's metadata.tags could keep (see _check_local)
        registering = not self.latest_mode and auto_registers(self._serde) and self._local_plan is not None
        if registering:  # checked before the registration: a refused schema is not registered
            assert self._local_plan is not None
            record, deferred = self._check_local(subject, self._local_plan)
        sent = self._to_register(subject) if self._to_register is not None and not self.latest_mode else None
        registered = writer_schema(self._serde, subject, sent, self._fmt)
        if registered.schema_id is None:
            raise ConfigurationError("the registry returned no schema id", subject=subject)
        key = (subject, registered.schema_id)
        known = self._by_id.get(key)
        if known is not None:  # use.latest.version: the same schema as last time
            return known
        if key in self._refused:  # this schema id was refused for this subject, and stays refused
            raise self._refused[key].with_context(subject=subject)
        schema = registered.schema
        if (schema is None or schema.schema_str is None) and not self.latest_mode:
            schema = sent or self._configured.schema  # a registry answering with the id only: what was sent
            if registering and deferred:  # whether it inherited the latest version's metadata.tags: read it back
                schema = self._read_back(subject, registered.schema_id, schema)
        if not registering and not self.latest_mode:
            # auto.register.schemas=False: confluent's client answers a lookup with the schema it was given, not the
            # one registered: plan from the version found, as registered (its metadata.tags), whichever it is
            schema = self._registered_copy(subject, registered)
        cached = self._plans.load(registered.schema_id, subject, schema)
        plan = cached.runner.plan
        if self._local_plan is not None:
            self._check_kept(self._local_plan, plan, subject, "the local schema_str", registered.schema_id)
        written = encrypted_paths(plan)
        if not registering:  # latest mode, or a schema looked up: nothing registered, the schema written is checked
            writes = self._writes(cached.source if cached.source is not None else schema)
            record = self._check_recorded(subject, key, plan, written, writes)
            self._check_registry(subject, key, registered, plan, written, writes)
        elif deferred - written:
            assert record is not None and self._local_plan is not None
            lost = sorted(deferred - written)
            self._refuse_uninherited(subject, record[0], lost, self._local_plan, registered.schema_id)
        if not self.latest_mode and self._local_parsed is not None:
            cached = CachedPlan(cached.schema_id, self._local_parsed, cached.runner, cached.fingerprint, cached.source)
        prefix = b"\x00" + registered.schema_id.to_bytes(4, "big")
        entry = (cached, prefix, SchemaId(self._type, registered.schema_id, registered.guid))
        if record is not None and written - set(record[1]):
            self._merge(record[0], sorted(written), subject)
        if not self.latest_mode:
            self._by_subject[subject] = entry
        elif len(self._by_id) < 1000:
            self._by_id[key] = entry
        return entry

    def _record_names(self, subject: str) -> tuple[str, str]:
        """The key-store record of the paths a subject's producers encrypted, by the subject's name alone (a
        registry's URLs have many spellings: two registries sharing a key store and a subject name share the
        record, which can only refuse too much), and the record's name up to 0.x, by the registry URLs as this
        client spells them, still read so that what was recorded under it is not lost."""
        where = json.dumps(["encrypted-fields", subject])
        urls = getattr(rest_client(self._configured.registry), "base_urls", None) or []
        legacy = json.dumps(["encrypted-fields", sorted(map(str, urls)), subject])
        return tuple(  # type: ignore[return-value]
            "encrypted-fields:" + hashlib.sha256(w.encode("utf-8")).hexdigest() for w in (where, legacy)
        )

    def _read_record(self, subject: str) -> tuple[str, list[str]]:
        """The record's name and the paths it holds (with those of its legacy name, carried over into it)."""
        name, legacy = self._record_names(subject)
        before = self._merge(name, [], subject)
        old = set(self._merge(legacy, [], subject)) - set(before)
        if old:
            self._merge(name, sorted(old), subject)
        return name, sorted(set(before) | old)

    def _merge(self, name: str, paths: list[str], subject: str) -> list[str]:
        """Add ``paths`` to the record (none: just read it); returns what it held before."""
        keyring: KeySource = self._serde._keyring
        try:
            with keyring.metering(self._serde.stats):
                return keyring.merge_policy(name, paths)
        except FieldcryptError as exc:
            raise exc.with_context(subject=subject) from exc

    def _check_local(self, subject: str, local: FieldPlan) -> tuple[tuple[str, list[str]], set[str]]:
        """Before auto-registering the local schema: it must encrypt every path the subject's producers encrypted
        before (the key store's record) and every path any registered version of the subject encrypts, where the
        local schema would write that path in clear (``_writes``: a path it does not have is not lost). Returns the
        record (name, paths) and the lost paths that the latest version's ``metadata.tags`` could still keep: a
        registry that inherits metadata into a version registered without any (Confluent's does; others drop it)
        keeps them, so those are checked in the version the registry answers with (``_refuse_uninherited``)."""
        if (subject, None) in self._refused:
            raise self._refused[(subject, None)].with_context(subject=subject)
        name, before = self._read_record(subject)
        if self._allow_removal:
            return (name, before), set()
        writes = self._writes(self._configured.schema)
        mine = encrypted_paths(local)
        lost_before = {p for p in set(before) - mine if writes(p)}
        by_version: dict[str, tuple[int | None, int | None]] = {}  # a lost path -> the newest version encrypting it
        latest: RegisteredSchema | None = None
        for got, paths, deleted in self._registered(subject, (subject, None), "register"):
            latest = got if latest is None and not deleted else latest
            for path in paths - mine:
                if writes(path):
                    by_version.setdefault(path, (got.schema_id, got.version))
        lost = lost_before | set(by_version)
        if not lost:
            return (name, before), set()
        if (
            latest is not None
            and latest.schema is not None
            and lost <= self._inherited(latest.schema.metadata, subject)
        ):
            return (name, before), lost
        sources = []
        if lost_before:
            sources.append(
                f"{', '.join(sorted(lost_before))} (encrypted by earlier producers of this subject, recorded in the "
                "key store)"
            )
        sources.extend(_version_sources({p: v for p, v in by_version.items() if p not in lost_before}))
        raise self._refusal((subject, None), sorted(lost), local, subject, "the schema to register", "; ".join(sources))

    def _check_recorded(
        self, subject: str, key: tuple[str, int], plan: FieldPlan, written: set[str], writes: Callable[[str], bool]
    ) -> tuple[str, list[str]]:
        """Latest mode (use.latest.version, use.latest.with.metadata, use.schema.id) and a looked-up schema
        (auto.register.schemas=False), once per subject and schema id: the schema written must encrypt every path
        the subject's producers encrypted before, where it would write that path in clear (``_writes``)."""
        name, before = self._read_record(subject)
        lost = sorted(p for p in set(before) - written if writes(p))
        if lost and not self._allow_removal:
            raise self._refusal(
                key,
                lost,
                plan,
                subject,
                f"the schema written (id {key[1]})",
                f"{', '.join(lost)} (encrypted by earlier producers of this subject, recorded in the key store)",
            )
        return name, before

    def _refusal(
        self, key: tuple[str, int | None], lost: list[str], plan: FieldPlan, subject: str, what: str, sources: str
    ) -> FieldcryptError:
        """The error refusing to write without ``lost`` (kept under ``key``): a ConfigurationError when the schema
        still tags them all and this configuration declares them plaintext, else a PolicyError."""
        declared_plain = {loc for loc, _, decision in plan.decisions if decision == "plaintext"}
        exc: FieldcryptError
        if set(lost) <= declared_plain:  # the schema still tags them: this configuration leaves them in clear
            exc = ConfigurationError(
                "this fieldcrypt configuration disagrees with another producer of this subject (recorded in the "
                f"key store): producers encrypt {', '.join(lost)}, which this configuration leaves in clear; "
                "align fieldcrypt.tags and fieldcrypt.plaintext.tags",
                subject=subject,
            )
        else:
            exc = PolicyError(
                f"{what} drops tags the subject carries, so these would be written in clear: {sources}; set "
                "fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )
        if len(self._refused) < 10_000:
            self._refused[key] = exc
        return exc

    def _writes(self, schema: Schema | None) -> Callable[[str], bool]:
        """Whether a schema would put a value of ``path`` on the wire (in clear, unless it encrypts it), once per
        schema text per serializer; see :func:`writes_path`. A schema that cannot be walked writes everything."""
        if schema is None or schema.schema_str is None:
            return lambda path: True
        known = self._written.get(schema_fingerprint(schema))
        if known is None:
            known = value_paths(self._plans, schema)
            if len(self._written) < 10_000:
                self._written[schema_fingerprint(schema)] = known
        values, undeclared = known, self._undeclared
        return lambda path: writes_path(path, values, undeclared)

    def _registered(
        self, subject: str, key: tuple[str, int | None], verb: str, skip: int | None = None
    ) -> Iterator[tuple[RegisteredSchema, frozenset[str], bool]]:
        """Every registered version of ``subject``, newest first (soft-deleted ones too, where the client can list
        them), with the paths it encrypts and whether it is soft-deleted: the version numbers once per call
        (``get_versions``, and with ``deleted=True``), each version read and planned once per serializer (registered
        versions do not change). Lazy: a caller that stops early reads no more. A subject the registry does not
        hold: none. ``skip``: the number of the version written (not read: nothing to compare it with)."""
        numbers = self._version_numbers(subject)
        for number, deleted in numbers:
            if number == skip and not deleted:
                continue
            found = self._versions.get((subject, number))
            if found is None:
                got = self._fetch_version(subject, number, 0, deleted=deleted)
                if got is None or got.schema is None or got.schema.schema_str is None:
                    continue
                found = (got, frozenset(encrypted_paths(self._plan_version(subject, got, "a", key, verb))))
                if len(self._versions) < 10_000:
                    self._versions[(subject, number)] = found
            yield (*found, deleted)

    def _version_numbers(self, subject: str) -> list[tuple[int, bool]]:
        """The subject's version numbers, newest first, each with whether it is soft-deleted (listed only with
        ``deleted=True``; a client that keeps no deleted versions, as confluent's ``mock://`` one, lists the live
        ones again)."""
        registry = self._configured.registry
        try:
            live = _version_list(registry.get_versions(subject), subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise  # unreachable, unauthorized...: not "no version", so nothing is registered or written
            live = set()
        every = set(live)
        try:
            every |= {int(v) for v in registry.get_versions(subject, deleted=True)}
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise
        except (TypeError, ValueError):
            pass  # a client that lists no deleted versions: those are remembered through the key store's record
        return [(v, v not in live) for v in sorted(every, reverse=True)]

    def _plan_version(
        self, subject: str, got: RegisteredSchema, role: str, key: tuple[str, int | None], verb: str
    ) -> FieldPlan:
        """The plan of a registered version compared with; one that cannot be planned is refused (under ``key``,
        for good), since what it encrypts is unknown: refuse rather than guess. A registry that fails while its
        references are resolved is not such a version: that error is raised, and the next record asks again."""
        assert got.schema is not None
        try:
            return self._plans.compile(got.schema)
        except Exception as exc:
            what = f"a schema that schema id {got.schema_id} references"
            mapped = registry_failure(exc, what, subject, role="reference")
            if mapped is not None:
                raise mapped from exc
            reason = exc.reason if isinstance(exc, FieldcryptError) else f"not this format ({type(exc).__name__})"
            err = PolicyError(
                f"{role} registered version of the subject (id {got.schema_id}) cannot be planned with this "
                f"configuration, so what it encrypts is unknown: {reason}; set fieldcrypt.allow.tag.removal=True "
                f"to {verb} without comparing",
                subject=subject,
            )
            if len(self._refused) < 10_000:
                self._refused[key] = err
            raise err from exc

    def _fetch_version(
        self, subject: str, version: int | None, schema_id: int, deleted: bool = False
    ) -> RegisteredSchema | None:
        """A version of ``subject`` as the registry holds it (by number; by ``schema_id`` when the number is
        unknown), or None when the registry has no such subject or version (a 404). confluent's client caches a
        looked-up version (by number and by id) as the schema the lookup was *given*, without the registered
        ``metadata``, so with confluent's own client the registry is asked directly, uncached (the caller keeps
        the answer); another client class (the mock registry, one with its own ``get_version``) is asked through
        ``get_version`` / ``get_schema``. ``deleted``: a soft-deleted version (asked with ``deleted=true``)."""
        registry = self._configured.registry
        rest: Any = rest_client(registry)
        direct = rest is not None and is_confluent_client(registry)
        try:
            if version is None:
                if direct:
                    query = {"subject": subject, **({"format": self._fmt} if self._fmt else {})}
                    found = rest.get(f"schemas/ids/{int(schema_id)}", query)
                    schema = RegisteredSchema.from_dict({**found, "id": schema_id}).schema
                elif self._fmt is not None:
                    schema = registry.get_schema(schema_id, subject, self._fmt)
                else:
                    schema = registry.get_schema(schema_id, subject)
                return RegisteredSchema(schema_id=schema_id, guid=None, schema=schema, subject=subject, version=None)
            if direct:
                params = {**({"deleted": "true"} if deleted else {}), **({"format": self._fmt} if self._fmt else {})}
                return RegisteredSchema.from_dict(
                    rest.get(f"subjects/{quote(subject, safe='')}/versions/{int(version)}", params or None)
                )
            if self._fmt is not None:
                return registry.get_version(subject, version, deleted=deleted, fmt=self._fmt)  # type: ignore[no-any-return]
            if deleted:
                return registry.get_version(subject, version, deleted=True)  # type: ignore[no-any-return]
            return registry.get_version(subject, version)  # type: ignore[no-any-return]
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404 or exc.error_code not in _NO_LATEST:
                raise  # unreachable, unauthorized...: not "no such version", so nothing is written
            return None

    def _registered_copy(self, subject: str, registered: Any) -> Schema:
        """auto.register.schemas=False: the version the lookup found, as registered (its ``metadata.tags``), once
        per subject per serializer. One that cannot be read back is refused (not kept: the next record asks)."""
        got = self._fetch_version(subject, registered.version, registered.schema_id)
        if got is None or got.schema_id != registered.schema_id or got.schema is None or got.schema.schema_str is None:
            raise PolicyError(
                f"the version the lookup found (id {registered.schema_id}, version {registered.version}) cannot be "
                "read back from the registry, so what it encrypts is unknown",
                subject=subject,
            )
        return got.schema

    def _check_registry(
        self,
        subject: str,
        key: tuple[str, int],
        registered: Any,
        plan: FieldPlan,
        written: set[str],
        writes: Callable[[str], bool],
    ) -> None:
        """Latest mode and a looked-up schema, once per subject and schema id: the schema written must encrypt every
        path that any other registered version of the subject encrypts (soft-deleted ones too, where the client
        lists them), where it would write that path in clear (``_writes``). So a version registered without a tag,
        two versions later, or an older one pinned (use.schema.id, use.latest.with.metadata, a lookup), is refused
        even before any fieldcrypt producer wrote; a version that adds a tagged field the schema written does not
        have is not. A subject the registry does not hold (404): nothing to compare."""
        if self._allow_removal:
            return
        by_version: dict[str, tuple[int | None, int | None]] = {}
        mine = registered.version if isinstance(registered.version, int) else None
        for got, paths, _ in self._registered(subject, key, "write", mine):
            if got.schema_id == registered.schema_id:
                continue
            for path in paths - written:
                if writes(path):
                    by_version.setdefault(path, (got.schema_id, got.version))
        if by_version:
            raise self._refusal(
                key,
                sorted(by_version),
                plan,
                subject,
                f"the schema written (id {key[1]})",
                "; ".join(_version_sources(by_version)),
            )

    def _read_back(self, subject: str, schema_id: int, sent: Schema | None) -> Schema | None:
        """A registry answered the registration with the id only: the version as registered (a registry that
        inherits the latest version's ``metadata`` carries it), one request per subject per serializer (the entry
        is kept). What was sent when it cannot be read back (then the version is refused as not inheriting)."""
        got = self._fetch_version(subject, None, schema_id)
        if got is None or got.schema is None or got.schema.schema_str is None:
            return sent
        return got.schema

    def _inherited(self, metadata: Any, subject: str) -> set[str]:
        """What the local schema encrypts in a registry that inherits the latest version's ``metadata`` into a
        version registered without any. Nothing when the local schema has metadata of its own, or when those tags
        do not fit it (then no registry could keep them). The local schema is the one registered for ``subject``
        (Protobuf's: with the references of its imports)."""
        local = self._to_register(subject) if self._to_register is not None else self._configured.schema
        tags = metadata.tags.tags if metadata is not None and metadata.tags is not None else None
        if not tags or local is None or local.metadata is not None:
            return set()
        try:
            plan = self._plans.compile(Schema(local.schema_str, local.schema_type, local.references, metadata))
        except Exception:
            return set()
        return encrypted_paths(plan)

    def _refuse_uninherited(self, subject: str, name: str, lost: list[str], local: FieldPlan, schema_id: int) -> None:
        """The registry answered the registration with a version that lacks tags the latest version carried in its
        ``metadata.tags`` (it did not inherit them). That version is registered now, as confluent's serializer
        would have registered it, and is the subject's latest: record the paths in the key store, so that every
        later writer of the subject (latest mode included) refuses it as well."""
        self._merge(name, lost, subject)
        raise self._refusal(
            (subject, None),
            lost,
            local,
            subject,
            f"the version registered (id {schema_id})",
            f"{', '.join(lost)} (encrypted by the subject's previous latest version through its metadata.tags, "
            "which the registry did not carry into the new version; tag them in the schema_str)",
        )

    def _check_kept(
        self, before: FieldPlan, after: FieldPlan, subject: str, source: str, schema_id: Any, written: str = ""
    ) -> None:
        if self._allow_removal:
            return
        lost = sorted(encrypted_paths(before) - encrypted_paths(after))
        if lost:
            raise PolicyError(
                f"{written or f'the schema written (id {schema_id})'} drops tags that {source} carries, so these "
                f"would be written in clear or under the shared key: {', '.join(lost)}; set "
                "fieldcrypt.allow.tag.removal=True to accept that",
                subject=subject,
            )


def encrypted_paths(plan: FieldPlan) -> set[str]:
    """The schema paths a plan encrypts (namespace-free, so a re-registered schema compares equal), and its
    data-subject id field: a schema that drops or moves that tag would write the person's values under the
    domain's shared key, beyond the reach of a per-person shred, so it counts as a tag removal too."""
    paths = {leaf.path for leaf in plan.leaves}
    if plan.data_subject_path is not None:
        paths.add(f"{plan.data_subject_path} (data-subject id)")
    return paths


def _version_sources(by_version: Mapping[str, tuple[int | None, int | None]]) -> list[str]:
    """``by_version``: a lost path -> (schema id, version) of a registered version encrypting it; as refusal text."""
    grouped: dict[tuple[int | None, int | None], list[str]] = {}
    for path, version in by_version.items():
        grouped.setdefault(version, []).append(path)
    return [
        f"{', '.join(sorted(paths))} (encrypted by the subject's registered version {version}, id {schema_id})"
        for (schema_id, version), paths in sorted(grouped.items(), key=lambda kv: -(kv[0][1] or 0))
    ]


@dataclass(frozen=True)
class _Recording(TagRules):
    """Tag rules whose collector is a given recorder (``value_paths``): no tag is decisive, every value position is
    visited."""

    def collector(self) -> Any:
        return self.__dict__["_visit"]


def value_paths(plans: PlanCache, schema: Schema) -> dict[str, Any]:
    """Every value path a schema can write (tagged or not), spelled as plan paths are, each with the schema objects
    it was visited with (a JSON object's, to tell whether it takes properties it does not declare): the policy
    compiler's walk under rules that decide nothing (``fieldcrypt.core.recorder``, schema lint's too). Empty when it
    cannot be walked (then ``writes_path`` counts every path as written: refuse rather than guess)."""
    tags = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
    try:
        undecided = neutral(plans._rules.with_metadata(tags))
        rules = _Recording(**{name: getattr(undecided, name) for name in undecided.__dataclass_fields__})
        visit = Recorder(undecided)
        object.__setattr__(rules, "_visit", visit)
        plans._compile(plans._parse(schema), rules)
    except Exception:
        return {}
    return {path: value.calls for path, value in visit.values.items()}


#: a union branch in a path (``ex.A.u<string>``): the same field is written whichever branches the union has
_BRANCH = re.compile(r"<[^<>]*>")


#: a format's answer to "does the value at this parent path take values its schema does not declare" (a JSON object
#: without ``additionalProperties: false``), given every value path of the schema (``value_paths``)
Undeclared = Callable[[str, Mapping[str, Any]], bool]


def writes_path(path: str, values: Mapping[str, Any], undeclared: Undeclared | None) -> bool:
    """Whether a schema with these value paths (``value_paths``) would write a value at ``path``, so dropping its
    tag writes it in clear. The data-subject id's mark always counts (values would go under the shared key). A path
    the schema has (union branches aside: ``f<string>`` and ``f`` are the same field), or, in a format whose values
    take undeclared children (``undeclared``: JSON objects), one a value it has (or could write) takes as one."""
    if not values or path.endswith(" (data-subject id)") or path in values:
        return True
    if _BRANCH.sub("", path) in {_BRANCH.sub("", p) for p in values}:  # a union's branches changed, not the field
        return True
    if undeclared is None:
        return False
    return any(path[i + 1 :] and undeclared(path[:i], values) for i in range(len(path)) if path[i] == "." and path[:i])


def _version_list(answer: Any, subject: str) -> set[int]:
    """The version numbers a registry client's ``get_versions`` answered, or a ``ConfigurationError`` when the answer
    is no list of numbers (a test double that does not answer it): the subject's versions are what the tag-removal
    check compares with, so an answer it cannot read is never taken for "no versions"."""
    if isinstance(answer, (list, tuple)) and all(
        (type(v) is int) or (type(v) is str and v.isascii() and v.isdigit()) for v in answer
    ):
        return {int(v) for v in answer}
    raise ConfigurationError(
        f"the registry client answered get_versions with {type(answer).__name__}, not a list of version numbers: "
        "fieldcrypt's serializers list a subject's registered versions before registering or writing (the tag-removal "
        "check, docs/compatibility.md), so a registry client or test double must answer get_versions",
        subject=subject,
    )
