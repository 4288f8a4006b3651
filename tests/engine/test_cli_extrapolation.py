"""What an analyst sees of extrapolated predictions through `python -m engine train|predict`:
the ext_<target> field, the metrics.json entry, the log line and the report's section; and of
each prediction's interval (lo_<target>, hi_<target>)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
FAR_LABELLED, FAR_UNLABELLED = "Z07", "Z33"


@pytest.fixture(scope="module")
def layers(tmp_path_factory) -> Path:
    """A 8 x 5 grid of regions (UTM 18N) with population and jobs and a crime count that follows
    them. Z07 has 4 times the largest population (labelled), Z33 12 times the largest jobs (no
    crime figure): further out than Z07, so beyond the final model's training regions, which
    include Z07."""
    import geopandas as gpd
    from shapely.geometry import box

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    cells = [box(x * 500.0, y * 500.0, (x + 1) * 500.0, (y + 1) * 500.0)
             for y in range(5) for x in range(8)]
    pop = rng.uniform(500, 5000, 40)
    jobs = rng.uniform(50, 900, 40)
    pop[7], jobs[33] = 4 * pop.max(), 12 * jobs.max()
    crime = np.round(0.02 * pop + 0.1 * jobs + rng.normal(0, 5, 40)).clip(0)
    crime[33] = np.nan
    regions = gpd.GeoDataFrame({"zone": [f"Z{i:02d}" for i in range(40)], "pop": pop,
                                "jobs": jobs, "crime": crime}, geometry=cells, crs="EPSG:32618")
    regions.to_file(folder / "regions.gpkg", layer="regions", driver="GPKG", engine="pyogrio")
    return folder


def _run(args: list[str]) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "engine", *args, "--events", "jsonl"], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, (events[-1:], done.stderr[-2000:])
    return events


def _data_args(layers: Path) -> list[str]:
    return ["--regions", f"{layers / 'regions.gpkg'}|layername=regions", "--id-field", "zone",
            "--fields", "pop,jobs", "--epochs", "2", "--embedding-size", "8",
            "--language-model", "none", "--device", "cpu"]


def _field(path: Path, name: str) -> dict[str, int]:
    import geopandas as gpd

    frame = gpd.read_file(path, layer="regions")
    return dict(zip(frame["zone"], frame[name].astype(int), strict=True))


def test_train_flags_the_regions_beyond_the_training_data(layers, tmp_path):
    out = tmp_path / "trained"
    events = _run(["train", *_data_args(layers), "--targets", "crime", "--folds", "5",
                   "--out-dir", str(out)])
    flags = _field(out / "regions.gpkg", "ext_crime")
    assert flags[FAR_LABELLED] & 1 and flags[FAR_UNLABELLED] & 1  # their data lie beyond
    assert sum(v > 0 for v in flags.values()) <= 6  # few of the 38 ordinary regions

    reach = json.loads((out / "metrics.json").read_text())["tasks"]["crime"]["extrapolation"]
    assert reach["regions"] == sum(v > 0 for v in flags.values())
    assert {FAR_LABELLED, FAR_UNLABELLED} <= set(reach["region_ids"])
    assert reach["evaluated"] == reach["regions"] - 1  # Z33 has no label to be held out
    assert 0.0 < reach["error_share"] <= 1.0
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any(m.startswith("crime: ") and "extrapolate" in m and "ext_crime" in m for m in logs)
    summary = next(e for e in events if e["event"] == "result")["summary"]
    assert "extrapolations (field ext_crime)" in summary  # the last lines the plugin shows
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Extrapolations</h2>" in report and FAR_LABELLED in report

    # The saved model flags new regions the way the final model did: Z33, unlabelled, was
    # flagged by it at training time.
    predicted = tmp_path / "predicted"
    _run(["predict", *_data_args(layers), "--model", str(out / "model"),
          "--out-dir", str(predicted)])
    again = _field(predicted / "regions.gpkg", "ext_crime")
    assert again[FAR_UNLABELLED] == flags[FAR_UNLABELLED]
    assert again[FAR_LABELLED] == 0 or again[FAR_LABELLED] == 2  # trained on: inside its reach


def test_each_prediction_gets_an_interval_and_the_run_says_how_many_it_held(layers, tmp_path):
    import geopandas as gpd

    out = tmp_path / "trained"
    events = _run(["train", *_data_args(layers), "--targets", "crime", "--folds", "5",
                   "--interval-level", "0.8", "--out-dir", str(out)])
    frame = gpd.read_file(out / "regions.gpkg", layer="regions").set_index("zone")
    low, high, pred = frame["lo_crime"], frame["hi_crime"], frame["pred_crime"]
    assert low.notna().all() and (low <= pred).all() and (pred <= high).all()
    assert (low >= 0).all()  # a count's interval stops at 0
    crime = gpd.read_file(layers / "regions.gpkg", layer="regions").set_index("zone")["crime"]
    labelled = crime.notna()
    inside = ((crime >= low) & (crime <= high))[labelled]
    entry = json.loads((out / "metrics.json").read_text())["tasks"]["crime"]["interval"]
    assert entry["level"] == 0.8 and entry["coverage"] == pytest.approx(inside.mean())
    summary = next(e for e in events if e["event"] == "result")["summary"]
    assert "80% intervals (lo_crime, hi_crime)" in summary and "held" in summary
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Prediction intervals</h2>" in report and "80%" in report
    # the unlabelled region's interval is the final model's, and `predict` gives it again
    predicted = tmp_path / "predicted"
    _run(["predict", *_data_args(layers), "--model", str(out / "model"),
          "--out-dir", str(predicted)])
    again = gpd.read_file(predicted / "regions.gpkg", layer="regions").set_index("zone")
    assert (again.loc[FAR_UNLABELLED, ["lo_crime", "hi_crime"]].to_numpy()
            == pytest.approx(frame.loc[FAR_UNLABELLED, ["lo_crime", "hi_crime"]].to_numpy()))
    # --interval-level 0: no interval fields
    _run(["train", *_data_args(layers), "--targets", "crime", "--folds", "5",
          "--interval-level", "0", "--out-dir", str(tmp_path / "none")])
    columns = gpd.read_file(tmp_path / "none" / "regions.gpkg", layer="regions").columns
    assert "pred_crime" in columns and "lo_crime" not in columns


def test_a_model_trained_with_a_weight_field_predicts_as_at_training(layers, tmp_path):
    """`train --target-weight crime=pop`: the model says which field weighed the target, and
    `predict` gives the unlabelled region the prediction the final model gave it in `train`."""
    import geopandas as gpd

    out = tmp_path / "trained"
    _run(["train", *_data_args(layers), "--targets", "crime", "--target-weight", "crime=pop",
          "--folds", "5", "--out-dir", str(out)])
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["target_weights"] == {"crime": "pop"}
    assert manifest["weighting"]["crime"]["weighting"] == "precision"
    assert "R2_weighted" in json.loads((out / "metrics.json").read_text())[
        "tasks"]["crime"]["methods"]["ToPT default (SREL + prompt vectors + raw features)"]
    predicted = tmp_path / "predicted"
    _run(["predict", *_data_args(layers), "--model", str(out / "model"),
          "--out-dir", str(predicted)])
    trained = gpd.read_file(out / "regions.gpkg", layer="regions").set_index("zone")
    again = gpd.read_file(predicted / "regions.gpkg", layer="regions").set_index("zone")
    assert again.loc[FAR_UNLABELLED, "pred_crime"] == pytest.approx(
        trained.loc[FAR_UNLABELLED, "pred_crime"], rel=1e-6)
    # its interval is scaled by the weight field's precision, there and here alike
    assert manifest["intervals"]["crime"]["scale"]["field"] == "pop"
    assert (again.loc[FAR_UNLABELLED, ["lo_crime", "hi_crime"]].to_numpy() == pytest.approx(
        trained.loc[FAR_UNLABELLED, ["lo_crime", "hi_crime"]].to_numpy(), rel=1e-6))
