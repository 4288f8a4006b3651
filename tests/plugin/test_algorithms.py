"""Each algorithm through processing.run, with the fake engine (tests/plugin/fake_engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import checksum, make_regions
from qgis.core import NULL


def run(algorithm: str, parameters: dict, feedback=None):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return processing.run(f"topt:{algorithm}", parameters, context=context,
                          feedback=feedback or QgsProcessingFeedback())


def layer_values(path: str, id_field: str, field: str) -> dict:
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(path, "check", "ogr")
    assert layer.isValid(), path
    return {f[id_field]: f[field] for f in layer.getFeatures()}


def test_learn_and_predict_output_layer_model_and_report(fake_engine, regions_gpkg, points_gpkg,
                                                         tmp_path):
    from qgis.core import QgsVectorLayer

    before = checksum(regions_gpkg.split("|")[0])
    result = run("learn_and_predict", {
        "REGIONS": regions_gpkg, "ID_FIELD": "region_id", "POINTS": points_gpkg,
        "POINT_CATEGORY_FIELD": "category", "TARGETS": ["crime", "check_in"],
        "TASK_DESCRIPTIONS": "crime: crimes reported per region",
        "TARGET_WEIGHTS": "check_in = region_id", "LANGUAGE_MODEL": "minilm",
        "EMBEDDING_SIZE": 4, "FOLDS": 3, "SHUFFLE": False, "SEED": 5, "CLASS_FIELD": "name",
        "CLUSTERS": 3, "MOBILITY_WEIGHTING": "trips", "INTERVAL_LEVEL": 0.8,
        "OUTPUT": str(tmp_path / "out.gpkg"),
        "MODEL_OUTPUT": str(tmp_path / "model"),
        "REPORT": str(tmp_path / "report.html")})
    output = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    names = output.fields().names()
    assert {"region_id", "name", "crime", "emb_000", "emb_003", "pred_crime", "pred_check_in",
            "fold_crime"} <= set(names)
    assert output.featureCount() == 12
    for feature in output.getFeatures():  # the fake engine shuffled its rows: ids must match
        assert feature["pred_crime"] == pytest.approx(2 * feature["region_id"] + 0.5)
        assert feature["emb_002"] == pytest.approx(10 * feature["region_id"] + 2)
        assert feature.geometry().area() == pytest.approx(10000)
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "model" / "metrics.json").is_file()
    assert "fake report" in (tmp_path / "report.html").read_text()
    job = json.loads(Path(fake_engine.record()["argv"][fake_engine.record()["argv"].index("--job") + 1]).read_text())
    assert job["regions"]["id_field"] == "region_id" and job["targets"] == ["crime", "check_in"]
    assert job["points"][0]["category_field"] == "category"
    assert job["task_descriptions"] == {"crime": "crimes reported per region"}
    assert job["target_weights"] == {"check_in": "region_id"}
    assert job["language_model"] == "minilm" and job["folds"] == 3 and job["shuffle"] is False
    assert job["seed"] == 5 and job["embedding_size"] == 4 and job["interval_level"] == 0.8
    assert job["classes"] == ["name"] and job["clusters"] == 3
    assert job["srel"] == {"mobility_weighting": "trips"}
    assert job["regions"]["path"] == regions_gpkg.split("|")[0]  # a file layer is read in place
    assert checksum(regions_gpkg.split("|")[0]) == before  # no write-back asked: unchanged
    assert output.renderer().type() in ("graduatedSymbol", "singleSymbol")


def test_output_layer_gets_graduated_style_saved(fake_engine, regions_gpkg, tmp_path):
    from qgis.core import QgsVectorLayer

    result = run("learn_and_predict", {
        "REGIONS": regions_gpkg, "ID_FIELD": "region_id", "TARGETS": ["crime"],
        "EMBEDDING_SIZE": 2, "OUTPUT": str(tmp_path / "styled.gpkg")})
    layer = QgsVectorLayer(result["OUTPUT"], "styled", "ogr")
    assert layer.renderer().type() == "graduatedSymbol"  # the default style in the GeoPackage
    assert layer.renderer().classAttribute() == "pred_crime"
    # Every class's symbol ends in an outline drawn only for the extrapolated regions (the fake
    # engine flags the ids divisible by 5).
    from qgis.core import QgsExpressionContext, QgsExpressionContextUtils, QgsSymbolLayer

    context = QgsExpressionContext()
    context.appendScope(QgsExpressionContextUtils.layerScope(layer))
    for class_range in layer.renderer().ranges():
        symbol = class_range.symbol()
        outline = symbol.symbolLayer(symbol.symbolLayerCount() - 1)
        assert outline.layerType() == "SimpleLine" and outline.color().red() > 200
        enabled = outline.dataDefinedProperties().property(QgsSymbolLayer.PropertyLayerEnabled)
        outlined = {}
        for feature in layer.getFeatures():
            context.setFeature(feature)
            outlined[feature["region_id"]] = enabled.valueAsBool(context, True)[0]
        assert outlined == {i: i % 5 == 0 for i in outlined} and any(outlined.values())
    argv = fake_engine.record()["argv"]
    job = json.loads(Path(argv[argv.index("--job") + 1]).read_text())
    assert "srel" not in job  # the default SREL trip loss: nothing overridden


def test_memory_layer_and_selection_are_exported_for_the_engine(fake_engine, tmp_path):
    from qgis.core import (
        QgsProcessingFeatureSourceDefinition,
        QgsProject,
        QgsVectorLayer,
    )

    source = make_regions(tmp_path / "src.gpkg")
    disk = QgsVectorLayer(source, "disk", "ogr")
    memory = disk.materialize(disk.createFeatureRequestForSelection() if False else
                              __import__("qgis.core", fromlist=["QgsFeatureRequest"])
                              .QgsFeatureRequest())
    memory.setName("memory regions")
    QgsProject.instance().addMapLayer(memory)
    try:
        memory.selectByExpression('"region_id" < 104')
        result = run("learn_and_predict", {
            "REGIONS": QgsProcessingFeatureSourceDefinition(memory.id(), True),
            "ID_FIELD": "region_id", "TARGETS": ["crime"], "EMBEDDING_SIZE": 2,
            "OUTPUT": str(tmp_path / "sel.gpkg")})
        job_path = fake_engine.record()["argv"][fake_engine.record()["argv"].index("--job") + 1]
        job = json.loads(Path(job_path).read_text())
        assert job["regions"]["path"].endswith("inputs.gpkg")
        output = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
        assert sorted(f["region_id"] for f in output.getFeatures()) == [100, 101, 102, 103]
    finally:
        QgsProject.instance().removeMapLayer(memory.id())


def job_sent(fake_engine) -> dict:
    argv = fake_engine.record()["argv"]
    return json.loads(Path(argv[argv.index("--job") + 1]).read_text())


@pytest.mark.parametrize("algorithm", ["learn_and_predict", "train_model",
                                       "build_region_features"])
def test_target_weights_is_an_optional_multiline_parameter_beside_task_descriptions(provider,
                                                                                     algorithm):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    definition = QgsApplication.processingRegistry().algorithmById(f"topt:{algorithm}")
    names = [p.name() for p in definition.parameterDefinitions()]
    assert names.index("TARGET_WEIGHTS") == names.index("TASK_DESCRIPTIONS") + 1
    weights = definition.parameterDefinition("TARGET_WEIGHTS")
    descriptions = definition.parameterDefinition("TASK_DESCRIPTIONS")
    assert weights.type() == "string" and weights.multiLine()
    assert weights.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert (weights.flags() & QgsProcessingParameterDefinition.FlagAdvanced) == \
        (descriptions.flags() & QgsProcessingParameterDefinition.FlagAdvanced)
    assert "crime_rate: population" in weights.description()


def test_the_weight_field_is_sent_as_a_weight_only(fake_engine, regions_gpkg, tmp_path):
    run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                              "TARGETS": ["crime"], "EMBEDDING_SIZE": 2,
                              "OUTPUT": str(tmp_path / "plain.gpkg")})
    assert job_sent(fake_engine)["target_weights"] == {}  # none given: always the key, empty
    run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                              "TARGETS": ["crime"], "TARGET_WEIGHTS": "\ncrime: check_in\n",
                              "EMBEDDING_SIZE": 2, "OUTPUT": str(tmp_path / "weighted.gpkg")})
    job = job_sent(fake_engine)
    assert job["target_weights"] == {"crime": "check_in"}
    assert job["regions"]["fields"] == [] and job["targets"] == ["crime"]


def test_weights_of_an_exported_selection_are_checked_against_its_fields(fake_engine, tmp_path):
    from qgis.core import (
        QgsProcessingException,
        QgsProcessingFeatureSourceDefinition,
        QgsProject,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(make_regions(tmp_path / "src.gpkg"), "picked", "ogr")
    QgsProject.instance().addMapLayer(layer)
    try:
        layer.selectByExpression('"region_id" < 106')
        selection = QgsProcessingFeatureSourceDefinition(layer.id(), True)
        run("learn_and_predict", {"REGIONS": selection, "ID_FIELD": "region_id",
                                  "TARGETS": ["crime"], "TARGET_WEIGHTS": "crime: check_in",
                                  "EMBEDDING_SIZE": 2, "OUTPUT": str(tmp_path / "sel.gpkg")})
        job = job_sent(fake_engine)
        assert job["regions"]["path"].endswith("inputs.gpkg")
        assert job["target_weights"] == {"crime": "check_in"}
        with pytest.raises(QgsProcessingException) as raised:
            run("learn_and_predict", {"REGIONS": selection, "ID_FIELD": "region_id",
                                      "TARGETS": ["crime"], "TARGET_WEIGHTS": "crime: people",
                                      "OUTPUT": str(tmp_path / "never.gpkg")})
        assert "line 1" in str(raised.value) and "'people'" in str(raised.value)
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


@pytest.mark.parametrize(("weights", "said"), [
    ("crime population", ["line 1", "'target: weight field'"]),
    ("\ncheck_in: region_id", ["line 2", "'check_in'", "not one of the chosen target fields"]),
    ("crime: people", ["line 1", "'people'", "not a field of the region layer"]),
    ("crime: name", ["line 1", "'name'", "not numeric"]),
    ("crime = crime", ["line 1", "'crime'", "its own weight"]),
], ids=["malformed", "not-a-target", "missing-field", "text-field", "the-target-itself"])
def test_a_bad_target_weight_stops_the_run_before_the_engine(fake_engine, regions_gpkg, tmp_path,
                                                             weights, said):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as raised:
        run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                  "TARGETS": ["crime"], "TARGET_WEIGHTS": weights,
                                  "OUTPUT": str(tmp_path / "never.gpkg")})
    message = str(raised.value)
    for part in said:
        assert part in message, (part, message)
    assert not fake_engine.record_file.exists()  # the engine never ran
    assert not (tmp_path / "never.gpkg").exists()


def test_engine_gets_argument_list_clean_environment_and_importable_source(fake_engine,
                                                                          regions_gpkg, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/qgis/python")
    monkeypatch.setenv("PYTHONPATH", "/qgis/python/plugins")
    monkeypatch.setenv("PROJ_LIB", "/qgis/proj")
    monkeypatch.setenv("GDAL_DATA", "/qgis/gdal")
    monkeypatch.setenv("QT_PLUGIN_PATH", "/qgis/qt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run("build_region_features", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                  "OUTPUT": str(tmp_path / "dataset.json")})
    seen = fake_engine.record()
    env = seen["env"]
    for dropped in ("PYTHONHOME", "PROJ_LIB", "GDAL_DATA", "QT_PLUGIN_PATH"):
        assert dropped not in env, dropped
    assert env["PYTHONPATH"] == str(Path(__file__).resolve().parent / "fake_engine")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert seen["command"] == "prepare"
    assert seen["argv"][-2:] == ["--events", "jsonl"]


def test_build_region_features_writes_the_summary(fake_engine, regions_gpkg, tmp_path):
    result = run("build_region_features", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                           "OUTPUT": str(tmp_path / "dataset.json")})
    assert json.loads(Path(result["OUTPUT"]).read_text())["n_regions"] == 12
    assert result["REGION_COUNT"] == 12


def test_train_then_predict_with_the_model(fake_engine, regions_gpkg, tmp_path):
    trained = run("train_model", {
        "REGIONS": regions_gpkg, "ID_FIELD": "region_id", "TARGETS": ["crime"],
        "EMBEDDING_SIZE": 3, "MODEL_OUTPUT": str(tmp_path / "model"),
        "METRICS": str(tmp_path / "metrics.json"), "OUTPUT": str(tmp_path / "trained.gpkg")})
    assert json.loads(Path(trained["METRICS"]).read_text()) == {"crime": {"r2": 0.5}}
    other = make_regions(tmp_path / "other.gpkg", count=5)
    predicted = run("predict_with_model", {
        "MODEL": trained["MODEL_OUTPUT"], "REGIONS": other, "ID_FIELD": "region_id",
        "OUTPUT": str(tmp_path / "predicted.gpkg")})
    values = layer_values(predicted["OUTPUT"], "region_id", "pred_crime")
    assert values == {100 + i: pytest.approx(2 * (100 + i) + 0.5) for i in range(5)}
    assert fake_engine.record()["argv"][fake_engine.record()["argv"].index("--model") + 1] == \
        trained["MODEL_OUTPUT"]


def test_check_engine_reports_python_device_and_model(fake_engine):
    result = run("check_engine", {})
    assert result["ENGINE_FOUND"] is True
    assert result["DEVICE"] == "cpu" and result["ENGINE_VERSION"] == "0.0-fake"
    assert result["DEFAULT_MODEL_AVAILABLE"] is True
    assert result["PYTHON"]


def test_check_engine_without_engine_says_how_to_install(provider, clean_settings, monkeypatch,
                                                         tmp_path):
    monkeypatch.setenv("TOPT_ENGINE_PYTHON", str(tmp_path / "missing"))
    result = run("check_engine", {})
    assert result["ENGINE_FOUND"] is False


def test_input_error_from_engine_names_layer_field_and_hint(fake_engine, regions_gpkg, tmp_path):
    from qgis.core import QgsProcessingException

    fake_engine.set_mode("input_error")
    before = checksum(regions_gpkg.split("|")[0])
    with pytest.raises(QgsProcessingException) as raised:
        run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                  "TARGETS": ["crime"], "WRITE_BACK": True,
                                  "OUTPUT": str(tmp_path / "never.gpkg")})
    message = str(raised.value)
    assert "crime" in message and "only 3 regions" in message and "more values" in message
    assert checksum(regions_gpkg.split("|")[0]) == before
    assert not (tmp_path / "never.gpkg").exists()


def test_crashing_engine_gives_a_clear_message_and_leaves_the_layer(fake_engine, regions_gpkg,
                                                                     tmp_path):
    from qgis.core import QgsProcessingException

    fake_engine.set_mode("crash")
    before = checksum(regions_gpkg.split("|")[0])
    with pytest.raises(QgsProcessingException) as raised:
        run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                  "TARGETS": ["crime"], "WRITE_BACK": True,
                                  "OUTPUT": str(tmp_path / "never.gpkg")})
    message = str(raised.value)
    assert "exit code 1" in message and "segmentation fault in fake kernel" in message
    assert checksum(regions_gpkg.split("|")[0]) == before


def test_malformed_lines_and_a_flooded_stderr_do_not_stop_the_run(fake_engine, regions_gpkg,
                                                                   tmp_path):
    for mode in ("malformed", "stderr_flood"):
        fake_engine.set_mode(mode)
        result = run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                                           "TARGETS": ["crime"], "EMBEDDING_SIZE": 2,
                                           "OUTPUT": str(tmp_path / f"{mode}.gpkg")})
        assert len(layer_values(result["OUTPUT"], "region_id", "pred_crime")) == 12


def test_write_back_into_the_region_layer(fake_engine, tmp_path):
    from qgis.core import QgsProject, QgsVectorLayer

    source = make_regions(tmp_path / "mine.gpkg")
    layer = QgsVectorLayer(source, "mine", "ogr")
    QgsProject.instance().addMapLayer(layer)
    try:
        run("learn_and_predict", {"REGIONS": layer.id(), "ID_FIELD": "region_id",
                                  "TARGETS": ["crime"], "EMBEDDING_SIZE": 3, "WRITE_BACK": True,
                                  "OUTPUT": str(tmp_path / "new.gpkg")})
        assert {"emb_000", "emb_002", "pred_crime", "fold_crime", "ext_crime", "lo_crime",
                "hi_crime"} <= set(layer.fields().names())
        for feature in layer.getFeatures():
            assert feature["pred_crime"] == pytest.approx(2 * feature["region_id"] + 0.5)
            assert feature["ext_crime"] == int(feature["region_id"] % 5 == 0)
            if feature["region_id"] % 7:
                assert (feature["lo_crime"], feature["hi_crime"]) == pytest.approx(
                    (2 * feature["region_id"] - 0.5, 2 * feature["region_id"] + 1.5))
            else:  # a region without an interval stays NULL, not 0
                assert feature.attribute("lo_crime") in (None, NULL)
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_shapefile_output_gets_short_unique_names(fake_engine, regions_gpkg, tmp_path):
    from qgis.core import QgsVectorLayer

    result = run("learn_and_predict", {
        "REGIONS": regions_gpkg, "ID_FIELD": "region_id", "TARGETS": ["check_in", "crime"],
        "EMBEDDING_SIZE": 2, "OUTPUT": str(tmp_path / "out.shp")})
    layer = QgsVectorLayer(result["OUTPUT"], "shp", "ogr")
    names = layer.fields().names()
    assert all(len(n) <= 10 for n in names)
    assert {"check_in", "pred_check", "fold_check", "pred_crime", "emb_001"} <= set(names)
    assert result["FIELD_NAMES"] == ("pred_check_in->pred_check, fold_check_in->fold_check, "
                                     "ext_check_in->ext_check_, lo_check_in->lo_check_i, "
                                     "hi_check_in->hi_check_i")
    for feature in layer.getFeatures():
        assert feature["pred_check"] == pytest.approx(2 * feature["region_id"] + 0.5)



@pytest.mark.parametrize("removed", [True, False], ids=["removed", "kept"])
def test_a_region_layer_removed_during_the_run(tmp_path, removed):
    """The user removes the region layer from the project while the engine runs: the run says
    so, the layer's file is byte-identical, QGIS goes on, and the process ends cleanly (run in
    a process of its own, since a crash at shutdown is what this guards against)."""
    import subprocess
    import sys

    script = Path(__file__).with_name("removed_layer_run.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path),
                           *([] if removed else ["keep"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "the run finished" in done.stdout
    output = layer_values(str(tmp_path / "new.gpkg"), "region_id", "pred_crime")
    assert output == {100 + i: pytest.approx(2 * (100 + i) + 0.5) for i in range(12)}
    if removed:  # said, and the output holds what the engine gave, without the layer's fields
        assert "The region layer was removed from the project while ToPT ran" in done.stdout
        from qgis.core import QgsVectorLayer

        names = QgsVectorLayer(str(tmp_path / "new.gpkg"), "new", "ogr").fields().names()
        assert {"region_id", "emb_000", "pred_crime"} <= set(names) and "name" not in names
    assert "features after the run: 12" in done.stdout and "QGIS closed" in done.stdout
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    if removed:  # nothing was written into the layer's file
        assert lines["file after"] == lines["file before"]
    else:  # the kept layer got its fields
        assert lines["file after"] != lines["file before"]


def test_automatic_weights_are_on_unless_the_advanced_option_is_unticked(fake_engine,
                                                                         regions_gpkg,
                                                                         tmp_path):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    definition = QgsApplication.processingRegistry().algorithmById("topt:learn_and_predict")
    auto = definition.parameterDefinition("AUTO_WEIGHT")
    assert auto.defaultValue() is True
    assert auto.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                              "TARGETS": ["crime"], "EMBEDDING_SIZE": 2,
                              "OUTPUT": str(tmp_path / "auto.gpkg")})
    assert "predictor" not in job_sent(fake_engine)  # the engine's default: on
    run("learn_and_predict", {"REGIONS": regions_gpkg, "ID_FIELD": "region_id",
                              "TARGETS": ["crime"], "AUTO_WEIGHT": False, "EMBEDDING_SIZE": 2,
                              "OUTPUT": str(tmp_path / "off.gpkg")})
    assert job_sent(fake_engine)["predictor"] == {"auto_weight": False}
