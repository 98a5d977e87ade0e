"""Sentinel URLs: ``redis+sentinel://[[user]:password@]host:port[,host:port…]/<master-name>[/<db>]``, by hand.

Why by hand: a comma-separated host list is not an authority ``urlsplit`` understands (it takes
``h1:26379,h2`` for a host and ``26379`` for a port), and passwords hold ``/``, ``@``, ``,`` and ``:``. As in
urls.py, the userinfo is everything before the *last* ``@`` (no host holds one); the credentials themselves are
validated by the same parser as a ``redis://`` URL (they are the *data node's* credentials; the sentinels'
own password is a separate setting), and what is printed is rebuilt from the parsed parts with credentials
as ``***``. ``rediss+sentinel://`` means TLS to the data node; the sentinels are spoken to in plain TCP, as
Sentinel deployments (Bitnami's chart among them) serve them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.config.urls import RedisTarget, parse_db, parse_redis_url, parse_userinfo, split_url
from agent.config.values import parse_text

SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
DEFAULT_SENTINEL_PORT = 26379
MAX_SENTINELS = 16
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$", re.ASCII)
_MASTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", re.ASCII)


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed Sentinel URL. ``password`` (the data node's) is never printed: use ``redacted``."""

    tls: bool
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None
    password: str | None = field(repr=False)
    redacted: str

    @property
    def template(self) -> RedisTarget:
        """The data node's TLS, credentials and db, before any sentinel has named its address."""
        return RedisTarget(tls=self.tls, host="", port=0, db=self.db, username=self.username,
                           password=self.password, redacted=self.redacted)

    def data_target(self, host: str, port: int) -> RedisTarget:
        """The data node the sentinels named, as a :class:`RedisTarget` with this URL's credentials and db."""
        shown_host = f"[{host}]" if ":" in host else host
        return RedisTarget(tls=self.tls, host=host, port=port, db=self.db, username=self.username,
                           password=self.password, redacted=f"{self.redacted} ({shown_host}:{port})")


def is_sentinel_url(text: str) -> bool:
    """True when ``text`` starts with ``redis+sentinel://`` or ``rediss+sentinel://`` (any case)."""
    match = _SCHEME.match(text)
    return bool(match) and match.group(1).lower() in SCHEMES  # type: ignore[union-attr]


def parse_any_redis_url(raw: object) -> RedisTarget | SentinelTarget:
    """A ``redis://`` / ``rediss://`` URL, or a ``redis+sentinel://`` / ``rediss+sentinel://`` one."""
    text = parse_text(raw)
    if is_sentinel_url(text):
        return parse_sentinel_url(text)
    try:
        return parse_redis_url(text)
    except ValueError as exc:
        if str(exc).startswith("must start with"):
            raise ValueError("must start with redis://, rediss://, redis+sentinel:// or rediss+sentinel://") from None
        raise


def _sentinel_address(text: str) -> tuple[str, int]:
    match = _HOST_PORT.match(text)
    if not match:
        raise ValueError("has a sentinel that is not HOST:PORT")
    port = int(match.group(2)) if match.group(2) else DEFAULT_SENTINEL_PORT
    if not 1 <= port <= 65535:
        raise ValueError("has a sentinel port that is not 1-65535")
    return match.group(1).strip("[]"), port


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_sentinel_url(raw: object) -> SentinelTarget:
    """Validate a Sentinel URL: scheme, credentials, 1 to 16 sentinels, master name, db index."""
    scheme, userinfo, rest = split_url(raw, SCHEMES)
    if "?" in rest or "#" in rest:
        raise ValueError("must not carry ?options or #fragments (use flags or the config file)")
    hosts_text, slash, path = rest.partition("/")
    hosts = hosts_text.split(",")
    if not hosts_text or any(not h for h in hosts):
        raise ValueError("has no sentinel HOST:PORT (or an empty one between commas)")
    if len(hosts) > MAX_SENTINELS:
        raise ValueError(f"has {len(hosts)} sentinels, at most {MAX_SENTINELS}")
    sentinels = tuple(_sentinel_address(h) for h in hosts)
    name, _, db_text = path.partition("/")
    if not slash or not _MASTER_NAME.match(name):
        raise ValueError("needs /<master-name> after the sentinels (letters, digits, '.', '_', '-')")
    if db_text.endswith("/"):
        db_text = db_text[:-1]
    # The credentials and the db index are read as in a redis:// URL (here the userinfo runs to the last @).
    username, password, shown_user = parse_userinfo(userinfo)
    db = parse_db(db_text) if db_text else 0
    redacted = (f"{scheme}://{shown_user}"
                f"{','.join(_shown(h, p) for h, p in sentinels)}/{name}{'/' + db_text if db_text else ''}")
    return SentinelTarget(tls=SCHEMES[scheme] == "rediss", sentinels=sentinels, master_name=name, db=db,
                          username=username, password=password, redacted=redacted)
