"""Hostile review of sync / iter_contacts / streamed export (issue 13): each test is a break
found by attacking the merged feature; the comment above each says what broke."""

from __future__ import annotations

import asyncio
import csv
import decimal
import glob
import json
import sqlite3
import tempfile
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dialler_async import (
    DiallerClient,
    DiallerError,
    Limits,
    Outcome,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    _snapshot,
)
from dialler_async.cli import main
from dialler_async.emulator import Emulator, EmulatorConfig
from dialler_async.emulator._records import new_contact

from .conftest import FAST_RETRY, FakeClock, Handler
from .invariants import Snapshot, assert_account
from .test_sync import CAMPAIGN, campaign_by_user_data, row, seed, writes


def _scratch_files() -> set[str]:
    return set(glob.glob(str(Path(tempfile.gettempdir()) / "dialler-sync-*")))


def _static(body: bytes) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return handler


def _record(i: int, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": i,
        "Name": f"N{i}",
        "UserData": f"U{i:05d}",
        "PhoneNumber1": "+49301",
        "DiallerCampaignsID": CAMPAIGN,
    }
    out.update(fields)
    return out


# -- the stream ---------------------------------------------------------------------------


# BREAK 1: the client's `timeout` is aiohttp's *total* timeout, and it also runs while a
# streamed list answer is read. A campaign whose answer takes longer than `timeout` to arrive
# (30 s by default: a few hundred thousand contacts on a slow link) can never be exported,
# iterated or synced, though the server sends data all the time. A stream needs a read
# (inactivity) timeout, not a deadline on the whole answer.
async def test_a_streamed_list_answer_longer_than_the_timeout_is_not_cut_off(
    canned_server: tuple[list[Handler], str],
) -> None:
    handlers, base_url = canned_server

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"records":[')
        for i in range(30):  # 30 x 50 ms: ~1.5 s in all, never silent for more than 50 ms
            await asyncio.sleep(0.05)
            await resp.write((b"," if i else b"") + json.dumps(_record(i + 1)).encode())
        await resp.write(b'],"count":30,"status":200}')
        await resp.write_eof()
        return resp

    handlers.append(trickle)
    async with DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=1.0) as c:
        ids = [contact.id async for contact in c.iter_contacts(CAMPAIGN)]
    assert ids == list(range(1, 31))


# BREAK 2: nothing bounds one record of the streamed list. ijson builds each record whole, so
# one 5 MB record (or a gzip bomb of one endless string) is held in memory however small
# max_answer_bytes is: only the whole answer's 1 GiB limit applies. A single record is one
# contact and should obey the per-contact limit (max_answer_bytes).
async def test_one_record_larger_than_max_answer_bytes_is_refused(
    canned_server: tuple[list[Handler], str],
) -> None:
    handlers, base_url = canned_server
    huge = {"records": [_record(1, Comment="x" * 5_000_000)], "count": 1, "status": 200}
    handlers.append(_static(json.dumps(huge).encode()))
    async with DiallerClient(
        base_url, 7, "tok", retry=RetryPolicy.never(), max_answer_bytes=100_000
    ) as c:
        with pytest.raises(ResponseFormatError, match="limit"):
            async for _ in c.iter_contacts(CAMPAIGN):
                pass


# BREAK 3: the envelope's own `count` and `status` are never checked once records arrived.
# An answer cut short by the server (`count` 3, one record) or an error envelope carrying a
# partial list (`status` 500) reads as a complete campaign: sync then imports a second copy of
# every contact it did not see (plain imports) and counts the rest as missing.
@pytest.mark.parametrize(
    "envelope",
    [
        {"records": [_record(1)], "count": 3, "status": 200},
        {"status": 500, "error": "database timeout", "records": [_record(1)]},
    ],
    ids=["count-disagrees", "status-500-with-records"],
)
async def test_an_envelope_that_contradicts_its_records_is_refused(
    canned_server: tuple[list[Handler], str], envelope: dict[str, Any]
) -> None:
    handlers, base_url = canned_server
    handlers.append(_static(json.dumps(envelope).encode()))
    async with DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never()) as c:
        with pytest.raises(ResponseFormatError):
            async for _ in c.iter_contacts(CAMPAIGN):
                pass


