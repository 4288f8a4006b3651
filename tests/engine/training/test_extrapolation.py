"""Extrapolation flags: a region's inputs beyond every training region's (its leverage under the
anchor's Ridge), its prediction outside the training labels' range."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.baselines import centred_svd
from engine.training.predictor import (
    INPUTS_BEYOND,
    PREDICTION_BEYOND,
    PredictorConfig,
    TaskInputs,
    TrainingReach,
    evaluate_task,
    fit_task,
    load_fitted_task,
)


def _leverages(X: np.ndarray, alpha: float) -> np.ndarray:
    """In-sample leverages of Ridge with an unpenalised intercept, written out directly."""
    Xc = X - X.mean(axis=0)
    inverse = np.linalg.inv(Xc.T @ Xc + alpha * np.eye(X.shape[1]))
    return np.einsum("ij,jk,ik->i", Xc, inverse, Xc) + 1.0 / len(X)


@pytest.mark.parametrize("alpha, rtol", [(3.0, 1e-9), (400.0, 1e-2)])
def test_a_left_out_regions_leverage_is_its_leave_one_out_leverage(alpha, rtol):
    """Left out of the fit, region i's leverage is h_i / (1 - h_i) of the fit with it: the
    quantity the threshold is made of. More columns than regions; with the large penalty some
    components are folded into the remainder (weight within 1% of 1 / alpha)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 60)) * rng.uniform(0.2, 3.0, size=60)
    h = _leverages(X, alpha)
    every = np.arange(40)
    if alpha > 100:
        reach = TrainingReach.fit("raw", X, every, np.zeros(40), alpha)
        assert 0 < len(reach.singular) < 39  # some components were folded in
    for i in (0, 17, 39):
        train = np.delete(every, i)
        reach = TrainingReach.fit("raw", X, train, np.zeros(39), alpha)
        assert reach.leverage(np.array([i]))[0] == pytest.approx(h[i] / (1 - h[i]), rel=rtol)
    full = TrainingReach.fit("raw", X, every, np.zeros(40), alpha, centred_svd(X))
    assert full.threshold == pytest.approx((h / (1 - h)).max(), rel=1e-9)


def test_a_region_unlike_any_training_region_is_flagged_and_ordinary_ones_rarely():
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n + 100 + 1, 5))
    X[-1] = 6.0 * X[:n].std(axis=0) * np.array([1, 1, -1, 0, 0])  # far from every region
    y = X @ np.array([2.0, 1.0, -1.0, 0.5, 0.0]) + 10 + rng.normal(0, 0.5, len(X))
    train, ordinary, far = np.arange(n), np.arange(n, n + 100), np.array([n + 100])
    fitted = fit_task(TaskInputs(None, None, {"raw": X, "robust": X}, y), train)
    flags = fitted.extrapolated(ordinary)
    assert (flags & INPUTS_BEYOND).mean() <= 0.05  # ~1 / (n + 1) expected for each
    assert fitted.extrapolated(far)[0] & INPUTS_BEYOND
    # Its prediction (about 12 + 6 + 6 + 10 = 34) is beyond every label too.
    assert fitted.predict(far)[0] > y[train].max()
    assert fitted.extrapolated(far)[0] == INPUTS_BEYOND | PREDICTION_BEYOND


def test_each_prediction_is_flagged_by_the_model_that_made_it(tmp_path):
    """Held-out regions by their fold's model, unlabelled ones by the final model; a saved model
    gives the same flags."""
    from engine.training.task_io import load_task_model, save_task_model

    rng = np.random.default_rng(2)
    X = rng.normal(size=(81, 4))
    # Two far regions: one labelled (40), one without a label (80), further away in another
    # direction (the final model trains on 40, so 80 must lie beyond 40 too).
    X[40], X[80] = 8.0, [20.0, -20.0, 20.0, -20.0]
    y = X @ np.array([1.0, 2.0, 0.5, -1.0]) + rng.normal(0, 0.3, 81)
    y[80] = np.nan
    inputs = TaskInputs(None, None, {"raw": X, "robust": X}, y)
    evaluation = evaluate_task(inputs, folds=5)
    flags = evaluation.extrapolated
    assert flags.shape == (81,) and flags.dtype == np.int8
    assert flags[40] & INPUTS_BEYOND and flags[80] & INPUTS_BEYOND
    assert (flags[:80] > 0).sum() <= 4
    fold = evaluation.pooled.fold[40]
    train = np.flatnonzero((evaluation.pooled.fold >= 0) & (evaluation.pooled.fold != fold))
    by_hand = fit_task(inputs, train)
    held = np.flatnonzero(evaluation.pooled.fold == fold)
    assert np.array_equal(flags[held], by_hand.extrapolated(held))
    assert flags[80] == evaluation.final.extrapolated(np.array([80]))[0]

    save_task_model(evaluation.final, tmp_path / "model")
    loaded = load_fitted_task(load_task_model(tmp_path / "model"), inputs)
    every = np.arange(81)
    assert np.array_equal(loaded.extrapolated(every), evaluation.final.extrapolated(every))
    assert loaded.reach.threshold == evaluation.final.reach.threshold
    # the reach's components (n x F, the model's largest array) are kept in float32
    saved = load_task_model(tmp_path / "model")["reach"][0]
    assert saved["components"].dtype == np.float32


def test_a_model_saved_before_the_reach_existed_still_predicts(tmp_path):
    """No reach in the model folder: predictions as before, flags all 0."""
    import json

    from engine.training.task_io import CONFIG, load_task_model, save_task_model

    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3))
    y = X.sum(axis=1)
    inputs = TaskInputs(None, None, {"raw": X, "robust": X}, y)
    fitted = fit_task(inputs, np.arange(50), config=PredictorConfig(kernel_ridge=False))
    save_task_model(fitted, tmp_path / "model")
    meta = json.loads((tmp_path / "model" / CONFIG).read_text())
    meta.pop("reach")
    (tmp_path / "model" / CONFIG).write_text(json.dumps(meta))
    loaded = load_fitted_task(load_task_model(tmp_path / "model"), inputs)
    assert loaded.reach is None
    assert np.allclose(loaded.predict(np.arange(50)), fitted.predict(np.arange(50)))
    assert not loaded.extrapolated(np.arange(50)).any()
