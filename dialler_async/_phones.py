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
from collections import OrderedDict
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
# A negative number: what a spreadsheet makes of an unquoted 030-1234567 (30 - 1234567).
_NEGATIVE_TEXT: Final = re.compile(r"-[0-9]+(?:\.[0-9]+)?")
# A spreadsheet's exponent form ("4.93012E+09"): the digits after the mantissa are lost.
_EXPONENT_TEXT: Final = re.compile(r"[0-9]+(?:[.,][0-9]+)?[eE]\+?[0-9]+")


# The library's own bound on what it reads (``_MAX_INPUT_STRING_LENGTH``): longer is TOO_LONG.
_MAX_TEXT: Final = 250
# Digits with the punctuation people type between them, and a leading "+": nothing the library
# could read as an extension (x, ext, #, ;ext=), a second number or a vanity letter.
_PLAIN_TEXT: Final = re.compile(r"\+?[0-9 ()./-]*")
_PUNCTUATION: Final = str.maketrans("", "", " ()./-")

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


def readable(value: str) -> str:
    """``value`` as the library should read it: stripped; a spreadsheet's float
    (``4930123456.0``) as its digits; typed punctuation dropped (:func:`plain_digits`).
    Raises :class:`PhoneError` for what no parse can rescue (too long, an exponent form)."""
    text = value.strip()
    if len(text) > _MAX_TEXT:
        # What the library refuses unread; checked first so a huge cell costs no regex pass.
        raise PhoneError(TOO_LONG)
    if text[:1] == "-" and _NEGATIVE_TEXT.fullmatch(text):
        # No one types a number as negative; a spreadsheet computes =030-1234567 as one.
        raise PhoneError(NOT_A_NUMBER, "a negative number (a spreadsheet formula's result?)")
    if _PLAIN_TEXT.fullmatch(text) is not None:
        if "." in text:
            whole = _FLOAT_TEXT.fullmatch(text)
            if whole is not None:
                return whole.group(1)
        return plain_digits(text)
    if _EXPONENT_TEXT.fullmatch(text):
        raise PhoneError(NOT_A_NUMBER, "spreadsheet exponent form, digits are lost")
    return text


def plain_digits(text: str) -> str:
    """``text`` without the punctuation people type between digits (spaces, ``()-./``), when
    it holds nothing else but digits and a leading ``+``; any other text as it is.

    The library drops that punctuation itself, so it gives the same number or the same error
    for the digits alone (tests/test_phones.py checks it against the library). What it buys:
    an international number typed with spaces (``+49 30 1234567``) becomes ``+49301234567``,
    which :func:`quick_parse` splits without the full parse. (For a national number it saves
    nothing measurable: the library's parse costs the same either way.)
    """
    if _PLAIN_TEXT.fullmatch(text) is None:
        return text
    digits = text.translate(_PUNCTUATION)
    # Two digits alone are "viable" to the library, two with punctuation between are not a
    # number: below three the text goes as typed, so even the reason stays the library's.
    return digits if len(digits) - digits.startswith("+") >= 3 else text


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
        self.detail = detail


def normalise(value: str, policy: PhonePolicy) -> Number:
    """Parse, check and format one number; raises :class:`PhoneError` saying why not."""
    try:
        number = parse(readable(value), policy.region)
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


class Normaliser:
    """:func:`normalise` for one policy, remembering the last ``size`` distinct values it judged.

    A CRM export repeats numbers (a company's switchboard on every contact of that company, a
    placeholder like ``0000``): a repeat costs a dictionary lookup instead of a parse (~40 µs).
    The memory is bounded: when full, the oldest entry goes (first in, first out; a number
    that keeps recurring is simply parsed again once it has aged out). A failure is kept as its
    reason, never as an exception with its traceback.
    """

    __slots__ = ("_memo", "policy", "size")

    def __init__(self, policy: PhonePolicy, size: int = 16_384) -> None:
        self.policy = policy
        self.size = size
        # An OrderedDict drops its oldest entry in O(1); a dict's next(iter()) would have to
        # skip the holes earlier deletions left at its front.
        self._memo: OrderedDict[str, Number | tuple[str, str]] = OrderedDict()

    def __call__(self, value: str) -> Number:
        memo = self._memo
        known = memo.get(value)
        if known is None:
            try:
                known = normalise(value, self.policy)
            except PhoneError as exc:
                known = (exc.reason, exc.detail)
            if self.size > 0:
                if len(memo) >= self.size:
                    memo.popitem(last=False)
                memo[value] = known
        if type(known) is tuple:
            raise PhoneError(*known)
        assert isinstance(known, Number)
        return known


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


def screen_numbers(
    body: Mapping[str, object], policy: PhonePolicy, normaliser: Normaliser | None = None
) -> Screened:
    """Judge every non-blank number field of a request body (API spelling).

    A failing field makes the row INVALID unless a dial field (PhoneNumber1..6) of the row
    passed; then it is dropped with a warning. A row with no dial field at all is left to the
    ordinary "at least one is required" check. ``normaliser``: the job's (it remembers repeated
    numbers); None judges every value afresh.
    """
    judge = normaliser or Normaliser(policy, 0)
    sent: dict[str, str] = {}
    keys: dict[str, int] = {}
    failed: dict[str, str] = {}
    for field in NUMBER_FIELDS:
        value = body.get(field)
        if not _given(value):
            continue
        assert isinstance(value, str)
        try:
            number = judge(value)
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
    if quick_parse(text) is not None:  # the usual line of a regulator's list: no more work
        return int(text[1:])
    try:
        text = readable(text)
    except PhoneError:
        return None
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
