"""A job's phone rules applied to each row: normalise, suppress (do-not-call), de-duplicate.

:class:`PhoneScreen` holds what one job needs across rows (the policy, the suppression list,
the numbers earlier rows will dial) and turns one contact into its request body, or into a
reason to skip it. :mod:`._operations` calls it from ``Import.prepare``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._converter import in_zone, to_new_contact, to_update, unstructure
from ._digests import DigestSet, key_digest, stable_digest
from ._exceptions import ConfigurationError, ContactValidationError
from ._models import ContactUpdate, NewContact
from ._phones import Normaliser, screen_numbers
from ._policy import PhonePolicy
from ._suppress import SuppressionList
from ._validation import new_contact_problems, plain_import_body, update_problems

if TYPE_CHECKING:
    from ._checkpoint import Checkpoint

SUPPRESSED: Final = "suppressed"
DUPLICATE_PHONE: Final = "duplicate phone"

#: What ``suppress=`` accepts: a built list, a file of numbers, or the numbers themselves.
SuppressInput = SuppressionList | str | os.PathLike[str] | Iterable[str | int | float]


def suppression_list(
    suppress: SuppressInput, policy: PhonePolicy, stop: threading.Event | None = None
) -> SuppressionList:
    """``suppress=`` as a :class:`SuppressionList` for ``policy`` (slow for millions of
    numbers: :func:`load_suppression` runs it off the event loop). ``stop``: once set, the
    build gives up (:class:`BuildStopped`)."""
    if isinstance(suppress, SuppressionList):
        if suppress.region != policy.region:
            raise ConfigurationError(
                f"the suppression list was normalised for region {suppress.region!r}, "
                f"the job's phone policy is for {policy.region!r}"
            )
        return suppress
    if isinstance(suppress, bytes | bytearray):
        raise ConfigurationError("suppress= takes a path, numbers or a SuppressionList, not bytes")
    if isinstance(suppress, str | os.PathLike):
        try:
            return SuppressionList.from_file(suppress, policy, _stop=stop)
        except OSError as exc:
            raise ConfigurationError(f"cannot read the suppression list: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"cannot read the suppression list {os.fspath(suppress)!r}: not UTF-8 text "
                f"(byte {exc.object[exc.start]:#04x} at offset {exc.start} of a read); save it "
                "as UTF-8 or pass the numbers as an iterable"
            ) from exc
    if not isinstance(suppress, Iterable):  # e.g. an async generator: it would fail mid-build
        raise ConfigurationError(
            "suppress= takes a path, an iterable of numbers or a SuppressionList, "
            f"not {type(suppress).__name__}"
        )
    return SuppressionList(suppress, policy, _stop=stop)


async def load_suppression(suppress: SuppressInput, policy: PhonePolicy) -> SuppressionList:
    """:func:`suppression_list` in a thread of its own, which never outlives the caller.

    Normalising millions of numbers takes seconds, so it runs off the event loop. If the caller
    is cancelled meanwhile (the job was), the build is told to stop, and the cancellation is
    raised only once the thread has returned (it looks every 1,024 numbers): a further cancel
    while it winds down is absorbed, not a reason to leave the thread running.
    """
    if isinstance(suppress, SuppressionList):
        return suppression_list(suppress, policy)  # nothing to build
    loop = asyncio.get_running_loop()
    done: asyncio.Future[SuppressionList] = loop.create_future()
    stop = threading.Event()

    def settle(result: SuppressionList | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def build() -> None:
        result: SuppressionList | None = None
        error: BaseException | None = None
        try:
            result = suppression_list(suppress, policy, stop)
        except BaseException as exc:  # handed to the caller, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=build, name="dialler-async-suppression", daemon=True)
    thread.start()
    try:
        await asyncio.wait({done})
    except asyncio.CancelledError:
        stop.set()
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({done})
        if not done.cancelled():
            done.exception()  # retrieved: a BuildStopped is the expected answer to stop
        thread.join()
        raise
    thread.join()  # it has set the future: returns at once
    return done.result()


@attrs.define(slots=True)
class PhoneCounts:
    """Numbers a screen has seen, by what became of them."""

    #: Parsed, checked and sent in the policy's format.
    normalised: int = 0
    #: Failed the check; left out of a row that had another good number (a warning).
    dropped: int = 0
    #: Failed the check in a row that had no good number (the row is INVALID).
    invalid: int = 0
    #: On the suppression list: left out of (or cleared in) the row.
    suppressed: int = 0
    #: Rows SKIPPED because every number was suppressed / already in an earlier row.
    rows_suppressed: int = 0
    rows_duplicate: int = 0


@attrs.frozen(slots=True)
class Verdict:
    """One row after the screen: its request body and UserData, what was changed (warnings),
    and ``skip``, a reason not to send it at all (None: send it)."""

    body: dict[str, Any]
    user_data: str | None
    warnings: tuple[str, ...] = ()
    skip: str | None = None


class PhoneScreen:
    """One job's phone rules. ``clear_suppressed``: a suppressed number is sent as null (an
    overwriting import must not leave it on an existing contact) rather than left out.

    Rows must be screened in input order for ``dedupe``'s "an earlier row" to mean the input's
    order (the engine prepares rows in the order it reads them). The numbers earlier rows dial
    are kept as 64-bit digests in a :class:`DigestSet` (~12 bytes a number, exact: an E.164
    key fits in 50 bits and its digest is a bijection of it).

    With a checkpoint (:meth:`resume`), "earlier" spans the runs: the numbers of every row an
    earlier run sent that is, or may be, on the account count as seen before row one of this
    run, whatever order this run reads its rows in; that row itself, met again, is let
    through once (the engine then skips it as "already done", or resumes it).
    """

    def __init__(
        self,
        policy: PhonePolicy,
        *,
        suppress: SuppressionList | None = None,
        dedupe: bool = False,
        clear_suppressed: bool = True,
    ) -> None:
        self.policy = policy
        self.suppress = suppress
        self.clear_suppressed = clear_suppressed
        self.seen: DigestSet | None = DigestSet() if dedupe else None
        self.counts = PhoneCounts()
        self.normaliser = Normaliser(policy)
        self.journal: Checkpoint | None = None
        self.campaign: Mapping[str, Any] = {}
        self.earlier: DigestSet | None = None  # rows an earlier run sent (their digests)
        self.met: DigestSet | None = None  # those of them this run has let through

    def resume(self, checkpoint: Checkpoint, campaign: Mapping[str, Any]) -> None:
        """Take the numbers earlier runs of this checkpoint's job sent as already seen, and
        journal the numbers of each row this run sends (only with ``dedupe``). ``campaign``:
        the job's default campaign (the engine's checkpoint identity includes it).
        Called once, before row one."""
        seen = self.seen
        if seen is None:
            return
        self.journal = checkpoint
        self.campaign = campaign
        earlier = DigestSet()
        for digest, number in checkpoint.earlier_numbers():
            seen.add(key_digest(number))
            earlier.add(digest)
        if len(earlier):
            self.earlier, self.met = earlier, DigestSet()

    def identity(self, body: Mapping[str, Any], user_data: str | None) -> int:
        """The checkpoint digest the engine gives this row if it is sent: its key (UserData)
        and request body with the job's default campaign (as ``Import.prepare`` builds them;
        tests/test_phone_resume.py checks the two agree)."""
        if user_data is not None and not user_data.strip():
            user_data = None
        payload = body
        if self.campaign and not ("DiallerCampaignsID" in body or "DiallerCampaignsName" in body):
            payload = {**body, **self.campaign}
        return stable_digest(user_data, payload)

    def check(
        self,
        data: NewContact | Mapping[str, Any],
        *,
        campaign_given: bool = False,
        server_timezone: tzinfo | None = None,
    ) -> Verdict:
        """Convert, normalise and validate one row; raises :class:`ContactValidationError`
        naming every problem (each failing number with its reason among them)."""
        # A plain text row needs no conversion (the import's short path); its body is what
        # converting it would give, so only the number fields are left to judge.
        plain = plain_import_body(data, campaign_given=campaign_given)
        if plain is not None:
            body = plain
            user_data = body.get("UserData")
            contact = None
        else:
            contact = in_zone(to_new_contact(data), server_timezone)
            body = unstructure(contact)
            user_data = contact.user_data
        screened = screen_numbers(body, self.policy, self.normaliser)
        counts = self.counts
        if screened.problems:
            counts.invalid += len(screened.problems)
        body.update(screened.sent)
        warnings = []
        for field, why in screened.dropped.items():
            del body[field]
            warnings.append(f"{field}: dropped, {why}")
        problems = list(screened.problems)
        if contact is not None:
            problems += new_contact_problems(contact, campaign_given=campaign_given, body=body)
        if problems:
            raise ContactValidationError(problems, key=user_data)
        counts.normalised += len(screened.sent)
        counts.dropped += len(screened.dropped)
        keys = screened.keys
        if self.suppress is not None:
            for field, key in list(keys.items()):
                if key in self.suppress:
                    del keys[field]
                    counts.suppressed += 1
                    if self.clear_suppressed:
                        body[field] = None
                    else:
                        del body[field]
                    warnings.append(f"{field}: suppressed (do not call)")
            if not keys:
                counts.rows_suppressed += 1
                return Verdict(body, user_data, tuple(warnings), SUPPRESSED)
        seen = self.seen
        if seen is not None:
            identity = None
            if self.journal is not None:
                # First: a row that cannot be fingerprinted fails here, before it counts as seen.
                identity = self.identity(body, user_data)
            digests = [key_digest(key) for key in keys.values()]
            if all(digest in seen for digest in digests) and not self._sent_before(identity):
                counts.rows_duplicate += 1
                return Verdict(body, user_data, tuple(warnings), DUPLICATE_PHONE)
            for digest in digests:
                seen.add(digest)
            if self.journal is not None and identity is not None and not self._noted(identity):
                self.journal.note_numbers(identity, list(keys.values()))
        return Verdict(body, user_data, tuple(warnings))

    def _noted(self, identity: int) -> bool:
        """Whether an earlier run journaled this row's numbers already."""
        return self.earlier is not None and identity in self.earlier

    def _sent_before(self, identity: int | None) -> bool:
        """Whether this row is one an earlier run sent, met for the first time in this run
        (its numbers are seen because of itself: not a duplicate)."""
        if identity is None or self.earlier is None or self.met is None:
            return False
        return identity in self.earlier and self.met.add(identity)


