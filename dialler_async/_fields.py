"""The one table of Dialler Contacts fields: API spelling, Python name, type, maximum length.

The converter (renames), the client-side validation, the emulator's validation and the CLI's
column matching all read this table, so a field is added or renamed in exactly one place.
Maximum lengths are those of section 6 of the API notes (the CSV import documentation,
release 3.19 and later).
"""

from __future__ import annotations

from enum import Enum
from typing import Final, NamedTuple


class Kind(Enum):
    """The JSON type of a field's value (every field is also nullable)."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"


class Field(NamedTuple):
    api: str
    py: str
    kind: Kind
    max_length: int | None = None


_S, _I, _F, _B, _D = Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.DATETIME

#: Fields a client may send when importing or updating a contact, in the wiki's order.
IMPORT_FIELDS: Final[tuple[Field, ...]] = (
    Field("DiallerCampaignsID", "campaign_id", _I),
    Field("DiallerCampaignsName", "campaign_name", _S, 64),
    Field("RandomSortOrder", "random_sort_order", _I),
    Field("UserData", "user_data", _S, 64),
    Field("Client", "client", _S, 64),
    Field("Service", "service", _S, 64),
    Field("ReferenceNumber", "reference_number", _S, 64),
    Field("Name", "name", _S, 64),
    Field("FirstName", "first_name", _S, 64),
    Field("Salutation", "salutation", _S, 16),
    Field("Title", "title", _S, 16),
    Field("Company", "company", _S, 64),
    Field("Address", "address", _S, 64),
    Field("PostalCode", "postal_code", _S, 10),
    Field("City", "city", _S, 64),
    Field("Country", "country", _S, 64),
    Field("AccountOwner", "account_owner", _S, 64),
    Field("AccountBank", "account_bank", _S, 32),
    Field("AccountNationalBankCode", "account_national_bank_code", _S, 10),
    Field("AccountBIC", "account_bic", _S, 11),
    Field("AccountNumber", "account_number", _S, 20),
    Field("AccountIBAN", "account_iban", _S, 34),
    Field("Amount", "amount", _F),
    *(Field(f"PhoneNumber{n}", f"phone_number{n}", _S, 32) for n in range(1, 7)),
    Field("FaxNumber", "fax_number", _S, 32),
    Field("Email", "email", _S, 256),
    Field("Website", "website", _S),
    Field("Comment", "comment", _S),
    Field("ReservedUsersUID", "reserved_users_uid", _S, 32),
    Field("FollowUpUsersUID", "follow_up_users_uid", _S, 32),
    Field("FollowUpDateTime", "follow_up_at", _D),
    Field("dtBeginDate", "begin_date", _D),
    Field("dtEndDate", "end_date", _D),
    Field("Manufacturer", "manufacturer", _S),
    Field("Model", "model", _S),
    Field("Tag", "tag", _S),
    Field("ExternalSystemLink", "external_system_link", _S),
)

#: Fields only the server writes: dialling state, counters and bookkeeping.
SERVER_FIELDS: Final[tuple[Field, ...]] = (
    Field("ID", "id", _I),
    Field("dtImported", "imported_at", _D),
    Field("dtNextTry", "next_try_at", _D),
    Field("bLocked", "locked", _B),
    Field("bLastResultMailbox", "last_result_mailbox", _B),
    Field("LastAcdAgentEndReasonsID", "last_acd_agent_end_reasons_id", _I),
    *(Field(f"bPhoneNumber{n}Invalid", f"phone_number{n}_invalid", _B) for n in range(1, 7)),
    *(Field(f"nTriesPhoneNumber{n}", f"tries_phone_number{n}", _I) for n in range(1, 7)),
    *(Field(f"nPhoneNumber{n}LastCause", f"phone_number{n}_last_cause", _I) for n in range(1, 7)),
    *(
        Field(
            f"PhoneNumber{n}LastAcdAgentEndReasonsID",
            f"phone_number{n}_last_acd_agent_end_reasons_id",
            _I,
        )
        for n in range(1, 7)
    ),
    Field("DiallerCampaignsResultCodesID", "result_code_id", _I),
)

#: Every field of a contact record, as the server returns it.
CONTACT_FIELDS: Final[tuple[Field, ...]] = SERVER_FIELDS[:1] + IMPORT_FIELDS + SERVER_FIELDS[1:]

PHONE_FIELDS: Final[tuple[str, ...]] = tuple(f"PhoneNumber{n}" for n in range(1, 7))

BY_API: Final[dict[str, Field]] = {f.api: f for f in CONTACT_FIELDS}
BY_PY: Final[dict[str, Field]] = {f.py: f for f in CONTACT_FIELDS}

#: Extended-record keys of the batch retrieval (structured into nested models).
RESULT_CODE_KEY: Final = "DiallerCampaignsResultCodes"
HISTORY_KEY: Final = "DiallerContactsHistory"

RESULT_CODE_FIELDS: Final[tuple[Field, ...]] = (
    Field("ID", "id", _I),
    Field("ExportKey", "export_key", _S),
    Field("Content", "content", _S),
    Field("bDone", "done", _B),
    Field("bDelay", "delay", _B),
    Field("bAborted", "aborted", _B),
    Field("bAppointment", "appointment", _B),
)

#: History entries: the emulator's per-call record (section 10.2) and the batch's nested
#: ``StatisticsPartA`` object, whose further keys the wiki does not show.
HISTORY_FIELDS: Final[tuple[Field, ...]] = (
    Field("ID", "id", _I),
    Field("DiallerContactsID", "contact_id", _I),
    Field("PhoneNumber", "phone_number", _S),
    Field("dtCallStart", "started_at", _D),
    Field("DiallerCampaignsResultCodesID", "result_code_id", _I),
    Field("ResultCode", "result_code", _S),
    Field("UsersUID", "agent_uid", _S),
)
STATISTICS_KEY: Final = "StatisticsPartA"

CAMPAIGN_FIELDS: Final[tuple[Field, ...]] = (
    Field("ID", "id", _I),
    Field("Name", "name", _S),
    Field("ClientsID", "client_id", _I),
    Field("LanguagesID", "language_id", _I),
    Field("ContactPreviewTime", "contact_preview_time", _I),
    Field("nMaxParallelLines", "max_parallel_lines", _I),
    Field(
        "bCloseContactsOnIncomingCallsMatchCallerID",
        "close_contacts_on_incoming_calls_match_caller_id",
        _B,
    ),
    Field("dtTo", "active_until", _D),
    Field("bCallerIDActive", "caller_id_active", _B),
    Field("AbortOnNoTelNumberResultCodesID", "abort_on_no_tel_number_result_codes_id", _I),
    Field("IncomingCallResultCodesID", "incoming_call_result_codes_id", _I),
)

#: The API's date-time form (the seed example); also what the client sends.
DATETIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"
