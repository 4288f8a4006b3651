"""The engine's default per-task model: candidates over several inputs, blended by inner LOO.

For one target, a set of candidate predictors is built from what the task has:

- Ridge (penalty by exact leave-one-out) on the SREL embeddings, on the raw feature matrices,
  on the language semantic vectors, and on [embeddings, raw features] side by side;
- kernel ridge (RBF, width and penalty by exact leave-one-out) on the robust features;
- each on the raw target and on log1p(target) (counts only);
- optionally Prompt4RE (embeddings + semantic vectors, `fit_prompt4re`, its epoch chosen by its
  own inner validation split) and a gradient-boosting model.

Clean protocol (default), inside the training regions alone:

1. every Ridge and kernel-ridge candidate gives its exact leave-one-out predictions from one
   decomposition (no refit), each region's at the penalty (and width) that the other regions'
   leave-one-out errors choose: chosen with its own error, a flexible candidate's 80-point grid
   flatters it; other candidates give inner K-fold out-of-fold predictions;
2. the stack: non-negative weights summing to 1 minimising the squared error of those
   predictions (Breiman 1996);
3. the anchor: the literature's RidgeCV on the raw features (`ridge[raw|raw]`, the baseline
   every result is shown beside), or the best single candidate when there are no raw features;
4. the final blend is lambda * stack + (1 - lambda) * anchor, lambda in {0, 0.1, ..., 1} chosen
   by an inner K-fold over the stacking step (weights fitted on K-1 parts of the leave-one-out
   predictions, scored on the last by their mean absolute error, so that a few noisy regions
   cannot decide it alone). lambda = 0 (the anchor alone) unless the cross-validated stack
   beats the anchor: with ~160 regions a free stack is noisy, and this shrinkage is what
   keeps the default from falling below the baseline when the other inputs add nothing;
5. the extrapolation guard: beyond the training labels' range only the anchor goes. A region
   for which the anchor predicts more than the largest training label gets the anchor's
   prediction alone; any other region's blended prediction is held inside [smallest, largest]
   training label. The blend was chosen on leave-one-out predictions of regions inside the
   training range; beyond it, kernel ridge falls back toward the mean (or, wide and lightly
   penalised, runs on like a polynomial) and log-target models grow exponentially. On synthetic
   cities of Chicago's size (77 regions, 25 folds) the first half turned losses to the bar of
   up to 0.54 R² into at most 0.06; on Tokyo's mortality ratio the second half turned -0.35
   into -0.28 (docs/quality-notes.md).

Every prediction also says whether it is an extrapolation (`TrainingReach`): the region's
inputs lie beyond every training region's (its leverage under the anchor's Ridge), or its
prediction lies outside the training labels' range. These regions are few and hold a large
share of the errors on places with outliers; the engine writes the flag beside the prediction.

No label outside `train_index` is read.

Paper protocol: the candidates are fitted on the training regions and the weights are fitted on
the test fold's labels (`selection_index`): OPTIMISTIC, for reproducing published practice only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from engine.errors import InputError
from engine.training.baselines import (
    DEFAULT_ALPHAS,
    CentredSVD,
    LeaveOneOutRidge,
    centred_svd,
    forward_target,
    inverse_target,
    leave_one_out_residuals,
    own_out_residuals,
    training_weights,
    weighted_mean,
)
from engine.training.cv import (
    LITERATURE_SEED,
    PROTOCOL_LABELS,
    PooledPrediction,
    check_protocol,
    cross_val_predict_pooled,
    kfold_splits,
)
from engine.training.features import zscore
from engine.training.metrics import regression_metrics, weight_hint

Predict = Callable[[np.ndarray], np.ndarray]  # region indices -> predictions in target units


@dataclass
class TaskInputs:
    """Everything the per-task model may read, row i = region i. No array but `y` holds labels."""

    embeddings: np.ndarray | None  # (N, d) SREL region embeddings
    semantic: np.ndarray | None  # (N, h) language-model semantic vectors for this task
    raw_features: np.ndarray | dict[str, np.ndarray] | None  # (N, F), or named (N, F_k) matrices
    y: np.ndarray  # (N,) target, NaN = unknown
    # (N,) the target's region weights (> 0 where labelled; a rate's population, a ratio's
    # expected count): weighted least squares, weighted stacking and shrinkage. None: equal
    weights: np.ndarray | None = None
    # name -> (N,) numeric fields of the region layer that may be a rate's denominator, for a
    # target without weights (`PredictorConfig.auto_weight`); None: none
    denominators: dict[str, np.ndarray] | None = None

    @property
    def n_regions(self) -> int:
        return int(np.asarray(self.y).shape[0])


@dataclass
class PredictorConfig:
    inner_folds: int = 5  # inner K-fold for candidates without exact leave-one-out (GBM, Prompt4RE)
    inner_shuffle: bool = True  # shuffle the training regions before inner folds (seeded)
    combine: str = "shrink"  # "shrink": stack shrunk toward the anchor; "stack"; "best": one
    stack_folds: int = 10  # K-fold over the stacking step that chooses the shrinkage lambda
    shrink_steps: int = 11  # lambda grid: linspace(0, 1, shrink_steps)
    # The error lambda minimises over the stacking step's folds: "squared" (the mean squared
    # error) or "absolute" (the mean absolute error: a few noisy regions cannot decide alone)
    shrink_loss: str = "absolute"
    anchor: str = "ridge[raw|raw]"  # the candidate the stack shrinks toward (RidgeCV on raw)
    kernel_ridge: bool = True  # RBF kernel-ridge candidates on the robust features
    kernel_max_regions: int = 1000  # no kernel ridge above this many labelled regions (O(n^3))
    kernel_widths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # gamma x 1/median sq. distance
    kernel_alphas: tuple[float, ...] = tuple(np.logspace(-3, 2, 16))  # kernel-ridge penalties
    alphas: tuple[float, ...] = tuple(DEFAULT_ALPHAS)  # Ridge penalties tried by leave-one-out
    target_transforms: tuple[str, ...] = ("raw", "log1p")  # log1p only used when all y >= 0
    use_concat: bool = True  # a candidate on [embeddings, raw features] side by side
    use_semantic_ridge: bool = True  # a Ridge candidate on the semantic vectors alone
    prompt4re: bool = False  # Prompt4RE as a candidate (torch training per inner fold: slow)
    prompt4re_epochs: int = 300  # Prompt4RE's epoch ceiling (its inner split picks the epoch)
    prompt4re_lr: float = 3e-4  # Prompt4RE's Adam learning rate
    gbm: bool = False  # a gradient-boosting candidate (HistGradientBoosting, fixed settings)
    min_weight: float = 1e-3  # blend weights below this are dropped (and the rest renormalised)
    # A region for which the anchor predicts more than every training label gets the anchor's
    # prediction, and every other region's blend is held inside the training labels' range:
    # beyond it the blend's kernel and log-target members extrapolate beyond anything their
    # selection saw (kernels fall back to the mean or run on, log models grow exponentially).
    extrapolation_guard: bool = True
    # How a target's region weights w (TaskInputs.weights: a rate's population, a ratio's
    # expected count) enter the fit. "precision": each region's error variance is modelled as
    # tau^2 + sigma^2 / w (between-region error plus sampling noise, fitted to the anchor's
    # leave-one-out residuals of the training regions) and the fit weighs each region by the
    # inverse of that (`precision_weights`); "as_given": w itself.
    weighting: str = "precision"
    # A target without weights whose training regions' errors grow as one of
    # `TaskInputs.denominators` shrinks (`metrics.weight_hint`: Breusch-Pagan against 1 / field,
    # p < 0.001 after Bonferroni, a rate's small-number noise) is fitted with precision weights
    # from that field. Decided inside the training regions, like every other choice.
    auto_weight: bool = True


CANDIDATE_LOG_CAP = 1.0  # a log1p candidate predicts at most the largest training label


def candidate_inverse(values: np.ndarray, transform: str, y_train: np.ndarray, *,
                      leave_one_out: bool = False) -> np.ndarray:
    """A candidate's predictions back in the target's units (`baselines.inverse_target` with
    the cap at the largest training label instead of twice it): a linear model in log space
    grows exponentially beyond the data (on a 77-region synthetic city one predicted 104 and
    124 crimes where the training maximum was 63). Beyond it only the anchor goes (see the
    extrapolation guard)."""
    return inverse_target(values, transform, y_train, cap=CANDIDATE_LOG_CAP,
                          leave_one_out=leave_one_out)


# ---------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One way to predict the target: fit(train_index, y) -> predict(region indices)."""

    name: str
    fit: Callable[[np.ndarray, np.ndarray], Predict]
    info: dict[str, Any] = field(default_factory=dict)  # what the last fit chose (penalty...)
    # fit_loo(train_index, y) -> (predictor, (n_train,) exact leave-one-out predictions)
    fit_loo: Callable[[np.ndarray, np.ndarray], tuple[Predict, np.ndarray]] | None = None


