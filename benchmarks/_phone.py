"""(9) Phone numbers: what a ``PhonePolicy`` costs per contact, the SDK's throughput with a
policy on against the hand-written aiohttp loop (which normalises nothing), and the memory of a
large suppression list (built in a fresh child process)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import aiohttp_loop, sdk
from benchmarks._payloads import CAMPAIGN_ID, contact
from benchmarks._procs import fast_server
from benchmarks._stats import Log, cpus, interleave, rates, ratio, spread, summarize
from dialler_async import PhonePolicy
from dialler_async._screen import PhoneScreen
from dialler_async._validation import checked_contact

POLICY = PhonePolicy("DE")


def national(i: int) -> dict[str, Any]:
    """A benchmark contact with its numbers as a CRM export types them (national format)."""
    row = contact(i, "phone")
    row["PhoneNumber1"] = f"030 {i % 100_000_000:08d}"
    row["PhoneNumber2"] = f"(0171) {i % 10_000_000:07d}"
    row["DiallerCampaignsID"] = CAMPAIGN_ID
    return row


def _per_contact(fn: Callable[[dict[str, Any]], object], rows: list[dict[str, Any]]) -> float:
    t0 = time.process_time()
    for row in rows:
        fn(row)
    return (time.process_time() - t0) / len(rows) * 1e6


def e164(i: int) -> dict[str, Any]:
    """The same contact with its numbers already in E.164 (``+4930…``)."""
    return {**contact(i, "phone"), "DiallerCampaignsID": CAMPAIGN_ID}


def cpu_per_contact(n: int, reps: int) -> dict[str, Any]:
    """Client CPU to prepare one contact (2 numbers) without a policy, and with one for
    numbers typed nationally and in E.164, interleaved."""
    national_rows = [national(i) for i in range(n)]
    e164_rows = [e164(i) for i in range(n)]
    runs: dict[str, list[float]] = {"plain": [], "national": [], "e164": []}
    for rep in range(reps + 1):
        measured = {
            "plain": _per_contact(checked_contact, national_rows),
            "national": _per_contact(PhoneScreen(POLICY).check, national_rows),
            "e164": _per_contact(PhoneScreen(POLICY).check, e164_rows),
        }
        if rep:  # the first round warms up (metadata loading)
            for name, value in measured.items():
                runs[name].append(value)
    return {
        "contacts": n,
        "numbers_per_contact": 2,
        "without_policy_us": spread(runs["plain"]),
        "national_us": spread(runs["national"]),
        "e164_us": spread(runs["e164"]),
        "added_national_us": spread(
            [b - a for a, b in zip(runs["plain"], runs["national"], strict=True)]
        ),
        "added_e164_us": spread([b - a for a, b in zip(runs["plain"], runs["e164"], strict=True)]),
    }


async def _compare(
    sizes: Sizes, log: Log, data: list[dict[str, Any]], latency: float
) -> dict[str, Any]:
    c = sizes.concurrency
    with fast_server(latency=latency) as server:
        base = server.url + "/rest/v1.0"
        runs = await interleave(
            {
                "sdk+policy": lambda: sdk(base, TOKEN, data, c, phone_policy=POLICY),
                "sdk": lambda: sdk(base, TOKEN, data, c),
                "aiohttp": lambda: aiohttp_loop(base, TOKEN, data, c),
            },
            sizes.reps,
            log=log,
        )
    return {
        "latency": latency,
        "contenders": {name: summarize(r) for name, r in runs.items()},
        "ratios": {
            "sdk+policy/aiohttp": {
                "throughput": ratio(rates(runs["sdk+policy"]), rates(runs["aiohttp"])),
                "cpu_per_contact": ratio(cpus(runs["sdk+policy"]), cpus(runs["aiohttp"])),
            },
            "sdk+policy/sdk": {
                "throughput": ratio(rates(runs["sdk+policy"]), rates(runs["sdk"])),
                "cpu_per_contact": ratio(cpus(runs["sdk+policy"]), cpus(runs["sdk"])),
            },
        },
    }


def suppression_memory(n: int, form: str = "e164") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._suppress_child", str(n), form],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    log("    CPU per contact")
    cpu = cpu_per_contact(sizes.phone_cpu_n, sizes.reps)
    log(
        f"      {cpu['national_us']['median']:.1f} µs national, {cpu['e164_us']['median']:.1f} µs "
        f"E.164, {cpu['without_policy_us']['median']:.1f} µs without a policy"
    )
    national_rows = [national(i) for i in range(sizes.overhead_n)]
    log("    fast server (client-CPU-bound)")
    fast = await _compare(sizes, log, national_rows, 0.0)
    log(f"    server latency {sizes.latency * 1000:g} ms")
    slow_rows = national_rows[: sizes.concurrency * sizes.latency_rounds]
    slow = await _compare(sizes, log, slow_rows, sizes.latency)
    log("    suppression list memory")
    memory = suppression_memory(sizes.suppress_n)
    parse = suppression_memory(sizes.suppress_national_n, "national")
    return {
        "concurrency": sizes.concurrency,
        "cpu": cpu,
        "fast": fast,
        "latency": slow,
        "suppression": memory,
        "suppression_national": parse,
    }
