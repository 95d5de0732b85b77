"""One phase of a sync (imports, updates, or the missing policy) through the bulk engine.

The engine is fed an iterator of planned items and numbers them itself (0, 1, ...); each
result is put back at its position in the sync's own account. The engine stops handing results
over once it is cancelled, so what it finished but never delivered is taken from its partial
account, and what it never read is CANCELLED here: every position is accounted exactly once.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._exceptions import BulkError
from ._results import BulkResult, ItemResult, Operation, Outcome
from ._sync_types import Planned

if TYPE_CHECKING:
    from ._client import DiallerClient

Restore = Callable[[ItemResult, int], ItemResult]
Account = Callable[[ItemResult], None]


async def run_phase(
    client: DiallerClient,
    operation: Operation,
    source: Iterator[tuple[int, Any]],
    restore: Restore,
    account: Account,
    options: dict[str, Any],
) -> bool:
    """Run ``source`` (position, engine item) through the engine with ``options``; ``restore``
    turns an engine result into the sync's (its position, the input as given). Returns True
    when the engine stopped before the end (``max_failures``, ``on_error="raise"``). Any
    other exception (a cancel, an ``on_progress`` that raised) goes on once every position is
    accounted."""
    positions = array("q")
    received = bytearray()

    def feed() -> Iterator[Any]:
        for position, item in source:
            positions.append(position)
            yield item

    stream = client.stream(operation, feed(), keep_results=False, **options)
    stopped = False
    try:
        async with stream:
            async for result in stream:
                if result.index >= len(received):
                    received.extend(bytes(result.index + 1024 - len(received)))
                received[result.index] = 1
                account(restore(result, positions[result.index]))
    except BulkError:
        stopped = True  # on_error="raise": the sync raises it again with its whole account
    except BaseException as exc:
        # Cancelled, or the caller's own callback raised: the stream is shut down; what it
        # read is settled from its account, what it never read is CANCELLED.
        partial = getattr(exc, "bulk_result", None) or stream.result
        settle(partial, positions, received, restore, account)
        cancel_unread(operation, source, account)
        raise
    partial = stream.result
    settle(partial, positions, received, restore, account)
    cancel_unread(operation, source, account)
    return stopped or not partial.read_all


def cancel_unread(
    operation: Operation, source: Iterator[tuple[int, Any]], account: Account
) -> None:
    """Account every item the engine never read as CANCELLED."""
    for position, item in source:
        account(
            ItemResult(
                index=position,
                key=item.user_data if isinstance(item, Planned) else item,
                operation=operation,
                outcome=Outcome.CANCELLED,
                input=item.original if isinstance(item, Planned) else item,
            )
        )


def settle(
    partial: BulkResult,
    positions: array[int],
    received: bytearray,
    restore: Restore,
    account: Account,
) -> None:
    """Account what the engine read but never handed over: the failures it keeps in its
    partial account; any other item it read SUCCEEDED (the engine never skips here)."""
    failures = {f.index: f for f in partial.failures}
    for index in range(min(partial.total, len(positions))):
        if index < len(received) and received[index]:
            continue
        found = failures.get(index)
        if found is None:
            found = ItemResult(
                index=index,
                key=None,
                operation=partial.operation,
                outcome=Outcome.SUCCEEDED,
                input=None,
            )
        account(restore(found, positions[index]))
