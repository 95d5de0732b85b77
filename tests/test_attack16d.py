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
import os
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from dialler_async import (
    APIStatusError,
    BulkResult,
    ConnectionLostError,
    DiallerClient,
    DiallerError,
    ItemResult,
    Limits,
    Operation,
    Outcome,
    PhonePolicy,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
)
from dialler_async.emulator import Emulator, FaultKind

from .conftest import FakeClock, Handler, contact, serving
from .invariants import Snapshot, assert_account, bulk_result_of, cancel_twice, no_job_tasks

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
    assert not writers_left()
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


# -- 1. Transport.send: a server that answers before it has read the request ---------------------


def early_answer(status: int, keep: str, release: asyncio.Event, **headers: str) -> Script:
    """Answer ``status`` having read only the head of a request whose body is still on its way;
    ``keep``: "open" keeps the connection (reads nothing until ``release``, then to EOF: the
    client must drop a connection whose request it did not finish), "close" closes it at once
    (with the body unread: a reset), "half-close" stops sending and reads to EOF."""

    async def script(conn: Conn, head: Head, n: int) -> bool:
        body = json.dumps({"error": f"early {status}"}).encode()
        if keep == "close":
            headers["Connection"] = "close"
        await conn.send(response(status, body, **headers))
        conn.server.reached.set()
        if keep == "open":
            await release.wait()
        elif keep == "half-close":
            conn.writer.write_eof()
        if keep != "close":
            await read_to_eof(conn)
        return False

    return script


@pytest.mark.parametrize("keep", ["open", "close", "half-close"])
@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (413, {}, APIStatusError),
        (500, {}, ServerError),
        (429, {"Retry_After": "7"}, RateLimitError),
    ],
)
async def test_an_answer_before_the_body_was_read_leaves_no_connection(
    keep: str, status: int, headers: dict[str, str], error: type[DiallerError]
) -> None:
    release = asyncio.Event()
    async with nothing_reported(), RawServer() as server:
        server.scripts.append(early_answer(status, keep, release, **headers))
        async with raw_client(server) as c:
            with pytest.raises(DiallerError) as info:
                await asyncio.wait_for(c.transport.send("POST", IMPORT, big_body()), LIMIT)
            # The answer, or (the server closed with the body unread: a reset may come first)
            # a lost connection; never anything else, and nothing held either way.
            assert isinstance(info.value, error | ConnectionLostError), info.value
            if keep == "open":
                assert isinstance(info.value, error)
            if isinstance(info.value, RateLimitError):
                assert info.value.retry_after == 7.0
            await released(c)
            assert not writers_left()
            release.set()
            await until(lambda: server.open == 0)
            await next_request_is_clean(c, server)
            assert server.connections == 2


async def test_an_early_answer_to_a_small_body_keeps_the_connection_for_the_next() -> None:
    """The body was on its way in full when the answer came: the connection is whole, reused."""

    async def early_then_read(conn: Conn, head: Head, n: int) -> bool:
        await conn.send(response(413, b'{"error": "too large"}'))
        await conn.body(head)
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(early_then_read)
        async with raw_client(server) as c:
            with pytest.raises(APIStatusError) as info:
                await c.transport.send("POST", IMPORT, {"Name": "Ann"})
            assert info.value.status == 413
            await released(c)
            await next_request_is_clean(c, server)
            await next_request_is_clean(c, server)
            assert server.connections == 1


# -- 1. Transport.send: oversized, compressed and odd answers, and the connection after each ----


def stalled_answer(head_and_start: bytes, release: asyncio.Event) -> Script:
    """Send the start of an answer that would be larger, stall until ``release``, read to EOF."""

    async def script(conn: Conn, head: Head, n: int) -> bool:
        await conn.body(head)
        await conn.send(head_and_start)
        conn.server.reached.set()
        await release.wait()
        await read_to_eof(conn)
        return False

    return script


