"""What a job with a checkpoint does with each item: the write-safety policy around the journal.

An item is known by its identity: the digest of its key and content, and which occurrence of
that content it is in the input. A resumed run so finds what an earlier run did with it,
whatever the rows' order. Before an item is sent:

* an earlier run SUCCEEDED with it: it is SKIPPED ("already done"), never sent again;
* an earlier run left it PENDING or AMBIGUOUS (its write may have landed): it is checked by
  lookup first, once the earlier attempt has had time to settle (:meth:`ItemRunner.run`);
* a write that is not safe to repeat is journaled PENDING, durably, before it is sent;
* after an interrupted run (its journal not closed), every item goes through
  :meth:`ItemRunner.run`, which knows the journal may lack its last outcomes;
* anything else (the common case) asks nothing of the checkpoint: the engine sends it as it
  sends any item. The item's outcome is journaled by the :class:`Ledger`.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint, Identity, Previous
from ._digests import DigestSet, stable_digest
from ._item import ItemRunner, Verdict
from ._operations import Prepared, settle_delay
from ._results import Outcome

if TYPE_CHECKING:
    from ._ledger import Job

_DONE = Outcome.SUCCEEDED.value


class Resume:
    """The checkpoint's part in one job's items (see the module docstring)."""

    __slots__ = ("_identities", "_repeats", "_runner", "_timeout", "checkpoint")

    def __init__(self, checkpoint: Checkpoint, runner: ItemRunner, timeout: float) -> None:
        self.checkpoint = checkpoint
        self._runner = runner
        self._timeout = timeout  # the client's: how long an attempt may take to settle
        self._identities = DigestSet()
        self._repeats: dict[int, int] = {}  # occurrences of identities seen more than once

    def identify(self, prepared: Prepared) -> Identity:
        """The identity of the next item read with this content (call once per item, in
        input order)."""
        digest = stable_digest(prepared.serial_key, prepared.payload)
        occurrence = 0
        if not self._identities.add(digest):
            occurrence = self._repeats[digest] = self._repeats.get(digest, 0) + 1
        return (digest, occurrence)

    def journaled(
        self, job: Job, prepared: Prepared, identity: Identity
    ) -> Coroutine[Any, Any, Verdict] | None:
        """The coroutine that carries ``job`` out under the checkpoint, for the caller to
        await; None when the checkpoint asks nothing of it (no earlier entry, safe to repeat,
        the run before closed its journal): then it is sent as any item is."""
        checkpoint = self.checkpoint
        previous = checkpoint.previous(identity, prepared.key)
        if previous is None and prepared.idempotent and not checkpoint.after_interruption:
            return None
        return self._run(job, prepared, identity, previous)

    def done_before(self, job: Job) -> bool:
        """Whether an earlier run did ``job`` (for an item the job stopped before starting:
        SKIPPED then, not CANCELLED)."""
        if job.identity is None or job.prepared is None:
            return False
        previous = self.checkpoint.previous(job.identity, job.prepared.key)
        return previous is not None and previous.state == _DONE

    async def _run(
        self, job: Job, prepared: Prepared, identity: Identity, previous: Previous | None
    ) -> Verdict:
        resumed: str | None = None
        settled = True
        if previous is not None:
            if previous.state == _DONE:
                return Verdict(Outcome.SKIPPED, reason="already done")
            resumed = previous.state
            # A run that stopped moments ago may have left a request the server is still
            # working on: give it the settle time before "not found" may mean "not sent".
            settled = time.time() - previous.at >= settle_delay(self._timeout)
        checkpoint = self.checkpoint

        def before_unsafe_send() -> None:
            checkpoint.mark_pending(identity, prepared.key, job.index)

        return await self._runner.run(
            job,
            prepared,
            resumed=resumed,
            resumed_settled=settled,
            before_unsafe_send=before_unsafe_send,
            journal_incomplete=checkpoint.after_interruption,
        )
