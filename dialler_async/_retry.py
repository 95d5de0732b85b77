"""When to try a request again, and how long to wait: small pure functions plus a retry budget.

The rule that matters most: a request that may have reached the server is repeated only when
repeating it cannot change the outcome (GETs, delete/lock/unlock/reset, update, and an import
with ``overwriteDuplicates=true`` and a UserData). The API has no idempotency keys, so a plain
import that timed out is never replayed here; the bulk engine reconciles it by UserData.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import attrs

from ._exceptions import (
    APIStatusError,
    DiallerError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    TransportError,
)

_DEFAULT_RETRY_STATUSES: Final = frozenset({502, 503, 504})


def _finite(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, not {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a single request is retried.

    * ``max_attempts``: attempts in all, the first included (1 = never retry).
    * ``initial_backoff`` / ``max_backoff`` / ``multiplier``: exponential backoff with full jitter:
      the n-th retry waits ``uniform(0, min(max_backoff, initial_backoff * multiplier**(n-1)))``.
    * ``deadline``: seconds from the first attempt after which no retry starts (None: no limit).
    * ``max_retry_after``: a longer ``Retry-After`` is not waited for (the error is raised).
    * ``retry_statuses``: server errors retried when the call is safe to repeat. 429 is always
      retried (the request was not processed), 500 never (jtel: a server-side failure to report).
    * ``budget``: a client-wide retry quota (botocore's "standard" mode): each retry costs
      ``retry_cost`` tokens (``timeout_retry_cost`` after a timeout), each success refunds one.
      When it runs dry, errors are raised at once, so an outage cannot turn a large job into a
      retry storm. None disables it.
    """

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    initial_backoff: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_backoff: float = attrs.field(default=20.0, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    deadline: float | None = 300.0
    max_retry_after: float = attrs.field(default=120.0, validator=[attrs.validators.ge(0), _finite])
    retry_statuses: frozenset[int] = _DEFAULT_RETRY_STATUSES
    budget: int | None = 500
    retry_cost: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    timeout_retry_cost: int = attrs.field(default=10, validator=attrs.validators.ge(0))

    def __attrs_post_init__(self) -> None:
        for name in ("initial_backoff", "max_backoff", "multiplier"):
            _finite(self, attrs.fields_dict(RetryPolicy)[name], getattr(self, name))
        if self.deadline is not None and not (math.isfinite(self.deadline) and self.deadline > 0):
            raise ValueError(
                f"deadline must be a positive number of seconds or None: {self.deadline!r}"
            )
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0 or None: {self.budget!r}")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1, budget=None)


@attrs.frozen
class RetryDecision:
    """The outcome of :func:`decide`: retry after ``delay`` seconds, or not, and why."""

    retry: bool
    delay: float
    reason: str


# Past this exponent every multiplier >= 2 is beyond any sane max_backoff; capping it keeps
# ``multiplier ** n`` from overflowing for huge attempt counts (deadline=None).
_MAX_EXPONENT: Final = 64


def backoff_delay(policy: RetryPolicy, retry_number: int, rand: Callable[[], float]) -> float:
    """Full-jitter delay before retry number ``retry_number`` (1-based)."""
    exponent = min(max(retry_number - 1, 0), _MAX_EXPONENT)
    try:
        ceiling = policy.initial_backoff * policy.multiplier**exponent
    except OverflowError:
        ceiling = policy.max_backoff
    return rand() * min(policy.max_backoff, ceiling)


def is_retryable(policy: RetryPolicy, error: DiallerError, *, idempotent: bool) -> bool:
    """Whether ``error`` may be retried at all, ignoring attempts, deadline and budget."""
    if isinstance(error, RateLimitError):
        return not error.storm
    if isinstance(error, TransportError):
        return not error.request_sent or idempotent
    if isinstance(error, ServerError):
        # A 503 was refused before the application acted: safe to resend even when unsafe.
        return error.status in policy.retry_statuses and (idempotent or not may_have_landed(error))
    return False


# Statuses that can come back after the application already acted: its own failure (500), or
# a gateway that gave up waiting for it (502, 504). A 503 is refused before it gets there.
_MAYBE_PROCESSED_STATUSES: Final = frozenset({500, 502, 504})


def may_have_landed(error: DiallerError) -> bool:
    """Whether the request that failed with ``error`` may still have been carried out.

    True for a transport failure after sending, a 500/502/504, and a 2xx whose body could not be
    read; False where the server certainly did nothing (never sent, 4xx, 429, 503).
    """
    if isinstance(error, TransportError):
        return error.request_sent
    if isinstance(error, APIStatusError):
        return error.status in _MAYBE_PROCESSED_STATUSES
    return isinstance(error, ResponseFormatError)


def decide(
    policy: RetryPolicy,
    error: DiallerError,
    *,
    attempt: int,
    idempotent: bool,
    elapsed: float,
    rand: Callable[[], float] = random.random,
) -> RetryDecision:
    """Decide whether to retry after ``attempt`` attempts (1-based) failed with ``error``."""
    if not is_retryable(policy, error, idempotent=idempotent):
        return RetryDecision(False, 0.0, "not retryable")
    if attempt >= policy.max_attempts:
        return RetryDecision(False, 0.0, "attempts exhausted")
    delay = backoff_delay(policy, attempt, rand)
    retry_after = error.retry_after if isinstance(error, APIStatusError) else None
    if retry_after is not None:
        if retry_after > policy.max_retry_after:
            return RetryDecision(False, 0.0, "Retry-After above max_retry_after")
        # The server's word is the floor; "Retry-After: 0" must not become a tight loop.
        delay = max(delay, retry_after)
    if policy.deadline is not None and elapsed + delay > policy.deadline:
        return RetryDecision(False, 0.0, "deadline exceeded")
    return RetryDecision(True, delay, "retry")


_DIGITS: Final = re.compile(r"[0-9]+")
_MILLIS: Final = re.compile(r"[0-9]+(\.[0-9]+)?")


def throttle_pause(policy: RetryPolicy, error: RateLimitError) -> float | None:
    """How long a 429 may pause every caller of the client: its Retry-After, unless that is
    above ``max_retry_after`` (then the call fails at once and nobody else is held)."""
    wait = error.retry_after
    return wait if wait is not None and wait <= policy.max_retry_after else None


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP-date.

    Strict (RFC 9110): ``Retry-After`` is ASCII digits or an HTTP-date; anything else (``1_0``,
    ``1e3``, ``-5``, ``nan``) is malformed. Returns None when absent or malformed (then backoff
    applies); never negative.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None and _MILLIS.fullmatch(millis.strip()):
        return float(millis.strip()) / 1000.0
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if _DIGITS.fullmatch(raw):
        seconds = float(raw)
    else:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class RetryBudget:
    """A shared quota of retries (see :class:`RetryPolicy`'s ``budget``)."""

    __slots__ = ("_capacity", "_tokens")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._tokens = capacity

    @property
    def tokens(self) -> int:
        return self._tokens

    def try_spend(self, error: DiallerError, policy: RetryPolicy) -> bool:
        """Take the cost of one retry after ``error``; False (nothing taken) when too few left.

        A 429 costs like any retry: a server that only throttles must not keep a job going
        for ever.
        """
        cost = (
            policy.timeout_retry_cost
            if isinstance(error, RequestTimeoutError)
            else policy.retry_cost
        )
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True

    def refund(self) -> None:
        """A success puts one token back."""
        if self._tokens < self._capacity:
            self._tokens += 1
