"""Baselines every result is shown beside: linear and boosted models on raw features.

- `ridge_fit_predict(alpha=1)`: the literature's Ridge(alpha = 1), no choice at all.
- `ridge_cv_fit_predict()`: Ridge whose penalty is chosen by exact leave-one-out inside each
  training fold (closed form through one SVD), optionally on log1p(target).
- `gbm_fit_predict()`: scikit-learn HistGradientBoosting with its settings chosen by an inner
  K-fold inside each training fold.

Each returns a `fit_predict` for `engine.training.cv.cross_val_predict_pooled`. In the paper
protocol (`selection_index` given) the penalty / settings are chosen on the test fold instead,
which reproduces the released code's optimism and is labelled so by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.training.cv import PooledPrediction, cross_val_predict_pooled, kfold_splits

# logspace(-2, 5, 36): the grid with which the Manhattan README's RidgeCV figures were measured
DEFAULT_ALPHAS = np.logspace(-2, 5, 36)


# ---------------------------------------------------------------- target transforms
def forward_target(y: np.ndarray, transform: str) -> np.ndarray:
    """The target a model is fitted on: y itself or log1p(y) (counts, y >= 0)."""
    if transform == "raw":
        return y
    if transform == "log1p":
        return np.log1p(np.clip(y, 0.0, None))
    raise ValueError(f"unknown target transform {transform!r}")


LOG_CAP = 2.0  # log1p predictions are capped at log1p(LOG_CAP * the largest training label)


def inverse_target(values: np.ndarray, transform: str, y_train: np.ndarray, *,
                   cap: float = LOG_CAP, leave_one_out: bool = False) -> np.ndarray:
    """Back to the target's units. log1p predictions are capped at log1p(cap * max of y_train)
    so that a linear model extrapolating in log space cannot return astronomically large
    counts. With `leave_one_out`, `values` are the leave-one-out predictions of `y_train`'s
    regions, and each is capped by the largest label of the other regions (a held-out label
    never bounds its own prediction)."""
    if transform == "raw":
        return values
    y = np.asarray(y_train, dtype=np.float64)
    top = np.full(np.shape(values), float(y.max()))
    if leave_one_out and len(y) > 1:
        first = int(np.argmax(y))
        top[first] = float(np.max(np.delete(y, first)))
    return np.expm1(np.clip(values, 0.0, np.log1p(cap * top)))


# ---------------------------------------------------------------- Ridge, closed form
# (mean of X (F,), U (n, r), singular values (r,), V^T (r, F)) of X - mean(X)
CentredSVD = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def training_weights(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    """A target's region weights over the training rows, rescaled to mean 1 (so that a penalty
    means the same with and without them); None stays None (every region counts once)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("region weights must be finite and > 0, one per training region")
    return w / w.mean()


def centred_svd(X: np.ndarray, weights: np.ndarray | None = None) -> CentredSVD:
    """The thin SVD of the column-centred X that `LeaveOneOutRidge.fit` works from. With
    region `weights` (mean 1): the weighted column means, and the SVD of W^1/2 (X - mean)."""
    X = np.asarray(X, dtype=np.float64)
    if weights is None:
        x_mean = X.mean(axis=0)
        u, s, vt = np.linalg.svd(X - x_mean, full_matrices=False)  # (n, r), (r,), (r, F)
        return x_mean, u, s, vt
    x_mean = weights @ X / weights.sum()
    u, s, vt = np.linalg.svd(np.sqrt(weights)[:, None] * (X - x_mean), full_matrices=False)
    return x_mean, u, s, vt


def weighted_mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    """mean(values), or the `weights`-weighted mean."""
    return float(values.mean() if weights is None else weights @ values / weights.sum())


