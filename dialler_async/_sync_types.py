"""What a sync plans and reports (:class:`SyncPlan`, :class:`SyncResult`), and the small
pieces its planner and its phases share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from ._exceptions import BulkError
from ._results import BulkResult

MissingPolicy = Literal["keep", "lock", "delete"]

#: Kinds of journaled rows: an import, an update by ID.
NEW: Final = 1
CHANGED: Final = 2


@attrs.frozen(kw_only=True)
class SyncPlan:
    """What a sync does. ``new`` + ``changed`` + ``unchanged`` + ``conflicts`` + ``invalid``
    + ``superseded`` is the number of input rows; ``missing`` counts contacts of the campaign
    (of ``campaign_size``) that no input row names; ``missing_policy`` is what is done to them.

    ``superseded``: rows whose UserData a later row repeats. All rows with one UserData are
    merged in input order (later fields win) and compared with the server as one, so only the
    last row that needs a request sends it (with the merged fields); the earlier ones are
    SKIPPED with the reason ``"superseded by a later row with the same UserData"``."""

    campaign_id: int
    campaign_size: int
    new: int
    changed: int
    unchanged: int
    missing: int
    conflicts: int
    invalid: int
    missing_policy: MissingPolicy
    superseded: int = 0

    @property
    def missing_share(self) -> float:
        """``missing`` as a share of the campaign (0.0 for an empty campaign)."""
        return self.missing / self.campaign_size if self.campaign_size else 0.0

    @property
    def rows(self) -> int:
        return (
            self.new
            + self.changed
            + self.unchanged
            + self.conflicts
            + self.invalid
            + self.superseded
        )

    def as_dict(self) -> dict[str, int]:
        """The counts, as the CLI's report writes them."""
        names = ("new", "changed", "unchanged", "missing", "conflicts", "invalid", "superseded")
        return {name: getattr(self, name) for name in names}


@attrs.frozen(kw_only=True)
class SyncResult:
    """The outcome of a sync: its ``plan``, the account of every input row (``rows``, one
    item per row; each item's ``operation`` is IMPORT, UPDATE, or SYNC where nothing was sent)
    and of the missing policy (``missing``: LOCK or DELETE items keyed by contact ID; None for
    ``keep`` or a dry run). ``dry_run``: nothing was written (new/changed rows are SKIPPED
    with the reason ``"dry run: new"``/``"dry run: changed"``)."""

    plan: SyncPlan
    rows: BulkResult
    missing: BulkResult | None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.rows.ok and (self.missing is None or self.missing.ok)

    def summary(self) -> str:
        plan = ", ".join(f"{n} {k}" for k, n in self.plan.as_dict().items())
        out = f"plan: {plan}; rows: {self.rows.summary()}"
        if self.missing is not None:
            out += f"; {self.missing.operation.value} missing: {self.missing.summary()}"
        return out

    def raise_for_failures(self) -> SyncResult:
        """Raise :class:`BulkError` (with the rows' account) unless :attr:`ok`; else self."""
        if not self.rows.ok:
            raise BulkError(f"sync: {self.summary()}", self.rows)
        if self.missing is not None and not self.missing.ok:
            raise BulkError(f"sync: {self.summary()}", self.missing)
        return self


class Planned(dict[str, Any]):
    """A request body handed to the engine that remembers the input row it came from."""

    __slots__ = ("duplicate", "index", "original", "user_data")

    def __init__(
        self, body: Mapping[str, Any], index: int, original: Any, user_data: str, duplicate: bool
    ) -> None:
        super().__init__(body)
        self.index = index
        self.original = original
        self.user_data = user_data
        self.duplicate = duplicate
