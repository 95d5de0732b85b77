"""Hostile conditions: transient faults, exhausted retries, outages, random fault schedules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialler_async import DiallerClient, Limits, Outcome, RetryPolicy, ServerError
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind

from .conftest import FakeClock, contact

TRANSIENT = [
    FaultKind.RATE_LIMITED,
    FaultKind.BAD_GATEWAY,
    FaultKind.UNAVAILABLE,
    FaultKind.GATEWAY_TIMEOUT,
    FaultKind.DROP_BEFORE,
]
POLICY = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=1.0)


@pytest.fixture
async def fake_client(emulator: Emulator, clock: FakeClock) -> AsyncIterator[DiallerClient]:
    # adaptive=False: these tests read the retry schedule; a rate cut would add its own waits
    limits = Limits(adaptive=False)
    async with emulator.client(retry=POLICY, limits=limits, clock=clock, sleep=clock.sleep) as c:
        yield c


@pytest.mark.parametrize("kind", TRANSIENT)
@pytest.mark.parametrize("k", [0, 2, 4])
async def test_transient_errors_then_success(
    fake_client: DiallerClient, emulator: Emulator, clock: FakeClock, kind: FaultKind, k: int
) -> None:
    emulator.configure(retry_after=1)
    if k:
        emulator.faults.script(kind, times=k, operation="lock_contact_by_user_data")
    await fake_client.import_contact(contact(1))
    result = await fake_client.lock_contacts(user_data=["CRM-000001"], keep_results=True)
    assert result.succeeded == 1
    assert result.items is not None and result.items[0].attempts == k + 1
    assert len(clock.sleeps) == k
    for n, delay in enumerate(clock.sleeps, start=1):
        cap = min(POLICY.max_backoff, POLICY.initial_backoff * 2 ** (n - 1))
        if kind is FaultKind.RATE_LIMITED:
            assert delay == 1.0  # Retry-After: 1 is the floor (the backoff is below it)
        else:
            assert 0.0 <= delay <= cap  # full jitter below the exponential cap


async def test_retries_exhausted_leave_nothing_acquired(
    fake_client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.UNAVAILABLE, times=POLICY.max_attempts)
    with pytest.raises(ServerError) as info:
        await fake_client.list_campaigns()
    assert info.value.attempts == POLICY.max_attempts
    assert emulator.stats.requests["list_campaigns"] == POLICY.max_attempts
    connector = fake_client.transport.session.connector
    assert connector is not None and not connector._acquired


async def test_500_is_tried_once_and_keeps_the_server_text(
    fake_client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.SERVER_ERROR, times=1)
    with pytest.raises(ServerError) as info:
        await fake_client.get_campaign(538)
    assert (info.value.status, info.value.attempts) == (500, 1)
    assert info.value.error


@pytest.mark.slow
async def test_sustained_outage_ends_within_budget_and_accounts_for_everything(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.configure(faults={FaultKind.UNAVAILABLE: 1.0}, fault_operations={"import_contact"})
    policy = RetryPolicy(max_attempts=5, budget=500, retry_cost=5)
    n = 10_000
    async with emulator.client(
        retry=policy, clock=clock, sleep=clock.sleep, limits=Limits(max_concurrency=32)
    ) as c:
        result = await c.import_contacts((contact(i) for i in range(n)), keep_results=False)
    assert result.total == n == result.failed
    # without the budget: n * 5 attempts; with it: one per item plus at most 500 / 5 retries
    assert result.requests <= n + 100
    assert result.retries <= 100
    assert emulator.store.contact_count() == 0


rows_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=15),  # UserData key: collisions are likely
        st.booleans(),  # valid row?
    ),
    min_size=1,
    max_size=40,
)
faults_strategy = st.lists(
    st.tuples(
        st.sampled_from([*TRANSIENT, FaultKind.DROP_AFTER, FaultKind.SERVER_ERROR]),
        st.integers(min_value=1, max_value=3),
    ),
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=rows_strategy, faults=faults_strategy, concurrency=st.integers(1, 8))
def test_property_every_index_once_and_one_contact_per_user_data(
    spec: list[tuple[int, bool]], faults: list[tuple[FaultKind, int]], concurrency: int
) -> None:
    async def run() -> None:
        async with Emulator(EmulatorConfig(retry_after=0)) as emu:
            for kind, times in faults:
                emu.faults.script(kind, times=times, operation="import_contact")
            data = [
                contact(key) if valid else {"UserData": f"CRM-{key:06d}", "Name": ""}
                for key, valid in spec
            ]
            retry = RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0)
            # adaptive=False: the property is about accounting; a halved rate only costs time
            limits = Limits(max_concurrency=concurrency, adaptive=False)
            async with emu.client(retry=retry, limits=limits) as c:
                async with c.stream("import", data, keep_results=True) as results:
                    indexes = [r.index async for r in results]
                first = results.result
                async with c.stream("import", [], keep_results=True) as empty:
                    assert [r async for r in empty] == []
            assert sorted(indexes) == list(range(len(data)))  # every index exactly once
            assert first.total == len(data) == sum(first.counts.values())
            keys = {f"CRM-{key:06d}" for key, valid in spec if valid}
            for key in keys:  # faults never produced a duplicate
                assert emu.store.contact_count(user_data=key) <= 1
            emu.faults.clear()  # the outage is over: run the same job once more
            async with emu.client(retry=retry) as c2:
                again = await c2.import_contacts(data, keep_results=True)
            assert again.total == len(data) == sum(again.counts.values())
            for item, (_, valid) in zip(again.items or [], spec, strict=True):
                assert (item.outcome is Outcome.INVALID) is (not valid)
            for key in keys:
                assert emu.store.contact_count(user_data=key) == 1
            assert emu.store.contact_count() == len(keys)

    asyncio.run(run())
