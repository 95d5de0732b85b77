"""The account invariants every bulk test asserts (``assert_account``), and a counting input.

After every bulk run: ``total`` equals the rows read; every read index appears exactly once;
counts sum to total; what the account calls SUCCEEDED is on the server, in the right campaign;
nothing the job did not report was written.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import attrs

from dialler_async import BulkResult, Operation, Outcome
from dialler_async.emulator import Emulator

T = TypeVar("T")

#: Outcomes that must carry an error saying why.
_NEEDS_ERROR = frozenset({Outcome.FAILED, Outcome.INVALID, Outcome.AMBIGUOUS})
#: Outcomes under which a write may have reached the server.
_MAY_HAVE_WRITTEN = frozenset({Outcome.SUCCEEDED, Outcome.AMBIGUOUS})


class Counted(Iterator[T]):
    """An input that counts the rows the job pulled from it (the rows it *read*)."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = iter(items)
        self.read = 0

    def __iter__(self) -> Counted[T]:
        return self

    def __next__(self) -> T:
        item = next(self._items)
        self.read += 1
        return item


class CountedAsync(AsyncIterator[T]):
    """:class:`Counted` for an async input."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = iter(items)
        self.read = 0

    def __aiter__(self) -> CountedAsync[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item = next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None
        self.read += 1
        return item


@attrs.frozen
class Snapshot:
    """The emulator's contacts at one moment, by ID."""

    contacts: dict[int, dict[str, Any]]

    @classmethod
    def take(cls, emulator: Emulator) -> Snapshot:
        return cls({c["ID"]: c for c in emulator.store.all_contacts()})


def assert_account(
    result: BulkResult,
    *,
    read: int,
    emulator: Emulator | None = None,
    before: Snapshot | None = None,
    campaign_id: int | None = None,
    upsert: bool | None = None,
) -> None:
    """Assert the account invariants of one finished (or stopped) bulk run.

    ``read``: rows the job pulled from its input. With ``emulator`` and ``before`` (a snapshot
    taken before the run), the server's end state is checked against the account too;
    ``campaign_id`` is where SUCCEEDED imports must be; ``upsert`` (imports) whether the job
    overwrote duplicates (at most one contact per UserData may then appear).
    """
    counts = result.counts
    assert result.total == read, f"total {result.total} != rows read {read}"
    assert sum(counts.values()) == result.total
    failures = list(result.failures)
    failure_indices = [f.index for f in failures]
    assert len(failure_indices) == len(set(failure_indices)), "an index reported twice"
    assert all(0 <= i < read for i in failure_indices), "a failure outside the rows read"
    assert len(failures) == result.total - result.succeeded - result.skipped
    for failure in failures:
        if failure.outcome in _NEEDS_ERROR:
            assert failure.error is not None, f"{failure.outcome} without a reason: {failure!r}"
    items = list(result.items) if result.items is not None else None
    if items is not None:
        assert [i.index for i in items] == list(range(read)), "indices are not 0..read-1 once"
        tallied = collections.Counter(i.outcome for i in items)
        assert all(tallied[o] == n for o, n in counts.items())
    if emulator is None or before is None:
        return
    after = Snapshot.take(emulator)
    created = [c for i, c in after.contacts.items() if i not in before.contacts]
    removed = [c for i, c in before.contacts.items() if i not in after.contacts]
    may_have_written = result.succeeded + result.ambiguous
    if result.operation is Operation.IMPORT:
        assert len(created) <= may_have_written, (
            f"{len(created)} contacts created, only {may_have_written} reported as written"
        )
        assert not removed, "an import removed contacts"
        if items is not None:
            _check_imports(items, after, created, campaign_id, upsert)
    elif result.operation is Operation.SYNC:
        # A sync's rows import or update (its missing policy has an account of its own).
        assert not removed, "a sync's rows removed contacts"
        if items is not None:
            imports = [i for i in items if i.operation is Operation.IMPORT]
            written = sum(1 for i in imports if i.outcome in _MAY_HAVE_WRITTEN)
            assert len(created) <= written, (
                f"{len(created)} contacts created, only {written} imports reported as written"
            )
            _check_imports(imports, after, created, campaign_id, upsert)
        else:
            assert len(created) <= may_have_written
    elif result.operation is Operation.DELETE:
        assert not created, "a delete created contacts"
        assert len(removed) <= may_have_written, (
            f"{len(removed)} contacts deleted, only {may_have_written} reported as deleted"
        )
    else:
        assert not created and not removed, f"{result.operation} created or removed contacts"


def _check_imports(
    items: list[Any],
    after: Snapshot,
    created: list[dict[str, Any]],
    campaign_id: int | None,
    upsert: bool | None,
) -> None:
    on_server: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for contact in after.contacts.values():
        on_server[contact.get("UserData") or ""].append(contact)
    written: collections.Counter[str] = collections.Counter()
    for item in items:
        if item.outcome in _MAY_HAVE_WRITTEN and isinstance(item.key, str):
            written[item.key] += 1
        if item.outcome is Outcome.SUCCEEDED and isinstance(item.key, str):
            found = on_server.get(item.key, [])
            if campaign_id is not None:
                found = [c for c in found if c.get("DiallerCampaignsID") == campaign_id]
            assert found, f"item {item.index} ({item.key!r}) SUCCEEDED but is not on the server"
    new_by_key = collections.Counter(c.get("UserData") or "" for c in created)
    for key, n in new_by_key.items():
        if not key:
            continue
        limit = min(1, written[key]) if upsert else written[key]
        assert n <= limit, f"{n} new contacts with UserData {key!r}; the account allows {limit}"


def no_job_tasks() -> bool:
    """No bulk job's task (driver, reader, worker) is left running."""
    return not [
        t
        for t in asyncio.all_tasks()
        if (t.get_name() or "").startswith("dialler-bulk") and not t.done()
    ]


def bulk_result_of(error: BaseException) -> BulkResult:
    """The account an exception raised by a bulk job carries."""
    result = getattr(error, "bulk_result", None)
    assert isinstance(result, BulkResult), f"{error!r} carries no bulk_result"
    return result


async def cancel_twice(task: asyncio.Task[Any], limit: float) -> None:
    """Cancel ``task``, let it start unwinding, cancel it again; it must end cancelled within
    ``limit`` seconds (a second cancel must neither hang it nor turn into another error)."""
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    try:
        await asyncio.wait_for(task, limit)
    except asyncio.CancelledError:
        return
    raise AssertionError(f"{task!r} was cancelled twice and did not end cancelled")
