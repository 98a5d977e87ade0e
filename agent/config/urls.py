"""Redis URLs read exactly as redis-py reads them, refused where redis-py would fail or misread them.

Teams put one ``REDIS_URL`` in the app and the agent: a readiness agent that reads it differently from the
app's client can be green while the app cannot connect. So the URL is split by the same standard-library
functions redis-py's ``parse_url`` uses (``urlsplit``, ``parse_qs``, ``unquote``), giving the same host, port,
db, user, password and TLS, and refused (one line saying why) where redis-py would raise or read something the
writer did not mean: an ``@`` after the host (a password holding ``/``, ``?`` or ``#`` unencoded: redis-py
reads the host from before it), a path that is not a db index (redis-py drops it silently, or reads ``/1/2``
as db 12), a ``#fragment`` (dropped), an empty host (redis-py falls back to localhost), and ``?options`` that
choose the server or TLS (the agent takes TLS from its own flags). tests/test_urls.py keeps this true with
redis-py's ``parse_url`` as the oracle.

What is printed anywhere (logs, ``/status``, errors) is rebuilt from the parsed parts with the credentials
replaced by ``***``; a string that does not parse is shown with everything between ``//`` and the last ``@``,
and any ``?query`` or ``#fragment`` after it, masked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from agent.config.values import parse_text

SCHEMES = ("redis", "rediss")
DEFAULT_PORT = 6379
MAX_DB = 1_000_000
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_HOST_PORT = re.compile(r"^(\[[^\[\]]*\]|[^:\[\]]*)(?::([^:\[\]]*))?$", re.S)
_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?", re.ASCII)
_DB_PATH = re.compile(r"/*([0-9]*)/*", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,7}", re.ASCII)
_ENCODE = "percent-encode / ? # @ in a password as %2F %3F %23 %40"
_FALSE = ("0", "F", "FALSE", "N", "NO")


def _int(text: str) -> object:
    return int(text)


def _float(text: str) -> object:
    return float(text)


def _bool(text: str) -> object:
    return text.upper() not in _FALSE


def _protocol(text: str) -> object:
    if int(text) not in (2, 3):
        raise ValueError(text)
    return int(text)


def _exception_names(text: str) -> object:
    names = [name.strip() for name in text.replace("[", "").replace("]", "").split(",")]
    if not all(re.fullmatch(r"[A-Z][A-Za-z]*(Error|Exception)", name, re.ASCII) for name in names):
        raise ValueError(text)
    return names


# ?options redis-py reads that tune only the client's own timeouts, pool and replies: checked as redis-py parses
# them, then left alone (the agent keeps its own timeouts; none of them changes the server, user or TLS).
IGNORED_OPTIONS: dict[str, Callable[[str], object]] = {
    "socket_timeout": _float, "socket_connect_timeout": _float, "timeout": _float,
    "socket_keepalive": _bool, "retry_on_timeout": _bool, "decode_responses": _bool, "legacy_responses": _bool,
    "socket_read_size": _int, "max_connections": _int, "health_check_interval": _int, "protocol": _protocol,
    "retry_on_error": _exception_names, "client_name": str, "lib_name": str, "lib_version": str,
    "encoding": str, "encoding_errors": str,
}
READ_OPTIONS = ("db", "username", "password")


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
    scheme, rest = match.groups() if match else ("", text)
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    cut = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=-1)
    if cut >= 0:
        rest = rest[:cut + 1] + "***"  # a query may hold ?password=
    return f"{scheme}://{rest}" if match else rest


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


def parse_userinfo(userinfo: str | None) -> tuple[str | None, str | None, str]:
    """``user:password`` as redis-py reads it (percent-decoded; an empty part is None; without a colon the whole
    is the user name) and how it is shown: ``user:***@`` for a plain user name, else masked whole."""
    if userinfo is None:
        return None, None, ""
    user_text, colon, password_text = userinfo.partition(":")
    username = unquote(user_text) or None
    password = (unquote(password_text) or None) if colon else None
    if not colon:
        return username, None, "***@"  # redis-py's reading; often a password: never shown
    return username, password, f"{user_text}:***@" if _plain(user_text) else "***:***@"


def parse_db(text: str) -> int:
    """A db index: ASCII digits, at most 1,000,000."""
    if not _DIGITS.fullmatch(text) or int(text) > MAX_DB:
        raise ValueError("has a database index that is not a whole number 0-1000000")
    return int(text)


def _host(hostname: str | None) -> str:
    """redis-py's host (lower-cased by urlsplit, then percent-decoded): a DNS name, IPv4 or IPv6 address."""
    host = unquote(hostname or "")
    if not host:
        raise ValueError("has no host (redis-py would connect to localhost)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has a host that is not an IPv6 address inside [ ]") from None
    elif not _NAME.fullmatch(host):
        raise ValueError("has a host that is not a DNS name or IP address")
    return host


