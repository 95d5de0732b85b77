"""What the CLI writes: rejects files, JSON reports and exports.

A rejects file holds each row that did not make it AS IT CAME IN (original column names and
values) plus ``error_status`` (invalid, failed, ambiguous, cancelled) and ``error_message``,
written as the results stream in. Re-importing it with the same command works: the error
columns are ignored by ``import``/``update``. CSV cells that a spreadsheet would run as a
formula get a leading ``'`` (phone numbers such as ``+4930123456`` are left alone).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, TextIO

import attrs
import orjson

from .. import _fields as F
from .. import to_api
from .._exceptions import APIStatusError, ContactValidationError, DiallerError
from .._models import Contact
from .._results import BulkResult, ItemResult, Outcome
from ._input import (
    ERROR_COLUMNS,
    JSONL_SUFFIXES,
    Format,
    KeyItem,
    Row,
    UnparsableLine,
    neutralise,
)

#: Export columns: the record's ID, then every field an import accepts.
EXPORT_COLUMNS: Final = ("ID", *(f.api for f in F.IMPORT_FIELDS))
ALL_COLUMNS: Final = tuple(f.api for f in F.CONTACT_FIELDS)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def rejects_format(path: str) -> Format:
    return "jsonl" if Path(path).suffix.lower() in JSONL_SUFFIXES else "csv"


def raw_of(item: Any) -> dict[str, Any]:
    """The input row an item came from, as it came in."""
    if isinstance(item, Row | KeyItem | UnparsableLine):
        return item.raw
    if isinstance(item, Mapping):
        return dict(item)
    return {"value": item}


def line_of(item: Any) -> int | None:
    return getattr(item, "line", None)


def key_of(item: Any) -> str | int | None:
    """The UserData (or ID) of an input row, for rows that never got as far as the SDK's key."""
    if isinstance(item, KeyItem):
        return str(item)
    if isinstance(item, Mapping):
        for name in ("UserData", "ID"):
            value = item.get(name)
            if isinstance(value, str | int) and str(value).strip():
                return value
    return None


def why(result: ItemResult) -> str:
    """The ``error_message`` of a non-success."""
    if isinstance(result.input, UnparsableLine):
        return result.input.problem
    if isinstance(result.error, ContactValidationError):
        return "; ".join(result.error.problems)
    if result.error is not None:
        return str(result.error)
    if result.outcome is Outcome.AMBIGUOUS:
        return "may or may not have been applied: the job stopped while it was in flight"
    if result.outcome is Outcome.CANCELLED:
        return "not sent: the job stopped before this row (run the command again)"
    return result.outcome.value


class Rejects:
    """A rejects file, written row by row (line-buffered) as failures come in.

    A write that fails (a full disk) does not stop the job: the file is given up, ``error``
    says why, and the job's account (summary, report) is still produced.
    """

    def __init__(
        self,
        path: str,
        *,
        header: Sequence[str] | None,
        delimiter: str = ",",
        encoding: str = "utf-8-sig",
    ) -> None:
        self.path = path
        self.format = rejects_format(path)
        self.count = 0
        self.error: str | None = None
        self._dropped_warned = False
        self._writer: Any = None
        self._header: list[str] | None = None
        if header is not None:
            self._header = [h for h in header if h.lower() not in ERROR_COLUMNS]
        try:
            self._fh: TextIO = open(  # noqa: SIM115 - closed in close()
                path,
                "w",
                encoding=encoding if self.format == "csv" else "utf-8",
                newline="",
                buffering=1,
            )
        except OSError as exc:
            raise OSError(f"cannot write the rejects file {path}: {exc.strerror}") from exc
        self._delimiter = delimiter

    def _csv(self, raw: dict[str, Any]) -> Any:
        if self._writer is None:
            if self._header is None:
                self._header = [k for k in raw if k.lower() not in ERROR_COLUMNS]
            self._writer = csv.writer(self._fh, delimiter=self._delimiter)
            self._writer.writerow([neutralise(h) for h in [*self._header, *ERROR_COLUMNS]])
        return self._writer

    def write_row(self, raw: dict[str, Any], status: str, message: str) -> None:
        if self.error is not None:
            return
        try:
            self._write_row(raw, status, message)
        except OSError as exc:
            self._give_up(exc)
        else:
            self.count += 1

    def _give_up(self, exc: OSError) -> None:
        self.error = f"cannot write the rejects file {self.path}: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            self._fh.close()

    def _write_row(self, raw: dict[str, Any], status: str, message: str) -> None:
        if self.format == "jsonl":
            record = {k: v for k, v in raw.items() if k.lower() not in ERROR_COLUMNS}
            record.update(error_status=status, error_message=message)
            self._fh.write(orjson.dumps(record).decode() + "\n")
            return
        writer = self._csv(raw)
        assert self._header is not None
        if not self._dropped_warned and raw.keys() - set(self._header) - set(ERROR_COLUMNS):
            self._dropped_warned = True
            print(
                f"warning: rows have columns the rejects file {self.path} has no column for; "
                "those cells are left out (use a .jsonl rejects file to keep everything)",
                file=sys.stderr,
            )
        cells = [_text(raw.get(h)) for h in self._header]
        writer.writerow([neutralise(c) for c in [*cells, status, message]])

    def write(self, result: ItemResult) -> None:
        self.write_row(raw_of(result.input), result.outcome.value, why(result))

    def close(self) -> None:
        if self.error is not None:
            return
        try:
            if self.format == "csv" and self._writer is None and self._header is not None:
                self._csv({})  # an empty rejects file still gets its header
            self._fh.close()
        except OSError as exc:
            self._give_up(exc)


