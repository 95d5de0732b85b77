"""A/B of two checkouts of the SDK: ``python -m benchmarks._ab OTHER_ROOT [--reps 5] [--n 5000]``.

Each run is a fresh subprocess importing ``dialler_async`` from one checkout (this one, or
``OTHER_ROOT``, e.g. a worktree of main), alternating A, B, A, B against one fast server, with
default options and with the streaming options. Prints medians and the per-repetition ratio of
client CPU per contact (this checkout / the other). Not part of ``python -m benchmarks``: it needs
two checkouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(root: str, url: str, n: int, mode: str) -> None:
    sys.path.insert(0, root)
    from benchmarks._payloads import CAMPAIGN_ID, contacts
    from dialler_async import DiallerClient, Limits

    data = list(contacts(n, "ab"))
    opts = {"keep_results": False, "detect_duplicates": False} if mode == "streaming" else {}

    async def main() -> dict[str, float]:
        async with DiallerClient(url, 1, "t", limits=Limits(max_concurrency=32)) as c:
            await c.import_contacts(data[:500], campaign_id=CAMPAIGN_ID, **opts)  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            r = await c.import_contacts(data, campaign_id=CAMPAIGN_ID, **opts)
            e, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert r.succeeded == n
        return {"rate": n / e, "cpu_us": cpu / n * 1e6}

    print(json.dumps(asyncio.run(main())))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._ab")
    parser.add_argument("other", help="root of the other checkout (its dialler_async/ is B)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, url, mode = args.child
        child(root, url, args.n, mode)
        return
    from benchmarks._procs import fast_server, pin_client

    pin_client()
    roots = {"this": str(HERE), "other": str(Path(args.other).resolve())}
    out: dict[str, list[dict[str, float]]] = {}
    with fast_server() as server:
        url = server.url + "/rest/v1.0"
        for rep in range(args.reps):
            for mode in ("default", "streaming"):
                for name, root in roots.items():
                    argv = [sys.executable, "-m", "benchmarks._ab", "x", "--n", str(args.n)]
                    done = subprocess.run(
                        [*argv, "--child", root, url, mode],
                        cwd=HERE,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    r = json.loads(done.stdout)
                    out.setdefault(f"{mode}/{name}", []).append(r)
                    print(rep, mode, name, round(r["rate"]), round(r["cpu_us"], 1), flush=True)
    for key, runs in out.items():
        rate = statistics.median(x["rate"] for x in runs)
        cpu = statistics.median(x["cpu_us"] for x in runs)
        print(f"{key}: {rate:.0f} contacts/s, {cpu:.1f} µs CPU per contact")
    for mode in ("default", "streaming"):
        pairs = zip(out[f"{mode}/other"], out[f"{mode}/this"], strict=True)
        ratios = [b["cpu_us"] / a["cpu_us"] for a, b in pairs]
        print(f"{mode}: CPU this/other per-rep median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
