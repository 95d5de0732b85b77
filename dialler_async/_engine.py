"""The bulk engine: a supervised pool of workers pulling from the input, one result per item.

Shape: a driver task owns a :class:`asyncio.TaskGroup` with a reader (pulls items lazily from
any (async) iterable) and N workers (prepare, send, account, hand over). No task outlives the
driver, and the driver ends only when every item read has been accounted for exactly once: an
item whose worker was cancelled or died is swept into the account (AMBIGUOUS if a write that is
not safe to repeat may have been sent, else CANCELLED), and the final count is checked against
the rows read. Memory stays flat however long the input is: the reader waits for free slots.

Rows with the same key (UserData or ID) are never in flight together: a later one waits in a
per-key chain and is run, in input order, by the worker that holds that key.

Stopping (max_failures, ``on_error="raise"``, an error from the caller's iterator or callback,
a checkpoint that cannot be written, the consumer leaving, the client closing) is one path:
:meth:`Engine.stop` stops the reading, lets in-flight items finish for ``grace`` seconds, then
cancels what is left. It is idempotent; :meth:`Engine.shutdown` waits for it and survives
further cancellation.

This module is the executor. The account is kept by :class:`~._ledger.Ledger` (counted once,
journaled, callbacks, stop rules); what a checkpoint asks of each item before it is sent is
:class:`~._resume.Resume`'s policy; how one item is sent, retried and reconciled is
:class:`~._item.ItemRunner`'s.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._checkpoint import Checkpoint, open_checkpoint
from ._digests import DigestSet, key_digest
from ._exceptions import (
    BulkError,
    CheckpointError,
    ClientStateError,
    ContactValidationError,
    DiallerError,
)
from ._handover import Handover
from ._intake import ReadSlots, WorkQueue
from ._item import ItemRunner, Verdict
from ._ledger import Job, Ledger
from ._limits import JOB_LIMITER, RateLimiter, check_concurrency, check_rate
from ._operations import Import, KeyedAction, OperationRules, rules_for
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress
from ._resume import Resume

if TYPE_CHECKING:
    from ._client import DiallerClient

log = logging.getLogger("dialler_async")


async def _each(items: AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """An async iterable pulled one item at a time, and closed when left early."""
    iterator = aiter(items)
    try:
        async for item in iterator:
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _being_cancelled() -> bool:
    """Whether the running task is being cancelled: a CancelledError it sees is then a
    cancellation, else something the caller's code raised."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _not_a_cancel(source: str, exc: BaseException) -> RuntimeError:
    error = RuntimeError(f"{source} raised {exc!r} although the job was not cancelled")
    error.__cause__ = exc
    return error


def _describe(rules: OperationRules) -> dict[str, object]:
    """The job's resolved options, as its checkpoint records them."""
    if isinstance(rules, Import):
        return {"overwrite_duplicates": rules.overwrite, "campaign": rules.default_campaign}
    if isinstance(rules, KeyedAction):
        return {"by_user_data": rules.by_user_data}
    return {}


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")
    return float(value)