def chunked(*chunks: bytes, last: bool = True, encoding: str | None = None) -> bytes:
    """A chunked 200 answer of ``chunks`` (``last``: with its terminating chunk)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if encoding is not None:
        head += f"Content-Encoding: {encoding}\r\n".encode()
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + body + (b"0\r\n\r\n" if last else b"")


GZIP_BOMB = gzip.compress(b" " * 4_000_000)  # 4 MB of JSON whitespace in ~4 KB


@pytest.mark.parametrize(
    "answer",
    [
        # a declared length over the limit, with only its first bytes sent
        response(200, b"x" * 100_000)[:-99_000],
        # chunked, past the limit, never finished
        chunked(*[b" " * 512] * 20, last=False),
        # gzip that inflates past the limit, its compressed length declared and sent in full
        response(200, GZIP_BOMB, Content_Encoding="gzip"),
        # the same, chunked
        chunked(GZIP_BOMB[:2000], GZIP_BOMB[2000:], encoding="gzip"),
    ],
    ids=["declared", "chunked", "gzip", "gzip-chunked"],
)
async def test_an_answer_over_the_limit_is_refused_and_the_next_request_is_clean(
    answer: bytes,
) -> None:
    release = asyncio.Event()
    async with nothing_reported(), RawServer() as server:
        server.scripts.append(stalled_answer(answer, release))
        async with raw_client(server, max_answer_bytes=8_000) as c:
            with pytest.raises(ResponseFormatError, match="8,000-byte limit"):
                await asyncio.wait_for(c.transport.send("POST", IMPORT, {"Name": "Ann"}), LIMIT)
            await released(c)
            release.set()
            # The refused answer's connection is never reused: the server sees it closed.
            await until(lambda: server.open == 0)
            await next_request_is_clean(c, server)
            assert server.connections == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_compressed_answer_is_read_and_its_connection_reused(
    encoding: str, framing: str
) -> None:
    async def compressed(conn: Conn, head: Head, n: int) -> bool:
        await conn.body(head)
        plain = record_answer(n).split(b"\r\n\r\n", 1)[1]
        packed = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
        if framing == "length":
            await conn.send(response(200, packed, Content_Encoding=encoding))
        else:
            await conn.send(chunked(packed[:5], packed[5:], encoding=encoding))
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(compressed)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)  # the compressed one
            await next_request_is_clean(c, server)
            assert server.connections == 1


async def test_an_answer_read_to_eof_is_not_reused() -> None:
    """No length, no chunks: the answer ends where the server half-closes."""

    async def to_eof(conn: Conn, head: Head, n: int) -> bool:
        await conn.body(head)
        plain = record_answer(n).split(b"\r\n\r\n", 1)[1]
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + plain)
        conn.writer.write_eof()
        await read_to_eof(conn)
        return False

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(to_eof)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)
            await until(lambda: server.open == 0)
            await next_request_is_clean(c, server)
            assert server.connections == 2


async def test_a_kept_connection_the_server_half_closes_afterwards_is_not_reused() -> None:
    async def then_half_close(conn: Conn, head: Head, n: int) -> bool:
        await answer_normally(conn, head, n)
        conn.writer.write_eof()
        await read_to_eof(conn)
        return False

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(then_half_close)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)
            # The client closes its end when it sees the server's: the server's read ends.
            await until(lambda: server.open == 0)
            await next_request_is_clean(c, server)
            assert server.connections == 2


async def test_bytes_after_an_answer_never_become_the_next_answer() -> None:
    """A server that sends a second, unasked-for answer behind the first one on a kept
    connection: the next request must get its own answer, not the stale one."""

    async def with_a_stale_answer(conn: Conn, head: Head, n: int) -> bool:
        await conn.body(head)
        await conn.send(record_answer(n) + record_answer(666))
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(with_a_stale_answer)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)
            await next_request_is_clean(c, server)
            assert server.connections == 2  # aiohttp drops a connection with bytes left over


async def test_an_answer_the_server_sends_unasked_on_an_idle_connection_is_not_taken() -> None:
    """The stale answer comes after the connection went back to the pool, while it idles."""
    idle = asyncio.Event()

    async def later_a_stale_answer(conn: Conn, head: Head, n: int) -> bool:
        await answer_normally(conn, head, n)
        await idle.wait()
        await conn.send(record_answer(666))
        conn.server.reached.set()
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(later_a_stale_answer)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)
            idle.set()
            await asyncio.wait_for(server.reached.wait(), LIMIT)
            await until(lambda: queued(c))  # the stale answer is in; the pool holds it
            await next_request_is_clean(c, server)
            assert server.connections == 2


def queued(client: DiallerClient) -> bool:
    """Whether an idle pooled connection holds data no request asked for."""
    connector = client.transport.session.connector
    assert connector is not None
    return any(proto.should_close for conns in connector._conns.values() for proto, _ in conns)


async def test_a_reset_after_the_request_leaves_no_connection() -> None:
    async def reset(conn: Conn, head: Head, n: int) -> bool:
        await conn.body(head)
        conn.writer.transport.abort()
        return False

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(reset)
        async with raw_client(server) as c:
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(c.transport.send("POST", IMPORT, {"Name": "Ann"}), LIMIT)
            await released(c)
            await next_request_is_clean(c, server)
            assert server.connections == 2


async def test_an_unasked_answer_does_not_shift_a_jobs_answers_by_one() -> None:
    """What the stale answer costs a bulk import without UserData (no check of the answer
    against the request is possible): every later row on that connection would get the answer
    to the row before it, and report another contact's ID as its own."""
    idle = asyncio.Event()

    async def imported(conn: Conn, head: Head, n: int) -> bool:
        sent = json.loads(await conn.body(head))
        record = {"ID": 100 + n, "Name": sent["Name"], "DiallerCampaignsID": 538}
        body = json.dumps({"records": [record], "count": 1, "status": 200}).encode()
        await conn.send(response(200, body))
        if n == 1:
            await idle.wait()
            stale = {"ID": 666, "Name": "Stale", "DiallerCampaignsID": 538}
            await conn.send(response(200, json.dumps({"records": [stale], "status": 200}).encode()))
            conn.server.reached.set()
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.extend([imported] * 5)
        async with raw_client(server, limits=Limits(max_concurrency=1)) as c:

            async def rows() -> AsyncIterator[dict[str, object]]:
                yield {"Name": "Row0", "PhoneNumber1": "+4930100"}
                await asyncio.wait_for(server.reached.wait(), LIMIT)
                await until(lambda: queued(c))
                for i in range(1, 5):
                    yield {"Name": f"Row{i}", "PhoneNumber1": f"+493010{i}"}

            result = await asyncio.wait_for(
                c.import_contacts(
                    rows(),
                    overwrite_duplicates=False,
                    campaign_id=538,
                    keep_results=True,
                    # row 0 is answered and its connection back in the pool: now the stale one
                    on_result=lambda item: idle.set(),
                ),
                LIMIT,
            )
    assert result.total == 5
    assert_account(result, read=5)
    items = list(result.items or ())
    assert [i.outcome for i in items] == [Outcome.SUCCEEDED] * 5
    assert [i.record["Name"] for i in items if i.record] == [f"Row{i}" for i in range(5)]
    assert 666 not in [i.contact_id for i in items]


