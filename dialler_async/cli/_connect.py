"""Getting a client: from the DIALLER_* variables, or an in-process emulator."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from .._client import DiallerClient
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    NotFoundError,
)
from .._limits import Limits
from .._models import Campaign
from .._routes import Routes
from ..emulator import Emulator

MISSING_ENV = (
    "no server configured: set DIALLER_BASE_URL (e.g. https://acd.example.com/CarrierPortal/"
    "rest/v1.0), DIALLER_CLIENT_ID and DIALLER_TOKEN (or DIALLER_TOKEN_FILE), "
    "or add --emulator to try the built-in emulator"
)


#: What every jtel REST base URL ends with (the API's version prefix).
REST_SUFFIX = "/rest/v1.0"


class UsageError(Exception):
    """A configuration or usage problem: printed, exit status 2."""


def wrong_base_url(base_url: str, what: str) -> str:
    """The message for a server that has none of the API's endpoints at ``base_url``."""
    if base_url.rstrip("/").endswith(REST_SUFFIX):
        fix = (
            f"check DIALLER_BASE_URL (the server's {REST_SUFFIX} prefix, including any "
            "context path such as /CarrierPortal) and DIALLER_CLIENT_ID"
        )
    else:
        fix = (
            f"DIALLER_BASE_URL must be the server's REST prefix, ending in {REST_SUFFIX} "
            f"(e.g. {base_url.rstrip('/')}{REST_SUFFIX})"
        )
    return f"{base_url} is not a jtel REST base URL: {what}; {fix}"


async def check_server(client: DiallerClient) -> list[Campaign]:
    """One cheap read before any work: proves the URL, the client ID and the token, and
    returns the campaigns (to check a campaign given on the command line)."""
    try:
        return await client.list_campaigns()
    except AuthenticationError as exc:
        raise UsageError(
            f"the server refused the token ({exc}); check DIALLER_TOKEN (or DIALLER_TOKEN_FILE) "
            "and DIALLER_CLIENT_ID"
        ) from exc
    except ConnectError as exc:
        raise UsageError(f"cannot reach the server ({exc}); check DIALLER_BASE_URL") from exc
    except NotFoundError as exc:
        if not exc.route_missing:
            raise
        route = client.routes.list_campaigns
        raise UsageError(
            wrong_base_url(
                client.base_url,
                f"{route.method} {route.path} (listing the campaigns) answered 404 with an "
                "empty body, i.e. no such endpoint",
            )
        ) from exc


def unknown_campaign(
    campaigns: list[Campaign], given_id: int | None, given_name: str | None
) -> str | None:
    """Why the campaign given on the command line is not on the server (None if it is)."""
    if given_id is not None and all(c.id != given_id for c in campaigns):
        what = f"ID {given_id}"
    elif given_name is not None and all(c.name != given_name for c in campaigns):
        what = repr(given_name)
    else:
        return None
    known = "; ".join(f"{c.id} {c.name}" for c in campaigns) or "none"
    return f"no campaign {what} on this server; campaigns: {known}"


def setup_logging(level: str, console: Console) -> None:
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def load_routes(path: str | None) -> Routes | None:
    if path is None:
        return None
    try:
        return Routes.from_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read --routes {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--routes {path}: {exc}") from exc


@asynccontextmanager
async def connect(
    args: argparse.Namespace,
    console: Console,
    *,
    concurrency: int = 16,
    rate: float | None = None,
    adaptive: bool = False,
    announce: bool = True,
) -> AsyncIterator[DiallerClient]:
    """An open client for the configured server (or a fresh in-process emulator)."""
    options: dict[str, Any] = {
        "routes": load_routes(args.routes),
        "timeout": args.timeout,
        "limits": Limits(
            max_concurrency=max(1, concurrency),
            max_per_second=rate,
            adaptive_concurrency=adaptive,
        ),
    }
    if args.emulator or args.emulator_db:
        db = args.emulator_db or ":memory:"
        async with Emulator(db=db) as emu:
            if announce and not args.quiet:
                where = f"data in {db}" if args.emulator_db else "in memory, gone at exit"
                console.print(
                    f"[dim]using the built-in emulator at {emu.base_url} ({where})[/]",
                    highlight=False,
                )
            async with DiallerClient(emu.base_url, emu.client_id, emu.token, **options) as client:
                yield client
        return
    try:
        client = DiallerClient.from_env(**options)
    except ConfigurationError as exc:
        text = str(exc)
        if text.startswith("set "):
            raise UsageError(f"{MISSING_ENV} (missing: {text[4:]})") from exc
        raise UsageError(text) from exc
    async with client:
        yield client
