"""Simulated dialling: the only way call history and dialling state come about.

Each round calls every unlocked contact that has a phone number once, on its least-tried
number, and records the attempt. Outcomes and agents come from a seeded generator so a
test can predict them by seed; a round is one transaction.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from dialler_async._fields import DATETIME_FORMAT
from dialler_async.emulator._records import RESULT_CODES
from dialler_async.emulator._store import Store

__all__ = ["AGENTS", "dial"]

AGENTS: Final = ("agent01", "agent02", "agent03", "agent04", "agent05")

_DIALLED: Final = [rc for rc in RESULT_CODES.values() if rc.weight > 0]
_WEIGHTS: Final = [rc.weight for rc in _DIALLED]
_RETRY_DELAY: Final = timedelta(minutes=15)
_APPOINTMENT_DELAY: Final = timedelta(days=1)


def _least_tried_phone(record: dict[str, Any]) -> int | None:
    """1..6 for the non-blank phone number with the fewest tries (lowest on ties)."""
    best: int | None = None
    best_tries = 0
    for n in range(1, 7):
        number = record[f"PhoneNumber{n}"]
        if number is None or not number.strip():
            continue
        tries = record[f"nTriesPhoneNumber{n}"] or 0
        if best is None or tries < best_tries:
            best, best_tries = n, tries
    return best


def dial(
    store: Store,
    rng: random.Random,
    rounds: int = 1,
    *,
    client_id: int | None = None,
    start: datetime | None = None,
) -> int:
    """Run ``rounds`` dialling rounds; returns how many calls were made.

    Per call: one history entry (number dialled, start time, result code, agent), then
    ``nTriesPhoneNumberN`` + 1, ``nPhoneNumberNLastCause``, ``DiallerCampaignsResultCodesID``,
    ``bLastResultMailbox`` and ``dtNextTry`` (15 minutes on for a delay, a day for an
    appointment, null once done or aborted). Calls start one second apart from ``start``
    (default: now, UTC) so history is ordered like the calls.
    """
    clock = (start or datetime.now(UTC)).replace(microsecond=0, tzinfo=None)
    calls = 0
    for _ in range(rounds):
        with store.transaction():
            for record in store.dialable(client_id):
                if record["bLocked"]:
                    continue
                n = _least_tried_phone(record)
                if n is None:
                    continue
                code = rng.choices(_DIALLED, _WEIGHTS)[0]
                agent = rng.choice(AGENTS)
                call_start = clock + timedelta(seconds=calls)
                calls += 1
                store.add_history(
                    record["ID"],
                    record[f"PhoneNumber{n}"],
                    call_start.strftime(DATETIME_FORMAT),
                    code.id,
                    code.name,
                    agent,
                )
                record[f"nTriesPhoneNumber{n}"] = (record[f"nTriesPhoneNumber{n}"] or 0) + 1
                record[f"nPhoneNumber{n}LastCause"] = code.cause
                record["DiallerCampaignsResultCodesID"] = code.id
                record["bLastResultMailbox"] = False
                if code.appointment:
                    next_try: datetime | None = call_start + _APPOINTMENT_DELAY
                elif code.delay:
                    next_try = call_start + _RETRY_DELAY
                else:
                    next_try = None
                record["dtNextTry"] = (
                    None if next_try is None else next_try.strftime(DATETIME_FORMAT)
                )
                store.save(record)
    return calls
