"""Loading the configuration: flags, ``READINESS_AGENT_*`` environment, a YAML file, platform defaults.

Everything is parsed and validated once into the frozen :class:`~agent.config.settings.Settings`, keeping each value's
source, so ``/status`` and the start-up log can say *why* a value is what it is (the original fix's 60 s GCP
timeout silently became 10 s because nobody could see which platform the code believed it was on). Nothing else
in the package reads ``os.environ``. Precedence: flag > env > file > platform default > default.

Bad input raises :class:`ConfigError` with one line naming the key, where it came from and the value; the CLI
turns it into exit code 2. URLs are shown redacted in every message. The file is hostile input too: it is read
bounded (``MAX_FILE_BYTES``), decoded strictly, and parsed by a loader that refuses YAML anchors and aliases
(an alias bomb expands to gigabytes) and duplicate keys (where "last wins" hides a typo).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.checks import CONFIGS
from agent.checks.config import MAX_CHECKS, CheckConfig, parse_checks, shared_keys
from agent.checks.redis.config import RedisCheckConfig
from agent.config.settings import (
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
from agent.config.urls import redact_url
from agent.config.values import ConfigError, closest, shown, unknown_key

__all__ = ["MAX_FILE_BYTES", "MINIMUMS", "ConfigError", "Detector", "load_settings", "read_config_file"]

FILE_ONLY_KEYS = {"checks"}
META_ENV = {ENV_PREFIX + "CONFIG"}  # read by the CLI: the config file path itself
Detector = Callable[[Mapping[str, str]], tuple[Platform, str]]
MAX_FILE_BYTES = 64 * 1024  # a real file is a few KiB; this bound keeps parsing well under a second
# Stated minimums (seconds): 0.1 s is the smallest interval the docs, tests and benchmarks use; below it the
# agent burns a core on checks, and "1ms" is an easy typo for "1m". window, backoff_after and drain_seconds
# may be 0.
MINIMUMS = {"interval": 0.1, "retry_interval": 0.1, "timeout": 0.05, "flap_window": 0.1, "startup_timeout": 0.1}


def _where(name: str, source: Source, config_file: str | None, env_name: str | None = None) -> str:
    """How the user wrote the setting: its flag, the variable actually set, the file key, or its bare name."""
    spec = BY_NAME[name]
    if source is Source.FLAG:
        return spec.flag
    if source is Source.ENV:
        return env_name or spec.env
    if source is Source.FILE:
        return f"{name} in {config_file}"
    return name


def _shown(spec: Spec, raw: object) -> str:
    if spec.secret:
        return "'***'"
    return shown(redact_url(str(raw)) if spec.url else raw)


def _parse(spec: Spec, raw: object, source: Source, config_file: str | None, env_name: str | None = None) -> Any:
    try:
        return spec.parse(raw)
    except ValueError as exc:
        where = _where(spec.name, source, config_file, env_name)
        raise ConfigError(f"invalid {where} {_shown(spec, raw)}: {exc}") from None


def _read_bounded(path: str) -> bytes:
    """At most ``MAX_FILE_BYTES`` of the file: ``/dev/zero`` or a 50 MB file is refused, not read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path!r} is larger than {MAX_FILE_BYTES // 1024} KiB")
    return data


class _Refused(Exception):
    """A YAML construct the loader does not accept (anchor, alias, duplicate key, deep nesting)."""


MAX_DEPTH = 16  # a settings file is three levels deep (settings → checks → a check)


def _loader(text: str) -> Any:
    """PyYAML's safe loading (libyaml when available) without anchors/aliases, duplicate keys or deep
    nesting: the events are scanned first, so nothing is composed or expanded before it is known to be sane."""
    import yaml  # deferred: only needed with --config

    fast = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    def line(mark: Any) -> int:
        return int(mark.line) + 1 if mark is not None else 0

    depth = 0
    for event in yaml.parse(text, Loader=fast):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"uses a YAML anchor or alias at line {line(event.start_mark)} "
                           "(not supported: write the value out)")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"is nested more than {MAX_DEPTH} levels deep at line {line(event.start_mark)}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    node = yaml.compose(text, Loader=fast)
    if node is None:
        return None
    pending: list[yaml.Node] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise _Refused(f"has the key {shown(key_node.value)} twice at line "
                                       f"{key_node.start_mark.line + 1}")
                    seen.add(key)
                pending.extend((key_node, value_node))
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
    return fast("").construct_document(node)


def read_config_file(path: str) -> dict[str, Any]:
    """Load the YAML file as a mapping; any problem is a one-line ConfigError, within a second."""
    import yaml  # deferred: only needed with --config

    data_bytes = _read_bounded(path)
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not UTF-8 (byte 0x{data_bytes[exc.start]:02x} at offset "
                          f"{exc.start})") from None
    try:
        data = _loader(text)
    except _Refused as exc:
        raise ConfigError(f"config file {path!r} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path!r} is not valid YAML{at}") from None
    except RecursionError:
        raise ConfigError(f"config file {path!r} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of settings, not {type(data).__name__}")
    return data


FILE_KEYS = sorted({*BY_NAME, *ALIASES, *FILE_ONLY_KEYS})


def _file_key(key: object, path: str) -> str:
    name = key.replace("-", "_") if isinstance(key, str) else ""
    name = ALIASES.get(name, name)
    if name not in BY_NAME and name not in FILE_ONLY_KEYS:
        raise unknown_key(key, f"config file {path!r}", FILE_KEYS)
    return name


