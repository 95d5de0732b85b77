"""A hostile review of adaptive concurrency (issue 15): small and contradictory limits, a server
that only refuses, one slower than the timeout, capacity changed mid-job, cancelling twice, and
the rate limit together with the adaptive limit. Over real HTTP against the emulator; nothing
here asserts on wall-clock time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from dialler_async import DiallerClient, Limits, Outcome, RetryPolicy
from dialler_async._adaptive import PROBE_SAMPLES, Signal
from dialler_async._limits import Governor
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind
from tests.conftest import FAST_RETRY, FakeClock, contact
from tests.invariants import Snapshot, assert_account

LIMIT = 60.0  # seconds a job may take before the test calls it hung (never reached when green)


class Watched(Governor):
    """A governor that records its limit after every release and the requests at the server
    (busy + queued in the emulator's capacity model) before it."""

    def __init__(self, limits: Limits, emu: Emulator, **kwargs: object) -> None:
        super().__init__(limits, **kwargs)  # type: ignore[arg-type]
        self.emu = emu
        self.limits_seen: list[int] = []
        self.at_server: list[int] = []
        self.in_flight: list[int] = []

    async def acquire(self) -> float:
        started = await super().acquire()
        self.in_flight.append(self.sending)
        return started

    def try_acquire(self) -> float | None:
        started = super().try_acquire()
        if started is not None:
            self.in_flight.append(self.sending)
        return started

    def release(self, started: float | None = None, signal: Signal = Signal.NEUTRAL) -> None:
        capacity = self.emu._capacity
        self.at_server.append(capacity.busy + capacity.queued)
        super().release(started, signal)
        self.limits_seen.append(self.concurrency_limit)


def _client(
    emu: Emulator, limits: Limits, retry: RetryPolicy = FAST_RETRY, timeout: float = 10.0
) -> tuple[DiallerClient, Watched]:
    client = DiallerClient(
        emu.base_url, emu.client_id, emu.token, limits=limits, retry=retry, timeout=timeout
    )
    return client, Watched(limits, emu)


def _rows(n: int, start: int = 0) -> Iterator[dict[str, object]]:
    return (contact(i) for i in range(start, start + n))


# -- contradictory or extreme settings ------------------------------------------------------------


async def test_max_concurrency_1_adaptive_sends_one_at_a_time() -> None:
    limits = Limits(max_concurrency=1, adaptive_concurrency=True)
    config = EmulatorConfig(capacity=4, service_time=0.002)
    async with Emulator(config) as emu:
        client, governor = _client(emu, limits)
        async with client:
            client.transport.governor = governor
            before = Snapshot.take(emu)
            result = await asyncio.wait_for(client.import_contacts(_rows(40)), LIMIT)
        assert_account(result, read=40, emulator=emu, before=before, campaign_id=538)
    assert result.succeeded == 40
    assert set(governor.limits_seen) == {1}
    assert max(governor.in_flight) == 1 and max(governor.at_server) <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrency": 2, "min_concurrency": 5}, "min_concurrency"),
        ({"min_concurrency": 17}, "must not exceed max_concurrency"),  # the default max is 16
        ({"min_concurrency": 0}, "min_concurrency"),
        ({"min_concurrency": True}, "min_concurrency"),
        ({"probe_interval": 0}, "probe_interval"),
        ({"probe_interval": float("inf")}, "probe_interval"),
    ],
)
def test_contradictory_adaptive_settings_are_refused_at_construction(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(adaptive_concurrency=True, **kwargs)  # type: ignore[arg-type]


async def test_job_concurrency_below_the_floor_is_not_an_error() -> None:
    """A job asking for fewer workers than the adaptive floor: the job's own number wins (the
    gate never admits more than there are workers), and the limit is not pushed around by a
    job that cannot fill it (app-limited windows hold)."""
    limits = Limits(max_concurrency=16, min_concurrency=8, adaptive_concurrency=True)
    async with Emulator(EmulatorConfig(capacity=4, service_time=0.002)) as emu:
        client, governor = _client(emu, limits)
        async with client:
            client.transport.governor = governor
            before = Snapshot.take(emu)
            result = await asyncio.wait_for(client.import_contacts(_rows(60), concurrency=2), LIMIT)
        assert_account(result, read=60, emulator=emu, before=before, campaign_id=538)
    assert result.succeeded == 60
    assert max(governor.in_flight) <= 2
    assert min(governor.limits_seen) >= 8 and max(governor.limits_seen) <= 16


# -- servers that only push back ------------------------------------------------------------------


@pytest.mark.parametrize("fault", [FaultKind.UNAVAILABLE, FaultKind.RATE_LIMITED])
async def test_a_server_that_only_refuses_pins_the_limit_at_its_floor(fault: FaultKind) -> None:
    """Every answer a 503 (or a 429 with Retry-After 0): the limit goes to the floor and stays
    there, never below; nothing was processed, so every row FAILED with its reason."""
    # adaptive=False: no rate cut on 429 (that is issue 11's rule, tested in test_pacing; with
    # it the job would crawl at 1 request/s), so this tests the concurrency limit alone
    limits = Limits(max_concurrency=8, min_concurrency=2, adaptive_concurrency=True, adaptive=False)
    config = EmulatorConfig(faults={fault: 1.0}, retry_after=0, seed=3)
    retry = RetryPolicy(
        max_attempts=3, initial_backoff=0.001, max_backoff=0.002, deadline=30.0, budget=None
    )
    async with Emulator(config) as emu:
        client, governor = _client(emu, limits, retry)
        async with client:
            client.transport.governor = governor
            # a job that starts at the floor has nothing to cut: start it higher
            assert governor.adaptive is not None
            governor.adaptive._probing = False
            governor.adaptive.baseline = 0.001
            governor.adaptive.value = 8.0
            before = Snapshot.take(emu)
            result = await asyncio.wait_for(client.import_contacts(_rows(60)), LIMIT)
        assert_account(result, read=60, emulator=emu, before=before, campaign_id=538)
    assert result.counts[Outcome.FAILED] == 60
    assert min(governor.limits_seen) == 2  # reached the floor (the test is not vacuous) ...
    assert governor.limits_seen[-1] == 2  # ... stayed there ...
    assert max(governor.in_flight) <= 8  # ... and never went past the ceiling


# overwrite=True: an upsert (idempotent) that timed out on every attempt may have landed: it is
# AMBIGUOUS (harmless to send again), never FAILED ("nothing done").
@pytest.mark.parametrize("overwrite", [False, True])
async def test_a_server_slower_than_the_timeout_pins_the_limit_and_loses_nothing(
    overwrite: bool,
) -> None:
    """Every request takes longer than the client's timeout (the write lands late): every
    attempt is a congestion signal, the limit sinks to the floor, and every row is accounted
    (AMBIGUOUS or FAILED: never SUCCEEDED on a guess, never lost)."""
    limits = Limits(max_concurrency=6, min_concurrency=1, adaptive_concurrency=True)
    config = EmulatorConfig(faults={FaultKind.SLOW: 1.0}, slow_seconds=0.15, seed=5)
    retry = RetryPolicy(
        max_attempts=2, initial_backoff=0.001, max_backoff=0.002, deadline=30.0, budget=None
    )
    async with Emulator(config) as emu:
        client, governor = _client(emu, limits, retry, timeout=0.03)
        async with client:
            client.transport.governor = governor
            assert governor.adaptive is not None
            governor.adaptive._probing = False
            governor.adaptive.baseline = 0.001
            governor.adaptive.value = 6.0
            before = Snapshot.take(emu)
            result = await asyncio.wait_for(
                client.import_contacts(_rows(12), overwrite_duplicates=overwrite), LIMIT
            )
        await emu.faults.settled()
        assert_account(result, read=12, emulator=emu, before=before, campaign_id=538)
    assert result.succeeded == 0
    assert min(governor.limits_seen) >= 1 and max(governor.in_flight) <= 6
    if overwrite:
        # An upsert is AMBIGUOUS after its two attempts, with no lookups: fewer congestion
        # signals than a plain import, so how far the limit sinks depends on their timing.
        assert min(governor.limits_seen) < 6
    else:
        assert min(governor.limits_seen) == 1 and governor.limits_seen[-1] == 1


async def test_capacity_changed_mid_job_keeps_the_limit_in_bounds_and_the_account_exact() -> None:
    """The capacity drops to 1 with a short queue (503 beyond it) a third of the way in and comes
    back two thirds in, at points set by rows done, not by time."""
    limits = Limits(max_concurrency=12, min_concurrency=2, adaptive_concurrency=True)
    config = EmulatorConfig(capacity=8, service_time=0.002, queue_limit=1)
    patient = RetryPolicy(
        max_attempts=50, initial_backoff=0.002, max_backoff=0.01, deadline=60.0, budget=None
    )
    async with Emulator(config) as emu:
        client, governor = _client(emu, limits, patient)

        def steer(progress: object) -> None:
            done = getattr(progress, "done", 0)
            if 100 <= done < 200 and emu.config.capacity != 1:
                emu.configure(capacity=1)
            elif done >= 200 and emu.config.capacity != 8:
                emu.configure(capacity=8)

        async with client:
            client.transport.governor = governor
            before = Snapshot.take(emu)
            result = await asyncio.wait_for(
                client.import_contacts(_rows(300), on_progress=steer, progress_interval=0.0),
                LIMIT,
            )
        assert_account(result, read=300, emulator=emu, before=before, campaign_id=538)
    assert result.succeeded == 300
    assert min(governor.limits_seen) >= 2 and max(governor.limits_seen) <= 12
    assert max(governor.in_flight) <= 12
    assert max(governor.at_server) <= 12


# -- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_twice_mid_job_frees_every_slot_of_the_adaptive_gate() -> None:
    """Two cancels while requests queue inside the server: the account is exact, the gate holds
    nothing afterwards (a leaked slot would shrink the client for good), and the same client
    runs the next job to the end."""
    limits = Limits(max_concurrency=8, adaptive_concurrency=True)
    async with Emulator(EmulatorConfig(capacity=2, service_time=0.01)) as emu:
        client, governor = _client(emu, limits)
        async with client:
            client.transport.governor = governor
            before = Snapshot.take(emu)
            read = 0

            def rows() -> Iterator[dict[str, object]]:
                nonlocal read
                for i in range(2000):
                    read += 1
                    yield contact(i)

            task = asyncio.create_task(client.import_contacts(rows(), grace=5.0))
            while len(governor.limits_seen) < PROBE_SAMPLES + 20:
                await asyncio.sleep(0.005)
            task.cancel()
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await asyncio.wait_for(task, LIMIT)
            result = info.value.bulk_result  # type: ignore[attr-defined]
            await emu.faults.settled()
            assert_account(result, read=read, emulator=emu, before=before, campaign_id=538)
            assert governor._gate.held == 0 and governor._gate.waiting == 0
            assert governor.sending == 0
            again = await asyncio.wait_for(client.import_contacts(_rows(30, 5000)), LIMIT)
            assert again.succeeded == 30
            assert governor._gate.held == 0 and governor.sending == 0
    assert min(governor.limits_seen) >= 1 and max(governor.limits_seen) <= 8


# -- the rate limit and the adaptive limit together -----------------------------------------------


async def test_rate_and_adaptive_together_the_lower_wins() -> None:
    """A rate of 20/s with requests of 20 ms: never more than one in flight is needed, so the
    rate is the binding limit. Starts stay 1/20 s apart (fake clock), the in-flight count stays
    within the adaptive limit, and the adaptive limit does not grow on windows the rate held
    back (it would otherwise jump to the ceiling and release a burst once the rate is lifted)."""
    clock = FakeClock()
    limits = Limits(max_concurrency=32, max_per_second=20, adaptive_concurrency=True)
    governor = Governor(limits, clock=clock, sleep=clock.sleep)
    starts: list[float] = []
    in_flight: list[tuple[int, int]] = []

    async def request() -> None:
        started = await governor.acquire()
        starts.append(started)
        in_flight.append((governor.sending, governor.concurrency_limit))
        await clock.sleep(0.02)
        governor.release(started, Signal.OK)

    await asyncio.gather(*(request() for _ in range(120)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 20 - 1e-9
    assert all(sending <= limit for sending, limit in in_flight)
    assert governor.adaptive is not None and not governor.adaptive.probing
    # after the probe the limit is the initial 4 and the rate-bound windows never raised it
    assert governor.concurrency_limit <= 4


async def test_a_low_adaptive_limit_holds_back_a_generous_rate() -> None:
    """The other way round: a rate of 1000/s, a limit cut to 2: at most 2 in flight."""
    clock = FakeClock()
    limits = Limits(max_concurrency=32, max_per_second=1000, adaptive_concurrency=True)
    governor = Governor(limits, clock=clock, sleep=clock.sleep)
    assert governor.adaptive is not None
    governor.adaptive._probing = False
    governor.adaptive.baseline = 0.02
    governor.adaptive.value = 2.0
    governor._gate.limit = 2
    most = 0

    async def request() -> None:
        nonlocal most
        started = await governor.acquire()
        most = max(most, governor.sending)
        await clock.sleep(0.1)  # 5 x the baseline: a queue, the limit stays low
        governor.release(started, Signal.OK)

    await asyncio.gather(*(request() for _ in range(40)))
    assert most == 2
