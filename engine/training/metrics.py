"""Quality figures: MAE, RMSE and R² of pooled predictions, with bootstrap intervals over the
regions (one model's R², two models' paired difference); NMI and ARI of clusters vs classes."""

from __future__ import annotations

import numpy as np

from engine.errors import InputError


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       weights: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE and R² over all regions at once (pooled over folds), as the literature reports.

    R² = 1 - sum((y - p)^2) / sum((y - mean(y))^2), the mean taken over the same regions.
    With region `weights` w (a rate's population, a ratio's expected count) the weighted
    figures are added beside them: mae_weighted = sum(w |y - p|) / sum(w), rmse_weighted
    likewise, r2_weighted = 1 - sum(w (y - p)^2) / sum(w (y - weighted mean)^2).
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} targets but {y_pred.shape[0]} predictions")
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("metrics need finite targets and predictions")
    error = y_pred - y_true
    total = float(((y_true - y_true.mean()) ** 2).sum())
    residual = float((error**2).sum())
    out = {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
    }
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != y_true.shape or not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError("weighted metrics need one finite weight > 0 per region")
        centre = float(w @ y_true / w.sum())
        total = float(w @ (y_true - centre) ** 2)
        out["mae_weighted"] = float(w @ np.abs(error) / w.sum())
        out["rmse_weighted"] = float(np.sqrt(w @ error**2 / w.sum()))
        out["r2_weighted"] = 1.0 - float(w @ error**2) / total if total > 0 else float("nan")
    return out