# BREAK 4: a record whose UserData is a JSON number reads as "99" through iter_contacts (the
# converter's text rule) but as *no UserData* in sync's snapshot: the input row "99" is
# planned new (a second contact is imported) and the server's contact is "missing", so
# --missing delete deletes it (and its call history) and replaces it by a copy.
async def test_a_number_user_data_in_the_campaign_matches_its_row(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 20)
    record = new_contact(
        {
            "UserData": "99",
            "Name": "Name99",
            "FirstName": "Max",
            "City": "Berlin",
            "Amount": 10.5,
            "PhoneNumber1": "+49300000099",
            "DiallerCampaignsID": CAMPAIGN,
            "DiallerCampaignsName": "Spring Campaign",
        }
    )
    record["UserData"] = 99
    emulator.store.insert(emulator.client_id, record)
    assert [c.user_data async for c in client.iter_contacts(CAMPAIGN)][-1] == "99"
    emulator.stats.reset()
    rows = [row(i) for i in range(20)] + [row(99, UserData="99")]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN, missing="delete", force=True)
    assert_account(result.rows, read=len(rows))
    assert result.plan.new == 0 and result.plan.missing == 0
    assert writes(emulator) == 0
    assert emulator.store.contact_count() == 21


# -- the plan -----------------------------------------------------------------------------


# BREAK 5: a row that names the campaign by *name* keeps only the name in its import body; with
# two campaigns of that name the server resolves it to the lowest ID, so a sync of campaign
# 541 creates its new contacts in campaign 538 (and the next run imports them again, since
# 541 still lacks them). The row passed the "is this row for this campaign" check.
async def test_new_rows_naming_the_campaign_by_name_land_in_the_synced_campaign() -> None:
    config = EmulatorConfig(
        campaigns=((538, "Spring Campaign"), (539, "Summer Campaign"), (541, "Spring Campaign"))
    )
    async with Emulator(config) as emu, emu.client() as c:
        before = Snapshot.take(emu)
        rows = [row(1, DiallerCampaignsName="Spring Campaign")]
        result = await c.sync_contacts(rows, campaign_id=541)
        assert_account(result.rows, read=1, emulator=emu, before=before, campaign_id=541)
        assert [x["DiallerCampaignsID"] for x in emu.store.all_contacts()] == [541]


# BREAK 6: the plan journals every row with orjson (the body) and pickle (the row as given).
# A row with a value orjson cannot encode in a column the field list does not know
# (decimal.Decimal, a set) or a row pickle cannot copy (a MappingProxyType: a valid Mapping
# the converter accepts) raises TypeError out of sync_contacts: one bad row stops the whole
# job, and nothing is accounted. import_contacts fails just that row.
@pytest.mark.parametrize(
    "bad",
    [
        row(5000, Discount=decimal.Decimal("1.5")),
        row(5000, Tags={"a", "b"}),
        types.MappingProxyType(row(5000)),
    ],
    ids=["decimal", "set", "mappingproxy"],
)
async def test_one_row_that_cannot_be_journaled_does_not_stop_the_sync(
    emulator: Emulator, client: DiallerClient, bad: Any
) -> None:
    seed(emulator, 5)
    rows = [row(0, City="Bonn"), bad, row(6000)]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=3)
    items = list(result.rows.items or ())
    assert items[0].outcome is Outcome.SUCCEEDED
    assert items[2].outcome is Outcome.SUCCEEDED
    assert campaign_by_user_data(emulator)["U00000"][0]["City"] == "Bonn"


