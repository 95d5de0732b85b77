"""Bulk jobs as the client offers them: :func:`stream` yields one result per item as it
finishes; :func:`run` drives the same engine to the end and returns the account (the summary
API is a thin wrapper over the streaming one, as in elasticsearch-py's bulk helpers).

Both end the same way: once the job has ended and every item read is accounted for, they raise
what stopped it (the caller's own exception from an input iterator or callback, a
:class:`CheckpointError`, :class:`BulkError` with ``on_error="raise"``, or the cancellation
itself) with the exact partial account attached as ``bulk_result``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from ._engine import Engine
from ._options import StreamOptions
from ._results import BulkResult, ItemResult, Operation

if TYPE_CHECKING:
    from ._client import DiallerClient


class BulkStream:
    """The results of a bulk job as an async iterator, in completion order (or input order with
    ``ordered=True``); ``result`` is the account so far (complete once iteration ended).

    The job starts on the first ``__anext__`` (or ``async with``). Leaving early — ``break``,
    :meth:`aclose`, leaving ``async with``, or simply dropping the stream — stops it: nothing
    new is sent, in-flight items get the job's ``grace``. Prefer ``async with`` (or
    :meth:`aclose`), which also waits for those in-flight items.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Dropped without aclose() (a bare `break`): stop at once, from the finalizer.
        weakref.finalize(self, engine.abandon)

    def __aiter__(self) -> BulkStream:
        return self

    async def __anext__(self) -> ItemResult:
        engine = self._engine
        engine.start()
        try:
            result = await engine.handover.get()
        except asyncio.CancelledError as cancelled:
            engine.abandon()
            await engine.shutdown()  # a further cancel only shortens the grace
            cancelled.bulk_result = engine.result()  # type: ignore[attr-defined]
            raise
        if result is not None:
            return result
        if await engine.shutdown():  # ended: wait for the last of it (the checkpoint closing)
            raise asyncio.CancelledError
        error = engine.failure()
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the job (if still running) and wait until it has ended."""
        self._engine.abandon()
        if await self._engine.shutdown():
            raise asyncio.CancelledError

    async def __aenter__(self) -> BulkStream:
        self._engine.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def result(self) -> BulkResult:
        return self._engine.result()


def _as_dict(options: StreamOptions) -> dict[str, Any]:
    """The typed options as the engine takes them (a plain dict it may consume)."""
    return dict(options.items())


def stream(
    client: DiallerClient,
    operation: Operation,
    items: Iterable[Any] | AsyncIterable[Any],
    **options: Unpack[StreamOptions],
) -> BulkStream:
    """See :meth:`DiallerClient.stream`."""
    return BulkStream(Engine(client, operation, items, _as_dict(options)))


async def run(
    client: DiallerClient,
    operation: Operation,
    items: Iterable[Any] | AsyncIterable[Any],
    **options: Unpack[StreamOptions],
) -> BulkResult:
    """Run the same engine as :func:`stream` to the end and return the account.

    Nobody reads the items one by one here, so they are not handed over at all: the account
    (and ``keep_results``) already holds them.
    """
    engine = Engine(client, operation, items, _as_dict(options), deliver=False)
    engine.start()
    try:
        await engine.wait()
    except asyncio.CancelledError as cancelled:
        await engine.shutdown()
        cancelled.bulk_result = engine.result()  # type: ignore[attr-defined]
        raise
    error = engine.failure()
    if error is not None:
        raise error
    return engine.result()
