"""The API operations, one method per operation name of ``Routes``.

Each takes a ``Call`` (the authenticated client, the placeholders filled from the URL, the
query and the raw body) and returns ``(status, JSON bytes)``; a refusal is raised as
``RequestError``. Nothing here knows about HTTP routing, so a route override changes only
where an operation is served, never what it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from dialler_async._fields import HISTORY_KEY, RESULT_CODE_KEY, STATISTICS_KEY
from dialler_async._routes import Routes
from dialler_async.emulator._records import (
    CAMPAIGN_NOT_FOUND,
    CONTACT_NOT_FOUND,
    RESULT_CODES,
    RequestError,
    check_complete,
    clean_fields,
    new_contact,
    parse_object,
)
from dialler_async.emulator._store import Store

__all__ = ["Call", "OpResult", "Operations", "error_body"]

OpResult = tuple[int, bytes]

OK: Final = b'{"status":200}'
_LIST_HEAD: Final = b'{"filter":"","limitStart":0,"limitPageSize":-1,"records":['
_LIST_TAIL: Final = b'],"count":%d,"orderBy":"Name","ascending":true,"status":200}'
_RECORDS_HEAD: Final = b'{"records":['
_RECORDS_TAIL: Final = b'],"count":%d,"status":200}'
_MAX_ID: Final = 2**63 - 1
_CAMPAIGN_KEYS: Final = ("DiallerCampaignsID", "DiallerCampaignsName")
_CAMPAIGN_MANDATORY: Final = "Field 'DiallerCampaignsID' or 'DiallerCampaignsName' is mandatory"


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"status": status, "error": message})


def _records(items: list[bytes]) -> OpResult:
    return 200, _RECORDS_HEAD + b",".join(items) + _RECORDS_TAIL % len(items)


def _list(items: list[bytes]) -> OpResult:
    return 200, _LIST_HEAD + b",".join(items) + _LIST_TAIL % len(items)


def _dumps_all(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


class Call:
    """One authenticated request, as an operation sees it."""

    __slots__ = ("body", "client_id", "id", "query", "user_data")

    def __init__(
        self,
        client_id: int,
        id: int | None,
        user_data: str | None,
        query: Mapping[str, str],
        body: bytes,
    ) -> None:
        self.client_id = client_id
        self.id = id
        self.user_data = user_data
        self.query = query
        self.body = body

    def int_param(self, name: str) -> int | None:
        """Optional integer query parameter ``name``; 400 if it is not an integer."""
        text = self.query.get(name)
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError:
            raise RequestError(400, f"Query parameter '{name}' must be an integer") from None

    def bool_param(self, name: str) -> bool:
        """Optional boolean query parameter ``name`` (absent = false); 400 if not a boolean."""
        text = self.query.get(name, "false").lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0", ""):
            return False
        raise RequestError(400, f"Query parameter '{name}' must be true or false")


class Operations:
    """The operations over one store; ``table()`` maps operation names to them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def table(self) -> dict[str, Callable[[Call], OpResult]]:
        """Every operation of ``Routes`` this class implements, by name."""
        return {name: getattr(self, name) for name in Routes.operations() if hasattr(self, name)}

    # -- helpers --------------------------------------------------------------------------

    def _target(self, call: Call) -> dict[str, Any]:
        """The contact named by the URL: by ID, else the lowest-ID UserData match."""
        if call.id is not None:
            record = self.store.contact(call.client_id, call.id)
        elif call.user_data is not None:
            record = self.store.first_by_user_data(call.client_id, call.user_data)
        else:
            raise RequestError(400, "A contact ID or userData is required")
        if record is None:
            raise RequestError(404, CONTACT_NOT_FOUND)
        return record

    def _target_ids(self, call: Call) -> list[int]:
        """Every contact the URL names: the one ID, or all UserData matches; 404 if none."""
        if call.id is not None:
            ids = [call.id] if self.store.contact_json(call.client_id, call.id) else []
        elif call.user_data is not None:
            ids = self.store.ids_by_user_data(call.client_id, call.user_data)
        else:
            raise RequestError(400, "A contact ID or userData is required")
        if not ids:
            raise RequestError(404, CONTACT_NOT_FOUND)
        return ids

    def _set_campaign(self, client_id: int, fields: dict[str, Any]) -> None:
        """Resolve the campaign ``fields`` name (ID wins) and set both of its fields."""
        campaign_id = fields.get("DiallerCampaignsID")
        name = fields.get("DiallerCampaignsName")
        if campaign_id is not None:
            campaign = self.store.campaign(client_id, campaign_id)
        elif name is not None and name.strip():
            campaign = self.store.campaign_by_name(client_id, name)
        else:
            raise RequestError(
                400, "Field 'DiallerCampaignsID' or 'DiallerCampaignsName' is mandatory"
            )
        if campaign is None:
            raise RequestError(404, CAMPAIGN_NOT_FOUND)
        fields["DiallerCampaignsID"] = campaign["ID"]
        fields["DiallerCampaignsName"] = campaign["Name"]

    # -- contacts -------------------------------------------------------------------------

    def list_contacts(self, call: Call) -> OpResult:
        campaign_id = call.int_param("diallerCampaignsID")
        return _list(self.store.contacts_json(call.client_id, campaign_id))

    def get_contact(self, call: Call) -> OpResult:
        if call.id is not None:  # the common case, served from the stored bytes
            data = self.store.contact_json(call.client_id, call.id)
            if data is None:
                raise RequestError(404, CONTACT_NOT_FOUND)
            return _records([data])
        return _records([orjson.dumps(self._target(call))])

    def find_contacts(self, call: Call) -> OpResult:
        if call.user_data is None:
            raise RequestError(400, "Query parameter 'userData' is required")
        found = self.store.find_json(call.client_id, call.user_data)
        if not found:
            raise RequestError(404, CONTACT_NOT_FOUND)
        return _records(found)

    def get_contacts_batch(self, call: Call) -> OpResult:
        call.int_param("languagesID")  # only validated: the emulator's texts are English
        body = parse_object(call.body)
        ids, user_datas = body.get("IDList"), body.get("UserDataList")
        if ids is None and user_datas is None:
            raise RequestError(400, "Field 'IDList' or 'UserDataList' is required")
        if ids is not None and not (
            isinstance(ids, list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise RequestError(400, "Field 'IDList' must be a list of integers")
        if user_datas is not None and not (
            isinstance(user_datas, list) and all(isinstance(u, str) for u in user_datas)
        ):
            raise RequestError(400, "Field 'UserDataList' must be a list of strings")
        records = self.store.contacts_for(call.client_id, ids or [], user_datas or [])
        history: dict[int, list[dict[str, Any]]] = {r["ID"]: [] for r in records}
        for entry in self.store.history(history):
            history[entry["DiallerContactsID"]].append(
                {
                    STATISTICS_KEY: {
                        "ID": entry["ID"],
                        "bOutbound": True,
                        "dtCallStart": entry["dtCallStart"],
                        "PhoneNumber": entry["PhoneNumber"],
                    }
                }
            )
        for record in records:
            code = RESULT_CODES.get(record["DiallerCampaignsResultCodesID"])
            record[RESULT_CODE_KEY] = None if code is None else code.record()
            record[HISTORY_KEY] = history[record["ID"]]
        return _records(_dumps_all(records))

    def import_contact(self, call: Call) -> OpResult:
        overwrite = call.bool_param("overwriteDuplicates")
        fields = clean_fields(parse_object(call.body))
        check_complete(fields)
        self._set_campaign(call.client_id, fields)
        user_data = fields.get("UserData")
        if overwrite and user_data:
            existing = self.store.first_by_user_data(call.client_id, user_data)
            if existing is not None:
                existing.update(fields)
                return _records([self.store.save(existing)])
        return _records([self.store.insert(call.client_id, new_contact(fields))])

    def update_contact(self, call: Call) -> OpResult:
        body = parse_object(call.body)
        contact_id, user_data = body.get("ID"), body.get("UserData")
        if contact_id is not None:
            if not isinstance(contact_id, int) or isinstance(contact_id, bool):
                raise RequestError(400, "Field 'ID' must be an integer")
            if contact_id > _MAX_ID:  # beyond SQLite's integers: no such record can exist
                raise RequestError(404, CONTACT_NOT_FOUND)
            target = Call(call.client_id, contact_id, None, call.query, b"")
        elif user_data is not None:
            if not isinstance(user_data, str):
                raise RequestError(400, "Field 'UserData' must be a string or null")
            target = Call(call.client_id, None, user_data, call.query, b"")
        else:
            raise RequestError(400, "Field 'ID' or 'UserData' is required to find the contact")
        fields = clean_fields(body)
        record = self._target(target)
        if any(fields.get(k) is not None for k in _CAMPAIGN_KEYS):
            self._set_campaign(call.client_id, fields)
        elif "DiallerCampaignsID" in fields:
            raise RequestError(400, "Field 'DiallerCampaignsID' cannot be cleared")
        else:
            fields.pop("DiallerCampaignsName", None)  # the campaign stays; so does its name
        record.update(fields)
        check_complete(record)
        return _records([self.store.save(record)])

    def delete_contact(self, call: Call) -> OpResult:
        self.store.delete(self._target(call)["ID"])
        return 200, OK

    delete_contact_by_user_data = delete_contact

    def _set_lock(self, call: Call, locked: bool) -> OpResult:
        record = self._target(call)
        if record["bLocked"] is not locked:
            record["bLocked"] = locked
            self.store.save(record)
        return 200, OK

    def lock_contact(self, call: Call) -> OpResult:
        return self._set_lock(call, True)

    def unlock_contact(self, call: Call) -> OpResult:
        return self._set_lock(call, False)

    lock_contact_by_user_data = lock_contact
    unlock_contact_by_user_data = unlock_contact

    def reset_contact(self, call: Call) -> OpResult:
        record = self._target(call)
        for n in range(1, 7):
            record[f"nTriesPhoneNumber{n}"] = 0
            record[f"bPhoneNumber{n}Invalid"] = None
            record[f"nPhoneNumber{n}LastCause"] = None
        record["dtNextTry"] = None
        record["DiallerCampaignsResultCodesID"] = None
        self.store.save(record)
        return 200, OK

    reset_contact_by_user_data = reset_contact

    def contact_history(self, call: Call) -> OpResult:
        return _records(_dumps_all(self.store.history(self._target_ids(call))))

    contact_history_by_user_data = contact_history

    # -- campaigns ------------------------------------------------------------------------

    def list_campaigns(self, call: Call) -> OpResult:
        return _list(_dumps_all(self.store.campaigns(call.client_id)))

    def get_campaign(self, call: Call) -> OpResult:
        if call.id is None:
            raise RequestError(400, "A campaign ID is required")
        campaign = self.store.campaign(call.client_id, call.id)
        if campaign is None:
            raise RequestError(404, CAMPAIGN_NOT_FOUND)
        return _records([orjson.dumps(campaign)])
