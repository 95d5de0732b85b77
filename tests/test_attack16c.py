"""Attack on the ticking attempt deadlines (commit 32564c1, ``_deadlines.AttemptDeadlines``).

A deadline is a time limit: it must neither come early when the loop's timers fire early
(uvloop rounds a timer to whole milliseconds) nor stretch when they fire late (a loop kept
busy by a slow callback), and a hostile caller (cancellations, outer timeouts, task groups,
slow servers in bulk jobs) must find the account exact and no cancellation left behind.

What is asserted about time is a lower bound, or a bound in loop iterations that load can
only make easier to meet (a blocked iteration is never shorter than its block).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from aiohttp import web

from dialler_async import (
    DiallerClient,
    ItemResult,
    Limits,
    Outcome,
    RequestTimeoutError,
    RetryPolicy,
)
from dialler_async._adaptive import Signal
from dialler_async._deadlines import AttemptDeadlines
from dialler_async.emulator import Emulator, FaultKind

from .conftest import contact, serving
from .invariants import Counted, Snapshot, assert_account, bulk_result_of, no_job_tasks
from .test_deadlines import _attempt, _pass_the_deadlines

TIMEOUT = 0.05


class _ManualLoop:
    """The two things a tick asks of its loop, with time set by the test (the ticks are
    driven by hand: no timer of the real loop is involved)."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        pass


async def _armed_by_hand(deadlines: AttemptDeadlines) -> asyncio.Task[str]:
    """An attempt in flight whose ticks the test drives (no real tick is scheduled)."""
    deadlines._ticking = True  # the test is the ticker
    task = asyncio.create_task(_attempt(deadlines, 1000.0))
    await asyncio.sleep(0)
    assert len(deadlines) == 1
    return task


# -- time, not ticks ---------------------------------------------------------------------------


async def test_ticks_that_fire_early_do_not_make_a_timeout_early() -> None:
    """uvloop rounds a timer's delay to whole milliseconds: a tick of 1.4 ms fires after 1 ms.
    Counting 65 ticks then made a 90 ms timeout fire after ~65 ms. Here 200 ticks come within
    a fifth of the timeout: the attempt is not over its time."""
    deadlines = AttemptDeadlines(1.0)
    task = await _armed_by_hand(deadlines)
    loop = _ManualLoop()
    for _ in range(200):
        loop.now += 0.001
        deadlines._on_tick(loop)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not task.done() and task.cancelling() == 0, "timed out after 0.2 s of a 1 s timeout"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_ticks_that_fire_late_do_not_stretch_a_timeout() -> None:
    """A loop blocked by a slow callback runs its timers late: ticks 1 s apart for a 1 s
    timeout. Counting 65 ticks made the attempt wait 65 s; its time is over after two."""
    deadlines = AttemptDeadlines(1.0)
    task = await _armed_by_hand(deadlines)
    loop = _ManualLoop()
    for _ in range(3):
        loop.now += 1.0
        deadlines._on_tick(loop)  # type: ignore[arg-type]
    for _ in range(5):  # the cancellation is delivered, the attempt turns it into a timeout
        await asyncio.sleep(0)
    assert task.done(), "not timed out 3 s into a 1 s timeout"
    assert task.result() == "timed out"
    assert task.cancelling() == 0


async def test_a_busy_loop_does_not_stretch_a_real_deadline() -> None:
    """The same on a real loop: a callback blocks it 10 ms per iteration. A 50 ms deadline is
    over after ~6 such iterations (load only makes each longer); counting 65 ticks, each at
    most one per iteration, took 65 or more."""
    deadlines = AttemptDeadlines(TIMEOUT)
    loop = asyncio.get_running_loop()
    blocks = 0
    done = False

    def busy() -> None:
        nonlocal blocks
        if done:
            return
        time.sleep(0.01)
        blocks += 1
        loop.call_soon(busy)

    started = loop.time()
    task = asyncio.create_task(_attempt(deadlines, 1000.0))
    loop.call_soon(busy)
    try:
        assert await task == "timed out"
    finally:
        done = True
    assert loop.time() - started >= TIMEOUT  # never early
    assert blocks < 30, f"the deadline took {blocks} blocked iterations"
    assert task.cancelling() == 0


