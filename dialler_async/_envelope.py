"""Reading the API's answer envelopes (``{"records": [...], "count": N, "status": 200}``)."""

from __future__ import annotations

from typing import Any, TypeVar

from ._converter import structure
from ._exceptions import ResponseFormatError
from ._transport import Reply

T = TypeVar("T")


def _malformed(reply: Reply, why: str, body: object) -> ResponseFormatError:
    return ResponseFormatError(why, method=reply.method, path=reply.path, body=repr(body))


def structure_records(reply: Reply, cls: type[T]) -> list[T]:
    """Every record of a list envelope as ``cls``; :class:`ResponseFormatError` if malformed."""
    _check_status(reply)
    data = reply.data
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise _malformed(reply, "no 'records' list in the answer", data)
    try:
        return [structure(record, cls) for record in records]
    except (ValueError, TypeError) as exc:
        raise _malformed(reply, f"unexpected record ({exc})", records) from exc


def _check_status(reply: Reply) -> None:
    """A 2xx whose body says otherwise (``"status": 500``) is not a success."""
    data = reply.data
    status = data.get("status") if isinstance(data, dict) else None
    if status is not None and not (type(status) is int and 200 <= status < 300):
        raise _malformed(reply, f"a 2xx answer whose body has status {status!r}", data)


def checked_action(reply: Reply) -> None:
    """Check an action's ``{"status": 200}`` answer (None: a retry found the work done)."""
    if reply.data is not None:
        _check_status(reply)


def _first(reply: Reply) -> Any:
    _check_status(reply)
    data = reply.data
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        raise _malformed(reply, "the answer holds no record", data)
    return records[0]


def first_record(reply: Reply, cls: type[T]) -> T:
    """The one record of a single-record envelope; :class:`ResponseFormatError` if none."""
    record = _first(reply)
    try:
        return structure(record, cls)
    except (ValueError, TypeError) as exc:
        raise _malformed(reply, f"unexpected record ({exc})", record) from exc


def first_raw_record(
    reply: Reply, *, id: int | None = None, user_data: str | None = None
) -> dict[str, Any]:
    """The one record of a write's answer, checked for its shape (an object with an integer
    ``ID``) and, where given, for being the contact the request named (``id``; ``user_data``
    where the record carries one); full conversion is left to whoever reads it."""
    data = reply.data
    # The common case inline (every row of a bulk job passes here): one status-200 envelope
    # with an object record that has an integer ID; anything else takes the checks below.
    if (
        type(data) is dict
        and ((status := data.get("status")) is None or (type(status) is int and status == 200))
        and type(records := data.get("records")) is list
        and records
        and type(record := records[0]) is dict
        and type(record.get("ID")) is int
    ):
        pass
    else:
        record = _first(reply)
        if not isinstance(record, dict) or type(record.get("ID")) is not int:
            raise _malformed(reply, "the record has no integer ID", record)
    if id is not None and record["ID"] != id:
        raise _malformed(reply, f"the answer is about contact {record['ID']}, not {id}", record)
    if user_data is not None and "UserData" in record and record["UserData"] != user_data:
        raise _malformed(
            reply, f"the answer's UserData {record.get('UserData')!r} is not {user_data!r}", record
        )
    return record
