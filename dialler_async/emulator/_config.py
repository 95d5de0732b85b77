"""The emulator's knobs. Every fault, limit and delay is off by default."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from dialler_async._routes import Routes
from dialler_async.emulator._faults import FaultKind

__all__ = ["DEFAULT_CAMPAIGNS", "CampaignSeed", "EmulatorConfig"]

#: ``(ID, Name)`` for a campaign of the emulator's own client, or ``(ID, Name, ClientsID)``.
CampaignSeed = tuple[int, str] | tuple[int, str, int]

DEFAULT_CAMPAIGNS: Final[tuple[CampaignSeed, ...]] = (
    (538, "Spring Campaign"),
    (539, "Summer Campaign"),
    (540, "Autumn Campaign"),
)


def _campaigns(value: Iterable[CampaignSeed]) -> tuple[CampaignSeed, ...]:
    seeds = tuple(value)
    for seed in seeds:
        if len(seed) not in (2, 3) or not isinstance(seed[0], int) or not isinstance(seed[1], str):
            raise ValueError(f"campaign seed must be (id, name) or (id, name, client_id): {seed!r}")
    return seeds


def _clients(value: Mapping[int, str]) -> dict[int, str]:
    clients = {int(k): str(v) for k, v in value.items()}
    if any(not token for token in clients.values()):
        raise ValueError("extra_clients tokens must not be empty")
    return clients


def _fault_map(value: Mapping[FaultKind, float] | Mapping[str, float]) -> dict[FaultKind, float]:
    faults = {FaultKind.parse(k): float(p) for k, p in value.items()}
    if any(not 0.0 <= p <= 1.0 for p in faults.values()):
        raise ValueError(f"fault probabilities must be within [0, 1]: {faults}")
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities add up to more than 1: {faults}")
    return {k: p for k, p in faults.items() if p > 0}


def _operations(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset(value)
    unknown = names - set(Routes.operations())
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}; known: {Routes.operations()}")
    return names


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _capacity(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"capacity must be a positive integer or None, got {value!r}")


def _non_negative_or_none(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How the emulator behaves. Change it at runtime with ``Emulator.configure(**changes)``.

    ``campaigns``, ``keepalive_timeout``, ``shutdown_timeout`` and ``arrivals_maxlen`` take
    effect when the emulator starts; everything else applies to the next request.
    """

    #: Campaigns seeded at start (existing IDs in a file database are kept as they are).
    campaigns: tuple[CampaignSeed, ...] = attrs.field(
        default=DEFAULT_CAMPAIGNS, converter=_campaigns
    )
    #: Further client accounts, ``{client_id: token}``, for "other client" tests.
    extra_clients: dict[int, str] = attrs.field(factory=dict, converter=_clients)
    #: At most this many requests per second per client (sliding window); None = no limit.
    rate_limit: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Seconds sent in ``Retry-After`` with every 429 (limiter and injected).
    retry_after: int = attrs.field(default=1, validator=_non_negative)
    #: Seconds slept before each request is processed.
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    #: Up to this many further seconds (uniform, seeded) on top of ``latency``.
    latency_jitter: float = attrs.field(default=0.0, validator=_non_negative)
    #: Probability per fault kind for each request, drawn from ``seed``; at most 1 in total.
    faults: dict[FaultKind, float] = attrs.field(factory=dict, converter=_fault_map)
    #: Restrict the random faults to these operation names (None = every operation).
    fault_operations: frozenset[str] | None = attrs.field(default=None, converter=_operations)
    #: Seed of the fault, jitter and dialling generators (None = unpredictable).
    seed: int | None = None
    #: How long a ``SLOW`` fault delays the request.
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    #: ``Retry-After`` seconds sent with an injected 503 (None = no header).
    unavailable_retry_after: int | None = None
    #: Idle keep-alive connections are closed by the server after this many seconds.
    keepalive_timeout: float = attrs.field(default=75.0, validator=_non_negative)
    #: On stop, requests still running get this long to finish before they are cancelled.
    shutdown_timeout: float = attrs.field(default=1.0, validator=_non_negative)
    #: How many request arrival times ``Stats.arrivals`` keeps.
    arrivals_maxlen: int = 1_000_000
    #: Capacity model: at most this many requests in service at once; the rest queue first
    #: come, first served (None = no limit). Change it while running: a busy afternoon.
    capacity: int | None = attrs.field(default=None, validator=_capacity)
    #: Seconds each request holds its service slot (on top of the work itself).
    service_time: float = attrs.field(default=0.0, validator=_non_negative)
    #: With ``capacity``: a request arriving when this many already wait is answered 503
    #: (None = the queue is unbounded).
    queue_limit: int | None = attrs.field(default=None, validator=_non_negative_or_none)
