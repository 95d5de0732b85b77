"""Retry decisions are pure functions: table-driven, no network, no real sleeping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialler_async import (
    BadRequestError,
    ConflictError,
    ConnectError,
    DiallerError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
)
from dialler_async._exceptions import AuthenticationError, ConnectionLostError, ResponseFormatError
from dialler_async._retry import (
    RetryBudget,
    backoff_delay,
    decide,
    is_retryable,
    may_have_landed,
    parse_retry_after,
    throttle_pause,
)

M, P = "POST", "/dialler/contacts/import"


def status(cls: type, code: int, retry_after: float | None = None) -> DiallerError:
    return cls(code, "boom", method=M, path=P, retry_after=retry_after)  # type: ignore[no-any-return]


CONNECT = ConnectError("refused", method=M, path=P)
CONNECT_TIMEOUT = RequestTimeoutError("t", method=M, path=P, request_sent=False)
READ_TIMEOUT = RequestTimeoutError("t", method=M, path=P, request_sent=True)
LOST = ConnectionLostError("reset", method=M, path=P)
MALFORMED = ResponseFormatError("bad", method=M, path=P, body="<html>")

# error, retried when idempotent, retried when not idempotent, may have been carried out
TABLE = [
    (CONNECT, True, True, False),
    (CONNECT_TIMEOUT, True, True, False),
    (READ_TIMEOUT, True, False, True),
    (LOST, True, False, True),
    (status(RateLimitError, 429), True, True, False),
    (status(ServerError, 502), True, False, True),
    (status(ServerError, 503), True, True, False),  # refused before the application acted
    (status(ServerError, 504), True, False, True),
    (status(ServerError, 500), False, False, True),
    (status(BadRequestError, 400), False, False, False),
    (status(AuthenticationError, 401), False, False, False),
    (status(NotFoundError, 404), False, False, False),
    (status(ConflictError, 409), False, False, False),
    (MALFORMED, False, False, True),
]


@pytest.mark.parametrize(("error", "idempotent_ok", "unsafe_ok", "landed"), TABLE)
def test_what_is_retried(
    error: DiallerError, idempotent_ok: bool, unsafe_ok: bool, landed: bool
) -> None:
    assert may_have_landed(error) is landed
    policy = RetryPolicy()
    assert is_retryable(policy, error, idempotent=True) is idempotent_ok
    assert is_retryable(policy, error, idempotent=False) is unsafe_ok
    decision = decide(policy, error, attempt=1, idempotent=True, elapsed=0.0, rand=lambda: 1.0)
    assert decision.retry is idempotent_ok


@pytest.mark.parametrize(
    ("retry_number", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 16.0), (7, 20.0)]
)
def test_backoff_is_exponential_and_capped(retry_number: int, expected: float) -> None:
    policy = RetryPolicy()
    assert backoff_delay(policy, retry_number, rand=lambda: 1.0) == expected
    assert backoff_delay(policy, retry_number, rand=lambda: 0.25) == expected * 0.25


def test_full_jitter_uses_the_random_source() -> None:
    values = iter([0.0, 0.5, 0.999])
    delays = [backoff_delay(RetryPolicy(), 3, rand=lambda: next(values)) for _ in range(3)]
    assert delays == [0.0, 1.0, pytest.approx(1.998)]


def test_attempt_cap() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert decide(policy, CONNECT, attempt=2, idempotent=True, elapsed=0).retry
    last = decide(policy, CONNECT, attempt=3, idempotent=True, elapsed=0)
    assert (last.retry, last.reason) == (False, "attempts exhausted")
    assert not decide(RetryPolicy.never(), CONNECT, attempt=1, idempotent=True, elapsed=0).retry


def test_deadline() -> None:
    policy = RetryPolicy(deadline=10.0)
    ok = decide(policy, CONNECT, attempt=1, idempotent=True, elapsed=9.0, rand=lambda: 1.0)
    late = decide(policy, CONNECT, attempt=1, idempotent=True, elapsed=9.6, rand=lambda: 1.0)
    assert ok.retry and not late.retry and late.reason == "deadline exceeded"


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retry_after=60)
    d = decide(policy, status(RateLimitError, 429, 7.0), attempt=1, idempotent=False, elapsed=0)
    assert (d.retry, d.delay) == (True, 7.0)
    d = decide(policy, status(ServerError, 503, 3.0), attempt=1, idempotent=True, elapsed=0)
    assert (d.retry, d.delay) == (True, 3.0)
    # Retry-After is a floor: zero does not turn into a tight loop
    d = decide(
        policy,
        status(RateLimitError, 429, 0.0),
        attempt=3,
        idempotent=True,
        elapsed=0,
        rand=lambda: 1.0,
    )
    assert d.delay == 2.0
    d = decide(policy, status(RateLimitError, 429, 61.0), attempt=1, idempotent=True, elapsed=0)
    assert (d.retry, d.reason) == (False, "Retry-After above max_retry_after")


NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": " 7 "}, 7.0),
        ({"Retry-After": "1.5"}, None),  # RFC 9110: delay-seconds is digits only
        ({"Retry-After": "1_0"}, None),  # float() would read 10
        ({"Retry-After": "1e3"}, None),
        ({"Retry-After": "-4"}, None),
        ({"Retry-After": "Mon, 30 Nov 2100 12:00:30 GMT"}, 2335219230.0),
        ({"Retry-After": "Mon, 30 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Mon, 30 Nov 2026 11:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "x", "Retry-After": "9"}, 9.0),
        ({"retry-after-ms": "1_0", "Retry-After": "9"}, 9.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_retry_budget_stops_a_retry_storm_and_refills_on_success() -> None:
    policy = RetryPolicy(budget=20, retry_cost=5, timeout_retry_cost=10)
    budget = RetryBudget(20)
    assert budget.try_spend(READ_TIMEOUT, policy)  # 10 left
    assert budget.try_spend(CONNECT, policy)  # 5 left
    assert budget.try_spend(status(RateLimitError, 429), policy)  # 0 left: 429s cost too
    assert not budget.try_spend(LOST, policy)
    assert not budget.try_spend(CONNECT, policy)
    assert budget.tokens == 0
    for _ in range(30):
        budget.refund()
    assert budget.tokens == 20


@pytest.mark.parametrize("retry_number", [1, 10, 64, 65, 1_000, 10**9])
def test_backoff_never_overflows(retry_number: int) -> None:
    policy = RetryPolicy(deadline=None, multiplier=10.0, max_backoff=20.0)
    assert 0.0 <= backoff_delay(policy, retry_number, lambda: 1.0) <= 20.0


def test_a_storm_429_is_not_retried() -> None:
    storm = status(RateLimitError, 429)
    assert isinstance(storm, RateLimitError)
    storm.storm = True
    d = decide(RetryPolicy(), storm, attempt=1, idempotent=True, elapsed=0)
    assert (d.retry, d.reason) == (False, "not retryable")


@pytest.mark.parametrize(
    ("retry_after", "pause"),
    [(None, None), (0.0, 0.0), (2.0, 2.0), (120.0, 120.0), (120.5, None), (3600.0, None)],
)
def test_a_pause_above_the_cap_is_never_applied(
    retry_after: float | None, pause: float | None
) -> None:
    error = status(RateLimitError, 429, retry_after)
    assert isinstance(error, RateLimitError)
    assert throttle_pause(RetryPolicy(max_retry_after=120.0), error) == pause


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": 0}, "deadline"),
        ({"max_backoff": float("inf")}, "max_backoff"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"budget": -1}, "budget"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_policy_validation(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**changes)  # type: ignore[arg-type]
