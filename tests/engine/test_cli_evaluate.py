"""`python -m engine evaluate` on the tiny layers: the clustering figures say which k they used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _evaluate(job_dict: dict, tmp_path: Path, *options: str):
    """`python -m engine evaluate` on the job with a tiny SREL, 3 folds, no language model;
    (the finished process, the output folder)."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps(job_dict))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--job", str(job), *options,
         "--epochs", "2", "--embedding-size", "8", "--language-model", "none", "--folds", "3",
         "--device", "cpu", "--out-dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done, out


def test_evaluate_clusters_at_the_k_asked_for_and_reports_the_classes_present(tiny_layers,
                                                                               tmp_path):
    _, out = _evaluate(tiny_layers, tmp_path, "--clusters", "3")
    zone = json.loads((out / "metrics.json").read_text())["clustering"]["zone"]
    assert zone["CLASSES"] == 2 and zone["CLUSTERS"] == 3  # the tiny grid: north and south
    assert 0 <= zone["NMI"] <= 1


def test_every_r2_comes_with_its_interval_and_the_default_with_its_paired_gap_to_the_bar(
        tiny_layers, tmp_path):
    done, out = _evaluate(tiny_layers, tmp_path, "--events", "jsonl")
    tasks = json.loads((out / "metrics.json").read_text())["tasks"]
    assert set(tasks) == {"crime", "price"}
    for entry in tasks.values():
        for scores in entry["methods"].values():
            low, high = scores["R2_interval"]
            assert low < high  # 12 regions: a wide interval, never a point
        versus = entry["versus_bar"]
        method, bar = entry["methods"][versus["method"]], entry["methods"][versus["bar"]]
        assert versus["difference"] == pytest.approx(method["R2"] - bar["R2"], abs=1e-9)
        assert versus["low"] <= versus["high"] and versus["folds"] == 3
        assert 0 <= versus["folds_better"] <= 3
    result = next(json.loads(line) for line in done.stdout.splitlines()
                  if json.loads(line).get("event") == "result")
    assert "the default minus the bar (R2, paired)" in result["summary"]
    report = (out / "report.html").read_text()
    assert "R2 95% interval" in report
    for entry in tasks.values():  # the paired gap in the words of the benchmarks' goal rows
        versus = entry["versus_bar"]
        gap = (f"{versus['difference']:+.3f}, 95% paired interval [{versus['low']:+.3f}, "
               f"{versus['high']:+.3f}], lower error on {versus['folds_better']} of 3 folds")
        assert gap in result["summary"] and gap in report


def test_a_weighted_target_reports_weighted_figures_beside_the_plain_ones(tiny_layers,
                                                                          tmp_path):
    """`--target-weight crime=price`: crime is fitted by weighted least squares, and its entry
    holds the weighted R² of every method and the default against the weighted bar; the
    unweighted target is untouched."""
    _, out = _evaluate(tiny_layers, tmp_path, "--target-weight", "crime=price")
    metrics = json.loads((out / "metrics.json").read_text())
    crime, price = metrics["tasks"]["crime"], metrics["tasks"]["price"]
    assert crime["weights"]["field"] == "price"
    weighting = crime["final_model"]["weighting"]
    assert weighting["weighting"] == "precision" and weighting["weight_ratio"] >= 1
    assert metrics["dataset"]["targets"]["crime"]["weight_field"] == "price"
    assert "raw features, weighted RidgeCV (in training folds)" in crime["methods"]
    for scores in crime["methods"].values():
        assert {"R2_weighted", "MAE_weighted", "RMSE_weighted"} <= set(scores)
        low, high = scores["R2_weighted_interval"]
        assert low < high
    versus = crime["versus_weighted_bar"]
    method, bar = crime["methods"][versus["method"]], crime["methods"][versus["bar"]]
    assert versus["difference"] == pytest.approx(method["R2_weighted"] - bar["R2_weighted"],
                                                 abs=1e-9)
    assert "weights" not in price and "versus_weighted_bar" not in price
    report = (out / "report.html").read_text()
    assert "crime (weights: price)" in report and "weighted R2 95% interval" in report
    assert "(weighted R2)" in report
    assert all("R2_weighted" not in scores for scores in price["methods"].values())


@pytest.mark.parametrize(("weight", "words"), [
    ("crime=pop", ["pop", "1 region(s) with a value of 'crime' have no weight above 0"]),
    ("crime=name", ["name", "not numbers (weight)"]),
    ("crime=crime", ["its own weight"]),
    ("zone=price", ["not a target"]),
])
def test_a_bad_weight_field_is_an_input_error_naming_it(tiny_layers, tmp_path, weight, words):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_layers))
    done = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", "--job", str(job), "--target-weight",
         weight, "--language-model", "none", "--out-dir", str(tmp_path / "out")],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    for word in words:
        assert word in done.stderr + done.stdout
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # nothing written


@pytest.fixture
def rate_layer(tmp_path) -> dict:
    """A job reading 64 grid regions whose `rate` is counts over `pop` (50 to 50,000 people):
    small places' rates are noisy."""
    import geopandas as gpd
    import numpy as np
    from shapely.geometry import box

    rng = np.random.default_rng(0)
    cells = [box(x * 500.0, y * 500.0, (x + 1) * 500.0, (y + 1) * 500.0)
             for y in range(8) for x in range(8)]
    pop = np.exp(rng.uniform(np.log(50), np.log(50000), 64))
    jobs = rng.uniform(0, 1, 64)
    rate = np.exp(1.5 * jobs) / 100
    frame = gpd.GeoDataFrame({"pop": pop, "jobs": jobs,
                              "rate": rng.poisson(rate * pop) / pop},
                             geometry=cells, crs="EPSG:32618")
    path = tmp_path / "rates.gpkg"
    frame.to_file(path, layer="regions", driver="GPKG", engine="pyogrio")
    return {"regions": {"path": str(path), "layer": "regions", "fields": ["pop", "jobs"]},
            "targets": ["rate"]}


@pytest.mark.parametrize("off", [None, "job key", "flag"])
def test_a_rate_is_weighted_by_the_field_its_errors_point_to_and_the_log_says_so(
        rate_layer, tmp_path, off):
    auto = off is None
    job = {**rate_layer, "predictor": {"auto_weight": False}} if off == "job key" else rate_layer
    flag = ["--no-auto-weight"] if off == "flag" else []
    done, out = _evaluate(job, tmp_path, "--events", "jsonl", *flag)
    entry = json.loads((out / "metrics.json").read_text())["tasks"]["rate"]
    warnings = [json.loads(line)["message"] for line in done.stdout.splitlines()
                if json.loads(line).get("level") == "warning"]
    if auto:
        assert entry["weight_hint"]["field"] == "pop" and entry["weight_hint"]["p_value"] < 1e-3
        assert entry["final_model"]["weighting"]["automatic"]
        assert any("rate: its errors shrink as pop grows" in w and "--target-weight rate=pop"
                   in w for w in warnings)
        assert any("--no-auto-weight" in w for w in warnings)
        assert "Weights read off the errors" in (out / "report.html").read_text()
    else:
        assert "weight_hint" not in entry and "weighting" not in entry["final_model"]
        assert not any("shrink" in w for w in warnings)
