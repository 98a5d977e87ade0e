"""Configuration: flags, ``READINESS_AGENT_*`` environment, a YAML file, platform defaults, defaults.

Everything is parsed and validated once into a frozen :class:`Settings` that keeps each value's source, so
``/status`` and the start-up log can say *why* a value is what it is (the original fix's 60 s GCP timeout
silently became 10 s because nobody could see which platform the code believed it was on). Nothing else in
the package reads ``os.environ``. Precedence: flag > env > file > platform default > default.

Bad input raises :class:`ConfigError` with one line naming the key, where it came from and the value; the CLI
turns it into exit code 2. Secrets (passwords in URLs) are redacted in every message.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from agent.verdict import ReadinessMode, Timing

ENV_PREFIX = "READINESS_AGENT_"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A bad configuration value; the message is one line and names the key and the value."""


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


# ---------------------------------------------------------------------------------------------- value parsers

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(raw: object) -> float:
    """Seconds from ``0.5``, ``500ms``, ``2s``, ``1m``; negative, NaN and infinite values are refused."""
    if isinstance(raw, bool):
        raise ValueError("expected a duration such as 0.5, 500ms, 2s or 1m")
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        text = str(raw)
        if text.strip().startswith("-"):
            raise ValueError("must not be negative")
        match = _DURATION.match(text)
        if not match:
            raise ValueError("expected a duration such as 0.5, 500ms, 2s or 1m")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if math.isnan(value) or math.isinf(value):
        raise ValueError("must be a finite duration")
    if value < 0:
        raise ValueError("must not be negative")
    if value > 86400 * 7:
        raise ValueError("is longer than a week")
    return value


def parse_positive_int(raw: object) -> int:
    """A whole number ≥ 1."""
    if isinstance(raw, bool):
        raise ValueError("expected a whole number ≥ 1")
    try:
        value = int(str(raw).strip()) if not isinstance(raw, int) else raw
    except ValueError:
        raise ValueError("expected a whole number ≥ 1") from None
    if value < 1 or value > 1_000_000:
        raise ValueError("expected a whole number from 1 to 1000000")
    return value


def parse_bool(raw: object) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off``."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _choice(*allowed: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = str(raw).strip().lower()
        if text not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return text

    return parse


def parse_text(raw: object) -> str:
    """A non-empty string."""
    if not isinstance(raw, str | int | float) or isinstance(raw, bool) or str(raw).strip() == "":
        raise ValueError("expected a non-empty string")
    return str(raw).strip()


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the HTTP server listens; ``host`` may be IPv4 or IPv6 (``[::]:9180``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(raw: object) -> Listen:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all IPv4 addresses)."""
    text = parse_text(raw)
    match = re.match(r"^(?:\[([0-9a-fA-F:.%a-zA-Z]+)\]|([^:\[\]]*)):([0-9]{1,5})$", text)
    if not match:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT or :PORT")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    port = int(match.group(3))
    if port > 65535:
        raise ValueError("port must be 0-65535")
    return Listen(host, port)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis://`` / ``rediss://`` URL. ``password`` is never printed: use ``redacted``."""

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    redacted: str


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (also tolerant of URLs that do not parse)."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def parse_redis_url(raw: object) -> RedisTarget:
    """Validate a Redis URL: scheme, host, port, db index."""
    text = parse_text(raw)
    try:
        parts: SplitResult = urlsplit(text)
        port = parts.port or 6379
    except ValueError:
        raise ValueError("is not a valid redis:// or rediss:// URL (bad port?)") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("must start with redis:// or rediss://")
    if not parts.hostname:
        raise ValueError("has no host")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit() or int(db_text) > 1_000_000:
        raise ValueError("has a database index that is not a whole number")
    if parts.query or parts.fragment:
        raise ValueError("must not carry ?options or #fragments (use flags or the config file)")
    return RedisTarget(
        tls=parts.scheme == "rediss",
        host=parts.hostname,
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        redacted=redact_url(text),
    )


def parse_tcp_address(raw: object) -> tuple[str, int]:
    """``HOST:PORT`` for TCP checks."""
    listen = parse_listen(raw)
    if listen.port == 0:
        raise ValueError("port must be 1-65535")
    return listen.host, listen.port


