"""Per-operation rules: how an input becomes a request, and the write-safety policy.

Each operation turns a raw input item into a :class:`Prepared` request (or raises
:class:`ContactValidationError`, which makes the item INVALID without a request), names the
request that carries it out (``request``: method, path and body, built without a coroutine
because it runs once per row) and checks its answer (``record``).

The write-safety policy is four pure functions, used by bulk jobs and single calls alike
(:mod:`._item` carries them out):

* :func:`write_kind`: whether a resend is harmless (``IDEMPOTENT``), would create a second
  contact (``CREATE``: an import that does not overwrite by UserData), or could delete a
  second contact (``DELETE_BY_USER_DATA``: the server deletes "the first one found").
* :func:`after_failure`: a failed request of an unsafe write that may have landed is checked by
  lookup, never resent blindly; an idempotent one that may have landed is AMBIGUOUS (safe to
  send again); everything else is FAILED.
* :func:`classify`: what a lookup found, judged only in the write's own campaign (a contact
  with the same UserData elsewhere is someone else's).
* :func:`after_lookup`: what the finding proves: done, not landed (resend, once, and only
  after the first attempt had time to settle), or AMBIGUOUS.
"""

from __future__ import annotations

import enum
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import _fields as F
from ._converter import unstructure
from ._envelope import checked_action, first_raw_record
from ._exceptions import ConfigurationError, DiallerError
from ._models import Contact
from ._policy import PhonePolicy
from ._results import Operation, Outcome
from ._retry import may_have_landed
from ._transport import Reply
from ._validation import checked_contact, checked_update, plain_import_body, validate_key

if TYPE_CHECKING:
    from ._client import DiallerClient
    from ._phones import Normaliser
    from ._screen import PhoneScreen, SuppressInput


class WriteKind(enum.Enum):
    """What sending a write a second time could do."""

    #: Harmless: update, lock/unlock/reset, delete by ID, an import that overwrites by UserData.
    IDEMPOTENT = "idempotent"
    #: Creates another contact: an import without ``overwriteDuplicates`` or without UserData.
    CREATE = "create"
    #: Deletes another contact: the server deletes "the first one found" with that UserData.
    DELETE_BY_USER_DATA = "delete_by_user_data"


class Finding(enum.Enum):
    """What a lookup after an unconfirmed write found."""

    #: No contact with the UserData (for an import: none in the write's own campaign).
    ABSENT = "absent"
    #: A contact that holds every field sent (for a delete: any contact with the UserData).
    MATCHES = "matches"
    #: A contact in the write's campaign that differs in a field sent (someone changed it).
    DIFFERS = "differs"
    #: Nothing to look up by (no UserData, unknown campaign) or the lookup itself failed.
    UNCHECKABLE = "uncheckable"


class Step(enum.Enum):
    """What the item runner does next."""

    FAIL = "fail"  # FAILED with the error: nothing was done, or a resend cannot change it
    CHECK = "check"  # the write may have landed: look it up
    WAIT = "wait"  # the first attempt may still be running: wait for it to settle, look again
    RESEND = "resend"  # proven not landed after the first attempt settled: send once more
    SUCCEED = "succeed"  # proven done (SUCCEEDED, reconciled)
    AMBIGUOUS = "ambiguous"  # cannot be proven either way: report it, never send it again


def write_kind(
    operation: Operation, *, overwrite: bool = False, user_data: str | None = None
) -> WriteKind:
    """The :class:`WriteKind` of one request. ``user_data``: the UserData the request names (an
    import's field, or a keyed action's key when it is by UserData)."""
    if operation is Operation.IMPORT:
        return WriteKind.IDEMPOTENT if overwrite and user_data else WriteKind.CREATE
    if operation is Operation.DELETE and user_data is not None:
        return WriteKind.DELETE_BY_USER_DATA
    return WriteKind.IDEMPOTENT


