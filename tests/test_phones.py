"""Phone policy as tables: normalisation per country and format, reasons, one row's fields,
the suppression index, and the job-level screen (suppression, de-duplication)."""

from __future__ import annotations

import array
import tracemalloc

import attrs
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialler_async import (
    ConfigurationError,
    ContactValidationError,
    NewContact,
    PhonePolicy,
    SuppressionList,
)
from dialler_async._phones import (
    Normaliser,
    PhoneError,
    normalise,
    number_key,
    plain_digits,
    quick_parse,
    screen_numbers,
)
from dialler_async._screen import DUPLICATE_PHONE, SUPPRESSED, PhoneScreen, suppression_list

# (region, as typed, E.164). Every country in the formats a CRM export holds them: national with
# trunk prefix and punctuation, +CC (0) ..., 00CC (or the US's 011), a spreadsheet float that lost
# the "+", digits that lost the leading 0.
NUMBERS = [
    ("DE", "030 1234567", "+49301234567"),
    ("DE", "(030) 123-4567", "+49301234567"),
    ("DE", "+49 (0)30 1234567", "+49301234567"),
    ("DE", "0049301234567", "+49301234567"),
    ("DE", "4930123456.0", "+4930123456"),
    ("DE", "4930123456", "+4930123456"),
    ("DE", "30 1234567", "+49301234567"),
    ("DE", "0151 23456789", "+4915123456789"),
    ("AT", "01 5121234", "+4315121234"),
    ("AT", "+43 (0)1 5121234", "+4315121234"),
    ("AT", "0043 1 5121234", "+4315121234"),
    ("AT", "4315121234.0", "+4315121234"),
    ("AT", "15121234", "+4315121234"),
    ("CH", "044 668 18 00", "+41446681800"),
    ("CH", "+41 (0)44 668 18 00", "+41446681800"),
    ("CH", "0041446681800", "+41446681800"),
    ("CH", "41446681800.0", "+41446681800"),
    ("GB", "020 7946 0958", "+442079460958"),
    ("GB", "+44 (0)20 7946 0958", "+442079460958"),
    ("GB", "0044 20 7946 0958", "+442079460958"),
    ("GB", "442079460958.0", "+442079460958"),
    ("GB", "2079460958", "+442079460958"),
    ("US", "(202) 456-1111", "+12024561111"),
    ("US", "+1 202-456-1111", "+12024561111"),
    ("US", "011 49 30 1234567", "+49301234567"),
    ("US", "202.456.1111", "+12024561111"),
    ("US", "12024561111.0", "+12024561111"),
    ("DE", "+1 202 456 1111", "+12024561111"),  # a foreign number keeps its country
]


@pytest.mark.parametrize("check", ["possible", "valid"])
@pytest.mark.parametrize("fmt", ["e164", "e164-no-plus", "as-is"])
@pytest.mark.parametrize(("region", "typed", "e164"), NUMBERS)
def test_numbers_in_every_format(region: str, typed: str, e164: str, fmt: str, check: str) -> None:
    number = normalise(typed, PhonePolicy(region, format=fmt, check=check))  # type: ignore[arg-type]
    expected = {"e164": e164, "e164-no-plus": e164[1:], "as-is": typed}[fmt]
    assert number.sent == expected
    assert number.key == int(e164[1:])


# (region, check, as typed, reason)
BAD = [
    ("DE", "possible", "abc", "not a number"),
    ("DE", "possible", "", "not a number"),
    ("DE", "possible", "12", "too short"),
    ("DE", "possible", "123", "too short"),  # a local number without area code
    ("US", "possible", "555-0143", "too short"),
    ("DE", "possible", "+999 1234567", "invalid country code"),
    ("DE", "possible", "0123456789012345678901", "too long"),
    ("GB", "possible", "+44 20 7946 09588", "too long"),
    ("DE", "possible", "4.93012E+09", "not a number"),  # the digits are gone
    ("DE", "valid", "+49 1234", "invalid for region"),
    ("GB", "valid", "+44 20 7946 095", "invalid for region"),
]


