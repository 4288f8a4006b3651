"""Prediction intervals per region, from the cross-validated errors (cross-conformal).

Each labelled region's prediction comes from the fold model that never saw its label, so its
error is an honest sample of the errors to expect. A region's interval is its prediction plus
or minus the `level` conformal quantile of the absolute errors of the regions in the other
folds (its own error never sets its own interval, so the share of labelled regions inside their
intervals, the coverage reported beside them, is a fair check of the level). The regions
without a label are predicted by the final model and get the quantile of every labelled
region's error.

Errors are seldom alike across the range: a county with 500 homicides misses by more than one
with 2. So the quantile is taken separately in bins of the predictions (Mondrian conformal
prediction: low, middle and high predictions each get their own quantile, and the level holds
within each bin), as many bins as give each at least `BIN_REGIONS` labelled regions, at most
`MAX_BINS`; below 2 x BIN_REGIONS labelled regions, one.

And within a bin, a count's errors still grow with its size. For a target that is never
negative, each calibration set also chooses how the errors scale with the prediction:
max(|prediction|, m)^g for g in 0, 1/2, 1 (alike, Poisson-like, proportional; m the median
prediction, so that predictions near 0 do not get intervals of width 0), the g whose intervals
over its own regions at the level have the smallest geometric mean width (a count's widths
span orders of magnitude; the arithmetic mean would be the few largest regions' alone). g = 0
is the plain interval, and it wins where errors are alike. The choice reads only the calibration regions' errors, so a
region's own error still never sets its interval.

Where the model weighed regions by precision (a rate over a population, named or read off the
errors: `predictor.precision_weights`), a region's error is expected to scale with
sqrt(tau^2 + sigma^2 / w), so the errors are divided by that before the quantile and the
interval is multiplied by it again: a small county's rate gets a wide interval, a city's a
narrow one. Every fold uses its own model's tau^2 and sigma^2, fitted on its training regions.

The guarantee is marginal (over regions like these, about `level` of them inside), not per
region, and it assumes the regions to predict resemble the labelled ones; an `ext_` flag says
where they do not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_LEVEL = 0.9
BIN_REGIONS = 200  # labelled regions per bin of predictions at least (a stable 90% quantile)
MAX_BINS = 5
SIZE_POWERS = (0.0, 0.5, 1.0)  # how a never-negative target's errors may grow with its size


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil(level (n + 1))-th smallest of n scores (inf when n is too small for `level`)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil(level * (len(scores) + 1))
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


def scale_model(weighting: dict[str, Any] | None, field: str | None,
                weights: np.ndarray | None, train: np.ndarray) -> dict[str, Any] | None:
    """How a model fitted with precision weights on `train` expects its errors to grow, as a
    JSON-able dict (the variances, the training regions' mean weight and the field's name);
    None when it was not fitted so (every region alike). `weighting`: the model's
    `FittedTask.weighting`; `weights` (N,): the values of `field` it was read from."""
    if not weighting or weighting.get("weighting") != "precision" or weights is None:
        return None
    tau2 = float(weighting["between_region_variance"])
    sigma2 = float(weighting["sampling_variance_at_mean_weight"])
    if tau2 + sigma2 <= 0:
        return None
    return {"field": field, "between_region_variance": tau2,
            "sampling_variance_at_mean_weight": sigma2,
            "mean_weight": float(np.mean(np.asarray(weights, dtype=np.float64)[train]))}


def error_scale(model: dict[str, Any] | None, weights: np.ndarray | None) -> np.ndarray | None:
    """(N,) each region's expected error size sqrt(tau^2 + sigma^2 mean_weight / w) under
    `model` (`scale_model`), from the regions' weights w; None for a model without one."""
    if model is None or weights is None:
        return None
    weights = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(model["between_region_variance"]
                       + model["sampling_variance_at_mean_weight"] * model["mean_weight"] / weights)


def calibrate(predictions: np.ndarray, errors: np.ndarray, level: float, n_bins: int,
              sized: bool = False) -> dict[str, Any]:
    """How intervals are made from these calibration regions' predictions and (scaled)
    absolute errors: the bins' edges (n_bins - 1 quantiles of the predictions), the level
    quantile of the errors in each bin, and, with `sized` (a never-negative target), the power
    g and floor m of the size scale max(|prediction|, m)^g, g chosen among `SIZE_POWERS` by the
    smallest geometric mean width of the intervals over these regions. A bin with too few regions for the level takes
    the quantile of all of them (inf when even they are too few)."""
    floor = float(np.median(np.abs(predictions))) if sized and len(predictions) else 0.0
    best = None
    for power in SIZE_POWERS if floor > 0 else (0.0,):
        size = np.maximum(np.abs(predictions), floor) ** power
        calibration = {**_binned_quantiles(predictions, errors / size, level, n_bins),
                       "size_power": power, "size_floor": floor}
        widths = half_widths(calibration, predictions)
        width = float(np.mean(np.log(np.maximum(widths, 1e-9 * floor))))
        if best is None or width < best[0]:  # a NaN width (too few regions) never wins
            best = (width, calibration)
    return best[1]