@pytest.mark.parametrize(
    "stray",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # a head the next answer would finish
        b"HTTP/1.1 408 Request Timeout\r\n",
        b"garbage",
    ],
)
async def test_part_of_an_unasked_answer_on_an_idle_connection_is_never_taken(
    stray: bytes,
) -> None:
    """Part of an answer arrives while the connection idles (aiohttp keeps it in its parser,
    where the pool cannot see it): the next request gets its own answer or an error, never a
    made-up one, and the request after it is clean."""
    idle = asyncio.Event()

    async def then_stray(conn: Conn, head: Head, n: int) -> bool:
        await answer_normally(conn, head, n)
        await idle.wait()
        await conn.send(stray)
        conn.server.reached.set()
        return True

    async with nothing_reported(), RawServer() as server:
        server.scripts.append(then_stray)
        async with raw_client(server) as c:
            await next_request_is_clean(c, server)
            idle.set()
            await asyncio.wait_for(server.reached.wait(), LIMIT)
            await asyncio.sleep(0.1)  # let it arrive (if it has not, the test is only weaker)
            try:
                await next_request_is_clean(c, server)
            except DiallerError:
                await released(c)
            await next_request_is_clean(c, server)


# -- 2. ItemRunner.send: the first attempt made inline, the retries after it ---------------------

