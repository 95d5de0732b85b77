"""One HTTP exchange with retries: the only module that touches aiohttp on the client side.

Every aiohttp/asyncio failure is translated into the error tree in :func:`_translate`, the one
place where that happens. The bearer token lives in the session's default headers and nowhere
else: URLs, log lines and errors carry the method and the path relative to the base URL only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, NamedTuple, TypeVar, cast
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from . import __about__
from ._adaptive import Signal, signal_for
from ._deadlines import AttemptDeadlines
from ._exceptions import (
    APIStatusError,
    ClientStateError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    DiallerError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    TransportError,
    status_error_class,
)
from ._limits import JOB_LIMITER, Clock, Governor, Sleep
from ._retry import (
    RetryBudget,
    RetryPolicy,
    decide,
    may_have_landed,
    parse_retry_after,
    throttle_pause,
)
from ._routes import Route

log = logging.getLogger("dialler_async")
T = TypeVar("T")

_CHUNK: Final = 64 * 1024
#: Default answer limits: one contact's record is a few KiB; a campaign list can be large.
DEFAULT_MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_LIST_ANSWER_BYTES: Final = 1024 * 1024 * 1024


class Reply(NamedTuple):
    """A decoded JSON answer (None where a retry found the work already done), the attempts it
    took, and the request it answers (for error messages)."""

    data: Any
    attempts: int
    method: str
    path: str


def _translate(exc: BaseException, method: str, path: str) -> DiallerError:
    """Map an aiohttp/asyncio failure to our error tree (the one place this is done)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestTimeoutError(
            f"connect timed out ({exc})", method=method, path=path, request_sent=False
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeoutError(
            "timed out waiting for the answer", method=method, path=path, request_sent=True
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect: {exc.os_error or exc}", method=method, path=path)
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    ):
        return ConnectionLostError(f"connection lost: {exc!r}", method=method, path=path)
    if isinstance(exc, aiohttp.ClientError):
        return TransportError(f"transport failure: {exc!r}", method=method, path=path)
    if isinstance(exc, OSError):
        return ConnectionLostError(f"connection failed: {exc!r}", method=method, path=path)
    # aiohttp refuses to build the request (a header or URL it cannot send): nothing was sent,
    # and sending again cannot help.
    return ConfigurationError(f"{method} {path}: the request cannot be sent: {exc}")


def _status_error(
    status: int, raw: bytes, headers: Mapping[str, str], method: str, path: str
) -> APIStatusError:
    # Only an excerpt is kept: a kept error must not hold a large answer alive.
    text = raw[:1024].decode("utf-8", "replace") if raw else None
    error: str | None = None
    if 300 <= status < 400:
        location = headers.get("Location", "")
        host = URL(location).host if location else None
        error = (
            f"redirect to {host or location or 'an unnamed location'} not followed "
            "(check base_url: it must be the server's /rest/v1.0 prefix)"
        )
    elif raw:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"]
    retry_after = parse_retry_after(headers) if status in (429, 503) else None
    return status_error_class(status)(
        status, error, method=method, path=path, body=text, retry_after=retry_after
    )


class _Protocol(ResponseHandler):
    """aiohttp's connection protocol, except that a kept-alive connection that holds data no
    request asked for is no longer "connected", so it is never handed out again.

    aiohttp parses and queues whatever arrives on an idle kept-alive connection (aiohttp#13656)
    and reuses it: a server or proxy that sends an answer nobody asked for (a stray duplicate,
    a 408 before closing) would have it taken as the answer to the next request on it, and
    every later answer there as the answer to the request after its own. aiohttp asks
    :meth:`is_connected` of a pooled connection before it reuses it (and in its sweep of idle
    ones): such a connection says ``should_close`` (what aiohttp itself asks before it pools a
    connection) and is closed instead. Checked there, not in a wrapper around the pool's
    ``_get``: that was a coroutine a request (callgrind, streaming options: +1.5k instructions
    a row here, against +3.6k).
    """

    def is_connected(self) -> bool:
        transport = self.transport
        return transport is not None and not transport.is_closing() and not self.should_close


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, making its connections with :class:`_Protocol`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # partial is invariant to mypy: a partial making a ResponseHandler subclass is one.
        self._factory = cast(
            "functools.partial[ResponseHandler]", functools.partial(_Protocol, loop=self._loop)
        )


class Transport:
    """The client's HTTP session, governor, retry policy and counters."""

    def __init__(
        self,
        *,
        prefix: str,
        token: str,
        timeout: float,
        retry: RetryPolicy,
        governor: Governor,
        verify: bool | ssl.SSLContext,
        sleep: Sleep,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_list_answer_bytes: int = DEFAULT_MAX_LIST_ANSWER_BYTES,
    ) -> None:
        self._prefix = prefix
        self.max_answer_bytes = max_answer_bytes
        self.max_list_answer_bytes = max_list_answer_bytes
        self.retry = retry
        self.governor = governor
        self._sleep = sleep
        self.clock = clock
        self._rand = rand
        self.budget = RetryBudget(retry.budget) if retry.budget is not None else None
        self.requests = 0
        self.retries = 0
        self._urls: dict[str, URL] = {}
        self._paths: dict[tuple[Route, tuple[tuple[str, object], ...]], str] = {}
        connector = _Connector(limit=governor.limits.max_concurrency, limit_per_host=0, ssl=verify)
        # aiohttp keeps only the connect timeout; self.deadlines keeps the attempt's (aiohttp
        # cannot send a request outside a task, the one place an attempt cannot be armed).
        self.deadlines = AttemptDeadlines(timeout)
        connect = min(timeout, 10.0)
        # A streamed answer may take far longer than ``timeout`` to arrive in full (a campaign
        # of 500,000): ``timeout`` bounds each wait for data instead (the headers, then every
        # chunk), so a server that stalls is still given up on, one that sends is not cut off.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=timeout
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                # Set once for every request (a GET ignores it): cheaper than per-request headers.
                "Content-Type": "application/json",
                "User-Agent": f"dialler-async/{__about__.__version__}",
            },
            raise_for_status=False,
        )
        # aiohttp silently resends a GET/DELETE once when a reused connection drops
        # (aiohttp#7363; no public switch, aiohttp#10790). That resend bypasses our rate
        # limiter and hides from our retry layer that the first attempt may have done the
        # work (a delete then "fails" with 404). Our retry layer decides instead.
        if hasattr(self.session, "_retry_connection"):
            self.session._retry_connection = False

    async def close(self) -> None:
        connector = self.session.connector
        if connector is not None:
            # A connection whose request body the server stopped reading is aborted: aiohttp
            # closes every connection gracefully and waits for it, and a graceful close first
            # flushes what is left to send, for ever if the server never reads again.
            for protocol in list(getattr(connector, "_acquired", ())):
                transport = getattr(protocol, "transport", None)
                if transport is not None and transport.get_write_buffer_size():
                    transport.abort()
        await self.session.close()
        # Let the transports' close callbacks run (aiohttp docs, "Graceful Shutdown").
        await asyncio.sleep(0)

    def url_path(
        self,
        route: Route,
        *,
        id: int | None = None,
        user_data: str | None = None,
        query: Mapping[str, object] | None = None,
    ) -> str:
        fixed = id is None and user_data is None
        if fixed:  # nothing per item in it (every import's path): build it once per client
            memo = (route, tuple(query.items()) if query else ())
            cached = self._paths.get(memo)
            if cached is not None:
                return cached
        path = route.build(id=id, user_data=user_data)
        if query:
            parts = [
                f"{k}={quote(_query_value(v), safe='')}" for k, v in query.items() if v is not None
            ]
            if parts:
                path += ("&" if "?" in path else "?") + "&".join(parts)
        if fixed and len(self._paths) < 1024:
            self._paths[memo] = path
        return path

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(self._prefix + path, encoded=True)
            # Most requests of a job share a path (every import does): build each URL once.
            if len(self._urls) < 1024:
                self._urls[path] = url
        return url

    async def _admit(self, method: str, path: str) -> float:
        """The full admission path of an attempt (:meth:`send` takes a free slot without it when
        nothing else applies): the 429-storm check, the job's rate
        limiter (inside a bulk job with ``rate=``) and the client's governor. On return the
        caller holds a governor slot and must :meth:`Governor.release` it; the value returned
        is the clock time the attempt starts (for the adaptive limit's round trips)."""
        governor = self.governor
        lasted = governor.throttle_storm(self.retry.deadline, self.retry.max_backoff or 1.0)
        if lasted is not None:
            storm = RateLimitError(
                429,
                f"throttled: the server has answered only 429 for {lasted:.0f}s "
                f"(beyond the retry deadline); not sent",
                method=method,
                path=path,
            )
            storm.storm = True
            raise storm
        job_limiter = JOB_LIMITER.get()
        if job_limiter is not None:
            await job_limiter.acquire()
        started = governor.try_acquire()
        return await governor.acquire() if started is None else started

    async def send(
        self, method: str, path: str, body: Any = None, *, max_bytes: int | None = None
    ) -> Any:
        """One attempt: the decoded JSON object of a 2xx answer, or an error from our tree.

        Every attempt is admitted as :meth:`_admit` says. An answer larger than ``max_bytes``
        decoded (default: the client's per-contact limit) is refused while it is read,
        compressed or not.
        """
        data = orjson.dumps(body) if body is not None else None
        url = self._urls.get(path)
        if url is None:  # not ``or``: a yarl URL's truth is a Python-level call per request
            url = self._url(path)
        limit = self.max_answer_bytes if max_bytes is None else max_bytes
        governor = self.governor
        # Most attempts find a slot free: taken without the coroutine of the full path.
        started = governor.try_acquire() if JOB_LIMITER.get() is None else None
        if started is None:
            started = await self._admit(method, path)
        # What this attempt tells an adaptive concurrency limit: nothing unless it ends below.
        signal = Signal.NEUTRAL
        deadlines = self.deadlines
        task = deadlines.arm()
        try:
            self.requests += 1
            # Awaited, not ``async with``: the context manager's five coroutines per request
            # (its __aenter__/__aexit__, the response's, wait_for_close) do nothing here that
            # release() does not (it cancels a writer still sending; the connection returns
            # to the pool when that ends, or is closed if the answer was not read in full).
            resp = await self.session.request(method, url, data=data, allow_redirects=False)
            try:
                status = resp.status
                headers = resp.headers
                declared = resp.content_length
                if declared is not None and declared <= limit and "Content-Encoding" not in headers:
                    # Uncompressed with a declared length within the limit (every per-contact
                    # answer): aiohttp reads exactly that many bytes, so one read is bounded,
                    # and cheaper than iterating chunks.
                    raw = await resp.read()
                else:
                    raw = await _read_bounded(resp, limit)
            finally:
                resp.release()
            if governor.adaptive is not None:
                signal = signal_for(status)
        except asyncio.CancelledError:
            if task is None or not deadlines.timed_out(task):
                raise
            signal = Signal.CONGESTED
            raise _translate(TimeoutError(), method, path) from None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, TypeError) as exc:
            error = _translate(exc, method, path)
            if isinstance(error, TransportError):
                signal = Signal.CONGESTED  # a timeout or a lost connection: maybe overload
            raise error from exc
        except _TooLarge as exc:
            raise _too_large(limit, str(exc), method, path) from None
        finally:
            if task is not None:
                deadlines.disarm(task)
            governor.release(started, signal)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s (%d bytes)", method, path, status, len(raw))
        if status >= 300:
            raise _status_error(status, raw, headers, method, path)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ResponseFormatError(
                f"invalid JSON ({exc})",
                method=method,
                path=path,
                body=raw[:512].decode("utf-8", "replace"),
            ) from None
        if not isinstance(decoded, dict):
            raise ResponseFormatError(
                "expected a JSON object",
                method=method,
                path=path,
                body=raw[:512].decode("utf-8", "replace"),
            )
        return decoded

    async def _open(self, method: str, path: str, limit: int) -> Body:
        """One streaming attempt: admitted like :meth:`send`; a 2xx answer is handed back
        unread (holding its governor slot until :meth:`Body.aclose`), anything else is read
        (bounded) and raised as in :meth:`send`."""
        url = self._url(path)
        await self._admit(method, path)
        resp: aiohttp.ClientResponse | None = None
        try:
            self.requests += 1
            resp = await self.session.request(
                method, url, allow_redirects=False, timeout=self._stream_timeout
            )
            if resp.status < 300:
                declared = resp.content_length
                if (
                    declared is not None
                    and declared > limit
                    and not resp.headers.get("Content-Encoding")
                ):
                    raise _TooLarge(f"Content-Length {declared:,}")
                body = Body(self, resp, method, path, limit)
                resp = None  # the Body owns it (and the governor slot) now
                return body
            status, headers = resp.status, resp.headers
            raw = await _read_bounded(resp, self.max_answer_bytes)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, TypeError) as exc:
            self.governor.release()
            raise _translate(exc, method, path) from exc
        except _TooLarge as exc:
            self.governor.release()
            raise _too_large(limit, str(exc), method, path) from None
        except BaseException:
            self.governor.release()
            raise
        finally:
            if resp is not None:
                resp.release()
        self.governor.release()
        raise _status_error(status, raw, headers, method, path)

    async def open_stream(self, method: str, path: str, *, max_bytes: int | None = None) -> Body:
        """A 2xx answer to read as a stream of chunks (:class:`Body`), obtained through the same
        admission and retry policy as :meth:`call` (a GET: idempotent). Retries cover getting
        the answer; a failure while its body is read is raised (translated) to the reader,
        who may already have used part of it. Close the body (``async with``) when done."""
        limit = self.max_list_answer_bytes if max_bytes is None else max_bytes
        body, _ = await self._retrying(
            method, path, lambda: self._open(method, path, limit), idempotent=True
        )
        assert body is not None
        return body

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool,
        missing_ok_on_retry: bool = False,
        max_bytes: int | None = None,
    ) -> Reply:
        """:meth:`send` with the retry policy. ``missing_ok_on_retry``: a 404 after an attempt
        that may have reached the server means that attempt did the work (delete).
        ``max_bytes``: the answer size limit (see :meth:`send`)."""
        # The first attempt is made here, not through _retrying: most calls need no retry,
        # and a bulk job makes hundreds of thousands of them.
        started = self.clock()
        try:
            data = await self.send(method, path, body, max_bytes=max_bytes)
        except DiallerError as exc:
            first_error = exc
        else:
            self.succeeded()
            return Reply(data, 1, method, path)
        # Retried outside the except block: raised in it, every later attempt's error would
        # carry the first one (and the frames holding its answer) as __context__.
        return await self.retry_after(
            first_error,
            started,
            method,
            path,
            body,
            idempotent=idempotent,
            missing_ok_on_retry=missing_ok_on_retry,
            max_bytes=max_bytes,
        )

    def succeeded(self) -> None:
        """A call's first attempt (:meth:`send`) succeeded: what :meth:`call` notes then."""
        if self.budget is not None:
            self.budget.refund()
        self.governor.on_success()

    async def retry_after(
        self,
        first_error: DiallerError,
        started: float,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool,
        missing_ok_on_retry: bool = False,
        max_bytes: int | None = None,
    ) -> Reply:
        """The rest of :meth:`call` after its first attempt, begun at clock time ``started``,
        failed with ``first_error``: retried as the policy allows, or ``first_error`` raised.
        For a caller that makes the first attempt itself with :meth:`send` (then
        :meth:`succeeded` when it succeeds): the bulk engine, which saves a coroutine per row
        so. Await it outside the ``except`` block that caught ``first_error``."""
        data, attempts = await self._retrying(
            method,
            path,
            lambda: self.send(method, path, body, max_bytes=max_bytes),
            idempotent=idempotent,
            missing_ok_on_retry=missing_ok_on_retry,
            first_error=first_error,
            started=started,
        )
        return Reply(data, attempts, method, path)

    async def _retrying(
        self,
        method: str,
        path: str,
        attempt_once: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        missing_ok_on_retry: bool = False,
        first_error: DiallerError | None = None,
        started: float | None = None,
    ) -> tuple[T | None, int]:
        """The retry policy around any kind of attempt (a whole answer, or an answer to
        stream): its value and the attempts it took (None: a retried delete found the work
        done). ``first_error``: the caller made the first attempt itself (at ``started``), and it
        failed so."""
        attempt = 0
        if started is None:
            started = self.clock()
        maybe_done = False
        while True:
            attempt += 1
            try:
                if first_error is not None:
                    error, first_error = first_error, None
                    raise error
                data = await attempt_once()
            except DiallerError as err:
                if missing_ok_on_retry and maybe_done and isinstance(err, NotFoundError):
                    return None, attempt
                maybe_done = maybe_done or may_have_landed(err)
                decision = decide(
                    self.retry,
                    err,
                    attempt=attempt,
                    idempotent=idempotent,
                    elapsed=self.clock() - started,
                    rand=self._rand,
                )
                if isinstance(err, RateLimitError) and not err.storm:
                    self.governor.on_throttled(throttle_pause(self.retry, err))
                if not decision.retry or (
                    self.budget is not None and not self.budget.try_spend(err, self.retry)
                ):
                    err.attempts = attempt
                    raise
                self.retries += 1
                log.info(
                    "retrying %s %s after %s (attempt %d, waiting %.2fs)",
                    method,
                    path,
                    type(err).__name__,
                    attempt,
                    decision.delay,
                )
                await self._sleep(decision.delay)
            else:
                self.succeeded()
                return data, attempt


