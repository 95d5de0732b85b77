"""A minimal, fast HTTP/1.1 keep-alive server on a raw ``asyncio.Protocol``.

It parses just enough (request line, ``Content-Length``, body) and answers every request with
one canned 200 contact envelope, so in a benchmark the client, not the server, is the
bottleneck. ``--latency`` delays each answer (a timer, not a task). ``--record`` keeps each
request's arrival time (``time.monotonic()``); ``GET /__stats`` returns
``{"requests": N, "arrivals": [...]}`` (arrivals only with ``--record``).

Run: ``python -m benchmarks._fast_server --port 0 [--latency 0.02] [--record]``. It prints
``fast server listening on http://127.0.0.1:PORT`` and serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from typing import Final

import orjson

from benchmarks._payloads import envelope_bytes

_HEAD_END: Final = b"\r\n\r\n"
_CL: Final = b"\r\ncontent-length:"


def response(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


class Counters:
    __slots__ = ("arrivals", "record", "requests")

    def __init__(self, record: bool) -> None:
        self.record = record
        self.requests = 0
        self.arrivals: list[float] = []


class HttpProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as they complete, answer each in order."""

    __slots__ = ("_buf", "_canned", "_counters", "_latency", "_loop", "_transport")

    def __init__(self, canned: bytes, latency: float, counters: Counters) -> None:
        self._buf = bytearray()
        self._canned = canned
        self._latency = latency
        self._counters = counters
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(_HEAD_END)
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(_CL)
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + len(_CL) : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            del buf[:total]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        counters = self._counters
        counters.requests += 1
        if counters.record:
            counters.arrivals.append(time.monotonic())
        payload = self._canned
        if head.startswith(b"get /__stats"):
            stats = {"requests": counters.requests, "arrivals": counters.arrivals}
            payload = response(orjson.dumps(stats))
        if self._latency:
            self._loop.call_later(self._latency, self._write, payload)
        else:
            self._write(payload)

    def _write(self, payload: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(payload)


async def serve(host: str, port: int, latency: float, record: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:  # the parent closing our stdin (or dying) stops us
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    canned = response(envelope_bytes(user_data=False))
    counters = Counters(record)
    server = await loop.create_server(
        lambda: HttpProtocol(canned, latency, counters), host, port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"fast server listening on http://{host}:{bound}", flush=True)
    await stop.wait()
    server.close()  # no wait_closed(): idle keep-alive clients must not hold us up
    print(orjson.dumps({"requests": counters.requests}).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._fast_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--record", action="store_true", help="keep arrival times for /__stats")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.latency, args.record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
