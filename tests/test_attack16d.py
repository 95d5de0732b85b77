"""Hostile review of three hot-path changes of issue 16 (commits 544aae6, 2bed526).

1. ``Transport.send`` awaits ``session.request(...)`` and calls ``resp.release()`` itself instead
   of ``async with`` (which also awaited the request-body writer): attempts cut off at every
   point of an exchange, servers that answer early, oversized, compressed or half-closed
   answers, and the keep-alive reuse after each; the connector must hold no connection, the
   next request must get a clean one, and nothing may be reported unclosed.
2. ``ItemRunner.send`` makes the first attempt itself, then ``Transport.retry_after``: retries
   after every kind of first failure for every write kind, the deadline, ``__context__``
   chains, the budget refund, ``attempts``, cancellation during the retry sleep.
3. ``Verdict``/``Prepared``/``Reply`` built with ``tuple.__new__``: every ``ItemResult`` field
   of a successful row, as kept, as given to ``on_result`` and as streamed.

Byte-level misbehaviour comes from :class:`RawServer` (asyncio streams on loopback); the rest
from the emulator. Waits are on events the server sets, with generous limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dialler_async import (
    APIStatusError,
    ConnectionLostError,
    DiallerClient,
    DiallerError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
)

from .invariants import cancel_twice

LIMIT = 30.0  # seconds: a bound no healthy run comes near, for waits that must end


# -- a loopback server that misbehaves byte by byte -----------------------------------------------


class Head:
    """A request's head as the raw server read it."""

    def __init__(self, line: str, headers: dict[str, str]) -> None:
        self.method, self.target, _ = line.split(" ", 2)
        self.headers = headers
        self.length = int(headers.get("content-length", "0"))


class Conn:
    """One accepted connection of :class:`RawServer`."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: Any) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def head(self) -> Head | None:
        """The next request's head (None: the client closed the connection)."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *rest = raw.decode("latin-1").split("\r\n")
        headers = {}
        for field in rest:
            if field:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
        return Head(line, headers)

    async def body(self, head: Head) -> bytes:
        return await self.reader.readexactly(head.length)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def record_answer(n: int) -> bytes:
    """A normal per-contact answer naming the server's request number ``n`` (its contact ID): a
    client that read an earlier answer's bytes would see the wrong ID."""
    body = json.dumps(
        {"records": [{"ID": n, "Name": "Ann", "DiallerCampaignsID": 5}], "count": 1, "status": 200}
    ).encode()
    return response(200, body)


def response(status: int, body: bytes, **headers: str) -> bytes:
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


#: How the raw server handles one request: given the connection, the request's head and the
#: server's request number; returns whether to keep the connection open for the next one.
Script = Callable[[Conn, Head, int], Awaitable[bool]]


async def answer_normally(conn: Conn, head: Head, n: int) -> bool:
    await conn.body(head)
    await conn.send(record_answer(n))
    return True


