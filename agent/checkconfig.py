"""The ``checks:`` list of the YAML file: one named dependency per entry, validated into :class:`CheckConfig`.

The single ``--redis-url`` check is built here too, so every check, however configured, has the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.urls import RedisTarget, parse_redis_url, redact_url
from agent.values import ConfigError, choice, parse_bool, parse_tcp_address, parse_text, shown, unknown_key

CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$", re.ASCII)
CHECK_KEYS = (
    "name", "type", "url", "address", "required", "password_file", "ca_file", "cert_file", "key_file",
    "require_master", "maintenance_key",
)
SHARED_KEYS = ("password_file", "ca_file", "cert_file", "key_file")
MAX_CHECKS = 128  # each check holds a connection and a task; the scale benchmark runs 100


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
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_checks(entries: object, path: str | None, shared: Mapping[str, Any]) -> list[CheckConfig]:
    """The file's ``checks:`` list; ``shared`` holds the ``redis_*_file`` settings each entry inherits."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"invalid checks in {path}: expected a non-empty list of checks")
    if len(entries) > MAX_CHECKS:
        raise ConfigError(f"invalid checks in {path}: {len(entries)} checks, at most {MAX_CHECKS}")
    return [_parse_check(entry, index, path, shared) for index, entry in enumerate(entries)]


def _parse_check(entry: object, index: int, path: str | None, shared: Mapping[str, Any]) -> CheckConfig:
    where = f"checks[{index}] in {path}"
    if not isinstance(entry, dict):
        raise ConfigError(f"invalid {where}: expected a mapping with name, type and url/address")
    for key in entry:
        if key not in CHECK_KEYS:
            raise unknown_key(key, f"checks[{index}] in config file {path!r}", CHECK_KEYS)

    def get(key: str, parse: Callable[[object], Any], default: object = None) -> Any:
        if key not in entry or entry[key] is None:
            return default
        try:
            return parse(entry[key])
        except ValueError as exc:
            value = redact_url(str(entry[key])) if key == "url" else entry[key]
            raise ConfigError(f"invalid {key} in {where} {shown(value)}: {exc}") from None

    name = get("name", parse_text)
    if name is None or not CHECK_NAME.match(name):
        raise ConfigError(
            f"invalid name in {where} {shown(entry.get('name'))}: "
            "expected lowercase letters, digits, '-' or '_' (it becomes a metric label and a URL path)"
        )
    kind = get("type", choice("redis", "tcp"), "redis")
    required = get("required", parse_bool, True)
    if kind == "redis":
        target = get("url", parse_redis_url)
        if target is None:
            raise ConfigError(f"invalid {where}: a redis check needs a url")
        files = {key: get(key, parse_text, shared[key]) for key in SHARED_KEYS}
        return CheckConfig(
            name=name, kind=kind, required=required, redis=target, **files,
            require_master=get("require_master", parse_bool, False),
            maintenance_key=get("maintenance_key", parse_text),
        )
    address = get("address", parse_tcp_address)
    if address is None:
        raise ConfigError(f"invalid {where}: a tcp check needs an address HOST:PORT")
    return CheckConfig(name=name, kind=kind, required=required, address=address)
