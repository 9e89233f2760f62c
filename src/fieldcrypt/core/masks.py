"""Masks: the masked view a producer writes beside a value, for consumers granted only the masked view of its
domain (``fieldcrypt.masks``, docs/policy.md "Masked views").

A mask is a function from the value's text to the text a masked reader gets. Each built-in mask keeps one
documented part of the value and nothing else: two values that share the kept part have the same mask, and the
mask's length depends on the kept part only, never on what it hides.

    ``email``  ``***@`` and the domain, lower-cased: ``Jane.Doe@Example.COM`` -> ``***@example.com``
    ``phone``  ``**** `` and the last 4 digits: ``+49 30 1234-5678`` -> ``**** 5678`` (7 to 20 digits; digits,
               spaces and ``+ - ( ) . /`` only)
    ``card``   ``**** `` and the last 4 digits: ``4111 1111 1111 1234`` -> ``**** 1234`` (12 to 19 digits, groups
               separated by single spaces or hyphens)
    ``name``   the initial of each whitespace-separated part, upper-cased, each followed by a dot, separated by
               spaces: ``Jane van Doe`` -> ``J. V. D.`` (every part must start with a letter)
    ``date``   the year of an ISO 8601 calendar date ``YYYY-MM-DD`` or an RFC 3339 date-time
               (``1987-06-05T04:03:02Z``): ``1987``

A value a mask cannot read (an email without ``@``, a phone with letters, a date in another format) is refused
with :class:`MaskError`, which names neither the value nor any part of it; the serializer turns it into an
``EncryptionError`` naming the subject, field path and mask, and sends nothing.

More masks plug in by name: ``register_mask(name, fn)`` in the producer's process, or an entry point in the group
``fieldcrypt.mask`` (name = the mask's name, value = a callable ``str -> str``). A plug-in raising any exception
refuses the value as a built-in mask does; its exception's message is never passed on (it may quote the value). The
built-in names cannot be replaced. What a plug-in reveals is its own to document.
"""

from __future__ import annotations

import datetime
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys.store import VIEW_SUFFIX

__all__ = [
    "BUILTIN_MASKS",
    "ENTRY_POINT_GROUP",
    "VIEW_DOMAIN_SUFFIX",
    "MaskError",
    "MaskFn",
    "apply_mask",
    "available_masks",
    "get_mask",
    "register_mask",
    "view_domain",
]

MaskFn = Callable[[str], str]
ENTRY_POINT_GROUP = "fieldcrypt.mask"


class MaskError(ValueError):
    """The mask cannot read this value. The message says what the mask expects, never what it was given."""


# -- the built-in masks ----------------------------------------------------------------------------------------------


def _unprintable(text: str) -> bool:
    return any(c.isspace() or unicodedata.category(c)[0] == "C" for c in text)


def mask_email(value: str) -> str:
    """``***@`` and the domain (after the last ``@``), lower-cased. The local part is hidden, whatever its length."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or _unprintable(domain):
        raise MaskError("the email mask reads text of the form local@domain (a non-empty local part and domain)")
    return "***@" + domain.lower()


_PHONE_CHARS = frozenset("0123456789 +-()./")
_ASCII_DIGITS = frozenset("0123456789")


def mask_phone(value: str) -> str:
    """``**** `` and the last 4 digits; the other digits and every separator are hidden."""
    if not value or not set(value) <= _PHONE_CHARS:
        raise MaskError("the phone mask reads digits, spaces and + - ( ) . / only")
    digits = [c for c in value if c in _ASCII_DIGITS]
    if not 7 <= len(digits) <= 20:
        raise MaskError("the phone mask reads numbers of 7 to 20 digits")
    return "**** " + "".join(digits[-4:])


_CARD = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def mask_card(value: str) -> str:
    """``**** `` and the last 4 digits of a card number (12 to 19 digits, groups separated by a space or hyphen)."""
    if not _CARD.fullmatch(value):
        raise MaskError("the card mask reads digits in groups separated by single spaces or hyphens")
    digits = value.replace(" ", "").replace("-", "")
    if not 12 <= len(digits) <= 19:
        raise MaskError("the card mask reads card numbers of 12 to 19 digits")
    return "**** " + digits[-4:]


def mask_name(value: str) -> str:
    """The upper-cased initial of each whitespace-separated part, each followed by a dot: ``J. R. R. T.``. The number
    of parts is kept (it is the number of initials); the rest of each part is hidden."""
    parts = unicodedata.normalize("NFC", value).split()
    if not parts:
        raise MaskError("the name mask reads a non-blank name")
    initials = []
    for part in parts:
        first = part[0]
        if not first.isalpha():
            raise MaskError("the name mask reads names whose every part starts with a letter")
        upper = first.upper()
        initials.append((upper if len(upper) == 1 else first) + ".")
    return " ".join(initials)


_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))")


def mask_date(value: str) -> str:
    """The 4-digit year of an ISO 8601 calendar date ``YYYY-MM-DD`` or an RFC 3339 date-time; month, day and time
    are hidden. The date must exist (``1987-02-30`` is refused)."""
    m = _DATE.match(value)
    rest = value[m.end() :] if m is not None else ""
    t = _TIME.fullmatch(rest) if rest else None
    if m is None or (rest and t is None):
        raise MaskError("the date mask reads YYYY-MM-DD dates and RFC 3339 date-times (YYYY-MM-DDThh:mm:ssZ)")
    try:
        datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise MaskError("the date mask reads existing calendar dates (YYYY-MM-DD)") from None
    if t is not None:
        hour, minute, second = int(t.group(1)), int(t.group(2)), int(t.group(3))
        zone_h, zone_m = int(t.group(4) or 0), int(t.group(5) or 0)
        if hour > 23 or minute > 59 or second > 60 or zone_h > 23 or zone_m > 59:
            raise MaskError("the date mask reads RFC 3339 date-times with a valid time of day and offset")
    return m.group(1)


#: the masks every fieldcrypt has, by name (they cannot be replaced)
BUILTIN_MASKS: Mapping[str, MaskFn] = {
    "card": mask_card,
    "date": mask_date,
    "email": mask_email,
    "name": mask_name,
    "phone": mask_phone,
}

# -- plug-ins ----------------------------------------------------------------------------------------------------------

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_registered: dict[str, MaskFn] = {}
_lock = threading.Lock()


def register_mask(name: str, fn: MaskFn) -> None:
    """Make ``fn`` (``str -> str``) available as the mask ``name`` in this process (``fieldcrypt.masks`` maps tags to
    mask names). A later registration of the same name replaces the earlier one; a built-in name cannot be used."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError("a mask name must be lower-case letters, digits, _ . - (e.g. iban_last4)")
    if name in BUILTIN_MASKS:
        raise ConfigurationError(f"{name!r} is a built-in mask and cannot be replaced; register another name")
    if not callable(fn):
        raise ConfigurationError(f"the mask {name!r} must be a callable taking the value's text and returning text")
    with _lock:
        _registered[name] = fn


