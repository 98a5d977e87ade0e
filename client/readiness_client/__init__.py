"""readiness-agent's client for the app: follow the agent's verdict, refuse WebSocket upgrades while it is not
ready, close open WebSockets with 1012 when the app stops (and, by choice, with 1013 when Redis goes).

The standard library only; :mod:`readiness_client.aiohttp_gate` imports aiohttp and :mod:`readiness_client.asgi`
no framework at all, and neither is imported here. The protocol it follows is in the agent's docs/design.md,
"The watch protocol".
"""

from readiness_client.sockets import (
    SERVICE_RESTART,
    TRY_AGAIN_LATER,
    OnRedisLost,
    OpenSockets,
    drain_on_sigterm,
    platform_drain_window,
)
from readiness_client.watcher import DEFAULT_URL, ReadinessWatcher, Verdict, wait_ready, watch_url

__all__ = ["DEFAULT_URL", "SERVICE_RESTART", "TRY_AGAIN_LATER", "OnRedisLost", "OpenSockets", "ReadinessWatcher",
           "Verdict", "drain_on_sigterm", "platform_drain_window", "wait_ready", "watch_url"]
