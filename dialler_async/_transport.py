"""One HTTP exchange with retries: the only module that touches aiohttp on the client side.

Every aiohttp/asyncio failure is translated into the error tree in :func:`_translate`, the one
place where that happens. The bearer token lives in the session's default headers and nowhere
else: URLs, log lines and errors carry the method and the path relative to the base URL only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from . import __about__
from ._exceptions import (
    APIStatusError,
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
from ._limits import Clock, Governor, Sleep
from ._retry import RetryBudget, RetryPolicy, decide, may_have_landed, parse_retry_after
from ._routes import Route

log = logging.getLogger("dialler_async")


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
    return TransportError(f"transport failure: {exc!r}", method=method, path=path)


def _status_error(
    status: int, raw: bytes, headers: Mapping[str, str], method: str, path: str
) -> APIStatusError:
    text = raw.decode("utf-8", "replace") if raw else None
    error: str | None = None
    if raw:
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
    ) -> None:
        self._prefix = prefix
        self.retry = retry
        self.governor = governor
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self.budget = RetryBudget(retry.budget) if retry.budget is not None else None
        self.requests = 0
        self.retries = 0
        self._urls: dict[str, URL] = {}
        self._paths: dict[tuple[Route, tuple[tuple[str, object], ...]], str] = {}
        connector = aiohttp.TCPConnector(
            limit=governor.limits.max_concurrency, limit_per_host=0, ssl=verify
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0)),
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

    async def send(self, method: str, path: str, body: Any = None) -> Any:
        """One attempt: the decoded JSON object of a 2xx answer, or an error from our tree."""
        data = orjson.dumps(body) if body is not None else None
        url = self._urls.get(path)
        if url is None:
            url = URL(self._prefix + path, encoded=True)
            # Most requests of a job share a path (every import does): build each URL once.
            if len(self._urls) < 1024:
                self._urls[path] = url
        governor = self.governor
        await governor.acquire()
        try:
            self.requests += 1
            async with self.session.request(method, url, data=data) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, method, path) from exc
        finally:
            governor.release()
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
                body=raw.decode("utf-8", "replace"),
            ) from exc
        if not isinstance(decoded, dict):
            raise ResponseFormatError(
                "expected a JSON object",
                method=method,
                path=path,
                body=raw.decode("utf-8", "replace"),
            )
        return decoded

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool,
        missing_ok_on_retry: bool = False,
    ) -> Reply:
        """:meth:`send` with the retry policy. ``missing_ok_on_retry``: a 404 after an attempt
        that may have reached the server means that attempt did the work (delete)."""
        attempt = 0
        started = self._clock()
        maybe_done = False
        while True:
            attempt += 1
            try:
                data = await self.send(method, path, body)
            except DiallerError as err:
                if isinstance(err, RateLimitError):
                    self.governor.on_throttled(err.retry_after)
                if missing_ok_on_retry and maybe_done and isinstance(err, NotFoundError):
                    return Reply(None, attempt, method, path)
                maybe_done = maybe_done or may_have_landed(err)
                decision = decide(
                    self.retry,
                    err,
                    attempt=attempt,
                    idempotent=idempotent,
                    elapsed=self._clock() - started,
                    rand=self._rand,
                )
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
                if self.budget is not None:
                    self.budget.refund()
                self.governor.on_success()
                return Reply(data, attempt, method, path)


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