def _unknown_variable(key: str, known: set[str]) -> str:
    """The warning for a ``READINESS_AGENT_*`` variable no setting reads, with the "did you mean" that a
    YAML key gets (matched without the shared prefix, which would make every name look close)."""
    close = closest(key.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known])
    return f"ignoring unknown environment variable {key}" + (f"; did you mean {ENV_PREFIX}{close}?" if close else "")


def _gather(
    flags: Mapping[str, object], environ: Mapping[str, str], file_data: Mapping[str, object]
) -> tuple[dict[str, tuple[object, Source]], dict[str, str], list[str]]:
    """Raw values by setting name with their source, highest precedence last-written; the environment
    variable each env value came from (``REDIS_URL``, an alias); and warnings."""
    raw: dict[str, tuple[object, Source]] = {
        name: (value, Source.FILE) for name, value in file_data.items() if name in BY_NAME
    }
    env_names: dict[str, str] = {}
    warnings: list[str] = []
    if environ.get("REDIS_URL", "").strip():
        raw["redis_url"], env_names["redis_url"] = (environ["REDIS_URL"], Source.ENV), "REDIS_URL"
    known_env = {s.env for s in SPECS} | {ENV_PREFIX + a.upper() for a in ALIASES} | META_ENV
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known_env:
            warnings.append(_unknown_variable(key, known_env))
    for alias, target in ALIASES.items():
        variable = ENV_PREFIX + alias.upper()
        if variable in environ:
            raw[target], env_names[target] = (environ[variable], Source.ENV), variable
    for spec in SPECS:
        if spec.env in environ:
            raw[spec.name], env_names[spec.name] = (environ[spec.env], Source.ENV), spec.env
    for name, value in flags.items():
        if value is not None:
            raw[ALIASES.get(name, name)] = (value, Source.FLAG)
    return raw, env_names, warnings


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
    raw, env_names, warnings = _gather(flags, environ, file_data)

    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for spec in SPECS:
        if spec.name in raw:
            value, sources[spec.name] = raw[spec.name]
            values[spec.name] = _parse(spec, value, sources[spec.name], config_file, env_names.get(spec.name))
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

    given = {name: raw[name][0] if name in raw else _default_text(name) for name in values}
    if sources["startup_timeout"] is Source.PLATFORM:
        given["startup_timeout"] = f"{GCP_STARTUP_TIMEOUT:g}"
    _validate(values, sources, config_file, given, env_names)
    checks = _build_checks(values, sources, file_data.get("checks"), config_file)
    return Settings(**values, sources=sources, resolved_platform=platform, platform_reason=why, checks=checks,
                    warnings=tuple(warnings), config_file=config_file)


def _default_text(name: str) -> object:
    raw = BY_NAME[name].raw_default
    return f"{raw:g}" if isinstance(raw, float) else raw


def _validate(
    values: Mapping[str, Any], sources: Mapping[str, Source], config_file: str | None, given: Mapping[str, Any],
    env_names: Mapping[str, str],
) -> None:
    """Minimums and cross-field rules. Messages show each value as the user wrote it and where it came from;
    a value the user never set is named as such (``retry_interval '0.2', the default``), with the fix."""

    def named(name: str) -> str:
        """``--interval '0.1'``, ``READINESS_AGENT_INTERVAL '0.1'``, ``retry_interval '0.2', the default``."""
        source = sources[name]
        text = f"{_where(name, source, config_file, env_names.get(name))} {_shown(BY_NAME[name], given[name])}"
        if source is Source.DEFAULT:
            return text + ", the default"
        if source is Source.PLATFORM:
            return text + ", the GCP default"
        return text

    def fail(name: str, message: str) -> None:
        raise ConfigError(f"invalid {named(name)}: {message}")

    for name, minimum in MINIMUMS.items():
        if values[name] < minimum - 1e-9:
            fail(name, f"must be at least {minimum:g}s")
    if values["window"] >= values["startup_timeout"]:
        fail("window", f"must be shorter than the startup deadline ({named('startup_timeout')}); "
                       f"set {BY_NAME['window'].flag} below {values['startup_timeout']:g}s or raise "
                       f"{BY_NAME['startup_timeout'].flag}")
    if values["retry_interval"] > values["interval"]:
        fail("retry_interval", f"must not exceed the interval ({named('interval')}); set "
                               f"{BY_NAME['retry_interval'].flag} to {values['interval']:g}s or less, or raise "
                               f"{BY_NAME['interval'].flag}")


def _build_checks(
    values: Mapping[str, Any], sources: Mapping[str, Source], file_checks: object, config_file: str | None
) -> tuple[CheckConfig, ...]:
    shared = {key: values["redis_" + key] for key in shared_keys(RedisCheckConfig)}
    checks: list[CheckConfig] = []
    # The single --redis-url check: always, unless the file lists checks and no URL was given elsewhere.
    if file_checks is None or sources["redis_url"] is not Source.DEFAULT:
        checks.append(RedisCheckConfig.for_url("redis", True, values["redis_url"], **shared,
                                               sentinel_password=values["redis_sentinel_password"],
                                               require_master=values["redis_require_master"]))
    if file_checks is not None:
        checks.extend(parse_checks(file_checks, config_file,
                                   {**shared, "sentinel_password": values["redis_sentinel_password"]}, CONFIGS))
    if len(checks) > MAX_CHECKS:
        raise ConfigError(f"invalid checks in {config_file}: {len(checks)} checks, at most {MAX_CHECKS}")
    for check in checks:
        check.validate_files()  # the only I/O of building the configuration: a bad file is exit 2 at start
    names = [c.name for c in checks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"invalid checks in {config_file}: the name {name!r} is used twice")
    return tuple(checks)
