"""Checkpoint and resume: skip what succeeded, retry the rest, never duplicate a write."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from dialler_async import CheckpointError, ConfigurationError, DiallerClient, Outcome
from dialler_async._journal import PENDING, journal_entries
from dialler_async.emulator import Emulator, FaultKind

from .conftest import contact
from .journal import edit_items, states


def rows(n: int) -> list[dict[str, object]]:
    return [contact(i) for i in range(n)]


async def test_rerun_skips_what_succeeded_and_retries_the_rest(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "job.db"
    data: list[Any] = [*rows(20), {"Name": "broken"}]
    # 503 on every attempt of three rows (4 attempts each, one row at a time): FAILED
    emulator.faults.script(FaultKind.UNAVAILABLE, times=12, operation="import_contact")
    first = await client.import_contacts(
        data, checkpoint=journal, overwrite_duplicates=False, concurrency=1, keep_results=True
    )
    assert (first.succeeded, first.failed, first.invalid) == (17, 3, 1)
    second = await client.import_contacts(
        data, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    assert (second.skipped, second.succeeded, second.invalid) == (17, 3, 1)
    assert emulator.store.contact_count() == 20  # no duplicates although no upsert
    third = await client.import_contacts(
        data, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    assert third.skipped == 20 and third.requests == 0


async def test_a_changed_row_is_processed_again(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "job.db"
    await client.import_contacts(rows(3), checkpoint=journal, keep_results=True)
    changed = rows(3)
    changed[1] = contact(1, City="Hamburg")
    again = await client.import_contacts(changed, checkpoint=journal, keep_results=True)
    assert (again.skipped, again.succeeded) == (2, 1)
    assert emulator.store.contact_count() == 3  # an upsert by UserData


async def test_a_checkpoint_belongs_to_one_job(client: DiallerClient, tmp_path: Path) -> None:
    journal = tmp_path / "job.db"
    await client.import_contacts(rows(1), checkpoint=journal, keep_results=True)
    with pytest.raises(ConfigurationError, match="belongs to another job"):
        await client.lock_contacts(user_data=["CRM-000000"], checkpoint=journal, keep_results=True)


@pytest.mark.parametrize("content", [b"UserData,Name\nCRM-1,Muster\n" * 50, b"\x00" * 4096])
async def test_a_file_that_is_not_a_checkpoint_is_a_configuration_error(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, content: bytes
) -> None:
    journal = tmp_path / "contacts.csv"  # e.g. the input file given as --checkpoint by mistake
    journal.write_bytes(content)
    with pytest.raises(ConfigurationError, match="not a checkpoint"):
        await client.import_contacts(rows(3), checkpoint=journal, keep_results=True)
    assert journal.read_bytes() == content  # left as it was
    assert emulator.store.contact_count() == 0


async def test_pending_writes_are_reconciled_on_resume(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    """A row journaled as sent-but-unconfirmed is looked up by UserData, never blindly resent."""
    journal = tmp_path / "job.db"
    await client.import_contacts(
        rows(2), checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    # Simulate a crash after sending row 0 (it landed) and row 1 (it did not), before their
    # outcomes were journaled: both rows are left PENDING, and row 1's contact is gone.
    edit_items(journal, "UPDATE items SET state='pending'")
    await client.delete_contact(user_data="CRM-000001")
    resumed = await client.import_contacts(
        rows(2), checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    by_index = {i.index: i for i in resumed.items or []}
    assert by_index[0].outcome is Outcome.SUCCEEDED and by_index[0].reconciled
    assert by_index[1].outcome is Outcome.SUCCEEDED and not by_index[1].reconciled
    assert emulator.store.contact_count(user_data="CRM-000000") == 1
    assert emulator.store.contact_count(user_data="CRM-000001") == 1


async def test_pending_without_user_data_stays_ambiguous(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "job.db"
    data = [{k: v for k, v in contact(0).items() if k != "UserData"}]
    await client.import_contacts(
        data, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    edit_items(journal, "UPDATE items SET state='pending'")
    resumed = await client.import_contacts(
        data, checkpoint=journal, overwrite_duplicates=False, keep_results=True
    )
    assert resumed.ambiguous == 1 and resumed.requests == 0
    assert emulator.store.contact_count() == 1


JOB = textwrap.dedent(
    """
    import asyncio, json, sys
    from dialler_async import DiallerClient, Limits

    base_url, token, journal, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rows = ({"Name": f"N{i}", "PhoneNumber1": f"+49{i:08d}", "UserData": f"K{i:06d}",
             "DiallerCampaignsID": 538} for i in range(n))

    async def main():
        async with DiallerClient(base_url, 1, token, limits=Limits(max_concurrency=8)) as c:
            r = await c.import_contacts(rows, overwrite_duplicates=False, checkpoint=journal,
                                        keep_results=False)
        print(json.dumps({k.value: v for k, v in r.counts.items()}), flush=True)

    asyncio.run(main())
    """
)


def _start_emulator(db_file: Path) -> tuple[subprocess.Popen[str], str]:
    """The emulator in a process of its own (10 ms a request, token ``kill-test``), for jobs
    killed by SIGKILL: the process and its base URL. The caller terminates it."""
    argv = [sys.executable, "-m", "dialler_async.emulator", "--port", "0", "--db", str(db_file)]
    server = subprocess.Popen(
        [*argv, "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIALLER_TOKEN": "kill-test"},
    )
    assert server.stdout is not None
    return server, server.stdout.readline().split(" on ")[1].split()[0]


def _wait_for_journal(journal: Path, entries: int, timeout: float = 120.0) -> None:
    """Poll the journal (read-only, beside the writer) until it holds ``entries`` outcomes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                seen = journal_entries(journal)  # read-only, items and the log
            except CheckpointError:  # not created yet
                seen = {}
            done = sum(entry.state != PENDING for entry in seen.values())
            if done >= entries:
                return
        time.sleep(0.02)
    raise AssertionError(f"the journal never showed {entries} outcomes")


