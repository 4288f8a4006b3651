"""Quality figures: MAE, RMSE and R² of pooled predictions; NMI and ARI of clusters vs classes."""

from __future__ import annotations

import numpy as np

from engine.errors import InputError


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² over all regions at once (pooled over folds), as the literature reports.

    R² = 1 - sum((y - p)^2) / sum((y - mean(y))^2), the mean taken over the same regions.
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
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
    }


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
