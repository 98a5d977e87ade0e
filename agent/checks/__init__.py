"""The check kinds: a registry ``type: → (config type, check)``; each check turns a dependency into observations.

A kind's config type (import-light, validated without I/O) and its check live in the kind's own modules; the
check's module is imported only when a check of that kind is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.checks.config import CheckConfig
from agent.checks.http_config import HttpCheckConfig
from agent.checks.redis.cluster import SLOTS_GAUGE
from agent.checks.redis.config import RedisCheckConfig
from agent.checks.tcp import TcpCheckConfig
from agent.core.model import Check, GaugeFamily

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Kind:
    """One check kind: its config type, and a loader of its check class (imported when first built)."""

    config: type[CheckConfig]
    check: Callable[[], Callable[[Any, float, Clock], Check]]
    gauges: tuple[GaugeFamily, ...] = ()  # what the kind adds to /metrics (its results' Facts fill them)


def _redis() -> Callable[[Any, float, Clock], Check]:
    from agent.checks.redis.check import RedisCheck

    return RedisCheck


def _http() -> Callable[[Any, float, Clock], Check]:
    from agent.checks.http import HttpCheck

    return HttpCheck


def _tcp() -> Callable[[Any, float, Clock], Check]:
    from agent.checks.tcp import TcpCheck

    return TcpCheck


KINDS: dict[str, Kind] = {
    "redis": Kind(RedisCheckConfig, _redis, (
        GaugeFamily("redis", "redis_up", "1 when the last Redis check passed.", up=True), SLOTS_GAUGE)),
    "tcp": Kind(TcpCheckConfig, _tcp),
    "http": Kind(HttpCheckConfig, _http),
}
CONFIGS: dict[str, type[CheckConfig]] = {name: kind.config for name, kind in KINDS.items()}


def kind_gauges() -> tuple[GaugeFamily, ...]:
    """Every kind's gauges, in the registry's order."""
    return tuple(g for kind in KINDS.values() for g in kind.gauges)


def build_check(config: CheckConfig, timeout: float, clock: Clock = time.monotonic) -> Check:
    """The check object for one configured dependency."""
    return KINDS[config.kind].check()(config, timeout, clock)