def after_failure(kind: WriteKind, error: DiallerError) -> Step:
    """After the transport gave up on a request (its own safe retries included): an unsafe
    write that may have landed is checked; an idempotent one that may have landed is AMBIGUOUS
    (the transport already resent it as often as it may; FAILED would say the server holds
    nothing of it, and it may: sending it again is harmless); anything else is FAILED."""
    if not may_have_landed(error):
        return Step.FAIL
    return Step.AMBIGUOUS if kind is WriteKind.IDEMPOTENT else Step.CHECK


#: Why a delete by ID that found nothing, resumed after an interrupted run, is SKIPPED.
GONE_BEFORE: Final = (
    "not found: the interrupted run before this one may have deleted it (its last outcomes "
    "were not journaled)"
)


def after_not_found(*, journaled_unsettled: bool, journal_incomplete: bool) -> Outcome:
    """What a delete answered "not found" (404, after the transport's own retries) is, on a
    resumed job. ``journaled_unsettled``: an earlier run journaled the row PENDING or AMBIGUOUS
    (its attempt may have landed); ``journal_incomplete``: the run before this one ended
    without closing its journal, so the outcomes of its last second may be missing (a delete by
    ID is safe to repeat and is not journaled before it is sent).

    SUCCEEDED (reconciled) when our own earlier attempt may have done it, as for a retry within
    one run; SKIPPED (:data:`GONE_BEFORE`) when there is no entry but entries may be missing
    (likely ours, not provably); else FAILED, as answered."""
    if journaled_unsettled:
        return Outcome.SUCCEEDED
    if journal_incomplete:
        return Outcome.SKIPPED
    return Outcome.FAILED


def after_lookup(kind: WriteKind, finding: Finding, *, settled: bool, resent: bool) -> Step:
    """What a lookup proves about an unconfirmed unsafe write.

    ``settled``: the lookup ran at least one request timeout after the last attempt failed, so
    that attempt is taken to be finished (the rule in docs/reliability.md). ``resent``: the
    write was already sent a second time; it is never sent a third.
    """
    if finding is Finding.UNCHECKABLE:
        return Step.AMBIGUOUS
    if kind is WriteKind.DELETE_BY_USER_DATA:
        if finding is Finding.ABSENT:
            return Step.SUCCEED
        return Step.AMBIGUOUS if settled else Step.WAIT
    if finding is Finding.MATCHES:
        return Step.SUCCEED
    if not settled:
        return Step.WAIT
    if finding is Finding.DIFFERS or resent:
        return Step.AMBIGUOUS
    return Step.RESEND


def settle_delay(timeout: float) -> float:
    """How long an attempt that may still be running is given before the final lookup: one
    request timeout (an answer later than that is one the client would not have waited for)."""
    return timeout


def record_matches(contact: Contact, body: dict[str, Any]) -> bool:
    """Whether a found contact holds every field an unconfirmed import sent (the campaign is
    compared by ID in :func:`classify`)."""
    record = unstructure(contact)
    for name, sent in body.items():
        if name not in F.BY_API or name in _CAMPAIGN_FIELDS:
            continue
        if record.get(name) != sent:
            return False
    return True


_CAMPAIGN_FIELDS: Final = frozenset({"DiallerCampaignsID", "DiallerCampaignsName"})


def classify(found: list[Contact], body: dict[str, Any], campaign_id: int | None) -> Finding:
    """Judge the contacts a lookup by UserData returned. ``campaign_id``: the write's campaign
    (only contacts there count; None: every contact counts, as for a delete by UserData, which
    acts on the whole account)."""
    ours = [c for c in found if campaign_id is None or c.campaign_id == campaign_id]
    if not ours:
        return Finding.ABSENT
    return Finding.MATCHES if any(record_matches(c, body) for c in ours) else Finding.DIFFERS


