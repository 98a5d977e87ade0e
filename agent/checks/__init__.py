"""Check adapters: each turns one kind of dependency into :class:`~agent.model.CheckResult` observations."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.checkconfig import CheckConfig
from agent.model import Check


def build_check(config: CheckConfig, timeout: float, clock: Callable[[], float] = time.monotonic) -> Check:
    """The check object for one configured dependency."""
    if config.kind == "redis":
        from agent.checks.redis import RedisCheck

        return RedisCheck(config, timeout, clock)
    if config.kind == "http":
        from agent.checks.http import HttpCheck

        assert config.http is not None
        return HttpCheck(config.name, config.required, config.http, timeout, clock)
    from agent.checks.tcp import TcpCheck

    return TcpCheck(config, timeout, clock)
