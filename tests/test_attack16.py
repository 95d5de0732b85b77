"""A hostile review of the issue-16 hot path: the reader pulling plain iterables with next(),
ReadSlots/WorkQueue, the lean SUCCEEDED path, the transport's inline first attempt and
Governor.try_acquire, plain_import_body, and the checkpoint's DigestSet of earlier entries.

Over real HTTP against the emulator (or a canned loopback server), every job bounded by
``asyncio.wait_for`` and checked with ``assert_account``; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from dialler_async import (
    BulkError,
    ClientStateError,
    ContactValidationError,
    DiallerClient,
    DiallerError,
    Limits,
    Outcome,
    Progress,
    RetryPolicy,
    ServerError,
)
from dialler_async import _fields as F
from dialler_async._intake import ReadSlots, WorkQueue
from dialler_async._limits import JOB_LIMITER
from dialler_async._validation import checked_contact, plain_import_body
from dialler_async.emulator import Emulator, FaultKind

from .conftest import FakeClock, contact, serving
from .invariants import (
    Counted,
    Snapshot,
    assert_account,
    bulk_result_of,
    cancel_twice,
    no_job_tasks,
)
from .test_limits import max_in_window

LIMIT = 30.0  # seconds a job may take before the test calls it hung (never reached when green)


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [contact(i) for i in range(start, start + n)]


class Boom(Exception):
    pass


class Interrupt(BaseException):
    """Like KeyboardInterrupt, without upsetting the test runner."""


# -- WorkQueue / ReadSlots -----------------------------------------------------------------------


async def test_a_row_handed_to_a_worker_cancelled_at_that_moment_goes_to_a_waiting_one() -> None:
    queue: WorkQueue[int] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # both wait now
    queue.put(7)  # handed to the first ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    # The row must not sit in the queue while another worker waits for one.
    got = await asyncio.wait_for(second, 1.0)
    assert got == 7 and len(queue) == 0


async def test_a_cancelled_worker_takes_nothing_and_the_next_put_reaches_a_live_one() -> None:
    queue: WorkQueue[int] = WorkQueue()
    dead = asyncio.create_task(queue.get())
    live = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    dead.cancel()
    await asyncio.sleep(0)
    queue.put(1)
    assert await asyncio.wait_for(live, 1.0) == 1


async def test_a_reader_cancelled_as_a_slot_is_given_back_loses_no_slot() -> None:
    slots = ReadSlots(1)
    await slots.take()
    reader = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give_back()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert slots.free == 1
    await asyncio.wait_for(slots.take(), 1.0)
    assert slots.free == 0


# -- the caller's plain iterator, pulled with next() ---------------------------------------------


class Failing(Iterator[dict[str, object]]):
    """Rows 0..n-1, then raises ``error`` from next() at row ``at``."""

    def __init__(self, n: int, at: int, error: BaseException) -> None:
        self.n, self.at, self.error, self.read = n, at, error, 0
        self.closed = 0

    def __iter__(self) -> Failing:
        return self

    def __next__(self) -> dict[str, object]:
        if self.read == self.at:
            raise self.error
        if self.read >= self.n:
            raise StopIteration
        self.read += 1
        return contact(self.read - 1)

    def close(self) -> None:
        self.closed += 1


class MyStop(StopIteration):
    pass


@pytest.mark.parametrize("at", [0, 1, 37])
@pytest.mark.parametrize("error", [Boom("x"), Interrupt(), GeneratorExit(), RuntimeError("y")])
async def test_an_iterator_that_raises_from_next_keeps_the_account_and_is_raised(
    client: DiallerClient, emulator: Emulator, at: int, error: BaseException
) -> None:
    data = Failing(100, at, error)
    before = Snapshot.take(emulator)
    with pytest.raises(type(error)) as info:
        await asyncio.wait_for(client.import_contacts(data), LIMIT)
    assert info.value is error
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    # Rows read before the error and not yet started are CANCELLED (the job stops).
    assert not result.read_all and result.succeeded + result.cancelled == at
    assert result.total == at
    assert data.closed == 1
    assert no_job_tasks()


async def test_a_stopiteration_subclass_from_next_is_the_end_of_the_input(
    client: DiallerClient, emulator: Emulator
) -> None:
    data = Failing(100, 10, MyStop())
    result = await asyncio.wait_for(client.import_contacts(data, keep_results=True), LIMIT)
    assert_account(result, read=10)
    assert result.succeeded == 10 and result.read_all


async def test_a_generator_whose_close_raises_is_raised_with_the_account(
    client: DiallerClient, emulator: Emulator
) -> None:
    read = 0

    def gen() -> Iterator[dict[str, object]]:
        nonlocal read
        try:
            for n in range(1000):
                read += 1
                yield contact(n)
        finally:
            raise Boom("in close")

    with pytest.raises(Boom) as info:
        await asyncio.wait_for(client.import_contacts(gen(), max_failures=1, rate=None), LIMIT)
    # A generator that finished by itself raises from its finally too: either way it is raised.
    assert_account(bulk_result_of(info.value), read=read)


async def test_a_generator_whose_close_raises_when_stopped_early(
    client: DiallerClient, emulator: Emulator
) -> None:
    read = 0

    def gen() -> Iterator[dict[str, object]]:
        nonlocal read
        try:
            for n in range(1000):
                read += 1
                # Every 5th row is invalid: max_failures stops the job early.
                yield contact(n) if n % 5 else {"Name": ""}
        finally:
            raise Boom("in close")

    before = Snapshot.take(emulator)
    with pytest.raises(Boom) as info:
        await asyncio.wait_for(client.import_contacts(gen(), max_failures=3), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=read, emulator=emulator, before=before, upsert=True)
    assert not result.read_all and read < 1000


# -- the lean path: successes counted, not built -------------------------------------------------


async def test_lean_path_progress_every_row_and_max_failures(
    client: DiallerClient, emulator: Emulator
) -> None:
    reports: list[Progress] = []
    bad = {"Name": "", "UserData": "bad"}
    data = Counted([contact(n) if n % 7 else bad for n in range(200)])
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(
            data, on_progress=reports.append, progress_interval=0, max_failures=10
        ),
        LIMIT,
    )
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert result.items is None
    assert result.invalid >= 10 and not result.read_all
    assert reports[-1].finished and reports[-1].done == result.total
    dones = [r.done for r in reports]
    assert dones == sorted(dones)
    # Every row accounted reported (one report per row, plus the final one).
    assert len(reports) == result.total + 1
    assert len(emulator.store.all_contacts()) == result.succeeded + len(before.contacts)


async def test_lean_path_on_error_raise(client: DiallerClient, emulator: Emulator) -> None:
    data: Counted[dict[str, object]] = Counted([*rows(30), {"Name": ""}, *rows(300, 30)])
    before = Snapshot.take(emulator)
    with pytest.raises(BulkError) as info:
        await asyncio.wait_for(client.import_contacts(data, on_error="raise"), LIMIT)
    result = info.value.result
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert result.invalid == 1
    assert len(emulator.store.all_contacts()) == result.succeeded + len(before.contacts)


async def test_on_result_that_raises_midway_switches_to_the_lean_path_without_loss(
    client: DiallerClient, emulator: Emulator
) -> None:
    seen: list[int] = []

    def on_result(item: Any) -> None:
        seen.append(item.index)
        if len(seen) == 20:
            raise Boom("enough")

    data = Counted(rows(500))
    before = Snapshot.take(emulator)
    with pytest.raises(Boom) as info:
        await asyncio.wait_for(client.import_contacts(data, on_result=on_result), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert len(seen) == 20


# -- duplicate keys chained behind a slow row: memory stays bounded ------------------------------


async def test_rows_of_one_key_behind_a_slow_row_do_not_pull_the_input_in(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.configure(latency=0.05)
    same = [contact(1, Memo=f"v{n}") for n in range(200)]
    data = Counted(same)
    task = asyncio.create_task(client.import_contacts(data, concurrency=4))
    await asyncio.sleep(0.3)
    # One key: one row in flight at a time; the rows read and not yet sent are at most the
    # 2 x concurrency read slots (+1: the row on its way).
    sent = emulator.stats.requests.total()
    assert sent >= 2
    assert data.read <= sent + 4 * 2 + 1, (data.read, sent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(bulk_result_of(info.value), read=data.read)
    assert no_job_tasks()


# -- cancelling twice while the reader waits for a slot ------------------------------------------


@pytest.mark.parametrize("lean", [True, False])
async def test_cancel_twice_while_the_reader_waits_for_a_slot(
    client: DiallerClient, emulator: Emulator, lean: bool
) -> None:
    emulator.configure(latency=0.05)
    data = Counted(rows(1000))
    before = Snapshot.take(emulator)
    task = asyncio.create_task(
        client.import_contacts(data, concurrency=2, grace=10.0, keep_results=not lean)
    )
    while data.read < 4:  # 2 x 2 slots: the reader waits for a slot now
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert no_job_tasks()
    count = len(emulator.store.all_contacts())
    await asyncio.sleep(0.1)
    assert len(emulator.store.all_contacts()) == count, "writes after the job returned"


# -- a stream, ordered, with duplicates and a consumer that leaves -------------------------------


async def test_ordered_stream_with_chained_duplicates_and_an_early_exit(
    client: DiallerClient, emulator: Emulator
) -> None:
    data = Counted([contact(n % 5, Memo=str(n)) for n in range(300)])
    got: list[int] = []
    async with client.stream("import", data, ordered=True, concurrency=4) as results:
        async for item in results:
            got.append(item.index)
            if len(got) == 50:
                break
    assert got == list(range(50))
    assert_account(results.result, read=data.read)
    assert no_job_tasks()


# -- the transport's first attempt ---------------------------------------------------------------


async def test_the_retry_deadline_counts_the_first_attempt(clock: FakeClock) -> None:
    """A first attempt that took longer than the whole deadline is not retried."""
    calls = 0

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        clock.now += 100.0  # this attempt "took" 100 s of the 30 s deadline
        return web.json_response({"status": 503}, status=503)

    async with (
        serving(answer) as base_url,
        DiallerClient(
            base_url,
            7,
            "tok",
            retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=30.0),
            clock=clock,
            sleep=clock.sleep,
        ) as c,
    ):
        with pytest.raises(ServerError) as info:
            await asyncio.wait_for(c.get_contact(5), LIMIT)
    assert calls == 1
    assert info.value.attempts == 1


async def test_a_first_attempt_that_raises_a_foreign_error_releases_its_slot(
    client: DiallerClient,
) -> None:
    governor = client.transport.governor
    with pytest.raises(TypeError):
        await client.transport.call("POST", "/contacts", {"x": object()}, idempotent=True)
    assert governor.sending == 0 and governor._gate.held == 0


# -- pacing: the job's own rate with the governor's fast path ------------------------------------


async def test_a_job_rate_holds_with_the_fast_governor_path(
    emulator: Emulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emulator.client(
        limits=Limits(max_concurrency=8), clock=clock, sleep=clock.sleep
    ) as c:
        starts: list[float] = []
        request = c.transport.session.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            if JOB_LIMITER.get() is not None:  # an attempt made for the job
                starts.append(clock())
            return request(*args, **kwargs)

        monkeypatch.setattr(c.transport.session, "request", timed)

        async def singles() -> None:
            # Single calls on the same client are not the job's: they take the fast path.
            for n in range(20):
                await c.import_contact(contact(10_000 + n))

        data = Counted(rows(40))
        before = Snapshot.take(emulator)
        job = asyncio.create_task(c.import_contacts(data, rate=4, keep_results=True))
        await asyncio.wait_for(singles(), LIMIT)
        result = await asyncio.wait_for(job, LIMIT)
    assert_account(result, read=data.read)
    assert result.succeeded == 40
    assert len(before.contacts) + 60 == len(emulator.store.all_contacts())
    assert len(starts) == 40
    assert max_in_window(starts) <= 4 + 1, starts


async def test_the_job_rate_paces_only_the_jobs_starts(
    emulator: Emulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emulator.client(
        limits=Limits(max_concurrency=8), clock=clock, sleep=clock.sleep
    ) as c:
        starts: list[float] = []
        request = c.transport.session.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            starts.append(clock())
            return request(*args, **kwargs)

        monkeypatch.setattr(c.transport.session, "request", timed)
        data = Counted(rows(40))
        result = await asyncio.wait_for(c.import_contacts(data, rate=4), LIMIT)
    assert_account(result, read=data.read)
    assert len(starts) == result.requests == 40
    assert max_in_window(starts) <= 4 + 1, starts


async def test_the_client_rate_holds_on_the_fast_path(
    emulator: Emulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emulator.client(
        limits=Limits(max_concurrency=8, max_per_second=5), clock=clock, sleep=clock.sleep
    ) as c:
        starts: list[float] = []
        request = c.transport.session.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            starts.append(clock())
            return request(*args, **kwargs)

        monkeypatch.setattr(c.transport.session, "request", timed)
        data = Counted(rows(40))
        result = await asyncio.wait_for(c.import_contacts(data), LIMIT)
    assert_account(result, read=data.read)
    assert len(starts) == 40
    assert max_in_window(starts) <= 5 + 1, starts


# -- plain_import_body against the full conversion -----------------------------------------------


_BASE: dict[Any, Any] = {"Name": "Ann", "PhoneNumber1": "+4930123", "DiallerCampaignsID": 5}


def _full(row: Any, campaign_given: bool = False) -> dict[str, Any] | None:
    try:
        return checked_contact(row, campaign_given=campaign_given)[1]
    except ContactValidationError:
        return None


@pytest.mark.parametrize(
    "row",
    [
        {**_BASE, "Unknown": None},
        {**_BASE, "ID": None},
        {**_BASE, "name": None},
        {**_BASE, "DiallerCampaignsID": None, "DiallerCampaignsName": "Sales"},
        {**_BASE, "RandomSortOrder": 10**30},
        {**_BASE, "Name": "\u3000Ann"},
    ],
)
def test_short_path_gives_the_full_paths_body_or_steps_aside(row: dict[Any, Any]) -> None:
    short = plain_import_body(row, campaign_given=False)
    if short is not None:
        assert short == _full(row)


class Row(dict):  # type: ignore[type-arg]
    pass


def test_a_dict_subclass_takes_the_full_path() -> None:
    assert plain_import_body(Row(_BASE), campaign_given=False) is None
    assert _full(Row(_BASE)) == dict(_BASE)


# -- values no JSON can carry: a clear per-contact error before any request ----------------------


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize(
    "bad",
    [
        {"DiallerCampaignsID": 10**30},
        {"RandomSortOrder": -(2**63) - 1},
        {"RandomSortOrder": 2**64},
        {7: "text under an int key"},
    ],
)
async def test_a_value_json_cannot_carry_is_invalid_and_never_sent(
    client: DiallerClient, emulator: Emulator, overwrite: bool, bad: dict[Any, Any]
) -> None:
    data = [contact(0), {**contact(1), **bad}, contact(2)]
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(data, overwrite_duplicates=overwrite, keep_results=True), LIMIT
    )
    assert_account(result, read=3, emulator=emulator, before=before, upsert=overwrite)
    assert result.succeeded == 2
    (failure,) = result.failures
    # Nothing was sent: not AMBIGUOUS ("may have landed"), not an "internal error".
    assert failure.index == 1 and failure.outcome is Outcome.INVALID, failure
    assert "internal error" not in str(failure.error)
    assert emulator.stats.requests.total() == 2


# -- the checkpoint: resumed with re-ordered and edited rows, on the lean path -------------------


async def test_a_lean_run_cut_off_then_resumed_reordered_and_edited_writes_nothing_twice(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ck.db"
    emulator.configure(latency=0.01, faults={FaultKind.DROP_AFTER: 0.2}, seed=3)
    data = Counted(rows(400))
    task = asyncio.create_task(
        client.import_contacts(data, checkpoint=journal, overwrite_duplicates=False, grace=0.0)
    )
    while data.read < 120:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    first = bulk_result_of(info.value)
    assert_account(first, read=data.read)
    emulator.configure(latency=0.0, faults={})
    # Re-ordered, with an edited row (same UserData, new content) and a new row.
    second = [*rows(400)][::-1]
    second[5] = contact(394, Memo="edited")
    second.append(contact(5000))
    result = await asyncio.wait_for(
        client.import_contacts(second, checkpoint=journal, overwrite_duplicates=False), LIMIT
    )
    assert_account(result, read=len(second))
    by_key: dict[object, int] = {}
    for c in emulator.store.all_contacts():
        by_key[c.get("UserData")] = by_key.get(c.get("UserData"), 0) + 1
    twice = {k: n for k, n in by_key.items() if n > 1}
    # Row 394 was edited: if its first version landed, the edited one is a new contact by
    # design (new content); every other UserData must be on the server once.
    twice.pop("CRM-000394", None)
    assert not twice, twice
    assert len(by_key) == 401


async def test_a_third_run_after_two_cut_off_runs_skips_what_either_did(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ck.db"
    emulator.configure(latency=0.01)
    for stop_at in (60, 150):
        data = Counted(rows(300))
        task = asyncio.create_task(
            client.import_contacts(data, checkpoint=journal, overwrite_duplicates=False)
        )
        while data.read < stop_at:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await asyncio.wait_for(task, LIMIT)
        assert_account(bulk_result_of(info.value), read=data.read)
    emulator.configure(latency=0.0)
    done_before = len(emulator.store.all_contacts())
    result = await asyncio.wait_for(
        client.import_contacts(rows(300), checkpoint=journal, overwrite_duplicates=False), LIMIT
    )
    assert_account(result, read=300)
    assert result.ok and result.skipped == done_before
    assert len(emulator.store.all_contacts()) == 300


# -- 429s, then success: the fast path comes back and the account holds --------------------------


async def test_a_429_storm_then_success_on_the_fast_path(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.configure(faults={FaultKind.RATE_LIMITED: 0.5}, retry_after=0, seed=5)
    async with emulator.client(
        retry=RetryPolicy(
            initial_backoff=0.01, max_backoff=0.05, deadline=600.0, budget=None, max_attempts=60
        ),
        limits=Limits(max_concurrency=8),
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        data = Counted(rows(200))
        before = Snapshot.take(emulator)
        result = await asyncio.wait_for(c.import_contacts(data), LIMIT)
        assert result.throttled > 0
        assert c.transport.governor._throttled_since is None  # the storm is over
        assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
        assert result.succeeded == 200
        emulator.configure(faults={})
        again = await asyncio.wait_for(c.import_contacts(rows(50, 1000)), LIMIT)
        assert again.succeeded == 50 and again.throttled == 0


# -- the client closed while a lean job runs -----------------------------------------------------


async def test_closing_the_client_ends_a_lean_job_with_its_account(emulator: Emulator) -> None:
    client = DiallerClient(emulator.base_url, emulator.client_id, emulator.token, timeout=5)
    await client.__aenter__()
    emulator.configure(latency=0.01)
    data = Counted(rows(3000))
    before = Snapshot.take(emulator)
    task = asyncio.create_task(client.import_contacts(data))
    while data.read < 30:
        await asyncio.sleep(0.005)
    await asyncio.wait_for(client.aclose(), LIMIT)
    with pytest.raises(ClientStateError) as info:
        await asyncio.wait_for(task, LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert len(emulator.store.all_contacts()) <= result.succeeded + result.ambiguous
    assert no_job_tasks()


# -- an answer whose declared length is not what comes: the inline read must stay bounded --------


async def _raw_server(head: bytes, chunks: int) -> tuple[asyncio.Server, str]:
    """A loopback server writing ``head`` then ``chunks`` chunked MiB pieces to any request."""
    piece = b"x" * (1024 * 1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            writer.write(b'2a\r\n{"status":200,"records":[{"ID":1,"Name":"\r\n')
            for _ in range(chunks):
                writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/rest/v1.0"


@pytest.mark.parametrize("declared", [b"Content-Length: 10\r\n", b"Content-Length: 0\r\n"])
async def test_a_small_declared_length_beside_chunked_encoding_cannot_bypass_the_limit(
    declared: bytes,
) -> None:
    import tracemalloc

    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + declared
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    server, base = await _raw_server(head, 48)
    try:
        async with DiallerClient(
            base, 7, "tok", retry=RetryPolicy.never(), max_answer_bytes=2 * 1024 * 1024
        ) as c:
            tracemalloc.start()
            try:
                with pytest.raises(DiallerError):
                    await asyncio.wait_for(c.get_contact(1), LIMIT)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        server.close()
        await server.wait_closed()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a 48 MiB answer"


# -- the checkpoint's in-memory view of earlier runs ---------------------------------------------


@pytest.mark.parametrize("lean", [True, False])
async def test_rows_left_pending_are_checked_even_when_edited_and_reordered(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, lean: bool
) -> None:
    """A run died after sending (every entry PENDING); the next run has the rows re-ordered,
    some edited (new content, same UserData), and new rows: nothing is imported twice."""
    from .journal import edit_items

    path = tmp_path / "ck.db"
    first = await asyncio.wait_for(
        client.import_contacts(rows(50), checkpoint=path, overwrite_duplicates=False), LIMIT
    )
    assert first.succeeded == 50
    edit_items(path, "UPDATE items SET state='pending'")
    second = [contact(n, Memo="edited") if n % 5 == 0 else contact(n) for n in range(50)][
        ::-1
    ] + rows(5, 50)
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(
            second, checkpoint=path, overwrite_duplicates=False, keep_results=not lean
        ),
        LIMIT,
    )
    assert_account(result, read=55, emulator=emulator, before=before, upsert=False)
    assert result.ok, result.failures
    assert len(emulator.store.all_contacts()) == 55


async def test_the_error_of_the_last_attempt_does_not_drag_the_first_along(
    clock: FakeClock,
) -> None:
    """Before the inline first attempt, the error raised after retries chained nothing; it
    must not now carry the first attempt's error (and its frames: the answer it read) as
    ``__context__``."""
    calls = 0

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.json_response({"status": 503, "n": calls}, status=503)

    async with (
        serving(answer) as base_url,
        DiallerClient(
            base_url,
            7,
            "tok",
            retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=3),
            clock=clock,
            sleep=clock.sleep,
        ) as c,
    ):
        with pytest.raises(ServerError) as info:
            await asyncio.wait_for(c.get_contact(5), LIMIT)
    assert calls == 3 and info.value.attempts == 3
    assert info.value.__context__ is None, repr(info.value.__context__)


def _mixed_rows() -> list[dict[str, object]]:
    """Duplicates (chained and not), invalid rows and plain ones."""
    out: list[dict[str, object]] = []
    for n in range(300):
        if n % 11 == 0:
            out.append({"Name": "", "UserData": f"CRM-{n:06d}"})
        elif n % 7 == 0:
            out.append(contact(n % 13, Memo=str(n)))
        else:
            out.append(contact(n))
    return out


async def test_the_lean_account_is_the_kept_account(
    client: DiallerClient, emulator: Emulator
) -> None:
    lean = await asyncio.wait_for(client.import_contacts(_mixed_rows()), LIMIT)
    kept = await asyncio.wait_for(client.import_contacts(_mixed_rows(), keep_results=True), LIMIT)
    assert_account(lean, read=300)
    assert_account(kept, read=300)
    assert lean.items is None and kept.items is not None
    assert lean.counts == kept.counts
    assert lean.duplicates_in_input == kept.duplicates_in_input > 0
    assert [f.index for f in lean.failures] == [f.index for f in kept.failures]
    assert sum(i.duplicate_in_input for i in kept.items) == kept.duplicates_in_input


@pytest.mark.parametrize("at", [0, 25])
async def test_a_stream_over_an_iterator_that_raises_gives_every_row_then_the_error(
    client: DiallerClient, emulator: Emulator, at: int
) -> None:
    data = Failing(100, at, Boom("feed"))
    got: list[int] = []
    results = client.stream("import", data, ordered=True)

    async def consume() -> None:
        async with results:
            async for item in results:
                got.append(item.index)

    with pytest.raises(Boom):
        await asyncio.wait_for(consume(), LIMIT)
    # Rows read before the error and not yet started are handed over as CANCELLED.
    assert got == list(range(at))
    assert_account(results.result, read=data.read)
    assert no_job_tasks()


async def test_a_progress_callback_that_raises_only_on_the_final_report(
    client: DiallerClient, emulator: Emulator
) -> None:
    def on_progress(progress: Progress) -> None:
        if progress.finished:
            raise Boom("at the end")

    data = Counted(rows(100))
    before = Snapshot.take(emulator)
    with pytest.raises(Boom) as info:
        await asyncio.wait_for(
            client.import_contacts(data, on_progress=on_progress, progress_interval=0), LIMIT
        )
    result = bulk_result_of(info.value)
    assert_account(result, read=100, emulator=emulator, before=before, upsert=True)
    assert result.succeeded == 100 and result.read_all
    assert no_job_tasks()


async def test_an_update_job_mixing_ids_and_user_data_cancelled_twice_keeps_its_account(
    client: DiallerClient, emulator: Emulator
) -> None:
    ids = []
    for n in range(60):
        record = contact(n)
        emulator.store.insert(emulator.client_id, record)
        ids.append(record["ID"])
    emulator.configure(latency=0.02)
    updates: list[dict[str, object]] = []
    for n in range(600):
        k = n % 60
        # The same contact by ID and by UserData, alternating: the key gate keeps them apart.
        key: dict[str, object] = {"ID": ids[k]} if n % 2 else {"UserData": f"CRM-{k:06d}"}
        updates.append({**key, "Memo": f"m{n}"})
    data = Counted(updates)
    before = Snapshot.take(emulator)
    task = asyncio.create_task(client.update_contacts(data, concurrency=6, grace=5.0))
    while data.read < 80:
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(bulk_result_of(info.value), read=data.read, emulator=emulator, before=before)
    assert no_job_tasks()


async def test_an_ordered_stream_of_one_key_with_a_slow_consumer_cancelled_twice(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.configure(latency=0.005)
    data = Counted([contact(n % 3, Memo=str(n)) for n in range(400)])
    got: list[int] = []

    async def consume() -> None:
        async with client.stream("import", data, ordered=True, concurrency=4) as results:
            async for item in results:
                got.append(item.index)
                await asyncio.sleep(0.002)

    task = asyncio.create_task(consume())
    while len(got) < 30:
        await asyncio.sleep(0.005)
    await cancel_twice(task, LIMIT)
    assert got == list(range(len(got)))
    assert no_job_tasks()


# -- CancelledError raised by the caller's code, not by a cancellation -------------------------


class CancelsAsync:
    """An async input whose __anext__ raises CancelledError at row ``at`` without anybody
    cancelling the job (as awaiting a future someone else cancelled does)."""

    def __init__(self, n: int, at: int) -> None:
        self.n, self.at, self.read = n, at, 0

    def __aiter__(self) -> CancelsAsync:
        return self

    async def __anext__(self) -> dict[str, object]:
        if self.read == self.at:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # raises CancelledError; this task was not cancelled
        if self.read >= self.n:
            raise StopAsyncIteration
        self.read += 1
        return contact(self.read - 1)


@pytest.mark.parametrize("source", ["sync", "async"])
async def test_an_input_that_raises_cancelled_error_is_not_a_silent_end(
    client: DiallerClient, emulator: Emulator, source: str
) -> None:
    data: Any = (
        Failing(500, 50, asyncio.CancelledError()) if source == "sync" else CancelsAsync(500, 50)
    )
    before = Snapshot.take(emulator)
    with pytest.raises(RuntimeError, match="CancelledError") as info:
        await asyncio.wait_for(client.import_contacts(data), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert not result.read_all and result.total == 50
    assert no_job_tasks()


@pytest.mark.parametrize("callback", ["on_result", "on_progress"])
async def test_a_callback_that_raises_cancelled_error_neither_hangs_nor_kills_a_worker(
    client: DiallerClient, emulator: Emulator, callback: str
) -> None:
    def raising(_: object) -> None:
        raise asyncio.CancelledError

    data = Counted(rows(300))
    before = Snapshot.take(emulator)
    options: dict[str, Any] = {callback: raising, "concurrency": 2}
    if callback == "on_progress":
        options["progress_interval"] = 0
    with pytest.raises(RuntimeError, match="CancelledError") as info:
        await asyncio.wait_for(client.import_contacts(data, **options), 10.0)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert not result.read_all
    assert no_job_tasks()


async def test_a_send_that_raises_cancelled_error_without_a_cancel_costs_one_row_not_a_worker(
    client: DiallerClient, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library under the transport raising CancelledError though nobody cancelled the job:
    each such row ended its worker, and with every worker gone the job hung."""
    transport = client.transport
    send = transport.send  # each row's first attempt (the engine makes it itself)
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls % 10 == 3:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        return await send(*args, **kwargs)

    monkeypatch.setattr(transport, "send", flaky)
    data = Counted(rows(100))
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(data, concurrency=2, keep_results=True), 10.0
    )
    assert_account(result, read=100, emulator=emulator, before=before, upsert=True)
    assert result.read_all and result.succeeded == 90
    assert all("CancelledError" in str(f.error) for f in result.failures)
    assert no_job_tasks()


