"""Client-side checks that run before any request, so a bad row costs no round trip.

The rules are the server's documented ones (API notes, sections 3.5 and 6): ``Name``, a campaign
(ID or name), at least one phone number, and the maximum lengths of the field table.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, Final

import orjson

from . import _fields as F
from ._converter import in_zone, to_new_contact, to_update, unstructure
from ._exceptions import ContactValidationError
from ._models import ContactUpdate, NewContact

_LIMITS: Final = {f.api: f.max_length for f in F.IMPORT_FIELDS if f.max_length}
_USER_DATA_MAX: Final = _LIMITS["UserData"]
_ASCII_DIGITS: Final = re.compile(r"[0-9]+")
_PHONES: Final = tuple(f"phone_number{n}" for n in range(1, 7))
#: Import fields whose values pass the converter unchanged when they already have the field's
#: type: text fields given ``str``, integer fields given ``int`` (see :func:`plain_import_body`).
_PLAIN_TEXT_LIMITS: Final = {
    f.api: f.max_length or sys.maxsize for f in F.IMPORT_FIELDS if f.kind is F.Kind.STR
}
_PLAIN_INT: Final = frozenset(f.api for f in F.IMPORT_FIELDS if f.kind is F.Kind.INT)
_PHONE_KEYS: Final = tuple(f"PhoneNumber{n}" for n in range(1, 7))
_IMPORT_KEYS: Final = frozenset(f.api for f in F.IMPORT_FIELDS)
_INT_MIN: Final = -(1 << 63)  # what orjson encodes: int64 and uint64
_INT_MAX: Final = (1 << 64) - 1


def _length_problems(body: Mapping[str, Any]) -> list[str]:
    # Only the fields being sent: a request body is a handful of keys, the model has dozens.
    limits = _LIMITS
    problems = [
        f"{api}: {len(value)} characters, at most {limit} allowed"
        for api, value in body.items()
        if (limit := limits.get(api)) is not None and isinstance(value, str) and len(value) > limit
    ]
    try:
        orjson.dumps(body)
    except TypeError:  # found here, the row is INVALID; found when sending, it was a bug
        problems.extend(_json_problems(body))
    return problems


def _json_problems(body: Mapping[Any, Any]) -> list[str]:
    """Why ``body`` has no JSON form, field by field (an integer beyond 64 bits, a key that
    is not text, a value of a type JSON does not know)."""
    problems = []
    for key, value in body.items():
        if type(key) is not str:
            problems.append(f"{key!r}: a field name must be text")
            continue
        try:
            orjson.dumps(value)
        except TypeError as exc:
            problems.append(f"{key}: cannot be sent as JSON ({exc}): {value!r:.60}")
    return problems or ["the contact cannot be sent as JSON"]


def _blank(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def new_contact_problems(
    contact: NewContact, *, campaign_given: bool = False, body: Mapping[str, Any] | None = None
) -> list[str]:
    """Every reason the server would reject this import, in field order (empty if none).

    ``campaign_given``: the caller fills in a campaign for rows that have none. ``body``: the
    contact's request body when the caller has it already (saves converting it again).
    """
    problems = []
    if _blank(contact.name):
        problems.append("Name: required")
    if not campaign_given and contact.campaign_id is None and _blank(contact.campaign_name):
        problems.append("DiallerCampaignsID or DiallerCampaignsName: required")
    if all(_blank(getattr(contact, p)) for p in _PHONES):
        problems.append("PhoneNumber1..PhoneNumber6: at least one is required")
    problems.extend(_length_problems(unstructure(contact) if body is None else body))
    return problems


def update_problems(update: ContactUpdate, *, body: Mapping[str, Any] | None = None) -> list[str]:
    """Every reason the server would reject this update (empty if none); ``body`` as above."""
    problems = []
    if not isinstance(update.id, int) and _blank(update.user_data):
        problems.append("ID or UserData: required to find the contact")
    if update.name is None or (isinstance(update.name, str) and not update.name.strip()):
        problems.append("Name: cannot be cleared")
    problems.extend(_length_problems(unstructure(update) if body is None else body))
    return problems


def checked_contact(
    data: NewContact | Mapping[str, Any],
    *,
    campaign_given: bool = False,
    server_timezone: tzinfo | None = None,
) -> tuple[NewContact, dict[str, Any]]:
    """The contact and its request body, converted once; raises naming every problem.
    Aware date-times are sent as ``server_timezone``'s wall-clock time (None: local zone)."""
    contact = in_zone(to_new_contact(data), server_timezone)
    body = unstructure(contact)
    problems = new_contact_problems(contact, campaign_given=campaign_given, body=body)
    if problems:
        raise ContactValidationError(problems, key=contact.user_data)
    return contact, body


