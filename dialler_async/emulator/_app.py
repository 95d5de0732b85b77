"""The aiohttp.web application: routing built from the ``Routes`` table, and the pipeline.

Routing: each operation's path is split at ``?``. The path part is registered once (with
``{id}`` restricted to digits, so ``/dialler/contacts/{id}`` cannot swallow
``/dialler/contacts/contact``); one handler per path part dispatches on the method and then
on the query, picking the operation whose query placeholders are all present. Anything
else is a 404 with an empty body, the wiki's sign for "this endpoint does not exist".

Pipeline per request: count the arrival, rate limit (429, not processed), latency, wait for a
service slot of the capacity model (503 when its queue is full), read the body, pick a fault,
authenticate, run the operation, then apply a post-processing fault (drop after commit,
truncated JSON). Everything is in one coroutine, with no middleware, because a benchmark
pushes thousands of requests a second through it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple
from urllib.parse import parse_qsl

from aiohttp import web

from dialler_async._routes import Routes
from dialler_async.emulator._capacity import Capacity
from dialler_async.emulator._config import EmulatorConfig
from dialler_async.emulator._faults import FaultKind, Faults, RateLimiter, Stats
from dialler_async.emulator._ops import Call, OpResult, error_body
from dialler_async.emulator._records import RequestError

__all__ = ["BASE_PATH", "Settings", "build_app"]

BASE_PATH: Final = "/rest/v1.0"
_log = logging.getLogger("dialler_async.emulator")
_PLACEHOLDER: Final = re.compile(r"\{(\w+)\}")
_MAX_ID: Final = 2**63 - 1

_TOO_MANY: Final = error_body(429, "Too many requests")
_OVERLOADED: Final = error_body(503, "Service unavailable (request queue full)")
_INJECTED: Final[dict[FaultKind, tuple[int, bytes, str]]] = {
    FaultKind.SERVER_ERROR: (
        500,
        error_body(500, "Internal server error (injected fault)"),
        "application/json",
    ),
    FaultKind.UNAVAILABLE: (
        503,
        error_body(503, "Service unavailable (injected fault)"),
        "application/json",
    ),
    FaultKind.BAD_GATEWAY: (
        502,
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        b"</body>\r\n</html>\r\n",
        "text/html",
    ),
    FaultKind.GATEWAY_TIMEOUT: (
        504,
        b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
        b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
        b"</body>\r\n</html>\r\n",
        "text/html",
    ),
    FaultKind.RATE_LIMITED: (429, _TOO_MANY, "application/json"),
}


class Settings:
    """The live, mutable state handlers read per request (``Emulator.configure`` swaps it)."""

    __slots__ = ("config", "tokens")

    def __init__(self, config: EmulatorConfig, tokens: dict[str, str]) -> None:
        self.config = config
        #: bearer token -> the client id (as it stands in the URL) the token belongs to
        self.tokens = tokens


class _Candidate(NamedTuple):
    """One operation served at a path part, with what its query must hold."""

    operation: str
    run: Callable[[Call], OpResult]
    needs: tuple[str, ...]  # query keys that must be present
    literals: tuple[tuple[str, str], ...]  # query key/value pairs that must match
    id_key: str | None  # where {id} comes from: a query key, "" = the path, None = nowhere
    user_data_key: str | None  # likewise for {user_data}

    def matches(self, query: Mapping[str, str]) -> bool:
        for key in self.needs:
            if key not in query:
                return False
        return all(query.get(k) == v for k, v in self.literals)


def _compile(name: str, path: str, run: Callable[[Call], OpResult]) -> tuple[str, _Candidate]:
    """The aiohttp path of one route's path part, and its dispatch candidate."""
    path_part, _, query_part = path.partition("?")
    needs: list[str] = []
    literals: list[tuple[str, str]] = []
    sources: dict[str, str] = {}
    for key, value in parse_qsl(query_part, keep_blank_values=True):
        placeholder = _PLACEHOLDER.fullmatch(value)
        if placeholder is None:
            literals.append((key, value))
        else:
            needs.append(key)
            sources[placeholder[1]] = key
    for placeholder in _PLACEHOLDER.findall(path_part):
        sources[placeholder] = ""
    web_path = path_part.replace("{id}", r"{id:\d+}")
    return web_path, _Candidate(
        name, run, tuple(needs), tuple(literals), sources.get("id"), sources.get("user_data")
    )


