"""Schema lint: what fieldcrypt will do with every field of a schema, and which fields in clear look personal.

    from fieldcrypt.lint import lint_schema

    report = lint_schema(schema_str, "AVRO", conf={"fieldcrypt.tags": ["PII"]})
    for row in report.rows:
        print(row.path, row.verdict, row.hint)          # example.shop.CustomerEvent.email encrypted None
    report.findings                                     # refused tags, tags removed, personal-looking fields in clear

**The verdicts are the serializers'.** The schema is parsed as the serializers parse it (confluent's own parsing,
through the registry for references) and compiled by the same policy compilers (``avro.policy``,
``json_schema.policy``) with the same tag rules, so a schema lint refuses is one the serializer refuses, with the same
reason at the same location, and the paths lint calls encrypted are exactly the paths the plan encrypts. The
serializer stops at the first refusal; lint then drops the refused tags and compiles again, to report every
refusal in one run (the first one listed is the serializer's).

Each value the compiler visits is a row (containers, records, arrays and maps, are not: their values are):

    encrypted             the plan encrypts it (``domain``: its key domain; None: the default, the subject; ``mask``:
                          the mask of its masked view, ``fieldcrypt.masks``, None for no view; ``deterministic``:
                          encrypted deterministically, ``fieldcrypt.deterministic.tags``)
    data-subject          the data-subject id (written in clear; per-person keys)
    plaintext (declared)  a tag of ``fieldcrypt.plaintext.tags``: left in clear on purpose
    clear                 no tag
    refused               the serializer refuses the schema because of a tag here (``reason``)
    unchecked             tagged, but lint could not compile past an earlier refusal to decide it

**Hints**: a value in clear (not tagged) whose name or ``format`` looks like personal data gets ``hint`` (a
category: ``email``, ``phone``...) and a finding. Scalars of other types are hinted too (an Avro ``int`` date of
birth is personal data): the finding says fieldcrypt encrypts only strings and bytes. A hint is fixed by tagging the
field (or by declaring it plaintext with a tag of ``fieldcrypt.plaintext.tags``, which keeps the hint but drops the
finding).

**Deterministic values** (``fieldcrypt.deterministic.tags``) reveal which values are equal, and so how often each
occurs, within a key domain and person. A deterministic value whose schema suggests few distinct values gets
``few_values`` (why: :data:`FEW_VALUE_NAMES` on its normalized name, or a ``format`` of :data:`FEW_VALUE_FORMATS`) and
a ``deterministic`` finding (docs/schema-lint.md#deterministic-values).
Names are matched after :func:`normalize_name` (``customerEmailAddress`` -> ``customer email address``) against
:data:`NAME_HINTS`, extensible with :class:`Hint`; docs/schema-lint.md lists them. Schema texts are not data, but
``default``, ``examples``, ``const`` and ``enum`` values may be: they are never printed, not even in errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from fieldcrypt.core.confluent import wildcard_match
from fieldcrypt.core.format import SchemaFormat, ValueShape
from fieldcrypt.core.plan import FieldPlan, TagCollector, TagRules
from fieldcrypt.core.recorder import Recorder, ValueRecord, neutral
from fieldcrypt.core.regex import bounded
from fieldcrypt.core.serde import FIELDCRYPT_CONF, READ_CONF, WRITE_CONF, split_conf
from fieldcrypt.errors import ConfigurationError, PolicyError, UnsupportedSchemaTypeError
from fieldcrypt.formats import format_for, supported

__all__ = [
    "FEW_VALUE_FORMATS",
    "FEW_VALUE_NAMES",
    "FORMAT_HINTS",
    "NAME_HINTS",
    "QUALIFIERS",
    "VERDICTS",
    "Finding",
    "Hint",
    "Row",
    "SchemaReport",
    "few_values",
    "hint_for",
    "lint_schema",
    "normalize_name",
    "parse_hints",
    "removed_tags",
]

VERDICTS = ("encrypted", "data-subject", "plaintext (declared)", "clear", "refused", "unchecked")
_MAX_PASSES = 64  # compilations per schema while collecting refusals

# -- hints: names and formats that suggest personal data -----------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """A name that suggests personal data. ``pattern``: a regular expression searched (``re.search``) in the
    normalized field name (:func:`normalize_name`: lowercase words separated by one space); ``within``: if set, the
    normalized name of the enclosing record (Avro) or object (JSON: the parent property, or the root ``title``)
    must match it too. A match immediately followed by a word of :data:`QUALIFIERS` (``email verified``,
    ``phone type``) describes the datum, not the datum itself, and does not count."""

    category: str
    pattern: str
    within: str | None = None

    def __post_init__(self) -> None:
        if not self.category.strip() or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.category):
            raise ConfigurationError(
                f"hint category {self.category!r} must be a word (letters, digits, - _ .), e.g. employee_id"
            )
        for rx in (self.pattern, self.within):
            if rx is not None:
                try:
                    _rx(rx)
                except re.error as exc:
                    raise ConfigurationError(f"hint {self.category!r}: invalid regular expression: {exc}") from None

    def matches(self, name: str, context: str = "") -> bool:
        """Whether normalized ``name`` (in an enclosing record or object named ``context``, normalized) matches."""
        if self.within is not None and not _rx(self.within).search(context):
            return False
        for m in _rx(self.pattern).finditer(name):
            rest = name[m.end() :].split()
            if not rest or rest[0] not in QUALIFIERS:
                return True
        return False


@lru_cache(maxsize=512)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


#: a word right after a match that makes the field a fact about the datum, not the datum: ``email verified``,
#: ``phone type``, ``address id``, ``ip version``, ``card number last 4``
QUALIFIERS = frozenset(
    {
        *("id", "ids", "type", "types", "kind", "count", "status", "verified", "validated", "valid", "enabled"),
        *("flag", "format", "template", "provider", "consent", "length", "source", "version", "level", "required"),
        *("changed", "updated", "created", "at", "policy", "regex", "pattern", "domain", "masked", "mask"),
        *("country", "model", "os", "last", "prefix"),
    }
)

_NUM = r"(?: ?(?:number|no|num|nr)s?)?"
_PERSON = (
    r"customer|person|contact|client|employee|patient|member|holder|owner|recipient|sender|passenger|guest|buyer"
    r"|payer|payee|beneficiary|applicant|student|subscriber|card ?holder|account holder|traveller|traveler"
    r"|consumer|citizen|signatory|guardian|spouse|emergency contact"
)
#: the default name hints, in order (the first match names the category). docs/schema-lint.md shows this list.
NAME_HINTS: tuple[Hint, ...] = (
    Hint("email", r"\be ?mail(?:s| ?address(?:es)?)?\b|\bmail ?address(?:es)?\b"),
    Hint("phone", rf"\b(?:tele)?phone{_NUM}\b|\bmobile(?:$| ?(?:phone|number|no|num|nr)\b)|\bmsisdn\b"),
    Hint("phone", rf"\bcell ?phone{_NUM}\b|\bfax{_NUM}\b|\btel\b"),
    Hint("ip_address", r"\bip(?: ?v ?[46])?(?: ?addr(?:ess)?(?:es)?)?\b|\b(?:remote|client) ?addr(?:ess)?\b"),
    Hint(
        "payment_card",
        r"\b(?:(?:credit|debit|payment|bank) ?)?card ?(?:number|no|num|nr)s?\b|\bcc ?(?:number|no|num|nr)s?\b",
    ),
    Hint("payment_card", r"\bpan\b|\bcv[cv] ?2?\b|\bcvn\b|\bcard (?:security|verification) (?:code|value)\b"),
    Hint("payment_card", r"\bcredit ?card\b"),
    Hint("bank_account", rf"\biban\b|\bbban\b|\bbank ?account{_NUM}\b|\baccount ?(?:number|no|num|nr)\b"),
    Hint("national_id", rf"\bssn\b|\bsocial ?security{_NUM}\b|\bnino\b|\bnational ?insurance{_NUM}\b"),
    Hint("national_id", rf"\bnational ?(?:id|identity|identification|identifier)(?: ?card)?{_NUM}\b"),
    Hint("national_id", rf"\bpassport(?: ?id)?{_NUM}\b|\btax ?(?:payer ?)?(?:id|identification|identifier)\b"),
    Hint("national_id", r"\btax ?(?:number|no|code)\b|\btin\b|\bpersonnummer\b|\bpersonal ?(?:id|identity) ?code\b"),
    Hint("national_id", r"\bbsn\b|\bcpf\b|\baadhaa?r\b|\bpesel\b|\bnif\b|\bnie\b|\bdni\b|\bcodice fiscale\b"),
    Hint("national_id", rf"\bdriv(?:er|ers|ing) ?licen[cs]e{_NUM}\b|\bid ?card{_NUM}\b"),
    Hint("birth_date", r"\b(?:date|year|place) of birth\b|\bbirth ?(?:date|day|year|place)\b|\bdob\b|\bbirthdays?\b"),
    Hint(
        "name", r"\b(?:first|last|given|family|middle|maiden|full|legal|birth|christian|real|sur|fore|nick) ?names?\b"
    ),
    Hint("name", rf"\b(?:{_PERSON})(?: full)? ?names?\b"),
    Hint("name", r"^names?$", within=rf"\b(?:{_PERSON}|user|people|persons|profile|individual|staff|author)s?$"),
    Hint(
        "address",
        r"\b(?:street|post ?code|postal ?code|zip(?: ?code)?|city|town|house ?(?:number|no|nr))\b"
        r"|(?<!mac )(?<!web )(?<!server )(?<!host )(?<!broker )(?<!bind )(?<!listen )(?<!network )(?<!memory )"
        r"(?<!contract )(?<!node )(?<!endpoint )(?<!base )\baddr(?:ess)?(?:es)?\b",
    ),
)

#: JSON Schema ``format`` values that are personal data whatever the property is called. (``date``, ``uri``,
#: ``hostname`` are not; Avro logical types never are.)
FORMAT_HINTS: Mapping[str, str] = {"email": "email", "idn-email": "email", "ipv4": "ip_address", "ipv6": "ip_address"}


#: deterministic values whose normalized name suggests few distinct values, (why, regular expression searched in the
#: normalized name), in order. Names are a weak signal (a ``countryCode`` may hold anything): they are what an
#: Avro schema offers, which has no ``maxLength``; a JSON ``enum``, ``const``, ``pattern`` or ``maxLength`` on a
#: tagged string is refused by the serializer anyway (the ciphertext could not satisfy it). docs/schema-lint.md
#: lists them.
FEW_VALUE_NAMES: tuple[tuple[str, str], ...] = (
    (
        "a yes/no value as text",
        r"^(?:is|has|have|can|should|was|were|did|does|allow|allows|opt)\b"
        r"|\b(?:flag|enabled|disabled|active|verified|deleted|consent|opt ?in|opt ?out|yes no)$",
    ),
    ("a short code", r"\b(?:code|codes|iso|alpha ?[23])$"),
    (
        "a category",
        r"\b(?:gender|sex|salutation|honorific|pronouns?|nationality|citizenship|country|currency|language|locale"
        r"|region|state|province|county|marital status|blood (?:type|group)|ethnicity|religion|status|type|kind"
        r"|category|segment|tier|level|grade|rank|class|band)$",
    ),
)
#: JSON Schema ``format`` values of deterministic values that suggest few distinct values: a ``date`` is one of about
#: 36,500 a century, and birth dates cluster (``date-time`` is not in the list)
FEW_VALUE_FORMATS: Mapping[str, str] = {"date": "a date (format date)"}


def few_values(name: str, fmt: str | None = None) -> str | None:
    """Why a deterministic value called ``name`` (with JSON ``format`` ``fmt``) suggests few distinct values, or None.
    Names are normalized here."""
    if fmt is not None and fmt in FEW_VALUE_FORMATS:
        return FEW_VALUE_FORMATS[fmt]
    words = normalize_name(name)
    return next((why for why, rx in FEW_VALUE_NAMES if _rx(rx).search(words)), None)


def normalize_name(name: str) -> str:
    """A field name as lowercase words separated by one space: camelCase, PascalCase, acronyms, digits, ``_``,
    ``-``, ``.`` and spaces all split words (``customerEmailAddress``, ``customer_email_address`` and
    ``CUSTOMER-EMAIL-ADDRESS`` are all ``customer email address``; ``IPv4Address`` is ``ipv 4 address``)."""
    s = re.sub(r"(?i)ipv(?=[46])", " ipv ", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)
    s = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", s)
    return " ".join(w.lower() for w in re.split(r"[\W_]+", s) if w)


def hint_for(
    name: str,
    context: str = "",
    fmt: str | None = None,
    hints: Sequence[Hint] = NAME_HINTS,
    formats: Mapping[str, str] = FORMAT_HINTS,
) -> str | None:
    """The personal-data category a field called ``name`` (in a record or object called ``context``, with JSON
    ``format`` ``fmt``) suggests, or None. Names are normalized here."""
    if fmt is not None and fmt in formats:
        return formats[fmt]
    words, where = normalize_name(name), normalize_name(context)
    return next((h.category for h in hints if h.matches(words, where)), None)


def parse_hints(lines: Iterable[str], where: str = "--hint") -> list[Hint]:
    """Hints written ``CATEGORY=REGEX`` (the ``--hint`` flag, one per line in a ``--hint-names`` file; blank lines
    and lines starting with ``#`` are skipped)."""
    out = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        category, eq, pattern = line.partition("=")
        if not eq or not category.strip() or not pattern.strip():
            at = f" line {number}" if where != "--hint" else ""
            raise ConfigurationError(f"{where}{at}: expected CATEGORY=REGEX, e.g. employee_id=\\bemployee (id|no)\\b")
        out.append(Hint(category.strip(), pattern.strip()))
    return out


# -- reports -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One value of the schema: its path (as the compilers and ``metadata.tags`` name it), type and verdict."""

    path: str
    type: str
    verdict: str
    tags: tuple[str, ...] = ()
    domain: str | None = None  # encrypted values: the key domain, None for the default one (the subject)
    reason: str | None = None  # refused: why
    hint: str | None = None  # the personal-data category its name or format suggests (values not encrypted)
    encryptable: bool = True  # a tag of fieldcrypt.tags here could be enforced (string or bytes)
    #: encrypted values with a masked view: the mask's name (fieldcrypt.masks); the view's key domain is the value's
    #: followed by /masked
    mask: str | None = None
    #: encrypted deterministically (fieldcrypt.deterministic.tags): equal values give equal ciphertexts; its key is of
    #: the domain followed by /det
    deterministic: bool = False
    #: deterministic values: why the schema suggests few distinct values (:func:`few_values`), or None
    few_values: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "verdict": self.verdict,
            "tags": list(self.tags),
            "domain": self.domain,
            "mask": self.mask,
            "deterministic": self.deterministic,
            "few_values": self.few_values,
            "reason": self.reason,
            "hint": f"pii-hint:{self.hint}" if self.hint else None,
        }


