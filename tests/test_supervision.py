"""Issue 9: the account is exact under every failure.

Each test provokes one way the 0.1 engine lost rows, hung, orphaned its workers or kept writing,
over real HTTP against the emulator, bounds the job with ``asyncio.wait_for`` and checks the
account invariants (``assert_account``) and the server's end state.
"""

from __future__ import annotations

import asyncio
import decimal
import gc
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dialler_async import (
    CheckpointError,
    ClientStateError,
    ConfigurationError,
    DiallerClient,
    Operation,
    Outcome,
    Progress,
)
from dialler_async._checkpoint import PENDING, Checkpoint
from dialler_async.emulator import Emulator

from .conftest import contact
from .invariants import (
    Counted,
    CountedAsync,
    Snapshot,
    assert_account,
    bulk_result_of,
    no_job_tasks,
)
from .journal import edit_items, states

LIMIT = 30.0  # no test here may take longer: a hang fails, it does not block CI


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [contact(i) for i in range(start, start + n)]


# -- items that cannot be prepared ------------------------------------------------------------


async def test_a_key_that_cannot_be_parsed_is_invalid_not_lost(client: DiallerClient) -> None:
    ids: list[object] = [*range(1, 6), "12³", "١٢", *range(6, 10)]
    result = await asyncio.wait_for(client.lock_contacts(ids=ids, keep_results=True), LIMIT)
    assert_account(result, read=len(ids))
    assert result.invalid >= 2
    assert {f.index for f in result.failures if f.outcome is Outcome.INVALID} >= {5, 6}


async def test_an_unserialisable_value_is_invalid_with_a_checkpoint(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    data: list[dict[str, object]] = [*rows(4), {**contact(4), "Info1": decimal.Decimal("1.5")}]
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(data, checkpoint=tmp_path / "ck.db", keep_results=True), LIMIT
    )
    assert_account(result, read=5, emulator=emulator, before=before, upsert=True)
    assert result.succeeded == 4 and result.invalid == 1
    assert result.failures[0].error is not None


