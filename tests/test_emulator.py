"""Tests of the emulator itself, over real loopback HTTP with a plain aiohttp session."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dialler_async._fields import CAMPAIGN_FIELDS, CONTACT_FIELDS, HISTORY_FIELDS
from dialler_async._routes import Routes
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind, Stats
from dialler_async.emulator.__main__ import main, serve
from dialler_async.emulator._faults import Faults, RateLimiter
from dialler_async.emulator._ops import Operations
from dialler_async.emulator._store import Store


def stored(emu: Emulator, contact_id: int) -> dict[str, Any]:
    """The stored record of a contact the test knows exists."""
    record = emu.store.get(contact_id)
    assert record is not None
    return record


pytest_plugins = ["dialler_async.emulator.pytest_plugin"]

EmulatorFactory = Callable[..., Emulator]  # the dialler_emulator_factory fixture
REPO = Path(__file__).resolve().parents[1]
DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
DT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def contact(**fields: Any) -> dict[str, Any]:
    """A valid import body; ``fields`` override or add."""
    return {"Name": "Muster", "DiallerCampaignsID": 538, "PhoneNumber1": "+4930123"} | fields


class Api:
    """A thin caller: ``(status, decoded JSON or raw bytes)`` per request."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    async def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        token: str | None = None,
        client_id: int | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.emu.token}"} if auth else {}
        if body is not None:
            data = orjson.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self.emu.url(path, client_id)
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            if raw and resp.content_type == "application/json":
                return resp.status, orjson.loads(raw)
            return resp.status, raw

    async def add(self, **fields: Any) -> dict[str, Any]:
        status, body = await self("POST", "/dialler/contacts/import", contact(**fields))
        assert status == 200, body
        record: dict[str, Any] = body["records"][0]
        return record


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def api(session: aiohttp.ClientSession, dialler_emulator: Emulator) -> Api:
    return Api(session, dialler_emulator)


# -- auth and routing ---------------------------------------------------------------------


async def test_auth(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    config = EmulatorConfig(
        extra_clients={2: "token-of-client-2"}, campaigns=((538, "Spring"), (600, "Other", 2))
    )
    async with dialler_emulator_factory(config) as emu:
        api = Api(session, emu)
        for status, body in (
            await api("GET", "/dialler/contacts", auth=False),
            await api("GET", "/dialler/contacts", token="wrong"),
            await api("GET", "/dialler/contacts", client_id=2),
            await api("GET", "/dialler/contacts", token="token-of-client-2"),
        ):
            assert status == 401
            assert body["status"] == 401
            assert body["error"]
        theirs = await api(
            "POST",
            "/dialler/contacts/import",
            contact(DiallerCampaignsID=600),
            token="token-of-client-2",
            client_id=2,
        )
        assert theirs[0] == 200
        their_id = theirs[1]["records"][0]["ID"]
        # Client 1 cannot see, import into or delete client 2's data.
        assert (await api("GET", f"/dialler/contacts/{their_id}"))[0] == 404
        assert (await api("DELETE", f"/dialler/contacts/contact/{their_id}"))[0] == 404
        assert (await api("POST", "/dialler/contacts/import", contact(DiallerCampaignsID=600)))[
            0
        ] == 404
        assert (await api("GET", "/dialler/contacts"))[1]["count"] == 0
        assert emu.store.contact_count(client_id=2) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/dialler/nothing"),
        ("PUT", "/dialler/contacts"),
        ("GET", "/dialler/contacts/abc"),
        ("POST", "/dialler/contacts/1"),
        ("GET", "/dialler/contacts/contact/1/explode"),
    ],
)
async def test_unknown_route_is_404_with_empty_body(api: Api, method: str, path: str) -> None:
    assert await api(method, path) == (404, b"")
    assert await api(method, path, auth=False) == (404, b"")


async def test_unknown_path_outside_base(api: Api) -> None:
    async with api.session.get(f"{api.emu.base_url[: -len('/rest/v1.0')]}/x") as resp:
        assert resp.status == 404
        assert await resp.read() == b""


async def test_missing_query_placeholder_is_400(api: Api) -> None:
    status, body = await api("GET", "/dialler/contacts/contact")
    assert status == 400
    assert "userData" in body["error"]