def test_never_early_on_uvloop() -> None:
    """On uvloop, timeouts whose tick rounds down (90 ms: 1.4 ms ticks fire after 1 ms) are
    never early by the loop's clock."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        elapsed = []
        for timeout in (0.09, 0.0896):
            deadlines = AttemptDeadlines(timeout)
            for _ in range(3):
                started = loop.time()
                assert await _attempt(deadlines, 1000.0) == "timed out"
                elapsed.append((loop.time() - started) / timeout)
        return elapsed

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        ratios = runner.run(main())
    # (uvloop's clock counts whole milliseconds: the slack is for float rounding only)
    assert min(ratios) >= 1.0 - 1e-9, f"timed out early: {ratios}"


# -- single calls over HTTP --------------------------------------------------------------------

RECORD = {"ID": 1, "Name": "Ann", "PhoneNumber1": "+49301", "DiallerCampaignsID": 5}


def _slow_then_fast(slow: int, delay: float = 1.0) -> tuple[list[int], Any]:
    """A handler answering its first ``slow`` requests after ``delay``, the rest at once; and
    the list its request count is kept in."""
    seen = [0]

    async def answer(request: web.Request) -> web.StreamResponse:
        seen[0] += 1
        if seen[0] <= slow:
            await asyncio.sleep(delay)
        return web.json_response({"records": [RECORD], "count": 1, "status": 200})

    return seen, answer


def _no_cancellation_left(client: DiallerClient) -> None:
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert len(client.transport.deadlines) == 0


async def test_many_single_calls_gathered_from_one_task_all_time_out() -> None:
    _, answer = _slow_then_fast(10_000)
    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=0.1) as c,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(c.get_contact(1) for _ in range(30)), return_exceptions=True
        )
        assert loop.time() - started >= 0.1
        assert all(isinstance(r, RequestTimeoutError) for r in results), results
        # Thirty connections opened at once on a loaded machine: some may not connect within
        # the 0.1 s connect limit (min(timeout, 10 s)); those say so. Every other one was sent.
        for r in results:
            assert isinstance(r, RequestTimeoutError)
            assert r.request_sent or "connect timed out" in str(r), r
        _no_cancellation_left(c)


async def test_a_retry_after_a_timeout_is_armed_again_and_answers() -> None:
    seen, answer = _slow_then_fast(2)
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0)
    async with (
        serving(answer) as base_url,
        # 0.3 s: the answer that comes at once must not time out on a loaded machine
        DiallerClient(base_url, 7, "tok", retry=retry, timeout=0.3) as c,
    ):
        assert (await c.get_contact(1)).id == 1
        assert seen[0] == 3
        _no_cancellation_left(c)


async def test_a_timed_out_attempt_tells_the_adaptive_limit_congested() -> None:
    """As before the commit: a timeout is a sign of overload (Signal.CONGESTED)."""
    _, answer = _slow_then_fast(1)
    limits = Limits(adaptive_concurrency=True)
    async with (
        serving(answer) as base_url,
        DiallerClient(
            base_url, 7, "tok", retry=RetryPolicy.never(), timeout=0.3, limits=limits
        ) as c,
    ):
        governor = c.transport.governor
        signals: list[Signal] = []

        class Recording:
            """The governor, noting what each attempt's end tells it."""

            def __getattr__(self, name: str) -> Any:
                return getattr(governor, name)

            def release(
                self, started: float | None = None, signal: Signal = Signal.NEUTRAL
            ) -> None:
                signals.append(signal)
                governor.release(started, signal)

        c.transport.governor = Recording()  # type: ignore[assignment]
        with pytest.raises(RequestTimeoutError):
            await c.get_contact(1)
        assert (await c.get_contact(1)).id == 1
        assert signals[0] is Signal.CONGESTED and signals[1] is not Signal.CONGESTED
        _no_cancellation_left(c)


@pytest.mark.parametrize("order", ["deadline first", "cancel first"])
async def test_a_deadline_and_a_cancel_in_the_same_turn_over_http(order: str) -> None:
    """The caller cancels a call in the same loop turn as its deadline passes: the caller's
    cancellation wins (CancelledError, counted once), the client goes on."""
    seen, answer = _slow_then_fast(1)
    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=5.0) as c,
    ):
        task = asyncio.create_task(c.get_contact(1))
        while seen[0] == 0:  # the request is at the server: the attempt is armed
            await asyncio.sleep(0.005)
        deadlines = c.transport.deadlines
        assert len(deadlines) == 1
        if order == "deadline first":
            _pass_the_deadlines(deadlines)
            task.cancel()
        else:
            task.cancel()
            _pass_the_deadlines(deadlines)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelling() == 1
        assert (await c.get_contact(1)).id == 1
        _no_cancellation_left(c)


