"""Shared fixtures: an in-process emulator on loopback, a client for it, and a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from dialler_async import DiallerClient, Limits, RetryPolicy
from dialler_async.emulator import Emulator, EmulatorConfig

pytest_plugins = ["dialler_async.emulator.pytest_plugin"]


class FakeClock:
    """Virtual time for tests: ``sleep`` never waits for real.

    Sleepers are woken one at a time in wake-up order, each after a few loop iterations (so
    every task that is ready gets to run and register its own sleep first); time then jumps
    to that wake-up. ``sleeps`` records every delay asked for.
    """

    _TICKS = 5

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._advancing = False

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._heap, (self.now + max(delay, 0.0), self._seq, future))
        if not self._advancing:
            self._advancing = True
            loop.call_soon(self._step, self._TICKS)
        await future

    def _step(self, ticks: int) -> None:
        loop = asyncio.get_running_loop()
        if ticks:
            loop.call_soon(self._step, ticks - 1)
            return
        while self._heap:
            wake, _, future = heapq.heappop(self._heap)
            if not future.done():
                self.now = max(self.now, wake)
                future.set_result(None)
                break
        if self._heap:
            loop.call_soon(self._step, self._TICKS)
        else:
            self._advancing = False


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=30.0)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig()) as emu:
        yield emu


@pytest.fixture
async def client(emulator: Emulator, clock: FakeClock) -> AsyncIterator[DiallerClient]:
    """A client whose retry sleeps are instant (fake clock); HTTP is real."""
    async with DiallerClient(
        emulator.base_url,
        emulator.client_id,
        emulator.token,
        limits=Limits(max_concurrency=8),
        retry=FAST_RETRY,
        timeout=5.0,
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        yield c


def contact(n: int, **fields: object) -> dict[str, object]:
    """A valid import row in the API's spelling."""
    row: dict[str, object] = {
        "Name": f"Mustermann{n}",
        "FirstName": "Max",
        "DiallerCampaignsID": 538,
        "PhoneNumber1": f"+4930{n:07d}",
        "UserData": f"CRM-{n:06d}",
    }
    row.update(fields)
    return row


# A tiny canned server on loopback: each request is answered by the next handler of the list
# (for answers the emulator never gives: odd bodies, broken streams).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(answer: Handler) -> AsyncIterator[str]:
    """Serve every request with ``answer`` on loopback; yields the base URL (``/rest/v1.0``)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/rest/v1.0"
    finally:
        await runner.cleanup()


@pytest.fixture
async def canned_server() -> AsyncIterator[tuple[list[Handler], str]]:
    """The handlers to answer with, one per request, and the server's base URL."""
    handlers: list[Handler] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        return await handlers.pop(0)(request)

    async with serving(answer) as base_url:
        yield handlers, base_url


@pytest.fixture
async def canned() -> AsyncIterator[tuple[DiallerClient, list[web.StreamResponse]]]:
    """A client (no retries) of a server giving the queued answers, one per request."""
    answers: list[web.StreamResponse] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        return answers.pop(0)

    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never()) as c,
    ):
        yield c, answers