def test_every_route_operation_is_implemented() -> None:
    store = Store()
    try:
        assert set(Operations(store).table()) == set(Routes.operations())
    finally:
        store.close()


async def test_ids_beyond_sqlite_range_are_not_found(api: Api) -> None:
    assert (await api("GET", f"/dialler/contacts/{2**64}"))[0] == 404
    assert (await api("POST", "/dialler/contacts/update", {"ID": 2**63, "City": "x"}))[0] == 404
    assert (await api("POST", "/dialler/contacts", {"IDList": [2**63]}))[1]["count"] == 0
    assert (await api("GET", f"/dialler/campaigns/{2**64}"))[1]["error"] == (
        "Dialler campaign not found"
    )


# -- contacts -----------------------------------------------------------------------------


async def test_import_get_list(api: Api) -> None:
    status, body = await api(
        "POST",
        "/dialler/contacts/import",
        contact(UserData="U1", FollowUpDateTime="2024-05-06 07:08:09.123Z", Amount=5),
    )
    assert status == 200
    assert body["count"] == 1
    assert body["status"] == 200
    record = body["records"][0]
    assert list(record) == [f.api for f in CONTACT_FIELDS]
    assert record["FollowUpDateTime"] == "2024-05-06T07:08:09"
    assert record["Amount"] == 5.0
    assert record["DiallerCampaignsName"] == "Spring Campaign"
    assert DT.fullmatch(record["dtImported"])
    assert record["bLocked"] is False
    assert record["nTriesPhoneNumber1"] == 0
    assert record["FirstName"] is None

    assert await api("GET", f"/dialler/contacts/{record['ID']}") == (
        200,
        {"records": [record], "count": 1, "status": 200},
    )
    assert await api("GET", "/dialler/contacts/999") == (
        404,
        {"status": 404, "error": "Dialler contact not found"},
    )
    await api.add(DiallerCampaignsID=None, DiallerCampaignsName="Summer Campaign")
    status, listing = await api("GET", "/dialler/contacts")
    assert status == 200
    assert {k: v for k, v in listing.items() if k != "records"} == {
        "filter": "",
        "limitStart": 0,
        "limitPageSize": -1,
        "count": 2,
        "orderBy": "Name",
        "ascending": True,
        "status": 200,
    }
    assert listing["records"][0] == record
    _, spring = await api("GET", "/dialler/contacts?diallerCampaignsID=538")
    assert [r["ID"] for r in spring["records"]] == [record["ID"]]
    assert (await api("GET", "/dialler/contacts?diallerCampaignsID=x"))[0] == 400


async def test_find_by_user_data(api: Api) -> None:
    first = await api.add(UserData="dup key")
    await api.add(UserData="other")
    second = await api.add(UserData="dup key")
    status, body = await api("GET", "/dialler/contacts/contact?userData=dup%20key")
    assert status == 200
    assert [r["ID"] for r in body["records"]] == [first["ID"], second["ID"]]
    assert body["count"] == 2
    assert (await api("GET", "/dialler/contacts/contact?userData=none"))[0] == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"Name": "\xff"}', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "empty"),
        ({"DiallerCampaignsID": 538, "PhoneNumber1": "1"}, "Name"),
        (contact(Name="   "), "Name"),
        (contact(Name=None), "Name"),
        ({"Name": "x", "PhoneNumber1": "1"}, "DiallerCampaignsID"),
        (contact(DiallerCampaignsID=None, DiallerCampaignsName=" "), "DiallerCampaignsID"),
        ({"Name": "x", "DiallerCampaignsID": 538}, "phone number"),
        (contact(PhoneNumber1="", PhoneNumber2=" "), "phone number"),
        (contact(Name="x" * 65), "'Name' is longer than 64"),
        (contact(PostalCode="12345678901"), "'PostalCode' is longer than 10"),
        (contact(Name=5), "'Name' must be a string"),
        (contact(DiallerCampaignsID="538"), "'DiallerCampaignsID' must be an integer"),
        (contact(DiallerCampaignsID=True), "'DiallerCampaignsID' must be an integer"),
        (contact(RandomSortOrder=1.5), "'RandomSortOrder' must be an integer"),
        (contact(Amount="1.0"), "'Amount' must be a number"),
        (contact(Amount=False), "'Amount' must be a number"),
        (contact(FollowUpDateTime="tomorrow"), "'FollowUpDateTime' must be a date-time"),
        (contact(dtBeginDate="2024-13-01T00:00:00"), "'dtBeginDate' must be a date-time"),
        (contact(dtEndDate=20240101), "'dtEndDate' must be a date-time"),
    ],
)
async def test_import_validation(api: Api, body: Any, needle: str) -> None:
    raw = body if isinstance(body, bytes) else None
    status, answer = await api(
        "POST", "/dialler/contacts/import", None if raw is not None else body, data=raw
    )
    assert status == 400, answer
    assert answer["status"] == 400
    assert needle in answer["error"]
    assert api.emu.store.contact_count() == 0


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05",
        "2024-01-02 03:04:05",
        "2024-01-02T03:04:05.123456",
        "2024-01-02T03:04:05Z",
    ],
)
async def test_import_accepts_date_time_forms(api: Api, text: str) -> None:
    record = await api.add(dtBeginDate=text, Unknown="ignored", ID=77, bLocked=True)
    assert record["dtBeginDate"] == "2024-01-02T03:04:05"
    assert "Unknown" not in record
    assert record["ID"] != 77
    assert record["bLocked"] is False


