"""sync_contacts on the emulator: the plan is exact, only what changed is sent, the end state
equals the input, conflicts are untouched, a re-run sends nothing, and the guard holds."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from dialler_async import (
    DiallerClient,
    Operation,
    Outcome,
    SyncConflictError,
    SyncGuardError,
)
from dialler_async._sync_plan import SUPERSEDED
from dialler_async.emulator import Emulator
from dialler_async.emulator._records import new_contact

from .invariants import Counted, Snapshot, assert_account

CAMPAIGN = 538
WRITES = ("import_contact", "update_contact", "delete_contact", "lock_contact")


def seed(emulator: Emulator, n: int, campaign: int = CAMPAIGN) -> None:
    """``n`` contacts U00000.. in ``campaign``, stored directly (no requests)."""
    name = {538: "Spring Campaign", 539: "Summer Campaign"}[campaign]
    store = emulator.store
    with store.transaction():
        for i in range(n):
            store.insert(
                emulator.client_id,
                new_contact(
                    {
                        "UserData": f"U{i:05d}",
                        "Name": f"Name{i}",
                        "FirstName": "Max",
                        "City": "Berlin",
                        "Amount": 10.5,
                        "PhoneNumber1": f"+4930{i:07d}",
                        "DiallerCampaignsID": campaign,
                        "DiallerCampaignsName": name,
                    }
                ),
            )


def row(i: int, **changes: Any) -> dict[str, Any]:
    """The input row of contact ``i`` as the campaign holds it (plus ``changes``)."""
    out: dict[str, Any] = {
        "UserData": f"U{i:05d}",
        "Name": f"Name{i}",
        "FirstName": "Max",
        "City": "Berlin",
        "Amount": "10,5",  # a CSV-style value: equal after the converter's normalisation
        "PhoneNumber1": f"+4930{i:07d}",
    }
    out.update(changes)
    return out


def writes(emulator: Emulator) -> int:
    return sum(emulator.stats.requests[op] for op in WRITES)


def campaign_by_user_data(emulator: Emulator) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for c in emulator.store.all_contacts():
        if c["DiallerCampaignsID"] == CAMPAIGN:
            out[c["UserData"]].append(c)
    return out


@pytest.fixture
def scenario(emulator: Emulator) -> list[dict[str, Any]]:
    """2,000 contacts + 2 second contacts with the UserData of U00000 and U00001 (conflicts);
    the input: 40 changed, 10 new, U01980..U01999 missing (20)."""
    seed(emulator, 2000)
    for i in (0, 1):
        emulator.store.insert(
            emulator.client_id,
            new_contact(
                {
                    "UserData": f"U{i:05d}",
                    "Name": "Twin",
                    "PhoneNumber1": "+49301",
                    "DiallerCampaignsID": CAMPAIGN,
                    "DiallerCampaignsName": "Spring Campaign",
                }
            ),
        )
    rows = []
    for i in range(1980):
        if 100 <= i < 140:
            rows.append(row(i, City=f"Hamburg{i}"))  # 40 changed
        else:
            rows.append(row(i))
    rows += [row(5000 + i) for i in range(10)]  # 10 new
    return rows


async def test_sync_plans_exactly_and_sends_only_the_changes(
    emulator: Emulator, client: DiallerClient, scenario: list[dict[str, Any]]
) -> None:
    before = Snapshot.take(emulator)
    emulator.stats.reset()
    seen_plans: list[Any] = []
    source = Counted(scenario)
    result = await client.sync_contacts(source, campaign_id=CAMPAIGN, on_plan=seen_plans.append)

    plan = result.plan
    assert plan.as_dict() == {
        "new": 10,
        "changed": 40,
        "unchanged": 1938,
        "missing": 20,
        "conflicts": 2,
        "invalid": 0,
        "superseded": 0,
    }
    assert seen_plans == [plan]
    assert plan.campaign_size == 2002
    assert emulator.stats.requests["list_contacts"] == 1
    assert emulator.stats.requests["import_contact"] == 10
    # Each new row is looked up first (another writer may have created it since the snapshot).
    assert emulator.stats.requests["find_contacts"] == 10
    assert emulator.stats.requests["update_contact"] == 40
    assert writes(emulator) == 50
    assert result.missing is None

    rows = result.rows
    assert rows.operation is Operation.SYNC
    assert_account(rows, read=source.read, emulator=emulator, before=before)
    assert rows.total == len(scenario) == 1990
    assert (rows.succeeded, rows.skipped, rows.failed) == (50, 1938, 2)
    assert rows.items is not None
    by_index = {item.index: item for item in rows.items}
    assert by_index[0].outcome is Outcome.FAILED
    conflict = by_index[0].error
    assert isinstance(conflict, SyncConflictError)
    assert len(conflict.ids) == 2
    assert by_index[2].reason == "unchanged"
    assert by_index[2].input is scenario[2]
    assert by_index[100].operation is Operation.UPDATE and by_index[100].key == "U00100"
    assert by_index[100].input == scenario[100]  # a copy: it went through the on-disk plan
    assert by_index[1985].operation is Operation.IMPORT
    assert by_index[1985].contact_id is not None

    # The campaign now holds the input, for the fields the input carries.
    after = campaign_by_user_data(emulator)
    for item in scenario[2:]:
        (contact,) = after[item["UserData"]]
        for field in ("Name", "FirstName", "City", "PhoneNumber1"):
            assert contact[field] == item[field]
        assert contact["Amount"] == 10.5
    # Conflicts untouched; missing kept.
    for i in (0, 1):
        assert sorted(c["Name"] for c in after[f"U{i:05d}"]) == [f"Name{i}", "Twin"]
        for c in after[f"U{i:05d}"]:
            assert c == before.contacts[c["ID"]]
    assert all(len(after[f"U{i:05d}"]) == 1 for i in range(1980, 2000))

    # Only the changed field was sent for a changed contact.
    changed = after["U00100"][0]
    assert changed["ID"] in before.contacts
    assert changed["dtImported"] == before.contacts[changed["ID"]]["dtImported"]

    # Running the same sync again sends no write at all.
    emulator.stats.reset()
    again = await client.sync_contacts(scenario, campaign_name="Spring Campaign")
    assert writes(emulator) == 0
    assert emulator.stats.requests["list_contacts"] == 1
    assert again.plan.as_dict() == {
        "new": 0,
        "changed": 0,
        "unchanged": 1988,
        "missing": 20,
        "conflicts": 2,
        "invalid": 0,
        "superseded": 0,
    }


@pytest.mark.parametrize("policy", ["lock", "delete"])
async def test_missing_policy_acts_by_id_and_reruns_send_nothing(
    emulator: Emulator, client: DiallerClient, scenario: list[dict[str, Any]], policy: str
) -> None:
    before = Snapshot.take(emulator)
    emulator.stats.reset()
    result = await client.sync_contacts(scenario, campaign_id=CAMPAIGN, missing=policy)  # type: ignore[arg-type]
    assert writes(emulator) == 50 + 20
    assert result.missing is not None
    assert result.missing.operation is Operation(policy)
    assert (result.missing.total, result.missing.succeeded) == (20, 20)
    # The server's end state is checked below: the snapshot before also lacks the imports.
    assert_account(result.rows, read=len(scenario))
    assert_account(result.missing, read=20)
    assert {i.key for i in result.missing.items or ()} == {
        c["ID"] for c in before.contacts.values() if c["UserData"] >= "U01980"
    }
    after = campaign_by_user_data(emulator)
    for i in range(1980, 2000):
        if policy == "delete":
            assert f"U{i:05d}" not in after
        else:
            assert after[f"U{i:05d}"][0]["bLocked"] is True
    assert after["U00003"][0]["bLocked"] is False

    emulator.stats.reset()
    again = await client.sync_contacts(scenario, campaign_id=CAMPAIGN, missing=policy)  # type: ignore[arg-type]
    assert writes(emulator) == 0
    if policy == "lock":
        assert again.missing is not None
        assert again.missing.skipped == 20
        assert {i.reason for i in again.missing.items or ()} == {"already locked"}
    else:
        assert again.plan.missing == 0


async def test_the_guard_refuses_to_delete_most_of_a_campaign(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 100)
    emulator.stats.reset()
    truncated = [row(i, City="Köln") for i in range(30)]  # 70% of the campaign missing
    with pytest.raises(SyncGuardError) as caught:
        await client.sync_contacts(truncated, campaign_id=CAMPAIGN, missing="delete")
    assert caught.value.plan.missing == 70
    assert caught.value.plan.changed == 30
    assert writes(emulator) == 0
    assert emulator.store.contact_count() == 100

    forced = await client.sync_contacts(
        truncated, campaign_id=CAMPAIGN, missing="delete", force=True
    )
    assert forced.missing is not None and forced.missing.succeeded == 70
    assert emulator.store.contact_count() == 30


async def test_dry_run_reads_the_campaign_and_writes_nothing(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 50)
    emulator.stats.reset()
    rows = [row(i, City="Bonn") if i < 5 else row(i) for i in range(45)] + [row(900)]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN, missing="delete", dry_run=True)
    assert writes(emulator) == 0
    assert emulator.stats.requests["list_contacts"] == 1
    assert result.dry_run
    assert result.plan.as_dict()["changed"] == 5
    assert result.plan.new == 1 and result.plan.missing == 5
    assert_account(result.rows, read=len(rows))
    reasons = collections.Counter(i.reason for i in result.rows.items or ())
    assert reasons == {"unchanged": 40, "dry run: changed": 5, "dry run: new": 1}


async def test_rows_without_user_data_or_of_another_campaign_are_invalid(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 3)
    rows = [
        row(0),
        {"Name": "No key", "PhoneNumber1": "+49301"},
        row(1, DiallerCampaignsID=539),
        row(2, DiallerCampaignsName="Spring Campaign"),
        {"UserData": "U00009"},  # no Name, no phone: invalid as an import
    ]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=len(rows))
    outcomes = [i.outcome for i in result.rows.items or ()]
    assert outcomes == [
        Outcome.SKIPPED,
        Outcome.INVALID,
        Outcome.INVALID,
        Outcome.SKIPPED,
        Outcome.INVALID,
    ]
    items = list(result.rows.items or ())
    assert "sync needs UserData" in str(items[1].error)
    assert "campaign 539" in str(items[2].error)
    assert result.plan.invalid == 3


async def test_duplicate_rows_end_as_in_input_order(
    emulator: Emulator, client: DiallerClient
) -> None:
    """Rows sharing a UserData are merged in input order (the last value wins) and compared
    with the server as one: only the last row that needs a request sends it, the earlier ones
    are superseded, and a net effect equal to the server's value sends nothing."""
    seed(emulator, 3)
    rows = [
        row(0, City="A"),  # superseded
        row(0, City="B"),  # the net change: sent
        row(1, City="C"),  # superseded
        row(1),  # back to the server's value: nothing to send
        row(7, City="X", Email="x@example.com"),  # new, superseded
        row(7, City="Y"),  # superseded by the next one
        row(7, City="Y"),  # imported with the merged fields (City Y, the Email above)
    ]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=len(rows))
    items = list(result.rows.items or ())
    assert [i.duplicate_in_input for i in items] == [False, True, False, True, False, True, True]
    assert [i.outcome for i in items] == [
        Outcome.SKIPPED,
        Outcome.SUCCEEDED,
        Outcome.SKIPPED,
        Outcome.SKIPPED,
        Outcome.SKIPPED,
        Outcome.SKIPPED,
        Outcome.SUCCEEDED,
    ]
    assert [i.reason for i in items] == [
        SUPERSEDED,
        None,
        SUPERSEDED,
        "unchanged",
        SUPERSEDED,
        SUPERSEDED,
        None,
    ]
    assert result.plan.superseded == 4 and result.plan.rows == len(rows)
    assert (result.plan.new, result.plan.changed, result.plan.unchanged) == (1, 1, 1)
    after = campaign_by_user_data(emulator)
    assert after["U00000"][0]["City"] == "B"
    assert after["U00001"][0]["City"] == "Berlin"
    assert [(c["City"], c["Email"]) for c in after["U00007"]] == [("Y", "x@example.com")]
    emulator.stats.reset()
    again = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert writes(emulator) == 0, again.plan


