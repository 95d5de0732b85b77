"""The bulk engine: a bounded pool of workers pulling from the input, one result per item.

Shape: a reader task pulls items lazily from any (async) iterable into a small queue; N workers
take them, run them through the client (whose governor caps concurrency and rate), account for
each result (tally, checkpoint, progress) and, when streaming, hand it to the consumer through a
bounded queue. Memory therefore stays flat however long the input is.

Rows with the same key (UserData or ID) are never in flight together: a later one waits in a
per-key chain and is run, in input order, by the worker that holds that key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._checkpoint import Checkpoint, fingerprint
from ._exceptions import (
    APIStatusError,
    BulkError,
    ContactValidationError,
    DiallerError,
)
from ._item import ItemRunner
from ._limits import JOB_LIMITER, RateLimiter, check_concurrency, check_rate
from ._models import Contact
from ._operations import OperationRules, Prepared, rules_for
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress, Tally

if TYPE_CHECKING:
    from ._client import DiallerClient

log = logging.getLogger("dialler_async")


class _Job:
    __slots__ = (
        "digest",
        "done",
        "duplicate",
        "index",
        "input",
        "invalid",
        "prepared",
        "sent_unsafe",
    )

    def __init__(self, index: int, item: Any) -> None:
        self.index = index
        self.input = item
        self.prepared: Prepared | None = None
        self.invalid: ContactValidationError | None = None
        self.digest = b""
        self.duplicate = False
        self.sent_unsafe = False
        self.done = False


async def _each(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """Any iterable as an async one, pulled one item at a time."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class Engine:
    """One bulk job: reader, workers, account. Use through :mod:`._bulk`."""

    def __init__(
        self,
        client: DiallerClient,
        operation: Operation,
        items: Iterable[Any] | AsyncIterable[Any],
        options: dict[str, Any],
        *,
        deliver: bool = True,
    ) -> None:
        self.deliver = deliver
        options = dict(options)
        journal = {
            k: options.get(k)
            for k in ("overwrite_duplicates", "campaign_id", "campaign_name", "by_user_data")
        }
        self.rules: OperationRules = rules_for(operation, options)
        self.operation = operation
        self.client = client
        self.items = items
        on_error: Literal["collect", "raise"] = options.pop("on_error", "collect")
        if on_error not in ("collect", "raise"):
            raise ValueError("on_error must be 'collect' or 'raise'")
        self.raise_on_error = on_error == "raise"
        self.max_failures: int | None = options.pop("max_failures", None)
        self.on_progress: Callable[[Progress], object] | None = options.pop("on_progress", None)
        self.progress_interval: float = options.pop("progress_interval", 0.5)
        self.ordered: bool = options.pop("ordered", False)
        self.grace: float = options.pop("grace", 5.0)
        self.workers_count: int = (
            check_concurrency("concurrency", options.pop("concurrency", None))
            or client.limits.max_concurrency
        )
        rate = check_rate("rate", options.pop("rate", None))
        job_limiter = (
            RateLimiter(
                rate, margin=client.limits.jitter_margin, clock=client._clock, sleep=client._sleep
            )
            if rate
            else None
        )
        self.runner = ItemRunner(client, self.rules, job_limiter)
        self.total: int | None = options.pop("total", None)
        if self.total is None and isinstance(items, Sized):
            self.total = len(items)
        self.tally = Tally(keep=options.pop("keep_results", True))
        self.seen: set[int] | None = set() if options.pop("detect_duplicates", True) else None
        checkpoint: str | Path | None = options.pop("checkpoint", None)
        if options:
            raise TypeError(f"unknown bulk options: {sorted(options)}")
        self.checkpoint = Checkpoint(checkpoint, operation, journal) if checkpoint else None

        transport = client.transport
        self.clock = client._clock
        self.started = self.clock()
        self.base = (transport.requests, transport.retries, transport.governor.throttled)
        self.failures = 0
        self.stopping = False
        self.closing = False
        self.input_error: BaseException | None = None
        self.read_all = False
        self.active: dict[object, collections.deque[_Job]] = {}
        self.inbox: asyncio.Queue[_Job | None] = asyncio.Queue(self.workers_count * 2)
        self.outbox: asyncio.Queue[ItemResult | None] = asyncio.Queue(self.workers_count * 4)
        self.reorder: dict[int, ItemResult] = {}
        self.next_index = 0
        self.last_progress = self.started
        self.tasks: list[asyncio.Task[None]] = []
        self.alive = 0

    # -- account ----------------------------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        """Requests, retries and 429s made through the client since the job started."""
        t = self.client.transport
        return {
            "requests": t.requests - self.base[0],
            "retries": t.retries - self.base[1],
            "throttled": t.governor.throttled - self.base[2],
        }

    def result(self) -> BulkResult:
        return self.tally.result(
            self.operation,
            elapsed=self.clock() - self.started,
            read_all=self.read_all,
            **self._counters(),
        )

    def _progress(self, finished: bool = False) -> None:
        if self.on_progress is None:
            return
        now = self.clock()
        if not finished and now - self.last_progress < self.progress_interval:
            return
        self.last_progress = now
        # From the running counts only: result() sorts every kept item, too dear to repeat.
        done, elapsed = self.tally.done, now - self.started
        self.on_progress(
            Progress(
                done=done,
                total=self.total,
                counts=dict(self.tally.counts),
                elapsed=elapsed,
                rate=done / elapsed if elapsed > 0 else 0.0,
                current_rate_limit=self.client.transport.governor.rate,
                finished=finished,
                **self._counters(),
            )
        )

    def _account(self, job: _Job, result: ItemResult) -> None:
        """Count a result once: tally, checkpoint, stop rules. Synchronous, so it cannot be
        interrupted half-way by a cancellation."""
        job.done = True
        self.tally.add(result)
        if self.checkpoint is not None and job.prepared is not None:
            error = str(result.error) if result.error else None
            self.checkpoint.record(result.index, job.digest, result.outcome, result.key, error)
        if not result.ok and result.outcome is not Outcome.CANCELLED:
            self.failures += 1
            if self.raise_on_error or (self.max_failures and self.failures >= self.max_failures):
                self.stopping = True
        self._progress()

    async def _emit(self, job: _Job, result: ItemResult) -> None:
        self._account(job, result)
        if self.closing or not self.deliver:
            return
        if not self.ordered:
            await self.outbox.put(result)
            return
        self.reorder[result.index] = result
        while self.next_index in self.reorder:
            await self.outbox.put(self.reorder.pop(self.next_index))
            self.next_index += 1

    def _result(
        self,
        job: _Job,
        outcome: Outcome,
        *,
        key: str | int | None = None,
        error: DiallerError | None = None,
        record: dict[str, Any] | None = None,
        contact: Contact | None = None,
        attempts: int = 0,
        reconciled: bool = False,
        reason: str | None = None,
    ) -> ItemResult:
        if key is None and job.prepared is not None:
            key = job.prepared.key
        status = (
            error.status
            if isinstance(error, APIStatusError)
            else (None if error is not None or attempts == 0 else 200)
        )
        return ItemResult(
            index=job.index,
            key=key,
            operation=self.operation,
            outcome=outcome,
            input=job.input,
            record=record,
            contact=contact,
            error=error,
            status=status,
            attempts=attempts,
            duplicate_in_input=job.duplicate,
            reconciled=reconciled,
            reason=reason,
        )

    def _interrupted(self, job: _Job) -> ItemResult:
        return self._result(job, Outcome.AMBIGUOUS if job.sent_unsafe else Outcome.CANCELLED)

    # -- per item ---------------------------------------------------------------------------

    def _prepare(self, job: _Job) -> None:
        """Validate and convert the item once; note UserData/ID seen earlier in the input."""
        try:
            prepared = job.prepared = self.rules.prepare(job.input)
        except ContactValidationError as err:
            job.invalid = err
            return
        if self.checkpoint is not None:
            job.digest = fingerprint(prepared.payload)
        if self.seen is not None and prepared.serial_key is not None:
            digest = hash(prepared.serial_key)
            if digest in self.seen:
                job.duplicate = True
            else:
                self.seen.add(digest)

    async def _process(self, job: _Job) -> ItemResult:
        prepared = job.prepared
        if prepared is None:
            return self._result(
                job, Outcome.INVALID, key=getattr(job.invalid, "key", None), error=job.invalid
            )
        resumed: str | None = None
        before_unsafe_send: Callable[[], None] | None = None
        checkpoint = self.checkpoint
        if checkpoint is not None:
            resumed = checkpoint.previous(job.index, job.digest)
            if resumed == Outcome.SUCCEEDED.value:
                return self._result(job, Outcome.SKIPPED, reason="already done")

            def before_unsafe_send() -> None:
                checkpoint.mark_pending(job.index, job.digest, prepared.key)

        verdict = await self.runner.run(
            job, prepared, resumed=resumed, before_unsafe_send=before_unsafe_send
        )
        return self._result(
            job,
            verdict.outcome,
            error=verdict.error,
            record=verdict.record,
            contact=verdict.contact,
            attempts=verdict.attempts,
            reconciled=verdict.reconciled,
        )

    # -- tasks ------------------------------------------------------------------------------

    async def _read(self) -> None:
        index = 0
        job: _Job | None = None
        try:
            async with contextlib.aclosing(_each(self.items)) as each:
                async for item in each:
                    job = _Job(index, item)
                    index += 1
                    await self.inbox.put(job)
                    job = None
                    if self.stopping:
                        break
                else:
                    self.read_all = True
        except asyncio.CancelledError:
            if job is not None:
                self._account(job, self._result(job, Outcome.CANCELLED))
            raise
        except Exception as exc:  # the caller's iterator failed: stop, report it at the end
            log.debug("reading the input failed after %d items: %r", index, exc)
            self.input_error = exc  # what was read is still processed, then this is raised
        for _ in range(self.workers_count):
            await self.inbox.put(None)

    async def _work(self) -> None:
        JOB_LIMITER.set(self.runner.job_limiter)  # every attempt of this task passes it
        try:
            while (job := await self.inbox.get()) is not None:
                if self.stopping:
                    await self._emit(job, self._result(job, Outcome.CANCELLED))
                else:
                    await self._handle(job)
        finally:
            self.alive -= 1
        if self.alive == 0 and not self.closing:
            await self.outbox.put(None)

    async def _handle(self, job: _Job) -> None:
        self._prepare(job)
        key = job.prepared.serial_key if job.prepared is not None else None
        waiting: collections.deque[_Job] | None = None
        if key is not None:
            waiting = self.active.get(key)
            if waiting is not None:
                job.duplicate = True
                waiting.append(job)
                return
            waiting = self.active[key] = collections.deque()
        try:
            while True:
                try:
                    result = (
                        self._result(job, Outcome.CANCELLED)
                        if self.stopping
                        else await self._process(job)
                    )
                except Exception as exc:  # a bug must cost one item, never the job
                    log.exception("item %d failed unexpectedly", job.index)
                    result = self._result(
                        job,
                        Outcome.AMBIGUOUS if job.sent_unsafe else Outcome.FAILED,
                        error=DiallerError(f"internal error: {exc!r}"),
                    )
                await self._emit(job, result)
                if not waiting:
                    break
                job = waiting.popleft()
        except asyncio.CancelledError:
            if not job.done:
                self._account(job, self._interrupted(job))
            for later in waiting or ():
                self._account(later, self._result(later, Outcome.CANCELLED))
            raise
        finally:
            if key is not None:
                del self.active[key]

    # -- lifecycle --------------------------------------------------------------------------

    async def iterate(self) -> AsyncGenerator[ItemResult, None]:
        await self.rules.resolve(self.client)  # issue 10: campaign name -> ID once, before row one
        self.alive = self.workers_count
        self.tasks = [asyncio.create_task(self._read(), name="dialler-bulk-reader")]
        self.tasks += [
            asyncio.create_task(self._work(), name=f"dialler-bulk-worker-{n}")
            for n in range(self.workers_count)
        ]
        try:
            while (result := await self.outbox.get()) is not None:
                yield result
        except asyncio.CancelledError as cancelled:
            await self._shutdown()
            cancelled.bulk_result = self.result()  # type: ignore[attr-defined]
            raise
        finally:
            await self._shutdown()
        self._progress(finished=True)
        if self.input_error is not None:
            raise self.input_error
        if self.raise_on_error and self.failures:
            account = self.result()
            raise BulkError(
                f"{self.operation.value} stopped at the first failure: {account.summary()}",
                account,
            )

    async def _shutdown(self) -> None:
        """Stop reading, give in-flight requests ``grace`` seconds, cancel the rest, and
        account for every item still queued. Idempotent."""
        if self.closing:
            return
        self.closing = True
        self.stopping = True
        reader, workers = self.tasks[0], self.tasks[1:]
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        while not self.outbox.empty():  # already accounted; unblocks workers handing over
            self.outbox.get_nowait()
        self._cancel_queued()
        for _ in workers:  # room is certain: the inbox holds 2 x workers and is empty now
            self.inbox.put_nowait(None)
        running = [w for w in workers if not w.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._cancel_queued()
        if self.checkpoint is not None:
            self.checkpoint.close()

    def _cancel_queued(self) -> None:
        while not self.inbox.empty():
            job = self.inbox.get_nowait()
            if job is not None and not job.done:
                self._account(job, self._result(job, Outcome.CANCELLED))
