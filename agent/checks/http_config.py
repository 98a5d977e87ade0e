"""An HTTP check's configuration: what it GETs and which statuses count as healthy, parsed and shown without I/O.

Kept apart from the check itself (checks/http.py, which needs aiohttp) so the configuration layer can validate
``type: http`` entries without importing a client, and so the shown target never carries a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from agent.checks.config import CheckConfig, Entry, key
from agent.config.tls import TlsMaterial

DEFAULT_STATUS = (200, 399)
_RANGE = re.compile(r"^([1-5])xx$|^([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?$", re.ASCII)


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """What to GET and what counts as healthy."""

    url: str
    status: tuple[int, int] = DEFAULT_STATUS
    ca_file: str | None = None

    @property
    def redacted(self) -> str:
        """``scheme://host[:port]/path``: no user info, no query, no fragment."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def parse_http_url(raw: object) -> str:
    """An ``http://`` or ``https://`` URL with a host; ``ValueError`` naming what is wrong (never the URL)."""
    text = str(raw).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if port == 0:
        raise ValueError("port 0 is not a port")
    return text


def parse_status_range(raw: object) -> tuple[int, int]:
    """``200``, ``200-299`` or ``2xx`` into an inclusive range of status codes."""
    text = str(raw).strip()
    match = _RANGE.match(text)
    if match is None:
        raise ValueError("expected a status code (204), a range (200-299) or a class (2xx)")
    if match.group(1):
        first = int(match.group(1)) * 100
        return first, first + 99
    low = int(match.group(2))
    high = int(match.group(3) or low)
    if high < low:
        raise ValueError("the range ends before it starts")
    return low, high


@dataclass(frozen=True, slots=True)
class HttpCheckConfig(CheckConfig):
    """A ``type: http`` entry: the URL, the healthy status range, and a CA bundle for ``https://``."""

    kind: ClassVar[str] = "http"
    url: str = key("", parse_http_url)
    expect_status: tuple[int, int] = key(DEFAULT_STATUS, parse_status_range)
    ca_file: str | None = key()

    @classmethod
    def from_entry(cls, name: str, required: bool, entry: Entry, shared: Mapping[str, Any]) -> HttpCheckConfig:
        entry.require(entry.get("url", parse_http_url), "an http check needs a url")
        return cls(name=name, required=required, **entry.fields(cls, shared))

    @property
    def http(self) -> HttpTarget:
        return HttpTarget(self.url, self.expect_status, self.ca_file)

    def tls(self) -> TlsMaterial | None:
        if self.url.lower().startswith("https:") and self.ca_file:
            return TlsMaterial(self.ca_file)
        return None

    def describe(self) -> str:
        return self.http.redacted
