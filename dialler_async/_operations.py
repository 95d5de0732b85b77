"""Per-operation rules of the bulk engine: how an input becomes a request, and what is safe.

Each operation turns a raw input item into a :class:`Prepared` request (or raises
:class:`ContactValidationError`, which makes the item INVALID without a request) and knows how to
send it through the client's single-call plumbing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from . import _fields as F
from ._converter import unstructure
from ._envelope import first_raw_record
from ._models import Contact
from ._results import Operation
from ._transport import Reply
from ._validation import checked_contact, checked_update, validate_key

if TYPE_CHECKING:
    from ._client import DiallerClient


@attrs.frozen(slots=True)
class Prepared:
    """A validated request for one item.

    ``key`` is reported in results; ``serial_key`` orders rows that touch the same contact;
    ``payload`` is what the checkpoint fingerprints; ``idempotent`` says a resend is harmless;
    ``user_data`` allows reconciling an unconfirmed import by lookup.
    """

    key: str | int | None
    serial_key: object
    payload: Any
    idempotent: bool
    user_data: str | None = None


class Import:
    """Import one contact per item (``NewContact`` or dict)."""

    operation = Operation.IMPORT

    def __init__(
        self, *, overwrite_duplicates: bool, campaign_id: int | None, campaign_name: str | None
    ) -> None:
        self.overwrite = overwrite_duplicates
        self.default_campaign: dict[str, Any] = {}
        if campaign_id is not None:
            self.default_campaign["DiallerCampaignsID"] = campaign_id
        elif campaign_name:
            self.default_campaign["DiallerCampaignsName"] = campaign_name

    def prepare(self, item: Any) -> Prepared:
        contact, body = checked_contact(item, campaign_given=bool(self.default_campaign))
        if (
            self.default_campaign
            and "DiallerCampaignsID" not in body
            and "DiallerCampaignsName" not in body
        ):
            body.update(self.default_campaign)
        user_data = contact.user_data if contact.user_data and contact.user_data.strip() else None
        return Prepared(
            key=user_data,
            serial_key=user_data,
            payload=body,
            idempotent=self.overwrite and user_data is not None,
            user_data=user_data,
        )

    async def send(self, client: DiallerClient, prepared: Prepared) -> Reply:
        return await client._import(
            prepared.payload, overwrite=self.overwrite, idempotent=prepared.idempotent
        )

    def record(self, reply: Reply) -> dict[str, Any] | None:
        return first_raw_record(reply)


class Update:
    """Apply one partial update per item (``ContactUpdate`` or dict with ID or UserData)."""

    operation = Operation.UPDATE

    def prepare(self, item: Any) -> Prepared:
        update, body = checked_update(item)
        key = update.key
        return Prepared(key=key, serial_key=key, payload=body, idempotent=True)

    async def send(self, client: DiallerClient, prepared: Prepared) -> Reply:
        return await client._update(prepared.payload)

    def record(self, reply: Reply) -> dict[str, Any] | None:
        return first_raw_record(reply)


class KeyedAction:
    """Delete, lock, unlock or reset one contact per item, by ID or by UserData."""

    def __init__(self, operation: Operation, *, by_user_data: bool) -> None:
        self.operation = operation
        self.by_user_data = by_user_data

    def prepare(self, item: Any) -> Prepared:
        key = validate_key(item, by_user_data=self.by_user_data)
        return Prepared(key=key, serial_key=key, payload=key, idempotent=True)

    async def send(self, client: DiallerClient, prepared: Prepared) -> Reply:
        key = prepared.key
        if isinstance(key, str):
            return await client._action(self.operation.value, None, key)
        return await client._action(self.operation.value, key, None)

    def record(self, reply: Reply) -> dict[str, Any] | None:
        return None


def record_matches(contact: Contact, body: dict[str, Any]) -> bool:
    """Whether a found contact holds what an unconfirmed import sent (for reconciliation)."""
    record = unstructure(contact)
    for name, sent in body.items():
        if name not in F.BY_API or name == "DiallerCampaignsName":
            continue
        if record.get(name) != sent:
            return False
    return True


OperationRules = Import | Update | KeyedAction


def rules_for(operation: Operation, options: dict[str, Any]) -> OperationRules:
    """The rules object of ``operation``; consumes the operation's own options."""
    if operation is Operation.IMPORT:
        return Import(
            overwrite_duplicates=options.pop("overwrite_duplicates", True),
            campaign_id=options.pop("campaign_id", None),
            campaign_name=options.pop("campaign_name", None),
        )
    if operation is Operation.UPDATE:
        return Update()
    return KeyedAction(operation, by_user_data=options.pop("by_user_data", False))