def plain_import_body(data: object, *, campaign_given: bool) -> dict[str, Any] | None:
    """The request body of an import row that needs no conversion, else None.

    A row needs none when it is a plain ``dict`` in the API's spelling whose values are text
    for text fields, integers for integer fields, or None (the usual CSV or database row), and
    it breaks no rule. Its body is then the row without its None values: exactly what
    :func:`checked_contact` would build (tests compare the two), without building a 43-field
    :class:`NewContact` and converting it back, which is most of a row's client-side cost.
    Any other row, and any row with a problem, gets None: the full path converts it and names
    every problem.
    """
    if type(data) is not dict:
        return None
    text_limits = _PLAIN_TEXT_LIMITS
    has_none = False
    for key, value in data.items():
        kind = type(value)
        if kind is str:
            # -1 for a key that is not a text field: any text there needs the full path.
            if len(value) > text_limits.get(key, -1):
                return None
        elif kind is int:
            # Beyond 64 bits JSON cannot carry it: the full path names the problem.
            if key not in _PLAIN_INT or not _INT_MIN <= value <= _INT_MAX:
                return None
        elif value is None:
            # The full path drops None only under the fields it knows (it sends an unknown
            # key's None as null, and refuses some, "name" beside "Name"): those are its call.
            if key not in _IMPORT_KEYS:
                return None
            has_none = True
        else:
            return None
    name = data.get("Name")
    if type(name) is not str or not name.strip():
        return None
    if not campaign_given and data.get("DiallerCampaignsID") is None:
        campaign = data.get("DiallerCampaignsName")
        if type(campaign) is not str or not campaign.strip():
            return None
    for phone in _PHONE_KEYS:
        number = data.get(phone)
        if type(number) is str and number.strip():
            # A copy either way: the caller's row is never changed.
            return {k: v for k, v in data.items() if v is not None} if has_none else data.copy()
    return None


def checked_update(
    data: ContactUpdate | Mapping[str, Any], *, server_timezone: tzinfo | None = None
) -> tuple[ContactUpdate, dict[str, Any]]:
    """The update and its request body, converted once; raises naming every problem."""
    update = in_zone(to_update(data), server_timezone)
    body = unstructure(update)
    problems = update_problems(update, body=body)
    if problems:
        raise ContactValidationError(problems, key=update.key)
    return update, body


def validate_contact(
    data: NewContact | Mapping[str, Any], *, campaign_given: bool = False
) -> NewContact:
    """Convert and check one contact to import, exactly as an import would, without sending it.

    Accepts a :class:`NewContact` or a dict in the API's (or the SDK's) spelling. Raises
    :class:`ContactValidationError` naming every problem. ``campaign_given``: a campaign will be
    filled in for rows without one (``import_contacts(campaign_id=...)``).
    """
    return checked_contact(data, campaign_given=campaign_given)[0]


def validate_update(data: ContactUpdate | Mapping[str, Any]) -> ContactUpdate:
    """Convert and check one partial update without sending it (see :func:`validate_contact`)."""
    return checked_update(data)[0]


def validate_key(value: Any, *, by_user_data: bool) -> int | str:
    """Check one key of a delete/lock/unlock/reset job without sending it.

    By ID: a positive integer (or its digits as text) -> ``int``. By UserData: non-empty text of
    at most 64 characters -> ``str``. Raises :class:`ContactValidationError` otherwise.
    """
    if by_user_data:
        if not isinstance(value, str) or not value.strip():
            raise ContactValidationError([f"UserData: expected non-empty text, got {value!r}"])
        if len(value) > _USER_DATA_MAX:
            raise ContactValidationError(
                [f"UserData: {len(value)} characters, at most {_USER_DATA_MAX} allowed"],
                key=value,
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value.strip()) and int(value) > 0:
        return int(value)  # ASCII only: "12³" and "١٢" pass str.isdigit() and are refused
    raise ContactValidationError([f"ID: expected a positive integer, got {value!r}"])
