"""Sync vs a full re-import, and the memory of sync/export (``python -m benchmarks._sync_bench``).

A 100,000-contact campaign, an input with 2% of the rows changed, a server that admits at most
``--rate`` requests per second (the client is set to the same rate, so neither run is
throttled): wall time and requests of ``sync`` against a full re-import of the same file, each
client in its own process; then the peak RSS growth of ``sync`` and of a streamed export at
100k and 300k contacts. Runs are interleaved; medians are reported.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._emu_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().decode().split()
        self.url = words[4]
        self.client_id = words[5].split("=")[1]
        self.token = words[6].split("=", 1)[1]

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(command) + b"\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = orjson.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def write_input(path: Path, n: int, changed_every: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["UserData", "Name", "FirstName", "City", "PhoneNumber1"])
        for i in range(n):
            city = "Hamburg" if i % changed_every == 0 else "Berlin"
            writer.writerow([f"S{i:07d}", f"Name{i}", "Max", city, f"+4930{i:08d}"])


def child(server: Server, mode: str, path: Path, rate: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks._sync_child",
            mode,
            server.url,
            server.client_id,
            server.token,
            str(path),
            str(rate),
        ],
        check=True,
        capture_output=True,
    )
    result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    print(orjson.dumps(result).decode(), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._sync_bench")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=300_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true", help="only sync vs re-import")
    args = parser.parse_args(argv)
    server = Server()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "input.csv"
            write_input(source, args.contacts, changed_every=50)  # 2% changed
            server.ask(cmd="configure", changes={"rate_limit": args.rate})
            for _ in range(args.repeats):
                for mode in ("sync", "reimport"):
                    server.ask(cmd="seed", n=args.contacts)
                    results.setdefault(mode, []).append(child(server, mode, source, args.rate))
            server.ask(cmd="configure", changes={"rate_limit": None})
            for n in () if args.skip_memory else (args.contacts, args.big):
                server.ask(cmd="seed", n=n)
                export = child(server, "export", Path(tmp) / "export.csv", 1e6)
                results.setdefault(f"export {n}", []).append(export)
                big = Path(tmp) / f"input{n}.csv"
                write_input(big, n, changed_every=50)
                results.setdefault(f"sync {n}", []).append(child(server, "sync", big, 1e6))
    finally:
        server.close()
    sync = statistics.median(r["elapsed"] for r in results["sync"])
    full = statistics.median(r["elapsed"] for r in results["reimport"])
    sent, resent = results["sync"][0]["requests"], results["reimport"][0]["requests"]
    print(
        f"sync {sync:.1f}s, {sent} requests; re-import {full:.1f}s, {resent} requests; "
        f"time ratio {full / sync:.1f}x, request ratio {resent / sent:.1f}x"
    )
    for key in sorted(k for k in results if k.startswith(("export ", "sync "))):
        growth = statistics.median(r["growth_mb"] for r in results[key])
        print(f"{key}: peak RSS growth {growth:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
