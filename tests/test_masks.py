"""The masks (src/fieldcrypt/core/masks.py): each built-in mask's exact output, what it refuses, and the two promises
of docs/policy.md, "Masked views", checked on generated values: mask(x) == mask(y) whenever x and y share the kept
part, and the mask's length depends on the kept part only."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldcrypt import ConfigurationError
from fieldcrypt.core import masks
from fieldcrypt.core.masks import MaskError, apply_mask, get_mask, register_mask

EXACT = [
    ("email", "Jane.Doe@Example.COM", "***@example.com"),
    ("email", "a@b", "***@b"),
    ("email", '"odd@local"@mail.example', "***@mail.example"),
    ("phone", "+49 30 1234-5678", "**** 5678"),
    ("phone", "(030) 123 4567", "**** 4567"),
    ("card", "4111 1111 1111 1234", "**** 1234"),
    ("card", "4111-1111-1111-1234", "**** 1234"),
    ("card", "371449635398431", "**** 8431"),
    ("name", "Jane van Doe", "J. V. D."),
    ("name", "  zoë   ångström ", "Z. Å."),
    ("name", "Jean-Luc Picard", "J. P."),
    ("date", "1987-06-05", "1987"),
    ("date", "1987-06-05T04:03:02Z", "1987"),
    ("date", "1987-06-05T04:03:02.123+02:00", "1987"),
]

REFUSED = [
    ("email", "no-at-sign"),
    ("email", "@example.com"),
    ("email", "jane@"),
    ("email", "jane@exa mple.com"),
    ("phone", "12345"),  # fewer than 7 digits: the last 4 would be most of it
    ("phone", "+49 30 1234 ext 5"),
    ("card", "4111 1111"),
    ("card", "4111  1111 1111 1234"),
    ("card", "4111 1111 1111 123x"),
    ("name", "   "),
    ("name", "Jane 3rd"),
    ("date", "05/06/1987"),
    ("date", "1987-02-30"),
    ("date", "1987-06-05 junk"),
    ("date", "1987-06-05T25:00:00Z"),
    ("date", "19870605"),
    ("date", "١٩٨٧-06-05"),  # Arabic-Indic digits: not ISO 8601's
]


@pytest.mark.parametrize(("name", "value", "masked"), EXACT)
def test_each_builtin_mask_gives_exactly_what_policy_md_says(name: str, value: str, masked: str) -> None:
    assert apply_mask(get_mask(name), value) == masked


@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_a_value_a_mask_cannot_read_is_refused_without_quoting_it(name: str, value: str) -> None:
    with pytest.raises(MaskError) as refused:
        apply_mask(get_mask(name), value)
    assert not value.strip() or value not in str(refused.value)
    assert not any(part in str(refused.value) for part in value.split() if len(part) > 3)


@pytest.mark.parametrize("name", ["email", "phone", "card", "name", "date"])
def test_the_view_of_an_empty_value_is_empty(name: str) -> None:
    """Nothing to hide (its ciphertext's length shows it anyway); a Protobuf string left unset reads as ""."""
    assert apply_mask(get_mask(name), "") == ""


def test_an_unknown_mask_is_a_configuration_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as unknown:
        get_mask("emial")
    assert "emial" in str(unknown.value)
    for name in ("card", "date", "email", "name", "phone"):
        assert name in str(unknown.value)


def test_a_plugin_mask_is_registered_by_name_and_cannot_replace_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masks, "_registered", {})
    register_mask("iban_last4", lambda v: "IBAN ****" + v[-4:])
    assert apply_mask(get_mask("iban_last4"), "DE89370400440532013000") == "IBAN ****3000"
    assert "iban_last4" in masks.available_masks()
    with pytest.raises(ConfigurationError, match="built-in"):
        register_mask("email", lambda v: v)
    with pytest.raises(ConfigurationError, match="callable"):
        register_mask("other", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lower-case"):
        register_mask("Bad Name", lambda v: v)


def test_a_failing_plugin_never_passes_its_message_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in's exception may quote the value: only its class name is kept, and nothing is chained."""
    monkeypatch.setattr(masks, "_registered", {})

    def leaky(value: str) -> str:
        raise ValueError(f"cannot mask {value}")

    register_mask("leaky", leaky)
    register_mask("bytes", lambda v: v.encode())  # type: ignore[arg-type, return-value]
    with pytest.raises(MaskError) as failed:
        apply_mask(get_mask("leaky"), "secret-value")
    assert "secret-value" not in str(failed.value) and "ValueError" in str(failed.value)
    assert failed.value.__cause__ is None and failed.value.__context__ is None
    with pytest.raises(MaskError, match="not text"):
        apply_mask(get_mask("bytes"), "x")


# -- the promises, on generated values -------------------------------------------------------------------------------

_local = st.text(alphabet=string.ascii_letters + string.digits + "._%+-", min_size=1, max_size=40)
_domain = st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_digits = st.sampled_from(string.digits)
_last4 = st.lists(_digits, min_size=4, max_size=4)


@given(_local, _local, _domain)
def test_email_keeps_only_the_domain(x: str, y: str, domain: str) -> None:
    a, b = apply_mask(masks.mask_email, f"{x}@{domain}"), apply_mask(masks.mask_email, f"{y}@{domain}")
    assert a == b == "***@" + domain
    assert len(a) == 4 + len(domain)  # the local part's length shows nowhere


@given(st.lists(_digits, min_size=3, max_size=12), st.lists(_digits, min_size=3, max_size=12), _last4)
def test_phone_keeps_only_the_last_four_digits(x: list[str], y: list[str], last: list[str]) -> None:
    a = apply_mask(masks.mask_phone, "+" + "".join(x) + " " + "".join(last))
    b = apply_mask(masks.mask_phone, "(" + "".join(y) + ") " + "".join(last[:2]) + "-" + "".join(last[2:]))
    assert a == b == "**** " + "".join(last) and len(a) == 9


@given(st.lists(_digits, min_size=8, max_size=15), st.lists(_digits, min_size=8, max_size=15), _last4)
def test_card_keeps_only_the_last_four_digits(x: list[str], y: list[str], last: list[str]) -> None:
    a = apply_mask(masks.mask_card, "".join(x + last))
    b = apply_mask(masks.mask_card, " ".join(["".join(y), "".join(last)]))
    assert a == b == "**** " + "".join(last) and len(a) == 9


_rest = st.text(alphabet=string.ascii_lowercase + "'-", max_size=15)


@given(st.lists(st.tuples(st.sampled_from(string.ascii_letters), _rest, _rest), min_size=1, max_size=5))
def test_name_keeps_only_the_initials(parts: list[tuple[str, str, str]]) -> None:
    a = apply_mask(masks.mask_name, " ".join(first + x for first, x, _ in parts))
    b = apply_mask(masks.mask_name, "  ".join(first + y for first, _, y in parts))
    assert a == b == " ".join(first.upper() + "." for first, _, _ in parts)
    assert len(a) == 3 * len(parts) - 1  # the number of parts is kept (one initial each), nothing else


@given(st.dates(), st.dates(), st.times())
def test_date_keeps_only_the_year(x, y, t) -> None:  # type: ignore[no-untyped-def]
    y = y.replace(year=x.year) if not (y.month == 2 and y.day == 29) else y.replace(day=28, year=x.year)
    a, b = apply_mask(masks.mask_date, x.isoformat()), apply_mask(masks.mask_date, f"{y.isoformat()}T{t:%H:%M:%S}Z")
    assert a == b == f"{x.year:04d}" and len(a) == 4


def test_a_plug_in_s_own_error_message_never_reaches_the_caller() -> None:
    """Found by review: a plug-in raising MaskError with the value in its message; the message is never passed on
    (only the built-in masks' messages, which name what they expect, are)."""
    from fieldcrypt.core.masks import MaskError, apply_mask

    def quoting(value: str) -> str:
        raise MaskError(f"cannot mask {value}")

    with pytest.raises(MaskError) as err:
        apply_mask(quoting, "TOPSECRET-123")
    assert "TOPSECRET" not in str(err.value)
    with pytest.raises(MaskError, match="more than"):
        apply_mask(lambda v: v * 10_000, "x")
