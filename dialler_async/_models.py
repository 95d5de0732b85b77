"""The data model: frozen attrs classes with snake_case names.

The API's PascalCase spelling lives only in the converter (``_converter.py``), built from the
field table in ``_fields.py``. Every class keeps the response keys it does not know in
``extra``, so a newer server's fields survive a round trip instead of being dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

import attrs

__all__ = [
    "UNSET",
    "Campaign",
    "Contact",
    "ContactUpdate",
    "HistoryEntry",
    "NewContact",
    "ResultCode",
    "UnsetType",
]


class UnsetType(enum.Enum):
    """The type of :data:`UNSET`: "not sent", as opposed to ``None`` ("set to null")."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> Literal[False]:
        return False


UNSET: Final = UnsetType.UNSET


def _no_extra() -> Mapping[str, Any]:
    return {}


def _compact_repr(obj: Any, *, hide: tuple[object, ...]) -> str:
    """Only the fields that hold something: a contact has 70-odd, a row sets a dozen."""
    shown = ", ".join(
        f"{a.name}={value!r}"
        for a in attrs.fields(type(obj))
        if a.repr and not any((value := getattr(obj, a.name)) is h for h in hide)
    )
    return f"{type(obj).__name__}({shown})"


@attrs.frozen(kw_only=True)
class _ContactFields:
    """The fields a client may import or update (the jtel import field list), shared by
    :class:`NewContact` and :class:`Contact`."""

    campaign_id: int | None = None
    campaign_name: str | None = None
    random_sort_order: int | None = None
    user_data: str | None = None
    client: str | None = None
    service: str | None = None
    reference_number: str | None = None
    name: str | None = None
    first_name: str | None = None
    salutation: str | None = None
    title: str | None = None
    company: str | None = None
    address: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    account_owner: str | None = None
    account_bank: str | None = None
    account_national_bank_code: str | None = None
    account_bic: str | None = None
    account_number: str | None = None
    account_iban: str | None = None
    amount: float | None = None
    phone_number1: str | None = None
    phone_number2: str | None = None
    phone_number3: str | None = None
    phone_number4: str | None = None
    phone_number5: str | None = None
    phone_number6: str | None = None
    fax_number: str | None = None
    email: str | None = None
    website: str | None = None
    comment: str | None = None
    reserved_users_uid: str | None = None
    follow_up_users_uid: str | None = None
    follow_up_at: datetime | None = None
    begin_date: datetime | None = None
    end_date: datetime | None = None
    manufacturer: str | None = None
    model: str | None = None
    tag: str | None = None
    external_system_link: str | None = None


@attrs.frozen(kw_only=True, repr=False)
class NewContact(_ContactFields):
    """A contact to import. Required by the server: ``name``, ``campaign_id`` or
    ``campaign_name``, and at least one of ``phone_number1`` .. ``phone_number6``.

    Fields left ``None`` are not sent, so an import with ``overwrite_duplicates=True`` changes
    only the fields given. ``extra`` holds API fields by their API name that this SDK does not
    model; they are sent as they are.
    """

    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)

    def __repr__(self) -> str:
        return _compact_repr(self, hide=(None,))

    @property
    def key(self) -> str | None:
        """The contact's foreign-system key (its user data), if any."""
        return self.user_data


@attrs.frozen(kw_only=True, repr=False)
class ContactUpdate:
    """A partial update of an existing contact, found by ``id`` or ``user_data``.

    Only fields that are not :data:`UNSET` are sent; ``None`` is sent as JSON null (clears the
    field). If both ``id`` and ``user_data`` are given, the server matches on the ID.
    """

    id: int | UnsetType | None = UNSET
    campaign_id: int | UnsetType | None = UNSET
    campaign_name: str | UnsetType | None = UNSET
    random_sort_order: int | UnsetType | None = UNSET
    user_data: str | UnsetType | None = UNSET
    client: str | UnsetType | None = UNSET
    service: str | UnsetType | None = UNSET
    reference_number: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    first_name: str | UnsetType | None = UNSET
    salutation: str | UnsetType | None = UNSET
    title: str | UnsetType | None = UNSET
    company: str | UnsetType | None = UNSET
    address: str | UnsetType | None = UNSET
    postal_code: str | UnsetType | None = UNSET
    city: str | UnsetType | None = UNSET
    country: str | UnsetType | None = UNSET
    account_owner: str | UnsetType | None = UNSET
    account_bank: str | UnsetType | None = UNSET
    account_national_bank_code: str | UnsetType | None = UNSET
    account_bic: str | UnsetType | None = UNSET
    account_number: str | UnsetType | None = UNSET
    account_iban: str | UnsetType | None = UNSET
    amount: float | UnsetType | None = UNSET
    phone_number1: str | UnsetType | None = UNSET
    phone_number2: str | UnsetType | None = UNSET
    phone_number3: str | UnsetType | None = UNSET
    phone_number4: str | UnsetType | None = UNSET
    phone_number5: str | UnsetType | None = UNSET
    phone_number6: str | UnsetType | None = UNSET
    fax_number: str | UnsetType | None = UNSET
    email: str | UnsetType | None = UNSET
    website: str | UnsetType | None = UNSET
    comment: str | UnsetType | None = UNSET
    reserved_users_uid: str | UnsetType | None = UNSET
    follow_up_users_uid: str | UnsetType | None = UNSET
    follow_up_at: datetime | UnsetType | None = UNSET
    begin_date: datetime | UnsetType | None = UNSET
    end_date: datetime | UnsetType | None = UNSET
    manufacturer: str | UnsetType | None = UNSET
    model: str | UnsetType | None = UNSET
    tag: str | UnsetType | None = UNSET
    external_system_link: str | UnsetType | None = UNSET
    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)

    def __repr__(self) -> str:  # None is shown: it means "set to null" here
        return _compact_repr(self, hide=(UNSET,))

    @property
    def key(self) -> int | str | None:
        """The ID if given, else the user data: what the server matches on."""
        if isinstance(self.id, int):
            return self.id
        if isinstance(self.user_data, str):
            return self.user_data
        return None


