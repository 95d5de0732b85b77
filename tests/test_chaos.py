"""A seeded chaos test of the account: random faults, callback errors, input errors, early
consumer stops, single and double cancellation, and resumes with shuffled input.

Every run is checked with ``assert_account`` against the emulator's end state; after the last,
clean run the campaign holds every contact exactly once (plain imports: a duplicate would show),
the journal says every row SUCCEEDED, and no task of any job is left.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from dialler_async import BulkResult, DiallerClient, Operation, Progress
from dialler_async.emulator import Emulator

from .conftest import contact
from .invariants import Snapshot, assert_account
from .journal import states

UNIVERSE = 120
FAULTS = {
    "unavailable": 0.04,
    "drop_before": 0.03,
    "drop_after": 0.03,
    "gateway_timeout_after": 0.03,
    "invalid_json": 0.02,
}
MISCHIEF = ("none", "callback", "input", "stop", "cancel", "cancel-twice")


class Mischief(Exception):
    pass


class Source:
    """The input of one run: the universe shuffled, optionally raising after ``fail_after``."""

    def __init__(self, rows: Iterable[dict[str, object]], fail_after: int | None) -> None:
        self.rows = list(rows)
        self.fail_after = fail_after
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[dict[str, object]]:
        for row in self.rows:
            if self.fail_after is not None and self.read >= self.fail_after:
                raise Mischief("input")
            self.read += 1
            yield row
            await asyncio.sleep(0)


async def one_run(
    client: DiallerClient, journal: Path, rng: random.Random, mischief: str
) -> tuple[BulkResult, int]:
    universe = [contact(i) for i in range(UNIVERSE)]
    rng.shuffle(universe)
    source = Source(universe, rng.randrange(10, UNIVERSE) if mischief == "input" else None)
    limit = rng.randrange(5, UNIVERSE)

    def on_progress(progress: Progress) -> None:
        if mischief == "callback" and progress.done >= limit:
            raise Mischief("callback")

    options: dict[str, Any] = {
        "checkpoint": journal,
        "overwrite_duplicates": False,
        "concurrency": rng.choice([1, 4, 8]),
        "on_progress": on_progress,
        "progress_interval": 0,
        "grace": rng.choice([0.0, 0.05, 5.0]),
        "ordered": rng.random() < 0.3,
        # Kept: the account's indices are checked one by one. Not kept: the lean path, where
        # a success is counted without building its result.
        "keep_results": rng.random() < 0.5,
    }
    if mischief == "stop":
        async with client.stream(Operation.IMPORT, source, **options) as s:
            async for r in s:
                if r.index >= limit:
                    break
        return s.result, source.read
    task = asyncio.create_task(client.import_contacts(source, **options))
    if mischief.startswith("cancel"):
        async with asyncio.timeout(30):
            while source.read < limit and not task.done():
                await asyncio.sleep(0.002)
        task.cancel()
        if mischief == "cancel-twice":
            await asyncio.sleep(rng.choice([0, 0.001, 0.01]))
            task.cancel()
    try:
        result = await asyncio.wait_for(task, 60)
    except (Mischief, asyncio.CancelledError) as exc:
        bulk = getattr(exc, "bulk_result", None)
        if not isinstance(bulk, BulkResult):
            raise AssertionError(f"{exc!r} without bulk_result") from exc
        return bulk, source.read
    return result, source.read


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
async def test_chaos_keeps_the_account_exact(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    journal = tmp_path / "ck.db"
    emulator.configure(faults=FAULTS, seed=seed, latency=0.001, slow_seconds=0.05)
    for _ in range(4):
        mischief = rng.choice(MISCHIEF)
        before = Snapshot.take(emulator)
        result, read = await one_run(client, journal, rng, mischief)
        await emulator.faults.settled()
        assert_account(
            result, read=read, emulator=emulator, before=before, campaign_id=538, upsert=False
        )
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dialler-bulk")]
    emulator.configure(faults={})
    before = Snapshot.take(emulator)
    result, read = await one_run(client, journal, rng, "none")
    assert_account(result, read=read, emulator=emulator, before=before, upsert=False)
    assert result.ok and read == UNIVERSE, result.summary()
    per_key = Counter(c["UserData"] for c in emulator.store.all_contacts())
    assert len(per_key) == UNIVERSE and set(per_key.values()) == {1}, "a contact was duplicated"
    assert states(journal) == {"succeeded": UNIVERSE}
