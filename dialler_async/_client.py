"""``DiallerClient``: one typed coroutine per Dialler Contacts function, plus the bulk jobs."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Mapping,
)
from datetime import tzinfo
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack

from . import _bulk
from ._converter import structure
from ._envelope import first_record, structure_records
from ._exceptions import (
    ClientStateError,
    ConfigurationError,
    DiallerError,
    NotFoundError,
    ResponseFormatError,
)
from ._item import ItemRunner, Verdict
from ._limits import Clock, Governor, Limits, Sleep
from ._models import Campaign, Contact, ContactUpdate, HistoryEntry, NewContact
from ._operations import Import, KeyedAction, OperationRules, Update
from ._options import BulkOptions, ImportOptions, StreamOptions, UpdateOptions
from ._policy import PhonePolicy
from ._results import BulkResult, Operation, Outcome
from ._retry import RetryPolicy
from ._routes import Route, Routes
from ._sync_types import MissingPolicy, SyncPlan, SyncResult
from ._transport import (
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_LIST_ANSWER_BYTES,
    Reply,
    Transport,
)

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("dialler_async")
T = TypeVar("T")

ContactInput = NewContact | Mapping[str, Any]
UpdateInput = ContactUpdate | Mapping[str, Any]
Keys = Iterable[Any] | AsyncIterable[Any]


def _clean_token(token: str) -> str:
    """The token without surrounding whitespace (``$(cat token-file)`` from Windows ends in
    CR LF); a token that still holds a control character cannot go into a header."""
    if not isinstance(token, str):
        raise ConfigurationError("token must be a string")
    token = token.strip()
    if not token:
        raise ConfigurationError("token is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        raise ConfigurationError(
            "token contains a control character (a line break inside it?); check its source"
        )
    return token


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _Single:
    """The per-item state :class:`ItemRunner` keeps, for a single call."""

    __slots__ = ("index", "sending", "sent_unsafe")

    def __init__(self) -> None:
        self.index = 0
        self.sent_unsafe = False
        self.sending = False


class DiallerClient:
    """An asyncio client for one client account of a jtel ACD server.

    ``base_url`` is the server's ``/rest/v1.0`` prefix; the client appends ``/{client_id}``.
    Open it with ``async with``; it holds one connection pool, one governor (``limits``) and one
    retry budget for every call made through it. ``verify=False`` turns TLS verification off
    (logged as a warning); pass an ``ssl.SSLContext`` for a private CA instead.
    ``server_timezone``: the server's zone; an aware date-time is converted to it before it is
    sent as wall-clock time (default None: the machine's local zone).
    ``phone_policy``: a :class:`PhonePolicy` every import and update (single or bulk, unless
    the job gives its own) applies to its phone numbers (default None: numbers are sent as
    given).
    ``timeout`` also sets how long an unconfirmed write that is not safe to repeat is given to
    settle before the final lookup (docs/reliability.md).
    ``clock``/``sleep`` exist so tests can drive time; leave them alone otherwise.
    """

    def __init__(
        self,
        base_url: str,
        client_id: int,
        token: str,
        *,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        routes: Routes | None = None,
        verify: bool | ssl.SSLContext = True,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_list_answer_bytes: int = DEFAULT_MAX_LIST_ANSWER_BYTES,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        server_timezone: tzinfo | None = None,
        phone_policy: PhonePolicy | None = None,
    ) -> None:
        token = _clean_token(token)
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds: {timeout!r}")
        for name, size in (
            ("max_answer_bytes", max_answer_bytes),
            ("max_list_answer_bytes", max_list_answer_bytes),
        ):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigurationError(f"{name} must be a positive number of bytes: {size!r}")
        self.max_answer_bytes = max_answer_bytes
        self.max_list_answer_bytes = max_list_answer_bytes
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.client_id = int(client_id)
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.routes = routes or Routes()
        self.server_timezone = server_timezone
        if phone_policy is not None and not isinstance(phone_policy, PhonePolicy):
            raise ConfigurationError(f"phone_policy must be a PhonePolicy: {phone_policy!r}")
        self.phone_policy = phone_policy
        self._token = token
        self._verify = verify
        self._clock = clock
        self._sleep = sleep
        self._state = _State.UNOPENED
        self._transport: Transport | None = None
        self._jobs: set[Engine] = set()  # bulk jobs running on this client
        if verify is False:
            log.warning("TLS certificate verification is OFF for %s", self.base_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """A client from ``DIALLER_BASE_URL``, ``DIALLER_CLIENT_ID`` and ``DIALLER_TOKEN`` (or
        ``DIALLER_TOKEN_FILE``, a file holding the token). ``kwargs`` go to the constructor."""
        env = os.environ if env is None else env
        missing = [k for k in ("DIALLER_BASE_URL", "DIALLER_CLIENT_ID") if not env.get(k)]
        token = (env.get("DIALLER_TOKEN") or "").strip()
        if not token and env.get("DIALLER_TOKEN_FILE"):
            try:
                token = Path(env["DIALLER_TOKEN_FILE"]).read_text(encoding="utf-8-sig")
            except OSError as exc:
                raise ConfigurationError(f"cannot read DIALLER_TOKEN_FILE: {exc}") from exc
        if not token or not token.strip():
            missing.append("DIALLER_TOKEN or DIALLER_TOKEN_FILE")
        if missing:
            raise ConfigurationError("set " + ", ".join(missing))
        try:
            client_id = int(env["DIALLER_CLIENT_ID"])
        except ValueError as exc:
            raise ConfigurationError("DIALLER_CLIENT_ID must be an integer") from exc
        return cls(env["DIALLER_BASE_URL"], client_id, token or "", **kwargs)

    def __repr__(self) -> str:
        return (
            f"DiallerClient(base_url={self.base_url!r}, client_id={self.client_id}, "
            f"state={self._state.value})"
        )

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise ClientStateError(
                f"a DiallerClient can be opened once; this one is "
                f"{self._state.value}: create a new one"
            )
        self._transport = Transport(
            prefix=f"{self.base_url}/{self.client_id}",
            token=self._token,
            timeout=self.timeout,
            retry=self.retry,
            governor=Governor(self.limits, clock=self._clock, sleep=self._sleep),
            verify=self._verify,
            sleep=self._sleep,
            clock=self._clock,
            max_answer_bytes=self.max_answer_bytes,
            max_list_answer_bytes=self.max_list_answer_bytes,
        )
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End every bulk job still running on this client (each stops as if cancelled: its
        in-flight requests get the job's ``grace``, its account stays exact), then close the
        connection pool. The client cannot be used afterwards."""
        interrupted = False
        for job in list(self._jobs):
            job.closing_client()
            interrupted |= await job.shutdown()
        if self._state is _State.OPEN and self._transport is not None:
            self._state = _State.CLOSED
            await self._transport.close()
        self._state = _State.CLOSED
        if interrupted:
            raise asyncio.CancelledError

    @property
    def transport(self) -> Transport:
        """The open transport (counters: ``requests``, ``retries``; ``governor``)."""
        if self._state is not _State.OPEN or self._transport is None:
            hint = (
                "use `async with client:`"
                if self._state is _State.UNOPENED
                else "it was closed; create a new DiallerClient"
            )
            raise ClientStateError(f"the client is {self._state.value}: {hint}")
        return self._transport

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(
        self,
        route: Route,
        *,
        id: int | None = None,
        user_data: str | None = None,
        query: Mapping[str, object] | None = None,
        body: Any = None,
        idempotent: bool = True,
        missing_ok_on_retry: bool = False,
        list_answer: bool = False,
    ) -> Reply:
        transport = self.transport
        path = transport.url_path(route, id=id, user_data=user_data, query=query)
        return await transport.call(
            route.method,
            path,
            body,
            idempotent=idempotent,
            missing_ok_on_retry=missing_ok_on_retry,
            max_bytes=transport.max_list_answer_bytes if list_answer else None,
        )

    def _keyed(
        self, by_id: Route, by_user_data: Route, id: int | None, user_data: str | None
    ) -> tuple[Route, dict[str, Any]]:
        if (id is None) == (user_data is None):
            raise TypeError("give exactly one of id or user_data")
        if id is not None:
            return by_id, {"id": id}
        return by_user_data, {"user_data": user_data}

    # -- single calls -----------------------------------------------------------------------

    async def list_contacts(self, campaign_id: int | None = None) -> list[Contact]:
        """Every contact of the account, or of one campaign. Can be a lot of data."""
        route = self.routes.list_contacts
        reply = await self._call(route, query={"diallerCampaignsID": campaign_id}, list_answer=True)
        return structure_records(reply, Contact)

    async def iter_contacts(self, campaign_id: int | None = None) -> AsyncGenerator[Contact, None]:
        """Every contact of the account, or of one campaign, one at a time as the answer arrives.

        The same request as :meth:`list_contacts` (one list read, retried like any read until
        its answer starts), but the answer is parsed as a stream (ijson), so memory stays flat
        however large the campaign is. ``max_list_answer_bytes`` still bounds the answer. A
        failure part-way through (connection lost, broken JSON) is raised after the contacts
        before it were yielded; nothing is retried then, as they were already handed over.
        To stop early, close it (``async with contextlib.aclosing(client.iter_contacts(...))``
        or ``await it.aclose()``): the connection is dropped, not drained, at once (a plain
        ``break`` leaves that to the garbage collector's finalizer, a few loop turns later).
        """
        # aclosing: stopping this iterator closes the whole chain at once, down to the socket.
        async with contextlib.aclosing(self._iter_records(campaign_id)) as records:
            async for record in records:
                try:
                    contact = structure(record, Contact)
                except (ValueError, TypeError) as exc:
                    raise ResponseFormatError(
                        f"unexpected record ({exc})",
                        method=self.routes.list_contacts.method,
                        path=self.routes.list_contacts.path,
                        body=repr(record)[:512],
                    ) from exc
                yield contact

    async def _iter_records(self, campaign_id: int | None) -> AsyncGenerator[dict[str, Any], None]:
        """The raw records (API spelling) of the list route, streamed (:meth:`iter_contacts`)."""
        transport = self.transport
        route = self.routes.list_contacts
        path = transport.url_path(route, query={"diallerCampaignsID": campaign_id})
        body = await transport.open_stream(route.method, path)
        from ._listing import records_of  # ijson is loaded by the first streamed read only

        records = records_of(body, small_limit=transport.max_answer_bytes)
        async with body, contextlib.aclosing(records):
            async for record in records:
                yield record

    async def get_contact(self, id: int) -> Contact:
        """One contact by ID; :class:`NotFoundError` if there is none."""
        route = self.routes.get_contact
        return first_record(await self._call(route, id=id), Contact)

    async def find_contacts(self, user_data: str) -> list[Contact]:
        """Every contact with this UserData (empty when none; the server's 404 is absorbed,
        unless the route itself is missing)."""
        route = self.routes.find_contacts
        try:
            reply = await self._call(route, user_data=user_data, list_answer=True)
        except NotFoundError as exc:
            if exc.route_missing:
                raise
            return []
        return structure_records(reply, Contact)

    async def get_contacts_batch(
        self, ids: Iterable[int] = (), user_data: Iterable[str] = (), language_id: int | None = None
    ) -> list[Contact]:
        """Contacts by IDs and/or UserData values, with result code and history filled in."""
        body: dict[str, Any] = {}
        if id_list := list(ids):
            body["IDList"] = id_list
        if user_data_list := list(user_data):
            body["UserDataList"] = user_data_list
        if not body:
            return []
        route = self.routes.get_contacts_batch
        reply = await self._call(
            route, query={"languagesID": language_id}, body=body, list_answer=True
        )
        return structure_records(reply, Contact)

    async def import_contact(
        self, contact: ContactInput, *, overwrite_duplicates: bool = False
    ) -> Contact:
        """Import one contact; returns the server's record (the overwritten one for a duplicate).

        Validated before sending (:class:`ContactValidationError`). Retried after a lost answer
        only when ``overwrite_duplicates`` is set and the contact has a UserData; otherwise an
        unconfirmed import is checked by UserData lookup in its campaign, as in a bulk job.
        """
        rules = Import(
            overwrite_duplicates=overwrite_duplicates, campaign_id=None, campaign_name=None
        )
        verdict = await self._single(rules, contact)
        if verdict.contact is not None:
            return verdict.contact
        return structure(verdict.record, Contact)

    async def update_contact(self, update: UpdateInput) -> Contact:
        """Change only the fields given (``None`` clears); found by ``id`` or ``user_data``.
        The client's ``phone_policy`` normalises the numbers it sets, as an import's."""
        verdict = await self._single(Update(), update)
        return structure(verdict.record, Contact)

    async def _single(self, rules: OperationRules, item: Any) -> Verdict:
        """One write under the same safety policy as a bulk job's item (see :mod:`._item`):
        the verdict if SUCCEEDED, else its error is raised (AMBIGUOUS: with a note saying so)."""
        await rules.resolve(self)
        prepared = rules.prepare(item)
        verdict = await ItemRunner(self, rules, None).run(
            _Single(), prepared, resumed=None, before_unsafe_send=None
        )
        if verdict.outcome is Outcome.SUCCEEDED:
            return verdict
        error = verdict.error or DiallerError("the write could not be confirmed")
        if verdict.outcome is Outcome.AMBIGUOUS:
            error.add_note("AMBIGUOUS: the write may have landed; it was not sent again")
        raise error

    async def _keyed_single(self, action: str, id: int | None, user_data: str | None) -> None:
        if (id is None) == (user_data is None):
            raise TypeError("give exactly one of id or user_data")
        rules = KeyedAction(Operation(action), by_user_data=user_data is not None)
        await self._single(rules, id if id is not None else user_data)

    async def delete_contact(self, id: int | None = None, *, user_data: str | None = None) -> None:
        """Delete a contact and all its data, by ID or by UserData (the lowest-ID match).

        By UserData it is never sent twice: an unconfirmed one is checked by lookup (no contact
        left with that UserData proves it); if unproven, the error is raised."""
        await self._keyed_single("delete", id, user_data)

    async def lock_contact(self, id: int | None = None, *, user_data: str | None = None) -> None:
        """Lock a contact so the dialler skips it (idempotent)."""
        await self._keyed_single("lock", id, user_data)

    async def unlock_contact(self, id: int | None = None, *, user_data: str | None = None) -> None:
        """Unlock a contact (idempotent)."""
        await self._keyed_single("unlock", id, user_data)

    async def reset_contact(self, id: int | None = None, *, user_data: str | None = None) -> None:
        """Reset a contact's dialling state (tries, next try, invalid flags, result code)."""
        await self._keyed_single("reset", id, user_data)

    async def contact_history(
        self, id: int | None = None, *, user_data: str | None = None
    ) -> list[HistoryEntry]:
        """Every call attempt of a contact (by UserData: of every matching contact)."""
        route, key = self._keyed(
            self.routes.contact_history, self.routes.contact_history_by_user_data, id, user_data
        )
        return structure_records(await self._call(route, **key, list_answer=True), HistoryEntry)

    async def list_campaigns(self) -> list[Campaign]:
        """Every dialler campaign of the account."""
        route = self.routes.list_campaigns
        return structure_records(await self._call(route, list_answer=True), Campaign)

    async def get_campaign(self, id: int) -> Campaign:
        """One campaign by ID; :class:`NotFoundError` if there is none."""
        route = self.routes.get_campaign
        return first_record(await self._call(route, id=id), Campaign)

    # -- bulk -------------------------------------------------------------------------------

    def stream(
        self,
        operation: Operation | str,
        items: Iterable[Any] | AsyncIterable[Any],
        **options: Unpack[StreamOptions],
    ) -> _bulk.BulkStream:
        """Run ``operation`` over ``items`` and yield one :class:`ItemResult` per input as it
        finishes. The options are those of :func:`import_contacts` and friends."""
        return _bulk.stream(self, Operation(operation), items, **options)

    async def import_contacts(
        self,
        contacts: Iterable[ContactInput] | AsyncIterable[ContactInput],
        *,
        overwrite_duplicates: bool = True,
        campaign_id: int | None = None,
        campaign_name: str | None = None,
        **options: Unpack[ImportOptions],
    ) -> BulkResult:
        """Import many contacts concurrently; returns the exact account of every input.

        ``campaign_id``/``campaign_name`` fill the campaign of rows that have none. See the
        README's "Bulk jobs" for ``options`` (``on_error``, ``max_failures``, ``on_progress``,
        ``keep_results``, ``ordered``, ``checkpoint``, ``concurrency``, ``rate``).
        """
        return await _bulk.run(
            self,
            Operation.IMPORT,
            contacts,
            overwrite_duplicates=overwrite_duplicates,
            campaign_id=campaign_id,
            campaign_name=campaign_name,
            **options,
        )

    async def update_contacts(
        self,
        updates: Iterable[UpdateInput] | AsyncIterable[UpdateInput],
        **options: Unpack[UpdateOptions],
    ) -> BulkResult:
        """Apply many partial updates concurrently. With a ``phone_policy`` (the job's, else
        the client's) the numbers an update sets are normalised and checked as an import's."""
        return await _bulk.run(self, Operation.UPDATE, updates, **options)

    async def sync_contacts(
        self,
        contacts: Iterable[ContactInput] | AsyncIterable[ContactInput],
        *,
        campaign_id: int | None = None,
        campaign_name: str | None = None,
        missing: MissingPolicy = "keep",
        max_missing: float = 0.10,
        force: bool = False,
        dry_run: bool = False,
        on_plan: Callable[[SyncPlan], object] | None = None,
        **options: Unpack[BulkOptions],
    ) -> SyncResult:
        """Make one campaign hold ``contacts``, sending only what differs from what it holds.

        The campaign (exactly one of ``campaign_id``/``campaign_name``) is read once, streamed
        into an on-disk index; each row (validated as an import) is then *new* (imported),
        *changed* (only the differing fields are updated, by the server's ID), *unchanged*
        (SKIPPED with reason ``"unchanged"``, no request), a *conflict* (several contacts of
        the campaign have its UserData: FAILED with :class:`SyncConflictError`, none touched)
        or INVALID (also when it has no UserData). Contacts of the campaign no row names are
        *missing*: ``missing="keep"`` reports them, ``"lock"``/``"delete"`` act on them by ID,
        unless they are more than ``max_missing`` of the campaign and ``force`` is not set:
        then :class:`SyncGuardError` is raised before anything is written. ``dry_run``: plan
        only. ``on_plan`` is called with the :class:`SyncPlan` before anything is written.
        ``options``: those of :meth:`import_contacts` (``checkpoint``: the scratch index is
        kept next to it instead of in the temporary directory). See the README's "Sync".
        """
        from . import _sync  # loaded by the first sync only: import jobs start no slower

        return await _sync.sync(
            self,
            contacts,
            campaign_id=campaign_id,
            campaign_name=campaign_name,
            missing=missing,
            max_missing=max_missing,
            force=force,
            dry_run=dry_run,
            on_plan=on_plan,
            **options,
        )

    async def _keyed_bulk(
        self,
        operation: Operation,
        ids: Keys | None,
        user_data: Keys | None,
        options: BulkOptions,
    ) -> BulkResult:
        if (ids is None) == (user_data is None):
            raise TypeError("give exactly one of ids or user_data")
        keys = ids if ids is not None else user_data
        assert keys is not None
        return await _bulk.run(self, operation, keys, by_user_data=user_data is not None, **options)

    async def delete_contacts(
        self,
        ids: Keys | None = None,
        user_data: Keys | None = None,
        **options: Unpack[BulkOptions],
    ) -> BulkResult:
        """Delete many contacts by ID or by UserData (exactly one of the two)."""
        return await self._keyed_bulk(Operation.DELETE, ids, user_data, options)

    async def lock_contacts(
        self,
        ids: Keys | None = None,
        user_data: Keys | None = None,
        **options: Unpack[BulkOptions],
    ) -> BulkResult:
        """Lock many contacts by ID or by UserData."""
        return await self._keyed_bulk(Operation.LOCK, ids, user_data, options)

    async def unlock_contacts(
        self,
        ids: Keys | None = None,
        user_data: Keys | None = None,
        **options: Unpack[BulkOptions],
    ) -> BulkResult:
        """Unlock many contacts by ID or by UserData."""
        return await self._keyed_bulk(Operation.UNLOCK, ids, user_data, options)

    async def reset_contacts(
        self,
        ids: Keys | None = None,
        user_data: Keys | None = None,
        **options: Unpack[BulkOptions],
    ) -> BulkResult:
        """Reset many contacts by ID or by UserData."""
        return await self._keyed_bulk(Operation.RESET, ids, user_data, options)