#: What each write kind runs as a job on ``n`` rows; the contacts 0..n-1 exist beforehand
#: for all but the imports.
JOBS: dict[str, tuple[str, Callable[[DiallerClient, int], Awaitable[BulkResult]]]] = {
    "import-upsert": (
        "import_contact",
        lambda c, n: c.import_contacts(
            [contact(i) for i in range(n)], overwrite_duplicates=True, keep_results=True
        ),
    ),
    "import-create": (
        "import_contact",
        lambda c, n: c.import_contacts(
            [contact(i) for i in range(n)], overwrite_duplicates=False, keep_results=True
        ),
    ),
    "update": (
        "update_contact",
        lambda c, n: c.update_contacts(
            [{"UserData": f"CRM-{i:06d}", "FirstName": "Moritz"} for i in range(n)],
            keep_results=True,
        ),
    ),
    "lock": (
        "lock_contact_by_user_data",
        lambda c, n: c.lock_contacts(
            user_data=[f"CRM-{i:06d}" for i in range(n)], keep_results=True
        ),
    ),
    "delete": (
        "delete_contact_by_user_data",
        lambda c, n: c.delete_contacts(
            user_data=[f"CRM-{i:06d}" for i in range(n)], keep_results=True
        ),
    ),
}

FIRST_FAILURES = [
    FaultKind.SERVER_ERROR,
    FaultKind.RATE_LIMITED,
    FaultKind.UNAVAILABLE,
    FaultKind.DROP_BEFORE,
    FaultKind.DROP_AFTER,
    FaultKind.GATEWAY_TIMEOUT_AFTER,
    FaultKind.SLOW,  # a timeout of the attempt (the write lands late)
]