# BREAK 7 (false "unchanged", lost update): an empty value in a numeric or date-time field is
# turned into None by the converter and then left out of the body, so it is never compared:
# the CRM cancels an appointment (FollowUpDateTime emptied) or clears an amount, the sync
# reports the row "unchanged" and the dialler keeps calling at the old appointment. A text
# field emptied the same way ("") is cleared; the docs say an empty value equals no value.
async def test_sync_clears_a_numeric_or_date_field_the_input_empties(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 3)
    await client.update_contacts([{"UserData": "U00001", "FollowUpDateTime": "2026-05-01T09:30"}])
    rows = [row(0, Amount=""), row(1, FollowUpDateTime=""), row(2, City="")]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(result.rows, read=3)
    assert result.plan.changed == 3, result.plan
    after = campaign_by_user_data(emulator)
    assert after["U00000"][0]["Amount"] is None
    assert after["U00001"][0]["FollowUpDateTime"] is None
    assert not after["U00002"][0]["City"]


# BREAK 8 (CLI, false "unchanged"): in a CSV an empty cell is "not given", so a column the CRM
# emptied (a customer's e-mail removed on request) is never cleared by `sync`: the row is
# "unchanged" and the old value stays. `sync` has no --null-marker either (import/update
# have none for sync to share: only `update` takes one), so the CLI cannot clear a field at all.
def test_cli_sync_clears_a_cell_the_crm_emptied(tmp_path: Path) -> None:
    db = tmp_path / "emu.db"
    source = tmp_path / "crm.csv"

    def write(email: str) -> None:
        with source.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["UserData", "Name", "PhoneNumber1", "Email"])
            out.writerow(["K1", "N1", "+49301", email])

    args = ["sync", str(source), "--campaign-id", "538", "--emulator-db", str(db), "-q"]
    write("max@example.com")
    assert main(args) == 0
    write("")
    assert main(args) == 0
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM contacts").fetchone()
    assert not json.loads(data)["Email"]


# -- cancellation -------------------------------------------------------------------------


# BREAK 9: cancelled while it deletes (or locks) the missing contacts, a sync raises
# CancelledError with only the *rows'* account attached (`bulk_result`, operation SYNC): the
# contacts it already deleted are reported nowhere ("nothing written that the account does
# not report"). The CLI then prints "Interrupted" with no account of the deletions either.
async def test_cancelling_while_deleting_the_missing_reports_what_was_deleted(
    emulator: Emulator, clock: FakeClock
) -> None:
    seed(emulator, 300)
    rows = [row(i) for i in range(100)]
    async with emulator.client(
        limits=Limits(max_concurrency=4), retry=FAST_RETRY, clock=clock, sleep=clock.sleep
    ) as c:
        task: asyncio.Task[Any] | None = None

        def progress(p: Any) -> None:
            assert task is not None
            if p.done >= 150:  # 100 rows + 50 of the 200 missing contacts
                task.cancel()

        task = asyncio.create_task(
            c.sync_contacts(
                rows,
                campaign_id=CAMPAIGN,
                missing="delete",
                force=True,
                on_progress=progress,
                progress_interval=0,
            )
        )
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    deleted = 300 - emulator.store.contact_count()
    assert deleted > 0
    synced = getattr(caught.value, "sync_result", None)
    assert synced is not None, "no account of the missing policy on the CancelledError"
    assert synced.missing is not None
    assert_account(synced.missing, read=synced.missing.total)
    assert deleted <= synced.missing.succeeded + synced.missing.ambiguous