def leave_one_out_residuals(basis: np.ndarray, spectrum: np.ndarray, penalties,
                            y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(len(penalties), n) exact leave-one-out residuals of the smoother with intercept
    fitted = mean(y) + B (d_a * B^T yc), d_a = spectrum / (spectrum + a), one row per penalty a:
    Ridge (B = U, spectrum = s^2 of the centred X) and kernel ridge (B = Q, spectrum = the
    centred kernel's eigenvalues). Leverages h_i = sum_k B_ik^2 d_ak + 1/n; residuals
    (y_i - fitted_i) / (1 - h_i).

    With region `weights` w (weighted least squares), B comes from the W^1/2-scaled centred
    matrix, mean(y) is the weighted mean, fitted = mean(y) + W^-1/2 B (d_a * B^T W^1/2 yc) and
    h_i = sum_k B_ik^2 d_ak + w_i / sum(w): still exact (the weighted hat matrix's diagonal)."""
    n = len(y)
    y_mean = weighted_mean(y, weights)
    root = np.ones(n) if weights is None else np.sqrt(weights)
    own = np.full(n, 1.0 / n) if weights is None else weights / weights.sum()
    projected = basis.T @ (root * (y - y_mean))  # (r,)
    squared = basis**2  # (n, r)
    residuals = np.empty((len(penalties), n))
    for a, penalty in enumerate(penalties):
        d = spectrum / (spectrum + penalty)  # (r,)
        fitted = y_mean + (basis @ (d * projected)) / root
        residuals[a] = (y - fitted) / np.maximum(1.0 - (squared @ d + own), 1e-12)
    return residuals


def own_out_residuals(residuals: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(n,) each region's leave-one-out residual at the grid point (penalty, width...) that the
    other regions' leave-one-out errors (weighted by `weights` when given) choose: residuals
    (G, n), one row per grid point.

    The grid point minimising the leave-one-out error of all n regions has seen each region's
    own error, and a grid of many points flatters a flexible model by that choice. Leaving the
    region's own error out of the choice makes its prediction out of sample in the choice too
    (the others' residuals still come from fits that include it: a close, cheap version of a
    nested leave-one-out, with no refit)."""
    squared = residuals**2 if weights is None else weights * residuals**2  # (G, n)
    # (G, n) error without region i, as the regions before it plus those after it: no
    # subtraction, so one region's huge residual (leverage near 1) cannot swamp the others'
    zero = np.zeros((squared.shape[0], 1))
    before = np.concatenate([zero, np.cumsum(squared, axis=1)[:, :-1]], axis=1)
    after = np.concatenate([np.cumsum(squared[:, ::-1], axis=1)[:, ::-1][:, 1:], zero], axis=1)
    choice = np.argmin(before + after, axis=0)  # (n,) the first on ties
    return residuals[choice, np.arange(residuals.shape[1])]


@dataclass
class LeaveOneOutRidge:
    """Ridge with intercept; penalty chosen by exact leave-one-out over `alphas` (one SVD).

    With Xc = X - mean(X) = U S V^T and d_a = s^2 / (s^2 + a), the fitted values are
    mean(y) + U (d_a * U^T yc), the leverages h_i = sum_k U_ik^2 d_ak + 1/n, and the
    leave-one-out residuals (y_i - fitted_i) / (1 - h_i). With region weights, weighted least
    squares (`leave_one_out_residuals`); `loo_mse_` is then the weighted mean squared error.
    """

    alphas: np.ndarray = field(default_factory=lambda: DEFAULT_ALPHAS.copy())  # penalty grid
    alpha_: float = float("nan")  # the chosen penalty
    coef_: np.ndarray | None = None  # (F,)
    intercept_: float = 0.0
    loo_predictions_: np.ndarray | None = None  # (n,) leave-one-out predictions at alpha_
    # (n,) each region's leave-one-out prediction at the penalty the other regions' leave-one-
    # out errors choose (`own_out_residuals`): out of sample in the penalty's choice too
    own_out_predictions_: np.ndarray | None = None
    loo_mse_: np.ndarray | None = None  # (len(alphas),) leave-one-out MSE per penalty
    _solution: tuple | None = field(default=None, repr=False)  # centred SVD, kept for use_alpha

    def fit(self, X: np.ndarray, y: np.ndarray, decomposition: CentredSVD | None = None,
            weights: np.ndarray | None = None) -> LeaveOneOutRidge:
        """Fits on (X, y). `decomposition`: `centred_svd(X, weights)` when the caller already
        has it (one SVD serves every target fitted on the same rows); the same result either
        way. `weights` (n,): region weights, mean 1 (`training_weights`), for weighted least
        squares: the fit, the leave-one-out residuals and the penalty's choice are weighted."""
        y = np.asarray(y, dtype=np.float64)
        x_mean, u, s, vt = (decomposition if decomposition is not None
                            else centred_svd(X, weights))
        y_mean = weighted_mean(y, weights)
        root = 1.0 if weights is None else np.sqrt(weights)
        uty = u.T @ (root * (y - y_mean))  # (r,)
        residuals = leave_one_out_residuals(u, s**2, self.alphas, y, weights)  # (A, n)
        squared = residuals**2 if weights is None else weights * residuals**2
        self.loo_mse_ = squared.mean(axis=1)
        best = int(np.argmin(self.loo_mse_))
        self.loo_predictions_ = y - residuals[best]
        self.own_out_predictions_ = y - own_out_residuals(residuals, weights)
        self._solution = (x_mean, y_mean, s, vt, uty)
        return self.use_alpha(float(self.alphas[best]))

    def use_alpha(self, alpha: float) -> LeaveOneOutRidge:
        """Sets the coefficients to those of penalty `alpha` (no refit: the SVD is kept)."""
        x_mean, y_mean, s, vt, uty = self._solution
        self.alpha_ = float(alpha)
        self.coef_ = vt.T @ (s / (s**2 + self.alpha_) * uty)
        self.intercept_ = y_mean - float(x_mean @ self.coef_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_


def ridge_fit_predict(alpha: float = 1.0):
    """The literature's Ridge(alpha) from features to target; nothing is chosen."""
    from sklearn.linear_model import Ridge

    def fit_predict(X, y, train_index, predict_index, *, selection_index=None):
        model = Ridge(alpha=alpha).fit(X[train_index], y[train_index])
        return model.predict(X[predict_index]), {"alpha": alpha}

    return fit_predict


def ridge_cv_fit_predict(alphas: np.ndarray | None = None, target: str = "raw",
                         weights: np.ndarray | None = None):
    """Ridge with the penalty chosen by leave-one-out inside the training fold (clean), or by
    the test fold's error (paper protocol). `target`: "raw" or "log1p". `weights` (N,): region
    weights of all regions for weighted least squares (None: every region counts once)."""
    alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)

    def fit_predict(X, y, train_index, predict_index, *, selection_index=None):
        y_train = y[train_index]
        w = None if weights is None else training_weights(weights[train_index], len(train_index))
        model = LeaveOneOutRidge(alphas=alphas).fit(X[train_index],
                                                    forward_target(y_train, target), weights=w)
        if selection_index is not None:  # paper protocol: the penalty that scores best on test
            held = None if weights is None else weights[selection_index]
            errors = []
            for alpha in alphas:
                predicted = inverse_target(model.use_alpha(alpha).predict(X[selection_index]),
                                           target, y_train)
                errors.append(float(np.average((predicted - y[selection_index]) ** 2,
                                               weights=held)))
            model.use_alpha(float(alphas[int(np.argmin(errors))]))
        predicted = inverse_target(model.predict(X[predict_index]), target, y_train)
        return predicted, {"alpha": model.alpha_}

    return fit_predict


# ---------------------------------------------------------------- gradient boosting
# A few settings only: each costs one inner K-fold per outer fold.
GBM_GRID = (
    {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 5},
    {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 7, "min_samples_leaf": 10},
)


def gbm_fit_predict(grid: tuple[dict, ...] = GBM_GRID, *, inner_folds: int = 3, seed: int = 0,
                    target: str = "raw"):
    """HistGradientBoosting with the setting of `grid` that scores best (MSE) on an inner
    K-fold of the training fold (clean) or on the test fold (paper protocol)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    def make(setting: dict) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(random_state=seed, **setting)

    def fit_predict(X, y, train_index, predict_index, *, selection_index=None):
        y_train = y[train_index]
        errors = []
        for setting in grid:
            if selection_index is not None:
                model = make(setting).fit(X[train_index], forward_target(y_train, target))
                predicted = inverse_target(model.predict(X[selection_index]), target, y_train)
                errors.append(float(((predicted - y[selection_index]) ** 2).mean()))
                continue
            error = 0.0
            for inner_train, inner_test in kfold_splits(train_index, inner_folds, shuffle=True,
                                                        seed=seed):
                model = make(setting).fit(X[inner_train], forward_target(y[inner_train], target))
                predicted = inverse_target(model.predict(X[inner_test]), target, y[inner_train])
                error += float(((predicted - y[inner_test]) ** 2).sum())
            errors.append(error)
        best = int(np.argmin(errors))
        model = make(grid[best]).fit(X[train_index], forward_target(y_train, target))
        predicted = inverse_target(model.predict(X[predict_index]), target, y_train)
        return predicted, {"setting": best}

    return fit_predict


# ---------------------------------------------------------------- all baselines at once
def evaluate_baselines(literature: np.ndarray, robust: np.ndarray, y: np.ndarray, *,
                       folds: int = 10, shuffle: bool = False, seed: int = 2024,
                       protocol: str = "clean", include_gbm: bool = False,
                       gbm_seed: int = 0,
                       weights: np.ndarray | None = None) -> dict[str, PooledPrediction]:
    """Pooled K-fold results of each baseline, by name.

    literature / robust: (N, F) feature matrices from `engine.training.features`. `weights`
    (N,): the target's region weights; with them, "raw_ridgecv_weighted" (the bar fitted by
    weighted least squares) is added and every result's metrics include the weighted ones.
    """
    runs = {
        "raw_ridge1": (ridge_fit_predict(1.0), literature),
        "raw_ridgecv": (ridge_cv_fit_predict(), literature),
        "robust_ridgecv": (ridge_cv_fit_predict(), robust),
        "robust_ridgecv_log": (ridge_cv_fit_predict(target="log1p"), robust),
    }
    if weights is not None:
        runs["raw_ridgecv_weighted"] = (ridge_cv_fit_predict(weights=weights), literature)
    if include_gbm:
        runs["robust_gbm"] = (gbm_fit_predict(seed=gbm_seed), robust)
    return {name: cross_val_predict_pooled(fit_predict, X, y, folds=folds, shuffle=shuffle,
                                           seed=seed, protocol=protocol, weights=weights)
            for name, (fit_predict, X) in runs.items()}
