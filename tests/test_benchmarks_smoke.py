"""The benchmark suite's smoke run: ``python -m benchmarks --quick`` exits 0 and writes JSON.

No timing is asserted: the numbers of a smoke run on a shared CI machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmarks_run_and_write_json(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # generous: a loaded 2-core CI machine ran it in ~230 s
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "quick.json").read_text(encoding="utf-8"))
    assert result["mode"] == "quick"
    assert result["errors"] == {}
    for section in (
        "overhead",
        "conversion",
        "latency",
        "memory",
        "rate",
        "faults",
        "profile",
        "limiter",
    ):
        assert section in result, section
    assert {t["status"] for t in result["targets"]} <= {"PASS", "FAIL", "N/A"}
    plot = tmp_path / "throughput_vs_concurrency.png"
    if importlib.util.find_spec("matplotlib") is None:  # the test extra leaves it out
        assert not plot.exists() and "no plot: matplotlib is not installed" in done.stdout
    else:
        assert plot.stat().st_size > 0
