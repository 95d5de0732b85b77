"""Phone numbers: one :class:`PhonePolicy` that parses, checks and formats every number field.

Parsing is Google's libphonenumber (the ``phonenumbers`` port): national formats with a trunk
prefix (``030 1234567``), ``+49 (0)30 …``, international access codes (``0049…``), digits
that lost their ``+`` or their leading 0 in a spreadsheet, and the metadata that says which
lengths and ranges exist. Validity changes with that metadata, so :data:`METADATA_VERSION` is
what a report should record.

Imported only when a policy is used (``phonenumbers`` takes ~0.1 s to import). The decision
functions here are pure: :func:`normalise` judges one value, :func:`screen_numbers`
judges the number fields of one row. :class:`PhoneScreen` (in :mod:`._screen`) adds the job's
state (suppression list, numbers already seen).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import attrs
import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, ValidationResult

from ._policy import PhonePolicy

#: The ``phonenumbers`` release, whose metadata decides what is valid.
METADATA_VERSION: Final[str] = phonenumbers.__version__

#: The fields the dialler dials, in order; at least one must survive for a row to be sent.
DIAL_FIELDS: Final = tuple(f"PhoneNumber{n}" for n in range(1, 7))
#: Every field a policy normalises (the fax number is checked and formatted, never dialled).
NUMBER_FIELDS: Final = (*DIAL_FIELDS, "FaxNumber")

# Reasons, as they appear in a row's problems and warnings.
NOT_A_NUMBER: Final = "not a number"
TOO_SHORT: Final = "too short"
TOO_LONG: Final = "too long"
INVALID_LENGTH: Final = "invalid length"
INVALID_COUNTRY_CODE: Final = "invalid country code"
INVALID_FOR_REGION: Final = "invalid for region"

_PARSE_REASONS: Final = {
    NumberParseException.INVALID_COUNTRY_CODE: INVALID_COUNTRY_CODE,
    NumberParseException.NOT_A_NUMBER: NOT_A_NUMBER,
    NumberParseException.TOO_SHORT_AFTER_IDD: TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: TOO_SHORT,
    NumberParseException.TOO_LONG: TOO_LONG,
}
_POSSIBLE_REASONS: Final = {
    ValidationResult.INVALID_COUNTRY_CODE: INVALID_COUNTRY_CODE,
    ValidationResult.TOO_SHORT: TOO_SHORT,
    # Diallable only from inside its own area (no area code): too short for a dialler.
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: TOO_SHORT,
    ValidationResult.TOO_LONG: TOO_LONG,
    ValidationResult.INVALID_LENGTH: INVALID_LENGTH,
}
# A spreadsheet's float: "4930123456.0". Only an all-digit value with a zero fraction, so a
# number written with dots ("030.123.4567") is left to the parser.
_FLOAT_TEXT: Final = re.compile(r"(\+?[0-9]+)\.0+")
# A spreadsheet's exponent form ("4.93012E+09"): the digits after the mantissa are lost.
_EXPONENT_TEXT: Final = re.compile(r"[0-9]+(?:[.,][0-9]+)?[eE]\+?[0-9]+")


# "+" then digits only: E.164 as a CRM or a regulator's list writes it.
_E164_TEXT: Final = re.compile(r"\+([1-9][0-9]{6,14})")
_TRUNK_PREFIXES: dict[int, str | None] = {}


def _trunk_prefix(country_code: int) -> str | None:
    """The trunk prefix a number of this country code may carry by mistake after it (the 0 in
    ``+49 030 …``), which parsing strips; ``"any"`` where it is a pattern, not digits."""
    if country_code not in _TRUNK_PREFIXES:
        region = phonenumbers.region_code_for_country_code(country_code)
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        prefix = None
        if meta is not None:
            prefix = meta.national_prefix_for_parsing or meta.national_prefix
        _TRUNK_PREFIXES[country_code] = prefix if prefix is None or prefix.isdigit() else "any"
    return _TRUNK_PREFIXES[country_code]


def quick_parse(text: str) -> PhoneNumber | None:
    """``+digits`` split into country code and national number without the full parse (which
    costs ~10 times as much), where the full parse provably gives the same number: a known
    country code, then a national number that starts neither with 0 nor with that country's
    trunk prefix (tests/test_phones.py checks it against the library). None: parse it fully."""
    match = _E164_TEXT.fullmatch(text)
    if match is None:
        return None
    digits = match.group(1)
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            prefix = _trunk_prefix(code)
            if national[:1] == "0" or prefix == "any" or (prefix and national.startswith(prefix)):
                return None
            return PhoneNumber(country_code=code, national_number=int(national))
    return None


def parse(text: str, region: str) -> PhoneNumber:
    """The number in ``text`` (raises ``NumberParseException``, as ``phonenumbers.parse``)."""
    return quick_parse(text) or phonenumbers.parse(text, region)


@attrs.frozen(slots=True)
class Number:
    """One number that passed: ``key`` is its E.164 digits as an integer (what suppression
    and duplicate checks compare), ``sent`` the text to send in the policy's format."""

    key: int
    sent: str


