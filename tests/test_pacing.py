"""Pacing and hostile servers: one admission path, capped pauses, bounded answers, no redirects.

Time is fake (tests/conftest.py FakeClock) wherever waiting is what is tested; HTTP is real, on
loopback, against the emulator or a small canned server.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dialler_async import (
    ConfigurationError,
    DiallerClient,
    Limits,
    RateLimitError,
    RedirectError,
    ResponseFormatError,
    RetryPolicy,
)
from dialler_async._retry import may_have_landed
from dialler_async.emulator import Emulator, FaultKind
from dialler_async.emulator._faults import max_in_window

from .conftest import FakeClock, contact
from .invariants import Counted, Snapshot, assert_account

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a canned loopback server for one handler; yields its /rest/v1.0 base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/rest/v1.0"

    yield start
    for runner in runners:
        await runner.cleanup()


CAMPAIGNS_OK = b'{"status":200,"records":[{"ID":538,"Name":"Spring Campaign"}]}'


async def test_a_retry_after_above_the_cap_fails_that_call_and_freezes_nobody(
    serve: Callable[[Handler], Awaitable[str]], clock: FakeClock
) -> None:
    throttle = [True]

    async def handler(request: web.Request) -> web.Response:
        if throttle and request.path.endswith("/import"):
            throttle.clear()
            return web.json_response({"status": 429}, status=429, headers={"Retry-After": "3600"})
        return web.Response(body=CAMPAIGNS_OK, content_type="application/json")

    base = await serve(handler)
    policy = RetryPolicy(max_retry_after=120.0)
    async with DiallerClient(base, 7, "tok", retry=policy, clock=clock, sleep=clock.sleep) as c:
        with pytest.raises(RateLimitError) as caught:
            await c.import_contact(contact(1))
        assert caught.value.retry_after == 3600.0
        started = clock()
        campaigns = await asyncio.wait_for(c.list_campaigns(), timeout=10)
        assert [x.id for x in campaigns] == [538]
        assert clock() == started and not any(s > 0 for s in clock.sleeps)
        assert c.transport.governor.throttled == 1


async def test_an_http_date_in_2100_does_not_freeze_the_client(
    serve: Callable[[Handler], Awaitable[str]], clock: FakeClock
) -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.method == "POST":
            headers = {"Retry-After": "Tue, 30 Nov 2100 12:00:00 GMT"}
            return web.json_response({"status": 429}, status=429, headers=headers)
        return web.Response(body=CAMPAIGNS_OK, content_type="application/json")

    base = await serve(handler)
    async with DiallerClient(base, 7, "tok", clock=clock, sleep=clock.sleep) as c:
        with pytest.raises(RateLimitError):
            await c.import_contact(contact(1))
        await asyncio.wait_for(c.list_campaigns(), timeout=10)
        assert not any(s > 1 for s in clock.sleeps)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(
    serve: Callable[[Handler], Awaitable[str]], status: int
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.Response(status=status, headers={"Location": "http://elsewhere.test/x"})

    base = await serve(handler)
    async with DiallerClient(base, 7, "tok", retry=RetryPolicy.never()) as c:
        with pytest.raises(RedirectError) as caught:
            await c.import_contact(contact(1))
    assert caught.value.status == status
    assert "elsewhere.test" in str(caught.value) and "not followed" in str(caught.value)
    assert seen == ["POST /rest/v1.0/7/dialler/contacts/import"]


async def test_an_oversized_answer_is_refused_while_it_is_read(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    record = b'{"status":200,"records":[{"ID":1,"Name":"' + b"x" * (8 * 1024 * 1024) + b'"}]}'

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=record, content_type="application/json")

    base = await serve(handler)
    async with DiallerClient(
        base, 7, "tok", retry=RetryPolicy.never(), max_answer_bytes=1024 * 1024
    ) as c:
        with pytest.raises(ResponseFormatError, match="1,048,576-byte limit"):
            await c.get_contact(1)
        # A list answer has its own, larger limit.
        contacts = await c.list_contacts()
        assert len(contacts) == 1


def _gzip_bomb(inflated: int) -> bytes:
    """A gzip body of well under 1 MiB that inflates to ``inflated`` bytes."""
    zeros = bytes(1024 * 1024)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as writer:
        writer.write(b'{"status":200,"records":[{"ID":1,"Name":"')
        for _ in range(inflated // len(zeros)):
            writer.write(zeros)
    return buffer.getvalue()


async def test_a_gzip_bomb_is_refused_with_memory_bounded(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    bomb = _gzip_bomb(256 * 1024 * 1024)
    assert len(bomb) < 1024 * 1024

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    base = await serve(handler)
    async with DiallerClient(
        base, 7, "tok", retry=RetryPolicy.never(), max_answer_bytes=4 * 1024 * 1024
    ) as c:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseFormatError, match="limit"):
                await c.get_contact(1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB while refusing a gzip bomb"


@pytest.mark.parametrize("token", ["tok\r\n", "  tok  ", "\ttok\n"])
async def test_whitespace_around_a_token_is_stripped(
    serve: Callable[[Handler], Awaitable[str]], token: str
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.Response(body=CAMPAIGNS_OK, content_type="application/json")

    base = await serve(handler)
    async with DiallerClient(base, 7, token) as c:
        await c.list_campaigns()
    assert seen == ["Bearer tok"]


@pytest.mark.parametrize("token", ["to\r\nken", "tok\x00", "a\x7fb", "", "   "])
def test_a_token_with_control_characters_is_refused_at_construction(token: str) -> None:
    with pytest.raises(ConfigurationError, match="token") as caught:
        DiallerClient("http://127.0.0.1:1/rest/v1.0", 7, token)
    assert token.strip() == "" or token not in str(caught.value)


def test_a_token_file_from_windows_works(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbfsecret\r\n")
    env = {
        "DIALLER_BASE_URL": "http://127.0.0.1:1/rest/v1.0",
        "DIALLER_CLIENT_ID": "7",
        "DIALLER_TOKEN_FILE": str(path),
    }
    client = DiallerClient.from_env(env)
    assert client._token == "secret"
    assert "secret" not in repr(client)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_answer_bytes": 0}, "max_answer_bytes"),
        ({"max_list_answer_bytes": -1}, "max_list_answer_bytes"),
    ],
)
def test_client_options_are_checked_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DiallerClient("http://127.0.0.1:1/rest/v1.0", 7, "tok", **kwargs)


async def test_job_options_are_checked_before_anything_is_sent(
    client: DiallerClient, emulator: Emulator
) -> None:
    for options in ({"rate": -5}, {"rate": float("nan")}, {"concurrency": -1}, {"concurrency": 0}):
        with pytest.raises(ValueError, match=r"rate|concurrency"):
            await asyncio.wait_for(client.import_contacts([contact(1)], **options), timeout=10)
    assert emulator.stats.requests.total() == 0


async def test_the_job_rate_covers_retries_and_lookups(
    emulator: Emulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """update_contacts(rate=5) under 30% 503s: every attempt, retries included, is paced."""
    for n in range(30):
        emulator.store.insert(emulator.client_id, contact(n))
    emulator.configure(faults={FaultKind.UNAVAILABLE: 0.3}, seed=7)
    async with emulator.client(
        retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=60.0),
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        starts: list[float] = []
        request = c.transport.session.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            starts.append(clock())
            return request(*args, **kwargs)

        monkeypatch.setattr(c.transport.session, "request", timed)
        before = Snapshot.take(emulator)
        rows = Counted([{"UserData": f"CRM-{n:06d}", "Memo": "paced"} for n in range(30)])
        result = await asyncio.wait_for(
            c.update_contacts(rows, rate=5, keep_results=True), timeout=60
        )
    assert_account(result, read=rows.read, emulator=emulator, before=before)
    assert result.retries > 0 and len(starts) == result.requests
    assert max_in_window(starts) <= 5 + 1, starts


async def test_a_429_storm_ends_the_job_within_the_deadline(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.configure(faults={FaultKind.RATE_LIMITED: 1.0}, retry_after=0, seed=1)
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=5.0, deadline=60.0)
    async with emulator.client(
        retry=policy, limits=Limits(max_concurrency=8), clock=clock, sleep=clock.sleep
    ) as c:
        started = clock()
        before = Snapshot.take(emulator)
        rows = Counted([contact(n) for n in range(1000)])
        result = await asyncio.wait_for(
            c.import_contacts(rows, overwrite_duplicates=True, keep_results=True), timeout=120
        )
        elapsed = clock() - started
    assert_account(result, read=rows.read, emulator=emulator, before=before, upsert=True)
    assert result.failed == 1000 and result.succeeded == 0
    assert all(isinstance(f.error, RateLimitError) for f in result.failures)
    assert any("throttled" in str(f.error) for f in result.failures)
    # Bounded: no grinding on at the 1/s floor for every row (that took ~66 minutes).
    assert elapsed < 3 * policy.deadline, elapsed  # type: ignore[operator]
    assert emulator.stats.requests.total() < 400


async def test_429s_spend_the_retry_budget(emulator: Emulator, clock: FakeClock) -> None:
    emulator.configure(faults={FaultKind.RATE_LIMITED: 1.0}, retry_after=0, seed=1)
    policy = RetryPolicy(budget=20, retry_cost=5, deadline=None, max_attempts=100)
    async with emulator.client(retry=policy, clock=clock, sleep=clock.sleep) as c:
        with pytest.raises(RateLimitError):
            await asyncio.wait_for(c.import_contact(contact(1)), timeout=30)
        assert c.transport.budget is not None and c.transport.budget.tokens == 0
    assert emulator.stats.requests.total() == 5  # four paid retries, then the budget is dry


def test_a_storm_error_was_never_sent() -> None:
    error = RateLimitError(429, "throttled", method="POST", path="/x")
    error.storm = True
    assert not may_have_landed(error)  # an unsent write is a clean FAILED, never AMBIGUOUS


async def test_the_job_rate_covers_reconciliation_lookups(
    emulator: Emulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain imports (no overwrite) whose connection drops are checked by lookup (GET by
    UserData), and a lost one is resent after the settle wait: those lookups and resends pass
    the job's rate too, so the server never sees more than rate + 1 arrivals in a second."""
    emulator.configure(
        faults={FaultKind.DROP_AFTER: 0.2, FaultKind.DROP_BEFORE: 0.2},
        fault_operations={"import_contact"},
        seed=5,
    )
    async with emulator.client(
        retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=60.0),
        clock=clock,
        sleep=clock.sleep,
    ) as c:
        starts: list[tuple[float, str]] = []
        request = c.transport.session.request

        def timed(method: str, *args: Any, **kwargs: Any) -> Any:
            starts.append((clock(), method))
            return request(method, *args, **kwargs)

        monkeypatch.setattr(c.transport.session, "request", timed)
        before = Snapshot.take(emulator)
        rows = Counted([contact(n) for n in range(30)])
        result = await asyncio.wait_for(
            c.import_contacts(rows, overwrite_duplicates=False, rate=5, keep_results=True),
            timeout=60,
        )
    assert_account(result, read=rows.read, emulator=emulator, before=before)
    lookups = [t for t, method in starts if method == "GET"]
    assert lookups, "no reconciliation lookup happened: the test would prove nothing"
    assert result.items is not None and any(r.reconciled for r in result.items)
    assert max_in_window([t for t, _ in starts]) <= 5 + 1, starts


async def test_an_oversized_answer_without_a_length_is_refused_with_memory_bounded(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """A chunked answer (no Content-Length to refuse up front) is cut off while it is read."""
    piece = b"x" * (1024 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"status":200,"records":[{"ID":1,"Name":"')
        try:
            for _ in range(64):
                await response.write(piece)
        except ConnectionError:  # the client hung up once it had enough: expected
            pass
        return response

    base = await serve(handler)
    async with DiallerClient(
        base, 7, "tok", retry=RetryPolicy.never(), max_answer_bytes=2 * 1024 * 1024
    ) as c:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseFormatError, match="2,097,152-byte limit"):
                await c.get_contact(1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a 64 MiB answer"