def _binned_quantiles(predictions: np.ndarray, errors: np.ndarray, level: float,
                      n_bins: int) -> dict[str, list[float]]:
    edges = np.quantile(predictions, np.arange(1, n_bins) / n_bins) if n_bins > 1 else []
    bin_of = np.searchsorted(edges, predictions, side="right")
    overall = conformal_quantile(errors, level)
    quantiles = []
    for b in range(n_bins):
        q = conformal_quantile(errors[bin_of == b], level)
        quantiles.append(q if math.isfinite(q) else overall)
    return {"edges": [float(e) for e in edges], "quantiles": quantiles}


def half_widths(calibration: dict[str, Any], predictions: np.ndarray,
                scale: np.ndarray | None = None) -> np.ndarray:
    """The half-widths of the intervals of these predictions under `calibration`: the
    quantile of each prediction's bin, times its size scale and each region's error scale
    where there are; NaN where the quantile is infinite."""
    bin_of = np.searchsorted(np.asarray(calibration["edges"], dtype=np.float64), predictions,
                             side="right")
    half = np.asarray(calibration["quantiles"], dtype=np.float64)[bin_of]
    power = calibration.get("size_power", 0.0)
    if power:
        half = half * np.maximum(np.abs(predictions), calibration["size_floor"]) ** power
    if scale is not None:
        half = half * scale
    return np.where(np.isfinite(half), half, np.nan)


def cross_conformal(y: np.ndarray, predictions: np.ndarray, fold: np.ndarray, level: float,
                    scales: dict[int, np.ndarray | None] | None = None, sized: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(low, high, summary): the `level` interval of every region's prediction.

    y, predictions, fold (N,): labels (NaN unlabelled), the pooled predictions, each labelled
    region's fold (-1 unlabelled: predicted by the final model). scales: fold -> (N,) error
    sizes of that fold's model (-1: the final model's), or None where errors are alike.
    sized: the target is never negative (its errors may grow with the prediction: `calibrate`).
    summary: the level, the labelled regions' coverage, the intervals' mean and median width,
    the number of bins, and `calibration` (every labelled region's; what the final model's
    intervals, and `predict`'s, use)."""
    if not 0 < level < 1:
        raise ValueError(f"the interval level must lie between 0 and 1, got {level}")
    scales = scales or {}
    labelled = np.flatnonzero(fold >= 0)
    n_bins = max(1, min(MAX_BINS, len(labelled) // BIN_REGIONS))
    normalised = np.full(len(y), np.nan)
    for k in np.unique(fold[labelled]):
        members = labelled[fold[labelled] == k]
        scale = scales.get(k)
        normalised[members] = np.abs(y[members] - predictions[members]) / (
            1.0 if scale is None else scale[members])
    half = np.full(len(y), np.nan)
    for k in np.unique(fold[labelled]):
        members = labelled[fold[labelled] == k]
        others = labelled[fold[labelled] != k]
        calibration = calibrate(predictions[others], normalised[others], level, n_bins, sized)
        scale = scales.get(k)
        half[members] = half_widths(calibration, predictions[members],
                                    None if scale is None else scale[members])
    final = calibrate(predictions[labelled], normalised[labelled], level, n_bins, sized)
    rest = np.flatnonzero(fold < 0)
    scale = scales.get(-1)
    half[rest] = half_widths(final, predictions[rest], None if scale is None else scale[rest])
    low, high = predictions - half, predictions + half
    judged = labelled[np.isfinite(half[labelled])]
    inside = np.abs(y[judged] - predictions[judged]) <= half[judged]
    by_fifth = None  # the share held in each fifth of the predictions, smallest first
    if len(judged) >= 50:
        fifth = np.searchsorted(np.quantile(predictions[judged], [0.2, 0.4, 0.6, 0.8]),
                                predictions[judged], side="right")
        by_fifth = [float(inside[fifth == f].mean()) if (fifth == f).any() else None
                    for f in range(5)]
    width = 2 * half[np.isfinite(half)]
    summary = {"level": level,
               "coverage": float(inside.mean()) if len(judged) else None,
               "coverage_by_fifth": by_fifth,
               "mean_width": float(width.mean()) if len(width) else None,
               "median_width": float(np.median(width)) if len(width) else None,
               "bins": n_bins, "scaled": any(s is not None for s in scales.values()),
               "size_power": final["size_power"],
               "calibration": final}
    return low, high, summary


def interval_text(summary: dict[str, Any]) -> str:
    """One line on a target's intervals: how many labelled regions they held, how wide."""
    if summary.get("coverage") is None:
        return "none: too few labelled regions for the level"
    by_fifth = summary.get("coverage_by_fifth")
    fifths = ("" if not by_fifth or None in by_fifth else
              " (by fifth of the predictions, smallest first: "
              + " / ".join(f"{share:.0%}" for share in by_fifth) + ")")
    return (f"held {summary['coverage']:.1%} of the labelled regions' values (each judged "
            f"without its own error){fifths}; median width {summary['median_width']:.4g}"
            + (", wider where the weight field is small" if summary.get("scaled") else "")
            + (", wider for larger predictions" if summary.get("size_power") else ""))
