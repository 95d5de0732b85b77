"""Realistic contacts to import and the canned contact record the fast server answers with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import orjson

from dialler_async import _fields as F

CAMPAIGN_ID: Final = 538
_FIRST: Final = ("Anna", "Jonas", "Lea", "Lukas", "Marie", "Paul", "Sophie", "Felix", "Emma")
_LAST: Final = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker")
_CITIES: Final = (
    ("Berlin", "10115"),
    ("München", "80331"),
    ("Hamburg", "20095"),
    ("Köln", "50667"),
)
_COMPANIES: Final = ("Nordlicht GmbH", "Alpen Versand AG", "Rheinwerk KG", "Hansa Logistik")


def contact(i: int, prefix: str = "bench") -> dict[str, Any]:
    """Contact number ``i``: 12 fields in the API's spelling, UserData unique per ``prefix``."""
    first, last = _FIRST[i % len(_FIRST)], _LAST[i % len(_LAST)]
    city, postal = _CITIES[i % len(_CITIES)]
    return {
        "UserData": f"{prefix}-{i:09d}",
        "Name": last,
        "FirstName": first,
        "Salutation": "Frau" if i % 2 else "Herr",
        "Company": _COMPANIES[i % len(_COMPANIES)],
        "Address": f"Hauptstraße {i % 240 + 1}",
        "PostalCode": postal,
        "City": city,
        "Country": "DE",
        "PhoneNumber1": f"+4930{i % 100_000_000:08d}",
        "PhoneNumber2": f"+49171{i % 10_000_000:07d}",
        "Email": f"{first.lower()}.{i}@example.com",
    }


def contacts(n: int, prefix: str = "bench", start: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` contacts generated lazily (nothing is held: safe for a million)."""
    for i in range(start, start + n):
        yield contact(i, prefix)


def contact_record(i: int = 1) -> dict[str, Any]:
    """A full contact record as the server returns it: every field of the table, filled."""
    record: dict[str, Any] = {}
    sample = {**contact(i), "DiallerCampaignsID": CAMPAIGN_ID}
    for field in F.CONTACT_FIELDS:
        if field.api in sample:
            record[field.api] = sample[field.api]
        elif field.kind is F.Kind.STR:
            record[field.api] = None if field.api.startswith("Account") else ""
        elif field.kind is F.Kind.INT:
            record[field.api] = 0
        elif field.kind is F.Kind.FLOAT:
            record[field.api] = 0.0
        elif field.kind is F.Kind.BOOL:
            record[field.api] = False
        else:
            record[field.api] = None
    record.update(
        {
            "ID": 100_000 + i,
            "DiallerCampaignsName": "Spring Campaign",
            "RandomSortOrder": 7,
            "dtImported": "2026-05-01T09:30:00",
            "dtNextTry": "2026-05-01T09:30:00",
            "bLocked": False,
        }
    )
    return record


def envelope_bytes(*, user_data: bool = True) -> bytes:
    """``{"records":[record],"count":1,"status":200}`` as the server sends it. ``user_data``:
    False leaves the record's UserData out (one canned answer for every request: a fixed
    UserData would be "another contact's" to the SDK's answer check)."""
    record = contact_record()
    if not user_data:
        record.pop("UserData", None)
    return orjson.dumps({"records": [record], "count": 1, "status": 200})
