"""The bulk engine over real HTTP: exact accounts, faults, ordering, stopping, cancellation."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from dialler_async import (
    BulkError,
    BulkResult,
    DiallerClient,
    ItemResult,
    Limits,
    Operation,
    Outcome,
    Progress,
    RetryPolicy,
    StreamOptions,
)
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind

from .conftest import FAST_RETRY, contact
from .invariants import Counted, Snapshot, assert_account


def assert_exact_account(result: BulkResult, n: int) -> None:
    assert result.total == n
    assert sum(result.counts.values()) == n
    if result.items is not None:
        assert sorted(i.index for i in result.items) == list(range(n))


def rows(n: int, start: int = 0, **fields: object) -> list[dict[str, object]]:
    return [contact(i, **fields) for i in range(start, start + n)]


async def test_import_account_adds_up(client: DiallerClient, emulator: Emulator) -> None:
    result = await client.import_contacts(rows(200), keep_results=True)
    assert_exact_account(result, 200)
    assert result.ok and result.succeeded == 200 and result.failures == []
    assert result.read_all
    assert result.requests == 200 and result.retries == 0
    assert emulator.store.contact_count() == 200
    item = result.items[0] if result.items else None
    assert item is not None and item.contact is not None and item.contact.id is not None
    assert item.status == 200 and item.attempts == 1 and item.operation is Operation.IMPORT


async def test_campaign_fill_and_invalid_rows(client: DiallerClient, emulator: Emulator) -> None:
    data: list[Any] = [
        {"Name": "A", "PhoneNumber1": "+491"},
        {"Name": "", "PhoneNumber1": "+492"},
        {"Name": "C"},
        {"Name": "D", "PhoneNumber1": "+494", "DiallerCampaignsID": 540},
        "not a row",
        {"Name": "F", "PhoneNumber1": "+496", "PostalCode": "x" * 11},
    ]
    before = sum(emulator.stats.requests.values())
    result = await client.import_contacts(data, campaign_name="Summer Campaign", keep_results=True)
    assert_exact_account(result, 6)
    assert (result.succeeded, result.invalid) == (2, 4)
    # invalid rows cost nothing; the campaign name is resolved to its ID once, before row one
    assert sum(emulator.stats.requests.values()) - before == 3
    assert emulator.stats.requests["list_campaigns"] == 1
    assert emulator.store.contact_count(campaign_id=539) == 1
    assert emulator.store.contact_count(campaign_id=540) == 1
    invalid = {f.index: f for f in result.failures}
    assert set(invalid) == {1, 2, 4, 5}
    assert "Name: required" in str(invalid[1].error)
    assert invalid[4].input == "not a row" and invalid[4].attempts == 0


async def test_faults_are_retried_and_nothing_is_lost_or_duplicated(emulator: Emulator) -> None:
    kinds = (
        FaultKind.UNAVAILABLE,
        FaultKind.DROP_BEFORE,
        FaultKind.DROP_AFTER,
        FaultKind.RATE_LIMITED,
        FaultKind.BAD_GATEWAY,
        FaultKind.GATEWAY_TIMEOUT,
    )
    emulator.configure(faults=dict.fromkeys(kinds, 0.02), seed=11, retry_after=0)
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.001, max_backoff=0.01)
    async with emulator.client(retry=retry, limits=Limits(max_concurrency=8)) as c:
        result = await c.import_contacts(rows(300), overwrite_duplicates=True, keep_results=True)
    assert_exact_account(result, 300)
    assert result.succeeded == 300
    injected = sum(emulator.stats.faults.values())
    assert injected > 10 and result.retries == injected
    assert result.throttled == emulator.stats.faults[FaultKind.RATE_LIMITED]
    assert emulator.store.contact_count() == 300  # upserts: resending created no duplicate
    assert max(i.attempts for i in result.items or []) >= 2


async def test_plain_import_without_user_data_is_ambiguous_not_resent(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    data = [{k: v for k, v in c.items() if k != "UserData"} for c in rows(1)]
    result = await client.import_contacts(data, overwrite_duplicates=False, keep_results=True)
    assert result.ambiguous == 1
    item = result.failures[0]
    assert item.outcome is Outcome.AMBIGUOUS and item.error is not None
    assert emulator.stats.requests["import_contact"] == 1
    assert emulator.store.contact_count() == 1  # it landed once, and only once


async def test_plain_import_with_user_data_is_reconciled_by_lookup(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    emulator.faults.script(FaultKind.DROP_BEFORE, times=1, operation="import_contact")
    result = await client.import_contacts(
        rows(2), overwrite_duplicates=False, concurrency=1, keep_results=True
    )
    assert result.succeeded == 2
    by_index = {i.index: i for i in result.items or []}
    assert by_index[0].reconciled is True  # landed: found by UserData, not resent
    assert by_index[1].reconciled is False  # did not land: lookup empty, sent again
    # row 0: one lookup (found); row 1: a lookup, the settle wait, a second lookup, the resend
    assert emulator.stats.requests["find_contacts"] == 3
    assert emulator.store.contact_count(user_data="CRM-000000") == 1
    assert emulator.store.contact_count(user_data="CRM-000001") == 1


async def test_rows_sharing_a_user_data_run_in_input_order(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.configure(latency=0.002)
    data = []
    for version in range(5):
        data += [contact(i, FirstName=f"v{version}") for i in range(10)]
    result = await client.import_contacts(data, overwrite_duplicates=True, keep_results=True)
    assert_exact_account(result, 50)
    assert result.succeeded == 50 and result.duplicates_in_input == 40
    assert sum(1 for i in result.items or [] if i.duplicate_in_input) == 40
    assert emulator.store.contact_count() == 10
    assert {c["FirstName"] for c in emulator.store.all_contacts()} == {"v4"}


async def test_every_keyed_operation(client: DiallerClient, emulator: Emulator) -> None:
    imported = await client.import_contacts(rows(20), keep_results=True)
    ids = [i.contact.id for i in imported.items or [] if i.contact]
    keys = [f"CRM-{i:06d}" for i in range(20)]
    assert (await client.lock_contacts(user_data=keys, keep_results=True)).succeeded == 20
    assert all(c["bLocked"] for c in emulator.store.all_contacts())
    assert (await client.unlock_contacts(ids=ids, keep_results=True)).succeeded == 20
    assert not any(c["bLocked"] for c in emulator.store.all_contacts())
    await emulator.dial(rounds=1, seed=3)
    assert (await client.reset_contacts(user_data=iter(keys), keep_results=True)).succeeded == 20
    assert all(c["nTriesPhoneNumber1"] == 0 for c in emulator.store.all_contacts())
    updates = [{"ID": i, "Tag": "migrated"} for i in ids]
    assert (await client.update_contacts(updates, keep_results=True)).succeeded == 20
    assert {c["Tag"] for c in emulator.store.all_contacts()} == {"migrated"}
    deleted = await client.delete_contacts(ids=[*ids[:10], "x", -1, 99999], keep_results=True)
    assert_exact_account(deleted, 13)
    assert (deleted.succeeded, deleted.invalid, deleted.failed) == (10, 2, 1)
    assert deleted.failures[-1].status == 404
    assert (await client.delete_contacts(user_data=keys[10:], keep_results=True)).succeeded == 10
    assert emulator.store.contact_count() == 0
    with pytest.raises(TypeError, match="exactly one"):
        await client.delete_contacts(ids=[1], user_data=["x"], keep_results=True)


async def test_keyed_operations_through_faults(client: DiallerClient, emulator: Emulator) -> None:
    await client.import_contacts(rows(30), keep_results=True)
    emulator.faults.script(FaultKind.DROP_AFTER, times=5, operation="delete_contact_by_user_data")
    emulator.faults.script(FaultKind.UNAVAILABLE, times=5, operation="delete_contact_by_user_data")
    result = await client.delete_contacts(
        user_data=[f"CRM-{i:06d}" for i in range(30)], keep_results=True
    )
    # a lost answer is proven by lookup (none left), a 503 (nothing done) is retried
    assert result.succeeded == 30
    assert sum(1 for i in result.items or [] if i.reconciled) == 5
    assert emulator.stats.requests["delete_contact_by_user_data"] == 35  # never sent twice
    assert emulator.store.contact_count() == 0


async def test_async_iterable_input_read_lazily(client: DiallerClient) -> None:
    pulled = 0

    async def source() -> AsyncIterator[dict[str, object]]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield contact(i)

    seen = 0
    async with client.stream(
        Operation.IMPORT, source(), concurrency=4, keep_results=True
    ) as results:
        async for _ in results:
            seen += 1
            # never far ahead of what was handed back: bounded queues, no task per item
            assert pulled - seen <= 4 * 2 + 4 * 4 + 4 + 1
    assert seen == 100 and results.result.succeeded == 100


async def test_a_bounded_pool_of_workers_not_a_task_per_item(client: DiallerClient) -> None:
    baseline = len(asyncio.all_tasks())
    peak = 0
    async for _ in client.stream(Operation.IMPORT, rows(500), concurrency=4, keep_results=True):
        peak = max(peak, len(asyncio.all_tasks()))
    # reader + 4 workers, plus the in-process server's few tasks per open connection;
    # one task per item would be 500
    assert peak - baseline <= 1 + 4 + 4 * 3


async def test_ordered_results(client: DiallerClient, emulator: Emulator) -> None:
    emulator.configure(latency=0.001, latency_jitter=0.004, seed=5)
    indexes = [
        r.index async for r in client.stream("import", rows(60), ordered=True, keep_results=True)
    ]
    assert indexes == list(range(60))


async def test_max_failures_cancels_the_rest(client: DiallerClient, emulator: Emulator) -> None:
    data: list[Any] = [*rows(5), *[{"Name": "bad"}] * 5, *rows(200, start=5)]
    result = await client.import_contacts(data, max_failures=3, concurrency=2, keep_results=True)
    assert_exact_account(result, result.total)
    assert result.invalid >= 3
    # Stopped reading the input: what was read and not yet started is CANCELLED, what was
    # never read is in no count.
    assert result.total < len(data)
    assert not result.read_all and "stopped before the end" in result.summary()
    assert not result.ok
    with pytest.raises(BulkError) as info:
        result.raise_for_failures()
    assert info.value.result is result


async def test_on_error_raise_carries_the_partial_result(client: DiallerClient) -> None:
    data: list[Any] = [*rows(3), {"Name": "bad"}, *rows(100, start=3)]
    with pytest.raises(BulkError) as info:
        await client.import_contacts(data, on_error="raise", concurrency=1, keep_results=True)
    result = info.value.result
    assert result.invalid == 1 and result.succeeded >= 3
    assert sum(result.counts.values()) == result.total


async def test_progress_reports(client: DiallerClient, clock: object) -> None:
    reports: list[Progress] = []
    await client.import_contacts(
        rows(50), on_progress=reports.append, progress_interval=0, keep_results=True
    )
    assert reports[-1].finished and reports[-1].done == 50 and reports[-1].total == 50
    assert [r.done for r in reports[:-1]] == sorted(r.done for r in reports[:-1])
    assert reports[-1].failed == 0


async def test_keep_results_false_keeps_only_failures(client: DiallerClient) -> None:
    result = await client.import_contacts([*rows(30), {"Name": "bad"}], keep_results=False)
    assert result.items is None and len(result.failures) == 1 and result.total == 31


async def test_unknown_option_is_an_error(client: DiallerClient) -> None:
    with pytest.raises(TypeError, match="unknown bulk options"):
        await client.import_contacts(rows(1), colour="blue", keep_results=True)  # type: ignore[call-arg]


async def test_input_iterator_error_is_raised_after_accounting(client: DiallerClient) -> None:
    def broken() -> Iterator[dict[str, object]]:
        yield from rows(5)
        raise OSError("disk on fire")

    s = client.stream(Operation.IMPORT, broken(), keep_results=True)
    with pytest.raises(OSError, match="disk on fire"):
        async for _ in s:
            pass
    # Stopped like any job: what was read is accounted for (in flight: done; queued: CANCELLED).
    assert s.result.total == 5 and s.result.succeeded + s.result.cancelled == 5
    assert not s.result.read_all


@pytest.mark.slow
async def test_server_rate_limit_adapts_and_nothing_fails(emulator: Emulator) -> None:
    # Real time (about 1 s): the server's sliding window is the judge. Its Retry-After: 1
    # pauses every worker at once, and the cut rate keeps the rest of the job under the limit.
    emulator.configure(rate_limit=200, retry_after=1)
    async with emulator.client(limits=Limits(max_concurrency=8), retry=FAST_RETRY) as c:
        result = await c.import_contacts(rows(300), keep_results=True)
        assert c.transport.governor.rate is not None  # it adapted
    assert result.succeeded == 300
    assert result.throttled > 0 and emulator.stats.throttled == result.throttled


@pytest.mark.slow
async def test_server_never_sees_more_than_the_configured_rate(emulator: Emulator) -> None:
    # Real time (0.5 s): the one place where the server's own clock is the judge.
    async with emulator.client(limits=Limits(max_per_second=200, max_concurrency=16)) as c:
        result = await c.import_contacts(rows(101), keep_results=True)
    assert result.succeeded == 101
    assert emulator.stats.max_starts_in_window(1.0) <= 200 + 1
    assert result.elapsed >= 0.5 * 0.97


async def test_job_rate_override(emulator: Emulator, clock: object) -> None:
    from .conftest import FakeClock

    fake = FakeClock()
    async with emulator.client(clock=fake, sleep=fake.sleep) as c:
        result = await c.import_contacts(rows(21), rate=10.0, keep_results=True)
    assert result.succeeded == 21
    # 20 gaps of 1/10 s, 1 % apart further (the jitter margin), in virtual time
    assert fake() - 1000.0 == pytest.approx(2.0 * 1.01)


async def test_cancellation_gives_a_partial_account_and_leaks_nothing(emulator: Emulator) -> None:
    emulator.configure(latency=0.05)
    async with emulator.client(limits=Limits(max_concurrency=4)) as c:
        task = asyncio.create_task(
            c.import_contacts(rows(1000), overwrite_duplicates=False, grace=2.0, keep_results=True)
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        result: BulkResult = info.value.bulk_result  # type: ignore[attr-defined]
        assert sum(result.counts.values()) == result.total
        assert result.succeeded > 0 and result.cancelled > 0
        assert result.ambiguous == 0  # in-flight requests were allowed to finish
        assert not result.read_all
        assert emulator.store.contact_count() == result.succeeded
        connector = c.transport.session.connector
        assert connector is not None
        assert not getattr(connector, "_acquired", ())  # no connection left checked out
        await asyncio.sleep(0)
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert not any(n.startswith("dialler-bulk") for n in names)


async def test_cancellation_after_grace_marks_unsafe_in_flight_writes_ambiguous(
    emulator: Emulator,
) -> None:
    emulator.configure(latency=1.0)
    async with emulator.client(limits=Limits(max_concurrency=2)) as c:
        task = asyncio.create_task(
            c.import_contacts(rows(10), overwrite_duplicates=False, grace=0.05, keep_results=True)
        )
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
    result = info.value.bulk_result  # type: ignore[attr-defined]
    # the two in-flight plain imports may have landed: AMBIGUOUS, never "not sent"
    assert result.ambiguous == 2 and result.cancelled == result.total - 2
    assert result.total < 10  # reading stopped; unread rows are not part of the account


async def test_breaking_out_of_a_stream_cleans_up(client: DiallerClient) -> None:
    async with client.stream(Operation.IMPORT, rows(500), keep_results=True) as results:
        async for _ in results:
            break
    account = results.result
    assert sum(account.counts.values()) == account.total
    assert account.cancelled > 0 or account.total < 500
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not any(n.startswith("dialler-bulk") for n in names)


async def test_retries_exhausted_is_failed_with_attempts(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.UNAVAILABLE, times=4, operation="lock_contact_by_user_data")
    await client.import_contacts(rows(1), keep_results=True)
    result = await client.lock_contacts(user_data=["CRM-000000"], keep_results=True)
    item: ItemResult = result.failures[0]
    assert item.outcome is Outcome.FAILED and item.attempts == FAST_RETRY.max_attempts
    assert item.status == 503


async def test_failures_count_by_outcome(emulator: Emulator) -> None:
    async with emulator.client(retry=RetryPolicy.never()) as c:
        emulator.faults.script(FaultKind.SERVER_ERROR, times=2, operation="import_contact")
        result = await c.import_contacts(rows(5), overwrite_duplicates=True, keep_results=True)
    # A 500 to an upsert: it may have been carried out (AMBIGUOUS, harmless to send again).
    assert Counter(i.outcome for i in result.items or []) == {
        Outcome.SUCCEEDED: 3,
        Outcome.AMBIGUOUS: 2,
    }


async def test_emulator_config_fixture_is_usable() -> None:
    async with Emulator(EmulatorConfig(seed=1)) as emu, emu.client() as c:
        assert (await c.import_contacts(rows(3), keep_results=True)).succeeded == 3


OPERATIONS = [
    (Operation.IMPORT, "import_contact"),
    (Operation.UPDATE, "update_contact"),
    (Operation.DELETE, "delete_contact_by_user_data"),
    (Operation.LOCK, "lock_contact_by_user_data"),
    (Operation.UNLOCK, "unlock_contact_by_user_data"),
    (Operation.RESET, "reset_contact_by_user_data"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "route"), OPERATIONS)
async def test_every_operation_under_faults_keeps_an_exact_account_and_the_rate(
    emulator: Emulator, operation: Operation, route: str
) -> None:
    n, rate = 120, 400.0
    keys = [f"CRM-{i:06d}" for i in range(n)]
    async with emulator.client() as setup:
        await setup.import_contacts(rows(n), keep_results=True)
    kinds = (
        FaultKind.UNAVAILABLE,
        FaultKind.DROP_BEFORE,
        FaultKind.DROP_AFTER,
        FaultKind.RATE_LIMITED,
    )
    emulator.configure(
        faults=dict.fromkeys(kinds, 0.03),
        fault_operations={route},
        seed=3,
        latency=0.002,
        retry_after=0,
    )
    emulator.stats.reset()
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.001, max_backoff=0.01)
    items: list[object]
    if operation is Operation.IMPORT:
        items = list(rows(n))
    elif operation is Operation.UPDATE:
        items = [{"UserData": k, "Tag": "x"} for k in keys]
    else:
        items = list(keys)
    keyed = operation not in (Operation.IMPORT, Operation.UPDATE)
    options: StreamOptions = {"by_user_data": True} if keyed else {}
    limits = Limits(max_per_second=rate)
    # timeout: an unconfirmed delete by UserData waits one timeout (real time here) to settle
    async with emulator.client(retry=retry, limits=limits, timeout=2.0) as c:
        async with c.stream(operation, items, **options) as results:
            seen = [r.index async for r in results]
        account = results.result
    assert sorted(seen) == list(range(n))  # every input index exactly once
    assert account.total == n == sum(account.counts.values())
    assert sum(emulator.stats.faults.values()) > 0
    assert emulator.stats.max_starts_in_window(1.0) <= rate + 1
    if operation is Operation.DELETE:
        # A connection lost before the server acted cannot be told from one lost after, and a
        # delete by UserData is never sent twice: a contact still there after settling is
        # AMBIGUOUS, and nothing is deleted twice.
        assert account.succeeded + account.ambiguous == n
        assert account.ambiguous <= emulator.stats.faults[FaultKind.DROP_BEFORE]
        assert emulator.store.contact_count() == account.ambiguous
    else:
        assert account.succeeded == n
        assert emulator.store.contact_count() == n  # no duplicates, nothing lost


async def test_invariants_helper_catches_a_hole_and_passes_an_exact_account(
    client: DiallerClient, emulator: Emulator
) -> None:
    before = Snapshot.take(emulator)
    rows = Counted([contact(n) for n in range(30)] + [{"Name": ""}])
    result = await client.import_contacts(rows, overwrite_duplicates=False, keep_results=True)
    assert_account(result, read=rows.read, emulator=emulator, before=before, campaign_id=538)
    with pytest.raises(AssertionError):
        assert_account(result, read=rows.read + 1)
    # A contact written behind the account's back is caught.
    await client.import_contact(contact(999))
    with pytest.raises(AssertionError):
        assert_account(result, read=rows.read, emulator=emulator, before=before)
