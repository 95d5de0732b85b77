"""Fault injection, the per-client request-rate limiter and the request statistics.

Faults come from two sources. A *script* (``Faults.script``) is deterministic: the next N
matching requests get the fault, in FIFO order, which is what tests want. *Probabilities*
(``EmulatorConfig.faults``) draw from a seeded generator, which is what benchmarks want. A
scripted fault always wins over a random one.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections import Counter, deque
from collections.abc import Collection, Mapping, Sequence

__all__ = ["FaultKind", "Faults", "RateLimiter", "Stats", "max_in_window"]


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most of ``times`` (ascending) in any sliding window: those less than ``window``
    apart share one, the rule the emulator's rate limiter applies."""
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class FaultKind(enum.Enum):
    """What can go wrong with one request, as the client would see it."""

    #: 500 with a JSON error body; nothing is processed.
    SERVER_ERROR = "server_error"
    #: 503 with a JSON error body (``Retry-After`` if ``unavailable_retry_after`` is set).
    UNAVAILABLE = "unavailable"
    #: 502 with an HTML page, as a reverse proxy sends it; nothing is processed.
    BAD_GATEWAY = "bad_gateway"
    #: 504 with an HTML page, as a reverse proxy sends it; nothing is processed.
    GATEWAY_TIMEOUT = "gateway_timeout"
    #: The connection is aborted before the request is processed: nothing changes.
    DROP_BEFORE = "drop_before"
    #: The request is processed and committed, then the connection is aborted unanswered.
    DROP_AFTER = "drop_after"
    #: ``slow_seconds`` of delay, then normal processing: the commit is held longer than a
    #: short client timeout, so the answer comes late but the write lands
    #: (``Emulator.settled()`` waits for every held commit).
    SLOW = "slow"
    #: The request is processed and committed, then answered 504 with a gateway's HTML page
    #: (a gateway that gave up waiting while the backend went on working).
    GATEWAY_TIMEOUT_AFTER = "gateway_timeout_after"
    #: The request is processed, then answered 200 with a truncated JSON body.
    INVALID_JSON = "invalid_json"
    #: 429 with ``Retry-After``; nothing is processed (a gateway's throttling).
    RATE_LIMITED = "rate_limited"

    @classmethod
    def parse(cls, text: str | FaultKind) -> FaultKind:
        """The kind named by ``text``: its value or name, any case, ``-`` or ``_``."""
        if isinstance(text, FaultKind):
            return text
        key = text.strip().lower().replace("-", "_")
        for kind in cls:
            if kind.value == key:
                return kind
        raise ValueError(f"unknown fault kind {text!r}; known: {[k.value for k in cls]}")


