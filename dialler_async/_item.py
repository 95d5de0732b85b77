"""Carrying out one bulk item under the write-safety rules: send, and prove unconfirmed writes.

The engine (:mod:`._engine`) decides *when* an item runs and accounts for it; this module decides
*what* is sent for it and what its outcome is. The one rule that matters: a write that may have
landed is never sent again unless a lookup proved it did not land (see :mod:`._operations` for
what is safe to resend and what counts as proof).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._checkpoint import PENDING
from ._exceptions import DiallerError
from ._limits import RateLimiter
from ._models import Contact
from ._operations import OperationRules, Prepared, record_matches
from ._results import Outcome
from ._retry import may_have_landed

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._client import DiallerClient

log = logging.getLogger("dialler_async")


class Tracked(Protocol):
    """What the engine keeps per item and this module updates: whether a write that is not
    safe to repeat may be on its way (an interruption then makes the item AMBIGUOUS)."""

    index: int
    sent_unsafe: bool


@attrs.frozen(slots=True)
class Verdict:
    """The outcome of one item, before the engine turns it into an :class:`ItemResult`."""

    outcome: Outcome
    error: DiallerError | None = None
    record: dict[str, Any] | None = None
    contact: Contact | None = None
    attempts: int = 0
    reconciled: bool = False


class ItemRunner:
    """Runs prepared items of one job through the client, one call of :meth:`run` per item."""

    __slots__ = ("client", "job_limiter", "rules")

    def __init__(
        self, client: DiallerClient, rules: OperationRules, job_limiter: RateLimiter | None
    ) -> None:
        self.client = client
        self.rules = rules
        self.job_limiter = job_limiter

    async def run(
        self,
        item: Tracked,
        prepared: Prepared,
        *,
        resumed: str | None,
        before_unsafe_send: Callable[[], None] | None,
    ) -> Verdict:
        """Carry ``prepared`` out. ``resumed`` is the state an earlier run journaled for this
        item (PENDING/AMBIGUOUS: it may have landed, so it is reconciled first);
        ``before_unsafe_send`` is called before a write that is not safe to repeat is sent (the
        engine journals PENDING there)."""
        if resumed in (PENDING, Outcome.AMBIGUOUS.value) and not prepared.idempotent:
            return await self._reconcile(item, prepared, attempts=0)
        if before_unsafe_send is not None and not prepared.idempotent:
            before_unsafe_send()
        return await self._send(item, prepared)

    async def _send(
        self, item: Tracked, prepared: Prepared, attempts: int = 0, rounds: int = 0
    ) -> Verdict:
        item.sent_unsafe = not prepared.idempotent
        try:
            reply = await self.rules.send(self.client, prepared)
            record = self.rules.record(reply)
        except DiallerError as err:
            attempts += err.attempts
            if not prepared.idempotent and may_have_landed(err):
                if prepared.user_data is not None and rounds == 0:
                    return await self._reconcile(item, prepared, attempts, error=err)
                return Verdict(Outcome.AMBIGUOUS, error=err, attempts=attempts)
            item.sent_unsafe = False
            return Verdict(Outcome.FAILED, error=err, attempts=attempts)
        item.sent_unsafe = False
        return Verdict(Outcome.SUCCEEDED, record=record, attempts=attempts + reply.attempts)

    async def _reconcile(
        self, item: Tracked, prepared: Prepared, attempts: int, error: DiallerError | None = None
    ) -> Verdict:
        """An import may or may not have landed: look its UserData up before resending."""
        if prepared.user_data is None:
            return Verdict(Outcome.AMBIGUOUS, error=error, attempts=attempts)
        try:
            found = await self.client.find_contacts(prepared.user_data)
        except DiallerError as err:
            return Verdict(Outcome.AMBIGUOUS, error=error or err, attempts=attempts)
        for contact in found:
            if record_matches(contact, prepared.payload):
                item.sent_unsafe = False
                return Verdict(
                    Outcome.SUCCEEDED, contact=contact, attempts=attempts, reconciled=True
                )
        log.info(
            "item %d (UserData %r) did not land; sending it again", item.index, prepared.user_data
        )
        return await self._send(item, prepared, attempts, rounds=1)