async def test_the_list_must_be_of_the_campaign(emulator: Emulator, client: DiallerClient) -> None:
    """A server that ignores the campaign filter is caught before anything is written (a
    sync against the whole account could otherwise lock or delete all of it)."""
    seed(emulator, 5)
    seed_other = new_contact(
        {
            "UserData": "OTHER",
            "Name": "x",
            "PhoneNumber1": "+49301",
            "DiallerCampaignsID": 539,
            "DiallerCampaignsName": "Summer Campaign",
        }
    )
    emulator.store.insert(emulator.client_id, seed_other)
    routes = client.routes.replace(list_contacts=("GET", "/dialler/contacts?x={user_data}"))
    del routes  # the emulator filters correctly; simulate the broken server instead:
    from dialler_async import ResponseFormatError

    client.transport.url_path  # noqa: B018 - the client is open
    original = client._iter_records

    async def unfiltered(campaign_id: int | None) -> Any:
        async for record in original(None):
            yield record

    client._iter_records = unfiltered  # type: ignore[method-assign]
    emulator.stats.reset()
    with pytest.raises(ResponseFormatError, match="did not filter"):
        await client.sync_contacts([row(0)], campaign_id=CAMPAIGN, missing="delete", force=True)
    assert writes(emulator) == 0


@pytest.mark.parametrize(
    ("changes", "field", "changed"),
    [
        ({"Amount": None}, "Amount", True),
        ({"amount": ""}, "Amount", True),  # the SDK's spelling
        ({"City": "  "}, "City", True),
        ({"Email": None}, "Email", False),  # no value on either side: unchanged
        ({}, "Amount", False),  # a field the row does not carry is never compared
    ],
    ids=["none", "snake-case-blank", "blank-text", "already-empty", "absent"],
)
async def test_a_field_given_empty_asks_for_no_value(
    emulator: Emulator,
    client: DiallerClient,
    changes: dict[str, Any],
    field: str,
    changed: bool,
) -> None:
    seed(emulator, 2)
    base = row(0)
    del base["Amount"]
    result = await client.sync_contacts(
        [{**base, **changes}, row(9, Amount=None, Email="")], campaign_id=CAMPAIGN
    )
    assert_account(result.rows, read=2)
    assert (result.plan.changed, result.plan.new) == (int(changed), 1)
    after = campaign_by_user_data(emulator)
    value = after["U00000"][0][field]
    assert (not value) if changed or field == "Email" else value == 10.5
    assert after["U00009"][0]["Amount"] is None  # imported without the emptied fields


async def test_an_emptied_name_is_invalid_not_cleared(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 1)
    result = await client.sync_contacts([row(0, Name="")], campaign_id=CAMPAIGN)
    assert_account(result.rows, read=1)
    assert result.plan.invalid == 1
    assert campaign_by_user_data(emulator)["U00000"][0]["Name"] == "Name0"
