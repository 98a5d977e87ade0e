"""The race demo's two pictures, from the JSON that ``make demo-race`` writes: ``python -m
examples.websocket_app.plots docs/race``.

* ``race_1011_by_delay.png``: 1011s per unannounced kill against the load balancer's programming delay, one
  line per mode, all of them and those outside (from ``sweep.json``, written by ``race --delays ... --out``);
* ``deploy_reconnects.png``: reconnects per 100 ms after the replaced pod's SIGTERM, without and with
  readiness_client (from ``deploy.json``, written by ``deploy --out``).

matplotlib is imported here only (``pip install matplotlib``; ``make demo-race`` installs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from examples.websocket_app.race_model import MODES

GKE_DELAY_MS = 3000  # GKE's health check as deploy/gke and the chart ship it (tests/test_gke.py)


def plot_sweep(rows: list[dict[str, Any]], out: Path) -> None:
    """Two panels against the delay, one line per mode: every 1011 per kill, and those outside (handshake after
    the agent could know), which the app client keeps at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = (("per_kill", "every 1011 after the kill"), ("outside", "outside: handshake after the agent knew"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            points = sorted((r["delay"], r[key] / max(1, r["kills"])) for r in rows if r["mode"] == mode)
            ax.plot([p[0] * 1000 for p in points], [p[1] for p in points], marker="o", label=MODES[mode])
        ax.axvline(GKE_DELAY_MS, color="grey", linestyle=":", label="GKE health check (3 s)")
        # symlog: 0 ms and 5 s on one axis, 0 x 1011 visible on a log-like scale
        ax.set_xscale("symlog", linthresh=50)
        ax.set_yscale("symlog", linthresh=1)
        delays = sorted({r["delay"] for r in rows})
        ax.set_xlim(0, max(delays) * 1000 * 1.4)
        ax.set_xticks([d * 1000 for d in delays], [f"{d * 1000:g} ms" if d < 1 else f"{d:g} s" for d in delays])
        ax.set_xlabel("load balancer programming delay")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("WebSockets closed with 1011 per kill")
    axes[1].legend(fontsize="small")
    down = rows[0].get("down")
    fig.suptitle("1011 per unannounced Redis kill, 40 connections/s"
                 + (f", Redis restarted {down:g} s after it" if down is not None else ""))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_deploy(runs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        bucket = run["bucket_s"]
        bars = run["histogram"]
        label = {"without": "without the client (1006, all at once)",
                 "with": "with readiness_client (1012, spread)"}[run["mode"]]
        # A closing 0: the last bar is drawn as wide as the others, not as a line where the data ends.
        ax.step([i * bucket for i in range(len(bars) + 1)], [*bars, 0], where="post", label=label)
    ax.set_xlabel("seconds after the replaced pod's SIGTERM")
    ax.set_ylabel("reconnects per 100 ms")
    ax.set_title(f"Rolling deploy: {runs[0]['clients']} WebSockets on the replaced pod")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/race")
    plot_sweep(json.loads((folder / "sweep.json").read_text()), folder / "race_1011_by_delay.png")
    plot_deploy(json.loads((folder / "deploy.json").read_text()), folder / "deploy_reconnects.png")
    print(f"wrote {folder}/race_1011_by_delay.png and {folder}/deploy_reconnects.png")


if __name__ == "__main__":
    main()
