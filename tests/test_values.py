"""Value parsers at their edges: every accepted boundary and the first refused value beyond it."""

from __future__ import annotations

import pytest

from agent.config.values import (
    Listen,
    choice,
    parse_bool,
    parse_duration,
    parse_fraction,
    parse_listen,
    parse_positive_int,
    parse_tcp_address,
    parse_text,
    shown,
)

WEEK = 7 * 86400


class TestDuration:
    @pytest.mark.parametrize(("raw", "seconds"), [(0, 0.0), ("0", 0.0), (0.5, 0.5), (WEEK, float(WEEK)),
                                                  (f"{WEEK}s", float(WEEK)), ("168h", float(WEEK))])
    def test_accepts_up_to_a_week(self, raw: object, seconds: float) -> None:
        """Zero and exactly one week are accepted, as numbers or text."""
        assert parse_duration(raw) == seconds

    @pytest.mark.parametrize("raw", [WEEK + 0.001, "604801", float("nan"), float("inf"), "1e400", -1, -0.001])
    def test_refuses_beyond_a_week_non_finite_and_negative(self, raw: object) -> None:
        """Longer than a week, NaN, infinity and negative numbers are refused."""
        with pytest.raises(ValueError):
            parse_duration(raw)

    def test_a_yaml_number_is_taken_as_a_number(self) -> None:
        """-0.0 is zero (its text would read as negative); infinity is "not finite", not "not a duration"."""
        assert parse_duration(-0.0) == 0.0
        with pytest.raises(ValueError, match=r"^must be a finite duration$"):
            parse_duration(float("inf"))

    def test_a_boolean_is_not_a_duration(self) -> None:
        """YAML ``true`` is refused with the message that says what a duration looks like."""
        with pytest.raises(ValueError, match=r"^expected a duration such as 0\.5, 500ms, 2s or 1m$"):
            parse_duration(True)


class TestPositiveInt:
    @pytest.mark.parametrize(("raw", "value"), [(1, 1), ("1", 1), (" 3\t", 3), ("+5", 5), (1_000_000, 1_000_000),
                                                ("1000000", 1_000_000)])
    def test_accepts_1_to_a_million(self, raw: object, value: int) -> None:
        """1 to 1,000,000, as ints or ASCII text with an optional plus sign."""
        assert parse_positive_int(raw) == value

    @pytest.mark.parametrize("raw", [0, "0", 1_000_001, "1000001", True, "٣", "3.0", "", "-1"])
    def test_refuses_the_rest(self, raw: object) -> None:
        """Zero, more than a million, booleans and non-ASCII digits are refused."""
        with pytest.raises(ValueError):
            parse_positive_int(raw)


class TestFraction:
    @pytest.mark.parametrize(("raw", "value"), [(0, 0.0), ("0", 0.0), ("0.5", 0.5), (0.5, 0.5), (" 0.2 ", 0.2)])
    def test_accepts_zero_to_a_half(self, raw: object, value: float) -> None:
        """0 and 0.5 are both accepted, as numbers or text."""
        assert parse_fraction(raw) == value

    @pytest.mark.parametrize("raw", ["0.51", 1, "1.0", -0.1, True, "٠.٢", "x"])
    def test_refuses_the_rest(self, raw: object) -> None:
        """Above 0.5, negative, booleans and non-ASCII digits are refused."""
        with pytest.raises(ValueError):
            parse_fraction(raw)

    def test_a_yaml_number_is_taken_as_a_number(self) -> None:
        """-0.0 is zero (its text has a sign, which the text form refuses)."""
        assert parse_fraction(-0.0) == 0.0

    def test_a_boolean_is_not_a_fraction(self) -> None:
        """YAML ``true`` is refused with the message that gives the range."""
        with pytest.raises(ValueError, match=r"^expected a fraction from 0 to 0\.5$"):
            parse_fraction(True)


class TestBoolChoiceText:
    @pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "Yes", "on", " ON ", True])
    def test_true_words(self, raw: object) -> None:
        """Every documented true word, in any case."""
        assert parse_bool(raw) is True

    @pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "NO", "off", "Off", "", False])
    def test_false_words(self, raw: object) -> None:
        """Every documented false word, in any case, and the empty string."""
        assert parse_bool(raw) is False

    def test_other_words_are_refused(self) -> None:
        """Anything else is an error, not a guess."""
        with pytest.raises(ValueError):
            parse_bool("maybe")

    def test_choice(self) -> None:
        """A choice accepts its words case-insensitively and names them when refusing."""
        parse = choice("always", "startup")
        assert parse(" Startup ") == "startup"
        with pytest.raises(ValueError, match="always, startup"):
            parse("sometimes")

    @pytest.mark.parametrize("raw", [True, None, [], "  "])
    def test_text_refuses_non_text(self, raw: object) -> None:
        """Booleans, None, lists and blank strings are not text."""
        with pytest.raises(ValueError):
            parse_text(raw)

    def test_text_accepts_numbers_and_strips(self) -> None:
        """Numbers become their text; surrounding blanks go."""
        assert (parse_text(5), parse_text(" a b ")) == ("5", "a b")


class TestAddresses:
    def test_listen_forms(self) -> None:
        """HOST:PORT, [IPV6]:PORT (hex in any case) and :PORT, printed back the same way."""
        assert str(parse_listen("127.0.0.1:9180")) == "127.0.0.1:9180"
        assert str(parse_listen("[FE80::1]:65535")) == "[FE80::1]:65535"
        assert str(parse_listen("[fe80::a%eth0]:1")) == "[fe80::a%eth0]:1"
        assert parse_listen(":1") == Listen("0.0.0.0", 1)
        assert str(Listen("::1", 80)) == "[::1]:80"

    @pytest.mark.parametrize("raw", ["h:65536", "h", "h:", "[::1]", "h:١"])
    def test_listen_refuses(self, raw: str) -> None:
        """Ports above 65535, missing ports and non-ASCII digits are refused."""
        with pytest.raises(ValueError):
            parse_listen(raw)

    def test_tcp_address_port_1_to_65535(self) -> None:
        """A TCP check needs a real port: 1 is fine, 0 is not."""
        assert parse_tcp_address("h:1") == ("h", 1)
        with pytest.raises(ValueError):
            parse_tcp_address("h:0")


class TestShown:
    def test_cut_at_80(self) -> None:
        """Values up to 80 characters are quoted whole; longer ones are cut to 80 with an ellipsis."""
        assert shown("a" * 80) == repr("a" * 80)
        assert shown("a" * 81) == repr("a" * 77 + "...")
