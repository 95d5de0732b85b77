"""Asyncio client SDK for the jtel ACD Dialler Contacts REST API, built for bulk work.

Everything public is importable from here; the underscore modules are private.
"""

from .__about__ import __version__
from ._bulk import BulkStream
from ._client import DiallerClient
from ._converter import structure as from_api
from ._converter import unstructure as to_api
from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BulkError,
    CheckpointError,
    ClientStateError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    ConnectionLostError,
    ContactValidationError,
    DiallerError,
    NotFoundError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    SyncConflictError,
    SyncGuardError,
    TransportError,
)
from ._limits import Limits
from ._models import UNSET, Campaign, Contact, ContactUpdate, HistoryEntry, NewContact, ResultCode
from ._options import BulkOptions, StreamOptions
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress
from ._retry import RetryPolicy
from ._routes import Route, Routes
from ._runner import run
from ._sync_types import SyncPlan, SyncResult
from ._validation import validate_contact, validate_key, validate_update

__all__ = [
    "UNSET",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "BulkError",
    "BulkOptions",
    "BulkResult",
    "BulkStream",
    "Campaign",
    "CheckpointError",
    "ClientStateError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "ConnectionLostError",
    "Contact",
    "ContactUpdate",
    "ContactValidationError",
    "DiallerClient",
    "DiallerError",
    "HistoryEntry",
    "ItemResult",
    "Limits",
    "NewContact",
    "NotFoundError",
    "Operation",
    "Outcome",
    "Progress",
    "RateLimitError",
    "RedirectError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResultCode",
    "RetryPolicy",
    "Route",
    "Routes",
    "ServerError",
    "StreamOptions",
    "SyncConflictError",
    "SyncGuardError",
    "SyncPlan",
    "SyncResult",
    "TransportError",
    "__version__",
    "from_api",
    "run",
    "to_api",
    "validate_contact",
    "validate_key",
    "validate_update",
]