class Engine:
    """One bulk job: driver, reader, workers, account. Use through :mod:`._bulk`."""

    def __init__(
        self,
        client: DiallerClient,
        operation: Operation,
        items: Iterable[Any] | AsyncIterable[Any],
        options: dict[str, Any],
        *,
        deliver: bool = True,
    ) -> None:
        options = dict(options)
        self.rules: OperationRules = rules_for(operation, options)
        self.operation = operation
        self.client = client
        self.items = items
        self.deliver = deliver
        on_error: Literal["collect", "raise"] = options.pop("on_error", "collect")
        if on_error not in ("collect", "raise"):
            raise ValueError(f"on_error must be 'collect' or 'raise', not {on_error!r}")
        max_failures: int | None = check_concurrency(
            "max_failures", options.pop("max_failures", None)
        )
        on_progress: Callable[[Progress], object] | None = options.pop("on_progress", None)
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable, not {on_progress!r}")
        if inspect.iscoroutinefunction(on_progress):
            # It would be called and its coroutine dropped: never one report.
            raise TypeError("on_progress must be a plain function, not an async one")
        on_result: Callable[[ItemResult], object] | None = options.pop("on_result", None)
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be callable, not {on_result!r}")
        if inspect.iscoroutinefunction(on_result):
            raise TypeError("on_result must be a plain function, not an async one")
        progress_interval = _non_negative(
            "progress_interval", options.pop("progress_interval", 0.5)
        )
        # Order matters only to a consumer: run() hands nothing over.
        self.ordered = bool(options.pop("ordered", False)) and deliver
        self.grace = _non_negative("grace", options.pop("grace", 5.0))
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
        total: int | None = options.pop("total", None)
        if total is None and isinstance(items, Sized):
            total = len(items)
        self.ledger = Ledger(
            client,
            operation,
            keep=bool(options.pop("keep_results", False)),
            total=total,
            on_result=on_result,
            on_progress=on_progress,
            progress_interval=progress_interval,
            raise_on_error=on_error == "raise",
            max_failures=max_failures,
            stop=self.stop,
            fail=self._fail,
        )
        self.seen_keys = DigestSet() if options.pop("detect_duplicates", True) else None
        checkpoint: str | Path | None = options.pop("checkpoint", None)
        if options:
            raise TypeError(f"unknown bulk options: {sorted(options)}")
        self.checkpoint_path = checkpoint
        self.checkpoint: Checkpoint | None = None
        self.resume: Resume | None = None  # the checkpoint's part in each item, once open

        self.read = 0
        self.read_all = False
        self.chains: dict[object, collections.deque[Job] | None] = {}
        self.inbox: WorkQueue[Job | None] = WorkQueue()
        self.slots = ReadSlots(self.workers_count * 2)
        self.handover: Handover[ItemResult] = Handover(self.workers_count)
        self.window = self.workers_count * 4  # ordered: how far reading may run ahead
        self.window_moved = asyncio.Event()
        self.reorder: dict[int, ItemResult] = {}
        self.stranded: list[ItemResult] = []  # accounted, hand-over cut off by a cancel
        self.next_index = 0
        self.stopping = False
        self.aborted = False
        self.resolving = False
        self.error: BaseException | None = None
        self.driver: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.grace_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the job (once); raises :class:`ClientStateError` if the client is not open."""
        if self.driver is not None:
            return
        self.ledger.begin()  # raises ClientStateError if the client is not open
        self.driver = asyncio.create_task(self._drive(), name=f"dialler-bulk-{self.operation}")
        self.client._jobs.add(self)

    def stop(self) -> None:
        """Stop reading; in-flight items get ``grace`` seconds, then are cancelled. Idempotent,
        synchronous (safe from a finalizer or a callback)."""
        if self.stopping:
            return
        self.stopping = True
        self.window_moved.set()
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()  # it may be waiting inside the caller's iterator
        if self.driver is not None and not self.driver.done():
            self.grace_timer = asyncio.get_running_loop().call_later(self.grace, self.abort)

    def abort(self) -> None:
        """Cancel everything still running now (items in flight are swept into the account)."""
        self.stop()
        self.aborted = True
        for task in (self.reader, *self.workers):
            if task is not None and not task.done():
                task.cancel()
        if self.resolving and self.driver is not None:
            self.driver.cancel()

    def abandon(self) -> None:
        """The consumer has gone: nothing more is handed over, nothing new is sent."""
        self.handover.close()
        if self.driver is not None and not self.driver.done():
            self.stop()

    def closing_client(self) -> None:
        """The client this job runs on is closing: the job ends with ClientStateError, and
        nothing more is handed over (a consumer that is not iterating must not hold it up)."""
        if self.driver is not None and not self.driver.done():
            self._fail(ClientStateError("the client was closed while this bulk job ran"))
            self.handover.close()

    async def shutdown(self) -> bool:
        """Stop the job and wait until it has ended and its checkpoint is closed. A further
        cancellation while waiting cuts the grace short but does not stop the wait; returns
        whether one arrived (the caller re-raises it)."""
        driver = self.driver
        if driver is None:
            return False
        self.stop()
        interrupted = False
        while not driver.done():
            try:
                await asyncio.wait([driver])
            except asyncio.CancelledError:
                interrupted = True
                self.abort()
        return interrupted

    async def wait(self) -> None:
        """Wait until the job ends by itself (raises CancelledError if the caller is
        cancelled; the job goes on until :meth:`shutdown`)."""
        assert self.driver is not None
        await asyncio.wait([self.driver])

    def failure(self) -> BaseException | None:
        """What the job must raise now that it has ended (None: it ended normally), with the
        final account attached as ``bulk_result``."""
        account = self.result()
        if isinstance(self.error, StopIteration | StopAsyncIteration):
            # Raised from __anext__ it would read as "finished"; from a coroutine, PEP 479
            # turns it into RuntimeError anyway (without the account).
            error = RuntimeError(f"a callback raised {self.error!r}")
            error.__cause__ = self.error
            self.error = error
        elif isinstance(self.error, asyncio.CancelledError):
            # Raised by a callback, not a cancellation of the caller: raised as it is, it
            # would read as one (a TaskGroup around the caller would swallow it).
            self.error = _not_a_cancel("a callback", self.error)
        if self.error is not None:
            try:
                self.error.bulk_result = account  # type: ignore[attr-defined]
            except AttributeError:  # an exception class with __slots__
                log.debug("cannot attach bulk_result to %r", self.error)
            return self.error
        if self.ledger.raise_on_error and self.ledger.failures:
            return BulkError(
                f"{self.operation.value} stopped at the first failure: {account.summary()}",
                account,
            )
        return None

    def _fail(self, error: BaseException) -> None:
        """The job cannot go on (the caller's iterator or callback raised, the checkpoint
        cannot be written): stop it; ``error`` is raised once everything is accounted for."""
        if self.error is None:
            self.error = error
        self.stop()

    async def _drive(self) -> None:
        try:
            # Until row one, an abort cancels the driver itself (nothing is in flight).
            self.resolving = True
            try:
                await self.rules.resolve(self.client)  # campaign name -> ID, before row one
                if self.checkpoint_path is not None:
                    self.checkpoint = self.ledger.checkpoint = await open_checkpoint(
                        self.checkpoint_path, self.operation, _describe(self.rules)
                    )
            finally:
                self.resolving = False
            if self.checkpoint is not None:
                self.resume = Resume(self.checkpoint, self.runner, self.client.timeout)
                if isinstance(self.rules, Import) and self.rules.phones is not None:
                    # dedupe_phone across runs (issue 14): before row one is judged.
                    self.rules.phones.resume(self.checkpoint, self.rules.default_campaign)
            if not self.stopping:
                async with asyncio.TaskGroup() as group:
                    self.workers = [
                        group.create_task(self._work(), name=f"dialler-bulk-worker-{n}")
                        for n in range(self.workers_count)
                    ]
                    self.reader = group.create_task(self._read(), name="dialler-bulk-reader")
        except asyncio.CancelledError:
            if not self.aborted:
                raise
        except ExceptionGroup as group_error:  # a bug outside every per-item guard
            log.error("bulk engine failed", exc_info=group_error)
            self._fail(DiallerError(f"internal error in the bulk engine: {group_error!r}"))
        except Exception as exc:  # resolving the campaign, opening the checkpoint
            self._fail(exc)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        """Account for every item not yet accounted for, check the account, close up, and
        hand the consumer what it has not been given yet."""
        leftovers = sorted(self.ledger.unfinished.values(), key=lambda job: job.index)
        if leftovers and not self.stopping:
            self._fail(DiallerError(f"internal error: {len(leftovers)} items were left over"))
        swept = []
        for job in leftovers:
            result = self.ledger.interrupted(job)
            if self.ledger.account(job, result):
                swept.append(result)
        if self.ledger.tally.done != self.read:
            self._fail(
                DiallerError(
                    f"internal error: the account holds {self.ledger.tally.done} items "
                    f"but {self.read} were read"
                )
            )
        if self.checkpoint is not None:
            try:
                self.checkpoint.close()
            except CheckpointError as exc:
                self._fail(exc)
        self.ledger.report(finished=True)
        if self.grace_timer is not None:
            self.grace_timer.cancel()
        try:
            if self.deliver:
                await self._hand_over_the_rest(swept)
        finally:
            self.handover.end()
            self.client._jobs.discard(self)

    async def _hand_over_the_rest(self, swept: list[ItemResult]) -> None:
        """Give a consumer still iterating every result it has not had: those swept into the
        account just now and those whose hand-over was cut off by a cancelled worker."""
        stranded, self.stranded = self.stranded, []
        try:
            if self.ordered:
                for result in stranded:
                    self.reorder[result.index] = result
                    self.next_index = min(self.next_index, result.index)
                stranded = []
            for result in [*stranded, *swept]:
                await self._hand_over(result)
            if self.ordered:
                await self._hand_over(None)
        except asyncio.CancelledError:
            self.handover.close()  # the consumer's wait ends; the account is complete
            raise

    # -- account ----------------------------------------------------------------------------

    def result(self) -> BulkResult:
        return self.ledger.result(read_all=self.read_all)

    async def _hand_over(self, result: ItemResult | None) -> None:
        """Give ``result`` to the consumer (in input order with ``ordered``: then it may give
        several, or none yet; None only flushes). A result whose hand-over is cancelled is kept
        for :meth:`_hand_over_the_rest`."""
        if not self.ordered:
            if result is not None:
                try:
                    await self.handover.put(result)
                except asyncio.CancelledError:
                    self.stranded.append(result)
                    raise
            return
        if result is not None:
            self.reorder[result.index] = result
        while (ready := self.reorder.pop(self.next_index, None)) is not None:
            self.next_index += 1
            self.window_moved.set()
            try:
                await self.handover.put(ready)
            except asyncio.CancelledError:
                self.stranded.append(ready)
                raise

    # -- per item ---------------------------------------------------------------------------

    def _prepare(self, job: Job) -> None:
        """Validate and convert the item once; note UserData/ID seen earlier in the input.
        Never raises: whatever goes wrong makes the item INVALID, before any request."""
        try:
            prepared = self.rules.prepare(job.input)
            if self.resume is not None:
                job.identity = self.resume.identify(prepared)
        except ContactValidationError as err:
            job.invalid = err
            return
        except Exception as exc:
            job.invalid = ContactValidationError([f"cannot be prepared: {exc!r}"])
            return
        except BaseException as exc:
            # Reading the caller's row raised a framework's abort signal (or CancelledError,
            # which a plain call cannot receive as a cancellation): the row is INVALID, and
            # the job stops and raises it, as for the input's own iterator. Escaping, it
            # ended the reader and lost the error behind "items were left over".
            job.invalid = ContactValidationError([f"cannot be prepared: {exc!r}"])
            self._fail(
                _not_a_cancel("reading a row", exc)
                if isinstance(exc, asyncio.CancelledError)
                else exc
            )
            return
        job.prepared = prepared
        if self.seen_keys is not None and prepared.serial_key is not None:
            job.duplicate = not self.seen_keys.add(key_digest(prepared.serial_key))

    async def _outcome(self, job: Job) -> ItemResult | None:
        """The item's result (None: it SUCCEEDED and is accounted already, see
        :meth:`Ledger.account_succeeded`); only cancellation escapes (the sweep then accounts
        for it)."""
        prepared = job.prepared
        if prepared is None:
            return self.ledger.item_result(
                job, Outcome.INVALID, key=getattr(job.invalid, "key", None), error=job.invalid
            )
        if prepared.skip is not None:  # issue 14: suppressed / duplicate phone: never sent
            return self.ledger.item_result(job, Outcome.SKIPPED, reason=prepared.skip)
        try:
            if self.stopping:
                return self._not_started(job)
            resume, identity = self.resume, job.identity
            if (
                resume is not None
                and identity is not None
                and (journaled := resume.journaled(job, prepared, identity)) is not None
            ):
                verdict = await journaled
            else:
                # Nothing to check or journal first (the common case): no frame of run().
                runner = self.runner
                verdict = await (
                    runner.send(job, prepared) if runner.gate is None else runner.run(job, prepared)
                )
        except BaseException as exc:
            return self._failed(job, exc)
        return self._settled(job, verdict)

    def _unread(self) -> bool:
        """Whether nobody reads a success's ItemResult (none kept, none handed over, no
        on_result): it is then only counted, not built."""
        ledger = self.ledger
        return ledger.on_result is None and not self.deliver and not ledger.tally.keep

    def _settled(self, job: Job, verdict: Verdict) -> ItemResult | None:
        """The result of ``job`` carried out (None: a success nobody reads, accounted)."""
        if verdict.outcome is Outcome.SUCCEEDED and self._unread():
            self.ledger.account_succeeded(job)
            return None
        return self.ledger.item_result(
            job,
            verdict.outcome,
            error=verdict.error,
            record=verdict.record,
            contact=verdict.contact,
            attempts=verdict.attempts,
            reconciled=verdict.reconciled,
            reason=verdict.reason,
        )

    def _failed(self, job: Job, exc: BaseException) -> ItemResult:
        """The result of ``job`` when carrying it out raised ``exc`` (call it in the ``except``
        block). A cancellation of this worker, or a BaseException that is not a
        CancelledError, is raised again: the sweep accounts for the item."""
        if isinstance(exc, CheckpointError):
            self._fail(exc)
            error: DiallerError = exc
        elif isinstance(exc, Exception):  # a bug must cost one item, never the job
            log.exception("item %d failed unexpectedly", job.index)
            error = DiallerError(f"internal error: {exc!r}")
        elif isinstance(exc, asyncio.CancelledError) and not _being_cancelled():
            # Raised below us though nobody cancelled this worker: escaping, it ended the
            # worker (and with every worker gone, the job hung). It costs this item only.
            log.error("item %d: %r raised without a cancel", job.index, exc)
            error = DiallerError(f"internal error: {exc!r} raised without a cancel")
        else:
            raise exc
        return self.ledger.item_result(
            job, Outcome.AMBIGUOUS if job.sent_unsafe else Outcome.FAILED, error=error
        )

    def _not_started(self, job: Job) -> ItemResult:
        """The result of an item the job stopped before starting: SKIPPED if an earlier run
        did it, else CANCELLED."""
        if self.resume is not None and self.resume.done_before(job):
            return self.ledger.item_result(job, Outcome.SKIPPED, reason="already done")
        return self.ledger.item_result(job, Outcome.CANCELLED)

    # -- tasks ------------------------------------------------------------------------------

    async def _read(self) -> None:
        source = self.items
        # A plain iterable is pulled with next() right here, an async one through _each.
        async_items = _each(source) if isinstance(source, AsyncIterable) else None
        sync_items: Iterator[Any] | None = None
        slots, unfinished = self.slots, self.ledger.unfinished
        try:
            while not self.stopping:
                if slots.free > 0:
                    slots.free -= 1  # ReadSlots.take without its coroutine (the common case)
                else:
                    await slots.take()
                while (
                    self.ordered
                    and not self.stopping
                    and self.read >= self.next_index + self.window
                ):
                    self.window_moved.clear()
                    await self.window_moved.wait()
                if self.stopping:
                    break
                try:
                    if async_items is not None:
                        item = await anext(async_items)
                    else:
                        if sync_items is None:
                            sync_items = iter(source)  # type: ignore[arg-type]
                        item = next(sync_items)
                except (StopIteration, StopAsyncIteration):
                    self.read_all = True
                    break
                except asyncio.CancelledError as exc:
                    if _being_cancelled():
                        raise
                    # Not the job being cancelled: the caller's iterator raised it (awaiting a
                    # future someone else cancelled). Re-raised, it ended the reader as if
                    # cancelled, and the job as if the input had ended there.
                    self._fail(_not_a_cancel("the input", exc))
                    break
                # The caller's iterator: stop, raise it at the end (any BaseException too:
                # escaping, it would end the reader without an account of the error).
                except BaseException as exc:
                    log.debug("reading the input failed after %d items: %r", self.read, exc)
                    self._fail(exc)
                    break
                job = Job(self.read, item)
                self.read += 1
                unfinished[job.index] = job  # owed a result: the ledger counts it off
                # Now, not when a worker takes it: a feed may refill the same object for its
                # next row, and the row is what it was when it was handed over.
                self._prepare(job)
                self.inbox.put(job)
        finally:
            for _ in self.workers:
                self.inbox.put(None)
            try:
                if async_items is not None:
                    await async_items.aclose()
                elif sync_items is not None and (close := getattr(sync_items, "close", None)):
                    close()
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    raise
                self._fail(_not_a_cancel("closing the input", exc))
            except BaseException as exc:
                self._fail(exc)

    async def _work(self) -> None:
        JOB_LIMITER.set(self.runner.job_limiter)  # every attempt of this task passes it
        inbox, chains, deliver, ledger = self.inbox, self.chains, self.deliver, self.ledger
        runner = self.runner
        plain = self.resume is None and runner.gate is None  # fixed once the workers run
        queued = inbox.rows
        while (job := queued.popleft() if queued else await inbox.get()) is not None:
            key = job.prepared.serial_key if job.prepared is not None else None
            if key is not None:
                # A key being worked on is in ``chains``; its queue of later rows is made
                # only when one arrives (most keys never get one).
                if key in chains:
                    chain = chains[key]
                    if chain is None:
                        chain = chains[key] = collections.deque()
                    job.duplicate = True
                    # It keeps its read slot until it runs: rows of one key behind a slow one
                    # must not pull the rest of the input into memory.
                    chain.append(job)
                    continue
                chains[key] = None
            self.slots.give_back()
            try:
                while True:
                    prepared = job.prepared
                    if (
                        plain
                        and prepared is not None
                        and prepared.skip is None
                        and not self.stopping
                    ):
                        # _outcome's common case, inline (a coroutine per row less): no
                        # checkpoint, no key gate, a valid row, the job running.
                        try:
                            verdict = await runner.send(job, prepared)
                        except BaseException as exc:
                            result: ItemResult | None = self._failed(job, exc)
                        else:
                            if (
                                verdict.outcome is Outcome.SUCCEEDED
                                and ledger.on_result is None
                                and not deliver
                                and not ledger.tally.keep
                            ):
                                ledger.account_succeeded(job)
                                result = None
                            else:
                                result = self._settled(job, verdict)
                    else:
                        result = await self._outcome(job)
                    if result is not None and ledger.account(job, result) and deliver:
                        await self._hand_over(result)
                    if key is None or not (chain := chains[key]):
                        break
                    job = chain.popleft()
                    self.slots.give_back()
            finally:
                if key is not None:
                    del chains[key]  # what is still chained is swept into the account