async def test_a_deadline_and_an_outer_timeout_in_the_same_turn() -> None:
    """asyncio.timeout around the call expires in the same turn as the attempt's deadline:
    the outer timeout is raised as TimeoutError (it was asked for), nothing left counted."""
    seen, answer = _slow_then_fast(1)
    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=5.0) as c,
    ):
        deadlines = c.transport.deadlines

        async def expire_both(outer: asyncio.Timeout) -> None:
            while seen[0] == 0:
                await asyncio.sleep(0.005)
            _pass_the_deadlines(deadlines)
            outer._on_timeout()  # type: ignore[attr-defined]  # what its timer does

        helpers = []

        async def call_within() -> None:
            async with asyncio.timeout(None) as outer:
                helpers.append(asyncio.create_task(expire_both(outer)))
                await c.get_contact(1)

        with pytest.raises(TimeoutError) as info:
            await call_within()
        await helpers[0]
        assert not isinstance(info.value, RequestTimeoutError)
        _no_cancellation_left(c)


async def test_a_task_group_cancelling_calls_over_their_deadline_leaves_nothing() -> None:
    _, answer = _slow_then_fast(10_000)
    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=0.1) as c,
    ):

        async def boom() -> None:
            await asyncio.sleep(0.1)  # fails just as the calls' deadlines pass
            raise LookupError("sibling failed")

        calls: list[asyncio.Task[Any]] = []

        async def in_a_group() -> None:
            async with asyncio.TaskGroup() as group:
                calls.extend(group.create_task(c.get_contact(1)) for _ in range(10))
                group.create_task(boom())
                # The body waits (Python 3.11's TaskGroup leaves its parent cancelling() at 1
                # when the failure comes while it waits in __aexit__, with or without us).
                await asyncio.sleep(10)

        with pytest.raises(ExceptionGroup) as info:
            await in_a_group()
        kinds = {type(e) for e in info.value.exceptions}
        assert LookupError in kinds and kinds <= {LookupError, RequestTimeoutError}
        for call in calls:  # timed out: nothing counted; cancelled by the group: its one
            assert call.cancelling() == (1 if call.cancelled() else 0)
        _no_cancellation_left(c)


async def test_closing_the_client_with_attempts_armed() -> None:
    seen, answer = _slow_then_fast(10_000)
    async with serving(answer) as base_url:
        c = DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=5.0)
        await c.__aenter__()
        deadlines = c.transport.deadlines
        calls = [asyncio.create_task(c.get_contact(1)) for _ in range(5)]
        while seen[0] < 5:
            await asyncio.sleep(0.005)
        assert len(deadlines) == 5
        await c.aclose()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results
        assert all(t.cancelling() == 0 for t in calls)
        assert len(deadlines) == 0
        while deadlines._ticking:  # the ticker finds nobody and stops
            await asyncio.sleep(deadlines.tick)


# -- bulk jobs on a server slower than the timeout ---------------------------------------------

NO_PAUSE = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)


def _slow_client(emulator: Emulator, timeout: float = 0.1) -> DiallerClient:
    """A client whose attempts time out for real; its settle waits before a final lookup
    (one timeout) last until the server has finished what it holds: a commit later than
    the settle wait is outside the SDK's contract (it may then be sent again, with or without
    commit 32564c1: ``settle_delay``)."""

    async def sleep(delay: float) -> None:
        if delay >= timeout:
            await asyncio.wait_for(emulator.faults.settled(), 30)
        await asyncio.sleep(0)

    return emulator.client(
        limits=Limits(max_concurrency=8), timeout=timeout, retry=NO_PAUSE, sleep=sleep
    )


def _nothing_left(client: DiallerClient) -> None:
    """No attempt armed, no cancellation counted on the caller, no job task left."""
    _no_cancellation_left(client)
    assert no_job_tasks()
    connector = client.transport.session.connector
    assert connector is not None and not connector._acquired  # no connection held


def _timeouts_are_classified(items: list[ItemResult]) -> None:
    """Every write that timed out is AMBIGUOUS or was proven (never FAILED as if not sent)."""
    for item in items:
        if isinstance(item.error, RequestTimeoutError):
            if not item.error.request_sent:
                # a connect timeout on a loaded machine (never sent): FAILED is right for it
                assert "connect timed out" in str(item.error), item
                continue
            assert item.outcome is Outcome.AMBIGUOUS, item


async def test_imports_on_a_server_slower_than_the_timeout_are_exact(emulator: Emulator) -> None:
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=15, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(60)])
    async with _slow_client(emulator) as c:
        result = await c.import_contacts(rows, overwrite_duplicates=False, keep_results=True)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(
            result, read=rows.read, emulator=emulator, before=before, campaign_id=538, upsert=False
        )
        assert result.total == 60 and result.succeeded + result.ambiguous == 60
        _timeouts_are_classified(list(result.items or []))
        assert emulator.store.contact_count() == 60  # every slow commit landed, none twice
        _nothing_left(c)


