"""The converter: API spelling only here, wiki payloads round-trip, unknown fields survive."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from dialler_async import (
    UNSET,
    Campaign,
    Contact,
    ContactUpdate,
    ContactValidationError,
    HistoryEntry,
    NewContact,
    validate_contact,
    validate_update,
)
from dialler_async import _fields as F
from dialler_async._converter import structure, to_new_contact, to_update, unstructure

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_every_field_of_the_field_list_is_modelled() -> None:
    spec = load("contact-fields.json")
    record_keys = {f.api for f in F.CONTACT_FIELDS}
    assert set(spec["import_fields"]) <= {f.api for f in F.IMPORT_FIELDS}
    assert set(spec["record_fields"]) <= record_keys
    assert set(spec["record_fields_inferred"]) <= record_keys
    assert set(spec["extended_record_fields"]) <= record_keys | {F.RESULT_CODE_KEY, F.HISTORY_KEY}
    # each API name maps to a distinct snake_case attribute of the models
    for cls, fields in ((Contact, F.CONTACT_FIELDS), (NewContact, F.IMPORT_FIELDS)):
        names = {a.name for a in attrs.fields(cls)}
        assert {f.py for f in fields} <= names
    assert all(f.py == f.py.lower() for f in F.CONTACT_FIELDS)


def test_pascal_case_lives_only_in_the_converter_and_field_table() -> None:
    package = Path(__file__).parent.parent / "dialler_async"
    models = (package / "_models.py").read_text(encoding="utf-8")
    for name in ("DiallerCampaignsID", "PhoneNumber1", "dtNextTry", "UserData"):
        assert name not in models


def test_wiki_import_example_round_trips() -> None:
    body = load("wiki_import_body.json")
    contact = to_new_contact(body)
    assert contact.campaign_id == 538
    assert contact.account_iban == "AccountIBAN"
    assert contact.begin_date == datetime(2026, 1, 1, 8, 0)
    sent = unstructure(contact)
    # None fields are not sent (an overwrite changes only what is given); the rest is equal
    assert sent == {k: v for k, v in body.items() if v is not None}


def test_wiki_list_example_structures_and_keeps_unknown_fields() -> None:
    record = load("wiki_list_response.json")["records"][0]
    contact = structure(record, Contact)
    assert contact.id == 215387
    assert contact.company == "Musterfirma GmbH"
    assert contact.tries_phone_number4 == 0
    assert contact.extra == {
        "dtLastModified": "2022-07-08T11:33:18.900977Z",
        "SomeFutureFlag": {"nested": [1, 2]},
    }
    back = unstructure(contact)
    for key, value in record.items():
        assert back[key] == value, key


def test_wiki_batch_example_fills_result_code_and_history() -> None:
    record = load("wiki_batch_response.json")["records"][0]
    contact = structure(record, Contact)
    assert contact.result_code_id == 2492
    assert contact.result_code is not None and contact.result_code.aborted is True
    assert contact.result_code.export_key == "Max Tries (Abort)"
    assert contact.history is not None and len(contact.history) == 1
    assert contact.history[0].statistics == record["DiallerContactsHistory"][0]["StatisticsPartA"]
    back = unstructure(contact)
    assert back["DiallerCampaignsResultCodes"]["bAborted"] is True
    assert back["DiallerContactsHistory"][0]["StatisticsPartA"]["ID"] == 99001


def test_wiki_campaign_example() -> None:
    record = load("wiki_campaigns_response.json")["records"][0]
    campaign = structure(record, Campaign)
    assert (campaign.id, campaign.name, campaign.contact_preview_time) == (538, "Campaign 1000", 5)
    assert campaign.close_contacts_on_incoming_calls_match_caller_id is True
    assert unstructure(campaign) == record


def test_history_entry_fields() -> None:
    entry = structure(
        {
            "ID": 1,
            "DiallerContactsID": 7,
            "PhoneNumber": "+49301",
            "dtCallStart": "2026-05-01 09:30:00",
            "ResultCode": "Busy",
            "UsersUID": "agent1",
            "bRecorded": True,
        },
        HistoryEntry,
    )
    assert entry.started_at == datetime(2026, 5, 1, 9, 30)
    assert entry.extra == {"bRecorded": True}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-05-01T09:30:00", datetime(2026, 5, 1, 9, 30)),
        ("2026-05-01 09:30:00", datetime(2026, 5, 1, 9, 30)),
        ("2026-05-01T09:30:00.250", datetime(2026, 5, 1, 9, 30, 0, 250000)),
        ("2026-05-01T09:30:00Z", datetime(2026, 5, 1, 9, 30, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_datetimes_in_and_out(raw: str | None, expected: datetime | None) -> None:
    contact = structure({"ID": 1, "dtNextTry": raw}, Contact)
    assert contact.next_try_at == expected
    if expected is not None:
        assert unstructure(contact)["dtNextTry"] == "2026-05-01T09:30:00"


def test_csv_style_strings_are_converted() -> None:
    contact = to_new_contact(
        {
            "Name": "Müller",
            "DiallerCampaignsID": " 538 ",
            "Amount": "12,50",
            "PhoneNumber1": 4930123,
            "RandomSortOrder": "",
            "PostalCode": 10115,
        }
    )
    assert contact.campaign_id == 538
    assert contact.amount == 12.5
    assert contact.phone_number1 == "4930123"
    assert contact.random_sort_order is None
    assert contact.postal_code == "10115"


def test_snake_case_keys_are_accepted_in_dicts() -> None:
    contact = to_new_contact({"name": "Muster", "campaign_id": 538, "phone_number1": "+49301"})
    assert (contact.name, contact.campaign_id, contact.phone_number1) == ("Muster", 538, "+49301")


def test_unknown_input_keys_are_sent_through() -> None:
    contact = to_new_contact({"Name": "X", "ResetContact": True})
    assert contact.extra == {"ResetContact": True}
    assert unstructure(contact)["ResetContact"] is True


def test_wrong_types_name_every_problem() -> None:
    with pytest.raises(ContactValidationError) as info:
        to_new_contact(
            {
                "Name": ["x"],
                "DiallerCampaignsID": "abc",
                "Amount": "lots",
                "dtBeginDate": "soon",
                "UserData": "K1",
            }
        )
    problems = info.value.problems
    assert len(problems) == 4
    assert any(p.startswith("Name:") for p in problems)
    assert any(p.startswith("DiallerCampaignsID:") for p in problems)
    assert any(p.startswith("Amount:") for p in problems)
    assert any(p.startswith("dtBeginDate:") for p in problems)
    assert info.value.key == "K1"


def test_non_mapping_input_is_invalid() -> None:
    with pytest.raises(ContactValidationError, match="expected a mapping"):
        to_new_contact(["Name", "x"])  # type: ignore[arg-type]


def test_validation_names_every_problem() -> None:
    with pytest.raises(ContactValidationError) as info:
        validate_contact({"Name": " ", "PostalCode": "1" * 11, "UserData": "u" * 65})
    assert info.value.problems == (
        "Name: required",
        "DiallerCampaignsID or DiallerCampaignsName: required",
        "PhoneNumber1..PhoneNumber6: at least one is required",
        "UserData: 65 characters, at most 64 allowed",
        "PostalCode: 11 characters, at most 10 allowed",
    )


def test_the_wiki_example_violates_its_own_length_limit() -> None:
    # The wiki's placeholder text is longer than the CSV docs' TEXT(10) for this column.
    with pytest.raises(ContactValidationError) as info:
        validate_contact(load("wiki_import_body.json"))
    assert info.value.problems == ("AccountNationalBankCode: 23 characters, at most 10 allowed",)


def test_campaign_given_skips_the_campaign_rule() -> None:
    contact = validate_contact({"Name": "X", "PhoneNumber2": "+491"}, campaign_given=True)
    assert contact.phone_number2 == "+491"


def test_update_tells_unset_from_null() -> None:
    update = to_update({"UserData": "K1", "Comment": None, "City": "Köln"})
    assert update.comment is None
    assert update.email is UNSET
    assert unstructure(update) == {"UserData": "K1", "Comment": None, "City": "Köln"}
    assert unstructure(ContactUpdate(id=5, tag="vip")) == {"ID": 5, "Tag": "vip"}


def test_update_validation() -> None:
    with pytest.raises(ContactValidationError, match="ID or UserData"):
        validate_update({"Comment": "x"})
    with pytest.raises(ContactValidationError, match="Name: cannot be cleared"):
        validate_update({"ID": 1, "Name": None})
    assert validate_update(ContactUpdate(id=3)).key == 3


def test_models_are_frozen_and_slotted() -> None:
    contact = NewContact(name="X")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        contact.name = "Y"  # type: ignore[misc]
    assert not hasattr(contact, "__dict__")


def test_reprs_show_only_what_is_set() -> None:
    assert repr(NewContact(name="X", phone_number1="+49")) == (
        "NewContact(name='X', phone_number1='+49')"
    )
    # in an update, None means "set to null" and is shown; UNSET is not
    assert repr(ContactUpdate(id=3, comment=None)) == "ContactUpdate(id=3, comment=None)"
    assert repr(Contact(id=5, name="M")) == "Contact(name='M', id=5)"
