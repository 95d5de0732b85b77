"""Reading a list answer as a stream of records, at bounded memory.

The list route answers one JSON envelope holding every contact of a campaign
(``{"records": [...], "count": N, "status": 200}``): hundreds of MB for a large one. It is
parsed as it arrives, so only a chunk and the records of that chunk are in memory at a time.

The usual shape (an object whose top-level ``"records"`` array starts within its first
``max_answer_bytes``) is cut at record boundaries and each piece parsed by orjson: the head up
to the array (checked as ``head + "]}"``), runs of whole records (``"[" + run + "]"``), and the
last record with the rest of the envelope (``'{"records":[' + rest``). A candidate cut is a
``}`` followed by a comma; one that falls inside a string or a nested value leaves its piece
unbalanced, which orjson refuses, so the cut is moved, never trusted. Every byte is parsed
once, about 10x less CPU than ijson's event parser on these records (benchmarks/README.md).
Any other shape is read by ijson's push parser (its C backend where installed), and so is the
rest of an answer from a record orjson refuses though JSON allows it (a lone surrogate escape).
An integer beyond 64 bits reads as a float (orjson's rule; no contact field holds one).

Either way the envelope is checked, not only its records: a ``status`` outside 2xx and a
``count`` that differs from the records received are refused (a truncated or error answer must
never read as a complete campaign: for a sync, everyone unread would be "missing").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import orjson

from ._exceptions import ResponseFormatError
from ._transport import Body

#: Where the records of a list envelope are, in ijson's prefix notation.
RECORDS_PREFIX: Final = "records.item"
_RECORDS_KEY: Final = re.compile(rb'"records"\s*:\s*\[')
_CUT: Final = re.compile(rb"\}\s*,")
_OPEN: Final = b'{"records":['
#: Failed cut candidates tried per chunk before waiting for more data (hostile strings only).
_TRIES: Final = 4


def _malformed(body: Body, why: str, excerpt: bytes | None = None) -> ResponseFormatError:
    text = excerpt[:512].decode("utf-8", "replace") if excerpt else None
    return ResponseFormatError(why, method=body.method, path=body.path, body=text)


def check_envelope(body: Body, envelope: dict[str, Any], received: int | None) -> None:
    """Refuse an envelope whose ``status`` is not 2xx, or (``received``: the records read,
    None: not known yet) whose integer ``count`` says another number of records."""
    status = envelope.get("status")
    if status is not None and not (type(status) is int and 200 <= status < 300):
        error = envelope.get("error")
        why = f": {str(error)[:200]}" if error else ""
        raise _malformed(body, f"a 2xx answer whose body has status {status!r}{why}")
    count = envelope.get("count")
    if received is not None and type(count) is int and count != received:
        raise _malformed(
            body,
            f"the answer says count {count} but holds {received} records: it is incomplete "
            "or inconsistent, and is not used",
        )


async def records_of(body: Body, *, small_limit: int) -> AsyncGenerator[dict[str, Any], None]:
    """Each record (a JSON object, numbers as ``int``/``float``) of the list envelope in
    ``body``, as it arrives.

    Checked while streaming: the answer is valid JSON (a truncated or broken answer raises
    :class:`ResponseFormatError` where it breaks; records before it have been yielded), every
    record is an object no larger than ``small_limit`` bytes (the limit of a single-contact
    answer), and the answer stays under the body's limit. Checked at the end (or before the
    first record, where the envelope says it first): a 2xx ``status`` and a ``count`` equal to
    the records yielded; an answer without a ``records`` list is refused.
    """
    chunks = body.chunks()
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        found = _RECORDS_KEY.search(head)
        if found is not None:
            try:
                envelope = orjson.loads(head[: found.end()] + b"]}")
            except orjson.JSONDecodeError:
                envelope = None  # "records" nested in another value: the general parser
            if isinstance(envelope, dict) and envelope.get("records") == []:
                check_envelope(body, envelope, None)
                rest = bytes(head[found.end() :])
                async for record in _cut_records(body, envelope, rest, chunks, small_limit):
                    yield record
                return
            break
        if len(head) > small_limit:
            break
    else:
        # The whole answer is in ``head`` (small): parse it at once.
        try:
            data = orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            raise _malformed(body, f"invalid JSON ({exc})", bytes(head)) from None
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            raise _malformed(body, "no 'records' list in the answer", bytes(head))
        records = data.pop("records")
        check_envelope(body, data, None)
        for count, record in enumerate(records):
            if not isinstance(record, dict):
                raise _malformed(body, f"record {count} is not a JSON object")
            yield record
        check_envelope(body, data, len(records))
        return
    async for record in _ijson_records(body, bytes(head), chunks, small_limit):
        yield record


async def _cut_records(
    body: Body,
    head: dict[str, Any],
    rest: bytes,
    chunks: AsyncIterator[bytes],
    small_limit: int,
) -> AsyncGenerator[dict[str, Any], None]:
    """The records after the head, cut at record boundaries (see the module docstring)."""
    buf = bytearray(rest)
    count = 0
    cuts: list[int] = []  # candidate cuts: offsets just past a "}" followed by a comma
    scanned = 0
    cut_made = False

    def take() -> list[Any] | None:
        nonlocal scanned
        cuts.extend(m.start() + 1 for m in _CUT.finditer(buf, max(0, scanned - 1)))
        scanned = len(buf)
        for _ in range(_TRIES):
            if not cuts:
                return None
            end = cuts.pop()
            try:
                batch = orjson.loads(b"[" + buf[:end] + b"]")
            except orjson.JSONDecodeError:
                continue  # inside a string or a nested value: an earlier cut may hold
            comma = buf.index(b",", end)
            del buf[: comma + 1]
            cuts.clear()
            scanned = 0
            return batch  # type: ignore[no-any-return]
        return None

    stuck = False  # no cut holds within one record's limit: orjson refuses what ijson may read
    async for chunk in chunks:
        buf += chunk
        batch = take()
        if batch is not None:
            cut_made = True
            for record in batch:
                if type(record) is not dict:
                    raise _malformed(body, f"record {count} is not a JSON object")
                count += 1
                yield record
        if len(buf) > small_limit:
            stuck = True
            break
    if not stuck and _RECORDS_KEY.search(buf):
        # A second "records" list after the first (no string can hold this pattern): which
        # one is the campaign cannot be told, and a parser would silently keep only one.
        raise _malformed(body, f"more than one 'records' list (after {count} records)")
    if cut_made and buf.lstrip().startswith(b"]"):
        raise _malformed(body, f"invalid JSON after {count} records (a comma before ']')")
    tail: Any = None
    if not stuck:
        with contextlib.suppress(orjson.JSONDecodeError):
            tail = orjson.loads(_OPEN + buf)
    if not isinstance(tail, dict):
        # What orjson refuses and JSON allows (a lone surrogate escape), a record over the
        # limit, or broken JSON: ijson reads on from this record boundary and tells which.
        more = _ijson_records(
            body, _OPEN + bytes(buf), chunks, small_limit, done=count, envelope=head
        )
        async for record in more:
            yield record
        return
    for record in tail.pop("records"):
        if type(record) is not dict:
            raise _malformed(body, f"record {count} is not a JSON object")
        count += 1
        yield record
    envelope = head | tail
    envelope.pop("records", None)
    check_envelope(body, envelope, count)


async def _ijson_records(
    body: Body,
    head: bytes,
    chunks: AsyncIterator[bytes],
    small_limit: int,
    *,
    done: int = 0,
    envelope: dict[str, Any] | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Any other envelope shape, through ijson: the records, then the envelope's checks (its
    ``count`` and ``status`` come from two more push parsers over the same bytes). ``done``
    and ``envelope``: the records already yielded and the envelope's head, when the records
    are taken over from :func:`_cut_records` at a record boundary."""
    import ijson  # only for unusual answers

    found: Any = ijson.sendable_list()
    parser = ijson.items_coro(found, RECORDS_PREFIX, use_float=True)
    scalars = {name: ijson.sendable_list() for name in ("count", "status")}
    others = [ijson.items_coro(sink, name) for name, sink in scalars.items()]
    count = done
    pending = 0  # bytes fed since the last complete record: one record is one contact

    async def all_chunks() -> AsyncIterator[bytes]:
        yield head
        async for chunk in chunks:
            yield chunk

    try:
        async for chunk in all_chunks():
            if pending > small_limit:
                raise _malformed(
                    body,
                    f"record {count} is larger than the {small_limit:,}-byte limit of one "
                    "contact (max_answer_bytes)",
                )
            pending += len(chunk)
            parser.send(chunk)
            for other in others:
                other.send(chunk)
            if found:
                pending = 0
                batch = list(found)
                del found[:]
                for record in batch:
                    if not isinstance(record, dict):
                        raise _malformed(body, f"record {count} is not a JSON object")
                    count += 1
                    yield record
        parser.close()
        for other in others:
            other.close()
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        # yajl turns a lone low surrogate escape into bytes that are not UTF-8.
        raise _malformed(body, f"invalid JSON after {count} records ({exc})") from None
    for record in found:  # completed by close()
        if not isinstance(record, dict):
            raise _malformed(body, f"record {count} is not a JSON object")
        count += 1
        yield record
    if count == 0 and envelope is None:
        raise _malformed(body, "a large answer without any record in a 'records' list")
    found_scalars = {name: sink[0] for name, sink in scalars.items() if sink}
    check_envelope(body, {**(envelope or {}), **found_scalars}, count)
