"""Server subprocesses: start one, read its address from its first line, stop it.

Every server exits when its stdin closes, so a crashed benchmark cannot leave one behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r"(https?://\S+)")
_TOKEN = re.compile(r"token=(\S+)")


def cpu_plan() -> tuple[set[int], set[int]] | None:
    """``(client CPUs, server CPUs)``: the last CPU for servers, the rest for the client (this
    process and its children), so the two never compete for one core. None on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


def pin_client() -> dict[str, list[int]] | None:
    """Pin this process (and so the children it starts later) to the client CPUs."""
    plan = cpu_plan()
    if plan is None:
        return None
    client, server = plan
    os.sched_setaffinity(0, client)
    global _SERVER_CPUS
    _SERVER_CPUS = server
    return {"client": sorted(client), "server": sorted(server)}


_SERVER_CPUS: set[int] | None = None


class ServerProcess:
    """A server child process; ``url`` is the first URL it printed.

    ``ready_prefix`` is the start of the line announcing it listens. Lines it prints later
    are answers to commands sent with :meth:`command` (the emulator wrapper).
    """

    def __init__(self, module: str, *args: str, ready_prefix: str) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.ready_prefix = ready_prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ready_line = ""
        self._lock = threading.Lock()

    def start(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            cwd=ROOT,
            env=env,
        )
        if _SERVER_CPUS is not None:
            os.sched_setaffinity(self.proc.pid, _SERVER_CPUS)
        while True:
            line = self._stdout.readline().decode()
            if not line:
                raise RuntimeError(f"{self.argv} exited before it was ready")
            if line.startswith(self.ready_prefix):
                break
        self.ready_line = line.strip()
        match = _URL.search(line)
        if match is None:
            raise RuntimeError(f"no URL in {line!r}")
        self.url = match[1]
        return self

    @property
    def token(self) -> str:
        """The ``token=`` the server announced (the emulator wrapper), else ''."""
        match = _TOKEN.search(self.ready_line)
        return match[1] if match else ""

    @property
    def _stdout(self) -> IO[bytes]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return self.proc.stdout

    def command(self, cmd: str, **args: Any) -> Any:
        """Send one JSON command line and return the decoded JSON answer line."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
            self.proc.stdin.flush()
            line = self._stdout.readline()
        if not line:
            raise RuntimeError(f"{self.argv} died")
        return orjson.loads(line)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def fast_server(latency: float = 0.0, record: bool = False) -> ServerProcess:
    args = ["--latency", str(latency)] + (["--record"] if record else [])
    return ServerProcess("benchmarks._fast_server", *args, ready_prefix="fast server listening")


def emulator(seed: int = 1) -> ServerProcess:
    return ServerProcess(
        "benchmarks._emu_server", "--seed", str(seed), ready_prefix="dialler emulator listening"
    )