# ------------------------------------------------------------------------------------------------ the options


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its parser, default, help and whether its value is a secret-bearing URL."""

    name: str
    parse: Callable[[object], Any]
    default: object
    help: str
    metavar: str | None = None
    flag_only_bool: bool = False
    url: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("redis_url", parse_redis_url, DEFAULT_REDIS_URL, "Redis to gate on (redis:// or rediss://)",
           "URL", url=True),
    Option("listen", parse_listen, "0.0.0.0:9180", "HTTP listen address, e.g. 0.0.0.0:9180 or [::]:9180",
           "HOST:PORT"),
    Option("platform", _choice("auto", "gcp", "local"), "auto", "auto-detect, or force gcp / local"),
    Option("window", parse_duration, 0.5, "stability window (grace period) before ready", "DURATION"),
    Option("interval", parse_duration, 1.0, "check interval while healthy", "DURATION"),
    Option("retry_interval", parse_duration, 0.2, "check interval while unsure or failing", "DURATION"),
    Option("timeout", parse_duration, 0.5, "per-check timeout", "DURATION"),
    Option("failure_threshold", parse_positive_int, 3, "failures that take a ready check out", "N"),
    Option("flap_window", parse_duration, 10.0, "that many failures within this window also count",
           "DURATION"),
    Option("backoff_after", parse_duration, 5.0, "after failing this long, re-check delays double",
           "DURATION"),
    Option("startup_timeout", parse_duration, 10.0, "startup deadline (60s on GCP, 10s elsewhere)",
           "DURATION"),
    Option("exit_on_startup_timeout", parse_bool, False, "exit 1 when the startup deadline passes",
           flag_only_bool=True),
    Option("readiness_mode", _choice("always", "startup"), "always",
           "always: /readyz follows the verdict; startup: gate only until the first ready"),
    Option("drain_seconds", parse_duration, 5.0, "keep serving this long after SIGTERM", "DURATION"),
    Option("drain_token_file", parse_text, None, "enables POST /drain with this bearer token", "FILE"),
    Option("log_format", _choice("auto", "json", "text"), "auto", "json on GCP, text elsewhere"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("redis_password_file", parse_text, None, "file holding the Redis password (re-read on change)",
           "FILE"),
    Option("redis_ca_file", parse_text, None, "CA bundle for rediss://", "FILE"),
    Option("redis_cert_file", parse_text, None, "client certificate for rediss://", "FILE"),
    Option("redis_key_file", parse_text, None, "client key for rediss://", "FILE"),
    Option("kube_readiness_gate", parse_bool, False, "patch the pod's readiness-gate condition",
           flag_only_bool=True),
    Option("kube_condition_type", parse_text, "readiness-agent.io/dependencies-ready",
           "pod condition type to patch", "TYPE"),
    Option("kubeconfig", parse_text, None, "kubeconfig outside a cluster", "FILE"),
)
BY_NAME = {o.name: o for o in OPTIONS}
ALIASES = {"grace_period": "window"}
FILE_ONLY_KEYS = {"checks"}
CHECK_KEYS = {
    "name", "type", "url", "address", "required", "password_file", "ca_file", "cert_file", "key_file",
    "require_master", "maintenance_key",
}
# Read by the CLI but not settings: the config file path itself.
META_ENV = {ENV_PREFIX + "CONFIG"}


# ---------------------------------------------------------------------------------------------- the settings


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One dependency to check. ``kind`` is ``redis`` or ``tcp``."""

    name: str
    kind: str
    required: bool
    redis: RedisTarget | None = None
    address: tuple[str, int] | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    require_master: bool = False
    maintenance_key: str | None = None

    def describe(self) -> str:
        """A secret-free description for logs and /status."""
        if self.redis is not None:
            return self.redis.redacted
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}"


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated, effective configuration. ``sources[name]`` says where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, Source]
    platform: Platform
    platform_reason: str
    checks: tuple[CheckConfig, ...]
    warnings: tuple[str, ...] = ()
    config_file: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def timing(self) -> Timing:
        v = self.values
        return Timing(
            window=v["window"], interval=v["interval"], retry_interval=v["retry_interval"],
            timeout=v["timeout"], failure_threshold=v["failure_threshold"], flap_window=v["flap_window"],
            backoff_after=v["backoff_after"],
        )

    @property
    def listen(self) -> Listen:
        listen: Listen = self.values["listen"]
        return listen

    @property
    def readiness_mode(self) -> ReadinessMode:
        return ReadinessMode(self.values["readiness_mode"])

    @property
    def log_format(self) -> str:
        """``auto`` resolved: JSON for Cloud Logging on GCP, readable text elsewhere."""
        fmt: str = self.values["log_format"]
        if fmt == "auto":
            return "json" if self.platform is Platform.GCP else "text"
        return fmt

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{value, source}``, secrets redacted, for /status and the start-up log."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in self.values.items():
            if isinstance(value, RedisTarget):
                shown: Any = value.redacted
            elif isinstance(value, Listen):
                shown = str(value)
            else:
                shown = value
            out[name] = {"value": shown, "source": str(self.sources[name])}
        out["platform"]["resolved"] = str(self.platform)
        return out