class PhoneError(ValueError):
    """A value that is not a usable phone number; ``reason`` is one of the reason constants."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def normalise(value: str, policy: PhonePolicy) -> Number:
    """Parse, check and format one number; raises :class:`PhoneError` saying why not."""
    text = value.strip()
    whole = _FLOAT_TEXT.fullmatch(text)
    if whole is not None:
        text = whole.group(1)
    elif _EXPONENT_TEXT.fullmatch(text):
        raise PhoneError(NOT_A_NUMBER, "spreadsheet exponent form, digits are lost")
    try:
        number = parse(text, policy.region)
    except NumberParseException as exc:
        raise PhoneError(_PARSE_REASONS.get(exc.error_type, NOT_A_NUMBER)) from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        raise PhoneError(_POSSIBLE_REASONS.get(possible, NOT_A_NUMBER))
    if policy.check == "valid" and not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_number(number) or policy.region
        raise PhoneError(INVALID_FOR_REGION, region)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    key = int(e164[1:])
    if policy.format == "e164":
        return Number(key, e164)
    if policy.format == "e164-no-plus":
        return Number(key, e164[1:])
    return Number(key, value)


@attrs.frozen(slots=True)
class Screened:
    """What a policy made of one row's number fields.

    ``sent``: field -> value to send, for every number field that passed (in the policy's
    format). ``keys``: the E.164 keys of the dial fields that passed, by field. ``dropped``:
    field -> reason, for failing fields dropped because another dial field passed (the row
    is still sent; each becomes a warning). ``problems``: failing fields when no dial field
    passed (the row is INVALID).
    """

    sent: dict[str, str]
    keys: dict[str, int]
    dropped: dict[str, str]
    problems: tuple[str, ...]


def _given(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def screen_numbers(body: Mapping[str, object], policy: PhonePolicy) -> Screened:
    """Judge every non-blank number field of a request body (API spelling).

    A failing field makes the row INVALID unless a dial field (PhoneNumber1..6) of the row
    passed; then it is dropped with a warning. A row with no dial field at all is left to the
    ordinary "at least one is required" check.
    """
    sent: dict[str, str] = {}
    keys: dict[str, int] = {}
    failed: dict[str, str] = {}
    for field in NUMBER_FIELDS:
        value = body.get(field)
        if not _given(value):
            continue
        assert isinstance(value, str)
        try:
            number = normalise(value, policy)
        except PhoneError as exc:
            failed[field] = f"{exc} ({_shown(value)})"
            continue
        sent[field] = number.sent
        if field != "FaxNumber":
            keys[field] = number.key
    if failed and not keys:
        problems = tuple(f"{field}: {why}" for field, why in failed.items())
        return Screened(sent, keys, {}, problems)
    return Screened(sent, keys, failed, ())


def _shown(value: str) -> str:
    """The value as a problem message quotes it: short, so a hostile cell cannot flood a log."""
    text = value.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def number_key(text: str, region: str) -> int | None:
    """The E.164 digits of ``text`` as an integer (None: not a phone number). Only parsed, not
    checked: a suppression-list entry that is impossible simply never matches a row's number."""
    text = text.strip()
    if quick_parse(text) is not None:
        return int(text[1:])
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not number.country_code or not number.national_number:
        return None
    digits = phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
    return int(digits) if digits.isdigit() and len(digits) <= 15 else None
