"""Baselines: the closed-form leave-one-out Ridge, and the Manhattan README's figures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from engine.training.baselines import (
    LeaveOneOutRidge,
    evaluate_baselines,
    gbm_fit_predict,
    ridge_cv_fit_predict,
)
from engine.training.cv import cross_val_predict_pooled
from engine.training.features import literature_features, robust_features


def test_closed_form_leave_one_out_equals_refitting_without_each_region():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 40))
    y = X[:, 0] * 3 + rng.normal(size=25) + 5
    model = LeaveOneOutRidge(alphas=np.array([0.1, 3.0, 100.0])).fit(X, y)
    brute = []
    for alpha in model.alphas:
        residuals = []
        for i in range(25):
            keep = np.arange(25) != i
            fit = Ridge(alpha=alpha).fit(X[keep], y[keep])
            residuals.append(y[i] - fit.predict(X[i:i + 1])[0])
        brute.append(np.mean(np.square(residuals)))
    assert np.allclose(model.loo_mse_, brute)
    full = Ridge(alpha=model.alpha_).fit(X, y)
    assert np.allclose(model.predict(X), full.predict(X))


def test_each_region_s_penalty_is_chosen_without_its_own_error():
    """The leave-one-out prediction the stack reads for region i is at the penalty that the
    other regions' leave-one-out errors choose (brute force: refits without each region)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 30))
    y = X[:, 0] + rng.normal(size=20)
    y[3] += 15.0  # an outlier whose own error would sway the penalty's choice
    alphas = np.array([0.3, 3.0, 30.0, 300.0])
    model = LeaveOneOutRidge(alphas=alphas).fit(X, y)
    loo = np.empty((len(alphas), 20))  # leave-one-out predictions by refitting
    for a, alpha in enumerate(alphas):
        for i in range(20):
            keep = np.arange(20) != i
            loo[a, i] = Ridge(alpha=alpha).fit(X[keep], y[keep]).predict(X[i:i + 1])[0]
    errors = (loo - y) ** 2  # (A, n)
    for i in range(20):
        others = np.delete(errors, i, axis=1).sum(axis=1)
        assert model.own_out_predictions_[i] == pytest.approx(loo[int(np.argmin(others)), i])
    assert model.loo_predictions_ == pytest.approx(loo[int(np.argmin(errors.sum(axis=1)))])
    moved = ~np.isclose(model.own_out_predictions_, model.loo_predictions_)
    assert np.flatnonzero(moved).tolist() == [3]  # the outlier's own error chose its penalty


def test_one_huge_residual_does_not_swamp_the_others_choice():
    """A region with leverage near 1 can have a residual many orders above the others'; its
    penalty is still chosen by the others' errors (a sum minus its own would round them away)."""
    from engine.training.baselines import own_out_residuals

    residuals = np.array([[1e12, 3.0, 3.0],   # grid point 0: the others' error 18
                          [2e12, 1.0, 1.0]])  # grid point 1: the others' error 2
    # region 0 gets grid point 1, where its own residual is the larger; for regions 1 and 2
    # the others' errors are both 1e24 to float precision, a tie that goes to the first point
    assert own_out_residuals(residuals).tolist() == [2e12, 3.0, 3.0]


def test_manhattan_readme_figures_are_reproduced(manhattan_benchmark):
    literature = literature_features(manhattan_benchmark)
    robust = robust_features(manhattan_benchmark)
    readme = {"check_in": (0.755, 0.862), "crime": (0.535, 0.768), "service_call": (0.195, 0.533)}
    for task, (ridge1, ridgecv) in readme.items():
        results = evaluate_baselines(literature, robust, manhattan_benchmark.targets[task])
        assert results["raw_ridge1"].metrics["r2"] == pytest.approx(ridge1, abs=5e-4)
        assert results["raw_ridgecv"].metrics["r2"] == pytest.approx(ridgecv, abs=5e-4)
        assert not results["raw_ridgecv"].optimistic


def test_paper_protocol_penalty_choice_is_optimistic(manhattan_benchmark):
    X = literature_features(manhattan_benchmark)
    y = manhattan_benchmark.targets["crime"]
    clean = cross_val_predict_pooled(ridge_cv_fit_predict(), X, y)
    paper = cross_val_predict_pooled(ridge_cv_fit_predict(), X, y, protocol="paper")
    assert paper.optimistic and paper.metrics["r2"] > clean.metrics["r2"]


def test_gbm_tunes_inside_the_training_fold():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = np.where(X[:, 0] > 0, 10.0, 0.0) + rng.normal(0, 0.5, 80)
    grid = ({"max_iter": 30, "max_leaf_nodes": 4}, {"max_iter": 30, "max_leaf_nodes": 8})
    result = cross_val_predict_pooled(gbm_fit_predict(grid, inner_folds=2), X, y, folds=4,
                                      clip_negative=False)
    assert result.metrics["r2"] > 0.8
    assert all(info["setting"] in (0, 1) for info in result.fold_info)


def test_weighted_leave_one_out_equals_weighted_refits_without_each_region():
    """Region weights (a rate's population): the closed form is weighted least squares, and
    its leave-one-out error is that of weighted refits without each region."""
    from engine.training.baselines import training_weights

    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 8))
    y = X[:, 0] * 3 + rng.normal(size=25) + 5
    w = training_weights(rng.uniform(0.2, 5.0, size=25), 25)
    model = LeaveOneOutRidge(alphas=np.array([0.1, 3.0, 100.0])).fit(X, y, weights=w)
    brute = []
    for alpha in model.alphas:
        residuals = []
        for i in range(25):
            keep = np.arange(25) != i
            fit = Ridge(alpha=alpha).fit(X[keep], y[keep], sample_weight=w[keep])
            residuals.append(y[i] - fit.predict(X[i:i + 1])[0])
        brute.append(np.mean(w * np.square(residuals)))
    assert np.allclose(model.loo_mse_, brute)
    full = Ridge(alpha=model.alpha_).fit(X, y, sample_weight=w)
    assert np.allclose(model.predict(X), full.predict(X))
    unweighted = LeaveOneOutRidge(alphas=model.alphas).fit(X, y)
    assert not np.allclose(unweighted.loo_mse_, model.loo_mse_)


def test_weighted_bar_scores_weighted_metrics():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 4))
    population = rng.uniform(100, 10000, size=60)
    y = X[:, 0] + rng.normal(size=60) * 30 / np.sqrt(population)  # small places are noisy
    result = cross_val_predict_pooled(ridge_cv_fit_predict(weights=population), X, y, folds=5,
                                      weights=population)
    assert set(result.metrics) >= {"r2", "r2_weighted", "mae_weighted", "rmse_weighted"}
    error = result.predictions - y
    expected = 1 - (population @ error**2) / (
        population @ (y - population @ y / population.sum()) ** 2)
    assert result.metrics["r2_weighted"] == pytest.approx(expected)