@pytest.mark.parametrize("fault", FIRST_FAILURES, ids=lambda f: f.value)
@pytest.mark.parametrize("job", list(JOBS))
async def test_every_write_kind_after_every_kind_of_first_failure(
    emulator: Emulator, job: str, fault: FaultKind
) -> None:
    operation, run = JOBS[job]
    n = 6
    if not job.startswith("import"):
        async with emulator.client() as c:
            assert (await c.import_contacts([contact(i) for i in range(n)])).succeeded == n
    emulator.configure(slow_seconds=0.6, retry_after=3)
    before = Snapshot.take(emulator)
    emulator.stats.reset()
    emulator.faults.script(fault, times=1, operation=operation)  # row 0's first attempt
    clock = FakeClock()

    async def sleep(delay: float) -> None:
        # A settle wait before a lookup lasts until the server has finished what it holds.
        if delay >= 0.2:
            await asyncio.wait_for(emulator.faults.settled(), LIMIT)
        await clock.sleep(delay)

    retry = RetryPolicy(
        max_attempts=4,
        initial_backoff=0.01,
        max_backoff=0.05,
        deadline=60.0,
        retry_statuses=frozenset({500, 502, 503, 504}),  # a 500 retried where that is safe
    )
    async with emulator.client(
        limits=Limits(max_concurrency=1), retry=retry, timeout=0.2, clock=clock, sleep=sleep
    ) as c:
        result = await asyncio.wait_for(run(c, n), LIMIT)
        await asyncio.wait_for(emulator.faults.settled(), LIMIT)
        assert_account(
            result,
            read=n,
            emulator=emulator,
            before=before,
            campaign_id=538,
            upsert=job != "import-create",
        )
        items = list(result.items or ())
        first, rest = items[0], items[1:]
        assert all(i.outcome is Outcome.SUCCEEDED and i.error is None for i in rest), rest
        assert all(i.status == 200 and i.attempts == 1 for i in rest), rest
        if job == "delete" and fault in (FaultKind.SERVER_ERROR, FaultKind.DROP_BEFORE):
            # A delete by UserData that may have landed, its contact still there: never
            # resent (docs/reliability.md), whatever the first attempt was.
            assert first.outcome is Outcome.AMBIGUOUS and first.attempts == 1, first
            assert first.error is not None
            return
        assert first.outcome is Outcome.SUCCEEDED and first.error is None, first
        # Row 0 was sent again (by the transport's retry, or the one resend a lookup allows),
        # or, a write not safe to repeat that landed, proven by lookup.
        assert first.attempts >= 2 or first.reconciled, first
        if job in ("import-upsert", "update", "lock"):  # safe to repeat: the transport retried
            assert result.retries == first.attempts - 1 == 1
        if job.startswith("import"):
            assert emulator.store.contact_count() == n
            assert all(i.contact_id is not None for i in items)  # reconciled ones too
            assert all(i.contact is not None and i.contact.id is not None for i in items)
        if job == "delete":
            assert emulator.store.contact_count() == 0
        assert first.status == 200
        if fault is FaultKind.RATE_LIMITED:
            assert result.throttled == 1
            assert 3.0 in clock.sleeps  # the server's Retry-After was kept
        assert c.transport.governor.sending == 0
        assert acquired(c) == 0


async def test_a_reconciled_import_reports_its_contact_id(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts([contact(0)], overwrite_duplicates=False, keep_results=True), LIMIT
    )
    assert_account(result, read=1, emulator=emulator, before=before, upsert=False)
    (item,) = result.items or ()
    assert item.outcome is Outcome.SUCCEEDED and item.reconciled
    assert item.contact is not None and item.contact.id is not None
    assert item.contact_id == item.contact.id


def earlier_errors(error: BaseException) -> list[BaseException]:
    """The errors of our tree ``error`` carries as __context__/__cause__, at any depth."""
    found: list[BaseException] = []
    pending = [e for e in (error.__context__, error.__cause__) if e is not None]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, DiallerError):
            found.append(exc)
        pending += [e for e in (exc.__context__, exc.__cause__) if e is not None]
    return found


def always(status: int, **headers: str) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"error": f"always {status}"}, status=status, headers=headers)

    return answer


FIVE = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, deadline=600.0)


@pytest.mark.parametrize(("status", "headers"), [(503, {}), (429, {"Retry-After": "1"})])
async def test_an_error_after_many_attempts_carries_none_of_the_earlier_ones(
    clock: FakeClock, status: int, headers: dict[str, str]
) -> None:
    async with (
        serving(always(status, **headers)) as base_url,
        DiallerClient(
            base_url, 7, "tok", retry=FIVE, clock=clock, sleep=clock.sleep, timeout=5.0
        ) as c,
    ):
        # a single call (Transport.call) and a bulk row (ItemRunner.send), both after 5 attempts
        with pytest.raises(APIStatusError) as info:
            await asyncio.wait_for(c.get_contact(5), LIMIT)
        assert info.value.attempts == 5 and not earlier_errors(info.value)
        result = await asyncio.wait_for(
            c.import_contacts([contact(0)], keep_results=True, campaign_id=538), LIMIT
        )
        assert_account(result, read=1)
        (failure,) = result.failures
        assert failure.outcome is Outcome.FAILED and failure.attempts == 5
        assert isinstance(failure.error, APIStatusError) and failure.error.attempts == 5
        assert not earlier_errors(failure.error), earlier_errors(failure.error)
        assert c.transport.retries == 8


