"""Loading the configuration: flags, ``READINESS_AGENT_*`` environment, a YAML file, platform defaults.

Everything is parsed and validated once into the frozen :class:`~agent.settings.Settings`, keeping each value's
source, so ``/status`` and the start-up log can say *why* a value is what it is (the original fix's 60 s GCP
timeout silently became 10 s because nobody could see which platform the code believed it was on). Nothing else
in the package reads ``os.environ``. Precedence: flag > env > file > platform default > default.

Bad input raises :class:`ConfigError` with one line naming the key, where it came from and the value; the CLI
turns it into exit code 2. URLs are shown redacted in every message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.checkconfig import SHARED_KEYS, CheckConfig, parse_checks
from agent.settings import (
    ALIASES,
    BY_NAME,
    ENV_PREFIX,
    GCP_STARTUP_TIMEOUT,
    SPECS,
    Platform,
    Settings,
    Source,
    Spec,
)
from agent.urls import redact_url
from agent.values import ConfigError, shown

__all__ = ["ConfigError", "Detector", "load_settings", "read_config_file"]

FILE_ONLY_KEYS = {"checks"}
META_ENV = {ENV_PREFIX + "CONFIG"}  # read by the CLI: the config file path itself
Detector = Callable[[Mapping[str, str]], tuple[Platform, str]]


def _where(name: str, source: Source, config_file: str | None) -> str:
    spec = BY_NAME[name]
    if source is Source.FLAG:
        return spec.flag
    if source is Source.ENV:
        return spec.env
    if source is Source.FILE:
        return f"{name} in {config_file}"
    return name


def _shown(spec: Spec, raw: object) -> str:
    return shown(redact_url(str(raw)) if spec.url else raw)


def _parse(spec: Spec, raw: object, source: Source, config_file: str | None) -> Any:
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid {_where(spec.name, source, config_file)} {_shown(spec, raw)}: {exc}") from None


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


def _gather(
    flags: Mapping[str, object], environ: Mapping[str, str], file_data: Mapping[str, object]
) -> tuple[dict[str, tuple[object, Source]], list[str]]:
    """Raw values by setting name with their source, highest precedence last-written; and warnings."""
    raw: dict[str, tuple[object, Source]] = {
        name: (value, Source.FILE) for name, value in file_data.items() if name in BY_NAME
    }
    warnings: list[str] = []
    if environ.get("REDIS_URL", "").strip():
        raw["redis_url"] = (environ["REDIS_URL"], Source.ENV)
    known_env = {s.env for s in SPECS} | {ENV_PREFIX + a.upper() for a in ALIASES} | META_ENV
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known_env:
            warnings.append(f"ignoring unknown environment variable {key}")
    for alias, target in ALIASES.items():
        if ENV_PREFIX + alias.upper() in environ:
            raw[target] = (environ[ENV_PREFIX + alias.upper()], Source.ENV)
    for spec in SPECS:
        if spec.env in environ:
            raw[spec.name] = (environ[spec.env], Source.ENV)
    for name, value in flags.items():
        if value is not None:
            raw[ALIASES.get(name, name)] = (value, Source.FLAG)
    return raw, warnings


def load_settings(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    detect: Detector,
    config_file: str | None = None,
) -> Settings:
    """Merge and validate every source into :class:`Settings`.

    ``flags`` holds only the flags given on the command line (setting name → raw value). ``detect`` resolves
    ``platform=auto``; it is injected so tests cover every branch without a network.
    """
    if config_file is None:
        config_file = environ.get(ENV_PREFIX + "CONFIG") or None
    file_data: dict[str, Any] = {}
    if config_file:
        file_data = {_file_key(key, config_file): value for key, value in read_config_file(config_file).items()}
    raw, warnings = _gather(flags, environ, file_data)

    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for spec in SPECS:
        if spec.name in raw:
            value, sources[spec.name] = raw[spec.name]
            values[spec.name] = _parse(spec, value, sources[spec.name], config_file)
        else:
            values[spec.name], sources[spec.name] = spec.default, Source.DEFAULT

    requested = Platform(values["platform"])
    if requested is Platform.AUTO:
        platform, why = detect(environ)
    else:
        platform, why = requested, f"forced by {_where('platform', sources['platform'], config_file)}"
    if platform is Platform.GCP:
        if sources["startup_timeout"] is Source.DEFAULT:
            values["startup_timeout"], sources["startup_timeout"] = GCP_STARTUP_TIMEOUT, Source.PLATFORM
        if sources["window"] is Source.DEFAULT:  # the original fix's grace period, kept as the GCP default
            sources["window"] = Source.PLATFORM

    given = {name: raw[name][0] if name in raw else values[name] for name in values}
    _validate(values, sources, config_file, given)
    checks = _build_checks(values, sources, file_data.get("checks"), config_file)
    return Settings(**values, sources=sources, resolved_platform=platform, platform_reason=why, checks=checks,
                    warnings=tuple(warnings), config_file=config_file)


def _validate(
    values: Mapping[str, Any], sources: Mapping[str, Source], config_file: str | None, given: Mapping[str, Any]
) -> None:
    """Cross-field rules; messages show the value as the user wrote it."""

    def fail(name: str, message: str) -> None:
        where = _where(name, sources[name], config_file)
        raise ConfigError(f"invalid {where} {_shown(BY_NAME[name], given[name])}: {message}")

    for name in ("interval", "retry_interval", "timeout", "flap_window", "startup_timeout"):
        if values[name] <= 0:
            fail(name, "must be greater than 0")
    if values["window"] >= values["startup_timeout"]:
        fail("window", f"must be shorter than the startup deadline ({values['startup_timeout']:g}s)")
    if values["retry_interval"] > values["interval"]:
        fail("retry_interval", f"must not exceed --interval ({values['interval']:g}s)")


def _build_checks(
    values: Mapping[str, Any], sources: Mapping[str, Source], file_checks: object, config_file: str | None
) -> tuple[CheckConfig, ...]:
    shared = {key: values["redis_" + key] for key in SHARED_KEYS}
    checks: list[CheckConfig] = []
    # The single --redis-url check: always, unless the file lists checks and no URL was given elsewhere.
    if file_checks is None or sources["redis_url"] is not Source.DEFAULT:
        checks.append(CheckConfig(name="redis", kind="redis", required=True, redis=values["redis_url"], **shared))
    if file_checks is not None:
        checks.extend(parse_checks(file_checks, config_file, shared))
    names = [c.name for c in checks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"invalid checks in {config_file}: the name {name!r} is used twice")
    return tuple(checks)
