"""The account of one bulk job: every item read is counted exactly once.

The engine's workers report each item's result to a :class:`Ledger`, which counts it
(:class:`Tally`), journals it in the checkpoint, applies the stop rules (``max_failures``,
``on_error="raise"``), calls the caller's ``on_result`` and ``on_progress``, and builds the
job's :class:`BulkResult`. Everything here is synchronous, so a cancellation cannot cut an
item's accounting in half. :class:`Job` is what the engine keeps for each item it has read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint, Identity
from ._exceptions import APIStatusError, CheckpointError, ContactValidationError, DiallerError
from ._models import Contact
from ._operations import Prepared
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress, Tally

if TYPE_CHECKING:
    from ._client import DiallerClient


class Job:
    """One item read: its place in the input, what preparing it gave, and where it stands."""

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


class Ledger:
    """The account of one job. ``stop`` is called when a stop rule fires, ``fail`` with what
    the caller's callback or the checkpoint raised (the job then raises it at the end)."""

    def __init__(
        self,
        client: DiallerClient,
        operation: Operation,
        *,
        keep: bool,
        total: int | None,
        on_result: Callable[[ItemResult], object] | None,
        on_progress: Callable[[Progress], object] | None,
        progress_interval: float,
        raise_on_error: bool,
        max_failures: int | None,
        stop: Callable[[], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.client = client
        self.operation = operation
        self.tally = Tally(keep=keep)
        self.total = total
        self.on_result = on_result
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.raise_on_error = raise_on_error
        self.max_failures = max_failures
        self._stop = stop
        self._fail = fail
        self.failures = 0
        #: read, not yet accounted for (the engine adds each item as it reads it)
        self.unfinished: dict[int, Job] = {}
        self.checkpoint: Checkpoint | None = None  # set once the engine has opened it
        self.clock = client._clock
        self.started = self.last_progress = self.clock()
        self.base = (0, 0, 0)

    def begin(self) -> None:
        """The job starts now: its clock and the client's counters start from here."""
        transport = self.client.transport
        self.started = self.last_progress = self.clock()
        self.base = (transport.requests, transport.retries, transport.governor.throttled)

    # -- the account ------------------------------------------------------------------------

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

    def result(self, *, read_all: bool) -> BulkResult:
        return self.tally.result(
            self.operation,
            elapsed=self.clock() - self.started,
            read_all=read_all,
            **self._counters(),
        )

    def report(self, finished: bool = False) -> None:
        """Call ``on_progress`` if its interval has passed (always when ``finished``)."""
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

    def account(self, job: Job, result: ItemResult) -> bool:
        """Count a result exactly once: tally, checkpoint, stop rules, progress. Synchronous,
        so a cancellation cannot cut it in half; False if ``job`` was already counted."""
        if not self._claim(job):
            return False
        self.tally.add(result)
        self._journal(job, result.key, result.outcome, str(result.error) if result.error else None)
        if not result.ok and result.outcome is not Outcome.CANCELLED:
            self.failures += 1
            if self.raise_on_error or (self.max_failures and self.failures >= self.max_failures):
                self._stop()
        if self.on_result is not None:
            try:
                self.on_result(result)
            except BaseException as exc:  # the caller's callback: as for on_progress
                self.on_result = None
                self._fail(exc)
        if self.on_progress is not None:
            self.report()
        return True

    def account_succeeded(self, job: Job) -> bool:
        """:meth:`account` for a SUCCEEDED item whose ItemResult nobody reads: the same
        bookkeeping (a success triggers no stop rule), without building the result."""
        if job.done:  # _claim(), inline: this runs for most rows of a job
            return False
        job.done = True
        del self.unfinished[job.index]
        self.tally.add_succeeded(job.duplicate)
        if self.checkpoint is not None:
            self._journal(
                job,
                job.prepared.key if job.prepared is not None else None,
                Outcome.SUCCEEDED,
                None,
            )
        if self.on_progress is not None:
            self.report()
        return True

    def _claim(self, job: Job) -> bool:
        """Mark ``job`` accounted for; False if it already was (the exactly-once guard)."""
        if job.done:
            return False
        job.done = True
        del self.unfinished[job.index]
        return True

    def _journal(
        self, job: Job, key: str | int | None, outcome: Outcome, error: str | None
    ) -> None:
        if self.checkpoint is not None and job.identity is not None:
            try:
                self.checkpoint.record(job.identity, key, outcome, job.index, error)
            except CheckpointError as exc:
                self._fail(exc)

    # -- results ----------------------------------------------------------------------------

    def item_result(
        self,
        job: Job,
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
        """The :class:`ItemResult` of ``job`` (its key from what preparing it gave, unless
        ``key`` is given)."""
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

    def interrupted(self, job: Job) -> ItemResult:
        """The result of ``job`` when the job stopped before it had one: AMBIGUOUS if a write
        may have been on its way, else CANCELLED."""
        if not job.sent_unsafe and job.sending:
            return self.item_result(
                job,
                Outcome.AMBIGUOUS,
                error=DiallerError(
                    "the job stopped while this write was on its way; it may have landed "
                    "(it is safe to send again: a resume does)"
                ),
            )
        if not job.sent_unsafe:
            return self.item_result(job, Outcome.CANCELLED)
        return self.item_result(
            job,
            Outcome.AMBIGUOUS,
            error=DiallerError(
                "the job stopped while this write was on its way; it may have landed "
                "(a resume with the same checkpoint checks it by lookup before sending)"
            ),
        )
