"""The emulator's capacity model, and adaptive concurrency against it over real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from dialler_async import DiallerClient, Limits, RetryPolicy, ServerError
from dialler_async._adaptive import Signal
from dialler_async._limits import Governor
from dialler_async.emulator import Emulator, EmulatorConfig
from dialler_async.emulator._capacity import Capacity
from tests.conftest import FAST_RETRY, contact
from tests.invariants import Snapshot, assert_account

# -- the queue itself (no HTTP) ------------------------------------------------------------------


async def test_capacity_serves_k_at_once_first_come_first_served() -> None:
    limit: list[int | None] = [2]
    capacity = Capacity(lambda: limit[0])
    order: list[int] = []
    release = asyncio.Event()

    async def request(i: int) -> None:
        await capacity.enter()
        order.append(i)
        await release.wait()
        capacity.leave()

    tasks = [asyncio.create_task(request(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert order == [0, 1] and capacity.busy == 2 and capacity.queued == 3
    limit[0] = 4  # a raise while running admits waiters at once
    capacity.wake()
    assert capacity.busy == 4 and capacity.queued == 1
    limit[0] = 1  # a cut: requests in service finish, nobody more is admitted
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4] and capacity.busy == 0


async def test_capacity_cancelled_waiter_takes_no_slot() -> None:
    capacity = Capacity(lambda: 1)
    await capacity.enter()
    gone = asyncio.create_task(capacity.enter())
    kept = asyncio.create_task(capacity.enter())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    capacity.leave()
    await kept
    assert capacity.busy == 1 and capacity.queued == 0


def test_capacity_config_is_validated() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="capacity"):
            EmulatorConfig(capacity=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_limit"):
        EmulatorConfig(queue_limit=-1)
    with pytest.raises(ValueError, match="service_time"):
        EmulatorConfig(service_time=-0.1)


# -- over HTTP -----------------------------------------------------------------------------------


def _client(emu: Emulator, limits: Limits, retry: RetryPolicy = FAST_RETRY) -> DiallerClient:
    return DiallerClient(
        emu.base_url, emu.client_id, emu.token, limits=limits, retry=retry, timeout=10.0
    )


async def test_requests_queue_and_latency_grows_with_the_queue() -> None:
    config = EmulatorConfig(capacity=1, service_time=0.1)
    async with Emulator(config) as emu, _client(emu, Limits(max_concurrency=3)) as client:
        await asyncio.gather(*(client.list_campaigns() for _ in range(3)))
        served = sorted(seconds for _, seconds, status in emu.stats.latencies if status == 200)
    # one at a time: the second waited for the first, the third for both (lower bounds only,
    # so a loaded machine cannot break this)
    assert len(served) == 3
    assert served[0] >= 0.1 and served[1] >= 0.2 and served[2] >= 0.3


async def test_a_full_queue_answers_503() -> None:
    config = EmulatorConfig(capacity=1, service_time=2.0, queue_limit=0, unavailable_retry_after=3)
    no_retry = RetryPolicy(max_attempts=1)
    async with Emulator(config) as emu, _client(emu, Limits(max_concurrency=2), no_retry) as client:
        first = asyncio.create_task(client.list_campaigns())
        for _ in range(500):  # until the first request is in service
            if emu._capacity.busy:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ServerError) as caught:
            await client.list_campaigns()
        assert caught.value.status == 503 and caught.value.retry_after == 3
        assert emu.stats.overloaded == 1
        emu.configure(service_time=0.0)
        await first


async def test_raising_capacity_while_running_admits_the_queue_at_once() -> None:
    config = EmulatorConfig(capacity=1, service_time=0.5)
    async with Emulator(config) as emu, _client(emu, Limits(max_concurrency=4)) as client:
        calls = asyncio.gather(*(client.list_campaigns() for _ in range(4)))
        for _ in range(500):
            if emu._capacity.busy == 1 and emu._capacity.queued == 3:
                break
            await asyncio.sleep(0.01)
        assert emu._capacity.queued == 3
        emu.configure(capacity=4)
        assert emu._capacity.busy == 4 and emu._capacity.queued == 0
        await calls


async def test_adaptive_concurrency_stays_within_floor_and_ceiling() -> None:
    """Against a server that queues and refuses (503) beyond a short queue, with probes every
    0.2 s: the limit never leaves [min_concurrency, max_concurrency], and the server never
    sees more than max_concurrency of our requests at once."""
    config = EmulatorConfig(capacity=2, service_time=0.005, queue_limit=1)
    limits = Limits(
        max_concurrency=6, min_concurrency=2, adaptive_concurrency=True, probe_interval=0.2
    )
    seen: list[int] = []
    at_server: list[int] = []

    # 503s are retried until they get through: the account must be complete, not lucky
    patient = RetryPolicy(
        max_attempts=50, initial_backoff=0.005, max_backoff=0.02, deadline=60.0, budget=None
    )
    async with Emulator(config) as emu, _client(emu, limits, patient) as client:

        class Watched(Governor):
            def release(
                self, started: float | None = None, signal: Signal = Signal.NEUTRAL
            ) -> None:
                at_server.append(emu._capacity.busy + emu._capacity.queued)
                super().release(started, signal)
                seen.append(self.concurrency_limit)

        client.transport.governor = Watched(limits)
        before = Snapshot.take(emu)
        rows = [contact(i) for i in range(400)]
        result = await client.import_contacts(rows, keep_results=True)
        assert_account(result, read=400, emulator=emu, before=before, campaign_id=538, upsert=True)
    assert result.succeeded == 400
    assert seen and min(seen) >= 2 and max(seen) <= 6
    assert max(at_server) <= 6
    assert emu.stats.overloaded > 0  # the server did push back (the test is not vacuous)


async def test_a_job_of_404s_still_feeds_the_adaptive_limit() -> None:
    """Every answer is a 404 (deleting contacts that are gone): the first probe still ends (a
    limiter fed only 2xx would hold the job at the floor throughout); the account is exact."""
    limits = Limits(max_concurrency=8, adaptive_concurrency=True)
    async with Emulator(EmulatorConfig()) as emu, _client(emu, limits) as client:
        before = Snapshot.take(emu)
        result = await client.delete_contacts(ids=range(900_000, 900_060), keep_results=True)
        assert_account(result, read=60, emulator=emu, before=before)
        governor = client.transport.governor
        assert governor.baseline_rtt is not None
        assert governor.adaptive is not None and not governor.adaptive.probing
    assert result.succeeded + result.failed == 60


async def test_adaptive_with_a_fake_clock_holds_its_limit_and_loses_nothing() -> None:
    """A test's frozen clock measures every round trip as 0 s: the limiter must neither divide
    by zero nor move, and the job must run through."""
    from tests.conftest import FakeClock

    fake = FakeClock()
    limits = Limits(max_concurrency=8, adaptive_concurrency=True)
    async with (
        Emulator(EmulatorConfig()) as emu,
        emu.client(limits=limits, clock=fake, sleep=fake.sleep) as client,
    ):
        before = Snapshot.take(emu)
        result = await client.import_contacts([contact(i) for i in range(40)], keep_results=True)
        assert_account(result, read=40, emulator=emu, before=before, campaign_id=538)
        assert result.succeeded == 40
        assert client.transport.governor.concurrency_limit == 4  # after the first probe