_WIDE_KEYS = st.one_of(
    st.sampled_from([f.api for f in F.IMPORT_FIELDS] + ["ID", "Unknown", "name", "Memo"]),
    st.integers(-3, 3),
    st.none(),
)
_WIDE_VALUES = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["Ann", "+4930123", " "]),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.booleans(),
)
_VALID = {"Name": "Ann", "PhoneNumber1": "+4930123", "DiallerCampaignsID": 5}


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(_WIDE_KEYS, _WIDE_VALUES, max_size=4), given_=st.booleans())
def test_short_path_on_wide_rows_is_the_full_path_or_steps_aside(
    extra: dict[Any, Any], given_: bool
) -> None:
    row = {**_VALID, **extra}
    short = plain_import_body(row, campaign_given=given_)
    full = _full(row, given_)
    if short is not None:
        assert short == full
    if full is not None:
        orjson.dumps(full)  # what validation passes can be sent


class Exploding(dict):  # type: ignore[type-arg]
    """A row whose reading raises a BaseException (as a framework's abort signal may)."""

    error: BaseException = Interrupt()

    def __iter__(self) -> Any:
        raise self.error

    def keys(self) -> Any:
        raise self.error

    def items(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "raised"), [(Interrupt(), Interrupt), (asyncio.CancelledError(), RuntimeError)]
)
async def test_a_row_whose_reading_raises_a_base_exception_keeps_the_account(
    client: DiallerClient, emulator: Emulator, error: BaseException, raised: type[BaseException]
) -> None:
    row = Exploding(contact(5))
    row.error = error
    data = Counted([*rows(5), row, *rows(50, 6)])
    before = Snapshot.take(emulator)
    with pytest.raises(raised) as info:
        await asyncio.wait_for(client.import_contacts(data, keep_results=True), LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert result.items is not None and result.items[5].outcome is Outcome.INVALID
    assert no_job_tasks()


@pytest.mark.parametrize("after", [1, 7, 33, 90])
async def test_an_abort_with_no_grace_at_any_moment_keeps_every_row_once(
    client: DiallerClient, emulator: Emulator, after: int
) -> None:
    emulator.configure(latency=0.003)
    data = Counted(rows(400))
    before = Snapshot.take(emulator)
    task = asyncio.create_task(client.import_contacts(data, concurrency=8, grace=0.0))
    while data.read < after:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    result = bulk_result_of(info.value)
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    created = len(emulator.store.all_contacts()) - len(before.contacts)
    assert created <= result.succeeded + result.ambiguous
    assert no_job_tasks()