def _plugins() -> dict[str, MaskFn]:
    found: dict[str, MaskFn] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_MASKS:
            raise ConfigurationError(
                f"the mask plugin {ep.name!r} ({ep.value}) has the name of a built-in mask, which cannot be replaced"
            )
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"the mask plugin {ep.name!r} ({ep.value}) cannot be loaded: {type(exc).__name__}"
            ) from exc
        if not callable(loaded):
            raise ConfigurationError(f"the mask plugin {ep.name!r} ({ep.value}) is not a callable")
        found[ep.name] = loaded
    return found


def available_masks() -> dict[str, MaskFn]:
    """Every mask this process knows, by name: built-in, entry points (``fieldcrypt.mask``), registered."""
    out = dict(BUILTIN_MASKS)
    for name, fn in _plugins().items():
        out.setdefault(name, fn)
    with _lock:
        out.update(_registered)
    return out


_BUILTIN_FNS = frozenset(BUILTIN_MASKS.values())


def get_mask(name: object) -> MaskFn:
    """The mask called ``name``; an unknown name is a ``ConfigurationError`` listing the known ones."""
    if isinstance(name, str):
        found = BUILTIN_MASKS.get(name) or _registered.get(name)
        if found is not None:
            return found
        known = available_masks()
        if name in known:
            return known[name]
    else:
        known = available_masks()
    raise ConfigurationError(
        f"unknown mask {name!r} in fieldcrypt.masks; known masks: {', '.join(sorted(known))} (more through "
        f"fieldcrypt.register_mask or the {ENTRY_POINT_GROUP!r} entry-point group)"
    )


#: the longest masked text taken from a mask (a plug-in's output included): a view is a preview, not a copy
MAX_MASK_LEN = 1024


def apply_mask(fn: MaskFn, value: str) -> str:
    """``fn(value)``, checked: text that is valid Unicode. Any failure is a :class:`MaskError` that names neither the
    value nor the exception's message (a plug-in's message may quote the value). The view of an empty value is empty
    (nothing to hide; its ciphertext's length shows it anyway): a Protobuf string left unset reads as ``""``."""
    if value == "":
        return ""
    failed: str | None = None
    builtin = fn in _BUILTIN_FNS
    try:
        out = fn(value)
    except MaskError as exc:
        if builtin:  # the built-in masks' messages name what they expect, never the value
            raise
        failed = type(exc).__name__  # a plug-in's own message may quote the value: never passed on
    except Exception as exc:  # raised below, outside this block: the exception (and its message) is not chained
        failed = type(exc).__name__
    if failed is not None:
        raise MaskError(f"the mask failed ({failed})")
    if not isinstance(out, str):
        raise MaskError(f"the mask returned {type(out).__name__}, not text")
    if len(out) > MAX_MASK_LEN:
        raise MaskError(f"the mask returned more than {MAX_MASK_LEN} characters")
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        raise MaskError("the mask returned text that is not valid Unicode (lone surrogate)") from None
    return out


#: the key domain of a value's masked view is the value's domain followed by this (reserved for views)
VIEW_DOMAIN_SUFFIX = VIEW_SUFFIX  # the key store's: shredding a domain (or a person in it) shreds its views too


def view_domain(domain: str) -> str:
    """The key domain of the masked views of values of ``domain``: ``contact`` -> ``contact/masked``."""
    return domain + VIEW_DOMAIN_SUFFIX