async def test_import_unknown_campaign(api: Api) -> None:
    for body in (
        contact(DiallerCampaignsID=999),
        contact(DiallerCampaignsID=None, DiallerCampaignsName="Nope"),
    ):
        assert await api("POST", "/dialler/contacts/import", body) == (
            404,
            {"status": 404, "error": "Dialler campaign not found"},
        )
    by_name = await api.add(DiallerCampaignsID=None, DiallerCampaignsName="Autumn Campaign")
    assert by_name["DiallerCampaignsID"] == 540
    assert (await api("POST", "/dialler/contacts/import?overwriteDuplicates=maybe", contact()))[
        0
    ] == 400


async def test_import_duplicates(api: Api) -> None:
    path = "/dialler/contacts/import?overwriteDuplicates="
    first = await api.add(UserData="K", FirstName="Erika", City="Berlin")
    status, body = await api("POST", path + "false", contact(UserData="K"))
    assert status == 200
    assert body["records"][0]["ID"] != first["ID"]
    assert api.emu.store.contact_count(user_data="K") == 2

    status, body = await api("POST", path + "true", contact(UserData="K", City="Bonn", Name="Neu"))
    updated = body["records"][0]
    assert updated["ID"] == first["ID"]  # the lowest ID is overwritten
    assert (updated["City"], updated["Name"], updated["FirstName"]) == ("Bonn", "Neu", "Erika")
    assert updated["dtImported"] == first["dtImported"]
    assert api.emu.store.contact_count(user_data="K") == 2

    await api("POST", path + "true", contact(UserData="new"))
    await api("POST", path + "true", contact())  # no UserData: always a new contact
    await api("POST", "/dialler/contacts/import", contact(UserData="new"))  # absent = false
    assert api.emu.store.contact_count() == 5
    assert api.emu.store.contact_count(user_data="new") == 2


async def test_update(api: Api) -> None:
    one = await api.add(UserData="U", FirstName="Erika", City="Berlin")
    two = await api.add(UserData="V")
    update = "/dialler/contacts/update"
    status, body = await api("POST", update, {"ID": one["ID"], "City": "Bonn", "FirstName": None})
    assert status == 200
    record = body["records"][0]
    assert (record["City"], record["FirstName"], record["Name"]) == ("Bonn", None, "Muster")
    assert api.emu.store.get(one["ID"]) == record

    _, body = await api(
        "POST", update, {"UserData": "V", "DiallerCampaignsName": "Summer Campaign"}
    )
    assert body["records"][0]["ID"] == two["ID"]
    assert body["records"][0]["DiallerCampaignsID"] == 539
    # ID wins over UserData, and UserData then is a field to change.
    _, body = await api("POST", update, {"ID": two["ID"], "UserData": "W"})
    assert body["records"][0]["UserData"] == "W"

    for bad, expected in (
        ({"City": "x"}, 400),
        ({"ID": "1", "City": "x"}, 400),
        ({"ID": 999, "City": "x"}, 404),
        ({"UserData": "nobody", "City": "x"}, 404),
        ({"ID": one["ID"], "DiallerCampaignsID": 999}, 404),
        ({"ID": one["ID"], "DiallerCampaignsID": None}, 400),
        ({"ID": one["ID"], "Name": None}, 400),
        ({"ID": one["ID"], "PhoneNumber1": None}, 400),
        ({"ID": one["ID"], "Email": "x" * 257}, 400),
        ({"ID": one["ID"], "Amount": "lots"}, 400),
    ):
        status, body = await api("POST", update, bad)
        assert (status, body["status"]) == (expected, expected), bad
    assert (await api("POST", update, data=b"{oops"))[0] == 400
    assert api.emu.store.get(one["ID"]) == record


