"""The default per-task model: candidates, stack shrunk toward RidgeCV by inner CV, final model,
saving and loading, describe()."""

from __future__ import annotations

import numpy as np
import pytest

from engine.training.baselines import ridge_cv_fit_predict
from engine.training.cv import cross_val_predict_pooled
from engine.training.features import literature_features, robust_features
from engine.training.predictor import (
    PredictorConfig,
    TaskInputs,
    convex_weights,
    evaluate_task,
    fit_task,
    load_fitted_task,
    make_fit_predict,
    shrunk_stack_weights,
)


@pytest.fixture(scope="module")
def city():
    from engine.data.synthetic import make_synthetic_city

    return make_synthetic_city(n_regions=120, seed=3)


def test_convex_weights_pick_the_right_mixture():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 200))
    y = 0.7 * a + 0.3 * b
    w = convex_weights(np.column_stack([a, b, c]), y)
    assert w == pytest.approx([0.7, 0.3, 0.0], abs=1e-3)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()


def test_fit_task_blends_useful_inputs_and_ignores_noise(city):
    rng = np.random.default_rng(0)
    y = city.targets["check_in"]
    noise = rng.normal(size=(city.n_regions, 16))
    inputs = TaskInputs(noise, None, robust_features(city), y)
    fitted = fit_task(inputs, np.arange(100))
    d = fitted.describe()
    assert sum(d["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    noise_weight = sum(w for k, w in fitted.weights.items() if k.startswith("ridge[srel|"))
    assert noise_weight < 0.1
    assert d["inner_r2"]["ridge[raw|log1p]"] > 0.5 and not d["optimistic"]
    predicted = fitted.predict(np.arange(100, 120))
    assert (predicted >= 0).all()
    r2 = 1 - ((predicted - y[100:]) ** 2).sum() / ((y[100:] - y[100:].mean()) ** 2).sum()
    assert r2 > 0.4


def test_evaluate_task_predicts_unlabelled_regions_with_the_final_model(city):
    y = city.targets["income"]  # about 5% unknown
    unknown = np.flatnonzero(np.isnan(y))
    assert len(unknown) > 0
    inputs = TaskInputs(None, None, robust_features(city), y)
    result = evaluate_task(inputs, folds=4, shuffle=True)
    assert np.isfinite(result.pooled.predictions).all()
    assert (result.pooled.fold[unknown] == -1).all()
    assert np.allclose(result.pooled.predictions[unknown], result.final.predict(unknown))
    assert len(result.choices) == 4 and all("weights" in c for c in result.choices)
    assert result.metrics["r2"] > 0.3
    assert result.to_dict()["final"]["weights"]


def test_semantic_vectors_become_a_candidate(city):
    rng = np.random.default_rng(1)
    y = city.targets["crime"]
    semantic = np.column_stack([np.log1p(y) + rng.normal(0, 0.05, len(y)),
                                rng.normal(size=(len(y), 7))])  # (N, 8) an informative vector
    inputs = TaskInputs(rng.normal(size=(len(y), 8)), semantic, robust_features(city), y)
    fitted = fit_task(inputs, np.arange(90))
    assert sum(w for k, w in fitted.weights.items() if "semantic" in k) > 0.5


def test_default_model_keeps_up_with_ridgecv_on_manhattan(manhattan_benchmark):
    """The engine's default (raw features only here) against the honest RidgeCV bar, clean
    protocol, 10 unshuffled folds. Measured: check-in 0.871 vs 0.862, crime 0.762 vs 0.768,
    service calls 0.551 vs 0.533 (docs/quality-notes.md)."""
    literature = literature_features(manhattan_benchmark)
    features = {"raw": literature, "robust": robust_features(manhattan_benchmark)}
    for task in ("check_in", "crime", "service_call"):
        y = manhattan_benchmark.targets[task]
        ours = cross_val_predict_pooled(make_fit_predict(None, None, features), None, y)
        bar = cross_val_predict_pooled(ridge_cv_fit_predict(), literature, y)
        assert ours.metrics["r2"] >= bar.metrics["r2"] - 0.02, task


def test_best_single_candidate_mode(city):
    inputs = TaskInputs(None, None, robust_features(city), city.targets["crime"])
    fitted = fit_task(inputs, np.arange(100), config=PredictorConfig(combine="best"))
    assert len(fitted.weights) == 1 and list(fitted.weights.values()) == [1.0]


def test_shrinkage_keeps_the_anchor_when_the_others_are_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(size=160)
    anchor = y + rng.normal(0, 0.5, 160)  # a useful out-of-sample prediction
    noise = rng.normal(0, 3.0, size=(160, 4))  # candidates that know nothing, loudly
    weights, lam = shrunk_stack_weights(np.column_stack([anchor, noise]), y, 0)
    assert weights[0] > 0.9 and 0.0 <= lam <= 1.0
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()


def test_shrinkage_moves_to_the_stack_when_it_is_clearly_better():
    rng = np.random.default_rng(1)
    y = rng.normal(size=160)
    weak = y + rng.normal(0, 1.5, 160)
    strong = y + rng.normal(0, 0.3, 160)
    weights, lam = shrunk_stack_weights(np.column_stack([weak, strong]), y, 0)
    assert lam >= 0.8 and weights[1] > 0.7


def test_the_shrinkage_is_not_decided_by_a_few_noisy_regions():
    """A candidate that is worse on 157 regions and right about 3 wild ones: the squared error
    hands it the blend, the absolute error (the default) keeps the anchor; both move to a
    candidate that is better everywhere."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=160)
    y[:3] += 12.0  # three regions far off (small-number noise in a rate, say)
    anchor = np.where(np.arange(160) < 3, 0.0, y + rng.normal(0, 0.4, 160))
    lucky = np.where(np.arange(160) < 3, y, y + rng.normal(0, 1.5, 160))
    predictions = np.column_stack([anchor, lucky])
    _, squared = shrunk_stack_weights(predictions, y, 0, loss="squared")
    _, absolute = shrunk_stack_weights(predictions, y, 0, loss="absolute")
    assert squared >= 0.7 and absolute <= 0.3
    better = np.column_stack([anchor, y + rng.normal(0, 0.1, 160)])
    assert shrunk_stack_weights(better, y, 0, loss="absolute")[1] >= 0.8
    assert PredictorConfig().shrink_loss == "absolute"


def test_ridge_leave_one_out_predictions_are_exact(city):
    """The stacking reads each Ridge candidate's closed-form leave-one-out predictions: they must
    be what refitting without the region gives (same penalty; which penalty each region gets is
    `test_baselines.test_each_region_s_penalty_is_chosen_without_its_own_error`)."""
    from engine.training.predictor import build_candidates

    y = city.targets["crime"]
    inputs = TaskInputs(None, None, robust_features(city), y)
    train = np.arange(40)
    config = PredictorConfig(kernel_ridge=False)
    for candidate in build_candidates(inputs, config, non_negative=True):
        candidate.fit_loo(train, y)  # its penalty, by leave-one-out
        fixed = PredictorConfig(alphas=(candidate.info["alpha"],), kernel_ridge=False)
        again = {c.name: c for c in build_candidates(inputs, fixed, non_negative=True)}
        _, loo = again[candidate.name].fit_loo(train, y)  # at that penalty alone
        for i in (0, 17, 39):
            refit = again[candidate.name].fit(np.delete(train, i), y)(train[i:i + 1])[0]
            assert loo[i] == pytest.approx(refit, rel=1e-6, abs=1e-6), candidate.name


def test_kernel_ridge_leave_one_out_predictions_are_exact():
    from engine.training.predictor import _kernel_candidate, _squared_distances

    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=50)
    train = np.arange(50)
    candidate = _kernel_candidate("kernel[x|raw]", X, "raw", (1.0,), (0.1,))
    _, loo = candidate.fit_loo(train, y)
    gamma = candidate.info["gamma"]
    assert np.corrcoef(loo, y)[0, 1] > 0.8
    for i in (0, 25, 49):
        rest = np.delete(train, i)
        d = _squared_distances(X[rest], X[rest])
        width = gamma * float(np.median(d[d > 0]))  # the same gamma on the smaller set
        refit = _kernel_candidate("kernel[x|raw]", X, "raw", (width,), (0.1,)).fit(rest, y)
        assert loo[i] == pytest.approx(refit(train[i:i + 1])[0], rel=1e-6, abs=1e-8)


def test_kernel_ridge_gives_each_region_the_grid_point_the_others_choose():
    """The kernel's width and penalty, as read by the stack for region i, are chosen without
    region i's own leave-one-out error (80 grid points flatter a flexible model otherwise)."""
    from engine.training.predictor import _kernel_candidate

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 3))
    y = np.sin(X[:, 0]) + 0.3 * rng.normal(size=40)
    y[7] += 8.0  # an outlier: its own error would choose its grid point
    train = np.arange(40)
    widths, alphas = (0.25, 1.0, 4.0), (0.01, 0.1, 1.0)
    _, loo = _kernel_candidate("kernel[x|raw]", X, "raw", widths, alphas).fit_loo(train, y)
    single = np.array([_kernel_candidate("kernel[x|raw]", X, "raw", (w,), (a,))
                       .fit_loo(train, y)[1] for w in widths for a in alphas])  # (9, 40)
    errors = (single - y) ** 2
    choice = [int(np.argmin(errors.sum(axis=1) - errors[:, i])) for i in range(40)]
    assert loo == pytest.approx(single[choice, np.arange(40)])
    overall = int(np.argmin(errors.sum(axis=1)))
    assert [i for i in range(40) if choice[i] != overall] == [7]


def test_candidates_share_one_decomposition_per_block_and_training_set(city, monkeypatch):
    """The raw and log1p candidates of a block reuse one SVD (and one set of kernel
    eigendecompositions) per training set, give what a candidate fitted on its own gives, and
    decompose again when the training rows change."""
    from engine.training import predictor
    from engine.training.predictor import build_candidates

    calls = {"svd": 0, "kernel": 0}
    svd, eigh = predictor.centred_svd, predictor._kernel_eigh

    def counted_svd(X, weights=None):
        calls["svd"] += 1
        return svd(X, weights)

    def counted_eigh(A, widths, weights=None):
        calls["kernel"] += 1
        return eigh(A, widths, weights)

    monkeypatch.setattr(predictor, "centred_svd", counted_svd)
    monkeypatch.setattr(predictor, "_kernel_eigh", counted_eigh)
    y = city.targets["crime"]
    features = {"raw": literature_features(city), "robust": robust_features(city)}
    inputs = TaskInputs(None, None, features, y)
    config = PredictorConfig()
    candidates = build_candidates(inputs, config, non_negative=True)
    names = [c.name for c in candidates]
    assert {"ridge[raw|raw]", "ridge[raw|log1p]", "kernel[robust|raw]",
            "kernel[robust|log1p]"} <= set(names)
    ridge_blocks = {n[len("ridge["):].split("|")[0] for n in names if n.startswith("ridge[")}
    blocks = predictor.input_blocks(inputs, config)
    for expected, train in ((1, np.arange(90)), (2, np.arange(30, 120))):
        shared = {c.name: c.fit_loo(train, y) for c in candidates}
        assert calls == {"svd": expected * len(ridge_blocks), "kernel": expected}
        for name, (predict, loo) in shared.items():
            block, transform = name[name.index("[") + 1:-1].split("|")
            if name.startswith("ridge["):
                alone = predictor._ridge_candidate(name, blocks[block], transform,
                                                   np.asarray(config.alphas))
            else:
                alone = predictor._kernel_candidate(name, blocks[block], transform,
                                                    config.kernel_widths, config.kernel_alphas)
            alone_predict, alone_loo = alone.fit_loo(train, y)
            assert np.array_equal(loo, alone_loo), name
            every = np.arange(city.n_regions)
            assert np.array_equal(predict(every), alone_predict(every)), name
        calls.update(svd=expected * len(ridge_blocks), kernel=expected)  # not the alone fits


def test_saved_task_model_predicts_the_same(city, tmp_path):
    from engine.training.task_io import load_task_model, save_task_model

    rng = np.random.default_rng(3)
    y = city.targets["check_in"]
    features = {"raw": literature_features(city), "robust": robust_features(city)}
    inputs = TaskInputs(rng.normal(size=(city.n_regions, 8)), None, features, y)
    fitted = fit_task(inputs, np.arange(100), config=PredictorConfig(combine="stack"))
    assert any(k.startswith("kernel[") for k in fitted.scores)
    save_task_model(fitted, tmp_path / "model")
    loaded = load_fitted_task(load_task_model(tmp_path / "model"), inputs)
    index = np.arange(city.n_regions)
    assert np.allclose(loaded.predict(index), fitted.predict(index))


def test_kernel_ridge_is_left_out_for_many_labelled_regions(city):
    from engine.training.predictor import build_candidates

    inputs = TaskInputs(None, None, robust_features(city), city.targets["crime"])
    names = [c.name for c in build_candidates(inputs, PredictorConfig(), non_negative=True)]
    assert "kernel[raw|log1p]" in names  # a lone matrix is the "raw" block
    few = PredictorConfig(kernel_max_regions=50)
    names = [c.name for c in build_candidates(inputs, few, non_negative=True)]
    assert not any(n.startswith("kernel[") for n in names) and "ridge[raw|raw]" in names


def test_prompt4re_candidate_is_fitted_blended_saved_and_blind_to_held_out_labels(city, tmp_path):
    from engine.training.task_io import load_task_model, save_task_model

    rng = np.random.default_rng(4)
    y = city.targets["check_in"]
    signal = np.log1p(y)[:, None]
    embeddings = np.column_stack([signal + rng.normal(0, 0.5, (len(y), 1)),
                                  rng.normal(size=(len(y), 7))])  # (N, 8)
    semantic = np.column_stack([signal + rng.normal(0, 0.5, (len(y), 1)),
                                rng.normal(size=(len(y), 5))])  # (N, 6)
    config = PredictorConfig(prompt4re=True, prompt4re_epochs=30, prompt4re_lr=1e-2,
                             inner_folds=2, kernel_ridge=False, target_transforms=("log1p",),
                             use_concat=False, use_semantic_ridge=False, combine="stack")
    train = np.arange(100)
    fitted = fit_task(TaskInputs(embeddings, semantic, None, y), train, config=config)
    assert set(fitted.scores) == {"ridge[srel|log1p]", "prompt4re[log1p]"}
    assert fitted.weights.get("prompt4re[log1p]", 0) > 0
    assert np.isfinite(fitted.predict(np.arange(100, 120))).all()
    # The labels of the regions it predicts are never read: hiding them changes nothing.
    hidden = y.copy()
    hidden[100:] = np.nan
    blind = fit_task(TaskInputs(embeddings, semantic, None, hidden), train, config=config)
    np.testing.assert_allclose(blind.predict(np.arange(120)), fitted.predict(np.arange(120)))
    # A saved model with the Prompt4RE candidate predicts the same after loading.
    save_task_model(fitted, tmp_path / "model")
    loaded = load_fitted_task(load_task_model(tmp_path / "model"),
                              TaskInputs(embeddings, semantic, None, y))
    np.testing.assert_allclose(loaded.predict(np.arange(120)), fitted.predict(np.arange(120)),
                               rtol=1e-5, atol=1e-4)


def test_regions_beyond_every_training_label_get_the_anchors_prediction(tmp_path):
    """A region whose anchor prediction exceeds every training label gets the anchor's; the
    guard changes nothing inside the training range, and a saved model keeps it."""
    from engine.training.task_io import load_task_model, save_task_model

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 10, 80), [25.0, 30.0]])  # two regions far beyond
    y = 3 * x + 3 * np.sin(x) + rng.normal(0, 0.3, len(x)) + 20
    raw = np.column_stack([x, rng.normal(size=(len(x), 3))])
    inputs = TaskInputs(None, None, {"raw": raw, "robust": raw}, y)
    train, far, near = np.arange(80), np.array([80, 81]), np.arange(10)
    config = PredictorConfig(combine="stack")  # a free stack: the kernel members get weight
    guarded = fit_task(inputs, train, config=config)
    bare = fit_task(inputs, train, config=PredictorConfig(combine="stack",
                                                          extrapolation_guard=False))
    assert guarded.weights == bare.weights and set(guarded.weights) != {"ridge[raw|raw]"}
    anchor = guarded._predictors["ridge[raw|raw]"](far)
    assert guarded.label_max == pytest.approx(y[train].max()) and (anchor > y[train].max()).all()
    assert np.allclose(guarded.predict(far), anchor)
    assert not np.allclose(bare.predict(far), anchor)  # the blend falls short out there
    assert np.abs(guarded.predict(far) - y[far]).max() < np.abs(bare.predict(far) - y[far]).max()
    assert np.allclose(guarded.predict(near), bare.predict(near))
    assert guarded.describe()["extrapolation_guard"]["anchor"] == "ridge[raw|raw]"

    save_task_model(guarded, tmp_path / "model")
    loaded = load_fitted_task(load_task_model(tmp_path / "model"), inputs)
    assert np.allclose(loaded.predict(np.arange(len(x))), guarded.predict(np.arange(len(x))))


