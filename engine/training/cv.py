"""K-fold cross-validation with pooled predictions, under a clean or the paper's protocol.

Every labelled region's reported prediction comes from a model fitted on the other folds. The
model-fitting function never receives the held-out labels in the clean protocol: it gets a copy
of the target where every region outside its training index is NaN, so no choice it makes
(epoch, checkpoint, penalty, blend) can depend on them.

The "paper" protocol reproduces the released code's practice of choosing on the test fold: the
fitting function also receives the test fold's labels and `selection_index`. Its results carry
`optimistic: True` and a label that says so.

Folds follow the literature: scikit-learn's KFold over the labelled regions in their order,
without shuffling (Manhattan), or shuffled with seed 2024 (Chicago, San Francisco).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.errors import InputError
from engine.training.metrics import regression_metrics

ProtocolName = Literal["clean", "paper"]
PROTOCOLS = ("clean", "paper")
PROTOCOL_LABELS = {
    "clean": "clean protocol: every choice made on the training folds alone",
    "paper": "paper protocol: choices made on the test fold (OPTIMISTIC, for reproducing "
             "published numbers only)",
}
LITERATURE_SEED = 2024  # the shuffling seed of the Chicago and San Francisco benchmarks

# fit_predict(inputs, y_visible, train_index, predict_index, selection_index) ->
#   predictions for predict_index, or (predictions, info dict)
FitPredict = Callable[..., "np.ndarray | tuple[np.ndarray, dict]"]


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown evaluation protocol {protocol!r}",
                         hint="Use clean (default) or paper (optimistic).")
    return protocol


def kfold_splits(index: np.ndarray, folds: int = 10, *, shuffle: bool = False,
                 seed: int = LITERATURE_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) pairs of region indices: scikit-learn's KFold over `index` in its order."""
    from sklearn.model_selection import KFold

    index = np.asarray(index, dtype=np.int64)
    if folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}",
                         hint="Use --folds 2 or more (10 is the literature's choice).")
    if len(index) < folds:
        raise InputError(f"{len(index)} labelled regions cannot be split into {folds} folds",
                         hint="Use fewer folds or a target with more labelled regions.")
    splitter = KFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return [(index[train], index[test]) for train, test in splitter.split(index)]


@dataclass
class PooledPrediction:
    """Out-of-fold predictions of every labelled region, and the figures computed from them."""

    predictions: np.ndarray  # (N,) held-out prediction per labelled region; final model elsewhere
    fold: np.ndarray  # (N,) int64 fold in which a region was held out; -1 = unlabelled
    # mae, rmse, r2 over the labelled regions, pooled (and *_weighted with region weights)
    metrics: dict[str, float]
    protocol: str  # "clean" or "paper"
    optimistic: bool  # True when choices saw the test fold's labels (paper protocol)
    label: str  # a sentence saying which protocol produced the figures
    fold_info: list[dict] = field(default_factory=list)  # what each fold's model chose
    clipped: bool = False  # negative predictions were set to 0 (count targets)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "protocol": self.protocol,
                "optimistic": self.optimistic, "label": self.label,
                "fold_info": self.fold_info, "clipped": self.clipped}


def _call(fit_predict: FitPredict, inputs: Any, y_visible: np.ndarray, train: np.ndarray,
          predict: np.ndarray, selection: np.ndarray | None) -> tuple[np.ndarray, dict]:
    out = fit_predict(inputs, y_visible, train, predict, selection_index=selection)
    predictions, info = out if isinstance(out, tuple) else (out, {})
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    if predictions.shape[0] != len(predict):
        raise ValueError(f"fit_predict returned {predictions.shape[0]} predictions for "
                         f"{len(predict)} regions")
    return predictions, dict(info)


def cross_val_predict_pooled(
    fit_predict: FitPredict,
    inputs: Any,
    y: np.ndarray,
    *,
    folds: int = 10,
    shuffle: bool = False,
    seed: int = LITERATURE_SEED,
    protocol: ProtocolName = "clean",
    clip_negative: bool | None = None,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    predict_unlabelled: bool = True,
    weights: np.ndarray | None = None,
) -> PooledPrediction:
    """Pooled K-fold predictions and their MAE, RMSE and R².

    Args:
        fit_predict: `fit_predict(inputs, y_visible, train_index, predict_index, *,
            selection_index=None)` fits on `y_visible[train_index]` and returns predictions for
            `predict_index` (optionally with an info dict). `y_visible` is NaN outside
            `train_index`, except in the paper protocol, where the test fold's labels are visible
            and `selection_index` is the test fold.
        inputs: passed through untouched (a feature matrix, a TaskInputs...).
        y: (N,) targets; NaN = unlabelled, excluded from evaluation and predicted by a model
            fitted on all labelled regions.
        folds, shuffle, seed: scikit-learn KFold over the labelled regions.
        protocol: "clean" (default) or "paper" (optimistic).
        clip_negative: set negative predictions to 0; None = when every label is >= 0 (counts).
        splits: explicit (train, test) region-index pairs instead of KFold.
        predict_unlabelled: fit the all-labelled model for unlabelled regions, if any.
        weights: (N,) the target's region weights: the metrics add their weighted versions
            (fitting with them is `fit_predict`'s business).
    """
    check_protocol(protocol)
    y = np.asarray(y, dtype=np.float64).ravel()
    labelled = np.flatnonzero(np.isfinite(y))
    unlabelled = np.flatnonzero(~np.isfinite(y))
    if splits is None:
        splits = kfold_splits(labelled, folds, shuffle=shuffle, seed=seed)
    if clip_negative is None:
        clip_negative = bool(len(labelled)) and bool((y[labelled] >= 0).all())

    predictions = np.full(y.shape[0], np.nan)
    fold_of = np.full(y.shape[0], -1, dtype=np.int64)
    fold_info = []
    for number, (train, test) in enumerate(splits):
        if not np.isfinite(y[train]).all() or not np.isfinite(y[test]).all():
            raise ValueError("splits must hold labelled regions only")
        visible = np.full_like(y, np.nan)
        visible[train] = y[train]
        selection = None
        if protocol == "paper":
            visible[test] = y[test]
            selection = test
        predicted, info = _call(fit_predict, inputs, visible, train, test, selection)
        predictions[test] = predicted
        fold_of[test] = number
        fold_info.append({"fold": number, "train": len(train), "test": len(test), **info})

    if predict_unlabelled and len(unlabelled):
        visible = np.full_like(y, np.nan)
        visible[labelled] = y[labelled]
        predictions[unlabelled], _ = _call(fit_predict, inputs, visible, labelled, unlabelled,
                                           None)
    if clip_negative:
        predictions = np.where(np.isfinite(predictions), np.maximum(predictions, 0.0),
                               predictions)
    evaluated = fold_of >= 0
    metrics = regression_metrics(y[evaluated], predictions[evaluated],
                                 None if weights is None else np.asarray(weights)[evaluated])
    return PooledPrediction(predictions=predictions, fold=fold_of, metrics=metrics,
                            protocol=protocol, optimistic=protocol == "paper",
                            label=PROTOCOL_LABELS[protocol], fold_info=fold_info,
                            clipped=bool(clip_negative))
