"""Redis URLs parsed by hand: what each part becomes, and what the redacted form shows."""

from __future__ import annotations

import pytest

from agent.urls import parse_redis_url, redact_url


class TestParse:
    def test_plain_url_has_no_credentials(self) -> None:
        """Without userinfo there is no user and no password, and the redacted form is the URL itself."""
        t = parse_redis_url("redis://h")
        assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("h", 6379, 0, None, None, False)
        assert t.redacted == "redis://h"
        assert parse_redis_url("rediss://h:6380/2").redacted == "rediss://h:6380/2"

    def test_password_may_hold_at_colon_slash(self) -> None:
        """The userinfo runs to the last @, the password from the first colon: @, : and / stay in it."""
        t = parse_redis_url("redis://u:p@s:s/x@h:1/3")
        assert (t.username, t.password, t.host, t.port, t.db) == ("u", "p@s:s/x", "h", 1, 3)
        assert t.redacted == "redis://u:***@h:1/3"

    def test_userinfo_without_colon_is_a_user_and_never_shown(self) -> None:
        """``redis://NAME@h`` is read as a user name (redis-py's reading) and masked whole."""
        t = parse_redis_url("redis://s3cret@h")
        assert (t.username, t.password, t.redacted) == ("s3cret", None, "redis://***@h")
        assert parse_redis_url("redis://@h").username is None

    def test_unusual_user_names_are_masked(self) -> None:
        """A user name with characters user names are not made of is masked too."""
        assert parse_redis_url("redis://a%20b:pw@h").redacted == "redis://***:***@h"
        assert parse_redis_url("redis://:pw@h").username is None

    @pytest.mark.parametrize(("port", "ok"), [("1", True), ("65535", True), ("65536", False), ("0", False)])
    def test_port_range(self, port: str, ok: bool) -> None:
        """Ports 1 to 65535."""
        if ok:
            assert parse_redis_url(f"redis://h:{port}").port == int(port)
        else:
            with pytest.raises(ValueError):
                parse_redis_url(f"redis://h:{port}")

    @pytest.mark.parametrize(("db", "ok"), [("1000000", True), ("1000001", False), ("٣", False)])
    def test_db_range(self, db: str, ok: bool) -> None:
        """Database indexes up to 1,000,000, ASCII digits only."""
        if ok:
            assert parse_redis_url(f"redis://h/{db}").db == int(db)
        else:
            with pytest.raises(ValueError):
                parse_redis_url(f"redis://h/{db}")

    def test_ipv6_host_and_capital_user(self) -> None:
        """A bracketed IPv6 host loses its brackets; a user name with capitals is shown as written."""
        t = parse_redis_url("redis://Admin:pw@[::1]:6380/0")
        assert (t.host, t.port, t.redacted) == ("::1", 6380, "redis://Admin:***@[::1]:6380/0")
        assert redact_url("redis://Admin:pw@h/0") == "redis://Admin:***@h/0"  # parsed, not masked by position

    def test_repeated_slashes_before_the_db(self) -> None:
        """The host ends at the first slash; the db index is what follows the slashes."""
        assert parse_redis_url("redis://h//4").db == 4

    @pytest.mark.parametrize("url", ["redis://h/0?a=1", "redis://h/0#f", "redis://?x", "redis://h?x"])
    def test_options_and_fragments_are_refused(self, url: str) -> None:
        """?options and #fragments are refused wherever they start."""
        with pytest.raises(ValueError, match="options"):
            parse_redis_url(url)

    @pytest.mark.parametrize("url", ["redis://[]:6379", "redis://:pw@", "redis:///0"])
    def test_no_host(self, url: str) -> None:
        """An empty host, bracketed or not, is refused."""
        with pytest.raises(ValueError, match="no host"):
            parse_redis_url(url)


class TestRedactAnyText:
    def test_unparsable_url_is_masked_up_to_the_last_at(self) -> None:
        """A URL that does not parse keeps only what follows its last @."""
        assert redact_url("redis://u:p@x@h:bad") == "redis://***@h:bad"

    def test_text_without_scheme(self) -> None:
        """Text that is not a URL is masked up to its last @, or left alone without one."""
        assert redact_url("user:pw@a@host") == "***@host"
        assert redact_url("no secrets here") == "no secrets here"
