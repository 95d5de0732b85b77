"""The streamed list read (iter_contacts, sync's snapshot): same admission/retry path as any
request, bounded, and hostile answers or consumers never leak a slot or read as an empty
campaign."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from dialler_async import (
    DiallerClient,
    Limits,
    ResponseFormatError,
)
from dialler_async.emulator import Emulator, FaultKind

from .conftest import FAST_RETRY, FakeClock
from .invariants import assert_account
from .test_sync import CAMPAIGN, row, seed, writes


def _free_slots(client: DiallerClient) -> int:
    gate = client.transport.governor._gate
    return gate.limit - gate.held


async def test_iter_contacts_streams_every_contact_in_one_request(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 1500)
    seed(emulator, 3, campaign=539)
    emulator.stats.reset()
    ids = [c.id async for c in client.iter_contacts(CAMPAIGN)]
    assert len(ids) == 1500 == len(set(ids))
    assert emulator.stats.requests["list_contacts"] == 1
    assert len([c async for c in client.iter_contacts()]) == 1503
    assert [c async for c in client.iter_contacts(540)] == []


async def test_a_consumer_that_stops_early_releases_the_slot(
    emulator: Emulator, clock: FakeClock
) -> None:
    seed(emulator, 3000)
    async with emulator.client(
        limits=Limits(max_concurrency=1), clock=clock, sleep=clock.sleep
    ) as c:
        async with contextlib.aclosing(c.iter_contacts(CAMPAIGN)) as contacts:
            async for contact in contacts:
                if contact.id == 10:
                    break
        assert _free_slots(c) == 1  # at once
        async for contact in c.iter_contacts(CAMPAIGN):
            if contact.id == 10:
                break  # left to the asyncgen finalizer: a few loop turns
        for _ in range(20):
            await asyncio.sleep(0)
        assert _free_slots(c) == 1
        iterator = c.iter_contacts(CAMPAIGN)
        await iterator.__anext__()
        await iterator.aclose()
        await iterator.aclose()  # twice is harmless
        assert _free_slots(c) == 1
        # With one slot, a leaked one would hang here.
        assert len(await asyncio.wait_for(c.list_campaigns(), 10)) == 3


async def test_the_list_answer_limit_applies_while_streaming(
    emulator: Emulator, clock: FakeClock
) -> None:
    seed(emulator, 300)
    async with emulator.client(max_list_answer_bytes=50_000, clock=clock, sleep=clock.sleep) as c:
        seen: list[object] = []

        async def read_all() -> None:
            async for contact in c.iter_contacts(CAMPAIGN):
                seen.append(contact)

        with pytest.raises(ResponseFormatError, match="50,000-byte limit"):
            await read_all()
        assert seen == []  # refused by its Content-Length, before a record is parsed
        assert _free_slots(c) == c.limits.max_concurrency
        emulator.stats.reset()
        with pytest.raises(ResponseFormatError, match="limit"):
            await c.sync_contacts([row(0)], campaign_id=CAMPAIGN, missing="delete", force=True)
        assert writes(emulator) == 0


async def test_opening_the_stream_is_retried_like_any_read(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 200)
    emulator.faults.script(FaultKind.UNAVAILABLE, times=2, operation="list_contacts")
    emulator.stats.reset()
    before = client.transport.retries
    assert len([c async for c in client.iter_contacts(CAMPAIGN)]) == 200
    assert emulator.stats.requests["list_contacts"] == 3
    assert client.transport.retries - before == 2


async def test_a_broken_answer_stops_the_sync_before_any_write(
    emulator: Emulator, client: DiallerClient
) -> None:
    seed(emulator, 500)
    emulator.faults.script(FaultKind.INVALID_JSON, times=1, operation="list_contacts")
    emulator.stats.reset()
    with pytest.raises(ResponseFormatError, match="invalid JSON"):
        await client.sync_contacts(
            [row(i, City="X") for i in range(10)], campaign_id=CAMPAIGN, missing="delete"
        )
    assert writes(emulator) == 0


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"status": 500, "error": "database down"}, "no 'records'"),
        ({"records": [], "status": 500}, "status 500"),
        ([{"ID": 1}], "no 'records'"),
        ({"records": [1, 2]}, "not a JSON object"),
        ({"records": [{"ID": "x"}]}, "unexpected record"),
    ],
)
async def test_an_error_envelope_never_reads_as_an_empty_campaign(
    canned: tuple[DiallerClient, list[web.StreamResponse]], body: object, match: str
) -> None:
    client, answers = canned
    answers.append(web.json_response(body))
    with pytest.raises(ResponseFormatError, match=match):
        async for _ in client.iter_contacts(CAMPAIGN):
            pass
    answers.append(web.json_response({"records": [], "count": 0, "status": 200}))
    assert [c async for c in client.iter_contacts(CAMPAIGN)] == []


async def test_cancelling_a_sync_mid_apply_leaves_an_exact_account(
    emulator: Emulator, clock: FakeClock
) -> None:
    seed(emulator, 400)
    rows = [row(i, City=f"C{i}") for i in range(400)]  # every row changed
    async with emulator.client(
        limits=Limits(max_concurrency=4), retry=FAST_RETRY, clock=clock, sleep=clock.sleep
    ) as c:
        task: asyncio.Task[object] | None = None

        def progress(p: object) -> None:
            assert task is not None
            if getattr(p, "done", 0) >= 100:
                task.cancel()

        task = asyncio.create_task(
            c.sync_contacts(rows, campaign_id=CAMPAIGN, on_progress=progress, progress_interval=0)
        )
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    partial = caught.value.bulk_result  # type: ignore[attr-defined]
    assert_account(partial, read=400)
    assert partial.cancelled > 0
    assert partial.succeeded >= 100
    # What the account calls SUCCEEDED is on the server; nothing else was changed.
    changed = {c["UserData"] for c in emulator.store.all_contacts() if c["City"].startswith("C")}
    succeeded = {i.key for i in partial.items if i.outcome.value == "succeeded"}
    assert succeeded <= changed
    assert len(changed) <= partial.succeeded + partial.ambiguous
