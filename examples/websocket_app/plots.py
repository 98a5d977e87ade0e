"""The race demo's two pictures, from the JSON that ``make demo-race`` writes: ``python -m
examples.websocket_app.plots docs/race``.

* ``race_1011_by_delay.png``: 1011s per unannounced kill against the load balancer's programming delay, one
  line per mode (from ``sweep.json``, written by ``race --delays ... --out``);
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


def plot_sweep(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        points = sorted((r["delay"], r["per_kill"]) for r in rows if r["mode"] == mode)
        # symlog: 0 ms and 5 s on one axis, 0 x 1011 visible on a log-like scale
        ax.plot([p[0] * 1000 for p in points], [p[1] for p in points], marker="o", label=MODES[mode])
    ax.set_xscale("symlog", linthresh=50)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("load balancer programming delay (ms)")
    ax.set_ylabel("WebSockets closed with 1011 per kill")
    ax.set_title("1011 per unannounced Redis kill, 40 connections/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
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
        ax.step([i * bucket for i in range(len(bars))], bars, where="post", label=label)
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
