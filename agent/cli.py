"""The command line: ``run`` (the sidecar), ``check`` (one round) and ``wait`` (block until ready).

CLI → Settings → Agent/server, one direction. Usage and configuration errors print one line on stderr and
exit 2; they never become a traceback or a wrong verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from agent import __version__
from agent.config import BY_NAME, OPTIONS, ConfigError, Option, Settings, load_settings
from agent.platform import detect_platform

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("readiness_agent")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (``readiness-agent: error: …``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"readiness-agent: error: {message} (see --help)\n")


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    env = option.env
    if option.flag_only_bool:
        parser.add_argument(option.flag, dest=option.name, nargs="?", const="true", default=None,
                            metavar="BOOL", help=f"{option.help} [env {env}]")
        return
    names = [option.flag] + (["--grace-period"] if option.name == "window" else [])
    default = "" if option.default is None else f" (default {option.default})"
    parser.add_argument(*names, dest=option.name, default=None, metavar=option.metavar,
                        help=f"{option.help}{default} [env {env}]")


def build_parser() -> argparse.ArgumentParser:
    """The ``readiness-agent`` parser with ``run``, ``check`` and ``wait``."""
    parser = _Parser(prog="readiness-agent", description="Gate a pod's readiness on a stable Redis.")
    parser.add_argument("--version", action="version", version=f"readiness-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the sidecar (HTTP probes, metrics, logs)")
    check = sub.add_parser("check", help="one round of all checks; exit 0 ok, 1 not ok, 2 usage")
    wait = sub.add_parser("wait", help="block until ready (stability window included); exit 0, or 1 on timeout")
    wait.add_argument("--max-wait", required=True, metavar="DURATION", help="give up after this long (exit 1)")
    for command in (run, check, wait):
        command.add_argument("--config", metavar="FILE", default=None,
                             help="YAML file with settings and checks [env READINESS_AGENT_CONFIG]")
        for option in OPTIONS:
            _add_option(command, option)
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed arguments (only the flags actually given count as ``flag``)."""
    flags = {name: getattr(args, name) for name in BY_NAME if getattr(args, name, None) is not None}
    return load_settings(flags, environ, detect_platform, config_file=args.config)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the console script and ``python -m agent``."""
    env = dict(os.environ if environ is None else environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("readiness-agent: error: a command is required: run, check or wait\n")
        return EXIT_USAGE
    try:
        settings = settings_from_args(args, env)
        max_wait = None
        if args.command == "wait":
            from agent.config import parse_duration

            try:
                max_wait = parse_duration(args.max_wait)
            except ValueError as exc:
                raise ConfigError(f"invalid --max-wait {args.max_wait!r}: {exc}") from None
        if settings["kube_readiness_gate"]:
            raise ConfigError("--kube-readiness-gate is not available in this version yet (see README)")
    except ConfigError as exc:
        sys.stderr.write(f"readiness-agent: error: {exc}\n")
        return EXIT_USAGE

    from agent.logs import setup_logging

    # run logs to stdout (the platform's log stream); check/wait keep stdout for their answer.
    stream = sys.stdout if args.command == "run" else sys.stderr
    setup_logging(settings.log_format, settings["log_level"], stream)
    for warning in settings.warnings:
        log.warning("%s", warning)
    try:
        if args.command == "run":
            return asyncio.run(run(settings))
        if args.command == "check":
            return asyncio.run(check_once(settings))
        assert max_wait is not None
        return asyncio.run(wait_ready(settings, max_wait))
    except KeyboardInterrupt:
        return 130


def _log_settings(settings: Settings) -> None:
    effective = settings.effective()
    parts = [f"{k}={v['value']}({v['source']})" for k, v in effective.items() if v["value"] is not None]
    log.info("readiness-agent %s on platform %s (%s)", __version__, settings.platform, settings.platform_reason)
    log.info("settings: %s", " ".join(parts))
    for c in settings.checks:
        log.info("check %s: %s %s (%s)", c.name, c.kind, c.describe(), "required" if c.required else "optional")


async def run(settings: Settings) -> int:
    """The sidecar: serve probes and metrics until SIGTERM/SIGINT, then drain and exit 0."""
    from prometheus_client import CollectorRegistry, disable_created_metrics

    from agent.metrics import Metrics
    from agent.runner import Agent
    from agent.server import bound_port, make_app, serve

    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the exposition and nobody alerts on them
    registry = CollectorRegistry()
    agent = Agent(settings, Metrics(registry))
    app = make_app(agent, registry)
    signals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    _log_settings(settings)
    listen = settings.listen
    try:
        async with serve(app, listen.host, listen.port) as runner:
            log.info("listening on %s (port %d)", listen, bound_port(runner))
            await agent.start()
            # Start-up objects (modules, settings, the app) live for good: keep the collector off them.
            gc.freeze()
            code = await _until_stopped(agent, settings, signals)
    except OSError as exc:
        log.error("cannot listen on %s: %s", listen, exc.strerror or exc)
        return EXIT_USAGE
    finally:
        await agent.stop()
    return code


async def _until_stopped(agent: Any, settings: Settings, signals: asyncio.Queue[int]) -> int:
    """Wait for a signal (drain, then exit 0) or, if configured, the startup deadline (exit 1)."""
    waiters: set[asyncio.Task[Any]] = {asyncio.create_task(signals.get(), name="signal")}
    if settings["exit_on_startup_timeout"]:
        waiters.add(asyncio.create_task(agent.deadline_passed.wait(), name="deadline"))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    finished = done.pop()
    if finished.get_name() == "deadline":
        log.error("exiting with code 1: startup deadline passed (--exit-on-startup-timeout)")
        return EXIT_NOT_READY
    sig = signal.Signals(finished.result())
    agent.drain()
    seconds = settings["drain_seconds"]
    log.info("%s received: draining for %gs, then exiting", sig.name, seconds)
    try:
        async with asyncio.timeout(seconds):
            await signals.get()  # a second signal cuts the drain short
            log.warning("second signal: exiting now")
    except TimeoutError:
        pass
    return EXIT_OK


async def check_once(settings: Settings) -> int:
    """One round of every check, concurrently; one line per check on stdout."""
    from agent.runner import build_check

    checks = [build_check(c, settings.timing, _monotonic) for c in settings.checks]
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
    from agent.runner import Agent

    agent = Agent(settings)
    await agent.start()
    try:
        async with asyncio.timeout(max_wait):
            await agent.ready.wait()
        print(f"ready after {agent.clock() - agent.verdict.started_at:.2f}s")
        return EXIT_OK
    except TimeoutError:
        reasons = [
            f"{n}: {s.verdict.last_reason or s.verdict.state}" for n, s in agent.status.items()
            if s.check.required and s.verdict.state.value != "ready"
        ]
        sys.stderr.write(f"readiness-agent: not ready after {max_wait:g}s ({'; '.join(reasons)})\n")
        return EXIT_NOT_READY
    finally:
        await agent.stop()
