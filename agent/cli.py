"""The command line: the parser of ``run``, ``check`` and ``wait``, and the exit-code policy.

CLI → Settings → commands (commands.py), one direction. Usage and configuration errors print one line on
stderr and exit 2; they never become a traceback or a wrong verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from agent import __version__
from agent.commands import EXIT_USAGE, check_once, run, wait_ready
from agent.config.loader import ConfigError, load_settings
from agent.config.platform import detect_platform
from agent.config.settings import BY_NAME, SPECS, Settings, Spec
from agent.config.values import parse_duration
from agent.logs.labels import labels

log = logging.getLogger("readiness_agent")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (``readiness-agent: error: …``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"readiness-agent: error: {message} (see --help)\n")


def _add_option(parser: argparse.ArgumentParser, option: Spec, hidden: bool = False) -> None:
    """Add ``option``'s flag; ``hidden`` keeps it accepted but out of ``--help`` (run-only flags elsewhere)."""
    env = option.env
    if option.flag_only_bool:
        parser.add_argument(option.flag, dest=option.name, nargs="?", const="true", default=None,
                            metavar="BOOL", help=argparse.SUPPRESS if hidden else f"{option.help} [env {env}]")
        return
    names = [option.flag] + ["--" + alias.replace("_", "-") for alias in option.aliases]
    default = "" if option.raw_default is None else f" (default {option.raw_default})"
    parser.add_argument(*names, dest=option.name, default=None, metavar=option.metavar,
                        help=argparse.SUPPRESS if hidden else f"{option.help}{default} [env {env}]")


def build_parser() -> argparse.ArgumentParser:
    """The ``readiness-agent`` parser with ``run``, ``check`` and ``wait``."""
    parser = _Parser(prog="readiness-agent", description="Gate a pod's readiness on a stable Redis.")
    parser.add_argument("--version", action="version", version=f"readiness-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the sidecar (HTTP probes, metrics, logs)")
    check = sub.add_parser("check", help="one round of all checks; exit 0 ok, 1 not ok, 2 usage")
    wait = sub.add_parser("wait", help="block until ready (stability window included); exit 0, or 1 on timeout")
    for command in (run, check, wait):
        # wait's limit; run and check accept it (checked, then unused) so one argument list serves all three
        command.add_argument("--max-wait", required=command is wait, metavar="DURATION", default=None,
                             help="give up after this long (exit 1)" if command is wait else argparse.SUPPRESS)
        command.add_argument("--config", metavar="FILE", default=None,
                             help="YAML file with settings and checks [env READINESS_AGENT_CONFIG]")
        for option in SPECS:  # check and wait accept run-only flags (scripts share one set) but do not list them
            _add_option(command, option, hidden=option.run_only and command is not run)
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
        if args.max_wait is not None:  # a bad value is refused by every command, though only wait uses it
            try:
                max_wait = parse_duration(args.max_wait)
            except ValueError as exc:
                raise ConfigError(f"invalid --max-wait {args.max_wait!r}: {exc}") from None
        gate = None
        if settings.kube_readiness_gate and args.command == "run":
            from agent.gate.sync import gate_config  # does not import the kubernetes client

            try:
                gate = gate_config(env, settings.kube_condition_type, settings.kubeconfig)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        sys.stderr.write(f"readiness-agent: error: {exc}\n")
        return EXIT_USAGE

    from agent.logs.setup import setup_logging

    # run logs to stdout (the platform's log stream); check/wait keep stdout for their answer.
    stream = sys.stdout if args.command == "run" else sys.stderr
    setup_logging(settings.resolved_log_format, settings.log_level, stream)
    for warning in settings.warnings:
        log.warning("%s", warning, extra=labels(event="settings_warning"))
    try:
        if args.command == "run":
            return asyncio.run(run(settings, gate))
        if args.command == "check":
            return asyncio.run(check_once(settings))
        assert max_wait is not None
        return asyncio.run(wait_ready(settings, max_wait))
    except KeyboardInterrupt:
        return 130
