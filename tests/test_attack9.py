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
    s = client.stream(Operation.IMPORT, rows(40), concurrency=2, keep_results=True)
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


# The BaseException probes run in a child process: the "Task exception was never retrieved"
# traceback the engine leaves behind trips a CPython 3.11.7 bug (gh-106905, "AST constructor
# recursion depth mismatch") that then crashes the whole pytest session.
_CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
from dialler_async import DiallerClient
from dialler_async.emulator import Emulator, EmulatorConfig
from tests.conftest import contact
from tests.invariants import Counted, assert_account

class Boom(BaseException):
    pass

async def main():
    async with Emulator(EmulatorConfig()) as emu:
        async with DiallerClient(emu.base_url, emu.client_id, emu.token) as client:
{body}
            try:
                await asyncio.wait_for(job, 20)
            except BaseException as exc:
                print("RAISED", type(exc).__name__, exc)
                assert_account(exc.bulk_result, read=data.read)
                print("ACCOUNT OK")
            else:
                print("RETURNED")
            left = [t for t in asyncio.all_tasks() if t.get_name().startswith("dialler-bulk")
                    and not t.done()]
            print("TASKS", len(left))

asyncio.run(main())
"""


def _child(body: str) -> str:
    import subprocess
    import sys
    from pathlib import Path
    from textwrap import indent

    root = str(Path(__file__).resolve().parent.parent)
    code = _CHILD.format(root=root, body=indent(body.strip("\n"), " " * 12))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


# -- BREAK 2: a BaseException subclass from the input iterator is swallowed -------------------
# `_read` catches only Exception; the Boom kills the reader task, the TaskGroup raises a
# BaseExceptionGroup that `_drive` does not catch (`except ExceptionGroup`), and the job ends
# with "internal error: N items were left over" (or returns normally when nothing was in
# flight): the caller's exception is lost ("Task exception was never retrieved").
def test_a_base_exception_from_the_input_is_raised_with_the_account() -> None:
    out = _child("""
def rows():
    for i in range(10):
        yield contact(i)
    raise Boom("the caller aborts")
data = Counted(rows())
job = client.import_contacts(data, keep_results=True)
""")
    assert "RAISED Boom the caller aborts" in out and "ACCOUNT OK" in out, out
    assert "TASKS 0" in out and "never retrieved" not in out, out


# -- BREAK 3: a BaseException subclass from on_progress is lost, the account is cut ----------
# `_report` catches only Exception: the Boom escapes `_account` in a worker, which dies with
# its chain; the caller gets "internal error ... left over" instead of Boom. (Raised from the
# final report in `_finish`, it would also skip `handover.end()`: a stream consumer hangs.)
def test_a_base_exception_from_on_progress_is_raised_with_the_account() -> None:
    out = _child("""
calls = []
def on_progress(p):
    calls.append(p)
    if len(calls) == 3:
        raise Boom("stop now")
