"""The results file (``--results``): one line per input row, the source row -> contact ID map.

Columns: ``line`` (of the input file), ``UserData``, ``outcome``, ``reason`` (why it was
skipped or did not succeed), ``warnings`` (numbers dropped or suppressed), ``contact_id`` (the
server's DiallerContactsID where an answer or a lookup named one), then ``PhoneNumber1..6``
and ``FaxNumber`` as sent. Lines are written as rows finish (completion order: sort by
``line``). Cells a spreadsheet would run as a formula get a leading ``'``, as in rejects files.
"""

from __future__ import annotations

import csv
from typing import Any, Final, TextIO

from .._converter import to_new_contact, unstructure
from .._phones import NUMBER_FIELDS, screen_numbers
from .._policy import PhonePolicy
from .._results import ItemResult, Outcome
from .._suppress import SuppressionList
from ._input import neutralise
from ._output import key_of, line_of, why

COLUMNS: Final = ("line", "UserData", "outcome", "reason", "warnings", "contact_id", *NUMBER_FIELDS)
_SENT: Final = frozenset({Outcome.FAILED, Outcome.AMBIGUOUS, Outcome.CANCELLED})


class ResultsFile:
    """Writes one line per finished row, line-buffered (a crash leaves every line so far)."""

    def __init__(
        self,
        path: str,
        *,
        policy: PhonePolicy | None = None,
        suppress: SuppressionList | None = None,
        encoding: str = "utf-8-sig",
    ) -> None:
        self.path = path
        self.count = 0
        #: The error that stopped writing (the job is stopped with it).
        self.error: OSError | None = None
        self._policy = policy
        self._suppress = suppress
        try:
            self._fh: TextIO = open(  # noqa: SIM115 - closed in close()
                path, "w", encoding=encoding, newline="", buffering=1
            )
        except OSError as exc:
            raise OSError(f"cannot write the results file {path}: {exc.strerror}") from exc
        self._writer = csv.writer(self._fh)
        self._writer.writerow(COLUMNS)

    def write(self, result: ItemResult) -> None:
        """Write one row's line (the job's ``on_result``: called once per row accounted)."""
        try:
            self._write(result)
        except OSError as exc:
            self.error = exc
            raise

    def _write(self, result: ItemResult) -> None:
        self.count += 1
        key = result.key if isinstance(result.key, str) else key_of(result.input)
        reason = result.reason or ("" if result.outcome is Outcome.SUCCEEDED else why(result))
        contact_id = result.contact_id
        phones = self._sent(result)
        cells = [
            str(line_of(result.input) or ""),
            "" if key is None else str(key),
            result.outcome.value,
            reason,
            "; ".join(result.warnings),
            "" if contact_id is None else str(contact_id),
            *(phones.get(f) or "" for f in NUMBER_FIELDS),
        ]
        self._writer.writerow([neutralise(c) for c in cells])

    def _sent(self, result: ItemResult) -> dict[str, Any]:
        """The numbers as sent: the server's echo where it answered, else worked out again from
        the row (a row never sent, INVALID or SKIPPED, has none)."""
        if result.record is not None:
            return {f: result.record.get(f) for f in NUMBER_FIELDS}
        if result.outcome not in _SENT:
            return {}
        try:
            body = unstructure(to_new_contact(result.input))
        except Exception:  # a row that never got as far as being converted: nothing was sent
            return {}
        if self._policy is None:
            return body
        screened = screen_numbers(body, self._policy)
        sent = dict(screened.sent)
        if self._suppress is not None:
            for field, key in screened.keys.items():
                if key in self._suppress:
                    sent.pop(field, None)
        return sent

    def close(self) -> None:
        self._fh.close()