@dataclass(frozen=True)
class Finding:
    """Something a CI job fails on: ``refused`` (the serializer refuses the schema), ``removed`` (a tag the
    previous version enforced is gone from a field still there), ``hint`` (an untagged value that looks like
    personal data), ``deterministic`` (a deterministic value whose schema suggests few distinct values), ``invalid``
    (not a schema lint can read)."""

    kind: str
    path: str | None
    message: str
    #: refused: the serializer's own ``PolicyError`` reason and location (``field_path``: a value path, or a JSON
    #: schema pointer such as ``#/$defs/Email`` when the tag sits on a definition; None for the whole schema)
    reason: str | None = None
    location: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "path": self.path, "message": self.message}
        return {**out, "reason": self.reason, "location": self.location} if self.kind == "refused" else out


@dataclass
class SchemaReport:
    """The lint of one schema (a file, or a registered version)."""

    source: str
    schema_type: str | None
    subject: str | None = None
    version: int | None = None
    schema_id: int | None = None
    rows: list[Row] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    previous: str | None = None  # the previous version compared with, if any

    @property
    def encrypted(self) -> list[str]:
        return [r.path for r in self.rows if r.verdict == "encrypted"]

    @property
    def refused(self) -> bool:
        return any(f.kind == "refused" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "schema_type": self.schema_type,
            "subject": self.subject,
            "version": self.version,
            "schema_id": self.schema_id,
            "previous": self.previous,
            "rows": [r.as_dict() for r in self.rows],
            "findings": [f.as_dict() for f in self.findings],
        }


