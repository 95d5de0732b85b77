"""Second hostile review of sync (issue 13): attacks on the fixes of breaks 3, 7, 8, 14 and 16
and on the chunked plan. Each test is a break found (and fixed) or a guard that held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dialler_async import DiallerClient, Operation, Outcome, ServerError, SyncConflictError
from dialler_async.emulator import Emulator
from dialler_async.emulator._records import new_contact

from .invariants import Counted, Snapshot, assert_account
from .test_sync import CAMPAIGN, campaign_by_user_data, row, seed, writes


def _insert(emulator: Emulator, i: int, campaign: int = CAMPAIGN, **fields: Any) -> None:
    name = {538: "Spring Campaign", 539: "Summer Campaign"}[campaign]
    data = {
        "UserData": f"U{i:05d}",
        "Name": f"Name{i}",
        "FirstName": "Max",
        "City": "Berlin",
        "Amount": 10.5,
        "PhoneNumber1": f"+4930{i:07d}",
        "DiallerCampaignsID": campaign,
        "DiallerCampaignsName": name,
    }
    emulator.store.insert(emulator.client_id, new_contact({**data, **fields}))


# BREAK (found, fixed): an on_progress that raised while the plan classified a chunk left the
# rows of that chunk after it unaccounted (or accounted twice): its error is now held until
# the chunk is classified, then raised with the account of every row read.
async def test_on_progress_raising_during_the_plan_leaves_an_exact_account(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 1500)
    source = Counted([row(i, City="X" if i % 3 == 0 else "Berlin") for i in range(1500)])

    def progress(p: Any) -> None:
        if p.done >= 400:  # in the second chunk (only unchanged rows are accounted yet)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop") as caught:
        await client.sync_contacts(
            source, campaign_id=CAMPAIGN, on_progress=progress, progress_interval=0
        )
    partial = getattr(caught.value, "bulk_result", None)
    assert partial is not None
    assert_account(partial, read=source.read)
    assert source.read < 1500
    assert writes(emulator) == 0


# HELD: a cancel while new rows are looked up accounts every row (the planned ones CANCELLED)
# and sends no import.
async def test_cancelling_during_the_lookups_sends_nothing_and_accounts_every_row(
    emulator: Emulator, client: DiallerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(emulator, 10)
    started = asyncio.Event()

    async def stalled(self: DiallerClient, user_data: str) -> list[Any]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(DiallerClient, "find_contacts", stalled)
    rows = [row(i, City="X") for i in range(10)] + [row(100 + i) for i in range(5)]
    task = asyncio.create_task(client.sync_contacts(rows, campaign_id=CAMPAIGN))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    partial = caught.value.bulk_result  # type: ignore[attr-defined]
    assert_account(partial, read=len(rows))
    assert partial.cancelled == 15
    assert writes(emulator) == 0


# HELD: a lookup that fails makes only its row FAILED (never a blind import); the others go on.
async def test_a_failed_lookup_fails_its_row_only(
    emulator: Emulator, client: DiallerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(emulator, 5)
    original = DiallerClient.find_contacts

    async def flaky(self: DiallerClient, user_data: str) -> list[Any]:
        if user_data == "U00101":
            raise ServerError(500, "boom", method="GET", path="/x")
        return await original(self, user_data)

    monkeypatch.setattr(DiallerClient, "find_contacts", flaky)
    before = Snapshot.take(emulator)
    rows = [row(i) for i in range(5)] + [row(100), row(101), row(102)]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=len(rows), emulator=emulator, before=before)
    items = list(result.rows.items or ())
    assert [i.outcome for i in items[5:]] == [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED]
    assert isinstance(items[6].error, ServerError)
    assert "U00101" not in campaign_by_user_data(emulator)


# HELD: a lookup judges the synced campaign only: a contact with the UserData in another
# campaign does not stop the import; two created in this one since the snapshot are a conflict.
async def test_the_lookup_looks_only_in_the_synced_campaign(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 3)

    def other_writers(plan: Any) -> None:
        _insert(emulator, 100, campaign=539)
        _insert(emulator, 101)
        _insert(emulator, 101, City="Köln")

    rows = [row(i) for i in range(3)] + [row(100), row(101)]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN, on_plan=other_writers)
    assert_account(result.rows, read=len(rows))
    items = list(result.rows.items or ())
    assert items[3].outcome is Outcome.SUCCEEDED
    assert items[3].operation is Operation.IMPORT
    assert items[4].outcome is Outcome.FAILED
    assert isinstance(items[4].error, SyncConflictError)
    assert len(campaign_by_user_data(emulator)["U00100"]) == 1
    assert len(campaign_by_user_data(emulator)["U00101"]) == 2  # untouched


# HELD: a contact created since the snapshot with other values is updated by ID with the
# (merged) fields of its rows; one created exactly as asked is "unchanged".
async def test_a_contact_created_since_the_snapshot_is_updated_or_left(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 2)

    def other_writer(plan: Any) -> None:
        _insert(emulator, 100, City="Bonn")
        _insert(emulator, 101, Amount=3.0)

    rows = [row(0), row(1), row(100, City="Köln"), row(100, Email="a@b.de"), row(101, Amount="3")]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN, on_plan=other_writer)
    assert_account(result.rows, read=len(rows))
    items = list(result.rows.items or ())
    assert items[2].reason == "superseded by a later row with the same UserData"
    assert items[3].operation is Operation.UPDATE
    assert items[3].outcome is Outcome.SUCCEEDED
    assert (items[4].outcome, items[4].reason) == (Outcome.SKIPPED, "unchanged")
    after = campaign_by_user_data(emulator)
    assert [(c["City"], c["Email"]) for c in after["U00100"]] == [("Berlin", "a@b.de")]
    assert len(after["U00101"]) == 1
    assert emulator.stats.requests["import_contact"] == 0


# HELD: a lookup that raises something that is not the SDK's error (a bug, a KeyboardInterrupt
# stand-in) comes out as itself, not wrapped in an ExceptionGroup by the lookup's task group.
async def test_a_lookup_raising_a_foreign_error_is_raised_as_itself(
    emulator: Emulator, client: DiallerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(emulator, 2)

    async def broken(self: DiallerClient, user_data: str) -> list[Any]:
        raise RuntimeError("lookup bug")

    monkeypatch.setattr(DiallerClient, "find_contacts", broken)
    with pytest.raises(RuntimeError, match="lookup bug"):
        await client.sync_contacts([row(0), row(100)], campaign_id=CAMPAIGN)
    assert writes(emulator) == 0


# HELD: the chunked plan keeps duplicates apart across chunk boundaries: a UserData repeated
# 600 rows later (another chunk) is still merged with its first row.
async def test_duplicates_across_chunks_are_merged(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 1200)
    rows = [row(i) for i in range(1200)]
    rows[10] = row(10, City="A")
    rows.append(row(10, City="Berlin"))  # back to the server's value: nothing to send
    rows.append(row(11, City="B"))
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=len(rows))
    assert (result.plan.superseded, result.plan.changed, result.plan.unchanged) == (1, 1, 1200)
    assert writes(emulator) == 1


# BREAK (found, fixed): an on_progress that raised while the plan's rows were sent (or the
# missing contacts deleted) came out of sync_contacts with no account at all, though writes
# had been made: now it is raised with the rows' account (bulk_result) and the sync's
# (sync_result), every row read accounted once.
@pytest.mark.parametrize("missing", ["keep", "delete"])
async def test_on_progress_raising_during_apply_is_raised_with_the_account(
    emulator: Emulator, client: DiallerClient, missing: str
) -> None:
    seed(emulator, 120)
    rows = [row(i, City="X") for i in range(100)]
    threshold = 50 if missing == "keep" else 110

    def progress(p: Any) -> None:
        if p.done >= threshold:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop") as caught:
        await client.sync_contacts(
            rows,
            campaign_id=CAMPAIGN,
            missing=missing,  # type: ignore[arg-type]
            force=True,
            on_progress=progress,
            progress_interval=0,
        )
    partial = getattr(caught.value, "bulk_result", None)
    assert partial is not None
    assert_account(partial, read=len(rows))
    synced = caught.value.sync_result  # type: ignore[attr-defined]
    if missing == "delete":
        assert synced.missing is not None
        assert_account(synced.missing, read=synced.missing.total)
        assert 120 - emulator.store.contact_count() <= synced.missing.succeeded
    changed = sum(1 for c in emulator.store.all_contacts() if c["City"] == "X")
    assert changed <= partial.succeeded + partial.ambiguous