def _side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """z-scored blocks side by side, each rescaled to the same total variance (so a wide block
    does not outweigh a narrow one) while the mean column variance stays 1."""
    total = sum(b.shape[1] for b in blocks)
    scaled = [b * np.sqrt(total / (len(blocks) * max(b.shape[1], 1))) for b in blocks]
    return np.concatenate(scaled, axis=1)  # (N, sum of widths)


def _saved_block(blocks: dict[str, np.ndarray], name: str, width: int) -> np.ndarray:
    """The input block a saved predictor reads, checked against the width it was fitted on."""
    if name not in blocks:
        raise InputError(f"the model needs the {name} inputs, which these regions do not have",
                         hint="Predict with the same layers and language model as at training.")
    X = blocks[name]
    if X.shape[1] != width:
        raise InputError(
            f"the model expects {width} {name} inputs, these regions give {X.shape[1]}",
            hint="Predict with the same layers, fields and language model as at training.")
    return X


@dataclass
class RidgePredict:
    """A fitted Ridge on one input block: predictions in the target's units. Saveable."""

    block: str  # the input block's name ("srel", "raw", "robust", "semantic", "srel+raw")
    transform: str  # "raw" or "log1p": the target the Ridge was fitted on
    coef: np.ndarray  # (F,)
    intercept: float
    alpha: float  # the penalty chosen by leave-one-out
    y_max: float  # the largest training label (caps log1p extrapolation)
    X: np.ndarray | None = field(default=None, repr=False)  # (N, F) the block, all regions

    def __call__(self, index: np.ndarray) -> np.ndarray:
        values = self.X[index] @ self.coef + self.intercept
        return candidate_inverse(values, self.transform, np.asarray([self.y_max]))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"coef": self.coef.astype(np.float64)},
                {"kind": "ridge", "block": self.block, "transform": self.transform,
                 "intercept": float(self.intercept), "alpha": float(self.alpha),
                 "y_max": float(self.y_max)})

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   blocks: dict[str, np.ndarray]) -> RidgePredict:
        X = _saved_block(blocks, meta["block"], arrays["coef"].shape[0])
        return cls(meta["block"], meta["transform"], arrays["coef"], meta["intercept"],
                   meta["alpha"], meta["y_max"], X)


# Flags of TrainingReach.flags: a region's inputs beyond every training region's, its
# prediction outside the training labels' range (both: 3).
INPUTS_BEYOND = 1
PREDICTION_BEYOND = 2
REACH_COMPONENT_FLOOR = 0.01  # components with s^2 below this times the penalty are folded in
# the remainder (their weight 1 / (s^2 + alpha) is within 1% of 1 / alpha)


@dataclass
class TrainingReach:
    """How far the training regions reach, to flag predictions that extrapolate.

    Inputs: a region lies beyond the training regions when its leverage under the anchor's
    Ridge (its input block, at the anchor's penalty alpha), h(x) = z^T (Xc^T Xc + alpha I)^-1 z
    + 1/n with z = x - mean, exceeds every training region's leave-one-out leverage
    h_i / (1 - h_i) (the same quantity with region i left out of the fit): it is further from
    the training data, in the directions the anchor reads, than any training region is from the
    others. Under exchangeability a new region like the training ones is beyond all of them
    with probability about 1 / (n + 1). Prediction: outside [smallest, largest] training label.
    Saveable (the components whose weight differs from 1 / alpha, not the training rows; they
    are stored in float32: with dense trip rows and columns they are about n x 2N numbers, 64 MB
    per target in float64 at N = 2,000, and the leverages they give move by about 1e-7).
    """

    block: str  # the input block's name ("raw")
    x_mean: np.ndarray = field(repr=False)  # (F,) training mean of the block
    components: np.ndarray = field(repr=False)  # (k, F) right singular vectors kept
    singular: np.ndarray = field(repr=False)  # (k,) their singular values
    alpha: float = 1.0  # the anchor's penalty
    n_train: int = 1
    threshold: float = 0.0  # the largest leave-one-out leverage among the training regions
    label_min: float = 0.0
    label_max: float = 0.0
    X: np.ndarray | None = field(default=None, repr=False)  # (N, F) the block, all regions

    @classmethod
    def fit(cls, block: str, X: np.ndarray, train: np.ndarray, y_train: np.ndarray,
            alpha: float, svd: CentredSVD | None = None) -> TrainingReach:
        x_mean, u, s, vt = svd if svd is not None else centred_svd(X[train])
        n = len(train)
        leverage = (u**2) @ (s**2 / (s**2 + alpha)) + 1.0 / n  # (n,) in-sample
        loo = leverage / np.maximum(1.0 - leverage, 1e-12)  # (n,) leave-one-out
        keep = s**2 > REACH_COMPONENT_FLOOR * alpha
        return cls(block, x_mean, vt[keep].copy(), s[keep].copy(), float(alpha), n,
                   float(loo.max()), float(np.min(y_train)), float(np.max(y_train)), X)

    def leverage(self, index: np.ndarray) -> np.ndarray:
        """(m,) leverage of the regions `index` (not in the training set) under the anchor."""
        z = self.X[index] - self.x_mean  # (m, F)
        projected = z @ self.components.T  # (m, k)
        rest = np.maximum((z**2).sum(axis=1) - (projected**2).sum(axis=1), 0.0)
        return ((projected**2 / (self.singular**2 + self.alpha)).sum(axis=1)
                + rest / self.alpha + 1.0 / self.n_train)

    def flags(self, index: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """(m,) int8: INPUTS_BEYOND | PREDICTION_BEYOND where they apply, else 0."""
        index = np.asarray(index, dtype=np.int64)
        out = np.zeros(len(index), dtype=np.int8)
        if not len(index):
            return out
        out[self.leverage(index) > self.threshold] |= INPUTS_BEYOND
        predictions = np.asarray(predictions, dtype=np.float64)
        out[(predictions > self.label_max) | (predictions < self.label_min)] |= PREDICTION_BEYOND
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"x_mean": self.x_mean, "components": self.components.astype(np.float32),
                 "singular": self.singular},
                {"block": self.block, "alpha": self.alpha, "n_train": self.n_train,
                 "threshold": self.threshold, "label_min": self.label_min,
                 "label_max": self.label_max})

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   blocks: dict[str, np.ndarray]) -> TrainingReach:
        X = _saved_block(blocks, meta["block"], arrays["x_mean"].shape[0])
        return cls(meta["block"], arrays["x_mean"], arrays["components"].astype(np.float64),
                   arrays["singular"], meta["alpha"], meta["n_train"], meta["threshold"],
                   meta["label_min"], meta["label_max"], X)


