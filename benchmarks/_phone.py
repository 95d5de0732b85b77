"""(9) Phone numbers: what a ``PhonePolicy`` costs per contact, the SDK's throughput with a
policy on against the hand-written aiohttp loops (``naive`` and the worker pool with orjson;
both normalise nothing), and the memory of a large suppression list and of ``dedupe_phone``'s
set (each built in a fresh child process)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import aiohttp_loop, pool_orjson, sdk
from benchmarks._payloads import CAMPAIGN_ID, contact
from benchmarks._procs import fast_server
from benchmarks._stats import Log, cpus, interleave, rates, ratio, spread, summarize
from dialler_async import PhonePolicy
from dialler_async._operations import Import
from dialler_async._phones import normalise
from dialler_async._screen import PhoneScreen

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


def switchboard(i: int) -> dict[str, Any]:
    """A CRM export's contact: its own number, and its company's switchboard as the second
    (20 contacts a company), both typed nationally."""
    row = national(i)
    row["PhoneNumber2"] = f"030 {9_000_000 + i // 20:07d}"
    return row


def _prepare(policy: bool) -> Callable[[dict[str, Any]], object]:
    """``Import.prepare`` as a bulk job runs it, with or without the policy's screen."""
    rules = Import(overwrite_duplicates=True, campaign_id=None, campaign_name=None)
    if policy:
        rules.phones = PhoneScreen(POLICY)
    return rules.prepare


def _numbers_only(row: dict[str, Any]) -> None:
    """Normalisation alone: the library's work on the row's two numbers, no memo."""
    normalise(row["PhoneNumber1"], POLICY)
    normalise(row["PhoneNumber2"], POLICY)


def cpu_per_contact(n: int, reps: int) -> dict[str, Any]:
    """Client CPU to prepare one contact (2 numbers) as a bulk import does, without a policy
    and with one, for numbers typed nationally, in E.164, and nationally with a repeated
    switchboard number; and normalisation's own cost (two numbers, no memo), interleaved."""
    sets = {
        "national": [national(i) for i in range(n)],
        "e164": [e164(i) for i in range(n)],
        "switchboard": [switchboard(i) for i in range(n)],
    }
    runs: dict[str, list[float]] = {}
    for rep in range(reps + 1):
        measured = {"normalise_only_national": _per_contact(_numbers_only, sets["national"])}
        for name, rows in sets.items():
            measured[f"{name}_without_policy"] = _per_contact(_prepare(False), rows)
            measured[f"{name}_with_policy"] = _per_contact(_prepare(True), rows)
        if rep:  # the first round warms up (metadata loading)
            for name, value in measured.items():
                runs.setdefault(name, []).append(value)
    out: dict[str, Any] = {"contacts": n, "numbers_per_contact": 2}
    out.update({f"{name}_us": spread(values) for name, values in runs.items()})
    for name in sets:
        added = zip(runs[f"{name}_without_policy"], runs[f"{name}_with_policy"], strict=True)
        out[f"added_{name}_us"] = spread([b - a for a, b in added])
    return out


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
                "pool_orjson": lambda: pool_orjson(base, TOKEN, data, c),
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
            "sdk+policy/pool_orjson": {
                "throughput": ratio(rates(runs["sdk+policy"]), rates(runs["pool_orjson"])),
                "cpu_per_contact": ratio(cpus(runs["sdk+policy"]), cpus(runs["pool_orjson"])),
            },
            "sdk+policy/sdk": {
                "throughput": ratio(rates(runs["sdk+policy"]), rates(runs["sdk"])),
                "cpu_per_contact": ratio(cpus(runs["sdk+policy"]), cpus(runs["sdk"])),
            },
        },
    }


def suppression_memory(n: int, form: str = "e164") -> dict[str, Any]:
    """``form``: "e164" or "national" lines for a suppression list; "dedupe" for the set of
    numbers ``dedupe_phone`` keeps."""
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
        f"      added by the policy: {cpu['added_national_us']['median']:.1f} µs national, "
        f"{cpu['added_e164_us']['median']:.1f} µs E.164, "
        f"{cpu['added_switchboard_us']['median']:.1f} µs with a switchboard number; "
        f"normalisation alone {cpu['normalise_only_national_us']['median']:.1f} µs"
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
    dedupe = suppression_memory(sizes.suppress_n, "dedupe")
    return {
        "concurrency": sizes.concurrency,
        "cpu": cpu,
        "fast": fast,
        "latency": slow,
        "suppression": memory,
        "suppression_national": parse,
        "dedupe": dedupe,
    }
