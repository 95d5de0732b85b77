"""The ``Emulator``: a real HTTP server on loopback, with its store, stats and faults."""

from __future__ import annotations

import importlib
import random
import secrets
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from dialler_async._routes import Routes
from dialler_async.emulator._app import BASE_PATH, Settings, build_app
from dialler_async.emulator._capacity import Capacity
from dialler_async.emulator._config import EmulatorConfig
from dialler_async.emulator._dial import dial
from dialler_async.emulator._faults import Faults, RateLimiter, Stats
from dialler_async.emulator._ops import Operations
from dialler_async.emulator._store import Store

if TYPE_CHECKING:  # only for the annotation: at run time the emulator never imports the client
    from dialler_async._client import DiallerClient

__all__ = ["Emulator"]


class Emulator:
    """A Dialler Contacts API server for tests, demos and benchmarks.

    ::

        async with Emulator(EmulatorConfig(rate_limit=50)) as emu:
            async with emu.client() as client:
                ...
            assert emu.store.contact_count() == 1

    ``db`` is ``":memory:"`` (the default) or a SQLite file that outlives the emulator.
    ``token`` defaults to a fresh random one; ``port=0`` picks a free port (see ``port``).
    ``stats`` and ``faults`` exist from construction, so faults can be scripted before
    ``start()``; ``store`` exists while the emulator runs.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        db: str | Path = ":memory:",
        client_id: int = 1,
        token: str | None = None,
        routes: Routes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._config = config or EmulatorConfig()
        self.db = db
        self.client_id = client_id
        self.token = token or secrets.token_urlsafe(24)
        self.routes = routes or Routes()
        self.host = host
        self._port = port
        self.stats = Stats(self._config.arrivals_maxlen)
        self.faults = Faults(self.stats, Routes.operations(), self._config.seed)
        self._limiter = RateLimiter()
        self._capacity = Capacity(lambda: self._settings.config.capacity)
        self._settings = Settings(self._config, self._tokens(self._config))
        self._dial_rng = random.Random(self._config.seed)
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None

    # -- configuration --------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change knobs at runtime (next request on); returns the new configuration.

        Example: ``emu.configure(rate_limit=5)`` mid-run, ``emu.configure(rate_limit=None)``
        to lift it. A new ``seed`` reseeds the fault and dialling generators.
        """
        config = attrs.evolve(self._config, **changes)
        if "seed" in changes:
            self.faults.reseed(config.seed)
            self._dial_rng.seed(config.seed)
        if "rate_limit" in changes:
            self._limiter.reset()
        self._config = config
        self._settings.config = config
        self._settings.tokens = self._tokens(config)
        self._capacity.wake()  # a raised capacity admits waiting requests at once
        return config

    def _tokens(self, config: EmulatorConfig) -> dict[str, str]:
        tokens = {token: str(client) for client, token in config.extra_clients.items()}
        tokens[self.token] = str(self.client_id)
        return tokens

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served on (the one picked by the OS when constructed with 0)."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running")
        address = self._runner.addresses[0]
        port: int = address[1]
        return port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/rest/v1.0``; clients append ``/{client_id}``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{BASE_PATH}"

    def url(self, path: str = "", client_id: int | None = None) -> str:
        """The full URL of ``path`` (a route path) for ``client_id`` (default: own client)."""
        return f"{self.base_url}/{self.client_id if client_id is None else client_id}{path}"

    @property
    def store(self) -> Store:
        """The database, for seeding and assertions (only while running)."""
        if self._store is None:
            raise RuntimeError("the emulator is not running")
        return self._store

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Emulator:
        """Open the store, seed the campaigns and start serving; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        store = Store(self.db)
        try:
            for seed in self._config.campaigns:
                owner = seed[2] if len(seed) == 3 else self.client_id
                store.add_campaign(seed[0], seed[1], owner, replace=False)
            if self.stats.arrivals.maxlen != self._config.arrivals_maxlen:
                self.stats.arrivals = type(self.stats.arrivals)(
                    self.stats.arrivals, maxlen=self._config.arrivals_maxlen
                )
            app = build_app(
                routes=self.routes,
                operations=Operations(store).table(),
                settings=self._settings,
                stats=self.stats,
                faults=self.faults,
                limiter=self._limiter,
                capacity=self._capacity,
            )
            runner = web.AppRunner(
                app,
                access_log=None,
                keepalive_timeout=self._config.keepalive_timeout,
                shutdown_timeout=self._config.shutdown_timeout,
            )
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, self._port).start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            store.close()
            raise
        self._store, self._runner = store, runner
        return self

    async def stop(self) -> None:
        """Stop serving and close the store (a file database keeps its data)."""
        runner, store = self._runner, self._store
        self._runner = self._store = None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            if store is not None:
                store.close()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- simulation and clients -----------------------------------------------------------

    async def dial(
        self, rounds: int = 1, *, seed: int | None = None, client_id: int | None = None
    ) -> int:
        """Simulate ``rounds`` dialling rounds; returns how many calls were made.

        Every unlocked contact with a phone number (of ``client_id``, default all clients)
        gets one call per round: a history entry and updated counters, last cause, result
        code and ``dtNextTry``. ``seed`` makes this call's outcomes reproducible; without
        it the emulator's generator (seeded by ``config.seed``) is used. The work is
        synchronous SQLite; the method is a coroutine so it can later yield between rounds.
        """
        rng = self._dial_rng if seed is None else random.Random(seed)
        return dial(self.store, rng, rounds, client_id=client_id)

    def client(self, **kwargs: Any) -> DiallerClient:
        """A ``DiallerClient`` for this emulator; ``kwargs`` go to its constructor.

        The client gets the emulator's ``routes`` unless ``kwargs`` names others, so an
        overridden route moves on both sides.
        """
        # Imported lazily, by name: the emulator must import (and type-check) without the
        # client, and the client's package imports nothing from here.
        module = importlib.import_module("dialler_async._client")
        kwargs.setdefault("routes", self.routes)
        client: DiallerClient = module.DiallerClient(
            base_url=self.base_url, client_id=self.client_id, token=self.token, **kwargs
        )
        return client