async def test_delete(api: Api) -> None:
    one = await api.add(UserData="D")
    two = await api.add(UserData="D")
    await api.emu.dial()
    assert await api("DELETE", f"/dialler/contacts/contact/{one['ID']}") == (200, {"status": 200})
    assert api.emu.store.history_count(one["ID"]) == 0
    assert (await api("DELETE", f"/dialler/contacts/contact/{one['ID']}"))[0] == 404
    assert await api("DELETE", "/dialler/contacts/contact?userData=D") == (200, {"status": 200})
    assert api.emu.store.get(two["ID"]) is None
    assert (await api("DELETE", "/dialler/contacts/contact?userData=D"))[0] == 404
    assert api.emu.store.history_count() == 0


async def test_lock_unlock_reset_and_dialling(api: Api) -> None:
    emu = api.emu
    locked = await api.add(UserData="L", PhoneNumber2="+4940")
    free = await api.add(UserData="F", PhoneNumber1=None, PhoneNumber3="+4989")
    base = "/dialler/contacts/contact"
    for _ in range(2):  # idempotent
        assert await api("GET", f"{base}/{locked['ID']}/lock") == (200, {"status": 200})
    assert stored(emu, locked["ID"])["bLocked"] is True

    assert await emu.dial(rounds=3, seed=1) == 3
    assert emu.store.history_count(locked["ID"]) == 0
    after = stored(emu, free["ID"])
    assert after["nTriesPhoneNumber3"] == 3
    assert after["nPhoneNumber3LastCause"] is not None
    assert after["DiallerCampaignsResultCodesID"] is not None

    _, history = await api("GET", f"{base}/{free['ID']}/history")
    assert history["count"] == 3
    assert [list(h) for h in history["records"]] == [[f.api for f in HISTORY_FIELDS]] * 3
    assert {h["PhoneNumber"] for h in history["records"]} == {"+4989"}
    assert all(h["UsersUID"] and DT.fullmatch(h["dtCallStart"]) for h in history["records"])
    assert await api("GET", f"{base}/history?userData=L") == (
        200,
        {"records": [], "count": 0, "status": 200},
    )

    assert await api("GET", f"{base}/unlock?userData=L") == (200, {"status": 200})
    assert await api("GET", f"{base}/unlock?userData=L") == (200, {"status": 200})
    assert await emu.dial(rounds=2, seed=1) == 4
    both = stored(emu, locked["ID"])
    # Least-tried number first: PhoneNumber1, then PhoneNumber2.
    assert (both["nTriesPhoneNumber1"], both["nTriesPhoneNumber2"]) == (1, 1)

    assert await api("GET", f"{base}/{free['ID']}/reset") == (200, {"status": 200})
    assert await api("GET", f"{base}/reset?userData=L") == (200, {"status": 200})
    for cid in (locked["ID"], free["ID"]):
        record = stored(emu, cid)
        assert all(record[f"nTriesPhoneNumber{n}"] == 0 for n in range(1, 7))
        assert all(record[f"nPhoneNumber{n}LastCause"] is None for n in range(1, 7))
        assert all(record[f"bPhoneNumber{n}Invalid"] is None for n in range(1, 7))
        assert record["dtNextTry"] is None
        assert record["DiallerCampaignsResultCodesID"] is None
    assert emu.store.history_count() == 7  # history is kept

    await api("GET", f"{base}/lock?userData=F")
    assert stored(emu, free["ID"])["bLocked"] is True
    for path in (
        f"{base}/999/lock",
        f"{base}/999/unlock",
        f"{base}/999/reset",
        f"{base}/999/history",
        f"{base}/lock?userData=x",
        f"{base}/reset?userData=x",
        f"{base}/history?userData=x",
    ):
        assert (await api("GET", path))[0] == 404, path


