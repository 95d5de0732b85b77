"""The read-only commands: export, get, find, history, campaigns. Data goes to stdout."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console

from .. import to_api
from .._exceptions import NotFoundError
from .._models import Contact
from ._connect import UsageError, check_server, connect, unknown_campaign
from ._output import ALL_COLUMNS, EXPORT_COLUMNS, ExportWriter
from ._progress import note, out_console, table_out

_CONTACT_COLUMNS = (
    "ID",
    "UserData",
    "Name",
    "FirstName",
    "DiallerCampaignsID",
    "PhoneNumber1",
    "City",
    "bLocked",
    "dtNextTry",
)
_HISTORY_COLUMNS = ("ID", "DiallerContactsID", "dtCallStart", "PhoneNumber", "ResultCode")
_CAMPAIGN_COLUMNS = ("ID", "Name", "ClientsID", "LanguagesID", "nMaxParallelLines", "dtTo")


def _json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _records(objs: Sequence[Any]) -> list[dict[str, Any]]:
    return [to_api(o) for o in objs]


async def export(args: argparse.Namespace, console: Console) -> int:
    """Stream the campaign's list answer into the output: memory stays flat at any size."""
    columns = ALL_COLUMNS if args.all_fields else EXPORT_COLUMNS
    async with connect(args, console, announce=False) as client:
        campaigns = await check_server(client)
        if args.campaign_id is not None:
            problem = unknown_campaign(campaigns, args.campaign_id, None)
            if problem is not None:
                raise UsageError(problem)
        with _output(args.output) as out:
            writer = ExportWriter(out, fmt=args.format, columns=columns)
            async for contact in client.iter_contacts(args.campaign_id):
                writer.write(contact)
    if not args.quiet:
        where = f" to {args.output}" if args.output else ""
        note(console, f"exported {writer.count:,} contacts{where}", "dim")
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        # UTF-8 whatever the locale, and no newline translation: the csv module writes \r\n.
        # Written to sys.stdout itself, so a reader that stops early (`| head`) is one
        # BrokenPipeError that main() turns into a quiet exit.
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8", newline="")
        yield sys.stdout
        sys.stdout.flush()
        return
    # Written aside and renamed into place only once complete: an export that breaks
    # part-way never leaves a valid-looking, truncated file (nor destroys the previous one).
    target = Path(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent or None
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # as open() would create it (mkstemp makes it 0600)
        fh = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with fh:
            try:
                yield fh
            except OSError as exc:  # e.g. a full disk
                raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _contact_rows(contacts: Sequence[Contact]) -> list[dict[str, Any]]:
    return _records(contacts)


async def get(args: argparse.Namespace, console: Console) -> int:
    async with connect(args, console, announce=False) as client:
        try:
            contact = await client.get_contact(args.id)
        except NotFoundError as exc:
            if exc.route_missing:
                raise
            note(console, f"no contact with ID {args.id}", "yellow")
            return 1
    record = to_api(contact)
    if args.json:
        _json(record)
        return 0
    rows = [{"field": k, "value": v} for k, v in record.items() if v is not None]
    table_out(out_console(), rows, ("field", "value"))
    return 0


async def find(args: argparse.Namespace, console: Console) -> int:
    async with connect(args, console, announce=False) as client:
        contacts = await client.find_contacts(args.user_data)
    if args.json:
        _json(_contact_rows(contacts))
    elif contacts:
        table_out(out_console(), _contact_rows(contacts), _CONTACT_COLUMNS)
    if not contacts:
        note(console, f"no contact with UserData {args.user_data!r}", "yellow")
        return 1
    return 0


async def history(args: argparse.Namespace, console: Console) -> int:
    if args.id is None and args.user_data is None:
        raise UsageError(
            "history needs a contact: give its ID (dialler-async history 215387) or its "
            "UserData (dialler-async history --user-data CRM-1)"
        )
    if args.id is not None and args.user_data is not None:
        raise UsageError("history: give a contact ID or --user-data, not both")
    async with connect(args, console, announce=False) as client:
        try:
            entries = await client.contact_history(args.id, user_data=args.user_data)
        except NotFoundError as exc:
            if exc.route_missing:
                raise
            who = f"ID {args.id}" if args.id is not None else f"UserData {args.user_data!r}"
            note(console, f"no contact with {who}", "yellow")
            return 1
    records = _records(entries)
    if args.json:
        _json(records)
    elif records:
        table_out(out_console(), records, _HISTORY_COLUMNS)
    else:
        note(console, "no call attempts yet", "dim")
    return 0


async def campaigns(args: argparse.Namespace, console: Console) -> int:
    async with connect(args, console, announce=False) as client:
        found = await client.list_campaigns()
    records = _records(found)
    if args.json:
        _json(records)
    else:
        table_out(out_console(), records, _CAMPAIGN_COLUMNS)
    return 0
