"""Log-log plots of time and memory against the number of regions (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _series(rows: list[dict], pick) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get("failed"):
            continue
        value = pick(row)
        if value is not None and value > 0:
            xs.append(row["n_regions"])
            ys.append(value)
    return xs, ys


def scaling_plot(sweeps: dict[str, dict], path: Path, dense_threshold: int | None = None) -> Path:
    """Two panels: seconds (SREL epoch, SREL training, prompt encoding, prediction) and peak
    memory, against N, both log-log; one line style per device ("cpu", "cuda")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"cpu": "-", "cuda": "--"}
    measures = [
        ("SREL epoch", lambda r: r.get("srel", {}).get("seconds_per_epoch")),
        ("SREL training", lambda r: r.get("srel", {}).get("seconds")),
        ("prompt encoding", lambda r: r.get("encode", {}).get("seconds")),
        ("prediction", lambda r: r.get("predict", {}).get("seconds")),
    ]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for device, sweep in sweeps.items():
        rows = sweep["rows"]
        for (label, pick), colour in zip(measures, colours, strict=True):
            xs, ys = _series(rows, pick)
            if xs:
                left.plot(xs, ys, styles.get(device, ":"), marker="o", color=colour,
                          label=f"{label} ({device})")
        xs, ys = _series(rows, lambda r: r.get("peak_rss_bytes", 0) / 1024**2)
        if xs:
            right.plot(xs, ys, styles.get(device, ":"), marker="o", color="tab:purple",
                       label=f"peak RSS ({device})")
        xs, ys = _series(rows, lambda r: ((r.get("peak_rss_bytes") or 0)
                                          - (r.get("baseline_rss_bytes") or 0)) / 1024**2)
        if xs:
            right.plot(xs, ys, styles.get(device, ":"), marker="s", color="tab:brown",
                       label=f"peak RSS - interpreter ({device})")
        xs, ys = _series(rows, lambda r: (r.get("gpu_peak_bytes") or 0) / 1024**2)
        if xs:
            right.plot(xs, ys, styles.get(device, ":"), marker="^", color="tab:gray",
                       label=f"GPU peak allocated ({device})")
    for axis, title, unit in ((left, "time", "seconds"), (right, "memory", "MiB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("regions N")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        if dense_threshold:
            axis.axvline(dense_threshold, color="k", alpha=0.3, linestyle=":")
        axis.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