def test_a_log_target_candidate_predicts_at_most_the_largest_training_label():
    from engine.training.predictor import candidate_inverse

    y_train = np.array([3.0, 10.0, 63.0, 20.0])
    far = np.log1p(np.array([5.0, 123.0]))  # a log-space prediction far beyond the data
    assert np.allclose(candidate_inverse(far, "log1p", y_train), [5.0, 63.0])
    assert np.allclose(candidate_inverse(far, "raw", y_train), far)  # raw targets: as they are
    # Leave-one-out predictions: the held-out region's own label never bounds its prediction.
    loo = np.log1p(np.array([100.0, 100.0, 100.0, 100.0]))
    assert np.allclose(candidate_inverse(loo, "log1p", y_train, leave_one_out=True),
                       [63.0, 63.0, 20.0, 63.0])


def test_a_blend_beyond_the_training_labels_is_held_inside_them_unless_the_anchor_goes_there():
    """The guard's two halves: the anchor's prediction where it exceeds the largest label; else
    the blend clipped into [smallest, largest] label (a wide kernel ridge can run on beyond the
    data like a polynomial: Tokyo's mortality ratio, docs/quality-notes.md)."""
    from engine.training.predictor import FittedTask

    blend = np.array([5.0, 12.0, -3.0, 14.0])  # inside, above, below, above
    anchor = np.array([4.0, 9.0, 1.0, 11.0])  # the last one above the largest label too
    fitted = FittedTask(weights={"blend": 1.0}, scores={}, blend_score={}, chosen={},
                        protocol="clean", clip_negative=False, anchor="anchor", label_max=10.0,
                        label_min=0.0, _predictors={"blend": lambda i: blend[i],
                                                    "anchor": lambda i: anchor[i]})
    assert np.allclose(fitted.predict(np.arange(4)), [5.0, 10.0, 0.0, 11.0])
    # A prediction held under the largest label is still flagged as one that wanted to leave
    # the range; one held at the smallest is not (a count's blend a little under 0 is common).
    from engine.training.predictor import PREDICTION_BEYOND, TrainingReach

    fitted.reach = TrainingReach("raw", np.zeros(1), np.zeros((0, 1)), np.zeros(0), 1.0, 10,
                                 np.inf, 0.0, 10.0, np.zeros((4, 1)))
    assert list(fitted.extrapolated(np.arange(4))) == [0, PREDICTION_BEYOND, 0,
                                                       PREDICTION_BEYOND]
    fitted.label_min = None  # a model saved before the lower bound existed
    assert np.allclose(fitted.predict(np.arange(4)), [5.0, 10.0, -3.0, 11.0])


