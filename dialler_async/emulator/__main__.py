"""``python -m dialler_async.emulator``: run the emulator as a standalone server.

``main(argv)`` is the command line; ``serve(...)`` runs an emulator until SIGINT/SIGTERM
(or a given event), so another command line can reuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from dialler_async._routes import Routes
from dialler_async.emulator._config import EmulatorConfig
from dialler_async.emulator._emulator import Emulator
from dialler_async.emulator._faults import FaultKind

__all__ = ["HelpFormatter", "announce", "build_parser", "main", "resolve_token", "serve"]

TOKEN_ENV = "DIALLER_TOKEN"  # noqa: S105 (the variable's name, not a secret)


def announce(emu: Emulator) -> None:
    """Print the two start-up lines (address, then shell exports) and flush."""
    print(f"dialler emulator listening on {emu.base_url} client_id={emu.client_id}")
    print(
        f"export DIALLER_BASE_URL={shlex.quote(emu.base_url)}"
        f" DIALLER_CLIENT_ID={emu.client_id} DIALLER_TOKEN={shlex.quote(emu.token)}",
        flush=True,
    )


async def serve(
    *,
    config: EmulatorConfig | None = None,
    db: str | Path = ":memory:",
    client_id: int = 1,
    token: str | None = None,
    routes: Routes | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    ready: Callable[[Emulator], None] | None = announce,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM or until ``stop`` is set; ``ready`` runs once listening."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows: then only ``stop`` ends it.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        async with Emulator(
            config, db=db, client_id=client_id, token=token, routes=routes, host=host, port=port
        ) as emu:
            if ready is not None:
                ready(emu)
            await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _fault(text: str) -> tuple[FaultKind, float]:
    kind, sep, probability = text.partition("=")
    try:
        if not sep:
            raise ValueError("expected KIND=PROBABILITY")
        return FaultKind.parse(kind), float(probability)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown where there are any; the epilog keeps its line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


_EPILOG = """\
fault kinds (what the client sees):
  server_error     500 JSON error; nothing done
  unavailable      503 JSON error (Retry-After with --unavailable-retry-after); nothing done
  bad_gateway      502 HTML page, as from a proxy; nothing done
  gateway_timeout  504 HTML page, as from a proxy; nothing done
  gateway_timeout_after  request done and committed, then 504 HTML page, as from a proxy
  rate_limited     429 JSON error with Retry-After; nothing done
  drop_before      connection closed without an answer; nothing done
  drop_after       request done and committed, then connection closed without an answer
  slow             --slow-seconds delay, then done normally (commit held, answer late)
  invalid_json     request done, answered 200 with a truncated JSON body

operations (for --fault-operation and --routes):
  {operations}

example:
  python -m dialler_async.emulator --port 0 --db contacts.db \\
      --rate-limit 50 --fault server_error=0.01 --fault drop_after=0.01 --seed 1
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (``--help`` documents every flag)."""
    parser = argparse.ArgumentParser(
        prog="python -m dialler_async.emulator",
        description=(
            "Run a local emulator of the jtel ACD Dialler Contacts REST API: SQLite storage,\n"
            "optional rate limit, latency and injected faults. On start it prints one line\n"
            "'dialler emulator listening on URL client_id=N', then a line with the shell\n"
            "exports a client needs. SIGINT or SIGTERM stops it."
        ),
        epilog=_EPILOG.format(operations="\n  ".join(Routes.operations())),
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", metavar="HOST", help="interface to listen on")
    add("--port", type=int, default=8080, metavar="PORT", help="port; 0 picks a free one")
    add("--db", default=":memory:", metavar="FILE", help="SQLite file (kept) or :memory:")
    add("--client-id", type=int, default=1, metavar="N", help="the client account served")
    add(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=(
            "file holding the bearer token, created with a new random token if missing; "
            f"without it the token comes from ${TOKEN_ENV}, else a random one is generated"
        ),
    )
    add(
        "--routes",
        type=Path,
        metavar="FILE",
        help='JSON file of route overrides: {"operation": "METHOD /path"}',
    )
    add(
        "--rate-limit",
        type=float,
        metavar="R",
        help="at most R requests per second per client, sliding window; beyond: 429",
    )
    add("--retry-after", type=int, default=1, metavar="S", help="Retry-After sent with a 429")
    add("--latency", type=float, default=0.0, metavar="S", help="delay before each request")
    add(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="S",
        help="up to S more seconds of delay, uniformly random",
    )
    add(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND=P",
        help="inject fault KIND into each request with probability P (repeatable; see below)",
    )
    add(
        "--fault-operation",
        action="append",
        metavar="OPERATION",
        help="inject random faults only into this operation (repeatable; default: all)",
    )
    add("--seed", type=int, metavar="N", help="seed of random faults, jitter and dialling")
    add("--slow-seconds", type=float, default=5.0, metavar="S", help="delay of a slow fault")
    add(
        "--unavailable-retry-after",
        type=int,
        metavar="S",
        help="Retry-After sent with an injected 503 (default: none)",
    )
    add(
        "--capacity",
        type=int,
        metavar="K",
        help="serve at most K requests at once; the rest queue (latency grows with the queue)",
    )
    add(
        "--service-time",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds each request holds one of the --capacity slots",
    )
    add(
        "--queue-limit",
        type=int,
        metavar="N",
        help="with --capacity: answer 503 when N requests already wait",
    )
    add(
        "--keepalive-timeout",
        type=float,
        default=75.0,
        metavar="S",
        help="idle keep-alive connections are closed after S seconds",
    )
    return parser


def resolve_token(token_file: Path | None) -> str:
    """The token from ``token_file`` (written if missing), else $DIALLER_TOKEN, else new."""
    if token_file is not None:
        if token_file.exists():
            token = token_file.read_text(encoding="utf-8").strip()
            if not token:
                raise ValueError(f"{token_file} is empty")
            return token
        token = secrets.token_urlsafe(24)
        token_file.write_text(token + "\n", encoding="utf-8")
        return token
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator from the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = EmulatorConfig(
            rate_limit=args.rate_limit,
            retry_after=args.retry_after,
            latency=args.latency,
            latency_jitter=args.latency_jitter,
            faults=dict(args.fault),
            fault_operations=args.fault_operation,
            seed=args.seed,
            slow_seconds=args.slow_seconds,
            unavailable_retry_after=args.unavailable_retry_after,
            keepalive_timeout=args.keepalive_timeout,
            capacity=args.capacity,
            service_time=args.service_time,
            queue_limit=args.queue_limit,
        )
        routes = Routes.from_file(args.routes) if args.routes else None
        token = resolve_token(args.token_file)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(
            serve(
                config=config,
                db=args.db,
                client_id=args.client_id,
                token=token,
                routes=routes,
                host=args.host,
                port=args.port,
            )
        )
    except OSError as exc:  # e.g. the port is taken
        print(f"dialler emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