@pytest.mark.parametrize(("region", "check", "typed", "reason"), BAD)
def test_bad_numbers_say_why(region: str, check: str, typed: str, reason: str) -> None:
    with pytest.raises(PhoneError) as info:
        normalise(typed, PhonePolicy(region, check=check))  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_possible_is_laxer_than_valid() -> None:
    assert normalise("+49 1234", PhonePolicy("DE")).sent == "+491234"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"region": "XX"},
        {"region": None},
        {"region": 49},
        {"region": "Germany"},
        {"region": "DE", "format": "E164"},
        {"region": "DE", "format": "national"},
        {"region": "DE", "check": "strict"},
    ],
)
def test_policy_refuses_what_it_does_not_know(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        PhonePolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen_and_reads_a_lowercase_region() -> None:
    policy = PhonePolicy(" de ")
    assert policy == PhonePolicy("DE", format="e164", check="possible")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.region = "AT"  # type: ignore[misc]


# -- one row -----------------------------------------------------------------------------------

DE = PhonePolicy("DE")


@pytest.mark.parametrize(
    ("body", "sent", "dropped", "problems"),
    [
        ({"PhoneNumber1": "030 1234567"}, {"PhoneNumber1": "+49301234567"}, [], []),
        (  # a bad second number is dropped: the row still has one to dial
            {"PhoneNumber1": "030 1234567", "PhoneNumber2": "12"},
            {"PhoneNumber1": "+49301234567"},
            ["PhoneNumber2"],
            [],
        ),
        (  # a bad fax is dropped the same way
            {"PhoneNumber3": "030 1234567", "FaxNumber": "abc"},
            {"PhoneNumber3": "+49301234567"},
            ["FaxNumber"],
            [],
        ),
        (  # no dial number passes: every bad field is a problem (the fax does not rescue it)
            {"PhoneNumber1": "abc", "PhoneNumber2": "12", "FaxNumber": "030 1234567"},
            {"FaxNumber": "+49301234567"},
            [],
            ["PhoneNumber1: not a number ('abc')", "PhoneNumber2: too short ('12')"],
        ),
        ({"PhoneNumber1": "  ", "Name": "x"}, {}, [], []),  # blank: left to "required"
    ],
)
def test_row_fields(
    body: dict[str, str], sent: dict[str, str], dropped: list[str], problems: list[str]
) -> None:
    screened = screen_numbers(body, DE)
    assert screened.sent == sent
    assert list(screened.dropped) == dropped
    assert list(screened.problems) == problems


def test_a_hostile_cell_is_quoted_short() -> None:
    screened = screen_numbers({"PhoneNumber1": "x" * 10_000}, DE)
    assert len(screened.problems[0]) < 100


# -- the suppression index ---------------------------------------------------------------------


def test_suppression_list_normalises_like_rows() -> None:
    dnc = SuppressionList(
        ["030 1234567", "+49 (0)30 7654321", "0043 1 5121234", 4930111111, "not a number", ""],
        DE,
    )
    assert len(dnc) == 4 and dnc.rejected == 2
    for typed in ("+49301234567", "0049 30 1234567", "(030) 765-4321", "+43 1 5121234"):
        assert normalise(typed, DE).key in dnc
    assert normalise("030 1111111", DE).key not in dnc
    assert "+49301234567" not in dnc  # only keys, never text
    assert dnc.nbytes == 8 * 4
    assert isinstance(dnc._keys, array.array)


def test_suppression_file_skips_comments_and_blank_lines(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "dnc.txt"  # type: ignore[operator]
    path.write_text("# do not call\n\n030 1234567\n+49301234567\n0049 30 7654321\n")
    dnc = SuppressionList.from_file(path, DE)
    assert len(dnc) == 2 and dnc.rejected == 0


def test_suppression_list_is_tied_to_its_region() -> None:
    dnc = SuppressionList(["030 1234567"], DE)
    assert suppression_list(dnc, DE) is dnc
    with pytest.raises(ConfigurationError, match="region"):
        suppression_list(dnc, PhonePolicy("AT"))
    with pytest.raises(ConfigurationError, match="cannot read"):
        suppression_list("/nonexistent/dnc.txt", DE)
    with pytest.raises(ConfigurationError, match="bytes"):
        suppression_list(b"+49301234567", DE)


@settings(max_examples=1000, deadline=None)
@given(
    code=st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
    national=st.text(alphabet="0123456789", min_size=4, max_size=13),
)
def test_quick_parse_equals_the_full_parse(code: int, national: str) -> None:
    """The E.164 shortcut gives exactly the PhoneNumber the library's parse gives."""
    text = f"+{code}{national}"
    quick = quick_parse(text)
    if quick is None:
        return  # the full parse decides
    assert quick == phonenumbers.parse(text, "DE")
    assert number_key(text, "DE") == int(phonenumbers.format_number(quick, 0)[1:])


@pytest.mark.parametrize(
    "text", ["+49030123456", "+390612345678", "+1 202 456 1111", "+4930123456 ", "+999123456"]
)
def test_quick_parse_leaves_the_rest_to_the_library(text: str) -> None:
    assert quick_parse(text) is None
    assert number_key("+49030123456", "DE") == 4930123456


def test_index_memory_is_eight_bytes_a_number() -> None:
    numbers = [f"+4930{n:07d}" for n in range(200_000)]
    tracemalloc.start()
    dnc = SuppressionList(numbers, DE)
    _, peak = tracemalloc.get_traced_memory()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(dnc) == 200_000
    assert dnc.nbytes == 1_600_000
    assert kept < 2_500_000  # the index, not a set of ints or strings (~60-100 bytes each)
    assert peak < 12_000_000  # chunked sort: never the whole list as Python ints


# -- the job's screen ---------------------------------------------------------------------------


def row(user_data: str, *phones: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"UserData": user_data, "Name": "N", "DiallerCampaignsID": 538}
    body.update({f"PhoneNumber{n}": p for n, p in enumerate(phones, 1) if p})
    body.update(extra)
    return body


def test_screen_suppresses_then_skips_rows_left_without_a_number() -> None:
    screen = PhoneScreen(DE, suppress=SuppressionList(["030 1111111"], DE))
    partly = screen.check(row("a", "030 1111111", "030 2222222"))
    assert partly.skip is None
    assert partly.body["PhoneNumber1"] is None  # cleared: an upsert must not keep it
    assert partly.body["PhoneNumber2"] == "+49302222222"
    assert partly.warnings == ("PhoneNumber1: suppressed (do not call)",)
    wholly = screen.check(row("b", "+49 30 1111111"))
    assert wholly.skip == SUPPRESSED
    left_out = PhoneScreen(
        DE, suppress=SuppressionList(["030 1111111"], DE), clear_suppressed=False
    )
    assert "PhoneNumber1" not in left_out.check(row("a", "030 1111111", "030 2")).body
    counts = screen.counts
    assert (counts.suppressed, counts.rows_suppressed, counts.normalised) == (2, 1, 3)


def test_screen_dedupes_rows_whose_every_number_came_earlier() -> None:
    screen = PhoneScreen(DE, dedupe=True)
    verdicts = [
        screen.check(r)
        for r in [
            row("a", "030 1111111"),
            row("b", "030 2222222"),
            row("c", "+49301111111", "0049 30 2222222"),  # each number already in an earlier row
            row("d", "030 1111111", "030 3333333"),  # a new number: dialled
            row("e", "030 3333333"),
        ]
    ]
    assert [v.skip for v in verdicts] == [None, None, DUPLICATE_PHONE, None, DUPLICATE_PHONE]


def test_screen_invalid_row_names_every_problem_and_counts_nothing_as_seen() -> None:
    screen = PhoneScreen(DE, dedupe=True)
    with pytest.raises(ContactValidationError) as info:
        screen.check({"UserData": "a", "PhoneNumber1": "abc", "DiallerCampaignsID": 538})
    assert list(info.value.problems) == ["PhoneNumber1: not a number ('abc')", "Name: required"]
    with pytest.raises(ContactValidationError):  # no Name: its good number is not "seen"
        screen.check({"UserData": "b", "PhoneNumber1": "030 123456", "DiallerCampaignsID": 538})
    assert screen.check(row("c", "030 123456")).skip is None


def test_screen_reads_spreadsheet_floats_and_models() -> None:
    screen = PhoneScreen(PhonePolicy("DE", format="e164-no-plus"))
    sent = screen.check(row("a", PhoneNumber1=4930123456.0)).body["PhoneNumber1"]
    assert sent == "4930123456"
    model = NewContact(
        name="N", campaign_id=538, phone_number1="030 1234567", fax_number="030 7654321"
    )
    body = screen.check(model).body
    assert (body["PhoneNumber1"], body["FaxNumber"]) == ("49301234567", "49307654321")


def _parsed(text: str, region: str) -> object:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return exc.error_type


@settings(max_examples=3000, deadline=None)
@given(
    region=st.sampled_from(["DE", "AT", "CH", "GB", "US", "IT", "FR", "AR", "BR", "RU", "JP"]),
    plus=st.booleans(),
    body=st.text(alphabet="0123456789 ()./-", max_size=30),
)
def test_dropping_typed_punctuation_changes_nothing_the_library_reads(
    region: str, plus: bool, body: str
) -> None:
    """The library's answer (number or error) for digits with typed punctuation is its answer
    for the digits alone: ``plain_digits`` only saves it the work."""
    text = ("+" if plus else "") + body
    assert _parsed(plain_digits(text), region) == _parsed(text, region)


@pytest.mark.parametrize(
    "text",
    [
        "030 1234567 ext. 12",
        "030 1234567 x12",
        "030 1234567#12",
        "tel:+49-30-1234567",
        "0800 FLOWERS",
    ],
)
def test_text_with_more_than_digits_and_punctuation_goes_to_the_library_as_typed(text: str) -> None:
    assert plain_digits(text) == text


def test_the_memo_answers_repeats_as_the_library_did_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dialler_async import _phones

    calls: list[str] = []
    real = _phones.normalise

    def counted(value: str, policy: PhonePolicy) -> object:
        calls.append(value)
        return real(value, policy)

    monkeypatch.setattr(_phones, "normalise", counted)
    judge = Normaliser(DE, size=3)
    for _ in range(3):
        assert judge("030 1234567") == real("030 1234567", DE)
        with pytest.raises(PhoneError) as info:
            judge("abc")
        assert info.value.reason == "not a number"
    assert calls == ["030 1234567", "abc"]  # repeats cost no parse
    for n in range(10):
        judge(f"030 765432{n}")
    assert len(judge._memo) == 3  # the oldest went
    judge("030 1234567")
    assert calls[-1] == "030 1234567"  # aged out: parsed again, same answer
    assert all(not isinstance(v, BaseException) for v in judge._memo.values())


@pytest.mark.parametrize(
    "phones",
    [
        ("030 1234567",),
        ("030 1234567", "12"),  # one dropped with a warning
        ("abc", "12"),  # INVALID
        ("+49 (0)30 1234567 ext. 12345678901",),  # 35 characters: too long as typed, fits sent
        ("030 1234567", "030 1234567"),
        ("", "  ", "0171 1234567"),
    ],
)
def test_a_plain_row_is_screened_exactly_as_the_full_conversion_would(
    phones: tuple[str, ...],
) -> None:
    """The short path (a plain dict) and the full one (any other mapping) give one verdict."""
    from types import MappingProxyType

    data = row("CRM-1", *phones, FaxNumber="030 7654321", City="Berlin")

    def verdict(value: object) -> object:
        try:
            v = PhoneScreen(DE, dedupe=True).check(value)  # type: ignore[arg-type]
        except ContactValidationError as exc:
            return exc.problems
        return (v.body, v.user_data, v.warnings, v.skip)

    assert verdict(data) == verdict(MappingProxyType(data))
