"""A local Dialler Contacts API server: real HTTP on loopback, SQLite storage, faults on demand.

Use it in tests (``pytest_plugins = ["dialler_async.emulator.pytest_plugin"]`` gives the
``dialler_emulator`` fixture), in demos (``python -m dialler_async.emulator``) and in
benchmarks (seeded random faults, a rate limit, latency, and ``Stats`` of what arrived).
It serves the same ``Routes`` table as the client, so overriding a route moves it on both
sides. Behaviour follows section 10.2 of the API notes.
"""

from dialler_async.emulator._config import EmulatorConfig
from dialler_async.emulator._emulator import Emulator
from dialler_async.emulator._faults import FaultKind, Stats

__all__ = ["Emulator", "EmulatorConfig", "FaultKind", "Stats"]