Detector = Callable[[Mapping[str, str]], tuple[Platform, str]]


def _where(option: str, source: Source, config_file: str | None) -> str:
    opt = BY_NAME.get(option)
    if source is Source.FLAG:
        return opt.flag if opt else "--" + option.replace("_", "-")
    if source is Source.ENV:
        return opt.env if opt else ENV_PREFIX + option.upper()
    if source is Source.FILE:
        return f"{option} in {config_file}"
    return option


def _shown(option: str, raw: object) -> str:
    text = str(raw)
    opt = BY_NAME.get(option)
    if (opt is not None and opt.url) or option == "url":
        text = redact_url(text)
    if len(text) > 80:
        text = text[:77] + "..."
    return repr(text)


def _parse(option: Option, raw: object, source: Source, config_file: str | None) -> Any:
    try:
        return option.parse(raw)
    except ValueError as exc:
        where = _where(option.name, source, config_file)
        raise ConfigError(f"invalid {where} {_shown(option.name, raw)}: {exc}") from None


def read_config_file(path: str) -> dict[str, Any]:
    """Load the YAML file as a mapping; any problem is a one-line ConfigError."""
    import yaml  # deferred: only needed with --config

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path!r} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _file_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"unknown key {key!r} in config file {path!r}")
    name = key.replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in BY_NAME and name not in FILE_ONLY_KEYS:
        raise ConfigError(f"unknown key {key!r} in config file {path!r}")
    return name


def load_settings(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    detect: Detector,
    config_file: str | None = None,
) -> Settings:
    """Merge and validate every source into :class:`Settings`.

    ``flags`` holds only the flags given on the command line (option name → raw value). ``detect`` resolves
    ``platform=auto``; it is injected so tests cover every branch without a network.
    """
    raw: dict[str, tuple[object, Source]] = {}
    warnings: list[str] = []

    file_data: dict[str, Any] = {}
    if config_file is None:
        config_file = environ.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        for key, value in read_config_file(config_file).items():
            raw[_file_key(key, config_file)] = (value, Source.FILE)
        file_data = {k: v for k, (v, _) in raw.items()}

    if "REDIS_URL" in environ and environ["REDIS_URL"].strip():
        raw["redis_url"] = (environ["REDIS_URL"], Source.ENV)
    known_env = {o.env for o in OPTIONS} | {ENV_PREFIX + a.upper() for a in ALIASES} | META_ENV
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known_env:
            warnings.append(f"ignoring unknown environment variable {key}")
    for alias, target in ALIASES.items():
        if ENV_PREFIX + alias.upper() in environ:
            raw[target] = (environ[ENV_PREFIX + alias.upper()], Source.ENV)
    for option in OPTIONS:
        if option.env in environ:
            raw[option.name] = (environ[option.env], Source.ENV)

    for name, value in flags.items():
        if value is not None:
            raw[ALIASES.get(name, name)] = (value, Source.FLAG)

    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for option in OPTIONS:
        if option.name in raw:
            value, source = raw[option.name]
            values[option.name] = _parse(option, value, source, config_file)
            sources[option.name] = source
        else:
            values[option.name] = option.parse(option.default) if option.default is not None else None
            sources[option.name] = Source.DEFAULT

    requested = Platform(values["platform"])
    if requested is Platform.AUTO:
        platform, why = detect(environ)
    else:
        platform, why = requested, f"forced by {_where('platform', sources['platform'], config_file)}"
    if platform is Platform.GCP and sources["startup_timeout"] is Source.DEFAULT:
        values["startup_timeout"] = 60.0
        sources["startup_timeout"] = Source.PLATFORM
    if platform is Platform.GCP and sources["window"] is Source.DEFAULT:
        values["window"] = 0.5  # the original fix's grace period, kept as the GCP default
        sources["window"] = Source.PLATFORM

    shown = {name: raw[name][0] if name in raw else values[name] for name in values}
    _validate(values, sources, config_file, shown)
    checks = _build_checks(values, sources, file_data.get("checks"), config_file)
    return Settings(values, sources, platform, why, checks, tuple(warnings), config_file)


