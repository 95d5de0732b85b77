"""What a bulk job reports: an :class:`ItemResult` per input and the :class:`BulkResult`."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._converter import structure
from ._exceptions import BulkError, DiallerError
from ._models import Contact


class Operation(enum.StrEnum):
    """What a bulk job does to each item."""

    IMPORT = "import"
    UPDATE = "update"
    DELETE = "delete"
    LOCK = "lock"
    UNLOCK = "unlock"
    RESET = "reset"
    #: The account of a sync's input rows (:meth:`DiallerClient.sync_contacts`): each item's
    #: own ``operation`` says what was done with it (import, update, or nothing).
    SYNC = "sync"


class Outcome(enum.StrEnum):
    """How one input ended. Every input ends in exactly one of these.

    * ``SUCCEEDED``: the server confirmed it (or a lookup proved an unconfirmed write landed).
    * ``FAILED``: the server refused it, or retries ran out; ``error`` says why. Safe to retry.
    * ``INVALID``: rejected before any request (bad input); ``error`` names every problem.
    * ``AMBIGUOUS``: a write that may or may not have happened, and could not be checked
      (no UserData to look it up); NOT resent, so it cannot have been duplicated.
    * ``CANCELLED``: never (completely) sent because the job stopped first. Safe to retry.
    * ``SKIPPED``: nothing to do; ``reason`` says why (``"already done"`` in an earlier run of
      the same job with a checkpoint, ``"unchanged"`` in a sync).
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    AMBIGUOUS = "ambiguous"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


@attrs.frozen(kw_only=True)
class ItemResult:
    """The result of one input item.

    ``index`` is its position in the input (0-based), ``key`` its UserData or ID, ``input`` the
    item as given, ``record``/``contact`` the server's record where one was returned (raw JSON
    object / :class:`Contact`), ``error`` the
    :class:`DiallerError` of a non-success, ``status`` the HTTP status of the last answer (None
    when there was none), ``attempts`` the HTTP attempts made, ``duplicate_in_input`` that an
    earlier input had the same UserData/ID (so this one ran strictly after it), and
    ``reconciled`` that the outcome was established by a lookup after an unconfirmed write.
    ``reason`` says in a few words why an item was SKIPPED (``"already done"`` in an earlier
    run, ``"unchanged"`` by a sync, ``"suppressed"``, ``"duplicate phone"``) and ``warnings``
    lists what was changed or dropped on the way without failing the item.
    """

    index: int
    key: str | int | None
    operation: Operation
    outcome: Outcome
    input: Any = attrs.field(repr=False)
    record: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    error: DiallerError | None = None
    status: int | None = None
    attempts: int = 0
    duplicate_in_input: bool = False
    reconciled: bool = False
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    _contact: Contact | None = attrs.field(default=None, repr=False, alias="contact")

    @property
    def ok(self) -> bool:
        outcome = self.outcome
        return outcome is Outcome.SUCCEEDED or outcome is Outcome.SKIPPED

    @property
    def contact_id(self) -> int | None:
        """The server's ID of the contact this item wrote or found (None without a record):
        from ``record``, or from ``contact`` where a lookup found it (a reconciled write)."""
        if self.record is None:
            return None if self._contact is None else self._contact.id
        value = self.record.get("ID")
        return value if isinstance(value, int) else None

    @property
    def contact(self) -> Contact | None:
        """The server's record as a :class:`Contact` (None where the answer had none).

        Built from ``record`` (the raw JSON object) on first access: a bulk job that never
        looks at the records does not pay for converting them. The record's shape (an object
        with an integer ``ID``) was checked when the item finished; a field of the wrong type
        raises ``ValueError`` here.
        """
        if self._contact is None and self.record is not None:
            # Frozen, so the cache is set the one way attrs leaves open.
            object.__setattr__(self, "_contact", structure(self.record, Contact))
        return self._contact


@attrs.frozen(kw_only=True)
class Progress:
    """A snapshot passed to ``on_progress`` (at most every ``progress_interval`` seconds and once
    at the end). ``total`` is None while the input length is unknown. ``concurrency_limit`` is
    the number of requests the client allows in flight now (it moves with
    ``Limits(adaptive_concurrency=True)``), ``baseline_rtt`` the adaptive limit's no-load round
    trip in seconds (None without adaptive concurrency, or before the first answer)."""

    done: int
    total: int | None
    counts: Mapping[Outcome, int]
    elapsed: float
    rate: float
    requests: int
    retries: int
    throttled: int
    current_rate_limit: float | None
    finished: bool = False
    concurrency_limit: int | None = None
    baseline_rtt: float | None = None

    @property
    def failed(self) -> int:
        return sum(
            n for o, n in self.counts.items() if o not in (Outcome.SUCCEEDED, Outcome.SKIPPED)
        )