class Prepared(NamedTuple):
    """A validated request for one item.

    ``key`` is reported in results; ``serial_key`` orders rows that touch the same contact;
    ``payload`` is what the checkpoint fingerprints; ``idempotent`` says a resend is harmless;
    ``user_data`` allows checking an unconfirmed write by lookup; ``kind`` is its
    :class:`WriteKind`. ``skip``: a reason not to send it at all (the item is SKIPPED with that
    reason, e.g. ``"suppressed"``); ``warnings``: what preparing it changed or dropped (they
    go to ``ItemResult.warnings``).

    A named tuple, not an attrs class: one is built per row, and a frozen attrs class sets
    each of its eight fields through ``object.__setattr__``.
    """

    key: str | int | None
    serial_key: object
    payload: Any
    idempotent: bool
    user_data: str | None = None
    kind: WriteKind = WriteKind.IDEMPOTENT
    skip: str | None = None
    warnings: tuple[str, ...] = ()


_tuple_new = tuple.__new__

#: One write as the transport sends it: method, path, body.
Request = tuple[str, str, Any]


def _prepared(
    key: str | int | None, payload: Any, kind: WriteKind, user_data: str | None
) -> Prepared:
    return Prepared(key, key, payload, kind is WriteKind.IDEMPOTENT, user_data, kind)


