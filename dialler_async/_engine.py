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
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._checkpoint import Checkpoint, Identity, Previous
from ._digests import DigestSet, key_digest, stable_digest
from ._exceptions import (
    APIStatusError,
    BulkError,
    CheckpointError,
    ClientStateError,
    ContactValidationError,
    DiallerError,
)
from ._handover import Handover
from ._intake import ReadSlots, WorkQueue
from ._item import ItemRunner, Verdict
from ._limits import JOB_LIMITER, RateLimiter, check_concurrency, check_rate
from ._models import Contact
from ._operations import Import, KeyedAction, OperationRules, Prepared, rules_for, settle_delay
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress, Tally

if TYPE_CHECKING:
    from ._client import DiallerClient

log = logging.getLogger("dialler_async")


class _Job:
    __slots__ = (
        "done",
        "duplicate",
        "identity",
        "index",
        "input",
        "invalid",
        "prepared",
        "sending",
        "sent_unsafe",
    )

    def __init__(self, index: int, item: Any) -> None:
        self.index = index
        self.input = item
        self.prepared: Prepared | None = None
        self.invalid: ContactValidationError | None = None
        self.identity: Identity | None = None
        self.duplicate = False
        self.sent_unsafe = False
        self.sending = False
        self.done = False


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


def _detached(error: DiallerError) -> DiallerError:
    """``error`` without the frames its traceback holds (they can hold a whole response):
    a kept failure must stay small."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += [e for e in (exc.__cause__, exc.__context__) if e is not None]
    return error


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
        self.raise_on_error = on_error == "raise"
        self.max_failures: int | None = check_concurrency(
            "max_failures", options.pop("max_failures", None)
        )
        self.on_progress: Callable[[Progress], object] | None = options.pop("on_progress", None)
        if self.on_progress is not None and not callable(self.on_progress):
            raise TypeError(f"on_progress must be callable, not {self.on_progress!r}")
        if inspect.iscoroutinefunction(self.on_progress):
            # It would be called and its coroutine dropped: never one report.
            raise TypeError("on_progress must be a plain function, not an async one")
        self.on_result: Callable[[ItemResult], object] | None = options.pop("on_result", None)
        if self.on_result is not None and not callable(self.on_result):
            raise TypeError(f"on_result must be callable, not {self.on_result!r}")
        if inspect.iscoroutinefunction(self.on_result):
            raise TypeError("on_result must be a plain function, not an async one")
        self.progress_interval = _non_negative(
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
        self.total: int | None = options.pop("total", None)
        if self.total is None and isinstance(items, Sized):
            self.total = len(items)
        self.tally = Tally(keep=bool(options.pop("keep_results", False)))
        self.seen_keys = DigestSet() if options.pop("detect_duplicates", True) else None
        checkpoint: str | Path | None = options.pop("checkpoint", None)
        if options:
            raise TypeError(f"unknown bulk options: {sorted(options)}")
        self.checkpoint_path = checkpoint
        self.checkpoint: Checkpoint | None = None
        self.identities: DigestSet | None = None
        self.repeats: dict[int, int] = {}  # occurrences of identities seen more than once

        self.clock = client._clock
        self.started = self.clock()
        self.base = (0, 0, 0)
        self.read = 0
        self.read_all = False
        self.failures = 0
        self.unfinished: dict[int, _Job] = {}  # read, not yet accounted for
        self.chains: dict[object, collections.deque[_Job] | None] = {}
        self.inbox: WorkQueue[_Job | None] = WorkQueue()
        self.slots = ReadSlots(self.workers_count * 2)
        self.handover: Handover[ItemResult] = Handover(self.workers_count)
        self.window = self.workers_count * 4  # ordered: how far reading may run ahead
        self.window_moved = asyncio.Event()
        self.reorder: dict[int, ItemResult] = {}
        self.stranded: list[ItemResult] = []  # accounted, hand-over cut off by a cancel
        self.next_index = 0
        self.last_progress = self.started
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
        transport = self.client.transport
        self.started = self.last_progress = self.clock()
        self.base = (transport.requests, transport.retries, transport.governor.throttled)
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
        if self.raise_on_error and self.failures:
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
            self.resolving = True
            await self.rules.resolve(self.client)  # campaign name -> ID once, before row one
            self.resolving = False
            if self.checkpoint_path is not None:
                self.checkpoint = Checkpoint(
                    self.checkpoint_path, self.operation, _describe(self.rules)
                )
                self.identities = DigestSet()
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
        leftovers = sorted(self.unfinished.values(), key=lambda job: job.index)
        if leftovers and not self.stopping:
            self._fail(DiallerError(f"internal error: {len(leftovers)} items were left over"))
        swept = []
        for job in leftovers:
            result = self._interrupted(job)
            if self._account(job, result):
                swept.append(result)
        if self.tally.done != self.read:
            self._fail(
                DiallerError(
                    f"internal error: the account holds {self.tally.done} items "
                    f"but {self.read} were read"
                )
            )
        if self.checkpoint is not None:
            try:
                self.checkpoint.close()
            except CheckpointError as exc:
                self._fail(exc)
        self._report(finished=True)
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

    def _counters(self) -> dict[str, int]:
        """Requests, retries and 429s made through the client since the job started."""
        t = self.client._transport
        if t is None:
            return {"requests": 0, "retries": 0, "throttled": 0}
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

    def _report(self, finished: bool = False) -> None:
        if self.on_progress is None:
            return
        now = self.clock()
        if not finished and now - self.last_progress < self.progress_interval:
            return
        self.last_progress = now
        # From the running counts only: result() sorts every kept item, too dear to repeat.
        done, elapsed = self.tally.done, now - self.started
        transport = self.client._transport
        progress = Progress(
            done=done,
            total=self.total,
            counts=dict(self.tally.counts),
            elapsed=elapsed,
            rate=done / elapsed if elapsed > 0 else 0.0,
            current_rate_limit=transport.governor.rate if transport is not None else None,
            concurrency_limit=(
                transport.governor.concurrency_limit if transport is not None else None
            ),
            baseline_rtt=transport.governor.baseline_rtt if transport is not None else None,
            finished=finished,
            **self._counters(),
        )
        try:
            self.on_progress(progress)
        # The caller's callback: stop the job, raise it at the end. Any BaseException too (a
        # framework's abort signal): escaping here it would kill a worker mid-account. Even
        # CancelledError: a plain function is not where a cancellation arrives, so the callback
        # raised it itself (escaping, it ended the worker and the job hung without it).
        except BaseException as exc:
            self.on_progress = None
            self._fail(exc)

    def _account(self, job: _Job, result: ItemResult) -> bool:
        """Count a result exactly once: tally, checkpoint, stop rules, progress. Synchronous,
        so a cancellation cannot cut it in half; False if ``job`` was already counted."""
        if not self._claim(job):
            return False
        self.tally.add(result)
        self._journal(job, result.key, result.outcome, str(result.error) if result.error else None)
        if not result.ok and result.outcome is not Outcome.CANCELLED:
            self.failures += 1
            if self.raise_on_error or (self.max_failures and self.failures >= self.max_failures):
                self.stop()
        if self.on_result is not None:
            try:
                self.on_result(result)
            except BaseException as exc:  # the caller's callback: as for on_progress
                self.on_result = None
                self._fail(exc)
        if self.on_progress is not None:
            self._report()
        return True

    def _account_succeeded(self, job: _Job) -> bool:
        """:meth:`_account` for a SUCCEEDED item whose ItemResult nobody reads: the same
        bookkeeping (a success triggers no stop rule), without building the result."""
        if not self._claim(job):
            return False
        self.tally.add_succeeded(job.duplicate)
        if self.checkpoint is not None:
            self._journal(
                job,
                job.prepared.key if job.prepared is not None else None,
                Outcome.SUCCEEDED,
                None,
            )
        if self.on_progress is not None:
            self._report()
        return True

    def _claim(self, job: _Job) -> bool:
        """Mark ``job`` accounted for; False if it already was (the exactly-once guard)."""
        if job.done:
            return False
        job.done = True
        del self.unfinished[job.index]
        return True

    def _journal(
        self, job: _Job, key: str | int | None, outcome: Outcome, error: str | None
    ) -> None:
        if self.checkpoint is not None and job.identity is not None:
            try:
                self.checkpoint.record(job.identity, key, outcome, job.index, error)
            except CheckpointError as exc:
                self._fail(exc)

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
            error=None if error is None else _detached(error),
            status=status,
            attempts=attempts,
            duplicate_in_input=job.duplicate,
            reconciled=reconciled,
            reason=reason,
            warnings=job.prepared.warnings if job.prepared is not None else (),
        )

    def _interrupted(self, job: _Job) -> ItemResult:
        if not job.sent_unsafe and job.sending:
            return self._result(
                job,
                Outcome.AMBIGUOUS,
                error=DiallerError(
                    "the job stopped while this write was on its way; it may have landed "
                    "(it is safe to send again: a resume does)"
                ),
            )
        if not job.sent_unsafe:
            return self._result(job, Outcome.CANCELLED)
        return self._result(
            job,
            Outcome.AMBIGUOUS,
            error=DiallerError(
                "the job stopped while this write was on its way; it may have landed "
                "(a resume with the same checkpoint checks it by lookup before sending)"
            ),
        )

    # -- per item ---------------------------------------------------------------------------

    def _prepare(self, job: _Job) -> None:
        """Validate and convert the item once; note UserData/ID seen earlier in the input.
        Never raises: whatever goes wrong makes the item INVALID, before any request."""
        try:
            prepared = self.rules.prepare(job.input)
            if self.identities is not None:
                digest = stable_digest(prepared.serial_key, prepared.payload)
                occurrence = 0
                if not self.identities.add(digest):
                    occurrence = self.repeats[digest] = self.repeats.get(digest, 0) + 1
                job.identity = (digest, occurrence)
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

    async def _outcome(self, job: _Job) -> ItemResult | None:
        """The item's result (None: it SUCCEEDED and is accounted already, see
        :meth:`_account_succeeded`); only cancellation escapes (the sweep then accounts
        for it)."""
        prepared = job.prepared
        if prepared is None:
            return self._result(
                job, Outcome.INVALID, key=getattr(job.invalid, "key", None), error=job.invalid
            )
        if prepared.skip is not None:  # issue 14: suppressed / duplicate phone: never sent
            return self._result(job, Outcome.SKIPPED, reason=prepared.skip)
        try:
            if self.stopping:
                return self._not_started(job)
            checkpoint, identity = self.checkpoint, job.identity
            if (
                checkpoint is not None
                and identity is not None
                and (
                    (previous := checkpoint.previous(identity, prepared.key)) is not None
                    or not prepared.idempotent
                    or checkpoint.after_interruption
                )
            ):
                verdict = await self._process(job, prepared, checkpoint, identity, previous)
            else:
                # Nothing to check or journal first (the common case): no frame of run().
                runner = self.runner
                verdict = await (
                    runner.send(job, prepared) if runner.gate is None else runner.run(job, prepared)
                )
        except CheckpointError as exc:
            self._fail(exc)
            error: DiallerError = exc
        except Exception as exc:  # a bug must cost one item, never the job
            log.exception("item %d failed unexpectedly", job.index)
            error = DiallerError(f"internal error: {exc!r}")
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise  # the sweep accounts for it
            # Raised below us though nobody cancelled this worker: escaping, it ended the
            # worker (and with every worker gone, the job hung). It costs this item only.
            log.error("item %d: %r raised without a cancel", job.index, exc)
            error = DiallerError(f"internal error: {exc!r} raised without a cancel")
        else:
            if (
                verdict.outcome is Outcome.SUCCEEDED
                and self.on_result is None
                and not self.deliver
                and not self.tally.keep
            ):
                # Nobody reads this success's ItemResult (none kept, none handed over, no
                # on_result): it is only counted, not built.
                self._account_succeeded(job)
                return None
            return self._result(
                job,
                verdict.outcome,
                error=verdict.error,
                record=verdict.record,
                contact=verdict.contact,
                attempts=verdict.attempts,
                reconciled=verdict.reconciled,
                reason=verdict.reason,
            )
        return self._result(
            job, Outcome.AMBIGUOUS if job.sent_unsafe else Outcome.FAILED, error=error
        )

    def _not_started(self, job: _Job) -> ItemResult:
        """The result of an item the job stopped before starting: SKIPPED if an earlier run
        did it, else CANCELLED."""
        if self.checkpoint is not None and job.identity is not None and job.prepared is not None:
            previous = self.checkpoint.previous(job.identity, job.prepared.key)
            if previous is not None and previous.state == Outcome.SUCCEEDED.value:
                return self._result(job, Outcome.SKIPPED, reason="already done")
        return self._result(job, Outcome.CANCELLED)

    async def _process(
        self,
        job: _Job,
        prepared: Prepared,
        checkpoint: Checkpoint,
        identity: Identity,
        previous: Previous | None,
    ) -> Verdict:
        """:meth:`ItemRunner.run` under the checkpoint, for an item an earlier run journaled
        (``previous``), or one to journal before an unsafe send, or any item after an
        interrupted run."""
        resumed: str | None = None
        settled = True
        if previous is not None:
            if previous.state == Outcome.SUCCEEDED.value:
                return Verdict(Outcome.SKIPPED, reason="already done")
            resumed = previous.state
            # A run that stopped moments ago may have left a request the server is still
            # working on: give it the settle time before "not found" may mean "not sent".
            settled = time.time() - previous.at >= settle_delay(self.client.timeout)

        def before_unsafe_send() -> None:
            checkpoint.mark_pending(identity, prepared.key, job.index)

        return await self.runner.run(
            job,
            prepared,
            resumed=resumed,
            resumed_settled=settled,
            before_unsafe_send=before_unsafe_send,
            journal_incomplete=checkpoint.after_interruption,
        )

    # -- tasks ------------------------------------------------------------------------------

    async def _read(self) -> None:
        source = self.items
        # A plain iterable is pulled with next() right here, an async one through _each.
        async_items = _each(source) if isinstance(source, AsyncIterable) else None
        sync_items: Iterator[Any] | None = None
        slots = self.slots
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
                job = _Job(self.read, item)
                self.read += 1
                self.unfinished[job.index] = job
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
        inbox, chains, deliver = self.inbox, self.chains, self.deliver
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
                    result = await self._outcome(job)
                    if result is not None and self._account(job, result) and deliver:
                        await self._hand_over(result)
                    if key is None or not (chain := chains[key]):
                        break
                    job = chain.popleft()
                    self.slots.give_back()
            finally:
                if key is not None:
                    del chains[key]  # what is still chained is swept into the account