async def test_dialling_is_reproducible_by_seed(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    outcomes = []
    for _ in range(2):
        async with dialler_emulator_factory() as emu:
            api = Api(session, emu)
            for n in range(5):
                await api.add(UserData=str(n))
            await emu.dial(rounds=2, seed=42)
            outcomes.append(
                [(h["ResultCode"], h["UsersUID"]) for h in emu.store.history(range(1, 6))]
            )
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) == 10


async def test_batch(api: Api) -> None:
    one = await api.add(UserData="B1")
    two = await api.add(UserData="B2")
    three = await api.add(UserData="B1")
    await api.emu.dial(seed=3)
    status, body = await api(
        "POST",
        "/dialler/contacts?languagesID=2",
        {"UserDataList": ["B1", "nobody"], "IDList": [two["ID"], 999, one["ID"]]},
    )
    assert status == 200
    assert body["count"] == 3
    records = body["records"]
    assert [r["ID"] for r in records] == [one["ID"], two["ID"], three["ID"]]
    for record in records:
        assert set(record) >= {f.api for f in CONTACT_FIELDS}
        code = record["DiallerCampaignsResultCodes"]
        assert code["ID"] == record["DiallerCampaignsResultCodesID"]
        assert set(code) == {
            "ID",
            "ExportKey",
            "Content",
            "bDone",
            "bDelay",
            "bAborted",
            "bAppointment",
        }
        [entry] = record["DiallerContactsHistory"]
        assert entry["StatisticsPartA"]["bOutbound"] is True
        assert entry["StatisticsPartA"]["PhoneNumber"] == "+4930123"
    await api("GET", f"/dialler/contacts/contact/{one['ID']}/reset")
    _, body = await api("POST", "/dialler/contacts", {"IDList": [one["ID"]]})
    assert body["records"][0]["DiallerCampaignsResultCodes"] is None
    assert (await api("POST", "/dialler/contacts", {"UserDataList": []}))[1]["count"] == 0
    for bad in ({}, {"IDList": "1"}, {"IDList": [True]}, {"UserDataList": [1]}, [1]):
        assert (await api("POST", "/dialler/contacts", bad))[0] == 400, bad
    assert (await api("POST", "/dialler/contacts?languagesID=en", {"IDList": [1]}))[0] == 400


async def test_campaigns(api: Api) -> None:
    status, body = await api("GET", "/dialler/campaigns")
    assert status == 200
    assert [c["ID"] for c in body["records"]] == [538, 539, 540]
    assert body["count"] == 3
    assert body["orderBy"] == "Name"
    assert list(body["records"][0]) == [f.api for f in CAMPAIGN_FIELDS]
    status, body = await api("GET", "/dialler/campaigns/539")
    assert body["records"][0]["Name"] == "Summer Campaign"
    assert body["count"] == 1
    assert await api("GET", "/dialler/campaigns/1") == (
        404,
        {"status": 404, "error": "Dialler campaign not found"},
    )


# -- faults, limits, stats ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        (FaultKind.SERVER_ERROR, 500, "application/json"),
        (FaultKind.UNAVAILABLE, 503, "application/json"),
        (FaultKind.BAD_GATEWAY, 502, "text/html"),
        (FaultKind.GATEWAY_TIMEOUT, 504, "text/html"),
        (FaultKind.RATE_LIMITED, 429, "application/json"),
    ],
)
async def test_answered_faults_change_nothing(
    api: Api, kind: FaultKind, status: int, content_type: str
) -> None:
    emu = api.emu
    emu.configure(unavailable_retry_after=7, retry_after=3)
    emu.faults.script(kind, operation="import_contact")
    url = emu.url("/dialler/contacts/import")
    headers = {"Authorization": f"Bearer {emu.token}"}
    async with api.session.post(url, json=contact(), headers=headers) as resp:
        assert resp.status == status
        assert resp.content_type == content_type
        body = await resp.read()
        if content_type == "application/json":
            assert orjson.loads(body)["status"] == status
        else:
            assert b"<html>" in body
        expected_retry = {FaultKind.UNAVAILABLE: "7", FaultKind.RATE_LIMITED: "3"}.get(kind)
        assert resp.headers.get("Retry-After") == expected_retry
    assert emu.store.contact_count() == 0
    assert emu.stats.faults == {kind: 1}
    assert emu.stats.responses[status] == 1
    await api.add()  # the script is used up
    assert emu.faults.pending == []


