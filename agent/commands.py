"""The three commands: ``run`` (the sidecar), ``check`` (one round) and ``wait`` (block until ready).

Each takes validated :class:`Settings`; the parser and the exit-code policy live in cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config.settings import Settings, Source
from agent.logs.labels import labels

if TYPE_CHECKING:
    from agent.core.agent import Agent
    from agent.core.model import Check
    from agent.gate.sync import GateConfig, PodGate

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2
GATE_STOP_TIMEOUT = 2.0  # seconds for the gate's last write at exit, within the platform's grace period
log = logging.getLogger("readiness_agent")


def build_checks(settings: Settings, clock: Callable[[], float]) -> list[Check]:
    """Every configured check, built by its kind's registry entry."""
    from agent.checks import build_check

    return [build_check(c, settings.timeout, clock) for c in settings.checks]


def build_agent(settings: Settings, clock: Callable[[], float] | None = None,
                rng: Callable[[], float] | None = None) -> Agent:
    """The running agent for ``settings``: its checks built from the registry, the clock and rng injected."""
    from agent.core.agent import Agent

    clock = clock or time.monotonic
    return Agent(settings, build_checks(settings, clock), clock, rng or random.random)


def warn_password_on_command_line(settings: Settings) -> bool:
    """One WARNING when ``--redis-url`` carries a password, or ``--redis-sentinel-password`` is a flag: any local
    user can read it in ``ps``/``/proc``."""
    warned = False
    if settings.sources.get("redis_url") is Source.FLAG and settings.redis_url.password is not None:
        log.warning("--redis-url carries a password, readable by any local user in ps and /proc/<pid>/cmdline: "
                    "pass it in READINESS_AGENT_REDIS_URL or --redis-password-file instead (README: Credentials)",
                    extra=labels(event="password_on_command_line"))
        warned = True
    if settings.sources.get("redis_sentinel_password") is Source.FLAG:
        log.warning("--redis-sentinel-password is readable by any local user in ps and /proc/<pid>/cmdline: pass "
                    "it in READINESS_AGENT_REDIS_SENTINEL_PASSWORD or --redis-sentinel-password-file instead",
                    extra=labels(event="password_on_command_line"))
        warned = True
    return warned


def _log_settings(settings: Settings) -> None:
    effective = settings.effective()
    parts = [f"{k}={v['value']}({v['source']})" for k, v in effective.items() if v["value"] is not None]
    log.info("readiness-agent %s on platform %s (%s)", __version__, settings.resolved_platform,
             settings.platform_reason, extra=labels(event="start"))
    log.info("settings: %s", " ".join(parts), extra=labels(event="settings"))
    for c in settings.checks:
        log.info("check %s: %s %s (%s)", c.name, c.kind, c.describe(), "required" if c.required else "optional",
                 extra=labels(event="check_configured", check=c.name))


async def run(settings: Settings, gate_config: GateConfig | None = None) -> int:
    """The sidecar: serve probes and metrics until SIGTERM/SIGINT, then drain and exit 0.

    With ``gate_config`` (``--kube-readiness-gate``) the verdict is also pushed into the pod's condition.
    """
    from prometheus_client import CollectorRegistry, disable_created_metrics

    from agent.logs.verdict_log import VerdictLog
    from agent.server.app import GateView, bound_port, make_app, serve
    from agent.server.limits import IDLE_TIMEOUT, RateLimitedLog, loop_exception_handler, raise_nofile_limit
    from agent.server.metrics import Metrics
    from agent.server.watch import start_watch

    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the exposition
    registry = CollectorRegistry()
    agent = build_agent(settings)
    agent.store.subscribe(Metrics(registry, lambda: agent.snapshot, settings.window))
    agent.store.subscribe(VerdictLog(agent.clock, serving=True))
    gate = None
    if gate_config is not None:
        from agent.gate.sync import PodGate

        gate = PodGate(gate_config, registry)
    app = make_app(agent, registry, GateView(gate.status if gate is not None else None))
    signals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    # Client-provoked loop errors (a failed accept() under a full file table) are one line per 10 s, not a
    # traceback each; the soft file limit goes up to the hard one so the connection cap sits well below it.
    loop.set_exception_handler(loop_exception_handler(RateLimitedLog()))
    nofile = raise_nofile_limit()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    loop.add_signal_handler(signal.SIGHUP, _sighup)
    _log_settings(settings)
    warn_password_on_command_line(settings)
    listen = settings.listen
    stack = contextlib.AsyncExitStack()
    try:
        try:
            listening = await stack.enter_async_context(serve(app, listen.host, listen.port))
        except OSError as exc:
            # A usage error like any bad flag: one line on stderr, exit 2 (the log line is for the platform).
            message = f"cannot listen on {listen}: {exc.strerror or exc}"
            log.error("%s", message, extra=labels(event="listen_failed"))
            sys.stderr.write(f"readiness-agent: error: {message}\n")
            return EXIT_USAGE
        if not await start_watch(stack, lambda: agent.snapshot, settings.watch_port, agent.store.subscribe,
                                 settings.sources.get("watch_port", Source.DEFAULT) is not Source.DEFAULT):
            return EXIT_USAGE
        log.info("listening on %s (port %d)", listen, bound_port(listening), extra=labels(event="listening"))
        log.info("HTTP limits: at most %d connections (open-file limit %d), idle connections closed after %gs",
                 listening.limiter.cap, nofile, IDLE_TIMEOUT, extra=labels(event="http_limits"))
        if gate is not None and not await _start_gate(gate, agent):
            return EXIT_USAGE
        await agent.start()
        # Start-up objects (modules, settings, the app) live for good: keep the collector off them.
        gc.freeze()
        return await _until_stopped(agent.store.deadline_event, settings, signals, agent.drain)
    finally:
        await stack.aclose()  # closes every connection within SHUTDOWN_TIMEOUT, held bodies included
        if gate is not None:
            await gate.stop(GATE_STOP_TIMEOUT)  # one last best-effort write of the final verdict (Draining)
        await agent.stop()


