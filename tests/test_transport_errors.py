"""Narrow error-path tests with aioresponses: each aiohttp failure maps to one error of ours."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from dialler_async import (
    APIStatusError,
    ConnectError,
    DiallerClient,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    TransportError,
)
from dialler_async._exceptions import ConnectionLostError

from .conftest import FakeClock

BASE = "http://dialler.test/rest/v1.0"
CAMPAIGNS = f"{BASE}/7/dialler/campaigns"


@pytest.fixture
async def offline() -> AsyncIterator[DiallerClient]:
    async with DiallerClient(BASE, 7, "tok", retry=RetryPolicy.never()) as c:
        yield c


@pytest.mark.parametrize(
    ("raised", "expected", "sent"),
    [
        (aiohttp.ConnectionTimeoutError(), RequestTimeoutError, False),
        (aiohttp.SocketTimeoutError(), RequestTimeoutError, True),
        (TimeoutError(), RequestTimeoutError, True),
        (aiohttp.ServerDisconnectedError(), ConnectionLostError, True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ConnectionLostError, True),
        (aiohttp.ClientPayloadError("truncated"), ConnectionLostError, True),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey(
                    "dialler.test", 80, False, True, None, None, None
                ),
                OSError(111, "refused"),
            ),
            ConnectError,
            False,
        ),
        (aiohttp.InvalidURL("x"), TransportError, True),
    ],
)
async def test_each_failure_is_translated_once(
    offline: DiallerClient, raised: Exception, expected: type, sent: bool
) -> None:
    with aioresponses() as mock:
        mock.get(CAMPAIGNS, exception=raised)
        with pytest.raises(expected) as info:
            await offline.list_campaigns()
    assert isinstance(info.value, TransportError)
    assert info.value.request_sent is sent
    assert info.value.__cause__ is raised
    assert "tok" not in str(info.value)


# aioresponses 0.7.9 cannot build responses for aiohttp 3.14 (ClientResponse gained a
# required argument), so answers with odd bodies come from a tiny canned server on loopback
# (the `canned` fixture in conftest.py).


async def test_html_page_on_200_is_a_format_error(
    canned: tuple[DiallerClient, list[web.Response]],
) -> None:
    client, answers = canned
    answers.append(web.Response(text="<html>proxy login</html>", content_type="text/html"))
    with pytest.raises(ResponseFormatError, match="invalid JSON") as info:
        await client.list_campaigns()
    assert info.value.body == "<html>proxy login</html>"


async def test_json_that_is_not_the_expected_shape(
    canned: tuple[DiallerClient, list[web.Response]],
) -> None:
    client, answers = canned
    answers.append(web.json_response([1, 2]))
    with pytest.raises(ResponseFormatError, match="JSON object"):
        await client.list_campaigns()
    answers.append(web.json_response({"records": [{"ID": "not a number"}]}))
    with pytest.raises(ResponseFormatError, match="unexpected record"):
        await client.list_campaigns()
    answers.append(web.json_response({"status": 200}))
    with pytest.raises(ResponseFormatError, match="no 'records'"):
        await client.list_campaigns()


async def test_retry_after_ms_header(canned: tuple[DiallerClient, list[web.Response]]) -> None:
    client, answers = canned
    answers.append(
        web.json_response(
            {"status": 429, "error": "slow down"}, status=429, headers={"retry-after-ms": "1500"}
        )
    )
    with pytest.raises(RateLimitError) as info:
        await client.list_campaigns()
    assert info.value.retry_after == 1.5
    assert info.value.error == "slow down"


async def test_error_body_that_is_not_json_is_kept_as_a_snippet(
    canned: tuple[DiallerClient, list[web.Response]],
) -> None:
    client, answers = canned
    answers.append(web.Response(status=418, text="x" * 500))
    with pytest.raises(APIStatusError) as info:
        await client.list_campaigns()
    assert type(info.value) is APIStatusError
    assert info.value.status == 418
    assert info.value.body is not None and info.value.body == "x" * 200 + "..."


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "BadRequestError"),
        (401, "AuthenticationError"),
        (404, "NotFoundError"),
        (409, "ConflictError"),
        (429, "RateLimitError"),
        (500, "ServerError"),
        (503, "ServerError"),
        (403, "APIStatusError"),
    ],
)
async def test_one_error_class_per_status(
    canned: tuple[DiallerClient, list[web.Response]], status: int, expected: str
) -> None:
    client, answers = canned
    answers.append(
        web.json_response({"status": status, "error": f"reason {status}"}, status=status)
    )
    with pytest.raises(APIStatusError) as info:
        await client.get_campaign(1)
    assert type(info.value).__name__ == expected
    assert (info.value.status, info.value.error) == (status, f"reason {status}")
    assert (info.value.method, info.value.path) == ("GET", "/dialler/campaigns/1")


@pytest.mark.parametrize(
    ("status", "attempts"),
    [(400, 1), (401, 1), (403, 1), (404, 1), (409, 1), (500, 1), (429, 4), (503, 4)],
)
async def test_default_policy_tries_a_refused_request_once(
    canned: tuple[DiallerClient, list[web.Response]], status: int, attempts: int
) -> None:
    base_url, answers = canned[0].base_url, canned[1]
    clock = FakeClock()
    for _ in range(attempts):
        answers.append(web.json_response({"status": status, "error": "no"}, status=status))
    async with DiallerClient(base_url, 7, "tok", clock=clock, sleep=clock.sleep) as c:
        with pytest.raises(APIStatusError) as info:
            await c.get_campaign(1)
        assert c.transport.retries == attempts - 1
    assert info.value.attempts == attempts  # default RetryPolicy: 4 attempts where retried
    assert answers == []  # the server saw exactly that many requests
