"""Redis URLs: parsed by hand, and shown only in a form rebuilt from the parsed parts.

A regex over the raw string cannot redact reliably: generated passwords contain ``/``, ``@``, ``:``, ``#`` and
``?``, which move where a generic URL parser thinks the host starts. So the userinfo is everything before the
*last* ``@`` (a host never contains one), and what is printed anywhere (logs, ``/status``, errors) is rebuilt
from the parsed host, port and db with the credentials replaced by ``***``. A string that does not parse is
shown with everything between ``//`` and the last ``@`` masked.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import unquote

from agent.values import parse_text

SCHEMES = ("redis", "rediss")
DEFAULT_PORT = 6379
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.%A-Za-z]+\]|[^:\[\]/?#@]*)(?::([^/?#]*))?$", re.S)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis://`` / ``rediss://`` URL. ``username`` and ``password`` are never printed (in
    ``redis://SECRET@host`` the user name *is* the secret): use ``redacted``."""

    tls: bool
    host: str
    port: int
    db: int
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    redacted: str


def redact_url(text: str) -> str:
    """``text`` with its credentials masked: rebuilt from the parsed URL, or masked by position if unparsable."""
    try:
        return parse_redis_url(text).redacted
    except ValueError:
        pass
    match = _SCHEME.match(text)
    if not match:
        return text if "@" not in text else "***@" + text.rpartition("@")[2]
    scheme, rest = match.groups()
    if "@" not in rest:
        return text
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _port(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_PORT
    if not re.fullmatch(r"[0-9]{1,5}", text, re.ASCII) or not 1 <= int(text) <= 65535:
        raise ValueError("has a port that is not 1-65535")
    return int(text)


def split_url(raw: object, schemes: Collection[str]) -> tuple[str, str | None, str]:
    """A URL's lower-cased scheme (one of ``schemes``), its userinfo (up to the *last* ``@``, None without
    one) and the rest; the error names the schemes expected."""
    text = parse_text(raw)
    match = _SCHEME.match(text)
    if not match or match.group(1).lower() not in schemes:
        raise ValueError("must start with " + " or ".join(f"{s}://" for s in schemes))
    scheme, rest = match.group(1).lower(), match.group(2)
    userinfo: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
    return scheme, userinfo, rest


def parse_redis_url(raw: object) -> RedisTarget:
    """Validate a Redis URL: scheme, credentials, host, port (1-65535), db index (ASCII digits)."""
    scheme, userinfo, rest = split_url(raw, SCHEMES)
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if tail.startswith(("?", "#")) or "?" in tail or "#" in tail:
        raise ValueError("must not carry ?options or #fragments (use flags or the config file)")
    where = _HOST_PORT.match(authority)
    if not where or not where.group(1).strip("[]"):
        raise ValueError("has no host")
    host = where.group(1)
    port = _port(where.group(2))
    db_text = tail.lstrip("/") or "0"
    if not re.fullmatch(r"[0-9]{1,7}", db_text, re.ASCII) or int(db_text) > 1_000_000:
        raise ValueError("has a database index that is not a whole number")
    username: str | None = None
    password: str | None = None
    shown_user = ""
    if userinfo is not None:
        user_text, colon, password_text = userinfo.partition(":")
        if colon:
            username = unquote(user_text) or None
            password = unquote(password_text)
            shown_user = f"{user_text}:***@" if _plain(user_text) else "***:***@"
        else:
            username = unquote(user_text) or None  # redis-py's reading; often a password: never shown
            shown_user = "***@"
    port_text = f":{port}" if where.group(2) else ""
    redacted = f"{scheme}://{shown_user}{host}{port_text}{'/' + db_text if tail else ''}"
    return RedisTarget(
        tls=scheme == "rediss",
        host=host.strip("[]"),
        port=port,
        db=int(db_text),
        username=username,
        password=password,
        redacted=redacted,
    )


def _plain(user: str) -> bool:
    """A user name that is safe to print: short, and only the characters user names are made of."""
    return bool(re.fullmatch(r"[A-Za-z0-9._-]{0,64}", user, re.ASCII))