# -- the tag collectors lint compiles with -------------------------------------------------------------------------


def _covers(paths: set[str], path: str) -> bool:
    """``path`` is one of ``paths`` or inside one of them (array items, map values, union branches)."""
    return any(path == p or (path.startswith(p) and path[len(p) : len(p) + 1] in ("[", "<")) for p in paths)


class _Deciding(TagCollector):
    """The serializer's collector, that can drop the tags of refusals already reported (to find the next one)."""

    def __init__(
        self, rules: TagRules, dropped: set[str], pointers: set[str], ignore: frozenset[str], skip_finish: bool
    ) -> None:
        super().__init__(rules)
        self.dropped, self.pointers, self.ignore, self.skip_finish = dropped, pointers, ignore, skip_finish
        self.finishing = False
        self.tags_at: dict[str, frozenset[str]] = {}
        self._quiet = 0

    def _drops(self, location: str) -> bool:
        return location in self.dropped or any(location == p or location.startswith(p + "/") for p in self.pointers)

    def inline(self, raw: object, location: str) -> frozenset[str]:
        if self._quiet or self._drops(location):
            return frozenset()
        return super().inline(raw, location)

    def field(self, full_name: str, raw: object, location: str | None = None) -> frozenset[str]:
        if not self._drops(location or full_name):
            return super().field(full_name, raw, location)
        self._quiet += 1  # still matched against metadata.tags patterns (else they would seem to match nothing)
        try:
            super().field(full_name, raw, location)
        finally:
            self._quiet -= 1
        return frozenset()

    def _decide(self, tags: frozenset[str], location: str) -> frozenset[str]:
        if self._quiet:
            return frozenset()
        return super()._decide(tags - self.ignore, location)

    def applies(self, path: str, tags: frozenset[str], schemas: tuple[Any, ...]) -> frozenset[str]:
        self.tags_at[path] = self.tags_at.get(path, frozenset()) | tags
        return frozenset() if _covers(self.dropped, path) else tags

    def finish(self) -> None:
        self.finishing = True
        if not self.skip_finish:
            super().finish()