def test_weighted_kernel_ridge_is_kernel_ridge_on_repeated_regions():
    """Integer region weights act as repeated regions: the weighted kernel ridge predicts new
    regions as the unweighted one on the repeated rows does (same width, penalty in the same
    units), and its leave-one-out prediction is the fit without all copies of the region."""
    from engine.training.predictor import _kernel_candidate, _squared_distances

    rng = np.random.default_rng(6)
    X = rng.normal(size=(30, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=30)
    copies = rng.integers(1, 4, size=30)
    weighted = _kernel_candidate("kernel[x|raw]", X, "raw", (1.0,), (0.1,),
                                 weights=copies.astype(float))
    _, loo = weighted.fit_loo(np.arange(30), y)
    gamma = weighted.info["gamma"]
    scale = copies.sum() / 30  # the weights are rescaled to mean 1: the penalty's unit
    for i in (0, 10, 29):
        rows = np.repeat(np.arange(30), copies)
        rows = rows[rows != i]
        d = _squared_distances(X[rows], X[rows])
        width = gamma * float(np.median(d[d > 0]))
        stacked = np.concatenate([X, X[rows]])  # region i first, then the repeated others
        plain = _kernel_candidate("kernel[x|raw]", stacked, "raw", (width,), (0.1 * scale,))
        refit = plain.fit(np.arange(30, 30 + len(rows)), np.concatenate([y, y[rows]]))
        assert loo[i] == pytest.approx(refit(np.array([i]))[0], rel=1e-6, abs=1e-8)


def _noisy_rates(seed: int):
    """Regions whose rate is a function of the inputs, observed as counts / population: the
    small places' rates are noisy (Poisson), the large places' exact to a few percent."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(150, 5))
    rate = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]) / 100
    population = np.exp(rng.uniform(np.log(50), np.log(50000), size=150))
    observed = rng.poisson(rate * population) / population
    return X, rate, population, observed


def test_region_weights_recover_a_rate_that_small_places_blur():
    """A rate weighted by population is fitted closer to the true rate, and the weighted R²
    says so; no label outside the training fold is read (clean protocol)."""
    for seed in range(3):
        X, rate, population, observed = _noisy_rates(seed)
        features = {"raw": X, "robust": X}
        plain = evaluate_task(TaskInputs(None, None, features, observed), folds=5)
        weighted = evaluate_task(TaskInputs(None, None, features, observed, population),
                                 folds=5)
        assert "r2_weighted" in weighted.metrics and "r2_weighted" not in plain.metrics

        def error(prediction, population=population, rate=rate):  # weighted, to the true rate
            return float(population @ (prediction - rate) ** 2)

        assert error(weighted.pooled.predictions) < error(plain.pooled.predictions), seed


def test_missing_or_zero_weights_of_labelled_regions_are_refused():
    from engine.errors import InputError

    X, _, population, observed = _noisy_rates(1)
    population[[3, 8]] = [0.0, np.nan]
    with pytest.raises(InputError, match="2 labelled regions have a weight"):
        fit_task(TaskInputs(None, None, {"raw": X}, observed, population), np.arange(150))


def test_precision_weights_follow_the_weight_only_where_sampling_noise_is_the_error():
    """Rates whose error is sampling noise (counts / population) get weights that grow with
    the population; values whose error does not shrink with it (the same noise in every
    region) get nearly equal weights, so a few very large places cannot take the fit over."""
    from engine.training.predictor import (
        SharedDecompositions,
        _anchor_loo,
        input_blocks,
        precision_weights,
    )

    X, rate, population, observed = _noisy_rates(2)
    train = np.arange(150)
    config = PredictorConfig()

    def bar_loo(y):  # the anchor's leave-one-out predictions, as fit_task gives them
        blocks = input_blocks(TaskInputs(None, None, {"raw": X}, y), config)
        return _anchor_loo(blocks, config, train, y, SharedDecompositions())

    sampled, fitted = precision_weights(population, train, observed, bar_loo(observed))
    assert fitted["sampling_variance_at_mean_weight"] > 0
    assert fitted["weight_ratio"] == pytest.approx(sampled.max() / sampled.min())
    assert np.corrcoef(np.log(sampled), np.log(population))[0, 1] > 0.9
    assert sampled.max() / sampled.min() > 20
    rng = np.random.default_rng(2)
    flat = rate + rng.normal(0, 0.005, size=150)  # the error of a place of 50 as of 50,000
    even, _ = precision_weights(population, train, flat, bar_loo(flat))
    assert even.max() / even.min() < 3  # against a population range of 1,000


def test_weights_as_given_are_used_as_they_are():
    X, _, population, observed = _noisy_rates(3)
    features = {"raw": X, "robust": X}
    given = fit_task(TaskInputs(None, None, features, observed, population), np.arange(120),
                     config=PredictorConfig(weighting="as_given"))
    precision = fit_task(TaskInputs(None, None, features, observed, population), np.arange(120))
    rows = np.arange(120, 150)
    assert not np.allclose(given.predict(rows), precision.predict(rows))


def test_a_weighted_kernel_ridge_saved_and_loaded_predicts_the_same(city, tmp_path):
    from engine.training.predictor import KernelRidgePredict, _kernel_candidate
    from engine.training.task_io import load_task_model, save_task_model

    X = robust_features(city)
    y = city.targets["check_in"]
    weights = np.random.default_rng(1).uniform(0.5, 20.0, size=city.n_regions)
    predictor = _kernel_candidate("kernel[robust|raw]", X, "raw", (1.0,), (0.1,),
                                  weights=weights).fit(np.arange(100), y)
    arrays, meta = predictor.state()
    assert "shares" in arrays  # the weighted centring travels with the model
    loaded = KernelRidgePredict.from_state(arrays, meta, {"robust": X})
    index = np.arange(city.n_regions)
    assert np.allclose(loaded(index), predictor(index))
    features = {"raw": literature_features(city), "robust": X}
    inputs = TaskInputs(None, None, features, y, weights)
    fitted = fit_task(inputs, np.arange(100), config=PredictorConfig(combine="stack"))
    save_task_model(fitted, tmp_path / "model")
    again = load_fitted_task(load_task_model(tmp_path / "model"), inputs)
    assert np.allclose(again.predict(index), fitted.predict(index))


def test_a_rate_without_its_weight_is_weighted_by_the_field_its_errors_point_to():
    """`auto_weight`: a rate whose training errors shrink as a region field grows is fitted
    with precision weights from that field (chosen inside the training regions), closer to the
    true rate; a value whose noise is the same everywhere stays unweighted; off, nothing."""
    X, rate, population, observed = _noisy_rates(0)
    features = {"raw": X, "robust": X}
    fields = {"population": population, "other": np.linspace(1.0, 9.0, 150)}
    train = np.arange(120)
    auto = fit_task(TaskInputs(None, None, features, observed, denominators=fields), train)
    assert auto.weighting["automatic"] and auto.weighting["field"] == "population"
    given = fit_task(TaskInputs(None, None, features, observed, population), train)
    rows = np.arange(120, 150)
    assert np.allclose(auto.predict(rows), given.predict(rows))  # as if the analyst named it
    off = fit_task(TaskInputs(None, None, features, observed, denominators=fields), train,
                   config=PredictorConfig(auto_weight=False))
    assert off.weighting is None
    flat = rate + np.random.default_rng(0).normal(0, 0.005, size=150)
    assert fit_task(TaskInputs(None, None, features, flat, denominators=fields),
                    train).weighting is None
    evaluation = evaluate_task(TaskInputs(None, None, features, observed,
                                          denominators=fields), folds=5)
    plain = evaluate_task(TaskInputs(None, None, features, observed), folds=5)
    error = {name: float(population @ (e.pooled.predictions - rate) ** 2)
             for name, e in (("auto", evaluation), ("plain", plain))}
    assert error["auto"] < error["plain"]
    assert "r2_weighted" not in evaluation.metrics  # the analyst named no weight: plain figures