class SharedDecompositions:
    """What a candidate computes from its block's training rows alone (an SVD, kernel
    eigendecompositions), kept for the other candidates fitted on the same rows: the raw and
    the log1p target of a block share one. Holds one training set at a time."""

    def __init__(self) -> None:
        self._train: bytes | None = None
        self._items: dict[tuple, Any] = {}

    def get(self, key: tuple, train: np.ndarray, compute: Callable[[], Any]) -> Any:
        train_key = np.ascontiguousarray(train, dtype=np.int64).tobytes()
        if train_key != self._train:
            self._items.clear()
            self._train = train_key
        if key not in self._items:
            self._items[key] = compute()
        return self._items[key]


def _fold_weights(weights: np.ndarray | None, train: np.ndarray) -> np.ndarray | None:
    """The training rows' region weights, mean 1 (`training_weights`); None: unweighted."""
    return None if weights is None else training_weights(weights[train], len(train))


def _ridge_candidate(name: str, X: np.ndarray, transform: str, alphas: np.ndarray,
                     shared: SharedDecompositions | None = None,
                     weights: np.ndarray | None = None) -> Candidate:
    block = name[len("ridge["):].split("|")[0]
    candidate = Candidate(name=name, fit=lambda train, y: None)  # fit set below
    shared = shared or SharedDecompositions()

    def fit_loo(train: np.ndarray, y: np.ndarray) -> tuple[Predict, np.ndarray]:
        y_train = y[train]
        w = _fold_weights(weights, train)
        key = ("svd", block) if w is None else ("weighted svd", block)
        svd = shared.get(key, train, lambda: centred_svd(X[train], w))
        model = LeaveOneOutRidge(alphas=alphas).fit(X[train], forward_target(y_train, transform),
                                                    decomposition=svd, weights=w)
        candidate.info = {"alpha": model.alpha_}
        predictor = RidgePredict(block, transform, model.coef_, model.intercept_, model.alpha_,
                                 float(np.max(y_train)), X)
        return predictor, candidate_inverse(model.own_out_predictions_, transform, y_train,
                                            leave_one_out=True)

    candidate.fit = lambda train, y: fit_loo(train, y)[0]
    candidate.fit_loo = fit_loo
    return candidate


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances."""
    d = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


@dataclass
class KernelRidgePredict:
    """A fitted RBF kernel ridge (centred kernel, intercept): predictions in target units.

    Saveable: the support rows (the training regions' inputs) travel with the model, so it
    predicts regions it was not trained on from their inputs alone.
    """

    block: str  # the input block's name ("robust")
    transform: str  # "raw" or "log1p"
    support: np.ndarray = field(repr=False)  # (n, F) training inputs
    dual: np.ndarray = field(repr=False)  # (n,) dual coefficients on the centred kernel
    kernel_mean: np.ndarray = field(repr=False)  # (n,) column means of the training kernel
    gamma: float = 1.0  # RBF width: exp(-gamma * squared distance)
    alpha: float = 1.0  # the penalty chosen by leave-one-out
    y_mean: float = 0.0  # mean of the (transformed) training target
    y_max: float = 0.0  # the largest training label (caps log1p extrapolation)
    X: np.ndarray | None = field(default=None, repr=False)  # (N, F) the block, all regions
    # (n,) the training regions' shares of the total weight (weighted centring); None: 1 / n
    shares: np.ndarray | None = field(default=None, repr=False)

    def __call__(self, index: np.ndarray) -> np.ndarray:
        k = np.exp(-self.gamma * _squared_distances(self.X[index], self.support))  # (m, n)
        if self.shares is None:
            centred = (k - k.mean(axis=1, keepdims=True) - self.kernel_mean[None, :]
                       + self.kernel_mean.mean())
        else:
            centred = (k - (k @ self.shares)[:, None] - self.kernel_mean[None, :]
                       + self.kernel_mean @ self.shares)
        values = self.y_mean + centred @ self.dual
        return candidate_inverse(values, self.transform, np.asarray([self.y_max]))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        shares = {} if self.shares is None else {"shares": self.shares}
        return ({"support": self.support.astype(np.float64), "dual": self.dual,
                 "kernel_mean": self.kernel_mean, **shares},
                {"kind": "kernel_ridge", "block": self.block, "transform": self.transform,
                 "gamma": float(self.gamma), "alpha": float(self.alpha),
                 "y_mean": float(self.y_mean), "y_max": float(self.y_max)})

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   blocks: dict[str, np.ndarray]) -> KernelRidgePredict:
        X = _saved_block(blocks, meta["block"], arrays["support"].shape[1])
        return cls(meta["block"], meta["transform"], arrays["support"], arrays["dual"],
                   arrays["kernel_mean"], meta["gamma"], meta["alpha"], meta["y_mean"],
                   meta["y_max"], X, arrays.get("shares"))


def _kernel_eigh(A: np.ndarray, widths: tuple[float, ...],
                 weights: np.ndarray | None = None) -> list[tuple]:
    """(gamma, eigenvalues, Q, column means) of the centred RBF kernel of the rows A, per width
    (gamma = width / the median squared distance between the rows). With region `weights`
    (mean 1): the kernel centred by weighted means and the eigendecomposition of
    W^1/2 Kc W^1/2 (weighted kernel ridge with an intercept)."""
    distances = _squared_distances(A, A)  # (n, n)
    positive = distances[distances > 0]
    median = float(np.median(positive)) if positive.size else 1.0
    out = []
    for width in widths:
        gamma = width / median
        kernel = np.exp(-gamma * distances)
        if weights is None:
            column_mean = kernel.mean(axis=0)  # (n,)
            centred = kernel - column_mean[None, :] - column_mean[:, None] + column_mean.mean()
        else:
            shares = weights / weights.sum()
            column_mean = shares @ kernel  # (n,) weighted
            centred = (kernel - column_mean[None, :] - column_mean[:, None]
                       + column_mean @ shares)
            root = np.sqrt(weights)
            centred = root[:, None] * centred * root[None, :]
        eigenvalues, Q = np.linalg.eigh(centred)  # (n,), (n, n)
        out.append((gamma, np.maximum(eigenvalues, 0.0), Q, column_mean))
    return out


def _kernel_candidate(name: str, X: np.ndarray, transform: str, widths: tuple[float, ...],
                      alphas: tuple[float, ...], shared: SharedDecompositions | None = None,
                      weights: np.ndarray | None = None) -> Candidate:
    """RBF kernel ridge; width and penalty by exact leave-one-out (one eigh per width).

    With the centred training kernel Kc = Q diag(l) Q^T the leave-one-out residuals are those of
    linear Ridge with Q for U and l for s^2 (`leave_one_out_residuals`). The fit keeps
    the grid point with the least leave-one-out error; the stack reads each region's residual
    at the point the other regions choose (`own_out_residuals`). With region weights, both
    are weighted (`_kernel_eigh`, `leave_one_out_residuals`).
    """
    block = name[len("kernel["):].split("|")[0]
    candidate = Candidate(name=name, fit=lambda train, y: None)
    shared = shared or SharedDecompositions()

    def fit_loo(train: np.ndarray, y: np.ndarray) -> tuple[Predict, np.ndarray]:
        y_train = y[train]
        target = forward_target(y_train, transform)
        A = X[train]
        w = _fold_weights(weights, train)
        decompositions = shared.get(("kernel", block, tuple(widths), w is not None), train,
                                    lambda: _kernel_eigh(A, widths, w))
        y_mean = weighted_mean(target, w)
        grid = [(decomposition, float(alpha)) for decomposition in decompositions
                for alpha in alphas]  # (width, penalty) points
        residuals = np.concatenate([leave_one_out_residuals(Q, eigenvalues, alphas, target, w)
                                    for _, eigenvalues, Q, _ in decompositions])  # (G, n)
        squared = residuals**2 if w is None else w * residuals**2
        (gamma, eigenvalues, Q, column_mean), alpha = grid[int(np.argmin(
            squared.mean(axis=1)))]
        root = 1.0 if w is None else np.sqrt(w)
        dual = root * (Q @ ((Q.T @ (root * (target - y_mean))) / (eigenvalues + alpha)))
        loo = target - own_out_residuals(residuals, w)
        candidate.info = {"gamma": gamma, "alpha": alpha}
        predictor = KernelRidgePredict(block, transform, A.copy(), dual, column_mean, gamma,
                                       alpha, y_mean, float(np.max(y_train)), X,
                                       None if w is None else w / w.sum())
        return predictor, candidate_inverse(loo, transform, y_train, leave_one_out=True)

    candidate.fit = lambda train, y: fit_loo(train, y)[0]
    candidate.fit_loo = fit_loo
    return candidate


def _gbm_candidate(name: str, X: np.ndarray, transform: str, seed: int,
                   weights: np.ndarray | None = None) -> Candidate:
    from sklearn.ensemble import HistGradientBoostingRegressor

    def fit(train: np.ndarray, y: np.ndarray) -> Predict:
        y_train = y[train]
        model = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=200,
                                              max_leaf_nodes=15, min_samples_leaf=5,
                                              random_state=seed)
        model.fit(X[train], forward_target(y_train, transform),
                  sample_weight=None if weights is None else weights[train])
        return lambda index: candidate_inverse(model.predict(X[index]), transform, y_train)

    return Candidate(name=name, fit=fit)


@dataclass
class Prompt4REPredict:
    """A trained Prompt4RE model over all regions' embeddings and semantic vectors. Saveable."""

    model: Any  # engine.models.modeling_prompt4re.Prompt4RE, eval mode
    embeddings: np.ndarray = field(repr=False)  # (N, d)
    semantic: np.ndarray = field(repr=False)  # (N, h)
    device: str = "cpu"

    def __call__(self, index: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            region = torch.as_tensor(self.embeddings, dtype=torch.float32, device=self.device)
            semantic = torch.as_tensor(self.semantic, dtype=torch.float32, device=self.device)
            query = torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.device)
            return self.model.predict(region, semantic, query).cpu().numpy().astype(np.float64)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        return arrays, {"kind": "prompt4re", "config": self.model.config.to_dict(),
                        "arguments": self.model.constructor_arguments()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   embeddings: np.ndarray, semantic: np.ndarray, device: str = "cpu"):
        import torch

        from engine.models.modeling_prompt4re import Prompt4RE, Prompt4REConfig

        model = Prompt4RE(Prompt4REConfig(**meta["config"]), **meta["arguments"])
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        return cls(model.to(device).eval(), embeddings, semantic, device)


def _prompt4re_candidate(name: str, inputs: TaskInputs, transform: str, config: PredictorConfig,
                         seed: int, device: str) -> Candidate:
    candidate = Candidate(name=name, fit=lambda train, y: None)

    def fit(train: np.ndarray, y: np.ndarray) -> Predict:
        from engine.training.train_prompt4re import fit_prompt4re

        visible = np.full_like(y, np.nan)
        visible[train] = y[train]  # fit_prompt4re reads y[train_index] only; belt and braces
        result = fit_prompt4re(inputs.embeddings, inputs.semantic, visible, train,
                               epochs=config.prompt4re_epochs, lr=config.prompt4re_lr,
                               device=device, seed=seed, validation_fraction=0.2,
                               target_transform="log1p" if transform == "log1p" else "none")
        candidate.info = {"epoch": result.chosen_epoch}
        return Prompt4REPredict(result.model, inputs.embeddings, inputs.semantic, device)

    candidate.fit = fit
    return candidate


def input_blocks(inputs: TaskInputs, config: PredictorConfig) -> dict[str, np.ndarray]:
    """The z-scored input matrices the candidates read, by name (no label is involved)."""
    blocks: dict[str, np.ndarray] = {}
    if inputs.embeddings is not None:
        blocks["srel"] = zscore(inputs.embeddings)
    raw = inputs.raw_features
    raw_named = ({"raw": raw} if isinstance(raw, np.ndarray) else dict(raw or {}))
    for key, matrix in raw_named.items():
        blocks[key] = zscore(matrix)
    if inputs.semantic is not None and config.use_semantic_ridge:
        blocks["semantic"] = zscore(inputs.semantic)
    if config.use_concat and "srel" in blocks and raw_named:
        first = next(iter(raw_named))
        blocks[f"srel+{first}"] = _side_by_side([blocks["srel"], blocks[first]])
    for name, matrix in blocks.items():
        if matrix.shape[0] != inputs.n_regions:
            raise InputError(f"the {name} matrix has {matrix.shape[0]} rows for "
                             f"{inputs.n_regions} regions", hint="Rebuild the task inputs.")
    if not blocks:
        raise InputError("the task has no inputs to predict from",
                         hint="Give region embeddings, raw features or semantic vectors.")
    return blocks


def build_candidates(inputs: TaskInputs, config: PredictorConfig, *, non_negative: bool,
                     seed: int = 0, device: str = "cpu",
                     shared: SharedDecompositions | None = None,
                     blocks: dict[str, np.ndarray] | None = None) -> list[Candidate]:
    """The candidates this task's inputs allow (log1p ones only for targets >= 0). `shared`
    keeps each block's decompositions of the training rows for the caller; `blocks`:
    `input_blocks(inputs, config)` when the caller has them."""
    alphas = np.asarray(config.alphas, dtype=np.float64)
    blocks = input_blocks(inputs, config) if blocks is None else blocks
    raw = inputs.raw_features
    raw_named = ({"raw": raw} if isinstance(raw, np.ndarray) else dict(raw or {}))
    transforms = [t for t in config.target_transforms if t == "raw" or non_negative]
    if shared is None:  # one SVD / eigendecomposition per block for all targets
        shared = SharedDecompositions()
    weights = None if inputs.weights is None else np.asarray(inputs.weights, dtype=np.float64)
    candidates = [_ridge_candidate(f"ridge[{name}|{t}]", matrix, t, alphas, shared, weights)
                  for name, matrix in blocks.items() for t in transforms]
    labelled = int(np.isfinite(np.asarray(inputs.y, dtype=np.float64)).sum())
    if config.kernel_ridge and labelled <= config.kernel_max_regions:
        name = "robust" if "robust" in blocks else next(iter(blocks))
        candidates += [_kernel_candidate(f"kernel[{name}|{t}]", blocks[name], t,
                                         config.kernel_widths, config.kernel_alphas, shared,
                                         weights)
                       for t in transforms]
    if config.gbm:
        name = next((k for k in raw_named), "srel")
        candidates += [_gbm_candidate(f"gbm[{name}|{t}]", blocks[name], t, seed, weights)
                       for t in transforms]
    if config.prompt4re and inputs.embeddings is not None and inputs.semantic is not None:
        candidates += [_prompt4re_candidate(f"prompt4re[{t}]", inputs, t, config, seed, device)
                       for t in transforms]
    return candidates


# ---------------------------------------------------------------- blending
def convex_weights(predictions: np.ndarray, y: np.ndarray,
                   regions: np.ndarray | None = None) -> np.ndarray:
    """Non-negative weights summing to 1 minimising ||predictions @ w - y||^2 (with region
    weights `regions` (n,): sum_i regions_i (predictions_i @ w - y_i)^2).

    predictions: (n, C). Solved as NNLS with an extra, heavily weighted row sum(w) = 1.
    """
    scale = float(np.abs(predictions).max()) or 1.0
    P, target = predictions / scale, y / scale  # (n, C), (n,) in comparable units
    if regions is not None:
        root = np.sqrt(regions / regions.mean())
        P, target = root[:, None] * P, root * target
    penalty = 1e3 * np.sqrt(len(y))
    A = np.vstack([P, penalty * np.ones((1, P.shape[1]))])  # (n + 1, C)
    b = np.concatenate([target, [penalty]])
    weights, _ = nnls(A, b, maxiter=50 * P.shape[1])
    total = weights.sum()
    return weights / total if total > 0 else np.full(P.shape[1], 1.0 / P.shape[1])


@dataclass
class FittedTask:
    """A fitted per-task model: predict any region; describe what was chosen."""

    weights: dict[str, float]  # candidate name -> blend weight (only those > 0)
    scores: dict[str, dict[str, float]]  # candidate -> inner out-of-fold metrics (clean protocol)
    blend_score: dict[str, float]  # metrics of the blended inner out-of-fold predictions
    chosen: dict[str, dict]  # candidate -> what its final fit chose (penalty, epoch)
    protocol: str
    clip_negative: bool  # counts: negative predictions become 0
    shrink: float | None = None  # lambda of the stack vs the anchor (None: not shrunk)
    # how the region weights entered (`precision_weights`' figures); None: unweighted
    weighting: dict[str, Any] | None = None
    # The extrapolation guard (PredictorConfig.extrapolation_guard): where the anchor predicts
    # above `label_max` (the largest training label), the anchor's prediction is returned; every
    # other prediction is held inside [label_min, label_max].
    anchor: str | None = None  # None: no guard
    label_max: float | None = None
    label_min: float | None = None  # None (a model saved before it existed): no lower bound
    reach: TrainingReach | None = None  # flags extrapolated predictions (None: not known)
    _predictors: dict[str, Predict] = field(default_factory=dict, repr=False)

    def _blend(self, index: np.ndarray) -> np.ndarray:
        """(m,) the weighted candidates, before the guard and the clipping of negatives."""
        total = np.zeros(len(index))
        for name, weight in self.weights.items():
            total += weight * self._predictors[name](index)
        return total

    def predict(self, index: np.ndarray) -> np.ndarray:
        return self.predict_flagged(index)[0]

    def extrapolated(self, index: np.ndarray) -> np.ndarray:
        """(m,) int8 flags of `predict_flagged` alone."""
        return self.predict_flagged(index)[1]

    def predict_flagged(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((m,) predictions, (m,) int8 flags of `TrainingReach.flags`; 0 without a reach).

        A blend that the guard held under the largest training label counts as beyond it: the
        model wanted to extrapolate there. (Below the range only the final prediction counts:
        a count's blend a little under 0 is no news.)"""
        index = np.asarray(index, dtype=np.int64)
        blend = self._blend(index)
        total = blend
        if self.anchor is not None and self.label_max is not None and len(index):
            anchored = self._predictors[self.anchor](index)  # (n,)
            beyond = anchored > self.label_max
            low = -np.inf if self.label_min is None else self.label_min
            total = np.where(beyond, anchored, np.clip(blend, low, self.label_max))
        if self.clip_negative:
            total = np.maximum(total, 0.0)
        if self.reach is None:
            return total, np.zeros(len(index), dtype=np.int8)
        flags = self.reach.flags(index, total)
        if self.anchor is not None and len(index):
            flags[blend > self.reach.label_max] |= PREDICTION_BEYOND
        return total, flags

    def describe(self) -> dict[str, Any]:
        best = max(self.scores, key=lambda k: self.scores[k]["r2"]) if self.scores else None
        return {"protocol": self.protocol, "optimistic": self.protocol == "paper",
                "weights": {k: round(v, 4) for k, v in self.weights.items()},
                "chosen": self.chosen, "best_single": best,
                "inner_r2": {k: round(v["r2"], 4) for k, v in self.scores.items()},
                "inner_blend_r2": round(self.blend_score.get("r2", float("nan")), 4),
                "shrink_lambda": self.shrink,
                **({"weighting": self.weighting} if self.weighting else {}),
                "extrapolation_guard": ({"anchor": self.anchor, "label_max": self.label_max,
                                         "label_min": self.label_min}
                                        if self.anchor is not None else None)}


def fit_task(inputs: TaskInputs, train_index: np.ndarray, *, protocol: str = "clean",
             seed: int = 0, config: PredictorConfig | None = None,
             selection_index: np.ndarray | None = None, device: str = "cpu") -> FittedTask:
    """Fits the blend on the labelled regions of `train_index`.

    Clean protocol: only `inputs.y[train_index]` is read. Paper protocol: the blend weights are
    fitted on `inputs.y[selection_index]` (the test fold): OPTIMISTIC.
    """
    check_protocol(protocol)
    config = config or PredictorConfig()
    y = np.asarray(inputs.y, dtype=np.float64)
    train = np.asarray(train_index, dtype=np.int64)
    train = train[np.isfinite(y[train])]
    if len(train) < max(config.inner_folds, 3):
        raise InputError(f"only {len(train)} labelled training regions", field="target",
                         hint="Give a target with more labelled regions.")
    non_negative = bool((y[train] >= 0).all())
    region_weights = _checked_weights(inputs, train, selection_index)
    shared = SharedDecompositions()
    blocks = input_blocks(inputs, config)
    weighting = None
    if (region_weights is None and config.auto_weight and inputs.denominators
            and protocol == "clean"):
        loo = _anchor_loo(blocks, config, train, y, shared)
        found = weight_hint(y[train], loo, {name: np.asarray(values, dtype=np.float64)[train]
                                            for name, values in inputs.denominators.items()})
        if found is not None:
            region_weights, weighting = precision_weights(
                np.asarray(inputs.denominators[found["field"]], dtype=np.float64), train, y, loo)
            weighting = {**weighting, **found, "automatic": True}
    elif region_weights is not None and config.weighting == "precision":
        region_weights, weighting = precision_weights(
            region_weights, train, y, _anchor_loo(blocks, config, train, y, shared))
    elif region_weights is not None and config.weighting == "as_given":
        weighting = {"weighting": "as_given", "weight_ratio": _spread(region_weights[train])}
    elif region_weights is not None:
        raise ValueError(f"unknown weighting {config.weighting!r}")
    if region_weights is not None:  # what every candidate and the stack read from here on
        inputs = replace(inputs, weights=region_weights, denominators=None)
    candidates = build_candidates(inputs, config, non_negative=non_negative, seed=seed,
                                  device=device, shared=shared, blocks=blocks)
    names = [c.name for c in candidates]

    if protocol == "paper":
        if selection_index is None:
            raise ValueError("the paper protocol needs selection_index (the test fold)")
        held = np.asarray(selection_index, dtype=np.int64)
        held_y = y[held]
        predictors = {c.name: c.fit(train, y) for c in candidates}
        held_predictions = np.stack([predictors[n](held) for n in names], axis=1)  # (m, C)
        if non_negative:
            held_predictions = np.maximum(held_predictions, 0.0)
        held_weights = None if region_weights is None else region_weights[held]
        weights, lam = _weights(held_predictions, held_y, config, names, seed, paper=True,
                                regions=held_weights)
        scores = {n: regression_metrics(held_y, held_predictions[:, i], held_weights)
                  for i, n in enumerate(names)}
        blend = regression_metrics(held_y, held_predictions @ weights, held_weights)
        chosen = {c.name: dict(c.info) for c in candidates}
    else:
        predictors, oof = {}, np.zeros((len(train), len(candidates)))  # (n_train, C)
        slow = [c for c, candidate in enumerate(candidates) if candidate.fit_loo is None]
        chosen = {}
        for c, candidate in enumerate(candidates):
            if candidate.fit_loo is not None:  # exact leave-one-out: one fit, no inner folds
                predictors[candidate.name], oof[:, c] = candidate.fit_loo(train, y)
                chosen[candidate.name] = dict(candidate.info)
        if slow:
            inner = kfold_splits(train, min(config.inner_folds, len(train)),
                                 shuffle=config.inner_shuffle, seed=seed)
            position = {region: i for i, region in enumerate(train)}
            for inner_train, inner_test in inner:
                rows = [position[r] for r in inner_test]
                for c in slow:
                    oof[rows, c] = candidates[c].fit(inner_train, y)(inner_test)
        if non_negative:
            oof = np.maximum(oof, 0.0)
        oof = np.nan_to_num(oof, nan=0.0, posinf=0.0, neginf=0.0)
        train_weights = None if region_weights is None else region_weights[train]
        weights, lam = _weights(oof, y[train], config, names, seed, regions=train_weights)
        scores = {n: regression_metrics(y[train], oof[:, i], train_weights)
                  for i, n in enumerate(names)}
        blend = regression_metrics(y[train], oof @ weights, train_weights)
        for c in slow:
            if weights[c] > 0:
                predictors[names[c]] = candidates[c].fit(train, y)
                chosen[names[c]] = dict(candidates[c].info)
        chosen = {n: chosen[n] for n, w in zip(names, weights, strict=True) if w > 0}
    kept = {n: float(w) for n, w in zip(names, weights, strict=True) if w > 0}
    guard = config.anchor if (config.extrapolation_guard and config.anchor in predictors
                              and set(kept) != {config.anchor}) else None
    return FittedTask(weights=kept, scores=scores, blend_score=blend, chosen=chosen,
                      protocol=protocol, clip_negative=non_negative, shrink=lam,
                      weighting=weighting,
                      anchor=guard, label_max=float(y[train].max()) if guard else None,
                      label_min=float(y[train].min()) if guard else None,
                      reach=_training_reach(predictors, config, train, y, shared),
                      _predictors={n: predictors[n] for n in [*kept, *([guard] if guard else [])]})


def _anchor_loo(blocks: dict[str, np.ndarray], config: PredictorConfig, train: np.ndarray,
                y: np.ndarray, shared: SharedDecompositions) -> np.ndarray:
    """(n,) the anchor's unweighted Ridge's leave-one-out predictions of the training regions,
    in the order of `train` (the bar's; its SVD kept in `shared` for the anchor candidate and
    the training reach)."""
    block = _anchor_block(config, blocks)
    X = blocks[block]
    svd = shared.get(("svd", block), train, lambda: centred_svd(X[train]))
    model = LeaveOneOutRidge(alphas=np.asarray(config.alphas, dtype=np.float64))
    return model.fit(X[train], y[train], decomposition=svd).loo_predictions_


def _anchor_block(config: PredictorConfig, blocks: dict[str, np.ndarray]) -> str:
    """The input block of the anchor's Ridge (the bar's: "raw"), else the first block."""
    block = config.anchor[len("ridge["):].split("|")[0] if config.anchor.startswith("ridge[") \
        else "raw"
    return block if block in blocks else next(iter(blocks))


def _checked_weights(inputs: TaskInputs, train: np.ndarray,
                     selection: np.ndarray | None) -> np.ndarray | None:
    """(N,) the task's region weights, checked finite and > 0 on the regions the fit reads."""
    if inputs.weights is None:
        return None
    weights = np.asarray(inputs.weights, dtype=np.float64).ravel()
    if weights.shape != (inputs.n_regions,):
        raise InputError(f"{weights.shape[0]} region weights for {inputs.n_regions} regions",
                         field="weights", hint="Give one weight per region.")
    read = train if selection is None else np.concatenate([train, selection])
    bad = ~(np.isfinite(weights[read]) & (weights[read] > 0))
    if bad.any():
        raise InputError(f"{int(bad.sum())} labelled regions have a weight that is missing, "
                         "zero or negative", field="weights",
                         hint="Give every labelled region a weight > 0 (its population, its "
                         "expected count), or leave the target unweighted.")
    return weights


def precision_weights(weights: np.ndarray, train: np.ndarray, y: np.ndarray,
                      loo_predictions: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """((N,) 1 / (tau^2 + sigma^2 / w), what was fitted): the inverse of each region's error
    variance when it is a between-region part tau^2 plus sampling noise sigma^2 / w (w: the
    region's population or expected count). tau^2 and sigma^2 >= 0 are fitted (non-negative
    least squares) to the squared leave-one-out residuals of the anchor's unweighted Ridge on
    the training regions (`loo_predictions`, (n,) in the order of `train`): where sampling
    noise dominates (rare events: deaths, infant deaths) the weights follow w; where it does
    not (a county's share of graduates) they are nearly equal, and one very large region cannot
    take over the fit. Only the labels of `train` are read (y (N,)); regions outside it keep
    their w (scaled alike), never read by the fit."""
    squared = (y[train] - loo_predictions) ** 2  # (n,)
    scale = float(np.mean(weights[train]))
    design = np.column_stack([np.ones(len(train)), scale / weights[train]])  # (n, 2)
    (tau2, sigma2), _ = nnls(design, squared)
    if tau2 + sigma2 <= 0:
        precision = np.ones_like(weights)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # regions outside `train` only
            precision = 1.0 / (tau2 + sigma2 * scale / weights)
    return precision, {"weighting": "precision", "between_region_variance": float(tau2),
                       "sampling_variance_at_mean_weight": float(sigma2),
                       "weight_ratio": _spread(precision[train])}


def _spread(weights: np.ndarray) -> float:
    """How far apart the weights are: the largest over the smallest."""
    return float(np.max(weights) / np.min(weights))


def _training_reach(predictors: dict[str, Predict], config: PredictorConfig, train: np.ndarray,
                    y: np.ndarray, shared: SharedDecompositions) -> TrainingReach | None:
    """The reach of the anchor's Ridge (else of the first raw-target Ridge), from the SVD its
    fit already made; None when the task has no Ridge candidate."""
    ridges = [p for p in predictors.values()
              if isinstance(p, RidgePredict) and p.transform == "raw"]
    anchor = predictors.get(config.anchor)
    ridge = anchor if isinstance(anchor, RidgePredict) else next(iter(ridges), None)
    if ridge is None:
        return None
    svd = shared.get(("svd", ridge.block), train, lambda: centred_svd(ridge.X[train]))
    return TrainingReach.fit(ridge.block, ridge.X, train, y[train], ridge.alpha, svd)


def _squared_errors(predictions: np.ndarray, y: np.ndarray,
                    regions: np.ndarray | None) -> np.ndarray:
    """(C,) each column's mean squared error, weighted by `regions` when given."""
    return np.average((predictions - y[:, None]) ** 2, axis=0, weights=regions)


def _anchor_index(predictions: np.ndarray, y: np.ndarray, names: list[str],
                  config: PredictorConfig, regions: np.ndarray | None = None) -> int:
    """The configured anchor (RidgeCV on raw features), else the best single candidate."""
    if config.anchor in names:
        return names.index(config.anchor)
    return int(np.argmin(_squared_errors(predictions, y, regions)))


def shrunk_stack_weights(predictions: np.ndarray, y: np.ndarray, anchor: int, *,
                         folds: int = 10, steps: int = 11, seed: int = 0,
                         loss: str = "squared",
                         regions: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """lambda * stack + (1 - lambda) * anchor, lambda chosen by K-fold over the stacking step.

    predictions: (n, C) out-of-sample (leave-one-out) predictions of the candidates. The stack's
    own out-of-fold predictions come from convex weights fitted on the other K-1 parts; lambda
    minimises their blend's error with the anchor's, squared or absolute (`loss`); with region
    weights `regions` (n,), each region's squared error counts w times and its absolute error
    sqrt(w) times. Ties go to the smaller lambda. Returns (weights (C,), lambda).
    """
    if loss not in ("squared", "absolute"):
        raise ValueError(f"unknown shrink loss {loss!r}")
    n = len(y)
    stacked = np.zeros(n)
    for inner_train, inner_test in kfold_splits(np.arange(n), min(folds, n), shuffle=True,
                                                seed=seed):
        part = None if regions is None else regions[inner_train]
        stacked[inner_test] = predictions[inner_test] @ convex_weights(predictions[inner_train],
                                                                       y[inner_train], part)
    lambdas = np.linspace(0.0, 1.0, steps)
    base = predictions[:, anchor]
    power = 2 if loss == "squared" else 1
    # a region of weight w has error variance ~ 1 / w: its squared error counts w times, its
    # absolute error sqrt(w) times (both: the error in units of its own spread)
    scale = None if regions is None else regions ** (power / 2)
    errors = [float(np.average(np.abs(lam * stacked + (1 - lam) * base - y) ** power,
                               weights=scale))
              for lam in lambdas]
    lam = float(lambdas[int(np.argmin(errors))])  # argmin: the first (smallest) on ties
    weights = lam * convex_weights(predictions, y, regions)
    weights[anchor] += 1.0 - lam
    return weights, lam


def _weights(predictions: np.ndarray, y: np.ndarray, config: PredictorConfig, names: list[str],
             seed: int = 0, *, paper: bool = False,
             regions: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """(blend weights (C,), the shrinkage lambda or None when no shrinkage was done);
    `regions` (n,): the target's region weights, None: equal."""
    lam = None
    if config.combine == "best":
        errors = _squared_errors(predictions, y, regions)
        weights = np.zeros(predictions.shape[1])
        weights[int(np.argmin(errors))] = 1.0
        return weights, lam
    if config.combine not in ("stack", "shrink"):
        raise ValueError(f"unknown combine {config.combine!r}")
    if config.combine == "shrink" and not paper:
        anchor = _anchor_index(predictions, y, names, config, regions)
        weights, lam = shrunk_stack_weights(predictions, y, anchor, folds=config.stack_folds,
                                            steps=config.shrink_steps, seed=seed,
                                            loss=config.shrink_loss, regions=regions)
    else:
        weights = convex_weights(predictions, y, regions)
    weights[weights < config.min_weight] = 0.0
    return weights / weights.sum(), lam


# ---------------------------------------------------------------- outer evaluation
@dataclass
class TaskEvaluation:
    """Outer K-fold result of the per-task model, and the model for unlabelled regions."""

    pooled: PooledPrediction  # out-of-fold predictions (labelled), final model's (unlabelled)
    choices: list[dict]  # per outer fold: weights, inner scores, penalties
    final: FittedTask  # fitted on all labelled regions (clean protocol)
    # (N,) int8 TrainingReach flags of each region's reported prediction, from the model that
    # made it (the fold's for labelled regions, the final model's for the others)
    extrapolated: np.ndarray | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.pooled.metrics

    def to_dict(self) -> dict[str, Any]:
        return {**self.pooled.to_dict(), "final": self.final.describe()}


def make_fit_predict(embeddings: np.ndarray | None, semantic: np.ndarray | None,
                     features: np.ndarray | dict[str, np.ndarray] | None, *, seed: int = 0,
                     device: str = "cpu", config: PredictorConfig | None = None,
                     fitted_model: bool = False, weights: np.ndarray | None = None,
                     denominators: dict[str, np.ndarray] | None = None, **options: Any):
    """A `fit_predict` for `cross_val_predict_pooled` running `fit_task` on each fold.

    `options` may hold PredictorConfig fields (e.g. prompt4re=True, inner_folds=3). With
    `fitted_model`, it returns the fold's FittedTask instead of (predictions, description).
    `weights` (N,): the target's region weights (`TaskInputs.weights`); `denominators`:
    `TaskInputs.denominators`.
    """
    if options:
        known = {k: v for k, v in options.items() if k in PredictorConfig.__dataclass_fields__}
        config = PredictorConfig(**{**(config.__dict__ if config else {}), **known})

    def fit_predict(_inputs, y, train_index, predict_index, *, selection_index=None):
        inputs = TaskInputs(embeddings, semantic, features, y, weights, denominators)
        protocol = "paper" if selection_index is not None else "clean"
        fitted = fit_task(inputs, train_index, protocol=protocol, seed=seed, config=config,
                          selection_index=selection_index, device=device)
        if fitted_model:
            return fitted
        return fitted.predict(predict_index), fitted.describe()

    return fit_predict


def evaluate_task(inputs: TaskInputs, *, folds: int = 10, shuffle: bool = False,
                  fold_seed: int = LITERATURE_SEED, protocol: str = "clean", seed: int = 0,
                  config: PredictorConfig | None = None, device: str = "cpu",
                  progress: Callable[[float, str], None] | None = None) -> TaskEvaluation:
    """Outer K-fold of `fit_task`: pooled held-out predictions, metrics, per-fold choices, and the
    final model fitted on all labelled regions (which also predicts the unlabelled ones)."""
    check_protocol(protocol)
    y = np.asarray(inputs.y, dtype=np.float64)
    labelled = np.flatnonzero(np.isfinite(y))
    splits = kfold_splits(labelled, folds, shuffle=shuffle, seed=fold_seed)
    done = [0]
    extrapolated = np.zeros(len(y), dtype=np.int8)

    def fit_predict(_inputs, y_visible, train_index, predict_index, *, selection_index=None):
        fitted = base(_inputs, y_visible, train_index, predict_index,
                      selection_index=selection_index)
        predicted, extrapolated[predict_index] = fitted.predict_flagged(predict_index)
        done[0] += 1
        if progress is not None:
            progress(done[0] / (len(splits) + 1), f"fold {done[0]}/{len(splits)}")
        return predicted, fitted.describe()

    base = make_fit_predict(inputs.embeddings, inputs.semantic, inputs.raw_features, seed=seed,
                            device=device, config=config, fitted_model=True,
                            weights=inputs.weights, denominators=inputs.denominators)
    pooled = cross_val_predict_pooled(fit_predict, None, y, splits=splits, protocol=protocol,
                                      predict_unlabelled=False, weights=inputs.weights)
    final = fit_task(inputs, labelled, protocol="clean", seed=seed, config=config, device=device)
    unlabelled = np.flatnonzero(~np.isfinite(y))
    if len(unlabelled):
        pooled.predictions[unlabelled], extrapolated[unlabelled] = final.predict_flagged(
            unlabelled)
    if progress is not None:
        progress(1.0, "final model")
    pooled.label = PROTOCOL_LABELS[protocol]
    return TaskEvaluation(pooled=pooled, choices=pooled.fold_info, final=final,
                          extrapolated=extrapolated)


def benchmark_fit_predict(dataset, embeddings: np.ndarray | None, semantic: np.ndarray | None,
                          y_visible: np.ndarray, train_index: np.ndarray,
                          predict_index: np.ndarray, *, device: str = "cpu",
                          seed: int = 0) -> np.ndarray:
    """The default model fitted on `train_index` of `dataset`, predicting `predict_index`."""
    from engine.training.features import literature_features, robust_features

    features = {"raw": literature_features(dataset), "robust": robust_features(dataset)}
    inputs = TaskInputs(embeddings, semantic, features, y_visible)
    return fit_task(inputs, train_index, seed=seed, device=device).predict(predict_index)


def load_fitted_task(saved: dict, inputs: TaskInputs, *, device: str = "cpu",
                     config: PredictorConfig | None = None) -> FittedTask:
    """Rebuilds a FittedTask from `engine.training.task_io.load_task_model` over new inputs."""
    config = config or PredictorConfig()
    blocks = input_blocks(inputs, config)
    predictors: dict[str, Predict] = {}
    for name, (arrays, meta) in saved["predictors"].items():
        if meta["kind"] == "ridge":
            predictors[name] = RidgePredict.from_state(arrays, meta, blocks)
        elif meta["kind"] == "kernel_ridge":
            predictors[name] = KernelRidgePredict.from_state(arrays, meta, blocks)
        elif meta["kind"] == "prompt4re":
            predictors[name] = Prompt4REPredict.from_state(arrays, meta, inputs.embeddings,
                                                           inputs.semantic, device)
        else:
            raise InputError(f"unknown predictor kind {meta['kind']!r} in the model",
                             hint="Train the model again with this version.")
    guard = saved.get("extrapolation_guard") or {}
    reach = (TrainingReach.from_state(*saved["reach"], blocks) if saved.get("reach") else None)
    return FittedTask(weights=dict(saved["weights"]), scores={}, blend_score={}, chosen={},
                      protocol="clean", clip_negative=bool(saved["clip_negative"]),
                      anchor=guard.get("anchor"), label_max=guard.get("label_max"),
                      label_min=guard.get("label_min"),
                      reach=reach, _predictors=predictors)