# -- the caller's callbacks and iterators -------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("api", ["run", "stream"])
async def test_a_progress_callback_that_raises_stops_the_job_and_is_raised(
    client: DiallerClient, emulator: Emulator, api: str
) -> None:
    seen = 0

    def on_progress(progress: Progress) -> None:
        nonlocal seen
        seen += 1
        if progress.done >= 20:
            raise Boom("callback broke")

    data = Counted(rows(400))
    before = Snapshot.take(emulator)
    options: dict[str, Any] = {"on_progress": on_progress, "progress_interval": 0}

    async def job() -> None:
        if api == "run":
            await client.import_contacts(data, **options)
        else:
            async with client.stream(Operation.IMPORT, data, **options) as s:
                async for _ in s:
                    pass

    with pytest.raises(Boom) as info:
        await asyncio.wait_for(job(), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert not result.read_all and data.read < 400
    assert no_job_tasks()


@pytest.mark.parametrize("api", ["run", "stream"])
async def test_an_input_iterator_that_raises_keeps_the_account(
    client: DiallerClient, emulator: Emulator, api: str
) -> None:
    async def broken() -> AsyncIterator[dict[str, object]]:
        for row in rows(30):
            yield row
        raise Boom("input broke")

    before = Snapshot.take(emulator)

    async def job() -> None:
        if api == "run":
            await client.import_contacts(broken(), keep_results=True)
        else:
            async for _ in client.stream(Operation.IMPORT, broken(), keep_results=True):
                pass

    with pytest.raises(Boom) as info:
        await asyncio.wait_for(job(), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=30, emulator=emulator, before=before, upsert=True)
    assert not result.read_all
    assert no_job_tasks()


async def test_a_checkpoint_that_cannot_be_written_stops_the_job(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 0
    real_flush = Checkpoint.flush

    def flush(self: Checkpoint) -> None:
        nonlocal writes
        writes += 1
        if writes > 10:
            raise CheckpointError("writing checkpoint failed: database or disk is full")
        real_flush(self)

    monkeypatch.setattr(Checkpoint, "flush", flush)
    data = Counted(rows(300))
    before = Snapshot.take(emulator)
    with pytest.raises(CheckpointError) as info:
        await asyncio.wait_for(
            client.import_contacts(
                data, checkpoint=tmp_path / "ck.db", overwrite_duplicates=False, keep_results=True
            ),
            LIMIT,
        )
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=False)
    assert not result.read_all
    # PENDING could not be journaled, so that write was never sent.
    assert len(emulator.store.all_contacts()) - len(before.contacts) == result.succeeded


# -- cancellation -------------------------------------------------------------------------------


async def test_a_second_cancel_still_ends_every_worker_and_keeps_the_account(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(latency=0.02)
    journal = tmp_path / "ck.db"
    data = Counted(rows(2000))
    before = Snapshot.take(emulator)
    task = asyncio.create_task(
        client.import_contacts(
            data, checkpoint=journal, grace=10.0, concurrency=8, keep_results=True
        )
    )
    while data.read < 40:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.005)  # inside the shutdown's grace now
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    result = bulk_result_of(info.value)
    assert no_job_tasks()
    count = len(emulator.store.all_contacts())
    await asyncio.sleep(0.2)
    assert len(emulator.store.all_contacts()) == count, "writes after the job returned"
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    # The checkpoint was closed and unlocked: the same job can resume at once.
    again = await asyncio.wait_for(
        client.import_contacts(rows(2000), checkpoint=journal, keep_results=True), LIMIT
    )
    assert again.skipped >= result.succeeded - 8 and again.ok


async def test_a_cancelled_stream_carries_its_account(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.configure(latency=0.01)
    data = Counted(rows(500))
    seen: list[int] = []

    async def consume() -> None:
        async for r in client.stream(Operation.IMPORT, data, keep_results=True):
            seen.append(r.index)

    task = asyncio.create_task(consume())
    while len(seen) < 20:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(bulk_result_of(info.value), read=data.read)
    assert no_job_tasks()


# -- a consumer that stops early ------------------------------------------------------------------


async def test_a_dropped_stream_stops_sending(client: DiallerClient, emulator: Emulator) -> None:
    emulator.configure(latency=0.01)
    async for _ in client.stream(Operation.IMPORT, rows(2000), keep_results=True):
        break  # no async with, no aclose: the stream is garbage now
    gc.collect()
    async with asyncio.timeout(LIMIT):
        while client._jobs:
            await asyncio.sleep(0.01)
    count = len(emulator.store.all_contacts())
    await asyncio.sleep(0.2)
    assert len(emulator.store.all_contacts()) == count
    assert count <= 8 * 3, f"{count} contacts written after the consumer left"
    assert no_job_tasks()


@pytest.mark.parametrize("ordered", [False, True])
async def test_leaving_async_with_early_does_not_wait_the_grace(
    client: DiallerClient, emulator: Emulator, ordered: bool
) -> None:
    emulator.configure(latency=0.01)
    data = Counted(rows(2000))
    loop = asyncio.get_running_loop()
    async with client.stream(
        Operation.IMPORT, data, ordered=ordered, grace=60.0, keep_results=True
    ) as s:
        async for _ in s:
            break
        started = loop.time()
    assert loop.time() - started < 10.0  # in-flight requests only, never the 60 s grace
    assert_account(s.result, read=data.read)
    assert s.result.total < 2000 and no_job_tasks()


async def test_ordered_output_reads_ahead_only_a_bounded_window(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=1)
    emulator.configure(slow_seconds=0.5)
    s = client.stream(Operation.IMPORT, rows(600), ordered=True, concurrency=4, keep_results=True)
    engine = s._engine
    widest = 0
    indexes = []
    async with s:
        async for r in s:
            widest = max(widest, len(engine.reorder), engine.read - engine.next_index)
            indexes.append(r.index)
    assert indexes == list(range(600))
    assert widest <= engine.window + 1
    assert_account(s.result, read=600)


async def test_closing_the_client_ends_its_jobs(emulator: Emulator) -> None:
    client = DiallerClient(emulator.base_url, emulator.client_id, emulator.token, timeout=5)
    await client.__aenter__()
    emulator.configure(latency=0.01)
    data = Counted(rows(3000))
    task = asyncio.create_task(client.import_contacts(data, keep_results=True))
    while data.read < 30:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(client.aclose(), LIMIT)
    with pytest.raises(ClientStateError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(bulk_result_of(info.value), read=data.read)
    assert no_job_tasks()


# -- the checkpoint -------------------------------------------------------------------------------


async def test_resume_with_rows_inserted_and_moved_sends_nothing_twice(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ck.db"
    first = rows(100)
    result = await client.import_contacts(
        first, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    assert result.ok
    second = [contact(1000), *first[50:], *first[:50]]  # a row inserted, halves swapped
    second.insert(30, contact(1001))
    result = await client.import_contacts(
        second, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    assert_account(result, read=102)
    assert result.skipped == 100 and result.succeeded == 2
    assert len(emulator.store.all_contacts()) == 102


async def test_identical_rows_without_user_data_keep_their_count_on_resume(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ck.db"
    same = {"Name": "Twin", "PhoneNumber1": "+4930111", "DiallerCampaignsID": 538}
    await client.import_contacts([same, same], checkpoint=journal, keep_results=True)
    result = await client.import_contacts([same, same, same], checkpoint=journal, keep_results=True)
    assert_account(result, read=3)
    assert result.skipped == 2 and result.succeeded == 1
    assert len(emulator.store.all_contacts()) == 3


async def test_a_checkpoint_in_use_is_refused_at_once(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(latency=0.01)
    journal = tmp_path / "ck.db"
    data = Counted(rows(1000))
    first = asyncio.create_task(client.import_contacts(data, checkpoint=journal, keep_results=True))
    while data.read < 10:
        await asyncio.sleep(0.01)
    with pytest.raises(ConfigurationError, match="in use"):
        await asyncio.wait_for(
            client.import_contacts(rows(1000), checkpoint=journal, keep_results=True), LIMIT
        )
    result = await asyncio.wait_for(first, LIMIT)
    assert result.ok and len(emulator.store.all_contacts()) == 1000


async def test_import_and_stream_share_a_checkpoint(client: DiallerClient, tmp_path: Path) -> None:
    journal = tmp_path / "ck.db"
    await client.import_contacts(rows(10), checkpoint=journal, keep_results=True)
    async with client.stream("import", rows(10), checkpoint=journal, keep_results=True) as s:
        outcomes = {r.outcome async for r in s}
    assert outcomes == {Outcome.SKIPPED}
    assert all(r.reason == "already done" for r in s.result.items or ())


@pytest.mark.parametrize("content", [b"not a database, just text\n", b"SQLite format 3\x00junk"])
async def test_a_file_that_is_not_a_checkpoint_is_a_configuration_error(
    client: DiallerClient, tmp_path: Path, content: bytes
) -> None:
    journal = tmp_path / "notes.txt"
    journal.write_bytes(content * 100)
    with pytest.raises(ConfigurationError, match="not a checkpoint"):
        await client.import_contacts(rows(3), checkpoint=journal, keep_results=True)
    assert journal.read_bytes() == content * 100


async def test_an_sqlite_file_of_something_else_is_refused(
    client: DiallerClient, tmp_path: Path
) -> None:
    journal = tmp_path / "other.db"
    db = sqlite3.connect(journal)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="not a checkpoint"):
        await client.import_contacts(rows(3), checkpoint=journal, keep_results=True)


def test_only_a_confirmed_outcome_replaces_a_pending_entry(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    identity = (12345, 0)
    journal = Checkpoint(path, Operation.IMPORT, {})
    journal.mark_pending(identity, "CRM-1", 0)
    journal.record(identity, "CRM-1", Outcome.CANCELLED, 0, None)
    journal.close()
    journal = Checkpoint(path, Operation.IMPORT, {})  # what the next run sees
    previous = journal.previous(identity, "CRM-1")
    assert previous is not None and previous.state == PENDING
    journal.record(identity, "CRM-1", Outcome.SUCCEEDED, 0, None)
    journal.record(identity, "CRM-1", Outcome.CANCELLED, 0, None)  # never a downgrade
    journal.close()
    journal = Checkpoint(path, Operation.IMPORT, {})
    previous = journal.previous(identity, "CRM-1")
    assert previous is not None and previous.state == Outcome.SUCCEEDED.value
    journal.close()


async def test_a_resumed_check_that_is_cancelled_stays_a_check(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "ck.db"
    first = await client.import_contacts(
        rows(1), checkpoint=path, overwrite_duplicates=False, keep_results=True
    )
    assert first.ok
    edit_items(path, "UPDATE items SET state='pending'")
    emulator.faults.script("slow", times=1)  # the lookup hangs; cancel it
    emulator.configure(slow_seconds=2.0)
    task = asyncio.create_task(
        client.import_contacts(
            rows(1), checkpoint=path, overwrite_duplicates=False, grace=0, keep_results=True
        )
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert bulk_result_of(info.value).ambiguous == 1
    await emulator.faults.settled()
    assert states(path) == {"ambiguous": 1}
    again = await client.import_contacts(
        rows(1), checkpoint=path, overwrite_duplicates=False, keep_results=True
    )
    assert again.succeeded == 1 and again.items is not None and again.items[0].reconciled
    assert len(emulator.store.all_contacts()) == 1


# -- memory ---------------------------------------------------------------------------------------


async def test_kept_failures_are_small_and_hold_no_frames(client: DiallerClient) -> None:
    ids = list(range(900_000, 900_300))  # none exists: 300 kept 404 failures
    tracemalloc.start()
    try:
        result = await client.lock_contacts(ids=ids, keep_results=False)
        assert result.failed == 300
        assert all(f.error is not None and f.error.__traceback__ is None for f in result.failures)
        gc.collect()
        holding = tracemalloc.get_traced_memory()[0]
        del result  # what the account alone keeps alive (the emulator runs in this process)
        gc.collect()
        held = holding - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / 300 < 2048, f"{held / 300:.0f} bytes per kept failure"


async def test_an_input_is_closed_when_the_job_stops_early(client: DiallerClient) -> None:
    closed = []

    def source() -> Iterator[dict[str, object]]:
        try:
            yield from rows(1000)
        finally:
            closed.append("sync")

    async def asource() -> AsyncIterator[dict[str, object]]:
        try:
            for row in rows(1000):
                yield row
        finally:
            closed.append("async")

    for items in (source(), asource(), CountedAsync(rows(5))):
        async with client.stream(Operation.IMPORT, items, keep_results=True) as s:
            async for _ in s:
                break
    assert closed == ["sync", "async"]
