"""Redis URLs read as redis-py reads them (its ``parse_url`` is the oracle), refused where it would fail or misread."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import SSLConnection, parse_url

from agent.config.loader import load_settings
from agent.config.platform import Platform
from agent.config.urls import RedisTarget, parse_redis_url, redact_url
from agent.config.values import ConfigError


def oracle(url: str) -> dict[str, Any]:
    """What redis-py's client connects with: host, port, db, user, password and TLS (its defaults filled in)."""
    kwargs = parse_url(url)
    return {"host": kwargs.get("host", "localhost"), "port": int(kwargs.get("port", 6379)),
            "db": kwargs.get("db", 0), "username": kwargs.get("username"), "password": kwargs.get("password"),
            "tls": kwargs.get("connection_class") is SSLConnection}


def reading(t: RedisTarget) -> dict[str, Any]:
    return {"host": t.host, "port": t.port, "db": t.db, "username": t.username, "password": t.password,
            "tls": t.tls}


def agrees_or_refuses(url: str) -> RedisTarget | None:
    """The property: redis-py refuses → the agent refuses; the agent accepts → redis-py reads the same parts and
    builds a connection from the URL's options (an unknown option or bad protocol fails there, not in parse_url)."""
    try:
        expected = oracle(url)
    except ValueError:
        expected = None
    try:
        target = parse_redis_url(url)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return None
    assert expected is not None, f"redis-py refuses {url!r}, the agent read {reading(target)}"
    assert reading(target) == expected, url
    pool = redis.BlockingConnectionPool if "timeout" in parse_qs(urlsplit(url).query) else redis.ConnectionPool
    pool.from_url(url).make_connection()  # ?timeout= is the blocking pool's wait
    return target


TRICKY = st.sampled_from(["a", "B", "0", "9", ":", "@", "/", "?", "#", "%", "%2F", "%40", "%3", "[", "]", "=",
                          "&", ".", "-", "_", " ", "+", "٣", "::1", "[::1]", "db=", "db=2", "/0", ":6380",
                          "?db=1", "password=x", "ssl_cert_reqs=none", "protocol=3", "socket_timeout=1.5"])


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(["redis://", "rediss://", "REDIS://", "unix://", "http://", " redis://"]),
       st.lists(TRICKY, max_size=12).map("".join))
def test_any_url_is_read_as_redis_py_reads_it_or_refused(scheme: str, rest: str) -> None:
    """Any string over the characters that move URL parts: the agent refuses it or reads redis-py's parts."""
    agrees_or_refuses(scheme + rest)


HOSTS = st.one_of(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
                  st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
OPTIONS = st.lists(st.sampled_from([("db", "2"), ("socket_timeout", "1.5"), ("protocol", "3"), ("timeout", "2"),
                                     ("retry_on_timeout", "yes"), ("health_check_interval", "10"),
                                     ("client_name", "web"), ("max_connections", "50")]),
                   unique_by=lambda kv: kv[0], max_size=3).map(dict)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["redis", "rediss"]), st.none() | st.text(max_size=12), st.none() | st.text(max_size=24),
       HOSTS, st.none() | st.integers(1, 65535), st.none() | st.integers(0, 15), OPTIONS)