def clustering_metrics(embeddings: np.ndarray, classes: np.ndarray, *, seed: int = 0,
                       n_init: int = 10, n_clusters: int | None = None) -> dict[str, float]:
    """NMI and ARI of KMeans on the embeddings against the class labels; k = `n_clusters`, or
    the number of classes present when None.

    Regions whose class is missing (None, NaN or "") are left out. Shapes: embeddings (N, d),
    classes (N,).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    embeddings = np.asarray(embeddings, dtype=np.float64)
    classes = np.asarray(classes, dtype=object)
    if embeddings.shape[0] != classes.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {classes.shape[0]} class labels")
    known = np.array([c is not None and c == c and str(c) != "" for c in classes])
    labels = classes[known].astype(str)
    k = present = len(np.unique(labels))
    if k < 2 or known.sum() <= k:
        raise InputError(f"clustering needs at least 2 classes and more regions than classes "
                         f"(got {k} classes, {int(known.sum())} regions)",
                         hint="Choose a class field with several classes.")
    if n_clusters is not None:
        if not 2 <= n_clusters < known.sum():
            raise InputError(f"KMeans needs 2 <= k < {int(known.sum())} regions (got k = "
                             f"{n_clusters})", hint="Choose a smaller number of clusters.")
        k = int(n_clusters)
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(
        embeddings[known])
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "classes": present,
        "clusters": k,
        "regions": int(known.sum()),
    }


CONFIDENCE = 0.95
RESAMPLES = 2000


def _r2_along(y: np.ndarray, prediction: np.ndarray, weights: np.ndarray | None = None
              ) -> np.ndarray:
    """R² along the last axis (the regions), weighted by `weights` when given."""
    if weights is None:
        total = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        return 1.0 - ((prediction - y) ** 2).sum(axis=-1) / total
    centre = (weights * y).sum(axis=-1, keepdims=True) / weights.sum(axis=-1, keepdims=True)
    total = (weights * (y - centre) ** 2).sum(axis=-1)
    return 1.0 - (weights * (prediction - y) ** 2).sum(axis=-1) / total


def paired_r2_difference(y: np.ndarray, model: list[np.ndarray], other: list[np.ndarray],
                         fold: np.ndarray | None = None, *, resamples: int = RESAMPLES,
                         confidence: float = CONFIDENCE, seed: int = 0,
                         weights: np.ndarray | None = None) -> dict:
    """mean_s R²(model_s) - mean_t R²(other_t) on the regions of `y`, and its interval from a
    paired bootstrap over those regions (scipy's `stats.bootstrap`, percentile method).
    `model` and `other` hold one (N,) prediction per seed (a single one for a seedless model);
    `other` may be empty, and the figure is then `model`'s own R² and its interval, every R²
    computed on each resample. It is the evaluation's sampling uncertainty with the fitted
    models held fixed: how sure one can be on these regions, not on another city.

    The difference's resamples keep the evaluated regions' variance as the denominator: the
    difference is the mean over regions of (the other's squared error - the model's) / var(y),
    and it is that mean that is resampled. On all the regions this is exactly the R²
    difference; on a resample it stays a difference of errors. R²s recomputed with each
    resample's own variance are not: a resample that leaves out the one region holding most
    of the variance (a city's centre among its suburbs) scores both models far below zero, and
    intervals of the difference ran to +3 (St. Louis's homicide counts, 78 counties).
    `fold` (N,): the fold each region was held out in, for the count of folds on which
    `model`'s squared error is the lower. `weights` (N,): region weights; every R² and error
    is then the weighted one (`regression_metrics`' r2_weighted)."""
    from scipy.stats import bootstrap

    y = np.asarray(y, dtype=np.float64)
    model = [np.asarray(p, dtype=np.float64) for p in model]
    other = [np.asarray(p, dtype=np.float64) for p in other]
    if np.ptp(y) == 0:
        raise ValueError("R² needs a target that varies")
    rng = np.random.default_rng(seed)
    options = dict(n_resamples=resamples, confidence_level=confidence, batch=200,
                   method="percentile", random_state=rng, vectorized=True)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    if other:
        error_model = w * np.mean([(p - y) ** 2 for p in model], axis=0)  # (N,) mean over seeds
        error_other = w * np.mean([(p - y) ** 2 for p in other], axis=0)
        centre = float(y.mean() if weights is None else w @ y / w.sum())
        gain = (error_other - error_model) / np.mean(w * (y - centre) ** 2)  # (N,)
        observed = float(gain.mean())
        result = bootstrap((gain,), np.mean, **options)
    elif weights is None:
        def statistic(y, *predictions, axis=-1):
            return np.mean([_r2_along(y, p) for p in predictions], axis=0)

        observed = float(statistic(y, *model))
        result = bootstrap((y, *model), statistic, paired=True, **options)
    else:
        def statistic(y, w, *predictions, axis=-1):
            return np.mean([_r2_along(y, p, w) for p in predictions], axis=0)

        observed = float(statistic(y, w, *model))
        result = bootstrap((y, w, *model), statistic, paired=True, **options)
    low, high = result.confidence_interval
    out = {"difference" if other else "r2": observed, "low": float(low), "high": float(high),
           "confidence": confidence, "resamples": resamples}
    if other:
        out["share_above_zero"] = float(np.mean(result.bootstrap_distribution > 0))
    if fold is not None and other:
        fold = np.asarray(fold)
        numbers = np.unique(fold[fold >= 0])
        out["folds"] = len(numbers)
        out["folds_better"] = int(sum(error_model[fold == f].sum() < error_other[fold == f].sum()
                                      for f in numbers))
    return out


def versus_text(versus: dict) -> str:
    """`paired_r2_difference`'s result as "+0.018, 95% paired interval [-0.005, +0.052],
    lower error on 10 of 10 folds" (also the wording of the benchmarks' goal rows)."""
    text = (f"{versus['difference']:+.3f}, {versus['confidence']:.0%} paired interval "
            f"[{versus['low']:+.3f}, {versus['high']:+.3f}]")
    if "folds" in versus:
        text += f", lower error on {versus['folds_better']} of {versus['folds']} folds"
    return text


def extrapolation_summary(y: np.ndarray, predictions: np.ndarray, flags: np.ndarray,
                          evaluated: np.ndarray, region_ids, *, listed: int = 20) -> dict:
    """How many predictions extrapolate (`TrainingReach` flags > 0) and how much of the
    cross-validated squared error the evaluated ones among them hold.

    y, predictions, flags: (N,); evaluated: (N,) bool, the regions held out in a fold.
    """
    flags = np.asarray(flags)
    flagged = flags > 0
    errors = np.where(evaluated, (np.asarray(predictions) - np.asarray(y)) ** 2, 0.0)
    total = float(errors.sum())
    ids = np.asarray(region_ids)[flagged][:listed].tolist()  # Python scalars, as JSON writes
    return {"regions": int(flagged.sum()), "inputs_beyond": int(((flags & 1) > 0).sum()),
            "prediction_beyond": int(((flags & 2) > 0).sum()),
            "evaluated": int((flagged & evaluated).sum()),
            "error_share": float(errors[flagged].sum() / total) if total > 0 else 0.0,
            "region_ids": ids}


def extrapolation_text(summary: dict, regions: int) -> str:
    """`extrapolation_summary` in a sentence for the log."""
    text = (f"{summary['regions']} of {regions} predictions extrapolate (inputs beyond every "
            f"training region's: {summary['inputs_beyond']}; prediction outside the training "
            f"labels' range: {summary['prediction_beyond']})")
    if summary["evaluated"]:
        text += (f"; the {summary['evaluated']} held out in a fold hold "
                 f"{summary['error_share']:.0%} of the cross-validated squared error")
    return text


WEIGHT_HINT_LEVEL = 1e-3  # the test level of `weight_hint`, after Bonferroni over the fields
WEIGHT_HINT_RANK_LEVEL = 0.05  # its rank check's level, likewise


def weight_hint(y: np.ndarray, predictions: np.ndarray, fields: dict[str, np.ndarray], *,
                level: float = WEIGHT_HINT_LEVEL,
                rank_level: float = WEIGHT_HINT_RANK_LEVEL) -> dict | None:
    """The numeric field that a target's errors say is its denominator, or None.

    A rate or ratio over a small number (deaths over expected deaths, cases over births) is
    noisier where that number is small: its error variance grows with 1 / field. Here the
    squared leave-one-out errors of the bar (`predictions`: its leave-one-out predictions of
    the same regions) are regressed on 1 / field for each field that is > 0 wherever the
    target is labelled (Breusch and Pagan's test against that one direction: n R² ~ chi²(1));
    a field with a positive slope and a p-value under `level` after Bonferroni over the fields
    tested is returned as {"field", "p_value", "rank_p_value"} (the smallest p-value). The
    errors' ranks must agree (Spearman's correlation of the squared errors with 1 / field,
    one-sided, under `rank_level` after Bonferroni): n R² alone is moved by a few outliers in
    small places. y, predictions (n,), regions with NaN labels left out; fields: name -> (n,)
    values of the same regions."""
    from scipy import stats

    labelled = np.isfinite(y)
    tested = {name: np.asarray(values, dtype=np.float64)[labelled]
              for name, values in fields.items()}
    tested = {name: v for name, v in tested.items()
              if np.isfinite(v).all() and (v > 0).all() and np.ptp(v) > 0}
    if not tested or labelled.sum() < 10:
        return None
    squared = (y[labelled] - np.asarray(predictions, dtype=np.float64)[labelled]) ** 2
    best = None
    for name, values in tested.items():
        fit = stats.linregress(1.0 / values, squared)
        if not fit.slope > 0:
            continue
        p_value = min(1.0, float(stats.chi2.sf(len(values) * fit.rvalue**2, 1)) * len(tested))
        rank = stats.spearmanr(1.0 / values, squared, alternative="greater")
        rank_p = min(1.0, float(rank.pvalue) * len(tested))
        if (p_value < level and rank_p < rank_level
                and (best is None or p_value < best["p_value"])):
            best = {"field": name, "p_value": p_value, "rank_p_value": rank_p}
    return best
