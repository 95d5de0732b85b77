"""The state one sync run shares between its plan and its apply: the job's options, the
account of every input row and of the missing policy, progress, and the failure stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._exceptions import DiallerError
from ._models import Campaign
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress, Tally
from ._snapshot import Workspace

if TYPE_CHECKING:
    from ._client import DiallerClient

#: Options that only shape how a stream is delivered; a sync returns its account at the end.
_IGNORED: Final = ("ordered", "detect_duplicates", "total")
#: Options handed on to each phase's bulk job.
_PASSED: Final = ("concurrency", "rate", "grace")


class SyncRun:
    """One sync run: its campaign, its scratch :class:`Workspace`, its options (consumed from
    ``options``; unknown ones are a ``TypeError``) and its account."""

    def __init__(
        self, client: DiallerClient, campaign: Campaign, ws: Workspace, options: dict[str, Any]
    ) -> None:
        self.client = client
        self.campaign = campaign
        self.campaign_id: int = campaign.id or 0
        self.ws = ws
        on_error = options.pop("on_error", "collect")
        if on_error not in ("collect", "raise"):
            raise ValueError("on_error must be 'collect' or 'raise'")
        self.raise_on_error = on_error == "raise"
        self.max_failures: int | None = options.pop("max_failures", None)
        self.on_progress: Callable[[Progress], object] | None = options.pop("on_progress", None)
        self.progress_interval: float = options.pop("progress_interval", 0.5)
        keep = options.pop("keep_results", True)
        self.engine_options: dict[str, Any] = {k: options.pop(k) for k in _PASSED if k in options}
        for name in _IGNORED:
            options.pop(name, None)
        if options:
            raise TypeError(f"unknown sync options: {sorted(options)}")
        self.rows = Tally(keep)
        self.missing = Tally(keep)
        self.failures = 0
        self.stopped = False
        self.counts = {
            "new": 0,
            "changed": 0,
            "unchanged": 0,
            "conflicts": 0,
            "invalid": 0,
            "superseded": 0,
        }
        self.total: int | None = None
        self.read_all = False
        self.deferring = False
        self.deferred: BaseException | None = None
        transport = client.transport
        self.clock = client._clock
        self.started = self.clock()
        self.last_progress = self.started
        self.base = (transport.requests, transport.retries, transport.governor.throttled)

    def _counters(self) -> dict[str, int]:
        t = self.client.transport
        return {
            "requests": t.requests - self.base[0],
            "retries": t.retries - self.base[1],
            "throttled": t.governor.throttled - self.base[2],
        }

    def account(self, result: ItemResult, tally: Tally | None = None) -> None:
        """Put one result in the rows' account (or ``tally``'s); a failure counts towards the
        stop (``on_error="raise"``, ``max_failures``)."""
        (tally or self.rows).add(result)
        if not result.ok and result.outcome is not Outcome.CANCELLED:
            self.failures += 1
            if self.raise_on_error or (self.max_failures and self.failures >= self.max_failures):
                self.stopped = True
        if self.on_progress is not None:
            self.progress()

    def progress(self, finished: bool = False) -> None:
        """Report progress (at most every ``progress_interval``). While planning, an
        ``on_progress`` that raises is held until :meth:`check` (the rows of the chunk being
        classified are accounted first); elsewhere it stops the sync at once."""
        try:
            self._progress(finished)
        except BaseException as exc:
            self.on_progress = None  # never called again once it raised (nor while stopping)
            if not self.deferring:
                raise
            self.stopped = True
            if self.deferred is None:
                self.deferred = exc

    def check(self) -> None:
        """Raise what :meth:`progress` held, if anything."""
        exc, self.deferred = self.deferred, None
        if exc is not None:
            raise exc

    def _progress(self, finished: bool) -> None:
        if self.on_progress is None:
            return
        now = self.clock()
        if not finished and now - self.last_progress < self.progress_interval:
            return
        self.last_progress = now
        counts = dict(self.rows.counts)
        for outcome, n in self.missing.counts.items():
            counts[outcome] += n
        done, elapsed = self.rows.done + self.missing.done, now - self.started
        governor = self.client.transport.governor
        self.on_progress(
            Progress(
                done=done,
                total=self.total,
                counts=counts,
                elapsed=elapsed,
                rate=done / elapsed if elapsed > 0 else 0.0,
                current_rate_limit=governor.rate,
                concurrency_limit=governor.concurrency_limit,
                baseline_rtt=governor.baseline_rtt,
                finished=finished,
                **self._counters(),
            )
        )

    def result(self, tally: Tally, operation: Operation, read_all: bool) -> BulkResult:
        return tally.result(
            operation, elapsed=self.clock() - self.started, read_all=read_all, **self._counters()
        )

    def row(
        self,
        index: int,
        item: Any,
        outcome: Outcome,
        *,
        key: str | None = None,
        error: DiallerError | None = None,
        reason: str | None = None,
        duplicate: bool = False,
    ) -> ItemResult:
        """The result of input row ``index`` that the sync decides itself (nothing sent)."""
        return ItemResult(
            index=index,
            key=key,
            operation=Operation.SYNC,
            outcome=outcome,
            input=item,
            error=error,
            reason=reason,
            duplicate_in_input=duplicate,
        )
