"""The options of a bulk job, typed for the caller.

The engine takes them as a plain dict (and refuses unknown keys at run time); these
``TypedDict`` classes give the client's bulk methods typed keyword parameters
(``**options: Unpack[BulkOptions]``, PEP 692), so a type checker flags a misspelt option
(``max_failure=3``) or a wrong type before the job runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Literal, TypedDict

from ._policy import PhonePolicy
from ._results import ItemResult, Progress
from ._suppress import SuppressionList


class BulkOptions(TypedDict, total=False):
    """Options every bulk job takes (README, "Bulk jobs"); every key is optional."""

    on_error: Literal["collect", "raise"]
    """``"collect"`` (default): every failure goes into the account; ``"raise"``: the first
    failure stops the job and is raised."""
    max_failures: int | None
    """Stop after this many non-successes (unread rows are not read)."""
    on_progress: Callable[[Progress], object] | None
    """Called with a :class:`Progress` snapshot every ``progress_interval`` seconds."""
    progress_interval: float
    keep_results: bool
    """Keep every :class:`ItemResult` in ``BulkResult.items`` (default False; failures are
    always kept)."""
    ordered: bool
    """Yield results in input order (``stream`` only; the account is ordered anyway)."""
    checkpoint: str | os.PathLike[str] | None
    """SQLite journal that makes the job resumable."""
    concurrency: int | None
    """Workers for this job, at most the client's ``max_concurrency``."""
    rate: float | None
    """Requests per second for this job, below the client's limit."""
    grace: float
    """Seconds in-flight requests get to finish on cancellation."""
    detect_duplicates: bool
    total: int | None
    """Input length for progress when the input has no ``len()``."""
    on_result: Callable[[ItemResult], object] | None
    """Called once with every :class:`ItemResult` as it is accounted (a results file)."""


class ImportOptions(BulkOptions, total=False):
    """An import's options beyond every job's: phone hygiene (README, "Phone numbers")."""

    phone_policy: PhonePolicy | None
    suppress: SuppressionList | str | os.PathLike[str] | Iterable[str | int | float] | None
    dedupe_phone: bool


class UpdateOptions(BulkOptions, total=False):
    """An update's options beyond every job's."""

    phone_policy: PhonePolicy | None
    """Normalise the numbers each update sets, as an import does (None: the client's)."""


class StreamOptions(ImportOptions, total=False):
    """What :meth:`DiallerClient.stream` takes: any job's options, plus an import's
    (``overwrite_duplicates``, ``campaign_id``, ``campaign_name``) and ``by_user_data`` for the
    key-based jobs (delete, lock, unlock, reset: the items are UserData values, not IDs)."""

    overwrite_duplicates: bool
    campaign_id: int | None
    campaign_name: str | None
    by_user_data: bool
