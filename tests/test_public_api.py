"""The public surface: what __all__ promises is importable, and nothing private leaks."""

from __future__ import annotations

import ast
from pathlib import Path

import dialler_async


def test_all_names_are_exported_and_exist() -> None:
    for name in dialler_async.__all__:
        assert hasattr(dialler_async, name), name
    assert len(set(dialler_async.__all__)) == len(dialler_async.__all__)


def test_all_matches_the_public_imports_of_init() -> None:
    tree = ast.parse(Path(dialler_async.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == set(dialler_async.__all__)


def test_issue_names_are_public() -> None:
    required = """
        DiallerClient Limits RetryPolicy Routes Contact NewContact ContactUpdate HistoryEntry
        Campaign DiallerError APIStatusError BadRequestError AuthenticationError NotFoundError
        ConflictError RateLimitError ServerError TransportError ConnectError RequestTimeoutError
        ContactValidationError Operation Outcome ItemResult BulkResult BulkError
    """.split()
    assert set(required) <= set(dialler_async.__all__)


def test_error_tree() -> None:
    from dialler_async import (
        APIStatusError,
        BadRequestError,
        ConnectError,
        DiallerError,
        RequestTimeoutError,
        ServerError,
        TransportError,
    )

    assert issubclass(BadRequestError, APIStatusError)
    assert issubclass(ServerError, APIStatusError)
    assert issubclass(APIStatusError, DiallerError)
    assert issubclass(ConnectError, TransportError)
    assert issubclass(RequestTimeoutError, TransportError)
    assert ConnectError.request_sent is False