class Import:
    """Import one contact per item (``NewContact`` or dict)."""

    operation = Operation.IMPORT
    missing_ok_on_retry = False

    def __init__(
        self,
        *,
        overwrite_duplicates: bool,
        campaign_id: int | None,
        campaign_name: str | None,
        phone_policy: PhonePolicy | None = None,
        suppress: SuppressInput | None = None,
        dedupe_phone: bool = False,
        phones_screened: bool = False,
    ) -> None:
        if phone_policy is not None and not isinstance(phone_policy, PhonePolicy):
            raise TypeError(f"phone_policy must be a PhonePolicy, got {phone_policy!r}")
        self.overwrite = overwrite_duplicates
        self.phone_policy = phone_policy
        self.suppress = suppress
        self.dedupe_phone = dedupe_phone
        self.phones_screened = phones_screened  # as Update's
        self.phones: PhoneScreen | None = None
        self.campaign_name = campaign_name
        self.default_campaign: dict[str, Any] = {}
        self._campaigns: dict[str, int] | None = None
        self.zone: tzinfo | None = None
        self._method = "POST"
        self._path: str | None = None
        if campaign_id is not None:
            self.default_campaign["DiallerCampaignsID"] = campaign_id
        elif campaign_name:
            self.default_campaign["DiallerCampaignsName"] = campaign_name

    async def resolve(self, client: DiallerClient) -> None:
        """Turn the job's ``campaign_name`` into its ID once, before row one, so every row is
        sent, and every unconfirmed one checked, by campaign ID; take the client's time zone
        and phone policy; load the suppression list."""
        self.zone = client.server_timezone
        await self._resolve_phones(client.phone_policy)
        name = self.default_campaign.get("DiallerCampaignsName")
        if name is None:
            return
        campaign_id = await self._campaign_id(client, name)
        if campaign_id is None:
            raise ConfigurationError(f"the account has no campaign named {name!r}")
        self.default_campaign = {"DiallerCampaignsID": campaign_id}

    async def _resolve_phones(self, client_policy: PhonePolicy | None) -> None:
        policy = self.phone_policy or client_policy
        if self.phones_screened:
            return
        if policy is None:
            if self.suppress is not None or self.dedupe_phone:
                raise ConfigurationError(
                    "suppress= and dedupe_phone= compare numbers in E.164 and need a "
                    "phone_policy (on the client or the job) to read them"
                )
            return
        # Imported here: it brings phonenumbers (~0.1 s), which a job without a policy never needs.
        from ._screen import PhoneScreen, load_suppression

        suppress = None
        if self.suppress is not None:
            # Millions of numbers take seconds to normalise: off the event loop, in a thread
            # that a cancelled job stops (and waits for).
            suppress = await load_suppression(self.suppress, policy)
        self.phones = PhoneScreen(
            policy,
            suppress=suppress,
            dedupe=self.dedupe_phone,
            clear_suppressed=self.overwrite,
        )

    async def campaign_of(self, client: DiallerClient, body: dict[str, Any]) -> int | None:
        """The ID of the campaign a request body names (None: no such campaign)."""
        campaign_id = body.get("DiallerCampaignsID")
        if isinstance(campaign_id, int):
            return campaign_id
        name = body.get("DiallerCampaignsName")
        return await self._campaign_id(client, name) if isinstance(name, str) else None

    async def _campaign_id(self, client: DiallerClient, name: str) -> int | None:
        if self._campaigns is None:
            campaigns = await client.list_campaigns()
            self._campaigns = {}
            for c in sorted(campaigns, key=lambda c: c.id or 0):  # lowest ID wins, as on the server
                if c.name is not None and c.id is not None:
                    self._campaigns.setdefault(c.name, c.id)
        return self._campaigns.get(name)

    def prepare(self, item: Any) -> Prepared:
        campaign_given = bool(self.default_campaign)
        skip: str | None = None
        warnings: tuple[str, ...] = ()
        body: dict[str, Any] | None
        if self.phones is not None:
            # A phone policy rewrites the number fields: always the full, screened path.
            screened = self.phones.check(
                item, campaign_given=campaign_given, server_timezone=self.zone
            )
            body, user_data = screened.body, screened.user_data
            skip, warnings = screened.skip, screened.warnings
        # Most rows are plain text dicts that need no conversion: take the short path for
        # them (same body); the full one converts everything else and names every problem.
        elif (body := plain_import_body(item, campaign_given=campaign_given)) is None:
            contact, body = checked_contact(
                item, campaign_given=campaign_given, server_timezone=self.zone
            )
            user_data = contact.user_data
        else:
            user_data = body.get("UserData")
        if (
            campaign_given
            and "DiallerCampaignsID" not in body
            and "DiallerCampaignsName" not in body
        ):
            body.update(self.default_campaign)
        if not (user_data and user_data.strip()):
            user_data = None
        # write_kind(Operation.IMPORT, ...) and _prepared(), inline: this runs once per row
        # (and the tuple built as a tuple: Prepared(...) is a Python-level constructor).
        idempotent = bool(self.overwrite and user_data)
        kind = WriteKind.IDEMPOTENT if idempotent else WriteKind.CREATE
        prepared = _tuple_new(
            Prepared, (user_data, user_data, body, idempotent, user_data, kind, None, ())
        )
        if skip is not None or warnings:
            # A skipped row is never sent, so it need not wait in its UserData's chain.
            serial_key = None if skip is not None else prepared.serial_key
            prepared = prepared._replace(serial_key=serial_key, skip=skip, warnings=warnings)
        return prepared

    def request(self, client: DiallerClient, prepared: Prepared) -> Request:
        path = self._path
        if path is None:
            # Every import of a job has the same path: built once, not per row.
            route = client.routes.import_contact
            self._method = route.method
            path = self._path = client.transport.url_path(
                route, query={"overwriteDuplicates": self.overwrite}
            )
        return self._method, path, prepared.payload

    def record(self, reply: Reply, prepared: Prepared) -> dict[str, Any] | None:
        return first_raw_record(reply, user_data=prepared.user_data)


