"""The phone policy: how numbers are read, checked and sent (see :mod:`._phones`).

Kept apart from the parsing so that ``import dialler_async`` does not import ``phonenumbers``
(~0.1 s); it is imported when a policy is first built or used.
"""

from __future__ import annotations

from typing import Literal

import attrs

PhoneFormat = Literal["e164", "e164-no-plus", "as-is"]
PhoneCheck = Literal["possible", "valid"]


def _region(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _check_region(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    import phonenumbers  # here, not at the top: see the module docstring

    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"PhonePolicy.region: {value!r} is not a region code such as 'DE'")


@attrs.frozen(slots=True)
class PhonePolicy:
    """How phone numbers are read, checked and sent.

    ``region``: the ISO 3166 code numbers without a country code belong to (``"DE"``: ``030
    1234567`` is Berlin). ``format``: ``"e164"`` (``+49301234567``, what the jtel field list asks
    for), ``"e164-no-plus"`` (``49301234567``, for installations that store it so) or ``"as-is"``
    (checked, but sent as given). ``check``: ``"possible"`` (a plausible length for its country)
    or ``"valid"`` (also in a range the metadata knows to be assigned; stricter, and changes with
    the ``phonenumbers`` release).
    """

    region: str = attrs.field(converter=_region, validator=_check_region)
    format: PhoneFormat = attrs.field(
        default="e164", validator=attrs.validators.in_(("e164", "e164-no-plus", "as-is"))
    )
    check: PhoneCheck = attrs.field(
        default="possible", validator=attrs.validators.in_(("possible", "valid"))
    )