def test_a_url_built_by_the_book_is_accepted(scheme: str, user: str | None, password: str | None, host: str,
                                              port: int | None, db: int | None, options: dict[str, str]) -> None:
    """Percent-encoded credentials of any characters, any host, port, db and ordinary ?options: read as redis-py
    reads them, never refused."""
    userinfo = "" if user is None and password is None else (
        quote(user or "", safe="") + ("" if password is None else ":" + quote(password, safe="")) + "@")
    url = (f"{scheme}://{userinfo}{host}{'' if port is None else f':{port}'}{'' if db is None else f'/{db}'}"
           + ("?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else ""))
    assert agrees_or_refuses(url) is not None, url


class TestParse:
    def test_plain_url_has_no_credentials(self) -> None:
        """Without userinfo there is no user and no password, and the redacted form is the URL itself."""
        t = parse_redis_url("redis://h")
        assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("h", 6379, 0, None, None, False)
        assert t.redacted == "redis://h"
        assert parse_redis_url("rediss://h:6380/2").redacted == "rediss://h:6380/2"

    def test_percent_encoded_password_holds_any_character(self) -> None:
        """A password with @ : / ? # is percent-encoded, as redis-py needs it; the redacted form hides it."""
        t = agrees_or_refuses("redis://u:p%40s:s%2Fx%3F%23@h:1/3")
        assert t is not None and (t.username, t.password, t.host, t.port, t.db) == ("u", "p@s:s/x?#", "h", 1, 3)
        assert t.redacted == "redis://u:***@h:1/3"

    @pytest.mark.parametrize("url", ["redis://:pa/ss@10.0.0.3:6379/0", "redis://u:p@s:s/x@h:1/3",
                                     "redis://a/b@h", "redis://u:1?w@h/0", "redis://:pa#ss@h"])
    def test_an_unencoded_slash_question_or_hash_in_the_password_is_refused(self, url: str) -> None:
        """redis-py reads the host from before the first / ? #: it fails ("Port could not be cast") or connects
        to the wrong host, so the agent refuses, saying how to encode the password."""
        with pytest.raises(ValueError, match="percent-encode"):
            parse_redis_url(url)
        assert agrees_or_refuses(url) is None

    def test_the_db_query_option_wins_over_the_path(self) -> None:
        """``?db=2`` is redis-py's db, over the path's; options that tune only the client are accepted."""
        t = agrees_or_refuses("redis://h/0?db=2&socket_timeout=1.5&protocol=3&retry_on_timeout=yes")
        assert t is not None and t.db == 2 and t.redacted == "redis://h/2"

    def test_credentials_in_the_query_are_read_and_never_shown(self) -> None:
        """``?password=`` is redis-py's password when the URL has none; it is masked like one."""
        t = agrees_or_refuses("redis://h?username=app&password=s3cret")
        assert t is not None and (t.username, t.password) == ("app", "s3cret")
        assert "s3cret" not in t.redacted and "s3cret" not in redact_url("redis://h?password=s3cret&db=x")

    @pytest.mark.parametrize(("url", "why"), [
        ("redis://h/1/2", "path"), ("redis://h/x", "path"), ("redis://h/0#f", "fragment"),
        ("redis://h?ssl_cert_reqs=none", "--redis-ca-file"), ("rediss://h?ssl_ca_certs=/ca", "TLS"),
        ("redis://h?host=other", "does not read"), ("redis://h?a=1", "does not read"),
        ("redis://h?protocol=4", "invalid value"), ("redis://:6380/0", "localhost"), (" redis://h", "space"),
        ("redis://h:0", "port"), ("redis://h:65536", "port"), ("redis://h/1000001", "database"),
        ("redis://[h]", "IPv6"), ("redis://h/٣", "path")])
    def test_what_redis_py_misreads_or_refuses(self, url: str, why: str) -> None:
        """/1/2 is db 12 to redis-py, /x and #f are dropped, TLS options would make the agent's TLS differ, an
        unknown option fails redis-py's connection, an empty host is localhost: each refused with its reason."""
        with pytest.raises(ValueError, match=why):
            parse_redis_url(url)

    def test_userinfo_without_colon_is_a_user_and_never_shown(self) -> None:
        """``redis://NAME@h`` is read as a user name (redis-py's reading) and masked whole."""
        t = parse_redis_url("redis://s3cret@h")
        assert (t.username, t.password, t.redacted) == ("s3cret", None, "redis://***@h")
        assert parse_redis_url("redis://@h").username is None

    def test_unusual_user_names_are_masked(self) -> None:
        """A user name with characters user names are not made of is masked too; empty parts are None."""
        assert parse_redis_url("redis://a%20b:pw@h").redacted == "redis://***:***@h"
        assert parse_redis_url("redis://:pw@h").username is None
        assert parse_redis_url("redis://u:@h").password is None

    def test_ipv6_host_and_capital_user(self) -> None:
        """A bracketed IPv6 host loses its brackets; a user name with capitals is shown as written."""
        t = parse_redis_url("redis://Admin:pw@[::1]:6380/0")
        assert (t.host, t.port, t.redacted) == ("::1", 6380, "redis://Admin:***@[::1]:6380/0")
        assert redact_url("redis://Admin:pw@h/0") == "redis://Admin:***@h/0"  # parsed, not masked by position

    def test_repeated_slashes_and_a_trailing_newline(self) -> None:
        """``//4`` is db 4 to both; a trailing newline (a Secret file's) is dropped, as urlsplit drops it."""
        assert parse_redis_url("redis://h//4").db == 4
        assert parse_redis_url("redis://h:1/2\n").port == 1

    @pytest.mark.parametrize("url", ["redis://[]:6379", "redis://:pw@", "redis:///0"])
    def test_no_host(self, url: str) -> None:
        """An empty host, bracketed or not, is refused."""
        with pytest.raises(ValueError, match="host"):
            parse_redis_url(url)

    def test_the_error_is_one_line_naming_why_without_the_password(self) -> None:
        """--redis-url with an unencoded / in the password: one line with the reason, the password masked."""
        with pytest.raises(ConfigError) as info:
            load_settings({"redis_url": "redis://:pa/ss@10.0.0.3:6379/0"}, {},
                          lambda _env: (Platform.LOCAL, "test"))
        message = str(info.value)
        assert "\n" not in message and "pa/ss" not in message and "percent-encode" in message
        assert "***@10.0.0.3:6379/0" in message


class TestRedactAnyText:
    def test_unparsable_url_is_masked_up_to_the_last_at(self) -> None:
        """A URL that does not parse keeps only what follows its last @, its query masked."""
        assert redact_url("redis://u:p@x@h:bad") == "redis://***@h:bad"
        assert redact_url("redis://h:bad?password=pw") == "redis://h:bad?***"

    def test_text_without_scheme(self) -> None:
        """Text that is not a URL is masked up to its last @, or left alone without one."""
        assert redact_url("user:pw@a@host") == "***@host"
        assert redact_url("no secrets here") == "no secrets here"