async def test_an_unsafe_write_resent_after_a_lookup_carries_no_earlier_error(
    client: DiallerClient, emulator: Emulator
) -> None:
    """A create that was lost on its way (reset), proven absent by lookup and sent once more,
    lost again: its error is the last attempt's alone."""
    emulator.faults.script(FaultKind.DROP_BEFORE, times=2, operation="import_contact")
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(
        client.import_contacts([contact(0)], overwrite_duplicates=False, keep_results=True), LIMIT
    )
    assert_account(result, read=1, emulator=emulator, before=before, upsert=False)
    (item,) = result.items or ()
    assert item.attempts == 2 and item.error is not None, item
    assert not earlier_errors(item.error), earlier_errors(item.error)


@pytest.mark.parametrize(("took", "attempts"), [(100.0, 1), (10.0, 2)])
async def test_a_rows_retry_deadline_counts_its_first_attempt(
    clock: FakeClock, took: float, attempts: int
) -> None:
    """A first attempt that took longer than the whole deadline (30 s) is not retried; one that
    took 10 s is."""
    calls = 0

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        await request.read()
        if calls == 1:
            clock.now += took
            return web.json_response({"status": 503}, status=503)
        record = {"ID": 9, "UserData": "CRM-000000", "DiallerCampaignsID": 538}
        return web.json_response({"records": [record], "status": 200})

    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=30.0)
    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=retry, clock=clock, sleep=clock.sleep) as c,
    ):
        result = await asyncio.wait_for(
            c.import_contacts([contact(0)], keep_results=True, campaign_id=538), LIMIT
        )
    assert_account(result, read=1)
    (item,) = result.items or ()
    assert calls == attempts and item.attempts == attempts
    assert item.outcome is (Outcome.SUCCEEDED if attempts == 2 else Outcome.FAILED)


async def test_a_rows_first_attempt_success_refunds_the_retry_budget(
    emulator: Emulator, clock: FakeClock
) -> None:
    retry = RetryPolicy(
        max_attempts=5, initial_backoff=0.01, max_backoff=0.05, budget=3, retry_cost=1
    )
    emulator.faults.script(FaultKind.UNAVAILABLE, times=4, operation="import_contact")
    before = Snapshot.take(emulator)
    async with emulator.client(
        retry=retry, limits=Limits(max_concurrency=1), clock=clock, sleep=clock.sleep
    ) as c:
        budget = c.transport.budget
        assert budget is not None
        rows = [contact(n) for n in range(3)]
        result = await asyncio.wait_for(c.import_contacts(rows, keep_results=True), LIMIT)
        assert_account(result, read=3, emulator=emulator, before=before, upsert=True)
        items = list(result.items or ())
        # Row 0: 1 attempt + 3 retries (the budget), the 4th retry refused; rows 1, 2: at once,
        # each success refunding one token.
        assert [i.attempts for i in items] == [4, 1, 1], items
        assert items[0].outcome is Outcome.FAILED
        assert budget.tokens == 2


async def cut_off_in_its_retry_sleep(emulator: Emulator, first: FaultKind) -> ItemResult:
    """Run a 4-row upsert job whose row 0 fails its first attempt with ``first``; cancel the
    job twice while that row sleeps before its retry; check the account and that nothing is
    left; return row 0's result."""
    clock = FakeClock()
    asleep = asyncio.Event()

    async def sleep(delay: float) -> None:
        asleep.set()
        await asyncio.Event().wait()  # the retry sleep: only a cancel ends it

    emulator.faults.script(first, times=1, operation="import_contact")
    before = Snapshot.take(emulator)
    async with emulator.client(
        retry=FIVE, limits=Limits(max_concurrency=2), clock=clock, sleep=sleep
    ) as c:
        rows = [contact(n) for n in range(4)]
        job = asyncio.create_task(c.import_contacts(rows, keep_results=True))
        await asyncio.wait_for(asleep.wait(), LIMIT)
        job.cancel()
        await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await asyncio.wait_for(job, LIMIT)
        result = bulk_result_of(info.value)
        await asyncio.wait_for(emulator.faults.settled(), LIMIT)
        assert_account(result, read=result.total, emulator=emulator, before=before, upsert=True)
        assert no_job_tasks()
        assert c.transport.governor.sending == 0
        assert len(c.transport.deadlines) == 0
        await released(c)
    (row0,) = [f for f in result.failures if f.index == 0]
    return row0