@pytest.mark.parametrize(
    ("kind", "committed"), [(FaultKind.DROP_BEFORE, 0), (FaultKind.DROP_AFTER, 1)]
)
async def test_dropped_connections(api: Api, kind: FaultKind, committed: int) -> None:
    api.emu.faults.script(kind)
    with pytest.raises(DROPPED):
        await api("POST", "/dialler/contacts/import", contact())
    assert api.emu.store.contact_count() == committed
    assert api.emu.stats.faults[kind] == 1
    assert sum(api.emu.stats.responses.values()) == 0
    assert (await api("GET", "/dialler/contacts"))[1]["count"] == committed


async def test_slow_fault_commits_after_the_client_gave_up(api: Api) -> None:
    emu = api.emu
    emu.configure(slow_seconds=0.3)
    emu.faults.script(FaultKind.SLOW)
    timeout = aiohttp.ClientTimeout(total=0.1)
    headers = {"Authorization": f"Bearer {emu.token}"}
    with pytest.raises(TimeoutError):
        async with api.session.post(
            emu.url("/dialler/contacts/import"), json=contact(), headers=headers, timeout=timeout
        ):
            pass
    assert emu.store.contact_count() == 0
    for _ in range(100):
        if emu.store.contact_count():
            break
        await asyncio.sleep(0.02)
    assert emu.store.contact_count() == 1