def _undecided_reason(rules: TagRules, tag: str, location: str) -> str:
    try:
        TagCollector(rules).inline([tag], location)
    except PolicyError as exc:
        return exc.reason
    raise AssertionError(f"{tag!r} is decided")  # pragma: no cover - callers pass undecided tags only


#: where a JSON refusal of tags under a keyword names the keyword's schema location
_POINTER = re.compile(r"' at (#\S*) holds schemas tagged")

Compile = Callable[[TagRules, TagCollector], FieldPlan]


@dataclass
class _Outcome:
    plan: FieldPlan | None
    visit: Recorder
    refusals: list[tuple[str | None, str]]
    tags_at: dict[str, frozenset[str]]


def _run(compile_plan: Compile, rules: TagRules) -> _Outcome:
    """Compile as the serializer does; on a refusal, drop what was refused and compile again, until the schema
    compiles or nothing more can be dropped. The first refusal is the serializer's."""
    visit = Recorder(neutral(rules))
    refusals: list[tuple[str | None, str]] = []
    try:
        compile_plan(neutral(rules), visit)
    except PolicyError as exc:  # not about tags ($ref, regex): the deciding pass meets it too
        refusals.append((exc.field_path, exc.reason))
    known = rules.encrypt | rules.plaintext | {rules.data_subject}
    undecided = [(loc, _undecided_reason(rules, tag, loc)) for loc, tag in visit.placements if tag not in known]
    subject_paths = sorted(p for p, v in visit.values.items() if rules.data_subject in v.tags)
    dropped: set[str] = set()
    pointers: set[str] = set()
    ignore: frozenset[str] = frozenset()
    skip_finish = False
    found: list[tuple[str | None, str]] = []
    for _ in range(_MAX_PASSES):
        collector = _Deciding(rules, dropped, pointers, ignore, skip_finish)
        try:
            plan = compile_plan(rules, collector)
        except PolicyError as exc:
            where, reason = exc.field_path, exc.reason
            if collector.finishing and not skip_finish:  # a metadata.tags pattern matching nothing: the last check
                found.append((None, reason))
                skip_finish = True
                continue
            if not ignore and (where, reason) in undecided:  # report every undecided tag at once
                found.extend(undecided)
                ignore = frozenset(t for _, t in visit.placements if t not in known)
                continue
            if where is not None:
                targets = {where}
                found.append((where, reason))
            elif len(subject_paths) > 1:  # several data-subject ids: each is refused
                targets = set(subject_paths)
                found.extend((t, reason) for t in subject_paths)
            else:  # the root (an Avro union at the top)
                targets = {""}
                found.append((None, reason))
            pointer = _POINTER.search(reason)
            new = (pointer is not None and pointer.group(1) not in pointers) or not targets <= dropped
            if pointer is not None:
                pointers.add(pointer.group(1))
            dropped |= targets
            if not new:
                break
            continue
        return _Outcome(plan, visit, _unique(found + refusals), collector.tags_at)
    return _Outcome(None, visit, _unique(found + refusals), {})


