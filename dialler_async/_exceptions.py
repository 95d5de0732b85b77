"""The error tree. Every error the SDK raises is a :class:`DiallerError`.

::

    DiallerError
    ├── APIStatusError                 the server answered with an error status
    │   ├── BadRequestError            400
    │   ├── AuthenticationError        401
    │   ├── NotFoundError              404 (``route_missing`` when the body was empty)
    │   ├── ConflictError              409
    │   ├── RateLimitError             429
    │   ├── RedirectError              3xx (never followed)
    │   └── ServerError                5xx
    ├── ResponseFormatError            2xx with a body that is not the JSON we expect
    ├── TransportError                 no complete answer; ``request_sent``: may it have had effects
    │   ├── ConnectError               never reached the server: always safe to retry
    │   ├── RequestTimeoutError
    │   └── ConnectionLostError        the connection broke after the request was sent
    ├── ContactValidationError         rejected before any request, naming every problem
    ├── SyncConflictError              a sync row matches several contacts (``ids``)
    ├── SyncGuardError                 a sync would lock/delete too much (``plan``)
    ├── ConfigurationError             settings missing or wrong
    ├── CheckpointError                a job's checkpoint could not be read or written
    └── ClientStateError               the client is not open (never entered, or closed)

No error ever carries the bearer token: requests are described by method and path only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._results import BulkResult
    from ._sync_types import SyncPlan

_SNIPPET = 200


def _snippet(body: str | None) -> str | None:
    if body is None:
        return None
    # "..." not "…": one non-ASCII character would double the size of the kept string.
    return body if len(body) <= _SNIPPET else body[:_SNIPPET] + "..."


class DiallerError(Exception):
    """Base class of every error raised by dialler_async.

    ``attempts`` is how many HTTP attempts were made before the error was raised (0 when it was
    raised before any request, e.g. a validation error).
    """

    attempts: int = 0


class APIStatusError(DiallerError):
    """The server answered with a non-2xx status.

    ``status`` is the HTTP status, ``error`` the server's ``error`` text (None when the body
    had none), ``method``/``path`` the request (relative to the client's base URL),
    ``body`` a snippet of the raw body (both at most 200 characters).
    """

    status: int

    def __init__(
        self,
        status: int,
        error: str | None,
        *,
        method: str,
        path: str,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.error = _snippet(error)  # a kept failure must stay small whatever the server sent
        self.method = method
        self.path = path
        self.body = _snippet(body)
        self.retry_after = retry_after
        reason = self.error if self.error is not None else (self.body or "no body")
        super().__init__(f"{status} from {method} {path}: {reason}")


class BadRequestError(APIStatusError):
    """400: a required parameter is missing or a value is invalid."""


class AuthenticationError(APIStatusError):
    """401: the bearer token is wrong or does not belong to the client ID."""


class NotFoundError(APIStatusError):
    """404. ``route_missing`` is True when the body was empty: the endpoint itself does not exist
    (check the :class:`~dialler_async.Routes` entry); otherwise the object was not found."""

    @property
    def route_missing(self) -> bool:
        return not self.body


class ConflictError(APIStatusError):
    """409: the object exists already or another precondition failed."""


class RateLimitError(APIStatusError):
    """429: the server (or a gateway in front of it) throttled the request. It was not processed.

    ``storm`` is True when the request was not even sent: the server had answered nothing but
    429 for longer than the retry policy's ``deadline`` (see :class:`RetryPolicy`).
    """

    storm: bool = False


class ServerError(APIStatusError):
    """5xx: the server failed. 503 usually means the application never saw the request."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The most specific :class:`APIStatusError` subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    if 300 <= status < 400:
        return RedirectError
    return _STATUS_CLASSES.get(status, APIStatusError)


class RedirectError(APIStatusError):
    """3xx: the server (or a gateway) answered with a redirect. Redirects are never followed:
    following one would turn a POST into a body-less GET elsewhere, or send the token there."""


class ResponseFormatError(DiallerError):
    """A success status whose body is not the JSON we expect (truncated, HTML, wrong shape).

    The request WAS processed (as far as the status tells), so it must not be replayed blindly.
    """

    def __init__(self, message: str, *, method: str, path: str, body: str | None) -> None:
        self.method = method
        self.path = path
        self.body = _snippet(body)
        super().__init__(f"{method} {path}: {message}; body: {self.body!r}")


class TransportError(DiallerError):
    """No complete HTTP answer arrived.

    ``request_sent`` is False only when the request certainly never reached the server (connect
    failures): then a retry cannot duplicate anything. When True, the server may have processed it.
    """

    request_sent: bool = True

    def __init__(self, message: str, *, method: str, path: str) -> None:
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {message}")


class ConnectError(TransportError):
    """The connection could not be established; the request was never sent."""

    request_sent = False


class RequestTimeoutError(TransportError):
    """The request timed out; ``request_sent`` is False for a connect timeout."""

    def __init__(self, message: str, *, method: str, path: str, request_sent: bool) -> None:
        super().__init__(message, method=method, path=path)
        self.request_sent = request_sent


class ConnectionLostError(TransportError):
    """The connection broke after the request was sent, before a complete answer arrived."""


class ContactValidationError(DiallerError, ValueError):
    """A contact was rejected before any request. ``problems`` names every problem found."""

    def __init__(self, problems: Sequence[str], *, key: str | int | None = None) -> None:
        self.problems = tuple(problems)
        self.key = key
        who = f"contact {key!r}" if key is not None else "contact"
        super().__init__(f"{who} is invalid: " + "; ".join(self.problems))


class ConfigurationError(DiallerError, ValueError):
    """The client's settings are missing or wrong (e.g. ``from_env`` without DIALLER_BASE_URL)."""


class CheckpointError(DiallerError):
    """A bulk job's checkpoint could not be read or written (a full disk, a removed file).

    The job stops at once (a journal that cannot be written cannot protect a resume); the
    partial account is attached as ``bulk_result``."""


class ClientStateError(DiallerError, RuntimeError):
    """The client was used outside ``async with`` (not yet opened, or already closed)."""


class BulkError(DiallerError):
    """A bulk job had failures (``raise_for_failures``) or stopped (``on_error="raise"``).

    ``result`` is the job's complete account up to that point.
    """

    def __init__(self, message: str, result: BulkResult) -> None:
        self.result = result
        super().__init__(message)


class SyncConflictError(DiallerError):
    """A sync row whose UserData several contacts of the campaign hold: which one it means
    cannot be told, so none is touched. ``ids``: those contacts (ID order)."""

    def __init__(self, user_data: str, ids: Sequence[int]) -> None:
        self.user_data = user_data
        self.ids = tuple(ids)
        shown = ", ".join(str(i) for i in self.ids[:10]) + (", …" if len(self.ids) > 10 else "")
        super().__init__(
            f"{len(self.ids)} contacts of the campaign have UserData {user_data!r} "
            f"(IDs {shown}); none was touched"
        )


class SyncGuardError(DiallerError):
    """A sync refused to lock or delete the contacts missing from its input because they are
    more than ``max_missing`` of the campaign (a truncated export must never wipe a campaign).
    Nothing was written; ``plan`` is what it would have done. Pass ``force=True`` to proceed."""

    def __init__(self, message: str, plan: SyncPlan) -> None:
        self.plan = plan
        super().__init__(message)
