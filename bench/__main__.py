"""``python -m bench [--quick] [--only NAME,...] [--doc PATH]``: run the benchmarks, print one results table.

Why one entry point: the figures are only comparable when measured the same way in one run, with the
baselines beside them, on the same (shared, noisy) machine state. The full run takes under 10 minutes and
is what ``docs/benchmarks.md`` records; ``--quick`` (under 2 minutes) uses fewer repetitions and shorter
windows, for a developer checking that a change did not move a figure by much. ``--doc`` rewrites the
generated part of ``docs/benchmarks.md`` (between its ``bench:begin``/``bench:end`` markers), leaving the
hand-written analysis around it alone.

On a fresh machine it first runs ``scripts/install-tools.sh bench`` (Debian packages: redis-server,
redis-tools, wrk, hey) when a tool is missing; a part whose tools are still missing (no root, no network) is
not run and gets one MISS row naming what is missing and how to install it, while the other parts run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import detection, fleet, footprint, probes, scale, scrape
from bench.common import REAPER, Mode, Row, Section, install_signal_handlers, log, machine, table, timed

PARTS: dict[str, tuple[str, Callable[[Mode], Section]]] = {
    "detection": ("1", detection.run),
    "probes": ("2", probes.run),
    "scrape": ("2b", scrape.run),
    "footprint": ("3", footprint.run),
    "scale": ("4", scale.run),
    "fleet": ("4", fleet.run),
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TOOLS: dict[str, tuple[str, ...]] = {  # the executables each part runs (Debian packages in install-tools.sh)
    "detection": ("redis-server", "redis-cli"),
    "probes": ("redis-server", "wrk", "hey"),
    "scrape": ("redis-server", "wrk"),
    "footprint": ("redis-server",),
    "scale": ("redis-server",),
    "fleet": ("redis-server", "redis-cli", "cc"),
}
INSTALLER = Path(__file__).resolve().parents[1] / "scripts" / "install-tools.sh"


def missing_tools(names: list[str]) -> dict[str, list[str]]:
    """Per part, the tools not on PATH."""
    return {n: [t for t in TOOLS[n] if shutil.which(t) is None] for n in names}


def ensure_tools(names: list[str]) -> dict[str, list[str]]:
    """Install what the selected parts lack (once, via the installer); what is still missing per part."""
    if any(missing_tools(names).values()):
        log(f"installing missing tools: {INSTALLER.relative_to(INSTALLER.parents[1])} bench")
        subprocess.run(["bash", str(INSTALLER), "bench"], check=False)
    return missing_tools(names)


def _not_run(name: str, missing: list[str]) -> Section:
    figure = PARTS[name][0]
    section = Section(name)
    section.rows.append(Row(figure, f"{name}: not run", "missing: " + ", ".join(missing),
                            target="scripts/install-tools.sh bench", ok=False))
    return section


def _run_part(name: str, mode: Mode) -> Section:
    figure, run = PARTS[name]
    section = Section(name)
    try:
        with timed(section):
            result = run(mode)
        result.seconds = section.seconds
        return result
    except Exception as exc:  # one broken part must not hide the others' figures
        traceback.print_exc()
        section.rows.append(Row(figure, f"{name}: benchmark failed", f"{type(exc).__name__}: {exc}"[:100],
                                ok=False))
        return section


def render(sections: list[Section], mode: Mode, total: float) -> str:
    """The generated Markdown: machine, the table, misses, per-part notes."""
    info = machine()
    rows = [row for s in sections for row in s.rows]
    missed = [r for r in rows if r.ok is False]
    lines = [
        f"Run: {info['date']}, `python -m bench{' --quick' if mode.quick else ''}`, {total:.0f} s "
        f"({', '.join(f'{s.title} {s.seconds:.0f} s' for s in sections)}).",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['redis']}, load average "
        f"{info['load']} at the end; commit {info['commit']}.",
        "",
        table(rows),
        "",
        f"{sum(r.ok is True for r in rows)} targets met, {len(missed)} missed"
        + (": " + "; ".join(r.metric for r in missed) + "." if missed else "."),
        "",
    ]
    for section in sections:
        if section.notes:
            lines.append(f"**{section.title}**")
            lines.append("")
            lines += [f"- {note}" for note in section.notes]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_doc(path: Path, generated: str) -> None:
    """Replace what lies between the markers (or append the block when there are none)."""
    block = f"{BEGIN}\n{generated}{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts, print the table; exit 0 (misses are results, not errors), 2 on bad usage."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter windows (< 2 min)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--doc", type=Path, default=None, help="also write the results into this Markdown file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}")
    install_signal_handlers()
    mode = Mode(quick=args.quick)
    started = time.monotonic()
    sections: list[Section] = []
    missing = ensure_tools(names)
    try:
        for name in names:
            log(f"--- {name}")
            if missing[name]:
                log(f"{name}: not run, missing {', '.join(missing[name])}")
                sections.append(_not_run(name, missing[name]))
                continue
            sections.append(_run_part(name, mode))
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: every ExitStack has already cleaned up
        log(f"interrupted ({str(exc) or 'Ctrl-C'}); every process the bench started was stopped")
        return 130
    finally:
        REAPER.kill_all()
    total = time.monotonic() - started
    generated = render(sections, mode, total)
    print(generated)
    if args.doc is not None:
        write_doc(args.doc, generated)
        log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