def screen_update(
    data: ContactUpdate | Mapping[str, Any],
    normaliser: Normaliser,
    *,
    server_timezone: tzinfo | None = None,
    counts: PhoneCounts | None = None,
) -> tuple[str | int | None, dict[str, Any], tuple[str, ...]]:
    """An update's key, request body and warnings under a phone policy: the numbers it sets
    are normalised as an import's are (a field it clears, ``None``, is left alone). A number
    that fails is dropped from the update (the contact keeps its number; a warning) when
    another dial field of the update passed; otherwise the update is INVALID
    (:class:`ContactValidationError`), as an import row would be. ``counts``: a tally to add
    this update's numbers to (a dry run's)."""
    update = in_zone(to_update(data), server_timezone)
    body = unstructure(update)
    screened = screen_numbers(body, normaliser.policy, normaliser)
    body.update(screened.sent)
    warnings = []
    for field, why in screened.dropped.items():
        del body[field]
        warnings.append(f"{field}: dropped, {why}")
    # Lengths are judged on what is sent: "+49 (0)30 1234567 ext." fits once it is E.164.
    problems = [*screened.problems, *update_problems(update, body=body)]
    if counts is not None:  # a dry run's tally
        counts.invalid += len(screened.problems)
        if not problems:
            counts.normalised += len(screened.sent)
            counts.dropped += len(screened.dropped)
    if problems:
        raise ContactValidationError(problems, key=update.key)
    return update.key, body, tuple(warnings)