@pytest.mark.parametrize("first", [FaultKind.UNAVAILABLE, FaultKind.DROP_AFTER])
async def test_a_job_cancelled_twice_during_a_rows_retry_sleep(
    emulator: Emulator, first: FaultKind
) -> None:
    row0 = await cut_off_in_its_retry_sleep(emulator, first)
    # Cut off between two attempts of a write safe to repeat: not done, or (its first attempt
    # may have landed) AMBIGUOUS; a resume sends it again either way.
    assert row0.outcome in (Outcome.CANCELLED, Outcome.AMBIGUOUS), row0


@pytest.mark.xfail(
    strict=True,
    reason="a row cut off in its retry sleep is accounted by Ledger.interrupted, which "
    "knows nothing of the attempts made (they are counted inside Transport._retrying)",
)
async def test_a_row_cut_off_in_its_retry_sleep_counts_its_attempt(emulator: Emulator) -> None:
    row0 = await cut_off_in_its_retry_sleep(emulator, FaultKind.UNAVAILABLE)
    assert row0.attempts == 1, row0


@pytest.mark.xfail(
    strict=True,
    reason="item.sending stays True through Transport._retrying's sleep, so a cancel there "
    "makes the row AMBIGUOUS ('may have landed') even after a 503 that certainly did not",
)
async def test_a_row_cut_off_in_its_retry_sleep_after_a_503_is_cancelled(
    emulator: Emulator,
) -> None:
    row0 = await cut_off_in_its_retry_sleep(emulator, FaultKind.UNAVAILABLE)
    assert row0.outcome is Outcome.CANCELLED, row0


# -- 3. Verdict / Prepared / Reply built with tuple.__new__: every field of a success -----------


def _rows() -> list[dict[str, object]]:
    return [
        contact(0),  # first attempt answered 503, retried
        {"Name": "NoKey", "PhoneNumber1": "+4930999"},  # no UserData: key None
        contact(0, FirstName="Moritz"),  # the same UserData again: duplicate_in_input
        contact(3, PhoneNumber2="12"),  # a number the phone policy drops (with phones=)
    ]


async def _successes(
    c: DiallerClient, mode: str, rows: list[dict[str, object]], **options: Any
) -> list[ItemResult]:
    if mode == "keep":
        result = await c.import_contacts(rows, keep_results=True, **options)
        assert_account(result, read=len(rows))
        return list(result.items or ())
    if mode == "on_result":
        seen: list[ItemResult] = []
        result = await c.import_contacts(rows, on_result=seen.append, **options)
        assert_account(result, read=len(rows))
        assert result.items is None
        return sorted(seen, key=lambda i: i.index)
    streamed: list[ItemResult] = []
    async with c.stream("import", rows, ordered=mode == "stream-ordered", **options) as stream:
        async for item in stream:
            streamed.append(item)
    assert_account(stream.result, read=len(rows))
    return sorted(streamed, key=lambda i: i.index)