class RawServer:
    """Loopback HTTP/1.1 by hand: request ``n`` (1-based, over all connections) is handled by
    the next script queued (``answer_normally`` once the queue is empty). Counts connections
    and requests; ``eof`` is set whenever a client closes a connection it had open."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.connections = 0
        self.requests = 0
        self.open = 0
        self.reached = asyncio.Event()  # set by scripts that want the test to act
        self.eof = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/rest/v1.0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(Conn(self, reader, writer))
        except asyncio.CancelledError:
            # Ended by __aexit__: end normally (asyncio's streams report a cancelled handler
            # task to the loop's exception handler, which the tests watch).
            pass
        finally:
            self._tasks.discard(task)

    async def _serve(self, conn: Conn) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await conn.head()
                if head is None:
                    break
                self.requests += 1
                script = self.scripts.pop(0) if self.scripts else answer_normally
                if not await script(conn, head, self.requests):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self.eof.set()
            conn.writer.close()


# -- what must hold after every scenario ----------------------------------------------------------


def acquired(client: DiallerClient) -> int:
    connector = client.transport.session.connector
    assert connector is not None
    return len(connector._acquired)


async def released(client: DiallerClient) -> None:
    """No connection is held by the connector (aiohttp may hand a connection back from the
    request-body writer's done callback: a few loop iterations are allowed, never a wait)."""
    for _ in range(20):
        if not acquired(client):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{acquired(client)} connection(s) still acquired")


async def next_request_is_clean(client: DiallerClient, server: RawServer) -> None:
    """The next request gets its own answer (the contact ID is the server's request number)."""
    contact = await asyncio.wait_for(client.get_contact(1), LIMIT)
    assert contact.id == server.requests, (contact.id, server.requests)
    await released(client)


@contextlib.asynccontextmanager
async def nothing_reported() -> AsyncIterator[None]:
    """Warnings are errors; and at the end (after a full collection) no ResourceWarning, no
    "Unclosed ..." or "Task was destroyed ..." went to the loop's exception handler. The loop
    runs in debug mode meanwhile: aiohttp reports an unclosed response only then."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    old_handler = loop.get_exception_handler()
    old_debug = loop.get_debug()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    loop.set_debug(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            for _ in range(3):
                await asyncio.sleep(0)
            gc.collect()
            await asyncio.sleep(0)
            gc.collect()
    finally:
        loop.set_debug(old_debug)
        loop.set_exception_handler(old_handler)
    ours = [
        w
        for w in caught
        if issubclass(w.category, ResourceWarning | RuntimeWarning)
        # aiohttp's debug-mode advice for a body of many MiB (our BIG test body), not a leak
        and "large body" not in str(w.message)
    ]
    assert not ours, [str(w.message) for w in ours]
    assert not seen, [c.get("message") for c in seen]


def raw_client(server: RawServer, *, timeout: float = 5.0, **kw: Any) -> DiallerClient:
    kw.setdefault("retry", RetryPolicy.never())
    return DiallerClient(server.base_url, 7, "tok", timeout=timeout, **kw)


BIG = 32 * 1024 * 1024  # a request body far larger than every socket buffer on the way


def big_body() -> dict[str, str]:
    return {"blob": "x" * BIG}


async def until(condition: Callable[[], bool]) -> None:
    """Wait (polling the loop, bounded by LIMIT) until ``condition`` holds."""
    async with asyncio.timeout(LIMIT):
        while not condition():
            await asyncio.sleep(0.001)


def writers_left() -> list[asyncio.Task[Any]]:
    """aiohttp's request-body writer tasks still pending."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "write_bytes" in getattr(t.get_coro(), "__qualname__", "")
    ]


async def read_to_eof(conn: Conn) -> None:
    """Read (and drop) whatever the client still sends, until it closes the connection."""
    while await conn.reader.read(65536):
        pass


IMPORT = "/dialler/contacts/import"

# -- 1. Transport.send: an attempt cut off at each point of the exchange -------------------------


def stall_at(point: str, release: asyncio.Event) -> Script:
    """A script that lets the exchange reach ``point`` and stalls there until ``release``,
    then reads to EOF: it returns only once the client has closed the connection (a client
    that kept it open, half-used, would hang it)."""

    async def script(conn: Conn, head: Head, n: int) -> bool:
        if point != "writing the body":
            await conn.body(head)
        if point == "reading the answer":
            await conn.send(response(200, b"x" * 10, Content_Length="1000")[:-10] + b"x" * 10)
        conn.server.reached.set()
        await release.wait()
        await read_to_eof(conn)
        return False

    return script


POINTS = ["writing the body", "awaiting the headers", "reading the answer"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("how", ["deadline", "cancelled twice"])
async def test_an_attempt_cut_off_leaves_no_connection_and_the_next_is_clean(
    point: str, how: str
) -> None:
    release = asyncio.Event()
    async with nothing_reported(), RawServer() as server:
        server.scripts.append(stall_at(point, release))
        body = big_body() if point == "writing the body" else {"Name": "Ann"}
        async with raw_client(server, timeout=0.5 if how == "deadline" else LIMIT) as c:
            call = asyncio.create_task(c.transport.send("POST", IMPORT, body))
            await asyncio.wait_for(server.reached.wait(), LIMIT)
            if point == "writing the body":
                assert writers_left()  # the body is still on its way, the point is reached
            if how == "deadline":
                with pytest.raises(RequestTimeoutError) as info:
                    await asyncio.wait_for(call, LIMIT)
                assert info.value.request_sent
            else:
                await cancel_twice(call, LIMIT)
            await released(c)
            assert not writers_left()
            release.set()
            await until(lambda: server.open == 0)  # the client closed the half-used connection
            await next_request_is_clean(c, server)
            assert server.connections == 2
            assert c.transport.governor.sending == 0
