"""The ``checks:`` list of the YAML file: what every check entry shares, and how a kind's own keys are read.

Each check kind declares its own config type (a frozen dataclass deriving from :class:`CheckConfig`) next to
its check, and its YAML keys as fields made with :func:`key`; the registry (``agent.checks.KINDS``) maps a
``type:`` to that class. This module knows no kind, so adding one touches its own module, the registry and the
docs. Building a config does no I/O: the files it names are checked by :meth:`CheckConfig.validate_files`,
which the loader calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from agent.config.tls import TlsFileError, TlsMaterial
from agent.config.urls import redact_url
from agent.config.values import ConfigError, choice, parse_bool, parse_text, shown, unknown_key

CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$", re.ASCII)
COMMON_KEYS = ("name", "type", "required")
MAX_CHECKS = 128  # each check holds a connection and a task; the scale benchmark runs 100


def key(default: Any = None, parse: Callable[[object], Any] = parse_text, *, yaml: str | None = None,
        shared: bool = False) -> Any:
    """A dataclass field read from a check entry's ``yaml`` key (the field's name by default) with ``parse``.

    ``shared``: the entry inherits the global setting ``redis_<key>`` unless it sets the key itself.
    """
    return field(default=default, metadata={"parse": parse, "yaml": yaml, "shared": shared})


def yaml_keys(config: type[CheckConfig]) -> dict[str, str]:
    """YAML key → field name, for the keys a kind reads from its entry."""
    declared = {f.metadata["yaml"] or f.name: f.name for f in fields(config) if "parse" in f.metadata}
    return {**{k: k for k in config.extra_keys}, **declared}


def shared_keys(config: type[CheckConfig]) -> tuple[str, ...]:
    """The keys an entry of this kind inherits from the global ``redis_<key>`` settings."""
    return tuple(f.name for f in fields(config) if f.metadata.get("shared"))


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """What every check has: a name and whether it gates readiness. ``kind`` is the registry's key."""

    kind: ClassVar[str] = ""
    extra_keys: ClassVar[tuple[str, ...]] = ()  # YAML keys a kind reads itself in ``from_entry`` (a URL)
    name: str
    required: bool

    @classmethod
    def from_entry(cls, name: str, required: bool, entry: Entry, shared: Mapping[str, Any]) -> CheckConfig:
        """This kind's config from one ``checks:`` entry (its own keys read with ``entry.fields``/``entry.get``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A secret-free description for logs and /status."""
        raise NotImplementedError

    def tls(self) -> TlsMaterial | None:
        """The TLS material for this check's connections (None without TLS)."""
        return None

    def validate_files(self) -> None:
        """Read the files this check names now, so a mistake is one line at start (exit 2), not a failing check."""
        tls = self.tls()
        if tls is not None:
            try:
                tls.validate()
            except TlsFileError as exc:
                raise ConfigError(f"invalid check {self.name!r}: {exc.detail}") from None


class Entry:
    """One ``checks:`` entry: its values parsed on demand, each error one line naming the key and the entry."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw = raw
        self.where = where

    def get(self, key: str, parse: Callable[[object], Any], default: object = None) -> Any:
        if key not in self.raw or self.raw[key] is None:
            return default
        try:
            return parse(self.raw[key])
        except ValueError as exc:
            value = redact_url(str(self.raw[key])) if key == "url" else self.raw[key]
            raise ConfigError(f"invalid {key} in {self.where} {shown(value)}: {exc}") from None

    def fields(self, config: type[CheckConfig], shared: Mapping[str, Any]) -> dict[str, Any]:
        """Every field the kind declares with :func:`key`, from the entry or else its default or shared value."""
        values: dict[str, Any] = {}
        for f in fields(config):
            if "parse" not in f.metadata:
                continue
            default = shared[f.name] if f.metadata["shared"] else f.default
            values[f.name] = self.get(f.metadata["yaml"] or f.name, f.metadata["parse"], default)
        return values

    def require(self, value: Any, what: str) -> Any:
        if value is None:
            raise ConfigError(f"invalid {self.where}: {what}")
        return value


def parse_checks(entries: object, path: str | None, shared: Mapping[str, Any],
                 kinds: Mapping[str, type[CheckConfig]]) -> list[CheckConfig]:
    """The file's ``checks:`` list; ``shared`` holds the ``redis_*`` settings each entry inherits."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"invalid checks in {path}: expected a non-empty list of checks")
    if len(entries) > MAX_CHECKS:
        raise ConfigError(f"invalid checks in {path}: {len(entries)} checks, at most {MAX_CHECKS}")
    # Any kind's key is accepted on every entry, as before kinds had types of their own.
    known = tuple(dict.fromkeys([*COMMON_KEYS, *(k for kind in kinds.values() for k in yaml_keys(kind))]))
    return [_parse_check(entry, index, path, shared, kinds, known) for index, entry in enumerate(entries)]


def _parse_check(raw: object, index: int, path: str | None, shared: Mapping[str, Any],
                 kinds: Mapping[str, type[CheckConfig]], known: tuple[str, ...]) -> CheckConfig:
    where = f"checks[{index}] in {path}"
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid {where}: expected a mapping with name, type and url/address")
    for name in raw:
        if name not in known:
            raise unknown_key(name, f"checks[{index}] in config file {path!r}", known)
    entry = Entry(raw, where)
    check_name = entry.get("name", parse_text)
    if check_name is None or not CHECK_NAME.match(check_name):
        raise ConfigError(
            f"invalid name in {where} {shown(raw.get('name'))}: "
            "expected lowercase letters, digits, '-' or '_' (it becomes a metric label and a URL path)"
        )
    kind = entry.get("type", choice(*kinds), "redis")
    return kinds[kind].from_entry(check_name, entry.get("required", parse_bool, True), entry, shared)