@pytest.mark.parametrize("phones", [False, True], ids=["plain", "phone-policy"])
@pytest.mark.parametrize("overwrite", [True, False], ids=["upsert", "create"])
@pytest.mark.parametrize("mode", ["keep", "on_result", "stream", "stream-ordered"])
async def test_every_field_of_a_successful_import(
    emulator: Emulator, clock: FakeClock, mode: str, overwrite: bool, phones: bool
) -> None:
    rows = _rows()
    options: dict[str, Any] = {"overwrite_duplicates": overwrite, "campaign_id": 538}
    if phones:
        options["phone_policy"] = PhonePolicy("DE")
    emulator.faults.script(FaultKind.UNAVAILABLE, times=1, operation="import_contact")
    before = Snapshot.take(emulator)
    async with emulator.client(
        retry=FIVE, limits=Limits(max_concurrency=1), clock=clock, sleep=clock.sleep
    ) as c:
        items = await asyncio.wait_for(_successes(c, mode, rows, **options), LIMIT)
    assert [i.index for i in items] == [0, 1, 2, 3]
    stored = Snapshot.take(emulator).contacts
    assert len(stored) - len(before.contacts) == (3 if overwrite else 4)
    for item, row in zip(items, rows, strict=True):
        key = row.get("UserData")
        assert item.input is row
        assert item.key == key
        assert item.operation is Operation.IMPORT
        assert item.outcome is Outcome.SUCCEEDED and item.ok
        assert item.error is None and item.status == 200
        assert item.attempts == (2 if item.index == 0 else 1), item
        assert item.duplicate_in_input is (item.index == 2)
        assert item.reconciled is False and item.reason is None
        dropped = phones and item.index == 3
        assert item.warnings == (("PhoneNumber2: dropped, too short ('12')",) if dropped else ())
        record = item.record
        assert record is not None and isinstance(record["ID"], int)
        assert item.contact_id == record["ID"]
        on_server = stored[record["ID"]]
        assert record.get("UserData") == on_server.get("UserData") == key
        assert record["Name"] == on_server["Name"] == row["Name"]
        assert item.contact is not None and item.contact.id == record["ID"]
    # The second row of UserData CRM-000000 overwrote the first, or (create) made another.
    assert (items[2].contact_id == items[0].contact_id) is overwrite


async def test_closing_the_client_while_a_large_body_is_on_its_way() -> None:
    """The server has stopped reading the body: closing the client must not wait for it
    (aiohttp's graceful close of the connection flushes the body first, for ever)."""
    release = asyncio.Event()
    async with nothing_reported(), RawServer() as server:
        server.scripts.append(stall_at("writing the body", release))
        c = raw_client(server, timeout=LIMIT)
        await c.__aenter__()
        call = asyncio.create_task(c.transport.send("POST", IMPORT, big_body()))
        await asyncio.wait_for(server.reached.wait(), LIMIT)
        assert writers_left()
        await asyncio.wait_for(c.aclose(), LIMIT)
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(call, LIMIT)
        assert call.cancelling() == 0
        release.set()
        await until(lambda: server.open == 0)


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts sockets in /proc")
@pytest.mark.xfail(
    strict=True,
    reason="an attempt cut off while its body is stuck is closed by aiohttp gracefully (the "
    "writer's conn.close(): transport.close() flushes first): the socket and the unsent body "
    "stay until the server reads or resets; aborting it needs a Python-level "
    "TCPConnector._release override, a cost on every request",
)
async def test_an_attempt_cut_off_with_its_body_stuck_frees_its_socket() -> None:
    release = asyncio.Event()
    async with nothing_reported(), RawServer() as server:
        server.scripts.append(stall_at("writing the body", release))
        async with raw_client(server, timeout=0.5) as c:
            before = _open_sockets()
            call = asyncio.create_task(c.transport.send("POST", IMPORT, big_body()))
            await asyncio.wait_for(server.reached.wait(), LIMIT)
            assert writers_left() and _open_sockets() == before + 2  # ours and the server's
            with pytest.raises(RequestTimeoutError):
                await asyncio.wait_for(call, LIMIT)
            await released(c)
            try:
                for _ in range(100):  # the abort's callbacks: a few loop iterations
                    if _open_sockets() == before + 1:
                        break
                    await asyncio.sleep(0.001)
                assert _open_sockets() == before + 1  # only the server's is left
            finally:
                release.set()
                await until(lambda: server.open == 0)
