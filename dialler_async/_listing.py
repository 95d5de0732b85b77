"""Reading a list answer as a stream of records, at bounded memory.

The list route answers one JSON envelope holding every contact of a campaign
(``{"records": [...], "count": N, "status": 200}``): hundreds of MB for a large one. ijson's
push parser (its C ``yajl2_c`` backend where installed) is fed the answer chunk by chunk as
aiohttp receives it and hands back each record as soon as it is complete, so only one chunk
and the records of that chunk are in memory at a time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import ijson
import orjson

from ._exceptions import ResponseFormatError
from ._transport import Body

#: Where the records of a list envelope are, in ijson's prefix notation.
RECORDS_PREFIX: Final = "records.item"


def _malformed(body: Body, why: str, excerpt: bytes | None = None) -> ResponseFormatError:
    text = excerpt[:512].decode("utf-8", "replace") if excerpt else None
    return ResponseFormatError(why, method=body.method, path=body.path, body=text)


async def records_of(body: Body, *, small_limit: int) -> AsyncGenerator[dict[str, Any], None]:
    """Each record (a JSON object, numbers as ``int``/``float``) of the list envelope in
    ``body``, as it arrives.

    Checked while streaming: the answer is valid JSON (a truncated or broken answer raises
    :class:`ResponseFormatError` at the point it breaks; records before it have been yielded),
    every record is an object, and the answer's size stays under the body's limit. An answer
    without any record is checked whole (it is small, at most ``small_limit`` bytes are kept):
    it must be an object with a ``records`` list and, if it has one, a 2xx ``status``, so an
    error envelope served with a 200 never reads as an empty campaign. The ``status`` of an
    answer that has records is not checked: that would need a second parse of the whole stream.
    """
    found: Any = ijson.sendable_list()
    parser = ijson.items_coro(found, RECORDS_PREFIX, use_float=True)
    head: bytearray | None = bytearray()  # kept only until the first record arrives
    count = 0
    # Bytes fed since the last complete record: one record is one contact, bounded like any
    # single-contact answer (ijson builds each record whole, so this bounds memory too).
    pending = 0
    try:
        async for chunk in body.chunks():
            if pending > small_limit:
                raise _malformed(
                    body,
                    f"record {count} is larger than the {small_limit:,}-byte limit of one "
                    "contact (max_answer_bytes)",
                )
            pending += len(chunk)
            if head is not None:
                if len(head) + len(chunk) <= small_limit:
                    head += chunk
                else:
                    head = None
            parser.send(chunk)
            if found:
                pending = 0
                batch = list(found)
                del found[:]
                for record in batch:
                    if not isinstance(record, dict):
                        raise _malformed(body, f"record {count} is not a JSON object")
                    count += 1
                    head = None
                    yield record
        parser.close()
    except ijson.JSONError as exc:
        raise _malformed(body, f"invalid JSON after {count} records ({exc})") from None
    for record in found:  # completed by close()
        if not isinstance(record, dict):
            raise _malformed(body, f"record {count} is not a JSON object")
        count += 1
        head = None
        yield record
    if count == 0:
        _check_empty(body, head)


def _check_empty(body: Body, head: bytearray | None) -> None:
    if head is None:
        raise _malformed(body, "a large answer without any record in a 'records' list")
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise _malformed(body, f"invalid JSON ({exc})", bytes(head)) from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise _malformed(body, "no 'records' list in the answer", bytes(head))
    status = data.get("status")
    if status is not None and not (type(status) is int and 200 <= status < 300):
        raise _malformed(body, f"a 2xx answer whose body has status {status!r}", bytes(head))