def kill_then_finish(
    script: Path, base_url: str, journal: Path, n: int, kill_at: tuple[int, ...]
) -> dict[str, int]:
    """Run the job ``script`` against ``base_url``, SIGKILL it once its journal holds each of
    ``kill_at`` entries in turn (with writes in flight), then let one run finish: its counts."""
    command = [sys.executable, str(script), base_url, "kill-test", str(journal), str(n)]
    for progress in kill_at:
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            _wait_for_journal(journal, progress)
        finally:
            job.send_signal(signal.SIGKILL)
            job.wait()
    final = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    counts: dict[str, int] = json.loads(final.stdout.strip().splitlines()[-1])
    return counts


@pytest.mark.slow
def test_sigkill_and_resume_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    """Kill a plain (non-upsert) import with SIGKILL, several times, and resume it each time."""
    script = tmp_path / "job.py"
    script.write_text(JOB, encoding="utf-8")
    db_file, journal, n = tmp_path / "server.db", tmp_path / "job.db", 600
    server, base_url = _start_emulator(db_file)
    try:
        # Kill only once the journal shows progress (a fixed delay kills before row one on a
        # loaded machine), at three depths, each time with writes in flight.
        counts = kill_then_finish(script, base_url, journal, n, (100, 250, 400))
        assert sum(counts.values()) == n
        assert counts["skipped"] > 0 and counts["succeeded"] + counts["skipped"] == n
        # The journal agrees: one SUCCEEDED entry per row, folded or still in the log.
        assert states(journal) == {"succeeded": n}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    db = sqlite3.connect(db_file)
    per_key = db.execute("SELECT COUNT(*), COUNT(DISTINCT user_data) FROM contacts").fetchone()
    db.close()
    assert per_key == (n, n)  # every row landed exactly once


@pytest.mark.parametrize(
    "parts",
    [
        ("CRM-1", {"Name": "Müller", "PhoneNumber1": "+4930123", "DiallerCampaignsID": 538}),
        ("CRM-2", {"b": [1, 2.5, None, {"z": True, "a": "ß"}], "a": 2**63}),
        (17, 17),
        (None, {}),
    ],
)
def test_content_digests_are_those_of_the_previous_release(parts: tuple[Any, ...]) -> None:
    # A checkpoint written by the previous release must still match its rows: the digest of
    # text-keyed content is the same with and without orjson's OPT_NON_STR_KEYS.
    import hashlib

    import orjson

    from dialler_async._digests import stable_digest

    data = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    assert stable_digest(*parts) == int.from_bytes(
        hashlib.blake2b(data, digest_size=8).digest(), "big"
    )


def test_content_with_a_non_text_key_still_has_a_digest() -> None:
    import hashlib

    import orjson

    from dialler_async._digests import stable_digest

    # orjson refuses the non-text key without OPT_NON_STR_KEYS: the digest falls back to it,
    # and is the previous release's.
    with pytest.raises(TypeError):
        orjson.dumps(("k", {1: "one"}), option=orjson.OPT_SORT_KEYS)
    data = orjson.dumps(("k", {1: "one"}), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    assert stable_digest("k", {1: "one"}) == int.from_bytes(
        hashlib.blake2b(data, digest_size=8).digest(), "big"
    )
    with pytest.raises(TypeError):
        stable_digest("k", {"v": object()})
