"""``dialler-async``: the command line for bulk dialler contact work.

``main(argv)`` runs one command and returns its exit status (0 all done, 1 some rows failed,
2 usage or configuration error, 130 interrupted). See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from rich.console import Console

from .._exceptions import AuthenticationError, ConnectError, DiallerError, NotFoundError
from .._runner import run as run_loop
from ..emulator.__main__ import main as emulator_main
from . import _probe, _read, _sync
from ._args import build_parser
from ._commands import bulk_command
from ._connect import REST_SUFFIX, UsageError, setup_logging, wrong_base_url
from ._input import InputError
from ._progress import err_console, note

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Console], Awaitable[int]]

_COMMANDS: dict[str, Command] = {
    "import": bulk_command,
    "update": bulk_command,
    "delete": bulk_command,
    "lock": bulk_command,
    "unlock": bulk_command,
    "reset": bulk_command,
    "sync": _sync.sync_command,
    "export": _read.export,
    "get": _read.get,
    "find": _read.find,
    "history": _read.history,
    "campaigns": _read.campaigns,
    "probe": _probe.probe,
}


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


async def _run(args: argparse.Namespace, console: Console) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminate = False
    if task is not None:  # SIGTERM winds down like Ctrl-C (asyncio.run handles SIGINT)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            terminate = True
    try:
        return await _COMMANDS[args.command](args, console)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        note(console, "Interrupted.", "bold yellow")
        return 130
    except (UsageError, InputError) as exc:
        note(console, f"error: {exc}", "bold red")
        return 2
    except AuthenticationError as exc:
        note(
            console,
            f"error: the server refused the token ({exc}); check DIALLER_TOKEN/DIALLER_TOKEN_FILE "
            "and DIALLER_CLIENT_ID",
            "bold red",
        )
        return 2
    except ConnectError as exc:
        note(console, f"error: cannot reach the server: {exc}; check DIALLER_BASE_URL", "bold red")
        return 2
    except NotFoundError as exc:
        if not exc.route_missing:
            raise
        base_url = os.environ.get("DIALLER_BASE_URL", "")
        using_env = not (args.emulator or args.emulator_db)
        if using_env and base_url and not base_url.rstrip("/").endswith(REST_SUFFIX):
            what = f"{exc.method} {exc.path} answered 404 with an empty body (no such endpoint)"
            note(console, f"error: {wrong_base_url(base_url, what)}", "bold red")
            return 2
        note(
            console,
            f"error: {exc}. The server has no such endpoint: run `dialler-async probe` and "
            "override the route with --routes FILE (see docs/cli.md)",
            "bold red",
        )
        return 1
    except DiallerError as exc:
        note(console, f"error: {exc}", "bold red")
        return 1
    finally:
        if terminate:
            loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)
    if args.command == "emulator":
        try:
            return emulator_main(argv[argv.index("emulator") + 1 :])
        except SystemExit as exc:
            return _exit_code(exc)
    console = err_console()
    setup_logging(args.log_level, console)
    try:
        return run_loop(_run(args, console))  # uvloop where installed (the speed extra)
    except BrokenPipeError:
        # Whoever read stdout stopped (`export | head`): they have all they wanted. Point
        # stdout at /dev/null so the interpreter's last flush does not fail once more.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        note(
            console,
            "Interrupted again before the job could wind down; what was recorded in the "
            "checkpoint is kept: run the same command to resume.",
            "bold yellow",
        )
        return 130
    except (UsageError, InputError) as exc:
        note(console, f"error: {exc}", "bold red")
        return 2
    except Exception as exc:  # a bug, not a user's mistake: one line, the traceback on request
        if args.log_level == "debug":
            raise
        note(
            console,
            f"error: unexpected {type(exc).__name__}: {exc}. Run the same command with "
            "--log-level debug for the traceback, and please report it.",
            "bold red",
        )
        return 1
