"""Write docs/settings.md, the full settings reference, from the declarations in the code.

Every global setting comes from ``agent/config/settings.py`` (flag, environment variable, YAML key, default,
help; the stated minimums from ``agent/config/loader.py``), every ``checks:`` key from the check kinds'
config types (``agent.checks.KINDS``, ``agent.checks.config.yaml_keys``). Only the one-line meaning of a check
key that is not a ``redis_*`` setting, and the link to the page that explains a setting, are written here.

    python scripts/gen_reference.py          # rewrite docs/settings.md (make docs)
    python scripts/gen_reference.py --check  # exit 1 when docs/settings.md is not what this writes

tests/test_docs.py renders it in memory and compares, so a setting added without regenerating fails there.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the agent is imported from this tree
    sys.path.insert(0, str(ROOT))

from agent.checks import KINDS  # noqa: E402
from agent.checks.config import CHECK_NAME, COMMON_KEYS, MAX_CHECKS, shared_keys, yaml_keys  # noqa: E402
from agent.config.loader import MAX_DEPTH, MAX_FILE_BYTES, MINIMUMS  # noqa: E402
from agent.config.settings import ENV_PREFIX, GCP_STARTUP_TIMEOUT, SPECS, Spec  # noqa: E402
from agent.config.values import parse_duration  # noqa: E402

OUT = ROOT / "docs" / "settings.md"

# Where each setting is explained (a page of docs/, relative to docs/settings.md).
SEE: dict[str, str] = {
    "redis_url": "configuration.md#redis-urls",
    "redis_require_master": "redis.md#require_master-on-by-default-for---redis-url",
    "listen": "observability.md#endpoints",
    "watch_port": "app-client.md",
    "platform": "configuration.md#platform-detection",
    **dict.fromkeys(("window", "interval", "retry_interval", "timeout", "failure_threshold", "flap_window",
                     "backoff_after", "jitter", "startup_timeout", "exit_on_startup_timeout"),
                    "checks.md#how-the-verdict-works"),
    "readiness_mode": "checks.md#readiness_mode-the-trade-off",
    "drain_seconds": "observability.md#signals-and-draining",
    "drain_token_file": "security.md#the-drain-token",
    "log_format": "observability.md#logs",
    "log_level": "observability.md#logs",
    "redis_password_file": "redis.md#credentials",
    **dict.fromkeys(("redis_ca_file", "redis_cert_file", "redis_key_file", "redis_tls_server_name",
                     "redis_tls_skip_hostname_check"), "redis.md#tls"),
    "redis_auth": "redis.md#memorystore-and-iam",
    **dict.fromkeys(("redis_write_canary", "redis_pubsub_roundtrip", "redis_canary_interval"),
                    "checks.md#extra-checks"),
    "redis_fresh_connection_interval": "redis.md#rotating-a-password",
    "redis_sentinel_password": "redis.md#sentinel",
    "redis_sentinel_password_file": "redis.md#sentinel",
    **dict.fromkeys(("kube_readiness_gate", "kube_condition_type", "kubeconfig"), "readiness-gates.md"),
}
# Environment variables read besides READINESS_AGENT_<NAME> (agent/config/loader.py).
FALLBACK_ENV = {"redis_url": "REDIS_URL"}

# The meaning of each check key that is not inherited from a redis_* setting: (kind or "", key) -> text.
KEY_HELP: dict[tuple[str, str], str] = {
    ("", "name"): f"the check's name, `{CHECK_NAME.pattern}`: it becomes a metric label and `/readyz/<name>`",
    ("", "type"): "the check kind: " + ", ".join(f"`{kind}`" for kind in KINDS),
    ("", "required"): "`false`: reported in `/status`, logs and metrics, never gates readiness",
    ("redis", "url"): "`redis://`, `rediss://` or a Sentinel URL, as for `--redis-url` "
                      "([Redis URLs](configuration.md#redis-urls))",
    ("redis", "require_master"): "the node must answer `ROLE` `master` (a replica fails with `readonly`); true by "
                                 "default for a Sentinel URL ([redis.md](redis.md#require_master-on-by-default-for"
                                 "---redis-url))",
    ("redis", "maintenance_key"): "if this key exists, the check leaves ready at once with reason `maintenance`",
    ("tcp", "address"): "`HOST:PORT` that must accept a TCP connection within `--timeout`",
    ("http", "url"): "`http://` or `https://` URL to `GET` (redirects not followed) "
                     "([Extra checks](checks.md#extra-checks))",
    ("http", "expect_status"): "healthy statuses: a code (`204`), a range (`200-299`) or a class (`2xx`)",
    ("http", "ca_file"): "CA bundle for an `https://` URL (default: the system CAs)",
}
REQUIRED_KEYS = {("redis", "url"), ("tcp", "address"), ("http", "url")}
COMMON_DEFAULTS = {"name": "required", "type": "`redis`", "required": "`true`"}


def code(text: str) -> str:
    return f"`{text}`"


def shown_default(value: Any, duration: bool = False) -> str:
    """A default as the docs write it: durations with a unit, booleans in lower case, none as —."""
    if value is None or value == ("", 0) or value == "":
        return "—"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, float):
        number = f"{value:g}"
        return code(number + "s" if duration else number)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return code(f"{value[0]}-{value[1]}")
    return code(str(value))


def choices(spec: Spec) -> tuple[str, ...]:
    """The allowed values of a setting parsed by ``values.choice`` (empty for any other parser)."""
    allowed = inspect.getclosurevars(spec.parse).nonlocals.get("allowed", ())
    return tuple(allowed) if isinstance(allowed, tuple) else ()


def setting_row(spec: Spec) -> str:
    duration = spec.parse is parse_duration
    names = (spec.name, *spec.aliases)
    value = "[=BOOL]" if spec.flag_only_bool else (f" {spec.metavar}" if spec.metavar else "")
    flags = ", ".join(code("--" + n.replace("_", "-") + value) for n in names)
    envs = ", ".join(code(ENV_PREFIX + n.upper()) for n in names)
    if spec.name in FALLBACK_ENV:
        envs += f" (fallback {code(FALLBACK_ENV[spec.name])})"
    keys = ", ".join(code(n) for n in names)
    raw = spec.raw_default
    default = code(raw) if isinstance(raw, str) and not choices(spec) else shown_default(spec.default, duration)
    if spec.name == "startup_timeout":
        default += f" (`{GCP_STARTUP_TIMEOUT:g}s` on GCP)"
    notes = [spec.help.replace("|", "\\|")]
    if choices(spec):
        notes.append("one of " + ", ".join(code(c) for c in choices(spec)))
    if spec.name in MINIMUMS:
        notes.append(f"at least `{MINIMUMS[spec.name]:g}s`")
    if spec.secret:
        notes.append("shown as `***`")
    if spec.run_only:
        notes.append("`run` only")
    if spec.name not in SEE:
        raise SystemExit(f"gen_reference: no page explains setting {spec.name!r}: add it to SEE")
    notes.append(f"[more]({SEE[spec.name]})")
    return f"| {flags} | {envs} | {keys} | {default} | {'; '.join(notes)} |"


def check_rows(kind: str) -> list[str]:
    config = KINDS[kind].config
    by_name = {f.name: f for f in dataclasses.fields(config)}
    inherited = set(shared_keys(config))
    settings = {s.name: s for s in SPECS}
    rows = []
    for key, field_name in yaml_keys(config).items():
        if field_name in inherited:
            spec = settings["redis_" + field_name]
            default = f"{code(spec.flag)} (`redis_{field_name}`)"
            meaning = spec.help.replace("|", "\\|")
        else:
            if (kind, key) not in KEY_HELP:
                raise SystemExit(f"gen_reference: check key {key!r} of type {kind!r} has no meaning: "
                                 "add it to KEY_HELP")
            f = by_name.get(field_name)
            default = "required" if (kind, key) in REQUIRED_KEYS else shown_default(
                f.default if f is not None else None, f is not None and f.metadata.get("parse") is parse_duration)
            meaning = KEY_HELP[(kind, key)]
        rows.append(f"| {code(key)} | {default} | {meaning} |")
    return rows


def render() -> str:
    """The whole of docs/settings.md."""
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by `make docs` (scripts/gen_reference.py) from agent/config/settings.py and the check",
        "     kinds of agent/checks; do not edit: tests/test_docs.py fails when it is not what the script writes. -->",
        "",
        "Every setting is a flag, a `READINESS_AGENT_<NAME>` environment variable and a key of the YAML file given",
        "with `--config FILE` (or `READINESS_AGENT_CONFIG`); dashes are accepted in file keys. Precedence: **flag >",
        "env > file > platform default > default**; `/status` and the start-up log show each effective value and its",
        "source. Durations are seconds (`0.5`) or carry a unit (`500ms`, `2s`, `1m`, `1h`). A `[=BOOL]` flag alone",
        "means `true`. `run`, `check` and `wait` accept every flag (`check --help` and `wait --help` list only",
        "those they use), and `--max-wait DURATION`, the deadline `wait` uses (checked by all three), so one",
        "argument list works for all of them. How it all fits together: [configuration.md](configuration.md).",
        "",
        "## Settings",
        "",
        "| flag | environment | YAML key | default | meaning |",
        "|---|---|---|---|---|",
        *(setting_row(spec) for spec in SPECS),
        "",
        "## Check entries (`checks:`)",
        "",
        f"The file's `checks:` list holds 1 to {MAX_CHECKS} entries ([several dependencies]"
        "(configuration.md#several-dependencies-yaml)).",
        "Every entry takes these keys, and those of its type below. A default written as a flag means the entry",
        "inherits that setting unless it sets the key itself.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        *(f"| {code(k)} | {COMMON_DEFAULTS[k]} | {KEY_HELP[('', k)]} |" for k in COMMON_KEYS),
    ]
    for kind in KINDS:
        lines += ["", f"### `type: {kind}`", "", "| key | default | meaning |", "|---|---|---|", *check_rows(kind)]
    lines += [
        "",
        "## Limits of the file",
        "",
        f"At most {MAX_FILE_BYTES // 1024} KiB of UTF-8, at most {MAX_DEPTH} levels deep, at most {MAX_CHECKS} checks;",
        "no YAML anchors, aliases or merge keys, no duplicate keys. An unknown key is an error (exit 2) with a",
        "suggestion from the known keys ([bad input](configuration.md#bad-input)).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run make docs", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
