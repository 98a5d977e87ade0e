"""Value parsers for settings: durations, counts, booleans, choices, listen addresses.

Each parser takes what a flag, an environment variable or a YAML value holds and returns a typed value or raises
``ValueError`` with a short reason; config.py adds where the value came from. Numbers are ASCII only: a
``٣`` or ``５`` that Python's ``int`` would accept is a typo, not a setting.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class ConfigError(Exception):
    """A bad configuration value; the message is one line and names the key and the value."""


_DURATION = re.compile(r"^[ \t]*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)[ \t]*(ms|s|m|h)?[ \t]*$", re.ASCII)
_FRACTION = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?", re.ASCII)
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_WEEK = 86400 * 7


def _number(raw: object, expected: str) -> float | None:
    """A YAML number as a float, None for text (the caller parses it); a boolean is refused with ``expected``."""
    if isinstance(raw, bool):
        raise ValueError(expected)
    return float(raw) if isinstance(raw, int | float) else None


def parse_duration(raw: object) -> float:
    """Seconds from ``0.5``, ``500ms``, ``2s``, ``1m``; negative, NaN and infinite values are refused."""
    value = _number(raw, "expected a duration such as 0.5, 500ms, 2s or 1m")
    if value is None:
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
    if value > _WEEK:
        raise ValueError("is longer than a week")
    return value


def parse_positive_int(raw: object) -> int:
    """A whole number from 1 to 1,000,000, in ASCII digits."""
    if isinstance(raw, bool):
        raise ValueError("expected a whole number ≥ 1")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip(" \t")
        if not re.fullmatch(r"\+?[0-9]+", text, re.ASCII):
            raise ValueError("expected a whole number ≥ 1")
        value = int(text)
    if value < 1 or value > 1_000_000:
        raise ValueError("expected a whole number from 1 to 1000000")
    return value


def parse_fraction(raw: object) -> float:
    """A fraction from 0 to 0.5 (``0.2`` is ± 20 %)."""
    value = _number(raw, "expected a fraction from 0 to 0.5")
    if value is None:
        text = str(raw).strip(" \t")
        if not _FRACTION.fullmatch(text):  # float() would take "٠.٢" and NBSP: ASCII only
            raise ValueError("expected a fraction from 0 to 0.5")
        value = float(text)
    if not 0 <= value <= 0.5:
        raise ValueError("expected a fraction from 0 to 0.5")
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


def choice(*allowed: str) -> Callable[[object], str]:
    """A parser accepting one of ``allowed`` (case-insensitive)."""

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


def host_port(host: str, port: int) -> str:
    """``host:port`` as a person writes it: ``[v6]:port`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the HTTP server listens; ``host`` may be IPv4 or IPv6 (``[::]:9180``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)


def parse_listen(raw: object) -> Listen:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all IPv4 addresses)."""
    text = parse_text(raw)
    match = re.match(r"^(?:\[([0-9a-fA-F:.%a-zA-Z]+)\]|([^:\[\]]*)):([0-9]{1,5})$", text, re.ASCII)
    if not match:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT or :PORT")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    port = int(match.group(3))
    if port > 65535:
        raise ValueError("port must be 0-65535")
    return Listen(host, port)


def parse_port(raw: object) -> int:
    """A TCP port, 0-65535 (0: the listener is off)."""
    if isinstance(raw, bool) or not re.fullmatch(r"[0-9]{1,5}", str(raw).strip(" \t"), re.ASCII):
        raise ValueError("expected a port number 0-65535 (0: off)")
    value = int(str(raw).strip(" \t"))
    if value > 65535:
        raise ValueError("expected a port number 0-65535 (0: off)")
    return value


def parse_tcp_address(raw: object) -> tuple[str, int]:
    """``HOST:PORT`` for TCP checks."""
    listen = parse_listen(raw)
    if listen.port == 0:
        raise ValueError("port must be 1-65535")
    return listen.host, listen.port


def shown(raw: object, limit: int = 80) -> str:
    """A value as quoted in an error message: ``repr`` of its text, cut to ``limit`` characters."""
    text = str(raw)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def closest(name: object, known: Iterable[str]) -> str | None:
    """The known name a typo of ``name`` most likely meant (case and ``-``/``_`` aside), or None."""
    by_form = {k.replace("-", "_").lower(): k for k in known}
    close = difflib.get_close_matches(str(name).replace("-", "_").lower(), sorted(by_form), n=1, cutoff=0.6)
    return by_form[close[0]] if close else None


def unknown_key(key: object, where: str, known: Iterable[str]) -> ConfigError:
    """The one wording for an unknown key, at the top level of the file or in ``checks[i]``: with a
    "did you mean" from the known keys when one is close, else the list of known keys."""
    names = sorted(set(known))
    close = closest(key, names)
    hint = f"did you mean {close!r}?" if close else "known keys: " + ", ".join(names)
    return ConfigError(f"unknown key {shown(key)} in {where}; {hint}")