@attrs.define(kw_only=True)
class Account:
    """A job's account in the CLI's terms (a bulk job's or a dry run's)."""

    operation: str
    counts: dict[str, int]
    elapsed: float
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duplicates: int = 0
    failures: list[dict[str, Any]] = attrs.field(factory=list)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def problems(self) -> int:
        good = ("succeeded", "skipped", "valid")
        return sum(n for k, n in self.counts.items() if k not in good)

    @classmethod
    def of(cls, result: BulkResult) -> Account:
        return cls(
            operation=result.operation.value,
            counts={o.value: n for o, n in result.counts.items()},
            elapsed=result.elapsed,
            requests=result.requests,
            retries=result.retries,
            throttled=result.throttled,
            duplicates=result.duplicates_in_input,
            failures=[failure(r) for r in result.failures],
        )


def failure(result: ItemResult) -> dict[str, Any]:
    """One failure as the report lists it."""
    error = result.error
    return {
        "index": result.index,
        "line": line_of(result.input),
        "key": result.key if result.key is not None else key_of(result.input),
        "outcome": result.outcome.value,
        "status": error.status if isinstance(error, APIStatusError) else result.status,
        "error_type": type(error).__name__ if isinstance(error, DiallerError) else None,
        "error": why(result),
    }


def write_report(path: str, account: Account, *, started_at: str, **details: Any) -> None:
    """The JSON report: counts, timings and every failure. Never holds the token."""
    report = {
        "operation": account.operation,
        "dry_run": account.dry_run,
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **details,
        "total": account.total,
        "counts": account.counts,
        "elapsed_seconds": round(account.elapsed, 3),
        "rate_per_second": round(account.total / account.elapsed, 1) if account.elapsed else 0,
        "requests": account.requests,
        "retries": account.retries,
        "throttled": account.throttled,
        "duplicates_in_input": account.duplicates,
        "failures": account.failures,
    }
    Path(path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def contact_record(contact: Contact, columns: Iterable[str]) -> dict[str, Any]:
    """A contact in the API's spelling, limited to ``columns``."""
    record = to_api(contact)
    return {c: record.get(c) for c in columns}


class ExportWriter:
    """Contacts as CSV (comma, header of API names) or JSON Lines (nulls left out), one at a
    time, so an export streams from the answer to the file."""

    def __init__(self, out: IO[str], *, fmt: Format, columns: Sequence[str]) -> None:
        self.out = out
        self.columns = columns
        self.count = 0
        self._csv = csv.writer(out) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(columns)

    def write(self, contact: Contact) -> None:
        record = contact_record(contact, self.columns)
        if self._csv is not None:
            self._csv.writerow([_text(record[c]) for c in self.columns])
        else:
            compact = {k: v for k, v in record.items() if v is not None}
            self.out.write(orjson.dumps(compact).decode() + "\n")
        self.count += 1


def write_export(
    contacts: Iterable[Contact], out: IO[str], *, fmt: Format, columns: Sequence[str]
) -> int:
    """Contacts as CSV or JSON Lines (see :class:`ExportWriter`); returns how many."""
    writer = ExportWriter(out, fmt=fmt, columns=columns)
    for contact in contacts:
        writer.write(contact)
    return writer.count
