"""The ``checks:`` list of the YAML file: one named dependency per entry, validated into :class:`CheckConfig`.

The single ``--redis-url`` check is built here too, so every check, however configured, has the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.http_target import DEFAULT_STATUS, HttpTarget, parse_http_url, parse_status_range
from agent.sentinel import SentinelTarget, parse_any_redis_url
from agent.tls import TlsFileError, TlsMaterial
from agent.urls import RedisTarget, redact_url
from agent.values import (
    ConfigError,
    choice,
    parse_bool,
    parse_duration,
    parse_tcp_address,
    parse_text,
    shown,
    unknown_key,
)

CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$", re.ASCII)
CHECK_KEYS = (
    "name", "type", "url", "address", "required", "password_file", "ca_file", "cert_file", "key_file",
    "require_master", "maintenance_key", "auth", "tls_server_name", "tls_skip_hostname_check", "write_canary",
    "pubsub_roundtrip", "canary_interval", "expect_status", "sentinel_password_file", "fresh_connection_interval",
)
# Each entry inherits the setting ``redis_<key>`` unless it sets the key itself.
SHARED_KEYS = ("password_file", "ca_file", "cert_file", "key_file", "auth", "tls_server_name",
               "tls_skip_hostname_check", "write_canary", "pubsub_roundtrip", "canary_interval",
               "sentinel_password_file", "fresh_connection_interval")
FILE_KEYS = ("password_file", "ca_file", "cert_file", "key_file", "tls_server_name", "sentinel_password_file")
FLAG_KEYS = ("tls_skip_hostname_check", "write_canary", "pubsub_roundtrip")
MAX_CHECKS = 128  # each check holds a connection and a task; the scale benchmark runs 100


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One dependency to check. ``kind`` is ``redis``, ``tcp`` or ``http``.

    Built, it is valid: IAM only over TLS, and every TLS file readable (``__post_init__``), so a mistake is a
    one-line error at start (exit 2) rather than a failing check.
    """

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
    auth: str = "password"
    tls_server_name: str | None = None
    tls_skip_hostname_check: bool = False
    write_canary: bool = False
    pubsub_roundtrip: bool = False
    canary_interval: float = 10.0
    http: HttpTarget | None = None
    fresh_connection_interval: float = 30.0  # a new connection proves a new client's view this often (0: never)

    def __post_init__(self) -> None:
        tls = self.tls()
        if self.auth == "iam" and tls is None:
            raise ConfigError(f"invalid check {self.name!r}: IAM authentication needs a rediss:// URL "
                              f"({self.describe()}): a token never crosses the network in clear")
        if tls is not None:
            try:
                tls.validate()
            except TlsFileError as exc:
                raise ConfigError(f"invalid check {self.name!r}: {exc.detail}") from None

    def tls(self) -> TlsMaterial | None:
        """The TLS material for this check's connections (None without TLS)."""
        if self.redis is not None and self.redis.tls:
            return TlsMaterial(self.ca_file, self.cert_file, self.key_file, self.tls_server_name,
                               check_hostname=not self.tls_skip_hostname_check)
        if self.http is not None and self.http.url.lower().startswith("https:") and self.http.ca_file:
            return TlsMaterial(self.http.ca_file)
        return None
    sentinel: SentinelTarget | None = None  # a redis+sentinel:// URL; ``redis`` is then its data-node template
    sentinel_password_file: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def for_url(cls, name: str, required: bool, target: RedisTarget | SentinelTarget, **rest: Any) -> CheckConfig:
        """A Redis check on a plain or a Sentinel URL."""
        if isinstance(target, SentinelTarget):
            return cls(name=name, kind="redis", required=required, redis=target.template, sentinel=target, **rest)
        return cls(name=name, kind="redis", required=required, redis=target, **rest)

    def describe(self) -> str:
        """A secret-free description for logs and /status."""
        if self.sentinel is not None:
            return self.sentinel.redacted
        if self.redis is not None:
            return self.redis.redacted
        if self.http is not None:
            return self.http.redacted
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
    kind = get("type", choice("redis", "tcp", "http"), "redis")
    required = get("required", parse_bool, True)
    if kind == "redis":
        target = get("url", parse_any_redis_url)
        if target is None:
            raise ConfigError(f"invalid {where}: a redis check needs a url")
        files = {key: get(key, parse_text, shared[key]) for key in FILE_KEYS}
        flags = {key: get(key, parse_bool, shared[key]) for key in FLAG_KEYS}
        # A Sentinel URL names a master: a replica there is a failover not yet followed.
        return CheckConfig.for_url(
            name, required, target, **files, **flags, sentinel_password=shared.get("sentinel_password"),
            require_master=get("require_master", parse_bool, isinstance(target, SentinelTarget)),
            maintenance_key=get("maintenance_key", parse_text),
            auth=get("auth", choice("password", "iam"), shared["auth"]),
            canary_interval=get("canary_interval", parse_duration, shared["canary_interval"]),
            fresh_connection_interval=get("fresh_connection_interval", parse_duration,
                                          shared["fresh_connection_interval"]),
        )
    if kind == "http":
        url = get("url", parse_http_url)
        if url is None:
            raise ConfigError(f"invalid {where}: an http check needs a url")
        http = HttpTarget(url, get("expect_status", parse_status_range, DEFAULT_STATUS), get("ca_file", parse_text))
        return CheckConfig(name=name, kind=kind, required=required, http=http)
    address = get("address", parse_tcp_address)
    if address is None:
        raise ConfigError(f"invalid {where}: a tcp check needs an address HOST:PORT")
    return CheckConfig(name=name, kind=kind, required=required, address=address)
