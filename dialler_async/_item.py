"""Carrying out one bulk item under the write-safety rules: send, and prove unconfirmed writes.

The engine (:mod:`._engine`) decides *when* an item runs and accounts for it; this module decides
*what* is sent for it and what its outcome is. The one rule that matters: a write that may have
landed is never sent again unless a lookup proved it did not land (see :mod:`._operations` for
what is safe to resend and what counts as proof).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ._checkpoint import PENDING
from ._exceptions import DiallerError, NotFoundError
from ._limits import RateLimiter
from ._models import Contact
from ._operations import (
    GONE_BEFORE,
    Finding,
    Import,
    OperationRules,
    Prepared,
    Step,
    Update,
    WriteKind,
    after_failure,
    after_lookup,
    after_not_found,
    classify,
    record_matches,
    settle_delay,
)
from ._results import Outcome
from ._transport import Reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._client import DiallerClient

log = logging.getLogger("dialler_async")


class Tracked(Protocol):
    """What the engine keeps per item and this module updates: whether a write that is not
    safe to repeat may be on its way (an interruption then makes the item AMBIGUOUS)."""

    index: int
    sent_unsafe: bool
    sending: bool  # a request (safe to repeat or not) is on its way


class Verdict(NamedTuple):
    """The outcome of one item, before the engine turns it into an :class:`ItemResult` (a
    named tuple: one is built per row, and it is never kept)."""

    outcome: Outcome
    error: DiallerError | None = None
    record: dict[str, Any] | None = None
    contact: Contact | None = None
    attempts: int = 0
    reconciled: bool = False
    reason: str | None = None


_tuple_new = tuple.__new__


def succeeded(record: dict[str, Any] | None, attempts: int) -> Verdict:
    """``Verdict(Outcome.SUCCEEDED, record=record, attempts=attempts)``, built as the tuple it
    is: a named tuple's constructor is Python code (its keywords cost the most of it), and every
    row that succeeds makes one."""
    return _tuple_new(Verdict, (Outcome.SUCCEEDED, None, record, None, attempts, False, None))


class KeyGate:
    """Keeps the rows of one update job that name contacts by ID apart from those that name
    them by UserData, in the order they arrive: a row of one kind waits until every row of the
    other kind that arrived before it has finished. Rows of one kind run together (the engine
    already chains rows with the same key), so a job that uses one kind of key never waits.

    Why: one contact named by ID in one row and by UserData in another must not be updated by
    both at once, and the job cannot know which ID a UserData names before the server says.
    """

    __slots__ = ("_inflight", "_kind", "_waiting")

    def __init__(self) -> None:
        self._kind: str | None = None
        self._inflight = 0
        self._waiting: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()

    async def enter(self, kind: str) -> None:
        """Wait until a row of ``kind`` may run; pair with :meth:`leave`."""
        if not self._waiting and self._kind in (None, kind):
            self._kind = kind
            self._inflight += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((kind, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.leave()  # admitted just as it was cancelled: give the place back
            raise

    def leave(self) -> None:
        """A row admitted by :meth:`enter` finished."""
        self._inflight -= 1
        if self._inflight:
            return
        self._kind = None
        while self._waiting and self._kind in (None, self._waiting[0][0]):
            kind, future = self._waiting.popleft()
            if future.done():  # its row was cancelled while waiting
                continue
            self._kind = kind
            self._inflight += 1
            future.set_result(None)


def _key_kind(prepared: Prepared) -> str:
    body = prepared.payload
    return "id" if isinstance(body, dict) and isinstance(body.get("ID"), int) else "user_data"


class ItemRunner:
    """Runs prepared items of one job through the client, one call of :meth:`run` per item."""

    __slots__ = ("client", "gate", "job_limiter", "rules")

    def __init__(
        self, client: DiallerClient, rules: OperationRules, job_limiter: RateLimiter | None
    ) -> None:
        self.client = client
        self.rules = rules
        self.job_limiter = job_limiter
        self.gate = KeyGate() if isinstance(rules, Update) else None

    async def run(
        self,
        item: Tracked,
        prepared: Prepared,
        *,
        resumed: str | None = None,
        before_unsafe_send: Callable[[], None] | None = None,
        resumed_settled: bool = True,
        journal_incomplete: bool = False,
    ) -> Verdict:
        """Carry ``prepared`` out. ``resumed`` is the state an earlier run journaled for this
        item (PENDING/AMBIGUOUS: it may have landed, so it is checked first;
        ``resumed_settled`` says whether that attempt is old enough to count as settled);
        ``before_unsafe_send`` is called before a write that is not safe to repeat is sent
        (the engine journals PENDING there); ``journal_incomplete``: the run before this one
        did not close the job's journal (see :func:`after_not_found`)."""
        gate = self.gate
        if gate is not None:
            await gate.enter(_key_kind(prepared))
        try:
            if resumed in (PENDING, Outcome.AMBIGUOUS.value) and not prepared.idempotent:
                item.sent_unsafe = True
                return await self._check(
                    item,
                    prepared,
                    0,
                    None,
                    settled=resumed_settled,
                    resent=False,
                    journal=before_unsafe_send,
                )
            if before_unsafe_send is not None and not prepared.idempotent:
                before_unsafe_send()
            verdict = await self.send(item, prepared, journal=before_unsafe_send)
            if (
                verdict.outcome is Outcome.FAILED
                and self.rules.missing_ok_on_retry
                and isinstance(verdict.error, NotFoundError)
            ):
                outcome = after_not_found(
                    journaled_unsettled=resumed in (PENDING, Outcome.AMBIGUOUS.value),
                    journal_incomplete=journal_incomplete,
                )
                if outcome is Outcome.SUCCEEDED:
                    return Verdict(outcome, attempts=verdict.attempts, reconciled=True)
                if outcome is Outcome.SKIPPED:
                    return Verdict(outcome, attempts=verdict.attempts, reason=GONE_BEFORE)
            return verdict
        finally:
            if gate is not None:
                gate.leave()

    async def send(
        self,
        item: Tracked,
        prepared: Prepared,
        attempts: int = 0,
        *,
        resent: bool = False,
        journal: Callable[[], None] | None = None,
    ) -> Verdict:
        """Send ``prepared`` (attempts made so far: ``attempts``; ``resent``: this is the one
        resend a lookup allowed; ``journal``: journals PENDING before a resend)."""
        item.sent_unsafe = not prepared.idempotent
        # Left set if the send is cancelled: an idempotent write cut off on its way may still
        # land, so the engine must not report it as CANCELLED ("not done").
        item.sending = True
        try:
            client = self.client
            transport = client.transport  # raises ClientStateError once the client is closed
            method, path, body = self.rules.request(client, prepared)
            # Transport.call, inline (one coroutine less per row): the first attempt here,
            # the retries (if it failed) after the except block, as call() does.
            started = transport.clock()
            first_error: DiallerError | None = None
            try:
                data = await transport.send(method, path, body)
            except DiallerError as exc:
                first_error = exc
            if first_error is None:
                transport.succeeded()
                reply = _tuple_new(Reply, (data, 1, method, path))  # Reply(...), see succeeded()
            else:
                reply = await transport.retry_after(
                    first_error,
                    started,
                    method,
                    path,
                    body,
                    idempotent=prepared.idempotent,
                    missing_ok_on_retry=self.rules.missing_ok_on_retry,
                )
            item.sending = False
            attempts += reply.attempts
            record = self.rules.record(reply, prepared)
        except DiallerError as err:
            item.sending = False
            attempts += err.attempts
            step = after_failure(prepared.kind, err)
            if step is Step.CHECK:
                return await self._check(
                    item, prepared, attempts, err, settled=False, resent=resent, journal=journal
                )
            item.sent_unsafe = False
            outcome = Outcome.AMBIGUOUS if step is Step.AMBIGUOUS else Outcome.FAILED
            return Verdict(outcome, error=err, attempts=attempts)
        item.sent_unsafe = False
        return succeeded(record, attempts)

    async def _check(
        self,
        item: Tracked,
        prepared: Prepared,
        attempts: int,
        error: DiallerError | None,
        *,
        settled: bool,
        resent: bool,
        journal: Callable[[], None] | None = None,
    ) -> Verdict:
        """A write that is not safe to repeat may have landed: prove it either way by lookup,
        giving the attempt time to settle before anything is sent again."""
        while True:
            finding, contact, lookup_error = await self._look(prepared)
            step = after_lookup(prepared.kind, finding, settled=settled, resent=resent)
            if step is Step.WAIT:
                await self.client._sleep(settle_delay(self.client.timeout))
                settled = True
                continue
            if step is Step.RESEND:
                log.info(
                    "item %d (UserData %r) did not land; sending it again",
                    item.index,
                    prepared.user_data,
                )
                if journal is not None:
                    # A fresh PENDING entry: its time is what a later run's settle check
                    # must count from, not the first attempt's.
                    journal()
                return await self.send(item, prepared, attempts, resent=True, journal=journal)
            if step is Step.SUCCEED:
                item.sent_unsafe = False
                return Verdict(
                    Outcome.SUCCEEDED, contact=contact, attempts=attempts, reconciled=True
                )
            if error is None and lookup_error is None:
                # Resumed from an earlier run's PENDING entry: no error of this run says why.
                error = DiallerError(
                    "an earlier run may have sent this write, and a lookup cannot prove "
                    "whether it landed (no UserData, or its campaign is unknown); it is not "
                    "sent again"
                )
            return Verdict(Outcome.AMBIGUOUS, error=error or lookup_error, attempts=attempts)

    async def _look(
        self, prepared: Prepared
    ) -> tuple[Finding, Contact | None, DiallerError | None]:
        """Look the write's UserData up and judge what is there (see :func:`classify`)."""
        if prepared.user_data is None:
            return Finding.UNCHECKABLE, None, None
        rules = self.rules
        try:
            found = await self.client.find_contacts(prepared.user_data)
            if prepared.kind is WriteKind.DELETE_BY_USER_DATA:
                # The delete acts on the whole account (no campaign): any contact left counts.
                return classify(found, {}, None), None, None
            campaign_id = None
            if isinstance(rules, Import):
                campaign_id = await rules.campaign_of(self.client, prepared.payload)
            if campaign_id is None:
                return Finding.UNCHECKABLE, None, None
        except DiallerError as err:
            return Finding.UNCHECKABLE, None, err
        finding = classify(found, prepared.payload, campaign_id)
        contact = next(
            (
                c
                for c in found
                if c.campaign_id == campaign_id and record_matches(c, prepared.payload)
            ),
            None,
        )
        return finding, contact, None
