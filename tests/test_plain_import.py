"""The short path for plain import rows gives exactly the full path's body, or steps aside.

``plain_import_body`` skips building a ``NewContact`` for rows that need no conversion; it must
never accept a row the full path refuses, nor send anything different from what it would.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialler_async import ContactValidationError
from dialler_async import _fields as F
from dialler_async._operations import Import, Prepared, WriteKind
from dialler_async._validation import checked_contact, plain_import_body

_KEYS = [f.api for f in F.IMPORT_FIELDS] + ["ID", "Unknown", "name", "phone_number1"]
_VALUES = st.one_of(
    st.none(),
    st.text(max_size=70),
    st.sampled_from(["", " ", "Ann", "+4930123", "x" * 64, "x" * 65, "2026-05-01T09:30:00"]),
    st.integers(min_value=-5, max_value=10**6),
    st.booleans(),
    st.floats(allow_nan=True),
)


def _full(row: Any, campaign_given: bool) -> dict[str, Any] | None:
    try:
        return checked_contact(row, campaign_given=campaign_given)[1]
    except ContactValidationError:
        return None


@settings(max_examples=400, deadline=None)
@given(row=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=10), given_=st.booleans())
def test_short_path_body_is_the_full_paths_or_none(row: dict[str, Any], given_: bool) -> None:
    short = plain_import_body(row, campaign_given=given_)
    if short is not None:
        assert short == _full(row, given_)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(
        st.sampled_from(["Company", "City", "PhoneNumber2", "Email", "RandomSortOrder"]),
        st.one_of(st.none(), st.text(max_size=20), st.integers(0, 99)),
    )
)
def test_typical_rows_take_the_short_path_when_valid(extra: dict[str, Any]) -> None:
    row = {"UserData": "u1", "Name": "Ann", "PhoneNumber1": "+4930123", **extra}
    full = _full(row, True)
    short = plain_import_body(row, campaign_given=True)
    assert short is None or short == full
    # Typed as the field is (text to text fields, int to integer fields): never declined.
    if all(
        v is None or isinstance(v, int if k == "RandomSortOrder" else str) for k, v in extra.items()
    ):
        assert short is not None
        assert short == full


@pytest.mark.parametrize(
    "row",
    [
        {"Name": "Ann", "PhoneNumber1": "1"},  # no campaign and none given
        {"Name": " ", "PhoneNumber1": "1", "DiallerCampaignsID": 5},
        {"Name": "Ann", "PhoneNumber1": " ", "DiallerCampaignsID": 5},
        {"Name": "Ann", "PhoneNumber1": "1", "DiallerCampaignsID": True},
        {"Name": "Ann", "PhoneNumber1": 4930123, "DiallerCampaignsID": 5},  # int in a text field
        {"Name": "Ann", "PhoneNumber1": "1", "UserData": "x" * 65, "DiallerCampaignsID": 5},
        {"Name": "Ann", "PhoneNumber1": "1", "DiallerCampaignsID": 5, "Foo": "bar"},
        {"name": "Ann", "PhoneNumber1": "1", "DiallerCampaignsID": 5},
    ],
)
def test_rows_the_short_path_declines(row: dict[str, Any]) -> None:
    assert plain_import_body(row, campaign_given=False) is None


def test_prepare_gives_the_same_request_either_way() -> None:
    rules = Import(overwrite_duplicates=True, campaign_id=538, campaign_name=None)
    row = {"UserData": " ", "Name": "Ann", "PhoneNumber1": "+4930123"}
    short = rules.prepare(row)
    # The same row with a float phone number has to take the full path.
    full = rules.prepare({**row, "PhoneNumber1": 4930123.0})
    assert short.payload == {**row, "DiallerCampaignsID": 538}
    assert full.payload == {**row, "PhoneNumber1": "4930123", "DiallerCampaignsID": 538}
    assert short.user_data is None and full.user_data is None  # blank UserData: no key
    assert short.kind is full.kind
    assert row == {"UserData": " ", "Name": "Ann", "PhoneNumber1": "+4930123"}  # not mutated


@pytest.mark.parametrize(
    ("overwrite", "user_data"), [(True, "ud-1"), (False, "ud-1"), (True, None), (False, None)]
)
def test_prepare_builds_the_named_tuple_its_fields_say(
    overwrite: bool, user_data: str | None
) -> None:
    # Import.prepare builds its Prepared with tuple.__new__ (once per row, cheaper than the
    # named tuple's constructor): every field must still land under its own name.
    rules = Import(overwrite_duplicates=overwrite, campaign_id=538, campaign_name=None)
    row = {"Name": "Ann", "PhoneNumber1": "+4930123"}
    if user_data is not None:
        row["UserData"] = user_data
    prepared = rules.prepare(row)
    idempotent = overwrite and user_data is not None
    assert prepared == Prepared(
        key=user_data,
        serial_key=user_data,
        payload={**row, "DiallerCampaignsID": 538},
        idempotent=idempotent,
        user_data=user_data,
        kind=WriteKind.IDEMPOTENT if idempotent else WriteKind.CREATE,
    )
    assert prepared.skip is None and prepared.warnings == ()