async def _start_gate(gate: PodGate, agent: Agent) -> bool:
    """Load the gate's credentials (off the loop) and subscribe it; False after a one-line error."""
    from agent.gate.sync import GateListener, GateSetupError

    try:
        await gate.start()
    except GateSetupError as exc:
        log.error("%s", exc, extra=labels(event="gate_setup_failed"))
        sys.stderr.write(f"readiness-agent: error: {exc}\n")
        return False
    listener = GateListener(gate)
    agent.store.subscribe(listener)
    listener.publish_snapshot(agent.snapshot)
    return True


def _sighup() -> None:
    """SIGHUP would kill the process silently; it changes nothing, so say so."""
    log.warning("SIGHUP received: ignored (settings are read once at start: restart to change them; mounted "
                "password and token files are re-read when they change)", extra=labels(event="sighup_ignored"))


async def _until_stopped(deadline: asyncio.Event, settings: Settings, signals: asyncio.Queue[int],
                         drain: Callable[[], None]) -> int:
    """Wait for a signal (drain, then exit 0) or, if configured, the startup deadline (exit 1)."""
    signal_task = asyncio.create_task(signals.get(), name="signal")
    waiters: set[asyncio.Task[Any]] = {signal_task}
    if settings.exit_on_startup_timeout:
        waiters.add(asyncio.create_task(deadline.wait(), name="deadline"))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if signal_task not in done:
        log.error("exiting with code 1: startup deadline passed (--exit-on-startup-timeout)",
                  extra=labels(event="deadline_exit"))
        return EXIT_NOT_READY
    sig = signal.Signals(signal_task.result())
    drain()
    log.info("%s received: draining for %gs, then exiting", sig.name, settings.drain_seconds,
             extra=labels(event="signal"))
    try:
        async with asyncio.timeout(settings.drain_seconds):
            await signals.get()  # a second signal cuts the drain short
            log.warning("second signal: exiting now", extra=labels(event="second_signal"))
    except TimeoutError:
        pass
    return EXIT_OK


async def check_once(settings: Settings) -> int:
    """One round of every check, concurrently; one line per check on stdout."""
    checks = build_checks(settings, _monotonic)
    try:
        results = await asyncio.gather(*(c.run() for c in checks))
    finally:
        for c in checks:
            await c.close()
    ok = True
    for c, r in zip(checks, results, strict=True):
        tag = "" if c.required else " (optional)"
        if r.ok:
            print(f"[+]{c.name} ok ({r.latency * 1000:.1f} ms){tag}")
        else:
            print(f"[-]{c.name} failed: {r.reason} ({r.detail}){tag}")
            ok = ok and not c.required
    return EXIT_OK if ok else EXIT_NOT_READY


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


async def wait_ready(settings: Settings, max_wait: float) -> int:
    """Run the checks until the verdict is ready (window included) or ``max_wait`` passes."""
    from agent.logs.verdict_log import VerdictLog

    agent = build_agent(settings)
    agent.store.subscribe(VerdictLog(agent.clock, serving=False))  # wait serves no /readyz: never named
    names = ", ".join(f"{c.name} ({c.describe()})" for c in settings.checks)
    log.info("waiting up to %gs for a stable ready verdict (window %gs) of %s", max_wait, settings.window, names,
             extra=labels(event="waiting"))
    await agent.start()
    try:
        async with asyncio.timeout(max_wait):
            await agent.store.ready.wait()
        print(f"ready after {agent.clock() - agent.snapshot.started_at:.2f}s")
        return EXIT_OK
    except TimeoutError:
        sys.stderr.write(f"readiness-agent: not ready after {max_wait:g}s ({agent.snapshot.why_not_ready()})\n")
        return EXIT_NOT_READY
    finally:
        await agent.stop()