class Body:
    """The body of a 2xx answer being streamed (from :meth:`Transport.open_stream`).

    ``async for chunk in body`` yields decoded chunks; more than ``limit`` bytes in all is a
    :class:`ResponseFormatError`, an aiohttp failure is translated as for any request. The
    governor slot of the request is held until :meth:`aclose` (``async with``), which is
    idempotent.
    """

    def __init__(
        self,
        transport: Transport,
        resp: aiohttp.ClientResponse,
        method: str,
        path: str,
        limit: int,
    ) -> None:
        self._transport = transport
        self._resp: aiohttp.ClientResponse | None = resp
        self.method = method
        self.path = path
        self.limit = limit
        self.size = 0

    async def __aenter__(self) -> Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            # An unfinished body is dropped with its connection (close), never drained.
            resp.close()
            self._transport.governor.release()

    async def chunks(self, size: int = _CHUNK) -> AsyncIterator[bytes]:
        resp = self._resp
        if resp is None:
            raise ClientStateError(f"{self.method} {self.path}: the answer was closed")
        try:
            async for chunk in resp.content.iter_chunked(size):
                self.size += len(chunk)
                if self.size > self.limit:
                    raise _TooLarge(f"more than {self.size:,} bytes decoded")
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise _translate(exc, self.method, self.path) from exc
        except _TooLarge as exc:
            raise _too_large(self.limit, str(exc), self.method, self.path) from None


def _too_large(limit: int, why: str, method: str, path: str) -> ResponseFormatError:
    return ResponseFormatError(
        f"answer larger than the {limit:,}-byte limit ({why}); raise "
        "max_answer_bytes/max_list_answer_bytes if this is expected",
        method=method,
        path=path,
        body=None,
    )


class _TooLarge(Exception):
    """Raised inside :func:`_read_bounded`; turned into a ResponseFormatError by the caller."""


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The decoded body, read in chunks and refused as soon as it passes ``limit`` bytes.

    aiohttp inflates gzip/deflate/brotli in bounded steps as the stream is read, so counting
    what comes out of ``resp.content`` bounds memory for compressed answers too.
    """
    declared = resp.content_length
    if declared is not None and declared > limit and not resp.headers.get("Content-Encoding"):
        raise _TooLarge(f"Content-Length {declared:,}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"more than {size:,} bytes decoded")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