class _Pipeline:
    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        faults: Faults,
        limiter: RateLimiter,
        capacity: Capacity,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.faults = faults
        self.limiter = limiter
        self.capacity = capacity

    def _respond(
        self,
        status: int,
        payload: bytes | None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.stats.responses[status] += 1
        return web.Response(status=status, body=payload, content_type=content_type, headers=headers)

    def _abort(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # The connection is gone, so aiohttp's attempt to write this goes nowhere.
        return web.Response(status=500)

    async def not_found(self, request: web.Request) -> web.Response:
        return self._respond(404, None, None)

    async def handle(
        self, table: dict[str, tuple[_Candidate, ...]], request: web.Request
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        self.faults.begin()
        try:
            response = await self._handle(table, request, arrived)
        finally:
            self.faults.end()
        self.stats.latencies.append((arrived, time.monotonic() - arrived, response.status))
        return response

    async def _handle(
        self, table: dict[str, tuple[_Candidate, ...]], request: web.Request, now: float
    ) -> web.StreamResponse:
        candidates = table.get(request.method)
        if candidates is None:
            return self._respond(404, None, None)
        query = request.query
        for candidate in candidates:
            if candidate.matches(query):
                break
        else:
            first = candidates[0]
            wanted = [*first.needs, *(f"{k}={v}" for k, v in first.literals)]
            message = f"Query parameters required: {', '.join(wanted)}"
            return self._respond(400, error_body(400, message))

        stats, config = self.stats, self.settings.config
        operation = candidate.operation
        stats.requests[operation] += 1
        stats.arrivals.append((now, operation))
        if config.rate_limit is not None and not self.limiter.admit(
            request.match_info["client_id"], now, config.rate_limit
        ):
            stats.throttled += 1
            return self._respond(429, _TOO_MANY, headers={"Retry-After": str(config.retry_after)})
        if config.latency or config.latency_jitter:
            jitter = self.faults.uniform(config.latency_jitter) if config.latency_jitter else 0.0
            await asyncio.sleep(config.latency + jitter)
        if config.capacity is None and not config.service_time:
            return await self._serve(candidate, request, config)
        capacity = self.capacity
        if (
            config.queue_limit is not None
            and config.capacity is not None
            and capacity.busy >= config.capacity
            and capacity.queued >= config.queue_limit
        ):
            stats.overloaded += 1
            headers = None
            if config.unavailable_retry_after is not None:
                headers = {"Retry-After": str(config.unavailable_retry_after)}
            return self._respond(503, _OVERLOADED, headers=headers)
        await capacity.enter()
        try:
            if config.service_time:
                await asyncio.sleep(config.service_time)
            return await self._serve(candidate, request, config)
        finally:
            capacity.leave()

    async def _serve(
        self, candidate: _Candidate, request: web.Request, config: EmulatorConfig
    ) -> web.StreamResponse:
        """Read the body, apply a fault, run the operation: the work of one request."""
        operation = candidate.operation
        body = await request.read() if request.body_exists else b""

        fault = self.faults.pick(operation, config.faults, config.fault_operations)
        if fault is not None:
            if fault is FaultKind.SLOW:
                await asyncio.sleep(config.slow_seconds)
            elif fault is FaultKind.DROP_BEFORE:
                return self._abort(request)
            elif fault in _INJECTED:
                status, payload, content_type = _INJECTED[fault]
                headers = None
                if fault is FaultKind.RATE_LIMITED:
                    headers = {"Retry-After": str(config.retry_after)}
                elif fault is FaultKind.UNAVAILABLE and config.unavailable_retry_after is not None:
                    headers = {"Retry-After": str(config.unavailable_retry_after)}
                return self._respond(status, payload, content_type, headers)

        status, payload = self._process(candidate, request, body)
        if fault is FaultKind.GATEWAY_TIMEOUT_AFTER:
            status, payload, content_type = _INJECTED[FaultKind.GATEWAY_TIMEOUT]
            return self._respond(status, payload, content_type)
        if fault is FaultKind.DROP_AFTER:
            return self._abort(request)
        if fault is FaultKind.INVALID_JSON:
            status, payload = 200, payload[: len(payload) // 2] or b'{"status":'
        return self._respond(status, payload)

    def _process(self, candidate: _Candidate, request: web.Request, body: bytes) -> OpResult:
        auth = request.headers.get("Authorization", "")
        owner = self.settings.tokens.get(auth[7:]) if auth[:7].lower() == "bearer " else None
        if owner is None:
            return 401, error_body(401, "Missing or invalid bearer token")
        client = request.match_info["client_id"]
        if owner != client:
            return 401, error_body(401, f"The bearer token is not valid for client {client}")
        try:
            return candidate.run(self._call(candidate, request, int(owner), body))
        except RequestError as exc:
            return exc.status, error_body(exc.status, exc.message)
        except Exception:
            _log.exception("operation %s failed", candidate.operation)
            return 500, error_body(500, "Internal server error")

    @staticmethod
    def _call(candidate: _Candidate, request: web.Request, client_id: int, body: bytes) -> Call:
        contact_id: int | None = None
        user_data: str | None = None
        if candidate.id_key is not None:
            text = request.query[candidate.id_key] if candidate.id_key else request.match_info["id"]
            if not text.isdigit():
                raise RequestError(
                    400, f"Parameter '{candidate.id_key or 'id'}' must be an integer"
                )
            contact_id = int(text)
            if contact_id > _MAX_ID:  # beyond SQLite's integers: no such record can exist
                contact_id = -1
        if candidate.user_data_key is not None:
            key = candidate.user_data_key
            user_data = request.query[key] if key else request.match_info["user_data"]
        return Call(client_id, contact_id, user_data, request.query, body)


def build_app(
    *,
    routes: Routes,
    operations: Mapping[str, Callable[[Call], OpResult]],
    settings: Settings,
    stats: Stats,
    faults: Faults,
    limiter: RateLimiter,
    capacity: Capacity,
) -> web.Application:
    """The application serving ``operations`` at ``BASE_PATH/{client_id}`` + ``routes``.

    Operations of ``routes`` without an implementation are not served (404).
    """
    pipeline = _Pipeline(settings, stats, faults, limiter, capacity)
    grouped: dict[str, dict[str, list[_Candidate]]] = {}
    for name, route in routes.items():
        run = operations.get(name)
        if run is None:
            continue
        web_path, candidate = _compile(name, route.path, run)
        grouped.setdefault(web_path, {}).setdefault(route.method, []).append(candidate)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    # Fixed paths first, so a placeholder segment never shadows a literal one.
    for web_path in sorted(grouped, key=lambda p: (p.count("{"), p)):
        table = {
            method: tuple(sorted(cands, key=lambda c: -(len(c.needs) + len(c.literals))))
            for method, cands in grouped[web_path].items()
        }
        app.router.add_route(
            "*", f"{BASE_PATH}/{{client_id}}{web_path}", functools.partial(pipeline.handle, table)
        )
    app.router.add_route("*", "/{tail:.*}", pipeline.not_found)
    return app
