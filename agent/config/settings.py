"""The settings: one declaration per setting, and the frozen, typed object every other module reads.

Each setting is a field of :class:`Settings` whose metadata holds its parser, default, help and flag form; the
CLI's flags, the environment and file keys, ``/status`` and the timing defaults all derive from these fields,
so a setting is added in exactly one place and every read of it is checked by mypy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from agent.checks.config import CheckConfig
from agent.config.sentinel_url import SentinelTarget, parse_any_redis_url
from agent.config.urls import RedisTarget
from agent.config.values import (
    Listen,
    choice,
    parse_bool,
    parse_duration,
    parse_fraction,
    parse_listen,
    parse_port,
    parse_positive_int,
    parse_text,
)
from agent.core.model import ReadinessMode
from agent.core.verdict import Timing

ENV_PREFIX = "READINESS_AGENT_"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
GCP_STARTUP_TIMEOUT = 60.0


class Source(enum.StrEnum):
    """Where an effective setting came from, shown in ``/status`` and the start-up log."""

    DEFAULT = "default"
    PLATFORM = "platform"
    FILE = "file"
    ENV = "env"
    FLAG = "flag"


class Platform(enum.StrEnum):
    """``auto`` is resolved at start into ``gcp`` or ``local`` (see platform.py)."""

    AUTO = "auto"
    GCP = "gcp"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Spec:
    """How one setting is written and read: its parser, raw default, help, and flag/env/file names."""

    name: str
    parse: Callable[[object], Any]
    raw_default: object
    help: str
    metavar: str | None = None
    flag_only_bool: bool = False
    url: bool = False
    secret: bool = False  # shown as *** in /status, the start-up log and error messages
    aliases: tuple[str, ...] = ()
    run_only: bool = False  # only ``run`` uses it: hidden from ``check --help``/``wait --help``, still accepted

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def default(self) -> Any:
        return None if self.raw_default is None else self.parse(self.raw_default)


def setting(parse: Callable[[object], Any], raw_default: object, help: str, metavar: str | None = None,
            **extra: Any) -> Any:
    """A :class:`Settings` field declared with everything the loaders, CLI and ``/status`` need."""
    spec = {"parse": parse, "raw_default": raw_default, "help": help, "metavar": metavar, **extra}
    default = None if raw_default is None else parse(raw_default)
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated, effective configuration. ``sources[name]`` says where each value came from."""

    # setting() returns a dataclasses.field (ruff's RUF009 cannot see that through the helper).
    redis_url: RedisTarget | SentinelTarget = setting(  # noqa: RUF009
        parse_any_redis_url, DEFAULT_REDIS_URL,
        "Redis to gate on (redis://, rediss://, or redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER[/DB])", "URL",
        url=True)
    redis_require_master: bool = setting(
        parse_bool, True, "the --redis-url node must be the master: a replica (a demoted master) fails with readonly; "
        "false to gate on a replica", flag_only_bool=True)
    listen: Listen = setting(  # noqa: RUF009
        parse_listen, "0.0.0.0:9180", "HTTP listen address, e.g. 0.0.0.0:9180 or [::]:9180", "HOST:PORT",
        run_only=True)
    watch_port: int = setting(parse_port, 9181, "port of GET /watch (verdict as Server-Sent Events for the app), "
                              "on 127.0.0.1 and ::1 only; 0: off", "PORT", run_only=True)
    platform: str = setting(choice("auto", "gcp", "local"), "auto", "auto-detect, or force gcp / local")
    window: float = setting(parse_duration, 0.5, "stability window (grace period) before ready", "DURATION",
                            aliases=("grace_period",))
    interval: float = setting(parse_duration, 1.0, "check interval while healthy", "DURATION")
    retry_interval: float = setting(parse_duration, 0.2, "check interval while unsure or failing", "DURATION")
    timeout: float = setting(parse_duration, 0.5, "per-check timeout", "DURATION")
    failure_threshold: int = setting(parse_positive_int, 3, "failures that take a ready check out", "N")
    flap_window: float = setting(parse_duration, 10.0, "that many failures within this window also count",
                                 "DURATION")
    backoff_after: float = setting(parse_duration, 5.0, "after failing this long, re-check delays double",
                                   "DURATION")
    jitter: float = setting(parse_fraction, 0.2, "random spread of every check delay, a fraction 0-0.5",
                            "FRACTION")
    startup_timeout: float = setting(parse_duration, 10.0, "startup deadline (60s on GCP, 10s elsewhere)",
                                     "DURATION")
    exit_on_startup_timeout: bool = setting(parse_bool, False, "exit 1 when the startup deadline passes",
                                            flag_only_bool=True, run_only=True)
    readiness_mode: str = setting(choice("always", "startup"), "always",
                                  "always: /readyz follows the verdict; startup: gate only until the first ready",
                                  run_only=True)
    drain_seconds: float = setting(parse_duration, 5.0, "keep serving this long after SIGTERM", "DURATION",
                                   run_only=True)
    drain_token_file: str | None = setting(parse_text, None, "enables POST /drain with this bearer token", "FILE",
                                           run_only=True)
    log_format: str = setting(choice("auto", "json", "text"), "auto", "json on GCP, text elsewhere")
    log_level: str = setting(choice("debug", "info", "warning", "error"), "info", "log level")
    redis_password_file: str | None = setting(parse_text, None,
                                              "file holding the Redis password (re-read on change)", "FILE")
    redis_ca_file: str | None = setting(parse_text, None, "CA bundle for rediss://", "FILE")
    redis_cert_file: str | None = setting(parse_text, None, "client certificate for rediss://", "FILE")
    redis_key_file: str | None = setting(parse_text, None, "client key for rediss://", "FILE")
    redis_auth: str = setting(choice("password", "iam"), "password",
                              "password: from the URL or redis_password_file; iam: an access token of the pod's "
                              "service account (Memorystore IAM authentication; needs rediss://)")
    redis_tls_server_name: str | None = setting(
        parse_text, None, "name to verify in the Redis server's certificate when connecting by IP (Memorystore)",
        "NAME", aliases=("tls_server_name",))
    redis_tls_skip_hostname_check: bool = setting(
        parse_bool, False, "do not check the host name in the Redis certificate; the chain is still verified "
        "against the CA", flag_only_bool=True)
    redis_write_canary: bool = setting(parse_bool, False, "prove writes: SET a per-pod key with a TTL, read it back",
                                       flag_only_bool=True)
    redis_pubsub_roundtrip: bool = setting(parse_bool, False,
                                           "prove pub/sub: publish on a private channel, receive it in time",
                                           flag_only_bool=True)
    redis_canary_interval: float = setting(parse_duration, 10.0,
                                           "how often the write canary and pub/sub round trip run while they pass",
                                           "DURATION")
    redis_fresh_connection_interval: float = setting(
        parse_duration, 30.0, "how often a new connection proves that a new client can connect, authenticate and "
        "PING (the held one outlives a changed password or a full maxclients); 0: never", "DURATION")
    redis_sentinel_password: str | None = setting(parse_text, None, "the sentinels' own password (not the data "
                                                  "node's, which is in the URL or --redis-password-file)",
                                                  "PASSWORD", secret=True)
    redis_sentinel_password_file: str | None = setting(parse_text, None, "file holding the sentinels' password "
                                                       "(re-read on change)", "FILE")
    kube_readiness_gate: bool = setting(parse_bool, False, "patch the pod's readiness-gate condition",
                                        flag_only_bool=True, run_only=True)
    kube_condition_type: str = setting(parse_text, "readiness-agent.io/dependencies-ready",
                                       "pod condition type to patch", "TYPE", run_only=True)
    kubeconfig: str | None = setting(parse_text, None, "kubeconfig outside a cluster", "FILE", run_only=True)

    # Not settings: where the values came from and what was derived from them.
    sources: Mapping[str, Source] = field(default_factory=dict)
    resolved_platform: Platform = Platform.LOCAL
    platform_reason: str = "default"
    checks: tuple[CheckConfig, ...] = ()
    warnings: tuple[str, ...] = ()
    config_file: str | None = None

    @property
    def timing(self) -> Timing:
        return Timing(
            window=self.window, interval=self.interval, retry_interval=self.retry_interval, timeout=self.timeout,
            failure_threshold=self.failure_threshold, flap_window=self.flap_window,
            backoff_after=self.backoff_after, jitter=self.jitter,
        )

    @property
    def mode(self) -> ReadinessMode:
        return ReadinessMode(self.readiness_mode)

    @property
    def resolved_log_format(self) -> str:
        """``auto`` resolved: JSON for Cloud Logging on GCP, readable text elsewhere."""
        if self.log_format == "auto":
            return "json" if self.resolved_platform is Platform.GCP else "text"
        return self.log_format

    def value(self, name: str) -> Any:
        """A setting by name, for the generic readers (``/status``, the start-up log)."""
        return getattr(self, name)

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{value, source}``, secrets redacted, for /status and the start-up log."""
        out: dict[str, dict[str, Any]] = {}
        for spec in SPECS:
            value = getattr(self, spec.name)
            if isinstance(value, RedisTarget | SentinelTarget):
                value = value.redacted
            elif spec.secret and value is not None:
                value = "***"
            elif isinstance(value, Listen):
                value = str(value)
            out[spec.name] = {"value": value, "source": str(self.sources.get(spec.name, Source.DEFAULT))}
        out["platform"]["resolved"] = str(self.resolved_platform)
        return out


SPECS: tuple[Spec, ...] = tuple(
    Spec(name=f.name, **f.metadata["spec"]) for f in fields(Settings) if "spec" in f.metadata
)
BY_NAME: Mapping[str, Spec] = {s.name: s for s in SPECS}
ALIASES: Mapping[str, str] = {alias: s.name for s in SPECS for alias in s.aliases}
DEFAULTS = Settings()
DEFAULT_TIMING = DEFAULTS.timing