# BREAK 10: a sync cancelled (or whose input raises) while it plans raises with no account at
# all, although the README promises for every bulk job that "every row read is in the account
# exactly once ... the partial account attached as exc.bulk_result" (a cancel during apply
# does attach it).
async def test_cancelling_during_the_plan_accounts_every_row_read(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 10)
    read = 0
    stalled = asyncio.Event()

    async def rows() -> AsyncIterator[dict[str, Any]]:
        nonlocal read
        for i in range(10):
            read += 1
            yield row(i, City="X")
            if i == 4:
                stalled.set()
                await asyncio.Event().wait()  # the source stalls: the user presses Ctrl-C

    task = asyncio.create_task(client.sync_contacts(rows(), campaign_id=CAMPAIGN))
    await asyncio.wait_for(stalled.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    partial = getattr(caught.value, "bulk_result", None)
    assert partial is not None
    assert_account(partial, read=read)
    assert writes(emulator) == 0


# -- the scratch file ---------------------------------------------------------------------


def _tiny_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scratch SQLite file can grow to 8 pages only: a full disk, deterministically."""
    original = _snapshot.Workspace.__init__

    def small(self: _snapshot.Workspace, directory: Any = None) -> None:
        original(self, directory)
        self.db.execute("PRAGMA max_page_count = 8")

    monkeypatch.setattr(_snapshot.Workspace, "__init__", small)


# BREAK 11: a full disk while the snapshot is indexed raises a bare sqlite3.OperationalError
# ("database or disk is full") out of sync_contacts: not in the SDK's error tree (the engine
# turns the same for its checkpoint into CheckpointError), so `except DiallerError` misses it
# and the CLI dies with a traceback.
async def test_a_full_disk_for_the_snapshot_is_a_dialler_error(
    emulator: Emulator, client: DiallerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(emulator, 2000)
    _tiny_workspace(monkeypatch)
    before = _scratch_files()
    emulator.stats.reset()
    with pytest.raises(DiallerError, match="full"):
        await client.sync_contacts([row(0, City="X")], campaign_id=CAMPAIGN)
    assert writes(emulator) == 0
    assert _scratch_files() <= before  # the scratch file is gone


def test_cli_a_full_disk_for_the_snapshot_exits_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "emu.db"
    source = tmp_path / "crm.csv"
    with source.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["UserData", "Name", "PhoneNumber1"])
        for i in range(2000):
            out.writerow([f"K{i}", f"N{i}", f"+4930{i:07d}"])
    args = ["sync", str(source), "--campaign-id", "538", "--emulator-db", str(db), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    _tiny_workspace(monkeypatch)
    status = main(args)
    err = capsys.readouterr().err
    assert status in (1, 2)
    assert "Traceback" not in err and "full" in err


# BREAK 12 (CLI): --checkpoint in a directory that does not exist (the scratch index goes next
# to it) ends in a FileNotFoundError traceback, exit 1, instead of a usage error.
def test_cli_sync_checkpoint_in_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "crm.csv"
    source.write_text("UserData,Name,PhoneNumber1\nK1,N1,+49301\n", encoding="utf-8")
    status = main(
        [
            "sync",
            str(source),
            "--campaign-id",
            "538",
            "--emulator",
            "-q",
            "--checkpoint",
            str(tmp_path / "no" / "such" / "dir" / "cp.db"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err


# BREAK 13 (CLI export): an export whose stream breaks part-way exits 1 but leaves the -o file
# holding the contacts read so far: a valid-looking, truncated CSV (and yesterday's complete
# export, if that was the file, is destroyed). Fed to `sync --missing delete --force`, it wipes
# the rest of the campaign. The file should appear only complete (write aside, then rename).
def test_cli_export_broken_mid_stream_leaves_no_truncated_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "emu.db"
    source = tmp_path / "crm.csv"
    with source.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["UserData", "Name", "PhoneNumber1"])
        for i in range(20):
            out.writerow([f"K{i}", f"N{i}", f"+4930{i:07d}"])
    assert main(["sync", str(source), "--campaign-id", "538", "--emulator-db", str(db), "-q"]) == 0
    export = tmp_path / "spring.csv"
    export.write_text("yesterday's complete export\n", encoding="utf-8")

    original = DiallerClient.iter_contacts

    async def breaking(self: DiallerClient, campaign_id: int | None = None) -> Any:
        n = 0
        async for contact in original(self, campaign_id):
            n += 1
            if n > 5:
                raise ResponseFormatError(
                    "invalid JSON after 5 records", method="GET", path="/x", body=None
                )
            yield contact

    monkeypatch.setattr(DiallerClient, "iter_contacts", breaking)
    status = main(["export", "--campaign-id", "538", "--emulator-db", str(db), "-o", str(export)])
    assert status != 0
    assert "Traceback" not in capsys.readouterr().err
    assert export.read_text(encoding="utf-8") == "yesterday's complete export\n"


# HELD (guards the fix of break 1): a server that sends nothing for longer than `timeout` is
# still given up on while a stream is opened.
async def test_a_silent_server_still_times_out_the_streamed_read(
    canned_server: tuple[list[Handler], str],
) -> None:
    handlers, base_url = canned_server

    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)  # >> timeout; short, as the server's cleanup waits for it
        return web.json_response({"records": []})

    handlers.append(silent)
    async with DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=0.3) as c:
        with pytest.raises(RequestTimeoutError):
            async for _ in c.iter_contacts(CAMPAIGN):
                pass


# BREAK 14 (false "changed", wasted writes): an input that repeats a UserData with different
# contents (the CRM export lists a contact twice) never converges: every run compares the
# first row with what the last one left and sends both rows again, so "a second run of the
# same file sends no write at all" fails and the contact flips to the first row's value and
# back on every run.
async def test_rerunning_an_input_with_differing_duplicates_sends_nothing(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 5)
    rows = [row(i) for i in range(5)] + [row(3, City="Köln"), row(3, City="Bonn")]
    first = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(first.rows, read=len(rows))
    assert campaign_by_user_data(emulator)["U00003"][0]["City"] == "Bonn"
    emulator.stats.reset()
    again = await client.sync_contacts(rows, campaign_id=CAMPAIGN)
    assert_account(again.rows, read=len(rows))
    assert writes(emulator) == 0, again.plan


# -- another writer between snapshot and apply ---------------------------------------------


# BREAK 15: a missing contact that another writer deleted after the snapshot is FAILED (404)
# by `--missing delete`, so the sync is not ok (CLI exit 1) although the campaign ends exactly
# as asked. The delete's goal is reached: SKIPPED ("already deleted") would be the truth.
async def test_a_missing_contact_already_deleted_by_another_writer_is_not_a_failure(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 100)

    def another_writer(plan: Any) -> None:
        emulator.store.delete(100)  # the last seeded contact, one of the 10 missing

    rows = [row(i) for i in range(90)]
    result = await client.sync_contacts(
        rows, campaign_id=CAMPAIGN, missing="delete", on_plan=another_writer
    )
    assert result.missing is not None
    assert_account(result.missing, read=10)
    assert emulator.store.contact_count() == 90
    assert result.ok, [str(f.error) for f in result.missing.failures]


# BREAK 16 (silent duplicate): another writer creates a contact with a new row's UserData after
# the snapshot; the sync's plain import then creates a second one. The account says nothing
# (one SUCCEEDED import), the campaign now holds two contacts with that UserData, and every
# later sync reports it as a conflict and never touches it again.
async def test_a_contact_created_by_another_writer_after_the_snapshot_is_not_duplicated(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 10)

    def another_writer(plan: Any) -> None:
        emulator.store.insert(
            emulator.client_id,
            new_contact(
                {
                    "UserData": "U09000",
                    "Name": "Name9000",
                    "PhoneNumber1": "+49300009000",
                    "DiallerCampaignsID": CAMPAIGN,
                    "DiallerCampaignsName": "Spring Campaign",
                }
            ),
        )

    rows = [row(i) for i in range(10)] + [row(9000)]
    result = await client.sync_contacts(rows, campaign_id=CAMPAIGN, on_plan=another_writer)
    assert_account(result.rows, read=len(rows))
    assert len(campaign_by_user_data(emulator)["U09000"]) == 1