def _validate(
    values: Mapping[str, Any], sources: Mapping[str, Source], config_file: str | None, given: Mapping[str, Any]
) -> None:
    """Cross-field rules; messages show the value as the user wrote it."""

    def fail(name: str, message: str) -> None:
        raise ConfigError(
            f"invalid {_where(name, sources[name], config_file)} {_shown(name, given[name])}: {message}"
        )

    for name in ("interval", "retry_interval", "timeout", "flap_window"):
        if values[name] <= 0:
            fail(name, "must be greater than 0")
    if values["startup_timeout"] <= 0:
        fail("startup_timeout", "must be greater than 0")
    if values["window"] >= values["startup_timeout"]:
        fail("window", f"must be shorter than the startup deadline ({values['startup_timeout']:g}s)")
    if values["retry_interval"] > values["interval"]:
        fail("retry_interval", f"must not exceed --interval ({values['interval']:g}s)")


def _build_checks(
    values: Mapping[str, Any],
    sources: Mapping[str, Source],
    file_checks: object,
    config_file: str | None,
) -> tuple[CheckConfig, ...]:
    checks: list[CheckConfig] = []
    shared = {
        "password_file": values["redis_password_file"],
        "ca_file": values["redis_ca_file"],
        "cert_file": values["redis_cert_file"],
        "key_file": values["redis_key_file"],
    }
    # The single --redis-url check: always, unless the file lists checks and no URL was given elsewhere.
    if file_checks is None or sources["redis_url"] is not Source.DEFAULT:
        checks.append(CheckConfig(name="redis", kind="redis", required=True, redis=values["redis_url"],
                                  **shared))
    if file_checks is not None:
        if not isinstance(file_checks, list) or not file_checks:
            raise ConfigError(f"invalid checks in {config_file}: expected a non-empty list of checks")
        for index, entry in enumerate(file_checks):
            checks.append(_parse_check(entry, index, config_file, shared))
    names = [c.name for c in checks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"invalid checks in {config_file}: the name {name!r} is used twice")
    return tuple(checks)


def _parse_check(entry: object, index: int, path: str | None, shared: Mapping[str, Any]) -> CheckConfig:
    where = f"checks[{index}] in {path}"
    if not isinstance(entry, dict):
        raise ConfigError(f"invalid {where}: expected a mapping with name, type and url/address")
    for key in entry:
        if key not in CHECK_KEYS:
            raise ConfigError(f"unknown key {key!r} in {where}")

    def get(key: str, parse: Callable[[object], Any], default: object = None) -> Any:
        if key not in entry or entry[key] is None:
            return default
        try:
            return parse(entry[key])
        except ValueError as exc:
            raise ConfigError(f"invalid {key} in {where} {_shown(key, entry[key])}: {exc}") from None

    name = get("name", parse_text)
    if name is None or not CHECK_NAME.match(name):
        raise ConfigError(
            f"invalid name in {where} {_shown('name', entry.get('name'))}: "
            "expected lowercase letters, digits, '-' or '_' (it becomes a metric label and a URL path)"
        )
    kind = get("type", _choice("redis", "tcp"), "redis")
    required = get("required", parse_bool, True)
    if kind == "redis":
        target = get("url", parse_redis_url)
        if target is None:
            raise ConfigError(f"invalid {where}: a redis check needs a url")
        return CheckConfig(
            name=name, kind=kind, required=required, redis=target,
            password_file=get("password_file", parse_text, shared["password_file"]),
            ca_file=get("ca_file", parse_text, shared["ca_file"]),
            cert_file=get("cert_file", parse_text, shared["cert_file"]),
            key_file=get("key_file", parse_text, shared["key_file"]),
            require_master=get("require_master", parse_bool, False),
            maintenance_key=get("maintenance_key", parse_text),
        )
    address = get("address", parse_tcp_address)
    if address is None:
        raise ConfigError(f"invalid {where}: a tcp check needs an address HOST:PORT")
    return CheckConfig(name=name, kind=kind, required=required, address=address)
