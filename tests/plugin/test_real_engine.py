"""The plugin against the project's real engine (.venv); skipped with the reason when absent."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_points, make_regions


def run(algorithm, parameters):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    return processing.run(f"topt:{algorithm}", parameters, context=QgsProcessingContext(),
                          feedback=QgsProcessingFeedback())


def test_check_engine_with_the_real_engine(real_engine):
    result = run("check_engine", {})
    assert result["ENGINE_FOUND"] is True
    assert result["PYTHON"] == str(real_engine)
    assert result["DEVICE"] in ("cpu", "cuda")
    assert result["ENGINE_VERSION"]


def test_build_region_features_with_the_real_engine(real_engine, tmp_path):
    regions = make_regions(tmp_path / "city.gpkg", count=12)
    points = make_points(tmp_path / "pois.gpkg", count=60)
    result = run("build_region_features", {
        "REGIONS": regions, "ID_FIELD": "region_id", "POINTS": points,
        "POINT_CATEGORY_FIELD": "category", "TARGETS": ["crime"],
        "OUTPUT": str(tmp_path / "dataset.json")})
    summary = json.loads(Path(result["OUTPUT"]).read_text())
    assert summary["regions"] == 12 and result["REGION_COUNT"] == 12
    assert summary["views"]["poi"]["width"] == 2  # two categories: food, shop
    assert summary["targets"]["crime"]["labelled"] == 10  # two of twelve are empty


def test_learn_and_predict_with_the_real_engine(real_engine, tmp_path):
    from qgis.core import QgsVectorLayer

    regions = make_regions(tmp_path / "city.gpkg", count=24, with_nulls=False)
    points = make_points(tmp_path / "pois.gpkg", count=120)
    result = run("learn_and_predict", {
        "REGIONS": regions, "ID_FIELD": "region_id", "POINTS": points,
        "POINT_CATEGORY_FIELD": "category", "TARGETS": ["crime"], "LANGUAGE_MODEL": "none",
        "EMBEDDING_SIZE": 8, "EPOCHS": 2, "FOLDS": 3, "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "out.gpkg"), "MODEL_OUTPUT": str(tmp_path / "model"),
        "REPORT": str(tmp_path / "report.html")})
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.featureCount() == 24
    assert {"emb_000", "emb_007", "pred_crime"} <= set(layer.fields().names())
    assert all(f["pred_crime"] is not None for f in layer.getFeatures())
