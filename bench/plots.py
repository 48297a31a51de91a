"""Plots of the benchmark's curves (matplotlib, Agg backend: no display needed).

``bench/bench.py`` calls :func:`write_plots` at the end of a run with its ``details``; a
plot is written only for the sections that ran:

  perf-status-vs-jobs.png   status GET p50 (CUBE pattern) of a finished and of a running job
                            against the number of jobs on the engine, with the engine's own
                            inspect+logs (the floor) at the same sizes (section ``scale``)
  perf-post-vs-input.png    POST p50 against input size, N files of 4 KiB and one big file,
                            with the engine's create+start and the disk floor (section ``input``)

Run on its own to redraw from a results file: ``python bench/plots.py bench/results.json docs``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

STATUS_PNG = "perf-status-vs-jobs.png"
POST_PNG = "perf-post-vs-input.png"


def status_series(points: list[dict[str, Any]]) -> dict[str, list[float]]:
    """x (jobs present) and the p50 series of the scale section, in order of jobs."""
    pts = sorted(points, key=lambda p: p["jobs"])
    return {
        "jobs": [float(p["jobs"]) for p in pts],
        **{key: [float(p[key]["p50"]) for p in pts] for key in ("fin_cube", "run_cube", "fin_engine", "run_engine")},
        # the client library's own per-request cost (runs from before it was measured lack it)
        "health_cube": [float(p["health_cube"]["p50"]) for p in pts] if all("health_cube" in p for p in pts) else [],
    }


def input_series(rows: list[dict[str, Any]], kind: str) -> dict[str, list[float]]:
    """x (files for ``files``, MiB for ``big``) and the p50 series of the input section."""
    sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: (r["files"], r["bytes"]))
    x = [float(r["files"]) if kind == "files" else r["bytes"] / (1024 * 1024) for r in sel]
    return {
        "x": x,
        "post": [float(r["post_ms"]["p50"]) for r in sel],
        "engine": [float(r["engine_ms"]["p50"]) for r in sel],
        "engine_disk": [float(r["engine_ms"]["p50"]) + _disk_ms(r) for r in sel],
    }


def _disk_ms(row: dict[str, Any]) -> float:
    """The disk floor of a row: the files written alone (older results: a local unzip)."""
    if "disk_ms" in row:
        return float(row["disk_ms"]["p50"])
    return float(row["unzip_ms"])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_status_vs_jobs(points: list[dict[str, Any]], path: str, subtitle: str = "") -> str:
    plt = _pyplot()
    s = status_series(points)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    ax.plot(s["jobs"], s["fin_cube"], "o-", color="tab:blue", label="status GET, finished job (this server)")
    ax.plot(s["jobs"], s["run_cube"], "s-", color="tab:orange", label="status GET, running job (this server)")
    ax.plot(s["jobs"], s["fin_engine"], "o--", color="tab:blue", alpha=0.55,
            label="engine inspect+logs, finished job (floor)")
    ax.plot(s["jobs"], s["run_engine"], "s--", color="tab:orange", alpha=0.55,
            label="engine inspect+logs, running job (floor)")
    if s["health_cube"]:
        ax.plot(s["jobs"], s["health_cube"], "d:", color="tab:gray",
                label="health/ via requests (the client library's own floor)")
    ax.axhline(1.5, color="tab:green", linestyle=":", label="target, finished job: 1.5 ms")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("jobs present on the engine (log scale)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("Status GET the way CUBE calls it (pfconclient, new connection per request)"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_post_vs_input(rows: list[dict[str, Any]], path: str, subtitle: str = "") -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110, sharey=False)
    for ax, kind, xlabel in ((axes[0], "files", "input: number of 4 KiB files (log scale)"),
                             (axes[1], "big", "input: one file of this size, MiB (log scale)")):
        s = input_series(rows, kind)
        if not s["x"]:
            ax.set_visible(False)
            continue
        ax.plot(s["x"], s["post"], "o-", color="tab:blue", label="POST /jobs/ (this server, pfconclient)")
        ax.plot(s["x"], s["engine"], "o--", color="tab:gray", label="engine create+start (floor)")
        ax.plot(s["x"], s["engine_disk"], "^:", color="tab:purple",
                label="engine create+start + writing the files (disk floor)")
        if kind == "files" and 500.0 in s["x"]:
            i = s["x"].index(500.0)
            ax.plot([500.0], [s["engine"][i] + 60], "x", color="tab:red", markersize=9,
                    label="target at 500 files: engine + 60 ms")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("p50 (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("POST time against input size" + (f" — {subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(details: dict[str, Any], directory: str, subtitle: str = "") -> list[str]:
    """The PNGs for the sections present in ``details``; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    points = (details.get("scale") or {}).get("points") or []
    if points:
        written.append(plot_status_vs_jobs(points, os.path.join(directory, STATUS_PNG), subtitle))
    rows = (details.get("input") or {}).get("rows") or []
    if rows:
        written.append(plot_post_vs_input(rows, os.path.join(directory, POST_PNG), subtitle))
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: plots.py RESULTS_JSON OUT_DIR")
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    for p in write_plots(data.get("details") or {}, sys.argv[2]):
        print(p)
