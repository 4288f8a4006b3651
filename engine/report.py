"""The HTML report: metrics beside the baselines, training curves, predicted vs observed, a map.

One self-contained file (figures embedded as PNG), readable in QGIS's browser or any other.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from engine.data.dataset import RegionDataset
from engine.training.intervals import interval_text
from engine.training.metrics import extrapolation_text, versus_text


def _figure_tag(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _curves_figure(curves: dict[str, list[float]]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, values in curves.items():
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("training curves")
    return fig


def _scatter_figure(target: str, observed: np.ndarray, predicted: np.ndarray,
                    extrapolated: np.ndarray | None = None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    beyond = (np.zeros(len(observed), dtype=bool) if extrapolated is None
              else np.asarray(extrapolated) > 0)
    ax.scatter(observed[~beyond], predicted[~beyond], s=10, alpha=0.7)
    if beyond.any():
        ax.scatter(observed[beyond], predicted[beyond], s=30, facecolors="none",
                   edgecolors="tab:red", label="extrapolated (ext_ > 0)")
        ax.legend(fontsize=8, loc="upper left")
    low = float(min(np.nanmin(observed), np.nanmin(predicted)))
    high = float(max(np.nanmax(observed), np.nanmax(predicted)))
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--")
    ax.set_xlabel(f"observed {target}")
    ax.set_ylabel(f"predicted {target} (held out)")
    ax.set_title(f"{target}: cross-validated predictions", fontsize=10)
    return fig


def _map_figure(dataset: RegionDataset, target: str, predicted: np.ndarray):
    import geopandas as gpd
    import matplotlib.pyplot as plt

    frame = gpd.GeoDataFrame({"value": predicted}, geometry=np.asarray(dataset.geometry),
                             crs=dataset.crs)
    fig, ax = plt.subplots(figsize=(4, 5))
    frame.plot(column="value", ax=ax, cmap="viridis", legend=True, linewidth=0.2,
               edgecolor="white")
    ax.set_axis_off()
    ax.set_title(f"predicted {target}", fontsize=10)
    return fig


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = ""
    for row in rows:
        cells = ""
        for c in columns:
            value = row.get(c, "")
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            cells += f"<td>{html.escape(text)}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _interval(pair: list[float] | None) -> str:
    """An R² interval as "[low, high]"; "" when there is none."""
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def write_report(path: Path, *, dataset: RegionDataset, metrics: dict,
                 curves: dict[str, list[float]], observed: dict[str, np.ndarray],
                 predicted: dict[str, np.ndarray], title: str = "ToPT report",
                 extrapolated: dict[str, np.ndarray] | None = None) -> None:
    """Writes the report. `metrics` is the metrics.json payload; predicted are held-out values;
    `extrapolated` the per-region flags of `TrainingReach` (marked in the scatter plots)."""
    import matplotlib

    matplotlib.use("Agg")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    protocol = metrics.get("protocol", "clean")
    if metrics.get("optimistic"):
        parts.append('<p class="warn"><b>Optimistic (paper protocol):</b> epochs and checkpoints '
                     "were selected on the test folds, as the authors' release does. These "
                     "numbers overstate what the model does on unseen regions.</p>")
    else:
        parts.append(f"<p>Protocol: <b>{html.escape(protocol)}</b>: every prediction below comes "
                     "from a model that never saw that region's label, and no choice (epoch, "
                     "penalty, combination) looked at a test fold.</p>")
    summary = dataset.summary()
    parts.append(f"<p>{summary['regions']} regions; views: "
                 + ", ".join(f"{n} ({v['width']})" for n, v in summary["views"].items())
                 + f"; device {html.escape(str(metrics.get('device', '')))}; "
                 f"{html.escape(str(metrics.get('folds', '')))} folds.</p>")
    rows, versus, weighted = [], [], False
    for target, entry in metrics.get("tasks", {}).items():
        weight_field = (entry.get("weights") or {}).get("field")
        for method, scores in entry.get("methods", {}).items():
            rows.append({"target": target + (f" (weights: {weight_field})" if weight_field
                                             else ""),
                         "method": method, **scores,
                         "R2 95% interval": _interval(scores.get("R2_interval")),
                         "weighted R2": scores.get("R2_weighted", ""),
                         "weighted R2 95% interval": _interval(
                             scores.get("R2_weighted_interval"))})
        weighted = weighted or weight_field is not None
        for key in ("versus_bar", "versus_weighted_bar"):
            if entry.get(key):
                metric = " (weighted R2)" if key == "versus_weighted_bar" else ""
                versus.append(f"<li>{html.escape(target)}: {html.escape(entry[key]['method'])}"
                              f" minus {html.escape(entry[key]['bar'])}{metric}: "
                              f"{html.escape(versus_text(entry[key]))}</li>")
    if rows:
        parts.append("<h2>Metrics (pooled held-out predictions)</h2>")
        columns = ["target", "method", "MAE", "RMSE", "R2", "R2 95% interval"]
        if weighted:
            columns += ["weighted R2", "weighted R2 95% interval"]
        parts.append(_table(rows, columns))
        parts.append("<p>The intervals come from a bootstrap over the held-out regions (2,000 "
                     "resamples, the fitted models held fixed): how sure each figure is on "
                     "these regions. The paired difference below resamples the same regions "
                     "for both models; an interval that spans 0 means this evaluation cannot "
                     "tell the two apart.</p>")
    if versus:
        parts.append("<ul>" + "".join(versus) + "</ul>")
    automatic = [f"<li>{html.escape(target)}: its errors shrink as "
                 f"{html.escape(entry['weight_hint']['field'])} grows (p = "
                 f"{entry['weight_hint']['p_value']:.1g}), as a rate's over a small "
                 f"denominator do; it was fitted with weights from that field. Name it as the "
                 f"target's weight field for weighted figures too.</li>"
                 for target, entry in metrics.get("tasks", {}).items()
                 if entry.get("weight_hint")]
    if automatic:
        parts.append("<h2>Weights read off the errors</h2><ul>" + "".join(automatic) + "</ul>")
    extrapolations = []
    for target, entry in metrics.get("tasks", {}).items():
        reach = entry.get("extrapolation") or {}
        if reach.get("regions"):
            ids = ", ".join(map(str, reach["region_ids"]))
            more = reach["regions"] - len(reach["region_ids"])
            extrapolations.append(
                f"<li>{html.escape(target)}: "
                f"{html.escape(extrapolation_text(reach, summary['regions']))}. Regions: "
                f"{html.escape(ids)}{f' and {more} more' if more > 0 else ''}.</li>")
    if extrapolations:
        parts.append("<h2>Extrapolations</h2><p>A prediction extrapolates when the region's data "
                     "lie further from the training regions' than any training region's lie "
                     "from the others (its leverage under the Ridge on the raw features), or "
                     "when it falls outside the range of the training labels. The field "
                     "<code>ext_&lt;target&gt;</code> marks them (1: the data, 2: the "
                     "prediction, 3: both). Read these values with care.</p>")
        parts.append("<ul>" + "".join(extrapolations) + "</ul>")
    held = [f"<li>{html.escape(target)}: {html.escape(interval_text(entry['interval']))}</li>"
            for target, entry in metrics.get("tasks", {}).items() if entry.get("interval")]
    if held:
        level = next(e["interval"]["level"] for e in metrics["tasks"].values()
                     if e.get("interval"))
        parts.append(f"<h2>Prediction intervals</h2><p>Each region's <code>lo_&lt;target&gt;"
                     f"</code> and <code>hi_&lt;target&gt;</code> bound a {level:.0%} interval "
                     "around its prediction, from the cross-validated errors of the labelled "
                     "regions (taken in bins of the predictions, and scaled by the weight "
                     "field's precision where the model weighed regions): about that share of "
                     "regions like these hold their value inside. The share below is what the "
                     "labelled regions did, each judged with intervals its own error did not "
                     "set. It holds over regions, not for each one, and not for regions "
                     "unlike the labelled ones (see the extrapolations).</p><ul>"
                     + "".join(held) + "</ul>")
    clustering = metrics.get("clustering", {})
    if clustering:
        parts.append("<h2>Clustering of the embeddings</h2>")
        parts.append(_table([{"class field": k, **v} for k, v in clustering.items()],
                            ["class field", "NMI", "ARI"]))
    if curves:
        parts.append("<h2>Training</h2>" + _figure_tag(_curves_figure(curves)))
    for target, values in predicted.items():
        labelled = np.isfinite(observed[target])
        flags = (extrapolated or {}).get(target)
        figures = _figure_tag(_scatter_figure(target, observed[target][labelled],
                                              values[labelled],
                                              None if flags is None else flags[labelled]))
        if dataset.geometry is not None:
            figures += _figure_tag(_map_figure(dataset, target, values))
        parts.append(f"<h2>{html.escape(target)}</h2><div>{figures}</div>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}.warn{background:#fff3cd;padding:6px}"
             "img{margin:4px}")
    Path(path).write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n", encoding="utf-8")
