"""Hostile review of the issue-9 engine (branch attack9).

Every test here is one break found by attacking the supervised engine, the stream and the
checkpoint as a hostile user would. Each is bounded by ``asyncio.wait_for`` and checks the
account invariants. A failing test is a break still open.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from dialler_async import DiallerClient, Operation, Outcome, Progress
from dialler_async._digests import DigestSet, key_digest
from dialler_async.emulator import Emulator

from .conftest import contact
from .invariants import Counted, Snapshot, assert_account

LIMIT = 20.0


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [contact(i) for i in range(start, start + n)]


def job_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if (t.get_name() or "").startswith("dialler-bulk") and not t.done()
    ]


class Boom(BaseException):
    """A caller's exception that is not an Exception (like trio.Cancelled, or a framework's
    own abort signal)."""


# -- BREAK 1: one BulkStream iterated by two tasks hangs one of them for ever -----------------
# Handover keeps one `_getter` future; a second waiting consumer overwrites it, so the first
# is never woken again, not even by end(). Expected: both consumers end (or the second gets a
# clear error at once).
async def test_two_consumers_of_one_stream_both_end(client: DiallerClient) -> None:
    s = client.stream(Operation.IMPORT, rows(40), concurrency=2)
    seen: list[int] = []

    async def consume() -> None:
        try:
            async for r in s:
                seen.append(r.index)
        except RuntimeError:
            pass  # a clear refusal of the second consumer is fine too

    await asyncio.wait_for(asyncio.gather(consume(), consume()), 5.0)
    assert_account(s.result, read=40)
    assert not job_tasks()


# -- BREAK 2: a BaseException subclass from the input iterator is swallowed -------------------
# `_read` catches only Exception; the Boom kills the reader task, the TaskGroup raises a
# BaseExceptionGroup that `_drive` does not catch, and the job ends as if the input were
# complete: run() RETURNS a partial result with no error (read_all False) and the caller's
# exception is lost ("Task exception was never retrieved").
async def test_a_base_exception_from_the_input_is_raised_with_the_account(
    client: DiallerClient,
) -> None:
    read = 0

    def data() -> Iterator[dict[str, object]]:
        nonlocal read
        for i in range(10):
            read += 1
            yield contact(i)
        raise Boom("the caller aborts")

    with pytest.raises(Boom) as info:
        await asyncio.wait_for(client.import_contacts(data()), LIMIT)
    result = info.value.bulk_result  # type: ignore[attr-defined]
    assert_account(result, read=read)
    assert not job_tasks()


# -- BREAK 3: a BaseException subclass from on_progress is lost, the account is cut ----------
# `_report` catches only Exception: the Boom escapes `_account` in a worker, which dies with
# its chain; the caller gets "internal error ... left over" (or nothing) instead of Boom.
async def test_a_base_exception_from_on_progress_is_raised_with_the_account(
    client: DiallerClient,
) -> None:
    calls = 0

    def on_progress(p: Progress) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Boom("stop now")

    data = Counted(rows(50))
    with pytest.raises(Boom) as info:
        await asyncio.wait_for(
            client.import_contacts(data, on_progress=on_progress, progress_interval=0), LIMIT
        )
    assert_account(info.value.bulk_result, read=data.read)  # type: ignore[attr-defined]
    assert not job_tasks()


# -- BREAK 4: a stream does not yield the items swept at the end of its grace ----------------
# Items cancelled by abort() are accounted in `_finish` but never handed over, so a consumer
# that writes one line per yielded result (the documented way to use stream()) silently misses
# them although iteration ended normally (StopAsyncIteration, no error).
async def test_a_stream_yields_every_item_it_accounts_for(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=1)  # row 0 hangs on the server
    emulator.configure(slow_seconds=3.0)
    data = Counted([contact(0), {"Name": ""}, *rows(20, 1)])  # row 1 is INVALID
    s = client.stream(Operation.IMPORT, data, concurrency=2, max_failures=1, grace=0.2)
    yielded = []
    async with s:
        async for r in s:
            yielded.append(r.index)
    assert_account(s.result, read=data.read)
    await emulator.faults.settled()
    assert sorted(yielded) == list(range(data.read)), (
        f"yielded {sorted(yielded)}; account holds {s.result.total} items"
    )


# -- BREAK 5: ordered=True: results behind a swept row are never yielded ----------------------
# Same as above but worse: rows 1.. SUCCEEDED and sit in the reorder buffer behind the swept
# row 0, so the consumer sees none of them.
async def test_ordered_stream_yields_succeeded_rows_behind_a_swept_one(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=1)
    emulator.configure(slow_seconds=3.0)
    data = Counted([contact(0), *rows(6, 1), {"Name": ""}, *rows(20, 7)])
    s = client.stream(
        Operation.IMPORT, data, concurrency=2, max_failures=1, grace=0.2, ordered=True
    )
    yielded = []
    async with s:
        async for r in s:
            yielded.append(r.index)
    assert_account(s.result, read=data.read)
    await emulator.faults.settled()
    succeeded = [i.index for i in s.result.items or () if i.outcome is Outcome.SUCCEEDED]
    assert set(succeeded) <= set(yielded), f"succeeded {succeeded} but yielded {yielded}"


# -- BREAK 6: an upsert swept at the end of the grace is CANCELLED but lands afterwards -------
# An import with overwrite_duplicates=True and UserData is "idempotent", so `sent_unsafe` is
# never set and a request still on its way when the grace ends is swept as CANCELLED ("not
# done"). The server then applies it: a contact the account does not report was written
# ("nothing unreported written").
async def test_a_swept_upsert_in_flight_is_not_reported_cancelled(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=1)
    emulator.configure(slow_seconds=1.0)
    before = Snapshot.take(emulator)
    data = Counted([contact(0), {"Name": ""}, *rows(5, 1)])
    result = await asyncio.wait_for(
        client.import_contacts(data, concurrency=2, max_failures=1, grace=0.1), LIMIT
    )
    await emulator.faults.settled()  # the slow request is applied now
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)


# -- BREAK 7: rows with one key are read without bound behind a slow head --------------------
# A chained row releases its read slot at once, so while the head of a key's chain is slow the
# reader pulls the whole input into that chain: memory grows with the input ("memory stays
# flat however long the input is" is false for repeated keys, e.g. many updates of one
# contact, or a feed that repeats a row).
async def test_rows_with_one_key_do_not_read_the_whole_input_into_memory(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=1)
    emulator.configure(slow_seconds=1.0)
    data = Counted(contact(0, Info1=str(i)) for i in range(20_000))
    task = asyncio.create_task(client.import_contacts(data, concurrency=2))
    while sum(emulator.stats.requests.values()) < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the head is still on the server (1 s)
    read_while_blocked = data.read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, LIMIT)
    await emulator.faults.settled()
    assert read_while_blocked <= 200, f"{read_while_blocked} rows read behind one slow row"


# -- BREAK 8: key_digest is not exact for integer IDs ----------------------------------------
# The module says "Digests are exact for integer keys (IDs)", but hash() of an int is taken
# modulo 2**61-1 (and hash(-1) == hash(-2)): ID 1 and ID 2**61 get one digest, so the second
# is flagged duplicate_in_input although the input never repeats it.
def test_key_digest_is_exact_for_integer_ids() -> None:
    assert key_digest(1) != key_digest(2**61)
    assert key_digest(0) != key_digest(2**61 - 1)
    s = DigestSet()
    assert s.add(key_digest(7)) and s.add(key_digest(2**61 + 6))


async def test_distinct_ids_are_not_flagged_as_duplicates(client: DiallerClient) -> None:
    result = await asyncio.wait_for(client.lock_contacts(ids=[1, 2**61]), LIMIT)
    assert_account(result, read=2)
    assert result.items is not None
    assert not result.items[1].duplicate_in_input
