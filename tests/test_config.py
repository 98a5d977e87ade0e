"""Configuration: precedence, sources, platform defaults, and one-line errors for bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.loader import ConfigError, load_settings
from agent.config.settings import Platform, Source
from agent.config.urls import parse_redis_url
from agent.config.values import parse_duration, parse_listen


def local(_env: object) -> tuple[Platform, str]:
    return Platform.LOCAL, "test"


def gcp(_env: object) -> tuple[Platform, str]:
    return Platform.GCP, "test"


class TestDurations:
    @pytest.mark.parametrize(("raw", "seconds"), [
        ("0.5", 0.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("0", 0.0), (3, 3.0), ("1e-1", 0.1),
    ])
    def test_accepts_seconds_and_units(self, raw: object, seconds: float) -> None:
        """Seconds or a unit suffix both parse."""
        assert parse_duration(raw) == pytest.approx(seconds)

    @pytest.mark.parametrize("raw", ["-1", "-0.5s", "abc", "1x", "nan", "inf", "", True, "1 2"])
    def test_rejects_garbage(self, raw: object) -> None:
        """Negative, non-finite and unparsable durations are refused."""
        with pytest.raises(ValueError):
            parse_duration(raw)


class TestListen:
    @pytest.mark.parametrize(("raw", "host", "port"), [
        ("0.0.0.0:9180", "0.0.0.0", 9180), ("[::]:9180", "::", 9180), (":9180", "0.0.0.0", 9180),
        ("[::1]:0", "::1", 0), ("localhost:80", "localhost", 80),
    ])
    def test_ipv4_and_ipv6(self, raw: str, host: str, port: int) -> None:
        """IPv4, bracketed IPv6 and bare-port forms parse."""
        listen = parse_listen(raw)
        assert (listen.host, listen.port) == (host, port)

    @pytest.mark.parametrize("raw", ["9180", "host:99999", "::1:9180", "[::1]", "a:b"])
    def test_rejects_bad_addresses(self, raw: str) -> None:
        """Malformed listen addresses are refused."""
        with pytest.raises(ValueError):
            parse_listen(raw)


class TestRedisUrl:
    def test_parses_credentials_and_db(self) -> None:
        """User, password, host, port and db come from the URL; the password is redacted in its display."""
        t = parse_redis_url("rediss://app:s3cr%40t@cache.internal:6380/2")
        assert (t.tls, t.host, t.port, t.db, t.username, t.password) == (
            True, "cache.internal", 6380, 2, "app", "s3cr@t")
        assert "s3cr" not in t.redacted and "***" in t.redacted
        assert "s3cr" not in repr(t)

    @pytest.mark.parametrize("raw", ["http://x", "redis://", "redis://h:notaport", "redis://h/x", "redis://h/0?a=1"])
    def test_rejects_bad_urls(self, raw: str) -> None:
        """Wrong scheme, missing host, bad port or db are refused."""
        with pytest.raises(ValueError):
            parse_redis_url(raw)


class TestPrecedence:
    def test_flag_beats_env_beats_file_beats_default(self, tmp_path: Path) -> None:
        """flag > env > file > default, each recorded as the value's source."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text("interval: 3s\nretry_interval: 300ms\ntimeout: 2s\nwindow: 1\n")
        env = {"READINESS_AGENT_RETRY_INTERVAL": "0.25", "READINESS_AGENT_TIMEOUT": "1.5"}
        s = load_settings({"timeout": "1"}, env, local, config_file=str(cfg))
        assert (s.timeout, s.sources["timeout"]) == (1.0, Source.FLAG)
        assert (s.retry_interval, s.sources["retry_interval"]) == (0.25, Source.ENV)
        assert (s.interval, s.sources["interval"]) == (3.0, Source.FILE)
        assert (s.failure_threshold, s.sources["failure_threshold"]) == (3, Source.DEFAULT)

    def test_redis_url_fallback_env(self) -> None:
        """REDIS_URL is honoured, but READINESS_AGENT_REDIS_URL wins."""
        s = load_settings({}, {"REDIS_URL": "redis://a:1"}, local)
        assert s.checks[0].redis is not None and s.checks[0].redis.host == "a"
        s = load_settings({}, {"REDIS_URL": "redis://a:1", "READINESS_AGENT_REDIS_URL": "redis://b:1"}, local)
        assert s.checks[0].redis is not None and s.checks[0].redis.host == "b"

    def test_grace_period_alias(self) -> None:
        """--grace-period and READINESS_AGENT_GRACE_PERIOD set the window."""
        assert load_settings({}, {"READINESS_AGENT_GRACE_PERIOD": "2s"}, local).window == 2.0

    def test_platform_defaults_gcp_vs_local(self) -> None:
        """The startup deadline is 60 s on GCP (source platform) and 10 s locally (source default)."""
        g = load_settings({}, {}, gcp)
        assert (g.startup_timeout, g.sources["startup_timeout"]) == (60.0, Source.PLATFORM)
        assert (g.window, g.sources["window"]) == (0.5, Source.PLATFORM)
        assert g.resolved_log_format == "json"
        loc = load_settings({}, {}, local)
        assert (loc.startup_timeout, loc.sources["startup_timeout"]) == (10.0, Source.DEFAULT)
        assert loc.resolved_log_format == "text"

    def test_explicit_value_beats_platform_default(self) -> None:
        """A configured startup deadline wins over the GCP default."""
        s = load_settings({}, {"READINESS_AGENT_STARTUP_TIMEOUT": "30s"}, gcp)
        assert (s.startup_timeout, s.sources["startup_timeout"]) == (30.0, Source.ENV)

    def test_forced_platform_skips_detection(self) -> None:
        """--platform gcp never calls the detector."""
        def boom(_env: object) -> tuple[Platform, str]:
            raise AssertionError("detector called")

        assert load_settings({"platform": "gcp"}, {}, boom).resolved_platform is Platform.GCP

    def test_unknown_env_only_warns(self) -> None:
        """Kubernetes service links inject READINESS_AGENT_PORT=tcp://...: a warning, not a crash."""
        s = load_settings({}, {"READINESS_AGENT_PORT": "tcp://10.0.0.1:9180"}, local)
        assert any("READINESS_AGENT_PORT" in w for w in s.warnings)

    def test_effective_settings_show_sources_and_hide_secrets(self) -> None:
        """effective() gives value and source for every key, with the password redacted."""
        s = load_settings({"redis_url": "redis://:hunter2@h:1"}, {}, local)
        eff = s.effective()
        assert eff["redis_url"] == {"value": "redis://:***@h:1", "source": "flag"}
        assert eff["platform"]["resolved"] == "local"
        assert "hunter2" not in repr(eff)

    def test_checks_from_file(self, tmp_path: Path) -> None:
        """A file may list several named checks, required or optional."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            "checks:\n"
            "  - {name: sessions, url: 'redis://h1:6379/0'}\n"
            "  - {name: cache, url: 'redis://h2:6379/1', required: false, maintenance_key: 'ops:drain'}\n"
            "  - {name: db, type: tcp, address: 'db:5432'}\n"
        )
        s = load_settings({}, {}, local, config_file=str(cfg))
        assert [(c.name, c.kind, c.required) for c in s.checks] == [
            ("sessions", "redis", True), ("cache", "redis", False), ("db", "tcp", True)]


class TestBadConfig:
    @pytest.mark.parametrize(("flags", "env", "needle"), [
        ({"window": "-1"}, {}, "--window '-1'"),
        ({}, {"READINESS_AGENT_INTERVAL": "fast"}, "READINESS_AGENT_INTERVAL 'fast'"),
        ({"window": "20s"}, {}, "--window '20s': must be shorter than the startup deadline"),
        ({"redis_url": "redis://:pw@h:bad"}, {}, "--redis-url 'redis://***@h:bad'"),
        ({"failure_threshold": "0"}, {}, "--failure-threshold '0'"),
        ({"timeout": "0"}, {}, "--timeout"),
        ({"retry_interval": "2s"}, {}, "must not exceed the interval (interval '1', the default)"),
        ({"readiness_mode": "sometimes"}, {}, "--readiness-mode 'sometimes'"),
        ({"listen": "nowhere"}, {}, "--listen 'nowhere'"),
    ])
    def test_one_line_naming_key_and_value(self, flags: dict[str, str], env: dict[str, str], needle: str) -> None:
        """Each bad value gives one line that names the key and the value."""
        with pytest.raises(ConfigError) as err:
            load_settings(flags, env, local)
        message = str(err.value)
        assert needle in message and "\n" not in message
        assert "pw@" not in message

    @pytest.mark.parametrize(("text", "needle"), [
        ("intervall: 1s\n", "unknown key 'intervall'"),
        ("- a\n- b\n", "must hold a mapping"),
        ("window: [1\n", "not valid YAML"),
        ("checks: [{name: 'Bad Name', url: 'redis://h'}]\n", "invalid name"),
        ("checks: [{name: a, url: 'redis://h', colour: red}]\n", "unknown key 'colour'"),
        ("checks: [{name: a, url: 'redis://h'}, {name: a, url: 'redis://h'}]\n", "used twice"),
        ("checks: [{name: a, type: tcp}]\n", "needs an address"),
        ("checks: []\n", "non-empty list"),
    ])
    def test_bad_file(self, tmp_path: Path, text: str, needle: str) -> None:
        """Unknown keys and malformed files are one-line errors naming the problem."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_settings({}, {}, local, config_file=str(cfg))
        assert needle in str(err.value) and "\n" not in str(err.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config file that cannot be read is named in the error."""
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_settings({}, {}, local, config_file=str(tmp_path / "nope.yaml"))

    @pytest.mark.parametrize("args", [
        ["run", "--window", "-1"],
        ["run", "--interval", "soon"],
        ["check", "--redis-url", "redis://:topsecret@h:x"],
        ["run", "--no-such-flag"],
        ["wait"],
        ["wait", "--max-wait", "-3"],
        [],
        ["run", "--config", "/nonexistent/file.yaml"],
    ])
    def test_cli_exit_2_one_line(self, args: list[str]) -> None:
        """The real CLI exits 2 with one line on stderr, no traceback, no secret."""
        proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                              timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("readiness-agent: error")]
        assert len(lines) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "topsecret" not in proc.stderr + proc.stdout


class TestFuzz:
    @settings(deadline=None, max_examples=300)
    @given(st.dictionaries(
        st.sampled_from(["window", "interval", "retry_interval", "timeout", "failure_threshold", "listen",
                         "redis_url", "platform", "readiness_mode", "startup_timeout", "flap_window",
                         "exit_on_startup_timeout", "log_format"]),
        st.one_of(st.text(max_size=30), st.integers(-5, 100), st.floats(allow_nan=True), st.booleans()),
        max_size=6,
    ))
    def test_parser_either_accepts_or_fails_cleanly(self, flags: dict[str, object]) -> None:
        """Any input yields valid settings or a one-line ConfigError: never another exception."""
        try:
            s = load_settings(flags, {}, local)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
        assert s.window < s.startup_timeout
        assert s.interval > 0 and s.timeout > 0 and s.failure_threshold >= 1

    @settings(deadline=None, max_examples=150)
    @given(st.text(max_size=200))
    def test_yaml_file_fuzz(self, text: str) -> None:
        """Arbitrary file contents never crash the loader."""
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".yaml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                load_settings({}, {}, local, config_file=path)
            except ConfigError as exc:
                assert "\n" not in str(exc)
        finally:
            os.unlink(path)


class TestCrossFieldErrors:
    def test_a_default_is_named_as_the_default_with_the_fix(self) -> None:
        """``run --interval 0.1`` blames retry_interval 0.2 as the default and says how to fix it."""
        with pytest.raises(ConfigError) as err:
            load_settings({"interval": "0.1"}, {}, local)
        assert str(err.value) == (
            "invalid retry_interval '0.2', the default: must not exceed the interval (--interval '0.1'); "
            "set --retry-interval to 0.1s or less, or raise --interval")

    def test_each_side_is_named_by_its_source(self, tmp_path: Path) -> None:
        """A file value and an environment value are each named where they were set."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text("interval: 500ms\n")
        with pytest.raises(ConfigError) as err:
            load_settings({}, {"READINESS_AGENT_RETRY_INTERVAL": "0.7"}, local, config_file=str(cfg))
        assert str(err.value).startswith(
            f"invalid READINESS_AGENT_RETRY_INTERVAL '0.7': must not exceed the interval (interval in {cfg} '500ms')")

    def test_the_gcp_default_deadline_is_named_as_such(self) -> None:
        """A window too long for the GCP startup default names that default, and the fix."""
        with pytest.raises(ConfigError) as err:
            load_settings({"window": "2m"}, {}, gcp)
        assert "(startup_timeout '60', the GCP default)" in str(err.value)
        assert "raise --startup-timeout" in str(err.value)


class TestUnknownKeys:
    @pytest.mark.parametrize(("text", "message"), [
        ("intervall: 1s\n", "unknown key 'intervall' in config file '{cfg}'; did you mean 'interval'?"),
        ("retry-intervall: 1s\n",
         "unknown key 'retry-intervall' in config file '{cfg}'; did you mean 'retry_interval'?"),
        ("checks: [{name: a, url: 'redis://h', requird: false}]\n",
         "unknown key 'requird' in checks[0] in config file '{cfg}'; did you mean 'required'?"),
        ("checks: [{name: a, url: 'redis://h'}, {name: b, adress: 'h:1', type: tcp}]\n",
         "unknown key 'adress' in checks[1] in config file '{cfg}'; did you mean 'address'?"),
    ])
    def test_did_you_mean_in_one_wording_at_both_levels(self, tmp_path: Path, text: str, message: str) -> None:
        """Top-level keys and checks[i] keys get the same "did you mean" wording from the known keys."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_settings({}, {}, local, config_file=str(cfg))
        assert str(err.value) == message.format(cfg=cfg)

    def test_a_misspelled_variable_warns_with_did_you_mean(self) -> None:
        """A ``READINESS_AGENT_*`` typo gets the YAML keys' "did you mean" (its value is never shown); a name
        like nothing known only warns."""
        environ = {"READINESS_AGENT_INTERVALL": "1s", "READINESS_AGENT_retry_interval": "x", "READINESS_AGENT_ZZZ": "1"}
        assert load_settings({}, environ, local).warnings == (
            "ignoring unknown environment variable READINESS_AGENT_INTERVALL; did you mean READINESS_AGENT_INTERVAL?",
            "ignoring unknown environment variable READINESS_AGENT_ZZZ",
            "ignoring unknown environment variable READINESS_AGENT_retry_interval; "
            "did you mean READINESS_AGENT_RETRY_INTERVAL?",
        )

    def test_no_close_match_lists_the_known_keys(self, tmp_path: Path) -> None:
        """A key like nothing known lists the known keys instead of guessing."""
        cfg = tmp_path / "c.yaml"
        cfg.write_text("checks: [{name: a, url: 'redis://h', zzz: 1}]\n")
        with pytest.raises(ConfigError, match=r"unknown key 'zzz' in checks\[0\] .*; known keys: address, auth,"):
            load_settings({}, {}, local, config_file=str(cfg))


class TestMinimums:
    @pytest.mark.parametrize("flags", [
        {"interval": "0.1", "retry_interval": "0.1"}, {"interval": "100ms", "retry_interval": "100ms"},
        {"window": "0"}, {"timeout": "0.05"}, {"backoff_after": "0"}, {"drain_seconds": "0"},
    ])
    def test_the_smallest_values_the_docs_and_tests_use_are_accepted(self, flags: dict[str, str]) -> None:
        """0.1 s intervals, window 0, a 50 ms timeout, no backoff delay and no drain are all accepted."""
        load_settings(flags, {}, local)

    @pytest.mark.parametrize(("flags", "needle"), [
        ({"interval": "1e-7"}, "invalid --interval '1e-7': must be at least 0.1s"),
        ({"interval": "1ms"}, "invalid --interval '1ms': must be at least 0.1s"),
        ({"retry_interval": "50ms"}, "invalid --retry-interval '50ms': must be at least 0.1s"),
        ({"timeout": "1ms"}, "invalid --timeout '1ms': must be at least 0.05s"),
    ])
    def test_below_the_minimum_is_refused(self, flags: dict[str, str], needle: str) -> None:
        """Intervals below 0.1 s (1ms for 1m) and timeouts below 50 ms are one-line errors."""
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_settings(flags, {}, local)


class TestAsciiOnly:
    @pytest.mark.parametrize(("flags", "needle"), [
        ({"failure_threshold": "٣"}, "--failure-threshold"),
        ({"failure_threshold": "５"}, "--failure-threshold"),
        ({"failure_threshold": "\u00a03"}, "--failure-threshold"),
        ({"jitter": "٠.٢"}, "--jitter"),
        ({"jitter": "0.2\u00a0"}, "--jitter"),
        ({"window": "1\u00a0s"}, "--window"),
        ({"window": "0\u00a0.5"}, "--window"),
        ({"redis_url": "redis://h:6379/٣"}, "database index"),
        ({"redis_url": "redis://h:６379/0"}, "port"),
    ])
    def test_non_ascii_digits_and_nbsp_are_refused(self, flags: dict[str, str], needle: str) -> None:
        """Digits other than ASCII and NBSP inside or around numbers are errors, not silently accepted."""
        with pytest.raises(ConfigError, match=needle):
            load_settings(flags, {}, local)

    def test_env_errors_name_the_variable_actually_set(self) -> None:
        """REDIS_URL and the READINESS_AGENT_GRACE_PERIOD alias are named as themselves in errors."""
        with pytest.raises(ConfigError, match=r"^invalid REDIS_URL 'redis://h:0'"):
            load_settings({}, {"REDIS_URL": "redis://h:0"}, local)
        with pytest.raises(ConfigError, match=r"^invalid READINESS_AGENT_GRACE_PERIOD 'x'"):
            load_settings({}, {"READINESS_AGENT_GRACE_PERIOD": "x"}, local)


class TestHostileFiles:
    @pytest.mark.parametrize(("data", "needle"), [
        (b"window: '\xff'\n", "is not UTF-8 (byte 0xff at offset 9)"),
        (b"interval: 1s\ninterval: 2s\n", "has the key 'interval' twice at line 2"),
        (b"checks:\n  - {name: a, url: 'redis://h', name: b}\n", "has the key 'name' twice at line 2"),
        (b"window: &w 1\ninterval: *w\n", "uses a YAML anchor or alias at line 1"),
        (b"base: &b {interval: 1}\n<<: *b\n", "uses a YAML anchor or alias"),
        (b"window: " + b"[" * 40 + b"]" * 40 + b"\n", "nested more than 16 levels deep"),
        (b"# " + b"x" * (64 * 1024) + b"\n", "is larger than 64 KiB"),
        (b"checks:\n" + b"".join(b"  - {name: c%d, url: 'redis://h'}\n" % i for i in range(129)), "at most 128"),
    ])
    def test_refused_with_one_line(self, tmp_path: Path, data: bytes, needle: str) -> None:
        """Non-UTF-8 bytes, duplicate keys, anchors/aliases, deep nesting, oversized files and too many checks
        are one-line errors."""
        cfg = tmp_path / "c.yaml"
        cfg.write_bytes(data)
        with pytest.raises(ConfigError) as err:
            load_settings({}, {}, local, config_file=str(cfg))
        assert needle in str(err.value) and "\n" not in str(err.value)

    def test_dev_zero_is_refused_after_reading_the_size_bound(self) -> None:
        """``--config /dev/zero`` reads at most the size bound and stops."""
        with pytest.raises(ConfigError, match="larger than 64 KiB"):
            load_settings({}, {}, local, config_file="/dev/zero")
