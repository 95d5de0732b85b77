"""One contender's bulk import against the fast server, for counting its instructions.

Wall-clock ratios on a shared 2-core machine move by ±10% from run to run; the instructions the
client process executes per row do not. Run this under ``valgrind --tool=callgrind`` (which
follows only the client: the fast server is a child process it does not trace) at two sizes,
and divide the difference by the difference in rows: that is the client's cost per row, fixed
costs (start-up, warm-up, the server's start) cancelled out::

    for n in 500 2500; do
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
            python -m benchmarks._instructions sdk $n 2>&1 | grep Collected
    done

Contenders: ``pool`` (the worker-pool hand loop with orjson, ``pool_orjson``), ``pool_bytes``
(the same with the body pre-encoded, the URL parsed once, ``resp.read()``; and its variants
``pool_bytes_limit0``, ``pool_bytes_lean_headers``, ``pool_bytes_no_total_timeout``),
``sdk`` (default options), ``streaming`` (the streaming options), ``checkpoint`` (default
options and ``checkpoint=``). Under valgrind the client runs ~50x slower than the server, so it
always finds answers waiting; the counts are the client's own work per row, not a model of its
scheduling.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._config import TOKEN
from benchmarks._contenders import STREAMING, Run, pool_bytes, pool_orjson, sdk, sdk_checkpoint
from benchmarks._payloads import contacts
from benchmarks._procs import fast_server

CONCURRENCY = 32


def _contender(name: str, url: str) -> Callable[[list[dict[str, Any]]], Awaitable[Run]]:
    return {
        "pool": lambda rows: pool_orjson(url, TOKEN, rows, CONCURRENCY),
        "pool_bytes": lambda rows: pool_bytes(url, TOKEN, rows, CONCURRENCY),
        # variants of pool_bytes: what aiohttp's options cost per request
        "pool_bytes_limit0": lambda rows: pool_bytes(
            url, TOKEN, rows, CONCURRENCY, connector_limit=0
        ),
        "pool_bytes_lean_headers": lambda rows: pool_bytes(
            url,
            TOKEN,
            rows,
            CONCURRENCY,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        ),
        "pool_bytes_no_total_timeout": lambda rows: pool_bytes(
            url,
            TOKEN,
            rows,
            CONCURRENCY,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        ),
        "sdk": lambda rows: sdk(url, TOKEN, rows, CONCURRENCY),
        "streaming": lambda rows: sdk(url, TOKEN, rows, CONCURRENCY, **STREAMING),
        "checkpoint": lambda rows: sdk_checkpoint(url, TOKEN, rows, CONCURRENCY),
    }[name]


async def _main(name: str, n: int) -> None:
    with fast_server() as server:
        run = await _contender(name, server.url + "/rest/v1.0")(list(contacts(n, "instr")))
    if run.ok != n:
        raise SystemExit(f"{name}: {run.ok} of {n} succeeded")


#: The contenders ``python -m benchmarks`` counts (section "instructions"), and the SDK rows'
#: issue 16 targets against ``pool`` (pool_orjson): CPU ratio = pool's count / the row's.
SECTION_CONTENDERS = ("pool", "pool_bytes", "sdk", "streaming", "checkpoint")
TARGETS = {"sdk": 0.95, "streaming": 1.0, "checkpoint": 0.90}
SIZES = (500, 2500)


def _count(name: str, rows: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks._instructions",
            name,
            str(rows),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collected(proc: subprocess.Popen[str]) -> int:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"valgrind failed ({proc.returncode}): {err[-500:]}")
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"no instruction count in valgrind's output: {err[-500:]}")


def run(reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Each contender's client instructions per row, ``reps`` counts each, interleaved (the
    two sizes of one count run side by side: only the client is counted); None where valgrind
    is not installed."""
    if reps <= 0 or shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed" if reps > 0 else "not in this run"}
    counts: dict[str, list[float]] = {name: [] for name in SECTION_CONTENDERS}
    for rep in range(reps):
        for name in SECTION_CONTENDERS:
            small, large = (_count(name, rows) for rows in SIZES)
            per_row = (_collected(large) - _collected(small)) / (SIZES[1] - SIZES[0])
            counts[name].append(per_row)
            log(f"    count {rep + 1}/{reps} {name:<12} {per_row / 1000:8.1f}k instructions/row")
    medians = {name: statistics.median(values) for name, values in counts.items()}
    return {
        "sizes": SIZES,
        "reps": reps,
        "per_row": {
            name: {"median": medians[name], "min": min(v), "max": max(v)}
            for name, v in counts.items()
        },
        "cpu_ratio_to_pool_orjson": {name: medians["pool"] / medians[name] for name in TARGETS},
        "cpu_ratio_to_pool_bytes": {
            name: medians["pool_bytes"] / medians[name] for name in TARGETS
        },
    }


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m benchmarks._instructions CONTENDER ROWS")
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
