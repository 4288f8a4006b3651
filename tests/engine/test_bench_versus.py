"""The paired comparison of the default with the bar, and the quality goals in the document."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from bench.report import quality_goal_rows, render  # noqa: E402
from bench.versus import run_versus  # noqa: E402
from engine.training.metrics import paired_r2_difference  # noqa: E402


def _r2(y, prediction):
    """R² written out, independent of the engine's."""
    return 1 - ((prediction - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def _city(n=180, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.gamma(2.0, 50.0, n)
    return rng, y, np.arange(n) % 10


def test_a_model_against_itself_differs_by_nothing():
    rng, y, fold = _city()
    same = [y + rng.normal(0, 30, len(y))]
    out = paired_r2_difference(y, same, same, fold)
    assert out["difference"] == out["low"] == out["high"] == 0.0
    assert out["folds_better"] == 0  # equal errors are not lower


def test_a_clearly_better_model_has_an_interval_above_zero_and_wins_every_fold():
    rng, y, fold = _city()
    better = [y + rng.normal(0, 15, len(y)) for _ in range(3)]  # three seeds
    worse = [y + rng.normal(0, 45, len(y))]
    out = paired_r2_difference(y, better, worse, fold)
    assert out["difference"] == pytest.approx(np.mean([_r2(y, p) for p in better]) - _r2(y, worse[0]))
    assert 0 < out["low"] < out["difference"] < out["high"]
    assert out["share_above_zero"] == 1.0 and out["folds_better"] == out["folds"] == 10
    swapped = paired_r2_difference(y, worse, better, fold)
    assert swapped["difference"] == pytest.approx(-out["difference"])
    assert swapped["high"] < 0


def test_two_equally_good_models_get_an_interval_across_zero():
    rng, y, fold = _city(seed=1)
    error = rng.normal(0, 30, len(y))
    odd = np.arange(len(y)) % 2 == 1
    a = [y + np.where(odd, 2 * error, error)]  # the same total error, on other regions
    b = [y + np.where(odd, error, 2 * error)]
    out = paired_r2_difference(y, a, b, fold)
    assert abs(out["difference"]) < 0.05
    assert out["low"] < 0 < out["high"]
    assert 0.0 < out["share_above_zero"] < 1.0


def _quality(crime_default=0.762, crime_bar=0.768, city="manhattan"):
    def row(task, model, r2):
        return {"task": task, "protocol": "clean", "model": model, "label": model, "r2": r2,
                "r2_std": None, "mae": 1.0, "rmse": 2.0, "runs": 1, "seconds": 1.0}

    split = {"city": city, "recognised_from": "named", "zero_is_unknown": ["income"]}
    return {"data": "/data/city", "tasks": ["crime", "check_in"], "settings": {"folds": 10},
            "split": split,
            "rows": [row("crime", "method", crime_default), row("crime", "raw_ridgecv", crime_bar),
                     row("check_in", "method", 0.876), row("check_in", "raw_ridgecv", 0.862)],
            "clustering": [{"model": "srel", "label": "srel embeddings", "runs": 3, "nmi": 0.709, "nmi_std": 0.01, "clusters": 13,
                            "literature_k": 12, "at_literature_k": {"nmi": 0.70,
                                                                     "nmi_std": 0.02}}]}


def _versus(data="/data/city"):
    return {"data": data, "folds": 10, "seeds": [0, 1, 2], "rows": [
        {"task": "crime", "split": "unshuffled", "comparison": "default_vs_bar",
         "difference": -0.0062, "low": -0.021, "high": 0.009, "confidence": 0.95,
         "folds_better": 4, "folds": 10}]}


def test_the_goals_say_where_the_default_falls_below_the_bar_and_by_how_much():
    lines = quality_goal_rows(_quality(), _versus())
    bar = next(line for line in lines if "above the bar" in line)
    assert "**not met** (below on crime)" in bar
    assert "crime 0.762 vs 0.768 (-0.006, 95% paired interval [-0.021, +0.009], lower error on " \
           "4 of 10 folds)" in bar
    assert "check_in 0.876 vs 0.862;" not in bar and "check_in 0.876 vs 0.862" in bar
    goals = {line.split("|")[1].strip(): line for line in lines}
    assert "**not met** (-0.024)" in goals["R² >= 0.90 check_in, engine default, clean"]
    assert "**not met** (-0.038)" in goals["R² >= 0.80 crime, engine default, clean"]
    assert "service_call" not in "".join(goals)  # not in this table: no row
    nmi = goals["land-use NMI >= 0.80, SREL embeddings"]
    assert "KMeans(12)" in nmi and "**not met** (-0.091)" in nmi

    above = quality_goal_rows(_quality(crime_default=0.770), None)[0]
    assert "**met** (above on every task)" in above and "interval" not in above
    # an interval measured on another city is not put beside this table's figures
    assert "interval" not in quality_goal_rows(_quality(), _versus("/other"))[0]


def test_another_city_gets_the_bar_goal_on_its_own_split_and_none_of_manhattans_goals(tmp_path):
    chicago = _quality(city="chicago")
    versus = _versus()
    versus["literature_split"] = "shuffled"  # Chicago's split; the row above is unshuffled
    lines = quality_goal_rows(chicago, versus)
    assert len(lines) == 1 and "above the bar" in lines[0] and "interval" not in lines[0]
    versus["rows"][0]["split"] = "shuffled"
    assert "95% paired interval" in quality_goal_rows(chicago, versus)[0]

    chicago.update(regions=77, labelled={"crime": 77, "check_in": 70})
    chicago["settings"] = {"folds": 25, "shuffle": True, "seeds": [0],
                           "srel_epochs": None, "language_model": "smollm2"}
    text = render({"mode": "quick", "quality": chicago}, tmp_path, None)
    assert "25-fold, shuffled (seed 2024)" in text and "(chicago, named;" in text
    quality_text = text.split("## 1. Quality")[1].split("## 2.")[0]
    assert "*published:" not in quality_text and "Published rows" not in quality_text
    assert "single region" not in quality_text
    manhattan = render({"mode": "quick", "quality": {**chicago, "split": _quality()["split"]}},
                       tmp_path, None)
    assert "*published: HAFusion*" in manhattan


def test_run_versus_on_a_small_city_and_its_section(tmp_path):
    from tests.engine.test_bench_smoke import _benchmark_folder

    torch.set_num_threads(1)
    data = tmp_path / "city"
    data.mkdir()
    _benchmark_folder(data, n=40)
    out = run_versus(data, seeds=(0,), tasks=("crime", "check_in"), folds=4,
                     language_model="none", srel_epochs=2, cache_dir=str(tmp_path / "cache"),
                     log=lambda message: None)
    assert len(out["rows"]) == 2 * 2 * 3  # tasks x splits x comparisons
    for row in out["rows"]:
        assert row["low"] <= row["difference"] <= row["high"]
        assert row["difference"] == pytest.approx(row["r2_model"] - row["r2_other"])
        assert row["folds"] == 4
    by = {(r["task"], r["split"], r["comparison"]): r for r in out["rows"]}
    # the same bar and the same default in each comparison they appear in
    assert by["crime", "shuffled", "default_vs_bar"]["r2_other"] == \
        by["crime", "shuffled", "features_only_vs_bar"]["r2_other"]
    assert by["crime", "unshuffled", "default_vs_bar"]["r2_model"] == \
        by["crime", "unshuffled", "default_vs_features_only"]["r2_model"]
    assert by["crime", "unshuffled", "default_vs_bar"]["r2_other"] != \
        by["crime", "shuffled", "default_vs_bar"]["r2_other"]  # other folds

    alone = render({"mode": "quick", "versus": {
        **out, "environment": {"date": "today", "git_commit": "abc"}}}, tmp_path, None)
    assert "### The default against the bar, paired over the same regions" in alone  # no quality
    quality = {**_quality(), "regions": 40, "labelled": {}}
    quality["settings"] = {"folds": 4, "shuffle": False, "seeds": [0], "srel_epochs": 2,
                           "language_model": "none"}
    text = render({"mode": "quick", "quality": quality, "versus": {
        **out, "environment": {"date": "today", "git_commit": "abc"}}}, tmp_path, None)
    assert "### The default against the bar, paired over the same regions" in text
    assert "| crime | shuffled | engine default vs the bar (raw features -> RidgeCV) |" in text
    assert "- engine default vs the bar (raw features -> RidgeCV): above on " in text
    assert " of 4 rows" in text  # 2 tasks x 2 splits per comparison


def test_a_paired_run_newer_than_the_main_table_gives_the_goal_its_figures():
    quality = {**_quality(), "environment": {"date": "2026-12-06T19:00:00+00:00",
                                             "git_commit": "aaa"}}
    versus = _versus()
    versus["rows"][0].update(r2_model=0.771, r2_other=0.768, difference=0.003, low=-0.004,
                             high=0.011)
    versus["environment"] = {"date": "2026-12-07T08:00:00+00:00", "git_commit": "bbb"}
    bar = quality_goal_rows(quality, versus)[0]
    assert "crime 0.771 vs 0.768" in bar and "newer than the main table" in bar
    assert "**met**" in bar  # check_in from the main table: 0.876 vs 0.862
    versus["environment"] = {"date": "2026-12-05T08:00:00+00:00", "git_commit": "bbb"}
    assert "crime 0.762 vs 0.768" in quality_goal_rows(quality, versus)[0]  # older
    versus["environment"] = {"date": "2026-12-07T08:00:00+00:00", "git_commit": "aaa"}
    same_run = quality_goal_rows(quality, versus)[0]  # the same code: the table's figures
    assert "crime 0.762 vs 0.768" in same_run and "newer" not in same_run


def test_another_citys_document_claims_none_of_manhattans_speed_goals(tmp_path):
    from bench.report import goals_section

    chicago = {**_quality(city="chicago"), "srel": {"srel": {
        "seconds": [16.7], "cpu_seconds": [33.0], "epochs": 2000, "threads": 2}},
        "environment": {"date": "2026-12-07", "cpu": "AMD EPYC", "cpu_count": 2}}
    prompts = {"reuse": {}, "cold_cache": {"regions_per_second": 6.0}, "model": "smollm2",
               "data": str(tmp_path / "data_Chi")}
    lines = goals_section({"quality": chicago, "prompts": prompts})
    assert not any("SREL on Manhattan" in line or "prompt encoding" in line for line in lines)
    manhattan = {**chicago, "split": _quality()["split"]}
    prompts["data"] = "/work/shared/data/manhattan"
    lines = goals_section({"quality": manhattan, "prompts": prompts})
    assert any("SREL on Manhattan" in line for line in lines)
    assert any("prompt encoding >= 50" in line for line in lines)


def test_one_region_holding_most_of_the_variance_does_not_blow_the_interval_up():
    # 77 suburbs and one centre with ten times their largest value (St. Louis City among its
    # counties): resamples without the centre have almost no variance left.
    rng = np.random.default_rng(3)
    y = np.append(rng.gamma(2.0, 0.5, 77), 300.0)
    fold = np.arange(78) % 10
    model = [y + np.append(rng.normal(0, 2, 77), -60.0)]
    other = [y + np.append(rng.normal(0, 3, 77), -80.0)]
    out = paired_r2_difference(y, model, other, fold)
    assert out["difference"] == pytest.approx(_r2(y, model[0]) - _r2(y, other[0]))
    assert out["low"] <= out["difference"] <= out["high"]
    # The two models' R² on all regions lie in [0, 1]; no resample may say they differ by more.
    assert 0 < _r2(y, other[0]) < _r2(y, model[0]) < 1
    assert out["high"] - out["low"] < 1.0


def test_a_weighted_task_adds_the_weighted_comparisons_in_weighted_r2(tmp_path):
    from engine.data.benchmark import load_benchmark_folder
    from tests.engine.test_bench_smoke import _benchmark_folder

    torch.set_num_threads(1)
    data = tmp_path / "city"
    data.mkdir()
    _benchmark_folder(data, n=40)
    dataset = load_benchmark_folder(data)
    dataset.target_weights = {"crime": np.linspace(1.0, 50.0, dataset.n_regions)}
    out = run_versus(dataset, seeds=(0,), tasks=("crime", "check_in"), folds=4,
                     language_model="none", srel_epochs=2, cache_dir=str(tmp_path / "cache"),
                     log=lambda message: None)
    weighted = [r for r in out["rows"] if r["comparison"].startswith("weighted_")]
    assert len(out["rows"]) == 2 * 2 * 3 + len(weighted) and len(weighted) == 2 * 4
    assert {r["task"] for r in weighted} == {"crime"}
    for row in weighted:
        assert row["difference"] == pytest.approx(row["r2_model"] - row["r2_other"])
    by = {(r["split"], r["comparison"]): r for r in out["rows"] if r["task"] == "crime"}
    plain, weighted_r2 = by["shuffled", "weighted_vs_bar_plain_r2"], by["shuffled",
                                                                        "weighted_vs_bar"]
    assert plain["metric"] == "r2" and weighted_r2["metric"] == "r2_weighted"
    assert plain["r2_other"] == by["shuffled", "default_vs_bar"]["r2_other"]  # the same bar
    assert weighted_r2["r2_other"] != plain["r2_other"]  # ... scored with the weights
