"""A Redis check's configuration: the URL (plain, TLS or Sentinel) and the keys only a Redis check has.

Import-light on purpose (no client, no I/O), so the configuration layer validates ``type: redis`` entries
without loading the check; the check itself is checks/redis/check.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.checks.config import CheckConfig, Entry, key
from agent.config.sentinel_url import SentinelTarget, parse_any_redis_url
from agent.config.tls import TlsMaterial
from agent.config.urls import RedisTarget
from agent.config.values import ConfigError, choice, parse_bool, parse_duration


@dataclass(frozen=True, slots=True)
class RedisCheckConfig(CheckConfig):
    """One Redis to check. Built, it is valid: IAM only over TLS (its files are read by ``validate_files``)."""

    kind: ClassVar[str] = "redis"
    extra_keys: ClassVar[tuple[str, ...]] = ("url",)
    redis: RedisTarget | None = None  # with Sentinel, the data node's template (address from the sentinels)
    sentinel: SentinelTarget | None = None
    password_file: str | None = key(shared=True)
    ca_file: str | None = key(shared=True)
    cert_file: str | None = key(shared=True)
    key_file: str | None = key(shared=True)
    tls_server_name: str | None = key(shared=True)
    tls_skip_hostname_check: bool = key(False, parse_bool, shared=True)
    sentinel_password_file: str | None = key(shared=True)
    auth: str = key("password", choice("password", "iam"), shared=True)
    write_canary: bool = key(False, parse_bool, shared=True)
    pubsub_roundtrip: bool = key(False, parse_bool, shared=True)
    canary_interval: float = key(10.0, parse_duration, shared=True)
    # a new connection proves a new client's view this often (0: never)
    fresh_connection_interval: float = key(30.0, parse_duration, shared=True)
    require_master: bool = key(False, parse_bool)  # an entry's default: true for a Sentinel URL
    maintenance_key: str | None = key()
    sentinel_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.auth == "iam" and self.tls() is None:
            raise ConfigError(f"invalid check {self.name!r}: IAM authentication needs a rediss:// URL "
                              f"({self.describe()}): a token never crosses the network in clear")

    @classmethod
    def for_url(cls, name: str, required: bool, target: RedisTarget | SentinelTarget,
                **rest: Any) -> RedisCheckConfig:
        """A Redis check on a plain or a Sentinel URL."""
        if isinstance(target, SentinelTarget):
            return cls(name=name, required=required, redis=target.template, sentinel=target, **rest)
        return cls(name=name, required=required, redis=target, **rest)

    @classmethod
    def from_entry(cls, name: str, required: bool, entry: Entry, shared: Mapping[str, Any]) -> RedisCheckConfig:
        target = entry.require(entry.get("url", parse_any_redis_url), "a redis check needs a url")
        values = entry.fields(cls, shared)
        # A Sentinel URL names a master: a replica there is a failover not yet followed.
        values["require_master"] = entry.get("require_master", parse_bool, isinstance(target, SentinelTarget))
        return cls.for_url(name, required, target, **values, sentinel_password=shared.get("sentinel_password"))

    def tls(self) -> TlsMaterial | None:
        if self.redis is not None and self.redis.tls:
            return TlsMaterial(self.ca_file, self.cert_file, self.key_file, self.tls_server_name,
                               check_hostname=not self.tls_skip_hostname_check)
        return None

    def describe(self) -> str:
        if self.sentinel is not None:
            return self.sentinel.redacted
        assert self.redis is not None
        return self.redis.redacted
