"""A job opens its checkpoint in a worker thread: folding what the runs before journaled takes
seconds for a few hundred thousand rows, and must not hold up the event loop (other tasks of
the caller's application, the job's own timers)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from dialler_async import ConfigurationError, DiallerClient, Operation
from dialler_async._checkpoint import Checkpoint
from dialler_async.emulator import Emulator

from .conftest import contact
from .invariants import Snapshot, assert_account, no_job_tasks

WAIT = 10.0  # generous: a loaded CI machine


def _rows(n: int) -> list[dict[str, Any]]:
    return [contact(i) for i in range(n)]


class _HeldOpen:
    """Checkpoint._open made to wait for :meth:`release` (in whichever thread it runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self.threads: list[threading.Thread] = []
        real_open = Checkpoint._open

        def held_open(checkpoint: Checkpoint, *args: Any) -> None:
            self.threads.append(threading.current_thread())
            self.entered.set()
            # On the loop's thread this would block the loop: the test would see no tick.
            self._released.wait(WAIT)
            real_open(checkpoint, *args)

        monkeypatch.setattr(Checkpoint, "_open", held_open)

    def release(self) -> None:
        self._released.set()

    async def wait_entered(self) -> None:
        for _ in range(int(WAIT / 0.01)):
            if self.entered.is_set():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the checkpoint was never opened")


async def test_the_checkpoint_opens_off_the_event_loop(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldOpen(monkeypatch)
    before = Snapshot.take(emulator)
    job = asyncio.create_task(
        client.import_contacts(_rows(20), checkpoint=tmp_path / "job.db", keep_results=True)
    )
    await held.wait_entered()
    ticks = 0
    for _ in range(5):  # the loop runs while the file is being opened
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not job.done()
    held.release()
    result = await asyncio.wait_for(job, WAIT)
    assert_account(result, read=20, emulator=emulator, before=before, upsert=True)
    assert result.succeeded == 20
    assert held.threads and all(t is not threading.main_thread() for t in held.threads)


async def test_a_job_cancelled_while_its_checkpoint_opens_releases_the_file(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "job.db"
    held = _HeldOpen(monkeypatch)
    before = Snapshot.take(emulator)
    job = asyncio.create_task(
        client.import_contacts(_rows(20), checkpoint=journal, keep_results=True, grace=0.05)
    )
    await held.wait_entered()
    job.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await asyncio.wait_for(job, WAIT)
    stopped = info.value.bulk_result  # type: ignore[attr-defined]
    assert_account(stopped, read=0, emulator=emulator, before=before)
    assert stopped.total == 0 and no_job_tasks()
    # The opening goes on in its thread; once done, what it opened is closed: the file's lock
    # is released, and the next run on it opens it and finds nothing done.
    held.release()
    again = await _once_free(client, journal)
    assert_account(again, read=20, emulator=emulator, before=before, upsert=True)
    assert again.succeeded == 20 and again.skipped == 0


async def test_a_stream_left_while_its_checkpoint_opens_ends_cleanly(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "job.db"
    held = _HeldOpen(monkeypatch)
    before = Snapshot.take(emulator)
    stream = client.stream(Operation.IMPORT, _rows(20), checkpoint=journal, grace=0.05)
    await stream.__aenter__()
    await held.wait_entered()
    # Left (aclose) while the file opens: after the grace the job is aborted, and the wait
    # for the opening is cut off, not sat out.
    await asyncio.wait_for(stream.aclose(), WAIT)
    assert_account(stream.result, read=0, emulator=emulator, before=before)
    assert no_job_tasks()
    held.release()
    again = await _once_free(client, journal)
    assert_account(again, read=20, emulator=emulator, before=before, upsert=True)
    assert again.succeeded == 20


async def _once_free(client: DiallerClient, journal: Path) -> Any:
    """Import the same 20 rows with ``journal`` as soon as no other job holds it."""
    for _ in range(int(WAIT / 0.02)):
        try:
            return await client.import_contacts(_rows(20), checkpoint=journal, keep_results=True)
        except ConfigurationError as exc:  # in use, until the opening thread is done
            if "in use" not in str(exc):
                raise
            await asyncio.sleep(0.02)
    raise AssertionError("the checkpoint stayed locked")