@pytest.mark.parametrize("operation", ["delete", "lock"])
async def test_keyed_jobs_on_a_server_slower_than_the_timeout_are_exact(
    emulator: Emulator, operation: str
) -> None:
    async with _slow_client(emulator, timeout=5.0) as c:
        await c.import_contacts([contact(n) for n in range(40)], keep_results=True)
    emulator.configure(slow_seconds=0.3)
    route = f"{operation}_contact_by_user_data"
    emulator.faults.script(FaultKind.SLOW, times=10, operation=route)
    before = Snapshot.take(emulator)
    keys = Counted([f"CRM-{n:06d}" for n in range(40)])
    async with _slow_client(emulator) as c:
        job = c.delete_contacts if operation == "delete" else c.lock_contacts
        result = await job(user_data=keys, keep_results=True)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(result, read=keys.read, emulator=emulator, before=before)
        assert result.succeeded + result.ambiguous == 40
        _timeouts_are_classified(list(result.items or []))
        _nothing_left(c)


@pytest.mark.parametrize("grace", [0.0, 0.05, 0.2])
async def test_cancel_twice_while_imports_are_at_their_deadline(
    emulator: Emulator, grace: float
) -> None:
    """Every import hangs past the 0.1 s timeout; the job is cancelled twice around the
    moment the first attempts' deadlines pass (and the grace runs into the next ones)."""
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=1000, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(40)])
    async with _slow_client(emulator) as c:
        task = asyncio.create_task(
            c.import_contacts(rows, overwrite_duplicates=False, keep_results=True, grace=grace)
        )
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await asyncio.wait_for(task, 30)
        partial = bulk_result_of(info.value)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(partial, read=rows.read, emulator=emulator, before=before, upsert=False)
        _timeouts_are_classified(list(partial.items or []))
        _nothing_left(c)
        assert await c.list_campaigns()  # the client goes on


async def test_an_outer_timeout_equal_to_the_client_timeout_around_a_job(
    emulator: Emulator,
) -> None:
    """asyncio.timeout around a job whose attempts time out at the same moment: the outer
    TimeoutError is raised, the account is exact, nothing is left counted."""
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=1000, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(20)])
    async with _slow_client(emulator) as c:

        async def within() -> None:
            async with asyncio.timeout(0.1):
                await c.import_contacts(rows, overwrite_duplicates=False, keep_results=True)

        with pytest.raises(TimeoutError) as info:
            await within()
        assert not isinstance(info.value, RequestTimeoutError)
        assert info.value.__context__ is not None
        partial = bulk_result_of(info.value.__context__)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(partial, read=rows.read, emulator=emulator, before=before, upsert=False)
        _nothing_left(c)


@pytest.mark.parametrize("kind", ["raises", "blocks"])
async def test_callbacks_on_a_slow_server(emulator: Emulator, kind: str) -> None:
    """on_result raises on the first timeout (the job stops and raises it), or blocks the
    loop past the other attempts' deadlines (answers that arrived meanwhile may time out:
    the imports are then proven by lookup, never sent twice)."""
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=5, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(40)])
    seen: list[ItemResult] = []

    def on_result(item: ItemResult) -> None:
        seen.append(item)
        if kind == "raises" and len(seen) == 5:
            raise KeyError("callback failed")
        if kind == "blocks" and len(seen) % 10 == 1:
            time.sleep(0.15)  # longer than the timeout

    async with _slow_client(emulator) as c:
        if kind == "raises":
            with pytest.raises(KeyError) as info:
                await c.import_contacts(
                    rows, overwrite_duplicates=False, keep_results=True, on_result=on_result
                )
            result = bulk_result_of(info.value)
        else:
            result = await c.import_contacts(
                rows, overwrite_duplicates=False, keep_results=True, on_result=on_result
            )
            assert result.succeeded + result.ambiguous == 40
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(
            result, read=rows.read, emulator=emulator, before=before, campaign_id=538, upsert=False
        )
        _timeouts_are_classified(list(result.items or []))
        _nothing_left(c)


async def test_a_consumer_that_stops_early_while_attempts_hang(emulator: Emulator) -> None:
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=1000, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(40)])
    async with _slow_client(emulator) as c:
        stream = c.stream("import", rows, overwrite_duplicates=False, grace=0.05)
        async with stream:
            async for _ in stream:
                break
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(stream.result, read=rows.read, emulator=emulator, before=before)
        _nothing_left(c)