def _options(query: str) -> dict[str, str]:
    """The ?options redis-py reads (first value of each, blanks dropped), each checked as redis-py parses it."""
    options = {name: values[0] for name, values in parse_qs(query).items() if values}
    for name, value in options.items():
        if name.startswith("ssl_"):
            raise ValueError(f"has ?{name}=: TLS options are not read from the URL, so the agent's TLS would "
                             "differ from the app's; set --redis-ca-file, --redis-cert-file, --redis-key-file "
                             "or --redis-tls-skip-hostname-check instead")
        if name in READ_OPTIONS:
            continue
        parser = IGNORED_OPTIONS.get(name)
        if parser is None:
            raise ValueError(f"has ?{name}=, which redis-py does not read as a connection option "
                             "(put the host, port and db in the URL itself)")
        try:
            parser(value)
        except ValueError:
            raise ValueError(f"has an invalid value for ?{name}= (redis-py refuses it)") from None
    return options


def parse_redis_url(raw: object) -> RedisTarget:
    """Read a Redis URL as redis-py reads it; refuse what redis-py would refuse or misread (see the docstring)."""
    text = parse_text(raw) if not isinstance(raw, str) else raw.rstrip("\t\r\n")  # urlsplit drops these
    if not text or text != text.strip() or re.search(r"[\x00-\x1f\x7f]", text):
        raise ValueError("has a space before or after it or a control character in it (redis-py refuses a "
                         "leading space and reads a trailing one into the host, port or db)")
    scheme, _, _ = split_url(text, SCHEMES)
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("has a malformed host (unbalanced [ ] or an invalid IPv6 address)") from None
    if "@" in text[len(scheme) + 3 + len(parts.netloc):]:
        raise ValueError(f"has an @ after the host: redis-py reads the host from before it ({_ENCODE})")
    if parts.fragment or text.endswith("#"):
        raise ValueError(f"has a #fragment, which redis-py drops ({_ENCODE})")
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    where = _HOST_PORT.fullmatch(hostinfo)
    if not where:
        raise ValueError("has a host:port that is not HOST:PORT or [IPV6]:PORT")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (where.group(2) and not port):
        raise ValueError("has a port that is not 1-65535")
    host = _host(parts.hostname)
    path = _DB_PATH.fullmatch(parts.path)
    if not path:
        raise ValueError("has a path that is not /<database index> in ASCII digits (redis-py drops "
                         "another path and uses db 0, or reads /1/2 as db 12)")
    options = _options(parts.query)
    db_text = options.get("db", path.group(1))
    db = parse_db(db_text) if db_text else 0
    username, password, shown_user = parse_userinfo(userinfo if at else None)
    if (username is None and "username" in options) or (password is None and "password" in options):
        username, password, shown_user = username or options.get("username"), password or options.get(
            "password"), "***:***@"  # redis-py: the URL's own user or password wins over ?username= ?password=
    shown_host = f"[{host}]" if ":" in host else host
    port_text = f":{port}" if port else ""
    return RedisTarget(
        tls=scheme == "rediss",
        host=host,
        port=port or DEFAULT_PORT,
        db=db,
        username=username,
        password=password,
        redacted=f"{scheme}://{shown_user}{shown_host}{port_text}{'/' + str(db) if db_text else ''}",
    )


def _plain(user: str) -> bool:
    """A user name that is safe to print: short, and only the characters user names are made of."""
    return bool(re.fullmatch(r"[A-Za-z0-9._-]{0,64}", user, re.ASCII))