def _unique(items: list[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    return list(dict.fromkeys(items))


# -- parsing, as the serializers parse ----------------------------------------------------------------------------


def _safe(exc: BaseException) -> str:
    """Why parsing failed, without any part of the schema's values (fastavro quotes defaults, jsonschema quotes
    the offending subschema)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    name = type(exc).__name__
    if name == "SchemaError":  # jsonschema: where in the schema, and which metaschema rule
        return f"not a valid JSON Schema: {getattr(exc, 'json_path', '$')} fails the metaschema's " + (
            f"'{getattr(exc, 'validator', '?')}'"
        )
    if name == "UnknownType":
        unknown = getattr(exc, "name", None)
        if not isinstance(unknown, str):
            return "not a valid Avro schema: a type that is not a type name or schema"
        return (
            f"refers to an unknown type {unknown!r} (defined in another schema? lint the registered subject with "
            "--subject: the registry resolves references)"
        )
    if name == "SchemaParseException":
        return "not a valid Avro schema: " + re.sub(r"<[^<>]*>", "<…>", str(exc).splitlines()[0] if str(exc) else "")
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        return f"not a valid schema: {exc.args[0]!r} missing"
    return f"not a valid schema ({name})"


# -- rows ----------------------------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"(?:\[\]|\[\*\]|<[^<>]*>)+$")


@dataclass(frozen=True)
class _HintConf:
    hints: Sequence[Hint]
    formats: Mapping[str, str]
    ignore: Sequence[str]  # path patterns (metadata.tags wildcards) never hinted

    def ignored(self, path: str) -> bool:
        short = ".".join(_SUFFIX.sub("", path).rsplit(".", 2)[-2:])
        return any(wildcard_match(path, p) or wildcard_match(short, p) for p in self.ignore)


def _located(outcome: _Outcome) -> list[tuple[str | None, str, str | None]]:
    """The refusals in the order found (the serializer's first) as (value path, reason, location): a location that
    is a JSON schema pointer (a tag on a $ref target, an allOf branch) is reported at the values it applies to."""
    out: list[tuple[str | None, str, str | None]] = []
    for where, reason in outcome.refusals:
        paths: list[str | None] = [where] if where is None or where in outcome.visit.values else []
        paths = paths or [*sorted(outcome.visit.paths_of.get(where or "", ()))] or [where]
        out.extend((p, reason, where) for p in paths)
    return list(dict.fromkeys(out))


def _conditional_leaves(plan: FieldPlan) -> dict[str, str]:
    """JSON: leaves that only some branches of a ``oneOf``/``anyOf`` encrypt (the serializer encrypts them in the
    values that validate against such a branch, and leaves the same path in clear in the others)."""
    from fieldcrypt.core.plan import ChoiceNode, Leaf

    out: dict[str, str] = {}
    for node in _nodes(plan):
        if isinstance(node, ChoiceNode):
            per_branch = [
                {n.path for n in _nodes(plan, b) if isinstance(n, Leaf)} if b else set() for _, b in node.branches
            ]
            everywhere = set.intersection(*per_branch) if per_branch else set()
            for path in set().union(*per_branch) - everywhere:
                out[path] = (
                    f"only in values that validate against a {node.keyword} branch at {node.path} that tags it; the "
                    "other branches leave it in clear"
                )
    return out


def _nodes(plan: FieldPlan, *roots: Any) -> list[Any]:
    """Every node under ``roots`` (default: the whole plan), each once, named types followed through references."""
    from fieldcrypt.core.plan import RefNode

    found: list[Any] = []
    seen: set[int] = set()
    stack: list[Any] = list(roots) if roots else [plan.root, *plan.named.values()]
    while stack:
        node = stack.pop()
        if isinstance(node, RefNode):
            node = plan.named.get(node.name)
        if node is None or id(node) in seen or not hasattr(node, "__dataclass_fields__"):
            continue
        seen.add(id(node))
        found.append(node)
        for f in fields(node):
            value = getattr(node, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                stack.extend(item if isinstance(item, tuple) else (item,))
    return found


def _pattern_leaves(plan: FieldPlan) -> dict[str, tuple[str, Any]]:
    """JSON: the declared properties a tagged ``patternProperties`` regex also matches (JSON Schema applies both,
    and so does the serializer, which encrypts them): their row paths, with the regex and its leaf."""
    from fieldcrypt.core.plan import Leaf, RecordNode

    found: dict[str, tuple[str, Any]] = {}
    for node in _nodes(plan):
        if isinstance(node, RecordNode):
            for name in node.declared:
                for rx, target in node.patterns:
                    if isinstance(target, Leaf) and bounded(rx).search(name):  # RE2: linear time, as the engine
                        for path in (f"{node.name}.{name}", f"{node.name}[{json.dumps(name)}]"):
                            found.setdefault(path, (rx, target))
    return found


def _rows(
    outcome: _Outcome, rules: TagRules, fmt: SchemaFormat, parsed: Any, hinting: _HintConf, domain: str | None
) -> list[Row]:
    plan, visit = outcome.plan, outcome.visit
    leaves = {leaf.path: leaf for leaf in plan.leaves} if plan is not None else {}
    subject = plan.data_subject_path if plan is not None else None
    reasons: dict[str, list[str]] = {}
    for path, why, where in _located(outcome):
        if path is not None:
            reasons.setdefault(path, []).append(why if where == path else f"{why} (tagged at {where})")
    decisive = rules.encrypt | {rules.data_subject}
    by_pattern = _pattern_leaves(plan) if plan is not None else {}  # (plans without patternProperties: none)
    conditional = _conditional_leaves(plan) if plan is not None else {}  # (plans without oneOf/anyOf: none)
    rows = []
    paths = list(dict.fromkeys([*visit.values, *reasons, *leaves]))
    for path in paths:
        value = visit.values.get(path, ValueRecord())
        if path not in visit.values:  # a tag location that is no value (an unreferenced JSON definition)
            shape = ValueShape("-", False, False)
        else:
            shape = fmt.shape(value.calls)
        tags = value.tags | outcome.tags_at.get(path, frozenset())
        leaf = leaves.get(path)
        if leaf is not None:
            tags |= leaf.tags
        reason: str | None
        if path in reasons:
            verdict, reason = "refused", "; ".join(dict.fromkeys(reasons[path]))
        elif leaf is not None:
            verdict, reason = "encrypted", conditional.get(path)
        elif path in by_pattern:  # a declared property whose name a tagged patternProperties regex matches too
            leaf = by_pattern[path][1]
            tags |= leaf.tags
            verdict, reason = "encrypted", f"through patternProperties {by_pattern[path][0]!r}"
        elif path == subject:
            verdict, reason = "data-subject", None
        elif tags & decisive and plan is None:
            verdict, reason = "unchecked", "not compiled: the schema is refused above"
        elif tags & rules.plaintext:
            verdict, reason = "plaintext (declared)", None
        elif tags & decisive:
            verdict, reason = "clear", "tagged, but the plan encrypts no value here"
        else:
            verdict, reason = "clear", None
        # containers (their values have rows), union fields (their branches do), true/false JSON schemas
        if (shape.container or not any(value.calls)) and verdict not in ("refused", "encrypted", "data-subject"):
            continue
        hint = None
        hintable = shape.encryptable or (not shape.container and shape.type != "-")
        if verdict in ("clear", "plaintext (declared)") and hintable and not hinting.ignored(path):
            names = fmt.names(_SUFFIX.sub("", path), parsed)
            if names is not None:
                hint = hint_for(names[0], names[1], shape.fmt, hinting.hints, hinting.formats)
        det = leaf is not None and verdict == "encrypted" and leaf.deterministic
        few = None
        if det and not hinting.ignored(path):
            names = fmt.names(_SUFFIX.sub("", path), parsed)
            few = few_values(names[0] if names is not None else "", shape.fmt)
        rows.append(
            Row(
                path=path,
                type=shape.type,
                verdict=verdict,
                tags=tuple(sorted(tags)),
                domain=(leaf.domain or domain) if leaf is not None else None,
                reason=reason,
                hint=hint,
                encryptable=shape.encryptable,
                mask=leaf.mask if leaf is not None and verdict == "encrypted" else None,
                deterministic=det,
                few_values=few,
            )
        )
    return rows


# -- the API --------------------------------------------------------------------------------------------------------

_LINT_KEYS = {*FIELDCRYPT_CONF, *WRITE_CONF, *READ_CONF}


def rules_from_conf(conf: Mapping[str, Any] | None) -> tuple[TagRules, str | None]:
    """The tag rules and default domain a serde with this ``conf`` uses. A producer's or consumer's whole conf can
    be passed: confluent's keys are ignored here (confluent checks them), but a ``fieldcrypt.*`` key fieldcrypt
    does not know is a ``ConfigurationError``."""
    conf = dict(conf or {})
    unknown = sorted(k for k in conf if isinstance(k, str) and k.startswith("fieldcrypt.") and k not in _LINT_KEYS)
    if unknown:
        raise ConfigurationError(f"unknown fieldcrypt conf key(s) {unknown}; valid: {sorted(_LINT_KEYS)}")
    _, options = split_conf({k: v for k, v in conf.items() if k in FIELDCRYPT_CONF or k in WRITE_CONF})
    return options.rules, options.domain


def lint_schema(
    schema: str | Schema,
    schema_type: str | None = None,
    conf: Mapping[str, Any] | None = None,
    *,
    registry: SchemaRegistryClient | None = None,
    hints: Sequence[Hint] = NAME_HINTS,
    formats: Mapping[str, str] = FORMAT_HINTS,
    ignore_hints: Sequence[str] = (),
    source: str = "<schema>",
    subject: str | None = None,
    version: int | None = None,
    schema_id: int | None = None,
) -> SchemaReport:
    """Lint one schema: a schema text, or a confluent ``Schema`` (with its references and ``metadata.tags``, as
    registered). ``schema_type``: ``AVRO`` or ``JSON`` (default: the ``Schema``'s, else ``AVRO``, as confluent's
    serializers default). ``conf``: the serde conf whose tag rules decide (``fieldcrypt.tags``...). ``registry``:
    resolves references. ``ignore_hints``: path patterns (``**.city``, ``Order.note``) never hinted.

    Raises ``ConfigurationError`` for a bad ``conf``; a schema that cannot be read is a report with an
    ``invalid`` finding, not an exception."""
    rules, domain = rules_from_conf(conf)
    if isinstance(schema, str):
        schema = Schema(schema, (schema_type or "AVRO").upper())
    given = schema_type if schema_type is not None else schema.schema_type
    if given == "":  # what confluent means by no type: Avro; any other non-string is refused by the registry
        given = None
    domain = domain or subject
    try:
        fmt = format_for(given)
    except UnsupportedSchemaTypeError:
        kind = str(given).upper()
        report = SchemaReport(source, kind, subject, version, schema_id)
        report.findings.append(
            Finding("invalid", None, f"{source}: schema type {kind}: fieldcrypt's serdes are {supported()}")
        )
        return report
    kind = fmt.schema_type
    report = SchemaReport(source, kind, subject, version, schema_id)
    bare = Schema(schema.schema_str, kind, schema.references or [])
    try:
        parsed = fmt.parser(registry, writing=True)(bare)
    except Exception as exc:
        report.findings.append(Finding("invalid", None, f"{source}: {_safe(fmt.explain(exc, bare))}"))
        return report
    regexes = list(fmt.refusals(parsed))  # the serializer refuses these after the plan's own

    def compile_plan(rules: TagRules, collector: TagCollector) -> FieldPlan:
        return fmt.compile(parsed, rules, collector)

    meta = schema.metadata.tags.tags if schema.metadata is not None and schema.metadata.tags is not None else None
    try:
        rules = rules.with_metadata(meta)
    except PolicyError as exc:
        report.findings.append(Finding("refused", None, exc.reason, exc.reason))
    try:
        outcome = _run(compile_plan, rules)
    except RecursionError:
        report.findings.append(Finding("invalid", None, f"{source}: nested too deeply to compile"))
        return report
    hinting = _HintConf(hints, formats, ignore_hints)
    report.rows = _rows(outcome, rules, fmt, parsed, hinting, domain)
    for path, reason, where in _located(outcome):
        at = f" (tagged at {where})" if where != path else ""
        message = f"{path}: {reason}{at}" if path is not None else reason
        report.findings.append(Finding("refused", path, message, reason, where))
    for rx, where, reason in regexes:  # the serializer refuses these after the plan's own (a tagged regex: one)
        if not any(f.kind == "refused" and repr(rx) in (f.reason or "") for f in report.findings):
            report.findings.append(Finding("refused", where, reason, reason, where))
    tag = sorted(rules.encrypt)[0]
    for row in report.rows:
        if row.hint is not None and row.verdict == "clear":
            fix = (
                f"tag it {tag}"
                if row.encryptable
                else f"fieldcrypt encrypts only strings and bytes, not {row.type}: "
                f"store it as a string and tag it {tag}"
            )
            report.findings.append(
                Finding(
                    "hint",
                    row.path,
                    f"{row.path}: looks like personal data ({row.hint}) and is in clear: {fix}, or declare it "
                    "plaintext with a tag of fieldcrypt.plaintext.tags",
                )
            )
    person = outcome.plan is not None and outcome.plan.data_subject_path is not None
    scope = (
        "within each person's values (their own key)"
        if person
        else "across the whole key domain (no data-subject field: one key for everyone)"
    )
    for row in report.rows:
        if row.few_values is not None:
            report.findings.append(
                Finding(
                    "deterministic",
                    row.path,
                    f"{row.path}: deterministic and {row.few_values}, so likely few distinct values: equal "
                    f"ciphertexts show equal values and their frequency {scope}; encrypt it randomized (drop its tag "
                    "from fieldcrypt.deterministic.tags) unless a join needs equality, or accept it with --ignore-hint",
                )
            )
    return report


def removed_tags(previous: SchemaReport, current: SchemaReport) -> list[Finding]:
    """The values ``previous`` encrypted (or its data-subject id) that ``current`` does not: what a producer of the
    subject refuses to write without ``fieldcrypt.allow.tag.removal``. The serializer compares the paths its plans
    encrypt, so a tagged field that is gone counts too: removed, renamed (Avro: or its record), or moved to
    another union branch."""
    now = {r.path: r for r in current.rows}
    found = []
    for old in previous.rows:
        if old.verdict not in ("encrypted", "data-subject") or (old.reason or "").startswith("through "):
            continue  # (a property a tagged pattern covers: the pattern's path is the one the plan encrypts)
        row = now.get(old.path)
        if row is not None and (row.verdict == old.verdict or row.verdict in ("refused", "unchecked")):
            continue  # kept; or refused here already, a finding of its own
        encrypted = old.verdict == "encrypted"
        was = "encrypted" if encrypted else "the data-subject id"
        is_now = (
            f"is {row.verdict} now"
            if row is not None
            else "is not in this schema (a field removed or renamed, its record renamed, or its union changed)"
        )
        message = (
            f"{old.path}: was {was} ({', '.join(old.tags)}) in {previous.source}, {is_now}"
            " (producers that wrote the previous version refuse this without fieldcrypt.allow.tag.removal)"
        )
        found.append(Finding("removed", old.path, message))
    return found