data = Counted([contact(i) for i in range(50)])
job = client.import_contacts(data, on_progress=on_progress, progress_interval=0, keep_results=True)
""")
    assert "RAISED Boom stop now" in out and "ACCOUNT OK" in out, out
    assert "TASKS 0" in out and "never retrieved" not in out, out


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
    s = client.stream(
        Operation.IMPORT, data, concurrency=2, max_failures=1, grace=0.2, keep_results=True
    )
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
        Operation.IMPORT,
        data,
        concurrency=2,
        max_failures=1,
        grace=0.2,
        ordered=True,
        keep_results=True,
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
    data: Counted[Any] = Counted([contact(0), {"Name": ""}, *rows(5, 1)])
    result = await asyncio.wait_for(
        client.import_contacts(data, concurrency=2, max_failures=1, grace=0.1, keep_results=True),
        LIMIT,
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
    task = asyncio.create_task(client.import_contacts(data, concurrency=2, keep_results=True))
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
    result = await asyncio.wait_for(client.lock_contacts(ids=[1, 2**61], keep_results=True), LIMIT)
    assert_account(result, read=2)
    assert result.items is not None
    assert not result.items[1].duplicate_in_input


# -- BREAK 9: a resend after a resumed check does not refresh the settle clock ---------------
# Run 1 was killed after journaling PENDING (long ago). Run 2 checks, finds nothing, RESENDS,
# and is stopped while that resend is still on the server: it journals AMBIGUOUS but the upsert
# keeps run 1's `at` (CASE ... items.state = 'pending' THEN items.at). Run 3, at once, takes the
# entry as settled, finds nothing (run 2's resend is still being applied) and sends a third
# time: two contacts for one row of a plain import.
async def test_a_resumed_resend_restarts_the_settle_time(emulator: Emulator, tmp_path: Any) -> None:
    from .journal import edit_items

    journal = tmp_path / "ck.db"
    opts: dict[str, Any] = {"overwrite_duplicates": False, "checkpoint": journal}
    async with DiallerClient(
        emulator.base_url, emulator.client_id, emulator.token, timeout=3.0
    ) as client:
        first = await asyncio.wait_for(client.import_contacts([contact(0)], **opts), LIMIT)
        assert first.succeeded == 1
        # Simulate: run 1 was SIGKILLed after PENDING, long ago, and its write never landed.
        edit_items(journal, "UPDATE items SET state='pending', at=at-1000")
        await client.delete_contact(user_data="CRM-000000")

        emulator.faults.script("slow", times=1, operation="import_contact")
        emulator.configure(slow_seconds=2.0)
        run2 = asyncio.create_task(client.import_contacts([contact(0)], grace=0.1, **opts))
        while emulator.faults.pending:
            await asyncio.sleep(0.01)  # run 2's resend is now held on the server
        run2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run2, LIMIT)

        await asyncio.wait_for(client.import_contacts([contact(0)], **opts), LIMIT)
        await emulator.faults.settled()
        found = await client.find_contacts("CRM-000000")
        assert len(found) == 1, f"{len(found)} contacts for one row of a plain import"


# -- probes that are expected to hold (regressions if they ever fail) -----------------------


async def test_cancel_three_times_while_resolving_the_campaign(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script("slow", times=5)
    emulator.configure(slow_seconds=3.0)
    task = asyncio.create_task(
        client.import_contacts(rows(5), campaign_name="Sales", keep_results=True)
    )
    for _ in range(3):
        await asyncio.sleep(0.1)
        task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(info.value.bulk_result, read=0)  # type: ignore[attr-defined]
    assert not job_tasks()
    await emulator.faults.settled()


# BREAK 6b (same root cause as BREAK 6, through the CLI's path): two cancels during the grace
# of an upsert job with slow rows; the second cancel sweeps the in-flight upserts as CANCELLED
# and they land afterwards (e.g. "26 contacts created, only 18 reported as written").
async def test_cancel_twice_during_the_grace_with_a_checkpoint(
    client: DiallerClient, emulator: Emulator, tmp_path: Any
) -> None:
    emulator.configure(slow_seconds=3.0, faults={"slow": 0.3}, seed=3)
    data = Counted(rows(200))
    before = Snapshot.take(emulator)
    task = asyncio.create_task(
        client.import_contacts(data, checkpoint=tmp_path / "ck.db", grace=30, keep_results=True)
    )
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.sleep(0.2)
    task.cancel()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(task, LIMIT)
    result = info.value.bulk_result  # type: ignore[attr-defined]
    await emulator.faults.settled()
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert not job_tasks()
    emulator.configure(faults={})
    again = await asyncio.wait_for(
        client.import_contacts(rows(200), checkpoint=tmp_path / "ck.db", keep_results=True), LIMIT
    )
    assert again.succeeded + again.skipped == 200


async def test_stream_misuse_after_the_end(client: DiallerClient) -> None:
    s = client.stream(Operation.IMPORT, rows(10), keep_results=True)
    got = [r async for r in s]
    assert len(got) == 10
    with pytest.raises(StopAsyncIteration):
        await s.__anext__()
    await s.aclose()
    await s.aclose()
    assert [r async for r in s] == []
    s2 = client.stream(Operation.IMPORT, rows(10), keep_results=True)
    await s2.aclose()
    assert [r async for r in s2] == []
    assert s2.result.total == 0
    assert not job_tasks()


async def test_a_job_on_a_closed_client(emulator: Emulator) -> None:
    from dialler_async import ClientStateError

    client = DiallerClient(emulator.base_url, emulator.client_id, emulator.token)
    async with client:
        pass
    with pytest.raises(ClientStateError):
        await asyncio.wait_for(client.import_contacts(rows(3), keep_results=True), LIMIT)
    with pytest.raises(ClientStateError):
        async for _ in client.stream(Operation.IMPORT, rows(3), keep_results=True):
            pass
    assert not job_tasks()


async def test_client_closed_while_a_stream_is_iterated_elsewhere(emulator: Emulator) -> None:
    from dialler_async import ClientStateError

    client = DiallerClient(emulator.base_url, emulator.client_id, emulator.token, timeout=5)
    await client.__aenter__()
    emulator.configure(latency=0.01)
    data = Counted(rows(2000))
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for _ in client.stream(Operation.IMPORT, data, keep_results=True):
            seen += 1

    task = asyncio.create_task(consume())
    while seen < 20:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(client.aclose(), LIMIT)
    with pytest.raises(ClientStateError) as info:
        await asyncio.wait_for(task, LIMIT)
    assert_account(info.value.bulk_result, read=data.read)  # type: ignore[attr-defined]
    assert not job_tasks()


class BadIter:
    def __init__(self, where: str) -> None:
        self.where = where
        self.n = 0

    def __iter__(self) -> BadIter:
        if self.where == "iter":
            raise ValueError("iter")
        return self

    def __next__(self) -> dict[str, object]:
        if self.n == 5:
            if self.where == "next":
                raise ValueError("next")
            raise StopIteration
        self.n += 1
        return contact(self.n)

    def close(self) -> None:
        if self.where == "close":
            raise ValueError("close")


@pytest.mark.parametrize("where", ["iter", "next", "close"])
async def test_input_errors_are_raised_with_the_account(client: DiallerClient, where: str) -> None:
    data = BadIter(where)
    with pytest.raises(ValueError, match=where) as info:
        await asyncio.wait_for(client.import_contacts(data, keep_results=True), LIMIT)
    assert_account(info.value.bulk_result, read=data.n)  # type: ignore[attr-defined]
    assert not job_tasks()


async def test_a_non_iterable_input(client: DiallerClient) -> None:
    with pytest.raises(TypeError) as info:
        await asyncio.wait_for(client.import_contacts(42, keep_results=True), LIMIT)  # type: ignore[arg-type]
    assert_account(info.value.bulk_result, read=0)  # type: ignore[attr-defined]


async def test_a_checkpoint_that_is_a_directory(client: DiallerClient, tmp_path: Any) -> None:
    from dialler_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        await asyncio.wait_for(
            client.import_contacts(rows(3), checkpoint=tmp_path, keep_results=True), LIMIT
        )
    assert not job_tasks()


async def test_a_full_disk_at_mark_pending(
    client: DiallerClient, emulator: Emulator, tmp_path: Any, monkeypatch: Any
) -> None:
    import sqlite3

    from dialler_async import CheckpointError
    from dialler_async._checkpoint import Checkpoint

    calls = 0
    real = Checkpoint.mark_pending

    def full(self: Checkpoint, *a: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            self._pending.append(("x",))
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.Error as exc:
                raise CheckpointError(str(exc)) from None
        real(self, *a)

    monkeypatch.setattr(Checkpoint, "mark_pending", full)
    before = Snapshot.take(emulator)
    data = Counted(rows(100))
    with pytest.raises(CheckpointError) as info:
        await asyncio.wait_for(
            client.import_contacts(
                data, overwrite_duplicates=False, checkpoint=tmp_path / "ck.db", keep_results=True
            ),
            LIMIT,
        )
    result = info.value.bulk_result  # type: ignore[attr-defined]
    assert_account(result, read=data.read, emulator=emulator, before=before, upsert=False)
    assert not job_tasks()


# -- BREAK 10: on_progress raising StopAsyncIteration ends a stream as if it were complete ----
# `_fail(StopAsyncIteration())` is re-raised by BulkStream.__anext__, which Python reads as
# "iteration finished": the consumer sees a normal end after a few rows, no error, and the
# rest of the input silently not done. (PEP 479 turns the same mistake into RuntimeError.)
async def test_stop_async_iteration_from_on_progress_is_not_a_normal_end(
    client: DiallerClient,
) -> None:
    calls = 0

    def on_progress(p: Progress) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StopAsyncIteration

    data = Counted(rows(300))
    s = client.stream(
        Operation.IMPORT, data, on_progress=on_progress, progress_interval=0, keep_results=True
    )
    seen = 0
    error: BaseException | None = None
    try:
        async with s:
            async for _ in s:
                seen += 1
    except BaseException as exc:
        error = exc
    assert_account(s.result, read=data.read)
    assert error is not None or s.result.total == 300, (
        f"stream ended normally after {seen} of 300 rows"
    )


# -- BREAK 11: an async on_progress is accepted and never run --------------------------------
# `callable(on_progress)` is true for an `async def`, so the job calls it, drops the coroutine
# (RuntimeWarning "never awaited") and the caller never gets a single progress report.
# Expected: rejected up front with TypeError, or awaited.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
async def test_an_async_on_progress_is_rejected_or_awaited(client: DiallerClient) -> None:
    got: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        got.append(p)

    try:
        result = await asyncio.wait_for(
            client.import_contacts(
                rows(20), on_progress=on_progress, progress_interval=0, keep_results=True
            ),
            LIMIT,
        )
    except TypeError:
        return
    gc.collect()
    assert_account(result, read=20)
    assert got, "an async on_progress was called 20+ times and never ran"


async def test_max_failures_with_chained_duplicate_keys(
    client: DiallerClient, emulator: Emulator
) -> None:
    nope: list[Any] = [{"UserData": "NOPE", "Name": f"x{i}"} for i in range(30)]
    data = Counted(nope + rows(30))
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.update_contacts(data, max_failures=3, concurrency=1, keep_results=True), LIMIT
    )
    assert_account(result, read=data.read, emulator=emulator, before=before)
    assert not job_tasks()


@pytest.mark.parametrize("ordered", [False, True])
async def test_concurrency_one_early_break(
    client: DiallerClient, emulator: Emulator, ordered: bool
) -> None:
    emulator.configure(latency=0.005)
    data = Counted(rows(500))
    before = Snapshot.take(emulator)
    s = client.stream(Operation.IMPORT, data, concurrency=1, ordered=ordered, keep_results=True)
    async with s:
        async for r in s:
            if r.index == 5:
                break
    n = len(emulator.store.all_contacts())
    await asyncio.sleep(0.2)
    assert len(emulator.store.all_contacts()) == n, "writes after the stream was closed"
    assert_account(s.result, read=data.read, emulator=emulator, before=before, upsert=True)
    assert data.read <= 20
    assert not job_tasks()


async def test_bare_break_without_async_with_stops_sending(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.configure(latency=0.005)
    data = Counted(rows(2000))
    async for r in client.stream(
        Operation.IMPORT, data, concurrency=4, grace=0.5, keep_results=True
    ):
        if r.index >= 3:
            break
    gc.collect()
    for _ in range(100):
        if not job_tasks():
            break
        await asyncio.sleep(0.05)
    n = len(emulator.store.all_contacts())
    await asyncio.sleep(0.3)
    assert len(emulator.store.all_contacts()) == n
    assert data.read < 40 and not job_tasks()


# -- BREAK 12: an input that reuses one mutable row object sends the wrong rows -------------
# The reader pulls up to 2 x concurrency rows ahead and a worker prepares (validates and
# serialises) each one only later, so a feed that refills one dict per row (a common cursor /
# parser pattern) has row 0 sent with the contents of a later row: some contacts are written
# twice, others never, and the account says every row SUCCEEDED. Preparing at read time (or
# copying the row) keeps each row what it was when it was handed over.
async def test_a_reused_row_object_is_taken_as_it_was_when_read(
    client: DiallerClient, emulator: Emulator
) -> None:
    def feed() -> Iterator[dict[str, object]]:
        row: dict[str, object] = {}
        for i in range(20):
            row.clear()
            row.update(contact(i))
            yield row

    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts(feed(), concurrency=2, keep_results=True), LIMIT
    )
    assert_account(result, read=20, emulator=emulator, before=before, upsert=True)
    on_server = sorted(c.user_data or "" for c in await client.list_contacts())
    assert on_server == [f"CRM-{i:06d}" for i in range(20)], on_server


async def test_a_checkpoint_in_use_by_another_process(client: DiallerClient, tmp_path: Any) -> None:
    import subprocess
    import sys

    from dialler_async import ConfigurationError

    journal = tmp_path / "ck.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(journal)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigurationError, match="in use"):
            await asyncio.wait_for(
                client.import_contacts(rows(3), checkpoint=journal, keep_results=True), LIMIT
            )
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    result = await asyncio.wait_for(
        client.import_contacts(rows(3), checkpoint=journal, keep_results=True), LIMIT
    )
    assert_account(result, read=3)
    assert not job_tasks()
