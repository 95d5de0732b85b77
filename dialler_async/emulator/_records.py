"""Record shapes and request-body validation, all driven by the field table in ``_fields``.

A contact is kept as the dict (and JSON bytes) the API returns, keyed by API names, so a
response is a splice of stored bytes. Validation turns a request body into the subset of
import fields it sets, normalised (date-times to ``DATETIME_FORMAT``, Amount to float), or
raises ``RequestError`` with the first problem found.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson

from dialler_async._fields import (
    CONTACT_FIELDS,
    DATETIME_FORMAT,
    IMPORT_FIELDS,
    PHONE_FIELDS,
    Field,
    Kind,
)

__all__ = [
    "RESULT_CODES",
    "RequestError",
    "ResultCode",
    "campaign_record",
    "check_complete",
    "clean_fields",
    "new_contact",
    "now_text",
    "parse_datetime",
    "parse_object",
]


class RequestError(Exception):
    """A request the API refuses: answered ``{"status": status, "error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


CONTACT_NOT_FOUND: Final = "Dialler contact not found"
CAMPAIGN_NOT_FOUND: Final = "Dialler campaign not found"


class ResultCode(NamedTuple):
    """A seeded result code; ``cause`` is the Q.850 cause the simulated call ends with."""

    id: int
    name: str
    done: bool
    delay: bool
    aborted: bool
    appointment: bool
    cause: int
    weight: float  # share of simulated calls ending with it (0 = never dialled)

    def record(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "ExportKey": self.name,
            "Content": self.name,
            "bDone": self.done,
            "bDelay": self.delay,
            "bAborted": self.aborted,
            "bAppointment": self.appointment,
        }


RESULT_CODES: Final[dict[int, ResultCode]] = {
    rc.id: rc
    for rc in (
        ResultCode(2490, "Success", True, False, False, False, 16, 0.30),
        ResultCode(2491, "No Answer", False, True, False, False, 19, 0.35),
        ResultCode(2492, "Busy", False, True, False, False, 17, 0.20),
        ResultCode(2493, "Appointment", False, True, False, True, 16, 0.10),
        ResultCode(2494, "Max Tries (Abort)", False, False, True, False, 21, 0.05),
        ResultCode(2495, "No Tel Number (Abort)", False, False, True, False, 1, 0.0),
        ResultCode(2496, "Incoming Call", True, False, False, False, 16, 0.0),
    )
}


def campaign_record(campaign_id: int, name: str, client_id: int) -> dict[str, Any]:
    """A campaign as the API returns it, with the wiki example's settings."""
    return {
        "ID": campaign_id,
        "Name": name,
        "ClientsID": client_id,
        "LanguagesID": 2,
        "ContactPreviewTime": 5,
        "nMaxParallelLines": None,
        "bCloseContactsOnIncomingCallsMatchCallerID": True,
        "dtTo": None,
        "bCallerIDActive": False,
        "AbortOnNoTelNumberResultCodesID": 2495,
        "IncomingCallResultCodesID": 2496,
    }


def now_text() -> str:
    """The current UTC time in the API's date-time form (the emulator's clock is UTC)."""
    return time.strftime(DATETIME_FORMAT, time.gmtime())


def _template() -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(f.api for f in CONTACT_FIELDS)
    for n in range(1, 7):
        record[f"nTriesPhoneNumber{n}"] = 0
    record["bLocked"] = False
    return record


_TEMPLATE: Final = _template()


def new_contact(fields: dict[str, Any]) -> dict[str, Any]:
    """A fresh contact: every field present, counters at 0, unlocked, imported now."""
    record = _TEMPLATE.copy()
    record.update(fields)
    record["dtImported"] = now_text()
    return record


def parse_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (UTF-8), or a 400."""
    if not body:
        raise RequestError(400, "Request body is empty; a JSON object is required")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "Request body must be a JSON object")
    return value


_DATETIME: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d{1,9})?Z?")


def parse_datetime(value: str) -> str | None:
    """``value`` in ``DATETIME_FORMAT`` if it is an accepted date-time, else None.

    Accepted: ``YYYY-MM-DDTHH:MM:SS``, the same with a space for the ``T``, fractional
    seconds, a trailing ``Z``. Fractions are dropped (the API's form has none).
    """
    match = _DATETIME.fullmatch(value)
    if match is None:
        return None
    text = f"{match[1]}T{match[2]}"
    try:
        datetime.fromisoformat(text)  # rejects month 13, 25 o'clock and the like
    except ValueError:
        return None
    return text


class _Bad(Exception):
    pass


def _check_str(field: Field, value: Any) -> Any:
    if not isinstance(value, str):
        raise _Bad(f"Field '{field.api}' must be a string or null")
    if field.max_length is not None and len(value) > field.max_length:
        raise _Bad(
            f"Field '{field.api}' is longer than {field.max_length} characters ({len(value)})"
        )
    return value


def _check_int(field: Field, value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"Field '{field.api}' must be an integer or null")
    return value


def _check_float(field: Field, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Bad(f"Field '{field.api}' must be a number or null")
    return float(value)


def _check_bool(field: Field, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _Bad(f"Field '{field.api}' must be a boolean or null")
    return value


def _check_datetime(field: Field, value: Any) -> Any:
    text = parse_datetime(value) if isinstance(value, str) else None
    if text is None:
        raise _Bad(
            f"Field '{field.api}' must be a date-time 'YYYY-MM-DDTHH:MM:SS' or null, got {value!r}"
        )
    return text


_CHECKERS: Final[dict[Kind, Callable[[Field, Any], Any]]] = {
    Kind.STR: _check_str,
    Kind.INT: _check_int,
    Kind.FLOAT: _check_float,
    Kind.BOOL: _check_bool,
    Kind.DATETIME: _check_datetime,
}
_IMPORT_CHECKS: Final = {f.api: (f, _CHECKERS[f.kind]) for f in IMPORT_FIELDS}


def clean_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The import fields ``body`` sets, type- and length-checked; unknown keys are ignored."""
    fields: dict[str, Any] = {}
    for key, value in body.items():
        check = _IMPORT_CHECKS.get(key)
        if check is None:
            continue
        if value is None:
            fields[key] = None
            continue
        try:
            fields[key] = check[1](check[0], value)
        except _Bad as exc:
            raise RequestError(400, str(exc)) from None
    return fields


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_complete(record: dict[str, Any], *, need_campaign: bool = True) -> None:
    """400 unless ``record`` has a Name, a campaign and at least one phone number."""
    if _blank(record.get("Name")):
        raise RequestError(400, "Field 'Name' is mandatory and must not be blank")
    if (
        need_campaign
        and record.get("DiallerCampaignsID") is None
        and _blank(record.get("DiallerCampaignsName"))
    ):
        raise RequestError(400, "Field 'DiallerCampaignsID' or 'DiallerCampaignsName' is mandatory")
    if all(_blank(record.get(p)) for p in PHONE_FIELDS):
        raise RequestError(
            400, "At least one phone number (PhoneNumber1..PhoneNumber6) is mandatory"
        )