class Update:
    """Apply one partial update per item (``ContactUpdate`` or dict with ID or UserData).

    ``phone_policy`` (else the client's) normalises the numbers an update sets, as an import's;
    ``phones_screened``: the items hold numbers a policy already wrote (a sync's changed
    fields), which must not be read a second time (``e164-no-plus`` text is not E.164 input).
    """

    operation = Operation.UPDATE
    missing_ok_on_retry = False

    def __init__(
        self, *, phone_policy: PhonePolicy | None = None, phones_screened: bool = False
    ) -> None:
        if phone_policy is not None and not isinstance(phone_policy, PhonePolicy):
            raise TypeError(f"phone_policy must be a PhonePolicy, got {phone_policy!r}")
        self.zone: tzinfo | None = None
        self.phone_policy = phone_policy
        self.phones_screened = phones_screened
        self.normaliser: Normaliser | None = None

    async def resolve(self, client: DiallerClient) -> None:
        """Take the client's time zone and phone policy, before row one."""
        self.zone = client.server_timezone
        policy = self.phone_policy or client.phone_policy
        if policy is not None and not self.phones_screened:
            from ._phones import Normaliser  # brings phonenumbers: only with a policy

            self.normaliser = Normaliser(policy)

    def prepare(self, item: Any) -> Prepared:
        if self.normaliser is not None:
            from ._screen import screen_update

            key, body, warnings = screen_update(item, self.normaliser, server_timezone=self.zone)
            return Prepared(
                key=key, serial_key=key, payload=body, idempotent=True, warnings=warnings
            )
        update, body = checked_update(item, server_timezone=self.zone)
        key = update.key
        return Prepared(key=key, serial_key=key, payload=body, idempotent=True)

    def request(self, client: DiallerClient, prepared: Prepared) -> Request:
        route = client.routes.update_contact
        return route.method, client.transport.url_path(route), prepared.payload

    def record(self, reply: Reply, prepared: Prepared) -> dict[str, Any] | None:
        body = prepared.payload
        contact_id = body.get("ID")
        user_data = body.get("UserData")
        return first_raw_record(
            reply,
            id=contact_id if isinstance(contact_id, int) else None,
            user_data=user_data if isinstance(user_data, str) else None,
        )


class KeyedAction:
    """Delete, lock, unlock or reset one contact per item, by ID or by UserData."""

    def __init__(self, operation: Operation, *, by_user_data: bool) -> None:
        self.operation = operation
        self.by_user_data = by_user_data
        # A delete retried after an attempt that may have landed finds the contact gone.
        self.missing_ok_on_retry = operation is Operation.DELETE

    async def resolve(self, client: DiallerClient) -> None:
        """Nothing to resolve before row one."""

    def prepare(self, item: Any) -> Prepared:
        key = validate_key(item, by_user_data=self.by_user_data)
        user_data = key if isinstance(key, str) else None
        return _prepared(key, key, write_kind(self.operation, user_data=user_data), user_data)

    def request(self, client: DiallerClient, prepared: Prepared) -> Request:
        key = prepared.key
        action = self.operation.value
        if isinstance(key, str):
            route = getattr(client.routes, f"{action}_contact_by_user_data")
            return route.method, client.transport.url_path(route, user_data=key), None
        route = getattr(client.routes, f"{action}_contact")
        return route.method, client.transport.url_path(route, id=key), None

    def record(self, reply: Reply, prepared: Prepared) -> dict[str, Any] | None:
        checked_action(reply)
        return None


OperationRules = Import | Update | KeyedAction


def rules_for(operation: Operation, options: dict[str, Any]) -> OperationRules:
    """The rules object of ``operation``; consumes the operation's own options."""
    if operation is Operation.IMPORT:
        return Import(
            overwrite_duplicates=options.pop("overwrite_duplicates", True),
            campaign_id=options.pop("campaign_id", None),
            campaign_name=options.pop("campaign_name", None),
            phone_policy=options.pop("phone_policy", None),
            suppress=options.pop("suppress", None),
            dedupe_phone=options.pop("dedupe_phone", False),
            phones_screened=options.pop("_phones_screened", False),
        )
    if operation is Operation.UPDATE:
        return Update(
            phone_policy=options.pop("phone_policy", None),
            phones_screened=options.pop("_phones_screened", False),
        )
    if operation is Operation.SYNC:
        raise ValueError("a sync is not a per-item job: use DiallerClient.sync_contacts")
    return KeyedAction(operation, by_user_data=options.pop("by_user_data", False))