class Stats:
    """What the emulator saw and sent; read it in tests and benchmarks, ``reset()`` between.

    ``requests`` counts arrivals per operation name (rejected ones included), ``responses``
    counts answers per HTTP status (aborted connections have none), ``faults`` counts
    injected faults per kind, ``throttled`` counts 429s sent by the rate limiter (injected
    ``RATE_LIMITED`` faults are in ``faults``; both are in ``responses[429]``), ``overloaded``
    counts 503s sent because the capacity model's queue was full. ``arrivals``
    holds ``(time.monotonic(), operation)`` per request, bounded to the newest ``maxlen``;
    ``latencies`` holds ``(arrival, seconds until the answer was ready, status)`` per answered
    request (the latency as the server measured it, queueing included), bounded alike.
    """

    def __init__(self, arrivals_maxlen: int = 1_000_000) -> None:
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.faults: Counter[FaultKind] = Counter()
        self.throttled = 0
        self.overloaded = 0
        self.arrivals: deque[tuple[float, str]] = deque(maxlen=arrivals_maxlen)
        self.latencies: deque[tuple[float, float, int]] = deque(maxlen=arrivals_maxlen)

    def max_starts_in_window(self, window: float = 1.0, operation: str | None = None) -> int:
        """The most request arrivals in any sliding window of ``window`` seconds.

        Two arrivals share a window when they are less than ``window`` apart, the rule the
        rate limiter applies, so with ``rate_limit=R`` the admitted requests never exceed R.
        """
        times = [t for t, op in self.arrivals if operation is None or op == operation]
        return max_in_window(times, window)

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.requests.clear()
        self.responses.clear()
        self.faults.clear()
        self.throttled = 0
        self.overloaded = 0
        self.arrivals.clear()
        self.latencies.clear()

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly summary (the arrivals as their count only)."""
        return {
            "requests": dict(self.requests),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "faults": {k.value: v for k, v in self.faults.items()},
            "throttled": self.throttled,
            "overloaded": self.overloaded,
            "arrivals": len(self.arrivals),
        }


class RateLimiter:
    """A sliding-window limit per client: at most ``limit`` admitted requests per second.

    A limit below 1 means one request per ``1/limit`` seconds. Rejected requests do not
    occupy the window, so a client that backs off gets through as soon as it may.
    """

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float, limit: float) -> bool:
        """Whether a request of client ``key`` arriving at ``now`` may pass."""
        if limit >= 1:
            allowed, window = math.floor(limit), 1.0
        else:
            allowed, window = 1, 1.0 / limit
        admitted = self._windows.get(key)
        if admitted is None:
            admitted = self._windows[key] = deque()
        cutoff = now - window
        while admitted and admitted[0] <= cutoff:
            admitted.popleft()
        if len(admitted) >= allowed:
            return False
        admitted.append(now)
        return True

    def reset(self) -> None:
        self._windows.clear()


class _Scripted:
    __slots__ = ("kind", "operation", "remaining")

    def __init__(self, kind: FaultKind, remaining: int, operation: str | None) -> None:
        self.kind = kind
        self.remaining = remaining
        self.operation = operation


class Faults:
    """The fault injector of one emulator (``emu.faults``)."""

    def __init__(self, stats: Stats, operations: Collection[str], seed: int | None = None) -> None:
        self._stats = stats
        self._operations = frozenset(operations)
        self._script: list[_Scripted] = []
        self._rng = random.Random(seed)
        #: requests being handled (arrived, not yet answered or aborted)
        self.handling = 0
        self._settled = asyncio.Event()
        self._settled.set()

    async def settled(self) -> None:
        """Return once no request is being handled: every attempt the server received has
        finished (committed or not), including commits held by a SLOW fault and requests whose
        client gave up or was cancelled (a test's stand-in for "wait until the server finished
        what it was doing")."""
        await self._settled.wait()

    def begin(self) -> None:
        """A request arrived."""
        self.handling += 1
        self._settled.clear()

    def end(self) -> None:
        """A request was answered or aborted."""
        self.handling -= 1
        if self.handling == 0:
            self._settled.set()

    def script(self, kind: FaultKind | str, times: int = 1, operation: str | None = None) -> None:
        """Give the next ``times`` requests of ``operation`` (any operation if None) ``kind``.

        Entries queue up in FIFO order: a request takes the oldest entry that matches it.
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        if operation is not None and operation not in self._operations:
            raise ValueError(f"unknown operation {operation!r}; known: {sorted(self._operations)}")
        self._script.append(_Scripted(FaultKind.parse(kind), times, operation))

    @property
    def pending(self) -> list[tuple[FaultKind, int, str | None]]:
        """The scripted faults not used yet: ``(kind, remaining, operation)``, oldest first."""
        return [(s.kind, s.remaining, s.operation) for s in self._script]

    def clear(self) -> None:
        """Drop every scripted fault not used yet."""
        self._script.clear()

    def reseed(self, seed: int | None) -> None:
        self._rng.seed(seed)

    def uniform(self, high: float) -> float:
        """A draw in ``[0, high]`` from the injector's seeded generator (latency jitter)."""
        return self._rng.uniform(0.0, high)

    def pick(
        self,
        operation: str,
        probabilities: Mapping[FaultKind, float],
        only: frozenset[str] | None,
    ) -> FaultKind | None:
        """The fault for one request of ``operation``, if any, counted in the stats."""
        kind: FaultKind | None = None
        for i, entry in enumerate(self._script):
            if entry.operation is None or entry.operation == operation:
                kind = entry.kind
                entry.remaining -= 1
                if entry.remaining == 0:
                    del self._script[i]
                break
        if kind is None and probabilities and (only is None or operation in only):
            draw = self._rng.random()
            for candidate, probability in probabilities.items():
                draw -= probability
                if draw < 0:
                    kind = candidate
                    break
        if kind is not None:
            self._stats.faults[kind] += 1
        return kind