@attrs.frozen(kw_only=True)
class ResultCode:
    """A dialler campaign result code (batch retrieval only)."""

    id: int | None = None
    export_key: str | None = None
    content: str | None = None
    done: bool | None = None
    delay: bool | None = None
    aborted: bool | None = None
    appointment: bool | None = None
    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One call attempt of a contact.

    The history routes return the fields below. The batch retrieval nests a
    ``StatisticsPartA`` object per entry instead, kept whole in ``statistics``.
    """

    id: int | None = None
    contact_id: int | None = None
    phone_number: str | None = None
    started_at: datetime | None = None
    result_code_id: int | None = None
    result_code: str | None = None
    agent_uid: str | None = None
    statistics: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)


@attrs.frozen(kw_only=True, repr=False)
class Contact(_ContactFields):
    """A dialler contact as the server returns it.

    ``result_code`` and ``history`` are filled only by the batch retrieval
    (:meth:`DiallerClient.get_contacts_batch`); elsewhere they are ``None``.
    """

    id: int | None = None
    imported_at: datetime | None = None
    next_try_at: datetime | None = None
    locked: bool | None = None
    last_result_mailbox: bool | None = None
    last_acd_agent_end_reasons_id: int | None = None
    phone_number1_invalid: bool | None = None
    phone_number2_invalid: bool | None = None
    phone_number3_invalid: bool | None = None
    phone_number4_invalid: bool | None = None
    phone_number5_invalid: bool | None = None
    phone_number6_invalid: bool | None = None
    tries_phone_number1: int | None = None
    tries_phone_number2: int | None = None
    tries_phone_number3: int | None = None
    tries_phone_number4: int | None = None
    tries_phone_number5: int | None = None
    tries_phone_number6: int | None = None
    phone_number1_last_cause: int | None = None
    phone_number2_last_cause: int | None = None
    phone_number3_last_cause: int | None = None
    phone_number4_last_cause: int | None = None
    phone_number5_last_cause: int | None = None
    phone_number6_last_cause: int | None = None
    phone_number1_last_acd_agent_end_reasons_id: int | None = None
    phone_number2_last_acd_agent_end_reasons_id: int | None = None
    phone_number3_last_acd_agent_end_reasons_id: int | None = None
    phone_number4_last_acd_agent_end_reasons_id: int | None = None
    phone_number5_last_acd_agent_end_reasons_id: int | None = None
    phone_number6_last_acd_agent_end_reasons_id: int | None = None
    result_code_id: int | None = None
    result_code: ResultCode | None = None
    history: tuple[HistoryEntry, ...] | None = None
    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)

    def __repr__(self) -> str:
        return _compact_repr(self, hide=(None,))


@attrs.frozen(kw_only=True)
class Campaign:
    """A dialler campaign. Contacts are imported into (sub) campaigns by ID or name."""

    id: int | None = None
    name: str | None = None
    client_id: int | None = None
    language_id: int | None = None
    contact_preview_time: int | None = None
    max_parallel_lines: int | None = None
    close_contacts_on_incoming_calls_match_caller_id: bool | None = None
    active_until: datetime | None = None
    caller_id_active: bool | None = None
    abort_on_no_tel_number_result_codes_id: int | None = None
    incoming_call_result_codes_id: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=_no_extra, repr=False)
