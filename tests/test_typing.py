"""The typed surface: mypy catches a misspelt or mistyped bulk option before the job runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SNIPPET = textwrap.dedent(
    """\
    from dialler_async import DiallerClient, StreamOptions
    from dialler_async.emulator import Emulator


    async def job(client: DiallerClient, emu: Emulator) -> None:
        await client.import_contacts([], max_failures=3, campaign_id=538, rate=5.0)
        options: StreamOptions = {"by_user_data": True, "concurrency": 4}
        client.stream("lock", ["K"], **options)
        async with emu.client() as typed:
            reveal_type(typed)
        await client.import_contacts([], max_failure=3)
        await client.lock_contacts(ids=[1], max_failures="3")
        await client.update_contacts([], on_error="ignore")
        client.stream("import", [], campaign_nam="Spring Campaign")
    """
)


@pytest.mark.slow
def test_mypy_flags_misspelt_and_mistyped_bulk_options(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # The package as source: an editable install's import hook is invisible to mypy.
        env={**os.environ, "MYPYPATH": str(REPO)},
        timeout=300,
        check=False,
    )  # fmt: skip
    out = run.stdout
    errors = {int(m[1]): m[2] for m in re.finditer(r"snippet\.py:(\d+): error: (.*)", out)}
    # Lines 6-8 are correct and must stay clean; each of lines 11-14 is one mistake.
    assert sorted(errors) == [11, 12, 13, 14], out
    assert '"max_failure"' in errors[11] and 'did you mean "max_failures"' in errors[11]
    assert '"max_failures"' in errors[12] and '"int | None"' in errors[12]
    assert '"on_error"' in errors[13]
    assert '"campaign_nam"' in errors[14]
    assert 'Revealed type is "dialler_async._client.DiallerClient"' in out