async def test_a_sync_on_a_server_slower_than_the_timeout_is_exact(emulator: Emulator) -> None:
    """A sync whose imports, updates and missing-contact locks are slower than the timeout:
    the rows and the missing policy are accounted exactly, nothing left behind."""
    async with _slow_client(emulator, timeout=5.0) as c:
        await c.import_contacts([contact(n) for n in range(30)], keep_results=True)
    emulator.configure(slow_seconds=0.15)
    for route in ("import_contact", "update_contact", "lock_contact"):
        emulator.faults.script(FaultKind.SLOW, times=4, operation=route)
    # 0..19 kept (10..19 changed), 30..39 new, 20..29 missing (locked)
    rows = Counted(
        [contact(n) for n in range(10)]
        + [contact(n, FirstName="Moritz") for n in range(10, 20)]
        + [contact(n) for n in range(30, 40)]
    )
    before = Snapshot.take(emulator)
    async with _slow_client(emulator) as c:
        result = await c.sync_contacts(
            rows, campaign_id=538, missing="lock", force=True, keep_results=True
        )
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(
            result.rows, read=rows.read, emulator=emulator, before=before, campaign_id=538
        )
        assert result.missing is not None
        assert_account(result.missing, read=result.missing.total)
        assert result.missing.total == 10
        assert result.rows.failed == result.missing.failed == 0
        timed_out = [i for i in result.rows.items or [] if i.reconciled or i.attempts > 1]
        assert len(timed_out) >= 8  # the slow imports and updates were given up on
        _timeouts_are_classified(list(result.rows.items or []))
        _nothing_left(c)


def test_a_job_on_a_slow_server_on_uvloop() -> None:
    """The whole path on uvloop (the loop ``dialler_async.run`` picks where installed)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with Emulator() as emulator:
            emulator.configure(slow_seconds=0.15)
            emulator.faults.script(FaultKind.SLOW, times=10, operation="import_contact")
            before = Snapshot.take(emulator)
            rows = Counted([contact(n) for n in range(40)])
            async with _slow_client(emulator) as c:
                loop = asyncio.get_running_loop()
                started = loop.time()
                result = await c.import_contacts(
                    rows, overwrite_duplicates=False, keep_results=True
                )
                assert loop.time() - started >= 0.1  # the slow ones waited out their time
                await asyncio.wait_for(emulator.faults.settled(), 30)
                assert_account(
                    result,
                    read=rows.read,
                    emulator=emulator,
                    before=before,
                    campaign_id=538,
                    upsert=False,
                )
                assert result.succeeded == 40
                assert sum(1 for i in (result.items or []) if i.reconciled) == 10
                _nothing_left(c)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def test_a_consumer_that_drops_the_stream_while_attempts_hang(emulator: Emulator) -> None:
    """A bare ``break`` and the stream dropped (the finalizer stops the job): the hanging
    attempts still time out, the job ends by itself, nothing is left."""
    emulator.configure(slow_seconds=0.15)
    emulator.faults.script(FaultKind.SLOW, times=1000, operation="import_contact")
    rows = Counted([contact(n) for n in range(40)])
    async with _slow_client(emulator) as c:
        stream = c.stream("import", rows, overwrite_duplicates=False, grace=0.3)
        async for _ in stream:
            break
        del stream
        gc.collect()

        async def job_ended() -> None:
            while not no_job_tasks():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(job_ended(), 30)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        _nothing_left(c)
        assert emulator.store.contact_count() <= rows.read


@pytest.mark.xfail(
    strict=True,
    reason="pre-existing, not from 32564c1 (same before it): a commit held longer than the "
    "timeout plus the settle wait (settle_delay = one timeout) is looked up too early, the "
    "import is sent again and both land, while the account reports one write",
)
async def test_a_commit_later_than_the_settle_wait_is_not_duplicated(emulator: Emulator) -> None:
    emulator.configure(slow_seconds=0.3)  # 3 x the timeout: later than timeout + settle
    emulator.faults.script(FaultKind.SLOW, times=8, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(8)])
    async with emulator.client(limits=Limits(max_concurrency=8), timeout=0.1, retry=NO_PAUSE) as c:
        result = await c.import_contacts(rows, overwrite_duplicates=False, keep_results=True)
        await asyncio.wait_for(emulator.faults.settled(), 30)
        assert_account(
            result, read=rows.read, emulator=emulator, before=before, campaign_id=538, upsert=False
        )