async def test_invalid_json_fault_commits(api: Api) -> None:
    emu = api.emu
    emu.faults.script(FaultKind.INVALID_JSON, operation="import_contact")
    headers = {"Authorization": f"Bearer {emu.token}"}
    async with api.session.post(
        emu.url("/dialler/contacts/import"), json=contact(), headers=headers
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert emu.store.contact_count() == 1
    assert emu.stats.faults == {FaultKind.INVALID_JSON: 1}


async def test_fault_script_is_fifo_and_filtered(api: Api) -> None:
    faults = api.emu.faults
    faults.script(FaultKind.SERVER_ERROR, times=2, operation="import_contact")
    faults.script(FaultKind.BAD_GATEWAY, operation=None)
    assert faults.pending == [
        (FaultKind.SERVER_ERROR, 2, "import_contact"),
        (FaultKind.BAD_GATEWAY, 1, None),
    ]
    assert (await api("GET", "/dialler/campaigns"))[0] == 502  # first entry matching it
    assert (await api("GET", "/dialler/campaigns"))[0] == 200
    for _ in range(2):
        assert (await api("POST", "/dialler/contacts/import", contact()))[0] == 500
    assert (await api("POST", "/dialler/contacts/import", contact()))[0] == 200
    with pytest.raises(ValueError, match="unknown operation"):
        faults.script(FaultKind.SLOW, operation="import")
    faults.script("drop-after", times=3)
    faults.clear()
    assert faults.pending == []


async def test_random_faults_are_seeded_and_scoped(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    config = EmulatorConfig(
        faults={FaultKind.SERVER_ERROR: 0.5}, seed=11, fault_operations=["list_campaigns"]
    )
    runs = []
    for _ in range(2):
        async with dialler_emulator_factory(config) as emu:
            api = Api(session, emu)
            runs.append([(await api("GET", "/dialler/campaigns"))[0] for _ in range(20)])
            assert (await api("GET", "/dialler/campaigns/538"))[0] == 200  # not in scope
            assert emu.stats.faults[FaultKind.SERVER_ERROR] == runs[-1].count(500)
    assert runs[0] == runs[1]
    assert 0 < runs[0].count(500) < 20
    with pytest.raises(ValueError, match="more than 1"):
        EmulatorConfig(faults={"slow": 0.7, "drop_after": 0.5})


async def test_rate_limit(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    config = EmulatorConfig(rate_limit=2, retry_after=4, extra_clients={2: "t2"})
    async with dialler_emulator_factory(config) as emu:
        api = Api(session, emu)
        url = emu.url("/dialler/campaigns")
        answers = []
        for _ in range(5):
            async with session.get(url, headers={"Authorization": f"Bearer {emu.token}"}) as resp:
                answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
        assert [a[0] for a in answers] == [200, 200, 429, 429, 429]
        assert answers[2][1:] == ("4", {"status": 429, "error": "Too many requests"})
        # Another client has its own window (its 401 shows it got past the limiter).
        assert (await api("GET", "/dialler/campaigns", client_id=2, token="t2"))[0] == 200
        stats = emu.stats
        assert stats.throttled == 3
        assert stats.responses == {200: 3, 429: 3}
        assert stats.requests == {"list_campaigns": 6}
        assert stats.max_starts_in_window(1.0) == 6
        emu.configure(rate_limit=None)
        assert (await api("GET", "/dialler/campaigns"))[0] == 200
        stats.reset()
        assert (stats.throttled, len(stats.arrivals), sum(stats.requests.values())) == (0, 0, 0)


async def test_rate_limit_switched_on_mid_run(api: Api) -> None:
    assert [(await api("GET", "/dialler/campaigns"))[0] for _ in range(3)] == [200] * 3
    api.emu.configure(rate_limit=1)
    assert [(await api("GET", "/dialler/campaigns"))[0] for _ in range(2)] == [200, 429]


def test_rate_limiter_window_slides() -> None:
    limiter = RateLimiter()
    assert [limiter.admit("1", t, 2) for t in (0.0, 0.1, 0.2, 0.99)] == [True, True, False, False]
    assert limiter.admit("1", 1.0, 2)  # the arrival at 0.0 has left the window
    assert not limiter.admit("1", 1.05, 2)
    assert limiter.admit("1", 1.1, 2)
    assert [limiter.admit("2", t, 0.5) for t in (0.0, 1.0, 2.0)] == [True, False, True]


def test_stats_window_count() -> None:
    stats = Stats(arrivals_maxlen=3)
    for t in (0.0, 0.5, 0.9, 1.0, 1.2):
        stats.arrivals.append((t, "op"))
    assert list(stats.arrivals) == [(0.9, "op"), (1.0, "op"), (1.2, "op")]
    assert stats.max_starts_in_window() == 3
    assert stats.max_starts_in_window(0.2) == 2
    assert stats.max_starts_in_window(operation="other") == 0


def test_faults_pick_is_seeded() -> None:
    picks = []
    for _ in range(2):
        faults = Faults(Stats(), Routes.operations(), seed=5)
        probabilities = {FaultKind.SLOW: 0.3, FaultKind.DROP_AFTER: 0.3}
        picks.append([faults.pick("get_contact", probabilities, None) for _ in range(30)])
    assert picks[0] == picks[1]
    assert {FaultKind.SLOW, FaultKind.DROP_AFTER, None} == set(picks[0])


async def test_latency(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    async with dialler_emulator_factory(EmulatorConfig(latency=0.05, latency_jitter=0.01)) as emu:
        started = time.monotonic()
        assert (await Api(session, emu)("GET", "/dialler/campaigns"))[0] == 200
        assert time.monotonic() - started >= 0.05


async def test_keepalive_timeout_closes_idle_connections(
    dialler_emulator_factory: EmulatorFactory,
) -> None:
    async with dialler_emulator_factory(EmulatorConfig(keepalive_timeout=0.1)) as emu:
        reader, writer = await asyncio.open_connection(emu.host, emu.port)
        try:
            request = (
                f"GET /rest/v1.0/1/dialler/campaigns HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {emu.token}\r\n\r\n"
            )
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            found = re.search(rb"Content-Length: (\d+)", head)
            assert found is not None
            length = int(found[1])
            await reader.readexactly(length)
            # Idle past the timeout: the server closes, the next read sees EOF.
            assert await asyncio.wait_for(reader.read(), timeout=2) == b""
        finally:
            writer.close()
            await writer.wait_closed()


# -- routes, persistence, CLI, plugin -----------------------------------------------------


async def test_route_override(
    dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    routes = Routes().replace(
        find_contacts=("GET", "/dialler/contacts/search?userData={user_data}"),
        get_contact=("GET", "/dialler/contacts/byid?id={id}"),
    )
    async with dialler_emulator_factory(routes=routes) as emu:
        api = Api(session, emu)
        record = await api.add(UserData="R")
        status, body = await api("GET", "/dialler/contacts/search?userData=R")
        assert (status, body["records"][0]["ID"]) == (200, record["ID"])
        assert await api("GET", "/dialler/contacts/contact?userData=R") == (404, b"")
        assert (await api("GET", f"/dialler/contacts/byid?id={record['ID']}"))[0] == 200
        assert (await api("GET", "/dialler/contacts/byid?id=abc"))[0] == 400
        assert await api("GET", f"/dialler/contacts/{record['ID']}") == (404, b"")


async def test_file_database_persists(
    tmp_path: Path, dialler_emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    db = tmp_path / "contacts.db"
    async with dialler_emulator_factory(db=db) as emu:
        api = Api(session, emu)
        first = await api.add(UserData="P")
        await api.add(UserData="gone")
        await api("DELETE", "/dialler/contacts/contact?userData=gone")
        await emu.dial()
    async with dialler_emulator_factory(db=db, token="fixed") as emu:
        api = Api(session, emu)
        assert stored(emu, first["ID"])["nTriesPhoneNumber1"] == 1
        assert emu.store.history_count(first["ID"]) == 1
        assert (await api("GET", "/dialler/campaigns"))[1]["count"] == 3
        third = await api.add()
        assert third["ID"] == first["ID"] + 2  # IDs are never reused


async def test_factory_stops_what_a_test_leaves_running(
    dialler_emulator_factory: EmulatorFactory,
) -> None:
    emu = await dialler_emulator_factory(client_id=7).start()
    assert emu.running
    assert emu.base_url == f"http://127.0.0.1:{emu.port}/rest/v1.0"
    assert emu.url("/x") == f"{emu.base_url}/7/x"


async def test_store_requires_running_emulator() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError):
        emu.store  # noqa: B018
    async with emu:
        assert emu.store.contact_count() == 0
    assert not emu.running


async def test_serve_until_stopped(session: aiohttp.ClientSession) -> None:
    stop = asyncio.Event()
    started: list[Emulator] = []
    task = asyncio.create_task(serve(port=0, token="t", ready=started.append, stop=stop))
    for _ in range(200):
        if started or task.done():
            break
        await asyncio.sleep(0.01)
    [emu] = started
    assert (await Api(session, emu)("GET", "/dialler/campaigns"))[0] == 200
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert not emu.running


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--db",
        "--client-id",
        "--token-file",
        "--rate-limit",
        "--retry-after",
        "--latency",
        "--fault",
        "--seed",
        "--slow-seconds",
    ):
        assert flag in out


def test_cli_subprocess(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    env = os.environ | {"PYTHONPATH": str(REPO), "DIALLER_TOKEN": "ignored"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dialler_async.emulator",
            "--port",
            "0",
            "--db",
            str(tmp_path / "cli.db"),
            "--client-id",
            "3",
            "--token-file",
            str(token_file),
            "--rate-limit",
            "100",
            "--fault",
            "server_error=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"dialler emulator listening on (http://127\.0\.0\.1:\d+/rest/v1\.0) client_id=3\n",
            line,
        )
        assert match, line
        exports = proc.stdout.readline()
        assert (
            exports
            == f"export DIALLER_BASE_URL={match[1]} DIALLER_CLIENT_ID=3 DIALLER_TOKEN=cli-token\n"
        )
        url = urllib.parse.urlsplit(match[1])
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
        try:
            conn.request(
                "GET",
                f"{url.path}/3/dialler/campaigns",
                headers={"Authorization": "Bearer cli-token"},
            )
            resp = conn.getresponse()
            assert resp.status == 200
            assert orjson.loads(resp.read())["count"] == 3
        finally:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