@attrs.frozen(kw_only=True)
class BulkResult:
    """The exact account of a bulk job: ``total`` always equals the sum of the six counts.

    ``failures`` holds every non-success item (FAILED, INVALID, AMBIGUOUS, CANCELLED), always;
    ``items`` holds all of them, ordered by input index, only with ``keep_results=True`` (the
    default is False: a job of millions of rows would hold them all). ``read_all`` is False
    when the job stopped before reading its whole input (``max_failures``,
    ``on_error="raise"``, cancellation, a failing input iterator): the rows after the first
    ``total`` were never read and are in no count.
    ``requests``/``retries``/``throttled`` count HTTP attempts, retries
    and 429 answers made through the client while the job ran (jobs running side by side on one
    client share those counters).
    """

    operation: Operation
    succeeded: int
    failed: int
    invalid: int
    ambiguous: int
    cancelled: int
    skipped: int
    failures: Sequence[ItemResult] = attrs.field(repr=False)
    items: Sequence[ItemResult] | None = attrs.field(repr=False)
    elapsed: float
    requests: int
    retries: int
    throttled: int
    duplicates_in_input: int = 0
    read_all: bool = True

    @property
    def total(self) -> int:
        return (
            self.succeeded
            + self.failed
            + self.invalid
            + self.ambiguous
            + self.cancelled
            + self.skipped
        )

    @property
    def counts(self) -> dict[Outcome, int]:
        return {o: getattr(self, o.value) for o in Outcome}

    @property
    def ok(self) -> bool:
        """True when every input SUCCEEDED or was SKIPPED as already done."""
        return self.total == self.succeeded + self.skipped

    def raise_for_failures(self) -> BulkResult:
        """Raise :class:`BulkError` (carrying this result) unless :attr:`ok`; else return self."""
        if not self.ok:
            raise BulkError(f"{self.operation.value}: {self.summary()}", self)
        return self

    def summary(self) -> str:
        parts = [f"{n} {o.value}" for o, n in self.counts.items() if n]
        stopped = "" if self.read_all else " (stopped before the end of the input)"
        return (
            f"{self.total} item{'' if self.total == 1 else 's'}: "
            + (", ".join(parts) or "none")
            + f" in {self.elapsed:.1f}s"
            + stopped
        )


class Tally:
    """Accumulates item results into a :class:`BulkResult` (the engine's bookkeeping)."""

    __slots__ = ("counts", "duplicates", "failures", "items", "keep")

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.counts = dict.fromkeys(Outcome, 0)
        self.failures: list[ItemResult] = []
        self.items: list[ItemResult] = []
        self.duplicates = 0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def add_succeeded(self, duplicate_in_input: bool) -> None:
        """Count a SUCCEEDED item without its :class:`ItemResult` (``keep`` is False)."""
        self.counts[Outcome.SUCCEEDED] += 1
        if duplicate_in_input:
            self.duplicates += 1

    def add(self, result: ItemResult) -> None:
        self.counts[result.outcome] += 1
        if result.duplicate_in_input:
            self.duplicates += 1
        if not result.ok:
            self.failures.append(result)
        if self.keep:
            self.items.append(result)

    def count(self, outcome: Outcome, *, duplicate: bool = False) -> None:
        """Count a successful or skipped item without building its :class:`ItemResult` (only
        when results are not kept: then nothing else of it would be read)."""
        assert not self.keep
        assert outcome in (Outcome.SUCCEEDED, Outcome.SKIPPED)
        self.counts[outcome] += 1
        if duplicate:
            self.duplicates += 1

    def result(
        self,
        operation: Operation,
        *,
        elapsed: float,
        requests: int,
        retries: int,
        throttled: int,
        read_all: bool,
    ) -> BulkResult:
        c = self.counts
        return BulkResult(
            operation=operation,
            succeeded=c[Outcome.SUCCEEDED],
            failed=c[Outcome.FAILED],
            invalid=c[Outcome.INVALID],
            ambiguous=c[Outcome.AMBIGUOUS],
            cancelled=c[Outcome.CANCELLED],
            skipped=c[Outcome.SKIPPED],
            failures=sorted(self.failures, key=_by_index),
            items=sorted(self.items, key=_by_index) if self.keep else None,
            elapsed=elapsed,
            requests=requests,
            retries=retries,
            throttled=throttled,
            duplicates_in_input=self.duplicates,
            read_all=read_all,
        )


def _by_index(item: ItemResult) -> int:
    return item.index
