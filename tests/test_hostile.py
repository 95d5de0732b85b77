"""Strange servers and hostile rows: stale connections, malformed answers, timeouts, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dialler_async import (
    DiallerClient,
    Limits,
    Outcome,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
)
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind

from .conftest import FakeClock, contact


async def test_stale_keep_alive_connections_cause_no_failures() -> None:
    async with Emulator(EmulatorConfig(keepalive_timeout=0.02)) as emu, emu.client() as c:
        for batch in range(3):
            data = [contact(batch * 10 + i) for i in range(10)]
            result = await c.import_contacts(data, overwrite_duplicates=False, keep_results=True)
            assert (result.succeeded, result.retries) == (10, 0)
            await asyncio.sleep(0.1)  # idle longer than the server keeps connections open
        assert emu.store.contact_count() == 30


async def test_malformed_answers_fail_one_item_with_the_raw_snippet(
    client: DiallerClient, emulator: Emulator
) -> None:
    await client.import_contacts([contact(i) for i in range(5)], keep_results=True)
    emulator.faults.script(FaultKind.INVALID_JSON, times=2, operation="update_contact")
    result = await client.update_contacts(
        [{"UserData": f"CRM-{i:06d}", "Tag": "x"} for i in range(5)], keep_results=True
    )
    # A 2xx that cannot be read may have been carried out: AMBIGUOUS, not FAILED.
    assert (result.succeeded, result.ambiguous) == (3, 2)
    for item in result.failures:
        assert isinstance(item.error, ResponseFormatError)
        assert item.error.body and item.error.body.startswith("{")  # the truncated JSON


async def test_malformed_answer_to_a_plain_import_is_reconciled(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.INVALID_JSON, times=1, operation="import_contact")
    result = await client.import_contacts(
        [contact(1)], overwrite_duplicates=False, keep_results=True
    )
    assert result.succeeded == 1 and result.items is not None
    assert result.items[0].reconciled  # it was processed: found by UserData, not resent
    assert emulator.store.contact_count() == 1


async def test_non_retryable_answers_cost_one_attempt_with_the_default_policy(
    emulator: Emulator, clock: FakeClock
) -> None:
    async with emulator.client(clock=clock, sleep=clock.sleep) as c:  # default RetryPolicy
        with pytest.raises(Exception) as info:
            await c.get_contact(424242)
    assert getattr(info.value, "attempts", None) == 1
    assert emulator.stats.requests["get_contact"] == 1
    assert clock.sleeps == []


async def test_retry_after_above_the_cap_raises_the_original_error(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.configure(retry_after=600)
    emulator.faults.script(FaultKind.RATE_LIMITED, times=1)
    async with emulator.client(clock=clock, sleep=clock.sleep) as c:
        with pytest.raises(RateLimitError) as info:
            await c.list_campaigns()
    assert info.value.retry_after == 600 and info.value.attempts == 1
    assert clock.sleeps == []  # it did not wait ten minutes


async def test_timeouts_under_a_small_pool_then_cancellation_do_not_deadlock(
    emulator: Emulator,
) -> None:
    emulator.configure(slow_seconds=0.3)
    emulator.faults.script(FaultKind.SLOW, times=6, operation="lock_contact_by_user_data")
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)
    async with emulator.client(limits=Limits(max_concurrency=2), timeout=0.1, retry=retry) as c:
        await c.import_contacts([contact(i) for i in range(20)], keep_results=True)
        result = await c.lock_contacts(
            user_data=[f"CRM-{i:06d}" for i in range(20)], keep_results=True
        )
        # A lock that timed out on every attempt may have landed: AMBIGUOUS, not FAILED.
        assert result.total == 20 and result.succeeded + result.ambiguous == 20
        assert result.ambiguous <= 3
        emulator.faults.script(FaultKind.SLOW, times=4, operation="reset_contact_by_user_data")
        task = asyncio.create_task(
            c.reset_contacts(
                user_data=[f"CRM-{i:06d}" for i in range(20)], grace=0.05, keep_results=True
            )
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        partial = info.value.bulk_result  # type: ignore[attr-defined]
        assert sum(partial.counts.values()) == partial.total
        assert await c.list_campaigns()  # the pool still works: nothing leaked or deadlocked
        connector = c.transport.session.connector
        assert connector is not None and not connector._acquired


HOSTILE_ROWS: list[Any] = [
    {"Name": None, "PhoneNumber1": "+491"},  # missing name
    {"Name": "x"},  # no phone, no campaign fill below is given for this row
    {"Name": "x" * 65, "PhoneNumber1": "+491"},  # over-long
    {"Name": "x", "PhoneNumber1": ["+491"]},  # wrong type
    {"Name": "x", "PhoneNumber1": "+491", "DiallerCampaignsID": "five-three-eight"},
    {"Name": "x", "PhoneNumber1": "+491", "dtBeginDate": "31.12.2026"},
    {"Name": "=cmd|' /C calc'!A0", "PhoneNumber1": "+491", "UserData": "F-1"},  # valid text
    {"Name": "Ünïcødé ✓", "PhoneNumber1": "+491", "Comment": "c" * 10_000},  # valid
    {"Name": "Dup", "PhoneNumber1": "+491", "UserData": "D-1"},
    {"Name": "Dup again", "PhoneNumber1": "+492", "UserData": "D-1"},
    None,
    42,
]


async def test_hostile_rows_are_invalid_with_a_reason_never_a_crash(
    client: DiallerClient, emulator: Emulator
) -> None:
    result = await client.import_contacts(HOSTILE_ROWS, campaign_id=538, keep_results=True)
    assert result.total == len(HOSTILE_ROWS)
    outcomes = {i.index: i.outcome for i in result.items or []}
    assert [k for k, o in outcomes.items() if o is Outcome.SUCCEEDED] == [6, 7, 8, 9]
    for item in result.failures:
        assert item.outcome is Outcome.INVALID
        assert item.error is not None and str(item.error)
    assert result.duplicates_in_input == 1
    assert emulator.store.contact_count(user_data="D-1") == 1  # upsert: the later row won
    stored = {c["UserData"]: c for c in emulator.store.all_contacts()}
    assert stored["D-1"]["Name"] == "Dup again"
    assert len(stored[None]["Comment"]) == 10_000
