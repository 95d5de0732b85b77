"""Bulk jobs as the client offers them: :func:`stream` yields one result per item as it
finishes; :func:`run` drives the same engine to the end and returns the account (the summary
API is a thin wrapper over the streaming one, as in elasticsearch-py's bulk helpers)."""

from __future__ import annotations

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
    ``ordered=True``). Use it in ``async with`` if you may stop iterating early; ``result`` is
    the account so far (complete once iteration ended)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._iterator = engine.iterate()

    def __aiter__(self) -> BulkStream:
        return self

    async def __anext__(self) -> ItemResult:
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        await self._iterator.aclose()

    async def __aenter__(self) -> BulkStream:
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
    async for _ in engine.iterate():
        pass
    return engine.result()
