"""The streamed list-answer parser (_listing.records_of), fed in chunks of every size: the
records and the envelope checks are the same whatever the chunking and the answer's shape,
and a cut inside a string or a nested value is never trusted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dialler_async import ResponseFormatError
from dialler_async._listing import records_of


class FakeBody:
    method, path = "GET", "/dialler/contacts"

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), self.size):
            yield self.data[i : i + self.size]


async def read(data: bytes, size: int, limit: int = 100_000) -> list[dict[str, Any]]:
    return [r async for r in records_of(FakeBody(data, size), small_limit=limit)]  # type: ignore[arg-type]


HOSTILE: list[dict[str, Any]] = [
    {"ID": 1, "Comment": '},{"ID": 99}, {"x":[', "UserData": "a"},
    {"ID": 2, "Comment": "}, ]}", "Nested": {"a": [{"b": 1}, {"c": 2}]}},
    {"ID": 3, "Comment": '\\"},{', "UserData": "c"},
    {"ID": 4},
]
SIZES = [1, 2, 3, 7, 64, 4096]


def _shapes(records: list[dict[str, Any]]) -> dict[str, bytes]:
    n = len(records)
    return {
        "compact": json.dumps({"records": records, "count": n, "status": 200}).encode(),
        "pretty": json.dumps({"records": records, "count": n, "status": 200}, indent=2).encode(),
        "envelope-first": json.dumps({"status": 200, "count": n, "records": records}).encode(),
        "nested-records-first": json.dumps(
            {"meta": {"records": [1]}, "records": records, "count": n}
        ).encode(),
        "no-count": json.dumps({"records": records}).encode(),
    }


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", list(_shapes(HOSTILE)))
async def test_every_shape_and_chunking_yields_exactly_the_records(shape: str, size: int) -> None:
    data = _shapes(HOSTILE)[shape]
    assert await read(data, size, limit=300) == HOSTILE


@pytest.mark.parametrize("size", [1, 5, 64, 1 << 16])
async def test_many_records_across_chunks(size: int) -> None:
    records = [{"ID": i, "UserData": f"U{i}", "Amount": i / 3} for i in range(2000)]
    data = json.dumps({"records": records, "count": 2000, "status": 200}).encode()
    assert await read(data, size) == records


@pytest.mark.parametrize("size", [1, 3, 64, 4096])
@pytest.mark.parametrize(
    "envelope",
    [
        {"records": [{"ID": 1}], "count": 3, "status": 200},
        {"status": 500, "error": "database timeout", "records": [{"ID": 1}]},
        {"records": [{"ID": 1}, {"ID": 2}], "count": 2, "status": 503},
        {"records": [{"ID": i} for i in range(50)], "count": 51},
        {"meta": {"records": []}, "records": [{"ID": 1}], "count": 2},
        {"meta": {"records": []}, "records": [{"ID": 1}], "status": 500},
        {"records": [], "count": 1},
        {"status": 500, "error": "boom"},
        {"records": [{"ID": 1}, 5]},
        {"records": {"ID": 1}},
        [{"ID": 1}],
    ],
)
async def test_an_envelope_that_contradicts_itself_is_refused(envelope: Any, size: int) -> None:
    with pytest.raises(ResponseFormatError):
        await read(json.dumps(envelope).encode(), size)


@pytest.mark.parametrize("size", [1, 4, 64])
@pytest.mark.parametrize(
    "data",
    [
        b'{"records":[{"ID":1},{"ID":2},],"count":2}',
        b'{"records":[{"ID":1},{"ID":2}',
        b'{"records":[{"ID":1},{"ID":2}],"count":2',
        b'{"records":[{"ID":1} {"ID":2}]}',
        b'{"records":[{"ID":1},{"ID":"2}]}',
    ],
    ids=["trailing-comma", "cut-in-array", "cut-in-envelope", "no-comma", "open-string"],
)
async def test_broken_json_is_refused(data: bytes, size: int) -> None:
    with pytest.raises(ResponseFormatError, match="JSON"):
        await read(data, size)


async def test_a_record_over_the_limit_is_refused_while_streaming() -> None:
    data = json.dumps({"records": [{"ID": 1, "Comment": "x" * 10_000}], "count": 1}).encode()
    with pytest.raises(ResponseFormatError, match="limit"):
        await read(data, 256, limit=1000)


async def test_a_string_full_of_cut_candidates_is_one_record() -> None:
    # Every candidate cut inside the string fails; the record still arrives whole (and the
    # number of failed tries per chunk is bounded, so this stays linear-ish).
    comment = '},{"ID":7},' * 2000
    records = [{"ID": 1, "Comment": comment}, {"ID": 2}]
    data = json.dumps({"records": records, "count": 2}).encode()
    assert await read(data, 512, limit=100_000) == records


@pytest.mark.parametrize("size", [1, 4, 64, 4096])
async def test_a_second_records_list_is_refused(size: int) -> None:
    # A parser would keep one of the two lists silently; which is the campaign is unknown.
    data = b'{"records":[{"ID":1},{"ID":2}],"count":2,"records":[{"ID":3}]}'
    with pytest.raises(ResponseFormatError, match="more than one"):
        await read(data, size)


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
@pytest.mark.parametrize(
    "odd",
    [b'"\\ud800"', b'"a\\ud83d b"'],
    ids=["lone-surrogate", "lone-surrogate-in-text"],
)
async def test_what_orjson_refuses_but_json_allows_is_read_by_ijson(odd: bytes, size: int) -> None:
    # A lone surrogate escape in one record (a broken UTF-16 value in the server's database):
    # the answer is valid JSON, so it is read whole (from that record on by ijson), with its
    # envelope checked. (An integer beyond 64 bits is read by orjson, as a float.)
    records = b",".join(b'{"ID":%d,"Comment":"c"}' % i for i in range(50))
    data = b'{"records":[' + records + b',{"ID":50,"X":' + odd + b"}," + records + b'],"count":101}'
    got = await read(data, size, limit=1000)
    assert [r["ID"] for r in got] == [*range(50), 50, *range(50)]
    assert isinstance(got[50]["X"], str)
    wrong = data.replace(b'"count":101', b'"count":100')
    with pytest.raises(ResponseFormatError, match="count"):
        await read(wrong, size, limit=1000)


@pytest.mark.parametrize("size", [1, 64, 4096])
async def test_an_undecodable_escape_is_a_response_format_error(size: int) -> None:
    # A lone low surrogate: orjson refuses it and yajl's UTF-8 decoding fails on it; either
    # way one of the SDK's errors, never a bare UnicodeDecodeError.
    records = b",".join(b'{"ID":%d}' % i for i in range(50))
    data = b'{"records":[' + records + b',{"ID":50,"X":"\\udc00"}],"count":51}'
    with pytest.raises(ResponseFormatError):
        await read(data, size, limit=1000)
