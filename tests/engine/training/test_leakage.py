"""Leakage: shuffled labels predict nothing; held-out labels change nothing; paper = flagged."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.baselines import gbm_fit_predict, ridge_cv_fit_predict
from engine.training.cv import cross_val_predict_pooled, kfold_splits
from engine.training.features import literature_features, robust_features
from engine.training.predictor import TaskInputs, evaluate_task, fit_task, make_fit_predict


@pytest.fixture(scope="module")
def manhattan_inputs(manhattan_benchmark):
    literature = literature_features(manhattan_benchmark)
    robust = robust_features(manhattan_benchmark)
    rng = np.random.default_rng(0)
    stand_in = rng.normal(size=(180, 32))  # random stand-in for SREL embeddings
    return literature, robust, stand_in


def test_shuffled_labels_give_no_skill_under_the_clean_protocol(manhattan_benchmark,
                                                                manhattan_inputs):
    literature, robust, stand_in = manhattan_inputs
    y = np.random.default_rng(7).permutation(manhattan_benchmark.targets["check_in"])
    runs = {
        "ridgecv": (ridge_cv_fit_predict(), literature),
        "ridgecv_log": (ridge_cv_fit_predict(target="log1p"), robust),
        "predictor": (make_fit_predict(stand_in, None, {"raw": literature, "robust": robust}),
                      None),
    }
    for name, (fit_predict, X) in runs.items():
        result = cross_val_predict_pooled(fit_predict, X, y)
        assert result.metrics["r2"] <= 0.0, name


def test_shuffled_labels_give_no_skill_to_boosting():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 10))
    y = rng.permutation(np.exp(X[:, 0]) * 10)
    grid = ({"max_iter": 40, "max_leaf_nodes": 7},)
    result = cross_val_predict_pooled(gbm_fit_predict(grid, inner_folds=2), X, y, folds=5)
    assert result.metrics["r2"] <= 0.0


def test_held_out_labels_do_not_change_held_out_predictions(manhattan_benchmark,
                                                            manhattan_inputs):
    literature, robust, stand_in = manhattan_inputs
    y = manhattan_benchmark.targets["crime"].copy()
    train, test = kfold_splits(np.arange(180), 10)[3]
    predictions = []
    for garbage in (None, np.nan, 1e9, -5.0):
        y_seen = y.copy()
        if garbage is not None:
            y_seen[test] = garbage
        inputs = TaskInputs(stand_in, None, {"raw": literature, "robust": robust}, y_seen)
        predictions.append(fit_task(inputs, train).predict(test))
        fit_predict = ridge_cv_fit_predict()
        predictions.append(fit_predict(literature, y_seen, train, test)[0])
    for other in predictions[2::2]:
        assert np.array_equal(predictions[0], other)
    for other in predictions[3::2]:
        assert np.array_equal(predictions[1], other)


def test_paper_protocol_is_flagged_optimistic(manhattan_benchmark, manhattan_inputs):
    literature, robust, _ = manhattan_inputs
    inputs = TaskInputs(None, None, {"raw": literature, "robust": robust},
                        manhattan_benchmark.targets["service_call"])
    clean = evaluate_task(inputs, folds=5)
    paper = evaluate_task(inputs, folds=5, protocol="paper")
    assert not clean.pooled.optimistic and paper.pooled.optimistic
    assert "OPTIMISTIC" in paper.to_dict()["label"]
    assert all(choice["optimistic"] for choice in paper.choices)
    assert paper.metrics["r2"] > clean.metrics["r2"]  # choosing on the test fold flatters
